//! Token acquisition against a local server that implements Azure AD's
//! token endpoint and the instance metadata endpoint as documented, and
//! refuses any request that differs from the documented one.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde_json::json;
use sluice_core::config::props_from;
use sluice_kusto::auth::{AuthError, AzureEnv, Credential, TokenProvider};
use sluice_kusto::config::KustoConfig;

const TENANT: &str = "tenant-a";
const CLIENT: &str = "client-1";
const SECRET: &str = "s3cret";
const ASSERTION: &str = "federated-jwt";
const CLUSTER: &str = "https://mycluster.westeurope.kusto.windows.net";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

#[derive(Default)]
struct Server {
    /// Tokens issued.
    issued: AtomicUsize,
    /// Requests refused for not matching the contract, with why.
    refused: Mutex<Vec<String>>,
    /// `expires_in` of issued tokens.
    expires_in: u64,
    /// When set, the token endpoint answers 503 (an outage).
    down: AtomicBool,
}

type Shared = Arc<Server>;

fn refuse(s: &Server, status: StatusCode, error: &str, description: &str) -> Response {
    if let Ok(mut r) = s.refused.lock() {
        r.push(format!("{error}: {description}"));
    }
    (
        status,
        Json(json!({"error": error, "error_description": description, "error_codes": []})),
    )
        .into_response()
}

async fn token_endpoint(
    State(s): State<Shared>,
    Path(tenant): Path<String>,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    if s.down.load(Ordering::SeqCst) {
        return refuse(
            &s,
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "AADSTS90033: A transient error has occurred.",
        );
    }
    if tenant != TENANT {
        return refuse(
            &s,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("AADSTS90002: Tenant '{tenant}' not found."),
        );
    }
    let field = |k: &str| form.get(k).map(String::as_str);
    let scope = format!("{CLUSTER}/.default");
    let common = field("grant_type") == Some("client_credentials")
        && field("client_id") == Some(CLIENT)
        && field("scope") == Some(scope.as_str());
    let secret = form.len() == 4 && field("client_secret") == Some(SECRET);
    let federated = form.len() == 5
        && field("client_assertion_type") == Some(JWT_BEARER)
        && field("client_assertion") == Some(ASSERTION);
    if !(common && (secret || federated)) {
        return refuse(
            &s,
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            &format!("AADSTS7000215: Invalid client secret provided. Form: {form:?}"),
        );
    }
    let n = s.issued.fetch_add(1, Ordering::SeqCst) + 1;
    Json(json!({
        "token_type": "Bearer",
        "expires_in": s.expires_in,
        "ext_expires_in": s.expires_in,
        "access_token": format!("aad-{n}"),
    }))
    .into_response()
}

async fn imds(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let field = |k: &str| q.get(k).map(String::as_str);
    if headers.get("Metadata").and_then(|v| v.to_str().ok()) != Some("true") {
        return refuse(
            &s,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required metadata header not specified",
        );
    }
    let client_ok = match field("client_id") {
        None => q.len() == 2,
        Some(c) => c == CLIENT && q.len() == 3,
    };
    if field("api-version") != Some("2018-02-01")
        || field("resource") != Some(CLUSTER)
        || !client_ok
    {
        return refuse(
            &s,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("unexpected query {q:?}"),
        );
    }
    let n = s.issued.fetch_add(1, Ordering::SeqCst) + 1;
    // The metadata service sends numbers as strings.
    Json(json!({
        "access_token": format!("mi-{n}-{}", field("client_id").unwrap_or("system")),
        "expires_in": s.expires_in.to_string(),
        "expires_on": "1700000000",
        "resource": CLUSTER,
        "token_type": "Bearer",
    }))
    .into_response()
}

async fn app_service(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let field = |k: &str| q.get(k).map(String::as_str);
    if headers
        .get("X-IDENTITY-HEADER")
        .and_then(|v| v.to_str().ok())
        != Some("identity-secret")
        || headers.contains_key("Metadata")
    {
        return refuse(
            &s,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "bad X-IDENTITY-HEADER",
        );
    }
    let client_ok = match field("client_id") {
        None => q.len() == 2,
        Some(c) => c == CLIENT && q.len() == 3,
    };
    if field("api-version") != Some("2019-08-01")
        || field("resource") != Some(CLUSTER)
        || !client_ok
    {
        return refuse(
            &s,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("unexpected query {q:?}"),
        );
    }
    let n = s.issued.fetch_add(1, Ordering::SeqCst) + 1;
    // App Service sends only expires_on, as a string of Unix seconds.
    Json(json!({
        "access_token": format!("app-{n}"),
        "expires_on": "1600003600",
        "resource": CLUSTER,
        "token_type": "Bearer",
    }))
    .into_response()
}

