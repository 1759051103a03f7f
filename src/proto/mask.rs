//! Payload masking (RFC 6455 §5.3): `transformed[i] = original[i] ^ key[i % 4]`.

/// Applies `key` to `buf` in place, byte by byte; `offset` is the payload position of `buf[0]`.
///
/// The reference the fast path is checked against.
pub fn apply_mask_scalar(buf: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[(offset + i) % 4];
    }
}

/// Applies `key` to `buf` in place, eight bytes at a time; same result as [`apply_mask_scalar`].
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    // Rotate the key so that lane 0 lines up with buf[0].
    let mut rotated = [0u8; 8];
    for (i, r) in rotated.iter_mut().enumerate() {
        *r = key[(offset + i) % 4];
    }
    let wide = u64::from_ne_bytes(rotated);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    let rest = chunks.into_remainder();
    for (b, m) in rest.iter_mut().zip(rotated) {
        *b ^= m;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_matches_scalar_for_all_small_lengths_and_offsets() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        for len in 0..=40 {
            for offset in 0..4 {
                let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
                let mut a = data.clone();
                let mut b = data.clone();
                apply_mask_scalar(&mut a, key, offset);
                apply_mask(&mut b, key, offset);
                assert_eq!(a, b, "len {len} offset {offset}");
            }
        }
    }

    #[test]
    fn rfc_example_masked_hello() {
        // RFC 6455 §5.7: "Hello" masked with 37 fa 21 3d.
        let mut payload = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        apply_mask(&mut payload, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(&payload, b"Hello");
    }

    #[test]
    fn split_unmasking_uses_offset() {
        let key = [1, 2, 3, 4];
        let mut whole: Vec<u8> = (0..23).collect();
        let mut parts = whole.clone();
        apply_mask(&mut whole, key, 0);
        let (a, b) = parts.split_at_mut(5);
        apply_mask(a, key, 0);
        apply_mask(b, key, 5);
        assert_eq!(whole, parts);
    }
}
