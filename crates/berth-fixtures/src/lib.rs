//! Real image archives for tests, the demo and benchmarks, written without
//! any container tool.
//!
//! Layers are built entry by entry with the `tar` crate from the host's
//! static busybox (Debian `busybox-static`), digests are computed here, and
//! every byte is deterministic (fixed mtimes, owners and entry order, gzip
//! header mtime 0, fixed zstd level), so the same [`ImageSpec`] always gives
//! the same archive and the same digests.
//!
//! Two archive formats are written:
//! - [`Format::Oci`]: an OCI image layout as a tar (`oci-layout`,
//!   `index.json`, `blobs/sha256/<hex>` for manifest, config and layers).
//!   The index's manifest descriptor carries the annotations
//!   `io.containerd.image.name` = [`ImageSpec::name`] as written and
//!   `org.opencontainers.image.ref.name` = its tag part (`latest` if none).
//! - [`Format::DockerSave`]: the classic `docker save` layout
//!   (`manifest.json`, `repositories`, `<config hex>.json`,
//!   `<layer hex>/layer.tar`), where `<layer hex>` is the sha256 of the stored
//!   `layer.tar` (which is compressed unless [`Compression::None`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};

mod archive;
pub mod attack;
mod evil;
mod layers;
mod multi;

/// The archive layout to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OCI image layout in a tar.
    Oci,
    /// `docker save` layout (`manifest.json`).
    DockerSave,
}

/// How layer blobs are compressed (media types
/// `application/vnd.oci.image.layer.v1.tar`, `...tar+gzip`, `...tar+zstd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// What to build: image name, archive format, compression and the runtime
/// config stored in the image config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    /// Reference as written, e.g. `busybox:latest` (the tag defaults to
    /// `latest` where one is needed).
    pub name: String,
    pub format: Format,
    pub compression: Compression,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    /// `KEY=VALUE` entries.
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    /// `80/tcp`, `53/udp`; a bare `80` is stored as `80/tcp`.
    pub exposed_ports: Vec<String>,
    pub stop_signal: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// OCI architecture name, `amd64` by default.
    pub arch: String,
}

impl Default for ImageSpec {
    /// `busybox:latest`, OCI, gzip, cmd `["sh"]`, the usual `PATH`, amd64.
    fn default() -> Self {
        Self {
            name: "busybox:latest".into(),
            format: Format::Oci,
            compression: Compression::Gzip,
            entrypoint: None,
            cmd: Some(vec!["sh".into()]),
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            workdir: None,
            user: None,
            exposed_ports: Vec::new(),
            stop_signal: None,
            labels: BTreeMap::new(),
            arch: "amd64".into(),
        }
    }
}

/// A one-layer image: the busybox layer.
///
/// The layer holds `/bin/busybox` (the host's static binary, mode 0755) and,
/// for each applet of `busybox --list-full` (`bin/sh`, `usr/bin/env`, ...), a
/// hard link to `bin/busybox`; directories `/bin /sbin /usr/bin /usr/sbin
/// /etc /home /var /proc /sys /dev` (0755), `/tmp` (01777), `/root` (0700),
/// `/home/app` (0755, owned 1000:1000); `/etc/passwd` (root 0, daemon 1,
/// nobody 65534, `app:x:1000:1000::/home/app:/bin/sh`) and `/etc/group`
/// (root 0, daemon 1, nogroup 65534, app 1000, `extra:x:2000:app`). There is
/// no `/etc/hostname`. Everything else is owned by root.
///
/// Fails with a message naming `busybox-static` if `/bin/busybox` is missing.
pub fn busybox_image(spec: &ImageSpec, out: &Path) -> Result<()> {
    let tars = vec![(layers::busybox_layer()?, "berth-fixtures: busybox")];
    write_atomic(out, &archive::image_bytes(spec, tars)?)
}

/// A three-layer image exercising unpack and overlay semantics.
///
/// - **L0**: the busybox layer (see [`busybox_image`]).
/// - **L1** adds `/data/a` (`"a\n"`), `/data/b` (`"b v1\n"`, xattr
///   `user.berth=yes` as PAX `SCHILY.xattr.user.berth`), `/data/fifo` (a
///   fifo, 0644), `/data/link` (symlink to `/data/b`), `/data/sub/keep`
///   (`"keep\n"`), `/data/sub/x` (`"x\n"`), `/etc/removed.conf`
///   (`"removed\n"`) and `/usr/local/bin/suid` (mode 04755, a shell script).
/// - **L2** has the whiteouts `/data/.wh.a` and `/etc/.wh.removed.conf`, the
///   opaque marker `/data/sub/.wh..wh..opq`, a new `/data/sub/y` (`"y\n"`)
///   and a new `/data/b` (`"b v2\n"`, again with `user.berth=yes`).
///
/// A correct unpack of all three layers, in order, with whiteouts applied
/// (or an overlay mount of the three unpacked layers) shows:
/// - `/data/a` does not exist;
/// - `/data/b` is a regular file containing exactly `"b v2\n"`, mode 0644,
///   with xattr `user.berth` = `yes` (where the filesystem supports user
///   xattrs);
/// - `/data/sub` contains exactly one entry, `y` (`"y\n"`): `x` and `keep`
///   are hidden by the opaque marker;
/// - `/data/link` is still a symlink whose target is `/data/b`, so reading
///   it through the rootfs gives `"b v2\n"`;
/// - `/data/fifo` is a fifo;
/// - `/etc/removed.conf` does not exist, while `/etc/passwd` and
///   `/etc/group` still do;
/// - `/usr/local/bin/suid` is a regular file with mode 04755 owned 0:0;
/// - no `.wh.*` name exists anywhere in the result;
/// - everything from L0 is intact (`/bin/sh`, `/usr/bin/env`, ...).
pub fn layered_image(spec: &ImageSpec, out: &Path) -> Result<()> {
    let tars = vec![
        (layers::busybox_layer()?, "berth-fixtures: busybox"),
        (
            layers::layered_l1()?,
            "berth-fixtures: L1 data files, symlink, setuid, xattr, fifo",
        ),
        (
            layers::layered_l2()?,
            "berth-fixtures: L2 whiteouts, opaque dir, modified file",
        ),
    ];
    write_atomic(out, &archive::image_bytes(spec, tars)?)
}

