//! Records in SQLite: images, tags and containers. Every change is one
//! transaction, so a record is never half-written.

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use crate::EngineError;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY,
    manifest_digest TEXT,
    config BLOB NOT NULL,
    diff_ids TEXT NOT NULL,
    layer_digests TEXT NOT NULL,
    size INTEGER NOT NULL,
    created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tags (
    name TEXT PRIMARY KEY,
    image_id TEXT NOT NULL REFERENCES images(id)
);
CREATE TABLE IF NOT EXISTS containers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    image_id TEXT NOT NULL,
    image_ref TEXT NOT NULL,
    created INTEGER NOT NULL,
    state TEXT NOT NULL,
    pid INTEGER NOT NULL DEFAULT 0,
    pid_start INTEGER NOT NULL DEFAULT 0,
    exit_code INTEGER NOT NULL DEFAULT 0,
    oom_killed INTEGER NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    started_at INTEGER NOT NULL DEFAULT 0,
    finished_at INTEGER NOT NULL DEFAULT 0,
    config TEXT NOT NULL
);
PRAGMA user_version = 1;
";

/// Schema changes after version 1, applied in order.
const MIGRATIONS: &[&str] = &[
    "
ALTER TABLE containers ADD COLUMN restart_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE containers ADD COLUMN monitor_pid INTEGER NOT NULL DEFAULT 0;
ALTER TABLE containers ADD COLUMN monitor_start INTEGER NOT NULL DEFAULT 0;
ALTER TABLE containers ADD COLUMN stop_requested INTEGER NOT NULL DEFAULT 0;
",
    crate::netdb::MIGRATION,
];

/// An image record.
#[derive(Debug, Clone)]
pub struct ImageRow {
    pub id: String,
    pub manifest_digest: Option<String>,
    pub config: Vec<u8>,
    pub diff_ids: Vec<String>,
    pub layer_digests: Vec<String>,
    pub size: u64,
    pub created: i64,
}

/// A container record.
#[derive(Debug, Clone)]
pub struct ContainerRow {
    pub id: String,
    pub name: String,
    pub image_id: String,
    pub image_ref: String,
    pub created: i64,
    pub state: String,
    pub pid: i32,
    pub pid_start: u64,
    pub exit_code: i32,
    pub oom_killed: bool,
    pub error: String,
    pub started_at: i64,
    pub finished_at: i64,
    /// The container's creation options as JSON ([`crate::ContainerConfig`]).
    pub config: String,
    pub restart_count: i64,
    /// The berth-monitor of a detached container (0: none).
    pub monitor_pid: i32,
    pub monitor_start: u64,
    /// Set by stop/kill: the monitor must not restart the container.
    pub stop_requested: bool,
}

pub struct Db {
    conn: Connection,
}

fn json_list(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_default()
}

