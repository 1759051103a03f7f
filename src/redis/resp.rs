//! RESP2, the Redis serialization protocol: replies parsed from the front of a byte slice,
//! commands encoded into the caller's buffer. No IO: the Redis link reads into its own buffer,
//! calls [`parse`] until it says "need more", and drops the bytes it reports used.
//!
//! The grammar (redis.io, "Redis serialization protocol specification", RESP2 types only):
//!
//! ```text
//! value   = status / error / integer / bulk / array
//! status  = "+" line            ; no CR or LF inside
//! error   = "-" line
//! integer = ":" ["-"] 1*DIGIT CRLF
//! bulk    = "$" length CRLF *OCTET CRLF / "$-1" CRLF     ; the latter is Nil
//! array   = "*" length CRLF *value / "*-1" CRLF          ; the latter is Nil
//! ```
//!
//! Bounds: a declared length over [`Limits`] is refused before anything is allocated for it;
//! arrays reserve at most [`PREALLOC`] slots up front, so a header that lies about its length
//! costs nothing; a line without CRLF is refused after [`MAX_LINE`] bytes, so waiting for one is
//! bounded. The parser is iterative (an explicit stack of open arrays, at most `max_depth`), so
//! nesting cannot overflow the call stack. Each call is linear in the bytes it looks at; a
//! large reply that arrives in many reads is parsed again on each one, which is fine for replies
//! of the size a chat log asks for.

use std::fmt;

/// The longest status, error or length line accepted; Redis' own are far shorter.
const MAX_LINE: usize = 64 * 1024;

/// Array slots reserved before the elements arrive: a lying header allocates no more.
const PREALLOC: usize = 64;

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `+OK`: a simple string.
    Status(Vec<u8>),
    /// `-ERR …`: an error reply; the command failed, the connection is fine.
    Error(Vec<u8>),
    /// `:42`: a signed 64-bit integer.
    Int(i64),
    /// `$3\r\nabc`: a binary-safe string.
    Bulk(Vec<u8>),
    /// `$-1` or `*-1`: no value (a missing key, a timed-out blocking read).
    Nil,
    /// `*2\r\n…`: a list of values, possibly nested.
    Array(Vec<Value>),
}

impl Value {
    /// The bytes of a bulk string or status.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Self::Bulk(b) | Self::Status(b) => Some(b),
            _ => None,
        }
    }

    /// An integer, or a bulk string or status holding one in decimal (`HGET` of a counter).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Self::Int(i) => Some(*i),
            Self::Bulk(b) | Self::Status(b) => decimal(b).ok(),
            _ => None,
        }
    }

    /// The elements of an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Self::Array(items) => Some(items),
            _ => None,
        }
    }

    /// Whether this is an error reply.
    pub fn is_error(&self) -> bool {
        matches!(self, Self::Error(_))
    }
}

/// What the parser accepts from the server; every limit is checked before allocating.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest bulk string, in bytes (Redis' own `proto-max-bulk-len` default is 512 MiB).
    pub max_bulk: usize,
    /// Most elements one array may declare.
    pub max_elements: usize,
    /// Most arrays nested inside one another (an array of arrays is depth 2).
    pub max_depth: usize,
}

impl Default for Limits {
    /// 64 MiB bulk strings, 2^20 elements per array, depth 8: room for the stream reads a
    /// chat log makes (`XRANGE` replies are depth 3), far below what would exhaust memory.
    fn default() -> Self {
        Self {
            max_bulk: 64 << 20,
            max_elements: 1 << 20,
            max_depth: 8,
        }
    }
}

/// Why bytes from the server are not a RESP2 reply; the link cannot resync after any of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RespError {
    /// Bytes outside the grammar; the text names the rule.
    Syntax(&'static str),
    /// A declared length over [`Limits::max_bulk`] or [`Limits::max_elements`].
    TooLarge,
    /// Arrays nested deeper than [`Limits::max_depth`].
    TooDeep,
}

impl fmt::Display for RespError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax(what) => write!(f, "RESP syntax error: {what}"),
            Self::TooLarge => f.write_str("RESP length over the limit"),
            Self::TooDeep => f.write_str("RESP arrays nested too deep"),
        }
    }
}

impl std::error::Error for RespError {}

