//! Disks: an image's layers as one read-only filesystem image (erofs, or
//! ext4 where erofs-utils is missing), built once per image and cached; and
//! each container's writable disk, a sparse copy of an empty ext4 template.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use crate::{in_path, io_err, run_tool, VmError};

/// Size of a container's writable disk (sparse: only what is written
/// takes space).
pub const RW_DISK_BYTES: u64 = 4 << 30;

/// Filesystem of an image disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFs {
    Erofs,
    Ext4,
}

impl ImageFs {
    pub fn name(self) -> &'static str {
        match self {
            ImageFs::Erofs => "erofs",
            ImageFs::Ext4 => "ext4",
        }
    }

    /// erofs when `mkfs.erofs` is there (`BERTH_VM_IMAGE_FS` overrides).
    pub fn choose() -> ImageFs {
        match std::env::var("BERTH_VM_IMAGE_FS").as_deref() {
            Ok("ext4") => ImageFs::Ext4,
            Ok("erofs") => ImageFs::Erofs,
            _ if in_path("mkfs.erofs") => ImageFs::Erofs,
            _ => ImageFs::Ext4,
        }
    }
}

/// Holds an exclusive `flock` on a file until dropped.
pub(crate) struct FileLock(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>);

pub(crate) fn lock(path: &Path) -> Result<FileLock, VmError> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_err(format!("opening {}", path.display())))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map(FileLock)
        .map_err(|(_, e)| io_err(format!("locking {}", path.display()))(e.into()))
}

/// The image disk for `image_id` in `cache`, built from `layers` (bottom
/// first) when missing. `scratch` is an empty directory for a mount.
pub fn image_disk(
    cache: &Path,
    image_id: &str,
    layers: &[PathBuf],
    fs: ImageFs,
    scratch: &Path,
) -> Result<PathBuf, VmError> {
    let hex = image_id.trim_start_matches("sha256:");
    let path = cache.join(format!("{hex}.{}", fs.name()));
    if path.is_file() {
        return Ok(path);
    }
    std::fs::create_dir_all(cache).map_err(io_err(format!("creating {}", cache.display())))?;
    let _lock = lock(&cache.join(format!(".{hex}.lock")))?;
    if path.is_file() {
        return Ok(path);
    }
    // One layer is its own merged view; more are stacked read-only.
    let (source, mounted) = match layers {
        [] => {
            std::fs::create_dir_all(scratch).map_err(io_err("creating the scratch directory"))?;
            (scratch.to_path_buf(), false)
        }
        [one] => (one.clone(), false),
        _ => {
            std::fs::create_dir_all(scratch).map_err(io_err("creating the scratch directory"))?;
            let lower: Vec<String> = layers
                .iter()
                .rev()
                .map(|p| p.display().to_string())
                .collect();
            nix::mount::mount(
                Some("overlay"),
                scratch,
                Some("overlay"),
                nix::mount::MsFlags::MS_RDONLY,
                Some(format!("lowerdir={}", lower.join(":")).as_str()),
            )
            .map_err(|e| io_err("mounting the image layers")(e.into()))?;
            (scratch.to_path_buf(), true)
        }
    };
    let tmp = cache.join(format!(".{hex}.{}.tmp", std::process::id()));
    let built = build_fs(fs, &source, &tmp);
    if mounted {
        let _ = nix::mount::umount2(scratch, nix::mount::MntFlags::MNT_DETACH);
    }
    let _ = std::fs::remove_dir(scratch);
    let done = built.and_then(|()| {
        std::fs::rename(&tmp, &path).map_err(io_err(format!("writing {}", path.display())))
    });
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done.map(|()| path)
}

fn build_fs(fs: ImageFs, source: &Path, out: &Path) -> Result<(), VmError> {
    match fs {
        ImageFs::Erofs => {
            if !in_path("mkfs.erofs") {
                return Err(VmError::MissingTool {
                    tool: "mkfs.erofs",
                    hint: "apt-get install erofs-utils",
                });
            }
            run_tool(
                std::process::Command::new("mkfs.erofs")
                    .arg("-zlz4hc")
                    .arg(out)
                    .arg(source),
                "building the image disk (mkfs.erofs)",
            )
        }
        ImageFs::Ext4 => {
            // Size: the content plus room for metadata.
            let bytes = dir_size(source).saturating_mul(5) / 4 + (16 << 20);
            mkfs_ext4(
                out,
                bytes,
                Some(source),
                "building the image disk (mkfs.ext4)",
            )
        }
    }
}

