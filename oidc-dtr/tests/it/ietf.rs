//! The IETF OAuth Deferred Token Response profile end to end, against the
//! mock OP serving it: `completion_mode=deferred` on the code grant's token
//! request, both answers, the deferral polled by the shared engine,
//! `interaction_required`, revocation, callbacks with and without a bearer,
//! and the choice of profile.

use std::time::Duration;

use crate::support::flow::*;
use oidc_dtr::{
    CallbackResponse, CancelResult, ClientAuth, DtrClient, Error, Outcome, PollEvent, Profile,
    Redemption,
};
use oidc_dtr_testkit::{
    AuthState, AuthorizeOutcome, AutoApprove, Endpoint, MockOp, OpConfig, OpProfiles,
    RegisteredClient,
};

const S: Duration = Duration::from_secs(1);
const IETF_GRANT: &str = "urn:ietf:params:oauth:grant-type:deferred";
const DEFERRAL_TYPE: &str = "urn:ietf:params:oauth:token-type:deferral-code";

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

async fn ietf(cfg: OpConfig) -> Setup {
    setup_with(cfg, |b| b.profile(Profile::Ietf)).await
}

/// Waits (real time) until `f` holds.
async fn eventually(mut f: impl FnMut() -> bool) {
    for _ in 0..400 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached");
}

#[tokio::test]
async fn immediate_tokens_despite_completion_mode() {
    let mut cfg = ietf_config();
    cfg.authorize_outcome = AuthorizeOutcome::Code;
    let s = ietf(cfg).await;
    assert_eq!(s.client.profile(), Profile::Ietf);
    let (url, pending) = s.client.authorize().build().unwrap();
    assert!(pending.completion_mode_hint());
    let q: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    assert!(q.contains(&("response_type".into(), "code".into())));
    assert!(q.contains(&("completion_mode".into(), "deferred".into())));
    let cb = s.op.browse(&url).await.unwrap();
    let CallbackResponse::Code(code) = s.client.callback(&pending, cb.query()).unwrap() else {
        panic!()
    };
    let Redemption::Tokens(tokens) = s.client.redeem_code(code).await.unwrap() else {
        panic!("the AS answered at once")
    };
    // Validated like any ID token: the request's nonce is in it.
    assert_eq!(tokens.claims().nonce(), Some(pending.nonce().secret()));
    let reqs = s.op.requests_to(Endpoint::Token);
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].param("grant_type"), Some("authorization_code"));
    assert_eq!(reqs[0].param("completion_mode"), Some("deferred"));
    // No notification endpoint: no notification token.
    assert_eq!(reqs[0].param("client_notification_token"), None);
    assert!(s.op.authentications().is_empty());
}

#[tokio::test]
async fn deferred_then_tokens_at_the_remembered_interval() {
    let mut cfg = ietf_config();
    cfg.interval = Some(7);
    cfg.auto_approve = AutoApprove::AfterPolls(3);
    let s = ietf(cfg).await;
    let auth = start_ietf(&s.op, &s.client).await;
    assert_eq!(auth.profile(), Profile::Ietf);
    assert_eq!(auth.interval(), secs(7));
    assert!(auth.expires_at().is_some());
    assert_eq!(s.op.is_ietf(auth.id()), Some(true));
    let outcome = run_to_outcome(&s, auth.id(), S, secs(600)).await;
    let Outcome::Tokens(tokens) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(tokens.claims().nonce(), Some(auth.nonce().secret()));
    assert_eq!(
        tokens.claims().subject(),
        s.op.authentication(auth.id()).unwrap().subject
    );
    let polls = poll_requests(&s.op);
    assert_eq!(polls.len(), 3);
    for p in &polls {
        assert_eq!(p.param("grant_type"), Some(IETF_GRANT));
        assert_eq!(p.param("deferral_code"), Some(auth.id().secret()));
        assert_eq!(p.param("completion_mode"), None, "polls never opt in");
        assert_eq!(p.param("deferred_auth_id"), None);
    }
    // The interval came only with the deferred response; later pending
    // answers did not repeat it, and no poll came faster.
    for w in polls.windows(2) {
        assert!(w[1].at.saturating_duration_since(w[0].at) >= secs(7));
    }
    assert_eq!(s.op.authentication(auth.id()).unwrap().slow_downs, 0);
}

