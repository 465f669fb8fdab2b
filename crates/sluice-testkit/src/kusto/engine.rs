//! The local Azure Data Explorer engine and Azure AD token endpoint.
//!
//! One HTTP server on loopback answers:
//!
//! - `POST /{tenant}/oauth2/v2.0/token`: Azure AD's client credentials
//!   grant (`client_secret`, or `client_assertion` with the jwt-bearer
//!   assertion type), for the one application it knows
//!   ([`FakeEngine::tenant`], [`FakeEngine::app_id`],
//!   [`FakeEngine::app_key`]). Errors are Azure AD's: an unknown tenant is
//!   400 `AADSTS90002`, a wrong secret 401 `invalid_client`
//!   `AADSTS7000215`. Issued tokens remember their audience (the scope's
//!   resource) and expiry; the engine refuses (401) a missing, unknown,
//!   expired or wrongly addressed token.
//! - `POST /v1/rest/mgmt`: management commands, answered in the v1 shape
//!   (`{"Tables":[{"TableName","Columns":[{"ColumnName","DataType","ColumnType"}],"Rows"}]}`):
//!   `.show tables`, `.show table T cslschema`,
//!   `.show table T ingestion <kind> mappings`, `.show version`,
//!   `.create table T (c:type, ...)`, `.create-merge table`,
//!   `.alter-merge table`, `.create[-or-alter] table T ingestion json
//!   mapping 'name' '<json>'`, `.alter table|database X policy
//!   streamingingestion enable|disable`, `.show table T extents [where
//!   tags has|contains|!has|!contains 'X' [and ...]]` (ExtentId,
//!   DatabaseName, TableName, RowCount, and Tags separated by CR LF) and
//!   `.drop extents (id, ...) from T`. Anything else is a 400
//!   `BadRequest_SyntaxError`.
//! - `POST /v2/rest/query`: `T`, `T | count`, `T | take N` (`limit N`),
//!   each optionally ending in `| render <kind>`, answered as v2 frames
//!   (`DataSetHeader`, the `@ExtendedProperties` table with the
//!   `Visualization` property `render` sets, the `PrimaryResult` table,
//!   `DataSetCompletion`); `POST /v1/rest/query` answers the same in the v1
//!   shape.
//! - `POST /v1/rest/ingest/{db}/{table}?streamFormat=..&mappingName=..`:
//!   streaming ingestion into the [`Store`], the body gzipped when
//!   `Content-Encoding: gzip`; more than 4 MB of data is a 413, a table
//!   without the streaming policy a 400
//!   `BadRequest_StreamingIngestionPolicyNotEnabled`, as Kusto answers.
//!
//! Every request is checked against the documented contract (method, path,
//! `Content-Type`, `Accept`, `Authorization`, `x-ms-client-request-id`, the
//! JSON body `{"db","csl","properties"}`); a departure is recorded in
//! [`FakeEngine::violations`] and answered 400 (401 for a missing
//! `Authorization`). Errors use Kusto's OneApi shape
//! (`{"error":{"code","message","@type","@message","@permanent"}}`). An
//! unknown database is a 400 `BadRequest_EntityNotFound`; a principal
//! refused with [`Store::deny`] gets 403 `Forbidden`.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::store::{dotnet_type, IngestInto, IngestOutcome, Store};

/// The streaming ingestion limit the engine enforces on the uncompressed
/// data of one request.
pub const STREAMING_LIMIT_BYTES: usize = 4 * 1024 * 1024;
/// Decompressed bodies larger than this are not read (a gzip bomb guard).
const MAX_INFLATED: u64 = 64 * 1024 * 1024;
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const STREAM_FORMATS: &[&str] = &[
    "csv",
    "tsv",
    "scsv",
    "sohsv",
    "psv",
    "txt",
    "raw",
    "tsve",
    "json",
    "singlejson",
    "multijson",
    "avro",
    "apacheavro",
    "parquet",
    "orc",
    "w3clogfile",
];

/// One request the engine received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Path (percent-encoded, as sent).
    pub path: String,
    /// The query string, if any.
    pub query: Option<String>,
    /// Headers, lower-case names; `Authorization` reads `Bearer [redacted]`
    /// and form secrets are redacted in `body`.
    pub headers: Vec<(String, String)>,
    /// The body as text, decompressed when it was gzipped.
    pub body: String,
    /// The status the engine answered.
    pub status: u16,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

struct Fault {
    path_prefix: String,
    remaining: usize,
    status: u16,
    body: String,
    retry_after: Option<u64>,
}

struct Token {
    audience: String,
    app_id: String,
    expires_at: SystemTime,
}

#[derive(Default)]
struct Mutable {
    requests: Vec<RecordedRequest>,
    violations: Vec<String>,
    faults: Vec<Fault>,
    tokens: HashMap<String, Token>,
    issued: usize,
    token_lifetime: u64,
    audiences: Vec<String>,
}

struct Shared {
    url: String,
    tenant: String,
    app_id: String,
    app_key: String,
    assertion: String,
    store: Store,
    state: Mutex<Mutable>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Mutable> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn violation(&self, v: String) {
        self.lock().violations.push(v);
    }
}

/// The running engine; stops when dropped.
pub struct FakeEngine {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for FakeEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeEngine")
            .field("url", &self.shared.url)
            .finish()
    }
}

impl Drop for FakeEngine {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// A token answer checker other stand-ins (the data-management service)
/// share with the engine.
#[derive(Clone)]
pub struct TokenValidator {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for TokenValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenValidator").finish_non_exhaustive()
    }
}

impl TokenValidator {
    /// Checks an `Authorization` header value: a bearer token this server
    /// issued, unexpired, for an audience the engine accepts. Returns the
    /// application id it was issued to, or why it is refused.
    pub fn validate(&self, authorization: Option<&str>) -> std::result::Result<String, String> {
        check_token(&self.shared, authorization)
    }
}

fn check_token(s: &Shared, authorization: Option<&str>) -> std::result::Result<String, String> {
    let Some(value) = authorization else {
        return Err("the request has no Authorization header".into());
    };
    let Some(token) = value.strip_prefix("Bearer ") else {
        return Err("the Authorization header is not 'Bearer <token>'".into());
    };
    let st = s.lock();
    let Some(t) = st.tokens.get(token.trim()) else {
        return Err("the token was not issued by this tenant".into());
    };
    if SystemTime::now() >= t.expires_at {
        return Err("the token has expired".into());
    }
    if t.audience != s.url && !st.audiences.contains(&t.audience) {
        return Err(format!(
            "the token's audience '{}' is not this cluster ('{}')",
            t.audience, s.url
        ));
    }
    Ok(t.app_id.clone())
}

