//! `berth run` and `berth create`.

use anyhow::{bail, Context, Result};
use berth_engine::config::RestartPolicy;
use berth_engine::{ContainerConfig, Engine, TmpfsMount};

use crate::cli::{ContainerOpts, CreateArgs, RunArgs};
use berth_engine::flags::{parse_bytes, parse_volume};

pub fn run(engine: &mut Engine, a: RunArgs) -> Result<u8> {
    let mut cfg = to_config(a.opts)?;
    super::registry::ensure_image(engine, &cfg.image, &a.pull)?;
    cfg.auto_remove = a.rm;
    if a.detach || !cfg.restart.is_none() {
        // Detached (or restartable): the container runs under its monitor.
        let detach = a.detach;
        let c = engine.create(cfg, None)?;
        let id = c.row.id.clone();
        drop(c);
        let since = berth_engine::now();
        engine.start_detached(&id)?;
        if detach {
            println!("{id}");
            return Ok(0);
        }
        return crate::commands::logs::attach_and_wait(engine, &id, since);
    }
    let (_, exit) = berth_engine::run::run_foreground(engine, cfg)?;
    Ok(u8::try_from(exit.code & 0xff).unwrap_or(255))
}

pub fn create(engine: &mut Engine, a: CreateArgs) -> Result<u8> {
    let mut cfg = to_config(a.opts)?;
    super::registry::ensure_image(engine, &cfg.image, &a.pull)?;
    cfg.auto_remove = a.rm;
    match a.bundle_only {
        Some(dir) => {
            engine.write_bundle(&dir, &cfg)?;
            println!("{}", dir.display());
        }
        None => {
            let c = engine.create(cfg, None)?;
            // `berth start` runs it under a monitor.
            println!("{}", c.row.id);
        }
    }
    Ok(0)
}

fn env_value(entry: &str) -> Option<String> {
    if entry.contains('=') {
        Some(entry.to_string())
    } else {
        // `-e NAME` copies NAME from this environment; unset means omitted.
        std::env::var(entry).ok().map(|v| format!("{entry}={v}"))
    }
}

fn to_config(o: ContainerOpts) -> Result<ContainerConfig> {
    let mut args = o.image_and_command.into_iter();
    let image = args.next().context("an image name is required")?;
    let mut env = Vec::new();
    for file in &o.env_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading env file {}", file.display()))?;
        for line in text.lines() {
            let line = line.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            env.extend(env_value(line));
        }
    }
    for e in &o.env {
        env.extend(env_value(e));
    }
    let volumes = o
        .volume
        .iter()
        .map(|v| parse_volume(v).map_err(anyhow::Error::msg))
        .collect::<Result<Vec<_>>>()?;
    let tmpfs = o
        .tmpfs
        .iter()
        .map(|t| match t.split_once(':') {
            Some((path, opts)) => TmpfsMount {
                target: path.into(),
                options: opts.split(',').map(String::from).collect(),
            },
            None => TmpfsMount {
                target: t.clone(),
                options: Vec::new(),
            },
        })
        .collect();
    let memory = o
        .memory
        .as_deref()
        .map(|m| {
            parse_bytes(m)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("invalid memory limit {m:?}"))
        })
        .transpose()?;
    let cpus = o
        .cpus
        .as_deref()
        .map(|c| {
            c.parse::<f64>()
                .map_err(|_| anyhow::anyhow!("invalid --cpus value {c:?}: not a number"))
        })
        .transpose()?;
    let entrypoint = o
        .entrypoint
        .map(|e| if e.is_empty() { Vec::new() } else { vec![e] });
    let restart = match &o.restart {
        Some(r) => RestartPolicy::parse(r).map_err(anyhow::Error::msg)?,
        None => RestartPolicy::default(),
    };
    let (mut log_max_size, mut log_max_file) = (0u64, 1u32);
    for opt in &o.log_opt {
        match opt.split_once('=') {
            Some(("max-size", v)) => {
                log_max_size = parse_bytes(v)
                    .map_err(anyhow::Error::msg)
                    .with_context(|| format!("invalid --log-opt {opt:?}"))?
                    as u64
            }
            Some(("max-file", v)) => {
                log_max_file = v.parse::<u32>().ok().filter(|n| *n >= 1).with_context(|| {
                    format!("invalid --log-opt {opt:?}: max-file must be a positive number")
                })?
            }
            _ => bail!("unknown --log-opt {opt:?}: berth supports max-size=SIZE and max-file=N"),
        }
    }
    if let Some(sig) = &o.stop_signal {
        berth_engine::lifecycle::parse_signal(sig)?;
    }
    let network = super::network::config(&o.net)?;
    Ok(ContainerConfig {
        image,
        name: o.name,
        cmd: args.collect(),
        entrypoint,
        env,
        workdir: o.workdir,
        user: o.user,
        hostname: o.hostname,
        read_only: o.read_only,
        volumes,
        tmpfs,
        memory,
        cpus,
        pids_limit: o.pids_limit,
        interactive: o.interactive,
        tty: o.tty,
        auto_remove: false,
        restart,
        log_max_size,
        log_max_file,
        stop_signal: o.stop_signal,
        stop_timeout: o.stop_timeout,
        network,
        isolation: o
            .isolation
            .as_deref()
            .map(berth_engine::vm::Isolation::parse)
            .transpose()
            .map_err(anyhow::Error::msg)?,
    })
}
