//! Issue 22, finding 1: against an OP that counts the interval from the
//! moment it *answered* the request before (the exchange, the IETF initial
//! token request, the device authorization, each poll), with no tolerance,
//! and that is slow to answer: not one `slow_down`.
//!
//! The first tests run on the virtual clock shared by the client and the OP:
//! while the OP holds its answer (a real-time latency), the virtual clock
//! moves 400 ms, so the answer leaves 400 ms (virtual) after the request
//! arrived. The load test runs on the real clock.

use std::future::Future;
use std::time::Duration;

use crate::support::flow::*;
use oidc_dtr::{CallbackResponse, Clock, DtrClient, Outcome, Profile, Redemption};
use oidc_dtr_testkit::{AutoApprove, Endpoint, MockOp, OpConfig, OpProfiles};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A strict OP: 1 s interval counted from its answers, slow answers to the
/// requests that start a deferral, approval on the third poll.
fn strict_config(profiles: OpProfiles) -> OpConfig {
    let mut cfg = OpConfig::default();
    cfg.profiles = profiles;
    cfg.interval = Some(1);
    cfg.strict_interval = true;
    // Real time: the OP holds the answer this long; the test moves the
    // virtual clock meanwhile.
    cfg.exchange_latency = Some(ms(200));
    cfg.auto_approve = AutoApprove::AfterPolls(3);
    cfg
}

/// Runs `fut`, a request to `endpoint` that the OP answers slowly; as soon
/// as the OP has received it, the virtual clock moves 400 ms, so the answer
/// leaves 400 ms (virtual) after the request arrived. (The tests run on a
/// current-thread runtime: the OP's 200 ms timer cannot fire before this
/// 1 ms one.)
async fn slow_answer<T>(s: &Setup, endpoint: Endpoint, fut: impl Future<Output = T>) -> T {
    let before = s.op.request_count(endpoint);
    let advance = async {
        for _ in 0..10_000 {
            if s.op.request_count(endpoint) > before {
                s.clock.advance(ms(400));
                return;
            }
            tokio::time::sleep(ms(1)).await;
        }
        panic!("the request never reached the OP");
    };
    let (out, ()) = tokio::join!(fut, advance);
    out
}

/// The OP saw no poll inside its floor and answered no `slow_down`; the
/// client saw none either.
fn assert_never_early(s: &Setup, id: &oidc_dtr::DeferredAuthId) {
    let report = s.op.flight_report();
    assert!(
        report.floor_violations.is_empty(),
        "{:?}",
        report.floor_violations
    );
    assert_eq!(report.slow_downs, 0);
    assert_eq!(s.op.authentication(id).unwrap().slow_downs, 0);
    assert_eq!(s.client.stats().slow_downs, 0);
}

/// The first poll reached the OP a full interval after `answered`, the
/// moment the OP's answer that created the deferral left (the virtual clock
/// did not move between that and the client reading it), and the client
/// recorded that moment.
fn assert_first_poll_waited(
    s: &Setup,
    auth: &oidc_dtr::DeferredAuthentication,
    answered: oidc_dtr::UnixTime,
) {
    let polls = poll_requests(&s.op);
    assert!(polls.len() >= 3, "{}", polls.len());
    assert!(
        polls[0].at >= answered.saturating_add(ms(1_000)),
        "first poll {:?}, answer {answered:?}",
        polls[0].at,
    );
    assert_eq!(auth.answered_at(), answered);
}

#[tokio::test]
async fn oidc_slow_exchange_answer_strict_op_no_slow_down() {
    let s = setup(strict_config(OpProfiles::Oidc)).await;
    let (url, pending) = s.client.authorize().build().unwrap();
    let cb = s.op.browse(&url).await.unwrap();
    let CallbackResponse::Acknowledgment(ack) = s.client.callback(&pending, cb.query()).unwrap()
    else {
        panic!("a deferred code")
    };
    let auth = slow_answer(&s, Endpoint::Token, s.client.exchange(ack))
        .await
        .unwrap();
    let answered = s.clock.now();
    assert!(answered >= auth.issued_at().saturating_add(ms(400)));
    let outcome = run_to_outcome(&s, auth.id(), ms(100), Duration::from_secs(60)).await;
    assert!(matches!(outcome, Outcome::Tokens(_)), "{outcome:?}");
    assert_never_early(&s, auth.id());
    assert_first_poll_waited(&s, &auth, answered);
}

