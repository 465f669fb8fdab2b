//! How the local transport writes records into log frames: each record in
//! Sluice's binary form ([`sluice_core::binary`]), its schemas named by ids
//! that a [`SchemaRegistry`] keeps, once each, next to the log.
//!
//! ```text
//! record: [flags: u8 (1 key, 2 value, 4 key schema only, 8 value schema only)]
//!         [timestamp ms: zigzag]
//!         [key schema id: varint (0: none)][key value]      if flag 1
//!         [key schema id: varint]                           if flag 4
//!         [value schema id: varint (0: none)][value]        if flag 2
//!         [value schema id: varint]                         if flag 8
//!
//! A null key or value may still have a schema (Debezium 3's
//! ExtractNewRecordState turns a delete into a null value with the row's
//! schema, which JsonConverter writes as `{"schema":...,"payload":null}`):
//! flags 4 and 8 keep it.
//!         [header count: varint]([key: bytes][value: varint len+1 (0: null)][bytes])*
//! ```

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use anyhow::Context as _;
use sluice_core::binary::{self, put_varint, put_zigzag, Reader};
use sluice_core::record::{Header, SinkRecord};
use sluice_core::schema::{Schema, SchemaRef};
use sluice_core::value::Value;
use sluice_log::frame;

/// Schemas by id, kept in a file of checksummed frames (one per schema,
/// synced before any record names it).
pub struct SchemaRegistry {
    path: PathBuf,
    write: Mutex<RegistryFile>,
    by_id: RwLock<Vec<SchemaRef>>,
}

struct RegistryFile {
    file: File,
    len: u64,
    by_bytes: HashMap<Vec<u8>, u32>,
}

impl std::fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaRegistry")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SchemaRegistry {
    /// Opens (or creates) the registry file, cutting a torn last entry.
    pub fn open(path: &Path) -> anyhow::Result<SchemaRegistry> {
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("opening the schema registry {}", path.display()))?;
        let file_len = file
            .metadata()
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        let mut reader = file
            .try_clone()
            .with_context(|| format!("opening {}", path.display()))?;
        let mut by_id: Vec<SchemaRef> = Vec::new();
        let mut by_bytes = HashMap::new();
        let mut pos = 0u64;
        let mut body = Vec::new();
        while let Some(info) = frame::read_at(&mut reader, pos, file_len, true, Some(&mut body))
            .with_context(|| format!("reading {}", path.display()))?
        {
            let id = by_id.len() as u32 + 1;
            if info.base_offset != i64::from(id) {
                break;
            }
            let bytes = body[frame::BODY_PREFIX..].to_vec();
            let schema = binary::decode_schema(&mut Reader::new(&bytes))
                .with_context(|| format!("schema {id} in {}", path.display()))?;
            by_id.push(schema);
            by_bytes.insert(bytes, id);
            pos += info.len;
        }
        if pos < file_len {
            file.set_len(pos)
                .and_then(|()| file.sync_all())
                .with_context(|| format!("cutting a torn entry of {}", path.display()))?;
        }
        Ok(SchemaRegistry {
            path: path.to_path_buf(),
            write: Mutex::new(RegistryFile {
                file,
                len: pos,
                by_bytes,
            }),
            by_id: RwLock::new(by_id),
        })
    }

    /// The id of `schema`, registering it (durably) when new.
    pub fn id_of(&self, schema: &Schema) -> anyhow::Result<u32> {
        let mut bytes = Vec::with_capacity(256);
        binary::encode_schema(&mut bytes, schema);
        let mut w = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(&id) = w.by_bytes.get(&bytes) {
            return Ok(id);
        }
        let id = {
            let by_id = self.by_id.read().unwrap_or_else(PoisonError::into_inner);
            by_id.len() as u32 + 1
        };
        let mut framed = Vec::with_capacity(bytes.len() + 20);
        frame::encode(&mut framed, i64::from(id), 1, &bytes);
        let at = w.len;
        w.file
            .write_all_at(&framed, at)
            .and_then(|()| w.file.sync_data())
            .with_context(|| format!("writing schema {id} to {}", self.path.display()))?;
        w.len += framed.len() as u64;
        let decoded = binary::decode_schema(&mut Reader::new(&bytes))
            .context("reading back a schema just encoded")?;
        self.by_id
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(decoded);
        w.by_bytes.insert(bytes, id);
        Ok(id)
    }

    /// The schema with id `id`.
    pub fn get(&self, id: u32) -> Option<SchemaRef> {
        let by_id = self.by_id.read().unwrap_or_else(PoisonError::into_inner);
        by_id.get((id as usize).checked_sub(1)?).cloned()
    }
}

