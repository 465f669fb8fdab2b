//! The in-memory model of an Azure Data Explorer cluster that the local
//! engine and data-management stand-ins share: databases, tables with typed
//! columns, JSON ingestion mappings, the streaming ingestion policy, and
//! extents carrying their tags (so `ingest-by:` deduplication works as in
//! Kusto).
//!
//! Ingestion parses the data the way Kusto does for the formats the sink
//! sends: `json`/`multijson` (JSON objects one after another, or arrays of
//! them) through a JSON mapping's `$` paths or by property name, and `csv`
//! (RFC 4180, columns in table order). Values are converted to the column
//! types, and a value that does not fit fails the whole ingestion with an
//! error naming the column, as Kusto fails the whole blob or request.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Map, Value};

/// Kusto's column types, as written in `.create table` and `cslschema`.
pub const KUSTO_TYPES: &[&str] = &[
    "string", "int", "long", "real", "decimal", "bool", "datetime", "dynamic", "guid", "timespan",
];

/// The canonical name of a Kusto type, accepting the aliases Kusto does
/// (`int32`, `int64`, `double`, `boolean`, `date`, `time`, `uuid`,
/// `uniqueid`, `System.String`...).
pub fn canonical_type(t: &str) -> Option<&'static str> {
    let t = t.trim().to_ascii_lowercase();
    let t = t.strip_prefix("system.").unwrap_or(&t);
    Some(match t {
        "string" => "string",
        "int" | "int32" => "int",
        "long" | "int64" => "long",
        "real" | "double" => "real",
        "decimal" | "sqldecimal" => "decimal",
        "bool" | "boolean" | "sbyte" => "bool",
        "datetime" | "date" => "datetime",
        "dynamic" | "object" => "dynamic",
        "guid" | "uuid" | "uniqueid" => "guid",
        "timespan" | "time" => "timespan",
        _ => return None,
    })
}

/// The .NET type name Kusto reports for a column type (`DataType` in v1
/// responses).
pub fn dotnet_type(t: &str) -> &'static str {
    match t {
        "string" => "System.String",
        "int" => "System.Int32",
        "long" => "System.Int64",
        "real" => "System.Double",
        "decimal" => "System.Data.SqlTypes.SqlDecimal",
        "bool" => "System.SByte",
        "datetime" => "System.DateTime",
        "dynamic" => "System.Object",
        "guid" => "System.Guid",
        "timespan" => "System.TimeSpan",
        _ => "System.Object",
    }
}

/// Where an ingestion goes and how the data is read.
#[derive(Debug, Clone, Default)]
pub struct IngestInto {
    /// Database.
    pub db: String,
    /// Table.
    pub table: String,
    /// The Kusto format name (`json`, `multijson`, `csv`, `avro`...).
    pub format: String,
    /// A pre-created ingestion mapping's name.
    pub mapping: Option<String>,
    /// Tags for the new extent (e.g. `ingest-by:x`, `drop-by:y`).
    pub tags: Vec<String>,
    /// Skip the ingestion when an extent already carries `ingest-by:<value>`
    /// for one of these values.
    pub ingest_if_not_exists: Vec<String>,
}

/// What an ingestion did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    /// A new extent with this many rows.
    Ingested {
        /// Rows added.
        rows: usize,
    },
    /// Nothing: an extent already has one of `ingest_if_not_exists` as an
    /// `ingest-by:` tag.
    Skipped,
}

#[derive(Clone)]
struct MappingColumn {
    column: String,
    /// `$`-path segments; None with a constant value.
    path: Option<Vec<PathSeg>>,
    constant: Option<Value>,
}

#[derive(Clone)]
enum PathSeg {
    Key(String),
    Index(usize),
}

#[derive(Clone)]
struct Mapping {
    raw: String,
    columns: Vec<MappingColumn>,
}

#[derive(Clone, Default)]
struct Table {
    columns: Vec<(String, String)>,
    json_mappings: BTreeMap<String, Mapping>,
    extents: Vec<Extent>,
    /// None: the table has no policy of its own and follows the database.
    streaming: Option<bool>,
}

#[derive(Clone, Default)]
struct Extent {
    id: String,
    tags: Vec<String>,
    rows: Vec<Map<String, Value>>,
}

/// One extent as `.show table T extents` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtentInfo {
    /// The extent's id (a GUID).
    pub id: String,
    /// Its tags, in the order given at ingestion.
    pub tags: Vec<String>,
    /// How many rows it holds.
    pub rows: usize,
}

