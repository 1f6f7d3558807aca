//! Option values a client sends: `-p`, `-v`, `--memory`/`--log-opt
//! max-size`, `--restart`, image references.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = berth_net::ports::PortSpec::parse(s);
    let _ = berth_net::ports::parse_exposed(s);
    let _ = berth_engine::flags::parse_bytes(s);
    let _ = berth_engine::flags::parse_volume(s);
    let _ = berth_engine::config::RestartPolicy::parse(s);
    let _ = berth_engine::reference::Reference::parse(s);
});
