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

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinSet;

use crate::engine::stats::{Counters, EngineStats};
pub(crate) use crate::error::WaitError;
use crate::ping::PingVerdict;
use crate::proto::exchange::DeferredAuthentication;
use crate::proto::poll::{Action, Event, Outcome, PollFailure, PollMachine, PollResult, Step};
use crate::random::RandomSource;
use crate::secret::{DeferredAuthId, SecretHash};
use crate::time::{Clock, UnixTime};

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

    /// One poll.
    fn poll(
        self: Arc<Self>,
        auth: Arc<DeferredAuthentication>,
    ) -> BoxFuture<PollResult<Self::Tokens>>;

    /// Validates again tokens in hand whose validation could not finish
    /// before (their JWK Set was unreachable): `Tokens`, `Permanent` (they
    /// are invalid) or `Held` (not yet). Nothing is sent to the OP. The
    /// default refuses them (for pollers that never hold tokens).
    fn validate_held(
        self: Arc<Self>,
        _auth: Arc<DeferredAuthentication>,
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
        _auth: Arc<DeferredAuthentication>,
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
        _auth: Arc<DeferredAuthentication>,
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
    fn may_poll(&self, _id: &DeferredAuthId) -> bool {
        true
    }
}

/// What a poll task returns: its entry's key and the answer.
type PollDone<T> = (u64, PollResult<T>);

/// A write for the persistence task, in order.
enum PersistJob<T> {
    Purge(UnixTime),
    State(Arc<DeferredAuthentication>, PollMachine),
    Outcome(
        u64,
        Arc<DeferredAuthentication>,
        PollMachine,
        Outcome<T>,
        UnixTime,
    ),
}

/// A delivered (or deliverable) outcome with its stable id.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Delivery<T = crate::proto::token::TokenSet> {
    /// The authentication.
    pub id: DeferredAuthId,
    /// A stable, non-secret id for this outcome (the same across restarts
    /// and re-deliveries): key the application's idempotency on it.
    pub outcome_id: OutcomeId,
    /// How it ended.
    pub outcome: Outcome<T>,
}

/// A stable, non-secret identifier of an authentication's outcome: 128 bits
/// of the SHA-256 of its `deferred_auth_id`, in hex. Every delivery of the
/// same outcome (including re-deliveries after a restart) carries the same
/// one.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct OutcomeId(String);

impl OutcomeId {
    /// The outcome id of an authentication.
    pub fn of(id: &DeferredAuthId) -> Self {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, id.secret().as_bytes());
        OutcomeId(
            d.as_ref()[..16]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        )
    }

    /// As text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OutcomeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub use crate::engine::config::DriverConfig;

/// Something that happened to a pending authentication.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum PollEvent<T = crate::proto::token::TokenSet> {
    /// The OP sent a new progress description with `authorization_pending`
    /// (e.g. "documents in review, position 3 in queue").
    Progress {
        /// Which authentication.
        id: DeferredAuthId,
        /// The OP's text (display it escaped).
        description: String,
    },
    /// The user interaction the AS waits for changed (IETF profile,
    /// `interaction_required`): `Some` is a (validated) URI to show the
    /// user; `None` means the answer flipped back to
    /// `authorization_pending`. Polling goes on either way. (The URI of an
    /// `interaction_required` deferred response itself comes with the
    /// authentication: [`DeferredAuthentication::interaction_uri`](crate::DeferredAuthentication::interaction_uri).)
    Interaction {
        /// Which authentication.
        id: DeferredAuthId,
        /// Where the user must go, if anywhere.
        uri: Option<crate::proto::ietf::InteractionUri>,
    },
    /// The OP answered with tokens, but their ID token could not be
    /// validated yet: the OP's JWK Set is unreachable. The tokens are kept
    /// (in the store, sealed, where one is configured) and validated again
    /// with backoff until the keys can be fetched; the authentication then
    /// ends with them (or, if they turn out invalid, with
    /// [`PollFailure::InvalidTokens`](crate::PollFailure::InvalidTokens)).
    TokensHeld {
        /// Which authentication (or the handle of an
        /// [`Error::TokensHeld`](crate::Error::TokensHeld)).
        id: DeferredAuthId,
        /// Why they could not be validated (no secrets).
        reason: String,
    },
    /// The authentication ended (and its outcome is stored).
    Finished {
        /// Which authentication.
        id: DeferredAuthId,
        /// The outcome's stable id (see [`OutcomeId`]).
        outcome_id: OutcomeId,
        /// How.
        outcome: Outcome<T>,
    },
}

/// A snapshot of one authentication's polling.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PollStatus {
    /// The current minimum time between polls.
    pub floor: Duration,
    /// When the next poll is due (`None` while one is in flight or after
    /// the end).
    pub next_poll: Option<UnixTime>,
    /// The absolute deadline.
    pub deadline: UnixTime,
    /// Polls sent so far.
    pub polls: u32,
    /// `slow_down` answers so far.
    pub slow_downs: u32,
    /// Whether a poll is in flight.
    pub in_flight: bool,
    /// Whether it has ended.
    pub finished: bool,
    /// The `interaction_uri` the AS currently waits at (IETF
    /// `interaction_required`), if any.
    pub interaction_uri: Option<crate::proto::ietf::InteractionUri>,
    /// Whether the OP has answered with tokens that await validation (their
    /// JWK Set was unreachable; see [`PollEvent::TokensHeld`]).
    pub tokens_held: bool,
}

/// A tracked authentication, as the driver holds it.
#[derive(Debug, Clone)]
pub(crate) struct Tracked {
    pub auth: Arc<DeferredAuthentication>,
    pub machine: PollMachine,
    pub finished: bool,
}

enum Command<T> {
    Ping(DeferredAuthId, Vec<u8>, oneshot::Sender<PingVerdict>),
    Track(
        Box<DeferredAuthentication>,
        Box<PollMachine>,
        oneshot::Sender<bool>,
    ),
    /// An authentication read back from a store: pending (resume polling,
    /// a full floor from now) or finished with an undelivered outcome.
    Restore(
        Box<DeferredAuthentication>,
        Box<PollMachine>,
        Option<(Outcome<T>, UnixTime)>,
        oneshot::Sender<bool>,
    ),
    Ack(DeferredAuthId, oneshot::Sender<bool>),
    Undelivered(oneshot::Sender<Vec<Delivery<T>>>),
    Wake(DeferredAuthId, oneshot::Sender<bool>),
    Cancel(DeferredAuthId, oneshot::Sender<bool>),
    Wait(
        DeferredAuthId,
        oneshot::Sender<Result<Outcome<T>, WaitError>>,
    ),
    Status(DeferredAuthId, oneshot::Sender<Option<PollStatus>>),
    Get(DeferredAuthId, oneshot::Sender<Option<Tracked>>),
    Idle(oneshot::Sender<bool>),
    /// Drop an authentication without an outcome (another instance of the
    /// fleet took it over): no more polls, no writes, no delivery.
    Forget(DeferredAuthId),
    /// Stop sending polls, let the ones in flight finish and their writes
    /// reach the store, then stop; answered when all that is done.
    Shutdown(oneshot::Sender<()>),
}

/// The application side of the driver task.
pub(crate) struct DriverHandle<T> {
    tx: mpsc::UnboundedSender<Command<T>>,
    events: broadcast::Sender<PollEvent<T>>,
    counters: Arc<Counters>,
}

impl<T> Clone for DriverHandle<T> {
    fn clone(&self) -> Self {
        DriverHandle {
            tx: self.tx.clone(),
            events: self.events.clone(),
            counters: self.counters.clone(),
        }
    }
}

impl<T> fmt::Debug for DriverHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DriverHandle").finish_non_exhaustive()
    }
}

