//! The poll state machine ([`PollMachine`]): when to send a Token Request
//! and what each answer means.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::config::SharedConfig;
use super::outcome::MAX_HELD_RETRY;
use super::snapshot::Notes;
use super::step::Applied;
use super::*;
use crate::error::{ErrorCode, RetryAfter, SharedError};
use crate::proto::exchange::DeferredAuthentication;
use crate::proto::ietf::{InteractionUri, check_interaction_uri};
use crate::proto::token::HeldTokens;
use crate::random::{RandomSource, random_u64_inclusive};
use crate::time::UnixTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum Phase {
    Waiting,
    InFlight,
    Finished,
}

/// The persisted state of one authentication's polling.
///
/// ```
/// use std::time::Duration;
/// use oidc_dtr::UnixTime;
/// use oidc_dtr::poll::{PollConfig, PollMachine};
///
/// let t = UnixTime::from_secs;
/// // Issued at t = 100 s, the OP's deadline at t = 700 s, its interval 5 s.
/// let interval = Duration::from_secs(5);
/// let m = PollMachine::with_start(t(100), Some(t(700)), interval, PollConfig::default());
/// assert_eq!(m.deadline(), t(700));
/// assert_eq!(m.floor(), Duration::from_secs(5));
/// assert!(!m.is_finished() && !m.in_flight());
/// // Its state serialises, to resume after a restart.
/// let saved = serde_json::to_string(&m)?;
/// let back: PollMachine = serde_json::from_str(&saved)?;
/// assert_eq!(back.deadline(), m.deadline());
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollMachine {
    /// The absolute deadline.
    deadline: UnixTime,
    /// Whether the deadline came from the OP's `expires_in`.
    deadline_from_op: bool,
    /// The current floor, in seconds.
    floor_secs: u64,
    /// The floor's anchor: when the last answer arrived (the exchange's,
    /// then each poll's); while a poll is in flight, when it was sent.
    last_request: UnixTime,
    /// Not before this instant (Retry-After).
    not_before: UnixTime,
    /// Consecutive transient failures.
    pub(super) backoff_step: u32,
    /// When the next poll is due.
    next_poll: UnixTime,
    /// Whether `next_poll` is the final poll before the deadline.
    next_is_final: bool,
    /// Whether the final poll was sent.
    final_poll_sent: bool,
    /// Whether the request in flight is the one `invalid_dpop_proof` retry.
    dpop_retry_used: bool,
    /// A wake-up arrived since the last request.
    woken: bool,
    /// A wake-up was followed by a poll that has not yet had a well-formed
    /// OAuth answer: failures retry at the floor, not the notified cadence.
    #[serde(default)]
    wake_unserved: bool,
    /// The last poll's fate is unknown (a transient failure after sending):
    /// the OP may have redeemed the id and its answer been lost.
    #[serde(default)]
    fate_unknown: bool,
    /// Cancellation was asked while a request was in flight.
    cancel_requested: bool,
    phase: Phase,
    /// Requests sent (not counting the exchange).
    polls: u32,
    /// `slow_down` answers received.
    slow_downs: u32,
    /// The last transient problem and the last progress text surfaced
    /// (serialised as `last_error` and `last_progress`), out of line: most
    /// machines have neither.
    #[serde(flatten)]
    notes: Notes,
    /// The schedule's tuning.
    config: SharedConfig,
    /// Whether the last pending answer carried an `interaction_uri` that was
    /// refused (so that the refusal is surfaced once, not on every poll).
    /// Not persisted: after a restart it is surfaced again.
    #[serde(skip)]
    interaction_refused: bool,
    /// Tokens in hand whose validation could not finish yet: while set,
    /// each "poll" validates them again instead of asking the OP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    held: Option<Box<HeldTokens>>,
}

impl PollMachine {
    /// The machine for a freshly exchanged authentication: the deadline
    /// counts from when the exchange was sent
    /// ([`issued_at`](DeferredAuthentication::issued_at)), the first poll's
    /// floor from when its answer arrived
    /// ([`answered_at`](DeferredAuthentication::answered_at)).
    pub fn new(auth: &DeferredAuthentication, config: PollConfig) -> Self {
        Self::anchored(
            auth.issued_at(),
            auth.answered_at(),
            auth.expires_at(),
            auth.interval(),
            config,
        )
    }

