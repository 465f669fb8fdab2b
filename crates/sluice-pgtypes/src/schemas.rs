//! Debezium's and Kafka Connect's semantic schemas, with their exact names,
//! versions, docs and parameters (see Debezium's `SchemaFactory`, `time/*`,
//! `data/*` and Kafka's `connect.data.{Decimal,Date,Time,Timestamp}`).

use sluice_core::schema::{SchemaBuilder, SchemaType};

pub(crate) const DECIMAL: &str = "org.apache.kafka.connect.data.Decimal";
pub(crate) const CONNECT_DATE: &str = "org.apache.kafka.connect.data.Date";
pub(crate) const CONNECT_TIME: &str = "org.apache.kafka.connect.data.Time";
pub(crate) const CONNECT_TIMESTAMP: &str = "org.apache.kafka.connect.data.Timestamp";
pub(crate) const VARIABLE_SCALE_DECIMAL: &str = "io.debezium.data.VariableScaleDecimal";
pub(crate) const BITS: &str = "io.debezium.data.Bits";
pub(crate) const JSON: &str = "io.debezium.data.Json";
pub(crate) const XML: &str = "io.debezium.data.Xml";
pub(crate) const UUID: &str = "io.debezium.data.Uuid";
pub(crate) const ENUM: &str = "io.debezium.data.Enum";
pub(crate) const LTREE: &str = "io.debezium.data.Ltree";
pub(crate) const TSVECTOR: &str = "io.debezium.data.Tsvector";
pub(crate) const POINT: &str = "io.debezium.data.geometry.Point";
pub(crate) const GEOMETRY: &str = "io.debezium.data.geometry.Geometry";
pub(crate) const GEOGRAPHY: &str = "io.debezium.data.geometry.Geography";
pub(crate) const DATE: &str = "io.debezium.time.Date";
pub(crate) const TIME: &str = "io.debezium.time.Time";
pub(crate) const MICRO_TIME: &str = "io.debezium.time.MicroTime";
pub(crate) const TIMESTAMP: &str = "io.debezium.time.Timestamp";
pub(crate) const MICRO_TIMESTAMP: &str = "io.debezium.time.MicroTimestamp";
pub(crate) const ZONED_TIMESTAMP: &str = "io.debezium.time.ZonedTimestamp";
pub(crate) const ZONED_TIME: &str = "io.debezium.time.ZonedTime";
pub(crate) const MICRO_DURATION: &str = "io.debezium.time.MicroDuration";
pub(crate) const INTERVAL: &str = "io.debezium.time.Interval";

/// A named schema of type `ty` at version 1, as every semantic type here is.
pub(crate) fn named(ty: SchemaType, name: &str) -> SchemaBuilder {
    SchemaBuilder::new(ty).name(name).version(1)
}

/// Kafka's `Decimal.builder(scale)`, plus Debezium's precision parameter
/// when given (money carries none).
pub(crate) fn decimal(scale: i32, precision: Option<i32>) -> SchemaBuilder {
    // Kafka sets name, then the scale parameter, then the version; only the
    // parameter order is observable.
    let b = named(SchemaType::Bytes, DECIMAL).parameter("scale", scale.to_string());
    match precision {
        Some(p) => b.parameter("connect.decimal.precision", p.to_string()),
        None => b,
    }
}

/// `VariableScaleDecimal`: struct {scale int32, value bytes}.
pub(crate) fn variable_scale_decimal() -> SchemaBuilder {
    named(SchemaType::Struct, VARIABLE_SCALE_DECIMAL)
        .doc("Variable scaled decimal")
        .field(
            "scale",
            sluice_core::schema::prim::of(SchemaType::Int32, false),
        )
        .field(
            "value",
            sluice_core::schema::prim::of(SchemaType::Bytes, false),
        )
}

/// `Bits` with its `length` parameter.
pub(crate) fn bits(length: i32) -> SchemaBuilder {
    named(SchemaType::Bytes, BITS).parameter("length", length.to_string())
}

/// `Enum` with its `allowed` parameter.
pub(crate) fn enumeration(allowed: &str) -> SchemaBuilder {
    named(SchemaType::String, ENUM).parameter("allowed", allowed)
}

/// `geometry.Point`: struct {x, y, wkb, srid}.
pub(crate) fn point() -> SchemaBuilder {
    use sluice_core::schema::prim::of;
    named(SchemaType::Struct, POINT)
        .doc("Geometry (POINT)")
        .field("x", of(SchemaType::Float64, false))
        .field("y", of(SchemaType::Float64, false))
        .field("wkb", of(SchemaType::Bytes, true))
        .field("srid", of(SchemaType::Int32, true))
}

/// `geometry.Geometry`: struct {wkb, srid}, optional by construction.
pub(crate) fn geometry() -> SchemaBuilder {
    use sluice_core::schema::prim::of;
    named(SchemaType::Struct, GEOMETRY)
        .doc("Geometry")
        .optional()
        .field("wkb", of(SchemaType::Bytes, false))
        .field("srid", of(SchemaType::Int32, true))
}

/// `geometry.Geography`: struct {wkb, srid}.
pub(crate) fn geography() -> SchemaBuilder {
    use sluice_core::schema::prim::of;
    named(SchemaType::Struct, GEOGRAPHY)
        .doc("Geography")
        .field("wkb", of(SchemaType::Bytes, false))
        .field("srid", of(SchemaType::Int32, true))
}
