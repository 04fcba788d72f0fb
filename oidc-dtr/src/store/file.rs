//! [`FileStore`]: the embedded durable store, one file, no server.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redb::{
    Builder, Database, DatabaseError, Durability, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, Table, TableDefinition, TableHandle, WriteTransaction,
};

use super::records::{open_record, seal_record};
use super::{
    Record, SCHEMA_VERSION, Sealer, Store, StoreError, StoreFuture, StoredOutcome, check_owner,
    check_schema, key_fingerprint, record_key,
};
use crate::proto::poll::PollMachine;
use crate::secret::DeferredAuthId;
use crate::time::UnixTime;

type Key = [u8; 32];
type IndexKey = (u64, [u8; 32]);

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const RECORDS: TableDefinition<Key, &[u8]> = TableDefinition::new("records");
const DUE: TableDefinition<IndexKey, ()> = TableDefinition::new("due");
const FINISHED: TableDefinition<IndexKey, ()> = TableDefinition::new("finished");

/// `meta["kind"]`: marks a file as ours.
const KIND: &[u8] = b"oidc-dtr store";
/// The plaintext of `meta["seal_check"]`, which tells a wrong key at open.
const SEAL_CHECK: &[u8] = b"oidc-dtr store seal check v1";
const SEAL_CHECK_AAD: &[u8] = b"oidc-dtr/meta/seal_check";

/// How long `update_state` may go without a durable commit.
const RELAXED_WINDOW: Duration = Duration::from_secs(1);
/// redb's page cache (its default is 1 GiB).
const CACHE_BYTES: usize = 64 * 1024 * 1024;

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
/// | `due`      | (due time in ms, record key)     | `()`: every unfinished record, at [`Record::due_at`] |
/// | `finished` | (finish time in ms, record key)  | `()`: every finished record, for [`Store::purge`] |
///
/// The id itself never appears in a key: it is inside the (sealable) value.
/// A record and its index entries always change in one transaction.
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
/// reclaiming pages, which it does only at durable commits.)
///
/// # Bad files
///
/// The file is checked when opened: every page's checksum is verified
/// (redb's integrity check), so a truncated, damaged or foreign file fails
/// with [`StoreError::Corrupt`], and the file is left byte for byte as it
/// was: nothing is repaired, rewritten or deleted. Should the storage engine still panic on bad bytes, the panic
/// is caught and reported as [`StoreError::Corrupt`] (this relies on
/// unwinding: with `panic = "abort"` the process stops instead). A record
/// that does not decode is reported, never skipped.
///
/// # Ownership
///
/// One `FileStore` owns its file: a second open, in this process or
/// another, fails with [`StoreError::Locked`] until the first is dropped.
/// Cloning it clones a handle to the same open file. Every method runs the
/// file IO on tokio's blocking pool, so they need a tokio runtime.
#[derive(Clone)]
pub struct FileStore {
    /// `None` once closed. Operations clone the `Arc` for their time on the
    /// blocking pool; `close` waits for them to end before dropping the
    /// database, which releases the file.
    inner: Arc<std::sync::RwLock<Option<Arc<Inner>>>>,
    path: PathBuf,
    sealed: bool,
}

struct Inner {
    db: Database,
    sealer: Option<Arc<dyn Sealer>>,
    path: PathBuf,
    last_durable: Mutex<Instant>,
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
        Self::open_inner(path.as_ref(), None)
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
        Self::open_inner(path.as_ref(), Some(sealer))
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

