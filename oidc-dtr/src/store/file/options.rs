//! [`FileStoreOptions`]: the tuning of a [`FileStore`](super::FileStore)'s
//! writer (queue capacity, batch size).

/// Writes queued per lane before callers wait (the default of
/// [`FileStoreOptions::queue_capacity`]).
pub(super) const QUEUE_CAPACITY: usize = 8192;
/// State updates per transaction (the default of
/// [`FileStoreOptions::max_batch`]).
pub(super) const MAX_BATCH: usize = 4096;

/// Tuning of a [`FileStore`](super::FileStore)'s writer: [`FileStoreOptions::default`] and
/// the setters.
///
/// ```
/// use oidc_dtr::store::FileStoreOptions;
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
