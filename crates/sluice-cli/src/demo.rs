//! `sluice demo`: Sluice end to end in one command. Starts a throwaway
//! PostgreSQL cluster (or uses `--pg`), creates the scenario's
//! `retail.orders_info`, runs the PostgreSQL source and the DuckDB sink in
//! one worker while the scenario's generator inserts, updates and deletes
//! orders, then prints the scenario's analysis from DuckDB and checks that
//! the DuckDB table equals the PostgreSQL table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use sluice_connect::config_files::ConnectorFile;
use sluice_connect::{Registry, Worker, WorkerError};
use sluice_core::config::Props;
use sluice_core::connector::ConnectorPlugin;
use sluice_pglocal::{chown, free_port, is_root, pg_bin_dir};
use tokio_util::sync::CancellationToken;

use crate::{datagen, query};

/// The topic the source writes `retail.orders_info` to.
const TOPIC: &str = "myserver.retail.orders_info";
/// Rows seeded into an empty table, so the demo shows a snapshot.
const SEED_ROWS: usize = 1000;
/// Exit code after Ctrl-C/SIGTERM, as shells report a SIGINT death.
const EXIT_INTERRUPTED: u8 = 130;
/// How long to wait for the snapshot, and for DuckDB to catch up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(90);

const SELECT_ALL: &str =
    "SELECT orderid, custid, amount, city, purchase_time FROM retail.orders_info";