impl FakeEngine {
    /// Starts the engine on a free loopback port, serving `store`.
    pub async fn start(store: Store) -> Result<FakeEngine> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the fake Kusto engine to a loopback port")?;
        let addr = listener
            .local_addr()
            .context("reading the fake Kusto engine's address")?;
        let shared = Arc::new(Shared {
            url: format!("http://{addr}"),
            tenant: format!("tenant-{}", random_hex(4)),
            app_id: format!("app-{}", random_hex(4)),
            app_key: format!("key-{}", random_hex(12)),
            assertion: format!("assertion-{}", random_hex(12)),
            store,
            state: Mutex::new(Mutable {
                token_lifetime: 3599,
                ..Mutable::default()
            }),
        });
        let router = Router::new()
            .fallback(handle)
            .with_state(shared.clone())
            // Streaming requests up to and beyond the 4 MB limit must reach
            // the handler so it can answer as Kusto does.
            .layer(DefaultBodyLimit::max(64 * 1024 * 1024));
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                eprintln!("the fake Kusto engine stopped: {e}");
            }
        });
        Ok(FakeEngine { shared, task })
    }

    /// `http://127.0.0.1:PORT`: the cluster URL (`kusto.query.url`, also
    /// usable as `kusto.ingestion.url` for tests of the engine alone) and
    /// the authority host (`AZURE_AUTHORITY_HOST`) for tokens.
    pub fn url(&self) -> String {
        self.shared.url.clone()
    }

    /// The tenant the token endpoint knows.
    pub fn tenant(&self) -> &str {
        &self.shared.tenant
    }

    /// The application (client) id the token endpoint knows.
    pub fn app_id(&self) -> &str {
        &self.shared.app_id
    }

    /// The application's secret.
    pub fn app_key(&self) -> &str {
        &self.shared.app_key
    }

    /// The federated assertion the token endpoint accepts as
    /// `client_assertion` (workload identity).
    pub fn assertion(&self) -> &str {
        &self.shared.assertion
    }

    /// The model the engine serves.
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// A checker for tokens this engine's token endpoint issued.
    pub fn token_validator(&self) -> TokenValidator {
        TokenValidator {
            shared: self.shared.clone(),
        }
    }

    /// Accepts tokens issued for `audience` (a cluster URL, e.g. the
    /// data-management stand-in's) besides the engine's own URL.
    pub fn accept_audience(&self, audience: &str) {
        self.shared
            .lock()
            .audiences
            .push(audience.trim_end_matches('/').to_owned());
    }

    /// A valid token for the engine, issued without the token endpoint
    /// (for a static `aad.auth.accesstoken`).
    pub fn mint_token(&self) -> String {
        issue(&self.shared, &self.shared.url, &self.shared.app_id).0
    }

    /// How many tokens the token endpoint (or [`FakeEngine::mint_token`])
    /// issued.
    pub fn tokens_issued(&self) -> usize {
        self.shared.lock().issued
    }

    /// Makes every token issued so far expired: the engine refuses them
    /// with 401 from now on.
    pub fn expire_tokens(&self) {
        let past = SystemTime::now()
            .checked_sub(Duration::from_secs(1))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        for t in self.shared.lock().tokens.values_mut() {
            t.expires_at = past;
        }
    }

    /// `expires_in` of tokens issued from now on.
    pub fn set_token_lifetime(&self, seconds: u64) {
        self.shared.lock().token_lifetime = seconds;
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Contract violations seen, each naming the request and what was wrong.
    pub fn violations(&self) -> Vec<String> {
        self.shared.lock().violations.clone()
    }

    /// Fault injection: the next `n` requests whose path starts with
    /// `path_prefix` are answered `status` with `body` (JSON when it parses
    /// as JSON, else text), after the contract check and before
    /// authentication.
    pub fn fail_next(&self, path_prefix: &str, n: usize, status: u16, body: &str) {
        self.push_fault(path_prefix, n, status, body, None);
    }

    /// [`FakeEngine::fail_next`] with a `Retry-After` header of
    /// `retry_after_secs`.
    pub fn fail_next_with_retry_after(
        &self,
        path_prefix: &str,
        n: usize,
        status: u16,
        body: &str,
        retry_after_secs: u64,
    ) {
        self.push_fault(path_prefix, n, status, body, Some(retry_after_secs));
    }

    fn push_fault(
        &self,
        path_prefix: &str,
        n: usize,
        status: u16,
        body: &str,
        retry_after: Option<u64>,
    ) {
        self.shared.lock().faults.push(Fault {
            path_prefix: path_prefix.to_owned(),
            remaining: n,
            status,
            body: body.to_owned(),
            retry_after,
        });
    }

    /// Turns the streaming ingestion policy of a table on or off (an empty
    /// `table`: the database's).
    pub fn set_streaming_enabled(&self, db: &str, table: &str, enabled: bool) {
        self.shared.store.set_streaming_enabled(db, table, enabled);
    }
}

fn issue(s: &Shared, audience: &str, app_id: &str) -> (String, u64) {
    let mut st = s.lock();
    st.issued += 1;
    let claims = json!({"aud": audience, "appid": app_id, "n": st.issued});
    let token = format!(
        "fake.{}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string()),
        random_hex(16)
    );
    let lifetime = st.token_lifetime;
    st.tokens.insert(
        token.clone(),
        Token {
            audience: audience.to_owned(),
            app_id: app_id.to_owned(),
            expires_at: SystemTime::now() + Duration::from_secs(lifetime),
        },
    );
    (token, lifetime)
}

/// A OneApi error body, as Kusto sends.
fn kusto_error(status: StatusCode, code: &str, ty: &str, message: &str) -> Response {
    let generic = match status.as_u16() {
        400 => "Request is invalid and cannot be executed.",
        401 => "Unauthorized",
        403 => "Caller is not authorized to perform this operation.",
        404 => "Not found",
        413 => "Request entity too large",
        _ => "Internal error",
    };
    let body = json!({"error": {
        "code": code,
        "message": generic,
        "@type": ty,
        "@message": message,
        "@context": {"timestamp": "", "serviceAlias": "SLUICE-FAKE"},
        "@permanent": status.as_u16() < 500,
    }});
    (status, axum::Json(body)).into_response()
}

fn aad_error(status: StatusCode, error: &str, code: u32, description: &str) -> Response {
    let body = json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {description}"),
        "error_codes": [code],
        "timestamp": "",
        "trace_id": random_hex(16),
        "correlation_id": random_hex(16),
    });
    (status, axum::Json(body)).into_response()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `application/x-www-form-urlencoded` pairs.