#[tokio::test]
async fn interaction_required_is_surfaced_and_may_flip_back() {
    let mut cfg = ietf_config();
    cfg.interaction_uri = Some("https://as.example/interact/1".into());
    let s = ietf(cfg).await;
    let mut events = s.client.subscribe();
    let auth = start_ietf(&s.op, &s.client).await;
    assert_eq!(
        auth.interaction_uri().map(|u| u.as_str()),
        Some("https://as.example/interact/1")
    );
    let status = s.client.poll_status(auth.id()).await.unwrap();
    assert_eq!(
        status.interaction_uri.as_ref().map(|u| u.as_str()),
        Some("https://as.example/interact/1")
    );
    // Polling goes on while the AS waits for the user.
    pass(&s, secs(12), S).await;
    assert!(poll_requests(&s.op).len() >= 2);
    assert!(!s.client.poll_status(auth.id()).await.unwrap().finished);
    // Back to authorization_pending.
    s.op.set_interaction(auth.id(), None);
    pass(&s, secs(6), S).await;
    assert_eq!(
        s.client
            .poll_status(auth.id())
            .await
            .unwrap()
            .interaction_uri,
        None
    );
    // And forth, to another URI.
    s.op.set_interaction(auth.id(), Some("https://as.example/interact/2"));
    pass(&s, secs(6), S).await;
    s.op.approve(auth.id());
    assert!(matches!(
        run_to_outcome(&s, auth.id(), S, secs(60)).await,
        Outcome::Tokens(_)
    ));
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        if let PollEvent::Interaction { id, uri } = e {
            assert_eq!(&id, auth.id());
            seen.push(uri.map(|u| u.as_str().to_owned()));
        }
    }
    assert_eq!(
        seen,
        vec![None, Some("https://as.example/interact/2".to_owned())],
        "each change once; the initial URI came with the deferral"
    );
}

#[tokio::test]
async fn an_invalid_interaction_uri_is_not_surfaced_but_polling_goes_on() {
    let mut cfg = ietf_config();
    cfg.interaction_uri = Some("http://as.example/interact#frag".into());
    cfg.auto_approve = AutoApprove::AfterPolls(2);
    let s = ietf(cfg).await;
    let auth = start_ietf(&s.op, &s.client).await;
    assert!(auth.interaction_uri().is_none());
    assert!(matches!(
        run_to_outcome(&s, auth.id(), S, secs(60)).await,
        Outcome::Tokens(_)
    ));
}

#[tokio::test]
async fn cancellation_is_a_dpop_bound_revocation() {
    let mut cfg = ietf_config();
    cfg.require_dpop = true;
    let s = setup_with(cfg, |b| {
        b.profile(Profile::Ietf)
            .client_id(MockOp::PUBLIC_CLIENT_ID)
            .client_auth(ClientAuth::None)
    })
    .await;
    let auth = start_ietf(&s.op, &s.client).await;
    assert!(auth.dpop_key().is_some());
    assert!(s.op.dpop_binding(auth.id()).is_some());
    assert_eq!(
        s.client.cancel(auth.id()).await.unwrap(),
        CancelResult::ToldOp
    );
    assert_eq!(s.client.wait(auth.id()).await.unwrap(), Outcome::Cancelled);
    assert_eq!(
        s.op.authentication(auth.id()).unwrap().state,
        AuthState::Cancelled
    );
    let reqs = s.op.requests_to(Endpoint::Revocation);
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].status, 200);
    assert_eq!(reqs[0].param("token"), Some(auth.id().secret()));
    assert_eq!(reqs[0].param("token_type_hint"), Some(DEFERRAL_TYPE));
    assert!(
        reqs[0].header("dpop").is_some(),
        "DPoP-bound code, DPoP proof"
    );
    // Nothing went to the OIDC cancellation endpoint.
    assert!(s.op.requests_to(Endpoint::Cancel).is_empty());
}

