//! KQL's scalar types and how each is held in DuckDB.

use std::fmt;

/// A KQL scalar type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Type {
    /// `bool`: DuckDB BOOLEAN.
    Bool,
    /// `int` (32-bit): DuckDB INTEGER.
    Int,
    /// `long` (64-bit): DuckDB BIGINT.
    Long,
    /// `real` (double): DuckDB DOUBLE.
    Real,
    /// `decimal`: DuckDB DECIMAL.
    Decimal,
    /// `string`: DuckDB VARCHAR, never NULL (KQL strings have no null;
    /// a NULL stored in DuckDB reads as the empty string).
    String,
    /// `datetime`: DuckDB TIMESTAMP, UTC, microsecond precision.
    DateTime,
    /// `timespan`: DuckDB BIGINT, microseconds.
    TimeSpan,
    /// `dynamic`: DuckDB JSON.
    Dynamic,
}

impl Type {
    /// The type for a KQL type name (`int`, `long`, `real`/`double`,
    /// `decimal`, `string`, `datetime`/`date`, `timespan`/`time`, `bool`/
    /// `boolean`, `dynamic`).
    pub fn from_name(name: &str) -> Option<Type> {
        Some(match name.to_ascii_lowercase().as_str() {
            "bool" | "boolean" => Type::Bool,
            "int" | "int32" => Type::Int,
            "long" | "int64" => Type::Long,
            "real" | "double" => Type::Real,
            "decimal" => Type::Decimal,
            "string" => Type::String,
            "datetime" | "date" => Type::DateTime,
            "timespan" | "time" => Type::TimeSpan,
            "dynamic" => Type::Dynamic,
            _ => return None,
        })
    }

