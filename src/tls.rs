//! TLS below HTTP and WebSocket (`--tls-cert`, `--tls-key`): rustls' unbuffered server
//! connection, driven with bytes like everything else here; no sockets, no clock.
//!
//! The connection above sees plaintext only. Driving one [`Tls`]:
//!
//! - ciphertext read from the socket goes to [`Tls::handle_input`], which appends what it
//!   decrypts to a buffer the caller owns and queues handshake records to send;
//! - plaintext to send goes through [`Tls::encrypt`] into a buffer the caller owns; what the
//!   socket does not take is kept with [`Tls::keep`] and written first next time
//!   ([`Tls::unsent`], [`Tls::handle_written`]);
//! - [`Tls::close_notify`] ends it politely.
//!
//! Density: between records an idle connection holds no buffer at all. A partial record
//! (`incoming`) and ciphertext the socket did not take (`unsent`) are kept per connection,
//! each freed as soon as it is used up; the read and write buffers belong to the event loop.
//! The handshake deadline is the connection's (it waits for a request head that only
//! arrives after the TLS handshake), so a client that stops mid-handshake is dropped by it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, WriteTraffic};

/// The ALPN protocol offered (RFC 7301): everything here is HTTP/1.1, upgrades included.
const ALPN_HTTP_1_1: &[u8] = b"http/1.1";

/// Most ciphertext kept while waiting for the rest of a record or handshake message: rustls
/// joins handshake messages of up to 64 KiB (its own limit), and a record is at most
/// 16 KiB + 2 KiB + 5 bytes on the wire (RFC 8446 §5.2, RFC 5246 §6.2.3).
const MAX_INCOMING: usize = 0x1_0000 + 18_437;

/// Rounds of [`UnbufferedServerConnection::process_tls_records`] per call before giving up:
/// each round makes progress, so this is only a guard against a loop that would not end.
const MAX_ROUNDS: usize = 4096;

/// Why a TLS connection cannot go on; the connection is then dropped.
#[derive(Debug)]
pub enum TlsError {
    /// The peer broke the protocol (or sent something that is not TLS at all).
    Peer(rustls::Error),
    /// More unprocessed ciphertext than [`MAX_INCOMING`].
    TooMuchInput,
    /// Our side failed to encode or encrypt (a bug, or keys used up).
    Local(String),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Peer(e) => write!(f, "TLS: {e}"),
            Self::TooMuchInput => write!(f, "TLS: more than {MAX_INCOMING} bytes unprocessed"),
            Self::Local(e) => write!(f, "TLS: {e}"),
        }
    }
}

/// What a call to [`Tls::handle_input`] found besides plaintext.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Input {
    /// The peer sent `close_notify`: no more plaintext will come (like a read of 0).
    pub peer_closed: bool,
}

/// Reads the certificate chain (PEM, leaf first) and its private key (PEM: PKCS#8, PKCS#1
/// or SEC1) and makes the server's TLS settings: TLS 1.2 and 1.3 only, ALPN `http/1.1`, no
/// client certificates, one certificate for every name.
pub fn load_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "--tls-cert {}: no certificate in it",
            cert.display()
        ));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
    // ring: it builds with only a C compiler (aws-lc-rs wants cmake and more). rustls marks
    // it deprecated for want of post-quantum key exchange; X25519 and the NIST curves remain.
    #[allow(deprecated)]
    let mut provider = rustls::crypto::ring::default_provider();
    // X25519 first: ring's default order starts with P-384, whose generic bignum code made a
    // handshake cost 4x the server CPU (measured, benches/run.sh --tls). The client's order
    // decides among groups it sent a key share for; this one decides the rest.
    provider.kx_groups = vec![
        rustls::crypto::ring::kx_group::X25519,
        rustls::crypto::ring::kx_group::SECP256R1,
        rustls::crypto::ring::kx_group::SECP384R1,
    ];
    let provider = Arc::new(provider);
    let versions = [&rustls::version::TLS13, &rustls::version::TLS12];
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| format!("TLS settings: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| {
            format!(
                "--tls-cert {} with --tls-key {}: {e}",
                cert.display(),
                key.display()
            )
        })?;
    config.alpn_protocols = vec![ALPN_HTTP_1_1.to_vec()];
    Ok(Arc::new(config))
}

