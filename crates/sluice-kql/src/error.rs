//! Errors with the place in the query they are about.

use std::fmt;

/// A byte range of the query text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Span {
    /// The range `start..end`.
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }

    /// The smallest range covering both.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }
}

/// A line and column, both from 1; columns count characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1, in characters.
    pub column: usize,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Where byte `offset` of `text` is.
pub fn position(text: &str, offset: usize) -> Position {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before[line_start..].chars().count() + 1;
    Position { line, column }
}

/// What kind of problem a query has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The text is not KQL.
    Syntax,
    /// Valid KQL that Sluice does not translate: refused rather than
    /// answered differently from Azure Data Explorer.
    Unsupported,
    /// KQL that names something that does not exist or mixes types, as
    /// Azure Data Explorer's semantic errors.
    Semantic,
}

/// A query that cannot be translated: what, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KqlError {
    /// The kind of problem.
    pub kind: ErrorKind,
    /// What is wrong, and what to do instead when there is something.
    pub message: String,
    /// The part of the query it is about.
    pub span: Span,
    /// Where the span starts (line:column).
    pub position: Position,
}

impl fmt::Display for KqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ErrorKind::Syntax => "syntax error",
            ErrorKind::Unsupported => "not supported",
            ErrorKind::Semantic => "semantic error",
        };
        write!(f, "KQL {kind} at {}: {}", self.position, self.message)
    }
}

impl std::error::Error for KqlError {}

/// An error before its position is known (the query text is needed for
/// that); [`RawError::locate`] completes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawError {
    pub kind: ErrorKind,
    pub span: Span,
    pub message: String,
}

impl RawError {
    pub fn locate(self, text: &str) -> KqlError {
        KqlError {
            kind: self.kind,
            position: position(text, self.span.start),
            span: self.span,
            message: self.message,
        }
    }
}

pub(crate) type Result<T> = std::result::Result<T, RawError>;

fn raw(kind: ErrorKind, span: Span, message: impl Into<String>) -> RawError {
    RawError {
        kind,
        span,
        message: message.into(),
    }
}

pub(crate) fn syntax(span: Span, message: impl Into<String>) -> RawError {
    raw(ErrorKind::Syntax, span, message)
}

pub(crate) fn unsupported(span: Span, message: impl Into<String>) -> RawError {
    raw(ErrorKind::Unsupported, span, message)
}

pub(crate) fn semantic(span: Span, message: impl Into<String>) -> RawError {
    raw(ErrorKind::Semantic, span, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_characters() {
        let q = "T\n| where é == 1";
        assert_eq!(position(q, 0).to_string(), "1:1");
        assert_eq!(position(q, 2).to_string(), "2:1");
        let at = q.find("==").expect("op");
        assert_eq!(position(q, at).to_string(), "2:11");
    }
}
