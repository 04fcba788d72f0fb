//! Many instances on one shared store (a fleet): who polls what.
//!
//! With a store that [is shared](crate::store::Store::is_shared), a background task
//! of each instance claims due authentications in batches
//! ([`Store::claim_due`]), renews its leases every quarter of the TTL (but
//! not those its poll-state writes renewed meanwhile:
//! [`Store::update_state_renewing`]), lets
//! the driver poll only while [`Fleet::may_poll`] (a lease that outlasts the
//! poll's token request: the HTTP timeout, at most a third of the TTL less a
//! margin, plus that margin, by this instance's monotonic clock), and turns
//! the store's [`StoreNotice`]s into local wake-ups. State and outcome
//! writes are fenced by the lease ([`Store::update_state_leased`],
//! [`Store::finish_leased`]); a poll in flight when the lease is lost still
//! has its answer handled (tokens are stored through the lost-lease path,
//! unless an outcome already is, and handed over once). The design, as users
//! see it, is [the fleets guide](crate::guide::fleets): change both together.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, broadcast};

use crate::engine::driver::{BoxFuture, Delivery, DriverHandle, OutcomeId, WaitError};
use crate::error::StoreError;
use crate::ping::{PingSink, PingVerdict};
use crate::proto::poll::Outcome;
use crate::proto::token::TokenSet;
use crate::secret::{DeferredId, SecretHash};
use crate::store::{Lease, RecordKey, Store, StoreNotice};
use crate::time::Clock;

/// How an instance takes part in a fleet sharing one store (used only when
/// the store [is shared](crate::store::Store::is_shared), such as a
/// `PostgresStore`): [`FleetConfig::default`] and the setters, handed to
/// [`DtrClientBuilder::fleet`](crate::DtrClientBuilder::fleet).
///
/// ```
/// use std::time::Duration;
/// use oidc_dtr::poll::FleetConfig;
///
/// let fleet = FleetConfig::default()
///     .lease_ttl(Duration::from_secs(20))
///     .max_held(10_000)
///     .instance("web-1");
/// assert_ne!(fleet, FleetConfig::default());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FleetConfig {
    pub(crate) lease_ttl: Duration,
    pub(crate) claim_batch: usize,
    pub(crate) max_held: usize,
    pub(crate) delivery_visibility: Duration,
    pub(crate) instance: Option<String>,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            lease_ttl: Duration::from_secs(30),
            claim_batch: 256,
            max_held: 50_000,
            delivery_visibility: Duration::from_secs(60),
            instance: None,
        }
    }
}

impl FleetConfig {
    /// How long a claimed authentication stays this instance's without a
    /// renewal (at least 300 ms). Default: 30 s. An instance that dies is
    /// replaced after at most this long. A poll is sent only while the
    /// lease outlasts its token request: the HTTP timeout plus a twelfth
    /// of the TTL, or a third of the TTL if the HTTP timeout does not fit
    /// in it (the default: 10 s of a 30 s lease). Renewals come every
    /// quarter of the TTL (a poll-state write that renews the lease, as
    /// `PostgresStore`'s do, counts as one), so polls go out whenever
    /// renewals succeed. A
    /// request that outlives the lease anyway (an OP slower than a third of
    /// the TTL, a stalled instance) still has its answer handled: tokens
    /// are stored unless another instance stored an outcome first.
    #[must_use]
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl.max(Duration::from_millis(300));
        self
    }

    /// Authentications claimed per store round trip (at least 1).
    /// Default: 256.
    #[must_use]
    pub fn claim_batch(mut self, n: usize) -> Self {
        self.claim_batch = n.max(1);
        self
    }

    /// The most authentications this instance holds at once; the rest is
    /// left to other instances. Default: 50 000. Zero makes an instance
    /// that polls nothing itself but still answers `wait`, `undelivered`
    /// and pings for the fleet (a front end).
    #[must_use]
    pub fn max_held(mut self, n: usize) -> Self {
        self.max_held = n;
        self
    }

    /// How long an outcome handed out by
    /// [`DtrClient::undelivered`](crate::DtrClient::undelivered) is hidden
    /// from other consumers while waiting for its `ack`. Default: 60 s.
    #[must_use]
    pub fn delivery_visibility(mut self, d: Duration) -> Self {
        self.delivery_visibility = d;
        self
    }

    /// This instance's name in the store's leases (for logs and tools).
    /// Default: a random name.
    #[must_use]
    pub fn instance(mut self, name: impl Into<String>) -> Self {
        self.instance = Some(name.into());
        self
    }
}

