//! Properties of the poll state machine over random answer sequences, and
//! deterministic runs of days of polling on a virtual clock.

use std::time::Duration;

use oidc_dtr::SystemRandom;
use oidc_dtr::UnixTime;
use oidc_dtr::{Action, Event, Outcome, PollConfig, PollMachine, PollResult};
use oidc_dtr::{ErrorCode, OAuthError, RetryAfter};
use proptest::prelude::*;

const T0: UnixTime = UnixTime::from_millis(1_800_000_000_000);

#[derive(Debug, Clone)]
enum Answer {
    Pending,
    SlowDown(Option<u64>),
    Transient(Option<u64>),
    ServerError,
    Tokens,
    Denied,
    Expired,
    InvalidGrant,
    InvalidRequest,
    InvalidDpop,
}

#[derive(Debug, Clone)]
enum Stimulus {
    /// Let the machine run to its next action; answer a poll after `delay_ms`.
    Run {
        answer: Answer,
        delay_ms: u64,
    },
    /// A ping `offset_ms` after the current time.
    Wake {
        offset_ms: u64,
    },
    /// The process restarts (serde round trip) `offset_ms` later.
    Restart {
        offset_ms: u64,
    },
    Cancel,
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        12 => Just(Answer::Pending),
        3 => proptest::option::of(1u64..400).prop_map(Answer::SlowDown),
        4 => proptest::option::of(0u64..900).prop_map(Answer::Transient),
        1 => Just(Answer::ServerError),
        1 => Just(Answer::Tokens),
        1 => Just(Answer::Denied),
        1 => Just(Answer::Expired),
        1 => Just(Answer::InvalidGrant),
        1 => Just(Answer::InvalidRequest),
        1 => Just(Answer::InvalidDpop),
    ]
}

fn stimulus() -> impl Strategy<Value = Stimulus> {
    prop_oneof![
        20 => (answer(), 0u64..40_000).prop_map(|(answer, delay_ms)| Stimulus::Run { answer, delay_ms }),
        3 => (0u64..120_000).prop_map(|offset_ms| Stimulus::Wake { offset_ms }),
        1 => (0u64..600_000).prop_map(|offset_ms| Stimulus::Restart { offset_ms }),
        1 => Just(Stimulus::Cancel),
    ]
}

fn to_result(a: &Answer) -> PollResult<u32> {
    let oauth = |c: &str| PollResult::OAuth(OAuthError::new(ErrorCode::from(c)));
    match a {
        Answer::Pending => oauth("authorization_pending"),
        Answer::SlowDown(i) => {
            let mut e = OAuthError::new(ErrorCode::SlowDown);
            e.interval = *i;
            PollResult::OAuth(e)
        }
        Answer::Transient(ra) => PollResult::Transient {
            message: "connection failed".into(),
            retry_after: ra.map(|s| RetryAfter::Delay(Duration::from_secs(s))),
            cause: None,
        },
        Answer::ServerError => oauth("server_error"),
        Answer::Tokens => PollResult::Tokens(7),
        Answer::Denied => oauth("access_denied"),
        Answer::Expired => oauth("expired_token"),
        Answer::InvalidGrant => oauth("invalid_grant"),
        Answer::InvalidRequest => oauth("invalid_request"),
        Answer::InvalidDpop => oauth("invalid_dpop_proof"),
    }
}

