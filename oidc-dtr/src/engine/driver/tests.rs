//! Unit tests of the poll driver.

use super::*;
use crate::error::{ErrorCode, OAuthError};
use crate::proto::poll::PollConfig;
use crate::random::SystemRandom;
use crate::time::ManualClock;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::oneshot;

const T0: UnixTime = UnixTime::from_millis(1_800_000_000_000);

/// A fake OP: approves an id after `approve_after` polls; records how many
/// polls were in flight at once per id.
struct FakeOp {
    approve_after: u32,
    polls: Mutex<HashMap<String, u32>>,
    concurrent: Mutex<HashMap<String, u32>>,
    max_concurrent: AtomicUsize,
    delay: Duration,
}

impl Poller for FakeOp {
    type Tokens = String;
    fn poll(self: Arc<Self>, auth: DeferredAuthentication) -> BoxFuture<PollResult<String>> {
        Box::pin(async move {
            let id = auth.id().secret().to_owned();
            {
                let mut c = self.concurrent.lock().unwrap();
                let n = c.entry(id.clone()).or_default();
                *n += 1;
                self.max_concurrent.fetch_max(*n as usize, Ordering::SeqCst);
            }
            tokio::time::sleep(self.delay).await;
            *self.concurrent.lock().unwrap().get_mut(&id).unwrap() -= 1;
            let mut polls = self.polls.lock().unwrap();
            let n = polls.entry(id.clone()).or_default();
            *n += 1;
            if *n >= self.approve_after {
                PollResult::Tokens(format!("tokens-for-{id}"))
            } else {
                let mut e = OAuthError::new(ErrorCode::AuthorizationPending);
                e.description = Some(format!("step {n}"));
                PollResult::OAuth(e)
            }
        })
    }
}

fn spawn_driver(
    op: &Arc<FakeOp>,
    clock: &Arc<ManualClock>,
    cfg: DriverConfig,
) -> DriverHandle<String> {
    DriverHandle::spawn(
        Arc::downgrade(op),
        clock.clone(),
        Arc::new(SystemRandom),
        cfg,
        &tokio::runtime::Handle::current(),
    )
}

fn fake(approve_after: u32) -> Arc<FakeOp> {
    Arc::new(FakeOp {
        approve_after,
        polls: Default::default(),
        concurrent: Default::default(),
        max_concurrent: AtomicUsize::new(0),
        delay: Duration::from_millis(1),
    })
}

fn auth(id: &str, interval: u64, expires_in: u64) -> (DeferredAuthentication, PollMachine) {
    let a = DeferredAuthentication::for_tests(DeferredId::new(id), T0, Some(expires_in), interval);
    let m = PollMachine::new(&a, PollConfig::default());
    (a, m)
}

/// Advances the manual clock in steps until `done` or a step limit.
async fn run_until(clock: &ManualClock, step: Duration, mut done: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if done() {
            return;
        }
        clock.advance(step);
        // Let the driver and the fake OP run.
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("did not finish");
}

