//! What a new user meets: honest cancellation, terminal-safe output,
//! exit codes as documented, private files, colour, help, the demo's
//! endings, UserInfo.

use crate::flows::started;
use crate::support::*;

/// Characters that must never reach a terminal raw: a bidi override, a C1
/// CSI (U+009B), ESC, BEL.
const EVIL: &str = "ok\u{202E}gnp.exe\u{9b}31m\u{1b}[2J\u{7}";

fn assert_terminal_safe(what: &str, text: &str) {
    for bad in ['\u{202E}', '\u{9b}', '\u{1b}', '\u{7}'] {
        assert!(
            !text.contains(bad),
            "{what} holds U+{:04X}: {text:?}",
            u32::from(bad)
        );
    }
}

#[tokio::test]
async fn cancel_without_a_way_to_tell_the_op_changes_nothing() {
    let env = Env::new(|_| {}).await;
    let (run, id) = started(&env, &["--no-wait"]).await;
    assert_eq!(run.finish().await.code, Some(7));
    // No cancellation endpoint: exit 2, and nothing changed anywhere.
    let c = env.run(&["cancel", &id]).await;
    assert_eq!(c.code, Some(2), "{c:?}");
    assert!(c.stderr.contains("--cancel-endpoint"), "{}", c.stderr);
    assert!(c.stderr.contains("--local-only"), "{}", c.stderr);
    assert!(c.stderr.contains("still pending"), "{}", c.stderr);
    assert_eq!(env.the_auth().state, AuthState::Pending);
    assert_eq!(
        env.run(&["list", "--json"]).await.json()[0]["status"],
        "pending"
    );
    // So the OP can still be told, later.
    let endpoint = env.op.url("/df-authentication/cancel").to_string();
    let c = env
        .run(&["cancel", &id, "--cancel-endpoint", &endpoint])
        .await;
    assert_eq!(c.code, Some(0), "{c:?}");
    assert_eq!(env.the_auth().state, AuthState::Cancelled);
    assert_eq!(
        env.run(&["list", "--json"]).await.json()[0]["status"],
        "cancelled"
    );
}

#[tokio::test]
async fn cancel_local_only_says_the_op_was_not_told() {
    let env = Env::new(|_| {}).await;
    let (run, id) = started(&env, &["--no-wait"]).await;
    assert_eq!(run.finish().await.code, Some(7));
    let c = env.run(&["cancel", &id, "--local-only"]).await;
    assert_eq!(c.code, Some(0), "{c:?}");
    assert!(c.stderr.contains("the OP was not told"), "{}", c.stderr);
    assert_eq!(
        env.the_auth().state,
        AuthState::Pending,
        "the OP was not told"
    );
    assert_eq!(
        env.run(&["list", "--json"]).await.json()[0]["status"],
        "cancelled"
    );
}

#[tokio::test]
async fn op_texts_cannot_drive_the_terminal_in_any_mode() {
    let env = Env::new(|c| {
        c.progress_script = vec![format!("Documents {EVIL}")];
        c.extra_claims.insert("name".into(), EVIL.into());
    })
    .await;
    let (mut run, id) = started(&env, &["--scope", "profile"]).await;
    let line = run.line_with("OP: Documents").await;
    assert_terminal_safe("the progress line", &line);
    env.op.approve(&env.the_auth().deferred_auth_id);
    let done = run.finish().await;
    assert_eq!(done.code, Some(0), "{done:?}");
    // JSON: escaped as \uXXXX, the same string for a JSON reader.
    assert_terminal_safe("JSON stdout", &done.stdout);
    assert_terminal_safe("stderr", &done.stderr);
    assert!(
        done.stdout.contains("\\u202e") && done.stdout.contains("\\u009b"),
        "{}",
        done.stdout
    );
    assert_eq!(done.json()["claims"]["name"], EVIL);
    let show = env.run(&["show", &id, "--json"]).await;
    assert_terminal_safe("show --json", &show.stdout);
    assert_eq!(show.json()["claims"]["name"], EVIL);
    // The human summary in a terminal: visible escapes.
    let (code, out) = in_terminal(&env, &["show", &id], &[]).await;
    assert_eq!(code, 0, "{out}");
    let out = strip_sgr(&out);
    assert_terminal_safe("the human summary", &out);
    assert!(
        out.contains("name:      ok\\u{202e}gnp.exe\\u{9b}31m\\u{1b}[2J\\u{7}"),
        "{out}"
    );

    // A denial's description, through every mode.
    let env = Env::new(|_| {}).await;
    let (mut run, id) = started(&env, &[]).await;
    run.line_with("OP: ").await;
    env.op.deny(&env.the_auth().deferred_auth_id, Some(EVIL));
    let done = run.finish().await;
    assert_eq!(done.code, Some(3), "{done:?}");
    assert_terminal_safe("JSON stdout", &done.stdout);
    let (code, out) = in_terminal(&env, &["show", &id], &[]).await;
    assert_eq!(code, 3, "{out}");
    assert_terminal_safe("the denial", &strip_sgr(&out));
}

