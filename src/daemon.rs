//! Process-level glue: the open-file limit, systemd's notify protocol (sd_notify(3)), socket
//! activation (sd_listen_fds(3)) or else binding the listener ourselves, and journald
//! detection, without libsystemd: the protocols are an environment variable and a datagram
//! each. The crate's only `unsafe` lives here.
#![allow(unsafe_code)]

use std::fmt;
use std::io;
use std::os::fd::{FromRawFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

/// sd_listen_fds(3): passed descriptors start here, right after stdin, stdout and stderr.
const LISTEN_FDS_START: RawFd = 3;

/// Raises the soft open-file limit to the hard limit; returns the new soft limit.
///
/// Every connection is a file descriptor, so the default soft limit (often 1024) would cap
/// the server long before memory does.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: `lim` is a valid rlimit read above, with cur <= max.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(lim.rlim_cur)
}

/// A message to the service manager. `Display` gives its wire form, kept here in one place
/// (sd_notify(3) lists the variables).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notify<'a> {
    /// Start-up is finished: the listener accepts connections.
    Ready,
    /// Shutdown has begun.
    Stopping,
    /// Still alive; sent at half the watchdog interval.
    Watchdog,
    /// One line for `systemctl status`.
    Status(&'a str),
}

impl fmt::Display for Notify<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ready => f.write_str("READY=1"),
            Self::Stopping => f.write_str("STOPPING=1"),
            Self::Watchdog => f.write_str("WATCHDOG=1"),
            // One assignment per line: a newline in the text would start another.
            Self::Status(s) => write!(f, "STATUS={}", s.replace('\n', " ")),
        }
    }
}

/// The service manager's notification socket, from `NOTIFY_SOCKET`.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// The socket named by `NOTIFY_SOCKET`, if it is set: a path, or `@name` for an abstract
    /// socket. `Err` names an address that is set but unusable.
    pub fn from_env() -> Result<Option<Self>, String> {
        let Some(value) = std::env::var_os("NOTIFY_SOCKET") else {
            return Ok(None);
        };
        let bytes = value.as_encoded_bytes();
        let addr = match bytes {
            [] => return Ok(None),
            // The abstract namespace (unix(7)): no file, the name follows a NUL byte.
            [b'@', name @ ..] => SocketAddr::from_abstract_name(name),
            [b'/', ..] => SocketAddr::from_pathname(&value),
            _ => {
                return Err(format!(
                    "NOTIFY_SOCKET {value:?}: not a path or an @abstract name"
                ));
            }
        }
        .map_err(|e| format!("NOTIFY_SOCKET {value:?}: {e}"))?;
        let socket = UnixDatagram::unbound().map_err(|e| format!("notify socket: {e}"))?;
        // A manager that stops reading must never stall the event loop.
        socket
            .set_nonblocking(true)
            .map_err(|e| format!("notify socket: {e}"))?;
        Ok(Some(Self { socket, addr }))
    }

    /// Sends one message; never blocks.
    pub fn notify(&self, state: &Notify<'_>) -> io::Result<()> {
        let line = format!("{state}\n");
        self.socket.send_to_addr(line.as_bytes(), &self.addr)?;
        Ok(())
    }
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, as sd_watchdog_enabled(3)
/// advises, when the watchdog is on and meant for this process (`WATCHDOG_PID` unset or ours).
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    Some(Duration::from_micros(usec / 2))
}

