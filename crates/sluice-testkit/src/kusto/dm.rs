//! The local data-management service (the `https://ingest-<cluster>...`
//! endpoint) for queued ingestion, backed by Azurite.
//!
//! [`FakeDm`] answers `POST /v1/rest/mgmt` for `.get ingestion resources`
//! and `.get kusto identity token` (v1 shape, database `NetDefaultDB`,
//! bearer tokens checked with the engine's [`TokenValidator`]). The
//! resources it hands out are two temporary blob containers, two ingestion
//! queues, the successful/failed ingestion queues and the status table,
//! created in Azurite, each as a URL with an account SAS limited to what
//! the resource needs.
//!
//! The URLs point at small pass-through proxies in front of Azurite's blob,
//! queue and table services, so a test can inject storage failures
//! ([`FakeDm::fail_next_storage`]) and the requests can be checked against
//! the storage contract (`x-ms-version`, `x-ms-blob-type: BlockBlob`,
//! `Content-Length`, the queue message's XML).
//!
//! An ingestion worker takes messages from the ingestion queues as the
//! real service does: it decodes each (base64 JSON), checks every field
//! against the contract the Kusto SDKs follow, downloads the blob through
//! its `BlobPath`, gunzips it, ingests it into the [`Store`] with the
//! message's format, mapping, tags and `ingestIfNotExists`, reports the
//! outcome as `ReportLevel`/`ReportMethod` ask (status table row, or a
//! message on the successful/failed queue), and deletes the message. Every
//! departure from the contract is recorded in [`FakeDm::violations`].

use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::azurite::{xml_elements, Azurite, AzuriteClient};
use super::engine::TokenValidator;
use super::store::{IngestInto, IngestOutcome, Store};

/// The containers handed out as `TempStorage`.
pub const CONTAINERS: [&str; 2] = ["ingestdata-0", "ingestdata-1"];
/// The queues handed out as `SecuredReadyForAggregationQueue`.
pub const INGESTION_QUEUES: [&str; 2] = [
    "readyforaggregation-secured-0",
    "readyforaggregation-secured-1",
];
/// The `SuccessfulIngestionsQueue`.
pub const SUCCESS_QUEUE: &str = "successfulingestions";
/// The `FailedIngestionsQueue`.
pub const FAILURE_QUEUE: &str = "failedingestions";
/// The `IngestionsStatusTable`.
pub const STATUS_TABLE: &str = "ingestionsstatus";
/// The header the worker's own storage requests carry, so the proxies
/// neither fail nor check them.
const WORKER_HEADER: &str = "x-sluice-fake-dm-worker";

/// Top-level message fields the SDKs send; anything else is a violation.
const KNOWN_FIELDS: &[&str] = &[
    "Id",
    "BlobPath",
    "RawDataSize",
    "DatabaseName",
    "TableName",
    "RetainBlobOnSuccess",
    "FlushImmediately",
    "IgnoreSizeLimit",
    "ReportLevel",
    "ReportMethod",
    "SourceMessageCreationTime",
    "AdditionalProperties",
    "IngestionStatusInTable",
    "ApplicationForTracing",
    "ClientVersionForTracing",
    "ValidationPolicy",
    "BlobPathEncrypted",
];

/// One storage request that reached a proxy from the client.
#[derive(Debug, Clone)]
pub struct StorageRequest {
    /// `blob`, `queue` or `table`.
    pub service: &'static str,
    /// The HTTP method.
    pub method: String,
    /// The path (`/devstoreaccount1/<container>/<blob>`), without the query.
    pub path: String,
    /// The status answered (an injected failure's, or Azurite's).
    pub status: u16,
}

#[derive(Default)]
struct Recorded {
    violations: Vec<String>,
    messages: Vec<Value>,
    /// Authorization contexts handed out.
    identities: Vec<String>,
    mgmt_faults: VecDeque<(u16, String)>,
    storage_faults: VecDeque<u16>,
    storage_requests: Vec<StorageRequest>,
    /// The worker's outcome per message Id.
    outcomes: HashMap<String, String>,
}

struct Shared {
    store: Store,
    azurite: AzuriteClient,
    tokens: TokenValidator,
    /// Proxy base URLs (`http://127.0.0.1:PORT`) per service.
    blob_proxy: String,
    queue_proxy: String,
    table_proxy: String,
    resources_served: AtomicUsize,
    identities_served: AtomicUsize,
    expired_sas_next: AtomicUsize,
    paused: AtomicBool,
    state: Mutex<Recorded>,
    http: reqwest::Client,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Recorded> {
        // A panicking test thread must not hide the recorded state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn violation(&self, v: String) {
        self.lock().violations.push(v);
    }
}