struct Held {
    id: DeferredId,
    lease: Lease,
    /// Until when the lease is certainly ours (monotonic, local): the
    /// instant the claim or renewal was *sent*, plus the TTL.
    valid_until: Instant,
    /// A poll-state write renewed the lease since the last renewal round.
    written: bool,
}

/// How many fenced poll-state writes of one instance may be outstanding at
/// once. A store that groups the writes queued together into one statement
/// (`PostgresStore` does) needs many in flight to fill its batches: with
/// 16, an instance wrote at most 16 states per round trip, a few thousand a
/// second. A store that takes a connection per write is bounded by its own
/// pool.
const WRITE_SLOTS: usize = 256;

/// One instance's share of the fleet's work.
pub(crate) struct Fleet {
    store: Arc<dyn Store>,
    owner: String,
    config: FleetConfig,
    held: Mutex<HashMap<RecordKey, Held>>,
    /// Wake-ups for records nobody here held when they came: whoever
    /// claims such a record next wakes it.
    recent_wakes: Mutex<HashMap<RecordKey, Instant>>,
    stop: Notify,
    /// How long a poll's token request is expected to take at most (see
    /// [`FleetConfig::lease_ttl`]).
    request_budget: Duration,
    /// Poll-state writes run concurrently (one floor apart per id, so
    /// their order does not matter), at most [`WRITE_SLOTS`] at once.
    pub(crate) write_slots: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

impl Fleet {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        config: FleetConfig,
        owner: String,
        http_timeout: Duration,
    ) -> Arc<Self> {
        let request_budget = request_budget(config.lease_ttl, http_timeout);
        Arc::new(Fleet {
            request_budget,
            store,
            owner: config.instance.clone().unwrap_or(owner),
            config,
            held: Mutex::new(HashMap::new()),
            recent_wakes: Mutex::new(HashMap::new()),
            stop: Notify::new(),
            write_slots: Arc::new(tokio::sync::Semaphore::new(WRITE_SLOTS)),
        })
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<RecordKey, Held>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wakes(&self) -> std::sync::MutexGuard<'_, HashMap<RecordKey, Instant>> {
        self.recent_wakes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The instance's name in the leases.
    pub(crate) fn owner(&self) -> &str {
        &self.owner
    }

    pub(crate) fn config(&self) -> &FleetConfig {
        &self.config
    }

    /// The lease held on `id`, if any (valid or not: the store decides).
    pub(crate) fn lease(&self, id: &DeferredId) -> Option<Lease> {
        self.held().get(&RecordKey::of(id)).map(|h| h.lease)
    }

    /// Whether a poll may be sent: the lease is held (by this instance's
    /// monotonic clock, counted from when the claim or renewal was sent)
    /// for longer than the poll's request budget plus a margin.
    pub(crate) fn may_poll(&self, id: &DeferredId) -> bool {
        let margin = self.request_budget + lease_margin(self.config.lease_ttl);
        let ok = self
            .held()
            .get(&RecordKey::of(id))
            .is_some_and(|h| h.valid_until > Instant::now() + margin);
        if !ok {
            self.held().remove(&RecordKey::of(id));
        }
        ok
    }

    /// A state write sent at `sent` renewed the lease on `id` (if it is
    /// still the one held): it is certainly ours for a TTL from then, and
    /// the next renewal round leaves it out.
    pub(crate) fn renewed(&self, id: &DeferredId, lease: Lease, sent: Instant) {
        let until = sent + self.config.lease_ttl;
        if let Some(h) = self.held().get_mut(&RecordKey::of(id))
            && h.lease == lease
        {
            h.written = true;
            if h.valid_until < until {
                h.valid_until = until;
            }
        }
    }

    /// The authentication ended or was lost: no lease to renew any more.
    pub(crate) fn drop_lease(&self, id: &DeferredId) {
        self.held().remove(&RecordKey::of(id));
    }

    /// Stops the background task.
    pub(crate) fn stop(&self) {
        self.stop.notify_one();
    }

    /// Gives back every lease still held (at shutdown, once no poll is in
    /// flight), so other instances take over at once.
    pub(crate) async fn release_all(&self) {
        let held: Vec<(DeferredId, Lease)> =
            self.held().drain().map(|(_, h)| (h.id, h.lease)).collect();
        for (id, lease) in held {
            if let Err(e) = self.store.release_lease(&id, &self.owner, lease).await {
                tracing::debug!(deferred_auth_id = %id.fingerprint(), error = %e, "lease not released (it will expire)");
            }
        }
    }

    /// The background task: claims, renews, listens.
    pub(crate) async fn run(
        self: Arc<Self>,
        driver: DriverHandle<TokenSet>,
        clock: Arc<dyn Clock>,
    ) {
        let mut notices = self.store.notices();
        let mut tick = tokio::time::interval(self.config.lease_ttl / 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Renewals and claims run one round at a time in a task of their
        // own, so that a wake-up (a ping received by another instance) is
        // passed on at once, not after a round that waits for the store.
        let mut round: Option<tokio::task::JoinHandle<()>> = None;
        // Work asked for while a round ran: `Some(renew)`.
        let mut next: Option<bool> = None;
        loop {
            tokio::select! {
                _ = self.stop.notified() => {
                    if let Some(r) = round.take() {
                        r.abort();
                    }
                    return;
                }
                _ = tick.tick() => {
                    if round.is_none() {
                        round = Some(self.spawn_round(&driver, &clock, true));
                    } else {
                        next = Some(true);
                    }
                }
                _ = async {
                    match round.as_mut() {
                        Some(r) => {
                            let _ = r.await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                } => {
                    round = next.take().map(|renew| self.spawn_round(&driver, &clock, renew));
                }
                n = recv_notice(&mut notices) => match n {
                    Some(StoreNotice::Wake(key)) => {
                        let id = self.held().get(&key).map(|h| h.id.clone());
                        match id {
                            Some(id) => {
                                // Claimed by the round running now but not
                                // yet handed to the driver: the round wakes
                                // it when it does.
                                if !driver.wake(&id).await {
                                    self.remember_wake(key);
                                    if driver.wake(&id).await {
                                        self.wakes().remove(&key);
                                    }
                                }
                            }
                            None => {
                                // Nobody polls it yet: the ping made it due;
                                // claim now, and wake it if it is ours.
                                self.remember_wake(key);
                                if round.is_none() {
                                    round = Some(self.spawn_round(&driver, &clock, false));
                                } else {
                                    next = Some(next.unwrap_or(false));
                                }
                            }
                        }
                    }
                    Some(_) => {}
                    None => notices = None,
                },
            }
        }
    }

    /// A wake-up for a record not (yet) polled here: whoever claims it
    /// next wakes it.
    fn remember_wake(&self, key: RecordKey) {
        let mut w = self.wakes();
        let now = Instant::now();
        w.retain(|_, at| now.duration_since(*at) < self.config.lease_ttl * 2);
        w.insert(key, now);
    }

    /// One round: renew the leases held (if `renew`), then claim.
    fn spawn_round(
        self: &Arc<Self>,
        driver: &DriverHandle<TokenSet>,
        clock: &Arc<dyn Clock>,
        renew: bool,
    ) -> tokio::task::JoinHandle<()> {
        let (this, driver, clock) = (self.clone(), driver.clone(), clock.clone());
        tokio::spawn(async move {
            if renew {
                this.guarded("renewing leases", this.renew(&driver)).await;
            }
            this.guarded("claiming", this.claim(&driver, clock.as_ref()))
                .await;
        })
    }

    /// Runs one round of work whose store calls may panic (a store or its
    /// sealer is application code): a panic ends the round, not the task.
    async fn guarded(&self, what: &str, work: impl std::future::Future<Output = ()> + Send) {
        let work: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> =
            Box::pin(work);
        if crate::engine::guard::CatchUnwind(work).await.is_err() {
            tracing::error!("fleet: {what} panicked (in the store?); retrying at the next round");
        }
    }

    async fn renew(&self, driver: &DriverHandle<TokenSet>) {
        let now = Instant::now();
        let ids: Vec<DeferredId> = self
            .held()
            .values_mut()
            .filter_map(|h| {
                let due = renewal_due(h.written, h.valid_until, now, self.config.lease_ttl);
                h.written = false;
                due.then(|| h.id.clone())
            })
            .collect();
        for chunk in ids.chunks(1000) {
            let sent = Instant::now();
            match self
                .store
                .renew_leases(&self.owner, chunk, self.config.lease_ttl)
                .await
            {
                Ok(held) => {
                    let mut map = self.held();
                    for (id, ok) in chunk.iter().zip(held) {
                        let key = RecordKey::of(id);
                        if ok {
                            if let Some(h) = map.get_mut(&key) {
                                h.valid_until = sent + self.config.lease_ttl;
                            }
                        } else if map.remove(&key).is_some() {
                            driver.forget(id);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "renewing leases failed; polls stop when they lapse");
                    return;
                }
            }
        }
    }

    async fn claim(&self, driver: &DriverHandle<TokenSet>, clock: &dyn Clock) {
        loop {
            let room = self.config.max_held.saturating_sub(self.held().len());
            if room == 0 {
                return;
            }
            let limit = room.min(self.config.claim_batch);
            let until = clock.now().saturating_add(self.config.lease_ttl / 2);
            let sent = Instant::now();
            let batch = match self
                .store
                .claim_due_unheld(&self.owner, until, limit, self.config.lease_ttl)
                .await
            {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "claiming due authentications failed; retrying");
                    return;
                }
            };
            let n = batch.len();
            let mut fresh = Vec::new();
            {
                let mut map = self.held();
                for (r, lease) in batch {
                    if r.is_finished() {
                        continue;
                    }
                    let key = RecordKey::of(r.id());
                    match map.get_mut(&key) {
                        Some(h) if h.lease == lease => h.valid_until = sent + self.config.lease_ttl,
                        other => {
                            if other.is_some() {
                                // Lost and taken back: the local state is stale.
                                driver.forget(r.id());
                            }
                            map.insert(
                                key,
                                Held {
                                    id: r.id().clone(),
                                    lease,
                                    valid_until: sent + self.config.lease_ttl,
                                    written: false,
                                },
                            );
                            fresh.push(r);
                        }
                    }
                }
            }
            for r in fresh {
                let id = r.id().clone();
                let woken = self.wakes().remove(&RecordKey::of(&id)).is_some();
                tracing::debug!(deferred_auth_id = %id.fingerprint(), "claimed");
                // A full floor from now: a poll the previous owner sent
                // just before its lease lapsed is not followed too soon.
                if !matches!(driver.restore(r.auth, r.machine, None).await, Ok(true)) {
                    tracing::debug!(deferred_auth_id = %id.fingerprint(), "claimed but already tracked");
                }
                if woken {
                    driver.wake(&id).await;
                }
            }
            if n < limit {
                return;
            }
        }
    }
}

/// Whether a renewal round at `now` renews a lease certainly held until
/// `valid_until` (`written`: a poll-state write renewed it since the last
/// round). Every lease is renewed, as it always was, except one a write
/// renewed since the last round that still has three quarters of the TTL:
/// until the next round (a quarter later) it keeps at least half the TTL,
/// more than a poll needs (`may_poll`: at most a third), and it is renewed
/// then unless a write renews it meanwhile. An authentication polled more
/// often than every quarter of the TTL is never renewed on its own.
fn renewal_due(written: bool, valid_until: Instant, now: Instant, ttl: Duration) -> bool {
    !written || valid_until < now + ttl * 3 / 4
}

/// The slack kept between the end of a poll's request budget and the
/// lapse of the lease: the time between the check and the send, the
/// renewal's round trip, clocks that run at slightly different rates.
fn lease_margin(ttl: Duration) -> Duration {
    ttl / 12
}

/// How long a poll's token request is expected to take at most: the HTTP
/// timeout, but no more than a third of the TTL less the margin (renewals
/// every quarter of the TTL keep more than that left, so polls go out
/// whenever renewals succeed).
pub(crate) fn request_budget(ttl: Duration, http_timeout: Duration) -> Duration {
    http_timeout.min((ttl / 3).saturating_sub(lease_margin(ttl)))
}

async fn recv_notice(rx: &mut Option<broadcast::Receiver<StoreNotice>>) -> Option<StoreNotice> {
    let Some(r) = rx.as_mut() else {
        return std::future::pending().await;
    };
    match r.recv().await {
        Ok(n) => Some(n),
        // Missed notices: as after a reconnection, look again.
        Err(broadcast::error::RecvError::Lagged(_)) => Some(StoreNotice::Reconnected),
        Err(broadcast::error::RecvError::Closed) => None,
    }
}

/// `wait` on a shared store: the outcome, whoever polled.
pub(crate) async fn wait_in_store(
    store: &Arc<dyn Store>,
    id: &DeferredId,
) -> Result<Result<Outcome<TokenSet>, WaitError>, StoreError> {
    let key = RecordKey::of(id);
    // Subscribe first: an outcome stored between the read and the
    // subscription is not missed.
    let mut notices = store.notices();
    let mut pause = Duration::from_millis(50);
    loop {
        match store.get(id).await {
            Ok(None) => return Ok(Err(WaitError::Unknown)),
            Ok(Some(r)) => {
                if let Some(o) = r.outcome {
                    return Ok(Ok(o.outcome));
                }
                pause = Duration::from_millis(50);
            }
            Err(e) if e.is_retryable() => {
                tracing::debug!(error = %e, "wait: the store is unavailable; retrying");
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
        // Until a notice about this record, or a while (a missed notice).
        let deadline = tokio::time::sleep(if notices.is_some() {
            Duration::from_secs(2).max(pause)
        } else {
            pause.max(Duration::from_millis(500))
        });
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                n = recv_notice(&mut notices) => match n {
                    Some(StoreNotice::Finished(k)) if k == key => break,
                    Some(StoreNotice::Reconnected) => break,
                    Some(_) => {}
                    None => notices = None,
                },
            }
        }
    }
}

/// `undelivered` on a shared store: outcomes claimed for this consumer.
pub(crate) async fn claim_deliveries(
    store: &Arc<dyn Store>,
    visibility: Duration,
) -> Result<Vec<Delivery<TokenSet>>, StoreError> {
    let records = store.claim_undelivered(1000, visibility).await?;
    Ok(records
        .into_iter()
        .filter_map(|r| {
            let id = r.id().clone();
            let o = r.outcome?;
            Some(Delivery {
                outcome_id: OutcomeId::of(&id),
                id,
                outcome: o.outcome,
            })
        })
        .collect())
}

/// Pings on a fleet member: checked locally when this instance polls the
/// authentication, else against the notification-token hash in the store,
/// and then passed to the owner as a [`StoreNotice::Wake`].
pub(crate) struct FleetPingSink {
    pub(crate) driver: DriverHandle<TokenSet>,
    pub(crate) store: Arc<dyn Store>,
    /// Whether IETF callbacks without a bearer may wake a poll.
    pub(crate) accept_unauthenticated: bool,
}

impl PingSink for FleetPingSink {
    fn ping(&self, id: DeferredId, token: Vec<u8>) -> BoxFuture<PingVerdict> {
        let driver = self.driver.clone();
        let store = self.store.clone();
        Box::pin(async move {
            let local = driver.ping(id.clone(), token.clone()).await;
            if local != PingVerdict::Rejected {
                return local;
            }
            let record = match store.get(&id).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(deferred_auth_id = %id.fingerprint(), error = %e, "ping: the store is unavailable");
                    None
                }
            };
            let hash = record
                .as_ref()
                .and_then(|r| r.auth.notification_token_hash().cloned());
            // One hash and one comparison whatever the case.
            let matches = match &hash {
                Some(h) => h.matches(&token),
                None => {
                    let _ = unknown_hash().matches(&token);
                    false
                }
            };
            match record {
                Some(r) if matches => {
                    if r.is_finished() {
                        PingVerdict::AlreadyFinished
                    } else {
                        match store.publish_wake(&id).await {
                            Ok(()) => {
                                tracing::debug!(deferred_auth_id = %id.fingerprint(), "authenticated ping passed to the owner");
                                PingVerdict::Woken
                            }
                            Err(e) => {
                                // Still correct: the owner polls at its cadence.
                                tracing::warn!(deferred_auth_id = %id.fingerprint(), error = %e, "ping: could not wake the owner");
                                PingVerdict::Woken
                            }
                        }
                    }
                }
                _ => PingVerdict::Rejected,
            }
        })
    }

    fn advisory(&self, id: DeferredId) -> BoxFuture<PingVerdict> {
        let driver = self.driver.clone();
        let store = self.store.clone();
        let accept = self.accept_unauthenticated;
        Box::pin(async move {
            if !accept {
                return PingVerdict::Rejected;
            }
            // Only an unfinished IETF authentication that sent no
            // notification token, wherever it is polled.
            let record = store.get(&id).await.ok().flatten();
            let eligible = record.is_some_and(|r| {
                !r.is_finished()
                    && r.auth.profile() == crate::proto::profile::Profile::Ietf
                    && r.auth.notification_token_hash().is_none()
            });
            if !eligible {
                return PingVerdict::Rejected;
            }
            if !driver.wake(&id).await
                && let Err(e) = store.publish_wake(&id).await
            {
                tracing::warn!(deferred_auth_id = %id.fingerprint(), error = %e, "advisory callback: could not wake the owner");
            }
            PingVerdict::Woken
        })
    }

    fn transport_authenticated(&self, id: DeferredId) -> BoxFuture<PingVerdict> {
        let driver = self.driver.clone();
        let store = self.store.clone();
        Box::pin(async move {
            let local = crate::engine::driver::transport_authenticated_local(&driver, &id).await;
            if local != PingVerdict::Rejected {
                return local;
            }
            // Polled by another instance: pass the wake-up on.
            match store.get(&id).await.ok().flatten() {
                Some(r) if r.is_finished() => PingVerdict::AlreadyFinished,
                Some(_) => {
                    if let Err(e) = store.publish_wake(&id).await {
                        tracing::warn!(deferred_auth_id = %id.fingerprint(), error = %e, "ping: could not wake the owner");
                    }
                    PingVerdict::Woken
                }
                None => PingVerdict::Rejected,
            }
        })
    }
}

fn unknown_hash() -> &'static SecretHash {
    static DUMMY: std::sync::OnceLock<SecretHash> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| SecretHash::of(b"oidc-dtr: fleet ping for an unknown id"))
}