    /// The machine for an authentication issued at `issued_at`, with the
    /// OP's deadline (if any) and interval, when the time its answer arrived
    /// is not known: both the deadline and the first poll's floor count from
    /// `issued_at`. Prefer [`anchored`](Self::anchored) when it is known.
    pub fn with_start(
        issued_at: UnixTime,
        expires_at: Option<UnixTime>,
        interval: Duration,
        config: PollConfig,
    ) -> Self {
        Self::anchored(issued_at, issued_at, expires_at, interval, config)
    }

    /// The machine for an authentication whose creating request (the
    /// exchange, or the IETF initial token request) was sent at `sent_at`
    /// and answered at `answered_at` (read from the clock after the answer
    /// arrived). The local maximum lifetime counts from `sent_at`, so the
    /// deadline is never later than the OP's; the first poll waits the
    /// floor from `answered_at`, because an OP may count the interval from
    /// its answer and a slow answer must not make the first poll early.
    /// An `answered_at` before `sent_at` is read as `sent_at`.
    pub fn anchored(
        sent_at: UnixTime,
        answered_at: UnixTime,
        expires_at: Option<UnixTime>,
        interval: Duration,
        config: PollConfig,
    ) -> Self {
        let issued_at = sent_at;
        let answered_at = answered_at.max(sent_at);
        // A huge `expires_in` is capped like a missing one: the local maximum
        // lifetime bounds every authentication.
        let cap = issued_at.saturating_add(config.max_lifetime);
        let (deadline, deadline_from_op) = match expires_at {
            Some(d) if d <= cap => (d, true),
            _ => (cap, false),
        };
        let mut m = PollMachine {
            deadline,
            deadline_from_op,
            floor_secs: interval.as_secs().max(1),
            last_request: answered_at,
            not_before: answered_at,
            backoff_step: 0,
            next_poll: answered_at,
            next_is_final: false,
            final_poll_sent: false,
            dpop_retry_used: false,
            woken: false,
            wake_unserved: false,
            fate_unknown: false,
            cancel_requested: false,
            phase: Phase::Waiting,
            polls: 0,
            slow_downs: 0,
            notes: Notes::default(),
            config: SharedConfig::new(config),
            interaction_refused: false,
            held: None,
        };
        m.schedule(answered_at, 0);
        m
    }

    /// For a machine driven directly: the cadence while pings are expected
    /// (`None`, the default, polls at the floor). With pings, polling is a
    /// safety net: the regular cadence is then at least this long, and a
    /// wake-up ([`Event::Wake`]) brings the next poll back to the floor.
    /// Call it on a new machine, before its first step; the first poll is
    /// scheduled again. A [`DtrClient`](crate::DtrClient) sets it itself from
    /// [`DtrClientBuilder::notified_poll_cadence`](crate::DtrClientBuilder::notified_poll_cadence).
    #[must_use]
    pub fn notified_cadence(mut self, cadence: Option<Duration>) -> Self {
        if self.config.notified_cadence != cadence {
            let config = (*self.config).clone().with_notified_cadence(cadence);
            self.config = SharedConfig::new(config);
            if self.polls == 0 && matches!(self.phase, Phase::Waiting) && !self.woken {
                self.schedule(self.last_request, 0);
            }
        }
        self
    }

    /// The machine as plain data (for the stores' record types).
    pub(crate) fn to_snapshot(&self) -> PollSnapshot {
        PollSnapshot {
            deadline: self.deadline,
            deadline_from_op: self.deadline_from_op,
            floor_secs: self.floor_secs,
            last_request: self.last_request,
            not_before: self.not_before,
            backoff_step: self.backoff_step,
            next_poll: self.next_poll,
            next_is_final: self.next_is_final,
            final_poll_sent: self.final_poll_sent,
            dpop_retry_used: self.dpop_retry_used,
            woken: self.woken,
            wake_unserved: self.wake_unserved,
            fate_unknown: self.fate_unknown,
            cancel_requested: self.cancel_requested,
            phase: match self.phase {
                Phase::Waiting => 0,
                Phase::InFlight => 1,
                Phase::Finished => 2,
            },
            polls: self.polls,
            slow_downs: self.slow_downs,
            last_error: self.notes.error().map(str::to_owned),
            last_progress: self.notes.progress().map(str::to_owned),
            interaction_uri: self.notes.interaction_uri().cloned(),
            config: PollConfig::clone(&self.config),
            held: self.held.as_deref().cloned(),
        }
    }

