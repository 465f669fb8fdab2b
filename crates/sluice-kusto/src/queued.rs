//! Queued ingestion through the cluster's data-management service
//! (`https://ingest-<cluster>...`), the way the official Kusto SDKs (and
//! through them the Kafka Connect Kusto sink) hand a batch to Kusto:
//!
//! 1. `.get ingestion resources` (database `NetDefaultDB`) names the
//!    storage the service reads from: temporary blob containers
//!    (`TempStorage`), the ingestion queues
//!    (`SecuredReadyForAggregationQueue`), the status queues and the status
//!    table, each as a URL with a SAS token. `.get kusto identity token`
//!    gives the `AuthorizationContext` every queue message must carry. Both
//!    are cached and refreshed hourly, as the SDKs do; when a refresh fails
//!    the cached ones stay in use (the failure is logged) and the refresh is
//!    tried again a minute later.
//! 2. The gzipped batch is uploaded as a block blob named
//!    `<hint>__<uuid>.<format>.gz` to one of the containers, taken in
//!    round-robin order.
//! 3. A message describing the blob (the SDKs' `IngestionBlobInfo`: `Id`,
//!    `BlobPath` with its SAS, `RawDataSize`, `DatabaseName`, `TableName`,
//!    `RetainBlobOnSuccess`, `FlushImmediately`, `IgnoreSizeLimit`,
//!    `ReportLevel`, `ReportMethod`, `SourceMessageCreationTime`,
//!    `AdditionalProperties`) is posted, base64 encoded, to one of the
//!    ingestion queues, also in round-robin order.
//!
//! `AdditionalProperties` holds strings only, as the SDKs send them:
//! `authorizationContext`, `format`, `ingestionMappingReference` with its
//! `ingestionMappingType` (`Json`, `Csv`, `Avro`, `ApacheAvro`, ...), and
//! `tags` / `ingestIfNotExists` as JSON arrays serialized into a string
//! (`"[\"ingest-by:x\"]"`). `ReportLevel` and `ReportMethod` are the
//! numeric enum values (`FailuresOnly` = 0, `DoNotReport` = 1,
//! `FailuresAndSuccesses` = 2; `Queue` = 0, `Table` = 1, `QueueAndTable` = 2).
//!
//! Status reporting: by default a message asks for failures only, reported
//! to the failed-ingestions queue (0/0), as the Kafka Connect sink sends
//! it. With [`QueuedIngestor::with_status_reporting`] (the sink's status
//! check) the ingestor does what the Java SDK does for table reporting: it
//! inserts a `Pending` row (PartitionKey = RowKey = the message `Id`) into
//! the `IngestionsStatusTable` (an Azure Table), asks for
//! `FailuresAndSuccesses` reported to `Table`, names the row in the
//! message's `IngestionStatusInTable`, and [`QueuedIngestor::wait_for_status`]
//! polls that row until the service writes a final status.
//!
//! Errors: storage answers of 5xx, 408 and connection failures are
//! transient (the next container or queue is tried, then the error is
//! returned as retriable); 429 is throttling; a 403 (typically a SAS that
//! expired before the hourly refresh) makes the ingestor fetch fresh
//! resources once and retry the whole batch; anything else is permanent.
//! Errors and log lines name containers and queues by their URL without
//! the SAS; SAS tokens and the identity token are never logged.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Url;
use serde_json::{json, Map, Value};
use tokio::sync::Mutex;

use crate::auth::Clock;
use crate::client::{new_uuid, ErrorKind, KustoClient, KustoError};
use crate::config::is_loopback;

/// The database the data-management commands run in.
const DM_DATABASE: &str = "NetDefaultDB";
/// How often ingestion resources and the identity token are refreshed (the
/// SDKs' period).
pub const DEFAULT_REFRESH_PERIOD: Duration = Duration::from_secs(60 * 60);
/// How soon a failed refresh is tried again while cached values are used.
pub const DEFAULT_RETRY_AFTER_FAILED_REFRESH: Duration = Duration::from_secs(60);
/// The storage REST version Sluice speaks (`x-ms-version`).
pub const STORAGE_VERSION: &str = "2024-11-04";
/// Storage requests give up after this long (a blob of a few hundred MB on
/// a slow link still fits).
const STORAGE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// How many containers (queues) one upload (post) tries on transient
/// failures, as the SDKs do.
const ATTEMPTS_PER_STEP: usize = 3;
/// The longest blob-name prefix taken from the hint; the whole name stays
/// far below the service's 1024 characters.
const MAX_HINT_CHARS: usize = 200;

