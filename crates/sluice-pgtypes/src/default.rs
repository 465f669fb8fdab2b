//! Column `DEFAULT`s as Debezium reads them into schema defaults
//! (`PostgresDefaultValueConverter`): a mapper per JDBC type name pulls the
//! literal out of the expression PostgreSQL prints (`pg_get_expr`), or a
//! placeholder when the default is a function call (`nextval(...)` gives 0,
//! `now()` the epoch, `gen_random_uuid()` the zero UUID), and the column's
//! own converter turns it into the field's value. Expressions it cannot read
//! (`(1 + 1)`) and types without a mapper (bytea, inet, money, arrays...)
//! give no default.

use sluice_core::schema::SchemaType;
use sluice_core::value::Value;

use crate::codec::ColumnCodec;

/// Why a default gives no schema default: Debezium logs these as warnings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultError(pub String);

impl std::fmt::Display for DefaultError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Defaults that are the current time (`CURRENT_DATE_TIMES`).
const CURRENT_DATE_TIMES: [&str; 5] = [
    "current_timestamp",
    "current_time",
    "current_date",
    "localtime",
    "localtimestamp",
];

/// Types whose expression is trimmed first (`TRIM_DATA_TYPES`).
const TRIMMED: [&str; 18] = [
    "bit",
    "varbit",
    "bool",
    "numeric",
    "float4",
    "float8",
    "int2",
    "int4",
    "serial",
    "int8",
    "bigserial",
    "smallserial",
    "uuid",
    "date",
    "time",
    "timestamp",
    "timestamptz",
    "interval",
];

/// The JDBC type name pgjdbc reports for a column (`TYPE_NAME` of
/// `DatabaseMetaData.getColumns`), which picks Debezium's mapper: the type's
/// name, except that an integer column defaulting to `nextval(...)` is a
/// `serial`, `bigserial` or `smallserial`.
pub fn jdbc_type_name(type_name: &str, default_expr: Option<&str>) -> String {
    if default_expr.is_some_and(|d| d.contains("nextval(")) {
        match type_name {
            "int4" => return "serial".into(),
            "int8" => return "bigserial".into(),
            "int2" => return "smallserial".into(),
            _ => {}
        }
    }
    type_name.to_string()
}

/// `FUNCTION_DEFAULT_PATTERN`, `^[(]?[A-Za-z0-9_.]+\((?:.+(?:, ?.+)*)?\)`:
/// a name, an opening parenthesis and, later on the same line, a closing
/// one.
fn is_function_call(expr: &str) -> bool {
    let b = expr.as_bytes();
    let try_from = |start: usize| -> bool {
        let mut i = start;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.') {
            i += 1;
        }
        if i == start || b.get(i) != Some(&b'(') {
            return false;
        }
        let rest = &expr[i + 1..];
        let line = rest
            .split(['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}'])
            .next();
        line.is_some_and(|l| l.contains(')'))
    };
    (b.first() == Some(&b'(') && try_from(1)) || try_from(0)
}

/// `extractDefault(String)`: a bare value as it is (`NULL::...` is none), a
/// quoted one from its first quoted literal, doubled quotes undone
/// (3.6.3's `'([^']*(?:''[^']*)*)'`: `'it''s'::text` gives `it's`).
fn extract(expr: &str) -> Result<Option<String>, DefaultError> {
    if !expr.contains('\'') {
        return Ok((!expr.starts_with("NULL::")).then(|| expr.to_string()));
    }
    let open = expr.find('\'').unwrap_or(0);
    let rest = &expr[open + 1..];
    let b = rest.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\'' {
            if b.get(i + 1) == Some(&b'\'') {
                i += 2;
                continue;
            }
            return Ok(Some(rest[..i].replace("''", "'")));
        }
        i += 1;
    }
    Err(DefaultError(format!("no closing quote in {expr:?}")))
}

/// `extractDefault(String, placeholder)`: the placeholder for function calls
/// and the current-time keywords.
fn extract_or(expr: &str, placeholder: &str) -> Result<Option<String>, DefaultError> {
    if is_function_call(expr) || CURRENT_DATE_TIMES.contains(&expr.to_ascii_lowercase().as_str()) {
        return Ok(Some(placeholder.to_string()));
    }
    extract(expr)
}

