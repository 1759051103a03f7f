//! Measuring: a latency histogram, the shared clock stamped into payloads, and process CPU
//! and memory read from `/proc`.

use std::time::{SystemTime, UNIX_EPOCH};

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

/// Buckets: exact below 128 µs, then 64 per power of two (under 1.6 % error), up to 2^63.
const BUCKETS: usize = 64 * 64;

/// A latency histogram in microseconds that merges across processes.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self {
            counts: vec![0; BUCKETS],
        }
    }

    /// Records one value.
    pub fn record(&mut self, micros: u64) {
        if let Some(c) = self.counts.get_mut(bucket(micros)) {
            *c += 1;
        }
    }

    /// Values recorded.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The value at quantile `q` (0..=1), as the top of its bucket, in µs.
    pub fn quantile(&self, q: f64) -> u64 {
        let total = self.total();
        if total == 0 {
            return 0;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return floor(i + 1).saturating_sub(1);
            }
        }
        0
    }

    /// Sparse text form: `index:count,…`.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        for (i, &c) in self.counts.iter().enumerate().filter(|(_, c)| **c > 0) {
            if !s.is_empty() {
                s.push(',');
            }
            s.push_str(&format!("{i}:{c}"));
        }
        s
    }

    /// Adds a histogram in [`Histogram::encode`]'s form.
    pub fn merge_encoded(&mut self, text: &str) {
        for pair in text.split(',').filter(|p| !p.is_empty()) {
            let Some((i, c)) = pair.split_once(':') else {
                continue;
            };
            if let (Ok(i), Ok(c)) = (i.parse::<usize>(), c.parse::<u64>())
                && let Some(slot) = self.counts.get_mut(i)
            {
                *slot += c;
            }
        }
    }
}

fn bucket(v: u64) -> usize {
    if v < 128 {
        return v as usize;
    }
    let shift = 63 - v.leading_zeros() as usize - 6;
    (shift << 6) + (v >> shift) as usize
}

/// The smallest value in bucket `i`.
fn floor(i: usize) -> u64 {
    if i < 128 {
        return i as u64;
    }
    let shift = i / 64 - 1;
    ((i - shift * 64) as u64) << shift
}

/// Nanoseconds on the wall clock: every process on the machine reads the same one, so a
/// receiver can subtract a sender's stamp (an NTP step during a run would show as an outlier).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// CPU time (user + system) a process has used, in seconds; `None` once it is gone.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    // utime and stime are fields 14 and 15 of stat(5); `rest` starts at field 3.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / ticks_per_sec())
}

fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    #[allow(unsafe_code)]
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Resident set size of a process in bytes (`VmRSS` in `/proc/PID/status`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Per core, (busy, total) clock ticks since boot, from `/proc/stat`. Busy includes the time
/// the kernel spends in interrupts and softirqs (on loopback, much of TCP's receive path),
/// which no process's `utime`/`stime` is charged with.
pub fn core_ticks() -> Vec<(u64, u64)> {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return Vec::new();
    };
    stat.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            let t: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|v| v.parse().ok())
                .collect();
            // user nice system idle iowait irq softirq steal (proc(5)); a VM's steal is time
            // another guest ran here: not busy for anyone on this machine.
            let at = |i: usize| t.get(i).copied().unwrap_or(0);
            let total: u64 = (0..8).map(at).sum();
            let busy = at(0) + at(1) + at(2) + at(5) + at(6);
            (busy, total)
        })
        .collect()
}

/// The one core a process may run on (`taskset -c N`), if it is pinned to exactly one.
pub fn pinned_core(pid: u32) -> Option<usize> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
        .trim();
    list.parse().ok()
}

/// Files a process has open (entries of `/proc/PID/fd`).
pub fn open_files(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_floors_invert_them() {
        let mut last = 0;
        for v in (0..100_000u64).chain([1 << 30, 1 << 40]) {
            let b = bucket(v);
            assert!(b >= last && b < BUCKETS);
            assert!(floor(b) <= v && v < floor(b + 1), "{v}");
            last = b;
        }
    }

    #[test]
    fn quantiles_and_merge() {
        let mut h = Histogram::new();
        for v in 1..=1000 {
            h.record(v);
        }
        let mut m = Histogram::new();
        m.merge_encoded(&h.encode());
        assert_eq!(m.total(), 1000);
        let p50 = m.quantile(0.5);
        assert!((490..=510).contains(&p50), "{p50}");
        assert!(m.quantile(1.0) >= 990);
    }
}
