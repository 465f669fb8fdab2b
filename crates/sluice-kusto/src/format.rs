//! The bytes the Kusto sink ingests for its records: what the official
//! connector (`Azure/kafka-sink-azure-kusto`, release 5.3.1, branch `master`)
//! writes to its temporary files for the same records and converter
//! settings, so existing ADX tables and ingestion mappings keep working.
//!
//! # What the official connector writes
//!
//! Read in the connector's source (release 5.3.1): `KustoSinkTask.java`
//! (`put`, `getTopicsToIngestionProps`), `TopicPartitionWriter.java`
//! (`writeRecord`, `open`, `getFilePath`), `FileWriter.java` (`writeData`,
//! `initializeRecordWriter`, `openFile`, `CountingOutputStream`) and the
//! writers in `formatWriter/`: `JsonRecordWriterProvider.java`,
//! `StringRecordWriterProvider.java`, `ByteRecordWriterProvider.java`,
//! `AvroRecordWriterProvider.java`.
//!
//! - **Only the value is written.** Keys, headers and Kafka metadata are not
//!   part of the ingested data in any release. The classes
//!   `KustoRecordWriter`, `FormatWriterHelper` and `HeaderAndMetadataWriter`
//!   (which wrap each record as `{"value":…,"key":…,"headers":…,"kafkamd":
//!   {"topic","partition","offset"}}`) exist only on the unreleased branch
//!   `feature/AddHeadersAndMetadata` (December 2024, pull request 117;
//!   its pom says 5.0.0, but the 5.0.0 release was cut from `master`
//!   without it); no tag contains them.
//!   Sluice still reads the key with the key converter, as Kafka Connect does
//!   before `put`, so a key the converter rejects fails the record.
//! - **Tombstones are skipped.** `KustoSinkTask.put` drops records whose
//!   value is null (after the value converter: a null payload, JSON `null`)
//!   with a warning; nothing is written for them. [`BatchEncoder::push`]
//!   accepts them and appends nothing.
//! - **json / multijson / singlejson** are announced to Kusto as
//!   `multijson`. A Struct value is written by a `JsonConverter` with
//!   `schemas.enable=false` and otherwise default settings (so a Decimal is
//!   the base64 of its unscaled bytes, Date is days since the epoch as a
//!   number, Time and Timestamp are milliseconds as numbers; Debezium's
//!   `MicroTimestamp` is a number of µs, `ZonedTimestamp` and `Uuid` are
//!   strings, `Json` is a string holding JSON), one compact line per record
//!   ending in `\n` (`System.lineSeparator()` on Linux).
//! - **Schemaless values** (JsonConverter with `schemas.enable=false`) are
//!   Java `HashMap`s; Jackson's `ObjectMapper` writes them, so the keys come
//!   in `HashMap` iteration order (by the keys' hash codes), not in the
//!   order of the incoming JSON. Sluice reproduces that order. Numbers become Java `Long` / `Double` (`2.50` is
//!   written `2.5`, `1e3` as `1000.0`).
//! - **The writer is chosen once, by the first record** a topic-partition
//!   writer sees, and kept for later records and files
//!   (`FileWriter.initializeRecordWriter`): a map value (any format) → the
//!   JSON writer; a Struct → JSON writer for json formats, Avro writer for
//!   `avro`, otherwise a `ConnectException`; no schema or a string schema →
//!   the string writer, which writes `String.valueOf(value)` and `\n` (so a
//!   CSV row is the string value as it came, and a later Struct would be
//!   written as `Struct{…}`); a bytes schema → the raw bytes and `\n`.
//!   Sluice's encoder makes the same choice and keeps it across batches.
//! - **CSV and the other text formats** (csv, tsv, scsv, sohsv, psv, txt,
//!   tsve, raw, w3clogfile) take string values as they are. Struct values
//!   are rejected (the official connector throws "Invalid Kusto table
//!   mapping…", Sluice fails the record). Schemaless JSON objects are
//!   written as JSON lines even though CSV is announced, as the official
//!   connector does.
//! - **avro**: an Avro object container file per batch (null codec), its
//!   schema derived from the first record's Connect schema the way
//!   Confluent's `AvroData` does (records named after the Connect schema,
//!   `ConnectDefault` when unnamed; optional fields as `["null", T]` unions
//!   defaulting to null, or `[T, "null"]` when the Connect schema has a
//!   default; int8/int16 as `int`; Decimal as `bytes` with `logicalType`
//!   `decimal`, precision from `connect.decimal.precision` or 64; Date as
//!   `int`/`date`, Time as `int`/`time-millis`, Timestamp as
//!   `long`/`timestamp-millis`; maps with string keys as Avro maps, others as
//!   arrays of `MapEntry` records). A record whose schema differs from the
//!   file's first is rejected: the official writer converts it against the
//!   first schema and Connect's validation fails ("Struct schemas do not
//!   match"). The file's sync marker is random (as in Java's
//!   `DataFileWriter`), so Avro batches match in content, not byte for
//!   byte; Confluent's `connect.*` schema properties on primitive types are
//!   not kept by the Avro library and Kusto does not read them.
//!
//! # Where Sluice differs, and why
//!
//! - `apacheavro` with Struct values: the official connector only writes
//!   Avro for the format `avro` and throws for `apacheavro`; Sluice writes
//!   the same Avro file for both.
//! - Avro with values that are not Structs: the official connector writes
//!   JSON or text lines into a file announced as Avro, which Kusto cannot
//!   read; Sluice fails those records instead (they go to the dead-letter
//!   queue). Pre-encoded Avro bytes (ByteArrayConverter values, which the
//!   official connector ingests one file per record) are not supported.
//! - Values Java would print by identity (`[B@1b6d3586` for a byte array in
//!   a string or a Struct's `toString`) or that Jackson refuses (a Struct
//!   nested in a map or list, a null map key) fail the record.
//! - Sluice writes records in the order pushed. The official JSON writer
//!   buffers map values in Jackson while writing Struct values directly, so
//!   a file mixing both could come out reordered; and its size counter lags
//!   by what Jackson still buffers. [`BatchEncoder::len_bytes`] is exact.
//! - A `HashMap` bucket that grows to 9 colliding keys in a table of 64 or
//!   more slots becomes a tree in Java, which changes the order within that
//!   bucket; Sluice keeps insertion order there. Map keys whose Java hash
//!   code is not reproduced (decimals, bytes, structs, lists, maps) keep
//!   their incoming order.
//! - parquet, orc and protobuf are not produced: [`BatchEncoder::new`]
//!   names them and lists the formats Sluice writes.