/// A multi-platform image: an OCI image layout whose `index.json` has one
/// entry, named [`ImageSpec::name`] (annotations as for [`Format::Oci`]),
/// pointing at an image index with one manifest per architecture of
/// `archs` (platform `linux/<arch>`, variant `v8` for `arm64` and `v7` for
/// `arm`). Each image has the busybox layer and a second layer holding
/// [`ARCH_FILE`] with the architecture's name and a newline; its config
/// says that architecture. `spec.format` is ignored (always OCI).
pub fn multiarch_image(spec: &ImageSpec, archs: &[&str], out: &Path) -> Result<()> {
    write_atomic(out, &multi::multiarch_bytes(spec, archs)?)
}

/// The file (no leading `/`) that tells a [`multiarch_image`] platform.
pub const ARCH_FILE: &str = multi::ARCH_FILE;

/// A large multi-layer image for benchmarks: the busybox layer and
/// `layers` layers of `layer_mib` MiB each, in 4 MiB files under
/// `/data/layer<N>/`, alternately pseudo-random (incompressible) and text
/// (compressible), deterministic like every fixture.
pub fn big_image(spec: &ImageSpec, layers: usize, layer_mib: usize, out: &Path) -> Result<()> {
    write_atomic(out, &multi::big_bytes(spec, layers, layer_mib)?)
}

/// The file name every path-escape fixture tries to create outside the
/// rootfs (as `/tmp/escaped-by-berth-test` or `../escaped-by-berth-test`).
pub const ESCAPE_FILE_NAME: &str = evil::ESCAPE_NAME;

/// Hostile archives. All are OCI layouts (`evil:latest`, gzip) whose first
/// layer is the busybox layer; where a bad layer is involved it is the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evil {
    /// Layer entry `../escaped-by-berth-test` (a regular file).
    DotDot,
    /// Symlink `evil -> /tmp`, then a file `evil/escaped-by-berth-test`.
    AbsSymlinkWriteThrough,
    /// Symlink `evil -> ../../../../../../tmp`, then a file
    /// `evil/escaped-by-berth-test`.
    RelSymlinkWriteThrough,
    /// Hard link `h` whose link name is `../../../../etc/passwd`.
    HardlinkOutside,
    /// The second layer (uncompressed, `application/vnd.oci.image.layer.v1.tar`)
    /// is stored under the digest and size the manifest claims, but its
    /// bytes hash to something else: only hashing finds the mismatch.
    BadLayerDigest,
    /// A valid one-layer archive cut in the middle of the layer blob.
    Truncated,
    /// `index.json` is not JSON.
    NotJson,
}

/// Writes the hostile archive `kind` to `out`.
pub fn evil_image(kind: Evil, out: &Path) -> Result<()> {
    write_atomic(out, &evil::evil_bytes(kind)?)
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh temporary path next to `path` (same directory, so rename is atomic).
fn tmp_next_to(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

/// Writes `bytes` to a temporary file next to `out`, then renames it over
/// `out`, so readers never see a partial archive.
fn write_atomic(out: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_next_to(out);
    if let Err(e) = std::fs::write(&tmp, bytes) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", tmp.display()));
    }
    std::fs::rename(&tmp, out)
        .with_context(|| format!("renaming {} to {}", tmp.display(), out.display()))
}

/// Returns `dir/name`, building it first with `build` if it does not exist.
///
/// `build` is given a temporary path in `dir` to write to; the result is then
/// renamed to `dir/name`, so concurrent test processes never see a partial
/// file (two racing builders both rename; fixtures are deterministic, so
/// either result is the same). `dir` is created if needed.
///
/// ```no_run
/// # fn main() -> anyhow::Result<()> {
/// use berth_fixtures::{busybox_image, cached, ImageSpec};
/// let dir = std::env::temp_dir().join("berth-fixtures");
/// let img = cached(&dir, "busybox-oci-gzip.tar", |p| busybox_image(&ImageSpec::default(), p))?;
/// # Ok(()) }
/// ```
pub fn cached(dir: &Path, name: &str, build: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
    let path = dir.join(name);
    if path.is_file() {
        return Ok(path);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = tmp_next_to(&path);
    if let Err(e) = build(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.context(format!("building fixture {}", path.display())));
    }
    std::fs::rename(&tmp, &path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(path)
}
