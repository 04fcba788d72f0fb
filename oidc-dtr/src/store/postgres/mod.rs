//! [`PostgresStore`]: one PostgreSQL database shared by a fleet of
//! instances, with leases for single flight.
//!
//! # Layout
//!
//! Everything lives in one schema (default `oidc_dtr`), created and
//! migrated by the SDK at [`PostgresStore::connect`]:
//!
//! | table        | holds |
//! |--------------|-------|
//! | `migrations` | one row per applied migration (`version`, `applied_at`) |
//! | `meta`       | the issuer and client id the store is bound to |
//! | `records`    | `key` (SHA-256 of the id), `due_at` / `finished_at` (ms, indexed), `delivered`, `body` (the [`Record`] as JSON, sealed if a [`Sealer`] is set), `lease_owner`, `lease_expires`, `lease_epoch`, `delivery_claimed_until`, `quarantined_at`, `quarantine_reason` |
//!
//! The body is the truth; the other columns are indexes. While an instance
//! holds a record's lease, `due_at` is an early bound of the next poll
//! rather than its exact time (see *Storage and vacuum* on
//! [`PostgresStore`]). The body holds
//! the record's issuer and client id and its delivery state: a row whose
//! body names another issuer or client than the store is bound to (a row
//! copied from another schema), or whose `delivered` column says "not
//! delivered" for an outcome the body says was delivered (a replay of
//! acknowledged tokens), is refused.
//!
//! # Bad rows
//!
//! A row that cannot be read or is refused is quarantined by whichever
//! read meets it (a claim, `due`, `load_active`, `get`, an outcome claim,
//! a write): `quarantined_at` and `quarantine_reason` are set and its
//! `due_at`, `finished_at` and lease cleared, in one statement that only
//! applies while the body is still the one that failed, so the row drops
//! out of every index and is never claimed again; the body is kept for
//! inspection. The rest of the batch is returned as usual. Every instance
//! hears a [`StoreNotice::Quarantined`]. To repair a row, fix it (or the
//! store's key) and call [`Store::release_quarantined`]; to discard it,
//! delete it. Neither needs a restart.
//!
//! Migrations run in one transaction under `pg_advisory_xact_lock`, so
//! instances that start together apply each migration once. A schema whose
//! version is newer than this release knows is refused with
//! [`StoreError::UnsupportedSchema`] (`record: None`).
//!
//! # Leases
//!
//! [`Store::claim_due`] takes due records with `FOR UPDATE SKIP LOCKED`
//! (instances claiming at once get disjoint batches, none waits) and sets
//! `lease_owner`, `lease_expires = now() + ttl` (the database's clock) and,
//! on a change of owner, `lease_epoch + 1`. The `*_leased` writes check
//! owner, epoch and expiry in the same transaction as the write. A record
//! taken over from a lease that expired without being released (its holder
//! died or lost the database) comes back with its poll state marked by
//! [`PollMachine::taken_over_from_lapsed_lease`]: the holder may have had a
//! poll in flight whose answer nobody read.
//!
//! # Files
//!
//! This file holds [`PostgresStore`], its options and connection, and the
//! [`Store`] methods; `schema` the migrations; `queries` the reads and
//! writes behind the methods (leases included); `batch` the fenced writes
//! grouped into one statement per batch; `decode` the decoding of
//! rows and the quarantine of the ones that do not read; `notify` the
//! LISTEN/NOTIFY notices of the fleet.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use super::{
    Lease, QuarantinedRecord, Record, RecordKey, Sealer, Store, StoreError, StoreFuture,
    StoreNotice, StoredOutcome, record_key,
};
use crate::proto::poll::PollMachine;
use crate::secret::DeferredId;
use crate::time::UnixTime;

mod batch;
mod decode;
mod notify;
mod queries;
mod schema;

use decode::{Key, key_of, quarantined_error};
use notify::{listen_task, notice_payload};
use schema::DB_SCHEMA_VERSION;

