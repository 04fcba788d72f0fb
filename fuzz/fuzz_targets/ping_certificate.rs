//! The ping receiver behind mutual TLS, with a CA trusted for a subject:
//! the peer certificate chain (the input) is checked against the CA, and
//! its subject and subjectAltName entries are read. Never a panic; only
//! the seed certificate `corpus/ping_certificate/leaf` (issued by
//! `fixtures/ping_ca.der` to the expected subject) is accepted.
#![no_main]
use libfuzzer_sys::fuzz_target;

const CA: &[u8] = include_bytes!("../fixtures/ping_ca.der");

fuzz_target!(|data: &[u8]| {
    let status = oidc_dtr::__fuzz::ping_certificate(CA, data);
    assert!(
        matches!(status, Some(204 | 401)),
        "a certificate is accepted or refused at once: {status:?}"
    );
});