#[tokio::test]
async fn a_revocation_the_as_does_not_advertise_is_unconfirmed() {
    let mut cfg = ietf_config();
    cfg.advertise_deferral_revocation = false;
    let s = ietf(cfg).await;
    let auth = start_ietf(&s.op, &s.client).await;
    // The AS answers 200 but does nothing: the SDK says so.
    let r = s.client.cancel(auth.id()).await.unwrap();
    assert_eq!(r, CancelResult::SentUnconfirmed);
    assert!(!r.op_told());
    assert_eq!(s.op.requests_to(Endpoint::Revocation)[0].status, 200);
    assert_eq!(
        s.op.authentication(auth.id()).unwrap().state,
        AuthState::Pending
    );
    assert_eq!(s.client.wait(auth.id()).await.unwrap(), Outcome::Cancelled);
}

#[tokio::test]
async fn a_hinted_request_must_opt_in_at_the_token_endpoint() {
    let s = ietf(ietf_config()).await;
    let (url, pending) = s.client.authorize().build().unwrap();
    let cb = s.op.browse(&url).await.unwrap();
    let CallbackResponse::Code(code) = s.client.callback(&pending, cb.query()).unwrap() else {
        panic!()
    };
    // The SDK refuses to send a token request without the opt-in...
    let err = s.client.exchange_code(code.clone()).await.unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(s.op.requests_to(Endpoint::Token).is_empty());
    // ...and the AS refuses one that comes anyway.
    let resp = reqwest::Client::new()
        .post(s.op.url("/token"))
        .basic_auth(MockOp::CLIENT_ID, Some(MockOp::CLIENT_SECRET))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs([
                    ("grant_type", "authorization_code"),
                    ("code", code.code().secret()),
                    ("redirect_uri", REDIRECT),
                    ("code_verifier", pending.pkce_verifier().secret()),
                ])
                .finish(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(body["error"], "invalid_request");
    // The code is still good for the opted-in request.
    assert!(matches!(
        s.client.redeem_code(code).await.unwrap(),
        Redemption::Deferred(_)
    ));
    // Without the hint, the plain code flow is fine.
    let (url, pending) = s
        .client
        .authorize()
        .completion_mode_hint(false)
        .build()
        .unwrap();
    assert!(!url.query().unwrap().contains("completion_mode"));
    let cb = s.op.browse(&url).await.unwrap();
    let CallbackResponse::Code(code) = s.client.callback(&pending, cb.query()).unwrap() else {
        panic!()
    };
    let tokens = s.client.exchange_code(code).await.unwrap();
    assert_eq!(tokens.claims().nonce(), Some(pending.nonce().secret()));
}

/// An IETF client with a notification endpoint, the OP registration, and
/// the receiver serving it.
async fn ietf_pings(cfg: OpConfig, send_endpoint: bool, accept_unauthenticated: bool) -> Setup {
    let (listener, url) = crate::support::rp::bind().await;
    let u = url.clone();
    let s = setup_with(cfg, move |b| {
        let b = b
            .profile(Profile::Ietf)
            .client_id("rp")
            .client_secret("rp-secret")
            .accept_unauthenticated_callbacks(accept_unauthenticated);
        if send_endpoint {
            b.notification_endpoint(u)
        } else {
            b
        }
    })
    .await;
    s.op.register_client(
        RegisteredClient::confidential("rp", "rp-secret").with_notification_endpoint(url),
    );
    crate::support::rp::serve(listener, s.client.ping_receiver());
    s
}

#[tokio::test]
async fn callbacks_carry_the_client_notification_token() {
    let s = ietf_pings(ietf_config(), true, false).await;
    let auth = start_ietf(&s.op, &s.client).await;
    let token =
        s.op.authentication(auth.id())
            .unwrap()
            .notification_token
            .expect("a client_notification_token was sent");
    assert!(token.len() >= 27, "at least 160 bits, base64url");
    assert!(auth.notification_token_hash().is_some());
    // The body key is `deferral_code`; a forged bearer gets 401.
    assert_eq!(s.op.send_forged_ping(auth.id(), "forged").await, Some(401));
    pass(&s, secs(6), S).await;
    s.op.approve(auth.id());
    eventually(|| s.op.pings().iter().any(|p| p.status == Some(204))).await;
    let outcome = tokio::time::timeout(secs(5), s.client.wait(auth.id()))
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(outcome, Outcome::Tokens(_)), "{outcome:?}");
}

