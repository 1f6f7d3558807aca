//! Registries: `pull` (and the pull policy of `run`/`create`), `push`,
//! `login`, `logout`. The protocol is `berth-registry`'s; this module adds
//! the records: image rows and tags, the digests an image was pulled or
//! pushed by (`repo_digests`, so `NAME@DIGEST` resolves offline), and
//! which repositories of a registry hold a blob (`blob_sources`, for
//! cross-repository mounts on push).

use std::collections::HashMap;
use std::io::Read;

use berth_registry::manifest::{DOCKER_MANIFEST, OCI_MANIFEST};
use berth_registry::{
    AuthFiles, Client, ClientOptions, PullRequest, PushBlob, PushImage, PushRequest,
};
use rusqlite::{params, OptionalExtension};

pub use berth_registry::{
    BlobState, Credentials, NoProgress, Platform, Progress, RegistryError, DOCKER_HUB,
};

use crate::db::{Db, ImageRow};
use crate::reference::Reference;
use crate::{now, Engine, EngineError};

/// When `run`/`create` pull their image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PullPolicy {
    /// Only when no local image has the name.
    #[default]
    Missing,
    /// Every time, so the tag is current.
    Always,
    /// Never: a missing image is an error.
    Never,
}

impl std::str::FromStr for PullPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "missing" => Ok(PullPolicy::Missing),
            "always" => Ok(PullPolicy::Always),
            "never" => Ok(PullPolicy::Never),
            _ => Err(format!(
                "invalid pull policy {s:?}: expected missing, always or never"
            )),
        }
    }
}

/// Options of every registry operation.
#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    /// `--tls-verify`: see [`ClientOptions::tls_verify`].
    pub tls_verify: Option<bool>,
    /// `--platform os/arch[/variant]` for pulls.
    pub platform: Option<String>,
    /// Credentials files; `None`: from the environment.
    pub auth_files: Option<AuthFiles>,
}

impl RegistryOptions {
    fn auth_files(&self) -> AuthFiles {
        self.auth_files.clone().unwrap_or_else(AuthFiles::from_env)
    }

    fn client_options(&self) -> ClientOptions {
        let mut o = ClientOptions::from_env();
        o.tls_verify = self.tls_verify;
        o
    }

    fn connect(&self, registry: &str) -> Result<Client, EngineError> {
        let creds = self.auth_files().lookup(registry)?;
        Ok(Client::connect(registry, creds, &self.client_options())?)
    }
}

/// What a pull did.
#[derive(Clone, Debug)]
pub struct PullSummary {
    /// The reference, fully qualified (`docker.io/library/busybox:latest`).
    pub reference: String,
    /// The reference as Docker prints it (`busybox:latest`).
    pub familiar: String,
    /// The image ID (config digest).
    pub id: String,
    /// Digest of what the reference names (an index or a manifest).
    pub digest: String,
    /// Layers downloaded (the others were in the store already).
    pub downloaded: usize,
    /// False when the name already pointed at this image.
    pub changed: bool,
    pub platform: String,
    /// Non-fatal unpack problems.
    pub warnings: Vec<String>,
}

/// What a push did.
#[derive(Clone, Debug)]
pub struct PushSummary {
    /// `host/path`, as Docker prints it.
    pub repository: String,
    pub tag: String,
    pub digest: String,
    pub size: u64,
    /// Per blob: what happened to it.
    pub blobs: Vec<(String, BlobState)>,
}

