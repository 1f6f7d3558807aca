//! Entry metadata: reading it from tar headers and PAX records, and
//! applying owners, xattrs and (deferred) directory modes and mtimes.

use std::io::Read;
use std::os::fd::BorrowedFd;

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::{fchmod, futimens, Mode};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, Gid, Uid};

use super::{corrupt, dir_flags, UnpackReport};
use crate::error::lossy;
use crate::sys::{fsetxattr, lsetxattr_at, open_beneath};
use crate::ImageError;

const MAX_WARNINGS: usize = 64;

/// Metadata of one entry, read from its header and PAX records.
pub(super) struct Meta {
    pub(super) mode: u32,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) mtime: TimeSpec,
}

/// A directory's mode and mtime, applied after all entries (so that
/// creating children neither fails on a read-only directory nor bumps the
/// mtime again).
pub(super) struct DirMeta {
    pub(super) path: Vec<u8>,
    pub(super) mode: u32,
    pub(super) mtime: TimeSpec,
}

/// Where to set xattrs: an open file, or a name in an open directory.
#[derive(Clone, Copy)]
pub(super) enum Target<'a> {
    Fd(BorrowedFd<'a>),
    At(BorrowedFd<'a>, &'a [u8]),
}

/// Everything else the unpack accumulates.
pub(super) struct State {
    pub(super) dirs: Vec<DirMeta>,
    pub(super) xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub(super) buf: Vec<u8>,
    pub(super) report: UnpackReport,
    pub(super) dropped_warnings: usize,
    pub(super) chown_refused: bool,
    /// Running as root:root and the layer root has no setgid bit, so new
    /// files are root-owned already (directories get their setgid bits
    /// only at the end).
    pub(super) root_owned: bool,
}

impl State {
    pub(super) fn warn(&mut self, msg: String) {
        if self.report.warnings.len() < MAX_WARNINGS {
            self.report.warnings.push(msg);
        } else {
            self.dropped_warnings += 1;
        }
    }

    /// Reads mode, owner, mtime and (into `self.xattrs`) xattrs of `entry`.
    pub(super) fn meta<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        raw: &[u8],
    ) -> Result<Meta, ImageError> {
        let h = entry.header();
        let bad = |what: &str| ImageError::bad_entry(raw, format!("invalid {what} in tar header"));
        let mode = h.mode().map_err(|_| bad("mode"))? & 0o7777;
        let uid = h.uid().ok().and_then(|v| u32::try_from(v).ok());
        let gid = h.gid().ok().and_then(|v| u32::try_from(v).ok());
        let (uid, gid) = (
            uid.ok_or_else(|| bad("uid"))?,
            gid.ok_or_else(|| bad("gid"))?,
        );
        let secs = h.mtime().map_err(|_| bad("mtime"))?;
        let mut mtime = TimeSpec::new(i64::try_from(secs).unwrap_or(i64::MAX), 0);
        self.xattrs.clear();
        if let Some(pax) = entry.pax_extensions().map_err(corrupt)? {
            for rec in pax {
                let rec = rec.map_err(corrupt)?;
                let key = rec.key_bytes();
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    self.xattrs
                        .push((name.to_vec(), rec.value_bytes().to_vec()));
                } else if key == b"mtime" {
                    if let Some(t) = parse_pax_time(rec.value_bytes()) {
                        mtime = t;
                    }
                }
            }
        }
        Ok(Meta {
            mode,
            uid,
            gid,
            mtime,
        })
    }

    pub(super) fn chown(
        &mut self,
        at: Target<'_>,
        raw: &[u8],
        meta: &Meta,
    ) -> Result<(), ImageError> {
        let (uid, gid) = (Some(Uid::from_raw(meta.uid)), Some(Gid::from_raw(meta.gid)));
        let res = match at {
            Target::Fd(fd) => fchown(fd, uid, gid),
            Target::At(dir, name) => fchownat(dir, name, uid, gid, AtFlags::AT_SYMLINK_NOFOLLOW),
        };
        match res {
            Ok(()) => Ok(()),
            Err(Errno::EPERM) => {
                if !self.chown_refused {
                    self.chown_refused = true;
                    self.warn("ownership not applied: changing owners is not permitted".into());
                }
                Ok(())
            }
            Err(e) => Err(ImageError::entry_io("chown", raw, e)),
        }
    }

    pub(super) fn set_xattrs(&mut self, at: Target<'_>, raw: &[u8]) -> Result<(), ImageError> {
        if self.xattrs.is_empty() {
            return Ok(());
        }
        let xattrs = std::mem::take(&mut self.xattrs);
        let mut result = Ok(());
        for (key, value) in &xattrs {
            if key.starts_with(b"trusted.overlay.") || key.starts_with(b"user.overlay.") {
                self.warn(format!(
                    "ignored xattr {:?} on layer entry {:?}: overlay attributes come only from whiteouts",
                    lossy(key),
                    lossy(raw)
                ));
                continue;
            }
            let res = match at {
                Target::Fd(fd) => fsetxattr(fd, key, value),
                Target::At(dir, name) => lsetxattr_at(dir, name, key, value),
            };
            if let Err(e) = res {
                let soft = [
                    libc::EOPNOTSUPP,
                    libc::EPERM,
                    libc::EACCES,
                    libc::EINVAL,
                    libc::E2BIG,
                    libc::ERANGE,
                ];
                if e.raw_os_error().is_some_and(|c| soft.contains(&c)) {
                    self.warn(format!(
                        "skipped xattr {:?} on layer entry {:?}: {e}",
                        lossy(key),
                        lossy(raw)
                    ));
                } else {
                    result = Err(ImageError::entry_io("set xattr on", raw, e));
                    break;
                }
            }
        }
        self.xattrs = xattrs;
        result
    }

    /// Applies directory modes and mtimes, last record per path winning.
    pub(super) fn finish_dirs(&mut self, root: BorrowedFd<'_>) -> Result<(), ImageError> {
        for d in &self.dirs {
            let fd = match open_beneath(root, &d.path, dir_flags()) {
                Ok(fd) => fd,
                // Replaced later by a non-directory: nothing to do.
                Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => continue,
                Err(e) => return Err(ImageError::entry_io("open", &d.path, e)),
            };
            fchmod(&fd, Mode::from_bits_truncate(d.mode))
                .map_err(|e| ImageError::entry_io("chmod", &d.path, e))?;
            futimens(&fd, &d.mtime, &d.mtime)
                .map_err(|e| ImageError::entry_io("set mtime of", &d.path, e))?;
        }
        Ok(())
    }
}

/// Parses a PAX time ("1700000000" or "1700000000.123456789").
fn parse_pax_time(v: &[u8]) -> Option<TimeSpec> {
    let s = std::str::from_utf8(v).ok()?;
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    let mut nsec: i64 = 0;
    for (i, c) in frac.bytes().take(9).enumerate() {
        if !c.is_ascii_digit() {
            return None;
        }
        nsec += i64::from(c - b'0') * 10i64.pow(8 - i as u32);
    }
    if secs < 0 && nsec > 0 {
        return Some(TimeSpec::new(secs - 1, 1_000_000_000 - nsec));
    }
    Some(TimeSpec::new(secs, nsec))
}
