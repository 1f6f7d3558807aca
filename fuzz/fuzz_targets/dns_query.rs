//! A DNS query from a container to its network's responder, and the answer
//! built from it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(q) = berth_net::dns::parse_query(data) {
        let _ = berth_net::dns::response(data, &q, Some([10, 0, 0, 2].into()), 0);
        let _ = berth_net::dns::response(data, &q, None, 3);
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = berth_net::dns::upstreams(s);
        let _ = berth_net::dns::Names::parse(s);
    }
});
