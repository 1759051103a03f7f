//! The RFC 6455 codec, sans IO: pure functions over byte slices; no sockets, no clock.
//!
//! Sections covered: §4.2.1-4.2.2 opening handshake ([`handshake`]), §5.2 framing ([`frame`]),
//! §5.3 masking ([`mask`]), §5.4-5.6 fragmentation, control and data frames ([`message`]),
//! §5.5.1 and §7.4 closing ([`close`]), §8.1 UTF-8 ([`utf8`]), and the mapping of every
//! violation to its close code or HTTP status ([`error`]); RFC 7692 permessage-deflate
//! ([`deflate`]).

pub mod close;
pub mod deflate;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod message;
pub mod utf8;

pub use close::{CloseCode, ClosePayload};
pub use error::{HandshakeError, ProtoError};
pub use frame::{FrameHead, OpCode};
pub use message::{Limits, Message, Reader};
