//! Issue 22, item 8: the engine survives application-supplied code that
//! panics (random source, clock, store). The authentication concerned gets
//! an honest outcome; the engine keeps running for the others.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::support::flow::{REDIRECT, start};
use oidc_dtr::{
    DeferredId, DtrClient, DtrClientBuilder, UnixTime,
    error::StoreError,
    poll::PollMachine,
    random::{RandomError, RandomSource, SystemRandom},
    store::{MemoryStore, Record, Store, StoreFuture, StoredOutcome},
    time::{Clock, SystemClock},
};
use oidc_dtr_testkit::{AutoApprove, Fault, MockOp, OpConfig};

/// Panics once `broken` is set; the system's otherwise.
#[derive(Default)]
struct Breakable {
    broken: AtomicBool,
}

impl Breakable {
    fn check(&self) {
        assert!(!self.broken.load(Ordering::SeqCst), "injected panic");
    }
}

impl RandomSource for Breakable {
    fn fill(&self, dest: &mut [u8]) -> Result<(), RandomError> {
        self.check();
        SystemRandom.fill(dest)
    }
}

impl Clock for Breakable {
    fn now(&self) -> UnixTime {
        self.check();
        SystemClock.now()
    }
}

/// A `MemoryStore` whose state and outcome writes panic once broken.
#[derive(Default)]
struct BreakableStore {
    inner: MemoryStore,
    broken: Breakable,
}

impl Store for BreakableStore {
    fn bind(&self, issuer: &str, client_id: &str) -> StoreFuture<Result<(), StoreError>> {
        self.inner.bind(issuer, client_id)
    }
    fn insert(&self, record: Record) -> StoreFuture<Result<(), StoreError>> {
        self.inner.insert(record)
    }
    fn update_state(
        &self,
        id: &DeferredId,
        machine: PollMachine,
    ) -> StoreFuture<Result<(), StoreError>> {
        self.broken.check();
        self.inner.update_state(id, machine)
    }
    fn finish(
        &self,
        id: &DeferredId,
        machine: PollMachine,
        outcome: StoredOutcome,
    ) -> StoreFuture<Result<(), StoreError>> {
        self.broken.check();
        self.inner.finish(id, machine, outcome)
    }
    fn mark_delivered(&self, id: &DeferredId) -> StoreFuture<Result<bool, StoreError>> {
        self.inner.mark_delivered(id)
    }
    fn get(&self, id: &DeferredId) -> StoreFuture<Result<Option<Record>, StoreError>> {
        self.inner.get(id)
    }
    fn load_active(&self) -> StoreFuture<Result<Vec<Record>, StoreError>> {
        self.inner.load_active()
    }
    fn purge(&self, finished_before: UnixTime) -> StoreFuture<Result<usize, StoreError>> {
        self.inner.purge(finished_before)
    }
}

/// Two authentications polled every second and approved on the third
/// poll; the first poll after `break_it` runs answers 503 (a transient
/// failure: the backoff draws jitter from the random source).
async fn run(
    configure: impl FnOnce(DtrClientBuilder) -> DtrClientBuilder,
    break_it: impl FnOnce(),
) {
    let mut config = OpConfig::default();
    config.interval = Some(1);
    config.auto_approve = AutoApprove::AfterPolls(3);
    let op = MockOp::builder().config(config).start().await.unwrap();
    let builder = DtrClient::builder()
        .issuer(op.issuer())
        .client_id(MockOp::CLIENT_ID)
        .client_secret(MockOp::CLIENT_SECRET)
        .redirect_uri(REDIRECT);
    let client = configure(builder).build().await.unwrap();
    let a = start(&op, &client).await;
    let b = start(&op, &client).await;
    break_it();
    op.inject_faults([Fault::status(503)]);
    for id in [a.id(), b.id()] {
        let outcome = tokio::time::timeout(Duration::from_secs(60), client.wait(id))
            .await
            .expect("the engine keeps running")
            .expect("the engine did not stop");
        assert_eq!(outcome.kind(), "tokens", "{outcome:?}");
    }
    // And it takes new work.
    assert!(client.stats().polls >= 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_random_source_does_not_stop_the_engine() {
    let rng = Arc::new(Breakable::default());
    let r = rng.clone();
    run(
        |b| b.random(rng),
        move || r.broken.store(true, Ordering::SeqCst),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_clock_does_not_stop_the_engine() {
    let clock = Arc::new(Breakable::default());
    let c = clock.clone();
    run(
        |b| b.clock(clock),
        move || c.broken.store(true, Ordering::SeqCst),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_store_does_not_stop_the_engine() {
    let store = Arc::new(BreakableStore::default());
    let s = store.clone();
    run(
        |b| b.store_arc(store),
        move || s.broken.broken.store(true, Ordering::SeqCst),
    )
    .await;
}