    /// The machine back from plain data; `None` for an unknown phase.
    pub(crate) fn from_snapshot(s: PollSnapshot) -> Option<Self> {
        Some(PollMachine {
            deadline: s.deadline,
            deadline_from_op: s.deadline_from_op,
            floor_secs: s.floor_secs.max(1),
            last_request: s.last_request,
            not_before: s.not_before,
            backoff_step: s.backoff_step,
            next_poll: s.next_poll,
            next_is_final: s.next_is_final,
            final_poll_sent: s.final_poll_sent,
            dpop_retry_used: s.dpop_retry_used,
            woken: s.woken,
            wake_unserved: s.wake_unserved,
            fate_unknown: s.fate_unknown,
            cancel_requested: s.cancel_requested,
            phase: match s.phase {
                0 => Phase::Waiting,
                1 => Phase::InFlight,
                2 => Phase::Finished,
                _ => return None,
            },
            polls: s.polls,
            slow_downs: s.slow_downs,
            notes: Notes::new(s.last_error, None, s.last_progress)
                .with_interaction_uri(s.interaction_uri),
            config: SharedConfig::new(s.config),
            interaction_refused: false,
            held: s.held.map(Box::new),
        })
    }

    /// The absolute deadline.
    pub fn deadline(&self) -> UnixTime {
        self.deadline
    }

    /// Whether the deadline is the OP's (`expires_in`) rather than the local
    /// maximum lifetime.
    pub fn deadline_from_op(&self) -> bool {
        self.deadline_from_op
    }

    /// The current floor (minimum time between requests).
    pub fn floor(&self) -> Duration {
        Duration::from_secs(self.floor_secs)
    }

    /// The instant the floor counts from: when the last answer arrived (the
    /// exchange's, at first), or when the last request was sent, while it
    /// is in flight.
    pub fn last_request(&self) -> UnixTime {
        self.last_request
    }

    /// When the next poll is due (meaningless once finished or in flight).
    pub fn next_poll(&self) -> UnixTime {
        self.next_poll
    }

    /// Consecutive transient failures.
    pub fn backoff_step(&self) -> u32 {
        self.backoff_step
    }

    /// Requests sent so far.
    pub fn polls(&self) -> u32 {
        self.polls
    }

    /// `slow_down` answers received so far.
    pub fn slow_downs(&self) -> u32 {
        self.slow_downs
    }

    /// Whether a request is in flight.
    pub fn in_flight(&self) -> bool {
        self.phase == Phase::InFlight
    }

