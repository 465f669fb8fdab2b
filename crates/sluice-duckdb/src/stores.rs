//! The DuckDB files this process's sinks hold open.
//!
//! DuckDB lets one process at a time open a file for writing, and no other
//! process read it meanwhile. The worker therefore answers read-only
//! queries on the files its sinks write (over its REST listener): each sink
//! registers its database here while it is open, and a query gets a new
//! connection to the same database, reading a consistent snapshot beside
//! the sink's writes.
//!
//! A worker that serves queries names its REST listener
//! ([`set_endpoint`]); each registered file then gets a small side file,
//! `<file>.sluice-worker`, saying where to send queries, so `sluice query`
//! finds the worker that holds a file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex, PoisonError};

use anyhow::Context as _;
use duckdb::Connection;

struct Open {
    /// A connection to the sink's database, cloned for each query.
    conn: Connection,
    /// Sinks holding the file (tasks of one connector may share it).
    holders: usize,
}

#[derive(Default)]
struct Stores {
    open: HashMap<PathBuf, Open>,
    endpoint: Option<String>,
}

static STORES: LazyLock<Mutex<Stores>> = LazyLock::new(Default::default);

fn stores() -> std::sync::MutexGuard<'static, Stores> {
    STORES.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The file as registered: absolute and without `..`, so the path a user
/// gives and the one a sink was configured with meet.
pub fn key(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()))
}

/// The side file naming the worker that holds `db`.
pub fn sidecar(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(".sluice-worker");
    PathBuf::from(s)
}

/// Where a worker that holds `db` takes queries, if one said so and its
/// process still runs.
pub fn worker_of(db: &Path) -> Option<String> {
    let text = std::fs::read_to_string(sidecar(db)).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let pid = v.get("pid")?.as_u64()?;
    if !Path::new(&format!("/proc/{pid}")).exists() {
        return None;
    }
    v.get("url")?.as_str().map(str::to_owned)
}

fn write_sidecar(db: &Path, url: &str) {
    let body = serde_json::json!({"url": url, "pid": std::process::id()}).to_string();
    if let Err(e) = std::fs::write(sidecar(db), body) {
        tracing::warn!(
            "cannot write {}: `sluice query` will need --worker {url} to query this file while the worker runs: {e}",
            sidecar(db).display()
        );
    }
}

/// A sink's hold on a file; dropping it unregisters the file.
#[derive(Debug)]
pub struct Held(PathBuf);

impl Drop for Held {
    fn drop(&mut self) {
        let mut s = stores();
        let gone = match s.open.get_mut(&self.0) {
            Some(o) if o.holders > 1 => {
                o.holders -= 1;
                false
            }
            Some(_) => true,
            None => false,
        };
        if gone {
            s.open.remove(&self.0);
            if s.endpoint.is_some() {
                let _ = std::fs::remove_file(sidecar(&self.0));
            }
        }
    }
}

/// Registers the database `conn` has open at `path` for queries.
pub fn register(path: &Path, conn: &Connection) -> anyhow::Result<Held> {
    let key = key(path);
    let mut s = stores();
    if let Some(o) = s.open.get_mut(&key) {
        o.holders += 1;
        return Ok(Held(key));
    }
    let conn = conn
        .try_clone()
        .with_context(|| format!("a query connection to {}", key.display()))?;
    if let Some(url) = &s.endpoint {
        write_sidecar(&key, url);
    }
    s.open.insert(key.clone(), Open { conn, holders: 1 });
    Ok(Held(key))
}

/// A new connection to the database a sink of this process holds at
/// `path`; None when no sink holds it.
pub fn connect(path: &Path) -> Option<anyhow::Result<Connection>> {
    let key = key(path);
    let s = stores();
    let open = s.open.get(&key)?;
    Some(
        open.conn
            .try_clone()
            .with_context(|| format!("connecting to {}", key.display())),
    )
}

/// The files sinks of this process hold.
pub fn held() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = stores().open.keys().cloned().collect();
    v.sort();
    v
}

/// Names the REST listener that answers queries (None: none does any
/// more); the side files of held files follow.
pub fn set_endpoint(url: Option<String>) {
    let mut s = stores();
    for path in s.open.keys() {
        match &url {
            Some(u) => write_sidecar(path, u),
            None => {
                let _ = std::fs::remove_file(sidecar(path));
            }
        }
    }
    s.endpoint = url;
}