/// Where the certificate and key are read from, and the settings made from them last; a
/// reload (SIGHUP) swaps the settings for new handshakes, leaving open connections alone.
pub struct Certs {
    cert: PathBuf,
    key: PathBuf,
    config: Arc<ServerConfig>,
}

impl Certs {
    /// Loads the pair once; an error names the file at fault.
    pub fn load(cert: PathBuf, key: PathBuf) -> Result<Self, String> {
        let config = load_config(&cert, &key)?;
        Ok(Self { cert, key, config })
    }

    /// Reads the files again; on an error the settings in use stay.
    pub fn reload(&mut self) -> Result<(), String> {
        self.config = load_config(&self.cert, &self.key)?;
        Ok(())
    }

    /// The settings new connections get.
    pub fn config(&self) -> &Arc<ServerConfig> {
        &self.config
    }
}

/// One connection's TLS state (boxed by the event loop: a plain connection pays a pointer).
pub struct Tls {
    conn: UnbufferedServerConnection,
    /// Ciphertext received but not yet processed: a partial record or handshake message.
    /// Empty, with no allocation, between records. At most [`MAX_INCOMING`] bytes.
    incoming: Vec<u8>,
    /// Ciphertext made but not yet taken by the socket; written before anything else.
    /// Empty, with no allocation, once written.
    unsent: Vec<u8>,
    /// `close_notify` was queued; nothing is encrypted after it.
    closed: bool,
    /// The peer's `close_notify` came: no more plaintext from it.
    peer_closed: bool,
}

impl Tls {
    /// A connection that expects a ClientHello.
    pub fn new(config: Arc<ServerConfig>) -> Result<Self, TlsError> {
        let conn = UnbufferedServerConnection::new(config).map_err(TlsError::Peer)?;
        Ok(Self {
            conn,
            incoming: Vec::new(),
            unsent: Vec::new(),
            closed: false,
            peer_closed: false,
        })
    }

    /// Whether application data can be sent (the handshake is done and no close was sent).
    pub fn may_send(&self) -> bool {
        !self.conn.is_handshaking() && !self.closed
    }

    /// Whether `close_notify` was sent: nothing more can be.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Whether the peer's `close_notify` came (reported once by [`Tls::handle_input`] too).
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Ciphertext waiting for the socket.
    pub fn unsent(&self) -> &[u8] {
        &self.unsent
    }

    /// Records that the socket took `n` bytes of [`Tls::unsent`].
    pub fn handle_written(&mut self, n: usize) {
        if n >= self.unsent.len() {
            self.unsent = Vec::new();
        } else {
            self.unsent.drain(..n);
        }
    }

    /// Keeps ciphertext the socket did not take, to be written before anything else.
    pub fn keep(&mut self, rest: &[u8]) {
        self.unsent.extend_from_slice(rest);
    }

    /// Takes ciphertext read from the peer: appends the plaintext it carries to `plain` and
    /// queues handshake records in [`Tls::unsent`]. `input` is used as scratch space.
    pub fn handle_input(
        &mut self,
        input: &mut [u8],
        plain: &mut Vec<u8>,
    ) -> Result<Input, TlsError> {
        if self.incoming.is_empty() {
            // The common case: whole records straight from the loop's read buffer.
            let (used, found) = self.process(input, plain);
            let rest = input.get(used..).unwrap_or_default();
            if rest.len() > MAX_INCOMING {
                return Err(TlsError::TooMuchInput);
            }
            self.incoming.extend_from_slice(rest);
            return found;
        }
        let mut incoming = std::mem::take(&mut self.incoming);
        incoming.extend_from_slice(input);
        let (used, found) = self.process(&mut incoming, plain);
        if used >= incoming.len() {
            // Freed, not kept: an idle connection holds no buffer.
            incoming = Vec::new();
        } else {
            incoming.drain(..used);
            if incoming.len() > MAX_INCOMING {
                return Err(TlsError::TooMuchInput);
            }
        }
        self.incoming = incoming;
        found
    }

