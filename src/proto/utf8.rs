//! Incremental UTF-8 validation (RFC 6455 §5.6, §8.1) that fails on the first invalid byte.
//!
//! A text message may be split anywhere, even inside a code point, across frames and reads.
//! The validator keeps at most 3 bytes of an unfinished code point between calls.

/// Validates UTF-8 fed in pieces; an error is reported as soon as no continuation can fix it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Utf8Validator {
    /// Bytes of an incomplete code point; only `partial[..partial_len]` is meaningful.
    partial: [u8; 4],
    /// 0..=3.
    partial_len: u8,
}

/// The input is not UTF-8, and no further bytes can make it so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utf8Error;

/// The length of the code point that `lead` starts, or `None` if `lead` cannot start one.
fn sequence_len(lead: u8) -> Option<usize> {
    match lead {
        0x00..=0x7f => Some(1),
        0xc2..=0xdf => Some(2),
        0xe0..=0xef => Some(3),
        0xf0..=0xf4 => Some(4),
        _ => None,
    }
}

impl Utf8Validator {
    /// A validator at the start of a message.
    pub const fn new() -> Self {
        Self {
            partial: [0; 4],
            partial_len: 0,
        }
    }

    /// Validates the next piece of the message.
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), Utf8Error> {
        if self.partial_len > 0 {
            let have = usize::from(self.partial_len);
            let need =
                sequence_len(self.partial.first().copied().unwrap_or(0xff)).ok_or(Utf8Error)?;
            let take = need.saturating_sub(have).min(input.len());
            let mut buf = self.partial;
            // have <= 3 and have + take <= need <= 4.
            if let (Some(dst), Some(src)) = (buf.get_mut(have..have + take), input.get(..take)) {
                dst.copy_from_slice(src);
            }
            match std::str::from_utf8(buf.get(..have + take).unwrap_or_default()) {
                Ok(_) => {}
                // std reports `error_len() == None` only for a valid prefix cut short.
                Err(e) if e.error_len().is_none() && have + take < need => {
                    self.partial = buf;
                    self.partial_len = (have + take) as u8;
                    return Ok(());
                }
                Err(_) => return Err(Utf8Error),
            }
            self.partial_len = 0;
            input = input.get(take..).unwrap_or_default();
        }
        match std::str::from_utf8(input) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                let tail = input.get(e.valid_up_to()..).unwrap_or_default();
                // std reports an incomplete tail of at most 3 bytes.
                if let Some(dst) = self.partial.get_mut(..tail.len()) {
                    dst.copy_from_slice(tail);
                }
                self.partial_len = tail.len() as u8;
                Ok(())
            }
            Err(_) => Err(Utf8Error),
        }
    }

    /// Ends the message: an unfinished code point at the end is an error.
    pub fn finish(&mut self) -> Result<(), Utf8Error> {
        let done = self.partial_len == 0;
        *self = Self::new();
        if done { Ok(()) } else { Err(Utf8Error) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(input: &[u8]) -> bool {
        let mut v = Utf8Validator::new();
        v.feed(input).is_ok() && v.finish().is_ok()
    }

    fn byte_by_byte(input: &[u8]) -> bool {
        let mut v = Utf8Validator::new();
        input
            .iter()
            .all(|b| v.feed(std::slice::from_ref(b)).is_ok())
            && v.finish().is_ok()
    }

    const CASES: &[&[u8]] = &[
        b"",
        b"Hello-\xc2\xb5@\xc3\x9f\xc3\xb6\xc3\xa4\xc3\xbc\xc3\xa0\xc3\xa1-UTF-8!!",
        "κόσμε".as_bytes(),
        b"\xf0\x90\x80\x80",
        b"\xf4\x8f\xbf\xbf",
        b"\xf4\x90\x80\x80",
        b"\xed\xa0\x80",
        b"\xc0\xaf",
        b"\xe0\x80\xaf",
        b"\xff",
        b"\xce\xba\xe1\xbd",
        b"\x80",
        b"a\xf0\x9f\x98",
        b"\xef\xbf\xbf",
    ];

    #[test]
    fn agrees_with_std_whole_and_byte_by_byte_and_every_split() {
        for &case in CASES {
            let expect = std::str::from_utf8(case).is_ok();
            assert_eq!(whole(case), expect, "{case:x?}");
            assert_eq!(byte_by_byte(case), expect, "{case:x?}");
            for cut in 0..=case.len() {
                let mut v = Utf8Validator::new();
                let ok = v.feed(&case[..cut]).is_ok()
                    && v.feed(&case[cut..]).is_ok()
                    && v.finish().is_ok();
                assert_eq!(ok, expect, "{case:x?} cut at {cut}");
            }
        }
    }

    #[test]
    fn fails_fast_on_first_impossible_byte() {
        // §8.1 / Autobahn 6.4.x: 0xf4 0x90 can never start a valid code point.
        let mut v = Utf8Validator::new();
        assert_eq!(
            v.feed(b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4"),
            Ok(())
        );
        assert_eq!(v.feed(b"\x90"), Err(Utf8Error));
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"ok\xed\xa0"), Err(Utf8Error));
    }

    #[test]
    fn incomplete_at_end_of_message_is_an_error() {
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"\xe2\x82"), Ok(()));
        assert_eq!(v.finish(), Err(Utf8Error));
        assert_eq!(v.feed(b"ok"), Ok(()));
        assert_eq!(v.finish(), Ok(()));
    }
}
