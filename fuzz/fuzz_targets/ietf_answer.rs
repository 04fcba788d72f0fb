//! IETF profile answers: the initial token request's (deferred response),
//! `interaction_uri`, device authorization responses.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for status in [200, 400] {
        let _ = oidc_dtr::__fuzz::ietf_answer(status, data);
    }
});
