//! JWK Set parsing (public API), then a verification with every key found.
#![no_main]
use libfuzzer_sys::fuzz_target;
use oidc_dtr::jose::{Algorithm, KeySet};

const ALGS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

fuzz_target!(|data: &[u8]| {
    if let Ok(set) = KeySet::from_json(data, ALGS) {
        let kids: Vec<Option<String>> = set.kids().map(|k| k.map(str::to_owned)).collect();
        for kid in kids {
            for alg in ALGS {
                let _ = set.verify(kid.as_deref(), *alg, b"a.b", &[0u8; 64]);
            }
        }
    }
});
