//! The Kusto sink task against the local ADX stand-ins: the engine (query,
//! management, streaming ingestion), the data-management service with
//! Azurite for queued ingestion. Every request the sink makes is checked
//! against the documented contract; each test asserts none departed.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use sluice_core::config::props_from;
use sluice_core::connector::{SinkContext, SinkTask};
use sluice_core::converter::{
    Converter, JsonConverter, JsonConverterConfig, StringConverter, StringEncoding,
};
use sluice_core::record::{Record, SinkRecord};
use sluice_core::schema::{prim, SchemaBuilder, SchemaType};
use sluice_core::value::Value as Data;
use sluice_testkit::kusto::azurite::Azurite;
use sluice_testkit::kusto::dm::FakeDm;
use sluice_testkit::kusto::engine::FakeEngine;
use sluice_testkit::kusto::store::Store;

const DB: &str = "retail";
const TABLE: &str = "Orders";
const TOPIC: &str = "myserver.retail.orders_info";
const MAPPING: &str = "OrdersEventMapping";
const COLUMNS: &[(&str, &str)] = &[
    ("orderid", "string"),
    ("custid", "string"),
    ("city", "string"),
    ("amount", "int"),
    ("purchase_time", "datetime"),
];
const MAPPING_JSON: &str = r#"[{"column":"orderid","Properties":{"path":"$.orderid"}},{"column":"custid","Properties":{"path":"$.custid"}},{"column":"city","Properties":{"path":"$.city"}},{"column":"amount","Properties":{"path":"$.amount"}},{"column":"purchase_time","Properties":{"path":"$.purchase_time"}}]"#;

/// A local ADX: engine, data management and storage.
struct Adx {
    engine: FakeEngine,
    dm: FakeDm,
    _azurite: Azurite,
    temp: tempfile::TempDir,
}

impl Adx {
    /// The scenario's database, table and mapping.
    async fn start() -> Adx {
        let store = Store::new();
        store.create_database(DB);
        store.create_table(DB, TABLE, COLUMNS);
        store
            .create_json_mapping(DB, TABLE, MAPPING, MAPPING_JSON)
            .expect("mapping");
        Self::with_store(store).await
    }