#[cfg(test)]
mod tests {
    use super::{Fleet, FleetConfig, Held, lease_margin, renewal_due, request_budget};
    use crate::error::{ErrorCode, OAuthError};
    use crate::proto::poll::{Action, Event, Outcome, PollConfig, PollMachine, PollResult};
    use crate::random::SystemRandom;
    use crate::secret::DeferredId;
    use crate::store::{Lease, MemoryStore, RecordKey};
    use crate::time::UnixTime;
    use std::sync::Arc;
    use std::time::Duration;
    use std::time::Instant;

    const T0: UnixTime = UnixTime::from_millis(1_800_000_000_000);

    /// A machine that was answered `authorization_pending` at `answered`
    /// (floor 5 s), as its last stored state says.
    fn answered_at(answered: UnixTime) -> PollMachine {
        let mut m = PollMachine::with_start(
            T0,
            Some(T0.saturating_add(Duration::from_secs(3600))),
            Duration::from_secs(5),
            PollConfig::default(),
        );
        let rng = SystemRandom;
        assert!(matches!(
            m.handle::<()>(Event::Timer, answered, &rng).action,
            Action::SendPoll
        ));
        m.handle::<()>(
            Event::Response(PollResult::OAuth(OAuthError::new(
                ErrorCode::AuthorizationPending,
            ))),
            answered,
            &rng,
        );
        m
    }

