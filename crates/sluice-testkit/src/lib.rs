//! Throwaway PostgreSQL clusters for integration tests.
//!
//! Each test binary starts one cluster (`initdb` into a temp dir,
//! `wal_level=logical`, a free port on loopback) and each test works in a
//! database of its own. A watchdog process stops the cluster and removes its
//! directory when the test process exits, however it exits.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A running throwaway cluster.
#[derive(Debug)]
pub struct PgCluster {
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
    run_as: Option<String>,
}

pub mod kusto;
pub mod tansu;

pub use sluice_pglocal::{free_port, pg_bin_dir};

impl PgCluster {
    /// Starts a new cluster with extra `-c name=value` settings.
    pub fn start_with(settings: &[(&str, &str)]) -> Result<PgCluster> {
        let bin = pg_bin_dir()?;
        let run_as = sluice_pglocal::run_as_user();
        let dir = tempfile::Builder::new()
            .prefix("sluice-pg-")
            .tempdir()
            .context("creating temp dir for PostgreSQL")?
            .keep();
        if let Some(u) = &run_as {
            sluice_pglocal::chown(&dir, u)?;
        }
        let data = dir.join("data");
        let mut last_err = String::new();
        let mut cluster = PgCluster {
            dir: dir.clone(),
            port: 0,
            bin,
            run_as,
        };
        cluster.run_checked(
            "initdb",
            &[
                "-D",
                &data.to_string_lossy(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "-N",
            ],
        )?;
        cluster.spawn_watchdog()?;
        for _ in 0..5 {
            let port = free_port()?;
            let mut opts = format!(
                "-p {port} -k {} -c wal_level=logical -c max_replication_slots=40 \
                 -c max_wal_senders=40 -c listen_addresses=127.0.0.1 -c fsync=off \
                 -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
                dir.display()
            );
            for (k, v) in settings {
                opts.push_str(&format!(" -c {k}={v}"));
            }
            let log = dir.join("pg.log");
            match cluster.run_checked(
                "pg_ctl",
                &[
                    "-D",
                    &data.to_string_lossy(),
                    "-l",
                    &log.to_string_lossy(),
                    "-o",
                    &opts,
                    "-w",
                    "start",
                ],
            ) {
                Ok(()) => {
                    cluster.port = port;
                    return Ok(cluster);
                }
                Err(e) => last_err = format!("{e:#}"),
            }
        }
        bail!("could not start PostgreSQL: {last_err}")
    }

    /// Starts a new cluster with default settings.
    pub fn start() -> Result<PgCluster> {
        PgCluster::start_with(&[])
    }

    fn command(&self, prog: &str) -> Command {
        sluice_pglocal::pg_command(&self.bin, prog, self.run_as.as_deref())
    }

    fn run_checked(&self, prog: &str, args: &[&str]) -> Result<()> {
        let out = self
            .command(prog)
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {prog}"))?;
        if !out.status.success() {
            bail!(
                "{prog} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Stops the cluster and removes its files when this process exits.
    fn spawn_watchdog(&self) -> Result<()> {
        let pid = std::process::id();
        let pg_ctl = self.bin.join("pg_ctl");
        let data = self.dir.join("data");
        let stop = match &self.run_as {
            Some(u) => format!(
                "runuser -u {u} -- {} -D {} -m immediate stop",
                pg_ctl.display(),
                data.display()
            ),
            None => format!(
                "{} -D {} -m immediate stop",
                pg_ctl.display(),
                data.display()
            ),
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop} >/dev/null 2>&1; rm -rf {}",
            self.dir.display()
        );
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the cluster watchdog")?;
        Ok(())
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
    /// Host to connect to.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }
    /// The cluster's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// A libpq connection string for database `db` as superuser `postgres`.
    pub fn conn_str(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={db}",
            self.port
        )
    }

    /// Connects to `db`.
    pub async fn connect(&self, db: &str) -> Result<tokio_postgres::Client> {
        let (client, conn) = tokio_postgres::connect(&self.conn_str(db), tokio_postgres::NoTls)
            .await
            .with_context(|| format!("connecting to test database {db}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// Creates a fresh database with a unique name derived from `hint`.
    pub async fn create_database(&self, hint: &str) -> Result<String> {
        static N: AtomicU32 = AtomicU32::new(0);
        let clean: String = hint
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        let name = format!("t_{}_{}", clean, N.fetch_add(1, Ordering::Relaxed));
        let admin = self.connect("postgres").await?;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .with_context(|| format!("creating database {name}"))?;
        Ok(name)
    }

    /// Stops the cluster now (fast shutdown), e.g. to test a database restart.
    pub fn stop(&self) -> Result<()> {
        self.run_checked(
            "pg_ctl",
            &[
                "-D",
                &self.dir.join("data").to_string_lossy(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        )
    }

    /// Starts a stopped cluster again on the same port.
    pub fn restart(&self) -> Result<()> {
        let opts = format!(
            "-p {} -k {} -c wal_level=logical -c max_replication_slots=40 -c max_wal_senders=40 \
             -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.display()
        );
        self.run_checked(
            "pg_ctl",
            &[
                "-D",
                &self.dir.join("data").to_string_lossy(),
                "-l",
                &self.dir.join("pg.log").to_string_lossy(),
                "-o",
                &opts,
                "-w",
                "start",
            ],
        )
    }
}

/// The cluster shared by every test of this test binary.
pub fn shared() -> &'static PgCluster {
    static CLUSTER: OnceLock<PgCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| match PgCluster::start() {
        Ok(c) => c,
        Err(e) => panic!("cannot start the test PostgreSQL cluster: {e:#}"),
    })
}

/// Polls `f` until it returns Some or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