#[derive(Default)]
struct Database {
    tables: BTreeMap<String, Table>,
    streaming: bool,
}

#[derive(Default)]
struct State {
    dbs: BTreeMap<String, Database>,
    /// Extents made so far: the next extent's id derives from it.
    extents_made: u64,
    /// (principal, database) pairs refused access.
    denied: BTreeSet<(String, String)>,
}

/// The shared model; cloning shares it.
#[derive(Clone, Default)]
pub struct Store {
    inner: Arc<Mutex<State>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

fn db_not_found(db: &str) -> String {
    format!("Entity ID '{db}' of kind 'Database' was not found")
}

fn table_not_found(db: &str, table: &str) -> String {
    format!("Entity ID '{table}' of kind 'Table' was not found in database '{db}'")
}

impl Store {
    /// An empty cluster.
    pub fn new() -> Store {
        Store::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock leaves consistent data
        // behind (every change is made in one step), so keep using it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates a database (streaming ingestion enabled) unless it exists.
    pub fn create_database(&self, db: &str) {
        self.state()
            .dbs
            .entry(db.to_owned())
            .or_insert_with(|| Database {
                tables: BTreeMap::new(),
                streaming: true,
            });
    }

    /// Whether the database exists.
    pub fn has_database(&self, db: &str) -> bool {
        self.state().dbs.contains_key(db)
    }

    /// The database's tables, by name.
    pub fn tables(&self, db: &str) -> Option<Vec<String>> {
        self.state()
            .dbs
            .get(db)
            .map(|d| d.tables.keys().cloned().collect())
    }

    /// Creates a table with `columns` (name, Kusto type), creating the
    /// database too if needed; an existing table gains the columns it lacks
    /// (its existing columns are left as they are). A type Kusto does not
    /// know is stored as `dynamic`; [`Store::merge_table`] rejects it instead.
    pub fn create_table(&self, db: &str, table: &str, columns: &[(&str, &str)]) {
        self.create_database(db);
        let mut s = self.state();
        let Some(d) = s.dbs.get_mut(db) else { return };
        let t = d.tables.entry(table.to_owned()).or_default();
        for (name, ty) in columns {
            if !t.columns.iter().any(|(n, _)| n == name) {
                let ty = canonical_type(ty).unwrap_or("dynamic");
                t.columns.push(((*name).to_owned(), ty.to_owned()));
            }
        }
    }

    /// `.create-merge table` / `.alter-merge table`: adds the columns the
    /// table lacks (creating the table when `create` is set); a column that
    /// exists with another type is an error naming it.
    pub fn merge_table(
        &self,
        db: &str,
        table: &str,
        columns: &[(String, String)],
        create: bool,
    ) -> Result<(), String> {
        let mut s = self.state();
        let d = s.dbs.get_mut(db).ok_or_else(|| db_not_found(db))?;
        if !create && !d.tables.contains_key(table) {
            return Err(table_not_found(db, table));
        }
        let mut canonical = Vec::new();
        for (name, ty) in columns {
            let c = canonical_type(ty)
                .ok_or_else(|| format!("column '{name}' has unknown type '{ty}'"))?;
            canonical.push((name.clone(), c.to_owned()));
        }
        let t = d.tables.entry(table.to_owned()).or_default();
        for (name, ty) in &canonical {
            if let Some((_, existing)) = t.columns.iter().find(|(n, _)| n == name) {
                if existing != ty {
                    return Err(format!(
                        "column '{name}' of table '{table}' is of type '{existing}' and cannot be changed to '{ty}'"
                    ));
                }
            }
        }
        for (name, ty) in canonical {
            if !t.columns.iter().any(|(n, _)| *n == name) {
                t.columns.push((name, ty));
            }
        }
        Ok(())
    }

    /// Creates or replaces the JSON ingestion mapping `name` of a table.
    /// `mapping_json` is Kusto's mapping text: an array of
    /// `{"column", "Properties": {"Path": "$.x"}}` (or the legacy
    /// `{"column", "path"}`, or `"Properties": {"ConstValue": ...}`).
    pub fn create_json_mapping(
        &self,
        db: &str,
        table: &str,
        name: &str,
        mapping_json: &str,
    ) -> Result<(), String> {
        let columns = parse_mapping(mapping_json)
            .map_err(|e| format!("ingestion mapping '{name}' is invalid: {e}"))?;
        let mut s = self.state();
        let d = s.dbs.get_mut(db).ok_or_else(|| db_not_found(db))?;
        let t = d
            .tables
            .get_mut(table)
            .ok_or_else(|| table_not_found(db, table))?;
        for c in &columns {
            if !t.columns.iter().any(|(n, _)| *n == c.column) {
                return Err(format!(
                    "ingestion mapping '{name}' refers to column '{}', which table '{table}' does not have",
                    c.column
                ));
            }
        }
        t.json_mappings.insert(
            name.to_owned(),
            Mapping {
                raw: mapping_json.to_owned(),
                columns,
            },
        );
        Ok(())
    }

    /// The table's JSON mappings: (name, mapping text).
    pub fn json_mappings(&self, db: &str, table: &str) -> Option<Vec<(String, String)>> {
        let s = self.state();
        let t = s.dbs.get(db)?.tables.get(table)?;
        Some(
            t.json_mappings
                .iter()
                .map(|(n, m)| (n.clone(), m.raw.clone()))
                .collect(),
        )
    }

    /// The table's columns: (name, Kusto type), in order.
    pub fn columns(&self, db: &str, table: &str) -> Option<Vec<(String, String)>> {
        let s = self.state();
        Some(s.dbs.get(db)?.tables.get(table)?.columns.clone())
    }

    /// Every row of the table, oldest extent first: column name -> value
    /// (datetimes as `yyyy-MM-ddTHH:mm:ss[.fffffff]Z`, decimals as strings,
    /// missing values as null).
    pub fn rows(&self, db: &str, table: &str) -> Vec<Map<String, Value>> {
        let s = self.state();
        s.dbs
            .get(db)
            .and_then(|d| d.tables.get(table))
            .map(|t| {
                t.extents
                    .iter()
                    .flat_map(|e| e.rows.iter().cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The tags of each extent of the table, oldest first.
    pub fn extents(&self, db: &str, table: &str) -> Vec<Vec<String>> {
        let s = self.state();
        s.dbs
            .get(db)
            .and_then(|d| d.tables.get(table))
            .map(|t| t.extents.iter().map(|e| e.tags.clone()).collect())
            .unwrap_or_default()
    }

    /// The table's extents, oldest first (None when the table does not
    /// exist).
    pub fn extent_infos(&self, db: &str, table: &str) -> Option<Vec<ExtentInfo>> {
        let s = self.state();
        let t = s.dbs.get(db)?.tables.get(table)?;
        Some(
            t.extents
                .iter()
                .map(|e| ExtentInfo {
                    id: e.id.clone(),
                    tags: e.tags.clone(),
                    rows: e.rows.len(),
                })
                .collect(),
        )
    }

    /// Drops the table's extents with these ids (ids it does not have are
    /// passed over, as Kusto does) and returns the ids dropped.
    pub fn drop_extents(
        &self,
        db: &str,
        table: &str,
        ids: &[String],
    ) -> Result<Vec<String>, String> {
        let mut s = self.state();
        let t = s
            .dbs
            .get_mut(db)
            .ok_or_else(|| db_not_found(db))?
            .tables
            .get_mut(table)
            .ok_or_else(|| table_not_found(db, table))?;
        let mut dropped = Vec::new();
        t.extents.retain(|e| {
            let hit = ids.iter().any(|id| id.eq_ignore_ascii_case(&e.id));
            if hit {
                dropped.push(e.id.clone());
            }
            !hit
        });
        Ok(dropped)
    }

    /// Refuses `principal` (an application id, or `*` for everyone) access
    /// to database `db`: the engine answers 403.
    pub fn deny(&self, principal: &str, db: &str) {
        self.state()
            .denied
            .insert((principal.to_owned(), db.to_owned()));
    }

    /// Whether `principal` is refused access to `db`.
    pub fn is_denied(&self, principal: &str, db: &str) -> bool {
        let s = self.state();
        s.denied.contains(&(principal.to_owned(), db.to_owned()))
            || s.denied.contains(&("*".to_owned(), db.to_owned()))
    }

    /// Sets the streaming ingestion policy of a table (or, with an empty
    /// `table`, of the database). Databases start with it enabled.
    pub fn set_streaming_enabled(&self, db: &str, table: &str, enabled: bool) {
        let mut s = self.state();
        let Some(d) = s.dbs.get_mut(db) else { return };
        if table.is_empty() {
            d.streaming = enabled;
        } else if let Some(t) = d.tables.get_mut(table) {
            t.streaming = Some(enabled);
        }
    }

    /// Whether streaming ingestion into the table is enabled (its own
    /// policy, else the database's).
    pub fn streaming_enabled(&self, db: &str, table: &str) -> bool {
        let s = self.state();
        match s.dbs.get(db) {
            Some(d) => d
                .tables
                .get(table)
                .and_then(|t| t.streaming)
                .unwrap_or(d.streaming),
            None => false,
        }
    }

    /// Ingests `data` (uncompressed) into a new extent of the table; see
    /// the module documentation for the formats. Nothing is written when
    /// any record fails.
    pub fn ingest(&self, into: &IngestInto, data: &[u8]) -> Result<IngestOutcome, String> {
        let (columns, mapping) = {
            let s = self.state();
            let d = s.dbs.get(&into.db).ok_or_else(|| db_not_found(&into.db))?;
            let t = d
                .tables
                .get(&into.table)
                .ok_or_else(|| table_not_found(&into.db, &into.table))?;
            if has_ingest_by(t, &into.ingest_if_not_exists) {
                return Ok(IngestOutcome::Skipped);
            }
            let mapping = match &into.mapping {
                Some(name) => Some(t.json_mappings.get(name).cloned().ok_or_else(|| {
                    format!(
                        "Mapping reference '{name}' of kind 'Json' was not found for table '{}' in database '{}'",
                        into.table, into.db
                    )
                })?),
                None => None,
            };
            (t.columns.clone(), mapping)
        };
        let format = into.format.to_ascii_lowercase();
        let rows = match format.as_str() {
            "json" | "multijson" | "singlejson" => {
                let records = json_records(data)?;
                records
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        json_row(r, &columns, mapping.as_ref())
                            .map_err(|e| format!("record {}: {e}", i + 1))
                    })
                    .collect::<Result<Vec<_>, _>>()?
            }
            "csv" => {
                if into.mapping.is_some() {
                    return Err("csv mappings are not supported by the test server".into());
                }
                csv_rows(data, &columns)?
            }
            "avro" | "apacheavro" | "parquet" | "orc" | "tsv" | "psv" | "scsv" | "sohsv"
            | "txt" | "raw" | "w3clogfile" => {
                return Err(format!(
                    "format '{}' not supported by the test server",
                    into.format
                ))
            }
            other => return Err(format!("unknown data format '{other}'")),
        };
        if rows.is_empty() {
            return Err("Stream_NoDataToIngest: the data holds no records".into());
        }
        let mut s = self.state();
        let t = s
            .dbs
            .get_mut(&into.db)
            .and_then(|d| d.tables.get_mut(&into.table))
            .ok_or_else(|| table_not_found(&into.db, &into.table))?;
        // Checked again under this lock: a concurrent ingestion with the
        // same ingest-by tag may have landed meanwhile.
        if has_ingest_by(t, &into.ingest_if_not_exists) {
            return Ok(IngestOutcome::Skipped);
        }
        let n = rows.len();
        let id = extent_id(&into.db, &into.table, s.extents_made);
        s.extents_made += 1;
        let t = s
            .dbs
            .get_mut(&into.db)
            .and_then(|d| d.tables.get_mut(&into.table))
            .ok_or_else(|| table_not_found(&into.db, &into.table))?;
        t.extents.push(Extent {
            id,
            tags: into.tags.clone(),
            rows,
        });
        Ok(IngestOutcome::Ingested { rows: n })
    }
}

/// A GUID-shaped extent id, distinct per extent made.
fn extent_id(db: &str, table: &str, n: u64) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in db.bytes().chain([0]).chain(table.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        (h >> 32) as u32,
        (h >> 16) as u16,
        (h as u16) & 0xfff,
        ((n >> 48) as u16) & 0xfff,
        n & 0xffff_ffff_ffff
    )
}

fn has_ingest_by(t: &Table, values: &[String]) -> bool {
    values.iter().any(|v| {
        let tag = format!("ingest-by:{v}");
        t.extents.iter().any(|e| e.tags.contains(&tag))
    })
}

fn parse_mapping(text: &str) -> Result<Vec<MappingColumn>, String> {
    let json: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let items = json.as_array().ok_or("a mapping is a JSON array")?;
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        // Kusto reads mapping property names without regard to case
        // (`"Properties":{"path":...}` works as well as `"Path"`).
        let get = |v: &Value, k: &str| -> Option<Value> {
            v.as_object()?
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
        };
        let field =
            |k: &str| get(item, k).or_else(|| get(item, "Properties").and_then(|p| get(&p, k)));
        let column = field("Column")
            .as_ref()
            .and_then(Value::as_str)
            .ok_or_else(|| format!("entry {} has no column", i + 1))?
            .to_owned();
        let path = match field("Path").as_ref().and_then(Value::as_str) {
            Some(p) => Some(parse_path(p).map_err(|e| format!("column '{column}': {e}"))?),
            None => None,
        };
        let constant = field("ConstValue");
        if path.is_none() && constant.is_none() {
            return Err(format!(
                "column '{column}' has neither a Path nor a ConstValue"
            ));
        }
        out.push(MappingColumn {
            column,
            path,
            constant,
        });
    }
    Ok(out)
}

/// `$`, `$.a.b`, `$['a b']`, `$.a[0]`.
fn parse_path(p: &str) -> Result<Vec<PathSeg>, String> {
    let rest = p
        .strip_prefix('$')
        .ok_or_else(|| format!("path '{p}' does not start with $"))?;
    let mut segs = Vec::new();
    let chars: Vec<char> = rest.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                let start = i + 1;
                let mut j = start;
                while j < chars.len() && chars[j] != '.' && chars[j] != '[' {
                    j += 1;
                }
                if j == start {
                    return Err(format!("path '{p}' has an empty segment"));
                }
                segs.push(PathSeg::Key(chars[start..j].iter().collect()));
                i = j;
            }
            '[' => {
                let close = chars[i..]
                    .iter()
                    .position(|c| *c == ']')
                    .map(|k| i + k)
                    .ok_or_else(|| format!("path '{p}' has an unclosed ["))?;
                let inner: String = chars[i + 1..close].iter().collect();
                let inner = inner.trim();
                if let Some(q) = inner
                    .strip_prefix('\'')
                    .and_then(|s| s.strip_suffix('\''))
                    .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
                {
                    segs.push(PathSeg::Key(q.to_owned()));
                } else {
                    let n = inner
                        .parse::<usize>()
                        .map_err(|_| format!("path '{p}' has a bad index [{inner}]"))?;
                    segs.push(PathSeg::Index(n));
                }
                i = close + 1;
            }
            c => return Err(format!("path '{p}' has an unexpected '{c}'")),
        }
    }
    Ok(segs)
}