/// The data-management stand-in; see the module documentation.
pub struct FakeDm {
    shared: Arc<Shared>,
    url: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for FakeDm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeDm").field("url", &self.url).finish()
    }
}

impl Drop for FakeDm {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn serve(router: Router) -> Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding a loopback port")?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok((format!("http://{addr}"), task))
}

impl FakeDm {
    /// Creates the storage resources in `azurite`, starts the proxies, the
    /// management endpoint and the ingestion worker. Tokens are checked with
    /// `tokens` (the engine's; accept the audience the client asks for with
    /// `FakeEngine::accept_audience` when it is not the engine's URL).
    pub async fn start(store: Store, azurite: &Azurite, tokens: TokenValidator) -> Result<FakeDm> {
        for c in CONTAINERS {
            azurite.create_container(c).await?;
        }
        for q in INGESTION_QUEUES
            .iter()
            .chain(&[SUCCESS_QUEUE, FAILURE_QUEUE])
        {
            azurite.create_queue(q).await?;
        }
        azurite.create_table(STATUS_TABLE).await?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .context("building the stand-in's HTTP client")?;

        // The proxies need the shared state and the state needs their URLs:
        // bind first, then build the state, then serve.
        let blob_l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the blob proxy")?;
        let queue_l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the queue proxy")?;
        let table_l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the table proxy")?;
        let url_of = |l: &tokio::net::TcpListener| -> Result<String> {
            Ok(format!(
                "http://{}",
                l.local_addr().context("proxy address")?
            ))
        };
        let shared = Arc::new(Shared {
            store,
            azurite: (**azurite).clone(),
            tokens,
            blob_proxy: url_of(&blob_l)?,
            queue_proxy: url_of(&queue_l)?,
            table_proxy: url_of(&table_l)?,
            resources_served: AtomicUsize::new(0),
            identities_served: AtomicUsize::new(0),
            expired_sas_next: AtomicUsize::new(0),
            paused: AtomicBool::new(false),
            state: Mutex::new(Recorded::default()),
            http,
        });
        let mut tasks = Vec::new();
        for (listener, service, port) in [
            (blob_l, "blob", azurite.blob_port()),
            (queue_l, "queue", azurite.queue_port()),
            (table_l, "table", azurite.table_port()),
        ] {
            let proxy = Proxy {
                shared: shared.clone(),
                service,
                target: format!("http://127.0.0.1:{port}"),
            };
            let router = Router::new()
                .fallback(proxy_handler)
                .with_state(Arc::new(proxy));
            tasks.push(tokio::spawn(async move {
                let _ = axum::serve(listener, router).await;
            }));
        }
        let router = Router::new()
            .route("/v1/rest/mgmt", axum::routing::any(mgmt_handler))
            .fallback(unknown_path)
            .with_state(shared.clone());
        let (url, task) = serve(router).await?;
        tasks.push(task);
        let worker = shared.clone();
        tasks.push(tokio::spawn(async move { run_worker(worker).await }));
        Ok(FakeDm { shared, url, tasks })
    }

    /// The endpoint, for `kusto.ingestion.url`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Every departure from the contract seen so far.
    pub fn violations(&self) -> Vec<String> {
        self.shared.lock().violations.clone()
    }

    /// The decoded JSON of every ingestion message the worker took.
    pub fn messages(&self) -> Vec<Value> {
        self.shared.lock().messages.clone()
    }

    /// What the worker did with each message, by its `Id`:
    /// `Succeeded`, `Skipped` or `Failed: <details>`.
    pub fn outcomes(&self) -> HashMap<String, String> {
        self.shared.lock().outcomes.clone()
    }

    /// Stops taking messages from the ingestion queues (they stay queued).
    pub fn pause_ingestion(&self) {
        self.shared.paused.store(true, Ordering::SeqCst);
    }

    /// Takes messages again.
    pub fn resume_ingestion(&self) {
        self.shared.paused.store(false, Ordering::SeqCst);
    }

    /// The next `n` management requests are answered with `status` and
    /// `body` (e.g. 503, or 403 with a Kusto error body).
    pub fn fail_next_mgmt(&self, n: usize, status: u16, body: &str) {
        let mut st = self.shared.lock();
        for _ in 0..n {
            st.mgmt_faults.push_back((status, body.to_owned()));
        }
    }

