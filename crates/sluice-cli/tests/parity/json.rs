//! A JSON reader that keeps what a byte-level comparison needs: object keys in
//! their order, and numbers and strings with their source text next to their
//! meaning.

/// A JSON value with its source text where it matters.
#[derive(Debug, Clone)]
pub enum J {
    Null,
    Bool(bool),
    /// The number as written (`1.0E10`, `-0.5`, `7`).
    Num(String),
    /// The decoded string and its source text, quotes and escapes included.
    Str(String, String),
    Arr(Vec<J>),
    /// Members in the order written.
    Obj(Vec<(String, J)>),
}

impl J {
    pub fn get(&self, key: &str) -> Option<&J> {
        match self {
            J::Obj(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut J> {
        match self {
            J::Obj(m) => m.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<J> {
        match self {
            J::Obj(m) => {
                let i = m.iter().position(|(k, _)| k == key)?;
                Some(m.remove(i).1)
            }
            _ => None,
        }
    }

    pub fn str(&self) -> Option<&str> {
        match self {
            J::Str(s, _) => Some(s),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, J::Null)
    }

    pub fn string(s: &str) -> J {
        J::Str(s.to_string(), serde_json::to_string(s).unwrap_or_default())
    }

    /// The JSON type's name, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            J::Null => "null",
            J::Bool(_) => "boolean",
            J::Num(_) => "number",
            J::Str(..) => "string",
            J::Arr(_) => "array",
            J::Obj(_) => "object",
        }
    }

    /// Compact JSON text (source text of numbers and strings kept).
    pub fn text(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            J::Null => out.push_str("null"),
            J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            J::Num(n) => out.push_str(n),
            J::Str(_, raw) => out.push_str(raw),
            J::Arr(a) => {
                out.push('[');
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.write(out);
                }
                out.push(']');
            }
            J::Obj(m) => {
                out.push('{');
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(k).unwrap_or_default());
                    out.push(':');
                    v.write(out);
                }
                out.push('}');
            }
        }
    }

    /// Equal in meaning: same keys in the same order, numbers equal as
    /// numbers (`1.0E10` = `10000000000.0`), strings equal once decoded.
    pub fn same(&self, other: &J) -> bool {
        match (self, other) {
            (J::Null, J::Null) => true,
            (J::Bool(a), J::Bool(b)) => a == b,
            (J::Num(a), J::Num(b)) => num_eq(a, b),
            (J::Str(a, _), J::Str(b, _)) => a == b,
            (J::Arr(a), J::Arr(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same(y)),
            (J::Obj(a), J::Obj(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b)
                        .all(|((ka, va), (kb, vb))| ka == kb && va.same(vb))
            }
            _ => false,
        }
    }

    /// Equal byte for byte.
    pub fn identical(&self, other: &J) -> bool {
        self.text() == other.text()
    }
}

/// Numbers equal in value: integers exactly, others as doubles.
pub fn num_eq(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    match (a.parse::<i128>(), b.parse::<i128>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => match (a.parse::<f64>(), b.parse::<f64>()) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        },
    }
}

/// Parses one JSON document.
pub fn parse(text: &str) -> Result<J, String> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
        text,
    };
    let v = p.value()?;
    p.ws();
    if p.i != p.s.len() {
        return Err(format!("trailing characters at {}", p.i));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    text: &'a str,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn err<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("{what} at byte {}", self.i))
    }

    fn value(&mut self) -> Result<J, String> {
        self.ws();
        let Some(&c) = self.s.get(self.i) else {
            return self.err("unexpected end");
        };
        match c {
            b'{' => {
                self.i += 1;
                let mut m = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(J::Obj(m));
                }
                loop {
                    self.ws();
                    let J::Str(k, _) = self.string()? else {
                        return self.err("key expected");
                    };
                    self.ws();
                    if self.s.get(self.i) != Some(&b':') {
                        return self.err("':' expected");
                    }
                    self.i += 1;
                    let v = self.value()?;
                    m.push((k, v));
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(J::Obj(m));
                        }
                        _ => return self.err("',' or '}' expected"),
                    }
                }
            }
            b'[' => {
                self.i += 1;
                let mut a = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(J::Arr(a));
                }
                loop {
                    a.push(self.value()?);
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(J::Arr(a));
                        }
                        _ => return self.err("',' or ']' expected"),
                    }
                }
            }
            b'"' => self.string(),
            b't' if self.s[self.i..].starts_with(b"true") => {
                self.i += 4;
                Ok(J::Bool(true))
            }
            b'f' if self.s[self.i..].starts_with(b"false") => {
                self.i += 5;
                Ok(J::Bool(false))
            }
            b'n' if self.s[self.i..].starts_with(b"null") => {
                self.i += 4;
                Ok(J::Null)
            }
            b'-' | b'0'..=b'9' => {
                let start = self.i;
                self.i += 1;
                while self.i < self.s.len()
                    && matches!(
                        self.s[self.i],
                        b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-'
                    )
                {
                    self.i += 1;
                }
                Ok(J::Num(self.text[start..self.i].to_string()))
            }
            _ => self.err("unexpected character"),
        }
    }

    fn string(&mut self) -> Result<J, String> {
        let start = self.i;
        if self.s.get(self.i) != Some(&b'"') {
            return self.err("string expected");
        }
        self.i += 1;
        while self.i < self.s.len() {
            match self.s[self.i] {
                b'\\' => self.i += 2,
                b'"' => {
                    self.i += 1;
                    let raw = &self.text[start..self.i];
                    let decoded: String =
                        serde_json::from_str(raw).map_err(|e| format!("bad string {raw}: {e}"))?;
                    return Ok(J::Str(decoded, raw.to_string()));
                }
                _ => self.i += 1,
            }
        }
        self.err("unterminated string")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_text_and_order() {
        let j = parse(r#"{"b":1.0E10,"a":"\u00e9","c":[null,true]}"#).unwrap();
        assert_eq!(j.text(), r#"{"b":1.0E10,"a":"\u00e9","c":[null,true]}"#);
        let k = parse(r#"{"b":10000000000.0,"a":"é","c":[null,true]}"#).unwrap();
        assert!(j.same(&k));
        assert!(!j.identical(&k));
        let reordered = parse(r#"{"a":"é","b":1e10,"c":[null,true]}"#).unwrap();
        assert!(!j.same(&reordered));
    }
}
