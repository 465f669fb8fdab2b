//! Record-for-record comparison of Debezium's output with Sluice's.
//!
//! Records are paired in order per topic. Before comparing, both sides are
//! normalized in the same way, and only where two processes legitimately
//! differ: processing times (`ts_ms`/`ts_us`/`ts_ns` of an envelope, a
//! heartbeat's `ts_ms`, `__ts_*` added by ExtractNewRecordState), for
//! snapshot reads the read time and each side's own slot positions
//! (`source.ts_*`, `lsn`, `txId`, `sequence`, `xmin`), and the
//! `__debezium.context.runId` header, a random id per connector run.
//! A normalized value keeps its JSON type, so a type difference still shows.
//! Streaming records' commit times, LSNs and transaction ids must be equal:
//! both read the same WAL.

use super::json::J;

/// One record as a line of either output.
#[derive(Debug, Clone)]
pub struct Rec {
    pub topic: String,
    pub key: J,
    pub value: J,
    pub headers: Vec<(String, J)>,
}

impl Rec {
    /// Reads a line `{"topic","key","value"[,"headers"]}` (extra members, such
    /// as the file sink's partition and offset, are ignored).
    pub fn parse(line: &str) -> Result<Rec, String> {
        let j = super::json::parse(line)?;
        let topic = j
            .get("topic")
            .and_then(J::str)
            .ok_or("record without a topic")?
            .to_string();
        let headers = match j.get("headers") {
            Some(J::Arr(hs)) => hs
                .iter()
                .map(|h| {
                    (
                        h.get("key").and_then(J::str).unwrap_or("").to_string(),
                        h.get("value").cloned().unwrap_or(J::Null),
                    )
                })
                .collect(),
            _ => Vec::new(),
        };
        Ok(Rec {
            topic,
            key: j.get("key").cloned().unwrap_or(J::Null),
            value: j.get("value").cloned().unwrap_or(J::Null),
            headers,
        })
    }

    /// The payload of the value (the value itself without schemas).
    pub fn payload(&self) -> Option<&J> {
        match (&self.value.get("schema"), self.value.get("payload")) {
            (Some(_), Some(p)) => Some(p),
            _ if matches!(self.value, J::Obj(_)) => Some(&self.value),
            _ => None,
        }
    }

    /// `op` of an envelope, or `__op` of an unwrapped record.
    pub fn op(&self) -> Option<&str> {
        let p = self.payload()?;
        p.get("op").or_else(|| p.get("__op")).and_then(J::str)
    }

    /// Short description for reports.
    pub fn summary(&self) -> String {
        if self.value.is_null() {
            return format!("tombstone key={}", short(&self.key, 80));
        }
        match self.payload() {
            Some(p) => {
                if let Some(op) = self.op() {
                    format!("op={op} key={}", short(key_payload(&self.key), 80))
                } else if let Some(s) = p.get("status").and_then(J::str) {
                    format!("tx {s}")
                } else {
                    short(p, 100)
                }
            }
            None => short(&self.value, 100),
        }
    }
}

fn key_payload(k: &J) -> &J {
    match (k.get("schema"), k.get("payload")) {
        (Some(_), Some(p)) => p,
        _ => k,
    }
}

pub fn short(j: &J, n: usize) -> String {
    let t = j.text();
    if t.chars().count() > n {
        let cut: String = t.chars().take(n).collect();
        format!("{cut}…")
    } else {
        t
    }
}

/// Reads a JSON-lines file of records.
pub fn read_records(path: &std::path::Path) -> Result<Vec<Rec>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| Rec::parse(l).map_err(|e| format!("{} line {}: {e}", path.display(), i + 1)))
        .collect()
}

/// Reads the raw values the file sink's `value` format wrote (tombstones,
/// written as `null`, are left out).
pub fn read_raw_values(path: &std::path::Path) -> Result<Vec<J>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty() && l.trim() != "null")
        .enumerate()
        .map(|(i, l)| {
            super::json::parse(l).map_err(|e| format!("{} line {}: {e}", path.display(), i + 1))
        })
        .collect()
}

fn mask_at(j: &mut J, key: &str) {
    if let Some(v) = j.get_mut(key) {
        let kind = v.kind();
        *v = J::string(&format!("<{kind}: normalized>"));
    }
}

