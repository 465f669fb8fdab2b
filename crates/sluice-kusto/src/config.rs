//! The Kusto sink's configuration: the official Kafka Connect Kusto sink's
//! properties and defaults, plus Sluice's own `kusto.ingestion.dedup`,
//! `kusto.tables.create` and `kusto.ingestion.status.check`.
//!
//! [`KustoConfig::from_props`] checks every key and reports all problems
//! together, each naming the key, the value (never for `aad.auth.appkey`,
//! `aad.auth.accesstoken` or `*.sasl.jaas.config`) and what is allowed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;
use serde_json::Value as Json;
use sluice_core::config::{ConfigDef, ConfigError, ConfigErrors, ConfigKey, ConfigType, Props};

/// The ingestion (data management) endpoint; `kusto.url` before 2.0.
pub const INGESTION_URL: &str = "kusto.ingestion.url";
/// The 1.x name of [`INGESTION_URL`].
pub const INGESTION_URL_1X: &str = "kusto.url";
/// The engine (query) endpoint.
pub const QUERY_URL: &str = "kusto.query.url";
/// `application`, `managed_identity` or `workload_identity`.
pub const AUTH_STRATEGY: &str = "aad.auth.strategy";
/// The Azure AD tenant.
pub const AUTH_AUTHORITY: &str = "aad.auth.authority";
/// The application (client) id.
pub const AUTH_APPID: &str = "aad.auth.appid";
/// The application's secret.
pub const AUTH_APPKEY: &str = "aad.auth.appkey";
/// A ready access token.
pub const AUTH_ACCESSTOKEN: &str = "aad.auth.accesstoken";
/// Which topic goes to which database and table.
pub const MAPPING: &str = "kusto.tables.topics.mapping";
/// Bytes buffered per topic-partition before a batch is ingested.
pub const FLUSH_SIZE_BYTES: &str = "flush.size.bytes";
/// Longest time a batch is buffered before it is ingested.
pub const FLUSH_INTERVAL_MS: &str = "flush.interval.ms";
/// Where batches are buffered.
pub const TEMPDIR_PATH: &str = "tempdir.path";
/// `fail`, `log` or `ignore`.
pub const BEHAVIOR_ON_ERROR: &str = "behavior.on.error";
/// How long a failing ingestion is retried.
pub const RETRY_MAX_TIME_MS: &str = "errors.retry.max.time.ms";
/// Pause between retries.
pub const RETRY_BACKOFF_MS: &str = "errors.retry.backoff.time.ms";
/// Whether the tables are checked at start.
pub const VALIDATION_TABLE: &str = "kusto.validation.table.enable";
/// HTTP proxy host.
pub const PROXY_HOST: &str = "proxy.host";
/// HTTP proxy port.
pub const PROXY_PORT: &str = "proxy.port";
/// Sluice: tag extents so a replayed batch is not ingested twice.
pub const DEDUP: &str = "kusto.ingestion.dedup";
/// Sluice: create missing tables.
pub const TABLES_CREATE: &str = "kusto.tables.create";
/// Sluice: follow each queued ingestion to its outcome.
pub const STATUS_CHECK: &str = "kusto.ingestion.status.check";
/// Sluice: drop a topic partition's older snapshot generations once a
/// new snapshot is complete in the table.
pub const SNAPSHOT_RECONCILE: &str = "kusto.snapshot.reconcile";
/// Records that fail conversion.
pub const ERRORS_DLQ_PREFIX: &str = "errors.deadletterqueue.";
/// Batches that fail for network, ADX or temporary-file reasons.
pub const MISC_DLQ_PREFIX: &str = "misc.deadletterqueue.";

/// Default `flush.size.bytes`: 1 MB.
pub const DEFAULT_FLUSH_SIZE_BYTES: u64 = 1024 * 1024;
/// Default `flush.interval.ms`: 30 s.
pub const DEFAULT_FLUSH_INTERVAL_MS: u64 = 30_000;
/// Default `errors.retry.max.time.ms`: 5 minutes.
pub const DEFAULT_RETRY_MAX_TIME_MS: u64 = 300_000;
/// Default `errors.retry.backoff.time.ms`: 10 s.
pub const DEFAULT_RETRY_BACKOFF_MS: u64 = 10_000;
/// Smallest `flush.size.bytes` and `flush.interval.ms`, as the official
/// connector enforces.
pub const MIN_FLUSH: u64 = 100;

/// Ingestion formats ADX accepts, as spelled in the mapping's `format`.
pub const FORMATS: &[&str] = &[
    "json",
    "multijson",
    "singlejson",
    "csv",
    "tsv",
    "scsv",
    "sohsv",
    "psv",
    "txt",
    "tsve",
    "raw",
    "w3clogfile",
    "avro",
    "apacheavro",
    "parquet",
    "orc",
    "protobuf",
];

const STRATEGIES: &[&str] = &["application", "managed_identity", "workload_identity"];
const BEHAVIORS: &[&str] = &["fail", "log", "ignore"];
const MAPPING_FIELDS: &[&str] = &["topic", "db", "table", "format", "mapping", "streaming"];
const DLQ_SECRET_SUFFIXES: &[&str] = &["sasl.jaas.config", "password"];

/// How the sink gets its Azure AD tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthStrategy {
    /// An app registration's id and secret (client credentials).
    Application,
    /// The machine's managed identity (instance metadata endpoint).
    ManagedIdentity,
    /// A Kubernetes workload identity (federated token file).
    WorkloadIdentity,
}

/// What happens when a record or a batch fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BehaviorOnError {
    /// Stop the task.
    Fail,
    /// Log the failure and go on.
    Log,
    /// Go on silently.
    Ignore,
}

/// Where one topic's records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMapping {
    /// The topic, or `*` for every topic not listed.
    pub topic: String,
    /// The database.
    pub db: String,
    /// The table.
    pub table: String,
    /// The ingestion format, lower case (one of [`FORMATS`]).
    pub format: String,
    /// The table's ingestion mapping, if any.
    pub mapping: Option<String>,
    /// Streaming ingestion instead of queued.
    pub streaming: bool,
}

