//! A Kusto REST client: management commands (`/v1/rest/mgmt`), queries
//! (`/v2/rest/query`), and the authenticated request pipeline the ingestion
//! paths share.
//!
//! Every request carries the headers the official Kusto SDKs send
//! (`Authorization: Bearer`, `Accept`, `Content-Type`,
//! `x-ms-client-request-id`, `x-ms-app`, `x-ms-client-version`,
//! `x-ms-version`). Failures become a [`KustoError`] whose [`ErrorKind`]
//! tells the caller whether to retry: Kusto's own error (the OneApi
//! `{"error": {...}}` body, or plain text) is kept in its message, and a 401
//! makes the client drop its cached token and try once more with a fresh
//! one before giving up. The bearer token never appears in an error or a
//! log line.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde_json::{json, Value};

use crate::auth::{AuthError, TokenProvider};
use crate::config::is_loopback;

/// The application name Kusto records for Sluice's requests (`x-ms-app`).
pub const APP_NAME: &str = "Sluice";
/// The REST API version Sluice speaks (`x-ms-version`), the one current
/// Kusto SDKs send.
pub const API_VERSION: &str = "2024-12-12";
/// How long a management command may run before the client gives up: the
/// service's own default timeout for commands (10 minutes) plus a margin.
const MGMT_TIMEOUT: Duration = Duration::from_secs(10 * 60 + 30);
/// A query's limit: the service default (4 minutes) plus a margin.
const QUERY_TIMEOUT: Duration = Duration::from_secs(4 * 60 + 30);
/// Kusto's error texts can be long (stack-like contexts); an error message
/// keeps this many characters of a plain-text body.
const MAX_MESSAGE_CHARS: usize = 2000;

/// How a failed request should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The service is throttling (429 or a throttling exception): retry
    /// after `retry_after` or a backoff.
    Throttled,
    /// A server error, timeout or connection failure: retrying may succeed.
    Transient,
    /// The request itself is wrong (syntax, schema, data): retrying the same
    /// request fails the same way.
    Permanent,
    /// The token was refused (401), even after a fresh one was fetched.
    Unauthorized,
    /// The principal lacks permission (403).
    Forbidden,
    /// The endpoint, database or table does not exist (404, or Kusto's
    /// 400 `BadRequest_EntityNotFound`).
    NotFound,
}

/// A failed Kusto request.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{what}: {}{message}", status.map(|s| format!("HTTP {s} ")).unwrap_or_default())]
pub struct KustoError {
    /// How to treat the failure.
    pub kind: ErrorKind,
    /// The HTTP status, if the service answered.
    pub status: Option<u16>,
    /// Kusto's own error: `<code>: <detailed message> (<exception type>)`
    /// from a OneApi error body, or the plain-text body.
    pub message: String,
    /// What was attempted: the endpoint and the command or target.
    pub what: String,
    /// How long the service asked the client to wait (`Retry-After`).
    pub retry_after: Option<Duration>,
}

impl KustoError {
    /// Whether retrying the same request may succeed (throttling or a
    /// transient failure).
    pub fn is_retriable(&self) -> bool {
        matches!(self.kind, ErrorKind::Throttled | ErrorKind::Transient)
    }

    fn new(kind: ErrorKind, what: &str, message: impl Into<String>) -> KustoError {
        KustoError {
            kind,
            status: None,
            message: message.into(),
            what: what.to_owned(),
            retry_after: None,
        }
    }
}

/// One table of a Kusto response.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KustoTable {
    /// Column names, in order.
    pub columns: Vec<String>,
    /// Rows, each with one value per column.
    pub rows: Vec<Vec<Value>>,
}

impl KustoTable {
    /// The index of the column named `name`.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    /// The value of column `name` in row `row`.
    pub fn get(&self, row: usize, name: &str) -> Option<&Value> {
        let col = self.column(name)?;
        self.rows.get(row)?.get(col)
    }

    /// The value of column `name` in row `row`, if it is a string.
    pub fn get_str(&self, row: usize, name: &str) -> Option<&str> {
        self.get(row, name)?.as_str()
    }
}

struct Inner {
    endpoint: String,
    tokens: Arc<TokenProvider>,
    http: reqwest::Client,
}

/// A client for one Kusto endpoint (the engine, or the data-management
/// `ingest-` endpoint). Cloning is cheap and shares the token cache.
#[derive(Clone)]
pub struct KustoClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for KustoClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KustoClient")
            .field("endpoint", &self.inner.endpoint)
            .finish()
    }
}

