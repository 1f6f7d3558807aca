//! Bad input: one clear line on stderr (and a JSON line in `--log`), a
//! non-zero exit, and no state left behind.

use serde_json::json;

use crate::common::*;

/// Nothing of container `id` is left: no state directory, no cgroup.
#[track_caller]
fn nothing_left(env: &Env, id: &str, bundle_name: &str) {
    assert!(!env.root().join(id).exists(), "state of {id} left behind");
    for d in env.cgroup_dirs() {
        assert!(
            !d.join(bundle_name).exists(),
            "cgroup {} left behind",
            d.display()
        );
    }
}

#[test]
fn missing_or_invalid_config_names_the_bundle_and_field() {
    let env = Env::new();
    let empty = env.dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    env.rt(&["create", "--bundle", empty.to_str().unwrap(), "x1"])
        .fails_with(&[empty.to_str().unwrap(), "config.json", "No such file"]);
    nothing_left(&env, "x1", "empty");

    let b = env.bundle("b", &["true"], |_| {});
    std::fs::write(
        b.join("config.json"),
        "{\"ociVersion\": \"1.0.2\", \"process\": {\"cwd\": \"/\"}}",
    )
    .unwrap();
    env.create("x2", &b, &[])
        .fails_with(&[b.to_str().unwrap(), "missing field `user`"]);
    nothing_left(&env, "x2", "b");

    std::fs::write(b.join("config.json"), "{not json").unwrap();
    env.create("x3", &b, &[])
        .fails_with(&[b.to_str().unwrap(), "invalid config.json"]);

    let b = env.bundle("b2", &["true"], |s| {
        s["process"]["user"]["uid"] = json!("root")
    });
    env.create("x4", &b, &[]).fails_with(&[
        b.to_str().unwrap(),
        "invalid type: string \"root\", expected u32",
    ]);

    let b = env.bundle("b3", &["true"], |s| s["process"]["args"] = json!([]));
    env.create("x5", &b, &[])
        .fails_with(&["process.args must not be empty"]);

    let b = env.bundle("b4", &["true"], |s| s["root"]["path"] = json!("nowhere"));
    env.create("x6", &b, &[]).fails_with(&["root.path nowhere"]);

    let b = env.bundle("b5", &["true"], |s| {
        s["process"]["apparmorProfile"] = json!("x")
    });
    env.create("x7", &b, &[])
        .fails_with(&["process.apparmorProfile"]);

    let b = env.bundle("b6", &["true"], |s| {
        s["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "time"}));
    });
    env.create("x8", &b, &[]).fails_with(&["linux.namespaces"]);
    nothing_left(&env, "x8", "b6");

    let b = env.bundle("b7", &["true"], |s| {
        s["annotations"] = json!({"run.berth.isolation": "hyperv"});
    });
    env.create("x9", &b, &[])
        .fails_with(&["run.berth.isolation", "expected container or vm"]);
    nothing_left(&env, "x9", "b7");

    let b = env.bundle("b8", &["nosuch"], |_| {});
    env.create("x10", &b, &[])
        .fails_with(&["exec: \"nosuch\": executable file not found in $PATH"]);
    nothing_left(&env, "x10", "b8");
}

#[test]
fn unknown_ids_wrong_states_and_console_socket() {
    let env = Env::new();
    for cmd in ["state", "start", "kill", "delete", "pause", "resume", "ps"] {
        env.rt(&[cmd, "nosuch"])
            .fails_with(&["container \"nosuch\" does not exist"]);
    }
    env.rt(&["exec", "nosuch", "true"])
        .fails_with(&["does not exist"]);
    env.rt(&["delete", "--force", "nosuch"]).ok();
    env.rt(&["state", "../etc"])
        .fails_with(&["invalid container id"]);

    let b = env.bundle("b", &["sleep", "1000"], |_| {});
    env.create("w1", &b, &[]).ok();
    env.create("w1", &b, &[])
        .fails_with(&["container with id exists: w1"]);
    env.rt(&["start", "w1"]).ok();
    env.rt(&["start", "w1"])
        .fails_with(&["cannot start an already running container"]);
    env.rt(&["delete", "w1"])
        .fails_with(&["cannot delete container w1 that is not stopped: running"]);
    env.rt(&["kill", "w1", "NOSIG"])
        .fails_with(&["unknown signal"]);
    env.rt(&["kill", "w1", "KILL"]).ok();
    env.wait_status("w1", "stopped");
    env.rt(&["start", "w1"])
        .fails_with(&["cannot start a container that has stopped"]);
    env.rt(&["delete", "w1"]).ok();
    // A created container can be deleted without --force (as runc).
    env.create("w2", &b, &[]).ok();
    env.rt(&["delete", "w2"]).ok();

    let t = env.bundle("t", &["true"], |s| s["process"]["terminal"] = json!(true));
    let missing = env.dir.path().join("no.sock");
    env.create("w3", &t, &["--console-socket", missing.to_str().unwrap()])
        .fails_with(&["console socket", "no.sock"]);
    nothing_left(&env, "w3", "t");
    env.create("w4", &t, &[])
        .fails_with(&["--console-socket is required"]);
    nothing_left(&env, "w4", "t");
}

#[test]
fn errors_go_to_the_json_log_and_unsupported_options_are_named() {
    let env = Env::new();
    let log = env.dir.path().join("log.json");
    let r = env.rt(&[
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "start",
        "nosuch",
    ]);
    assert_ne!(r.code, 0);
    let line = std::fs::read_to_string(&log).unwrap();
    let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(v["level"], "error");
    assert_eq!(v["msg"], "container \"nosuch\" does not exist");
    assert!(v["time"].as_str().unwrap().ends_with('Z'));

    env.rt(&["--systemd-cgroup", "list"])
        .fails_with(&["--systemd-cgroup", "not supported"]);
    env.rt(&["frobnicate"]).fails_with(&["frobnicate"]);
    env.rt(&["--log-format", "xml", "list"])
        .fails_with(&["--log-format"]);
}

#[test]
fn version_spec_and_features() {
    let env = Env::new();
    let r = env.rt(&["--version"]).ok();
    assert!(
        r.stdout.starts_with("berth-runtime version "),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("spec: 1.2.0"));
    let f: serde_json::Value = serde_json::from_str(&env.rt(&["features"]).ok().stdout).unwrap();
    assert_eq!(f["ociVersionMax"], "1.2.0");
    assert!(f["hooks"].as_array().unwrap().len() == 6);
    let dir = env.dir.path().join("s");
    std::fs::create_dir_all(&dir).unwrap();
    env.rt(&["spec", "--bundle", dir.to_str().unwrap()]).ok();
    let s: oci_spec::runtime::Spec =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        s.process().as_ref().unwrap().args().as_ref().unwrap()[0],
        "sh"
    );
    env.rt(&["spec", "--bundle", dir.to_str().unwrap()])
        .fails_with(&["exists"]);
    // Go-style single-dash options, as runc accepts.
    let r = std::process::Command::new(RT)
        .args(["-root", env.root().to_str().unwrap(), "list", "-q"])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
}