    /// The first answer after the takeover is `invalid_grant`.
    fn first_answer_invalid_grant(mut m: PollMachine) -> Outcome<()> {
        let rng = SystemRandom;
        let later = T0.saturating_add(Duration::from_secs(600));
        assert!(matches!(
            m.handle::<()>(Event::Timer, later, &rng).action,
            Action::SendPoll
        ));
        match m
            .handle::<()>(
                Event::Response(PollResult::OAuth(OAuthError::new(ErrorCode::InvalidGrant))),
                later,
                &rng,
            )
            .action
        {
            Action::Deliver(o) => o,
            other => panic!("{other:?}"),
        }
    }

    /// Issue 22, item 5: a takeover of a lease that lapsed after the
    /// previous holder could have sent a poll (a floor after its last
    /// stored answer, the earliest a ping brings it) reports a first
    /// `invalid_grant` as possibly lost in transit; one that lapsed before
    /// any poll could go out, as the refusal it is.
    #[test]
    fn a_lapsed_lease_marks_the_fate_of_a_possible_poll_unknown() {
        let answered = T0.saturating_add(Duration::from_secs(10));
        // The previous holder could poll from answered + 5 s on.
        for (lapsed_after, lost) in [(6, true), (60, true), (5, false), (2, false)] {
            let mut m = answered_at(answered);
            m.taken_over_from_lapsed_lease(
                answered.saturating_add(Duration::from_secs(lapsed_after)),
            );
            let o = first_answer_invalid_grant(m);
            assert_eq!(
                matches!(o, Outcome::PossiblyLostInTransit { .. }),
                lost,
                "lapsed {lapsed_after} s after the answer: {o:?}"
            );
        }
        // A pending answer after the takeover clears the mark.
        let mut m = answered_at(answered);
        m.taken_over_from_lapsed_lease(answered.saturating_add(Duration::from_secs(60)));
        let rng = SystemRandom;
        let t = T0.saturating_add(Duration::from_secs(100));
        m.handle::<()>(Event::Timer, t, &rng);
        m.handle::<()>(
            Event::Response(PollResult::OAuth(OAuthError::new(
                ErrorCode::AuthorizationPending,
            ))),
            t,
            &rng,
        );
        assert!(matches!(
            first_answer_invalid_grant(m),
            Outcome::Rejected(_)
        ));
    }

