//! Dates and times in PostgreSQL's ISO output (`DateStyle=ISO`,
//! `TimeZone=UTC`), on the proleptic Gregorian calendar that both
//! PostgreSQL and `java.time` use, and the ISO-8601 strings Debezium prints.

use std::fmt::Write as _;

use crate::error::{bad, Reason};

pub(crate) const MICROS_PER_SECOND: i64 = 1_000_000;
pub(crate) const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

/// Debezium's stand-ins for `infinity` / `-infinity` timestamps: pgjdbc's
/// `PGStatement.DATE_POSITIVE_INFINITY` / `DATE_NEGATIVE_INFINITY` taken as
/// microseconds since the epoch (`PostgresValueConverter`).
pub(crate) const TS_POS_INFINITY_MICROS: i64 = 9_223_372_036_825_200_000;
pub(crate) const TS_NEG_INFINITY_MICROS: i64 = -9_223_372_036_832_400_000;

/// Debezium's stand-ins for `infinity` / `-infinity` dates are the dates
/// -5877611-06-21 and -5877611-06-22 (`PostgresValueConverter`), which
/// become these epoch days: +infinity is the smaller one.
pub(crate) const DATE_POS_INFINITY_DAYS: i32 = -2_147_472_692;
pub(crate) const DATE_NEG_INFINITY_DAYS: i32 = -2_147_472_691;

/// A parsed date or timestamp: a finite instant or one of the infinities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Point<T> {
    Finite(T),
    PosInfinity,
    NegInfinity,
}

/// Days since 1970-01-01 of a proleptic Gregorian date (year 0 = 1 BC).
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian (year, month, day) of days since 1970-01-01.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn is_leap(y: i64) -> bool {
    y.rem_euclid(4) == 0 && (y.rem_euclid(100) != 0 || y.rem_euclid(400) == 0)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        2 => 28,
        _ => 31,
    }
}

/// A cursor over ASCII text.
struct Cur<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cur<'a> {
    fn new(s: &'a str) -> Self {
        Cur {
            b: s.as_bytes(),
            i: 0,
        }
    }
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, c: u8) -> Result<(), Reason> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(bad("unexpected character"))
        }
    }
    /// Unsigned decimal with between `min` and `max` digits.
    fn num(&mut self, min: usize, max: usize) -> Result<i64, Reason> {
        let start = self.i;
        let mut v: i64 = 0;
        while let Some(c @ b'0'..=b'9') = self.peek() {
            if self.i - start == max {
                return Err(bad("number too long"));
            }
            v = v * 10 + i64::from(c - b'0');
            self.i += 1;
        }
        if self.i - start < min {
            return Err(bad("digits expected"));
        }
        Ok(v)
    }
    /// An optional `.digits` fraction (1 to 9 digits) as nanoseconds.
    fn fraction_nanos(&mut self) -> Result<i64, Reason> {
        if !self.eat(b'.') {
            return Ok(0);
        }
        let start = self.i;
        let v = self.num(1, 9)?;
        let n = self.i - start;
        Ok(v * 10i64.pow(9 - n as u32))
    }
    fn rest(&self) -> &'a [u8] {
        &self.b[self.i..]
    }
    fn done(&self) -> bool {
        self.i == self.b.len()
    }
}

/// `YYYY-MM-DD`, year of era with at least one digit (PostgreSQL pads to 4
/// and goes beyond 9999).
fn date_part(c: &mut Cur<'_>) -> Result<(i64, u32, u32), Reason> {
    let y = c.num(1, 10)?;
    c.expect(b'-')?;
    let m = c.num(2, 2)? as u32;
    c.expect(b'-')?;
    let d = c.num(2, 2)? as u32;
    if !(1..=12).contains(&m) {
        return Err(bad("month out of range"));
    }
    Ok((y, m, d))
}

/// Applies a trailing ` BC` (year of era N BC is proleptic year 1 - N) and
/// checks the day of month.
fn finish_date(c: &mut Cur<'_>, (yoe, m, d): (i64, u32, u32)) -> Result<i64, Reason> {
    let year = if c.rest() == b" BC" {
        c.i += 3;
        if yoe == 0 {
            return Err(bad("year 0 BC does not exist"));
        }
        1 - yoe
    } else {
        yoe
    };
    if d == 0 || d > days_in_month(year, m) {
        return Err(bad("day out of range"));
    }
    Ok(days_from_civil(year, m, d))
}

/// `HH:MM:SS[.fffffffff]` as nanoseconds of day; hours up to `max_hour`.
fn time_part(c: &mut Cur<'_>, max_hour: i64) -> Result<i64, Reason> {
    let h = c.num(2, 2)?;
    c.expect(b':')?;
    let mi = c.num(2, 2)?;
    c.expect(b':')?;
    let s = c.num(2, 2)?;
    let nanos = c.fraction_nanos()?;
    if h > max_hour || mi > 59 || s > 59 {
        return Err(bad("time out of range"));
    }
    let total = ((h * 60 + mi) * 60 + s) * 1_000_000_000 + nanos;
    if total > 86_400 * 1_000_000_000 {
        return Err(bad("time out of range"));
    }
    Ok(total)
}

