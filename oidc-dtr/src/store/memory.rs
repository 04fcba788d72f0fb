//! [`MemoryStore`]: records in a map, gone when the process ends.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{
    QuarantinedRecord, Record, RecordKey, Store, StoreError, StoreFuture, StoredOutcome,
    check_owner, check_record_owner, check_schema, record_key, report_quarantined,
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
/// answered from an ordered index, so it costs `O(log n + k)`. Cloning the
/// store clones a handle to the same records.
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
    /// (due time in ms, record key) of every unfinished record.
    due: BTreeSet<(u64, [u8; 32])>,
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
}

/// A record as this store keeps it: the outcome (absent while pending) out
/// of line. The authentication is shared with the poll driver's copy.
struct Compact {
    schema: u32,
    auth: crate::proto::exchange::DeferredAuthentication,
    machine: PollMachine,
    outcome: Option<Box<StoredOutcome>>,
}

impl From<Record> for Compact {
    fn from(r: Record) -> Self {
        Compact {
            schema: r.schema,
            auth: r.auth,
            machine: r.machine,
            outcome: r.outcome.map(Box::new),
        }
    }
}

impl Compact {
    fn record(&self) -> Record {
        Record {
            schema: self.schema,
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

    fn finished_at(&self) -> Option<UnixTime> {
        self.outcome.as_ref().map(|o| o.finished_at)
    }
}

fn index(due: &mut BTreeSet<(u64, [u8; 32])>, key: [u8; 32], record: &Compact) {
    if let Some(t) = record.due_at() {
        due.insert((t.as_millis(), key));
    }
}

fn unindex(due: &mut BTreeSet<(u64, [u8; 32])>, key: [u8; 32], record: &Compact) {
    if let Some(t) = record.due_at() {
        due.remove(&(t.as_millis(), key));
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
                        unindex(&mut inner.due, key, &r);
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
            let record = Compact::from(record);
            index(&mut inner.due, key, &record);
            inner.records.insert(key, Box::new(record));
            Ok(())
        })
    }

    fn update_state(
        &self,
        id: &DeferredId,
        machine: PollMachine,
    ) -> StoreFuture<Result<(), StoreError>> {
        let fp = id.fingerprint();
        let key = record_key(id);
        self.run(move |inner| {
            let Inner { records, due, .. } = inner;
            let record = records
                .get_mut(&key)
                .ok_or(StoreError::NotFound { record: fp })?;
            if record.is_finished() {
                return Err(StoreError::AlreadyFinished { record: fp });
            }
            unindex(due, key, record);
            record.machine = machine;
            index(due, key, record);
            Ok(())
        })
    }

    fn finish(
        &self,
        id: &DeferredId,
        machine: PollMachine,
        outcome: StoredOutcome,
    ) -> StoreFuture<Result<(), StoreError>> {
        let fp = id.fingerprint();
        let key = record_key(id);
        self.run(move |inner| {
            let Inner { records, due, .. } = inner;
            let record = records
                .get_mut(&key)
                .ok_or(StoreError::NotFound { record: fp })?;
            if let Some(existing) = &record.outcome {
                return if existing.outcome == outcome.outcome {
                    Ok(())
                } else {
                    Err(StoreError::AlreadyFinished { record: fp })
                };
            }
            unindex(due, key, record);
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
            let until = (until.as_millis(), [0xff; 32]);
            let mut out = Vec::new();
            for (_, key) in inner.due.range(..=until).take(limit) {
                let record = inner.records.get(key).ok_or_else(|| {
                    StoreError::corrupt(
                        Some(super::key_fingerprint(key)),
                        "the due index names a missing record",
                    )
                })?;
                out.push(record.record());
            }
            Ok(out)
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
                index(&mut inner.due, key.0, &r);
                inner.records.insert(key.0, r);
            }
            Ok(true)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_only_a_count() {
        let s = MemoryStore::new();
        assert!(s.is_empty());
        assert_eq!(format!("{s:?}"), "MemoryStore { records: 0, .. }");
    }
}
