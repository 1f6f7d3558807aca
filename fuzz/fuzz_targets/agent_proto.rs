//! The host<->agent channel, both ends: frames from a hostile guest (what
//! the host decodes) and from a broken host (what the agent decodes), fed
//! in arbitrary pieces; every message type's payload parsed.
#![no_main]

use berth_vm::proto::{self, Decoder, Frame};
use libfuzzer_sys::fuzz_target;

fn payloads(f: &Frame) {
    // The host's side.
    let _ = proto::check_hello(f);
    let _ = f.parse::<proto::Started>();
    let _ = f.parse::<proto::Exited>();
    let _ = f.parse::<proto::Failed>();
    let _ = f.parse::<proto::Stats>();
    let _ = f.parse::<proto::Top>();
    // The agent's side.
    let _ = f.parse::<proto::Start>();
    let _ = f.parse::<proto::Exec>();
    let _ = f.parse::<proto::Signal>();
    let _ = f.parse::<proto::Resize>();
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let mut d = Decoder::default();
    let step = (cut as usize % 16) + 1;
    for piece in rest.chunks(step) {
        d.push(piece);
        loop {
            match d.next_frame() {
                Ok(Some(f)) => payloads(&f),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
