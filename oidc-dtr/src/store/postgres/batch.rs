//! Fenced writes grouped into one statement per batch.
//!
//! A fleet member writes a poll state after every poll and an outcome at
//! the end of each authentication, each fenced by its lease. One
//! transaction per write (read the row, check the lease, write it back)
//! costs four round trips and a WAL flush each; with thousands of polls a
//! second that is the fleet's ceiling. Here the fenced writes of one
//! instance are queued and sent together, the way a database groups
//! commits: a write goes out at once when fewer than [`IN_FLIGHT`] batches
//! of its kind are running; otherwise it waits for one of them to return
//! (one round trip at most) and goes with everything queued meanwhile, up
//! to [`MAX_BATCH`] writes per statement. A lone write is never held back;
//! under load the batches grow by themselves. A batch is one
//! `UPDATE ... FROM unnest(...)` that checks owner, epoch and expiry *per
//! row* and returns the rows it wrote. A write
//! whose row is not among them (its lease was lost, the record finished,
//! was quarantined or is gone) is then done again alone on the
//! transactional path, which tells exactly why, so the caller sees the same
//! answer, row by row, as without batching.
//!
//! The new body is sealed here, before the batch, from the record as it
//! was claimed: the authentication part of a record never changes after
//! its insert, and a fenced write replaces the poll state and outcome
//! entirely, so nothing needs to be read first. The claimed
//! authentications are kept (by key and epoch) while their lease is held;
//! a write for one that is not (claimed before a restart of the store
//! handle, say) takes the transactional path.
//!
//! A state write leaves `due_at` (an indexed column) as it is when the new
//! due time is at most [`DUE_SLACK`] later, so that the update is HOT: the
//! row is rewritten in its page and no index changes. `due_at` is then a
//! lower bound of the record's next poll (the body has the exact time): a
//! record is never claimed later than it is due, at worst a little earlier,
//! and the instance that claims it schedules from the body.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::proto::exchange::DeferredAuthentication;
use crate::proto::poll::PollMachine;
use crate::secret::DeferredId;
use crate::store::{Lease, Record, StoreError, StoredOutcome, record_key};

use super::decode::Key;
use super::{Inner, ms, pg_error};

/// How many batches of one kind may run at once (each on a connection of
/// the pool). A write waits at most for one of them to return: a round
/// trip, far below any interval floor or lease margin.
pub(super) const IN_FLIGHT: usize = 2;

/// The most writes in one statement: a queue this long goes at once,
/// whatever is in flight.
pub(super) const MAX_BATCH: usize = 500;

/// How much later than the stored `due_at` a state write may move the
/// record's next poll without rewriting the column (see the module docs).
pub(super) const DUE_SLACK: Duration = Duration::from_secs(60);

/// The most claimed authentications kept for writing; beyond it the cache
/// starts over (writes of the records dropped take the transactional path
/// until their next claim).
const MAX_LEASED: usize = 200_000;

/// Which statement a batch is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Kind {
    /// Poll states: `due_at` (within the slack) and `body`.
    State,
    /// Outcomes: `due_at` cleared, `finished_at`, `body`, and the
    /// `Finished` notice at commit.
    Outcome,
}

/// One fenced write, its body already sealed.
pub(super) struct Write {
    key: Key,
    owner: String,
    epoch: i64,
    /// The new due time (state writes) or the finish time (outcomes), ms.
    at: i64,
    body: Vec<u8>,
    /// State writes: the lease extended to this long (seconds) from now on
    /// the database's clock, in the same statement.
    renew: Option<f64>,
}

/// Whether the batch wrote the row (`false`: the fence or the record's
/// state refused it; the caller finds out why on the transactional path).
type Answer = Result<bool, StoreError>;

struct Queued {
    write: Write,
    done: oneshot::Sender<Answer>,
}

