//! [`KeyRange`]: a closed interval of `i64` keys.

/// A **closed** range of keys: every `k` with `lo <= k <= hi`.
///
/// Invariants: none beyond the two fields; the range is *empty* iff
/// `lo > hi` (the canonical empty range is [`KeyRange::EMPTY`] = `{lo: 0,
/// hi: -1}`). Because both ends are inclusive, every key of the domain,
/// `i64::MIN` and `i64::MAX` included, can be covered, and the whole
/// domain is [`KeyRange::FULL`] = `[i64::MIN, i64::MAX]`.
///
/// Text form (`Display`/`FromStr`, as in wendelin.core): the closed range
/// is printed half-open, `[lo,hi+1)`, with `-∞` for `lo == i64::MIN` and
/// `∞` for `hi == i64::MAX` (then the range *includes* `i64::MAX`):
/// `[1,3)` is `{1, 2}`, `[-∞,∞)` is [`KeyRange::FULL`]. `Debug` prints the
/// two fields.
///
/// Equality is structural: two empty ranges with different bounds compare
/// unequal; ask [`is_empty`](KeyRange::is_empty) when that matters.
///
/// Concurrency: plain `Copy` data; `Send + Sync`.
#[derive(Debug, Copy, Clone, PartialEq, Eq, Hash)]
pub struct KeyRange {
    /// Smallest key inside.
    pub lo: i64,
    /// Largest key inside (inclusive).
    pub hi: i64,
}

impl KeyRange {
    /// Every key: `[i64::MIN, i64::MAX]`, printed `[-∞,∞)`.
    pub const FULL: KeyRange = KeyRange {
        lo: i64::MIN,
        hi: i64::MAX,
    };

    /// The canonical empty range `{lo: 0, hi: -1}`, printed `[0,0)`.
    pub const EMPTY: KeyRange = KeyRange { lo: 0, hi: -1 };

    /// The closed range `[lo, hi]`; empty when `lo > hi`.
    pub const fn new(lo: i64, hi: i64) -> Self {
        KeyRange { lo, hi }
    }

    /// The range `[k, k]` holding only `k`.
    pub const fn point(k: i64) -> Self {
        KeyRange { lo: k, hi: k }
    }

    /// Whether `k` lies inside.
    pub const fn contains(&self, k: i64) -> bool {
        self.lo <= k && k <= self.hi
    }

    /// Whether the range holds no key (`lo > hi`).
    pub const fn is_empty(&self) -> bool {
        self.lo > self.hi
    }

    /// Whether the two ranges share at least one key (false if either is
    /// empty).
    pub fn intersects(&self, other: &KeyRange) -> bool {
        self.lo.max(other.lo) <= self.hi.min(other.hi)
    }

    /// The keys in both ranges; [`KeyRange::EMPTY`] when there are none.
    pub fn intersection(&self, other: &KeyRange) -> KeyRange {
        let (lo, hi) = (self.lo.max(other.lo), self.hi.min(other.hi));
        if lo <= hi {
            KeyRange { lo, hi }
        } else {
            KeyRange::EMPTY
        }
    }

    /// Whether every key of `other` lies inside `self` (true for an empty
    /// `other`).
    pub const fn covers(&self, other: &KeyRange) -> bool {
        other.is_empty() || (self.lo <= other.lo && other.hi <= self.hi)
    }

    /// Number of keys inside: 0 when empty, `2^64` for [`KeyRange::FULL`]
    /// (hence `u128`, which never overflows).
    pub const fn len(&self) -> u128 {
        if self.is_empty() {
            0
        } else {
            (self.hi as i128 - self.lo as i128 + 1) as u128
        }
    }
}

impl Default for KeyRange {
    /// [`KeyRange::EMPTY`].
    fn default() -> Self {
        KeyRange::EMPTY
    }
}
