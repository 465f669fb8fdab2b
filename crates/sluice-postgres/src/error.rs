//! Errors reported by PostgreSQL, kept structured so callers can tell a
//! transient failure (retry) from a definite one (report the fix).

use std::fmt;

/// An error response from the server.
#[derive(Debug, Clone, Default)]
pub struct PgError {
    /// Severity (ERROR, FATAL, ...).
    pub severity: String,
    /// SQLSTATE code.
    pub code: String,
    /// Primary message.
    pub message: String,
    /// Detail.
    pub detail: Option<String>,
    /// Hint.
    pub hint: Option<String>,
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.severity, self.code, self.message)?;
        if let Some(d) = &self.detail {
            write!(f, " (detail: {d})")?;
        }
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

impl std::error::Error for PgError {}

/// The SQLSTATE of an error chain, from either this crate's replication
/// connection or tokio-postgres.
pub fn sqlstate(e: &anyhow::Error) -> Option<String> {
    for cause in e.chain() {
        if let Some(p) = cause.downcast_ref::<PgError>() {
            return Some(p.code.clone());
        }
        if let Some(p) = cause.downcast_ref::<tokio_postgres::Error>() {
            if let Some(c) = p.code() {
                return Some(c.code().to_string());
            }
        }
    }
    None
}

/// Whether an error is worth retrying: connection trouble, a server
/// restarting, or a slot held by another process.
pub fn is_transient(e: &anyhow::Error) -> bool {
    if is_definite_tls_failure(e) {
        return false;
    }
    if let Some(code) = sqlstate(e) {
        return matches!(
            code.as_str(),
            // connection exceptions, admin/crash shutdown, cannot connect now,
            // object in use (slot active), too many connections, serialization
            "08000"
                | "08003"
                | "08006"
                | "08001"
                | "08004"
                | "57P01"
                | "57P02"
                | "57P03"
                | "55006"
                | "53300"
                | "40001"
                | "40P01"
        );
    }
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some()
            || c.downcast_ref::<tokio_postgres::Error>()
                .is_some_and(|p| p.is_closed() || p.code().is_none())
            || {
                let s = c.to_string();
                s.contains("closed the replication connection")
                    || s.contains("replication stream closed")
                    || s.contains("timed out")
                    || s.contains("connection closed")
            }
    })
}

/// A TLS failure that no retry can fix: a certificate that does not verify,
/// or a server that does not offer TLS when the config requires it.
fn is_definite_tls_failure(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        // io::Error hides the error it wraps from `source()`, so look inside.
        let tls = c.downcast_ref::<rustls::Error>().or_else(|| {
            c.downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref)
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        matches!(
            tls,
            Some(
                rustls::Error::InvalidCertificate(_)
                    | rustls::Error::NoCertificatesPresented
                    | rustls::Error::PeerIncompatible(_)
                    | rustls::Error::UnsupportedNameType
            )
        ) || {
            let s = c.to_string();
            s.ends_with("server does not support TLS")
                || s.contains("does not accept TLS but database.sslmode")
        }
    })
}
