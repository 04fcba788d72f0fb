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
//! The body is the truth; the other columns are indexes. The body holds
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

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::{GenericClient, NoTls};

use super::records::{open_record, seal_record};
use super::{
    DELIVERY_STATE, Lease, QuarantinedRecord, Record, RecordKey, Sealer, Store, StoreError,
    StoreFuture, StoreNotice, StoredOutcome, check_owner, check_schema, is_bad_record,
    key_fingerprint, record_key, report_quarantined,
};
use crate::proto::poll::PollMachine;
use crate::secret::DeferredId;
use crate::time::UnixTime;

/// The newest database schema version this release creates and reads.
const DB_SCHEMA_VERSION: i32 = 3;

/// The migrations, in order: `MIGRATIONS[i]` takes the schema from version
/// `i` to `i + 1`. `{s}` is replaced by the quoted schema name.
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE {s}.meta (
        singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        issuer text NOT NULL,
        client_id text NOT NULL
    );
    CREATE TABLE {s}.records (
        key bytea PRIMARY KEY,
        due_at bigint,
        finished_at bigint,
        delivered boolean NOT NULL DEFAULT false,
        body bytea NOT NULL,
        lease_owner text,
        lease_expires timestamptz,
        lease_epoch bigint NOT NULL DEFAULT 0
    );
    CREATE INDEX records_due ON {s}.records (due_at, key) WHERE due_at IS NOT NULL;
    CREATE INDEX records_finished ON {s}.records (finished_at) WHERE finished_at IS NOT NULL;
",
    "
    ALTER TABLE {s}.records ADD COLUMN delivery_claimed_until timestamptz;
    CREATE INDEX records_undelivered ON {s}.records (finished_at, key)
        WHERE finished_at IS NOT NULL AND NOT delivered;
",
    // Version 3: quarantine. (The bodies of delivered rows are then
    // re-sealed with their delivery state: `reseal_delivered`.)
    "
    ALTER TABLE {s}.records ADD COLUMN quarantined_at timestamptz,
        ADD COLUMN quarantine_reason text;
    CREATE INDEX records_quarantined ON {s}.records (key) WHERE quarantined_at IS NOT NULL;
",
];

/// The migration after which the delivered rows' bodies are re-sealed.
const RESEAL_AFTER: usize = 2;

/// How to connect a [`PostgresStore`]: from [`PostgresStore::options`].
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

/// What a read or write of a quarantined record answers.
fn quarantined_error(fp: crate::secret::Fingerprint) -> StoreError {
    StoreError::corrupt(
        Some(fp),
        "the record is quarantined (see Store::quarantined and Store::release_quarantined)",
    )
}

fn ms(t: UnixTime) -> i64 {
    i64::try_from(t.as_millis()).unwrap_or(i64::MAX)
}

fn ttl_secs(ttl: Duration) -> f64 {
    ttl.as_secs_f64()
}

type Key = [u8; 32];