fn mkfs_ext4(out: &Path, bytes: u64, source: Option<&Path>, what: &str) -> Result<(), VmError> {
    if !in_path("mkfs.ext4") {
        return Err(VmError::MissingTool {
            tool: "mkfs.ext4",
            hint: "apt-get install e2fsprogs",
        });
    }
    let mut cmd = std::process::Command::new("mkfs.ext4");
    cmd.args([
        "-q",
        "-F",
        "-m",
        "0",
        "-E",
        "root_owner=0:0,lazy_itable_init=1",
    ]);
    cmd.args(["-O", "^has_journal"]);
    if let Some(src) = source {
        cmd.arg("-d").arg(src);
    }
    cmd.arg(out).arg(format!("{}k", bytes / 1024));
    run_tool(&mut cmd, what)
}

fn dir_size(p: &Path) -> u64 {
    let Ok(md) = std::fs::symlink_metadata(p) else {
        return 0;
    };
    if !md.is_dir() {
        return md.len() + 4096;
    }
    let mut total = 4096;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            total += dir_size(&e.path());
        }
    }
    total
}

/// A new writable disk at `path`: a sparse copy of an empty ext4 made once
/// in `cache`. Existing disks are kept (a restarted container keeps its
/// files).
pub fn rw_disk(cache: &Path, path: &Path) -> Result<(), VmError> {
    if path.is_file() {
        return Ok(());
    }
    let template = cache.join(format!("rw-{}g.ext4", RW_DISK_BYTES >> 30));
    if !template.is_file() {
        std::fs::create_dir_all(cache).map_err(io_err(format!("creating {}", cache.display())))?;
        let _lock = lock(&cache.join(".rw.lock"))?;
        if !template.is_file() {
            let tmp = cache.join(format!(".rw.{}.tmp", std::process::id()));
            let made = mkfs_ext4(
                &tmp,
                RW_DISK_BYTES,
                None,
                "making the writable disk (mkfs.ext4)",
            )
            .and_then(|()| {
                std::fs::rename(&tmp, &template)
                    .map_err(io_err(format!("writing {}", template.display())))
            });
            if made.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            made?;
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
    }
    let tmp = path.with_extension("tmp");
    let copied = sparse_copy(&template, &tmp)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(io_err(format!("creating {}", path.display())));
    if copied.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    copied
}

/// Copies only the data extents of `from` (holes stay holes).
fn sparse_copy(from: &Path, to: &Path) -> std::io::Result<()> {
    use nix::unistd::{lseek, Whence};
    use std::os::unix::fs::FileExt;
    let src = std::fs::File::open(from)?;
    let dst = std::fs::File::create(to)?;
    let len = src.metadata()?.len();
    dst.set_len(len)?;
    let mut pos: i64 = 0;
    let mut buf = vec![0u8; 1 << 20];
    while (pos as u64) < len {
        let data = match lseek(src.as_fd(), pos, Whence::SeekData) {
            Ok(d) => d,
            Err(nix::errno::Errno::ENXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let hole = lseek(src.as_fd(), data, Whence::SeekHole).map_err(std::io::Error::from)?;
        let mut off = data;
        while off < hole {
            let n = ((hole - off) as usize).min(buf.len());
            src.read_exact_at(&mut buf[..n], off as u64)?;
            dst.write_all_at(&buf[..n], off as u64)?;
            off += n as i64;
        }
        pos = hole;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_copy_keeps_holes_and_data() {
        use std::os::unix::fs::{FileExt, MetadataExt};
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a");
        let f = std::fs::File::create(&a).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(b"tail", (64 << 20) - 4).unwrap();
        drop(f);
        let b = d.path().join("b");
        sparse_copy(&a, &b).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert!(std::fs::metadata(&b).unwrap().blocks() * 512 < (1 << 20));
    }
}
