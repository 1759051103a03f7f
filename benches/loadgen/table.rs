//! The comparison table: RESULT lines in, one Markdown row per scenario out, our server
//! against each other label, with the targets where a row has one.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

type Fields = BTreeMap<String, String>;

/// Prints the table for the RESULT lines in `file`; `ours` labels our server.
pub fn print(file: &Path, ours: &str) -> io::Result<()> {
    let text = std::fs::read_to_string(file)?;
    // (row key, label) -> fields; a later line for the same pair replaces an earlier one.
    let mut rows: BTreeMap<(u8, String), BTreeMap<String, Fields>> = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("RESULT ")) {
        let f: Fields = line
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (Some(label), Some(key)) = (f.get("label").cloned(), row_key(&f)) else {
            continue;
        };
        rows.entry(key).or_default().insert(label, f);
    }
    println!(
        "| scenario | metric | {ours} | peer | {ours} vs peer | target | met | server CPU % \
         ({ours} / peer) | loadgen CPU % ({ours} / peer) | lost / reordered / closed \
         ({ours} ; peer) | bound by ({ours} ; peer) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for ((_, name), by_label) in &rows {
        let Some(us) = by_label.get(ours) else {
            continue;
        };
        let peers: Vec<(&String, &Fields)> = by_label
            .iter()
            .filter(|(l, _)| l.as_str() != ours)
            .collect();
        if peers.is_empty() {
            println!("{}", line(name, us, None, true));
        }
        for (label, them) in peers {
            let with_targets = label.as_str() == TARGET_PEER;
            let row = line(&format!("{name} vs {label}"), us, Some(them), with_targets);
            println!("{row}");
        }
    }
    Ok(())
}

/// Sort order and name of a row.
fn row_key(f: &Fields) -> Option<(u8, String)> {
    let get = |k: &str| f.get(k).map(String::as_str).unwrap_or("?");
    let n = get("n");
    let deflate = get("deflate") == "1";
    let json = if get("json") == "1" { " JSON" } else { "" };
    Some(match get("scenario") {
        "idle" if deflate => (4, format!("idle {n} conns, permessage-deflate")),
        "idle" => (0, format!("idle {n} conns")),
        "fanout" if deflate => {
            let mode = if get("mode") == "sat" {
                "saturated"
            } else {
                "open loop"
            };
            (
                5,
                format!("fanout {n} subs, {} B{json}, deflate, {mode}", get("size")),
            )
        }
        "fanout" if get("mode") == "sat" => (
            1,
            format!("fanout {n} subs, {} B{json}, saturated", get("size")),
        ),
        "fanout" => (2, format!("fanout {n} subs, {} B, open loop", get("size"))),
        "echo" => (3, format!("echo {n} conns, {} B", get("size"))),
        _ => return None,
    })
}

fn num(f: &Fields, k: &str) -> f64 {
    f.get(k).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
}

/// The peer the targets are stated against; other peers (an older wsrelay) get none.
const TARGET_PEER: &str = "ws";

