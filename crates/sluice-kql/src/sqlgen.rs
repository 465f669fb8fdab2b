//! Pieces of DuckDB SQL shared by the translator and the catalog: quoting,
//! literals, and KQL's text forms of datetimes and timespans.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

/// Microseconds per day.
pub const DAY_US: i64 = 86_400_000_000;

/// `"name"`, with quotes doubled.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'`, with quotes doubled.
pub fn string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A real as a DuckDB DOUBLE literal.
pub fn real(v: f64) -> String {
    if v.is_nan() {
        "CAST('NaN' AS DOUBLE)".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "CAST('Infinity' AS DOUBLE)".into()
        } else {
            "CAST('-Infinity' AS DOUBLE)".into()
        }
    } else {
        format!("CAST({v:?} AS DOUBLE)")
    }
}

/// A datetime (microseconds since the epoch) as a TIMESTAMP literal.
pub fn timestamp(us: i64) -> String {
    format!("make_timestamp(CAST({us} AS BIGINT))")
}

/// The non-negative remainder KQL's `%` gives: `0 <= a % b < abs(b)`.
pub fn modulo(a: &str, b: &str) -> String {
    format!("((({a}) % ({b})) + abs({b})) % abs({b})")
}

/// KQL's text of a datetime: `2020-10-09T07:23:10Z`, with the fraction
/// of a second when there is one (`...10.5Z`).
pub fn datetime_text(x: &str) -> String {
    let frac = modulo(&format!("epoch_us({x})"), "1000000");
    format!(
        "CASE WHEN ({x}) IS NULL THEN NULL ELSE strftime({x}, '%Y-%m-%dT%H:%M:%S') || \
         CASE WHEN {frac} = 0 THEN '' ELSE '.' || rtrim(lpad(CAST({frac} AS VARCHAR), 6, '0'), '0') END || 'Z' END"
    )
}

/// KQL's text of a timespan held in microseconds: `[-][d.]hh:mm:ss[.fffffff]`.
pub fn timespan_text(v: &str) -> String {
    let a = format!("abs({v})");
    format!(
        "CASE WHEN ({v}) IS NULL THEN NULL ELSE \
         (CASE WHEN ({v}) < 0 THEN '-' ELSE '' END) || \
         (CASE WHEN {a} >= {DAY_US} THEN CAST({a} // {DAY_US} AS VARCHAR) || '.' ELSE '' END) || \
         lpad(CAST(({a} // 3600000000) % 24 AS VARCHAR), 2, '0') || ':' || \
         lpad(CAST(({a} // 60000000) % 60 AS VARCHAR), 2, '0') || ':' || \
         lpad(CAST(({a} // 1000000) % 60 AS VARCHAR), 2, '0') || \
         (CASE WHEN {a} % 1000000 = 0 THEN '' ELSE '.' || lpad(CAST(({a} % 1000000) * 10 AS VARCHAR), 7, '0') END) END"
    )
}

/// Text to a UTC datetime: ISO 8601 / `YYYY-MM-DD HH:MM:SS` forms; an
/// explicit offset (`Z`, `+02:00`) is honoured whatever the session's time
/// zone; anything else is null, as ADX reads unparsable datetimes.
pub fn parse_datetime(x: &str) -> String {
    format!(
        "CASE WHEN regexp_matches({x}, '\\d:\\d\\d(:\\d\\d(\\.\\d+)?)?\\s*(Z|z|[+-]\\d\\d(:?\\d\\d)?)\\s*$') \
         THEN make_timestamp(epoch_us(TRY_CAST({x} AS TIMESTAMPTZ))) \
         ELSE TRY_CAST({x} AS TIMESTAMP) END"
    )
}

const TIMESPAN_RE: &str =
    "^\\s*(-?)(?:(\\d+)\\.)?(\\d{1,2}):(\\d{2})(?::(\\d{2})(?:\\.(\\d{1,7}))?)?\\s*$";

/// Text in KQL's timespan form (`[-][d.]hh:mm[:ss[.fffffff]]`) to
/// microseconds; anything else is null.
pub fn parse_timespan(x: &str) -> String {
    let re = string(TIMESPAN_RE);
    let g = |i: usize| format!("regexp_extract({x}, {re}, {i})");
    let opt = |i: usize| format!("coalesce(TRY_CAST(nullif({}, '') AS BIGINT), 0)", g(i));
    format!(
        "CASE WHEN regexp_matches({x}, {re}) THEN \
         (CASE WHEN {sign} = '-' THEN -1 ELSE 1 END) * ({d} * {DAY_US} + CAST({h} AS BIGINT) * 3600000000 + \
         CAST({m} AS BIGINT) * 60000000 + {s} * 1000000 + \
         coalesce(TRY_CAST(substr(rpad(nullif({f}, ''), 7, '0'), 1, 6) AS BIGINT), 0)) END",
        sign = g(1),
        d = opt(2),
        h = g(3),
        m = g(4),
        s = opt(5),
        f = g(6),
    )
}

