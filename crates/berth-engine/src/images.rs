//! Image records: import, list, inspect, tag, remove.

use std::collections::HashSet;

use rusqlite::params;
use serde_json::json;

use crate::reference::Reference;
use crate::{now, Engine, EngineError};

/// One line of `berth images`.
#[derive(Debug, Clone)]
pub struct ImageSummary {
    pub id: String,
    /// Non-fatal problems met while unpacking (e.g. device nodes the kernel
    /// refused).
    pub warnings: Vec<String>,
    /// Familiar names ("busybox:latest"); empty for a dangling image.
    pub tags: Vec<String>,
    pub created: i64,
    pub size: u64,
}

/// What an image's config says about how to run it.
pub fn image_config(
    config_json: &[u8],
) -> Result<oci_spec::image::ImageConfiguration, EngineError> {
    serde_json::from_slice(config_json)
        .map_err(|e| EngineError::Invalid(format!("image config is not valid: {e}")))
}

fn familiar(name: &str) -> String {
    Reference::parse(name)
        .map(|r| r.familiar())
        .unwrap_or_else(|_| name.to_string())
}

impl Engine {
    /// Imports an OCI layout or `docker save` archive; `tag` names the
    /// (single) image when the archive carries no name.
    pub fn import(
        &mut self,
        reader: impl std::io::Read,
        tag: Option<&str>,
    ) -> Result<Vec<ImageSummary>, EngineError> {
        let tag_ref = tag.map(Reference::parse_tagged).transpose()?;
        // Imports share the store; garbage collection must not run meanwhile.
        let _lock = self.lock_store(false)?;
        let imported = self.store()?.import(reader)?;
        berth_sandbox::fault::point("import:stored");
        let now = now();
        let tx = self.db().conn().transaction()?;
        let mut out = Vec::new();
        for img in &imported {
            let created = img
                .config
                .created()
                .as_deref()
                .and_then(parse_rfc3339)
                .unwrap_or(now);
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
            // An OCI ref.name annotation may hold only a tag ("latest"),
            // which cannot name an image alone: keep names with a ':' or '/'.
            let mut names: Vec<String> = img
                .repo_tags
                .iter()
                .filter(|t| t.contains([':', '/']))
                .filter_map(|t| Reference::parse_tagged(t).ok())
                .map(|r| r.to_string())
                .collect();
            if let Some(r) = &tag_ref {
                names = vec![r.to_string()];
            }
            for n in &names {
                tx.execute(
                    "INSERT INTO tags (name, image_id) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET image_id = excluded.image_id",
                    params![n, img.id],
                )?;
            }
            out.push(ImageSummary {
                id: img.id.clone(),
                warnings: img.warnings.clone(),
                tags: names.iter().map(|n| familiar(n)).collect(),
                created,
                size: img.size,
            });
        }
        tx.commit()?;
        Ok(out)
    }

    /// Resolves a name, `name:tag`, `name@digest`, full or short ID.
    pub fn resolve_image(&mut self, name: &str) -> Result<crate::db::ImageRow, EngineError> {
        let db = self.db();
        let parsed = Reference::parse_tagged(name);
        if let Err(e) = &parsed {
            if !name
                .trim_start_matches("sha256:")
                .bytes()
                .all(|b| b.is_ascii_hexdigit())
            {
                return Err(e.clone().into());
            }
        }
        if let Ok(r) = parsed {
            if r.digest.is_none() {
                if let Some(id) = db.tag_target(&r.to_string())? {
                    if let Some(row) = db.image(&id)? {
                        return Ok(row);
                    }
                }
            } else if let Some(d) = &r.digest {
                for img in db.images()? {
                    if img.manifest_digest.as_deref() == Some(d) {
                        return Ok(img);
                    }
                }
                if let Some(img) = crate::registry::image_by_repo_digest(db, &r)? {
                    return Ok(img);
                }
            }
        }
        let ids = db.image_ids_with_prefix(name)?;
        if ids.len() == 1 {
            if let Some(row) = db.image(&ids[0])? {
                return Ok(row);
            }
        }
        Err(EngineError::NoSuchImage(name.to_string()))
    }

    pub fn images(&mut self) -> Result<Vec<ImageSummary>, EngineError> {
        let db = self.db();
        let mut out = Vec::new();
        for img in db.images()? {
            let tags = db.tags_of(&img.id)?.iter().map(|t| familiar(t)).collect();
            out.push(ImageSummary {
                id: img.id,
                warnings: Vec::new(),
                tags,
                created: img.created,
                size: img.size,
            });
        }
        Ok(out)
    }

    /// `berth image inspect`: Docker's shape, as far as it applies.
    pub fn inspect_image(&mut self, name: &str) -> Result<serde_json::Value, EngineError> {
        let img = self.resolve_image(name)?;
        let tags: Vec<String> = self
            .db()
            .tags_of(&img.id)?
            .iter()
            .map(|t| familiar(t))
            .collect();
        let config: serde_json::Value = serde_json::from_slice(&img.config).unwrap_or(json!({}));
        let layers: Vec<String> = img
            .diff_ids
            .iter()
            .map(|d| {
                self.root
                    .join("image")
                    .join("layers")
                    .join(d.trim_start_matches("sha256:"))
                    .display()
                    .to_string()
            })
            .collect();
        Ok(json!({
            "Id": img.id,
            "RepoTags": tags,
            "RepoDigests": img.manifest_digest.iter().collect::<Vec<_>>(),
            "Created": crate::containers::rfc3339(img.created),
            "Architecture": config.get("architecture"),
            "Os": config.get("os"),
            "Size": img.size,
            "Config": config.get("config"),
            "RootFS": {"Type": "layers", "Layers": img.diff_ids},
            "GraphDriver": {"Name": "overlay", "Data": {"LowerDir": layers.join(":")}},
        }))
    }

