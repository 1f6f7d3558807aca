//! Pushes: round trips with identical digests, chunked uploads,
//! cross-repository mounts, images imported without a manifest.

use berth_fixtures::{Compression, Format};

use super::harness::{berth, berth_with, Mode, Registry};
use super::proxy::{Fault, Proxy};
use crate::common::*;

fn inspect(env: &Env, name: &str) -> serde_json::Value {
    let out = berth(env, &["image", "inspect", name]).ok().stdout;
    serde_json::from_str::<serde_json::Value>(&out).unwrap()[0].clone()
}

#[test]
fn push_then_pull_round_trip_with_identical_digests() {
    let reg = Registry::start(Mode::Plain);
    let env = Env::new();
    berth(&env, &["image", "import", layered_tar().to_str().unwrap()]).ok();
    let name = reg.name("team/app:v1");
    berth(&env, &["tag", "layered", &name]).ok();
    let out = berth(&env, &["push", &name]).ok().stdout;
    let local = inspect(&env, &name);
    let manifest_digest = local["RepoDigests"][0].as_str().unwrap().to_owned();
    assert_eq!(reg.digest("team/app", "v1"), manifest_digest);
    assert!(out.starts_with(&format!(
        "The push refers to repository [{}]\n",
        reg.name("team/app")
    )));
    assert_eq!(
        out.matches(": Pushed\n").count(),
        4,
        "3 layers and the config: {out}"
    );
    assert!(
        out.ends_with(&format!("v1: digest: {manifest_digest} size: 713\n")),
        "{out}"
    );

    let env2 = Env::new();
    berth(&env2, &["pull", "-q", &name]).ok();
    let pulled = inspect(&env2, &name);
    assert_eq!(pulled["Id"], local["Id"]);
    assert_eq!(pulled["RepoDigests"][0], manifest_digest.as_str());
    assert_eq!(pulled["RootFS"], local["RootFS"]);
    let run = berth(&env2, &["run", "--rm", &name, "cat", "/data/b"]).ok();
    assert_eq!(run.stdout, "b v2\n");

    // A peer reads what berth pushed.
    let dir = env.dir.path().join("oci-copy");
    let out = std::process::Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{name}"))
        .arg(format!("oci:{}:v1", dir.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Pushing again uploads nothing.
    let again = berth(&env, &["push", &name]).ok().stdout;
    assert_eq!(
        again.matches(": Layer already exists\n").count(),
        4,
        "{again}"
    );
}

#[test]
fn chunked_uploads_and_cross_repository_mounts() {
    let reg = Registry::start(Mode::Plain);
    let proxy = Proxy::start(
        reg.port,
        Fault::Status {
            status: 500,
            times: 0,
        },
    );
    let env = Env::with_busybox();
    let a = proxy.name("first/bb:v1");
    berth(&env, &["tag", "busybox", &a]).ok();
    let chunk_size = [("BERTH_PUSH_CHUNK_SIZE", "65536")];
    let out = berth_with(&env, &["push", &a], &chunk_size, None)
        .ok()
        .stdout;
    assert_eq!(out.matches(": Pushed\n").count(), 2, "{out}");
    let patches = proxy
        .requests()
        .iter()
        .filter(|r| r.starts_with("PATCH /v2/first/bb/blobs/uploads/"))
        .count();
    assert!(
        patches > 10,
        "a ~1 MB layer in 64 KiB chunks: {patches} PATCHes"
    );

    let b = proxy.name("second/bb:v2");
    berth(&env, &["tag", "busybox", &b]).ok();
    let out = berth(&env, &["push", &b]).ok().stdout;
    assert_eq!(out.matches(": Mounted from first/bb\n").count(), 2, "{out}");
    assert!(proxy
        .requests()
        .iter()
        .any(|r| r.contains("mount=sha256:") && r.contains("from=first/bb")));
    assert_eq!(reg.digest("first/bb", "v1"), reg.digest("second/bb", "v2"));

    let env2 = Env::new();
    berth(&env2, &["pull", "-q", &reg.name("second/bb:v2")]).ok();
    assert_eq!(
        berth(
            &env2,
            &["run", "--rm", &reg.name("second/bb:v2"), "echo", "mounted"]
        )
        .ok()
        .stdout,
        "mounted\n"
    );
}

#[test]
fn images_imported_without_a_manifest_are_pushed_with_one() {
    let reg = Registry::start(Mode::Plain);
    let env = Env::new();
    let tar = image_tar(
        "docker-none.tar",
        spec("k/docker-none:v1", Format::DockerSave, Compression::None),
    );
    berth(&env, &["image", "import", tar.to_str().unwrap()]).ok();
    let name = reg.name("saved:v1");
    berth(&env, &["tag", "k/docker-none:v1", &name]).ok();
    berth(&env, &["push", "-q", &name]).ok();
    let (status, head, body) = reg.get(
        "/v2/saved/manifests/v1",
        "application/vnd.oci.image.manifest.v1+json",
    );
    assert_eq!(status, 200, "{head}");
    let m: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar"
    );
    let env2 = Env::new();
    berth(&env2, &["pull", "-q", &name]).ok();
    assert_eq!(
        inspect(&env2, &name)["Id"],
        inspect(&env, "k/docker-none:v1")["Id"]
    );
    assert_eq!(
        berth(&env2, &["run", "--rm", &name, "echo", "saved"])
            .ok()
            .stdout,
        "saved\n"
    );
}

#[test]
fn push_refuses_what_it_cannot_push() {
    let reg = Registry::start(Mode::Plain);
    let env = Env::with_busybox();
    berth(&env, &["push", &reg.name("nothing:v1")]).fails_with("no such image");
    let digest = format!("{}@sha256:{}", reg.name("bb"), "a".repeat(64));
    berth(&env, &["push", &digest]).fails_with("cannot push a digest reference");
    berth(&env, &["push", "Bad Name"]).fails_with("invalid reference format");
    // Nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let name = format!("127.0.0.1:{port}/bb:v1");
    berth(&env, &["tag", "busybox", &name]).ok();
    berth(&env, &["push", &name]).fails_with(&format!("cannot reach registry 127.0.0.1:{port}"));
}