    /// The next `n` client requests to storage (any service) are answered
    /// with `status` and an Azure Storage error body; `n = 0` clears
    /// pending failures.
    pub fn fail_next_storage(&self, n: usize, status: u16) {
        let mut st = self.shared.lock();
        if n == 0 {
            st.storage_faults.clear();
        }
        for _ in 0..n {
            st.storage_faults.push_back(status);
        }
    }

    /// The next `n` `.get ingestion resources` answers carry SAS tokens
    /// that have already expired (Azurite refuses them with 403), as a
    /// client holding resources past their SAS lifetime would see.
    pub fn expire_sas_in_next_resources(&self, n: usize) {
        self.shared.expired_sas_next.store(n, Ordering::SeqCst);
    }

    /// How many `.get ingestion resources` were answered.
    pub fn resources_served(&self) -> usize {
        self.shared.resources_served.load(Ordering::SeqCst)
    }

    /// How many `.get kusto identity token` were answered.
    pub fn identity_tokens_served(&self) -> usize {
        self.shared.identities_served.load(Ordering::SeqCst)
    }

    /// The client's storage requests, in order.
    pub fn storage_requests(&self) -> Vec<StorageRequest> {
        self.shared.lock().storage_requests.clone()
    }

    /// Whether the worker is idle: both ingestion queues are empty.
    pub async fn queues_empty(&self) -> Result<bool> {
        for q in INGESTION_QUEUES {
            if !self.shared.azurite.peek_messages(q, 1).await?.is_empty() {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

// ---------------------------------------------------------------------------
// Management endpoint

fn v1_table(columns: &[(&str, &str)], rows: Vec<Value>) -> Value {
    let cols: Vec<Value> = columns
        .iter()
        .map(|(name, ty)| json!({"ColumnName": name, "DataType": dotnet(ty), "ColumnType": ty}))
        .collect();
    json!({"Tables": [{"TableName": "Table_0", "Columns": cols, "Rows": rows}]})
}

fn dotnet(ty: &str) -> &'static str {
    match ty {
        "string" => "String",
        "datetime" => "DateTime",
        _ => "Object",
    }
}

fn kusto_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {
            "code": code,
            "message": "Request is invalid and cannot be executed.",
            "@type": "Kusto.Common.Svc.Exceptions.AdminCommandWrongEndpointException",
            "@message": message,
            "@permanent": true
        }})),
    )
        .into_response()
}

async fn unknown_path(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let v = format!(
        "{} {}: not an endpoint of the data-management service",
        req.method(),
        req.uri().path()
    );
    s.violation(v.clone());
    kusto_error(StatusCode::NOT_FOUND, "NotFound", &v)
}

