//! The poll driver: one tokio task that drives any number of pending
//! authentications from one timer queue.
//!
//! Each authentication is a [`PollMachine`] (pure state) in a map; the task
//! keeps a single binary heap of due times and sleeps until the earliest one
//! on the client's [`Clock`]. There is no task and no sleeping future per
//! authentication: a pending authentication costs a map entry and a heap
//! slot. Token requests in flight run in a `JoinSet` owned by the task, at
//! most one per `deferred_auth_id` (the machine refuses a second while one is
//! in flight), and at most [`DriverConfig::max_in_flight`] overall.
//!
//! Outcomes are kept until the retention period ends, so a `wait` that was
//! dropped (or started late) still finds its outcome: waiting is cancel-safe.
//!
//! The module's files: [`types`] the public values (deliveries, outcome
//! ids, the configuration, events, status), [`handle`] the application's
//! side of the task, [`run`] the task's loop, [`index`] the entries, their
//! index by id and the timer queue, [`commands`] what the task does for each
//! request of the handle, [`steps`] feeding answers to the machines and
//! delivering outcomes, [`persist`] the store writes, and [`bench`] a
//! measurement of the driver's own cost.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub(crate) use crate::error::WaitError;
use crate::proto::exchange::DeferredAuthentication;
use crate::proto::poll::{Outcome, PollFailure, PollMachine, PollResult};
use crate::secret::DeferredId;
use crate::time::UnixTime;

mod bench;
mod commands;
mod handle;
mod index;
mod persist;
mod run;
mod steps;
#[cfg(test)]
mod tests;
mod types;

pub(crate) use bench::bench_rounds;
use handle::Command;
pub(crate) use handle::DriverHandle;
pub(crate) use handle::transport_authenticated_local;
use index::{Entry, IdIndex};
use persist::{PersistJob, persist_task};
pub(crate) use run::redeemed_the_id;
use run::{Engine, Orphan};
pub(crate) use types::Tracked;
pub use types::{Delivery, DriverConfig, OutcomeId, PollEvent, PollStatus};

/// A map keyed by what the driver makes itself (entry keys from a
/// counter, task ids) or by the output of a keyed hash (the id index): no
/// key an OP or a caller chooses, so SipHash's protection against chosen
/// keys is not needed, and one multiplication per key (as in Fx hashing)
/// spreads them over the table for a fraction of its cost. These maps are
/// read several times per poll.
pub(super) type KeyMap<K, V> =
    std::collections::HashMap<K, V, std::hash::BuildHasherDefault<KeyHasher>>;

/// The hasher of [`KeyMap`].
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct KeyHasher(u64);

impl KeyHasher {
    const SEED: u64 = 0x517c_c1b7_2722_0a95;

    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(Self::SEED);
    }
}

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.add(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }
}

/// Consecutive panicking polls after which an authentication ends (as
/// `Rejected(Other)`) rather than being retried.
const MAX_CONSECUTIVE_PANICS: u32 = 3;

/// A boxed, sendable future.
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Sends one Token Request for an authentication and classifies the answer.
/// The client implements it; tests use fakes.
pub(crate) trait Poller: Send + Sync + 'static {
    /// What a successful poll yields (validated tokens).
    type Tokens: Clone + Send + Sync + fmt::Debug + 'static;

    /// One poll. (`auth` is a handle: clones share one copy of the fields,
    /// so the driver hands one over per poll without an allocation.)
    fn poll(self: Arc<Self>, auth: DeferredAuthentication) -> BoxFuture<PollResult<Self::Tokens>>;

    /// Validates again tokens in hand whose validation could not finish
    /// before (their JWK Set was unreachable): `Tokens`, `Permanent` (they
    /// are invalid) or `Held` (not yet). Nothing is sent to the OP. The
    /// default refuses them (for pollers that never hold tokens).
    fn validate_held(
        self: Arc<Self>,
        _auth: DeferredAuthentication,
        _tokens: crate::proto::token::HeldTokens,
    ) -> BoxFuture<PollResult<Self::Tokens>> {
        Box::pin(async {
            PollResult::Permanent(PollFailure::Other {
                message: "held tokens cannot be validated by this poller".into(),
                cause: None,
            })
        })
    }

    /// Saves the poll state after an answer (best effort; may be relaxed).
    fn persist_state(
        self: Arc<Self>,
        _auth: DeferredAuthentication,
        _machine: PollMachine,
    ) -> BoxFuture<()> {
        Box::pin(async {})
    }

    /// Saves the terminal outcome durably; the driver delivers it only once
    /// this completes. Implementations retry and log; they return when the
    /// outcome is safe (or when they gave up, having said so loudly).
    /// `false`: the outcome is not this instance's to deliver (a fleet
    /// member that lost its lease); the driver then keeps it to itself.
    fn persist_outcome(
        self: Arc<Self>,
        _auth: DeferredAuthentication,
        _machine: PollMachine,
        _outcome: Outcome<Self::Tokens>,
        _finished_at: UnixTime,
    ) -> BoxFuture<bool> {
        Box::pin(async { true })
    }

    /// Deletes stored outcomes that finished before `before` (the retention
    /// period has passed).
    fn purge_stored(self: Arc<Self>, _before: UnixTime) -> BoxFuture<()> {
        Box::pin(async {})
    }

    /// Whether this instance may send a poll for `id` now (a fleet member
    /// must still hold its lease). When false, the driver forgets the
    /// authentication without polling. The default always may.
    fn may_poll(&self, _id: &DeferredId) -> bool {
        true
    }
}

/// What a poll task returns: its entry's key and the answer.
type PollDone<T> = (u64, PollResult<T>);
