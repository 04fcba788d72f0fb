//! The events a user needs to see while an authentication is pending, end
//! to end against the mock OP: a failed poll and its retry
//! ([`PollEvent::Retrying`], [`PollStatus::last_failure`]), a refused
//! `interaction_uri` ([`PollEvent::InteractionRefused`]), and the OP's
//! progress text in both profiles ([`PollEvent::Progress`]).

use std::time::Duration;

use crate::support::flow::*;
use oidc_dtr::poll::RetryCause;
use oidc_dtr::time::Clock as _;
use oidc_dtr::{DeferredId, Outcome, PollEvent, UnixTime};
use oidc_dtr_testkit::{AutoApprove, Fault, OpConfig};
use tokio::sync::broadcast;

const S: Duration = Duration::from_secs(1);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The `Retrying` events received so far, for `id`.
fn retries(
    events: &mut broadcast::Receiver<PollEvent>,
    id: &DeferredId,
) -> Vec<(RetryCause, UnixTime)> {
    let mut out = Vec::new();
    while let Ok(e) = events.try_recv() {
        if let PollEvent::Retrying {
            id: of,
            cause,
            next_attempt,
        } = e
        {
            assert_eq!(&of, id);
            out.push((cause, next_attempt));
        }
    }
    out
}

#[tokio::test]
async fn each_failed_poll_is_announced_with_its_cause_and_next_attempt() {
    let mut cfg = OpConfig::default();
    cfg.auto_approve = AutoApprove::Never;
    let s = setup(cfg).await;
    let mut events = s.client.subscribe();
    let auth = start(&s.op, &s.client).await;
    let floor = s.client.poll_status(auth.id()).await.unwrap().floor;

    // A 503 with Retry-After: 30.
    s.op.inject_faults([Fault::service_unavailable(30)]);
    pass(&s, floor + S, S).await;
    let polls = poll_requests(&s.op);
    assert_eq!(polls.len(), 1);
    let seen = retries(&mut events, auth.id());
    assert_eq!(
        seen,
        vec![(
            RetryCause::ServerError { status: Some(503) },
            seen.first().map(|r| r.1).unwrap_or(T0)
        )]
    );
    let next = seen[0].1;
    assert!(next >= polls[0].at.saturating_add(secs(30)), "Retry-After");
    let status = s.client.poll_status(auth.id()).await.unwrap();
    assert_eq!(
        status.last_failure,
        Some(RetryCause::ServerError { status: Some(503) })
    );
    assert_eq!(status.next_poll, Some(next));

    // The retry gets a pending answer: the failure is cleared, no event.
    pass(&s, next.saturating_duration_since(s.clock.now()) + S, S).await;
    let polls = poll_requests(&s.op);
    assert_eq!(polls.len(), 2);
    assert!(polls[1].at >= next, "not before the announced attempt");
    assert!(retries(&mut events, auth.id()).is_empty());
    assert_eq!(
        s.client.poll_status(auth.id()).await.unwrap().last_failure,
        None
    );

    // A closed connection, a 429 with Retry-After: 20, an HTML error page.
    s.op.inject_faults([Fault::Reset, Fault::too_many_requests(20), Fault::html(404)]);
    pass(&s, secs(200), S).await;
    let polls = poll_requests(&s.op);
    assert!(polls.len() >= 6, "{}", polls.len());
    let seen = retries(&mut events, auth.id());
    let causes: Vec<RetryCause> = seen.iter().map(|r| r.0).collect();
    assert_eq!(
        causes,
        vec![
            RetryCause::Connect,
            RetryCause::TooManyRequests,
            RetryCause::NotOAuth
        ]
    );
    for (i, (_, next)) in seen.iter().enumerate() {
        let failed = &polls[2 + i];
        // The floor (plus backoff) counts from the failure; the next poll
        // waits for the announced attempt.
        assert!(*next >= failed.at.saturating_add(floor), "poll {i}");
        assert!(polls[3 + i].at >= *next, "poll {i}");
    }
    assert!(
        seen[1].1 >= polls[3].at.saturating_add(secs(20)),
        "Retry-After"
    );
    assert_eq!(
        s.client.poll_status(auth.id()).await.unwrap().last_failure,
        None,
        "cleared by the pending answer that followed"
    );

    s.op.approve(auth.id());
    assert!(matches!(
        run_to_outcome(&s, auth.id(), S, secs(120)).await,
        Outcome::Tokens(_)
    ));
    assert!(retries(&mut events, auth.id()).is_empty());
}

