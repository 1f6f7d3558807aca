//! `berth images`, `image import`, `rmi`, `tag`.

use std::io::Read;

use anyhow::{Context, Result};
use berth_engine::Engine;

use crate::cli::{ImagesArgs, ImportArgs, RmiArgs, TagArgs};
use crate::format::{ago, human_size, short_id, Table};

pub fn import(engine: &mut Engine, a: &ImportArgs) -> Result<u8> {
    let reader: Box<dyn Read> = if a.file == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(&a.file).with_context(|| format!("cannot open {}", a.file))?)
    };
    let images = engine.import(
        std::io::BufReader::with_capacity(256 * 1024, reader),
        a.tag.as_deref(),
    )?;
    for img in images {
        for w in &img.warnings {
            eprintln!("berth: warning: {w}");
        }
        if a.quiet {
            println!("{}", img.id);
        } else if img.tags.is_empty() {
            println!("Loaded image ID: {}", img.id);
        } else {
            for t in &img.tags {
                println!("Loaded image: {t}");
            }
        }
    }
    Ok(0)
}

pub fn list(engine: &mut Engine, a: &ImagesArgs) -> Result<u8> {
    let images = engine.images()?;
    if a.quiet {
        for i in &images {
            println!(
                "{}",
                if a.no_trunc {
                    i.id.clone()
                } else {
                    short_id(&i.id)
                }
            );
        }
        return Ok(0);
    }
    let mut t = Table::new(&["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]);
    for i in &images {
        let id = if a.no_trunc {
            i.id.clone()
        } else {
            short_id(&i.id)
        };
        let names: Vec<(String, String)> = if i.tags.is_empty() {
            vec![("<none>".into(), "<none>".into())]
        } else {
            i.tags
                .iter()
                .map(|t| match t.rsplit_once(':') {
                    Some((r, tag)) if !tag.contains('/') => (r.to_string(), tag.to_string()),
                    _ => (t.clone(), "<none>".into()),
                })
                .collect()
        };
        for (repo, tag) in names {
            t.row(vec![
                repo,
                tag,
                id.clone(),
                ago(i.created),
                human_size(i.size),
            ]);
        }
    }
    t.print();
    Ok(0)
}

pub fn remove(engine: &mut Engine, a: &RmiArgs) -> Result<u8> {
    let mut failed = false;
    for name in &a.images {
        match engine.remove_image(name, a.force) {
            Ok(lines) => lines.iter().for_each(|l| println!("{l}")),
            Err(e) => {
                eprintln!("berth: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

pub fn tag(engine: &mut Engine, a: &TagArgs) -> Result<u8> {
    engine.tag(&a.source, &a.target)?;
    Ok(0)
}
