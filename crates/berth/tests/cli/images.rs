//! Image import, listing, tags, removal, and layer unpack semantics.

use berth_fixtures::{Compression, Format};

use crate::common::*;

#[test]
fn imports_every_archive_kind() {
    let env = Env::new();
    for (name, format, comp) in [
        ("oci-gzip", Format::Oci, Compression::Gzip),
        ("oci-zstd", Format::Oci, Compression::Zstd),
        ("oci-none", Format::Oci, Compression::None),
        ("docker-none", Format::DockerSave, Compression::None),
        ("docker-gzip", Format::DockerSave, Compression::Gzip),
    ] {
        let tar = image_tar(
            &format!("{name}.tar"),
            spec(&format!("k/{name}:v1"), format, comp),
        );
        let out = env.berth(&["image", "import", tar.to_str().unwrap()]).ok();
        assert_eq!(out.stdout.trim(), format!("Loaded image: k/{name}:v1"));
        let run = env
            .berth(&["run", "--rm", &format!("k/{name}:v1"), "echo", name])
            .ok();
        assert_eq!(run.stdout.trim(), name);
    }
    let images = env.berth(&["images"]).ok().stdout;
    assert_eq!(images.lines().count(), 6, "{images}");
    assert!(images.starts_with("REPOSITORY"));
}

#[test]
fn import_from_stdin_and_idempotent() {
    let env = Env::new();
    let tar = std::fs::File::open(busybox_tar()).unwrap();
    let out = env
        .cmd()
        .args(["image", "import", "-"])
        .stdin(tar)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = env.snapshot();
    env.berth(&["image", "import", busybox_tar().to_str().unwrap()])
        .ok();
    before.assert_same(&env.snapshot(), "a second import");
}

#[test]
fn layers_are_shared_between_images() {
    let env = Env::with_busybox();
    env.berth(&["image", "import", layered_tar().to_str().unwrap()])
        .ok();
    let layers = std::fs::read_dir(env.root().join("image/layers"))
        .unwrap()
        .count();
    // busybox's one layer is also the layered image's first.
    assert_eq!(layers, 3);
}

#[test]
fn whiteouts_and_metadata_survive_unpack_and_overlay() {
    let env = Env::new();
    env.berth(&["image", "import", layered_tar().to_str().unwrap()])
        .ok();
    let script = r#"
        test ! -e /data/a && echo a-gone
        cat /data/b
        ls /data/sub
        readlink /data/link; cat /data/link
        test -p /data/fifo && echo fifo
        test ! -e /etc/removed.conf && echo removed-gone
        stat -c '%a %u:%g' /usr/local/bin/suid /home/app
        ls /data/ | grep -c wh || true
    "#;
    let out = env
        .berth(&["run", "--rm", "layered", "sh", "-c", script])
        .ok()
        .stdout;
    assert_eq!(
        out,
        "a-gone\nb v2\ny\n/data/b\nb v2\nfifo\nremoved-gone\n4755 0:0\n755 1000:1000\n0\n",
    );
}

#[test]
fn tag_inspect_and_rmi() {
    let env = Env::with_busybox();
    env.berth(&["tag", "busybox", "example.com/team/bb:1.0"])
        .ok();
    let images = env.berth(&["images"]).ok().stdout;
    assert!(images.contains("example.com/team/bb   1.0"), "{images}");
    let inspect: serde_json::Value =
        serde_json::from_str(&env.berth(&["image", "inspect", "busybox"]).ok().stdout).unwrap();
    let id = inspect[0]["Id"].as_str().unwrap().to_string();
    assert!(id.starts_with("sha256:"));
    assert_eq!(inspect[0]["Config"]["Cmd"][0], "sh");
    // Two names: removing by one only untags.
    let out = env.berth(&["rmi", "example.com/team/bb:1.0"]).ok().stdout;
    assert_eq!(out.trim(), "Untagged: example.com/team/bb:1.0");
    // In use by a container: refused, then forced.
    env.berth(&["create", "--name", "user", "busybox", "true"])
        .ok();
    env.berth(&["rmi", "busybox"])
        .fails_with("being used by container");
    env.berth(&["rm", "user"]).ok();
    let out = env.berth(&["rmi", "busybox"]).ok().stdout;
    assert!(
        out.contains("Untagged: busybox:latest") && out.contains(&format!("Deleted: {id}")),
        "{out}"
    );
    assert_eq!(
        std::fs::read_dir(env.root().join("image/layers"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(env.berth(&["images", "-q"]).ok().stdout, "");
}