/// Encodes records for one producer, remembering the ids of the schemas it
/// saw (by identity: sources share one schema per table).
pub struct Encoder {
    registry: Arc<SchemaRegistry>,
    // The schema is kept so its address stays its own.
    ids: HashMap<usize, (SchemaRef, u32)>,
}

impl Encoder {
    /// An encoder over `registry`.
    pub fn new(registry: Arc<SchemaRegistry>) -> Self {
        Encoder {
            registry,
            ids: HashMap::new(),
        }
    }

    fn schema_id(&mut self, schema: Option<&SchemaRef>) -> anyhow::Result<u32> {
        let Some(s) = schema else { return Ok(0) };
        let ptr = Arc::as_ptr(s) as usize;
        if let Some((_, id)) = self.ids.get(&ptr) {
            return Ok(*id);
        }
        let id = self.registry.id_of(s)?;
        // Bounded: a source that made a new schema object per record would
        // otherwise grow this without end.
        if self.ids.len() >= 4096 {
            self.ids.clear();
        }
        self.ids.insert(ptr, (Arc::clone(s), id));
        Ok(id)
    }

    /// Appends one record.
    #[allow(clippy::too_many_arguments)]
    pub fn encode(
        &mut self,
        out: &mut Vec<u8>,
        timestamp_ms: i64,
        key_schema: Option<&SchemaRef>,
        key: Option<&Value>,
        value_schema: Option<&SchemaRef>,
        value: Option<&Value>,
        headers: &[Header],
    ) -> anyhow::Result<()> {
        let key_schema_only = key.is_none() && key_schema.is_some();
        let value_schema_only = value.is_none() && value_schema.is_some();
        let flags = u8::from(key.is_some())
            | (u8::from(value.is_some()) << 1)
            | (u8::from(key_schema_only) << 2)
            | (u8::from(value_schema_only) << 3);
        out.push(flags);
        put_zigzag(out, timestamp_ms);
        if let Some(k) = key {
            put_varint(out, u64::from(self.schema_id(key_schema)?));
            binary::encode_value(out, k);
        } else if key_schema_only {
            put_varint(out, u64::from(self.schema_id(key_schema)?));
        }
        if let Some(v) = value {
            put_varint(out, u64::from(self.schema_id(value_schema)?));
            binary::encode_value(out, v);
        } else if value_schema_only {
            put_varint(out, u64::from(self.schema_id(value_schema)?));
        }
        put_varint(out, headers.len() as u64);
        for h in headers {
            binary::put_bytes(out, h.key.as_bytes());
            match &h.value {
                None => put_varint(out, 0),
                Some(v) => {
                    put_varint(out, v.len() as u64 + 1);
                    out.extend_from_slice(v);
                }
            }
        }
        Ok(())
    }
}

/// Decodes records, remembering the schemas it looked up.
pub struct Decoder {
    registry: Arc<SchemaRegistry>,
    cache: HashMap<u32, SchemaRef>,
}

impl Decoder {
    /// A decoder over `registry`.
    pub fn new(registry: Arc<SchemaRegistry>) -> Self {
        Decoder {
            registry,
            cache: HashMap::new(),
        }
    }

    fn schema(&mut self, id: u64) -> anyhow::Result<Option<SchemaRef>> {
        if id == 0 {
            return Ok(None);
        }
        let id = u32::try_from(id).context("schema id out of range")?;
        if let Some(s) = self.cache.get(&id) {
            return Ok(Some(Arc::clone(s)));
        }
        let s = self.registry.get(id).with_context(|| {
            format!(
                "schema {id} is not in the schema registry {}",
                self.registry.path.display()
            )
        })?;
        self.cache.insert(id, Arc::clone(&s));
        Ok(Some(s))
    }

