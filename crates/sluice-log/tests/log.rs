//! The local log against real files: appends, reads, recovery after torn
//! writes and after `kill -9`, retention, and a full log.

use std::io::{BufRead as _, Write as _};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_log::{Appended, Log, LogConfig, LogError};

/// A payload holding the numbers `from..from+count`.
fn numbers(from: u64, count: u32) -> Vec<u8> {
    (from..from + u64::from(count))
        .flat_map(|n| n.to_le_bytes())
        .collect()
}

fn decode(payload: &[u8]) -> Vec<u64> {
    payload
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

type Results = Arc<Mutex<Vec<Result<Appended, String>>>>;

/// Appends `batches` (sizes) to topic `t` partition 0 and waits for all.
async fn append_all(log: &Log, start: u64, batches: &[u32]) -> Vec<Result<Appended, String>> {
    let results: Results = Default::default();
    let producer = log.appender().producer();
    let mut n = start;
    for &count in batches {
        let r = Arc::clone(&results);
        log.appender()
            .append(
                producer,
                Arc::from("t"),
                0,
                numbers(n, count),
                count,
                move |res| {
                    r.lock().expect("lock").push(res.map_err(|e| e.to_string()));
                },
            )
            .await
            .expect("queued");
        n += u64::from(count);
    }
    for _ in 0..2000 {
        if results.lock().expect("lock").len() == batches.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let out = results.lock().expect("lock").clone();
    assert_eq!(out.len(), batches.len(), "every append completes");
    out
}

fn read_all(log: &Log, from: i64) -> Vec<u64> {
    let mut r = log.reader("t", 0, from).expect("reader");
    let mut out = Vec::new();
    loop {
        let frames = r.read(1 << 16).expect("read");
        if frames.is_empty() {
            return out;
        }
        for f in frames {
            let nums = decode(&f.payload);
            assert_eq!(nums.len(), f.count as usize);
            assert_eq!(nums[0], f.base_offset as u64, "offsets are the numbers");
            out.extend_from_slice(&nums[f.skip as usize..]);
        }
    }
}

fn small_segments(dir: &std::path::Path) -> LogConfig {
    LogConfig {
        segment_bytes: 100,
        retention: None,
        retention_bytes: None,
        ..LogConfig::new(dir)
    }
}

#[tokio::test]
async fn appends_are_read_back_in_order_across_segments_and_reopens() {
    let dir = tempfile::tempdir().expect("tmp");
    let log = Log::open(small_segments(dir.path())).expect("open");
    assert_eq!(log.create_topic("t", 1).expect("create"), 1);
    let batches = [3, 1, 7, 2, 5, 9, 4];
    let res = append_all(&log, 0, &batches).await;
    let mut expect_base = 0;
    for (r, &n) in res.iter().zip(&batches) {
        let a = r.as_ref().expect("appended");
        assert_eq!((a.base_offset, a.count), (expect_base, n));
        expect_base += i64::from(n);
    }
    let total: u64 = batches.iter().map(|&b| u64::from(b)).sum();
    assert_eq!(read_all(&log, 0), (0..total).collect::<Vec<_>>());
    // From inside a frame and inside a later segment.
    assert_eq!(read_all(&log, 5), (5..total).collect::<Vec<_>>());
    assert_eq!(read_all(&log, 20), (20..total).collect::<Vec<_>>());
    assert!(
        std::fs::read_dir(dir.path().join("topics/t/0"))
            .expect("dir")
            .count()
            > 2,
        "several segments"
    );
    drop(log);
    let log = Log::open(small_segments(dir.path())).expect("reopen");
    assert_eq!(log.bounds("t", 0).expect("bounds"), (0, total as i64));
    assert_eq!(read_all(&log, 0), (0..total).collect::<Vec<_>>());
    // Appends continue after the last offset.
    let res = append_all(&log, total, &[2]).await;
    assert_eq!(res[0].as_ref().expect("ok").base_offset, total as i64);
    assert_eq!(read_all(&log, 0), (0..total + 2).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_torn_tail_is_cut_on_open() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = LogConfig {
        retention: None,
        retention_bytes: None,
        ..LogConfig::new(dir.path())
    };
    let log = Log::open(cfg.clone()).expect("open");
    log.create_topic("t", 1).expect("create");
    append_all(&log, 0, &[4, 4]).await;
    drop(log);
    let seg = dir.path().join("topics/t/0/00000000000000000000.log");
    let whole = std::fs::metadata(&seg).expect("meta").len();
    // A frame that was being written: a header promising more than there is.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .expect("open");
    f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 8, 0, 0])
        .expect("write");
    drop(f);
    let log = Log::open(cfg.clone()).expect("reopen");
    assert_eq!(std::fs::metadata(&seg).expect("meta").len(), whole);
    assert_eq!(read_all(&log, 0), (0..8).collect::<Vec<_>>());
    drop(log);
    // A whole frame with a corrupt body is cut too, with what follows.
    let mut bytes = std::fs::read(&seg).expect("read");
    let last_payload_byte = bytes.len() - 1;
    bytes[last_payload_byte] ^= 0xff;
    std::fs::write(&seg, &bytes).expect("write");
    let log = Log::open(cfg).expect("reopen");
    assert_eq!(read_all(&log, 0), (0..4).collect::<Vec<_>>());
    let res = append_all(&log, 4, &[1]).await;
    assert_eq!(res[0].as_ref().expect("ok").base_offset, 4);
}

#[tokio::test]
async fn retention_keeps_what_a_live_group_has_not_read() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = LogConfig {
        segment_bytes: 200,
        retention: None,
        retention_bytes: Some(400),
        ..LogConfig::new(dir.path())
    };
    let log = Log::open(cfg).expect("open");
    log.create_topic("t", 1).expect("create");
    append_all(&log, 0, &[10; 12]).await;
    let floor = Arc::new(Mutex::new(Some(0i64)));
    let f = Arc::clone(&floor);
    log.set_retention_floor(Box::new(move |_, _| *f.lock().expect("lock")));
    log.enforce_retention().expect("retention");
    assert_eq!(log.bounds("t", 0).expect("bounds").0, 0, "nothing read yet");
    *floor.lock().expect("lock") = Some(55);
    log.enforce_retention().expect("retention");
    let (start, end) = log.bounds("t", 0).expect("bounds");
    assert!(start > 0 && start <= 55, "deleted up to the group: {start}");
    assert_eq!(end, 120);
    assert_eq!(read_all(&log, 0), (start as u64..120).collect::<Vec<_>>());
    let used_before = log.used_bytes();
    *floor.lock().expect("lock") = None;
    log.enforce_retention().expect("retention");
    assert!(log.used_bytes() < used_before);
    assert!(log.used_bytes() <= 400 + 200, "{}", log.used_bytes());
}

