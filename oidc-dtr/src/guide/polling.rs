//! When the SDK polls, and what each answer means.
//!
//! # What the drafts say
//!
//! After the exchange, the RP asks the token endpoint again and again
//! (OIDC draft §"Token Request"; the same grant type,
//! `urn:openid:params:grant-type:deferred`, with the `deferred_auth_id`)
//! until the OP has decided. The rules are those of RFC 8628 §3.5 and
//! OpenID Connect CIBA §11:
//!
//! - wait at least `interval` seconds between two requests (a *must*);
//! - on `slow_down`, wait at least 5 seconds more, for good;
//! - `authorization_pending` means "not yet", and its `error_description`
//!   may say how far the OP has come (a queue position, a step);
//! - `expired_token`, `access_denied`, `invalid_grant` and
//!   `invalid_request` end the authentication, and after `invalid_request`
//!   (which an OP may send to a client that keeps polling too fast) the RP
//!   must send nothing more for that id;
//! - the RP may send one last poll shortly before the authentication
//!   expires, to catch a late decision or a lost ping.
//!
//! The poll is not idempotent: once the OP has handed out the tokens, the
//! id is spent, and a second poll gets `invalid_grant`. An answer lost on
//! the way (a reset connection, a timeout) may have carried the tokens.
//!
//! # What the SDK does
//!
//! Each authentication has a [`PollMachine`](crate::poll::PollMachine): a pure
//! state machine that decides *when* to send the next request and *what*
//! each answer means. It reads no clock and does no IO; the client's poll
//! engine (one tokio task with one timer queue for every pending
//! authentication, no task per authentication) feeds it the time, the
//! timers, pings and answers, and sends the requests it asks for. Its
//! rules:
//!
//! - **Floor.** Never poll before *previous answer + floor*. The floor
//!   counts from the moment the previous answer *arrived*, not from when
//!   the request was sent: the OP measures the gap between arrivals, and
//!   a request that waited in a queue followed by a prompt one would
//!   otherwise arrive closer together than the floor and earn a
//!   `slow_down`. For the first poll, the previous answer is the answer to
//!   the exchange (or, in the IETF profile, to the initial token request or
//!   the device token request): the first poll waits a full floor too. The
//!   floor starts at the OP's `interval` (5 s when the OP sends none: the
//!   OIDC draft sets no default, and 5 s is RFC 8628's), rises by 5 s on
//!   every `slow_down` (or to the answer's `interval` when that is larger),
//!   and never falls.
//! - **Retry-After** on any answer pushes the next poll to at least that
//!   time.
//! - **Transient failures** (connection errors, timeouts, HTTP 429 and 5xx,
//!   bodies that are not OAuth errors, `server_error`,
//!   `temporarily_unavailable`) add an exponential backoff with full jitter
//!   *on top of* the floor (2 s doubling to 5 min by default:
//!   [`PollConfig`](crate::poll::PollConfig)). Any well-formed OAuth answer
//!   resets it. They never end an authentication before its deadline.
//! - **Permanent failures** (TLS or DNS failures, `invalid_client`,
//!   `unauthorized_client`, `unsupported_grant_type`, tokens that fail
//!   validation) end it at once with
//!   [`Outcome::Rejected`](crate::Outcome::Rejected), which keeps the
//!   cause ([`PollFailure`](crate::poll::PollFailure)).
//! - **Deadline.** The deadline is absolute: the OP's `expires_in`, counted
//!   from *before* the exchange request was sent, so it is never later than
//!   the OP's own; or, when the OP sets none, a local maximum lifetime (30
//!   days by default). When the regular cadence would miss it, one final
//!   poll is sent at *deadline − margin* (2 s by default), but never inside
//!   the floor. Reaching the deadline gives
//!   [`Outcome::DeadlineReached`](crate::Outcome::DeadlineReached), which is
//!   distinct from the OP's own `expired_token`
//!   ([`Outcome::ExpiredByOp`](crate::Outcome::ExpiredByOp)).
//! - **Terminal answers.** `access_denied` →
//!   [`Outcome::Denied`](crate::Outcome::Denied) (with the OP's text);
//!   `expired_token` → `ExpiredByOp`; `invalid_grant`, `invalid_request`
//!   and other errors → `Rejected`, after which no request is ever sent for
//!   that id.
//! - **Lost answers.** An `invalid_grant` right after a poll whose fate is
//!   unknown (a transient failure after the request was sent, or a request
//!   that was in flight when the process stopped or, in a fleet, when the
//!   instance polling it died) is
//!   [`Outcome::PossiblyLostInTransit`](crate::Outcome::PossiblyLostInTransit):
//!   the OP most likely issued the tokens in the answer that never arrived.
//!   Nothing can recover them but a new authentication; tell the user so.
//! - **DPoP.** `use_dpop_nonce` (RFC 9449 §8) is retried at once with the
//!   server's nonce and does not count as a poll. `invalid_dpop_proof` is
//!   retried once with a fresh proof, then terminal.
//! - **Single flight.** At most one request per authentication is in
//!   flight: timers and pings that come meanwhile do nothing, the answer
//!   decides. (A second concurrent poll would turn a success into
//!   `invalid_grant`.)
//! - **Wake-ups.** A ping moves the next poll to "now, or when the floor
//!   has elapsed". A ping never makes a poll come sooner than the floor.
//! - **Exactly one outcome.** Once an outcome is delivered, the machine
//!   ignores every event.
//!
//! With a notification endpoint configured, polling becomes a safety net:
//! the regular cadence is at least 60 s
//! ([`DtrClientBuilder::notified_poll_cadence`](crate::DtrClientBuilder::notified_poll_cadence)),
//! and each ping brings the next poll back to the floor (see
//! [`pings`](super::pings)).
//!
//! After a restart, an authentication resumes with its deadline and floor;
//! its next poll waits a full floor from the restart, because the store may
//! have lost the record of a poll made just before the crash (see
//! [`durability`](super::durability)).
//!
//! # What your application does
//!
//! Nothing, usually: the engine runs by itself. You may:
//!
//! - show progress: [`PollEvent::Progress`](crate::PollEvent::Progress)
//!   events from [`DtrClient::subscribe`](crate::DtrClient::subscribe)
//!   carry each new `error_description` (the OP's text: escape it before
//!   showing it);
//! - look at where an authentication stands:
//!   [`DtrClient::poll_status`](crate::DtrClient::poll_status) gives a
//!   [`PollStatus`](crate::PollStatus) (floor, next poll, deadline, polls
//!   and `slow_down`s so far);
//! - tune the schedule with [`PollConfig`](crate::poll::PollConfig) (backoff,
//!   final-poll margin, maximum lifetime) and the engine with
//!   [`DriverConfig`](crate::poll::DriverConfig) (polls in flight at once);
//! - handle each [`Outcome`](crate::Outcome): tell the user, and offer a
//!   new authentication after `ExpiredByOp`, `DeadlineReached` or
//!   `PossiblyLostInTransit`.
//!
//! # Driving the machine yourself
//!
//! The machine is a supported API of its own, for another runtime or a
//! simulation. It takes `now` on every call, so days of polling run in a
//! test in microseconds:
//!
//! ```
//! use std::time::Duration;
//! use oidc_dtr::{Outcome, poll::{Action, Event, PollConfig}, error::{ErrorCode, OAuthError}};
//! use oidc_dtr::{UnixTime, poll::{PollMachine, PollResult}, random::SystemRandom};
//!
//! let rng = SystemRandom;
//! let secs = Duration::from_secs;
//! let t0 = UnixTime::from_secs(1_800_000_000); // the exchange's answer arrived
//! let at = |ms: u64| t0.saturating_add(Duration::from_millis(ms));
//! // interval 5 s, expires_in 1 h
//! let mut m = PollMachine::with_start(t0, Some(t0.saturating_add(secs(3600))), secs(5), PollConfig::default());
//!
//! // The first poll waits one floor after the exchange.
//! let step = m.handle(Event::<&str>::Timer, t0, &rng);
//! assert_eq!(step.action, Action::SleepUntil(at(5_000)));
//! assert_eq!(m.handle(Event::<&str>::Timer, at(5_000), &rng).action, Action::SendPoll);
//!
//! // The answer arrives 300 ms later: pending, with a progress text.
//! let mut pending = OAuthError::new(ErrorCode::AuthorizationPending);
//! pending.description = Some("in review".into());
//! let step = m.handle(Event::Response(PollResult::<&str>::OAuth(pending)), at(5_300), &rng);
//! assert_eq!(step.progress.as_deref(), Some("in review"));
//! // The floor counts from the answer's arrival.
//! assert_eq!(step.action, Action::SleepUntil(at(10_300)));
//!
//! // A ping one second later cannot beat the floor.
//! let step = m.handle(Event::<&str>::Wake, at(6_300), &rng);
//! assert_eq!(step.action, Action::SleepUntil(at(10_300)));
//!
//! // slow_down: the floor rises by 5 s, for good.
//! assert_eq!(m.handle(Event::<&str>::Timer, at(10_300), &rng).action, Action::SendPoll);
//! let slow = PollResult::<&str>::OAuth(OAuthError::new(ErrorCode::SlowDown));
//! let step = m.handle(Event::Response(slow), at(10_500), &rng);
//! assert_eq!(m.floor(), secs(10));
//! assert_eq!(step.action, Action::SleepUntil(at(20_500)));
//!
//! // Tokens: the one outcome, delivered once.
//! assert_eq!(m.handle(Event::<&str>::Timer, at(20_500), &rng).action, Action::SendPoll);
//! let step = m.handle(Event::Response(PollResult::Tokens("tokens")), at(21_000), &rng);
//! assert_eq!(step.action, Action::Deliver(Outcome::Tokens("tokens")));
//! assert_eq!(m.handle(Event::<&str>::Timer, at(99_000), &rng).action, Action::Finished);
//! ```
//!
//! The machine serialises (serde): store it with the authentication, and
//! after a restart call
//! [`resume_after_restart`](crate::poll::PollMachine::resume_after_restart)
//! before feeding it events again.