fn lookup<'a>(v: &'a Value, path: &[PathSeg]) -> Option<&'a Value> {
    let mut cur = v;
    for seg in path {
        cur = match seg {
            PathSeg::Key(k) => cur.get(k.as_str())?,
            PathSeg::Index(n) => cur.get(*n)?,
        };
    }
    Some(cur)
}

/// JSON objects one after another (whitespace separated), arrays of
/// objects flattened.
fn json_records(data: &[u8]) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for (i, item) in serde_json::Deserializer::from_slice(data)
        .into_iter::<Value>()
        .enumerate()
    {
        let v = item.map_err(|e| format!("the data is not valid JSON at record {}: {e}", i + 1))?;
        match v {
            Value::Object(_) => out.push(v),
            Value::Array(items) => {
                for it in items {
                    if !it.is_object() {
                        return Err(format!(
                            "record {}: an array holds {it}, not a JSON object",
                            i + 1
                        ));
                    }
                    out.push(it);
                }
            }
            other => return Err(format!("record {}: {other} is not a JSON object", i + 1)),
        }
    }
    Ok(out)
}

fn json_row(
    record: &Value,
    columns: &[(String, String)],
    mapping: Option<&Mapping>,
) -> Result<Map<String, Value>, String> {
    let mut row = Map::new();
    for (name, _) in columns {
        row.insert(name.clone(), Value::Null);
    }
    match mapping {
        Some(m) => {
            for mc in &m.columns {
                let Some((_, ty)) = columns.iter().find(|(n, _)| *n == mc.column) else {
                    return Err(format!(
                        "the mapping's column '{}' is not in the table",
                        mc.column
                    ));
                };
                let raw = match (&mc.path, &mc.constant) {
                    (Some(p), _) => lookup(record, p).cloned().unwrap_or(Value::Null),
                    (None, Some(c)) => c.clone(),
                    (None, None) => Value::Null,
                };
                row.insert(mc.column.clone(), convert(&raw, ty, &mc.column)?);
            }
        }
        None => {
            for (name, ty) in columns {
                let raw = record.get(name).cloned().unwrap_or(Value::Null);
                row.insert(name.clone(), convert(&raw, ty, name)?);
            }
        }
    }
    Ok(row)
}