/// `+HH[:MM[:SS]]` / `-HH...` as seconds east of UTC.
fn offset_part(c: &mut Cur<'_>) -> Result<i64, Reason> {
    let sign = match c.peek() {
        Some(b'+') => 1,
        Some(b'-') => -1,
        _ => return Err(bad("time zone offset expected")),
    };
    c.i += 1;
    let h = c.num(2, 2)?;
    let mut secs = h * 3600;
    if c.eat(b':') {
        secs += c.num(2, 2)? * 60;
        if c.eat(b':') {
            secs += c.num(2, 2)?;
        }
    }
    if h > 18 {
        return Err(bad("time zone offset out of range"));
    }
    Ok(sign * secs)
}

/// A `date` as days since the epoch.
pub(crate) fn parse_date(s: &str) -> Result<Point<i64>, Reason> {
    match s {
        "infinity" => return Ok(Point::PosInfinity),
        "-infinity" => return Ok(Point::NegInfinity),
        _ => {}
    }
    let mut c = Cur::new(s);
    let ymd = date_part(&mut c)?;
    let days = finish_date(&mut c, ymd)?;
    if !c.done() {
        return Err(bad("trailing characters"));
    }
    Ok(Point::Finite(days))
}

/// A `timestamp` / `timestamptz` as microseconds since the epoch (UTC for
/// timestamptz; the wall clock read as UTC for timestamp, as Debezium does).
pub(crate) fn parse_timestamp(s: &str, with_tz: bool) -> Result<Point<i64>, Reason> {
    match s {
        "infinity" => return Ok(Point::PosInfinity),
        "-infinity" => return Ok(Point::NegInfinity),
        _ => {}
    }
    let mut c = Cur::new(s);
    let ymd = date_part(&mut c)?;
    c.expect(b' ')?;
    let nanos = time_part(&mut c, 23)?;
    let offset = if with_tz { offset_part(&mut c)? } else { 0 };
    let days = finish_date(&mut c, ymd)?;
    if !c.done() {
        return Err(bad("trailing characters"));
    }
    // Sub-microsecond digits cannot come from PostgreSQL; Java truncates them.
    let micros = days
        .checked_mul(MICROS_PER_DAY)
        .and_then(|v| v.checked_add(nanos / 1000))
        .and_then(|v| v.checked_sub(offset * MICROS_PER_SECOND))
        .ok_or_else(|| bad("timestamp out of range"))?;
    Ok(Point::Finite(micros))
}

/// A `time` as microseconds of day (`24:00:00` allowed), parsed as Debezium's
/// `Strings.asDuration` does, then truncated to microseconds.
pub(crate) fn parse_time(s: &str) -> Result<i64, Reason> {
    let mut c = Cur::new(s);
    let nanos = time_part(&mut c, 24)?;
    if !c.done() {
        return Err(bad("trailing characters"));
    }
    Ok(nanos / 1000)
}

/// A `timetz` normalised to UTC, as microseconds of day.
pub(crate) fn parse_timetz(s: &str) -> Result<i64, Reason> {
    let mut c = Cur::new(s);
    // 24:00:00 is a valid timetz; shifted to UTC it wraps around midnight
    // (Debezium: '24:00:00-03' is 03:00:00Z).
    let nanos = time_part(&mut c, 24)?;
    let offset = offset_part(&mut c)?;
    if !c.done() {
        return Err(bad("trailing characters"));
    }
    Ok((nanos / 1000 - offset * MICROS_PER_SECOND).rem_euclid(MICROS_PER_DAY))
}

/// Appends `ISO_LOCAL_DATE`: 4-digit years, `+` beyond 9999, `-` before year 0.
fn push_date(out: &mut String, days: i64) {
    let (y, m, d) = civil_from_days(days);
    if y > 9999 {
        let _ = write!(out, "+{y}");
    } else if y < 0 {
        let _ = write!(out, "-{:04}", -y);
    } else {
        let _ = write!(out, "{y:04}");
    }
    let _ = write!(out, "-{m:02}-{d:02}");
}

