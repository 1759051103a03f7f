//! One client connection: a connect from a chosen source address, the opening handshake,
//! masked frames out, server frames in, read in the server's [`Dialect`]. Frames go through
//! wsrelay's own `proto` codec.
//!
//! With `deflate`, a client offers permessage-deflate as Chromium does
//! (`permessage-deflate; client_max_window_bits`), sends uncompressed, and inflates what
//! comes compressed: with its own zlib stream if the server keeps context between messages
//! (Node ws does by default), else through the worker's [`Inflate`], which inflates a given
//! compressed payload once for all its connections (a server without context takeover sends
//! every receiver the same bytes for the same message).
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;

use flate2::{Decompress, FlushDecompress};
use mio::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use socket2::{Domain, Socket, Type};

use wsrelay::proto::frame::{self, FrameHead, OpCode};
use wsrelay::proto::handshake::accept_key;
use wsrelay::proto::mask::apply_mask;

use crate::dialect::{Delivery, Dialect, Inbound};

/// The key every client sends; the benchmark needs no secrecy (§4.1 asks for randomness only
/// to stop caching intermediaries, of which loopback has none).
const KEY: &[u8] = b"dGhlIHNhbXBsZSBub25jZQ==";
/// Largest frame a client accepts; anything bigger is a server bug for these scenarios.
const MAX_FRAME: u64 = 16 << 20;
/// Largest response head accepted.
const MAX_HEAD: usize = 8192;
/// What Chromium offers.
const OFFER: &str = "permessage-deflate; client_max_window_bits";
/// Distinct compressed payloads an [`Inflate`] remembers before it starts over.
const CACHE: usize = 4096;

/// permessage-deflate on one connection.
enum Deflate {
    Off,
    /// Offered; the 101 says whether it was accepted.
    Offered,
    /// Accepted with `server_no_context_takeover`: every message inflates on its own.
    Stateless,
    /// Accepted with context takeover: this connection's own zlib stream (made on first use).
    Takeover(Option<Box<Decompress>>),
}

/// A hasher for byte strings: a multiply-rotate over 8-byte words (the keys are compressed
/// payloads from the server under test, not chosen to collide).
#[derive(Default)]
pub struct WordHasher(u64);

impl Hasher for WordHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes(c.try_into().unwrap_or_default());
            self.0 = (self.0 ^ w)
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .rotate_left(29);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Inflates compressed payloads for the connections of one worker: each distinct payload
/// without context once, and a connection's own stream's into one buffer.
#[derive(Default)]
pub struct Inflate {
    cache: HashMap<Box<[u8]>, Box<[u8]>, BuildHasherDefault<WordHasher>>,
    out: Vec<u8>,
    /// Compressed payloads inflated (cache misses and context-takeover messages).
    pub inflated: u64,
}

impl Inflate {
    /// What `payload` inflates to without context (RFC 7692 §7.2.2).
    fn stateless(&mut self, payload: &[u8]) -> io::Result<&[u8]> {
        if !self.cache.contains_key(payload) {
            if self.cache.len() >= CACHE {
                self.cache.clear();
            }
            let mut z = Decompress::new(false);
            inflate(&mut z, payload, &mut self.out)?;
            self.inflated += 1;
            self.cache
                .insert(payload.into(), self.out.as_slice().into());
        }
        Ok(self.cache.get(payload).map(|b| &b[..]).unwrap_or_default())
    }

    /// What `payload` inflates to in the stream `z` (context takeover).
    fn with(&mut self, z: &mut Decompress, payload: &[u8]) -> io::Result<&[u8]> {
        inflate(z, payload, &mut self.out)?;
        self.inflated += 1;
        Ok(&self.out)
    }
}

/// Inflates one message's payload with `z` (kept as it is after, for context takeover).
fn inflate(z: &mut Decompress, payload: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    out.clear();
    for input in [payload, &[0, 0, 0xff, 0xff][..]] {
        let mut rest = input;
        loop {
            out.reserve(4096);
            let before = (z.total_in(), z.total_out());
            z.decompress_vec(rest, out, FlushDecompress::Sync)
                .map_err(|e| bad(&format!("inflate: {e}")))?;
            rest = &rest[(z.total_in() - before.0) as usize..];
            if out.len() as u64 > MAX_FRAME {
                return Err(bad("inflated message too large"));
            }
            let stalled = (z.total_in(), z.total_out()) == before;
            if (rest.is_empty() && out.len() < out.capacity()) || stalled {
                break;
            }
        }
    }
    Ok(())
}

/// Where a client is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// TCP connect in progress.
    Connecting,
    /// Request sent, waiting for the 101.
    Upgrading,
    /// WebSocket open, the dialect's own handshake not done yet (chat: no welcome yet;
    /// socket.io: not in the namespace yet).
    Joining,
    /// In: broadcasts reach this client.
    Open,
    /// Closed, by either side or by an error.
    Closed,
}

