//! Column type changes: what a column becomes when the source changes the
//! type of its values.
//!
//! - The new type holds every old value (a widening: `INTEGER` → `BIGINT`,
//!   `DECIMAL(10,2)` → `DECIMAL(12,2)`, `FLOAT` → `DOUBLE`, `TIMESTAMP` →
//!   `TIMESTAMPTZ`, anything → `VARCHAR`, ...): the column is altered to
//!   the new type.
//! - The old type holds every new value (a narrowing at the source, such as
//!   `bigint` → `int`): the column stays as it is and new values are cast
//!   into it.
//! - Neither (an incompatible change, such as `date` → `int`): the column
//!   becomes `VARCHAR` (old values as DuckDB's text of them, new values as
//!   text too), so no value is lost (`duckdb.type.incompatible=varchar`,
//!   the default); with `duckdb.type.incompatible=fail` the task stops
//!   with an error naming the table, the column and both types.
//!
//! Types are compared in DuckDB's own spelling (`duckdb_columns()`'s
//! `data_type`), see [`canonical`].

/// DuckDB's spelling of a type as `duckdb_columns()` reports it.
pub fn canonical(ty: &str) -> String {
    let t = ty.trim().to_ascii_uppercase();
    if let Some(inner) = t.strip_suffix("[]") {
        return format!("{}[]", canonical(inner));
    }
    match t.as_str() {
        "REAL" | "FLOAT4" => "FLOAT".into(),
        "FLOAT8" => "DOUBLE".into(),
        "TIMESTAMPTZ" => "TIMESTAMP WITH TIME ZONE".into(),
        "INT" | "INT4" => "INTEGER".into(),
        "INT8" | "LONG" => "BIGINT".into(),
        "INT2" | "SHORT" => "SMALLINT".into(),
        "INT1" => "TINYINT".into(),
        "BOOL" => "BOOLEAN".into(),
        "TEXT" | "STRING" => "VARCHAR".into(),
        "BYTEA" => "BLOB".into(),
        _ => t,
    }
}

/// Digits an integer type holds.
fn int_digits(ty: &str) -> Option<u32> {
    Some(match ty {
        "TINYINT" => 3,
        "SMALLINT" => 5,
        "INTEGER" => 10,
        "BIGINT" => 19,
        "HUGEINT" => 39,
        _ => return None,
    })
}

fn decimal(ty: &str) -> Option<(u32, u32)> {
    let inner = ty.strip_prefix("DECIMAL(")?.strip_suffix(')')?;
    let (p, s) = inner.split_once(',')?;
    Some((p.trim().parse().ok()?, s.trim().parse().ok()?))
}

/// Whether every value of type `from` is exactly a value of type `to`
/// (both canonical).
pub fn widens(from: &str, to: &str) -> bool {
    if from == to || to == "VARCHAR" {
        return true;
    }
    if let (Some(f), Some(t)) = (from.strip_suffix("[]"), to.strip_suffix("[]")) {
        return widens(f, t);
    }
    match (int_digits(from), int_digits(to)) {
        (Some(a), Some(b)) => return a <= b,
        (Some(a), None) => {
            if let Some((p, s)) = decimal(to) {
                return p - s >= a;
            }
            // Doubles hold integers of up to 53 bits exactly.
            return (to == "DOUBLE" && a <= 10) || (to == "FLOAT" && a <= 5);
        }
        _ => {}
    }
    if let (Some((p1, s1)), Some((p2, s2))) = (decimal(from), decimal(to)) {
        return s2 >= s1 && p2 - s2 >= p1 - s1;
    }
    matches!(
        (from, to),
        ("FLOAT", "DOUBLE")
            | ("TIMESTAMP", "TIMESTAMP WITH TIME ZONE")
            | ("DATE", "TIMESTAMP")
            | ("DATE", "TIMESTAMP WITH TIME ZONE")
            | ("JSON", "VARCHAR")
    )
}

/// What to do with a column of type `existing` that now gets values of
/// type `incoming` (both canonical).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Nothing: the column holds the new values as they are.
    Keep,
    /// `ALTER TABLE ... ALTER COLUMN ... TYPE` to this type.
    Alter(String),
    /// Neither type holds the other's values: only `VARCHAR` holds both.
    Incompatible,
}

/// The change for a column of type `existing` receiving `incoming`.
pub fn change(existing: &str, incoming: &str) -> Change {
    if widens(incoming, existing) {
        Change::Keep
    } else if widens(existing, incoming) {
        Change::Alter(incoming.to_owned())
    } else {
        Change::Incompatible
    }
}

/// The type that holds values of both `a` and `b` (canonical), for one
/// flush whose records disagree on a column's type; None when only
/// `VARCHAR` would (an incompatible change).
pub fn union(a: &str, b: &str) -> Option<String> {
    if widens(b, a) {
        Some(a.to_owned())
    } else if widens(a, b) {
        Some(b.to_owned())
    } else {
        None
    }
}

/// The expression converting column `col` (an identifier) of type `from`
/// to type `to` in an `ALTER ... TYPE ... USING`: timestamps without a zone
/// are UTC (as Debezium sends them).
pub fn using(col: &str, from: &str, to: &str) -> String {
    match (from, to) {
        ("TIMESTAMP", "TIMESTAMP WITH TIME ZONE") | ("DATE", "TIMESTAMP WITH TIME ZONE") => {
            format!("timezone('UTC', CAST({col} AS TIMESTAMP))")
        }
        _ => format!("CAST({col} AS {to})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widenings_alter_narrowings_keep_and_the_rest_are_incompatible() {
        let c = |a: &str, b: &str| change(&canonical(a), &canonical(b));
        assert_eq!(c("INTEGER", "BIGINT"), Change::Alter("BIGINT".into()));
        assert_eq!(c("BIGINT", "INTEGER"), Change::Keep);
        assert_eq!(
            c("DECIMAL(10,2)", "DECIMAL(12,2)"),
            Change::Alter("DECIMAL(12,2)".into())
        );
        assert_eq!(
            c("DECIMAL(10,2)", "DECIMAL(12,4)"),
            Change::Alter("DECIMAL(12,4)".into())
        );
        // Fewer integer digits: no decimal holds both without rounding.
        assert_eq!(c("DECIMAL(10,2)", "DECIMAL(10,4)"), Change::Incompatible);
        assert_eq!(c("REAL", "DOUBLE"), Change::Alter("DOUBLE".into()));
        assert_eq!(
            c("TIMESTAMP", "TIMESTAMPTZ"),
            Change::Alter("TIMESTAMP WITH TIME ZONE".into())
        );
        assert_eq!(c("VARCHAR", "VARCHAR"), Change::Keep);
        assert_eq!(
            c("DECIMAL(10,2)", "VARCHAR"),
            Change::Alter("VARCHAR".into())
        );
        assert_eq!(c("VARCHAR", "INTEGER"), Change::Keep);
        assert_eq!(c("DATE", "INTEGER"), Change::Incompatible);
        assert_eq!(c("BIGINT", "DOUBLE"), Change::Incompatible);
        assert_eq!(c("INTEGER", "DOUBLE"), Change::Alter("DOUBLE".into()));
        assert_eq!(c("INTEGER[]", "BIGINT[]"), Change::Alter("BIGINT[]".into()));
        assert_eq!(
            c("INTEGER", "DECIMAL(12,2)"),
            Change::Alter("DECIMAL(12,2)".into())
        );
        assert_eq!(union("INTEGER", "BIGINT").as_deref(), Some("BIGINT"));
        assert_eq!(union("DATE", "INTEGER"), None);
    }
}