fn parse_form(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The path decoded segment by segment (`+` stays a plus in paths).
fn decode_segment(s: &str) -> String {
    percent_decode(&s.replace('+', "%2B"))
}

async fn handle(
    State(s): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let query = uri.query().map(str::to_owned);
    let encoding = header(&headers, "content-encoding").map(|v| v.trim().to_ascii_lowercase());
    let inflated = match encoding.as_deref() {
        Some("gzip") => Some(inflate(flate2::read::GzDecoder::new(&body[..]))),
        Some("deflate") => Some(inflate(flate2::read::DeflateDecoder::new(&body[..]))),
        _ => None,
    };
    let response = route(
        &s,
        &method,
        &path,
        query.as_deref(),
        &headers,
        &body,
        inflated.as_ref(),
    )
    .await;
    let text = match &inflated {
        Some(Ok(data)) => String::from_utf8_lossy(data).into_owned(),
        _ => String::from_utf8_lossy(&body).into_owned(),
    };
    let recorded = RecordedRequest {
        method: method.to_string(),
        path,
        query,
        headers: headers
            .iter()
            .map(|(n, v)| {
                let name = n.as_str().to_ascii_lowercase();
                let value = if name == "authorization" {
                    "Bearer [redacted]".to_owned()
                } else {
                    v.to_str().unwrap_or("<binary>").to_owned()
                };
                (name, value)
            })
            .collect(),
        body: redact_form(&text),
        status: response.status().as_u16(),
    };
    s.lock().requests.push(recorded);
    response
}

fn redact_form(text: &str) -> String {
    if !text.contains("client_secret=") && !text.contains("client_assertion=") {
        return text.to_owned();
    }
    text.split('&')
        .map(|p| {
            if p.starts_with("client_secret=") {
                "client_secret=[redacted]".to_owned()
            } else if p.starts_with("client_assertion=") {
                "client_assertion=[redacted]".to_owned()
            } else {
                p.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn inflate(decoder: impl Read) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::new();
    decoder
        .take(MAX_INFLATED)
        .read_to_end(&mut out)
        .map(|_| out)
        .map_err(|e| e.to_string())
}

async fn route(
    s: &Arc<Shared>,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
    inflated: Option<&std::result::Result<Vec<u8>, String>>,
) -> Response {
    let label = format!("{method} {path}");
    let bad = |why: String| -> Response {
        s.violation(format!("{label}: {why}"));
        kusto_error(
            StatusCode::BAD_REQUEST,
            "BadRequest_InvalidRequest",
            "Kusto.Common.Svc.Exceptions.BadRequestException",
            &why,
        )
    };
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // The token endpoint: /{tenant}/oauth2/v2.0/token.
    if segments.len() == 4
        && segments[1] == "oauth2"
        && segments[2] == "v2.0"
        && segments[3] == "token"
    {
        return token_endpoint(s, &label, method, segments[0], headers, body);
    }
    let kind = match path {
        "/v1/rest/mgmt" => Endpoint::Mgmt,
        "/v2/rest/query" | "/v1/rest/query" => Endpoint::Query,
        _ if path.starts_with("/v1/rest/ingest/") => Endpoint::Ingest,
        _ => return bad(format!("no such endpoint: {path}")),
    };
    if method != Method::POST {
        return bad(format!(
            "{method} is not the method for this endpoint (POST)"
        ));
    }
    if header(headers, "x-ms-client-request-id").is_none_or(|v| v.trim().is_empty()) {
        return bad("x-ms-client-request-id is missing".into());
    }
    if let Some(v) = header(headers, "x-ms-client-version") {
        if v.trim().is_empty() {
            return bad("x-ms-client-version is empty".into());
        }
    }
    let auth = header(headers, "authorization");
    if auth.is_none_or(|a| !a.starts_with("Bearer ") || a.len() <= "Bearer ".len()) {
        s.violation(format!(
            "{label}: Authorization is missing or not 'Bearer <token>'"
        ));
        return unauthorized("the request has no bearer token");
    }
    match kind {
        Endpoint::Mgmt | Endpoint::Query => {
            if let Err(why) = check_json_headers(headers) {
                return bad(why);
            }
        }
        Endpoint::Ingest => {
            if let Some(enc) = header(headers, "content-encoding") {
                let enc = enc.trim().to_ascii_lowercase();
                if enc != "gzip" && enc != "deflate" {
                    return bad(format!("Content-Encoding '{enc}' is not gzip or deflate"));
                }
            }
        }
    }
    let data: Vec<u8> = match inflated {
        Some(Ok(d)) => d.clone(),
        Some(Err(e)) => {
            return bad(format!(
                "the body is marked gzip but does not decompress: {e}"
            ))
        }
        None => body.to_vec(),
    };
    // Parse the request before injecting faults, so a departure is always
    // seen.
    let request = match kind {
        Endpoint::Mgmt | Endpoint::Query => match parse_json_body(&data) {
            Ok(r) => Parsed::Json(r),
            Err(why) => return bad(why),
        },
        Endpoint::Ingest => match parse_ingest(path, query) {
            Ok(r) => Parsed::Ingest(r),
            Err(why) => return bad(why),
        },
    };
    if let Some(r) = injected_fault(s, path) {
        return r;
    }
    let principal = match check_token(s, auth) {
        Ok(p) => p,
        Err(why) => return unauthorized(&why),
    };
    match request {
        Parsed::Json((db, csl)) => {
            if kind == Endpoint::Mgmt {
                mgmt(s, &principal, &db, &csl)
            } else {
                run_query(s, &principal, &db, &csl, path == "/v1/rest/query")
            }
        }
        Parsed::Ingest(r) => ingest(s, &principal, &r, &data),
    }
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Endpoint {
    Mgmt,
    Query,
    Ingest,
}

enum Parsed {
    Json((String, String)),
    Ingest(IngestRequest),
}

struct IngestRequest {
    db: String,
    table: String,
    format: String,
    mapping: Option<String>,
}

fn unauthorized(why: &str) -> Response {
    let mut r = kusto_error(
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        "Kusto.Common.Svc.Exceptions.UnauthorizedOperationException",
        why,
    );
    r.headers_mut().insert(
        "www-authenticate",
        HeaderValue::from_static("Bearer authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\""),
    );
    r
}

fn injected_fault(s: &Shared, path: &str) -> Option<Response> {
    let mut st = s.lock();
    let f = st
        .faults
        .iter_mut()
        .find(|f| f.remaining > 0 && path.starts_with(&f.path_prefix))?;
    f.remaining -= 1;
    let status = StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let is_json = serde_json::from_str::<Value>(&f.body).is_ok();
    let mut r = (status, f.body.clone()).into_response();
    let ct = if is_json {
        "application/json; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static(ct));
    if let Some(secs) = f.retry_after {
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            r.headers_mut().insert("retry-after", v);
        }
    }
    st.faults.retain(|f| f.remaining > 0);
    Some(r)
}

fn check_json_headers(headers: &HeaderMap) -> std::result::Result<(), String> {
    let ct = header(headers, "content-type").ok_or("Content-Type is missing")?;
    let mut parts = ct.split(';').map(str::trim);
    if !parts
        .next()
        .is_some_and(|m| m.eq_ignore_ascii_case("application/json"))
    {
        return Err(format!("Content-Type is '{ct}', not application/json"));
    }
    for p in parts {
        if let Some(cs) = p.to_ascii_lowercase().strip_prefix("charset=") {
            if cs.trim_matches('"') != "utf-8" {
                return Err(format!("Content-Type charset is '{cs}', not utf-8"));
            }
        }
    }
    let accept = header(headers, "accept")
        .ok_or("Accept is missing (the REST API requires application/json)")?;
    if !accept.contains("application/json") && !accept.contains("*/*") {
        return Err(format!("Accept is '{accept}', not application/json"));
    }
    Ok(())
}

fn parse_json_body(data: &[u8]) -> std::result::Result<(String, String), String> {
    let v: Value =
        serde_json::from_slice(data).map_err(|e| format!("the body is not JSON: {e}"))?;
    let obj = v.as_object().ok_or("the body is not a JSON object")?;
    for k in obj.keys() {
        if !matches!(k.as_str(), "db" | "csl" | "properties") {
            return Err(format!("the body has an unknown property '{k}'"));
        }
    }
    let db = obj
        .get("db")
        .and_then(Value::as_str)
        .ok_or("the body has no string 'db'")?;
    let csl = obj
        .get("csl")
        .and_then(Value::as_str)
        .ok_or("the body has no string 'csl'")?;
    match obj.get("properties") {
        None | Some(Value::Object(_)) | Some(Value::Null) => {}
        Some(Value::String(p)) => {
            serde_json::from_str::<Value>(p)
                .map_err(|e| format!("'properties' is a string but not JSON: {e}"))?;
        }
        Some(other) => return Err(format!("'properties' is {other}, not an object")),
    }
    Ok((db.to_owned(), csl.to_owned()))
}

fn parse_ingest(path: &str, query: Option<&str>) -> std::result::Result<IngestRequest, String> {
    let rest = path.trim_start_matches("/v1/rest/ingest/");
    let parts: Vec<&str> = rest.split('/').collect();
    if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
        return Err(format!(
            "the path is not /v1/rest/ingest/{{database}}/{{table}}: {path}"
        ));
    }
    let mut format = None;
    let mut mapping = None;
    for (k, v) in parse_form(query.unwrap_or_default()) {
        match k.as_str() {
            "streamFormat" => format = Some(v),
            "mappingName" => mapping = Some(v),
            other => return Err(format!("unknown query parameter '{other}'")),
        }
    }
    let format = format.ok_or("streamFormat is missing")?;
    if !STREAM_FORMATS.contains(&format.to_ascii_lowercase().as_str()) {
        return Err(format!(
            "streamFormat '{format}' is not a Kusto data format"
        ));
    }
    if mapping.as_deref() == Some("") {
        return Err("mappingName is empty".into());
    }
    Ok(IngestRequest {
        db: decode_segment(parts[0]),
        table: decode_segment(parts[1]),
        format,
        mapping,
    })
}

fn token_endpoint(
    s: &Shared,
    label: &str,
    method: &Method,
    tenant: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let bad = |why: String| -> Response {
        s.violation(format!("{label}: {why}"));
        aad_error(StatusCode::BAD_REQUEST, "invalid_request", 900144, &why)
    };
    if method != Method::POST {
        return bad(format!(
            "{method} is not the method for the token endpoint (POST)"
        ));
    }
    let ct = header(headers, "content-type").unwrap_or_default();
    if !ct.split(';').next().is_some_and(|m| {
        m.trim()
            .eq_ignore_ascii_case("application/x-www-form-urlencoded")
    }) {
        return bad(format!(
            "Content-Type is '{ct}', not application/x-www-form-urlencoded"
        ));
    }
    let form = parse_form(&String::from_utf8_lossy(body));
    let mut fields: HashMap<&str, &str> = HashMap::new();
    for (k, v) in &form {
        if fields.insert(k.as_str(), v.as_str()).is_some() {
            return bad(format!("the form repeats '{k}'"));
        }
    }
    for k in fields.keys() {
        if !matches!(
            *k,
            "grant_type"
                | "client_id"
                | "client_secret"
                | "scope"
                | "client_assertion"
                | "client_assertion_type"
        ) {
            return bad(format!("the form has an unexpected field '{k}'"));
        }
    }
    if tenant != s.tenant {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &format!("Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."),
        );
    }
    if fields.get("grant_type") != Some(&"client_credentials") {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type; this endpoint issues client_credentials tokens.",
        );
    }
    let Some(client_id) = fields.get("client_id") else {
        return bad("client_id is missing".into());
    };
    let Some(scope) = fields.get("scope") else {
        return bad("scope is missing".into());
    };
    let Some(resource) = scope.strip_suffix("/.default") else {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            &format!("The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."),
        );
    };
    if *client_id != s.app_id {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!("Application with identifier '{client_id}' was not found in the directory '{tenant}'."),
        );
    }
    let secret = fields.get("client_secret");
    let assertion = fields.get("client_assertion");
    let authenticated = match (secret, assertion) {
        (Some(sec), None) => *sec == s.app_key,
        (None, Some(a)) => {
            if fields.get("client_assertion_type") != Some(&JWT_BEARER) {
                return bad(format!("client_assertion_type is not {JWT_BEARER}"));
            }
            *a == s.assertion
        }
        (Some(_), Some(_)) => return bad("both client_secret and client_assertion are given".into()),
        (None, None) => {
            return aad_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            )
        }
    };
    if !authenticated {
        return aad_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            &format!("Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."),
        );
    }
    let (token, lifetime) = issue(s, resource.trim_end_matches('/'), client_id);
    axum::Json(json!({
        "token_type": "Bearer",
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": token,
    }))
    .into_response()
}

