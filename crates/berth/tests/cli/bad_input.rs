//! Bad input: one clear line, a non-zero exit, and the store exactly as it was.

use berth_fixtures::{evil_image, Evil, ESCAPE_FILE_NAME};

use crate::common::*;

#[test]
fn evil_archives_are_rejected_without_a_trace() {
    let env = Env::with_busybox();
    for (kind, needle) in [
        (Evil::DotDot, "escapes"),
        (Evil::AbsSymlinkWriteThrough, "symlink"),
        (Evil::RelSymlinkWriteThrough, "symlink"),
        (Evil::HardlinkOutside, "escapes"),
        (Evil::BadLayerDigest, "digest"),
        (Evil::Truncated, ""),
        (Evil::NotJson, "index.json"),
    ] {
        let name = format!("evil-{kind:?}.tar");
        let tar = berth_fixtures::cached(&fixture_dir(), &name, |p| evil_image(kind, p)).unwrap();
        let before = env.snapshot();
        let r = env.berth(&["image", "import", tar.to_str().unwrap()]);
        r.fails_with(needle);
        before.assert_same(&env.snapshot(), &format!("{kind:?}"));
        assert!(
            !std::path::Path::new("/tmp").join(ESCAPE_FILE_NAME).exists(),
            "{kind:?} escaped"
        );
    }
    let images = env.berth(&["images", "-q"]).ok().stdout;
    assert_eq!(images.lines().count(), 1);
}

#[test]
fn bad_commands_fail_cleanly() {
    let env = Env::with_busybox();
    let before = env.snapshot();
    env.berth(&["run", "--rm", "--pull", "never", "nosuchimage"])
        .fails_with("no such image: nosuchimage");
    env.berth(&["run", "--bogus-flag", "busybox"])
        .fails_with("--bogus-flag");
    env.berth(&["run", "--rm", "-v", "/does/not/exist:/x", "busybox", "true"])
        .fails_with("/does/not/exist does not exist");
    env.berth(&["run", "--rm", "--memory", "1k", "busybox", "true"])
        .fails_with("below the minimum");
    env.berth(&["run", "--rm", "--memory", "lots", "busybox", "true"])
        .fails_with("invalid memory limit");
    env.berth(&["run", "--rm", "-u", "nobody2", "busybox", "true"])
        .fails_with("unable to find user nobody2");
    env.berth(&["run", "--rm", "Bad:Name:x"])
        .fails_with("invalid reference format");
    env.berth(&["image", "import", "/does/not/exist.tar"])
        .fails_with("cannot open /does/not/exist.tar");
    env.berth(&["rm", "nosuch"])
        .fails_with("no such container: nosuch");
    env.berth(&["rmi", "nosuch"])
        .fails_with("no such image: nosuch");
    env.berth(&["run", "--name", "bad/name", "busybox", "true"])
        .fails_with("invalid container name");
    let junk = env.dir.path().join("junk.tar");
    std::fs::write(&junk, b"this is not a tar file at all").unwrap();
    env.berth(&["image", "import", junk.to_str().unwrap()])
        .fails_with("");
    before.assert_same(&env.snapshot(), "bad commands");
    let r = env.berth(&["run", "--rm", "busybox", "nope"]);
    assert_eq!(r.code, 127);
    before.assert_same(&env.snapshot(), "a missing command");
}
