//! The quarantine: records a read or a write could not use, set aside
//! with their bytes and latest poll state as found (`QuarantineEntry`),
//! listed, and put back once they read.

use std::collections::HashMap;

use redb::{ReadableDatabase, ReadableTable};

use crate::store::{QuarantinedRecord, RecordKey, StoreError, key_fingerprint};

use super::Inner;
use super::schema::{Key, QUARANTINE, db_error};
use super::writer::{Done, Fail, Tables, fatal};

/// The value of a `QUARANTINE` entry: `u32` (big-endian) length and bytes
/// of the reason, of the record, then the poll state (empty if none).
pub(super) struct QuarantineEntry<'a> {
    pub(super) reason: &'a str,
    pub(super) record: &'a [u8],
    pub(super) state: &'a [u8],
}

impl<'a> QuarantineEntry<'a> {
    fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(8 + self.reason.len() + self.record.len() + self.state.len());
        for part in [self.reason.as_bytes(), self.record] {
            out.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
            out.extend_from_slice(part);
        }
        out.extend_from_slice(self.state);
        out
    }

    fn decode(bytes: &'a [u8], key: &Key) -> Result<QuarantineEntry<'a>, StoreError> {
        let bad = || {
            StoreError::corrupt(
                Some(key_fingerprint(key)),
                "a quarantine entry is malformed",
            )
        };
        let mut rest = bytes;
        let mut part = || -> Result<&'a [u8], StoreError> {
            let (len, tail) = rest.split_first_chunk::<4>().ok_or_else(bad)?;
            let len = usize::try_from(u32::from_be_bytes(*len)).map_err(|_| bad())?;
            if tail.len() < len {
                return Err(bad());
            }
            let (p, tail) = tail.split_at(len);
            rest = tail;
            Ok(p)
        };
        let reason = std::str::from_utf8(part()?).map_err(|_| bad())?;
        let record = part()?;
        Ok(QuarantineEntry {
            reason,
            record,
            state: rest,
        })
    }
}

