//! PostgreSQL array text (`{1,2,NULL}`, `{"a b","c\"d"}`, `{}`,
//! `[0:1]={1,2}`), split into element texts.

use std::borrow::Cow;

use crate::error::{bad, Reason};

/// One element of the outer dimension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Elem<'a> {
    /// `NULL` (unquoted).
    Null,
    /// The element's text, unquoted and unescaped.
    Text(Cow<'a, str>),
    /// A sub-array of a multi-dimensional array.
    Nested,
}

/// Splits an array literal into its outer elements.
pub(crate) fn parse(s: &str, delim: u8) -> Result<Vec<Elem<'_>>, Reason> {
    let b = s.as_bytes();
    let mut i = 0;
    // Explicit bounds ("[0:2]=" or "[1:2][1:3]=") precede arrays whose lower
    // bound is not 1; the elements are what matters here.
    if b.first() == Some(&b'[') {
        let eq = b
            .iter()
            .position(|&c| c == b'=')
            .ok_or_else(|| bad("array bounds without ="))?;
        if !b[..eq]
            .iter()
            .all(|&c| c.is_ascii_digit() || matches!(c, b'[' | b']' | b':' | b'-'))
        {
            return Err(bad("malformed array bounds"));
        }
        i = eq + 1;
    }
    if b.get(i) != Some(&b'{') {
        return Err(bad("array must start with {"));
    }
    i += 1;
    let mut out = Vec::new();
    skip_ws(b, &mut i);
    if b.get(i) == Some(&b'}') {
        i += 1;
        return if i == b.len() {
            Ok(out)
        } else {
            Err(bad("trailing characters after array"))
        };
    }
    loop {
        skip_ws(b, &mut i);
        match b.get(i) {
            None => return Err(bad("unterminated array")),
            Some(b'{') => {
                skip_nested(b, &mut i)?;
                out.push(Elem::Nested);
            }
            Some(b'"') => {
                i += 1;
                let start = i;
                let mut owned: Option<String> = None;
                loop {
                    match b.get(i) {
                        None => return Err(bad("unterminated quoted element")),
                        Some(b'"') => break,
                        Some(b'\\') => {
                            let buf = owned.get_or_insert_with(|| s[start..i].to_string());
                            let ch = s[i + 1..]
                                .chars()
                                .next()
                                .ok_or_else(|| bad("dangling backslash"))?;
                            buf.push(ch);
                            i += 1 + ch.len_utf8();
                        }
                        Some(_) => {
                            let ch = s[i..].chars().next().ok_or_else(|| bad("invalid text"))?;
                            if let Some(buf) = owned.as_mut() {
                                buf.push(ch);
                            }
                            i += ch.len_utf8();
                        }
                    }
                }
                let text = match owned {
                    Some(o) => Cow::Owned(o),
                    None => Cow::Borrowed(&s[start..i]),
                };
                i += 1;
                out.push(Elem::Text(text));
            }
            Some(_) => {
                let start = i;
                let mut owned: Option<String> = None;
                let mut escaped = false;
                while let Some(&c) = b.get(i) {
                    if c == delim || c == b'}' {
                        break;
                    }
                    if matches!(c, b'{' | b'"') {
                        return Err(bad("unexpected character in unquoted element"));
                    }
                    if c == b'\\' {
                        escaped = true;
                        let buf = owned.get_or_insert_with(|| s[start..i].to_string());
                        let ch = s[i + 1..]
                            .chars()
                            .next()
                            .ok_or_else(|| bad("dangling backslash"))?;
                        buf.push(ch);
                        i += 1 + ch.len_utf8();
                        continue;
                    }
                    let ch = s[i..].chars().next().ok_or_else(|| bad("invalid text"))?;
                    if let Some(buf) = owned.as_mut() {
                        buf.push(ch);
                    }
                    i += ch.len_utf8();
                }
                let text = match owned {
                    Some(o) => Cow::Owned(o.trim_end().to_string()),
                    None => Cow::Borrowed(s[start..i].trim_end()),
                };
                if text.is_empty() {
                    return Err(bad("empty unquoted element"));
                }
                if !escaped && text.eq_ignore_ascii_case("NULL") {
                    out.push(Elem::Null);
                } else {
                    out.push(Elem::Text(text));
                }
            }
        }
        skip_ws(b, &mut i);
        match b.get(i) {
            Some(&c) if c == delim => i += 1,
            Some(b'}') => {
                i += 1;
                break;
            }
            _ => return Err(bad("delimiter or } expected")),
        }
    }
    if i != b.len() {
        return Err(bad("trailing characters after array"));
    }
    Ok(out)
}

fn skip_ws(b: &[u8], i: &mut usize) {
    while b.get(*i).is_some_and(|c| c.is_ascii_whitespace()) {
        *i += 1;
    }
}

/// Skips a `{...}` sub-array (with quoted parts) starting at `*i`.
fn skip_nested(b: &[u8], i: &mut usize) -> Result<(), Reason> {
    let mut depth = 0usize;
    let mut in_quotes = false;
    while let Some(&c) = b.get(*i) {
        *i += 1;
        match c {
            b'\\' => *i += 1,
            b'"' => in_quotes = !in_quotes,
            b'{' if !in_quotes => depth += 1,
            b'}' if !in_quotes => {
                depth -= 1;
                if depth == 0 {
                    return Ok(());
                }
            }
            _ => {}
        }
    }
    Err(bad("unterminated sub-array"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Elem<'_> {
        Elem::Text(Cow::Borrowed(s))
    }

    #[test]
    fn splits_elements() {
        assert_eq!(parse("{}", b',').unwrap(), vec![]);
        assert_eq!(
            parse("{1,2,NULL}", b',').unwrap(),
            vec![t("1"), t("2"), Elem::Null]
        );
        assert_eq!(
            parse(r#"{"a b","c\"d",null,"NULL"}"#, b',').unwrap(),
            vec![
                t("a b"),
                Elem::Text(Cow::Owned("c\"d".into())),
                Elem::Null,
                t("NULL")
            ]
        );
        assert_eq!(
            parse("{(1,1),(0,0);(2,2),(1,1)}", b';').unwrap(),
            vec![t("(1,1),(0,0)"), t("(2,2),(1,1)")]
        );
        assert_eq!(
            parse("{{1,2},{3,4}}", b',').unwrap(),
            vec![Elem::Nested, Elem::Nested]
        );
        assert_eq!(parse("[0:1]={1,2}", b',').unwrap(), vec![t("1"), t("2")]);
        assert_eq!(
            parse(r#"{"\\x0102"}"#, b',').unwrap(),
            vec![Elem::Text(Cow::Owned("\\x0102".into()))]
        );
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "", "{", "{1,", "{1,}", "1,2", "{1}x", "{\"a}", "{{1}", "{,}", "[1=}",
        ] {
            assert!(parse(s, b',').is_err(), "{s}");
        }
    }
}
