//! Verifies `--tls-cert`/`--tls-key` over real sockets: an independent client (Python's `ssl`
//! and `websockets`) chats over wss://; OpenSSL's `s_client` is refused TLS 1.0 and 1.1 and
//! gets TLS 1.2 and 1.3 with ALPN http/1.1; the page, /healthz, /metrics, long polling and
//! Engine.IO answer over https://; SIGHUP swaps in a new certificate for new clients while
//! open ones keep chatting, and keeps the old one when the new files are broken; a client
//! that stops mid-handshake is dropped at the handshake timeout; garbage instead of a
//! ClientHello is closed without hurting others; over the connection limit a socket is
//! closed before any TLS work; a TLS client that stops reading is closed as a slow consumer
//! (its queued frames and unsent records count against `--max-output`) while another is
//! served. Each test makes its own CA, intermediate and leaf with
//! `openssl`; the chain (leaf, intermediate) is in the cert file, the client trusts the CA.

mod common;
#[path = "tls/pki.rs"]
mod pki;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use serde_json::Value;
use tungstenite::{Message, WebSocket};

use common::{IO_TIMEOUT, Server};
use pki::Pki;

type TlsStream = StreamOwned<ClientConnection, TcpStream>;
type Wss = WebSocket<TlsStream>;

impl Pki {
    /// Copies leaf `cn` to the paths the server reads (`server.pem`, `server.key`).
    fn install(&self, cn: &str) {
        std::fs::copy(
            self.path(&format!("{cn}.chain.pem")),
            self.path("server.pem"),
        )
        .expect("install cert");
        std::fs::copy(self.path(&format!("{cn}.key")), self.path("server.key"))
            .expect("install key");
    }

    /// `wsrelay --tls-cert server.pem --tls-key server.key ARGS`.
    fn start(&self, args: &[&str]) -> Server {
        let (cert, key) = (self.path("server.pem"), self.path("server.key"));
        let mut all = vec![
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        Server::start(&all)
    }

    fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(self.path("ca.pem")).expect("read ca.pem"))
            .expect("trust the CA");
        // ring, like the server (rustls marks it deprecated for want of post-quantum kx).
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// A finished TLS connection to `addr` as `localhost`, verified against the CA.
    fn connect(&self, addr: SocketAddr) -> TlsStream {
        let tcp = TcpStream::connect(addr).expect("connect");
        tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        tcp.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let conn = ClientConnection::new(self.client_config(), name).expect("client");
        let mut tls = StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn
                .complete_io(&mut tls.sock)
                .expect("TLS handshake with wsrelay");
        }
        assert_eq!(tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
        tls
    }

    /// A WebSocket over TLS in `room`, its welcome and history read.
    fn ws(&self, addr: SocketAddr, room: &str) -> Wss {
        let tls = self.connect(addr);
        let (mut ws, _) = tungstenite::client(format!("wss://localhost/{room}"), tls)
            .expect("WebSocket handshake over TLS");
        let welcome = recv_json(&mut ws);
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        ws
    }
}

/// The subject CN of the server's certificate: which leaf it presented.
fn presented(tls: &TlsStream) -> &'static str {
    let leaf = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("a certificate");
    let has = |cn: &[u8]| leaf.windows(cn.len()).any(|w| w == cn);
    match (has(b"first"), has(b"second")) {
        (true, false) => "first",
        (false, true) => "second",
        other => panic!("neither or both CNs in the leaf: {other:?}"),
    }
}

fn recv_json(ws: &mut Wss) -> Value {
    for _ in 0..100 {
        match ws.read().expect("read over wss") {
            Message::Text(t) => return serde_json::from_str(&t).expect("JSON"),
            _ => continue,
        }
    }
    panic!("no text message in 100 frames");
}

/// Sends a chat line from `from` and checks it and every one of `to` get it (notices
/// skipped).
fn chat(from: &mut Wss, to: &mut [&mut Wss], msg: &str) {
    let line = serde_json::json!({"name": "rust", "msg": msg}).to_string();
    from.send(Message::text(line)).expect("send over wss");
    let expect = |ws: &mut Wss| {
        let m = (0..50)
            .map(|_| recv_json(ws))
            .find(|m| m["type"] == "message" && m["history"] != true)
            .expect("the chat line");
        assert_eq!(m["msg"], msg, "{m}");
    };
    expect(from);
    for ws in to.iter_mut() {
        expect(ws);
    }
}

