//! Authentication: htpasswd basic auth on a real registry, bearer tokens
//! through the test proxy, credentials files (berth's and Docker's), TLS.

use super::harness::{berth, berth_with, Mode, Registry};
use super::proxy::{Fault, Proxy};
use crate::common::*;
use std::os::unix::fs::PermissionsExt;

#[test]
fn basic_auth_login_push_pull_logout() {
    let reg = Registry::start(Mode::Htpasswd("alice", "s3cret"));
    let env = Env::with_busybox();
    let name = reg.name("private/bb:v1");
    berth(&env, &["tag", "busybox", &name]).ok();
    let before = env.snapshot();
    berth(&env, &["push", &name]).fails_with("unauthorized");
    berth(&env, &["pull", &name]).fails_with(&format!(
        "unauthorized: manifest for {name}: authentication required (log in with: berth login {})",
        reg.host()
    ));
    before.assert_same(&env.snapshot(), "an unauthorized pull");

    let auth_file = env.dir.path().join("auth.json");
    let login = ["login", "-u", "alice", "--password-stdin", &reg.host()];
    berth_with(&env, &login, &[], Some("wrong\n"))
        .fails_with("rejected the credentials of user \"alice\"");
    assert!(!auth_file.exists());
    let out = berth_with(&env, &login, &[], Some("s3cret\n")).ok();
    assert_eq!(out.stdout, "Login Succeeded\n");
    let mode = std::fs::metadata(&auth_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(!std::fs::read_to_string(&auth_file)
        .unwrap()
        .contains("s3cret"));

    berth(&env, &["push", "-q", &name]).ok();
    let env2 = Env::new();
    std::fs::copy(&auth_file, env2.dir.path().join("auth.json")).unwrap();
    berth(&env2, &["pull", "-q", &name]).ok();
    assert_eq!(
        berth(&env2, &["run", "--rm", &name, "echo", "authed"])
            .ok()
            .stdout,
        "authed\n"
    );

    let out = berth(&env, &["logout", &reg.host()]).ok();
    assert_eq!(
        out.stdout,
        format!("Removing login credentials for {}\n", reg.host())
    );
    assert_eq!(
        berth(&env, &["logout", &reg.host()]).ok().stdout,
        format!("Not logged in to {}\n", reg.host())
    );
    let env3 = Env::new();
    berth(&env3, &["pull", &name]).fails_with("unauthorized");
}

#[test]
fn docker_config_json_credentials_are_used() {
    let reg = Registry::start(Mode::Htpasswd("bob", "hunter2"));
    let env = Env::with_busybox();
    let name = reg.name("bob/bb:v1");
    berth(&env, &["tag", "busybox", &name]).ok();
    let docker = env.dir.path().join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    // base64("bob:hunter2")
    let config = format!(
        r#"{{"auths":{{"http://{}/v1/":{{"auth":"Ym9iOmh1bnRlcjI="}}}}}}"#,
        reg.host()
    );
    std::fs::write(docker.join("config.json"), config).unwrap();
    berth(&env, &["push", "-q", &name]).ok();
    let env2 = Env::new();
    std::fs::create_dir_all(env2.dir.path().join("docker")).unwrap();
    std::fs::copy(
        docker.join("config.json"),
        env2.dir.path().join("docker/config.json"),
    )
    .unwrap();
    berth(&env2, &["pull", "-q", &name]).ok();
}

#[test]
fn bearer_token_challenge_flow() {
    let reg = Registry::start(Mode::Plain);
    reg.skopeo_copy(
        &format!("oci-archive:{}", busybox_tar().display()),
        "tok/bb:v1",
        false,
    );
    let proxy = Proxy::start(
        reg.port,
        Fault::Bearer {
            user: "carol".into(),
            pass: "pw".into(),
        },
    );
    let name = proxy.name("tok/bb:v1");
    let env = Env::new();
    berth(&env, &["pull", &name]).fails_with("unauthorized");
    let login = [
        "login",
        "-u",
        "carol",
        "--password-stdin",
        &format!("127.0.0.1:{}", proxy.port),
    ];
    berth_with(&env, &login, &[], Some("bad")).fails_with("incorrect username or password");
    berth_with(&env, &login, &[], Some("pw")).ok();
    berth(&env, &["pull", "-q", &name]).ok();
    let tokens: Vec<String> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("GET /token"))
        .collect();
    assert!(
        tokens
            .iter()
            .any(|t| t.contains("scope=repository%3Atok%2Fbb%3Apull")),
        "{tokens:?}"
    );
    assert_eq!(
        berth(&env, &["run", "--rm", &name, "echo", "bearer"])
            .ok()
            .stdout,
        "bearer\n"
    );
}

#[test]
fn login_without_a_terminal_needs_password_stdin() {
    let reg = Registry::start(Mode::Plain);
    let env = Env::new();
    berth(&env, &["login", "-u", "x", &reg.host()]).fails_with("non-TTY");
    berth(&env, &["login", &reg.host()]).fails_with("non-TTY");
    berth_with(
        &env,
        &["login", "--password-stdin", &reg.host()],
        &[],
        Some("pw"),
    )
    .fails_with("--username is required");
}

#[test]
fn https_registries_and_tls_verification() {
    let reg = Registry::start(Mode::Tls);
    let out = std::process::Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci-archive:{}", busybox_tar().display()))
        .arg(format!("docker://{}", reg.name("tls/bb:v1")))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let name = reg.name("tls/bb:v1");
    // Loopback: HTTPS without verification by default.
    let env = Env::new();
    berth(&env, &["pull", "-q", &name]).ok();
    // Verified: the self-signed CA is unknown...
    let env = Env::new();
    berth(&env, &["pull", "--tls-verify", &name])
        .fails_with("(for a registry without a trusted certificate use --tls-verify=false)");
    // ...until it is in the certs directory.
    let certs = reg.certs_dir().display().to_string();
    let vars = [("BERTH_CERTS_DIR", certs.as_str())];
    berth_with(
        &env,
        &["pull", "-q", "--tls-verify=true", &name],
        &vars,
        None,
    )
    .ok();
    assert_eq!(
        berth(&env, &["run", "--rm", &name, "echo", "tls"])
            .ok()
            .stdout,
        "tls\n"
    );
}