#[derive(Default)]
struct Queue {
    items: Vec<Queued>,
    keys: HashSet<Key>,
    /// Batches of this kind running now.
    in_flight: usize,
}

impl Queue {
    /// Takes the queued writes as a batch that is about to run.
    fn take(&mut self) -> Vec<Queued> {
        self.in_flight += 1;
        self.keys.clear();
        std::mem::take(&mut self.items)
    }
}

/// The queue of one [`Kind`] of write (one batcher per kind).
pub(super) struct Batcher {
    queue: Mutex<Queue>,
}

impl Batcher {
    pub(super) fn new() -> Self {
        Batcher {
            queue: Mutex::new(Queue::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The authentications this handle claimed, kept to seal fenced writes
/// without reading the row: key → (lease epoch, authentication).
#[derive(Default)]
pub(super) struct Leased(Mutex<HashMap<Key, (u64, Arc<DeferredAuthentication>)>>);

impl Leased {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, (u64, Arc<DeferredAuthentication>)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers a claimed record under its lease.
    pub(super) fn claimed(&self, key: Key, lease: Lease, record: &Record) {
        let mut m = self.lock();
        if m.len() >= MAX_LEASED && !m.contains_key(&key) {
            m.clear();
        }
        m.insert(key, (lease.epoch, Arc::new(record.auth.clone())));
    }

    fn get(&self, key: &Key, lease: Lease) -> Option<Arc<DeferredAuthentication>> {
        self.lock()
            .get(key)
            .filter(|(epoch, _)| *epoch == lease.epoch)
            .map(|(_, a)| a.clone())
    }

    /// Forgets a record (its lease is gone, or it finished).
    pub(super) fn forget(&self, key: &Key) {
        self.lock().remove(key);
    }

    pub(super) fn clear(&self) {
        self.lock().clear();
    }
}

impl Inner {
    /// `update_state_leased`, `update_state_renewing` (`renew`: the TTL)
    /// and `finish_leased`: batched when the authentication was claimed
    /// through this handle, else (and for the rows a batch did not write)
    /// the transactional read-modify-write. `Ok(true)`: written by a batch
    /// that also renewed the lease (only with `renew`).
    pub(super) async fn write_fenced(
        self: Arc<Self>,
        id: DeferredId,
        machine: PollMachine,
        outcome: Option<StoredOutcome>,
        owner: String,
        lease: Lease,
        renew: Option<Duration>,
    ) -> Result<bool, StoreError> {
        let key = record_key(&id);
        let finishing = outcome.is_some();
        let batchable = outcome.as_ref().is_none_or(|o| !o.delivered);
        let (machine, outcome) = match self.leased.get(&key, lease).filter(|_| batchable) {
            Some(auth) => {
                let mut record = Record::new(DeferredAuthentication::clone(&auth), machine);
                record.outcome = outcome;
                let body = self.encode(&key, &record)?;
                // An unfinished record always has a due time.
                let (kind, at) = match record.finished_at() {
                    Some(f) => (Kind::Outcome, ms(f)),
                    None => (Kind::State, record.due_at().map_or(0, ms)),
                };
                let renew = renew.filter(|_| kind == Kind::State);
                let write = Write {
                    key,
                    owner: owner.clone(),
                    epoch: i64::try_from(lease.epoch).unwrap_or(i64::MAX),
                    at,
                    body,
                    renew: renew.map(|t| t.as_secs_f64()),
                };
                match self.enqueue(kind, write).await {
                    Ok(true) => {
                        if finishing {
                            self.leased.forget(&key);
                        }
                        return Ok(renew.is_some());
                    }
                    // Not written: find out why, alone.
                    Ok(false) => (record.machine, record.outcome),
                    Err(e) => return Err(e),
                }
            }
            None => (machine, outcome),
        };
        let r = self.write(id, machine, outcome, Some((owner, lease))).await;
        if (finishing && r.is_ok()) || r.as_ref().is_err_and(|e| !e.is_retryable()) {
            self.leased.forget(&key);
        }
        r.map(|()| false)
    }

    /// Queues a write and waits for its batch.
    async fn enqueue(self: &Arc<Self>, kind: Kind, write: Write) -> Answer {
        let (tx, rx) = oneshot::channel();
        let mut run = Vec::new();
        {
            let mut q = self.batcher(kind).lock();
            if q.keys.contains(&write.key) {
                // Two writes of one record never share a statement (which
                // of them would win is not defined): the first batch goes.
                run.push(q.take());
            }
            q.keys.insert(write.key);
            q.items.push(Queued { write, done: tx });
            if q.in_flight < IN_FLIGHT || q.items.len() >= MAX_BATCH {
                run.push(q.take());
            }
        }
        for items in run {
            tokio::spawn(self.clone().run_batches(kind, items));
        }
        // The batch runs in a task of its own: a caller that gives up
        // (its future dropped) leaves the write to complete or fail as a
        // whole with its batch, never half done.
        rx.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the batched write was abandoned".into(),
            ))
        })
    }