/// Parses the text of a `datetime(...)` literal: ISO 8601 dates and times
/// with an optional fraction and offset, or `null`. Microseconds since the
/// epoch; None for null.
pub fn datetime_literal(raw: &str) -> Result<Option<i64>, String> {
    let t = raw.trim().trim_matches(|c| c == '"' || c == '\'').trim();
    if t.eq_ignore_ascii_case("null") {
        return Ok(None);
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Ok(Some(d.with_timezone(&Utc).timestamp_micros()));
    }
    let naive_forms = [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%dT%H:%M:%S%.fZ",
        "%Y-%m-%d %H:%M:%S%.fZ",
        "%Y-%m-%dT%H:%MZ",
    ];
    for f in naive_forms {
        if let Ok(d) = NaiveDateTime::parse_from_str(t, f) {
            return Ok(Some(d.and_utc().timestamp_micros()));
        }
    }
    for f in ["%Y-%m-%d", "%Y/%m/%d", "%Y%m%d"] {
        if let Ok(d) = NaiveDate::parse_from_str(t, f) {
            if let Some(dt) = d.and_hms_opt(0, 0, 0) {
                return Ok(Some(dt.and_utc().timestamp_micros()));
            }
        }
    }
    Err(format!(
        "'{t}' is not a datetime Sluice reads (use ISO 8601, e.g. 2020-10-09 07:23:10 or 2020-10-09T07:23:10Z)"
    ))
}

/// Parses the text of a `timespan(...)` literal: `1d`, `10m`, `1.02:03:04`,
/// `02:03:04.5`, a number of days, or `null`. Microseconds; None for null.
pub fn timespan_literal(raw: &str) -> Result<Option<i64>, String> {
    let t = raw.trim();
    if t.eq_ignore_ascii_case("null") {
        return Ok(None);
    }
    let bad = || format!("'{t}' is not a timespan (e.g. 1d, 10m, 30s, 1.02:03:04)");
    if t.contains(':') {
        let (neg, body) = match t.strip_prefix('-') {
            Some(b) => (true, b),
            None => (false, t),
        };
        let (days, clock) = match body.split_once(':') {
            Some((head, _)) if head.contains('.') => {
                let (d, rest) = body.split_once('.').ok_or_else(bad)?;
                (d.parse::<i64>().map_err(|_| bad())?, rest)
            }
            _ => (0, body),
        };
        let parts: Vec<&str> = clock.split(':').collect();
        if parts.len() < 2 || parts.len() > 3 {
            return Err(bad());
        }
        let h: i64 = parts[0].parse().map_err(|_| bad())?;
        let m: i64 = parts[1].parse().map_err(|_| bad())?;
        let (s, frac) = match parts.get(2) {
            Some(sec) => match sec.split_once('.') {
                Some((s, f)) => {
                    let digits: String = f.chars().chain("000000".chars()).take(6).collect();
                    (
                        s.parse::<i64>().map_err(|_| bad())?,
                        digits.parse::<i64>().map_err(|_| bad())?,
                    )
                }
                None => (sec.parse::<i64>().map_err(|_| bad())?, 0),
            },
            None => (0, 0),
        };
        let us = days * DAY_US + h * 3_600_000_000 + m * 60_000_000 + s * 1_000_000 + frac;
        return Ok(Some(if neg { -us } else { us }));
    }
    if let Ok(days) = t.parse::<f64>() {
        return Ok(Some((days * DAY_US as f64).round() as i64));
    }
    match crate::lexer::lex(t) {
        Ok(toks) if toks.len() == 1 => match toks[0].tok {
            crate::lexer::Tok::Timespan(v) => Ok(Some(v)),
            _ => Err(bad()),
        },
        Ok(toks) if toks.len() == 2 => match (&toks[0].tok, &toks[1].tok) {
            (crate::lexer::Tok::Punct("-"), crate::lexer::Tok::Timespan(v)) => Ok(Some(-v)),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_parse() {
        assert_eq!(
            datetime_literal("2020-10-09 07:23:10"),
            Ok(Some(1_602_228_190_000_000))
        );
        assert_eq!(
            datetime_literal("2020-10-09T09:23:10+02:00"),
            Ok(Some(1_602_228_190_000_000))
        );
        assert_eq!(
            datetime_literal("2020-10-09"),
            Ok(Some(1_602_201_600_000_000))
        );
        assert_eq!(datetime_literal("null"), Ok(None));
        assert!(datetime_literal("yesterday").is_err());
        assert_eq!(
            timespan_literal("1.02:03:04.5"),
            Ok(Some(DAY_US + 7_384_500_000))
        );
        assert_eq!(timespan_literal("10m"), Ok(Some(600_000_000)));
        assert_eq!(timespan_literal("-00:00:01"), Ok(Some(-1_000_000)));
        assert_eq!(timespan_literal("2"), Ok(Some(2 * DAY_US)));
    }
}