    /// Runs rustls over `buf`; returns how many bytes of it were used up, and the outcome.
    /// After an error, the alert rustls made for the peer (protocol_version to a TLS 1.0
    /// client, say) is queued in [`Tls::unsent`], for one last write.
    fn process(&mut self, buf: &mut [u8], plain: &mut Vec<u8>) -> (usize, Result<Input, TlsError>) {
        let (used, result) = self.process_records(buf, plain);
        if result.is_err() {
            // Only while an alert is queued: it is popped before any input is looked at, and
            // rustls is not asked to read on past its own fatal error.
            for _ in 0..4 {
                if !self.conn.wants_write() {
                    break;
                }
                let rest = buf.get_mut(used..).unwrap_or_default();
                let status = self.conn.process_tls_records(rest);
                let Ok(ConnectionState::EncodeTlsData(mut encode)) = status.state else {
                    break;
                };
                if encode_into(&mut self.unsent, 0, |out| encode.encode(out)).is_err() {
                    break;
                }
            }
        }
        (used, result)
    }

    fn process_records(
        &mut self,
        buf: &mut [u8],
        plain: &mut Vec<u8>,
    ) -> (usize, Result<Input, TlsError>) {
        let mut input = Input::default();
        let mut used = 0;
        for _ in 0..MAX_ROUNDS {
            let rest = buf.get_mut(used..).unwrap_or_default();
            let status = self.conn.process_tls_records(rest);
            let discard = status.discard;
            let state = match status.state {
                Ok(state) => state,
                Err(e) => return (used + discard, Err(TlsError::Peer(e))),
            };
            let mut done = false;
            match state {
                ConnectionState::ReadTraffic(mut traffic) => {
                    while let Some(record) = traffic.next_record() {
                        match record {
                            Ok(r) => plain.extend_from_slice(r.payload),
                            Err(e) => return (used + discard, Err(TlsError::Peer(e))),
                        }
                    }
                }
                ConnectionState::ReadEarlyData(mut early) => {
                    // Early data is not enabled (max_early_data_size is 0): none is taken.
                    while early.next_record().is_some() {}
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    if let Err(e) = encode_into(&mut self.unsent, 0, |out| encode.encode(out)) {
                        return (used + discard, Err(e));
                    }
                }
                // `unsent` holds it; the loop writes it after this call.
                ConnectionState::TransmitTlsData(transmit) => transmit.done(),
                ConnectionState::PeerClosed => {
                    input.peer_closed = true;
                    self.peer_closed = true;
                }
                // Waiting for the peer: more records, or nothing to do.
                ConnectionState::BlockedHandshake
                | ConnectionState::WriteTraffic(_)
                | ConnectionState::Closed => done = true,
                _ => done = true,
            }
            used += discard;
            if done {
                return (used, Ok(input));
            }
        }
        (used, Err(TlsError::Local("no progress".to_owned())))
    }

    /// Most bytes the records for `len` bytes of plaintext take: each record's header,
    /// nonce, tag and content type besides the data (RFC 8446 §5.2, RFC 5246 §6.2.3.3).
    pub fn sealed_len(len: usize) -> usize {
        len + (len / 0x4000 + 1) * 64
    }

    /// Encrypts `plain` as application data into the front of `out`, which must have at
    /// least [`Tls::sealed_len`] bytes; returns how many it wrote. The event loop keeps `out`
    /// at that size, so nothing is allocated or zeroed per write.
    pub fn encrypt_to(&mut self, plain: &[u8], out: &mut [u8]) -> Result<usize, TlsError> {
        if !self.may_send() {
            return Err(TlsError::Local("encrypt before the handshake".to_owned()));
        }
        let mut written = 0;
        self.with_traffic(|traffic| match traffic.encrypt(plain, out) {
            Ok(n) => {
                written = n;
                Ok(())
            }
            Err(e) => Err(TlsError::Local(e.to_string())),
        })?;
        Ok(written)
    }

    /// Queues `close_notify` (RFC 8446 §6.1) in [`Tls::unsent`], once; nothing is encrypted
    /// after it. A no-op before the handshake is done (there are no keys to send it with).
    pub fn close_notify(&mut self) {
        if self.conn.is_handshaking() || std::mem::replace(&mut self.closed, true) {
            return;
        }
        let mut unsent = std::mem::take(&mut self.unsent);
        let _ = self.with_traffic(|traffic| {
            encode_into(&mut unsent, 0, |buf| {
                traffic.queue_close_notify(buf).map_err(|e| match e {
                    EncryptError::InsufficientSize(s) => EncodeError::InsufficientSize(s),
                    _ => EncodeError::AlreadyEncoded,
                })
            })
        });
        self.unsent = unsent;
    }