#[tokio::test]
async fn a_callback_without_a_bearer_is_advisory_and_needs_the_opt_in() {
    // Opted in, and no notification token was sent: the AS omits the
    // header, the callback wakes the poll (before the 60 s safety cadence
    // would matter: there is none without an endpoint, so the floor).
    let s = ietf_pings(ietf_config(), false, true).await;
    let auth = start_ietf(&s.op, &s.client).await;
    assert_eq!(
        s.op.authentication(auth.id()).unwrap().notification_token,
        None
    );
    assert_eq!(s.op.send_ping(auth.id()).await, Some(204));
    // A wrong bearer is still refused: the header was not omitted.
    assert_eq!(s.op.send_forged_ping(auth.id(), "x").await, Some(401));
    s.op.approve(auth.id());
    eventually(|| {
        s.op.pings()
            .iter()
            .filter(|p| p.status == Some(204))
            .count()
            == 2
    })
    .await;
    assert!(matches!(
        run_to_outcome(&s, auth.id(), S, secs(30)).await,
        Outcome::Tokens(_)
    ));

    // Not opted in: 401, and polling alone finishes the job.
    let s = ietf_pings(ietf_config(), false, false).await;
    let auth = start_ietf(&s.op, &s.client).await;
    assert_eq!(s.op.send_ping(auth.id()).await, Some(401));
    s.op.approve(auth.id());
    assert!(matches!(
        run_to_outcome(&s, auth.id(), S, secs(30)).await,
        Outcome::Tokens(_)
    ));
}

#[tokio::test]
async fn an_op_with_both_profiles_gets_the_one_asked_for() {
    let mut cfg = OpConfig::default();
    cfg.profiles = OpProfiles::Both;
    cfg.auto_approve = AutoApprove::AfterPolls(1);
    let s = setup(cfg.clone()).await;
    assert_eq!(s.client.profile(), Profile::Oidc, "OIDC when not asked");
    let oidc = start(&s.op, &s.client).await;
    assert_eq!(oidc.profile(), Profile::Oidc);
    // The same engine, store and validator run an IETF client next to it.
    let ietf_client = DtrClient::builder()
        .issuer(s.op.issuer())
        .client_id(MockOp::CLIENT_ID)
        .client_secret(MockOp::CLIENT_SECRET)
        .redirect_uri(REDIRECT)
        .clock(s.clock.clone())
        .profile(Profile::Ietf)
        .build()
        .await
        .unwrap();
    assert_eq!(ietf_client.profile(), Profile::Ietf);
    let ietf = start_ietf(&s.op, &ietf_client).await;
    assert_eq!(s.op.is_ietf(ietf.id()), Some(true));
    assert!(matches!(
        run_to_outcome(&s, oidc.id(), S, secs(60)).await,
        Outcome::Tokens(_)
    ));
    // An OIDC-only OP refuses a client that insists on IETF.
    let only_oidc = MockOp::builder().start().await.unwrap();
    let err = DtrClient::builder()
        .issuer(only_oidc.issuer())
        .client_id(MockOp::CLIENT_ID)
        .client_secret(MockOp::CLIENT_SECRET)
        .redirect_uri(REDIRECT)
        .profile(Profile::Ietf)
        .build()
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("deferred_token_response_supported"),
        "{err}"
    );
    // An IETF-only OP is detected from its metadata.
    let s = setup(ietf_config()).await;
    assert_eq!(s.client.profile(), Profile::Ietf);
}

/// Profile-independent behaviour of the shared engine, run against both.
#[tokio::test]
async fn denied_expired_and_terminal_answers_in_both_profiles() {
    for (op_profiles, profile) in profiles() {
        let mut cfg = OpConfig::default();
        cfg.profiles = op_profiles;
        let s = setup_with(cfg, |b| b.profile(profile)).await;
        let a = start_any(&s.op, &s.client).await;
        let b = start_any(&s.op, &s.client).await;
        assert_eq!(a.profile(), profile);
        s.op.deny(a.id(), Some("document not readable"));
        s.op.expire(b.id());
        assert_eq!(
            run_to_outcome(&s, a.id(), S, secs(60)).await,
            Outcome::Denied {
                description: Some("document not readable".into())
            },
            "{profile}"
        );
        assert_eq!(
            run_to_outcome(&s, b.id(), S, secs(60)).await,
            Outcome::ExpiredByOp,
            "{profile}"
        );
    }
}