    #[test]
    fn a_lease_a_write_renewed_is_left_out_of_the_next_round() {
        let ttl = Duration::from_secs(8);
        let now = Instant::now();
        let s = Duration::from_secs;
        // Renewed by a write a second ago: 7 s left, left out.
        assert!(!renewal_due(true, now + s(7), now, ttl));
        assert!(!renewal_due(true, now + s(6), now, ttl));
        // Written, but long enough ago (the rounds ran late): renewed.
        assert!(renewal_due(true, now + s(5), now, ttl));
        // Not written since the last round: renewed, whatever is left.
        assert!(renewal_due(false, now + s(8), now, ttl));
        assert!(renewal_due(false, now + s(6), now, ttl));
        assert!(renewal_due(false, now, now, ttl));
        // Left out now, it still has half the TTL at the next round, more
        // than a poll needs (request budget plus margin, at most a third).
        let next = now + ttl / 4;
        let left = (now + ttl * 3 / 4) - next;
        assert_eq!(left, ttl / 2);
        assert!(left > request_budget(ttl, Duration::from_secs(3600)) + lease_margin(ttl));
    }

    #[test]
    fn a_renewing_write_extends_only_the_lease_it_was_sent_under() {
        let ttl = Duration::from_secs(8);
        let fleet = Fleet::new(
            Arc::new(MemoryStore::new()),
            FleetConfig::default().lease_ttl(ttl),
            "a".into(),
            Duration::from_secs(1),
        );
        let id = DeferredId::new("renewed");
        let start = Instant::now();
        fleet.held().insert(
            RecordKey::of(&id),
            Held {
                id: id.clone(),
                lease: Lease::new(2),
                valid_until: start + Duration::from_secs(1),
                written: false,
            },
        );
        let until = || fleet.held()[&RecordKey::of(&id)].valid_until;
        let written = || fleet.held()[&RecordKey::of(&id)].written;
        // Another epoch (lost and claimed again meanwhile): unchanged.
        fleet.renewed(&id, Lease::new(1), start);
        assert_eq!(until(), start + Duration::from_secs(1));
        assert!(!written());
        // The lease held: a TTL from when the write was sent.
        let sent = start + Duration::from_secs(2);
        fleet.renewed(&id, Lease::new(2), sent);
        assert_eq!(until(), sent + ttl);
        assert!(written());
        // An older write answered late never shortens it.
        fleet.renewed(&id, Lease::new(2), start);
        assert_eq!(until(), sent + ttl);
        // Not held: nothing to renew.
        fleet.drop_lease(&id);
        fleet.renewed(&id, Lease::new(2), sent);
        assert!(fleet.held().is_empty());
    }
}
