//! Verifies wsrelay behind a real reverse proxy: Debian's nginx, started here on a free
//! loopback port with the configuration the README shows (`proxy_http_version 1.1`, the
//! `Upgrade`/`Connection` headers, `Host $host`, `X-Forwarded-For
//! $proxy_add_x_forwarded_for`). At the default limits (loopback is a trusted proxy), 1,000
//! WebSocket clients through nginx all connect and chat, although they all reach wsrelay from
//! nginx's one address; 300 clients whose forwarded address is one and the same
//! (`X-Forwarded-For: 203.0.113.9`, to which nginx appends the trusted 127.0.0.1) get 503
//! beyond 256, while another forwarded address still gets in.
//!
//! nginx comes from `apt-get install nginx` (`test.sh` installs it); without it the tests say
//! so and pass.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tungstenite::Message;

use common::{RawClient, Server, Ws, new_key, request, tcp_connect, upgrade_headers};

/// Clients in the big run.
const CLIENTS: usize = 1000;
/// Rooms they are spread over: every join is announced to its room, so one room of 1,000
/// would cost 500,000 notices for nothing this test checks.
const ROOMS: usize = 50;

/// The nginx binary: `$WSRELAY_NGINX`, Debian's `/usr/sbin/nginx`, or one on `PATH`.
fn find_nginx() -> Option<PathBuf> {
    let from_env = std::env::var_os("WSRELAY_NGINX").map(PathBuf::from);
    let path = std::env::var_os("PATH").unwrap_or_default();
    from_env
        .into_iter()
        .chain([PathBuf::from("/usr/sbin/nginx")])
        .chain(std::env::split_paths(&path).map(|d| d.join("nginx")))
        .find(|p| p.is_file())
}