const TABLES: &str = "
CREATE TABLE IF NOT EXISTS repo_digests (
    name TEXT PRIMARY KEY,
    image_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS blob_sources (
    digest TEXT NOT NULL,
    repository TEXT NOT NULL,
    PRIMARY KEY (digest, repository)
);";

fn ensure_tables(db: &mut Db) -> Result<(), EngineError> {
    db.conn().execute_batch(TABLES)?;
    Ok(())
}

/// The image a `NAME@DIGEST` reference was pulled or pushed as.
pub(crate) fn image_by_repo_digest(
    db: &mut Db,
    r: &Reference,
) -> Result<Option<ImageRow>, EngineError> {
    let Some(digest) = &r.digest else {
        return Ok(None);
    };
    ensure_tables(db)?;
    let name = format!("{}@{digest}", r.repository());
    let id: Option<String> = db
        .conn()
        .query_row(
            "SELECT image_id FROM repo_digests WHERE name = ?1",
            params![name],
            |row| row.get(0),
        )
        .optional()?;
    match id {
        Some(id) => db.image(&id),
        None => Ok(None),
    }
}

/// The tag or digest a reference asks the registry for.
fn remote_ref(r: &Reference) -> &str {
    r.digest.as_deref().or(r.tag.as_deref()).unwrap_or("latest")
}

fn jobs() -> usize {
    std::env::var("BERTH_TRANSFER_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(4)
}

impl Engine {
    /// `berth pull NAME`: fetches the image into the store and names it.
    pub fn pull(
        &mut self,
        name: &str,
        opts: &RegistryOptions,
        progress: &dyn Progress,
    ) -> Result<PullSummary, EngineError> {
        let r = Reference::parse_tagged(name)?;
        let platform = opts.platform.as_deref().map(Platform::parse).transpose()?;
        let client = opts.connect(&r.domain)?;
        let before = match &r.tag {
            Some(_) if r.digest.is_none() => self.db().tag_target(&r.to_string())?,
            _ => None,
        };
        let _lock = self.lock_store(false)?;
        let store = self.store()?.clone();
        // Staging left by pulls that were killed (their processes are gone).
        store.clean_tmp(std::time::Duration::ZERO)?;
        let req = PullRequest {
            repo: &r.path,
            reference: remote_ref(&r),
            platform,
            jobs: jobs(),
        };
        let pulled = berth_registry::pull(&client, &store, &req, progress)?;
        berth_sandbox::fault::point("pull:stored");
        let img = &pulled.image;
        let created = img
            .config
            .created()
            .as_deref()
            .and_then(crate::images::parse_rfc3339)
            .unwrap_or_else(now);
        let repo_digest = format!("{}@{}", r.repository(), pulled.digest);
        let db = self.db();
        ensure_tables(db)?;
        let tx = db.conn().transaction()?;
        tx.execute(
            "INSERT OR IGNORE INTO images (id, manifest_digest, config, diff_ids, layer_digests, size, created) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                img.id,
                img.manifest_digest,
                img.config_json,
                serde_json::to_string(&img.diff_ids).unwrap_or_default(),
                serde_json::to_string(&img.layer_digests).unwrap_or_default(),
                img.size as i64,
                created
            ],
        )?;
        if r.digest.is_none() {
            tx.execute(
                "INSERT INTO tags (name, image_id) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET image_id = excluded.image_id",
                params![r.to_string(), img.id],
            )?;
        }
        tx.execute(
            "INSERT INTO repo_digests (name, image_id) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET image_id = excluded.image_id",
            params![repo_digest, img.id],
        )?;
        for d in img.layer_digests.iter().chain([&img.id]) {
            tx.execute(
                "INSERT OR IGNORE INTO blob_sources (digest, repository) VALUES (?1, ?2)",
                params![d, r.repository()],
            )?;
        }
        tx.commit()?;
        Ok(PullSummary {
            reference: r.to_string(),
            familiar: r.familiar(),
            id: img.id.clone(),
            digest: pulled.digest,
            downloaded: pulled.downloaded,
            changed: before.as_deref() != Some(img.id.as_str()),
            platform: pulled.platform,
            warnings: img.warnings.clone(),
        })
    }

    /// The pull policy of `run`/`create`: pulls `name` when `policy` says
    /// so; `before_pull` is called first (to say why). `Ok(None)`: no pull.
    pub fn ensure_image(
        &mut self,
        name: &str,
        policy: PullPolicy,
        opts: &RegistryOptions,
        before_pull: impl FnOnce(),
        progress: &dyn Progress,
    ) -> Result<Option<PullSummary>, EngineError> {
        let pull = match policy {
            PullPolicy::Never => false,
            PullPolicy::Always => true,
            PullPolicy::Missing => match self.resolve_image(name) {
                Ok(_) => false,
                Err(EngineError::NoSuchImage(_)) => true,
                Err(e) => return Err(e),
            },
        };
        if !pull {
            return Ok(None);
        }
        before_pull();
        self.pull(name, opts, progress).map(Some)
    }

    /// `berth push NAME`: uploads the image named `NAME` to the registry
    /// and repository the name says.
    pub fn push(
        &mut self,
        name: &str,
        opts: &RegistryOptions,
        progress: &dyn Progress,
    ) -> Result<PushSummary, EngineError> {
        let r = Reference::parse_tagged(name)?;
        if r.digest.is_some() {
            return Err(EngineError::Invalid(format!(
                "cannot push a digest reference: {name}: push a tag"
            )));
        }
        let tag = r.tag.clone().unwrap_or_else(|| "latest".into());
        let img = match self.db().tag_target(&r.to_string())? {
            Some(id) => self.db().image(&id)?,
            None => None,
        }
        .ok_or_else(|| {
            EngineError::NoSuchImage(format!(
                "{} (tag it first: berth tag IMAGE {})",
                r.familiar(),
                r.familiar()
            ))
        })?;
        let image = self.push_image(&img)?;
        let client = opts.connect(&r.domain)?;
        let db = self.db();
        ensure_tables(db)?;
        let prefix = format!("{}/", r.domain);
        let mut sources: HashMap<String, Vec<String>> = HashMap::new();
        {
            let conn = db.conn();
            let mut stmt = conn.prepare("SELECT digest, repository FROM blob_sources")?;
            let rows = stmt.query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })?;
            for row in rows {
                let (digest, repo) = row?;
                if let Some(path) = repo.strip_prefix(&prefix) {
                    sources.entry(digest).or_default().push(path.to_owned());
                }
            }
        }
        let chunk_size = std::env::var("BERTH_PUSH_CHUNK_SIZE")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&n: &u64| n > 0)
            .unwrap_or(32 << 20);
        let lookup = |d: &str| sources.get(d).cloned().unwrap_or_default();
        let req = PushRequest {
            repo: &r.path,
            reference: &tag,
            jobs: jobs(),
            chunk_size,
            mount_sources: &lookup,
        };
        let pushed = berth_registry::push(&client, &image, &req, progress)?;
        let tx = self.db().conn().transaction()?;
        for b in &image.blobs {
            tx.execute(
                "INSERT OR IGNORE INTO blob_sources (digest, repository) VALUES (?1, ?2)",
                params![b.digest, r.repository()],
            )?;
        }
        tx.execute(
            "INSERT INTO repo_digests (name, image_id) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET image_id = excluded.image_id",
            params![format!("{}@{}", r.repository(), pushed.digest), img.id],
        )?;
        tx.commit()?;
        Ok(PushSummary {
            repository: r.familiar_repository(),
            tag,
            digest: pushed.digest,
            size: pushed.size,
            blobs: pushed.blobs,
        })
    }

    /// The manifest and blobs of a stored image. An image imported from a
    /// `docker save` archive has no manifest: one is written (OCI, layer
    /// media types from the blobs' compression).
    fn push_image(&mut self, img: &ImageRow) -> Result<PushImage, EngineError> {
        let store = self.store()?.clone();
        let blob = |digest: &str| -> Result<PushBlob, EngineError> {
            let path = store.blob_path(digest)?;
            let size = std::fs::metadata(&path)
                .map_err(|_| {
                    EngineError::Invalid(format!(
                        "blob {digest} of image {} is not in the store; cannot push it",
                        img.id
                    ))
                })?
                .len();
            Ok(PushBlob {
                digest: digest.to_owned(),
                size,
                path,
            })
        };
        let mut blobs = vec![blob(&img.id)?];
        for d in &img.layer_digests {
            if !blobs.iter().any(|b| &b.digest == d) {
                blobs.push(blob(d)?);
            }
        }
        let stored = img
            .manifest_digest
            .as_deref()
            .filter(|d| store.has_blob(d))
            .map(|d| store.read_blob(d))
            .transpose()?;
        let (manifest, media_type) = match stored {
            Some(bytes) => {
                let mt = serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .and_then(|v| {
                        v.get("mediaType")
                            .and_then(|m| m.as_str())
                            .map(String::from)
                    })
                    .unwrap_or_else(|| OCI_MANIFEST.to_owned());
                if mt != OCI_MANIFEST && mt != DOCKER_MANIFEST {
                    return Err(EngineError::Invalid(format!(
                        "image {} has a manifest of type {mt:?}, which berth cannot push",
                        img.id
                    )));
                }
                (bytes, mt)
            }
            None => (
                synthesize_manifest(&blobs, &img.layer_digests)?,
                OCI_MANIFEST.to_owned(),
            ),
        };
        Ok(PushImage {
            manifest,
            media_type,
            blobs,
        })
    }
}

