//! [`RangedMap`]: `i64` key ranges → values, equal neighbours coalesced.

use std::iter::FusedIterator;

use crate::KeyRange;

/// One stored range and its value.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct Entry<V> {
    pub(crate) range: KeyRange,
    pub(crate) value: V,
}

/// A map `i64 → V` stored as sorted, disjoint, non-empty closed
/// [`KeyRange`]s, each with one value, where touching ranges that map to
/// equal values are always coalesced into one.
///
/// # Invariants
///
/// For the stored entries `e[0..n]` (checked by [`verify`](Self::verify)):
/// - `e[i].lo <= e[i].hi` — no empty range;
/// - `e[i].hi < e[i+1].lo` — sorted and disjoint;
/// - `e[i].hi + 1 == e[i+1].lo ⇒ e[i].value != e[i+1].value` — coalesced.
///
/// The representation of a given key→value function is therefore unique,
/// so the derived `==` / `Hash` are semantic equality and hashing.
///
/// # Complexity
///
/// `n` = number of stored ranges, `k` = ranges overlapping the argument.
/// Lookups ([`get`](Self::get), [`has`](Self::has),
/// [`intersects_range`](Self::intersects_range)) are `O(log n)`,
/// [`has_range`](Self::has_range) is `O(log n + k)`. Mutators
/// ([`set_range`](Self::set_range), [`del_range`](Self::del_range)) do two
/// binary searches and one splice of the sorted `Vec`: `O(log n + k)`
/// comparisons plus one `memmove` of the entries after the change.
///
/// # Concurrency
///
/// Plain data: no interior mutability, `Send`/`Sync` exactly when `V` is.
/// `&self` methods only read, so any number of them may run at once;
/// mutation needs `&mut self`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RangedMap<V> {
    /// Sorted by `range.lo` (equivalently by `range.hi`); see the invariants.
    pub(crate) entries: Vec<Entry<V>>,
}

impl<V> Default for RangedMap<V> {
    /// The empty map.
    fn default() -> Self {
        Self::new()
    }
}

impl<V> RangedMap<V> {
    /// The empty map (does not allocate).
    pub const fn new() -> Self {
        RangedMap {
            entries: Vec::new(),
        }
    }

    /// Whether no key is mapped.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of stored (maximal, coalesced) ranges.
    pub fn len_ranges(&self) -> usize {
        self.entries.len()
    }

    /// Removes every key.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// The value of `k` and the whole stored range holding `k` (all keys
    /// around `k` mapped to the same value), or `None` if `k` is absent.
    /// `O(log n)`.
    pub fn get(&self, k: i64) -> Option<(&V, KeyRange)> {
        let i = self.first_ending_at_or_after(k);
        match self.entries.get(i) {
            Some(e) if e.range.lo <= k => Some((&e.value, e.range)),
            _ => None,
        }
    }

    /// Whether `k` is mapped. `O(log n)`.
    pub fn has(&self, k: i64) -> bool {
        self.get(k).is_some()
    }

    /// Whether every key of `r` is mapped (to any values); true for an
    /// empty `r`. `O(log n + k)`.
    pub fn has_range(&self, r: KeyRange) -> bool {
        if r.is_empty() {
            return true;
        }
        let i = self.first_ending_at_or_after(r.lo);
        // next key of r still to be found covered
        let mut need = r.lo;
        for e in &self.entries[i..] {
            if e.range.lo > need {
                return false; // hole
            }
            if e.range.hi >= r.hi {
                return true;
            }
            // e.range.hi < r.hi <= i64::MAX: no overflow
            need = e.range.hi + 1;
        }
        false
    }

    /// Whether some key of `r` is mapped; false for an empty `r`.
    /// `O(log n)`.
    pub fn intersects_range(&self, r: KeyRange) -> bool {
        if r.is_empty() {
            return false;
        }
        let i = self.first_ending_at_or_after(r.lo);
        matches!(self.entries.get(i), Some(e) if e.range.lo <= r.hi)
    }

