//! A `.properties` parser that reads files the way `java.util.Properties.load`
//! does, because Kafka Connect users hand Sluice the very files they gave
//! `connect-standalone`: `=`, `:` or whitespace separators, `#`/`!` comments,
//! backslash line continuations, `\uXXXX` and backslash escapes.
//!
//! One deliberate difference: Java reads the bytes as ISO-8859-1; Sluice
//! reads UTF-8 (falling back to ISO-8859-1 for bytes that are not UTF-8), so
//! non-ASCII text written by a modern editor keeps its meaning.

use std::path::Path;

use sluice_core::config::Props;

/// A malformed `.properties` file, naming the file and the line.
#[derive(Debug, thiserror::Error)]
pub enum PropertiesError {
    /// The file could not be read.
    #[error("reading properties file '{path}': {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A syntax error (only malformed `\uXXXX` escapes are errors in Java).
    #[error("{path}:{line}: {message}")]
    Syntax {
        /// The file (or "<input>" when parsing text).
        path: String,
        /// 1-based line where the logical line starts.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// Reads and parses a `.properties` file.
pub fn load_file(path: &Path) -> Result<Props, PropertiesError> {
    let bytes = std::fs::read(path).map_err(|source| PropertiesError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        // Java's own default encoding for Properties.load(InputStream).
        Err(e) => e.into_bytes().iter().map(|&b| char::from(b)).collect(),
    };
    parse(&text, &path.display().to_string())
}

/// Parses `.properties` text; `origin` names the source in errors.
pub fn parse(text: &str, origin: &str) -> Result<Props, PropertiesError> {
    let mut props = Props::new();
    for (line_no, logical) in logical_lines(text) {
        let (key, value) = split_key_value(&logical);
        let key = unescape(&key).map_err(|message| PropertiesError::Syntax {
            path: origin.to_string(),
            line: line_no,
            message,
        })?;
        let value = unescape(&value).map_err(|message| PropertiesError::Syntax {
            path: origin.to_string(),
            line: line_no,
            message,
        })?;
        // Later definitions win, as with Hashtable.put.
        props.insert(key, value);
    }
    Ok(props)
}

fn is_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\u{000C}')
}

/// Splits text into natural lines on `\n`, `\r` or `\r\n`, with 1-based numbers.
fn natural_lines(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut i = 0;
    let mut n = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => {
                out.push((n, &text[start..i]));
                n += 1;
                i += 1;
                start = i;
            }
            b'\r' => {
                out.push((n, &text[start..i]));
                n += 1;
                i += 1;
                if i < bytes.len() && bytes[i] == b'\n' {
                    i += 1;
                }
                start = i;
            }
            _ => i += 1,
        }
    }
    if start < bytes.len() {
        out.push((n, &text[start..]));
    }
    out
}

/// Joins natural lines into logical lines, still escaped: comments and blank
/// lines dropped, continuations joined with the next line's leading
/// whitespace removed. Returns (first line number, raw logical line).
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (n, line) in natural_lines(text) {
        let trimmed = line.trim_start_matches(is_ws);
        let mut acc = match current.take() {
            Some(acc) => acc,
            None => {
                // Only the first natural line of a logical line can be a
                // comment or blank; a continued line starting with '#' is data.
                if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('!') {
                    continue;
                }
                (n, String::new())
            }
        };
        let trailing = trimmed.chars().rev().take_while(|&c| c == '\\').count();
        if trailing % 2 == 1 {
            acc.1.push_str(&trimmed[..trimmed.len() - 1]);
            current = Some(acc);
        } else {
            acc.1.push_str(trimmed);
            out.push(acc);
        }
    }
    // A continuation at end of input just ends the line, as in Java.
    if let Some(acc) = current {
        out.push(acc);
    }
    out
}

/// Splits a raw logical line at the first unescaped `=`, `:` or whitespace.
fn split_key_value(line: &str) -> (String, String) {
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    let mut escaped = false;
    while i < chars.len() {
        let c = chars[i];
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '=' || c == ':' || is_ws(c) {
            break;
        }
        i += 1;
    }
    let key: String = chars[..i].iter().collect();
    let mut j = i;
    while j < chars.len() && is_ws(chars[j]) {
        j += 1;
    }
    if j < chars.len() && (chars[j] == '=' || chars[j] == ':') {
        j += 1;
        while j < chars.len() && is_ws(chars[j]) {
            j += 1;
        }
    }
    (key, chars[j..].iter().collect())
}

