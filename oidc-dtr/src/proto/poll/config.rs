//! The poll schedule's tuning ([`PollConfig`]), and the copy machines share.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Tuning of the poll schedule, shared by every authentication of a client
/// (set with [`DtrClientBuilder::poll_config`](crate::DtrClientBuilder::poll_config))
/// or given to each [`PollMachine`](crate::poll::PollMachine) driven directly.
///
/// The cadence while pings are expected is not here: it depends on whether
/// the client has a notification endpoint, so it is set with
/// [`DtrClientBuilder::notified_poll_cadence`](crate::DtrClientBuilder::notified_poll_cadence)
/// (or, for a machine driven directly, [`PollMachine::notified_cadence`](crate::poll::PollMachine::notified_cadence)).
///
/// ```
/// use std::time::Duration;
/// use oidc_dtr::poll::PollConfig;
///
/// let config = PollConfig::default()
///     .backoff_base(Duration::from_secs(1))
///     .backoff_cap(Duration::from_secs(120))
///     .max_lifetime(Duration::from_secs(24 * 3600));
/// assert_ne!(config, PollConfig::default());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PollConfig {
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_cap: Duration,
    pub(crate) final_poll_margin: Duration,
    pub(crate) max_lifetime: Duration,
    /// Set from the client builder's `notified_poll_cadence` (or
    /// `PollMachine::notified_cadence`), never by an application directly.
    pub(crate) notified_cadence: Option<Duration>,
}

impl Default for PollConfig {
    fn default() -> Self {
        PollConfig {
            backoff_base: Duration::from_secs(2),
            backoff_cap: Duration::from_secs(300),
            final_poll_margin: Duration::from_secs(2),
            max_lifetime: Duration::from_secs(30 * 24 * 3600),
            notified_cadence: None,
        }
    }
}

impl PollConfig {
    /// The first backoff window after a transient failure; it doubles with
    /// each consecutive failure up to the [cap](Self::backoff_cap).
    /// Default: 2 s.
    #[must_use]
    pub fn backoff_base(mut self, d: Duration) -> Self {
        self.backoff_base = d;
        self
    }
    /// The largest backoff window. Default: 5 min.
    #[must_use]
    pub fn backoff_cap(mut self, d: Duration) -> Self {
        self.backoff_cap = d;
        self
    }
    /// How long before the deadline the final poll is sent. Default: 2 s.
    #[must_use]
    pub fn final_poll_margin(mut self, d: Duration) -> Self {
        self.final_poll_margin = d;
        self
    }
    /// The deadline when the OP sends no `expires_in` (the OIDC draft sets
    /// no default), and the cap of a longer one. Default: 30 days.
    #[must_use]
    pub fn max_lifetime(mut self, d: Duration) -> Self {
        self.max_lifetime = d;
        self
    }
    /// This config with the cadence while pings are expected (for the
    /// client builder and the machine).
    pub(crate) fn with_notified_cadence(mut self, d: Option<Duration>) -> Self {
        self.notified_cadence = d;
        self
    }
}

/// A [`PollConfig`] shared by the machines that use the same one (a
/// client's machines all do): a machine holds a pointer, not 80 bytes.
#[derive(Clone)]
pub(super) struct SharedConfig(std::sync::Arc<PollConfig>);

impl SharedConfig {
    /// The shared copy of `config`: the last one made if equal.
    pub(super) fn new(config: PollConfig) -> Self {
        static LAST: std::sync::Mutex<Option<std::sync::Arc<PollConfig>>> =
            std::sync::Mutex::new(None);
        let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(shared) = last.as_ref().filter(|c| ***c == config) {
            return SharedConfig(shared.clone());
        }
        let shared = std::sync::Arc::new(config);
        *last = Some(shared.clone());
        SharedConfig(shared)
    }
}

impl std::ops::Deref for SharedConfig {
    type Target = PollConfig;
    fn deref(&self) -> &PollConfig {
        &self.0
    }
}

impl PartialEq for SharedConfig {
    fn eq(&self, other: &Self) -> bool {
        *self.0 == *other.0
    }
}

impl Eq for SharedConfig {}

impl std::fmt::Debug for SharedConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for SharedConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for SharedConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        PollConfig::deserialize(d).map(SharedConfig::new)
    }
}
