//! KQL's tokens, each with its byte range.

use crate::error::{syntax, Result, Span};

/// One token.
#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// A name or keyword (`where`, `Orders`, `count`).
    Ident(String),
    /// A quoted name: `['my column']`.
    QuotedIdent(String),
    /// An integer literal (`42`, `0x2A`).
    Int(i64),
    /// A real literal (`1.5`, `1e3`).
    Real(f64),
    /// A timespan literal, in microseconds (`10m`, `1.5h`, `30s`).
    Timespan(i64),
    /// A string literal, unescaped.
    Str(String),
    /// `datetime(...)`, `timespan(...)` or `time(...)`: the type name and
    /// the raw text between the parentheses.
    TypedRaw(String, String),
    /// An operator or punctuation: `|`, `==`, `!~`, `(`, ...
    Punct(&'static str),
}

/// A token and where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    /// The token.
    pub tok: Tok,
    /// Its bytes in the query.
    pub span: Span,
}

const PUNCTS: &[&str] = &[
    "==", "!=", "<>", "<=", ">=", "=~", "!~", "=>", "..", "|", "(", ")", "[", "]", "{", "}", ",",
    ";", "=", "<", ">", "+", "-", "*", "/", "%", ".", ":", "$", "!", "~",
];

/// Microseconds per unit, for timespan literal suffixes.
pub fn timespan_unit(unit: &str) -> Option<f64> {
    Some(match unit {
        "d" | "day" | "days" => 86_400e6,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3_600e6,
        "m" | "min" | "minute" | "minutes" => 60e6,
        "s" | "sec" | "second" | "seconds" => 1e6,
        "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => 1e3,
        "microsecond" | "microseconds" => 1.0,
        "tick" | "ticks" => 0.1,
        _ => return None,
    })
}

/// Splits `text` into tokens; comments (`// ...`) are dropped.
pub fn lex(text: &str) -> Result<Vec<Token>> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'/' && bytes.get(i + 1) == Some(&b'/') {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        let start = i;
        // Verbatim strings: @'...' and @"...", a doubled quote escapes it.
        if c == b'@' && matches!(bytes.get(i + 1), Some(b'\'') | Some(b'"')) {
            let (s, end) = verbatim(text, i + 1)?;
            out.push(Token {
                tok: Tok::Str(s),
                span: Span::new(start, end),
            });
            i = end;
            continue;
        }
        // Obfuscated strings (h'...') are plain strings here.
        if (c == b'h' || c == b'H')
            && matches!(bytes.get(i + 1), Some(b'\'') | Some(b'"'))
            && !prev_is_word(bytes, i)
        {
            let (s, end) = string(text, i + 1)?;
            out.push(Token {
                tok: Tok::Str(s),
                span: Span::new(start, end),
            });
            i = end;
            continue;
        }
        if c == b'\'' || c == b'"' {
            let (s, end) = string(text, i)?;
            out.push(Token {
                tok: Tok::Str(s),
                span: Span::new(start, end),
            });
            i = end;
            continue;
        }
        if c.is_ascii_digit() || (c == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            let (tok, end) = number(text, i)?;
            out.push(Token {
                tok,
                span: Span::new(start, end),
            });
            i = end;
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            let mut j = i;
            while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
                j += 1;
            }
            let word = &text[i..j];
            // datetime(...), timespan(...) and time(...) hold raw text.
            let lower = word.to_ascii_lowercase();
            if matches!(lower.as_str(), "datetime" | "timespan" | "time" | "date")
                && bytes.get(j) == Some(&b'(')
            {
                let close = text[j..].find(')').map(|k| j + k).ok_or_else(|| {
                    syntax(
                        Span::new(start, text.len()),
                        format!("'{word}(' is not closed with ')'"),
                    )
                })?;
                let raw = text[j + 1..close].trim().to_string();
                let ty = if lower == "date" {
                    "datetime".to_string()
                } else if lower == "time" {
                    "timespan".to_string()
                } else {
                    lower
                };
                out.push(Token {
                    tok: Tok::TypedRaw(ty, raw),
                    span: Span::new(start, close + 1),
                });
                i = close + 1;
                continue;
            }
            out.push(Token {
                tok: Tok::Ident(word.to_string()),
                span: Span::new(start, j),
            });
            i = j;
            continue;
        }
        // ['name'] and ["name"]: quoted identifiers.
        if c == b'[' {
            let mut j = i + 1;
            while j < bytes.len() && bytes[j].is_ascii_whitespace() {
                j += 1;
            }
            if matches!(bytes.get(j), Some(b'\'') | Some(b'"')) {
                let (name, end) = string(text, j)?;
                let mut k = end;
                while k < bytes.len() && bytes[k].is_ascii_whitespace() {
                    k += 1;
                }
                if bytes.get(k) == Some(&b']') {
                    out.push(Token {
                        tok: Tok::QuotedIdent(name),
                        span: Span::new(start, k + 1),
                    });
                    i = k + 1;
                    continue;
                }
            }
        }
        let Some(p) = PUNCTS.iter().find(|p| text[i..].starts_with(**p)) else {
            let ch = text[i..].chars().next().unwrap_or('?');
            return Err(syntax(
                Span::new(i, i + ch.len_utf8()),
                format!("unexpected character '{ch}'"),
            ));
        };
        out.push(Token {
            tok: Tok::Punct(p),
            span: Span::new(start, i + p.len()),
        });
        i += p.len();
    }
    Ok(out)
}