async fn mgmt_handler(State(s): State<Arc<Shared>>, headers: HeaderMap, req: Request) -> Response {
    let method = req.method().clone();
    let body = match axum::body::to_bytes(req.into_body(), 1 << 20).await {
        Ok(b) => b,
        Err(e) => {
            return kusto_error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("unreadable body: {e}"),
            )
        }
    };
    if let Some((status, fault)) = s.lock().mgmt_faults.pop_front() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (status, [("Content-Type", "application/json")], fault).into_response();
    }
    if method != axum::http::Method::POST {
        s.violation(format!(
            "{method} /v1/rest/mgmt: management commands are POSTed"
        ));
        return kusto_error(StatusCode::METHOD_NOT_ALLOWED, "BadRequest", "use POST");
    }
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    if let Err(why) = s.tokens.validate(auth) {
        if auth.is_none() {
            s.violation("/v1/rest/mgmt: no Authorization header".into());
        }
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(
                json!({"error": {"code": "Unauthorized", "message": why, "@permanent": true}}),
            ),
        )
            .into_response();
    }
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !ct.starts_with("application/json") {
        s.violation(format!(
            "/v1/rest/mgmt: Content-Type is '{ct}', not application/json"
        ));
    }
    // The headers every Kusto SDK request carries.
    for h in ["x-ms-client-request-id", "x-ms-app", "x-ms-version"] {
        if !headers.contains_key(h) {
            s.violation(format!("/v1/rest/mgmt: no {h} header"));
        }
    }
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            s.violation(format!("/v1/rest/mgmt: the body is not JSON: {e}"));
            return kusto_error(
                StatusCode::BAD_REQUEST,
                "BadRequest_InvalidJson",
                &e.to_string(),
            );
        }
    };
    let db = req.get("db").and_then(Value::as_str).unwrap_or_default();
    let csl = req
        .get("csl")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .trim();
    if db != "NetDefaultDB" {
        s.violation(format!("/v1/rest/mgmt '{csl}': db is '{db}', the SDKs send data-management commands to NetDefaultDB"));
    }
    let normalized: String = csl
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_lowercase();
    match normalized.as_str() {
        ".get ingestion resources" => {
            s.resources_served.fetch_add(1, Ordering::SeqCst);
            let expired = s
                .expired_sas_next
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            let expiry = if expired {
                SystemTime::now() - Duration::from_secs(60)
            } else {
                SystemTime::now() + Duration::from_secs(6 * 3600)
            };
            let expiry = DateTime::<Utc>::from(expiry);
            let sas = |perms: &str| s.azurite.account_sas_until(perms, expiry);
            let acct = super::azurite::ACCOUNT_NAME;
            let mut rows = Vec::new();
            for q in INGESTION_QUEUES {
                rows.push(json!([
                    "SecuredReadyForAggregationQueue",
                    format!("{}/{acct}/{q}?{}", s.queue_proxy, sas("a"))
                ]));
            }
            rows.push(json!([
                "SuccessfulIngestionsQueue",
                format!("{}/{acct}/{SUCCESS_QUEUE}?{}", s.queue_proxy, sas("rp"))
            ]));
            rows.push(json!([
                "FailedIngestionsQueue",
                format!("{}/{acct}/{FAILURE_QUEUE}?{}", s.queue_proxy, sas("rp"))
            ]));
            for c in CONTAINERS {
                rows.push(json!([
                    "TempStorage",
                    format!("{}/{acct}/{c}?{}", s.blob_proxy, sas("rw"))
                ]));
            }
            rows.push(json!([
                "IngestionsStatusTable",
                format!("{}/{acct}/{STATUS_TABLE}?{}", s.table_proxy, sas("raud"))
            ]));
            axum::Json(v1_table(
                &[("ResourceTypeName", "string"), ("StorageRoot", "string")],
                rows,
            ))
            .into_response()
        }
        ".get kusto identity token" => {
            s.identities_served.fetch_add(1, Ordering::SeqCst);
            let raw: [u8; 24] = rand::random();
            let token = format!(
                "<Token>{}</Token>",
                base64::engine::general_purpose::STANDARD.encode(raw)
            );
            s.lock().identities.push(token.clone());
            axum::Json(v1_table(
                &[("AuthorizationContext", "string")],
                vec![json!([token])],
            ))
            .into_response()
        }
        _ => {
            s.violation(format!(
                "/v1/rest/mgmt: '{csl}' is not a command the data-management service runs here"
            ));
            kusto_error(
                StatusCode::BAD_REQUEST,
                "BadRequest_SyntaxError",
                &format!("unknown command '{csl}'"),
            )
        }
    }
}

// ---------------------------------------------------------------------------
// Storage proxies

struct Proxy {
    shared: Arc<Shared>,
    service: &'static str,
    target: String,
}

fn storage_error_body(status: u16) -> (&'static str, &'static str) {
    match status {
        503 => (
            "ServerBusy",
            "The server is currently unable to receive requests. Please retry your request.",
        ),
        500 => (
            "InternalError",
            "The server encountered an internal error. Please retry the request.",
        ),
        403 => (
            "AuthenticationFailed",
            "Server failed to authenticate the request.",
        ),
        404 => ("ResourceNotFound", "The specified resource does not exist."),
        _ => ("InvalidInput", "One of the request inputs is not valid."),
    }
}

