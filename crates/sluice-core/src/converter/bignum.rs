//! Just enough arbitrary-precision integer arithmetic for Connect's Decimal:
//! two's-complement bytes to decimal digits and back, as Java's
//! `BigInteger` does (`toByteArray` is the minimal two's complement).

/// Big-endian two's complement to (negative, decimal digits of the
/// magnitude). Empty input is zero.
pub(crate) fn twos_complement_to_decimal(bytes: &[u8]) -> (bool, Vec<u8>) {
    let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
    let mut mag: Vec<u8> = bytes.to_vec();
    if negative {
        // Magnitude of a negative number: invert and add one.
        for b in mag.iter_mut() {
            *b = !*b;
        }
        for b in mag.iter_mut().rev() {
            let (v, carry) = b.overflowing_add(1);
            *b = v;
            if !carry {
                break;
            }
        }
    }
    // Limbs of 32 bits, most significant first.
    let skip = mag.iter().take_while(|b| **b == 0).count();
    let mag = &mag[skip..];
    let mut limbs: Vec<u32> = Vec::with_capacity(mag.len() / 4 + 1);
    let head = mag.len() % 4;
    if head != 0 {
        limbs.push(
            mag[..head]
                .iter()
                .fold(0u32, |a, b| (a << 8) | u32::from(*b)),
        );
    }
    for chunk in mag[head..].chunks(4) {
        limbs.push(chunk.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b)));
    }
    if limbs.is_empty() {
        return (false, b"0".to_vec());
    }
    // Repeated division by 10^9 yields base-10^9 chunks, least significant first.
    let mut chunks: Vec<u32> = Vec::new();
    let mut start = 0;
    while start < limbs.len() {
        let mut rem: u64 = 0;
        for limb in limbs[start..].iter_mut() {
            let cur = (rem << 32) | u64::from(*limb);
            *limb = (cur / 1_000_000_000) as u32;
            rem = cur % 1_000_000_000;
        }
        chunks.push(rem as u32);
        while start < limbs.len() && limbs[start] == 0 {
            start += 1;
        }
    }
    let mut out = Vec::with_capacity(chunks.len() * 9);
    let mut first = true;
    for c in chunks.iter().rev() {
        let s = if first {
            c.to_string()
        } else {
            format!("{c:09}")
        };
        first = false;
        out.extend_from_slice(s.as_bytes());
    }
    (negative, out)
}

/// Decimal digits (ASCII, any leading zeros) and a sign to the minimal
/// big-endian two's complement, as `BigInteger.toByteArray()`.
pub(crate) fn decimal_to_twos_complement(negative: bool, digits: &[u8]) -> Vec<u8> {
    // Little-endian 32-bit limbs of the magnitude.
    let mut limbs: Vec<u32> = Vec::new();
    for &d in digits {
        let mut carry = u64::from(d.wrapping_sub(b'0'));
        for limb in limbs.iter_mut() {
            let cur = u64::from(*limb) * 10 + carry;
            *limb = cur as u32;
            carry = cur >> 32;
        }
        if carry != 0 {
            limbs.push(carry as u32);
        }
    }
    let mut mag: Vec<u8> = Vec::with_capacity(limbs.len() * 4 + 1);
    for limb in limbs.iter().rev() {
        mag.extend_from_slice(&limb.to_be_bytes());
    }
    let skip = mag.iter().take_while(|b| **b == 0).count();
    let mag = &mag[skip..];
    if mag.is_empty() {
        return vec![0];
    }
    if !negative {
        let mut out = Vec::with_capacity(mag.len() + 1);
        if mag[0] & 0x80 != 0 {
            out.push(0);
        }
        out.extend_from_slice(mag);
        return out;
    }
    // Negate: invert and add one over one extra sign byte, then trim
    // redundant leading 0xff bytes.
    let mut out = Vec::with_capacity(mag.len() + 1);
    out.push(0u8);
    out.extend_from_slice(mag);
    for b in out.iter_mut() {
        *b = !*b;
    }
    for b in out.iter_mut().rev() {
        let (v, carry) = b.overflowing_add(1);
        *b = v;
        if !carry {
            break;
        }
    }
    let mut start = 0;
    while start + 1 < out.len() && out[start] == 0xff && out[start + 1] & 0x80 != 0 {
        start += 1;
    }
    out.drain(..start);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal(v: i128) -> Vec<u8> {
        let b = v.to_be_bytes();
        let mut start = 0;
        while start + 1 < b.len()
            && ((b[start] == 0 && b[start + 1] & 0x80 == 0)
                || (b[start] == 0xff && b[start + 1] & 0x80 != 0))
        {
            start += 1;
        }
        b[start..].to_vec()
    }

    #[test]
    fn round_trips_against_i128() {
        for v in [
            0i128,
            1,
            -1,
            127,
            128,
            -128,
            -129,
            255,
            256,
            65535,
            -65536,
            i64::MAX as i128,
            i64::MIN as i128,
            i128::MAX,
            i128::MIN,
            1_000_000_000,
            -999_999_999_999,
        ] {
            let bytes = minimal(v);
            let (neg, digits) = twos_complement_to_decimal(&bytes);
            let text = format!(
                "{}{}",
                if neg { "-" } else { "" },
                String::from_utf8_lossy(&digits)
            );
            assert_eq!(text, v.to_string());
            let back = decimal_to_twos_complement(v < 0, v.unsigned_abs().to_string().as_bytes());
            assert_eq!(back, bytes, "{v}");
        }
    }
}
