//! What Sluice knows about PostgreSQL types: the built-ins by OID, plus what
//! it loads from the catalog (enums, domains, arrays of those, extension
//! types such as citext, hstore and ltree).

use std::collections::HashMap;

use anyhow::Context;

/// OIDs of the built-in types (fixed in `pg_type.dat`).
pub mod oid {
    #![allow(missing_docs)]
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const CHAR: u32 = 18;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const OID: u32 = 26;
    pub const JSON: u32 = 114;
    pub const XML: u32 = 142;
    pub const POINT: u32 = 600;
    pub const CIDR: u32 = 650;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const MACADDR8: u32 = 774;
    pub const MONEY: u32 = 790;
    pub const MACADDR: u32 = 829;
    pub const INET: u32 = 869;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const INTERVAL: u32 = 1186;
    pub const TIMETZ: u32 = 1266;
    pub const BIT: u32 = 1560;
    pub const VARBIT: u32 = 1562;
    pub const NUMERIC: u32 = 1700;
    pub const UUID: u32 = 2950;
    pub const JSONB: u32 = 3802;
    pub const INT4RANGE: u32 = 3904;
    pub const NUMRANGE: u32 = 3906;
    pub const TSRANGE: u32 = 3908;
    pub const TSTZRANGE: u32 = 3910;
    pub const DATERANGE: u32 = 3912;
    pub const INT8RANGE: u32 = 3926;
    pub const TSVECTOR: u32 = 3614;

    pub const BOOL_ARRAY: u32 = 1000;
    pub const BYTEA_ARRAY: u32 = 1001;
    pub const CHAR_ARRAY: u32 = 1002;
    pub const NAME_ARRAY: u32 = 1003;
    pub const INT2_ARRAY: u32 = 1005;
    pub const INT4_ARRAY: u32 = 1007;
    pub const TEXT_ARRAY: u32 = 1009;
    pub const BPCHAR_ARRAY: u32 = 1014;
    pub const VARCHAR_ARRAY: u32 = 1015;
    pub const INT8_ARRAY: u32 = 1016;
    pub const POINT_ARRAY: u32 = 1017;
    pub const FLOAT4_ARRAY: u32 = 1021;
    pub const FLOAT8_ARRAY: u32 = 1022;
    pub const OID_ARRAY: u32 = 1028;
    pub const MACADDR_ARRAY: u32 = 1040;
    pub const INET_ARRAY: u32 = 1041;
    pub const CIDR_ARRAY: u32 = 651;
    pub const MACADDR8_ARRAY: u32 = 775;
    pub const MONEY_ARRAY: u32 = 791;
    pub const XML_ARRAY: u32 = 143;
    pub const JSON_ARRAY: u32 = 199;
    pub const DATE_ARRAY: u32 = 1182;
    pub const TIME_ARRAY: u32 = 1183;
    pub const TIMESTAMP_ARRAY: u32 = 1115;
    pub const TIMESTAMPTZ_ARRAY: u32 = 1185;
    pub const INTERVAL_ARRAY: u32 = 1187;
    pub const NUMERIC_ARRAY: u32 = 1231;
    pub const TIMETZ_ARRAY: u32 = 1270;
    pub const BIT_ARRAY: u32 = 1561;
    pub const VARBIT_ARRAY: u32 = 1563;
    pub const REFCURSOR_ARRAY: u32 = 2201;
    pub const UUID_ARRAY: u32 = 2951;
    pub const JSONB_ARRAY: u32 = 3807;
    pub const INT4RANGE_ARRAY: u32 = 3905;
    pub const NUMRANGE_ARRAY: u32 = 3907;
    pub const TSRANGE_ARRAY: u32 = 3909;
    pub const TSTZRANGE_ARRAY: u32 = 3911;
    pub const DATERANGE_ARRAY: u32 = 3913;
    pub const INT8RANGE_ARRAY: u32 = 3927;
}

/// The kind of a type, as `pg_type.typtype` / `typcategory` describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeKind {
    /// A base (scalar) type.
    Base,
    /// An enum, with its labels in the order Debezium lists them.
    Enum {
        /// The labels in catalog (physical) order, i.e. creation order:
        /// Debezium aggregates `pg_enum` without an ORDER BY, so a label
        /// added with `ADD VALUE ... BEFORE` comes last, not in
        /// `enumsortorder` position.
        labels: Vec<String>,
    },
    /// A domain over `base_oid`, with the domain's own type modifier.
    Domain {
        /// `typbasetype`.
        base_oid: u32,
        /// `typtypmod` (-1 when the domain sets none).
        base_typmod: i32,
    },
    /// An array of `elem_oid` (`typcategory = 'A'`).
    Array {
        /// `typelem`.
        elem_oid: u32,
        /// `typdelim`: the element separator in text form (`;` for box).
        delim: u8,
    },
    /// A composite (row) type.
    Composite,
    /// A range type.
    Range,
    /// Anything else (pseudo types, multiranges...).
    Other,
}

