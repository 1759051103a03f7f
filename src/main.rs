//! The `wsrelay` binary: flags, the open-file limit, the listener, then the event loop.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use wsrelay::app::App;
use wsrelay::config::Config;
use wsrelay::event_loop::Server;
use wsrelay::{daemon, log};

fn main() -> ExitCode {
    let config = Config::parse();
    if let Err(e) = config.validate() {
        eprintln!("wsrelay: error: {e}");
        return ExitCode::from(2);
    }
    match daemon::raise_nofile_limit() {
        Ok(n) => log!(Debug, "open-file limit {n}"),
        Err(e) => log!(Warn, "could not raise the open-file limit: {e}"),
    }
    let listener = match std::net::TcpListener::bind(config.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("wsrelay: error: --listen {}: {e}", config.listen);
            return ExitCode::from(1);
        }
    };
    let app = App::new(config.mode, !config.no_echo_sender);
    let shutdown = Duration::from_secs(config.shutdown_timeout);
    let mut server = match Server::new(listener, app, config.settings(), shutdown) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("wsrelay: error: {e}");
            return ExitCode::from(1);
        }
    };
    match server.local_addr() {
        Ok(addr) => log!(
            Info,
            "listening on ws://{addr}/ (mode {})",
            format!("{:?}", config.mode).to_lowercase()
        ),
        Err(e) => log!(Warn, "listening (address unknown: {e})"),
    }
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log!(Error, "event loop: {e}");
            ExitCode::from(1)
        }
    }
}
