//! Azure AD tokens for a Kusto cluster.
//!
//! A [`TokenProvider`] holds one [`Credential`] and hands out bearer tokens
//! for the cluster's resource (scope `<cluster url>/.default`):
//!
//! - client credentials: `POST {authority host}/{tenant}/oauth2/v2.0/token`
//!   with `grant_type=client_credentials`, `client_id`, `client_secret`,
//!   `scope`;
//! - managed identity: the instance metadata endpoint
//!   (`GET {imds}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=...`
//!   with `Metadata: true`, plus `client_id` for a user-assigned identity);
//!   on App Service and Container Apps (`IDENTITY_ENDPOINT` and
//!   `IDENTITY_HEADER` set) their endpoint instead
//!   (`GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=...` with
//!   `X-IDENTITY-HEADER`);
//! - workload identity: the federated token in `AZURE_FEDERATED_TOKEN_FILE`
//!   exchanged at the token endpoint as a `client_assertion`; the file is
//!   read at every exchange because the kubelet rotates it;
//! - a static token, used as is.
//!
//! The authority host defaults to `https://login.microsoftonline.com` and
//! follows `AZURE_AUTHORITY_HOST`; the metadata endpoint defaults to
//! `http://169.254.169.254` and follows `AZURE_POD_IDENTITY_AUTHORITY_HOST`,
//! as the Azure SDKs do. Plain http is refused except on loopback (and the
//! link-local metadata address, which is only served over http).
//!
//! Tokens are cached and refreshed a margin (default 5 minutes) before they
//! expire; concurrent callers wait for one refresh instead of each asking.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::Url;
use serde_json::Value as Json;
use tokio::sync::Mutex;

use crate::config::{is_loopback, AuthStrategy, KustoConfig};

/// The public cloud's authority host.
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";
/// The instance metadata service.
pub const DEFAULT_IMDS_HOST: &str = "http://169.254.169.254";
/// How long before expiry a token is refreshed by default.
pub const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
const IMDS_PATH: &str = "/metadata/identity/oauth2/token";
const IMDS_API_VERSION: &str = "2018-02-01";
const APP_SERVICE_API_VERSION: &str = "2019-08-01";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Why a token could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The credential or an endpoint is misconfigured.
    #[error("Azure AD authentication is misconfigured: {0}")]
    Config(String),
    /// The endpoint could not be reached.
    #[error("could not reach the token endpoint {endpoint}: {source}")]
    Http {
        /// The URL asked (without secrets).
        endpoint: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The endpoint refused, with Azure AD's `error` and `error_description`.
    #[error("the token endpoint {endpoint} refused the request (HTTP {status}): {error}: {description}{hint}")]
    Refused {
        /// The URL asked.
        endpoint: String,
        /// HTTP status.
        status: u16,
        /// Azure AD's `error` (e.g. `invalid_request`).
        error: String,
        /// Azure AD's `error_description` (e.g. `AADSTS90002: Tenant ... not found`).
        description: String,
        /// What to check, starting with a separator, or empty.
        hint: String,
    },
    /// The endpoint answered something that is not a token.
    #[error("the token endpoint {endpoint} answered without a usable token: {problem}")]
    BadResponse {
        /// The URL asked.
        endpoint: String,
        /// What was wrong.
        problem: String,
    },
}

/// The environment the Azure SDKs read, captured once so tests can supply
/// their own.
#[derive(Clone, Default)]
pub struct AzureEnv {
    /// `AZURE_AUTHORITY_HOST`.
    pub authority_host: Option<String>,
    /// `AZURE_TENANT_ID`.
    pub tenant_id: Option<String>,
    /// `AZURE_CLIENT_ID`.
    pub client_id: Option<String>,
    /// `AZURE_FEDERATED_TOKEN_FILE`.
    pub federated_token_file: Option<PathBuf>,
    /// `AZURE_POD_IDENTITY_AUTHORITY_HOST`: the metadata endpoint's host.
    pub imds_host: Option<String>,
    /// `IDENTITY_ENDPOINT`: App Service's and Container Apps' managed
    /// identity endpoint, used with `identity_header`.
    pub identity_endpoint: Option<String>,
    /// `IDENTITY_HEADER`: the secret App Service expects back.
    pub identity_header: Option<String>,
}

impl std::fmt::Debug for AzureEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureEnv")
            .field("authority_host", &self.authority_host)
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("federated_token_file", &self.federated_token_file)
            .field("imds_host", &self.imds_host)
            .field("identity_endpoint", &self.identity_endpoint)
            .field(
                "identity_header",
                &self.identity_header.as_ref().map(|_| "[hidden]"),
            )
            .finish()
    }
}

