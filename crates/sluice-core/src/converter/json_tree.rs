//! A JSON reader that builds the tree Kafka Connect's `JsonDeserializer`
//! (Jackson) would: numbers keep their exact text (Jackson reads integers as
//! int/long/BigInteger and, with `USE_BIG_DECIMAL_FOR_FLOATS`, fractions as
//! exact BigDecimals), duplicate object keys keep the last value, leading
//! zeros in numbers are accepted (`ALLOW_LEADING_ZEROS_FOR_NUMBERS`), content
//! after the first value is ignored (`FAIL_ON_TRAILING_TOKENS` is off), and
//! Jackson's default read limits apply (nesting depth 1000, numbers of 1000
//! characters), except for the length of strings (see [`MAX_STRING_LEN`]).

use std::collections::HashMap;

/// Jackson's default maximum nesting depth (`StreamReadConstraints`).
const MAX_DEPTH: usize = 1000;
/// Jackson's default maximum number length (`StreamReadConstraints`).
const MAX_NUMBER_LEN: usize = 1000;
/// The longest string read, in bytes. Jackson's default
/// (`StreamReadConstraints`, 20,000,000) would refuse PostgreSQL values
/// that Debezium sends: text up to 1 GB, and bytea up to 1 GB as base64
/// (4/3 of that). This holds both.
const MAX_STRING_LEN: usize = 1_500_000_000;
/// Jackson's default maximum field name length (`StreamReadConstraints`).
const MAX_NAME_LEN: usize = 50_000;
/// Objects larger than this get a key index so duplicates stay cheap.
const INDEX_AT: usize = 16;

/// A parsed JSON value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    Num(Number),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

/// A JSON number, exactly as written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Number {
    /// The number's text (validated JSON number syntax, leading zeros allowed).
    pub text: String,
    /// No fraction and no exponent: Jackson makes it an int/long/BigInteger.
    pub integral: bool,
}

impl Json {
    /// Jackson's `JsonNodeType` name, for error messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Json::Null => "NULL",
            Json::Bool(_) => "BOOLEAN",
            Json::Num(_) => "NUMBER",
            Json::Str(_) => "STRING",
            Json::Arr(_) => "ARRAY",
            Json::Obj(_) => "OBJECT",
        }
    }

    /// An object member.
    pub(crate) fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

impl Number {
    /// The value when it is an integer that fits an `int` (Jackson's
    /// `isInt()`).
    pub(crate) fn as_i32(&self) -> Option<i32> {
        // Leading zeros parse fine; only overflow fails.
        self.integral
            .then(|| self.text.parse::<i32>().ok())
            .flatten()
    }

    /// Java's `longValue()`: the integer part, truncated toward zero, in its
    /// low 64 bits (as `BigInteger.longValue` / `BigDecimal.longValue`).
    pub(crate) fn java_long(&self) -> i64 {
        let (negative, digits, scale) = self.decimal_parts();
        // value = digits × 10^-scale; keep the integer part modulo 2^64.
        let mut acc: u64 = 0;
        if scale >= 0 {
            let keep = digits
                .len()
                .saturating_sub(usize::try_from(scale).unwrap_or(usize::MAX));
            for d in &digits[..keep] {
                acc = acc.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
            }
        } else {
            for d in &digits {
                acc = acc.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
            }
            // 10^64 is a multiple of 2^64, so larger shifts leave zero.
            let shift = scale.unsigned_abs().min(64);
            for _ in 0..shift {
                acc = acc.wrapping_mul(10);
            }
        }
        let v = acc as i64;
        if negative {
            v.wrapping_neg()
        } else {
            v
        }
    }

    /// The nearest `f64` (as `BigDecimal.doubleValue()`).
    pub(crate) fn as_f64(&self) -> f64 {
        self.text.parse::<f64>().unwrap_or(f64::NAN)
    }

    /// The nearest `f32` (as `BigDecimal.floatValue()`).
    pub(crate) fn as_f32(&self) -> f32 {
        self.text.parse::<f32>().unwrap_or(f32::NAN)
    }