#[tokio::test]
async fn verified_claims_refused_or_missing_exit_8() {
    for fault in [
        AssuranceFault::DisallowedTrustFramework,
        AssuranceFault::MisplacedVerifiedClaims,
    ] {
        let env = Env::new(|c| c.assurance_fault = Some(fault)).await;
        let (mut run, id) = started(
            &env,
            &[
                "--verified-claims",
                "given_name",
                "--trust-framework",
                "eidas",
            ],
        )
        .await;
        run.line_with("OP: ").await;
        env.op.approve(&env.the_auth().deferred_auth_id);
        let done = run.finish().await;
        assert_eq!(done.code, Some(8), "{fault:?}: {done:?}");
        assert_eq!(done.json()["status"], "tokens");
        assert_eq!(env.run(&["show", &id]).await.code, Some(8), "{fault:?}");
    }
    // Without --verified-claims, no verified claims is no failure.
    let env = Env::new(|_| {}).await;
    let (mut run, _) = started(&env, &[]).await;
    run.line_with("OP: ").await;
    env.op.approve(&env.the_auth().deferred_auth_id);
    assert_eq!(run.finish().await.code, Some(0));
    // Documented.
    let help = env.run(&["--help"]).await;
    assert!(
        help.stdout
            .contains("\n  8    tokens received, but the verified claims"),
        "{}",
        help.stdout
    );
}

#[tokio::test]
async fn a_secret_file_others_can_read_is_refused_and_state_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new(|_| {}).await;
    let secret = env.dir.path().join("secret");
    std::fs::write(&secret, MockOp::CLIENT_SECRET).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let d = env
        .run(&[
            "verify",
            "--issuer",
            env.op.issuer(),
            "--client-id",
            MockOp::CLIENT_ID,
            "--client-secret-file",
            secret.to_str().unwrap(),
            "--no-browser",
        ])
        .await;
    assert_eq!(d.code, Some(2), "{d:?}");
    assert!(
        d.stderr
            .contains(&format!("chmod 600 {}", secret.display())),
        "{}",
        d.stderr
    );
    assert!(!d.stderr.contains(MockOp::CLIENT_SECRET));
    assert!(env.op.requests_to(Endpoint::Authorize).is_empty());

    // Every file dtr keeps is owner-only, whatever the umask.
    let (run, _) = started(&env, &["--no-wait"]).await;
    assert_eq!(run.finish().await.code, Some(7));
    let all = files(&env.state_dir());
    assert!(
        all.iter()
            .any(|p| p.extension().is_some_and(|e| e == "redb"))
    );
    for f in all {
        let mode = std::fs::metadata(&f).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o077,
            0,
            "{} has mode {:o}",
            f.display(),
            mode & 0o777
        );
    }
}

#[tokio::test]
async fn the_draft_is_named_draft_and_exit_codes_follow_the_table() {
    let env = Env::new(|_| {}).await;
    let d = env
        .run(&[
            "verify",
            "--issuer",
            env.op.issuer(),
            "--client-id",
            "c",
            "--draft",
            "foo",
        ])
        .await;
    assert_eq!(d.code, Some(2), "{d:?}");
    assert!(d.stderr.contains("unknown draft `foo`"), "{}", d.stderr);
    assert!(!d.stderr.contains("profile"), "{}", d.stderr);
    let mut c = env.dtr();
    c.args(["demo", "--no-decision"]).env("DTR_DRAFT", "nope");
    let out = c.output().await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown draft `nope`"));
    // A --config that does not exist is a configuration error: 2.
    let d = env
        .run(&[
            "--config",
            "/nonexistent/dtr.toml",
            "verify",
            "--issuer",
            env.op.issuer(),
            "--client-id",
            "c",
        ])
        .await;
    assert_eq!(d.code, Some(2), "{d:?}");
    assert!(d.stderr.contains("--config"), "{}", d.stderr);
    // The table says what 2 covers, the acknowledged case included.
    let help = env.run(&["--help"]).await;
    assert!(
        help.stdout.contains("a verification already acknowledged"),
        "{}",
        help.stdout
    );
    assert!(help.stdout.contains("NO_COLOR"), "{}", help.stdout);
}

