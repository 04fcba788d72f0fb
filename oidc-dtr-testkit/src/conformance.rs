//! The store conformance suite: the behaviour every [`Store`] must show, as
//! async test functions over `&dyn Store`.
//!
//! [`store_conformance_tests!`](crate::store_conformance_tests) instantiates
//! one `#[tokio::test]` per check (your crate needs `tokio` with the `macros`
//! and `rt` features as a dev-dependency), where the expression yields
//! `(store, guard)` for a fresh, empty store; the guard lives as long as the
//! test (e.g. a temporary directory, or a database schema to drop):
//!
//! ```text
//! mod my_store_conformance {
//!     use super::*;
//!     oidc_dtr_testkit::store_conformance_tests!((MyStore::new(), ()));
//! }
//! ```
//!
//! The functions can also be called one by one.

use std::collections::HashSet;
use std::time::Duration;

use oidc_dtr::{
    DeferredAuthentication, DeferredId, Outcome, TokenSet, UnixTime,
    error::StoreError,
    poll::{Action, Event, PollConfig, PollMachine, PollResult},
    random::SystemRandom,
    secret::Nonce,
    store::{Record, RecordKey, SCHEMA_VERSION as STORE_SCHEMA_VERSION, Store, StoredOutcome},
};

/// Instantiates the store conformance suite for a store constructor (see the
/// [module docs](crate::conformance)).
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:expr) => {
        mod store_conformance {
            #[allow(unused_imports)]
            use super::*;
            $crate::store_conformance_tests!(@each $make;
                get_insert_and_duplicate,
                insert_refuses_unknown_schema,
                update_state_replaces_the_machine,
                finish_records_outcome_and_machine_together,
                finish_twice,
                mark_delivered,
                mark_delivered_once,
                due_is_ordered_limited_and_inclusive,
                due_follows_update_state,
                in_flight_records_stay_due,
                load_active_returns_pending_and_undelivered,
                purge_by_finish_time,
                bind_refuses_another_owner,
                profile_and_interaction_round_trip,
                a_delivered_outcome_stays_delivered,
                records_of_another_owner_are_never_handed_out,
                a_healthy_store_quarantines_nothing
            );
        }
    };
    (@each $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (store, _guard) = $make;
                $crate::conformance::$name(&store).await;
            }
        )*
    };
}

/// The instant the suite's authentications start from.
pub const T0: UnixTime = UnixTime::from_millis(1_800_000_000_000);

/// `T0 + s` seconds.
pub fn at(s: u64) -> UnixTime {
    T0.saturating_add(Duration::from_secs(s))
}

/// Suite helper: id.
pub fn id(s: &str) -> DeferredId {
    DeferredId::new(format!("dai-{s}-0123456789abcdef"))
}

/// An authentication issued at `T0 + issued` s, interval 5 s, one hour to
/// live.
pub fn auth(name: &str, issued: u64) -> DeferredAuthentication {
    DeferredAuthentication::seeded(
        id(name),
        "https://op.example".into(),
        "client".into(),
        at(issued),
        Some(3600),
        5,
        Nonce::new("nonce"),
    )
}

/// A fresh record, due at `T0 + issued + 5` s.
pub fn record(name: &str, issued: u64) -> Record {
    let a = auth(name, issued);
    let m = PollMachine::new(&a, PollConfig::default());
    Record::new(a, m)
}

/// Suite helper: denied.
pub fn denied(finished: u64) -> StoredOutcome {
    StoredOutcome::new(
        at(finished),
        Outcome::Denied {
            description: Some("not attested".into()),
        },
    )
}

/// The machine after the application cancelled: finished.
pub fn finished_machine(r: &Record) -> PollMachine {
    let mut m = r.machine.clone();
    let step = m.handle::<TokenSet>(Event::Cancel, at(0), &SystemRandom);
    assert!(matches!(step.action, Action::Deliver(Outcome::Cancelled)));
    m
}