#[tokio::test]
async fn an_oauth_server_error_answer_is_a_retried_server_error() {
    let mut cfg = OpConfig::default();
    cfg.auto_approve = AutoApprove::AfterPolls(2);
    let s = setup(cfg).await;
    let mut events = s.client.subscribe();
    let auth = start(&s.op, &s.client).await;
    s.op.inject_faults([Fault::Respond {
        status: 500,
        headers: vec![("content-type".into(), "application/json".into())],
        body: r#"{"error":"temporarily_unavailable","error_description":"secret detail"}"#.into(),
    }]);
    assert!(matches!(
        run_to_outcome(&s, auth.id(), S, secs(300)).await,
        Outcome::Tokens(_)
    ));
    let seen = retries(&mut events, auth.id());
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, RetryCause::ServerError { status: Some(500) });
    // A class only: nothing from the OP's body.
    assert!(!format!("{:?} {}", seen[0].0, seen[0].0).contains("secret"));
}

#[tokio::test]
async fn a_failure_with_no_attempt_left_before_the_deadline_is_not_announced() {
    let mut cfg = OpConfig::default();
    cfg.auto_approve = AutoApprove::Never;
    cfg.expires_in = Some(20);
    let s = setup(cfg).await;
    let mut events = s.client.subscribe();
    let auth = start(&s.op, &s.client).await;
    // Retry-After beyond the deadline: the failure ends in the deadline.
    s.op.inject_faults((0..10).map(|_| Fault::service_unavailable(600)));
    let outcome = run_to_outcome(&s, auth.id(), S, secs(60)).await;
    assert!(
        matches!(outcome, Outcome::DeadlineReached { .. }),
        "{outcome:?}"
    );
    // The one poll failed, and its Retry-After leaves nothing before the
    // deadline: no attempt to announce.
    assert_eq!(poll_requests(&s.op).len(), 1);
    assert_eq!(retries(&mut events, auth.id()), vec![]);
}

#[tokio::test]
async fn a_refused_interaction_uri_is_announced_once_and_polling_goes_on() {
    let mut cfg = ietf_config();
    cfg.auto_approve = AutoApprove::Never;
    let s = setup_with(cfg, |b| b.profile(oidc_dtr::Profile::Ietf)).await;
    let mut events = s.client.subscribe();
    let auth = start_ietf(&s.op, &s.client).await;
    s.op.set_interaction(auth.id(), Some("http://as.example/interact?otp=s3cret"));
    pass(&s, secs(30), S).await;
    assert!(poll_requests(&s.op).len() >= 3);
    // Then a valid one, then a refused one again.
    s.op.set_interaction(auth.id(), Some("https://as.example/interact/ok"));
    pass(&s, secs(6), S).await;
    s.op.set_interaction(auth.id(), Some("https://user:pw@as.example/x"));
    pass(&s, secs(12), S).await;
    let status = s.client.poll_status(auth.id()).await.unwrap();
    assert!(!status.finished);
    assert_eq!(status.interaction_uri, None);
    let mut refused = Vec::new();
    let mut shown = Vec::new();
    while let Ok(e) = events.try_recv() {
        match e {
            PollEvent::InteractionRefused { id, reason } => {
                assert_eq!(&id, auth.id());
                let text = reason.to_string();
                assert!(!text.contains("s3cret") && !text.contains("pw"), "{text}");
                refused.push(text);
            }
            PollEvent::Interaction { uri, .. } => shown.push(uri.map(|u| u.to_string())),
            _ => {}
        }
    }
    assert_eq!(
        refused,
        vec![
            "invalid interaction_uri: not https",
            "invalid interaction_uri: has user info"
        ],
        "once per run of refused answers"
    );
    assert_eq!(
        shown,
        vec![Some("https://as.example/interact/ok".to_owned()), None]
    );
}

#[tokio::test]
async fn the_progress_text_reaches_the_application_in_both_profiles() {
    for (op_profiles, profile) in profiles() {
        let mut cfg = OpConfig::default();
        cfg.profiles = op_profiles;
        cfg.auto_approve = AutoApprove::Never;
        let s = setup_with(cfg, |b| b.profile(profile)).await;
        let mut events = s.client.subscribe();
        let auth = start_any(&s.op, &s.client).await;
        s.op.set_progress(auth.id(), "position 3 in queue");
        pass(&s, secs(6), S).await;
        if profile == oidc_dtr::Profile::Ietf {
            // The text of an `interaction_required` answer too.
            s.op.set_interaction(auth.id(), Some("https://as.example/interact/1"));
            s.op.set_progress(auth.id(), "please confirm on your phone");
            pass(&s, secs(6), S).await;
        }
        let mut seen = Vec::new();
        while let Ok(e) = events.try_recv() {
            if let PollEvent::Progress { id, description } = e {
                assert_eq!(&id, auth.id());
                seen.push(description);
            }
        }
        let mut want = vec!["position 3 in queue"];
        if profile == oidc_dtr::Profile::Ietf {
            want.push("please confirm on your phone");
        }
        assert_eq!(seen, want, "{profile}");
    }
}