/// Resolves escapes: `\t \n \r \f`, `\uXXXX`, and `\x` -> `x` for any other x.
fn unescape(raw: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\u{000C}'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                let code = (hex.len() == 4)
                    .then(|| u32::from_str_radix(&hex, 16).ok())
                    .flatten()
                    .ok_or_else(|| format!("Malformed \\uxxxx encoding: '\\u{hex}'"))?;
                // Java strings are UTF-16: a surrogate pair arrives as two escapes.
                if (0xD800..0xDC00).contains(&code) {
                    let rest = chars.as_str();
                    let low = rest
                        .strip_prefix("\\u")
                        .and_then(|r| r.get(..4))
                        .and_then(|h| u32::from_str_radix(h, 16).ok())
                        .filter(|l| (0xDC00..0xE000).contains(l));
                    match low {
                        Some(low) => {
                            let cp = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                            out.push(char::from_u32(cp).unwrap_or('\u{FFFD}'));
                            chars = rest[6..].chars();
                        }
                        None => out.push('\u{FFFD}'),
                    }
                } else {
                    out.push(char::from_u32(code).unwrap_or('\u{FFFD}'));
                }
            }
            Some(other) => out.push(other),
            // A lone trailing backslash was a continuation marker, already
            // consumed; nothing left to add.
            None => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Props {
        parse(text, "test.properties").expect("valid properties")
    }

    fn get<'a>(props: &'a Props, k: &str) -> &'a str {
        props.get(k).map(String::as_str).unwrap_or("<absent>")
    }

    #[test]
    fn separators() {
        let props = p("a=1\nb:2\nc 3\nd\t=\t4\ne   :   5\nf\n g = = 6\nh=\n");
        assert_eq!(get(&props, "a"), "1");
        assert_eq!(get(&props, "b"), "2");
        assert_eq!(get(&props, "c"), "3");
        assert_eq!(get(&props, "d"), "4");
        assert_eq!(get(&props, "e"), "5");
        assert_eq!(get(&props, "f"), "");
        // Only the first separator is consumed.
        assert_eq!(get(&props, "g"), "= 6");
        assert_eq!(get(&props, "h"), "");
    }

    #[test]
    fn comments_blank_lines_and_trailing_whitespace() {
        let props = p("# comment\n   ! also comment\n\n   \nkey = value  \n#x=y\n");
        assert_eq!(props.len(), 1);
        // Java keeps trailing whitespace in values.
        assert_eq!(get(&props, "key"), "value  ");
    }

    #[test]
    fn continuations() {
        let props = p("list = a,\\\n     b,\\\n\t  c\nnext=1\n");
        assert_eq!(get(&props, "list"), "a,b,c");
        assert_eq!(get(&props, "next"), "1");
        // An even number of backslashes is an escaped backslash, not a continuation.
        let props = p("path=C:\\\\\nother=2");
        assert_eq!(get(&props, "path"), "C:\\");
        assert_eq!(get(&props, "other"), "2");
        // A continued line starting with '#' is data, not a comment.
        let props = p("k=a\\\n#b\n");
        assert_eq!(get(&props, "k"), "a#b");
        // A comment line ending in a backslash does not continue.
        let props = p("#c\\\nk=v\n");
        assert_eq!(get(&props, "k"), "v");
        // A backslash at end of input is dropped.
        let props = p("k=v\\");
        assert_eq!(get(&props, "k"), "v");
    }

    #[test]
    fn crlf_and_cr_line_endings() {
        let props = p("a=1\r\nb=2\rc=3\\\r\n  4\r\n");
        assert_eq!(get(&props, "a"), "1");
        assert_eq!(get(&props, "b"), "2");
        assert_eq!(get(&props, "c"), "34");
    }

    #[test]
    fn escapes() {
        let props = p("k\\ ey\\=x\\:y = v\\tw\\nx\\u0041\\\\\\q\nsmile=\\uD83D\\uDE00\n");
        assert_eq!(get(&props, "k ey=x:y"), "v\tw\nxA\\q");
        assert_eq!(get(&props, "smile"), "\u{1F600}");
    }

    #[test]
    fn last_definition_wins() {
        assert_eq!(get(&p("a=1\na=2\n"), "a"), "2");
    }

    #[test]
    fn malformed_unicode_escape_names_file_and_line() {
        let err = parse("a=1\n\nb=\\u12G4\n", "w.properties").expect_err("malformed");
        let text = err.to_string();
        assert!(text.starts_with("w.properties:3:"), "{text}");
        assert!(text.contains("Malformed"), "{text}");
        let err = parse("a=\\u12", "w.properties").expect_err("short");
        assert!(err.to_string().contains("w.properties:1:"), "{err}");
    }

    #[test]
    fn latin1_fallback_for_non_utf8_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("l.properties");
        std::fs::write(&path, b"k=caf\xe9\n").expect("write");
        let props = load_file(&path).expect("load");
        assert_eq!(get(&props, "k"), "caf\u{e9}");
    }
}
