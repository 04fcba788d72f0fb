//! Redirect (callback) parsing and validation.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    if let Ok(s) = std::str::from_utf8(rest) {
        let _ = oidc_dtr::__fuzz::callback(s, flags & 1 != 0, flags & 2 != 0);
    }
});
