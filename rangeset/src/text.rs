//! The text form: `Display`, `Debug` and `FromStr`.
//!
//! ```text
//! range := "[" lo "," hi ")"        closed [lo, hi-1]; lo = "-∞" means i64::MIN,
//!                                   hi = "∞" means i64::MAX *included*
//! set   := "{" [range {" " range}] "}"
//! map   := "{" [range ":" value {" " range ":" value}] "}"
//! ```
//!
//! Printing is canonical; parsing also accepts any whitespace between items,
//! ASCII `inf`/`-inf`/`+inf` and `+∞` for the infinities, and
//! `-9223372036854775808` for `-∞`. Parsed ranges must be non-empty and in
//! increasing order without overlap; touching ones are coalesced (for maps:
//! when their values are equal), so `{[1,2) [2,3)}` reads as `{[1,3)}`.

use std::error::Error;
use std::fmt;
use std::str::FromStr;

use crate::{KeyRange, RangedKeySet, RangedMap};

// ---- printing ----

impl fmt::Display for KeyRange {
    /// `[lo,hi+1)`, with `-∞` for `i64::MIN` and `∞` for `hi == i64::MAX`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        if self.lo == i64::MIN {
            f.write_str("-∞")?;
        } else {
            write!(f, "{}", self.lo)?;
        }
        f.write_str(",")?;
        if self.hi == i64::MAX {
            f.write_str("∞")?;
        } else {
            write!(f, "{}", self.hi + 1)?;
        }
        f.write_str(")")
    }
}

impl fmt::Display for RangedKeySet {
    /// `{[1,3) [5,∞)}`; `{}` when empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, r) in self.ranges().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{r}")?;
        }
        f.write_str("}")
    }
}

impl fmt::Debug for RangedKeySet {
    /// Same as `Display`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Writes `{r:v r:v}` with `show` printing each value.
fn fmt_map<V>(
    m: &RangedMap<V>,
    f: &mut fmt::Formatter<'_>,
    show: impl Fn(&V, &mut fmt::Formatter<'_>) -> fmt::Result,
) -> fmt::Result {
    f.write_str("{")?;
    for (i, (r, v)) in m.ranges().enumerate() {
        if i > 0 {
            f.write_str(" ")?;
        }
        write!(f, "{r}:")?;
        show(v, f)?;
    }
    f.write_str("}")
}

impl<V: fmt::Display> fmt::Display for RangedMap<V> {
    /// `{[1,3):a [3,4):b}`; `{}` when empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_map(self, f, |v, f| fmt::Display::fmt(v, f))
    }
}

impl<V: fmt::Debug> fmt::Debug for RangedMap<V> {
    /// Like `Display`, with each value printed by `Debug`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_map(self, f, |v, f| fmt::Debug::fmt(v, f))
    }
}

// ---- parsing ----

/// Why a text form did not parse.
///
/// Concurrency: plain data; `Send + Sync`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The offending piece of input.
    token: String,
    /// What is wrong with it.
    what: String,
}

impl ParseError {
    fn new(token: &str, what: impl Into<String>) -> Self {
        ParseError {
            token: token.to_owned(),
            what: what.into(),
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "parse {:?}: {}", self.token, self.what)
    }
}

impl Error for ParseError {}

/// A lower bound: an integer, or minus infinity for `i64::MIN`.
fn parse_lo(s: &str) -> Option<i64> {
    match s {
        "-∞" | "-inf" => Some(i64::MIN),
        _ => s.parse().ok(),
    }
}

/// An exclusive upper bound turned into the inclusive `hi`: an integer `b`
/// gives `b - 1`, infinity gives `i64::MAX`.
fn parse_hi(s: &str) -> Option<i64> {
    match s {
        "∞" | "+∞" | "inf" | "+inf" => Some(i64::MAX),
        _ => s.parse::<i64>().ok()?.checked_sub(1),
    }
}

impl FromStr for KeyRange {
    type Err = ParseError;

    /// Parses `[lo,hi)` (see the module doc); `[5,5)` gives the empty
    /// range `{lo: 5, hi: 4}`.
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let body = s
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(')'))
            .ok_or_else(|| ParseError::new(s, "want [lo,hi)"))?;
        let (lo, hi) = body
            .split_once(',')
            .ok_or_else(|| ParseError::new(s, "want [lo,hi)"))?;
        let lo = parse_lo(lo.trim()).ok_or_else(|| ParseError::new(s, "bad lower bound"))?;
        let hi = parse_hi(hi.trim()).ok_or_else(|| ParseError::new(s, "bad upper bound"))?;
        Ok(KeyRange { lo, hi })
    }
}

/// Splits `{a b c}` into its items.
fn items(s: &str) -> Result<std::str::SplitWhitespace<'_>, ParseError> {
    let t = s.trim();
    let body = t
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .ok_or_else(|| ParseError::new(s, "want {…}"))?;
    Ok(body.split_whitespace())
}

/// Parses one item's range and checks it is non-empty and above `prev`.
fn item_range(range: &str, prev: Option<KeyRange>) -> Result<KeyRange, ParseError> {
    let r: KeyRange = range.parse()?;
    if r.is_empty() {
        return Err(ParseError::new(range, "empty range"));
    }
    if let Some(p) = prev {
        if r.lo <= p.hi {
            return Err(ParseError::new(
                range,
                format!("overlaps or is below the previous range {p}"),
            ));
        }
    }
    Ok(r)
}

impl FromStr for RangedKeySet {
    type Err = ParseError;

    /// Parses `{[1,3) [5,∞)}`; inverse of `Display`.
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let mut set = RangedKeySet::new();
        let mut prev = None;
        for item in items(s)? {
            let r = item_range(item, prev)?;
            set.add_range(r);
            prev = Some(r);
        }
        Ok(set)
    }
}

impl<V: FromStr + Clone + PartialEq> FromStr for RangedMap<V>
where
    V::Err: fmt::Display,
{
    type Err = ParseError;

    /// Parses `{[1,3):a [3,4):b}`; inverse of `Display` as long as no
    /// value's text holds whitespace.
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let mut map = RangedMap::new();
        let mut prev = None;
        for item in items(s)? {
            let (range, value) = item
                .split_once("):")
                .ok_or_else(|| ParseError::new(item, "want [lo,hi):value"))?;
            // give the ')' back to the range
            let r = item_range(&item[..range.len() + 1], prev)?;
            let v = value
                .parse::<V>()
                .map_err(|e| ParseError::new(item, format!("bad value: {e}")))?;
            map.set_range(r, v);
            prev = Some(r);
        }
        Ok(map)
    }
}
