//! `sluice demo`: Sluice end to end in one command. Starts a throwaway
//! PostgreSQL cluster (or uses `--pg`), creates the scenario's
//! `retail.orders_info`, runs the PostgreSQL source and the file sink in one
//! worker while a generator inserts, updates and deletes orders, then checks
//! that the state rebuilt from the captured events equals the table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde_json::Value as Json;
use sluice_connect::config_files::ConnectorFile;
use sluice_connect::{Registry, Worker, WorkerError};
use sluice_core::config::Props;
use sluice_core::connector::ConnectorPlugin;
use sluice_pglocal::{chown, free_port, is_root, pg_bin_dir};
use tokio_util::sync::CancellationToken;

/// The topic the source writes `retail.orders_info` to.
const TOPIC: &str = "myserver.retail.orders_info";
/// Rows seeded into an empty table, so the demo shows a snapshot.
const SEED_ROWS: usize = 1000;
/// The scenario generator's cities.
const CITIES: [&str; 6] = [
    "New Delhi",
    "Seattle",
    "New York",
    "Austin",
    "Chicago",
    "Cleveland",
];
/// Exit code after Ctrl-C/SIGTERM, as shells report a SIGINT death.
const EXIT_INTERRUPTED: u8 = 130;
/// How long to wait for the captured events to catch up with the table.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(90);

const CREATE_TABLE: &str = "CREATE SCHEMA IF NOT EXISTS retail;
CREATE TABLE IF NOT EXISTS retail.orders_info (
    orderid       SERIAL NOT NULL PRIMARY KEY,
    custid        INTEGER NOT NULL,
    amount        INTEGER NOT NULL,
    city          VARCHAR(255) NOT NULL,
    purchase_time VARCHAR(20) NOT NULL
);";

// purchase_time is the server's clock in UTC, so every row of a batch
// shares one transaction timestamp, as the scenario's "now" does.
const INSERT: &str = "INSERT INTO retail.orders_info (custid, amount, city, purchase_time) \
     VALUES ($1, $2, $3, to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')) \
     RETURNING orderid";
const UPDATE: &str = "UPDATE retail.orders_info SET amount = $2 WHERE orderid = $1";
const DELETE: &str = "DELETE FROM retail.orders_info WHERE orderid = $1";
const SELECT_ALL: &str =
    "SELECT orderid, custid, amount, city, purchase_time FROM retail.orders_info";

/// Options of `sluice demo`.
#[derive(Debug, Args)]
#[command(
    long_about = "Shows Sluice end to end with one command: starts a throwaway PostgreSQL \
cluster under DIR/pg (PostgreSQL's binaries are found in /usr/lib/postgresql/*/bin, or \
$PG_BIN), creates retail.orders_info and seeds it, captures every change with the \
PostgreSQL source connector into DIR/events.jsonl while a generator inserts, updates and \
deletes orders, then rebuilds the table from the events and checks it against the database.\n\n\
Exit codes: 0 verified, 1 mismatch or failure, 130 interrupted."
)]
pub struct DemoArgs {
    /// Working directory: PostgreSQL's files, offsets and the captured events.
    #[arg(long, default_value = "./sluice-demo")]
    dir: PathBuf,
    /// Seconds the generator runs.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Changes per second the generator makes (about 85% inserts, 10% updates, 5% deletes).
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Use this existing database (a libpq URL or key=value string) instead of
    /// starting one; it needs wal_level=logical. Only the table is created if missing.
    #[arg(long, value_name = "URL")]
    pg: Option<String>,
}

/// Runs the demo; returns the process exit code.
pub fn run(args: &DemoArgs, plugins: Vec<Arc<dyn ConnectorPlugin>>) -> u8 {
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice demo: starting the async runtime: {e}");
            return 1;
        }
    };
    let shutdown = CancellationToken::new();
    // The signal task needs to reach the cluster to stop it on a second
    // signal, when the orderly path (the guard's Drop) is abandoned.
    let cluster_ctl: Arc<Mutex<Option<ClusterCtl>>> = Arc::new(Mutex::new(None));
    let code = runtime.block_on(async {
        tokio::spawn(watch_signals(shutdown.clone(), cluster_ctl.clone()));
        match demo(args, plugins, shutdown.clone(), cluster_ctl).await {
            Ok(Outcome::Verified) => 0,
            Ok(Outcome::Mismatch) => 1,
            Ok(Outcome::Interrupted) => EXIT_INTERRUPTED,
            Err(e) => {
                eprintln!("sluice demo: {e:#}");
                if shutdown.is_cancelled() {
                    EXIT_INTERRUPTED
                } else {
                    1
                }
            }
        }
    });
    // Blocked reads (e.g. a replication stream) must not hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(2));
    code
}