/// One complete value from the start of `buf`: Ok(None) if more bytes are needed, Ok(Some((value, bytes used))).
///
/// "Need more" is only said when some continuation of `buf` could be valid, so every proper
/// prefix of a valid reply gives `Ok(None)`; `bytes used` is never 0.
pub fn parse(buf: &[u8], limits: &Limits) -> Result<Option<(Value, usize)>, RespError> {
    // Open arrays, innermost last: the elements so far and the declared length.
    let mut open: Vec<(Vec<Value>, usize)> = Vec::new();
    let mut pos = 0;
    loop {
        let Some((head, used)) = head(buf.get(pos..).unwrap_or_default(), limits)? else {
            return Ok(None);
        };
        pos += used;
        let mut value = match head {
            Head::Value(value) => value,
            Head::Array(len) => {
                if open.len() >= limits.max_depth {
                    return Err(RespError::TooDeep);
                }
                if len > 0 {
                    open.push((Vec::with_capacity(len.min(PREALLOC)), len));
                    continue;
                }
                Value::Array(Vec::new())
            }
        };
        // Hand the value to its array, closing every array it completes.
        loop {
            let Some((items, len)) = open.last_mut() else {
                return Ok(Some((value, pos)));
            };
            items.push(value);
            if items.len() < *len {
                break;
            }
            match open.pop() {
                Some((items, _)) => value = Value::Array(items),
                None => break, // unreachable: `last_mut` just saw it
            }
        }
    }
}

