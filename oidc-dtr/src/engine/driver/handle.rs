//! The application side of the driver task ([`DriverHandle`]): the
//! commands it sends the task, and the ping sink the ping receiver calls.

use std::collections::BinaryHeap;
use std::fmt;
use std::sync::{Arc, Weak};

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinSet;

use crate::engine::stats::{Counters, EngineStats};
use crate::error::WaitError;
use crate::ping::PingVerdict;
use crate::proto::exchange::DeferredAuthentication;
use crate::proto::poll::{Outcome, PollMachine};
use crate::random::RandomSource;
use crate::secret::DeferredId;
use crate::time::{Clock, UnixTime};

use super::*;

pub(super) enum Command<T> {
    Ping(DeferredId, Vec<u8>, oneshot::Sender<PingVerdict>),
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
    Ack(DeferredId, oneshot::Sender<bool>),
    Undelivered(oneshot::Sender<Vec<Delivery<T>>>),
    Wake(DeferredId, oneshot::Sender<bool>),
    Cancel(DeferredId, oneshot::Sender<bool>),
    Wait(DeferredId, oneshot::Sender<Result<Outcome<T>, WaitError>>),
    Status(DeferredId, oneshot::Sender<Option<PollStatus>>),
    Get(DeferredId, oneshot::Sender<Option<Tracked>>),
    Idle(oneshot::Sender<bool>),
    /// Drop an authentication without an outcome (another instance of the
    /// fleet took it over): no more polls, no writes, no delivery.
    Forget(DeferredId),
    /// Stop sending polls, let the ones in flight finish and their writes
    /// reach the store, then stop; answered when all that is done.
    Shutdown(oneshot::Sender<()>),
}

/// The application side of the driver task.
pub(crate) struct DriverHandle<T> {
    pub(super) tx: mpsc::UnboundedSender<Command<T>>,
    pub(super) events: broadcast::Sender<PollEvent<T>>,
    pub(super) counters: Arc<Counters>,
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
            entries: KeyMap::default(),
            keys: IdIndex::new(),
            timers: BinaryHeap::new(),
            in_flight: JoinSet::new(),
            task_keys: KeyMap::default(),
            next_key: 0,
            persist,
            stored_rx,
            last_store_purge: UnixTime::EPOCH,
            persist_done: Some(persist_done),
            stopping: None,
            counters: counters.clone(),
            scheduled: None,
            room,
            orphans: KeyMap::default(),
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
    pub(crate) async fn ack(&self, id: &DeferredId) -> bool {
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
    pub(crate) async fn wake(&self, id: &DeferredId) -> bool {
        self.ask(|tx| Command::Wake(id.clone(), tx))
            .await
            .unwrap_or(false)
    }

    /// Checks a ping's bearer token against the hash bound at the exchange
    /// (constant time, the same work for unknown ids) and wakes the
    /// authentication if it is correct and still pending.
    pub(crate) async fn ping(&self, id: DeferredId, token: Vec<u8>) -> PingVerdict {
        self.ask(|tx| Command::Ping(id, token, tx))
            .await
            .unwrap_or(PingVerdict::Rejected)
    }

    /// Cancels locally. False for an unknown or finished authentication.
    pub(crate) async fn cancel(&self, id: &DeferredId) -> bool {
        self.ask(|tx| Command::Cancel(id.clone(), tx))
            .await
            .unwrap_or(false)
    }

    /// Waits for the outcome. Cancel-safe: the outcome stays available.
    pub(crate) async fn wait(&self, id: &DeferredId) -> Result<Outcome<T>, WaitError> {
        self.ask(|tx| Command::Wait(id.clone(), tx))
            .await
            .ok_or(WaitError::Stopped)?
    }

    /// The polling status.
    pub(crate) async fn status(&self, id: &DeferredId) -> Option<PollStatus> {
        self.ask(|tx| Command::Status(id.clone(), tx))
            .await
            .flatten()
    }

    /// The authentication, its poll state, and whether it has ended.
    pub(crate) async fn get(&self, id: &DeferredId) -> Option<Tracked> {
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
    pub(crate) fn forget(&self, id: &DeferredId) {
        let _ = self.tx.send(Command::Forget(id.clone()));
    }

    /// Subscribes to progress and outcome events.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<PollEvent<T>> {
        self.events.subscribe()
    }
}

impl<T: Clone + Send + Sync + fmt::Debug + 'static> crate::ping::PingSink for DriverHandle<T> {
    fn ping(&self, id: DeferredId, token: Vec<u8>) -> BoxFuture<PingVerdict> {
        let this = self.clone();
        Box::pin(async move { DriverHandle::ping(&this, id, token).await })
    }
}

/// A ping authenticated by the peer's certificate: wakes a pending
/// authentication this instance tracks.
pub(crate) async fn transport_authenticated_local(
    driver: &crate::engine::driver::DriverHandle<crate::proto::token::TokenSet>,
    id: &crate::secret::DeferredId,
) -> crate::ping::PingVerdict {
    use crate::ping::PingVerdict;
    match driver.get(id).await {
        Some(t) if t.finished => PingVerdict::AlreadyFinished,
        Some(_) if driver.wake(id).await => PingVerdict::Woken,
        // Ended meanwhile.
        Some(_) => PingVerdict::AlreadyFinished,
        None => PingVerdict::Rejected,
    }
}