#[tokio::test]
async fn slow_down_and_progress_in_both_profiles() {
    for (op_profiles, profile) in profiles() {
        let mut cfg = OpConfig::default();
        cfg.profiles = op_profiles;
        cfg.auto_approve = AutoApprove::AfterPolls(4);
        cfg.progress_script = vec!["queued".into(), "in review".into()];
        let s = setup_with(cfg, |b| b.profile(profile)).await;
        let mut events = s.client.subscribe();
        let auth = start_any(&s.op, &s.client).await;
        s.op.inject_faults([oidc_dtr_testkit::Fault::Respond {
            status: 400,
            headers: vec![("content-type".into(), "application/json".into())],
            body: r#"{"error":"slow_down"}"#.into(),
        }]);
        assert!(matches!(
            run_to_outcome(&s, auth.id(), S, secs(600)).await,
            Outcome::Tokens(_)
        ));
        let status = s.client.poll_status(auth.id()).await.unwrap();
        assert_eq!(status.slow_downs, 1, "{profile}");
        assert_eq!(status.floor, secs(10), "{profile}: 5 s + 5 s");
        let mut seen = Vec::new();
        while let Ok(e) = events.try_recv() {
            if let PollEvent::Progress { description, .. } = e {
                seen.push(description);
            }
        }
        assert_eq!(seen, vec!["queued", "in review"], "{profile}");
    }
}

#[tokio::test]
async fn a_restart_resumes_an_ietf_deferral_from_the_store() {
    let path = crate::support::TempPath::new("ietf-resume");
    let mut cfg = ietf_config();
    cfg.auto_approve = AutoApprove::AfterPolls(2);
    let clock = std::sync::Arc::new(oidc_dtr::time::ManualClock::new(T0));
    let op = op(cfg, &clock).await;
    let build = || {
        DtrClient::builder()
            .issuer(op.issuer())
            .client_id(MockOp::CLIENT_ID)
            .client_secret(MockOp::CLIENT_SECRET)
            .redirect_uri(REDIRECT)
            .clock(clock.clone())
            .store(oidc_dtr::store::FileStore::open(&path.0).unwrap())
            .build()
    };
    let client = build().await.unwrap();
    assert_eq!(client.profile(), Profile::Ietf);
    let auth = start_ietf(&op, &client).await;
    client.shutdown().await;
    drop(client);
    let client = build().await.unwrap();
    let s = Setup {
        op: op.clone(),
        client,
        clock,
    };
    assert!(matches!(
        run_to_outcome(&s, auth.id(), S, secs(120)).await,
        Outcome::Tokens(_)
    ));
    // The resumed polls still speak IETF.
    assert!(
        poll_requests(&op)
            .iter()
            .all(|r| r.param("grant_type") == Some(IETF_GRANT))
    );
}

