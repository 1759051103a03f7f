//! Verifies that a bad flag or `WSRELAY_…` variable stops the server before it binds: exit
//! status 2 and one line naming the flag and the bad value.

use std::net::TcpListener;
use std::process::{Command, Stdio};

/// Runs wsrelay with `args` and `env`; returns (exit code, stderr).
fn run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    // Held, so a server that got as far as binding it would say "address in use" instead.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_wsrelay"))
        .args(["--listen", &listen])
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run wsrelay");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn bad_values_name_the_flag_and_the_value() {
    let cases: &[(&[&str], &str, &str)] = &[
        (&["--max-connections", "0"], "--max-connections", "0"),
        (
            &["--max-connections-per-ip", "0"],
            "--max-connections-per-ip",
            "0",
        ),
        (&["--ping-interval", "0"], "--ping-interval", "0"),
        (&["--pong-timeout", "100000"], "--pong-timeout", "100000"),
        (&["--allow-origin", "ftp://x"], "--allow-origin", "ftp://x"),
        (
            &["--allow-origin", "https://a.example/path"],
            "--allow-origin",
            "https://a.example/path",
        ),
        (&["--log-level", "loud"], "--log-level", "loud"),
        (
            &["--trusted-proxy", "10.0.0.0/33"],
            "--trusted-proxy",
            "10.0.0.0/33",
        ),
        (
            &["--trusted-proxy", "proxy.example"],
            "--trusted-proxy",
            "proxy.example",
        ),
        (&["--max-connections", "many"], "--max-connections", "many"),
    ];
    for (args, flag, value) in cases {
        let (code, stderr) = run(args, &[]);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(flag) && stderr.contains(value),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("in use"), "{args:?} bound first: {stderr}");
    }
}

#[test]
fn bad_environment_values_name_the_flag() {
    let (code, stderr) = run(&[], &[("WSRELAY_MAX_CONNECTIONS_PER_IP", "-1")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--max-connections-per-ip") && stderr.contains("-1"),
        "{stderr}"
    );
    let (code, stderr) = run(
        &[],
        &[("WSRELAY_TRUSTED_PROXY", "10.0.0.5,10.1.0.0/16,x/8")],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--trusted-proxy") && stderr.contains("x/8"),
        "{stderr}"
    );
    let (code, stderr) = run(&[], &[("WSRELAY_ALLOW_ORIGIN", "https://ok.example,bad")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--allow-origin") && stderr.contains("bad"),
        "{stderr}"
    );
}
