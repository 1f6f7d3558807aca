//! OCI layer unpack for an overlayfs runtime.
//!
//! Each layer is unpacked into its own directory, later used as one
//! overlayfs lowerdir. Whiteouts (`.wh.NAME`) become 0:0 character devices
//! and opaque markers (`.wh..wh..opq`) the `trusted.overlay.opaque=y` xattr.
//!
//! Confinement: entry names are normalised (leading `/` and `.` dropped) and
//! any `..` is an error. The parent of every entry is opened with `openat2`
//! and `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` relative to the layer root
//! (missing parents are created one component at a time), and the final
//! component is created with `*at()` calls that never follow it. A symlink in
//! the layer can therefore never be written through, whatever its target.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{
    fchmod, fchmodat, fstatat, futimens, makedev, mkdirat, mknodat, utimensat, FchmodatFlags, Mode,
    SFlag, UtimensatFlags,
};
use nix::unistd::{linkat, symlinkat};
use tar::EntryType;

use crate::compress::{decompress, BUF_SIZE};
use crate::digest::HashingReader;
use crate::error::lossy;
use crate::sys::{fsetxattr, open_beneath, remove_at};
use crate::ImageError;

mod meta;

use meta::{DirMeta, Meta, State, Target};

/// The xattr overlayfs reads to make a directory opaque.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
const AUFS_META_PREFIX: &[u8] = b".wh..wh.";
/// Entry paths must fit PATH_MAX (with its NUL), as every path below the
/// layer root is later opened whole.
const MAX_PATH: usize = 4096;

/// What an unpack did besides writing files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnpackReport {
    /// Bytes of regular-file content written (hardlinks count once).
    pub size: u64,
    /// Number of tar entries applied (whiteouts included).
    pub entries: u64,
    /// Things skipped rather than failed: device nodes the kernel refused,
    /// xattrs the file system refused, unsupported entry types, ownership
    /// changes refused when not running as root. At most 64 are kept; a last
    /// line says how many more were dropped.
    pub warnings: Vec<String>,
}

/// Unpacks one layer tar (plain, gzip or zstd, detected by magic) into
/// `dest`, which is created (mode 0755) if missing and must otherwise be an
/// empty directory.
pub fn unpack_layer(reader: impl Read, dest: &Path) -> Result<UnpackReport, ImageError> {
    unpack_layer_digest(reader, dest).map(|(report, _)| report)
}