    /// The stored ranges with their values, in increasing key order.
    pub fn ranges(&self) -> MapRanges<'_, V> {
        MapRanges {
            inner: self.entries.iter(),
        }
    }

    /// Checks the invariants (sorted, non-empty, disjoint, coalesced) of the
    /// whole map. A debug aid: the invariants hold by construction, so this
    /// only fails on a bug in this crate. `O(n)`.
    ///
    /// # Panics
    ///
    /// If an invariant is broken, with a message naming the entry.
    #[track_caller]
    pub fn verify(&self)
    where
        V: PartialEq,
    {
        if let Err(msg) = self.check(0, self.entries.len()) {
            panic!("RangedMap::verify: {msg}");
        }
    }

    /// Checks the invariants for the entries `[from, to)`, including the
    /// coalescing of each with its left neighbour inside the window.
    pub(crate) fn check(&self, from: usize, to: usize) -> Result<(), String>
    where
        V: PartialEq,
    {
        let es = &self.entries[from..to];
        for (i, e) in es.iter().enumerate() {
            let r = e.range;
            if r.is_empty() {
                return Err(format!("[{}]: empty range {r}", from + i));
            }
            if i == 0 {
                continue;
            }
            let p = &es[i - 1];
            if p.range.hi >= r.lo {
                return Err(format!(
                    "[{}]: {} overlaps or is below previous {}",
                    from + i,
                    r,
                    p.range
                ));
            }
            if p.range.hi + 1 == r.lo && p.value == e.value {
                return Err(format!(
                    "[{}]: {} touches previous {} with the same value: not coalesced",
                    from + i,
                    r,
                    p.range
                ));
            }
        }
        Ok(())
    }

    /// Index of the first entry with `hi >= k` (the only one that can hold
    /// `k`); `len` if none.
    pub(crate) fn first_ending_at_or_after(&self, k: i64) -> usize {
        self.entries.partition_point(|e| e.range.hi < k)
    }
}

impl<V: Clone + PartialEq> RangedMap<V> {
    /// Maps `k` to `v`. Same as `set_range(KeyRange::point(k), v)`.
    pub fn set(&mut self, k: i64, v: V) {
        self.set_range(KeyRange::point(k), v);
    }

    /// Removes `k`. Same as `del_range(KeyRange::point(k))`.
    pub fn del(&mut self, k: i64) {
        self.del_range(KeyRange::point(k));
    }

    /// Maps every key of `r` to `v`, overwriting what was there: stored
    /// ranges that stick out of `r` with another value are cut (a range
    /// strictly containing `r` is split in two), and the result is
    /// coalesced with equal-valued neighbours. No-op for an empty `r`.
    /// `O(log n + k)` plus one `memmove`.
    pub fn set_range(&mut self, r: KeyRange, v: V) {
        if r.is_empty() {
            return;
        }
        let es = &self.entries;
        // entries [start, end) overlap r
        let mut start = self.first_ending_at_or_after(r.lo);
        let mut end = start + es[start..].partition_point(|e| e.range.lo <= r.hi);
        let (mut lo, mut hi) = (r.lo, r.hi);
        let mut left = None;
        let mut right = None;

        if start < end {
            let first = &es[start];
            if first.range.lo < r.lo {
                if first.value == v {
                    lo = first.range.lo;
                } else {
                    // r.lo > first.lo >= i64::MIN: no overflow
                    left = Some(Entry {
                        range: KeyRange::new(first.range.lo, r.lo - 1),
                        value: first.value.clone(),
                    });
                }
            }
            let last = &es[end - 1];
            if last.range.hi > r.hi {
                if last.value == v {
                    hi = last.range.hi;
                } else {
                    // r.hi < last.hi <= i64::MAX: no overflow
                    right = Some(Entry {
                        range: KeyRange::new(r.hi + 1, last.range.hi),
                        value: last.value.clone(),
                    });
                }
            }
        }
        // Coalesce with a touching equal-valued neighbour outside r. (If an
        // overlapping entry sticks out on that side, the neighbour beyond it
        // cannot touch r, so these do not interfere with the cuts above.)
        if start > 0 {
            let p = &es[start - 1];
            if p.range.hi.checked_add(1) == Some(r.lo) && p.value == v {
                start -= 1;
                lo = p.range.lo;
            }
        }
        if let Some(n) = es.get(end) {
            if r.hi.checked_add(1) == Some(n.range.lo) && n.value == v {
                end += 1;
                hi = n.range.hi;
            }
        }

        let mid = Entry {
            range: KeyRange::new(lo, hi),
            value: v,
        };
        self.splice(start, end, Pieces::new(left, Some(mid), right));
    }

