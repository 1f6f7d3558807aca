//! Pulls: by tag and digest, Docker schema 2 and OCI, multi-platform
//! indexes, layer reuse, the pull policy of run/create, progress output.

use berth_fixtures::{Compression, Format};

use super::harness::{berth, staging_leftovers, Mode, Registry};
use super::multiarch_tar;
use crate::common::*;

fn oci(path: &std::path::Path) -> String {
    format!("oci-archive:{}", path.display())
}

#[test]
fn pull_by_tag_and_by_digest() {
    let reg = Registry::start(Mode::Plain);
    reg.skopeo_copy(&oci(&busybox_tar()), "team/bb:v1", false);
    let name = reg.name("team/bb:v1");

    let env = Env::new();
    let out = berth(&env, &["pull", &name]).ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "v1: Pulling from team/bb", "{}", out.stdout);
    assert!(lines[1].ends_with(": Pull complete"), "{}", out.stdout);
    let digest = reg.digest("team/bb", "v1");
    assert!(
        out.stdout.contains(&format!("Digest: {digest}\n")),
        "{}",
        out.stdout
    );
    assert!(out
        .stdout
        .contains(&format!("Status: Downloaded newer image for {name}\n")));
    assert_eq!(lines.last().unwrap(), &name);
    assert_eq!(
        berth(&env, &["run", "--rm", &name, "echo", "ok"])
            .ok()
            .stdout,
        "ok\n"
    );
    assert!(staging_leftovers(&env).is_empty());
    // Again: nothing to fetch.
    let again = berth(&env, &["pull", &name]).ok().stdout;
    assert!(again.contains(": Already exists\n"), "{again}");
    assert!(again.contains("Status: Image is up to date for"), "{again}");

    // By digest into another store: same image ID; the digest resolves
    // offline afterwards.
    let by_digest = format!("{}@{digest}", reg.name("team/bb"));
    let env2 = Env::new();
    assert_eq!(
        berth(&env2, &["pull", "-q", &by_digest]).ok().stdout,
        format!("{by_digest}\n")
    );
    let id = |e: &Env, n: &str| {
        let v: serde_json::Value =
            serde_json::from_str(&berth(e, &["image", "inspect", n]).ok().stdout).unwrap();
        v[0]["Id"].as_str().unwrap().to_owned()
    };
    assert_eq!(id(&env, &name), id(&env2, &by_digest));
    let run = berth(
        &env2,
        &[
            "run",
            "--rm",
            "--pull",
            "never",
            &by_digest,
            "echo",
            "by-digest",
        ],
    );
    assert_eq!(run.ok().stdout, "by-digest\n");
}

#[test]
fn pulls_docker_schema2_images_pushed_by_skopeo() {
    let reg = Registry::start(Mode::Plain);
    let tar = image_tar(
        "docker-gzip.tar",
        spec("k/docker-gzip:v1", Format::DockerSave, Compression::Gzip),
    );
    reg.skopeo_copy(
        &format!("docker-archive:{}", tar.display()),
        "dock:v1",
        false,
    );
    let (_, head, _) = reg.get(
        "/v2/dock/manifests/v1",
        "application/vnd.docker.distribution.manifest.v2+json",
    );
    assert!(
        head.to_lowercase()
            .contains("content-type: application/vnd.docker.distribution.manifest.v2+json"),
        "{head}"
    );
    let env = Env::new();
    let name = reg.name("dock:v1");
    berth(&env, &["pull", "-q", &name]).ok();
    assert_eq!(
        berth(&env, &["run", "--rm", &name, "echo", "schema2"])
            .ok()
            .stdout,
        "schema2\n"
    );
}

