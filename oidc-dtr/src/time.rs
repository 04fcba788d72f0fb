//! Wall-clock time as data, and the injectable [`Clock`].
//!
//! Deferred authentications last hours or days and must survive restarts, so
//! every instant the protocol core reasons about (deadlines, the last poll,
//! token `exp`) is an absolute [`UnixTime`], never a monotonic `Instant`. The
//! core never reads a clock itself: the caller passes `now`, and the client
//! takes a [`Clock`] so that tests can move time by hand.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// An instant as milliseconds since the Unix epoch (UTC).
///
/// Eight bytes, `Copy`, serialised as a plain integer. Arithmetic saturates,
/// so an OP that sends an absurdly large `expires_in` yields the far future
/// rather than an overflow.
///
/// ```
/// use std::time::Duration;
/// use oidc_dtr::UnixTime;
///
/// let t = UnixTime::from_secs(1_700_000_000);
/// assert_eq!(t.as_millis(), 1_700_000_000_000);
/// let later = t.saturating_add(Duration::from_secs(90));
/// assert_eq!(later.saturating_duration_since(t), Duration::from_secs(90));
/// assert!(UnixTime::EPOCH < t && t < UnixTime::MAX);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnixTime(u64);

impl UnixTime {
    /// The epoch itself.
    pub const EPOCH: UnixTime = UnixTime(0);
    /// The far future: later than any real instant.
    pub const MAX: UnixTime = UnixTime(u64::MAX);

    /// From milliseconds since the epoch.
    pub const fn from_millis(ms: u64) -> Self {
        UnixTime(ms)
    }

    /// From whole seconds since the epoch (saturating).
    pub const fn from_secs(s: u64) -> Self {
        UnixTime(s.saturating_mul(1000))
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Whole seconds since the epoch (rounded down).
    pub const fn as_secs(self) -> u64 {
        self.0 / 1000
    }

    /// From a [`SystemTime`]; instants before the epoch become the epoch.
    pub fn from_system_time(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => UnixTime(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            Err(_) => UnixTime::EPOCH,
        }
    }

    /// As a [`SystemTime`] (saturating at the platform's limit).
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH
            .checked_add(Duration::from_millis(self.0))
            .unwrap_or(UNIX_EPOCH + Duration::from_secs(i32::MAX as u64))
    }

    /// `self + d`, saturating at [`UnixTime::MAX`].
    pub fn saturating_add(self, d: Duration) -> Self {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        UnixTime(self.0.saturating_add(ms))
    }

    /// `self - d`, saturating at the epoch.
    pub fn saturating_sub(self, d: Duration) -> Self {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        UnixTime(self.0.saturating_sub(ms))
    }

    /// The time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: UnixTime) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Debug for UnixTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UnixTime({}.{:03})", self.0 / 1000, self.0 % 1000)
    }
}

impl fmt::Display for UnixTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}s", self.0 / 1000, self.0 % 1000)
    }
}

/// A source of the current wall-clock time.
///
/// The client reads it at the edges (before a request, when a response
/// arrives) and hands the value to the pure protocol core.
///
/// ```
/// use std::sync::Arc;
/// use oidc_dtr::DtrClient;
/// use oidc_dtr::time::{Clock, UnixTime};
///
/// /// A clock that always says the same (a test's frozen time).
/// struct Frozen(UnixTime);
///
/// impl Clock for Frozen {
///     fn now(&self) -> UnixTime {
///         self.0
///     }
/// }
/// let clock = Arc::new(Frozen(UnixTime::from_secs(1_700_000_000)));
/// assert_eq!(clock.now().as_secs(), 1_700_000_000);
/// let builder = DtrClient::builder().clock(clock);
/// # let _ = builder;
/// ```
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> UnixTime;

    /// A future that completes once [`now`](Self::now) has reached `t`.
    ///
    /// The poll driver sleeps through this, so a test clock can make days
    /// pass at once. The default sleeps on tokio's timer for `t - now()`;
    /// callers re-check `now()` afterwards, so a clock that jumps is safe.
    fn sleep_until(&self, t: UnixTime) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let d = t.saturating_duration_since(self.now());
        Box::pin(tokio::time::sleep(d))
    }
}

