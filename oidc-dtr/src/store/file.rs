//! [`FileStore`]: the embedded durable store, one file, no server.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use redb::{
    Builder, Database, DatabaseError, Durability, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, Table, TableDefinition, TableHandle, WriteTransaction,
};
use tokio::sync::{Semaphore, oneshot};

use super::records::{open_machine, open_record, seal_machine, seal_record};
use super::{
    QuarantinedRecord, Record, RecordKey, SCHEMA_VERSION, Sealer, Store, StoreError, StoreFuture,
    StoreNotice, StoredOutcome, check_owner, check_schema, due_of, is_bad_record, key_fingerprint,
    record_key, report_quarantined,
};
use crate::proto::poll::PollMachine;
use crate::secret::DeferredAuthId;
use crate::secret::Fingerprint;
use crate::time::UnixTime;

type Key = [u8; 32];
type IndexKey = (u64, [u8; 32]);

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const RECORDS: TableDefinition<Key, &[u8]> = TableDefinition::new("records");
/// Every unfinished record at its due time; the value is its latest poll
/// state (sealed like the record), or empty while the record's own is
/// current. Keyed by due time, so that a state update, which moves a record
/// from one due time to a later one, writes pages near its neighbours in
/// time rather than one random page per record.
const PENDING: TableDefinition<IndexKey, &[u8]> = TableDefinition::new("pending");
const FINISHED: TableDefinition<IndexKey, ()> = TableDefinition::new("finished");
/// Records set aside because they could not be read (see
/// [`Store::quarantined`]): the reason, the record's bytes and its latest
/// poll state, as found (see [`QuarantineEntry`]).
const QUARANTINE: TableDefinition<Key, &[u8]> = TableDefinition::new("quarantine");
/// The index of unfinished records in files written before group commit
/// (moved to `pending` at open).
const LEGACY_DUE: TableDefinition<IndexKey, ()> = TableDefinition::new("due");

/// `meta["kind"]`: marks a file as ours.
const KIND: &[u8] = b"oidc-dtr store";
/// The plaintext of `meta["seal_check"]`, which tells a wrong key at open.
const SEAL_CHECK: &[u8] = b"oidc-dtr store seal check v1";
const SEAL_CHECK_AAD: &[u8] = b"oidc-dtr/meta/seal_check";

/// How long `update_state` may go without a durable commit.
const RELAXED_WINDOW: Duration = Duration::from_secs(1);
/// redb's page cache (its default is 1 GiB).
const CACHE_BYTES: usize = 64 * 1024 * 1024;
/// How long the writer waits for more state updates before it writes a
/// batch of fewer than `max_batch` (and no urgent write).
const LINGER: Duration = Duration::from_millis(20);
/// Writes queued per lane before callers wait (the default of
/// [`FileStoreOptions::queue_capacity`]).
const QUEUE_CAPACITY: usize = 8192;
/// State updates per transaction (the default of
/// [`FileStoreOptions::max_batch`]).
const MAX_BATCH: usize = 4096;

/// The embedded durable [`Store`]: one file, ACID, `fsync`ed, no server.
///
/// # Why redb
///
/// [redb](https://docs.rs/redb) is a pure-Rust, single-file, ACID key-value
/// store of copy-on-write B-trees. Every commit writes new pages, checksums
/// them, then flips a commit slot; an interrupted commit is detected by its
/// checksums at the next open and rolled back to the previous one, so a
/// crash or power loss never leaves a half-written record. With
/// `Durability::Immediate` (its default) a commit returns only after
/// `fsync`. It needs no C toolchain and no server; its file format is
/// stable across the 4.x releases.
///
/// # Layout
///
/// | table      | key                              | value |
/// |------------|----------------------------------|-------|
/// | `meta`     | `kind`, `schema`, `issuer`, `client_id`, `seal_check` | bytes |
/// | `records`  | SHA-256 of the `deferred_auth_id` | the [`Record`] as JSON, sealed if a [`Sealer`] is set |
/// | `pending`  | (due time in ms, record key)     | every unfinished record, at [`Record::due_at`]: its latest poll state (sealed like the record), or empty while the record's own is current |
/// | `finished` | (finish time in ms, record key)  | `()`: every finished record, for [`Store::purge`] |
/// | `quarantine` | SHA-256 of the `deferred_auth_id` | a record that could not be read: the reason, its bytes and its latest poll state, as found |
///
/// The id itself never appears in a key: it is inside the (sealable) value.
/// A record and its index entries always change in one transaction. A
/// state update rewrites only the record's `pending` entry (a few hundred
/// bytes, next to the entries due about the same time), not the record.
/// The store keeps the due time of every unfinished record in memory
/// (about 60 bytes each), read from `pending` at open.
///
/// # One writer, group commit
///
/// Every write goes through one writer thread and a bounded queue with two
/// lanes: state updates, and everything else (inserts, outcomes,
/// deliveries, purges). The writer takes all the queued writes of the
/// second lane and up to [`FileStoreOptions::max_batch`] state updates
/// (several updates of one record collapse into the last; when only a few
/// updates are queued it waits up to 20 ms for more) and writes them
/// in one transaction, with one `fsync` if any of them must be durable; each
/// caller's future resolves when that transaction is committed. An
/// outcome therefore waits for at most one batch, never for a long queue
/// of updates. When a lane holds [`FileStoreOptions::queue_capacity`]
/// writes, callers wait for room: memory stays bounded, and a poll driver
/// that writes faster than the disk takes it is slowed down. A write
/// refused on its own merits (unknown record, duplicate, finished) fails
/// alone; if the transaction itself fails, each write of the batch is
/// retried in its own.
///
/// # Durability
///
/// `bind`, `insert`, `finish`, `mark_delivered` and `purge` commit with
/// `Durability::Immediate`: when their future resolves `Ok`, the change is
/// on disk. `update_state` commits with `Durability::None` (no `fsync`)
/// unless the last durable commit is older than one second, in which case
/// it is durable too. A crash therefore loses at most about a second of
/// poll-state updates, never a record and never an outcome (the next
/// durable commit carries every earlier one with it). A resumed
/// authentication restarts from an older poll state: it may repeat a poll
/// it already made, which the client avoids by waiting a full floor after a
/// restart. (Relaxing `update_state` keeps 100 000 pending authentications
/// from costing an `fsync` per poll; bounding the relaxation keeps redb
/// reclaiming pages, which it does only at durable commits.) Closing the
/// store, or dropping its last handle, writes what is queued and makes the
/// last commit durable.
///
/// # Bad files
///
/// The file is checked when opened: every page's checksum is verified
/// (redb's integrity check), so a truncated, damaged or foreign file fails
/// with [`StoreError::Corrupt`], and the file is left byte for byte as it
/// was: nothing is repaired, rewritten or deleted. Should the storage engine still panic on bad bytes, the panic
/// is caught and reported as [`StoreError::Corrupt`] (this relies on
/// unwinding: with `panic = "abort"` the process stops instead).
///
/// A record that does not decode, does not open with the store's key or
/// belongs to another issuer or client is quarantined by the read that
/// meets it: moved, bytes unchanged, from `records` and `pending` to
/// `quarantine`, and reported (a [`StoreNotice::Quarantined`] to
/// [`Store::notices`] subscribers, the `oidc_dtr_store_quarantined_total`
/// counter, a warning naming its fingerprint); the read returns the other
/// records. [`Store::release_quarantined`] puts it back once it reads.
/// The delivery state of an outcome lives in the (sealed) record itself.
///
/// # Ownership
///
/// One `FileStore` owns its file: a second open, in this process or
/// another, fails with [`StoreError::Locked`] until the first is dropped.
/// Cloning it clones a handle to the same open file. Writes run on the
/// store's writer thread, reads on tokio's blocking pool, so the methods
/// need a tokio runtime.
#[derive(Clone)]
pub struct FileStore {
    /// `None` once closed. Operations clone the `Arc` for their time on the
    /// blocking pool; `close` waits for them to end before dropping the
    /// database, which releases the file.
    inner: Arc<std::sync::RwLock<Option<Arc<Inner>>>>,
    /// The writer thread and its queue: every write goes through it.
    writer: Arc<Writer>,
    path: PathBuf,
    sealed: bool,
}

/// Tuning of a [`FileStore`]'s writer: [`FileStoreOptions::default`] and
/// the setters.
///
/// ```
/// use oidc_dtr::FileStoreOptions;
///
/// let options = FileStoreOptions::default().max_batch(1024);
/// assert_ne!(options, FileStoreOptions::default());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileStoreOptions {
    pub(crate) queue_capacity: usize,
    pub(crate) max_batch: usize,
}

impl Default for FileStoreOptions {
    fn default() -> Self {
        FileStoreOptions {
            queue_capacity: QUEUE_CAPACITY,
            max_batch: MAX_BATCH,
        }
    }
}

impl FileStoreOptions {
    /// Writes waiting for the writer, per lane (state updates; everything
    /// else), before a caller waits for room (at least 1). Default: 8192.
    /// This bounds the memory a store can hold in queued writes: a driver
    /// whose polls answer faster than the disk takes their states slows its
    /// polls down.
    #[must_use]
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n.max(1);
        self
    }

    /// State updates written in one transaction, with one `fsync` when it
    /// is durable (at least 1). Default: 4096. Inserts, outcomes and
    /// deliveries go first, into the same transaction, so they wait at most
    /// for one batch, never for the whole queue.
    #[must_use]
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n.max(1);
        self
    }
}

struct Inner {
    db: Database,
    sealer: Option<Arc<dyn Sealer>>,
    path: PathBuf,
    last_durable: Mutex<Instant>,
    /// Whether the last commit was durable (else the writer makes one more
    /// before it stops).
    synced: std::sync::atomic::AtomicBool,
    /// The due time under which each unfinished record sits in `PENDING`.
    /// The writer holds the lock from a batch's first change to its commit;
    /// a reader takes it to pair a due time with a read snapshot.
    index: Mutex<HashMap<Key, u64>>,
    /// The issuer and client id the store is bound to, once known: every
    /// record read must name them.
    owner: Mutex<Option<(String, String)>>,
    /// Where quarantine notices go ([`Store::notices`]).
    notices: tokio::sync::broadcast::Sender<StoreNotice>,
    /// Records quarantined by the batch being written, reported once it
    /// is committed.
    quarantined_now: Mutex<Vec<(Key, StoreError)>>,
}

/// A record a read could not use: what the quarantine needs.
struct BadRecord {
    key: Key,
    /// The record's bytes as read: it is quarantined only if they are
    /// still the same (a record changed meanwhile is left alone).
    record: Vec<u8>,
    error: StoreError,
}

/// What a read returns: the records it could use, and the ones to set
/// aside.
type Read = (Vec<Record>, Vec<BadRecord>);

/// What a read answers once the bad records are set aside: the records
/// read, and why each of the others was.
type Sorted = (Vec<Record>, Vec<StoreError>);

/// The value of a `QUARANTINE` entry: `u32` (big-endian) length and bytes
/// of the reason, of the record, then the poll state (empty if none).
struct QuarantineEntry<'a> {
    reason: &'a str,
    record: &'a [u8],
    state: &'a [u8],
}