impl AzureEnv {
    /// The current process's environment (blank variables count as unset).
    pub fn from_process() -> AzureEnv {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        AzureEnv {
            authority_host: var("AZURE_AUTHORITY_HOST"),
            tenant_id: var("AZURE_TENANT_ID"),
            client_id: var("AZURE_CLIENT_ID"),
            federated_token_file: var("AZURE_FEDERATED_TOKEN_FILE").map(PathBuf::from),
            imds_host: var("AZURE_POD_IDENTITY_AUTHORITY_HOST"),
            identity_endpoint: var("IDENTITY_ENDPOINT"),
            identity_header: var("IDENTITY_HEADER"),
        }
    }
}

/// How tokens are obtained.
#[derive(Clone)]
pub enum Credential {
    /// Client credentials of an app registration.
    ClientSecret {
        /// Tenant id or domain.
        tenant: String,
        /// Application (client) id.
        client_id: String,
        /// The secret.
        secret: String,
    },
    /// The machine's managed identity; `client_id` picks a user-assigned one.
    ManagedIdentity {
        /// A user-assigned identity's client id.
        client_id: Option<String>,
    },
    /// A federated token file exchanged for a token.
    WorkloadIdentity {
        /// Tenant id.
        tenant: String,
        /// The app or identity's client id.
        client_id: String,
        /// The federated token file.
        token_file: PathBuf,
    },
    /// A token given in the configuration.
    Static(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::ClientSecret {
                tenant, client_id, ..
            } => write!(f, "ClientSecret {{ tenant: {tenant:?}, client_id: {client_id:?} }}"),
            Credential::ManagedIdentity { client_id } => {
                write!(f, "ManagedIdentity {{ client_id: {client_id:?} }}")
            }
            Credential::WorkloadIdentity {
                tenant,
                client_id,
                token_file,
            } => write!(
                f,
                "WorkloadIdentity {{ tenant: {tenant:?}, client_id: {client_id:?}, token_file: {token_file:?} }}"
            ),
            Credential::Static(_) => write!(f, "Static([hidden])"),
        }
    }
}

impl Credential {
    /// The credential the configuration asks for; workload identity takes
    /// the tenant, client id and token file from `env` when the
    /// configuration leaves them out, as the Azure SDKs do.
    pub fn from_config(config: &KustoConfig, env: &AzureEnv) -> Result<Credential, AuthError> {
        if let Some(token) = &config.access_token {
            return Ok(Credential::Static(token.clone()));
        }
        match config.auth_strategy {
            AuthStrategy::Application => {
                match (&config.authority, &config.app_id, &config.app_key) {
                    (Some(t), Some(c), Some(s)) => Ok(Credential::ClientSecret {
                        tenant: t.clone(),
                        client_id: c.clone(),
                        secret: s.clone(),
                    }),
                    _ => Err(AuthError::Config(
                        "aad.auth.strategy=application needs aad.auth.authority, aad.auth.appid and aad.auth.appkey".into(),
                    )),
                }
            }
            AuthStrategy::ManagedIdentity => Ok(Credential::ManagedIdentity {
                client_id: config.app_id.clone(),
            }),
            AuthStrategy::WorkloadIdentity => {
                let tenant = config.authority.clone().or_else(|| env.tenant_id.clone());
                let client_id = config.app_id.clone().or_else(|| env.client_id.clone());
                let file = env.federated_token_file.clone();
                match (tenant, client_id, file) {
                    (Some(tenant), Some(client_id), Some(token_file)) => {
                        Ok(Credential::WorkloadIdentity {
                            tenant,
                            client_id,
                            token_file,
                        })
                    }
                    (t, c, f) => {
                        let mut missing = Vec::new();
                        if t.is_none() {
                            missing.push("the tenant (aad.auth.authority or AZURE_TENANT_ID)");
                        }
                        if c.is_none() {
                            missing.push("the client id (aad.auth.appid or AZURE_CLIENT_ID)");
                        }
                        if f.is_none() {
                            missing.push("the federated token file (AZURE_FEDERATED_TOKEN_FILE)");
                        }
                        Err(AuthError::Config(format!(
                            "aad.auth.strategy=workload_identity is missing {}; in AKS these come from the workload identity webhook (pod label azure.workload.identity/use: \"true\")",
                            missing.join(", ")
                        )))
                    }
                }
            }
        }
    }
}

/// Reads the current time; replaceable so expiry can be tested without
/// waiting.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