    /// Calls `f` in the state that may encrypt, first queueing any handshake records rustls
    /// has for the peer (a TLS 1.3 key update, say).
    fn with_traffic(
        &mut self,
        f: impl FnOnce(&mut WriteTraffic<'_, ServerConnectionData>) -> Result<(), TlsError>,
    ) -> Result<(), TlsError> {
        let mut f = Some(f);
        // What was read and not yet processed goes in again, never an empty slice: rustls'
        // handshake joiner keeps offsets into it (a peer's handshake message split across
        // records), and slicing an empty buffer at them panics. Only a whole record could
        // make progress, and none is in there, so nothing in it is consumed.
        let mut incoming = std::mem::take(&mut self.incoming);
        let result = self.traffic_over(&mut incoming, &mut f);
        self.incoming = incoming;
        result
    }

    fn traffic_over<F>(&mut self, incoming: &mut Vec<u8>, f: &mut Option<F>) -> Result<(), TlsError>
    where
        F: FnOnce(&mut WriteTraffic<'_, ServerConnectionData>) -> Result<(), TlsError>,
    {
        for _ in 0..MAX_ROUNDS {
            let status = self.conn.process_tls_records(incoming);
            let discard = status.discard;
            // `Some(result)`: done; `None`: another round.
            let outcome = match status.state {
                Err(e) => Some(Err(TlsError::Peer(e))),
                Ok(ConnectionState::WriteTraffic(mut traffic)) => Some(match f.take() {
                    Some(f) => f(&mut traffic),
                    None => Ok(()),
                }),
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    match encode_into(&mut self.unsent, 0, |out| encode.encode(out)) {
                        Ok(()) => None,
                        Err(e) => Some(Err(e)),
                    }
                }
                Ok(ConnectionState::TransmitTlsData(mut transmit)) => {
                    // Handshake records are in `unsent`, ahead of what `f` makes.
                    let result =
                        transmit
                            .may_encrypt_app_data()
                            .map(|mut traffic| match f.take() {
                                Some(f) => f(&mut traffic),
                                None => Ok(()),
                            });
                    transmit.done();
                    result
                }
                Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                    // Plaintext is always taken as it is read; drop any to make progress.
                    while traffic.next_record().is_some() {}
                    None
                }
                Ok(other) => Some(Err(TlsError::Local(format!(
                    "cannot send in state {other:?}"
                )))),
            };
            incoming.drain(..discard.min(incoming.len()));
            if let Some(result) = outcome {
                return result;
            }
        }
        Err(TlsError::Local("no progress".to_owned()))
    }
}