fn csv_rows(data: &[u8], columns: &[(String, String)]) -> Result<Vec<Map<String, Value>>, String> {
    let text = std::str::from_utf8(data).map_err(|e| format!("the csv data is not UTF-8: {e}"))?;
    let records = parse_csv(text)?;
    let mut out = Vec::new();
    for (i, rec) in records.iter().enumerate() {
        if rec.len() > columns.len() {
            return Err(format!(
                "csv record {} has {} fields; the table has {} columns",
                i + 1,
                rec.len(),
                columns.len()
            ));
        }
        let mut row = Map::new();
        for (k, (name, ty)) in columns.iter().enumerate() {
            let v = match rec.get(k) {
                Some(f) if f.is_empty() && ty != "string" => Value::Null,
                // Kusto parses a csv field of a dynamic column as JSON.
                Some(f) if ty == "dynamic" => {
                    serde_json::from_str(f).unwrap_or_else(|_| Value::String(f.clone()))
                }
                Some(f) => convert(&Value::String(f.clone()), ty, name)
                    .map_err(|e| format!("csv record {}: {e}", i + 1))?,
                None if ty == "string" => Value::String(String::new()),
                None => Value::Null,
            };
            row.insert(name.clone(), v);
        }
        out.push(row);
    }
    Ok(out)
}