    /// KQL's name of the type.
    pub fn name(self) -> &'static str {
        match self {
            Type::Bool => "bool",
            Type::Int => "int",
            Type::Long => "long",
            Type::Real => "real",
            Type::Decimal => "decimal",
            Type::String => "string",
            Type::DateTime => "datetime",
            Type::TimeSpan => "timespan",
            Type::Dynamic => "dynamic",
        }
    }

    /// The DuckDB type values of this type have in translated SQL.
    pub fn sql(self) -> &'static str {
        match self {
            Type::Bool => "BOOLEAN",
            Type::Int => "INTEGER",
            Type::Long => "BIGINT",
            Type::Real => "DOUBLE",
            Type::Decimal => "DECIMAL(38,10)",
            Type::String => "VARCHAR",
            Type::DateTime => "TIMESTAMP",
            Type::TimeSpan => "BIGINT",
            Type::Dynamic => "JSON",
        }
    }

    /// int, long, real or decimal.
    pub fn is_numeric(self) -> bool {
        matches!(self, Type::Int | Type::Long | Type::Real | Type::Decimal)
    }

    /// int or long.
    pub fn is_integer(self) -> bool {
        matches!(self, Type::Int | Type::Long)
    }

    /// Whether a chart can put values of this type on a numeric axis.
    pub fn is_plottable(self) -> bool {
        self.is_numeric() || matches!(self, Type::DateTime | Type::TimeSpan)
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The KQL type for a DuckDB column type, as Sluice reads tables without
/// an ADX definition; None for types it cannot read.
pub fn from_duckdb(duck: &str) -> Option<Type> {
    let t = duck.trim().to_ascii_uppercase();
    if t.ends_with("[]")
        || t.starts_with("STRUCT")
        || t.starts_with("MAP")
        || t.starts_with("UNION")
    {
        return Some(Type::Dynamic);
    }
    if t.starts_with("DECIMAL") || t.starts_with("NUMERIC") {
        return Some(Type::Decimal);
    }
    Some(match t.as_str() {
        "BOOLEAN" | "BOOL" => Type::Bool,
        "TINYINT" | "SMALLINT" | "INTEGER" | "INT" | "UTINYINT" | "USMALLINT" => Type::Int,
        "BIGINT" | "UINTEGER" => Type::Long,
        // Values past a long's range are out of KQL's reach: decimal keeps
        // them exact.
        "UBIGINT" | "HUGEINT" | "UHUGEINT" => Type::Decimal,
        "FLOAT" | "REAL" | "DOUBLE" => Type::Real,
        "VARCHAR" | "TEXT" | "STRING" | "UUID" | "BLOB" | "BIT" | "ENUM" => Type::String,
        "DATE"
        | "TIMESTAMP"
        | "TIMESTAMP WITH TIME ZONE"
        | "TIMESTAMPTZ"
        | "TIMESTAMP_S"
        | "TIMESTAMP_MS"
        | "TIMESTAMP_NS" => Type::DateTime,
        "TIME" | "INTERVAL" | "TIME WITH TIME ZONE" => Type::TimeSpan,
        "JSON" => Type::Dynamic,
        _ if t.starts_with("ENUM") => Type::String,
        _ => return None,
    })
}

/// SQL that converts column `col` (quoted) of DuckDB type `duck` to its
/// KQL type `ty`'s representation, as Azure Data Explorer would read the
/// same value at ingestion: text that does not parse becomes null.
pub fn convert(col: &str, duck: &str, ty: Type) -> String {
    let d = duck.trim().to_ascii_uppercase();
    let is_text = matches!(d.as_str(), "VARCHAR" | "TEXT" | "STRING" | "JSON");
    match ty {
        Type::String => {
            if d == "BLOB" {
                format!("coalesce(to_base64({col}), '')")
            } else if d.starts_with("TIMESTAMP") || d == "DATE" {
                format!(
                    "coalesce({}, '')",
                    crate::sqlgen::datetime_text(&convert(col, duck, Type::DateTime))
                )
            } else {
                format!("coalesce(CAST({col} AS VARCHAR), '')")
            }
        }
        Type::DateTime => {
            if d == "TIMESTAMP WITH TIME ZONE" || d == "TIMESTAMPTZ" {
                format!("CAST(timezone('UTC', {col}) AS TIMESTAMP)")
            } else if d.starts_with("TIMESTAMP") || d == "DATE" {
                format!("CAST({col} AS TIMESTAMP)")
            } else if is_text {
                crate::sqlgen::parse_datetime(col)
            } else {
                "CAST(NULL AS TIMESTAMP)".to_string()
            }
        }
        Type::TimeSpan => {
            if d == "INTERVAL" {
                format!("CAST(epoch({col}) * 1000000 AS BIGINT)")
            } else if d.starts_with("TIME") && !d.starts_with("TIMESTAMP") {
                format!("CAST(epoch(CAST({col} AS TIME)) * 1000000 AS BIGINT)")
            } else if is_text {
                crate::sqlgen::parse_timespan(col)
            } else if from_duckdb(&d).is_some_and(Type::is_integer) {
                // Numbers ingested into a timespan column are ticks (100 ns).
                format!("CAST({col} // 10 AS BIGINT)")
            } else {
                "CAST(NULL AS BIGINT)".to_string()
            }
        }
        Type::Dynamic => {
            if d == "JSON" {
                col.to_string()
            } else if is_text {
                format!(
                    "CASE WHEN json_valid({col}) THEN CAST({col} AS JSON) ELSE to_json({col}) END"
                )
            } else {
                format!("to_json({col})")
            }
        }
        Type::Bool => {
            if is_text {
                format!("CASE lower(trim({col})) WHEN 'true' THEN true WHEN 'false' THEN false WHEN '1' THEN true WHEN '0' THEN false ELSE NULL END")
            } else {
                format!("TRY_CAST({col} AS BOOLEAN)")
            }
        }
        Type::Int | Type::Long | Type::Real | Type::Decimal => {
            format!("TRY_CAST({col} AS {})", ty.sql())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duckdb_types_map_to_kql_types() {
        assert_eq!(from_duckdb("INTEGER"), Some(Type::Int));
        assert_eq!(from_duckdb("BIGINT"), Some(Type::Long));
        assert_eq!(from_duckdb("DECIMAL(10,2)"), Some(Type::Decimal));
        assert_eq!(from_duckdb("VARCHAR"), Some(Type::String));
        assert_eq!(
            from_duckdb("TIMESTAMP WITH TIME ZONE"),
            Some(Type::DateTime)
        );
        assert_eq!(from_duckdb("INTEGER[]"), Some(Type::Dynamic));
        assert_eq!(from_duckdb("INTERVAL"), Some(Type::TimeSpan));
        assert_eq!(Type::from_name("Double"), Some(Type::Real));
        assert_eq!(Type::from_name("guid"), None);
    }
}
