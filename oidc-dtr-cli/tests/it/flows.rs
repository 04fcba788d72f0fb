//! `dtr` driven as a script would: pipes, no terminal.

use crate::support::*;

/// Starts `dtr verify`, plays the browser, and returns once dtr says the
/// verification is pending (with its short id).
pub(crate) async fn started(env: &Env, extra: &[&str]) -> (Running, String) {
    let mut run = env.verify(extra);
    let url = run.auth_url().await;
    assert_eq!(play_browser(&env.op, &url).await, 200);
    let line = run.line_with("is pending").await;
    let id = line
        .split("verification ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 8, "a short id: {line}");
    (run, id)
}

#[tokio::test]
async fn tokens_as_json_when_stdout_is_not_a_terminal() {
    let env = Env::new(|c| {
        c.extra_claims.insert(
            "verified_claims".into(),
            serde_json::json!({"verification": {"trust_framework": "eidas"}, "claims": {"given_name": "Erika"}}),
        );
    })
    .await;
    let (mut run, id) = started(&env, &["--scope", "profile", "--acr-values", "urn:x:high"]).await;
    // The wait has begun: the OP's progress text is shown as plain lines.
    run.line_with("OP: Documents received").await;
    let auth = env.the_auth();
    assert!(
        env.op.dpop_binding(&auth.deferred_auth_id).is_some(),
        "DPoP by default"
    );
    env.op.approve(&auth.deferred_auth_id);
    let done = run.finish().await;
    assert_eq!(done.code, Some(0), "{done:?}");
    let out = done.json();
    assert_eq!(out["status"], "tokens");
    assert_eq!(out["id"], id.as_str());
    assert_eq!(out["subject"], auth.subject.as_str());
    assert_eq!(out["issuer"], env.op.issuer());
    assert_eq!(out["token_type"], "DPoP");
    assert_eq!(
        out["claims"]["verified_claims"]["claims"]["given_name"],
        "Erika"
    );
    // Plain output: no spinner redraws, no escape sequences.
    assert!(
        !done.stderr.contains('\r') && !done.stderr.contains('\x1b'),
        "{}",
        done.stderr
    );
    // The deferred_auth_id itself is never shown.
    assert!(!done.stderr.contains(&auth.deferred_auth_id));
    assert!(!done.stdout.contains(&auth.deferred_auth_id));

    // The request carried what was asked for, with PKCE and the loopback redirect.
    let authz = env.op.requests_to(Endpoint::Authorize);
    let r = &authz[0];
    assert_eq!(r.param("acr_values"), Some("urn:x:high"));
    assert_eq!(r.param("code_challenge_method"), Some("S256"));
    assert!(
        r.param("redirect_uri")
            .unwrap()
            .starts_with("http://127.0.0.1:")
    );
    assert!(r.param("scope").unwrap().contains("profile"));

    // list, show (until acknowledged), ack, purge.
    let list = env.run(&["list", "--json"]).await;
    assert_eq!(list.code, Some(0));
    assert_eq!(list.json()[0]["status"], "tokens");
    let show = env.run(&["show", &id, "--json"]).await;
    assert_eq!(show.code, Some(0), "{show:?}");
    assert_eq!(show.json()["subject"], auth.subject.as_str());
    assert_eq!(env.run(&["ack", &id]).await.code, Some(0));
    let again = env.run(&["show", &id]).await;
    assert_eq!(again.code, Some(2), "{again:?}");
    assert!(again.stderr.contains("acknowledged"), "{}", again.stderr);
    assert_eq!(env.run(&["purge"]).await.code, Some(0));
    assert_eq!(
        env.run(&["list", "--json"]).await.json(),
        serde_json::json!([])
    );
}

#[tokio::test]
async fn ctrl_c_leaves_it_pending_and_wait_latest_finishes() {
    let env = Env::new(|_| {}).await;
    let (mut run, id) = started(&env, &[]).await;
    run.line_with("OP: Documents received").await;
    run.interrupt();
    let done = run.finish().await;
    assert_eq!(done.code, Some(130), "{done:?}");
    assert!(
        done.stderr.contains(&format!("wait {id}")),
        "{}",
        done.stderr
    );
    assert!(done.stdout.is_empty());
    // Still pending, at the OP and here.
    let auth = env.the_auth();
    assert_eq!(auth.state, AuthState::Pending);
    let list = env.run(&["list", "--json"]).await.json();
    assert_eq!(list[0]["status"], "pending");
    // The state is sealed with an owner-only key file.
    let key = env.state_dir().join("store.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    for f in files(&env.state_dir()) {
        let bytes = std::fs::read(&f).unwrap();
        let hay = String::from_utf8_lossy(&bytes);
        assert!(
            !hay.contains(&auth.deferred_auth_id),
            "{} holds the id in clear",
            f.display()
        );
    }

    // A new process resumes it; the OP decides meanwhile.
    let mut wait = Running::spawn({
        let mut c = env.dtr();
        c.args(["wait", "--latest"]);
        c
    });
    wait.line_with("Resuming verification").await;
    env.op.approve(&auth.deferred_auth_id);
    let done = wait.finish().await;
    assert_eq!(done.code, Some(0), "{done:?}");
    assert_eq!(done.json()["status"], "tokens");
    assert_eq!(done.json()["subject"], auth.subject.as_str());
    assert_eq!(
        env.run(&["list", "--json"]).await.json()[0]["status"],
        "tokens"
    );
}

#[tokio::test]
async fn a_denial_exits_3() {
    let env = Env::new(|_| {}).await;
    let (mut run, id) = started(&env, &[]).await;
    run.line_with("OP: ").await;
    env.op.deny(
        &env.the_auth().deferred_auth_id,
        Some("the document is not genuine"),
    );
    let done = run.finish().await;
    assert_eq!(done.code, Some(3), "{done:?}");
    let out = done.json();
    assert_eq!(out["status"], "denied");
    assert_eq!(out["description"], "the document is not genuine");
    assert_eq!(env.run(&["show", &id]).await.code, Some(3));
}

#[tokio::test]
async fn an_expiry_at_the_op_exits_4() {
    let env = Env::new(|_| {}).await;
    let (mut run, _) = started(&env, &[]).await;
    run.line_with("OP: ").await;
    env.op.expire(&env.the_auth().deferred_auth_id);
    let done = run.finish().await;
    assert_eq!(done.code, Some(4), "{done:?}");
    assert_eq!(done.json()["status"], "expired");
}

#[tokio::test]
async fn the_deadline_exits_5() {
    // The OP gives itself 2 s and then never answers with expired_token.
    let env = Env::new(|c| {
        c.expires_in = Some(2);
        c.expire_authentications = false;
    })
    .await;
    // --quiet: the URL and the outcome, no narration, no progress.
    let mut run = env.verify(&["--quiet"]);
    let url = run.auth_url().await;
    assert_eq!(play_browser(&env.op, &url).await, 200);
    let done = run.finish().await;
    assert_eq!(done.code, Some(5), "{done:?}");
    assert_eq!(done.json()["status"], "deadline");
    assert!(!done.stderr.contains("is pending"), "{}", done.stderr);
    assert!(!done.stderr.contains("OP:"), "{}", done.stderr);
}

#[tokio::test]
async fn cancel_at_the_op_then_wait_exits_6() {
    let env = Env::new(|_| {}).await;
    let cancel = env.op.url("/df-authentication/cancel").to_string();
    let (run, id) = started(&env, &["--no-wait", "--cancel-endpoint", &cancel]).await;
    let done = run.finish().await;
    assert_eq!(done.code, Some(7), "{done:?}");
    assert_eq!(done.json()["status"], "pending");
    assert_eq!(done.json()["id"], id.as_str());

    let c = env.run(&["cancel", &id]).await;
    assert_eq!(c.code, Some(0), "{c:?}");
    assert_eq!(env.the_auth().state, AuthState::Cancelled);
    let w = env.run(&["wait", &id]).await;
    assert_eq!(w.code, Some(6), "{w:?}");
    assert_eq!(w.json()["status"], "cancelled");
}

#[tokio::test]
async fn form_post_and_a_forged_redirect_is_ignored() {
    let env = Env::new(|_| {}).await;
    let mut run = env.verify(&["--response-mode", "form-post"]);
    let url = run.auth_url().await;
    // A request with a wrong state reaches the listener first: refused, ignored.
    let redirect = url
        .query_pairs()
        .find(|(k, _)| k == "redirect_uri")
        .unwrap()
        .1
        .into_owned();
    let forged = reqwest::Client::new()
        .post(&redirect)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "deferred_code=abc&state=wrong&iss={}",
            env.op.issuer()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 400);
    assert_eq!(play_browser(&env.op, &url).await, 200);
    run.line_with("is pending").await;
    let authz = env.op.requests_to(Endpoint::Authorize);
    assert_eq!(authz[0].param("response_mode"), Some("form_post"));
    env.op.approve(&env.the_auth().deferred_auth_id);
    let done = run.finish().await;
    assert_eq!(done.code, Some(0), "{done:?}");
    assert!(
        done.stderr.contains("ignored an invalid redirect"),
        "{}",
        done.stderr
    );
}