#[tokio::test]
async fn drives_many_authentications_to_their_outcomes() {
    let clock = Arc::new(ManualClock::new(T0));
    let op = fake(3);
    let driver = spawn_driver(&op, &clock, DriverConfig::default());
    let mut events = driver.subscribe();
    for i in 0..50 {
        let (a, m) = auth(&format!("id-{i}"), 5, 3600);
        assert!(driver.track(a, m).await.unwrap());
    }
    // Tracking the same id twice is refused.
    let (a, m) = auth("id-0", 5, 3600);
    assert!(!driver.track(a, m).await.unwrap());

    let waiter = {
        let d = driver.clone();
        tokio::spawn(async move { d.wait(&DeferredId::new("id-7")).await })
    };
    let finished = Arc::new(AtomicUsize::new(0));
    let f = finished.clone();
    let progress = Arc::new(AtomicUsize::new(0));
    let p = progress.clone();
    let collector = tokio::spawn(async move {
        while let Ok(ev) = events.recv().await {
            match ev {
                PollEvent::Finished { .. } => {
                    if f.fetch_add(1, Ordering::SeqCst) + 1 == 50 {
                        break;
                    }
                }
                PollEvent::Progress { .. } => {
                    p.fetch_add(1, Ordering::SeqCst);
                }
                PollEvent::Interaction { .. }
                | PollEvent::InteractionRefused { .. }
                | PollEvent::Retrying { .. }
                | PollEvent::TokensHeld { .. } => {}
            }
        }
    });
    run_until(&clock, Duration::from_secs(1), || {
        finished.load(Ordering::SeqCst) == 50
    })
    .await;
    collector.await.unwrap();
    assert_eq!(
        waiter.await.unwrap(),
        Ok(Outcome::Tokens("tokens-for-id-7".into()))
    );
    // Two pending answers each, with a new description each time.
    assert_eq!(progress.load(Ordering::SeqCst), 100);
    assert_eq!(
        op.max_concurrent.load(Ordering::SeqCst),
        1,
        "single flight per id"
    );
    // Every id was polled exactly three times, at least 5 s apart.
    assert!(op.polls.lock().unwrap().values().all(|&n| n == 3));
    // A late wait still gets the outcome (kept for the retention period).
    assert_eq!(
        driver.wait(&DeferredId::new("id-3")).await,
        Ok(Outcome::Tokens("tokens-for-id-3".into()))
    );
    assert_eq!(
        driver.wait(&DeferredId::new("nope")).await,
        Err(WaitError::Unknown)
    );
    assert_eq!(driver.counts(), (0, 0));
}

/// Ids whose hashes collide are still found, each to its own entry,
/// before and after another one is removed.
#[test]
fn the_id_index_survives_hash_collisions() {
    let mut index = IdIndex::new();
    index.all_collide = true;
    let mut entries: KeyMap<u64, Entry<String>> = KeyMap::default();
    let ids: Vec<DeferredId> = (0..4)
        .map(|i| DeferredId::new(format!("collide-{i}")))
        .collect();
    for (key, id) in ids.iter().enumerate() {
        let (a, m) = auth(id.secret(), 5, 3600);
        let key = key as u64 + 10;
        index.insert(id, key);
        entries.insert(
            key,
            Entry {
                auth: a,
                machine: Box::new(m),
                timer_gen: 0,
                panics: 0,
                last_failure: None,
                end: None,
            },
        );
    }
    assert_eq!(index.collided.len(), 3);
    for (key, id) in ids.iter().enumerate() {
        assert_eq!(index.get(id, &entries), Some(key as u64 + 10));
    }
    let stranger = DeferredId::new("collide-9");
    assert_eq!(index.get(&stranger, &entries), None);
    // Remove the one that holds the hash slot, then a collided one.
    for (key, gone) in [(10u64, 0usize), (12, 2)] {
        index.remove(&ids[gone], key);
        entries.remove(&key);
        assert_eq!(index.get(&ids[gone], &entries), None);
    }
    assert_eq!(index.get(&ids[1], &entries), Some(11));
    assert_eq!(index.get(&ids[3], &entries), Some(13));
    // A new id takes the free hash slot.
    let (a, m) = auth("collide-new", 5, 3600);
    let new_id = a.id().clone();
    index.insert(&new_id, 20);
    entries.insert(
        20,
        Entry {
            auth: a,
            machine: Box::new(m),
            timer_gen: 0,
            panics: 0,
            last_failure: None,
            end: None,
        },
    );
    assert_eq!(index.get(&new_id, &entries), Some(20));
    assert_eq!(index.get(&ids[1], &entries), Some(11));
}

/// Answers every poll `authorization_pending`; its state writes wait
/// until the gate opens.
struct GatedStore {
    polls: AtomicUsize,
    gate: tokio::sync::Semaphore,
}

impl Poller for GatedStore {
    type Tokens = String;
    fn poll(self: Arc<Self>, _auth: DeferredAuthentication) -> BoxFuture<PollResult<String>> {
        Box::pin(async move {
            self.polls.fetch_add(1, Ordering::SeqCst);
            PollResult::OAuth(OAuthError::new(ErrorCode::AuthorizationPending))
        })
    }

