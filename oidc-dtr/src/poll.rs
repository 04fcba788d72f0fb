//! Polling: the engine's events and status, and the sans-IO machine under it.
//!
//! Most applications meet polling only through the root's
//! [`PollEvent`], [`PollStatus`] and
//! [`Outcome`]: the client's engine polls every pending
//! authentication on its own, and an [`AuthHandle`](crate::AuthHandle)
//! follows one of them. This module holds the rest:
//!
//! - the knobs: [`PollConfig`] (backoff, final poll, lifetime, the cadence
//!   when pings are expected), [`DriverConfig`] (how many polls in flight)
//!   and [`FleetConfig`] (leases when several instances share a store);
//! - [`EngineStats`], counters for a health page;
//! - [`PollMachine`], the state machine that decides *when* to poll and
//!   *what* each answer means, with its inputs ([`Event`], [`PollResult`],
//!   [`PollFailure`]) and outputs ([`Step`], [`Action`],
//!   [`InteractionChange`], [`Retry`] with its [`RetryCause`]).
//!
//! # The machine, for other runtimes
//!
//! [`PollMachine`] does no IO and reads no clock: every call takes `now`,
//! randomness for the backoff jitter is injected, and its state serialises
//! so that a process can stop and resume where it was. The client's engine
//! drives one per authentication; a blocking program, another async runtime
//! or a test can drive it too: feed it [`Event`]s, do what the [`Action`]s
//! say, repeat.
//!
//! ```
//! use std::time::Duration;
//! use oidc_dtr::UnixTime;
//! use oidc_dtr::poll::{Action, Event, PollConfig, PollMachine};
//! use oidc_dtr::random::SystemRandom;
//!
//! // An authentication the OP answered at t = 1 000 s: poll every 5 s,
//! // until t = 1 600 s at the latest.
//! let t = UnixTime::from_secs;
//! let mut machine = PollMachine::anchored(
//!     t(1_000),
//!     t(1_000),
//!     Some(t(1_600)),
//!     Duration::from_secs(5),
//!     PollConfig::default(),
//! );
//! // Nothing may reach the OP inside the floor...
//! let step = machine.handle::<()>(Event::Timer, t(1_002), &SystemRandom);
//! assert_eq!(step.action, Action::SleepUntil(t(1_005)));
//! // ...and once it has passed, the machine asks for a poll.
//! let step = machine.handle::<()>(Event::Timer, t(1_005), &SystemRandom);
//! assert_eq!(step.action, Action::SendPoll);
//! ```
//!
//! The rules the machine follows (the floor counted from the previous
//! answer's arrival, `slow_down`, `Retry-After`, backoff on top of the
//! floor, the final poll before the deadline) are in
//! [the polling guide](crate::guide::polling).

pub use crate::engine::driver::{Delivery, DriverConfig, OutcomeId, PollEvent, PollStatus};
pub use crate::engine::fleet::FleetConfig;
pub use crate::engine::stats::EngineStats;
pub use crate::proto::poll::{
    Action, Event, InteractionChange, Outcome, PollConfig, PollFailure, PollMachine, PollResult,
    Retry, RetryCause, Step,
};