/// One batch to ingest.
#[derive(Debug, Clone)]
pub struct QueuedBatch {
    /// The target database.
    pub db: String,
    /// The target table.
    pub table: String,
    /// The Kusto format name (`multijson`, `csv`, `avro`, `apacheavro`, ...).
    pub format: String,
    /// The name of an ingestion mapping defined on the table.
    pub mapping: Option<String>,
    /// The data, gzip-compressed.
    pub gzipped: bytes::Bytes,
    /// The size of the data before compression.
    pub raw_size: u64,
    /// Extent tags (e.g. `ingest-by:<value>`), as given.
    pub tags: Vec<String>,
    /// Skip the ingestion when an extent tagged `ingest-by:<value>` exists
    /// for any of these values.
    pub ingest_if_not_exists: Vec<String>,
    /// The start of the blob name, e.g.
    /// `<db>__<table>__<topic>__<partition>__<from>-<to>`; characters other
    /// than letters, digits, `-`, `_` and `.` are replaced.
    pub blob_name_hint: String,
}

/// A batch handed to the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    /// The queue message's `Id` (a UUID), which status reports name.
    pub ingestion_id: String,
    /// Where the blob was uploaded (without the SAS).
    pub blob_url_without_sas: String,
}

/// The outcome of an ingestion, as the service reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestionStatus {
    /// The data was ingested.
    Succeeded,
    /// Nothing was ingested on purpose (an `ingestIfNotExists` tag matched).
    Skipped,
    /// The data was not ingested (or only partly: a partial success counts
    /// as a permanent failure, as retrying would duplicate the ingested part).
    Failed {
        /// The service's error code and details.
        details: String,
        /// Whether the service says retrying cannot help.
        permanent: bool,
    },
    /// No final status within the time waited.
    Pending,
}

/// A storage resource the service handed out: its URL without and with
/// its SAS. Debug output never shows the SAS.
#[derive(Clone)]
struct Resource {
    /// e.g. `https://acct.blob.core.windows.net/container`.
    base: String,
    /// The SAS query string, without `?`.
    sas: String,
}

impl std::fmt::Debug for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.base)
    }
}

impl Resource {
    fn parse(kind: &str, url: &str) -> Result<Resource, String> {
        let (base, sas) = match url.split_once('?') {
            Some((b, q)) => (b.trim_end_matches('/'), q),
            None => (url.trim_end_matches('/'), ""),
        };
        let parsed = Url::parse(base).map_err(|e| format!("{kind} '{base}' is not a URL: {e}"))?;
        let host = parsed.host_str().unwrap_or_default();
        match parsed.scheme() {
            "https" => {}
            // Azurite and other local emulators.
            "http" if is_loopback(host) => {}
            other => {
                return Err(format!(
                    "{kind} '{base}' uses scheme '{other}'; storage is reached over https (http only on loopback) so its SAS is not sent in the clear"
                ))
            }
        }
        if sas.is_empty() {
            return Err(format!("{kind} '{base}' has no SAS token"));
        }
        Ok(Resource {
            base: base.to_owned(),
            sas: sas.to_owned(),
        })
    }

    fn url(&self, suffix: &str) -> String {
        format!("{}{suffix}?{}", self.base, self.sas)
    }
}

/// Why one attempt at a batch failed: storage refusing the SAS (403) is
/// worth one attempt with fresh resources; anything else is returned.
enum Failure {
    StorageDenied(KustoError),
    Other(KustoError),
}

impl Failure {
    fn storage(e: KustoError) -> Failure {
        if e.status == Some(403) {
            Failure::StorageDenied(e)
        } else {
            Failure::Other(e)
        }
    }
}

impl From<KustoError> for Failure {
    fn from(e: KustoError) -> Failure {
        Failure::Other(e)
    }
}

/// The resources of one `.get ingestion resources` answer.
#[derive(Debug, Clone, Default)]
struct Resources {
    queues: Vec<Resource>,
    containers: Vec<Resource>,
    status_tables: Vec<Resource>,
    successful_queues: Vec<Resource>,
    failed_queues: Vec<Resource>,
}

#[derive(Clone)]
struct Cached<T> {
    value: T,
    /// When to fetch again.
    refresh_at: SystemTime,
}

