//! Whether a failure is worth retrying.
//!
//! Every source, sink and transport reports failures as `anyhow::Error`s; a
//! [`TaskError`] somewhere in the chain says what kind of failure it is:
//!
//! - [`ErrorKind::Transient`]: the world is flaky (a lost connection, a
//!   server restarting, a full disk, a broker that does not answer). The
//!   worker restarts the task with backoff, within the connector's retry
//!   budget, and shows it `RESTARTING` with the error meanwhile.
//! - [`ErrorKind::Definite`]: the data or the configuration is wrong (a
//!   refused login, a missing table, a value a sink cannot hold). Retrying
//!   cannot help: the task is `FAILED` with the message, which says what to
//!   change.
//!
//! An error that carries no kind is treated as definite, so that an
//! unclassified failure never loops for ever unnoticed.

use std::fmt;

/// What kind of failure an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Retrying later may succeed.
    Transient,
    /// The data or configuration is wrong; never retried.
    Definite,
}

impl ErrorKind {
    /// The kind of `e`: the outermost [`TaskError`] in its chain decides;
    /// without one, [`ErrorKind::Definite`].
    pub fn of(e: &anyhow::Error) -> ErrorKind {
        e.chain()
            .find_map(|c| c.downcast_ref::<TaskError>().map(|t| t.kind))
            .unwrap_or(ErrorKind::Definite)
    }

    /// Whether `e` is worth retrying.
    pub fn is_transient(e: &anyhow::Error) -> bool {
        ErrorKind::of(e) == ErrorKind::Transient
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Transient => "transient",
            ErrorKind::Definite => "definite",
        })
    }
}

/// An error with its [`ErrorKind`]. Its text is the wrapped error's, whole
/// chain included, so wrapping changes nothing a user reads.
#[derive(Debug)]
pub struct TaskError {
    /// Whether to retry.
    pub kind: ErrorKind,
    source: anyhow::Error,
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.source)
    }
}

impl std::error::Error for TaskError {}

impl TaskError {
    /// The wrapped error.
    pub fn inner(&self) -> &anyhow::Error {
        &self.source
    }
}

/// Marks `e` as transient: the task is retried.
pub fn transient(e: impl Into<anyhow::Error>) -> anyhow::Error {
    anyhow::Error::new(TaskError {
        kind: ErrorKind::Transient,
        source: e.into(),
    })
}

/// Marks `e` as definite: the task fails with it and is not retried.
pub fn definite(e: impl Into<anyhow::Error>) -> anyhow::Error {
    anyhow::Error::new(TaskError {
        kind: ErrorKind::Definite,
        source: e.into(),
    })
}

/// Extension for results: mark an error's kind where it is raised.
pub trait ResultExt<T> {
    /// On error, marks it [transient](transient).
    fn transient(self) -> anyhow::Result<T>;
    /// On error, marks it [definite](definite).
    fn definite(self) -> anyhow::Result<T>;
}

impl<T, E: Into<anyhow::Error>> ResultExt<T> for Result<T, E> {
    fn transient(self) -> anyhow::Result<T> {
        self.map_err(transient)
    }
    fn definite(self) -> anyhow::Result<T> {
        self.map_err(definite)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outermost_kind_decides_and_the_text_is_unchanged() {
        let e = transient(anyhow::anyhow!("connection refused")).context("connecting to db:5432");
        assert_eq!(ErrorKind::of(&e), ErrorKind::Transient);
        assert_eq!(
            format!("{e:#}"),
            "connecting to db:5432: connection refused"
        );
        // A definite wrapper around a transient cause is definite.
        let e = definite(e);
        assert_eq!(ErrorKind::of(&e), ErrorKind::Definite);
    }

    #[test]
    fn an_unclassified_error_is_definite() {
        let e = anyhow::anyhow!("something odd");
        assert!(!ErrorKind::is_transient(&e));
        let r: Result<(), std::io::Error> = Err(std::io::Error::other("disk"));
        assert!(ErrorKind::is_transient(&r.transient().unwrap_err()));
    }
}