/// One WebSocket client over a non-blocking socket.
pub struct Client {
    /// The socket, registered by the caller.
    pub stream: TcpStream,
    /// Where the client is.
    pub phase: Phase,
    host: String,
    dialect: Dialect,
    /// Output not yet taken by the socket: `out[out_pos..]`.
    out: Vec<u8>,
    out_pos: usize,
    /// An incomplete response head or frame carried over to the next read.
    partial: Vec<u8>,
    mask_seed: u32,
    deflate: Deflate,
    /// Bytes read from the socket.
    pub wire_bytes: u64,
    /// TLS (`--tls-ca`): everything above goes through it.
    tls: Option<Box<ClientConnection>>,
}

/// TLS settings for the handshake-rate scenario: the client's share of the work kept small
/// so the server is what is measured. The server's certificate is accepted unchecked (its
/// signature over the handshake, which the server computes anyway, is not verified): on
/// loopback against a server we started, as h2load and `openssl s_time` do by default.
pub fn handshake_config(ca: &Path) -> io::Result<Arc<ClientConfig>> {
    let mut config = (*tls_config(ca)?).clone();
    let provider = config.crypto_provider().clone();
    config
        .dangerous()
        .set_certificate_verifier(Arc::new(Unverified(provider)));
    Ok(Arc::new(config))
}