/// Like [`unpack_layer`], also returning the sha256 digest (`sha256:<hex>`)
/// of the whole uncompressed stream: the layer's diff id.
pub fn unpack_layer_digest(
    reader: impl Read,
    dest: &Path,
) -> Result<(UnpackReport, String), ImageError> {
    match std::fs::create_dir(dest) {
        Ok(()) => {
            std::fs::set_permissions(dest, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .map_err(|e| ImageError::io("set permissions of", dest, e))?
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(ImageError::io("create", dest, e)),
    }
    let root = crate::sys::open_dir(dest).map_err(|e| ImageError::io("open", dest, e))?;
    let (_, stream) = decompress(reader).map_err(corrupt)?;
    let mut archive = tar::Archive::new(BufReader::with_capacity(
        BUF_SIZE,
        HashingReader::new(stream),
    ));
    let root_owned = nix::unistd::geteuid().is_root()
        && nix::unistd::getegid().as_raw() == 0
        && nix::sys::stat::fstat(&root).is_ok_and(|s| s.st_mode & libc::S_ISGID == 0);
    let mut tree = Tree {
        root,
        cache_path: Vec::with_capacity(256),
        cache_fd: None,
    };
    let mut st = State {
        dirs: Vec::new(),
        xattrs: Vec::new(),
        buf: vec![0u8; BUF_SIZE],
        report: UnpackReport::default(),
        dropped_warnings: 0,
        chown_refused: false,
        root_owned,
    };
    {
        let entries = archive.entries().map_err(corrupt)?;
        let mut raw = Vec::with_capacity(256);
        let mut norm = Vec::with_capacity(256);
        for entry in entries {
            let mut entry = entry.map_err(corrupt)?;
            raw.clear();
            raw.extend_from_slice(&entry.path_bytes());
            apply(&mut tree, &mut st, &mut entry, &raw, &mut norm)?;
        }
    }
    tree.invalidate();
    st.finish_dirs(tree.root.as_fd())?;
    // A layer without an end-of-archive marker is accepted (as containerd
    // does); its diff id still covers every byte.
    let hasher = archive
        .into_inner()
        .into_inner()
        .finish(&mut st.buf)
        .map_err(corrupt)?;
    let mut report = st.report;
    if st.dropped_warnings > 0 {
        report
            .warnings
            .push(format!("{} more warnings not shown", st.dropped_warnings));
    }
    Ok((report, hasher.digest()))
}

fn corrupt(e: io::Error) -> ImageError {
    ImageError::Corrupt(e.to_string())
}

/// Normalises a tar entry name into `out`: empty and "." components are
/// dropped (so leading "/" and "./" go away); ".." is refused.
fn normalise(raw: &[u8], out: &mut Vec<u8>) -> Result<(), ()> {
    out.clear();
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return Err(()),
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    Ok(())
}

fn split_parent(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

/// The open directories: the layer root and the previous entry's parent.
struct Tree {
    root: OwnedFd,
    cache_path: Vec<u8>,
    cache_fd: Option<OwnedFd>,
}

fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY
}

fn is_dir_mode(mode: u32) -> bool {
    mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits()
}

/// Maps an `openat2` failure on the parent of `entry` to an error.
fn parent_error(entry: &[u8], e: Errno) -> ImageError {
    match e {
        Errno::ELOOP => ImageError::EntryThroughSymlink {
            entry: lossy(entry),
        },
        Errno::EXDEV => ImageError::EntryEscapes {
            entry: lossy(entry),
        },
        Errno::ENOTDIR => ImageError::bad_entry(entry, "a parent path is not a directory"),
        e => ImageError::entry_io("open parent of", entry, e),
    }
}

impl Tree {
    fn invalidate(&mut self) {
        self.cache_fd = None;
        self.cache_path.clear();
    }

    /// The open parent directory for `parent` (after [`Tree::open_parent`]).
    fn parent_fd(&self, parent: &[u8]) -> BorrowedFd<'_> {
        match (&self.cache_fd, parent.is_empty()) {
            (Some(fd), false) => fd.as_fd(),
            _ => self.root.as_fd(),
        }
    }

    /// Makes sure the cache holds `parent`, creating missing directories
    /// (mode 0755) one component at a time.
    fn open_parent(&mut self, entry: &[u8], parent: &[u8]) -> Result<(), ImageError> {
        if parent.is_empty() || (self.cache_fd.is_some() && self.cache_path == parent) {
            return Ok(());
        }
        self.invalidate();
        let fd = match open_beneath(self.root.as_fd(), parent, dir_flags()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => self.create_parents(entry, parent)?,
            Err(e) => return Err(parent_error(entry, e)),
        };
        self.cache_fd = Some(fd);
        self.cache_path.extend_from_slice(parent);
        Ok(())
    }

    fn create_parents(&self, entry: &[u8], parent: &[u8]) -> Result<OwnedFd, ImageError> {
        let mut cur: Option<OwnedFd> = None;
        for comp in parent.split(|&b| b == b'/') {
            let at = cur.as_ref().map_or(self.root.as_fd(), |f| f.as_fd());
            let next = match open_beneath(at, comp, dir_flags()) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => {
                    match mkdirat(at, comp, Mode::S_IRWXU) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(ImageError::entry_io("create parent of", entry, e)),
                    }
                    let fd =
                        open_beneath(at, comp, dir_flags()).map_err(|e| parent_error(entry, e))?;
                    fchmod(&fd, Mode::from_bits_truncate(0o755))
                        .map_err(|e| ImageError::entry_io("create parent of", entry, e))?;
                    fd
                }
                Err(e) => return Err(parent_error(entry, e)),
            };
            cur = Some(next);
        }
        cur.ok_or_else(|| ImageError::bad_entry(entry, "empty parent path"))
    }
}