/// The operating system's clock.
///
/// ```
/// use oidc_dtr::UnixTime;
/// use oidc_dtr::time::{Clock, SystemClock};
///
/// let now = SystemClock.now();
/// assert!(now > UnixTime::from_secs(1_600_000_000));
/// ```
#[derive(Debug, Clone, Copy, Default)]
#[allow(clippy::exhaustive_structs)] // a unit type, complete by nature
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixTime {
        UnixTime::from_system_time(SystemTime::now())
    }
}

/// A clock that only moves when told to: for tests.
///
/// ```
/// use oidc_dtr::{UnixTime, time::{Clock, ManualClock}};
/// use std::time::Duration;
/// let clock = ManualClock::new(UnixTime::from_secs(1_700_000_000));
/// clock.advance(Duration::from_secs(5));
/// assert_eq!(clock.now(), UnixTime::from_secs(1_700_000_005));
/// ```
#[derive(Debug, Default)]
pub struct ManualClock {
    now: AtomicU64,
    changed: tokio::sync::Notify,
}

impl ManualClock {
    /// A clock stopped at `t`.
    pub fn new(t: UnixTime) -> Self {
        ManualClock {
            now: AtomicU64::new(t.as_millis()),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// Moves the clock forward by `d`, waking every sleeper whose time came.
    pub fn advance(&self, d: Duration) {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        // fetch_update never fails with a closure that always returns Some.
        let _ = self
            .now
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
                Some(v.saturating_add(ms))
            });
        self.changed.notify_waiters();
    }

    /// Sets the clock to `t` (it may go backwards: clocks do).
    pub fn set(&self, t: UnixTime) {
        self.now.store(t.as_millis(), Ordering::SeqCst);
        self.changed.notify_waiters();
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixTime {
        UnixTime(self.now.load(Ordering::SeqCst))
    }

    fn sleep_until(&self, t: UnixTime) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            loop {
                let notified = self.changed.notified();
                tokio::pin!(notified);
                // Register before checking, so an advance in between is seen.
                notified.as_mut().enable();
                if self.now() >= t {
                    return;
                }
                notified.await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(
            UnixTime::MAX.saturating_add(Duration::from_secs(1)),
            UnixTime::MAX
        );
        assert_eq!(UnixTime::from_secs(u64::MAX), UnixTime::MAX);
        assert_eq!(
            UnixTime::EPOCH.saturating_sub(Duration::from_secs(1)),
            UnixTime::EPOCH
        );
        assert_eq!(
            UnixTime::from_secs(10).saturating_duration_since(UnixTime::from_secs(20)),
            Duration::ZERO
        );
        assert_eq!(UnixTime::MAX.saturating_add(Duration::MAX), UnixTime::MAX);
    }

    #[test]
    fn system_time_round_trip() {
        let t = UnixTime::from_millis(1_700_000_000_123);
        assert_eq!(UnixTime::from_system_time(t.to_system_time()), t);
        assert_eq!(
            UnixTime::from_system_time(UNIX_EPOCH - Duration::from_secs(5)),
            UnixTime::EPOCH
        );
    }

    #[tokio::test]
    async fn manual_clock_sleep_wakes_on_advance() {
        let clock = std::sync::Arc::new(ManualClock::new(UnixTime::from_secs(100)));
        let c = clock.clone();
        let sleeper = tokio::spawn(async move { c.sleep_until(UnixTime::from_secs(110)).await });
        tokio::task::yield_now().await;
        clock.advance(Duration::from_secs(5));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(Duration::from_secs(5));
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .unwrap()
            .unwrap();
        // Already due: completes at once.
        clock.sleep_until(UnixTime::from_secs(1)).await;
    }

    #[test]
    fn serialises_as_integer() {
        let t = UnixTime::from_millis(42);
        assert_eq!(serde_json::to_string(&t).unwrap(), "42");
        assert_eq!(serde_json::from_str::<UnixTime>("42").unwrap(), t);
    }
}