impl Db {
    pub fn open(path: &Path) -> Result<Db, EngineError> {
        let mut conn = Connection::open(path)
            .map_err(|e| EngineError::Db(format!("{}: {e}", path.display())))?;
        conn.busy_timeout(Duration::from_secs(30))?;
        // WAL: readers never wait for writers; NORMAL: no fsync per commit,
        // still atomic and consistent after a crash.
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Every CLI call opens and closes the database: without this, each
        // close checkpoints and deletes the WAL and the next write recreates
        // it, three fsyncs (~10 ms here) per command. Checkpoints still run
        // automatically once the WAL passes 1000 pages.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
            true,
        )?;
        let latest = 1 + MIGRATIONS.len() as i64;
        if version < latest {
            // IMMEDIATE: two first commands racing on a new store must not
            // both migrate.
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
            if version < 1 {
                tx.execute_batch(SCHEMA)?;
            }
            for (i, m) in MIGRATIONS.iter().enumerate() {
                if version.max(1) <= i as i64 + 1 {
                    tx.execute_batch(m)?;
                }
            }
            tx.pragma_update(None, "user_version", latest)?;
            tx.commit()?;
        }
        Ok(Db { conn })
    }

    pub fn conn(&mut self) -> &mut Connection {
        &mut self.conn
    }

    // ---- images ----

    pub fn image(&self, id: &str) -> Result<Option<ImageRow>, EngineError> {
        let row = self
            .conn
            .query_row(
                "SELECT id, manifest_digest, config, diff_ids, layer_digests, size, created FROM images WHERE id = ?1",
                params![id],
                image_row,
            )
            .optional()?;
        Ok(row)
    }

    pub fn images(&self) -> Result<Vec<ImageRow>, EngineError> {
        let mut st = self.conn.prepare(
            "SELECT id, manifest_digest, config, diff_ids, layer_digests, size, created FROM images ORDER BY created DESC, id",
        )?;
        let rows = st
            .query_map([], image_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Image IDs starting with `prefix` (hex, with or without "sha256:").
    pub fn image_ids_with_prefix(&self, prefix: &str) -> Result<Vec<String>, EngineError> {
        let p = prefix.strip_prefix("sha256:").unwrap_or(prefix);
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Vec::new());
        }
        let mut st = self
            .conn
            .prepare("SELECT id FROM images WHERE id >= ?1 AND id < ?2")?;
        let lo = format!("sha256:{p}");
        let hi = format!("sha256:{p}\u{7f}");
        let rows = st
            .query_map(params![lo, hi], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn tag_target(&self, name: &str) -> Result<Option<String>, EngineError> {
        Ok(self
            .conn
            .query_row(
                "SELECT image_id FROM tags WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn tags_of(&self, image_id: &str) -> Result<Vec<String>, EngineError> {
        let mut st = self
            .conn
            .prepare("SELECT name FROM tags WHERE image_id = ?1 ORDER BY name")?;
        let rows = st
            .query_map(params![image_id], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    // ---- containers ----

    pub fn container(&self, id: &str) -> Result<Option<ContainerRow>, EngineError> {
        Ok(self
            .conn
            .query_row(
                &format!("{CONTAINER_SELECT} WHERE id = ?1"),
                params![id],
                container_row,
            )
            .optional()?)
    }

    /// Finds a container by full ID, unique ID prefix, or name.
    pub fn find_container(&self, key: &str) -> Result<Option<ContainerRow>, EngineError> {
        let key = key.strip_prefix('/').unwrap_or(key);
        if let Some(row) = self
            .conn
            .query_row(
                &format!("{CONTAINER_SELECT} WHERE id = ?1 OR name = ?1"),
                params![key],
                container_row,
            )
            .optional()?
        {
            return Ok(Some(row));
        }
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let mut st = self.conn.prepare(&format!(
            "{CONTAINER_SELECT} WHERE id >= ?1 AND id < ?2 LIMIT 2"
        ))?;
        let rows = st
            .query_map(params![key, format!("{key}\u{7f}")], container_row)?
            .collect::<Result<Vec<_>, _>>()?;
        match rows.len() {
            1 => Ok(rows.into_iter().next()),
            0 => Ok(None),
            _ => Err(EngineError::Ambiguous(key.to_string())),
        }
    }

    pub fn containers(&self) -> Result<Vec<ContainerRow>, EngineError> {
        let mut st = self
            .conn
            .prepare(&format!("{CONTAINER_SELECT} ORDER BY created DESC, id"))?;
        let rows = st
            .query_map([], container_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn containers_using_image(&self, image_id: &str) -> Result<Vec<ContainerRow>, EngineError> {
        let mut st = self
            .conn
            .prepare(&format!("{CONTAINER_SELECT} WHERE image_id = ?1"))?;
        let rows = st
            .query_map(params![image_id], container_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Turns a UNIQUE violation on the name into [`EngineError::NameInUse`].
    fn name_conflict(&self, res: rusqlite::Result<usize>, name: &str) -> Result<(), EngineError> {
        match res {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                let other: Option<String> = self
                    .conn
                    .query_row(
                        "SELECT id FROM containers WHERE name = ?1",
                        params![name],
                        |r| r.get(0),
                    )
                    .optional()?;
                Err(EngineError::NameInUse {
                    name: name.to_string(),
                    id: other.unwrap_or_default(),
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    pub fn insert_container(&mut self, c: &ContainerRow) -> Result<(), EngineError> {
        let res = self.conn.execute(
            "INSERT INTO containers (id, name, image_id, image_ref, created, state, config) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![c.id, c.name, c.image_id, c.image_ref, c.created, c.state, c.config],
        );
        self.name_conflict(res, &c.name)
    }

    pub fn set_running(
        &mut self,
        id: &str,
        pid: i32,
        pid_start: u64,
        at: i64,
    ) -> Result<(), EngineError> {
        self.conn.execute(
            "UPDATE containers SET state = 'running', pid = ?2, pid_start = ?3, started_at = ?4, exit_code = 0, oom_killed = 0, error = '' WHERE id = ?1",
            params![id, pid, pid_start as i64, at],
        )?;
        Ok(())
    }

    pub fn set_exited(
        &mut self,
        id: &str,
        code: i32,
        oom: bool,
        error: &str,
        at: i64,
    ) -> Result<(), EngineError> {
        self.conn.execute(
            "UPDATE containers SET state = 'exited', pid = 0, exit_code = ?2, oom_killed = ?3, error = ?4, finished_at = ?5 WHERE id = ?1",
            params![id, code, oom, error, at],
        )?;
        Ok(())
    }

    pub fn set_monitor(&mut self, id: &str, pid: i32, start: u64) -> Result<(), EngineError> {
        self.conn.execute(
            "UPDATE containers SET monitor_pid = ?2, monitor_start = ?3 WHERE id = ?1",
            params![id, pid, start as i64],
        )?;
        Ok(())
    }

    pub fn set_stop_requested(&mut self, id: &str, v: bool) -> Result<(), EngineError> {
        self.conn.execute(
            "UPDATE containers SET stop_requested = ?2 WHERE id = ?1",
            params![id, v],
        )?;
        Ok(())
    }

    pub fn set_state(&mut self, id: &str, state: &str) -> Result<(), EngineError> {
        self.conn.execute(
            "UPDATE containers SET state = ?2 WHERE id = ?1",
            params![id, state],
        )?;
        Ok(())
    }

    pub fn bump_restart_count(&mut self, id: &str) -> Result<(), EngineError> {
        self.conn.execute(
            "UPDATE containers SET restart_count = restart_count + 1, state = 'restarting' WHERE id = ?1",
            params![id],
        )?;
        Ok(())
    }

    pub fn rename(&mut self, id: &str, name: &str) -> Result<(), EngineError> {
        let res = self.conn.execute(
            "UPDATE containers SET name = ?2 WHERE id = ?1",
            params![id, name],
        );
        self.name_conflict(res, name)
    }

    pub fn delete_container(&mut self, id: &str) -> Result<(), EngineError> {
        self.conn
            .execute("DELETE FROM containers WHERE id = ?1", params![id])?;
        Ok(())
    }
}

const CONTAINER_SELECT: &str = "SELECT id, name, image_id, image_ref, created, state, pid, pid_start, exit_code, oom_killed, error, started_at, finished_at, config, restart_count, monitor_pid, monitor_start, stop_requested FROM containers";

fn image_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ImageRow> {
    Ok(ImageRow {
        id: r.get(0)?,
        manifest_digest: r.get(1)?,
        config: r.get(2)?,
        diff_ids: json_list(&r.get::<_, String>(3)?),
        layer_digests: json_list(&r.get::<_, String>(4)?),
        size: r.get::<_, i64>(5)? as u64,
        created: r.get(6)?,
    })
}

fn container_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ContainerRow> {
    Ok(ContainerRow {
        id: r.get(0)?,
        name: r.get(1)?,
        image_id: r.get(2)?,
        image_ref: r.get(3)?,
        created: r.get(4)?,
        state: r.get(5)?,
        pid: r.get(6)?,
        pid_start: r.get::<_, i64>(7)? as u64,
        exit_code: r.get(8)?,
        oom_killed: r.get(9)?,
        error: r.get(10)?,
        started_at: r.get(11)?,
        finished_at: r.get(12)?,
        config: r.get(13)?,
        restart_count: r.get(14)?,
        monitor_pid: r.get(15)?,
        monitor_start: r.get::<_, i64>(16)? as u64,
        stop_requested: r.get(17)?,
    })
}