/// The normalization described in the module doc.
pub fn normalize(rec: &mut Rec) {
    let snapshot = rec.op() == Some("r")
        || rec
            .payload()
            .and_then(|p| p.get("__snapshot"))
            .and_then(J::str)
            .is_some_and(|s| s != "false");
    let heartbeat = rec.topic.starts_with("__debezium-heartbeat")
        || rec
            .value
            .get("schema")
            .and_then(|s| s.get("name"))
            .and_then(J::str)
            == Some("io.debezium.connector.common.Heartbeat");
    let value = &mut rec.value;
    let payload = if value.get("schema").is_some() && value.get("payload").is_some() {
        value.get_mut("payload")
    } else {
        Some(value)
    };
    if let Some(p) = payload {
        if p.get("op").is_some() && p.get("source").is_some() {
            for f in ["ts_ms", "ts_us", "ts_ns"] {
                mask_at(p, f);
            }
            if snapshot {
                if let Some(src) = p.get_mut("source") {
                    for f in ["ts_ms", "ts_us", "ts_ns", "lsn", "txId", "sequence", "xmin"] {
                        mask_at(src, f);
                    }
                }
            }
        }
        if heartbeat {
            mask_at(p, "ts_ms");
        }
        if matches!(p, J::Obj(m) if m.iter().any(|(k, _)| k.starts_with("__"))) {
            for f in ["__ts_ms", "__ts_us", "__ts_ns"] {
                mask_at(p, f);
            }
            if snapshot {
                for f in [
                    "__source_ts_ms",
                    "__source_ts_us",
                    "__source_ts_ns",
                    "__lsn",
                    "__txId",
                    "__sequence",
                    "__source_lsn",
                    "__source_txId",
                    "__source_sequence",
                ] {
                    mask_at(p, f);
                }
            }
        }
    }
    normalize_message_collections(&mut rec.value);
    // Sluice's documented additions, for sinks that reconcile: a
    // snapshot's last record names the topics of tables it read without a
    // row, and so does that table's next change; an incremental snapshot
    // marks where each table's begins and ends.
    rec.headers.retain(|(k, _)| {
        k != sluice_core::record::SNAPSHOT_EMPTY_TOPICS_HEADER
            && k != sluice_core::record::SNAPSHOT_EMPTY_HEADER
            && k != sluice_core::record::INCREMENTAL_SNAPSHOT_HEADER
    });
    for (k, v) in rec.headers.iter_mut() {
        let per_process = k == "__debezium.context.runId"
            || matches!(k.as_str(), "__ts_ms" | "__ts_us" | "__ts_ns")
            || (snapshot
                && matches!(
                    k.as_str(),
                    "__source_ts_ms"
                        | "__source_ts_us"
                        | "__source_ts_ns"
                        | "__lsn"
                        | "__txId"
                        | "__sequence"
                        | "__source_lsn"
                        | "__source_txId"
                        | "__source_sequence"
                ));
        if per_process {
            let kind = v.kind();
            *v = J::string(&format!("<{kind}: normalized>"));
        }
    }
}

/// A difference at a path.
#[derive(Debug, Clone)]
pub struct Diff {
    pub path: String,
    pub debezium: String,
    pub sluice: String,
}

fn is_field_list(a: &[J]) -> bool {
    !a.is_empty() && a.iter().all(|e| e.get("field").and_then(J::str).is_some())
}

/// Paths where `a` (Debezium) and `b` (Sluice) differ.
pub fn diff(a: Option<&J>, b: Option<&J>, path: &str, out: &mut Vec<Diff>) {
    let show = |j: Option<&J>| j.map_or("<absent>".to_string(), |j| short(j, 160));
    match (a, b) {
        (Some(J::Obj(x)), Some(J::Obj(y))) => {
            for (k, v) in x {
                diff(
                    Some(v),
                    b.and_then(|b| b.get(k)),
                    &format!("{path}.{k}"),
                    out,
                );
            }
            for (k, v) in y {
                if a.and_then(|a| a.get(k)).is_none() {
                    diff(None, Some(v), &format!("{path}.{k}"), out);
                }
            }
            let kx: Vec<&String> = x
                .iter()
                .map(|(k, _)| k)
                .filter(|k| y.iter().any(|(l, _)| l == *k))
                .collect();
            let ky: Vec<&String> = y
                .iter()
                .map(|(k, _)| k)
                .filter(|k| x.iter().any(|(l, _)| l == *k))
                .collect();
            if kx != ky {
                out.push(Diff {
                    path: format!("{path} (member order)"),
                    debezium: format!("{kx:?}"),
                    sluice: format!("{ky:?}"),
                });
            }
        }
        (Some(J::Arr(x)), Some(J::Arr(y))) if is_field_list(x) && is_field_list(y) => {
            let name = |e: &J| e.get("field").and_then(J::str).unwrap_or("").to_string();
            for e in x {
                let n = name(e);
                diff(
                    Some(e),
                    y.iter().find(|f| name(f) == n),
                    &format!("{path}[{n}]"),
                    out,
                );
            }
            for f in y {
                let n = name(f);
                if !x.iter().any(|e| name(e) == n) {
                    diff(None, Some(f), &format!("{path}[{n}]"), out);
                }
            }
            let nx: Vec<String> = x
                .iter()
                .map(name)
                .filter(|n| y.iter().any(|f| &name(f) == n))
                .collect();
            let ny: Vec<String> = y
                .iter()
                .map(name)
                .filter(|n| x.iter().any(|e| &name(e) == n))
                .collect();
            if nx != ny {
                out.push(Diff {
                    path: format!("{path} (field order)"),
                    debezium: format!("{nx:?}"),
                    sluice: format!("{ny:?}"),
                });
            }
        }
        (Some(J::Arr(x)), Some(J::Arr(y))) => {
            for i in 0..x.len().max(y.len()) {
                diff(x.get(i), y.get(i), &format!("{path}[{i}]"), out);
            }
        }
        (Some(x), Some(y)) if x.same(y) => {}
        _ => out.push(Diff {
            path: path.to_string(),
            debezium: show(a),
            sluice: show(b),
        }),
    }
}

