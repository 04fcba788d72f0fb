//! Tests of opening, reopening, bad files and sealing; the shared test
//! helpers (a temporary directory, raw writes) used by the other tests.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};

use super::FileStore;
use super::schema::{Key, LEGACY_DUE, META, PENDING, RECORDS};
use crate::jose::{Algorithm, DpopKey};
use crate::proto::poll::Outcome;
use crate::proto::token::TokenSet;
use crate::store::test_records::{at, denied, finished_machine, id, record};
use crate::store::{AesGcmSealer, Record, Sealer, Store, StoreError, StoredOutcome, record_key};
use crate::time::UnixTime;

/// A fresh directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new() -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "oidc-dtr-store-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub(crate) fn file(&self) -> PathBuf {
        self.0.join("dtr.redb")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(super) fn temp_store() -> (FileStore, TempDir) {
    let dir = TempDir::new();
    (FileStore::open(dir.file()).unwrap(), dir)
}

pub(super) fn sealer(byte: u8) -> Arc<dyn Sealer> {
    Arc::new(AesGcmSealer::new([byte; 32]).unwrap())
}

/// Writes a few records in every state, then closes the store.
pub(super) async fn populate(path: &Path, sealer: Option<Arc<dyn Sealer>>) -> Vec<Record> {
    let store = match sealer {
        Some(s) => FileStore::open_with_sealer(path, s).unwrap(),
        None => FileStore::open(path).unwrap(),
    };
    store.bind("https://op.example", "client").await.unwrap();
    let mut out = Vec::new();
    for i in 0..20 {
        let r = record(&format!("r{i}"), i * 10);
        store.insert(r.clone()).await.unwrap();
        out.push(r);
    }
    store
        .finish(out[0].id(), finished_machine(&out[0]), denied(50))
        .await
        .unwrap();
    store
        .finish(out[1].id(), finished_machine(&out[1]), denied(60))
        .await
        .unwrap();
    assert!(store.mark_delivered(out[1].id()).await.unwrap());
    out
}

fn expect_corrupt(r: Result<FileStore, StoreError>) -> StoreError {
    match r {
        Err(e @ StoreError::Corrupt { .. }) => e,
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// Issue 11, item 5: an existing empty file is not a new store: it is
/// `Corrupt`, and left as it was. A store the SDK creates is never empty.
#[tokio::test]
async fn an_existing_empty_file_is_corrupt_not_a_new_store() {
    let dir = TempDir::new();
    std::fs::write(dir.file(), b"").unwrap();
    let e = expect_corrupt(FileStore::open(dir.file()));
    assert!(e.to_string().contains("empty"), "{e}");
    assert_eq!(std::fs::metadata(dir.file()).unwrap().len(), 0);
    // A new store: created whole, reopened as the same store.
    let other = dir.file().with_file_name("new.redb");
    let store = FileStore::open(&other).unwrap();
    let r = record("fresh", 10);
    store.insert(r.clone()).await.unwrap();
    drop(store);
    assert!(std::fs::metadata(&other).unwrap().len() > 0);
    assert!(!other.with_file_name("new.redb.creating").exists());
    let store = FileStore::open(&other).unwrap();
    assert_eq!(store.load_active().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_file_with_the_legacy_due_index_keeps_its_pending_records() {
    let dir = TempDir::new();
    let records = populate(&dir.file(), None).await;
    // Rewrite the file into the layout before group commit: unfinished
    // records indexed in `due` (no value), no `pending` table.
    {
        let db = Database::open(dir.file()).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let pending = txn.open_table(PENDING).unwrap();
            let mut due = txn.open_table(LEGACY_DUE).unwrap();
            for entry in pending.iter().unwrap() {
                let (k, v) = entry.unwrap();
                assert!(
                    v.value().is_empty(),
                    "fresh inserts carry no separate state"
                );
                due.insert(k.value(), ()).unwrap();
            }
        }
        txn.delete_table(PENDING).unwrap();
        txn.commit().unwrap();
    }
    let store = FileStore::open(dir.file()).unwrap();
    let mut active: Vec<_> = store
        .load_active()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id().clone())
        .collect();
    active.sort_by(|a, b| a.secret().cmp(b.secret()));
    // Everything but the delivered one (an undelivered outcome is active).
    let mut expected: Vec<_> = records
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, r)| r.id().clone())
        .collect();
    expected.sort_by(|a, b| a.secret().cmp(b.secret()));
    assert_eq!(active, expected);
    // Still writable as usual, and the legacy table is gone.
    let r = &records[7];
    store
        .finish(r.id(), finished_machine(r), denied(70))
        .await
        .unwrap();
    assert!(store.get(r.id()).await.unwrap().unwrap().is_finished());
    assert!(
        store
            .due(at(1_000_000), 100)
            .await
            .unwrap()
            .iter()
            .all(|d| d.id() != r.id())
    );
    drop(store);
    let db = Database::open(dir.file()).unwrap();
    let txn = db.begin_read().unwrap();
    assert!(
        !txn.list_tables()
            .unwrap()
            .any(|t| t.name() == LEGACY_DUE.name())
    );
}

