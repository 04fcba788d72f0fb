//! Deferred code exchange answers.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for status in [200, 400] {
        let _ = oidc_dtr::__fuzz::exchange_response(status, data);
    }
});
