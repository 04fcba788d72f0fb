//! Panic safety around what the application supplies.
//!
//! The engine calls application code from its own tasks: the [`Clock`] and
//! the [`RandomSource`] from the driver task (every timer, every backoff
//! draw), the [`Store`](crate::store::Store) (and through it a
//! [`Sealer`](crate::store::Sealer)) from the persistence and fleet tasks, signers
//! from the poll tasks. A panic in any of them must not stop the engine for
//! every authentication: poll tasks and store writes run as tasks of their
//! own (a panic there is an answer of unknown fate, or a write that did not
//! happen), and the clock and the random source are wrapped here so that a
//! panic becomes a value the engine already handles.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use crate::random::{RandomError, RandomSource};
use crate::time::{Clock, SystemClock, UnixTime};

/// A [`RandomSource`] whose panics are [`RandomError`]s (every caller
/// handles those: backoff jitter takes the whole window, a request that
/// needs random bytes fails).
pub(crate) struct GuardedRandom {
    inner: Arc<dyn RandomSource>,
    warned: AtomicBool,
}

impl GuardedRandom {
    pub(crate) fn new(inner: Arc<dyn RandomSource>) -> Self {
        GuardedRandom {
            inner,
            warned: AtomicBool::new(false),
        }
    }
}

impl RandomSource for GuardedRandom {
    fn fill(&self, dest: &mut [u8]) -> Result<(), RandomError> {
        match catch_unwind(AssertUnwindSafe(|| self.inner.fill(dest))) {
            Ok(r) => r,
            Err(_) => {
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::error!(
                        "the application's random source panicked (a bug); treated as a failure of the generator"
                    );
                }
                Err(RandomError)
            }
        }
    }
}

/// A [`Clock`] whose panics do not stop the engine: a reading that panics
/// is replaced by the last good one plus the monotonic time elapsed since
/// (the system clock if there was none), and a sleep that panics by a
/// sleep on tokio's timer.
pub(crate) struct GuardedClock {
    inner: Arc<dyn Clock>,
    last: Mutex<Option<(UnixTime, Instant)>>,
    warned: AtomicBool,
}

impl GuardedClock {
    pub(crate) fn new(inner: Arc<dyn Clock>) -> Self {
        GuardedClock {
            inner,
            last: Mutex::new(None),
            warned: AtomicBool::new(false),
        }
    }

    fn warn(&self) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::error!(
                "the application's clock panicked (a bug); time continues from its last reading"
            );
        }
    }

    fn fallback_sleep(&self, t: UnixTime) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let d = t.saturating_duration_since(self.now());
        Box::pin(tokio::time::sleep(d))
    }
}

impl Clock for GuardedClock {
    fn now(&self) -> UnixTime {
        match catch_unwind(AssertUnwindSafe(|| self.inner.now())) {
            Ok(t) => {
                *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((t, Instant::now()));
                t
            }
            Err(_) => {
                self.warn();
                match *self.last.lock().unwrap_or_else(|p| p.into_inner()) {
                    Some((t, at)) => t.saturating_add(at.elapsed()),
                    None => SystemClock.now(),
                }
            }
        }
    }

    fn sleep_until(&self, t: UnixTime) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        match catch_unwind(AssertUnwindSafe(|| self.inner.sleep_until(t))) {
            Ok(sleep) => Box::pin(async move {
                if CatchUnwind(sleep).await.is_err() {
                    self.warn();
                    self.fallback_sleep(t).await;
                }
            }),
            Err(_) => {
                self.warn();
                self.fallback_sleep(t)
            }
        }
    }
}

/// A future whose panic is its output (`Err`), as a spawned task's is.
pub(crate) struct CatchUnwind<F>(pub(crate) F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = std::thread::Result<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match catch_unwind(AssertUnwindSafe(|| Pin::new(&mut *inner).poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::ManualClock;
    use std::time::Duration;

    struct Panicky;

    impl RandomSource for Panicky {
        fn fill(&self, _dest: &mut [u8]) -> Result<(), RandomError> {
            panic!("injected")
        }
    }

    impl Clock for Panicky {
        fn now(&self) -> UnixTime {
            panic!("injected")
        }
    }

    #[test]
    fn a_panicking_random_source_is_an_error() {
        let r = GuardedRandom::new(Arc::new(Panicky));
        assert_eq!(r.fill(&mut [0u8; 4]), Err(RandomError));
        let ok = GuardedRandom::new(Arc::new(crate::random::SystemRandom));
        assert_eq!(ok.fill(&mut [0u8; 4]), Ok(()));
    }

    /// Panics on `now` once told to.
    struct Breaks(ManualClock, AtomicBool);

    impl Clock for Breaks {
        fn now(&self) -> UnixTime {
            assert!(!self.1.load(Ordering::SeqCst), "injected");
            self.0.now()
        }
    }

    #[tokio::test]
    async fn a_panicking_clock_continues_from_its_last_reading() {
        let t0 = UnixTime::from_secs(1_800_000_000);
        let c = Arc::new(Breaks(ManualClock::new(t0), AtomicBool::new(false)));
        let g = GuardedClock::new(c.clone());
        assert_eq!(g.now(), t0);
        c.1.store(true, Ordering::SeqCst);
        let t = g.now();
        assert!(t >= t0 && t < t0.saturating_add(Duration::from_secs(5)));
        // Its sleeps (the default one reads `now`) still end.
        tokio::time::timeout(
            Duration::from_secs(5),
            g.sleep_until(g.now().saturating_add(Duration::from_millis(20))),
        )
        .await
        .expect("the sleep ends");
        // Never read at all: the system clock.
        let never = GuardedClock::new(Arc::new(Panicky));
        assert!(never.now() > t0.saturating_sub(Duration::from_secs(1_000_000_000)));
    }
}
