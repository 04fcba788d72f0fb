//! Token endpoint answers: the public body parser, then the full answer
//! handling (status, OAuth error bodies) at a few statuses.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = oidc_dtr::tokens::TokenResponse::from_json(data);
    for status in [200, 400, 401, 503] {
        let _ = oidc_dtr::__fuzz::token_response(status, data);
    }
});
