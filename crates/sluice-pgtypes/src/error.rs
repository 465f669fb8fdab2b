//! The error of a value that cannot be decoded.

use std::fmt;

/// Longest excerpt of the offending text kept in an error: values can be
/// megabytes long and errors end up in logs.
const MAX_TEXT: usize = 64;

/// A value whose text could not be decoded as its column's type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeError {
    type_name: String,
    text: String,
    reason: String,
}

impl TypeError {
    /// An error for `text` of type `type_name`, with a short reason.
    pub fn new(type_name: &str, text: &[u8], reason: impl Into<String>) -> TypeError {
        let lossy = String::from_utf8_lossy(text);
        let mut excerpt: String = lossy.chars().take(MAX_TEXT).collect();
        if excerpt.len() < lossy.len() {
            excerpt.push('…');
        }
        TypeError {
            type_name: type_name.to_string(),
            text: excerpt,
            reason: reason.into(),
        }
    }

    /// The PostgreSQL type name of the column.
    pub fn type_name(&self) -> &str {
        &self.type_name
    }

    /// The offending text, truncated.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Why the text was rejected.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for TypeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot decode {} value {:?}: {}",
            self.type_name, self.text, self.reason
        )
    }
}

impl std::error::Error for TypeError {}

/// The reason of a failed decode, before the codec attaches the type name and
/// the text. Static in the common case so that failing is cheap too.
pub(crate) type Reason = std::borrow::Cow<'static, str>;

/// Shorthand for a static reason.
pub(crate) fn bad(reason: &'static str) -> Reason {
    std::borrow::Cow::Borrowed(reason)
}
