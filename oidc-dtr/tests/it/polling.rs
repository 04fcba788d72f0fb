//! The poll engine against the testkit OP: every answer and fault, on a
//! virtual clock shared by the client and the OP (days pass in
//! milliseconds; nothing here measures real time).

use std::time::Duration;

use crate::support::flow::*;
use oidc_dtr::Profile;
use oidc_dtr::error::ErrorCode;
use oidc_dtr::{DtrClient, error::ValidationError};
use oidc_dtr::{
    Outcome,
    poll::{PollConfig, PollFailure},
};
use oidc_dtr::{UnixTime, time::Clock};
use oidc_dtr_testkit::{AutoApprove, Endpoint, Fault, IdTokenFault, OpConfig, OpProfiles};

const S: Duration = Duration::from_secs(1);

/// A confidential client of `profile` against an OP serving it.
async fn setup_p(mut cfg: OpConfig, op_profiles: OpProfiles, profile: Profile) -> Setup {
    cfg.profiles = op_profiles;
    setup_with(cfg, |b| b.profile(profile)).await
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The times (OP clock) of the token requests after the exchange.
fn poll_times(op: &oidc_dtr_testkit::MockOp) -> Vec<UnixTime> {
    op.requests_to(Endpoint::Token)
        .into_iter()
        .filter(|r| r.param("deferred_auth_id").is_some() || r.param("deferral_code").is_some())
        .map(|r| r.at)
        .collect()
}

fn oauth_fault(code: &str) -> Fault {
    Fault::Respond {
        status: 400,
        headers: vec![("content-type".into(), "application/json".into())],
        body: format!(r#"{{"error":"{code}"}}"#),
    }
}

#[tokio::test]
async fn polls_at_the_interval_and_delivers_validated_tokens() {
    for (op_profiles, profile) in profiles() {
        polls_at_the_interval_and_delivers_validated_tokens_in(op_profiles, profile).await;
    }
}

async fn polls_at_the_interval_and_delivers_validated_tokens_in(
    op_profiles: OpProfiles,
    profile: Profile,
) {
    let mut cfg = OpConfig::default();
    cfg.auto_approve = AutoApprove::AfterPolls(4);
    let s = setup_p(cfg, op_profiles, profile).await;
    let auth = start_any(&s.op, &s.client).await;
    let outcome = run_to_outcome(&s, auth.id(), S, secs(600)).await;
    let Outcome::Tokens(tokens) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(
        tokens.claims().subject(),
        s.op.authentication(auth.id()).unwrap().subject
    );
    assert_eq!(tokens.claims().nonce(), Some(auth.nonce().secret()));
    let times = poll_times(&s.op);
    assert_eq!(times.len(), 4);
    for w in times.windows(2) {
        assert!(w[1].saturating_duration_since(w[0]) >= secs(5), "{times:?}");
    }
    assert!(
        times[0].saturating_duration_since(auth.issued_at()) >= secs(5),
        "first poll waits one interval"
    );
    assert_eq!(s.op.authentication(auth.id()).unwrap().slow_downs, 0);
    // The outcome stays available, and no more requests are sent.
    pass(&s, secs(60), secs(5)).await;
    assert_eq!(poll_times(&s.op).len(), 4);
    assert!(matches!(
        s.client.wait(auth.id()).await.unwrap(),
        Outcome::Tokens(_)
    ));
}

#[tokio::test]
async fn progress_descriptions_become_events() {
    for (op_profiles, profile) in profiles() {
        progress_descriptions_become_events_in(op_profiles, profile).await;
    }
}

async fn progress_descriptions_become_events_in(op_profiles: OpProfiles, profile: Profile) {
    let mut cfg = OpConfig::default();
    cfg.auto_approve = AutoApprove::AfterPolls(4);
    cfg.progress_script = vec!["queued".into(), "in review".into(), "in review".into()];
    let s = setup_p(cfg, op_profiles, profile).await;
    let mut events = s.client.subscribe();
    let auth = start_any(&s.op, &s.client).await;
    run_to_outcome(&s, auth.id(), S, secs(600)).await;
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        match e {
            oidc_dtr::PollEvent::Progress { id, description } => {
                assert_eq!(&id, auth.id());
                seen.push(description);
            }
            oidc_dtr::PollEvent::Finished { outcome, .. } => {
                assert!(matches!(outcome, Outcome::Tokens(_)))
            }
            _ => {}
        }
    }
    assert_eq!(seen, vec!["queued", "in review"], "each new text once");
}

#[tokio::test]
async fn denied_and_expired_by_the_op() {
    for (op_profiles, profile) in profiles() {
        denied_and_expired_by_the_op_in(op_profiles, profile).await;
    }
}

async fn denied_and_expired_by_the_op_in(op_profiles: OpProfiles, profile: Profile) {
    let s = setup_p(OpConfig::default(), op_profiles, profile).await;
    let a = start_any(&s.op, &s.client).await;
    let b = start_any(&s.op, &s.client).await;
    s.op.deny(a.id(), Some("document not readable"));
    s.op.expire(b.id());
    assert_eq!(
        run_to_outcome(&s, a.id(), S, secs(60)).await,
        Outcome::Denied {
            description: Some("document not readable".into())
        }
    );
    assert_eq!(
        run_to_outcome(&s, b.id(), S, secs(60)).await,
        Outcome::ExpiredByOp
    );
}

#[tokio::test]
async fn terminal_errors_stop_all_requests() {
    for (op_profiles, profile) in profiles() {
        terminal_errors_stop_all_requests_in(op_profiles, profile).await;
    }
}

async fn terminal_errors_stop_all_requests_in(op_profiles: OpProfiles, profile: Profile) {
    for code in [
        "invalid_grant",
        "invalid_request",
        "invalid_client",
        "unauthorized_client",
        "unsupported_grant_type",
        "brand_new_error",
    ] {
        let s = setup_p(OpConfig::default(), op_profiles, profile).await;
        let auth = start_any(&s.op, &s.client).await;
        s.op.inject_faults([oauth_fault(code)]);
        match run_to_outcome(&s, auth.id(), S, secs(60)).await {
            Outcome::Rejected(PollFailure::OAuth(e)) => assert_eq!(e.code, ErrorCode::from(code)),
            other => panic!("{code}: {other:?}"),
        }
        let n = poll_times(&s.op).len();
        pass(&s, secs(120), secs(5)).await;
        assert_eq!(
            poll_times(&s.op).len(),
            n,
            "{code}: a request after the terminal answer"
        );
        // A cancellation is not sent either.
        assert_eq!(
            s.client.cancel(auth.id()).await.unwrap(),
            oidc_dtr::CancelResult::AlreadyFinished
        );
        assert!(s.op.requests_to(Endpoint::Cancel).is_empty());
    }
}

#[tokio::test]
async fn slow_down_raises_the_floor_for_good() {
    for (op_profiles, profile) in profiles() {
        slow_down_raises_the_floor_for_good_in(op_profiles, profile).await;
    }
}

async fn slow_down_raises_the_floor_for_good_in(op_profiles: OpProfiles, profile: Profile) {
    let mut cfg = OpConfig::default();
    cfg.auto_approve = AutoApprove::AfterPolls(4);
    let s = setup_p(cfg, op_profiles, profile).await;
    let auth = start_any(&s.op, &s.client).await;
    s.op.inject_faults([oauth_fault("slow_down")]);
    let outcome = run_to_outcome(&s, auth.id(), S, secs(600)).await;
    assert!(matches!(outcome, Outcome::Tokens(_)));
    let times = poll_times(&s.op);
    // The first poll got slow_down; every later gap is at least 10 s.
    for w in times[1..].windows(2) {
        assert!(
            w[1].saturating_duration_since(w[0]) >= secs(10),
            "{times:?}"
        );
    }
    assert!(times[1].saturating_duration_since(times[0]) >= secs(10));
    assert_eq!(
        s.client.poll_status(auth.id()).await.unwrap().floor,
        secs(10)
    );
}

#[tokio::test]
async fn transient_faults_are_survived_and_retry_after_is_honoured() {
    for (op_profiles, profile) in profiles() {
        transient_faults_are_survived_and_retry_after_is_honoured_in(op_profiles, profile).await;
    }
}

async fn transient_faults_are_survived_and_retry_after_is_honoured_in(
    op_profiles: OpProfiles,
    profile: Profile,
) {
    let mut cfg = OpConfig::default();
    cfg.auto_approve = AutoApprove::AfterPolls(1);
    cfg.profiles = op_profiles;
    let s = setup_with(cfg, |b| {
        b.profile(profile)
            .poll_config(PollConfig::default().backoff_cap(secs(20)))
    })
    .await;
    let auth = start_any(&s.op, &s.client).await;
    s.op.inject_faults([
        Fault::status(500),
        Fault::service_unavailable(30),
        Fault::too_many_requests(10),
        Fault::html(502),
        Fault::malformed_json(400),
        Fault::empty_json(500),
        Fault::Reset,
        Fault::Delay(Duration::from_millis(50)),
    ]);
    let outcome = run_to_outcome(&s, auth.id(), S, secs(3600)).await;
    assert!(matches!(outcome, Outcome::Tokens(_)), "{outcome:?}");
    assert_eq!(s.op.pending_faults(), 0);
    let times = poll_times(&s.op);
    assert_eq!(
        times.len(),
        8,
        "seven failures, then the delayed answer with the tokens"
    );
    assert!(
        times[2].saturating_duration_since(times[1]) >= secs(30),
        "Retry-After: 30 honoured: {times:?}"
    );
    assert!(
        times[3].saturating_duration_since(times[2]) >= secs(10),
        "Retry-After: 10 honoured"
    );
    for w in times.windows(2) {
        assert!(
            w[1].saturating_duration_since(w[0]) >= secs(5),
            "never below the floor: {times:?}"
        );
    }
}

#[tokio::test]
async fn a_lost_success_is_reported_not_hidden() {
    for (op_profiles, profile) in profiles() {
        a_lost_success_is_reported_not_hidden_in(op_profiles, profile).await;
    }
}

async fn a_lost_success_is_reported_not_hidden_in(op_profiles: OpProfiles, profile: Profile) {
    // A poll is not idempotent: the OP redeemed the id but the answer never arrived. The next poll
    // gets invalid_grant; the outcome says so rather than pretending it was
    // an ordinary refusal (issue 11, item 7).
    let mut cfg = OpConfig::default();
    cfg.auto_approve = AutoApprove::AfterPolls(1);
    let s = setup_p(cfg, op_profiles, profile).await;
    let auth = start_any(&s.op, &s.client).await;
    s.op.inject_faults([Fault::LostResponse]);
    match run_to_outcome(&s, auth.id(), S, secs(600)).await {
        Outcome::PossiblyLostInTransit { lost } => assert!(lost.is_some()),
        other => panic!("{other:?}"),
    }
    assert_eq!(poll_times(&s.op).len(), 2);
}

#[tokio::test]
async fn a_lost_success_is_recovered_from_an_op_that_redelivers() {
    for (op_profiles, profile) in profiles() {
        a_lost_success_is_recovered_from_an_op_that_redelivers_in(op_profiles, profile).await;
    }
}

async fn a_lost_success_is_recovered_from_an_op_that_redelivers_in(
    op_profiles: OpProfiles,
    profile: Profile,
) {
    let mut cfg = OpConfig::default();
    cfg.auto_approve = AutoApprove::AfterPolls(1);
    cfg.redelivery_window = Some(secs(60));
    let s = setup_p(cfg, op_profiles, profile).await;
    let auth = start_any(&s.op, &s.client).await;
    s.op.inject_faults([Fault::LostResponse]);
    let outcome = run_to_outcome(&s, auth.id(), S, secs(600)).await;
    assert!(matches!(outcome, Outcome::Tokens(_)), "{outcome:?}");
}

#[tokio::test]
async fn deadline_reached_after_a_final_poll() {
    for (op_profiles, profile) in profiles() {
        deadline_reached_after_a_final_poll_in(op_profiles, profile).await;
    }
}

async fn deadline_reached_after_a_final_poll_in(op_profiles: OpProfiles, profile: Profile) {
    let mut cfg = OpConfig::default();
    cfg.expires_in = Some(32);
    cfg.expire_authentications = false; // an OP that never says expired_token
    let s = setup_p(cfg, op_profiles, profile).await;
    let auth = start_any(&s.op, &s.client).await;
    let outcome = run_to_outcome(&s, auth.id(), S, secs(600)).await;
    assert!(
        matches!(
            outcome,
            Outcome::DeadlineReached {
                last_error: None,
                ..
            }
        ),
        "{outcome:?}"
    );
    let times: Vec<u64> = poll_times(&s.op)
        .iter()
        .map(|t| t.saturating_duration_since(auth.issued_at()).as_secs())
        .collect();
    // 5, 10, ..., 25, then the final one at 30 (= deadline 32 - 2 s margin).
    assert_eq!(times, vec![5, 10, 15, 20, 25, 30]);
    assert!(s.clock.now() >= auth.expires_at().unwrap());
}

#[tokio::test]
async fn tokens_that_fail_validation_are_rejected() {
    for (op_profiles, profile) in profiles() {
        tokens_that_fail_validation_are_rejected_in(op_profiles, profile).await;
    }
}

async fn tokens_that_fail_validation_are_rejected_in(op_profiles: OpProfiles, profile: Profile) {
    let mut cfg = OpConfig::default();
    cfg.auto_approve = AutoApprove::AfterPolls(1);
    cfg.id_token_fault = Some(IdTokenFault::WrongNonce);
    let s = setup_p(cfg, op_profiles, profile).await;
    let auth = start_any(&s.op, &s.client).await;
    match run_to_outcome(&s, auth.id(), S, secs(60)).await {
        Outcome::Rejected(PollFailure::InvalidTokens(ValidationError::Nonce)) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_resumed_authentication_keeps_its_deadline_and_floor() {
    for (op_profiles, profile) in profiles() {
        a_resumed_authentication_keeps_its_deadline_and_floor_in(op_profiles, profile).await;
    }
}

async fn a_resumed_authentication_keeps_its_deadline_and_floor_in(
    op_profiles: OpProfiles,
    profile: Profile,
) {
    let mut cfg = OpConfig::default();
    cfg.auto_approve = AutoApprove::AfterPolls(2);
    let s = setup_p(cfg, op_profiles, profile).await;
    let auth = start_any(&s.op, &s.client).await;
    s.op.inject_faults([oauth_fault("slow_down")]);
    pass(&s, secs(6), S).await;
    let (saved_auth, saved_state) = s.client.snapshot(auth.id()).await.unwrap();
    assert_eq!(saved_state.floor(), secs(10));
    // Serialise both, as an application without a store would, and stop.
    let auth_json = serde_json::to_string(&saved_auth).unwrap();
    let state_json = serde_json::to_string(&saved_state).unwrap();
    assert!(s.client.cancel_locally(auth.id()).await, "it was pending");
    s.clock.advance(secs(600));

    let resumed = DtrClient::builder()
        .issuer(s.op.issuer())
        .client_id(oidc_dtr_testkit::MockOp::CLIENT_ID)
        .client_secret(oidc_dtr_testkit::MockOp::CLIENT_SECRET)
        .redirect_uri(REDIRECT)
        .clock(s.clock.clone())
        .build()
        .await
        .unwrap();
    let back: oidc_dtr::DeferredAuthentication = serde_json::from_str(&auth_json).unwrap();
    let state: oidc_dtr::poll::PollMachine = serde_json::from_str(&state_json).unwrap();
    assert!(resumed.resume(back, Some(state)).await.unwrap());
    let st = resumed.poll_status(auth.id()).await.unwrap();
    assert_eq!(
        st.deadline,
        auth.expires_at().unwrap(),
        "the deadline did not move"
    );
    assert_eq!(st.floor, secs(10), "the floor survived");
    let s2 = Setup {
        op: s.op.clone(),
        client: resumed,
        clock: s.clock.clone(),
    };
    assert!(matches!(
        run_to_outcome(&s2, auth.id(), S, secs(600)).await,
        Outcome::Tokens(_)
    ));
}

#[tokio::test]
async fn wake_storms_keep_a_single_request_in_flight() {
    for (op_profiles, profile) in profiles() {
        wake_storms_keep_a_single_request_in_flight_in(op_profiles, profile).await;
    }
}

async fn wake_storms_keep_a_single_request_in_flight_in(op_profiles: OpProfiles, profile: Profile) {
    let mut cfg = OpConfig::default();
    cfg.auto_approve = AutoApprove::AfterPolls(5);
    let s = setup_p(cfg, op_profiles, profile).await;
    let auth = start_any(&s.op, &s.client).await;
    s.op.inject_faults((0..5).map(|_| Fault::Delay(Duration::from_millis(40))));
    for _ in 0..40 {
        for _ in 0..5 {
            // False once the authentication has finished.
            let _pending = s.client.wake(auth.id()).await;
        }
        s.clock.advance(S);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let outcome = run_to_outcome(&s, auth.id(), S, secs(600)).await;
    assert!(matches!(outcome, Outcome::Tokens(_)));
    let snap = s.op.authentication(auth.id()).unwrap();
    assert_eq!(snap.slow_downs, 0, "never faster than the interval");
    assert_eq!(snap.polls, 5);
}

#[tokio::test]
async fn a_deadline_after_transport_failures_keeps_the_typed_cause_in_memory() {
    for (op_profiles, profile) in profiles() {
        a_deadline_after_transport_failures_keeps_the_typed_cause_in_memory_in(
            op_profiles,
            profile,
        )
        .await;
    }
}

async fn a_deadline_after_transport_failures_keeps_the_typed_cause_in_memory_in(
    op_profiles: OpProfiles,
    profile: Profile,
) {
    // Issue 10 item 4: the outcome carries the real error (not only its
    // text) in this process; read back from its serialised form, the text.
    let mut cfg = OpConfig::default();
    cfg.expires_in = Some(32);
    cfg.expire_authentications = false;
    let s = setup_p(cfg, op_profiles, profile).await;
    let auth = start_any(&s.op, &s.client).await;
    s.op.inject_faults((0..20).map(|_| Fault::Reset));
    let outcome = run_to_outcome(&s, auth.id(), S, secs(600)).await;
    let Outcome::DeadlineReached { last_error, .. } = &outcome else {
        panic!("{outcome:?}");
    };
    let text = last_error.clone().expect("the resets are recorded");
    let cause = outcome.cause().expect("the cause is kept in memory");
    let http = cause
        .downcast_ref::<oidc_dtr::error::HttpError>()
        .expect("the cause is the typed HTTP error");
    assert!(
        matches!(http, oidc_dtr::error::HttpError::Transport { .. }),
        "{http:?}"
    );
    // The text is the cause's own message; the chain goes on below it (the
    // HTTP client's error).
    assert_eq!(cause.to_string(), text);
    assert!(cause.source().is_some(), "{cause:?}");

    let json = serde_json::to_string(&outcome).unwrap();
    assert!(!json.contains("last_cause"), "{json}");
    let back: Outcome = serde_json::from_str(&json).unwrap();
    assert_eq!(back, outcome, "equality ignores the in-memory cause");
    match &back {
        Outcome::DeadlineReached { last_error, .. } => {
            assert_eq!(last_error.as_deref(), Some(text.as_str()));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        back.cause().is_none(),
        "after a restart only the text remains"
    );
}