/// How to connect a [`PostgresStore`]: from [`PostgresStore::options`].
///
/// ```no_run
/// use std::time::Duration;
/// use oidc_dtr::store::PostgresStore;
///
/// # async fn run() -> Result<(), oidc_dtr::error::StoreError> {
/// let store = PostgresStore::options("postgres://dtr@db.internal/rp")
///     .schema("dtr")
///     .max_connections(8)
///     .timeout(Duration::from_secs(5))
///     .connect()
///     .await?;
/// # let _ = store;
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[must_use]
pub struct PostgresOptions {
    url: String,
    schema: String,
    sealer: Option<Arc<dyn Sealer>>,
    max_connections: usize,
    timeout: Duration,
}

impl fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may hold a password: not shown.
        f.debug_struct("PostgresOptions")
            .field("schema", &self.schema)
            .field("sealed", &self.sealer.is_some())
            .field("max_connections", &self.max_connections)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl PostgresOptions {
    /// The schema (default `oidc_dtr`): lowercase letters, digits and `_`,
    /// starting with a letter or `_`, at most 63 bytes. Instances of one
    /// fleet name the same schema; another client uses another one.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Seals every record with this [`Sealer`] (the key, whose SHA-256
    /// names the record, is the associated data).
    pub fn sealer(mut self, sealer: Arc<dyn Sealer>) -> Self {
        self.sealer = Some(sealer);
        self
    }

    /// The most connections this instance opens (default 8).
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// How long one store operation may take, connecting included, before
    /// it fails with [`StoreError::Unavailable`] (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Connects, creates or migrates the schema, and returns the store.
    ///
    /// Errors: [`StoreError::Other`] for a URL or schema name that cannot
    /// be used; [`StoreError::Unavailable`] (retryable) if the database
    /// cannot be reached; [`StoreError::UnsupportedSchema`] if the schema
    /// was migrated by a newer release.
    pub async fn connect(self) -> Result<PostgresStore, StoreError> {
        if !valid_schema_name(&self.schema) {
            return Err(StoreError::Other(
                "the PostgreSQL schema name must be 1 to 63 of [a-z0-9_], not starting with a digit"
                    .into(),
            ));
        }
        let mut pg: tokio_postgres::Config = self.url.parse().map_err(|_| {
            // The parser's message may quote the URL, password included.
            StoreError::Other("the PostgreSQL URL or connection string is not valid".into())
        })?;
        pg.connect_timeout(self.timeout);
        if pg.get_application_name().is_none() {
            pg.application_name("oidc-dtr");
        }
        let manager = Manager::from_config(
            pg.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(self.max_connections)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(self.timeout))
            .create_timeout(Some(self.timeout))
            .recycle_timeout(Some(self.timeout))
            .build()
            .map_err(|e| StoreError::Other(format!("could not build the connection pool: {e}")))?;
        let inner = Arc::new(Inner {
            pool,
            schema: format!("\"{}\"", self.schema),
            channel: self.schema.clone(),
            pg_config: pg,
            notices: OnceLock::new(),
            sealer: self.sealer,
            timeout: self.timeout,
            owner: OnceLock::new(),
            closed: AtomicBool::new(false),
            leased: batch::Leased::default(),
            state_batch: batch::Batcher::new(),
            outcome_batch: batch::Batcher::new(),
        });
        let i = inner.clone();
        inner.run(async move { i.migrate().await }).await?;
        Ok(PostgresStore { inner })
    }
}

