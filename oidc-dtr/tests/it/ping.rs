//! Ping Callbacks end to end: the mock OP pings the SDK's receiver mounted on
//! a bare hyper server, and the poller wakes. Every test runs against both
//! profiles (`deferred_auth_id` and `deferred_notification_token`, or
//! `deferral_code` and `client_notification_token`).

use std::time::Duration;

use crate::support::flow::*;
use oidc_dtr::Outcome;
use oidc_dtr::Profile;
use oidc_dtr_testkit::{Endpoint, MockOp, OpConfig, OpProfiles, RegisteredClient};

const S: Duration = Duration::from_secs(1);

fn polls(op: &MockOp) -> usize {
    op.requests_to(Endpoint::Token)
        .iter()
        .filter(|r| r.param("deferred_auth_id").is_some() || r.param("deferral_code").is_some())
        .count()
}

/// An OP and a client with a notification endpoint, and the receiver
/// serving it.
async fn setup_pings(
    mut cfg: OpConfig,
    op_profiles: OpProfiles,
    profile: Profile,
) -> (Setup, String) {
    cfg.profiles = op_profiles;
    let (listener, url) = crate::support::rp::bind().await;
    let u = url.clone();
    let s = setup_with(cfg, move |b| {
        b.profile(profile)
            .client_id("rp")
            .client_secret("rp-secret")
            .notification_endpoint(u)
    })
    .await;
    s.op.register_client(
        RegisteredClient::confidential("rp", "rp-secret").with_notification_endpoint(url.clone()),
    );
    crate::support::rp::serve(listener, s.client.ping_receiver());
    (s, url)
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
async fn ping_then_one_poll_delivers_validated_tokens() {
    for (op_profiles, profile) in profiles() {
        ping_then_one_poll_delivers_validated_tokens_in(op_profiles, profile).await;
    }
}

async fn ping_then_one_poll_delivers_validated_tokens_in(
    op_profiles: OpProfiles,
    profile: Profile,
) {
    let (s, _) = setup_pings(OpConfig::default(), op_profiles, profile).await;
    let auth = start_any(&s.op, &s.client).await;
    // The notification token was sent and is bound at the OP.
    assert!(
        s.op.authentication(auth.id())
            .unwrap()
            .notification_token
            .is_some()
    );
    // With pings expected, polling is a 60 s safety net: nothing in 30 s.
    pass(&s, Duration::from_secs(30), S).await;
    assert_eq!(polls(&s.op), 0);
    assert_eq!(s.client.pending_count().await, (1, 0));
    assert_eq!(s.client.stats().pending, 1);
    // The OP decides and pings; the floor (5 s) has long elapsed.
    s.op.approve(auth.id());
    eventually(|| s.op.pings().iter().any(|p| p.status == Some(204))).await;
    let outcome = tokio::time::timeout(Duration::from_secs(5), s.client.wait(auth.id()))
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(outcome, Outcome::Tokens(_)), "{outcome:?}");
    assert_eq!(polls(&s.op), 1, "ping -> exactly one token request");
    // The counters saw the same: one poll, one accepted ping, nothing left
    // pending once the outcome is stored.
    let stats = s.client.stats();
    assert_eq!((stats.polls, stats.pings_accepted), (1, 1), "{stats:?}");
    assert_eq!(
        (stats.pending, stats.outcomes_unstored),
        (0, 0),
        "{stats:?}"
    );
    assert_eq!(s.client.pending_count().await, (0, 0));
}

#[tokio::test]
async fn forged_and_unknown_pings_wake_nothing_and_look_the_same() {
    for (op_profiles, profile) in profiles() {
        forged_and_unknown_pings_wake_nothing_and_look_the_same_in(op_profiles, profile).await;
    }
}