/// RFC 4180 records; a trailing newline does not make an empty record.
fn parse_csv(text: &str) -> Result<Vec<Vec<String>>, String> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    let mut started = false;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                c => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() => {
                quoted = true;
                started = true;
            }
            ',' => {
                record.push(std::mem::take(&mut field));
                started = true;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
                started = false;
            }
            c => {
                field.push(c);
                started = true;
            }
        }
    }
    if quoted {
        return Err("the csv data ends inside a quoted field".into());
    }
    if started || !field.is_empty() {
        record.push(field);
        records.push(record);
    }
    Ok(records)
}

/// Converts a JSON value to a column's type, as Kusto stores it.
pub fn convert(v: &Value, ty: &str, column: &str) -> Result<Value, String> {
    let bad = |why: &str| format!("column '{column}' ({ty}) cannot hold {v}: {why}");
    if v.is_null() {
        return Ok(Value::Null);
    }
    Ok(match ty {
        "string" => match v {
            Value::String(s) => Value::String(s.clone()),
            other => Value::String(other.to_string()),
        },
        "int" | "long" => {
            let n: i64 = match v {
                Value::Number(n) => match n.as_i64() {
                    Some(i) => i,
                    None => match n.as_f64() {
                        Some(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => f as i64,
                        _ => return Err(bad("not an integer")),
                    },
                },
                Value::String(s) => s.trim().parse().map_err(|_| bad("not an integer"))?,
                Value::Bool(b) => i64::from(*b),
                _ => return Err(bad("not an integer")),
            };
            if ty == "int" && i32::try_from(n).is_err() {
                return Err(bad("out of the int range"));
            }
            Value::from(n)
        }
        "real" => {
            let f: f64 = match v {
                Value::Number(n) => n.as_f64().ok_or_else(|| bad("not a number"))?,
                Value::String(s) => s.trim().parse().map_err(|_| bad("not a number"))?,
                _ => return Err(bad("not a number")),
            };
            serde_json::Number::from_f64(f)
                .map(Value::Number)
                // Kusto writes NaN and infinities as strings in JSON.
                .unwrap_or_else(|| Value::String(f.to_string()))
        }
        "decimal" => {
            let s = match v {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.trim().to_owned(),
                _ => return Err(bad("not a decimal number")),
            };
            let digits = s.trim_start_matches(['-', '+']);
            let ok = !digits.is_empty()
                && digits.chars().filter(|c| *c == '.').count() <= 1
                && digits.chars().all(|c| {
                    c.is_ascii_digit() || c == '.' || c == 'e' || c == 'E' || c == '-' || c == '+'
                })
                && digits
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_digit() || c == '.');
            if !ok || s.parse::<f64>().is_err() {
                return Err(bad("not a decimal number"));
            }
            Value::String(s)
        }
        "bool" => match v {
            Value::Bool(b) => Value::Bool(*b),
            Value::Number(n) if n.as_i64() == Some(0) => Value::Bool(false),
            Value::Number(n) if n.as_i64() == Some(1) => Value::Bool(true),
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" => Value::Bool(true),
                "false" | "0" => Value::Bool(false),
                _ => return Err(bad("not a bool")),
            },
            _ => return Err(bad("not a bool")),
        },
        "datetime" => match v {
            Value::String(s) => {
                Value::String(parse_datetime(s).ok_or_else(|| bad("not a datetime"))?)
            }
            _ => return Err(bad("not a datetime")),
        },
        "dynamic" => v.clone(),
        "guid" => match v {
            Value::String(s) => {
                let t = s.trim().trim_start_matches('{').trim_end_matches('}');
                let shape = t.len() == 36
                    && t.char_indices().all(|(i, c)| {
                        if matches!(i, 8 | 13 | 18 | 23) {
                            c == '-'
                        } else {
                            c.is_ascii_hexdigit()
                        }
                    });
                if !shape {
                    return Err(bad("not a guid"));
                }
                Value::String(t.to_ascii_lowercase())
            }
            _ => return Err(bad("not a guid")),
        },
        "timespan" => match v {
            Value::String(s) => {
                Value::String(parse_timespan(s).ok_or_else(|| bad("not a timespan"))?)
            }
            Value::Number(n) => {
                let ticks = n
                    .as_i64()
                    .ok_or_else(|| bad("not a whole number of ticks"))?;
                Value::String(format_timespan(ticks))
            }
            _ => return Err(bad("not a timespan")),
        },
        other => return Err(format!("column '{column}' has unknown type '{other}'")),
    })
}