/// A random (version 4) UUID, formatted.
pub fn new_uuid() -> String {
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

/// A Kusto identifier in bracket quoting, `['name']`, usable for any table,
/// column or database name whatever characters it holds.
pub fn quote_name(name: &str) -> String {
    format!("[{}]", quote_string(name))
}

/// A Kusto string literal in single quotes, with the backslash escapes
/// Kusto documents: the quote, the backslash, tab, newline and carriage
/// return. Other characters, control characters included, stand for
/// themselves inside the quotes.
pub fn quote_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// The HTTP date or delta-seconds of a `Retry-After` header.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = v.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Some(Duration::from_secs_f64(secs));
        }
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(at.timestamp()).ok()?);
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// What Kusto said in an error body, and whether it called the error
/// permanent.
fn parse_error_body(body: &[u8]) -> (String, Option<bool>) {
    let text = String::from_utf8_lossy(body);
    if let Ok(json) = serde_json::from_slice::<Value>(body) {
        match json.get("error") {
            // OneApi: {"error": {"code", "message", "@type", "@message", "@permanent", ...}}
            Some(Value::Object(e)) => {
                let s = |k: &str| {
                    e.get(k)
                        .and_then(Value::as_str)
                        .map(str::trim)
                        .filter(|v| !v.is_empty())
                };
                let detail = s("@message").or(s("message")).unwrap_or("(no message)");
                let mut msg = match s("code") {
                    Some(code) => format!("{code}: {detail}"),
                    None => detail.to_owned(),
                };
                if let Some(ty) = s("@type") {
                    msg.push_str(&format!(" ({ty})"));
                }
                let permanent = e.get("@permanent").and_then(Value::as_bool);
                return (msg, permanent);
            }
            // OAuth style: {"error": "invalid_token", "error_description": "..."}
            Some(Value::String(code)) => {
                let desc = json
                    .get("error_description")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                return (format!("{code}: {desc}"), None);
            }
            _ => {}
        }
        // v2 frames with the error inside the completion frame.
        if let Some(err) = v2_error(&json) {
            return err;
        }
    }
    let trimmed = text.trim();
    let msg: String = trimmed.chars().take(MAX_MESSAGE_CHARS).collect();
    (msg, None)
}

/// Classifies an HTTP failure.
fn classify(status: u16, message: &str, permanent: Option<bool>) -> ErrorKind {
    let lower = message.to_ascii_lowercase();
    match status {
        401 => ErrorKind::Unauthorized,
        403 => ErrorKind::Forbidden,
        404 => ErrorKind::NotFound,
        // Kusto answers an unknown database or table with 400
        // BadRequest_EntityNotFound.
        400 if lower.contains("entitynotfound") => ErrorKind::NotFound,
        429 => ErrorKind::Throttled,
        _ if lower.contains("throttl") && permanent != Some(true) => ErrorKind::Throttled,
        408 => ErrorKind::Transient,
        500..=599 if permanent == Some(true) => ErrorKind::Permanent,
        500..=599 => ErrorKind::Transient,
        _ => ErrorKind::Permanent,
    }
}

/// The error inside a v2 response (a `DataSetCompletion` with `HasErrors`,
/// or a `OneApiErrors` array), if any.
fn v2_error(json: &Value) -> Option<(String, Option<bool>)> {
    let frames = json.as_array()?;
    for f in frames {
        if let Some(errors) = f.get("OneApiErrors").and_then(Value::as_array) {
            if let Some(first) = errors.first() {
                let (msg, permanent) = parse_error_body(first.to_string().as_bytes());
                return Some((msg, permanent));
            }
        }
        if f.get("FrameType").and_then(Value::as_str) == Some("DataSetCompletion")
            && f.get("HasErrors").and_then(Value::as_bool) == Some(true)
        {
            return Some(("the query completed with errors".into(), None));
        }
    }
    None
}

fn auth_error(what: &str, e: AuthError) -> KustoError {
    let kind = match &e {
        AuthError::Config(_) => ErrorKind::Permanent,
        AuthError::Http { .. } | AuthError::BadResponse { .. } => ErrorKind::Transient,
        AuthError::Refused { status, .. } => match *status {
            429 => ErrorKind::Throttled,
            500..=599 => ErrorKind::Transient,
            _ => ErrorKind::Unauthorized,
        },
    };
    KustoError::new(kind, what, format!("no Azure AD token: {e}"))
}