    fn open_inner(path: &Path, sealer: Option<Arc<dyn Sealer>>) -> Result<FileStore, StoreError> {
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
            let inner = Inner {
                db,
                sealer,
                path: owned,
                last_durable: Mutex::new(Instant::now()),
            };
            inner.init()?;
            Ok(inner)
        }));
        match opened {
            Ok(Ok(inner)) => Ok(FileStore {
                path: inner.path.clone(),
                sealed: inner.sealer.is_some(),
                inner: Arc::new(std::sync::RwLock::new(Some(Arc::new(inner)))),
            }),
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
    let inner = Inner {
        db,
        sealer,
        path: tmp.clone(),
        last_durable: Mutex::new(Instant::now()),
    };
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

            let records = txn.open_table(RECORDS).map_err(db_error)?;
            txn.open_table(DUE).map_err(db_error)?;
            txn.open_table(FINISHED).map_err(db_error)?;

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

    fn commit(&self, mut txn: WriteTransaction, durable: bool) -> Result<(), StoreError> {
        let mut last = self.last_durable.lock().unwrap_or_else(|e| e.into_inner());
        let durable = durable || last.elapsed() >= RELAXED_WINDOW;
        if !durable {
            txn.set_durability(Durability::None)
                .map_err(|e| StoreError::Other(e.to_string()))?;
        }
        txn.commit().map_err(db_error)?;
        if durable {
            *last = Instant::now();
        }
        Ok(())
    }

    fn encode(&self, key: &Key, record: &Record) -> Result<Vec<u8>, StoreError> {
        seal_record(self.sealer.as_deref(), key, record)
    }

    fn decode(&self, key: &Key, bytes: &[u8]) -> Result<Record, StoreError> {
        open_record(self.sealer.as_deref(), key, bytes)
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

    /// The record under `key` in a write transaction, decoded.
    fn load(&self, records: &Table<Key, &[u8]>, key: &Key) -> Result<Option<Record>, StoreError> {
        let bytes = records
            .get(key)
            .map_err(db_error)?
            .map(|g| g.value().to_vec());
        bytes.map(|b| self.decode(key, &b)).transpose()
    }

    fn bind(&self, issuer: &str, client_id: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_error)?;
        {
            let mut meta = txn.open_table(META).map_err(db_error)?;
            if let Some((i, c)) = Self::owner(&meta)? {
                return check_owner(Some((&i, &c)), issuer, client_id);
            }
            meta.insert("issuer", issuer.as_bytes()).map_err(db_error)?;
            meta.insert("client_id", client_id.as_bytes())
                .map_err(db_error)?;
        }
        self.commit(txn, true)
    }

    fn insert(&self, record: Record) -> Result<(), StoreError> {
        check_schema(&record)?;
        let key = record_key(record.id());
        let value = self.encode(&key, &record)?;
        let txn = self.db.begin_write().map_err(db_error)?;
        {
            let meta = txn.open_table(META).map_err(db_error)?;
            let owner = Self::owner(&meta)?;
            check_owner(
                owner.as_ref().map(|(i, c)| (i.as_str(), c.as_str())),
                record.auth.issuer(),
                record.auth.client_id(),
            )?;
            let mut records = txn.open_table(RECORDS).map_err(db_error)?;
            if records.get(&key).map_err(db_error)?.is_some() {
                return Err(StoreError::Duplicate {
                    record: record.fingerprint(),
                });
            }
            records.insert(&key, value.as_slice()).map_err(db_error)?;
            if let Some(t) = record.due_at() {
                let mut due = txn.open_table(DUE).map_err(db_error)?;
                due.insert((t.as_millis(), key), ()).map_err(db_error)?;
            }
            if let Some(t) = record.finished_at() {
                let mut finished = txn.open_table(FINISHED).map_err(db_error)?;
                finished
                    .insert((t.as_millis(), key), ())
                    .map_err(db_error)?;
            }
        }
        self.commit(txn, true)
    }

    fn update_state(&self, id: &DeferredAuthId, machine: PollMachine) -> Result<(), StoreError> {
        let key = record_key(id);
        let txn = self.db.begin_write().map_err(db_error)?;
        {
            let mut records = txn.open_table(RECORDS).map_err(db_error)?;
            let mut record = self.load(&records, &key)?.ok_or(StoreError::NotFound {
                record: id.fingerprint(),
            })?;
            if record.is_finished() {
                return Err(StoreError::AlreadyFinished {
                    record: id.fingerprint(),
                });
            }
            let old_due = record.due_at();
            record.machine = machine;
            let new_due = record.due_at();
            let value = self.encode(&key, &record)?;
            records.insert(&key, value.as_slice()).map_err(db_error)?;
            if old_due != new_due {
                let mut due = txn.open_table(DUE).map_err(db_error)?;
                if let Some(t) = old_due {
                    due.remove((t.as_millis(), key)).map_err(db_error)?;
                }
                if let Some(t) = new_due {
                    due.insert((t.as_millis(), key), ()).map_err(db_error)?;
                }
            }
        }
        self.commit(txn, false)
    }

    fn finish(
        &self,
        id: &DeferredAuthId,
        machine: PollMachine,
        outcome: StoredOutcome,
    ) -> Result<(), StoreError> {
        let key = record_key(id);
        let txn = self.db.begin_write().map_err(db_error)?;
        {
            let mut records = txn.open_table(RECORDS).map_err(db_error)?;
            let mut record = self.load(&records, &key)?.ok_or(StoreError::NotFound {
                record: id.fingerprint(),
            })?;
            if let Some(existing) = &record.outcome {
                // Dropping the transaction aborts it: nothing is written.
                return if existing.outcome == outcome.outcome {
                    Ok(())
                } else {
                    Err(StoreError::AlreadyFinished {
                        record: id.fingerprint(),
                    })
                };
            }
            let old_due = record.due_at();
            let finished_at = outcome.finished_at;
            record.machine = machine;
            record.outcome = Some(outcome);
            let value = self.encode(&key, &record)?;
            records.insert(&key, value.as_slice()).map_err(db_error)?;
            if let Some(t) = old_due {
                let mut due = txn.open_table(DUE).map_err(db_error)?;
                due.remove((t.as_millis(), key)).map_err(db_error)?;
            }
            let mut finished = txn.open_table(FINISHED).map_err(db_error)?;
            finished
                .insert((finished_at.as_millis(), key), ())
                .map_err(db_error)?;
        }
        self.commit(txn, true)
    }

    fn mark_delivered(&self, id: &DeferredAuthId) -> Result<bool, StoreError> {
        let key = record_key(id);
        let txn = self.db.begin_write().map_err(db_error)?;
        {
            let mut records = txn.open_table(RECORDS).map_err(db_error)?;
            let Some(mut record) = self.load(&records, &key)? else {
                return Ok(false);
            };
            match record.outcome.as_mut() {
                None => return Ok(false),
                Some(o) if o.delivered => return Ok(true),
                Some(o) => o.delivered = true,
            }
            let value = self.encode(&key, &record)?;
            records.insert(&key, value.as_slice()).map_err(db_error)?;
        }
        self.commit(txn, true)?;
        Ok(true)
    }

    fn get(&self, id: &DeferredAuthId) -> Result<Option<Record>, StoreError> {
        let key = record_key(id);
        let txn = self.db.begin_read().map_err(db_error)?;
        let records = txn.open_table(RECORDS).map_err(db_error)?;
        let bytes = records
            .get(&key)
            .map_err(db_error)?
            .map(|g| g.value().to_vec());
        bytes.map(|b| self.decode(&key, &b)).transpose()
    }

    fn due(&self, until: UnixTime, limit: usize) -> Result<Vec<Record>, StoreError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let due = txn.open_table(DUE).map_err(db_error)?;
        let records = txn.open_table(RECORDS).map_err(db_error)?;
        let mut out = Vec::new();
        for entry in due
            .range(..=(until.as_millis(), [0xff; 32]))
            .map_err(db_error)?
            .take(limit)
        {
            let (k, _) = entry.map_err(db_error)?;
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
            out.push(self.decode(&key, &bytes)?);
        }
        Ok(out)
    }

    fn load_active(&self) -> Result<Vec<Record>, StoreError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let records = txn.open_table(RECORDS).map_err(db_error)?;
        let mut out = Vec::new();
        for entry in records.iter().map_err(db_error)? {
            let (k, v) = entry.map_err(db_error)?;
            let record = self.decode(&k.value(), v.value())?;
            if record.outcome.as_ref().is_none_or(|o| !o.delivered) {
                out.push(record);
            }
        }
        Ok(out)
    }

    fn purge(&self, finished_before: UnixTime) -> Result<usize, StoreError> {
        let txn = self.db.begin_write().map_err(db_error)?;
        let mut removed = 0;
        {
            let mut finished = txn.open_table(FINISHED).map_err(db_error)?;
            let mut records = txn.open_table(RECORDS).map_err(db_error)?;
            let expired: Vec<IndexKey> = finished
                .range(..(finished_before.as_millis(), [0u8; 32]))
                .map_err(db_error)?
                .map(|e| e.map(|(k, _)| k.value()))
                .collect::<Result<_, _>>()
                .map_err(db_error)?;
            for entry in expired {
                if records.remove(&entry.1).map_err(db_error)?.is_some() {
                    removed += 1;
                }
                finished.remove(entry).map_err(db_error)?;
            }
        }
        if removed == 0 {
            // Nothing to purge (or only stale index entries): skip the fsync.
            txn.abort().map_err(db_error)?;
            return Ok(0);
        }
        self.commit(txn, true)?;
        Ok(removed)
    }
}

