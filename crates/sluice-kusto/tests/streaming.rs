//! Streaming ingestion against the local ADX engine: rows land in the
//! table with and without a mapping, the size limit is enforced before
//! sending, and failures say whether to fall back to queued ingestion.

use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::json;
use sluice_kusto::auth::{AzureEnv, Credential, TokenProvider};
use sluice_kusto::client::{quote_name, quote_string, ErrorKind, KustoClient};
use sluice_kusto::streaming::{falls_back_to_queued, ingest_streaming, STREAMING_MAX_BYTES};
use sluice_testkit::kusto::engine::FakeEngine;
use sluice_testkit::kusto::store::Store;

const DB: &str = "db";

async fn setup() -> (FakeEngine, KustoClient) {
    let store = Store::new();
    store.create_table(
        DB,
        "Events",
        &[("id", "long"), ("name", "string"), ("at", "datetime")],
    );
    let engine = FakeEngine::start(store).await.expect("engine");
    let env = AzureEnv {
        authority_host: Some(engine.url()),
        ..AzureEnv::default()
    };
    let credential = Credential::ClientSecret {
        tenant: engine.tenant().to_owned(),
        client_id: engine.app_id().to_owned(),
        secret: engine.app_key().to_owned(),
    };
    let tokens = TokenProvider::new(credential, &engine.url(), &env).expect("token provider");
    let client =
        KustoClient::new(&engine.url(), Arc::new(tokens), reqwest::Client::new()).expect("client");
    (engine, client)
}

fn gzip(data: &[u8]) -> Bytes {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).expect("gzip");
    Bytes::from(enc.finish().expect("gzip"))
}

fn ingest_requests(engine: &FakeEngine) -> Vec<sluice_testkit::kusto::engine::RecordedRequest> {
    engine
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/v1/rest/ingest/"))
        .collect()
}

#[tokio::test]
async fn multijson_without_a_mapping_lands_in_the_table() {
    let (engine, c) = setup().await;
    let data =
        "{\"id\":1,\"name\":\"a\",\"at\":\"2024-05-01T10:00:00Z\"}\n{\"id\":2,\"name\":\"b\"}\n";
    ingest_streaming(
        &c,
        DB,
        "Events",
        "multijson",
        None,
        gzip(data.as_bytes()),
        data.len(),
    )
    .await
    .expect("streaming ingest");
    let rows = engine.store().rows(DB, "Events");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["id"], json!(1));
    assert_eq!(rows[0]["at"], json!("2024-05-01T10:00:00Z"));
    assert_eq!(rows[1]["name"], json!("b"));

    let reqs = ingest_requests(&engine);
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/v1/rest/ingest/db/Events");
    assert_eq!(r.query.as_deref(), Some("streamFormat=multijson"));
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.header("authorization"), Some("Bearer [redacted]"));
    assert!(r
        .header("x-ms-client-request-id")
        .is_some_and(|v| v.starts_with("Sluice;")));
    assert_eq!(r.body, data, "the engine saw the decompressed data");
    assert_eq!(r.status, 200);
    let v = engine.violations();
    assert!(v.is_empty(), "{v:?}");
}

#[tokio::test]
async fn multijson_through_a_json_mapping_and_names_that_need_encoding() {
    let (engine, c) = setup().await;
    c.mgmt(
        DB,
        ".create table ['my events'] (id:long, ['user name']:string)",
    )
    .await
    .expect("create table");
    // Built with Sluice's quoting: the name and the JSON carry quotes and
    // a backslash that must survive the trip.
    let mapping_json = r#"[{"column":"id","Properties":{"Path":"$.key.id"}},{"column":"user name","Properties":{"Path":"$.value['user\\name']"}}]"#;
    let csl = format!(
        ".create table {} ingestion json mapping {} {}",
        quote_name("my events"),
        quote_string("map&'1"),
        quote_string(mapping_json)
    );
    c.mgmt(DB, &csl).await.expect("create mapping");
    let data = r#"{"key":{"id":7},"value":{"user\\name":"ann"}} {"key":{"id":8},"value":{"user\\name":null}}"#;
    ingest_streaming(
        &c,
        DB,
        "my events",
        "multijson",
        Some("map&'1"),
        gzip(data.as_bytes()),
        data.len(),
    )
    .await
    .expect("streaming ingest with mapping");
    let rows = engine.store().rows(DB, "my events");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["id"], json!(7));
    assert_eq!(rows[0]["user name"], json!("ann"));
    assert_eq!(rows[1]["user name"], serde_json::Value::Null);
    let reqs = ingest_requests(&engine);
    assert_eq!(reqs[0].path, "/v1/rest/ingest/db/my%20events");
    assert_eq!(
        reqs[0].query.as_deref(),
        Some("streamFormat=multijson&mappingName=map%26%271")
    );
    let v = engine.violations();
    assert!(v.is_empty(), "{v:?}");
}

