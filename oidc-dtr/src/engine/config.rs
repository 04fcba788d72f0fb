//! The poll driver's tuning.

use std::time::Duration;

/// Tuning of the poll driver (one task and one timer queue for every
/// pending authentication of a client): [`DriverConfig::default`] and the
/// setters, handed to
/// [`DtrClientBuilder::driver_config`](crate::DtrClientBuilder::driver_config).
///
/// ```
/// use std::time::Duration;
/// use oidc_dtr::poll::DriverConfig;
///
/// let driver = DriverConfig::default()
///     .max_in_flight(16)
///     .finished_retention(Duration::from_secs(3600));
/// assert_ne!(driver, DriverConfig::default());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DriverConfig {
    pub(crate) max_in_flight: usize,
    pub(crate) finished_retention: Duration,
    pub(crate) event_capacity: usize,
    pub(crate) max_queued_writes: usize,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            max_in_flight: 64,
            finished_retention: Duration::from_secs(24 * 3600),
            event_capacity: 1024,
            max_queued_writes: 8192,
        }
    }
}

impl DriverConfig {
    /// Token requests in flight at once, across all authentications.
    /// Default: 64.
    #[must_use]
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n;
        self
    }

    /// How long a finished authentication's outcome stays available to
    /// `wait`. Default: 24 h.
    #[must_use]
    pub fn finished_retention(mut self, d: Duration) -> Self {
        self.finished_retention = d;
        self
    }

    /// Capacity of the event channel; a subscriber that falls further
    /// behind misses events (outcomes stay available through `wait`).
    /// Default: 1024.
    #[must_use]
    pub fn event_capacity(mut self, n: usize) -> Self {
        self.event_capacity = n;
        self
    }

    /// Store writes (poll states, outcomes) queued or in progress at once.
    /// They run concurrently, so that a store can group them into one
    /// transaction; when this many are outstanding the driver sends no new
    /// poll until one completes: a slow store slows polling down (polls go
    /// out late, never early) instead of queueing writes in memory without
    /// limit. Default: 8192.
    #[must_use]
    pub fn max_queued_writes(mut self, n: usize) -> Self {
        self.max_queued_writes = n;
        self
    }
}