#[tokio::test]
async fn confidential_client_from_a_profile_with_a_secret_file() {
    let env = Env::new(|_| {}).await;
    let secret = env.dir.path().join("secret");
    std::fs::write(&secret, format!("{}\n", MockOp::CLIENT_SECRET)).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let config = env.dir.path().join("dtr.toml");
    std::fs::write(
        &config,
        format!(
            "default_profile = \"mock\"\n[profile.mock]\nissuer = \"{}\"\nclient_id = \"{}\"\nclient_secret_file = \"{}\"\nscope = \"email\"\n",
            env.op.issuer(),
            MockOp::CLIENT_ID,
            secret.display()
        ),
    )
    .unwrap();
    let mut c = env.dtr();
    c.args([
        "--config",
        config.to_str().unwrap(),
        "verify",
        "--no-browser",
    ]);
    let mut run = Running::spawn(c);
    let url = run.auth_url().await;
    assert!(url.as_str().contains(MockOp::CLIENT_ID));
    assert_eq!(play_browser(&env.op, &url).await, 200);
    run.line_with("is pending").await;
    env.op.approve(&env.the_auth().deferred_auth_id);
    let done = run.finish().await;
    assert_eq!(done.code, Some(0), "{done:?}");
    assert!(!done.stderr.contains(MockOp::CLIENT_SECRET));
    let tokens = env.op.requests_to(Endpoint::Token);
    assert!(tokens.iter().all(|r| {
        r.header("authorization")
            .is_some_and(|h| h.starts_with("Basic "))
    }));
    // The index keeps the path, never the secret.
    let index = std::fs::read_to_string(env.state_dir().join("index.json")).unwrap();
    assert!(!index.contains(MockOp::CLIENT_SECRET));
    assert!(index.contains("secret_file"));
}

