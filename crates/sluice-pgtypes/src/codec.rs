//! One column's decoder: the Connect schema Debezium gives the column and
//! the text-to-value conversion that goes with it.

use std::borrow::Cow;

use base64::Engine as _;
use sluice_core::schema::{prim, SchemaBuilder, SchemaRef, SchemaType};
use sluice_core::value::Value;

use crate::array::{self, Elem};
use crate::datetime::{self, Point};
use crate::error::{bad, Reason, TypeError};
use crate::hstore;
use crate::interval::PgInterval;
use crate::modes::{
    BinaryMode, DecimalMode, Format, HstoreMode, IntervalMode, TimePrecisionMode, TypeModes,
};
use crate::numeric::{self, NumericText};
use crate::registry::{oid, TypeKind, TypeRegistry};
use crate::schemas::{self, named};

/// pgjdbc's "unknown length", which Debezium reports as the length of
/// unbounded `varbit`.
const UNKNOWN_LENGTH: i32 = i32::MAX;

/// How a value's text becomes a Connect value.
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Bool,
    /// bit(1) / varbit(1): a boolean, true when the bits are not all zero.
    BitBool,
    /// bit(n>1) / varbit: `Bits`, little-endian, as long as the highest set bit needs.
    Bits,
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    /// `scale` None: numeric without a declared scale.
    Numeric {
        mode: DecimalMode,
        scale: Option<i64>,
    },
    Money {
        mode: DecimalMode,
        digits: i32,
    },
    Text,
    /// A type Debezium has no mapping for, with `include.unknown.datatypes`:
    /// the bytes of its text, or for pgjdbc's geometric types (box, line,
    /// lseg, path, circle, polygon) the text pgjdbc's object gives, with
    /// every coordinate as Java prints a double.
    UnknownBytes {
        geometric: bool,
    },
    /// Days since the epoch (Debezium `Date` and Connect `Date` alike).
    Date,
    Time {
        millis: bool,
    },
    TimeTz,
    Timestamp {
        millis: bool,
    },
    TimestampTz {
        width: Option<u32>,
    },
    Interval {
        mode: IntervalMode,
    },
    Bytea {
        mode: BinaryMode,
    },
    Point,
    Hstore {
        mode: HstoreMode,
    },
    /// PostGIS geometry / geography: hex EWKB, kept whole, plus its SRID.
    Geometry,
    /// ltree[]: Debezium splits the text on commas without unquoting.
    LtreeArray,
    Array {
        elem: Box<Kind>,
        delim: u8,
        /// Elements may not be null (Debezium's enum arrays): a NULL element
        /// makes the value unconvertible.
        required_elems: bool,
    },
}

/// One column's decoder, built once per column of a table schema.
#[derive(Debug, Clone)]
pub struct ColumnCodec {
    schema: SchemaRef,
    kind: Kind,
    type_name: String,
    toast: Value,
    debezium_omits: bool,
    is_enum: bool,
}

/// A resolved mapping: decoder, schema (not yet optional), and whether
/// Debezium (without `include.unknown.datatypes`) would leave the column out.
struct Mapping {
    kind: Kind,
    schema: SchemaBuilder,
    omitted: bool,
}

fn mapping(kind: Kind, schema: SchemaBuilder) -> Mapping {
    Mapping {
        kind,
        schema,
        omitted: false,
    }
}

fn string() -> SchemaBuilder {
    SchemaBuilder::new(SchemaType::String)
}

/// Precision and scale of a numeric type modifier, as pgjdbc computes them.
fn numeric_typmod(typmod: i32) -> Option<(i32, i32)> {
    if typmod == -1 {
        return None;
    }
    let t = typmod.wrapping_sub(4);
    Some(((t >> 16) & 0xffff, t & 0xffff))
}

/// The fractional-second precision of a time or timestamp type modifier
/// (pgjdbc: 6 when absent).
fn time_precision(typmod: i32) -> i32 {
    if typmod == -1 {
        6
    } else {
        typmod
    }
}