impl<T: Clone + Send + Sync + fmt::Debug + 'static> DriverHandle<T> {
    /// Spawns the driver task on the current tokio runtime. It stops when
    /// the handle is dropped.
    pub(crate) fn spawn<P: Poller<Tokens = T>>(
        poller: Weak<P>,
        clock: Arc<dyn Clock>,
        rng: Arc<dyn RandomSource>,
        config: DriverConfig,
        runtime: &tokio::runtime::Handle,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(config.event_capacity.max(1));
        let (persist, jobs) = mpsc::unbounded_channel();
        let (stored_tx, stored_rx) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        let room = Arc::new(tokio::sync::Notify::new());
        let persist_done = runtime.spawn(persist_task(
            poller.clone(),
            jobs,
            stored_tx,
            counters.clone(),
            room.clone(),
            config.max_queued_writes.max(1),
        ));
        let engine = Engine {
            poller,
            clock,
            rng,
            config,
            events: events.clone(),
            entries: HashMap::new(),
            keys: IdIndex::new(),
            timers: BinaryHeap::new(),
            in_flight: JoinSet::new(),
            task_keys: HashMap::new(),
            next_key: 0,
            persist,
            stored_rx,
            last_store_purge: UnixTime::EPOCH,
            persist_done: Some(persist_done),
            stopping: None,
            counters: counters.clone(),
            scheduled: None,
            room,
            orphans: HashMap::new(),
        };
        runtime.spawn(engine.run(rx));
        DriverHandle {
            tx,
            events,
            counters,
        }
    }

    /// Stops the driver: no new polls; polls in flight finish and their
    /// results are stored; then the task ends. Returns when it has.
    pub(crate) async fn shutdown(&self) {
        let _ = self.ask(Command::Shutdown).await;
    }

    async fn ask<R>(&self, make: impl FnOnce(oneshot::Sender<R>) -> Command<T>) -> Option<R> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).ok()?;
        rx.await.ok()
    }

    /// Starts (or resumes) driving an authentication. False if one with the
    /// same id is already tracked.
    pub(crate) async fn track(
        &self,
        auth: DeferredAuthentication,
        machine: PollMachine,
    ) -> Result<bool, WaitError> {
        self.ask(|tx| Command::Track(Box::new(auth), Box::new(machine), tx))
            .await
            .ok_or(WaitError::Stopped)
    }

    /// Takes on an authentication read back from a store.
    pub(crate) async fn restore(
        &self,
        auth: DeferredAuthentication,
        machine: PollMachine,
        outcome: Option<(Outcome<T>, UnixTime)>,
    ) -> Result<bool, WaitError> {
        self.ask(|tx| Command::Restore(Box::new(auth), Box::new(machine), outcome, tx))
            .await
            .ok_or(WaitError::Stopped)
    }

    /// Marks an outcome acknowledged. False if unknown or unfinished.
    pub(crate) async fn ack(&self, id: &DeferredAuthId) -> bool {
        self.ask(|tx| Command::Ack(id.clone(), tx))
            .await
            .unwrap_or(false)
    }

    /// Finished outcomes not yet acknowledged.
    pub(crate) async fn undelivered(&self) -> Vec<Delivery<T>> {
        self.ask(Command::Undelivered).await.unwrap_or_default()
    }

    /// A ping: poll now if the floor has elapsed, else at the floor. False
    /// for an unknown or finished authentication.
    pub(crate) async fn wake(&self, id: &DeferredAuthId) -> bool {
        self.ask(|tx| Command::Wake(id.clone(), tx))
            .await
            .unwrap_or(false)
    }

    /// Checks a ping's bearer token against the hash bound at the exchange
    /// (constant time, the same work for unknown ids) and wakes the
    /// authentication if it is correct and still pending.
    pub(crate) async fn ping(&self, id: DeferredAuthId, token: Vec<u8>) -> PingVerdict {
        self.ask(|tx| Command::Ping(id, token, tx))
            .await
            .unwrap_or(PingVerdict::Rejected)
    }

    /// Cancels locally. False for an unknown or finished authentication.
    pub(crate) async fn cancel(&self, id: &DeferredAuthId) -> bool {
        self.ask(|tx| Command::Cancel(id.clone(), tx))
            .await
            .unwrap_or(false)
    }

    /// Waits for the outcome. Cancel-safe: the outcome stays available.
    pub(crate) async fn wait(&self, id: &DeferredAuthId) -> Result<Outcome<T>, WaitError> {
        self.ask(|tx| Command::Wait(id.clone(), tx))
            .await
            .ok_or(WaitError::Stopped)?
    }

    /// The polling status.
    pub(crate) async fn status(&self, id: &DeferredAuthId) -> Option<PollStatus> {
        self.ask(|tx| Command::Status(id.clone(), tx))
            .await
            .flatten()
    }

    /// The authentication, its poll state, and whether it has ended.
    pub(crate) async fn get(&self, id: &DeferredAuthId) -> Option<Tracked> {
        self.ask(|tx| Command::Get(id.clone(), tx)).await.flatten()
    }

    /// (pending, in flight): authentications without a stored outcome
    /// (those whose outcome is still being stored count as pending), and
    /// polls in flight. O(1): read from counters, not from the driver task.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let s = self.counters.snapshot();
        (
            usize::try_from(s.pending + s.outcomes_unstored).unwrap_or(usize::MAX),
            usize::try_from(s.in_flight).unwrap_or(usize::MAX),
        )
    }

    /// The engine's counters.
    pub(crate) fn stats(&self) -> EngineStats {
        self.counters.snapshot()
    }

    /// No poll in flight, none due, no outcome waiting to be stored.
    pub(crate) async fn idle(&self) -> bool {
        self.ask(Command::Idle).await.unwrap_or(true)
    }

    /// Forgets an authentication locally (see `Command::Forget`).
    pub(crate) fn forget(&self, id: &DeferredAuthId) {
        let _ = self.tx.send(Command::Forget(id.clone()));
    }

    /// Subscribes to progress and outcome events.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<PollEvent<T>> {
        self.events.subscribe()
    }
}

/// A tracked authentication. Small on purpose (a million of them fit in a
/// few hundred MB): the poll state is boxed (the map's spare slots then
/// cost little), and what only a finished or awaited authentication has is
/// out of line.
struct Entry<T> {
    auth: Arc<DeferredAuthentication>,
    machine: Box<PollMachine>,
    /// Only the heap item with this generation is live.
    timer_gen: u32,
    /// Consecutive poll tasks of this authentication that panicked.
    panics: u32,
    /// The outcome and the waiters, once there are any.
    end: Option<Box<End<T>>>,
}

/// The rare members of an [`Entry`].
struct End<T> {
    outcome: Option<Outcome<T>>,
    /// Whether the outcome is stored, so that it may be handed over.
    stored: bool,
    /// Whether the application acknowledged it.
    acked: bool,
    finished_at: Option<UnixTime>,
    waiters: Vec<oneshot::Sender<Result<Outcome<T>, WaitError>>>,
}

impl<T> Entry<T> {
    fn outcome(&self) -> Option<&Outcome<T>> {
        self.end.as_ref().and_then(|e| e.outcome.as_ref())
    }

    fn stored(&self) -> bool {
        self.end.as_ref().is_some_and(|e| e.stored)
    }

    fn finished_at(&self) -> Option<UnixTime> {
        self.end.as_ref().and_then(|e| e.finished_at)
    }

    fn end_mut(&mut self) -> &mut End<T> {
        self.end.get_or_insert_with(|| {
            Box::new(End {
                outcome: None,
                stored: false,
                acked: false,
                finished_at: None,
                waiters: Vec::new(),
            })
        })
    }
}

/// The entries' keys by `deferred_auth_id`, without a copy of each id: a
/// keyed hash of the id (SipHash with random keys) to the entry, checked
/// against the entry's own id; the rare id whose hash is taken goes to a
/// second map.
struct IdIndex {
    by_hash: HashMap<u64, u64>,
    collided: HashMap<DeferredAuthId, u64>,
    hasher: std::collections::hash_map::RandomState,
    /// Tests: every id hashes alike, so that the collision path runs.
    #[cfg(test)]
    all_collide: bool,
}

impl IdIndex {
    fn new() -> Self {
        IdIndex {
            by_hash: HashMap::new(),
            collided: HashMap::new(),
            hasher: std::collections::hash_map::RandomState::new(),
            #[cfg(test)]
            all_collide: false,
        }
    }

    fn hash(&self, id: &DeferredAuthId) -> u64 {
        use std::hash::BuildHasher;
        #[cfg(test)]
        if self.all_collide {
            return 7;
        }
        self.hasher.hash_one(id.secret())
    }

    fn get<T>(&self, id: &DeferredAuthId, entries: &HashMap<u64, Entry<T>>) -> Option<u64> {
        if let Some(&key) = self.by_hash.get(&self.hash(id))
            && entries.get(&key).is_some_and(|e| e.auth.id() == id)
        {
            return Some(key);
        }
        if self.collided.is_empty() {
            return None;
        }
        self.collided.get(id).copied()
    }

