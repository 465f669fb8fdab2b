//! The subset of `java.text.SimpleDateFormat` that `TimestampConverter`
//! needs, in UTC (Kafka sets the format's zone to UTC) and the US English
//! locale Connect workers run with: era `G`, year `y`/`Y` (as `y`), month
//! `M`/`L` (number, `MMM` short and `MMMM` full name), day `d`, day of year
//! `D`, day-of-week-in-month `F`, weekday `E` (name) and `u` (number), `a`,
//! hours `H` `k` `K` `h`, `m`, `s`, milliseconds `S`, zones `z` `Z` `X`,
//! `'quoted'` text. Week numbers (`w`, `W`) are refused: they depend on
//! locale week rules that Sluice does not model.
//!
//! Parsing is lenient, as `SimpleDateFormat`'s default: out-of-range values
//! roll over (month 13 is January of the next year) and trailing text is
//! ignored.

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Field(char, usize),
    Literal(String),
}

/// A compiled pattern.
#[derive(Debug, Clone)]
pub struct JavaDateFormat {
    pattern: String,
    tokens: Vec<Token>,
}

fn numeric(c: char, count: usize) -> bool {
    match c {
        'y' | 'd' | 'D' | 'F' | 'u' | 'H' | 'k' | 'K' | 'h' | 'm' | 's' | 'S' => true,
        'M' => count <= 2,
        _ => false,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (month may be any
/// value; it is normalized first).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let months = year * 12 + (month - 1);
    let (y, m) = (months.div_euclid(12), months.rem_euclid(12) + 1);
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468 + (day - 1)
}

/// (year, month 1-12, day 1-31) of days since the epoch.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn pad(out: &mut String, v: i64, width: usize) {
    if v < 0 {
        out.push('-');
    }
    let s = v.unsigned_abs().to_string();
    for _ in s.len()..width {
        out.push('0');
    }
    out.push_str(&s);
}

impl JavaDateFormat {
    /// Compiles a pattern; the error says what Java would reject.
    pub fn new(pattern: &str) -> Result<Self, String> {
        let mut tokens = Vec::new();
        let chars: Vec<char> = pattern.chars().collect();
        let mut i = 0;
        let mut lit = String::new();
        while i < chars.len() {
            let c = chars[i];
            if c == '\'' {
                if chars.get(i + 1) == Some(&'\'') {
                    lit.push('\'');
                    i += 2;
                    continue;
                }
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(format!("Unterminated quote in pattern: {pattern}")),
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            lit.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(ch) => {
                            lit.push(*ch);
                            i += 1;
                        }
                    }
                }
            } else if c.is_ascii_alphabetic() {
                if !"GyYMLdDFEuaHkKhmsSzZX".contains(c) {
                    return Err(if "wW".contains(c) {
                        format!("pattern letter '{c}' (week numbers) is not supported by Sluice")
                    } else {
                        format!("Illegal pattern character '{c}'")
                    });
                }
                let mut n = 1;
                while chars.get(i + n) == Some(&c) {
                    n += 1;
                }
                if !lit.is_empty() {
                    tokens.push(Token::Literal(std::mem::take(&mut lit)));
                }
                let c = match c {
                    'Y' => 'y',
                    'L' => 'M',
                    other => other,
                };
                tokens.push(Token::Field(c, n));
                i += n;
            } else {
                lit.push(c);
                i += 1;
            }
        }
        if !lit.is_empty() {
            tokens.push(Token::Literal(lit));
        }
        Ok(JavaDateFormat {
            pattern: pattern.to_string(),
            tokens,
        })
    }

    /// The pattern as given.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// Formats ms since the epoch, in UTC.
    pub fn format(&self, epoch_ms: i64) -> String {
        let days = epoch_ms.div_euclid(DAY_MS);
        let ms = epoch_ms.rem_euclid(DAY_MS);
        let (y, mo, d) = civil_from_days(days);
        let weekday = (days + 4).rem_euclid(7) as usize; // 0 = Sunday
        let hour = ms / 3_600_000;
        let mut out = String::new();
        for t in &self.tokens {
            match t {
                Token::Literal(s) => out.push_str(s),
                Token::Field(c, n) => {
                    let n = *n;
                    match c {
                        'G' => out.push_str(if y > 0 { "AD" } else { "BC" }),
                        'y' => {
                            // Years before 1 are written as era years.
                            let ey = if y > 0 { y } else { 1 - y };
                            if n == 2 {
                                pad(&mut out, ey % 100, 2)
                            } else {
                                pad(&mut out, ey, n)
                            }
                        }
                        'M' => match n {
                            1 | 2 => pad(&mut out, mo, n),
                            3 => out.push_str(&MONTHS[(mo - 1) as usize][..3]),
                            _ => out.push_str(MONTHS[(mo - 1) as usize]),
                        },
                        'd' => pad(&mut out, d, n),
                        'D' => pad(&mut out, days - days_from_civil(y, 1, 1) + 1, n),
                        'F' => pad(&mut out, (d - 1) / 7 + 1, n),
                        'E' => {
                            if n >= 4 {
                                out.push_str(DAYS[weekday])
                            } else {
                                out.push_str(&DAYS[weekday][..3])
                            }
                        }
                        'u' => pad(&mut out, if weekday == 0 { 7 } else { weekday as i64 }, n),
                        'a' => out.push_str(if hour < 12 { "AM" } else { "PM" }),
                        'H' => pad(&mut out, hour, n),
                        'k' => pad(&mut out, if hour == 0 { 24 } else { hour }, n),
                        'K' => pad(&mut out, hour % 12, n),
                        'h' => pad(&mut out, if hour % 12 == 0 { 12 } else { hour % 12 }, n),
                        'm' => pad(&mut out, (ms / 60_000) % 60, n),
                        's' => pad(&mut out, (ms / 1000) % 60, n),
                        'S' => pad(&mut out, ms % 1000, n),
                        'z' => out.push_str(if n >= 4 {
                            "Coordinated Universal Time"
                        } else {
                            "UTC"
                        }),
                        'Z' => out.push_str("+0000"),
                        _ => out.push('Z'), // X: ISO 8601 zone, "Z" for UTC
                    }
                }
            }
        }
        out
    }

    /// Parses text into ms since the epoch (UTC unless the text has a zone).
    pub fn parse(&self, text: &str) -> Result<i64, String> {
        let fail = || {
            format!(
                "Could not parse timestamp: value ({text}) does not match pattern ({})",
                self.pattern
            )
        };
        let s: Vec<char> = text.chars().collect();
        let mut pos = 0;
        let (mut year, mut month, mut day) = (1970i64, 1i64, 1i64);
        let mut day_of_year: Option<i64> = None;
        let (mut hour, mut minute, mut second, mut milli) = (0i64, 0i64, 0i64, 0i64);
        let mut pm: Option<bool> = None;
        let mut hour12 = false;
        let mut bc = false;
        let mut offset_ms = 0i64;
        for (ti, t) in self.tokens.iter().enumerate() {
            match t {
                Token::Literal(l) => {
                    for lc in l.chars() {
                        if s.get(pos) == Some(&lc) {
                            pos += 1;
                        } else if lc.is_whitespace() {
                            // Java's lenient parsing lets a space match none.
                        } else {
                            return Err(fail());
                        }
                    }
                }
                Token::Field(c, n) => {
                    let abutting = matches!(self.tokens.get(ti + 1), Some(Token::Field(nc, nn)) if numeric(*nc, *nn));
                    if numeric(*c, *n) {
                        let start = pos;
                        let neg = *c == 'y' && s.get(pos) == Some(&'-');
                        if neg {
                            pos += 1;
                        }
                        let max = if abutting { *n } else { usize::MAX };
                        let mut v: i64 = 0;
                        let digits_start = pos;
                        while pos < s.len() && pos - digits_start < max {
                            match s[pos].to_digit(10) {
                                Some(dg) => {
                                    v = v
                                        .checked_mul(10)
                                        .and_then(|v| v.checked_add(i64::from(dg)))
                                        .ok_or_else(fail)?;
                                    pos += 1;
                                }
                                None => break,
                            }
                        }
                        if pos == digits_start {
                            let _ = start;
                            return Err(fail());
                        }
                        let v = if neg { -v } else { v };
                        match c {
                            'y' => {
                                year = if *n <= 2 && pos - digits_start == 2 && !neg {
                                    // Two-digit years fall within 80 years
                                    // before and 20 after now.
                                    let now_year = civil_from_days(now_ms().div_euclid(DAY_MS)).0;
                                    let base = now_year - 80;
                                    let mut y = base - base.rem_euclid(100) + v;
                                    if y < base {
                                        y += 100;
                                    }
                                    y
                                } else {
                                    v
                                }
                            }
                            'M' => month = v,
                            'd' => day = v,
                            'D' => day_of_year = Some(v),
                            'H' => hour = v,
                            'k' => hour = if v == 24 { 0 } else { v },
                            'K' => {
                                hour = v;
                                hour12 = true
                            }
                            'h' => {
                                hour = if v == 12 { 0 } else { v };
                                hour12 = true
                            }
                            'm' => minute = v,
                            's' => second = v,
                            'S' => milli = v,
                            _ => {} // F, u: read but not needed for the instant
                        }
                    } else {
                        let rest: String = s[pos..].iter().collect();
                        let lower = rest.to_lowercase();
                        let take = |cands: &[String]| -> Option<(usize, usize)> {
                            cands
                                .iter()
                                .enumerate()
                                .filter(|(_, c)| lower.starts_with(&c.to_lowercase()))
                                .max_by_key(|(_, c)| c.len())
                                .map(|(i, c)| (i, c.chars().count()))
                        };
                        match c {
                            'M' => {
                                let mut names: Vec<String> =
                                    MONTHS.iter().map(|m| m.to_string()).collect();
                                names.extend(MONTHS.iter().map(|m| m[..3].to_string()));
                                let (i, len) = take(&names).ok_or_else(fail)?;
                                month = (i % 12) as i64 + 1;
                                pos += len;
                            }
                            'E' => {
                                let mut names: Vec<String> =
                                    DAYS.iter().map(|m| m.to_string()).collect();
                                names.extend(DAYS.iter().map(|m| m[..3].to_string()));
                                let (_, len) = take(&names).ok_or_else(fail)?;
                                pos += len;
                            }
                            'G' => {
                                let (i, len) =
                                    take(&["AD".into(), "BC".into()]).ok_or_else(fail)?;
                                bc = i == 1;
                                pos += len;
                            }
                            'a' => {
                                let (i, len) =
                                    take(&["AM".into(), "PM".into()]).ok_or_else(fail)?;
                                pm = Some(i == 1);
                                pos += len;
                            }
                            _ => {
                                // Zones: Z, UTC/GMT, or [+-]hh[[:]mm].
                                if lower.starts_with('z') {
                                    pos += 1;
                                    continue;
                                }
                                let mut p = pos;
                                for name in ["utc", "gmt"] {
                                    if lower.starts_with(name) {
                                        p += 3;
                                    }
                                }
                                let sign = match s.get(p) {
                                    Some('+') => 1,
                                    Some('-') => -1,
                                    _ if p > pos => {
                                        pos = p;
                                        continue;
                                    }
                                    _ => return Err(fail()),
                                };
                                p += 1;
                                let mut digits = Vec::new();
                                while let Some(dg) = s.get(p).and_then(|ch| ch.to_digit(10)) {
                                    digits.push(i64::from(dg));
                                    p += 1;
                                    if digits.len() == 2 && s.get(p) == Some(&':') {
                                        p += 1;
                                    }
                                    if digits.len() == 4 {
                                        break;
                                    }
                                }
                                let (h, m) = match digits.as_slice() {
                                    [a, b] => (a * 10 + b, 0),
                                    [a, b, c, d] => (a * 10 + b, c * 10 + d),
                                    [a] => (*a, 0),
                                    _ => return Err(fail()),
                                };
                                offset_ms = sign * (h * 3_600_000 + m * 60_000);
                                pos = p;
                            }
                        }
                    }
                }
            }
        }
        if hour12 && pm == Some(true) {
            hour += 12;
        }
        if bc {
            year = 1 - year;
        }
        let days = match day_of_year {
            Some(doy) => days_from_civil(year, 1, 1) + doy - 1,
            None => days_from_civil(year, month, day),
        };
        Ok(days * DAY_MS + hour * 3_600_000 + minute * 60_000 + second * 1000 + milli - offset_ms)
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_simple_date_format_in_utc() {
        let f = JavaDateFormat::new("yyyy-MM-dd'T'HH:mm:ss.SSSX").expect("pattern");
        assert_eq!(f.format(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        let f = JavaDateFormat::new("EEE, d MMM yy h:mm a z").expect("pattern");
        assert_eq!(f.format(1_700_000_000_123), "Tue, 14 Nov 23 10:13 PM UTC");
        let f = JavaDateFormat::new("yyyyMMddHHmmss").expect("pattern");
        assert_eq!(f.format(-1), "19691231235959");
    }

    #[test]
    fn parses_leniently_with_zones() {
        let f = JavaDateFormat::new("yyyy-MM-dd HH:mm:ss").expect("pattern");
        assert_eq!(f.parse("2023-11-14 22:13:20"), Ok(1_700_000_000_000));
        // Month 13 rolls into the next year, as lenient Java parsing does.
        assert_eq!(
            f.parse("2022-13-14 22:13:20"),
            f.parse("2023-01-14 22:13:20")
        );
        let f = JavaDateFormat::new("yyyyMMddHHmmssZ").expect("pattern");
        assert_eq!(f.parse("20231114231320+0100"), Ok(1_700_000_000_000));
        let f = JavaDateFormat::new("dd MMMM yyyy").expect("pattern");
        assert_eq!(f.parse("14 november 2023"), Ok(1_699_920_000_000));
        assert!(f.parse("14-11-2023").is_err());
    }

    #[test]
    fn rejects_unknown_letters() {
        assert!(JavaDateFormat::new("yyyy-ww").is_err());
        assert!(JavaDateFormat::new("yyyy-MM-dd'T").is_err());
        assert!(JavaDateFormat::new("qq").is_err());
    }
}