#[tokio::test]
async fn reopen_keeps_everything() {
    let dir = TempDir::new();
    let records = populate(&dir.file(), None).await;
    // A relaxed (non-durable) state update just before a clean close.
    let store = FileStore::open(dir.file()).unwrap();
    let r = &records[5];
    let mut m = r.machine.clone();
    m.set_config(crate::proto::poll::PollConfig::default().backoff_cap(Duration::from_secs(9)));
    store.update_state(r.id(), m.clone()).await.unwrap();
    drop(store);

    let store = FileStore::open(dir.file()).unwrap();
    store.bind("https://op.example", "client").await.unwrap();
    assert!(matches!(
        store.bind("https://op.example", "other").await,
        Err(StoreError::WrongOwner { .. })
    ));
    assert_eq!(store.get(r.id()).await.unwrap().unwrap().machine, m);
    let first = store.get(records[0].id()).await.unwrap().unwrap();
    assert_eq!(first.outcome, Some(denied(50)));
    let active = store.load_active().await.unwrap();
    assert_eq!(active.len(), 19, "18 pending + 1 undelivered");
    assert_eq!(store.due(UnixTime::MAX, 100).await.unwrap().len(), 18);
    assert_eq!(store.purge(UnixTime::MAX).await.unwrap(), 2);
}

#[tokio::test]
async fn a_second_open_is_locked() {
    let (store, dir) = temp_store();
    let e = FileStore::open(dir.file()).unwrap_err();
    assert!(matches!(e, StoreError::Locked { .. }), "{e:?}");
    assert!(e.to_string().contains("already open"), "{e}");
    drop(store);
    FileStore::open(dir.file()).unwrap();
}

#[tokio::test]
async fn truncated_file_is_corrupt_and_left_alone() {
    let dir = TempDir::new();
    populate(&dir.file(), None).await;
    let full = std::fs::read(dir.file()).unwrap();
    for len in [full.len() / 2, 4096, 100] {
        let cut = &full[..len];
        std::fs::write(dir.file(), cut).unwrap();
        let e = expect_corrupt(FileStore::open(dir.file()));
        assert!(e.to_string().contains("corrupt"), "{e}");
        assert!(std::fs::read(dir.file()).unwrap() == cut, "file changed");
    }
}

#[tokio::test]
async fn damaged_pages_are_corrupt_and_left_alone() {
    let dir = TempDir::new();
    populate(&dir.file(), None).await;
    let mut bytes = std::fs::read(dir.file()).unwrap();
    let len = bytes.len();
    // Zero the last quarter: pages the tree refers to lose their
    // contents. (A plain redb open panics on this file.)
    bytes[len * 3 / 4..].fill(0);
    std::fs::write(dir.file(), &bytes).unwrap();
    expect_corrupt(FileStore::open(dir.file()));
    assert!(std::fs::read(dir.file()).unwrap() == bytes, "file changed");
}