#[tokio::test]
async fn the_device_grant_is_deferred_and_the_engine_continues_it() {
    let mut cfg = ietf_config();
    cfg.auto_approve = AutoApprove::AfterPolls(2);
    let s = ietf(cfg).await;
    let device = s.client.device_authorization("profile").await.unwrap();
    assert!(device.completion_mode_hint());
    assert!(!device.user_code().is_empty());
    let da = s.op.requests_to(Endpoint::DeviceAuthorization);
    assert_eq!(da[0].param("completion_mode"), Some("deferred"));
    assert_eq!(da[0].param("scope"), Some("openid profile"));
    let client = s.client.clone();
    let d = device.clone();
    let redeem = tokio::spawn(async move { client.device_token(&d).await });
    // The user has not finished: plain RFC 8628 polling, no deferral.
    pass(&s, secs(11), S).await;
    assert!(!redeem.is_finished());
    let device_polls = || {
        s.op.requests_to(Endpoint::Token)
            .into_iter()
            .filter(|r| r.param("device_code").is_some())
            .collect::<Vec<_>>()
    };
    let early = device_polls();
    assert_eq!(early.len(), 2);
    assert!(early.iter().all(|r| r.status == 400));
    assert!(s.op.authentications().is_empty());
    // The user finishes; the next device-code request is deferred.
    assert!(s.op.complete_device(device.user_code()));
    pass(&s, secs(6), S).await;
    let Redemption::Deferred(auth) = redeem.await.unwrap().unwrap() else {
        panic!("deferred")
    };
    assert_eq!(auth.profile(), Profile::Ietf);
    for r in device_polls() {
        assert_eq!(
            r.param("grant_type"),
            Some("urn:ietf:params:oauth:grant-type:device_code")
        );
        assert_eq!(r.param("completion_mode"), Some("deferred"));
    }
    // The same engine continues with the deferral code.
    let outcome = run_to_outcome(&s, auth.id(), S, secs(120)).await;
    let Outcome::Tokens(tokens) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(tokens.claims().nonce(), Some(auth.nonce().secret()));
    assert!(
        poll_requests(&s.op)
            .iter()
            .all(|r| r.param("deferral_code") == Some(auth.id().secret()))
    );
}

#[tokio::test]
async fn the_device_grant_may_answer_at_once_or_expire() {
    let mut cfg = ietf_config();
    cfg.authorize_outcome = AuthorizeOutcome::Code;
    let s = ietf(cfg).await;
    let device = s.client.device_authorization("").await.unwrap();
    s.op.complete_device(device.user_code());
    let client = s.client.clone();
    let d = device.clone();
    let redeem = tokio::spawn(async move { client.device_token(&d).await });
    pass(&s, secs(6), S).await;
    let Redemption::Tokens(tokens) = redeem.await.unwrap().unwrap() else {
        panic!("immediate tokens")
    };
    assert_eq!(
        tokens.claims().nonce(),
        Some(device_nonce_of(&s.op)).as_deref()
    );
    // The device code expires if the user never finishes.
    let device = s.client.device_authorization("").await.unwrap();
    let client = s.client.clone();
    let redeem = tokio::spawn(async move { client.device_token(&device).await });
    pass(&s, secs(700), secs(50)).await;
    let err = redeem.await.unwrap().unwrap_err();
    assert_eq!(
        err.oauth().unwrap().code,
        oidc_dtr::error::ErrorCode::ExpiredToken,
        "{err}"
    );
}

/// The `nonce` of the first device authorization request.
fn device_nonce_of(op: &MockOp) -> String {
    op.requests_to(Endpoint::DeviceAuthorization)[0]
        .param("nonce")
        .unwrap()
        .to_owned()
}

/// A client of `profile` against an OP serving it, tuned by `f`.
async fn both(
    op_profiles: OpProfiles,
    profile: Profile,
    f: impl FnOnce(&mut OpConfig),
    g: impl FnOnce(oidc_dtr::DtrClientBuilder) -> oidc_dtr::DtrClientBuilder,
) -> Setup {
    let mut cfg = OpConfig::default();
    cfg.profiles = op_profiles;
    f(&mut cfg);
    setup_with(cfg, |b| g(b.profile(profile))).await
}

#[tokio::test]
async fn tokens_that_fail_validation_end_it_in_both_profiles() {
    for (op_profiles, profile) in profiles() {
        let s = both(
            op_profiles,
            profile,
            |c| {
                c.auto_approve = AutoApprove::AfterPolls(1);
                c.id_token_fault = Some(oidc_dtr_testkit::IdTokenFault::WrongNonce);
            },
            |b| b,
        )
        .await;
        let auth = start_any(&s.op, &s.client).await;
        let outcome = run_to_outcome(&s, auth.id(), S, secs(60)).await;
        assert!(
            matches!(
                outcome,
                Outcome::Rejected(oidc_dtr::poll::PollFailure::InvalidTokens(
                    oidc_dtr::error::ValidationError::Nonce
                ))
            ),
            "{profile}: {outcome:?}"
        );
        assert_eq!(
            poll_requests(&s.op).len(),
            1,
            "{profile}: never polled again"
        );
    }
}