struct Inner {
    dm: KustoClient,
    http: reqwest::Client,
    clock: Clock,
    refresh_period: Duration,
    retry_after_failed_refresh: Duration,
    report_status: bool,
    status_poll: Duration,
    // Held across a refresh so concurrent batches wait for the one fetch in
    // flight and reuse its answer; the two caches are independent.
    resources: Mutex<Option<Cached<Resources>>>,
    identity: Mutex<Option<Cached<String>>>,
    next_container: AtomicUsize,
    next_queue: AtomicUsize,
}

/// Hands batches to a cluster's data-management service for queued
/// ingestion. Cloning is cheap and shares the caches.
#[derive(Clone)]
pub struct QueuedIngestor {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for QueuedIngestor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueuedIngestor")
            .field("dm", &self.inner.dm)
            .field("report_status", &self.inner.report_status)
            .finish()
    }
}

fn storage_error(kind: ErrorKind, status: Option<u16>, what: &str, message: String) -> KustoError {
    KustoError {
        kind,
        status,
        message,
        what: what.to_owned(),
        retry_after: None,
    }
}

/// The ingestion mapping kind Kusto expects next to a mapping reference of
/// a format (the SDKs' `IngestionMappingKind` values), None for a format
/// Kusto does not know.
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

/// Keeps letters, digits, `-`, `_` and `.`; anything else becomes `-`.
fn sanitize_hint(hint: &str) -> String {
    hint.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(MAX_HINT_CHARS)
        .collect()
}

/// `Code: Message` of an Azure Storage XML error body, else its start.
fn storage_message(body: &str) -> String {
    let tag = |t: &str| -> Option<String> {
        let open = format!("<{t}>");
        let close = format!("</{t}>");
        let start = body.find(&open)? + open.len();
        let end = body[start..].find(&close)? + start;
        Some(body[start..end].trim().to_owned())
    };
    match (tag("Code"), tag("Message")) {
        (Some(code), Some(msg)) => {
            // Azure appends "RequestId:...\nTime:..." lines: keep the first.
            let first = msg.lines().next().unwrap_or_default();
            format!("{code}: {first}")
        }
        (Some(code), None) => code,
        _ => {
            let trimmed = body.trim();
            if trimmed.is_empty() {
                "no error body".to_owned()
            } else {
                trimmed.chars().take(500).collect()
            }
        }
    }
}

fn classify_storage(status: u16) -> ErrorKind {
    match status {
        429 => ErrorKind::Throttled,
        408 | 500..=599 => ErrorKind::Transient,
        401 => ErrorKind::Unauthorized,
        403 => ErrorKind::Forbidden,
        404 => ErrorKind::NotFound,
        _ => ErrorKind::Permanent,
    }
}

fn rfc3339(t: SystemTime) -> String {
    DateTime::<Utc>::from(t).to_rfc3339_opts(SecondsFormat::Micros, true)
}

impl QueuedIngestor {
    /// An ingestor for the data-management endpoint `dm` (the
    /// `kusto.ingestion.url` cluster). Storage requests go through the same
    /// HTTP client as `dm`'s (and so through its proxy, if any).
    pub fn new(dm: KustoClient) -> QueuedIngestor {
        let http = dm.http().clone();
        QueuedIngestor {
            inner: Arc::new(Inner {
                dm,
                http,
                clock: Arc::new(SystemTime::now),
                refresh_period: DEFAULT_REFRESH_PERIOD,
                retry_after_failed_refresh: DEFAULT_RETRY_AFTER_FAILED_REFRESH,
                report_status: false,
                status_poll: Duration::from_millis(250),
                resources: Mutex::new(None),
                identity: Mutex::new(None),
                next_container: AtomicUsize::new(0),
                next_queue: AtomicUsize::new(0),
            }),
        }
    }

