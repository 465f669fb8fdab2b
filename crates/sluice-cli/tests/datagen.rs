//! `sluice datagen` as a user runs it: the real binary against a throwaway
//! database, checked through SQL.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use sluice_testkit::shared as cluster;

fn sluice() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
    c.arg("datagen");
    // The flags (or their absence) under test decide where to connect.
    for k in ["PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE"] {
        c.env_remove(k);
    }
    c
}

fn url(db: &str) -> String {
    format!("postgres://postgres@127.0.0.1:{}/{db}", cluster().port())
}

fn run(db: &str, args: &[&str]) -> Output {
    sluice()
        .arg("--pg")
        .arg(url(db))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run sluice datagen")
}

fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// (inserted, updated, deleted) from the summary line.
fn summary(stderr: &str) -> (u64, u64, u64) {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("sluice datagen: done"))
        .unwrap_or_else(|| panic!("no summary line in:\n{stderr}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let n = |what: &str| -> u64 {
        words
            .windows(2)
            .find(|w| w[1].trim_end_matches(',') == what)
            .and_then(|w| w[0].parse().ok())
            .unwrap_or_else(|| panic!("no '{what}' count in {line:?}"))
    };
    (n("inserted"), n("updated"), n("deleted"))
}

async fn count(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM retail.orders_info", &[])
        .await
        .expect("count")
        .get(0)
}