    fn persist_state(
        self: Arc<Self>,
        _auth: DeferredAuthentication,
        _machine: PollMachine,
    ) -> BoxFuture<()> {
        Box::pin(async move {
            let _permit = self.gate.acquire().await;
        })
    }
}

/// Issue 16: a store that cannot keep up slows polling down. With
/// `max_queued_writes` writes outstanding, no poll goes out (late, not
/// lost) until the store catches up; the writes never pile up.
#[tokio::test]
async fn a_slow_store_holds_new_polls_back() {
    let clock = Arc::new(ManualClock::new(T0));
    let op = Arc::new(GatedStore {
        polls: AtomicUsize::new(0),
        gate: tokio::sync::Semaphore::new(0),
    });
    let cfg = DriverConfig {
        max_queued_writes: 2,
        ..DriverConfig::default()
    };
    let driver = DriverHandle::spawn(
        Arc::downgrade(&op),
        clock.clone(),
        Arc::new(SystemRandom),
        cfg,
        &tokio::runtime::Handle::current(),
    );
    for i in 0..6 {
        let (a, m) = auth(&format!("g-{i}"), 5, 3600);
        assert!(driver.track(a, m).await.unwrap());
    }
    run_until(&clock, Duration::from_secs(1), || {
        op.polls.load(Ordering::SeqCst) == 6
    })
    .await;
    // Each answer queued a state write; none can complete.
    for _ in 0..200 {
        tokio::task::yield_now().await;
        if driver.stats().store_queue_depth == 6 {
            break;
        }
    }
    assert_eq!(driver.stats().store_queue_depth, 6);
    // Every authentication falls due again, twice over: no poll goes out.
    for _ in 0..12 {
        clock.advance(Duration::from_secs(1));
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }
    assert_eq!(op.polls.load(Ordering::SeqCst), 6);
    assert_eq!(driver.stats().store_queue_depth, 6);
    // The store catches up: polling resumes, late but complete.
    op.gate.add_permits(1_000);
    run_until(&clock, Duration::from_secs(1), || {
        op.polls.load(Ordering::SeqCst) >= 12
    })
    .await;
    assert!(driver.stats().max_poll_lateness > Duration::ZERO);
}

#[tokio::test]
async fn dropped_wait_loses_nothing_and_wake_polls_early() {
    let clock = Arc::new(ManualClock::new(T0));
    let op = fake(1);
    let driver = spawn_driver(&op, &clock, DriverConfig::default());
    let (a, m) = auth("x", 60, 3600);
    driver.track(a, m).await.unwrap();
    let id = DeferredId::new("x");
    // A wait that is dropped before the outcome.
    let w = driver.wait(&id);
    let _ = tokio::time::timeout(Duration::from_millis(5), w).await;
    // A ping before the floor: the poll happens at the floor, not before.
    clock.advance(Duration::from_secs(10));
    assert!(driver.wake(&id).await);
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        op.polls.lock().unwrap().get("x"),
        None,
        "no poll before the floor"
    );
    clock.advance(Duration::from_secs(50));
    let outcome = tokio::time::timeout(Duration::from_secs(5), driver.wait(&id))
        .await
        .unwrap();
    assert_eq!(outcome, Ok(Outcome::Tokens("tokens-for-x".into())));
    // A finished authentication is not woken.
    assert!(!driver.wake(&id).await);
    let status = driver.status(&id).await.unwrap();
    assert!(status.finished);
    assert_eq!(status.polls, 1);
}

/// Panics on the first `panics` polls of every id, then approves.
struct PanickyOp {
    panics: u32,
    polls: Mutex<HashMap<String, u32>>,
}

impl Poller for PanickyOp {
    type Tokens = String;
    fn poll(self: Arc<Self>, auth: DeferredAuthentication) -> BoxFuture<PollResult<String>> {
        Box::pin(async move {
            let id = auth.id().secret().to_owned();
            let n = {
                let mut polls = self.polls.lock().unwrap();
                let n = polls.entry(id.clone()).or_default();
                *n += 1;
                *n
            };
            tokio::task::yield_now().await;
            assert!(n > self.panics, "injected panic in poll {n}");
            PollResult::Tokens(format!("tokens-for-{id}"))
        })
    }
}

