//! The driver task's state ([`Engine`]) and its run loop: commands, timers,
//! answers of polls in flight and completed writes, until shutdown.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinSet;

use crate::engine::stats::Counters;
use crate::error::WaitError;
use crate::proto::exchange::DeferredAuthentication;
use crate::proto::poll::{Outcome, PollFailure, PollMachine, PollResult};
use crate::random::RandomSource;
use crate::time::{Clock, UnixTime};

use super::*;

pub(super) struct Engine<P: Poller> {
    pub(super) poller: Weak<P>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) rng: Arc<dyn RandomSource>,
    pub(super) config: DriverConfig,
    pub(super) events: broadcast::Sender<PollEvent<P::Tokens>>,
    pub(super) entries: KeyMap<u64, Entry<P::Tokens>>,
    pub(super) keys: IdIndex,
    pub(super) timers: BinaryHeap<Reverse<(UnixTime, u64, u32)>>,
    pub(super) in_flight: JoinSet<(u64, PollResult<P::Tokens>)>,
    /// Which authentication each poll task in flight is for, so that a task
    /// that panicked can be reported to its machine.
    pub(super) task_keys: KeyMap<tokio::task::Id, u64>,
    pub(super) next_key: u64,
    /// Writes for the persistence task, which runs them in order.
    pub(super) persist: mpsc::UnboundedSender<PersistJob<P::Tokens>>,
    /// Keys whose outcome the persistence task has stored.
    pub(super) stored_rx: mpsc::UnboundedReceiver<u64>,
    pub(super) last_store_purge: UnixTime,
    /// The persistence task, awaited at shutdown.
    pub(super) persist_done: Option<tokio::task::JoinHandle<()>>,
    /// Set by a shutdown: who to tell when it is complete.
    pub(super) stopping: Option<Vec<oneshot::Sender<()>>>,
    pub(super) counters: Arc<Counters>,
    /// While a timer fires: the instant it was due (for the lateness figure).
    pub(super) scheduled: Option<UnixTime>,
    /// Signalled by the persistence task when a write completes.
    pub(super) room: Arc<tokio::sync::Notify>,
    /// Authentications forgotten (their lease lost) while a poll of theirs
    /// was in flight, by the key of that poll: its answer is still handled
    /// (see [`Orphan`]).
    pub(super) orphans: KeyMap<u64, Orphan>,
}

/// An authentication forgotten while a poll of its was in flight (a fleet
/// member lost its lease). The poll's answer is still this instance's to
/// handle: an answer that redeemed the id (tokens, or tokens refused) is
/// the only one there will ever be, so it is stored through the lost-lease
/// path and handed over; any other answer is dropped (whoever holds the
/// lease now polls again).
pub(super) struct Orphan {
    pub(super) auth: DeferredAuthentication,
    pub(super) machine: Box<PollMachine>,
    /// The same authentication claimed again by this instance while the
    /// poll was in flight: taken on once the answer is handled, so that
    /// this instance never has two polls of one id in flight.
    pub(super) reclaimed: Option<(Box<DeferredAuthentication>, Box<PollMachine>)>,
}

/// Whether an outcome means the OP redeemed the id: tokens, or tokens
/// received but refused. No later poll can get anything but `invalid_grant`.
pub(crate) fn redeemed_the_id<T>(outcome: &Outcome<T>) -> bool {
    matches!(
        outcome,
        Outcome::Tokens(_)
            | Outcome::Rejected(PollFailure::InvalidTokens(_) | PollFailure::TokensRefused { .. })
    )
}

