//! Records for the store unit tests.

use std::time::Duration;

use super::{Record, StoredOutcome};
use crate::proto::exchange::DeferredAuthentication;
use crate::proto::poll::{Action, Event, Outcome, PollConfig, PollMachine};
use crate::proto::token::TokenSet;
use crate::random::SystemRandom;
use crate::secret::DeferredId;
use crate::time::UnixTime;

/// `T0 + s` seconds.
pub(crate) fn at(s: u64) -> UnixTime {
    UnixTime::from_millis(1_800_000_000_000).saturating_add(Duration::from_secs(s))
}

pub(crate) fn id(s: &str) -> DeferredId {
    DeferredId::new(format!("dai-{s}-0123456789abcdef"))
}

/// A fresh record issued at `T0 + issued` s (interval 5 s, one hour to live).
pub(crate) fn record(name: &str, issued: u64) -> Record {
    let a = DeferredAuthentication::for_tests(id(name), at(issued), Some(3600), 5);
    let m = PollMachine::new(&a, PollConfig::default());
    Record::new(a, m)
}

pub(crate) fn denied(finished: u64) -> StoredOutcome {
    StoredOutcome::new(at(finished), Outcome::Denied { description: None })
}

/// The machine after the application cancelled: finished.
pub(crate) fn finished_machine(r: &Record) -> PollMachine {
    let mut m = r.machine.clone();
    let step = m.handle::<TokenSet>(Event::Cancel, at(0), &SystemRandom);
    assert!(matches!(step.action, Action::Deliver(Outcome::Cancelled)));
    m
}
