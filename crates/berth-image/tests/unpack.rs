//! Layer unpack: semantics (whiteouts, metadata, replacement) and attacks.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use berth_image::{read_xattr, unpack_layer, unpack_layer_digest, ImageError, OPAQUE_XATTR};
use common::{compress, listing, sha256, Comp, Tar};
use tar::EntryType;

fn unpack(
    tar: &[u8],
) -> (
    tempfile::TempDir,
    Result<berth_image::UnpackReport, ImageError>,
) {
    let tmp = tempfile::tempdir().unwrap();
    let res = unpack_layer(tar, &tmp.path().join("layer"));
    (tmp, res)
}

#[test]
fn whiteouts_become_chardevs_and_opaque_xattrs() {
    let mut t = Tar::new();
    t.dir("etc/", 0o755)
        .file("etc/.wh.motd", 0o644, b"")
        .dir("var/cache/", 0o755)
        .file("var/cache/.wh..wh..opq", 0o644, b"")
        .file(".wh.gone", 0o644, b"");
    let (tmp, res) = unpack(&t.finish());
    res.unwrap();
    let l = tmp.path().join("layer");
    for w in [l.join("etc/motd"), l.join("gone")] {
        let m = fs::symlink_metadata(&w).unwrap();
        assert!(m.file_type().is_char_device(), "{w:?}");
        assert_eq!(m.rdev(), 0);
    }
    assert_eq!(
        read_xattr(&l.join("var/cache"), OPAQUE_XATTR)
            .unwrap()
            .as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(read_xattr(&l.join("etc"), OPAQUE_XATTR).unwrap(), None);
    assert!(!l.join("etc/.wh.motd").exists());
    assert!(fs::symlink_metadata(l.join("var/cache/.wh..wh..opq")).is_err());
}

#[test]
fn a_file_in_the_same_layer_wins_over_its_whiteout() {
    let mut t = Tar::new();
    t.file("a", 0o644, b"kept")
        .file(".wh.a", 0o644, b"")
        .file(".wh.b", 0o644, b"")
        .file("b", 0o644, b"later");
    let (tmp, res) = unpack(&t.finish());
    res.unwrap();
    assert_eq!(fs::read(tmp.path().join("layer/a")).unwrap(), b"kept");
    assert_eq!(fs::read(tmp.path().join("layer/b")).unwrap(), b"later");
}

#[test]
fn metadata_links_devices_and_xattrs() {
    let mut t = Tar::new();
    t.entry_full(
        EntryType::Directory,
        b"./",
        b"",
        0o750,
        0,
        0,
        1_500_000_000,
        b"",
    );
    t.entry_full(
        EntryType::Directory,
        b"./usr/bin/",
        b"",
        0o755,
        0,
        0,
        1_400_000_000,
        b"",
    );
    t.entry_full(
        EntryType::Regular,
        b"./usr/bin/su",
        b"",
        0o4755,
        1000,
        1001,
        1_300_000_000,
        b"#!su",
    );
    t.entry_full(
        EntryType::Regular,
        b"./usr/bin/wall",
        b"",
        0o2755,
        0,
        5,
        1_300_000_000,
        b"w",
    );
    t.entry_full(
        EntryType::Directory,
        b"./tmp/",
        b"",
        0o1777,
        0,
        0,
        1_200_000_000,
        b"",
    );
    t.hardlink("usr/bin/su2", "./usr/bin/su");
    t.entry_full(
        EntryType::Symlink,
        b"abs",
        b"/etc/passwd",
        0o777,
        7,
        8,
        1_100_000_000,
        b"",
    );
    t.symlink("rel", "../../x");
    t.entry(EntryType::Fifo, "fifo", "", 0o640, b"");
    t.device(EntryType::Char, "null", 1, 3);
    t.pax(&[
        ("SCHILY.xattr.user.color", b"blue"),
        ("SCHILY.xattr.trusted.berth", b"t"),
        ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
        ("mtime", b"1234567890.5"),
    ]);
    t.file("xattrs", 0o600, b"x");
    t.pax(&[("SCHILY.xattr.trusted.link", b"l")]);
    t.symlink("xlink", "xattrs");
    let (tmp, res) = unpack(&t.finish());
    let report = res.unwrap();
    let l = tmp.path().join("layer");
    let meta = |p: &str| fs::symlink_metadata(l.join(p)).unwrap();

    let su = meta("usr/bin/su");
    assert_eq!(
        (su.mode() & 0o7777, su.uid(), su.gid()),
        (0o4755, 1000, 1001)
    );
    assert_eq!(su.mtime(), 1_300_000_000);
    assert_eq!(meta("usr/bin/wall").mode() & 0o7777, 0o2755);
    assert_eq!(meta("usr/bin/su2").ino(), su.ino());
    assert_eq!(su.nlink(), 2);
    assert_eq!(meta("tmp").mode() & 0o7777, 0o1777);
    // Directory mtimes survive the creation of their children.
    assert_eq!(meta("usr/bin").mtime(), 1_400_000_000);
    assert_eq!(meta("").mode() & 0o7777, 0o750);
    assert_eq!(meta("").mtime(), 1_500_000_000);

    assert_eq!(
        fs::read_link(l.join("abs")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_eq!(fs::read_link(l.join("rel")).unwrap(), Path::new("../../x"));
    let abs = meta("abs");
    assert_eq!((abs.uid(), abs.gid(), abs.mtime()), (7, 8, 1_100_000_000));

    let fifo = meta("fifo");
    assert!(fifo.file_type().is_fifo());
    assert_eq!(fifo.mode() & 0o7777, 0o640);
    let null = meta("null");
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));

    let x = l.join("xattrs");
    assert_eq!(
        read_xattr(&x, "user.color").unwrap().as_deref(),
        Some(&b"blue"[..])
    );
    assert_eq!(
        read_xattr(&x, "trusted.berth").unwrap().as_deref(),
        Some(&b"t"[..])
    );
    assert_eq!(read_xattr(&x, OPAQUE_XATTR).unwrap(), None);
    assert_eq!(meta("xattrs").mtime(), 1_234_567_890);
    assert_eq!(meta("xattrs").mtime_nsec(), 500_000_000);
    assert_eq!(
        read_xattr(&l.join("xlink"), "trusted.link")
            .unwrap()
            .as_deref(),
        Some(&b"l"[..])
    );
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("trusted.overlay.opaque")),
        "{report:?}"
    );
    assert_eq!(report.size, 4 + 1 + 1);
}

