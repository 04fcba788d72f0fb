//! `AuthHandle`: one handle per authentication, with its own events,
//! status, outcome and cancellation; on a virtual clock shared by the
//! client and the mock OP.

use std::time::Duration;

use crate::support::flow::*;
use oidc_dtr::{AuthHandle, CancelResult, Outcome, PollEvent, poll::DriverConfig};
use oidc_dtr_testkit::OpConfig;

const S: Duration = Duration::from_secs(1);

/// Every event left in the handle's stream (the authentication must have
/// ended, so the stream is finite).
async fn drain(h: &mut AuthHandle) -> Vec<PollEvent> {
    let mut seen = Vec::new();
    while let Some(e) = tokio::time::timeout(Duration::from_secs(10), h.next_event())
        .await
        .expect("the stream of an ended authentication ends")
    {
        seen.push(e);
    }
    seen
}

fn progress_texts(events: &[PollEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            PollEvent::Progress { description, .. } => Some(description.clone()),
            _ => None,
        })
        .collect()
}

fn the_outcome(events: &[PollEvent]) -> &Outcome {
    let finished: Vec<&Outcome> = events
        .iter()
        .filter_map(|e| match e {
            PollEvent::Finished { outcome, .. } => Some(outcome),
            _ => None,
        })
        .collect();
    assert_eq!(finished.len(), 1, "exactly one outcome: {events:?}");
    assert!(
        matches!(events.last(), Some(PollEvent::Finished { .. })),
        "the outcome ends the stream: {events:?}"
    );
    finished[0]
}