/// A running nginx proxying to wsrelay; stopped and its directory removed on drop.
struct Nginx {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Nginx {
    /// Starts `nginx` in the foreground with its own prefix, configuration, pid file and logs
    /// in a fresh directory, proxying a free loopback port to `upstream`.
    fn start(nginx: &Path, upstream: SocketAddr) -> Nginx {
        let dir = std::env::temp_dir().join(format!(
            "wsrelay-nginx-{}-{}",
            std::process::id(),
            upstream.port()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // A free port: bound, noted, released (nginx binds it a moment later).
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap();
        let d = dir.display();
        // Each proxied WebSocket holds two descriptors in the worker; 1,300 clients need
        // 2,600, and the connection count includes the upstream side too.
        let conf = format!(
            r#"daemon off;
worker_processes 1;
worker_rlimit_nofile 8192;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen {addr};
        location / {{
            proxy_pass http://{upstream};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_read_timeout 3600s;
        }}
    }}
}}
"#
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(nginx)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", nginx.display()));
        let mut proxy = Nginx { child, dir, addr };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = proxy.child.try_wait() {
                panic!("nginx exited ({status}): {}", proxy.error_log());
            }
            assert!(
                Instant::now() < deadline,
                "nginx not listening on {addr}: {}",
                proxy.error_log()
            );
            thread::sleep(Duration::from_millis(20));
        }
        proxy
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: the master then stops its workers; killed outright, it leaves
        // them running (and listening) as orphans.
        let pid = libc::pid_t::try_from(self.child.id()).unwrap_or(0);
        // SAFETY: kill(2) sends a signal to our own child; no memory is touched.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// wsrelay and nginx in front of it, or `None` (with a message) when nginx is not installed.
fn proxied_server(args: &[&str]) -> Option<(Server, Nginx)> {
    let Some(nginx) = find_nginx() else {
        eprintln!("skipping: nginx not found (apt-get install nginx, or set WSRELAY_NGINX)");
        return None;
    };
    let server = Server::start(args);
    let proxy = Nginx::start(&nginx, server.addr);
    Some((server, proxy))
}

/// A tungstenite client to `ws://PROXY/<room>`.
fn connect_via(proxy: &Nginx, server: &Server, room: &str) -> Ws {
    let url = format!("ws://{}/{room}", proxy.addr);
    match tungstenite::client(url.as_str(), tcp_connect(proxy.addr)) {
        Ok((ws, response)) => {
            assert_eq!(response.status(), 101);
            ws
        }
        Err(e) => panic!(
            "{url} through nginx: {e}; wsrelay:\n{}\nnginx:\n{}",
            server.stderr(),
            proxy.error_log()
        ),
    }
}

/// Reads JSON messages until a chat message from `name`; the `message` names seen on the way.
fn read_until_message_from(ws: &mut Ws, name: &str) -> Vec<String> {
    let mut names = Vec::new();
    // Welcome, history, joins and messages of a 20-member room: far fewer than this.
    for _ in 0..500 {
        let text = match ws.read() {
            Ok(Message::Text(t)) => t,
            Ok(_) => continue,
            Err(e) => panic!("reading until {name}'s message: {e} (saw {names:?})"),
        };
        let v: Value = serde_json::from_str(text.as_str()).unwrap();
        if v["type"] == "message" {
            let from = v["name"].as_str().unwrap_or_default().to_owned();
            let done = from == name;
            names.push(from);
            if done {
                return names;
            }
        }
    }
    panic!("no message from {name} in 500 reads (saw {names:?})");
}

#[test]
fn a_thousand_clients_through_nginx_connect_and_chat() {
    let Some((server, proxy)) = proxied_server(&[]) else {
        return;
    };
    let mut clients: Vec<Ws> = (0..CLIENTS)
        .map(|i| connect_via(&proxy, &server, &format!("r{}", i % ROOMS)))
        .collect();
    for (i, ws) in clients.iter_mut().enumerate() {
        let say = format!(r#"{{"name":"u{i}","msg":"hello from {i}"}}"#);
        common::ws_send(ws, Message::text(say));
    }
    // Every client sees its own message come back from its room (the sender is included).
    let mut seen_by_last = Vec::new();
    for (i, ws) in clients.iter_mut().enumerate() {
        let names = read_until_message_from(ws, &format!("u{i}"));
        if i >= CLIENTS - ROOMS {
            seen_by_last.push((i, names));
        }
    }
    // The last to join each room sent last: it saw every member's message before its own.
    for (i, names) in seen_by_last {
        assert_eq!(
            names.len(),
            CLIENTS / ROOMS,
            "client {i} saw {names:?} in room r{}",
            i % ROOMS
        );
    }
    assert!(
        !server.stderr().contains("warn"),
        "wsrelay:\n{}",
        server.stderr()
    );
}

#[test]
fn one_forwarded_address_is_limited_to_256() {
    let Some((server, proxy)) = proxied_server(&[]) else {
        return;
    };
    // The client's own X-Forwarded-For; nginx appends the peer it saw, 127.0.0.1, which is
    // trusted, so the rightmost untrusted entry is 203.0.113.9.
    let upgrade = |forwarded: &str| {
        let mut headers = upgrade_headers(proxy.addr, &new_key());
        headers.push(("X-Forwarded-For", forwarded.to_owned()));
        let refs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let mut client = RawClient::connect(proxy.addr);
        let status = client.handshake(&request("GET / HTTP/1.1", &refs)).status;
        (status, client)
    };
    let mut held = Vec::new();
    let mut statuses = Vec::new();
    for _ in 0..300 {
        let (status, client) = upgrade("203.0.113.9");
        statuses.push(status);
        if status == 101 {
            held.push(client);
        }
    }
    let admitted = statuses.iter().filter(|&&s| s == 101).count();
    let refused = statuses.iter().filter(|&&s| s == 503).count();
    assert_eq!(
        (admitted, refused),
        (256, 44),
        "statuses {statuses:?}; wsrelay:\n{}\nnginx:\n{}",
        server.stderr(),
        proxy.error_log()
    );
    assert!(statuses[..256].iter().all(|&s| s == 101), "{statuses:?}");
    // Another forwarded address is another client.
    let (status, _other) = upgrade("203.0.113.10");
    assert_eq!(status, 101);
    // Counted as per-address refusals; /metrics asked directly (loopback, no forwarded
    // address: not limited per address).
    let metrics = common::fetch_metrics(server.addr);
    assert_eq!(
        metrics["wsrelay_limit_hits_total{limit=\"max_connections_per_ip\"}"],
        44.0
    );
    drop(held);
}
