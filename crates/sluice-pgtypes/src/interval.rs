//! `interval` in `IntervalStyle=iso_8601` (`P1Y2M3DT4H5M6.78S`, per-field
//! signs such as `P-1Y-2M3DT-4H`, `PT0S`), read into the fields pgjdbc's
//! `PGInterval` holds, then rendered as Debezium's `MicroDuration` or
//! `Interval` string.

use crate::error::{bad, Reason};

/// The fields of pgjdbc's `PGInterval` (42.6): whole units plus seconds
/// split into whole seconds and rounded microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct PgInterval {
    pub years: i32,
    pub months: i32,
    pub days: i32,
    pub hours: i32,
    pub minutes: i32,
    pub whole_seconds: i32,
    pub micros: i32,
}

/// Parses one signed decimal number (`-12`, `6.78`) up to its unit letter.
fn take_number<'a>(s: &mut &'a str) -> Result<(&'a str, u8), Reason> {
    let end = s
        .bytes()
        .position(|c| c.is_ascii_alphabetic())
        .ok_or_else(|| bad("unit letter expected"))?;
    let (num, rest) = s.split_at(end);
    let unit = rest.as_bytes()[0];
    *s = &rest[1..];
    if num.is_empty() {
        return Err(bad("number expected"));
    }
    Ok((num, unit))
}

fn int(num: &str) -> Result<i32, Reason> {
    let digits = num.strip_prefix(['-', '+']).unwrap_or(num);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return Err(bad("integer expected"));
    }
    num.parse::<i32>().map_err(|_| bad("field out of range"))
}

impl PgInterval {
    /// Parses PostgreSQL's ISO-8601 interval output.
    pub fn parse(s: &str) -> Result<PgInterval, Reason> {
        let body = s
            .strip_prefix('P')
            .ok_or_else(|| bad("ISO-8601 interval expected"))?;
        let (mut date, time) = match body.split_once('T') {
            Some((d, t)) => (d, Some(t)),
            None => (body, None),
        };
        let mut iv = PgInterval::default();
        // Units must come in order and at most once, as PostgreSQL writes them.
        let mut last = 0;
        while !date.is_empty() {
            let (num, unit) = take_number(&mut date)?;
            let rank = match unit {
                b'Y' => 1,
                b'M' => 2,
                b'D' => 3,
                _ => return Err(bad("unknown date unit")),
            };
            if rank <= last {
                return Err(bad("units out of order"));
            }
            last = rank;
            let v = int(num)?;
            match unit {
                b'Y' => iv.years = v,
                b'M' => iv.months = v,
                _ => iv.days = v,
            }
        }
        if let Some(mut time) = time {
            if time.is_empty() {
                return Err(bad("time part expected after T"));
            }
            let mut last = 0;
            while !time.is_empty() {
                let (num, unit) = take_number(&mut time)?;
                let rank = match unit {
                    b'H' => 1,
                    b'M' => 2,
                    b'S' => 3,
                    _ => return Err(bad("unknown time unit")),
                };
                if rank <= last {
                    return Err(bad("units out of order"));
                }
                last = rank;
                match unit {
                    b'H' => iv.hours = int(num)?,
                    b'M' => iv.minutes = int(num)?,
                    _ => iv.set_seconds(num)?,
                }
            }
        }
        if body.is_empty() {
            return Err(bad("empty interval"));
        }
        Ok(iv)
    }

    /// `PGInterval.setSeconds(Double.parseDouble(text))` as in pgjdbc 42.6:
    /// whole seconds truncated, the rest rounded to microseconds.
    fn set_seconds(&mut self, num: &str) -> Result<(), Reason> {
        let body = num.strip_prefix(['-', '+']).unwrap_or(num);
        let (i, f) = body.split_once('.').unwrap_or((body, ""));
        if i.is_empty() && f.is_empty()
            || !i.bytes().all(|c| c.is_ascii_digit())
            || !f.bytes().all(|c| c.is_ascii_digit())
        {
            return Err(bad("seconds expected"));
        }
        let seconds: f64 = num.parse().map_err(|_| bad("seconds expected"))?;
        if seconds.abs() >= 2_147_483_648.0 {
            return Err(bad("seconds out of range"));
        }
        let whole = seconds as i32;
        self.whole_seconds = whole;
        // Math.round: floor(x + 0.5).
        self.micros = ((seconds - f64::from(whole)) * 1_000_000.0 + 0.5).floor() as i32;
        Ok(())
    }

    /// `PGInterval.getSeconds()`.
    fn seconds(&self) -> f64 {
        f64::from(self.whole_seconds) + f64::from(self.micros) / 1_000_000.0
    }

    /// `MicroDuration.durationMicros(..., DAYS_PER_MONTH_AVG)`, with Java's
    /// double arithmetic and truncating cast.
    pub fn micro_duration(&self) -> i64 {
        let days_per_month = 365.25 / 12.0;
        let months = self.years.wrapping_mul(12).wrapping_add(self.months);
        let number_of_days = f64::from(months) * days_per_month + f64::from(self.days);
        let number_of_seconds = ((number_of_days * 24.0 + f64::from(self.hours)) * 60.0
            + f64::from(self.minutes))
            * 60.0
            + self.seconds();
        (number_of_seconds * 1e6) as i64
    }

    /// `Interval.toIsoString`: `P{y}Y{m}M{d}DT{h}H{min}M{s}S`, seconds as
    /// `BigDecimal.valueOf(double)` cut to 9 decimals and stripped of
    /// trailing zeros.
    pub fn iso_string(&self) -> String {
        let mut secs = format!("{}", self.seconds());
        if let Some(dot) = secs.find('.') {
            if secs.len() - dot - 1 > 9 {
                secs.truncate(dot + 10);
            }
            while secs.ends_with('0') {
                secs.pop();
            }
            if secs.ends_with('.') {
                secs.pop();
            }
        }
        if secs == "-0" {
            secs = "0".to_string();
        }
        format!(
            "P{}Y{}M{}DT{}H{}M{}S",
            self.years, self.months, self.days, self.hours, self.minutes, secs
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debezium_example() {
        let iv = PgInterval::parse("P1Y2M3DT4H5M6.78S").unwrap();
        assert_eq!(iv.micro_duration(), 37_091_106_780_000);
        assert_eq!(iv.iso_string(), "P1Y2M3DT4H5M6.78S");
    }

    #[test]
    fn zero_and_signs() {
        let z = PgInterval::parse("PT0S").unwrap();
        assert_eq!(z.micro_duration(), 0);
        assert_eq!(z.iso_string(), "P0Y0M0DT0H0M0S");
        let n = PgInterval::parse("P-1Y-2M3DT-4H-5M-6.5S").unwrap();
        assert_eq!(
            (n.years, n.months, n.days, n.hours, n.minutes),
            (-1, -2, 3, -4, -5)
        );
        assert_eq!((n.whole_seconds, n.micros), (-6, -500_000));
        assert_eq!(n.iso_string(), "P-1Y-2M3DT-4H-5M-6.5S");
        let d = PgInterval::parse("P3D").unwrap();
        assert_eq!(d.micro_duration(), 3 * 86_400_000_000);
        let us = PgInterval::parse("PT0.000001S").unwrap();
        assert_eq!(us.micro_duration(), 1);
        assert_eq!(us.iso_string(), "P0Y0M0DT0H0M0.000001S");
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "",
            "P",
            "1 day",
            "PT",
            "P1X",
            "PxY",
            "P1D2Y",
            "PT1.2.3S",
            "P99999999999Y",
        ] {
            assert!(PgInterval::parse(s).is_err(), "{s}");
        }
    }
}
