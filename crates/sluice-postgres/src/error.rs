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

/// The connection to PostgreSQL broke (closed, timed out, or the server
/// ended the replication stream): worth a retry.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ConnectionLost(pub String);

/// Whether an SQLSTATE is worth retrying: connection exceptions (class 08),
/// an operator or crash shutdown or a server starting (57P01-57P03), an
/// object in use (55006: a slot held by another process), too many
/// connections (53300), a serialization failure or deadlock (40001,
/// 40P01).
pub fn is_transient_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || matches!(
            code,
            "57P01" | "57P02" | "57P03" | "55006" | "53300" | "40001" | "40P01"
        )
}

/// Whether an error is worth retrying, by what PostgreSQL said (its
/// SQLSTATE) or by the error's type: a lost connection or an I/O failure
/// is; a refused login, a missing object or a certificate that does not
/// verify is not.
pub fn is_transient(e: &anyhow::Error) -> bool {
    if is_definite_tls_failure(e) {
        return false;
    }
    if let Some(code) = sqlstate(e) {
        return is_transient_sqlstate(&code);
    }
    e.chain().any(|c| {
        c.downcast_ref::<ConnectionLost>().is_some()
            || c.downcast_ref::<std::io::Error>().is_some()
            || c.downcast_ref::<tokio::time::error::Elapsed>().is_some()
            || c.downcast_ref::<tokio_postgres::Error>()
                .is_some_and(|p| p.is_closed() || p.code().is_none())
    })
}

/// `e` marked with its [kind](sluice_core::error::ErrorKind), for the
/// worker to decide whether to restart the task.
pub fn classify(e: anyhow::Error) -> anyhow::Error {
    // Already decided where it was raised.
    if e.chain().any(|c| c.is::<sluice_core::TaskError>()) {
        return e;
    }
    if is_transient(&e) {
        sluice_core::error::transient(e)
    } else {
        sluice_core::error::definite(e)
    }
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
        ) || c.downcast_ref::<TlsRefused>().is_some()
    })
}

/// The server does not offer TLS while `database.sslmode` requires it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct TlsRefused(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_and_error_types_decide() {
        let pg = |code: &str| {
            anyhow::Error::new(PgError {
                severity: "FATAL".into(),
                code: code.into(),
                message: "m".into(),
                detail: None,
                hint: None,
            })
        };
        assert!(is_transient(&pg("57P01")), "admin shutdown");
        assert!(is_transient(&pg("08006")), "connection failure");
        assert!(!is_transient(&pg("28P01")), "a wrong password is definite");
        assert!(
            !is_transient(&pg("3D000")),
            "a missing database is definite"
        );
        assert!(is_transient(
            &anyhow::Error::new(ConnectionLost("closed".into())).context("streaming")
        ));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(is_transient(&anyhow::Error::new(refused)));
        assert!(!is_transient(&anyhow::anyhow!(
            "timed out, but only in words"
        )));
        assert!(!is_transient(&anyhow::Error::new(TlsRefused("no".into()))));
        assert!(sluice_core::ErrorKind::is_transient(&classify(pg("57P03"))));
    }
}
