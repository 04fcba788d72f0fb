//! The session store: bounded, with idle expiry, optionally kept on disk.
//!
//! tower-sessions' `MemoryStore` keeps every session it ever created, and
//! forgets them all on a restart. This store holds at most a fixed number
//! of sessions (when full, the one idle the longest goes first), drops a
//! session once its idle time has run out, and, given a directory, mirrors
//! every session to a file there so that a restart keeps them.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use time::OffsetDateTime;
use tower_sessions::SessionStore;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{Error, Result as StoreResult};

/// A bounded session store with idle expiry (see the module docs).
#[derive(Clone)]
pub(crate) struct BoundedStore {
    inner: Arc<Mutex<HashMap<Id, Record>>>,
    cap: usize,
    dir: Option<PathBuf>,
}

impl std::fmt::Debug for BoundedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundedStore")
            .field("sessions", &self.lock().len())
            .field("cap", &self.cap)
            .field("dir", &self.dir)
            .finish()
    }
}

fn backend(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Backend(format!("{what}: {e}"))
}

/// The file of a session: named after a hash of its id (the id is the
/// cookie's secret; a directory listing must not reveal it).
fn file_of(dir: &Path, id: &Id) -> PathBuf {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &id.0.to_le_bytes());
    let name: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!("{name}.json"))
}

fn active(r: &Record, now: OffsetDateTime) -> bool {
    r.expiry_date > now
}

impl BoundedStore {
    /// An in-memory store of at most `cap` sessions (at least one).
    pub(crate) fn in_memory(cap: usize) -> BoundedStore {
        BoundedStore {
            inner: Arc::new(Mutex::new(HashMap::new())),
            cap: cap.max(1),
            dir: None,
        }
    }

    /// A store that mirrors its sessions to files in `dir` (created if
    /// missing) and reads back the unexpired ones found there.
    pub(crate) fn in_dir(cap: usize, dir: &Path) -> std::io::Result<BoundedStore> {
        std::fs::create_dir_all(dir)?;
        let now = OffsetDateTime::now_utc();
        let mut map = HashMap::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let record = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Record>(&b).ok());
            match record {
                Some(r) if active(&r, now) && file_of(dir, &r.id) == path => {
                    map.insert(r.id, r);
                }
                // Expired, unreadable or misnamed: gone.
                _ => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let store = BoundedStore {
            inner: Arc::new(Mutex::new(map)),
            cap: cap.max(1),
            dir: Some(dir.to_owned()),
        };
        let evicted = store.evict(&mut store.lock(), now, None);
        store.remove_files(&evicted);
        Ok(store)
    }

