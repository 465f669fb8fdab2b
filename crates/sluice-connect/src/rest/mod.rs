//! Kafka Connect's REST API for the standalone worker: the same paths,
//! bodies, status codes and `{"error_code", "message"}` errors, served with
//! axum over a [`WorkerHandle`].
//!
//! The same listener serves the worker's status page and its history
//! (see [`ui`]).
//!
//! Offsets of sink connectors are not shown or changed: the in-process
//! transport keeps no consumer offsets.

pub mod config;
pub mod secrets;
pub mod ui;
pub mod validate;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::{json, Value};
use sluice_core::config::Props;
use tokio_util::sync::CancellationToken;

pub use config::RestConfig;

use crate::runtime::history::History;
use crate::runtime::{ConnectorInfo, ControlError, OffsetChange, TargetState, WorkerHandle};

struct AppState {
    handle: WorkerHandle,
    show_secrets: bool,
    /// `user:password` expected in `Authorization: Basic`.
    basic_auth: Option<String>,
    /// The status page's recent history.
    history: Arc<History>,
}

type Shared = State<Arc<AppState>>;

/// An error answer: `{"error_code": <status>, "message": ...}`.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error_code": self.0.as_u16(), "message": self.1});
        (self.0, Json(body)).into_response()
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        let status = match &e {
            ControlError::NotFound(_) | ControlError::TaskNotFound(..) => StatusCode::NOT_FOUND,
            ControlError::Conflict(_) => StatusCode::CONFLICT,
            ControlError::InvalidConfig(_) | ControlError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ControlError::NotRunning => StatusCode::SERVICE_UNAVAILABLE,
            ControlError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

fn bad_request(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

type ApiResult = Result<Response, ApiError>;

/// A bound REST listener, ready to serve.
#[derive(Debug)]
pub struct RestServer {
    listener: tokio::net::TcpListener,
    config: RestConfig,
    /// Routes the binary adds (they share the listener's authentication).
    extra: Option<Router>,
}

impl RestServer {
    /// Binds the configured address (port 0 picks a free one).
    pub async fn bind(config: RestConfig) -> std::io::Result<RestServer> {
        let listener = tokio::net::TcpListener::bind(&config.bind)
            .await
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("REST listener {}: cannot listen: {e}", config.bind),
                )
            })?;
        Ok(RestServer {
            listener,
            config,
            extra: None,
        })
    }

    /// Adds `routes` to what the listener serves, behind the same
    /// authentication and same-origin checks as the REST API.
    pub fn with_routes(mut self, routes: Router) -> Self {
        self.extra = Some(match self.extra.take() {
            Some(r) => r.merge(routes),
            None => routes,
        });
        self
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// The worker id Kafka Connect shows in statuses: the advertised (else
    /// bound) `host:port`.
    pub fn worker_id(&self) -> std::io::Result<String> {
        Ok(self.config.worker_id(self.listener.local_addr()?))
    }

    /// Serves requests until `shutdown` is cancelled.
    pub async fn serve(
        self,
        handle: WorkerHandle,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        if let Ok(addr) = self.listener.local_addr() {
            tracing::info!("REST API listening on http://{addr}");
        }
        let history = Arc::new(History::new(
            self.config.history_interval,
            self.config.history_points,
        ));
        let sampler = {
            let (history, handle, shutdown) =
                (Arc::clone(&history), handle.clone(), shutdown.clone());
            tokio::spawn(async move { history.run(handle, shutdown).await })
        };
        let state = Arc::new(AppState {
            handle,
            show_secrets: self.config.show_secrets,
            basic_auth: self.config.basic_auth.clone(),
            history,
        });
        let app = router(Arc::clone(&state), self.extra.unwrap_or_default());
        let served = axum::serve(self.listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        sampler.abort();
        served
    }
}

fn router(state: Arc<AppState>, extra: Router) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/metrics", get(metrics))
        .route("/connectors", get(list).post(create))
        .route("/connectors/{c}", get(info).delete(delete))
        .route(
            "/connectors/{c}/config",
            get(get_config).put(put_config).patch(patch_config),
        )
        .route("/connectors/{c}/status", get(status))
        .route("/connectors/{c}/tasks", get(tasks))
        .route("/connectors/{c}/tasks/{t}/status", get(task_status))
        .route("/connectors/{c}/tasks/{t}/restart", post(task_restart))
        .route("/connectors/{c}/restart", post(restart))
        .route("/connectors/{c}/pause", put(pause))
        .route("/connectors/{c}/resume", put(resume))
        .route("/connectors/{c}/stop", put(stop))
        .route(
            "/connectors/{c}/offsets",
            get(offsets).patch(patch_offsets).delete(delete_offsets),
        )
        .route("/connectors/{c}/topics", get(topics))
        .route("/connectors/{c}/signals", post(signal))
        .route("/connectors/{c}/topics/reset", put(reset_topics))
        .route("/connector-plugins", get(plugins))
        .route(
            "/connector-plugins/{p}/config/validate",
            put(validate_config),
        )
        .merge(ui::routes())
        .with_state(Arc::clone(&state))
        .merge(extra)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(ui::same_origin_changes))
        .layer(axum::middleware::from_fn_with_state(state, basic_auth))
}