#[test]
fn later_entries_replace_earlier_ones() {
    let mut t = Tar::new();
    t.file("f", 0o644, b"one").file("f", 0o600, b"two");
    t.dir("d", 0o755)
        .file("d/child", 0o644, b"c")
        .dir("d", 0o700);
    t.dir("gone", 0o755)
        .file("gone/x", 0o644, b"x")
        .file("gone", 0o644, b"now a file");
    t.file("was-file", 0o644, b"x")
        .dir("was-file", 0o711)
        .file("was-file/y", 0o644, b"y");
    t.symlink("s", "/nowhere").file("s", 0o644, b"not a link");
    let (tmp, res) = unpack(&t.finish());
    res.unwrap();
    let l = tmp.path().join("layer");
    assert_eq!(fs::read(l.join("f")).unwrap(), b"two");
    assert_eq!(fs::metadata(l.join("f")).unwrap().mode() & 0o777, 0o600);
    assert_eq!(fs::read(l.join("d/child")).unwrap(), b"c");
    assert_eq!(fs::metadata(l.join("d")).unwrap().mode() & 0o777, 0o700);
    assert_eq!(fs::read(l.join("gone")).unwrap(), b"now a file");
    assert_eq!(
        fs::metadata(l.join("was-file")).unwrap().mode() & 0o777,
        0o711
    );
    assert_eq!(fs::read(l.join("was-file/y")).unwrap(), b"y");
    assert!(fs::symlink_metadata(l.join("s")).unwrap().is_file());
}

#[test]
fn compressed_layers_and_digest() {
    let mut t = Tar::new();
    t.dir("a/", 0o755).file("a/b", 0o644, &vec![42u8; 300_000]);
    let tar = t.finish();
    for c in [Comp::None, Comp::Gzip, Comp::Zstd] {
        let tmp = tempfile::tempdir().unwrap();
        let (report, digest) =
            unpack_layer_digest(&compress(&tar, c)[..], &tmp.path().join("l")).unwrap();
        assert_eq!(digest, sha256(&tar), "{c:?}");
        assert_eq!(report.size, 300_000);
        assert_eq!(fs::read(tmp.path().join("l/a/b")).unwrap().len(), 300_000);
    }
}