async fn fallback(State(s): State<Shared>, uri: axum::http::Uri) -> Response {
    refuse(
        &s,
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("no such endpoint {uri}"),
    )
}

/// Starts the server; returns its base URL and state.
async fn start(expires_in: u64) -> (String, Shared) {
    let state = Arc::new(Server {
        expires_in,
        ..Server::default()
    });
    let app = Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token_endpoint))
        .route("/metadata/identity/oauth2/token", get(imds))
        .route("/msi/token", get(app_service))
        .fallback(fallback)
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a local port");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), state)
}

fn env(base: &str) -> AzureEnv {
    AzureEnv {
        authority_host: Some(base.to_owned()),
        imds_host: Some(base.to_owned()),
        ..AzureEnv::default()
    }
}

fn client_secret(tenant: &str, secret: &str) -> Credential {
    Credential::ClientSecret {
        tenant: tenant.into(),
        client_id: CLIENT.into(),
        secret: secret.into(),
    }
}

fn issued(s: &Server) -> usize {
    s.issued.load(Ordering::SeqCst)
}

fn refused(s: &Server) -> Vec<String> {
    s.refused.lock().map(|r| r.clone()).unwrap_or_default()
}

#[tokio::test]
async fn client_credentials_then_cached() {
    let (base, server) = start(3600).await;
    let p =
        TokenProvider::new(client_secret(TENANT, SECRET), CLUSTER, &env(&base)).expect("provider");
    assert_eq!(p.token().await.expect("token"), "aad-1");
    assert_eq!(p.token().await.expect("cached token"), "aad-1");
    assert_eq!(issued(&server), 1, "the second call must use the cache");
    assert!(refused(&server).is_empty(), "{:?}", refused(&server));
}

#[tokio::test]
async fn refreshes_within_the_margin_and_callers_share_one_refresh() {
    let (base, server) = start(3600).await;
    let now = Arc::new(Mutex::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
    ));
    let clock = {
        let now = now.clone();
        Arc::new(move || now.lock().map(|t| *t).unwrap_or(SystemTime::UNIX_EPOCH))
    };
    let advance = |secs: u64| {
        if let Ok(mut t) = now.lock() {
            *t += Duration::from_secs(secs);
        }
    };
    let p = Arc::new(
        TokenProvider::new(client_secret(TENANT, SECRET), CLUSTER, &env(&base))
            .expect("provider")
            .with_refresh_margin(Duration::from_secs(300))
            .with_clock(clock),
    );
    assert_eq!(p.token().await.expect("token"), "aad-1");
    // 3299 s later the token still has 301 s left: outside the margin.
    advance(3299);
    assert_eq!(p.token().await.expect("token"), "aad-1");
    assert_eq!(issued(&server), 1);
    // One second later it is inside the 300 s margin: refreshed, once, for
    // all the callers that ask at the same moment.
    advance(1);
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let p = p.clone();
        calls.spawn(async move { p.token().await });
    }
    while let Some(r) = calls.join_next().await {
        assert_eq!(r.expect("task").expect("token"), "aad-2");
    }
    assert_eq!(issued(&server), 2);
    p.invalidate().await;
    assert_eq!(p.token().await.expect("token"), "aad-3");

    // During an outage the token, inside the margin but not expired, is
    // still handed out; once expired, the outage is reported.
    server.down.store(true, Ordering::SeqCst);
    advance(3500);
    assert_eq!(p.token().await.expect("still valid"), "aad-3");
    advance(100);
    let e = p.token().await.expect_err("expired during the outage");
    assert!(e.to_string().contains("AADSTS90033"), "{e}");
    server.down.store(false, Ordering::SeqCst);
    assert_eq!(p.token().await.expect("token"), "aad-4");
}

#[tokio::test]
async fn short_lived_tokens_are_refreshed_every_time() {
    // expires_in (60 s) below the margin (300 s): every call refreshes.
    let (base, server) = start(60).await;
    let p =
        TokenProvider::new(client_secret(TENANT, SECRET), CLUSTER, &env(&base)).expect("provider");
    assert_eq!(p.token().await.expect("token"), "aad-1");
    assert_eq!(p.token().await.expect("token"), "aad-2");
    assert_eq!(issued(&server), 2);
}