fn valid_schema_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.as_bytes()[0].is_ascii_digit()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// A [`Store`] on PostgreSQL, shared by every instance of a fleet (feature
/// `postgres`).
///
/// Every method is one transaction and durable when it returns (PostgreSQL
/// commits with `fsync` unless the server is configured otherwise). The
/// leases of [`Store::claim_due`] make sure that one instance at a time
/// polls an authentication, and that an instance which lost its lease can
/// no longer write its state. Connection problems and timeouts are
/// [`StoreError::Unavailable`], which is retryable.
///
/// Cloning gives another handle on the same pool.
///
/// ```no_run
/// # async fn f() -> Result<(), oidc_dtr::error::StoreError> {
/// let store = oidc_dtr::store::PostgresStore::connect("postgres://rp@db.internal/rp").await?;
/// # Ok(()) }
/// ```
///
/// # Batched writes
///
/// The fenced writes of a fleet member ([`Store::update_state_leased`],
/// [`Store::finish_leased`]) are queued and sent together, the way a
/// database groups commits: a write goes at once when fewer than two
/// batches of its kind are running, otherwise with everything queued by the
/// time one returns (up to 500 writes), so a lone write is never held back
/// and batches grow with the load. A batch is sent
/// as one statement that checks each row's lease (owner, epoch, expiry on
/// the database's clock) and writes the rows that pass. Each call still
/// gets its own answer: a write whose lease was lost is refused with
/// [`StoreError::LeaseLost`] like before, and the rest of its batch is
/// written. An outcome write that returns `Ok` is committed; a batch cut
/// off (a dropped connection) fails every write in it with a retryable
/// error, and a retry of the same outcome is `Ok` whether or not the cut
/// batch committed. Writes are batched for the authentications this handle
/// claimed (it keeps their authentication, not their tokens, while it
/// holds the lease, to seal the new body without reading the row); others
/// take one transaction each. A batched poll-state write through
/// [`Store::update_state_renewing`] (what a fleet member uses) also
/// extends the lease by the TTL from the database's now, in the same
/// statement, so the fleet's separate renewal leaves that lease out: a
/// record polled more often than its lease is renewed costs one row
/// version per poll, none per renewal.
///
/// # Storage and vacuum
///
/// Every poll rewrites its row (the poll state is in the body), so the
/// table produces a dead row version per poll (and per lease renewal of a
/// record polled less often than every quarter of the lease TTL). The
/// store keeps that cheap: the table has `fillfactor = 70` (room in each
/// page for the next version of its rows; schema version 4 sets it on
/// tables created before, whose full pages get the room as their rows
/// move), and a poll-state write, a lease renewal or a claim changes no
/// indexed column (a state write leaves `due_at`, an early bound of the
/// next poll, alone unless the poll moves earlier or more than a minute
/// later). Such updates are HOT: no index entry is added, and the dead
/// version is pruned the next time its page is read, without waiting for
/// VACUUM. Inserts, outcomes, acknowledgments and purges do change indexes
/// and leave dead index entries for VACUUM.
///
/// What that gives, measured (10 000 authentications polled every second
/// by three instances, PostgreSQL 15, body about 1 070 bytes): 99 % of the
/// updates HOT, and the table with its indexes at 2.2–2.5 kB per
/// authentication whether autovacuum is on or off, after 10 s or 60 s of
/// polling. Pruning keeps the dead versions at a fraction of the live
/// rows; `VACUUM` marks their room reusable but does not shrink the
/// table, whose size is the live rows, the fillfactor's room and the
/// versions pruning has not reached yet. About once a minute a polled
/// row's `due_at` moves (the slack above), an update that is not HOT: its
/// old index entry is removed by the index's own cleanup of versions or by
/// VACUUM.
///
/// Autovacuum must stay on (the PostgreSQL default): without it the index
/// entries of non-HOT updates and the rows of purged authentications are
/// not reclaimed, and nothing freezes old rows before transaction ID
/// wraparound forces it. The schema sets no autovacuum parameters of its
/// own (those are the database administrator's policy): with the updates
/// HOT, the defaults vacuumed a 10 000-row table every minute. For a table
/// of millions of rows, whose defaults wait for a fifth of it to be dead,
/// vacuum it more often and let it work faster, for example:
///
/// ```sql
/// ALTER TABLE oidc_dtr.records SET (
///     autovacuum_vacuum_scale_factor = 0.02,
///     autovacuum_vacuum_threshold = 1000,
///     autovacuum_vacuum_insert_scale_factor = 0.05,
///     autovacuum_analyze_scale_factor = 0.05,
///     autovacuum_vacuum_cost_limit = 2000
/// );
/// ```
///
/// (`oidc_dtr` being the schema.) `pg_stat_user_tables` shows how it goes:
/// `n_tup_hot_upd` close to `n_tup_upd`, and `n_dead_tup` small against
/// `n_live_tup`.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    /// The quoted schema name.
    schema: String,
    /// The LISTEN/NOTIFY channel of the fleet (the bare schema name).
    channel: String,
    /// To open the dedicated LISTEN connection.
    pg_config: tokio_postgres::Config,
    /// Where the LISTEN task sends notices, once started.
    notices: OnceLock<tokio::sync::broadcast::Sender<StoreNotice>>,
    sealer: Option<Arc<dyn Sealer>>,
    timeout: Duration,
    /// The bound issuer and client id, once known (they never change).
    owner: OnceLock<(String, String)>,
    closed: AtomicBool,
    /// The authentications claimed through this handle, to seal fenced
    /// writes without reading their rows first.
    leased: batch::Leased,
    /// The queues of fenced poll-state and outcome writes.
    state_batch: batch::Batcher,
    outcome_batch: batch::Batcher,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.inner.schema)
            .field("sealed", &self.inner.sealer.is_some())
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Options to connect to the database at `url` (a `postgres://` URL or
    /// a `key=value` connection string), without TLS.
    pub fn options(url: impl Into<String>) -> PostgresOptions {
        PostgresOptions {
            url: url.into(),
            schema: "oidc_dtr".into(),
            sealer: None,
            max_connections: 8,
            timeout: Duration::from_secs(10),
        }
    }

    /// Connects with the default options (see [`PostgresOptions::connect`]).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::options(url).connect().await
    }

    /// The version of the database schema this release creates and reads.
    pub const DB_SCHEMA_VERSION: u32 = DB_SCHEMA_VERSION as u32;
}