#[test]
fn garbage_and_foreign_files_are_refused() {
    let dir = TempDir::new();
    let garbage: Vec<u8> = (0..20_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(dir.file(), &garbage).unwrap();
    expect_corrupt(FileStore::open(dir.file()));
    assert!(
        std::fs::read(dir.file()).unwrap() == garbage,
        "file changed"
    );

    // Somebody else's redb database.
    let other = dir.0.join("other.redb");
    {
        let db = Database::create(&other).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(TableDefinition::<u64, u64>::new("things"))
            .unwrap()
            .insert(1, 2)
            .unwrap();
        txn.commit().unwrap();
    }
    let e = expect_corrupt(FileStore::open(&other));
    assert!(e.to_string().contains("not an oidc-dtr store"), "{e}");
}

/// Writes `value` under `key` (and the due index), bypassing encoding.
pub(super) fn write_raw(store: &FileStore, key: Key, value: &[u8]) {
    let txn = store.inner().db.begin_write().unwrap();
    {
        let mut records = txn.open_table(RECORDS).unwrap();
        records.insert(&key, value).unwrap();
        let mut pending = txn.open_table(PENDING).unwrap();
        pending.retain(|(_, k), _| k != key).unwrap();
        pending
            .insert((at(1).as_millis(), key), [].as_slice())
            .unwrap();
    }
    txn.commit().unwrap();
    store.inner().load_index().unwrap();
}

#[tokio::test]
async fn unknown_file_schema_is_refused() {
    let dir = TempDir::new();
    {
        let store = FileStore::open(dir.file()).unwrap();
        let txn = store.inner().db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("schema", 2u32.to_be_bytes().as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let e = FileStore::open(dir.file()).unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::UnsupportedSchema {
                found: 2,
                supported: 1,
                record: None
            }
        ),
        "{e:?}"
    );
}

/// A token set with recognisable secrets, through its serde form.
fn token_set(key: &DpopKey) -> TokenSet {
    use base64::Engine as _;
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let header = b64(&serde_json::json!({"alg": "ES256", "typ": "JWT"}));
    let payload = b64(&serde_json::json!({
        "iss": "https://op.example",
        "sub": "user-PLAINTEXT-SUBJECT",
        "aud": "client",
        "exp": 1_900_000_000,
        "iat": 1_800_000_000,
        "nonce": "nonce",
    }));
    let jwt = format!("{header}.{payload}.c2lnbmF0dXJlLVBMQUlOVEVYVA");
    serde_json::from_value(serde_json::json!({
        "access_token": "AT-PLAINTEXT-0123456789",
        "token_type": "DPoP",
        "expires_at": null,
        "refresh_token": "RT-PLAINTEXT-0123456789",
        "scope": "openid",
        "id_token": {"jwt": jwt},
        "received_at": 1_800_000_000_000u64,
        "dpop_key": key,
    }))
    .unwrap()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// A record with a DPoP key, finished with tokens; returns the secret
/// strings that must not appear in a sealed file.
async fn write_secrets(store: &FileStore) -> Vec<String> {
    let key = DpopKey::generate(Algorithm::ES256).unwrap();
    let pkcs8 = serde_json::to_value(&key).unwrap()["pkcs8"]
        .as_str()
        .unwrap()
        .to_owned();
    let tokens = token_set(&key);
    let mut r = record("secretive", 0);
    r.auth.dpop_key = Some(Box::new(key));
    store.insert(r.clone()).await.unwrap();
    let outcome = StoredOutcome::new(at(10), Outcome::Tokens(tokens.clone()));
    store
        .finish(r.id(), finished_machine(&r), outcome.clone())
        .await
        .unwrap();
    assert_eq!(
        store.get(r.id()).await.unwrap().unwrap().outcome,
        Some(outcome)
    );
    // The middle of the base64 DER: the private scalar lives in there.
    let key_part = pkcs8[pkcs8.len() / 2..pkcs8.len() / 2 + 24].to_owned();
    vec![
        "AT-PLAINTEXT-0123456789".into(),
        "RT-PLAINTEXT-0123456789".into(),
        tokens.id_token().raw().secret().to_owned(),
        "c2lnbmF0dXJlLVBMQUlOVEVYVA".into(),
        key_part,
        r.id().secret().to_owned(),
        r.auth.nonce().secret().to_owned(),
        r.auth.pkce_verifier().secret().to_owned(),
    ]
}

#[tokio::test]
async fn sealed_file_holds_no_plaintext_secret() {
    // Without a sealer the secrets are in the file: the check below
    // would see them.
    let dir = TempDir::new();
    let store = FileStore::open(dir.file()).unwrap();
    let secrets = write_secrets(&store).await;
    drop(store);
    let bytes = std::fs::read(dir.file()).unwrap();
    assert!(contains(&bytes, &secrets[0]), "the test cannot see tokens");

    let dir = TempDir::new();
    let store = FileStore::open_with_sealer(dir.file(), sealer(1)).unwrap();
    let secrets = write_secrets(&store).await;
    drop(store);
    let bytes = std::fs::read(dir.file()).unwrap();
    for s in &secrets {
        assert!(!contains(&bytes, s), "plaintext secret in the file: {s}");
    }

    // And it reads back with the key.
    let store = FileStore::open_with_sealer(dir.file(), sealer(1)).unwrap();
    let r = store.get(&id("secretive")).await.unwrap().unwrap();
    assert!(matches!(
        r.outcome.unwrap().outcome,
        Outcome::Tokens(t) if t.access_token().secret() == "AT-PLAINTEXT-0123456789"
    ));
    assert!(r.auth.dpop_key().is_some());
}

#[tokio::test]
async fn wrong_key_or_missing_sealer_is_an_error() {
    let dir = TempDir::new();
    populate(&dir.file(), Some(sealer(1))).await;
    let e = FileStore::open_with_sealer(dir.file(), sealer(2)).unwrap_err();
    assert!(matches!(e, StoreError::Sealing(_)), "{e:?}");
    let e = FileStore::open(dir.file()).unwrap_err();
    assert!(matches!(e, StoreError::Sealing(_)), "{e:?}");
    // The failed opens changed no record. (redb's integrity check may
    // rewrite pages of a sound file, so the bytes are not compared.)
    {
        let store = FileStore::open_with_sealer(dir.file(), sealer(1)).unwrap();
        assert_eq!(store.load_active().await.unwrap().len(), 19);
    }

    // An unsealed store with records is not silently read as sealed.
    let plain = TempDir::new();
    populate(&plain.file(), None).await;
    let e = FileStore::open_with_sealer(plain.file(), sealer(1)).unwrap_err();
    assert!(matches!(e, StoreError::Sealing(_)), "{e:?}");

    // A sealed value moved under another record's key does not open.
    let store = FileStore::open_with_sealer(dir.file(), sealer(1)).unwrap();
    let moved = {
        let txn = store.inner().db.begin_read().unwrap();
        let records = txn.open_table(RECORDS).unwrap();
        records
            .get(&record_key(&id("r3")))
            .unwrap()
            .unwrap()
            .value()
            .to_vec()
    };
    write_raw(&store, record_key(&id("r4")), &moved);
    let e = store.get(&id("r4")).await.unwrap_err();
    assert!(matches!(e, StoreError::Sealing(_)), "{e:?}");
    assert!(
        e.to_string().contains(&id("r4").fingerprint().to_string()),
        "{e}"
    );
    assert!(store.get(&id("r3")).await.unwrap().is_some());
}

#[tokio::test]
async fn a_panic_in_the_engine_is_an_error() {
    let (store, _dir) = temp_store();
    let r: Result<(), StoreError> = store.spawn(|_| panic!("simulated engine panic")).await;
    assert!(matches!(r, Err(StoreError::Corrupt { .. })), "{r:?}");
    // The store still works.
    store.insert(record("a", 0)).await.unwrap();
}
