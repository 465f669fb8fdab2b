//! The connector options that change how values are represented.

pub use sluice_core::debezium::Format;

/// `decimal.handling.mode`: how `numeric`, `decimal` and `money` travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecimalMode {
    /// `precise` (default): Connect `Decimal` (or `VariableScaleDecimal` for
    /// numeric columns without a scale).
    #[default]
    Precise,
    /// `double`: float64, lossy.
    Double,
    /// `string`: the plain decimal text; NaN and infinities as `NAN`,
    /// `POSITIVE_INFINITY`, `NEGATIVE_INFINITY`.
    String,
}

/// `time.precision.mode`: how dates, times and timestamps travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimePrecisionMode {
    /// `adaptive` (default): the column's precision picks milli- or
    /// microsecond semantic types.
    #[default]
    Adaptive,
    /// `adaptive_time_microseconds`: like adaptive, but `time` is always
    /// `MicroTime`.
    AdaptiveTimeMicroseconds,
    /// `connect`: Kafka Connect's own `Date`, `Time` and `Timestamp`
    /// (milliseconds, lossy).
    Connect,
}

/// `binary.handling.mode`: how `bytea` travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BinaryMode {
    /// `bytes` (default).
    #[default]
    Bytes,
    /// `base64`: a base64 string (with padding).
    Base64,
    /// `base64-url-safe`: a URL-safe base64 string (with padding).
    Base64UrlSafe,
    /// `hex`: a lowercase hex string.
    Hex,
}

/// `interval.handling.mode`: how `interval` travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IntervalMode {
    /// `numeric` (default): `MicroDuration`, approximate microseconds.
    #[default]
    Numeric,
    /// `string`: `Interval`, `PnYnMnDTnHnMnS`.
    String,
}

/// `hstore.handling.mode`: how `hstore` travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HstoreMode {
    /// `json` (default): a `Json` string.
    #[default]
    Json,
    /// `map`: a map of string to optional string.
    Map,
}

/// Every option that influences type mapping, with Debezium's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeModes {
    /// `decimal.handling.mode`.
    pub decimal: DecimalMode,
    /// `time.precision.mode`.
    pub time_precision: TimePrecisionMode,
    /// `binary.handling.mode`.
    pub binary: BinaryMode,
    /// `interval.handling.mode`.
    pub interval: IntervalMode,
    /// `hstore.handling.mode`.
    pub hstore: HstoreMode,
    /// `money.fraction.digits` (default 2): the scale of `money` in precise mode.
    pub money_fraction_digits: i32,
    /// `unavailable.value.placeholder` (default `__debezium_unavailable_value`);
    /// a `hex:` prefix gives the bytes in hex, as in Debezium.
    pub unavailable_placeholder: String,
    /// `sluice.debezium.compatibility`: the Debezium release whose mapping is
    /// reproduced (`tsvector` and `time[]` changed in 3.x).
    pub format: Format,
    /// `include.unknown.datatypes` (default false): columns of types Debezium
    /// cannot map travel as the bytes of their text instead of being left out.
    pub include_unknown: bool,
}

/// Debezium's default for `unavailable.value.placeholder`.
pub const DEFAULT_PLACEHOLDER: &str = "__debezium_unavailable_value";

impl Default for TypeModes {
    fn default() -> Self {
        TypeModes {
            decimal: DecimalMode::default(),
            time_precision: TimePrecisionMode::default(),
            binary: BinaryMode::default(),
            interval: IntervalMode::default(),
            hstore: HstoreMode::default(),
            money_fraction_digits: 2,
            unavailable_placeholder: DEFAULT_PLACEHOLDER.to_string(),
            format: Format::default(),
            include_unknown: false,
        }
    }
}

/// Looks `key` up and matches it (trimmed, case-insensitively, as Debezium's
/// `EnumeratedValue` parsing does) against `allowed`.
fn choice<T: Copy>(
    get: &impl Fn(&str) -> Option<String>,
    key: &str,
    allowed: &[(&str, T)],
    default: T,
) -> Result<T, String> {
    let Some(raw) = get(key) else {
        return Ok(default);
    };
    let v = raw.trim();
    allowed
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(v))
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            let names: Vec<&str> = allowed.iter().map(|(n, _)| *n).collect();
            format!(
                "invalid value {raw:?} for {key}: allowed values are {}",
                names.join(", ")
            )
        })
}