#[tokio::test]
async fn usage_errors_are_one_line_with_a_fix() {
    let env = Env::new(|_| {}).await;
    let d = env
        .run(&["verify", "--client-id", "x", "--no-browser"])
        .await;
    assert_eq!(d.code, Some(2), "{d:?}");
    assert_eq!(d.stderr.trim().lines().count(), 1, "{}", d.stderr);
    assert!(
        d.stderr.contains("issuer") && d.stderr.contains("fix:"),
        "{}",
        d.stderr
    );
    // There is no flag that takes a secret.
    let d = env.run(&["verify", "--client-secret", "s3cret"]).await;
    assert_eq!(d.code, Some(2));
    // An unknown id.
    let d = env.run(&["wait", "ffffffff"]).await;
    assert_eq!(d.code, Some(2));
    assert!(d.stderr.contains("dtr list"), "{}", d.stderr);
    // An unknown profile.
    let d = env.run(&["--profile", "nope", "verify"]).await;
    assert_eq!(d.code, Some(2), "{d:?}");
}

#[tokio::test]
async fn a_key_file_others_can_read_is_refused() {
    let env = Env::new(|_| {}).await;
    let (run, id) = started(&env, &["--no-wait"]).await;
    assert_eq!(run.finish().await.code, Some(7));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key = env.state_dir().join("store.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let d = env.run(&["wait", &id]).await;
        assert_eq!(d.code, Some(2), "{d:?}");
        assert!(d.stderr.contains("chmod 600"), "{}", d.stderr);
    }
}