/// A machine that polled once at its due time and got a transient error.
fn polled_machine(r: &Record) -> PollMachine {
    let mut m = r.machine.clone();
    let due = r.due_at().unwrap();
    let step = m.handle::<TokenSet>(Event::Timer, due, &SystemRandom);
    assert_eq!(step.action, Action::SendPoll);
    let answer = PollResult::Transient {
        message: "connection reset".into(),
        retry_after: None,
        cause: None,
    };
    m.handle::<TokenSet>(Event::Response(answer), due, &SystemRandom);
    assert!(m.next_poll() > due);
    m
}

fn names(records: &[Record]) -> Vec<DeferredId> {
    records.iter().map(|r| r.id().clone()).collect()
}

/// Conformance check: get insert and duplicate.
pub async fn get_insert_and_duplicate(store: &dyn Store) {
    let r = record("a", 0);
    assert_eq!(store.get(r.id()).await.unwrap(), None);
    store.insert(r.clone()).await.unwrap();
    assert_eq!(store.get(r.id()).await.unwrap(), Some(r.clone()));
    let e = store.insert(r.clone()).await.unwrap_err();
    assert!(
        matches!(e, StoreError::Duplicate { record } if record == r.fingerprint()),
        "{e:?}"
    );
    let shown = format!("{e} {e:?}");
    assert!(!shown.contains(r.id().secret()), "{shown}");
    // A finished record is still a duplicate.
    store
        .finish(r.id(), finished_machine(&r), denied(10))
        .await
        .unwrap();
    assert!(matches!(
        store.insert(record("a", 50)).await,
        Err(StoreError::Duplicate { .. })
    ));
}

