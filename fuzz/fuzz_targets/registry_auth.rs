//! A registry's `WWW-Authenticate` challenge and a token server's answer.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = berth_registry::parse_challenge(s);
        let _ = berth_registry::Credentials::decode(s);
    }
    let _ = berth_registry::parse_token("fuzz", data);
});
