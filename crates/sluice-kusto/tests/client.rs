//! The Kusto REST client against the local ADX engine, with tokens from its
//! Azure AD token endpoint: management commands, queries, the headers sent,
//! and how failures are classified.

use std::sync::Arc;
use std::time::Duration;

use sluice_kusto::auth::{AzureEnv, Credential, TokenProvider};
use sluice_kusto::client::{ErrorKind, KustoClient, KustoError};
use sluice_testkit::kusto::engine::FakeEngine;
use sluice_testkit::kusto::store::{IngestInto, Store};

const DB: &str = "db";

async fn engine() -> FakeEngine {
    let store = Store::new();
    store.create_table(DB, "Events", &[("id", "long"), ("name", "string")]);
    FakeEngine::start(store).await.expect("engine")
}

fn client_with_secret(engine: &FakeEngine, secret: &str) -> KustoClient {
    let env = AzureEnv {
        authority_host: Some(engine.url()),
        ..AzureEnv::default()
    };
    let credential = Credential::ClientSecret {
        tenant: engine.tenant().to_owned(),
        client_id: engine.app_id().to_owned(),
        secret: secret.to_owned(),
    };
    let tokens = TokenProvider::new(credential, &engine.url(), &env).expect("token provider");
    KustoClient::new(&engine.url(), Arc::new(tokens), reqwest::Client::new()).expect("client")
}

fn client(engine: &FakeEngine) -> KustoClient {
    client_with_secret(engine, engine.app_key())
}

fn assert_no_violations(engine: &FakeEngine) {
    let v = engine.violations();
    assert!(v.is_empty(), "contract violations: {v:#?}");
}

fn ingest_rows(engine: &FakeEngine, table: &str, data: &str) {
    let into = IngestInto {
        db: DB.into(),
        table: table.into(),
        format: "multijson".into(),
        ..IngestInto::default()
    };
    engine
        .store()
        .ingest(&into, data.as_bytes())
        .expect("ingest");
}

#[tokio::test]
async fn management_commands_and_queries_with_the_sdk_headers() {
    let engine = engine().await;
    let c = client(&engine);

    let created = c
        .mgmt(
            DB,
            ".create-merge table ['Orders'] (id:long, ['the total']:real)",
        )
        .await
        .expect("create-merge");
    assert_eq!(
        created.get_str(0, "Schema"),
        Some("id:long,['the total']:real")
    );
    let tables = c.mgmt(DB, ".show tables").await.expect("show tables");
    let names: Vec<_> = (0..tables.rows.len())
        .filter_map(|i| tables.get_str(i, "TableName"))
        .collect();
    assert_eq!(names, vec!["Events", "Orders"]);

    c.mgmt(
        DB,
        r#".create-or-alter table ['Orders'] ingestion json mapping 'orders_map' '[{"column":"id","Properties":{"Path":"$.order.id"}}]'"#,
    )
    .await
    .expect("create mapping");
    let mappings = c
        .mgmt(DB, ".show table ['Orders'] ingestion json mappings")
        .await
        .expect("show mappings");
    assert_eq!(mappings.get_str(0, "Name"), Some("orders_map"));
    assert_eq!(mappings.rows.len(), 1);

    ingest_rows(
        &engine,
        "Events",
        r#"{"id":1,"name":"a"} {"id":2,"name":"b"} {"id":3}"#,
    );
    let count = c.query(DB, "Events | count").await.expect("count");
    assert_eq!(count.get(0, "Count"), Some(&serde_json::json!(3)));
    let first = c.query(DB, "['Events'] | take 2").await.expect("take");
    assert_eq!(first.columns, vec!["id", "name"]);
    assert_eq!(first.rows.len(), 2);
    assert_eq!(first.get_str(1, "name"), Some("b"));

    let requests = engine.requests();
    let engine_calls: Vec<_> = requests
        .iter()
        .filter(|r| r.path.starts_with("/v"))
        .collect();
    assert_eq!(engine_calls.len(), 6);
    let mut ids = std::collections::BTreeSet::new();
    for r in &engine_calls {
        assert_eq!(r.method, "POST");
        assert_eq!(r.status, 200, "{} {}", r.path, r.body);
        assert_eq!(r.header("authorization"), Some("Bearer [redacted]"));
        assert_eq!(
            r.header("content-type"),
            Some("application/json; charset=utf-8")
        );
        assert_eq!(r.header("accept"), Some("application/json"));
        assert_eq!(r.header("x-ms-app"), Some("Sluice"));
        assert!(r
            .header("x-ms-client-version")
            .is_some_and(|v| v.starts_with("Sluice:")));
        assert!(r.header("x-ms-version").is_some());
        let id = r.header("x-ms-client-request-id").expect("request id");
        assert!(
            id.starts_with("Sluice;") && id.len() == "Sluice;".len() + 36,
            "{id}"
        );
        ids.insert(id.to_owned());
        let body: serde_json::Value = serde_json::from_str(&r.body).expect("JSON body");
        assert_eq!(body["db"], DB);
    }
    assert_eq!(ids.len(), engine_calls.len(), "request ids are unique");
    assert_eq!(engine.tokens_issued(), 1, "the token is cached");
    assert_no_violations(&engine);
}

