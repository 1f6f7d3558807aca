//! A real registry per test: Debian's `docker-registry` (Distribution
//! 2.8) on a free 127.0.0.1 port with temporary storage, plain, with
//! htpasswd basic auth or with TLS; killed on drop. Also `skopeo`, and
//! berth commands with private credentials files.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Env, Run};

/// How the registry authenticates and listens.
pub enum Mode {
    Plain,
    /// htpasswd basic auth for this user and password.
    Htpasswd(&'static str, &'static str),
    /// HTTPS with a self-signed certificate (for 127.0.0.1), written to
    /// `<dir>/certs.d/127.0.0.1:<port>/ca.crt`.
    Tls,
}

pub struct Registry {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn require(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(found, "{tool} is not installed (make test installs it)");
}

impl Registry {
    pub fn start(mode: Mode) -> Registry {
        require("docker-registry");
        let dir = tempfile::Builder::new()
            .prefix("berth-registry-")
            .tempdir_in("/tmp")
            .unwrap();
        let port = free_port();
        let mut extra = String::new();
        match mode {
            Mode::Plain => {}
            Mode::Htpasswd(user, pass) => {
                require("htpasswd");
                let out = Command::new("htpasswd")
                    .args(["-Bbn", user, pass])
                    .output()
                    .unwrap();
                assert!(out.status.success());
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, out.stdout).unwrap();
                extra = format!(
                    "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                    file.display()
                );
            }
            Mode::Tls => {
                // A CA and a leaf for 127.0.0.1 signed by it; berth is
                // given the CA (Docker's certs.d layout).
                let certs = dir.path().join(format!("certs.d/127.0.0.1:{port}"));
                std::fs::create_dir_all(&certs).unwrap();
                let d = dir.path();
                std::fs::write(
                    d.join("leaf.ext"),
                    "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
                )
                .unwrap();
                let path = |name: &str| d.join(name).display().to_string();
                let ca = certs.join("ca.crt").display().to_string();
                let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2";
                let steps = [
                    format!("req -x509 {ec} -subj /CN=berth-test-ca -keyout {} -out {ca}", path("ca.key")),
                    format!("req {ec} -subj /CN=127.0.0.1 -keyout {} -out {}", path("key.pem"), path("leaf.csr")),
                    format!(
                        "x509 -req -days 2 -in {} -CA {ca} -CAkey {} -CAcreateserial -extfile {} -out {}",
                        path("leaf.csr"),
                        path("ca.key"),
                        path("leaf.ext"),
                        path("leaf.crt")
                    ),
                ];
                for step in steps {
                    let out = Command::new("openssl")
                        .args(step.split(' '))
                        .output()
                        .unwrap();
                    assert!(
                        out.status.success(),
                        "openssl {step}: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                extra = format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    d.join("leaf.crt").display(),
                    d.join("key.pem").display()
                );
            }
        }
        let (http_extra, auth) = if extra.starts_with("  tls") {
            (extra, String::new())
        } else {
            (String::new(), extra)
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n{http_extra}{auth}",
            dir.path().join("data").display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let reg = Registry { port, dir, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not start: {}",
                std::fs::read_to_string(reg.dir.path().join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        reg
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:<port>/<path>`.
    pub fn name(&self, path: &str) -> String {
        format!("{}/{path}", self.host())
    }

    /// The certs.d directory of a [`Mode::Tls`] registry.
    pub fn certs_dir(&self) -> PathBuf {
        self.dir.path().join("certs.d")
    }

    /// Loads an OCI or docker archive into the registry with skopeo.
    pub fn skopeo_copy(&self, src: &str, path: &str, all: bool) {
        require("skopeo");
        let mut c = Command::new("skopeo");
        c.arg("copy").arg("--dest-tls-verify=false");
        if all {
            c.arg("--all");
        }
        let out = c
            .arg(src)
            .arg(format!("docker://{}", self.name(path)))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A raw GET; returns (status, headers, body).
    pub fn get(&self, path: &str, accept: &str) -> (u16, String, Vec<u8>) {
        http_get(self.port, path, accept)
    }

    /// The digest the registry serves `path:tag` under (index if any).
    pub fn digest(&self, repo: &str, tag: &str) -> String {
        let accept = "application/vnd.oci.image.index.v1+json, \
            application/vnd.docker.distribution.manifest.list.v2+json, \
            application/vnd.oci.image.manifest.v1+json, \
            application/vnd.docker.distribution.manifest.v2+json";
        let (status, head, _) = self.get(&format!("/v2/{repo}/manifests/{tag}"), accept);
        assert_eq!(status, 200, "{head}");
        head.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("docker-content-digest")
                    .then(|| v.trim().to_owned())
            })
            .unwrap()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.1 GET to 127.0.0.1:`port`.
pub fn http_get(port: u16, path: &str, accept: &str) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head, raw[split + 4..].to_vec())
}

/// berth with this test's store and private credentials files (never the
/// user's own).
pub fn berth(env: &Env, args: &[&str]) -> Run {
    berth_with(env, args, &[], None)
}

/// [`berth`] with extra environment and standard input.
pub fn berth_with(env: &Env, args: &[&str], vars: &[(&str, &str)], stdin: Option<&str>) -> Run {
    // The registry listens on the host's loopback: stay there, unnetworked.
    let mut c = env.cmd_host_net();
    c.env("BERTH_AUTH_FILE", env.dir.path().join("auth.json"))
        .env("DOCKER_CONFIG", env.dir.path().join("docker"))
        .env("BERTH_CERTS_DIR", env.dir.path().join("no-certs"))
        .env_remove("BERTH_INSECURE_REGISTRIES")
        .args(args);
    for (k, v) in vars {
        c.env(k, v);
    }
    let out = match stdin {
        Some(input) => {
            c.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = c.spawn().unwrap();
            // berth may exit (refusing its arguments) before reading.
            let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
            child.wait_with_output().unwrap()
        }
        None => c.output().unwrap(),
    };
    Run::from(out)
}

/// Files under the store's staging directory (must be none after a pull).
pub fn staging_leftovers(env: &Env) -> Vec<String> {
    std::fs::read_dir(env.root().join("image/tmp"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}