#[tokio::test]
async fn managed_identity_system_and_user_assigned() {
    let (base, server) = start(86_399).await;
    let system = TokenProvider::new(
        Credential::ManagedIdentity { client_id: None },
        CLUSTER,
        &env(&base),
    )
    .expect("provider");
    assert_eq!(system.token().await.expect("token"), "mi-1-system");
    assert_eq!(system.token().await.expect("cached"), "mi-1-system");
    let user = TokenProvider::new(
        Credential::ManagedIdentity {
            client_id: Some(CLIENT.into()),
        },
        &format!("{CLUSTER}/"),
        &env(&base),
    )
    .expect("provider");
    assert_eq!(user.token().await.expect("token"), format!("mi-2-{CLIENT}"));
    assert!(refused(&server).is_empty(), "{:?}", refused(&server));
}

#[tokio::test]
async fn managed_identity_on_app_service_and_container_apps() {
    let (base, server) = start(3600).await;
    let env = AzureEnv {
        identity_endpoint: Some(format!("{base}/msi/token")),
        identity_header: Some("identity-secret".into()),
        ..env(&base)
    };
    assert!(!format!("{env:?}").contains("identity-secret"));
    let p = TokenProvider::new(
        Credential::ManagedIdentity {
            client_id: Some(CLIENT.into()),
        },
        CLUSTER,
        &env,
    )
    .expect("provider")
    .with_clock(Arc::new(|| {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000)
    }));
    assert_eq!(p.token().await.expect("token"), "app-1");
    // expires_on, an hour after the injected "now", keeps it cached.
    assert_eq!(p.token().await.expect("cached"), "app-1");
    assert_eq!(issued(&server), 1);
    assert!(refused(&server).is_empty(), "{:?}", refused(&server));
}

#[tokio::test]
async fn managed_identity_from_config() {
    let (base, server) = start(3600).await;
    let config = KustoConfig::from_props(&props_from(&[
        (
            "kusto.ingestion.url",
            "https://ingest-mycluster.westeurope.kusto.windows.net",
        ),
        ("aad.auth.strategy", "managed_identity"),
        (
            "kusto.tables.topics.mapping",
            "[{'topic':'t','db':'D','table':'T'}]",
        ),
    ]))
    .expect("config");
    // The token's audience is the engine (query) URL.
    let p = TokenProvider::from_config(&config, &env(&base)).expect("provider");
    assert_eq!(p.scope(), format!("{CLUSTER}/.default"));
    assert_eq!(p.token().await.expect("token"), "mi-1-system");
    assert_eq!(issued(&server), 1);
}

#[tokio::test]
async fn workload_identity_reads_the_token_file_and_environment() {
    let (base, server) = start(3600).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{ASSERTION}\n")).expect("write token file");
    let config = KustoConfig::from_props(&props_from(&[
        (
            "kusto.ingestion.url",
            "https://ingest-mycluster.westeurope.kusto.windows.net",
        ),
        ("aad.auth.strategy", "workload_identity"),
        (
            "kusto.tables.topics.mapping",
            "[{'topic':'t','db':'D','table':'T'}]",
        ),
    ]))
    .expect("config");
    let env = AzureEnv {
        tenant_id: Some(TENANT.into()),
        client_id: Some(CLIENT.into()),
        federated_token_file: Some(file.clone()),
        ..env(&base)
    };
    let p = TokenProvider::from_config(&config, &env).expect("provider");
    assert_eq!(p.token().await.expect("token"), "aad-1");
    assert!(refused(&server).is_empty(), "{:?}", refused(&server));

    // A missing file is named in the error.
    std::fs::remove_file(&file).expect("remove token file");
    p.invalidate().await;
    let e = p.token().await.expect_err("no token file").to_string();
    assert!(
        e.contains("AZURE_FEDERATED_TOKEN_FILE") && e.contains("token"),
        "{e}"
    );

    // Without the environment, what is missing is named.
    let e = Credential::from_config(&config, &AzureEnv::default())
        .expect_err("nothing configured")
        .to_string();
    assert!(
        e.contains("AZURE_TENANT_ID") && e.contains("AZURE_FEDERATED_TOKEN_FILE"),
        "{e}"
    );
}

