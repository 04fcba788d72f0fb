//! [`MemoryStore`]: records in a map, gone when the process ends.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{
    QuarantinedRecord, Record, RecordKey, Store, StoreError, StoreFuture, StoredOutcome,
    check_owner, check_record_owner, check_schema, key_fingerprint, record_key, report_quarantined,
};
use crate::proto::poll::PollMachine;
use crate::secret::DeferredId;
use crate::time::UnixTime;

/// A [`Store`] in memory: for tests and for applications that accept
/// losing their pending authentications (and undelivered outcomes) on
/// restart.
///
/// Records inserted before [`bind`](Store::bind) that name another issuer
/// or client are quarantined when it binds ([`Store::quarantined`]), so
/// that they are never handed out.
///
/// Every operation is atomic (one mutex) and nothing is durable. `due` is
/// answered from a queue of due times, built at the first call (a client
/// that never asks pays nothing for it), so it then costs
/// `O((k + s) log n)` for `k` records returned and `s` outdated entries
/// dropped on the way. Cloning the store clones a handle to the same
/// records.
///
/// ```
/// use oidc_dtr::{CallbackResponse, DtrClient};
/// use oidc_dtr::store::MemoryStore;
/// use oidc_dtr_testkit::MockOp;
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let op = MockOp::start().await?;
/// let store = MemoryStore::new(); // clones share the records
/// let client = DtrClient::builder()
/// #     .issuer(op.issuer())
/// #     .client_id(MockOp::CLIENT_ID)
/// #     .client_secret(MockOp::CLIENT_SECRET)
/// #     .redirect_uri("http://127.0.0.1:9/callback")
///     // issuer, client id, ...
///     .store(store.clone())
///     .build()
///     .await?;
/// # let (url, pending) = client.authorize().build()?;
/// # let back = op.browse(&url).await?;
/// # let CallbackResponse::Acknowledgment(ack) = client.callback(&pending, back.query())? else { panic!() };
/// let auth = client.exchange(ack).await?;
/// assert_eq!(store.len(), 1); // written before `exchange` returned
/// # let _ = auth;
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    owner: Option<(String, String)>,
    /// Boxed: the map's spare slots then cost a pointer, not a record.
    records: HashMap<[u8; 32], Box<Compact>>,
    /// When the unfinished records are due: built at the first `due`.
    due: Option<DueQueue>,
    /// Records set aside at `bind`, with the reason.
    quarantined: HashMap<[u8; 32], (Box<Compact>, String)>,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.lock().records.len();
        f.debug_struct("MemoryStore")
            .field("records", &n)
            .finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many records it holds (finished or not).
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    /// Whether it holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock cannot leave a record
        // half-written (every change is a whole-value swap), so a poisoned
        // lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Inner) -> Result<T, StoreError>,
    ) -> StoreFuture<Result<T, StoreError>> {
        let r = f(&mut self.lock());
        Box::pin(std::future::ready(r))
    }
}

impl Inner {
    fn owner(&self) -> Option<(&str, &str)> {
        self.owner.as_ref().map(|(i, c)| (i.as_str(), c.as_str()))
    }

    /// Notes that `key` (in `records`) is due as its record says now.
    fn index(&mut self, key: [u8; 32]) {
        let Inner { records, due, .. } = self;
        if let (Some(queue), Some(record)) = (due.as_mut(), records.get(&key)) {
            queue.push(key, record, records);
        }
    }
}

/// The due times of the unfinished records: a min-heap of (due time in ms,
/// record key), with lazy deletion. A change of a record's due time pushes
/// a new entry and leaves the old one in place; an entry is live while its
/// record exists, is unfinished and is due at exactly that time. Outdated
/// entries are dropped when they reach the top (the driver updates records
/// in due order, so an update's outdated entry is usually at the top), and
/// the heap is rebuilt from the records when they outnumber the records.
#[derive(Default)]
struct DueQueue {
    heap: BinaryHeap<Reverse<(u64, [u8; 32])>>,
}

impl DueQueue {
    /// A queue of every unfinished record of `records`.
    fn build(records: &HashMap<[u8; 32], Box<Compact>>) -> Self {
        let heap = records
            .iter()
            .filter_map(|(k, r)| r.due_ms().map(|t| Reverse((t, *k))))
            .collect::<Vec<_>>()
            .into();
        DueQueue { heap }
    }

