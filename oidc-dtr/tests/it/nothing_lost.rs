//! Issue 11: every authentication the OP accepted ends in exactly one
//! outcome that says truthfully what happened.

use std::time::Duration;

use crate::support::flow::*;
use oidc_dtr::{
    Outcome,
    error::{LiveAuthentication, NotCancelledReason, ValidationError},
    poll::PollFailure,
};
use oidc_dtr_testkit::{AuthState, AutoApprove, Endpoint, Fault, IdTokenFault, OpConfig};

const S: Duration = Duration::from_secs(1);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn polls(op: &oidc_dtr_testkit::MockOp) -> usize {
    op.requests_to(Endpoint::Token)
        .into_iter()
        .filter(|r| r.param("deferred_auth_id").is_some())
        .count()
}

fn ok_json(body: &str) -> Fault {
    Fault::Respond {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.into(),
    }
}

/// Item 6: a 200 token response that breaks a rule ends the authentication
/// with "tokens received but refused", and the spent id is never polled
/// again (it used to be polled and answer `invalid_grant`).
#[tokio::test]
async fn a_200_that_breaks_a_rule_is_refused_and_never_polled_again() {
    for body in [
        r#"{"access_token":"at-1"}"#,
        r#"{"access_token":"at-1","token_type":""}"#,
        r#"{"access_token":"at-1","token_type":7}"#,
        r#"{"access_token":"at-1","token_type":"Bearer","expires_in":"3600.5"}"#,
        r#"{"access_token":"at-1","token_type":"Bearer","expires_in":0}"#,
        r#"{"access_token":"at-1","token_type":"Bearer","expires_in":-1}"#,
    ] {
        let s = setup(OpConfig::default()).await;
        let auth = start(&s.op, &s.client).await;
        s.op.inject_faults([ok_json(body)]);
        let outcome = run_to_outcome(&s, auth.id(), S, secs(600)).await;
        match &outcome {
            Outcome::Rejected(PollFailure::TokensRefused { reason, .. }) => {
                assert!(!reason.contains("at-1"), "no token in the reason: {reason}");
                assert!(
                    reason.contains("token_type") || reason.contains("expires_in"),
                    "{reason}"
                );
            }
            other => panic!("{body}: {other:?}"),
        }
        assert_eq!(outcome.kind(), "rejected");
        // No poll after the 200, however long we wait.
        pass(&s, secs(60), S).await;
        assert_eq!(polls(&s.op), 1, "{body}");
    }
}

/// Item 6: a 200 that is not JSON (a proxy page) is not a token response:
/// polling goes on, and the OP's real answer arrives.
#[tokio::test]
async fn a_200_proxy_page_is_retried() {
    let mut cfg = OpConfig::default();
    cfg.auto_approve = AutoApprove::AfterPolls(1);
    let s = setup(cfg).await;
    let auth = start(&s.op, &s.client).await;
    s.op.inject_faults([Fault::html(200)]);
    let outcome = run_to_outcome(&s, auth.id(), S, secs(600)).await;
    assert!(matches!(outcome, Outcome::Tokens(_)), "{outcome:?}");
}

/// Item 6: an OAuth error sent as `text/plain` is read as that error.
#[tokio::test]
async fn an_oauth_error_as_text_plain_is_that_error() {
    let s = setup(OpConfig::default()).await;
    let auth = start(&s.op, &s.client).await;
    s.op.inject_faults([Fault::Respond {
        status: 400,
        headers: vec![("content-type".into(), "text/plain".into())],
        body: r#"{"error":"access_denied","error_description":"no"}"#.into(),
    }]);
    let outcome = run_to_outcome(&s, auth.id(), S, secs(600)).await;
    assert!(
        matches!(&outcome, Outcome::Denied { description: Some(d) } if d == "no"),
        "{outcome:?}"
    );
}

/// Item 10: without a cancellation endpoint, `cancel()` says the OP was not
/// told (it used to answer a bare `Ok(())`), and polling stops.
#[tokio::test]
async fn cancel_without_an_endpoint_says_the_op_was_not_told() {
    let s = setup(OpConfig::default()).await;
    let auth = start(&s.op, &s.client).await;
    let r = s.client.cancel(auth.id()).await.unwrap();
    assert_eq!(r, oidc_dtr::CancelResult::LocalOnly);
    assert!(!r.op_told());
    assert!(s.op.requests_to(Endpoint::Cancel).is_empty());
    assert!(matches!(
        s.client.wait(auth.id()).await.unwrap(),
        Outcome::Cancelled
    ));
    assert_eq!(
        s.client.cancel(auth.id()).await.unwrap(),
        oidc_dtr::CancelResult::AlreadyFinished
    );
}

