//! The engine's figures reach the `metrics` facade, with fixed label words
//! only: no id, token or other secret in a metric name or label.

use std::collections::BTreeSet;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use oidc_dtr::Outcome;
use oidc_dtr_testkit::{AutoApprove, OpConfig};

use crate::support::flow::*;

/// Every metric key (name and labels) registered by any test of this binary.
fn seen() -> &'static Mutex<BTreeSet<String>> {
    static SEEN: OnceLock<Mutex<BTreeSet<String>>> = OnceLock::new();
    SEEN.get_or_init(|| Mutex::new(BTreeSet::new()))
}

struct Capture;

impl Capture {
    fn note(key: &Key) {
        let mut s = key.name().to_owned();
        for l in key.labels() {
            s.push_str(&format!(" {}={}", l.key(), l.value()));
        }
        seen().lock().unwrap().insert(s);
    }
}

impl Recorder for Capture {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Capture::note(key);
        Counter::noop()
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Capture::note(key);
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Capture::note(key);
        Histogram::noop()
    }
}

#[tokio::test]
async fn engine_figures_reach_the_metrics_facade_without_secrets() {
    let _ = metrics::set_global_recorder(Capture);
    let mut cfg = OpConfig::default();
    cfg.auto_approve = AutoApprove::AfterPolls(2);
    let s = setup(cfg).await;
    let auth = start(&s.op, &s.client).await;
    let outcome = run_to_outcome(
        &s,
        auth.id(),
        Duration::from_secs(1),
        Duration::from_secs(120),
    )
    .await;
    assert!(matches!(outcome, Outcome::Tokens(_)), "{outcome:?}");
    let seen = seen().lock().unwrap().clone();
    for name in [
        "oidc_dtr_pending",
        "oidc_dtr_polls_total",
        "oidc_dtr_poll_lateness_seconds",
        "oidc_dtr_jwks_fetches_total result=ok",
        "oidc_dtr_outcomes_total kind=tokens",
        "oidc_dtr_store_queue_depth",
    ] {
        assert!(seen.contains(name), "`{name}` not among {seen:?}");
    }
    let secret = auth.id().secret().to_owned();
    assert!(seen.iter().all(|k| !k.contains(&secret)));
}