    fn live(records: &HashMap<[u8; 32], Box<Compact>>, t: u64, key: &[u8; 32]) -> bool {
        records.get(key).and_then(|r| r.due_ms()) == Some(t)
    }

    /// Adds `record`'s due time, and drops outdated entries at the top.
    fn push(&mut self, key: [u8; 32], record: &Compact, records: &HashMap<[u8; 32], Box<Compact>>) {
        if let Some(t) = record.due_ms() {
            self.heap.push(Reverse((t, key)));
        }
        self.prune(records);
    }

    /// Drops the outdated entries at the top; rebuilds the heap when they
    /// are more than the records.
    fn prune(&mut self, records: &HashMap<[u8; 32], Box<Compact>>) {
        while let Some(Reverse((t, key))) = self.heap.peek() {
            if Self::live(records, *t, key) {
                break;
            }
            self.heap.pop();
        }
        if self.heap.len() > 2 * records.len() + 1024 {
            *self = Self::build(records);
        }
    }

    /// The keys of at most `limit` live entries due at or before `until`,
    /// earliest first (ties by key); they stay in the queue.
    fn due(
        &mut self,
        records: &HashMap<[u8; 32], Box<Compact>>,
        until: u64,
        limit: usize,
    ) -> Vec<[u8; 32]> {
        let mut taken: Vec<(u64, [u8; 32])> = Vec::new();
        while taken.len() < limit {
            let Some(Reverse((t, key))) = self.heap.peek().copied() else {
                break;
            };
            if t > until {
                break;
            }
            self.heap.pop();
            // Outdated, or a second entry of one due time (a record whose
            // due time changed and came back): dropped.
            if taken.last() != Some(&(t, key)) && Self::live(records, t, &key) {
                taken.push((t, key));
            }
        }
        let keys = taken.iter().map(|(_, k)| *k).collect();
        self.heap.extend(taken.into_iter().map(Reverse));
        keys
    }
}

/// A record as this store keeps it: the outcome (absent while pending) out
/// of line, and no schema (only records of [`SCHEMA_VERSION`](super::SCHEMA_VERSION)
/// are taken in). The authentication is shared with the poll driver's copy.
struct Compact {
    auth: crate::proto::exchange::DeferredAuthentication,
    machine: PollMachine,
    outcome: Option<Box<StoredOutcome>>,
}

impl From<Record> for Compact {
    fn from(r: Record) -> Self {
        Compact {
            auth: r.auth,
            machine: r.machine,
            outcome: r.outcome.map(Box::new),
        }
    }
}

impl Compact {
    fn record(&self) -> Record {
        Record {
            schema: super::SCHEMA_VERSION,
            auth: self.auth.clone(),
            machine: self.machine.clone(),
            outcome: self.outcome.as_deref().cloned(),
        }
    }

    fn is_finished(&self) -> bool {
        self.outcome.is_some()
    }

    fn due_at(&self) -> Option<UnixTime> {
        (!self.is_finished()).then(|| super::due_of(&self.machine))
    }

    fn due_ms(&self) -> Option<u64> {
        self.due_at().map(UnixTime::as_millis)
    }

    fn finished_at(&self) -> Option<UnixTime> {
        self.outcome.as_ref().map(|o| o.finished_at)
    }
}

impl Store for MemoryStore {
    fn bind(&self, issuer: &str, client_id: &str) -> StoreFuture<Result<(), StoreError>> {
        self.run(|inner| {
            check_owner(inner.owner(), issuer, client_id)?;
            if inner.owner.is_none() {
                inner.owner = Some((issuer.to_owned(), client_id.to_owned()));
                // Records inserted before, of another issuer or client,
                // are never handed out: set aside.
                let foreign: Vec<([u8; 32], StoreError)> = inner
                    .records
                    .iter()
                    .filter_map(|(k, r)| {
                        check_record_owner(Some((issuer, client_id)), &r.record())
                            .err()
                            .map(|e| (*k, e))
                    })
                    .collect();
                for (key, e) in foreign {
                    if let Some(r) = inner.records.remove(&key) {
                        report_quarantined("memory", &key, &e);
                        inner.quarantined.insert(key, (r, e.to_string()));
                    }
                }
            }
            Ok(())
        })
    }

    fn insert(&self, record: Record) -> StoreFuture<Result<(), StoreError>> {
        self.run(move |inner| {
            check_schema(&record)?;
            check_owner(inner.owner(), record.auth.issuer(), record.auth.client_id())?;
            let key = record_key(record.id());
            if inner.records.contains_key(&key) || inner.quarantined.contains_key(&key) {
                return Err(StoreError::Duplicate {
                    record: record.fingerprint(),
                });
            }
            inner.records.insert(key, Box::new(Compact::from(record)));
            inner.index(key);
            Ok(())
        })
    }