fn scalar(reg: &TypeRegistry, type_oid: u32, typmod: i32, m: &TypeModes) -> Option<Mapping> {
    let adaptive = m.time_precision != TimePrecisionMode::Connect;
    Some(match type_oid {
        oid::BOOL => mapping(Kind::Bool, SchemaBuilder::new(SchemaType::Boolean)),
        oid::BIT | oid::VARBIT => {
            let length = if type_oid == oid::VARBIT && typmod == -1 {
                UNKNOWN_LENGTH
            } else {
                typmod
            };
            if length > 1 {
                mapping(Kind::Bits, schemas::bits(length))
            } else {
                mapping(Kind::BitBool, SchemaBuilder::new(SchemaType::Boolean))
            }
        }
        oid::INT2 => mapping(Kind::Int16, SchemaBuilder::new(SchemaType::Int16)),
        oid::INT4 => mapping(Kind::Int32, SchemaBuilder::new(SchemaType::Int32)),
        oid::INT8 | oid::OID => mapping(Kind::Int64, SchemaBuilder::new(SchemaType::Int64)),
        oid::FLOAT4 => mapping(Kind::Float32, SchemaBuilder::new(SchemaType::Float32)),
        oid::FLOAT8 => mapping(Kind::Float64, SchemaBuilder::new(SchemaType::Float64)),
        oid::NUMERIC => {
            let pm = numeric_typmod(typmod);
            let kind = Kind::Numeric {
                mode: m.decimal,
                scale: pm.map(|(_, s)| i64::from(s)),
            };
            let schema = match (m.decimal, pm) {
                (DecimalMode::Precise, Some((p, s))) => schemas::decimal(s, Some(p)),
                (DecimalMode::Precise, None) => schemas::variable_scale_decimal(),
                (DecimalMode::Double, _) => SchemaBuilder::new(SchemaType::Float64),
                (DecimalMode::String, _) => string(),
            };
            mapping(kind, schema)
        }
        oid::MONEY => {
            let schema = match m.decimal {
                DecimalMode::Precise => schemas::decimal(m.money_fraction_digits, None),
                DecimalMode::Double => SchemaBuilder::new(SchemaType::Float64),
                DecimalMode::String => string(),
            };
            mapping(
                Kind::Money {
                    mode: m.decimal,
                    digits: m.money_fraction_digits,
                },
                schema,
            )
        }
        oid::CHAR
        | oid::NAME
        | oid::TEXT
        | oid::VARCHAR
        | oid::BPCHAR
        | oid::INET
        | oid::CIDR
        | oid::MACADDR
        | oid::MACADDR8
        | oid::INT4RANGE
        | oid::NUMRANGE
        | oid::INT8RANGE
        | oid::TSRANGE
        | oid::TSTZRANGE
        | oid::DATERANGE => mapping(Kind::Text, string()),
        oid::JSON | oid::JSONB => mapping(Kind::Text, named(SchemaType::String, schemas::JSON)),
        oid::XML => mapping(Kind::Text, named(SchemaType::String, schemas::XML)),
        oid::UUID => mapping(Kind::Text, named(SchemaType::String, schemas::UUID)),
        oid::POINT => mapping(Kind::Point, schemas::point()),
        oid::DATE => {
            let name = if adaptive {
                schemas::DATE
            } else {
                schemas::CONNECT_DATE
            };
            mapping(Kind::Date, named(SchemaType::Int32, name))
        }
        oid::TIME => match m.time_precision {
            TimePrecisionMode::AdaptiveTimeMicroseconds => micro_time(),
            TimePrecisionMode::Adaptive if time_precision(typmod) > 3 => micro_time(),
            TimePrecisionMode::Adaptive => mapping(
                Kind::Time { millis: true },
                named(SchemaType::Int32, schemas::TIME),
            ),
            TimePrecisionMode::Connect => mapping(
                Kind::Time { millis: true },
                named(SchemaType::Int32, schemas::CONNECT_TIME),
            ),
        },
        oid::TIMETZ => mapping(Kind::TimeTz, named(SchemaType::String, schemas::ZONED_TIME)),
        oid::TIMESTAMP => {
            let (millis, name) = if !adaptive {
                (true, schemas::CONNECT_TIMESTAMP)
            } else if time_precision(typmod) <= 3 {
                (true, schemas::TIMESTAMP)
            } else {
                (false, schemas::MICRO_TIMESTAMP)
            };
            mapping(Kind::Timestamp { millis }, named(SchemaType::Int64, name))
        }
        oid::TIMESTAMPTZ => {
            let p = time_precision(typmod);
            let width = (1..=9).contains(&p).then_some(p as u32);
            mapping(
                Kind::TimestampTz { width },
                named(SchemaType::String, schemas::ZONED_TIMESTAMP),
            )
        }
        oid::INTERVAL => {
            let schema = match m.interval {
                IntervalMode::Numeric => named(SchemaType::Int64, schemas::MICRO_DURATION),
                IntervalMode::String => named(SchemaType::String, schemas::INTERVAL),
            };
            mapping(Kind::Interval { mode: m.interval }, schema)
        }
        oid::BYTEA => mapping(Kind::Bytea { mode: m.binary }, binary_schema(m.binary)),
        // Debezium 3.3 added io.debezium.data.Tsvector; 2.7 had no mapping.
        oid::TSVECTOR if m.format == Format::V3_6 => {
            mapping(Kind::Text, named(SchemaType::String, schemas::TSVECTOR))
        }
        _ => {
            let info = reg.get(type_oid)?;
            match (&info.kind, info.name.as_str()) {
                (TypeKind::Enum { labels }, _) => {
                    mapping(Kind::Text, schemas::enumeration(&labels.join(",")))
                }
                (TypeKind::Base, "citext" | "isbn") => mapping(Kind::Text, string()),
                (TypeKind::Base, "ltree") => {
                    mapping(Kind::Text, named(SchemaType::String, schemas::LTREE))
                }
                (TypeKind::Base, "geometry") => mapping(Kind::Geometry, schemas::geometry()),
                (TypeKind::Base, "geography") => mapping(Kind::Geometry, schemas::geography()),
                (TypeKind::Base, "hstore") => {
                    mapping(Kind::Hstore { mode: m.hstore }, hstore_schema(m.hstore))
                }
                _ => return None,
            }
        }
    })
}

