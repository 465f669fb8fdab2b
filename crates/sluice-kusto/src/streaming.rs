//! Streaming ingestion: one request to the engine per batch
//! (`POST {engine}/v1/rest/ingest/{db}/{table}?streamFormat=..&mappingName=..`),
//! the data gzipped with `Content-Encoding: gzip`.
//!
//! Streaming ingestion needs the table's (or database's) streaming ingestion
//! policy enabled, takes at most 4 MB of data per request, and cannot tag
//! extents (so `ingest-by:` deduplication is a queued-ingestion feature).
//! When a streaming request fails for a reason queued ingestion does not
//! have ([`falls_back_to_queued`]), the caller sends the batch through
//! queued ingestion instead, as the official connector's managed streaming
//! client does.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{ACCEPT, CONTENT_ENCODING, CONTENT_TYPE};

use crate::client::{ErrorKind, KustoClient, KustoError};

/// The most data one streaming request may carry: "The data size limit for
/// a streaming ingestion request is 4 MB" (Kusto's streaming ingestion
/// documentation; the official clients' `MAX_STREAMING_SIZE_BYTES`). Sluice
/// applies it to the *uncompressed* size: a batch whose raw data fits also
/// fits once gzipped, so the request is within the limit however the
/// service measures it.
pub const STREAMING_MAX_BYTES: usize = 4 * 1024 * 1024;

/// A streaming request should complete within seconds; this bounds a request
/// that hangs.
const STREAMING_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Percent-encodes everything outside RFC 3986's unreserved characters, so
/// a database, table or mapping name cannot change the URL's structure.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The path and query of a streaming ingestion request.
fn ingest_path(db: &str, table: &str, format: &str, mapping: Option<&str>) -> String {
    let mut p = format!(
        "/v1/rest/ingest/{}/{}?streamFormat={}",
        encode(db),
        encode(table),
        encode(format)
    );
    if let Some(m) = mapping {
        p.push_str(&format!("&mappingName={}", encode(m)));
    }
    p
}

/// Streams one batch into `db`.`table` through the engine endpoint of
/// `engine`. `format` is Kusto's format name (`multijson` for Sluice's JSON
/// output, `csv`, `avro`, `apacheavro`...), `mapping` a pre-created
/// ingestion mapping's name, `gzipped_body` the batch gzipped and
/// `raw_size` its uncompressed size. A batch over [`STREAMING_MAX_BYTES`]
/// is refused before anything is sent (and [`falls_back_to_queued`] says
/// to queue it).
pub async fn ingest_streaming(
    engine: &KustoClient,
    db: &str,
    table: &str,
    format: &str,
    mapping: Option<&str>,
    gzipped_body: Bytes,
    raw_size: usize,
) -> Result<(), KustoError> {
    let what = format!(
        "streaming ingestion into {db}.{table} ({format}{}) at {}",
        mapping
            .map(|m| format!(", mapping '{m}'"))
            .unwrap_or_default(),
        engine.endpoint()
    );
    let refuse = |kind: ErrorKind, message: String| KustoError {
        kind,
        status: None,
        message,
        what: what.clone(),
        retry_after: None,
    };
    if db.is_empty() || table.is_empty() || format.is_empty() {
        return Err(refuse(
            ErrorKind::Permanent,
            "the database, table and format must all be given".into(),
        ));
    }
    if raw_size > STREAMING_MAX_BYTES || gzipped_body.len() > STREAMING_MAX_BYTES {
        return Err(refuse(
            ErrorKind::Permanent,
            format!(
                "request too large for streaming ingestion: {raw_size} bytes of data ({} gzipped); a streaming request takes at most {STREAMING_MAX_BYTES} bytes",
                gzipped_body.len()
            ),
        ));
    }
    // The service would reject the request with a decompression error;
    // saying so here names the real problem (a caller passing raw data).
    if !gzipped_body.starts_with(&[0x1f, 0x8b]) {
        return Err(refuse(
            ErrorKind::Permanent,
            "the body is not gzip data (it must be compressed before streaming)".into(),
        ));
    }
    let path = ingest_path(db, table, format, mapping);
    engine
        .send(&what, &path, |http, url| {
            http.post(url)
                .timeout(STREAMING_TIMEOUT)
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_ENCODING, "gzip")
                .header(ACCEPT, "application/json")
                .body(gzipped_body.clone())
        })
        .await?;
    Ok(())
}