    fn rebuild(self, f: impl FnOnce(&mut Inner)) -> QueuedIngestor {
        // Builders run before the ingestor is shared; a clone already
        // handed out keeps the settings it was made with.
        let inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| Inner {
            dm: shared.dm.clone(),
            http: shared.http.clone(),
            clock: shared.clock.clone(),
            refresh_period: shared.refresh_period,
            retry_after_failed_refresh: shared.retry_after_failed_refresh,
            report_status: shared.report_status,
            status_poll: shared.status_poll,
            resources: Mutex::new(None),
            identity: Mutex::new(None),
            next_container: AtomicUsize::new(0),
            next_queue: AtomicUsize::new(0),
        });
        let mut inner = inner;
        f(&mut inner);
        QueuedIngestor {
            inner: Arc::new(inner),
        }
    }

    /// Asks the service to report every outcome to the status table, so
    /// [`QueuedIngestor::wait_for_status`] can wait for it (the sink's
    /// status check). Off by default: failures only, to the failed queue.
    pub fn with_status_reporting(self, on: bool) -> QueuedIngestor {
        self.rebuild(|i| i.report_status = on)
    }

    /// Reads the time from `clock` (to test refreshes without waiting).
    pub fn with_clock(self, clock: Clock) -> QueuedIngestor {
        self.rebuild(|i| i.clock = clock)
    }

    /// Refreshes resources and the identity token this often (default one
    /// hour) and retries a failed refresh after `retry_after_failure`
    /// (default one minute).
    pub fn with_refresh_period(
        self,
        period: Duration,
        retry_after_failure: Duration,
    ) -> QueuedIngestor {
        self.rebuild(|i| {
            i.refresh_period = period;
            i.retry_after_failed_refresh = retry_after_failure;
        })
    }

    /// Polls the status table this often at first (doubling up to 10 s).
    pub fn with_status_poll_interval(self, every: Duration) -> QueuedIngestor {
        self.rebuild(|i| i.status_poll = every)
    }

    /// Resolves resources and the identity token now, so an unreachable
    /// data-management endpoint, missing permissions (the principal needs
    /// the Ingestor role) or incomplete resources surface at start-up.
    pub async fn prepare(&self) -> Result<(), KustoError> {
        let resources = self.resources(false).await?;
        self.check_resources(&resources)?;
        self.identity().await?;
        Ok(())
    }

    fn check_resources(&self, r: &Resources) -> Result<(), KustoError> {
        let mut missing = Vec::new();
        if r.containers.is_empty() {
            missing.push("TempStorage");
        }
        if r.queues.is_empty() {
            missing.push("SecuredReadyForAggregationQueue");
        }
        if self.inner.report_status && r.status_tables.is_empty() {
            missing.push("IngestionsStatusTable");
        }
        if missing.is_empty() {
            return Ok(());
        }
        Err(storage_error(
            ErrorKind::Permanent,
            None,
            &format!("{}: .get ingestion resources", self.inner.dm.endpoint()),
            format!(
                "the answer has no {} resource; is this the cluster's data-management (ingest-) endpoint?",
                missing.join(", ")
            ),
        ))
    }

    async fn fetch_resources(&self) -> Result<Resources, KustoError> {
        let table = self
            .inner
            .dm
            .mgmt(DM_DATABASE, ".get ingestion resources")
            .await?;
        let what = format!("{}: .get ingestion resources", self.inner.dm.endpoint());
        let mut r = Resources::default();
        for row in 0..table.rows.len() {
            let (Some(kind), Some(root)) = (
                table.get_str(row, "ResourceTypeName"),
                table.get_str(row, "StorageRoot"),
            ) else {
                return Err(storage_error(
                    ErrorKind::Permanent,
                    None,
                    &what,
                    format!(
                        "row {row} lacks a ResourceTypeName or StorageRoot string (columns: {})",
                        table.columns.join(", ")
                    ),
                ));
            };
            let list = match kind {
                "SecuredReadyForAggregationQueue" => &mut r.queues,
                "TempStorage" => &mut r.containers,
                "IngestionsStatusTable" => &mut r.status_tables,
                "SuccessfulIngestionsQueue" => &mut r.successful_queues,
                "FailedIngestionsQueue" => &mut r.failed_queues,
                // Other kinds exist (e.g. for other clients); not needed here.
                _ => continue,
            };
            let res = Resource::parse(kind, root)
                .map_err(|m| storage_error(ErrorKind::Permanent, None, &what, m))?;
            list.push(res);
        }
        self.check_resources(&r)?;
        Ok(r)
    }

    /// The cached resources, fetched when missing, due, or `force`d.
    async fn resources(&self, force: bool) -> Result<Resources, KustoError> {
        let mut cache = self.inner.resources.lock().await;
        let now = (self.inner.clock)();
        if let Some(c) = cache.as_ref() {
            if !force && now < c.refresh_at {
                return Ok(c.value.clone());
            }
        }
        match self.fetch_resources().await {
            Ok(r) => {
                tracing::debug!(
                    "ingestion resources from {}: {} containers, {} queues, {} status tables",
                    self.inner.dm.endpoint(),
                    r.containers.len(),
                    r.queues.len(),
                    r.status_tables.len()
                );
                *cache = Some(Cached {
                    value: r.clone(),
                    refresh_at: now + self.inner.refresh_period,
                });
                Ok(r)
            }
            Err(e) => match cache.as_mut() {
                // A forced refresh follows a refusal of the cached SAS:
                // they are no use, and the caller needs the real reason.
                Some(c) if !force => {
                    tracing::warn!(
                        "refreshing ingestion resources failed; the cached ones stay in use and the refresh is tried again in {:?}: {e}",
                        self.inner.retry_after_failed_refresh
                    );
                    c.refresh_at = now + self.inner.retry_after_failed_refresh;
                    Ok(c.value.clone())
                }
                _ => Err(e),
            },
        }
    }

    /// The cached identity token (`AuthorizationContext`), fetched when
    /// missing or due.
    async fn identity(&self) -> Result<String, KustoError> {
        let mut cache = self.inner.identity.lock().await;
        let now = (self.inner.clock)();
        if let Some(c) = cache.as_ref() {
            if now < c.refresh_at {
                return Ok(c.value.clone());
            }
        }
        let fetched = async {
            let table = self
                .inner
                .dm
                .mgmt(DM_DATABASE, ".get kusto identity token")
                .await?;
            match table.get_str(0, "AuthorizationContext") {
                Some(t) if !t.trim().is_empty() => Ok(t.to_owned()),
                _ => Err(storage_error(
                    ErrorKind::Permanent,
                    None,
                    &format!("{}: .get kusto identity token", self.inner.dm.endpoint()),
                    format!(
                        "the answer has no AuthorizationContext string (columns: {}, {} rows)",
                        table.columns.join(", "),
                        table.rows.len()
                    ),
                )),
            }
        }
        .await;
        match fetched {
            Ok(token) => {
                *cache = Some(Cached {
                    value: token.clone(),
                    refresh_at: now + self.inner.refresh_period,
                });
                Ok(token)
            }
            Err(e) => match cache.as_mut() {
                Some(c) => {
                    tracing::warn!(
                        "refreshing the Kusto identity token failed; the cached one stays in use and the refresh is tried again in {:?}: {e}",
                        self.inner.retry_after_failed_refresh
                    );
                    c.refresh_at = now + self.inner.retry_after_failed_refresh;
                    Ok(c.value.clone())
                }
                None => Err(e),
            },
        }
    }

    /// Uploads the batch and posts its queue message, fetching (or reusing
    /// the cached) ingestion resources and identity token. A storage 403
    /// makes it fetch fresh resources once and start over.
    pub async fn ingest(&self, batch: &QueuedBatch) -> Result<Posted, KustoError> {
        let format = batch.format.trim().to_ascii_lowercase();
        let what = format!("queued ingestion into {}.{}", batch.db, batch.table);
        let Some(kind) = mapping_kind(&format) else {
            return Err(storage_error(
                ErrorKind::Permanent,
                None,
                &what,
                format!("'{}' is not a Kusto ingestion format", batch.format),
            ));
        };
        if batch.gzipped.is_empty() {
            return Err(storage_error(
                ErrorKind::Permanent,
                None,
                &what,
                "the batch is empty".into(),
            ));
        }
        let id = new_uuid();
        let hint = sanitize_hint(batch.blob_name_hint.trim());
        let hint = if hint.is_empty() {
            sanitize_hint(&format!("{}__{}", batch.db, batch.table))
        } else {
            hint
        };
        let blob_name = format!("{hint}__{id}.{format}.gz");
        let mut forced = false;
        loop {
            match self
                .try_ingest(batch, &format, kind, &id, &blob_name, forced)
                .await
            {
                Ok(p) => return Ok(p),
                Err(Failure::StorageDenied(e)) if !forced => {
                    tracing::info!(
                        "{}: storage refused the SAS ({}); fetching fresh ingestion resources",
                        e.what,
                        e.message
                    );
                    forced = true;
                }
                Err(Failure::StorageDenied(e) | Failure::Other(e)) => return Err(e),
            }
        }
    }

    async fn try_ingest(
        &self,
        batch: &QueuedBatch,
        format: &str,
        kind: &str,
        id: &str,
        blob_name: &str,
        force_refresh: bool,
    ) -> Result<Posted, Failure> {
        let resources = self.resources(force_refresh).await?;
        self.check_resources(&resources)?;
        let identity = self.identity().await?;

        let (container, blob_url) = self
            .upload(&resources, blob_name, batch)
            .await
            .map_err(Failure::storage)?;

        let mut additional = Map::new();
        additional.insert("authorizationContext".into(), identity.into());
        additional.insert("format".into(), format.into());
        if let Some(m) = batch.mapping.as_deref().filter(|m| !m.trim().is_empty()) {
            additional.insert("ingestionMappingReference".into(), m.into());
            additional.insert("ingestionMappingType".into(), kind.into());
        }
        if !batch.tags.is_empty() {
            additional.insert("tags".into(), json!(batch.tags).to_string().into());
        }
        if !batch.ingest_if_not_exists.is_empty() {
            additional.insert(
                "ingestIfNotExists".into(),
                json!(batch.ingest_if_not_exists).to_string().into(),
            );
        }
        let now = (self.inner.clock)();
        // FailuresOnly to Queue, as the Kafka Connect sink sends it; with the
        // status check FailuresAndSuccesses to Table.
        let (level, method) = if self.inner.report_status {
            (2, 1)
        } else {
            (0, 0)
        };
        let mut message = json!({
            "Id": id,
            "BlobPath": blob_url,
            "RawDataSize": batch.raw_size,
            "DatabaseName": batch.db,
            "TableName": batch.table,
            "RetainBlobOnSuccess": true,
            "FlushImmediately": false,
            "IgnoreSizeLimit": false,
            "ReportLevel": level,
            "ReportMethod": method,
            "SourceMessageCreationTime": rfc3339(now),
            "AdditionalProperties": Value::Object(additional),
        });
        if self.inner.report_status {
            // The SDKs pick the first status table.
            let table = resources.status_tables.first().ok_or_else(|| {
                storage_error(
                    ErrorKind::Permanent,
                    None,
                    "queued ingestion",
                    "no IngestionsStatusTable among the ingestion resources".into(),
                )
            })?;
            self.insert_pending(table, id, batch, &container, blob_name, now)
                .await
                .map_err(Failure::storage)?;
            message["IngestionStatusInTable"] = json!({
                "TableConnectionString": table.url(""),
                "PartitionKey": id,
                "RowKey": id,
            });
        }
        self.post(&resources, &message.to_string())
            .await
            .map_err(Failure::storage)?;
        Ok(Posted {
            ingestion_id: id.to_owned(),
            blob_url_without_sas: format!("{}/{blob_name}", container.base),
        })
    }

    /// The resources to try for one step: up to three, starting at the
    /// round-robin position.
    fn rotation<'a>(list: &'a [Resource], next: &AtomicUsize) -> Vec<&'a Resource> {
        let start = next.fetch_add(1, Ordering::Relaxed);
        (0..list.len().min(ATTEMPTS_PER_STEP))
            .map(|i| &list[(start + i) % list.len()])
            .collect()
    }

    async fn storage_request(
        &self,
        what: &str,
        req: reqwest::RequestBuilder,
        ok: &[u16],
    ) -> Result<String, KustoError> {
        let resp = req
            .timeout(STORAGE_TIMEOUT)
            .header("x-ms-version", STORAGE_VERSION)
            .header("x-ms-client-request-id", new_uuid())
            .send()
            .await
            .map_err(|e| {
                // reqwest puts the URL (with its SAS) in its errors.
                let e = e.without_url();
                let kind = if e.is_builder() {
                    ErrorKind::Permanent
                } else {
                    ErrorKind::Transient
                };
                let mut message = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    message.push_str(&format!(": {s}"));
                    source = s.source();
                }
                storage_error(kind, None, what, message)
            })?;
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        if ok.contains(&status) {
            return Ok(body);
        }
        Err(storage_error(
            classify_storage(status),
            Some(status),
            what,
            storage_message(&body),
        ))
    }

    /// Uploads the blob; returns the container used and the blob's URL with
    /// the SAS (for the message).
    async fn upload(
        &self,
        r: &Resources,
        blob_name: &str,
        batch: &QueuedBatch,
    ) -> Result<(Resource, String), KustoError> {
        let mut last = None;
        for container in Self::rotation(&r.containers, &self.inner.next_container) {
            let what = format!("uploading blob {blob_name} to container {}", container.base);
            let url = container.url(&format!("/{blob_name}"));
            let req = self
                .inner
                .http
                .put(&url)
                .header("x-ms-blob-type", "BlockBlob")
                .header("Content-Type", "application/octet-stream")
                .header("Content-Length", batch.gzipped.len().to_string())
                .body(batch.gzipped.clone());
            match self.storage_request(&what, req, &[201]).await {
                Ok(_) => return Ok((container.clone(), url)),
                Err(e) if e.is_retriable() => {
                    tracing::warn!("{e}; trying the next container");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            storage_error(
                ErrorKind::Permanent,
                None,
                "queued ingestion",
                "no TempStorage container".into(),
            )
        }))
    }

    /// Posts the message (base64 of its JSON, as the SDKs encode it).
    async fn post(&self, r: &Resources, message: &str) -> Result<(), KustoError> {
        let text = base64::engine::general_purpose::STANDARD.encode(message.as_bytes());
        let body = format!("<QueueMessage><MessageText>{text}</MessageText></QueueMessage>");
        let mut last = None;
        for queue in Self::rotation(&r.queues, &self.inner.next_queue) {
            let what = format!("posting the ingestion message to queue {}", queue.base);
            let req = self
                .inner
                .http
                .post(queue.url("/messages"))
                .header("Content-Type", "application/xml")
                .body(body.clone());
            match self.storage_request(&what, req, &[201]).await {
                Ok(_) => return Ok(()),
                Err(e) if e.is_retriable() => {
                    tracing::warn!("{e}; trying the next queue");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            storage_error(
                ErrorKind::Permanent,
                None,
                "queued ingestion",
                "no SecuredReadyForAggregationQueue".into(),
            )
        }))
    }

    /// Inserts the `Pending` status row the service later updates, as the
    /// Java SDK does before posting a table-reported message.
    async fn insert_pending(
        &self,
        table: &Resource,
        id: &str,
        batch: &QueuedBatch,
        container: &Resource,
        blob_name: &str,
        now: SystemTime,
    ) -> Result<(), KustoError> {
        let what = format!(
            "inserting the Pending status row {id} into table {}",
            table.base
        );
        let entity = json!({
            "PartitionKey": id,
            "RowKey": id,
            "IngestionSourceId": id,
            "IngestionSourcePath": format!("{}/{blob_name}", container.base),
            "Database": batch.db,
            "Table": batch.table,
            "Status": "Pending",
            "UpdatedOn": rfc3339(now),
            "UpdatedOn@odata.type": "Edm.DateTime",
        });
        let req = self
            .inner
            .http
            .post(table.url(""))
            .header("Accept", "application/json;odata=nometadata")
            .header("Content-Type", "application/json")
            .header("DataServiceVersion", "3.0")
            .header("Prefer", "return-no-content")
            .body(entity.to_string());
        self.storage_request(&what, req, &[201, 204])
            .await
            .map(|_| ())
    }

    /// Waits until the status row of `posted` reports a final status
    /// (`Succeeded`, `Skipped`, `Failed`, `PartiallySucceeded`), up to
    /// `timeout`; [`IngestionStatus::Pending`] when it did not. Needs
    /// [`QueuedIngestor::with_status_reporting`]. Reading the row uses the
    /// status table of the current ingestion resources (the service keeps
    /// it across refreshes).
    pub async fn wait_for_status(
        &self,
        posted: &Posted,
        timeout: Duration,
    ) -> Result<IngestionStatus, KustoError> {
        let id = &posted.ingestion_id;
        let what = format!("reading the ingestion status of {id}");
        if !self.inner.report_status {
            return Err(storage_error(
                ErrorKind::Permanent,
                None,
                &what,
                "status reporting is off: the message asked for failures only, on the failed-ingestions queue".into(),
            ));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pause = self.inner.status_poll;
        let mut refreshed = false;
        loop {
            let resources = self.resources(false).await?;
            let table = resources.status_tables.first().ok_or_else(|| {
                storage_error(
                    ErrorKind::Permanent,
                    None,
                    &what,
                    "no IngestionsStatusTable among the ingestion resources".into(),
                )
            })?;
            let what = format!("{what} from table {}", table.base);
            // Single quotes in keys are doubled (OData); a UUID has none.
            let key = id.replace('\'', "''");
            let url = table.url(&format!("(PartitionKey='{key}',RowKey='{key}')"));
            let req = self
                .inner
                .http
                .get(url)
                .header("Accept", "application/json;odata=nometadata")
                .header("DataServiceVersion", "3.0");
            match self.storage_request(&what, req, &[200]).await {
                Ok(body) => {
                    let row: Value = serde_json::from_str(&body).map_err(|e| {
                        storage_error(
                            ErrorKind::Transient,
                            Some(200),
                            &what,
                            format!("the row is not JSON: {e}"),
                        )
                    })?;
                    if let Some(status) = final_status(&row) {
                        return Ok(status);
                    }
                }
                Err(e) if e.status == Some(403) && !refreshed => {
                    refreshed = true;
                    self.resources(true).await?;
                    continue;
                }
                Err(e) => return Err(e),
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(IngestionStatus::Pending);
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_secs(10));
        }
    }
}