impl Store for FileStore {
    fn bind(&self, issuer: &str, client_id: &str) -> StoreFuture<Result<(), StoreError>> {
        let (issuer, client_id) = (issuer.to_owned(), client_id.to_owned());
        self.spawn(move |s| s.bind(&issuer, &client_id))
    }

    fn insert(&self, record: Record) -> StoreFuture<Result<(), StoreError>> {
        self.spawn(move |s| s.insert(record))
    }

    fn update_state(
        &self,
        id: &DeferredAuthId,
        machine: PollMachine,
    ) -> StoreFuture<Result<(), StoreError>> {
        let id = id.clone();
        self.spawn(move |s| s.update_state(&id, machine))
    }

    fn finish(
        &self,
        id: &DeferredAuthId,
        machine: PollMachine,
        outcome: StoredOutcome,
    ) -> StoreFuture<Result<(), StoreError>> {
        let id = id.clone();
        self.spawn(move |s| s.finish(&id, machine, outcome))
    }

    fn mark_delivered(&self, id: &DeferredAuthId) -> StoreFuture<Result<bool, StoreError>> {
        let id = id.clone();
        self.spawn(move |s| s.mark_delivered(&id))
    }

    fn get(&self, id: &DeferredAuthId) -> StoreFuture<Result<Option<Record>, StoreError>> {
        let id = id.clone();
        self.spawn(move |s| s.get(&id))
    }