/// A database error as a [`StoreError`], without the server's message
/// (which may quote values): the SQLSTATE code and where it happened.
fn pg_error(context: &str, e: &tokio_postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        let class = &code.code()[..2];
        // 08: connection exception; 57: operator intervention (shutdown,
        // cancel on timeout); 53: insufficient resources; 40: serialization
        // failure or deadlock; 55P03: lock not available.
        if matches!(class, "08" | "57" | "53" | "40") || *code == SqlState::LOCK_NOT_AVAILABLE {
            return StoreError::Unavailable(format!("{context}: SQLSTATE {}", code.code()));
        }
        return StoreError::Other(format!("{context}: SQLSTATE {}", code.code()));
    }
    // No answer from the server: the connection failed, closed or timed out.
    StoreError::Unavailable(format!("{context}: {}", connection_problem(e)))
}

fn connection_problem(e: &tokio_postgres::Error) -> &'static str {
    if e.is_closed() {
        "the connection was closed"
    } else {
        "could not talk to the database"
    }
}

fn pool_error(e: PoolError) -> StoreError {
    match e {
        PoolError::Timeout(_) => {
            StoreError::Unavailable("timed out waiting for a database connection".into())
        }
        PoolError::Backend(e) => pg_error("connecting", &e),
        PoolError::Closed => StoreError::Closed,
        other => StoreError::Unavailable(format!("connection pool: {other}")),
    }
}

fn ms(t: UnixTime) -> i64 {
    i64::try_from(t.as_millis()).unwrap_or(i64::MAX)
}

fn ttl_secs(ttl: Duration) -> f64 {
    ttl.as_secs_f64()
}

impl Inner {
    fn sql(&self, template: &str) -> String {
        template.replace("{s}", &self.schema)
    }

    /// Runs one operation under the timeout, failing fast once closed.
    async fn run<T>(
        &self,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        match tokio::time::timeout(self.timeout, op).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Unavailable(format!(
                "no answer from the database within {:?}",
                self.timeout
            ))),
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(pool_error)
    }
}