fn prev_is_word(bytes: &[u8], i: usize) -> bool {
    i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_')
}

/// A quoted string starting at `at` (the quote): its value and the end.
fn string(text: &str, at: usize) -> Result<(String, usize)> {
    let quote = text.as_bytes()[at] as char;
    let mut out = String::new();
    let mut chars = text[at + 1..].char_indices();
    while let Some((k, ch)) = chars.next() {
        if ch == quote {
            return Ok((out, at + 1 + k + 1));
        }
        if ch == '\n' {
            break;
        }
        if ch == '\\' {
            let Some((k2, esc)) = chars.next() else {
                break;
            };
            match esc {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                '\\' => out.push('\\'),
                '\'' => out.push('\''),
                '"' => out.push('"'),
                '0' => out.push('\0'),
                other => {
                    let pos = at + 1 + k2;
                    return Err(syntax(
                        Span::new(pos - 1, pos + other.len_utf8()),
                        format!("unknown escape '\\{other}' in a string literal (use @'...' for verbatim text)"),
                    ));
                }
            }
            continue;
        }
        out.push(ch);
    }
    Err(syntax(
        Span::new(at, text.len()),
        "the string literal is not closed".to_string(),
    ))
}

fn verbatim(text: &str, at: usize) -> Result<(String, usize)> {
    let bytes = text.as_bytes();
    let quote = bytes[at];
    let mut out = String::new();
    let mut j = at + 1;
    let mut seg = j;
    while j < bytes.len() {
        if bytes[j] == quote {
            out.push_str(&text[seg..j]);
            if bytes.get(j + 1) == Some(&quote) {
                out.push(quote as char);
                j += 2;
                seg = j;
                continue;
            }
            return Ok((out, j + 1));
        }
        j += 1;
    }
    Err(syntax(
        Span::new(at - 1, text.len()),
        "the string literal is not closed".to_string(),
    ))
}

