//! `-v` of `--isolation vm`: host directories served by virtiofsd, one per
//! directory, read-only ones through a read-only bind mount of its own.

use crate::common::*;
use crate::vm::{processes_naming, run, vm, vms_available, warm_caches};

#[test]
fn vm_volumes_share_host_directories_and_ro_holds() {
    if !vms_available() {
        return;
    }
    let env = Env::with_busybox();
    let rw = env.dir.path().join("rw-vol");
    let ro = env.dir.path().join("ro-vol");
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::write(rw.join("in.txt"), "from the host\n").unwrap();
    std::fs::write(ro.join("keep.txt"), "read only\n").unwrap();
    let out = run(
        &mut vm(&env),
        &[
            "run",
            "--rm",
            "--isolation",
            "vm",
            "-v",
            &format!("{}:/data", rw.display()),
            "-v",
            &format!("{}:/ro:ro", ro.display()),
            "busybox",
            "sh",
            "-c",
            "cat /data/in.txt /ro/keep.txt; echo from the guest > /data/out.txt; \
             echo x > /ro/new.txt || echo refused; rm /ro/keep.txt 2>/dev/null || echo kept",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "from the host\nread only\nrefused\nkept\n");
    assert!(
        out.stderr.contains("Read-only file system"),
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read_to_string(rw.join("out.txt")).unwrap(),
        "from the guest\n"
    );
    assert!(!ro.join("new.txt").exists());
    assert!(ro.join("keep.txt").exists());
    let store = env.dir.path().display().to_string();
    assert!(
        processes_naming(&store).is_empty(),
        "virtiofsd or QEMU outlived the VM"
    );
}

#[test]
fn vm_volume_without_virtiofsd_is_refused_cleanly() {
    if !vms_available() {
        return;
    }
    let env = Env::with_busybox();
    warm_caches(&env);
    let before = env.snapshot();
    let dir = env.dir.path().join("vol");
    std::fs::create_dir_all(&dir).unwrap();
    run(
        vm(&env).env("BERTH_VIRTIOFSD", env.dir.path().join("no-virtiofsd")),
        &[
            "run",
            "--rm",
            "--isolation",
            "vm",
            "-v",
            &format!("{}:/data", dir.display()),
            "busybox",
            "true",
        ],
    )
    .fails_with("BERTH_VIRTIOFSD names");
    env.snapshot().assert_same(&before, "a refused VM volume");
}
