//! A registry's manifest or index (with the Content-Type it claimed) and a
//! `--platform` value; the platform selection over what parsed.
#![no_main]

use libfuzzer_sys::fuzz_target;

const TYPES: &[Option<&str>] = &[
    None,
    Some("application/vnd.oci.image.manifest.v1+json"),
    Some("application/vnd.oci.image.index.v1+json"),
    Some("application/vnd.docker.distribution.manifest.v2+json"),
    Some("application/vnd.docker.distribution.manifest.list.v2+json"),
    Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let ct = TYPES[pick as usize % TYPES.len()];
    let _ = berth_registry::manifest::parse("fuzz", rest, ct);
    if let Ok(s) = std::str::from_utf8(rest) {
        let _ = berth_registry::Platform::parse(s);
    }
});