#[cfg(feature = "demo")]
#[tokio::test]
async fn demo_runs_to_validated_claims() {
    let env = Env::new(|_| {}).await;
    let d = env.run(&["demo", "--review-time", "2"]).await;
    assert_eq!(d.code, Some(0), "{d:?}");
    let out = d.json();
    assert_eq!(out["status"], "tokens");
    // The typed request was honoured by the mock OP's identity assurance,
    // and the answer passed the checks.
    assert!(out.get("verified_claims_error").is_none(), "{out}");
    let vc = &out["verified_claims"]["requested"][0];
    assert_eq!(vc["claims"]["family_name"], "Meier", "{out}");
    assert_eq!(vc["claims"]["birthdate"], "1956-01-28");
    assert_eq!(vc["verification"]["trust_framework"], "eidas");
    assert_eq!(vc["verification"]["assurance_level"], "substantial");
    assert_eq!(
        vc["verification"]["evidence"][0]["type"],
        "electronic_record"
    );
    assert_eq!(out["verified_claims"]["unrequested"], serde_json::json!([]));
    assert!(d.stderr.contains("OP: "), "{}", d.stderr);
}

#[tokio::test]
async fn a_refusal_at_the_authorization_endpoint_exits_3_and_keeps_nothing() {
    let env = Env::new(|c| {
        c.authorize_outcome = AuthorizeOutcome::Error {
            error: "access_denied".into(),
            description: "the user declined".into(),
        };
    })
    .await;
    let mut run = env.verify(&[]);
    let url = run.auth_url().await;
    assert_eq!(play_browser(&env.op, &url).await, 200);
    let done = run.finish().await;
    assert_eq!(done.code, Some(3), "{done:?}");
    assert!(done.stderr.contains("the user declined"), "{}", done.stderr);
    assert_eq!(
        env.run(&["list", "--json"]).await.json(),
        serde_json::json!([])
    );
    let stores: Vec<_> = files(&env.state_dir())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "redb"))
        .collect();
    assert!(stores.is_empty(), "{stores:?}");
}

/// The flags of a typed verified-claims request.
const VERIFIED: &[&str] = &[
    "--verified-claims",
    "given_name,family_name,birthdate",
    "--trust-framework",
    "de_aml",
    "--trust-framework",
    "eidas",
    "--assurance-level",
    "substantial",
    "--verification-max-age",
    "31536000",
    "--evidence",
    "document",
];

#[tokio::test]
async fn verified_claims_are_requested_typed_and_shown_typed() {
    let env = Env::new(|_| {}).await;
    let (mut run, id) = started(&env, VERIFIED).await;
    run.line_with("OP: ").await;
    // The `claims` parameter the OP received: built by the library from the flags.
    let authz = env.op.requests_to(Endpoint::Authorize);
    let claims: serde_json::Value =
        serde_json::from_str(authz[0].param("claims").expect("a claims parameter")).unwrap();
    let req = &claims["id_token"]["verified_claims"];
    assert_eq!(
        req["verification"]["trust_framework"]["values"],
        serde_json::json!(["de_aml", "eidas"]),
        "{claims}"
    );
    assert_eq!(
        req["verification"]["assurance_level"]["value"],
        "substantial"
    );
    assert_eq!(req["verification"]["time"]["max_age"], 31_536_000);
    assert_eq!(
        req["verification"]["evidence"][0]["type"]["value"],
        "document"
    );
    assert_eq!(
        req["claims"],
        serde_json::json!({"given_name": null, "family_name": null, "birthdate": null})
    );
    env.op.approve(&env.the_auth().deferred_auth_id);
    let done = run.finish().await;
    assert_eq!(done.code, Some(0), "{done:?}");
    let out = done.json();
    assert!(out.get("verified_claims_error").is_none(), "{out}");
    let requested = out["verified_claims"]["requested"].as_array().unwrap();
    assert_eq!(requested.len(), 1, "{out}");
    let vc = &requested[0];
    assert_eq!(
        vc["claims"],
        serde_json::json!({"given_name": "Max", "family_name": "Meier", "birthdate": "1956-01-28"})
    );
    assert_eq!(vc["verification"]["trust_framework"], "de_aml");
    assert_eq!(vc["verification"]["assurance_level"], "substantial");
    assert_eq!(vc["verification"]["evidence"][0]["type"], "document");
    assert!(vc["verification"]["time"].is_string());
    assert_eq!(out["verified_claims"]["unrequested"], serde_json::json!([]));

    // The human summary, later, from the store: typed lines.
    let human = show_in_terminal(&env, &id).await;
    assert!(human.contains("verified claims:"), "{human}");
    assert!(
        human.contains("trust framework: de_aml, assurance level: substantial, verified: "),
        "{human}"
    );
    assert!(human.contains("evidence: document"), "{human}");
    assert!(human.contains("family_name: Meier"), "{human}");
    assert!(!human.contains("REFUSED"), "{human}");
}

