//! The sans-IO poll state machine for one deferred authentication.
//!
//! [`PollMachine`] decides *when* to send a Token Request and *what* each
//! answer means. It does no IO and reads no clock: every call takes `now`,
//! and randomness (for backoff jitter) is injected. Its state serialises, so
//! a process can stop and resume exactly where it was.
//!
//! The rules it follows (the floor counted from the previous answer's
//! arrival, `slow_down`, `Retry-After`, backoff on top of the floor, the
//! final poll, the absolute deadline, terminal and lost answers, single
//! flight, wake-ups, exactly one outcome) are documented for users in
//! [the polling guide](crate::guide::polling): change both together.
//!
//! The module's files: [`config`] the schedule's tuning, [`outcome`] how an
//! authentication ends and what one Token Request returned, [`step`] the
//! machine's inputs and outputs, [`machine`] the machine itself, and
//! [`snapshot`] its state as plain data for the stores.

use std::time::Duration;

mod config;
mod machine;
mod outcome;
mod snapshot;
mod step;
#[cfg(test)]
mod tests;

pub use config::PollConfig;
pub use machine::PollMachine;
pub use outcome::{Outcome, PollFailure, PollResult};
pub(crate) use snapshot::PollSnapshot;
pub use step::{Action, Event, InteractionChange, Retry, RetryCause, Step};

/// How much a `slow_down` raises the floor (RFC 8628 §3.5, draft §Token
/// Request errors).
pub(crate) const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);