fn ids_of(events: &[PollEvent]) -> Vec<&oidc_dtr::DeferredId> {
    events
        .iter()
        .map(|e| match e {
            PollEvent::Progress { id, .. }
            | PollEvent::Interaction { id, .. }
            | PollEvent::TokensHeld { id, .. }
            | PollEvent::Finished { id, .. } => id,
            other => panic!("an event this test does not know: {other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn two_authentications_each_handle_sees_only_its_own() {
    let s = setup(OpConfig::default()).await;
    let a = start(&s.op, &s.client).await;
    let b = start(&s.op, &s.client).await;
    let mut ha = s.client.watch(a.id());
    let mut hb = s.client.watch(b.id());
    assert!(s.op.set_progress(a.id(), "a: documents received"));
    assert!(s.op.set_progress(b.id(), "b: in the queue"));
    pass(&s, Duration::from_secs(30), S).await;
    assert!(s.op.approve(a.id()));
    assert!(s.op.deny(b.id(), Some("not readable")));
    run_to_outcome(&s, a.id(), S, Duration::from_secs(600)).await;
    run_to_outcome(&s, b.id(), S, Duration::from_secs(600)).await;

    let ea = drain(&mut ha).await;
    let eb = drain(&mut hb).await;
    assert!(ids_of(&ea).iter().all(|id| *id == a.id()), "{ea:?}");
    assert!(ids_of(&eb).iter().all(|id| *id == b.id()), "{eb:?}");
    assert_eq!(progress_texts(&ea), vec!["a: documents received"]);
    assert_eq!(progress_texts(&eb), vec!["b: in the queue"]);
    assert!(matches!(the_outcome(&ea), Outcome::Tokens(_)));
    assert!(matches!(the_outcome(&eb), Outcome::Denied { .. }));
    // The same outcomes through `wait`, and the streams stay ended.
    assert!(matches!(ha.wait().await.unwrap(), Outcome::Tokens(_)));
    assert!(matches!(hb.wait().await.unwrap(), Outcome::Denied { .. }));
    assert!(ha.next_event().await.is_none());
    assert!(ha.status().await.unwrap().finished);
    assert!(ha.ack().await.unwrap());
}

#[tokio::test]
async fn an_event_between_watch_and_the_first_read_is_not_missed() {
    let s = setup(OpConfig::default()).await;
    let auth = start(&s.op, &s.client).await;
    let mut h = s.client.watch(auth.id());
    assert!(!h.status().await.unwrap().finished);
    // Polls happen, a progress text is sent, and the OP approves, all
    // before the handle is first read.
    assert!(s.op.set_progress(auth.id(), "in review"));
    pass(&s, Duration::from_secs(30), S).await;
    assert!(s.op.approve(auth.id()));
    run_to_outcome(&s, auth.id(), S, Duration::from_secs(600)).await;

    let events = drain(&mut h).await;
    assert_eq!(progress_texts(&events), vec!["in review"], "{events:?}");
    assert!(matches!(the_outcome(&events), Outcome::Tokens(_)));
}

#[tokio::test]
async fn a_handle_made_after_the_end_gives_the_outcome() {
    let s = setup(OpConfig::default()).await;
    let auth = start(&s.op, &s.client).await;
    assert!(s.op.approve(auth.id()));
    run_to_outcome(&s, auth.id(), S, Duration::from_secs(600)).await;
    let mut h = s.client.watch(auth.id());
    let events = drain(&mut h).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(matches!(the_outcome(&events), Outcome::Tokens(_)));
}

#[tokio::test]
async fn a_lagging_handle_still_ends_with_the_outcome() {
    // A channel of one event: the handle, not read while several
    // authentications report, falls behind and its events are dropped.
    let driver = DriverConfig::default().event_capacity(1);
    let s = setup_with(OpConfig::default(), |b| b.driver_config(driver)).await;
    let auth = start(&s.op, &s.client).await;
    let others = [
        start(&s.op, &s.client).await,
        start(&s.op, &s.client).await,
        start(&s.op, &s.client).await,
    ];
    let mut h = s.client.watch(auth.id());
    // Read once while it is pending (nothing to read yet), so that the
    // handle is following the channel when it falls behind.
    assert!(
        tokio::time::timeout(Duration::from_millis(20), h.next_event())
            .await
            .is_err()
    );
    // Its outcome first, then the others' push it out of the channel.
    assert!(s.op.approve(auth.id()));
    run_to_outcome(&s, auth.id(), S, Duration::from_secs(600)).await;
    for o in &others {
        assert!(s.op.deny(o.id(), None));
        run_to_outcome(&s, o.id(), S, Duration::from_secs(600)).await;
    }
    let events = drain(&mut h).await;
    assert!(ids_of(&events).iter().all(|id| *id == auth.id()));
    assert!(matches!(the_outcome(&events), Outcome::Tokens(_)));
}

#[tokio::test]
async fn dropping_a_wait_future_loses_nothing() {
    let s = setup(OpConfig::default()).await;
    let auth = start(&s.op, &s.client).await;
    let mut h = s.client.watch(auth.id());
    // Started, then dropped before the outcome exists.
    let early = tokio::time::timeout(Duration::from_millis(20), h.wait()).await;
    assert!(early.is_err(), "no outcome yet: {early:?}");
    // A `next_event` dropped while waiting loses nothing either.
    assert!(
        tokio::time::timeout(Duration::from_millis(20), h.next_event())
            .await
            .is_err()
    );
    assert!(s.op.approve(auth.id()));
    run_to_outcome(&s, auth.id(), S, Duration::from_secs(600)).await;
    assert!(matches!(h.wait().await.unwrap(), Outcome::Tokens(_)));
    let events = drain(&mut h).await;
    assert!(matches!(the_outcome(&events), Outcome::Tokens(_)));
}

#[tokio::test]
async fn cancel_through_the_handle() {
    let s = setup(OpConfig::default()).await;
    let auth = start(&s.op, &s.client).await;
    let other = start(&s.op, &s.client).await;
    let mut h = s.client.watch(auth.id());
    // No cancellation endpoint configured: polling stops, the OP is not
    // told, and the result says so.
    assert_eq!(h.cancel().await.unwrap(), CancelResult::LocalOnly);
    let events = drain(&mut h).await;
    assert_eq!(the_outcome(&events), &Outcome::Cancelled);
    assert_eq!(h.wait().await.unwrap(), Outcome::Cancelled);
    assert_eq!(h.cancel().await.unwrap(), CancelResult::AlreadyFinished);
    // The other authentication goes on.
    assert!(!s.client.poll_status(other.id()).await.unwrap().finished);
}

#[tokio::test]
async fn an_unknown_id_gives_an_empty_stream_and_an_error() {
    let s = setup(OpConfig::default()).await;
    let auth = start(&s.op, &s.client).await;
    let unknown: oidc_dtr::DeferredId =
        serde_json::from_str("\"not-an-authentication-of-this-client\"").unwrap();
    let mut h = s.client.watch(&unknown);
    assert!(h.status().await.is_none());
    assert!(h.next_event().await.is_none());
    assert!(h.wait().await.is_err());
    // Debug shows the fingerprint, never the id.
    let h2 = s.client.watch(auth.id());
    let debug = format!("{h2:?}");
    assert!(!debug.contains(auth.id().secret()), "{debug}");
    assert!(
        debug.contains(&auth.id().fingerprint().to_string()),
        "{debug}"
    );
}

/// A fleet: the front end that exchanged the authentication does not poll
/// it (another instance does), yet its handle's stream ends with the
/// outcome, read from the shared store.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_fleet_the_handle_ends_with_the_outcome_from_the_store() {
    use oidc_dtr::poll::FleetConfig;
    use oidc_dtr_testkit::MockOp;
    let Some((_seed, guard)) = crate::postgres::fresh().await else {
        return;
    };
    let mut config = OpConfig::default();
    config.interval = Some(1);
    let op = MockOp::builder().config(config).start().await.unwrap();
    let build = |max_held: usize, name: &str| {
        let issuer = op.issuer().to_owned();
        let options = guard.options();
        let name = name.to_owned();
        async move {
            oidc_dtr::DtrClient::builder()
                .issuer(issuer)
                .client_id(MockOp::CLIENT_ID)
                .client_secret(MockOp::CLIENT_SECRET)
                .redirect_uri(REDIRECT)
                .store(options.connect().await.unwrap())
                .fleet(
                    FleetConfig::default()
                        .lease_ttl(Duration::from_secs(2))
                        .max_held(max_held)
                        .instance(name),
                )
                .build()
                .await
                .unwrap()
        }
    };
    let owner = build(100, "owner").await;
    let front = build(0, "front").await;
    let auth = start(&op, &front).await;
    let mut h = front.watch(auth.id());
    assert!(op.approve(auth.id()));
    let events = tokio::time::timeout(Duration::from_secs(20), drain(&mut h))
        .await
        .expect("the outcome reaches the store");
    assert!(matches!(the_outcome(&events), Outcome::Tokens(_)));
    assert!(h.status().await.is_none(), "the front end polls nothing");
    assert_eq!(front.stats().polls, 0);
    assert!(owner.stats().polls >= 1);
    assert!(matches!(h.wait().await.unwrap(), Outcome::Tokens(_)));
    owner.shutdown().await;
    front.shutdown().await;
}
