//! The ping receiver's framework-neutral core, `handle_raw`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Layout: method \n content-type \n authorization \n body.
    let mut parts = data.splitn(4, |&b| b == b'\n');
    let method = parts
        .next()
        .and_then(|p| std::str::from_utf8(p).ok())
        .unwrap_or("POST");
    let ct = parts.next().and_then(|p| std::str::from_utf8(p).ok());
    let auth = parts.next().and_then(|p| std::str::from_utf8(p).ok());
    let body = parts.next().unwrap_or(&[]);
    let status = oidc_dtr::__fuzz::ping(method, ct, auth, body);
    assert!(status.is_some(), "handle_raw never waits on this sink");
});
