//! The Redis link: RESP codec and connection target (the store behind `--redis`).

pub mod link;
pub mod resp;
pub mod url;