    /// Whether an outcome was delivered.
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Finished
    }

    /// The `interaction_uri` the AS currently waits at (IETF
    /// `interaction_required`): `None` when it waits for no interaction.
    pub fn interaction_uri(&self) -> Option<&InteractionUri> {
        self.notes.interaction_uri()
    }

    /// Starts with the interaction of the deferred response (IETF
    /// `interaction_required` on the initial token request).
    /// The last transient problem noted (no secrets), if any.
    pub(crate) fn last_error(&self) -> Option<&str> {
        self.notes.error()
    }

    /// Tokens in hand awaiting validation (their JWK Set was unreachable),
    /// if any: the driver then validates them instead of polling.
    pub fn held_tokens(&self) -> Option<&HeldTokens> {
        self.held.as_deref()
    }

    /// A machine that holds tokens from the start (tokens answered at once
    /// whose validation could not finish): the first validation attempt is
    /// one backoff step from `now`.
    pub(crate) fn holding(mut self, tokens: HeldTokens, reason: String, now: UnixTime) -> Self {
        self.hold(tokens, reason, now);
        self
    }

    /// Keeps `tokens` and schedules their next validation attempt with
    /// backoff (at least a second away).
    fn hold(&mut self, tokens: HeldTokens, reason: String, now: UnixTime) {
        self.held = Some(Box::new(tokens));
        self.notes.set_error(reason, None);
        self.backoff_step = self.backoff_step.saturating_add(1);
        let wait = self
            .backoff_window()
            .min(MAX_HELD_RETRY)
            .max(Duration::from_secs(1));
        self.next_poll = now.saturating_add(wait);
        self.next_is_final = false;
    }

    pub(crate) fn with_interaction(mut self, uri: Option<InteractionUri>) -> Self {
        self.notes.set_interaction_uri(uri);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &PollConfig {
        &self.config
    }

    /// Replaces the configuration (e.g. after a restart with new settings).
    /// The floor, deadline and history are kept.
    pub fn set_config(&mut self, config: PollConfig) {
        self.config = SharedConfig::new(config);
    }

    /// Tests: the next poll moved to `at` (as a `Retry-After` would).
    #[cfg(test)]
    pub(crate) fn delay_for_tests(&mut self, at: UnixTime) {
        self.next_poll = at;
        self.not_before = at;
    }

    /// The instant the driver should next call [`handle`](Self::handle) with
    /// [`Event::Timer`]: `None` while a request is in flight or after the end.
    pub fn wake_at(&self) -> Option<UnixTime> {
        match self.phase {
            Phase::Waiting if self.held.is_some() => Some(self.next_poll),
            Phase::Waiting => Some(self.next_poll.min(self.deadline)),
            Phase::InFlight | Phase::Finished => None,
        }
    }

    /// After a restart: a request that was in flight when the process
    /// stopped has an unknown fate. It is treated as a transient failure
    /// ("interrupted") answered at `now`, so the next poll waits the floor
    /// from `now`: the OP may have answered the lost request long after it
    /// was sent, and counts the interval from that answer.
    pub fn recover_after_restart(&mut self, now: UnixTime, rng: &dyn RandomSource) {
        if self.held.is_some() {
            // Nothing was sent to the OP: validate the held tokens again.
            if self.phase == Phase::InFlight {
                self.phase = Phase::Waiting;
                self.next_poll = now;
            }
            return;
        }
        if self.phase == Phase::InFlight {
            self.phase = Phase::Waiting;
            self.last_request = self.last_request.max(now);
            self.on_transient(
                now,
                "interrupted by a restart while a request was in flight".into(),
                None,
                None,
                true,
                rng,
            );
        }
    }

    /// After a restart from a store whose latest poll states may be lost
    /// (relaxed durability): the request in flight, if any, counts as a
    /// transient failure, and the next poll waits a full floor from now, so
    /// that a poll made just before the crash is never followed too soon.
    /// The deadline does not move.
    pub fn resume_after_restart(&mut self, now: UnixTime, rng: &dyn RandomSource) {
        self.recover_after_restart(now, rng);
        if self.held.is_some() {
            // Held tokens are validated, not polled: no floor to respect.
            if self.phase == Phase::Waiting {
                self.next_poll = self.next_poll.min(now);
            }
            return;
        }
        if self.phase == Phase::Waiting {
            self.not_before = self.not_before.max(now.saturating_add(self.floor()));
            self.schedule(now, 0);
        }
    }

    /// For [`Store`](crate::store::Store) implementations shared by several
    /// instances: the record is being taken over from a lease that lapsed
    /// at `lapsed_at` (it expired and was never released: its holder died
    /// or lost the store). The holder may have sent a poll after the state
    /// read here was written, from the earliest instant a ping could bring
    /// that poll (a floor after the last answer) until its lease lapsed,
    /// and its answer (the tokens, maybe) may never have been read or
    /// stored. If that window is not empty, the poll's fate is unknown: a
    /// first answer of `invalid_grant` then ends the authentication as
    /// [`Outcome::PossiblyLostInTransit`], not as a refusal (any
    /// well-formed OAuth answer clears the mark).
    ///
    /// The comparison mixes the instances' clocks (the state) and the
    /// store's (`lapsed_at`); it holds while they agree to within the part
    /// of the lease a poll never uses (an instance sends no poll in the
    /// last third of its lease).
    pub fn taken_over_from_lapsed_lease(&mut self, lapsed_at: UnixTime) {
        if self.phase != Phase::Waiting || self.fate_unknown {
            return;
        }
        let earliest = self
            .last_request
            .saturating_add(self.floor())
            .max(self.not_before);
        if earliest < lapsed_at {
            self.fate_unknown = true;
            self.notes.set_error(
                "the previous owner's lease lapsed while one of its polls may have been in flight"
                    .into(),
                None,
            );
        }
    }

    /// Feeds one event; returns what to do next.
    pub fn handle<T>(&mut self, event: Event<T>, now: UnixTime, rng: &dyn RandomSource) -> Step<T> {
        if self.phase == Phase::Finished {
            return Step::new(Action::Finished);
        }
        let mut progress = None;
        let mut interaction = None;
        let mut interaction_refused = None;
        let mut failed = None;
        match event {
            Event::Timer => {}
            Event::Wake => self.on_wake(now),
            Event::Cancel => {
                if self.held.is_some() {
                    // The OP has already answered with tokens: as for an
                    // answer in flight, they win over the cancellation.
                    self.cancel_requested = true;
                    return Step::new(self.next_action(now));
                }
                if self.phase == Phase::InFlight {
                    // The answer may carry tokens the OP will never issue
                    // again: wait for it, then cancel unless it has them.
                    self.cancel_requested = true;
                    return Step::new(Action::AwaitResponse);
                }
                return self.finish(Outcome::Cancelled);
            }
            Event::Response(result) => {
                if self.phase != Phase::InFlight {
                    // An answer nobody waits for (a bug in the driver):
                    // ignore it rather than double-count.
                    return Step::new(self.next_action(now));
                }
                self.phase = Phase::Waiting;
                // The floor counts from the answer, not from the send: the
                // OP measures the gap between *arrivals*, and latency varies
                // (a request delayed in a queue followed by a prompt one
                // would otherwise arrive closer than the floor and earn a
                // slow_down). The OP has processed the request once it
                // answered, so the next one arrives at least a floor later.
                if self.held.is_some() {
                    return self.on_held_response(result, now);
                }
                self.last_request = self.last_request.max(now);
                failed = RetryCause::of(&result);
                match self.on_response(result, now, rng) {
                    Applied::Continue(p, i, r) => {
                        progress = p;
                        interaction = i;
                        interaction_refused = r;
                    }
                    // The answer to a poll sent before the cancellation
                    // reached the OP: `access_denied` or (IETF revocation, when the AS
                    // dropped the record) `invalid_grant` is the
                    // cancellation itself.
                    Applied::End(Outcome::Denied { .. })
                    | Applied::End(Outcome::PossiblyLostInTransit { .. })
                        if self.cancel_requested =>
                    {
                        return self.finish(Outcome::Cancelled);
                    }
                    Applied::End(Outcome::Rejected(PollFailure::OAuth(e)))
                        if self.cancel_requested && e.code == ErrorCode::InvalidGrant =>
                    {
                        return self.finish(Outcome::Cancelled);
                    }
                    Applied::End(outcome) => return self.finish(outcome),
                }
                if self.cancel_requested && self.held.is_none() {
                    return self.finish(Outcome::Cancelled);
                }
            }
        }
        let action = self.next_action(now);
        // A retried failure, when an attempt remains before the deadline
        // (at the deadline the machine ends instead of polling).
        let retry = match (&action, failed) {
            (Action::SleepUntil(t), Some(cause)) if *t < self.deadline => Some(Retry {
                cause,
                next_attempt: *t,
            }),
            _ => None,
        };
        Step {
            action,
            progress,
            interaction,
            interaction_refused,
            retry,
        }
    }

    fn finish<T>(&mut self, outcome: Outcome<T>) -> Step<T> {
        self.phase = Phase::Finished;
        Step::new(Action::Deliver(outcome))
    }

    fn next_action<T>(&mut self, now: UnixTime) -> Action<T> {
        match self.phase {
            Phase::Finished => return Action::Finished,
            Phase::InFlight => return Action::AwaitResponse,
            Phase::Waiting => {}
        }
        if self.held.is_some() {
            // Tokens in hand: validated again at `next_poll`, whatever the
            // deadline (it bounds the wait for the OP, which has answered).
            if now >= self.next_poll {
                self.phase = Phase::InFlight;
                return Action::SendPoll;
            }
            return Action::SleepUntil(self.next_poll);
        }
        if now >= self.deadline {
            self.phase = Phase::Finished;
            return Action::Deliver(Outcome::DeadlineReached {
                last_error: self.notes.error().map(str::to_owned),
                last_cause: self.notes.cause(),
            });
        }
        if now >= self.next_poll {
            self.phase = Phase::InFlight;
            self.last_request = now;
            self.polls = self.polls.saturating_add(1);
            if self.woken {
                self.wake_unserved = true;
            }
            self.woken = false;
            if self.next_is_final {
                self.final_poll_sent = true;
            }
            return Action::SendPoll;
        }
        Action::SleepUntil(self.next_poll.min(self.deadline))
    }

    fn on_wake(&mut self, now: UnixTime) {
        self.woken = true;
        if self.phase != Phase::Waiting {
            return;
        }
        let at_floor = self
            .last_request
            .saturating_add(self.floor())
            .max(self.not_before)
            .max(now);
        if at_floor < self.next_poll {
            self.next_poll = at_floor;
            self.next_is_final = false;
        }
    }

    /// The result of validating held tokens again: the tokens, a
    /// definitive refusal, or (anything else) still held, tried again
    /// with backoff.
    fn on_held_response<T>(&mut self, result: PollResult<T>, now: UnixTime) -> Step<T> {
        match result {
            PollResult::Tokens(t) => {
                self.held = None;
                self.finish(Outcome::Tokens(t))
            }
            PollResult::Permanent(f) => {
                self.held = None;
                self.finish(Outcome::Rejected(f))
            }
            other => {
                let (tokens, reason) = match other {
                    PollResult::Held { tokens, reason } => (tokens, reason),
                    PollResult::Transient { message, .. } => match self.held.take() {
                        Some(t) => (*t, message),
                        None => return Step::new(self.next_action(now)),
                    },
                    _ => match self.held.take() {
                        Some(t) => (*t, "the held tokens could not be validated".into()),
                        None => return Step::new(self.next_action(now)),
                    },
                };
                self.hold(tokens, reason, now);
                Step::new(self.next_action(now))
            }
        }
    }

    /// Applies an answer.
    fn on_response<T>(
        &mut self,
        result: PollResult<T>,
        now: UnixTime,
        rng: &dyn RandomSource,
    ) -> Applied<T> {
        let mut e = match result {
            PollResult::Tokens(t) => return Applied::End(Outcome::Tokens(t)),
            PollResult::Permanent(f) => return Applied::End(Outcome::Rejected(f)),
            PollResult::Held { tokens, reason } => {
                // The OP has answered with tokens (the id is redeemed);
                // they are kept until they can be validated.
                self.fate_unknown = false;
                self.backoff_step = 0;
                self.hold(tokens, reason, now);
                return Applied::Continue(None, None, None);
            }
            PollResult::Transient {
                message,
                retry_after,
                cause,
            } => {
                self.on_transient(now, message, cause, retry_after, true, rng);
                return Applied::Continue(None, None, None);
            }
            PollResult::NotSent { message, cause } => {
                self.on_transient(now, message, cause, None, false, rng);
                return Applied::Continue(None, None, None);
            }
            PollResult::OAuth(e) => e,
        };
        if let Some(ra) = e.retry_after {
            self.not_before = self.not_before.max(ra.not_before(now));
        }
        let mut progress = None;
        let mut interaction = None;
        let mut refused = None;
        match &e.code {
            // `interaction_required` reaches the machine only from a profile
            // that reads it as pending (the IETF draft's reading; see `Profile::classify`).
            ErrorCode::AuthorizationPending | ErrorCode::InteractionRequired => {
                if e.description.is_some() && e.description.as_deref() != self.notes.progress() {
                    progress = e.description.clone();
                    // The answer's own text is kept (not a third copy).
                    self.notes.set_progress(e.description.take());
                }
                let checked = match e.code {
                    ErrorCode::InteractionRequired => check_interaction_uri(&e),
                    _ => None,
                };
                let (uri, why) = match checked {
                    Some(Ok(u)) => (Some(u), None),
                    Some(Err(why)) => (None, Some(why)),
                    None => (None, None),
                };
                // Said once per run of answers with a refused URI.
                if why.is_some() && !self.interaction_refused {
                    refused = why.clone();
                }
                self.interaction_refused = why.is_some();
                if uri.as_ref() != self.notes.interaction_uri() {
                    interaction = Some(match &uri {
                        Some(u) => InteractionChange::Required(u.clone()),
                        None => InteractionChange::Resolved,
                    });
                    self.notes.set_interaction_uri(uri);
                }
            }
            ErrorCode::SlowDown => {
                self.slow_downs = self.slow_downs.saturating_add(1);
                let raised = self.floor_secs.saturating_add(SLOW_DOWN_STEP.as_secs());
                self.floor_secs = raised.max(e.interval.unwrap_or(0)).max(self.floor_secs);
            }
            // The OP wants a DPoP nonce the driver could not supply in its
            // immediate retry: poll again at the floor.
            ErrorCode::UseDpopNonce => {}
            ErrorCode::ServerError | ErrorCode::TemporarilyUnavailable => {
                let message = e.to_string();
                let retry_after = e.retry_after;
                let cause = Some(SharedError::new(e));
                self.on_transient(now, message, cause, retry_after, true, rng);
                return Applied::Continue(None, None, None);
            }
            ErrorCode::ExpiredToken => return Applied::End(Outcome::ExpiredByOp),
            ErrorCode::AccessDenied => {
                return Applied::End(Outcome::Denied {
                    description: e.description,
                });
            }
            ErrorCode::InvalidDpopProof if !self.dpop_retry_used => {
                self.dpop_retry_used = true;
            }
            // The id was alive until a poll whose answer was lost: that
            // answer most likely carried the tokens.
            ErrorCode::InvalidGrant if self.fate_unknown => {
                return Applied::End(Outcome::PossiblyLostInTransit {
                    lost: self.notes.error().map(str::to_owned),
                });
            }
            _ => return Applied::End(Outcome::Rejected(PollFailure::OAuth(Box::new(e)))),
        }
        // A well-formed OAuth answer: the transport is healthy again, the
        // id is still alive (nothing was lost), and a ping was answered.
        self.backoff_step = 0;
        self.fate_unknown = false;
        self.wake_unserved = false;
        self.schedule(now, 0);
        Applied::Continue(progress, interaction, refused)
    }

    fn on_transient(
        &mut self,
        now: UnixTime,
        message: String,
        cause: Option<SharedError>,
        retry_after: Option<RetryAfter>,
        sent: bool,
        rng: &dyn RandomSource,
    ) {
        if let Some(ra) = retry_after {
            self.not_before = self.not_before.max(ra.not_before(now));
        }
        self.notes.set_error(message, cause);
        // A request that may have reached the OP leaves its fate unknown;
        // one that was never sent changes nothing there.
        if sent {
            self.fate_unknown = true;
        }
        self.backoff_step = self.backoff_step.saturating_add(1);
        let window = self.backoff_window();
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        // Full jitter; if the random source fails, wait the whole window.
        let jitter_ms = random_u64_inclusive(rng, window_ms).unwrap_or(window_ms);
        self.schedule(now, jitter_ms);
    }

    /// The backoff window for the current step: base * 2^(step-1), capped.
    pub(super) fn backoff_window(&self) -> Duration {
        if self.backoff_step == 0 {
            return Duration::ZERO;
        }
        let shift = (self.backoff_step - 1).min(40);
        let base_ms = u64::try_from(self.config.backoff_base.as_millis()).unwrap_or(u64::MAX);
        let ms = base_ms.saturating_mul(1u64 << shift);
        Duration::from_millis(ms).min(self.config.backoff_cap)
    }

    /// Computes `next_poll` after a request's answer (or at the start).
    fn schedule(&mut self, now: UnixTime, jitter_ms: u64) {
        let mut cadence = self.floor();
        if !self.woken
            && !self.wake_unserved
            && let Some(c) = self.config.notified_cadence
        {
            cadence = cadence.max(c);
        }
        let at_floor = self
            .last_request
            .saturating_add(self.floor())
            .max(self.not_before);
        let regular = self
            .last_request
            .saturating_add(cadence)
            .max(self.not_before)
            .saturating_add(Duration::from_millis(jitter_ms));
        let final_at = self.deadline.saturating_sub(self.config.final_poll_margin);
        // One last look before the deadline, never inside the floor.
        let final_poll = final_at.max(at_floor).max(now);
        if regular <= final_at {
            self.next_poll = regular;
            self.next_is_final = false;
        } else if !self.final_poll_sent && final_poll < self.deadline {
            self.next_poll = final_poll;
            self.next_is_final = true;
        } else {
            self.next_poll = self.deadline;
            self.next_is_final = false;
        }
    }
}