#[tokio::test]
async fn unknown_database_and_unknown_command_carry_kustos_message() {
    let engine = engine().await;
    let c = client(&engine);
    let e = c
        .mgmt("nope", ".show tables")
        .await
        .expect_err("unknown db");
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert_eq!(e.status, Some(400));
    assert!(
        e.message
            .contains("Entity ID 'nope' of kind 'Database' was not found"),
        "{e}"
    );
    assert!(e.to_string().contains("/v1/rest/mgmt"), "{e}");

    let e = c
        .mgmt(DB, ".frobnicate table Events")
        .await
        .expect_err("bad command");
    assert_eq!(e.kind, ErrorKind::Permanent);
    assert!(!e.is_retriable());
    assert!(e.message.starts_with("BadRequest_SyntaxError: "), "{e}");
    assert!(e.to_string().contains(".frobnicate table Events"), "{e}");

    let e = c
        .query(DB, "Missing | count")
        .await
        .expect_err("unknown table");
    assert_eq!(e.kind, ErrorKind::Permanent);
    assert!(e.message.contains("'Missing'"), "{e}");
    assert_no_violations(&engine);
}

#[tokio::test]
async fn a_refused_token_is_replaced_once_within_the_call() {
    let engine = engine().await;
    let c = client(&engine);
    c.mgmt(DB, ".show tables").await.expect("first call");
    assert_eq!(engine.tokens_issued(), 1);

    // The cached token is still fresh for the client, but the service
    // refuses it: the client fetches a new one and repeats the request.
    engine.expire_tokens();
    c.mgmt(DB, ".show tables").await.expect("after a refresh");
    assert_eq!(engine.tokens_issued(), 2);
    let statuses: Vec<u16> = engine
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/rest/mgmt")
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, vec![200, 401, 200]);

    // A second refusal within the same call is final.
    engine.fail_next(
        "/v1/rest/mgmt",
        2,
        401,
        r#"{"error":{"code":"Unauthorized","message":"nope","@permanent":true}}"#,
    );
    let e = c.mgmt(DB, ".show tables").await.expect_err("refused twice");
    assert_eq!(e.kind, ErrorKind::Unauthorized);
    assert_eq!(e.status, Some(401));
    assert_eq!(engine.tokens_issued(), 3);
    let mgmt_calls = engine
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/rest/mgmt")
        .count();
    assert_eq!(mgmt_calls, 5, "one retry, no more");
    assert_no_violations(&engine);
}

#[tokio::test]
async fn throttling_server_errors_and_permanent_errors_are_classified() {
    let engine = engine().await;
    let c = client(&engine);

    engine.fail_next_with_retry_after(
        "/v2/rest/query",
        1,
        429,
        r#"{"error":{"code":"TooManyRequests","message":"The request was denied due to throttling.","@type":"Kusto.DataNode.Exceptions.ThrottledException","@permanent":false}}"#,
        7,
    );
    let e = c.query(DB, "Events | count").await.expect_err("throttled");
    assert_eq!(e.kind, ErrorKind::Throttled);
    assert!(e.is_retriable());
    assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
    assert!(e.message.contains("denied due to throttling"), "{e}");

    engine.fail_next("/v1/rest/mgmt", 1, 500, "internal failure in the data node");
    let e = c.mgmt(DB, ".show tables").await.expect_err("500");
    assert_eq!(e.kind, ErrorKind::Transient);
    assert!(e.is_retriable());
    assert_eq!(e.message, "internal failure in the data node");
    assert_eq!(e.retry_after, None);

    engine.fail_next(
        "/v1/rest/mgmt",
        1,
        500,
        r#"{"error":{"code":"Internal_Error","message":"generic","@message":"the schema is corrupt","@permanent":true}}"#,
    );
    let e = c.mgmt(DB, ".show tables").await.expect_err("permanent 500");
    assert_eq!(e.kind, ErrorKind::Permanent);
    assert!(!e.is_retriable());
    assert_eq!(e.message, "Internal_Error: the schema is corrupt");
    assert!(
        e.to_string()
            .contains("HTTP 500 Internal_Error: the schema is corrupt"),
        "{e}"
    );

    // The next request succeeds: each fault was used once.
    c.mgmt(DB, ".show tables").await.expect("recovered");
    assert_no_violations(&engine);
}

#[tokio::test]
async fn a_denied_principal_gets_forbidden_with_kustos_message() {
    let engine = engine().await;
    engine.store().deny(engine.app_id(), DB);
    let c = client(&engine);
    let e = c.mgmt(DB, ".show tables").await.expect_err("denied");
    assert_eq!(e.kind, ErrorKind::Forbidden);
    assert_eq!(e.status, Some(403));
    assert!(
        e.message.contains(&format!(
            "Principal 'aadapp={};{}' is not authorized",
            engine.app_id(),
            engine.tenant()
        )),
        "{e}"
    );
    let e = c.query(DB, "Events").await.expect_err("denied query");
    assert_eq!(e.kind, ErrorKind::Forbidden);
    assert_no_violations(&engine);
}

