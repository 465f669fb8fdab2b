//! `sluice status` against real workers: a standalone `sluice connect`
//! running the PostgreSQL source and the file sink behind basic auth
//! (states, the tasks' rate, lag, pending and slot WAL columns, pause,
//! credentials, an unreachable worker), and a distributed
//! worker on a tansu broker holding a failed task (the error column).

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{fresh_db, sluice_bin, tail, Pipeline, LONG};
use serde_json::json;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn status(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(sluice_bin())
        .arg("status")
        .args(args)
        .env_remove("SLUICE_REST_PASSWORD")
        .envs(env.iter().copied())
        .output()
        .expect("run sluice status")
}

/// The table's rows as header -> cell maps. Cells are cut at the columns
/// where the header's words start, and each cut must fall on the two
/// spaces between columns: that is the alignment.
fn parse_table(out: &str) -> Vec<BTreeMap<String, String>> {
    let mut lines = out.lines();
    let header = lines.next().expect("a header line");
    let mut starts = Vec::new();
    let mut prev = ' ';
    for (i, c) in header.chars().enumerate() {
        if c != ' ' && prev == ' ' {
            starts.push(i);
        }
        prev = c;
    }
    let names: Vec<&str> = header.split_whitespace().collect();
    assert_eq!(names.len(), starts.len(), "{out}");
    lines
        .map(|line| {
            let chars: Vec<char> = line.chars().collect();
            let mut row = BTreeMap::new();
            for (k, &start) in starts.iter().enumerate() {
                if k > 0 {
                    assert!(
                        chars.get(start - 1) == Some(&' ') && chars.get(start - 2) == Some(&' '),
                        "column {} does not start at {start} in {line:?}:\n{out}",
                        names[k]
                    );
                }
                let end = starts
                    .get(k + 1)
                    .copied()
                    .unwrap_or(chars.len())
                    .min(chars.len());
                let cell: String = chars.get(start..end).unwrap_or_default().iter().collect();
                row.insert(names[k].to_string(), cell.trim().to_string());
            }
            row
        })
        .collect()
}

