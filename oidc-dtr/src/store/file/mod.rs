//! [`FileStore`]: the embedded durable store, one file, no server.
//!
//! One concern per file:
//!
//! - this file: the [`FileStore`] handle, opening and creating the file,
//!   and the [`Store`] methods, which hand writes to the writer and reads
//!   to the blocking pool;
//! - `options`: [`FileStoreOptions`], the tuning of the writer;
//! - `schema`: the tables, the `meta` checks at open (kind, schema
//!   version, seal check, owner, the move of the legacy `due` index) and
//!   the encoding and versioned decoding of records;
//! - `writer`: the writer thread, its two-lane queue and the group-commit
//!   path (each write's effect on the tables, one transaction per batch);
//! - `read`: the in-memory due index and the reads (`get`, `due`,
//!   `load_active`), which sort out the records they cannot use;
//! - `quarantine`: setting bad records aside and releasing them.

use std::collections::HashMap;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use redb::{Builder, Database};

use super::records::seal_machine;
use super::{
    QuarantinedRecord, Record, RecordKey, Sealer, Store, StoreError, StoreFuture, StoreNotice,
    StoredOutcome, check_schema, due_of, record_key,
};
use crate::proto::poll::PollMachine;
use crate::secret::DeferredId;
use crate::time::UnixTime;

mod options;
mod quarantine;
mod read;
mod schema;
#[cfg(test)]
mod tests;
mod writer;

pub use options::FileStoreOptions;
use schema::{Key, open_error};
use writer::{Done, Op, Writer};

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
///
/// ```
/// use oidc_dtr::error::StoreError;
/// use oidc_dtr::store::FileStore;
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), StoreError> {
/// # let dir = std::env::temp_dir().join(format!("oidc-dtr-doc-filestore-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir)?;
/// let path = dir.join("pending.db");
/// let store = FileStore::open(&path)?; // then `DtrClient::builder().store(store)`
/// assert_eq!(store.path(), path.as_path());
/// // One process owns the file at a time.
/// assert!(matches!(FileStore::open(&path), Err(StoreError::Locked { .. })));
/// # drop(store);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(()) }
/// ```
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

impl Inner {
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
        id: &DeferredId,
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
        id: &DeferredId,
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

    fn mark_delivered(&self, id: &DeferredId) -> StoreFuture<Result<bool, StoreError>> {
        let done = self.submit(Op::MarkDelivered {
            key: record_key(id),
        });
        Box::pin(async move { Ok(matches!(done.await?, Done::Flag(true))) })
    }

    fn get(&self, id: &DeferredId) -> StoreFuture<Result<Option<Record>, StoreError>> {
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
