//! `hstore` text (`"a"=>"1", "b"=>NULL`) to Debezium's JSON string or map.
//!
//! pgjdbc reads hstore into a `java.util.HashMap`, and Debezium serialises
//! that map in its iteration order, so the pairs are put in the order a
//! `HashMap<String, String>` built by inserting them in text order iterates.

use crate::error::{bad, Reason};

/// The pairs of an hstore value, in text order.
pub(crate) fn parse(s: &str) -> Result<Vec<(String, Option<String>)>, Reason> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    skip_ws(&mut i);
    while i < b.len() {
        let key = quoted(b, &mut i)?;
        skip_ws(&mut i);
        if !b[i..].starts_with(b"=>") {
            return Err(bad("=> expected"));
        }
        i += 2;
        skip_ws(&mut i);
        let value = if b[i..].len() >= 4 && b[i..i + 4].eq_ignore_ascii_case(b"NULL") {
            i += 4;
            None
        } else {
            Some(quoted(b, &mut i)?)
        };
        out.push((key, value));
        skip_ws(&mut i);
        if i < b.len() {
            if b[i] != b',' {
                return Err(bad(", expected between pairs"));
            }
            i += 1;
            skip_ws(&mut i);
            if i == b.len() {
                return Err(bad("pair expected after ,"));
            }
        }
    }
    Ok(out)
}

/// A `"..."` string with backslash escapes, starting at `*i`.
fn quoted(b: &[u8], i: &mut usize) -> Result<String, Reason> {
    if b.get(*i) != Some(&b'"') {
        return Err(bad("quoted string expected"));
    }
    *i += 1;
    let mut out = Vec::new();
    while let Some(&c) = b.get(*i) {
        *i += 1;
        match c {
            b'"' => return String::from_utf8(out).map_err(|_| bad("invalid UTF-8")),
            b'\\' => {
                let Some(&n) = b.get(*i) else {
                    break;
                };
                out.push(n);
                *i += 1;
            }
            _ => out.push(c),
        }
    }
    Err(bad("unterminated quoted string"))
}

/// Java's `String.hashCode` (over UTF-16 code units).
pub(crate) fn java_string_hash(s: &str) -> i32 {
    let mut h: i32 = 0;
    let mut buf = [0u16; 2];
    for ch in s.chars() {
        for unit in ch.encode_utf16(&mut buf).iter() {
            h = h.wrapping_mul(31).wrapping_add(i32::from(*unit));
        }
    }
    h
}

/// The order in which a `java.util.HashMap` (default capacity 16, load
/// factor 0.75) iterates keys inserted in the given order: by bucket, and
/// within a bucket by insertion (resizes keep that relative order). Duplicate
/// keys keep their first position, as `put` does. Bins of eight or more keys
/// become trees in Java once the table has 64 buckets; that ordering is not
/// modelled, as hstore keys practically never collide so much.
pub(crate) fn java_hashmap_order(keys: &[&str]) -> Vec<usize> {
    let mut cap: usize = 16;
    let mut unique: Vec<(usize, u32)> = Vec::with_capacity(keys.len());
    for (idx, k) in keys.iter().enumerate() {
        if unique.iter().any(|&(j, _)| keys[j] == *k) {
            continue;
        }
        let h = java_string_hash(k) as u32;
        let spread = h ^ (h >> 16);
        let bin = spread as usize & (cap - 1);
        let bin_len = unique
            .iter()
            .filter(|&&(_, s)| s as usize & (cap - 1) == bin)
            .count();
        unique.push((idx, spread));
        // putVal: appending to a bin that already holds eight nodes calls
        // treeifyBin, which only resizes while the table is below 64.
        if bin_len >= 8 && cap < 64 {
            cap *= 2;
        }
        if unique.len() > cap * 3 / 4 {
            cap *= 2;
        }
    }
    let mask = cap - 1;
    let mut order: Vec<(usize, usize)> = unique
        .iter()
        .enumerate()
        .map(|(pos, &(_, s))| (s as usize & mask, pos))
        .collect();
    order.sort_unstable();
    order.into_iter().map(|(_, pos)| unique[pos].0).collect()
}

/// Appends a JSON string as Jackson's default generator writes it.
pub(crate) fn push_json_string(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\u{0C}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => {
                let v = c as usize;
                out.push_str("\\u00");
                out.push(char::from(HEX[v >> 4]));
                out.push(char::from(HEX[v & 0xf]));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The pairs in `HashMap` iteration order.
pub(crate) fn in_java_order(pairs: Vec<(String, Option<String>)>) -> Vec<(String, Option<String>)> {
    let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    let order = java_hashmap_order(&keys);
    // A later duplicate's value wins in the map, at the first one's place.
    let mut slots: Vec<Option<(String, Option<String>)>> = pairs.into_iter().map(Some).collect();
    let mut out = Vec::with_capacity(order.len());
    for idx in order {
        let Some((k, mut v)) = slots[idx].take() else {
            continue;
        };
        for later in slots.iter_mut().skip(idx + 1) {
            if later.as_ref().is_some_and(|(k2, _)| *k2 == k) {
                if let Some((_, v2)) = later.take() {
                    v = v2;
                }
            }
        }
        out.push((k, v));
    }
    out
}

/// Jackson's `{"k":"v","n":null}` for the pairs, in the order given.
pub(crate) fn to_json(pairs: &[(String, Option<String>)]) -> String {
    let mut out = String::with_capacity(2 + pairs.len() * 16);
    out.push('{');
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_string(&mut out, k);
        out.push(':');
        match v {
            Some(v) => push_json_string(&mut out, v),
            None => out.push_str("null"),
        }
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pairs() {
        let p = parse(r#""a"=>"1", "b"=>NULL, "q\"k"=>"x\\y""#).unwrap();
        assert_eq!(
            p,
            vec![
                ("a".into(), Some("1".into())),
                ("b".into(), None),
                ("q\"k".into(), Some("x\\y".into())),
            ]
        );
        assert_eq!(parse("").unwrap(), vec![]);
        assert!(parse(r#""a"=>"#).is_err());
        assert!(parse(r#""a"=>"1","#).is_err());
        assert!(parse(r#"a=>1"#).is_err());
    }

    #[test]
    fn java_hashes() {
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("hello"), 99_162_322);
        // "Aa" and "BB" collide in Java.
        assert_eq!(java_string_hash("Aa"), java_string_hash("BB"));
    }

    #[test]
    fn hashmap_order() {
        // Single letters hash to their code: 'a' = 97 -> bucket 1, 'b' -> 2,
        // 'p' = 112 -> bucket 0.
        assert_eq!(java_hashmap_order(&["b", "a", "p"]), vec![2, 1, 0]);
        // Colliding keys keep insertion order.
        assert_eq!(java_hashmap_order(&["BB", "Aa"]), vec![0, 1]);
        let json = to_json(&in_java_order(vec![
            ("b".into(), None),
            ("a".into(), Some("1".into())),
        ]));
        assert_eq!(json, r#"{"a":"1","b":null}"#);
    }

    #[test]
    fn jackson_escapes() {
        let mut s = String::new();
        push_json_string(&mut s, "a\"\\\n\u{1}é/");
        assert_eq!(s, "\"a\\\"\\\\\\n\\u0001é/\"");
    }
}
