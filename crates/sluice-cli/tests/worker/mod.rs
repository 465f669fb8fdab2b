//! A standalone `sluice connect` process driven through its REST API, as
//! the runtime and observability tests use it.

#![allow(dead_code)] // each test file uses part of it

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use crate::common::{sluice_bin, tail, LONG};

/// A standalone worker process with its REST API, in a directory of its own.
pub struct Worker {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
    http: reqwest::Client,
}

impl Worker {
    /// A worker whose properties are the defaults a user would write plus
    /// `extra` lines.
    pub fn new(extra: &str) -> Worker {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = sluice_testkit::free_port().expect("free port");
        std::fs::write(
            dir.path().join("worker.properties"),
            format!(
                "offset.storage.file.filename={}\noffset.flush.interval.ms=200\n\
                 listeners=http://127.0.0.1:{port}\n{extra}",
                dir.path().join("connect.offsets").display()
            ),
        )
        .expect("write worker.properties");
        Worker {
            dir,
            port,
            child: None,
            http: reqwest::Client::new(),
        }
    }

    pub fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("worker.log")).unwrap_or_default()
    }

    /// Starts `sluice connect worker.properties [files]` and waits for its
    /// REST API.
    pub async fn start(&mut self, files: &[&str]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("worker.log"))
            .expect("log");
        let mut cmd = Command::new(sluice_bin());
        cmd.arg("connect").arg(self.path("worker.properties"));
        for f in files {
            cmd.arg(self.path(f));
        }
        let child = cmd
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn sluice");
        self.child = Some(child);
        let deadline = Instant::now() + LONG;
        loop {
            if self.get("/connectors").await.0 == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the REST API never answered:\n{}",
                tail(&self.log(), 40)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Json>,
    ) -> (u16, Json) {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let mut req = self.http.request(method, url);
        if let Some(b) = body {
            req = req.json(b);
        }
        match req.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let text = r.text().await.unwrap_or_default();
                (status, serde_json::from_str(&text).unwrap_or(Json::Null))
            }
            Err(_) => (0, Json::Null),
        }
    }

    /// GET `url` as text: its status and body.
    pub async fn text(&self, url: &str) -> (u16, String) {
        match self.http.get(url).send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.text().await.unwrap_or_default())
            }
            Err(_) => (0, String::new()),
        }
    }

    pub async fn get(&self, path: &str) -> (u16, Json) {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Json) -> (u16, Json) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: &Json) -> (u16, Json) {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Json) {
        self.call(reqwest::Method::DELETE, path, None).await
    }

    /// Waits until connector `c`'s task 0 is in one of `states`; its
    /// status.
    pub async fn wait_task(&self, c: &str, states: &[&str]) -> Json {
        let deadline = Instant::now() + LONG;
        loop {
            let (code, st) = self.get(&format!("/connectors/{c}/status")).await;
            if code == 200
                && st["tasks"][0]["state"]
                    .as_str()
                    .is_some_and(|s| states.contains(&s))
            {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "connector {c} never reached {states:?}: {st}\n{}",
                tail(&self.log(), 40)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill9();
    }
}

// The scenario's table compared row by row between PostgreSQL and a DuckDB
// file a worker's sink writes.

pub const ROW: &str = "orderid::text || '|' || custid::text || '|' || amount::text || '|' || city || '|' || purchase_time";

pub async fn pg_rows(pg: &tokio_postgres::Client) -> Vec<String> {
    pg.query(
        &format!("SELECT {ROW} FROM retail.orders_info ORDER BY orderid"),
        &[],
    )
    .await
    .expect("pg rows")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

pub fn duck_rows(path: &Path, table: &str) -> Option<Vec<String>> {
    let config = duckdb::Config::default()
        .access_mode(duckdb::AccessMode::ReadOnly)
        .ok()?;
    let conn = duckdb::Connection::open_with_flags(path, config).ok()?;
    let sql = format!(
        "SELECT CAST(orderid AS VARCHAR) || '|' || CAST(custid AS VARCHAR) || '|' || CAST(amount AS VARCHAR) || '|' || city || '|' || purchase_time FROM {table} ORDER BY orderid"
    );
    let mut stmt = conn.prepare(&sql).ok()?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0)).ok()?;
    rows.collect::<Result<Vec<_>, _>>().ok()
}

/// Copies the worker's directory (its log, offsets and local log) and the
/// DuckDB file out of the temporary directory that a failed test removes;
/// where they went, for the failure message.
fn keep_for_diagnosis(w: &Worker, duck: &Path) -> String {
    let to = std::env::temp_dir().join(format!(
        "sluice-converge-failed-{}-{}",
        std::process::id(),
        w.port
    ));
    let copied = std::process::Command::new("cp")
        .arg("-r")
        .arg(w.dir.path())
        .arg(&to)
        .status()
        .is_ok_and(|s| s.success())
        && std::fs::copy(duck, to.join("kept.duckdb")).is_ok();
    if copied {
        format!(
            "; the worker's files and the DuckDB file are kept in {}",
            to.display()
        )
    } else {
        String::new()
    }
}

/// Stops the worker until DuckDB's table equals PostgreSQL's (the file is
/// the worker's while it runs), starting it again in between; the rows.
pub async fn converge(
    w: &mut Worker,
    files: &[&str],
    pg: &tokio_postgres::Client,
    duck: &Path,
) -> usize {
    let deadline = Instant::now() + LONG;
    let want = pg_rows(pg).await;
    let mut wait = Duration::from_secs(2);
    loop {
        assert_eq!(w.stop(), Some(0), "clean stop\n{}", tail(&w.log(), 40));
        let got = duck_rows(duck, "orders").unwrap_or_default();
        if got == want {
            return got.len();
        }
        let kept = if Instant::now() < deadline {
            String::new()
        } else {
            keep_for_diagnosis(w, duck)
        };
        assert!(
            Instant::now() < deadline,
            "DuckDB has {} rows, PostgreSQL {}; first difference: {:?}{kept}\n{}",
            got.len(),
            want.len(),
            got.iter().zip(&want).find(|(a, b)| a != b),
            tail(&w.log(), 40)
        );
        w.start(files).await;
        // Longer each time: a snapshot stopped before its end starts over.
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(30));
    }
}