/// ISO 8601 / RFC 3339 (a missing zone means UTC), or `yyyy-MM-dd[ HH:mm[:ss[.f]]]`,
/// as `yyyy-MM-ddTHH:mm:ss[.fffffff]Z`.
fn parse_datetime(s: &str) -> Option<String> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
    let s = s.trim();
    let utc: DateTime<Utc> = if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        d.with_timezone(&Utc)
    } else {
        let naive = [
            "%Y-%m-%dT%H:%M:%S%.f",
            "%Y-%m-%d %H:%M:%S%.f",
            "%Y-%m-%dT%H:%M",
            "%Y-%m-%d %H:%M",
        ]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s.trim_end_matches('Z'), f).ok())
        .or_else(|| {
            NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        })?;
        naive.and_utc()
    };
    let base = utc.format("%Y-%m-%dT%H:%M:%S").to_string();
    // Kusto keeps 100 ns ticks.
    let ticks = utc.timestamp_subsec_nanos() / 100;
    if ticks == 0 {
        Some(format!("{base}Z"))
    } else {
        let frac = format!("{ticks:07}");
        Some(format!("{base}.{}Z", frac.trim_end_matches('0')))
    }
}

/// `[-][d.]hh:mm:ss[.fffffff]`, normalized.
fn parse_timespan(s: &str) -> Option<String> {
    let s = s.trim();
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let (days, clock) = match body.split_once('.') {
        Some((d, rest)) if rest.contains(':') && !d.contains(':') => (d.parse::<i64>().ok()?, rest),
        _ => (0, body),
    };
    let mut parts = clock.split(':');
    let h: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let sec_part = parts.next().unwrap_or("0");
    if parts.next().is_some() || m >= 60 {
        return None;
    }
    let (sec, frac) = match sec_part.split_once('.') {
        Some((a, b)) => (a, b),
        None => (sec_part, ""),
    };
    let sec: i64 = sec.parse().ok()?;
    if sec >= 60 || frac.len() > 7 || !frac.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let frac_ticks: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<7}").parse().ok()?
    };
    let ticks = (((days * 24 + h) * 60 + m) * 60 + sec) * 10_000_000 + frac_ticks;
    Some(format_timespan(if neg { -ticks } else { ticks }))
}

