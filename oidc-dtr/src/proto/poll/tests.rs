//! Unit tests of the poll state machine.

use std::time::Duration;

use super::*;
use crate::error::{ErrorCode, OAuthError, RetryAfter};
use crate::proto::exchange::DeferredAuthentication;
use crate::proto::ietf::InteractionUri;
use crate::proto::token::HeldTokens;
use crate::random::{RandomError, RandomSource};
use crate::time::UnixTime;

/// Jitter source returning a fixed byte pattern.
struct FixedRandom(u8);
impl RandomSource for FixedRandom {
    fn fill(&self, dest: &mut [u8]) -> Result<(), RandomError> {
        dest.fill(self.0);
        Ok(())
    }
}

const T0: UnixTime = UnixTime::from_millis(1_800_000_000_000);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn at(n: u64) -> UnixTime {
    T0.saturating_add(secs(n))
}

fn machine(expires_in: Option<u64>, interval: u64) -> PollMachine {
    PollMachine::with_start(
        T0,
        expires_in.map(at),
        secs(interval),
        PollConfig::default(),
    )
}

fn oauth(code: &str) -> PollResult<&'static str> {
    PollResult::OAuth(OAuthError::new(ErrorCode::from(code)))
}

fn step(m: &mut PollMachine, e: Event<&'static str>, now: UnixTime) -> Step<&'static str> {
    m.handle(e, now, &FixedRandom(0))
}

fn interaction(uri: Option<&str>) -> PollResult<&'static str> {
    let mut e = OAuthError::new(ErrorCode::InteractionRequired);
    e.interaction_uri = uri.map(str::to_owned);
    PollResult::OAuth(e)
}

