//! The statements behind the [`Store`] methods: binding, inserting, the
//! read-modify-writes of states, outcomes and deliveries (fenced by leases
//! when given), reads, claims, and the quarantine listing and release.

use std::time::Duration;

use tokio_postgres::GenericClient;

use crate::proto::poll::PollMachine;
use crate::secret::DeferredId;
use crate::store::{
    Lease, QuarantinedRecord, Record, RecordKey, StoreError, StoreFuture, StoredOutcome,
    check_owner, check_schema, record_key,
};
use crate::time::UnixTime;

use super::decode::{Key, padded_key, quarantined_error};
use super::notify::notice_payload;
use super::{Inner, PostgresStore, ms, pg_error, ttl_secs};

impl Inner {
    pub(super) async fn bound_owner(
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

    pub(super) async fn bind(&self, issuer: String, client_id: String) -> Result<(), StoreError> {
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

    pub(super) async fn insert(&self, record: Record) -> Result<(), StoreError> {
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
    pub(super) async fn write(
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
            roll_back(tx).await;
            return Err(quarantined_error(fp));
        }
        let mut record = match self.decode_row(&row) {
            Ok(r) => r,
            Err(err) => {
                // Let go of the row's lock and the connection first.
                roll_back(tx).await;
                drop(client);
                return Err(self.set_aside_row(&row, err).await);
            }
        };
        // Whether the row is (or was, for an outcome stored under it) held
        // under this lease.
        let ours = |live_too: bool| {
            lease.as_ref().is_none_or(|(owner, lease)| {
                let held_by: Option<&str> = row.get("lease_owner");
                let epoch: i64 = row.get("lease_epoch");
                let live: bool = row.get("live");
                held_by == Some(owner.as_str())
                    && (live || !live_too)
                    && u64::try_from(epoch) == Ok(lease.epoch)
            })
        };
        if let Some(existing) = &record.outcome {
            let answer = match &outcome {
                // A retry of a write that was stored (its answer lost with
                // the connection, say): done. The same outcome stored by
                // another instance under its own lease is not this one's.
                Some(o) if o.outcome == existing.outcome && ours(false) => Ok(()),
                Some(o) if o.outcome == existing.outcome => {
                    Err(StoreError::LeaseLost { record: fp })
                }
                _ => Err(StoreError::AlreadyFinished { record: fp }),
            };
            roll_back(tx).await;
            return answer;
        }
        if !ours(true) {
            roll_back(tx).await;
            return Err(StoreError::LeaseLost { record: fp });
        }
        record.machine = machine;
        let delivered = outcome.as_ref().is_some_and(|o| o.delivered);
        record.outcome = outcome;
        let body = match self.encode(&key, &record) {
            Ok(b) => b,
            Err(err) => {
                roll_back(tx).await;
                return Err(err);
            }
        };
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
    pub(super) async fn query_records(
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
        let (good, errors) = self.decode_rows(&rows).await?;
        Ok((good.into_iter().map(|(_, r)| r).collect(), errors))
    }

    /// `mark_delivered` (`once`: only from undelivered) as one
    /// read-modify-write: the body is re-sealed with the delivery state, so
    /// the `delivered` column cannot be set back behind the store's back.
    pub(super) async fn mark_delivered(&self, key: Key, once: bool) -> Result<bool, StoreError> {
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
                // Let go of the row's lock and the connection first.
                roll_back(tx).await;
                drop(client);
                return Err(self.set_aside_row(&row, err).await);
            }
        };
        let Some(o) = record.outcome.as_mut() else {
            roll_back(tx).await;
            return Ok(false);
        };
        if o.delivered {
            roll_back(tx).await;
            return Ok(!once);
        }
        o.delivered = true;
        let body = match self.encode(&key, &record) {
            Ok(b) => b,
            Err(err) => {
                roll_back(tx).await;
                return Err(err);
            }
        };
        tx.execute(
            &self.sql("UPDATE {s}.records SET delivered = true, body = $2 WHERE key = $1"),
            &[&&key[..], &body],
        )
        .await
        .map_err(e("marking delivered"))?;
        tx.commit().await.map_err(e("committing"))?;
        Ok(true)
    }

    pub(super) async fn quarantined(&self) -> Result<Vec<QuarantinedRecord>, StoreError> {
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

    pub(super) async fn release_quarantined(&self, key: Key) -> Result<bool, StoreError> {
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
        let (record, body) = match self
            .decode_row(&row)
            // Re-sealed as read now (with its delivery state), back in the
            // indexes, with a new epoch: whoever held it before is fenced.
            .and_then(|record| Ok((self.encode(&key, &record)?, record)))
        {
            Ok((body, record)) => (record, body),
            Err(err) => {
                roll_back(tx).await;
                return Err(err);
            }
        };
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

impl PostgresStore {
    /// `claim_due` (`own`: the owner's live leases are renewed and
    /// returned) or `claim_due_unheld` (they are skipped).
    pub(super) fn claim(
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
            let (good, _) = i.decode_rows(&rows).await?;
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
                    let lease = Lease::new(u64::try_from(epoch).unwrap_or(0));
                    if let Ok(key) = super::decode::key_of(r.get::<_, &[u8]>("key")) {
                        i.leased.claimed(key, lease, &record);
                    }
                    (due, record, lease)
                })
                .collect();
            // RETURNING has no order: earliest first, like `due`.
            out.sort_by_key(|a| a.0);
            Ok(out.into_iter().map(|(_, r, l)| (r, l)).collect())
        })
    }
}

/// Ends a transaction that is to write nothing, and waits until the
/// database has ended it. A transaction that is only dropped is rolled back
/// when its connection gets to it, after the caller already has its answer:
/// until then the row it locked `FOR UPDATE` stays locked, and a claim on
/// another connection (`FOR UPDATE SKIP LOCKED`) passes the row over, as if
/// it were not there.
async fn roll_back(tx: deadpool_postgres::Transaction<'_>) {
    // On failure the connection is broken: the server ends the transaction
    // (and its locks) when it sees the connection go.
    let _ = tx.rollback().await;
}