/// Options of `sluice demo`.
#[derive(Debug, Args)]
#[command(
    long_about = "Shows Sluice end to end with one command: starts a throwaway PostgreSQL \
cluster under DIR/pg (PostgreSQL's binaries are found in /usr/lib/postgresql/*/bin, or \
$PG_BIN), creates the scenario's retail.orders_info and seeds it, then runs the scenario's \
order generator (with updates and deletes mixed in), the PostgreSQL source and the DuckDB \
sink in one process, showing live progress. It then prints the scenario's analysis from \
the DuckDB file (DIR/sluice-demo.duckdb, table orders), checks that the DuckDB table equals \
the PostgreSQL table (row count and a checksum over all columns), and stops the cluster. \
The DuckDB file stays for `sluice query`.\n\n\
Exit codes: 0 verified, 1 mismatch or failure, 130 interrupted."
)]
pub struct DemoArgs {
    /// Working directory: PostgreSQL's files, offsets and the DuckDB file.
    #[arg(long, default_value = "./sluice-demo")]
    dir: PathBuf,
    /// Seconds the generator runs.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Changes per second the generator makes (85% inserts, 10% updates, 5% deletes).
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Use this existing database (a libpq URL or key=value string) instead of
    /// starting one; it needs wal_level=logical. Only the table is created if missing.
    #[arg(long, value_name = "URL")]
    pg: Option<String>,
    /// Once verified, keep the dashboard (and the DuckDB file it draws) up
    /// until Ctrl-C.
    #[arg(long)]
    serve: bool,
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
    // `events`: the DuckDB table's rows.
    let mut out = Vec::new();
    for (id, row) in db {
        match events.get(id) {
            None => out.push(format!(
                "orderid {id}: in PostgreSQL ({row}), not in DuckDB"
            )),
            Some(e) if e != row => out.push(format!(
                "orderid {id}: PostgreSQL has {row}, DuckDB has {e}"
            )),
            _ => {}
        }
    }
    for (id, row) in events {
        if !db.contains_key(id) {
            out.push(format!(
                "orderid {id}: in DuckDB ({row}), not in PostgreSQL"
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

const SOURCE: &str = "pg-orders-source";
const SINK: &str = "orders-duckdb-sink";
/// The DuckDB table the sink keeps the orders in (upsert mode).
const TABLE: &str = "orders";

fn build_worker(
    plugins: Vec<Arc<dyn ConnectorPlugin>>,
    db: &DbTarget,
    dir: &Path,
    duckdb_file: &Path,
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
        ("topic.prefix", "myserver".into()),
        ("plugin.name", "pgoutput".into()),
        ("table.include.list", "retail.orders_info".into()),
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
        ("connector.class", "duckdb".to_string()),
        ("duckdb.path", duckdb_file.display().to_string()),
        ("topics", TOPIC.to_string()),
        (
            "duckdb.tables.topics.mapping",
            format!("[{{'topic': '{TOPIC}', 'table': '{TABLE}', 'mode': 'upsert'}}]"),
        ),
    ];
    let connectors = [connector(SOURCE, &source), connector(SINK, &sink)];
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

async fn demo(
    args: &DemoArgs,
    plugins: Vec<Arc<dyn ConnectorPlugin>>,
    shutdown: CancellationToken,
    cluster_ctl: Arc<Mutex<Option<ClusterCtl>>>,
) -> Result<Outcome> {
    if !(args.rate.is_finite() && args.rate > 0.0) {
        bail!("--rate must be a positive number of changes per second");
    }
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = args
        .dir
        .canonicalize()
        .with_context(|| format!("resolving {}", args.dir.display()))?;
    let duckdb_file = dir.join(DUCKDB_FILE);
    // Each run captures afresh: no offsets means a new snapshot, and the
    // DuckDB file then holds the table from that snapshot on.
    for f in [DUCKDB_FILE, "sluice-demo.duckdb.wal", "offsets.json"] {
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
        &duckdb_file,
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

/// The DuckDB file the demo writes (in `--dir`).
const DUCKDB_FILE: &str = "sluice-demo.duckdb";

/// Records the source emits for the changes of `s`: one per insert and
/// update, two per delete (the delete and its tombstone).
fn records_for(s: &datagen::Stats) -> u64 {
    s.inserted + s.updated + 2 * s.deleted
}

/// Notes that changes amounting to `records` were committed by now.
fn note_committed(committed: &Mutex<std::collections::VecDeque<(Instant, u64)>>, records: u64) {
    let mut c = committed
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if c.back().is_none_or(|(_, r)| *r < records) {
        c.push_back((Instant::now(), records));
    }
}

/// What the progress display shows, once a second.
struct Progress {
    terminal: bool,
    start: Instant,
    lags: Vec<Duration>,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            terminal: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            start: Instant::now(),
            lags: Vec::new(),
        }
    }

    /// End-to-end lag: how long ago the oldest change not yet applied was
    /// committed (zero when everything committed is applied); `committed`
    /// holds (when, records of the changes committed by then).
    fn lag(
        &mut self,
        committed: &Mutex<std::collections::VecDeque<(Instant, u64)>>,
        applied: u64,
    ) -> Duration {
        let mut c = committed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while c.front().is_some_and(|(_, r)| *r <= applied) {
            c.pop_front();
        }
        let lag = c.front().map_or(Duration::ZERO, |(t, _)| t.elapsed());
        self.lags.push(lag);
        lag
    }

    fn show(&self, line: &str) {
        if self.terminal {
            eprint!("\r\x1b[2K{line}");
            let _ = std::io::Write::flush(&mut std::io::stderr());
        } else {
            eprintln!("{line}");
        }
    }

    fn done(&self) {
        if self.terminal {
            eprintln!();
        }
    }

    /// Median and maximum of the lags seen.
    fn lag_summary(&self) -> Option<(Duration, Duration)> {
        let mut l = self.lags.clone();
        l.sort();
        Some((*l.get(l.len() / 2)?, *l.last()?))
    }
}

async fn count_orders(client: &tokio_postgres::Client) -> Result<i64> {
    client
        .query_one("SELECT count(*) FROM retail.orders_info", &[])
        .await
        .and_then(|r| r.try_get::<_, i64>(0))
        .context("counting retail.orders_info")
}

#[allow(clippy::too_many_arguments)]
async fn run_pipeline(
    args: &DemoArgs,
    plugins: Vec<Arc<dyn ConnectorPlugin>>,
    shutdown: &CancellationToken,
    db: &DbTarget,
    dir: &Path,
    duckdb_file: &Path,
    own_cluster: bool,
) -> Result<Outcome> {
    let client = db.connect().await?;
    datagen::create_table(&client).await?;
    if count_orders(&client).await? == 0 {
        let seed = datagen::DatagenOptions {
            rate: datagen::Rate::Max,
            count: Some(SEED_ROWS as u64),
            batch: 500,
            ..datagen::DatagenOptions::default()
        };
        datagen::run(&client, &seed, shutdown.child_token(), |_| {})
            .await
            .context("seeding retail.orders_info")?;
        eprintln!("seeded retail.orders_info with {SEED_ROWS} orders");
    }
    let snapshot_rows = u64::try_from(count_orders(&client).await?).unwrap_or(0);

    let worker = build_worker(plugins, db, dir, duckdb_file, own_cluster)?;
    let rest_stop = CancellationToken::new();
    let dashboard = serve_dashboard(worker.handle(), duckdb_file, rest_stop.clone()).await;
    if let Some(url) = &dashboard {
        eprintln!("dashboard: {url}/dashboard (the scenario's charts, live; status page: {url}/)");
    }
    let worker_stop = CancellationToken::new();
    let mut worker_task = tokio::spawn(worker.run(worker_stop.clone()));
    let result = drive(
        args,
        shutdown,
        db,
        snapshot_rows,
        duckdb_file,
        &mut worker_task,
    )
    .await;
    // The worker is stopped in every case, so offsets and the DuckDB file
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
    let (outcome, generated, lag) = result?;
    if matches!(outcome, Outcome::Interrupted) {
        if let Err(e) = worker_result {
            eprintln!("sluice demo: {e:#}");
        }
        println!(
            "interrupted: {} changes generated; DuckDB file: {}",
            generated.total(),
            duckdb_file.display()
        );
        return Ok(Outcome::Interrupted);
    }
    worker_result?;
    let outcome = report(&client, duckdb_file, &generated, snapshot_rows, lag).await;
    if let Some(url) = &dashboard {
        if args.serve && outcome.is_ok() {
            println!("dashboard: {url}/dashboard (serving the DuckDB file until Ctrl-C)");
            shutdown.cancelled().await;
        } else {
            println!("dashboard: {url}/dashboard was up during the run; `sluice demo --serve` keeps it up");
        }
    }
    rest_stop.cancel();
    outcome
}

/// Serves the dashboard and the status page of the demo's worker on
/// 127.0.0.1:8083, or a free port if that one is taken; its URL.
async fn serve_dashboard(
    handle: sluice_connect::WorkerHandle,
    duckdb_file: &Path,
    stop: CancellationToken,
) -> Option<String> {
    for bind in ["http://127.0.0.1:8083", "http://127.0.0.1:0"] {
        let mut props = Props::new();
        props.insert("listeners".into(), bind.into());
        let Ok(config) = sluice_connect::rest::RestConfig::from_props(&props) else {
            continue;
        };
        let Ok(server) = sluice_connect::rest::RestServer::bind(config).await else {
            continue;
        };
        let Ok(addr) = server.local_addr() else {
            continue;
        };
        let server =
            server
                .with_routes(crate::live::routes())
                .with_routes(crate::dashboard::routes_on(
                    None,
                    Some(duckdb_file.to_path_buf()),
                ));
        let stop = stop.clone();
        tokio::spawn(async move {
            if let Err(e) = server.serve(handle, stop).await {
                tracing::warn!("the demo's dashboard stopped: {e}");
            }
        });
        return Some(format!("http://{addr}"));
    }
    tracing::warn!("no port for the demo's dashboard");
    None
}

type Drove = (Outcome, datagen::Stats, Option<(Duration, Duration)>);

/// Waits for the snapshot, generates for `--duration` while showing
/// progress, then waits for DuckDB to catch up.
async fn drive(
    args: &DemoArgs,
    shutdown: &CancellationToken,
    db: &DbTarget,
    snapshot_rows: u64,
    duckdb_file: &Path,
    worker_task: &mut tokio::task::JoinHandle<Result<(), WorkerError>>,
) -> Result<Drove> {
    let (captured, applied) = (
        sluice_connect::metrics::connector(SOURCE),
        sluice_connect::metrics::connector(SINK),
    );
    let mut progress = Progress::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Changes start once the snapshot is read, so every one of them is
    // streamed (and counted) exactly once.
    let deadline = Instant::now() + CATCH_UP_TIMEOUT;
    while captured.sourced() < snapshot_rows {
        if worker_task.is_finished() {
            bail!("the worker stopped during the snapshot");
        }
        if Instant::now() > deadline {
            bail!(
                "the snapshot did not finish within {}s",
                CATCH_UP_TIMEOUT.as_secs()
            );
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok((Outcome::Interrupted, datagen::Stats::default(), None)),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    eprintln!(
        "snapshot: {snapshot_rows} rows captured; now generating {} changes/s for {}s into {} (DuckDB table {TABLE})",
        args.rate,
        args.duration,
        duckdb_file.display()
    );
    let stats = Arc::new(Mutex::new(datagen::Stats::default()));
    // When each amount of records was committed, as the generator reports
    // (every 50 ms): the lag is the age of the oldest one not yet applied.
    let committed: Arc<Mutex<std::collections::VecDeque<(Instant, u64)>>> = Arc::default();
    let gen_stop = shutdown.child_token();
    let opts = datagen::DatagenOptions {
        rate: datagen::Rate::PerSecond(args.rate),
        duration: Some(Duration::from_secs(args.duration)),
        update_ratio: 0.10,
        delete_ratio: 0.05,
        batch: ((args.rate / 20.0).ceil() as usize).max(1),
        progress_every: Duration::from_millis(50),
        ..datagen::DatagenOptions::default()
    };
    let gen_client = db.connect().await?;
    let mut generator = {
        let (stats, committed) = (Arc::clone(&stats), Arc::clone(&committed));
        let stop = gen_stop.clone();
        tokio::spawn(async move {
            datagen::run(&gen_client, &opts, stop, move |s| {
                *stats
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = s.clone();
                note_committed(&committed, records_for(s));
            })
            .await
        })
    };
    let current = |stats: &Arc<Mutex<datagen::Stats>>| {
        stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    };
    let line = |p: &mut Progress, s: &datagen::Stats, what: &str| {
        let done = applied.sunk();
        let lag = p.lag(&committed, done.saturating_sub(snapshot_rows));
        format!(
            "[{:>3}s] {what}: written {} (insert {}, update {}, delete {}) | captured {} | applied {} | lag {:.1}s",
            p.start.elapsed().as_secs(),
            s.total(),
            s.inserted,
            s.updated,
            s.deleted,
            captured.sourced(),
            done,
            lag.as_secs_f64()
        )
    };
    let generated = loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                gen_stop.cancel();
                let _ = (&mut generator).await;
                progress.done();
                return Ok((Outcome::Interrupted, current(&stats), None));
            }
            r = &mut generator => {
                break r.map_err(|e| anyhow!("generator task: {e}"))??;
            }
            _ = tick.tick() => {
                if worker_task.is_finished() {
                    gen_stop.cancel();
                    bail!("the worker stopped while the generator was running");
                }
                let s = current(&stats);
                let l = line(&mut progress, &s, "generating");
                progress.show(&l);
            }
        }
    };
    // The last batches, in case the final report came after them.
    note_committed(&committed, records_for(&generated));
    // Every change is committed: wait until DuckDB holds all of them.
    let want = snapshot_rows + records_for(&generated);
    let deadline = Instant::now() + CATCH_UP_TIMEOUT;
    // Also done once the sink has applied everything the source captured
    // and nothing moved for a few seconds: the comparison of the two
    // tables below is the real check, the counts only tell when to make it.
    let mut settled = (applied.sunk(), 0u32);
    while applied.sunk() < want && settled.1 < 3 {
        if worker_task.is_finished() {
            bail!("the worker stopped before DuckDB caught up");
        }
        if Instant::now() > deadline {
            progress.done();
            eprintln!(
                "DuckDB did not catch up within {}s ({} of {want} records applied); checking what is there",
                CATCH_UP_TIMEOUT.as_secs(),
                applied.sunk()
            );
            return Ok((Outcome::Mismatch, generated, progress.lag_summary()));
        }
        tokio::select! {
            _ = shutdown.cancelled() => {
                progress.done();
                return Ok((Outcome::Interrupted, generated, None));
            }
            _ = tick.tick() => {
                let now = applied.sunk();
                settled = if now == settled.0 && now == captured.sourced() {
                    (now, settled.1 + 1)
                } else {
                    (now, 0)
                };
                let l = line(&mut progress, &generated, "catching up");
                progress.show(&l);
            }
        }
    }
    let l = line(&mut progress, &generated, "done");
    progress.show(&l);
    progress.done();
    Ok((Outcome::Verified, generated, progress.lag_summary()))
}

/// The DuckDB table's rows.
fn duckdb_state(path: &Path) -> Result<BTreeMap<i64, Row>> {
    let config = duckdb::Config::default()
        .access_mode(duckdb::AccessMode::ReadOnly)
        .context("configuring DuckDB")?;
    let conn = duckdb::Connection::open_with_flags(path, config)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut stmt = conn
        .prepare(&format!(
            "SELECT orderid, custid, amount, city, purchase_time FROM {TABLE}"
        ))
        .with_context(|| format!("reading table {TABLE} of {}", path.display()))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                Row {
                    custid: r.get(1)?,
                    amount: r.get(2)?,
                    city: r.get(3)?,
                    purchase_time: r.get(4)?,
                },
            ))
        })
        .with_context(|| format!("reading table {TABLE}"))?;
    let mut out = BTreeMap::new();
    for r in rows {
        let (id, row) = r.with_context(|| format!("reading a row of {TABLE}"))?;
        out.insert(id, row);
    }
    Ok(out)
}

