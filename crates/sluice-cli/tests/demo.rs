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
