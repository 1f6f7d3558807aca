//! Uncompressed layer tarballs, written entry by entry with fixed metadata.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use tar::{EntryType, Header};

/// Modification time of every entry (2023-11-14T22:13:20Z).
pub(crate) const MTIME: u64 = 1_700_000_000;
/// The same instant as [`MTIME`], for image configs.
pub(crate) const CREATED: &str = "2023-11-14T22:13:20Z";

/// Where the host's static busybox lives (Debian package `busybox-static`).
pub(crate) const HOST_BUSYBOX: &str = "/bin/busybox";

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
daemon:x:1:1:daemon:/usr/sbin:/bin/false\n\
nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n\
app:x:1000:1000::/home/app:/bin/sh\n";

const GROUP: &str = "root:x:0:\n\
daemon:x:1:\n\
nogroup:x:65534:\n\
app:x:1000:\n\
extra:x:2000:app\n";

/// A layer tarball under construction. Entries are written in call order;
/// callers are responsible for a sorted, parents-first order.
pub(crate) struct Layer {
    builder: tar::Builder<Vec<u8>>,
}

fn header(kind: EntryType, mode: u32, uid: u64, gid: u64, size: u64) -> Header {
    let mut h = Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_size(size);
    h.set_mtime(MTIME);
    h
}

/// Copies `value` into a fixed-size, NUL-padded header field.
fn put_field(field: &mut [u8], value: &[u8]) -> Result<()> {
    ensure!(
        value.len() <= field.len(),
        "tar header field too long: {}",
        String::from_utf8_lossy(value)
    );
    field.fill(0);
    field[..value.len()].copy_from_slice(value);
    Ok(())
}

/// One PAX extended-header record: `"<len> <key>=<value>\n"`, where `<len>`
/// counts the whole record including its own digits.
fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let body = 1 + key.len() + 1 + value.len() + 1;
    let mut total = body + 1;
    while total != body + total.to_string().len() {
        total = body + total.to_string().len();
    }
    out.extend_from_slice(format!("{total} {key}=").as_bytes());
    out.extend_from_slice(value);
    out.push(b'\n');
}