    /// Removes every key of `r`; stored ranges that stick out of `r` are
    /// cut (a range strictly containing `r` is split in two). No-op for an
    /// empty `r`. `O(log n + k)` plus one `memmove`.
    pub fn del_range(&mut self, r: KeyRange) {
        if r.is_empty() {
            return;
        }
        let es = &self.entries;
        let start = self.first_ending_at_or_after(r.lo);
        let end = start + es[start..].partition_point(|e| e.range.lo <= r.hi);
        if start == end {
            return; // nothing overlaps
        }
        let first = &es[start];
        let left = (first.range.lo < r.lo).then(|| Entry {
            range: KeyRange::new(first.range.lo, r.lo - 1),
            value: first.value.clone(),
        });
        let last = &es[end - 1];
        let right = (last.range.hi > r.hi).then(|| Entry {
            range: KeyRange::new(r.hi + 1, last.range.hi),
            value: last.value.clone(),
        });
        self.splice(start, end, Pieces::new(left, None, right));
    }

    /// Replaces entries `[start, end)` with `pieces` in one `memmove`.
    fn splice(&mut self, start: usize, end: usize, pieces: Pieces<V>) {
        let mut pieces = pieces;
        let added = pieces.len();
        let removed = end - start;
        let reuse = added.min(removed);
        // overwrite the slots both sides have, then grow or shrink once
        for slot in &mut self.entries[start..start + reuse] {
            if let Some(e) = pieces.next() {
                *slot = e;
            }
        }
        let at = start + reuse;
        if removed > added {
            self.entries.drain(at..end);
        } else if added == removed + 1 {
            if let Some(e) = pieces.next() {
                self.entries.insert(at, e);
            }
        } else if added > removed {
            self.entries.splice(at..at, pieces);
        }
        #[cfg(debug_assertions)]
        {
            // Only the window around the change can have been broken: keep
            // debug builds O(change), not O(n), per mutation.
            let from = start.saturating_sub(1);
            let to = (start + added + 1).min(self.entries.len());
            if let Err(msg) = self.check(from, to) {
                panic!("RangedMap: invariant broken by a mutation: {msg}");
            }
        }
    }
}

/// Up to three replacement entries (left cut, new, right cut), as an
/// exact-size iterator so that `Vec::splice` moves the tail only once.
struct Pieces<V> {
    slots: [Option<Entry<V>>; 3],
    next: usize,
}

impl<V> Pieces<V> {
    fn new(left: Option<Entry<V>>, mid: Option<Entry<V>>, right: Option<Entry<V>>) -> Self {
        Pieces {
            slots: [left, mid, right],
            next: 0,
        }
    }
}

impl<V> Iterator for Pieces<V> {
    type Item = Entry<V>;

    fn next(&mut self) -> Option<Entry<V>> {
        while self.next < 3 {
            let slot = self.slots[self.next].take();
            self.next += 1;
            if slot.is_some() {
                return slot;
            }
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.slots[self.next.min(3)..]
            .iter()
            .filter(|s| s.is_some())
            .count();
        (n, Some(n))
    }
}

impl<V> ExactSizeIterator for Pieces<V> {}

impl<V: Clone + PartialEq> FromIterator<(KeyRange, V)> for RangedMap<V> {
    /// Applies [`set_range`](RangedMap::set_range) for each item in order
    /// (later items overwrite earlier ones).
    fn from_iter<I: IntoIterator<Item = (KeyRange, V)>>(iter: I) -> Self {
        let mut m = RangedMap::new();
        m.extend(iter);
        m
    }
}

impl<V: Clone + PartialEq> Extend<(KeyRange, V)> for RangedMap<V> {
    /// Applies [`set_range`](RangedMap::set_range) for each item in order.
    fn extend<I: IntoIterator<Item = (KeyRange, V)>>(&mut self, iter: I) {
        for (r, v) in iter {
            self.set_range(r, v);
        }
    }
}

impl<'a, V> IntoIterator for &'a RangedMap<V> {
    type Item = (KeyRange, &'a V);
    type IntoIter = MapRanges<'a, V>;

    fn into_iter(self) -> MapRanges<'a, V> {
        self.ranges()
    }
}

/// Iterator over the stored ranges of a [`RangedMap`] with their values,
/// in increasing key order (see [`RangedMap::ranges`]). Every yielded
/// range is non-empty; consecutive ones are disjoint, and touching ones
/// carry different values.
///
/// Concurrency: borrows the map; `Send`/`Sync` as `&V` is.
#[derive(Clone)]
pub struct MapRanges<'a, V> {
    inner: std::slice::Iter<'a, Entry<V>>,
}

impl<'a, V> Iterator for MapRanges<'a, V> {
    type Item = (KeyRange, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next().map(|e| (e.range, &e.value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl<V> DoubleEndedIterator for MapRanges<'_, V> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.inner.next_back().map(|e| (e.range, &e.value))
    }
}

impl<V> ExactSizeIterator for MapRanges<'_, V> {}

impl<V> FusedIterator for MapRanges<'_, V> {}