    fn insert(&mut self, id: &DeferredAuthId, key: u64) {
        match self.by_hash.entry(self.hash(id)) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(key);
            }
            std::collections::hash_map::Entry::Occupied(_) => {
                self.collided.insert(id.clone(), key);
            }
        }
    }

    fn remove(&mut self, id: &DeferredAuthId, key: u64) {
        let h = self.hash(id);
        if self.by_hash.get(&h) == Some(&key) {
            self.by_hash.remove(&h);
        } else {
            self.collided.remove(id);
        }
    }
}

struct Engine<P: Poller> {
    poller: Weak<P>,
    clock: Arc<dyn Clock>,
    rng: Arc<dyn RandomSource>,
    config: DriverConfig,
    events: broadcast::Sender<PollEvent<P::Tokens>>,
    entries: HashMap<u64, Entry<P::Tokens>>,
    keys: IdIndex,
    timers: BinaryHeap<Reverse<(UnixTime, u64, u32)>>,
    in_flight: JoinSet<(u64, PollResult<P::Tokens>)>,
    /// Which authentication each poll task in flight is for, so that a task
    /// that panicked can be reported to its machine.
    task_keys: HashMap<tokio::task::Id, u64>,
    next_key: u64,
    /// Writes for the persistence task, which runs them in order.
    persist: mpsc::UnboundedSender<PersistJob<P::Tokens>>,
    /// Keys whose outcome the persistence task has stored.
    stored_rx: mpsc::UnboundedReceiver<u64>,
    last_store_purge: UnixTime,
    /// The persistence task, awaited at shutdown.
    persist_done: Option<tokio::task::JoinHandle<()>>,
    /// Set by a shutdown: who to tell when it is complete.
    stopping: Option<Vec<oneshot::Sender<()>>>,
    counters: Arc<Counters>,
    /// While a timer fires: the instant it was due (for the lateness figure).
    scheduled: Option<UnixTime>,
    /// Signalled by the persistence task when a write completes.
    room: Arc<tokio::sync::Notify>,
    /// Authentications forgotten (their lease lost) while a poll of theirs
    /// was in flight, by the key of that poll: its answer is still handled
    /// (see [`Orphan`]).
    orphans: HashMap<u64, Orphan>,
}