#[tokio::test]
async fn static_token_makes_no_request() {
    let (base, server) = start(3600).await;
    let config = KustoConfig::from_props(&props_from(&[
        (
            "kusto.url",
            "https://ingest-mycluster.westeurope.kusto.windows.net",
        ),
        ("aad.auth.accesstoken", "given-token"),
        (
            "kusto.tables.topics.mapping",
            "[{'topic':'t','db':'D','table':'T'}]",
        ),
    ]))
    .expect("config");
    let p = TokenProvider::from_config(&config, &env(&base)).expect("provider");
    assert_eq!(p.token().await.expect("token"), "given-token");
    assert_eq!(p.token().await.expect("token"), "given-token");
    assert_eq!(issued(&server), 0);
    assert!(!format!("{p:?}").contains("given-token"));
}

#[tokio::test]
async fn aad_errors_are_surfaced_with_a_hint() {
    let (base, server) = start(3600).await;
    let wrong_tenant = TokenProvider::new(
        client_secret("no-such-tenant", SECRET),
        CLUSTER,
        &env(&base),
    )
    .expect("provider");
    let e = wrong_tenant.token().await.expect_err("wrong tenant");
    assert!(matches!(e, AuthError::Refused { status: 400, .. }), "{e:?}");
    let text = e.to_string();
    assert!(text.contains("invalid_request"), "{text}");
    assert!(
        text.contains("AADSTS90002: Tenant 'no-such-tenant' not found"),
        "{text}"
    );
    assert!(
        text.contains("hint") && text.contains("aad.auth.authority"),
        "{text}"
    );

    let wrong_secret =
        TokenProvider::new(client_secret(TENANT, "nope"), CLUSTER, &env(&base)).expect("provider");
    let text = wrong_secret
        .token()
        .await
        .expect_err("wrong secret")
        .to_string();
    assert!(
        text.contains("AADSTS7000215") && text.contains("aad.auth.appkey"),
        "{text}"
    );
    assert_eq!(issued(&server), 0);
}

#[tokio::test]
async fn requests_go_through_the_configured_proxy() {
    let (base, server) = start(3600).await;
    let port: u16 = base
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("server port");
    // The authority host is unreachable; only the proxy (our server, which
    // receives the request in absolute form) can answer.
    let config = KustoConfig::from_props(&props_from(&[
        (
            "kusto.url",
            "https://ingest-mycluster.westeurope.kusto.windows.net",
        ),
        ("aad.auth.authority", TENANT),
        ("aad.auth.appid", CLIENT),
        ("aad.auth.appkey", SECRET),
        (
            "kusto.tables.topics.mapping",
            "[{'topic':'t','db':'D','table':'T'}]",
        ),
        ("proxy.host", "127.0.0.1"),
        ("proxy.port", &port.to_string()),
    ]))
    .expect("config");
    let unreachable = AzureEnv {
        authority_host: Some("http://127.0.0.1:1".into()),
        ..AzureEnv::default()
    };
    let p = TokenProvider::from_config(&config, &unreachable).expect("provider");
    assert_eq!(p.token().await.expect("token through the proxy"), "aad-1");
    assert_eq!(issued(&server), 1);
}

#[tokio::test]
async fn plain_http_is_refused_off_loopback() {
    for host in ["http://login.example.com", "http://10.0.0.5:8080"] {
        let e = TokenProvider::new(
            client_secret(TENANT, SECRET),
            CLUSTER,
            &AzureEnv {
                authority_host: Some(host.into()),
                ..AzureEnv::default()
            },
        )
        .expect_err("http authority host")
        .to_string();
        assert!(
            e.contains(host) && e.contains("plain http") && e.contains("loopback"),
            "{e}"
        );
    }
    let e = TokenProvider::new(
        client_secret(TENANT, SECRET),
        "http://mycluster.kusto.windows.net",
        &AzureEnv::default(),
    )
    .expect_err("http cluster")
    .to_string();
    assert!(e.contains("plain http"), "{e}");
    // Loopback and the defaults are fine.
    for host in ["http://127.0.0.1:1", "http://localhost:1", "http://[::1]:1"] {
        TokenProvider::new(
            client_secret(TENANT, SECRET),
            CLUSTER,
            &AzureEnv {
                authority_host: Some(host.into()),
                ..AzureEnv::default()
            },
        )
        .expect("loopback http is allowed");
    }
    TokenProvider::new(
        Credential::ManagedIdentity { client_id: None },
        CLUSTER,
        &AzureEnv::default(),
    )
    .expect("default endpoints");
}