impl PostgresStore {
    fn op<T: Send + 'static, F>(
        &self,
        f: impl FnOnce(Arc<Inner>) -> F,
    ) -> StoreFuture<Result<T, StoreError>>
    where
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let inner = self.inner.clone();
        let fut = f(inner.clone());
        Box::pin(async move { inner.run(fut).await })
    }
}

impl Store for PostgresStore {
    fn bind(&self, issuer: &str, client_id: &str) -> StoreFuture<Result<(), StoreError>> {
        let (issuer, client_id) = (issuer.to_owned(), client_id.to_owned());
        self.op(|i| async move { i.bind(issuer, client_id).await })
    }

    fn insert(&self, record: Record) -> StoreFuture<Result<(), StoreError>> {
        self.op(|i| async move { i.insert(record).await })
    }

    fn update_state(
        &self,
        id: &DeferredId,
        machine: PollMachine,
    ) -> StoreFuture<Result<(), StoreError>> {
        let id = id.clone();
        self.op(|i| async move { i.write(id, machine, None, None).await })
    }

    fn finish(
        &self,
        id: &DeferredId,
        machine: PollMachine,
        outcome: StoredOutcome,
    ) -> StoreFuture<Result<(), StoreError>> {
        let id = id.clone();
        self.op(|i| async move { i.write(id, machine, Some(outcome), None).await })
    }

    fn mark_delivered(&self, id: &DeferredId) -> StoreFuture<Result<bool, StoreError>> {
        let key = record_key(id);
        self.op(move |i| async move { i.mark_delivered(key, false).await })
    }

    fn mark_delivered_once(&self, id: &DeferredId) -> StoreFuture<Result<bool, StoreError>> {
        let key = record_key(id);
        self.op(move |i| async move { i.mark_delivered(key, true).await })
    }

    fn get(&self, id: &DeferredId) -> StoreFuture<Result<Option<Record>, StoreError>> {
        let key = record_key(id);
        let fp = id.fingerprint();
        self.op(move |i| async move {
            let client = i.client().await?;
            let quarantined = client
                .query_opt(
                    &i.sql(
                        "SELECT 1 FROM {s}.records WHERE key = $1 AND quarantined_at IS NOT NULL",
                    ),
                    &[&&key[..]],
                )
                .await
                .map_err(|e| pg_error("reading", &e))?;
            drop(client);
            if quarantined.is_some() {
                return Err(quarantined_error(fp));
            }
            let (mut v, mut bad) = i
                .query_records(
                    "SELECT key, body, delivered FROM {s}.records
                     WHERE key = $1 AND quarantined_at IS NULL",
                    &[&&key[..]],
                )
                .await?;
            // The one record asked for did not read: say why.
            match bad.pop() {
                Some(e) => Err(e),
                None => Ok(v.pop()),
            }
        })
    }

    fn due(&self, until: UnixTime, limit: usize) -> StoreFuture<Result<Vec<Record>, StoreError>> {
        self.op(move |i| async move {
            // The column is a lower bound of the due time while a lease is
            // held (see `batch`): the body decides, and orders.
            let mut due: Vec<Record> = i
                .query_records(
                    "SELECT key, body, delivered FROM {s}.records
                     WHERE due_at IS NOT NULL AND due_at <= $1",
                    &[&ms(until)],
                )
                .await?
                .0
                .into_iter()
                .filter(|r| r.due_at().is_some_and(|t| t <= until))
                .collect();
            due.sort_by_cached_key(|r| (r.due_at(), record_key(r.id())));
            due.truncate(limit);
            Ok(due)
        })
    }

    fn load_active(&self) -> StoreFuture<Result<Vec<Record>, StoreError>> {
        self.op(|i| async move {
            Ok(i.query_records(
                "SELECT key, body, delivered FROM {s}.records
                 WHERE (finished_at IS NULL OR NOT delivered) AND quarantined_at IS NULL",
                &[],
            )
            .await?
            .0)
        })
    }

    fn quarantined(&self) -> StoreFuture<Result<Vec<QuarantinedRecord>, StoreError>> {
        self.op(|i| async move { i.quarantined().await })
    }