/// An authentication forgotten while a poll of its was in flight (a fleet
/// member lost its lease). The poll's answer is still this instance's to
/// handle: an answer that redeemed the id (tokens, or tokens refused) is
/// the only one there will ever be, so it is stored through the lost-lease
/// path and handed over; any other answer is dropped (whoever holds the
/// lease now polls again).
struct Orphan {
    auth: Arc<DeferredAuthentication>,
    machine: Box<PollMachine>,
    /// The same authentication claimed again by this instance while the
    /// poll was in flight: taken on once the answer is handled, so that
    /// this instance never has two polls of one id in flight.
    reclaimed: Option<(Box<DeferredAuthentication>, Box<PollMachine>)>,
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
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command<P::Tokens>>) {
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
    fn poll_done(
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

    /// The earliest live timer, unless the in-flight cap blocks new polls.
    fn next_due(&mut self) -> Option<UnixTime> {
        if self.stopping.is_some() {
            return None;
        }
        while let Some(Reverse((t, key, generation))) = self.timers.peek().copied() {
            if self
                .entries
                .get(&key)
                .is_some_and(|e| e.timer_gen == generation)
            {
                if self.in_flight.len() >= self.config.max_in_flight || self.writes_full() {
                    // Wait for a completion instead.
                    return None;
                }
                return Some(t);
            }
            self.timers.pop();
        }
        None
    }

    fn fire_due(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        let now = self.clock.now();
        while let Some(Reverse((t, key, generation))) = self.timers.peek().copied() {
            if t > now || self.in_flight.len() >= self.config.max_in_flight || self.writes_full() {
                break;
            }
            self.timers.pop();
            let Some(entry) = self.entries.get(&key) else {
                continue;
            };
            if entry.timer_gen != generation {
                continue;
            }
            if let Some(finished_at) = entry.finished_at() {
                if now >= finished_at.saturating_add(self.config.finished_retention) {
                    self.purge(key);
                }
                continue;
            }
            // The poll this timer sends (if any) was due at `t`.
            self.scheduled = Some(t);
            self.step(key, Event::Timer, now);
            self.scheduled = None;
        }
    }

    /// Whether the store has as many writes outstanding as allowed: no new
    /// poll goes out until one completes.
    fn writes_full(&self) -> bool {
        self.counters.store_queue_depth() >= self.config.max_queued_writes.max(1) as u64
    }

    fn purge(&mut self, key: u64) {
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

    fn command(&mut self, cmd: Command<P::Tokens>) {
        let now = self.clock.now();
        match cmd {
            Command::Track(auth, mut machine, reply) => {
                if self.keys.get(auth.id(), &self.entries).is_some() {
                    let _ = reply.send(false);
                    return;
                }
                if let Some(o) = self.orphans.values_mut().find(|o| o.auth.id() == auth.id()) {
                    // Its poll of a lost lease is in flight: taken on after
                    // the answer (one poll of an id in flight at a time).
                    machine.recover_after_restart(now, self.rng.as_ref());
                    o.reclaimed = Some((auth, machine));
                    let _ = reply.send(true);
                    return;
                }
                machine.recover_after_restart(now, self.rng.as_ref());
                let key = self.insert(*auth, *machine);
                let _ = reply.send(true);
                if let Some(e) = self
                    .entries
                    .get(&key)
                    .filter(|e| e.machine.held_tokens().is_some())
                {
                    Self::announce_held(&self.events, e);
                }
                self.step(key, Event::Timer, now);
            }
            Command::Restore(auth, mut machine, outcome, reply) => {
                if self.keys.get(auth.id(), &self.entries).is_some() {
                    let _ = reply.send(false);
                    return;
                }
                if outcome.is_none()
                    && let Some(o) = self.orphans.values_mut().find(|o| o.auth.id() == auth.id())
                {
                    // Claimed again while the poll of the lost lease is in
                    // flight: taken on after its answer.
                    o.reclaimed = Some((auth, machine));
                    let _ = reply.send(true);
                    return;
                }
                let _ = reply.send(true);
                match outcome {
                    Some((outcome, finished_at)) => {
                        let key = self.insert(*auth, *machine);
                        self.counters.finished(outcome.kind(), true);
                        if let Some(e) = self.entries.get_mut(&key) {
                            let end = e.end_mut();
                            end.outcome = Some(outcome);
                            end.stored = true;
                            end.finished_at = Some(finished_at);
                            e.timer_gen = e.timer_gen.wrapping_add(1);
                            let purge_at =
                                finished_at.saturating_add(self.config.finished_retention);
                            self.timers.push(Reverse((purge_at, key, e.timer_gen)));
                        }
                    }
                    None => {
                        machine.resume_after_restart(now, self.rng.as_ref());
                        let key = self.insert(*auth, *machine);
                        if let Some(e) = self
                            .entries
                            .get(&key)
                            .filter(|e| e.machine.held_tokens().is_some())
                        {
                            Self::announce_held(&self.events, e);
                        }
                        self.step(key, Event::Timer, now);
                    }
                }
            }
            Command::Ack(id, reply) => {
                let e = self
                    .keys
                    .get(&id, &self.entries)
                    .and_then(|k| self.entries.get_mut(&k));
                let ok = match e {
                    Some(e) if e.outcome().is_some() => {
                        e.end_mut().acked = true;
                        true
                    }
                    _ => false,
                };
                let _ = reply.send(ok);
            }
            Command::Undelivered(reply) => {
                let list = self
                    .entries
                    .values()
                    .filter(|e| e.end.as_ref().is_some_and(|end| end.stored && !end.acked))
                    .filter_map(|e| {
                        Some(Delivery {
                            id: e.auth.id().clone(),
                            outcome_id: OutcomeId::of(e.auth.id()),
                            outcome: e.outcome()?.clone(),
                        })
                    })
                    .collect();
                let _ = reply.send(list);
            }
            Command::Ping(id, token, reply) => {
                let entry = self
                    .keys
                    .get(&id, &self.entries)
                    .and_then(|k| self.entries.get(&k).map(|e| (k, e)));
                let stored = entry.and_then(|(_, e)| e.auth.notification_token_hash());
                // One hash and one constant-time comparison whatever the case,
                // so timing does not tell unknown ids from wrong tokens.
                let matches = match stored {
                    Some(h) => h.matches(&token),
                    None => {
                        let _ = dummy_hash().matches(&token);
                        false
                    }
                };
                let verdict = match entry {
                    Some((key, e)) if matches => {
                        if e.outcome().is_some() {
                            PingVerdict::AlreadyFinished
                        } else {
                            tracing::debug!(deferred_auth_id = %id.fingerprint(), "authenticated ping");
                            self.step(key, Event::Wake, now);
                            PingVerdict::Woken
                        }
                    }
                    _ => PingVerdict::Rejected,
                };
                self.counters.ping(verdict != PingVerdict::Rejected);
                let _ = reply.send(verdict);
            }
            Command::Wake(id, reply) => {
                let key = self.active_key(&id);
                let _ = reply.send(key.is_some());
                if let Some(key) = key {
                    tracing::debug!(deferred_auth_id = %id.fingerprint(), "woken by a ping");
                    self.step(key, Event::Wake, now);
                }
            }
            Command::Cancel(id, reply) => {
                let key = self.active_key(&id);
                let _ = reply.send(key.is_some());
                if let Some(key) = key {
                    self.step(key, Event::Cancel, now);
                }
            }
            Command::Wait(id, reply) => {
                match self
                    .keys
                    .get(&id, &self.entries)
                    .and_then(|k| self.entries.get_mut(&k))
                {
                    None => {
                        let _ = reply.send(Err(WaitError::Unknown));
                    }
                    Some(e) => match e.outcome() {
                        Some(o) if e.stored() => {
                            let _ = reply.send(Ok(o.clone()));
                        }
                        _ => {
                            let end = e.end_mut();
                            end.waiters.retain(|w| !w.is_closed());
                            end.waiters.push(reply);
                        }
                    },
                }
            }
            Command::Status(id, reply) => {
                let status = self
                    .keys
                    .get(&id, &self.entries)
                    .and_then(|k| self.entries.get(&k))
                    .map(|e| {
                        let m = &e.machine;
                        PollStatus {
                            floor: m.floor(),
                            next_poll: m.wake_at(),
                            deadline: m.deadline(),
                            polls: m.polls(),
                            slow_downs: m.slow_downs(),
                            in_flight: m.in_flight(),
                            finished: m.is_finished(),
                            interaction_uri: m.interaction_uri().cloned(),
                            tokens_held: m.held_tokens().is_some(),
                        }
                    });
                let _ = reply.send(status);
            }
            Command::Get(id, reply) => {
                let found = self
                    .keys
                    .get(&id, &self.entries)
                    .and_then(|k| self.entries.get(&k))
                    .map(|e| Tracked {
                        auth: e.auth.clone(),
                        machine: PollMachine::clone(&e.machine),
                        finished: e.outcome().is_some(),
                    });
                let _ = reply.send(found);
            }
            Command::Forget(id) => {
                if let Some(key) = self.keys.get(&id, &self.entries) {
                    self.forget(key);
                }
            }
            Command::Shutdown(reply) => {
                self.stopping.get_or_insert_with(Vec::new).push(reply);
            }
            Command::Idle(reply) => {
                // Run anything due first, so that the answer is about the
                // state after this instant's work has started.
                self.fire_due();
                let due = self.timers.iter().any(|Reverse((t, key, generation))| {
                    *t <= now
                        && self
                            .entries
                            .get(key)
                            .is_some_and(|e| e.timer_gen == *generation && e.outcome().is_none())
                });
                let storing = self
                    .entries
                    .values()
                    .any(|e| e.outcome().is_some() && !e.stored());
                let _ = reply.send(self.in_flight.is_empty() && !due && !storing);
            }
        }
    }

    /// Drops an entry without delivering anything (fleet hand-over). One
    /// with a poll in flight becomes an [`Orphan`] until the answer comes.
    fn forget(&mut self, key: u64) {
        if let Some(e) = self.entries.remove(&key) {
            self.keys.remove(e.auth.id(), key);
            if e.outcome().is_none() {
                self.counters.untracked();
                if self.task_keys.values().any(|k| *k == key) {
                    tracing::debug!(deferred_auth_id = %e.auth.id().fingerprint(), "lease lost with a poll in flight: its answer is still handled");
                    self.orphans.insert(
                        key,
                        Orphan {
                            auth: e.auth,
                            machine: e.machine,
                            reclaimed: None,
                        },
                    );
                }
            }
        }
    }

    /// The answer to the poll of an [`Orphan`]: stored and handed over if
    /// it redeemed the id, else dropped; then a claim that came meanwhile
    /// is taken on.
    fn orphan_answered(&mut self, key: u64, result: Option<PollResult<P::Tokens>>) {
        let Some(mut orphan) = self.orphans.remove(&key) else {
            return;
        };
        let now = self.clock.now();
        let outcome = result.and_then(|result| {
            match orphan
                .machine
                .handle(Event::Response(result), now, self.rng.as_ref())
                .action
            {
                Action::Deliver(o) if redeemed_the_id(&o) => Some(o),
                _ => None,
            }
        });
        match outcome {
            Some(outcome) => {
                tracing::info!(deferred_auth_id = %orphan.auth.id().fingerprint(), outcome = outcome.kind(), "the lease was lost while the poll was in flight; its answer redeemed the id: storing it");
                let id = orphan.auth.id().clone();
                if self.keys.get(&id, &self.entries).is_some() {
                    // Tracked again meanwhile: cannot happen (a track or
                    // claim of an orphan waits for its answer).
                    tracing::error!(deferred_auth_id = %id.fingerprint(), "the answer of a poll whose lease was lost came for an authentication tracked again (a bug)");
                    return;
                }
                let key = self.insert(Arc::unwrap_or_clone(orphan.auth), *orphan.machine);
                self.deliver(key, outcome, now);
            }
            None => {
                tracing::debug!(deferred_auth_id = %orphan.auth.id().fingerprint(), "the lease was lost while the poll was in flight; its answer is left to the new owner");
                if let Some((auth, mut machine)) = orphan.reclaimed.take()
                    && self.stopping.is_none()
                {
                    machine.resume_after_restart(now, self.rng.as_ref());
                    let key = self.insert(*auth, *machine);
                    self.step(key, Event::Timer, now);
                }
            }
        }
    }

    fn active_key(&self, id: &DeferredAuthId) -> Option<u64> {
        let key = self.keys.get(id, &self.entries)?;
        self.entries
            .get(&key)
            .filter(|e| e.outcome().is_none())
            .map(|_| key)
    }

    /// A poll task panicked: the request may have reached the OP, so its
    /// fate is unknown. The machine hears of it as a transient failure
    /// (retried at the floor plus backoff); a poll that keeps panicking ends
    /// the authentication instead of looping until the deadline. The panic
    /// message is not repeated (it could hold anything).
    fn poll_panicked(&mut self, key: u64, panicked: bool) {
        if self.orphans.contains_key(&key) {
            self.orphan_answered(key, None);
            return;
        }
        let Some(entry) = self.entries.get_mut(&key) else {
            return;
        };
        entry.panics = entry.panics.saturating_add(1);
        let what = if panicked { "panicked" } else { "was aborted" };
        tracing::error!(
            deferred_auth_id = %entry.auth.id().fingerprint(),
            consecutive = entry.panics,
            "the poll task {what} (a bug); its fate at the OP is unknown"
        );
        let message = format!("the poll task {what}");
        let result = if entry.panics >= MAX_CONSECUTIVE_PANICS {
            PollResult::Permanent(PollFailure::Other {
                message: format!("{message} {MAX_CONSECUTIVE_PANICS} times in a row"),
                cause: None,
            })
        } else {
            PollResult::Transient {
                message,
                retry_after: None,
                cause: None,
            }
        };
        let now = self.clock.now();
        self.step(key, Event::Response(result), now);
    }

    fn completed(&mut self, key: u64, result: PollResult<P::Tokens>) {
        if self.orphans.contains_key(&key) {
            self.orphan_answered(key, Some(result));
            return;
        }
        let now = self.clock.now();
        if matches!(&result, PollResult::OAuth(e) if e.code == crate::error::ErrorCode::SlowDown) {
            self.counters.slow_down();
        }
        if let (Some(e), PollResult::Transient { message, .. }) = (self.entries.get(&key), &result)
        {
            // A poll is not idempotent: the request may have reached the OP. If it answered with
            // tokens, they are gone: the id is dead after redemption.
            tracing::warn!(
                deferred_auth_id = %e.auth.id().fingerprint(),
                error = %message,
                "poll failed in transit; will retry (a success lost in transit cannot be recovered)"
            );
        }
        self.step(key, Event::Response(result), now);
    }

    fn insert(&mut self, auth: DeferredAuthentication, machine: PollMachine) -> u64 {
        let key = self.next_key;
        self.next_key += 1;
        self.keys.insert(auth.id(), key);
        self.counters.tracked();
        self.entries.insert(
            key,
            Entry {
                auth: Arc::new(auth),
                machine: Box::new(machine),
                timer_gen: 0,
                panics: 0,
                end: None,
            },
        );
        key
    }

    /// The persistence task stored `key`'s outcome: hand it over.
    fn stored(&mut self, key: u64) {
        let Some(entry) = self.entries.get_mut(&key) else {
            return;
        };
        let Some(outcome) = entry.outcome().cloned() else {
            return;
        };
        if !entry.stored() {
            self.counters.outcome_stored();
        }
        let end = entry.end_mut();
        end.stored = true;
        for w in end.waiters.drain(..) {
            let _ = w.send(Ok(outcome.clone()));
        }
        let _ = self.events.send(PollEvent::Finished {
            id: entry.auth.id().clone(),
            outcome_id: OutcomeId::of(entry.auth.id()),
            outcome,
        });
    }

    /// Says (log and event) that an entry holds tokens awaiting validation.
    fn announce_held(events: &broadcast::Sender<PollEvent<P::Tokens>>, entry: &Entry<P::Tokens>) {
        let reason = entry.machine.last_error().unwrap_or_default().to_owned();
        tracing::warn!(
            deferred_auth_id = %entry.auth.id().fingerprint(),
            error = %reason,
            "tokens received but not validated yet (the JWK Set is unreachable); they are kept and validated when it is back"
        );
        if events.receiver_count() > 0 {
            let _ = events.send(PollEvent::TokensHeld {
                id: entry.auth.id().clone(),
                reason,
            });
        }
    }

    fn step(&mut self, key: u64, event: Event<P::Tokens>, now: UnixTime) {
        let answered = matches!(event, Event::Response(_));
        let Some(entry) = self.entries.get_mut(&key) else {
            return;
        };
        let was_held = entry.machine.held_tokens().is_some();
        let Step {
            action,
            progress,
            interaction,
        } = entry.machine.handle(event, now, self.rng.as_ref());
        let listened = self.events.receiver_count() > 0;
        if let Some(description) = progress.filter(|_| listened) {
            let _ = self.events.send(PollEvent::Progress {
                id: entry.auth.id().clone(),
                description,
            });
        }
        if let Some(change) = interaction.filter(|_| listened) {
            let uri = match change {
                crate::proto::poll::InteractionChange::Required(u) => Some(u),
                _ => None,
            };
            let _ = self.events.send(PollEvent::Interaction {
                id: entry.auth.id().clone(),
                uri,
            });
        }
        if !was_held && entry.machine.held_tokens().is_some() {
            Self::announce_held(&self.events, entry);
        }
        match action {
            Action::SendPoll => {
                let Some(poller) = self.poller.upgrade() else {
                    return;
                };
                if !poller.may_poll(entry.auth.id()) {
                    tracing::debug!(deferred_auth_id = %entry.auth.id().fingerprint(), "lease not held: handing over");
                    self.forget(key);
                    return;
                }
                if let Some(held) = entry.machine.held_tokens().cloned() {
                    // Tokens in hand: validated again, nothing sent to the
                    // OP.
                    let auth = entry.auth.clone();
                    tracing::debug!(deferred_auth_id = %auth.id().fingerprint(), "validating held tokens again");
                    let task = self
                        .in_flight
                        .spawn(async move { (key, poller.validate_held(auth, held).await) });
                    self.task_keys.insert(task.id(), key);
                    self.counters.in_flight(self.in_flight.len());
                    return;
                }
                let auth = entry.auth.clone();
                tracing::debug!(
                    deferred_auth_id = %auth.id().fingerprint(),
                    poll = entry.machine.polls(),
                    floor_secs = entry.machine.floor().as_secs(),
                    "polling"
                );
                let task = self
                    .in_flight
                    .spawn(async move { (key, poller.poll(auth).await) });
                self.task_keys.insert(task.id(), key);
                self.counters.in_flight(self.in_flight.len());
                let lateness = self
                    .scheduled
                    .take()
                    .map(|due| now.saturating_duration_since(due))
                    .unwrap_or_default();
                self.counters.poll_sent(lateness);
            }
            Action::SleepUntil(t) => {
                entry.timer_gen = entry.timer_gen.wrapping_add(1);
                self.timers.push(Reverse((t, key, entry.timer_gen)));
                if answered {
                    self.counters.store_queued();
                    let _ = self.persist.send(PersistJob::State(
                        entry.auth.clone(),
                        PollMachine::clone(&entry.machine),
                    ));
                }
            }
            Action::AwaitResponse | Action::Finished => {}
            Action::Deliver(outcome) => self.deliver(key, outcome, now),
        }
    }

    /// An authentication ended: its outcome goes to the store, and is
    /// handed over once stored.
    fn deliver(&mut self, key: u64, outcome: Outcome<P::Tokens>, now: UnixTime) {
        let Some(entry) = self.entries.get_mut(&key) else {
            return;
        };
        tracing::info!(
            deferred_auth_id = %entry.auth.id().fingerprint(),
            outcome = outcome.kind(),
            polls = entry.machine.polls(),
            "deferred authentication finished"
        );
        self.counters.finished(outcome.kind(), false);
        // Stored first, handed over second: waiters and subscribers hear of
        // it when the persistence task says so.
        self.counters.store_queued();
        let _ = self.persist.send(PersistJob::Outcome(
            key,
            entry.auth.clone(),
            PollMachine::clone(&entry.machine),
            outcome.clone(),
            now,
        ));
        let end = entry.end_mut();
        end.outcome = Some(outcome);
        end.finished_at = Some(now);
        entry.timer_gen = entry.timer_gen.wrapping_add(1);
        let purge_at = now.saturating_add(self.config.finished_retention);
        self.timers.push(Reverse((purge_at, key, entry.timer_gen)));
    }
}

impl<T: Clone + Send + Sync + fmt::Debug + 'static> crate::ping::PingSink for DriverHandle<T> {
    fn ping(&self, id: DeferredAuthId, token: Vec<u8>) -> BoxFuture<PingVerdict> {
        let this = self.clone();
        Box::pin(async move { DriverHandle::ping(&this, id, token).await })
    }
}

/// Runs the writes: poll states (best effort) and outcomes (durably),
/// reporting each stored outcome back to the engine. Up to `limit` run at
/// once, so that a store can group them into one transaction; writes of one
/// authentication never overlap in practice (its next state comes a poll
/// interval later; a stale state update after its outcome is refused by the
/// store and ignored).
async fn persist_task<P: Poller>(
    poller: Weak<P>,
    mut jobs: mpsc::UnboundedReceiver<PersistJob<P::Tokens>>,
    stored: mpsc::UnboundedSender<u64>,
    counters: Arc<Counters>,
    room: Arc<tokio::sync::Notify>,
    limit: usize,
) {
    /// What a finished write was.
    enum Written {
        State,
        Purge,
        Outcome(u64),
    }
    let mut running: JoinSet<Written> = JoinSet::new();
    // The outcome writes running, by task, so that one that panicked is
    // still handed over.
    let mut outcome_tasks: HashMap<tokio::task::Id, u64> = HashMap::new();
    let mut open = true;
    loop {
        tokio::select! {
            job = jobs.recv(), if open && running.len() < limit => {
                let Some(job) = job else {
                    open = false;
                    continue;
                };
                let Some(p) = poller.upgrade() else { break };
                match job {
                    PersistJob::State(auth, machine) => {
                        // A store that answers at once (`MemoryStore`) is
                        // not given a task of its own: the write is polled
                        // once here, and spawned only if it has to wait.
                        let mut write = p.persist_state(auth, machine);
                        match poll_once(&mut write) {
                            Some(Ok(())) => {
                                counters.store_dequeued();
                                room.notify_one();
                            }
                            Some(Err(_)) => {
                                // It panicked: counted as done, as a spawned
                                // write that panicked is.
                                counters.store_dequeued();
                                room.notify_one();
                            }
                            None => {
                                running.spawn(async move {
                                    write.await;
                                    Written::State
                                });
                            }
                        }
                    }
                    PersistJob::Purge(before) => {
                        running.spawn(async move {
                            p.purge_stored(before).await;
                            Written::Purge
                        });
                    }
                    PersistJob::Outcome(key, auth, machine, outcome, at) => {
                        let task = running.spawn(async move {
                            if p.persist_outcome(auth, machine, outcome, at).await {
                                Written::Outcome(key)
                            } else {
                                // Another fleet instance carries it on.
                                Written::State
                            }
                        });
                        outcome_tasks.insert(task.id(), key);
                    }
                }
            }
            Some(done) = running.join_next_with_id(), if !running.is_empty() => {
                let finished = match done {
                    Ok((task, written)) => {
                        outcome_tasks.remove(&task);
                        written
                    }
                    // A write that panicked: an outcome is handed over all
                    // the same (as when its store gives up).
                    Err(e) => match outcome_tasks.remove(&e.id()) {
                        Some(key) => Written::Outcome(key),
                        None => Written::State,
                    },
                };
                match finished {
                    // A purge is not counted as a queued write.
                    Written::Purge => {}
                    Written::State => counters.store_dequeued(),
                    Written::Outcome(key) => {
                        counters.store_dequeued();
                        let _ = stored.send(key);
                    }
                }
                room.notify_one();
            }
            else => break,
        }
    }
}

/// Polls a future once without a waker that does anything: `Some` if it
/// finished at once (`Err` if it panicked), `None` if it must wait (it may
/// then be polled on, with a real waker, elsewhere).
fn poll_once<T>(f: &mut BoxFuture<T>) -> Option<std::thread::Result<T>> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f.as_mut().poll(&mut cx))) {
        Ok(std::task::Poll::Ready(v)) => Some(Ok(v)),
        Ok(std::task::Poll::Pending) => None,
        Err(panic) => Some(Err(panic)),
    }
}