/// A plain HTTP/1.1 request over TLS; the whole response (the server closes after it).
fn https(pki: &Pki, addr: SocketAddr, target: &str) -> String {
    let mut tls = pki.connect(addr);
    let req = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).expect("send request");
    let mut out = Vec::new();
    match tls.read_to_end(&mut out) {
        Ok(_) => {}
        Err(e) => panic!(
            "read response to {target}: {e} after {:?}",
            String::from_utf8_lossy(&out)
        ),
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether the server closes `tcp` within `limit` (EOF or reset), reading what it sends.
fn closed_within(tcp: &mut TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    tcp.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0; 4096];
    while Instant::now() < deadline {
        match tcp.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

fn sighup(server: &Server) {
    let status = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .expect("run kill(1)");
    assert!(status.success());
}

fn s_client(addr: SocketAddr, version: &str) -> String {
    let out = Command::new("timeout")
        .args([
            "10", "openssl", "s_client", version, "-alpn", "http/1.1", "-connect",
        ])
        .arg(addr.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("run openssl s_client");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn python_ssl_client_chats_over_wss() {
    let pki = Pki::new("python");
    pki.install("first");
    let server = pki.start(&[]);
    let python = std::env::var("WSRELAY_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let usable = Command::new(&python)
        .args(["-c", "import websockets.sync.client"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !usable {
        assert!(
            std::env::var_os("CI").is_none() && std::env::var_os("WSRELAY_PYTHON").is_none(),
            "{python} cannot import websockets: test.sh installs it"
        );
        eprintln!("SKIPPED the Python client: pip install websockets");
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tls/chat.py");
    let out = Command::new("timeout")
        .args(["30", &python, script, &server.addr.port().to_string()])
        .arg(pki.path("ca.pem"))
        .output()
        .expect("run chat.py");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ok"),
        "chat.py: {}\n{}\nserver:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server.stderr()
    );
}

#[test]
fn openssl_gets_tls12_and_tls13_with_alpn_never_10_or_11() {
    let pki = Pki::new("versions");
    pki.install("first");
    let server = pki.start(&[]);
    for version in ["-tls1_2", "-tls1_3"] {
        let out = s_client(server.addr, version);
        let want = if version == "-tls1_2" {
            "TLSv1.2"
        } else {
            "TLSv1.3"
        };
        assert!(out.contains(&format!("New, {want}")), "{version}: {out}");
        assert!(out.contains("ALPN protocol: http/1.1"), "{version}: {out}");
    }
    for version in ["-tls1", "-tls1_1"] {
        let out = s_client(server.addr, version);
        assert!(
            out.contains("Cipher is (NONE)"),
            "{version} was accepted: {out}"
        );
    }
}

#[test]
fn page_healthz_metrics_polling_and_engine_io_over_https() {
    let pki = Pki::new("https");
    pki.install("first");
    let server = pki.start(&[]);
    let page = https(&pki, server.addr, "/");
    assert!(
        page.starts_with("HTTP/1.1 200") && page.contains("<html"),
        "{page}"
    );
    let health = https(&pki, server.addr, "/healthz");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let metrics = https(&pki, server.addr, "/metrics");
    assert!(metrics.contains("wsrelay_tls_errors_total 0"), "{metrics}");
    let poll = https(&pki, server.addr, "/poll?room=lobby");
    assert!(
        poll.starts_with("HTTP/1.1 200") && poll.contains("welcome"),
        "{poll}"
    );
    let eio = https(&pki, server.addr, "/socket.io/?EIO=4&transport=polling");
    assert!(
        eio.starts_with("HTTP/1.1 200") && eio.contains("\"sid\""),
        "{eio}"
    );
}

#[test]
fn sighup_swaps_the_certificate_for_new_clients_only() {
    let pki = Pki::new("reload");
    pki.install("first");
    let server = pki.start(&[]);
    let mut a = pki.ws(server.addr, "r");
    let mut b = pki.ws(server.addr, "r");
    assert_eq!(presented(a.get_ref()), "first");
    chat(&mut a, &mut [&mut b], "before");

    pki.leaf("second");
    pki.install("second");
    sighup(&server);
    server.wait_for_log("TLS certificate and key reloaded", IO_TIMEOUT);
    // Open connections go on with the keys they have.
    chat(&mut b, &mut [&mut a], "after");
    let mut c = pki.ws(server.addr, "r");
    assert_eq!(presented(c.get_ref()), "second");
    chat(&mut c, &mut [&mut a, &mut b], "all three");
}

#[test]
fn sighup_with_broken_files_keeps_the_old_pair() {
    let pki = Pki::new("broken");
    pki.install("first");
    let server = pki.start(&[]);
    let mut a = pki.ws(server.addr, "r");
    std::fs::write(pki.path("server.pem"), "not a certificate\n").unwrap();
    sighup(&server);
    server.wait_for_log("still using the previous certificate", IO_TIMEOUT);
    assert!(
        server.stderr().contains("error: SIGHUP"),
        "{}",
        server.stderr()
    );
    // A key that does not match the certificate is refused too.
    pki.leaf("second");
    std::fs::copy(pki.path("second.chain.pem"), pki.path("server.pem")).unwrap();
    sighup(&server);
    let deadline = Instant::now() + IO_TIMEOUT;
    while server
        .stderr()
        .matches("still using the previous certificate")
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "{}", server.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut b = pki.ws(server.addr, "r");
    assert_eq!(presented(b.get_ref()), "first");
    chat(&mut b, &mut [&mut a], "still here");
}

#[test]
fn a_stalled_handshake_is_dropped_at_the_handshake_timeout() {
    let pki = Pki::new("stall");
    pki.install("first");
    let server = pki.start(&["--handshake-timeout", "1"]);
    // Half a ClientHello: a record header promising 512 bytes, and 8 of them.
    let mut tcp = TcpStream::connect(server.addr).unwrap();
    tcp.write_all(&[
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0, 0,
    ])
    .unwrap();
    let started = Instant::now();
    assert!(
        closed_within(&mut tcp, Duration::from_secs(5)),
        "not dropped"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "dropped early"
    );
    // A client that sends nothing at all is dropped the same way.
    let mut idle = TcpStream::connect(server.addr).unwrap();
    assert!(
        closed_within(&mut idle, Duration::from_secs(5)),
        "silent client kept"
    );
}

#[test]
fn garbage_instead_of_a_client_hello_is_closed_without_hurting_others() {
    let pki = Pki::new("garbage");
    pki.install("first");
    let server = pki.start(&[]);
    let mut a = pki.ws(server.addr, "g");
    let mut b = pki.ws(server.addr, "g");
    let attempts: [&[u8]; 3] = [
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        &[0x16, 0x03, 0x01, 0xff, 0xff, 0xde, 0xad],
        &[0x17; 70_000],
    ];
    for garbage in attempts {
        let mut tcp = TcpStream::connect(server.addr).unwrap();
        let _ = tcp.write_all(garbage);
        assert!(
            closed_within(&mut tcp, Duration::from_secs(5)),
            "{:?} kept",
            &garbage[..4]
        );
    }
    chat(&mut a, &mut [&mut b], "unharmed");
    let metrics = https(&pki, server.addr, "/metrics");
    let errors = metrics
        .lines()
        .find_map(|l| l.strip_prefix("wsrelay_tls_errors_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .expect("the TLS error counter");
    assert!(errors >= 2.0, "{metrics}");
}

#[test]
fn over_the_connection_limit_a_socket_is_closed_before_any_tls() {
    let pki = Pki::new("limit");
    pki.install("first");
    let server = pki.start(&["--max-connections", "1"]);
    let mut a = pki.ws(server.addr, "l");
    let mut tcp = TcpStream::connect(server.addr).unwrap();
    // No ServerHello, no 503: closed with nothing sent.
    let mut buf = [0; 64];
    tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let got = tcp.read(&mut buf);
    assert!(matches!(got, Ok(0) | Err(_)), "{got:?}");
    chat(&mut a, &mut [], "alone");
}

#[test]
fn a_tls_peer_that_stops_reading_is_closed_as_a_slow_consumer() {
    let pki = Pki::new("slow");
    pki.install("first");
    let server = pki.start(&["--mode", "relay", "--max-output", "262144"]);
    let connect = |pki: &Pki| {
        let tls = pki.connect(server.addr);
        tungstenite::client("wss://localhost/", tls)
            .expect("WebSocket handshake over TLS")
            .0
    };
    // Never reads again: what it is sent piles up as queued frames, then TLS records.
    let _stalled = connect(&pki);
    let mut talker = connect(&pki);
    let payload = "x".repeat(4096);
    let mut closed = 0.0;
    for round in 0..40 {
        for _ in 0..100 {
            talker.send(Message::text(payload.clone())).expect("send");
        }
        // The talker reads its own copies (relay mode echoes to the sender).
        let mut got = 0;
        while got < 100 {
            if let Message::Text(t) = talker.read().expect("the talker is served") {
                assert_eq!(t.len(), payload.len());
                got += 1;
            }
        }
        let metrics = https(&pki, server.addr, "/metrics");
        closed = metrics
            .lines()
            .find_map(|l| l.strip_prefix("wsrelay_slow_consumer_closes_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if closed >= 1.0 {
            eprintln!(
                "slow consumer closed after {} MiB",
                (round + 1) * 100 * 4 / 1024
            );
            break;
        }
    }
    assert_eq!(closed, 1.0, "the stalled TLS client was not closed");
}

#[test]
fn sighup_without_tls_is_logged_and_harmless() {
    let mut server = Server::start(&[]);
    let status = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    server.wait_for_log("nothing to reload", IO_TIMEOUT);
    let health = common::http_exchange(server.addr, &common::get_request(server.addr, "/healthz"));
    assert_eq!(health.status, 200);
    server.terminate();
    assert!(server.wait_exit(Duration::from_secs(10)).success());
}

#[test]
fn a_bad_pair_at_startup_is_an_error_naming_the_file() {
    let pki = Pki::new("startup");
    pki.install("first");
    std::fs::write(pki.path("server.key"), "nope\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wsrelay"))
        .args(["--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(pki.path("server.pem"))
        .arg("--tls-key")
        .arg(pki.path("server.key"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--tls-key"), "{err}");
}

/// One TLS 1.3 record of content type `typ` carrying `inner`, sealed with AES-128-GCM keys
/// a client gave up (`dangerous_extract_secrets`): records no client library would send.
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

#[test]
fn a_key_update_split_a_byte_per_record_closes_only_that_connection() {
    let pki = Pki::new("split-ku");
    pki.install("first");
    let mut server = pki.start(&[]);
    let mut a = pki.ws(server.addr, "k");
    let mut b = pki.ws(server.addr, "k");
    // A TLS 1.3 client whose keys are taken out after the handshake.
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pki.path("ca.pem")).unwrap())
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
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tcp = TcpStream::connect(server.addr).unwrap();
    tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).unwrap();
    }
    while conn.wants_write() {
        conn.write_tls(&mut tcp).unwrap();
    }
    let (mut seq, secrets) = conn.dangerous_extract_secrets().unwrap().tx;
    let rustls::ConnectionTrafficSecrets::Aes128Gcm { key, iv } = secrets else {
        panic!("not AES-128-GCM")
    };
    let key = ring::aead::UnboundKey::new(&ring::aead::AES_128_GCM, key.as_ref()).unwrap();
    let key = ring::aead::LessSafeKey::new(key);
    let iv: [u8; 12] = iv.as_ref().try_into().unwrap();
    // A key update claiming 64 KiB, then a byte per record: once a panic in close_notify.
    let mut wire = seal(&key, &iv, &mut seq, 0x16, &[24, 0x00, 0xff, 0xff, 0]);
    while wire.len() < 90_000 {
        wire.extend(seal(&key, &iv, &mut seq, 0x16, &[0]));
    }
    let _ = tcp.write_all(&wire);
    assert!(
        closed_within(&mut tcp, Duration::from_secs(5)),
        "the connection was kept"
    );
    assert!(
        server.wait_exit_now().is_none(),
        "the server died: {}",
        server.stderr()
    );
    chat(&mut a, &mut [&mut b], "still here");
    let metrics = https(&pki, server.addr, "/metrics");
    let errors = metrics
        .lines()
        .find_map(|l| l.strip_prefix("wsrelay_tls_errors_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .expect("the TLS error counter");
    assert_eq!(errors, 1.0, "{metrics}");
}

#[test]
fn a_small_max_output_still_completes_handshakes() {
    let pki = Pki::new("small-output");
    pki.install("first");
    // Less than the server's first flight (certificate chain and all): the socket takes it.
    let server = pki.start(&["--max-output", "600"]);
    for _ in 0..3 {
        let health = https(&pki, server.addr, "/healthz");
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    }
    let metrics = https(&pki, server.addr, "/metrics");
    assert!(
        metrics.contains("wsrelay_slow_consumer_closes_total 0"),
        "{metrics}"
    );
}
