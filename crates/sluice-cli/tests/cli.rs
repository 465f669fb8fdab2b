//! The `sluice` binary as users run it: help (every subcommand's long
//! help), version, configuration errors and an orderly stop on SIGTERM.

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
        help.contains("standalone mode") && help.contains("distributed cluster"),
        "{help}"
    );
    assert!(
        help.contains("[WORKER_CONFIG] CONNECTOR_CONFIG..."),
        "{help}"
    );

    let out = sluice(&["version"], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let version = text(&out.stdout);
    let lines: Vec<&str> = version.lines().collect();
    assert_eq!(lines.len(), 3, "{version}");
    assert_eq!(lines[0], format!("sluice {}", env!("CARGO_PKG_VERSION")));
    assert!(lines[1].starts_with("commit: "), "{version}");
    assert!(
        lines[2].starts_with("duckdb: v1.") && lines[2].contains("libduckdb.so"),
        "{version}"
    );
}

/// Each subcommand, with a phrase found only in its long help.
const LONG_HELP: &[(&str, &str)] = &[
    (
        "connect",
        "Exit codes: 0 clean stop, 1 task failure, 2 invalid configuration.",
    ),
    (
        "demo",
        "Exit codes: 0 verified, 1 mismatch or failure, 130 interrupted.",
    ),
    (
        "datagen",
        "Exit codes: 0 done or stopped, 1 database error, 2 invalid flags.",
    ),
    (
        "query",
        "The file is opened read-only unless --write is given.",
    ),
    (
        "status",
        "It reads GET /connectors?expand=status&expand=info",
    ),
    (
        "version",
        "Exit codes: 0, or 1 when DuckDB cannot be opened.",
    ),
];

#[test]
fn every_subcommand_shows_its_long_help() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The list above covers every subcommand the binary offers.
    let top = text(&sluice(&["--help"], dir.path()).stdout);
    let commands: Vec<&str> = top
        .split("Commands:")
        .nth(1)
        .expect("a Commands section")
        .split("Options:")
        .next()
        .expect("commands")
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    let mut listed: Vec<&str> = LONG_HELP.iter().map(|(c, _)| *c).collect();
    listed.sort_unstable();
    let mut offered = commands.clone();
    offered.sort_unstable();
    assert_eq!(offered, listed, "{top}");

    for (command, phrase) in LONG_HELP {
        for args in [vec![*command, "--help"], vec!["help", *command]] {
            let out = sluice(&args, dir.path());
            assert!(
                out.status.success(),
                "sluice {args:?}: {}",
                text(&out.stderr)
            );
            let help = text(&out.stdout);
            assert!(
                help.contains(phrase),
                "`sluice {}` shows the long help; missing {phrase:?}:\n{help}",
                args.join(" ")
            );
        }
        // -h stays the summary, and points at --help.
        let short = text(&sluice(&[command, "-h"], dir.path()).stdout);
        assert!(!short.contains(phrase), "sluice {command} -h:\n{short}");
        assert!(short.contains("'--help'"), "sluice {command} -h:\n{short}");
    }
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