/// Appends a command (an array of bulk strings) to `out`.
pub fn encode(args: &[&[u8]], out: &mut Vec<u8>) {
    push_header(out, b'*', args.len());
    for arg in args {
        push_header(out, b'$', arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// One item's header: a whole scalar value, or an array's declared length.
enum Head {
    Value(Value),
    Array(usize),
}

/// The item at the start of `buf` and the bytes it used: a scalar whole, an array's header only.
fn head(buf: &[u8], limits: &Limits) -> Result<Option<(Head, usize)>, RespError> {
    let Some((&kind, rest)) = buf.split_first() else {
        return Ok(None);
    };
    if !matches!(kind, b'+' | b'-' | b':' | b'$' | b'*') {
        return Err(RespError::Syntax("unknown type byte"));
    }
    let Some(line) = line(rest)? else {
        return Ok(None);
    };
    let used = 1 + line.len() + 2;
    let after = buf.get(used..).unwrap_or_default();
    let head = match kind {
        b'+' => Head::Value(Value::Status(line.to_vec())),
        b'-' => Head::Value(Value::Error(line.to_vec())),
        b':' => Head::Value(Value::Int(decimal(line)?)),
        b'$' => match length(line, limits.max_bulk)? {
            None => Head::Value(Value::Nil),
            Some(len) => {
                // `len <= max_bulk` was checked; a huge limit must not wrap the sum.
                let Some(total) = len.checked_add(2) else {
                    return Err(RespError::TooLarge);
                };
                let Some(data) = after.get(..total) else {
                    return Ok(None);
                };
                let Some(bytes) = data.strip_suffix(b"\r\n") else {
                    return Err(RespError::Syntax("bulk string not followed by CRLF"));
                };
                let Some(used) = used.checked_add(total) else {
                    return Err(RespError::TooLarge);
                };
                return Ok(Some((Head::Value(Value::Bulk(bytes.to_vec())), used)));
            }
        },
        _ => match length(line, limits.max_elements)? {
            None => Head::Value(Value::Nil),
            Some(len) => Head::Array(len),
        },
    };
    Ok(Some((head, used)))
}

/// A line's content, before its CRLF; `Ok(None)` while it may still end.
fn line(buf: &[u8]) -> Result<Option<&[u8]>, RespError> {
    // Look no further than a line may reach, so a peer that never sends CRLF costs MAX_LINE.
    let window = buf.get(..MAX_LINE + 2).unwrap_or(buf);
    let Some(end) = window.iter().position(|&b| b == b'\r' || b == b'\n') else {
        return if window.len() > MAX_LINE {
            Err(RespError::Syntax("line too long"))
        } else {
            Ok(None)
        };
    };
    if end > MAX_LINE {
        return Err(RespError::Syntax("line too long"));
    }
    let (content, rest) = buf.split_at_checked(end).unwrap_or((buf, &[]));
    match rest {
        [b'\r', b'\n', ..] => Ok(Some(content)),
        [b'\r'] => Ok(None),
        _ => Err(RespError::Syntax("line not ended by CRLF")),
    }
}

/// A declared length: `-1` is Nil (`None`), anything over `max` is [`RespError::TooLarge`].
fn length(line: &[u8], max: usize) -> Result<Option<usize>, RespError> {
    if line == b"-1" {
        return Ok(None);
    }
    if line.is_empty() || !line.iter().all(u8::is_ascii_digit) {
        return Err(RespError::Syntax("bad length"));
    }
    let mut len: u64 = 0;
    for &digit in line {
        // Overflow means longer than any limit; compare as u64, cast after.
        len = len
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(digit - b'0')))
            .ok_or(RespError::TooLarge)?;
    }
    if len > max as u64 {
        return Err(RespError::TooLarge);
    }
    usize::try_from(len)
        .map(Some)
        .map_err(|_| RespError::TooLarge)
}

/// A signed decimal integer: `["-"] 1*DIGIT`, within i64.
fn decimal(text: &[u8]) -> Result<i64, RespError> {
    let (negative, digits) = match text.strip_prefix(b"-") {
        Some(digits) => (true, digits),
        None => (false, text),
    };
    if digits.is_empty() {
        return Err(RespError::Syntax("bad integer"));
    }
    let mut n: i64 = 0;
    for &digit in digits {
        if !digit.is_ascii_digit() {
            return Err(RespError::Syntax("bad integer"));
        }
        let d = i64::from(digit - b'0');
        // Accumulate on the sign's side so i64::MIN parses too.
        n = n
            .checked_mul(10)
            .and_then(|n| {
                if negative {
                    n.checked_sub(d)
                } else {
                    n.checked_add(d)
                }
            })
            .ok_or(RespError::Syntax("integer out of range"))?;
    }
    Ok(n)
}

/// Appends `kind`, `n` in decimal and CRLF, without going through `fmt`.
fn push_header(out: &mut Vec<u8>, kind: u8, n: usize) {
    out.push(kind);
    let start = out.len();
    let mut n = n;
    loop {
        out.push(b'0' + (n % 10) as u8);
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if let Some(digits) = out.get_mut(start..) {
        digits.reverse();
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(buf: &[u8]) -> Result<Option<(Value, usize)>, RespError> {
        parse(buf, &Limits::default())
    }

    fn bulk(b: &[u8]) -> Value {
        Value::Bulk(b.to_vec())
    }

    /// A pipeline of one reply of every type, and the values it holds.
    fn pipeline() -> (Vec<u8>, Vec<Value>) {
        let bytes = b"+OK\r\n-ERR unknown command 'FOO'\r\n:-42\r\n$5\r\nhe\r\no\r\n$0\r\n\r\n\
            $-1\r\n*-1\r\n*0\r\n*3\r\n$7\r\nmessage\r\n$4\r\nroom\r\n*2\r\n:1\r\n*1\r\n+x\r\n"
            .to_vec();
        let values = vec![
            Value::Status(b"OK".to_vec()),
            Value::Error(b"ERR unknown command 'FOO'".to_vec()),
            Value::Int(-42),
            bulk(b"he\r\no"),
            bulk(b""),
            Value::Nil,
            Value::Nil,
            Value::Array(vec![]),
            Value::Array(vec![
                bulk(b"message"),
                bulk(b"room"),
                Value::Array(vec![
                    Value::Int(1),
                    Value::Array(vec![Value::Status(b"x".to_vec())]),
                ]),
            ]),
        ];
        (bytes, values)
    }

    /// Every value of `buf`, in order, and the bytes left that are not yet a whole value.
    fn parse_stream(mut buf: &[u8]) -> (Vec<Value>, usize) {
        let mut values = Vec::new();
        while let Some((value, used)) = parse_all(buf).unwrap() {
            assert!(used > 0 && used <= buf.len());
            values.push(value);
            buf = &buf[used..];
        }
        (values, buf.len())
    }

    #[test]
    fn every_type() {
        let (bytes, values) = pipeline();
        assert_eq!(parse_stream(&bytes), (values, 0));
    }

    #[test]
    fn each_value_reports_its_length() {
        assert_eq!(
            parse_all(b"+OK\r\n+more"),
            Ok(Some((Value::Status(b"OK".to_vec()), 5)))
        );
        assert_eq!(parse_all(b"$3\r\nabc\r\n:1"), Ok(Some((bulk(b"abc"), 9))));
        assert_eq!(
            parse_all(b"*1\r\n$1\r\na\r\n*"),
            Ok(Some((Value::Array(vec![bulk(b"a")]), 11)))
        );
    }

    #[test]
    fn every_split_point_is_need_more_then_the_same_values() {
        let (bytes, values) = pipeline();
        for cut in 0..bytes.len() {
            let (head, tail) = bytes.split_at(cut);
            let (first, left) = parse_stream(head);
            assert!(first.len() < values.len(), "cut {cut}");
            assert_eq!(first[..], values[..first.len()], "cut {cut}");
            // The caller keeps the unused bytes and appends the next read.
            let mut rest = head[head.len() - left..].to_vec();
            rest.extend_from_slice(tail);
            let (second, left) = parse_stream(&rest);
            assert_eq!(left, 0, "cut {cut}");
            assert_eq!([first, second].concat(), values, "cut {cut}");
        }
    }

    #[test]
    fn byte_at_a_time() {
        let (bytes, values) = pipeline();
        let mut buf = Vec::new();
        let mut got = Vec::new();
        for &b in &bytes {
            buf.push(b);
            if let Some((value, used)) = parse_all(&buf).unwrap() {
                got.push(value);
                buf.drain(..used);
            }
        }
        assert!(buf.is_empty());
        assert_eq!(got, values);
    }

    #[test]
    fn integers() {
        for (text, n) in [
            (&b":0\r\n"[..], 0),
            (b":-0\r\n", 0),
            (b":007\r\n", 7),
            (b":9223372036854775807\r\n", i64::MAX),
            (b":-9223372036854775808\r\n", i64::MIN),
        ] {
            assert_eq!(parse_all(text), Ok(Some((Value::Int(n), text.len()))));
        }
        for text in [
            &b":9223372036854775808\r\n"[..],
            b":-9223372036854775809\r\n",
            b":99999999999999999999999\r\n",
        ] {
            assert_eq!(
                parse_all(text),
                Err(RespError::Syntax("integer out of range"))
            );
        }
        for text in [
            &b":\r\n"[..],
            b":-\r\n",
            b":+1\r\n",
            b": 1\r\n",
            b":1.5\r\n",
        ] {
            assert_eq!(parse_all(text), Err(RespError::Syntax("bad integer")));
        }
    }

    #[test]
    fn syntax_errors() {
        for (text, why) in [
            (&b"%1\r\n"[..], "unknown type byte"),
            (b"_\r\n", "unknown type byte"),
            (b"OK\r\n", "unknown type byte"),
            (b"+OK\n", "line not ended by CRLF"),
            (b"+O\rK\r\n", "line not ended by CRLF"),
            (b"$3\r\nabcd\r\n", "bulk string not followed by CRLF"),
            (b"$3\r\nabc\n\n", "bulk string not followed by CRLF"),
            (b"$-2\r\n", "bad length"),
            (b"$\r\n", "bad length"),
            (b"$+1\r\n", "bad length"),
            (b"$1 \r\n", "bad length"),
            (b"*-0\r\n", "bad length"),
            (b"*1\r\n%x\r\n", "unknown type byte"),
        ] {
            assert_eq!(parse_all(text), Err(RespError::Syntax(why)), "{text:?}");
        }
    }

    #[test]
    fn a_line_without_crlf_is_waited_for_up_to_max_line() {
        let mut line = vec![b'+'];
        line.resize(1 + MAX_LINE, b'a');
        assert_eq!(parse_all(&line), Ok(None));
        line.push(b'\r');
        assert_eq!(parse_all(&line), Ok(None));
        line.push(b'\n');
        assert!(matches!(parse_all(&line), Ok(Some((Value::Status(_), _)))));
        line.truncate(1 + MAX_LINE);
        line.push(b'a');
        assert_eq!(parse_all(&line), Err(RespError::Syntax("line too long")));
        line.extend_from_slice(b"\r\n");
        assert_eq!(parse_all(&line), Err(RespError::Syntax("line too long")));
    }

    #[test]
    fn limits_refuse_declared_lengths_before_the_data() {
        let limits = Limits {
            max_bulk: 4,
            max_elements: 2,
            max_depth: 2,
        };
        assert_eq!(
            parse(b"$4\r\nabcd\r\n", &limits),
            Ok(Some((bulk(b"abcd"), 10)))
        );
        assert_eq!(parse(b"$5\r\n", &limits), Err(RespError::TooLarge));
        assert_eq!(
            parse(b"$99999999999999999999999\r\n", &limits),
            Err(RespError::TooLarge)
        );
        assert_eq!(
            parse(b"*2\r\n:1\r\n:2\r\n", &limits).map(|v| v.map(|v| v.1)),
            Ok(Some(12))
        );
        assert_eq!(parse(b"*3\r\n", &limits), Err(RespError::TooLarge));
        assert_eq!(parse(b"*1\r\n*3\r\n", &limits), Err(RespError::TooLarge));
        // Depth 2 fits, a third array does not, empty or not, seen at its header.
        assert_eq!(
            parse(b"*1\r\n*1\r\n:1\r\n", &limits).map(|v| v.map(|v| v.1)),
            Ok(Some(12))
        );
        assert_eq!(
            parse(b"*1\r\n*1\r\n*0\r\n", &limits),
            Err(RespError::TooDeep)
        );
        assert_eq!(
            parse(b"*1\r\n*1\r\n*-1\r\n", &limits).map(|v| v.is_some()),
            Ok(true)
        );
        let defaults = Limits::default();
        assert_eq!(
            parse(format!("${}\r\n", 64 << 20).as_bytes(), &defaults),
            Ok(None)
        );
        assert_eq!(
            parse(format!("${}\r\n", (64 << 20) + 1).as_bytes(), &defaults),
            Err(RespError::TooLarge)
        );
        assert_eq!(
            parse(&b"*1\r\n".repeat(9), &defaults),
            Err(RespError::TooDeep)
        );
        assert_eq!(parse(&b"*1\r\n".repeat(8), &defaults), Ok(None));
    }

    #[test]
    fn a_lying_array_header_is_need_more_not_an_allocation() {
        // Declares 2^20 elements and sends one: `parse` reserved PREALLOC slots, not 2^20.
        assert_eq!(parse_all(b"*1048576\r\n:1\r\n"), Ok(None));
        assert_eq!(parse_all(b"*1048577\r\n"), Err(RespError::TooLarge));
    }

    #[test]
    fn encode_round_trips_binary_args() {
        let args: [&[u8]; 5] = [
            b"XADD",
            b"room:a",
            b"",
            b"\r\n$3\r\n*-1\r\n",
            &[0, 255, b'\r'],
        ];
        let mut out = b"leftover".to_vec();
        encode(&args, &mut out);
        let encoded = &out[8..];
        assert!(encoded.starts_with(b"*5\r\n$4\r\nXADD\r\n$6\r\nroom:a\r\n$0\r\n\r\n"));
        let expected = Value::Array(args.iter().map(|a| bulk(a)).collect());
        assert_eq!(parse_all(encoded), Ok(Some((expected, encoded.len()))));
        out.clear();
        encode(&[], &mut out);
        assert_eq!(out, b"*0\r\n");
        out.clear();
        let long = vec![b'x'; 1234567];
        encode(&[&long], &mut out);
        assert!(out.starts_with(b"*1\r\n$1234567\r\n"));
        assert_eq!(
            parse_all(&out),
            Ok(Some((Value::Array(vec![bulk(&long)]), out.len())))
        );
    }

    #[test]
    fn accessors() {
        assert_eq!(bulk(b"ab").as_bytes(), Some(&b"ab"[..]));
        assert_eq!(Value::Status(b"OK".to_vec()).as_bytes(), Some(&b"OK"[..]));
        assert_eq!(Value::Error(b"ERR".to_vec()).as_bytes(), None);
        assert_eq!(Value::Int(7).as_int(), Some(7));
        assert_eq!(bulk(b"-12").as_int(), Some(-12));
        assert_eq!(Value::Status(b"3".to_vec()).as_int(), Some(3));
        assert_eq!(bulk(b"1.5").as_int(), None);
        assert_eq!(bulk(b"").as_int(), None);
        assert_eq!(Value::Nil.as_int(), None);
        assert_eq!(
            Value::Array(vec![Value::Nil]).as_array(),
            Some(&[Value::Nil][..])
        );
        assert_eq!(Value::Nil.as_array(), None);
        assert!(Value::Error(b"ERR".to_vec()).is_error());
        assert!(!Value::Status(b"OK".to_vec()).is_error());
    }

    #[test]
    fn errors_display() {
        assert_eq!(
            RespError::Syntax("bad length").to_string(),
            "RESP syntax error: bad length"
        );
        assert_eq!(
            RespError::TooLarge.to_string(),
            "RESP length over the limit"
        );
        assert_eq!(
            RespError::TooDeep.to_string(),
            "RESP arrays nested too deep"
        );
    }
}
