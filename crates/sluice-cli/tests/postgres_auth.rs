//! Password authentication on both the SQL and the replication connection:
//! SCRAM-SHA-256, MD5, the password from the config or PGPASSWORD, and a
//! wrong password reported at once.

mod common;

use std::time::Duration;

use common::*;

/// Users that must authenticate with a password, whatever else the test
/// cluster trusts: their pg_hba lines go first.
async fn password_users() {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| async {
        let c = cluster();
        let admin = c.connect("postgres").await.unwrap();
        admin
            .batch_execute(
                "SET password_encryption = 'scram-sha-256';
                 CREATE ROLE scram_user LOGIN REPLICATION SUPERUSER PASSWORD 'scram-secret';
                 SET password_encryption = 'md5';
                 CREATE ROLE md5_user LOGIN REPLICATION SUPERUSER PASSWORD 'md5-secret';",
            )
            .await
            .unwrap();
        let hba_path: String = admin.query_one("SHOW hba_file", &[]).await.unwrap().get(0);
        let old = std::fs::read_to_string(&hba_path).unwrap();
        let rules = "host all,replication scram_user 127.0.0.1/32 scram-sha-256\n\
                     host all,replication md5_user 127.0.0.1/32 md5\n";
        std::fs::write(&hba_path, format!("{rules}{old}")).unwrap();
        admin
            .batch_execute("SELECT pg_reload_conf()")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    })
    .await;
}

async fn prepared_db(hint: &str) -> String {
    password_users().await;
    let (db, pg) = fresh_db(hint).await;
    pg.batch_execute("CREATE TABLE a (id int PRIMARY KEY); INSERT INTO a VALUES (1);")
        .await
        .unwrap();
    db
}

#[tokio::test(flavor = "multi_thread")]
async fn scram_password_from_the_config() {
    let db = prepared_db("scram").await;
    let mut p = Pipeline::new(
        &db,
        &[
            ("database.user", "scram_user"),
            ("database.password", "scram-secret"),
        ],
    );
    p.start();
    p.wait_events("test.public.a", 1, LONG);
    assert!(
        !p.log_text().contains("scram-secret"),
        "the password never reaches the log"
    );
    assert_eq!(p.stop(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn md5_password_from_pgpassword() {
    let db = prepared_db("md5").await;
    let mut p = Pipeline::new(&db, &[("database.user", "md5_user")]);
    p.env.push(("PGPASSWORD".into(), "md5-secret".into()));
    p.start();
    p.wait_events("test.public.a", 1, LONG);
    assert_eq!(p.stop(), Some(0));
}

/// A wrong password is a definite error: never retried. Next to a running
/// sink the worker keeps running and the task's status says why it failed;
/// alone, the worker stops with exit code 1.
#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_fails_at_once() {
    let db = prepared_db("wrongpw").await;
    let wrong = [
        ("database.user", "scram_user"),
        ("database.password", "nope"),
    ];
    let mut p = Pipeline::new(&db, &wrong);
    let port = p.enable_rest();
    p.start();
    let status = p.wait_status(port, "pg-source", "FAILED task", LONG, |s| {
        task_state(s, 0).0 == "FAILED"
    });
    let (_, trace) = task_state(&status, 0);
    assert!(trace.contains("password authentication failed"), "{trace}");
    assert!(!trace.contains("nope"), "the password never shows: {trace}");
    let sink = rest_get(port, "/connectors/file-sink/status").expect("sink status");
    assert_eq!(task_state(&sink, 0).0, "RUNNING", "{sink}");
    // The worker kept running until told to stop; its exit code then
    // says a task was still failed.
    assert_eq!(p.stop(), Some(1), "stopped with a task failed");
    let log = p.log_text();
    assert!(!log.contains("restarting it in"), "not retried: {log}");

    let mut p = Pipeline::new(&db, &wrong);
    p.start_source_only();
    let code = p.wait_exit(LONG);
    let log = p.log_text();
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("password authentication failed"), "{log}");
    assert!(!log.contains("restarting it in"), "not retried: {log}");
    assert!(
        !log.contains("nope"),
        "the password never reaches the log: {log}"
    );
}
