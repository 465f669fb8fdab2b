//! Queued ingestion against Azurite (real Azure Blob/Queue/Table storage
//! emulation), the local data-management service (which checks every
//! request and queue message against the contract and ingests the blobs
//! into the store), and the local engine's Azure AD token endpoint.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use sluice_kusto::auth::{AzureEnv, Clock, Credential, TokenProvider};
use sluice_kusto::client::{ErrorKind, KustoClient};
use sluice_kusto::queued::{IngestionStatus, QueuedBatch, QueuedIngestor};
use sluice_testkit::eventually;
use sluice_testkit::kusto::azurite::Azurite;
use sluice_testkit::kusto::dm::{FakeDm, CONTAINERS, FAILURE_QUEUE, SUCCESS_QUEUE};
use sluice_testkit::kusto::engine::FakeEngine;
use sluice_testkit::kusto::store::Store;

const DB: &str = "Sales";
const TABLE: &str = "Orders";
const WAIT: Duration = Duration::from_secs(30);

struct Env {
    azurite: Azurite,
    _engine: FakeEngine,
    dm: FakeDm,
    store: Store,
    client: KustoClient,
}

async fn env() -> Env {
    let azurite = match Azurite::start() {
        Ok(a) => a,
        Err(e) => panic!("{e:#}"),
    };
    let store = Store::new();
    store.create_table(DB, TABLE, &[("id", "long"), ("item", "string")]);
    store
        .create_json_mapping(
            DB,
            TABLE,
            "orders_json",
            r#"[{"column":"id","Properties":{"Path":"$.order_id"}},{"column":"item","Properties":{"Path":"$.item"}}]"#,
        )
        .expect("mapping");
    let engine = FakeEngine::start(store.clone()).await.expect("engine");
    let dm = FakeDm::start(store.clone(), &azurite, engine.token_validator())
        .await
        .expect("data-management service");
    let tokens = TokenProvider::new(
        Credential::ClientSecret {
            tenant: engine.tenant().to_owned(),
            client_id: engine.app_id().to_owned(),
            secret: engine.app_key().to_owned(),
        },
        &engine.url(),
        &AzureEnv {
            authority_host: Some(engine.url()),
            ..AzureEnv::default()
        },
    )
    .expect("token provider");
    let client = KustoClient::new(&dm.url(), Arc::new(tokens), reqwest::Client::new())
        .expect("data-management client");
    Env {
        azurite,
        _engine: engine,
        dm,
        store,
        client,
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).expect("gzip");
    enc.finish().expect("gzip")
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .expect("gunzip");
    out
}

fn batch(data: &str, tags: &[&str], if_not_exists: &[&str]) -> QueuedBatch {
    QueuedBatch {
        db: DB.into(),
        table: TABLE.into(),
        format: "multijson".into(),
        mapping: Some("orders_json".into()),
        gzipped: gzip(data.as_bytes()).into(),
        raw_size: data.len() as u64,
        tags: tags.iter().map(|s| s.to_string()).collect(),
        ingest_if_not_exists: if_not_exists.iter().map(|s| s.to_string()).collect(),
        blob_name_hint: format!("{DB}__{TABLE}__orders topic__0__10-11"),
    }
}

const TWO_ORDERS: &str = "{\"order_id\":10,\"item\":\"pen\"}\n{\"order_id\":11,\"item\":\"ink\"}\n";

async fn rows_reach(store: &Store, n: usize) -> bool {
    eventually(WAIT, || async {
        (store.rows(DB, TABLE).len() >= n).then_some(())
    })
    .await
    .is_some()
}

