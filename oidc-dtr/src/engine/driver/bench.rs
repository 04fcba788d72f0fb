//! A measurement of the driver's own cost, without HTTP (for the load
//! example).

use std::sync::Arc;
use std::time::Duration;

use crate::proto::exchange::DeferredAuthentication;
use crate::proto::poll::{PollMachine, PollResult};
use crate::secret::DeferredId;
use crate::time::UnixTime;

use super::*;

/// The driver's own cost, without HTTP: `n` authentications tracked on a
/// manual clock behind a poller that answers `authorization_pending` at
/// once (and stores nothing), then `rounds` rounds in which all of them
/// fall due at once. Returns how long each round took until every answer
/// was back and handled, and the `cpu` time (a reading the caller
/// supplies) it used. For `examples/load.rs` (`driver` mode).
pub(crate) async fn bench_rounds(
    n: usize,
    max_in_flight: usize,
    rounds: u32,
    cpu: impl Fn() -> Duration,
) -> Vec<(Duration, Duration)> {
    use crate::error::{ErrorCode, OAuthError};
    use crate::proto::poll::PollConfig;
    use crate::time::ManualClock;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct Pending(AtomicU64);
    impl Poller for Pending {
        type Tokens = ();
        fn poll(self: Arc<Self>, _auth: DeferredAuthentication) -> BoxFuture<PollResult<()>> {
            Box::pin(async move {
                self.0.fetch_add(1, Ordering::Relaxed);
                PollResult::OAuth(OAuthError::new(ErrorCode::AuthorizationPending))
            })
        }
    }

    let t0 = UnixTime::from_secs(1_900_000_000);
    let clock = Arc::new(ManualClock::new(t0));
    let poller = Arc::new(Pending(AtomicU64::new(0)));
    let config = DriverConfig {
        max_in_flight,
        ..DriverConfig::default()
    };
    let driver: DriverHandle<()> = DriverHandle::spawn(
        Arc::downgrade(&poller),
        clock.clone(),
        Arc::new(crate::random::SystemRandom),
        config,
        &tokio::runtime::Handle::current(),
    );
    let poll_config = PollConfig::default();
    for i in 0..n {
        let a = DeferredAuthentication::seeded(
            DeferredId::new(format!("bench-{i:012}-0123456789abcdefghij")),
            "https://op.example".into(),
            "client".into(),
            t0,
            Some(86_400),
            60,
            crate::secret::Nonce::new("nonce"),
        );
        let m = PollMachine::new(&a, poll_config.clone());
        let _ = driver.track(a, m).await;
    }
    let mut out = Vec::new();
    for round in 1..=u64::from(rounds) {
        clock.advance(Duration::from_secs(61));
        let cpu0 = cpu();
        let t = std::time::Instant::now();
        loop {
            let answered = poller.0.load(Ordering::Relaxed) >= round * n as u64;
            let stats = driver.stats();
            if answered && stats.in_flight == 0 && stats.store_queue_depth == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        out.push((t.elapsed(), cpu().saturating_sub(cpu0)));
    }
    driver.shutdown().await;
    out
}