impl TypeModes {
    /// Reads the modes from connector properties; absent keys keep their
    /// defaults. The error names the key, the value and what is allowed.
    pub fn from_props(get: impl Fn(&str) -> Option<String>) -> Result<TypeModes, String> {
        let d = TypeModes::default();
        let decimal = choice(
            &get,
            "decimal.handling.mode",
            &[
                ("precise", DecimalMode::Precise),
                ("double", DecimalMode::Double),
                ("string", DecimalMode::String),
            ],
            d.decimal,
        )?;
        let time_precision = choice(
            &get,
            "time.precision.mode",
            &[
                ("adaptive", TimePrecisionMode::Adaptive),
                (
                    "adaptive_time_microseconds",
                    TimePrecisionMode::AdaptiveTimeMicroseconds,
                ),
                ("connect", TimePrecisionMode::Connect),
            ],
            d.time_precision,
        )?;
        let binary = choice(
            &get,
            "binary.handling.mode",
            &[
                ("bytes", BinaryMode::Bytes),
                ("base64", BinaryMode::Base64),
                ("base64-url-safe", BinaryMode::Base64UrlSafe),
                ("hex", BinaryMode::Hex),
            ],
            d.binary,
        )?;
        let interval = choice(
            &get,
            "interval.handling.mode",
            &[
                ("numeric", IntervalMode::Numeric),
                ("string", IntervalMode::String),
            ],
            d.interval,
        )?;
        let hstore = choice(
            &get,
            "hstore.handling.mode",
            &[("json", HstoreMode::Json), ("map", HstoreMode::Map)],
            d.hstore,
        )?;
        let money_fraction_digits = match get("money.fraction.digits") {
            None => d.money_fraction_digits,
            Some(raw) => raw
                .trim()
                .parse::<i16>()
                .map(i32::from)
                .map_err(|_| {
                    format!(
                        "invalid value {raw:?} for money.fraction.digits: allowed values are integers from -32768 to 32767"
                    )
                })?,
        };
        let unavailable_placeholder =
            get("unavailable.value.placeholder").unwrap_or(d.unavailable_placeholder);
        if let Some(hex) = unavailable_placeholder.strip_prefix("hex:") {
            if crate::codec::decode_hex(hex.as_bytes()).is_none() {
                return Err(format!(
                    "invalid value {unavailable_placeholder:?} for unavailable.value.placeholder: allowed values are any text, or hex: followed by an even number of hex digits"
                ));
            }
        }
        let format = match get("sluice.debezium.compatibility") {
            None => d.format,
            Some(raw) => Format::parse(&raw).ok_or_else(|| {
                format!(
                    "invalid value {raw:?} for sluice.debezium.compatibility: allowed values are 3.6, 2.7"
                )
            })?,
        };
        let include_unknown = match get("include.unknown.datatypes") {
            None => d.include_unknown,
            Some(raw) => match raw.trim().to_ascii_lowercase().as_str() {
                "true" => true,
                "false" => false,
                _ => {
                    return Err(format!(
                        "invalid value {raw:?} for include.unknown.datatypes: allowed values are true, false"
                    ))
                }
            },
        };
        Ok(TypeModes {
            decimal,
            time_precision,
            binary,
            interval,
            hstore,
            money_fraction_digits,
            unavailable_placeholder,
            format,
            include_unknown,
        })
    }

    /// The placeholder's bytes (`hex:` decoded) and its text form.
    pub(crate) fn placeholder(&self) -> (Vec<u8>, String) {
        let bytes = match self.unavailable_placeholder.strip_prefix("hex:") {
            Some(hex) => crate::codec::decode_hex(hex.as_bytes())
                .unwrap_or_else(|| self.unavailable_placeholder.as_bytes().to_vec()),
            None => self.unavailable_placeholder.as_bytes().to_vec(),
        };
        let text = String::from_utf8_lossy(&bytes).into_owned();
        (bytes, text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn props(kv: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = kv
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn defaults_when_absent() {
        assert_eq!(
            TypeModes::from_props(props(&[])).unwrap(),
            TypeModes::default()
        );
    }

    #[test]
    fn parses_every_key() {
        let m = TypeModes::from_props(props(&[
            ("decimal.handling.mode", " STRING "),
            ("time.precision.mode", "connect"),
            ("binary.handling.mode", "base64-url-safe"),
            ("interval.handling.mode", "string"),
            ("hstore.handling.mode", "map"),
            ("money.fraction.digits", "4"),
            ("unavailable.value.placeholder", "hex:0102"),
        ]))
        .unwrap();
        assert_eq!(m.decimal, DecimalMode::String);
        assert_eq!(m.time_precision, TimePrecisionMode::Connect);
        assert_eq!(m.binary, BinaryMode::Base64UrlSafe);
        assert_eq!(m.interval, IntervalMode::String);
        assert_eq!(m.hstore, HstoreMode::Map);
        assert_eq!(m.money_fraction_digits, 4);
        assert_eq!(m.placeholder().0, vec![1, 2]);
    }

    #[test]
    fn error_names_key_value_and_allowed() {
        let e = TypeModes::from_props(props(&[("binary.handling.mode", "octal")])).unwrap_err();
        assert!(e.contains("binary.handling.mode"), "{e}");
        assert!(e.contains("octal"), "{e}");
        assert!(e.contains("base64-url-safe"), "{e}");
    }
}