async fn basic_auth(State(state): Shared, req: Request, next: Next) -> Response {
    let Some(expected) = &state.basic_auth else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b64| {
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()
        });
    if given.as_deref() == Some(expected.as_bytes()) {
        return next.run(req).await;
    }
    let mut resp = ApiError(
        StatusCode::UNAUTHORIZED,
        "Credentials are missing or wrong: this worker requires HTTP basic authentication".into(),
    )
    .into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Basic realm=\"sluice\""),
    );
    resp
}

async fn method_not_allowed() -> ApiError {
    ApiError(
        StatusCode::METHOD_NOT_ALLOWED,
        "HTTP 405 Method Not Allowed".into(),
    )
}

async fn not_found() -> ApiError {
    ApiError(StatusCode::NOT_FOUND, "HTTP 404 Not Found".into())
}

fn ok(status: StatusCode, body: Value) -> ApiResult {
    Ok((status, Json(body)).into_response())
}

fn masked(state: &AppState, config: &Props) -> Props {
    if state.show_secrets {
        return config.clone();
    }
    let def = config
        .get("connector.class")
        .and_then(|c| state.handle.registry().lookup(c).ok())
        .map(|p| p.config_def());
    secrets::mask(def.as_ref(), config)
}

fn info_json(state: &AppState, info: ConnectorInfo) -> Value {
    json!({
        "name": info.name,
        "config": masked(state, &info.config),
        "tasks": info.tasks,
        "type": info.kind,
    })
}

/// Kafka Connect's version answer, or the status page for a browser.
async fn root(headers: HeaderMap) -> ApiResult {
    if ui::wants_page(&headers) {
        return Ok(ui::page().await);
    }
    ok(
        StatusCode::OK,
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "commit": option_env!("SLUICE_GIT_COMMIT").unwrap_or("unknown"),
            "kafka_cluster_id": null,
        }),
    )
}

async fn metrics(State(state): Shared) -> ApiResult {
    metrics_response(&state.handle).await
}

async fn metrics_response(handle: &WorkerHandle) -> ApiResult {
    let sample = handle.sample().await?;
    let body = crate::exporter::encode(&sample);
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, crate::exporter::CONTENT_TYPE)],
        body,
    )
        .into_response())
}

/// Serves `GET /metrics` alone on `listener` (the worker key
/// `metrics.listeners`), without the REST API's authentication, as a
/// Prometheus exporter does, until `shutdown` is cancelled.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    handle: WorkerHandle,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!("metrics listening on http://{addr}/metrics");
    }
    let app = Router::new()
        .route(
            "/metrics",
            get(|State(h): State<WorkerHandle>| async move { metrics_response(&h).await }),
        )
        .fallback(not_found)
        .with_state(handle);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// The values of `key` in a query string (`?expand=status&expand=info`).
fn query_values<'a>(query: &'a Option<String>, key: &str) -> Vec<&'a str> {
    query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| v)
        .collect()
}

fn query_bool(query: &Option<String>, key: &str) -> Result<bool, ApiError> {
    match query_values(query, key).last() {
        None => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(v) => Err(bad_request(format!(
            "query parameter {key}={v}: expected true or false"
        ))),
    }
}