use std::collections::HashMap;
use std::sync::Arc;

use apache_avro::types::Value as AvroValue;
use base64::Engine as _;
use serde_json::{json, Map as JsonMap, Value as Json};
use sluice_core::converter::{
    javafmt, value_kind, Converter, JsonConverter, JsonConverterConfig, StringConverter,
    StringEncoding, DATE_LOGICAL_NAME, DECIMAL_LOGICAL_NAME, TIMESTAMP_LOGICAL_NAME,
    TIME_LOGICAL_NAME,
};
use sluice_core::record::SinkRecord;
#[cfg(test)]
use sluice_core::schema::SchemaBuilder;
use sluice_core::schema::{Schema, SchemaRef, SchemaType};
use sluice_core::value::Value;

/// Formats whose batches are JSON lines, announced as `multijson`.
const JSON_FORMATS: &[&str] = &["json", "multijson", "singlejson"];
/// Formats whose batches are text lines (the string writer).
const TEXT_FORMATS: &[&str] = &[
    "csv",
    "tsv",
    "scsv",
    "sohsv",
    "psv",
    "txt",
    "tsve",
    "raw",
    "w3clogfile",
];
/// Formats whose batches are Avro object container files.
const AVRO_FORMATS: &[&str] = &["avro", "apacheavro"];

/// A batch, or one record of it, that could not be written in the batch's
/// format.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.describe())]
pub struct FormatError {
    /// The record the error is about: topic, partition, offset. None for
    /// errors about the format itself.
    pub record: Option<(String, i32, i64)>,
    /// The mapping's format.
    pub format: String,
    /// What was wrong.
    pub message: String,
}

impl FormatError {
    fn describe(&self) -> String {
        match &self.record {
            Some((topic, partition, offset)) => format!(
                "record of topic '{topic}' partition {partition} offset {offset} (format {}): {}",
                self.format, self.message
            ),
            None => format!("format '{}': {}", self.format, self.message),
        }
    }
}

/// Which writer the official connector picked for a topic-partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `JsonRecordWriterProvider`.
    Json,
    /// `StringRecordWriterProvider`.
    Text,
    /// `ByteRecordWriterProvider`.
    Bytes,
    /// `AvroRecordWriterProvider`.
    Avro,
}

/// The family of the mapping's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Json,
    Text,
    Avro,
}

/// The Avro file being built: its Connect schema (every record must have
/// it), the Avro schema, and the converted values.
struct AvroBatch {
    connect: SchemaRef,
    schema: apache_avro::Schema,
    /// The file header's size (magic, schema, codec, sync marker).
    header_len: usize,
    values: Vec<AvroValue>,
    datum_bytes: usize,
}

/// Accumulates one batch of records in a Kusto ingestion format, as the
/// official connector writes its file for one topic-partition.
///
/// Keep one encoder per topic-partition for as long as the partition is
/// assigned: like the official connector's `FileWriter`, it picks its
/// writer (JSON, string, bytes, Avro) from the first record it writes and
/// keeps it for every later batch.
pub struct BatchEncoder {
    format: String,
    announced: &'static str,
    family: Family,
    kind: Option<Kind>,
    json: JsonConverter,
    text: StringConverter,
    buf: Vec<u8>,
    records: usize,
    avro: Option<AvroBatch>,
}

impl std::fmt::Debug for BatchEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchEncoder")
            .field("format", &self.format)
            .field("kind", &self.kind)
            .field("records", &self.records)
            .field("len_bytes", &self.len_bytes())
            .finish()
    }
}

impl BatchEncoder {
    /// `format`: the mapping's format as written in
    /// `kusto.tables.topics.mapping` (case-insensitive): json, multijson,
    /// singlejson, csv, tsv, scsv, sohsv, psv, txt, tsve, raw, w3clogfile,
    /// avro or apacheavro. Other formats (parquet, orc, protobuf, …) are an
    /// error naming them.
    pub fn new(format: &str) -> Result<BatchEncoder, FormatError> {
        let lower = format.trim().to_ascii_lowercase();
        let lookup = |list: &[&'static str]| list.iter().copied().find(|f| *f == lower);
        let (family, announced) = if lookup(JSON_FORMATS).is_some() {
            (Family::Json, "multijson")
        } else if let Some(f) = lookup(TEXT_FORMATS) {
            (Family::Text, f)
        } else if let Some(f) = lookup(AVRO_FORMATS) {
            (Family::Avro, f)
        } else {
            let supported: Vec<&str> = JSON_FORMATS
                .iter()
                .chain(TEXT_FORMATS)
                .chain(AVRO_FORMATS)
                .copied()
                .collect();
            return Err(FormatError {
                record: None,
                format: format.to_string(),
                message: format!(
                    "Sluice cannot write this format; it writes {}",
                    supported.join(", ")
                ),
            });
        };
        Ok(BatchEncoder {
            format: lower,
            announced,
            family,
            kind: None,
            json: JsonConverter::new(JsonConverterConfig {
                schemas_enable: false,
                ..JsonConverterConfig::default()
            }),
            text: StringConverter::new(StringEncoding::Utf8),
            buf: Vec::new(),
            records: 0,
            avro: None,
        })
    }

    /// The Kusto ingestion format name to announce: `multijson` for the
    /// json formats (as the official connector does), otherwise the
    /// mapping's format in lower case.
    pub fn kusto_format(&self) -> &'static str {
        self.announced
    }

    fn record_error(&self, record: &SinkRecord, message: impl Into<String>) -> FormatError {
        FormatError {
            record: Some((record.topic.to_string(), record.partition, record.offset)),
            format: self.format.clone(),
            message: message.into(),
        }
    }

    /// Appends one record (as the worker read it with the connector's
    /// converters). Tombstones (a null value) are skipped, as the official
    /// connector skips them. On error nothing is appended and the encoder is
    /// unchanged (the caller sends the record to the errors dead-letter
    /// queue).
    pub fn push(&mut self, record: &SinkRecord) -> Result<(), FormatError> {
        let schema = record.value_schema.clone();
        let Some(value) = record.value.as_ref().filter(|v| !v.is_null()) else {
            return Ok(());
        };
        // Every map Kafka's converters produce is a java.util.HashMap.
        let value = java_hash_order(schema.as_deref(), value.clone());
        let kind = match self.kind {
            Some(k) => k,
            None => self
                .choose_kind(schema.as_deref(), &value)
                .map_err(|m| self.record_error(record, m))?,
        };
        match kind {
            Kind::Avro => self.push_avro(record, schema, &value)?,
            _ => {
                // Written in place; a failure cuts the partial line off again.
                let mut buf = std::mem::take(&mut self.buf);
                let start = buf.len();
                let written =
                    self.write_line(&mut buf, kind, &record.topic, schema.as_deref(), &value);
                if written.is_err() {
                    buf.truncate(start);
                }
                self.buf = buf;
                written.map_err(|m| self.record_error(record, m))?;
            }
        }
        self.kind = Some(kind);
        self.records += 1;
        Ok(())
    }

