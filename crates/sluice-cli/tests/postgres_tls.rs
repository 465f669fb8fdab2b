//! TLS to PostgreSQL: every `database.sslmode` against a real server that
//! accepts TCP connections only over TLS (`hostssl` in pg_hba.conf, plain
//! TCP rejected), with certificates made at test time by the `openssl` CLI.
//!
//! Three clusters: this binary's shared cluster, switched to TLS with a
//! certificate for IP `127.0.0.1` and DNS `localhost`; a second one whose
//! certificate names only `other.example` (both signed by the same test CA);
//! and a third left without TLS. A second, unrelated CA stands in for "the
//! wrong root". Test setup talks to the clusters over their Unix sockets.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value as Json;
use sluice_testkit::PgCluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::OnceCell;

/// Certificates and keys, all PEM.
struct Pki {
    /// The CA that signed both server certificates.
    ca: PathBuf,
    /// A CA that signed nothing the servers present.
    wrong_ca: PathBuf,
    /// Server certificate and key for IP 127.0.0.1 and DNS localhost.
    main: (PathBuf, PathBuf),
    /// Server certificate and key for DNS other.example only.
    other: (PathBuf, PathBuf),
}

/// A test server; admin sessions go over its Unix socket.
struct Server {
    cluster: &'static PgCluster,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl (the tests need the openssl CLI)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn make_ca(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (crt, key) = (format!("{name}.crt"), format!("{name}.key"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &crt,
            "-days",
            "3",
            "-subj",
            &format!("/CN=Sluice test {name}"),
        ],
    );
    (dir.join(crt), dir.join(key))
}

fn make_server_cert(
    dir: &Path,
    ca: &(PathBuf, PathBuf),
    name: &str,
    san: &str,
) -> (PathBuf, PathBuf) {
    static SERIAL: AtomicU32 = AtomicU32::new(1);
    let (crt, key, csr, ext) = (
        format!("{name}.crt"),
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.ext"),
    );
    std::fs::write(
        dir.join(&ext),
        format!(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\nsubjectAltName={san}\n\
             subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
        ),
    )
    .expect("write ext");
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN=sluice-test-{name}"),
        ],
    );
    let serial = format!(
        "{}{}",
        std::process::id(),
        SERIAL.fetch_add(1, Ordering::Relaxed)
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca.0.to_string_lossy(),
            "-CAkey",
            &ca.1.to_string_lossy(),
            "-set_serial",
            &serial,
            "-days",
            "3",
            "-extfile",
            &ext,
            "-out",
            &crt,
        ],
    );
    (dir.join(crt), dir.join(key))
}

async fn pki() -> &'static Pki {
    static PKI: OnceCell<Pki> = OnceCell::const_new();
    PKI.get_or_init(|| async {
        // Under the shared cluster's directory, removed with it.
        let dir = cluster().dir().join("pki");
        std::fs::create_dir_all(&dir).expect("pki dir");
        let ca = make_ca(&dir, "ca");
        let wrong = make_ca(&dir, "wrong-ca");
        let main = make_server_cert(&dir, &ca, "main", "IP:127.0.0.1,DNS:localhost");
        let other = make_server_cert(&dir, &ca, "other", "DNS:other.example");
        Pki {
            ca: ca.0,
            wrong_ca: wrong.0,
            main,
            other,
        }
    })
    .await
}

