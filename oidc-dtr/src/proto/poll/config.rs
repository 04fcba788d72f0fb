//! The poll schedule's tuning ([`PollConfig`]), and the copy machines share.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Tuning of the poll schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PollConfig {
    /// The first backoff window after a transient failure; it doubles with
    /// each consecutive failure (default 2 s).
    pub backoff_base: Duration,
    /// The largest backoff window (default 5 min).
    pub backoff_cap: Duration,
    /// How long before the deadline the final poll is sent (default 2 s).
    pub final_poll_margin: Duration,
    /// The deadline when the OP sets no `expires_in` (the OIDC draft sets no default; 30 days here).
    pub max_lifetime: Duration,
    /// With a notification endpoint, pings make polling a safety net: the
    /// regular cadence is then at least this long (e.g. 60 s). A ping brings
    /// the next poll back to the floor. `None` polls at the floor (the
    /// default here). The client sets it from
    /// [`DtrClientBuilder::notified_poll_cadence`](crate::DtrClientBuilder::notified_poll_cadence)
    /// (60 s by default, and only when it has a notification endpoint).
    pub notified_cadence: Option<Duration>,
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
    /// Sets the backoff cap.
    pub fn backoff_cap(mut self, d: Duration) -> Self {
        self.backoff_cap = d;
        self
    }
    /// Sets the first backoff window.
    pub fn backoff_base(mut self, d: Duration) -> Self {
        self.backoff_base = d;
        self
    }
    /// Sets the final-poll margin.
    pub fn final_poll_margin(mut self, d: Duration) -> Self {
        self.final_poll_margin = d;
        self
    }
    /// Sets the lifetime used when the OP sends no `expires_in`.
    pub fn max_lifetime(mut self, d: Duration) -> Self {
        self.max_lifetime = d;
        self
    }
    /// Sets the notification cadence (see the field).
    pub fn notified_cadence(mut self, d: Option<Duration>) -> Self {
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