    /// Decodes the records of `frame`, read from `topic` `partition`,
    /// keeping those from its `skip` on.
    pub fn decode(
        &mut self,
        topic: &Arc<str>,
        partition: i32,
        frame: &sluice_log::Frame,
        out: &mut Vec<SinkRecord>,
    ) -> anyhow::Result<()> {
        let (base_offset, count, skip) = (frame.base_offset, frame.count, frame.skip);
        let mut r = Reader::new(&frame.payload);
        for i in 0..count {
            let flags = r.u8()?;
            let timestamp_ms = r.zigzag()?;
            let (key_schema, key) = if flags & 1 != 0 {
                let s = self.schema(r.varint()?)?;
                (s, Some(binary::decode_value(&mut r)?))
            } else if flags & 4 != 0 {
                (self.schema(r.varint()?)?, None)
            } else {
                (None, None)
            };
            let (value_schema, value) = if flags & 2 != 0 {
                let s = self.schema(r.varint()?)?;
                (s, Some(binary::decode_value(&mut r)?))
            } else if flags & 8 != 0 {
                (self.schema(r.varint()?)?, None)
            } else {
                (None, None)
            };
            let n = r.varint()?;
            let mut headers = Vec::with_capacity(n.min(64) as usize);
            for _ in 0..n {
                let key = r.str()?.to_owned();
                let len = r.varint()?;
                let value = match len {
                    0 => None,
                    n => Some(
                        r.take(usize::try_from(n - 1).context("header length")?)?
                            .to_vec(),
                    ),
                };
                headers.push(Header { key, value });
            }
            if i < skip {
                continue;
            }
            out.push(SinkRecord {
                topic: Arc::clone(topic),
                partition,
                offset: base_offset + i64::from(i),
                timestamp_ms,
                key_schema,
                key,
                value_schema,
                value,
                headers,
            });
        }
        if !r.is_empty() {
            anyhow::bail!(
                "{} bytes after the {count} records of the frame at offset {base_offset}",
                r.rest().len()
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::schema::{prim, SchemaBuilder};

    #[test]
    fn records_round_trip_with_schemas_registered_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("schemas");
        let registry = Arc::new(SchemaRegistry::open(&path).expect("open"));
        let key_schema = SchemaBuilder::structure()
            .name("k")
            .field("id", prim::int64())
            .build();
        let value_schema = SchemaBuilder::structure()
            .name("v")
            .optional()
            .field("id", prim::int64())
            .field("city", prim::opt_string())
            .build();
        let mut enc = Encoder::new(Arc::clone(&registry));
        let mut payload = Vec::new();
        for i in 0..3 {
            enc.encode(
                &mut payload,
                1000 + i,
                Some(&key_schema),
                Some(&Value::Struct(vec![Value::Int64(i)])),
                Some(&value_schema),
                (i != 1).then_some(&Value::Struct(vec![Value::Int64(i), Value::Null])),
                &[Header {
                    key: "h".into(),
                    value: (i == 2).then(|| b"x".to_vec()),
                }],
            )
            .expect("encode");
        }
        // A structurally equal schema made apart gets the same id.
        let again = Arc::new((*key_schema).clone());
        assert_eq!(registry.id_of(&again).expect("id"), 1);
        drop(enc);
        drop(registry);
        let registry = Arc::new(SchemaRegistry::open(&path).expect("reopen"));
        let mut dec = Decoder::new(registry);
        let mut out = Vec::new();
        let frame = |payload: &[u8], base_offset, skip| sluice_log::Frame {
            base_offset,
            count: 3,
            skip,
            payload: payload.to_vec(),
        };
        dec.decode(&Arc::from("t"), 0, &frame(&payload, 40, 1), &mut out)
            .expect("decode");
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].offset, 41);
        assert!(out[0].value.is_none(), "a null value");
        assert_eq!(
            out[0].value_schema.as_deref(),
            Some(&*value_schema),
            "a null value keeps its schema"
        );
        assert_eq!(out[1].timestamp_ms, 1002);
        assert_eq!(out[1].key_schema.as_deref(), Some(&*key_schema));
        assert_eq!(out[1].value_schema.as_deref(), Some(&*value_schema));
        assert_eq!(
            out[1].value,
            Some(Value::Struct(vec![Value::Int64(2), Value::Null]))
        );
        assert_eq!(out[1].headers[0].value.as_deref(), Some(&b"x"[..]));
        // Truncated payloads are errors, not panics.
        for cut in 0..payload.len() {
            let mut o = Vec::new();
            assert!(dec
                .decode(&Arc::from("t"), 0, &frame(&payload[..cut], 0, 0), &mut o)
                .is_err());
        }
    }
}