impl<'a> QuarantineEntry<'a> {
    fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(8 + self.reason.len() + self.record.len() + self.state.len());
        for part in [self.reason.as_bytes(), self.record] {
            out.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
            out.extend_from_slice(part);
        }
        out.extend_from_slice(self.state);
        out
    }

    fn decode(bytes: &'a [u8], key: &Key) -> Result<QuarantineEntry<'a>, StoreError> {
        let bad = || {
            StoreError::corrupt(
                Some(key_fingerprint(key)),
                "a quarantine entry is malformed",
            )
        };
        let mut rest = bytes;
        let mut part = || -> Result<&'a [u8], StoreError> {
            let (len, tail) = rest.split_first_chunk::<4>().ok_or_else(bad)?;
            let len = usize::try_from(u32::from_be_bytes(*len)).map_err(|_| bad())?;
            if tail.len() < len {
                return Err(bad());
            }
            let (p, tail) = tail.split_at(len);
            rest = tail;
            Ok(p)
        };
        let reason = std::str::from_utf8(part()?).map_err(|_| bad())?;
        let record = part()?;
        Ok(QuarantineEntry {
            reason,
            record,
            state: rest,
        })
    }
}

impl fmt::Debug for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStore")
            .field("path", &self.path)
            .field("sealed", &self.sealed)
            .finish_non_exhaustive()
    }
}

impl FileStore {
    /// Opens the store at `path`, creating the file if it does not exist
    /// (the directory must). Records are stored unencrypted: protect the
    /// file, or use [`open_with_sealer`](Self::open_with_sealer).
    ///
    /// This blocks: it verifies the checksum of every page of the file
    /// (milliseconds for thousands of records, longer for very large
    /// files). From async code, call it before starting the runtime or
    /// inside `tokio::task::spawn_blocking`.
    ///
    /// Errors: [`StoreError::Locked`] if the file is open elsewhere;
    /// [`StoreError::Corrupt`] for a truncated, damaged or foreign file;
    /// [`StoreError::UnsupportedSchema`] for a store written by a newer
    /// release; [`StoreError::Sealing`] for an encrypted store;
    /// [`StoreError::Io`] if the file cannot be opened or created. A
    /// corrupt file is left exactly as it was, and no failed open changes a
    /// record.
    pub fn open(path: impl AsRef<Path>) -> Result<FileStore, StoreError> {
        Self::open_inner(path.as_ref(), None, FileStoreOptions::default())
    }

    /// Like [`open`](Self::open), with every record sealed by `sealer`
    /// (e.g. [`AesGcmSealer`](super::AesGcmSealer)). A store is created
    /// sealed or not, and stays so: opening it with another key, or
    /// opening a sealed store without a sealer (or an unsealed one that
    /// holds records with one), fails with [`StoreError::Sealing`].
    pub fn open_with_sealer(
        path: impl AsRef<Path>,
        sealer: Arc<dyn Sealer>,
    ) -> Result<FileStore, StoreError> {
        Self::open_inner(path.as_ref(), Some(sealer), FileStoreOptions::default())
    }

    /// Like [`open`](Self::open) (with a `sealer`:
    /// [`open_with_sealer`](Self::open_with_sealer)), with the writer tuned
    /// by `options`.
    pub fn open_with_options(
        path: impl AsRef<Path>,
        sealer: Option<Arc<dyn Sealer>>,
        options: FileStoreOptions,
    ) -> Result<FileStore, StoreError> {
        Self::open_inner(path.as_ref(), sealer, options)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open database, or [`StoreError::Closed`].
    fn open_inner_arc(&self) -> Result<Arc<Inner>, StoreError> {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(StoreError::Closed)
    }

    #[cfg(test)]
    fn inner(&self) -> Arc<Inner> {
        self.open_inner_arc().unwrap()
    }

    fn open_inner(
        path: &Path,
        sealer: Option<Arc<dyn Sealer>>,
        options: FileStoreOptions,
    ) -> Result<FileStore, StoreError> {
        let owned = path.to_path_buf();
        let opened = catch_unwind(AssertUnwindSafe(move || {
            let mut builder = Builder::new();
            builder
                .set_check_integrity_on_open(true)
                .set_cache_size(CACHE_BYTES);
            match std::fs::metadata(&owned) {
                // A file that exists is a store or is not: an empty one
                // (truncated, or made by something else) must not silently
                // become a new, empty store. The store never leaves an empty
                // file behind itself (see `create_new`).
                Ok(meta) if meta.len() == 0 => {
                    return Err(StoreError::corrupt(
                        None,
                        "the file exists but is empty (a truncated store?)",
                    ));
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    create_new(&mut builder, &owned, sealer.clone())?;
                }
                Err(e) => return Err(StoreError::from(e)),
            }
            let db = builder.create(&owned).map_err(|e| open_error(e, &owned))?;
            let inner = Inner::new(db, sealer, owned);
            inner.init()?;
            inner.load_index()?;
            Ok(inner)
        }));
        match opened {
            Ok(Ok(inner)) => {
                let inner = Arc::new(inner);
                let writer = Writer::start(inner.clone(), &options)?;
                Ok(FileStore {
                    path: inner.path.clone(),
                    sealed: inner.sealer.is_some(),
                    inner: Arc::new(std::sync::RwLock::new(Some(inner))),
                    writer: Arc::new(writer),
                })
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(engine_panicked()),
        }
    }

    /// Runs `f` on the blocking pool; a panic in the storage engine
    /// becomes [`StoreError::Corrupt`].
    fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<Result<T, StoreError>> {
        let inner = self.open_inner_arc();
        Box::pin(async move {
            let inner = inner?;
            match tokio::task::spawn_blocking(move || f(&inner)).await {
                Ok(r) => r,
                Err(e) if e.is_panic() => Err(engine_panicked()),
                Err(_) => Err(StoreError::Other(
                    "the store operation was cancelled (the runtime is shutting down)".into(),
                )),
            }
        })
    }
}

/// Creates a new store file: built and initialised under a temporary name,
/// then renamed into place, so that `path` never exists as an empty or
/// half-made file (an empty file at `path` is then never the store's own).
fn create_new(
    builder: &mut Builder,
    path: &Path,
    sealer: Option<Arc<dyn Sealer>>,
) -> Result<(), StoreError> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".creating");
    let tmp = path.with_file_name(name);
    // A leftover from a crash during an earlier creation holds nothing.
    let _ = std::fs::remove_file(&tmp);
    let db = builder.create(&tmp).map_err(|e| open_error(e, &tmp))?;
    let inner = Inner::new(db, sealer, tmp.clone());
    inner.init()?;
    drop(inner);
    std::fs::rename(&tmp, path).map_err(StoreError::from)
}

fn engine_panicked() -> StoreError {
    StoreError::corrupt(
        None,
        "the storage engine failed on the file's contents (a damaged file?)",
    )
}

/// Maps an error from opening the database.
fn open_error(e: DatabaseError, path: &Path) -> StoreError {
    match e {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
            StoreError::Locked {
                path: path.to_path_buf(),
            }
        }
        DatabaseError::UpgradeRequired(v) => StoreError::Other(format!(
            "the store file uses redb file format {v}, which this release cannot read"
        )),
        other => db_error(other),
    }
}

/// Maps any redb error. redb's messages name no keys or values, so they
/// carry no secret.
fn db_error(e: impl Into<redb::Error>) -> StoreError {
    use std::io::ErrorKind;
    match e.into() {
        redb::Error::Corrupted(detail) => StoreError::corrupt(None, detail),
        redb::Error::Io(e)
            if matches!(e.kind(), ErrorKind::InvalidData | ErrorKind::UnexpectedEof) =>
        {
            StoreError::corrupt(None, format!("not a readable store file: {e}"))
        }
        redb::Error::Io(e) => StoreError::from(e),
        redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch => {
            StoreError::Other("the store file is locked".into())
        }
        e @ (redb::Error::TableTypeMismatch { .. }
        | redb::Error::TableIsMultimap(_)
        | redb::Error::TableIsNotMultimap(_)
        | redb::Error::TypeDefinitionChanged { .. }) => {
            StoreError::corrupt(None, format!("not an oidc-dtr store file: {e}"))
        }
        other => StoreError::Other(other.to_string()),
    }
}

fn utf8(bytes: &[u8], what: &str) -> Result<String, StoreError> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| StoreError::corrupt(None, format!("the store's {what} is not UTF-8")))
}