/// `extractEnumDefault`: `'ok'::mood` (or `'ok'::s.mood`) for enum `mood`.
fn extract_enum(type_name: &str, expr: &str) -> Option<String> {
    let cast = expr.rfind("::")?;
    let unquote = |s: &str| s.trim_matches('"').to_string();
    let suffix = &expr[cast + 2..];
    let suffix_name = unquote(suffix.rsplit('.').next().unwrap_or(suffix));
    let own_name = unquote(type_name.rsplit('.').next().unwrap_or(type_name));
    if suffix_name != own_name {
        return None;
    }
    let value = &expr[..cast];
    (value.len() >= 2 && value.starts_with('\'') && value.ends_with('\''))
        .then(|| value[1..value.len() - 1].to_string())
}

/// Java's `UUID.fromString`, canonical: five groups of hex digits.
fn java_uuid(s: &str) -> Result<String, DefaultError> {
    let parts: Vec<&str> = s.split('-').collect();
    let widths = [8, 4, 4, 4, 12];
    if parts.len() != 5
        || parts
            .iter()
            .zip(widths)
            .any(|(p, w)| p.is_empty() || p.len() > w || !p.bytes().all(|c| c.is_ascii_hexdigit()))
    {
        return Err(DefaultError(format!("{s:?} is not a UUID")));
    }
    Ok(parts
        .iter()
        .zip(widths)
        .map(|(p, w)| format!("{:0>w$}", p.to_ascii_lowercase(), w = w))
        .collect::<Vec<_>>()
        .join("-"))
}

/// A time of day as PostgreSQL prints one: the `00:00` placeholder gets its
/// seconds.
fn full_time(t: &str) -> String {
    if t.len() == 5 && t.as_bytes()[2] == b':' {
        format!("{t}:00")
    } else {
        t.to_string()
    }
}

/// A timestamp: a date alone (the `1970-01-01` placeholder) is midnight.
fn full_timestamp(t: &str, with_tz: bool) -> String {
    let mut out = if t.len() == 10 && !t.contains(' ') {
        format!("{t} 00:00:00")
    } else {
        t.to_string()
    };
    let has_offset = out
        .rsplit_once(' ')
        .is_some_and(|(_, time)| time.contains(['+', '-']));
    if with_tz && !has_offset && !matches!(out.as_str(), "infinity" | "-infinity") {
        out.push_str("+00");
    }
    out
}

