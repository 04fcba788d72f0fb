//! `PostgresStore` on a real PostgreSQL (feature `postgres`): the store
//! conformance suite, migrations, leases across instances, connection
//! faults.
//!
//! The database comes from `DTR_TEST_DATABASE_URL` (default, outside CI:
//! `postgres://postgres@127.0.0.1:5432/test`). Each test works in a schema
//! of its own, dropped at the end. Without a reachable database every test
//! here prints why and passes, except under `CI=true`, where that fails.

use std::sync::Arc;
use std::time::Duration;

use oidc_dtr::{
    error::StoreError,
    store::{AesGcmSealer, Lease, PostgresStore, Store},
};
use oidc_dtr_testkit::conformance::{at, denied, finished_machine, record};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The database URL, or `None` (after printing why) when the tests must be
/// skipped. Panics under `CI=true` instead of skipping.
pub(crate) async fn database_url() -> Option<String> {
    let url = match std::env::var("DTR_TEST_DATABASE_URL") {
        Ok(u) if !u.is_empty() => u,
        _ if in_ci() => panic!("CI=true but DTR_TEST_DATABASE_URL is not set"),
        _ => DEFAULT_URL.to_owned(),
    };
    match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
        Ok((client, conn)) => {
            drop(client);
            drop(conn);
            Some(url)
        }
        Err(e) if in_ci() => panic!("CI=true but the test database is not reachable: {e}"),
        Err(e) => {
            eprintln!(
                "skipping a PostgreSQL test: no database at DTR_TEST_DATABASE_URL \
                 (or {DEFAULT_URL}): {e}"
            );
            None
        }
    }
}

/// A schema of its own for one test, dropped (with everything in it) when
/// the guard is.
pub(crate) struct SchemaGuard {
    url: String,
    pub(crate) schema: String,
}

impl SchemaGuard {
    fn new(url: &str) -> SchemaGuard {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        SchemaGuard {
            url: url.to_owned(),
            schema: format!("t_{}_{n}_{nanos}", std::process::id()),
        }
    }

    pub(crate) fn options(&self) -> oidc_dtr::store::PostgresOptions {
        PostgresStore::options(self.url.clone()).schema(self.schema.clone())
    }

    pub(crate) async fn store(&self) -> PostgresStore {
        self.options().connect().await.unwrap()
    }

    /// A plain connection, to look at or tamper with the tables.
    pub(crate) async fn sql(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
    }
}

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let url = self.url.clone();
        // A session of the test still in a transaction (its runtime is
        // blocked by this very drop) must not hang the test: give up after
        // a while, leaving a schema behind.
        let sql = format!(
            "SET lock_timeout = '5s'; DROP SCHEMA IF EXISTS \"{}\" CASCADE",
            self.schema
        );
        // Drop may run inside a runtime: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = client.batch_execute(&sql).await;
                }
            });
        })
        .join();
    }
}

/// A fresh store in a fresh schema, or `None` if the tests are skipped.
pub(crate) async fn fresh() -> Option<(PostgresStore, SchemaGuard)> {
    let url = database_url().await?;
    let guard = SchemaGuard::new(&url);
    Some((guard.store().await, guard))
}

mod postgres_store_conformance {
    oidc_dtr_testkit::store_conformance_tests!(match crate::postgres::fresh().await {
        Some(s) => s,
        None => return,
    });
}

macro_rules! fresh_or_skip {
    () => {
        match fresh().await {
            Some(s) => s,
            None => return,
        }
    };
}

#[tokio::test]
async fn concurrent_starts_migrate_once() {
    let Some(url) = database_url().await else {
        return;
    };
    let guard = SchemaGuard::new(&url);
    let starts = (0..6).map(|_| {
        let options = guard.options();
        async move { options.connect().await.unwrap() }
    });
    let stores = futures_join_all(starts).await;
    assert_eq!(stores.len(), 6);
    let rows = guard
        .sql()
        .await
        .query(
            &format!("SELECT version FROM \"{}\".migrations", guard.schema),
            &[],
        )
        .await
        .unwrap();
    let versions: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    // Each migration exactly once.
    let mut sorted = versions.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        (1..=PostgresStore::DB_SCHEMA_VERSION as i32).collect::<Vec<_>>()
    );
}