    /// The exact value as (negative, unscaled digits without leading zeros
    /// ("0" for zero), scale), like `new BigDecimal(text)`.
    pub(crate) fn decimal_parts(&self) -> (bool, Vec<u8>, i64) {
        let t = self.text.as_bytes();
        let (negative, t) = match t.first() {
            Some(b'-') => (true, &t[1..]),
            _ => (false, t),
        };
        let mut digits = Vec::with_capacity(t.len());
        let mut frac_len: i64 = 0;
        let mut in_frac = false;
        let mut exp: i64 = 0;
        let mut i = 0;
        while i < t.len() {
            match t[i] {
                b'.' => in_frac = true,
                b'e' | b'E' => {
                    let rest = &t[i + 1..];
                    let (eneg, rest) = match rest.first() {
                        Some(b'-') => (true, &rest[1..]),
                        Some(b'+') => (false, &rest[1..]),
                        _ => (false, rest),
                    };
                    for d in rest {
                        exp = exp.saturating_mul(10).saturating_add(i64::from(d - b'0'));
                    }
                    if eneg {
                        exp = -exp;
                    }
                    break;
                }
                d => {
                    digits.push(d);
                    if in_frac {
                        frac_len += 1;
                    }
                }
            }
            i += 1;
        }
        let skip = digits
            .iter()
            .take_while(|d| **d == b'0')
            .count()
            .min(digits.len().saturating_sub(1));
        digits.drain(..skip);
        if digits.is_empty() {
            digits.push(b'0');
        }
        (negative, digits, frac_len.saturating_sub(exp))
    }
}

/// Parses the first JSON value of `input`; `None` when there is no content
/// (Jackson's `MissingNode`).
pub(crate) fn parse(input: &[u8]) -> Result<Option<Json>, String> {
    let mut p = Parser { s: input, i: 0 };
    // Jackson skips a UTF-8 byte order mark.
    if p.s.starts_with(&[0xEF, 0xBB, 0xBF]) {
        p.i = 3;
    }
    p.skip_ws();
    if p.i >= p.s.len() {
        return Ok(None);
    }
    p.value(0).map(Some)
}

/// Parses the first JSON value of `input` as if it were nested `depth`
/// levels deep (a member of an enclosing object counts its levels).
/// Also returns where the value ends.
pub(crate) fn parse_at(input: &[u8], depth: usize) -> Result<(Json, usize), String> {
    let mut p = Parser { s: input, i: 0 };
    p.skip_ws();
    let v = p.value(depth)?;
    Ok((v, p.i))
}

/// Where the schema's value starts when `input` opens as the envelope
/// `{"schema": ...` (whitespace allowed).
pub(crate) fn envelope_schema_start(input: &[u8]) -> Option<usize> {
    let mut i = 0;
    ws(input, &mut i);
    lit(input, &mut i, b"{")?;
    ws(input, &mut i);
    lit(input, &mut i, b"\"schema\"")?;
    ws(input, &mut i);
    lit(input, &mut i, b":")?;
    ws(input, &mut i);
    Some(i)
}

/// Where the payload's value starts when `input[i..]` goes on from the
/// schema's value as the envelope does: `, "payload":`.
pub(crate) fn envelope_payload_start(input: &[u8], mut i: usize) -> Option<usize> {
    ws(input, &mut i);
    lit(input, &mut i, b",")?;
    ws(input, &mut i);
    lit(input, &mut i, b"\"payload\"")?;
    ws(input, &mut i);
    lit(input, &mut i, b":")?;
    ws(input, &mut i);
    Some(i)
}

/// Whether the envelope closes at `i`: only its closing brace is left
/// (what follows it is ignored, as [`parse`] ignores it).
pub(crate) fn envelope_closes(input: &[u8], mut i: usize) -> bool {
    ws(input, &mut i);
    input.get(i) == Some(&b'}')
}

fn ws(input: &[u8], i: &mut usize) {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = input.get(*i) {
        *i += 1;
    }
}

fn lit(input: &[u8], i: &mut usize, word: &[u8]) -> Option<()> {
    input.get(*i..)?.starts_with(word).then(|| *i += word.len())
}

/// Where the schema's and the payload's values lie in `input` when it is
/// exactly `{"schema": <value>, "payload": <value>}` (whitespace allowed,
/// anything after the closing brace ignored, as [`parse`] ignores it);
/// None for any other shape. Values are skipped, not validated: only
/// strings (with their escapes) and brackets are followed, so a span is
/// exact for valid JSON and the caller parses what it has not seen before.
pub(crate) fn envelope_spans(
    input: &[u8],
) -> Option<(std::ops::Range<usize>, std::ops::Range<usize>)> {
    let s = envelope_schema_start(input)?;
    let schema = s..skip_value(input, s)?;
    let p = envelope_payload_start(input, schema.end)?;
    let payload = p..skip_value(input, p)?;
    envelope_closes(input, payload.end).then_some((schema, payload))
}