fn init_logging() {
    // The demo's own lines are the show; the worker's info logs would bury
    // them, so only warnings appear unless RUST_LOG asks for more.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

enum Outcome {
    Verified,
    Mismatch,
    Interrupted,
}

/// First SIGINT/SIGTERM: orderly stop. Second: stop PostgreSQL and exit.
async fn watch_signals(shutdown: CancellationToken, cluster: Arc<Mutex<Option<ClusterCtl>>>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut int, mut term) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(i), Ok(t)) => (i, t),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!("cannot listen for SIGINT/SIGTERM: {e}");
            return;
        }
    };
    let mut seen = 0;
    loop {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        seen += 1;
        if seen == 1 {
            eprintln!("sluice demo: interrupted, stopping (again to exit at once)");
            shutdown.cancel();
        } else {
            let ctl = cluster.lock().ok().and_then(|c| c.clone());
            if let Some(ctl) = ctl {
                ctl.stop();
            }
            std::process::exit(i32::from(EXIT_INTERRUPTED));
        }
    }
}

// ---------------------------------------------------------------------------
// The throwaway cluster.

/// How to reach and stop a local cluster.
#[derive(Debug, Clone)]
struct ClusterCtl {
    bin: PathBuf,
    run_as: Option<String>,
    /// The real directory holding `data/`, the socket and the log.
    root: PathBuf,
}