    fn update_state(
        &self,
        id: &DeferredId,
        machine: PollMachine,
    ) -> StoreFuture<Result<(), StoreError>> {
        // One hash: the fingerprint is the key's prefix.
        let key = record_key(id);
        let fp = key_fingerprint(&key);
        self.run(move |inner| {
            let record = inner
                .records
                .get_mut(&key)
                .ok_or(StoreError::NotFound { record: fp })?;
            if record.is_finished() {
                return Err(StoreError::AlreadyFinished { record: fp });
            }
            let unchanged = super::due_of(&record.machine) == super::due_of(&machine);
            record.machine = machine;
            if !unchanged {
                inner.index(key);
            }
            Ok(())
        })
    }

    fn finish(
        &self,
        id: &DeferredId,
        machine: PollMachine,
        outcome: StoredOutcome,
    ) -> StoreFuture<Result<(), StoreError>> {
        let key = record_key(id);
        let fp = key_fingerprint(&key);
        self.run(move |inner| {
            let record = inner
                .records
                .get_mut(&key)
                .ok_or(StoreError::NotFound { record: fp })?;
            if let Some(existing) = &record.outcome {
                return if existing.outcome == outcome.outcome {
                    Ok(())
                } else {
                    Err(StoreError::AlreadyFinished { record: fp })
                };
            }
            // Its entries in the due queue are outdated now.
            record.machine = machine;
            record.outcome = Some(Box::new(outcome));
            Ok(())
        })
    }

    fn mark_delivered(&self, id: &DeferredId) -> StoreFuture<Result<bool, StoreError>> {
        let key = record_key(id);
        self.run(move |inner| {
            Ok(
                match inner.records.get_mut(&key).and_then(|r| r.outcome.as_mut()) {
                    Some(o) => {
                        o.delivered = true;
                        true
                    }
                    None => false,
                },
            )
        })
    }

    fn get(&self, id: &DeferredId) -> StoreFuture<Result<Option<Record>, StoreError>> {
        let key = record_key(id);
        self.run(move |inner| Ok(inner.records.get(&key).map(|r| r.record())))
    }

    fn due(&self, until: UnixTime, limit: usize) -> StoreFuture<Result<Vec<Record>, StoreError>> {
        self.run(move |inner| {
            let Inner { records, due, .. } = inner;
            let queue = due.get_or_insert_with(|| DueQueue::build(records));
            let keys = queue.due(records, until.as_millis(), limit);
            // Every key is of a live entry: its record exists.
            Ok(keys
                .iter()
                .filter_map(|k| records.get(k).map(|r| r.record()))
                .collect())
        })
    }

    fn load_active(&self) -> StoreFuture<Result<Vec<Record>, StoreError>> {
        self.run(|inner| {
            Ok(inner
                .records
                .values()
                .filter(|r| r.outcome.as_ref().is_none_or(|o| !o.delivered))
                .map(|r| r.record())
                .collect())
        })
    }

    fn purge(&self, finished_before: UnixTime) -> StoreFuture<Result<usize, StoreError>> {
        self.run(move |inner| {
            let before = inner.records.len();
            inner
                .records
                .retain(|_, r| r.finished_at().is_none_or(|t| t >= finished_before));
            Ok(before - inner.records.len())
        })
    }

    fn quarantined(&self) -> StoreFuture<Result<Vec<QuarantinedRecord>, StoreError>> {
        self.run(|inner| {
            Ok(inner
                .quarantined
                .iter()
                .map(|(k, (_, reason))| QuarantinedRecord::new(RecordKey(*k), reason.clone()))
                .collect())
        })
    }