/// One PostgreSQL type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeInfo {
    /// `pg_type.oid`.
    pub oid: u32,
    /// `pg_type.typname` (`int4`, `_text`, `citext`...).
    pub name: String,
    /// The schema of the type (`pg_catalog` for built-ins).
    pub namespace: String,
    /// What kind of type it is.
    pub kind: TypeKind,
}

/// The types Sluice can map, by OID.
#[derive(Debug, Clone)]
pub struct TypeRegistry {
    types: HashMap<u32, TypeInfo>,
}

impl Default for TypeRegistry {
    fn default() -> Self {
        TypeRegistry::new()
    }
}

/// Built-in scalar types that Sluice names without a catalog lookup.
const BUILTIN_SCALARS: &[(u32, &str, char)] = &[
    (oid::BOOL, "bool", 'b'),
    (oid::BYTEA, "bytea", 'b'),
    (oid::CHAR, "char", 'b'),
    (oid::NAME, "name", 'b'),
    (oid::INT8, "int8", 'b'),
    (oid::INT2, "int2", 'b'),
    (oid::INT4, "int4", 'b'),
    (oid::TEXT, "text", 'b'),
    (oid::OID, "oid", 'b'),
    (oid::JSON, "json", 'b'),
    (oid::XML, "xml", 'b'),
    (oid::POINT, "point", 'b'),
    (601, "lseg", 'b'),
    (602, "path", 'b'),
    (603, "box", 'b'),
    (604, "polygon", 'b'),
    (628, "line", 'b'),
    (oid::CIDR, "cidr", 'b'),
    (oid::FLOAT4, "float4", 'b'),
    (oid::FLOAT8, "float8", 'b'),
    (718, "circle", 'b'),
    (oid::MACADDR8, "macaddr8", 'b'),
    (oid::MONEY, "money", 'b'),
    (oid::MACADDR, "macaddr", 'b'),
    (oid::INET, "inet", 'b'),
    (oid::BPCHAR, "bpchar", 'b'),
    (oid::VARCHAR, "varchar", 'b'),
    (oid::DATE, "date", 'b'),
    (oid::TIME, "time", 'b'),
    (oid::TIMESTAMP, "timestamp", 'b'),
    (oid::TIMESTAMPTZ, "timestamptz", 'b'),
    (oid::INTERVAL, "interval", 'b'),
    (oid::TIMETZ, "timetz", 'b'),
    (oid::BIT, "bit", 'b'),
    (oid::VARBIT, "varbit", 'b'),
    (oid::NUMERIC, "numeric", 'b'),
    (1790, "refcursor", 'b'),
    (oid::UUID, "uuid", 'b'),
    (2970, "txid_snapshot", 'b'),
    (3220, "pg_lsn", 'b'),
    (oid::TSVECTOR, "tsvector", 'b'),
    (3615, "tsquery", 'b'),
    (oid::JSONB, "jsonb", 'b'),
    (4072, "jsonpath", 'b'),
    (oid::INT4RANGE, "int4range", 'r'),
    (oid::NUMRANGE, "numrange", 'r'),
    (oid::TSRANGE, "tsrange", 'r'),
    (oid::TSTZRANGE, "tstzrange", 'r'),
    (oid::DATERANGE, "daterange", 'r'),
    (oid::INT8RANGE, "int8range", 'r'),
];

