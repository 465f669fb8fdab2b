//! What Sluice must emit, derived from what Debezium 3.6 emitted: the same
//! records for Sluice's default format, and for
//! `sluice.debezium.compatibility=2.7` the same records changed by every
//! difference between Debezium 2.7 and 3.6 that Sluice reproduces:
//! - the source block: no schema `version`, the short `snapshot` allowed
//!   list `true,last,false,incremental`, no `origin` / `origin_lsn`, and
//!   `source.version` `2.7.3.Final` (Debezium 3.1 and 3.5);
//! - no `__debezium.context.*` headers (3.2);
//! - `tsvector` columns: left out (2.7 has no mapping for them), or a plain
//!   string with `include.unknown.datatypes=true` (3.3 added
//!   `io.debezium.data.Tsvector`);
//! - `time[]` elements are `io.debezium.time.MicroTime` whatever
//!   `time.precision.mode` says (3.1 made them follow it).

use super::cases::Case;
use super::compare::Rec;
use super::json::J;

const SOURCE: &str = "io.debezium.connector.postgresql.Source";
const MICRO_TIME: &str = "io.debezium.time.MicroTime";
const TSVECTOR: &str = "io.debezium.data.Tsvector";

/// Debezium's records as Sluice must emit them.
pub fn expected(case: &Case, v27: bool, dbz: &[Rec]) -> Vec<Rec> {
    let mut out: Vec<Rec> = dbz.to_vec();
    if v27 {
        let unknown = case.get("include.unknown.datatypes") == Some("true");
        for r in out.iter_mut() {
            to_27(r, unknown);
        }
    }
    out
}

fn name_of(j: &J) -> Option<&str> {
    j.get("name").and_then(J::str)
}

fn fields_mut(j: &mut J) -> Option<&mut Vec<J>> {
    match j.get_mut("fields") {
        Some(J::Arr(a)) => Some(a),
        _ => None,
    }
}

fn field_name(j: &J) -> Option<&str> {
    j.get("field").and_then(J::str)
}

/// Debezium 3.6's record as Debezium 2.7 wrote it.
fn to_27(r: &mut Rec, include_unknown: bool) {
    r.headers
        .retain(|(k, _)| !k.starts_with("__debezium.context."));
    let has_schema = r.value.get("schema").is_some() && r.value.get("payload").is_some();
    if !has_schema {
        if let J::Obj(_) = r.value {
            if let Some(src) = r.value.get_mut("source") {
                source_payload_27(src);
            }
        }
        return;
    }
    // Which row fields are time[] or tsvector, from the schema.
    let mut time_arrays: Vec<(String, bool)> = Vec::new();
    let mut tsvectors: Vec<String> = Vec::new();
    if let Some(schema) = r.value.get_mut("schema") {
        if let Some(fields) = fields_mut(schema) {
            for f in fields.iter_mut() {
                match field_name(f) {
                    Some("source") if name_of(f) == Some(SOURCE) => source_schema_27(f),
                    Some("before") | Some("after") => {
                        row_schema_27(f, include_unknown, &mut time_arrays, &mut tsvectors)
                    }
                    _ => {}
                }
            }
            // An unwrapped record: the row schema itself.
            if name_of(schema).is_some_and(|n| n.ends_with(".Value")) {
                row_schema_27(schema, include_unknown, &mut time_arrays, &mut tsvectors);
            }
        }
    }
    if let Some(p) = r.value.get_mut("payload") {
        if let Some(src) = p.get_mut("source") {
            source_payload_27(src);
        }
        let is_envelope = p.get("op").is_some() && p.get("source").is_some();
        if is_envelope {
            for part in ["before", "after"] {
                if let Some(row) = p.get_mut(part) {
                    row_payload_27(row, include_unknown, &time_arrays, &tsvectors);
                }
            }
        } else {
            row_payload_27(p, include_unknown, &time_arrays, &tsvectors);
        }
    }
}

fn source_schema_27(f: &mut J) {
    f.remove("version");
    if let Some(fields) = fields_mut(f) {
        fields.retain(|c| !matches!(field_name(c), Some("origin") | Some("origin_lsn")));
        for c in fields.iter_mut() {
            if field_name(c) == Some("snapshot") {
                if let Some(J::Obj(params)) = c.get_mut("parameters") {
                    for (k, v) in params.iter_mut() {
                        if k == "allowed" {
                            *v = J::string("true,last,false,incremental");
                        }
                    }
                }
            }
        }
    }
}

fn source_payload_27(src: &mut J) {
    src.remove("origin");
    src.remove("origin_lsn");
    if let Some(v) = src.get_mut("version") {
        *v = J::string("2.7.3.Final");
    }
}

fn row_schema_27(
    row: &mut J,
    include_unknown: bool,
    time_arrays: &mut Vec<(String, bool)>,
    tsvectors: &mut Vec<String>,
) {
    let Some(fields) = fields_mut(row) else {
        return;
    };
    for c in fields.iter() {
        if name_of(c) == Some(TSVECTOR) {
            if let Some(n) = field_name(c) {
                if !tsvectors.iter().any(|t| t == n) {
                    tsvectors.push(n.to_string());
                }
            }
        }
    }
    fields.retain(|c| include_unknown || name_of(c) != Some(TSVECTOR));
    for c in fields.iter_mut() {
        let Some(name) = field_name(c).map(str::to_string) else {
            continue;
        };
        if name_of(c) == Some(TSVECTOR) {
            // 2.7 had no mapping: with include.unknown.datatypes the text's bytes.
            c.remove("name");
            c.remove("version");
            if let Some(t) = c.get_mut("type") {
                *t = J::string("bytes");
            }
        }
        let is_array = c.get("type").and_then(J::str) == Some("array");
        if !is_array {
            continue;
        }
        let Some(items) = c.get_mut("items") else {
            continue;
        };
        let item_name = name_of(items).map(str::to_string);
        let millis = matches!(
            item_name.as_deref(),
            Some("io.debezium.time.Time") | Some("org.apache.kafka.connect.data.Time")
        );
        if millis || item_name.as_deref() == Some(MICRO_TIME) {
            let optional = items.get("optional").cloned().unwrap_or(J::Bool(true));
            *items = J::Obj(vec![
                ("type".into(), J::string("int64")),
                ("optional".into(), optional),
                ("name".into(), J::string(MICRO_TIME)),
                ("version".into(), J::Num("1".into())),
            ]);
            if !time_arrays.iter().any(|(n, _)| n == &name) {
                time_arrays.push((name, millis));
            }
        }
    }
}

fn row_payload_27(
    row: &mut J,
    include_unknown: bool,
    time_arrays: &[(String, bool)],
    tsvectors: &[String],
) {
    let J::Obj(m) = row else { return };
    if !include_unknown {
        m.retain(|(k, _)| !tsvectors.contains(k));
    }
    for (k, v) in m.iter_mut() {
        if tsvectors.contains(k) {
            if let J::Str(text, _) = v {
                use base64::Engine as _;
                *v = J::string(&base64::engine::general_purpose::STANDARD.encode(text.as_bytes()));
            }
        }
        if let Some((_, true)) = time_arrays.iter().find(|(n, _)| n == k) {
            if let J::Arr(items) = v {
                for it in items.iter_mut() {
                    if let J::Num(n) = it {
                        if let Ok(ms) = n.parse::<i64>() {
                            *n = (ms * 1000).to_string();
                        }
                    }
                }
            }
        }
    }
}
