//! Close frames: status codes and payloads (RFC 6455 §5.5.1, §7.4).

use super::error::ProtoError;

/// A close status code (RFC 6455 §7.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: normal closure.
    pub const NORMAL: Self = Self(1000);
    /// 1001: the endpoint is going away (server shutdown).
    pub const GOING_AWAY: Self = Self(1001);
    /// 1002: protocol error.
    pub const PROTOCOL: Self = Self(1002);
    /// 1003: a data type the endpoint cannot accept.
    pub const UNSUPPORTED: Self = Self(1003);
    /// 1007: data inconsistent with the message type (invalid UTF-8).
    pub const INVALID_PAYLOAD: Self = Self(1007);
    /// 1008: a policy was violated (e.g. a slow consumer over its budget).
    pub const POLICY: Self = Self(1008);
    /// 1009: a message too big to process.
    pub const TOO_BIG: Self = Self(1009);
    /// 1011: an unexpected condition on the server.
    pub const INTERNAL: Self = Self(1011);
    /// 1013: try again later (IANA registry, RFC 6455 §11.7), e.g. the server is at a limit.
    pub const TRY_AGAIN_LATER: Self = Self(1013);

    /// Whether a peer may send this code in a close frame (§7.4.1, §7.4.2).
    ///
    /// 1004 is reserved, 1005/1006/1015 "MUST NOT be set as a status code in a Close control
    /// frame by an endpoint", 1016-2999 are unassigned, and codes under 1000 are not used.
    /// 1012-1014 are registered with IANA since (service restart, try again later, bad gateway).
    pub fn is_valid_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

/// A parsed close frame payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClosePayload<'a> {
    /// The status code; `None` when the payload was empty (reported as 1005 in APIs).
    pub code: Option<CloseCode>,
    /// The reason, valid UTF-8 (§5.5.1).
    pub reason: &'a str,
}

/// Parses a close frame's payload (§5.5.1): empty, or a 2-byte code plus a UTF-8 reason.
pub fn parse(payload: &[u8]) -> Result<ClosePayload<'_>, ProtoError> {
    let Some((code, reason)) = payload.split_first_chunk::<2>() else {
        return if payload.is_empty() {
            Ok(ClosePayload {
                code: None,
                reason: "",
            })
        } else {
            Err(ProtoError::ClosePayloadTooShort)
        };
    };
    let code = CloseCode(u16::from_be_bytes(*code));
    if !code.is_valid_on_wire() {
        return Err(ProtoError::InvalidCloseCode);
    }
    // §5.5.1: the reason "is not guaranteed to be human readable" but MUST be UTF-8.
    let reason = std::str::from_utf8(reason).map_err(|_| ProtoError::InvalidUtf8)?;
    Ok(ClosePayload {
        code: Some(code),
        reason,
    })
}

/// Appends a close payload to `out`; the reason is cut to fit a control frame (125 bytes).
pub fn encode(code: CloseCode, reason: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&code.0.to_be_bytes());
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(reason.as_bytes().get(..end).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_payload_has_no_code() {
        assert_eq!(
            parse(b""),
            Ok(ClosePayload {
                code: None,
                reason: ""
            })
        );
    }

    #[test]
    fn one_byte_is_an_error() {
        assert_eq!(parse(&[0x03]), Err(ProtoError::ClosePayloadTooShort));
    }

    #[test]
    fn valid_and_invalid_codes() {
        for code in [
            1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
        ] {
            let p = code.to_be_bytes();
            assert_eq!(
                parse(&p).map(|c| c.code),
                Ok(Some(CloseCode(code))),
                "{code}"
            );
        }
        for code in [
            0u16, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            let p = code.to_be_bytes();
            assert_eq!(parse(&p), Err(ProtoError::InvalidCloseCode), "{code}");
        }
    }

    #[test]
    fn reason_must_be_utf8() {
        assert_eq!(parse(&[0x03, 0xe8, b'o', b'k']).map(|c| c.reason), Ok("ok"));
        assert_eq!(
            parse(&[0x03, 0xe8, 0xce, 0xba, 0xe1, 0xbd]),
            Err(ProtoError::InvalidUtf8)
        );
    }

    #[test]
    fn encode_round_trips_and_truncates_on_char_boundary() {
        let mut out = Vec::new();
        encode(CloseCode::GOING_AWAY, "bye", &mut out);
        assert_eq!(
            parse(&out).map(|c| (c.code, c.reason)),
            Ok((Some(CloseCode::GOING_AWAY), "bye"))
        );
        let long = "é".repeat(100);
        out.clear();
        encode(CloseCode::NORMAL, &long, &mut out);
        assert!(out.len() <= 125);
        assert!(parse(&out).is_ok());
    }
}