    /// `FileWriter.initializeRecordWriter`, with Sluice's stricter Avro.
    fn choose_kind(&self, schema: Option<&Schema>, value: &Value) -> Result<Kind, String> {
        if self.family == Family::Avro {
            return match (schema, value) {
                (Some(s), Value::Struct(_)) if s.ty == SchemaType::Struct => Ok(Kind::Avro),
                (Some(s), _) if s.ty == SchemaType::Bytes => Err(
                    "bytes values (e.g. pre-encoded Avro from ByteArrayConverter) cannot be written as an Avro batch; Sluice writes Avro from Struct values".into(),
                ),
                _ => Err(format!(
                    "a {} value cannot be written as Avro: Avro batches need Struct values with a schema (e.g. JsonConverter with schemas.enable=true)",
                    value_kind(value)
                )),
            };
        }
        if matches!(value, Value::Map(_)) {
            return Ok(Kind::Json);
        }
        match schema.map(|s| s.ty) {
            Some(SchemaType::Struct) => {
                if self.family == Family::Json {
                    Ok(Kind::Json)
                } else {
                    Err(format!(
                        "Struct values can only be written with a json or avro mapping, not {} (the official connector rejects them too: \"Invalid Kusto table mapping\")",
                        self.format
                    ))
                }
            }
            None | Some(SchemaType::String) => Ok(Kind::Text),
            Some(SchemaType::Bytes) => Ok(Kind::Bytes),
            Some(other) => Err(format!(
                "values of schema type {} are not supported; the connector writes Struct, map, string and bytes values",
                other.json_name()
            )),
        }
    }

    /// One line of the JSON, string or bytes writer.
    fn write_line(
        &self,
        out: &mut Vec<u8>,
        kind: Kind,
        topic: &str,
        schema: Option<&Schema>,
        value: &Value,
    ) -> Result<(), String> {
        match kind {
            Kind::Json => {
                if let (Value::Struct(_), Some(s)) = (value, schema) {
                    self.json
                        .write(out, topic, Some(s), Some(value))
                        .map_err(|e| e.message)?;
                } else {
                    jackson(out, schema, value)?;
                }
            }
            Kind::Text => {
                if let Value::String(s) = value {
                    out.extend_from_slice(s.as_bytes());
                } else {
                    if let Some(path) = identity_printed(schema, value) {
                        return Err(format!(
                            "the string writer would print the byte array at {path} as Java's identity hash ([B@…), which cannot be reproduced"
                        ));
                    }
                    let text = self
                        .text
                        .from_connect(topic, schema, Some(value))
                        .map_err(|e| e.message)?
                        .unwrap_or_else(|| b"null".to_vec());
                    out.extend_from_slice(&text);
                }
            }
            Kind::Bytes => match value {
                Value::Bytes(b) => out.extend_from_slice(b),
                other => {
                    return Err(format!(
                        "a {} value reached the bytes writer this partition's first record chose; the official connector fails the task here",
                        value_kind(other)
                    ))
                }
            },
            Kind::Avro => return Err("internal: Avro values are not lines".into()),
        }
        out.push(b'\n');
        Ok(())
    }

    fn push_avro(
        &mut self,
        record: &SinkRecord,
        schema: Option<SchemaRef>,
        value: &Value,
    ) -> Result<(), FormatError> {
        let Some(schema) = schema.filter(|s| s.ty == SchemaType::Struct) else {
            return Err(self.record_error(
                record,
                format!(
                    "a {} value cannot be written as Avro: Avro batches need Struct values with a schema",
                    value_kind(value)
                ),
            ));
        };
        if let Some(batch) = &self.avro {
            if !Arc::ptr_eq(&batch.connect, &schema) && *batch.connect != *schema {
                return Err(self.record_error(
                    record,
                    format!(
                        "its schema {} differs from the schema {} of the batch's first record; an Avro file has one schema (the official connector fails such records: \"Struct schemas do not match\")",
                        describe_schema(&schema),
                        describe_schema(&batch.connect)
                    ),
                ));
            }
        }
        let batch = match self.avro.take() {
            Some(b) => b,
            None => {
                let json = avro_schema_json(&schema).map_err(|m| self.record_error(record, m))?;
                let parsed = apache_avro::Schema::parse(&json).map_err(|e| {
                    self.record_error(record, format!("Avro schema {json} is not valid: {e}"))
                })?;
                // An empty writer writes just the header.
                let header_len = apache_avro::Writer::new(&parsed, Vec::new())
                    .into_inner()
                    .map(|h| h.len())
                    .map_err(|e| self.record_error(record, format!("Avro header: {e}")))?;
                AvroBatch {
                    connect: Arc::clone(&schema),
                    schema: parsed,
                    header_len,
                    values: Vec::new(),
                    datum_bytes: 0,
                }
            }
        };
        let encoded = avro_value(Some(&schema), value, &batch.schema).and_then(|datum| {
            apache_avro::to_avro_datum(&batch.schema, datum.clone())
                .map(|bytes| (datum, bytes.len()))
                .map_err(|e| format!("Avro encoding: {e}"))
        });
        match encoded {
            Ok((datum, len)) => {
                let mut batch = batch;
                batch.values.push(datum);
                batch.datum_bytes += len;
                self.avro = Some(batch);
                Ok(())
            }
            Err(m) => {
                // A batch this record would have opened is not kept.
                if !batch.values.is_empty() {
                    self.avro = Some(batch);
                }
                Err(self.record_error(record, m))
            }
        }
    }

    /// Records in the batch (tombstones are not counted: nothing is written
    /// for them).
    pub fn records(&self) -> usize {
        self.records
    }

    /// Uncompressed bytes so far. For Avro: the file header and the encoded
    /// records; the framing of the data blocks (about 20 bytes per 16 kB
    /// block) comes on top in [`BatchEncoder::finish`].
    pub fn len_bytes(&self) -> usize {
        match &self.avro {
            Some(b) => b.header_len + b.datum_bytes,
            None => self.buf.len(),
        }
    }

