//! Store record decoding: a record's JSON (public `Record`), and opening a
//! sealed record.
#![no_main]
use libfuzzer_sys::fuzz_target;
use oidc_dtr::store::{AesGcmSealer, Record, Sealer};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = serde_json::from_slice::<Record>(data) {
        let _ = serde_json::to_vec(&r).unwrap();
    }
    let sealer = AesGcmSealer::new([7u8; 32]).unwrap();
    let _ = sealer.open(data, b"record-key");
});