impl ColumnCodec {
    /// The schema default Debezium derives from this column's `DEFAULT`
    /// expression (`expr`, as `pg_get_expr` prints it), for the column's JDBC
    /// type name (see [`jdbc_type_name`]). `Ok(None)`: no default (no mapper
    /// for the type, a `NULL` default, or a default that converts to a
    /// struct); `Err`: an expression Debezium cannot read either.
    pub fn default_from_expression(
        &self,
        jdbc_type: &str,
        expr: &str,
    ) -> Result<Option<Value>, DefaultError> {
        let expr = if TRIMMED.contains(&jdbc_type) {
            expr.trim()
        } else {
            expr
        };
        // parseNullDefault: the numeric mappers give no default for NULL::...
        let null_default = expr.starts_with("NULL::");
        let text: Option<String> = match jdbc_type {
            "bit" => {
                let Some(t) = extract_or(expr, "00")? else {
                    return Ok(None);
                };
                if t.len() == 1 {
                    return match self.schema().ty {
                        SchemaType::Boolean => Ok(Some(Value::Bool(t == "1"))),
                        _ => Err(DefaultError(format!("bit default {t:?} for a bit string"))),
                    };
                }
                Some(t)
            }
            "varbit" => extract_or(expr, "0")?,
            "bool" => {
                if null_default {
                    return Ok(None);
                }
                let Some(t) = extract_or(expr, "false")? else {
                    return Ok(None);
                };
                if self.schema().ty != SchemaType::Boolean {
                    return Err(DefaultError(format!(
                        "boolean default for a {:?} field",
                        self.schema().ty
                    )));
                }
                // Boolean.parseBoolean: anything but "true" is false.
                return Ok(Some(Value::Bool(t.eq_ignore_ascii_case("true"))));
            }
            "bpchar" | "varchar" | "text" | "xml" => extract_or(expr, "")?,
            "json" | "jsonb" => extract_or(expr, "{}")?,
            "numeric" | "float4" | "float8" => {
                if null_default {
                    return Ok(None);
                }
                extract_or(expr, "0.0")?
            }
            "int2" | "int4" | "int8" | "serial" | "bigserial" | "smallserial" => {
                if null_default {
                    return Ok(None);
                }
                extract_or(expr, "0")?
            }
            "uuid" => match extract_or(expr, "00000000-0000-0000-0000-000000000000")? {
                Some(t) => Some(java_uuid(&t)?),
                None => None,
            },
            "date" => extract_or(expr, "1970-01-01")?,
            "time" => extract_or(expr, "00:00")?.map(|t| full_time(&t)),
            "timestamp" => extract_or(expr, "1970-01-01")?.map(|t| full_timestamp(&t, false)),
            "timestamptz" => extract_or(expr, "1970-01-01")?.map(|t| full_timestamp(&t, true)),
            "interval" => match extract_or(expr, "epoch")? {
                Some(t) if t == "epoch" => {
                    return Err(DefaultError(
                        "an interval default that is a function call".into(),
                    ))
                }
                t => t,
            },
            _ if self.is_enum() => extract_enum(jdbc_type, expr),
            // No mapper: Debezium leaves the field without a default.
            _ => return Ok(None),
        };
        let Some(text) = text else {
            return Ok(None);
        };
        if matches!(jdbc_type, "numeric") && !is_big_decimal(&text) {
            return Err(DefaultError(format!("{text:?} is not a number")));
        }
        let value = self
            .decode_text(text.as_bytes())
            .map_err(|e| DefaultError(e.to_string()))?;
        // Struct defaults (VariableScaleDecimal, Point) are dropped by
        // Debezium (KAFKA-12694).
        Ok(match value {
            Value::Struct(_) | Value::Null => None,
            v => Some(v),
        })
    }
}

/// `new BigDecimal(text)`: an optionally signed decimal with an optional
/// exponent.
fn is_big_decimal(t: &str) -> bool {
    let t = t.strip_prefix(['+', '-']).unwrap_or(t);
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let digits = mantissa.bytes().filter(u8::is_ascii_digit).count();
    let ok_mantissa = digits > 0
        && mantissa.bytes().all(|c| c.is_ascii_digit() || c == b'.')
        && mantissa.bytes().filter(|&c| c == b'.').count() <= 1;
    let ok_exp = exp.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && e.bytes().all(|c| c.is_ascii_digit())
    });
    ok_mantissa && ok_exp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_calls_and_literals() {
        assert!(is_function_call("nextval('s'::regclass)"));
        assert!(is_function_call("now()"));
        assert!(is_function_call("(public.f(1, 2))"));
        assert!(!is_function_call("(1 + 1)"));
        assert!(!is_function_call("'a'::text"));
        assert_eq!(
            extract("'v''q'::character varying").unwrap(),
            Some("v'q".into())
        );
        assert_eq!(extract("7").unwrap(), Some("7".into()));
        assert_eq!(extract("NULL::text").unwrap(), None);
        assert_eq!(extract_or("CURRENT_DATE", "x").unwrap(), Some("x".into()));
        assert_eq!(extract_enum("mood", "'ok'::mood"), Some("ok".into()));
        assert_eq!(extract_enum("mood", "'ok'::other"), None);
        assert_eq!(
            jdbc_type_name("int4", Some("nextval('s'::regclass)")),
            "serial"
        );
        assert_eq!(
            java_uuid("A-b-c-d-e").unwrap(),
            "0000000a-000b-000c-000d-00000000000e"
        );
        assert!(is_big_decimal("-1.5e3") && !is_big_decimal("(1 + 1)"));
        assert_eq!(full_timestamp("1970-01-01", true), "1970-01-01 00:00:00+00");
        assert_eq!(
            full_timestamp("2020-01-01 10:00:00-02", true),
            "2020-01-01 10:00:00-02"
        );
    }
}