    /// The batch's bytes (uncompressed; empty when no record was written);
    /// leaves the encoder empty for the next batch. The writer chosen by the
    /// first record stays, as the official connector keeps it for the
    /// topic-partition.
    pub fn finish(&mut self) -> Result<Vec<u8>, FormatError> {
        self.records = 0;
        if let Some(batch) = self.avro.take() {
            let mut writer = apache_avro::Writer::new(&batch.schema, Vec::new());
            writer
                .extend_from_slice(&batch.values)
                .map_err(|e| FormatError {
                    record: None,
                    format: self.format.clone(),
                    message: format!("writing the Avro file: {e}"),
                })?;
            return writer.into_inner().map_err(|e| FormatError {
                record: None,
                format: self.format.clone(),
                message: format!("writing the Avro file: {e}"),
            });
        }
        Ok(std::mem::take(&mut self.buf))
    }
}

/// Short description of a schema for messages: its name, or its type.
fn describe_schema(s: &Schema) -> String {
    match &s.name {
        Some(n) => format!("'{n}'"),
        None => format!(
            "(unnamed {} of fields {})",
            s.ty.json_name(),
            s.fields
                .iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn logical(schema: Option<&Schema>) -> Option<&str> {
    schema.and_then(|s| s.name.as_deref())
}

// ---------------------------------------------------------------------------
// java.util.HashMap iteration order

/// `String.hashCode()`: over UTF-16 code units.
fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, u| h.wrapping_mul(31).wrapping_add(i32::from(u)))
}

/// `Long.hashCode()` (also `java.util.Date.hashCode()` of its millis).
fn java_long_hash(v: i64) -> i32 {
    (v ^ ((v as u64) >> 32) as i64) as i32
}

/// The Java `hashCode()` of the object Kafka's converter makes for a map
/// key; None where Sluice does not reproduce it.
fn java_key_hash(schema: Option<&Schema>, k: &Value) -> Option<i32> {
    Some(match k {
        Value::Null => 0,
        Value::String(s) => java_string_hash(s),
        Value::Bool(b) => {
            if *b {
                1231
            } else {
                1237
            }
        }
        Value::Int8(v) => i32::from(*v),
        Value::Int16(v) => i32::from(*v),
        Value::Int32(v) => match logical(schema) {
            Some(DATE_LOGICAL_NAME) => java_long_hash(i64::from(*v) * 86_400_000),
            Some(TIME_LOGICAL_NAME) => java_long_hash(i64::from(*v)),
            _ => *v,
        },
        Value::Int64(v) => java_long_hash(*v),
        Value::Float32(v) => {
            let bits = if v.is_nan() { 0x7fc0_0000 } else { v.to_bits() };
            bits as i32
        }
        Value::Float64(v) => {
            let bits = if v.is_nan() {
                0x7ff8_0000_0000_0000
            } else {
                v.to_bits()
            };
            java_long_hash(bits as i64)
        }
        _ => return None,
    })
}

/// Reorders every map in `v` (recursively) into the iteration order of a
/// `java.util.HashMap` filled in the map's order: by bucket
/// (`(h ^ h >>> 16) & (capacity - 1)`, capacity the smallest power of two
/// of at least 16 that holds the entries at load factor 0.75), insertion
/// order within a bucket. A repeated key keeps its first place and its last
/// value, as Jackson's tree does. Maps with a key whose hash is not
/// reproduced keep their order.
fn java_hash_order(schema: Option<&Schema>, v: Value) -> Value {
    match v {
        Value::Struct(values) => {
            let fields = schema.map(|s| s.fields.as_slice()).unwrap_or(&[]);
            Value::Struct(
                values
                    .into_iter()
                    .enumerate()
                    .map(|(i, fv)| java_hash_order(fields.get(i).map(|f| &*f.schema), fv))
                    .collect(),
            )
        }
        Value::Array(items) => {
            let item_schema = schema.and_then(|s| s.items.as_deref());
            Value::Array(
                items
                    .into_iter()
                    .map(|i| java_hash_order(item_schema, i))
                    .collect(),
            )
        }
        Value::Map(entries) => {
            let key_schema = schema.and_then(|s| s.keys.as_deref());
            let value_schema = schema.and_then(|s| s.items.as_deref());
            let mut out: Vec<(Value, Value)> = Vec::with_capacity(entries.len());
            let mut seen: HashMap<String, usize> = HashMap::new();
            for (k, val) in entries {
                let k = java_hash_order(key_schema, k);
                let val = java_hash_order(value_schema, val);
                if let Value::String(s) = &k {
                    if let Some(&i) = seen.get(s) {
                        out[i].1 = val;
                        continue;
                    }
                    seen.insert(s.clone(), out.len());
                }
                out.push((k, val));
            }
            let hashes: Option<Vec<i32>> = out
                .iter()
                .map(|(k, _)| java_key_hash(key_schema, k))
                .collect();
            let Some(hashes) = hashes else {
                return Value::Map(out);
            };
            let mut capacity: usize = 16;
            while out.len() > capacity / 4 * 3 {
                capacity *= 2;
            }
            let mask = (capacity - 1) as u32;
            let mut keyed: Vec<(u32, (Value, Value))> = hashes
                .into_iter()
                .zip(out)
                .map(|(h, e)| {
                    let h = h as u32;
                    ((h ^ (h >> 16)) & mask, e)
                })
                .collect();
            // Stable: insertion order within a bucket.
            keyed.sort_by_key(|(b, _)| *b);
            Value::Map(keyed.into_iter().map(|(_, e)| e).collect())
        }
        other => other,
    }
}

// ---------------------------------------------------------------------------
// Jackson's ObjectMapper on the Java objects Kafka's converters produce

/// Appends a JSON string with Jackson's escaping, as Kafka's JsonConverter
/// writes it.
fn jackson_str(out: &mut Vec<u8>, s: &str) {
    sluice_core::converter::write_json_string(out, s);
}

fn push_display(out: &mut Vec<u8>, v: impl std::fmt::Display) {
    out.extend_from_slice(v.to_string().as_bytes());
}

/// `ObjectMapper.writeValue` of the Java object for `v`: Long/Integer as
/// numbers, Double/Float in Java's form (non-finite quoted), byte[] as
/// base64, BigDecimal (Decimal) by `toString()`, java.util.Date (Date, Time,
/// Timestamp) as epoch milliseconds, lists and maps as arrays and objects.
fn jackson(out: &mut Vec<u8>, schema: Option<&Schema>, v: &Value) -> Result<(), String> {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Int8(x) => push_display(out, x),
        Value::Int16(x) => push_display(out, x),
        Value::Int32(x) => match logical(schema) {
            Some(DATE_LOGICAL_NAME) => push_display(out, i64::from(*x) * 86_400_000),
            _ => push_display(out, x),
        },
        Value::Int64(x) => push_display(out, x),
        Value::Float32(x) => {
            if x.is_finite() {
                javafmt::write_float(out, *x);
            } else {
                out.push(b'"');
                javafmt::write_float(out, *x);
                out.push(b'"');
            }
        }
        Value::Float64(x) => {
            if x.is_finite() {
                javafmt::write_double(out, *x);
            } else {
                out.push(b'"');
                javafmt::write_double(out, *x);
                out.push(b'"');
            }
        }
        Value::String(s) => jackson_str(out, s),
        Value::Bytes(b) => match (logical(schema), schema) {
            (Some(DECIMAL_LOGICAL_NAME), Some(s)) => {
                let scale = decimal_scale(s)?;
                javafmt::write_big_decimal(out, b, scale);
            }
            _ => {
                out.push(b'"');
                out.extend_from_slice(base64::engine::general_purpose::STANDARD.encode(b).as_bytes());
                out.push(b'"');
            }
        },
        Value::Array(items) => {
            let item_schema = schema.and_then(|s| s.items.as_deref());
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                jackson(out, item_schema, item)?;
            }
            out.push(b']');
        }
        Value::Map(entries) => {
            let key_schema = schema.and_then(|s| s.keys.as_deref());
            let value_schema = schema.and_then(|s| s.items.as_deref());
            out.push(b'{');
            for (i, (k, val)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let key = jackson_key(key_schema, k)?;
                jackson_str(out, &key);
                out.push(b':');
                jackson(out, value_schema, val)?;
            }
            out.push(b'}');
        }
        Value::Struct(_) => {
            return Err(
                "a Struct nested in a map or list cannot be written: Jackson has no serializer for Connect's Struct (the official connector fails here too)".into(),
            )
        }
    }
    Ok(())
}