#[tokio::test]
async fn a_full_log_refuses_appends_until_a_new_producer_finds_room() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = LogConfig {
        segment_bytes: 150,
        retention: None,
        retention_bytes: Some(0),
        max_bytes: Some(400),
        ..LogConfig::new(dir.path())
    };
    let log = Log::open(cfg).expect("open");
    log.create_topic("t", 1).expect("create");
    let floor = Arc::new(Mutex::new(Some(0i64)));
    let f = Arc::clone(&floor);
    log.set_retention_floor(Box::new(move |_, _| *f.lock().expect("lock")));
    let res = append_all(&log, 0, &[10; 8]).await;
    let ok = res.iter().take_while(|r| r.is_ok()).count();
    assert!(ok > 0 && ok < 8, "{res:?}");
    let first_err = res[ok].as_ref().expect_err("full");
    assert!(first_err.contains("is full"), "{first_err}");
    assert!(
        res[ok + 1..]
            .iter()
            .all(|r| r.as_ref().is_err_and(|e| e.contains("earlier append"))),
        "nothing after the failure lands: {res:?}"
    );
    // Nothing acknowledged is missing, nothing refused is there.
    assert_eq!(read_all(&log, 0), (0..ok as u64 * 10).collect::<Vec<_>>());
    // Readers catch up, retention frees space, a new producer goes on.
    *floor.lock().expect("lock") = Some(ok as i64 * 10);
    log.enforce_retention().expect("retention");
    let res = append_all(&log, ok as u64 * 10, &[10]).await;
    assert!(res[0].is_ok(), "{res:?}");
    let err = LogError::Full {
        dir: "d".into(),
        used: 1,
        limit: 1,
    };
    assert!(err.is_transient() && err.is_full());
}

/// Runs only as the child of `kill_9_never_loses_an_acknowledged_append`:
/// appends numbered batches for ever, printing each acknowledged one.
#[tokio::test]
async fn crash_child() {
    let Ok(dir) = std::env::var("SLUICE_LOG_CRASH_DIR") else {
        return;
    };
    let log = Log::open(LogConfig {
        segment_bytes: 64 << 10,
        ..LogConfig::new(dir)
    })
    .expect("open");
    log.create_topic("t", 1).expect("create");
    let (start, end) = log.bounds("t", 0).expect("bounds");
    assert_eq!(start, 0);
    let producer = log.appender().producer();
    let mut n = end as u64;
    let mut i = 0u64;
    loop {
        let count = (i % 37 + 1) as u32;
        i += 1;
        log.appender()
            .append(
                producer,
                Arc::from("t"),
                0,
                numbers(n, count),
                count,
                |res| {
                    let a = res.expect("appended");
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "ACK {}", a.base_offset + i64::from(a.count));
                    let _ = out.flush();
                },
            )
            .await
            .expect("queued");
        n += u64::from(count);
    }
}

#[test]
fn kill_9_never_loses_an_acknowledged_append() {
    let dir = tempfile::tempdir().expect("tmp");
    let exe = std::env::current_exe().expect("test binary");
    let mut acked_max = 0i64;
    for round in 0..6u64 {
        let mut child = std::process::Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env("SLUICE_LOG_CRASH_DIR", dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("child");
        let stdout = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(0i64));
        let l = Arc::clone(&lines);
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(end) = line
                    .strip_prefix("ACK ")
                    .and_then(|v| v.parse::<i64>().ok())
                {
                    let mut m = l.lock().expect("lock");
                    *m = (*m).max(end);
                }
            }
        });
        // Wait until it acknowledged something new, then a little longer
        // (varied per round), then kill it mid-write.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while *lines.lock().expect("lock") <= acked_max {
            assert!(
                std::time::Instant::now() < deadline,
                "child made no progress"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(5 + round * 13));
        // SIGKILL: no destructor, no flush.
        child.kill().expect("kill");
        child.wait().expect("wait");
        reader.join().expect("reader");
        acked_max = *lines.lock().expect("lock");
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let log = Log::open(LogConfig::new(dir.path())).expect("reopen");
            let got = read_all(&log, 0);
            assert!(
                got.len() as i64 >= acked_max,
                "round {round}: {} records kept, {acked_max} acknowledged",
                got.len()
            );
            assert!(
                got.iter().enumerate().all(|(i, &n)| n == i as u64),
                "round {round}: records are contiguous and in order"
            );
        });
    }
}