/// A dead-letter queue (`errors.deadletterqueue.*` or
/// `misc.deadletterqueue.*`).
#[derive(Clone, PartialEq, Eq)]
pub struct DeadLetterQueue {
    /// `bootstrap.servers`; None: the worker's own Kafka cluster (only for
    /// `errors.deadletterqueue.*`, Kafka Connect's own queue).
    pub bootstrap_servers: Option<String>,
    /// `topic.name`.
    pub topic: String,
    /// Every other property under the prefix (producer settings such as
    /// `security.protocol`, `sasl.mechanism`, `sasl.jaas.config`), without
    /// the prefix.
    pub producer: BTreeMap<String, String>,
}

impl std::fmt::Debug for DeadLetterQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // JAAS configs carry passwords: only their presence is shown.
        let producer: BTreeMap<&str, &str> = self
            .producer
            .iter()
            .map(|(k, v)| (k.as_str(), if is_secret(k) { "[hidden]" } else { v }))
            .collect();
        f.debug_struct("DeadLetterQueue")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("topic", &self.topic)
            .field("producer", &producer)
            .finish()
    }
}

/// The parsed configuration.
#[derive(Clone)]
pub struct KustoConfig {
    /// The ingestion (data management) endpoint, without a trailing slash.
    pub ingestion_url: String,
    /// The engine endpoint, without a trailing slash: `kusto.query.url`, or
    /// the ingestion URL without its `ingest-` host prefix.
    pub query_url: String,
    /// How tokens are obtained.
    pub auth_strategy: AuthStrategy,
    /// The tenant (`aad.auth.authority`).
    pub authority: Option<String>,
    /// The application or user-assigned identity's client id.
    pub app_id: Option<String>,
    /// The application's secret.
    pub app_key: Option<String>,
    /// A static access token; when set, no token is requested.
    pub access_token: Option<String>,
    /// Topic mappings, in the order given.
    pub mappings: Vec<TopicMapping>,
    /// Bytes buffered per topic-partition before a batch is ingested.
    pub flush_size_bytes: u64,
    /// Longest time a batch is buffered.
    pub flush_interval: Duration,
    /// Where batches are buffered.
    pub temp_dir: PathBuf,
    /// What happens on failure.
    pub behavior_on_error: BehaviorOnError,
    /// How long failures are retried.
    pub retry_max_time: Duration,
    /// Pause between retries (constant, as in the official connector).
    pub retry_backoff: Duration,
    /// Dead-letter queue for records that fail conversion.
    pub errors_dlq: Option<DeadLetterQueue>,
    /// Dead-letter queue for batches that fail to reach ADX.
    pub misc_dlq: Option<DeadLetterQueue>,
    /// Check at start that each mapped table exists and is writable.
    pub validate_tables: bool,
    /// HTTP proxy (host, port).
    pub proxy: Option<(String, u16)>,
    /// Tag extents and ingest with `ingestIfNotExists` so replays are no-ops.
    pub dedup: bool,
    /// Create missing tables.
    pub create_tables: bool,
    /// Follow queued ingestions to their outcome.
    pub status_check: bool,
    /// Drop older snapshot generations when a snapshot completes.
    pub reconcile: bool,
}

impl std::fmt::Debug for KustoConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |s: &Option<String>| s.as_ref().map(|_| "[hidden]");
        f.debug_struct("KustoConfig")
            .field("ingestion_url", &self.ingestion_url)
            .field("query_url", &self.query_url)
            .field("auth_strategy", &self.auth_strategy)
            .field("authority", &self.authority)
            .field("app_id", &self.app_id)
            .field("app_key", &hidden(&self.app_key))
            .field("access_token", &hidden(&self.access_token))
            .field("mappings", &self.mappings)
            .field("flush_size_bytes", &self.flush_size_bytes)
            .field("flush_interval", &self.flush_interval)
            .field("temp_dir", &self.temp_dir)
            .field("behavior_on_error", &self.behavior_on_error)
            .field("retry_max_time", &self.retry_max_time)
            .field("retry_backoff", &self.retry_backoff)
            .field("errors_dlq", &self.errors_dlq)
            .field("misc_dlq", &self.misc_dlq)
            .field("validate_tables", &self.validate_tables)
            .field("proxy", &self.proxy)
            .field("dedup", &self.dedup)
            .field("create_tables", &self.create_tables)
            .field("status_check", &self.status_check)
            .field("reconcile", &self.reconcile)
            .finish()
    }
}

fn is_secret(key: &str) -> bool {
    key == AUTH_APPKEY
        || key == AUTH_ACCESSTOKEN
        || DLQ_SECRET_SUFFIXES.iter().any(|s| key.ends_with(s))
}

/// Reads keys from the props, collecting every error.
struct Reader<'a> {
    props: &'a Props,
    errors: Vec<ConfigError>,
}

impl<'a> Reader<'a> {
    fn err(&mut self, key: &str, value: Option<&str>, message: impl Into<String>) {
        let shown = value.map(|v| if is_secret(key) { "[hidden]" } else { v });
        self.errors.push(ConfigError::new(key, shown, message));
    }

    /// The trimmed value of `key`, None when unset or blank.
    fn get(&self, key: &str) -> Option<(&'a str, &'a str)> {
        self.props
            .get_key_value(key)
            .map(|(k, v)| (k.as_str(), v.trim()))
            .filter(|(_, v)| !v.is_empty())
    }

    fn string(&self, key: &str) -> Option<String> {
        self.get(key).map(|(_, v)| v.to_owned())
    }

    fn bool(&mut self, key: &str, default: bool) -> bool {
        match self.get(key) {
            None => default,
            Some((_, v)) if v.eq_ignore_ascii_case("true") => true,
            Some((_, v)) if v.eq_ignore_ascii_case("false") => false,
            Some((k, v)) => {
                self.err(k, Some(v), "expected a boolean: true or false");
                default
            }
        }
    }

