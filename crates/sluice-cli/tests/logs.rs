//! `sluice connect`'s logs as they land in a file: text without colour
//! codes, or one JSON object per line with `--log-format json` or
//! `SLUICE_LOG_FORMAT=json`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value as Json;

/// Starts `sluice connect` with a file sink, logs to a file; once the sink
/// task runs, stops it with SIGTERM and returns the log.
fn run_worker(args: &[&str], env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::write(
        d.join("worker.properties"),
        "offset.storage.file.filename=offsets\nlisteners=http://127.0.0.1:0\n",
    )
    .expect("write");
    std::fs::write(
        d.join("sink.properties"),
        "name=out\nconnector.class=file\ntopics=t\nfile=out.txt\n",
    )
    .expect("write");
    let log_path = d.join("sluice.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("connect")
        .args(args)
        .args(["worker.properties", "sink.properties"])
        .current_dir(d)
        .env("RUST_LOG", "info")
        .env_remove("SLUICE_LOG_FORMAT")
        .env_remove("NO_COLOR")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn sluice");
    let started = wait_for_log(&log_path, "starting sink connector 'out' task 0");
    let pid = child.id().to_string();
    if started {
        let kill = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(kill.success());
    } else {
        let _ = child.kill();
    }
    let status = child.wait().expect("wait");
    let text = std::fs::read_to_string(&log_path).expect("read log");
    assert!(started, "the sink task never started; log:\n{text}");
    assert_eq!(status.code(), Some(0), "log:\n{text}");
    text
}

fn wait_for_log(path: &Path, needle: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if std::fs::read_to_string(path).is_ok_and(|t| t.contains(needle)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn text_logs_in_a_file_have_no_colour_codes() {
    let log = run_worker(&[], &[]);
    assert!(!log.contains('\u{1b}'), "escape codes in:\n{log}");
    assert!(
        log.lines()
            .any(|l| l.contains(" INFO ") && l.contains("worker stopped")),
        "{log}"
    );
    // Also when the user sets the variable to the default explicitly.
    let log = run_worker(&[], &[("SLUICE_LOG_FORMAT", "text")]);
    assert!(!log.contains('\u{1b}'), "{log}");
    assert!(log.contains("worker stopped"), "{log}");
}

/// Every line is a JSON object with the usual keys; returns them.
fn json_lines(log: &str) -> Vec<Json> {
    assert!(
        !log.contains('\u{1b}') && !log.contains("\\u001b"),
        "colour codes in JSON logs:\n{log}"
    );
    let lines: Vec<Json> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<Json>(l)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}\nlog:\n{log}"))
        })
        .collect();
    assert!(!lines.is_empty(), "no log lines");
    for l in &lines {
        for key in ["timestamp", "level", "target", "message"] {
            assert!(l.get(key).is_some_and(Json::is_string), "no {key} in {l}");
        }
    }
    lines
}

#[test]
fn json_logs_parse_line_by_line() {
    let by_flag = run_worker(&["--log-format", "json"], &[]);
    let lines = json_lines(&by_flag);
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "INFO" && l["message"] == "worker stopped"),
        "{by_flag}"
    );
    assert!(
        lines.iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.contains("REST API listening on http://127.0.0.1:"))),
        "{by_flag}"
    );

    let by_env = run_worker(&[], &[("SLUICE_LOG_FORMAT", "json")]);
    json_lines(&by_env);

    // The flag wins over the variable.
    let flag_over_env = run_worker(&["--log-format", "json"], &[("SLUICE_LOG_FORMAT", "text")]);
    json_lines(&flag_over_env);
}

#[test]
fn bad_log_format_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("sink.properties"),
        "name=out\nconnector.class=file\ntopics=t\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["connect", "sink.properties"])
        .current_dir(dir.path())
        .env("SLUICE_LOG_FORMAT", "xml")
        .output()
        .expect("run sluice");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("SLUICE_LOG_FORMAT=\"xml\"") && err.contains("expected text or json"),
        "{err}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["connect", "--log-format", "yaml", "sink.properties"])
        .current_dir(dir.path())
        .env_remove("SLUICE_LOG_FORMAT")
        .output()
        .expect("run sluice");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("'yaml'") && err.contains("--log-format"),
        "{err}"
    );
}
