//! Discovery document parsing (public API).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = oidc_dtr::ProviderMetadata::from_json(data);
});
