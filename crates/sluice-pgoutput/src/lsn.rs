//! WAL positions and PostgreSQL timestamps.

use crate::error::DecodeError;

/// A WAL position (PostgreSQL `XLogRecPtr`), as a plain 64-bit byte offset.
pub type Lsn = u64;

/// Microseconds between the Unix epoch (1970-01-01) and the PostgreSQL epoch
/// (2000-01-01), both UTC. Add it to a protocol timestamp to get Unix micros.
pub const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// Converts a protocol timestamp (micros since 2000-01-01) to micros since
/// 1970-01-01, or `None` if the result does not fit in an `i64`.
pub fn pg_micros_to_unix_micros(pg_micros: i64) -> Option<i64> {
    pg_micros.checked_add(PG_EPOCH_OFFSET_MICROS)
}

/// Converts micros since 1970-01-01 to a protocol timestamp (micros since
/// 2000-01-01), or `None` on overflow.
pub fn unix_micros_to_pg_micros(unix_micros: i64) -> Option<i64> {
    unix_micros.checked_sub(PG_EPOCH_OFFSET_MICROS)
}

/// Formats an LSN the way PostgreSQL prints `pg_lsn` values, e.g. `16/B374D848`.
pub fn format_lsn(lsn: Lsn) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// Parses the textual `pg_lsn` form (`16/B374D848`): two hexadecimal numbers
/// of 1 to 8 digits each (either case), separated by `/`, as PostgreSQL's
/// `pg_lsn` input function accepts.
pub fn parse_lsn(s: &str) -> Result<Lsn, DecodeError> {
    let err = |offset: usize| DecodeError::InvalidLsn {
        input: s.to_owned(),
        offset,
    };
    let Some(slash) = s.find('/') else {
        return Err(err(s.len()));
    };
    let part = |text: &str, base: usize| -> Result<u64, DecodeError> {
        if text.is_empty() || text.len() > 8 {
            return Err(err(base));
        }
        if let Some(bad) = text.bytes().position(|b| !b.is_ascii_hexdigit()) {
            return Err(err(base + bad));
        }
        u64::from_str_radix(text, 16).map_err(|_| err(base))
    };
    let hi = part(s.get(..slash).unwrap_or_default(), 0)?;
    let lo = part(s.get(slash + 1..).unwrap_or_default(), slash + 1)?;
    Ok((hi << 32) | lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_and_parse() {
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(format_lsn(0), "0/0");
        assert_eq!(parse_lsn("16/B374D848").unwrap(), 0x16_B374_D848);
        assert_eq!(parse_lsn("16/b374d848").unwrap(), 0x16_B374_D848);
        assert_eq!(parse_lsn("FFFFFFFF/FFFFFFFF").unwrap(), u64::MAX);
        for bad in [
            "",
            "/",
            "1/",
            "/1",
            "1",
            "123456789/0",
            "0/123456789",
            "g/0",
            "0/0/0",
            "+1/0",
            " 1/0",
        ] {
            assert!(parse_lsn(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn epoch_offset_is_thirty_years() {
        // 30 years of 365 days plus 7 leap days (1972..=1996).
        assert_eq!(PG_EPOCH_OFFSET_MICROS, (30 * 365 + 7) * 86_400 * 1_000_000);
        assert_eq!(pg_micros_to_unix_micros(0), Some(PG_EPOCH_OFFSET_MICROS));
        assert_eq!(pg_micros_to_unix_micros(i64::MAX), None);
        assert_eq!(unix_micros_to_pg_micros(PG_EPOCH_OFFSET_MICROS), Some(0));
    }
}
