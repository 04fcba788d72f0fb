//! [`FileStoreOptions`]: the tuning of a [`FileStore`](super::FileStore)'s
//! writer (queue capacity, batch size).

/// Writes queued per lane before callers wait (the default of
/// [`FileStoreOptions::queue_capacity`]).
pub(super) const QUEUE_CAPACITY: usize = 8192;
/// State updates per transaction (the default of
/// [`FileStoreOptions::max_batch`]).
pub(super) const MAX_BATCH: usize = 4096;

/// Tuning of a [`FileStore`](super::FileStore)'s writer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileStoreOptions {
    /// Writes waiting for the writer, per lane (state updates; everything
    /// else), before a caller waits for room (default 8192). This bounds the
    /// memory a store can hold in queued writes: a driver whose polls
    /// answer faster than the disk takes their states slows its polls down.
    pub queue_capacity: usize,
    /// State updates written in one transaction, with one `fsync` when it
    /// is durable (default 4096). Inserts, outcomes and deliveries go
    /// first, into the same transaction, so they wait at most for one
    /// batch, never for the whole queue.
    pub max_batch: usize,
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
    /// Sets [`queue_capacity`](Self::queue_capacity) (at least 1).
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n.max(1);
        self
    }

    /// Sets [`max_batch`](Self::max_batch) (at least 1).
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n.max(1);
        self
    }
}
