//! The live progress display, in a pseudo-terminal.

use std::process::Command;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_live_in_a_terminal() {
    let env = Env::new(|_| {}).await;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dtr"));
    cmd.env("DTR_STATE_DIR", env.state_dir())
        .env("XDG_CONFIG_HOME", env.dir.path().join("config"))
        .env("TERM", "xterm")
        .args([
            "verify",
            "--issuer",
            env.op.issuer(),
            "--client-id",
            MockOp::PUBLIC_CLIENT_ID,
            "--no-browser",
        ]);
    let mut session = rexpect::session::spawn_command(cmd, Some(HANG.as_millis() as u64)).unwrap();
    let url = tokio::task::block_in_place(|| {
        session
            .exp_regex(r"http://127\.0\.0\.1:\d+/authorize\?[^\s]+")
            .unwrap()
            .1
    });
    let url = url::Url::parse(&url).unwrap();
    assert_eq!(play_browser(&env.op, &url).await, 200);
    // The live line: the OP's text, the time to the next poll, the deadline.
    tokio::task::block_in_place(|| {
        session.exp_string("Documents received").unwrap();
        session.exp_string("next poll in").unwrap();
        session.exp_string("deadline").unwrap();
    });
    env.op.approve(&env.the_auth().deferred_auth_id);
    let before = tokio::task::block_in_place(|| {
        session
            .exp_string("the OP approved and the ID token was validated")
            .unwrap()
    });
    // The status word is green on a terminal.
    assert!(
        before.ends_with("\x1b[1;32mVerified\x1b[0m: "),
        "{before:?}"
    );
    // The live line: the times first, the OP's text last.
    assert!(before.contains("elapsed "), "{before:?}");
    // The spinner redraws in place (carriage returns / escape sequences).
    assert!(before.contains('\r') || before.contains('\x1b'));
    let rest = tokio::task::block_in_place(|| session.exp_eof().unwrap());
    // A terminal gets the human summary, not JSON.
    assert!(rest.contains("subject:"), "{rest}");
    let status = session.process.wait().unwrap();
    assert!(
        matches!(status, rexpect::process::wait::WaitStatus::Exited(_, 0)),
        "{status:?}"
    );
}