/// Item 11: the poll cadence while pings are expected is explicit: passing
/// `PollConfig::default()` no longer turns the 60 s safety net off, and
/// `notified_poll_cadence` sets it.
#[tokio::test]
async fn the_notified_cadence_is_explicit() {
    type Configure = fn(oidc_dtr::DtrClientBuilder) -> oidc_dtr::DtrClientBuilder;
    let cases: [(Configure, u64); 5] = [
        (|b| b, 60),
        (|b| b.poll_config(oidc_dtr::poll::PollConfig::default()), 60),
        (|b| b.notified_poll_cadence(None), 5),
        (|b| b.notified_poll_cadence(Some(secs(30))), 30),
        (
            |b| {
                b.poll_config(oidc_dtr::poll::PollConfig::default())
                    .notified_poll_cadence(Some(secs(20)))
            },
            20,
        ),
    ];
    for (i, (configure, expected)) in cases.into_iter().enumerate() {
        let (_listener, url) = crate::support::rp::bind().await;
        let u = url.clone();
        let s = setup_with(OpConfig::default(), move |b| {
            configure(
                b.client_id("rp")
                    .client_secret("rp-secret")
                    .notification_endpoint(u),
            )
        })
        .await;
        s.op.register_client(
            oidc_dtr_testkit::RegisteredClient::confidential("rp", "rp-secret")
                .with_notification_endpoint(url.clone()),
        );
        let auth = start(&s.op, &s.client).await;
        let status = s.client.poll_status(auth.id()).await.unwrap();
        assert_eq!(
            status.next_poll,
            Some(auth.issued_at().saturating_add(secs(expected))),
            "case {i}"
        );
    }
    // Without a notification endpoint the cadence never applies.
    let s = setup_with(OpConfig::default(), |b| {
        b.notified_poll_cadence(Some(secs(30)))
    })
    .await;
    let auth = start(&s.op, &s.client).await;
    let status = s.client.poll_status(auth.id()).await.unwrap();
    assert_eq!(
        status.next_poll,
        Some(auth.issued_at().saturating_add(secs(5)))
    );
}

/// Item 11: with only a secret given, the method follows the OP's
/// metadata: an OP that lists only `client_secret_post` gets the secret in
/// the body, not a Basic header.
#[tokio::test]
async fn a_bare_secret_uses_the_method_the_op_supports() {
    let clock = std::sync::Arc::new(oidc_dtr::time::ManualClock::new(T0));
    let op = crate::support::flow::op(OpConfig::default(), &clock).await;
    let mut md = op.metadata_json();
    md["token_endpoint_auth_methods_supported"] = serde_json::json!(["client_secret_post"]);
    let md = oidc_dtr::ProviderMetadata::from_json(md.to_string().as_bytes()).unwrap();
    let client = oidc_dtr::DtrClient::builder()
        .metadata(md)
        .client_id(oidc_dtr_testkit::MockOp::CLIENT_ID)
        .client_secret(oidc_dtr_testkit::MockOp::CLIENT_SECRET)
        .redirect_uri(REDIRECT)
        .clock(clock.clone())
        .build()
        .await
        .unwrap();
    start(&op, &client).await;
    let reqs = op.requests_to(Endpoint::Token);
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        reqs[0].param("client_secret"),
        Some(oidc_dtr_testkit::MockOp::CLIENT_SECRET)
    );
    assert_eq!(reqs[0].header("authorization"), None);
}

