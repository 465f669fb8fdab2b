//! A parser for PostgreSQL's COPY text format, reusing its buffers so a
//! snapshot of any size allocates nothing per row.

use anyhow::{bail, Result};

use crate::table::Cell;

/// Splits COPY text rows into unescaped fields.
#[derive(Debug, Default)]
pub struct CopyRow {
    data: Vec<u8>,
    fields: Vec<Option<(usize, usize)>>,
}

fn octal(b: u8) -> Option<u8> {
    (b'0'..=b'7').contains(&b).then(|| b - b'0')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

impl CopyRow {
    /// Parses one row (without its trailing newline).
    pub fn parse(&mut self, line: &[u8]) -> Result<()> {
        self.data.clear();
        self.fields.clear();
        let mut start = 0;
        let mut i = 0;
        let mut null = false;
        let n = line.len();
        loop {
            if i >= n || line[i] == b'\t' {
                if null {
                    self.fields.push(None);
                } else {
                    self.fields.push(Some((start, self.data.len())));
                }
                if i >= n {
                    break;
                }
                i += 1;
                start = self.data.len();
                null = false;
                continue;
            }
            let c = line[i];
            if c != b'\\' {
                // Copy a run of plain bytes at once.
                let run_end = line[i..]
                    .iter()
                    .position(|&b| b == b'\\' || b == b'\t')
                    .map_or(n, |p| i + p);
                self.data.extend_from_slice(&line[i..run_end]);
                i = run_end;
                continue;
            }
            i += 1;
            let Some(&e) = line.get(i) else {
                bail!("COPY row ends inside an escape sequence");
            };
            i += 1;
            match e {
                b'N' if self.data.len() == start && (i >= n || line[i] == b'\t') => null = true,
                b'b' => self.data.push(8),
                b'f' => self.data.push(12),
                b'n' => self.data.push(b'\n'),
                b'r' => self.data.push(b'\r'),
                b't' => self.data.push(b'\t'),
                b'v' => self.data.push(11),
                b'x' => {
                    let mut v = 0u8;
                    let mut digits = 0;
                    while digits < 2 {
                        match line.get(i).copied().and_then(hex) {
                            Some(h) => {
                                v = v.wrapping_mul(16).wrapping_add(h);
                                i += 1;
                                digits += 1;
                            }
                            None => break,
                        }
                    }
                    if digits == 0 {
                        self.data.push(b'x');
                    } else {
                        self.data.push(v);
                    }
                }
                d if octal(d).is_some() => {
                    let mut v = octal(d).unwrap_or(0);
                    let mut digits = 1;
                    while digits < 3 {
                        match line.get(i).copied().and_then(octal) {
                            Some(o) => {
                                v = v.wrapping_mul(8).wrapping_add(o);
                                i += 1;
                                digits += 1;
                            }
                            None => break,
                        }
                    }
                    self.data.push(v);
                }
                other => self.data.push(other),
            }
        }
        Ok(())
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether the row has no field.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Field `i` as a cell.
    pub fn cell(&self, i: usize) -> Cell<'_> {
        match self.fields.get(i).copied().flatten() {
            Some((s, e)) => Cell::Text(&self.data[s..e]),
            None => Cell::Null,
        }
    }

    /// All fields as cells.
    pub fn cells(&self) -> impl ExactSizeIterator<Item = Cell<'_>> + '_ {
        (0..self.fields.len()).map(|i| self.cell(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(line: &[u8]) -> Vec<Option<Vec<u8>>> {
        let mut r = CopyRow::default();
        r.parse(line).expect("parses");
        r.cells()
            .map(|c| match c {
                Cell::Text(t) => Some(t.to_vec()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn plain_null_and_escapes() {
        assert_eq!(
            fields(b"1\tab\\tc\t\\N\t\\\\N\t"),
            vec![
                Some(b"1".to_vec()),
                Some(b"ab\tc".to_vec()),
                None,
                Some(b"\\N".to_vec()),
                Some(Vec::new())
            ]
        );
        assert_eq!(fields(b"\\101\\x42\\n"), vec![Some(b"AB\n".to_vec())]);
    }

    #[test]
    fn truncated_escape_is_an_error() {
        let mut r = CopyRow::default();
        assert!(r.parse(b"abc\\").is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let mut r = CopyRow::default();
            let _ = r.parse(&bytes);
        }
    }
}