/// Accepts any server certificate and handshake signature (see [`handshake_config`]).
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// TLS settings for clients that trust the CA in `ca` (PEM) and offer ALPN http/1.1.
pub fn tls_config(ca: &Path) -> io::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(io::Error::other)? {
        roots
            .add(cert.map_err(io::Error::other)?)
            .map_err(io::Error::other)?;
    }
    // ring: what the server uses, built with a C compiler only. X25519 first, as browsers,
    // OpenSSL and Node offer it (ring's own default order puts P-384 first).
    #[allow(deprecated)]
    let mut provider = rustls::crypto::ring::default_provider();
    provider.kx_groups = vec![
        rustls::crypto::ring::kx_group::X25519,
        rustls::crypto::ring::kx_group::SECP256R1,
        rustls::crypto::ring::kx_group::SECP384R1,
    ];
    let provider = Arc::new(provider);
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // No resumption: every connection pays a full handshake, like a new visitor.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// Opens a non-blocking TCP connection from `src` (any port) to `dst`.
pub fn connect_from(src: Ipv4Addr, dst: SocketAddrV4) -> io::Result<TcpStream> {
    // socket2 opens it close-on-exec.
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    // The port is picked at connect time from the whole 4-tuple, so each source address
    // gets its own ~28k ports instead of sharing bind()'s pool. (socket2 has no setter.)
    let one: libc::c_int = 1;
    // SAFETY: a valid socket fd, and `one` is a valid c_int for the duration of the call.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    socket.bind(&SocketAddrV4::new(src, 0).into())?;
    match socket.connect(&dst.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

impl Client {
    /// Wraps a socket from [`connect_from`]; the handshake goes out once it is connected,
    /// offering permessage-deflate if `deflate`.
    pub fn new(
        stream: TcpStream,
        dst: SocketAddrV4,
        seed: u32,
        dialect: Dialect,
        deflate: bool,
        tls: Option<&Arc<ClientConfig>>,
    ) -> Self {
        // The test certificate names localhost (and 127.0.0.1).
        let tls = tls.and_then(|config| {
            let name = ServerName::try_from("localhost").ok()?;
            ClientConnection::new(Arc::clone(config), name)
                .ok()
                .map(Box::new)
        });
        Self {
            tls,
            stream,
            phase: Phase::Connecting,
            host: dst.to_string(),
            dialect,
            out: Vec::new(),
            out_pos: 0,
            partial: Vec::new(),
            mask_seed: seed | 1,
            deflate: if deflate {
                Deflate::Offered
            } else {
                Deflate::Off
            },
            wire_bytes: 0,
        }
    }

    /// The socket is writable: finish the connect (sending the request) and flush output.
    pub fn on_writable(&mut self) -> io::Result<()> {
        if self.phase == Phase::Connecting {
            if let Some(e) = self.stream.take_error()? {
                return Err(e);
            }
            // Spurious writable before the connect completed: wait for the next edge.
            if self.stream.peer_addr().is_err() {
                return Ok(());
            }
            let _ = self.stream.set_nodelay(true);
            let offer = match self.deflate {
                Deflate::Off => String::new(),
                _ => format!("Sec-WebSocket-Extensions: {OFFER}\r\n"),
            };
            let req = format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n",
                self.dialect.path(),
                self.host,
                std::str::from_utf8(KEY).unwrap_or_default()
            );
            self.out.extend_from_slice(req.as_bytes());
            self.phase = Phase::Upgrading;
        }
        self.flush()
    }

    /// Appends one masked, unfragmented frame to the output (call [`Client::flush`] after).
    pub fn queue_frame(&mut self, opcode: OpCode, payload: &[u8]) {
        // xorshift: masks that vary, as §5.3 asks, without a random source.
        let mut x = self.mask_seed;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.mask_seed = x;
        let key = x.to_ne_bytes();
        let head = FrameHead {
            fin: true,
            rsv1: false,
            opcode,
            mask: Some(key),
            payload_len: payload.len() as u64,
        };
        frame::encode_head(&head, &mut self.out);
        let start = self.out.len();
        self.out.extend_from_slice(payload);
        apply_mask(&mut self.out[start..], key, 0);
    }

    /// Writes queued output until done or `WouldBlock`.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.phase == Phase::Connecting {
            return Ok(());
        }
        if let Some(tls) = self.tls.as_mut() {
            // Plaintext into rustls, records out to the socket, until both are done or the
            // socket is full (bounded: each round moves bytes or returns).
            loop {
                while self.out_pos < self.out.len() {
                    let n = tls.writer().write(&self.out[self.out_pos..])?;
                    if n == 0 {
                        break;
                    }
                    self.out_pos += n;
                }
                if !tls.wants_write() {
                    if self.out_pos == self.out.len() {
                        self.out.clear();
                        self.out_pos = 0;
                    }
                    return Ok(());
                }
                match tls.write_tls(&mut self.stream) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        while self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        Ok(())
    }

    /// Reads until `WouldBlock`, handing each delivery to `on` and answering pings (the
    /// WebSocket's and the dialect's); compressed messages are inflated with `zlib` first.
    /// Returns an error on EOF, a socket error, a bad response, a bad frame or a delivery that
    /// is not the publisher's; a close frame ends in `Closed`.
    pub fn on_readable(
        &mut self,
        buf: &mut [u8],
        zlib: &mut Inflate,
        on: &mut impl FnMut(Delivery),
    ) -> io::Result<()> {
        self.read_frames(buf, zlib, on)?;
        self.flush()
    }

    fn read_frames(
        &mut self,
        buf: &mut [u8],
        zlib: &mut Inflate,
        on: &mut impl FnMut(Delivery),
    ) -> io::Result<()> {
        loop {
            if self.phase == Phase::Closed || self.phase == Phase::Connecting {
                return Ok(());
            }
            let n = match self.read_plain(buf) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.wire_bytes += n as u64;
            if self.partial.is_empty() {
                let used = self.consume(&buf[..n], zlib, on)?;
                self.partial.extend_from_slice(&buf[used..n]);
            } else {
                let mut data = std::mem::take(&mut self.partial);
                data.extend_from_slice(&buf[..n]);
                let used = self.consume(&data, zlib, on)?;
                data.drain(..used);
                self.partial = data;
                if self.partial.is_empty() {
                    // Give back a buffer that grew for one large split frame.
                    self.partial.shrink_to(4096);
                }
            }
        }
    }

    /// Reads from the socket, or plaintext through TLS (reading records as needed); `Ok(0)`
    /// at the end, `WouldBlock` when nothing more can be had now.
    fn read_plain(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = self.tls.as_mut() else {
            return self.stream.read(buf);
        };
        loop {
            match tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if tls.read_tls(&mut self.stream)? == 0 {
                return Ok(0);
            }
            tls.process_new_packets().map_err(io::Error::other)?;
            // Handshake records (the client's Finished) go out with the next flush.
        }
    }

    /// Processes whole units (the response head, then frames) from `data`; returns bytes used.
    fn consume(
        &mut self,
        data: &[u8],
        zlib: &mut Inflate,
        on: &mut impl FnMut(Delivery),
    ) -> io::Result<usize> {
        let mut pos = 0;
        if self.phase == Phase::Upgrading {
            let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
                if data.len() > MAX_HEAD {
                    return Err(bad("response head too long"));
                }
                return Ok(0);
            };
            let extensions = check_response(&data[..end])?;
            self.deflate = match (&self.deflate, extensions) {
                (Deflate::Offered, Some(ext)) if ext.contains("permessage-deflate") => {
                    if ext.contains("server_no_context_takeover") {
                        Deflate::Stateless
                    } else {
                        Deflate::Takeover(None)
                    }
                }
                (_, Some(_)) => return Err(bad("an extension that was not offered")),
                _ => Deflate::Off,
            };
            self.phase = if self.dialect.open_at_upgrade() {
                Phase::Open
            } else {
                Phase::Joining
            };
            pos = end + 4;
        }
        while matches!(self.phase, Phase::Joining | Phase::Open) {
            let rest = &data[pos..];
            let head = frame::decode_head(rest, MAX_FRAME).map_err(|e| bad(e.as_str()))?;
            let Some((head, head_len)) = head else { break };
            let len = head.payload_len as usize;
            let Some(payload) = rest.get(head_len..head_len + len) else {
                break;
            };
            if head.mask.is_some() {
                return Err(bad("masked server frame"));
            }
            if head.rsv1 && (!head.fin || head.opcode.is_control()) {
                return Err(bad("RSV1 on a fragment or control frame"));
            }
            // RFC 7692 §6: RSV1 marks a compressed message.
            let payload = match (head.rsv1, &mut self.deflate) {
                (false, _) => payload,
                (true, Deflate::Stateless) => zlib.stateless(payload)?,
                (true, Deflate::Takeover(z)) => zlib.with(
                    z.get_or_insert_with(|| Box::new(Decompress::new(false))),
                    payload,
                )?,
                (true, _) => return Err(bad("RSV1 without permessage-deflate")),
            };
            match head.opcode {
                OpCode::Close => self.phase = Phase::Closed,
                // §5.5.2: a server that checks idle clients with pings gets its pongs.
                OpCode::Ping => self.queue_frame(OpCode::Pong, payload),
                OpCode::Pong => {}
                _ => match self.dialect.read(payload).map_err(bad)? {
                    Inbound::Delivery(d) if self.phase == Phase::Open => on(d),
                    Inbound::Joined if self.phase == Phase::Joining => self.phase = Phase::Open,
                    Inbound::Reply(text) => self.queue_frame(OpCode::Text, text),
                    _ => {}
                },
            }
            pos += head_len + len;
        }
        Ok(pos)
    }
}