#[derive(Clone)]
struct Cached {
    token: String,
    /// None: never expires (a static token).
    expires_at: Option<SystemTime>,
}

/// Hands out tokens for one cluster, cached and refreshed before expiry.
pub struct TokenProvider {
    credential: Credential,
    /// The cluster URL, without a trailing slash: the token's audience.
    resource: String,
    authority_host: Url,
    imds_host: Url,
    /// App Service / Container Apps: (IDENTITY_ENDPOINT, IDENTITY_HEADER).
    app_service: Option<(Url, String)>,
    refresh_margin: Duration,
    clock: Clock,
    http: reqwest::Client,
    // Managed identity endpoints are local to the host: never proxied.
    direct: reqwest::Client,
    // An async mutex held across the request makes concurrent callers wait
    // for the one refresh in flight and then reuse its token.
    cache: Mutex<Option<Cached>>,
}

impl std::fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenProvider")
            .field("credential", &self.credential)
            .field("resource", &self.resource)
            .field("authority_host", &self.authority_host.as_str())
            .field("imds_host", &self.imds_host.as_str())
            .field(
                "app_service",
                &self.app_service.as_ref().map(|(u, _)| u.as_str()),
            )
            .finish()
    }
}

/// Parses an endpoint base URL: https, or http on loopback (or, when
/// `link_local_ok`, the metadata service's link-local address).
fn endpoint(name: &str, value: &str, link_local_ok: bool) -> Result<Url, AuthError> {
    let url = Url::parse(value.trim())
        .map_err(|e| AuthError::Config(format!("{name} '{value}' is not a URL: {e}")))?;
    let host = url.host_str().unwrap_or_default();
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(host) => Ok(url),
        // Managed identity endpoints are served over http on the host's
        // link-local addresses (IMDS 169.254.169.254; Container Apps 169.254.x).
        "http" if link_local_ok && host.starts_with("169.254.") => Ok(url),
        "http" => Err(AuthError::Config(format!(
            "{name} '{value}' uses plain http, which would send credentials unencrypted; http is allowed only on loopback (127.0.0.1, localhost, [::1]): use https"
        ))),
        other => Err(AuthError::Config(format!(
            "{name} '{value}' has scheme '{other}'; use https"
        ))),
    }
}

/// A client that ignores HTTP_PROXY/HTTPS_PROXY: managed identity
/// endpoints answer only on the machine itself.
fn direct_client() -> Result<reqwest::Client, AuthError> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .no_proxy()
        .build()
        .map_err(|e| AuthError::Config(format!("could not build an HTTP client: {e}")))
}

fn http_client(proxy: Option<(&str, u16)>) -> Result<reqwest::Client, AuthError> {
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(30));
    if let Some((host, port)) = proxy {
        let url = format!("http://{host}:{port}");
        let proxy = reqwest::Proxy::all(&url).map_err(|e| {
            AuthError::Config(format!(
                "proxy.host '{host}' with proxy.port {port} is not a usable proxy: {e}"
            ))
        })?;
        builder = builder.proxy(proxy);
    }
    builder
        .build()
        .map_err(|e| AuthError::Config(format!("could not build an HTTP client: {e}")))
}

/// Joins `path` to a base URL that may itself carry a path prefix.
fn join(base: &Url, path: &str) -> String {
    format!("{}{}", base.as_str().trim_end_matches('/'), path)
}

impl TokenProvider {
    /// A provider for `resource` (the cluster URL, e.g.
    /// `https://mycluster.westeurope.kusto.windows.net`), with endpoints
    /// taken from `env` and the default refresh margin.
    pub fn new(
        credential: Credential,
        resource: &str,
        env: &AzureEnv,
    ) -> Result<TokenProvider, AuthError> {
        let authority_host = endpoint(
            "the authority host (AZURE_AUTHORITY_HOST)",
            env.authority_host
                .as_deref()
                .unwrap_or(DEFAULT_AUTHORITY_HOST),
            false,
        )?;
        let imds_host = endpoint(
            "the managed identity endpoint (AZURE_POD_IDENTITY_AUTHORITY_HOST)",
            env.imds_host.as_deref().unwrap_or(DEFAULT_IMDS_HOST),
            true,
        )?;
        let app_service = match (&env.identity_endpoint, &env.identity_header) {
            (Some(e), Some(h)) => Some((
                endpoint("the managed identity endpoint (IDENTITY_ENDPOINT)", e, true)?,
                h.clone(),
            )),
            _ => None,
        };
        let resource = resource.trim().trim_end_matches('/').to_owned();
        endpoint("the cluster URL", &resource, false)?;
        let http = http_client(None)?;
        Ok(TokenProvider {
            credential,
            resource,
            authority_host,
            imds_host,
            app_service,
            direct: direct_client()?,
            refresh_margin: DEFAULT_REFRESH_MARGIN,
            clock: Arc::new(SystemTime::now),
            http,
            cache: Mutex::new(None),
        })
    }