fn number(text: &str, at: usize) -> Result<(Tok, usize)> {
    let bytes = text.as_bytes();
    if bytes[at] == b'0' && matches!(bytes.get(at + 1), Some(b'x') | Some(b'X')) {
        let mut j = at + 2;
        while j < bytes.len() && bytes[j].is_ascii_hexdigit() {
            j += 1;
        }
        let v = i64::from_str_radix(&text[at + 2..j], 16).map_err(|e| {
            syntax(
                Span::new(at, j),
                format!("'{}' is not a long: {e}", &text[at..j]),
            )
        })?;
        return Ok((Tok::Int(v), j));
    }
    let mut j = at;
    let mut real = false;
    while j < bytes.len() && bytes[j].is_ascii_digit() {
        j += 1;
    }
    if j < bytes.len() && bytes[j] == b'.' && bytes.get(j + 1).is_some_and(u8::is_ascii_digit) {
        real = true;
        j += 1;
        while j < bytes.len() && bytes[j].is_ascii_digit() {
            j += 1;
        }
    }
    if j < bytes.len()
        && (bytes[j] == b'e' || bytes[j] == b'E')
        && (bytes.get(j + 1).is_some_and(u8::is_ascii_digit)
            || (matches!(bytes.get(j + 1), Some(b'+') | Some(b'-'))
                && bytes.get(j + 2).is_some_and(u8::is_ascii_digit)))
    {
        real = true;
        j += 2;
        while j < bytes.len() && bytes[j].is_ascii_digit() {
            j += 1;
        }
    }
    let digits = &text[at..j];
    // A unit right after the number makes a timespan: 10m, 1.5h, 30sec.
    let mut k = j;
    while k < bytes.len() && bytes[k].is_ascii_alphabetic() {
        k += 1;
    }
    if k > j {
        let unit = &text[j..k];
        if k < bytes.len() && (bytes[k].is_ascii_digit() || bytes[k] == b'_') {
            return Err(syntax(
                Span::new(at, k + 1),
                format!("'{}' is not a number or a timespan", &text[at..=k]),
            ));
        }
        let Some(per) = timespan_unit(&unit.to_ascii_lowercase()) else {
            return Err(syntax(
                Span::new(at, k),
                format!(
                    "'{}' is not a timespan: the unit '{unit}' is none of d, h, m, s, ms, microsecond, tick",
                    &text[at..k]
                ),
            ));
        };
        let n: f64 = digits.parse().map_err(|_| {
            syntax(
                Span::new(at, k),
                format!("'{}' is not a timespan", &text[at..k]),
            )
        })?;
        let micros = n * per;
        if !micros.is_finite() || micros.abs() > 9.0e18 {
            return Err(syntax(
                Span::new(at, k),
                format!("the timespan '{}' is out of range", &text[at..k]),
            ));
        }
        return Ok((Tok::Timespan(micros.round() as i64), k));
    }
    if real {
        let v: f64 = digits
            .parse()
            .map_err(|_| syntax(Span::new(at, j), format!("'{digits}' is not a real number")))?;
        Ok((Tok::Real(v), j))
    } else {
        match digits.parse::<i64>() {
            Ok(v) => Ok((Tok::Int(v), j)),
            Err(_) => Err(syntax(
                Span::new(at, j),
                format!("'{digits}' does not fit in a long"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(q: &str) -> Vec<Tok> {
        lex(q).expect("lexes").into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn literals_and_operators() {
        assert_eq!(
            toks("T | where a == 'x\\'y' and b !~ @\"c\\d\" // note"),
            vec![
                Tok::Ident("T".into()),
                Tok::Punct("|"),
                Tok::Ident("where".into()),
                Tok::Ident("a".into()),
                Tok::Punct("=="),
                Tok::Str("x'y".into()),
                Tok::Ident("and".into()),
                Tok::Ident("b".into()),
                Tok::Punct("!~"),
                Tok::Str("c\\d".into()),
            ]
        );
        assert_eq!(
            toks("10m 1.5h 30s 1d 2ms 0x10 1e3 ['a b']"),
            vec![
                Tok::Timespan(600_000_000),
                Tok::Timespan(5_400_000_000),
                Tok::Timespan(30_000_000),
                Tok::Timespan(86_400_000_000),
                Tok::Timespan(2_000),
                Tok::Int(16),
                Tok::Real(1000.0),
                Tok::QuotedIdent("a b".into()),
            ]
        );
        assert_eq!(
            toks("datetime(2020-01-01 10:00) time(1.02:03:04)"),
            vec![
                Tok::TypedRaw("datetime".into(), "2020-01-01 10:00".into()),
                Tok::TypedRaw("timespan".into(), "1.02:03:04".into()),
            ]
        );
    }

    #[test]
    fn bad_input_is_located() {
        let e = lex("T | where x == 'open").expect_err("unterminated");
        assert_eq!(e.span.start, 15);
        let e = lex("T | take 10q").expect_err("bad unit");
        assert!(e.message.contains("unit 'q'"), "{}", e.message);
        let e = lex("T # x").expect_err("bad char");
        assert_eq!(e.span.start, 2);
    }
}