    fn batcher(&self, kind: Kind) -> &Batcher {
        match kind {
            Kind::State => &self.state_batch,
            Kind::Outcome => &self.outcome_batch,
        }
    }

    /// Runs a batch, then whatever was queued while it ran, until the
    /// queue is empty.
    async fn run_batches(self: Arc<Self>, kind: Kind, mut items: Vec<Queued>) {
        loop {
            self.run_batch(kind, items).await;
            let mut q = self.batcher(kind).lock();
            q.in_flight = q.in_flight.saturating_sub(1);
            if q.items.is_empty() {
                return;
            }
            items = q.take();
        }
    }

    /// Sends one batch and answers each write.
    async fn run_batch(&self, kind: Kind, items: Vec<Queued>) {
        let answers = match tokio::time::timeout(self.timeout, self.execute(kind, &items)).await {
            Ok(Ok(written)) => items
                .into_iter()
                .map(|q| {
                    let ok = written.contains(&q.write.key);
                    (q.done, Ok(ok))
                })
                .collect::<Vec<_>>(),
            Ok(Err(e)) => items
                .into_iter()
                .map(|q| (q.done, Err(e.clone())))
                .collect(),
            Err(_) => {
                let e = StoreError::Unavailable(format!(
                    "no answer from the database within {:?}",
                    self.timeout
                ));
                items
                    .into_iter()
                    .map(|q| (q.done, Err(e.clone())))
                    .collect()
            }
        };
        for (done, answer) in answers {
            let _ = done.send(answer);
        }
    }

    /// The statement of a batch: the keys it wrote.
    async fn execute(&self, kind: Kind, items: &[Queued]) -> Result<HashSet<Key>, StoreError> {
        let n = items.len();
        let (mut keys, mut owners, mut epochs, mut ats, mut bodies, mut renews) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for q in items {
            keys.push(&q.write.key[..]);
            owners.push(q.write.owner.as_str());
            epochs.push(q.write.epoch);
            ats.push(q.write.at);
            bodies.push(q.write.body.as_slice());
            renews.push(q.write.renew);
        }
        let client = self.client().await?;
        // Prepared once per connection (the pool's statement cache): a
        // batch is then bound and executed, not parsed and planned again.
        let sql = self.sql(match kind {
            Kind::State => STATE_BATCH,
            Kind::Outcome => OUTCOME_BATCH,
        });
        let statement = client
            .prepare_cached(&sql)
            .await
            .map_err(|e| pg_error("preparing a batch", &e))?;
        let rows = match kind {
            Kind::State => {
                let slack = i64::try_from(DUE_SLACK.as_millis()).unwrap_or(i64::MAX);
                client
                    .query(
                        &statement,
                        &[&keys, &owners, &epochs, &ats, &bodies, &slack, &renews],
                    )
                    .await
            }
            Kind::Outcome => {
                client
                    .query(
                        &statement,
                        &[&keys, &owners, &epochs, &ats, &bodies, &self.channel],
                    )
                    .await
            }
        }
        .map_err(|e| pg_error("writing a batch", &e))?;
        drop(client);
        let mut written = HashSet::with_capacity(rows.len());
        for r in &rows {
            let k: &[u8] = r.get(0);
            if let Ok(k) = Key::try_from(k) {
                written.insert(k);
            }
        }
        Ok(written)
    }
}