/// Built-in array types: (array OID, element OID).
const BUILTIN_ARRAYS: &[(u32, u32)] = &[
    (oid::BOOL_ARRAY, oid::BOOL),
    (oid::BYTEA_ARRAY, oid::BYTEA),
    (oid::CHAR_ARRAY, oid::CHAR),
    (oid::NAME_ARRAY, oid::NAME),
    (oid::INT2_ARRAY, oid::INT2),
    (oid::INT4_ARRAY, oid::INT4),
    (oid::TEXT_ARRAY, oid::TEXT),
    (oid::BPCHAR_ARRAY, oid::BPCHAR),
    (oid::VARCHAR_ARRAY, oid::VARCHAR),
    (oid::INT8_ARRAY, oid::INT8),
    (oid::POINT_ARRAY, oid::POINT),
    (1018, 601),
    (1019, 602),
    (1020, 603),
    (1027, 604),
    (629, 628),
    (719, 718),
    (oid::FLOAT4_ARRAY, oid::FLOAT4),
    (oid::FLOAT8_ARRAY, oid::FLOAT8),
    (oid::OID_ARRAY, oid::OID),
    (oid::MACADDR_ARRAY, oid::MACADDR),
    (oid::INET_ARRAY, oid::INET),
    (oid::CIDR_ARRAY, oid::CIDR),
    (oid::MACADDR8_ARRAY, oid::MACADDR8),
    (oid::MONEY_ARRAY, oid::MONEY),
    (oid::XML_ARRAY, oid::XML),
    (oid::JSON_ARRAY, oid::JSON),
    (oid::DATE_ARRAY, oid::DATE),
    (oid::TIME_ARRAY, oid::TIME),
    (oid::TIMESTAMP_ARRAY, oid::TIMESTAMP),
    (oid::TIMESTAMPTZ_ARRAY, oid::TIMESTAMPTZ),
    (oid::INTERVAL_ARRAY, oid::INTERVAL),
    (oid::NUMERIC_ARRAY, oid::NUMERIC),
    (oid::TIMETZ_ARRAY, oid::TIMETZ),
    (oid::BIT_ARRAY, oid::BIT),
    (oid::VARBIT_ARRAY, oid::VARBIT),
    (oid::REFCURSOR_ARRAY, 1790),
    (oid::UUID_ARRAY, oid::UUID),
    (2949, 2970),
    (3221, 3220),
    (3643, 3614),
    (3645, 3615),
    (oid::JSONB_ARRAY, oid::JSONB),
    (4073, 4072),
    (oid::INT4RANGE_ARRAY, oid::INT4RANGE),
    (oid::NUMRANGE_ARRAY, oid::NUMRANGE),
    (oid::TSRANGE_ARRAY, oid::TSRANGE),
    (oid::TSTZRANGE_ARRAY, oid::TSTZRANGE),
    (oid::DATERANGE_ARRAY, oid::DATERANGE),
    (oid::INT8RANGE_ARRAY, oid::INT8RANGE),
];

/// Reads every row of `pg_type` (and its enum labels) for the given OIDs.
/// Enum labels come in heap order, which is the order Debezium's own
/// unordered `array_agg` over a scan of `pg_enum` yields.
const LOAD_SQL: &str = "SELECT t.oid, t.typname::text, n.nspname::text, t.typtype::text, \
     t.typcategory::text, t.typelem, t.typdelim::text, t.typbasetype, t.typtypmod, \
     (SELECT array_agg(e.enumlabel::text ORDER BY e.ctid) \
        FROM pg_catalog.pg_enum e WHERE e.enumtypid = t.oid) \
     FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace \
     WHERE t.oid = ANY($1::oid[])";

impl TypeRegistry {
    /// A registry of the built-in types only.
    pub fn new() -> Self {
        let mut types = HashMap::with_capacity(BUILTIN_SCALARS.len() + BUILTIN_ARRAYS.len());
        for &(oid, name, typtype) in BUILTIN_SCALARS {
            let kind = if typtype == 'r' {
                TypeKind::Range
            } else {
                TypeKind::Base
            };
            types.insert(oid, builtin(oid, name.to_string(), kind));
        }
        for &(array_oid, elem_oid) in BUILTIN_ARRAYS {
            let elem_name = BUILTIN_SCALARS
                .iter()
                .find(|(o, _, _)| *o == elem_oid)
                .map(|(_, n, _)| *n)
                .unwrap_or("unknown");
            // box is the one built-in whose text form separates elements with ';'.
            let delim = if elem_oid == 603 { b';' } else { b',' };
            types.insert(
                array_oid,
                builtin(
                    array_oid,
                    format!("_{elem_name}"),
                    TypeKind::Array { elem_oid, delim },
                ),
            );
        }
        TypeRegistry { types }
    }

    /// The type with this OID, if known.
    pub fn get(&self, oid: u32) -> Option<&TypeInfo> {
        self.types.get(&oid)
    }

    /// Adds or replaces a type (for callers that read the catalog themselves).
    pub fn insert(&mut self, info: TypeInfo) {
        self.types.insert(info.oid, info);
    }

