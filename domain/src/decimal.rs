//! Exact amounts for accounting, and the dates usage journals carry.
//!
//! Quantities and prices are [`Decimal`]s: integers counting billionths, so sums of
//! movements are exact and every replica computes the same bytes (binary floating point
//! would round differently depending on the order of additions). Products round half to
//! even at the ninth decimal.

use super::ids::Timestamp;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Billionths per unit.
const SCALE: i128 = 1_000_000_000;
const SCALE_DIGITS: i64 = 9;

/// A fixed-point decimal with nine fractional digits, serialized as its shortest text
/// (`"12.5"`, `"0"`, `"-3"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Decimal(i128);

/// `n / d` rounded half to even (`d > 0`).
fn div_round(n: i128, d: i128) -> i128 {
    let q = n.div_euclid(d);
    let r = n.rem_euclid(d);
    match (2 * r).cmp(&d) {
        std::cmp::Ordering::Less => q,
        std::cmp::Ordering::Greater => q + 1,
        std::cmp::Ordering::Equal => q + (q & 1),
    }
}

impl Decimal {
    pub const ZERO: Decimal = Decimal(0);

    /// A whole number.
    pub const fn from_int(n: i64) -> Decimal {
        Decimal(n as i128 * SCALE)
    }

    /// The value in billionths.
    pub const fn billionths(self) -> i128 {
        self.0
    }

    pub fn is_negative(self) -> bool {
        self.0 < 0
    }

