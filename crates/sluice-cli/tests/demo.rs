//! `sluice demo` as a user runs it: a throwaway PostgreSQL cluster, live
//! changes captured end to end, verified, and the cluster stopped afterwards.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

#[test]
fn demo_verifies_and_stops_its_cluster() {
    let dir = tempfile::tempdir().expect("tempdir");
    // As root PostgreSQL runs as `postgres`, which must reach <dir>/pg;
    // temp dirs are private by default.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod tempdir");
    let demo_dir = dir.path().join("demo");
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("demo")
        .arg("--dir")
        .arg(&demo_dir)
        .args(["--duration", "3", "--rate", "100"])
        .output()
        .expect("run sluice demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let all = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(out.status.code(), Some(0), "{all}");

    let verified = stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("verified: ")?
                .split(" rows match")
                .next()?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or_else(|| panic!("no 'verified: N rows match' line\n{all}"));
    assert!(verified > 0, "{all}");

    // Progress lines, the analysis, the lag, and the DuckDB file's path.
    for part in ["written ", "| captured ", "| applied ", "| lag "] {
        assert!(stderr.contains(part), "no '{part}' in the progress\n{all}");
    }
    for part in [
        "average and total amount, and orders, per city:",
        "orders per 10 minutes",
        "end-to-end lag (commit in PostgreSQL -> row in DuckDB): median ",
    ] {
        assert!(stdout.contains(part), "no '{part}'\n{all}");
    }
    let duckdb = demo_dir.join("sluice-demo.duckdb");
    assert!(stdout.contains(&duckdb.display().to_string()), "{all}");
    // Where the dashboard was, and how to keep it.
    assert!(
        stderr.contains("dashboard: http://127.0.0.1:") && stdout.contains("--serve` keeps it up"),
        "{all}"
    );
    // The file stays for `sluice query`, and holds the verified rows.
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("query")
        .arg(&duckdb)
        .arg("SELECT count(*) AS n FROM orders")
        .args(["--format", "csv"])
        .output()
        .expect("run sluice query");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("n\n{verified}\n"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The cluster is down: no postmaster.pid, and no process serves the
    // data directory.
    let data = demo_dir.join("pg").join("data");
    assert!(data.join("PG_VERSION").exists(), "{all}");
    assert!(
        !data.join("postmaster.pid").exists(),
        "postmaster.pid remains: the cluster was not stopped\n{all}"
    );
    let ps = Command::new("ps")
        .args(["-eo", "comm=,args="])
        .output()
        .expect("ps");
    let data_s = data.display().to_string();
    let running: Vec<String> = String::from_utf8_lossy(&ps.stdout)
        .lines()
        .filter(|l| l.starts_with("postgres") && l.contains(&data_s))
        .map(str::to_string)
        .collect();
    assert!(running.is_empty(), "postgres still running: {running:?}");
}

/// `sluice demo --serve`: once verified, the dashboard stays up with the
/// scenario's charts drawn from the DuckDB file, until Ctrl-C.
#[test]
fn demo_serve_keeps_the_dashboard_up_until_interrupted() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("demo")
        .arg("--dir")
        .arg(dir.path().join("demo"))
        .args(["--duration", "2", "--rate", "100", "--serve"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run sluice demo --serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut seen = Vec::new();
    let mut url = None;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.expect("a line");
        seen.push(line.clone());
        if let Some(rest) = line.strip_prefix("dashboard: ") {
            if line.contains("until Ctrl-C") {
                url = rest.split_whitespace().next().map(str::to_owned);
                break;
            }
        }
    }
    let url = url.unwrap_or_else(|| panic!("no dashboard line:\n{}", seen.join("\n")));
    assert!(
        seen.iter().any(|l| l.starts_with("verified: ")),
        "{}",
        seen.join("\n")
    );
    let base = url.trim_end_matches("/dashboard").to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (page, tile) = rt.block_on(async {
        let page = reqwest::get(&url)
            .await
            .expect("page")
            .text()
            .await
            .expect("page text");
        let tile: serde_json::Value = reqwest::get(format!("{base}/sluice/dashboard/tiles/1"))
            .await
            .expect("tile")
            .json()
            .await
            .expect("tile JSON");
        (page, tile)
    });
    assert!(page.contains("/sluice/dashboard"), "{page}");
    assert_eq!(tile["title"], "Sales by city", "{tile}");
    assert!(
        tile["svg"].as_str().is_some_and(|s| s.starts_with("<svg"))
            && tile["rows"].as_u64() > Some(0),
        "{tile}"
    );
    // Ctrl-C ends it cleanly.
    let pid = child.id().to_string();
    Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill -INT");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0));
}