// ---------------------------------------------------------------------------
// Management commands

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Name(String),
    Str(String),
    Punct(char),
}

fn tokenize(csl: &str) -> std::result::Result<Vec<Tok>, String> {
    let chars: Vec<char> = csl.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        // Bracketed names: ['x'] or ["x"].
        if c == '[' && matches!(chars.get(i + 1), Some('\'') | Some('"')) {
            let (s, next) = string_literal(&chars, i + 1)?;
            if chars.get(next) != Some(&']') {
                return Err("a bracketed name is not closed with ]".into());
            }
            out.push(Tok::Name(s));
            i = next + 1;
            continue;
        }
        if c == '\'' || c == '"' {
            let (s, next) = string_literal(&chars, i)?;
            out.push(Tok::Str(s));
            i = next;
            continue;
        }
        // Obfuscated literals (h'..', h@'..') read like the plain ones.
        let (c, i0) = if matches!(c, 'h' | 'H')
            && matches!(chars.get(i + 1), Some('\'' | '"' | '@'))
            && matches!(chars.get(i + 2), Some('\'' | '"')) == (chars.get(i + 1) == Some(&'@'))
        {
            (chars[i + 1], i + 1)
        } else {
            (c, i)
        };
        if c == '\'' || c == '"' {
            let (s, next) = string_literal(&chars, i0)?;
            out.push(Tok::Str(s));
            i = next;
            continue;
        }
        // Verbatim literals: @'..' with '' for a quote.
        if c == '@' && matches!(chars.get(i0 + 1), Some('\'' | '"')) {
            let q = chars[i0 + 1];
            let mut j = i0 + 2;
            let mut s = String::new();
            loop {
                match chars.get(j) {
                    None => return Err("a verbatim string literal is not closed".into()),
                    Some(&ch) if ch == q && chars.get(j + 1) == Some(&q) => {
                        s.push(q);
                        j += 2;
                    }
                    Some(&ch) if ch == q => break,
                    Some(&ch) => {
                        s.push(ch);
                        j += 1;
                    }
                }
            }
            out.push(Tok::Str(s));
            i = j + 1;
            continue;
        }
        if c.is_alphanumeric() || c == '_' || c == '.' || c == '-' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '.' | '-'))
            {
                i += 1;
            }
            out.push(Tok::Word(chars[start..i].iter().collect()));
            continue;
        }
        out.push(Tok::Punct(c));
        i += 1;
    }
    Ok(out)
}