impl ClusterCtl {
    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    fn command(&self, prog: &str) -> Command {
        let path = self.bin.join(prog);
        let mut c = match &self.run_as {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.arg("-u").arg(u).arg("--").arg(path);
                c
            }
            None => Command::new(path),
        };
        c.current_dir(&self.root).stdin(Stdio::null());
        c
    }

    fn run_checked(&self, prog: &str, args: &[&str]) -> Result<()> {
        let out = self
            .command(prog)
            .args(args)
            .output()
            .with_context(|| format!("running {prog}"))?;
        if !out.status.success() {
            bail!(
                "{prog} failed: {}{}",
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    fn is_running(&self) -> bool {
        self.command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("status")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Fast shutdown: sessions are ended, nothing is lost (it is throwaway
    /// anyway, but the next run reuses the data directory).
    fn stop(&self) {
        if !self.is_running() {
            return;
        }
        let data = self.data();
        if let Err(e) = self.run_checked(
            "pg_ctl",
            &["-D", &data.to_string_lossy(), "-m", "fast", "-w", "stop"],
        ) {
            eprintln!("sluice demo: stopping PostgreSQL: {e:#}");
        }
    }
}

/// Stops the cluster when dropped: on success, error and interruption alike.
struct ClusterGuard {
    ctl: ClusterCtl,
    port: u16,
    shared: Arc<Mutex<Option<ClusterCtl>>>,
    watchdog: Option<std::process::Child>,
}

impl Drop for ClusterGuard {
    fn drop(&mut self) {
        self.ctl.stop();
        // Its job is done; it would otherwise linger up to a second.
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        if let Ok(mut s) = self.shared.lock() {
            *s = None;
        }
        eprintln!("PostgreSQL stopped ({})", self.ctl.data().display());
    }
}

/// Where the cluster's files really live. PostgreSQL refuses to run as root,
/// so as root it runs as `postgres`, which must be able to reach `<dir>/pg`;
/// when an ancestor is private (e.g. /root), the files go to a directory
/// under /tmp instead and `<dir>/pg` links to it.
fn cluster_root(dir: &Path, run_as: Option<&str>) -> Result<PathBuf> {
    let link = dir.join("pg");
    if let Ok(target) = std::fs::read_link(&link) {
        std::fs::create_dir_all(&target)
            .with_context(|| format!("creating {}", target.display()))?;
        if let Some(u) = run_as {
            chown(&target, u)?;
        }
        return Ok(target);
    }
    let Some(user) = run_as else {
        std::fs::create_dir_all(&link).with_context(|| format!("creating {}", link.display()))?;
        return Ok(link);
    };
    let reachable = Command::new("runuser")
        .args(["-u", user, "--", "test", "-x"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success());
    if reachable {
        std::fs::create_dir_all(&link).with_context(|| format!("creating {}", link.display()))?;
        chown(&link, user)?;
        return Ok(link);
    }
    let root = PathBuf::from(format!(
        "/tmp/sluice-demo-pg-{:016x}",
        fnv1a(dir.to_string_lossy().as_bytes())
    ));
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    chown(&root, user)?;
    std::os::unix::fs::symlink(&root, &link)
        .with_context(|| format!("linking {} to {}", link.display(), root.display()))?;
    eprintln!(
        "note: user {user} cannot reach {}; PostgreSQL's files are in {} (linked from {})",
        dir.display(),
        root.display(),
        link.display()
    );
    Ok(root)
}

/// Starts (initdb on first use) the cluster under `<dir>/pg`.
fn start_cluster(dir: &Path, shared: &Arc<Mutex<Option<ClusterCtl>>>) -> Result<ClusterGuard> {
    let bin = pg_bin_dir().context("to use an existing database instead, pass --pg URL")?;
    let run_as = is_root().then(|| "postgres".to_string());
    let root = cluster_root(dir, run_as.as_deref())?;
    let ctl = ClusterCtl { bin, run_as, root };
    let data = ctl.data();
    let data_s = data.to_string_lossy().into_owned();
    if !data.join("PG_VERSION").exists() {
        eprintln!("initdb {data_s}");
        ctl.run_checked(
            "initdb",
            &[
                "-D",
                &data_s,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "-N",
            ],
        )?;
    }
    // A previous run killed with SIGKILL may have left its server running.
    ctl.stop();
    if let Ok(mut s) = shared.lock() {
        *s = Some(ctl.clone());
    }
    let log = ctl.root.join("pg.log");
    let mut last_err = anyhow!("no attempt");
    for _ in 0..5 {
        let port = free_port()?;
        // Throwaway data: fsync off keeps the demo fast on slow disks.
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c wal_level=logical \
             -c max_replication_slots=10 -c max_wal_senders=10 -c fsync=off",
            ctl.root.display()
        );
        match ctl.run_checked(
            "pg_ctl",
            &[
                "-D",
                &data_s,
                "-l",
                &log.to_string_lossy(),
                "-o",
                &opts,
                "-w",
                "-t",
                "60",
                "start",
            ],
        ) {
            Ok(()) => {
                let mut guard = ClusterGuard {
                    ctl,
                    port,
                    shared: shared.clone(),
                    watchdog: None,
                };
                guard.watchdog = spawn_watchdog(&guard.ctl)?;
                return Ok(guard);
            }
            Err(e) => last_err = e,
        }
    }
    Err(last_err.context(format!("starting PostgreSQL (log: {})", log.display())))
}

/// Stops the cluster if this process dies without running its guard
/// (SIGKILL). It only acts on the server it was started for, so a new demo
/// in the same directory is left alone.
fn spawn_watchdog(ctl: &ClusterCtl) -> Result<Option<std::process::Child>> {
    let data = ctl.data();
    let pid_file = data.join("postmaster.pid");
    let postmaster = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.lines().next().map(|l| l.trim().to_string()))
        .unwrap_or_default();
    if postmaster.parse::<u32>().is_err() {
        return Ok(None);
    }
    let pg_ctl = ctl.bin.join("pg_ctl");
    let stop = match &ctl.run_as {
        Some(u) => format!(
            "runuser -u {u} -- '{}' -D '{}' -m fast stop",
            pg_ctl.display(),
            data.display()
        ),
        None => format!(
            "'{}' -D '{}' -m fast stop",
            pg_ctl.display(),
            data.display()
        ),
    };
    let script = format!(
        "while kill -0 {me} 2>/dev/null; do sleep 1; done; \
         if [ \"$(head -n1 '{pid}' 2>/dev/null)\" = \"{postmaster}\" ]; then {stop}; fi",
        me = std::process::id(),
        pid = pid_file.display(),
    );
    let child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the cluster watchdog")?;
    Ok(Some(child))
}

// ---------------------------------------------------------------------------
// Database side.

/// Where the connector and the generator connect.
struct DbTarget {
    conn_str: String,
    host: String,
    port: u16,
    user: String,
    password: Option<String>,
    dbname: String,
    sslmode: &'static str,
}

impl DbTarget {
    fn local(port: u16) -> DbTarget {
        DbTarget {
            conn_str: format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"),
            host: "127.0.0.1".into(),
            port,
            user: "postgres".into(),
            password: None,
            dbname: "postgres".into(),
            sslmode: "disable",
        }
    }

    fn from_url(url: &str) -> Result<DbTarget> {
        let cfg = tokio_postgres::Config::from_str(url).context("parsing --pg")?;
        let host = match cfg.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        let user = match cfg.get_user() {
            Some(u) => u.to_string(),
            None => std::env::var("USER").context("--pg names no user and USER is not set")?,
        };
        let dbname = cfg.get_dbname().unwrap_or(user.as_str()).to_string();
        let password = cfg
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned());
        // The demo's own client speaks plain TCP, so the connector does too.
        let sslmode = "disable";
        Ok(DbTarget {
            conn_str: url.to_string(),
            host,
            port: cfg.get_ports().first().copied().unwrap_or(5432),
            user,
            password,
            dbname,
            sslmode,
        })
    }

    async fn connect(&self) -> Result<tokio_postgres::Client> {
        let mut cfg = tokio_postgres::Config::from_str(&self.conn_str)
            .context("parsing the connection string")?;
        cfg.ssl_mode(tokio_postgres::config::SslMode::Disable);
        let (client, conn) = cfg
            .connect(tokio_postgres::NoTls)
            .await
            .with_context(|| format!("connecting to PostgreSQL at {}:{}", self.host, self.port))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("demo connection ended: {e}");
            }
        });
        Ok(client)
    }
}