fn line(name: &str, us: &Fields, them: Option<&Fields>, with_targets: bool) -> String {
    let scenario = us.get("scenario").map(String::as_str).unwrap_or("");
    let mode = us.get("mode").map(String::as_str).unwrap_or("");
    let (n, size) = (num(us, "n"), num(us, "size"));
    let deflate = us.get("deflate").is_some_and(|d| d == "1");
    let ratio = |k: &str| them.map(|t| num(us, k) / num(t, k));
    let (metric, ours_cell, peer_cell, ratio_cell, target, met) = match (scenario, mode) {
        ("idle", _) => {
            let b = num(us, "bytes_per_conn");
            // With the extension negotiated, idle connections must cost what they do without.
            let (target, met) = if n == 19_000.0 || deflate {
                ("≤ 300 B".to_string(), Some(b <= 300.0))
            } else {
                (String::new(), None)
            };
            (
                "RSS per connection",
                format!("{b:.0} B"),
                them.map(|t| format!("{:.0} B", num(t, "bytes_per_conn"))),
                ratio("bytes_per_conn").map(|r| format!("{r:.3}×")),
                target,
                met,
            )
        }
        ("fanout", "sat") => {
            let r = ratio("per_sec");
            let want = match (n as u64, size as u64, deflate) {
                (1000, 1024, true) => Some(50.0),
                (1000, 32, false) => Some(25.0),
                (10_000, 32, false) => Some(10.0),
                (1000, 1024, false) => Some(15.0),
                _ => None,
            };
            (
                "deliveries/s",
                format!("{:.0}", num(us, "per_sec")),
                them.map(|t| format!("{:.0}", num(t, "per_sec"))),
                r.map(|r| format!("{r:.1}×")),
                want.map(|w| format!("≥ {w}×")).unwrap_or_default(),
                want.and_then(|w| r.map(|r| r >= w)),
            )
        }
        ("fanout", _) => {
            let r = ratio("p99_us");
            let want = (n == 10_000.0 && size == 32.0).then_some(0.6);
            let lat = |f: &Fields| {
                format!(
                    "p50 {:.1} / p99 {:.1} / p99.9 {:.1} ms",
                    num(f, "p50_us") / 1000.0,
                    num(f, "p99_us") / 1000.0,
                    num(f, "p999_us") / 1000.0
                )
            };
            (
                "latency",
                lat(us),
                them.map(lat),
                r.map(|r| format!("p99 {r:.2}×")),
                want.map(|w| format!("p99 ≤ {w}×")).unwrap_or_default(),
                want.and_then(|w| r.map(|r| r <= w)),
            )
        }
        _ => (
            "round trips/s",
            format!("{:.0}", num(us, "per_sec")),
            them.map(|t| format!("{:.0}", num(t, "per_sec"))),
            ratio("per_sec").map(|r| format!("{r:.1}×")),
            String::new(),
            None,
        ),
    };
    // A count a scenario does not report is zero.
    let count = |f: &Fields, k: &str| f.get(k).map_or(0.0, |_| num(f, k));
    let clean = |f: &Fields| count(f, "lost") == 0.0 && count(f, "reordered") == 0.0;
    let (target, met) = if with_targets {
        (target, met)
    } else {
        (String::new(), None)
    };
    let met = match met {
        _ if scenario != "idle" && !clean(us) => "**no** (lost)",
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "",
    };
    let pair = |k: &str| match them {
        Some(t) => format!("{:.0} / {:.0}", num(us, k), num(t, k)),
        None => format!("{:.0}", num(us, k)),
    };
    let losses = |f: &Fields| {
        format!(
            "{:.0}/{:.0}/{:.0}",
            count(f, "lost"),
            count(f, "reordered"),
            count(f, "closed")
        )
    };
    let loss_cell = if scenario == "idle" {
        String::new()
    } else {
        match them {
            Some(t) => format!("{} ; {}", losses(us), losses(t)),
            None => losses(us),
        }
    };
    let bound = |f: &Fields| bound_by(scenario, mode, f);
    let bound_cell = match them {
        Some(t) => format!("{} ; {}", bound(us), bound(t)),
        None => bound(us).to_string(),
    };
    let row = format!(
        "| {name} | {metric} | {ours_cell} | {} | {} | {target} | {met} | {} | {} | {loss_cell} \
         | {bound_cell} |",
        peer_cell.unwrap_or_default(),
        ratio_cell.unwrap_or_default(),
        pair("server_cpu"),
        pair("loadgen_cpu"),
    );
    if scenario != "fanout" || !us.contains_key("wire_per_delivery") {
        return row;
    }
    // What a delivery cost on the wire: frame header and payload, as the subscribers read it.
    let wire = |f: &Fields| format!("{:.0} B", num(f, "wire_per_delivery"));
    format!(
        "{row}\n| {name} | wire bytes/delivery | {} | {} | {} | | | | | | |",
        wire(us),
        them.map(wire).unwrap_or_default(),
        ratio("wire_per_delivery")
            .map(|r| format!("{r:.2}×"))
            .unwrap_or_default(),
    )
}

/// What limited a row: for throughput, a process near a full core (uWS's advice: check the
/// server is at 100 % CPU, or you are benchmarking your client), or neither; for latency, the
/// server CPU each delivery cost.
fn bound_by(scenario: &str, mode: &str, f: &Fields) -> String {
    let busy = 90.0;
    let throughput = matches!((scenario, mode), ("fanout", "sat") | ("echo", _));
    if throughput && num(f, "server_cpu") >= busy {
        "server CPU".into()
    } else if throughput && num(f, "loadgen_cpu") >= busy {
        "loadgen CPU".into()
    } else if throughput {
        "neither at 90 %".into()
    } else if scenario == "fanout" {
        let per = num(f, "server_cpu") / 100.0 * num(f, "secs") / num(f, "deliveries");
        format!("server {:.1} µs CPU/delivery", per * 1e6)
    } else {
        String::new()
    }
}