fn format_timespan(ticks: i64) -> String {
    let sign = if ticks < 0 { "-" } else { "" };
    let t = ticks.unsigned_abs();
    let frac = t % 10_000_000;
    let secs = t / 10_000_000;
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    let mut out = String::from(sign);
    if d > 0 {
        out.push_str(&format!("{d}."));
    }
    out.push_str(&format!("{h:02}:{m:02}:{s:02}"));
    if frac > 0 {
        out.push_str(&format!(".{frac:07}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn store() -> Store {
        let s = Store::new();
        s.create_table(
            "db",
            "T",
            &[
                ("id", "long"),
                ("name", "string"),
                ("at", "datetime"),
                ("doc", "dynamic"),
            ],
        );
        s
    }

    fn into(mapping: Option<&str>) -> IngestInto {
        IngestInto {
            db: "db".into(),
            table: "T".into(),
            format: "multijson".into(),
            mapping: mapping.map(str::to_owned),
            ..IngestInto::default()
        }
    }

    #[test]
    fn multijson_by_property_name_and_through_a_mapping() {
        let s = store();
        let data =
            br#"{"id": 1, "name": "a", "at": "2024-01-02T03:04:05.5+01:00", "doc": {"k": [1]}}
            {"id": "2", "extra": true}"#;
        assert_eq!(
            s.ingest(&into(None), data),
            Ok(IngestOutcome::Ingested { rows: 2 })
        );
        s.create_json_mapping(
            "db",
            "T",
            "m",
            r#"[{"column":"id","Properties":{"Path":"$.payload.id"}},{"column":"name","path":"$['the name']"}]"#,
        )
        .expect("mapping");
        s.ingest(
            &into(Some("m")),
            br#"[{"payload":{"id":3},"the name":"c"}]"#,
        )
        .expect("ingest");
        let rows = s.rows("db", "T");
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0]["at"], json!("2024-01-02T02:04:05.5Z"));
        assert_eq!(rows[0]["doc"], json!({"k": [1]}));
        assert_eq!(rows[1]["id"], json!(2));
        assert_eq!(rows[1]["name"], Value::Null);
        assert_eq!(rows[2]["id"], json!(3));
        assert_eq!(rows[2]["name"], json!("c"));
    }

    #[test]
    fn a_bad_value_fails_the_whole_ingestion_naming_the_column() {
        let s = store();
        let err = s
            .ingest(&into(None), br#"{"id": 1} {"id": "x"}"#)
            .expect_err("bad long");
        assert!(err.contains("column 'id'"), "{err}");
        assert!(s.rows("db", "T").is_empty());
        let err = s
            .ingest(&into(Some("nope")), br#"{"id": 1}"#)
            .expect_err("no mapping");
        assert!(err.contains("'nope'"), "{err}");
        let mut other = into(None);
        other.table = "Missing".into();
        let err = s.ingest(&other, b"{}").expect_err("no table");
        assert!(err.contains("'Missing'"), "{err}");
    }

    #[test]
    fn ingest_by_tags_deduplicate() {
        let s = store();
        let mut i = into(None);
        i.tags = vec!["ingest-by:batch-1".into()];
        i.ingest_if_not_exists = vec!["batch-1".into()];
        assert_eq!(
            s.ingest(&i, br#"{"id":1}"#),
            Ok(IngestOutcome::Ingested { rows: 1 })
        );
        assert_eq!(s.ingest(&i, br#"{"id":1}"#), Ok(IngestOutcome::Skipped));
        assert_eq!(
            s.extents("db", "T"),
            vec![vec!["ingest-by:batch-1".to_owned()]]
        );
        assert_eq!(s.rows("db", "T").len(), 1);
    }

    #[test]
    fn csv_in_table_order() {
        let s = store();
        let mut i = into(None);
        i.format = "csv".into();
        s.ingest(
            &i,
            b"1,\"a, \"\"quoted\"\"\",2024-01-01,\r\n2,,,\"{\"\"x\"\":1}\"\n",
        )
        .expect("csv");
        let rows = s.rows("db", "T");
        assert_eq!(rows[0]["name"], json!("a, \"quoted\""));
        assert_eq!(rows[0]["at"], json!("2024-01-01T00:00:00Z"));
        assert_eq!(rows[1]["name"], json!(""));
        assert_eq!(rows[1]["doc"], json!({"x": 1}));
    }

    #[test]
    fn conversions() {
        assert_eq!(
            convert(&json!("01:02:03.5"), "timespan", "c"),
            Ok(json!("01:02:03.5000000"))
        );
        assert_eq!(
            convert(&json!("1.00:00:00"), "timespan", "c"),
            Ok(json!("1.00:00:00"))
        );
        assert!(convert(&json!(3_000_000_000i64), "int", "c").is_err());
        assert_eq!(convert(&json!("TRUE"), "bool", "c"), Ok(json!(true)));
        assert_eq!(convert(&json!("12.50"), "decimal", "c"), Ok(json!("12.50")));
        assert!(convert(&json!("12,5"), "decimal", "c").is_err());
        assert!(convert(&json!("not-a-guid"), "guid", "c").is_err());
        assert_eq!(convert(&json!(1.5), "real", "c"), Ok(json!(1.5)));
        assert_eq!(
            convert(&json!({"a":1}), "string", "c"),
            Ok(json!("{\"a\":1}"))
        );
    }
}