/// Columns and rows of a table object in a v1 or v2 response.
fn table_of(t: &Value, what: &str) -> Result<KustoTable, KustoError> {
    let bad = |p: &str| {
        KustoError::new(
            ErrorKind::Transient,
            what,
            format!("malformed response: {p}"),
        )
    };
    let columns = t
        .get("Columns")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("a table has no Columns array"))?
        .iter()
        .map(|c| {
            c.get("ColumnName")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| bad("a column has no ColumnName"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut rows = Vec::new();
    for r in t
        .get("Rows")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("a table has no Rows array"))?
    {
        match r {
            Value::Array(values) => rows.push(values.clone()),
            // Kusto reports a failure that happened while streaming the
            // results as an object in place of a row.
            other => {
                let (msg, permanent) = parse_error_body(other.to_string().as_bytes());
                let kind = if permanent == Some(false) {
                    ErrorKind::Transient
                } else {
                    ErrorKind::Permanent
                };
                return Err(KustoError::new(kind, what, msg));
            }
        }
    }
    Ok(KustoTable { columns, rows })
}

impl KustoClient {
    /// A client for `endpoint`: a cluster URL, e.g.
    /// `https://mycluster.westeurope.kusto.windows.net` or
    /// `https://ingest-mycluster.westeurope.kusto.windows.net`. Plain http is
    /// accepted only on loopback, as a bearer token must not travel
    /// unencrypted.
    pub fn new(
        endpoint: &str,
        tokens: Arc<TokenProvider>,
        http: reqwest::Client,
    ) -> Result<KustoClient, KustoError> {
        let what = format!("Kusto endpoint '{endpoint}'");
        let trimmed = endpoint.trim().trim_end_matches('/');
        let url = Url::parse(trimmed)
            .map_err(|e| KustoError::new(ErrorKind::Permanent, &what, format!("not a URL: {e}")))?;
        let host = url.host_str().unwrap_or_default().to_owned();
        match url.scheme() {
            "https" => {}
            "http" if is_loopback(&host) => {}
            "http" => {
                return Err(KustoError::new(
                    ErrorKind::Permanent,
                    &what,
                    "plain http would send the bearer token unencrypted; http is allowed only on loopback: use https",
                ))
            }
            other => {
                return Err(KustoError::new(
                    ErrorKind::Permanent,
                    &what,
                    format!("scheme '{other}' is not supported; use https"),
                ))
            }
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(KustoError::new(
                ErrorKind::Permanent,
                &what,
                "a cluster URL has no query or fragment",
            ));
        }
        Ok(KustoClient {
            inner: Arc::new(Inner {
                endpoint: trimmed.to_owned(),
                tokens,
                http,
            }),
        })
    }

    /// The endpoint, without a trailing slash.
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// The HTTP client requests go through.
    pub fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// A bearer token for the endpoint, from the token provider.
    pub async fn bearer(&self) -> Result<String, KustoError> {
        self.inner
            .tokens
            .token()
            .await
            .map_err(|e| auth_error(&format!("token for {}", self.inner.endpoint), e))
    }

    /// Sends a request built by `build` (given the HTTP client and the full
    /// URL of `path`, which starts with `/`), adding the authorization and
    /// the Kusto SDK headers (`x-ms-client-request-id` gets a fresh id per
    /// attempt; `build` sets `Content-Type` and the body). A 401 drops the
    /// cached token and retries once with a fresh one. Returns the body of a
    /// 2xx answer; anything else is a classified [`KustoError`] named by
    /// `what`.
    pub async fn send<F>(&self, what: &str, path: &str, build: F) -> Result<Bytes, KustoError>
    where
        F: Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    {
        let url = format!("{}{}", self.inner.endpoint, path);
        let mut refreshed = false;
        loop {
            let token = self.bearer().await?;
            let request = build(&self.inner.http, &url)
                .header(AUTHORIZATION, format!("Bearer {token}"))
                .header(
                    "x-ms-client-request-id",
                    format!("{APP_NAME};{}", new_uuid()),
                )
                .header("x-ms-app", APP_NAME)
                .header(
                    "x-ms-client-version",
                    format!("{APP_NAME}:{}", env!("CARGO_PKG_VERSION")),
                )
                .header("x-ms-version", API_VERSION);
            let response = match request.send().await {
                Ok(r) => r,
                Err(e) => return Err(transport_error(what, e)),
            };
            let status = response.status();
            let headers = response.headers().clone();
            let body = match response.bytes().await {
                Ok(b) => b,
                Err(e) => return Err(transport_error(what, e)),
            };
            if status.is_success() {
                return Ok(body);
            }
            if status == StatusCode::UNAUTHORIZED && !refreshed {
                tracing::info!("{what}: the token was refused (401); fetching a fresh one");
                self.inner.tokens.invalidate().await;
                refreshed = true;
                continue;
            }
            let (mut message, permanent) = parse_error_body(&body);
            if message.is_empty() {
                message = status.canonical_reason().unwrap_or("no message").to_owned();
            }
            // Defence in depth: never hand on a token a server echoed back.
            if !token.is_empty() && message.contains(&token) {
                message = message.replace(&token, "[token]");
            }
            let kind = classify(status.as_u16(), &message, permanent);
            return Err(KustoError {
                kind,
                status: Some(status.as_u16()),
                message,
                what: what.to_owned(),
                retry_after: retry_after(&headers),
            });
        }
    }

    async fn post_json(
        &self,
        path: &str,
        what: &str,
        db: &str,
        csl: &str,
        timeout: Duration,
    ) -> Result<Value, KustoError> {
        let body = json!({
            "db": db,
            "csl": csl,
            "properties": {"Options": {}, "Parameters": {}},
        });
        let body = serde_json::to_vec(&body)
            .map_err(|e| KustoError::new(ErrorKind::Permanent, what, e.to_string()))?;
        let bytes = self
            .send(what, path, |http, url| {
                http.post(url)
                    .timeout(timeout)
                    .header(CONTENT_TYPE, "application/json; charset=utf-8")
                    .header(ACCEPT, "application/json")
                    .body(body.clone())
            })
            .await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            KustoError::new(
                ErrorKind::Transient,
                what,
                format!("the response is not JSON: {e}"),
            )
        })
    }

    /// Runs a management command (`POST {endpoint}/v1/rest/mgmt`) in
    /// database `db` and returns the first (primary) table of the v1
    /// response.
    pub async fn mgmt(&self, db: &str, csl: &str) -> Result<KustoTable, KustoError> {
        let what = format!("{}/v1/rest/mgmt {}", self.inner.endpoint, describe(db, csl));
        let json = self
            .post_json("/v1/rest/mgmt", &what, db, csl, MGMT_TIMEOUT)
            .await?;
        let tables = json
            .get("Tables")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                KustoError::new(
                    ErrorKind::Transient,
                    &what,
                    "malformed response: no Tables array",
                )
            })?;
        match tables.first() {
            Some(t) => table_of(t, &what),
            None => Ok(KustoTable::default()),
        }
    }

    /// Runs a query (`POST {endpoint}/v2/rest/query`) in database `db` and
    /// returns the `PrimaryResult` table of the v2 (frames) response.
    pub async fn query(&self, db: &str, csl: &str) -> Result<KustoTable, KustoError> {
        let what = format!(
            "{}/v2/rest/query {}",
            self.inner.endpoint,
            describe(db, csl)
        );
        let json = self
            .post_json("/v2/rest/query", &what, db, csl, QUERY_TIMEOUT)
            .await?;
        let frames = json.as_array().ok_or_else(|| {
            KustoError::new(
                ErrorKind::Transient,
                &what,
                "malformed response: a v2 response is an array of frames",
            )
        })?;
        if let Some((msg, permanent)) = v2_error(&json) {
            let kind = if permanent == Some(false) {
                ErrorKind::Transient
            } else {
                ErrorKind::Permanent
            };
            return Err(KustoError::new(kind, &what, msg));
        }
        let primary = frames.iter().find(|f| {
            f.get("FrameType").and_then(Value::as_str) == Some("DataTable")
                && f.get("TableKind").and_then(Value::as_str) == Some("PrimaryResult")
        });
        match primary {
            Some(t) => table_of(t, &what),
            None => Err(KustoError::new(
                ErrorKind::Permanent,
                &what,
                "the response has no PrimaryResult table",
            )),
        }
    }
}