async fn proxy_handler(State(p): State<Arc<Proxy>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, format!("unreadable body: {e}")).into_response()
        }
    };
    let from_worker = parts.headers.contains_key(WORKER_HEADER);
    let path = parts.uri.path().to_owned();
    let method = parts.method.as_str().to_owned();
    if !from_worker {
        check_storage_request(&p, &method, &path, &parts.headers, &body);
        let fault = p.shared.lock().storage_faults.pop_front();
        if let Some(status) = fault {
            p.shared.lock().storage_requests.push(StorageRequest {
                service: p.service,
                method,
                path,
                status,
            });
            let (code, msg) = storage_error_body(status);
            let xml = format!(
                "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code><Message>{msg}\nRequestId:00000000-0000-0000-0000-000000000000\nTime:2026-01-01T00:00:00.0000000Z</Message></Error>"
            );
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return (status, [("Content-Type", "application/xml")], xml).into_response();
        }
    }
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let url = format!("{}{path}{query}", p.target);
    let Ok(m) = reqwest::Method::from_bytes(method.as_bytes()) else {
        return (StatusCode::METHOD_NOT_ALLOWED, "unknown method").into_response();
    };
    let mut fwd = p.shared.http.request(m, url);
    for (name, value) in &parts.headers {
        let n = name.as_str();
        if matches!(
            n,
            "host" | "content-length" | "connection" | "transfer-encoding"
        ) || n == WORKER_HEADER
        {
            continue;
        }
        fwd = fwd.header(name.as_str(), value.as_bytes());
    }
    let resp = match fwd.body(body).send().await {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_GATEWAY,
                format!("Azurite did not answer: {}", e.without_url()),
            )
                .into_response()
        }
    };
    let status = resp.status().as_u16();
    if !from_worker {
        p.shared.lock().storage_requests.push(StorageRequest {
            service: p.service,
            method: method.clone(),
            path: path.clone(),
            status,
        });
    }
    let mut builder = Response::builder().status(status);
    for (name, value) in resp.headers() {
        let n = name.as_str();
        if matches!(
            n,
            "content-length" | "connection" | "transfer-encoding" | "keep-alive"
        ) {
            continue;
        }
        builder = builder.header(n, value.as_bytes());
    }
    let bytes = resp.bytes().await.unwrap_or_default();
    builder
        .body(Body::from(bytes))
        .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}