/// The listening socket passed by socket activation (sd_listen_fds(3)), if any.
///
/// `Ok(None)`: no sockets were passed to this process (`LISTEN_PID` unset or another
/// process's). Nothing is trusted before `LISTEN_PID` matches, and the descriptor must be an
/// IPv4 or IPv6 stream socket in the listening state. The variables are removed afterwards,
/// so they are not inherited by anything this process might start. Call it before any thread
/// is spawned: it changes the environment.
pub fn listen_fd() -> Result<Option<std::net::TcpListener>, String> {
    let (Ok(pid), Ok(fds)) = (std::env::var("LISTEN_PID"), std::env::var("LISTEN_FDS")) else {
        return Ok(None);
    };
    let ours = pid.trim().parse::<u32>().ok() == Some(std::process::id());
    // SAFETY: called from main before any other thread exists (documented above), so no
    // other thread reads or writes the environment meanwhile.
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    if !ours {
        return Ok(None);
    }
    let count: u32 = fds
        .trim()
        .parse()
        .map_err(|_| format!("LISTEN_FDS {fds:?} is not a count"))?;
    let end = RawFd::try_from(count)
        .ok()
        .and_then(|n| LISTEN_FDS_START.checked_add(n))
        .ok_or_else(|| format!("LISTEN_FDS {fds:?} is out of range"))?;
    match count {
        0 => return Ok(None),
        1 => {}
        _ => {
            return Err(format!(
                "LISTEN_FDS={count}: wsrelay serves one listening socket; \
                 give the .socket unit a single ListenStream="
            ));
        }
    }
    for fd in LISTEN_FDS_START..end {
        set_cloexec(fd).map_err(|e| format!("passed fd {fd}: {e}"))?;
    }
    let fd = LISTEN_FDS_START;
    check_listening_inet_stream(fd)?;
    // SAFETY: `fd` was passed to this process (LISTEN_PID is ours), is open (fcntl and
    // getsockopt succeeded on it), is a listening TCP socket (checked above), and nothing else
    // in the process owns it: the variables that named it are gone.
    Ok(Some(unsafe { std::net::TcpListener::from_raw_fd(fd) }))
}

/// Marks a passed descriptor close-on-exec, as sd_listen_fds(3) does.
fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFD takes no argument and only reads the descriptor's flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: F_SETFD with an int argument only sets the descriptor's flags.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Checks that `fd` is an IPv4/IPv6 stream socket that listens.
fn check_listening_inet_stream(fd: RawFd) -> Result<(), String> {
    let opt = |name: libc::c_int, what: &str| {
        socket_option(fd, name).map_err(|e| format!("passed fd {fd}: {what}: {e}"))
    };
    let domain = opt(libc::SO_DOMAIN, "SO_DOMAIN")?;
    if domain != libc::AF_INET && domain != libc::AF_INET6 {
        return Err(format!(
            "passed fd {fd} is not an IP socket (domain {domain})"
        ));
    }
    if opt(libc::SO_TYPE, "SO_TYPE")? != libc::SOCK_STREAM {
        return Err(format!("passed fd {fd} is not a stream socket"));
    }
    if opt(libc::SO_ACCEPTCONN, "SO_ACCEPTCONN")? == 0 {
        return Err(format!("passed fd {fd} is not listening"));
    }
    Ok(())
}

/// An integer `SOL_SOCKET` option of `fd`.
fn socket_option(fd: RawFd, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are live locals; `len` holds the size of `value`, so the
    // kernel writes at most that many bytes into it.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            name,
            (&raw mut value).cast::<libc::c_void>(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

/// Whether stderr is connected to journald (systemd.exec(5): `JOURNAL_STREAM` holds the
/// device and inode of that stream; it is inherited, so compare it with stderr's own).
pub fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    match std::fs::metadata("/proc/self/fd/2") {
        Ok(m) => dev.parse() == Ok(m.dev()) && ino.parse() == Ok(m.ino()),
        Err(_) => false,
    }
}

/// A TCP socket bound to `addr` and listening with an accept queue of `backlog`, for when
/// systemd passes none. SO_REUSEADDR is set as std's `bind` sets it (a restart can bind while
/// the last run's connections sit in TIME_WAIT); SO_REUSEPORT when `reuse_port`, so processes
/// that all set it share the port and the kernel spreads connections between them (socket(7)).
/// Both must be set before `bind`, which std cannot do.
pub fn bind(
    addr: std::net::SocketAddr,
    reuse_port: bool,
    backlog: i32,
) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_strings() {
        assert_eq!(Notify::Ready.to_string(), "READY=1");
        assert_eq!(Notify::Stopping.to_string(), "STOPPING=1");
        assert_eq!(Notify::Watchdog.to_string(), "WATCHDOG=1");
        assert_eq!(Notify::Status("a\nb").to_string(), "STATUS=a b");
    }
}