/// Joins futures without a `futures` dependency: one task each.
async fn futures_join_all<F>(fs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = fs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn a_schema_from_a_newer_release_is_refused() {
    let (store, guard) = fresh_or_skip!();
    drop(store);
    guard
        .sql()
        .await
        .batch_execute(&format!(
            "INSERT INTO \"{}\".migrations (version) VALUES (99)",
            guard.schema
        ))
        .await
        .unwrap();
    let e = guard.options().connect().await.unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::UnsupportedSchema {
                found: 99,
                record: None,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(!e.is_retryable());
}

#[tokio::test]
async fn sealed_rows_hold_no_secret_and_need_the_key() {
    let Some(url) = database_url().await else {
        return;
    };
    let guard = SchemaGuard::new(&url);
    let sealed = guard
        .options()
        .sealer(Arc::new(AesGcmSealer::new([3; 32]).unwrap()))
        .connect()
        .await
        .unwrap();
    let r = record("sealed", 0);
    sealed.insert(r.clone()).await.unwrap();
    assert_eq!(sealed.get(r.id()).await.unwrap(), Some(r.clone()));
    let rows = guard
        .sql()
        .await
        .query(
            &format!("SELECT body FROM \"{}\".records", guard.schema),
            &[],
        )
        .await
        .unwrap();
    let body: Vec<u8> = rows[0].get(0);
    let secret = r.id().secret().as_bytes();
    assert!(!body.windows(secret.len()).any(|w| w == secret));
    let other = guard
        .options()
        .sealer(Arc::new(AesGcmSealer::new([4; 32]).unwrap()))
        .connect()
        .await
        .unwrap();
    let e = other.get(r.id()).await.unwrap_err();
    assert!(matches!(e, StoreError::Sealing(_)), "{e:?}");
}

#[tokio::test]
async fn instances_claim_disjoint_batches() {
    let (a, guard) = fresh_or_skip!();
    let b = guard.store().await;
    let c = guard.store().await;
    for n in 0..30 {
        a.insert(record(&format!("r{n}"), n)).await.unwrap();
    }
    let ttl = Duration::from_secs(60);
    let (ra, rb, rc) = tokio::join!(
        a.claim_due("a", at(1000), 12, ttl),
        b.claim_due("b", at(1000), 12, ttl),
        c.claim_due("c", at(1000), 12, ttl),
    );
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let ra = ra.unwrap();
    let held_by_a = ra.len();
    for batch in [ra, rb.unwrap(), rc.unwrap()] {
        // Earliest first within a batch.
        let dues: Vec<_> = batch.iter().map(|(r, _)| r.due_at()).collect();
        assert!(dues.windows(2).all(|w| w[0] <= w[1]));
        for (r, lease) in batch {
            assert_eq!(lease.epoch, 1);
            assert!(seen.insert(r.id().clone()), "claimed twice");
            total += 1;
        }
    }
    assert_eq!(total, 30);
    // Everything is leased: nobody else gets anything, the owner renews.
    assert!(
        b.claim_due("d", at(1000), 50, ttl)
            .await
            .unwrap()
            .is_empty()
    );
    let again = a.claim_due("a", at(1000), 50, ttl).await.unwrap();
    assert_eq!(again.len(), held_by_a);
    assert!(
        again.iter().all(|(_, l)| l.epoch == 1),
        "same owner, same epoch"
    );
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_and_the_old_owner_is_fenced() {
    let (a, guard) = fresh_or_skip!();
    let b = guard.store().await;
    let r = record("x", 0);
    a.insert(r.clone()).await.unwrap();
    let short = Duration::from_millis(1);
    let long = Duration::from_secs(60);
    let claimed = a.claim_due("a", at(1000), 10, short).await.unwrap();
    let lease_a = claimed[0].1;
    assert_eq!(lease_a, Lease::new(1));
    // The lease expires on the database's clock.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let claimed = b.claim_due("b", at(1000), 10, long).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let lease_b = claimed[0].1;
    assert_eq!(lease_b, Lease::new(2));

    // The stalled instance wakes up: it can neither renew nor write.
    assert_eq!(
        a.renew_leases("a", &[r.id().clone()], long).await.unwrap(),
        vec![false]
    );
    let m = finished_machine(&r);
    let e = a
        .update_state_leased(r.id(), r.machine.clone(), "a", lease_a)
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::LeaseLost { record } if record == r.fingerprint()));
    let e = a
        .finish_leased(r.id(), m.clone(), denied(5), "a", lease_a)
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::LeaseLost { .. }), "{e:?}");
    assert!(!a.release_lease(r.id(), "a", lease_a).await.unwrap());
    assert_eq!(a.get(r.id()).await.unwrap(), Some(r.clone()), "unchanged");

    // The new owner can.
    assert_eq!(
        b.renew_leases("b", &[r.id().clone()], long).await.unwrap(),
        vec![true]
    );
    b.finish_leased(r.id(), m, denied(5), "b", lease_b)
        .await
        .unwrap();
    assert!(a.get(r.id()).await.unwrap().unwrap().is_finished());
    assert!(
        a.claim_due("a", at(1000), 10, long)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_released_lease_is_claimed_at_once() {
    let (a, guard) = fresh_or_skip!();
    let b = guard.store().await;
    let r = record("x", 0);
    a.insert(r.clone()).await.unwrap();
    let long = Duration::from_secs(60);
    let lease = a.claim_due("a", at(1000), 10, long).await.unwrap()[0].1;
    assert!(
        b.claim_due("b", at(1000), 10, long)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(a.release_lease(r.id(), "a", lease).await.unwrap());
    let claimed = b.claim_due("b", at(1000), 10, long).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].1, Lease::new(2));
}

#[tokio::test]
async fn dropped_connections_are_retryable_and_then_recover() {
    let Some(url) = database_url().await else {
        return;
    };
    let guard = SchemaGuard::new(&url);
    // An application name of its own, so that only this test's
    // connections are dropped.
    let sep = if url.contains('?') { '&' } else { '?' };
    let store = PostgresStore::options(format!("{url}{sep}application_name={}", guard.schema))
        .schema(guard.schema.clone())
        .connect()
        .await
        .unwrap();
    let r = record("x", 0);
    store.insert(r.clone()).await.unwrap();
    // The server drops every connection of this store's pool.
    guard
        .sql()
        .await
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name = $1",
            &[&guard.schema],
        )
        .await
        .unwrap();
    let mut ok = false;
    for _ in 0..5 {
        match store.get(r.id()).await {
            Ok(got) => {
                assert_eq!(got, Some(r.clone()));
                ok = true;
                break;
            }
            Err(e) => assert!(e.is_retryable(), "{e:?}"),
        }
    }
    assert!(ok, "the store did not recover");
}

#[tokio::test]
async fn a_closed_store_refuses_calls() {
    let (store, _guard) = fresh_or_skip!();
    store.close().await.unwrap();
    let e = store.get(record("x", 0).id()).await.unwrap_err();
    assert!(matches!(e, StoreError::Closed), "{e:?}");
}