/// A NOTIFY payload: a kind letter and the record key in hex (never the id).
fn notice_payload(kind: char, key: &Key) -> String {
    let mut s = String::with_capacity(65);
    s.push(kind);
    for b in key {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn parse_notice(payload: &str) -> Option<StoreNotice> {
    let mut chars = payload.chars();
    let kind = chars.next()?;
    let hex = chars.as_str();
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, k) in key.iter_mut().enumerate() {
        *k = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    match kind {
        'w' => Some(StoreNotice::Wake(RecordKey(key))),
        'f' => Some(StoreNotice::Finished(RecordKey(key))),
        'q' => Some(StoreNotice::Quarantined(RecordKey(key))),
        _ => None,
    }
}

/// The LISTEN connection: forwards the fleet's notices to `tx`, and
/// reconnects (with a pause that grows to 5 s) whenever the connection
/// drops or stops answering, announcing [`StoreNotice::Reconnected`] each
/// time it is back. Ends when the store is dropped or closed, or nobody
/// listens any more.
async fn listen_task(
    inner: std::sync::Weak<Inner>,
    tx: tokio::sync::broadcast::Sender<StoreNotice>,
) {
    use tokio_postgres::AsyncMessage;
    let mut pause = Duration::from_millis(100);
    let mut first = true;
    loop {
        let Some((config, channel, timeout)) = inner.upgrade().and_then(|i| {
            (!i.closed.load(Ordering::Acquire))
                .then(|| (i.pg_config.clone(), i.channel.clone(), i.timeout))
        }) else {
            return;
        };
        let connected = tokio::time::timeout(timeout, config.connect(NoTls)).await;
        if let Ok(Ok((client, mut conn))) = connected {
            let (msg_tx, mut msg_rx) = tokio::sync::mpsc::unbounded_channel();
            let driver = tokio::spawn(async move {
                loop {
                    match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                        Some(Ok(AsyncMessage::Notification(n))) => {
                            if msg_tx.send(n.payload().to_owned()).is_err() {
                                return;
                            }
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => return,
                    }
                }
            });
            let listening = tokio::time::timeout(
                timeout,
                client.batch_execute(&format!("LISTEN \"{channel}\"")),
            )
            .await;
            if matches!(listening, Ok(Ok(()))) {
                pause = Duration::from_millis(100);
                if !first {
                    let _ = tx.send(StoreNotice::Reconnected);
                }
                first = false;
                // A connection cut without a FIN is only noticed by asking:
                // a cheap query every few seconds.
                let mut probe = tokio::time::interval(Duration::from_secs(2));
                loop {
                    tokio::select! {
                        m = msg_rx.recv() => match m {
                            Some(p) => {
                                if let Some(n) = parse_notice(&p)
                                    && tx.send(n).is_err()
                                {
                                    driver.abort();
                                    return;
                                }
                            }
                            None => break,
                        },
                        _ = probe.tick() => {
                            let alive = inner.upgrade().is_some_and(|i| !i.closed.load(Ordering::Acquire));
                            if !alive || tx.receiver_count() == 0 {
                                driver.abort();
                                return;
                            }
                            let ok = tokio::time::timeout(timeout.min(Duration::from_secs(5)), client.simple_query("SELECT 1")).await;
                            if !matches!(ok, Ok(Ok(_))) {
                                break;
                            }
                        }
                    }
                }
            }
            driver.abort();
            tracing::warn!("the PostgreSQL notification connection dropped; reconnecting");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

fn key_of(bytes: &[u8]) -> Result<Key, StoreError> {
    bytes.try_into().map_err(|_| {
        StoreError::corrupt(
            Some(key_fingerprint(&padded_key(bytes))),
            "a record key is not 32 bytes",
        )
    })
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

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let e = |c: &'static str| move |e: tokio_postgres::Error| pg_error(c, &e);
        let tx = client.transaction().await.map_err(e("migrating"))?;
        // One lock per schema name: instances starting together migrate
        // one after the other; the later ones find nothing to do.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 7261))",
            &[&self.schema],
        )
        .await
        .map_err(e("locking for migration"))?;
        tx.batch_execute(&self.sql(
            "CREATE SCHEMA IF NOT EXISTS {s};
             CREATE TABLE IF NOT EXISTS {s}.migrations (
                 version integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             );",
        ))
        .await
        .map_err(e("creating the schema"))?;
        let row = tx
            .query_one(
                &self.sql("SELECT coalesce(max(version), 0) FROM {s}.migrations"),
                &[],
            )
            .await
            .map_err(e("reading the schema version"))?;
        let current: i32 = row.get(0);
        if current > DB_SCHEMA_VERSION {
            // Leave the connection clean (the pool is dropped right after).
            let _ = tx.rollback().await;
            return Err(StoreError::UnsupportedSchema {
                found: u32::try_from(current).unwrap_or(u32::MAX),
                supported: DB_SCHEMA_VERSION as u32,
                record: None,
            });
        }
        for (i, m) in MIGRATIONS
            .iter()
            .enumerate()
            .skip(usize::try_from(current).unwrap_or(0))
        {
            tx.batch_execute(&self.sql(m))
                .await
                .map_err(e("applying a migration"))?;
            let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
            tx.execute(
                &self.sql("INSERT INTO {s}.migrations (version) VALUES ($1)"),
                &[&version],
            )
            .await
            .map_err(e("recording a migration"))?;
            if i == RESEAL_AFTER {
                self.reseal_delivered(&tx).await?;
            }
        }
        tx.commit().await.map_err(e("committing the migration"))?;
        // Known from now on, so that every read checks rows against it.
        let client = self.client().await?;
        self.bound_owner(&**client).await?;
        Ok(())
    }

    /// Until schema version 3 an acknowledgment only set the `delivered`
    /// column, so the bodies of delivered rows still say "not delivered":
    /// they are rewritten (re-sealed) with the delivery state, so that
    /// flipping the column back is refused. A row that does not open here
    /// (e.g. this instance has no key or another one) is left as it is:
    /// it reads as delivered, as before, and a read that cannot open it
    /// quarantines it.
    async fn reseal_delivered(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
    ) -> Result<(), StoreError> {
        let e = |c: &'static str| move |e: tokio_postgres::Error| pg_error(c, &e);
        let owner = tx
            .query_opt(&self.sql("SELECT issuer, client_id FROM {s}.meta"), &[])
            .await
            .map_err(e("reading the owner"))?
            .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)));
        let owner = owner.as_ref().map(|(i, c)| (i.as_str(), c.as_str()));
        let rows = tx
            .query(
                &self.sql("SELECT key, body FROM {s}.records WHERE delivered"),
                &[],
            )
            .await
            .map_err(e("reading delivered rows"))?;
        let mut resealed = 0usize;
        for row in rows {
            let Ok(key) = key_of(row.get::<_, &[u8]>("key")) else {
                continue;
            };
            let Ok(mut record) = open_record(self.sealer.as_deref(), &key, row.get("body"), owner)
            else {
                continue;
            };
            match record.outcome.as_mut() {
                Some(o) if !o.delivered => o.delivered = true,
                _ => continue,
            }
            let body = self.encode(&key, &record)?;
            tx.execute(
                &self.sql("UPDATE {s}.records SET body = $2 WHERE key = $1"),
                &[&&key[..], &body],
            )
            .await
            .map_err(e("re-sealing a delivered row"))?;
            resealed += 1;
        }
        if resealed > 0 {
            tracing::info!(
                rows = resealed,
                "delivered rows re-sealed with their delivery state"
            );
        }
        Ok(())
    }

    fn encode(&self, key: &Key, record: &Record) -> Result<Vec<u8>, StoreError> {
        seal_record(self.sealer.as_deref(), key, record)
    }

    /// Decodes a row's body, checking it against the store's owner and
    /// the `delivered` column. The body is the truth: a column that says
    /// "not delivered" for an outcome whose body says "delivered" was
    /// changed behind the store's back (to have acknowledged tokens handed
    /// out again) and is refused. The other way round (a row acknowledged
    /// before the body carried the state) reads as delivered.
    fn decode(&self, key: &Key, bytes: &[u8], delivered: bool) -> Result<Record, StoreError> {
        let owner = self.owner.get().map(|(i, c)| (i.as_str(), c.as_str()));
        let mut record = open_record(self.sealer.as_deref(), key, bytes, owner)?;
        if let Some(o) = record.outcome.as_mut() {
            if o.delivered && !delivered {
                return Err(StoreError::corrupt(
                    Some(record.fingerprint()),
                    format!(
                        "{DELIVERY_STATE} (the row says not delivered, its body says delivered)"
                    ),
                ));
            }
            o.delivered = delivered;
        }
        Ok(record)
    }

    fn decode_row(&self, row: &tokio_postgres::Row) -> Result<Record, StoreError> {
        let key = key_of(row.get::<_, &[u8]>("key"))?;
        self.decode(&key, row.get("body"), row.get("delivered"))
    }

    /// Decodes rows, setting the bad ones aside: each good record with its
    /// row's index, and a [`BadRow`] for each row that is not.
    fn decode_rows<'r>(
        &self,
        rows: &'r [tokio_postgres::Row],
    ) -> (Vec<(&'r tokio_postgres::Row, Record)>, Vec<BadRow>) {
        let mut good = Vec::with_capacity(rows.len());
        let mut bad = Vec::new();
        for row in rows {
            match self.decode_row(row) {
                Ok(r) => good.push((row, r)),
                Err(e) => bad.push(BadRow::of(row, e)),
            }
        }
        (good, bad)
    }

    /// Quarantines rows that did not read (see the module docs), each only
    /// while its body is still the one that failed, and reports the ones
    /// this call set aside. A row that is not bad in itself (the error
    /// says the database failed) is left alone.
    async fn quarantine(&self, bad: &[BadRow]) -> Result<(), StoreError> {
        let bad: Vec<&BadRow> = bad.iter().filter(|b| is_bad_record(&b.error)).collect();
        if bad.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        for b in bad {
            let rows = client
                .query(
                    &self.sql(
                        "WITH q AS (
                             UPDATE {s}.records SET quarantined_at = now(),
                                 quarantine_reason = $2, due_at = NULL, finished_at = NULL,
                                 lease_owner = NULL, lease_expires = NULL,
                                 delivery_claimed_until = NULL
                             WHERE key = $1 AND body = $3 AND quarantined_at IS NULL
                             RETURNING key)
                         SELECT pg_notify($4, $5) FROM q",
                    ),
                    &[
                        &b.raw_key,
                        &b.error.to_string(),
                        &b.body,
                        &self.channel,
                        &notice_payload('q', &b.key),
                    ],
                )
                .await
                .map_err(|e| pg_error("quarantining a record", &e))?;
            if !rows.is_empty() {
                report_quarantined("postgres", &b.key, &b.error);
            }
        }
        Ok(())
    }

    async fn bound_owner(
        &self,
        client: &impl GenericClient,
    ) -> Result<Option<(String, String)>, StoreError> {
        if let Some(o) = self.owner.get() {
            return Ok(Some(o.clone()));
        }
        let row = client
            .query_opt(&self.sql("SELECT issuer, client_id FROM {s}.meta"), &[])
            .await
            .map_err(|e| pg_error("reading the owner", &e))?;
        Ok(row.map(|r| {
            let o: (String, String) = (r.get(0), r.get(1));
            let _ = self.owner.set(o.clone());
            o
        }))
    }

    async fn bind(&self, issuer: String, client_id: String) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                &self.sql(
                    "INSERT INTO {s}.meta (issuer, client_id) VALUES ($1, $2)
                     ON CONFLICT (singleton) DO NOTHING",
                ),
                &[&issuer, &client_id],
            )
            .await
            .map_err(|e| pg_error("binding", &e))?;
        let bound = self.bound_owner(&**client).await?;
        check_owner(
            bound.as_ref().map(|(i, c)| (i.as_str(), c.as_str())),
            &issuer,
            &client_id,
        )
    }

    async fn insert(&self, record: Record) -> Result<(), StoreError> {
        check_schema(&record)?;
        let client = self.client().await?;
        let bound = self.bound_owner(&**client).await?;
        check_owner(
            bound.as_ref().map(|(i, c)| (i.as_str(), c.as_str())),
            record.auth.issuer(),
            record.auth.client_id(),
        )?;
        let key = record_key(record.id());
        let body = self.encode(&key, &record)?;
        let due = record.due_at().map(ms);
        let finished = record.finished_at().map(ms);
        let delivered = record.outcome.as_ref().is_some_and(|o| o.delivered);
        let n = client
            .execute(
                &self.sql(
                    "INSERT INTO {s}.records (key, due_at, finished_at, delivered, body)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key) DO NOTHING",
                ),
                &[&&key[..], &due, &finished, &delivered, &body],
            )
            .await
            .map_err(|e| pg_error("inserting", &e))?;
        if n == 0 {
            return Err(StoreError::Duplicate {
                record: record.fingerprint(),
            });
        }
        Ok(())
    }

    /// The read-modify-write of `update_state` and `finish`, in one
    /// transaction, fenced by `lease` when given.
    async fn write(
        &self,
        id: DeferredId,
        machine: PollMachine,
        outcome: Option<StoredOutcome>,
        lease: Option<(String, Lease)>,
    ) -> Result<(), StoreError> {
        let fp = id.fingerprint();
        let key = record_key(&id);
        let mut client = self.client().await?;
        let e = |c: &'static str| move |e: tokio_postgres::Error| pg_error(c, &e);
        let tx = client.transaction().await.map_err(e("writing"))?;
        let row = tx
            .query_opt(
                &self.sql(
                    "SELECT key, body, delivered, lease_owner, lease_epoch,
                            coalesce(lease_expires > now(), false) AS live,
                            quarantined_at IS NOT NULL AS quarantined
                     FROM {s}.records WHERE key = $1 FOR UPDATE",
                ),
                &[&&key[..]],
            )
            .await
            .map_err(e("reading for a write"))?
            .ok_or(StoreError::NotFound { record: fp })?;
        if row.get::<_, bool>("quarantined") {
            return Err(quarantined_error(fp));
        }
        let mut record = match self.decode_row(&row) {
            Ok(r) => r,
            Err(err) => {
                let bad = [BadRow::of(&row, err.clone())];
                drop(tx);
                drop(client);
                self.quarantine(&bad).await?;
                return Err(err);
            }
        };
        if let Some(existing) = &record.outcome {
            return match &outcome {
                Some(o) if o.outcome == existing.outcome => Ok(()),
                _ => Err(StoreError::AlreadyFinished { record: fp }),
            };
        }
        if let Some((owner, lease)) = &lease {
            let held_by: Option<&str> = row.get("lease_owner");
            let epoch: i64 = row.get("lease_epoch");
            let live: bool = row.get("live");
            if held_by != Some(owner.as_str()) || !live || u64::try_from(epoch) != Ok(lease.epoch) {
                return Err(StoreError::LeaseLost { record: fp });
            }
        }
        record.machine = machine;
        let delivered = outcome.as_ref().is_some_and(|o| o.delivered);
        record.outcome = outcome;
        let body = self.encode(&key, &record)?;
        let due = record.due_at().map(ms);
        let finished = record.finished_at().map(ms);
        tx.execute(
            &self.sql(
                "UPDATE {s}.records SET due_at = $2, finished_at = $3, delivered = $4, body = $5
                 WHERE key = $1",
            ),
            &[&&key[..], &due, &finished, &delivered, &body],
        )
        .await
        .map_err(e("writing"))?;
        if record.outcome.is_some() {
            // Delivered to listeners at commit, not before.
            tx.execute(
                "SELECT pg_notify($1, $2)",
                &[&self.channel, &notice_payload('f', &key)],
            )
            .await
            .map_err(e("notifying"))?;
        }
        tx.commit().await.map_err(e("committing"))
    }

    /// Reads records; bad rows are quarantined and left out (their
    /// errors are returned beside the records).
    async fn query_records(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<(Vec<Record>, Vec<StoreError>), StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(&self.sql(sql), params)
            .await
            .map_err(|e| pg_error("reading", &e))?;
        drop(client);
        let (good, bad) = self.decode_rows(&rows);
        self.quarantine(&bad).await?;
        // A row that failed for another reason than its contents fails the
        // call (nothing is skipped silently).
        if let Some(b) = bad.iter().find(|b| !is_bad_record(&b.error)) {
            return Err(b.error.clone());
        }
        Ok((
            good.into_iter().map(|(_, r)| r).collect(),
            bad.into_iter().map(|b| b.error).collect(),
        ))
    }

    /// `mark_delivered` (`once`: only from undelivered) as one
    /// read-modify-write: the body is re-sealed with the delivery state, so
    /// the `delivered` column cannot be set back behind the store's back.
    async fn mark_delivered(&self, key: Key, once: bool) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let e = |c: &'static str| move |e: tokio_postgres::Error| pg_error(c, &e);
        let tx = client.transaction().await.map_err(e("marking delivered"))?;
        let row = tx
            .query_opt(
                &self.sql(
                    "SELECT key, body, delivered FROM {s}.records
                     WHERE key = $1 AND finished_at IS NOT NULL AND quarantined_at IS NULL
                     FOR UPDATE",
                ),
                &[&&key[..]],
            )
            .await
            .map_err(e("reading for a delivery"))?;
        let Some(row) = row else {
            return Ok(false);
        };
        let mut record = match self.decode_row(&row) {
            Ok(r) => r,
            Err(err) => {
                let bad = [BadRow::of(&row, err.clone())];
                drop(tx);
                drop(client);
                self.quarantine(&bad).await?;
                return Err(err);
            }
        };
        let Some(o) = record.outcome.as_mut() else {
            return Ok(false);
        };
        if o.delivered {
            return Ok(!once);
        }
        o.delivered = true;
        let body = self.encode(&key, &record)?;
        tx.execute(
            &self.sql("UPDATE {s}.records SET delivered = true, body = $2 WHERE key = $1"),
            &[&&key[..], &body],
        )
        .await
        .map_err(e("marking delivered"))?;
        tx.commit().await.map_err(e("committing"))?;
        Ok(true)
    }

    async fn quarantined(&self) -> Result<Vec<QuarantinedRecord>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &self.sql(
                    "SELECT key, coalesce(quarantine_reason, '') FROM {s}.records
                     WHERE quarantined_at IS NOT NULL",
                ),
                &[],
            )
            .await
            .map_err(|e| pg_error("listing quarantined records", &e))?;
        Ok(rows
            .iter()
            .map(|r| {
                let raw: &[u8] = r.get(0);
                QuarantinedRecord::new(RecordKey(padded_key(raw)), r.get::<_, String>(1))
            })
            .collect())
    }

    async fn release_quarantined(&self, key: Key) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let e = |c: &'static str| move |e: tokio_postgres::Error| pg_error(c, &e);
        let tx = client.transaction().await.map_err(e("releasing"))?;
        let row = tx
            .query_opt(
                &self.sql(
                    "SELECT key, body, delivered FROM {s}.records
                     WHERE key = $1 AND quarantined_at IS NOT NULL FOR UPDATE",
                ),
                &[&&key[..]],
            )
            .await
            .map_err(e("reading a quarantined record"))?;
        let Some(row) = row else {
            return Ok(false);
        };
        let record = self.decode_row(&row)?;
        // Re-sealed as read now (with its delivery state), back in the
        // indexes, with a new epoch: whoever held it before is fenced.
        let body = self.encode(&key, &record)?;
        let delivered = record.outcome.as_ref().is_some_and(|o| o.delivered);
        tx.execute(
            &self.sql(
                "UPDATE {s}.records SET quarantined_at = NULL, quarantine_reason = NULL,
                     due_at = $2, finished_at = $3, delivered = $4, body = $5,
                     lease_owner = NULL, lease_expires = NULL, lease_epoch = lease_epoch + 1
                 WHERE key = $1",
            ),
            &[
                &&key[..],
                &record.due_at().map(ms),
                &record.finished_at().map(ms),
                &delivered,
                &body,
            ],
        )
        .await
        .map_err(e("releasing a quarantined record"))?;
        tx.commit().await.map_err(e("committing"))?;
        tracing::info!(deferred_auth_id = %record.fingerprint(), "a quarantined record was released");
        Ok(true)
    }
}