    fn due(&self, until: UnixTime, limit: usize) -> StoreFuture<Result<Vec<Record>, StoreError>> {
        self.spawn(move |s| s.due(until, limit))
    }

    fn load_active(&self) -> StoreFuture<Result<Vec<Record>, StoreError>> {
        self.spawn(|s| s.load_active())
    }

    fn purge(&self, finished_before: UnixTime) -> StoreFuture<Result<usize, StoreError>> {
        self.spawn(move |s| s.purge(finished_before))
    }

    fn close(&self) -> StoreFuture<Result<(), StoreError>> {
        let slot = self.inner.clone();
        Box::pin(async move {
            let taken = slot.write().unwrap_or_else(|e| e.into_inner()).take();
            let Some(inner) = taken else {
                return Ok(());
            };
            tokio::task::spawn_blocking(move || {
                // Operations still on the blocking pool hold their own `Arc`:
                // wait for them, so that dropping ours closes the database.
                let mut inner = inner;
                let deadline = Instant::now() + std::time::Duration::from_secs(30);
                loop {
                    match Arc::try_unwrap(inner) {
                        Ok(owned) => {
                            // One durable commit makes the relaxed
                            // `update_state` commits before it durable too.
                            let txn = owned.db.begin_write().map_err(db_error)?;
                            txn.commit().map_err(db_error)?;
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
    use crate::proto::poll::Outcome;
    use crate::proto::token::TokenSet;
    use crate::store::AesGcmSealer;
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
            let mut due = txn.open_table(DUE).unwrap();
            due.insert((at(1).as_millis(), key), ()).unwrap();
        }
        txn.commit().unwrap();
    }

    #[tokio::test]
    async fn unknown_record_schema_is_reported_not_skipped() {
        let (store, _dir) = temp_store();
        store.insert(record("a", 0)).await.unwrap();
        let mut json = serde_json::to_value(record("new", 0)).unwrap();
        json["schema"] = 99.into();
        json["field_from_the_future"] = "x".into();
        let key = record_key(&id("new"));
        write_raw(&store, key, &serde_json::to_vec(&json).unwrap());

        let is_unsupported = |e: StoreError| {
            assert!(
                matches!(
                    e,
                    StoreError::UnsupportedSchema { found: 99, supported: 1, record: Some(fp) }
                        if fp == id("new").fingerprint()
                ),
                "{e:?}"
            );
        };
        is_unsupported(store.get(&id("new")).await.unwrap_err());
        is_unsupported(store.load_active().await.unwrap_err());
        is_unsupported(store.due(UnixTime::MAX, 10).await.unwrap_err());
        is_unsupported(
            store
                .update_state(&id("new"), record("new", 0).machine)
                .await
                .unwrap_err(),
        );
        // The other record is still readable, and nothing was removed.
        assert!(store.get(&id("a")).await.unwrap().is_some());
        is_unsupported(store.get(&id("new")).await.unwrap_err());
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

    #[tokio::test]
    async fn a_panic_in_the_engine_is_an_error() {
        let (store, _dir) = temp_store();
        let r: Result<(), StoreError> = store.spawn(|_| panic!("simulated engine panic")).await;
        assert!(matches!(r, Err(StoreError::Corrupt { .. })), "{r:?}");
        // The store still works.
        store.insert(record("a", 0)).await.unwrap();
    }
}
