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

use oidc_dtr::{AesGcmSealer, Lease, PostgresStore, Store, StoreError};
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

    pub(crate) fn options(&self) -> oidc_dtr::PostgresOptions {
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
    let in_flight: Arc<Mutex<HashMap<oidc_dtr::DeferredAuthId, u32>>> = Arc::default();
    let finished: Arc<Mutex<HashMap<oidc_dtr::DeferredAuthId, (String, u64)>>> = Arc::default();
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