#[tokio::test]
async fn a_lost_answer_then_invalid_grant_in_both_profiles() {
    for (op_profiles, profile) in profiles() {
        let s = both(
            op_profiles,
            profile,
            |c| c.auto_approve = AutoApprove::AfterPolls(1),
            |b| b,
        )
        .await;
        let auth = start_any(&s.op, &s.client).await;
        // The OP issues the tokens on the first poll; the answer is lost.
        s.op.inject_faults([oidc_dtr_testkit::Fault::LostResponse]);
        let outcome = run_to_outcome(&s, auth.id(), S, secs(600)).await;
        assert!(
            matches!(outcome, Outcome::PossiblyLostInTransit { .. }),
            "{profile}: {outcome:?}"
        );
    }
}

#[tokio::test]
async fn dpop_with_server_nonces_in_both_profiles() {
    for (op_profiles, profile) in profiles() {
        let s = both(
            op_profiles,
            profile,
            |c| {
                c.require_dpop = true;
                c.require_dpop_nonce = true;
                c.auto_approve = AutoApprove::AfterPolls(2);
            },
            |b| {
                b.client_id(MockOp::PUBLIC_CLIENT_ID)
                    .client_auth(ClientAuth::None)
            },
        )
        .await;
        let auth = start_any(&s.op, &s.client).await;
        assert!(s.op.dpop_binding(auth.id()).is_some(), "{profile}");
        s.op.rotate_dpop_nonce();
        let outcome = run_to_outcome(&s, auth.id(), S, secs(600)).await;
        let Outcome::Tokens(tokens) = outcome else {
            panic!("{profile}: {outcome:?}")
        };
        assert_eq!(tokens.token_type(), "DPoP", "{profile}");
        assert!(tokens.dpop_key().is_some(), "{profile}");
    }
}

#[tokio::test]
async fn transient_failures_back_off_without_losing_it_in_both_profiles() {
    for (op_profiles, profile) in profiles() {
        let s = both(
            op_profiles,
            profile,
            |c| c.auto_approve = AutoApprove::AfterPolls(1),
            |b| b,
        )
        .await;
        let auth = start_any(&s.op, &s.client).await;
        s.op.inject_faults([
            oidc_dtr_testkit::Fault::service_unavailable(30),
            oidc_dtr_testkit::Fault::html(502),
        ]);
        let outcome = run_to_outcome(&s, auth.id(), S, secs(600)).await;
        assert!(
            matches!(outcome, Outcome::Tokens(_)),
            "{profile}: {outcome:?}"
        );
        let polls = poll_requests(&s.op);
        assert_eq!(polls.len(), 3, "{profile}");
        // Retry-After: 30 was honoured.
        assert!(
            polls[1].at.saturating_duration_since(polls[0].at) >= secs(30),
            "{profile}"
        );
    }
}

#[tokio::test]
async fn a_dropped_redeem_future_loses_no_deferral() {
    let mut cfg = ietf_config();
    cfg.auto_approve = AutoApprove::AfterPolls(1);
    let s = ietf(cfg).await;
    let (url, pending) = s.client.authorize().build().unwrap();
    let cb = s.op.browse(&url).await.unwrap();
    let CallbackResponse::Code(code) = s.client.callback(&pending, cb.query()).unwrap() else {
        panic!()
    };
    s.op.inject_faults([oidc_dtr_testkit::Fault::Delay(Duration::from_millis(300))]);
    let dropped = tokio::time::timeout(Duration::from_millis(50), s.client.redeem_code(code)).await;
    assert!(
        dropped.is_err(),
        "the token request should still be waiting"
    );
    // The AS defers later; the engine takes the deferral on.
    let mut tracked = None;
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if let Some(a) = s.op.authentications().first() {
            let id = oidc_dtr::DeferredId::new(a.deferred_auth_id.clone());
            if s.client.poll_status(&id).await.is_some() {
                tracked = Some(id);
                break;
            }
        }
    }
    let id = tracked.expect("the deferral is tracked after the dropped redeem");
    assert!(matches!(
        run_to_outcome(&s, &id, S, secs(600)).await,
        Outcome::Tokens(_)
    ));
}