/// A quoted literal with backslash escapes starting at `chars[start]`;
/// returns it and the index after the closing quote.
fn string_literal(chars: &[char], start: usize) -> std::result::Result<(String, usize), String> {
    let q = chars[start];
    let mut s = String::new();
    let mut j = start + 1;
    loop {
        match chars.get(j) {
            None => return Err("a string literal is not closed".into()),
            Some('\\') => {
                let e = chars
                    .get(j + 1)
                    .ok_or("a string literal ends in a backslash")?;
                match e {
                    'n' => s.push('\n'),
                    'r' => s.push('\r'),
                    't' => s.push('\t'),
                    'u' => {
                        let hex: String = chars
                            .get(j + 2..j + 6)
                            .ok_or("a bad \\u escape")?
                            .iter()
                            .collect();
                        let code = u32::from_str_radix(&hex, 16).map_err(|_| "a bad \\u escape")?;
                        s.push(char::from_u32(code).ok_or("a bad \\u escape")?);
                        j += 4;
                    }
                    other => s.push(*other),
                }
                j += 2;
            }
            Some(&c) if c == q => return Ok((s, j + 1)),
            Some(&c) => {
                s.push(c);
                j += 1;
            }
        }
    }
}

fn word_is(t: Option<&Tok>, w: &str) -> bool {
    matches!(t, Some(Tok::Word(x)) if x.eq_ignore_ascii_case(w))
}

fn name_of(t: Option<&Tok>) -> Option<String> {
    match t {
        Some(Tok::Word(w)) | Some(Tok::Name(w)) => Some(w.clone()),
        _ => None,
    }
}

fn syntax_error(why: &str) -> Response {
    kusto_error(
        StatusCode::BAD_REQUEST,
        "BadRequest_SyntaxError",
        "Kusto.Data.Exceptions.SyntaxException",
        &format!("Syntax error: {why}"),
    )
}

fn entity_not_found(kind: &str, name: &str) -> Response {
    kusto_error(
        StatusCode::BAD_REQUEST,
        "BadRequest_EntityNotFound",
        "Kusto.Data.Exceptions.EntityNotFoundException",
        &format!("Entity ID '{name}' of kind '{kind}' was not found."),
    )
}

fn forbidden(principal: &str, tenant: &str, db: &str, action: &str) -> Response {
    kusto_error(
        StatusCode::FORBIDDEN,
        "Forbidden",
        "Kusto.DataNode.Exceptions.UnauthorizedDatabaseAccessException",
        &format!("Principal 'aadapp={principal};{tenant}' is not authorized to {action} database '{db}'."),
    )
}

fn bad_request(code: &str, ty: &str, message: &str) -> Response {
    kusto_error(StatusCode::BAD_REQUEST, code, ty, message)
}

/// The `DataType` of a v1 column: the .NET type's short name.
fn v1_data_type(t: &str) -> &'static str {
    match t {
        "bool" => "Boolean",
        "decimal" => "Decimal",
        other => dotnet_type(other).trim_start_matches("System."),
    }
}

/// A v1 response with one table.
fn v1(columns: &[(&str, &str)], rows: Vec<Vec<Value>>) -> Response {
    let cols: Vec<Value> = columns
        .iter()
        .map(|(n, t)| json!({"ColumnName": n, "DataType": v1_data_type(t), "ColumnType": t}))
        .collect();
    axum::Json(json!({"Tables": [{"TableName": "Table_0", "Columns": cols, "Rows": rows}]}))
        .into_response()
}

fn check_db(s: &Shared, principal: &str, db: &str, action: &str) -> Option<Response> {
    if !s.store.has_database(db) {
        return Some(entity_not_found("Database", db));
    }
    if s.store.is_denied(principal, db) {
        return Some(forbidden(principal, &s.tenant, db, action));
    }
    None
}