/// Issue 11, item 1: a poll task that panics is a failure fed to its
/// machine (retried, then ended), never a wedged authentication.
#[tokio::test]
async fn a_panicking_poll_is_retried_then_ends_the_authentication() {
    for (panics, expected) in [(1, "tokens"), (2, "tokens"), (u32::MAX, "rejected")] {
        let clock = Arc::new(ManualClock::new(T0));
        let op = Arc::new(PanickyOp {
            panics,
            polls: Default::default(),
        });
        let driver: DriverHandle<String> = DriverHandle::spawn(
            Arc::downgrade(&op),
            clock.clone(),
            Arc::new(SystemRandom),
            DriverConfig::default(),
            &tokio::runtime::Handle::current(),
        );
        let (a, m) = auth("boom", 5, 3600);
        driver.track(a, m).await.unwrap();
        let id = DeferredId::new("boom");
        let waiter = {
            let d = driver.clone();
            let id = id.clone();
            tokio::spawn(async move { d.wait(&id).await })
        };
        run_until(&clock, Duration::from_secs(1), || waiter.is_finished()).await;
        let outcome = waiter.await.unwrap().unwrap();
        assert_eq!(outcome.kind(), expected, "{panics} panics: {outcome:?}");
        let polls = op.polls.lock().unwrap()["boom"];
        if expected == "rejected" {
            assert_eq!(polls, MAX_CONSECUTIVE_PANICS);
            assert!(matches!(
                outcome,
                Outcome::Rejected(PollFailure::Other { ref message, .. }) if message.contains("panicked")
            ));
        } else {
            assert_eq!(polls, panics + 1);
        }
        assert_eq!(driver.counts(), (0, 0));
    }
}

/// Answers each poll once its gate opens: `tokens` or pending; records
/// the outcomes the driver asks it to store.
struct GatedOp {
    tokens: bool,
    gate: tokio::sync::Semaphore,
    polls: AtomicUsize,
    stored: Mutex<Vec<Outcome<String>>>,
}

impl Poller for GatedOp {
    type Tokens = String;
    fn poll(self: Arc<Self>, auth: DeferredAuthentication) -> BoxFuture<PollResult<String>> {
        Box::pin(async move {
            self.polls.fetch_add(1, Ordering::SeqCst);
            let _permit = self.gate.acquire().await;
            if self.tokens {
                PollResult::Tokens(format!("tokens-for-{}", auth.id().secret()))
            } else {
                PollResult::OAuth(OAuthError::new(ErrorCode::AuthorizationPending))
            }
        })
    }

    fn persist_outcome(
        self: Arc<Self>,
        _auth: DeferredAuthentication,
        _machine: PollMachine,
        outcome: Outcome<String>,
        _finished_at: UnixTime,
    ) -> BoxFuture<bool> {
        Box::pin(async move {
            self.stored.lock().unwrap().push(outcome);
            true
        })
    }
}

