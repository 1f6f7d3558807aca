//! Where credentials live: berth's own file (mode 0600, Docker's format)
//! and, read only, Docker's `config.json`.
//!
//! berth's file is `$BERTH_AUTH_FILE`, else `$XDG_CONFIG_HOME/berth/auth.json`,
//! else `~/.config/berth/auth.json`. Docker's is `$DOCKER_CONFIG/config.json`,
//! else `~/.docker/config.json`. Both hold
//! `{"auths": {"<registry>": {"auth": "<base64 user:password>"}}}`; keys may
//! carry a scheme or path (`https://index.docker.io/v1/`), which are
//! ignored when matching.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::auth::Credentials;
use crate::RegistryError;

/// The registry name Docker Hub goes by in references.
pub const DOCKER_HUB: &str = "docker.io";
/// The key Docker's CLI stores Docker Hub credentials under.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// Normalises a registry name as typed or as a config key: no scheme, no
/// path, Docker Hub's aliases folded into `docker.io`.
pub fn normalize_registry(name: &str) -> String {
    let s = name.trim();
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let host = s.split('/').next().unwrap_or(s);
    match host {
        "" | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB.to_owned()
        }
        h => h.to_owned(),
    }
}

/// berth's credentials file and Docker's.
#[derive(Clone, Debug)]
pub struct AuthFiles {
    /// berth's own file (read and written).
    pub berth: PathBuf,
    /// Docker's `config.json` (only read), if a home directory is known.
    pub docker: Option<PathBuf>,
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

impl AuthFiles {
    /// The files the environment points at (see the module docs).
    pub fn from_env() -> AuthFiles {
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let berth = env("BERTH_AUTH_FILE").unwrap_or_else(|| {
            env("XDG_CONFIG_HOME")
                .or_else(|| home().map(|h| h.join(".config")))
                .unwrap_or_else(|| PathBuf::from("/root/.config"))
                .join("berth/auth.json")
        });
        let docker = env("DOCKER_CONFIG")
            .or_else(|| home().map(|h| h.join(".docker")))
            .map(|d| d.join("config.json"));
        AuthFiles { berth, docker }
    }

    /// Credentials for `registry`: berth's file first, then Docker's.
    pub fn lookup(&self, registry: &str) -> Result<Option<Credentials>, RegistryError> {
        let want = normalize_registry(registry);
        for path in std::iter::once(&self.berth).chain(self.docker.as_ref()) {
            let Some(doc) = read(path)? else { continue };
            let Some(auths) = doc.get("auths").and_then(Value::as_object) else {
                continue;
            };
            for (key, entry) in auths {
                if normalize_registry(key) != want {
                    continue;
                }
                if let Some(c) = entry_credentials(entry) {
                    return Ok(Some(c));
                }
            }
        }
        Ok(None)
    }

    /// Saves credentials for `registry` in berth's file (created 0600).
    pub fn store(&self, registry: &str, creds: &Credentials) -> Result<(), RegistryError> {
        let key = key_for(registry);
        let mut doc = read(&self.berth)?.unwrap_or_else(|| json!({}));
        let root = as_object(&self.berth, &mut doc)?;
        let auths = root
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()));
        let auths = as_object(&self.berth, auths)?;
        auths.retain(|k, _| normalize_registry(k) != normalize_registry(registry));
        auths.insert(key, json!({ "auth": creds.encoded() }));
        write(&self.berth, &doc)
    }

    /// Removes the credentials for `registry` from berth's file; false if
    /// there were none.
    pub fn remove(&self, registry: &str) -> Result<bool, RegistryError> {
        let Some(mut doc) = read(&self.berth)? else {
            return Ok(false);
        };
        let want = normalize_registry(registry);
        let removed = match doc.get_mut("auths").and_then(Value::as_object_mut) {
            Some(auths) => {
                let before = auths.len();
                auths.retain(|k, _| normalize_registry(k) != want);
                auths.len() != before
            }
            None => false,
        };
        if removed {
            write(&self.berth, &doc)?;
        }
        Ok(removed)
    }

    /// Whether Docker's file has credentials for `registry` (logout says so).
    pub fn in_docker_config(&self, registry: &str) -> bool {
        let probe = AuthFiles {
            berth: PathBuf::from("/nonexistent/berth-auth.json"),
            docker: self.docker.clone(),
        };
        probe.lookup(registry).is_ok_and(|c| c.is_some())
    }
}