/// `name:type,...` as `cslschema` shows it; names that are not plain
/// identifiers in brackets.
fn schema_text(columns: &[(String, String)]) -> String {
    columns
        .iter()
        .map(|(n, t)| {
            let plain = n
                .chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_')
                && n.chars().all(|c| c.is_alphanumeric() || c == '_');
            if plain {
                format!("{n}:{t}")
            } else {
                format!("['{}']:{t}", n.replace('\\', "\\\\").replace('\'', "\\'"))
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn schema_row(db: &str, table: &str, columns: &[(String, String)]) -> Response {
    v1(
        &[
            ("TableName", "string"),
            ("Schema", "string"),
            ("DatabaseName", "string"),
            ("Folder", "string"),
            ("DocString", "string"),
        ],
        vec![vec![
            json!(table),
            json!(schema_text(columns)),
            json!(db),
            Value::Null,
            Value::Null,
        ]],
    )
}

const MAPPING_COLUMNS: &[(&str, &str)] = &[
    ("Name", "string"),
    ("Kind", "string"),
    ("Mapping", "string"),
    ("LastUpdatedOn", "datetime"),
    ("Database", "string"),
    ("Table", "string"),
];

/// `(c:type, ...)` starting at `toks[i]`; returns the columns and the index
/// after `)`.
fn column_list(
    toks: &[Tok],
    mut i: usize,
) -> std::result::Result<(Vec<(String, String)>, usize), String> {
    if toks.get(i) != Some(&Tok::Punct('(')) {
        return Err("expected '(' and a column list".into());
    }
    i += 1;
    let mut cols = Vec::new();
    loop {
        let name = name_of(toks.get(i)).ok_or("expected a column name")?;
        if toks.get(i + 1) != Some(&Tok::Punct(':')) {
            return Err(format!("expected ':' after column '{name}'"));
        }
        let ty = match toks.get(i + 2) {
            Some(Tok::Word(t)) => t.clone(),
            _ => return Err(format!("expected a type for column '{name}'")),
        };
        cols.push((name, ty));
        i += 3;
        match toks.get(i) {
            Some(Tok::Punct(',')) => i += 1,
            Some(Tok::Punct(')')) => return Ok((cols, i + 1)),
            _ => return Err("expected ',' or ')' in the column list".into()),
        }
    }
}

/// Skips an optional trailing `with (...)`; errors on anything else.
fn expect_end(toks: &[Tok], i: usize) -> std::result::Result<(), String> {
    if i >= toks.len() {
        return Ok(());
    }
    if word_is(toks.get(i), "with") && toks.get(i + 1) == Some(&Tok::Punct('(')) {
        if toks.last() == Some(&Tok::Punct(')')) {
            return Ok(());
        }
        return Err("the with(...) clause is not closed".into());
    }
    Err(format!("unexpected {:?} after the command", toks[i]))
}

fn mgmt(s: &Shared, principal: &str, db: &str, csl: &str) -> Response {
    let Some(command) = csl.trim().strip_prefix('.') else {
        return syntax_error(&format!("a management command starts with '.': {csl}"));
    };
    let toks = match tokenize(command) {
        Ok(t) => t,
        Err(e) => return syntax_error(&e),
    };
    let w = |i: usize, word: &str| word_is(toks.get(i), word);
    if w(0, "show") && w(1, "version") && toks.len() == 2 {
        return v1(
            &[
                ("BuildVersion", "string"),
                ("BuildTime", "datetime"),
                ("ServiceType", "string"),
                ("ProductVersion", "string"),
            ],
            vec![vec![
                json!("1.0.0.0"),
                json!("2024-01-01T00:00:00Z"),
                json!("Engine"),
                json!("Sluice fake engine"),
            ]],
        );
    }
    if let Some(r) = check_db(s, principal, db, "access") {
        return r;
    }
    let st = &s.store;
    // .show tables
    if w(0, "show") && w(1, "tables") && toks.len() == 2 {
        let rows = st
            .tables(db)
            .unwrap_or_default()
            .into_iter()
            .map(|t| vec![json!(t), json!(db), json!(""), json!("")])
            .collect();
        return v1(
            &[
                ("TableName", "string"),
                ("DatabaseName", "string"),
                ("Folder", "string"),
                ("DocString", "string"),
            ],
            rows,
        );
    }
    if w(0, "show") && w(1, "table") {
        let Some(table) = name_of(toks.get(2)) else {
            return syntax_error("expected a table name after '.show table'");
        };
        let Some(columns) = st.columns(db, &table) else {
            return entity_not_found("Table", &table);
        };
        if w(3, "cslschema") && toks.len() == 4 {
            return schema_row(db, &table, &columns);
        }
        if w(3, "extents") {
            return show_extents(st, db, &table, &toks[4..]);
        }
        if w(3, "ingestion") && w(5, "mappings") && toks.len() == 6 {
            let kind = name_of(toks.get(4))
                .unwrap_or_default()
                .to_ascii_lowercase();
            let rows = if kind == "json" {
                st.json_mappings(db, &table)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(n, m)| {
                        vec![
                            json!(n),
                            json!("Json"),
                            json!(m),
                            json!("2024-01-01T00:00:00Z"),
                            json!(db),
                            json!(table),
                        ]
                    })
                    .collect()
            } else if matches!(
                kind.as_str(),
                "csv" | "avro" | "parquet" | "orc" | "w3clogfile"
            ) {
                Vec::new()
            } else {
                return syntax_error(&format!("unknown mapping kind '{kind}'"));
            };
            return v1(MAPPING_COLUMNS, rows);
        }
        return syntax_error(&format!("unsupported command: .{command}"));
    }
    // .drop extents (id, ...) from T
    if w(0, "drop") && w(1, "extents") {
        return drop_extents(s, principal, db, &toks[2..]);
    }
    let create = w(0, "create");
    let create_merge = w(0, "create-merge");
    let alter_merge = w(0, "alter-merge");
    let create_or_alter = w(0, "create-or-alter");
    if (create || create_merge || alter_merge || create_or_alter) && w(1, "table") {
        let Some(table) = name_of(toks.get(2)) else {
            return syntax_error("expected a table name");
        };
        if w(3, "ingestion") {
            return create_mapping(s, db, &table, &toks, create && !create_or_alter);
        }
        if create_or_alter {
            return syntax_error(&format!("unsupported command: .{command}"));
        }
        let (columns, next) = match column_list(&toks, 3) {
            Ok(c) => c,
            Err(e) => return syntax_error(&e),
        };
        if let Err(e) = expect_end(&toks, next) {
            return syntax_error(&e);
        }
        if s.store.is_denied(principal, db) {
            return forbidden(principal, &s.tenant, db, "alter");
        }
        if create {
            let exists = st.columns(db, &table).is_some();
            if !exists {
                if let Err(e) = st.merge_table(db, &table, &columns, true) {
                    return bad_request(
                        "BadRequest_InvalidArgument",
                        "Kusto.Data.Exceptions.BadRequestException",
                        &e,
                    );
                }
            }
        } else if let Err(e) = st.merge_table(db, &table, &columns, create_merge) {
            if e.contains("was not found") {
                return entity_not_found("Table", &table);
            }
            return bad_request(
                "BadRequest_InvalidArgument",
                "Kusto.DataNode.Exceptions.ColumnTypeChangeException",
                &e,
            );
        }
        let cols = st.columns(db, &table).unwrap_or_default();
        return schema_row(db, &table, &cols);
    }
    // .alter table T policy streamingingestion enable|disable, and the same
    // for a database.
    if w(0, "alter")
        && (w(1, "table") || w(1, "database"))
        && w(3, "policy")
        && w(4, "streamingingestion")
        && toks.len() == 6
    {
        let Some(name) = name_of(toks.get(2)) else {
            return syntax_error("expected a name");
        };
        let enabled = if w(5, "enable") {
            true
        } else if w(5, "disable") {
            false
        } else {
            return syntax_error("expected enable or disable");
        };
        if w(1, "table") {
            if st.columns(db, &name).is_none() {
                return entity_not_found("Table", &name);
            }
            st.set_streaming_enabled(db, &name, enabled);
        } else {
            if !st.has_database(&name) {
                return entity_not_found("Database", &name);
            }
            st.set_streaming_enabled(&name, "", enabled);
        }
        return v1(
            &[
                ("PolicyName", "string"),
                ("EntityName", "string"),
                ("Policy", "string"),
            ],
            vec![vec![
                json!("StreamingIngestionPolicy"),
                json!(name),
                json!(json!({"IsEnabled": enabled}).to_string()),
            ]],
        );
    }
    syntax_error(&format!("unsupported command: .{command}"))
}

/// `.show table T extents [where tags (has|contains|!has|!contains) 'X'
/// [and tags ...]]`: `rest` is what follows `extents`.
fn show_extents(st: &Store, db: &str, table: &str, rest: &[Tok]) -> Response {
    let mut filters: Vec<(bool, bool, String)> = Vec::new();
    if !rest.is_empty() {
        if !word_is(rest.first(), "where") {
            return syntax_error("expected 'where tags ...' after '.show table T extents'");
        }
        let mut i = 1;
        loop {
            if !word_is(rest.get(i), "tags") {
                return syntax_error("expected 'tags' in the extents filter");
            }
            i += 1;
            let negated = matches!(rest.get(i), Some(Tok::Punct('!')));
            if negated {
                i += 1;
            }
            let exact = if word_is(rest.get(i), "has") {
                true
            } else if word_is(rest.get(i), "contains") {
                false
            } else {
                return syntax_error("expected has, contains, !has or !contains after 'tags'");
            };
            let Some(Tok::Str(tag)) = rest.get(i + 1) else {
                return syntax_error("expected a string literal naming a tag");
            };
            filters.push((negated, exact, tag.to_ascii_lowercase()));
            i += 2;
            if i == rest.len() {
                break;
            }
            if !word_is(rest.get(i), "and") {
                return syntax_error("expected 'and' between extents filters");
            }
            i += 1;
        }
    }
    let Some(extents) = st.extent_infos(db, table) else {
        return entity_not_found("Table", table);
    };
    let rows = extents
        .into_iter()
        .filter(|e| {
            filters.iter().all(|(negated, exact, want)| {
                let hit = e.tags.iter().any(|t| {
                    let t = t.to_ascii_lowercase();
                    if *exact {
                        t == *want
                    } else {
                        t.contains(want.as_str())
                    }
                });
                hit != *negated
            })
        })
        .map(|e| {
            vec![
                json!(e.id),
                json!(db),
                json!(table),
                json!(e.rows),
                json!(e.tags.join("\r\n")),
            ]
        })
        .collect();
    v1(
        &[
            ("ExtentId", "string"),
            ("DatabaseName", "string"),
            ("TableName", "string"),
            ("RowCount", "long"),
            ("Tags", "string"),
        ],
        rows,
    )
}

/// `.drop extents (id, ...) from T`: `rest` is what follows `extents`.
fn drop_extents(s: &Shared, principal: &str, db: &str, rest: &[Tok]) -> Response {
    if !matches!(rest.first(), Some(Tok::Punct('('))) {
        return syntax_error("expected '(' and extent ids after '.drop extents' (the test server supports no other form)");
    }
    let mut ids = Vec::new();
    let mut i = 1;
    loop {
        match rest.get(i) {
            Some(Tok::Word(id)) | Some(Tok::Str(id)) => ids.push(id.clone()),
            _ => return syntax_error("expected an extent id"),
        }
        i += 1;
        match rest.get(i) {
            Some(Tok::Punct(',')) => i += 1,
            Some(Tok::Punct(')')) => {
                i += 1;
                break;
            }
            _ => return syntax_error("expected ',' or ')' in the extent ids"),
        }
    }
    if !word_is(rest.get(i), "from") {
        return syntax_error("expected 'from T' after the extent ids");
    }
    let Some(table) = name_of(rest.get(i + 1)) else {
        return syntax_error("expected a table name after 'from'");
    };
    if let Err(e) = expect_end(rest, i + 2) {
        return syntax_error(&e);
    }
    if s.store.is_denied(principal, db) {
        return forbidden(principal, &s.tenant, db, "drop extents of");
    }
    match s.store.drop_extents(db, &table, &ids) {
        Ok(dropped) => v1(
            &[
                ("ExtentId", "string"),
                ("TableName", "string"),
                ("CreatedOn", "datetime"),
            ],
            dropped
                .into_iter()
                .map(|id| vec![json!(id), json!(table), json!("2024-01-01T00:00:00Z")])
                .collect(),
        ),
        Err(e) if e.contains("was not found") => entity_not_found("Table", &table),
        Err(e) => bad_request(
            "BadRequest_InvalidArgument",
            "Kusto.Data.Exceptions.BadRequestException",
            &e,
        ),
    }
}

fn create_mapping(
    s: &Shared,
    db: &str,
    table: &str,
    toks: &[Tok],
    fail_if_exists: bool,
) -> Response {
    // toks: create table T ingestion <kind> mapping 'name' '<json>' [with (...)]
    let kind = name_of(toks.get(4))
        .unwrap_or_default()
        .to_ascii_lowercase();
    if !word_is(toks.get(5), "mapping") {
        return syntax_error("expected 'mapping' after the mapping kind");
    }
    let (Some(Tok::Str(name)), Some(Tok::Str(mapping))) = (toks.get(6), toks.get(7)) else {
        return syntax_error("expected the mapping's name and its JSON as string literals");
    };
    if let Err(e) = expect_end(toks, 8) {
        return syntax_error(&e);
    }
    if kind != "json" {
        return bad_request(
            "BadRequest_InvalidArgument",
            "Kusto.Data.Exceptions.BadRequestException",
            &format!("the test server supports json ingestion mappings only, not '{kind}'"),
        );
    }
    if s.store.columns(db, table).is_none() {
        return entity_not_found("Table", table);
    }
    if fail_if_exists
        && s.store
            .json_mappings(db, table)
            .unwrap_or_default()
            .iter()
            .any(|(n, _)| n == name)
    {
        return bad_request(
            "BadRequest_EntityAlreadyExists",
            "Kusto.Data.Exceptions.EntityAlreadyExistsException",
            &format!("Entity ID '{name}' of kind 'MappingPersistentModel' already exists"),
        );
    }
    if let Err(e) = s.store.create_json_mapping(db, table, name, mapping) {
        return bad_request(
            "BadRequest_InvalidMapping",
            "Kusto.Data.Exceptions.BadRequestException",
            &e,
        );
    }
    v1(
        MAPPING_COLUMNS,
        vec![vec![
            json!(name),
            json!("Json"),
            json!(mapping),
            json!("2024-01-01T00:00:00Z"),
            json!(db),
            json!(table),
        ]],
    )
}

// ---------------------------------------------------------------------------
// Queries

fn run_query(s: &Shared, principal: &str, db: &str, csl: &str, v1_shape: bool) -> Response {
    if let Some(r) = check_db(s, principal, db, "read") {
        return r;
    }
    let mut toks = match tokenize(csl.trim().trim_end_matches(';')) {
        Ok(t) => t,
        Err(e) => return syntax_error(&e),
    };
    // A trailing `| render <kind>` only sets the Visualization property.
    let mut visualization = Value::Null;
    if let [.., Tok::Punct('|'), Tok::Word(op), Tok::Word(kind)] = toks.as_slice() {
        if op == "render" {
            visualization = json!(kind);
            toks.truncate(toks.len() - 3);
        }
    }
    let Some(table) = name_of(toks.first()) else {
        return syntax_error(&format!(
            "the test server answers 'T', 'T | count' and 'T | take N', not: {csl}"
        ));
    };
    let Some(columns) = s.store.columns(db, &table) else {
        return kusto_error(
            StatusCode::BAD_REQUEST,
            "General_BadRequest",
            "Kusto.Data.Exceptions.SemanticException",
            &format!("Semantic error: SEM0100: Failed to resolve table or column expression named '{table}'"),
        );
    };
    let rows = s.store.rows(db, &table);
    let (cols, out): (Vec<(String, String)>, Vec<Vec<Value>>) = match &toks[1..] {
        [] => (columns.clone(), to_rows(&columns, &rows, usize::MAX)),
        [Tok::Punct('|'), Tok::Word(op)] if op.eq_ignore_ascii_case("count") => (
            vec![("Count".into(), "long".into())],
            vec![vec![json!(rows.len())]],
        ),
        [Tok::Punct('|'), Tok::Word(op), Tok::Word(n)]
            if op.eq_ignore_ascii_case("take") || op.eq_ignore_ascii_case("limit") =>
        {
            let Ok(n) = n.parse::<usize>() else {
                return syntax_error(&format!("'{n}' is not a row count"));
            };
            (columns.clone(), to_rows(&columns, &rows, n))
        }
        _ => {
            return syntax_error(&format!(
                "the test server answers 'T', 'T | count' and 'T | take N', not: {csl}"
            ))
        }
    };
    if v1_shape {
        let named: Vec<(&str, &str)> = cols.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
        return v1(&named, out);
    }
    let columns_json: Vec<Value> = cols
        .iter()
        .map(|(n, t)| json!({"ColumnName": n, "ColumnType": t}))
        .collect();
    axum::Json(json!([
        {"FrameType": "DataSetHeader", "IsProgressive": false, "Version": "v2.0", "IsFragmented": false, "ErrorReportingPlacement": "EndOfTable"},
        {"FrameType": "DataTable", "TableId": 0, "TableKind": "QueryProperties", "TableName": "@ExtendedProperties",
         "Columns": [{"ColumnName": "TableId", "ColumnType": "int"}, {"ColumnName": "Key", "ColumnType": "string"}, {"ColumnName": "Value", "ColumnType": "dynamic"}],
         "Rows": [[1, "Visualization", visualization_property(&visualization)]]},
        {"FrameType": "DataTable", "TableId": 1, "TableKind": "PrimaryResult", "TableName": "PrimaryResult", "Columns": columns_json, "Rows": out},
        {"FrameType": "DataSetCompletion", "HasErrors": false, "Cancelled": false},
    ]))
    .into_response()
}

/// The `Visualization` property of a v2 response's `@ExtendedProperties`
/// table (a JSON text): the chart kind `render` asked for, or null, with
/// the properties Kusto reports beside it.
fn visualization_property(kind: &Value) -> String {
    json!({
        "Visualization": kind, "Title": null, "XColumn": null, "Series": null, "YColumns": null,
        "AnomalyColumns": null, "XTitle": null, "YTitle": null, "XAxis": null, "YAxis": null,
        "Legend": null, "YSplit": null, "Accumulate": false, "IsQuerySorted": false, "Kind": null,
        "Ymin": "NaN", "Ymax": "NaN", "Xmin": null, "Xmax": null,
    })
    .to_string()
}

fn to_rows(columns: &[(String, String)], rows: &[Map<String, Value>], n: usize) -> Vec<Vec<Value>> {
    rows.iter()
        .take(n)
        .map(|r| {
            columns
                .iter()
                .map(|(c, _)| r.get(c).cloned().unwrap_or(Value::Null))
                .collect()
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Streaming ingestion

fn ingest(s: &Shared, principal: &str, r: &IngestRequest, data: &[u8]) -> Response {
    if let Some(resp) = check_db(s, principal, &r.db, "ingest into") {
        return resp;
    }
    if data.len() > STREAMING_LIMIT_BYTES {
        s.violation(format!(
            "POST /v1/rest/ingest/{}/{}: {} bytes of data, over the {STREAMING_LIMIT_BYTES}-byte streaming limit",
            r.db,
            r.table,
            data.len()
        ));
        return kusto_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Stream_InputStreamTooLarge",
            "Kusto.DataNode.Exceptions.InputStreamTooLargeException",
            &format!(
                "Stream input too large: {} bytes, the streaming ingestion limit is {STREAMING_LIMIT_BYTES} bytes",
                data.len()
            ),
        );
    }
    if s.store.columns(&r.db, &r.table).is_none() {
        return entity_not_found("Table", &r.table);
    }
    if !s.store.streaming_enabled(&r.db, &r.table) {
        return bad_request(
            "BadRequest_StreamingIngestionPolicyNotEnabled",
            "Kusto.DataNode.Exceptions.StreamingIngestionPolicyNotEnabledException",
            &format!(
                "Streaming ingestion policy is not enabled for table '{}' in database '{}'",
                r.table, r.db
            ),
        );
    }
    let into = IngestInto {
        db: r.db.clone(),
        table: r.table.clone(),
        format: r.format.to_ascii_lowercase(),
        mapping: r.mapping.clone(),
        tags: Vec::new(),
        ingest_if_not_exists: Vec::new(),
    };
    match s.store.ingest(&into, data) {
        Ok(IngestOutcome::Ingested { rows }) => v1(
            &[
                ("ConsumedRecordsCount", "long"),
                ("UpdatePolicyStatus", "string"),
                ("UpdatePolicyFailureCode", "string"),
                ("UpdatePolicyFailureReason", "string"),
            ],
            vec![vec![
                json!(rows),
                json!("Disabled"),
                json!("Unknown"),
                Value::Null,
            ]],
        ),
        Ok(IngestOutcome::Skipped) => v1(&[("ConsumedRecordsCount", "long")], vec![vec![json!(0)]]),
        Err(e) if e.contains("Mapping reference") => bad_request(
            "BadRequest_MappingReferenceWasNotFound",
            "Kusto.DataNode.Exceptions.MappingNotFoundException",
            &e,
        ),
        Err(e) if e.contains("not supported by the test server") => bad_request(
            "BadRequest_FormatNotSupported",
            "Kusto.Data.Exceptions.BadRequestException",
            &e,
        ),
        Err(e) => bad_request(
            "BadRequest_InvalidData",
            "Kusto.DataNode.Exceptions.IngestionDataException",
            &e,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_tokenize_with_quoted_names_and_literals() {
        let t =
            tokenize(r#"create table ['my \'t'] ingestion json mapping 'm' '[{"column":"a"}]'"#)
                .expect("tokens");
        assert_eq!(t[2], Tok::Name("my 't".into()));
        assert_eq!(t[6], Tok::Str("m".into()));
        assert_eq!(t[7], Tok::Str(r#"[{"column":"a"}]"#.into()));
        let t = tokenize("create-merge table T (a:string, ['b c']:long)").expect("tokens");
        let (cols, next) = column_list(&t, 3).expect("columns");
        assert_eq!(
            cols,
            vec![("a".into(), "string".into()), ("b c".into(), "long".into())]
        );
        assert_eq!(next, t.len());
        let t = tokenize("x h@'a''b' @\"c\"").expect("tokens");
        assert_eq!(t[1], Tok::Str("a'b".into()));
        assert_eq!(t[2], Tok::Str("c".into()));
    }

    #[test]
    fn forms_and_paths_decode() {
        assert_eq!(
            parse_form("a=1+2&scope=http%3A%2F%2Fx%2F.default"),
            vec![
                ("a".into(), "1 2".into()),
                ("scope".into(), "http://x/.default".into())
            ]
        );
        assert_eq!(decode_segment("a%20b+c"), "a b+c");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
