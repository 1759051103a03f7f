//! Verifies the systemd protocols against the real binary. The test plays the service manager
//! on a real datagram socket given as `NOTIFY_SOCKET` (a path, and an abstract `@name`) and
//! reads `READY=1` (after which the listener accepts), `STATUS=` with the connection count,
//! `WATCHDOG=1` when `WATCHDOG_USEC` is set (and none when `WATCHDOG_PID` names another
//! process), and `STOPPING=1` after SIGTERM. Socket activation: a listening socket passed as
//! fd 3 with `LISTEN_PID`/`LISTEN_FDS` is used instead of `--listen`, by a shell wrapper of this
//! test's and by Debian's `systemd-socket-activate`; a passed socket that is not a listening
//! TCP socket is refused, and `LISTEN_PID` of another process is ignored. Logs carry syslog
//! priority prefixes exactly when `JOURNAL_STREAM` names the process's stderr.

mod common;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::OwnedFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{self, UnixDatagram};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{IO_TIMEOUT, OP_TEXT, RawClient, Server};

const EXIT_LIMIT: Duration = Duration::from_secs(15);

/// An address passed as `--listen` that cannot be bound (TEST-NET-1, RFC 5737): a server that
/// starts anyway must be using the socket it was given.
const UNBINDABLE: &str = "192.0.2.1:80";

/// The service manager's end of `NOTIFY_SOCKET`.
struct Manager {
    socket: UnixDatagram,
    /// What `NOTIFY_SOCKET` is set to.
    address: String,
    /// The socket file, removed on drop.
    path: Option<PathBuf>,
}

fn unique(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("wsrelay-test-{tag}-{}-{n}", std::process::id())
}

impl Manager {
    fn bind_path() -> Manager {
        let path = std::env::temp_dir().join(unique("notify"));
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        Manager::new(socket, path.display().to_string(), Some(path))
    }

    fn bind_abstract() -> Manager {
        let name = unique("notify");
        let addr = net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).expect("bind the abstract notify socket");
        Manager::new(socket, format!("@{name}"), None)
    }

    fn new(socket: UnixDatagram, address: String, path: Option<PathBuf>) -> Manager {
        socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        Manager {
            socket,
            address,
            path,
        }
    }

    /// The next datagram, one `VAR=value` line without its newline.
    #[track_caller]
    fn recv(&self) -> String {
        let mut buf = [0u8; 4096];
        match self.socket.recv(&mut buf) {
            Ok(n) => String::from_utf8_lossy(&buf[..n]).trim_end().to_owned(),
            Err(e) => panic!("no notification from wsrelay: {e}"),
        }
    }

    /// Reads notifications until one starts with `prefix`; returns it.
    #[track_caller]
    fn wait_for(&self, prefix: &str) -> String {
        let mut seen = Vec::new();
        // Bounded: watchdog pings come every 50 ms in these tests, so 400 is 20 s of them.
        for _ in 0..400 {
            let message = self.recv();
            if message.starts_with(prefix) {
                return message;
            }
            seen.push(message);
        }
        panic!("no {prefix:?} among {seen:?}");
    }

    /// Every notification that arrives within `quiet`.
    fn drain_for(&self, quiet: Duration) -> Vec<String> {
        let deadline = Instant::now() + quiet;
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if left.is_zero() {
                break;
            }
            self.socket.set_read_timeout(Some(left)).unwrap();
            match self.socket.recv(&mut buf) {
                Ok(n) => seen.push(String::from_utf8_lossy(&buf[..n]).trim_end().to_owned()),
                Err(_) => break,
            }
        }
        self.socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        seen
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// One echo round trip: the server works.
#[track_caller]
fn echo_once(server: &Server) {
    let mut client = RawClient::open(server);
    client.send_frame(true, OP_TEXT, b"hello");
    assert_eq!(client.read_text(), "hello");
}

fn notify_lifecycle(manager: &Manager) {
    let mut cmd = Server::command(&["--mode", "echo"]);
    cmd.env("NOTIFY_SOCKET", &manager.address)
        .env("WATCHDOG_USEC", "100000")
        .env_remove("WATCHDOG_PID")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDS");
    let mut server = Server::start_command(cmd);
    assert_eq!(manager.recv(), "READY=1", "READY=1 comes first");
    // Ready means accepting.
    let mut client = RawClient::open(&server);
    client.send_frame(true, OP_TEXT, b"hi");
    assert_eq!(client.read_text(), "hi");
    manager.wait_for("WATCHDOG=1");
    let status = manager.wait_for("STATUS=1 connections, 1 websockets");
    assert!(status.contains("accepted"), "{status}");
    server.terminate();
    manager.wait_for("STOPPING=1");
    let status = server.wait_exit(EXIT_LIMIT);
    assert!(status.success(), "{status}; stderr:\n{}", server.stderr());
}

#[test]
fn notify_socket_path_ready_status_watchdog_stopping() {
    notify_lifecycle(&Manager::bind_path());
}