/// A superuser session over the cluster's Unix socket (pg_hba.conf trusts
/// `local`), so the test's own setup needs no TLS.
async fn admin(c: &PgCluster, db: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::Config::new()
        .host_path(c.dir())
        .port(c.port())
        .user("postgres")
        .dbname(db)
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "admin connection over the socket in {}: {e}",
                c.dir().display()
            )
        });
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// Installs `cert`/`key` as the server's, requires TLS on every TCP
/// connection and reloads.
async fn enable_tls(c: &PgCluster, cert: &Path, key: &Path) {
    let meta = std::fs::metadata(c.dir()).expect("cluster dir");
    let (uid, gid) = (meta.uid(), meta.gid());
    let server_crt = c.dir().join("server.crt");
    let server_key = c.dir().join("server.key");
    std::fs::copy(cert, &server_crt).expect("copy cert");
    std::fs::copy(key, &server_key).expect("copy key");
    for f in [&server_crt, &server_key] {
        std::os::unix::fs::chown(f, Some(uid), Some(gid)).expect("chown to the server's user");
    }
    std::fs::set_permissions(&server_crt, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    std::fs::set_permissions(&server_key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let hba = c.dir().join("data").join("pg_hba.conf");
    std::fs::write(
        &hba,
        "local all all trust\n\
         local replication all trust\n\
         hostssl all all 127.0.0.1/32 trust\n\
         hostssl replication all 127.0.0.1/32 trust\n\
         hostnossl all all 0.0.0.0/0 reject\n\
         hostnossl replication all 0.0.0.0/0 reject\n\
         host all all ::/0 reject\n\
         host replication all ::/0 reject\n",
    )
    .expect("write pg_hba.conf");
    std::os::unix::fs::chown(&hba, Some(uid), Some(gid)).expect("chown pg_hba.conf");
    let a = admin(c, "postgres").await;
    for sql in [
        format!(
            "ALTER SYSTEM SET ssl_cert_file = '{}'",
            server_crt.display()
        ),
        format!("ALTER SYSTEM SET ssl_key_file = '{}'", server_key.display()),
        "ALTER SYSTEM SET ssl = on".to_string(),
        "SELECT pg_reload_conf()".to_string(),
    ] {
        a.batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    // The reload is asynchronous: wait until the postmaster answers an
    // SSLRequest with 'S' (TLS loaded) and refuses plain TCP (pg_hba).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let tls = ssl_request(c.port()).await;
        let plain = tokio_postgres::connect(&c.conn_str("postgres"), tokio_postgres::NoTls)
            .await
            .is_err();
        if tls == Some(b'S') && plain {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "TLS not enabled after reload (SSLRequest answer {tls:?}, plain refused {plain}); \
             server log:\n{}",
            tail(
                &std::fs::read_to_string(c.dir().join("pg.log")).unwrap_or_default(),
                30
            )
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A backend started after the reload sees ssl=on, as the postmaster does.
    let bad: Vec<String> = admin(c, "postgres")
        .await
        .query(
            "SELECT format('line %s: %s', line_number, error) FROM pg_hba_file_rules \
             WHERE error IS NOT NULL",
            &[],
        )
        .await
        .expect("pg_hba_file_rules")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(bad.is_empty(), "pg_hba.conf has errors: {bad:?}");
}

/// Sends an SSLRequest to 127.0.0.1:port and returns the one-byte answer.
async fn ssl_request(port: u16) -> Option<u8> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .ok()?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.ok()?;
    Some(b[0])
}

/// This binary's shared cluster, TLS only, certificate for 127.0.0.1 and
/// localhost.
async fn main_cluster() -> &'static Server {
    static C: OnceCell<Server> = OnceCell::const_new();
    C.get_or_init(|| async {
        let p = pki().await;
        let c = cluster();
        enable_tls(c, &p.main.0, &p.main.1).await;
        Server { cluster: c }
    })
    .await
}

/// A second cluster, TLS only, certificate for `other.example` only.
async fn other_cluster() -> &'static Server {
    static C: OnceCell<Server> = OnceCell::const_new();
    C.get_or_init(|| async {
        let p = pki().await;
        let c: &'static PgCluster = Box::leak(Box::new(
            PgCluster::start().expect("starting the second PostgreSQL cluster"),
        ));
        enable_tls(c, &p.other.0, &p.other.1).await;
        Server { cluster: c }
    })
    .await
}

/// A third cluster left as initdb made it: no TLS, plain `host` trusted.
async fn plain_cluster() -> &'static Server {
    static C: OnceCell<Server> = OnceCell::const_new();
    C.get_or_init(|| async {
        let c: &'static PgCluster = Box::leak(Box::new(
            PgCluster::start().expect("starting the plain PostgreSQL cluster"),
        ));
        assert_eq!(
            ssl_request(c.port()).await,
            Some(b'N'),
            "the plain cluster refuses TLS"
        );
        Server { cluster: c }
    })
    .await
}

