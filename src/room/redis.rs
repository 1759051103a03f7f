//! placeholder
#[derive(Debug)]
pub struct RedisLog;