/// (orderid, custid, amount, city) of every row, by orderid.
async fn rows(db: &str) -> Vec<(i32, i32, i32, String)> {
    let client = cluster().connect(db).await.expect("connect");
    client
        .query(
            "SELECT orderid, custid, amount, city FROM retail.orders_info ORDER BY orderid",
            &[],
        )
        .await
        .expect("select")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_follow_the_scenarios_distributions() {
    let db = cluster().create_database("dg_dist").await.expect("db");
    let out = run(&db, &["--rate", "max", "--count", "2000", "--seed", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(summary(&stderr), (2000, 0, 0), "{stderr}");

    let client = cluster().connect(&db).await.expect("connect");
    let r = client
        .query_one(
            "SELECT count(*), min(custid), max(custid), count(DISTINCT custid), \
                    min(amount), max(amount), count(DISTINCT amount), \
                    count(*) FILTER (WHERE purchase_time !~ '^\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d$'), \
                    max(abs(extract(epoch FROM to_timestamp(purchase_time, 'YYYY-MM-DD HH24:MI:SS')::timestamp \
                                   - (now() AT TIME ZONE 'UTC'))))::float8 \
             FROM retail.orders_info",
            &[],
        )
        .await
        .expect("stats");
    let (n, cmin, cmax, cdistinct): (i64, i32, i32, i64) = (r.get(0), r.get(1), r.get(2), r.get(3));
    let (amin, amax, adistinct): (i32, i32, i64) = (r.get(4), r.get(5), r.get(6));
    let (badtime, skew): (i64, f64) = (r.get(7), r.get(8));
    assert_eq!(n, 2000);
    assert!(cmin >= 1 && cmax <= 1000, "custid in {cmin}..={cmax}");
    // 2000 uniform draws over 1000 values: ~865 distinct, both ends reached.
    assert!(cdistinct > 750, "only {cdistinct} distinct custids");
    assert!(cmin <= 20 && cmax >= 980, "custid in {cmin}..={cmax}");
    assert!(amin >= 100 && amax <= 199, "amount in {amin}..={amax}");
    assert_eq!(
        adistinct, 100,
        "every amount 100..=199 appears in 2000 draws"
    );
    assert_eq!(badtime, 0, "purchase_time not YYYY-MM-DD HH:MM:SS");
    assert!(skew < 60.0, "purchase_time {skew}s away from now (UTC)");

    let cities: Vec<(String, i64)> = client
        .query(
            "SELECT city, count(*) FROM retail.orders_info GROUP BY city ORDER BY city",
            &[],
        )
        .await
        .expect("cities")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let names: Vec<&str> = cities.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "Austin",
            "Chicago",
            "Cleveland",
            "New Delhi",
            "New York",
            "Seattle"
        ],
        "{cities:?}"
    );
    // ~333 each; a uniform pick stays well inside this band.
    for (city, n) in &cities {
        assert!((230..=440).contains(n), "{city}: {n} of 2000 ({cities:?})");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn update_and_delete_ratios_change_existing_rows() {
    let db = cluster().create_database("dg_mix").await.expect("db");
    let out = run(
        &db,
        &[
            "--rate",
            "max",
            "--count",
            "2000",
            "--update-ratio",
            "0.3",
            "--delete-ratio",
            "0.1",
            "--batch",
            "50",
            "--seed",
            "2",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let (ins, upd, del) = summary(&stderr);
    assert_eq!(ins + upd + del, 2000, "{stderr}");
    // The first batch can only insert; afterwards the mix is ~60/30/10.
    assert!((450..=750).contains(&upd), "{upd} updates: {stderr}");
    assert!((120..=280).contains(&del), "{del} deletes: {stderr}");

    let client = cluster().connect(&db).await.expect("connect");
    let n = count(&client).await;
    assert_eq!(
        u64::try_from(n).expect("count"),
        ins - del,
        "rows left = inserted - deleted"
    );
    let max_id: i32 = client
        .query_one("SELECT max(orderid) FROM retail.orders_info", &[])
        .await
        .expect("max")
        .get(0);
    assert!(
        u64::try_from(max_id).expect("id") <= ins,
        "ids come from the inserts"
    );

    // The server's own counters: every delete removed a row, and rows were
    // updated (two updates of one row in one batch count once there).
    let stats = sluice_testkit::eventually(Duration::from_secs(20), || async {
        let r = client
            .query_one(
                "SELECT n_tup_upd, n_tup_del FROM pg_stat_user_tables \
                 WHERE schemaname = 'retail' AND relname = 'orders_info'",
                &[],
            )
            .await
            .ok()?;
        let (u, d): (i64, i64) = (r.get(0), r.get(1));
        (u > 0 && u64::try_from(d).ok()? == del).then_some((u, d))
    })
    .await;
    let (u, _) = stats.unwrap_or_else(|| {
        panic!("pg_stat_user_tables never showed the updates and {del} deletes")
    });
    assert!(u64::try_from(u).expect("n_tup_upd") <= upd);
}

#[tokio::test(flavor = "multi_thread")]
async fn count_stops_exactly() {
    let db = cluster().create_database("dg_count").await.expect("db");
    let out = run(&db, &["--rate", "500", "--count", "37", "--batch", "5"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(summary(&stderr), (37, 0, 0), "{stderr}");
    let client = cluster().connect(&db).await.expect("connect");
    assert_eq!(count(&client).await, 37);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_seed_makes_the_same_rows() {
    let args = [
        "--rate",
        "max",
        "--count",
        "600",
        "--update-ratio",
        "0.2",
        "--delete-ratio",
        "0.1",
        "--batch",
        "25",
    ];
    let mut runs = Vec::new();
    for seed in ["42", "42", "43"] {
        let db = cluster().create_database("dg_seed").await.expect("db");
        let mut a = args.to_vec();
        a.extend(["--seed", seed]);
        let out = run(&db, &a);
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        runs.push(rows(&db).await);
    }
    assert!(!runs[0].is_empty());
    assert_eq!(runs[0], runs[1], "seed 42 twice gave different rows");
    assert_ne!(runs[0], runs[2], "seeds 42 and 43 gave the same rows");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_the_transaction_and_prints_the_summary() {
    let db = cluster().create_database("dg_term").await.expect("db");
    let mut child = sluice()
        .arg("--pg")
        .arg(url(&db))
        .args(["--rate", "50"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluice datagen");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    // Progress lines show it is generating; then stop it.
    for line in lines.by_ref() {
        let line = line.expect("read stderr");
        let progress = line.starts_with("datagen: ");
        seen.push(line);
        if progress {
            break;
        }
    }
    assert!(
        seen.last().is_some_and(|l| l.starts_with("datagen: ")),
        "no progress line: {seen:?}"
    );
    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    #[allow(unsafe_code)]
    // SAFETY: kill(2) on our own child's pid has no memory effects.
    let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(rc, 0, "kill");
    seen.extend(lines.map(|l| l.expect("read stderr")));
    let status = child.wait().expect("wait");
    let all = seen.join("\n");
    assert_eq!(status.code(), Some(0), "{all}");
    assert!(all.contains("stopped by signal"), "{all}");
    let (ins, _, _) = summary(&all);
    assert!(ins > 0, "{all}");
    let client = cluster().connect(&db).await.expect("connect");
    assert_eq!(
        u64::try_from(count(&client).await).expect("count"),
        ins,
        "the summary counts every committed row: {all}"
    );
}

#[test]
fn bad_flags_are_named() {
    for (args, flag) in [
        (&["--rate", "fast"][..], "--rate"),
        (&["--rate", "0"][..], "--rate"),
        (&["--update-ratio", "2"][..], "--update-ratio"),
        (&["--delete-ratio=-0.1"][..], "--delete-ratio"),
        (&["--duration", "5x"][..], "--duration"),
        (&["--batch", "0"][..], "--batch"),
        (&["--count", "many"][..], "--count"),
        (
            &["--update-ratio", "0.7", "--delete-ratio", "0.5"][..],
            "--delete-ratio",
        ),
    ] {
        // No database is reached: flags are checked first.
        let out = sluice()
            .args(["--pg", "postgres://nobody@127.0.0.1:1/none"])
            .args(args)
            .output()
            .expect("run sluice datagen");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", describe(&out));
        assert!(
            stderr.contains(flag),
            "{args:?} does not name {flag}: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn creates_the_table_when_missing_and_reads_pg_environment() {
    let db = cluster().create_database("dg_env").await.expect("db");
    let client = cluster().connect(&db).await.expect("connect");
    let before: Option<String> = client
        .query_one("SELECT to_regclass('retail.orders_info')::text", &[])
        .await
        .expect("regclass")
        .get(0);
    assert_eq!(before, None);

    // No URL: the PG* variables say where.
    let out = sluice()
        .env("PGHOST", cluster().host())
        .env("PGPORT", cluster().port().to_string())
        .env("PGUSER", "postgres")
        .env("PGDATABASE", &db)
        .args(["--rate", "max", "--count", "3"])
        .output()
        .expect("run sluice datagen");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));

    let cols: Vec<(String, String, String)> = client
        .query(
            "SELECT column_name::text, data_type::text, is_nullable::text \
             FROM information_schema.columns \
             WHERE table_schema = 'retail' AND table_name = 'orders_info' ORDER BY ordinal_position",
            &[],
        )
        .await
        .expect("columns")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let want = [
        ("orderid", "integer"),
        ("custid", "integer"),
        ("amount", "integer"),
        ("city", "character varying"),
        ("purchase_time", "character varying"),
    ];
    let got: Vec<(&str, &str)> = cols.iter().map(|c| (c.0.as_str(), c.1.as_str())).collect();
    assert_eq!(got, want);
    assert!(cols.iter().all(|c| c.2 == "NO"), "{cols:?}");
    assert_eq!(count(&client).await, 3);

    // A second run adds to the existing table.
    let out = run(&db, &["--rate", "max", "--count", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(count(&client).await, 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn default_rate_and_duration_make_one_or_two_rows_in_four_seconds() {
    // The scenario's pace: one row at once, the next 3 s later. Only a
    // coarse bound: a slow machine may insert fewer, never more.
    let db = cluster().create_database("dg_default").await.expect("db");
    let out = run(&db, &["--duration", "4s"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let (ins, upd, del) = summary(&stderr);
    assert!((1..=2).contains(&ins), "{stderr}");
    assert_eq!((upd, del), (0, 0));
    let client = cluster().connect(&db).await.expect("connect");
    assert_eq!(u64::try_from(count(&client).await).expect("count"), ins);
}