/// Three instances work through the same pending authentications, the
/// store's way (claim, poll, fenced finish); one of them dies right after
/// claiming a batch. Every authentication ends exactly once, none is ever
/// worked on by two instances at a time, and the dead one's batch is
/// taken over once its leases expire.
#[tokio::test]
async fn a_fleet_shares_the_work_and_survives_a_dead_instance() {
    use std::collections::HashMap;
    use std::sync::Mutex;

    let (seed, guard) = fresh_or_skip!();
    const N: u64 = 300;
    let mut all = HashMap::new();
    for n in 0..N {
        let r = record(&format!("f{n}"), n % 50);
        seed.insert(r.clone()).await.unwrap();
        all.insert(r.id().clone(), r);
    }
    let all = Arc::new(all);
    let ttl = Duration::from_millis(300);

    // The instance that dies: claims a batch, then is gone (no release).
    let dead = guard.store().await;
    let orphaned = dead.claim_due("dead", at(1000), 40, ttl).await.unwrap();
    assert_eq!(orphaned.len(), 40);
    drop(dead);

    // Per id: how many instances are working on it now; finishes seen.
    let in_flight: Arc<Mutex<HashMap<oidc_dtr::DeferredId, u32>>> = Arc::default();
    let finished: Arc<Mutex<HashMap<oidc_dtr::DeferredId, (String, u64)>>> = Arc::default();
    let mut workers = Vec::new();
    for w in 0..3 {
        let store = guard.store().await;
        let (in_flight, finished, all) = (in_flight.clone(), finished.clone(), all.clone());
        workers.push(tokio::spawn(async move {
            let owner = format!("w{w}");
            let mut idle_rounds = 0;
            while idle_rounds < 20 {
                let batch = store.claim_due(&owner, at(1000), 16, ttl).await.unwrap();
                if batch.is_empty() {
                    idle_rounds += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                idle_rounds = 0;
                for (r, lease) in batch {
                    {
                        let mut f = in_flight.lock().unwrap();
                        let n = f.entry(r.id().clone()).or_default();
                        assert_eq!(*n, 0, "two instances on one authentication");
                        *n += 1;
                    }
                    // "Poll" it.
                    tokio::task::yield_now().await;
                    in_flight.lock().unwrap().insert(r.id().clone(), 0);
                    let m = finished_machine(&all[r.id()]);
                    match store
                        .finish_leased(r.id(), m, denied(60), &owner, lease)
                        .await
                    {
                        Ok(()) => {
                            let prev = finished
                                .lock()
                                .unwrap()
                                .insert(r.id().clone(), (owner.clone(), lease.epoch));
                            assert!(prev.is_none(), "finished twice");
                        }
                        Err(StoreError::LeaseLost { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    assert!(seed.due(at(1000), 10).await.unwrap().is_empty());
    let finished = finished.lock().unwrap();
    assert_eq!(finished.len() as u64, N, "every authentication ended");
    for (r, lease) in &orphaned {
        let (owner, epoch) = &finished[r.id()];
        assert_ne!(owner, "dead");
        assert!(*epoch > lease.epoch, "taken over with a higher epoch");
    }
    let spread: std::collections::HashSet<_> = finished.values().map(|(o, _)| o).collect();
    assert!(spread.len() >= 2, "the work was shared: {spread:?}");
}

// Issue 22: a bad row is quarantined, not contagious; rows are bound to
// their store and their delivery state.

/// Runs one SQL statement on the test's schema (`{s}`: the schema).
async fn exec(guard: &SchemaGuard, sql: &str, key: &[u8]) -> u64 {
    let sql = sql.replace("{s}", &format!("\"{}\"", guard.schema));
    guard.sql().await.execute(&sql, &[&key]).await.unwrap()
}

/// Flips one bit of a row's body: its seal no longer opens.
const TAMPER: &str = "UPDATE {s}.records
    SET body = set_byte(body, length(body) - 3, get_byte(body, length(body) - 3) # 1)
    WHERE key = $1";
/// Sets the `delivered` column back (a replay of acknowledged tokens).
const UNDELIVER: &str = "UPDATE {s}.records SET delivered = false WHERE key = $1";

fn key_of(r: &oidc_dtr::store::Record) -> Vec<u8> {
    oidc_dtr::store::RecordKey::of(r.id()).as_bytes().to_vec()
}

fn sealer() -> Arc<dyn oidc_dtr::store::Sealer> {
    Arc::new(AesGcmSealer::new([9; 32]).unwrap())
}

async fn sealed_store(guard: &SchemaGuard) -> PostgresStore {
    guard.options().sealer(sealer()).connect().await.unwrap()
}

/// Waits (a few seconds at most) for the notice that `key` was set aside.
async fn quarantine_notice(
    rx: &mut tokio::sync::broadcast::Receiver<oidc_dtr::store::StoreNotice>,
    key: oidc_dtr::store::RecordKey,
) -> bool {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match rx.recv().await {
                Ok(oidc_dtr::store::StoreNotice::Quarantined(k)) if k == key => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    })
    .await
    .unwrap_or(false)
}

/// Issue 22, item 6: one bad row, met on any reading path of the store
/// (a claim, the due and start-up listings, a read by id, the outcome
/// claim, a write, an acknowledgment), is set aside and reported; the
/// path answers for the other rows as usual; the bad row is named by the
/// quarantine list and by nothing else, and deleting it needs no restart.
#[tokio::test]
async fn postgres_a_bad_row_is_quarantined_on_every_reading_path() {
    let Some(url) = database_url().await else {
        return;
    };
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Bad {
        Tampered,
        Garbage,
        OtherIssuer,
        Undelivered,
    }
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Path {
        ClaimDue,
        ClaimDueUnheld,
        Due,
        LoadActive,
        Get,
        ClaimUndelivered,
        UpdateState,
        Finish,
        MarkDelivered,
    }
    use Path::*;
    let ttl = Duration::from_secs(60);
    for bad in [
        Bad::Tampered,
        Bad::Garbage,
        Bad::OtherIssuer,
        Bad::Undelivered,
    ] {
        for path in [
            ClaimDue,
            ClaimDueUnheld,
            Due,
            LoadActive,
            Get,
            ClaimUndelivered,
            UpdateState,
            Finish,
            MarkDelivered,
        ] {
            let outcome_path = matches!(path, ClaimUndelivered | MarkDelivered);
            // A flipped delivery flag only means something on an outcome.
            if bad == Bad::Undelivered && !matches!(path, ClaimUndelivered | LoadActive | Get) {
                continue;
            }
            let ctx = format!("{bad:?} via {path:?}");
            let guard = SchemaGuard::new(&url);
            let store = sealed_store(&guard).await;
            store.bind("https://op.example", "client").await.unwrap();
            let mut notices = store.notices().unwrap();
            let good: Vec<_> = (0..4).map(|i| record(&format!("g{i}"), i)).collect();
            for g in &good {
                store.insert(g.clone()).await.unwrap();
            }
            let victim = record("bad", 0);
            let key = key_of(&victim);
            store.insert(victim.clone()).await.unwrap();
            if outcome_path || bad == Bad::Undelivered {
                for r in [&victim, &good[0]] {
                    store
                        .finish(r.id(), finished_machine(r), denied(1))
                        .await
                        .unwrap();
                }
            }
            match bad {
                Bad::Tampered => {
                    assert_eq!(exec(&guard, TAMPER, &key).await, 1);
                }
                Bad::Garbage => {
                    exec(
                        &guard,
                        "UPDATE {s}.records SET body = '\\x00ff' WHERE key = $1",
                        &key,
                    )
                    .await;
                }
                Bad::OtherIssuer => {
                    // The same id at another issuer, in another schema
                    // sealed with the same key: its row copied over ours.
                    let other = SchemaGuard::new(&url);
                    let o = sealed_store(&other).await;
                    o.bind("https://other.example", "client").await.unwrap();
                    let a = oidc_dtr::DeferredAuthentication::seeded(
                        victim.id().clone(),
                        "https://other.example".into(),
                        "client".into(),
                        at(0),
                        Some(3600),
                        5,
                        oidc_dtr::secret::Nonce::new("nonce"),
                    );
                    let r = oidc_dtr::store::Record::new(
                        a.clone(),
                        oidc_dtr::poll::PollMachine::new(&a, oidc_dtr::poll::PollConfig::default()),
                    );
                    o.insert(r.clone()).await.unwrap();
                    if outcome_path {
                        o.finish(r.id(), finished_machine(&r), denied(1))
                            .await
                            .unwrap();
                    }
                    let sql = format!(
                        "UPDATE {{s}}.records SET body = (SELECT body FROM \"{}\".records WHERE key = $1) WHERE key = $1",
                        other.schema
                    );
                    assert_eq!(exec(&guard, &sql, &key).await, 1);
                }
                Bad::Undelivered => {
                    assert!(store.mark_delivered(victim.id()).await.unwrap());
                    assert_eq!(exec(&guard, UNDELIVER, &key).await, 1);
                }
            }
            let ids = |rs: Vec<oidc_dtr::store::Record>| {
                let mut v: Vec<String> = rs.iter().map(|r| r.fingerprint().to_string()).collect();
                v.sort();
                v
            };
            let fps = |gs: &[oidc_dtr::store::Record]| {
                let mut v: Vec<String> = gs.iter().map(|r| r.fingerprint().to_string()).collect();
                v.sort();
                v
            };
            let pending: Vec<oidc_dtr::store::Record> = if outcome_path || bad == Bad::Undelivered {
                good[1..].to_vec()
            } else {
                good.clone()
            };
            match path {
                ClaimDue | ClaimDueUnheld => {
                    let got = if path == ClaimDue {
                        store.claim_due("me", at(1000), 10, ttl).await
                    } else {
                        store.claim_due_unheld("me", at(1000), 10, ttl).await
                    };
                    let got: Vec<_> = got.expect(&ctx).into_iter().map(|(r, _)| r).collect();
                    assert_eq!(ids(got), fps(&pending), "{ctx}");
                }
                Due => {
                    let got = store.due(at(1000), 10).await.expect(&ctx);
                    assert_eq!(ids(got), fps(&pending), "{ctx}");
                }
                LoadActive => {
                    let got = store.load_active().await.expect(&ctx);
                    assert_eq!(ids(got), fps(&good), "{ctx}");
                }
                Get => {
                    assert!(store.get(victim.id()).await.is_err(), "{ctx}");
                    assert!(store.get(good[1].id()).await.unwrap().is_some(), "{ctx}");
                }
                ClaimUndelivered => {
                    let got = store.claim_undelivered(10, ttl).await.expect(&ctx);
                    assert_eq!(ids(got), fps(&good[..1]), "{ctx}");
                }
                UpdateState => {
                    assert!(
                        store
                            .update_state(victim.id(), victim.machine.clone())
                            .await
                            .is_err(),
                        "{ctx}"
                    );
                }
                Finish => {
                    assert!(
                        store
                            .finish(victim.id(), finished_machine(&victim), denied(2))
                            .await
                            .is_err(),
                        "{ctx}"
                    );
                }
                MarkDelivered => {
                    assert!(store.mark_delivered(victim.id()).await.is_err(), "{ctx}");
                    assert!(store.mark_delivered(good[0].id()).await.unwrap(), "{ctx}");
                }
            }
            let vkey = oidc_dtr::store::RecordKey::of(victim.id());
            assert!(quarantine_notice(&mut notices, vkey).await, "{ctx}: notice");
            let q = store.quarantined().await.unwrap();
            assert_eq!(q.len(), 1, "{ctx}");
            assert_eq!(q[0].key, vkey, "{ctx}");
            assert!(!q[0].reason.contains(victim.id().secret()), "{ctx}");
            // Out of every listing, for every instance; the rest as usual.
            let other_instance = sealed_store(&guard).await;
            let claimed = other_instance.due(at(1000), 10).await.unwrap();
            let want = if outcome_path || bad == Bad::Undelivered {
                fps(&good[1..])
            } else {
                fps(&good)
            };
            assert_eq!(ids(claimed), want, "{ctx}");
            assert!(
                other_instance
                    .load_active()
                    .await
                    .unwrap()
                    .iter()
                    .all(|r| r.id() != victim.id()),
                "{ctx}"
            );
            assert!(store.get(victim.id()).await.is_err(), "{ctx}");
            // Still bad: it stays set aside.
            assert!(store.release_quarantined(vkey).await.is_err(), "{ctx}");
            // Deleted: gone, nothing else changes, no restart.
            assert_eq!(
                exec(&guard, "DELETE FROM {s}.records WHERE key = $1", &key).await,
                1
            );
            assert!(store.quarantined().await.unwrap().is_empty(), "{ctx}");
            assert_eq!(store.get(victim.id()).await.unwrap(), None, "{ctx}");
            assert_eq!(
                store.due(at(1000), 10).await.unwrap().len(),
                want.len(),
                "{ctx}"
            );
        }
    }
}

/// Issue 22, item 7: the `delivered` column is only an index; the body
/// (sealed or not) carries the delivery state. Setting the column back
/// after an acknowledgment is refused: the outcome is not handed out
/// again, the row is set aside, and once repaired it is released without
/// a restart. A pending row whose seal was broken and then restored is
/// released too, and claimed again with a new lease epoch.
#[tokio::test]
async fn postgres_a_flipped_delivered_flag_is_refused_and_a_repaired_row_released() {
    let Some(url) = database_url().await else {
        return;
    };
    for sealed in [true, false] {
        let guard = SchemaGuard::new(&url);
        let store = if sealed {
            sealed_store(&guard).await
        } else {
            guard.store().await
        };
        store.bind("https://op.example", "client").await.unwrap();
        let acked = record("acked", 0);
        store.insert(acked.clone()).await.unwrap();
        store
            .finish(acked.id(), finished_machine(&acked), denied(1))
            .await
            .unwrap();
        assert!(store.mark_delivered_once(acked.id()).await.unwrap());
        let key = key_of(&acked);
        assert_eq!(exec(&guard, UNDELIVER, &key).await, 1);
        let ttl = Duration::from_secs(30);
        assert!(
            store.claim_undelivered(10, ttl).await.unwrap().is_empty(),
            "sealed: {sealed}"
        );
        let q = store.quarantined().await.unwrap();
        assert_eq!(q.len(), 1);
        assert!(q[0].reason.contains("delivery state"), "{}", q[0].reason);
        assert!(store.load_active().await.unwrap().is_empty());
        // Repaired: the column says delivered again.
        exec(
            &guard,
            "UPDATE {s}.records SET delivered = true WHERE key = $1",
            &key,
        )
        .await;
        assert!(
            store
                .release_quarantined(oidc_dtr::store::RecordKey::of(acked.id()))
                .await
                .unwrap()
        );
        assert!(store.quarantined().await.unwrap().is_empty());
        let back = store.get(acked.id()).await.unwrap().unwrap();
        assert!(back.outcome.unwrap().delivered);
        assert!(store.claim_undelivered(10, ttl).await.unwrap().is_empty());
        assert!(!store.mark_delivered_once(acked.id()).await.unwrap());

        // A pending row, tampered, then restored by an operator.
        let p = record("pending", 0);
        store.insert(p.clone()).await.unwrap();
        let first = store.claim_due("me", at(1000), 10, ttl).await.unwrap();
        assert_eq!(first.len(), 1);
        let epoch = first[0].1.epoch;
        store.release_lease(p.id(), "me", first[0].1).await.unwrap();
        let pkey = key_of(&p);
        let schema = format!("\"{}\"", guard.schema);
        let client = guard.sql().await;
        let body: Vec<u8> = client
            .query_one(
                &format!("SELECT body FROM {schema}.records WHERE key = $1"),
                &[&pkey],
            )
            .await
            .unwrap()
            .get(0);
        if sealed {
            exec(&guard, TAMPER, &pkey).await;
        } else {
            exec(
                &guard,
                "UPDATE {s}.records SET body = '\\x7b7d' WHERE key = $1",
                &pkey,
            )
            .await;
        }
        assert!(
            store
                .claim_due("me", at(1000), 10, ttl)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.quarantined().await.unwrap().len(), 1);
        client
            .execute(
                &format!("UPDATE {schema}.records SET body = $2 WHERE key = $1"),
                &[&pkey, &body],
            )
            .await
            .unwrap();
        // Repaired but not released: still set aside.
        assert!(
            store
                .claim_due("me", at(1000), 10, ttl)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .release_quarantined(oidc_dtr::store::RecordKey::of(p.id()))
                .await
                .unwrap()
        );
        let again = store.claim_due("me", at(1000), 10, ttl).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].0, p);
        assert!(again[0].1.epoch > epoch, "a new epoch fences older holders");
    }
}

/// Issue 22, item 7: a database written by the previous release (schema
/// version 2: the acknowledgment set only the `delivered` column, the body
/// still says "not delivered") migrates to version 3 at `connect`: its
/// delivered rows are re-sealed with the delivery state, so that setting
/// the column back afterwards is refused; undelivered outcomes and pending
/// rows read as before.
#[tokio::test]
async fn postgres_a_version_2_schema_migrates_and_reseals_delivered_rows() {
    let Some(url) = database_url().await else {
        return;
    };
    let guard = SchemaGuard::new(&url);
    let store = sealed_store(&guard).await;
    store.bind("https://op.example", "client").await.unwrap();
    let (acked, open, pending) = (record("acked", 0), record("open", 0), record("pending", 0));
    for r in [&acked, &open, &pending] {
        store.insert(r.clone()).await.unwrap();
    }
    for r in [&acked, &open] {
        store
            .finish(r.id(), finished_machine(r), denied(1))
            .await
            .unwrap();
    }
    drop(store);
    // Back to what version 2 left: no quarantine columns, and the
    // acknowledgment in the column only.
    let schema = format!("\"{}\"", guard.schema);
    guard
        .sql()
        .await
        .batch_execute(&format!(
            "DROP INDEX {schema}.records_quarantined;
             ALTER TABLE {schema}.records DROP COLUMN quarantined_at,
                 DROP COLUMN quarantine_reason;
             ALTER TABLE {schema}.records RESET (fillfactor);
             DELETE FROM {schema}.migrations WHERE version >= 3;"
        ))
        .await
        .unwrap();
    exec(
        &guard,
        "UPDATE {s}.records SET delivered = true WHERE key = $1",
        &key_of(&acked),
    )
    .await;

    let store = sealed_store(&guard).await;
    let versions: Vec<i32> = guard
        .sql()
        .await
        .query(
            &format!("SELECT version FROM {schema}.migrations ORDER BY version"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, vec![1, 2, 3, 4]);
    store.bind("https://op.example", "client").await.unwrap();
    assert!(
        store
            .get(acked.id())
            .await
            .unwrap()
            .unwrap()
            .outcome
            .unwrap()
            .delivered
    );
    let ttl = Duration::from_secs(30);
    let open_claimed = store.claim_undelivered(10, ttl).await.unwrap();
    assert_eq!(open_claimed.len(), 1);
    assert_eq!(open_claimed[0].id(), open.id());
    assert_eq!(
        store.due(at(1000), 10).await.unwrap(),
        vec![pending.clone()]
    );
    // The re-sealed body now says delivered: the column cannot be set back.
    assert_eq!(exec(&guard, UNDELIVER, &key_of(&acked)).await, 1);
    let other = sealed_store(&guard).await;
    other.bind("https://op.example", "client").await.unwrap();
    assert!(
        other
            .claim_undelivered(10, Duration::from_millis(1))
            .await
            .unwrap()
            .iter()
            .all(|r| r.id() != acked.id())
    );
    let q = other.quarantined().await.unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].key, oidc_dtr::store::RecordKey::of(acked.id()));
}

/// Issue 22, item 6, end to end: a fleet member whose claimed batch holds
/// one row whose seal was broken still polls every other authentication
/// of the batch, which end with tokens; the bad row is set aside and
/// reported to every instance; once it is deleted, new authentications
/// keep being polled by the same, never restarted, instances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_fleet_polls_the_rest_of_a_batch_with_a_tampered_row() {
    use oidc_dtr::{DtrClient, poll::FleetConfig};
    use oidc_dtr_testkit::{MockOp, OpConfig};

    let Some((watcher, guard)) = fresh().await else {
        return;
    };
    let mut config = OpConfig::default();
    config.interval = Some(1);
    let op = MockOp::builder().config(config).start().await.unwrap();
    let build = |max_held: usize, name: &str| {
        let issuer = op.issuer().to_owned();
        let options = guard.options().sealer(sealer());
        let name = name.to_owned();
        async move {
            DtrClient::builder()
                .issuer(issuer)
                .client_id(MockOp::CLIENT_ID)
                .client_secret(MockOp::CLIENT_SECRET)
                .redirect_uri("http://127.0.0.1/cb")
                .store(options.connect().await.unwrap())
                .fleet(
                    FleetConfig::default()
                        .lease_ttl(Duration::from_secs(2))
                        .max_held(max_held)
                        .instance(name),
                )
                .build()
                .await
                .unwrap()
        }
    };
    // The front end exchanges and polls nothing; the owner polls.
    let front = build(0, "front").await;
    let mut good = Vec::new();
    for _ in 0..4 {
        good.push(crate::support::flow::start(&op, &front).await);
    }
    let victim = crate::support::flow::start(&op, &front).await;
    let vkey = oidc_dtr::store::RecordKey::of(victim.id());
    assert_eq!(exec(&guard, TAMPER, vkey.as_bytes()).await, 1);
    let watcher = {
        drop(watcher);
        sealed_store(&guard).await
    };
    let mut notices = watcher.notices().unwrap();
    // Give the listener a moment to subscribe before the owner starts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let owner = build(100, "owner").await;
    for a in &good {
        assert!(op.approve(a.id()));
    }
    for a in &good {
        let outcome = tokio::time::timeout(Duration::from_secs(20), front.wait(a.id()))
            .await
            .expect("a good authentication of the batch was polled")
            .unwrap();
        assert_eq!(outcome.kind(), "tokens");
    }
    assert!(quarantine_notice(&mut notices, vkey).await, "reported");
    let q = watcher.quarantined().await.unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].key, vkey);
    let victim_polls = op
        .requests_to(oidc_dtr_testkit::Endpoint::Token)
        .iter()
        .filter(|r| r.param("deferred_auth_id") == Some(victim.id().secret()))
        .count();
    assert_eq!(victim_polls, 0, "a row that does not open is never polled");

    // Deleted by an operator: nothing to restart, new work flows.
    assert_eq!(
        exec(
            &guard,
            "DELETE FROM {s}.records WHERE key = $1",
            vkey.as_bytes()
        )
        .await,
        1
    );
    assert!(watcher.quarantined().await.unwrap().is_empty());
    let later = crate::support::flow::start(&op, &front).await;
    assert!(op.approve(later.id()));
    let outcome = tokio::time::timeout(Duration::from_secs(20), front.wait(later.id()))
        .await
        .expect("polled after the deletion")
        .unwrap();
    assert_eq!(outcome.kind(), "tokens");
    owner.shutdown().await;
    front.shutdown().await;
}

// Fenced writes are batched: one statement for the writes queued together,
// the fence checked per row.

/// A machine that polled once at its due time and got a transient error
/// (a new poll state, due later).
fn polled(r: &oidc_dtr::store::Record) -> oidc_dtr::poll::PollMachine {
    use oidc_dtr::poll::{Action, Event, PollResult};
    use oidc_dtr::random::SystemRandom;
    let mut m = r.machine.clone();
    let due = r.due_at().unwrap();
    let step = m.handle::<oidc_dtr::TokenSet>(Event::Timer, due, &SystemRandom);
    assert_eq!(step.action, Action::SendPoll);
    let answer = PollResult::Transient {
        message: "connection reset".into(),
        retry_after: None,
        cause: None,
    };
    m.handle::<oidc_dtr::TokenSet>(Event::Response(answer), due, &SystemRandom);
    assert!(m.next_poll() > due);
    m
}

/// State and outcome writes sent at once (so queued into one batch each):
/// the row whose lease another instance took over (its epoch went up) is
/// refused alone, with `LeaseLost` naming it, and left as it was; every
/// other row of the batch is written.
#[tokio::test]
async fn postgres_a_batch_with_one_stale_epoch_fails_only_that_row() {
    let (a, guard) = fresh_or_skip!();
    let a = Arc::new(a);
    let rs: Vec<_> = (0..6).map(|i| record(&format!("batch-{i}"), 0)).collect();
    for r in &rs {
        a.insert(r.clone()).await.unwrap();
    }
    let claimed = a
        .claim_due("a", at(1000), 10, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 6);
    let lease =
        |r: &oidc_dtr::store::Record| claimed.iter().find(|(c, _)| c.id() == r.id()).unwrap().1;
    // Taken over behind this instance's back: one state write and one
    // outcome write of the batches are stale.
    for r in [&rs[1], &rs[4]] {
        let n = exec(
            &guard,
            "UPDATE {s}.records SET lease_epoch = lease_epoch + 1 WHERE key = $1",
            &key_of(r),
        )
        .await;
        assert_eq!(n, 1);
    }
    let mut notices = a.notices().unwrap();
    // Listening once a wake-up of our own comes back.
    let probe = oidc_dtr::DeferredId::new("probe-0123456789abcdef");
    let listening = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            a.publish_wake(&probe).await.unwrap();
            let heard = tokio::time::timeout(Duration::from_millis(200), async {
                loop {
                    match notices.recv().await {
                        Ok(oidc_dtr::store::StoreNotice::Wake(k))
                            if k == oidc_dtr::store::RecordKey::of(&probe) =>
                        {
                            return true;
                        }
                        Ok(_) => {}
                        Err(_) => return false,
                    }
                }
            })
            .await;
            if heard == Ok(true) {
                return;
            }
        }
    })
    .await;
    assert!(listening.is_ok(), "no notices");
    // The poll states written (`polled` draws a random jitter).
    let machines: Vec<_> = rs.iter().map(polled).collect();
    let states = futures_join_all(rs[..3].iter().zip(&machines).map(|(r, m)| {
        let (a, id, m, l) = (a.clone(), r.id().clone(), m.clone(), lease(r));
        async move { a.update_state_leased(&id, m, "a", l).await }
    }));
    let outcomes = futures_join_all(rs[3..].iter().map(|r| {
        let (a, id, m, l) = (a.clone(), r.id().clone(), finished_machine(r), lease(r));
        async move { a.finish_leased(&id, m, denied(7), "a", l).await }
    }));
    let (states, outcomes) = tokio::join!(states, outcomes);
    for (i, got) in states.iter().chain(&outcomes).enumerate() {
        if i == 1 || i == 4 {
            assert!(
                matches!(got, Err(StoreError::LeaseLost { record }) if *record == rs[i].fingerprint()),
                "{i}: {got:?}"
            );
        } else {
            assert!(got.is_ok(), "{i}: {got:?}");
        }
    }
    for (i, r) in rs.iter().enumerate() {
        let stored = a.get(r.id()).await.unwrap().unwrap();
        match i {
            0 | 2 => {
                assert_eq!(stored.machine, machines[i], "{i}");
                assert!(!stored.is_finished());
            }
            3 | 5 => {
                assert_eq!(stored.outcome.unwrap().outcome, denied(7).outcome, "{i}");
                assert_eq!(stored.machine, finished_machine(r));
            }
            _ => assert_eq!(stored, *r, "{i}: a fenced-out write changed nothing"),
        }
    }
    // The outcomes written are announced to the fleet (at commit).
    let mut finished = std::collections::HashSet::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while finished.len() < 2 {
            match notices.recv().await {
                Ok(oidc_dtr::store::StoreNotice::Finished(k)) => {
                    finished.insert(k);
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    })
    .await;
    let want: std::collections::HashSet<_> = [3, 5]
        .iter()
        .map(|&i| oidc_dtr::store::RecordKey::of(rs[i].id()))
        .collect();
    assert_eq!(finished, want);
    // The finished ones are out of the due index, the others still in it.
    let due: Vec<_> = a.due(at(100_000), 10).await.unwrap();
    let due: std::collections::HashSet<_> = due.iter().map(|r| r.id().clone()).collect();
    let want: std::collections::HashSet<_> =
        [0, 1, 2, 4].iter().map(|&i| rs[i].id().clone()).collect();
    assert_eq!(due, want);
}

/// A fenced state write leaves the indexed `due_at` alone when the next
/// poll moves a little later (the update stays HOT: the column is then an
/// early bound), and moves it when the next poll comes earlier or much
/// later. `due` answers from the bodies, exactly.
#[tokio::test]
async fn postgres_a_fenced_state_write_moves_due_at_only_beyond_the_slack() {
    let (a, guard) = fresh_or_skip!();
    let r = record("slack", 0);
    a.insert(r.clone()).await.unwrap();
    let lease = a
        .claim_due("a", at(1000), 10, Duration::from_secs(60))
        .await
        .unwrap()[0]
        .1;
    let column = || async {
        let sql = format!(
            "SELECT due_at FROM \"{}\".records WHERE key = $1",
            guard.schema
        );
        let row = guard
            .sql()
            .await
            .query_one(&sql, &[&key_of(&r)])
            .await
            .unwrap();
        row.get::<_, i64>(0)
    };
    let ms = |t: oidc_dtr::UnixTime| i64::try_from(t.as_millis()).unwrap();
    let first = r.due_at().unwrap();
    assert_eq!(column().await, ms(first));
    // A transient error: the next poll a few seconds later.
    let m = polled(&r);
    let next = oidc_dtr::store::Record::new(r.auth.clone(), m.clone())
        .due_at()
        .unwrap();
    assert!(next > first && next < first.saturating_add(Duration::from_secs(60)));
    a.update_state_leased(r.id(), m.clone(), "a", lease)
        .await
        .unwrap();
    assert_eq!(
        column().await,
        ms(first),
        "within the slack: left as it was"
    );
    assert_eq!(a.get(r.id()).await.unwrap().unwrap().machine, m);
    // `due` decides on the body: not due before `next`, due at it.
    let before = next.saturating_sub(Duration::from_millis(1));
    assert!(a.due(before, 10).await.unwrap().is_empty());
    assert_eq!(a.due(next, 10).await.unwrap().len(), 1);
    // Back to the first state: earlier, so the column follows.
    a.update_state_leased(r.id(), r.machine.clone(), "a", lease)
        .await
        .unwrap();
    assert_eq!(column().await, ms(first));
    // Far later (a state ten minutes on): the column follows.
    let far = record("slack", 600).machine;
    let far_due = oidc_dtr::store::Record::new(r.auth.clone(), far.clone())
        .due_at()
        .unwrap();
    assert!(far_due > first.saturating_add(Duration::from_secs(60)));
    a.update_state_leased(r.id(), far, "a", lease)
        .await
        .unwrap();
    assert_eq!(column().await, ms(far_due));
}

/// A batch cut off half way (its caller's future dropped, or every
/// connection of the store killed while batches are in flight) loses no
/// outcome and stores none twice: each authentication ends up with exactly
/// the outcome written, a retry of the same outcome succeeds and a
/// different one is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_interrupted_batch_loses_no_outcome() {
    let Some(url) = database_url().await else {
        return;
    };
    let guard = SchemaGuard::new(&url);
    let sep = if url.contains('?') { '&' } else { '?' };
    let app = format!("{}_b", guard.schema);
    let store = Arc::new(
        PostgresStore::options(format!("{url}{sep}application_name={app}"))
            .schema(guard.schema.clone())
            .timeout(Duration::from_secs(5))
            .connect()
            .await
            .unwrap(),
    );
    const N: usize = 60;
    let rs: Vec<_> = (0..N).map(|i| record(&format!("cut-{i}"), 0)).collect();
    for r in &rs {
        store.insert(r.clone()).await.unwrap();
    }
    let claimed = store
        .claim_due("a", at(1000), N, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(claimed.len(), N);
    // A different outcome for each, to tell them apart.
    let outcome = |i: usize| {
        oidc_dtr::store::StoredOutcome::new(
            at(10),
            oidc_dtr::Outcome::Denied {
                description: Some(format!("denied {i}")),
            },
        )
    };

    // Part 1: every third write's future is dropped right after it was
    // queued (polled once), every third before it ever ran.
    let mut kept = Vec::new();
    for (r, lease) in &claimed[..N / 2] {
        let i = rs.iter().position(|x| x.id() == r.id()).unwrap();
        let fut = store.finish_leased(r.id(), finished_machine(r), outcome(i), "a", *lease);
        match i % 3 {
            0 => {
                let mut fut = fut;
                tokio::select! {
                    biased;
                    _ = &mut fut => {}
                    _ = std::future::ready(()) => {}
                }
                drop(fut);
            }
            1 => drop(fut),
            _ => kept.push(fut),
        }
    }
    for f in kept {
        f.await.unwrap();
    }

    // Part 2: the other half written while every connection is killed,
    // twice; each caller retries while the error is retryable, as the
    // client does.
    let writers = claimed[N / 2..].iter().map(|(r, lease)| {
        let (store, r, lease) = (store.clone(), r.clone(), *lease);
        let i = rs.iter().position(|x| x.id() == r.id()).unwrap();
        let o = outcome(i);
        async move {
            for _ in 0..50 {
                match store
                    .finish_leased(r.id(), finished_machine(&r), o.clone(), "a", lease)
                    .await
                {
                    Ok(()) => return Ok(()),
                    Err(e) if e.is_retryable() => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(StoreError::Unavailable("gave up".into()))
        }
    });
    let killer = {
        let guard_sql = guard.sql().await;
        let app = app.clone();
        tokio::spawn(async move {
            for _ in 0..2 {
                guard_sql
                    .execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                         WHERE application_name = $1",
                        &[&app],
                    )
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let results = futures_join_all(writers).await;
    killer.await.unwrap();
    for r in results {
        r.unwrap();
    }

    // Every authentication: the outcome written, or (a write dropped
    // before it ran) none yet, which a retry stores. Never another one.
    for (r, lease) in &claimed {
        let i = rs.iter().position(|x| x.id() == r.id()).unwrap();
        let mut got = None;
        for _ in 0..50 {
            match store
                .finish_leased(r.id(), finished_machine(r), outcome(i), "a", *lease)
                .await
            {
                Ok(()) => {
                    got = Some(());
                    break;
                }
                Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) => panic!("{i}: {e:?}"),
            }
        }
        assert!(got.is_some(), "{i}: the store did not recover");
        let stored = store.get(r.id()).await.unwrap().unwrap();
        assert_eq!(stored.outcome.unwrap().outcome, outcome(i).outcome, "{i}");
        let other = store
            .finish_leased(r.id(), finished_machine(r), outcome(i + 1), "a", *lease)
            .await
            .unwrap_err();
        assert!(
            matches!(other, StoreError::AlreadyFinished { .. }),
            "{i}: {other:?}"
        );
    }
    // One undelivered outcome per authentication.
    let undelivered = store
        .claim_undelivered(10 * N, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(undelivered.len(), N);
}

/// A table made by schema version 3 (no fillfactor) is migrated: the
/// records are kept and the table gets its fillfactor.
#[tokio::test]
async fn postgres_a_version_3_schema_gets_its_fillfactor() {
    let (store, guard) = fresh_or_skip!();
    store.bind("https://op.example", "client").await.unwrap();
    let r = record("old", 0);
    store.insert(r.clone()).await.unwrap();
    drop(store);
    let schema = format!("\"{}\"", guard.schema);
    let options = || async {
        guard
            .sql()
            .await
            .query_one(
                &format!(
                    "SELECT coalesce(array_to_string(reloptions, ','), '') FROM pg_class
                     WHERE oid = '{schema}.records'::regclass"
                ),
                &[],
            )
            .await
            .unwrap()
            .get::<_, String>(0)
    };
    assert!(options().await.contains("fillfactor=70"), "a new table");
    // Back to what version 3 left.
    guard
        .sql()
        .await
        .batch_execute(&format!(
            "ALTER TABLE {schema}.records RESET (fillfactor);
             DELETE FROM {schema}.migrations WHERE version = 4;"
        ))
        .await
        .unwrap();
    assert_eq!(options().await, "");

    let store = guard.store().await;
    store.bind("https://op.example", "client").await.unwrap();
    assert!(options().await.contains("fillfactor=70"), "migrated");
    let versions: Vec<i32> = guard
        .sql()
        .await
        .query(
            &format!("SELECT version FROM {schema}.migrations ORDER BY version"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, vec![1, 2, 3, 4]);
    assert_eq!(store.get(r.id()).await.unwrap(), Some(r.clone()));
    // And works as before: claimed, written (batched), finished.
    let lease = store
        .claim_due("a", at(1000), 10, Duration::from_secs(60))
        .await
        .unwrap()[0]
        .1;
    store
        .update_state_leased(r.id(), polled(&r), "a", lease)
        .await
        .unwrap();
    store
        .finish_leased(r.id(), finished_machine(&r), denied(3), "a", lease)
        .await
        .unwrap();
    assert!(store.get(r.id()).await.unwrap().unwrap().is_finished());
}

/// A state write that renews: the lease is extended from the database's
/// now in the same statement (another instance cannot claim the record
/// after the claim's short TTL), answered `Ok(true)`; a handle that did
/// not claim the record writes on the transactional path and answers
/// `Ok(false)`; a lost lease is refused as by `update_state_leased`, and
/// not renewed.
#[tokio::test]
async fn postgres_a_renewing_state_write_extends_the_lease() {
    let (a, guard) = fresh_or_skip!();
    let b = guard.store().await;
    let r = record("renewing", 0);
    a.insert(r.clone()).await.unwrap();
    let short = Duration::from_millis(300);
    let long = Duration::from_secs(60);
    let lease = a.claim_due("a", at(1000), 10, short).await.unwrap()[0].1;
    let expires_in = || async {
        let sql = format!(
            "SELECT extract(epoch FROM lease_expires - now())::float8 FROM \"{}\".records
             WHERE key = $1",
            guard.schema
        );
        let row = guard
            .sql()
            .await
            .query_one(&sql, &[&key_of(&r)])
            .await
            .unwrap();
        row.get::<_, f64>(0)
    };
    assert!(expires_in().await < 1.0);
    let m = polled(&r);
    assert!(
        a.update_state_renewing(r.id(), m.clone(), "a", lease, long)
            .await
            .unwrap(),
        "batched and renewed"
    );
    assert!(expires_in().await > 50.0, "renewed from now");
    assert_eq!(a.get(r.id()).await.unwrap().unwrap().machine, m);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        b.claim_due("b", at(1000), 10, long)
            .await
            .unwrap()
            .is_empty(),
        "still held after the claim's TTL"
    );
    // Not claimed through `b`: written, not renewed.
    assert!(
        !b.update_state_renewing(r.id(), r.machine.clone(), "a", lease, long)
            .await
            .unwrap()
    );
    assert_eq!(
        a.get(r.id()).await.unwrap().unwrap().machine,
        r.machine,
        "written"
    );
    // Taken over (released, claimed by `b`): `a` is fenced.
    assert!(a.release_lease(r.id(), "a", lease).await.unwrap());
    let lease_b = b.claim_due("b", at(1000), 10, short).await.unwrap()[0].1;
    assert!(lease_b.epoch > lease.epoch);
    let e = a
        .update_state_renewing(r.id(), m.clone(), "a", lease, long)
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::LeaseLost { .. }), "{e:?}");
    assert!(expires_in().await < 1.0, "not renewed by the loser");
}