#[test]
fn long_names_via_pax() {
    let long = format!("{}/file", "d".repeat(150));
    let mut t = Tar::new();
    t.pax(&[("path", long.as_bytes())]);
    t.file("short-placeholder", 0o644, b"long");
    let (tmp, res) = unpack(&t.finish());
    res.unwrap();
    assert_eq!(
        fs::read(tmp.path().join("layer").join(&long)).unwrap(),
        b"long"
    );
}

/// Runs an attack layer; checks the error and that `outside` is unchanged.
fn attack(build: impl FnOnce(&mut Tar, &Path), check: impl FnOnce(&ImageError)) {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("secret"), b"secret").unwrap();
    let before = listing(tmp.path());
    let mut t = Tar::new();
    build(&mut t, &outside);
    let err = unpack_layer(&t.finish()[..], &tmp.path().join("layer")).unwrap_err();
    check(&err);
    assert_eq!(
        listing(&outside),
        vec![format!("secret file {} 100644 0:0", sha256(b"secret"))]
    );
    let after: Vec<_> = listing(tmp.path())
        .into_iter()
        .filter(|l| !l.starts_with("layer"))
        .collect();
    assert_eq!(before, after);
    assert_eq!(err.to_string().lines().count(), 1);
}

#[test]
fn dotdot_is_refused() {
    for name in [
        "../outside/evil",
        "a/../../outside/evil",
        "/../outside/evil",
    ] {
        attack(
            |t, _| {
                t.file(name, 0o644, b"evil");
            },
            |e| match e {
                ImageError::EntryEscapes { entry } => assert_eq!(entry, name),
                e => panic!("{e}"),
            },
        );
    }
}

#[test]
fn writing_through_symlinks_is_refused() {
    for (target, via) in [
        ("ABS", "evil/evil"),
        ("../outside", "evil/evil"),
        (".", "evil/evil"),
    ] {
        attack(
            |t, outside| {
                let target = target.replace("ABS", outside.to_str().unwrap());
                t.symlink("evil", &target).file(via, 0o644, b"evil");
            },
            |e| {
                assert!(
                    matches!(e, ImageError::EntryThroughSymlink { entry } if entry == via),
                    "{e}"
                );
                assert_eq!(
                    e.to_string(),
                    format!("layer entry {via:?} goes through a symlink")
                );
            },
        );
    }
    // Deeper: the symlink is a middle component, created parent dirs too.
    attack(
        |t, outside| {
            t.dir("a/", 0o755)
                .symlink("a/b", outside.to_str().unwrap())
                .file("a/b/c/d", 0o644, b"x");
        },
        |e| assert!(matches!(e, ImageError::EntryThroughSymlink { .. }), "{e}"),
    );
    // A dir replaced by a symlink after its fd was cached.
    attack(
        |t, outside| {
            t.dir("d/", 0o755)
                .file("d/x", 0o644, b"x")
                .symlink("d", outside.to_str().unwrap())
                .file("d/y", 0o644, b"y");
        },
        |e| assert!(matches!(e, ImageError::EntryThroughSymlink { .. }), "{e}"),
    );
}

#[test]
fn final_symlink_is_replaced_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs::write(&outside, b"secret").unwrap();
    let mut t = Tar::new();
    t.symlink("f", outside.to_str().unwrap())
        .file("f", 0o644, b"evil");
    t.symlink("d", outside.to_str().unwrap()).dir("d", 0o755);
    unpack_layer(&t.finish()[..], &tmp.path().join("layer")).unwrap();
    assert_eq!(fs::read(&outside).unwrap(), b"secret");
    assert_eq!(fs::read(tmp.path().join("layer/f")).unwrap(), b"evil");
    assert!(fs::symlink_metadata(tmp.path().join("layer/d"))
        .unwrap()
        .is_dir());
}

#[test]
fn hardlinks_out_of_the_layer_are_refused() {
    attack(
        |t, _| {
            t.hardlink("h", "../outside/secret");
        },
        |e| match e {
            ImageError::HardlinkEscapes { entry, target } => {
                assert_eq!(
                    (entry.as_str(), target.as_str()),
                    ("h", "../outside/secret")
                )
            }
            e => panic!("{e}"),
        },
    );
    attack(
        |t, outside| {
            t.symlink("s", outside.to_str().unwrap())
                .hardlink("h", "s/secret");
        },
        |e| {
            assert!(
                matches!(e, ImageError::HardlinkThroughSymlink { .. }),
                "{e}"
            )
        },
    );
    attack(
        |t, _| {
            t.symlink("s", "../outside").hardlink("h", "s/secret");
        },
        |e| {
            assert!(
                matches!(e, ImageError::HardlinkThroughSymlink { .. }),
                "{e}"
            )
        },
    );
    attack(
        |t, _| {
            t.hardlink("h", "missing");
        },
        |e| assert!(matches!(e, ImageError::BadEntry { .. }), "{e}"),
    );
}