    /// A non-negative integer of at least `min`. Kafka Connect's REST API
    /// turns JSON numbers into strings, so "10000" arrives for 10000.
    fn uint(&mut self, key: &str, default: u64, min: u64) -> u64 {
        let Some((k, v)) = self.get(key) else {
            return default;
        };
        match v.parse::<u64>() {
            Ok(n) if n >= min => n,
            Ok(_) => {
                self.err(k, Some(v), format!("must be at least {min}"));
                default
            }
            Err(_) => {
                self.err(
                    k,
                    Some(v),
                    format!("expected a whole number of at least {min}"),
                );
                default
            }
        }
    }

    fn choice(
        &mut self,
        key: &str,
        default: &'static str,
        allowed: &[&'static str],
    ) -> &'static str {
        self.choice_quiet(key, default, allowed, &[])
    }

    /// Like `choice`, without reporting the values in `reported` (their
    /// caller already explained them).
    fn choice_quiet(
        &mut self,
        key: &str,
        default: &'static str,
        allowed: &[&'static str],
        reported: &[&str],
    ) -> &'static str {
        let Some((k, v)) = self.get(key) else {
            return default;
        };
        if reported.iter().any(|r| r.eq_ignore_ascii_case(v)) {
            return default;
        }
        match allowed.iter().find(|a| a.eq_ignore_ascii_case(v)) {
            Some(a) => a,
            None => {
                self.err(
                    k,
                    Some(v),
                    format!("allowed values are: {}", allowed.join(", ")),
                );
                default
            }
        }
    }

    /// An http(s) endpoint without a path, trailing slash removed.
    fn url(&mut self, key: &str, value: &str) -> Option<String> {
        // The official connector takes a bare host name as https.
        let full = if value.contains("://") {
            value.to_owned()
        } else {
            format!("https://{value}")
        };
        let url = match Url::parse(&full) {
            Ok(u) => u,
            Err(e) => {
                self.err(
                    key,
                    Some(value),
                    format!("not a URL ({e}); expected e.g. https://ingest-<cluster>.<region>.kusto.windows.net"),
                );
                return None;
            }
        };
        let Some(host) = url.host_str() else {
            self.err(key, Some(value), "the URL has no host");
            return None;
        };
        match url.scheme() {
            "https" => {}
            "http" if is_loopback(host) => {}
            "http" => {
                self.err(
                    key,
                    Some(value),
                    "plain http is allowed only for a loopback host (127.0.0.1, localhost, [::1]); use https",
                );
                return None;
            }
            other => {
                self.err(
                    key,
                    Some(value),
                    format!("scheme '{other}' is not allowed; use https"),
                );
                return None;
            }
        }
        if url.path() != "/" || url.query().is_some() {
            self.err(
                key,
                Some(value),
                "expected the cluster's base URL, without a path or query",
            );
            return None;
        }
        Some(full.trim_end_matches('/').to_owned())
    }

    /// A dead-letter queue under `prefix`. `own_brokers_required`: the
    /// connector's own `misc.` queue needs both brokers and topic (as the
    /// official connector demands); `errors.` is also Kafka Connect's
    /// framework queue, where a topic alone means the worker's own cluster.
    fn dlq(&mut self, prefix: &str, own_brokers_required: bool) -> Option<DeadLetterQueue> {
        let entries: BTreeMap<String, String> = self
            .props
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(prefix).map(|rest| (rest, v.trim())))
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let servers_key = format!("{prefix}bootstrap.servers");
        let topic_key = format!("{prefix}topic.name");
        let servers = entries.get("bootstrap.servers").cloned();
        let topic = entries.get("topic.name").cloned();
        match (&servers, &topic) {
            (None, None) => return None,
            (Some(s), None) => {
                self.err(
                    &topic_key,
                    None,
                    format!(
                        "missing: {servers_key} is '{s}' but no topic is named for failed records"
                    ),
                );
                return None;
            }
            (None, Some(t)) if own_brokers_required => {
                self.err(
                    &servers_key,
                    None,
                    format!("missing: {topic_key} is '{t}' but no Kafka brokers are named to write it to"),
                );
                return None;
            }
            _ => {}
        }
        let producer = entries
            .into_iter()
            .filter(|(k, _)| k != "bootstrap.servers" && k != "topic.name")
            .collect();
        Some(DeadLetterQueue {
            bootstrap_servers: servers,
            topic: topic?,
            producer,
        })
    }
}

/// Whether `host` (as in a URL) is a loopback host.
pub fn is_loopback(host: &str) -> bool {
    matches!(
        host.trim_start_matches('[').trim_end_matches(']'),
        "127.0.0.1" | "localhost" | "::1"
    )
}

/// The engine URL for an ingestion URL: the host without its `ingest-`
/// prefix (the official connector's derivation); unchanged otherwise.
pub fn query_url_for(ingestion_url: &str) -> String {
    match ingestion_url.split_once("://") {
        Some((scheme, rest)) => match rest.strip_prefix("ingest-") {
            Some(host) => format!("{scheme}://{host}"),
            None => ingestion_url.to_owned(),
        },
        None => ingestion_url.to_owned(),
    }
}

