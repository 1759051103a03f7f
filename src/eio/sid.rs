//! Session ids: 18 bytes, written as 24 characters of URL-safe base64.
//!
//! The first 6 bytes name the process (the node) that holds the session, so a request that a
//! balancer sent to another node of a cluster can be passed on to it; the next 4 are the
//! session's slot in that node's table, so a request finds its session without a map from ids
//! to slots; the last 8 are a tag that only the node can make, so a sid cannot be guessed (the reference server's ids are 15 random bytes). A tag is
//! the first 8 bytes of SHA-1(secret ‖ counter), where the 32-byte secret is read once from the
//! kernel's random source at start and the counter counts sessions: no tag repeats within a
//! run, and without the secret the next one cannot be told from the last (SHA-1 is used here
//! as a keyed hash over an input the client never chooses, where its collision attacks do not
//! apply; the crate is already here for the WebSocket handshake).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha1::{Digest as _, Sha1};

/// Characters in a sid: 18 bytes in base64, no padding.
pub const SID_LEN: usize = 24;

/// A node's name in the sids it makes.
pub type Node = [u8; 6];

/// Makes the tags of new sessions.
#[derive(Clone)]
pub struct Tags {
    secret: [u8; 32],
    counter: u64,
}

impl std::fmt::Debug for Tags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret stays out of logs.
        f.debug_struct("Tags")
            .field("counter", &self.counter)
            .finish()
    }
}

impl Tags {
    /// Tags keyed by `secret` (32 bytes from the kernel's random source).
    pub fn new(secret: [u8; 32]) -> Self {
        Self { secret, counter: 0 }
    }

    /// This process's node name: derived from the secret, so random per run.
    pub fn node(&self) -> Node {
        let digest = Sha1::new()
            .chain_update(self.secret)
            .chain_update(b"node")
            .finalize();
        let mut node = [0; 6];
        for (n, d) in node.iter_mut().zip(digest.iter()) {
            *n = *d;
        }
        node
    }

    /// The next tag.
    pub fn make(&mut self) -> u64 {
        self.counter = self.counter.wrapping_add(1);
        let digest = Sha1::new()
            .chain_update(self.secret)
            .chain_update(self.counter.to_le_bytes())
            .finalize();
        let mut tag = [0; 8];
        for (t, d) in tag.iter_mut().zip(digest.iter()) {
            *t = *d;
        }
        u64::from_le_bytes(tag)
    }
}

/// The sid of the session in node `node`'s slot `key` with `tag`.
pub fn encode(node: Node, key: u32, tag: u64) -> [u8; SID_LEN] {
    let mut raw = [0; 18];
    let (n, rest) = raw.split_at_mut(6);
    let (k, t) = rest.split_at_mut(4);
    n.copy_from_slice(&node);
    k.copy_from_slice(&key.to_le_bytes());
    t.copy_from_slice(&tag.to_le_bytes());
    let mut out = [0; SID_LEN];
    // 18 bytes are exactly 24 characters: the slice is always large enough.
    let _ = URL_SAFE_NO_PAD.encode_slice(raw, &mut out);
    out
}

/// The node, slot and tag a sid names; `None` if it is not one of ours in form.
pub fn decode(sid: &str) -> Option<(Node, u32, u64)> {
    if sid.len() != SID_LEN {
        return None;
    }
    let mut raw = [0; 18];
    match URL_SAFE_NO_PAD.decode_slice(sid, &mut raw) {
        Ok(18) => {}
        _ => return None,
    }
    let (n, rest) = raw.split_first_chunk::<6>()?;
    let (k, t) = rest.split_first_chunk::<4>()?;
    let t: [u8; 8] = t.try_into().ok()?;
    Some((*n, u32::from_le_bytes(*k), u64::from_le_bytes(t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sids_round_trip_and_are_url_safe() {
        let mut tags = Tags::new([7; 32]);
        let node = tags.node();
        let mut seen = std::collections::HashSet::new();
        for key in [0, 1, 77, u32::MAX] {
            let tag = tags.make();
            assert!(seen.insert(tag), "a tag repeated");
            let sid = encode(node, key, tag);
            let text = std::str::from_utf8(&sid).unwrap();
            assert!(
                text.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{text}"
            );
            assert_eq!(decode(text), Some((node, key, tag)));
        }
        // Another secret, other tags.
        assert_ne!(Tags::new([8; 32]).make(), Tags::new([7; 32]).make());
        assert_ne!(Tags::new([8; 32]).node(), node);
        for bad in [
            "",
            "short",
            "AAAAAAAAAAAAAAAAAAAAAAA=",
            "AAAAAAAAAAAAAAAAAAAAAAAAA",
            "AAAAAAAAAAAAAAAAAAAAAA!A",
        ] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }
}