/// Appends what `encode` writes to `out`, growing it to the size rustls asks for.
fn encode_into(
    out: &mut Vec<u8>,
    room: usize,
    mut encode: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>,
) -> Result<(), TlsError> {
    let start = out.len();
    // A guess (`room`, at least a small record's worth); rustls says if it is short.
    let mut room = room.max(256);
    for _ in 0..2 {
        out.resize(start + room, 0);
        let result = encode(out.get_mut(start..).unwrap_or_default());
        match result {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(EncodeError::InsufficientSize(s)) => room = s.required_size,
            Err(e) => {
                out.truncate(start);
                return Err(TlsError::Local(e.to_string()));
            }
        }
    }
    out.truncate(start);
    Err(TlsError::Local("encode: buffer too small".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    use rustls::{ClientConfig, ClientConnection, RootCertStore};

    /// A P-256 leaf for localhost, signed by [`CA`] (the chain: leaf, CA), and its key; made
    /// with openssl for these tests only (valid until 2126).
    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBjjCCATWgAwIBAgIUMrxYYcZ1svQpsBKg78GAV00gZQ0wCgYIKoZIzj0EAwIw\nHzEdMBsGA1UEAwwUd3NyZWxheSB1bml0IHRlc3QgQ0EwIBcNMjYxMjA1MDI1NDA5\nWhgPMjEyNjExMTEwMjU0MDlaMBQxEjAQBgNVBAMMCWxvY2FsaG9zdDBZMBMGByqG\nSM49AgEGCCqGSM49AwEHA0IABChvi0j6gpzqF5XzuKd9w3bEbGaPX6z3OAyHQdzJ\nBurCQK4wk0nZ1mFyL7bzFY1JAdyAuTcfFtzWXpMzyq116f2jWDBWMBQGA1UdEQQN\nMAuCCWxvY2FsaG9zdDAdBgNVHQ4EFgQUKExDFeai7uteUtU1+kT7bxCq5j4wHwYD\nVR0jBBgwFoAU+LOAW7tzKJLlQkhFrpLBB/nj9MEwCgYIKoZIzj0EAwIDRwAwRAIg\nDI4N32SoRr85AumO/5aDkq7VwJAJETVatTaeJUdSzZ0CIGClblWSOB22SgpRApGD\n3rtV/AvHw9ksR4u2/n+vD67I\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nMIIBlTCCATugAwIBAgIUHZEFgtwTYLVo1pvoCM13kvfD5RUwCgYIKoZIzj0EAwIw\nHzEdMBsGA1UEAwwUd3NyZWxheSB1bml0IHRlc3QgQ0EwIBcNMjYxMjA1MDI1NDA5\nWhgPMjEyNjExMTEwMjU0MDlaMB8xHTAbBgNVBAMMFHdzcmVsYXkgdW5pdCB0ZXN0\nIENBMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAElD3YwYdWqs93HE2vSs9hDTlh\nZcjvTRcTRirEH7ywhLJciLfi0tB4RP5UhvE1qi+Q7Wdmppd6xEnZT+D//LzNKqNT\nMFEwHQYDVR0OBBYEFPizgFu7cyiS5UJIRa6SwQf54/TBMB8GA1UdIwQYMBaAFPiz\ngFu7cyiS5UJIRa6SwQf54/TBMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwID\nSAAwRQIgCXrYMKAExaAqLaY/DIjk7Ht2WlMdMgInB+TOK68kIqcCIQCqjYnFq83g\nOnOUb2xA5YVIGb8sdTASz0EWQVqz377UcQ==\n-----END CERTIFICATE-----\n";
    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBlTCCATugAwIBAgIUHZEFgtwTYLVo1pvoCM13kvfD5RUwCgYIKoZIzj0EAwIw\nHzEdMBsGA1UEAwwUd3NyZWxheSB1bml0IHRlc3QgQ0EwIBcNMjYxMjA1MDI1NDA5\nWhgPMjEyNjExMTEwMjU0MDlaMB8xHTAbBgNVBAMMFHdzcmVsYXkgdW5pdCB0ZXN0\nIENBMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAElD3YwYdWqs93HE2vSs9hDTlh\nZcjvTRcTRirEH7ywhLJciLfi0tB4RP5UhvE1qi+Q7Wdmppd6xEnZT+D//LzNKqNT\nMFEwHQYDVR0OBBYEFPizgFu7cyiS5UJIRa6SwQf54/TBMB8GA1UdIwQYMBaAFPiz\ngFu7cyiS5UJIRa6SwQf54/TBMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwID\nSAAwRQIgCXrYMKAExaAqLaY/DIjk7Ht2WlMdMgInB+TOK68kIqcCIQCqjYnFq83g\nOnOUb2xA5YVIGb8sdTASz0EWQVqz377UcQ==\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgxX1a/U4EnbJc2AKb\ntitSOqljVgkAdeuuuhRbwlJ56rehRANCAAQob4tI+oKc6heV87infcN2xGxmj1+s\n9zgMh0HcyQbqwkCuMJNJ2dZhci+28xWNSQHcgLk3Hxbc1l6TM8qtden9\n-----END PRIVATE KEY-----\n";

    fn server_config() -> Arc<ServerConfig> {
        let dir = std::env::temp_dir().join(format!("wsrelay-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, CERT).unwrap();
        std::fs::write(&key, KEY).unwrap();
        let config = load_config(&cert, &key).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        config
    }

    fn client() -> ClientConnection {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(CA.as_bytes()).unwrap())
            .unwrap();
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        ClientConnection::new(Arc::new(config), name).unwrap()
    }

    /// Runs a client against `tls` in memory, its records fed `step` bytes at a time, until
    /// both are done; then sends `message` and returns what the server decrypted.
    fn handshake_and_send(tls: &mut Tls, step: usize, message: &[u8]) -> Vec<u8> {
        let mut c = client();
        let mut plain = Vec::new();
        let mut sent = false;
        for _ in 0..100 {
            if !c.is_handshaking() && !sent {
                std::io::Write::write_all(&mut c.writer(), message).unwrap();
                sent = true;
            }
            let mut wire = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut wire).unwrap();
            }
            for chunk in wire.chunks_mut(step) {
                tls.handle_input(chunk, &mut plain).unwrap();
            }
            let out = tls.unsent().to_vec();
            tls.handle_written(out.len());
            if !out.is_empty() {
                c.read_tls(&mut &out[..]).unwrap();
                c.process_new_packets().unwrap();
            }
            if sent && !c.wants_write() && plain.len() >= message.len() {
                break;
            }
        }
        assert!(tls.may_send());
        assert!(
            tls.incoming.capacity() == 0,
            "a buffer kept after whole records"
        );
        plain
    }

    #[test]
    fn handshake_whole_and_one_byte_at_a_time() {
        let config = server_config();
        let message = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
        for step in [usize::MAX, 1, 7] {
            let mut tls = Tls::new(config.clone()).unwrap();
            let plain = handshake_and_send(&mut tls, step.min(1 << 20), message);
            assert_eq!(plain, message, "step {step}");
        }
    }

    #[test]
    fn encrypt_to_then_close_notify_reach_the_client() {
        let mut tls = Tls::new(server_config()).unwrap();
        let mut c = client();
        let mut plain = Vec::new();
        for _ in 0..20 {
            let mut wire = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut wire).unwrap();
            }
            tls.handle_input(&mut wire, &mut plain).unwrap();
            let out = tls.unsent().to_vec();
            tls.handle_written(out.len());
            c.read_tls(&mut &out[..]).unwrap();
            c.process_new_packets().unwrap();
            if !c.is_handshaking() && !c.wants_write() {
                break;
            }
        }
        let data = vec![b'x'; 40_000];
        let mut records = vec![0; Tls::sealed_len(data.len())];
        let n = tls.encrypt_to(&data, &mut records).unwrap();
        tls.close_notify();
        assert!(!tls.may_send() && tls.is_closed());
        let mut wire = records[..n].to_vec();
        wire.extend_from_slice(tls.unsent());
        let mut got = Vec::new();
        let mut rd = &wire[..];
        while !rd.is_empty() {
            c.read_tls(&mut rd).unwrap();
            let state = c.process_new_packets().unwrap();
            let mut buf = vec![0; state.plaintext_bytes_to_read()];
            std::io::Read::read_exact(&mut c.reader(), &mut buf).unwrap();
            got.extend_from_slice(&buf);
            if state.peer_has_closed() {
                break;
            }
        }
        assert_eq!(got, data);
        assert!(c.process_new_packets().unwrap().peer_has_closed());
    }

    #[test]
    fn garbage_never_panics_and_keeps_at_most_the_limit() {
        let config = server_config();
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..300 {
            let mut tls = Tls::new(config.clone()).unwrap();
            let mut plain = Vec::new();
            if round % 2 == 0 {
                // After a handshake: garbage where records are encrypted, and a write (which
                // runs rustls over what is kept) after every read.
                plain = handshake_and_send(&mut tls, 1 << 20, b"hi");
                plain.clear();
            }
            for _ in 0..20 {
                let len = (next() % 6000) as usize;
                let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                // Most rounds look like a handshake record, so rustls reads further in.
                if round % 3 != 0 && len > 5 {
                    bytes[..3].copy_from_slice(&[0x16, 0x03, 0x01]);
                }
                if round % 4 < 2 && len > 5 {
                    // Split a record header's length across reads now and then.
                    bytes[0] = [0x16, 0x17, 0x15][(next() % 3) as usize];
                }
                if tls.handle_input(&mut bytes, &mut plain).is_err() {
                    break;
                }
                assert!(tls.incoming.len() <= MAX_INCOMING);
                assert!(plain.is_empty(), "plaintext from garbage");
                if tls.may_send() {
                    let mut out = vec![0; Tls::sealed_len(5)];
                    let _ = tls.encrypt_to(b"hello", &mut out);
                }
            }
        }
    }
}
