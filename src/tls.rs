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

/// Most ciphertext kept while waiting for the rest of a record before the handshake is done:
/// one TLS 1.3 record on the wire (2^14 + 256 + 5 bytes, RFC 8446 §5.2). A ClientHello fits
/// in one record (browsers send a few KB); a larger one, split over records, is refused.
const MAX_INCOMING_HANDSHAKE: usize = 0x4000 + 256 + 5;

/// The same after the handshake: one TLS 1.2 record on the wire (2^14 + 2048 + 5, RFC 5246
/// §6.2.3), the most rustls needs to make progress. A handshake message split over records
/// (a key update claiming 64 KiB, sent a byte per record) cannot pile up past it.
const MAX_INCOMING: usize = 0x4000 + 2048 + 5;

/// Rounds of [`UnbufferedServerConnection::process_tls_records`] allowed per call, besides
/// one per input byte: every round uses input or hands out what input made, and a peer
/// decides how many small records (22 bytes and up) and messages one read holds, so a fixed
/// number could refuse a valid peer. Only a guard against a loop that would not end.
const MIN_ROUNDS: usize = 64;

/// Why a TLS connection cannot go on; the connection is then dropped.
#[derive(Debug)]
pub enum TlsError {
    /// The peer broke the protocol (or sent something that is not TLS at all).
    Peer(rustls::Error),
    /// More unprocessed ciphertext than one record ([`MAX_INCOMING`]).
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
    // No resumption: tickets cost bytes and CPU on every handshake, and the session cache
    // holds memory across connections; a reconnecting client does a full handshake.
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    // TLS 1.2 without the extended master secret (RFC 7627) is open to triple handshakes;
    // every maintained client sends it.
    config.require_ems = true;
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
    /// An error was returned: rustls is never run again (it may hold offsets into input we
    /// dropped, and driving it past its own fatal alert trips its assertions).
    failed: bool,
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
            failed: false,
        })
    }

    /// Whether application data can be sent (the handshake is done and no close was sent).
    pub fn may_send(&self) -> bool {
        !self.conn.is_handshaking() && !self.closed && !self.failed
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
    /// queues handshake records in [`Tls::unsent`]. `input` is used as scratch space. After
    /// an error (the connection is then dropped) input is ignored.
    pub fn handle_input(
        &mut self,
        mut input: &mut [u8],
        plain: &mut Vec<u8>,
    ) -> Result<Input, TlsError> {
        if self.failed || input.is_empty() {
            return Ok(Input::default());
        }
        let mut peer_closed = false;
        let result = loop {
            if self.incoming.is_empty() {
                // The common case: whole records straight from the loop's read buffer.
                let (used, result) = self.process(input, plain);
                let rest = input.get(used..).unwrap_or_default();
                if result.is_ok() && rest.len() > self.max_incoming() {
                    break Err(TlsError::TooMuchInput);
                }
                // Right-sized: an idle connection holds at most the part of one record.
                self.incoming = rest.to_vec();
                break result.map(|i| peer_closed |= i.peer_closed);
            }
            // Only what fits under the limit is appended; the rest of `input` waits for the
            // next round, once this part is processed.
            let take = self
                .max_incoming()
                .saturating_sub(self.incoming.len())
                .min(input.len());
            if take == 0 {
                break Err(TlsError::TooMuchInput);
            }
            let (head, tail) = std::mem::take(&mut input).split_at_mut(take);
            input = tail;
            let mut incoming = std::mem::take(&mut self.incoming);
            incoming.reserve_exact(take);
            incoming.extend_from_slice(head);
            let (used, result) = self.process(&mut incoming, plain);
            let rest = incoming.get(used..).unwrap_or_default();
            // Freed when used up; a tail is copied out so no grown buffer stays behind.
            self.incoming = match (rest.is_empty(), used) {
                (true, _) => Vec::new(),
                (false, 0) => incoming,
                (false, _) => rest.to_vec(),
            };
            match result {
                Ok(i) => peer_closed |= i.peer_closed,
                Err(e) => break Err(e),
            }
            if input.is_empty() {
                break Ok(());
            }
        };
        if let Err(e) = result {
            // Never handed to rustls again (see `failed`), so nothing of it is kept.
            self.failed = true;
            self.incoming = Vec::new();
            return Err(e);
        }
        Ok(Input { peer_closed })
    }

    /// Most unprocessed ciphertext kept now: one record, smaller during the handshake.
    fn max_incoming(&self) -> usize {
        match self.conn.is_handshaking() {
            true => MAX_INCOMING_HANDSHAKE,
            false => MAX_INCOMING,
        }
    }

    /// Runs rustls over `buf`; returns how many bytes of it were used up, and the outcome.
    /// After an error, the alert rustls made for the peer (protocol_version to a TLS 1.0
    /// client, say) is queued in [`Tls::unsent`], for one last write.
    fn process(&mut self, buf: &mut [u8], plain: &mut Vec<u8>) -> (usize, Result<Input, TlsError>) {
        let (used, result) = self.process_records(buf, plain);
        if result.is_err() {
            self.failed = true;
            // Only while an alert is queued: rustls pops it before it looks at any input, so
            // it is not asked to read on past its own fatal error.
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
        for _ in 0..MIN_ROUNDS + buf.len() {
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
        let result = self.with_traffic(|traffic| match traffic.encrypt(plain, out) {
            Ok(n) => {
                written = n;
                Ok(())
            }
            Err(e) => Err(TlsError::Local(e.to_string())),
        });
        if result.is_err() {
            self.failed = true;
        }
        result.map(|()| written)
    }

    /// Queues `close_notify` (RFC 8446 §6.1) in [`Tls::unsent`], once; nothing is encrypted
    /// after it. A no-op before the handshake is done (there are no keys to send it with)
    /// and after an error (an alert, if any, is queued already).
    pub fn close_notify(&mut self) {
        if self.failed || self.conn.is_handshaking() || std::mem::replace(&mut self.closed, true) {
            return;
        }
        let mut unsent = std::mem::take(&mut self.unsent);
        let result = self.with_traffic(|traffic| {
            encode_into(&mut unsent, 0, |buf| {
                traffic.queue_close_notify(buf).map_err(|e| match e {
                    EncryptError::InsufficientSize(s) => EncodeError::InsufficientSize(s),
                    _ => EncodeError::AlreadyEncoded,
                })
            })
        });
        self.unsent = unsent;
        if result.is_err() {
            self.failed = true;
        }
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
        for _ in 0..MIN_ROUNDS + incoming.len() {
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
        // One directory per call: tests run in parallel and each removes its own.
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("wsrelay-tls-unit-{}-{call}", std::process::id()));
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

    /// A TLS 1.3 client with extracted keys, to send records no client library would; the
    /// key, IV and next sequence number of its sending direction.
    fn handshaken_with_keys(tls: &mut Tls) -> (ring::aead::LessSafeKey, [u8; 12], u64) {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(CA.as_bytes()).unwrap())
            .unwrap();
        #[allow(deprecated)]
        let mut provider = rustls::crypto::ring::default_provider();
        provider.cipher_suites = vec![rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256];
        let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.enable_secret_extraction = true;
        config.resumption = rustls::client::Resumption::disabled();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut c = ClientConnection::new(Arc::new(config), name).unwrap();
        let mut plain = Vec::new();
        for _ in 0..20 {
            let mut wire = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut wire).unwrap();
            }
            tls.handle_input(&mut wire, &mut plain).unwrap();
            let out = tls.unsent().to_vec();
            tls.handle_written(out.len());
            if !out.is_empty() {
                c.read_tls(&mut &out[..]).unwrap();
                c.process_new_packets().unwrap();
            }
            if !c.is_handshaking() && !c.wants_write() && tls.may_send() && out.is_empty() {
                break;
            }
        }
        assert!(tls.may_send());
        let (seq, tx) = c.dangerous_extract_secrets().unwrap().tx;
        let rustls::ConnectionTrafficSecrets::Aes128Gcm { key, iv } = tx else {
            panic!("not AES-128-GCM")
        };
        let key = ring::aead::UnboundKey::new(&ring::aead::AES_128_GCM, key.as_ref()).unwrap();
        (
            ring::aead::LessSafeKey::new(key),
            iv.as_ref().try_into().unwrap(),
            seq,
        )
    }

    /// One TLS 1.3 record of content type `typ` carrying `inner`.
    fn seal(
        key: &ring::aead::LessSafeKey,
        iv: &[u8; 12],
        seq: &mut u64,
        typ: u8,
        inner: &[u8],
    ) -> Vec<u8> {
        let mut nonce = *iv;
        for (n, b) in nonce[4..].iter_mut().zip(seq.to_be_bytes()) {
            *n ^= b;
        }
        *seq += 1;
        let mut data = inner.to_vec();
        data.push(typ);
        let len = data.len() + 16;
        let header = [0x17, 0x03, 0x03, (len >> 8) as u8, len as u8];
        let nonce = ring::aead::Nonce::assume_unique_for_key(nonce);
        key.seal_in_place_append_tag(nonce, ring::aead::Aad::from(header), &mut data)
            .unwrap();
        let mut record = header.to_vec();
        record.extend_from_slice(&data);
        record
    }

    /// A peer's key update claiming 64 KiB, a byte per record: refused once one record's
    /// worth is kept, and nothing after the error runs rustls again (it used to panic in
    /// close_notify, slicing an emptied buffer at offsets it kept).
    #[test]
    fn split_key_update_over_the_limit_then_close_notify() {
        let mut tls = Tls::new(server_config()).unwrap();
        let (key, iv, mut seq) = handshaken_with_keys(&mut tls);
        let mut plain = Vec::new();
        let mut record = seal(&key, &iv, &mut seq, 0x17, b"hello");
        tls.handle_input(&mut record, &mut plain).unwrap();
        assert_eq!(plain, b"hello");
        let mut wire = seal(&key, &iv, &mut seq, 0x16, &[24, 0x00, 0xff, 0xff, 0]);
        while wire.len() < 3 * MAX_INCOMING {
            wire.extend(seal(&key, &iv, &mut seq, 0x16, &[0]));
        }
        for step in [16 * 1024, 1000, usize::MAX] {
            let mut tls = Tls::new(server_config()).unwrap();
            let (key, iv, mut seq) = handshaken_with_keys(&mut tls);
            let mut wire = seal(&key, &iv, &mut seq, 0x16, &[24, 0x00, 0xff, 0xff, 0]);
            while wire.len() < 3 * MAX_INCOMING {
                wire.extend(seal(&key, &iv, &mut seq, 0x16, &[0]));
            }
            let mut result = Ok(Input::default());
            for chunk in wire.chunks_mut(step.min(1 << 20)) {
                result = tls.handle_input(chunk, &mut plain);
                assert!(tls.incoming.capacity() <= MAX_INCOMING, "step {step}");
                if result.is_err() {
                    break;
                }
            }
            assert!(matches!(result, Err(TlsError::TooMuchInput)), "step {step}");
            assert_eq!(tls.incoming.capacity(), 0);
            // What the event loop does next: close_notify, maybe a write, more input.
            tls.close_notify();
            assert!(!tls.may_send() && tls.unsent().is_empty());
            let mut out = vec![0; Tls::sealed_len(5)];
            assert!(tls.encrypt_to(b"hello", &mut out).is_err());
            let mut more = seal(&key, &iv, &mut seq, 0x17, b"late");
            assert_eq!(
                tls.handle_input(&mut more, &mut plain).unwrap(),
                Input::default()
            );
        }
        assert_eq!(plain, b"hello");
    }

    /// TLS 1.2 too: a renegotiating ClientHello claiming 64 KiB, a byte per record (sealed
    /// with ChaCha20-Poly1305 keys a TLS 1.2 client gave up), is refused at one record and
    /// nothing runs rustls after it.
    #[test]
    fn split_tls12_renegotiation_over_the_limit_then_close_notify() {
        let mut tls = Tls::new(server_config()).unwrap();
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(CA.as_bytes()).unwrap())
            .unwrap();
        #[allow(deprecated)]
        let mut provider = rustls::crypto::ring::default_provider();
        provider.cipher_suites =
            vec![rustls::crypto::ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256];
        let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.enable_secret_extraction = true;
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut c = ClientConnection::new(Arc::new(config), name).unwrap();
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
            if !c.is_handshaking() && !c.wants_write() && out.is_empty() {
                break;
            }
        }
        assert!(tls.may_send());
        let (mut seq, secrets) = c.dangerous_extract_secrets().unwrap().tx;
        let rustls::ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } = secrets else {
            panic!("not ChaCha20-Poly1305")
        };
        let key = ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, key.as_ref());
        let key = ring::aead::LessSafeKey::new(key.unwrap());
        let iv: [u8; 12] = iv.as_ref().try_into().unwrap();
        // RFC 7905: the nonce as in TLS 1.3; the AAD is the sequence number and the header.
        let mut seal12 = |typ: u8, inner: &[u8]| {
            let mut nonce = iv;
            for (n, b) in nonce[4..].iter_mut().zip(seq.to_be_bytes()) {
                *n ^= b;
            }
            let mut aad = seq.to_be_bytes().to_vec();
            aad.extend_from_slice(&[typ, 3, 3]);
            aad.extend_from_slice(&(inner.len() as u16).to_be_bytes());
            seq += 1;
            let mut data = inner.to_vec();
            let nonce = ring::aead::Nonce::assume_unique_for_key(nonce);
            key.seal_in_place_append_tag(nonce, ring::aead::Aad::from(aad), &mut data)
                .unwrap();
            let mut record = vec![typ, 3, 3];
            record.extend_from_slice(&(data.len() as u16).to_be_bytes());
            record.extend_from_slice(&data);
            record
        };
        let mut record = seal12(0x17, b"hello");
        tls.handle_input(&mut record, &mut plain).unwrap();
        assert_eq!(plain, b"hello");
        let mut wire = seal12(0x16, &[1, 0x00, 0xff, 0xff, 3]);
        while wire.len() < 3 * MAX_INCOMING {
            wire.extend(seal12(0x16, &[3]));
        }
        let mut result = Ok(Input::default());
        for chunk in wire.chunks_mut(1000) {
            result = tls.handle_input(chunk, &mut plain);
            assert!(tls.incoming.capacity() <= MAX_INCOMING);
            if result.is_err() {
                break;
            }
        }
        assert!(matches!(result, Err(TlsError::TooMuchInput)), "{result:?}");
        tls.close_notify();
        assert!(!tls.may_send());
        let mut more = seal12(0x17, b"late");
        assert_eq!(
            tls.handle_input(&mut more, &mut plain).unwrap(),
            Input::default()
        );
        assert_eq!(plain, b"hello");
    }

    /// Random encrypted records (key updates, split and oversized handshake messages,
    /// alerts, odd content types) fed in random pieces, with writes in between and a
    /// close_notify at the end: rustls is never driven past its own fatal error (a debug
    /// assertion in rustls) and nothing panics. Fixed seed, bounded rounds.
    #[test]
    fn fuzz_encrypted_records() {
        let config = server_config();
        let mut seed = 0x1234_5678_9abc_def1_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut errors = 0;
        for _ in 0..150 {
            let mut tls = Tls::new(config.clone()).unwrap();
            let (key, iv, mut seq) = handshaken_with_keys(&mut tls);
            let mut wire = Vec::new();
            for _ in 0..1 + next() % 40 {
                let kind = next() % 10;
                let mut inner: Vec<u8> = match kind {
                    0 => vec![24, 0, 0, 1, (next() % 3) as u8],
                    1 => (0..next() % 40).flat_map(|_| [24, 0, 0, 1, 1]).collect(),
                    2 => {
                        let n = (next() % 70_000) as u32;
                        let mut v = vec![(next() % 30) as u8];
                        v.extend_from_slice(&n.to_be_bytes()[1..]);
                        v.extend((0..next() % 200).map(|_| next() as u8));
                        v
                    }
                    3 => (0..next() % 5).map(|_| next() as u8).collect(),
                    4 => vec![],
                    _ => (0..next() % 300).map(|_| next() as u8).collect(),
                };
                let typ = match kind {
                    0..=4 => 0x16,
                    5 => 0x15,
                    6 => [0x14, 0x18, 0x00, 0x99][(next() % 4) as usize],
                    _ => 0x17,
                };
                if typ == 0x15 {
                    inner = vec![
                        [1, 2][(next() % 2) as usize],
                        [0, 10, 90][(next() % 3) as usize],
                    ];
                }
                wire.extend(seal(&key, &iv, &mut seq, typ, &inner));
            }
            let mut plain = Vec::new();
            let mut at = 0;
            while at < wire.len() {
                let end = (at + 1 + (next() % 3000) as usize).min(wire.len());
                let mut chunk = wire[at..end].to_vec();
                at = end;
                let result = tls.handle_input(&mut chunk, &mut plain);
                assert!(tls.incoming.len() <= MAX_INCOMING);
                tls.handle_written(tls.unsent().len());
                if result.is_err() {
                    errors += 1;
                    assert!(!tls.may_send());
                }
                if tls.may_send() && next() % 2 == 0 {
                    let mut out = vec![0; Tls::sealed_len(5)];
                    let _ = tls.encrypt_to(b"hello", &mut out);
                }
                tls.handle_written(tls.unsent().len());
            }
            tls.close_notify();
            let mut out = vec![0; Tls::sealed_len(5)];
            let _ = tls.encrypt_to(b"hello", &mut out);
        }
        assert!(
            errors > 10,
            "the records should break some connections: {errors}"
        );
    }

    /// Two thousand key updates in one read (each asks for an answer; a byte of data every 30
    /// keeps rustls' own limit of 32 in a row away) are all processed, and the answer and the
    /// data after it reach the client in an order it can decrypt.
    #[test]
    fn many_key_updates_in_one_read() {
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
            if !c.is_handshaking() && !c.wants_write() && out.is_empty() {
                break;
            }
        }
        let mut wire = Vec::new();
        let mut sent = Vec::new();
        while wire.len() < 60_000 {
            for _ in 0..30 {
                c.refresh_traffic_keys().unwrap();
                while c.wants_write() {
                    c.write_tls(&mut wire).unwrap();
                }
            }
            std::io::Write::write_all(&mut c.writer(), b"x").unwrap();
            sent.push(b'x');
            while c.wants_write() {
                c.write_tls(&mut wire).unwrap();
            }
        }
        tls.handle_input(&mut wire, &mut plain).unwrap();
        assert_eq!(plain, sent);
        // Each answer read in order by the client: the keys follow one another.
        let out = tls.unsent().to_vec();
        c.read_tls(&mut &out[..]).unwrap();
        c.process_new_packets().unwrap();
        let mut reply = vec![0; Tls::sealed_len(2)];
        let n = tls.encrypt_to(b"ok", &mut reply).unwrap();
        let mut rest = tls.unsent().to_vec();
        rest.extend_from_slice(&reply[..n]);
        let mut rd = &rest[..];
        while !rd.is_empty() {
            c.read_tls(&mut rd).unwrap();
            c.process_new_packets().unwrap();
        }
        let mut got = [0; 2];
        std::io::Read::read_exact(&mut c.reader(), &mut got).unwrap();
        assert_eq!(&got, b"ok");
    }

    /// A ClientHello as a browser might send (about 6 KB: key shares, padding), split into
    /// records and fed a byte at a time or in pieces: answered with a ServerHello.
    #[test]
    fn large_client_hello_split_over_records() {
        let mut c = client();
        let mut wire = Vec::new();
        c.write_tls(&mut wire).unwrap();
        // Take the handshake message out of its record and add a padding extension (21).
        let mut hello = wire[5..].to_vec();
        let mut at = 4 + 2 + 32;
        at += 1 + hello[at] as usize;
        at += 2 + u16::from_be_bytes([hello[at], hello[at + 1]]) as usize;
        at += 1 + hello[at] as usize;
        let pad = 6000;
        let ext_len = u16::from_be_bytes([hello[at], hello[at + 1]]) as usize + 4 + pad;
        hello[at..at + 2].copy_from_slice(&(ext_len as u16).to_be_bytes());
        let mut ext = vec![0, 21];
        ext.extend_from_slice(&(pad as u16).to_be_bytes());
        ext.resize(4 + pad, 0);
        hello.splice(at + 2..at + 2, ext);
        let body = (hello.len() - 4) as u32;
        hello[1..4].copy_from_slice(&body.to_be_bytes()[1..]);
        for (record_size, step) in [(1000, 1), (1000, 777), (16_384, 1), (16_384, 5000)] {
            let mut records = Vec::new();
            for fragment in hello.chunks(record_size) {
                records.extend_from_slice(&[0x16, 0x03, 0x01]);
                records.extend_from_slice(&(fragment.len() as u16).to_be_bytes());
                records.extend_from_slice(fragment);
            }
            let mut tls = Tls::new(server_config()).unwrap();
            let mut plain = Vec::new();
            for chunk in records.chunks_mut(step) {
                tls.handle_input(chunk, &mut plain).unwrap();
                assert!(tls.incoming.capacity() <= MAX_INCOMING_HANDSHAKE);
            }
            // ServerHello: a handshake record, type 2.
            let out = tls.unsent();
            assert!(out.len() > 100, "{record_size}/{step}: no answer");
            assert_eq!((out[0], out[5]), (0x16, 2), "{record_size}/{step}");
            assert_eq!(tls.incoming.capacity(), 0);
        }
    }

    /// A ClientHello claiming 64 KiB is refused once one record's worth is kept: a
    /// connection mid-handshake holds no more than that.
    #[test]
    fn huge_client_hello_is_refused_at_one_record() {
        let mut body = vec![1u8, 0x00, 0xff, 0xff];
        body.resize(0xffff + 4 - 16, 0);
        let mut wire = Vec::new();
        for fragment in body.chunks(16_384) {
            wire.extend_from_slice(&[0x16, 0x03, 0x01]);
            wire.extend_from_slice(&(fragment.len() as u16).to_be_bytes());
            wire.extend_from_slice(fragment);
        }
        for step in [1000, 16_389, 65_536] {
            let mut tls = Tls::new(server_config()).unwrap();
            let mut plain = Vec::new();
            let mut result = Ok(Input::default());
            for chunk in wire.chunks_mut(step) {
                result = tls.handle_input(chunk, &mut plain);
                assert!(
                    tls.incoming.capacity() <= MAX_INCOMING_HANDSHAKE,
                    "step {step}"
                );
                if result.is_err() {
                    break;
                }
            }
            assert!(matches!(result, Err(TlsError::TooMuchInput)), "step {step}");
            tls.close_notify();
            assert_eq!(tls.incoming.capacity(), 0);
        }
    }

    /// A record split across reads is kept in a buffer of its own size, freed once whole.
    #[test]
    fn partial_record_is_kept_right_sized() {
        let mut tls = Tls::new(server_config()).unwrap();
        let (key, iv, mut seq) = handshaken_with_keys(&mut tls);
        let mut wire = seal(&key, &iv, &mut seq, 0x17, &[b'a'; 10_000]);
        wire.extend(seal(&key, &iv, &mut seq, 0x17, &[b'b'; 10_000]));
        let mut plain = Vec::new();
        let (first, second) = wire.split_at_mut(10_040);
        tls.handle_input(first, &mut plain).unwrap();
        assert_eq!(plain.len(), 10_000);
        assert_eq!(tls.incoming.len(), 10_040 - (10_000 + 22));
        assert_eq!(tls.incoming.capacity(), tls.incoming.len());
        let (second, third) = second.split_at_mut(5000);
        tls.handle_input(second, &mut plain).unwrap();
        assert!(tls.incoming.capacity() <= 5018 + 100);
        tls.handle_input(third, &mut plain).unwrap();
        assert_eq!(plain.len(), 20_000);
        assert_eq!(tls.incoming.capacity(), 0);
    }
}
