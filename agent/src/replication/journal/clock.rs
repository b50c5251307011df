//! Time for the journal: a [`Timestamp`] type (microseconds since the Unix epoch, UTC) with
//! RFC 3339 text, and the injectable [`Clock`] so tests can drive "24 hours" in microseconds.
//! Nothing else in the agent may read the system clock directly.
//! Every arithmetic on times saturates: a source time comes off the wire and may be any `i64`,
//! and a sum or difference past the ends of the range stays at the end instead of wrapping
//! (release) or panicking (debug).

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};

/// A point in time, microseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

pub const MICROS_PER_SECOND: i64 = 1_000_000;

impl Timestamp {
    pub fn from_secs(secs: i64) -> Timestamp {
        Timestamp(secs.saturating_mul(MICROS_PER_SECOND))
    }
    pub fn plus_secs(self, secs: i64) -> Timestamp {
        Timestamp(
            self.0
                .saturating_add(secs.saturating_mul(MICROS_PER_SECOND)),
        )
    }
    /// Whole seconds from `earlier` to `self` (negative if `earlier` is later).
    pub fn secs_since(self, earlier: Timestamp) -> i64 {
        self.micros_since(earlier).div_euclid(MICROS_PER_SECOND)
    }
    /// Microseconds from `earlier` to `self` (negative if `earlier` is later).
    pub fn micros_since(self, earlier: Timestamp) -> i64 {
        self.0.saturating_sub(earlier.0)
    }

    /// Parses RFC 3339 (`2026-11-26T09:30:00Z`, `…T09:30:00.5+02:00`): the instant it names.
    pub fn parse_rfc3339(text: &str) -> Result<Timestamp, String> {
        parse(text).map(|(t, _)| t)
    }

    /// Parses RFC 3339 as the last microsecond the text covers: a time to the whole second
    /// stands for all of that second (`…T09:30:00Z` is `…T09:30:00.999999Z`), because that is
    /// the form tables show and an operator copies; a time with a fraction stands for itself.
    pub fn parse_rfc3339_through(text: &str) -> Result<Timestamp, String> {
        parse(text).map(|(t, fraction)| {
            if fraction {
                t
            } else {
                Timestamp(t.0.saturating_add(MICROS_PER_SECOND - 1))
            }
        })
    }
}

/// The one RFC 3339 parser: the instant, and whether the text had a fraction of a second.
fn parse(text: &str) -> Result<(Timestamp, bool), String> {
    let bad = || format!("{text:?} is not an RFC 3339 time such as 2026-11-26T09:30:00Z");
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, String> {
        let s = text.get(r).ok_or_else(bad)?;
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse::<i64>().map_err(|_| bad())
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b[13] != b':' || b[16] != b':' {
        return Err(bad());
    }
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return Err(bad());
    }
    let mut i = 19;
    let mut micros = 0i64;
    let fraction = b.get(i) == Some(&b'.');
    if fraction {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return Err(bad());
        }
        // Digits past the microsecond are dropped: every time the journal keeps is a whole
        // microsecond, so "at or before" compares the same either way.
        let frac = &text[start..i.min(start + 6)];
        micros = frac.parse::<i64>().map_err(|_| bad())? * 10i64.pow(6 - frac.len() as u32);
    }
    let offset_secs = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let v = num(i + 1..i + 3)? * 3600 + num(i + 4..i + 6)? * 60;
            if *sign == b'+' {
                v
            } else {
                -v
            }
        }
        _ => return Err(bad()),
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + s - offset_secs;
    Ok((Timestamp(secs * MICROS_PER_SECOND + micros), fraction))
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC: to the second (`2026-11-26T09:30:00Z`) for tables and messages, or
    /// with the alternate flag (`{:#}`) to the microsecond, always six digits
    /// (`2026-11-26T09:30:00.250000Z`), so the text names exactly this instant when parsed
    /// back (see [`Timestamp::parse_rfc3339_through`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.div_euclid(MICROS_PER_SECOND);
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
            rem / 3600,
            rem / 60 % 60,
            rem % 60
        )?;
        if f.alternate() {
            write!(f, ".{:06}", self.0.rem_euclid(MICROS_PER_SECOND))?;
        }
        f.write_str("Z")
    }
}

// Howard Hinnant's proleptic Gregorian calendar conversions.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