/// Applies one tar entry.
fn apply<R: Read>(
    tree: &mut Tree,
    st: &mut State,
    entry: &mut tar::Entry<'_, R>,
    raw: &[u8],
    norm: &mut Vec<u8>,
) -> Result<(), ImageError> {
    let mut kind = entry.header().entry_type();
    match kind {
        EntryType::XGlobalHeader => return Ok(()),
        EntryType::Regular | EntryType::Continuous if raw.ends_with(b"/") => {
            kind = EntryType::Directory;
        }
        EntryType::Regular
        | EntryType::Continuous
        | EntryType::GNUSparse
        | EntryType::Directory
        | EntryType::Symlink
        | EntryType::Link
        | EntryType::Char
        | EntryType::Block
        | EntryType::Fifo => {}
        other => {
            st.warn(format!(
                "skipped layer entry {:?} of unsupported type {:?}",
                lossy(raw),
                other.as_byte() as char
            ));
            return Ok(());
        }
    }
    if normalise(raw, norm).is_err() {
        return Err(ImageError::EntryEscapes { entry: lossy(raw) });
    }
    if norm.len() >= MAX_PATH {
        return Err(ImageError::bad_entry(raw, "path is longer than 4095 bytes"));
    }
    st.report.entries += 1;
    let meta = st.meta(entry, raw)?;
    let (parent, base) = split_parent(norm);
    if base.is_empty() {
        // The layer root itself ("./" or "/").
        if kind != EntryType::Directory {
            return Err(ImageError::bad_entry(
                raw,
                "names the layer root but is not a directory",
            ));
        }
        let root = tree.root.as_fd();
        st.chown(Target::Fd(root), raw, &meta)?;
        st.set_xattrs(Target::Fd(root), raw)?;
        st.dirs.push(DirMeta {
            path: Vec::new(),
            mode: meta.mode,
            mtime: meta.mtime,
        });
        return Ok(());
    }
    tree.open_parent(raw, parent)?;
    let pfd = tree.parent_fd(parent);
    if base.starts_with(WHITEOUT_PREFIX) {
        return whiteout(st, pfd, raw, base);
    }
    let mut removed = false;
    let result = match kind {
        EntryType::Link => st.hardlink(entry, raw, tree.root.as_fd(), pfd, base, &mut removed),
        _ => st.create(entry, kind, raw, norm, &meta, pfd, &mut removed),
    };
    if removed {
        tree.invalidate();
    }
    result
}

fn whiteout(
    st: &mut State,
    pfd: BorrowedFd<'_>,
    raw: &[u8],
    base: &[u8],
) -> Result<(), ImageError> {
    if base == OPAQUE_MARKER {
        return fsetxattr(pfd, OPAQUE_XATTR.as_bytes(), b"y")
            .map_err(|e| ImageError::entry_io("mark opaque", raw, e));
    }
    if base.starts_with(AUFS_META_PREFIX) {
        // aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs): not content.
        st.warn(format!("skipped aufs metadata entry {:?}", lossy(raw)));
        return Ok(());
    }
    let name = &base[WHITEOUT_PREFIX.len()..];
    if name.is_empty() || name == b"." || name == b".." {
        return Err(ImageError::bad_entry(raw, "whiteout names no file"));
    }
    // A file of the same name in this layer wins over its whiteout
    // (whiteouts only hide content of lower layers).
    match mknodat(pfd, name, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0)) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(ImageError::entry_io("create whiteout for", raw, e)),
    }
}

