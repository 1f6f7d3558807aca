//! `berth-fixture`: writes test image archives (see the `berth_fixtures` crate).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use berth_fixtures::ImageSpec;
use berth_fixtures::{
    big_image, busybox_image, evil_image, layered_image, multiarch_image, Compression, Evil, Format,
};

const USAGE: &str = "usage:
  berth-fixture busybox  --out FILE [--format oci|docker] [--compression gzip|zstd|none] [--name NAME]
                         [--cmd ARG]... [--entrypoint ARG]... [--env K=V]... [--workdir DIR] [--user U]
                         [--expose 80/tcp]... [--stop-signal SIG] [--label K=V]... [--arch ARCH]
  berth-fixture layered  --out FILE [same options]
  berth-fixture multiarch --out FILE [same options] [--archs amd64,arm64]   (an OCI index, one image per arch)
  berth-fixture big      --out FILE [same options] [--layers 4] [--layer-mib 50]
  berth-fixture evil     --kind dotdot|abs-symlink|rel-symlink|hardlink-outside|bad-digest|truncated|not-json --out FILE";

enum Job {
    Busybox(ImageSpec),
    Layered(ImageSpec),
    Multiarch(ImageSpec, Vec<String>),
    Big(ImageSpec, usize, usize),
    Evil(Evil),
}

fn parse_format(s: &str) -> Result<Format> {
    match s {
        "oci" => Ok(Format::Oci),
        "docker" | "docker-save" => Ok(Format::DockerSave),
        _ => bail!("unknown --format {s:?} (expected oci or docker)"),
    }
}

fn parse_compression(s: &str) -> Result<Compression> {
    match s {
        "gzip" | "gz" => Ok(Compression::Gzip),
        "zstd" | "zst" => Ok(Compression::Zstd),
        "none" => Ok(Compression::None),
        _ => bail!("unknown --compression {s:?} (expected gzip, zstd or none)"),
    }
}

fn parse_evil(s: &str) -> Result<Evil> {
    Ok(match s {
        "dotdot" => Evil::DotDot,
        "abs-symlink" => Evil::AbsSymlinkWriteThrough,
        "rel-symlink" => Evil::RelSymlinkWriteThrough,
        "hardlink-outside" => Evil::HardlinkOutside,
        "bad-digest" => Evil::BadLayerDigest,
        "truncated" => Evil::Truncated,
        "not-json" => Evil::NotJson,
        _ => bail!(
            "unknown --kind {s:?} (expected dotdot, abs-symlink, rel-symlink, \
             hardlink-outside, bad-digest, truncated or not-json)"
        ),
    })
}

fn parse(args: &[String]) -> Result<(Job, PathBuf)> {
    let (cmd, rest) = args
        .split_first()
        .ok_or_else(|| anyhow!("missing command"))?;
    let is_image = matches!(cmd.as_str(), "busybox" | "layered" | "multiarch" | "big");
    if !is_image && cmd != "evil" {
        bail!("unknown command {cmd:?} (expected busybox, layered, multiarch, big or evil)");
    }
    let mut archs = vec!["amd64".to_owned(), "arm64".to_owned()];
    let (mut layers, mut layer_mib) = (4usize, 50usize);
    let mut spec = ImageSpec::default();
    let (mut cmd_args, mut entrypoint, mut env) = (Vec::new(), Vec::new(), Vec::new());
    let (mut out, mut kind) = (None, None);
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let (flag, inline) = match flag.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (flag.as_str(), None),
        };
        let mut value = || -> Result<String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| anyhow!("{flag} needs a value")),
            }
        };
        match (flag, is_image) {
            ("--out", _) => out = Some(PathBuf::from(value()?)),
            ("--kind", false) => kind = Some(parse_evil(&value()?)?),
            ("--format", true) => spec.format = parse_format(&value()?)?,
            ("--compression", true) => spec.compression = parse_compression(&value()?)?,
            ("--name", true) => spec.name = value()?,
            ("--cmd", true) => cmd_args.push(value()?),
            ("--entrypoint", true) => entrypoint.push(value()?),
            ("--env", true) => {
                let v = value()?;
                if !v.contains('=') {
                    bail!("--env {v:?}: expected KEY=VALUE");
                }
                env.push(v);
            }
            ("--workdir", true) => spec.workdir = Some(value()?),
            ("--user", true) => spec.user = Some(value()?),
            ("--expose", true) => spec.exposed_ports.push(value()?),
            ("--stop-signal", true) => spec.stop_signal = Some(value()?),
            ("--arch", true) => spec.arch = value()?,
            ("--archs", true) => archs = value()?.split(',').map(String::from).collect(),
            ("--layers", true) => layers = value()?.parse().context("--layers: not a number")?,
            ("--layer-mib", true) => {
                layer_mib = value()?.parse().context("--layer-mib: not a number")?
            }
            ("--label", true) => {
                let v = value()?;
                let (k, val) = v
                    .split_once('=')
                    .ok_or_else(|| anyhow!("--label {v:?}: expected KEY=VALUE"))?;
                spec.labels.insert(k.to_string(), val.to_string());
            }
            _ => bail!("unknown option {flag:?} for {cmd}"),
        }
    }
    let out = out.ok_or_else(|| anyhow!("--out FILE is required"))?;
    if !cmd_args.is_empty() {
        spec.cmd = Some(cmd_args);
    }
    if !entrypoint.is_empty() {
        spec.entrypoint = Some(entrypoint);
    }
    for kv in env {
        // A later KEY=... replaces an earlier one (e.g. the default PATH).
        let key = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k);
        spec.env
            .retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
        spec.env.push(kv);
    }
    let job = match cmd.as_str() {
        "busybox" => Job::Busybox(spec),
        "layered" => Job::Layered(spec),
        "multiarch" => Job::Multiarch(spec, archs),
        "big" => Job::Big(spec, layers, layer_mib),
        _ => Job::Evil(kind.ok_or_else(|| anyhow!("evil: --kind is required"))?),
    };
    Ok((job, out))
}

fn run(args: &[String]) -> Result<()> {
    let (job, out) = parse(args)?;
    match job {
        Job::Busybox(spec) => busybox_image(&spec, &out),
        Job::Layered(spec) => layered_image(&spec, &out),
        Job::Multiarch(spec, archs) => {
            let archs: Vec<&str> = archs.iter().map(String::as_str).collect();
            multiarch_image(&spec, &archs, &out)
        }
        Job::Big(spec, layers, mib) => big_image(&spec, layers, mib, &out),
        Job::Evil(kind) => evil_image(kind, &out),
    }
    .with_context(|| format!("writing {}", out.display()))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return if args.is_empty() {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-fixture: {e:#}");
            ExitCode::from(1)
        }
    }
}