/// One row of `retail.orders_info`, the key aside.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    custid: i64,
    amount: i64,
    city: String,
    purchase_time: String,
}

impl std::fmt::Display for Row {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "custid={} amount={} city={:?} purchase_time={:?}",
            self.custid, self.amount, self.city, self.purchase_time
        )
    }
}

async fn table_state(client: &tokio_postgres::Client) -> Result<BTreeMap<i64, Row>> {
    let rows = client
        .query(SELECT_ALL, &[])
        .await
        .context("reading retail.orders_info")?;
    let mut out = BTreeMap::new();
    for r in rows {
        let id: i32 = r.try_get(0).context("reading orderid")?;
        out.insert(
            i64::from(id),
            Row {
                custid: i64::from(r.try_get::<_, i32>(1).context("reading custid")?),
                amount: i64::from(r.try_get::<_, i32>(2).context("reading amount")?),
                city: r.try_get(3).context("reading city")?,
                purchase_time: r.try_get(4).context("reading purchase_time")?,
            },
        );
    }
    Ok(out)
}

/// A small PRNG: the demo needs spread, not cryptography, and this keeps
/// the binary free of another dependency.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Rng(t ^ (u64::from(std::process::id()) << 32) ^ 0x9e37_79b9_7f4a_7c15)
    }
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

enum Op {
    Insert {
        custid: i32,
        amount: i32,
        city: &'static str,
    },
    Update {
        id: i32,
        amount: i32,
    },
    Delete {
        id: i32,
    },
}

/// What the generator did (committed changes only).
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    inserts: u64,
    updates: u64,
    deletes: u64,
}

impl Counts {
    fn total(&self) -> u64 {
        self.inserts + self.updates + self.deletes
    }
}

/// Inserts, updates and deletes orders with the scenario's distributions.
struct Generator {
    client: tokio_postgres::Client,
    insert: tokio_postgres::Statement,
    update: tokio_postgres::Statement,
    delete: tokio_postgres::Statement,
    live: Vec<i32>,
    rng: Rng,
    counts: Counts,
}

impl Generator {
    async fn new(client: tokio_postgres::Client) -> Result<Generator> {
        let insert = client
            .prepare(INSERT)
            .await
            .context("preparing the insert")?;
        let update = client
            .prepare(UPDATE)
            .await
            .context("preparing the update")?;
        let delete = client
            .prepare(DELETE)
            .await
            .context("preparing the delete")?;
        let live = client
            .query("SELECT orderid FROM retail.orders_info", &[])
            .await
            .context("reading existing orderids")?
            .iter()
            .map(|r| r.try_get::<_, i32>(0))
            .collect::<Result<Vec<_>, _>>()
            .context("reading existing orderids")?;
        Ok(Generator {
            client,
            insert,
            update,
            delete,
            live,
            rng: Rng::new(),
            counts: Counts::default(),
        })
    }

    fn new_order(&mut self) -> Op {
        Op::Insert {
            custid: self.rng.range(1, 1000) as i32,
            amount: self.rng.range(100, 199) as i32,
            city: CITIES[self.rng.below(CITIES.len())],
        }
    }

    /// ~85% inserts, ~10% amount updates, ~5% deletes of random live orders.
    fn next_op(&mut self, inserts_only: bool) -> Op {
        let roll = self.rng.below(100);
        if inserts_only || self.live.is_empty() || roll >= 15 {
            return self.new_order();
        }
        let i = self.rng.below(self.live.len());
        if roll < 10 {
            Op::Update {
                id: self.live[i],
                amount: self.rng.range(100, 199) as i32,
            }
        } else {
            // Removed now so no later op of this batch touches a deleted row.
            Op::Delete {
                id: self.live.swap_remove(i),
            }
        }
    }

