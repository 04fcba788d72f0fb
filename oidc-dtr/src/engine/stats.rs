//! What the engine is doing, in numbers: O(1) counters the application can
//! read at any time ([`DtrClient::stats`](crate::DtrClient::stats)), and the
//! same figures through the [`metrics`] facade for whatever exporter the
//! application installed (Prometheus, OpenTelemetry, statsd...). No label
//! carries an id, a token or any other secret: the only labels are fixed
//! words (`result="accepted"`).
//!
//! Metric names: gauges `oidc_dtr_pending`, `oidc_dtr_in_flight`,
//! `oidc_dtr_outcomes_unstored`, `oidc_dtr_store_queue_depth`; counters
//! `oidc_dtr_polls_total`, `oidc_dtr_slow_down_total`,
//! `oidc_dtr_pings_total{result}`, `oidc_dtr_jwks_fetches_total{result}`,
//! `oidc_dtr_outcomes_total{kind}`; histogram
//! `oidc_dtr_poll_lateness_seconds` (how far behind its scheduled time each
//! poll went out; never negative: a poll is never early).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// The engine's counters (shared by the driver and the client).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pending: AtomicU64,
    in_flight: AtomicU64,
    unstored: AtomicU64,
    store_queue: AtomicU64,
    polls: AtomicU64,
    slow_downs: AtomicU64,
    pings_accepted: AtomicU64,
    pings_rejected: AtomicU64,
    max_lateness_ms: AtomicU64,
}

/// A snapshot of the engine's counters: see [`DtrClient::stats`](crate::DtrClient::stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct EngineStats {
    /// Authentications being polled (no outcome yet).
    pub pending: u64,
    /// Polls in flight.
    pub in_flight: u64,
    /// Outcomes reached but not yet stored (and so not yet handed over).
    pub outcomes_unstored: u64,
    /// Writes queued for the store or in progress (bounded by
    /// [`DriverConfig::max_queued_writes`](crate::poll::DriverConfig::max_queued_writes)
    /// plus the polls in flight).
    pub store_queue_depth: u64,
    /// Polls sent since the client started.
    pub polls: u64,
    /// `slow_down` answers received.
    pub slow_downs: u64,
    /// Pings that passed the bearer check.
    pub pings_accepted: u64,
    /// Pings refused (wrong token or unknown id, alike).
    pub pings_rejected: u64,
    /// The largest lateness of a poll so far: how long after its scheduled
    /// time it went out.
    pub max_poll_lateness: Duration,
}

fn dec(c: &AtomicU64) -> u64 {
    // Saturating: a counter never wraps below zero on a bookkeeping slip.
    let mut cur = c.load(Relaxed);
    loop {
        let next = cur.saturating_sub(1);
        match c.compare_exchange_weak(cur, next, Relaxed, Relaxed) {
            Ok(_) => return next,
            Err(seen) => cur = seen,
        }
    }
}

impl Counters {
    pub(crate) fn snapshot(&self) -> EngineStats {
        EngineStats {
            pending: self.pending.load(Relaxed),
            in_flight: self.in_flight.load(Relaxed),
            outcomes_unstored: self.unstored.load(Relaxed),
            store_queue_depth: self.store_queue.load(Relaxed),
            polls: self.polls.load(Relaxed),
            slow_downs: self.slow_downs.load(Relaxed),
            pings_accepted: self.pings_accepted.load(Relaxed),
            pings_rejected: self.pings_rejected.load(Relaxed),
            max_poll_lateness: Duration::from_millis(self.max_lateness_ms.load(Relaxed)),
        }
    }

    pub(crate) fn tracked(&self) {
        let n = self.pending.fetch_add(1, Relaxed) + 1;
        metrics::gauge!("oidc_dtr_pending").set(n as f64);
    }

    /// An authentication was handed to another instance without an outcome.
    pub(crate) fn untracked(&self) {
        let n = dec(&self.pending);
        metrics::gauge!("oidc_dtr_pending").set(n as f64);
    }

    /// An authentication reached its outcome (`stored`: already in the store).
    pub(crate) fn finished(&self, kind: &'static str, stored: bool) {
        let n = dec(&self.pending);
        metrics::gauge!("oidc_dtr_pending").set(n as f64);
        if !stored {
            let u = self.unstored.fetch_add(1, Relaxed) + 1;
            metrics::gauge!("oidc_dtr_outcomes_unstored").set(u as f64);
            metrics::counter!("oidc_dtr_outcomes_total", "kind" => kind).increment(1);
        }
    }

    pub(crate) fn outcome_stored(&self) {
        let u = dec(&self.unstored);
        metrics::gauge!("oidc_dtr_outcomes_unstored").set(u as f64);
    }

    pub(crate) fn in_flight(&self, n: usize) {
        self.in_flight.store(n as u64, Relaxed);
        metrics::gauge!("oidc_dtr_in_flight").set(n as f64);
    }

    pub(crate) fn poll_sent(&self, lateness: Duration) {
        self.polls.fetch_add(1, Relaxed);
        metrics::counter!("oidc_dtr_polls_total").increment(1);
        let ms = u64::try_from(lateness.as_millis()).unwrap_or(u64::MAX);
        self.max_lateness_ms.fetch_max(ms, Relaxed);
        metrics::histogram!("oidc_dtr_poll_lateness_seconds").record(lateness.as_secs_f64());
    }

    pub(crate) fn slow_down(&self) {
        self.slow_downs.fetch_add(1, Relaxed);
        metrics::counter!("oidc_dtr_slow_down_total").increment(1);
    }

    pub(crate) fn ping(&self, accepted: bool) {
        if accepted {
            self.pings_accepted.fetch_add(1, Relaxed);
            metrics::counter!("oidc_dtr_pings_total", "result" => "accepted").increment(1);
        } else {
            self.pings_rejected.fetch_add(1, Relaxed);
            metrics::counter!("oidc_dtr_pings_total", "result" => "rejected").increment(1);
        }
    }

    pub(crate) fn store_queued(&self) {
        let n = self.store_queue.fetch_add(1, Relaxed) + 1;
        metrics::gauge!("oidc_dtr_store_queue_depth").set(n as f64);
    }

    /// Writes queued or in progress.
    pub(crate) fn store_queue_depth(&self) -> u64 {
        self.store_queue.load(Relaxed)
    }

    pub(crate) fn store_dequeued(&self) {
        let n = dec(&self.store_queue);
        metrics::gauge!("oidc_dtr_store_queue_depth").set(n as f64);
    }
}

/// A JWK Set fetch, counted (`ok` or `error`).
pub(crate) fn jwks_fetch(ok: bool) {
    metrics::counter!("oidc_dtr_jwks_fetches_total", "result" => if ok { "ok" } else { "error" })
        .increment(1);
}