fn micro_time() -> Mapping {
    mapping(
        Kind::Time { millis: false },
        named(SchemaType::Int64, schemas::MICRO_TIME),
    )
}

fn binary_schema(mode: BinaryMode) -> SchemaBuilder {
    match mode {
        BinaryMode::Bytes => SchemaBuilder::new(SchemaType::Bytes),
        _ => string(),
    }
}

fn hstore_schema(mode: HstoreMode) -> SchemaBuilder {
    match mode {
        HstoreMode::Json => named(SchemaType::String, schemas::JSON),
        HstoreMode::Map => SchemaBuilder::map(prim::string(), prim::opt_string()),
    }
}

/// lseg, path, box, polygon, line, circle: pgjdbc reads them into its own
/// objects (`PGlseg`...), whose text Debezium sends for unknown types.
const GEOMETRIC: [u32; 6] = [601, 602, 603, 604, 628, 718];

/// The text of pgjdbc's geometric objects: PostgreSQL's text with every
/// number as `Double.toString` prints it (`(1,1),(0,0)` is
/// `(1.0,1.0),(0.0,0.0)`).
fn java_geometry_text(s: &str) -> Result<String, Reason> {
    let mut out = String::with_capacity(s.len() + 8);
    let mut token = String::new();
    let flush = |token: &mut String, out: &mut String| -> Result<(), Reason> {
        if !token.is_empty() {
            let v: f64 = parse_float(token.trim())?;
            out.push_str(&sluice_core::converter::javafmt::double_to_string(v));
            token.clear();
        }
        Ok(())
    };
    for c in s.chars() {
        if matches!(c, '(' | ')' | '[' | ']' | '<' | '>' | '{' | '}' | ',') {
            flush(&mut token, &mut out)?;
            out.push(c);
        } else {
            token.push(c);
        }
    }
    flush(&mut token, &mut out)?;
    Ok(out)
}

/// Array types Debezium declares but maps to no schema (DBZ-459), so it
/// leaves such columns out. (`bit[]` is not one: Debezium gives it the
/// element's `Bits` schema and fails to convert every value, see the README's
/// deliberate differences; Sluice emits the array.)
const DEBEZIUM_UNMAPPED_ARRAYS: &[u32] = &[
    oid::MONEY_ARRAY,
    oid::NAME_ARRAY,
    oid::INTERVAL_ARRAY,
    oid::VARBIT_ARRAY,
    oid::XML_ARRAY,
    oid::POINT_ARRAY,
    oid::REFCURSOR_ARRAY,
];