#[tokio::test]
async fn verified_claims_the_op_got_wrong_are_refused_but_the_tokens_are_kept() {
    let env = Env::new(|c| {
        c.assurance_fault = Some(AssuranceFault::DisallowedTrustFramework);
    })
    .await;
    let (mut run, id) = started(&env, VERIFIED).await;
    run.line_with("OP: ").await;
    env.op.approve(&env.the_auth().deferred_auth_id);
    let done = run.finish().await;
    // The ID token is valid, the identity is not verified: exit 8.
    assert_eq!(done.code, Some(8), "{done:?}");
    let out = done.json();
    assert_eq!(out["status"], "tokens");
    assert!(out["access_token"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(out["id_token"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(out.get("verified_claims").is_none(), "{out}");
    let err = out["verified_claims_error"].as_str().expect("the refusal");
    assert!(
        err.contains("trust_framework `xx_unrequested` was not requested"),
        "{err}"
    );

    let (code, human) = in_terminal(&env, &["show", &id], &[("TERM", "dumb")]).await;
    assert_eq!(code, 8, "{human}");
    assert!(
        human.contains(
            "verified claims REFUSED: verified_claims[0]: trust_framework `xx_unrequested`"
        ),
        "{human}"
    );
    // The claims of the refused element are not shown as verified.
    assert!(!human.contains("family_name: Meier"), "{human}");
    assert!(human.contains("token:"), "{human}");
}

#[tokio::test]
async fn a_verified_claims_request_the_op_cannot_serve_fails_before_the_browser() {
    let env = Env::new(|_| {}).await;
    let base = [
        "verify",
        "--issuer",
        env.op.issuer(),
        "--client-id",
        MockOp::PUBLIC_CLIENT_ID,
        "--no-browser",
    ];
    let run = |extra: &'static [&'static str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        let env = &env;
        async move { env.run(&args).await }
    };
    // A trust framework the OP does not list: one line naming it, with what the OP offers.
    let d = run(&[
        "--verified-claims",
        "given_name",
        "--trust-framework",
        "xx_nope",
    ])
    .await;
    assert_eq!(d.code, Some(2), "{d:?}");
    assert_eq!(d.stderr.trim().lines().count(), 1, "{}", d.stderr);
    assert!(
        d.stderr.contains("trust framework `xx_nope`"),
        "{}",
        d.stderr
    );
    assert!(
        d.stderr
            .contains("fix: pick --trust-framework from what the OP offers: de_aml, eidas"),
        "{}",
        d.stderr
    );
    assert!(!d.stderr.contains("/authorize?"), "{}", d.stderr);
    // An evidence type and a claim it does not support.
    let d = run(&["--verified-claims", "given_name", "--evidence", "vouch"]).await;
    assert_eq!(d.code, Some(2), "{d:?}");
    assert!(d.stderr.contains("evidence type `vouch`"), "{}", d.stderr);
    assert!(d.stderr.contains("--evidence"), "{}", d.stderr);
    let d = run(&["--verified-claims", "given_name,shoe_size"]).await;
    assert_eq!(d.code, Some(2), "{d:?}");
    assert!(d.stderr.contains("claim `shoe_size`"), "{}", d.stderr);
    // Nothing was sent, nothing kept.
    assert!(env.op.requests_to(Endpoint::Authorize).is_empty());
    assert_eq!(
        env.run(&["list", "--json"]).await.json(),
        serde_json::json!([])
    );
    // Not with the raw --claims JSON; companions need --verified-claims.
    let d = run(&["--verified-claims", "given_name", "--claims", "{}"]).await;
    assert_eq!(d.code, Some(2), "{d:?}");
    assert_eq!(d.stderr.trim().lines().count(), 1, "{}", d.stderr);
    assert!(d.stderr.contains("--claims"), "{}", d.stderr);
    let d = run(&["--trust-framework", "eidas"]).await;
    assert_eq!(d.code, Some(2), "{d:?}");
    assert!(
        d.stderr
            .contains("--trust-framework needs --verified-claims"),
        "{}",
        d.stderr
    );
}

#[tokio::test]
async fn the_ietf_draft_with_one_option_then_cancel_by_revocation() {
    let env = Env::new(|c| c.profiles = OpProfiles::Ietf).await;
    // verify --draft ietf: a plain code, redeemed with completion_mode=deferred,
    // then the same wait and validated tokens.
    let (mut run, id) = started(&env, &["--draft", "ietf"]).await;
    run.line_with("OP: Documents received").await;
    let auth = env.the_auth();
    assert_eq!(env.op.is_ietf(&auth.deferred_auth_id), Some(true));
    let token = env.op.requests_to(Endpoint::Token);
    assert_eq!(token[0].param("grant_type"), Some("authorization_code"));
    assert_eq!(token[0].param("completion_mode"), Some("deferred"));
    assert!(
        token[1..]
            .iter()
            .all(|r| r.param("deferral_code") == Some(auth.deferred_auth_id.as_str()))
    );
    env.op.approve(&auth.deferred_auth_id);
    let done = run.finish().await;
    assert_eq!(done.code, Some(0), "{done:?}");
    let out = done.json();
    assert_eq!(out["status"], "tokens");
    assert_eq!(out["id"], id.as_str());
    assert_eq!(out["subject"], auth.subject.as_str());
    assert!(!done.stderr.contains(&auth.deferred_auth_id));

    // A second one, cancelled: by RFC 7009 revocation, found in the metadata.
    let env = Env::new(|c| c.profiles = OpProfiles::Ietf).await;
    let (run, id) = started(&env, &["--draft", "ietf", "--no-wait"]).await;
    assert_eq!(run.finish().await.code, Some(7));
    let c = env.run(&["cancel", &id]).await;
    assert_eq!(c.code, Some(0), "{c:?}");
    assert_eq!(env.the_auth().state, AuthState::Cancelled);
    let revoke = env.op.requests_to(Endpoint::Revocation);
    assert_eq!(revoke.len(), 1);
    assert_eq!(
        revoke[0].param("token_type_hint"),
        Some("urn:ietf:params:oauth:token-type:deferral-code")
    );
    let w = env.run(&["wait", &id]).await;
    assert_eq!(w.code, Some(6), "{w:?}");
}

#[tokio::test]
async fn the_device_flow_is_deferred_then_waited_for() {
    let env = Env::new(|c| c.profiles = OpProfiles::Ietf).await;
    let mut run = env.verify(&["--draft", "ietf", "--device"]);
    let line = run.line_with("enter the code:").await;
    let user_code = line.rsplit(' ').next().unwrap().trim().to_owned();
    // The device authorization carried the hint; no browser redirect at all.
    let da = env.op.requests_to(Endpoint::DeviceAuthorization);
    assert_eq!(da[0].param("completion_mode"), Some("deferred"));
    assert!(env.op.requests_to(Endpoint::Authorize).is_empty());
    assert!(env.op.complete_device(&user_code));
    run.line_with("is pending").await;
    let auth = env.the_auth();
    assert_eq!(env.op.is_ietf(&auth.deferred_auth_id), Some(true));
    env.op.approve(&auth.deferred_auth_id);
    let done = run.finish().await;
    assert_eq!(done.code, Some(0), "{done:?}");
    assert_eq!(done.json()["status"], "tokens");
    assert_eq!(done.json()["subject"], auth.subject.as_str());
}