/// Kusto error codes (as they appear in `code` or the exception type) that
/// mean streaming is not possible for this table or this request, while
/// queued ingestion of the same data can succeed.
const FALLBACK_MARKERS: &[&str] = &[
    // The streaming ingestion policy is off for the table or database, or
    // streaming is disabled on the cluster.
    "streamingingestionpolicynotenabled",
    "streamingingestiondisabledforcluster",
    // The table's configuration (update policies, schema) prevents
    // streaming into it.
    "updatepolicyincompatible",
    "queryschemadoesnotmatchtableschema",
    // The request is too big for streaming.
    "inputstreamtoolarge",
    "filetoolarge",
    "too large",
];

/// Whether a failed streaming request should go through queued ingestion
/// instead: after throttling or transient failures (the managed streaming
/// clients retry streaming a few times, then queue), when the request is too
/// large (413, `InputStreamTooLarge`, or refused here before sending), when
/// streaming is off for the table, database or cluster
/// (`StreamingIngestionPolicyNotEnabled`,
/// `StreamingIngestionDisabledForCluster`), and when the table's
/// configuration prevents streaming (`UpdatePolicyIncompatible`,
/// `QuerySchemaDoesNotMatchTableSchema`): the categories the newer official
/// managed streaming client falls back on. Other permanent failures (bad
/// data, a missing mapping or table, permissions) would fail the same way
/// when queued, and do not fall back.
///
/// The official connector's older client (azure-kusto-java 5.x
/// `ManagedStreamingIngestClient`) rethrows every `@permanent` error,
/// including a disabled streaming policy, and the connector then fails the
/// task; Sluice queues such a batch instead, so a table whose streaming
/// policy was never enabled still receives its data.
pub fn falls_back_to_queued(err: &KustoError) -> bool {
    if matches!(err.kind, ErrorKind::Throttled | ErrorKind::Transient) {
        return true;
    }
    if err.status == Some(413) {
        return true;
    }
    if matches!(
        err.kind,
        ErrorKind::Unauthorized | ErrorKind::Forbidden | ErrorKind::NotFound
    ) {
        return false;
    }
    let lower = err.message.to_ascii_lowercase();
    FALLBACK_MARKERS.iter().any(|m| lower.contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(kind: ErrorKind, status: Option<u16>, message: &str) -> KustoError {
        KustoError {
            kind,
            status,
            message: message.into(),
            what: "test".into(),
            retry_after: None,
        }
    }

    #[test]
    fn names_are_percent_encoded_in_the_path_and_query() {
        assert_eq!(
            ingest_path("my db", "T/1?x", "multijson", Some("m&n=1")),
            "/v1/rest/ingest/my%20db/T%2F1%3Fx?streamFormat=multijson&mappingName=m%26n%3D1"
        );
        assert_eq!(
            ingest_path("db", "T", "csv", None),
            "/v1/rest/ingest/db/T?streamFormat=csv"
        );
    }

    #[test]
    fn fallback_decisions() {
        assert!(falls_back_to_queued(&err(
            ErrorKind::Transient,
            Some(503),
            "x"
        )));
        assert!(falls_back_to_queued(&err(
            ErrorKind::Throttled,
            Some(429),
            "x"
        )));
        assert!(falls_back_to_queued(&err(
            ErrorKind::Permanent,
            Some(400),
            "BadRequest_StreamingIngestionPolicyNotEnabled: Streaming ingestion policy is not enabled"
        )));
        assert!(falls_back_to_queued(&err(
            ErrorKind::Permanent,
            Some(413),
            ""
        )));
        assert!(falls_back_to_queued(&err(
            ErrorKind::Permanent,
            Some(400),
            "Stream_InputStreamTooLarge: input stream too large"
        )));
        assert!(!falls_back_to_queued(&err(
            ErrorKind::Permanent,
            Some(400),
            "BadRequest_InvalidMapping: column 'id' cannot hold \"x\""
        )));
        assert!(!falls_back_to_queued(&err(
            ErrorKind::Forbidden,
            Some(403),
            "not authorized"
        )));
        assert!(!falls_back_to_queued(&err(
            ErrorKind::NotFound,
            Some(404),
            "no table"
        )));
    }
}
