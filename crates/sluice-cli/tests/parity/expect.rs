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
        messages_outside_transactions_27(&mut out);
        // ExtractNewRecordState with no delete handling set: Debezium 3.x turns
        // a delete into a null value with the row schema (`tombstone`); 2.7's
        // legacy defaults dropped deletes (and tombstones, as 3.x does).
        let unwrap = case.props.iter().find(|(k, v)| {
            k.starts_with("transforms.")
                && k.ends_with(".type")
                && v.ends_with("ExtractNewRecordState")
        });
        if let Some((k, _)) = unwrap {
            let alias = k.trim_end_matches(".type");
            let set = |o: &str| case.get(&format!("{alias}.{o}")).is_some();
            if !set("delete.tombstone.handling.mode")
                && !set("delete.handling.mode")
                && !set("drop.tombstones")
            {
                out.retain(|r| {
                    !(r.value.get("schema").is_some()
                        && r.value.get("payload").is_some_and(J::is_null))
                });
            }
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

/// Debezium 2.7's logical decoding messages had no transaction block and
/// did not count in their transaction's metadata: drop the block, the END
/// entries and counts, and renumber the transaction's later events.
fn messages_outside_transactions_27(out: &mut [Rec]) {
    use std::collections::HashMap;
    const MESSAGE_VALUE: &str = "io.debezium.connector.postgresql.MessageValue";
    // Messages seen so far per transaction (the txId part of the id).
    let mut seen: HashMap<String, i64> = HashMap::new();
    let tx_of = |id: &str| id.split(':').next().unwrap_or("").to_string();
    for r in out.iter_mut() {
        let is_message = r
            .value
            .get("schema")
            .and_then(name_of)
            .is_some_and(|n| n == MESSAGE_VALUE);
        if is_message {
            if let Some(J::Obj(fields)) = r.value.get_mut("schema").map(|s| s as &mut J) {
                for (k, v) in fields.iter_mut() {
                    if k == "fields" {
                        if let J::Arr(a) = v {
                            a.retain(|f| field_name(f) != Some("transaction"));
                        }
                    }
                }
            }
            if let Some(p) = r.value.get_mut("payload") {
                if let Some(J::Obj(t)) = p.remove("transaction") {
                    if let Some((_, J::Str(id, _))) = t.iter().find(|(k, _)| k == "id") {
                        *seen.entry(tx_of(id)).or_default() += 1;
                    }
                }
            }
            continue;
        }
        let Some(p) = r.value.get_mut("payload") else {
            continue;
        };
        if p.get("status").and_then(J::str) == Some("END") {
            let tx = p.get("id").and_then(J::str).map(tx_of).unwrap_or_default();
            let n = seen.remove(&tx).unwrap_or(0);
            if let Some(J::Arr(list)) = p.get_mut("data_collections") {
                list.retain(|e| {
                    !e.get("data_collection")
                        .and_then(J::str)
                        .is_some_and(|s| s.starts_with(super::compare::MESSAGE_COLLECTION))
                });
            }
            if let Some(J::Num(c)) = p.get_mut("event_count") {
                if let Ok(v) = c.parse::<i64>() {
                    *c = (v - n).to_string();
                }
            }
            continue;
        }
        if let Some(t) = p.get_mut("transaction") {
            let tx = t.get("id").and_then(J::str).map(tx_of).unwrap_or_default();
            let n = seen.get(&tx).copied().unwrap_or(0);
            if let Some(J::Num(o)) = t.get_mut("total_order") {
                if let Ok(v) = o.parse::<i64>() {
                    *o = (v - n).to_string();
                }
            }
        }
    }
}

/// The 2.7 `snapshot` allowed list in every `source.snapshot` Enum schema,
/// wherever ExtractNewRecordState copied it.
fn snapshot_enums_27(j: &mut J) {
    const ALLOWED_36: &str =
        "true,first,first_in_data_collection,last_in_data_collection,last,false,incremental";
    match j {
        J::Obj(m) => {
            for (k, v) in m.iter_mut() {
                if k == "allowed" && v.str() == Some(ALLOWED_36) {
                    *v = J::string("true,last,false,incremental");
                } else {
                    snapshot_enums_27(v);
                }
            }
        }
        J::Arr(a) => a.iter_mut().for_each(snapshot_enums_27),
        _ => {}
    }
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
    if let Some(schema) = r.value.get_mut("schema") {
        snapshot_enums_27(schema);
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
            unwrapped_version_27(p);
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

/// `source.version` where ExtractNewRecordState added it (`__version` or
/// `__source_version`).
fn unwrapped_version_27(p: &mut J) {
    if let J::Obj(m) = p {
        for (k, v) in m.iter_mut() {
            if k.ends_with("version") && v.str() == Some("3.6.3.Final") {
                *v = J::string("2.7.3.Final");
            }
        }
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

/// The differences Sluice keeps on purpose, where Debezium loses data or
/// contradicts itself (each listed in the README):
pub const DELIBERATE: &[(&str, &str)] = &[
    (
        "time[] microseconds",
        "Debezium truncates the elements of MicroTime arrays (time[], time(4-6)[]) to milliseconds; Sluice keeps the microseconds",
    ),
    (
        "name while streaming",
        "Debezium streams name columns as null (its snapshot has the text); Sluice sends the text in both",
    ),
    (
        "date infinity in snapshot",
        "Debezium's snapshot gives date 'infinity' as -622191234 and streaming as -2147472692 (its stand-in); Sluice sends the stand-in in both",
    ),
    (
        "BC date in snapshot",
        "Debezium's snapshot drops the era of BC dates (0044-03-15 BC reads as 44 AD); Sluice sends the proleptic Gregorian date, as Debezium's streaming does",
    ),
    (
        "bit(n)[]",
        "Debezium declares bit(n)[] columns as a single Bits field and fails to convert every value (always null, with a warning); Sluice sends the array of Bits",
    ),
];

const DATE_NAMES: [&str; 2] = [
    "io.debezium.time.Date",
    "org.apache.kafka.connect.data.Date",
];
const DATE_INFINITY: [i64; 2] = [-2_147_472_692, -2_147_472_691];
/// 0001-01-01 in epoch days.
const FIRST_AD_DAY: i64 = -719_162;

fn fields_of(schema: &J) -> Vec<(String, J)> {
    match schema.get("fields") {
        Some(J::Arr(a)) => a
            .iter()
            .filter_map(|f| Some((field_name(f)?.to_string(), f.clone())))
            .collect(),
        _ => Vec::new(),
    }
}

/// A row schema's fields by name, and where the row sits in the payload
/// (`before` / `after`, or None for an unwrapped row).
type RowPart = (Option<&'static str>, Vec<(String, J)>);

/// The row schemas of a record: `before` / `after` of an envelope, or the
/// unwrapped row itself.
fn row_parts(value: &J) -> Vec<RowPart> {
    let Some(schema) = value.get("schema") else {
        return Vec::new();
    };
    let top = fields_of(schema);
    let envelope = top.iter().any(|(n, _)| n == "source") && top.iter().any(|(n, _)| n == "op");
    if envelope {
        ["before", "after"]
            .iter()
            .filter_map(|p| {
                top.iter()
                    .find(|(n, _)| n == p)
                    .map(|(_, f)| (Some(*p), fields_of(f)))
            })
            .collect()
    } else if name_of(schema).is_some_and(|n| n.ends_with(".Value")) {
        vec![(None, top)]
    } else {
        Vec::new()
    }
}

fn as_i64(j: &J) -> Option<i64> {
    match j {
        J::Num(n) => n.parse().ok(),
        _ => None,
    }
}

/// Rewrites Debezium's record where it differs from Sluice's by one of the
/// [`DELIBERATE`] differences; returns the labels applied.
pub fn deliberate(case: &Case, dbz: &mut Rec, sluice: &Rec) -> Vec<&'static str> {
    let mut applied: Vec<&'static str> = Vec::new();
    let op = dbz.op().map(str::to_string);
    let dbz_parts = row_parts(&dbz.value);
    let sl_parts = row_parts(&sluice.value);
    if dbz_parts.is_empty() || sl_parts.is_empty() {
        return applied;
    }
    // bit(n)[]: take Sluice's field schema.
    let mut schema_swaps: Vec<(Option<&'static str>, String, J)> = Vec::new();
    for ((part, dfields), (_, sfields)) in dbz_parts.iter().zip(&sl_parts) {
        for (name, df) in dfields {
            let Some((_, sf)) = sfields.iter().find(|(n, _)| n == name) else {
                continue;
            };
            let d_bits = df.get("type").and_then(J::str) == Some("bytes")
                && name_of(df) == Some("io.debezium.data.Bits");
            let s_bits_array = sf.get("type").and_then(J::str) == Some("array")
                && sf.get("items").and_then(name_of) == Some("io.debezium.data.Bits");
            if d_bits && s_bits_array {
                schema_swaps.push((*part, name.clone(), sf.clone()));
            }
        }
    }
    if !schema_swaps.is_empty() {
        if let Some(schema) = dbz.value.get_mut("schema") {
            for (part, name, sf) in &schema_swaps {
                let row = match part {
                    Some(p) => match schema.get_mut("fields") {
                        Some(J::Arr(top)) => top.iter_mut().find(|f| field_name(f) == Some(*p)),
                        _ => None,
                    },
                    None => Some(&mut *schema),
                };
                if let Some(J::Arr(fields)) = row.and_then(|r| r.get_mut("fields")) {
                    for f in fields.iter_mut() {
                        if field_name(f) == Some(name.as_str()) {
                            *f = sf.clone();
                        }
                    }
                }
            }
        }
        applied.push("bit(n)[]");
    }
    let sl_payload = sluice.payload().cloned();
    let Some(p) = dbz.value.get_mut("payload") else {
        return applied;
    };
    for (part, sfields) in &sl_parts {
        let s_row = match (part, &sl_payload) {
            (Some(pt), Some(sp)) => sp.get(pt).cloned(),
            (None, Some(sp)) => Some(sp.clone()),
            _ => None,
        };
        let Some(s_row) = s_row else { continue };
        let d_row = match part {
            Some(pt) => p.get_mut(pt),
            None => Some(&mut *p),
        };
        let Some(J::Obj(d_members)) = d_row else {
            continue;
        };
        for (name, dv) in d_members.iter_mut() {
            let Some(sv) = s_row.get(name) else { continue };
            if dv.same(sv) {
                continue;
            }
            let Some((_, sf)) = sfields.iter().find(|(n, _)| n == name) else {
                continue;
            };
            let items_name = sf.get("items").and_then(name_of);
            let label = if schema_swaps.iter().any(|(_, n, _)| n == name) && dv.is_null() {
                Some("bit(n)[]")
            } else if items_name == Some(MICRO_TIME) {
                match (&*dv, sv) {
                    (J::Arr(d), J::Arr(s)) if d.len() == s.len() => {
                        let truncated =
                            d.iter().zip(s).all(|(x, y)| match (as_i64(x), as_i64(y)) {
                                (Some(a), Some(b)) => a == b - b.rem_euclid(1000),
                                _ => x.same(y),
                            });
                        truncated.then_some("time[] microseconds")
                    }
                    _ => None,
                }
            } else if case.name == "deliberate"
                && name == "nm"
                && op.as_deref() != Some("r")
                && dv.is_null()
                && sv.str().is_some()
            {
                Some("name while streaming")
            } else if op.as_deref() == Some("r")
                && name_of(sf).is_some_and(|n| DATE_NAMES.contains(&n))
            {
                match as_i64(sv) {
                    Some(s) if DATE_INFINITY.contains(&s) => Some("date infinity in snapshot"),
                    Some(s) if s < FIRST_AD_DAY => Some("BC date in snapshot"),
                    _ => None,
                }
            } else {
                None
            };
            if let Some(l) = label {
                *dv = sv.clone();
                if !applied.contains(&l) {
                    applied.push(l);
                }
            }
        }
    }
    applied
}