    /// Runs `n` changes in one transaction, pipelined.
    async fn batch(&mut self, n: usize, inserts_only: bool) -> Result<()> {
        let ops: Vec<Op> = (0..n).map(|_| self.next_op(inserts_only)).collect();
        let tx = self
            .client
            .transaction()
            .await
            .context("starting a generator transaction")?;
        let (insert, update, delete) = (&self.insert, &self.update, &self.delete);
        let results = futures::future::try_join_all(ops.iter().map(|op| {
            let tx = &tx;
            async move {
                match op {
                    Op::Insert {
                        custid,
                        amount,
                        city,
                    } => {
                        let row = tx.query_one(insert, &[custid, amount, city]).await?;
                        Ok::<_, tokio_postgres::Error>((Some(row.try_get::<_, i32>(0)?), 0))
                    }
                    Op::Update { id, amount } => {
                        Ok((None, tx.execute(update, &[id, amount]).await?))
                    }
                    Op::Delete { id } => Ok((None, tx.execute(delete, &[id]).await?)),
                }
            }
        }))
        .await
        .context("running a generator batch")?;
        tx.commit().await.context("committing a generator batch")?;
        for (op, (new_id, affected)) in ops.iter().zip(results) {
            match op {
                Op::Insert { .. } => {
                    self.counts.inserts += 1;
                    if let Some(id) = new_id {
                        self.live.push(id);
                    }
                }
                Op::Update { .. } => self.counts.updates += affected,
                Op::Delete { .. } => self.counts.deletes += affected,
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The captured events.

/// What `events.jsonl` holds so far.
#[derive(Debug, Default)]
struct Captured {
    state: BTreeMap<i64, Row>,
    by_op: BTreeMap<String, u64>,
    tombstones: u64,
    lines: u64,
    /// One event line to show, with its op.
    example: Option<(String, String)>,
}

fn int_field(obj: &Json, name: &str) -> Result<i64> {
    obj.get(name)
        .and_then(Json::as_i64)
        .ok_or_else(|| anyhow!("no integer '{name}'"))
}

fn row_of(after: &Json) -> Result<(i64, Row)> {
    let text = |name: &str| {
        after
            .get(name)
            .and_then(Json::as_str)
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no string '{name}'"))
    };
    Ok((
        int_field(after, "orderid")?,
        Row {
            custid: int_field(after, "custid")?,
            amount: int_field(after, "amount")?,
            city: text("city")?,
            purchase_time: text("purchase_time")?,
        },
    ))
}

/// Rebuilds the table from the file sink's records: r/c/u put the row by
/// key, d removes it, tombstones carry nothing.
fn read_events(path: &Path) -> Result<Captured> {
    let mut out = Captured::default();
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let mut reader = BufReader::new(file);
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .with_context(|| format!("reading {}", path.display()))?;
        // A line without its newline is still being written by the sink.
        if n == 0 || !line.ends_with('\n') {
            break;
        }
        out.lines += 1;
        let rec: Json = serde_json::from_str(&line)
            .with_context(|| format!("{} line {}: not JSON", path.display(), out.lines))?;
        if rec.get("topic").and_then(Json::as_str) != Some(TOPIC) {
            continue;
        }
        let value = match rec.get("value") {
            None | Some(Json::Null) => {
                out.tombstones += 1;
                continue;
            }
            Some(v) => v,
        };
        let op = value
            .get("op")
            .and_then(Json::as_str)
            .ok_or_else(|| anyhow!("{} line {}: event without op", path.display(), out.lines))?
            .to_string();
        let ctx = || format!("{} line {}", path.display(), out.lines);
        match op.as_str() {
            "r" | "c" | "u" => {
                let after = value
                    .get("after")
                    .ok_or_else(|| anyhow!("no 'after'"))
                    .with_context(ctx)?;
                let (id, row) = row_of(after).with_context(ctx)?;
                out.state.insert(id, row);
                if op == "u" || (op == "c" && out.example.is_none()) {
                    out.example = Some((op.clone(), line.trim_end().to_string()));
                }
            }
            "d" => {
                let id = match rec.get("key") {
                    Some(k) if k.is_object() => int_field(k, "orderid"),
                    _ => value
                        .get("before")
                        .ok_or_else(|| anyhow!("no 'before'"))
                        .and_then(|b| int_field(b, "orderid")),
                }
                .with_context(ctx)?;
                out.state.remove(&id);
            }
            _ => {}
        }
        *out.by_op.entry(op).or_default() += 1;
    }
    Ok(out)
}

/// Counts complete lines appended since the last call.
struct LineCounter {
    path: PathBuf,
    pos: u64,
    lines: u64,
}

impl LineCounter {
    fn poll(&mut self) -> u64 {
        if let Ok(mut f) = std::fs::File::open(&self.path) {
            if f.seek(SeekFrom::Start(self.pos)).is_ok() {
                let mut buf = Vec::new();
                if f.read_to_end(&mut buf).is_ok() {
                    self.pos += buf.len() as u64;
                    self.lines += buf.iter().filter(|b| **b == b'\n').count() as u64;
                }
            }
        }
        self.lines
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Order-independent: a wrapping sum of per-row hashes over every column.
fn checksum(state: &BTreeMap<i64, Row>) -> u64 {
    state.iter().fold(0u64, |acc, (id, r)| {
        let line = format!(
            "{id}\x1f{}\x1f{}\x1f{}\x1f{}",
            r.custid, r.amount, r.city, r.purchase_time
        );
        acc.wrapping_add(fnv1a(line.as_bytes()))
    })
}

/// Up to `limit` lines describing how the two states differ.
fn differences(db: &BTreeMap<i64, Row>, events: &BTreeMap<i64, Row>, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    for (id, row) in db {
        match events.get(id) {
            None => out.push(format!(
                "orderid {id}: in the table ({row}), not in the events"
            )),
            Some(e) if e != row => {
                out.push(format!("orderid {id}: table has {row}, events have {e}"))
            }
            _ => {}
        }
    }
    for (id, row) in events {
        if !db.contains_key(id) {
            out.push(format!(
                "orderid {id}: in the events ({row}), not in the table"
            ));
        }
    }
    let total = out.len();
    out.truncate(limit);
    if total > limit {
        out.push(format!("... and {} more", total - limit));
    }
    out
}

// ---------------------------------------------------------------------------
// The demo.

fn connector(name: &str, props: &[(&str, String)]) -> ConnectorFile {
    let mut p = Props::new();
    p.insert("name".into(), name.into());
    for (k, v) in props {
        p.insert((*k).to_string(), v.clone());
    }
    ConnectorFile {
        path: PathBuf::from(format!("<sluice demo: {name}>")),
        props: p,
    }
}

fn build_worker(
    plugins: Vec<Arc<dyn ConnectorPlugin>>,
    db: &DbTarget,
    dir: &Path,
    own_cluster: bool,
) -> Result<Worker> {
    let mut worker_props = Props::new();
    for (k, v) in [
        (
            "offset.storage.file.filename",
            dir.join("offsets.json").display().to_string(),
        ),
        ("offset.flush.interval.ms", "1000".into()),
        (
            "key.converter",
            "org.apache.kafka.connect.json.JsonConverter".into(),
        ),
        (
            "value.converter",
            "org.apache.kafka.connect.json.JsonConverter".into(),
        ),
        // Without schemas each line is just the change event, readable.
        ("key.converter.schemas.enable", "false".into()),
        ("value.converter.schemas.enable", "false".into()),
    ] {
        worker_props.insert(k.into(), v);
    }
    let mut source = vec![
        (
            "connector.class",
            "io.debezium.connector.postgresql.PostgresConnector".to_string(),
        ),
        ("database.hostname", db.host.clone()),
        ("database.port", db.port.to_string()),
        ("database.user", db.user.clone()),
        ("database.dbname", db.dbname.clone()),
        ("database.server.name", "myserver".into()),
        ("plugin.name", "pgoutput".into()),
        ("table.whitelist", "retail.orders_info".into()),
        ("database.sslmode", db.sslmode.into()),
    ];
    if let Some(p) = &db.password {
        source.push(("database.password", p.clone()));
    }
    if !own_cluster {
        // Someone else's database: keep clear of a real Debezium's slot and
        // publication, publish only the demo table, and leave no slot
        // behind to retain WAL.
        source.push(("slot.name", "sluice_demo".into()));
        source.push(("publication.name", "sluice_demo".into()));
        source.push(("publication.autocreate.mode", "filtered".into()));
        source.push(("slot.drop.on.stop", "true".into()));
    }
    let sink = [
        (
            "connector.class",
            "org.apache.kafka.connect.file.FileStreamSinkConnector".to_string(),
        ),
        ("file", dir.join("events.jsonl").display().to_string()),
        ("topics", TOPIC.to_string()),
        ("sluice.file.format", "record".into()),
    ];
    let connectors = [
        connector("pg-orders-source", &source),
        connector("events-file-sink", &sink),
    ];
    match Worker::new(&Registry::new(plugins), &worker_props, &connectors) {
        Ok(w) => Ok(w),
        Err(WorkerError::Config(report)) => {
            bail!(
                "invalid demo configuration:\n  - {}",
                report.errors.join("\n  - ")
            )
        }
        Err(e) => Err(anyhow!(e).context("building the worker")),
    }
}

async fn prepare_table(client: &tokio_postgres::Client) -> Result<()> {
    client
        .batch_execute(CREATE_TABLE)
        .await
        .context("creating retail.orders_info")?;
    Ok(())
}

async fn demo(
    args: &DemoArgs,
    plugins: Vec<Arc<dyn ConnectorPlugin>>,
    shutdown: CancellationToken,
    cluster_ctl: Arc<Mutex<Option<ClusterCtl>>>,
) -> Result<Outcome> {
    if args.rate == 0 {
        bail!("--rate must be at least 1");
    }
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = args
        .dir
        .canonicalize()
        .with_context(|| format!("resolving {}", args.dir.display()))?;
    let events_path = dir.join("events.jsonl");
    // Each run captures afresh: no offsets means a new snapshot, and the
    // events file then describes the table from that snapshot on.
    for f in ["events.jsonl", "offsets.json"] {
        match std::fs::remove_file(dir.join(f)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", dir.join(f).display())),
        }
    }

    let (guard, db) = match &args.pg {
        Some(url) => (None, DbTarget::from_url(url)?),
        None => {
            let dir2 = dir.clone();
            let ctl = cluster_ctl.clone();
            let guard = tokio::task::spawn_blocking(move || start_cluster(&dir2, &ctl))
                .await
                .context("starting PostgreSQL")??;
            eprintln!(
                "PostgreSQL running on 127.0.0.1:{} (data: {})",
                guard.port,
                dir.join("pg").join("data").display()
            );
            let db = DbTarget::local(guard.port);
            (Some(guard), db)
        }
    };
    let outcome = run_pipeline(
        args,
        plugins,
        &shutdown,
        &db,
        &dir,
        &events_path,
        guard.is_some(),
    )
    .await;
    if let Some(g) = guard {
        // Stopping waits for the server; keep it off the async threads.
        tokio::task::spawn_blocking(move || drop(g))
            .await
            .context("stopping PostgreSQL")?;
    }
    outcome
}

async fn run_pipeline(
    args: &DemoArgs,
    plugins: Vec<Arc<dyn ConnectorPlugin>>,
    shutdown: &CancellationToken,
    db: &DbTarget,
    dir: &Path,
    events_path: &Path,
    own_cluster: bool,
) -> Result<Outcome> {
    let client = db.connect().await?;
    prepare_table(&client).await?;
    let mut gen = Generator::new(db.connect().await?).await?;
    if gen.live.is_empty() {
        let mut left = SEED_ROWS;
        while left > 0 {
            let n = left.min(500);
            gen.batch(n, true)
                .await
                .context("seeding retail.orders_info")?;
            left -= n;
        }
        eprintln!("seeded retail.orders_info with {SEED_ROWS} orders");
    }
    let seeded = gen.live.len();
    // Seeding is the snapshot's material, not streamed changes.
    gen.counts = Counts::default();

    let worker = build_worker(plugins, db, dir, own_cluster)?;
    let worker_stop = CancellationToken::new();
    let mut worker_task = tokio::spawn(worker.run(worker_stop.clone()));
    eprintln!(
        "capturing {TOPIC} into {}; generating {} changes/s for {}s",
        events_path.display(),
        args.rate,
        args.duration
    );

    let result = drive(
        args,
        shutdown,
        &client,
        &mut gen,
        events_path,
        &mut worker_task,
    )
    .await;
    // The worker is stopped in every case, so offsets and the events file
    // are complete before anything is checked or the cluster goes down.
    worker_stop.cancel();
    let worker_result = match tokio::time::timeout(Duration::from_secs(60), &mut worker_task).await
    {
        Ok(Ok(r)) => r.map_err(|e| anyhow!("worker: {e}")),
        Ok(Err(e)) => Err(anyhow!("worker task: {e}")),
        Err(_) => {
            worker_task.abort();
            Err(anyhow!("the worker did not stop within 60s"))
        }
    };
    let drive_outcome = result?;
    if matches!(drive_outcome, Outcome::Interrupted) {
        if let Err(e) = worker_result {
            eprintln!("sluice demo: {e:#}");
        }
        let lines = read_events(events_path).map(|c| c.lines).unwrap_or(0);
        println!(
            "interrupted: {} changes generated, {lines} events in {}",
            gen.counts.total(),
            events_path.display()
        );
        return Ok(Outcome::Interrupted);
    }
    worker_result?;
    verify(&client, events_path, gen.counts, seeded).await
}

/// Generates for `--duration`, then waits for the events to catch up.
async fn drive(
    args: &DemoArgs,
    shutdown: &CancellationToken,
    client: &tokio_postgres::Client,
    gen: &mut Generator,
    events_path: &Path,
    worker_task: &mut tokio::task::JoinHandle<Result<(), WorkerError>>,
) -> Result<Outcome> {
    let mut counter = LineCounter {
        path: events_path.to_path_buf(),
        pos: 0,
        lines: 0,
    };
    let start = Instant::now();
    let duration = Duration::from_secs(args.duration);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut done: u64 = 0;
    let mut next_report = 1u64;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(Outcome::Interrupted),
            _ = tick.tick() => {}
        }
        if worker_task.is_finished() {
            bail!("the worker stopped while the generator was running");
        }
        let elapsed = start.elapsed().min(duration);
        let due = (elapsed.as_secs_f64() * f64::from(args.rate)) as u64;
        if due > done {
            gen.batch((due - done) as usize, false).await?;
            done = due;
        }
        let secs = start.elapsed().as_secs();
        if secs >= next_report {
            next_report = secs + 1;
            let c = gen.counts;
            eprintln!(
                "[{secs:>3}s] changes written: {:>6} (insert {}, update {}, delete {})   events captured: {}",
                c.total(),
                c.inserts,
                c.updates,
                c.deletes,
                counter.poll()
            );
        }
        if start.elapsed() >= duration {
            break;
        }
    }

    // The table no longer changes: poll until the rebuilt state and the
    // op counts both show every committed change.
    let target = table_state(client).await?;
    let wanted = gen.counts;
    let deadline = Instant::now() + CATCH_UP_TIMEOUT;
    let mut last_report = Instant::now();
    loop {
        let c = read_events(events_path)?;
        let seen = |op: &str| c.by_op.get(op).copied().unwrap_or(0);
        if c.state == target
            && seen("c") >= wanted.inserts
            && seen("u") >= wanted.updates
            && seen("d") >= wanted.deletes
        {
            return Ok(Outcome::Verified);
        }
        if worker_task.is_finished() {
            bail!("the worker stopped before the events caught up");
        }
        if Instant::now() > deadline {
            eprintln!(
                "events did not catch up within {}s; checking what was captured",
                CATCH_UP_TIMEOUT.as_secs()
            );
            return Ok(Outcome::Mismatch);
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            eprintln!(
                "waiting for capture to catch up: events captured: {}",
                c.lines
            );
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(Outcome::Interrupted),
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

async fn verify(
    client: &tokio_postgres::Client,
    events_path: &Path,
    generated: Counts,
    seeded: usize,
) -> Result<Outcome> {
    let captured = read_events(events_path)?;
    let db = table_state(client).await?;
    let seen = |op: &str| captured.by_op.get(op).copied().unwrap_or(0);
    let mut summary = String::new();
    let _ = writeln!(
        summary,
        "generated: {} inserts, {} updates, {} deletes (after {} rows in the table at start)",
        generated.inserts, generated.updates, generated.deletes, seeded
    );
    let _ = writeln!(
        summary,
        "captured:  {} events: snapshot (r) {}, create (c) {}, update (u) {}, delete (d) {}, tombstones {}",
        captured.lines,
        seen("r"),
        seen("c"),
        seen("u"),
        seen("d"),
        captured.tombstones
    );
    let _ = writeln!(summary, "events:    {}", events_path.display());
    if let Some((op, ex)) = &captured.example {
        let _ = writeln!(summary, "example ({op}): {ex}");
    }
    print!("{summary}");
    let (db_sum, ev_sum) = (checksum(&db), checksum(&captured.state));
    if db.len() == captured.state.len() && db_sum == ev_sum && db == captured.state {
        println!(
            "verified: {} rows match (checksum {db_sum:016x}) between retail.orders_info and the state rebuilt from the events",
            db.len()
        );
        return Ok(Outcome::Verified);
    }
    println!(
        "MISMATCH: table has {} rows (checksum {db_sum:016x}), events rebuild {} rows (checksum {ev_sum:016x})",
        db.len(),
        captured.state.len()
    );
    for d in differences(&db, &captured.state, 10) {
        println!("  {d}");
    }
    Ok(Outcome::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(amount: i64) -> Row {
        Row {
            custid: 1,
            amount,
            city: "Austin".into(),
            purchase_time: "2020-10-09 07:23:10".into(),
        }
    }

    #[test]
    fn checksum_ignores_order_but_sees_values() {
        let a: BTreeMap<i64, Row> = [(1, row(100)), (2, row(150))].into_iter().collect();
        let b: BTreeMap<i64, Row> = [(2, row(150)), (1, row(100))].into_iter().collect();
        let c: BTreeMap<i64, Row> = [(1, row(100)), (2, row(151))].into_iter().collect();
        assert_eq!(checksum(&a), checksum(&b));
        assert_ne!(checksum(&a), checksum(&c));
    }
}