#[test]
fn held_tokens_outlive_the_deadline_and_are_validated_again() {
    let mut m = machine(Some(60), 5);
    assert_eq!(step(&mut m, Event::Timer, at(5)).action, Action::SendPoll);
    let held = HeldTokens::new(br#"{"access_token":"a"}"#, at(6)).unwrap();
    let again = || PollResult::Held {
        tokens: held.clone(),
        reason: "the JWK Set is unreachable".into(),
    };
    let s = step(&mut m, Event::Response(again()), at(6));
    assert!(
        matches!(s.action, Action::SleepUntil(t) if t > at(6)),
        "{s:?}"
    );
    assert_eq!(m.held_tokens(), Some(&held));
    // Far past the deadline: validated again and again, never given up,
    // never polled for (no request counted), at most a minute apart.
    let mut now = at(6);
    for _ in 0..10 {
        let next = m.wake_at().unwrap();
        assert!(next.saturating_duration_since(now) <= secs(60));
        now = next;
        assert_eq!(step(&mut m, Event::Timer, now).action, Action::SendPoll);
        let s = step(&mut m, Event::Response(again()), now);
        assert!(matches!(s.action, Action::SleepUntil(_)), "{s:?}");
    }
    assert!(now > at(120), "{now:?}");
    assert_eq!(m.polls(), 1);
    // A cancellation does not drop tokens the OP has issued.
    let s = step(&mut m, Event::Cancel, now);
    assert!(!matches!(s.action, Action::Deliver(_)), "{s:?}");
    // They survive a store round trip.
    let back = PollMachine::from_snapshot(m.to_snapshot()).unwrap();
    assert_eq!(back, m);
    // Validated at last: delivered.
    let now = m.wake_at().unwrap();
    assert_eq!(step(&mut m, Event::Timer, now).action, Action::SendPoll);
    let s = step(&mut m, Event::Response(PollResult::Tokens("t")), now);
    assert_eq!(s.action, Action::Deliver(Outcome::Tokens("t")));
    assert!(m.held_tokens().is_none());
}

#[test]
fn held_tokens_found_invalid_end_the_authentication() {
    let mut m = machine(Some(60), 5);
    assert_eq!(step(&mut m, Event::Timer, at(5)).action, Action::SendPoll);
    let held = HeldTokens::new(b"{}", at(6)).unwrap();
    step(
        &mut m,
        Event::Response(PollResult::Held {
            tokens: held,
            reason: "down".into(),
        }),
        at(6),
    );
    let now = m.wake_at().unwrap();
    assert_eq!(step(&mut m, Event::Timer, now).action, Action::SendPoll);
    let s = step(
        &mut m,
        Event::Response(PollResult::Permanent(PollFailure::InvalidTokens(
            crate::error::ValidationError::Nonce,
        ))),
        now,
    );
    assert!(
        matches!(
            s.action,
            Action::Deliver(Outcome::Rejected(PollFailure::InvalidTokens(_)))
        ),
        "{s:?}"
    );
}

#[test]
fn interaction_required_keeps_polling_and_flips_back() {
    let mut m = machine(Some(3600), 5);
    assert_eq!(step(&mut m, Event::Timer, at(5)).action, Action::SendPoll);
    let s = step(
        &mut m,
        Event::Response(interaction(Some("https://as.example/i/1"))),
        at(6),
    );
    assert_eq!(s.action, Action::SleepUntil(at(11)));
    let uri = InteractionUri::parse("https://as.example/i/1").unwrap();
    assert_eq!(
        s.interaction,
        Some(InteractionChange::Required(uri.clone()))
    );
    assert_eq!(m.interaction_uri(), Some(&uri));
    // The same URI again: no new change.
    assert_eq!(step(&mut m, Event::Timer, at(11)).action, Action::SendPoll);
    let s = step(
        &mut m,
        Event::Response(interaction(Some("https://as.example/i/1"))),
        at(12),
    );
    assert_eq!(s.interaction, None);
    // Back to authorization_pending: resolved.
    assert_eq!(step(&mut m, Event::Timer, at(17)).action, Action::SendPoll);
    let s = step(
        &mut m,
        Event::Response(oauth("authorization_pending")),
        at(18),
    );
    assert_eq!(s.interaction, Some(InteractionChange::Resolved));
    assert_eq!(m.interaction_uri(), None);
    // And forth again, to a new URI; an invalid one is not surfaced.
    assert_eq!(step(&mut m, Event::Timer, at(23)).action, Action::SendPoll);
    let s = step(
        &mut m,
        Event::Response(interaction(Some("https://as.example/i/2"))),
        at(24),
    );
    assert!(matches!(
        s.interaction,
        Some(InteractionChange::Required(_))
    ));
    assert_eq!(step(&mut m, Event::Timer, at(29)).action, Action::SendPoll);
    let s = step(
        &mut m,
        Event::Response(interaction(Some("http://as.example/i/3#x"))),
        at(30),
    );
    assert_eq!(s.interaction, Some(InteractionChange::Resolved));
    assert!(!m.is_finished());
    // It survives the snapshot round trip.
    let mut m2 = machine(Some(3600), 5).with_interaction(Some(uri.clone()));
    let back = PollMachine::from_snapshot(m2.to_snapshot()).unwrap();
    assert_eq!(back.interaction_uri(), Some(&uri));
    assert_eq!(step(&mut m2, Event::Timer, at(5)).action, Action::SendPoll);
}

#[test]
fn first_poll_waits_one_interval_after_the_exchange() {
    let mut m = machine(Some(3600), 5);
    assert_eq!(
        step(&mut m, Event::Timer, T0).action,
        Action::SleepUntil(at(5))
    );
    assert_eq!(
        step(&mut m, Event::Timer, at(4)).action,
        Action::SleepUntil(at(5))
    );
    assert_eq!(step(&mut m, Event::Timer, at(5)).action, Action::SendPoll);
    assert!(m.in_flight());
    // Single flight: timers and wakes while in flight do nothing.
    assert_eq!(
        step(&mut m, Event::Timer, at(50)).action,
        Action::AwaitResponse
    );
    assert_eq!(
        step(&mut m, Event::Wake, at(50)).action,
        Action::AwaitResponse
    );
}

#[test]
fn pending_polls_at_the_floor_and_surfaces_new_progress_once() {
    let mut m = machine(Some(3600), 5);
    step(&mut m, Event::Timer, at(5));
    let mut e = OAuthError::new(ErrorCode::AuthorizationPending);
    e.description = Some("queue position 3".into());
    // Sent at 5, answered at 6: the floor counts from the answer.
    let s = step(&mut m, Event::Response(PollResult::OAuth(e.clone())), at(6));
    assert_eq!(s.progress.as_deref(), Some("queue position 3"));
    assert_eq!(s.action, Action::SleepUntil(at(11)));
    step(&mut m, Event::Timer, at(11));
    let s = step(&mut m, Event::Response(PollResult::OAuth(e)), at(11));
    assert_eq!(s.progress, None, "same text is not surfaced twice");
}

#[test]
fn slow_down_raises_the_floor_by_five_or_to_the_interval() {
    let mut m = machine(Some(3600), 5);
    step(&mut m, Event::Timer, at(5));
    step(&mut m, Event::Response(oauth("slow_down")), at(5));
    assert_eq!(m.floor(), secs(10));
    assert_eq!(m.next_poll(), at(15));
    step(&mut m, Event::Timer, at(15));
    let mut e = OAuthError::new(ErrorCode::SlowDown);
    e.interval = Some(42);
    step(&mut m, Event::Response(PollResult::OAuth(e)), at(15));
    assert_eq!(m.floor(), secs(42));
    step(&mut m, Event::Timer, at(57));
    let mut e = OAuthError::new(ErrorCode::SlowDown);
    e.interval = Some(1);
    step(&mut m, Event::Response(PollResult::OAuth(e)), at(57));
    assert_eq!(
        m.floor(),
        secs(47),
        "a smaller interval never lowers the floor"
    );
}

#[test]
fn transient_backoff_sits_on_top_of_the_floor_and_resets() {
    let mut m = machine(Some(100_000), 30);
    let rng = crate::random::SystemRandom;
    let mut now = at(30);
    for step_no in 1..=12u32 {
        assert_eq!(
            m.handle::<()>(Event::Timer, now, &rng).action,
            Action::SendPoll
        );
        m.handle::<()>(
            Event::Response(PollResult::Transient {
                message: "connection failed".into(),
                retry_after: None,
                cause: None,
            }),
            now,
            &rng,
        );
        assert_eq!(m.backoff_step(), step_no);
        let wait = m.next_poll().saturating_duration_since(now);
        let window = secs(2 * (1u64 << (step_no - 1))).min(secs(300));
        assert!(wait >= secs(30), "never below the floor: {wait:?}");
        assert!(
            wait <= secs(30) + window,
            "step {step_no}: {wait:?} > floor + {window:?}"
        );
        now = m.next_poll();
    }
    assert_eq!(
        m.floor(),
        secs(30),
        "transport errors never touch the floor"
    );
    // A well-formed OAuth answer resets the backoff.
    m.handle::<()>(Event::Timer, now, &rng);
    m.handle::<()>(
        Event::Response(PollResult::OAuth(OAuthError::new(
            ErrorCode::AuthorizationPending,
        ))),
        now,
        &rng,
    );
    assert_eq!(m.backoff_step(), 0);
    assert_eq!(m.next_poll(), now.saturating_add(secs(30)));
}

#[test]
fn backoff_window_grows_then_caps() {
    let mut m = machine(Some(100_000), 30);
    let windows: Vec<u64> = (1..=10)
        .map(|n| {
            m.backoff_step = n;
            m.backoff_window().as_secs()
        })
        .collect();
    assert_eq!(windows, vec![2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
    m.backoff_step = u32::MAX;
    assert_eq!(m.backoff_window(), secs(300));
}

#[test]
fn retry_after_is_honoured() {
    let mut m = machine(Some(3600), 5);
    step(&mut m, Event::Timer, at(5));
    step(
        &mut m,
        Event::Response(PollResult::Transient {
            message: "503".into(),
            retry_after: Some(RetryAfter::Delay(secs(120))),
            cause: None,
        }),
        at(5),
    );
    assert!(m.next_poll() >= at(125));
    // Also on OAuth answers.
    let mut m = machine(Some(3600), 5);
    step(&mut m, Event::Timer, at(5));
    let mut e = OAuthError::new(ErrorCode::AuthorizationPending);
    e.retry_after = Some(RetryAfter::At(at(500)));
    step(&mut m, Event::Response(PollResult::OAuth(e)), at(6));
    assert_eq!(m.next_poll(), at(500));
}

#[test]
fn terminal_answers() {
    type Check = fn(&Outcome<&'static str>) -> bool;
    let cases: Vec<(&str, Check)> = vec![
        ("access_denied", |o| matches!(o, Outcome::Denied { .. })),
        ("expired_token", |o| matches!(o, Outcome::ExpiredByOp)),
        ("invalid_grant", |o| {
            matches!(o, Outcome::Rejected(PollFailure::OAuth(_)))
        }),
        ("invalid_request", |o| {
            matches!(o, Outcome::Rejected(PollFailure::OAuth(_)))
        }),
        ("invalid_client", |o| {
            matches!(o, Outcome::Rejected(PollFailure::OAuth(_)))
        }),
        ("unauthorized_client", |o| {
            matches!(o, Outcome::Rejected(PollFailure::OAuth(_)))
        }),
        ("unsupported_grant_type", |o| {
            matches!(o, Outcome::Rejected(PollFailure::OAuth(_)))
        }),
        ("something_new", |o| {
            matches!(o, Outcome::Rejected(PollFailure::OAuth(_)))
        }),
    ];
    for (code, check) in cases {
        let mut m = machine(Some(3600), 5);
        step(&mut m, Event::Timer, at(5));
        match step(&mut m, Event::Response(oauth(code)), at(5)).action {
            Action::Deliver(o) => assert!(check(&o), "{code}: {o:?}"),
            other => panic!("{code}: {other:?}"),
        }
        // Nothing more, ever.
        for e in [
            Event::Timer,
            Event::Wake,
            Event::Cancel,
            Event::Response(oauth("authorization_pending")),
        ] {
            assert_eq!(step(&mut m, e, at(10_000)).action, Action::Finished);
        }
    }
}

#[test]
fn tokens_are_delivered() {
    let mut m = machine(Some(3600), 5);
    step(&mut m, Event::Timer, at(5));
    assert_eq!(
        step(&mut m, Event::Response(PollResult::Tokens("tok")), at(6)).action,
        Action::Deliver(Outcome::Tokens("tok"))
    );
}

#[test]
fn invalid_dpop_proof_allows_exactly_one_retry() {
    let mut m = machine(Some(3600), 5);
    step(&mut m, Event::Timer, at(5));
    assert_eq!(
        step(&mut m, Event::Response(oauth("invalid_dpop_proof")), at(5)).action,
        Action::SleepUntil(at(10))
    );
    step(&mut m, Event::Timer, at(10));
    assert!(matches!(
        step(&mut m, Event::Response(oauth("invalid_dpop_proof")), at(10)).action,
        Action::Deliver(Outcome::Rejected(_))
    ));
}

/// The polls sent (seconds after T0) when every poll is answered
/// `authorization_pending` at once, until the deadline.
fn polls_until_the_deadline(expires_in: u64, interval: u64, cadence: Option<u64>) -> Vec<u64> {
    let cfg = PollConfig::default().with_notified_cadence(cadence.map(secs));
    let mut m = PollMachine::with_start(T0, Some(at(expires_in)), secs(interval), cfg);
    let mut sent = Vec::new();
    let mut now = T0;
    loop {
        match step(&mut m, Event::Timer, now).action {
            Action::SleepUntil(t) => now = t,
            Action::SendPoll => {
                sent.push(now.saturating_duration_since(T0).as_secs());
                step(&mut m, Event::Response(oauth("authorization_pending")), now);
            }
            Action::Deliver(Outcome::DeadlineReached { .. }) => {
                assert_eq!(now, at(expires_in));
                return sent;
            }
            other => panic!("{other:?}"),
        }
    }
}

/// Issue 11, item 8: the final poll is at `max(deadline − margin, last
/// answer + floor)` when that is before the deadline: never inside the
/// floor, never skipped when it fits.
#[test]
fn final_poll_respects_the_floor_and_is_made_whenever_it_fits() {
    // 1 s interval, 5 s lifetime: the final poll at 4 (it used to stop
    // polling at 3, 2 s before the deadline).
    assert_eq!(polls_until_the_deadline(5, 1, None), vec![1, 2, 3, 4]);
    // Interval 3, deadline 10, margin 2: the final poll at 9 (6 + 3),
    // not at 8, inside the floor.
    assert_eq!(polls_until_the_deadline(10, 3, None), vec![3, 6, 9]);
    // Interval 30, deadline 100: after 90 the floor reaches 120, past
    // the deadline: no final poll fits.
    assert_eq!(polls_until_the_deadline(100, 30, None), vec![30, 60, 90]);
    // A 60 s notified cadence would miss the deadline: a final poll at
    // deadline − margin, which the 5 s floor allows.
    assert_eq!(polls_until_the_deadline(100, 5, Some(60)), vec![60, 98]);
}

#[test]
fn final_poll_just_before_the_deadline_then_deadline_reached() {
    // interval 30, deadline at 125: regular polls at 30, 60, 90, 120;
    // the floor then reaches 150, past the deadline, so no final poll
    // fits, and DeadlineReached comes at 125.
    let mut m = machine(Some(125), 30);
    let mut sent = Vec::new();
    let mut now = T0;
    loop {
        match step(&mut m, Event::Timer, now).action {
            Action::SleepUntil(t) => now = t,
            Action::SendPoll => {
                sent.push(now.saturating_duration_since(T0).as_secs());
                step(&mut m, Event::Response(oauth("authorization_pending")), now);
            }
            Action::Deliver(o) => {
                assert!(matches!(
                    o,
                    Outcome::DeadlineReached {
                        last_error: None,
                        ..
                    }
                ));
                assert_eq!(now, at(125));
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(sent, vec![30, 60, 90, 120]);
}

#[test]
fn deadline_reached_keeps_the_last_transient_error() {
    let mut m = machine(Some(20), 5);
    let mut now = at(5);
    loop {
        match step(&mut m, Event::Timer, now).action {
            Action::SleepUntil(t) => now = t,
            Action::SendPoll => {
                step(
                    &mut m,
                    Event::Response(PollResult::Transient {
                        message: "connection failed (http://op/token)".into(),
                        retry_after: None,
                        cause: None,
                    }),
                    now,
                );
            }
            Action::Deliver(Outcome::DeadlineReached { last_error, .. }) => {
                assert_eq!(
                    last_error.as_deref(),
                    Some("connection failed (http://op/token)")
                );
                break;
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn no_expires_in_uses_the_local_maximum_lifetime() {
    let m = machine(None, 5);
    assert!(!m.deadline_from_op());
    assert_eq!(
        m.deadline(),
        T0.saturating_add(PollConfig::default().max_lifetime)
    );
}

#[test]
fn huge_expires_in_is_capped_like_a_missing_one() {
    let cap = T0.saturating_add(PollConfig::default().max_lifetime);
    for expires_in in [u64::MAX, 10 * 365 * 24 * 3600] {
        let m = machine(Some(expires_in), 5);
        assert!(!m.deadline_from_op(), "{expires_in}");
        assert_eq!(m.deadline(), cap, "{expires_in}");
    }
    let m = machine(Some(3600), 5);
    assert!(m.deadline_from_op());
    assert_eq!(m.deadline(), T0.saturating_add(Duration::from_secs(3600)));
}

#[test]
fn huge_values_do_not_overflow() {
    let mut m = PollMachine::with_start(
        T0,
        Some(UnixTime::MAX),
        Duration::from_secs(u64::MAX),
        PollConfig::default().max_lifetime(Duration::MAX),
    );
    // The floor never elapses: no final poll fits before the deadline.
    assert_eq!(
        step(&mut m, Event::Timer, T0).action,
        Action::SleepUntil(UnixTime::MAX)
    );
    let mut m = PollMachine::with_start(
        T0,
        None,
        Duration::MAX,
        PollConfig::default().max_lifetime(Duration::MAX),
    );
    assert!(matches!(
        step(&mut m, Event::Timer, T0).action,
        Action::SleepUntil(_)
    ));
}

#[test]
fn wake_polls_at_once_after_the_floor_else_at_the_floor() {
    let cfg = PollConfig::default().with_notified_cadence(Some(secs(60)));
    let mut m = PollMachine::with_start(T0, Some(at(3600)), secs(5), cfg);
    assert_eq!(m.next_poll(), at(60), "with pings, polling is a safety net");
    // A ping before the floor: poll at the floor.
    assert_eq!(
        step(&mut m, Event::Wake, at(2)).action,
        Action::SleepUntil(at(5))
    );
    assert_eq!(step(&mut m, Event::Timer, at(5)).action, Action::SendPoll);
    // Still pending after the ping: back to the safety-net cadence.
    step(
        &mut m,
        Event::Response(oauth("authorization_pending")),
        at(5),
    );
    assert_eq!(m.next_poll(), at(65));
    // A ping long after the floor: poll at once.
    assert_eq!(step(&mut m, Event::Wake, at(30)).action, Action::SendPoll);
}

fn transient() -> PollResult<&'static str> {
    PollResult::Transient {
        message: "HTTP 502 from http://op/token".into(),
        retry_after: None,
        cause: None,
    }
}

/// Issue 11, item 9: after a ping, a failed poll is retried at the floor
/// plus backoff, not at the notification cadence; a well-formed answer
/// brings the cadence back.
#[test]
fn failed_poll_after_a_ping_retries_at_the_floor_plus_backoff() {
    let cfg = PollConfig::default().with_notified_cadence(Some(secs(60)));
    let mut m = PollMachine::with_start(T0, Some(at(3600)), secs(5), cfg);
    assert_eq!(step(&mut m, Event::Timer, at(60)).action, Action::SendPoll);
    step(
        &mut m,
        Event::Response(oauth("authorization_pending")),
        at(60),
    );
    assert_eq!(m.next_poll(), at(120));
    step(&mut m, Event::Wake, at(62));
    assert_eq!(step(&mut m, Event::Timer, at(65)).action, Action::SendPoll);
    // Backoff window 2 s, jitter 0 (FixedRandom(0)): floor + jitter.
    step(&mut m, Event::Response(transient()), at(65));
    assert!(
        m.next_poll() <= at(72),
        "retry at the floor plus backoff, not the 60 s cadence: {:?}",
        m.next_poll()
    );
    let t = m.next_poll();
    assert_eq!(step(&mut m, Event::Timer, t).action, Action::SendPoll);
    let t = m.last_request();
    step(&mut m, Event::Response(oauth("authorization_pending")), t);
    assert_eq!(m.next_poll(), t.saturating_add(secs(60)));
}

/// Issue 11, item 7: `invalid_grant` right after a poll whose answer was
/// lost is its own outcome; after a well-formed answer it is a refusal.
#[test]
fn invalid_grant_after_a_lost_answer_is_possibly_lost_in_transit() {
    let mut m = machine(Some(3600), 5);
    step(&mut m, Event::Timer, at(5));
    step(&mut m, Event::Response(transient()), at(5));
    let t = m.next_poll();
    step(&mut m, Event::Timer, t);
    assert_eq!(
        step(&mut m, Event::Response(oauth("invalid_grant")), t).action,
        Action::Deliver(Outcome::PossiblyLostInTransit {
            lost: Some("HTTP 502 from http://op/token".into())
        })
    );
    assert_eq!(
        Outcome::<()>::PossiblyLostInTransit { lost: None }.kind(),
        "possibly_lost_in_transit"
    );
    // A lost answer, then a pending one (the id was alive), then
    // invalid_grant: an ordinary refusal.
    let mut m = machine(Some(3600), 5);
    step(&mut m, Event::Timer, at(5));
    step(&mut m, Event::Response(transient()), at(5));
    let t = m.next_poll();
    step(&mut m, Event::Timer, t);
    step(&mut m, Event::Response(oauth("authorization_pending")), t);
    let t = m.next_poll();
    step(&mut m, Event::Timer, t);
    assert!(matches!(
        step(&mut m, Event::Response(oauth("invalid_grant")), t).action,
        Action::Deliver(Outcome::Rejected(PollFailure::OAuth(_)))
    ));
    // The flag survives a restart (it is part of the stored state).
    let mut m = machine(Some(3600), 5);
    step(&mut m, Event::Timer, at(5));
    step(&mut m, Event::Response(transient()), at(5));
    let mut m: PollMachine = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
    let t = m.next_poll();
    step(&mut m, Event::Timer, t);
    assert!(matches!(
        step(&mut m, Event::Response(oauth("invalid_grant")), t).action,
        Action::Deliver(Outcome::PossiblyLostInTransit { .. })
    ));
}

#[test]
fn wake_during_flight_skips_the_stretched_cadence_next_time() {
    let cfg = PollConfig::default().with_notified_cadence(Some(secs(60)));
    let mut m = PollMachine::with_start(T0, Some(at(3600)), secs(5), cfg);
    step(&mut m, Event::Timer, at(60));
    step(&mut m, Event::Wake, at(61));
    step(
        &mut m,
        Event::Response(oauth("authorization_pending")),
        at(61),
    );
    // The floor (5 s) from the answer at 61, not the 60 s cadence.
    assert_eq!(m.next_poll(), at(66));
}

#[test]
fn cancel_while_waiting_and_while_in_flight() {
    let mut m = machine(Some(3600), 5);
    assert_eq!(
        step(&mut m, Event::Cancel, at(1)).action,
        Action::Deliver(Outcome::Cancelled)
    );
    assert_eq!(step(&mut m, Event::Timer, at(10)).action, Action::Finished);

    // In flight: the answer decides whether tokens win.
    let mut m = machine(Some(3600), 5);
    step(&mut m, Event::Timer, at(5));
    assert_eq!(
        step(&mut m, Event::Cancel, at(6)).action,
        Action::AwaitResponse
    );
    assert_eq!(
        step(
            &mut m,
            Event::Response(oauth("authorization_pending")),
            at(7)
        )
        .action,
        Action::Deliver(Outcome::Cancelled)
    );
    let mut m = machine(Some(3600), 5);
    step(&mut m, Event::Timer, at(5));
    step(&mut m, Event::Cancel, at(6));
    assert_eq!(
        step(&mut m, Event::Response(PollResult::Tokens("tok")), at(7)).action,
        Action::Deliver(Outcome::Tokens("tok"))
    );
    // The cancellation overtook the poll at the OP: its `access_denied`
    // or (IETF, record dropped) `invalid_grant` is the cancellation.
    for code in ["access_denied", "invalid_grant"] {
        let mut m = machine(Some(3600), 5);
        step(&mut m, Event::Timer, at(5));
        step(&mut m, Event::Cancel, at(6));
        assert_eq!(
            step(&mut m, Event::Response(oauth(code)), at(7)).action,
            Action::Deliver(Outcome::Cancelled),
            "{code}"
        );
    }
    // Without a cancellation they keep their meaning.
    let mut m = machine(Some(3600), 5);
    step(&mut m, Event::Timer, at(5));
    assert!(matches!(
        step(&mut m, Event::Response(oauth("invalid_grant")), at(7)).action,
        Action::Deliver(Outcome::Rejected(_))
    ));
}

#[test]
fn resumed_state_keeps_deadline_floor_and_schedule() {
    let mut m = machine(Some(3600), 5);
    step(&mut m, Event::Timer, at(5));
    step(&mut m, Event::Response(oauth("slow_down")), at(5));
    let json = serde_json::to_string(&m).unwrap();
    let mut back: PollMachine = serde_json::from_str(&json).unwrap();
    assert_eq!(back, m);
    assert_eq!(back.deadline(), at(3600));
    assert_eq!(back.floor(), secs(10));
    // Resumed much later: polls at once, not a fresh interval later, and
    // the deadline did not move.
    assert_eq!(
        step(&mut back, Event::Timer, at(1000)).action,
        Action::SendPoll
    );
    assert_eq!(back.deadline(), at(3600));
}

/// Issue 22, finding 1: a 1 s interval, an exchange the OP answered
/// 400 ms after it was sent: the first poll waits one interval from the
/// answer (an OP may count from there), the deadline counts from the
/// send.
#[test]
fn first_poll_waits_the_floor_from_the_exchange_answer() {
    let sent = T0;
    let answered = T0.saturating_add(Duration::from_millis(400));
    let auth =
        DeferredAuthentication::for_tests(crate::secret::DeferredId::new("id"), sent, Some(60), 1)
            .with_answered_at(answered);
    assert_eq!(auth.issued_at(), sent);
    assert_eq!(auth.answered_at(), answered);
    let mut m = PollMachine::new(&auth, PollConfig::default());
    let first = answered.saturating_add(secs(1));
    assert_eq!(m.next_poll(), first);
    assert_eq!(m.last_request(), answered);
    assert_eq!(m.deadline(), at(60), "the deadline counts from the send");
    // Not a millisecond early.
    let just_before = UnixTime::from_millis(first.as_millis() - 1);
    assert_eq!(
        step(&mut m, Event::Timer, just_before).action,
        Action::SleepUntil(first)
    );
    assert_eq!(step(&mut m, Event::Timer, first).action, Action::SendPoll);
    // A wake-up before the floor does not bring it forward either.
    let mut m = PollMachine::new(&auth, PollConfig::default());
    assert_eq!(
        step(&mut m, Event::Wake, answered).action,
        Action::SleepUntil(first)
    );
    // The same through `anchored`; an answer "before" the send (a clock
    // step) is read as the send.
    let m = PollMachine::anchored(sent, answered, Some(at(60)), secs(1), PollConfig::default());
    assert_eq!(m.next_poll(), first);
    let m = PollMachine::anchored(answered, sent, Some(at(60)), secs(1), PollConfig::default());
    assert_eq!(m.next_poll(), first);
    // An authentication kept without the answer time: the send.
    let old =
        DeferredAuthentication::for_tests(crate::secret::DeferredId::new("id"), sent, Some(60), 1);
    let json = serde_json::to_value(&old).unwrap();
    assert!(json.get("answered_at").is_none(), "{json}");
    let back: DeferredAuthentication =
        serde_json::from_str(&serde_json::to_string(&auth).unwrap()).unwrap();
    assert_eq!(back.answered_at(), answered);
    assert_eq!(old.answered_at(), sent);
    assert_eq!(
        PollMachine::new(&old, PollConfig::default()).next_poll(),
        at(1)
    );
}

/// Every later poll waits the floor from the previous answer's arrival,
/// however long that answer took; a restart while a poll was in flight
/// counts the floor from the restart (the lost answer may have come
/// late).
#[test]
fn later_polls_wait_the_floor_from_the_previous_answer() {
    let mut m = machine(Some(3600), 5);
    assert_eq!(step(&mut m, Event::Timer, at(5)).action, Action::SendPoll);
    // The answer took 3.5 s.
    let answer = at(8).saturating_add(Duration::from_millis(500));
    step(
        &mut m,
        Event::Response(oauth("authorization_pending")),
        answer,
    );
    assert_eq!(m.next_poll(), answer.saturating_add(secs(5)));
    // Restart while the next poll is in flight, 4 s after it was sent.
    let t = m.next_poll();
    assert_eq!(step(&mut m, Event::Timer, t).action, Action::SendPoll);
    let mut back: PollMachine = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
    let restart = t.saturating_add(secs(4));
    back.recover_after_restart(restart, &FixedRandom(0));
    assert_eq!(back.last_request(), restart);
    assert!(back.next_poll() >= restart.saturating_add(secs(5)));
}

#[test]
fn restart_while_in_flight_counts_as_transient() {
    let mut m = machine(Some(3600), 5);
    step(&mut m, Event::Timer, at(5));
    let mut back: PollMachine = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
    back.recover_after_restart(at(6), &FixedRandom(0));
    assert!(!back.in_flight());
    assert_eq!(back.backoff_step(), 1);
    assert!(back.next_poll() >= at(10));
}

/// A poll that was never sent (an external signer could not sign) backs
/// off like a transient failure, but leaves the OP's state known: a later
/// `invalid_grant` is a refusal, not a possibly lost answer.
#[test]
fn a_poll_that_was_never_sent_backs_off_and_loses_nothing() {
    let not_sent = || PollResult::<&'static str>::NotSent {
        message: "the signer failed (retryable): kms timeout".into(),
        cause: None,
    };
    let mut m = machine(Some(3600), 5);
    assert_eq!(step(&mut m, Event::Timer, at(5)).action, Action::SendPoll);
    let s = step(&mut m, Event::Response(not_sent()), at(5));
    assert!(!matches!(s.action, Action::Deliver(_)), "not an outcome");
    assert!(m.next_poll() > at(5), "polled again later");
    let t = m.next_poll();
    assert_eq!(step(&mut m, Event::Timer, t).action, Action::SendPoll);
    assert!(matches!(
        step(&mut m, Event::Response(oauth("invalid_grant")), t).action,
        Action::Deliver(Outcome::Rejected(_))
    ));
}