fn array_mapping(
    reg: &TypeRegistry,
    array_oid: u32,
    elem_oid: u32,
    delim: u8,
    typmod: i32,
    m: &TypeModes,
) -> Mapping {
    let elem_info = reg.get(elem_oid);
    if elem_info.is_some_and(|t| t.name == "ltree" && t.kind == TypeKind::Base) {
        let item = named(SchemaType::String, schemas::LTREE).optional().build();
        return mapping(Kind::LtreeArray, SchemaBuilder::array(item));
    }
    // Debezium cannot map arrays of domains (their element has no JDBC type).
    let elem_is_domain = matches!(elem_info.map(|t| &t.kind), Some(TypeKind::Domain { .. }));
    let (elem_base, elem_typmod) = reg.resolve_domain(elem_oid, typmod);
    let elem = if elem_oid == oid::TIME && m.format == Format::V2_7 {
        // Debezium 2.7 types time[] as MicroTime whatever the precision or
        // mode; 3.1 made the elements follow time.precision.mode (DBZ-6387).
        Some(micro_time())
    } else {
        scalar(reg, elem_base, elem_typmod, m)
    };
    let is_enum = matches!(elem_info.map(|t| &t.kind), Some(TypeKind::Enum { .. }));
    let omitted = elem.is_none() || elem_is_domain || DEBEZIUM_UNMAPPED_ARRAYS.contains(&array_oid);
    let elem = elem.unwrap_or_else(|| mapping(Kind::Text, string()));
    // Enum arrays are the one case where Debezium leaves the items required.
    let item = if is_enum {
        elem.schema.build()
    } else {
        elem.schema.optional().build()
    };
    Mapping {
        kind: Kind::Array {
            elem: Box::new(elem.kind),
            delim,
            required_elems: is_enum,
        },
        schema: SchemaBuilder::array(item),
        omitted,
    }
}

fn resolve(reg: &TypeRegistry, type_oid: u32, typmod: i32, m: &TypeModes) -> Mapping {
    let (base, typmod) = reg.resolve_domain(type_oid, typmod);
    if let Some(TypeKind::Array { elem_oid, delim }) = reg.get(base).map(|t| &t.kind) {
        return array_mapping(reg, base, *elem_oid, *delim, typmod, m);
    }
    scalar(reg, base, typmod, m).unwrap_or_else(|| {
        if m.include_unknown {
            // Debezium's JDBC fallback: the value's text as bytes.
            let geometric = GEOMETRIC.contains(&base);
            mapping(
                Kind::UnknownBytes { geometric },
                SchemaBuilder::new(SchemaType::Bytes),
            )
        } else {
            Mapping {
                kind: Kind::Text,
                schema: string(),
                omitted: true,
            }
        }
    })
}

/// The value Debezium emits for an unchanged TOASTed column
/// (`UnchangedToastedReplicationMessageColumn` picks a marker by type name,
/// `UnchangedToastedPlaceholder` and the converters turn it into a value).
fn toast_value(reg: &TypeRegistry, type_oid: u32, kind: &Kind, m: &TypeModes) -> Value {
    let (bytes, text) = m.placeholder();
    let name = reg.get(type_oid).map(|t| t.name.as_str()).unwrap_or("");
    match name {
        "_text" | "_varchar" | "_json" | "_jsonb" => Value::Array(vec![Value::String(text)]),
        "_bytea" => Value::Array(vec![Value::Bytes(bytes)]),
        // Java widens each (signed) byte of the placeholder.
        "_int4" | "_date" => Value::Array(
            bytes
                .iter()
                .map(|&b| Value::Int32(i32::from(b as i8)))
                .collect(),
        ),
        "_int8" => Value::Array(
            bytes
                .iter()
                .map(|&b| Value::Int64(i64::from(b as i8)))
                .collect(),
        ),
        "_uuid" => Value::Array(vec![Value::String(crate::md5::name_uuid_from_bytes(
            &bytes,
        ))]),
        "hstore" if matches!(kind, Kind::Hstore { .. }) => {
            let pairs = vec![(text.clone(), Some(text))];
            match m.hstore {
                HstoreMode::Json => Value::String(hstore::to_json(&pairs)),
                HstoreMode::Map => Value::Map(
                    pairs
                        .into_iter()
                        .map(|(k, v)| (Value::String(k), v.map_or(Value::Null, Value::String)))
                        .collect(),
                ),
            }
        }
        _ => match kind {
            Kind::Bytea {
                mode: BinaryMode::Bytes,
            }
            | Kind::UnknownBytes { .. } => Value::Bytes(bytes),
            // Debezium's base64 converters see an unexpected object and deliver null.
            Kind::Bytea {
                mode: BinaryMode::Base64 | BinaryMode::Base64UrlSafe,
            } => Value::Null,
            // Everything else (including types that cannot hold a string)
            // ends up as the placeholder text, as in Debezium.
            _ => Value::String(text),
        },
    }
}