#[tokio::test]
async fn tokens_and_secrets_never_appear_in_errors() {
    let engine = engine().await;
    let c = client(&engine);
    let token = c.bearer().await.expect("token");
    // A service that echoes the token back in its error.
    engine.fail_next(
        "/v1/rest/mgmt",
        1,
        400,
        &format!("bad request with Bearer {token}"),
    );
    let e = c.mgmt(DB, ".show tables").await.expect_err("400");
    let mut texts = vec![e.to_string(), format!("{e:?}")];
    engine.fail_next("/v1/rest/mgmt", 2, 401, "expired");
    let e = c.mgmt(DB, ".show tables").await.expect_err("401");
    texts.extend([e.to_string(), format!("{e:?}"), format!("{c:?}")]);
    let newest = c.bearer().await.expect("token");
    for t in &texts {
        assert!(!t.contains(&token) && !t.contains(&newest), "{t}");
    }
    assert!(texts[0].contains("[token]"), "{}", texts[0]);

    let wrong = client_with_secret(&engine, "not-the-secret");
    let e: KustoError = wrong
        .mgmt(DB, ".show tables")
        .await
        .expect_err("wrong secret");
    assert_eq!(e.kind, ErrorKind::Unauthorized);
    assert!(e.message.contains("AADSTS7000215"), "{e}");
    let text = format!("{e} {e:?}");
    assert!(
        !text.contains("not-the-secret") && !text.contains(engine.app_key()),
        "{text}"
    );
    assert_no_violations(&engine);
}

#[tokio::test]
async fn the_engine_records_a_request_that_departs_from_the_contract() {
    let engine = engine().await;
    let c = client(&engine);
    let token = c.bearer().await.expect("token");
    // No x-ms-client-request-id, no Accept, a text body.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/rest/mgmt", engine.url()))
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body(".show tables")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 400);
    let v = engine.violations();
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].contains("x-ms-client-request-id"), "{v:?}");
}

#[test]
fn plain_http_is_refused_off_loopback() {
    let env = AzureEnv::default();
    let tokens = Arc::new(
        TokenProvider::new(
            Credential::Static("t".into()),
            "https://c.kusto.windows.net",
            &env,
        )
        .expect("provider"),
    );
    let e = KustoClient::new(
        "http://c.kusto.windows.net",
        tokens.clone(),
        reqwest::Client::new(),
    )
    .expect_err("http off loopback");
    assert_eq!(e.kind, ErrorKind::Permanent);
    assert!(e.message.contains("https"), "{e}");
    let ok = KustoClient::new(
        "https://c.kusto.windows.net/",
        tokens,
        reqwest::Client::new(),
    )
    .expect("https");
    assert_eq!(ok.endpoint(), "https://c.kusto.windows.net");
}

#[tokio::test]
async fn azure_ad_errors_and_other_credentials() {
    let engine = engine().await;
    let env = AzureEnv {
        authority_host: Some(engine.url()),
        ..AzureEnv::default()
    };
    let with = |credential: Credential| {
        let tokens = TokenProvider::new(credential, &engine.url(), &env).expect("token provider");
        KustoClient::new(&engine.url(), Arc::new(tokens), reqwest::Client::new()).expect("client")
    };

    let wrong_tenant = with(Credential::ClientSecret {
        tenant: "no-such-tenant".into(),
        client_id: engine.app_id().into(),
        secret: engine.app_key().into(),
    });
    let e = wrong_tenant
        .mgmt(DB, ".show tables")
        .await
        .expect_err("unknown tenant");
    assert_eq!(e.kind, ErrorKind::Unauthorized);
    assert!(e.message.contains("AADSTS90002"), "{e}");

    // Workload identity: the federated token exchanged as a client assertion.
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("token");
    std::fs::write(&file, engine.assertion()).expect("write the federated token");
    let workload = with(Credential::WorkloadIdentity {
        tenant: engine.tenant().into(),
        client_id: engine.app_id().into(),
        token_file: file.clone(),
    });
    workload
        .mgmt(DB, ".show tables")
        .await
        .expect("workload identity");
    std::fs::write(&file, "a-stale-assertion").expect("write");
    let stale = with(Credential::WorkloadIdentity {
        tenant: engine.tenant().into(),
        client_id: engine.app_id().into(),
        token_file: file,
    });
    let e = stale
        .mgmt(DB, ".show tables")
        .await
        .expect_err("bad assertion");
    assert_eq!(e.kind, ErrorKind::Unauthorized);

    // A static token (aad.auth.accesstoken) is used as given; one the
    // engine did not issue is refused.
    let fixed = with(Credential::Static(engine.mint_token()));
    fixed.mgmt(DB, ".show tables").await.expect("static token");
    let forged = with(Credential::Static("forged".into()));
    let e = forged
        .mgmt(DB, ".show tables")
        .await
        .expect_err("forged token");
    assert_eq!(e.kind, ErrorKind::Unauthorized);
    assert_eq!(e.status, Some(401));
    assert_no_violations(&engine);
}