/// Creates `base` in `pfd` for a non-hardlink entry. Returns the open file
/// for regular files.
fn try_create<R: Read>(
    entry: &tar::Entry<'_, R>,
    kind: EntryType,
    pfd: BorrowedFd<'_>,
    base: &[u8],
) -> nix::Result<Option<OwnedFd>> {
    let rw = Mode::S_IRUSR | Mode::S_IWUSR;
    match kind {
        EntryType::Directory => mkdirat(pfd, base, Mode::S_IRWXU).map(|()| None),
        EntryType::Symlink => {
            let target = entry.link_name_bytes().unwrap_or_default();
            symlinkat(&*target, pfd, base).map(|()| None)
        }
        EntryType::Fifo => mknodat(pfd, base, SFlag::S_IFIFO, rw, 0).map(|()| None),
        EntryType::Char | EntryType::Block => {
            let h = entry.header();
            let major = h.device_major().ok().flatten().unwrap_or(0);
            let minor = h.device_minor().ok().flatten().unwrap_or(0);
            let sflag = if kind == EntryType::Char {
                SFlag::S_IFCHR
            } else {
                SFlag::S_IFBLK
            };
            let dev = makedev(major.into(), minor.into());
            mknodat(pfd, base, sflag, rw, dev).map(|()| None)
        }
        _ => {
            let flags = OFlag::O_WRONLY
                | OFlag::O_CREAT
                | OFlag::O_EXCL
                | OFlag::O_NOFOLLOW
                | OFlag::O_CLOEXEC;
            openat(pfd, base, flags, rw).map(Some)
        }
    }
}

/// Removes what is at `base` unless it is a directory and `keep_dir`;
/// returns whether a directory was kept.
fn clear(pfd: BorrowedFd<'_>, base: &[u8], raw: &[u8], keep_dir: bool) -> Result<bool, ImageError> {
    if keep_dir {
        let st = fstatat(pfd, base, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| ImageError::entry_io("inspect", raw, e))?;
        if is_dir_mode(st.st_mode) {
            return Ok(true);
        }
    }
    remove_at(pfd, base).map_err(|e| ImageError::entry_io("replace", raw, e))?;
    Ok(false)
}