    async fn with_store(store: Store) -> Adx {
        let engine = FakeEngine::start(store.clone()).await.expect("engine");
        let azurite = Azurite::start().expect("azurite");
        let dm = FakeDm::start(store, &azurite, engine.token_validator())
            .await
            .expect("dm");
        engine.accept_audience(&dm.url());
        Adx {
            engine,
            dm,
            _azurite: azurite,
            temp: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn store(&self) -> &Store {
        self.engine.store()
    }

    /// The scenario's sink config, pointed here, with a static token.
    fn props(&self, mapping: &str, extra: &[(&str, &str)]) -> sluice_core::config::Props {
        let token = self.engine.mint_token();
        let temp = self.temp.path().display().to_string();
        let mut kv: Vec<(&str, &str)> = vec![
            ("connector.class", sluice_kusto::CLASS),
            ("topics", TOPIC),
            ("kusto.tables.topics.mapping", mapping),
            ("kusto.ingestion.url", ""),
            ("kusto.query.url", ""),
            ("aad.auth.accesstoken", &token),
            ("flush.interval.ms", "100"),
            ("tempdir.path", &temp),
            ("errors.retry.backoff.time.ms", "200"),
            ("errors.retry.max.time.ms", "5000"),
        ];
        kv.extend_from_slice(extra);
        let mut p = props_from(&kv);
        p.insert("kusto.ingestion.url".into(), self.dm.url());
        p.insert("kusto.query.url".into(), self.engine.url());
        p
    }

    fn assert_no_violations(&self) {
        assert_eq!(self.engine.violations(), Vec::<String>::new(), "engine");
        assert_eq!(
            self.dm.violations(),
            Vec::<String>::new(),
            "data management"
        );
    }

    async fn wait_rows(&self, n: usize) -> Vec<serde_json::Map<String, Value>> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let rows = self.store().rows(DB, TABLE);
            if rows.len() >= n {
                return rows;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} of {n} rows ingested; dm violations {:?}",
                rows.len(),
                self.dm.violations()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn scenario_mapping(extra: &str) -> String {
    format!("[{{'topic': '{TOPIC}','db': '{DB}', 'table': '{TABLE}','format': 'json', 'mapping':'{MAPPING}'{extra}}}]")
}

fn key_converter() -> StringConverter {
    StringConverter::new(StringEncoding::Utf8)
}

fn value_converter() -> JsonConverter {
    JsonConverter::new(JsonConverterConfig::default())
}

fn ctx(connector: &str) -> SinkContext {
    SinkContext {
        connector: connector.to_string(),
        task_id: 0,
        key_converter: Arc::new(key_converter()),
        value_converter: Arc::new(value_converter()),
        reporter: Default::default(),
        telemetry: Default::default(),
    }
}

/// A record as the worker gives it to the sink: read from the topic with
/// the connector's converters.
fn read(r: Record) -> SinkRecord {
    let (key_schema, key) = key_converter()
        .to_connect(&r.topic, r.key.as_deref())
        .unwrap_or_else(|e| panic!("key of offset {}: {}", r.offset, e.message));
    let (value_schema, value) = value_converter()
        .to_connect(&r.topic, r.value.as_deref())
        .unwrap_or_else(|e| panic!("value of offset {}: {}", r.offset, e.message));
    SinkRecord {
        topic: r.topic,
        partition: r.partition,
        offset: r.offset,
        timestamp_ms: r.timestamp_ms,
        key_schema,
        key,
        value_schema,
        value,
        headers: r.headers,
    }
}

/// An unwrapped order, as the sink is given it.
fn order(offset: i64, id: i64, city: &str) -> SinkRecord {
    read(order_bytes(offset, id, city))
}

/// An unwrapped order, as the scenario's worker writes it to the topic
/// (JsonConverter with schemas).
fn order_bytes(offset: i64, id: i64, city: &str) -> Record {
    let value = json!({
        "schema": {"type": "struct", "optional": false, "name": "myserver.retail.orders_info.Value", "fields": [
            {"field": "orderid", "type": "int32", "optional": false},
            {"field": "custid", "type": "int32", "optional": false},
            {"field": "amount", "type": "int32", "optional": false},
            {"field": "city", "type": "string", "optional": false},
            {"field": "purchase_time", "type": "string", "optional": false}
        ]},
        "payload": {"orderid": id, "custid": 300 + id, "amount": 100 + id, "city": city, "purchase_time": "2020-10-09 07:23:10"}
    });
    Record {
        topic: Arc::from(TOPIC),
        partition: 0,
        offset,
        timestamp_ms: 1_600_000_000_000,
        key: Some(id.to_string().into_bytes()),
        value: Some(serde_json::to_vec(&value).expect("json")),
        headers: Vec::new(),
    }
}

fn task(props: &sluice_core::config::Props, connector: &str) -> Box<dyn SinkTask> {
    let plugin = sluice_kusto::plugin();
    plugin.validate(props).expect("valid config");
    plugin
        .create_sink_task(props, ctx(connector))
        .expect("task")
}

/// A task and the figures it keeps, for its own metrics.
fn watched_task(
    props: &sluice_core::config::Props,
    connector: &str,
) -> (
    Box<dyn SinkTask>,
    Arc<sluice_core::telemetry::SinkTelemetry>,
) {
    let plugin = sluice_kusto::plugin();
    plugin.validate(props).expect("valid config");
    let c = ctx(connector);
    let telemetry = Arc::clone(&c.telemetry);
    (plugin.create_sink_task(props, c).expect("task"), telemetry)
}

/// The value of the sink's own metric `name` (0 when never set).
fn metric(t: &sluice_core::telemetry::SinkTelemetry, name: &str) -> f64 {
    t.plugin
        .read()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map_or(0.0, |(_, m)| m.value)
}

async fn durable(t: &mut Box<dyn SinkTask>) -> Option<i64> {
    t.pre_commit()
        .await
        .expect("pre-commit")
        .into_iter()
        .find(|p| &*p.topic == TOPIC && p.partition == 0)
        .map(|p| p.offset)
}

#[tokio::test(flavor = "multi_thread")]
async fn queued_ingestion_lands_the_scenario_rows_through_the_users_mapping() {
    let adx = Adx::start().await;
    let props = adx.props(&scenario_mapping(""), &[("flush.interval.ms", "600000")]);
    let mut t = task(&props, "queued");
    t.put(&[
        order(0, 1, "Austin"),
        order(1, 2, "Seattle"),
        order(2, 3, "New York"),
    ])
    .await
    .expect("put");
    // The batch is open (neither size nor age reached): nothing durable.
    assert_eq!(durable(&mut t).await, Some(-1));
    t.flush().await.expect("flush");
    assert_eq!(durable(&mut t).await, Some(2));
    let rows = adx.wait_rows(3).await;
    let mut cities: Vec<&str> = rows.iter().filter_map(|r| r["city"].as_str()).collect();
    cities.sort();
    assert_eq!(cities, ["Austin", "New York", "Seattle"]);
    let austin = rows.iter().find(|r| r["city"] == "Austin").expect("row");
    assert_eq!(austin["orderid"], "1");
    assert_eq!(austin["amount"], 101);
    // One blob and one queue message for the batch, as documented.
    let msgs = adx.dm.messages();
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    let m = &msgs[0];
    assert_eq!(m["DatabaseName"], DB);
    assert_eq!(m["TableName"], TABLE);
    assert_eq!(m["AdditionalProperties"]["format"], "multijson");
    assert!(
        m["BlobPath"]
            .as_str()
            .is_some_and(|p| p.contains(".multijson.gz")),
        "{m}"
    );
    adx.assert_no_violations();
    t.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn batches_close_on_size_and_on_age_and_only_ingested_records_are_durable() {
    let adx = Adx::start().await;
    // Each record is ~100 bytes of JSON: three per batch.
    let props = adx.props(
        &scenario_mapping(""),
        &[("flush.size.bytes", "250"), ("flush.interval.ms", "300")],
    );
    let mut t = task(&props, "sizes");
    let records: Vec<SinkRecord> = (0..7).map(|i| order(i, i + 1, "Austin")).collect();
    t.put(&records).await.expect("put");
    let d = durable(&mut t).await.expect("reported");
    assert!(
        (2..7).contains(&d),
        "full batches durable, the open one not: {d}"
    );
    adx.wait_rows(d as usize + 1).await;
    // The last batch closes on age.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(durable(&mut t).await, Some(6));
    adx.wait_rows(7).await;
    assert!(adx.dm.messages().len() >= 3);
    adx.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread")]
async fn with_dedup_a_replay_after_a_crash_is_not_ingested_twice() {
    let adx = Adx::start().await;
    let props = adx.props(
        &scenario_mapping(""),
        &[
            ("kusto.ingestion.dedup", "true"),
            ("flush.interval.ms", "200"),
        ],
    );
    let records: Vec<SinkRecord> = (0..10).map(|i| order(i, i + 1, "Chicago")).collect();
    let mut first = task(&props, "dedup");
    first.put(&records[..6]).await.expect("put");
    // Closed by age: a boundary no size rule would reproduce.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(durable(&mut first).await, Some(5));
    first.put(&records[6..]).await.expect("put");
    first.flush().await.expect("flush");
    adx.wait_rows(10).await;
    // The worker died before committing: everything is delivered again,
    // all at once, to a new task.
    drop(first);
    let mut second = task(&props, "dedup");
    second.put(&records).await.expect("replay");
    second.flush().await.expect("flush");
    // Both replayed batches were posted, and skipped by ADX.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while adx.dm.messages().len() < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            adx.dm.messages()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(adx.store().rows(DB, TABLE).len(), 10, "no duplicates");
    let tags = adx.store().extents(DB, TABLE);
    assert!(
        tags.iter()
            .flatten()
            .any(|t| t == &format!("ingest-by:{TOPIC}/0/0-5")),
        "{tags:?}"
    );
    let m = &adx.dm.messages()[3];
    assert!(
        m["AdditionalProperties"]["ingestIfNotExists"]
            .to_string()
            .contains("6-9"),
        "{m}"
    );
    adx.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread")]
async fn streaming_ingestion_and_its_fallback_to_queued() {
    let adx = Adx::start().await;
    let props = adx.props(&scenario_mapping(", 'streaming': true"), &[]);
    adx.engine.set_streaming_enabled(DB, TABLE, true);
    let (mut t, figures) = watched_task(&props, "streaming");
    t.put(&[order(0, 1, "Austin")]).await.expect("put");
    t.flush().await.expect("flush");
    assert_eq!(
        adx.store().rows(DB, TABLE).len(),
        1,
        "streamed synchronously"
    );
    assert!(adx.dm.messages().is_empty(), "nothing queued");
    assert!(adx
        .engine
        .requests()
        .iter()
        .any(|r| r.path.starts_with("/v1/rest/ingest/")));
    // Streaming turned off on the table: the batch goes queued.
    adx.engine.set_streaming_enabled(DB, TABLE, false);
    t.put(&[order(1, 2, "Seattle")]).await.expect("put");
    t.flush().await.expect("flush");
    adx.wait_rows(2).await;
    assert_eq!(adx.dm.messages().len(), 1);
    assert_eq!(metric(&figures, "kusto_streaming_batches"), 1.0);
    assert_eq!(metric(&figures, "kusto_queued_batches"), 1.0);
    assert_eq!(metric(&figures, "kusto_batches"), 2.0);
    assert_eq!(metric(&figures, "kusto_records"), 2.0);
    assert!(metric(&figures, "kusto_bytes") > 0.0);
    assert!(metric(&figures, "kusto_gzipped_bytes") > 0.0);
    adx.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread")]
async fn throttled_streaming_falls_back_to_queued_ingestion() {
    let adx = Adx::start().await;
    adx.engine.set_streaming_enabled(DB, TABLE, true);
    let props = adx.props(&scenario_mapping(", 'streaming': true"), &[]);
    let mut t = task(&props, "throttled");
    adx.engine.fail_next(
        "/v1/rest/ingest/",
        1,
        429,
        r#"{"error":{"code":"TooManyRequests","message":"The request was denied due to throttling.","@permanent":false}}"#,
    );
    t.put(&[order(0, 1, "Austin")]).await.expect("put");
    t.flush().await.expect("accepted by queued ingestion");
    adx.wait_rows(1).await;
    assert_eq!(
        adx.dm.messages().len(),
        1,
        "queued after the throttled stream"
    );
    adx.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_permanent_error_follows_behavior_on_error() {
    let adx = Adx::start().await;
    adx.engine.set_streaming_enabled(DB, TABLE, true);
    let bad_data =
        r#"{"error":{"code":"BadRequest","message":"Bad data in batch","@permanent":true}}"#;
    // behavior.on.error=fail: the batch fails the task, naming it.
    let props = adx.props(&scenario_mapping(", 'streaming': true"), &[]);
    let mut t = task(&props, "permanent-fail");
    t.put(&[order(0, 1, "Austin")]).await.expect("put");
    adx.engine.fail_next("/v1/rest/ingest/", 1, 400, bad_data);
    let err = format!("{:#}", t.flush().await.expect_err("fails"));
    assert!(
        err.contains("Orders") && err.contains("offsets 0..0"),
        "{err}"
    );
    assert!(err.contains("Bad data in batch"), "{err}");
    assert_eq!(durable(&mut t).await, Some(-1), "nothing of it committed");

    // behavior.on.error=log: the task goes on, and counts the batch.
    let props = adx.props(
        &scenario_mapping(", 'streaming': true"),
        &[("behavior.on.error", "log")],
    );
    let mut t = task(&props, "permanent-log");
    t.put(&[order(5, 6, "Austin")]).await.expect("put");
    adx.engine.fail_next("/v1/rest/ingest/", 1, 400, bad_data);
    t.flush().await.expect("logged and skipped");
    let statuses: Vec<(String, u16)> = adx
        .engine
        .requests()
        .iter()
        .map(|r| (r.path.clone(), r.status))
        .collect();
    assert_eq!(
        sluice_kusto::metrics::counts("permanent-log").failed_batches,
        1,
        "{statuses:?}"
    );
    assert_eq!(durable(&mut t).await, Some(5), "skipped: committed");
    assert!(adx.store().rows(DB, TABLE).is_empty());
    adx.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_errors_are_retried_within_the_retry_time_then_fail_the_batch() {
    let adx = Adx::start().await;
    let props = adx.props(
        &scenario_mapping(""),
        &[
            ("errors.retry.max.time.ms", "1500"),
            ("errors.retry.backoff.time.ms", "200"),
        ],
    );
    let (mut t, figures) = watched_task(&props, "transient");
    t.put(&[order(0, 1, "Austin")]).await.expect("put");
    // Two storage failures: retried, then accepted.
    adx.dm.fail_next_storage(2, 503);
    t.flush().await.expect("retried until accepted");
    adx.wait_rows(1).await;
    // Failing for longer than errors.retry.max.time.ms: the batch fails.
    t.put(&[order(1, 2, "Austin")]).await.expect("put");
    adx.dm.fail_next_storage(1000, 503);
    let err = format!("{:#}", t.flush().await.expect_err("gives up"));
    assert!(err.contains("errors.retry.max.time.ms=1500"), "{err}");
    assert!(err.contains("offsets 1..1"), "{err}");
    assert_eq!(metric(&figures, "kusto_batches"), 1.0);
    assert!(metric(&figures, "kusto_retries") >= 3.0, "two, then more");
    assert_eq!(metric(&figures, "kusto_failed_batches"), 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn start_up_checks_name_the_fix() {
    // A mapping that does not exist.
    let adx = Adx::start().await;
    let props = adx.props(
        &format!("[{{'topic': '{TOPIC}','db': '{DB}', 'table': '{TABLE}','format': 'json', 'mapping':'NoSuchMapping'}}]"),
        &[],
    );
    let mut t = task(&props, "checks-mapping");
    let err = format!(
        "{:#}",
        t.put(&[order(0, 1, "Austin")]).await.expect_err("refused")
    );
    assert!(err.contains("ingestion mapping 'NoSuchMapping'"), "{err}");
    assert!(
        err.contains(".create table ['Orders'] ingestion json mapping")
            || err.contains("ingestion json mapping"),
        "{err}"
    );

    // A table that does not exist.
    let props = adx.props(
        &format!("[{{'topic': '{TOPIC}','db': '{DB}', 'table': 'Missing','format': 'json'}}]"),
        &[],
    );
    let mut t = task(&props, "checks-table");
    let err = format!(
        "{:#}",
        t.put(&[order(0, 1, "Austin")]).await.expect_err("refused")
    );
    assert!(err.contains("table 'Missing' does not exist"), "{err}");
    assert!(err.contains("kusto.tables.create=true"), "{err}");

    // A database the principal may not use.
    let props = adx.props(
        &format!("[{{'topic': '{TOPIC}','db': 'nodb', 'table': '{TABLE}','format': 'json'}}]"),
        &[],
    );
    let mut t = task(&props, "checks-db");
    let err = format!(
        "{:#}",
        t.put(&[order(0, 1, "Austin")]).await.expect_err("refused")
    );
    assert!(err.contains("nodb"), "{err}");

    // An unreachable cluster.
    let mut props = adx.props(&scenario_mapping(""), &[]);
    let port = sluice_testkit::free_port().expect("port");
    props.insert(
        "kusto.ingestion.url".into(),
        format!("http://127.0.0.1:{port}"),
    );
    let mut t = task(&props, "checks-unreachable");
    let err = format!(
        "{:#}",
        t.put(&[order(0, 1, "Austin")]).await.expect_err("refused")
    );
    assert!(err.contains("could not be reached"), "{err}");
    assert!(err.contains("kusto.ingestion.url"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tables_create_makes_the_table_and_mapping_and_adds_new_columns() {
    let store = Store::new();
    store.create_database(DB);
    let adx = Adx::with_store(store).await;
    let props = adx.props(
        &format!("[{{'topic': '{TOPIC}','db': '{DB}', 'table': 'NewOrders','format': 'json', 'mapping':'NewMapping'}}]"),
        &[("kusto.tables.create", "true")],
    );
    let mut t = task(&props, "create");
    t.put(&[order(0, 1, "Austin")]).await.expect("put");
    t.flush().await.expect("flush");
    let columns = adx.store().columns(DB, "NewOrders").expect("table created");
    let names: Vec<&str> = columns.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(
        names,
        ["orderid", "custid", "amount", "city", "purchase_time"]
    );
    assert!(adx
        .store()
        .json_mappings(DB, "NewOrders")
        .is_some_and(|m| m.iter().any(|(n, _)| n == "NewMapping")));
    // A record with a new field: the column is added, the mapping follows.
    let mut r = order_bytes(1, 2, "Seattle");
    let mut v: Value = serde_json::from_slice(r.value.as_deref().expect("value")).expect("json");
    v["schema"]["fields"]
        .as_array_mut()
        .expect("fields")
        .push(json!({"field": "channel", "type": "string", "optional": true}));
    v["payload"]["channel"] = json!("web");
    r.value = Some(serde_json::to_vec(&v).expect("json"));
    t.put(&[read(r)]).await.expect("put");
    t.flush().await.expect("flush");
    let columns = adx.store().columns(DB, "NewOrders").expect("table");
    assert!(columns.iter().any(|(c, _)| c == "channel"), "{columns:?}");
    let rows = adx.wait_rows_in("NewOrders", 2).await;
    assert!(rows.iter().any(|r| r["channel"] == "web"), "{rows:?}");
    adx.assert_no_violations();
}

/// `ALTER TABLE ... ALTER COLUMN amount TYPE bigint` upstream: the field
/// turns int64 and a value of 2^40 arrives. It goes to a new column
/// `amount_long` (the int column would lose it), the mapping routes it
/// there, and a restarted task reads the table's columns back and goes on.
#[tokio::test(flavor = "multi_thread")]
async fn a_widened_field_goes_to_a_column_of_its_type_and_nothing_is_lost() {
    let store = Store::new();
    store.create_database(DB);
    let adx = Adx::with_store(store).await;
    let props = adx.props(
        &format!("[{{'topic': '{TOPIC}','db': '{DB}', 'table': 'Widened','format': 'json', 'mapping':'WideMapping'}}]"),
        &[("kusto.tables.create", "true")],
    );
    let widened = |offset: i64, id: i64| {
        let mut r = order_bytes(offset, id, "Seattle");
        let mut v: Value =
            serde_json::from_slice(r.value.as_deref().expect("value")).expect("json");
        v["schema"]["fields"][2]["type"] = json!("int64");
        v["payload"]["amount"] = json!(1i64 << 40);
        r.value = Some(serde_json::to_vec(&v).expect("json"));
        read(r)
    };
    let mut t = task(&props, "widen");
    t.put(&[order(0, 1, "Austin")]).await.expect("put");
    t.flush().await.expect("flush");
    t.put(&[widened(1, 2)]).await.expect("put");
    t.flush().await.expect("flush");
    let columns = adx.store().columns(DB, "Widened").expect("table");
    assert!(
        columns.contains(&("amount".to_string(), "int".to_string()))
            && columns.contains(&("amount_long".to_string(), "long".to_string())),
        "{columns:?}"
    );
    let rows = adx.wait_rows_in("Widened", 2).await;
    // coalesce(amount_long, amount): a batch still queued when the mapping
    // changed is ingested with the new one, so row 1 may sit in either.
    let amount = |id: i64| {
        rows.iter().find(|r| r["orderid"] == id).map(|r| {
            if r["amount_long"].is_null() {
                r["amount"].clone()
            } else {
                r["amount_long"].clone()
            }
        })
    };
    assert_eq!(amount(1), Some(json!(101)), "{rows:?}");
    assert_eq!(amount(2), Some(json!(1i64 << 40)), "{rows:?}");
    // A new task (a restart) knows nothing: it reads the columns back.
    let mut t = task(&props, "widen-again");
    t.put(&[widened(2, 3)]).await.expect("put after a restart");
    t.flush().await.expect("flush");
    let rows = adx.wait_rows_in("Widened", 3).await;
    assert!(
        rows.iter()
            .any(|r| r["orderid"] == 3 && r["amount_long"] == json!(1i64 << 40)),
        "{rows:?}"
    );
    adx.assert_no_violations();
}

/// The value of a record a `json` mapping cannot write: a map of Structs,
/// which the official connector's Jackson cannot serialize, serialized as
/// the worker writes it.
fn unwritable_value() -> Vec<u8> {
    let schema = SchemaBuilder::map(
        prim::string(),
        SchemaBuilder::structure()
            .field("x", prim::of(SchemaType::Int32, false))
            .build(),
    )
    .build();
    let value = Data::Map(vec![(
        Data::String("k".into()),
        Data::Struct(vec![Data::Int32(1)]),
    )]);
    value_converter()
        .from_connect(TOPIC, Some(&schema), Some(&value))
        .expect("serializes")
        .expect("not null")
}

/// Order `id` at `offset`, but with a value the sink cannot write.
fn unwritable(offset: i64, id: i64) -> SinkRecord {
    let mut r = order_bytes(offset, id, "Austin");
    r.value = Some(unwritable_value());
    read(r)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_that_cannot_be_written_fails_the_task_or_is_skipped_as_configured() {
    let adx = Adx::start().await;
    let bad = unwritable(1, 2);
    let props = adx.props(&scenario_mapping(""), &[]);
    let mut t = task(&props, "bad-fail");
    let err = format!(
        "{:#}",
        t.put(&[order(0, 1, "Austin"), bad.clone()])
            .await
            .expect_err("fails")
    );
    assert!(
        err.contains(TOPIC) && err.contains("offset 1") && err.contains("Struct"),
        "{err}"
    );

    let props = adx.props(&scenario_mapping(""), &[("behavior.on.error", "log")]);
    let mut t = task(&props, "bad-log");
    t.put(&[order(0, 1, "Austin"), bad, order(2, 3, "Austin")])
        .await
        .expect("skipped");
    t.flush().await.expect("flush");
    assert_eq!(durable(&mut t).await, Some(2));
    adx.wait_rows(2).await;
    adx.assert_no_violations();
}

impl Adx {
    async fn wait_rows_in(&self, table: &str, n: usize) -> Vec<serde_json::Map<String, Value>> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let rows = self.store().rows(DB, table);
            if rows.len() >= n {
                return rows;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} of {n} rows",
                rows.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Reads a whole topic of the test broker.
async fn read_topic(bootstrap: &str, topic: &str) -> Vec<Record> {
    let cfg = sluice_kafka::KafkaConfig::new(bootstrap);
    let reader = sluice_kafka::TopicReader::open(&cfg, topic)
        .await
        .expect("reader");
    reader.catch_up().await.expect("read")
}

fn header<'a>(r: &'a Record, key: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value.as_deref())
        .and_then(|v| std::str::from_utf8(v).ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dead_letter_queues_keep_what_adx_did_not_take() {
    let adx = Adx::start().await;
    adx.engine.set_streaming_enabled(DB, TABLE, true);
    let kafka = sluice_testkit::tansu::Tansu::start();
    let bootstrap = kafka.bootstrap();
    let props = adx.props(
        &scenario_mapping(", 'streaming': true"),
        &[
            ("behavior.on.error", "log"),
            ("errors.deadletterqueue.bootstrap.servers", &bootstrap),
            ("errors.deadletterqueue.topic.name", "adx-errors"),
            ("misc.deadletterqueue.bootstrap.servers", &bootstrap),
            ("misc.deadletterqueue.topic.name", "adx-misc"),
            ("misc.deadletterqueue.security.protocol", "PLAINTEXT"),
        ],
    );
    let mut t = task(&props, "dlq");
    // A record that cannot be written goes to the errors queue, as the
    // worker's converters serialize it; the rest of the batch is ingested.
    let bad = unwritable(1, 2);
    t.put(&[order(0, 1, "Austin"), bad, order(2, 3, "Austin")])
        .await
        .expect("put");
    t.flush().await.expect("flush");
    assert_eq!(adx.store().rows(DB, TABLE).len(), 2);
    let errors = read_topic(&bootstrap, "adx-errors").await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].value, Some(unwritable_value()));
    assert_eq!(errors[0].key.as_deref(), Some(b"2".as_slice()));
    assert_eq!(header(&errors[0], "__connect.errors.offset"), Some("1"));
    assert_eq!(header(&errors[0], "__connect.errors.topic"), Some(TOPIC));
    // A batch ADX refuses for good goes to the misc queue, every record.
    adx.engine.fail_next(
        "/v1/rest/ingest/",
        1,
        400,
        r#"{"error":{"code":"BadRequest","message":"Bad data in batch","@permanent":true}}"#,
    );
    t.put(&[order(3, 4, "Seattle"), order(4, 5, "Seattle")])
        .await
        .expect("put");
    t.flush().await.expect("logged, dead-lettered");
    let misc = read_topic(&bootstrap, "adx-misc").await;
    assert_eq!(misc.len(), 2, "{misc:?}");
    // The queue's topic may have several partitions: no order across them.
    let mut offsets: Vec<_> = misc
        .iter()
        .map(|r| header(r, "__connect.errors.offset"))
        .collect();
    offsets.sort();
    assert_eq!(offsets, [Some("3"), Some("4")]);
    assert!(misc
        .iter()
        .all(|r| header(r, "__connect.errors.exception.message")
            .is_some_and(|m| m.contains("Bad data in batch"))));
    assert_eq!(durable(&mut t).await, Some(4));
    adx.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread")]
async fn with_status_check_a_batch_counts_only_once_adx_reports_it_ingested() {
    let adx = Adx::start().await;
    let props = adx.props(
        &scenario_mapping(""),
        &[("kusto.ingestion.status.check", "true")],
    );
    let mut t = task(&props, "status");
    t.put(&[order(0, 1, "Austin")]).await.expect("put");
    t.flush().await.expect("succeeded");
    // Ingested before flush returned, not eventually.
    assert_eq!(adx.store().rows(DB, TABLE).len(), 1);
    // Data the table cannot take: the ingestion fails, and so does the batch.
    let mut r = order_bytes(1, 2, "Austin");
    let mut v: Value = serde_json::from_slice(r.value.as_deref().expect("value")).expect("json");
    v["schema"]["fields"][2]["type"] = json!("string");
    v["payload"]["amount"] = json!("not a number");
    r.value = Some(serde_json::to_vec(&v).expect("json"));
    t.put(&[read(r)]).await.expect("put");
    let err = format!("{:#}", t.flush().await.expect_err("ingestion failed"));
    assert!(err.contains("amount"), "{err}");
    assert_eq!(durable(&mut t).await, Some(0));
    adx.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_tokens_are_replaced_and_ingestion_goes_on() {
    let adx = Adx::start().await;
    adx.engine.set_streaming_enabled(DB, TABLE, true);
    // Client credentials against the engine's Azure AD endpoint.
    let mut props = adx.props(&scenario_mapping(", 'streaming': true"), &[]);
    props.remove("aad.auth.accesstoken");
    props.insert("aad.auth.authority".into(), adx.engine.tenant().into());
    props.insert("aad.auth.appid".into(), adx.engine.app_id().into());
    props.insert("aad.auth.appkey".into(), adx.engine.app_key().into());
    let env = sluice_kusto::auth::AzureEnv {
        authority_host: Some(adx.engine.url()),
        ..Default::default()
    };
    let cfg = sluice_kusto::config::KustoConfig::from_props(&props).expect("config");
    let mut t: Box<dyn SinkTask> = Box::new(
        sluice_kusto::sink::KustoSinkTask::with_env(cfg, ctx("tokens"), &env).expect("task"),
    );
    t.put(&[order(0, 1, "Austin")]).await.expect("put");
    t.flush().await.expect("flush");
    let issued = adx.engine.tokens_issued();
    assert!(issued >= 1);
    // Every token issued so far stops working (expiry, revocation).
    adx.engine.expire_tokens();
    t.put(&[order(1, 2, "Seattle")]).await.expect("put");
    t.flush().await.expect("a new token, then accepted");
    assert!(
        adx.engine.tokens_issued() > issued,
        "a new token was fetched"
    );
    assert_eq!(adx.store().rows(DB, TABLE).len(), 2);
    adx.assert_no_violations();
}

/// Throughput of the sink task alone (serialize, gzip, upload, post) into
/// the local stand-ins: `cargo test --release -p sluice-kusto --test sink
/// -- --ignored --nocapture bench_`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement, not a test"]
async fn bench_queued_ingestion_of_the_scenario_rows() {
    let adx = Adx::start().await;
    adx.dm.pause_ingestion();
    let props = adx.props(&scenario_mapping(""), &[("flush.interval.ms", "600000")]);
    let mut t = task(&props, "bench");
    let n = 200_000i64;
    let serialized: Vec<Record> = (0..n).map(|i| order_bytes(i, i + 1, "New York")).collect();
    let bytes: usize = serialized
        .iter()
        .map(|r| r.value.as_ref().map_or(0, Vec::len))
        .sum();
    // Reading with the converters is the worker's part, not measured here.
    let records: Vec<SinkRecord> = serialized.into_iter().map(read).collect();
    // Start-up checks are not part of the measurement.
    t.put(&records[..1]).await.expect("put");
    let started = std::time::Instant::now();
    for chunk in records[1..].chunks(1024) {
        t.put(chunk).await.expect("put");
    }
    t.flush().await.expect("flush");
    let took = started.elapsed().as_secs_f64();
    let posted = adx
        .dm
        .storage_requests()
        .iter()
        .filter(|r| r.service == "queue" && r.method == "POST")
        .count();
    eprintln!(
        "{n} records ({:.1} MB as the worker's JSON) in {took:.2} s: {:.0} records/s, {posted} batches posted",
        bytes as f64 / 1e6,
        n as f64 / took
    );
}

/// Order `id` unwrapped with `add.fields=op,lsn,snapshot`: a snapshot read
/// when `snapshot` is a marker, else a change streamed at `lsn`.
fn cdc_order(offset: i64, id: i64, op: &str, lsn: i64, snapshot: &str) -> SinkRecord {
    let mut r = order_bytes(offset, id, "Austin");
    let mut v: Value = serde_json::from_slice(r.value.as_deref().expect("value")).expect("json");
    let fields = v["schema"]["fields"].as_array_mut().expect("fields");
    fields.push(json!({"field": "__op", "type": "string", "optional": true}));
    fields.push(json!({"field": "__lsn", "type": "int64", "optional": true}));
    fields.push(json!({"field": "__snapshot", "type": "string", "optional": true}));
    v["payload"]["__op"] = json!(op);
    v["payload"]["__lsn"] = json!(lsn);
    v["payload"]["__snapshot"] = json!(snapshot);
    r.value = Some(serde_json::to_vec(&v).expect("json"));
    read(r)
}

/// The order ids in the table, sorted.
fn ids_in(adx: &Adx) -> Vec<String> {
    let mut ids: Vec<String> = adx
        .store()
        .rows(DB, TABLE)
        .iter()
        .map(|r| r["orderid"].as_str().unwrap_or_default().to_string())
        .collect();
    ids.sort();
    ids
}

/// The generation tags of the table's extents, oldest first.
fn generation_tags(adx: &Adx) -> Vec<String> {
    adx.store()
        .extents(DB, TABLE)
        .into_iter()
        .flatten()
        .filter(|t| t.starts_with("drop-by:sluice/"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_complete_snapshot_drops_the_partitions_older_generations() {
    let adx = Adx::start().await;
    let props = adx.props(
        &scenario_mapping(""),
        &[
            ("kusto.ingestion.status.check", "true"),
            ("kusto.snapshot.reconcile", "true"),
            ("behavior.on.error", "log"),
            ("flush.interval.ms", "60000"),
        ],
    );
    let g1 = format!("drop-by:sluice/{TOPIC}/0/100");
    // Snapshot 100 of ids 1..5, then a change streamed after it.
    let (mut t, telemetry) = watched_task(&props, "reconcile");
    let snapshot: Vec<SinkRecord> = [
        (1, "first"),
        (2, "true"),
        (3, "true"),
        (4, "true"),
        (5, "last"),
    ]
    .iter()
    .enumerate()
    .map(|(i, (id, m))| cdc_order(i as i64, *id, "r", 100, m))
    .collect();
    t.put(&snapshot).await.expect("put");
    t.put(&[cdc_order(5, 6, "c", 150, "false")])
        .await
        .expect("put");
    t.flush().await.expect("flush");
    assert_eq!(ids_in(&adx), ["1", "2", "3", "4", "5", "6"]);
    assert_eq!(generation_tags(&adx), vec![g1.clone()]);
    // Nothing older than the first snapshot: nothing dropped.
    assert_eq!(metric(&telemetry, "kusto_reconcile_dropped_extents"), 0.0);

    // A restart: a streamed change first learns its generation from the
    // table's extents.
    drop(t);
    let (mut t, telemetry) = watched_task(&props, "reconcile");
    t.put(&[cdc_order(6, 7, "c", 160, "false")])
        .await
        .expect("put");
    t.flush().await.expect("flush");
    assert_eq!(generation_tags(&adx), vec![g1.clone(), g1.clone()]);

    // Snapshot 200 after ids 4..7 were deleted unseen: until it is
    // complete, nothing is dropped.
    t.put(&[
        cdc_order(7, 1, "r", 200, "first"),
        cdc_order(8, 2, "r", 200, "true"),
    ])
    .await
    .expect("put");
    t.flush().await.expect("flush");
    assert_eq!(ids_in(&adx).len(), 9, "{:?}", ids_in(&adx));
    t.put(&[cdc_order(9, 3, "r", 200, "last")])
        .await
        .expect("put");
    t.flush().await.expect("flush");
    assert_eq!(ids_in(&adx), ["1", "2", "3"]);
    assert_eq!(metric(&telemetry, "kusto_reconcile_dropped_extents"), 2.0);
    let g2 = format!("drop-by:sluice/{TOPIC}/0/200");
    assert!(generation_tags(&adx).iter().all(|t| *t == g2));
    t.put(&[cdc_order(10, 8, "c", 250, "false")])
        .await
        .expect("put");
    t.flush().await.expect("flush");
    assert_eq!(ids_in(&adx), ["1", "2", "3", "8"]);

    // Snapshot 300 with a record that was skipped (behavior.on.error=log):
    // incomplete, so the older generation stays.
    t.put(&[
        cdc_order(11, 1, "r", 300, "first"),
        unwritable(12, 2),
        cdc_order(13, 3, "r", 300, "last"),
    ])
    .await
    .expect("skipped");
    t.flush().await.expect("flush");
    assert_eq!(ids_in(&adx), ["1", "1", "2", "3", "3", "8"]);
    assert_eq!(metric(&telemetry, "kusto_reconcile_dropped_extents"), 2.0);
    adx.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread")]
async fn reconcile_needs_the_status_check_and_queued_ingestion() {
    let adx = Adx::start().await;
    let plugin = sluice_kusto::plugin();
    let props = adx.props(
        &scenario_mapping(""),
        &[("kusto.snapshot.reconcile", "true")],
    );
    let err = plugin.validate(&props).expect_err("refused").to_string();
    assert!(
        err.contains("kusto.snapshot.reconcile")
            && err.contains("kusto.ingestion.status.check=true"),
        "{err}"
    );
    let props = adx.props(
        &scenario_mapping(", 'streaming': true"),
        &[
            ("kusto.snapshot.reconcile", "true"),
            ("kusto.ingestion.status.check", "true"),
        ],
    );
    let err = plugin.validate(&props).expect_err("refused").to_string();
    assert!(
        err.contains(TOPIC) && err.contains("'streaming': false"),
        "{err}"
    );
    // Without reconcile, the batches still carry their generation.
    let props = adx.props(&scenario_mapping(""), &[]);
    let mut t = task(&props, "marker");
    t.put(&[cdc_order(0, 1, "r", 42, "last")])
        .await
        .expect("put");
    t.flush().await.expect("flush");
    adx.wait_rows(1).await;
    assert_eq!(
        generation_tags(&adx),
        vec![format!("drop-by:sluice/{TOPIC}/0/42")]
    );
    adx.assert_no_violations();
}

const TABLE_B: &str = "Returns";
const TOPIC_B: &str = "myserver.retail.returns_info";

/// The scenario's table, and a second one like it for [`TOPIC_B`].
async fn two_tables() -> Adx {
    let adx = Adx::start().await;
    adx.store().create_table(DB, TABLE_B, COLUMNS);
    adx.store()
        .create_json_mapping(DB, TABLE_B, MAPPING, MAPPING_JSON)
        .expect("mapping");
    adx
}

fn two_tables_mapping() -> String {
    format!(
        "[{{'topic': '{TOPIC}','db': '{DB}', 'table': '{TABLE}','format': 'json', 'mapping':'{MAPPING}'}},{{'topic': '{TOPIC_B}','db': '{DB}', 'table': '{TABLE_B}','format': 'json', 'mapping':'{MAPPING}'}}]"
    )
}

/// [`cdc_order`] of [`TOPIC_B`].
fn cdc_return(offset: i64, id: i64, op: &str, lsn: i64, snapshot: &str) -> SinkRecord {
    let mut r = cdc_order(offset, id, op, lsn, snapshot);
    r.topic = Arc::from(TOPIC_B);
    r
}

/// `r` naming `topics` as read without a row, as a snapshot's final
/// record does.
fn naming_empty(mut r: SinkRecord, topics: &[&str]) -> SinkRecord {
    r.headers.push(sluice_core::record::Header {
        key: sluice_core::record::SNAPSHOT_EMPTY_TOPICS_HEADER.to_string(),
        value: Some(topics.join(",").into_bytes()),
    });
    r
}

fn ids_of(adx: &Adx, table: &str) -> Vec<String> {
    let mut ids: Vec<String> = adx
        .store()
        .rows(DB, table)
        .iter()
        .map(|r| r["orderid"].as_str().unwrap_or_default().to_string())
        .collect();
    ids.sort();
    ids
}

fn generation_tags_of(adx: &Adx, table: &str) -> Vec<String> {
    adx.store()
        .extents(DB, table)
        .into_iter()
        .flatten()
        .filter(|t| t.starts_with("drop-by:sluice/"))
        .collect()
}

/// Snapshot 100 of both tables (orders 1 and 2, returns 11 and 12), then
/// return 13 streamed at LSN 150.
async fn first_snapshot_of_both(t: &mut Box<dyn SinkTask>) {
    t.put(&[
        cdc_order(0, 1, "r", 100, "first"),
        cdc_order(1, 2, "r", 100, "last_in_data_collection"),
        cdc_return(0, 11, "r", 100, "first_in_data_collection"),
        cdc_return(1, 12, "r", 100, "last"),
        cdc_return(2, 13, "c", 150, "false"),
    ])
    .await
    .expect("put");
    t.flush().await.expect("flush");
}

fn reconcile_two_tables(adx: &Adx) -> sluice_core::config::Props {
    adx.props(
        &two_tables_mapping(),
        &[
            ("kusto.ingestion.status.check", "true"),
            ("kusto.snapshot.reconcile", "true"),
            ("behavior.on.error", "log"),
            ("flush.interval.ms", "60000"),
            // One record stays open in its batch; two close it.
            ("flush.size.bytes", "200"),
        ],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_that_read_a_table_without_a_row_empties_it() {
    let adx = two_tables().await;
    let props = reconcile_two_tables(&adx);
    let (mut t, _) = watched_task(&props, "empty");
    first_snapshot_of_both(&mut t).await;
    assert_eq!(ids_of(&adx, TABLE), ["1", "2"]);
    assert_eq!(ids_of(&adx, TABLE_B), ["11", "12", "13"]);
    let b100 = format!("drop-by:sluice/{TOPIC_B}/0/100");
    assert_eq!(generation_tags_of(&adx, TABLE_B), vec![b100.clone(), b100]);

    // A restart, then snapshot 200 after every return was deleted: it
    // reads only orders. A change of returns from before it (LSN 180) is
    // still open in its batch when the snapshot's final record is ingested.
    drop(t);
    let (mut t, telemetry) = watched_task(&props, "empty");
    t.put(&[cdc_return(3, 11, "d", 180, "false")])
        .await
        .expect("put");
    t.put(&[
        cdc_order(2, 1, "r", 200, "first"),
        naming_empty(
            cdc_order(3, 2, "r", 200, "last"),
            &[TOPIC_B, "myserver.retail.unmapped"],
        ),
    ])
    .await
    .expect("put");
    assert_eq!(ids_of(&adx, TABLE), ["1", "2"]);
    let a200 = format!("drop-by:sluice/{TOPIC}/0/200");
    assert_eq!(generation_tags_of(&adx, TABLE), vec![a200]);
    assert_eq!(ids_of(&adx, TABLE_B), Vec::<String>::new());
    // Orders' one extent of snapshot 100; returns' two, and the batch
    // that was open.
    assert_eq!(metric(&telemetry, "kusto_reconcile_dropped_extents"), 4.0);

    // Returns go on in generation 200, in a partition not seen before
    // too.
    let mut other_partition = cdc_return(0, 15, "c", 260, "false");
    other_partition.partition = 1;
    t.put(&[cdc_return(4, 14, "c", 250, "false"), other_partition])
        .await
        .expect("put");
    t.flush().await.expect("flush");
    assert_eq!(ids_of(&adx, TABLE_B), ["14", "15"]);
    let mut tags = generation_tags_of(&adx, TABLE_B);
    tags.sort();
    assert_eq!(
        tags,
        vec![
            format!("drop-by:sluice/{TOPIC_B}/0/200"),
            format!("drop-by:sluice/{TOPIC_B}/1/200")
        ]
    );

    // Snapshot 300, reading returns empty again, lost an order
    // (behavior.on.error=log): incomplete, so returns keep their rows.
    t.put(&[
        cdc_order(4, 1, "r", 300, "first"),
        unwritable(5, 2),
        naming_empty(cdc_order(6, 3, "r", 300, "last"), &[TOPIC_B]),
    ])
    .await
    .expect("skipped");
    t.flush().await.expect("flush");
    assert_eq!(ids_of(&adx, TABLE_B), ["14", "15"]);
    assert_eq!(metric(&telemetry, "kusto_reconcile_dropped_extents"), 4.0);
    adx.assert_no_violations();
}

/// A snapshot that read returns without a row, with no record of its own
/// for this task (no row at all, or its last record on a topic this task
/// does not read): the first change of returns after it says so, and the
/// older generations of returns are dropped before that change lands.
#[tokio::test(flavor = "multi_thread")]
async fn the_first_change_after_a_snapshot_that_read_the_table_empty_empties_it() {
    let adx = two_tables().await;
    let props = reconcile_two_tables(&adx);
    let (mut t, _) = watched_task(&props, "empty-change");
    first_snapshot_of_both(&mut t).await;
    drop(t);
    let (mut t, telemetry) = watched_task(&props, "empty-change");
    let mut first = cdc_return(3, 14, "c", 250, "false");
    first.headers.push(sluice_core::record::Header {
        key: sluice_core::record::SNAPSHOT_EMPTY_HEADER.to_string(),
        value: Some(b"200".to_vec()),
    });
    t.put(&[first, cdc_return(4, 15, "c", 260, "false")])
        .await
        .expect("put");
    t.flush().await.expect("flush");
    assert_eq!(ids_of(&adx, TABLE_B), ["14", "15"]);
    assert_eq!(ids_of(&adx, TABLE), ["1", "2"], "orders untouched");
    assert_eq!(metric(&telemetry, "kusto_reconcile_dropped_extents"), 2.0);
    assert_eq!(
        generation_tags_of(&adx, TABLE_B),
        vec![format!("drop-by:sluice/{TOPIC_B}/0/200")]
    );
    // A later change of returns goes on in generation 200.
    t.put(&[cdc_return(5, 16, "c", 270, "false")])
        .await
        .expect("put");
    t.flush().await.expect("flush");
    assert_eq!(ids_of(&adx, TABLE_B), ["14", "15", "16"]);
    assert_eq!(metric(&telemetry, "kusto_reconcile_dropped_extents"), 2.0);
    adx.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_read_keeps_a_change_streamed_after_it() {
    let adx = two_tables().await;
    let props = reconcile_two_tables(&adx);
    let (mut t, telemetry) = watched_task(&props, "streamed-past");
    first_snapshot_of_both(&mut t).await;
    // Return 14 is inserted after snapshot 200 read returns empty, and its
    // partition is taken before the orders' partition reaches the end of
    // the snapshot.
    t.put(&[cdc_return(3, 14, "c", 250, "false")])
        .await
        .expect("put");
    t.flush().await.expect("flush");
    t.put(&[
        cdc_order(2, 1, "r", 200, "first"),
        naming_empty(cdc_order(3, 2, "r", 200, "last"), &[TOPIC_B]),
    ])
    .await
    .expect("put");
    t.flush().await.expect("flush");
    assert_eq!(ids_of(&adx, TABLE), ["1", "2"]);
    assert_eq!(ids_of(&adx, TABLE_B), ["11", "12", "13", "14"]);
    assert_eq!(metric(&telemetry, "kusto_reconcile_dropped_extents"), 1.0);
    // Later changes are tagged with the snapshot, which a later one weighs.
    t.put(&[cdc_return(4, 15, "c", 260, "false")])
        .await
        .expect("put");
    t.flush().await.expect("flush");
    assert_eq!(
        generation_tags_of(&adx, TABLE_B).last(),
        Some(&format!("drop-by:sluice/{TOPIC_B}/0/200"))
    );
    adx.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_read_after_a_restart_keeps_what_streamed_after_it() {
    let adx = two_tables().await;
    let props = reconcile_two_tables(&adx);
    let (mut t, _) = watched_task(&props, "restart-lsn");
    first_snapshot_of_both(&mut t).await;
    // Return 14 is inserted after snapshot 200 read returns empty; its
    // partition is ingested under generation 100 before the task stops,
    // without having seen the end of snapshot 200.
    t.put(&[cdc_return(3, 14, "c", 250, "false")])
        .await
        .expect("put");
    t.flush().await.expect("flush");
    t.stop().await.expect("stop");
    drop(t);
    let b100 = format!("drop-by:sluice/{TOPIC_B}/0/100");
    assert_eq!(
        adx.store().extents(DB, TABLE_B),
        vec![
            vec![b100.clone()],
            vec![b100.clone(), "sluice-lsn:150".to_owned()],
            vec![b100.clone(), "sluice-lsn:250".to_owned()],
        ]
    );

    // A new task knows nothing of return 14 when it is given the end of
    // snapshot 200.
    let (mut t, telemetry) = watched_task(&props, "restart-lsn");
    t.put(&[
        cdc_order(2, 1, "r", 200, "first"),
        naming_empty(cdc_order(3, 2, "r", 200, "last"), &[TOPIC_B]),
    ])
    .await
    .expect("put");
    assert_eq!(ids_of(&adx, TABLE), ["1", "2"]);
    // Returns 11 to 13 are gone with generation 100; return 14 is not.
    assert_eq!(ids_of(&adx, TABLE_B), ["14"]);
    assert_eq!(
        adx.store().extents(DB, TABLE_B),
        vec![vec![b100, "sluice-lsn:250".to_owned()]]
    );
    // Orders' extent of snapshot 100, and returns' two.
    assert_eq!(metric(&telemetry, "kusto_reconcile_dropped_extents"), 3.0);

    // Returns go on in generation 200.
    t.put(&[cdc_return(4, 15, "c", 260, "false")])
        .await
        .expect("put");
    t.flush().await.expect("flush");
    assert_eq!(ids_of(&adx, TABLE_B), ["14", "15"]);
    assert_eq!(
        adx.store().extents(DB, TABLE_B).last(),
        Some(&vec![
            format!("drop-by:sluice/{TOPIC_B}/0/200"),
            "sluice-lsn:260".to_owned()
        ])
    );
    adx.assert_no_violations();
}
