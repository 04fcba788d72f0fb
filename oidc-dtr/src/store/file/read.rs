//! The read path: the in-memory index of due times (loaded at open, kept
//! by the writer), read snapshots paired with it, and the reads (`get`,
//! `due`, `load_active`), which return the records they could use and hand
//! the others to the quarantine.

use std::collections::HashMap;

use redb::{ReadTransaction, ReadableDatabase, ReadableTable};

use crate::secret::DeferredId;
use crate::store::{Record, StoreError, StoreFuture, is_bad_record, key_fingerprint, record_key};
use crate::time::UnixTime;

use super::schema::{Key, PENDING, QUARANTINE, RECORDS, db_error};
use super::writer::Op;
use super::{FileStore, Inner};

/// A record a read could not use: what the quarantine needs.
pub(super) struct BadRecord {
    pub(super) key: Key,
    /// The record's bytes as read: it is quarantined only if they are
    /// still the same (a record changed meanwhile is left alone).
    pub(super) record: Vec<u8>,
    pub(super) error: StoreError,
}

/// What a read returns: the records it could use, and the ones to set
/// aside.
pub(super) type Read = (Vec<Record>, Vec<BadRecord>);

/// What a read answers once the bad records are set aside: the records
/// read, and why each of the others was.
pub(super) type Sorted = (Vec<Record>, Vec<StoreError>);

impl Inner {
    /// Reads the due time of every unfinished record into the in-memory
    /// index.
    pub(super) fn load_index(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let pending = txn.open_table(PENDING).map_err(db_error)?;
        let mut index = HashMap::new();
        for entry in pending.iter().map_err(db_error)? {
            let (k, _) = entry.map_err(db_error)?;
            let (due, key) = k.value();
            if index.insert(key, due).is_some() {
                return Err(StoreError::corrupt(
                    Some(key_fingerprint(&key)),
                    "the record is due twice",
                ));
            }
        }
        *self.index.lock().unwrap_or_else(|e| e.into_inner()) = index;
        Ok(())
    }

    /// A read snapshot, with the due time of `key` as of that snapshot.
    pub(super) fn read_at(
        &self,
        key: Option<&Key>,
    ) -> Result<(ReadTransaction, Option<u64>), StoreError> {
        let index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        let txn = self.db.begin_read().map_err(db_error)?;
        Ok((txn, key.and_then(|k| index.get(k).copied())))
    }

    pub(super) fn get(&self, id: &DeferredId) -> Result<Read, StoreError> {
        let key = record_key(id);
        let (txn, due) = self.read_at(Some(&key))?;
        let records = txn.open_table(RECORDS).map_err(db_error)?;
        let pending = txn.open_table(PENDING).map_err(db_error)?;
        let bytes = records
            .get(&key)
            .map_err(db_error)?
            .map(|g| g.value().to_vec());
        let Some(bytes) = bytes else {
            let quarantine = txn.open_table(QUARANTINE).map_err(db_error)?;
            if quarantine.get(&key).map_err(db_error)?.is_some() {
                return Err(StoreError::corrupt(
                    Some(key_fingerprint(&key)),
                    "the record is quarantined (see Store::quarantined and \
                     Store::release_quarantined)",
                ));
            }
            return Ok((Vec::new(), Vec::new()));
        };
        let state = match due {
            Some(d) => pending
                .get((d, key))
                .map_err(db_error)?
                .map(|g| g.value().to_vec()),
            None => None,
        };
        Ok(
            match self.decode_with_state(&key, &bytes, state.as_deref()) {
                Ok(r) => (vec![r], Vec::new()),
                Err(error) => (
                    Vec::new(),
                    vec![BadRecord {
                        key,
                        record: bytes,
                        error,
                    }],
                ),
            },
        )
    }

    pub(super) fn due(&self, until: UnixTime, limit: usize) -> Result<Read, StoreError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let pending = txn.open_table(PENDING).map_err(db_error)?;
        let records = txn.open_table(RECORDS).map_err(db_error)?;
        let mut out = Vec::new();
        let mut bad = Vec::new();
        for entry in pending
            .range(..=(until.as_millis(), [0xff; 32]))
            .map_err(db_error)?
            .take(limit)
        {
            let (k, state) = entry.map_err(db_error)?;
            let (_, key) = k.value();
            let bytes = records
                .get(&key)
                .map_err(db_error)?
                .map(|g| g.value().to_vec())
                .ok_or_else(|| {
                    StoreError::corrupt(
                        Some(key_fingerprint(&key)),
                        "the due index names a missing record",
                    )
                })?;
            match self.decode_with_state(&key, &bytes, Some(state.value())) {
                Ok(r) => out.push(r),
                Err(error) => bad.push(BadRecord {
                    key,
                    record: bytes,
                    error,
                }),
            }
        }
        Ok((out, bad))
    }

    pub(super) fn load_active(&self) -> Result<Read, StoreError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let records = txn.open_table(RECORDS).map_err(db_error)?;
        let pending = txn.open_table(PENDING).map_err(db_error)?;
        // The latest state of every unfinished record, from this snapshot.
        let mut states: HashMap<Key, Vec<u8>> = HashMap::new();
        for entry in pending.iter().map_err(db_error)? {
            let (k, v) = entry.map_err(db_error)?;
            if !v.value().is_empty() {
                states.insert(k.value().1, v.value().to_vec());
            }
        }
        let mut out = Vec::new();
        let mut bad = Vec::new();
        for entry in records.iter().map_err(db_error)? {
            let (k, v) = entry.map_err(db_error)?;
            let key = k.value();
            let state = states.remove(&key);
            match self.decode_with_state(&key, v.value(), state.as_deref()) {
                Ok(record) => {
                    if record.outcome.as_ref().is_none_or(|o| !o.delivered) {
                        out.push(record);
                    }
                }
                Err(error) => bad.push(BadRecord {
                    key,
                    record: v.value().to_vec(),
                    error,
                }),
            }
        }
        Ok((out, bad))
    }
}

impl FileStore {
    /// Runs a read on the blocking pool, then quarantines the records it
    /// could not use (through the writer, only if they have not changed
    /// since): the records read, and the errors of the ones set aside. An
    /// error that is not about a record's contents fails the call.
    pub(super) fn read(
        &self,
        f: impl FnOnce(&Inner) -> Result<Read, StoreError> + Send + 'static,
    ) -> StoreFuture<Result<Sorted, StoreError>> {
        let read = self.spawn(f);
        let this = self.clone();
        Box::pin(async move {
            let (good, bad) = read.await?;
            let mut errors = Vec::with_capacity(bad.len());
            for b in bad {
                if !is_bad_record(&b.error) {
                    return Err(b.error);
                }
                this.submit(Op::Quarantine {
                    key: b.key,
                    record: b.record,
                    error: b.error.clone(),
                })
                .await?;
                errors.push(b.error);
            }
            Ok((good, errors))
        })
    }
}