/// Item 2: the OP rotates its keys twice within the unknown-`kid` refresh
/// cooldown. The second authentication's final tokens name a key the cache
/// lacks while the cooldown runs: they force one refresh at once (they used
/// to end as `InvalidTokens(UnknownKid)`, the tokens lost, and later waited
/// out the cooldown).
#[tokio::test]
async fn final_tokens_survive_two_rotations_within_the_cooldown() {
    let s = setup(OpConfig::default()).await;
    let a0 = start(&s.op, &s.client).await;
    let a1 = start(&s.op, &s.client).await;
    let a2 = start(&s.op, &s.client).await;
    // The cache learns the first key.
    s.op.approve(a0.id());
    let o0 = run_to_outcome(&s, a0.id(), S, secs(600)).await;
    assert!(matches!(o0, Outcome::Tokens(_)), "{o0:?}");
    // First rotation: an unknown kid, a forced refresh, the cooldown starts.
    s.op.rotate_key();
    s.op.approve(a1.id());
    let o1 = run_to_outcome(&s, a1.id(), S, secs(600)).await;
    assert!(matches!(o1, Outcome::Tokens(_)), "{o1:?}");
    // Second rotation, seconds after the forced refresh the first made.
    s.op.rotate_key();
    s.op.approve(a2.id());
    // Move the virtual clock without waiting for the engine to be idle (a
    // poll that waited for the cooldown would need it).
    let mut outcome = None;
    for _ in 0..400 {
        if s.client
            .poll_status(a2.id())
            .await
            .is_some_and(|st| st.finished)
        {
            outcome = Some(s.client.wait(a2.id()).await.unwrap());
            break;
        }
        s.clock.advance(S);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let o2 = outcome.expect("an outcome");
    assert!(matches!(o2, Outcome::Tokens(_)), "{o2:?}");
}

/// Item 4: the caller drops the `exchange` future after the request was
/// sent (a browser that disconnected from the handler): the OP's answer is
/// still checked, stored and tracked, and the authentication is polled.
#[tokio::test]
async fn a_dropped_exchange_future_loses_nothing() {
    let mut cfg = OpConfig::default();
    cfg.auto_approve = AutoApprove::AfterPolls(1);
    let s = setup(cfg).await;
    let (url, pending) = s.client.authorize().build().unwrap();
    let cb = s.op.browse(&url).await.unwrap();
    let ack = match s.client.callback(&pending, cb.query()).unwrap() {
        oidc_dtr::CallbackResponse::Acknowledgment(a) => a,
        other => panic!("{other:?}"),
    };
    s.op.inject_faults([Fault::Delay(Duration::from_millis(300))]);
    let dropped = tokio::time::timeout(Duration::from_millis(50), s.client.exchange(ack)).await;
    assert!(dropped.is_err(), "the exchange should still be waiting");
    // The OP answers later; the engine takes the authentication on.
    let mut tracked = None;
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let ids: Vec<_> =
            s.op.authentications()
                .into_iter()
                .map(|a| a.deferred_auth_id)
                .collect();
        if let Some(id) = ids.first() {
            let id = oidc_dtr::DeferredId::new(id.clone());
            if s.client.poll_status(&id).await.is_some() {
                tracked = Some(id);
                break;
            }
        }
    }
    let id = tracked.expect("the authentication is tracked after the dropped exchange");
    let outcome = run_to_outcome(&s, &id, S, secs(600)).await;
    assert!(matches!(outcome, Outcome::Tokens(_)), "{outcome:?}");
}