/// Jackson's text for a map key (`StdKeySerializers`: `toString()` of
/// strings, numbers and booleans).
fn jackson_key(schema: Option<&Schema>, k: &Value) -> Result<String, String> {
    if matches!(
        logical(schema),
        Some(DATE_LOGICAL_NAME | TIME_LOGICAL_NAME | TIMESTAMP_LOGICAL_NAME | DECIMAL_LOGICAL_NAME)
    ) {
        return Err(
            "map keys of a logical type (Date, Time, Timestamp, Decimal) are not supported".into(),
        );
    }
    Ok(match k {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Int8(x) => x.to_string(),
        Value::Int16(x) => x.to_string(),
        Value::Int32(x) => x.to_string(),
        Value::Int64(x) => x.to_string(),
        Value::Float32(x) => javafmt::float_to_string(*x),
        Value::Float64(x) => javafmt::double_to_string(*x),
        Value::Null => return Err("a null map key cannot be written as JSON (Jackson: \"Null key for a Map not allowed in JSON\")".into()),
        other => return Err(format!("a {} map key cannot be written as JSON", value_kind(other))),
    })
}

fn decimal_scale(s: &Schema) -> Result<i32, String> {
    let text = s
        .parameter("scale")
        .ok_or_else(|| "Invalid Decimal schema: scale parameter not found".to_string())?;
    text.trim()
        .parse::<i32>()
        .map_err(|_| format!("Invalid scale parameter found in Decimal schema: '{text}'"))
}

