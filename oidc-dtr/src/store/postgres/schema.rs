//! The database schema: its version, the migrations that create and
//! update it (run once per fleet, under an advisory lock), and the
//! re-sealing of delivered rows that version 3 needs.

use crate::store::StoreError;
use crate::store::records::open_record;

use super::decode::key_of;
use super::{Inner, pg_error};

/// The newest database schema version this release creates and reads.
pub(super) const DB_SCHEMA_VERSION: i32 = 4;

/// The migrations, in order: `MIGRATIONS[i]` takes the schema from version
/// `i` to `i + 1`. `{s}` is replaced by the quoted schema name.
pub(super) const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE {s}.meta (
        singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        issuer text NOT NULL,
        client_id text NOT NULL
    );
    CREATE TABLE {s}.records (
        key bytea PRIMARY KEY,
        due_at bigint,
        finished_at bigint,
        delivered boolean NOT NULL DEFAULT false,
        body bytea NOT NULL,
        lease_owner text,
        lease_expires timestamptz,
        lease_epoch bigint NOT NULL DEFAULT 0
    );
    CREATE INDEX records_due ON {s}.records (due_at, key) WHERE due_at IS NOT NULL;
    CREATE INDEX records_finished ON {s}.records (finished_at) WHERE finished_at IS NOT NULL;
",
    "
    ALTER TABLE {s}.records ADD COLUMN delivery_claimed_until timestamptz;
    CREATE INDEX records_undelivered ON {s}.records (finished_at, key)
        WHERE finished_at IS NOT NULL AND NOT delivered;
",
    // Version 3: quarantine. (The bodies of delivered rows are then
    // re-sealed with their delivery state: `reseal_delivered`.)
    "
    ALTER TABLE {s}.records ADD COLUMN quarantined_at timestamptz,
        ADD COLUMN quarantine_reason text;
    CREATE INDEX records_quarantined ON {s}.records (key) WHERE quarantined_at IS NOT NULL;
",
    // Version 4: room in every page for the next version of its rows, so
    // that the updates of the hot path (poll states, lease renewals and
    // claims, which change no indexed column) are HOT: no index entry is
    // added and the old version is pruned with its page, without VACUUM.
    // Pages already full get the room as their rows move.
    "
    ALTER TABLE {s}.records SET (fillfactor = 70);
",
];

/// The migration after which the delivered rows' bodies are re-sealed.
pub(super) const RESEAL_AFTER: usize = 2;

impl Inner {
    pub(super) async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let e = |c: &'static str| move |e: tokio_postgres::Error| pg_error(c, &e);
        let tx = client.transaction().await.map_err(e("migrating"))?;
        // One lock per schema name: instances starting together migrate
        // one after the other; the later ones find nothing to do.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 7261))",
            &[&self.schema],
        )
        .await
        .map_err(e("locking for migration"))?;
        tx.batch_execute(&self.sql(
            "CREATE SCHEMA IF NOT EXISTS {s};
             CREATE TABLE IF NOT EXISTS {s}.migrations (
                 version integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             );",
        ))
        .await
        .map_err(e("creating the schema"))?;
        let row = tx
            .query_one(
                &self.sql("SELECT coalesce(max(version), 0) FROM {s}.migrations"),
                &[],
            )
            .await
            .map_err(e("reading the schema version"))?;
        let current: i32 = row.get(0);
        if current > DB_SCHEMA_VERSION {
            // Leave the connection clean (the pool is dropped right after).
            let _ = tx.rollback().await;
            return Err(StoreError::UnsupportedSchema {
                found: u32::try_from(current).unwrap_or(u32::MAX),
                supported: DB_SCHEMA_VERSION as u32,
                record: None,
            });
        }
        for (i, m) in MIGRATIONS
            .iter()
            .enumerate()
            .skip(usize::try_from(current).unwrap_or(0))
        {
            tx.batch_execute(&self.sql(m))
                .await
                .map_err(e("applying a migration"))?;
            let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
            tx.execute(
                &self.sql("INSERT INTO {s}.migrations (version) VALUES ($1)"),
                &[&version],
            )
            .await
            .map_err(e("recording a migration"))?;
            if i == RESEAL_AFTER {
                self.reseal_delivered(&tx).await?;
            }
        }
        tx.commit().await.map_err(e("committing the migration"))?;
        // Known from now on, so that every read checks rows against it.
        let client = self.client().await?;
        self.bound_owner(&**client).await?;
        Ok(())
    }

    /// Until schema version 3 an acknowledgment only set the `delivered`
    /// column, so the bodies of delivered rows still say "not delivered":
    /// they are rewritten (re-sealed) with the delivery state, so that
    /// flipping the column back is refused. A row that does not open here
    /// (e.g. this instance has no key or another one) is left as it is:
    /// it reads as delivered, as before, and a read that cannot open it
    /// quarantines it.
    pub(super) async fn reseal_delivered(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
    ) -> Result<(), StoreError> {
        let e = |c: &'static str| move |e: tokio_postgres::Error| pg_error(c, &e);
        let owner = tx
            .query_opt(&self.sql("SELECT issuer, client_id FROM {s}.meta"), &[])
            .await
            .map_err(e("reading the owner"))?
            .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)));
        let owner = owner.as_ref().map(|(i, c)| (i.as_str(), c.as_str()));
        let rows = tx
            .query(
                &self.sql("SELECT key, body FROM {s}.records WHERE delivered"),
                &[],
            )
            .await
            .map_err(e("reading delivered rows"))?;
        let mut resealed = 0usize;
        for row in rows {
            let Ok(key) = key_of(row.get::<_, &[u8]>("key")) else {
                continue;
            };
            let Ok(mut record) = open_record(self.sealer.as_deref(), &key, row.get("body"), owner)
            else {
                continue;
            };
            match record.outcome.as_mut() {
                Some(o) if !o.delivered => o.delivered = true,
                _ => continue,
            }
            let body = self.encode(&key, &record)?;
            tx.execute(
                &self.sql("UPDATE {s}.records SET body = $2 WHERE key = $1"),
                &[&&key[..], &body],
            )
            .await
            .map_err(e("re-sealing a delivered row"))?;
            resealed += 1;
        }
        if resealed > 0 {
            tracing::info!(
                rows = resealed,
                "delivered rows re-sealed with their delivery state"
            );
        }
        Ok(())
    }
}