/// "Done when": many authentications through lost responses, 5xx, resets,
/// proxy pages, post-redemption rule violations, key rotations within the
/// refresh cooldown and dropped `exchange` futures. Each ends in exactly
/// one outcome that names what happened, and the OP saw no poll inside the
/// floor (it answers those `slow_down`, and counted none).
#[tokio::test]
async fn many_authentications_each_end_in_exactly_one_honest_outcome() {
    let mut cfg = OpConfig::default();
    cfg.auto_approve = AutoApprove::AfterPolls(3);
    let s = setup(cfg).await;
    let mut events = s.client.subscribe();
    let finished = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::<
        String,
        u32,
    >::new()));
    let f = finished.clone();
    tokio::spawn(async move {
        while let Ok(ev) = events.recv().await {
            if let oidc_dtr::PollEvent::Finished { id, .. } = ev {
                *f.lock().unwrap().entry(id.secret().to_owned()).or_default() += 1;
            }
        }
    });
    const N: usize = 24;
    for i in 0..N {
        if i % 6 == 5 {
            // A caller that gives up while the OP is answering.
            let (url, pending) = s.client.authorize().build().unwrap();
            let cb = s.op.browse(&url).await.unwrap();
            let ack = match s.client.callback(&pending, cb.query()).unwrap() {
                oidc_dtr::CallbackResponse::Acknowledgment(a) => a,
                other => panic!("{other:?}"),
            };
            s.op.inject_faults([Fault::Delay(Duration::from_millis(100))]);
            let r = tokio::time::timeout(Duration::from_millis(10), s.client.exchange(ack)).await;
            assert!(r.is_err());
            tokio::time::sleep(Duration::from_millis(200)).await;
        } else {
            start(&s.op, &s.client).await;
        }
    }
    let ids: Vec<oidc_dtr::DeferredId> =
        s.op.authentications()
            .into_iter()
            .map(|a| oidc_dtr::DeferredId::new(a.deferred_auth_id))
            .collect();
    assert_eq!(ids.len(), N);
    let refused = r#"{"access_token":"at","token_type":"Bearer","expires_in":"1.5"}"#;
    // Early faults hit pending polls: transient, retried.
    s.op.inject_faults([
        Fault::LostResponse,
        Fault::status(502),
        Fault::Reset,
        Fault::html(200),
        Fault::service_unavailable(3),
        Fault::status(500),
    ]);
    let mut all_done = false;
    for step in 0..900u32 {
        if step == 8 || step == 12 {
            s.op.rotate_key();
        }
        if step == 14 {
            // The polls that redeem (the third, at about 15 s): answers
            // lost, or breaking a rule.
            s.op.inject_faults([
                Fault::LostResponse,
                ok_json(refused),
                Fault::LostResponse,
                ok_json(r#"{"access_token":"at"}"#),
                Fault::LostResponse,
            ]);
        }
        let mut done = true;
        for id in &ids {
            if !s.client.poll_status(id).await.is_some_and(|st| st.finished) {
                done = false;
                break;
            }
        }
        if done {
            all_done = true;
            break;
        }
        s.clock.advance(S);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(all_done, "every authentication ended");
    settle().await;
    let mut kinds = std::collections::BTreeMap::<&'static str, u32>::new();
    for id in &ids {
        let outcome = s.client.wait(id).await.unwrap();
        match &outcome {
            Outcome::Tokens(_)
            | Outcome::PossiblyLostInTransit { .. }
            | Outcome::Rejected(PollFailure::TokensRefused { .. }) => {}
            other => panic!("an outcome that does not say what happened: {other:?}"),
        }
        *kinds.entry(outcome.kind()).or_default() += 1;
        assert_eq!(
            finished.lock().unwrap().get(id.secret()).copied(),
            Some(1),
            "exactly one outcome"
        );
        let at_op = s.op.authentication(id).unwrap();
        assert_eq!(at_op.slow_downs, 0, "a poll inside the floor");
    }
    assert!(kinds.get("tokens").copied().unwrap_or(0) > 0, "{kinds:?}");
    assert!(
        kinds.get("possibly_lost_in_transit").copied().unwrap_or(0) > 0,
        "{kinds:?}"
    );
    assert!(kinds.get("rejected").copied().unwrap_or(0) > 0, "{kinds:?}");
}

/// authorize → browser → callback: the acknowledgment to exchange.
async fn acknowledgment(s: &Setup) -> oidc_dtr::Acknowledgment {
    let (url, pending) = s.client.authorize().build().unwrap();
    let cb = s.op.browse(&url).await.unwrap();
    match s.client.callback(&pending, cb.query()).unwrap() {
        oidc_dtr::CallbackResponse::Acknowledgment(a) => a,
        other => panic!("{other:?}"),
    }
}

/// Item 3: the JWK Set is unreachable when the interim ID token arrives.
/// Validation is retried like the final tokens' (it used to give up within
/// the JWKS cache's error backoff, after the OP had spent the code), and
/// the exchange succeeds once the set can be fetched again.
#[tokio::test]
async fn an_interim_token_survives_a_jwks_outage() {
    let mut cfg = OpConfig::default();
    cfg.interim_id_token = true;
    cfg.jwks_unavailable = true;
    let s = setup(cfg).await;
    let ack = acknowledgment(&s).await;
    let client = s.client.clone();
    let exchange = tokio::spawn(async move { client.exchange(ack).await });
    // The first fetch fails; the outage then ends.
    for _ in 0..500 {
        if !s.op.requests_to(Endpoint::Jwks).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(s.op.requests_to(Endpoint::Jwks)[0].status, 503);
    s.op.configure(|c| c.jwks_unavailable = false);
    for _ in 0..120 {
        if exchange.is_finished() {
            break;
        }
        s.clock.advance(S);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let auth = exchange.await.unwrap().expect("the exchange succeeds");
    assert!(auth.interim_claims().is_some());
    assert!(s.client.poll_status(auth.id()).await.is_some(), "tracked");
    let jwks = s.op.requests_to(Endpoint::Jwks);
    assert_eq!(jwks.last().unwrap().status, 200, "{jwks:?}");
    assert!(s.op.requests_to(Endpoint::Cancel).is_empty());
}

/// Item 3: a permanently invalid interim ID token, with a cancellation
/// endpoint: the live `deferred_auth_id` the OP created is cancelled there,
/// and the error says so (it used to be dropped silently).
#[tokio::test]
async fn a_rejected_interim_token_is_cancelled_at_the_op() {
    let mut cfg = OpConfig::default();
    cfg.interim_id_token = true;
    cfg.interim_id_token_fault = Some(IdTokenFault::WrongNonce);
    let clock = std::sync::Arc::new(oidc_dtr::time::ManualClock::new(T0));
    let op = op(cfg, &clock).await;
    let cancel =
        oidc_dtr::client::CancellationConfig::new(op.url("/df-authentication/cancel").as_str())
            .unwrap();
    let client = oidc_dtr::DtrClient::builder()
        .issuer(op.issuer())
        .client_id(oidc_dtr_testkit::MockOp::CLIENT_ID)
        .client_secret(oidc_dtr_testkit::MockOp::CLIENT_SECRET)
        .redirect_uri(REDIRECT)
        .clock(clock.clone())
        .cancellation(cancel)
        .build()
        .await
        .unwrap();
    let s = Setup { op, client, clock };
    let ack = acknowledgment(&s).await;
    let err = s.client.exchange(ack).await.unwrap_err();
    let [at_op] = &s.op.authentications()[..] else {
        panic!("one authentication at the OP");
    };
    match &err {
        oidc_dtr::Error::InterimIdTokenRejected {
            source: ValidationError::Nonce,
            live_authentication: LiveAuthentication::CancelledAtOp,
        } => {}
        other => panic!("{other:?}"),
    }
    assert!(!err.to_string().contains(&at_op.deferred_auth_id), "{err}");
    assert!(err.to_string().contains("cancelled at the OP"), "{err}");
    // The cause is the source, not repeated in the message.
    let source = std::error::Error::source(&err).expect("a source");
    assert!(!err.to_string().contains(&source.to_string()), "{err}");
    assert_eq!(err.validation(), Some(&ValidationError::Nonce));
    let cancels = s.op.requests_to(Endpoint::Cancel);
    assert_eq!(cancels.len(), 1);
    assert_eq!(cancels[0].status, 200);
    assert_eq!(
        cancels[0].param("deferred_auth_id"),
        Some(at_op.deferred_auth_id.as_str())
    );
    assert_eq!(at_op.state, AuthState::Cancelled);
    let id = oidc_dtr::DeferredId::new(at_op.deferred_auth_id.clone());
    assert!(s.client.poll_status(&id).await.is_none(), "not tracked");
}

/// Item 3: the same without a cancellation endpoint: the error says the
/// authentication is still live at the OP (the OP was not told).
#[tokio::test]
async fn a_rejected_interim_token_without_an_endpoint_says_it_is_still_live() {
    let mut cfg = OpConfig::default();
    cfg.interim_id_token = true;
    cfg.interim_id_token_fault = Some(IdTokenFault::WrongNonce);
    let s = setup(cfg).await;
    let ack = acknowledgment(&s).await;
    let err = s.client.exchange(ack).await.unwrap_err();
    match &err {
        oidc_dtr::Error::InterimIdTokenRejected {
            source: ValidationError::Nonce,
            live_authentication:
                l @ LiveAuthentication::NotCancelled(NotCancelledReason::NoCancellationEndpoint),
        } => assert!(l.is_live_at_op()),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("still live at the OP"), "{err}");
    assert!(s.op.requests_to(Endpoint::Cancel).is_empty());
    let [at_op] = &s.op.authentications()[..] else {
        panic!("one authentication at the OP");
    };
    assert_eq!(at_op.state, AuthState::Pending);
}