/// Fenced poll states: the lease checked per row (owner, epoch, not
/// expired on the database's clock), the record unfinished and not
/// quarantined. Only `body` changes, the lease's expiry when the write
/// renews it (like `renew_leases`: from now, on the database's clock), and
/// `due_at` when the next poll moves earlier or more than the slack later:
/// the update stays HOT.
const STATE_BATCH: &str = "
    UPDATE {s}.records t SET
        due_at = CASE WHEN t.due_at IS NULL OR b.at < t.due_at OR b.at > t.due_at + $6
                      THEN b.at ELSE t.due_at END,
        body = b.body,
        lease_expires = CASE WHEN b.renew IS NULL THEN t.lease_expires
                             ELSE now() + make_interval(secs => b.renew) END
    FROM unnest($1::bytea[], $2::text[], $3::bigint[], $4::bigint[], $5::bytea[],
                $7::float8[])
         AS b(key, owner, epoch, at, body, renew)
    WHERE t.key = b.key AND t.lease_owner = b.owner AND t.lease_epoch = b.epoch
      AND t.lease_expires > now()
      AND t.finished_at IS NULL AND t.quarantined_at IS NULL
    RETURNING t.key";

/// Fenced outcomes, fenced like [`STATE_BATCH`]; a `Finished` notice per
/// row written, delivered at commit.
const OUTCOME_BATCH: &str = "
    WITH u AS (
        UPDATE {s}.records t SET due_at = NULL, finished_at = b.at, body = b.body
        FROM unnest($1::bytea[], $2::text[], $3::bigint[], $4::bigint[], $5::bytea[])
             AS b(key, owner, epoch, at, body)
        WHERE t.key = b.key AND t.lease_owner = b.owner AND t.lease_epoch = b.epoch
          AND t.lease_expires > now()
          AND t.finished_at IS NULL AND t.quarantined_at IS NULL
        RETURNING t.key),
    n AS (SELECT count(*) FROM (
        SELECT pg_notify($6, 'f' || encode(key, 'hex')) FROM u) x)
    SELECT u.key FROM u CROSS JOIN n";

#[cfg(test)]
mod tests {
    use super::super::notify::notice_payload;
    use super::*;

    #[test]
    fn the_notice_of_a_batch_is_the_one_the_listeners_parse() {
        // `'f' || encode(key, 'hex')` in the outcome batch must be what
        // `notice_payload` writes: a lowercase hex key after the letter.
        let key = [0xABu8; 32];
        let p = notice_payload('f', &key);
        assert_eq!(p, format!("f{}", "ab".repeat(32)));
        assert!(OUTCOME_BATCH.contains("'f' || encode(key, 'hex')"));
    }

    #[test]
    fn a_record_written_twice_starts_a_new_batch() {
        let mut q = Queue::default();
        let (tx, _rx) = oneshot::channel();
        let key = [1u8; 32];
        q.keys.insert(key);
        q.items.push(Queued {
            write: Write {
                key,
                owner: "a".into(),
                epoch: 1,
                at: 0,
                body: Vec::new(),
                renew: None,
            },
            done: tx,
        });
        let taken = q.take();
        assert_eq!(taken.len(), 1);
        assert!(q.keys.is_empty() && q.items.is_empty());
        assert_eq!(q.in_flight, 1, "a batch taken is a batch running");
    }
}