    /// `berth tag SOURCE TARGET`.
    pub fn tag(&mut self, source: &str, target: &str) -> Result<(), EngineError> {
        let target = Reference::parse_tagged(target)?;
        if target.digest.is_some() {
            return Err(EngineError::Invalid(format!(
                "refusing to create a tag with a digest reference: {target}"
            )));
        }
        let img = self.resolve_image(source)?;
        self.db().conn().execute(
            "INSERT INTO tags (name, image_id) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET image_id = excluded.image_id",
            params![target.to_string(), img.id],
        )?;
        Ok(())
    }

    /// `berth rmi [-f] NAME`: untags, and deletes the image (and its layers
    /// no other image uses) when no tag is left. Returns Docker-style lines
    /// ("Untagged: …", "Deleted: …").
    pub fn remove_image(&mut self, name: &str, force: bool) -> Result<Vec<String>, EngineError> {
        let img = self.resolve_image(name)?;
        let users = self.db().containers_using_image(&img.id)?;
        if let Some(c) = users.first() {
            if !force {
                return Err(EngineError::ImageInUse {
                    image: name.to_string(),
                    container: c.id[..12].to_string(),
                });
            }
        }
        let tags = self.db().tags_of(&img.id)?;
        let by_tag = Reference::parse_tagged(name)
            .ok()
            .map(|r| r.to_string())
            .filter(|t| tags.contains(t));
        let mut lines = Vec::new();
        let tx = self.db().conn().transaction()?;
        let delete_image = match &by_tag {
            // Removing one of several tags only untags.
            Some(t) if tags.len() > 1 => {
                tx.execute("DELETE FROM tags WHERE name = ?1", params![t])?;
                lines.push(format!("Untagged: {}", familiar(t)));
                false
            }
            _ => {
                if by_tag.is_none() && tags.len() > 1 && !force {
                    return Err(EngineError::ImageMultiTagged(name.to_string()));
                }
                for t in &tags {
                    lines.push(format!("Untagged: {}", familiar(t)));
                }
                tx.execute("DELETE FROM tags WHERE image_id = ?1", params![img.id])?;
                tx.execute("DELETE FROM images WHERE id = ?1", params![img.id])?;
                lines.push(format!("Deleted: {}", img.id));
                true
            }
        };
        tx.commit()?;
        if delete_image {
            self.collect_garbage()?;
        }
        Ok(lines)
    }

    /// Removes layers and blobs that no image record references any more.
    pub fn collect_garbage(&mut self) -> Result<(), EngineError> {
        let _lock = self.lock_store(true)?;
        let images = self.db().images()?;
        let mut keep_layers = HashSet::new();
        let mut keep_blobs = HashSet::new();
        for i in &images {
            keep_layers.extend(i.diff_ids.iter().cloned());
            keep_blobs.extend(i.layer_digests.iter().cloned());
            keep_blobs.insert(i.id.clone());
            if let Some(m) = &i.manifest_digest {
                keep_blobs.insert(m.clone());
            }
        }
        let root = self.root.join("image");
        let store = self.store()?;
        for (dir, keep, layer) in [
            ("layers", &keep_layers, true),
            ("blobs/sha256", &keep_blobs, false),
        ] {
            let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.len() != 64 {
                    continue;
                }
                let digest = format!("sha256:{name}");
                if keep.contains(&digest) {
                    continue;
                }
                if layer {
                    store.remove_layer(&digest)?;
                } else {
                    store.remove_blob(&digest)?;
                }
            }
        }
        crate::vm::collect_image_disks(&self.root, &images);
        Ok(())
    }
}

impl Engine {
    /// An advisory lock on the image store: shared for imports, exclusive
    /// for garbage collection. Released when the returned file is dropped.
    pub(crate) fn lock_store(
        &mut self,
        exclusive: bool,
    ) -> Result<nix::fcntl::Flock<std::fs::File>, EngineError> {
        use nix::fcntl::{Flock, FlockArg};
        // flock works on the store's directory itself: no lock file to leave.
        let path = self.store()?.root().to_path_buf();
        let f = std::fs::File::open(&path)
            .map_err(crate::io_err(format!("opening {}", path.display())))?;
        let arg = if exclusive {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockShared
        };
        Flock::lock(f, arg).map_err(|(_, e)| crate::io_err("locking the image store")(e.into()))
    }
}

/// Seconds since the epoch from an RFC 3339 timestamp (UTC or offset).
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || (b[10] != b'T' && b[10] != b't' && b[10] != b' ')
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    if let Some(r) = rest.strip_prefix('.') {
        rest = r.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = match rest {
        "Z" | "z" | "" => 0,
        o if o.len() == 6 => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (o[1..3].parse::<i64>().ok()? * 3600 + o[4..6].parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    Some(days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - offset)
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20Z"), Some(1_700_000_000));
        assert_eq!(
            parse_rfc3339("2023-11-14T23:13:20.123+01:00"),
            Some(1_700_000_000)
        );
        assert_eq!(parse_rfc3339("nope"), None);
    }
}