impl KustoConfig {
    /// Parses the connector's properties; keys it does not know (worker
    /// keys such as `topics`, `transforms.*`, converters) are ignored.
    pub fn from_props(props: &Props) -> Result<KustoConfig, ConfigErrors> {
        let mut r = Reader {
            props,
            errors: Vec::new(),
        };

        let ingestion = match (r.get(INGESTION_URL), r.get(INGESTION_URL_1X)) {
            (Some((k, v)), _) | (None, Some((k, v))) => r.url(k, v),
            (None, None) => {
                r.err(
                    INGESTION_URL,
                    None,
                    format!("missing: the cluster's ingestion URL, e.g. https://ingest-<cluster>.<region>.kusto.windows.net (1.x name: {INGESTION_URL_1X})"),
                );
                None
            }
        };
        let query = match r.get(QUERY_URL) {
            Some((k, v)) => r.url(k, v),
            None => ingestion.as_deref().map(query_url_for),
        };

        if r.get(AUTH_STRATEGY)
            .is_some_and(|(_, v)| v.eq_ignore_ascii_case("az_dev_token"))
        {
            r.err(
                AUTH_STRATEGY,
                Some("az_dev_token"),
                format!("the Azure CLI token strategy is for development and is not supported; allowed values are: {}, or set {AUTH_ACCESSTOKEN} to a token from `az account get-access-token`", STRATEGIES.join(", ")),
            );
        }
        let auth_strategy =
            match r.choice_quiet(AUTH_STRATEGY, "application", STRATEGIES, &["az_dev_token"]) {
                "managed_identity" => AuthStrategy::ManagedIdentity,
                "workload_identity" => AuthStrategy::WorkloadIdentity,
                _ => AuthStrategy::Application,
            };
        let authority = r.string(AUTH_AUTHORITY);
        let app_id = r.string(AUTH_APPID);
        let app_key = r.string(AUTH_APPKEY);
        let access_token = r.string(AUTH_ACCESSTOKEN);
        // A static token replaces every strategy, as in the official
        // connector; otherwise client credentials need all three parts.
        if access_token.is_none() && auth_strategy == AuthStrategy::Application {
            for (key, v) in [
                (AUTH_AUTHORITY, &authority),
                (AUTH_APPID, &app_id),
                (AUTH_APPKEY, &app_key),
            ] {
                if v.is_none() {
                    r.err(
                        key,
                        None,
                        format!("missing: {AUTH_STRATEGY}=application needs {AUTH_AUTHORITY} (tenant), {AUTH_APPID} and {AUTH_APPKEY}; or set {AUTH_ACCESSTOKEN}, or another {AUTH_STRATEGY} ({})", STRATEGIES.join(", ")),
                    );
                }
            }
        }

        let mappings = match r.get(MAPPING) {
            Some((k, v)) => match parse_mappings(v) {
                Ok(m) => m,
                Err(problems) => {
                    for p in problems {
                        r.err(k, Some(v), p);
                    }
                    Vec::new()
                }
            },
            None => {
                r.err(
                    MAPPING,
                    None,
                    "missing: a JSON array such as [{'topic': 't', 'db': 'Db', 'table': 'T', 'format': 'json', 'mapping': 'M'}]",
                );
                Vec::new()
            }
        };

        let flush_size_bytes = r.uint(FLUSH_SIZE_BYTES, DEFAULT_FLUSH_SIZE_BYTES, MIN_FLUSH);
        let flush_interval =
            Duration::from_millis(r.uint(FLUSH_INTERVAL_MS, DEFAULT_FLUSH_INTERVAL_MS, MIN_FLUSH));
        let temp_dir = r
            .string(TEMPDIR_PATH)
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let behavior_on_error = match r.choice(BEHAVIOR_ON_ERROR, "fail", BEHAVIORS) {
            "log" => BehaviorOnError::Log,
            "ignore" => BehaviorOnError::Ignore,
            _ => BehaviorOnError::Fail,
        };
        let retry_max_time =
            Duration::from_millis(r.uint(RETRY_MAX_TIME_MS, DEFAULT_RETRY_MAX_TIME_MS, 0));
        let retry_backoff =
            Duration::from_millis(r.uint(RETRY_BACKOFF_MS, DEFAULT_RETRY_BACKOFF_MS, 1));
        let errors_dlq = r.dlq(ERRORS_DLQ_PREFIX, false);
        let misc_dlq = r.dlq(MISC_DLQ_PREFIX, true);
        let validate_tables = r.bool(VALIDATION_TABLE, false);

        let proxy_host = r.string(PROXY_HOST);
        // -1 is the official connector's "no proxy".
        let proxy_port = match r.get(PROXY_PORT) {
            None | Some((_, "-1")) => None,
            Some((k, v)) => match v.parse::<u16>() {
                Ok(p) if p > 0 => Some(p),
                _ => {
                    r.err(k, Some(v), "expected a TCP port, 1 to 65535");
                    None
                }
            },
        };
        let proxy = match (proxy_host, proxy_port) {
            (Some(h), Some(p)) => Some((h, p)),
            (Some(h), None) => {
                if matches!(r.get(PROXY_PORT), None | Some((_, "-1"))) {
                    r.err(
                        PROXY_PORT,
                        None,
                        format!("missing: {PROXY_HOST} '{h}' needs a port"),
                    );
                }
                None
            }
            (None, Some(p)) => {
                r.err(
                    PROXY_HOST,
                    None,
                    format!("missing: {PROXY_PORT} {p} needs a host"),
                );
                None
            }
            (None, None) => None,
        };

        let dedup = r.bool(DEDUP, false);
        let create_tables = r.bool(TABLES_CREATE, false);
        let status_check = r.bool(STATUS_CHECK, false);
        let reconcile = r.bool(SNAPSHOT_RECONCILE, false);
        if reconcile && !status_check {
            r.err(
                SNAPSHOT_RECONCILE,
                Some("true"),
                format!(
                    "dropping older snapshot generations is safe only once ADX has confirmed every batch before: set {STATUS_CHECK}=true too"
                ),
            );
        }
        if reconcile {
            for m in mappings.iter().filter(|m| m.streaming) {
                r.err(
                    SNAPSHOT_RECONCILE,
                    Some("true"),
                    format!(
                        "topic '{}' uses streaming ingestion, whose extents carry no tags, so its older snapshot generations cannot be told apart: set 'streaming': false for it, or {SNAPSHOT_RECONCILE}=false",
                        m.topic
                    ),
                );
            }
        }

        if !r.errors.is_empty() {
            return Err(ConfigErrors(r.errors));
        }
        match (ingestion, query) {
            (Some(ingestion_url), Some(query_url)) => Ok(KustoConfig {
                ingestion_url,
                query_url,
                auth_strategy,
                authority,
                app_id,
                app_key,
                access_token,
                mappings,
                flush_size_bytes,
                flush_interval,
                temp_dir,
                behavior_on_error,
                retry_max_time,
                retry_backoff,
                errors_dlq,
                misc_dlq,
                validate_tables,
                proxy,
                dedup,
                create_tables,
                status_check,
                reconcile,
            }),
            // Unreachable in practice: a missing URL was reported above.
            _ => Err(ConfigErrors(vec![ConfigError::missing(INGESTION_URL)])),
        }
    }

