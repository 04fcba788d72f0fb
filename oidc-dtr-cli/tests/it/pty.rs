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
