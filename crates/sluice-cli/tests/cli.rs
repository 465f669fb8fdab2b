//! The `sluice` binary as users run it: help, version, configuration errors
//! and an orderly stop on SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn sluice(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "info")
        .output()
        .expect("run sluice")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn help_and_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = sluice(&["--help"], dir.path());
    assert!(out.status.success());
    let help = text(&out.stdout);
    assert!(
        help.contains("connect") && help.contains("version"),
        "{help}"
    );

    let out = sluice(&["connect", "--help"], dir.path());
    assert!(out.status.success());
    let help = text(&out.stdout);
    assert!(
        help.contains("standalone") && help.contains("distributed with group.id"),
        "{help}"
    );
    assert!(
        help.contains("[WORKER_CONFIG] CONNECTOR_CONFIG..."),
        "{help}"
    );

    let out = sluice(&["version"], dir.path());
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout),
        format!("sluice {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn bad_config_exits_2_naming_every_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("worker.properties"),
        "bootstrap.servers=\noffset.flush.interval.ms=often\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("sink.properties"),
        "name=out\nconnector.class=file\ntasks.max=zero\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("other.json"),
        r#"{"name": "other", "config": {"connector.class": "com.example.Missing"}}"#,
    )
    .expect("write");
    let out = sluice(
        &[
            "connect",
            "worker.properties",
            "sink.properties",
            "other.json",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    for needle in [
        "'bootstrap.servers'",
        "'offset.flush.interval.ms'",
        "connector 'out' (sink.properties)",
        "'tasks.max'",
        "'topics'",
        "connector 'other' (other.json)",
        "'connector.class'",
        "org.apache.kafka.connect.file.FileStreamSinkConnector",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    assert!(text(&out.stdout).is_empty(), "stdout stays clean");

    // A malformed file is named with its line.
    std::fs::write(dir.path().join("broken.properties"), "name=x\nbad=\\u12\n").expect("write");
    let out = sluice(&["connect", "broken.properties"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("broken.properties:2"), "{err}");
}

#[test]
fn sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("sink.properties"),
        "name=out\nconnector.class=file\ntopics=t\nfile=out.txt\n",
    )
    .expect("write");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["connect", "sink.properties"])
        .current_dir(dir.path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluice");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut log = String::new();
    // The sink task is started once the log says so; then stop the worker.
    for line in lines.by_ref() {
        let line = line.expect("log line");
        log.push_str(&line);
        log.push('\n');
        if line.contains("starting sink connector 'out' task 0") {
            break;
        }
    }
    assert!(log.contains("./sluice.offsets"), "{log}");
    send_sigterm(child.id());
    for line in lines {
        log.push_str(&line.expect("log line"));
        log.push('\n');
    }
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("worker stopped"), "{log}");
    assert!(dir.path().join("out.txt").exists());
}

/// Sends SIGTERM with the `kill` command (the workspace forbids unsafe code,
/// so no libc::kill).
fn send_sigterm(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM {pid}: {status}");
}

#[test]
fn corrupt_offset_file_is_named_and_never_reset() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("worker.json"),
        r#"{"offset.storage.file.filename": "connect.offsets", "offset.flush.interval.ms": 1000}"#,
    )
    .expect("write");
    std::fs::write(dir.path().join("connect.offsets"), "{\"truncated").expect("write");
    std::fs::write(
        dir.path().join("sink.properties"),
        "name=out\nconnector.class=file\ntopics=t\n",
    )
    .expect("write");
    let out = sluice(&["connect", "worker.json", "sink.properties"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("connect.offsets") && err.contains("corrupt"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("connect.offsets")).expect("still there"),
        "{\"truncated"
    );
}
