//! ID token validation (public API) against a fixed key set.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use oidc_dtr::{UnixTime, jose::{Algorithm, KeySet, SigningKey}, secret::{Nonce, RawJwt}, tokens::{IdTokenValidator, ValidationContext, ValidationOptions}};

struct Fixture {
    validator: IdTokenValidator,
    keys: KeySet,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let algs = [Algorithm::ES256, Algorithm::EdDSA, Algorithm::RS256];
        let jwks: Vec<serde_json::Value> = [Algorithm::ES256, Algorithm::EdDSA]
            .iter()
            .map(|a| {
                SigningKey::generate(*a)
                    .unwrap()
                    .with_kid(a.as_str())
                    .public_jwk()
                    .unwrap()
            })
            .collect();
        Fixture {
            validator: IdTokenValidator::new(
                "https://op.example",
                "client",
                ValidationOptions::default().algorithms(algs),
                None,
                None,
            )
            .unwrap(),
            keys: KeySet::from_keys(jwks, &algs),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let f = fixture();
    let ctx = ValidationContext::new(Nonce::new("nonce"), UnixTime::from_secs(1_700_000_000));
    let _ = f.validator.validate(
        &RawJwt::new(s),
        &f.keys,
        &ctx,
        None,
        UnixTime::from_secs(1_700_000_100),
    );
});