impl Server {
    /// A fresh database with table `t` holding one row, and a session to it.
    async fn fresh_db(&self, hint: &str) -> (String, tokio_postgres::Client) {
        static N: AtomicU32 = AtomicU32::new(0);
        let db = format!("tls_{hint}_{}", N.fetch_add(1, Ordering::Relaxed));
        admin(self.cluster, "postgres")
            .await
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .await
            .expect("create database");
        let pg = admin(self.cluster, &db).await;
        pg.batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL);
             INSERT INTO t VALUES (1, 'snapshot row');",
        )
        .await
        .expect("create table");
        (db, pg)
    }

    /// A pipeline on `db` of this cluster with the given TLS settings.
    fn pipeline(&self, db: &str, tls: &[(&str, &str)]) -> Pipeline {
        let port = self.cluster.port().to_string();
        let mut extra = vec![("database.port", port.as_str())];
        extra.extend_from_slice(tls);
        Pipeline::new(db, &extra)
    }
}

/// The snapshot row arrives, a new row streams, and every connection Sluice
/// holds to `db` (the walsender included) is encrypted, or none is.
async fn assert_streams(p: &mut Pipeline, pg: &tokio_postgres::Client, tls: bool) {
    let topic = "test.public.t";
    let snap = p.wait_events(topic, 1, LONG);
    let r = payload(&snap[0]);
    assert_eq!(r["op"], "r", "{r}");
    assert_eq!(r["after"]["id"], 1);
    assert_eq!(r["after"]["v"], "snapshot row");
    assert_eq!(r["source"]["db"], Json::String(p.db.clone()));
    pg.batch_execute("INSERT INTO t VALUES (2, 'streamed row')")
        .await
        .expect("insert");
    let recs = p.wait_events(topic, 2, LONG);
    let c = payload(&recs[1]);
    assert_eq!(c["op"], "c", "{c}");
    assert_eq!(c["after"]["v"], "streamed row");
    let rows = pg
        .query(
            "SELECT a.backend_type, s.ssl, coalesce(s.version, '') \
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.application_name LIKE 'sluice:%' AND a.datname = current_database()",
            &[],
        )
        .await
        .expect("pg_stat_ssl");
    let seen: Vec<(String, bool, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert!(
        seen.iter().any(|(t, _, _)| t == "walsender"),
        "the replication connection is listed: {seen:?}"
    );
    assert!(
        seen.iter()
            .all(|(_, ssl, v)| *ssl == tls && v.starts_with("TLS") == tls),
        "every Sluice connection has TLS={tls}: {seen:?}"
    );
    assert_eq!(p.stop(), Some(0), "{}", p.log_text());
}

/// Runs the source alone until the worker exits by itself: without REST
/// listener it stops (exit code 1) once its only task failed.
fn run_to_exit(p: &mut Pipeline) -> (Option<i32>, String) {
    p.start_source_only();
    let code = p.wait_exit(Duration::from_secs(60));
    (code, p.log_text())
}

/// No slot may be left behind by a connector that never got in.
async fn assert_no_slot(c: &Server, p: &Pipeline) {
    let n: i64 = admin(c.cluster, "postgres")
        .await
        .query_one(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1",
            &[&p.slot],
        )
        .await
        .expect("slots")
        .get(0);
    assert_eq!(n, 0, "slot {} exists", p.slot);
}

#[tokio::test(flavor = "multi_thread")]
async fn require_streams_over_tls_without_verifying() {
    let c = main_cluster().await;
    let (db, pg) = c.fresh_db("require").await;
    let mut p = c.pipeline(&db, &[("database.sslmode", "require")]);
    p.start();
    assert_streams(&mut p, &pg, true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn prefer_uses_tls_when_the_server_offers_it() {
    let c = main_cluster().await;
    let (db, pg) = c.fresh_db("prefer").await;
    let mut p = c.pipeline(&db, &[("database.sslmode", "prefer")]);
    p.start();
    assert_streams(&mut p, &pg, true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_full_with_the_right_ca_accepts_an_ip_san() {
    let c = main_cluster().await;
    let ca = pki().await.ca.display().to_string();
    let (db, pg) = c.fresh_db("verify_full_ip").await;
    let mut p = c.pipeline(
        &db,
        &[
            ("database.sslmode", "verify-full"),
            ("database.sslrootcert", &ca),
        ],
    );
    p.start();
    assert_streams(&mut p, &pg, true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_full_with_the_right_ca_accepts_a_dns_san() {
    let c = main_cluster().await;
    let ca = pki().await.ca.display().to_string();
    let (db, pg) = c.fresh_db("verify_full_dns").await;
    let mut p = c.pipeline(
        &db,
        &[
            ("database.hostname", "localhost"),
            ("database.sslmode", "verify-full"),
            ("database.sslrootcert", &ca),
        ],
    );
    p.start();
    assert_streams(&mut p, &pg, true).await;
}

/// The wrong root is a definite error: reported once, exit code 1, with the
/// default `errors.max.retries=-1`.
#[tokio::test(flavor = "multi_thread")]
async fn verify_full_with_another_ca_fails_naming_the_certificate() {
    let c = main_cluster().await;
    let wrong = pki().await.wrong_ca.display().to_string();
    let (db, _pg) = c.fresh_db("verify_full_wrong_ca").await;
    let mut p = c.pipeline(
        &db,
        &[
            ("database.sslmode", "verify-full"),
            ("database.sslrootcert", &wrong),
        ],
    );
    let (code, log) = run_to_exit(&mut p);
    assert_eq!(code, Some(1), "{log}");
    let lower = log.to_ascii_lowercase();
    assert!(
        lower.contains("tls") && lower.contains("certificate"),
        "{log}"
    );
    assert!(
        log.contains("UnknownIssuer") || lower.contains("unknown issuer"),
        "{log}"
    );
    assert!(!log.contains("restarting it in"), "not retried: {log}");
    assert_no_slot(c, &p).await;
}

/// Same failure with retries bounded, showing the message a user sees once
/// the retries run out.
#[tokio::test(flavor = "multi_thread")]
async fn verify_full_with_another_ca_fails_after_bounded_retries() {
    let c = main_cluster().await;
    let wrong = pki().await.wrong_ca.display().to_string();
    let (db, _pg) = c.fresh_db("verify_full_wrong_ca_retries").await;
    let mut p = c.pipeline(
        &db,
        &[
            ("database.sslmode", "verify-full"),
            ("database.sslrootcert", &wrong),
            ("errors.max.retries", "1"),
            ("retriable.restart.connector.wait.ms", "200"),
        ],
    );
    let (code, log) = run_to_exit(&mut p);
    assert_eq!(code, Some(1), "{log}");
    let lower = log.to_ascii_lowercase();
    assert!(
        lower.contains("tls") && lower.contains("certificate"),
        "{log}"
    );
    assert_no_slot(c, &p).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_ca_accepts_a_certificate_for_another_name() {
    let c = other_cluster().await;
    let ca = pki().await.ca.display().to_string();
    let (db, pg) = c.fresh_db("verify_ca").await;
    let mut p = c.pipeline(
        &db,
        &[
            ("database.sslmode", "verify-ca"),
            ("database.sslrootcert", &ca),
        ],
    );
    p.start();
    assert_streams(&mut p, &pg, true).await;
}

/// verify-full checks the name verify-ca skips.
#[tokio::test(flavor = "multi_thread")]
async fn verify_full_rejects_a_certificate_for_another_name() {
    let c = other_cluster().await;
    let ca = pki().await.ca.display().to_string();
    let (db, _pg) = c.fresh_db("verify_full_name").await;
    let mut p = c.pipeline(
        &db,
        &[
            ("database.sslmode", "verify-full"),
            ("database.sslrootcert", &ca),
            ("errors.max.retries", "1"),
            ("retriable.restart.connector.wait.ms", "200"),
        ],
    );
    let (code, log) = run_to_exit(&mut p);
    assert_eq!(code, Some(1), "{log}");
    let lower = log.to_ascii_lowercase();
    assert!(
        lower.contains("certificate") && lower.contains("127.0.0.1"),
        "{log}"
    );
    assert!(
        log.contains("NotValidForName") || lower.contains("not valid for name"),
        "{log}"
    );
    assert_no_slot(c, &p).await;
}

/// verify-ca still checks the chain.
#[tokio::test(flavor = "multi_thread")]
async fn verify_ca_with_another_ca_fails() {
    let c = other_cluster().await;
    let wrong = pki().await.wrong_ca.display().to_string();
    let (db, _pg) = c.fresh_db("verify_ca_wrong").await;
    let mut p = c.pipeline(
        &db,
        &[
            ("database.sslmode", "verify-ca"),
            ("database.sslrootcert", &wrong),
            ("errors.max.retries", "1"),
            ("retriable.restart.connector.wait.ms", "200"),
        ],
    );
    let (code, log) = run_to_exit(&mut p);
    assert_eq!(code, Some(1), "{log}");
    let lower = log.to_ascii_lowercase();
    assert!(lower.contains("certificate"), "{log}");
    assert!(
        log.contains("UnknownIssuer") || lower.contains("unknown issuer"),
        "{log}"
    );
    assert_no_slot(c, &p).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn disable_is_refused_by_pg_hba_with_the_servers_reason() {
    let c = main_cluster().await;
    let (db, _pg) = c.fresh_db("disable").await;
    let mut p = c.pipeline(&db, &[("database.sslmode", "disable")]);
    let (code, log) = run_to_exit(&mut p);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("pg_hba.conf"), "{log}");
    assert!(log.contains("no encryption"), "{log}");
    assert_no_slot(c, &p).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn prefer_falls_back_to_plain_when_the_server_has_no_tls() {
    let c = plain_cluster().await;
    let (db, pg) = c.fresh_db("prefer_plain").await;
    let mut p = c.pipeline(&db, &[("database.sslmode", "prefer")]);
    p.start();
    assert_streams(&mut p, &pg, false).await;
}

/// require never silently falls back to plain text.
#[tokio::test(flavor = "multi_thread")]
async fn require_refuses_a_server_without_tls() {
    let c = plain_cluster().await;
    let (db, _pg) = c.fresh_db("require_plain").await;
    let mut p = c.pipeline(
        &db,
        &[
            ("database.sslmode", "require"),
            ("errors.max.retries", "1"),
            ("retriable.restart.connector.wait.ms", "200"),
        ],
    );
    let (code, log) = run_to_exit(&mut p);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.to_ascii_lowercase().contains("tls"), "{log}");
    assert!(
        log.contains("does not support TLS") || log.contains("does not accept TLS"),
        "{log}"
    );
    assert_no_slot(c, &p).await;
}

/// An unreadable `database.sslrootcert` (here a directory) is caught before
/// anything starts: a configuration error, exit code 2,
/// naming the key, never a retry.
#[tokio::test(flavor = "multi_thread")]
async fn unreadable_sslrootcert_fails_at_once() {
    let c = main_cluster().await;
    let dir = pki()
        .await
        .ca
        .parent()
        .expect("pki dir")
        .display()
        .to_string();
    let (db, _pg) = c.fresh_db("rootcert_dir").await;
    let mut p = c.pipeline(
        &db,
        &[
            ("database.sslmode", "verify-full"),
            ("database.sslrootcert", &dir),
        ],
    );
    let (code, log) = run_to_exit(&mut p);
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains("database.sslrootcert") && log.contains(&dir),
        "{log}"
    );
    assert!(!log.contains("restarting it in"), "not retried: {log}");
    assert_no_slot(c, &p).await;
}

/// require against a server without TLS is a definite error too: exit code 1
/// with the default retries.
#[tokio::test(flavor = "multi_thread")]
async fn require_refuses_a_server_without_tls_at_once() {
    let c = plain_cluster().await;
    let (db, _pg) = c.fresh_db("require_plain_strict").await;
    let mut p = c.pipeline(&db, &[("database.sslmode", "require")]);
    let (code, log) = run_to_exit(&mut p);
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("does not support TLS") || log.contains("does not accept TLS"),
        "{log}"
    );
    assert!(!log.contains("restarting it in"), "not retried: {log}");
    assert_no_slot(c, &p).await;
}