#[tokio::test]
async fn verify_help_is_grouped_with_examples() {
    let env = Env::new(|_| {}).await;
    let h = env.run(&["verify", "--help"]).await;
    assert_eq!(h.code, Some(0));
    let text = h.stdout;
    for heading in [
        "Client:",
        "Request:",
        "Identity assurance",
        "Flow:",
        "Global options:",
        "Examples:",
    ] {
        assert!(text.contains(heading), "no {heading}: {text}");
    }
    // The global flags are in their own group, after verify's own.
    let global = text.find("Global options:").unwrap();
    assert!(text.find("--state-dir").unwrap() > global, "{text}");
    assert!(text.find("--no-wait").unwrap() < global, "{text}");
    assert!(text.find("--verified-claims").unwrap() < global, "{text}");
    let c = env.run(&["cancel", "--help"]).await;
    assert!(
        c.stdout.contains("--local-only") && c.stdout.contains("Examples:"),
        "{}",
        c.stdout
    );
    // The high-assurance options have their group, before the global
    // ones; the commands that talk to the OP again take the TLS files.
    let high = text
        .find("High assurance (FAPI 2.0, PAR, JAR, mTLS):")
        .unwrap();
    for flag in [
        "--fapi2",
        "--par",
        "--request-object",
        "--client-cert",
        "--client-key",
        "--ca",
    ] {
        let at = text
            .find(&format!("  {flag}\n"))
            .or_else(|| text.find(&format!("  {flag} <")))
            .unwrap_or_else(|| panic!("no {flag}: {text}"));
        assert!(at > high && at < global, "{flag}: {text}");
    }
    for cmd in ["wait", "cancel", "userinfo"] {
        let h = env.run(&[cmd, "--help"]).await;
        assert!(
            h.stdout.contains("--client-cert") && h.stdout.contains("--ca"),
            "{cmd}: {}",
            h.stdout
        );
    }
}

#[tokio::test]
async fn list_fits_100_columns_with_colour_only_on_a_terminal() {
    let env = Env::new(|_| {}).await;
    let (run, _) = started(&env, &["--no-wait"]).await;
    assert_eq!(run.finish().await.code, Some(7));
    let (code, out) = in_terminal(&env, &["list"], &[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\x1b[1;33mpending\x1b[0m"), "{out:?}");
    let plain = strip_sgr(&out);
    assert!(plain.contains("ISSUER / CLIENT"), "{plain}");
    for line in plain.lines() {
        let n = line.trim_end_matches('\r').chars().count();
        assert!(n <= 100, "{n} columns: {line}");
    }
    // NO_COLOR (any non-empty value) turns it off.
    let (_, out) = in_terminal(&env, &["list"], &[("NO_COLOR", "1")]).await;
    assert!(!out.contains('\x1b'), "{out:?}");
    assert!(out.contains("pending"), "{out}");
}

#[tokio::test]
async fn userinfo_with_the_stored_dpop_bound_token() {
    let env = Env::new(|_| {}).await;
    let (mut run, id) = started(&env, &["--scope", "profile email"]).await;
    run.line_with("OP: ").await;
    let auth = env.the_auth();
    env.op.approve(&auth.deferred_auth_id);
    assert_eq!(run.finish().await.code, Some(0));
    let u = env.run(&["userinfo", &id, "--json"]).await;
    assert_eq!(u.code, Some(0), "{u:?}");
    assert_eq!(u.json()["subject"], auth.subject.as_str());
    assert_eq!(u.json()["claims"]["sub"], auth.subject.as_str());
    let calls = env.op.requests_to(Endpoint::UserInfo);
    assert_eq!(calls.len(), 1);
    assert!(
        calls[0]
            .header("authorization")
            .is_some_and(|h| h.starts_with("DPoP ")),
        "DPoP-bound"
    );
    assert!(calls[0].header("dpop").is_some());
    // Not for a pending one; not after ack.
    assert_eq!(env.run(&["ack", &id]).await.code, Some(0));
    assert_eq!(env.run(&["userinfo", &id]).await.code, Some(2));
}

#[cfg(feature = "demo")]
#[tokio::test]
async fn the_demo_shows_every_ending() {
    let env = Env::new(|_| {}).await;
    for (flags, code, status) in [
        (&["--deny"][..], 3, "denied"),
        (&["--expire"][..], 4, "expired"),
        (&["--no-decision"][..], 5, "deadline"),
    ] {
        let mut args = vec!["demo", "--review-time", "2"];
        args.extend_from_slice(flags);
        let d = env.run(&args).await;
        assert_eq!(d.code, Some(code), "{flags:?}: {d:?}");
        assert_eq!(d.json()["status"], status, "{flags:?}");
    }
}

#[tokio::test]
async fn the_device_code_has_a_countdown() {
    let env = Env::new(|c| c.profiles = OpProfiles::Ietf).await;
    let mut run = env.verify(&["--draft", "ietf", "--device"]);
    let line = run.line_with("enter the code:").await;
    let user_code = line.rsplit(' ').next().unwrap().trim().to_owned();
    let expiry = run.line_with("The code expires").await;
    assert!(expiry.contains("The code expires in "), "{expiry}");
    assert!(env.op.complete_device(&user_code));
    run.line_with("is pending").await;
    env.op.approve(&env.the_auth().deferred_auth_id);
    assert_eq!(run.finish().await.code, Some(0));
}