    /// Reads a decimal number: an optional sign, digits with an optional `.` and an
    /// optional exponent (`1.5`, `-2`, `3e2`, `.5`, `7.`; also the `1e` that libxml2's
    /// `xs:float` lets through, meaning an exponent of 0), surrounding whitespace allowed.
    /// More than nine decimals round half to even. `NaN` and infinities are refused.
    pub fn parse(text: &str) -> Result<Decimal, String> {
        let s = text.trim_matches(|c: char| c.is_ascii_whitespace());
        let bad = || format!("{text:?} is not a decimal number");
        let (negative, body) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let (number, exponent) = match body.find(['e', 'E']) {
            Some(at) => (&body[..at], Some(&body[at + 1..])),
            None => (body, None),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty()
            || !whole
                .bytes()
                .chain(fraction.bytes())
                .all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let mut exp: i64 = match exponent {
            None => 0,
            Some(e) => {
                let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
                if !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                if digits.is_empty() {
                    0
                } else if digits.len() > 6 {
                    return Err(format!("{text:?}: exponent out of range"));
                } else {
                    let v: i64 = digits.parse().map_err(|_| bad())?;
                    if e.starts_with('-') {
                        -v
                    } else {
                        v
                    }
                }
            }
        };
        let digits: String = whole.chars().chain(fraction.chars()).collect();
        let digits = digits.trim_start_matches('0');
        exp -= fraction.len() as i64;
        exp += SCALE_DIGITS;
        if digits.is_empty() {
            return Ok(Decimal::ZERO);
        }
        if digits.len() as i64 + exp > 30 {
            return Err(format!("{text:?} is too large"));
        }
        // at most 30 significant digits survive; more are rounded away below
        let (kept, dropped) = if digits.len() > 36 {
            let cut = digits.len() - 36;
            exp += cut as i64;
            (&digits[..36], &digits[36..])
        } else {
            (digits, "")
        };
        let mut mantissa: i128 = kept.parse().map_err(|_| bad())?;
        if !dropped.is_empty() {
            // sticky rounding of what did not fit: only whether anything was there matters
            // once the exponent below rounds again
            mantissa = mantissa * 10 + i128::from(dropped.bytes().any(|b| b != b'0'));
            exp -= 1;
        }
        let value = if exp >= 0 {
            let factor = 10i128
                .checked_pow(exp as u32)
                .ok_or_else(|| format!("{text:?} is too large"))?;
            mantissa
                .checked_mul(factor)
                .ok_or_else(|| format!("{text:?} is too large"))?
        } else if -exp > 38 {
            0
        } else {
            div_round(mantissa, 10i128.pow((-exp) as u32))
        };
        Ok(Decimal(if negative { -value } else { value }))
    }

    pub fn checked_add(self, other: Decimal) -> Option<Decimal> {
        self.0.checked_add(other.0).map(Decimal)
    }

    pub fn checked_sub(self, other: Decimal) -> Option<Decimal> {
        self.0.checked_sub(other.0).map(Decimal)
    }

    /// The product, rounded half to even at the ninth decimal; None on overflow.
    pub fn checked_mul(self, other: Decimal) -> Option<Decimal> {
        Some(Decimal(div_round(self.0.checked_mul(other.0)?, SCALE)))
    }

    /// Hours in a span of microseconds, rounded half to even at the ninth decimal.
    pub fn hours_of_micros(micros: u64) -> Decimal {
        Decimal(div_round(i128::from(micros) * 10, 36))
    }

    /// Rounded half to even to `digits` decimals (for display).
    pub fn round_to(self, digits: u32) -> Decimal {
        let digits = digits.min(SCALE_DIGITS as u32);
        let unit = 10i128.pow(SCALE_DIGITS as u32 - digits);
        Decimal(div_round(self.0, unit) * unit)
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let whole = abs / SCALE as u128;
        let fraction = abs % SCALE as u128;
        if fraction == 0 {
            return write!(f, "{sign}{whole}");
        }
        let text = format!("{fraction:09}");
        write!(f, "{sign}{whole}.{}", text.trim_end_matches('0'))
    }
}

/// Text in JSON (exact, readable), the count of billionths in binary encodings.
impl Serialize for Decimal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_i128(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Decimal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if !d.is_human_readable() {
            return Ok(Decimal(i128::deserialize(d)?));
        }
        let text = String::deserialize(d)?;
        Decimal::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Reads a date of a usage journal or of a query, as UTC: `2026-11-25 at 13:05:00`
/// (slapgrid's `%Y-%m-%d at %H:%M:%S`), `2026-11-25 13:05:00`, `2026-11-25T13:05:00`
/// (with an optional fraction of a second and an optional `Z` or `+00:00`), or
/// `2026-11-25` (midnight). Other offsets are refused rather than guessed.
pub fn parse_date(text: &str) -> Result<Timestamp, String> {
    use chrono::{NaiveDate, NaiveDateTime};
    let s = text.trim();
    let s = s
        .strip_suffix('Z')
        .or_else(|| s.strip_suffix("+00:00"))
        .unwrap_or(s);
    let parsed = NaiveDateTime::parse_from_str(s, "%Y-%m-%d at %H:%M:%S")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f"))
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f"))
        .or_else(|_| {
            NaiveDate::parse_from_str(s, "%Y-%m-%d").map(|d| d.and_time(chrono::NaiveTime::MIN))
        })
        .map_err(|_| {
            format!("{text:?} is not a date (YYYY-MM-DD, YYYY-MM-DD HH:MM:SS, YYYY-MM-DD at HH:MM:SS, or ISO 8601 in UTC)")
        })?;
    let micros = parsed.and_utc().timestamp_micros();
    u64::try_from(micros)
        .map(Timestamp::from_micros)
        .map_err(|_| format!("{text:?} is before 1970"))
}

/// A timestamp as ISO 8601 in UTC, to the second when it has no fraction
/// (`2026-11-25T13:05:00Z`).
pub fn format_date(at: Timestamp) -> String {
    let micros = i64::try_from(at.micros()).unwrap_or(i64::MAX);
    match chrono::DateTime::from_timestamp_micros(micros) {
        Some(t) if at.micros().is_multiple_of(1_000_000) => {
            t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
        }
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        None => at.to_slap_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Decimal {
        Decimal::parse(text).unwrap()
    }

    #[test]
    fn parses_the_forms_journals_write() {
        assert_eq!(d("12.5").to_string(), "12.5");
        assert_eq!(d(" 0.0 ").to_string(), "0");
        assert_eq!(d("-3").to_string(), "-3");
        assert_eq!(d("3e2").to_string(), "300");
        assert_eq!(d("1.5E-3").to_string(), "0.0015");
        assert_eq!(d(".5").to_string(), "0.5");
        assert_eq!(d("7.").to_string(), "7");
        assert_eq!(d("1e").to_string(), "1");
        assert_eq!(d("+1e+").to_string(), "1");
        // ten decimals round half to even at the ninth
        assert_eq!(d("0.0000000005").to_string(), "0");
        assert_eq!(d("0.0000000015").to_string(), "0.000000002");
        assert_eq!(d("0.00000000150001").to_string(), "0.000000002");
        assert_eq!(d("1e-400"), Decimal::ZERO);
        assert_eq!(
            d("0.1234567890123456789012345678901234567890").to_string(),
            "0.123456789"
        );
        for bad in [
            "", "NaN", "INF", "-INF", "1,5", "0x10", "e5", ".", "1e5.5", "--1",
        ] {
            assert!(Decimal::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Decimal::parse("1e40").unwrap_err().contains("too large"));
        assert!(Decimal::parse("1e9999999").is_err());
    }

    #[test]
    fn arithmetic_is_exact_and_rounds_half_even() {
        let sum = (0..10).fold(Decimal::ZERO, |a, _| a.checked_add(d("0.1")).unwrap());
        assert_eq!(sum, d("1"));
        assert_eq!(d("2.5").checked_mul(d("0.4")).unwrap(), d("1"));
        assert_eq!(
            d("0.000000001").checked_mul(d("0.5")).unwrap(),
            Decimal::ZERO
        );
        assert_eq!(
            d("0.000000003").checked_mul(d("0.5")).unwrap(),
            d("0.000000002")
        );
        assert_eq!(Decimal::hours_of_micros(5_400_000_000), d("1.5"));
        assert_eq!(
            Decimal::hours_of_micros(1_000_000).to_string(),
            "0.000277778"
        );
        assert_eq!(d("2.345").round_to(2), d("2.34"));
        assert_eq!(d("-1.005").round_to(2), d("-1"));
        let json = serde_json::to_string(&d("1.25")).unwrap();
        assert_eq!(json, "\"1.25\"");
        assert_eq!(serde_json::from_str::<Decimal>(&json).unwrap(), d("1.25"));
    }

    #[test]
    fn dates_in_the_forms_nodes_and_people_write() {
        let t = parse_date("2026-11-25 at 13:05:00").unwrap();
        assert_eq!(parse_date("2026-11-25 13:05:00").unwrap(), t);
        assert_eq!(parse_date("2026-11-25T13:05:00Z").unwrap(), t);
        assert_eq!(parse_date("2026-11-25T13:05:00+00:00").unwrap(), t);
        assert_eq!(format_date(t), "2026-11-25T13:05:00Z");
        assert_eq!(
            parse_date("2026-11-25").unwrap().micros() + 13 * 3_600_000_000 + 300_000_000,
            t.micros()
        );
        assert_eq!(
            format_date(parse_date("2026-11-25T13:05:00.25").unwrap()),
            "2026-11-25T13:05:00.250000Z"
        );
        for bad in [
            "",
            "yesterday",
            "2026-13-01",
            "2026-11-25T13:05:00+02:00",
            "1969-12-31",
        ] {
            assert!(parse_date(bad).is_err(), "{bad:?} accepted");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_text_parses_or_is_refused_without_panicking(text in "\\PC{0,40}") {
            let _ = Decimal::parse(&text);
            let _ = parse_date(&text);
        }

        #[test]
        fn number_like_text_never_panics(
            text in "[ +-]?[0-9]{0,45}(\\.[0-9]{0,45})?([eE][+-]?[0-9]{0,8})?"
        ) {
            if let Ok(d) = Decimal::parse(&text) {
                // what is shown reads back as the same value
                proptest::prop_assert_eq!(Decimal::parse(&d.to_string()), Ok(d));
            }
        }

        #[test]
        fn display_round_trips(b in -(10i128.pow(29))..10i128.pow(29)) {
            let d = Decimal(b);
            proptest::prop_assert_eq!(Decimal::parse(&d.to_string()), Ok(d));
        }

        #[test]
        fn products_round_half_even_within_half_a_billionth(
            a in 0i128..10i128.pow(21), b in 0i128..10i128.pow(15)
        ) {
            let p = Decimal(a).checked_mul(Decimal(b)).unwrap();
            let exact = a * b;
            let diff = (p.billionths() * 1_000_000_000 - exact).abs();
            proptest::prop_assert!(diff <= 500_000_000);
        }
    }
}