    /// The OIDs among `oids` that this registry does not know, deduplicated,
    /// in first-seen order.
    pub fn missing(&self, oids: impl IntoIterator<Item = u32>) -> Vec<u32> {
        let mut out = Vec::new();
        for o in oids {
            if !self.types.contains_key(&o) && !out.contains(&o) {
                out.push(o);
            }
        }
        out
    }

    /// Loads the given OIDs (and what they reference: array elements, domain
    /// bases, enum labels) from `pg_type`/`pg_enum` over a normal connection.
    /// OIDs the catalog does not have are left out (their columns then map to
    /// string, as unknown types do).
    pub async fn load(
        &mut self,
        client: &tokio_postgres::Client,
        oids: &[u32],
    ) -> anyhow::Result<()> {
        let mut todo = self.missing(oids.iter().copied());
        // Each round loads the referenced types of the previous one; domains
        // over domains over arrays... end after a few rounds, the bound only
        // guards against a catalog that references itself.
        for _ in 0..16 {
            if todo.is_empty() {
                break;
            }
            let rows = client
                .query(LOAD_SQL, &[&todo])
                .await
                .context("reading pg_type")?;
            let asked = std::mem::take(&mut todo);
            for row in rows {
                let info = type_from_row(&row)?;
                match &info.kind {
                    TypeKind::Array { elem_oid, .. } => todo.push(*elem_oid),
                    TypeKind::Domain { base_oid, .. } => todo.push(*base_oid),
                    _ => {}
                }
                self.types.insert(info.oid, info);
            }
            todo = self.missing(todo);
            todo.retain(|o| !asked.contains(o) && *o != 0);
        }
        Ok(())
    }

    /// Follows domains down to the type they are based on, returning it and
    /// the type modifier that applies: the column's own when it has one, else
    /// the first one a domain on the way declares (as Debezium's
    /// `PostgresType.getDefaultLength` does).
    pub(crate) fn resolve_domain(&self, mut oid: u32, mut typmod: i32) -> (u32, i32) {
        for _ in 0..32 {
            match self.get(oid).map(|t| &t.kind) {
                Some(TypeKind::Domain {
                    base_oid,
                    base_typmod,
                }) => {
                    if typmod == -1 {
                        typmod = *base_typmod;
                    }
                    oid = *base_oid;
                }
                _ => break,
            }
        }
        (oid, typmod)
    }
}

fn builtin(oid: u32, name: String, kind: TypeKind) -> TypeInfo {
    TypeInfo {
        oid,
        name,
        namespace: "pg_catalog".to_string(),
        kind,
    }
}

fn type_from_row(row: &tokio_postgres::Row) -> anyhow::Result<TypeInfo> {
    let oid: u32 = row.try_get(0)?;
    let name: String = row.try_get(1)?;
    let namespace: String = row.try_get(2)?;
    let typtype: String = row.try_get(3)?;
    let category: String = row.try_get(4)?;
    let elem_oid: u32 = row.try_get(5)?;
    let delim: String = row.try_get(6)?;
    let base_oid: u32 = row.try_get(7)?;
    let base_typmod: i32 = row.try_get(8)?;
    let labels: Option<Vec<String>> = row.try_get(9)?;
    let kind = match typtype.as_str() {
        "d" => TypeKind::Domain {
            base_oid,
            base_typmod,
        },
        "e" => TypeKind::Enum {
            labels: labels.unwrap_or_default(),
        },
        "c" => TypeKind::Composite,
        "r" => TypeKind::Range,
        // Like Debezium, arrays are what the catalog files under category A;
        // typelem alone also marks fixed-length types such as point.
        "b" if category == "A" && elem_oid != 0 => TypeKind::Array {
            elem_oid,
            delim: delim.bytes().next().unwrap_or(b','),
        },
        "b" => TypeKind::Base,
        _ => TypeKind::Other,
    };
    Ok(TypeInfo {
        oid,
        name,
        namespace,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_are_known() {
        let r = TypeRegistry::new();
        assert_eq!(r.get(oid::INT4).map(|t| t.name.as_str()), Some("int4"));
        assert_eq!(
            r.get(oid::TEXT_ARRAY).map(|t| &t.kind),
            Some(&TypeKind::Array {
                elem_oid: oid::TEXT,
                delim: b','
            })
        );
        assert_eq!(
            r.get(1020).map(|t| &t.kind),
            Some(&TypeKind::Array {
                elem_oid: 603,
                delim: b';'
            })
        );
        assert_eq!(r.missing([23, 99999, 99999, 16]), vec![99999]);
    }
}