    /// The same store (shared sessions) with another cap.
    pub(crate) fn with_cap(mut self, cap: usize) -> BoundedStore {
        self.cap = cap.max(1);
        self
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Id, Record>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many sessions the store holds (expired ones included until the
    /// next write drops them).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Drops expired sessions, then the longest idle ones beyond the cap
    /// (never `keep`); returns the ids dropped.
    fn evict(
        &self,
        map: &mut HashMap<Id, Record>,
        now: OffsetDateTime,
        keep: Option<Id>,
    ) -> Vec<Id> {
        let mut gone: Vec<Id> = map
            .values()
            .filter(|r| !active(r, now))
            .map(|r| r.id)
            .collect();
        for id in &gone {
            map.remove(id);
        }
        if map.len() > self.cap {
            // With idle expiry, the earliest expiry is the longest idle.
            // Normally one over the cap: a linear search each.
            for _ in 0..map.len() - self.cap {
                let oldest = map
                    .values()
                    .filter(|r| Some(r.id) != keep)
                    .min_by_key(|r| r.expiry_date)
                    .map(|r| r.id);
                let Some(id) = oldest else { break };
                map.remove(&id);
                gone.push(id);
            }
        }
        gone
    }

    fn remove_files(&self, ids: &[Id]) {
        if let Some(dir) = &self.dir {
            for id in ids {
                let _ = std::fs::remove_file(file_of(dir, id));
            }
        }
    }

    /// Writes a session's file (owner-only, replaced atomically).
    fn write_file(&self, record: &Record) -> StoreResult<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let bytes = serde_json::to_vec(record).map_err(|e| Error::Encode(e.to_string()))?;
        let path = file_of(dir, &record.id);
        let tmp = path.with_extension("tmp");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut f = options
            .open(&tmp)
            .map_err(|e| backend("writing a session", e))?;
        f.write_all(&bytes)
            .and_then(|()| f.sync_data())
            .map_err(|e| backend("writing a session", e))?;
        std::fs::rename(&tmp, &path).map_err(|e| backend("writing a session", e))
    }

    fn put(&self, record: &Record) -> StoreResult<()> {
        let evicted = {
            let mut map = self.lock();
            map.insert(record.id, record.clone());
            self.evict(&mut map, OffsetDateTime::now_utc(), Some(record.id))
        };
        self.remove_files(&evicted);
        self.write_file(record)
    }
}

#[async_trait::async_trait]
impl SessionStore for BoundedStore {
    async fn create(&self, record: &mut Record) -> StoreResult<()> {
        {
            let map = self.lock();
            while map.contains_key(&record.id) {
                record.id = Id::default();
            }
        }
        self.put(record)
    }

    async fn save(&self, record: &Record) -> StoreResult<()> {
        self.put(record)
    }

    async fn load(&self, id: &Id) -> StoreResult<Option<Record>> {
        let now = OffsetDateTime::now_utc();
        Ok(self.lock().get(id).filter(|r| active(r, now)).cloned())
    }

    async fn delete(&self, id: &Id) -> StoreResult<()> {
        self.lock().remove(id);
        self.remove_files(&[*id]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: i128, expires_in: time::Duration) -> Record {
        Record {
            id: Id(id),
            data: HashMap::from([("k".to_owned(), serde_json::json!(id.to_string()))]),
            expiry_date: OffsetDateTime::now_utc() + expires_in,
        }
    }

    #[tokio::test]
    async fn holds_at_most_cap_sessions_dropping_the_longest_idle() {
        let store = BoundedStore::in_memory(3);
        for i in 0..3000 {
            store
                .save(&record(
                    i,
                    time::Duration::minutes(10) + time::Duration::seconds(i as i64),
                ))
                .await
                .unwrap();
        }
        assert_eq!(store.len(), 3);
        // The three most recently active remain.
        for i in 2997..3000 {
            assert!(store.load(&Id(i)).await.unwrap().is_some(), "{i}");
        }
        assert!(store.load(&Id(0)).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn expired_sessions_are_neither_loaded_nor_kept() {
        let store = BoundedStore::in_memory(10);
        store
            .save(&record(1, time::Duration::seconds(-1)))
            .await
            .unwrap();
        assert!(store.load(&Id(1)).await.unwrap().is_none());
        store
            .save(&record(2, time::Duration::minutes(1)))
            .await
            .unwrap();
        assert_eq!(store.len(), 1, "the expired session was dropped");
    }

    #[tokio::test]
    async fn a_directory_store_keeps_sessions_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = BoundedStore::in_dir(10, dir.path()).unwrap();
        store
            .save(&record(7, time::Duration::minutes(5)))
            .await
            .unwrap();
        store
            .save(&record(8, time::Duration::minutes(5)))
            .await
            .unwrap();
        store.delete(&Id(8)).await.unwrap();
        drop(store);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert_eq!(
            names[0].len(),
            64 + ".json".len(),
            "named after a hash of the id"
        );
        let again = BoundedStore::in_dir(10, dir.path()).unwrap();
        let r = again.load(&Id(7)).await.unwrap().expect("kept");
        assert_eq!(r.data["k"], serde_json::json!("7"));
        assert!(again.load(&Id(8)).await.unwrap().is_none());
    }
}