impl Inner {
    /// Checks (or, for a new file, writes) the `meta` table.
    fn init(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_error)?;
        {
            let mut meta = txn.open_table(META).map_err(db_error)?;
            let kind = meta
                .get("kind")
                .map_err(db_error)?
                .map(|g| g.value().to_vec());
            match kind {
                Some(k) if k == KIND => {}
                Some(_) => {
                    return Err(StoreError::corrupt(None, "not an oidc-dtr store file"));
                }
                None => {
                    // A new file, or somebody else's redb database.
                    let foreign = txn
                        .list_tables()
                        .map_err(db_error)?
                        .any(|t| t.name() != META.name())
                        || !meta.is_empty().map_err(db_error)?;
                    if foreign {
                        return Err(StoreError::corrupt(None, "not an oidc-dtr store file"));
                    }
                    meta.insert("kind", KIND).map_err(db_error)?;
                    meta.insert("schema", SCHEMA_VERSION.to_be_bytes().as_slice())
                        .map_err(db_error)?;
                }
            }
            let schema = meta
                .get("schema")
                .map_err(db_error)?
                .map(|g| g.value().to_vec())
                .ok_or_else(|| StoreError::corrupt(None, "the store has no schema version"))?;
            let schema: [u8; 4] = schema.try_into().map_err(|_| {
                StoreError::corrupt(None, "the store's schema version is malformed")
            })?;
            let schema = u32::from_be_bytes(schema);
            if schema != SCHEMA_VERSION {
                return Err(StoreError::UnsupportedSchema {
                    found: schema,
                    supported: SCHEMA_VERSION,
                    record: None,
                });
            }

            *self.owner.lock().unwrap_or_else(|e| e.into_inner()) = Self::owner(&meta)?;
            let records = txn.open_table(RECORDS).map_err(db_error)?;
            let mut pending = txn.open_table(PENDING).map_err(db_error)?;
            txn.open_table(FINISHED).map_err(db_error)?;
            // Added after the first release: created in older files.
            txn.open_table(QUARANTINE).map_err(db_error)?;
            // Files written before group commit index unfinished records in
            // `due` (same keys, no value): move them to `pending` with an
            // empty value ("the record's own poll state is current"), so no
            // pending authentication of such a file goes unseen.
            if txn
                .list_tables()
                .map_err(db_error)?
                .any(|t| t.name() == LEGACY_DUE.name())
            {
                {
                    let due = txn.open_table(LEGACY_DUE).map_err(db_error)?;
                    for entry in due.iter().map_err(db_error)? {
                        let (k, _) = entry.map_err(db_error)?;
                        pending.insert(k.value(), [].as_slice()).map_err(db_error)?;
                    }
                }
                txn.delete_table(LEGACY_DUE).map_err(db_error)?;
            }
            drop(pending);

            let check = meta
                .get("seal_check")
                .map_err(db_error)?
                .map(|g| g.value().to_vec());
            match (&self.sealer, check) {
                (Some(s), Some(check)) => {
                    let opened = s.open(&check, SEAL_CHECK_AAD).map_err(|_| {
                        StoreError::Sealing(
                            "the key does not open this store (a different key?)".into(),
                        )
                    })?;
                    if opened != SEAL_CHECK {
                        return Err(StoreError::Sealing(
                            "the key does not open this store (a different key?)".into(),
                        ));
                    }
                }
                (Some(s), None) => {
                    if !records.is_empty().map_err(db_error)? {
                        return Err(StoreError::Sealing(
                            "this store holds unencrypted records and cannot be opened \
                             with a sealer"
                                .into(),
                        ));
                    }
                    let sealed = s.seal(SEAL_CHECK, SEAL_CHECK_AAD)?;
                    meta.insert("seal_check", sealed.as_slice())
                        .map_err(db_error)?;
                }
                (None, Some(_)) => {
                    return Err(StoreError::Sealing(
                        "this store is encrypted: open it with its sealer".into(),
                    ));
                }
                (None, None) => {}
            }
        }
        self.commit(txn, true)
    }

    fn new(db: Database, sealer: Option<Arc<dyn Sealer>>, path: PathBuf) -> Self {
        Inner {
            db,
            sealer,
            path,
            last_durable: Mutex::new(Instant::now()),
            synced: std::sync::atomic::AtomicBool::new(true),
            index: Mutex::new(HashMap::new()),
            owner: Mutex::new(None),
            notices: tokio::sync::broadcast::channel(1024).0,
            quarantined_now: Mutex::new(Vec::new()),
        }
    }

    /// Reads the due time of every unfinished record into the in-memory
    /// index.
    fn load_index(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let pending = txn.open_table(PENDING).map_err(db_error)?;
        let mut index = HashMap::new();
        for entry in pending.iter().map_err(db_error)? {
            let (k, _) = entry.map_err(db_error)?;
            let (due, key) = k.value();
            if index.insert(key, due).is_some() {
                return Err(StoreError::corrupt(
                    Some(key_fingerprint(&key)),
                    "the record is due twice",
                ));
            }
        }
        *self.index.lock().unwrap_or_else(|e| e.into_inner()) = index;
        Ok(())
    }

    fn commit(&self, mut txn: WriteTransaction, durable: bool) -> Result<(), StoreError> {
        let mut last = self.last_durable.lock().unwrap_or_else(|e| e.into_inner());
        let durable = durable || last.elapsed() >= RELAXED_WINDOW;
        if !durable {
            txn.set_durability(Durability::None)
                .map_err(|e| StoreError::Other(e.to_string()))?;
        }
        txn.commit().map_err(db_error)?;
        self.synced
            .store(durable, std::sync::atomic::Ordering::Relaxed);
        if durable {
            *last = Instant::now();
        }
        Ok(())
    }

    /// A durable commit if the last one was not (at close).
    fn sync(&self) -> Result<(), StoreError> {
        if self.synced.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(db_error)?;
        self.commit(txn, true)
    }

    fn encode(&self, key: &Key, record: &Record) -> Result<Vec<u8>, StoreError> {
        seal_record(self.sealer.as_deref(), key, record)
    }

    fn decode(&self, key: &Key, bytes: &[u8]) -> Result<Record, StoreError> {
        let owner = self.owner.lock().unwrap_or_else(|e| e.into_inner()).clone();
        open_record(
            self.sealer.as_deref(),
            key,
            bytes,
            owner.as_ref().map(|(i, c)| (i.as_str(), c.as_str())),
        )
    }

    /// A record as read, with its latest poll state (`state`: the value of
    /// its `PENDING` entry, empty while the record's own is current).
    fn decode_with_state(
        &self,
        key: &Key,
        bytes: &[u8],
        state: Option<&[u8]>,
    ) -> Result<Record, StoreError> {
        let mut record = self.decode(key, bytes)?;
        if let Some(state) = state.filter(|s| !s.is_empty())
            && !record.is_finished()
        {
            record.machine = open_machine(self.sealer.as_deref(), key, state)?;
        }
        Ok(record)
    }

    fn owner(meta: &Table<&str, &[u8]>) -> Result<Option<(String, String)>, StoreError> {
        let issuer = meta.get("issuer").map_err(db_error)?;
        let client = meta.get("client_id").map_err(db_error)?;
        match (issuer, client) {
            (Some(i), Some(c)) => Ok(Some((
                utf8(i.value(), "issuer")?,
                utf8(c.value(), "client id")?,
            ))),
            (None, None) => Ok(None),
            _ => Err(StoreError::corrupt(
                None,
                "the store's owner is half recorded",
            )),
        }
    }

    /// Runs one batch of writes in one transaction: the urgent ones first,
    /// in order, then the state updates (the last of several for one record
    /// wins). Answers every caller once the transaction is committed. If
    /// the transaction as a whole fails, every write is retried in a
    /// transaction of its own, so that one bad write fails alone.
    fn run_batch(&self, urgent: Vec<Job>, updates: Vec<Job>) {
        let mut jobs = urgent;
        // Coalesce the updates: one write per record, answered to all.
        let mut slot_of: HashMap<Key, usize> = HashMap::new();
        let mut extra: Vec<(usize, oneshot::Sender<Result<Done, StoreError>>)> = Vec::new();
        for job in updates {
            let Op::Update { key, .. } = &job.op else {
                jobs.push(job);
                continue;
            };
            match slot_of.get(key) {
                Some(&i) => {
                    let old = std::mem::replace(&mut jobs[i], job);
                    extra.push((i, old.reply));
                }
                None => {
                    slot_of.insert(*key, jobs.len());
                    jobs.push(job);
                }
            }
        }
        let batched = catch_unwind(AssertUnwindSafe(|| self.try_batch(&jobs)));
        let answers: Vec<Result<Done, StoreError>> = match batched {
            Ok(Ok(answers)) => answers,
            // The whole transaction failed (or the engine panicked): each
            // write on its own.
            _ => jobs
                .iter()
                .map(|job| {
                    catch_unwind(AssertUnwindSafe(|| {
                        self.try_batch(std::slice::from_ref(job))
                    }))
                    .unwrap_or_else(|_| Err(engine_panicked()))
                    .and_then(|mut a| a.pop().unwrap_or_else(|| Err(engine_panicked())))
                })
                .collect(),
        };
        for (i, reply) in extra {
            let _ = reply.send(answers[i].clone());
        }
        for (job, answer) in jobs.into_iter().zip(answers) {
            let _ = job.reply.send(answer);
        }
    }

    /// The writes of `jobs` in one transaction: each job's answer, or the
    /// error that failed the transaction (nothing of it is written then).
    fn try_batch(&self, jobs: &[Job]) -> Result<Vec<Result<Done, StoreError>>, StoreError> {
        let durable = jobs.iter().any(|j| !matches!(j.op, Op::Update { .. }));
        self.quarantined_now
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        let txn = self.db.begin_write().map_err(db_error)?;
        let mut staged: HashMap<Key, Option<u64>> = HashMap::new();
        let mut answers = Vec::with_capacity(jobs.len());
        let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        {
            let mut t = Tables {
                meta: txn.open_table(META).map_err(db_error)?,
                records: txn.open_table(RECORDS).map_err(db_error)?,
                pending: txn.open_table(PENDING).map_err(db_error)?,
                finished: txn.open_table(FINISHED).map_err(db_error)?,
                quarantine: txn.open_table(QUARANTINE).map_err(db_error)?,
            };
            for job in jobs {
                let due = |key: &Key| match staged.get(key) {
                    Some(d) => *d,
                    None => index.get(key).copied(),
                };
                let answer = match &job.op {
                    Op::Bind { issuer, client_id } => self.op_bind(&mut t, issuer, client_id),
                    Op::Insert { record, value } => {
                        self.op_insert(&mut t, &mut staged, record, value)
                    }
                    Op::Update {
                        key,
                        fp,
                        due: new_due,
                        value,
                    } => {
                        let old = due(key);
                        self.op_update(&mut t, &mut staged, old, key, *fp, *new_due, value)
                    }
                    Op::Finish {
                        key,
                        fp,
                        machine,
                        outcome,
                    } => {
                        let old = due(key);
                        self.op_finish(&mut t, &mut staged, old, key, *fp, machine, outcome)
                    }
                    Op::MarkDelivered { key } => {
                        let old = due(key);
                        self.op_mark_delivered(&mut t, &mut staged, old, key)
                    }
                    Op::Purge(before) => self.op_purge(&mut t, *before),
                    Op::Quarantine { key, record, error } => {
                        let old = due(key);
                        self.op_quarantine(&mut t, &mut staged, old, key, Some(record), error)
                    }
                    Op::Release { key } => self.op_release(&mut t, &mut staged, key),
                };
                match answer {
                    Ok(done) => answers.push(Ok(done)),
                    Err(Fail::Refused(e)) => answers.push(Err(e)),
                    Err(Fail::Batch(e)) => return Err(e),
                }
            }
        }
        self.commit(txn, durable)?;
        for (key, due) in staged {
            match due {
                Some(d) => index.insert(key, d),
                None => index.remove(&key),
            };
        }
        let reports = std::mem::take(
            &mut *self
                .quarantined_now
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for (key, error) in reports {
            report_quarantined("file", &key, &error);
            let _ = self.notices.send(StoreNotice::Quarantined(RecordKey(key)));
        }
        Ok(answers)
    }

    /// Sets a record aside (see [`FileStore`]'s docs): moved with its
    /// latest poll state to `QUARANTINE`, out of `records`, `pending` and
    /// the due index. `expected`: the bytes the read that failed saw; if
    /// the record changed since, it is left alone (`Flag(false)`).
    #[allow(clippy::too_many_arguments)]
    fn op_quarantine(
        &self,
        t: &mut Tables<'_>,
        staged: &mut HashMap<Key, Option<u64>>,
        old_due: Option<u64>,
        key: &Key,
        expected: Option<&[u8]>,
        error: &StoreError,
    ) -> Result<Done, Fail> {
        let current = t
            .records
            .get(key)
            .map_err(db_error)?
            .map(|g| g.value().to_vec());
        let Some(current) = current else {
            return Ok(Done::Flag(false));
        };
        if expected.is_some_and(|e| e != current.as_slice()) {
            return Ok(Done::Flag(false));
        }
        let state = match old_due {
            Some(d) => t
                .pending
                .remove((d, *key))
                .map_err(fatal)?
                .map(|g| g.value().to_vec())
                .unwrap_or_default(),
            None => Vec::new(),
        };
        staged.insert(*key, None);
        t.records.remove(key).map_err(fatal)?;
        let reason = error.to_string();
        let entry = QuarantineEntry {
            reason: &reason,
            record: &current,
            state: &state,
        }
        .encode();
        t.quarantine.insert(key, entry.as_slice()).map_err(fatal)?;
        self.quarantined_now
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((*key, error.clone()));
        Ok(Done::Flag(true))
    }

    /// Puts a quarantined record back if it now reads: `Flag(true)`;
    /// `Flag(false)` if it is not quarantined; refused with the reason if
    /// it still does not read.
    fn op_release(
        &self,
        t: &mut Tables<'_>,
        staged: &mut HashMap<Key, Option<u64>>,
        key: &Key,
    ) -> Result<Done, Fail> {
        let entry = t
            .quarantine
            .get(key)
            .map_err(db_error)?
            .map(|g| g.value().to_vec());
        let Some(entry) = entry else {
            return Ok(Done::Flag(false));
        };
        let q = QuarantineEntry::decode(&entry, key)?;
        let record = self.decode_with_state(key, q.record, Some(q.state))?;
        if t.records.get(key).map_err(db_error)?.is_some() {
            return Err(Fail::Refused(StoreError::Duplicate {
                record: record.fingerprint(),
            }));
        }
        // Written back whole, its latest poll state included.
        let value = self.encode(key, &record)?;
        t.records.insert(key, value.as_slice()).map_err(fatal)?;
        if let Some(d) = record.due_at() {
            let d = d.as_millis();
            t.pending.insert((d, *key), [].as_slice()).map_err(fatal)?;
            staged.insert(*key, Some(d));
        }
        if let Some(f) = record.finished_at() {
            t.finished
                .insert((f.as_millis(), *key), ())
                .map_err(fatal)?;
        }
        t.quarantine.remove(key).map_err(fatal)?;
        tracing::info!(deferred_auth_id = %record.fingerprint(), "a quarantined record was released");
        Ok(Done::Flag(true))
    }

    /// Decodes a record a write needs; one that does not read is
    /// quarantined in the same transaction and the write refused.
    fn decode_for_write(
        &self,
        t: &mut Tables<'_>,
        staged: &mut HashMap<Key, Option<u64>>,
        old_due: Option<u64>,
        key: &Key,
        bytes: &[u8],
    ) -> Result<Record, Fail> {
        match self.decode(key, bytes) {
            Ok(r) => Ok(r),
            Err(e) if is_bad_record(&e) => {
                self.op_quarantine(t, staged, old_due, key, Some(bytes), &e)?;
                Err(Fail::Refused(e))
            }
            Err(e) => Err(Fail::Refused(e)),
        }
    }

    fn op_bind(&self, t: &mut Tables<'_>, issuer: &str, client_id: &str) -> Result<Done, Fail> {
        if let Some((i, c)) = Self::owner(&t.meta)? {
            check_owner(Some((&i, &c)), issuer, client_id)?;
            return Ok(Done::Unit);
        }
        t.meta.insert("issuer", issuer.as_bytes()).map_err(fatal)?;
        t.meta
            .insert("client_id", client_id.as_bytes())
            .map_err(fatal)?;
        // Reads check records against it from now on. (Set before the
        // commit: a read that sees it early refuses a foreign record one
        // commit sooner, which is harmless.)
        *self.owner.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((issuer.to_owned(), client_id.to_owned()));
        Ok(Done::Unit)
    }

    fn op_insert(
        &self,
        t: &mut Tables<'_>,
        staged: &mut HashMap<Key, Option<u64>>,
        record: &Record,
        value: &[u8],
    ) -> Result<Done, Fail> {
        let key = record_key(record.id());
        let owner = Self::owner(&t.meta)?;
        check_owner(
            owner.as_ref().map(|(i, c)| (i.as_str(), c.as_str())),
            record.auth.issuer(),
            record.auth.client_id(),
        )?;
        if t.records.get(&key).map_err(db_error)?.is_some() {
            return Err(Fail::Refused(StoreError::Duplicate {
                record: record.fingerprint(),
            }));
        }
        t.records.insert(&key, value).map_err(fatal)?;
        if let Some(d) = record.due_at() {
            let d = d.as_millis();
            t.pending.insert((d, key), [].as_slice()).map_err(fatal)?;
            staged.insert(key, Some(d));
        }
        if let Some(f) = record.finished_at() {
            t.finished.insert((f.as_millis(), key), ()).map_err(fatal)?;
        }
        Ok(Done::Unit)
    }

    /// Why a record is not in the due index: unknown, finished, or a
    /// record this release cannot read.
    fn not_pending(&self, t: &Tables<'_>, key: &Key, fp: Fingerprint) -> Fail {
        let bytes = match t.records.get(key) {
            Ok(b) => b.map(|g| g.value().to_vec()),
            Err(e) => return Fail::Refused(db_error(e)),
        };
        match bytes.map(|b| self.decode(key, &b)) {
            None => Fail::Refused(StoreError::NotFound { record: fp }),
            Some(Err(e)) => Fail::Refused(e),
            Some(Ok(r)) if r.is_finished() => {
                Fail::Refused(StoreError::AlreadyFinished { record: fp })
            }
            Some(Ok(_)) => Fail::Refused(StoreError::corrupt(
                Some(fp),
                "an unfinished record is missing from the due index",
            )),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn op_update(
        &self,
        t: &mut Tables<'_>,
        staged: &mut HashMap<Key, Option<u64>>,
        old_due: Option<u64>,
        key: &Key,
        fp: Fingerprint,
        new_due: u64,
        value: &[u8],
    ) -> Result<Done, Fail> {
        let Some(old_due) = old_due else {
            return Err(self.not_pending(t, key, fp));
        };
        t.pending.remove((old_due, *key)).map_err(fatal)?;
        t.pending.insert((new_due, *key), value).map_err(fatal)?;
        staged.insert(*key, Some(new_due));
        Ok(Done::Unit)
    }

    #[allow(clippy::too_many_arguments)]
    fn op_finish(
        &self,
        t: &mut Tables<'_>,
        staged: &mut HashMap<Key, Option<u64>>,
        old_due: Option<u64>,
        key: &Key,
        fp: Fingerprint,
        machine: &PollMachine,
        outcome: &StoredOutcome,
    ) -> Result<Done, Fail> {
        let bytes = t
            .records
            .get(key)
            .map_err(db_error)?
            .map(|g| g.value().to_vec())
            .ok_or(StoreError::NotFound { record: fp })?;
        let mut record = self.decode_for_write(t, staged, old_due, key, &bytes)?;
        if let Some(existing) = &record.outcome {
            return if existing.outcome == outcome.outcome {
                Ok(Done::Unit)
            } else {
                Err(Fail::Refused(StoreError::AlreadyFinished { record: fp }))
            };
        }
        // Not in the index (written behind this store's back): at the due
        // time the record itself names.
        let old_due = old_due.or_else(|| record.due_at().map(|d| d.as_millis()));
        record.machine = machine.clone();
        record.outcome = Some(outcome.clone());
        let value = self.encode(key, &record)?;
        t.records.insert(key, value.as_slice()).map_err(fatal)?;
        if let Some(d) = old_due {
            t.pending.remove((d, *key)).map_err(fatal)?;
        }
        staged.insert(*key, None);
        t.finished
            .insert((outcome.finished_at.as_millis(), *key), ())
            .map_err(fatal)?;
        Ok(Done::Unit)
    }

    fn op_mark_delivered(
        &self,
        t: &mut Tables<'_>,
        staged: &mut HashMap<Key, Option<u64>>,
        old_due: Option<u64>,
        key: &Key,
    ) -> Result<Done, Fail> {
        let bytes = t
            .records
            .get(key)
            .map_err(db_error)?
            .map(|g| g.value().to_vec());
        let Some(bytes) = bytes else {
            return Ok(Done::Flag(false));
        };
        let mut record = self.decode_for_write(t, staged, old_due, key, &bytes)?;
        match record.outcome.as_mut() {
            None => return Ok(Done::Flag(false)),
            Some(o) if o.delivered => return Ok(Done::Flag(true)),
            Some(o) => o.delivered = true,
        }
        let value = self.encode(key, &record)?;
        t.records.insert(key, value.as_slice()).map_err(fatal)?;
        Ok(Done::Flag(true))
    }

    fn op_purge(&self, t: &mut Tables<'_>, finished_before: UnixTime) -> Result<Done, Fail> {
        let expired: Vec<IndexKey> = t
            .finished
            .range(..(finished_before.as_millis(), [0u8; 32]))
            .map_err(db_error)?
            .map(|e| e.map(|(k, _)| k.value()))
            .collect::<Result<_, _>>()
            .map_err(db_error)?;
        let mut removed = 0;
        for entry in expired {
            if t.records.remove(&entry.1).map_err(fatal)?.is_some() {
                removed += 1;
            }
            t.finished.remove(entry).map_err(fatal)?;
        }
        Ok(Done::Count(removed))
    }

    /// A read snapshot, with the due time of `key` as of that snapshot.
    fn read_at(&self, key: Option<&Key>) -> Result<(ReadTransaction, Option<u64>), StoreError> {
        let index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        let txn = self.db.begin_read().map_err(db_error)?;
        Ok((txn, key.and_then(|k| index.get(k).copied())))
    }

    fn get(&self, id: &DeferredAuthId) -> Result<Read, StoreError> {
        let key = record_key(id);
        let (txn, due) = self.read_at(Some(&key))?;
        let records = txn.open_table(RECORDS).map_err(db_error)?;
        let pending = txn.open_table(PENDING).map_err(db_error)?;
        let bytes = records
            .get(&key)
            .map_err(db_error)?
            .map(|g| g.value().to_vec());
        let Some(bytes) = bytes else {
            let quarantine = txn.open_table(QUARANTINE).map_err(db_error)?;
            if quarantine.get(&key).map_err(db_error)?.is_some() {
                return Err(StoreError::corrupt(
                    Some(key_fingerprint(&key)),
                    "the record is quarantined (see Store::quarantined and \
                     Store::release_quarantined)",
                ));
            }
            return Ok((Vec::new(), Vec::new()));
        };
        let state = match due {
            Some(d) => pending
                .get((d, key))
                .map_err(db_error)?
                .map(|g| g.value().to_vec()),
            None => None,
        };
        Ok(
            match self.decode_with_state(&key, &bytes, state.as_deref()) {
                Ok(r) => (vec![r], Vec::new()),
                Err(error) => (
                    Vec::new(),
                    vec![BadRecord {
                        key,
                        record: bytes,
                        error,
                    }],
                ),
            },
        )
    }

    fn due(&self, until: UnixTime, limit: usize) -> Result<Read, StoreError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let pending = txn.open_table(PENDING).map_err(db_error)?;
        let records = txn.open_table(RECORDS).map_err(db_error)?;
        let mut out = Vec::new();
        let mut bad = Vec::new();
        for entry in pending
            .range(..=(until.as_millis(), [0xff; 32]))
            .map_err(db_error)?
            .take(limit)
        {
            let (k, state) = entry.map_err(db_error)?;
            let (_, key) = k.value();
            let bytes = records
                .get(&key)
                .map_err(db_error)?
                .map(|g| g.value().to_vec())
                .ok_or_else(|| {
                    StoreError::corrupt(
                        Some(key_fingerprint(&key)),
                        "the due index names a missing record",
                    )
                })?;
            match self.decode_with_state(&key, &bytes, Some(state.value())) {
                Ok(r) => out.push(r),
                Err(error) => bad.push(BadRecord {
                    key,
                    record: bytes,
                    error,
                }),
            }
        }
        Ok((out, bad))
    }

    fn load_active(&self) -> Result<Read, StoreError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let records = txn.open_table(RECORDS).map_err(db_error)?;
        let pending = txn.open_table(PENDING).map_err(db_error)?;
        // The latest state of every unfinished record, from this snapshot.
        let mut states: HashMap<Key, Vec<u8>> = HashMap::new();
        for entry in pending.iter().map_err(db_error)? {
            let (k, v) = entry.map_err(db_error)?;
            if !v.value().is_empty() {
                states.insert(k.value().1, v.value().to_vec());
            }
        }
        let mut out = Vec::new();
        let mut bad = Vec::new();
        for entry in records.iter().map_err(db_error)? {
            let (k, v) = entry.map_err(db_error)?;
            let key = k.value();
            let state = states.remove(&key);
            match self.decode_with_state(&key, v.value(), state.as_deref()) {
                Ok(record) => {
                    if record.outcome.as_ref().is_none_or(|o| !o.delivered) {
                        out.push(record);
                    }
                }
                Err(error) => bad.push(BadRecord {
                    key,
                    record: v.value().to_vec(),
                    error,
                }),
            }
        }
        Ok((out, bad))
    }

    fn quarantined(&self) -> Result<Vec<QuarantinedRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let quarantine = txn.open_table(QUARANTINE).map_err(db_error)?;
        let mut out = Vec::new();
        for entry in quarantine.iter().map_err(db_error)? {
            let (k, v) = entry.map_err(db_error)?;
            let key = k.value();
            let q = QuarantineEntry::decode(v.value(), &key)?;
            out.push(QuarantinedRecord::new(RecordKey(key), q.reason));
        }
        Ok(out)
    }
}

