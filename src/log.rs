//! One line per event on stderr, filtered by level; under journald each line starts with its
//! syslog priority (`<3>` error, `<4>` warning, `<6>` info, `<7>` debug; sd-daemon(3)), so
//! `journalctl -p warning` works.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

/// How much to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
#[repr(u8)]
pub enum Level {
    /// Failures of the server itself.
    Error = 0,
    /// Things an operator should look at.
    Warn = 1,
    /// Start, stop and other rare events.
    Info = 2,
    /// Per-connection events (never per message).
    Debug = 3,
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);
static JOURNAL: AtomicBool = AtomicBool::new(false);

/// Starts every line with its syslog priority (for journald).
pub fn set_journal(on: bool) {
    JOURNAL.store(on, Ordering::Relaxed);
}

/// The line prefix for `level`: its priority under journald, else nothing.
pub fn prefix(level: Level) -> &'static str {
    if !JOURNAL.load(Ordering::Relaxed) {
        return "";
    }
    match level {
        Level::Error => "<3>",
        Level::Warn => "<4>",
        Level::Info => "<6>",
        Level::Debug => "<7>",
    }
}

/// Sets the most verbose level that is printed.
pub fn set_level(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

/// Whether lines at `level` are printed.
pub fn enabled(level: Level) -> bool {
    level as u8 <= LEVEL.load(Ordering::Relaxed)
}

/// Prints one log line at a level: `log!(Info, "listening on {addr}")`.
#[macro_export]
macro_rules! log {
    ($level:ident, $($arg:tt)*) => {
        if $crate::log::enabled($crate::log::Level::$level) {
            eprintln!(
                "{}wsrelay: {}: {}",
                $crate::log::prefix($crate::log::Level::$level),
                stringify!($level).to_ascii_lowercase(),
                format_args!($($arg)*)
            );
        }
    };
}