async fn list(State(state): Shared, RawQuery(query): RawQuery) -> ApiResult {
    let names = state.handle.list().await?;
    let expand = query_values(&query, "expand");
    if expand.is_empty() {
        return ok(StatusCode::OK, json!(names));
    }
    for e in &expand {
        if *e != "status" && *e != "info" {
            return Err(bad_request(format!(
                "query parameter expand={e}: expected status or info"
            )));
        }
    }
    let mut out = serde_json::Map::new();
    for name in names {
        let mut entry = serde_json::Map::new();
        // A connector deleted meanwhile is simply left out.
        if expand.contains(&"status") {
            match state.handle.status(&name).await {
                Ok(s) => entry.insert("status".into(), json!(s)),
                Err(ControlError::NotFound(_)) => continue,
                Err(e) => return Err(e.into()),
            };
        }
        if expand.contains(&"info") {
            match state.handle.info(&name).await {
                Ok(i) => entry.insert("info".into(), info_json(&state, i)),
                Err(ControlError::NotFound(_)) => continue,
                Err(e) => return Err(e.into()),
            };
        }
        out.insert(name, Value::Object(entry));
    }
    ok(StatusCode::OK, Value::Object(out))
}

/// A JSON object of config values as flat properties (Kafka Connect takes
/// strings; numbers and booleans are accepted as their text).
fn props_of(v: &Value, what: &str) -> Result<Props, ApiError> {
    let obj = v
        .as_object()
        .ok_or_else(|| bad_request(format!("{what} must be a JSON object of strings")))?;
    let mut props = Props::new();
    for (k, v) in obj {
        let s = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => {
                return Err(bad_request(format!(
                    "{what}: the value of '{k}' must be a string"
                )))
            }
        };
        props.insert(k.clone(), s);
    }
    Ok(props)
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| bad_request(format!("the request body is not valid JSON: {e}")))
}

async fn create(State(state): Shared, body: Bytes) -> ApiResult {
    let body = parse_body(&body)?;
    let name = body
        .get("name")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| bad_request("the request must give the connector's name in \"name\""))?
        .to_string();
    let mut props = props_of(
        body.get("config")
            .ok_or_else(|| bad_request("the request must give the connector's \"config\""))?,
        "config",
    )?;
    if let Some(n) = props.get("name") {
        if n.trim() != name {
            return Err(bad_request(format!(
                "Connector name configuration ({n}) doesn't match connector name in the URL ({name})"
            )));
        }
    }
    props.insert("name".into(), name);
    let initial = match body.get("initial_state") {
        None | Some(Value::Null) => TargetState::Running,
        Some(v) => serde_json::from_value(v.clone()).map_err(|_| {
            bad_request(format!(
                "initial_state {v}: expected RUNNING, PAUSED or STOPPED"
            ))
        })?,
    };
    let info = state.handle.create(props, initial).await?;
    ok(StatusCode::CREATED, info_json(&state, info))
}

async fn info(State(state): Shared, Path(c): Path<String>) -> ApiResult {
    let info = state.handle.info(&c).await?;
    ok(StatusCode::OK, info_json(&state, info))
}

async fn get_config(State(state): Shared, Path(c): Path<String>) -> ApiResult {
    let info = state.handle.info(&c).await?;
    ok(StatusCode::OK, json!(masked(&state, &info.config)))
}

async fn put_props(state: &AppState, c: String, mut props: Props) -> ApiResult {
    if let Some(n) = props.get("name") {
        if n.trim() != c {
            return Err(bad_request(format!(
                "Connector name configuration ({n}) doesn't match connector name in the URL ({c})"
            )));
        }
    }
    props.insert("name".into(), c);
    let (info, created) = state.handle.put_config(props).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    ok(status, info_json(state, info))
}

async fn put_config(State(state): Shared, Path(c): Path<String>, body: Bytes) -> ApiResult {
    let props = props_of(&parse_body(&body)?, "the connector config")?;
    put_props(&state, c, props).await
}