/// Appends `HH:mm:ss` and the fraction: exactly `width` digits when
/// `width` is 1-9, else `ISO_LOCAL_TIME`'s shortest (none when zero).
fn push_time(out: &mut String, micros_of_day: i64, width: Option<u32>) {
    let secs = micros_of_day / MICROS_PER_SECOND;
    let frac = micros_of_day % MICROS_PER_SECOND;
    let _ = write!(
        out,
        "{:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    let nanos = frac * 1000;
    match width {
        Some(w) if (1..=9).contains(&w) => {
            let _ = write!(out, ".{:0w$}", nanos / 10i64.pow(9 - w), w = w as usize);
        }
        _ if nanos != 0 => {
            let mut digits = format!("{nanos:09}");
            while digits.ends_with('0') {
                digits.pop();
            }
            out.push('.');
            out.push_str(&digits);
        }
        _ => {}
    }
}

/// `ZonedTimestamp.toIsoString`: ISO-8601 at UTC (`Z`), with `width`
/// fraction digits when the column's scale is 1-9, else the shortest.
pub(crate) fn format_zoned_timestamp(micros: i64, width: Option<u32>) -> String {
    let mut out = String::with_capacity(32);
    let days = micros.div_euclid(MICROS_PER_DAY);
    push_date(&mut out, days);
    out.push('T');
    push_time(&mut out, micros.rem_euclid(MICROS_PER_DAY), width);
    out.push('Z');
    out
}

/// `ZonedTime.toIsoString` of a UTC time: `ISO_OFFSET_TIME`.
pub(crate) fn format_zoned_time(micros_of_day: i64) -> String {
    let mut out = String::with_capacity(20);
    push_time(&mut out, micros_of_day, None);
    out.push('Z');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2016, 11, 4), 17109);
        for z in [-1_000_000i64, -719_468, -1, 0, 59, 17109, 2_932_896] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
    }

    #[test]
    fn infinity_stand_ins() {
        assert_eq!(
            days_from_civil(-5_877_611, 6, 21),
            i64::from(DATE_POS_INFINITY_DAYS)
        );
        assert_eq!(
            days_from_civil(-5_877_611, 6, 22),
            i64::from(DATE_NEG_INFINITY_DAYS)
        );
    }

    #[test]
    fn dates() {
        assert_eq!(parse_date("2016-11-04"), Ok(Point::Finite(17109)));
        // 1 BC is proleptic year 0.
        assert_eq!(
            parse_date("0001-01-01 BC"),
            Ok(Point::Finite(days_from_civil(0, 1, 1)))
        );
        assert_eq!(
            parse_date("10000-01-01"),
            Ok(Point::Finite(days_from_civil(10000, 1, 1)))
        );
        assert!(parse_date("2016-02-30").is_err());
        assert!(parse_date("2016-11-04x").is_err());
        assert!(parse_date("").is_err());
    }

    #[test]
    fn timestamps() {
        assert_eq!(
            parse_timestamp("2016-11-04 13:51:30.123456", false),
            Ok(Point::Finite(1_478_267_490_123_456))
        );
        assert_eq!(
            parse_timestamp("2016-11-04 11:51:30.123456+00", true),
            Ok(Point::Finite(1_478_267_490_123_456 - 7_200_000_000))
        );
        assert_eq!(
            parse_timestamp("2016-11-04 13:51:30.123456+02:00", true),
            Ok(Point::Finite(1_478_267_490_123_456 - 7_200_000_000))
        );
        assert_eq!(
            parse_timestamp("294247-01-01 23:59:59.999999", false),
            Ok(Point::Finite(9_223_371_331_200_000_000 - 1))
        );
    }

    #[test]
    fn formats() {
        let m = 1_478_267_490_123_456 - 7_200_000_000;
        assert_eq!(
            format_zoned_timestamp(m, Some(6)),
            "2016-11-04T11:51:30.123456Z"
        );
        assert_eq!(
            format_zoned_timestamp(m - 123_456, Some(6)),
            "2016-11-04T11:51:30.000000Z"
        );
        assert_eq!(
            format_zoned_timestamp(m - 123_456, None),
            "2016-11-04T11:51:30Z"
        );
        assert_eq!(
            format_zoned_timestamp(m - 3456, None),
            "2016-11-04T11:51:30.12Z"
        );
        let big = match parse_timestamp("21016-11-04 06:51:30.123456+00", true) {
            Ok(Point::Finite(v)) => v,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            format_zoned_timestamp(big, Some(6)),
            "+21016-11-04T06:51:30.123456Z"
        );
        let bc = match parse_timestamp("4714-12-31 23:59:59.999999+00 BC", true) {
            Ok(Point::Finite(v)) => v,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            format_zoned_timestamp(bc, Some(6)),
            "-4713-12-31T23:59:59.999999Z"
        );
        assert_eq!(
            format_zoned_time(parse_timetz("13:51:30.123789+02").unwrap()),
            "11:51:30.123789Z"
        );
        assert_eq!(
            format_zoned_time(parse_timetz("01:00:00+02").unwrap()),
            "23:00:00Z"
        );
        assert_eq!(
            format_zoned_time(parse_timetz("11:51:02+00").unwrap()),
            "11:51:02Z"
        );
    }
}