async fn forged_and_unknown_pings_wake_nothing_and_look_the_same_in(
    op_profiles: OpProfiles,
    profile: Profile,
) {
    let (s, url) = setup_pings(OpConfig::default(), op_profiles, profile).await;
    let auth = start_any(&s.op, &s.client).await;
    pass(&s, Duration::from_secs(10), S).await;
    assert_eq!(
        s.op.send_forged_ping(auth.id(), "not-the-token").await,
        Some(401)
    );
    settle_for(&s.client).await;
    assert_eq!(polls(&s.op), 0, "a forged ping wakes nothing");

    // Byte-identical answers for a wrong token and an unknown id.
    let token =
        s.op.authentication(auth.id())
            .unwrap()
            .notification_token
            .unwrap();
    let http = reqwest::Client::new();
    let send = |id: String, tok: String| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let r = http
                .post(&url)
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {tok}"))
                .body(serde_json::json!({ profile.handle_name(): id }).to_string())
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let mut headers: Vec<(String, String)> = r
                .headers()
                .iter()
                .filter(|(k, _)| k.as_str() != "date")
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
                .collect();
            headers.sort();
            (status, headers, r.bytes().await.unwrap())
        }
    };
    let wrong_token = send(auth.id().secret().to_owned(), "x".repeat(token.len())).await;
    let unknown_id = send("no-such-authentication".into(), token.clone()).await;
    assert_eq!(wrong_token, unknown_id);
    assert_eq!(wrong_token.0, 401);
    settle_for(&s.client).await;
    assert_eq!(polls(&s.op), 0);
}

#[tokio::test]
async fn an_early_ping_is_followed_by_a_poll_and_polling_goes_on() {
    for (op_profiles, profile) in profiles() {
        an_early_ping_is_followed_by_a_poll_and_polling_goes_on_in(op_profiles, profile).await;
    }
}

async fn an_early_ping_is_followed_by_a_poll_and_polling_goes_on_in(
    op_profiles: OpProfiles,
    profile: Profile,
) {
    let mut cfg = OpConfig::default();
    cfg.send_pings = false; // only the pings this test sends by hand
    let (s, _) = setup_pings(cfg, op_profiles, profile).await;
    let auth = start_any(&s.op, &s.client).await;
    pass(&s, Duration::from_secs(10), S).await;
    // The OP (wrongly) pings before deciding: one poll, still pending.
    assert_eq!(s.op.send_ping(auth.id()).await, Some(204));
    settle_for(&s.client).await;
    assert_eq!(polls(&s.op), 1);
    // Polling goes on at the safety-net cadence: the next poll at 70 s.
    pass(&s, Duration::from_secs(62), S).await;
    assert_eq!(polls(&s.op), 2);
    // A duplicate ping at 72 s, inside the floor: the poll waits for 75 s.
    assert_eq!(s.op.send_ping(auth.id()).await, Some(204));
    settle_for(&s.client).await;
    assert_eq!(polls(&s.op), 2, "not before the floor");
    pass(&s, Duration::from_secs(3), S).await;
    assert_eq!(polls(&s.op), 3, "at the floor");
    s.op.approve(auth.id());
    let outcome = run_to_outcome(&s, auth.id(), S, Duration::from_secs(120)).await;
    assert!(matches!(outcome, Outcome::Tokens(_)));
    assert_eq!(s.op.authentication(auth.id()).unwrap().slow_downs, 0);
}

#[tokio::test]
async fn a_ping_for_a_finished_authentication_is_204_and_wakes_nothing() {
    for (op_profiles, profile) in profiles() {
        a_ping_for_a_finished_authentication_is_204_and_wakes_nothing_in(op_profiles, profile)
            .await;
    }
}

async fn a_ping_for_a_finished_authentication_is_204_and_wakes_nothing_in(
    op_profiles: OpProfiles,
    profile: Profile,
) {
    let (s, _) = setup_pings(OpConfig::default(), op_profiles, profile).await;
    let auth = start_any(&s.op, &s.client).await;
    s.op.deny(auth.id(), Some("not attested"));
    eventually(|| !s.op.pings().is_empty()).await;
    let outcome = run_to_outcome(&s, auth.id(), S, Duration::from_secs(30)).await;
    assert!(matches!(outcome, Outcome::Denied { .. }));
    let n = polls(&s.op);
    assert_eq!(s.op.send_ping(auth.id()).await, Some(204));
    settle_for(&s.client).await;
    assert_eq!(polls(&s.op), n);
}
