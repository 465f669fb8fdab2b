//! Java's textual forms of numbers, as Kafka Connect's converters print them:
//! `Float.toString` / `Double.toString` (what Jackson writes for float and
//! double nodes) and `BigDecimal.toString` (what Jackson writes for decimal
//! nodes, used by `decimal.format=NUMERIC`).
//!
//! The float forms follow the JDK 19+ specification (Raffaello Giulietti's
//! shortest-decimal algorithm, also what Jackson's fast writer emits): the
//! shortest decimal that rounds back to the value, except that when that
//! decimal has a single digit a closer two-digit one is preferred (which is
//! why Java prints `Double.MIN_VALUE` as `4.9E-324`, not `5.0E-324`).

use std::fmt::Write as _;

/// A small stack buffer so formatting a float on the hot path allocates
/// nothing.
struct StackBuf {
    buf: [u8; 48],
    len: usize,
}

impl StackBuf {
    fn new() -> Self {
        StackBuf {
            buf: [0; 48],
            len: 0,
        }
    }
    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl std::fmt::Write for StackBuf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(std::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Splits Rust's `{:e}` output (`-1.2345e-7`) into significant digits
/// (without leading zeros, at most 20) and the decimal exponent of the first
/// digit.
fn split_exp(text: &[u8]) -> ([u8; 24], usize, i32) {
    let mut digits = [0u8; 24];
    let mut n = 0;
    let mut exp: i32 = 0;
    let mut exp_neg = false;
    let mut in_exp = false;
    for &c in text {
        match c {
            b'-' if in_exp => exp_neg = true,
            b'-' => {}
            b'e' => in_exp = true,
            b'0'..=b'9' if in_exp => exp = exp * 10 + i32::from(c - b'0'),
            b'0'..=b'9' if n < digits.len() => {
                digits[n] = c;
                n += 1;
            }
            _ => {}
        }
    }
    (digits, n, if exp_neg { -exp } else { exp })
}

/// Writes a finite, non-zero value from its significant digits and exponent
/// in Java's layout: plain notation for 10^-3 <= |v| < 10^7, otherwise
/// computerized scientific notation, always with a fractional digit.
fn layout(out: &mut Vec<u8>, negative: bool, digits: &[u8], exp: i32) {
    if negative {
        out.push(b'-');
    }
    if (-3..7).contains(&exp) {
        if exp >= 0 {
            let int_len = exp as usize + 1;
            for i in 0..int_len {
                out.push(*digits.get(i).unwrap_or(&b'0'));
            }
            out.push(b'.');
            if digits.len() > int_len {
                out.extend_from_slice(&digits[int_len..]);
            } else {
                out.push(b'0');
            }
        } else {
            out.extend_from_slice(b"0.");
            for _ in 0..(-exp - 1) {
                out.push(b'0');
            }
            out.extend_from_slice(digits);
        }
    } else {
        out.push(digits[0]);
        out.push(b'.');
        if digits.len() > 1 {
            out.extend_from_slice(&digits[1..]);
        } else {
            out.push(b'0');
        }
        out.push(b'E');
        let mut b = StackBuf::new();
        // Cannot fail: an i32 fits in the buffer.
        let _ = write!(b, "{exp}");
        out.extend_from_slice(b.as_bytes());
    }
}

macro_rules! java_float_impl {
    ($name:ident, $to_string:ident, $t:ty) => {
        /// Appends Java's `toString` of the value. Non-finite values are
        /// written bare (`NaN`, `Infinity`, `-Infinity`): the JSON writer
        /// quotes them, as Jackson does.
        pub fn $name(out: &mut Vec<u8>, v: $t) {
            if v.is_nan() {
                out.extend_from_slice(b"NaN");
                return;
            }
            if v.is_infinite() {
                out.extend_from_slice(if v > 0.0 { b"Infinity" } else { b"-Infinity" });
                return;
            }
            if v == 0.0 {
                out.extend_from_slice(if v.is_sign_negative() {
                    b"-0.0"
                } else {
                    b"0.0"
                });
                return;
            }
            let mut short = StackBuf::new();
            // Cannot fail: a float's shortest form fits in 48 bytes.
            let _ = write!(short, "{:e}", v);
            let (mut digits, mut n, mut exp) = split_exp(short.as_bytes());
            if n == 1 {
                // Java prefers the closest decimal of length 2 over a
                // length-1 one, when it still rounds to the same value.
                let mut two = StackBuf::new();
                let _ = write!(two, "{:.1e}", v);
                let parsed = std::str::from_utf8(two.as_bytes())
                    .ok()
                    .and_then(|s| s.parse::<$t>().ok());
                if parsed == Some(v) {
                    let (d2, n2, e2) = split_exp(two.as_bytes());
                    if n2 == 2 && d2[1] != b'0' {
                        digits = d2;
                        n = n2;
                        exp = e2;
                    }
                }
            }
            layout(out, v.is_sign_negative(), &digits[..n], exp);
        }

        /// Java's `toString` of the value.
        pub fn $to_string(v: $t) -> String {
            let mut out = Vec::with_capacity(24);
            $name(&mut out, v);
            String::from_utf8(out).unwrap_or_default()
        }
    };
}

java_float_impl!(write_double, double_to_string, f64);
java_float_impl!(write_float, float_to_string, f32);

/// Appends Java's `BigDecimal.toString()` of `unscaled × 10^-scale`, where
/// `unscaled` is big-endian two's complement (Connect's Decimal bytes).
/// Empty bytes are read as zero.
pub fn write_big_decimal(out: &mut Vec<u8>, unscaled: &[u8], scale: i32) {
    let (negative, digits) = super::bignum::twos_complement_to_decimal(unscaled);
    write_big_decimal_digits(out, negative, &digits, scale);
}

/// Java's `BigDecimal.toString()` of `unscaled × 10^-scale`.
pub fn big_decimal_to_string(unscaled: &[u8], scale: i32) -> String {
    let mut out = Vec::new();
    write_big_decimal(&mut out, unscaled, scale);
    String::from_utf8(out).unwrap_or_default()
}

/// `BigDecimal.toString()` from the magnitude's decimal digits (no leading
/// zeros, "0" for zero).
pub(crate) fn write_big_decimal_digits(
    out: &mut Vec<u8>,
    negative: bool,
    digits: &[u8],
    scale: i32,
) {
    if negative {
        out.push(b'-');
    }
    let len = digits.len() as i64;
    let adjusted = -i64::from(scale) + (len - 1);
    if scale >= 0 && adjusted >= -6 {
        let scale = scale as i64;
        if scale == 0 {
            out.extend_from_slice(digits);
        } else if len > scale {
            let point = (len - scale) as usize;
            out.extend_from_slice(&digits[..point]);
            out.push(b'.');
            out.extend_from_slice(&digits[point..]);
        } else {
            out.extend_from_slice(b"0.");
            for _ in 0..(scale - len) {
                out.push(b'0');
            }
            out.extend_from_slice(digits);
        }
    } else {
        out.push(digits[0]);
        if digits.len() > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        if adjusted != 0 {
            out.push(b'E');
            if adjusted > 0 {
                out.push(b'+');
            }
            let mut b = StackBuf::new();
            let _ = write!(b, "{adjusted}");
            out.extend_from_slice(b.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles() {
        let cases: &[(f64, &str)] = &[
            (1.0, "1.0"),
            (0.1, "0.1"),
            (123.456, "123.456"),
            (1e7, "1.0E7"),
            (9999999.0, "9999999.0"),
            (0.001, "0.001"),
            (0.0001, "1.0E-4"),
            (1e-5, "1.0E-5"),
            (1e10, "1.0E10"),
            (-0.0, "-0.0"),
            (0.0, "0.0"),
            (f64::MAX, "1.7976931348623157E308"),
            (f64::MIN_POSITIVE, "2.2250738585072014E-308"),
            (5e-324, "4.9E-324"),
            (1e23, "1.0E23"),
            (2e-3, "0.002"),
            (-1234567.125, "-1234567.125"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
        ];
        for (v, want) in cases {
            assert_eq!(double_to_string(*v), *want, "{v:e}");
        }
    }

    #[test]
    fn floats() {
        let cases: &[(f32, &str)] = &[
            (1.0, "1.0"),
            (0.1, "0.1"),
            (1e7, "1.0E7"),
            (f32::MAX, "3.4028235E38"),
            (f32::MIN_POSITIVE, "1.1754944E-38"),
            (1e-45, "1.4E-45"),
            (3.4e38, "3.4E38"),
            (-0.0, "-0.0"),
        ];
        for (v, want) in cases {
            assert_eq!(float_to_string(*v), *want, "{v:e}");
        }
    }

    #[test]
    fn big_decimals() {
        assert_eq!(big_decimal_to_string(&[0x01], 0), "1");
        assert_eq!(big_decimal_to_string(&[0x6e], 2), "1.10");
        assert_eq!(big_decimal_to_string(&[0xff], 2), "-0.01");
        assert_eq!(big_decimal_to_string(&[0x01], 10), "1E-10");
        assert_eq!(big_decimal_to_string(&[0x7b], -2), "1.23E+4");
        assert_eq!(big_decimal_to_string(&[0x00], 3), "0.000");
        assert_eq!(big_decimal_to_string(&[0x01], 7), "1E-7");
        assert_eq!(big_decimal_to_string(&[0x0c], 7), "0.0000012");
        assert_eq!(big_decimal_to_string(&[0x00], -1), "0E+1");
    }
}