    fn release_quarantined(&self, key: RecordKey) -> StoreFuture<Result<bool, StoreError>> {
        self.run(move |inner| {
            let Some((r, _)) = inner.quarantined.get(&key.0) else {
                return Ok(false);
            };
            check_record_owner(inner.owner(), &r.record())?;
            if let Some((r, _)) = inner.quarantined.remove(&key.0) {
                inner.records.insert(key.0, r);
                inner.index(key.0);
            }
            Ok(true)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::test_records::{at, denied, record};

    fn block<T>(f: StoreFuture<T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn due_ids(s: &MemoryStore, until: UnixTime, limit: usize) -> Vec<String> {
        block(s.due(until, limit))
            .unwrap()
            .iter()
            .map(|r| r.id().secret().to_owned())
            .collect()
    }

    /// `r`'s machine with its next poll moved to `T0 + s` seconds (as
    /// after a `Retry-After`): a new due time.
    fn due_at(r: &Record, s: u64) -> PollMachine {
        let mut m = r.machine.clone();
        m.delay_for_tests(at(s));
        m
    }

    #[test]
    fn the_due_queue_skips_outdated_entries_and_repeats_none() {
        let s = MemoryStore::new();
        let (a, b) = (record("a", 0), record("b", 0));
        block(s.insert(a.clone())).unwrap();
        block(s.insert(b.clone())).unwrap();
        // No queue until the first `due`.
        assert!(s.lock().due.is_none());
        assert_eq!(due_ids(&s, at(5), 10).len(), 2);
        assert!(s.lock().due.is_some());
        // `a` moves later, then back to where it was: one entry counts.
        block(s.update_state(a.id(), due_at(&a, 100))).unwrap();
        assert_eq!(due_ids(&s, at(5), 10), [b.id().secret()]);
        assert_eq!(due_ids(&s, at(100), 10).len(), 2);
        block(s.update_state(a.id(), due_at(&a, 5))).unwrap();
        block(s.update_state(a.id(), due_at(&a, 100))).unwrap();
        block(s.update_state(a.id(), due_at(&a, 5))).unwrap();
        let both = due_ids(&s, at(5), 10);
        assert_eq!(both.len(), 2, "{both:?}");
        // The limit counts records, not entries; asking again answers alike.
        assert_eq!(due_ids(&s, at(5), 1).len(), 1);
        assert_eq!(due_ids(&s, at(5), 10), both);
        // Finished and purged records are never due.
        let done = crate::store::test_records::finished_machine(&a);
        block(s.finish(a.id(), done, denied(1))).unwrap();
        assert_eq!(due_ids(&s, at(1000), 10), [b.id().secret()]);
        assert_eq!(block(s.purge(at(2))).unwrap(), 1);
        assert_eq!(due_ids(&s, at(1000), 10), [b.id().secret()]);
        // A record inserted once the queue exists is in it.
        let c = record("c", 0);
        block(s.insert(c.clone())).unwrap();
        assert_eq!(due_ids(&s, at(1000), 10).len(), 2);
    }

    #[test]
    fn the_due_queue_stays_within_twice_the_records() {
        let s = MemoryStore::new();
        let records: Vec<Record> = (0..50).map(|i| record(&format!("r{i}"), 0)).collect();
        for r in &records {
            block(s.insert(r.clone())).unwrap();
        }
        assert_eq!(due_ids(&s, at(5), 100).len(), 50);
        // Many updates in an order the top-of-heap pruning cannot follow
        // (each record moves back and forth, later first).
        for round in 0..200u64 {
            for r in records.iter().rev() {
                let t = if round % 2 == 0 {
                    1000 + round
                } else {
                    10 + round
                };
                block(s.update_state(r.id(), due_at(r, t))).unwrap();
            }
            let len = s.lock().due.as_ref().unwrap().heap.len();
            assert!(len <= 2 * 50 + 1024 + 1, "{len}");
        }
        // Every record is due once, at its last due time (10 + 199).
        assert!(due_ids(&s, at(208), 100).is_empty());
        assert_eq!(due_ids(&s, at(209), 100).len(), 50);
    }

    #[test]
    fn a_quarantined_record_is_never_due() {
        let s = MemoryStore::new();
        let r = record("foreign", 0);
        block(s.insert(r.clone())).unwrap();
        assert_eq!(due_ids(&s, at(5), 10).len(), 1);
        block(s.bind("https://other.example", "client")).unwrap();
        assert!(due_ids(&s, at(5), 10).is_empty());
        let q = block(s.quarantined()).unwrap();
        assert_eq!(q.len(), 1);
        // Released only for a matching owner: this one stays set aside.
        assert!(block(s.release_quarantined(q[0].key)).is_err());
        assert!(due_ids(&s, at(5), 10).is_empty());
    }

    #[test]
    fn debug_shows_only_a_count() {
        let s = MemoryStore::new();
        assert!(s.is_empty());
        assert_eq!(format!("{s:?}"), "MemoryStore { records: 0, .. }");
    }
}