/// An OCI manifest for a config blob and its layer blobs.
fn synthesize_manifest(blobs: &[PushBlob], layers: &[String]) -> Result<Vec<u8>, EngineError> {
    let desc = |b: &PushBlob, media_type: &str| serde_json::json!({"mediaType": media_type, "digest": b.digest, "size": b.size});
    let mut out = Vec::new();
    for d in layers {
        let b = blobs
            .iter()
            .find(|b| &b.digest == d)
            .expect("every layer has a blob");
        let mut head = [0u8; 4];
        let n = std::fs::File::open(&b.path)
            .and_then(|mut f| f.read(&mut head))
            .map_err(crate::io_err(format!("reading {}", b.path.display())))?;
        let mt = match &head[..n] {
            [0x1f, 0x8b, ..] => "application/vnd.oci.image.layer.v1.tar+gzip",
            [0x28, 0xb5, 0x2f, 0xfd] => "application/vnd.oci.image.layer.v1.tar+zstd",
            _ => "application/vnd.oci.image.layer.v1.tar",
        };
        out.push(desc(b, mt));
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": desc(&blobs[0], "application/vnd.oci.image.config.v1+json"),
        "layers": out,
    });
    Ok(serde_json::to_vec(&manifest).unwrap_or_default())
}

/// `berth login`: checks the credentials against the registry, then saves
/// them in berth's credentials file. Returns the registry's name.
pub fn login(
    registry: &str,
    creds: Credentials,
    opts: &RegistryOptions,
) -> Result<String, EngineError> {
    let name = berth_registry::normalize_registry(registry);
    let client = Client::connect(&name, Some(creds.clone()), &opts.client_options())?;
    client.login()?;
    opts.auth_files().store(&name, &creds)?;
    Ok(name)
}

/// `berth logout`: forgets the credentials for `registry`. Returns the
/// registry's name and whether berth's file had credentials for it.
pub fn logout(registry: &str, opts: &RegistryOptions) -> Result<(String, bool), EngineError> {
    let name = berth_registry::normalize_registry(registry);
    let removed = opts.auth_files().remove(&name)?;
    Ok((name, removed))
}