impl Layer {
    pub(crate) fn new() -> Self {
        Self {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    pub(crate) fn dir(&mut self, path: &str, mode: u32, uid: u64, gid: u64) -> Result<()> {
        let mut h = header(EntryType::Directory, mode, uid, gid, 0);
        self.builder
            .append_data(&mut h, path, std::io::empty())
            .with_context(|| format!("writing directory {path}"))
    }

    pub(crate) fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<()> {
        self.file_owned(path, mode, 0, 0, data)
    }

    pub(crate) fn file_owned(
        &mut self,
        path: &str,
        mode: u32,
        uid: u64,
        gid: u64,
        data: &[u8],
    ) -> Result<()> {
        let mut h = header(EntryType::Regular, mode, uid, gid, data.len() as u64);
        self.builder
            .append_data(&mut h, path, data)
            .with_context(|| format!("writing file {path}"))
    }

    /// A regular file preceded by a PAX header carrying `SCHILY.xattr.<name>`
    /// records for each extended attribute.
    pub(crate) fn file_xattrs(
        &mut self,
        path: &str,
        mode: u32,
        data: &[u8],
        xattrs: &[(&str, &[u8])],
    ) -> Result<()> {
        let mut records = Vec::new();
        for (name, value) in xattrs {
            pax_record(&mut records, &format!("SCHILY.xattr.{name}"), value);
        }
        let pax_name = format!("PaxHeaders.0/{path}");
        self.raw(
            EntryType::XHeader,
            pax_name.as_bytes(),
            b"",
            0o644,
            &records,
        )?;
        self.file(path, mode, data)
    }

    pub(crate) fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        let mut h = header(EntryType::Symlink, 0o777, 0, 0, 0);
        self.builder
            .append_link(&mut h, path, target)
            .with_context(|| format!("writing symlink {path} -> {target}"))
    }

    /// A hard link to `target`, an earlier entry of the same layer.
    pub(crate) fn hardlink(&mut self, path: &str, target: &str) -> Result<()> {
        let mut h = header(EntryType::Link, 0o755, 0, 0, 0);
        self.builder
            .append_link(&mut h, path, target)
            .with_context(|| format!("writing hardlink {path} => {target}"))
    }

    pub(crate) fn fifo(&mut self, path: &str, mode: u32) -> Result<()> {
        let mut h = header(EntryType::Fifo, mode, 0, 0, 0);
        self.builder
            .append_data(&mut h, path, std::io::empty())
            .with_context(|| format!("writing fifo {path}"))
    }

    /// An entry whose name and link name are copied byte for byte into the
    /// header, bypassing the `tar` crate's path checks (for hostile layers).
    pub(crate) fn raw(
        &mut self,
        kind: EntryType,
        name: &[u8],
        link: &[u8],
        mode: u32,
        data: &[u8],
    ) -> Result<()> {
        let mut h = header(kind, mode, 0, 0, data.len() as u64);
        let old = h.as_old_mut();
        put_field(&mut old.name, name)?;
        put_field(&mut old.linkname, link)?;
        h.set_cksum();
        self.builder
            .append(&h, data)
            .with_context(|| format!("writing raw entry {}", String::from_utf8_lossy(name)))
    }

    /// Ends the archive (two zero blocks) and returns its bytes.
    pub(crate) fn finish(self) -> Result<Vec<u8>> {
        self.builder.into_inner().context("finishing layer tar")
    }
}

/// The applet paths printed by `busybox --list-full`, minus `bin/busybox`.
fn applets(busybox: &Path) -> Result<BTreeSet<String>> {
    let out = Command::new(busybox)
        .arg("--list-full")
        .output()
        .with_context(|| format!("running {} --list-full", busybox.display()))?;
    if !out.status.success() {
        bail!("{} --list-full failed: {}", busybox.display(), out.status);
    }
    let text = String::from_utf8(out.stdout).context("busybox --list-full: not UTF-8")?;
    let mut set = BTreeSet::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let rel = line.trim_start_matches('/');
        ensure!(
            !rel.split('/').any(|c| c == ".." || c.is_empty()),
            "unexpected applet path from busybox: {line:?}"
        );
        if rel != "bin/busybox" {
            set.insert(rel.to_string());
        }
    }
    Ok(set)
}

/// Whether a 64-bit little-endian ELF file has a `PT_INTERP` program header
/// (i.e. is dynamically linked). Anything unparsable counts as static.
fn has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    if elf.get(..6) != Some(&b"\x7fELF\x02\x01"[..]) {
        return false;
    }
    let (Some(phoff), Some(entsize), Some(num)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return false;
    };
    (0..usize::from(num)).any(|i| {
        usize::try_from(phoff)
            .ok()
            .and_then(|off| off.checked_add(i * usize::from(entsize)))
            .and_then(u32_at)
            == Some(PT_INTERP)
    })
}

/// The base layer: the host's static busybox, a hard link per applet, a
/// minimal filesystem hierarchy and users `root`, `daemon`, `nobody`, `app`.
pub(crate) fn busybox_layer() -> Result<Vec<u8>> {
    let bin = Path::new(HOST_BUSYBOX);
    let data = std::fs::read(bin).map_err(|e| {
        anyhow::anyhow!(
            "cannot read {HOST_BUSYBOX} ({e}): install busybox-static (apt-get install busybox-static)"
        )
    })?;
    ensure!(
        !has_interpreter(&data),
        "{HOST_BUSYBOX} is dynamically linked and would not run inside an image: \
         install busybox-static (apt-get install busybox-static)"
    );
    let applets = applets(bin)?;

    // path -> (mode, uid, gid)
    let mut dirs: BTreeMap<String, (u32, u64, u64)> = BTreeMap::new();
    for d in [
        "bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "home", "var", "proc", "sys", "dev",
    ] {
        dirs.insert(d.to_string(), (0o755, 0, 0));
    }
    dirs.insert("tmp".into(), (0o1777, 0, 0));
    dirs.insert("root".into(), (0o700, 0, 0));
    dirs.insert("home/app".into(), (0o755, 1000, 1000));
    for applet in &applets {
        let mut parent = Path::new(applet).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            let p = p.to_str().context("non-UTF-8 applet path")?;
            dirs.entry(p.to_string()).or_insert((0o755, 0, 0));
            parent = Path::new(p).parent();
        }
    }

    let mut layer = Layer::new();
    for (path, (mode, uid, gid)) in &dirs {
        layer.dir(path, *mode, *uid, *gid)?;
    }
    layer.file("bin/busybox", 0o755, &data)?;
    layer.file("etc/group", 0o644, GROUP.as_bytes())?;
    layer.file("etc/passwd", 0o644, PASSWD.as_bytes())?;
    for applet in &applets {
        layer.hardlink(applet, "bin/busybox")?;
    }
    layer.finish()
}

