//! `berth ps`, `rm`, `inspect`.

use anyhow::Result;
use berth_engine::{ContainerConfig, Engine, EngineError};

use crate::cli::{PsArgs, RmArgs};
use crate::format::{ago, human_duration, Table};

pub fn ps(engine: &mut Engine, a: &PsArgs) -> Result<u8> {
    let rows = engine.containers()?;
    let rows: Vec<_> = rows
        .into_iter()
        .filter(|r| a.all || matches!(r.state.as_str(), "running" | "paused" | "restarting"))
        .collect();
    if a.quiet {
        for r in &rows {
            println!(
                "{}",
                if a.no_trunc {
                    r.id.clone()
                } else {
                    r.id[..12].to_string()
                }
            );
        }
        return Ok(0);
    }
    let mut t = Table::new(&[
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
        "ISOLATION",
    ]);
    let mut formatted = Vec::new();
    let now = berth_engine::now();
    for r in &rows {
        let cfg: ContainerConfig = serde_json::from_str(&r.config).unwrap_or_default();
        let ports = engine.port_summary(&r.id);
        let spec_args = std::fs::read(engine.container_dir(&r.id).join("config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["process"]["args"].as_array().cloned())
            .unwrap_or_default();
        let mut command: String = spec_args
            .iter()
            .filter_map(|a| a.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        if command.is_empty() {
            command = cfg.cmd.join(" ");
        }
        if !a.no_trunc && command.chars().count() > 20 {
            command = command.chars().take(19).collect::<String>() + "…";
        }
        let mut status = match r.state.as_str() {
            "running" => format!("Up {}", human_duration(now - r.started_at)),
            "paused" => format!("Up {} (Paused)", human_duration(now - r.started_at)),
            "restarting" => format!(
                "Restarting ({}) {} ago",
                r.exit_code,
                human_duration(now - r.finished_at)
            ),
            "exited" => format!(
                "Exited ({}) {} ago",
                r.exit_code,
                human_duration(now - r.finished_at)
            ),
            "created" => "Created".to_string(),
            s => s.to_string(),
        };
        if r.restart_count > 0 && r.state != "restarting" {
            status.push_str(&format!(" (restarts: {})", r.restart_count));
        }
        if let Some(f) = &a.format {
            let v = serde_json::json!({
                "ID": if a.no_trunc { r.id.clone() } else { r.id[..12].to_string() },
                "Image": r.image_ref, "Command": format!("\"{command}\""),
                "CreatedAt": berth_engine::containers::rfc3339(r.created), "RunningFor": ago(r.created),
                "Ports": ports, "State": r.state, "Status": status, "Names": r.name,
                "RestartCount": r.restart_count, "Labels": "", "Mounts": "", "Networks": "",
                "Isolation": berth_engine::vm::isolation_of(&cfg).name(),
            });
            formatted.push(crate::format::render(f, &v));
            continue;
        }
        t.row(vec![
            if a.no_trunc {
                r.id.clone()
            } else {
                r.id[..12].to_string()
            },
            r.image_ref.clone(),
            format!("\"{command}\""),
            ago(r.created),
            status,
            ports,
            r.name.clone(),
            berth_engine::vm::isolation_of(&cfg).name().to_string(),
        ]);
    }
    if a.format.is_some() {
        for line in formatted {
            println!("{line}");
        }
        return Ok(0);
    }
    t.print();
    Ok(0)
}

pub fn rm(engine: &mut Engine, a: &RmArgs) -> Result<u8> {
    let mut failed = false;
    for c in &a.containers {
        match engine.remove(c, a.force) {
            Ok(_) => println!("{c}"),
            Err(e) => {
                eprintln!("berth: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

/// `berth inspect`: containers first, then images, as Docker does.
pub fn inspect(
    engine: &mut Engine,
    names: &[String],
    typ: Option<&str>,
    format: Option<&str>,
) -> Result<u8> {
    let mut out = Vec::new();
    let mut failed = false;
    for n in names {
        let found = match typ {
            Some("image") => engine.inspect_image(n),
            Some("container") => engine.inspect_container(n),
            Some(other) => {
                return Err(anyhow::anyhow!(
                    "unknown --type {other:?}: expected container or image"
                ))
            }
            None => match engine.inspect_container(n) {
                Err(EngineError::NoSuchContainer(_)) => engine
                    .inspect_image(n)
                    .map_err(|_| EngineError::Invalid(format!("no such object: {n}"))),
                other => other,
            },
        };
        match found {
            Ok(v) => out.push(v),
            Err(e) => {
                eprintln!("berth: {e}");
                failed = true;
            }
        }
    }
    match format {
        Some(f) => {
            for v in &out {
                println!("{}", crate::format::render(f, v));
            }
        }
        None => println!("{}", serde_json::to_string_pretty(&out)?),
    }
    Ok(if failed { 1 } else { 0 })
}