/// Issue 22, item 5: an authentication forgotten (its fleet lease lost)
/// while its poll is in flight still has that poll's answer handled:
/// tokens are stored and handed over once; a pending answer is dropped,
/// and a claim of the same id that came meanwhile is taken on only
/// after it (never two polls of one id in flight).
#[tokio::test]
async fn a_poll_in_flight_when_the_lease_is_lost_is_still_handled() {
    for tokens in [true, false] {
        let clock = Arc::new(ManualClock::new(T0));
        let op = Arc::new(GatedOp {
            tokens,
            gate: tokio::sync::Semaphore::new(0),
            polls: AtomicUsize::new(0),
            stored: Mutex::default(),
        });
        let driver: DriverHandle<String> = DriverHandle::spawn(
            Arc::downgrade(&op),
            clock.clone(),
            Arc::new(SystemRandom),
            DriverConfig::default(),
            &tokio::runtime::Handle::current(),
        );
        let mut events = driver.subscribe();
        let (a, m) = auth("orphan", 5, 3600);
        let (again, again_m) = (a.clone(), m.clone());
        driver.track(a, m).await.unwrap();
        let id = DeferredId::new("orphan");
        run_until(&clock, Duration::from_secs(1), || {
            op.polls.load(Ordering::SeqCst) == 1
        })
        .await;
        driver.forget(&id);
        // Claimed again by this instance while the poll is in flight.
        assert!(driver.restore(again, again_m, None).await.unwrap());
        assert!(driver.status(&id).await.is_none(), "not tracked meanwhile");
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            op.polls.load(Ordering::SeqCst),
            1,
            "no second poll in flight"
        );
        op.gate.add_permits(1);
        if tokens {
            let ev = tokio::time::timeout(Duration::from_secs(5), events.recv())
                .await
                .expect("the tokens are handed over")
                .unwrap();
            assert!(matches!(
                ev,
                PollEvent::Finished { outcome: Outcome::Tokens(ref t), .. } if t == "tokens-for-orphan"
            ));
            assert_eq!(
                driver.wait(&id).await,
                Ok(Outcome::Tokens("tokens-for-orphan".into()))
            );
            assert_eq!(op.stored.lock().unwrap().len(), 1, "stored once");
            // Finished: the claim that came meanwhile polls nothing.
            clock.advance(Duration::from_secs(60));
            for _ in 0..20 {
                tokio::task::yield_now().await;
            }
            assert_eq!(op.polls.load(Ordering::SeqCst), 1);
        } else {
            // The pending answer is dropped; the claim that came
            // meanwhile resumes, a floor after it.
            op.gate.add_permits(10);
            run_until(&clock, Duration::from_secs(1), || {
                op.polls.load(Ordering::SeqCst) == 2
            })
            .await;
            assert!(op.stored.lock().unwrap().is_empty());
            assert!(driver.status(&id).await.is_some());
        }
        assert_eq!(driver.undelivered().await.len(), usize::from(tokens));
    }
}

#[tokio::test]
async fn cancel_delivers_cancelled() {
    let clock = Arc::new(ManualClock::new(T0));
    let op = fake(100);
    let driver = spawn_driver(&op, &clock, DriverConfig::default());
    let (a, m) = auth("c", 5, 3600);
    driver.track(a, m).await.unwrap();
    let id = DeferredId::new("c");
    assert!(driver.cancel(&id).await);
    assert_eq!(driver.wait(&id).await, Ok(Outcome::Cancelled));
    assert!(!driver.cancel(&id).await);
}

#[tokio::test]
async fn outcomes_are_purged_after_retention() {
    let clock = Arc::new(ManualClock::new(T0));
    let op = fake(1);
    let cfg = DriverConfig {
        finished_retention: Duration::from_secs(100),
        ..Default::default()
    };
    let driver = spawn_driver(&op, &clock, cfg);
    let (a, m) = auth("p", 5, 3600);
    driver.track(a, m).await.unwrap();
    let id = DeferredId::new("p");
    assert!(driver.cancel(&id).await);
    assert_eq!(driver.wait(&id).await, Ok(Outcome::Cancelled));
    clock.advance(Duration::from_secs(101));
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(driver.wait(&id).await, Err(WaitError::Unknown));
}

#[tokio::test]
async fn stops_when_the_handle_is_dropped() {
    let clock = Arc::new(ManualClock::new(T0));
    let op = fake(100);
    let driver = spawn_driver(&op, &clock, DriverConfig::default());
    let (a, m) = auth("s", 5, 3600);
    driver.track(a, m).await.unwrap();
    let tx = driver.tx.clone();
    let (otx, orx) = oneshot::channel();
    tx.send(Command::Wait(DeferredId::new("s"), otx))
        .ok()
        .unwrap();
    drop(tx);
    drop(driver);
    assert_eq!(orx.await.unwrap(), Err(WaitError::Stopped));
}