/// Layered image, layer 1: data files, a symlink, a setuid file, an xattr
/// and a fifo.
pub(crate) fn layered_l1() -> Result<Vec<u8>> {
    let mut l = Layer::new();
    l.dir("data", 0o755, 0, 0)?;
    l.file("data/a", 0o644, b"a\n")?;
    l.file_xattrs("data/b", 0o644, b"b v1\n", &[("user.berth", b"yes")])?;
    l.fifo("data/fifo", 0o644)?;
    l.symlink("data/link", "/data/b")?;
    l.dir("data/sub", 0o755, 0, 0)?;
    l.file("data/sub/keep", 0o644, b"keep\n")?;
    l.file("data/sub/x", 0o644, b"x\n")?;
    l.dir("etc", 0o755, 0, 0)?;
    l.file("etc/removed.conf", 0o644, b"removed\n")?;
    l.dir("usr", 0o755, 0, 0)?;
    l.dir("usr/local", 0o755, 0, 0)?;
    l.dir("usr/local/bin", 0o755, 0, 0)?;
    l.file("usr/local/bin/suid", 0o4755, b"#!/bin/sh\necho suid\n")?;
    l.finish()
}

/// Layered image, layer 2: whiteouts, an opaque directory and a modified file.
pub(crate) fn layered_l2() -> Result<Vec<u8>> {
    let mut l = Layer::new();
    l.dir("data", 0o755, 0, 0)?;
    l.file("data/.wh.a", 0o644, b"")?;
    l.file_xattrs("data/b", 0o644, b"b v2\n", &[("user.berth", b"yes")])?;
    l.dir("data/sub", 0o755, 0, 0)?;
    l.file("data/sub/.wh..wh..opq", 0o644, b"")?;
    l.file("data/sub/y", 0o644, b"y\n")?;
    l.dir("etc", 0o755, 0, 0)?;
    l.file("etc/.wh.removed.conf", 0o644, b"")?;
    l.finish()
}

#[cfg(test)]
mod tests {
    use super::{has_interpreter, pax_record};

    #[test]
    fn static_busybox_has_no_interpreter() {
        if let Ok(bb) = std::fs::read(super::HOST_BUSYBOX) {
            assert!(!has_interpreter(&bb));
        }
        let sh = std::fs::read("/bin/sh").unwrap();
        if sh.get(..6) == Some(&b"\x7fELF\x02\x01"[..]) {
            assert!(has_interpreter(&sh), "/bin/sh is dynamic on Debian");
        }
        assert!(!has_interpreter(b"#!/bin/sh\n"));
    }

    #[test]
    fn pax_record_length_counts_itself() {
        for (k, v) in [("a", &b"b"[..]), ("SCHILY.xattr.user.berth", &b"yes"[..])] {
            let mut out = Vec::new();
            pax_record(&mut out, k, v);
            let text = String::from_utf8(out.clone()).unwrap();
            let (len, _) = text.split_once(' ').unwrap();
            assert_eq!(len.parse::<usize>().unwrap(), out.len(), "{text:?}");
        }
        let mut out = Vec::new();
        pax_record(&mut out, "k", &[b'v'; 95]);
        assert_eq!(&out[..4], b"102 ");
        assert_eq!(out.len(), 102);
    }
}