/// Runs a scenario and checks the invariants on every step.
fn run(
    expires_in: Option<u64>,
    interval: u64,
    cadence: Option<u64>,
    script: Vec<Stimulus>,
) -> Result<(), TestCaseError> {
    let cfg = PollConfig::default()
        .notified_cadence(cadence.map(Duration::from_secs))
        .max_lifetime(Duration::from_secs(20_000));
    let margin = cfg.final_poll_margin;
    let mut m = PollMachine::with_start(
        T0,
        expires_in.map(|e| T0.saturating_add(Duration::from_secs(e))),
        Duration::from_secs(interval),
        cfg,
    );
    let deadline = m.deadline();
    let rng = SystemRandom;
    let mut now = T0;
    let mut outcomes = 0;
    let mut floor = m.floor();
    let mut last_send: Option<UnixTime> = None;
    // When the OP last answered (the exchange, at first): the floor counts
    // from there, as the OP measures arrivals.
    let last_answer = std::cell::Cell::new(T0);
    // The latest Retry-After seen.
    let not_before = std::cell::Cell::new(T0);
    let mut sends = 0u32;
    let mut script = script.into_iter();

    // Checks applied to every action the machine returns.
    let mut check = |m: &PollMachine,
                     action: &Action<u32>,
                     now: UnixTime,
                     outcomes: &mut u32|
     -> Result<(), TestCaseError> {
        prop_assert!(
            m.floor() >= floor,
            "the floor fell from {floor:?} to {:?}",
            m.floor()
        );
        floor = m.floor();
        match action {
            Action::SendPoll => {
                prop_assert_eq!(*outcomes, 0, "a request after the outcome");
                prop_assert!(now < deadline, "a request at or after the deadline");
                // Issue 11, item 8: no poll is ever inside the floor, not
                // even the final one.
                let earliest = last_answer.get().saturating_add(floor_before_send(m));
                let is_final = now >= deadline.saturating_sub(margin);
                prop_assert!(
                    now >= earliest,
                    "poll at {now:?} before the floor ({earliest:?})"
                );
                prop_assert!(now >= not_before.get(), "poll before Retry-After");
                if let Some(prev) = last_send {
                    prop_assert!(now > prev || is_final, "two polls at once");
                }
                last_send = Some(now);
                sends += 1;
            }
            Action::Deliver(o) => {
                *outcomes += 1;
                prop_assert_eq!(*outcomes, 1, "more than one outcome");
                if matches!(o, Outcome::DeadlineReached { .. }) {
                    prop_assert!(now >= deadline, "deadline outcome before the deadline");
                    // Issue 11, item 8: a final poll was made whenever one
                    // fitted between the floor (and Retry-After) and the
                    // deadline.
                    let final_window = deadline.saturating_sub(margin);
                    let made = last_send.is_some_and(|t| t >= final_window);
                    let earliest = last_answer
                        .get()
                        .saturating_add(m.floor())
                        .max(not_before.get());
                    prop_assert!(
                        made || earliest >= deadline,
                        "no final poll although one fitted at {earliest:?} (deadline {deadline:?}, last poll {last_send:?})"
                    );
                }
            }
            Action::SleepUntil(t) => {
                prop_assert!(*t > now, "sleeping into the past");
                prop_assert!(*t <= deadline, "sleeping past the deadline");
            }
            Action::AwaitResponse => prop_assert!(m.in_flight()),
            Action::Finished => prop_assert_eq!(*outcomes, 1),
            other => prop_assert!(false, "an action this test does not know: {other:?}"),
        }
        Ok(())
    };

    let mut steps = 0;
    while !m.is_finished() {
        steps += 1;
        prop_assert!(steps < 100_000, "runaway");
        let stim = script.next().unwrap_or(Stimulus::Run {
            answer: Answer::Pending,
            delay_ms: 100,
        });
        match stim {
            Stimulus::Run { answer, delay_ms } => {
                // Advance to the machine's next action.
                let s = m.handle::<u32>(Event::Timer, now, &rng);
                check(&m, &s.action, now, &mut outcomes)?;
                match s.action {
                    Action::SleepUntil(t) => {
                        now = t;
                        let s = m.handle::<u32>(Event::Timer, now, &rng);
                        check(&m, &s.action, now, &mut outcomes)?;
                        if s.action == Action::SendPoll {
                            now = now.saturating_add(Duration::from_millis(delay_ms));
                            answered(&answer, now, &last_answer, &not_before);
                            let s = m.handle(Event::Response(to_result(&answer)), now, &rng);
                            check(&m, &s.action, now, &mut outcomes)?;
                        }
                    }
                    // A request is in flight (sent now, or before a cancel).
                    Action::SendPoll | Action::AwaitResponse => {
                        now = now.saturating_add(Duration::from_millis(delay_ms));
                        answered(&answer, now, &last_answer, &not_before);
                        let s = m.handle(Event::Response(to_result(&answer)), now, &rng);
                        check(&m, &s.action, now, &mut outcomes)?;
                    }
                    _ => {}
                }
            }
            Stimulus::Wake { offset_ms } => {
                let t = now.saturating_add(Duration::from_millis(offset_ms));
                if let Some(w) = m.wake_at()
                    && t > w
                {
                    continue; // the timer would have fired first
                }
                now = t;
                let s = m.handle::<u32>(Event::Wake, now, &rng);
                check(&m, &s.action, now, &mut outcomes)?;
                if s.action == Action::SendPoll {
                    answered(&Answer::Pending, now, &last_answer, &not_before);
                    let s = m.handle(Event::Response(to_result(&Answer::Pending)), now, &rng);
                    check(&m, &s.action, now, &mut outcomes)?;
                }
            }
            Stimulus::Restart { offset_ms } => {
                let json = serde_json::to_string(&m).unwrap();
                let before = m.clone();
                m = serde_json::from_str(&json).unwrap();
                prop_assert_eq!(&m, &before);
                if let Some(w) = m.wake_at() {
                    now = now.saturating_add(Duration::from_millis(offset_ms)).min(w);
                }
                m.recover_after_restart(now, &rng);
                prop_assert_eq!(m.deadline(), deadline, "restart moved the deadline");
            }
            Stimulus::Cancel => {
                let s = m.handle::<u32>(Event::Cancel, now, &rng);
                check(&m, &s.action, now, &mut outcomes)?;
            }
        }
    }
    prop_assert_eq!(outcomes, 1, "exactly one outcome");
    // Nothing happens after the end.
    for e in [
        Event::Timer,
        Event::Wake,
        Event::Cancel,
        Event::Response(PollResult::Tokens(1)),
    ] {
        prop_assert_eq!(m.handle(e, now, &rng).action, Action::Finished);
    }
    prop_assert!(sends <= m.polls());
    Ok(())
}

