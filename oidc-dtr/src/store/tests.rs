use super::*;
use crate::store::test_records::{id, record};
use std::sync::{Arc, Mutex};

/// Records every counter key registered, as `name label=value ...`.
#[derive(Default, Clone)]
struct Keys(Arc<Mutex<Vec<String>>>);

impl metrics::Recorder for Keys {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        let mut s = key.name().to_owned();
        for l in key.labels() {
            s.push_str(&format!(" {}={}", l.key(), l.value()));
        }
        self.0.lock().unwrap().push(s);
        metrics::Counter::noop()
    }
    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }
    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

#[test]
fn a_quarantine_is_counted_with_fixed_labels_only() {
    let keys = Keys::default();
    let secret = id("secret");
    let r = record("secret", 0);
    let key = record_key(&secret);
    let cases = [
        (
            StoreError::Sealing(format!("record {:?}: altered", secret.fingerprint())),
            "seal",
        ),
        (
            StoreError::UnsupportedSchema {
                found: 9,
                supported: 1,
                record: Some(secret.fingerprint()),
            },
            "schema",
        ),
        (
            check_record_owner(Some(("https://x.example", "client")), &r).unwrap_err(),
            "foreign",
        ),
        (
            StoreError::corrupt(Some(secret.fingerprint()), format!("{DELIVERY_STATE} (x)")),
            "delivery_state",
        ),
        (
            StoreError::corrupt(Some(secret.fingerprint()), "truncated"),
            "corrupt",
        ),
    ];
    metrics::with_local_recorder(&keys, || {
        for (e, _) in &cases {
            assert!(is_bad_record(e), "{e:?}");
            report_quarantined("file", &key, e);
        }
    });
    let seen = keys.0.lock().unwrap().clone();
    for (_, label) in &cases {
        let want = format!("oidc_dtr_store_quarantined_total store=file reason={label}");
        assert!(seen.contains(&want), "{want} not in {seen:?}");
    }
    assert!(seen.iter().all(|k| !k.contains(secret.secret())));
    // Errors that say nothing about a record's contents are not bad
    // records: the call fails (and is retried) instead.
    assert!(!is_bad_record(&StoreError::Unavailable("down".into())));
    assert!(!is_bad_record(&StoreError::corrupt(None, "damaged page")));
    assert!(!is_bad_record(&StoreError::Closed));
}

#[test]
fn a_record_of_another_issuer_or_client_is_refused_once_bound() {
    let r = record("r", 0);
    assert!(check_record_owner(None, &r).is_ok());
    assert!(check_record_owner(Some(("https://op.example", "client")), &r).is_ok());
    for owner in [
        ("https://other.example", "client"),
        ("https://op.example", "client-2"),
    ] {
        let e = check_record_owner(Some(owner), &r).unwrap_err();
        assert!(matches!(e, StoreError::Corrupt { record: Some(fp), .. } if fp == r.fingerprint()));
        assert!(!e.to_string().contains(r.id().secret()));
    }
}