/// Where Java's `toString()` of `v` would contain a byte array's identity
/// hash: the path of the first such value.
fn identity_printed(schema: Option<&Schema>, v: &Value) -> Option<String> {
    match v {
        Value::Bytes(_) if logical(schema) != Some(DECIMAL_LOGICAL_NAME) => {
            Some("the value".into())
        }
        Value::Array(items) => {
            let s = schema.and_then(|s| s.items.as_deref());
            items
                .iter()
                .enumerate()
                .find_map(|(i, item)| identity_printed(s, item).map(|p| format!("[{i}] of {p}")))
        }
        Value::Map(entries) => {
            let ks = schema.and_then(|s| s.keys.as_deref());
            let vs = schema.and_then(|s| s.items.as_deref());
            entries
                .iter()
                .find_map(|(k, val)| identity_printed(ks, k).or_else(|| identity_printed(vs, val)))
        }
        Value::Struct(values) => {
            let fields = schema.map(|s| s.fields.as_slice()).unwrap_or(&[]);
            fields.iter().zip(values).find_map(|(f, fv)| {
                identity_printed(Some(&f.schema), fv).map(|_| format!("field '{}'", f.name))
            })
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Avro, as Confluent's AvroData (default settings) converts Connect data

/// Names given to records so far, so a struct schema used twice (a Debezium
/// envelope's `before` and `after`) is defined once and then referenced.
#[derive(Default)]
struct AvroNames {
    defined: HashMap<String, Schema>,
    unnamed: usize,
    entries: usize,
}

/// The Avro schema (as JSON) for a Connect schema.
fn avro_schema_json(schema: &Schema) -> Result<Json, String> {
    let mut names = AvroNames::default();
    avro_type(schema, &mut names)
}

fn connect_props(s: &Schema, obj: &mut JsonMap<String, Json>) {
    if let Some(d) = &s.doc {
        obj.insert("connect.doc".into(), Json::String(d.clone()));
    }
    if let Some(v) = s.version {
        obj.insert("connect.version".into(), json!(v));
    }
    if !s.parameters.is_empty() {
        let params: JsonMap<String, Json> = s
            .parameters
            .iter()
            .map(|(k, v)| (k.clone(), Json::String(v.clone())))
            .collect();
        obj.insert("connect.parameters".into(), Json::Object(params));
    }
    if let Some(n) = &s.name {
        obj.insert("connect.name".into(), Json::String(n.clone()));
    }
}

/// The Avro type for `s`, a `["null", T]` union when optional (`[T,
/// "null"]` when it has a default).
fn avro_type(s: &Schema, names: &mut AvroNames) -> Result<Json, String> {
    let base = avro_base_type(s, names)?;
    Ok(if s.optional {
        if s.default.as_ref().is_some_and(|d| !d.is_null()) {
            json!([base, "null"])
        } else {
            json!(["null", base])
        }
    } else {
        base
    })
}

fn avro_base_type(s: &Schema, names: &mut AvroNames) -> Result<Json, String> {
    let mut obj = JsonMap::new();
    let primitive = |ty: &str, obj: &mut JsonMap<String, Json>| {
        obj.insert("type".into(), Json::String(ty.into()));
    };
    match (s.ty, s.name.as_deref()) {
        (SchemaType::Bytes, Some(DECIMAL_LOGICAL_NAME)) => {
            let scale = decimal_scale(s)?;
            let precision = match s.parameter("connect.decimal.precision") {
                Some(p) => p
                    .trim()
                    .parse::<i64>()
                    .map_err(|_| format!("Decimal precision '{p}' is not a number"))?,
                None => 64,
            };
            primitive("bytes", &mut obj);
            obj.insert("scale".into(), json!(scale));
            obj.insert("precision".into(), json!(precision));
            connect_props(s, &mut obj);
            obj.insert("logicalType".into(), json!("decimal"));
        }
        (SchemaType::Int32, Some(DATE_LOGICAL_NAME)) => {
            primitive("int", &mut obj);
            connect_props(s, &mut obj);
            obj.insert("logicalType".into(), json!("date"));
        }
        (SchemaType::Int32, Some(TIME_LOGICAL_NAME)) => {
            primitive("int", &mut obj);
            connect_props(s, &mut obj);
            obj.insert("logicalType".into(), json!("time-millis"));
        }
        (SchemaType::Int64, Some(TIMESTAMP_LOGICAL_NAME)) => {
            primitive("long", &mut obj);
            connect_props(s, &mut obj);
            obj.insert("logicalType".into(), json!("timestamp-millis"));
        }
        (SchemaType::Int8 | SchemaType::Int16, _) => {
            primitive("int", &mut obj);
            obj.insert(
                "connect.type".into(),
                json!(if s.ty == SchemaType::Int8 {
                    "int8"
                } else {
                    "int16"
                }),
            );
            connect_props(s, &mut obj);
        }
        (
            SchemaType::Int32
            | SchemaType::Int64
            | SchemaType::Float32
            | SchemaType::Float64
            | SchemaType::Boolean
            | SchemaType::String
            | SchemaType::Bytes,
            _,
        ) => {
            let ty = match s.ty {
                SchemaType::Int32 => "int",
                SchemaType::Int64 => "long",
                SchemaType::Float32 => "float",
                SchemaType::Float64 => "double",
                SchemaType::Boolean => "boolean",
                SchemaType::String => "string",
                _ => "bytes",
            };
            if s.name.is_none() && s.version.is_none() && s.doc.is_none() && s.parameters.is_empty()
            {
                return Ok(Json::String(ty.into()));
            }
            primitive(ty, &mut obj);
            connect_props(s, &mut obj);
        }
        (SchemaType::Array, _) => {
            let items = s
                .items
                .as_deref()
                .ok_or_else(|| "array schema without an element schema".to_string())?;
            primitive("array", &mut obj);
            obj.insert("items".into(), avro_type(items, names)?);
            connect_props(s, &mut obj);
        }
        (SchemaType::Map, _) => {
            let (Some(keys), Some(values)) = (s.keys.as_deref(), s.items.as_deref()) else {
                return Err("map schema without key or value schema".into());
            };
            if keys.ty == SchemaType::String && !keys.optional {
                primitive("map", &mut obj);
                obj.insert("values".into(), avro_type(values, names)?);
                connect_props(s, &mut obj);
            } else {
                names.entries += 1;
                let name = if names.entries == 1 {
                    "MapEntry".to_string()
                } else {
                    format!("MapEntry{}", names.entries)
                };
                let entry = json!({
                    "type": "record",
                    "name": name,
                    "namespace": "io.confluent.connect.avro",
                    "fields": [
                        {"name": "key", "type": avro_type(keys, names)?},
                        {"name": "value", "type": avro_type(values, names)?},
                    ],
                });
                primitive("array", &mut obj);
                obj.insert("items".into(), entry);
                connect_props(s, &mut obj);
            }
        }
        (SchemaType::Struct, _) => {
            let full = match &s.name {
                Some(n) => n.clone(),
                None => {
                    names.unnamed += 1;
                    if names.unnamed == 1 {
                        "io.confluent.connect.avro.ConnectDefault".to_string()
                    } else {
                        format!("io.confluent.connect.avro.ConnectDefault{}", names.unnamed)
                    }
                }
            };
            // The field's optional flag is the union around the record, not
            // part of the record.
            let mut bare = s.clone();
            bare.optional = false;
            bare.default = None;
            if let Some(prev) = names.defined.get(&full) {
                if *prev == bare {
                    return Ok(Json::String(full));
                }
                return Err(format!(
                    "two different struct schemas are named '{full}'; an Avro schema cannot define a name twice"
                ));
            }
            names.defined.insert(full.clone(), bare);
            let (namespace, name) = match full.rfind('.') {
                Some(i) => (Some(&full[..i]), &full[i + 1..]),
                None => (None, full.as_str()),
            };
            obj.insert("type".into(), json!("record"));
            obj.insert("name".into(), json!(name));
            if let Some(ns) = namespace {
                obj.insert("namespace".into(), json!(ns));
            }
            let mut fields = Vec::with_capacity(s.fields.len());
            for f in &s.fields {
                let mut field = JsonMap::new();
                field.insert("name".into(), json!(f.name));
                field.insert("type".into(), avro_type(&f.schema, names)?);
                match f.schema.default.as_ref().filter(|d| !d.is_null()) {
                    Some(d) => {
                        field.insert("default".into(), avro_default(&f.schema, d)?);
                    }
                    None if f.schema.optional => {
                        field.insert("default".into(), Json::Null);
                    }
                    None => {}
                }
                fields.push(Json::Object(field));
            }
            obj.insert("fields".into(), Json::Array(fields));
            if let Some(d) = &s.doc {
                obj.insert("connect.doc".into(), json!(d));
            }
            if let Some(v) = s.version {
                obj.insert("connect.version".into(), json!(v));
            }
            if s.name.is_some() {
                obj.insert("connect.name".into(), json!(full));
            }
        }
    }
    Ok(Json::Object(obj))
}

/// A Connect default as an Avro default (JSON).
fn avro_default(s: &Schema, d: &Value) -> Result<Json, String> {
    Ok(match d {
        Value::Null => Json::Null,
        Value::Bool(b) => json!(b),
        Value::Int8(x) => json!(x),
        Value::Int16(x) => json!(x),
        Value::Int32(x) => json!(x),
        Value::Int64(x) => json!(x),
        Value::Float32(x) => json!(x),
        Value::Float64(x) => json!(x),
        Value::String(x) => json!(x),
        // Avro writes bytes defaults as ISO-8859-1 strings.
        Value::Bytes(b) => Json::String(b.iter().map(|&c| char::from(c)).collect()),
        Value::Array(items) => {
            let is = s.items.as_deref();
            Json::Array(
                items
                    .iter()
                    .map(|i| match is {
                        Some(is) => avro_default(is, i),
                        None => Err("array default without an element schema".into()),
                    })
                    .collect::<Result<_, String>>()?,
            )
        }
        Value::Map(entries) => {
            let vs = s.items.as_deref();
            let mut m = JsonMap::new();
            for (k, v) in entries {
                let (Value::String(k), Some(vs)) = (k, vs) else {
                    return Err("only defaults of maps with string keys are supported".into());
                };
                m.insert(k.clone(), avro_default(vs, v)?);
            }
            Json::Object(m)
        }
        Value::Struct(values) => {
            let mut m = JsonMap::new();
            for (f, v) in s.fields.iter().zip(values) {
                m.insert(f.name.clone(), avro_default(&f.schema, v)?);
            }
            Json::Object(m)
        }
    })
}

/// Finds a named type in the parsed schema's definitions (for references).
fn resolve<'a>(
    avro: &'a apache_avro::Schema,
    names: &'a HashMap<String, &'a apache_avro::Schema>,
) -> &'a apache_avro::Schema {
    if let apache_avro::Schema::Ref { name } = avro {
        if let Some(s) = names.get(&name.fullname(None)) {
            return s;
        }
    }
    avro
}

fn collect_names<'a>(
    avro: &'a apache_avro::Schema,
    names: &mut HashMap<String, &'a apache_avro::Schema>,
) {
    use apache_avro::Schema as A;
    match avro {
        A::Record(r) => {
            names.insert(r.name.fullname(None), avro);
            for f in &r.fields {
                collect_names(&f.schema, names);
            }
        }
        A::Union(u) => u.variants().iter().for_each(|v| collect_names(v, names)),
        A::Array(a) => collect_names(&a.items, names),
        A::Map(m) => collect_names(&m.types, names),
        _ => {}
    }
}