fn headers_json(h: &[(String, J)]) -> J {
    J::Arr(
        h.iter()
            .map(|(k, v)| {
                J::Obj(vec![
                    ("key".into(), J::string(k)),
                    ("value".into(), v.clone()),
                ])
            })
            .collect(),
    )
}

/// The differences between two (normalized) records.
pub fn record_diffs(a: &Rec, b: &Rec) -> Vec<Diff> {
    let mut out = Vec::new();
    diff(Some(&a.key), Some(&b.key), "key", &mut out);
    diff(Some(&a.value), Some(&b.value), "value", &mut out);
    if !a.headers.is_empty() || !b.headers.is_empty() {
        diff(
            Some(&headers_json(&a.headers)),
            Some(&headers_json(&b.headers)),
            "headers",
            &mut out,
        );
    }
    out
}

/// The outcome for one topic or one case.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// Records paired (the longer side's count).
    pub compared: usize,
    /// Records equal in key, value (schema and payload) and headers.
    pub identical: usize,
    /// Values also equal byte for byte (field order, number text, escapes).
    pub bytes_checked: usize,
    pub bytes_identical: usize,
    /// Human-readable lines about every difference.
    pub report: Vec<String>,
    /// Every differing path (array indices removed), with its count and a
    /// first example.
    pub kinds: Vec<(String, usize, String)>,
    /// Records equal once a listed deliberate difference is accounted for,
    /// by difference.
    pub deliberate: Vec<(&'static str, usize)>,
}

impl Outcome {
    pub fn add(&mut self, o: Outcome) {
        self.compared += o.compared;
        self.identical += o.identical;
        self.bytes_checked += o.bytes_checked;
        self.bytes_identical += o.bytes_identical;
        self.report.extend(o.report);
        for (p, n, ex) in o.kinds {
            self.kind(&p, n, ex);
        }
        for (l, n) in o.deliberate {
            self.deliberate_add(l, n);
        }
    }

    fn deliberate_add(&mut self, label: &'static str, n: usize) {
        match self.deliberate.iter_mut().find(|(l, _)| *l == label) {
            Some(d) => d.1 += n,
            None => self.deliberate.push((label, n)),
        }
    }

    fn kind(&mut self, path: &str, n: usize, example: String) {
        match self.kinds.iter_mut().find(|(p, _, _)| p == path) {
            Some(k) => k.1 += n,
            None => self.kinds.push((path.to_string(), n, example)),
        }
    }

    /// One line per differing path.
    pub fn kinds_report(&self) -> String {
        self.kinds
            .iter()
            .map(|(p, n, ex)| format!("{n:>4} x {p}: {ex}"))
            .collect::<Vec<_>>()
            .join("\n  ")
    }
}