/// Runs `sluice status` until `done(rows)` holds; the last output on
/// timeout.
fn wait_table(
    what: &str,
    args: &[&str],
    log: impl Fn() -> String,
    done: impl Fn(&[BTreeMap<String, String>]) -> bool,
) -> (String, Vec<BTreeMap<String, String>>) {
    let deadline = Instant::now() + LONG;
    loop {
        let out = status(args, &[]);
        let stdout = text(&out.stdout);
        if out.status.success() && !stdout.starts_with("no connectors") {
            let rows = parse_table(&stdout);
            if done(&rows) {
                return (stdout, rows);
            }
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last status (exit {:?}):\n{stdout}{}\nworker log:\n{}",
            out.status.code(),
            text(&out.stderr),
            tail(&log(), 40)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn row<'a>(
    rows: &'a [BTreeMap<String, String>],
    connector: &str,
    task: &str,
) -> &'a BTreeMap<String, String> {
    rows.iter()
        .find(|r| r["CONNECTOR"] == connector && r["TASK"] == task)
        .unwrap_or_else(|| panic!("no row for {connector} task {task}: {rows:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn standalone_worker_with_basic_auth() {
    let (db, pg) = fresh_db("status").await;
    pg.batch_execute("CREATE TABLE items (id int PRIMARY KEY, name text)")
        .await
        .expect("create table");
    let mut p = Pipeline::new(&db, &[("slot.monitor.interval.ms", "200")]);
    let port = p.enable_rest();
    let worker = p.path("worker.properties");
    let mut props = std::fs::read_to_string(&worker).expect("read");
    props.push_str("rest.basic.auth.user=admin\nrest.basic.auth.password=s3cret\n");
    std::fs::write(&worker, props).expect("write");
    p.start();
    let url = format!("http://127.0.0.1:{port}");
    let worker_id = format!("127.0.0.1:{port}");
    let log = || p.log_text();

    let args = [url.as_str(), "--user", "admin:s3cret"];
    let (table, rows) = wait_table("both connectors running", &args, log, |rows| {
        rows.len() == 4 && rows.iter().all(|r| r["STATE"] == "RUNNING")
    });
    assert!(
        table.starts_with("CONNECTOR  TYPE    TASK  STATE    WORKER"),
        "{table}"
    );
    assert!(
        !table.contains("ERROR"),
        "no error column without errors:\n{table}"
    );
    // Sorted by name, the connector's own line before its tasks.
    let order: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r["CONNECTOR"].as_str(), r["TASK"].as_str()))
        .collect();
    assert_eq!(
        order,
        [
            ("file-sink", "-"),
            ("file-sink", "0"),
            ("pg-source", "-"),
            ("pg-source", "0")
        ],
        "{table}"
    );
    assert_eq!(row(&rows, "pg-source", "0")["TYPE"], "source");
    assert_eq!(row(&rows, "file-sink", "0")["TYPE"], "sink");
    for r in &rows {
        assert_eq!(r["WORKER"], worker_id, "{table}");
    }

    // Changes streaming through: the source's rate, lag and slot WAL and
    // the sink's rate and pending records appear on the task rows. A task
    // is RUNNING before its snapshot: inserts made before it streams would
    // be read by the snapshot and never streamed.
    p.wait_until("streaming", LONG, |_| {
        p.log_text().contains("streaming changes")
    });
    for id in 1..=20 {
        pg.execute("INSERT INTO items VALUES ($1, 'x')", &[&id])
            .await
            .expect("insert");
    }
    p.wait_until("the 20 inserts", LONG, |r| r.len() >= 20);
    let has = |r: &BTreeMap<String, String>, col: &str| r.get(col).is_some_and(|c| c != "-");
    let (table, rows) = wait_table("the tasks' figures", &args, log, |rows| {
        rows.iter().any(|r| {
            r["CONNECTOR"] == "pg-source"
                && r["TASK"] == "0"
                && has(r, "RATE")
                && has(r, "LAG")
                && has(r, "WAL")
        }) && rows.iter().any(|r| {
            r["CONNECTOR"] == "file-sink" && r["TASK"] == "0" && has(r, "RATE") && has(r, "PENDING")
        })
    });
    let source = row(&rows, "pg-source", "0");
    assert!(source["RATE"].ends_with("/s"), "{table}");
    assert!(
        source["LAG"].ends_with("ms") || source["LAG"].ends_with('s'),
        "{table}"
    );
    assert!(
        source["WAL"]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
            && (source["WAL"].contains('B')),
        "{table}"
    );
    assert_eq!(source["PENDING"], "-", "a source has no pending: {table}");
    let sink = row(&rows, "file-sink", "0");
    assert!(sink["RATE"].ends_with("/s"), "{table}");
    assert!(sink["PENDING"].parse::<u64>().is_ok(), "{table}");
    assert_eq!(sink["WAL"], "-", "{table}");
    assert_eq!(sink["LAG"], "-", "{table}");
    // A connector's own line has no figures.
    for c in ["pg-source", "file-sink"] {
        let r = row(&rows, c, "-");
        for col in ["RATE", "LAG", "PENDING", "WAL"] {
            assert_eq!(r[col], "-", "{c} {col}: {table}");
        }
    }

    // The password may come from the environment instead.
    let out = status(
        &[&url, "--user", "admin"],
        &[("SLUICE_REST_PASSWORD", "s3cret")],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(parse_table(&text(&out.stdout)).len(), 4);

    // Missing or wrong credentials are named as such.
    let out = status(&[&url], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("requires basic auth (HTTP 401)") && err.contains("--user USER:PASSWORD"),
        "{err}"
    );
    assert!(text(&out.stdout).is_empty());
    let out = status(&[&url, "--user", "admin:wrong"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("rejected user 'admin'"), "{err}");
    assert!(!err.contains("wrong"), "the password is not echoed: {err}");
    let out = status(&[&url, "--user", "admin"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("SLUICE_REST_PASSWORD"),
        "{}",
        text(&out.stderr)
    );

    // A paused sink shows as paused, connector and task.
    let resp = reqwest::Client::new()
        .put(format!("{url}/connectors/file-sink/pause"))
        .basic_auth("admin", Some("s3cret"))
        .send()
        .await
        .expect("pause request");
    assert_eq!(resp.status().as_u16(), 202);
    let (table, rows) = wait_table("the sink paused", &args, log, |rows| {
        rows.iter()
            .filter(|r| r["CONNECTOR"] == "file-sink")
            .all(|r| r["STATE"] == "PAUSED")
    });
    assert_eq!(row(&rows, "pg-source", "0")["STATE"], "RUNNING", "{table}");

    // Once the worker is gone, the error says where it was looked for.
    assert_eq!(p.stop(), Some(0), "{}", p.log_text());
    let out = status(&args, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "cannot reach the worker at http://127.0.0.1:{port}/"
        )) && err.contains("Connection refused"),
        "{err}"
    );
}

#[test]
fn bad_urls_are_usage_errors() {
    let out = status(&["ftp://127.0.0.1:8083"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("expected http://host:port"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_server_that_is_not_a_worker_is_named() {
    // A real HTTP server that is no Kafka Connect worker: 404 everywhere.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    runtime.spawn(async move {
        let app = axum::Router::new();
        let _ = axum::serve(listener, app).await;
    });
    let out = status(&[&format!("127.0.0.1:{port}")], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("HTTP 404") && err.contains("Kafka Connect worker"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn distributed_worker_shows_a_failed_task_error() {
    let tansu = sluice_testkit::tansu::Tansu::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = sluice_testkit::free_port().expect("free port");
    let props = dir.path().join("worker.properties");
    std::fs::write(
        &props,
        format!(
            "bootstrap.servers={}\n\
             group.id=status-test\n\
             config.storage.topic=connect-configs\n\
             offset.storage.topic=connect-offsets\n\
             status.storage.topic=connect-status\n\
             config.storage.replication.factor=1\n\
             offset.storage.replication.factor=1\n\
             status.storage.replication.factor=1\n\
             session.timeout.ms=6000\n\
             heartbeat.interval.ms=500\n\
             listeners=http://127.0.0.1:{port}\n",
            tansu.bootstrap()
        ),
    )
    .expect("write");
    let log_path = dir.path().join("worker.log");
    let log_file = std::fs::File::create(&log_path).expect("log");
    let child = Command::new(sluice_bin())
        .arg("connect")
        .arg(&props)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(log_file)
        .spawn()
        .expect("spawn sluice");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Kill(child);
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let url = format!("http://127.0.0.1:{port}");

    let client = reqwest::Client::new();
    let missing = dir.path().join("no-such-dir").join("out.jsonl");
    for (name, file) in [
        ("broken", missing.display().to_string()),
        ("fine", dir.path().join("out.jsonl").display().to_string()),
    ] {
        let body = json!({"name": name, "config": {
            "connector.class": "org.apache.kafka.connect.file.FileStreamSinkConnector", "topics": "t", "file": file}});
        // The REST API answers before the worker has joined its group.
        let deadline = Instant::now() + LONG;
        loop {
            let resp = client
                .post(format!("{url}/connectors"))
                .json(&body)
                .send()
                .await;
            match resp {
                Ok(r) if r.status().as_u16() == 201 => break,
                other => assert!(
                    Instant::now() < deadline,
                    "creating {name}: {other:?}\nlog:\n{}",
                    tail(&log(), 40)
                ),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    let (table, rows) = wait_table("the broken task failed", &[&url], log, |rows| {
        rows.iter()
            .any(|r| r["CONNECTOR"] == "broken" && r["TASK"] == "0" && r["STATE"] == "FAILED")
            && rows
                .iter()
                .any(|r| r["CONNECTOR"] == "fine" && r["TASK"] == "0" && r["STATE"] == "RUNNING")
    });
    let failed = row(&rows, "broken", "0");
    let error = failed.get("ERROR").expect("an ERROR column");
    assert!(
        error.contains("opening file sink output") && error.contains("no-such-dir"),
        "{table}"
    );
    assert_eq!(row(&rows, "fine", "0")["ERROR"], "-", "{table}");
    assert_eq!(
        row(&rows, "broken", "0")["WORKER"],
        format!("127.0.0.1:{port}")
    );
    // One line per row, whatever the trace holds.
    assert_eq!(table.lines().count(), 1 + rows.len(), "{table}");
}