impl ColumnCodec {
    /// The decoder of a column of type `type_oid` with modifier
    /// `type_modifier` (`pg_attribute.atttypmod`, -1 for none). Types the
    /// registry does not know map to an optional-as-asked string schema and
    /// decode as their text; this never fails.
    pub fn new(
        registry: &TypeRegistry,
        type_oid: u32,
        type_modifier: i32,
        optional: bool,
        modes: &TypeModes,
    ) -> ColumnCodec {
        let Mapping {
            kind,
            schema,
            omitted,
        } = resolve(registry, type_oid, type_modifier, modes);
        let toast = toast_value(registry, type_oid, &kind, modes);
        let type_name = registry
            .get(type_oid)
            .map(|t| t.name.clone())
            .unwrap_or_else(|| format!("oid {type_oid}"));
        // Like Debezium's TableSchemaBuilder, only ever make a schema
        // optional: Geometry is optional even for NOT NULL columns.
        let schema = if optional { schema.optional() } else { schema };
        let is_enum = matches!(
            registry
                .get(registry.resolve_domain(type_oid, type_modifier).0)
                .map(|t| &t.kind),
            Some(TypeKind::Enum { .. })
        ) && matches!(
            registry.get(type_oid).map(|t| &t.kind),
            Some(TypeKind::Enum { .. })
        );
        ColumnCodec {
            schema: schema.build(),
            kind,
            type_name,
            toast,
            debezium_omits: omitted,
            is_enum,
        }
    }

    /// The column's Connect schema (optional flag set), exactly Debezium's.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The PostgreSQL type name (`int4`, `_text`, `mood`...), or `oid N`.
    pub fn type_name(&self) -> &str {
        &self.type_name
    }

    /// Whether Debezium leaves this column out of its events altogether:
    /// types it has no mapping for (box, pg_lsn, composite types..., unless
    /// `include.unknown.datatypes`; tsvector in the 2.7 format) and the arrays
    /// it declares unsupported (money[], interval[], xml[], point[], arrays of
    /// domains...). Such columns still decode here, as text or best effort.
    pub fn debezium_omits(&self) -> bool {
        self.debezium_omits
    }

    /// Decodes one value in PostgreSQL's text output format.
    pub fn decode_text(&self, text: &[u8]) -> Result<Value, TypeError> {
        let s = std::str::from_utf8(text)
            .map_err(|_| TypeError::new(&self.type_name, text, "invalid UTF-8"))?;
        self.kind
            .decode(s)
            .map_err(|reason| TypeError::new(&self.type_name, text, reason))
    }

    /// Debezium's placeholder for an unchanged TOASTed value of this column.
    pub fn unchanged_toast(&self) -> Value {
        self.toast.clone()
    }

    /// Whether the column is of an enum type.
    pub(crate) fn is_enum(&self) -> bool {
        self.is_enum
    }

    /// Gives the column's schema a default value (its `DEFAULT`, see
    /// [`ColumnCodec::default_from_expression`]).
    pub fn set_default(&mut self, value: Value) {
        let mut s = (*self.schema).clone();
        s.default = Some(value);
        self.schema = std::sync::Arc::new(s);
    }
}

/// Decodes hex digits (either case) to bytes; None on odd length or a non-hex digit.
pub(crate) fn decode_hex(hex: &[u8]) -> Option<Vec<u8>> {
    if hex.len() & 1 == 1 {
        return None;
    }
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    // Sized once: a value of hundreds of MB is not grown by doubling.
    let mut out = Vec::with_capacity(hex.len() / 2);
    for p in hex.chunks_exact(2) {
        out.push(nibble(p[0])? << 4 | nibble(p[1])?);
    }
    Some(out)
}

