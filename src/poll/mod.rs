//! The poll engine: a sans-IO state machine per authentication
//! ([`state`]) and (next) one driver for many.

pub mod driver;
pub mod state;

pub use driver::{Delivery, DriverConfig, OutcomeId, PollEvent, PollStatus, WaitError};
pub use state::{Action, Event, Outcome, PollConfig, PollFailure, PollMachine, PollResult, Step};