impl State {
    #[allow(clippy::too_many_arguments)]
    fn create<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        kind: EntryType,
        raw: &[u8],
        norm: &[u8],
        meta: &Meta,
        pfd: BorrowedFd<'_>,
        removed: &mut bool,
    ) -> Result<(), ImageError> {
        let base = split_parent(norm).1;
        if kind == EntryType::Symlink && entry.link_name_bytes().is_none_or(|t| t.is_empty()) {
            return Err(ImageError::bad_entry(raw, "symlink has no target"));
        }
        let created = match try_create(entry, kind, pfd, base) {
            Err(Errno::EEXIST) => {
                if clear(pfd, base, raw, kind == EntryType::Directory)? {
                    Ok(None) // an existing directory: only its metadata changes
                } else {
                    *removed = true;
                    try_create(entry, kind, pfd, base)
                }
            }
            other => other,
        };
        let file = match created {
            Ok(f) => f,
            Err(e @ (Errno::EPERM | Errno::EACCES))
                if matches!(kind, EntryType::Char | EntryType::Block) =>
            {
                let e = io::Error::from(e);
                self.warn(format!("skipped device node {:?}: {e}", lossy(raw)));
                return Ok(());
            }
            Err(e) => return Err(ImageError::entry_io("create", raw, e)),
        };
        if let Some(fd) = file {
            return self.write_file(entry, kind, raw, fd, meta);
        }
        let at = Target::At(pfd, base);
        self.chown(at, raw, meta)?;
        match kind {
            EntryType::Directory => {
                self.set_xattrs(at, raw)?;
                self.dirs.push(DirMeta {
                    path: norm.to_vec(),
                    mode: meta.mode,
                    mtime: meta.mtime,
                });
                return Ok(());
            }
            EntryType::Symlink => {}
            _ => fchmodat(
                pfd,
                base,
                Mode::from_bits_truncate(meta.mode),
                FchmodatFlags::NoFollowSymlink,
            )
            .map_err(|e| ImageError::entry_io("chmod", raw, e))?,
        }
        self.set_xattrs(at, raw)?;
        utimensat(
            pfd,
            base,
            &meta.mtime,
            &meta.mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| ImageError::entry_io("set mtime of", raw, e))
    }

    fn write_file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        kind: EntryType,
        raw: &[u8],
        fd: OwnedFd,
        meta: &Meta,
    ) -> Result<(), ImageError> {
        let mut file = File::from(fd);
        let mut total = 0u64;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(ImageError::Corrupt(format!(
                        "layer entry {:?}: {e}",
                        lossy(raw)
                    )))
                }
            };
            file.write_all(&self.buf[..n])
                .map_err(|e| ImageError::entry_io("write", raw, e))?;
            total += n as u64;
        }
        if kind != EntryType::GNUSparse && total != entry.size() {
            return Err(ImageError::Corrupt(format!(
                "layer entry {:?} is truncated ({total} of {} bytes)",
                lossy(raw),
                entry.size()
            )));
        }
        self.report.size += total;
        let fd = file.as_fd();
        if !(self.root_owned && meta.uid == 0 && meta.gid == 0) {
            self.chown(Target::Fd(fd), raw, meta)?;
        }
        fchmod(fd, Mode::from_bits_truncate(meta.mode))
            .map_err(|e| ImageError::entry_io("chmod", raw, e))?;
        self.set_xattrs(Target::Fd(fd), raw)?;
        futimens(fd, &meta.mtime, &meta.mtime)
            .map_err(|e| ImageError::entry_io("set mtime of", raw, e))
    }

    fn hardlink<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        raw: &[u8],
        root: BorrowedFd<'_>,
        pfd: BorrowedFd<'_>,
        base: &[u8],
        removed: &mut bool,
    ) -> Result<(), ImageError> {
        let target_raw = entry
            .link_name_bytes()
            .ok_or_else(|| ImageError::bad_entry(raw, "hardlink has no target"))?;
        let escapes = || ImageError::HardlinkEscapes {
            entry: lossy(raw),
            target: lossy(&target_raw),
        };
        let mut target = Vec::with_capacity(target_raw.len());
        normalise(&target_raw, &mut target).map_err(|()| escapes())?;
        if target.is_empty() {
            return Err(ImageError::bad_entry(raw, "hardlink to the layer root"));
        }
        let (tparent, tbase) = split_parent(&target);
        let owned;
        let tfd = if tparent.is_empty() {
            root
        } else {
            owned = open_beneath(root, tparent, OFlag::O_PATH | OFlag::O_DIRECTORY).map_err(
                |e| match e {
                    Errno::ELOOP => ImageError::HardlinkThroughSymlink {
                        entry: lossy(raw),
                        target: lossy(&target_raw),
                    },
                    Errno::EXDEV => escapes(),
                    Errno::ENOENT | Errno::ENOTDIR => ImageError::bad_entry(
                        raw,
                        format!("hardlink target {:?} does not exist", lossy(&target_raw)),
                    ),
                    e => ImageError::entry_io("open hardlink target of", raw, e),
                },
            )?;
            owned.as_fd()
        };
        let link = || linkat(tfd, tbase, pfd, base, AtFlags::empty());
        let result = match link() {
            Err(Errno::EEXIST) => {
                let a = fstatat(tfd, tbase, AtFlags::AT_SYMLINK_NOFOLLOW);
                let b = fstatat(pfd, base, AtFlags::AT_SYMLINK_NOFOLLOW);
                match (a, b) {
                    (Ok(a), Ok(b)) if a.st_dev == b.st_dev && a.st_ino == b.st_ino => Ok(()),
                    _ => {
                        clear(pfd, base, raw, false)?;
                        *removed = true;
                        link()
                    }
                }
            }
            other => other,
        };
        result.map_err(|e| match e {
            Errno::ENOENT => ImageError::bad_entry(
                raw,
                format!("hardlink target {:?} does not exist", lossy(&target_raw)),
            ),
            e => ImageError::entry_io("link", raw, e),
        })
    }
}