/// The tables a batch writes, opened once for all its writes.
struct Tables<'t> {
    meta: Table<'t, &'static str, &'static [u8]>,
    records: Table<'t, Key, &'static [u8]>,
    pending: Table<'t, IndexKey, &'static [u8]>,
    finished: Table<'t, IndexKey, ()>,
    quarantine: Table<'t, Key, &'static [u8]>,
}

/// Why a write of a batch failed.
enum Fail {
    /// This write is refused (nothing of it was written); the others go on.
    Refused(StoreError),
    /// The transaction failed: the batch is retried write by write.
    Batch(StoreError),
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Refused(e)
    }
}

/// A storage error while writing: the transaction holds part of a write.
fn fatal(e: impl Into<redb::Error>) -> Fail {
    Fail::Batch(db_error(e))
}

/// A write for the writer thread.
enum Op {
    Bind {
        issuer: String,
        client_id: String,
    },
    /// With the record encoded (and sealed) by the caller.
    Insert {
        record: Box<Record>,
        value: Vec<u8>,
    },
    /// The new due time and the encoded (and sealed) poll state.
    Update {
        key: Key,
        fp: Fingerprint,
        due: u64,
        value: Vec<u8>,
    },
    Finish {
        key: Key,
        fp: Fingerprint,
        machine: Box<PollMachine>,
        outcome: Box<StoredOutcome>,
    },
    MarkDelivered {
        key: Key,
    },
    Purge(UnixTime),
    /// A record a read could not use, with its bytes as read.
    Quarantine {
        key: Key,
        record: Vec<u8>,
        error: StoreError,
    },
    Release {
        key: Key,
    },
}

