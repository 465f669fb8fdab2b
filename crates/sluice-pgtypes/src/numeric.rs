//! Decimal text (numeric and money) to Java `BigDecimal` semantics: unscaled
//! big-endian two's-complement bytes as `BigInteger.toByteArray` gives them,
//! rescaling, and plain-string rendering.

use crate::error::{bad, Reason};

/// A decimal number as text: sign, integer digits, fraction digits (both
/// ASCII digits only, possibly empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dec {
    pub neg: bool,
    /// Every digit, integer part then fraction part, leading zeros removed.
    pub digits: Vec<u8>,
    /// How many of `digits` are after the decimal point (may exceed
    /// `digits.len()` for values like 0.001).
    pub scale: i64,
}

/// What PostgreSQL prints for a numeric: a number or one of its specials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NumericText {
    Number(Dec),
    NaN,
    PosInf,
    NegInf,
}

/// Parses numeric output text (`-12.340`, `NaN`, `Infinity`, `-Infinity`).
pub(crate) fn parse_numeric(s: &str) -> Result<NumericText, Reason> {
    match s {
        "NaN" => return Ok(NumericText::NaN),
        "Infinity" => return Ok(NumericText::PosInf),
        "-Infinity" => return Ok(NumericText::NegInf),
        _ => {}
    }
    parse_plain(s, false).map(NumericText::Number)
}

/// Parses `[-+]digits[.digits]`; with `commas`, `,` group separators in the
/// integer part are skipped (money).
pub(crate) fn parse_plain(s: &str, commas: bool) -> Result<Dec, Reason> {
    let b = s.as_bytes();
    let (neg, rest) = match b.first() {
        Some(b'-') => (true, &b[1..]),
        Some(b'+') => (false, &b[1..]),
        _ => (false, b),
    };
    let mut digits = Vec::with_capacity(rest.len());
    let mut scale: i64 = 0;
    let mut seen_point = false;
    let mut any_digit = false;
    for &c in rest {
        match c {
            b'0'..=b'9' => {
                any_digit = true;
                // Leading zeros carry no value; dropping them keeps the
                // unscaled conversion small.
                if !(digits.is_empty() && c == b'0' && !seen_point) {
                    digits.push(c - b'0');
                }
                if seen_point {
                    scale += 1;
                }
            }
            b'.' if !seen_point => seen_point = true,
            b',' if commas && !seen_point => {}
            _ => return Err(bad("not a decimal number")),
        }
    }
    if !any_digit {
        return Err(bad("not a decimal number"));
    }
    // Fraction digits after the point that are leading zeros of the whole
    // number ("0.05") were kept, so only integer-part zeros were dropped.
    Ok(Dec { neg, digits, scale })
}

impl Dec {
    /// Whether the value is zero.
    pub fn is_zero(&self) -> bool {
        self.digits.iter().all(|&d| d == 0)
    }

    /// The value at exactly `target` fraction digits. Dropping non-zero
    /// digits is an error unless `round_half_up` (then rounds as
    /// `RoundingMode.HALF_UP`).
    pub fn rescaled(&self, target: i64, round_half_up: bool) -> Result<Dec, Reason> {
        let mut digits = self.digits.clone();
        if target >= self.scale {
            let extra =
                usize::try_from(target - self.scale).map_err(|_| bad("scale out of range"))?;
            if extra > 1 << 20 {
                return Err(bad("scale out of range"));
            }
            digits.resize(digits.len() + extra, 0);
        } else {
            let drop =
                usize::try_from(self.scale - target).map_err(|_| bad("scale out of range"))?;
            if drop > digits.len() {
                let pad = drop - digits.len();
                let mut padded = vec![0u8; pad];
                padded.extend_from_slice(&digits);
                digits = padded;
            }
            let keep = digits.len() - drop;
            let dropped = &digits[keep..];
            let round_up = if round_half_up {
                dropped.first().is_some_and(|&d| d >= 5)
            } else if dropped.iter().any(|&d| d != 0) {
                return Err(bad("more fraction digits than the column's scale"));
            } else {
                false
            };
            digits.truncate(keep);
            if round_up {
                increment(&mut digits);
            }
        }
        Ok(Dec {
            neg: self.neg,
            digits,
            scale: target,
        })
    }

    /// `stripTrailingZeros()` then, as Debezium does for variable-scale
    /// numerics, never a negative scale.
    pub fn stripped(&self) -> Dec {
        let mut digits = self.digits.clone();
        let mut scale = self.scale;
        while scale > 0 && digits.last() == Some(&0) {
            digits.pop();
            scale -= 1;
        }
        Dec {
            neg: self.neg,
            digits,
            scale,
        }
    }