async fn patch_config(State(state): Shared, Path(c): Path<String>, body: Bytes) -> ApiResult {
    let patch = parse_body(&body)?;
    let obj = patch
        .as_object()
        .ok_or_else(|| bad_request("the config patch must be a JSON object"))?;
    let mut props = state.handle.info(&c).await?.config;
    for (k, v) in obj {
        // null removes a key, as in Kafka Connect.
        if v.is_null() {
            props.remove(k);
        } else {
            let one = props_of(&json!({ k: v }), "the config patch")?;
            props.extend(one);
        }
    }
    let (info, _) = state.handle.put_config(props).await?;
    ok(StatusCode::OK, info_json(&state, info))
}

async fn status(State(state): Shared, Path(c): Path<String>) -> ApiResult {
    ok(StatusCode::OK, json!(state.handle.status(&c).await?))
}

async fn tasks(State(state): Shared, Path(c): Path<String>) -> ApiResult {
    let tasks = state.handle.tasks(&c).await?;
    let out: Vec<Value> = tasks
        .into_iter()
        .map(|t| json!({"id": t.id, "config": masked(&state, &t.config)}))
        .collect();
    ok(StatusCode::OK, json!(out))
}

fn task_number(c: &str, t: &str) -> Result<u32, ApiError> {
    t.parse().map_err(|_| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("Task {t} of connector {c} not found: task ids are numbers"),
        )
    })
}

async fn task_status(State(state): Shared, Path((c, t)): Path<(String, String)>) -> ApiResult {
    let id = task_number(&c, &t)?;
    let status = state.handle.status(&c).await?;
    let task = status
        .tasks
        .into_iter()
        .find(|s| s.id == id)
        .ok_or(ControlError::TaskNotFound(c, id))?;
    ok(StatusCode::OK, json!(task))
}

async fn task_restart(State(state): Shared, Path((c, t)): Path<(String, String)>) -> ApiResult {
    let id = task_number(&c, &t)?;
    state.handle.restart_task(&c, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn restart(State(state): Shared, Path(c): Path<String>, RawQuery(q): RawQuery) -> ApiResult {
    let include_tasks = query_bool(&q, "includeTasks")?;
    let only_failed = query_bool(&q, "onlyFailed")?;
    let status = state.handle.restart(&c, include_tasks, only_failed).await?;
    if !include_tasks && !only_failed {
        // Kafka Connect's answer to a plain connector restart.
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    ok(StatusCode::ACCEPTED, json!(status))
}

async fn target(state: &AppState, c: &str, t: TargetState, code: StatusCode) -> ApiResult {
    state.handle.set_target(c, t).await?;
    Ok(code.into_response())
}

async fn pause(State(state): Shared, Path(c): Path<String>) -> ApiResult {
    target(&state, &c, TargetState::Paused, StatusCode::ACCEPTED).await
}

async fn resume(State(state): Shared, Path(c): Path<String>) -> ApiResult {
    target(&state, &c, TargetState::Running, StatusCode::ACCEPTED).await
}

async fn stop(State(state): Shared, Path(c): Path<String>) -> ApiResult {
    target(&state, &c, TargetState::Stopped, StatusCode::NO_CONTENT).await
}

/// Kafka Connect answers 204. When the connector leaves something behind
/// in the external system (a replication slot retaining WAL), Sluice
/// answers 200 with what and how to remove it, so the caller sees it.
async fn delete(State(state): Shared, Path(c): Path<String>) -> ApiResult {
    let left = state.handle.delete(&c).await?;
    if left.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    ok(StatusCode::OK, json!({"name": c, "left_behind": left}))
}

async fn offsets(State(state): Shared, Path(c): Path<String>) -> ApiResult {
    ok(
        StatusCode::OK,
        json!({"offsets": state.handle.offsets(&c).await?}),
    )
}

async fn patch_offsets(State(state): Shared, Path(c): Path<String>, body: Bytes) -> ApiResult {
    let body = parse_body(&body)?;
    let entries = body
        .get("offsets")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            bad_request(
                "the request must give \"offsets\": [{\"partition\": {..}, \"offset\": {..}}]",
            )
        })?;
    let mut changes = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let partition = e
            .get("partition")
            .and_then(Value::as_object)
            .ok_or_else(|| {
                bad_request(format!("offsets[{i}]: \"partition\" must be a JSON object"))
            })?
            .clone();
        let offset = match e.get("offset") {
            None | Some(Value::Null) => None,
            Some(Value::Object(o)) => Some(o.clone()),
            Some(_) => {
                return Err(bad_request(format!(
                    "offsets[{i}]: \"offset\" must be a JSON object or null"
                )))
            }
        };
        changes.push(OffsetChange { partition, offset });
    }
    state.handle.alter_offsets(&c, Some(changes)).await?;
    ok(
        StatusCode::OK,
        json!({"message": "The offsets for this connector have been altered successfully"}),
    )
}