/// Where the journal gets "now" from.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// The host's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(d.as_micros() as i64)
    }
}

/// A clock tests move by hand.
#[derive(Debug, Default)]
pub struct FakeClock(AtomicI64);

impl FakeClock {
    pub fn new(start: Timestamp) -> FakeClock {
        FakeClock(AtomicI64::new(start.0))
    }
    pub fn set(&self, t: Timestamp) {
        self.0.store(t.0, Ordering::SeqCst);
    }
    pub fn advance_secs(&self, secs: i64) {
        let now = Timestamp(self.0.load(Ordering::SeqCst));
        self.set(now.plus_secs(secs));
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_at_the_ends_of_the_range_saturates() {
        let (min, max) = (Timestamp(i64::MIN), Timestamp(i64::MAX));
        assert_eq!(max.secs_since(min), i64::MAX / MICROS_PER_SECOND);
        assert_eq!(min.secs_since(max), i64::MIN.div_euclid(MICROS_PER_SECOND));
        assert_eq!(min.micros_since(Timestamp(1)), i64::MIN);
        assert_eq!(max.plus_secs(1), max);
        assert_eq!(min.plus_secs(-1), min);
        assert_eq!(Timestamp(0).plus_secs(i64::MIN), min);
        assert_eq!(Timestamp::from_secs(i64::MAX), max);
        assert_eq!(Timestamp::from_secs(i64::MIN), min);
        // Both ends print (as years far outside RFC 3339's, which is only ever shown).
        assert!(min.to_string().ends_with('Z') && max.to_string().ends_with('Z'));
        assert!(format!("{min:#}").ends_with('Z') && format!("{max:#}").ends_with('Z'));
        let c = FakeClock::new(max);
        c.advance_secs(10);
        assert_eq!(c.now(), max);
    }

    #[test]
    fn rfc3339_round_trips_and_honours_offsets() {
        let t = Timestamp::parse_rfc3339("2026-11-26T09:30:00Z").unwrap();
        assert_eq!(t.to_string(), "2026-11-26T09:30:00Z");
        let u = Timestamp::parse_rfc3339("2026-11-26T11:30:00.250+02:00").unwrap();
        assert_eq!(u.0, t.0 + 250_000);
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00Z");
        assert!(Timestamp::parse_rfc3339("2026-13-01T00:00:00Z").is_err());
        assert!(Timestamp::parse_rfc3339("yesterday").is_err());
    }

    #[test]
    fn the_full_precision_form_parses_back_to_the_same_instant() {
        let t = Timestamp(1_795_651_200_250_001);
        assert_eq!(format!("{t:#}"), "2026-11-26T00:00:00.250001Z");
        assert_eq!(format!("{t}"), "2026-11-26T00:00:00Z");
        assert_eq!(Timestamp::parse_rfc3339_through(&format!("{t:#}")), Ok(t));
        let whole = Timestamp::from_secs(1_795_651_200);
        assert_eq!(format!("{whole:#}"), "2026-11-26T00:00:00.000000Z");
        assert_eq!(
            Timestamp::parse_rfc3339_through(&format!("{whole:#}")),
            Ok(whole)
        );
        assert_eq!(
            format!("{:#}", Timestamp(-1)),
            "1969-12-31T23:59:59.999999Z"
        );
    }

    #[test]
    fn a_time_to_the_second_stands_for_the_whole_of_that_second() {
        let start = Timestamp::parse_rfc3339("2026-11-26T09:30:00Z").unwrap();
        let through = Timestamp::parse_rfc3339_through("2026-11-26T09:30:00Z").unwrap();
        assert_eq!(through.0, start.0 + 999_999);
        let offset = Timestamp::parse_rfc3339_through("2026-11-26T11:30:00+02:00").unwrap();
        assert_eq!(offset, through);
        // A fraction, however short or long, is the instant itself (to the microsecond).
        let half = Timestamp::parse_rfc3339_through("2026-11-26T09:30:00.5Z").unwrap();
        assert_eq!(half.0, start.0 + 500_000);
        let nanos = Timestamp::parse_rfc3339_through("2026-11-26T09:30:00.123456789Z").unwrap();
        assert_eq!(nanos.0, start.0 + 123_456);
        assert!(Timestamp::parse_rfc3339_through("2026-11-26T09:30:00.Z").is_err());
    }
}