impl<P: Poller> Engine<P> {
    pub(super) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command<P::Tokens>>) {
        // The sleep until the earliest timer, kept across turns of the loop
        // while that time does not change (no new timer registration per
        // event).
        let mut timer: Option<(UnixTime, BoxFuture<()>)> = None;
        'run: loop {
            let next = self.next_due();
            if timer.as_ref().map(|(t, _)| *t) != next {
                timer = next.map(|t| {
                    let clock = self.clock.clone();
                    let sleep: BoxFuture<()> = Box::pin(async move { clock.sleep_until(t).await });
                    (t, sleep)
                });
            }
            let writes_full = self.writes_full();
            let mut fired = false;
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.command(cmd),
                    None => break,
                },
                Some(key) = self.stored_rx.recv() => self.stored(key),
                Some(done) = self.in_flight.join_next_with_id(), if !self.in_flight.is_empty() => {
                    self.poll_done(done);
                }
                _ = self.room.notified(), if writes_full => {}
                _ = async {
                    match timer.as_mut() {
                        Some((_, sleep)) => sleep.await,
                        None => std::future::pending::<()>().await,
                    }
                } => fired = true,
            }
            if fired {
                timer = None;
            }
            // Whatever else is ready now is taken in the same turn (in
            // bounded batches), so that a burst of answers costs one turn
            // of the loop, not one each.
            let mut budget = 1024;
            loop {
                let mut more = false;
                while budget > 0
                    && let Some(done) = self.in_flight.try_join_next_with_id()
                {
                    budget -= 1;
                    more = true;
                    self.poll_done(done);
                }
                while budget > 0
                    && let Ok(key) = self.stored_rx.try_recv()
                {
                    budget -= 1;
                    more = true;
                    self.stored(key);
                }
                while budget > 0 {
                    match rx.try_recv() {
                        Ok(cmd) => {
                            budget -= 1;
                            more = true;
                            self.command(cmd);
                        }
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => break 'run,
                    }
                }
                if !more || budget == 0 {
                    break;
                }
            }
            if self.stopping.is_some() {
                if self.in_flight.is_empty() {
                    break;
                }
                continue;
            }
            self.fire_due();
        }
        // Let the persistence task write what it has queued, then stop it.
        let (closed, _) = mpsc::unbounded_channel();
        drop(std::mem::replace(&mut self.persist, closed));
        if let Some(task) = self.persist_done.take() {
            let _ = task.await;
        }
        // The client is gone: wake every waiter with "stopped".
        for (_, e) in self.entries.drain() {
            for w in e.end.map(|end| end.waiters).unwrap_or_default() {
                let _ = w.send(Err(WaitError::Stopped));
            }
        }
        for done in self.stopping.take().into_iter().flatten() {
            let _ = done.send(());
        }
    }

    /// A poll task ended: its answer (or its panic) goes to its machine.
    pub(super) fn poll_done(
        &mut self,
        done: Result<(tokio::task::Id, PollDone<P::Tokens>), tokio::task::JoinError>,
    ) {
        self.counters.in_flight(self.in_flight.len());
        match done {
            Ok((task, (key, result))) => {
                self.task_keys.remove(&task);
                if let Some(e) = self.entries.get_mut(&key) {
                    e.panics = 0;
                }
                self.completed(key, result);
            }
            // A poll task that panicked (or was aborted): its
            // authentication must not stay in flight forever.
            Err(err) => {
                if let Some(key) = self.task_keys.remove(&err.id()) {
                    self.poll_panicked(key, err.is_panic());
                }
            }
        }
    }

    /// Whether the store has as many writes outstanding as allowed: no new
    /// poll goes out until one completes.
    pub(super) fn writes_full(&self) -> bool {
        self.counters.store_queue_depth() >= self.config.max_queued_writes.max(1) as u64
    }

    pub(super) fn purge(&mut self, key: u64) {
        if let Some(e) = self.entries.remove(&key) {
            self.keys.remove(e.auth.id(), key);
        }
        // The store keeps outcomes as long as memory does: purge it too, at
        // most once a minute.
        let now = self.clock.now();
        if now
            >= self
                .last_store_purge
                .saturating_add(Duration::from_secs(60))
        {
            self.last_store_purge = now;
            let before = now.saturating_sub(self.config.finished_retention);
            let _ = self.persist.send(PersistJob::Purge(before));
        }
    }
}