/// Compares Debezium's records (already turned into what Sluice must emit)
/// with Sluice's, per topic. `raw` are Sluice's values as its converter wrote
/// them, for the byte-level check.
pub fn compare(
    dbz: &[Rec],
    sluice: &[Rec],
    raw: &[J],
    max_report: usize,
    deliberate: &dyn Fn(&mut Rec, &Rec) -> Vec<&'static str>,
) -> Outcome {
    let mut topics: Vec<&str> = Vec::new();
    for r in dbz.iter().chain(sluice) {
        if !topics.contains(&r.topic.as_str()) {
            topics.push(&r.topic);
        }
    }
    let mut raw_pool: Vec<Option<J>> = raw
        .iter()
        .map(|j| {
            let mut r = Rec {
                topic: String::new(),
                key: J::Null,
                value: j.clone(),
                headers: Vec::new(),
            };
            normalize(&mut r);
            Some(r.value)
        })
        .collect();
    let mut out = Outcome::default();
    for topic in topics {
        let a: Vec<&Rec> = dbz.iter().filter(|r| r.topic == topic).collect();
        let b: Vec<&Rec> = sluice.iter().filter(|r| r.topic == topic).collect();
        // Heartbeats are timer-driven in both processes: their number depends
        // on timing, each one is compared.
        let heartbeat = topic.starts_with("__debezium-heartbeat");
        let n = if heartbeat {
            a.len().min(b.len())
        } else {
            a.len().max(b.len())
        };
        if heartbeat && (a.is_empty() || b.is_empty()) {
            out.compared += 1;
            out.report.push(format!(
                "{topic}: heartbeats: debezium {} sluice {}",
                a.len(),
                b.len()
            ));
            continue;
        }
        let mut same = 0;
        for i in 0..n {
            out.compared += 1;
            let (Some(x), Some(y)) = (a.get(i), b.get(i)) else {
                let (which, r) = match a.get(i) {
                    Some(r) => ("missing in sluice", r),
                    None => ("extra in sluice", &b[i]),
                };
                out.kind(&format!("{topic}: record {which}"), 1, r.summary());
                if out.report.len() < max_report {
                    out.report
                        .push(format!("{topic} #{i}: record {which}: {}", r.summary()));
                }
                continue;
            };
            let (mut x, mut y) = ((*x).clone(), (*y).clone());
            normalize(&mut x);
            normalize(&mut y);
            for label in deliberate(&mut x, &y) {
                out.deliberate_add(label, 1);
            }
            let diffs = record_diffs(&x, &y);
            for d in &diffs {
                let generic: String = generic_path(&d.path);
                out.kind(
                    &generic,
                    1,
                    format!(
                        "{topic} #{i}: debezium {} | sluice {}",
                        d.debezium, d.sluice
                    ),
                );
            }
            if diffs.is_empty() {
                same += 1;
                // Byte level: Sluice's converter output for this value.
                if !y.value.is_null() && !raw_pool.is_empty() {
                    out.bytes_checked += 1;
                    let found = raw_pool
                        .iter_mut()
                        .find(|slot| slot.as_ref().is_some_and(|v| v.same(&y.value)))
                        .and_then(Option::take);
                    match found {
                        Some(rv) if rv.identical(&x.value) => out.bytes_identical += 1,
                        Some(rv) => {
                            out.kind(&format!("{topic}: value bytes"), 1, String::new());
                            if out.report.len() < max_report {
                                out.report.push(format!(
                                    "{topic} #{i}: value bytes differ:\n      debezium {}\n      sluice   {}",
                                    short(&x.value, 600),
                                    short(&rv, 600)
                                ));
                            }
                        }
                        None => {
                            if out.report.len() < max_report {
                                out.report.push(format!(
                                    "{topic} #{i}: no raw value line of Sluice's matches this record"
                                ));
                            }
                        }
                    }
                }
            } else if out.report.len() < max_report {
                let mut s = format!(
                    "{topic} #{i} {}: {} differing path(s)",
                    x.summary(),
                    diffs.len()
                );
                for d in diffs.iter().take(25) {
                    s.push_str(&format!(
                        "\n      {}: debezium {} | sluice {}",
                        d.path, d.debezium, d.sluice
                    ));
                }
                out.report.push(s);
            }
        }
        out.identical += same;
    }
    out
}

/// A path with array indices removed (`a[3].b` -> `a[].b`).
fn generic_path(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    let mut in_index = false;
    for c in p.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push('[');
            }
            ']' if in_index => {
                in_index = false;
                out.push(']');
            }
            c if in_index && c.is_ascii_digit() => {}
            c => {
                if in_index {
                    // A field name in brackets: keep it.
                    in_index = false;
                }
                out.push(c);
            }
        }
    }
    out
}

/// The class name Debezium 3.x counts a logical decoding message under, in a
/// transaction's `data_collections`, followed by `@` and a Java identity hash.
pub const MESSAGE_COLLECTION: &str =
    "io.debezium.connector.postgresql.LogicalDecodingMessageMonitor$LogicalDecodingMessageId@";

/// A transaction END's message collections: their identity hash (random in
/// every JVM) and with it their place in the list (a Java HashMap's order)
/// are per process, so both are set aside.
fn normalize_message_collections(value: &mut J) {
    let payload = if value.get("schema").is_some() {
        value.get_mut("payload")
    } else {
        Some(value)
    };
    let Some(p) = payload else { return };
    let Some(J::Arr(list)) = p.get_mut("data_collections") else {
        return;
    };
    let mut any = false;
    for e in list.iter_mut() {
        if let Some(n) = e.get_mut("data_collection") {
            if n.str().is_some_and(|s| s.starts_with(MESSAGE_COLLECTION)) {
                *n = J::string(&format!("{MESSAGE_COLLECTION}<identity hash: normalized>"));
                any = true;
            }
        }
    }
    if any {
        list.sort_by_key(|e| {
            e.get("data_collection")
                .and_then(J::str)
                .unwrap_or("")
                .to_string()
        });
    }
}
