//! `berth image import` of an archive: docker-save and OCI layouts, with
//! their manifests, index, image config JSON and layers (plain tar; the
//! compression detection runs too).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn store() -> &'static (tempfile::TempDir, berth_image::Store) {
    static STORE: OnceLock<(tempfile::TempDir, berth_image::Store)> = OnceLock::new();
    STORE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = berth_image::Store::open(dir.path()).expect("a store");
        (dir, store)
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = store().1.import(data);
});