/// The Avro value for a Connect value, shaped by the parsed Avro schema
/// (union branches, record fields).
fn avro_value(
    schema: Option<&Schema>,
    v: &Value,
    avro: &apache_avro::Schema,
) -> Result<AvroValue, String> {
    let mut names = HashMap::new();
    collect_names(avro, &mut names);
    avro_value_in(schema, v, avro, &names, "")
}

fn avro_value_in(
    schema: Option<&Schema>,
    v: &Value,
    avro: &apache_avro::Schema,
    names: &HashMap<String, &apache_avro::Schema>,
    path: &str,
) -> Result<AvroValue, String> {
    use apache_avro::Schema as A;
    let Some(s) = schema else {
        return Err(format!(
            "{path}: a value without a schema cannot be written as Avro"
        ));
    };
    let avro = resolve(avro, names);
    // Null takes the field's default, as Confluent's AvroData does.
    let v = if v.is_null() {
        s.default.as_ref().unwrap_or(v)
    } else {
        v
    };
    if let A::Union(u) = avro {
        let variants = u.variants();
        let null_index = variants.iter().position(|x| matches!(x, A::Null));
        if v.is_null() {
            let Some(i) = null_index else {
                return Err(format!("{path}: null for a required field"));
            };
            return Ok(AvroValue::Union(i as u32, Box::new(AvroValue::Null)));
        }
        let Some(i) = variants.iter().position(|x| !matches!(x, A::Null)) else {
            return Err(format!("{path}: union without a non-null branch"));
        };
        let inner = avro_value_in(Some(s), v, &variants[i], names, path)?;
        return Ok(AvroValue::Union(i as u32, Box::new(inner)));
    }
    let mismatch = || {
        format!(
            "{}: a {} value does not fit its {} schema",
            if path.is_empty() { "value" } else { path },
            value_kind(v),
            s.ty.json_name()
        )
    };
    Ok(match (v, avro) {
        (Value::Null, _) => {
            return Err(format!(
                "{}: null for a required field",
                if path.is_empty() { "value" } else { path }
            ))
        }
        (Value::Bool(b), _) => AvroValue::Boolean(*b),
        (Value::Int8(x), _) => AvroValue::Int(i32::from(*x)),
        (Value::Int16(x), _) => AvroValue::Int(i32::from(*x)),
        (Value::Int32(x), A::Date) => AvroValue::Date(*x),
        (Value::Int32(x), A::TimeMillis) => AvroValue::TimeMillis(*x),
        (Value::Int32(x), _) => AvroValue::Int(*x),
        (Value::Int64(x), A::TimestampMillis) => AvroValue::TimestampMillis(*x),
        (Value::Int64(x), _) => AvroValue::Long(*x),
        (Value::Float32(x), _) => AvroValue::Float(*x),
        (Value::Float64(x), _) => AvroValue::Double(*x),
        (Value::String(x), _) => AvroValue::String(x.clone()),
        (Value::Bytes(b), A::Decimal(_)) => AvroValue::Decimal(apache_avro::Decimal::from(b)),
        (Value::Bytes(b), _) => AvroValue::Bytes(b.clone()),
        (Value::Array(items), A::Array(a)) => {
            let is = s.items.as_deref();
            AvroValue::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        avro_value_in(is, item, &a.items, names, &format!("{path}[{i}]"))
                    })
                    .collect::<Result<_, _>>()?,
            )
        }
        (Value::Map(entries), A::Map(m)) => {
            let vs = s.items.as_deref();
            let mut out = HashMap::with_capacity(entries.len());
            for (k, val) in entries {
                let Value::String(k) = k else {
                    return Err(mismatch());
                };
                out.insert(
                    k.clone(),
                    avro_value_in(vs, val, &m.types, names, &format!("{path}.{k}"))?,
                );
            }
            AvroValue::Map(out)
        }
        (Value::Map(entries), A::Array(a)) => {
            let entry_schema = resolve(&a.items, names);
            let A::Record(r) = entry_schema else {
                return Err(mismatch());
            };
            let (Some(kf), Some(vf)) = (r.fields.first(), r.fields.get(1)) else {
                return Err(mismatch());
            };
            let mut out = Vec::with_capacity(entries.len());
            for (i, (k, val)) in entries.iter().enumerate() {
                out.push(AvroValue::Record(vec![
                    (
                        "key".into(),
                        avro_value_in(
                            s.keys.as_deref(),
                            k,
                            &kf.schema,
                            names,
                            &format!("{path}[{i}].key"),
                        )?,
                    ),
                    (
                        "value".into(),
                        avro_value_in(
                            s.items.as_deref(),
                            val,
                            &vf.schema,
                            names,
                            &format!("{path}[{i}].value"),
                        )?,
                    ),
                ]));
            }
            AvroValue::Array(out)
        }
        (Value::Struct(values), A::Record(r)) => {
            if values.len() != s.fields.len() || r.fields.len() != s.fields.len() {
                return Err(format!(
                    "{}: struct value has {} fields but its schema has {}",
                    if path.is_empty() { "value" } else { path },
                    values.len(),
                    s.fields.len()
                ));
            }
            let mut out = Vec::with_capacity(values.len());
            for ((f, fv), af) in s.fields.iter().zip(values).zip(&r.fields) {
                let p = if path.is_empty() {
                    f.name.clone()
                } else {
                    format!("{path}.{}", f.name)
                };
                out.push((
                    f.name.clone(),
                    avro_value_in(Some(&f.schema), fv, &af.schema, names, &p)?,
                ));
            }
            AvroValue::Record(out)
        }
        _ => return Err(mismatch()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys_in_java_order(keys: &[Value]) -> Vec<Value> {
        let map = Value::Map(keys.iter().map(|k| (k.clone(), Value::Null)).collect());
        match java_hash_order(None, map) {
            Value::Map(entries) => entries.into_iter().map(|(k, _)| k).collect(),
            other => panic!("{other:?}"),
        }
    }

    fn strings(keys: &[&str]) -> Vec<Value> {
        keys.iter().map(|k| Value::String((*k).into())).collect()
    }

    // Expected orders printed by `new HashMap<>()` filled in the same order
    // on a JVM (OpenJDK 17).
    #[test]
    fn string_keys_follow_java_hashmap() {
        assert_eq!(
            keys_in_java_order(&strings(&[
                "orderid",
                "custid",
                "amount",
                "city",
                "purchase_time"
            ])),
            strings(&["amount", "orderid", "city", "custid", "purchase_time"])
        );
        assert_eq!(
            keys_in_java_order(&strings(&[
                "before",
                "after",
                "source",
                "op",
                "ts_ms",
                "transaction",
                "ts_us",
                "ts_ns"
            ])),
            strings(&[
                "op",
                "before",
                "ts_us",
                "after",
                "source",
                "ts_ns",
                "ts_ms",
                "transaction"
            ])
        );
        // Colliding hashes keep insertion order; UTF-16 hashing of non-ASCII.
        assert_eq!(
            keys_in_java_order(&strings(&[
                "BB", "Aa", "z", "AaAa", "BBBB", "AaBB", "BBAa", "é", "日本", "😀"
            ])),
            strings(&["BB", "Aa", "😀", "é", "z", "日本", "AaAa", "BBBB", "AaBB", "BBAa"])
        );
    }

    #[test]
    fn tables_grow_as_java_resizes_them() {
        let keys: Vec<String> = (0..30).map(|i| format!("field_{i}")).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let expected: Vec<String> = [
            0, 20, 3, 21, 4, 22, 1, 23, 2, 24, 25, 26, 27, 28, 29, 7, 8, 5, 6, 9, 10, 11, 12, 13,
            14, 15, 16, 17, 18, 19,
        ]
        .iter()
        .map(|i| format!("field_{i}"))
        .collect();
        let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
        assert_eq!(keys_in_java_order(&strings(&refs)), strings(&expected));
    }

    #[test]
    fn other_key_types_hash_as_java_boxes() {
        assert_eq!(
            keys_in_java_order(&[
                Value::Int64(3),
                Value::Int64(-1),
                Value::Int64(100_000_000_000),
                Value::Int64(17)
            ]),
            [
                Value::Int64(-1),
                Value::Int64(100_000_000_000),
                Value::Int64(17),
                Value::Int64(3)
            ]
        );
        assert_eq!(
            keys_in_java_order(&[
                Value::Bool(true),
                Value::Bool(false),
                Value::Float64(1.5),
                Value::Float64(-0.0),
                Value::Null
            ]),
            [
                Value::Float64(-0.0),
                Value::Null,
                Value::Bool(false),
                Value::Float64(1.5),
                Value::Bool(true)
            ]
        );
    }

    #[test]
    fn repeated_keys_keep_their_first_place_and_last_value() {
        let map = Value::Map(vec![
            (Value::String("b".into()), Value::Int64(1)),
            (Value::String("a".into()), Value::Int64(2)),
            (Value::String("b".into()), Value::Int64(3)),
        ]);
        assert_eq!(
            java_hash_order(None, map),
            Value::Map(vec![
                (Value::String("a".into()), Value::Int64(2)),
                (Value::String("b".into()), Value::Int64(3)),
            ])
        );
    }

    #[test]
    fn maps_inside_structs_and_lists_are_reordered() {
        let map_schema = SchemaBuilder::map(
            sluice_core::schema::prim::string(),
            sluice_core::schema::prim::int64(),
        )
        .build();
        let schema = SchemaBuilder::structure()
            .field("m", SchemaBuilder::array(map_schema).build())
            .build();
        let inner = Value::Map(vec![
            (Value::String("z".into()), Value::Int64(1)),
            (Value::String("y".into()), Value::Int64(2)),
        ]);
        let v = Value::Struct(vec![Value::Array(vec![inner])]);
        assert_eq!(
            java_hash_order(Some(&schema), v),
            Value::Struct(vec![Value::Array(vec![Value::Map(vec![
                (Value::String("y".into()), Value::Int64(2)),
                (Value::String("z".into()), Value::Int64(1)),
            ])])])
        );
    }

    #[test]
    fn jackson_writes_java_objects() {
        let decimal = SchemaBuilder::new(SchemaType::Bytes)
            .name(DECIMAL_LOGICAL_NAME)
            .parameter("scale", "2")
            .build();
        let date = SchemaBuilder::new(SchemaType::Int32)
            .name(DATE_LOGICAL_NAME)
            .build();
        let mut out = Vec::new();
        jackson(&mut out, Some(&decimal), &Value::Bytes(vec![0x30, 0x39])).unwrap();
        out.push(b' ');
        jackson(&mut out, Some(&date), &Value::Int32(1)).unwrap();
        out.push(b' ');
        jackson(&mut out, None, &Value::Bytes(vec![1, 2, 3])).unwrap();
        out.push(b' ');
        jackson(&mut out, None, &Value::Float64(f64::NAN)).unwrap();
        out.push(b' ');
        jackson(&mut out, None, &Value::String("\"\\\u{7f}é".into())).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "123.45 86400000 \"AQID\" \"NaN\" \"\\\"\\\\\u{7f}é\""
        );
        let mut out = Vec::new();
        let null_key = Value::Map(vec![(Value::Null, Value::Int64(1))]);
        assert!(jackson(&mut out, None, &null_key).is_err());
        let nested = Value::Array(vec![Value::Struct(vec![])]);
        assert!(jackson(&mut out, None, &nested).is_err());
    }
}