fn encode_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    s
}

fn parse_int<T: std::str::FromStr>(s: &str) -> Result<T, Reason> {
    // Rust accepts a leading '+', which PostgreSQL never prints but Java's
    // parsers also accept, so the two agree.
    s.parse::<T>().map_err(|_| bad("not an integer in range"))
}

fn parse_float<T: std::str::FromStr>(s: &str) -> Result<T, Reason> {
    // PostgreSQL spells the specials NaN, Infinity and -Infinity; Rust's
    // parser accepts those (and other spellings), digits otherwise.
    let ok = !s.is_empty()
        && (s
            .bytes()
            .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-'))
            || matches!(s, "NaN" | "Infinity" | "-Infinity"));
    if !ok {
        return Err(bad("not a floating-point number"));
    }
    s.parse::<T>()
        .map_err(|_| bad("not a floating-point number"))
}

/// The bits of bit-string text, checked.
fn bit_digits(s: &str) -> Result<&[u8], Reason> {
    let b = s.as_bytes();
    if b.iter().all(|&c| c == b'0' || c == b'1') {
        Ok(b)
    } else {
        Err(bad("not a bit string"))
    }
}

/// Debezium's `Bits` bytes: bit i counts from the right end of the text,
/// byte k holds bits 8k..8k+7, and only as many bytes as the highest set bit
/// needs are kept (`BitSet.toByteArray`).
fn bits_bytes(bits: &[u8]) -> Vec<u8> {
    let n = bits.len();
    let highest = bits.iter().position(|&c| c == b'1').map(|p| n - 1 - p);
    let Some(highest) = highest else {
        return Vec::new();
    };
    let mut out = vec![0u8; highest / 8 + 1];
    for (p, &c) in bits.iter().enumerate() {
        if c == b'1' {
            let i = n - 1 - p;
            out[i / 8] |= 1 << (i % 8);
        }
    }
    out
}

/// `PGpoint` text `(x,y)`.
fn parse_point(s: &str) -> Result<(f64, f64), Reason> {
    let inner = s
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| bad("point must be (x,y)"))?;
    let (x, y) = inner
        .split_once(',')
        .ok_or_else(|| bad("point must be (x,y)"))?;
    Ok((parse_float(x.trim())?, parse_float(y.trim())?))
}

/// The little-endian WKB of a 2D point, as Debezium's `Point.buildWKBPoint`
/// writes it: byte-order mark 1, type 1, x, y.
fn point_wkb(x: f64, y: f64) -> Vec<u8> {
    let mut wkb = Vec::with_capacity(21);
    wkb.push(1);
    wkb.extend_from_slice(&1u32.to_le_bytes());
    wkb.extend_from_slice(&x.to_le_bytes());
    wkb.extend_from_slice(&y.to_le_bytes());
    wkb
}