/// Checks a client's storage request against the storage REST contract.
fn check_storage_request(p: &Proxy, method: &str, path: &str, headers: &HeaderMap, body: &[u8]) {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let label = format!("{} {method} {path}", p.service);
    if h("x-ms-version").is_none() {
        p.shared
            .violation(format!("{label}: no x-ms-version header"));
    }
    match (p.service, method) {
        ("blob", "PUT") => {
            if h("x-ms-blob-type").as_deref() != Some("BlockBlob") {
                p.shared.violation(format!(
                    "{label}: x-ms-blob-type is {:?}, not BlockBlob",
                    h("x-ms-blob-type")
                ));
            }
            match h("content-length").and_then(|v| v.parse::<usize>().ok()) {
                Some(n) if n == body.len() => {}
                other => p.shared.violation(format!(
                    "{label}: Content-Length {other:?} does not match the body's {} bytes",
                    body.len()
                )),
            }
            if body.len() < 2 || body[0] != 0x1f || body[1] != 0x8b {
                p.shared
                    .violation(format!("{label}: the blob is not gzip data"));
            }
        }
        ("queue", "POST") => {
            let text = String::from_utf8_lossy(body);
            let msgs = xml_elements(&text, "MessageText");
            if !text.trim_start().starts_with("<QueueMessage>") || msgs.len() != 1 {
                p.shared.violation(format!("{label}: the body is not <QueueMessage><MessageText>..</MessageText></QueueMessage>"));
            }
        }
        ("table", _) if h("dataserviceversion").is_none() => {
            p.shared.violation(format!(
                "{label}: no DataServiceVersion header (the Table service's JSON needs 3.0)"
            ));
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------
// Ingestion worker

async fn run_worker(s: Arc<Shared>) {
    loop {
        if !s.paused.load(Ordering::SeqCst) {
            for q in INGESTION_QUEUES {
                let msgs = match s.azurite.get_messages(q, 32, Duration::from_secs(60)).await {
                    Ok(m) => m,
                    Err(e) => {
                        s.violation(format!("the worker could not read queue {q}: {e:#}"));
                        continue;
                    }
                };
                for m in msgs {
                    process(&s, q, &m.text).await;
                    if let Err(e) = s.azurite.delete_message(q, &m).await {
                        s.violation(format!(
                            "the worker could not delete a message from {q}: {e:#}"
                        ));
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn mapping_kind(format: &str) -> Option<&'static str> {
    Some(match format {
        "csv" | "tsv" | "scsv" | "sohsv" | "psv" | "txt" | "tsve" | "raw" => "Csv",
        "json" | "singlejson" | "multijson" => "Json",
        "avro" => "Avro",
        "apacheavro" => "ApacheAvro",
        "parquet" => "Parquet",
        "orc" => "Orc",
        "sstream" => "SStream",
        "w3clogfile" => "W3CLogFile",
        _ => return None,
    })
}

/// A JSON array of strings serialized into a string, as the SDKs send
/// `tags` and `ingestIfNotExists`.
fn string_list(v: &Value, field: &str, errs: &mut Vec<String>) -> Vec<String> {
    let Some(text) = v.as_str() else {
        errs.push(format!(
            "AdditionalProperties.{field} is {v}, not a string holding a JSON array"
        ));
        return Vec::new();
    };
    match serde_json::from_str::<Vec<String>>(text) {
        Ok(l) => l,
        Err(e) => {
            errs.push(format!(
                "AdditionalProperties.{field} '{text}' is not a JSON array of strings: {e}"
            ));
            Vec::new()
        }
    }
}

async fn process(s: &Arc<Shared>, queue: &str, text: &str) {
    let decoded = match base64::engine::general_purpose::STANDARD.decode(text.trim()) {
        Ok(d) => d,
        Err(e) => {
            s.violation(format!("a message on {queue} is not base64: {e}"));
            return;
        }
    };
    let msg: Value = match serde_json::from_slice(&decoded) {
        Ok(v) => v,
        Err(e) => {
            s.violation(format!("a message on {queue} is not JSON: {e}"));
            return;
        }
    };
    s.lock().messages.push(msg.clone());
    let mut errs = Vec::new();
    let Some(obj) = msg.as_object() else {
        s.violation(format!("a message on {queue} is not a JSON object"));
        return;
    };
    for k in obj.keys() {
        if !KNOWN_FIELDS.contains(&k.as_str()) {
            errs.push(format!("unknown field '{k}'"));
        }
    }
    let str_field = |k: &str, errs: &mut Vec<String>| -> String {
        match obj.get(k).and_then(Value::as_str) {
            Some(v) if !v.is_empty() => v.to_owned(),
            _ => {
                errs.push(format!("{k} is missing or not a non-empty string"));
                String::new()
            }
        }
    };
    let id = str_field("Id", &mut errs);
    if !id.is_empty() && !is_uuid(&id) {
        errs.push(format!("Id '{id}' is not a UUID"));
    }
    let blob_path = str_field("BlobPath", &mut errs);
    let db = str_field("DatabaseName", &mut errs);
    let table = str_field("TableName", &mut errs);
    let raw_size = obj.get("RawDataSize").and_then(Value::as_u64);
    if raw_size.is_none() {
        errs.push("RawDataSize is missing or not a non-negative integer".into());
    }
    for k in ["RetainBlobOnSuccess", "FlushImmediately"] {
        if !obj.get(k).is_some_and(Value::is_boolean) {
            errs.push(format!("{k} is missing or not a boolean"));
        }
    }
    if obj.get("IgnoreSizeLimit").is_some_and(|v| !v.is_boolean()) {
        errs.push("IgnoreSizeLimit is not a boolean".into());
    }
    let level = obj
        .get("ReportLevel")
        .and_then(Value::as_u64)
        .filter(|l| *l <= 2);
    let method = obj
        .get("ReportMethod")
        .and_then(Value::as_u64)
        .filter(|m| *m <= 2);
    if level.is_none() {
        errs.push(format!(
            "ReportLevel {:?} is not 0 (FailuresOnly), 1 (DoNotReport) or 2 (FailuresAndSuccesses)",
            obj.get("ReportLevel")
        ));
    }
    if method.is_none() {
        errs.push(format!(
            "ReportMethod {:?} is not 0 (Queue), 1 (Table) or 2 (QueueAndTable)",
            obj.get("ReportMethod")
        ));
    }
    let (level, method) = (level.unwrap_or(0), method.unwrap_or(0));
    match obj.get("SourceMessageCreationTime").and_then(Value::as_str) {
        Some(t)
            if DateTime::parse_from_rfc3339(t).is_ok()
                || chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f").is_ok() => {}
        other => errs.push(format!(
            "SourceMessageCreationTime {other:?} is not an ISO 8601 time"
        )),
    }

    let empty = Map::new();
    let props = match obj.get("AdditionalProperties").and_then(Value::as_object) {
        Some(p) => p,
        None => {
            errs.push("AdditionalProperties is missing or not an object".into());
            &empty
        }
    };
    for (k, v) in props {
        if !v.is_string() {
            errs.push(format!("AdditionalProperties.{k} is {v}: the SDKs send every additional property as a string"));
        }
    }
    let prop = |k: &str| props.get(k).and_then(Value::as_str);
    match prop("authorizationContext") {
        None => errs.push("AdditionalProperties.authorizationContext is missing".into()),
        Some(a) if !s.lock().identities.iter().any(|i| i == a) => errs.push(
            "AdditionalProperties.authorizationContext is not a token this service issued".into(),
        ),
        Some(_) => {}
    }
    let format = prop("format").unwrap_or_default().to_owned();
    let kind = mapping_kind(&format);
    if kind.is_none() {
        errs.push(format!(
            "AdditionalProperties.format '{format}' is not a Kusto ingestion format"
        ));
    }
    let mapping = prop("ingestionMappingReference").map(str::to_owned);
    match (&mapping, prop("ingestionMappingType")) {
        (Some(_), Some(t)) if Some(t) != kind => errs.push(format!(
            "AdditionalProperties.ingestionMappingType '{t}' does not match format '{format}' (expected {kind:?})"
        )),
        (Some(_), None) => errs.push("AdditionalProperties.ingestionMappingReference without ingestionMappingType".into()),
        (None, Some(t)) => errs.push(format!("AdditionalProperties.ingestionMappingType '{t}' without a mapping reference")),
        _ => {}
    }
    let tags = props
        .get("tags")
        .map(|v| string_list(v, "tags", &mut errs))
        .unwrap_or_default();
    let if_not_exists = props
        .get("ingestIfNotExists")
        .map(|v| string_list(v, "ingestIfNotExists", &mut errs))
        .unwrap_or_default();

    // Table reporting needs the row the client inserted.
    let wants_table = level != 1 && method != 0;
    let status_row = match obj.get("IngestionStatusInTable") {
        Some(t) if wants_table => {
            let pk = t
                .get("PartitionKey")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let rk = t.get("RowKey").and_then(Value::as_str).unwrap_or_default();
            let conn = t
                .get("TableConnectionString")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if pk != id || rk != id {
                errs.push(format!(
                    "IngestionStatusInTable keys ({pk}, {rk}) are not the message Id {id}"
                ));
            }
            let table_base = format!(
                "{}/{}/{STATUS_TABLE}",
                s.table_proxy,
                super::azurite::ACCOUNT_NAME
            );
            if conn.split('?').next() != Some(table_base.as_str()) {
                errs.push(format!(
                    "IngestionStatusInTable.TableConnectionString is not the status table handed out ({})",
                    conn.split('?').next().unwrap_or_default()
                ));
            }
            match s.azurite.get_entity(STATUS_TABLE, pk, rk).await {
                Ok(Some(row)) if row.get("Status").and_then(Value::as_str) == Some("Pending") => {}
                Ok(Some(row)) => errs.push(format!(
                    "the status row of {id} is not Pending before ingestion: {row}"
                )),
                Ok(None) => errs.push(format!(
                    "no status row ({pk}, {rk}) was inserted before the message was posted"
                )),
                Err(e) => errs.push(format!("reading the status row of {id}: {e:#}")),
            }
            Some((pk.to_owned(), rk.to_owned()))
        }
        Some(_) => {
            errs.push("IngestionStatusInTable is set but ReportLevel/ReportMethod do not ask for table reporting".into());
            None
        }
        None if wants_table => {
            errs.push(
                "ReportMethod asks for table reporting but IngestionStatusInTable is missing"
                    .into(),
            );
            None
        }
        None => None,
    };

    // The blob, read through its BlobPath as the service reads it.
    let blob_base = blob_path.split('?').next().unwrap_or_default().to_owned();
    if !format.is_empty() && !blob_base.ends_with(&format!(".{format}.gz")) {
        errs.push(format!(
            "the blob name of {blob_base} does not end with .{format}.gz"
        ));
    }
    let data = read_blob(s, &blob_path, &mut errs).await;
    if let (Some(d), Some(n)) = (&data, raw_size) {
        if d.len() as u64 != n {
            errs.push(format!(
                "RawDataSize {n} is not the blob's uncompressed size {}",
                d.len()
            ));
        }
    }

    let outcome: Result<IngestOutcome, (String, String)> = match data {
        None => Err((
            "BadRequest_InvalidBlob".into(),
            "the blob could not be read or decompressed".into(),
        )),
        Some(d) => {
            let into = IngestInto {
                db: db.clone(),
                table: table.clone(),
                format: format.clone(),
                mapping: mapping.clone(),
                tags,
                ingest_if_not_exists: if_not_exists,
            };
            s.store
                .ingest(&into, &d)
                .map_err(|e| ("BadRequest_InvalidData".into(), e))
        }
    };
    {
        let mut st = s.lock();
        for e in errs {
            st.violations.push(format!("message {id}: {e}"));
        }
        st.outcomes.insert(
            id.clone(),
            match &outcome {
                Ok(IngestOutcome::Ingested { .. }) => "Succeeded".into(),
                Ok(IngestOutcome::Skipped) => "Skipped".into(),
                Err((_, d)) => format!("Failed: {d}"),
            },
        );
    }
    report(
        s, &id, &db, &table, &blob_base, level, method, status_row, &outcome,
    )
    .await;
}

async fn read_blob(s: &Shared, blob_path: &str, errs: &mut Vec<String>) -> Option<Vec<u8>> {
    if blob_path.is_empty() {
        return None;
    }
    let resp = match s
        .http
        .get(blob_path)
        .header(WORKER_HEADER, "1")
        .header("x-ms-version", "2021-08-06")
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => {
            errs.push(format!("BlobPath is not reachable: {}", e.without_url()));
            return None;
        }
    };
    if resp.status().as_u16() != 200 {
        errs.push(format!(
            "BlobPath {} answered {} (is its SAS readable?)",
            blob_path.split('?').next().unwrap_or_default(),
            resp.status()
        ));
        return None;
    }
    let gz = resp.bytes().await.ok()?;
    let mut out = Vec::new();
    match flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut out) {
        Ok(_) => Some(out),
        Err(e) => {
            errs.push(format!("the blob is not valid gzip: {e}"));
            None
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn report(
    s: &Shared,
    id: &str,
    db: &str,
    table: &str,
    blob: &str,
    level: u64,
    method: u64,
    status_row: Option<(String, String)>,
    outcome: &Result<IngestOutcome, (String, String)>,
) {
    let failed = outcome.is_err();
    // FailuresOnly reports failures; FailuresAndSuccesses everything;
    // DoNotReport nothing.
    let report = match level {
        0 => failed,
        2 => true,
        _ => false,
    };
    if !report {
        return;
    }
    let now = DateTime::<Utc>::from(SystemTime::now()).to_rfc3339();
    if method == 1 || method == 2 {
        if let Some((pk, rk)) = &status_row {
            let mut props = Map::new();
            let (status, details, code) = match outcome {
                Ok(IngestOutcome::Ingested { .. }) => {
                    ("Succeeded", String::new(), "None".to_owned())
                }
                Ok(IngestOutcome::Skipped) => (
                    "Skipped",
                    "an extent with a matching ingest-by tag exists".into(),
                    "None".into(),
                ),
                Err((code, d)) => ("Failed", d.clone(), code.clone()),
            };
            props.insert("Status".into(), status.into());
            props.insert("Details".into(), details.into());
            props.insert("ErrorCode".into(), code.into());
            if failed {
                props.insert("FailureStatus".into(), "Permanent".into());
            }
            props.insert("UpdatedOn".into(), now.clone().into());
            props.insert("OperationId".into(), uuid4().into());
            if let Err(e) = s.azurite.merge_entity(STATUS_TABLE, pk, rk, props).await {
                s.violation(format!("writing the status row of {id}: {e:#}"));
            }
        }
    }
    if method == 0 || method == 2 {
        let (queue, body) = match outcome {
            Err((code, d)) => (
                FAILURE_QUEUE,
                json!({"OperationId": uuid4(), "Database": db, "Table": table, "FailedOn": now,
                       "IngestionSourceId": id, "IngestionSourcePath": blob, "Details": d, "ErrorCode": code,
                       "FailureStatus": "Permanent", "OriginatesFromUpdatePolicy": false, "ShouldRetry": false}),
            ),
            Ok(_) => (
                SUCCESS_QUEUE,
                json!({"OperationId": uuid4(), "Database": db, "Table": table, "SucceededOn": now,
                       "IngestionSourceId": id, "IngestionSourcePath": blob}),
            ),
        };
        let text = base64::engine::general_purpose::STANDARD.encode(body.to_string());
        if let Err(e) = s.azurite.put_message(queue, &text).await {
            s.violation(format!("reporting {id} on {queue}: {e:#}"));
        }
    }
}

/// A random (version 4) UUID for the operation ids the service reports.
fn uuid4() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}