#[test]
fn hardlink_to_a_symlink_links_the_symlink_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let mut t = Tar::new();
    t.symlink("s", "/etc/passwd").hardlink("h", "s");
    unpack_layer(&t.finish()[..], &tmp.path().join("layer")).unwrap();
    let h = fs::symlink_metadata(tmp.path().join("layer/h")).unwrap();
    assert!(h.file_type().is_symlink());
}

#[test]
fn truncated_layer_is_corrupt() {
    let mut t = Tar::new();
    t.file("big", 0o644, &vec![1u8; 100_000]);
    let tar = t.finish();
    for c in [Comp::None, Comp::Gzip, Comp::Zstd] {
        let data = compress(&tar, c);
        let (_, res) = unpack(&data[..data.len() / 2]);
        assert!(matches!(res, Err(ImageError::Corrupt(_))), "{c:?}: {res:?}");
    }
}

#[test]
fn read_only_directories_do_not_block_unpack_or_removal() {
    let store_dir = tempfile::tempdir().unwrap();
    let store = berth_image::Store::open(store_dir.path()).unwrap();
    let mut t = Tar::new();
    t.dir("ro/", 0o500)
        .dir("ro/sub/", 0o000)
        .file("ro/sub/f", 0o000, b"x");
    let tar = t.finish();
    let img = common::Image::new(vec![common::Layer::new(tar, Comp::Gzip)], "sh");
    let diff_id = img.layers[0].diff_id();
    store
        .import(&common::Oci::new(&[img]).archive(Comp::None)[..])
        .unwrap();
    let p = store.layer_path(&diff_id);
    assert_eq!(
        fs::metadata(p.join("ro/sub")).unwrap().permissions().mode() & 0o777,
        0
    );
    store.remove_layer(&diff_id).unwrap();
    assert!(!store.has_layer(&diff_id));
    assert!(!p.exists());
    assert_eq!(
        fs::read_dir(store_dir.path().join("tmp")).unwrap().count(),
        0
    );
    store.remove_layer(&diff_id).unwrap();
}

#[test]
fn deep_trees_unpack_and_remove() {
    // 1900 levels of "d/": a 3800-byte path, near PATH_MAX.
    let deep = "d/".repeat(1900);
    let mut t = Tar::new();
    t.pax(&[("path", format!("{deep}f").as_bytes())]);
    t.file("placeholder", 0o644, b"deep");
    t.pax(&[("path", format!("{}x", "e/".repeat(2100)).as_bytes())]);
    t.file("placeholder", 0o644, b"too deep");
    let store_dir = tempfile::tempdir().unwrap();
    let store = berth_image::Store::open(store_dir.path()).unwrap();
    let tar = t.finish();
    let img = common::Image::new(vec![common::Layer::new(tar, Comp::None)], "sh");
    let err = store
        .import(&common::Oci::new(&[img]).archive(Comp::None)[..])
        .unwrap_err();
    assert!(
        err.to_string().contains("path is longer than 4095 bytes"),
        "{err}"
    );
    assert_eq!(
        fs::read_dir(store_dir.path().join("tmp")).unwrap().count(),
        0
    );
    assert_eq!(
        fs::read_dir(store_dir.path().join("layers"))
            .unwrap()
            .count(),
        0
    );

    let mut t = Tar::new();
    t.pax(&[("path", format!("{deep}f").as_bytes())]);
    t.file("placeholder", 0o644, b"deep");
    let img = common::Image::new(vec![common::Layer::new(t.finish(), Comp::None)], "sh");
    let diff_id = img.layers[0].diff_id();
    store
        .import(&common::Oci::new(&[img]).archive(Comp::None)[..])
        .unwrap();
    let p = store.layer_path(&diff_id).join(format!("{deep}f"));
    assert_eq!(fs::read(p).unwrap(), b"deep");
    store.remove_layer(&diff_id).unwrap();
    assert!(!store.has_layer(&diff_id));
    assert_eq!(
        fs::read_dir(store_dir.path().join("tmp")).unwrap().count(),
        0
    );
}