    /// Where `topic` goes: its own entry, else the `*` entry.
    pub fn mapping_for(&self, topic: &str) -> Option<&TopicMapping> {
        self.mappings
            .iter()
            .find(|m| m.topic == topic)
            .or_else(|| self.mappings.iter().find(|m| m.topic == "*"))
    }
}

/// The declared keys, for the worker's validation and its warnings about
/// unknown keys. [`KustoConfig::from_props`] applies the same defaults and
/// checks more (URLs, the mapping, which auth keys each strategy needs).
/// The dead-letter queues' keys are prefixes and not listed.
pub fn config_def() -> ConfigDef {
    ConfigDef::new(vec![
        ConfigKey::new(INGESTION_URL, ConfigType::String, "The cluster's ingestion URL, https://ingest-<cluster>.<region>.kusto.windows.net.")
            .required()
            .aliases(&[INGESTION_URL_1X]),
        ConfigKey::new(QUERY_URL, ConfigType::String, "The cluster's query URL; derived from the ingestion URL without its 'ingest-' prefix when unset."),
        ConfigKey::new(AUTH_STRATEGY, ConfigType::Enum, "How tokens are obtained: application (app id and key), managed_identity, workload_identity.")
            .default("application")
            .allowed(STRATEGIES),
        ConfigKey::new(AUTH_AUTHORITY, ConfigType::String, "The Azure AD tenant id or domain."),
        ConfigKey::new(AUTH_APPID, ConfigType::String, "The application (or user-assigned identity's) client id."),
        ConfigKey::new(AUTH_APPKEY, ConfigType::Password, "The application's client secret."),
        ConfigKey::new(AUTH_ACCESSTOKEN, ConfigType::Password, "A ready access token; when set, no token is requested."),
        ConfigKey::new(MAPPING, ConfigType::String, "JSON array of {topic, db, table, format, mapping, streaming}; single quotes accepted; topic '*' matches unlisted topics.")
            .required(),
        ConfigKey::new(FLUSH_SIZE_BYTES, ConfigType::Int, "Bytes buffered per topic-partition before a batch is ingested (at least 100).")
            .default("1048576"),
        ConfigKey::new(FLUSH_INTERVAL_MS, ConfigType::Int, "Longest time in ms a batch is buffered before it is ingested (at least 100).")
            .default("30000"),
        ConfigKey::new(TEMPDIR_PATH, ConfigType::String, "Where batches are buffered; the system's temporary directory when unset."),
        ConfigKey::new(BEHAVIOR_ON_ERROR, ConfigType::Enum, "On failure: fail (stop the task), log (log and go on), ignore (go on).")
            .default("fail")
            .allowed(BEHAVIORS),
        ConfigKey::new(RETRY_MAX_TIME_MS, ConfigType::Int, "How long in ms a failing ingestion is retried.")
            .default("300000"),
        ConfigKey::new(RETRY_BACKOFF_MS, ConfigType::Int, "Pause in ms between retries (at least 1).")
            .default("10000"),
        ConfigKey::new(VALIDATION_TABLE, ConfigType::Bool, "Check at start that each mapped table exists and is writable.")
            .default("false"),
        ConfigKey::new(PROXY_HOST, ConfigType::String, "HTTP proxy host."),
        ConfigKey::new(PROXY_PORT, ConfigType::Int, "HTTP proxy port (-1: none).").default("-1"),
        ConfigKey::new(DEDUP, ConfigType::Bool, "Tag each batch's extents and ingest with ingestIfNotExists, so a replayed batch is not ingested twice.")
            .default("false"),
        ConfigKey::new(TABLES_CREATE, ConfigType::Bool, "Create missing tables.").default("false"),
        ConfigKey::new(STATUS_CHECK, ConfigType::Bool, "Follow each queued ingestion to its outcome before its offsets are committed.")
            .default("false"),
        ConfigKey::new(SNAPSHOT_RECONCILE, ConfigType::Bool, "When a snapshot of a table is complete in ADX, drop the extents its topic partition wrote before that snapshot, so the table holds the snapshot and what streamed after it; the extents of tables the snapshot read without a row are dropped too, but for those tagged with a change made after the snapshot (needs kusto.ingestion.status.check=true).")
            .default("false"),
    ])
}