    /// `BigDecimal.unscaledValue().toByteArray()`: minimal big-endian two's
    /// complement.
    pub fn unscaled_bytes(&self) -> Vec<u8> {
        let mag = magnitude_be(&self.digits);
        twos_complement(mag, self.neg)
    }

    /// `BigDecimal.toPlainString()`.
    pub fn plain_string(&self) -> String {
        let mut out = String::with_capacity(self.digits.len() + 3);
        if self.neg && !self.is_zero() {
            out.push('-');
        }
        let scale = self.scale;
        let n = self.digits.len() as i64;
        if scale <= 0 {
            if self.is_zero() {
                out.push('0');
            } else {
                out.extend(self.digits.iter().map(|d| char::from(b'0' + d)));
            }
            for _ in 0..(-scale) {
                if self.is_zero() {
                    break;
                }
                out.push('0');
            }
            return out;
        }
        let int_len = n - scale;
        if int_len <= 0 {
            out.push('0');
        } else {
            out.extend(
                self.digits[..int_len as usize]
                    .iter()
                    .map(|d| char::from(b'0' + d)),
            );
        }
        out.push('.');
        for _ in 0..(-int_len).max(0) {
            out.push('0');
        }
        let start = int_len.max(0) as usize;
        out.extend(self.digits[start..].iter().map(|d| char::from(b'0' + d)));
        out
    }

    /// `BigDecimal.doubleValue()`: the correctly rounded double.
    pub fn to_f64(&self) -> f64 {
        let s = self.plain_string();
        s.parse::<f64>().unwrap_or(f64::NAN)
    }
}

/// `BigInteger.toByteArray()` of a value that fits in 128 bits.
pub(crate) fn i128_bytes(v: i128) -> Vec<u8> {
    let b = v.to_be_bytes();
    let mut start = 0;
    // Drop sign-extension bytes while the next byte still carries the sign.
    while start < 15
        && ((b[start] == 0x00 && b[start + 1] & 0x80 == 0)
            || (b[start] == 0xff && b[start + 1] & 0x80 != 0))
    {
        start += 1;
    }
    b[start..].to_vec()
}

/// The unscaled value of plain decimal text at `scale` fraction digits
/// (`None`: the text's own scale with trailing fraction zeros stripped),
/// without intermediate allocations, when it fits in 38 digits. Returns the
/// unscaled bytes and the scale, or None to let the general path decide
/// (including about errors).
pub(crate) fn fast_unscaled(s: &str, scale: Option<i64>) -> Option<(Vec<u8>, i64)> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if int.is_empty()
        || !int.bytes().all(|c| c.is_ascii_digit())
        || !frac.bytes().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let frac = match scale {
        Some(_) => frac,
        None => frac.trim_end_matches('0'),
    };
    let target = scale.unwrap_or(frac.len() as i64);
    let pad = usize::try_from(target).ok()?.checked_sub(frac.len())?;
    let int = int.trim_start_matches('0');
    if int.len() + frac.len() + pad > 38 {
        return None;
    }
    let mut v: i128 = 0;
    for c in int.bytes().chain(frac.bytes()) {
        v = v * 10 + i128::from(c - b'0');
    }
    for _ in 0..pad {
        v *= 10;
    }
    Some((i128_bytes(if neg { -v } else { v }), target))
}

/// Adds one unit in the last place of a decimal digit string.
fn increment(digits: &mut Vec<u8>) {
    for d in digits.iter_mut().rev() {
        if *d == 9 {
            *d = 0;
        } else {
            *d += 1;
            return;
        }
    }
    digits.insert(0, 1);
}

/// The magnitude of a decimal digit string as big-endian bytes without
/// leading zeros (empty for zero).
fn magnitude_be(digits: &[u8]) -> Vec<u8> {
    // Little-endian base-2^32 limbs, fed nine decimal digits at a time.
    let mut limbs: Vec<u32> = Vec::with_capacity(digits.len() / 9 + 1);
    let mut i = digits.iter().position(|&d| d != 0).unwrap_or(digits.len());
    while i < digits.len() {
        let end = (i + 9).min(digits.len());
        let mut chunk: u64 = 0;
        let mut mul: u64 = 1;
        for &d in &digits[i..end] {
            chunk = chunk * 10 + u64::from(d);
            mul *= 10;
        }
        let mut carry = chunk;
        for limb in limbs.iter_mut() {
            let v = u64::from(*limb) * mul + carry;
            *limb = v as u32;
            carry = v >> 32;
        }
        if carry > 0 {
            limbs.push(carry as u32);
        }
        i = end;
    }
    let mut out = Vec::with_capacity(limbs.len() * 4);
    for limb in limbs.iter().rev() {
        out.extend_from_slice(&limb.to_be_bytes());
    }
    let first = out.iter().position(|&b| b != 0).unwrap_or(out.len());
    out.drain(..first);
    out
}