/// Checks the 101 and its accept value; returns the `Sec-WebSocket-Extensions` value, if any.
fn check_response(head: &[u8]) -> io::Result<Option<String>> {
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err(bad("no 101 response"));
    }
    let field = |want: &[u8]| {
        head.split(|&b| b == b'\n').find_map(|line| {
            let (name, value) = line.split_at(line.iter().position(|&b| b == b':')?);
            name.eq_ignore_ascii_case(want)
                .then(|| String::from_utf8_lossy(value[1..].trim_ascii()).into_owned())
        })
    };
    let accept = accept_key(KEY);
    if field(b"sec-websocket-accept").as_deref().map(str::as_bytes) != Some(&accept[..]) {
        return Err(bad("wrong Sec-WebSocket-Accept"));
    }
    Ok(field(b"sec-websocket-extensions"))
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::time::{Duration, Instant};

    use super::*;

    /// Drives `client` until `done` holds, for at most 5 s.
    fn drive(client: &mut Client, mut done: impl FnMut(&Client) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = [0u8; 4096];
        while !done(client) {
            assert!(Instant::now() < deadline, "timed out in {:?}", client.phase);
            client.on_writable().unwrap();
            client
                .on_readable(&mut buf, &mut Inflate::default(), &mut |_| {})
                .unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn handshake_is_checked_and_pings_are_answered() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let std::net::SocketAddr::V4(addr) = listener.local_addr().unwrap() else {
            unreachable!("bound to an IPv4 address")
        };
        let stream = connect_from(Ipv4Addr::new(127, 0, 0, 9), addr).unwrap();
        let (mut server, peer) = listener.accept().unwrap();
        assert_eq!(peer.ip(), Ipv4Addr::new(127, 0, 0, 9));
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut client = Client::new(stream, addr, 1, Dialect::Raw, false, None);
        drive(&mut client, |c| c.phase == Phase::Upgrading);

        let mut request = Vec::new();
        while !request.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8];
            server.read_exact(&mut byte).unwrap();
            request.push(byte[0]);
        }
        assert!(request.starts_with(b"GET / HTTP/1.1\r\n"));
        let accept = accept_key(KEY);
        let mut reply = b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: ".to_vec();
        reply.extend_from_slice(&accept);
        reply.extend_from_slice(b"\r\n\r\n");
        reply.extend_from_slice(&[0x89, 0x02, b'h', b'i']); // a ping in the same write
        server.write_all(&reply).unwrap();
        drive(&mut client, |c| c.phase == Phase::Open);

        let mut pong = [0u8; 8]; // 2 header + 4 mask + 2 payload
        server.read_exact(&mut pong).unwrap();
        assert_eq!(&pong[..2], &[0x8a, 0x82]);
        let key = [pong[2], pong[3], pong[4], pong[5]];
        let mut payload = [pong[6], pong[7]];
        apply_mask(&mut payload, key, 0);
        assert_eq!(&payload, b"hi");
    }
}
