//! The write path: one writer thread, a bounded queue with two lanes
//! (state updates; everything else), group commit (many writes, one
//! transaction, at most one `fsync`), and what each write does to the
//! tables.

use std::collections::{HashMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use redb::{Durability, ReadableTable, Table, WriteTransaction};
use tokio::sync::{Semaphore, oneshot};

use crate::proto::poll::PollMachine;
use crate::secret::Fingerprint;
use crate::store::{
    Record, RecordKey, StoreError, StoreFuture, StoreNotice, StoredOutcome, check_owner,
    is_bad_record, record_key, report_quarantined,
};
use crate::time::UnixTime;

use super::schema::{FINISHED, IndexKey, Key, META, PENDING, QUARANTINE, RECORDS, db_error};
use super::{FileStore, FileStoreOptions, Inner, engine_panicked};

/// How long `update_state` may go without a durable commit.
pub(super) const RELAXED_WINDOW: Duration = Duration::from_secs(1);
/// How long the writer waits for more state updates before it writes a
/// batch of fewer than `max_batch` (and no urgent write).
pub(super) const LINGER: Duration = Duration::from_millis(20);

impl Inner {
    pub(super) fn commit(
        &self,
        mut txn: WriteTransaction,
        durable: bool,
    ) -> Result<(), StoreError> {
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
    pub(super) fn sync(&self) -> Result<(), StoreError> {
        if self.synced.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(db_error)?;
        self.commit(txn, true)
    }

    /// Runs one batch of writes in one transaction: the urgent ones first,
    /// in order, then the state updates (the last of several for one record
    /// wins). Answers every caller once the transaction is committed. If
    /// the transaction as a whole fails, every write is retried in a
    /// transaction of its own, so that one bad write fails alone.
    pub(super) fn run_batch(&self, urgent: Vec<Job>, updates: Vec<Job>) {
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
    pub(super) fn try_batch(
        &self,
        jobs: &[Job],
    ) -> Result<Vec<Result<Done, StoreError>>, StoreError> {
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

    /// Decodes a record a write needs; one that does not read is
    /// quarantined in the same transaction and the write refused.
    pub(super) fn decode_for_write(
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

    pub(super) fn op_bind(
        &self,
        t: &mut Tables<'_>,
        issuer: &str,
        client_id: &str,
    ) -> Result<Done, Fail> {
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

    pub(super) fn op_insert(
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
    pub(super) fn not_pending(&self, t: &Tables<'_>, key: &Key, fp: Fingerprint) -> Fail {
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
    pub(super) fn op_update(
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
    pub(super) fn op_finish(
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

    pub(super) fn op_mark_delivered(
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

    pub(super) fn op_purge(
        &self,
        t: &mut Tables<'_>,
        finished_before: UnixTime,
    ) -> Result<Done, Fail> {
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
}

/// The tables a batch writes, opened once for all its writes.
pub(super) struct Tables<'t> {
    pub(super) meta: Table<'t, &'static str, &'static [u8]>,
    pub(super) records: Table<'t, Key, &'static [u8]>,
    pub(super) pending: Table<'t, IndexKey, &'static [u8]>,
    pub(super) finished: Table<'t, IndexKey, ()>,
    pub(super) quarantine: Table<'t, Key, &'static [u8]>,
}

/// Why a write of a batch failed.
pub(super) enum Fail {
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
pub(super) fn fatal(e: impl Into<redb::Error>) -> Fail {
    Fail::Batch(db_error(e))
}

/// A write for the writer thread.
pub(super) enum Op {
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
pub(super) enum Done {
    Unit,
    Flag(bool),
    Count(usize),
}

pub(super) struct Job {
    op: Op,
    reply: oneshot::Sender<Result<Done, StoreError>>,
}

/// The writer's queue: two lanes, each bounded by a semaphore whose
/// permits are the free places.
pub(super) struct Queue {
    lanes: Mutex<Lanes>,
    ready: Condvar,
    /// Room for state updates.
    update_room: Semaphore,
    /// Room for everything else (inserts, outcomes, deliveries, purges).
    urgent_room: Semaphore,
}

pub(super) struct Lanes {
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
pub(super) struct Writer {
    queue: Arc<Queue>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Writer {
    pub(super) fn start(
        inner: Arc<Inner>,
        options: &FileStoreOptions,
    ) -> Result<Writer, StoreError> {
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
    pub(super) fn stop(&self) {
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

pub(super) fn writer_loop(inner: &Inner, queue: &Queue, max_batch: usize) {
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
    pub(super) fn submit(&self, op: Op) -> StoreFuture<Result<Done, StoreError>> {
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

    pub(super) fn submit_unit(&self, op: Op) -> StoreFuture<Result<(), StoreError>> {
        let done = self.submit(op);
        Box::pin(async move { done.await.map(|_| ()) })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::FileStore;
    use super::super::tests::TempDir;
    use super::*;
    use crate::store::test_records::{at, denied, finished_machine, id, record};
    use crate::store::{Store, StoreError};

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
}