/// What a write answers.
#[derive(Debug, Clone, Copy)]
enum Done {
    Unit,
    Flag(bool),
    Count(usize),
}

struct Job {
    op: Op,
    reply: oneshot::Sender<Result<Done, StoreError>>,
}

/// The writer's queue: two lanes, each bounded by a semaphore whose
/// permits are the free places.
struct Queue {
    lanes: Mutex<Lanes>,
    ready: Condvar,
    /// Room for state updates.
    update_room: Semaphore,
    /// Room for everything else (inserts, outcomes, deliveries, purges).
    urgent_room: Semaphore,
}

struct Lanes {
    urgent: VecDeque<Job>,
    updates: VecDeque<Job>,
    closed: bool,
}

impl Queue {
    fn close(&self) {
        self.lanes.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        self.update_room.close();
        self.urgent_room.close();
        self.ready.notify_all();
    }
}

/// The writer thread: takes every queued write in batches (urgent ones
/// first, at most `max_batch` state updates), one transaction and at most
/// one `fsync` per batch. Stops (after writing what is queued) when the
/// queue is closed.
struct Writer {
    queue: Arc<Queue>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Writer {
    fn start(inner: Arc<Inner>, options: &FileStoreOptions) -> Result<Writer, StoreError> {
        let capacity = options.queue_capacity.max(1);
        let queue = Arc::new(Queue {
            lanes: Mutex::new(Lanes {
                urgent: VecDeque::new(),
                updates: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
            update_room: Semaphore::new(capacity),
            urgent_room: Semaphore::new(capacity),
        });
        let max_batch = options.max_batch.max(1);
        let q = queue.clone();
        let thread = std::thread::Builder::new()
            .name("oidc-dtr-filestore".into())
            .spawn(move || writer_loop(&inner, &q, max_batch))
            .map_err(StoreError::from)?;
        Ok(Writer {
            queue,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Closes the queue and waits for the thread to write what is queued
    /// and stop.
    fn stop(&self) {
        self.queue.close();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn writer_loop(inner: &Inner, queue: &Queue, max_batch: usize) {
    loop {
        let (urgent, updates) = {
            let mut lanes = queue.lanes.lock().unwrap_or_else(|e| e.into_inner());
            while lanes.urgent.is_empty() && lanes.updates.is_empty() && !lanes.closed {
                lanes = queue.ready.wait(lanes).unwrap_or_else(|e| e.into_inner());
            }
            if lanes.urgent.is_empty() && lanes.updates.is_empty() {
                break;
            }
            // State updates alone: wait a little for more, so that one
            // transaction carries many of them (fewer pages rewritten per
            // update). Their callers wait for the commit either way; an
            // urgent write ends the wait at once.
            let linger = Instant::now() + LINGER;
            while lanes.urgent.is_empty() && lanes.updates.len() < max_batch && !lanes.closed {
                let left = linger.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                lanes = queue
                    .ready
                    .wait_timeout(lanes, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            let n = lanes.urgent.len().min(max_batch);
            let urgent: Vec<Job> = lanes.urgent.drain(..n).collect();
            let n = lanes.updates.len().min(max_batch);
            let updates: Vec<Job> = lanes.updates.drain(..n).collect();
            (urgent, updates)
        };
        queue.urgent_room.add_permits(urgent.len());
        queue.update_room.add_permits(updates.len());
        inner.run_batch(urgent, updates);
    }
    match catch_unwind(AssertUnwindSafe(|| inner.sync())) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "the store's last commit failed"),
        Err(_) => tracing::error!("the store's last commit failed (a damaged file?)"),
    }
}

impl FileStore {
    /// Queues a write for the writer thread and waits for its answer: for
    /// room in the queue first (backpressure), then for the commit.
    fn submit(&self, op: Op) -> StoreFuture<Result<Done, StoreError>> {
        let open = self.open_inner_arc().map(|_| self.writer.queue.clone());
        Box::pin(async move {
            let queue = open?;
            let update = matches!(op, Op::Update { .. });
            let room = if update {
                &queue.update_room
            } else {
                &queue.urgent_room
            };
            room.acquire()
                .await
                .map_err(|_| StoreError::Closed)?
                .forget();
            let (reply, answer) = oneshot::channel();
            {
                let mut lanes = queue.lanes.lock().unwrap_or_else(|e| e.into_inner());
                if lanes.closed {
                    return Err(StoreError::Closed);
                }
                let job = Job { op, reply };
                if update {
                    lanes.updates.push_back(job);
                } else {
                    lanes.urgent.push_back(job);
                }
            }
            queue.ready.notify_one();
            answer.await.unwrap_or_else(|_| Err(engine_panicked()))
        })
    }

    /// Runs a read on the blocking pool, then quarantines the records it
    /// could not use (through the writer, only if they have not changed
    /// since): the records read, and the errors of the ones set aside. An
    /// error that is not about a record's contents fails the call.
    fn read(
        &self,
        f: impl FnOnce(&Inner) -> Result<Read, StoreError> + Send + 'static,
    ) -> StoreFuture<Result<Sorted, StoreError>> {
        let read = self.spawn(f);
        let this = self.clone();
        Box::pin(async move {
            let (good, bad) = read.await?;
            let mut errors = Vec::with_capacity(bad.len());
            for b in bad {
                if !is_bad_record(&b.error) {
                    return Err(b.error);
                }
                this.submit(Op::Quarantine {
                    key: b.key,
                    record: b.record,
                    error: b.error.clone(),
                })
                .await?;
                errors.push(b.error);
            }
            Ok((good, errors))
        })
    }

    fn submit_unit(&self, op: Op) -> StoreFuture<Result<(), StoreError>> {
        let done = self.submit(op);
        Box::pin(async move { done.await.map(|_| ()) })
    }
}

impl Store for FileStore {
    fn bind(&self, issuer: &str, client_id: &str) -> StoreFuture<Result<(), StoreError>> {
        self.submit_unit(Op::Bind {
            issuer: issuer.to_owned(),
            client_id: client_id.to_owned(),
        })
    }

    fn insert(&self, record: Record) -> StoreFuture<Result<(), StoreError>> {
        // Serialised and sealed here, on the caller's thread: the writer
        // thread only writes.
        let encoded = self.open_inner_arc().and_then(|inner| {
            check_schema(&record)?;
            inner.encode(&record_key(record.id()), &record)
        });
        match encoded {
            Ok(value) => self.submit_unit(Op::Insert {
                record: Box::new(record),
                value,
            }),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    fn update_state(
        &self,
        id: &DeferredAuthId,
        machine: PollMachine,
    ) -> StoreFuture<Result<(), StoreError>> {
        let key = record_key(id);
        let encoded = self
            .open_inner_arc()
            .and_then(|inner| seal_machine(inner.sealer.as_deref(), &key, &machine));
        match encoded {
            Ok(value) => self.submit_unit(Op::Update {
                key,
                fp: id.fingerprint(),
                due: due_of(&machine).as_millis(),
                value,
            }),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    fn finish(
        &self,
        id: &DeferredAuthId,
        machine: PollMachine,
        outcome: StoredOutcome,
    ) -> StoreFuture<Result<(), StoreError>> {
        self.submit_unit(Op::Finish {
            key: record_key(id),
            fp: id.fingerprint(),
            machine: Box::new(machine),
            outcome: Box::new(outcome),
        })
    }

    fn mark_delivered(&self, id: &DeferredAuthId) -> StoreFuture<Result<bool, StoreError>> {
        let done = self.submit(Op::MarkDelivered {
            key: record_key(id),
        });
        Box::pin(async move { Ok(matches!(done.await?, Done::Flag(true))) })
    }

    fn get(&self, id: &DeferredAuthId) -> StoreFuture<Result<Option<Record>, StoreError>> {
        let id = id.clone();
        let read = self.read(move |s| s.get(&id));
        Box::pin(async move {
            let (mut found, mut bad) = read.await?;
            // The one record asked for did not read: say why.
            match bad.pop() {
                Some(e) => Err(e),
                None => Ok(found.pop()),
            }
        })
    }

    fn due(&self, until: UnixTime, limit: usize) -> StoreFuture<Result<Vec<Record>, StoreError>> {
        let read = self.read(move |s| s.due(until, limit));
        Box::pin(async move { Ok(read.await?.0) })
    }

    fn load_active(&self) -> StoreFuture<Result<Vec<Record>, StoreError>> {
        let read = self.read(|s| s.load_active());
        Box::pin(async move { Ok(read.await?.0) })
    }

    fn notices(&self) -> Option<tokio::sync::broadcast::Receiver<StoreNotice>> {
        self.open_inner_arc().ok().map(|i| i.notices.subscribe())
    }

    fn quarantined(&self) -> StoreFuture<Result<Vec<QuarantinedRecord>, StoreError>> {
        self.spawn(|s| s.quarantined())
    }

    fn release_quarantined(&self, key: RecordKey) -> StoreFuture<Result<bool, StoreError>> {
        let done = self.submit(Op::Release { key: key.0 });
        Box::pin(async move { Ok(matches!(done.await?, Done::Flag(true))) })
    }

    fn purge(&self, finished_before: UnixTime) -> StoreFuture<Result<usize, StoreError>> {
        let done = self.submit(Op::Purge(finished_before));
        Box::pin(async move {
            match done.await? {
                Done::Count(n) => Ok(n),
                _ => Ok(0),
            }
        })
    }

    fn close(&self) -> StoreFuture<Result<(), StoreError>> {
        let slot = self.inner.clone();
        let writer = self.writer.clone();
        Box::pin(async move {
            let taken = slot.write().unwrap_or_else(|e| e.into_inner()).take();
            let Some(inner) = taken else {
                return Ok(());
            };
            tokio::task::spawn_blocking(move || {
                // The writer writes what is queued, makes its last commit
                // durable and lets go of the database.
                writer.stop();
                // Reads still on the blocking pool hold their own `Arc`:
                // wait for them, so that dropping ours closes the database.
                let mut inner = inner;
                let deadline = Instant::now() + std::time::Duration::from_secs(30);
                loop {
                    match Arc::try_unwrap(inner) {
                        Ok(owned) => {
                            owned.sync()?;
                            drop(owned);
                            return Ok(());
                        }
                        Err(still_shared) if Instant::now() < deadline => {
                            inner = still_shared;
                            std::thread::sleep(std::time::Duration::from_millis(2));
                        }
                        Err(_) => {
                            return Err(StoreError::Other(
                                "a store operation did not finish within 30 s of close".into(),
                            ));
                        }
                    }
                }
            })
            .await
            .unwrap_or_else(|_| Err(engine_panicked()))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::jose::{Algorithm, DpopKey};
    use crate::proto::exchange::DeferredAuthentication;
    use crate::proto::poll::Outcome;
    use crate::proto::token::TokenSet;
    use crate::secret::Nonce;
    use crate::store::AesGcmSealer;
    use crate::store::FileStoreOptions;
    use crate::store::test_records::{at, denied, finished_machine, id, record};

    /// A fresh directory under the system temp dir, removed on drop.
    pub(crate) struct TempDir(PathBuf);

    impl TempDir {
        pub(crate) fn new() -> Self {
            static N: AtomicU64 = AtomicU64::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let dir = std::env::temp_dir().join(format!(
                "oidc-dtr-store-{}-{}-{nanos}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        pub(crate) fn file(&self) -> PathBuf {
            self.0.join("dtr.redb")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn temp_store() -> (FileStore, TempDir) {
        let dir = TempDir::new();
        (FileStore::open(dir.file()).unwrap(), dir)
    }

    fn sealer(byte: u8) -> Arc<dyn Sealer> {
        Arc::new(AesGcmSealer::new([byte; 32]).unwrap())
    }

    /// Writes a few records in every state, then closes the store.
    async fn populate(path: &Path, sealer: Option<Arc<dyn Sealer>>) -> Vec<Record> {
        let store = match sealer {
            Some(s) => FileStore::open_with_sealer(path, s).unwrap(),
            None => FileStore::open(path).unwrap(),
        };
        store.bind("https://op.example", "client").await.unwrap();
        let mut out = Vec::new();
        for i in 0..20 {
            let r = record(&format!("r{i}"), i * 10);
            store.insert(r.clone()).await.unwrap();
            out.push(r);
        }
        store
            .finish(out[0].id(), finished_machine(&out[0]), denied(50))
            .await
            .unwrap();
        store
            .finish(out[1].id(), finished_machine(&out[1]), denied(60))
            .await
            .unwrap();
        assert!(store.mark_delivered(out[1].id()).await.unwrap());
        out
    }

    fn expect_corrupt(r: Result<FileStore, StoreError>) -> StoreError {
        match r {
            Err(e @ StoreError::Corrupt { .. }) => e,
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    /// Issue 11, item 5: an existing empty file is not a new store: it is
    /// `Corrupt`, and left as it was. A store the SDK creates is never empty.
    #[tokio::test]
    async fn an_existing_empty_file_is_corrupt_not_a_new_store() {
        let dir = TempDir::new();
        std::fs::write(dir.file(), b"").unwrap();
        let e = expect_corrupt(FileStore::open(dir.file()));
        assert!(e.to_string().contains("empty"), "{e}");
        assert_eq!(std::fs::metadata(dir.file()).unwrap().len(), 0);
        // A new store: created whole, reopened as the same store.
        let other = dir.file().with_file_name("new.redb");
        let store = FileStore::open(&other).unwrap();
        let r = record("fresh", 10);
        store.insert(r.clone()).await.unwrap();
        drop(store);
        assert!(std::fs::metadata(&other).unwrap().len() > 0);
        assert!(!other.with_file_name("new.redb.creating").exists());
        let store = FileStore::open(&other).unwrap();
        assert_eq!(store.load_active().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_file_with_the_legacy_due_index_keeps_its_pending_records() {
        let dir = TempDir::new();
        let records = populate(&dir.file(), None).await;
        // Rewrite the file into the layout before group commit: unfinished
        // records indexed in `due` (no value), no `pending` table.
        {
            let db = Database::open(dir.file()).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let pending = txn.open_table(PENDING).unwrap();
                let mut due = txn.open_table(LEGACY_DUE).unwrap();
                for entry in pending.iter().unwrap() {
                    let (k, v) = entry.unwrap();
                    assert!(
                        v.value().is_empty(),
                        "fresh inserts carry no separate state"
                    );
                    due.insert(k.value(), ()).unwrap();
                }
            }
            txn.delete_table(PENDING).unwrap();
            txn.commit().unwrap();
        }
        let store = FileStore::open(dir.file()).unwrap();
        let mut active: Vec<_> = store
            .load_active()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id().clone())
            .collect();
        active.sort_by(|a, b| a.secret().cmp(b.secret()));
        // Everything but the delivered one (an undelivered outcome is active).
        let mut expected: Vec<_> = records
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 1)
            .map(|(_, r)| r.id().clone())
            .collect();
        expected.sort_by(|a, b| a.secret().cmp(b.secret()));
        assert_eq!(active, expected);
        // Still writable as usual, and the legacy table is gone.
        let r = &records[7];
        store
            .finish(r.id(), finished_machine(r), denied(70))
            .await
            .unwrap();
        assert!(store.get(r.id()).await.unwrap().unwrap().is_finished());
        assert!(
            store
                .due(at(1_000_000), 100)
                .await
                .unwrap()
                .iter()
                .all(|d| d.id() != r.id())
        );
        drop(store);
        let db = Database::open(dir.file()).unwrap();
        let txn = db.begin_read().unwrap();
        assert!(
            !txn.list_tables()
                .unwrap()
                .any(|t| t.name() == LEGACY_DUE.name())
        );
    }

    #[tokio::test]
    async fn reopen_keeps_everything() {
        let dir = TempDir::new();
        let records = populate(&dir.file(), None).await;
        // A relaxed (non-durable) state update just before a clean close.
        let store = FileStore::open(dir.file()).unwrap();
        let r = &records[5];
        let mut m = r.machine.clone();
        m.set_config(crate::proto::poll::PollConfig::default().backoff_cap(Duration::from_secs(9)));
        store.update_state(r.id(), m.clone()).await.unwrap();
        drop(store);

        let store = FileStore::open(dir.file()).unwrap();
        store.bind("https://op.example", "client").await.unwrap();
        assert!(matches!(
            store.bind("https://op.example", "other").await,
            Err(StoreError::WrongOwner { .. })
        ));
        assert_eq!(store.get(r.id()).await.unwrap().unwrap().machine, m);
        let first = store.get(records[0].id()).await.unwrap().unwrap();
        assert_eq!(first.outcome, Some(denied(50)));
        let active = store.load_active().await.unwrap();
        assert_eq!(active.len(), 19, "18 pending + 1 undelivered");
        assert_eq!(store.due(UnixTime::MAX, 100).await.unwrap().len(), 18);
        assert_eq!(store.purge(UnixTime::MAX).await.unwrap(), 2);
    }

    #[tokio::test]
    async fn a_second_open_is_locked() {
        let (store, dir) = temp_store();
        let e = FileStore::open(dir.file()).unwrap_err();
        assert!(matches!(e, StoreError::Locked { .. }), "{e:?}");
        assert!(e.to_string().contains("already open"), "{e}");
        drop(store);
        FileStore::open(dir.file()).unwrap();
    }

    #[tokio::test]
    async fn truncated_file_is_corrupt_and_left_alone() {
        let dir = TempDir::new();
        populate(&dir.file(), None).await;
        let full = std::fs::read(dir.file()).unwrap();
        for len in [full.len() / 2, 4096, 100] {
            let cut = &full[..len];
            std::fs::write(dir.file(), cut).unwrap();
            let e = expect_corrupt(FileStore::open(dir.file()));
            assert!(e.to_string().contains("corrupt"), "{e}");
            assert!(std::fs::read(dir.file()).unwrap() == cut, "file changed");
        }
    }

    #[tokio::test]
    async fn damaged_pages_are_corrupt_and_left_alone() {
        let dir = TempDir::new();
        populate(&dir.file(), None).await;
        let mut bytes = std::fs::read(dir.file()).unwrap();
        let len = bytes.len();
        // Zero the last quarter: pages the tree refers to lose their
        // contents. (A plain redb open panics on this file.)
        bytes[len * 3 / 4..].fill(0);
        std::fs::write(dir.file(), &bytes).unwrap();
        expect_corrupt(FileStore::open(dir.file()));
        assert!(std::fs::read(dir.file()).unwrap() == bytes, "file changed");
    }

    #[test]
    fn garbage_and_foreign_files_are_refused() {
        let dir = TempDir::new();
        let garbage: Vec<u8> = (0..20_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(dir.file(), &garbage).unwrap();
        expect_corrupt(FileStore::open(dir.file()));
        assert!(
            std::fs::read(dir.file()).unwrap() == garbage,
            "file changed"
        );

        // Somebody else's redb database.
        let other = dir.0.join("other.redb");
        {
            let db = Database::create(&other).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(TableDefinition::<u64, u64>::new("things"))
                .unwrap()
                .insert(1, 2)
                .unwrap();
            txn.commit().unwrap();
        }
        let e = expect_corrupt(FileStore::open(&other));
        assert!(e.to_string().contains("not an oidc-dtr store"), "{e}");
    }

    /// Writes `value` under `key` (and the due index), bypassing encoding.
    fn write_raw(store: &FileStore, key: Key, value: &[u8]) {
        let txn = store.inner().db.begin_write().unwrap();
        {
            let mut records = txn.open_table(RECORDS).unwrap();
            records.insert(&key, value).unwrap();
            let mut pending = txn.open_table(PENDING).unwrap();
            pending.retain(|(_, k), _| k != key).unwrap();
            pending
                .insert((at(1).as_millis(), key), [].as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
        store.inner().load_index().unwrap();
    }

    #[tokio::test]
    async fn unknown_record_schema_is_reported_and_quarantined() {
        let (store, _dir) = temp_store();
        let mut notices = store.notices().unwrap();
        store.insert(record("a", 0)).await.unwrap();
        let mut json = serde_json::to_value(record("new", 0)).unwrap();
        json["schema"] = 99.into();
        json["field_from_the_future"] = "x".into();
        let key = record_key(&id("new"));
        write_raw(&store, key, &serde_json::to_vec(&json).unwrap());

        let e = store.get(&id("new")).await.unwrap_err();
        assert!(
            matches!(
                e,
                StoreError::UnsupportedSchema { found: 99, supported: 1, record: Some(fp) }
                    if fp == id("new").fingerprint()
            ),
            "{e:?}"
        );
        assert_eq!(
            notices.try_recv().unwrap(),
            StoreNotice::Quarantined(RecordKey(key))
        );
        // Set aside, with the reason, and named as quarantined from now on.
        let q = store.quarantined().await.unwrap();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].key, RecordKey(key));
        assert!(q[0].reason.contains("99"), "{}", q[0].reason);
        let e = store.get(&id("new")).await.unwrap_err();
        assert!(e.to_string().contains("quarantined"), "{e}");
        // The other record is still readable; every listing goes on.
        assert_eq!(store.load_active().await.unwrap().len(), 1);
        assert_eq!(store.due(UnixTime::MAX, 10).await.unwrap().len(), 1);
        assert!(store.get(&id("a")).await.unwrap().is_some());
        assert!(matches!(
            store
                .update_state(&id("new"), record("new", 0).machine)
                .await,
            Err(StoreError::NotFound { .. })
        ));
        // Still unreadable: stays quarantined.
        assert!(
            store
                .release_quarantined(RecordKey(key))
                .await
                .unwrap_err()
                .to_string()
                .contains("99")
        );
        assert_eq!(store.quarantined().await.unwrap().len(), 1);
    }

    /// A bad record met on any reading path — a listing at start-up, the
    /// due listing, a claim, the outcome listing, a read by id, a write —
    /// is set aside and reported, and the path goes on with the others.
    /// Bad: undecodable bytes, a layout from the future, a tampered seal,
    /// a record of another issuer, a state that does not open.
    #[tokio::test]
    async fn a_bad_record_is_quarantined_on_every_reading_path() {
        #[derive(Clone, Copy, Debug)]
        enum Bad {
            Garbage,
            Schema,
            Tampered,
            OtherIssuer,
            State,
        }
        #[derive(Clone, Copy, Debug)]
        enum Path {
            Reopen,
            LoadActive,
            Due,
            ClaimDue,
            ClaimUndelivered,
            Get,
            Finish,
            MarkDelivered,
        }
        let key_bad = record_key(&id("bad"));
        for bad in [
            Bad::Garbage,
            Bad::Schema,
            Bad::Tampered,
            Bad::OtherIssuer,
            Bad::State,
        ] {
            for path in [
                Path::Reopen,
                Path::LoadActive,
                Path::Due,
                Path::ClaimDue,
                Path::ClaimUndelivered,
                Path::Get,
                Path::Finish,
                Path::MarkDelivered,
            ] {
                let dir = TempDir::new();
                let sealer = sealer(5);
                let mut store = FileStore::open_with_sealer(dir.file(), sealer.clone()).unwrap();
                store.bind("https://op.example", "client").await.unwrap();
                let good: Vec<Record> = (0..3).map(|i| record(&format!("g{i}"), i)).collect();
                for r in &good {
                    store.insert(r.clone()).await.unwrap();
                }
                // The bad one, finished for the outcome paths.
                let mut victim = record("bad", 0);
                if matches!(path, Path::ClaimUndelivered | Path::MarkDelivered) {
                    victim.machine = finished_machine(&victim);
                    victim.outcome = Some(denied(1));
                    let mut g = good[0].clone();
                    store
                        .finish(g.id(), finished_machine(&g), denied(1))
                        .await
                        .unwrap();
                    g.outcome = Some(denied(1));
                }
                let sealed = |r: &Record| seal_record(Some(sealer.as_ref()), &key_bad, r).unwrap();
                let value = match bad {
                    Bad::Garbage => sealer.seal(b"{\"schema\":1", &key_bad).unwrap(),
                    Bad::Schema => {
                        let mut json = serde_json::to_value(&victim).unwrap();
                        json["schema"] = 99.into();
                        sealer
                            .seal(&serde_json::to_vec(&json).unwrap(), &key_bad)
                            .unwrap()
                    }
                    Bad::Tampered => {
                        let mut v = sealed(&victim);
                        let n = v.len();
                        v[n - 3] ^= 1;
                        v
                    }
                    Bad::OtherIssuer => {
                        let mut r = victim.clone();
                        r.auth = DeferredAuthentication::seeded(
                            id("bad"),
                            "https://other.example".into(),
                            "client".into(),
                            at(0),
                            Some(3600),
                            5,
                            Nonce::new("nonce"),
                        );
                        sealed(&r)
                    }
                    Bad::State => sealed(&victim),
                };
                {
                    let txn = store.inner().db.begin_write().unwrap();
                    {
                        let mut records = txn.open_table(RECORDS).unwrap();
                        records.insert(&key_bad, value.as_slice()).unwrap();
                        if let Some(d) = victim.due_at() {
                            let state: &[u8] = match bad {
                                Bad::State => b"not a sealed state",
                                _ => &[],
                            };
                            txn.open_table(PENDING)
                                .unwrap()
                                .insert((d.as_millis(), key_bad), state)
                                .unwrap();
                        } else {
                            txn.open_table(FINISHED)
                                .unwrap()
                                .insert((at(1).as_millis(), key_bad), ())
                                .unwrap();
                        }
                    }
                    txn.commit().unwrap();
                }
                if matches!(bad, Bad::State)
                    && (victim.is_finished() || matches!(path, Path::Finish))
                {
                    // A finished record has no state, and a finish
                    // replaces it: nothing bad to find.
                    continue;
                }
                store.inner().load_index().unwrap();
                if matches!(path, Path::Reopen) {
                    store.close().await.unwrap();
                    store = FileStore::open_with_sealer(dir.file(), sealer.clone()).unwrap();
                }
                let mut notices = store.notices().unwrap();
                let ctx = format!("{bad:?} via {path:?}");
                let names = |rs: &[Record]| {
                    let mut v: Vec<String> =
                        rs.iter().map(|r| r.fingerprint().to_string()).collect();
                    v.sort();
                    v
                };
                let fp = |i: usize| good[i].fingerprint().to_string();
                match path {
                    Path::Reopen | Path::LoadActive => {
                        let got = store.load_active().await.expect(&ctx);
                        let mut want = vec![fp(0), fp(1), fp(2)];
                        want.sort();
                        assert_eq!(names(&got), want, "{ctx}");
                    }
                    Path::Due => {
                        let got = store.due(UnixTime::MAX, 10).await.expect(&ctx);
                        assert_eq!(got.len(), 3, "{ctx}");
                    }
                    Path::ClaimDue => {
                        let got = store
                            .claim_due("me", UnixTime::MAX, 10, Duration::from_secs(30))
                            .await
                            .expect(&ctx);
                        assert_eq!(got.len(), 3, "{ctx}");
                    }
                    Path::ClaimUndelivered => {
                        let got = store
                            .claim_undelivered(10, Duration::from_secs(30))
                            .await
                            .expect(&ctx);
                        assert_eq!(names(&got), vec![fp(0)], "{ctx}");
                    }
                    Path::Get => {
                        assert!(store.get(&id("bad")).await.is_err(), "{ctx}");
                        assert!(store.get(good[1].id()).await.unwrap().is_some(), "{ctx}");
                    }
                    Path::Finish => {
                        let e = store
                            .finish(&id("bad"), finished_machine(&victim), denied(2))
                            .await
                            .unwrap_err();
                        assert!(crate::store::is_bad_record(&e), "{ctx}: {e:?}");
                    }
                    Path::MarkDelivered => {
                        assert!(store.mark_delivered(&id("bad")).await.is_err(), "{ctx}");
                        assert!(store.mark_delivered(good[0].id()).await.unwrap(), "{ctx}");
                    }
                }
                assert_eq!(
                    notices.try_recv().ok(),
                    Some(StoreNotice::Quarantined(RecordKey(key_bad))),
                    "{ctx}"
                );
                let q = store.quarantined().await.unwrap();
                assert_eq!(q.len(), 1, "{ctx}");
                assert_eq!(q[0].key, RecordKey(key_bad), "{ctx}");
                assert!(!q[0].reason.contains(id("bad").secret()), "{ctx}");
                // Gone from every listing, and the good records keep their
                // place.
                let outcome_path = matches!(path, Path::ClaimUndelivered | Path::MarkDelivered);
                let pending = if outcome_path { 2 } else { 3 };
                assert_eq!(
                    store.due(UnixTime::MAX, 10).await.unwrap().len(),
                    pending,
                    "{ctx}"
                );
                assert!(notices.try_recv().is_err(), "reported once: {ctx}");
                // Still bad: stays.
                assert!(
                    store.release_quarantined(RecordKey(key_bad)).await.is_err(),
                    "{ctx}"
                );
                assert_eq!(store.quarantined().await.unwrap().len(), 1, "{ctx}");
                // After a restart it is still set aside, not met again.
                store.close().await.unwrap();
                let store = FileStore::open_with_sealer(dir.file(), sealer.clone()).unwrap();
                let active = if matches!(path, Path::MarkDelivered) {
                    2
                } else {
                    3
                };
                assert_eq!(store.load_active().await.unwrap().len(), active, "{ctx}");
                assert_eq!(store.quarantined().await.unwrap().len(), 1, "{ctx}");
            }
        }
    }

    /// A record refused because the store was opened with the wrong owner
    /// data (here: one written before the store was bound, of another
    /// issuer) is put back by `release_quarantined` once it reads.
    #[tokio::test]
    async fn a_repaired_record_is_released_without_a_restart() {
        let (store, _dir) = temp_store();
        store.bind("https://op.example", "client").await.unwrap();
        let victim = record("v", 0);
        let key = record_key(victim.id());
        write_raw(&store, key, b"garbage");
        store.inner().load_index().unwrap();
        store.insert(record("a", 0)).await.unwrap();
        assert_eq!(store.load_active().await.unwrap().len(), 1);
        assert_eq!(store.quarantined().await.unwrap().len(), 1);
        // Repaired in place (an operator restores the record's bytes).
        {
            let txn = store.inner().db.begin_write().unwrap();
            {
                let mut q = txn.open_table(QUARANTINE).unwrap();
                let v = QuarantineEntry {
                    reason: "x",
                    record: &serde_json::to_vec(&victim).unwrap(),
                    state: &[],
                }
                .encode();
                q.insert(&key, v.as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        assert!(store.release_quarantined(RecordKey(key)).await.unwrap());
        assert!(!store.release_quarantined(RecordKey(key)).await.unwrap());
        assert!(store.quarantined().await.unwrap().is_empty());
        assert_eq!(store.get(victim.id()).await.unwrap(), Some(victim.clone()));
        let due = store.due(UnixTime::MAX, 10).await.unwrap();
        assert!(due.iter().any(|r| r.id() == victim.id()));
        // And it is written like any other from now on.
        store
            .finish(victim.id(), finished_machine(&victim), denied(3))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn undecodable_records_are_corrupt_and_named_by_fingerprint() {
        let (store, _dir) = temp_store();
        let secret_id = id("leaky");
        let key = record_key(&secret_id);
        // Valid JSON that quotes the id where a number belongs: serde's
        // own message would repeat it.
        let bad = format!(r#"{{"schema":1,"auth":"{}"}}"#, secret_id.secret());
        for value in [bad.as_bytes(), b"{\"schema\":1", b"\xff\x00garbage", b""] {
            write_raw(&store, key, value);
            let e = store.get(&secret_id).await.unwrap_err();
            assert!(
                matches!(e, StoreError::Corrupt { record: Some(fp), .. } if fp == secret_id.fingerprint()),
                "{e:?}"
            );
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains(secret_id.secret()), "{shown}");
            assert!(
                shown.contains(&secret_id.fingerprint().to_string()),
                "{shown}"
            );
        }
        // A valid record stored under another id's key.
        write_raw(&store, key, &serde_json::to_vec(&record("x", 0)).unwrap());
        assert!(matches!(
            store.get(&secret_id).await,
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[tokio::test]
    async fn unknown_file_schema_is_refused() {
        let dir = TempDir::new();
        {
            let store = FileStore::open(dir.file()).unwrap();
            let txn = store.inner().db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert("schema", 2u32.to_be_bytes().as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        let e = FileStore::open(dir.file()).unwrap_err();
        assert!(
            matches!(
                e,
                StoreError::UnsupportedSchema {
                    found: 2,
                    supported: 1,
                    record: None
                }
            ),
            "{e:?}"
        );
    }

    /// A token set with recognisable secrets, through its serde form.
    fn token_set(key: &DpopKey) -> TokenSet {
        use base64::Engine as _;
        let b64 = |v: &serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let header = b64(&serde_json::json!({"alg": "ES256", "typ": "JWT"}));
        let payload = b64(&serde_json::json!({
            "iss": "https://op.example",
            "sub": "user-PLAINTEXT-SUBJECT",
            "aud": "client",
            "exp": 1_900_000_000,
            "iat": 1_800_000_000,
            "nonce": "nonce",
        }));
        let jwt = format!("{header}.{payload}.c2lnbmF0dXJlLVBMQUlOVEVYVA");
        serde_json::from_value(serde_json::json!({
            "access_token": "AT-PLAINTEXT-0123456789",
            "token_type": "DPoP",
            "expires_at": null,
            "refresh_token": "RT-PLAINTEXT-0123456789",
            "scope": "openid",
            "id_token": {"jwt": jwt},
            "received_at": 1_800_000_000_000u64,
            "dpop_key": key,
        }))
        .unwrap()
    }

    fn contains(haystack: &[u8], needle: &str) -> bool {
        haystack
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    }

    /// A record with a DPoP key, finished with tokens; returns the secret
    /// strings that must not appear in a sealed file.
    async fn write_secrets(store: &FileStore) -> Vec<String> {
        let key = DpopKey::generate(Algorithm::ES256).unwrap();
        let pkcs8 = serde_json::to_value(&key).unwrap()["pkcs8"]
            .as_str()
            .unwrap()
            .to_owned();
        let tokens = token_set(&key);
        let mut r = record("secretive", 0);
        r.auth.dpop_key = Some(Box::new(key));
        store.insert(r.clone()).await.unwrap();
        let outcome = StoredOutcome::new(at(10), Outcome::Tokens(tokens.clone()));
        store
            .finish(r.id(), finished_machine(&r), outcome.clone())
            .await
            .unwrap();
        assert_eq!(
            store.get(r.id()).await.unwrap().unwrap().outcome,
            Some(outcome)
        );
        // The middle of the base64 DER: the private scalar lives in there.
        let key_part = pkcs8[pkcs8.len() / 2..pkcs8.len() / 2 + 24].to_owned();
        vec![
            "AT-PLAINTEXT-0123456789".into(),
            "RT-PLAINTEXT-0123456789".into(),
            tokens.id_token().raw().secret().to_owned(),
            "c2lnbmF0dXJlLVBMQUlOVEVYVA".into(),
            key_part,
            r.id().secret().to_owned(),
            r.auth.nonce().secret().to_owned(),
            r.auth.pkce_verifier().secret().to_owned(),
        ]
    }

    #[tokio::test]
    async fn sealed_file_holds_no_plaintext_secret() {
        // Without a sealer the secrets are in the file: the check below
        // would see them.
        let dir = TempDir::new();
        let store = FileStore::open(dir.file()).unwrap();
        let secrets = write_secrets(&store).await;
        drop(store);
        let bytes = std::fs::read(dir.file()).unwrap();
        assert!(contains(&bytes, &secrets[0]), "the test cannot see tokens");

        let dir = TempDir::new();
        let store = FileStore::open_with_sealer(dir.file(), sealer(1)).unwrap();
        let secrets = write_secrets(&store).await;
        drop(store);
        let bytes = std::fs::read(dir.file()).unwrap();
        for s in &secrets {
            assert!(!contains(&bytes, s), "plaintext secret in the file: {s}");
        }

        // And it reads back with the key.
        let store = FileStore::open_with_sealer(dir.file(), sealer(1)).unwrap();
        let r = store.get(&id("secretive")).await.unwrap().unwrap();
        assert!(matches!(
            r.outcome.unwrap().outcome,
            Outcome::Tokens(t) if t.access_token().secret() == "AT-PLAINTEXT-0123456789"
        ));
        assert!(r.auth.dpop_key().is_some());
    }

    #[tokio::test]
    async fn wrong_key_or_missing_sealer_is_an_error() {
        let dir = TempDir::new();
        populate(&dir.file(), Some(sealer(1))).await;
        let e = FileStore::open_with_sealer(dir.file(), sealer(2)).unwrap_err();
        assert!(matches!(e, StoreError::Sealing(_)), "{e:?}");
        let e = FileStore::open(dir.file()).unwrap_err();
        assert!(matches!(e, StoreError::Sealing(_)), "{e:?}");
        // The failed opens changed no record. (redb's integrity check may
        // rewrite pages of a sound file, so the bytes are not compared.)
        {
            let store = FileStore::open_with_sealer(dir.file(), sealer(1)).unwrap();
            assert_eq!(store.load_active().await.unwrap().len(), 19);
        }

        // An unsealed store with records is not silently read as sealed.
        let plain = TempDir::new();
        populate(&plain.file(), None).await;
        let e = FileStore::open_with_sealer(plain.file(), sealer(1)).unwrap_err();
        assert!(matches!(e, StoreError::Sealing(_)), "{e:?}");

        // A sealed value moved under another record's key does not open.
        let store = FileStore::open_with_sealer(dir.file(), sealer(1)).unwrap();
        let moved = {
            let txn = store.inner().db.begin_read().unwrap();
            let records = txn.open_table(RECORDS).unwrap();
            records
                .get(&record_key(&id("r3")))
                .unwrap()
                .unwrap()
                .value()
                .to_vec()
        };
        write_raw(&store, record_key(&id("r4")), &moved);
        let e = store.get(&id("r4")).await.unwrap_err();
        assert!(matches!(e, StoreError::Sealing(_)), "{e:?}");
        assert!(
            e.to_string().contains(&id("r4").fingerprint().to_string()),
            "{e}"
        );
        assert!(store.get(&id("r3")).await.unwrap().is_some());
    }

    /// A machine whose next poll is `s` seconds after `T0 + 1000`: each
    /// value gives a different, recognisable state.
    fn machine_at(r: &Record, s: u64) -> PollMachine {
        let mut m = r.machine.clone();
        let step = m.handle::<crate::proto::token::TokenSet>(
            crate::proto::poll::Event::Wake,
            at(1000 + s),
            &crate::random::SystemRandom,
        );
        let _ = step;
        m.set_config(
            crate::proto::poll::PollConfig::default().backoff_cap(Duration::from_secs(s + 1)),
        );
        m
    }

    /// Issue 16: writes queued together share one transaction, and each
    /// caller gets its own answer: refused writes (unknown, duplicate,
    /// finished) fail alone, the others are written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_answers_each_write_on_its_own() {
        let dir = TempDir::new();
        let store = FileStore::open_with_options(
            dir.file(),
            None,
            FileStoreOptions::default().max_batch(1000),
        )
        .unwrap();
        store.bind("https://op.example", "client").await.unwrap();
        let records: Vec<Record> = (0..40).map(|i| record(&format!("b{i}"), i)).collect();
        let mut set = tokio::task::JoinSet::new();
        for r in records.clone() {
            let s = store.clone();
            set.spawn(async move { s.insert(r).await });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap().unwrap();
        }
        // Updates of every record (two for some: the last one queued wins),
        // unknown ids, a duplicate insert and a finish, all at once.
        let mut set = tokio::task::JoinSet::new();
        for (i, r) in records.iter().enumerate() {
            let (s, id, m) = (store.clone(), r.id().clone(), machine_at(r, i as u64));
            set.spawn(async move { ("update", s.update_state(&id, m).await) });
        }
        for i in 0..5 {
            let s = store.clone();
            let m = records[0].machine.clone();
            set.spawn(async move {
                (
                    "unknown",
                    s.update_state(&id(&format!("nobody{i}")), m).await,
                )
            });
        }
        let (s, dup) = (store.clone(), records[3].clone());
        set.spawn(async move { ("duplicate", s.insert(dup).await) });
        let mut counts: HashMap<&str, (usize, usize)> = HashMap::new();
        while let Some(r) = set.join_next().await {
            let (what, result) = r.unwrap();
            let c = counts.entry(what).or_default();
            match (what, result) {
                ("update", Ok(())) => c.0 += 1,
                ("unknown", Err(StoreError::NotFound { .. })) => c.0 += 1,
                ("duplicate", Err(StoreError::Duplicate { .. })) => c.0 += 1,
                (_, other) => panic!("{what}: {other:?}"),
            }
        }
        assert_eq!(counts["update"].0, 40);
        assert_eq!(counts["unknown"].0, 5);
        assert_eq!(counts["duplicate"].0, 1);
        for (i, r) in records.iter().enumerate() {
            let got = store.get(r.id()).await.unwrap().unwrap();
            assert_eq!(got.machine, machine_at(r, i as u64), "record {i}");
        }
        // Finished: later updates are refused, the outcome stays.
        let r = &records[7];
        store
            .finish(r.id(), finished_machine(r), denied(70))
            .await
            .unwrap();
        assert!(matches!(
            store.update_state(r.id(), r.machine.clone()).await,
            Err(StoreError::AlreadyFinished { .. })
        ));
        // `due` and `load_active` see the latest states; after a reopen too.
        let due = store.due(UnixTime::MAX, 100).await.unwrap();
        assert_eq!(due.len(), 39);
        for d in &due {
            let i = records.iter().position(|r| r.id() == d.id()).unwrap();
            assert_eq!(d.machine, machine_at(&records[i], i as u64));
        }
        drop(store);
        let store = FileStore::open(dir.file()).unwrap();
        let active = store.load_active().await.unwrap();
        assert_eq!(active.len(), 40);
        for a in &active {
            let i = records.iter().position(|r| r.id() == a.id()).unwrap();
            if i == 7 {
                assert_eq!(a.outcome, Some(denied(70)));
            } else {
                assert_eq!(a.machine, machine_at(&records[i], i as u64));
            }
        }
    }

    /// Issue 16: the queue is bounded. With room for one write per lane,
    /// many concurrent writers wait for room instead of queueing without
    /// limit, and every write is still made.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_makes_writers_wait() {
        let dir = TempDir::new();
        let store = FileStore::open_with_options(
            dir.file(),
            None,
            FileStoreOptions::default().queue_capacity(1).max_batch(2),
        )
        .unwrap();
        let records: Vec<Record> = (0..30).map(|i| record(&format!("q{i}"), i)).collect();
        for r in &records {
            store.insert(r.clone()).await.unwrap();
        }
        let mut set = tokio::task::JoinSet::new();
        for round in 0..5u64 {
            for (i, r) in records.iter().enumerate() {
                let (s, id) = (store.clone(), r.id().clone());
                let m = machine_at(r, round * 100 + i as u64);
                set.spawn(async move { s.update_state(&id, m).await });
            }
        }
        let lanes = store.writer.queue.lanes.lock().unwrap().updates.len();
        assert!(lanes <= 1, "{lanes} updates queued");
        while let Some(r) = set.join_next().await {
            r.unwrap().unwrap();
        }
        assert_eq!(store.writer.queue.update_room.available_permits(), 1);
        assert_eq!(store.due(UnixTime::MAX, 100).await.unwrap().len(), 30);
    }

    #[tokio::test]
    async fn a_panic_in_the_engine_is_an_error() {
        let (store, _dir) = temp_store();
        let r: Result<(), StoreError> = store.spawn(|_| panic!("simulated engine panic")).await;
        assert!(matches!(r, Err(StoreError::Corrupt { .. })), "{r:?}");
        // The store still works.
        store.insert(record("a", 0)).await.unwrap();
    }
}