/// Money text under `lc_monetary=C`: `$1,234.56`, `-$1,234.56`. Debezium
/// drops the sign, then the first character (the currency symbol), then
/// the group separators.
fn parse_money(s: &str) -> Result<numeric::Dec, Reason> {
    let (neg, rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let mut chars = rest.chars();
    match chars.next() {
        Some(c) if !c.is_ascii_digit() && c != '-' => {}
        _ => return Err(bad("currency symbol expected")),
    }
    let body = chars.as_str();
    if body.starts_with(['-', '+']) {
        return Err(bad("misplaced sign"));
    }
    let mut d = numeric::parse_plain(body, true)?;
    d.neg = neg;
    Ok(d)
}

/// The SRID of an EWKB geometry, if its type word carries the SRID flag
/// (Debezium's `PostgisGeometry.parseSrid`).
fn ewkb_srid(ewkb: &[u8]) -> Result<Option<i32>, Reason> {
    if ewkb.len() < 9 {
        return Err(bad("EWKB too short"));
    }
    let little = ewkb[0] != 0;
    let word = |b: &[u8]| {
        let a = [b[0], b[1], b[2], b[3]];
        if little {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    const EWKB_SRID: u32 = 0x2000_0000;
    Ok((word(&ewkb[1..5]) & EWKB_SRID != 0).then(|| word(&ewkb[5..9]) as i32))
}

fn special_decimal(mode: DecimalMode, t: &NumericText) -> Result<Value, Reason> {
    let (f, name) = match t {
        NumericText::NaN => (f64::NAN, "NAN"),
        NumericText::PosInf => (f64::INFINITY, "POSITIVE_INFINITY"),
        _ => (f64::NEG_INFINITY, "NEGATIVE_INFINITY"),
    };
    match mode {
        DecimalMode::Double => Ok(Value::Float64(f)),
        DecimalMode::String => Ok(Value::String(name.to_string())),
        // Debezium's converter fails on them; event.converting.failure.handling.mode
        // decides what follows (null and a warning by default).
        DecimalMode::Precise => Err(bad(
            "NaN and infinities have no precise decimal form; decimal.handling.mode string or double carries them",
        )),
    }
}

impl Kind {
    fn decode(&self, s: &str) -> Result<Value, Reason> {
        Ok(match self {
            Kind::Bool => match s {
                "t" => Value::Bool(true),
                "f" => Value::Bool(false),
                _ => return Err(bad("not t or f")),
            },
            Kind::BitBool => {
                let bits = bit_digits(s)?;
                if bits.is_empty() {
                    return Err(bad("empty bit string"));
                }
                Value::Bool(bits.contains(&b'1'))
            }
            Kind::Bits => Value::Bytes(bits_bytes(bit_digits(s)?)),
            Kind::Int16 => Value::Int16(parse_int(s)?),
            Kind::Int32 => Value::Int32(parse_int(s)?),
            Kind::Int64 => Value::Int64(parse_int(s)?),
            Kind::Float32 => Value::Float32(parse_float(s)?),
            Kind::Float64 => Value::Float64(parse_float(s)?),
            Kind::Numeric { mode, scale } => {
                // Most values fit in 128 bits: skip the digit vectors.
                if *mode == DecimalMode::Precise {
                    if let Some((bytes, got_scale)) = numeric::fast_unscaled(s, *scale) {
                        return Ok(match scale {
                            Some(_) => Value::Bytes(bytes),
                            None => Value::Struct(vec![
                                Value::Int32(
                                    i32::try_from(got_scale)
                                        .map_err(|_| bad("scale out of range"))?,
                                ),
                                Value::Bytes(bytes),
                            ]),
                        });
                    }
                }
                let t = numeric::parse_numeric(s)?;
                let NumericText::Number(d) = &t else {
                    return special_decimal(*mode, &t);
                };
                match (mode, scale) {
                    (DecimalMode::Precise, Some(scale)) => {
                        Value::Bytes(d.rescaled(*scale, false)?.unscaled_bytes())
                    }
                    (DecimalMode::Precise, None) => {
                        let d = d.stripped();
                        let scale =
                            i32::try_from(d.scale).map_err(|_| bad("scale out of range"))?;
                        Value::Struct(vec![Value::Int32(scale), Value::Bytes(d.unscaled_bytes())])
                    }
                    (DecimalMode::Double, _) => Value::Float64(d.to_f64()),
                    (DecimalMode::String, Some(scale)) => {
                        Value::String(d.rescaled(*scale, false)?.plain_string())
                    }
                    (DecimalMode::String, None) => Value::String(d.plain_string()),
                }
            }
            Kind::Money { mode, digits } => {
                let d = parse_money(s)?;
                match mode {
                    DecimalMode::Precise => {
                        Value::Bytes(d.rescaled(i64::from(*digits), true)?.unscaled_bytes())
                    }
                    DecimalMode::Double => Value::Float64(d.to_f64()),
                    DecimalMode::String => Value::String(d.plain_string()),
                }
            }
            Kind::Text => Value::String(s.to_string()),
            Kind::UnknownBytes { geometric: false } => Value::Bytes(s.as_bytes().to_vec()),
            Kind::UnknownBytes { geometric: true } => {
                Value::Bytes(java_geometry_text(s)?.into_bytes())
            }
            Kind::Date => Value::Int32(match datetime::parse_date(s)? {
                // Java's (int) cast of LocalDate.toEpochDay.
                Point::Finite(days) => days as i32,
                Point::PosInfinity => datetime::DATE_POS_INFINITY_DAYS,
                Point::NegInfinity => datetime::DATE_NEG_INFINITY_DAYS,
            }),
            Kind::Time { millis } => {
                let micros = datetime::parse_time(s)?;
                if *millis {
                    Value::Int32((micros / 1000) as i32)
                } else {
                    Value::Int64(micros)
                }
            }
            Kind::TimeTz => Value::String(datetime::format_zoned_time(datetime::parse_timetz(s)?)),
            Kind::Timestamp { millis } => {
                let micros = match datetime::parse_timestamp(s, false)? {
                    Point::Finite(us) => us,
                    Point::PosInfinity => datetime::TS_POS_INFINITY_MICROS,
                    Point::NegInfinity => datetime::TS_NEG_INFINITY_MICROS,
                };
                Value::Int64(if *millis {
                    micros.div_euclid(1000)
                } else {
                    micros
                })
            }
            Kind::TimestampTz { width } => {
                Value::String(match datetime::parse_timestamp(s, true)? {
                    Point::Finite(us) => datetime::format_zoned_timestamp(us, *width),
                    Point::PosInfinity => "infinity".to_string(),
                    Point::NegInfinity => "-infinity".to_string(),
                })
            }
            Kind::Interval { mode } => {
                let iv = PgInterval::parse(s)?;
                match mode {
                    IntervalMode::Numeric => Value::Int64(iv.micro_duration()),
                    IntervalMode::String => Value::String(iv.iso_string()),
                }
            }
            Kind::Bytea { mode } => {
                let hex = s
                    .strip_prefix("\\x")
                    .ok_or_else(|| bad("hex bytea (\\x...) expected"))?;
                let bytes = decode_hex(hex.as_bytes()).ok_or_else(|| bad("invalid hex digits"))?;
                match mode {
                    BinaryMode::Bytes => Value::Bytes(bytes),
                    BinaryMode::Base64 => {
                        Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
                    }
                    BinaryMode::Base64UrlSafe => {
                        Value::String(base64::engine::general_purpose::URL_SAFE.encode(bytes))
                    }
                    BinaryMode::Hex => Value::String(encode_hex(&bytes)),
                }
            }
            Kind::Point => {
                let (x, y) = parse_point(s)?;
                Value::Struct(vec![
                    Value::Float64(x),
                    Value::Float64(y),
                    Value::Bytes(point_wkb(x, y)),
                    Value::Null,
                ])
            }
            Kind::Hstore { mode } => {
                let pairs = hstore::in_java_order(hstore::parse(s)?);
                match mode {
                    HstoreMode::Json => Value::String(hstore::to_json(&pairs)),
                    HstoreMode::Map => Value::Map(
                        pairs
                            .into_iter()
                            .map(|(k, v)| (Value::String(k), v.map_or(Value::Null, Value::String)))
                            .collect(),
                    ),
                }
            }
            Kind::Geometry => {
                let ewkb = decode_hex(s.as_bytes()).ok_or_else(|| bad("hex EWKB expected"))?;
                let srid = ewkb_srid(&ewkb)?;
                Value::Struct(vec![
                    Value::Bytes(ewkb),
                    srid.map_or(Value::Null, Value::Int32),
                ])
            }
            Kind::LtreeArray => {
                let inner = s
                    .strip_prefix('{')
                    .and_then(|r| r.strip_suffix('}'))
                    .ok_or_else(|| bad("array must be {...}"))?;
                // Java's String.split: no match gives the whole string, and
                // trailing empty strings are dropped.
                let mut parts: Vec<&str> = inner.split(',').collect();
                while parts.len() > 1 && parts.last() == Some(&"") {
                    parts.pop();
                }
                Value::Array(
                    parts
                        .into_iter()
                        .map(|p| Value::String(p.to_string()))
                        .collect(),
                )
            }
            Kind::Array {
                elem,
                delim,
                required_elems,
            } => {
                let elems = array::parse(s, *delim)?;
                let mut out = Vec::with_capacity(elems.len());
                for e in elems {
                    out.push(match e {
                        Elem::Null if *required_elems => {
                            return Err(bad("NULL element in an array whose elements are required"))
                        }
                        Elem::Null => Value::Null,
                        // Debezium hands a whole sub-array to the element
                        // converter, which cannot read it and yields null.
                        Elem::Nested => Value::Null,
                        Elem::Text(t) => elem.decode(&t).map_err(|r| {
                            Cow::Owned(format!("array element {:?}: {r}", truncate(&t)))
                        })?,
                    });
                }
                Value::Array(out)
            }
        })
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(32) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