/// Records an answer arriving at `now`.
fn answered(
    a: &Answer,
    now: UnixTime,
    last_answer: &std::cell::Cell<UnixTime>,
    not_before: &std::cell::Cell<UnixTime>,
) {
    last_answer.set(last_answer.get().max(now));
    if let Answer::Transient(Some(ra)) = a {
        not_before.set(
            not_before
                .get()
                .max(now.saturating_add(Duration::from_secs(*ra))),
        );
    }
}

/// The floor that applied to the request just sent. A `slow_down` raises the
/// floor only after it arrives, so the machine's current floor is the one.
fn floor_before_send(m: &PollMachine) -> Duration {
    m.floor()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold(
        expires_in in proptest::option::of(1u64..20_000),
        interval in 1u64..120,
        cadence in proptest::option::of(1u64..300),
        script in proptest::collection::vec(stimulus(), 0..80),
    ) {
        run(expires_in, interval, cadence, script)?;
    }
}

/// An honest OP that decides after three days: the RP polls at the
/// interval, never too fast, and gets the tokens. Simulated in milliseconds.
#[test]
fn three_days_of_polling_on_a_virtual_clock() {
    let interval = 60;
    let decide_at = T0.saturating_add(Duration::from_secs(3 * 24 * 3600));
    let mut m = PollMachine::with_start(
        T0,
        Some(T0.saturating_add(Duration::from_secs(7 * 24 * 3600))),
        Duration::from_secs(interval),
        PollConfig::default(),
    );
    let rng = SystemRandom;
    let mut now = T0;
    let mut last_poll = T0;
    let mut polls = 0u64;
    let outcome = loop {
        match m.handle::<&str>(Event::Timer, now, &rng).action {
            Action::SleepUntil(t) => now = t,
            Action::SendPoll => {
                // The OP's own check: slow_down if polled faster than interval.
                assert!(now.saturating_duration_since(last_poll) >= Duration::from_secs(interval));
                last_poll = now;
                polls += 1;
                let answer = if now >= decide_at {
                    PollResult::Tokens("tokens")
                } else {
                    PollResult::OAuth(OAuthError::new(ErrorCode::AuthorizationPending))
                };
                if let Action::Deliver(o) = m.handle(Event::Response(answer), now, &rng).action {
                    break o;
                }
            }
            Action::Deliver(o) => break o,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(outcome, Outcome::Tokens("tokens"));
    assert_eq!(polls, 3 * 24 * 60);
    assert_eq!(m.slow_downs(), 0);
}

/// An OP that never answers `expired_token` (ANCHORS §3.6): the RP stops by
/// itself at the deadline, after one final poll.
#[test]
fn op_that_never_expires_is_stopped_locally() {
    let mut m = PollMachine::with_start(
        T0,
        Some(T0.saturating_add(Duration::from_secs(24 * 3600))),
        Duration::from_secs(300),
        PollConfig::default(),
    );
    let rng = SystemRandom;
    let mut now = T0;
    let mut polls = Vec::new();
    let outcome = loop {
        match m.handle::<()>(Event::Timer, now, &rng).action {
            Action::SleepUntil(t) => now = t,
            Action::SendPoll => {
                polls.push(now);
                m.handle::<()>(
                    Event::Response(PollResult::OAuth(OAuthError::new(
                        ErrorCode::AuthorizationPending,
                    ))),
                    now,
                    &rng,
                );
            }
            Action::Deliver(o) => break o,
            other => panic!("{other:?}"),
        }
    };
    assert!(matches!(outcome, Outcome::DeadlineReached { .. }));
    assert_eq!(now, m.deadline());
    // The last regular poll at 86 100 s; the floor then reaches the
    // deadline, so a final poll would be inside it: none is sent.
    let last = *polls.last().unwrap();
    assert_eq!(
        last,
        m.deadline().saturating_sub(Duration::from_secs(300)),
        "no final poll inside the floor"
    );
    assert_eq!(polls.len(), 24 * 3600 / 300 - 1);
}
