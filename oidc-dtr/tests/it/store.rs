//! Durable pending authentications through the client: restart and resume
//! on the same store file, re-delivery of unacknowledged outcomes, sealed
//! files, and stores that do not belong to the client.

use std::sync::Arc;
use std::time::Duration;

use crate::support::TempPath;
use crate::support::flow::*;
use oidc_dtr::time::{Clock, ManualClock};
use oidc_dtr::{DtrClient, Error};
use oidc_dtr::{Outcome, OutcomeId, PollEvent};
use oidc_dtr::{
    error::StoreError,
    store::{AesGcmSealer, FileStore},
};
use oidc_dtr_testkit::{AutoApprove, Endpoint, Fault, MockOp, OpConfig};

const S: Duration = Duration::from_secs(1);

/// Opens the store, waiting for a previous client's copy to be released.
async fn open(path: &std::path::Path, key: Option<[u8; 32]>) -> FileStore {
    for _ in 0..300 {
        let r = match key {
            Some(k) => FileStore::open_with_sealer(path, Arc::new(AesGcmSealer::new(k).unwrap())),
            None => FileStore::open(path),
        };
        match r {
            Ok(s) => return s,
            Err(StoreError::Locked { .. }) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("the store stayed locked");
}

/// A client of the default confidential client on a store file.
async fn client(
    op: &MockOp,
    clock: &Arc<ManualClock>,
    path: &std::path::Path,
    key: Option<[u8; 32]>,
) -> DtrClient {
    DtrClient::builder()
        .issuer(op.issuer())
        .client_id(MockOp::CLIENT_ID)
        .client_secret(MockOp::CLIENT_SECRET)
        .redirect_uri(REDIRECT)
        .clock(clock.clone())
        .store(open(path, key).await)
        .build()
        .await
        .unwrap()
}

/// An OP and a client on a store file.
async fn setup_on(cfg: OpConfig, path: &std::path::Path, key: Option<[u8; 32]>) -> Setup {
    let clock = Arc::new(ManualClock::new(T0));
    let op = op(cfg, &clock).await;
    let client = client(&op, &clock, path, key).await;
    Setup { op, client, clock }
}

/// The process "restarts": the client is dropped and a new one opens the
/// same store.
async fn restart(s: Setup, path: &std::path::Path, key: Option<[u8; 32]>) -> Setup {
    let Setup { op, client, clock } = s;
    drop(client);
    let client = self::client(&op, &clock, path, key).await;
    Setup { op, client, clock }
}

#[tokio::test]
async fn a_restart_resumes_with_the_same_deadline_and_floor() {
    let path = TempPath::new("resume");
    let mut cfg = OpConfig::default();
    cfg.auto_approve = AutoApprove::AfterPolls(3);
    let s = setup_on(cfg, &path.0, None).await;
    let auth = start(&s.op, &s.client).await;
    s.op.inject_faults([Fault::Respond {
        status: 400,
        headers: vec![("content-type".into(), "application/json".into())],
        body: r#"{"error":"slow_down"}"#.into(),
    }]);
    pass(&s, Duration::from_secs(6), S).await; // one poll: slow_down, floor 10 s
    assert_eq!(
        s.client.poll_status(auth.id()).await.unwrap().floor,
        Duration::from_secs(10)
    );

    s.clock.advance(Duration::from_secs(120));
    let s = restart(s, &path.0, None).await;
    let st = s
        .client
        .poll_status(auth.id())
        .await
        .expect("resumed from the store");
    assert_eq!(
        st.deadline,
        auth.expires_at().unwrap(),
        "the deadline did not move"
    );
    assert_eq!(st.floor, Duration::from_secs(10), "the floor survived");
    let restarted_at = s.clock.now();
    let Outcome::Tokens(tokens) = run_to_outcome(&s, auth.id(), S, Duration::from_secs(600)).await
    else {
        panic!()
    };
    assert_eq!(tokens.claims().nonce(), Some(auth.nonce().secret()));
    // After the restart, the first poll waited a full floor.
    let first_after =
        s.op.requests_to(Endpoint::Token)
            .into_iter()
            .filter(|r| r.param("deferred_auth_id").is_some() && r.at >= restarted_at)
            .map(|r| r.at)
            .min()
            .unwrap();
    assert!(first_after.saturating_duration_since(restarted_at) >= Duration::from_secs(10));
    assert_eq!(
        s.op.authentication(auth.id()).unwrap().slow_downs,
        0,
        "never too fast, before or after the restart"
    );
}

#[tokio::test]
async fn unacknowledged_outcomes_are_delivered_again_after_a_restart() {
    let path = TempPath::new("redeliver");
    let mut cfg = OpConfig::default();
    cfg.auto_approve = AutoApprove::AfterPolls(1);
    let s = setup_on(cfg, &path.0, None).await;
    let mut events = s.client.subscribe();
    let a = start(&s.op, &s.client).await;
    let b = start(&s.op, &s.client).await;
    let Outcome::Tokens(first) = run_to_outcome(&s, a.id(), S, Duration::from_secs(60)).await
    else {
        panic!()
    };
    run_to_outcome(&s, b.id(), S, Duration::from_secs(60)).await;
    let mut finished = Vec::new();
    while let Ok(e) = events.try_recv() {
        if let PollEvent::Finished { outcome_id, .. } = e {
            finished.push(outcome_id);
        }
    }
    finished.sort();
    let mut want = vec![OutcomeId::of(a.id()), OutcomeId::of(b.id())];
    want.sort();
    assert_eq!(finished, want);
    // The application takes `b` and acknowledges it; for `a`, it crashes
    // before its acknowledgement.
    assert!(s.client.ack(b.id()).await.unwrap());

    let s = restart(s, &path.0, None).await;
    let again = s.client.undelivered().await;
    assert_eq!(again.len(), 1, "only the unacknowledged outcome comes back");
    assert_eq!(
        again[0].outcome_id,
        OutcomeId::of(a.id()),
        "with the same stable id"
    );
    let Outcome::Tokens(tokens) = &again[0].outcome else {
        panic!()
    };
    assert_eq!(
        tokens.access_token(),
        first.access_token(),
        "the same tokens, not lost"
    );
    assert_eq!(s.client.wait(a.id()).await.unwrap(), again[0].outcome);
    // No request was needed to deliver it again.
    let polls_before = s.op.requests_to(Endpoint::Token).len();
    assert!(s.client.ack(a.id()).await.unwrap());

    let s = restart(s, &path.0, None).await;
    assert!(s.client.undelivered().await.is_empty());
    assert!(s.client.poll_status(a.id()).await.is_none());
    assert_eq!(s.op.requests_to(Endpoint::Token).len(), polls_before);
}

#[tokio::test]
async fn a_sealed_store_holds_no_plaintext_token() {
    let path = TempPath::new("sealed");
    let key = [7u8; 32];
    let mut cfg = OpConfig::default();
    cfg.auto_approve = AutoApprove::AfterPolls(1);
    let s = setup_on(cfg, &path.0, Some(key)).await;
    let auth = start(&s.op, &s.client).await;
    let Outcome::Tokens(tokens) = run_to_outcome(&s, auth.id(), S, Duration::from_secs(60)).await
    else {
        panic!()
    };
    let Setup { op, client, clock } = s;
    drop(client);
    // Let the file be released, then read its bytes.
    let _reopened = open(&path.0, Some(key)).await;
    let bytes = std::fs::read(&path.0).unwrap();
    let contains = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(!contains(tokens.access_token().secret()));
    assert!(!contains(tokens.refresh_token().unwrap().secret()));
    assert!(!contains(tokens.id_token().raw().secret()));
    assert!(!contains(auth.id().secret()));
    assert!(!contains(auth.nonce().secret()));
    drop(_reopened);
    // And the right key reads it back.
    let s = Setup {
        client: self::client(&op, &clock, &path.0, Some(key)).await,
        op,
        clock,
    };
    let again = s.client.undelivered().await;
    assert_eq!(again.len(), 1);
}

#[tokio::test]
async fn a_store_of_another_client_is_refused() {
    let path = TempPath::new("owner");
    let s = setup_on(OpConfig::default(), &path.0, None).await;
    let Setup { op, client, clock } = s;
    drop(client);
    let store = open(&path.0, None).await;
    let err = DtrClient::builder()
        .issuer(op.issuer())
        .client_id(MockOp::PUBLIC_CLIENT_ID)
        .redirect_uri(REDIRECT)
        .clock(clock)
        .store(store)
        .build()
        .await
        .unwrap_err();
    match err {
        Error::Store(StoreError::WrongOwner { .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_corrupt_store_file_is_a_clear_error() {
    let path = TempPath::new("corrupt");
    std::fs::write(&path.0, b"this is not a database").unwrap();
    match FileStore::open(&path.0) {
        Err(e) => assert!(!e.to_string().is_empty()),
        Ok(_) => panic!("a garbage file opened"),
    }
    assert_eq!(
        std::fs::read(&path.0).unwrap(),
        b"this is not a database",
        "nothing rewritten"
    );
}

/// The public conformance suite of `oidc-dtr-testkit`, on both stores.
mod memory_store_conformance {
    oidc_dtr_testkit::store_conformance_tests!((oidc_dtr::store::MemoryStore::new(), ()));
}

mod file_store_conformance {
    fn temp_store() -> (oidc_dtr::store::FileStore, crate::support::TempPath) {
        let path = crate::support::TempPath::new("conformance");
        (oidc_dtr::store::FileStore::open(&path.0).unwrap(), path)
    }
    oidc_dtr_testkit::store_conformance_tests!(temp_store());
}

/// A store that implements only what the client calls: `get` and `due` come
/// from the trait's default bodies, and still behave as the conformance
/// suite asks for the records the client keeps.
mod minimal_store {
    use oidc_dtr::{
        DeferredId, UnixTime,
        error::StoreError,
        poll::PollMachine,
        store::{MemoryStore, Record, Store, StoreFuture, StoredOutcome},
    };

    struct Minimal(MemoryStore);

    impl Store for Minimal {
        fn bind(&self, issuer: &str, client_id: &str) -> StoreFuture<Result<(), StoreError>> {
            self.0.bind(issuer, client_id)
        }
        fn insert(&self, record: Record) -> StoreFuture<Result<(), StoreError>> {
            self.0.insert(record)
        }
        fn update_state(
            &self,
            id: &DeferredId,
            machine: PollMachine,
        ) -> StoreFuture<Result<(), StoreError>> {
            self.0.update_state(id, machine)
        }
        fn finish(
            &self,
            id: &DeferredId,
            machine: PollMachine,
            outcome: StoredOutcome,
        ) -> StoreFuture<Result<(), StoreError>> {
            self.0.finish(id, machine, outcome)
        }
        fn mark_delivered(&self, id: &DeferredId) -> StoreFuture<Result<bool, StoreError>> {
            self.0.mark_delivered(id)
        }
        fn load_active(&self) -> StoreFuture<Result<Vec<Record>, StoreError>> {
            self.0.load_active()
        }
        fn purge(&self, finished_before: UnixTime) -> StoreFuture<Result<usize, StoreError>> {
            self.0.purge(finished_before)
        }
    }

    #[tokio::test]
    async fn due_by_default() {
        oidc_dtr_testkit::conformance::due_is_ordered_limited_and_inclusive(&Minimal(
            MemoryStore::new(),
        ))
        .await;
        oidc_dtr_testkit::conformance::due_follows_update_state(&Minimal(MemoryStore::new())).await;
        oidc_dtr_testkit::conformance::in_flight_records_stay_due(&Minimal(MemoryStore::new()))
            .await;
    }

    #[tokio::test]
    async fn get_by_default_finds_active_records() {
        let store = Minimal(MemoryStore::new());
        let r = oidc_dtr_testkit::conformance::record("a", 0);
        assert_eq!(store.get(r.id()).await.unwrap(), None);
        store.insert(r.clone()).await.unwrap();
        assert_eq!(store.get(r.id()).await.unwrap(), Some(r));
    }
}

/// `shutdown` releases the store file at once (no waiting on `Locked`), a
/// waiter hears `Stopped`, and the pending authentication survives for the
/// next client.
#[tokio::test]
async fn shutdown_releases_the_file_and_keeps_the_authentication() {
    let path = TempPath::new("shutdown");
    let mut cfg = OpConfig::default();
    cfg.auto_approve = AutoApprove::AfterPolls(2);
    let s = setup_on(cfg, &path.0, None).await;
    let auth = start(&s.op, &s.client).await;
    let waiter = {
        let c = s.client.clone();
        let id = auth.id().clone();
        tokio::spawn(async move { c.wait(&id).await })
    };
    s.client.shutdown().await;
    assert!(matches!(
        waiter.await.unwrap(),
        Err(oidc_dtr::Error::Poll(oidc_dtr::error::WaitError::Stopped))
    ));
    // Released: a new store opens at the first attempt, with the record.
    let reopened = FileStore::open(&path.0).expect("the file was released by shutdown");
    drop(reopened);
    let Setup { op, client, clock } = s;
    drop(client);
    let client = self::client(&op, &clock, &path.0, None).await;
    let s = Setup { op, client, clock };
    assert!(s.client.poll_status(auth.id()).await.is_some(), "resumed");
    let outcome = run_to_outcome(&s, auth.id(), S, Duration::from_secs(600)).await;
    assert!(matches!(outcome, Outcome::Tokens(_)), "{outcome:?}");
}

/// The fleet methods of the `Store` trait, on stores of one process: not
/// shared, no notices from other instances, and `claim_undelivered` hands
/// out every undelivered outcome (there is no other consumer to hide it
/// from).
#[tokio::test]
async fn single_process_stores_are_not_shared_and_hand_out_every_outcome() {
    use oidc_dtr::store::{MemoryStore, Store};
    use oidc_dtr_testkit::conformance::{denied, finished_machine, record};
    let dir = TempPath::new("fleet-defaults");
    let file = open(&dir.0, None).await;
    let stores: Vec<Arc<dyn Store>> = vec![Arc::new(MemoryStore::new()), Arc::new(file)];
    for store in stores {
        assert!(!store.is_shared());
        // No wake-ups or outcomes from other instances; a file store only
        // reports the records it sets aside.
        if let Some(mut n) = store.notices() {
            assert!(n.try_recv().is_err());
        }
        store.bind("https://op.example", "client").await.unwrap();
        let (a, b) = (record("a", 0), record("b", 0));
        for r in [&a, &b] {
            store.insert(r.clone()).await.unwrap();
        }
        store
            .finish(a.id(), finished_machine(&a), denied(10))
            .await
            .unwrap();
        let claimed = store
            .claim_undelivered(10, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].id(), a.id());
        // Not hidden: a second call returns it again, until it is delivered.
        assert_eq!(
            store
                .claim_undelivered(10, Duration::from_secs(60))
                .await
                .unwrap()
                .len(),
            1
        );
        assert!(store.mark_delivered(a.id()).await.unwrap());
        assert!(
            store
                .claim_undelivered(10, Duration::from_secs(60))
                .await
                .unwrap()
                .is_empty()
        );
        store.publish_wake(b.id()).await.unwrap();
    }
}

/// A fleet member that loses its lease between a poll and the write of its
/// answer (the store refuses the fenced write with `LeaseLost`): tokens the
/// OP has already redeemed are stored all the same (the next owner's poll
/// could only get `invalid_grant`), and handed over once.
mod lost_lease {
    use std::collections::HashSet;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use oidc_dtr::{
        DeferredId, UnixTime,
        poll::{FleetConfig, PollMachine},
        store::{Lease, MemoryStore, Record, Store, StoreFuture, StoredOutcome},
    };

    /// A "shared" store over a `MemoryStore`: each record is claimed once,
    /// and every fenced outcome write finds the lease gone.
    #[derive(Default)]
    struct LosesLeases {
        inner: MemoryStore,
        claimed: Arc<Mutex<HashSet<String>>>,
        fenced_finishes: AtomicUsize,
    }

    impl Store for LosesLeases {
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
            self.inner.update_state(id, machine)
        }
        fn finish(
            &self,
            id: &DeferredId,
            machine: PollMachine,
            outcome: StoredOutcome,
        ) -> StoreFuture<Result<(), StoreError>> {
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
        fn is_shared(&self) -> bool {
            true
        }
        fn claim_due_unheld(
            &self,
            _owner: &str,
            until: UnixTime,
            limit: usize,
            _ttl: Duration,
        ) -> StoreFuture<Result<Vec<(Record, Lease)>, StoreError>> {
            let due = self.inner.due(until, limit);
            let claimed = self.claimed.clone();
            Box::pin(async move {
                let due = due.await?;
                let mut claimed = claimed.lock().unwrap();
                Ok(due
                    .into_iter()
                    .filter(|r| claimed.insert(r.id().secret().to_owned()))
                    .map(|r| (r, Lease::new(1)))
                    .collect())
            })
        }
        fn finish_leased(
            &self,
            id: &DeferredId,
            _machine: PollMachine,
            _outcome: StoredOutcome,
            _owner: &str,
            _lease: Lease,
        ) -> StoreFuture<Result<(), StoreError>> {
            self.fenced_finishes.fetch_add(1, Ordering::SeqCst);
            let record = id.fingerprint();
            Box::pin(async move { Err(StoreError::LeaseLost { record }) })
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tokens_reached_after_the_lease_was_lost_are_kept() {
        let mut config = OpConfig::default();
        config.interval = Some(1);
        config.auto_approve = AutoApprove::AfterPolls(1);
        let op = MockOp::builder().config(config).start().await.unwrap();
        let store = Arc::new(LosesLeases::default());
        let client = DtrClient::builder()
            .issuer(op.issuer())
            .client_id(MockOp::CLIENT_ID)
            .client_secret(MockOp::CLIENT_SECRET)
            .redirect_uri(REDIRECT)
            .store_arc(store.clone())
            .fleet(FleetConfig::default().lease_ttl(Duration::from_secs(2)))
            .build()
            .await
            .unwrap();
        let auth = start(&op, &client).await;
        let id = auth.id().clone();
        let outcome = tokio::time::timeout(Duration::from_secs(20), client.wait(&id))
            .await
            .expect("the tokens are stored although the lease was lost")
            .unwrap();
        assert_eq!(outcome.kind(), "tokens");
        assert!(
            store.fenced_finishes.load(Ordering::SeqCst) >= 1,
            "the fenced write was tried first"
        );
        let polls = op
            .requests_to(Endpoint::Token)
            .iter()
            .filter(|r| r.param("deferred_auth_id") == Some(id.secret()))
            .count();
        assert_eq!(polls, 1, "redeemed once, never polled again");
        let handed = client.undelivered().await;
        assert_eq!(handed.len(), 1);
        assert!(client.ack(&id).await.unwrap());
        assert!(!client.ack(&id).await.unwrap(), "acknowledged once");
        client.shutdown().await;
    }
}

/// Issue 22, item 6, at start-up: a store file holding a record the client
/// cannot use (here one of another issuer, taken in before the store was
/// bound) does not stop the client: it starts, resumes its own pending
/// authentications after a restart, never polls the foreign one, and the
/// record stays set aside across restarts.
#[tokio::test]
async fn a_record_of_another_issuer_in_the_file_is_set_aside_at_start_up() {
    use oidc_dtr::{
        DeferredAuthentication,
        poll::{PollConfig, PollMachine},
        secret::Nonce,
        store::{Record, Store},
    };
    let path = TempPath::new("foreign-at-start");
    let foreign_id = oidc_dtr::DeferredId::new("dai-foreign-0123456789abcdef");
    {
        let store = FileStore::open(&path.0).unwrap();
        let a = DeferredAuthentication::seeded(
            foreign_id.clone(),
            "https://other.example".into(),
            MockOp::CLIENT_ID.into(),
            T0,
            Some(3600),
            1,
            Nonce::new("nonce"),
        );
        store
            .insert(Record::new(
                a.clone(),
                PollMachine::new(&a, PollConfig::default()),
            ))
            .await
            .unwrap();
        store.close().await.unwrap();
    }
    let mut cfg = OpConfig::default();
    cfg.auto_approve = AutoApprove::AfterPolls(1);
    let s = setup_on(cfg, &path.0, None).await;
    assert!(s.client.poll_status(&foreign_id).await.is_none());
    let a = start(&s.op, &s.client).await;
    let s = restart(s, &path.0, None).await;
    assert!(s.client.poll_status(a.id()).await.is_some(), "resumed");
    let outcome = run_to_outcome(&s, a.id(), S, Duration::from_secs(60)).await;
    assert!(matches!(outcome, Outcome::Tokens(_)), "{outcome:?}");
    assert!(
        s.op.requests_to(Endpoint::Token)
            .iter()
            .all(|r| r.param("deferred_auth_id") != Some(foreign_id.secret())),
        "never polled at this issuer"
    );
    drop(s);
    let store = open(&path.0, None).await;
    let q = store.quarantined().await.unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].key, oidc_dtr::store::RecordKey::of(&foreign_id));
}

/// Issue 22, item 7, for stores of the application's: a record of another
/// issuer or client that a store returns at start-up is not resumed (it
/// would be polled at this issuer's token endpoint with this client's
/// credentials).
#[tokio::test]
async fn the_client_does_not_resume_a_record_of_another_issuer() {
    use oidc_dtr::{
        DeferredAuthentication, DeferredId, UnixTime,
        poll::{PollConfig, PollMachine},
        secret::Nonce,
        store::{MemoryStore, Record, Store, StoreFuture, StoredOutcome},
    };
    /// Hands out a foreign record beside its own (a store that does not
    /// check what it reads): of another issuer, or (`same_issuer`) of
    /// another client at the bound issuer.
    struct Leaky {
        inner: MemoryStore,
        same_issuer: bool,
        id: DeferredId,
        bound: std::sync::Mutex<String>,
    }
    impl Leaky {
        fn foreign(&self) -> Record {
            let (issuer, client) = if self.same_issuer {
                (
                    self.bound.lock().unwrap().clone(),
                    "other-client".to_owned(),
                )
            } else {
                (
                    "https://other.example".to_owned(),
                    MockOp::CLIENT_ID.to_owned(),
                )
            };
            let a = DeferredAuthentication::seeded(
                self.id.clone(),
                issuer,
                client,
                T0,
                Some(3600),
                1,
                Nonce::new("nonce"),
            );
            Record::new(a.clone(), PollMachine::new(&a, PollConfig::default()))
        }
    }
    impl Store for Leaky {
        fn bind(&self, issuer: &str, client_id: &str) -> StoreFuture<Result<(), StoreError>> {
            *self.bound.lock().unwrap() = issuer.to_owned();
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
            self.inner.update_state(id, machine)
        }
        fn finish(
            &self,
            id: &DeferredId,
            machine: PollMachine,
            outcome: StoredOutcome,
        ) -> StoreFuture<Result<(), StoreError>> {
            self.inner.finish(id, machine, outcome)
        }
        fn mark_delivered(&self, id: &DeferredId) -> StoreFuture<Result<bool, StoreError>> {
            self.inner.mark_delivered(id)
        }
        fn load_active(&self) -> StoreFuture<Result<Vec<Record>, StoreError>> {
            let all = self.inner.load_active();
            let extra = self.foreign();
            Box::pin(async move {
                let mut v = all.await?;
                v.push(extra);
                Ok(v)
            })
        }
        fn purge(&self, finished_before: UnixTime) -> StoreFuture<Result<usize, StoreError>> {
            self.inner.purge(finished_before)
        }
    }
    let foreign_id = DeferredId::new("dai-leaked-0123456789abcdef");
    for same_issuer in [false, true] {
        let store = Leaky {
            inner: MemoryStore::new(),
            same_issuer,
            id: foreign_id.clone(),
            bound: std::sync::Mutex::default(),
        };
        let s = setup_with(OpConfig::default(), |b| b.store(store)).await;
        assert!(s.client.poll_status(&foreign_id).await.is_none());
        s.clock.advance(Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(s.op.requests_to(Endpoint::Token).is_empty());
    }
}
