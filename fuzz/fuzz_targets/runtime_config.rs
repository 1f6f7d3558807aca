//! An OCI runtime bundle's `config.json`, as `berth-runtime create` reads
//! it: parsed, its process checked and planned, the bundle checked.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn bundle() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = tempfile::tempdir().expect("a temporary directory");
        std::fs::create_dir(d.path().join("rootfs")).expect("a rootfs");
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = serde_json::from_slice::<oci_spec::runtime::Spec>(data) else {
        return;
    };
    if let Some(p) = spec.process() {
        let _ = berth_sandbox::check_process(p);
        let _ = berth_sandbox::process::ProcessPlan::from_spec(p);
    }
    let _ = berth_runtime::bundle::check(bundle().path(), &spec);
});