/// Parses `kusto.tables.topics.mapping`; every problem is returned, each
/// naming the entry and field.
pub fn parse_mappings(text: &str) -> Result<Vec<TopicMapping>, Vec<String>> {
    let json: Json = serde_json::from_str(text)
        .or_else(|_| serde_json::from_str(&sluice_core::config::single_quotes_to_json(text)))
        .map_err(|e| vec![format!("not a JSON array of objects: {e}")])?;
    let Some(entries) = json.as_array() else {
        return Err(vec!["not a JSON array of objects".to_owned()]);
    };
    if entries.is_empty() {
        return Err(vec!["the array is empty: map at least one topic".to_owned()]);
    }
    let mut problems = Vec::new();
    let mut out = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let Some(obj) = entry.as_object() else {
            problems.push(format!("entry {i} is not an object"));
            continue;
        };
        let topic = obj.get("topic").and_then(Json::as_str).unwrap_or("");
        let name = if topic.is_empty() {
            format!("entry {i}")
        } else {
            format!("entry {i} ('{topic}')")
        };
        for k in obj.keys() {
            if !MAPPING_FIELDS.contains(&k.as_str()) {
                problems.push(format!(
                    "{name} has unknown field '{k}'; allowed: {}",
                    MAPPING_FIELDS.join(", ")
                ));
            }
        }
        let mut text_field = |field: &str, required: bool| -> Option<String> {
            match obj.get(field) {
                Some(Json::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
                None | Some(Json::Null) if !required => None,
                Some(Json::String(_)) if !required => None,
                _ => {
                    problems.push(format!("{name}: '{field}' must be a non-empty string"));
                    None
                }
            }
        };
        let topic_v = text_field("topic", true);
        let db = text_field("db", true);
        let table = text_field("table", true);
        let format = text_field("format", false).map(|f| f.to_ascii_lowercase());
        let mapping = text_field("mapping", false);
        let format = match format {
            None => Some("json".to_owned()),
            Some(f) if FORMATS.contains(&f.as_str()) => Some(f),
            Some(f) => {
                problems.push(format!(
                    "{name}: format '{f}' is not supported; allowed: {}",
                    FORMATS.join(", ")
                ));
                None
            }
        };
        let streaming = match obj.get("streaming") {
            None | Some(Json::Null) => Some(false),
            Some(Json::Bool(b)) => Some(*b),
            Some(Json::String(s)) if s.eq_ignore_ascii_case("true") => Some(true),
            Some(Json::String(s)) if s.eq_ignore_ascii_case("false") => Some(false),
            Some(other) => {
                problems.push(format!(
                    "{name}: 'streaming' must be true or false, not {other}"
                ));
                None
            }
        };
        if let (Some(topic), Some(db), Some(table), Some(format), Some(streaming)) =
            (topic_v, db, table, format, streaming)
        {
            if out.iter().any(|m: &TopicMapping| m.topic == topic) {
                problems.push(format!("{name}: topic '{topic}' is mapped twice"));
                continue;
            }
            out.push(TopicMapping {
                topic,
                db,
                table,
                format,
                mapping,
                streaming,
            });
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::config::props_from;

    /// The scenario's `adx-orders-sink.json`, as the worker's REST API hands
    /// it over: every value a string (10000 and 2 were JSON numbers).
    fn scenario() -> Props {
        props_from(&[
            ("connector.class", "com.microsoft.azure.kusto.kafka.connect.sink.KustoSinkConnector"),
            ("flush.size.bytes", "10000"),
            ("flush.interval.ms", "30000"),
            ("tasks.max", "2"),
            ("topics", "myserver.retail.orders_info"),
            ("kusto.tables.topics.mapping", "[{'topic': 'myserver.retail.orders_info','db': '<database>', 'table': 'Orders','format': 'json', 'mapping':'OrdersEventMapping'}]"),
            ("aad.auth.authority", "<tenant id>"),
            ("kusto.url", "https://ingest-mycluster.westeurope.kusto.windows.net"),
            ("aad.auth.appid", "<app id>"),
            ("aad.auth.appkey", "<secret>"),
            ("key.converter", "org.apache.kafka.connect.storage.StringConverter"),
            ("transforms", "unwrap"),
            ("transforms.unwrap.type", "io.debezium.transforms.ExtractNewRecordState"),
        ])
    }

    fn errors(props: &Props) -> String {
        KustoConfig::from_props(props)
            .expect_err("config should be rejected")
            .to_string()
    }

    #[test]
    fn the_scenario_parses() {
        let c = KustoConfig::from_props(&scenario()).expect("scenario config");
        assert_eq!(
            c.ingestion_url,
            "https://ingest-mycluster.westeurope.kusto.windows.net"
        );
        assert_eq!(
            c.query_url,
            "https://mycluster.westeurope.kusto.windows.net"
        );
        assert_eq!(c.auth_strategy, AuthStrategy::Application);
        assert_eq!(c.authority.as_deref(), Some("<tenant id>"));
        assert_eq!(c.app_id.as_deref(), Some("<app id>"));
        assert_eq!(c.app_key.as_deref(), Some("<secret>"));
        assert_eq!(c.flush_size_bytes, 10_000);
        assert_eq!(c.flush_interval, Duration::from_secs(30));
        assert_eq!(
            c.mappings,
            vec![TopicMapping {
                topic: "myserver.retail.orders_info".into(),
                db: "<database>".into(),
                table: "Orders".into(),
                format: "json".into(),
                mapping: Some("OrdersEventMapping".into()),
                streaming: false,
            }]
        );
        assert_eq!(
            c.mapping_for("myserver.retail.orders_info")
                .map(|m| m.table.as_str()),
            Some("Orders")
        );
        assert!(c.mapping_for("other").is_none());
        // The secret never shows in debug output.
        assert!(!format!("{c:?}").contains("<secret>"));
    }

    #[test]
    fn defaults() {
        let c = KustoConfig::from_props(&props_from(&[
            (
                "kusto.ingestion.url",
                "https://ingest-c.r.kusto.windows.net/",
            ),
            ("aad.auth.strategy", "managed_identity"),
            (
                "kusto.tables.topics.mapping",
                r#"[{"topic":"*","db":"D","table":"T"}]"#,
            ),
        ]))
        .expect("minimal config");
        assert_eq!(c.ingestion_url, "https://ingest-c.r.kusto.windows.net");
        assert_eq!(c.query_url, "https://c.r.kusto.windows.net");
        assert_eq!(c.auth_strategy, AuthStrategy::ManagedIdentity);
        assert_eq!(c.flush_size_bytes, 1024 * 1024);
        assert_eq!(c.flush_interval, Duration::from_millis(30_000));
        assert_eq!(c.temp_dir, std::env::temp_dir());
        assert_eq!(c.behavior_on_error, BehaviorOnError::Fail);
        assert_eq!(c.retry_max_time, Duration::from_millis(300_000));
        assert_eq!(c.retry_backoff, Duration::from_millis(10_000));
        assert!(c.errors_dlq.is_none() && c.misc_dlq.is_none());
        assert!(!c.validate_tables && !c.dedup && !c.create_tables && !c.status_check);
        assert!(c.proxy.is_none());
        let m = c.mapping_for("any.topic").expect("wildcard");
        assert_eq!(
            (m.format.as_str(), m.mapping.as_ref(), m.streaming),
            ("json", None, false)
        );
    }

    #[test]
    fn explicit_values() {
        let mut p = scenario();
        p.insert(
            "kusto.ingestion.url".into(),
            "https://ingest-new.kusto.windows.net".into(),
        );
        p.insert(
            "kusto.query.url".into(),
            "https://q.kusto.windows.net".into(),
        );
        p.insert("kusto.tables.topics.mapping".into(), "[{'topic':'a','db':'D','table':'T','format':'CSV','mapping':'m','streaming':true},{'topic':'*','db':'D','table':'Rest','format':'multijson','streaming':'false'}]".into());
        p.insert("behavior.on.error".into(), "LOG".into());
        p.insert(
            "errors.deadletterqueue.bootstrap.servers".into(),
            "k:9092".into(),
        );
        p.insert("errors.deadletterqueue.topic.name".into(), "dlq".into());
        p.insert(
            "errors.deadletterqueue.sasl.jaas.config".into(),
            "pw=hunter2".into(),
        );
        p.insert("proxy.host".into(), "proxy.local".into());
        p.insert("proxy.port".into(), "3128".into());
        p.insert("kusto.ingestion.dedup".into(), "true".into());
        p.insert("kusto.tables.create".into(), "TRUE".into());
        p.insert("kusto.ingestion.status.check".into(), "true".into());
        p.insert("kusto.validation.table.enable".into(), "true".into());
        p.insert("tempdir.path".into(), "/var/tmp/k".into());
        let c = KustoConfig::from_props(&p).expect("config");
        // The current name wins over the 1.x name.
        assert_eq!(c.ingestion_url, "https://ingest-new.kusto.windows.net");
        assert_eq!(c.query_url, "https://q.kusto.windows.net");
        assert_eq!(c.behavior_on_error, BehaviorOnError::Log);
        assert_eq!(c.mappings[0].format, "csv");
        assert!(c.mappings[0].streaming);
        assert_eq!(c.mapping_for("b").map(|m| m.table.as_str()), Some("Rest"));
        let dlq = c.errors_dlq.as_ref().expect("dlq");
        assert_eq!(
            (dlq.bootstrap_servers.as_deref(), dlq.topic.as_str()),
            (Some("k:9092"), "dlq")
        );
        assert_eq!(
            dlq.producer.get("sasl.jaas.config").map(String::as_str),
            Some("pw=hunter2")
        );
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(c.proxy, Some(("proxy.local".into(), 3128)));
        assert!(c.dedup && c.create_tables && c.status_check && c.validate_tables);
        assert_eq!(c.temp_dir, PathBuf::from("/var/tmp/k"));
    }

    #[test]
    fn static_token_needs_no_app() {
        let c = KustoConfig::from_props(&props_from(&[
            ("kusto.url", "https://ingest-c.kusto.windows.net"),
            ("aad.auth.accesstoken", "tok"),
            (
                "kusto.tables.topics.mapping",
                "[{'topic':'t','db':'D','table':'T'}]",
            ),
        ]))
        .expect("config");
        assert_eq!(c.access_token.as_deref(), Some("tok"));
    }

    #[test]
    fn every_error_is_reported_together() {
        let text = errors(&props_from(&[
            ("kusto.url", "http://ingest-c.kusto.windows.net"),
            ("kusto.query.url", "not a url"),
            ("aad.auth.strategy", "password"),
            ("aad.auth.appkey", "s3cret-value"),
            (
                "kusto.tables.topics.mapping",
                "[{'topic':'t','db':'D','format':'xml','extra':1,'streaming':3}]",
            ),
            ("flush.size.bytes", "10kb"),
            ("flush.interval.ms", "5"),
            ("behavior.on.error", "retry"),
            ("errors.retry.max.time.ms", "-1"),
            ("kusto.ingestion.dedup", "yes"),
            ("proxy.port", "99999"),
            ("misc.deadletterqueue.topic.name", "x"),
        ]));
        for needle in [
            "'kusto.url'",
            "plain http is allowed only for a loopback host",
            "'kusto.query.url'",
            "'password' for configuration 'aad.auth.strategy'",
            "application, managed_identity, workload_identity",
            "'table' must be a non-empty string",
            "format 'xml' is not supported",
            "unknown field 'extra'",
            "'streaming' must be true or false",
            "'10kb' for configuration 'flush.size.bytes'",
            "'5' for configuration 'flush.interval.ms': must be at least 100",
            "'retry' for configuration 'behavior.on.error': allowed values are: fail, log, ignore",
            "'-1' for configuration 'errors.retry.max.time.ms'",
            "'yes' for configuration 'kusto.ingestion.dedup'",
            "'99999' for configuration 'proxy.port'",
            "'misc.deadletterqueue.bootstrap.servers'",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        assert!(!text.contains("s3cret-value"), "{text}");
    }

    #[test]
    fn missing_required_keys() {
        let text = errors(&props_from(&[("topics", "t")]));
        assert!(text.contains("'kusto.ingestion.url': missing"), "{text}");
        assert!(
            text.contains("'kusto.tables.topics.mapping': missing"),
            "{text}"
        );
        for key in ["aad.auth.authority", "aad.auth.appid", "aad.auth.appkey"] {
            assert!(text.contains(&format!("'{key}': missing")), "{key}: {text}");
        }
    }

    #[test]
    fn secrets_are_never_printed() {
        let text = errors(&props_from(&[
            ("kusto.url", "https://ingest-c.kusto.windows.net"),
            (
                "kusto.tables.topics.mapping",
                "[{'topic':'t','db':'D','table':'T'}]",
            ),
            ("aad.auth.accesstoken", "tok-123"),
            ("aad.auth.appkey", "key-456"),
            ("misc.deadletterqueue.bootstrap.servers", "k:9092"),
            ("misc.deadletterqueue.sasl.jaas.config", "pw=789"),
        ]));
        assert!(text.contains("'misc.deadletterqueue.topic.name'"), "{text}");
        for secret in ["tok-123", "key-456", "pw=789"] {
            assert!(!text.contains(secret), "{text}");
        }
    }

    #[test]
    fn mapping_errors() {
        let dup = parse_mappings(
            "[{'topic':'t','db':'D','table':'A'},{'topic':'t','db':'D','table':'B'}]",
        )
        .expect_err("duplicate");
        assert!(dup[0].contains("mapped twice"), "{dup:?}");
        let bad = parse_mappings("{'topic':'t'}").expect_err("object");
        assert!(bad[0].contains("not a JSON array"), "{bad:?}");
        let empty = parse_mappings("[]").expect_err("empty");
        assert!(empty[0].contains("empty"), "{empty:?}");
        let quoted =
            parse_mappings(r#"[{'topic':'it\'s','db':'D "x"','table':'T'}]"#).expect("escapes");
        assert_eq!(
            (quoted[0].topic.as_str(), quoted[0].db.as_str()),
            ("it's", "D \"x\"")
        );
    }

    #[test]
    fn framework_dead_letter_queue_needs_no_brokers() {
        let mut p = scenario();
        p.insert("errors.tolerance".into(), "all".into());
        p.insert("errors.deadletterqueue.topic.name".into(), "adx-dlq".into());
        p.insert(
            "errors.deadletterqueue.topic.replication.factor".into(),
            "1".into(),
        );
        let c = KustoConfig::from_props(&p).expect("config");
        let dlq = c.errors_dlq.expect("errors dlq");
        assert_eq!(
            (dlq.bootstrap_servers, dlq.topic.as_str()),
            (None, "adx-dlq")
        );
        assert_eq!(
            dlq.producer
                .get("topic.replication.factor")
                .map(String::as_str),
            Some("1")
        );
        // The connector's own queue needs both.
        p.insert("misc.deadletterqueue.topic.name".into(), "misc".into());
        let text = errors(&p);
        assert!(text.contains("'misc.deadletterqueue.bootstrap.servers': missing: misc.deadletterqueue.topic.name is 'misc'"), "{text}");
    }

    #[test]
    fn declared_keys_agree_with_the_parser() {
        let def = config_def();
        let parsed = def
            .parse(
                &scenario(),
                &[
                    "transforms",
                    "key.converter",
                    "connector.class",
                    "topics",
                    "tasks.max",
                ],
            )
            .expect("scenario passes the declared checks");
        assert!(parsed.unknown.is_empty(), "{:?}", parsed.unknown);
        assert_eq!(
            parsed.aliases_used,
            vec![("kusto.url".to_string(), INGESTION_URL)]
        );
        assert_eq!(parsed.get(FLUSH_SIZE_BYTES), Some("10000"));
        assert_eq!(
            parsed.int(RETRY_MAX_TIME_MS) as u64,
            DEFAULT_RETRY_MAX_TIME_MS
        );
        assert_eq!(
            parsed.int(RETRY_BACKOFF_MS) as u64,
            DEFAULT_RETRY_BACKOFF_MS
        );
        let minimal = props_from(&[
            (INGESTION_URL, "https://ingest-c.kusto.windows.net"),
            (MAPPING, "[]"),
        ]);
        let parsed = def.parse(&minimal, &[]).expect("minimal");
        assert_eq!(
            parsed.int(FLUSH_SIZE_BYTES) as u64,
            DEFAULT_FLUSH_SIZE_BYTES
        );
        assert_eq!(
            parsed.int(FLUSH_INTERVAL_MS) as u64,
            DEFAULT_FLUSH_INTERVAL_MS
        );
        assert_eq!(parsed.get(AUTH_STRATEGY), Some("application"));
        assert_eq!(parsed.get(BEHAVIOR_ON_ERROR), Some("fail"));
        // Every key the parser reads is declared.
        for key in [
            INGESTION_URL,
            QUERY_URL,
            AUTH_STRATEGY,
            AUTH_AUTHORITY,
            AUTH_APPID,
            AUTH_APPKEY,
            AUTH_ACCESSTOKEN,
            MAPPING,
            FLUSH_SIZE_BYTES,
            FLUSH_INTERVAL_MS,
            TEMPDIR_PATH,
            BEHAVIOR_ON_ERROR,
            RETRY_MAX_TIME_MS,
            RETRY_BACKOFF_MS,
            VALIDATION_TABLE,
            PROXY_HOST,
            PROXY_PORT,
            DEDUP,
            TABLES_CREATE,
            STATUS_CHECK,
            SNAPSHOT_RECONCILE,
        ] {
            assert!(def.key(key).is_some(), "{key} is not declared");
        }
        let secrets = def
            .keys
            .iter()
            .filter(|k| k.ty == ConfigType::Password)
            .map(|k| k.name);
        assert_eq!(
            secrets.collect::<Vec<_>>(),
            vec![AUTH_APPKEY, AUTH_ACCESSTOKEN]
        );
    }

    #[test]
    fn official_spellings() {
        let mut p = scenario();
        p.remove("kusto.url");
        p.insert(
            "kusto.ingestion.url".into(),
            "ingest-c.kusto.windows.net".into(),
        );
        p.insert("aad.auth.strategy".into(), "APPLICATION".into());
        p.insert("behavior.on.error".into(), "IGNORE".into());
        p.insert("proxy.port".into(), "-1".into());
        let c = KustoConfig::from_props(&p).expect("config");
        assert_eq!(c.ingestion_url, "https://ingest-c.kusto.windows.net");
        assert_eq!(c.query_url, "https://c.kusto.windows.net");
        assert_eq!(c.behavior_on_error, BehaviorOnError::Ignore);
        assert!(c.proxy.is_none());

        p.insert("aad.auth.strategy".into(), "az_dev_token".into());
        p.insert("errors.retry.backoff.time.ms".into(), "0".into());
        let text = errors(&p);
        assert!(
            text.contains("'az_dev_token' for configuration 'aad.auth.strategy'"),
            "{text}"
        );
        assert!(text.contains("not supported"), "{text}");
        assert_eq!(text.matches("aad.auth.strategy'").count(), 1, "{text}");
        assert!(
            text.contains(
                "'0' for configuration 'errors.retry.backoff.time.ms': must be at least 1"
            ),
            "{text}"
        );
    }

    #[test]
    fn query_url_derivation() {
        assert_eq!(
            query_url_for("https://ingest-a.b.kusto.windows.net"),
            "https://a.b.kusto.windows.net"
        );
        assert_eq!(
            query_url_for("https://a.kusto.windows.net"),
            "https://a.kusto.windows.net"
        );
        assert_eq!(
            query_url_for("http://127.0.0.1:8080"),
            "http://127.0.0.1:8080"
        );
    }
}