#[tokio::test]
async fn ietf_slow_initial_token_answer_strict_op_no_slow_down() {
    let s = setup_with(strict_config(OpProfiles::Ietf), |b| {
        b.profile(Profile::Ietf)
    })
    .await;
    let (url, pending) = s.client.authorize().build().unwrap();
    let cb = s.op.browse(&url).await.unwrap();
    let CallbackResponse::Code(code) = s.client.callback(&pending, cb.query()).unwrap() else {
        panic!("a code")
    };
    let Redemption::Deferred(auth) = slow_answer(&s, Endpoint::Token, s.client.redeem_code(code))
        .await
        .unwrap()
    else {
        panic!("deferred")
    };
    let answered = s.clock.now();
    assert!(answered >= auth.issued_at().saturating_add(ms(400)));
    let outcome = run_to_outcome(&s, auth.id(), ms(100), Duration::from_secs(60)).await;
    assert!(matches!(outcome, Outcome::Tokens(_)), "{outcome:?}");
    assert_never_early(&s, auth.id());
    assert_first_poll_waited(&s, &auth, answered);
}

#[tokio::test]
async fn device_grant_slow_answers_strict_op_no_slow_down() {
    let s = setup_with(strict_config(OpProfiles::Ietf), |b| {
        b.profile(Profile::Ietf)
    })
    .await;
    let device = slow_answer(
        &s,
        Endpoint::DeviceAuthorization,
        s.client.device_authorization(""),
    )
    .await
    .unwrap();
    let device_answered = s.clock.now();
    let device_polls = || {
        s.op.requests_to(Endpoint::Token)
            .into_iter()
            .filter(|r| r.param("device_code").is_some())
            .collect::<Vec<_>>()
    };
    // The device-code token requests: the OP holds each answer 200 ms (real)
    // while virtual time moves on; the user finishes after two of them.
    let redeem = s.client.device_token(&device);
    tokio::pin!(redeem);
    let redemption = loop {
        tokio::select! {
            r = &mut redeem => break r.unwrap(),
            () = tokio::time::sleep(ms(10)) => {
                if device_polls().len() >= 2 {
                    s.op.complete_device(device.user_code());
                }
                s.clock.advance(ms(100));
            }
        }
    };
    let Redemption::Deferred(auth) = redemption else {
        panic!("deferred")
    };
    let outcome = run_to_outcome(&s, auth.id(), ms(100), Duration::from_secs(60)).await;
    assert!(matches!(outcome, Outcome::Tokens(_)), "{outcome:?}");
    assert_never_early(&s, auth.id());
    let polls = device_polls();
    assert_eq!(polls.len(), 3);
    assert!(
        polls[0].at >= device_answered.saturating_add(ms(1_000)),
        "first device-code request {:?}, device authorization answered {device_answered:?}",
        polls[0].at
    );
    let deferral_polls = poll_requests(&s.op);
    assert!(deferral_polls[0].at >= auth.answered_at().saturating_add(ms(1_000)));
}

/// The knob itself: a poll one millisecond inside the interval from the
/// exchange's answer gets `slow_down` and is reported.
#[tokio::test]
async fn the_strict_op_counts_from_its_exchange_answer() {
    let mut cfg = strict_config(OpProfiles::Oidc);
    cfg.auto_approve = AutoApprove::Never;
    let s = setup(cfg).await;
    let (url, pending) = s.client.authorize().build().unwrap();
    let cb = s.op.browse(&url).await.unwrap();
    let CallbackResponse::Acknowledgment(ack) = s.client.callback(&pending, cb.query()).unwrap()
    else {
        panic!("a deferred code")
    };
    let auth = slow_answer(&s, Endpoint::Token, s.client.exchange(ack))
        .await
        .unwrap();
    // A second client, resumed with a machine that counts the floor from
    // the send (the behaviour this issue fixed), polls 600 ms after the
    // OP's answer.
    let other = DtrClient::builder()
        .issuer(s.op.issuer())
        .client_id(MockOp::CLIENT_ID)
        .client_secret(MockOp::CLIENT_SECRET)
        .redirect_uri(REDIRECT)
        .clock(s.clock.clone())
        .build()
        .await
        .unwrap();
    let early = oidc_dtr::PollMachine::with_start(
        auth.issued_at(),
        auth.expires_at(),
        auth.interval(),
        oidc_dtr::PollConfig::default(),
    );
    s.client.shutdown().await;
    assert!(other.resume(auth.clone(), Some(early)).await.unwrap());
    s.clock.advance(ms(600));
    settle_for(&other).await;
    let report = s.op.flight_report();
    assert_eq!(report.slow_downs, 1, "{report:?}");
    assert_eq!(report.floor_violations.len(), 1);
    assert_eq!(report.floor_violations[0].gap, ms(600));
    assert_eq!(report.floor_violations[0].floor, ms(1_000));
}