/// `'<csl, shortened>' in database '<db>'`, for error messages.
fn describe(db: &str, csl: &str) -> String {
    let one_line: String = csl.split_whitespace().collect::<Vec<_>>().join(" ");
    let short: String = one_line.chars().take(120).collect();
    let ellipsis = if short.len() < one_line.len() {
        "…"
    } else {
        ""
    };
    format!("'{short}{ellipsis}' in database '{db}'")
}

fn transport_error(what: &str, e: reqwest::Error) -> KustoError {
    let kind = if e.is_builder() {
        ErrorKind::Permanent
    } else {
        ErrorKind::Transient
    };
    let detail = if e.is_timeout() {
        format!("timed out: {e}")
    } else if e.is_connect() {
        format!("could not connect: {e}")
    } else {
        e.to_string()
    };
    // Report the error's chain of causes: reqwest's top-level text alone
    // ("error sending request") hides the reason.
    let mut message = detail;
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(&format!(": {s}"));
        source = s.source();
    }
    KustoError::new(kind, what, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_strings_are_quoted_and_escaped() {
        assert_eq!(quote_name("Events"), "['Events']");
        assert_eq!(quote_name("a'b]c"), "['a\\'b]c']");
        assert_eq!(quote_string("it's"), "'it\\'s'");
        assert_eq!(quote_string("a\\b"), "'a\\\\b'");
        assert_eq!(quote_string("l1\nl2\t\r"), "'l1\\nl2\\t\\r'");
        assert_eq!(quote_string("\u{1}"), "'\u{1}'");
        assert_eq!(quote_string(""), "''");
        assert_eq!(quote_string("ünï"), "'ünï'");
    }

    #[test]
    fn one_api_errors_keep_code_detail_and_type() {
        let body = br#"{"error":{"code":"BadRequest_StreamingIngestionPolicyNotEnabled","message":"Request is invalid and cannot be executed.","@type":"Kusto.DataNode.Exceptions.StreamingIngestionPolicyNotEnabledException","@message":"Streaming ingestion policy is not enabled for table 'T'","@permanent":true}}"#;
        let (msg, permanent) = parse_error_body(body);
        assert_eq!(
            msg,
            "BadRequest_StreamingIngestionPolicyNotEnabled: Streaming ingestion policy is not enabled for table 'T' (Kusto.DataNode.Exceptions.StreamingIngestionPolicyNotEnabledException)"
        );
        assert_eq!(permanent, Some(true));
        let (plain, p) = parse_error_body(b"  upstream broke \n");
        assert_eq!((plain.as_str(), p), ("upstream broke", None));
    }

    #[test]
    fn classification_follows_status_and_permanence() {
        assert_eq!(classify(429, "", None), ErrorKind::Throttled);
        assert_eq!(
            classify(400, "Kusto.DataNode.Exceptions.ThrottledException", None),
            ErrorKind::Throttled
        );
        assert_eq!(classify(500, "x", None), ErrorKind::Transient);
        assert_eq!(classify(503, "x", Some(false)), ErrorKind::Transient);
        assert_eq!(classify(500, "x", Some(true)), ErrorKind::Permanent);
        assert_eq!(classify(400, "x", None), ErrorKind::Permanent);
        assert_eq!(classify(413, "x", None), ErrorKind::Permanent);
        assert_eq!(classify(401, "x", None), ErrorKind::Unauthorized);
        assert_eq!(classify(403, "x", None), ErrorKind::Forbidden);
        assert_eq!(classify(404, "x", None), ErrorKind::NotFound);
        assert_eq!(
            classify(
                400,
                "BadRequest_EntityNotFound: Entity ID 'x' of kind 'Database' was not found.",
                Some(true)
            ),
            ErrorKind::NotFound
        );
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "7".parse().expect("header value"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT"
                .parse()
                .expect("header value"),
        );
        // A date in the past means "now".
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, "soon".parse().expect("header value"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn uuids_are_version_4() {
        let u = new_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(u, new_uuid());
    }

    #[test]
    fn tables_are_read_by_column_name() {
        let t = table_of(
            &json!({"Columns":[{"ColumnName":"A","ColumnType":"string"},{"ColumnName":"B"}],"Rows":[["x",1]]}),
            "test",
        )
        .expect("table");
        assert_eq!(t.get_str(0, "A"), Some("x"));
        assert_eq!(t.get(0, "B"), Some(&json!(1)));
        assert_eq!(t.get(0, "C"), None);
        assert_eq!(t.get(1, "A"), None);
    }
}