impl Inner {
    /// Sets a record aside (see [`FileStore`]'s docs): moved with its
    /// latest poll state to `QUARANTINE`, out of `records`, `pending` and
    /// the due index. `expected`: the bytes the read that failed saw; if
    /// the record changed since, it is left alone (`Flag(false)`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn op_quarantine(
        &self,
        t: &mut Tables<'_>,
        staged: &mut HashMap<Key, Option<u64>>,
        old_due: Option<u64>,
        key: &Key,
        expected: Option<&[u8]>,
        error: &StoreError,
    ) -> Result<Done, Fail> {
        let current = t
            .records
            .get(key)
            .map_err(db_error)?
            .map(|g| g.value().to_vec());
        let Some(current) = current else {
            return Ok(Done::Flag(false));
        };
        if expected.is_some_and(|e| e != current.as_slice()) {
            return Ok(Done::Flag(false));
        }
        let state = match old_due {
            Some(d) => t
                .pending
                .remove((d, *key))
                .map_err(fatal)?
                .map(|g| g.value().to_vec())
                .unwrap_or_default(),
            None => Vec::new(),
        };
        staged.insert(*key, None);
        t.records.remove(key).map_err(fatal)?;
        let reason = error.to_string();
        let entry = QuarantineEntry {
            reason: &reason,
            record: &current,
            state: &state,
        }
        .encode();
        t.quarantine.insert(key, entry.as_slice()).map_err(fatal)?;
        self.quarantined_now
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((*key, error.clone()));
        Ok(Done::Flag(true))
    }

    /// Puts a quarantined record back if it now reads: `Flag(true)`;
    /// `Flag(false)` if it is not quarantined; refused with the reason if
    /// it still does not read.
    pub(super) fn op_release(
        &self,
        t: &mut Tables<'_>,
        staged: &mut HashMap<Key, Option<u64>>,
        key: &Key,
    ) -> Result<Done, Fail> {
        let entry = t
            .quarantine
            .get(key)
            .map_err(db_error)?
            .map(|g| g.value().to_vec());
        let Some(entry) = entry else {
            return Ok(Done::Flag(false));
        };
        let q = QuarantineEntry::decode(&entry, key)?;
        let record = self.decode_with_state(key, q.record, Some(q.state))?;
        if t.records.get(key).map_err(db_error)?.is_some() {
            return Err(Fail::Refused(StoreError::Duplicate {
                record: record.fingerprint(),
            }));
        }
        // Written back whole, its latest poll state included.
        let value = self.encode(key, &record)?;
        t.records.insert(key, value.as_slice()).map_err(fatal)?;
        if let Some(d) = record.due_at() {
            let d = d.as_millis();
            t.pending.insert((d, *key), [].as_slice()).map_err(fatal)?;
            staged.insert(*key, Some(d));
        }
        if let Some(f) = record.finished_at() {
            t.finished
                .insert((f.as_millis(), *key), ())
                .map_err(fatal)?;
        }
        t.quarantine.remove(key).map_err(fatal)?;
        tracing::info!(deferred_auth_id = %record.fingerprint(), "a quarantined record was released");
        Ok(Done::Flag(true))
    }

    pub(super) fn quarantined(&self) -> Result<Vec<QuarantinedRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let quarantine = txn.open_table(QUARANTINE).map_err(db_error)?;
        let mut out = Vec::new();
        for entry in quarantine.iter().map_err(db_error)? {
            let (k, v) = entry.map_err(db_error)?;
            let key = k.value();
            let q = QuarantineEntry::decode(v.value(), &key)?;
            out.push(QuarantinedRecord::new(RecordKey(key), q.reason));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::FileStore;
    use super::super::schema::{FINISHED, PENDING, RECORDS};
    use super::super::tests::{TempDir, sealer, temp_store, write_raw};
    use super::*;
    use crate::proto::exchange::DeferredAuthentication;
    use crate::secret::Nonce;
    use crate::store::records::seal_record;
    use crate::store::test_records::{at, denied, finished_machine, id, record};
    use crate::store::{Record, Store, StoreError, StoreNotice, record_key};
    use crate::time::UnixTime;

    #[tokio::test]
    async fn unknown_record_schema_is_reported_and_quarantined() {
        let (store, _dir) = temp_store();
        let mut notices = store.notices().unwrap();
        store.insert(record("a", 0)).await.unwrap();
        let mut json = serde_json::to_value(record("new", 0)).unwrap();
        json["schema"] = 99.into();
        json["field_from_the_future"] = "x".into();
        let key = record_key(&id("new"));
        write_raw(&store, key, &serde_json::to_vec(&json).unwrap());

        let e = store.get(&id("new")).await.unwrap_err();
        assert!(
            matches!(
                e,
                StoreError::UnsupportedSchema { found: 99, supported: 1, record: Some(fp) }
                    if fp == id("new").fingerprint()
            ),
            "{e:?}"
        );
        assert_eq!(
            notices.try_recv().unwrap(),
            StoreNotice::Quarantined(RecordKey(key))
        );
        // Set aside, with the reason, and named as quarantined from now on.
        let q = store.quarantined().await.unwrap();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].key, RecordKey(key));
        assert!(q[0].reason.contains("99"), "{}", q[0].reason);
        let e = store.get(&id("new")).await.unwrap_err();
        assert!(e.to_string().contains("quarantined"), "{e}");
        // The other record is still readable; every listing goes on.
        assert_eq!(store.load_active().await.unwrap().len(), 1);
        assert_eq!(store.due(UnixTime::MAX, 10).await.unwrap().len(), 1);
        assert!(store.get(&id("a")).await.unwrap().is_some());
        assert!(matches!(
            store
                .update_state(&id("new"), record("new", 0).machine)
                .await,
            Err(StoreError::NotFound { .. })
        ));
        // Still unreadable: stays quarantined.
        assert!(
            store
                .release_quarantined(RecordKey(key))
                .await
                .unwrap_err()
                .to_string()
                .contains("99")
        );
        assert_eq!(store.quarantined().await.unwrap().len(), 1);
    }

    /// A bad record met on any reading path — a listing at start-up, the
    /// due listing, a claim, the outcome listing, a read by id, a write —
    /// is set aside and reported, and the path goes on with the others.
    /// Bad: undecodable bytes, a layout from the future, a tampered seal,
    /// a record of another issuer, a state that does not open.
    #[tokio::test]
    async fn a_bad_record_is_quarantined_on_every_reading_path() {
        #[derive(Clone, Copy, Debug)]
        enum Bad {
            Garbage,
            Schema,
            Tampered,
            OtherIssuer,
            State,
        }
        #[derive(Clone, Copy, Debug)]
        enum Path {
            Reopen,
            LoadActive,
            Due,
            ClaimDue,
            ClaimUndelivered,
            Get,
            Finish,
            MarkDelivered,
        }
        let key_bad = record_key(&id("bad"));
        for bad in [
            Bad::Garbage,
            Bad::Schema,
            Bad::Tampered,
            Bad::OtherIssuer,
            Bad::State,
        ] {
            for path in [
                Path::Reopen,
                Path::LoadActive,
                Path::Due,
                Path::ClaimDue,
                Path::ClaimUndelivered,
                Path::Get,
                Path::Finish,
                Path::MarkDelivered,
            ] {
                let dir = TempDir::new();
                let sealer = sealer(5);
                let mut store = FileStore::open_with_sealer(dir.file(), sealer.clone()).unwrap();
                store.bind("https://op.example", "client").await.unwrap();
                let good: Vec<Record> = (0..3).map(|i| record(&format!("g{i}"), i)).collect();
                for r in &good {
                    store.insert(r.clone()).await.unwrap();
                }
                // The bad one, finished for the outcome paths.
                let mut victim = record("bad", 0);
                if matches!(path, Path::ClaimUndelivered | Path::MarkDelivered) {
                    victim.machine = finished_machine(&victim);
                    victim.outcome = Some(denied(1));
                    let mut g = good[0].clone();
                    store
                        .finish(g.id(), finished_machine(&g), denied(1))
                        .await
                        .unwrap();
                    g.outcome = Some(denied(1));
                }
                let sealed = |r: &Record| seal_record(Some(sealer.as_ref()), &key_bad, r).unwrap();
                let value = match bad {
                    Bad::Garbage => sealer.seal(b"{\"schema\":1", &key_bad).unwrap(),
                    Bad::Schema => {
                        let mut json = serde_json::to_value(&victim).unwrap();
                        json["schema"] = 99.into();
                        sealer
                            .seal(&serde_json::to_vec(&json).unwrap(), &key_bad)
                            .unwrap()
                    }
                    Bad::Tampered => {
                        let mut v = sealed(&victim);
                        let n = v.len();
                        v[n - 3] ^= 1;
                        v
                    }
                    Bad::OtherIssuer => {
                        let mut r = victim.clone();
                        r.auth = DeferredAuthentication::seeded(
                            id("bad"),
                            "https://other.example".into(),
                            "client".into(),
                            at(0),
                            Some(3600),
                            5,
                            Nonce::new("nonce"),
                        );
                        sealed(&r)
                    }
                    Bad::State => sealed(&victim),
                };
                {
                    let txn = store.inner().db.begin_write().unwrap();
                    {
                        let mut records = txn.open_table(RECORDS).unwrap();
                        records.insert(&key_bad, value.as_slice()).unwrap();
                        if let Some(d) = victim.due_at() {
                            let state: &[u8] = match bad {
                                Bad::State => b"not a sealed state",
                                _ => &[],
                            };
                            txn.open_table(PENDING)
                                .unwrap()
                                .insert((d.as_millis(), key_bad), state)
                                .unwrap();
                        } else {
                            txn.open_table(FINISHED)
                                .unwrap()
                                .insert((at(1).as_millis(), key_bad), ())
                                .unwrap();
                        }
                    }
                    txn.commit().unwrap();
                }
                if matches!(bad, Bad::State)
                    && (victim.is_finished() || matches!(path, Path::Finish))
                {
                    // A finished record has no state, and a finish
                    // replaces it: nothing bad to find.
                    continue;
                }
                store.inner().load_index().unwrap();
                if matches!(path, Path::Reopen) {
                    store.close().await.unwrap();
                    store = FileStore::open_with_sealer(dir.file(), sealer.clone()).unwrap();
                }
                let mut notices = store.notices().unwrap();
                let ctx = format!("{bad:?} via {path:?}");
                let names = |rs: &[Record]| {
                    let mut v: Vec<String> =
                        rs.iter().map(|r| r.fingerprint().to_string()).collect();
                    v.sort();
                    v
                };
                let fp = |i: usize| good[i].fingerprint().to_string();
                match path {
                    Path::Reopen | Path::LoadActive => {
                        let got = store.load_active().await.expect(&ctx);
                        let mut want = vec![fp(0), fp(1), fp(2)];
                        want.sort();
                        assert_eq!(names(&got), want, "{ctx}");
                    }
                    Path::Due => {
                        let got = store.due(UnixTime::MAX, 10).await.expect(&ctx);
                        assert_eq!(got.len(), 3, "{ctx}");
                    }
                    Path::ClaimDue => {
                        let got = store
                            .claim_due("me", UnixTime::MAX, 10, Duration::from_secs(30))
                            .await
                            .expect(&ctx);
                        assert_eq!(got.len(), 3, "{ctx}");
                    }
                    Path::ClaimUndelivered => {
                        let got = store
                            .claim_undelivered(10, Duration::from_secs(30))
                            .await
                            .expect(&ctx);
                        assert_eq!(names(&got), vec![fp(0)], "{ctx}");
                    }
                    Path::Get => {
                        assert!(store.get(&id("bad")).await.is_err(), "{ctx}");
                        assert!(store.get(good[1].id()).await.unwrap().is_some(), "{ctx}");
                    }
                    Path::Finish => {
                        let e = store
                            .finish(&id("bad"), finished_machine(&victim), denied(2))
                            .await
                            .unwrap_err();
                        assert!(crate::store::is_bad_record(&e), "{ctx}: {e:?}");
                    }
                    Path::MarkDelivered => {
                        assert!(store.mark_delivered(&id("bad")).await.is_err(), "{ctx}");
                        assert!(store.mark_delivered(good[0].id()).await.unwrap(), "{ctx}");
                    }
                }
                assert_eq!(
                    notices.try_recv().ok(),
                    Some(StoreNotice::Quarantined(RecordKey(key_bad))),
                    "{ctx}"
                );
                let q = store.quarantined().await.unwrap();
                assert_eq!(q.len(), 1, "{ctx}");
                assert_eq!(q[0].key, RecordKey(key_bad), "{ctx}");
                assert!(!q[0].reason.contains(id("bad").secret()), "{ctx}");
                // Gone from every listing, and the good records keep their
                // place.
                let outcome_path = matches!(path, Path::ClaimUndelivered | Path::MarkDelivered);
                let pending = if outcome_path { 2 } else { 3 };
                assert_eq!(
                    store.due(UnixTime::MAX, 10).await.unwrap().len(),
                    pending,
                    "{ctx}"
                );
                assert!(notices.try_recv().is_err(), "reported once: {ctx}");
                // Still bad: stays.
                assert!(
                    store.release_quarantined(RecordKey(key_bad)).await.is_err(),
                    "{ctx}"
                );
                assert_eq!(store.quarantined().await.unwrap().len(), 1, "{ctx}");
                // After a restart it is still set aside, not met again.
                store.close().await.unwrap();
                let store = FileStore::open_with_sealer(dir.file(), sealer.clone()).unwrap();
                let active = if matches!(path, Path::MarkDelivered) {
                    2
                } else {
                    3
                };
                assert_eq!(store.load_active().await.unwrap().len(), active, "{ctx}");
                assert_eq!(store.quarantined().await.unwrap().len(), 1, "{ctx}");
            }
        }
    }

    /// A record refused because the store was opened with the wrong owner
    /// data (here: one written before the store was bound, of another
    /// issuer) is put back by `release_quarantined` once it reads.
    #[tokio::test]
    async fn a_repaired_record_is_released_without_a_restart() {
        let (store, _dir) = temp_store();
        store.bind("https://op.example", "client").await.unwrap();
        let victim = record("v", 0);
        let key = record_key(victim.id());
        write_raw(&store, key, b"garbage");
        store.inner().load_index().unwrap();
        store.insert(record("a", 0)).await.unwrap();
        assert_eq!(store.load_active().await.unwrap().len(), 1);
        assert_eq!(store.quarantined().await.unwrap().len(), 1);
        // Repaired in place (an operator restores the record's bytes).
        {
            let txn = store.inner().db.begin_write().unwrap();
            {
                let mut q = txn.open_table(QUARANTINE).unwrap();
                let v = QuarantineEntry {
                    reason: "x",
                    record: &serde_json::to_vec(&victim).unwrap(),
                    state: &[],
                }
                .encode();
                q.insert(&key, v.as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        assert!(store.release_quarantined(RecordKey(key)).await.unwrap());
        assert!(!store.release_quarantined(RecordKey(key)).await.unwrap());
        assert!(store.quarantined().await.unwrap().is_empty());
        assert_eq!(store.get(victim.id()).await.unwrap(), Some(victim.clone()));
        let due = store.due(UnixTime::MAX, 10).await.unwrap();
        assert!(due.iter().any(|r| r.id() == victim.id()));
        // And it is written like any other from now on.
        store
            .finish(victim.id(), finished_machine(&victim), denied(3))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn undecodable_records_are_corrupt_and_named_by_fingerprint() {
        let (store, _dir) = temp_store();
        let secret_id = id("leaky");
        let key = record_key(&secret_id);
        // Valid JSON that quotes the id where a number belongs: serde's
        // own message would repeat it.
        let bad = format!(r#"{{"schema":1,"auth":"{}"}}"#, secret_id.secret());
        for value in [bad.as_bytes(), b"{\"schema\":1", b"\xff\x00garbage", b""] {
            write_raw(&store, key, value);
            let e = store.get(&secret_id).await.unwrap_err();
            assert!(
                matches!(e, StoreError::Corrupt { record: Some(fp), .. } if fp == secret_id.fingerprint()),
                "{e:?}"
            );
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains(secret_id.secret()), "{shown}");
            assert!(
                shown.contains(&secret_id.fingerprint().to_string()),
                "{shown}"
            );
        }
        // A valid record stored under another id's key.
        write_raw(&store, key, &serde_json::to_vec(&record("x", 0)).unwrap());
        assert!(matches!(
            store.get(&secret_id).await,
            Err(StoreError::Corrupt { .. })
        ));
    }
}