/// The end of the JSON value starting at `i` (see [`envelope_spans`]).
fn skip_value(s: &[u8], mut i: usize) -> Option<usize> {
    let mut depth = 0usize;
    loop {
        match *s.get(i)? {
            b'"' => {
                i += 1;
                loop {
                    i += memchr::memchr2(b'"', b'\\', s.get(i..)?)?;
                    if s[i] == b'"' {
                        break;
                    }
                    i += 2;
                }
                i += 1;
            }
            b'{' | b'[' => {
                depth += 1;
                i += 1;
            }
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                i += 1;
            }
            b',' | b':' if depth > 0 => i += 1,
            b' ' | b'\t' | b'\n' | b'\r' if depth > 0 => i += 1,
            b',' | b':' | b' ' | b'\t' | b'\n' | b'\r' => return Some(i),
            _ => {
                // A scalar: up to the next delimiter.
                while let Some(c) = s.get(i) {
                    if matches!(
                        c,
                        b',' | b':'
                            | b'}'
                            | b']'
                            | b' '
                            | b'\t'
                            | b'\n'
                            | b'\r'
                            | b'"'
                            | b'{'
                            | b'['
                    ) {
                        break;
                    }
                    i += 1;
                }
            }
        }
        if depth == 0 {
            return Some(i);
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn err(&self, what: &str) -> String {
        format!("invalid JSON at byte {}: {what}", self.i)
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.s.get(self.i) {
            self.i += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json, String> {
        if depth >= MAX_DEPTH && matches!(self.s.get(self.i), Some(b'{' | b'[')) {
            return Err(self.err("nesting deeper than 1000 levels"));
        }
        match self.s.get(self.i) {
            None => Err(self.err("unexpected end of input")),
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => self.string().map(Json::Str),
            Some(b't') => self.literal(b"true", Json::Bool(true)),
            Some(b'f') => self.literal(b"false", Json::Bool(false)),
            Some(b'n') => self.literal(b"null", Json::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(c) => Err(self.err(&format!("unexpected character {:?}", char::from(*c)))),
        }
    }

    fn literal(&mut self, word: &[u8], v: Json) -> Result<Json, String> {
        if self.s[self.i..].starts_with(word) {
            self.i += word.len();
            // A literal must not run into further identifier characters.
            if let Some(c) = self.s.get(self.i) {
                if c.is_ascii_alphanumeric() || *c == b'_' {
                    return Err(self.err("unrecognized token"));
                }
            }
            Ok(v)
        } else {
            Err(self.err("unrecognized token"))
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.s.get(self.i) {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> Result<Json, String> {
        let start = self.i;
        if self.s[self.i] == b'-' {
            self.i += 1;
        }
        if self.digits() == 0 {
            return Err(self.err("expected a digit in number"));
        }
        let mut integral = true;
        if self.s.get(self.i) == Some(&b'.') {
            self.i += 1;
            integral = false;
            if self.digits() == 0 {
                return Err(self.err("expected a digit after the decimal point"));
            }
        }
        if let Some(b'e' | b'E') = self.s.get(self.i) {
            self.i += 1;
            integral = false;
            if let Some(b'+' | b'-') = self.s.get(self.i) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(self.err("expected a digit in the exponent"));
            }
        }
        if self.i - start > MAX_NUMBER_LEN {
            return Err(self.err("number longer than 1000 characters"));
        }
        let text = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
        Ok(Json::Num(Number { text, integral }))
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let mut v = 0u32;
        for _ in 0..4 {
            let c = self
                .s
                .get(self.i)
                .and_then(|c| char::from(*c).to_digit(16))
                .ok_or_else(|| self.err("invalid \\u escape"))?;
            v = v * 16 + c;
            self.i += 1;
        }
        Ok(v)
    }

    fn string(&mut self) -> Result<String, String> {
        self.i += 1; // opening quote
        let mut out = String::new();
        loop {
            let run_start = self.i;
            while let Some(&c) = self.s.get(self.i) {
                if c == b'"' || c == b'\\' || c < 0x20 {
                    break;
                }
                self.i += 1;
            }
            let run = &self.s[run_start..self.i];
            if !run.is_empty() {
                match std::str::from_utf8(run) {
                    Ok(s) => out.push_str(s),
                    Err(e) => {
                        self.i = run_start + e.valid_up_to();
                        return Err(self.err("invalid UTF-8 in string"));
                    }
                }
            }
            match self.s.get(self.i) {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    self.i += 1;
                    if out.len() > MAX_STRING_LEN {
                        return Err(self.err(&format!("string longer than {MAX_STRING_LEN} bytes")));
                    }
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.i += 1;
                    let c = *self
                        .s
                        .get(self.i)
                        .ok_or_else(|| self.err("unterminated string"))?;
                    self.i += 1;
                    match c {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let cp = if (0xD800..0xDC00).contains(&hi)
                                && self.s[self.i..].starts_with(b"\\u")
                            {
                                let save = self.i;
                                self.i += 2;
                                let lo = self.hex4()?;
                                if (0xDC00..0xE000).contains(&lo) {
                                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                                } else {
                                    self.i = save;
                                    hi
                                }
                            } else {
                                hi
                            };
                            // A lone surrogate (legal in a Java string) has no
                            // Rust equivalent: it becomes U+FFFD.
                            out.push(char::from_u32(cp).unwrap_or('\u{FFFD}'));
                        }
                        _ => {
                            self.i -= 1;
                            return Err(self.err("unrecognized character escape"));
                        }
                    }
                }
                Some(_) => return Err(self.err("unescaped control character in string")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Json, String> {
        self.i += 1;
        let mut items = Vec::new();
        self.skip_ws();
        if self.s.get(self.i) == Some(&b']') {
            self.i += 1;
            return Ok(Json::Arr(items));
        }
        loop {
            self.skip_ws();
            items.push(self.value(depth + 1)?);
            self.skip_ws();
            match self.s.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(Json::Arr(items));
                }
                _ => return Err(self.err("expected ',' or ']' in array")),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Json, String> {
        self.i += 1;
        let mut members: Vec<(String, Json)> = Vec::new();
        let mut index: Option<HashMap<String, usize>> = None;
        self.skip_ws();
        if self.s.get(self.i) == Some(&b'}') {
            self.i += 1;
            return Ok(Json::Obj(members));
        }
        loop {
            self.skip_ws();
            if self.s.get(self.i) != Some(&b'"') {
                return Err(self.err("expected a quoted field name"));
            }
            let key = self.string()?;
            if key.len() > MAX_NAME_LEN {
                return Err(self.err("field name longer than 50000 characters"));
            }
            self.skip_ws();
            if self.s.get(self.i) != Some(&b':') {
                return Err(self.err("expected ':' after field name"));
            }
            self.i += 1;
            self.skip_ws();
            let v = self.value(depth + 1)?;
            // Jackson keeps the last value of a duplicate key, in the first
            // key's position (LinkedHashMap semantics).
            let existing = match &index {
                Some(ix) => ix.get(&key).copied(),
                None => members.iter().position(|(k, _)| *k == key),
            };
            match existing {
                Some(pos) => members[pos].1 = v,
                None => {
                    if let Some(ix) = index.as_mut() {
                        ix.insert(key.clone(), members.len());
                    }
                    members.push((key, v));
                    if index.is_none() && members.len() > INDEX_AT {
                        index = Some(
                            members
                                .iter()
                                .enumerate()
                                .map(|(i, (k, _))| (k.clone(), i))
                                .collect(),
                        );
                    }
                }
            }
            self.skip_ws();
            match self.s.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(Json::Obj(members));
                }
                _ => return Err(self.err("expected ',' or '}' in object")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_longer_than_jacksons_default_limit_are_read() {
        let len = 25 << 20;
        let mut doc = Vec::with_capacity(len + 2);
        doc.push(b'"');
        doc.resize(len + 1, b'x');
        doc.push(b'"');
        match parse(&doc) {
            Ok(Some(Json::Str(s))) => assert_eq!(s.len(), len),
            other => panic!("{:?}", other.map(|o| o.map(|j| j.kind()))),
        }
    }

    #[test]
    fn parses_like_jackson() {
        let v = parse(br#"{"a":1,"b":[true,null,"x\u00e9\ud83d\ude00"],"a":2} trailing"#)
            .expect("valid")
            .expect("content");
        assert_eq!(v.get("a").map(Json::kind), Some("NUMBER"));
        if let Some(Json::Num(n)) = v.get("a") {
            assert_eq!(n.java_long(), 2);
        }
        if let Some(Json::Arr(items)) = v.get("b") {
            assert_eq!(items[2], Json::Str("xé😀".into()));
        }
        assert_eq!(parse(b"  ").expect("empty ok"), None);
        assert!(parse(b"[1,]").is_err());
        assert!(parse(b"1.").is_err());
        assert!(parse(b"\"a\x01\"").is_err());
        let n = |t: &str| Number {
            text: t.into(),
            integral: !t.contains(['.', 'e', 'E']),
        };
        assert_eq!(n("007").java_long(), 7);
        assert_eq!(n("-1.9e1").java_long(), -19);
        assert_eq!(n("18446744073709551617").java_long(), 1);
        assert_eq!(n("1e64").java_long(), 0);
        assert_eq!(n("1.50").decimal_parts(), (false, b"150".to_vec(), 2));
        assert_eq!(n("-0.0").decimal_parts(), (true, b"0".to_vec(), 1));
        assert_eq!(n("12e3").decimal_parts(), (false, b"12".to_vec(), -3));
        assert_eq!(n("2147483648").as_i32(), None);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = "[".repeat(5000);
        assert!(parse(deep.as_bytes()).is_err());
        // Jackson accepts 1000 levels and refuses 1001.
        let ok = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
        assert!(parse(ok.as_bytes()).is_ok());
        let too_deep = format!("{}{}", "[".repeat(1001), "]".repeat(1001));
        assert!(parse(too_deep.as_bytes()).is_err());
    }
}