    fn release_quarantined(&self, key: RecordKey) -> StoreFuture<Result<bool, StoreError>> {
        self.op(move |i| async move { i.release_quarantined(key.0).await })
    }

    fn purge(&self, finished_before: UnixTime) -> StoreFuture<Result<usize, StoreError>> {
        self.op(move |i| async move {
            let client = i.client().await?;
            let n = client
                .execute(
                    &i.sql("DELETE FROM {s}.records WHERE finished_at < $1"),
                    &[&ms(finished_before)],
                )
                .await
                .map_err(|e| pg_error("purging", &e))?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }

    fn close(&self) -> StoreFuture<Result<(), StoreError>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            inner.closed.store(true, Ordering::Release);
            inner.pool.close();
            inner.leased.clear();
            Ok(())
        })
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn publish_wake(&self, id: &DeferredId) -> StoreFuture<Result<(), StoreError>> {
        let key = record_key(id);
        self.op(move |i| async move {
            let client = i.client().await?;
            // Due now (on the database's clock), so that an instance claims
            // it at once if nobody holds it; and the notice for the owner.
            client
                .execute(
                    &i.sql(
                        "WITH d AS (
                             UPDATE {s}.records
                             SET due_at = least(due_at,
                                 (extract(epoch FROM clock_timestamp()) * 1000)::bigint)
                             WHERE key = $3 AND due_at IS NOT NULL)
                         SELECT pg_notify($1, $2)",
                    ),
                    &[&i.channel, &notice_payload('w', &key), &&key[..]],
                )
                .await
                .map_err(|e| pg_error("notifying", &e))?;
            Ok(())
        })
    }

    fn notices(&self) -> Option<tokio::sync::broadcast::Receiver<StoreNotice>> {
        let mut started = false;
        let tx = self.inner.notices.get_or_init(|| {
            started = true;
            tokio::sync::broadcast::channel(4096).0
        });
        let rx = tx.subscribe();
        if started {
            // Needs a runtime: `notices` is called from the client's tasks.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(listen_task(Arc::downgrade(&self.inner), tx.clone()));
            }
        }
        Some(rx)
    }

    fn claim_undelivered(
        &self,
        limit: usize,
        visibility: Duration,
    ) -> StoreFuture<Result<Vec<Record>, StoreError>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.op(move |i| async move {
            Ok(i.query_records(
                "WITH c AS (
                     SELECT key FROM {s}.records
                     WHERE finished_at IS NOT NULL AND NOT delivered
                       AND (delivery_claimed_until IS NULL OR delivery_claimed_until <= now())
                     ORDER BY finished_at, key LIMIT $1
                     FOR UPDATE SKIP LOCKED)
                 UPDATE {s}.records r
                 SET delivery_claimed_until = now() + make_interval(secs => $2)
                 FROM c WHERE r.key = c.key
                 RETURNING r.key, r.body, r.delivered",
                &[&limit, &ttl_secs(visibility)],
            )
            .await?
            .0)
        })
    }

    fn claim_due(
        &self,
        owner: &str,
        until: UnixTime,
        limit: usize,
        ttl: Duration,
    ) -> StoreFuture<Result<Vec<(Record, Lease)>, StoreError>> {
        self.claim(owner, until, limit, ttl, true)
    }

    fn claim_due_unheld(
        &self,
        owner: &str,
        until: UnixTime,
        limit: usize,
        ttl: Duration,
    ) -> StoreFuture<Result<Vec<(Record, Lease)>, StoreError>> {
        self.claim(owner, until, limit, ttl, false)
    }

    fn renew_leases(
        &self,
        owner: &str,
        ids: &[DeferredId],
        ttl: Duration,
    ) -> StoreFuture<Result<Vec<bool>, StoreError>> {
        let owner = owner.to_owned();
        let keys: Vec<Key> = ids.iter().map(record_key).collect();
        self.op(move |i| async move {
            let client = i.client().await?;
            let params: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
            let rows = client
                .query(
                    &i.sql(
                        "UPDATE {s}.records SET lease_expires = now() + make_interval(secs => $3)
                         WHERE key = ANY($1) AND lease_owner = $2 AND lease_expires > now()
                           AND finished_at IS NULL
                         RETURNING key",
                    ),
                    &[&params, &owner, &ttl_secs(ttl)],
                )
                .await
                .map_err(|e| pg_error("renewing leases", &e))?;
            let held: std::collections::HashSet<Key> = rows
                .iter()
                .map(|r| key_of(r.get::<_, &[u8]>(0)))
                .collect::<Result<_, _>>()?;
            Ok(keys
                .iter()
                .map(|k| {
                    let ok = held.contains(k);
                    if !ok {
                        i.leased.forget(k);
                    }
                    ok
                })
                .collect())
        })
    }

    fn update_state_leased(
        &self,
        id: &DeferredId,
        machine: PollMachine,
        owner: &str,
        lease: Lease,
    ) -> StoreFuture<Result<(), StoreError>> {
        let id = id.clone();
        let owner = owner.to_owned();
        self.op(move |i| async move {
            i.write_fenced(id, machine, None, owner, lease, None)
                .await
                .map(|_| ())
        })
    }

    fn update_state_renewing(
        &self,
        id: &DeferredId,
        machine: PollMachine,
        owner: &str,
        lease: Lease,
        ttl: Duration,
    ) -> StoreFuture<Result<bool, StoreError>> {
        let id = id.clone();
        let owner = owner.to_owned();
        self.op(move |i| async move {
            i.write_fenced(id, machine, None, owner, lease, Some(ttl))
                .await
        })
    }

    fn finish_leased(
        &self,
        id: &DeferredId,
        machine: PollMachine,
        outcome: StoredOutcome,
        owner: &str,
        lease: Lease,
    ) -> StoreFuture<Result<(), StoreError>> {
        let id = id.clone();
        let owner = owner.to_owned();
        self.op(move |i| async move {
            i.write_fenced(id, machine, Some(outcome), owner, lease, None)
                .await
                .map(|_| ())
        })
    }

    fn release_lease(
        &self,
        id: &DeferredId,
        owner: &str,
        lease: Lease,
    ) -> StoreFuture<Result<bool, StoreError>> {
        let key = record_key(id);
        let owner = owner.to_owned();
        let epoch = i64::try_from(lease.epoch).unwrap_or(i64::MAX);
        self.op(move |i| async move {
            i.leased.forget(&key);
            let client = i.client().await?;
            let n = client
                .execute(
                    &i.sql(
                        "UPDATE {s}.records SET lease_owner = NULL, lease_expires = NULL
                         WHERE key = $1 AND lease_owner = $2 AND lease_epoch = $3",
                    ),
                    &[&&key[..], &owner, &epoch],
                )
                .await
                .map_err(|e| pg_error("releasing a lease", &e))?;
            Ok(n > 0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names() {
        assert!(valid_schema_name("oidc_dtr"));
        assert!(valid_schema_name("_t1"));
        assert!(!valid_schema_name(""));
        assert!(!valid_schema_name("1abc"));
        assert!(!valid_schema_name("a\"; DROP TABLE x; --"));
        assert!(!valid_schema_name("Upper"));
        assert!(!valid_schema_name(&"a".repeat(64)));
    }

    #[tokio::test]
    async fn a_bad_url_does_not_show_its_password() {
        let e = PostgresStore::connect("postgres://u:hunter2@[bad")
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Other(_)), "{e:?}");
        assert!(!format!("{e} {e:?}").contains("hunter2"));
        let o = PostgresStore::options("postgres://u:hunter2@h/db");
        assert!(!format!("{o:?}").contains("hunter2"));
    }

    #[tokio::test]
    async fn an_unreachable_database_is_unavailable_and_retryable() {
        // Port 1 on loopback: connection refused.
        let e = PostgresStore::options("postgres://u@127.0.0.1:1/db")
            .timeout(Duration::from_secs(5))
            .connect()
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
        assert!(e.is_retryable());
    }
}