    /// A provider built from the connector's configuration, for the
    /// cluster's query (engine) URL.
    pub fn from_config(config: &KustoConfig, env: &AzureEnv) -> Result<TokenProvider, AuthError> {
        let p = TokenProvider::new(
            Credential::from_config(config, env)?,
            &config.query_url,
            env,
        )?;
        match &config.proxy {
            Some((host, port)) => p.with_proxy(host, *port),
            None => Ok(p),
        }
    }

    /// Sends token requests through the HTTP proxy `host:port`
    /// (`proxy.host`/`proxy.port`), as the official connector does for all
    /// its traffic.
    pub fn with_proxy(mut self, host: &str, port: u16) -> Result<Self, AuthError> {
        self.http = http_client(Some((host, port)))?;
        Ok(self)
    }

    /// Refreshes tokens this long before they expire.
    pub fn with_refresh_margin(mut self, margin: Duration) -> Self {
        self.refresh_margin = margin;
        self
    }

    /// Reads the time from `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The scope asked for: `<resource>/.default`.
    pub fn scope(&self) -> String {
        format!("{}/.default", self.resource)
    }

    /// A valid token: the cached one unless it expires within the refresh
    /// margin. When a refresh fails while the cached token is still valid,
    /// the cached token is returned (and the failure logged), so a short
    /// Azure AD outage does not stop ingestion; the next call tries again.
    pub async fn token(&self) -> Result<String, AuthError> {
        let mut cache = self.cache.lock().await;
        let now = (self.clock)();
        if let Some(c) = cache.as_ref() {
            let fresh = match c.expires_at {
                None => true,
                Some(at) => now + self.refresh_margin < at,
            };
            if fresh {
                return Ok(c.token.clone());
            }
        }
        let fetched = match self.fetch(now).await {
            Ok(f) => f,
            Err(e) => {
                if let Some(c) = cache.as_ref() {
                    if c.expires_at.is_some_and(|at| now < at) {
                        tracing::warn!(
                            "refreshing the Azure AD token failed; the current one is still valid and is used meanwhile: {e}"
                        );
                        return Ok(c.token.clone());
                    }
                }
                return Err(e);
            }
        };
        let token = fetched.token.clone();
        *cache = Some(fetched);
        Ok(token)
    }

    /// Forgets the cached token (e.g. after the cluster answered 401).
    pub async fn invalidate(&self) {
        *self.cache.lock().await = None;
    }