/// Conformance check: insert refuses unknown schema.
pub async fn insert_refuses_unknown_schema(store: &dyn Store) {
    let mut r = record("a", 0);
    r.schema = 99;
    let e = store.insert(r.clone()).await.unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::UnsupportedSchema {
                found: 99,
                supported: STORE_SCHEMA_VERSION,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(store.get(r.id()).await.unwrap(), None);
}

/// Conformance check: update state replaces the machine.
pub async fn update_state_replaces_the_machine(store: &dyn Store) {
    let r = record("a", 0);
    let m2 = polled_machine(&r);
    assert!(matches!(
        store.update_state(r.id(), m2.clone()).await,
        Err(StoreError::NotFound { .. })
    ));
    store.insert(r.clone()).await.unwrap();
    store.update_state(r.id(), m2.clone()).await.unwrap();
    let got = store.get(r.id()).await.unwrap().unwrap();
    assert_eq!(got.machine, m2);
    assert_eq!(got.auth, r.auth);
    assert_eq!(got.outcome, None);

    store
        .finish(r.id(), finished_machine(&r), denied(10))
        .await
        .unwrap();
    assert!(matches!(
        store.update_state(r.id(), m2).await,
        Err(StoreError::AlreadyFinished { .. })
    ));
    // The refused update changed nothing.
    let got = store.get(r.id()).await.unwrap().unwrap();
    assert_eq!(got.machine, finished_machine(&r));
}

/// Conformance check: finish records outcome and machine together.
pub async fn finish_records_outcome_and_machine_together(store: &dyn Store) {
    let r = record("a", 0);
    assert!(matches!(
        store.finish(r.id(), finished_machine(&r), denied(10)).await,
        Err(StoreError::NotFound { .. })
    ));
    store.insert(r.clone()).await.unwrap();
    assert_eq!(names(&store.due(UnixTime::MAX, 10).await.unwrap()).len(), 1);
    store
        .finish(r.id(), finished_machine(&r), denied(10))
        .await
        .unwrap();
    let got = store.get(r.id()).await.unwrap().unwrap();
    assert!(got.is_finished());
    assert!(got.machine.is_finished());
    assert_eq!(got.machine, finished_machine(&r));
    assert_eq!(got.outcome, Some(denied(10)));
    assert_eq!(got.finished_at(), Some(at(10)));
    assert!(store.due(UnixTime::MAX, 10).await.unwrap().is_empty());
}

/// Conformance check: finish twice.
pub async fn finish_twice(store: &dyn Store) {
    let r = record("a", 0);
    store.insert(r.clone()).await.unwrap();
    store
        .finish(r.id(), finished_machine(&r), denied(10))
        .await
        .unwrap();
    // A retry with the same outcome (even stamped later) is fine and
    // changes nothing.
    store
        .finish(r.id(), finished_machine(&r), denied(20))
        .await
        .unwrap();
    assert_eq!(
        store.get(r.id()).await.unwrap().unwrap().finished_at(),
        Some(at(10))
    );
    // A different outcome is refused.
    let other = StoredOutcome::new(at(10), Outcome::Cancelled);
    let e = store
        .finish(r.id(), finished_machine(&r), other)
        .await
        .unwrap_err();
    assert!(
        matches!(e, StoreError::AlreadyFinished { record } if record == r.fingerprint()),
        "{e:?}"
    );
    assert_eq!(
        store.get(r.id()).await.unwrap().unwrap().outcome,
        Some(denied(10))
    );
    // Retrying after delivery keeps it delivered.
    assert!(store.mark_delivered(r.id()).await.unwrap());
    store
        .finish(r.id(), finished_machine(&r), denied(10))
        .await
        .unwrap();
    assert!(
        store
            .get(r.id())
            .await
            .unwrap()
            .unwrap()
            .outcome
            .unwrap()
            .delivered
    );
}

/// Conformance check: mark delivered.
pub async fn mark_delivered(store: &dyn Store) {
    let r = record("a", 0);
    assert!(!store.mark_delivered(r.id()).await.unwrap());
    store.insert(r.clone()).await.unwrap();
    assert!(!store.mark_delivered(r.id()).await.unwrap());
    assert_eq!(store.get(r.id()).await.unwrap().unwrap().outcome, None);
    store
        .finish(r.id(), finished_machine(&r), denied(10))
        .await
        .unwrap();
    assert!(store.mark_delivered(r.id()).await.unwrap());
    let got = store.get(r.id()).await.unwrap().unwrap();
    let o = got.outcome.unwrap();
    assert!(o.delivered);
    assert_eq!(o.outcome, denied(10).outcome);
    // Idempotent.
    assert!(store.mark_delivered(r.id()).await.unwrap());
}

/// Conformance check: only the first acknowledgment of an outcome is told
/// it marked it delivered.
pub async fn mark_delivered_once(store: &dyn Store) {
    let r = record("once", 0);
    assert!(!store.mark_delivered_once(r.id()).await.unwrap());
    store.insert(r.clone()).await.unwrap();
    assert!(!store.mark_delivered_once(r.id()).await.unwrap());
    store
        .finish(r.id(), finished_machine(&r), denied(10))
        .await
        .unwrap();
    assert!(store.mark_delivered_once(r.id()).await.unwrap());
    assert!(
        store
            .get(r.id())
            .await
            .unwrap()
            .unwrap()
            .outcome
            .unwrap()
            .delivered
    );
    assert!(!store.mark_delivered_once(r.id()).await.unwrap());
    // The plain mark stays idempotent.
    assert!(store.mark_delivered(r.id()).await.unwrap());
}

/// Conformance check: due is ordered limited and inclusive.
pub async fn due_is_ordered_limited_and_inclusive(store: &dyn Store) {
    // Due at 35, 15, 25 and 1005 s.
    for (n, t) in [("c", 30), ("a", 10), ("b", 20), ("z", 1000)] {
        store.insert(record(n, t)).await.unwrap();
    }
    let due = |until, limit| async move { names(&store.due(until, limit).await.unwrap()) };
    assert_eq!(due(at(40), 10).await, vec![id("a"), id("b"), id("c")]);
    assert_eq!(due(at(25), 10).await, vec![id("a"), id("b")], "inclusive");
    assert_eq!(due(at(40), 2).await, vec![id("a"), id("b")]);
    assert_eq!(due(at(14), 10).await, Vec::<DeferredId>::new());
    assert_eq!(due(at(40), 0).await, Vec::<DeferredId>::new());
    assert_eq!(due(UnixTime::MAX, 100).await.len(), 4);
    // Finished records are never due.
    let a = record("a", 10);
    store
        .finish(a.id(), finished_machine(&a), denied(16))
        .await
        .unwrap();
    assert_eq!(due(at(40), 10).await, vec![id("b"), id("c")]);
    assert_eq!(
        due(UnixTime::MAX, 100).await,
        vec![id("b"), id("c"), id("z")]
    );
    // Whole records come back.
    let got = store.due(at(25), 1).await.unwrap();
    assert_eq!(got, vec![record("b", 20)]);
}

/// Conformance check: due follows update state.
pub async fn due_follows_update_state(store: &dyn Store) {
    store.insert(record("a", 10)).await.unwrap();
    store.insert(record("b", 20)).await.unwrap();
    // "a" now waits until 50 s.
    let later = PollMachine::with_start(
        at(45),
        Some(at(3600)),
        Duration::from_secs(5),
        PollConfig::default(),
    );
    store.update_state(&id("a"), later).await.unwrap();
    let due = |until| async move { names(&store.due(until, 10).await.unwrap()) };
    assert_eq!(due(at(30)).await, vec![id("b")]);
    assert_eq!(due(at(50)).await, vec![id("b"), id("a")]);
    assert_eq!(due(at(15)).await, Vec::<DeferredId>::new());
}

/// Conformance check: in flight records stay due.
pub async fn in_flight_records_stay_due(store: &dyn Store) {
    let r = record("a", 10);
    store.insert(r.clone()).await.unwrap();
    let mut m = r.machine.clone();
    assert_eq!(
        m.handle::<TokenSet>(Event::Timer, at(15), &SystemRandom)
            .action,
        Action::SendPoll
    );
    assert!(m.in_flight());
    store.update_state(r.id(), m.clone()).await.unwrap();
    // A crash now leaves a request of unknown fate: it must be found again.
    let due = store.due(at(15), 10).await.unwrap();
    assert_eq!(names(&due), vec![id("a")]);
    assert!(due[0].machine.in_flight());
}

/// Conformance check: load active returns pending and undelivered.
pub async fn load_active_returns_pending_and_undelivered(store: &dyn Store) {
    assert!(store.load_active().await.unwrap().is_empty());
    let (a, b, c) = (record("a", 0), record("b", 0), record("c", 0));
    for r in [&a, &b, &c] {
        store.insert(r.clone()).await.unwrap();
    }
    store
        .finish(b.id(), finished_machine(&b), denied(10))
        .await
        .unwrap();
    store
        .finish(c.id(), finished_machine(&c), denied(10))
        .await
        .unwrap();
    assert!(store.mark_delivered(c.id()).await.unwrap());
    let active = store.load_active().await.unwrap();
    let got: HashSet<_> = active.iter().map(|r| r.id().clone()).collect();
    assert_eq!(got, HashSet::from([id("a"), id("b")]));
    let b_got = active.iter().find(|r| r.id() == b.id()).unwrap();
    assert_eq!(b_got.outcome, Some(denied(10)));
}

/// Conformance check: purge by finish time.
pub async fn purge_by_finish_time(store: &dyn Store) {
    let (a, b, c) = (record("a", 0), record("b", 0), record("c", 0));
    for r in [&a, &b, &c] {
        store.insert(r.clone()).await.unwrap();
    }
    store
        .finish(b.id(), finished_machine(&b), denied(100))
        .await
        .unwrap();
    store
        .finish(c.id(), finished_machine(&c), denied(200))
        .await
        .unwrap();
    assert!(store.mark_delivered(c.id()).await.unwrap());
    assert_eq!(store.purge(at(100)).await.unwrap(), 0, "strictly before");
    assert_eq!(store.purge(at(150)).await.unwrap(), 1);
    assert_eq!(store.get(b.id()).await.unwrap(), None);
    assert!(store.get(c.id()).await.unwrap().is_some());
    assert_eq!(store.purge(UnixTime::MAX).await.unwrap(), 1);
    assert_eq!(store.get(c.id()).await.unwrap(), None);
    // Pending records are never purged.
    assert_eq!(store.get(a.id()).await.unwrap(), Some(a.clone()));
    assert_eq!(store.purge(UnixTime::MAX).await.unwrap(), 0);
    assert_eq!(names(&store.load_active().await.unwrap()), vec![id("a")]);
}

/// Conformance check: bind refuses another owner.
pub async fn bind_refuses_another_owner(store: &dyn Store) {
    // Before binding, any record goes in.
    store.insert(record("a", 0)).await.unwrap();
    store.bind("https://op.example", "client").await.unwrap();
    store.bind("https://op.example", "client").await.unwrap();
    let e = store
        .bind("https://other.example", "client")
        .await
        .unwrap_err();
    match &e {
        StoreError::WrongOwner {
            expected_issuer,
            expected_client_id,
            found_issuer,
            found_client_id,
        } => {
            assert_eq!(expected_issuer, "https://other.example");
            assert_eq!(expected_client_id, "client");
            assert_eq!(found_issuer, "https://op.example");
            assert_eq!(found_client_id, "client");
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("https://other.example"), "{e}");
    assert!(matches!(
        store.bind("https://op.example", "client-2").await,
        Err(StoreError::WrongOwner { .. })
    ));
    // A record of another client is refused once bound.
    let other = DeferredAuthentication::seeded(
        id("b"),
        "https://op.example".into(),
        "client-2".into(),
        at(0),
        Some(3600),
        5,
        Nonce::new("nonce"),
    );
    let m = PollMachine::new(&other, PollConfig::default());
    let r = Record::new(other, m);
    assert!(matches!(
        store.insert(r.clone()).await,
        Err(StoreError::WrongOwner { .. })
    ));
    assert_eq!(store.get(r.id()).await.unwrap(), None);
    store.insert(record("c", 0)).await.unwrap();
}

/// Conformance check: an IETF-profile authentication keeps its profile, and
/// the `interaction_uri` its machine waits at survives `update_state`.
pub async fn profile_and_interaction_round_trip(store: &dyn Store) {
    let a = auth("ietf", 0).with_profile(oidc_dtr::Profile::Ietf);
    let r = Record::new(a.clone(), PollMachine::new(&a, PollConfig::default()));
    store.insert(r.clone()).await.unwrap();
    let back = store.get(r.id()).await.unwrap().unwrap();
    assert_eq!(back.auth.profile(), oidc_dtr::Profile::Ietf);
    let mut m = r.machine.clone();
    let due = r.due_at().unwrap();
    assert_eq!(
        m.handle::<TokenSet>(Event::Timer, due, &SystemRandom)
            .action,
        Action::SendPoll
    );
    let mut e = oidc_dtr::error::OAuthError::new(oidc_dtr::error::ErrorCode::InteractionRequired);
    e.interaction_uri = Some("https://as.example/interact/1".into());
    m.handle::<TokenSet>(Event::Response(PollResult::OAuth(e)), due, &SystemRandom);
    let uri = m.interaction_uri().cloned().expect("interaction surfaced");
    store.update_state(r.id(), m).await.unwrap();
    let back = store.get(r.id()).await.unwrap().unwrap();
    assert_eq!(back.machine.interaction_uri(), Some(&uri));
    assert_eq!(back.auth.profile(), oidc_dtr::Profile::Ietf);
    // An OIDC one stays OIDC.
    let o = record("oidc", 0);
    store.insert(o.clone()).await.unwrap();
    assert_eq!(
        store.get(o.id()).await.unwrap().unwrap().auth.profile(),
        oidc_dtr::Profile::Oidc
    );
}

/// Conformance check: an acknowledged outcome is never handed out again,
/// whatever the application or a retry does next: a repeated `finish` (a
/// retry of the write that stored it) leaves it delivered, and neither
/// `load_active` nor `claim_undelivered` returns it.
pub async fn a_delivered_outcome_stays_delivered(store: &dyn Store) {
    let r = record("acked", 0);
    let other = record("open", 0);
    store.insert(r.clone()).await.unwrap();
    store.insert(other.clone()).await.unwrap();
    store
        .finish(r.id(), finished_machine(&r), denied(10))
        .await
        .unwrap();
    store
        .finish(other.id(), finished_machine(&other), denied(11))
        .await
        .unwrap();
    assert!(store.mark_delivered_once(r.id()).await.unwrap());
    // A retry of the finish, as a client resuming after a crash sends it.
    store
        .finish(r.id(), finished_machine(&r), denied(20))
        .await
        .unwrap();
    let got = store.get(r.id()).await.unwrap().unwrap();
    assert!(got.outcome.unwrap().delivered);
    assert!(!store.mark_delivered_once(r.id()).await.unwrap());
    let active = names(&store.load_active().await.unwrap());
    assert_eq!(active, vec![other.id().clone()]);
    let claimed = names(
        &store
            .claim_undelivered(10, Duration::from_secs(30))
            .await
            .unwrap(),
    );
    assert_eq!(claimed, vec![other.id().clone()]);
}

/// Conformance check: once bound, a store never hands out a record of
/// another issuer or client, not even one it took in before it was bound
/// (a record of another client's store must not be polled at this
/// issuer's token endpoint or handed to this client). Such a record may be
/// set aside ([`Store::quarantined`]); reading it by id is an error or
/// nothing, never the record.
pub async fn records_of_another_owner_are_never_handed_out(store: &dyn Store) {
    let mine = record("mine", 0);
    store.insert(mine.clone()).await.unwrap();
    let mut foreign = Vec::new();
    for (n, (issuer, client)) in [
        ("https://other.example", "client"),
        ("https://op.example", "client-2"),
    ]
    .into_iter()
    .enumerate()
    {
        let a = DeferredAuthentication::seeded(
            id(&format!("foreign-{n}")),
            issuer.into(),
            client.into(),
            at(0),
            Some(3600),
            5,
            Nonce::new("nonce"),
        );
        let r = Record::new(a.clone(), PollMachine::new(&a, PollConfig::default()));
        store.insert(r.clone()).await.unwrap();
        foreign.push(r);
    }
    store.bind("https://op.example", "client").await.unwrap();
    let mine_only = vec![mine.id().clone()];
    assert_eq!(names(&store.load_active().await.unwrap()), mine_only);
    assert_eq!(
        names(&store.due(UnixTime::MAX, 10).await.unwrap()),
        mine_only
    );
    let claimed: Vec<DeferredId> = store
        .claim_due("instance-1", UnixTime::MAX, 10, Duration::from_secs(30))
        .await
        .unwrap()
        .into_iter()
        .map(|(r, _)| r.id().clone())
        .collect();
    assert_eq!(claimed, mine_only);
    for r in &foreign {
        assert!(
            !matches!(store.get(r.id()).await, Ok(Some(_))),
            "a foreign record was read back"
        );
    }
    // Whatever was set aside is named by key, never by id.
    let keys: HashSet<RecordKey> = foreign.iter().map(|r| RecordKey::of(r.id())).collect();
    for q in store.quarantined().await.unwrap() {
        assert!(keys.contains(&q.key), "{q:?}");
        assert!(!q.reason.contains(foreign[0].id().secret()));
    }
    // The store's own records are unaffected.
    assert!(store.get(mine.id()).await.unwrap().is_some());
}

/// Conformance check: a store whose records all read quarantines nothing,
/// and `release_quarantined` of a record that is not set aside is
/// `Ok(false)` and changes nothing.
pub async fn a_healthy_store_quarantines_nothing(store: &dyn Store) {
    store.bind("https://op.example", "client").await.unwrap();
    let r = record("fine", 0);
    store.insert(r.clone()).await.unwrap();
    assert_eq!(store.load_active().await.unwrap().len(), 1);
    assert!(store.quarantined().await.unwrap().is_empty());
    assert!(
        !store
            .release_quarantined(RecordKey::of(r.id()))
            .await
            .unwrap()
    );
    assert!(
        !store
            .release_quarantined(RecordKey::of(&id("unknown")))
            .await
            .unwrap()
    );
    assert_eq!(store.get(r.id()).await.unwrap(), Some(r));
}
