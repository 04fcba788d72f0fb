//! The `oidc-dtr-web` binary's command line.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_oidc-dtr-web"))
}

#[test]
fn help_exits_zero_and_describes_every_flag() {
    let out = bin().arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--port",
        "--interval",
        "--cadence",
        "--expires-in",
        "--state-dir",
        "--help",
        "--version",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    assert!(help.contains("expires"), "{help}");
}

#[test]
fn a_bad_flag_is_a_usage_error() {
    let out = bin().arg("--port").arg("not-a-number").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--port"), "{err}");
}

#[test]
fn a_busy_port_is_reported_in_words() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = bin().arg("--port").arg(port.to_string()).output().unwrap();
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("port {port} is in use; pick another with --port")),
        "{err}"
    );
    assert!(
        !err.contains("Os {") && !err.contains("kind:"),
        "no Debug output: {err}"
    );
}
