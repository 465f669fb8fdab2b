//! The librdkafka client context shared by Sluice's clients: it keeps the
//! last client-level error (so a failed connection can be reported with its
//! cause) and routes librdkafka's logs to `tracing`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::error::KafkaResult;
use rdkafka::metadata::Metadata;

use crate::error::{Error, Result};

/// Client context: remembers the last error librdkafka reported.
#[derive(Default, Clone)]
pub struct SluiceContext {
    last_error: Arc<Mutex<Option<String>>>,
}

impl SluiceContext {
    /// The last client-level error (e.g. a failed connection), if any.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl SluiceContext {
    /// Keeps `message` as the last error; a generic one ("all brokers are
    /// down") does not replace a specific cause.
    fn remember(&self, message: &str, specific: bool) {
        let mut last = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        if specific || last.is_none() {
            *last = Some(message.to_string());
        }
    }
}

impl ClientContext for SluiceContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        // Connection failures ("Connect to ... failed: Connection refused",
        // "Failed to resolve ...") arrive as FAIL logs from librdkafka's
        // broker threads, even when no one polls for error events.
        if fac == "FAIL" || (level as i32) <= RDKafkaLogLevel::Error as i32 {
            self.remember(message, true);
        }
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::error!(target: "librdkafka", fac, "{message}"),
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", fac, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", fac, "{message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", fac, "{message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", "{error}: {reason}");
        let generic = matches!(
            error.rdkafka_error_code(),
            Some(rdkafka::types::RDKafkaErrorCode::AllBrokersDown)
        );
        let text = if reason.is_empty() {
            error.to_string()
        } else {
            reason.to_string()
        };
        self.remember(&text, !generic);
    }
}

/// Waits until the cluster answers a metadata request, or fails with
/// [`Error::Unreachable`] naming the last connection error.
pub(crate) fn probe(
    fetch: impl Fn(Duration) -> KafkaResult<Metadata>,
    ctx: &SluiceContext,
    bootstrap: &str,
    timeout: Duration,
) -> Result<()> {
    let start = Instant::now();
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        let step = left
            .min(Duration::from_secs(2))
            .max(Duration::from_millis(100));
        match fetch(step) {
            Ok(md) if !md.brokers().is_empty() => return Ok(()),
            Ok(_) => {}
            Err(e) => {
                if start.elapsed() >= timeout {
                    return Err(Error::Unreachable {
                        bootstrap: bootstrap.to_string(),
                        timeout_ms: timeout.as_millis() as u64,
                        reason: ctx.last_error().unwrap_or_else(|| e.to_string()),
                    });
                }
            }
        }
        if start.elapsed() >= timeout {
            return Err(Error::Unreachable {
                bootstrap: bootstrap.to_string(),
                timeout_ms: timeout.as_millis() as u64,
                reason: ctx
                    .last_error()
                    .unwrap_or_else(|| "no broker answered".into()),
            });
        }
    }
}

/// Used only by the admin's metadata client, which sends no records.
impl rdkafka::producer::ProducerContext for SluiceContext {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

/// Used by the group-less topic readers, which have no rebalances.
impl rdkafka::consumer::ConsumerContext for SluiceContext {}