#[test]
fn notify_socket_abstract_ready_status_watchdog_stopping() {
    notify_lifecycle(&Manager::bind_abstract());
}

#[test]
fn watchdog_for_another_pid_is_not_ours() {
    let manager = Manager::bind_abstract();
    let mut cmd = Server::command(&[]);
    cmd.env("NOTIFY_SOCKET", &manager.address)
        .env("WATCHDOG_USEC", "100000")
        .env("WATCHDOG_PID", "1");
    let _server = Server::start_command(cmd);
    assert_eq!(manager.recv(), "READY=1");
    let later = manager.drain_for(Duration::from_millis(600));
    assert!(
        !later.iter().any(|m| m == "WATCHDOG=1"),
        "WATCHDOG=1 sent for WATCHDOG_PID=1: {later:?}"
    );
}

/// `sh` moves its stdin (the socket) to fd 3, sets `LISTEN_PID` to its own pid, which `exec`
/// keeps, and becomes wsrelay.
fn activated(socket: OwnedFd, pid: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            r#"exec 3<&0 0</dev/null; export LISTEN_PID={pid} LISTEN_FDS=1; exec "$0" "$@""#
        ))
        .arg(env!("CARGO_BIN_EXE_wsrelay"))
        .args(args)
        .stdin(Stdio::from(socket));
    cmd
}

#[test]
fn socket_passed_as_fd_3_is_used_instead_of_listen() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let args = ["--listen", UNBINDABLE, "--mode", "echo"];
    let server = Server::start_command(activated(listener.into(), "$$", &args));
    assert_eq!(server.addr, addr);
    assert!(server.stderr().contains("socket from systemd"));
    echo_once(&server);
}

#[test]
fn listen_pid_of_another_process_is_ignored() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let args = ["--listen", "127.0.0.1:0", "--mode", "echo"];
    let server = Server::start_command(activated(listener.into(), "1", &args));
    assert_ne!(server.addr, addr, "used a socket meant for pid 1");
    echo_once(&server);
}

#[test]
fn passed_socket_that_is_not_a_listening_tcp_socket_is_refused() {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let idle = TcpListener::bind("127.0.0.1:0").unwrap();
    let connected = std::net::TcpStream::connect(idle.local_addr().unwrap()).unwrap();
    for (what, fd, why) in [
        ("udp", OwnedFd::from(udp), "not a stream socket"),
        ("connected tcp", OwnedFd::from(connected), "not listening"),
    ] {
        let output = activated(fd, "$$", &["--listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .output()
            .expect("run wsrelay");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{what}: started anyway: {stderr}");
        assert!(stderr.contains(why), "{what}: {stderr}");
    }
}

/// `systemd-socket-activate` from Debian's `systemd` package, if installed.
fn socket_activate_tool() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/lib/systemd")])
        .map(|dir| dir.join("systemd-socket-activate"))
        .find(|p| Path::new(p).is_file())
}

#[test]
fn systemd_socket_activate_starts_it_on_the_first_connection() {
    let Some(tool) = socket_activate_tool() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-socket-activate is missing under CI: test.sh installs Debian's systemd"
        );
        eprintln!("SKIPPED: systemd-socket-activate not installed (apt-get install systemd)");
        return;
    };
    // A free port: systemd-socket-activate needs a number, not 0.
    let addr: SocketAddr = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let mut cmd = Command::new(tool);
    cmd.arg("-l")
        .arg(addr.to_string())
        .arg(env!("CARGO_BIN_EXE_wsrelay"))
        .args(["--listen", UNBINDABLE, "--mode", "echo"])
        .stdin(Stdio::null());
    let mut server = Server::spawn_at(cmd, addr);
    server.wait_for_log("Listening on", Duration::from_secs(10));
    // The first connection starts wsrelay (exec, same pid); its handshake is answered then.
    echo_once(&server);
    server.wait_for_log("socket from systemd", Duration::from_secs(5));
    server.terminate();
    let status = server.wait_exit(EXIT_LIMIT);
    assert!(status.success(), "{status}; stderr:\n{}", server.stderr());
}

#[test]
fn journal_stream_on_stderr_gets_priority_prefixes() {
    let path = std::env::temp_dir().join(unique("journal"));
    let file = std::fs::File::create(&path).unwrap();
    let meta = file.metadata().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wsrelay"))
        .args(["--listen", "127.0.0.1:0", "--log-level", "debug"])
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.contains("listening on") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&path);
    assert!(
        text.lines()
            .any(|l| l.starts_with("<6>wsrelay: info: listening on")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("<7>wsrelay: debug: ")),
        "{text}"
    );

    // Inherited from elsewhere (another stream): plain lines.
    let mut cmd = Server::command(&[]);
    cmd.env("JOURNAL_STREAM", "1:1");
    let server = Server::start_command(cmd);
    let log = server.stderr();
    assert!(
        log.lines()
            .any(|l| l.starts_with("wsrelay: info: listening on"))
            && !log.contains('<'),
        "{log}"
    );
}