/// The scenario's analysis (its KQL, in DuckDB SQL).
const ANALYSIS: [(&str, &str); 4] = [
    (
        "average and total amount, and orders, per city",
        "SELECT city, round(avg(amount), 2) AS avg_sales, sum(amount) AS total, count(*) AS orders \
         FROM orders GROUP BY city ORDER BY total DESC",
    ),
    (
        "orders per 10 minutes (time of day, UTC)",
        "SELECT time_bucket(INTERVAL 10 minutes, purchase_time::TIMESTAMP)::TIME AS bucket, \
         count(*) AS event_count FROM orders GROUP BY bucket ORDER BY bucket",
    ),
    (
        "New York's biggest orders",
        "SELECT orderid, amount, purchase_time FROM orders WHERE city = 'New York' \
         ORDER BY amount DESC, orderid LIMIT 5",
    ),
    (
        "the DuckDB table",
        "SELECT count(*) AS rows, min(orderid) AS first_orderid, max(orderid) AS last_orderid FROM orders",
    ),
];

async fn report(
    client: &tokio_postgres::Client,
    duckdb_file: &Path,
    generated: &datagen::Stats,
    snapshot_rows: u64,
    lag: Option<(Duration, Duration)>,
) -> Result<Outcome> {
    let file = duckdb_file.to_path_buf();
    let (analysis, lake) =
        tokio::task::spawn_blocking(move || -> Result<(String, BTreeMap<i64, Row>)> {
            let mut out = String::new();
            for (title, sql) in ANALYSIS {
                let _ = writeln!(out, "\n{title}:");
                out.push_str(&query::query(&file, sql, query::Format::Table, false)?);
            }
            Ok((out, duckdb_state(&file)?))
        })
        .await
        .context("reading the DuckDB file")??;
    let db = table_state(client).await?;
    println!(
        "generated: {} inserts, {} updates, {} deletes (after a snapshot of {snapshot_rows} rows)",
        generated.inserted, generated.updated, generated.deleted
    );
    if let Some((median, max)) = lag {
        println!(
            "end-to-end lag (commit in PostgreSQL -> row in DuckDB): median {:.1}s, max {:.1}s",
            median.as_secs_f64(),
            max.as_secs_f64()
        );
    }
    println!(
        "DuckDB file: {} (try: sluice query {} \"SELECT * FROM {TABLE} LIMIT 5\")",
        duckdb_file.display(),
        duckdb_file.display()
    );
    print!("{analysis}");
    println!();
    let (db_sum, lake_sum) = (checksum(&db), checksum(&lake));
    if db.len() == lake.len() && db_sum == lake_sum && db == lake {
        println!(
            "verified: {} rows match (checksum {db_sum:016x}) between retail.orders_info and DuckDB table {TABLE}",
            db.len()
        );
        return Ok(Outcome::Verified);
    }
    println!(
        "MISMATCH: PostgreSQL has {} rows (checksum {db_sum:016x}), DuckDB has {} rows (checksum {lake_sum:016x})",
        db.len(),
        lake.len()
    );
    for d in differences(&db, &lake, 10) {
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