#[tokio::test]
async fn over_the_limit_is_refused_before_sending_and_falls_back() {
    let (engine, c) = setup().await;
    let small = gzip(b"{\"id\":1}");
    let e = ingest_streaming(
        &c,
        DB,
        "Events",
        "multijson",
        None,
        small,
        STREAMING_MAX_BYTES + 1,
    )
    .await
    .expect_err("over the limit");
    assert_eq!(e.status, None);
    assert!(e.message.contains("too large"), "{e}");
    assert!(falls_back_to_queued(&e));
    assert!(ingest_requests(&engine).is_empty(), "nothing was sent");

    // Exactly at the limit is allowed.
    let mut data = Vec::with_capacity(STREAMING_MAX_BYTES);
    let record = b"{\"id\":1,\"name\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}\n";
    while data.len() + record.len() <= STREAMING_MAX_BYTES {
        data.extend_from_slice(record);
    }
    data.resize(STREAMING_MAX_BYTES, b' ');
    ingest_streaming(&c, DB, "Events", "multijson", None, gzip(&data), data.len())
        .await
        .expect("at the limit");
    assert_eq!(
        engine.store().rows(DB, "Events").len(),
        STREAMING_MAX_BYTES / record.len()
    );
    let v = engine.violations();
    assert!(v.is_empty(), "{v:?}");
}

#[tokio::test]
async fn streaming_disabled_falls_back_to_queued() {
    let (engine, c) = setup().await;
    engine.set_streaming_enabled(DB, "Events", false);
    let data = b"{\"id\":1}";
    let e = ingest_streaming(&c, DB, "Events", "multijson", None, gzip(data), data.len())
        .await
        .expect_err("streaming disabled");
    assert_eq!(e.kind, ErrorKind::Permanent);
    assert_eq!(e.status, Some(400));
    assert!(
        e.message
            .contains("BadRequest_StreamingIngestionPolicyNotEnabled"),
        "{e}"
    );
    assert!(falls_back_to_queued(&e));
    assert!(engine.store().rows(DB, "Events").is_empty());

    // Enabled again, the same request succeeds.
    engine.set_streaming_enabled(DB, "Events", true);
    ingest_streaming(&c, DB, "Events", "multijson", None, gzip(data), data.len())
        .await
        .expect("enabled");
    assert_eq!(engine.store().rows(DB, "Events").len(), 1);

    // A service error falls back too, after the caller's retries.
    engine.fail_next("/v1/rest/ingest/", 1, 503, "service unavailable");
    let e = ingest_streaming(&c, DB, "Events", "multijson", None, gzip(data), data.len())
        .await
        .expect_err("503");
    assert_eq!(e.kind, ErrorKind::Transient);
    assert!(falls_back_to_queued(&e));
    let v = engine.violations();
    assert!(v.is_empty(), "{v:?}");
}

#[tokio::test]
async fn bad_data_and_a_missing_mapping_do_not_fall_back() {
    let (engine, c) = setup().await;
    let data = b"{\"id\":1} {\"id\":\"not a number\"}";
    let e = ingest_streaming(&c, DB, "Events", "multijson", None, gzip(data), data.len())
        .await
        .expect_err("bad value");
    assert_eq!(e.kind, ErrorKind::Permanent);
    assert!(e.message.contains("column 'id'"), "{e}");
    assert!(!falls_back_to_queued(&e), "{e}");
    assert!(
        engine.store().rows(DB, "Events").is_empty(),
        "nothing lands"
    );

    let e = ingest_streaming(
        &c,
        DB,
        "Events",
        "multijson",
        Some("no_such_mapping"),
        gzip(b"{\"id\":1}"),
        8,
    )
    .await
    .expect_err("missing mapping");
    assert!(e.message.contains("'no_such_mapping'"), "{e}");
    assert!(!falls_back_to_queued(&e), "{e}");

    let e = ingest_streaming(
        &c,
        DB,
        "Events",
        "multijson",
        None,
        Bytes::from_static(b"{}"),
        2,
    )
    .await
    .expect_err("not gzip");
    assert!(e.message.contains("not gzip"), "{e}");
    let v = engine.violations();
    assert!(v.is_empty(), "{v:?}");
}