/// `BigInteger.toByteArray()` of the signed value with magnitude `mag`.
fn twos_complement(mut mag: Vec<u8>, neg: bool) -> Vec<u8> {
    if mag.is_empty() {
        return vec![0];
    }
    if !neg {
        if mag[0] & 0x80 != 0 {
            mag.insert(0, 0);
        }
        return mag;
    }
    for b in mag.iter_mut() {
        *b = !*b;
    }
    for b in mag.iter_mut().rev() {
        let (v, overflow) = b.overflowing_add(1);
        *b = v;
        if !overflow {
            break;
        }
    }
    if mag[0] & 0x80 == 0 {
        mag.insert(0, 0xff);
    }
    while mag.len() > 1 && mag[0] == 0xff && mag[1] & 0x80 != 0 {
        mag.remove(0);
    }
    mag
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Dec {
        parse_plain(s, true).unwrap()
    }

    #[test]
    fn unscaled_bytes_match_big_integer() {
        assert_eq!(dec("0").unscaled_bytes(), vec![0]);
        assert_eq!(dec("1.10").unscaled_bytes(), vec![110]);
        assert_eq!(dec("127").unscaled_bytes(), vec![127]);
        assert_eq!(dec("128").unscaled_bytes(), vec![0, 128]);
        assert_eq!(dec("-1").unscaled_bytes(), vec![0xff]);
        assert_eq!(dec("-128").unscaled_bytes(), vec![0x80]);
        assert_eq!(dec("-129").unscaled_bytes(), vec![0xff, 0x7f]);
        assert_eq!(dec("-256").unscaled_bytes(), vec![0xff, 0x00]);
        assert_eq!(dec("-32768").unscaled_bytes(), vec![0x80, 0x00]);
        assert_eq!(
            dec("18446744073709551616").unscaled_bytes(),
            vec![1, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(dec("10.1111").unscaled_bytes(), vec![0x01, 0x8a, 0xf7]);
    }

    #[test]
    fn fast_path_agrees_with_general_path() {
        for (text, scale) in [
            ("0", Some(2)),
            ("1.1", Some(2)),
            ("-1.28", Some(2)),
            ("-0.01", Some(4)),
            ("99999999999999999999999999999999999999", Some(0)),
            ("-170141183460469231731687303715884105728", Some(0)),
            ("22.2200", None),
            ("100.500", None),
            ("0.000", None),
            ("-12345678901234567890.123456789", None),
        ] {
            let general = parse_plain(text, false).unwrap();
            let general = match scale {
                Some(s) => general.rescaled(s, false).unwrap(),
                None => general.stripped(),
            };
            let want = (general.unscaled_bytes(), general.scale);
            match fast_unscaled(text, scale) {
                Some(got) => assert_eq!(got, want, "{text}"),
                None => assert!(text.len() > 38, "{text} should take the fast path"),
            }
        }
        assert_eq!(i128_bytes(0), vec![0]);
        assert_eq!(i128_bytes(-1), vec![0xff]);
        assert_eq!(i128_bytes(128), vec![0, 128]);
        assert_eq!(i128_bytes(i128::MIN).len(), 16);
        assert_eq!(fast_unscaled("1.234", Some(2)), None);
        assert_eq!(fast_unscaled("1e5", Some(2)), None);
    }

    #[test]
    fn rescale_and_strip() {
        let d = dec("1.1").rescaled(2, false).unwrap();
        assert_eq!(
            (d.unscaled_bytes(), d.plain_string()),
            (vec![110], "1.10".into())
        );
        assert!(dec("1.15").rescaled(1, false).is_err());
        assert_eq!(dec("1.15").rescaled(1, true).unwrap().plain_string(), "1.2");
        assert_eq!(
            dec("-1.15").rescaled(1, true).unwrap().plain_string(),
            "-1.2"
        );
        assert_eq!(dec("9.99").rescaled(0, true).unwrap().plain_string(), "10");
        assert_eq!(dec("22.2200").stripped().plain_string(), "22.22");
        assert_eq!(dec("100").stripped().plain_string(), "100");
        assert_eq!(dec("0.000").stripped().plain_string(), "0");
        assert_eq!(dec("0.05").plain_string(), "0.05");
        assert_eq!(dec("-0.00").plain_string(), "0.00");
        assert_eq!(dec("1,234.56").plain_string(), "1234.56");
    }
}
