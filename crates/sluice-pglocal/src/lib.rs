//! What starting a local PostgreSQL needs, shared by `sluice demo` and the
//! test harness: where the binaries are, a free port, and who to run them as
//! (PostgreSQL refuses to run as root).

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Directory holding `initdb`, `pg_ctl`, ...: `$PG_BIN`, else the newest
/// `/usr/lib/postgresql/*/bin`, else `pg_config --bindir`.
pub fn pg_bin_dir() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("PG_BIN") {
        return Ok(PathBuf::from(p));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
                    let bin = e.path().join("bin");
                    bin.join("initdb").exists().then_some((v, bin))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    if let Some((_, b)) = found.pop() {
        return Ok(b);
    }
    let out = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .context("PostgreSQL's binaries not found: install postgresql or set PG_BIN")?;
    if !out.status.success() {
        bail!("PostgreSQL's binaries not found: install postgresql or set PG_BIN");
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr().context("finding a free port")?.port())
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The OS user PostgreSQL's programs must run as: `postgres` (or
/// `$SLUICE_PG_USER`) when this process is root, else this process's user.
pub fn run_as_user() -> Option<String> {
    is_root().then(|| std::env::var("SLUICE_PG_USER").unwrap_or_else(|_| "postgres".into()))
}

/// A command for one of PostgreSQL's programs, run as `run_as` when given.
pub fn pg_command(bin: &Path, prog: &str, run_as: Option<&str>) -> Command {
    let path = bin.join(prog);
    match run_as {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.arg("-u").arg(u).arg("--").arg(path);
            c
        }
        None => Command::new(path),
    }
}

/// Gives `path` (recursively) to `user`.
pub fn chown(path: &Path, user: &str) -> Result<()> {
    let st = Command::new("chown")
        .arg("-R")
        .arg(format!("{user}:"))
        .arg(path)
        .status()
        .context("running chown")?;
    if !st.success() {
        bail!("chown {} to {user} failed", path.display());
    }
    Ok(())
}