/// A `BROWSER` that records the URLs it is asked to open.
fn recording_browser(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let log = dir.join("opened.txt");
    let script = dir.join("browser.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho \"$1\" >> '{}'\n", log.display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interaction_uris_are_shown_and_opened_in_the_browser() {
    const CONTINUE: &str = "https://op.example/continue/abc";
    let env = Env::new(|c| c.profiles = OpProfiles::Ietf).await;
    let (script, log) = recording_browser(env.dir.path());
    let opened = || std::fs::read_to_string(&log).unwrap_or_default();
    // Without a terminal: printed, never opened.
    let mut c = env.dtr();
    c.env("BROWSER", &script).args([
        "verify",
        "--issuer",
        env.op.issuer(),
        "--client-id",
        MockOp::PUBLIC_CLIENT_ID,
        "--draft",
        "ietf",
    ]);
    let mut run = Running::spawn(c);
    let url = run.auth_url().await;
    assert_eq!(play_browser(&env.op, &url).await, 200);
    run.line_with("is pending").await;
    env.op
        .set_interaction(&env.the_auth().deferred_auth_id, Some(CONTINUE));
    run.line_with("The OP needs you at this URL").await;
    run.line_with(CONTINUE).await;
    env.op.approve(&env.the_auth().deferred_auth_id);
    assert_eq!(run.finish().await.code, Some(0));
    assert_eq!(opened(), "", "nothing is opened without a terminal");

    // In a terminal with a BROWSER: the authorization URL, then the
    // interaction URI, are opened.
    let env = Env::new(|c| c.profiles = OpProfiles::Ietf).await;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dtr"));
    cmd.env("DTR_STATE_DIR", env.state_dir())
        .env("XDG_CONFIG_HOME", env.dir.path().join("config"))
        .env("TERM", "xterm")
        .env("BROWSER", &script)
        .args([
            "verify",
            "--issuer",
            env.op.issuer(),
            "--client-id",
            MockOp::PUBLIC_CLIENT_ID,
            "--draft",
            "ietf",
        ]);
    let mut session = rexpect::session::spawn_command(cmd, Some(HANG.as_millis() as u64)).unwrap();
    let url = tokio::task::block_in_place(|| {
        session
            .exp_regex(r"http://127\.0\.0\.1:\d+/authorize\?[^\s]+")
            .unwrap()
            .1
    });
    tokio::task::block_in_place(|| session.exp_string("(opened in your browser)").unwrap());
    let url = url::Url::parse(&url).unwrap();
    assert_eq!(play_browser(&env.op, &url).await, 200);
    tokio::task::block_in_place(|| session.exp_string("is ").unwrap());
    while env.op.authentications().is_empty() {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    env.op
        .set_interaction(&env.the_auth().deferred_auth_id, Some(CONTINUE));
    tokio::task::block_in_place(|| {
        session.exp_string("The OP needs you at this URL").unwrap();
        session.exp_string(CONTINUE).unwrap();
        session.exp_string("(opened in your browser)").unwrap();
    });
    env.op.approve(&env.the_auth().deferred_auth_id);
    tokio::task::block_in_place(|| session.exp_eof().unwrap());
    let lines: Vec<String> = opened().lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].contains("/authorize?"), "{lines:?}");
    assert_eq!(lines[1], CONTINUE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_poll_shows_its_cause_and_next_attempt_in_the_live_line() {
    let env = Env::new(|_| {}).await;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dtr"));
    cmd.env("DTR_STATE_DIR", env.state_dir())
        .env("XDG_CONFIG_HOME", env.dir.path().join("config"))
        .env("TERM", "xterm")
        .args([
            "verify",
            "--issuer",
            env.op.issuer(),
            "--client-id",
            MockOp::PUBLIC_CLIENT_ID,
            "--no-browser",
        ]);
    let mut session = rexpect::session::spawn_command(cmd, Some(HANG.as_millis() as u64)).unwrap();
    let url = tokio::task::block_in_place(|| {
        session
            .exp_regex(r"http://127\.0\.0\.1:\d+/authorize\?[^\s]+")
            .unwrap()
            .1
    });
    let url = url::Url::parse(&url).unwrap();
    assert_eq!(play_browser(&env.op, &url).await, 200);
    while env.op.authentications().is_empty() {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    env.op.inject_faults([
        oidc_dtr_testkit::Fault::service_unavailable(4),
        oidc_dtr_testkit::Fault::service_unavailable(4),
    ]);
    // The live line: the cause, the countdown to the next attempt, with the
    // elapsed time and the deadline still there.
    let (_, line) = tokio::task::block_in_place(|| {
        session
            .exp_regex(
                // (rexpect reads bytes as Latin-1: " · " is " Â· " here)
                r"elapsed [0-9hms]+ \S+ retrying after HTTP 503 \S+ (next (attempt )?)?in \d+s \S+ deadline in [0-9hms]+",
            )
            .unwrap()
    });
    let line = line.replace("Â·", "·");
    assert!(line.chars().count() <= 78, "{line:?}");
    while env.op.pending_faults() > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    env.op.approve(&env.the_auth().deferred_auth_id);
    tokio::task::block_in_place(|| {
        session
            .exp_string("the OP approved and the ID token was validated")
            .unwrap()
    });
    tokio::task::block_in_place(|| session.exp_eof().unwrap());
}

#[tokio::test]
async fn retries_and_refused_interaction_uris_are_explained_without_a_terminal() {
    let env = Env::new(|c| c.profiles = OpProfiles::Ietf).await;
    let mut c = env.dtr();
    c.args([
        "verify",
        "--issuer",
        env.op.issuer(),
        "--client-id",
        MockOp::PUBLIC_CLIENT_ID,
        "--draft",
        "ietf",
    ]);
    let mut run = Running::spawn(c);
    let url = run.auth_url().await;
    assert_eq!(play_browser(&env.op, &url).await, 200);
    run.line_with("is pending").await;
    let id = env.the_auth().deferred_auth_id;
    env.op
        .set_interaction(&id, Some("http://op.example/continue?otp=s3cret"));
    let line = run.line_with("refuses to show").await;
    assert!(line.contains("not https"), "{line}");
    assert!(!line.contains("s3cret"), "{line}");
    env.op.set_interaction(&id, None);
    env.op
        .inject_faults([oidc_dtr_testkit::Fault::service_unavailable(2)]);
    let line = run.line_with("Poll failed").await;
    assert!(line.contains("server error (HTTP 503)"), "{line}");
    assert!(line.contains("retrying in "), "{line}");
    env.op.approve(&id);
    assert_eq!(run.finish().await.code, Some(0));
}