async fn delete_offsets(State(state): Shared, Path(c): Path<String>) -> ApiResult {
    state.handle.alter_offsets(&c, None).await?;
    ok(
        StatusCode::OK,
        json!({"message": "The offsets for this connector have been reset successfully"}),
    )
}

/// Sluice's own signal channel: the body is a signal as a row of
/// Debezium's signal table holds it (`{"id": ..., "type":
/// "execute-snapshot", "data": {...}}`), handed to the connector's running
/// source task.
async fn signal(State(state): Shared, Path(c): Path<String>, body: Bytes) -> ApiResult {
    // 404 for a connector that does not exist, as every other route.
    state.handle.info(&c).await?;
    let body = parse_body(&body)?;
    let mut sig: sluice_core::signal::Signal = serde_json::from_value(body).map_err(|e| {
        bad_request(format!(
            "the signal must be {{\"type\": \"execute-snapshot\", \"data\": {{...}}, \"id\": \"...\"}}: {e}"
        ))
    })?;
    if sig.id.is_empty() {
        sig.id = sluice_core::signal::new_id("rest");
    }
    let answer = json!({"id": sig.id, "type": sig.kind, "data": sig.data});
    sluice_core::signal::send(&c, sig).map_err(|e| {
        ApiError(
            StatusCode::CONFLICT,
            format!("{e}: signals go to the worker that runs the connector's task (see GET /connectors/{c}/status)"),
        )
    })?;
    ok(StatusCode::ACCEPTED, answer)
}

async fn topics(State(state): Shared, Path(c): Path<String>) -> ApiResult {
    let topics = state.handle.topics(&c).await?;
    ok(StatusCode::OK, json!({ c: {"topics": topics} }))
}

async fn reset_topics(State(state): Shared, Path(c): Path<String>) -> ApiResult {
    state.handle.reset_topics(&c).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn plugins(State(state): Shared) -> ApiResult {
    let out: Vec<Value> = state
        .handle
        .registry()
        .plugins()
        .iter()
        .map(|p| {
            json!({
                "class": p.class(),
                "type": match p.kind() {
                    sluice_core::connector::ConnectorKind::Source => "source",
                    sluice_core::connector::ConnectorKind::Sink => "sink",
                },
                "version": p.version(),
            })
        })
        .collect();
    ok(StatusCode::OK, json!(out))
}

async fn validate_config(
    State(state): Shared,
    Path(p): Path<String>,
    _headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let registry = state.handle.registry();
    // The path may name the class, its simple name or an alias.
    let plugin = registry
        .plugins()
        .iter()
        .find(|pl| validate::simple_name(pl.class()) == p)
        .cloned()
        .or_else(|| registry.lookup(&p).ok())
        .ok_or_else(|| {
            ApiError(
                StatusCode::NOT_FOUND,
                format!("Unknown connector plugin {p}"),
            )
        })?;
    let mut props = props_of(&parse_body(&body)?, "the connector config")?;
    match props.get("connector.class") {
        None => {
            props.insert("connector.class".into(), plugin.class().to_string());
        }
        Some(c) => {
            let same = registry
                .lookup(c)
                .is_ok_and(|named| named.class() == plugin.class());
            if !same {
                return Err(bad_request(format!(
                    "Included connector type {c} does not match request type {p}"
                )));
            }
        }
    }
    let (errors, _warnings) = state.handle.validate(&props).await;
    let secrets = if state.show_secrets {
        Vec::new()
    } else {
        crate::runtime::secret_values(registry, &props)
    };
    let errors: Vec<(String, String)> = errors
        .into_iter()
        .map(|e| {
            let msg = crate::runtime::scrub_secrets(&e.to_string(), &secrets);
            (e.key, msg)
        })
        .collect();
    ok(
        StatusCode::OK,
        validate::config_infos(plugin.as_ref(), &props, &errors, state.show_secrets),
    )
}
