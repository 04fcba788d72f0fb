//! Reading rows: keys, encoding and decoding of bodies (checked against
//! the store's owner and the `delivered` column), and the one place where a
//! row that does not read is set aside (quarantined and reported).

use crate::store::records::{open_record, seal_record};
use crate::store::{
    DELIVERY_STATE, Record, StoreError, is_bad_record, key_fingerprint, report_quarantined,
};

use super::notify::notice_payload;
use super::{Inner, pg_error};

pub(super) type Key = [u8; 32];

/// What a read or write of a quarantined record answers.
pub(super) fn quarantined_error(fp: crate::secret::Fingerprint) -> StoreError {
    StoreError::corrupt(
        Some(fp),
        "the record is quarantined (see Store::quarantined and Store::release_quarantined)",
    )
}

pub(super) fn key_of(bytes: &[u8]) -> Result<Key, StoreError> {
    bytes.try_into().map_err(|_| {
        StoreError::corrupt(
            Some(key_fingerprint(&padded_key(bytes))),
            "a record key is not 32 bytes",
        )
    })
}

impl Inner {
    pub(super) fn encode(&self, key: &Key, record: &Record) -> Result<Vec<u8>, StoreError> {
        seal_record(self.sealer.as_deref(), key, record)
    }

    /// Decodes a row's body, checking it against the store's owner and
    /// the `delivered` column. The body is the truth: a column that says
    /// "not delivered" for an outcome whose body says "delivered" was
    /// changed behind the store's back (to have acknowledged tokens handed
    /// out again) and is refused. The other way round (a row acknowledged
    /// before the body carried the state) reads as delivered.
    pub(super) fn decode(
        &self,
        key: &Key,
        bytes: &[u8],
        delivered: bool,
    ) -> Result<Record, StoreError> {
        let owner = self.owner.get().map(|(i, c)| (i.as_str(), c.as_str()));
        let mut record = open_record(self.sealer.as_deref(), key, bytes, owner)?;
        if let Some(o) = record.outcome.as_mut() {
            if o.delivered && !delivered {
                return Err(StoreError::corrupt(
                    Some(record.fingerprint()),
                    format!(
                        "{DELIVERY_STATE} (the row says not delivered, its body says delivered)"
                    ),
                ));
            }
            o.delivered = delivered;
        }
        Ok(record)
    }

    pub(super) fn decode_row(&self, row: &tokio_postgres::Row) -> Result<Record, StoreError> {
        let key = key_of(row.get::<_, &[u8]>("key"))?;
        self.decode(&key, row.get("body"), row.get("delivered"))
    }

    /// Decodes the rows a read returned and sets aside the ones that do
    /// not read (see [`set_aside`](Self::set_aside)): each good record with
    /// its row, and the errors of the rows set aside. Every read of several
    /// rows goes through here.
    pub(super) async fn decode_rows<'r>(
        &self,
        rows: &'r [tokio_postgres::Row],
    ) -> Result<(Vec<(&'r tokio_postgres::Row, Record)>, Vec<StoreError>), StoreError> {
        let mut good = Vec::with_capacity(rows.len());
        let mut bad = Vec::new();
        for row in rows {
            match self.decode_row(row) {
                Ok(r) => good.push((row, r)),
                Err(e) => bad.push(BadRow::of(row, e)),
            }
        }
        let errors = self.set_aside(bad).await?;
        Ok((good, errors))
    }

    /// Sets aside the one row a read-modify-write locked and could not
    /// read (the caller has let go of the lock and its connection first):
    /// the error to answer.
    pub(super) async fn set_aside_row(
        &self,
        row: &tokio_postgres::Row,
        error: StoreError,
    ) -> StoreError {
        match self.set_aside(vec![BadRow::of(row, error.clone())]).await {
            Ok(_) => error,
            Err(e) => e,
        }
    }

    /// The one place where rows that did not read are set aside: each is
    /// quarantined (see the module docs), only while its body is still the
    /// one that failed, and the ones this call set aside are reported (a
    /// [`StoreNotice::Quarantined`] to the fleet, the
    /// `oidc_dtr_store_quarantined_total` counter, a warning). Answers the
    /// errors of the rows set aside. A row that is not bad in itself (the
    /// error says the database or the sealer failed) is left alone and
    /// fails the call: nothing is skipped silently.
    async fn set_aside(&self, bad: Vec<BadRow>) -> Result<Vec<StoreError>, StoreError> {
        let (bad, other): (Vec<BadRow>, Vec<BadRow>) =
            bad.into_iter().partition(|b| is_bad_record(&b.error));
        if !bad.is_empty() {
            let client = self.client().await?;
            for b in &bad {
                let rows = client
                    .query(
                        &self.sql(
                            "WITH q AS (
                                 UPDATE {s}.records SET quarantined_at = now(),
                                     quarantine_reason = $2, due_at = NULL, finished_at = NULL,
                                     lease_owner = NULL, lease_expires = NULL,
                                     delivery_claimed_until = NULL
                                 WHERE key = $1 AND body = $3 AND quarantined_at IS NULL
                                 RETURNING key)
                             SELECT pg_notify($4, $5) FROM q",
                        ),
                        &[
                            &b.raw_key,
                            &b.error.to_string(),
                            &b.body,
                            &self.channel,
                            &notice_payload('q', &b.key),
                        ],
                    )
                    .await
                    .map_err(|e| pg_error("quarantining a record", &e))?;
                if !rows.is_empty() {
                    report_quarantined("postgres", &b.key, &b.error);
                }
            }
        }
        if let Some(b) = other.into_iter().next() {
            return Err(b.error);
        }
        Ok(bad.into_iter().map(|b| b.error).collect())
    }
}

/// A row that did not read: what the quarantine needs to set it aside.
pub(super) struct BadRow {
    /// The key column as stored (it may not even be 32 bytes).
    raw_key: Vec<u8>,
    /// The key, for notices and fingerprints.
    key: Key,
    /// The body that failed: the quarantine applies only while it is still
    /// this one (a row repaired meanwhile is not set aside).
    body: Vec<u8>,
    error: StoreError,
}

impl BadRow {
    fn of(row: &tokio_postgres::Row, error: StoreError) -> BadRow {
        let raw_key: Vec<u8> = row.get::<_, &[u8]>("key").to_vec();
        BadRow {
            key: padded_key(&raw_key),
            raw_key,
            body: row.get::<_, &[u8]>("body").to_vec(),
            error,
        }
    }
}

/// A key column as a 32-byte key (a malformed one, cut or padded with
/// zeros, only to name it).
pub(super) fn padded_key(raw: &[u8]) -> Key {
    let mut key = [0u8; 32];
    let n = raw.len().min(32);
    key[..n].copy_from_slice(&raw[..n]);
    key
}