#[tokio::test]
async fn a_batch_lands_with_the_documented_message_and_a_gzip_blob() {
    let e = env().await;
    let ingestor = QueuedIngestor::new(e.client.clone());
    ingestor.prepare().await.expect("prepare");
    let b = batch(
        TWO_ORDERS,
        &["ingest-by:orders-0-10-11", "drop-by:x"],
        &["orders-0-10-11"],
    );
    let posted = ingestor.ingest(&b).await.expect("ingest");

    assert!(rows_reach(&e.store, 2).await, "the rows never arrived");
    let rows = e.store.rows(DB, TABLE);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["id"], 10);
    assert_eq!(rows[1]["item"], "ink");
    assert_eq!(
        e.store.extents(DB, TABLE),
        vec![vec![
            "ingest-by:orders-0-10-11".to_owned(),
            "drop-by:x".to_owned()
        ]]
    );

    // The blob: gzip of the data, named <hint>__<uuid>.multijson.gz.
    let (container, name) = posted
        .blob_url_without_sas
        .rsplit_once('/')
        .expect("blob URL");
    let container = container.rsplit('/').next().expect("container");
    assert!(CONTAINERS.contains(&container), "{container}");
    assert!(
        name.starts_with("Sales__Orders__orders-topic__0__10-11__")
            && name.ends_with(".multijson.gz"),
        "{name}"
    );
    assert!(!posted.blob_url_without_sas.contains('?'));
    let blob = e.azurite.get_blob(container, name).await.expect("blob");
    assert_eq!(blob, b.gzipped.to_vec());
    assert_eq!(gunzip(&blob), TWO_ORDERS.as_bytes());

    // The queue message, field by field.
    let messages = e.dm.messages();
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    assert_eq!(m["Id"], posted.ingestion_id.as_str());
    let blob_path = m["BlobPath"].as_str().expect("BlobPath");
    assert!(
        blob_path.starts_with(&format!("{}?", posted.blob_url_without_sas))
            && blob_path.contains("sig="),
        "BlobPath carries the SAS: {blob_path}"
    );
    assert_eq!(m["RawDataSize"], TWO_ORDERS.len() as u64);
    assert_eq!(m["DatabaseName"], DB);
    assert_eq!(m["TableName"], TABLE);
    assert_eq!(m["RetainBlobOnSuccess"], true);
    assert_eq!(m["FlushImmediately"], false);
    assert_eq!(m["IgnoreSizeLimit"], false);
    assert_eq!(m["ReportLevel"], 0, "FailuresOnly");
    assert_eq!(m["ReportMethod"], 0, "Queue");
    assert!(m.get("IngestionStatusInTable").is_none());
    let created = m["SourceMessageCreationTime"]
        .as_str()
        .expect("creation time");
    assert!(
        chrono::DateTime::parse_from_rfc3339(created).is_ok(),
        "{created}"
    );
    let p = &m["AdditionalProperties"];
    assert!(p["authorizationContext"]
        .as_str()
        .is_some_and(|a| a.starts_with("<Token>")));
    assert_eq!(p["format"], "multijson");
    assert_eq!(p["ingestionMappingReference"], "orders_json");
    assert_eq!(p["ingestionMappingType"], "Json");
    assert_eq!(p["tags"], r#"["ingest-by:orders-0-10-11","drop-by:x"]"#);
    assert_eq!(p["ingestIfNotExists"], r#"["orders-0-10-11"]"#);
    assert_eq!(e.dm.outcomes()[&posted.ingestion_id], "Succeeded");
    assert!(e.dm.violations().is_empty(), "{:#?}", e.dm.violations());
}

#[tokio::test]
async fn resources_and_identity_are_cached_refreshed_hourly_and_kept_when_a_refresh_fails() {
    let e = env().await;
    let now = Arc::new(Mutex::new(SystemTime::now()));
    let clock_now = now.clone();
    let clock: Clock = Arc::new(move || *clock_now.lock().expect("clock"));
    let advance = |secs: u64| *now.lock().expect("clock") += Duration::from_secs(secs);
    let ingestor = QueuedIngestor::new(e.client.clone()).with_clock(clock);

    for i in 0..4 {
        ingestor
            .ingest(&batch(
                &format!("{{\"order_id\":{i},\"item\":\"a\"}}"),
                &[],
                &[],
            ))
            .await
            .expect("ingest");
    }
    assert_eq!(e.dm.resources_served(), 1, "resources are cached");
    assert_eq!(
        e.dm.identity_tokens_served(),
        1,
        "the identity token is cached"
    );
    // Batches rotate over both containers and both queues.
    let reqs = e.dm.storage_requests();
    for c in CONTAINERS {
        assert!(
            reqs.iter()
                .any(|r| r.service == "blob" && r.method == "PUT" && r.path.contains(c)),
            "no upload to {c}: {reqs:?}"
        );
    }
    for q in sluice_testkit::kusto::dm::INGESTION_QUEUES {
        assert!(
            reqs.iter()
                .any(|r| r.service == "queue" && r.path.contains(q)),
            "no message on {q}: {reqs:?}"
        );
    }

    // An hour later both are fetched again.
    advance(3600);
    ingestor
        .ingest(&batch("{\"order_id\":5,\"item\":\"b\"}", &[], &[]))
        .await
        .expect("ingest after an hour");
    assert_eq!(e.dm.resources_served(), 2);
    assert_eq!(e.dm.identity_tokens_served(), 2);

    // Another hour later the service is down: the cached ones are used.
    advance(3600);
    e.dm.fail_next_mgmt(
        2,
        503,
        r#"{"error":{"code":"ServiceUnavailable","message":"busy","@permanent":false}}"#,
    );
    ingestor
        .ingest(&batch("{\"order_id\":6,\"item\":\"c\"}", &[], &[]))
        .await
        .expect("ingest with cached resources while the refresh fails");
    assert_eq!(e.dm.resources_served(), 2);
    assert_eq!(e.dm.identity_tokens_served(), 2);
    // A minute later the refresh is tried again and succeeds.
    advance(61);
    ingestor
        .ingest(&batch("{\"order_id\":7,\"item\":\"d\"}", &[], &[]))
        .await
        .expect("ingest");
    assert_eq!(e.dm.resources_served(), 3);
    assert_eq!(e.dm.identity_tokens_served(), 3);

    assert!(
        rows_reach(&e.store, 7).await,
        "rows: {:?}",
        e.store.rows(DB, TABLE)
    );
    assert!(e.dm.violations().is_empty(), "{:#?}", e.dm.violations());
}

#[tokio::test]
async fn status_table_reports_succeeded_skipped_for_a_duplicate_and_failed_for_bad_data() {
    let e = env().await;
    let ingestor = QueuedIngestor::new(e.client.clone())
        .with_status_reporting(true)
        .with_status_poll_interval(Duration::from_millis(50));
    ingestor.prepare().await.expect("prepare");

    let b = batch(TWO_ORDERS, &["ingest-by:k1"], &["k1"]);
    let first = ingestor.ingest(&b).await.expect("first");
    assert_eq!(
        ingestor
            .wait_for_status(&first, WAIT)
            .await
            .expect("status"),
        IngestionStatus::Succeeded
    );
    let m = &e.dm.messages()[0];
    assert_eq!(m["ReportLevel"], 2, "FailuresAndSuccesses");
    assert_eq!(m["ReportMethod"], 1, "Table");
    assert_eq!(
        m["IngestionStatusInTable"]["PartitionKey"],
        first.ingestion_id.as_str()
    );
    assert_eq!(
        m["IngestionStatusInTable"]["RowKey"],
        first.ingestion_id.as_str()
    );

    // The same batch again (a redelivery): Kusto skips it.
    let second = ingestor.ingest(&b).await.expect("second");
    assert_ne!(second.ingestion_id, first.ingestion_id);
    assert_eq!(
        ingestor
            .wait_for_status(&second, WAIT)
            .await
            .expect("status"),
        IngestionStatus::Skipped
    );
    assert_eq!(e.store.rows(DB, TABLE).len(), 2, "rows must not be doubled");
    assert_eq!(e.store.extents(DB, TABLE).len(), 1);

    // A value that does not fit the long column fails the ingestion.
    let bad = batch("{\"order_id\":\"twelve\",\"item\":\"x\"}\n", &[], &[]);
    let third = ingestor.ingest(&bad).await.expect("third");
    match ingestor
        .wait_for_status(&third, WAIT)
        .await
        .expect("status")
    {
        IngestionStatus::Failed { details, permanent } => {
            assert!(permanent);
            assert!(details.contains("id"), "details name the column: {details}");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert_eq!(e.store.rows(DB, TABLE).len(), 2);

    // While the service does not get to a message, the status stays Pending.
    e.dm.pause_ingestion();
    let fourth = ingestor
        .ingest(&batch("{\"order_id\":13,\"item\":\"y\"}", &[], &[]))
        .await
        .expect("fourth");
    assert_eq!(
        ingestor
            .wait_for_status(&fourth, Duration::from_millis(300))
            .await
            .expect("status"),
        IngestionStatus::Pending
    );
    e.dm.resume_ingestion();
    assert_eq!(
        ingestor
            .wait_for_status(&fourth, WAIT)
            .await
            .expect("status"),
        IngestionStatus::Succeeded
    );
    assert!(e.dm.violations().is_empty(), "{:#?}", e.dm.violations());
}

#[tokio::test]
async fn storage_503_is_transient_and_names_the_container_without_the_sas() {
    let e = env().await;
    let ingestor = QueuedIngestor::new(e.client.clone());
    ingestor.prepare().await.expect("prepare");
    e.dm.fail_next_storage(10, 503);
    let err = ingestor
        .ingest(&batch(TWO_ORDERS, &[], &[]))
        .await
        .expect_err("storage is busy");
    assert!(err.is_retriable(), "{err:?}");
    assert_eq!(err.kind, ErrorKind::Transient);
    assert_eq!(err.status, Some(503));
    let text = err.to_string();
    assert!(text.contains("ServerBusy"), "{text}");
    assert!(CONTAINERS.iter().any(|c| text.contains(c)), "{text}");
    assert!(
        !text.contains("sig=") && !text.contains("sv="),
        "the SAS leaked: {text}"
    );
    // Both containers were tried before giving up.
    let failed: Vec<_> =
        e.dm.storage_requests()
            .into_iter()
            .filter(|r| r.status == 503)
            .collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(e.store.rows(DB, TABLE).is_empty());

    e.dm.fail_next_storage(0, 0);
    ingestor
        .ingest(&batch(TWO_ORDERS, &[], &[]))
        .await
        .expect("ingest once storage is back");
    assert!(rows_reach(&e.store, 2).await);
    assert!(e.dm.violations().is_empty(), "{:#?}", e.dm.violations());
}

#[tokio::test]
async fn an_expired_sas_refreshes_the_resources_once_and_the_batch_lands() {
    let e = env().await;
    let ingestor = QueuedIngestor::new(e.client.clone());
    e.dm.expire_sas_in_next_resources(1);
    let posted = ingestor
        .ingest(&batch(TWO_ORDERS, &[], &[]))
        .await
        .expect("ingest after refreshing the SAS");
    assert_eq!(e.dm.resources_served(), 2, "one refresh after the 403");
    assert!(e
        .dm
        .storage_requests()
        .iter()
        .any(|r| r.status == 403 && r.method == "PUT"));
    assert!(rows_reach(&e.store, 2).await);
    assert_eq!(e.dm.outcomes()[&posted.ingestion_id], "Succeeded");

    // When fresh resources are refused too, the error says so and is not
    // retried forever.
    e.dm.expire_sas_in_next_resources(2);
    let fresh = QueuedIngestor::new(e.client.clone());
    let err = fresh
        .ingest(&batch(TWO_ORDERS, &[], &[]))
        .await
        .expect_err("every SAS expired");
    assert_eq!(err.kind, ErrorKind::Forbidden);
    assert!(!err.is_retriable());
    assert!(!err.to_string().contains("sig="), "{err}");
    assert!(e.dm.violations().is_empty(), "{:#?}", e.dm.violations());
}

#[tokio::test]
async fn prepare_surfaces_permission_and_connection_errors() {
    let e = env().await;
    let ingestor = QueuedIngestor::new(e.client.clone());
    e.dm.fail_next_mgmt(
        1,
        403,
        r#"{"error":{"code":"Forbidden","message":"Principal 'app' is not authorized to access 'NetDefaultDB'.","@permanent":true}}"#,
    );
    let err = ingestor.prepare().await.expect_err("forbidden");
    assert_eq!(err.kind, ErrorKind::Forbidden);
    assert!(err.message.contains("not authorized"), "{err}");
    ingestor.prepare().await.expect("prepare once permitted");

    // Nothing listens on the port of a closed server.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let tokens = TokenProvider::new(
        Credential::Static("t".into()),
        "https://c.kusto.windows.net",
        &AzureEnv::default(),
    )
    .expect("provider");
    let unreachable = KustoClient::new(
        &format!("http://127.0.0.1:{port}"),
        Arc::new(tokens),
        reqwest::Client::new(),
    )
    .expect("client");
    let err = QueuedIngestor::new(unreachable)
        .prepare()
        .await
        .expect_err("unreachable");
    assert!(err.is_retriable(), "{err:?}");
    assert!(e.dm.violations().is_empty(), "{:#?}", e.dm.violations());
}

#[tokio::test]
async fn status_waits_need_status_reporting_and_bad_formats_are_refused() {
    let e = env().await;
    let ingestor = QueuedIngestor::new(e.client.clone());
    let posted = ingestor
        .ingest(&batch(TWO_ORDERS, &[], &[]))
        .await
        .expect("ingest");
    let err = ingestor
        .wait_for_status(&posted, Duration::from_millis(10))
        .await
        .expect_err("no status reporting");
    assert_eq!(err.kind, ErrorKind::Permanent);

    let mut b = batch(TWO_ORDERS, &[], &[]);
    b.format = "yaml".into();
    let err = ingestor.ingest(&b).await.expect_err("unknown format");
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(err.message.contains("yaml"), "{err}");
    assert!(rows_reach(&e.store, 2).await);

    // Without the status check, a failure is reported on the failed
    // ingestions queue (ReportLevel FailuresOnly, ReportMethod Queue).
    let bad = ingestor
        .ingest(&batch("{\"order_id\":\"x\",\"item\":\"y\"}", &[], &[]))
        .await
        .expect("ingest");
    let reported = eventually(WAIT, || async {
        let msgs = e.azurite.peek_messages(FAILURE_QUEUE, 32).await.ok()?;
        msgs.into_iter().find_map(|m| {
            let json = base64::engine::general_purpose::STANDARD
                .decode(m.text)
                .ok()?;
            let v: serde_json::Value = serde_json::from_slice(&json).ok()?;
            (v["IngestionSourceId"] == bad.ingestion_id.as_str()).then_some(v)
        })
    })
    .await
    .expect("a failure report");
    assert_eq!(reported["Database"], DB);
    assert!(e
        .azurite
        .peek_messages(SUCCESS_QUEUE, 32)
        .await
        .expect("peek")
        .is_empty());
    assert!(e.dm.violations().is_empty(), "{:#?}", e.dm.violations());
}

#[tokio::test]
async fn concurrent_batches_share_one_fetch_and_a_refused_principal_is_not_retried() {
    let e = env().await;
    // A principal without the Ingestor role: the service's 403 is returned
    // as it is, without a second resource fetch (only storage 403s mean a
    // stale SAS).
    e.dm.fail_next_mgmt(
        1,
        403,
        r#"{"error":{"code":"Forbidden","message":"Principal is not authorized.","@permanent":true}}"#,
    );
    let ingestor = QueuedIngestor::new(e.client.clone());
    let err = ingestor
        .ingest(&batch(TWO_ORDERS, &[], &[]))
        .await
        .expect_err("forbidden");
    assert_eq!(err.kind, ErrorKind::Forbidden);
    assert_eq!(
        e.dm.resources_served(),
        0,
        "no refresh after the service's own 403"
    );

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let ingestor = ingestor.clone();
        tasks.spawn(async move {
            ingestor
                .ingest(&batch(
                    &format!("{{\"order_id\":{i},\"item\":\"c\"}}"),
                    &[],
                    &[],
                ))
                .await
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("task").expect("ingest");
    }
    assert_eq!(
        e.dm.resources_served(),
        1,
        "one fetch for all concurrent batches"
    );
    assert_eq!(e.dm.identity_tokens_served(), 1);
    assert!(rows_reach(&e.store, 8).await);
    assert!(e.dm.violations().is_empty(), "{:#?}", e.dm.violations());
}
