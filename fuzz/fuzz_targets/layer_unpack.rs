//! A layer tarball from an image or a registry: unpacked into a fresh
//! directory; whatever it holds, an error or a tree below that directory,
//! never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let dest = dir.path().join("layer");
    std::fs::create_dir(&dest).expect("the layer directory");
    let _ = berth_image::unpack_layer(data, &dest);
});