/// A row that did not read: what the quarantine needs to set it aside.
struct BadRow {
    /// The key column as stored (it may not even be 32 bytes).
    raw_key: Vec<u8>,
    /// The key, for notices and fingerprints.
    key: Key,
    /// The body that failed: the quarantine applies only while it is still
    /// this one (a row repaired meanwhile is not set aside).
    body: Vec<u8>,
    error: StoreError,
}

impl BadRow {
    fn of(row: &tokio_postgres::Row, error: StoreError) -> BadRow {
        let raw_key: Vec<u8> = row.get::<_, &[u8]>("key").to_vec();
        BadRow {
            key: padded_key(&raw_key),
            raw_key,
            body: row.get::<_, &[u8]>("body").to_vec(),
            error,
        }
    }
}

/// A key column as a 32-byte key (a malformed one, cut or padded with
/// zeros, only to name it).
fn padded_key(raw: &[u8]) -> Key {
    let mut key = [0u8; 32];
    let n = raw.len().min(32);
    key[..n].copy_from_slice(&raw[..n]);
    key
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

impl PostgresStore {
    /// `claim_due` (`own`: the owner's live leases are renewed and
    /// returned) or `claim_due_unheld` (they are skipped).
    fn claim(
        &self,
        owner: &str,
        until: UnixTime,
        limit: usize,
        ttl: Duration,
        own: bool,
    ) -> StoreFuture<Result<Vec<(Record, Lease)>, StoreError>> {
        let owner = owner.to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.op(move |i| async move {
            let client = i.client().await?;
            let rows = client
                .query(
                    &i.sql(
                        "WITH c AS (
                             SELECT key,
                                    CASE WHEN lease_owner IS NOT NULL AND lease_expires <= now()
                                    THEN (extract(epoch FROM lease_expires) * 1000)::bigint
                                    END AS lapsed_ms
                             FROM {s}.records
                             WHERE due_at IS NOT NULL AND due_at <= $1
                               AND (lease_owner IS NULL OR lease_expires <= now()
                                    OR ($5 AND lease_owner = $2))
                             ORDER BY due_at, key LIMIT $3
                             FOR UPDATE SKIP LOCKED)
                         UPDATE {s}.records r SET
                             lease_epoch = CASE
                                 WHEN r.lease_owner = $2 AND r.lease_expires > now()
                                 THEN r.lease_epoch ELSE r.lease_epoch + 1 END,
                             lease_owner = $2,
                             lease_expires = now() + make_interval(secs => $4)
                         FROM c WHERE r.key = c.key
                         RETURNING r.key, r.body, r.delivered, r.lease_epoch, r.due_at, c.lapsed_ms",
                    ),
                    &[&ms(until), &owner, &limit, &ttl_secs(ttl), &own],
                )
                .await
                .map_err(|e| pg_error("claiming due records", &e))?;
            drop(client);
            // A bad row is set aside; the rest of the batch is polled.
            let (good, bad) = i.decode_rows(&rows);
            i.quarantine(&bad).await?;
            let mut out: Vec<_> = good
                .into_iter()
                .map(|(r, record)| {
                    let epoch: i64 = r.get("lease_epoch");
                    let due: i64 = r.get("due_at");
                    let mut record = record;
                    // Taken over from a lease that expired without being
                    // released: its holder may have had a poll in flight
                    // (no write marks a poll before it is sent; this
                    // derives it from the lapsed lease and the state).
                    let lapsed: Option<i64> = r.get("lapsed_ms");
                    if let Some(at) = lapsed.and_then(|ms| u64::try_from(ms).ok()) {
                        record
                            .machine
                            .taken_over_from_lapsed_lease(UnixTime::from_millis(at));
                    }
                    (due, record, Lease::new(u64::try_from(epoch).unwrap_or(0)))
                })
                .collect();
            // RETURNING has no order: earliest first, like `due`.
            out.sort_by_key(|a| a.0);
            Ok(out.into_iter().map(|(_, r, l)| (r, l)).collect())
        })
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
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.op(move |i| async move {
            Ok(i.query_records(
                "SELECT key, body, delivered FROM {s}.records
                 WHERE due_at IS NOT NULL AND due_at <= $1
                 ORDER BY due_at, key LIMIT $2",
                &[&ms(until), &limit],
            )
            .await?
            .0)
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
            Ok(keys.iter().map(|k| held.contains(k)).collect())
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
        self.op(move |i| async move { i.write(id, machine, None, Some((owner, lease))).await })
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
            i.write(id, machine, Some(outcome), Some((owner, lease)))
                .await
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