    async fn fetch(&self, now: SystemTime) -> Result<Cached, AuthError> {
        match &self.credential {
            Credential::Static(token) => Ok(Cached {
                token: token.clone(),
                expires_at: None,
            }),
            Credential::ClientSecret {
                tenant,
                client_id,
                secret,
            } => {
                let form = [
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id.as_str()),
                    ("client_secret", secret.as_str()),
                    ("scope", &self.scope()),
                ];
                self.post_token(tenant, &form, now).await
            }
            Credential::WorkloadIdentity {
                tenant,
                client_id,
                token_file,
            } => {
                let assertion = tokio::fs::read_to_string(token_file).await.map_err(|e| {
                    AuthError::Config(format!(
                        "could not read the federated token file {} (AZURE_FEDERATED_TOKEN_FILE): {e}",
                        token_file.display()
                    ))
                })?;
                let assertion = assertion.trim();
                if assertion.is_empty() {
                    return Err(AuthError::Config(format!(
                        "the federated token file {} (AZURE_FEDERATED_TOKEN_FILE) is empty",
                        token_file.display()
                    )));
                }
                let form = [
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id.as_str()),
                    ("client_assertion_type", JWT_BEARER),
                    ("client_assertion", assertion),
                    ("scope", &self.scope()),
                ];
                self.post_token(tenant, &form, now).await
            }
            Credential::ManagedIdentity { client_id } => {
                let mut query = vec![("resource", self.resource.as_str())];
                if let Some(id) = client_id {
                    query.push(("client_id", id.as_str()));
                }
                let (url, req) = match &self.app_service {
                    Some((base, secret)) => {
                        query.push(("api-version", APP_SERVICE_API_VERSION));
                        let url = base.as_str().to_owned();
                        let req = self.direct.get(&url).header("X-IDENTITY-HEADER", secret);
                        (url, req)
                    }
                    None => {
                        query.push(("api-version", IMDS_API_VERSION));
                        let url = join(&self.imds_host, IMDS_PATH);
                        let req = self.direct.get(&url).header("Metadata", "true");
                        (url, req)
                    }
                };
                self.send(req.query(&query), &url, now).await
            }
        }
    }

    async fn post_token(
        &self,
        tenant: &str,
        form: &[(&str, &str)],
        now: SystemTime,
    ) -> Result<Cached, AuthError> {
        if tenant.is_empty() || tenant.contains(['/', '?', '#']) {
            return Err(AuthError::Config(format!(
                "the tenant '{tenant}' (aad.auth.authority) must be a tenant id or domain, not a URL"
            )));
        }
        let url = join(
            &self.authority_host,
            &format!("/{tenant}/oauth2/v2.0/token"),
        );
        let req = self.http.post(&url).form(form);
        self.send(req, &url, now).await
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        url: &str,
        now: SystemTime,
    ) -> Result<Cached, AuthError> {
        let http_err = |source| AuthError::Http {
            endpoint: url.to_owned(),
            source,
        };
        let resp = req.send().await.map_err(http_err)?;
        let status = resp.status();
        let body = resp.text().await.map_err(http_err)?;
        let json: Option<Json> = serde_json::from_str(&body).ok();
        if !status.is_success() {
            let field = |k: &str| {
                json.as_ref()
                    .and_then(|j| j.get(k))
                    .and_then(Json::as_str)
                    .map(str::to_owned)
            };
            let error = field("error").unwrap_or_else(|| "no error code".to_owned());
            let description = field("error_description").unwrap_or_else(|| {
                let snippet: String = body.chars().take(300).collect();
                if snippet.is_empty() {
                    "empty body".to_owned()
                } else {
                    snippet
                }
            });
            let hint = hint(&description, &self.credential);
            return Err(AuthError::Refused {
                endpoint: url.to_owned(),
                status: status.as_u16(),
                error,
                description,
                hint,
            });
        }
        let bad = |problem: String| AuthError::BadResponse {
            endpoint: url.to_owned(),
            problem,
        };
        let json = json.ok_or_else(|| bad("the body is not JSON".into()))?;
        let token = json
            .get("access_token")
            .and_then(Json::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| bad("no 'access_token'".into()))?
            .to_owned();
        let expires_at = expiry(&json, now).ok_or_else(|| {
            bad("no usable 'expires_in' or 'expires_on' (seconds, as a number or a string)".into())
        })?;
        Ok(Cached {
            token,
            expires_at: Some(expires_at),
        })
    }
}

/// When the token expires: `expires_in` (seconds from now) or `expires_on`
/// (Unix seconds); Azure AD sends numbers, the metadata service strings.
fn expiry(json: &Json, now: SystemTime) -> Option<SystemTime> {
    let secs = |k: &str| -> Option<u64> {
        match json.get(k)? {
            Json::Number(n) => n.as_u64(),
            Json::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    };
    if let Some(s) = secs("expires_in") {
        return Some(now + Duration::from_secs(s));
    }
    secs("expires_on").map(|s| UNIX_EPOCH + Duration::from_secs(s))
}

/// What to check for the common Azure AD errors.
fn hint(description: &str, credential: &Credential) -> String {
    let code = |c: &str| description.contains(c);
    let h = if code("AADSTS90002") || code("AADSTS90013") {
        "the tenant was not found: check aad.auth.authority (the directory's tenant id or domain) and, outside the public cloud, AZURE_AUTHORITY_HOST"
    } else if code("AADSTS7000215") || code("AADSTS7000222") {
        "the client secret is wrong or expired: check aad.auth.appkey (the secret's value, not its id)"
    } else if code("AADSTS700016") {
        "the application was not found in this tenant: check aad.auth.appid and aad.auth.authority"
    } else if code("AADSTS500011") || code("AADSTS70011") {
        "the resource or scope is not valid: check kusto.ingestion.url / kusto.query.url"
    } else if code("AADSTS700213") || code("AADSTS70021") || code("AADSTS700024") {
        "the federated token was refused: check the identity's federated credential (issuer, subject = the service account) and that the token file is current"
    } else if matches!(credential, Credential::ManagedIdentity { .. }) {
        "check that the machine has a managed identity assigned (and aad.auth.appid for a user-assigned one)"
    } else {
        ""
    };
    if h.is_empty() {
        String::new()
    } else {
        format!(" (hint: {h})")
    }
}