fn key_for(registry: &str) -> String {
    match normalize_registry(registry).as_str() {
        DOCKER_HUB => DOCKER_HUB_KEY.to_owned(),
        other => other.to_owned(),
    }
}

fn entry_credentials(entry: &Value) -> Option<Credentials> {
    if let Some(c) = entry
        .get("auth")
        .and_then(Value::as_str)
        .and_then(Credentials::decode)
    {
        return Some(c);
    }
    let user = entry.get("username").and_then(Value::as_str)?;
    let pass = entry.get("password").and_then(Value::as_str)?;
    Some(Credentials {
        username: user.to_owned(),
        password: pass.to_owned(),
    })
}

fn as_object<'a>(
    path: &Path,
    v: &'a mut Value,
) -> Result<&'a mut Map<String, Value>, RegistryError> {
    v.as_object_mut().ok_or_else(|| RegistryError::AuthFile {
        path: path.to_owned(),
        detail: "not a JSON object".into(),
    })
}

fn read(path: &Path) -> Result<Option<Value>, RegistryError> {
    let bad = |detail: String| RegistryError::AuthFile {
        path: path.to_owned(),
        detail,
    };
    match fs::read(path) {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Ok(None),
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| bad(format!("not valid JSON: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(bad(e.to_string())),
    }
}

/// Writes atomically: a 0600 file next to `path`, then a rename.
fn write(path: &Path, doc: &Value) -> Result<(), RegistryError> {
    let bad = |detail: String| RegistryError::AuthFile {
        path: path.to_owned(),
        detail,
    };
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            fs::create_dir_all(dir).map_err(|e| bad(e.to_string()))?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| bad(e.to_string()))?;
        }
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
        let mut text = serde_json::to_vec_pretty(doc).map_err(std::io::Error::other)?;
        text.push(b'\n');
        f.write_all(&text)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(bad(e.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes() {
        assert_eq!(
            normalize_registry("https://index.docker.io/v1/"),
            "docker.io"
        );
        assert_eq!(normalize_registry("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(
            normalize_registry("http://localhost:5000/v2/"),
            "localhost:5000"
        );
    }

    #[test]
    fn store_lookup_remove() {
        let dir = tempfile::tempdir().unwrap();
        let docker = dir.path().join("docker.json");
        fs::write(
            &docker,
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"Ym9iOnNlY3JldA=="}},"credsStore":"x"}"#,
        )
        .unwrap();
        let files = AuthFiles {
            berth: dir.path().join("sub/auth.json"),
            docker: Some(docker),
        };
        let bob = files.lookup("docker.io").unwrap().unwrap();
        assert_eq!(
            (bob.username.as_str(), bob.password.as_str()),
            ("bob", "secret")
        );
        assert_eq!(files.lookup("quay.io").unwrap(), None);
        let alice = Credentials {
            username: "alice".into(),
            password: "pw".into(),
        };
        files.store("localhost:5000", &alice).unwrap();
        let mode = fs::metadata(&files.berth).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(files.lookup("http://localhost:5000").unwrap(), Some(alice));
        assert!(files.remove("localhost:5000").unwrap());
        assert!(!files.remove("localhost:5000").unwrap());
        assert_eq!(files.lookup("localhost:5000").unwrap(), None);
        assert!(files.in_docker_config("index.docker.io"));
    }
}