#[test]
fn multi_platform_index_resolves_to_the_platform() {
    let reg = Registry::start(Mode::Plain);
    reg.skopeo_copy(&oci(&multiarch_tar()), "multi:oci", true);
    // The same index as a Docker manifest list.
    let out = std::process::Command::new("skopeo")
        .args([
            "copy",
            "--all",
            "--format",
            "v2s2",
            "--dest-tls-verify=false",
        ])
        .arg(oci(&multiarch_tar()))
        .arg(format!("docker://{}", reg.name("multi:docker")))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    for tag in ["oci", "docker"] {
        let name = reg.name(&format!("multi:{tag}"));
        let env = Env::new();
        berth(&env, &["pull", "-q", &name]).ok();
        let arch = berth(&env, &["run", "--rm", &name, "cat", "/etc/berth-arch"]).ok();
        assert_eq!(arch.stdout, "amd64\n", "default platform from {tag}");

        let env = Env::new();
        berth(&env, &["pull", "-q", "--platform", "linux/arm64", &name]).ok();
        let v: serde_json::Value =
            serde_json::from_str(&berth(&env, &["image", "inspect", &name]).ok().stdout).unwrap();
        assert_eq!(v[0]["Architecture"], "arm64", "{tag}");
        let arch = berth(&env, &["run", "--rm", &name, "cat", "/etc/berth-arch"]).ok();
        assert_eq!(arch.stdout, "arm64\n");

        let before = env.snapshot();
        berth(&env, &["pull", "--platform", "linux/s390x", &name])
            .fails_with("has no image for platform linux/s390x (it has: linux/amd64, linux/arm64)");
        before.assert_same(&env.snapshot(), "a pull for a missing platform");
    }
}

#[test]
fn layers_in_the_store_are_not_fetched_again() {
    let reg = Registry::start(Mode::Plain);
    reg.skopeo_copy(&oci(&layered_tar()), "layered:v1", false);
    let env = Env::with_busybox();
    let out = berth(&env, &["pull", &reg.name("layered:v1")]).ok().stdout;
    assert_eq!(out.matches(": Already exists").count(), 1, "{out}");
    assert_eq!(out.matches(": Pull complete").count(), 2, "{out}");
    let script = "cat /data/b; ls /data/sub";
    let run = berth(
        &env,
        &["run", "--rm", &reg.name("layered:v1"), "sh", "-c", script],
    );
    assert_eq!(run.ok().stdout, "b v2\ny\n");
}

#[test]
fn run_and_create_pull_as_the_policy_says() {
    let reg = Registry::start(Mode::Plain);
    reg.skopeo_copy(&oci(&busybox_tar()), "bb:latest", false);
    let name = reg.name("bb");
    let env = Env::new();
    berth(&env, &["run", "--rm", "--pull", "never", &name, "true"]).fails_with("no such image");
    let out = berth(&env, &["run", "--rm", &name, "echo", "hi"]).ok();
    assert_eq!(out.stdout, "hi\n");
    assert!(
        out.stderr
            .starts_with(&format!("Unable to find image '{name}:latest' locally\n")),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("Status: Downloaded newer image"),
        "{}",
        out.stderr
    );
    // Present: no pull.
    let out = berth(&env, &["run", "--rm", &name, "echo", "hi"]).ok();
    assert_eq!(out.stderr, "");
    let out = berth(&env, &["run", "--rm", "--pull=always", &name, "echo", "hi"]).ok();
    assert_eq!(out.stdout, "hi\n");
    assert!(
        out.stderr.contains("Status: Image is up to date"),
        "{}",
        out.stderr
    );
    berth(&env, &["run", "--rm", "--pull", "sometimes", &name, "true"])
        .fails_with("invalid pull policy");

    let env = Env::new();
    let out = berth(&env, &["create", "--name", "c1", &name, "true"]).ok();
    assert_eq!(out.stdout.trim().len(), 64, "{}", out.stdout);
    berth(&env, &["rm", "c1"]).ok();
}

#[test]
fn progress_per_layer_on_a_tty_and_lines_otherwise() {
    let reg = Registry::start(Mode::Plain);
    reg.skopeo_copy(&oci(&layered_tar()), "layered:v1", false);
    let name = reg.name("layered:v1");
    let env = Env::new();
    // Not a terminal: one line per finished layer.
    let out = berth(&env, &["pull", &name]).ok().stdout;
    assert_eq!(out.matches(": Pull complete\n").count(), 3, "{out}");
    assert!(!out.contains('\x1b'), "{out:?}");
    // A terminal (script(1) gives it one): lines redrawn in place.
    let env = Env::new();
    let cmd = format!("{BERTH} pull {name}");
    let script = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("BERTH_ROOT", env.root())
        .env("BERTH_RUN_ROOT", env.dir.path().join("run"))
        .env("BERTH_AUTH_FILE", env.dir.path().join("auth.json"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&script.stdout);
    assert!(script.status.success(), "{text}");
    assert!(text.contains("\x1b[2K"), "{text:?}");
    assert!(
        text.contains("Waiting") || text.contains("Downloading"),
        "{text:?}"
    );
    assert!(text.matches(": Pull complete").count() >= 3, "{text:?}");
}
