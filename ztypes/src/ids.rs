//! `Oid` and `Tid`: ZODB object and transaction identifiers.
//!
//! Both are 64-bit numbers stored on disk as 8 big-endian bytes. Their text
//! form, used by WCFS everywhere (paths, the watch protocol, logs), is exactly
//! 16 hex digits, zero padded; we print lowercase and parse either case.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Error returned when a text oid or tid is not 16 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {text:?}: want 16 hex digits")]
pub struct ParseIdError {
    what: &'static str,
    text: String,
}

fn parse_hex16(what: &'static str, s: &str) -> Result<u64, ParseIdError> {
    let bad = || ParseIdError {
        what,
        text: s.to_owned(),
    };
    if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    u64::from_str_radix(s, 16).map_err(|_| bad())
}

macro_rules! id_type {
    ($name:ident, $what:literal, $doc:literal) => {
        #[doc = $doc]
        #[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub u64);

        impl $name {
            /// The on-disk form: 8 big-endian bytes.
            pub fn to_bytes(self) -> [u8; 8] {
                self.0.to_be_bytes()
            }

            /// Decode the on-disk form.
            pub fn from_bytes(b: [u8; 8]) -> Self {
                Self(u64::from_be_bytes(b))
            }

            /// Decode from a slice that must be exactly 8 bytes long.
            pub fn from_slice(b: &[u8]) -> Option<Self> {
                <[u8; 8]>::try_from(b).ok().map(Self::from_bytes)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:016x}", self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($what, ":{:016x}"), self.0)
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;
            fn from_str(s: &str) -> Result<Self, ParseIdError> {
                parse_hex16($what, s).map(Self)
            }
        }
    };
}

id_type!(Oid, "oid", "Object identifier. The root object is oid 0.");
id_type!(
    Tid,
    "tid",
    "Transaction identifier; it also names the database state right after that \
     transaction committed. Tids increase strictly within a storage and encode \
     the commit time (see [`Tid::from_time`])."
);

impl Oid {
    /// "No object": marks an embedded bucket in a BTree path (NEO `InvalidOid`).
    pub const INVALID: Oid = Oid(u64::MAX);
}

impl Tid {
    /// The largest valid tid (ZODB `maxtid`): "the latest state".
    pub const MAX: Tid = Tid(0x7fff_ffff_ffff_ffff);
    /// The state before any transaction.
    pub const ZERO: Tid = Tid(0);

    /// The tid of a commit at time `t` (UTC), as ZODB's `TimeStamp` encodes it:
    /// the high 32 bits count minutes since 1900-01-01 with every month taken
    /// as 31 days; the low 32 bits are the fraction of the minute scaled to
    /// 2^32. Like Python, the fraction is truncated. Times before 1900 clamp
    /// to 0.
    pub fn from_time(t: SystemTime) -> Tid {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let secs = d.as_secs() as i64;
        let (days, sod) = (secs.div_euclid(86400), secs.rem_euclid(86400));
        let (y, m, day) = civil_from_days(days);
        let (hour, minute, second) = (sod / 3600, (sod / 60) % 60, sod % 60);
        let hi = ((((y - 1900) * 12 + m - 1) * 31 + day - 1) * 24 + hour) * 60 + minute;
        if hi < 0 {
            return Tid::ZERO;
        }
        // seconds within the minute, with nanoseconds, as a fraction of 60 s
        let ns_in_min = second as u128 * 1_000_000_000 + d.subsec_nanos() as u128;
        let lo = (ns_in_min << 32) / 60_000_000_000u128;
        Tid(((hi as u64) << 32) | (lo as u64 & 0xffff_ffff))
    }

    /// The commit time this tid encodes (UTC), the inverse of
    /// [`Tid::from_time`] up to the 2^-32-minute resolution. `None` if the
    /// encoded date is not a real date (a tid not made from a time).
    pub fn to_time(self) -> Option<SystemTime> {
        let hi = (self.0 >> 32) as i64;
        let lo = self.0 & 0xffff_ffff;
        let minute = hi % 60;
        let hour = (hi / 60) % 24;
        let day = (hi / (60 * 24)) % 31 + 1;
        let month = (hi / (60 * 24 * 31)) % 12 + 1;
        let year = hi / (60 * 24 * 31 * 12) + 1900;
        if day > days_in_month(year, month) {
            return None;
        }
        let days = days_from_civil(year, month, day);
        let secs = days * 86400 + hour * 3600 + minute * 60;
        let ns = ((lo as u128) * 60_000_000_000u128) >> 32;
        let t = UNIX_EPOCH.checked_add(Duration::from_secs(u64::try_from(secs).ok()?))?;
        t.checked_add(Duration::from_nanos(ns as u64))
    }

    /// `(year, month, day, hour, minute, seconds)` as ZODB's `TimeStamp`
    /// shows it, for logs and tests.
    pub fn to_parts(self) -> (i64, i64, i64, i64, i64, f64) {
        let hi = (self.0 >> 32) as i64;
        let lo = self.0 & 0xffff_ffff;
        (
            hi / (60 * 24 * 31 * 12) + 1900,
            (hi / (60 * 24 * 31)) % 12 + 1,
            (hi / (60 * 24)) % 31 + 1,
            (hi / 60) % 24,
            hi % 60,
            lo as f64 * 60.0 / 4294967296.0,
        )
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

// Proleptic Gregorian calendar <-> days since 1970-01-01 (H. Hinnant's
// algorithms, re-derived here: eras of 400 years starting in March).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form() {
        assert_eq!(Tid(0x0285cbac3851eb99).to_string(), "0285cbac3851eb99");
        assert_eq!(Oid(1).to_string(), "0000000000000001");
        assert_eq!(
            "0285CBAC3851EB99".parse::<Tid>().unwrap(),
            Tid(0x0285cbac3851eb99)
        );
        for bad in [
            "",
            "1",
            "0285cbac3851eb9",
            "0285cbac3851eb999",
            "0x85cbac3851eb99",
            "+285cbac3851eb99",
        ] {
            assert!(bad.parse::<Tid>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn tid_time_fixture() {
        // spec: 0285cbac3851eb99 = 1979-01-03 21:00:13.2
        let (y, mo, d, h, mi, s) = Tid(0x0285cbac3851eb99).to_parts();
        assert_eq!((y, mo, d, h, mi), (1979, 1, 3, 21, 0));
        assert!((s - 13.2).abs() < 1e-6, "{s}");
        let t = Tid(0x0285cbac3851eb99).to_time().unwrap();
        let back = Tid::from_time(t);
        assert!(back.0.abs_diff(0x0285cbac3851eb99) <= 1, "{back}");
    }

    #[test]
    fn tid_time_roundtrip_calendar() {
        // every day across leap years, including Feb 29 and year ends
        let start = days_from_civil(1999, 12, 25);
        for day in start..start + 3 * 366 + 40 {
            let secs = day * 86400 + 12 * 3600 + 34 * 60 + 56;
            let t = UNIX_EPOCH + Duration::from_secs(secs as u64) + Duration::from_millis(789);
            let tid = Tid::from_time(t);
            let back = tid.to_time().unwrap();
            let diff = back.duration_since(t).unwrap_or_else(|e| e.duration());
            assert!(diff < Duration::from_micros(1), "day {day}: {diff:?}");
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
            assert_eq!(tid.to_parts().0, y);
        }
    }

    #[test]
    fn tid_monotonic_in_time() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut prev = Tid::from_time(t0);
        for i in 1..5000u64 {
            let t = Tid::from_time(t0 + Duration::from_millis(i * 997));
            assert!(t > prev);
            prev = t;
        }
    }
}
