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
use oidc_dtr::{CallbackResponse, DtrClient, Outcome, Profile, Redemption, time::Clock};
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
fn assert_never_early(s: &Setup, id: &oidc_dtr::DeferredId) {
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
    let early = oidc_dtr::poll::PollMachine::with_start(
        auth.issued_at(),
        auth.expires_at(),
        auth.interval(),
        oidc_dtr::poll::PollConfig::default(),
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

/// One flow on the real clock: authorize, the browser's round trip (one
/// shared HTTP client, no redirects), callback, exchange.
async fn real_flow(
    op: &MockOp,
    client: &DtrClient,
    browser: &reqwest::Client,
) -> oidc_dtr::DeferredAuthentication {
    let (url, pending) = client.authorize().build().unwrap();
    let resp = browser.get(url).send().await.unwrap();
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no redirect from {}", op.issuer()));
    let back = url::Url::parse(&location).unwrap();
    let CallbackResponse::Acknowledgment(ack) = client
        .callback(&pending, back.query().unwrap_or(""))
        .unwrap()
    else {
        panic!("a deferred code")
    };
    client.exchange(ack).await.unwrap()
}

/// Issue 22: 1 000 flows against the strict OP (1 s interval counted from
/// its answers, no tolerance) on the real clock, the exchange answered
/// after a different latency (0–400 ms) for each batch of 100: not one
/// `slow_down`, not one poll inside the floor, every flow gets its tokens.
/// `DTR_STRICT_FLOWS` changes the number of flows (for BENCHMARKS.md, run
/// it with `--nocapture` to see the figures).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_strict_op_1000_flows_zero_slow_down() {
    let flows: usize = std::env::var("DTR_STRICT_FLOWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let mut cfg = strict_config(OpProfiles::Oidc);
    cfg.auto_approve = AutoApprove::AfterPolls(2);
    cfg.exchange_latency = None;
    let op = MockOp::builder().config(cfg).start().await.unwrap();
    let client = DtrClient::builder()
        .issuer(op.issuer())
        .client_id(MockOp::CLIENT_ID)
        .client_secret(MockOp::CLIENT_SECRET)
        .redirect_uri(REDIRECT)
        .build()
        .await
        .unwrap();
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let mut ids = Vec::with_capacity(flows);
    // A fixed pseudo-random sequence of latencies (reproducible).
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut latencies = Vec::new();
    let mut batch = 0;
    while ids.len() < flows {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let latency = ms((seed >> 33) % 401);
        latencies.push(latency);
        op.configure(|c| c.exchange_latency = Some(latency));
        let n = (flows - ids.len()).min(100);
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..n {
            let (op, client, browser) = (op.clone(), client.clone(), browser.clone());
            set.spawn(async move { real_flow(&op, &client, &browser).await.id().clone() });
        }
        while let Some(id) = set.join_next().await {
            ids.push(id.unwrap());
        }
        batch += 1;
    }
    let mut tokens = 0;
    for id in &ids {
        let outcome = tokio::time::timeout(Duration::from_secs(120), client.wait(id))
            .await
            .expect("an outcome within two minutes")
            .unwrap();
        assert!(matches!(outcome, Outcome::Tokens(_)), "{outcome:?}");
        tokens += 1;
    }
    let report = op.flight_report();
    let stats = client.stats();
    eprintln!(
        "strict OP load: {flows} flows in {batch} batches (exchange latency {:?}..{:?}), \
         {tokens} with tokens, {} polls, {} slow_down (OP), {} slow_down (client), \
         {} floor violations, {} overlaps, {:.1} s",
        latencies.iter().min().unwrap(),
        latencies.iter().max().unwrap(),
        report.polls,
        report.slow_downs,
        stats.slow_downs,
        report.floor_violations.len(),
        report.overlaps.len(),
        started.elapsed().as_secs_f64(),
    );
    assert_eq!(tokens, flows);
    assert!(
        report.floor_violations.is_empty(),
        "{} violations, first {:?}",
        report.floor_violations.len(),
        report.floor_violations.first()
    );
    assert_eq!(report.slow_downs, 0);
    assert_eq!(stats.slow_downs, 0);
    assert!(report.overlaps.is_empty());
    assert!(report.polls >= 2 * flows as u64);
}