/// The final status a status row reports, None while it is pending.
fn final_status(row: &Value) -> Option<IngestionStatus> {
    let field = |k: &str| row.get(k).and_then(Value::as_str).unwrap_or_default();
    match field("Status") {
        "Succeeded" => Some(IngestionStatus::Succeeded),
        "Skipped" => Some(IngestionStatus::Skipped),
        s @ ("Failed" | "PartiallySucceeded") => {
            let mut details = String::new();
            if s == "PartiallySucceeded" {
                details.push_str("partially succeeded: ");
            }
            let code = field("ErrorCode");
            if !code.is_empty() {
                details.push_str(code);
                details.push_str(": ");
            }
            details.push_str(field("Details"));
            let permanent = s == "PartiallySucceeded" || field("FailureStatus") != "Transient";
            Some(IngestionStatus::Failed { details, permanent })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_are_sanitized_and_bounded() {
        assert_eq!(
            sanitize_hint("db__t__my topic/x__0__1-9"),
            "db__t__my-topic-x__0__1-9"
        );
        assert_eq!(sanitize_hint(&"a".repeat(500)).len(), MAX_HINT_CHARS);
        assert_eq!(sanitize_hint("ü?"), "--");
    }

    #[test]
    fn mapping_kinds_follow_the_format() {
        assert_eq!(mapping_kind("multijson"), Some("Json"));
        assert_eq!(mapping_kind("csv"), Some("Csv"));
        assert_eq!(mapping_kind("avro"), Some("Avro"));
        assert_eq!(mapping_kind("apacheavro"), Some("ApacheAvro"));
        assert_eq!(mapping_kind("parquet"), Some("Parquet"));
        assert_eq!(mapping_kind("yaml"), None);
    }

    #[test]
    fn resources_keep_the_sas_apart_and_refuse_plain_http() {
        let r = Resource::parse(
            "TempStorage",
            "https://a.blob.core.windows.net/c?sv=1&sig=s",
        )
        .expect("resource");
        assert_eq!(r.base, "https://a.blob.core.windows.net/c");
        assert_eq!(format!("{r:?}"), "https://a.blob.core.windows.net/c");
        assert_eq!(
            r.url("/b.csv.gz"),
            "https://a.blob.core.windows.net/c/b.csv.gz?sv=1&sig=s"
        );
        assert!(Resource::parse("TempStorage", "http://a.blob.core.windows.net/c?sig=s").is_err());
        assert!(Resource::parse("TempStorage", "http://127.0.0.1:1/acct/c?sig=s").is_ok());
        assert!(Resource::parse("TempStorage", "https://a.blob.core.windows.net/c").is_err());
    }

    #[test]
    fn storage_errors_keep_code_and_first_message_line() {
        let body = "<?xml version=\"1.0\"?><Error><Code>ServerBusy</Code><Message>Busy.\nRequestId:1\nTime:2</Message></Error>";
        assert_eq!(storage_message(body), "ServerBusy: Busy.");
        assert_eq!(storage_message(""), "no error body");
        assert_eq!(classify_storage(503), ErrorKind::Transient);
        assert_eq!(classify_storage(429), ErrorKind::Throttled);
        assert_eq!(classify_storage(403), ErrorKind::Forbidden);
        assert_eq!(classify_storage(400), ErrorKind::Permanent);
    }

    #[test]
    fn status_rows_map_to_outcomes() {
        assert_eq!(final_status(&json!({"Status": "Pending"})), None);
        assert_eq!(
            final_status(&json!({"Status": "Succeeded"})),
            Some(IngestionStatus::Succeeded)
        );
        assert_eq!(
            final_status(&json!({"Status": "Skipped"})),
            Some(IngestionStatus::Skipped)
        );
        assert_eq!(
            final_status(
                &json!({"Status": "Failed", "ErrorCode": "BadRequest_InvalidBlob", "Details": "bad", "FailureStatus": "Permanent"})
            ),
            Some(IngestionStatus::Failed {
                details: "BadRequest_InvalidBlob: bad".into(),
                permanent: true
            })
        );
        assert_eq!(
            final_status(
                &json!({"Status": "Failed", "Details": "later", "FailureStatus": "Transient"})
            ),
            Some(IngestionStatus::Failed {
                details: "later".into(),
                permanent: false
            })
        );
    }
}