/// The hash compared against when a ping names an unknown id.
fn dummy_hash() -> &'static SecretHash {
    static DUMMY: std::sync::OnceLock<SecretHash> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| SecretHash::of(b"oidc-dtr: no notification token is bound to this id"))
}

/// The driver's own cost, without HTTP: `n` authentications tracked on a
/// manual clock behind a poller that answers `authorization_pending` at
/// once (and stores nothing), then `rounds` rounds in which all of them
/// fall due at once. Returns how long each round took until every answer
/// was back and handled, and the `cpu` time (a reading the caller
/// supplies) it used. For `examples/load.rs` (`driver` mode).
pub(crate) async fn bench_rounds(
    n: usize,
    max_in_flight: usize,
    rounds: u32,
    cpu: impl Fn() -> Duration,
) -> Vec<(Duration, Duration)> {
    use crate::error::{ErrorCode, OAuthError};
    use crate::proto::poll::PollConfig;
    use crate::time::ManualClock;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct Pending(AtomicU64);
    impl Poller for Pending {
        type Tokens = ();
        fn poll(self: Arc<Self>, _auth: Arc<DeferredAuthentication>) -> BoxFuture<PollResult<()>> {
            Box::pin(async move {
                self.0.fetch_add(1, Ordering::Relaxed);
                PollResult::OAuth(OAuthError::new(ErrorCode::AuthorizationPending))
            })
        }
    }

    let t0 = UnixTime::from_secs(1_900_000_000);
    let clock = Arc::new(ManualClock::new(t0));
    let poller = Arc::new(Pending(AtomicU64::new(0)));
    let config = DriverConfig {
        max_in_flight,
        ..DriverConfig::default()
    };
    let driver: DriverHandle<()> = DriverHandle::spawn(
        Arc::downgrade(&poller),
        clock.clone(),
        Arc::new(crate::random::SystemRandom),
        config,
        &tokio::runtime::Handle::current(),
    );
    let poll_config = PollConfig::default();
    for i in 0..n {
        let a = DeferredAuthentication::seeded(
            DeferredAuthId::new(format!("bench-{i:012}-0123456789abcdefghij")),
            "https://op.example".into(),
            "client".into(),
            t0,
            Some(86_400),
            60,
            crate::secret::Nonce::new("nonce"),
        );
        let m = PollMachine::new(&a, poll_config.clone());
        let _ = driver.track(a, m).await;
    }
    let mut out = Vec::new();
    for round in 1..=u64::from(rounds) {
        clock.advance(Duration::from_secs(61));
        let cpu0 = cpu();
        let t = std::time::Instant::now();
        loop {
            let answered = poller.0.load(Ordering::Relaxed) >= round * n as u64;
            let stats = driver.stats();
            if answered && stats.in_flight == 0 && stats.store_queue_depth == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        out.push((t.elapsed(), cpu().saturating_sub(cpu0)));
    }
    driver.shutdown().await;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ErrorCode, OAuthError};
    use crate::proto::poll::PollConfig;
    use crate::random::SystemRandom;
    use crate::time::ManualClock;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const T0: UnixTime = UnixTime::from_millis(1_800_000_000_000);

    /// A fake OP: approves an id after `approve_after` polls; records how many
    /// polls were in flight at once per id.
    struct FakeOp {
        approve_after: u32,
        polls: Mutex<HashMap<String, u32>>,
        concurrent: Mutex<HashMap<String, u32>>,
        max_concurrent: AtomicUsize,
        delay: Duration,
    }

    impl Poller for FakeOp {
        type Tokens = String;
        fn poll(
            self: Arc<Self>,
            auth: Arc<DeferredAuthentication>,
        ) -> BoxFuture<PollResult<String>> {
            Box::pin(async move {
                let id = auth.id().secret().to_owned();
                {
                    let mut c = self.concurrent.lock().unwrap();
                    let n = c.entry(id.clone()).or_default();
                    *n += 1;
                    self.max_concurrent.fetch_max(*n as usize, Ordering::SeqCst);
                }
                tokio::time::sleep(self.delay).await;
                *self.concurrent.lock().unwrap().get_mut(&id).unwrap() -= 1;
                let mut polls = self.polls.lock().unwrap();
                let n = polls.entry(id.clone()).or_default();
                *n += 1;
                if *n >= self.approve_after {
                    PollResult::Tokens(format!("tokens-for-{id}"))
                } else {
                    let mut e = OAuthError::new(ErrorCode::AuthorizationPending);
                    e.description = Some(format!("step {n}"));
                    PollResult::OAuth(e)
                }
            })
        }
    }

    fn spawn_driver(
        op: &Arc<FakeOp>,
        clock: &Arc<ManualClock>,
        cfg: DriverConfig,
    ) -> DriverHandle<String> {
        DriverHandle::spawn(
            Arc::downgrade(op),
            clock.clone(),
            Arc::new(SystemRandom),
            cfg,
            &tokio::runtime::Handle::current(),
        )
    }

    fn fake(approve_after: u32) -> Arc<FakeOp> {
        Arc::new(FakeOp {
            approve_after,
            polls: Default::default(),
            concurrent: Default::default(),
            max_concurrent: AtomicUsize::new(0),
            delay: Duration::from_millis(1),
        })
    }

    fn auth(id: &str, interval: u64, expires_in: u64) -> (DeferredAuthentication, PollMachine) {
        let a = DeferredAuthentication::for_tests(
            DeferredAuthId::new(id),
            T0,
            Some(expires_in),
            interval,
        );
        let m = PollMachine::new(&a, PollConfig::default());
        (a, m)
    }

    /// Advances the manual clock in steps until `done` or a step limit.
    async fn run_until(clock: &ManualClock, step: Duration, mut done: impl FnMut() -> bool) {
        for _ in 0..10_000 {
            if done() {
                return;
            }
            clock.advance(step);
            // Let the driver and the fake OP run.
            for _ in 0..20 {
                tokio::task::yield_now().await;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("did not finish");
    }

    #[tokio::test]
    async fn drives_many_authentications_to_their_outcomes() {
        let clock = Arc::new(ManualClock::new(T0));
        let op = fake(3);
        let driver = spawn_driver(&op, &clock, DriverConfig::default());
        let mut events = driver.subscribe();
        for i in 0..50 {
            let (a, m) = auth(&format!("id-{i}"), 5, 3600);
            assert!(driver.track(a, m).await.unwrap());
        }
        // Tracking the same id twice is refused.
        let (a, m) = auth("id-0", 5, 3600);
        assert!(!driver.track(a, m).await.unwrap());

        let waiter = {
            let d = driver.clone();
            tokio::spawn(async move { d.wait(&DeferredAuthId::new("id-7")).await })
        };
        let finished = Arc::new(AtomicUsize::new(0));
        let f = finished.clone();
        let progress = Arc::new(AtomicUsize::new(0));
        let p = progress.clone();
        let collector = tokio::spawn(async move {
            while let Ok(ev) = events.recv().await {
                match ev {
                    PollEvent::Finished { .. } => {
                        if f.fetch_add(1, Ordering::SeqCst) + 1 == 50 {
                            break;
                        }
                    }
                    PollEvent::Progress { .. } => {
                        p.fetch_add(1, Ordering::SeqCst);
                    }
                    PollEvent::Interaction { .. } | PollEvent::TokensHeld { .. } => {}
                }
            }
        });
        run_until(&clock, Duration::from_secs(1), || {
            finished.load(Ordering::SeqCst) == 50
        })
        .await;
        collector.await.unwrap();
        assert_eq!(
            waiter.await.unwrap(),
            Ok(Outcome::Tokens("tokens-for-id-7".into()))
        );
        // Two pending answers each, with a new description each time.
        assert_eq!(progress.load(Ordering::SeqCst), 100);
        assert_eq!(
            op.max_concurrent.load(Ordering::SeqCst),
            1,
            "single flight per id"
        );
        // Every id was polled exactly three times, at least 5 s apart.
        assert!(op.polls.lock().unwrap().values().all(|&n| n == 3));
        // A late wait still gets the outcome (kept for the retention period).
        assert_eq!(
            driver.wait(&DeferredAuthId::new("id-3")).await,
            Ok(Outcome::Tokens("tokens-for-id-3".into()))
        );
        assert_eq!(
            driver.wait(&DeferredAuthId::new("nope")).await,
            Err(WaitError::Unknown)
        );
        assert_eq!(driver.counts(), (0, 0));
    }

    /// Ids whose hashes collide are still found, each to its own entry,
    /// before and after another one is removed.
    #[test]
    fn the_id_index_survives_hash_collisions() {
        let mut index = IdIndex::new();
        index.all_collide = true;
        let mut entries: HashMap<u64, Entry<String>> = HashMap::new();
        let ids: Vec<DeferredAuthId> = (0..4)
            .map(|i| DeferredAuthId::new(format!("collide-{i}")))
            .collect();
        for (key, id) in ids.iter().enumerate() {
            let (a, m) = auth(id.secret(), 5, 3600);
            let key = key as u64 + 10;
            index.insert(id, key);
            entries.insert(
                key,
                Entry {
                    auth: Arc::new(a),
                    machine: Box::new(m),
                    timer_gen: 0,
                    panics: 0,
                    end: None,
                },
            );
        }
        assert_eq!(index.collided.len(), 3);
        for (key, id) in ids.iter().enumerate() {
            assert_eq!(index.get(id, &entries), Some(key as u64 + 10));
        }
        let stranger = DeferredAuthId::new("collide-9");
        assert_eq!(index.get(&stranger, &entries), None);
        // Remove the one that holds the hash slot, then a collided one.
        for (key, gone) in [(10u64, 0usize), (12, 2)] {
            index.remove(&ids[gone], key);
            entries.remove(&key);
            assert_eq!(index.get(&ids[gone], &entries), None);
        }
        assert_eq!(index.get(&ids[1], &entries), Some(11));
        assert_eq!(index.get(&ids[3], &entries), Some(13));
        // A new id takes the free hash slot.
        let (a, m) = auth("collide-new", 5, 3600);
        let new_id = a.id().clone();
        index.insert(&new_id, 20);
        entries.insert(
            20,
            Entry {
                auth: Arc::new(a),
                machine: Box::new(m),
                timer_gen: 0,
                panics: 0,
                end: None,
            },
        );
        assert_eq!(index.get(&new_id, &entries), Some(20));
        assert_eq!(index.get(&ids[1], &entries), Some(11));
    }

    /// Answers every poll `authorization_pending`; its state writes wait
    /// until the gate opens.
    struct GatedStore {
        polls: AtomicUsize,
        gate: tokio::sync::Semaphore,
    }

    impl Poller for GatedStore {
        type Tokens = String;
        fn poll(
            self: Arc<Self>,
            _auth: Arc<DeferredAuthentication>,
        ) -> BoxFuture<PollResult<String>> {
            Box::pin(async move {
                self.polls.fetch_add(1, Ordering::SeqCst);
                PollResult::OAuth(OAuthError::new(ErrorCode::AuthorizationPending))
            })
        }

        fn persist_state(
            self: Arc<Self>,
            _auth: Arc<DeferredAuthentication>,
            _machine: PollMachine,
        ) -> BoxFuture<()> {
            Box::pin(async move {
                let _permit = self.gate.acquire().await;
            })
        }
    }

    /// Issue 16: a store that cannot keep up slows polling down. With
    /// `max_queued_writes` writes outstanding, no poll goes out (late, not
    /// lost) until the store catches up; the writes never pile up.
    #[tokio::test]
    async fn a_slow_store_holds_new_polls_back() {
        let clock = Arc::new(ManualClock::new(T0));
        let op = Arc::new(GatedStore {
            polls: AtomicUsize::new(0),
            gate: tokio::sync::Semaphore::new(0),
        });
        let cfg = DriverConfig {
            max_queued_writes: 2,
            ..DriverConfig::default()
        };
        let driver = DriverHandle::spawn(
            Arc::downgrade(&op),
            clock.clone(),
            Arc::new(SystemRandom),
            cfg,
            &tokio::runtime::Handle::current(),
        );
        for i in 0..6 {
            let (a, m) = auth(&format!("g-{i}"), 5, 3600);
            assert!(driver.track(a, m).await.unwrap());
        }
        run_until(&clock, Duration::from_secs(1), || {
            op.polls.load(Ordering::SeqCst) == 6
        })
        .await;
        // Each answer queued a state write; none can complete.
        for _ in 0..200 {
            tokio::task::yield_now().await;
            if driver.stats().store_queue_depth == 6 {
                break;
            }
        }
        assert_eq!(driver.stats().store_queue_depth, 6);
        // Every authentication falls due again, twice over: no poll goes out.
        for _ in 0..12 {
            clock.advance(Duration::from_secs(1));
            for _ in 0..20 {
                tokio::task::yield_now().await;
            }
        }
        assert_eq!(op.polls.load(Ordering::SeqCst), 6);
        assert_eq!(driver.stats().store_queue_depth, 6);
        // The store catches up: polling resumes, late but complete.
        op.gate.add_permits(1_000);
        run_until(&clock, Duration::from_secs(1), || {
            op.polls.load(Ordering::SeqCst) >= 12
        })
        .await;
        assert!(driver.stats().max_poll_lateness > Duration::ZERO);
    }

    #[tokio::test]
    async fn dropped_wait_loses_nothing_and_wake_polls_early() {
        let clock = Arc::new(ManualClock::new(T0));
        let op = fake(1);
        let driver = spawn_driver(&op, &clock, DriverConfig::default());
        let (a, m) = auth("x", 60, 3600);
        driver.track(a, m).await.unwrap();
        let id = DeferredAuthId::new("x");
        // A wait that is dropped before the outcome.
        let w = driver.wait(&id);
        let _ = tokio::time::timeout(Duration::from_millis(5), w).await;
        // A ping before the floor: the poll happens at the floor, not before.
        clock.advance(Duration::from_secs(10));
        assert!(driver.wake(&id).await);
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            op.polls.lock().unwrap().get("x"),
            None,
            "no poll before the floor"
        );
        clock.advance(Duration::from_secs(50));
        let outcome = tokio::time::timeout(Duration::from_secs(5), driver.wait(&id))
            .await
            .unwrap();
        assert_eq!(outcome, Ok(Outcome::Tokens("tokens-for-x".into())));
        // A finished authentication is not woken.
        assert!(!driver.wake(&id).await);
        let status = driver.status(&id).await.unwrap();
        assert!(status.finished);
        assert_eq!(status.polls, 1);
    }

    /// Panics on the first `panics` polls of every id, then approves.
    struct PanickyOp {
        panics: u32,
        polls: Mutex<HashMap<String, u32>>,
    }

    impl Poller for PanickyOp {
        type Tokens = String;
        fn poll(
            self: Arc<Self>,
            auth: Arc<DeferredAuthentication>,
        ) -> BoxFuture<PollResult<String>> {
            Box::pin(async move {
                let id = auth.id().secret().to_owned();
                let n = {
                    let mut polls = self.polls.lock().unwrap();
                    let n = polls.entry(id.clone()).or_default();
                    *n += 1;
                    *n
                };
                tokio::task::yield_now().await;
                assert!(n > self.panics, "injected panic in poll {n}");
                PollResult::Tokens(format!("tokens-for-{id}"))
            })
        }
    }

    /// Issue 11, item 1: a poll task that panics is a failure fed to its
    /// machine (retried, then ended), never a wedged authentication.
    #[tokio::test]
    async fn a_panicking_poll_is_retried_then_ends_the_authentication() {
        for (panics, expected) in [(1, "tokens"), (2, "tokens"), (u32::MAX, "rejected")] {
            let clock = Arc::new(ManualClock::new(T0));
            let op = Arc::new(PanickyOp {
                panics,
                polls: Default::default(),
            });
            let driver: DriverHandle<String> = DriverHandle::spawn(
                Arc::downgrade(&op),
                clock.clone(),
                Arc::new(SystemRandom),
                DriverConfig::default(),
                &tokio::runtime::Handle::current(),
            );
            let (a, m) = auth("boom", 5, 3600);
            driver.track(a, m).await.unwrap();
            let id = DeferredAuthId::new("boom");
            let waiter = {
                let d = driver.clone();
                let id = id.clone();
                tokio::spawn(async move { d.wait(&id).await })
            };
            run_until(&clock, Duration::from_secs(1), || waiter.is_finished()).await;
            let outcome = waiter.await.unwrap().unwrap();
            assert_eq!(outcome.kind(), expected, "{panics} panics: {outcome:?}");
            let polls = op.polls.lock().unwrap()["boom"];
            if expected == "rejected" {
                assert_eq!(polls, MAX_CONSECUTIVE_PANICS);
                assert!(matches!(
                    outcome,
                    Outcome::Rejected(PollFailure::Other { ref message, .. }) if message.contains("panicked")
                ));
            } else {
                assert_eq!(polls, panics + 1);
            }
            assert_eq!(driver.counts(), (0, 0));
        }
    }

    /// Answers each poll once its gate opens: `tokens` or pending; records
    /// the outcomes the driver asks it to store.
    struct GatedOp {
        tokens: bool,
        gate: tokio::sync::Semaphore,
        polls: AtomicUsize,
        stored: Mutex<Vec<Outcome<String>>>,
    }

    impl Poller for GatedOp {
        type Tokens = String;
        fn poll(
            self: Arc<Self>,
            auth: Arc<DeferredAuthentication>,
        ) -> BoxFuture<PollResult<String>> {
            Box::pin(async move {
                self.polls.fetch_add(1, Ordering::SeqCst);
                let _permit = self.gate.acquire().await;
                if self.tokens {
                    PollResult::Tokens(format!("tokens-for-{}", auth.id().secret()))
                } else {
                    PollResult::OAuth(OAuthError::new(ErrorCode::AuthorizationPending))
                }
            })
        }

        fn persist_outcome(
            self: Arc<Self>,
            _auth: Arc<DeferredAuthentication>,
            _machine: PollMachine,
            outcome: Outcome<String>,
            _finished_at: UnixTime,
        ) -> BoxFuture<bool> {
            Box::pin(async move {
                self.stored.lock().unwrap().push(outcome);
                true
            })
        }
    }

    /// Issue 22, item 5: an authentication forgotten (its fleet lease lost)
    /// while its poll is in flight still has that poll's answer handled:
    /// tokens are stored and handed over once; a pending answer is dropped,
    /// and a claim of the same id that came meanwhile is taken on only
    /// after it (never two polls of one id in flight).
    #[tokio::test]
    async fn a_poll_in_flight_when_the_lease_is_lost_is_still_handled() {
        for tokens in [true, false] {
            let clock = Arc::new(ManualClock::new(T0));
            let op = Arc::new(GatedOp {
                tokens,
                gate: tokio::sync::Semaphore::new(0),
                polls: AtomicUsize::new(0),
                stored: Mutex::default(),
            });
            let driver: DriverHandle<String> = DriverHandle::spawn(
                Arc::downgrade(&op),
                clock.clone(),
                Arc::new(SystemRandom),
                DriverConfig::default(),
                &tokio::runtime::Handle::current(),
            );
            let mut events = driver.subscribe();
            let (a, m) = auth("orphan", 5, 3600);
            let (again, again_m) = (a.clone(), m.clone());
            driver.track(a, m).await.unwrap();
            let id = DeferredAuthId::new("orphan");
            run_until(&clock, Duration::from_secs(1), || {
                op.polls.load(Ordering::SeqCst) == 1
            })
            .await;
            driver.forget(&id);
            // Claimed again by this instance while the poll is in flight.
            assert!(driver.restore(again, again_m, None).await.unwrap());
            assert!(driver.status(&id).await.is_none(), "not tracked meanwhile");
            for _ in 0..20 {
                tokio::task::yield_now().await;
            }
            assert_eq!(
                op.polls.load(Ordering::SeqCst),
                1,
                "no second poll in flight"
            );
            op.gate.add_permits(1);
            if tokens {
                let ev = tokio::time::timeout(Duration::from_secs(5), events.recv())
                    .await
                    .expect("the tokens are handed over")
                    .unwrap();
                assert!(matches!(
                    ev,
                    PollEvent::Finished { outcome: Outcome::Tokens(ref t), .. } if t == "tokens-for-orphan"
                ));
                assert_eq!(
                    driver.wait(&id).await,
                    Ok(Outcome::Tokens("tokens-for-orphan".into()))
                );
                assert_eq!(op.stored.lock().unwrap().len(), 1, "stored once");
                // Finished: the claim that came meanwhile polls nothing.
                clock.advance(Duration::from_secs(60));
                for _ in 0..20 {
                    tokio::task::yield_now().await;
                }
                assert_eq!(op.polls.load(Ordering::SeqCst), 1);
            } else {
                // The pending answer is dropped; the claim that came
                // meanwhile resumes, a floor after it.
                op.gate.add_permits(10);
                run_until(&clock, Duration::from_secs(1), || {
                    op.polls.load(Ordering::SeqCst) == 2
                })
                .await;
                assert!(op.stored.lock().unwrap().is_empty());
                assert!(driver.status(&id).await.is_some());
            }
            assert_eq!(driver.undelivered().await.len(), usize::from(tokens));
        }
    }

    #[tokio::test]
    async fn cancel_delivers_cancelled() {
        let clock = Arc::new(ManualClock::new(T0));
        let op = fake(100);
        let driver = spawn_driver(&op, &clock, DriverConfig::default());
        let (a, m) = auth("c", 5, 3600);
        driver.track(a, m).await.unwrap();
        let id = DeferredAuthId::new("c");
        assert!(driver.cancel(&id).await);
        assert_eq!(driver.wait(&id).await, Ok(Outcome::Cancelled));
        assert!(!driver.cancel(&id).await);
    }

    #[tokio::test]
    async fn outcomes_are_purged_after_retention() {
        let clock = Arc::new(ManualClock::new(T0));
        let op = fake(1);
        let cfg = DriverConfig {
            finished_retention: Duration::from_secs(100),
            ..Default::default()
        };
        let driver = spawn_driver(&op, &clock, cfg);
        let (a, m) = auth("p", 5, 3600);
        driver.track(a, m).await.unwrap();
        let id = DeferredAuthId::new("p");
        assert!(driver.cancel(&id).await);
        assert_eq!(driver.wait(&id).await, Ok(Outcome::Cancelled));
        clock.advance(Duration::from_secs(101));
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(driver.wait(&id).await, Err(WaitError::Unknown));
    }

    #[tokio::test]
    async fn stops_when_the_handle_is_dropped() {
        let clock = Arc::new(ManualClock::new(T0));
        let op = fake(100);
        let driver = spawn_driver(&op, &clock, DriverConfig::default());
        let (a, m) = auth("s", 5, 3600);
        driver.track(a, m).await.unwrap();
        let tx = driver.tx.clone();
        let (otx, orx) = oneshot::channel();
        tx.send(Command::Wait(DeferredAuthId::new("s"), otx))
            .ok()
            .unwrap();
        drop(tx);
        drop(driver);
        assert_eq!(orx.await.unwrap(), Err(WaitError::Stopped));
    }
}
