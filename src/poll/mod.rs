//! The poll engine: a sans-IO state machine per authentication
//! ([`state`]), and one driver task that runs all of them from one timer
//! queue ([`driver`]). Applications use it through
//! [`DtrClient`](crate::DtrClient): `wait`, `subscribe`, `wake`, `cancel`.

pub mod driver;
pub mod state;

pub use driver::{Delivery, DriverConfig, OutcomeId, PollEvent, PollStatus, WaitError};
pub use state::{Action, Event, Outcome, PollConfig, PollFailure, PollMachine, PollResult, Step};
