//! Sets and maps of `i64` keys stored as coalesced ranges.
//!
//! [`RangedKeySet`] is a set of keys and [`RangedMap<V>`] a key → value map,
//! both stored as a sorted list of maximal key ranges, so that a run of
//! consecutive keys costs one entry however long it is. WCFS uses them for
//! key coverages, such as the key ranges a BTree change covers or the part
//! of a tree that is tracked. They are the counterparts of wendelin.core's
//! `blib.RangedMap` / `blib.RangedKeySet`.
//!
//! The sets usually hold something proportional to one change (a handful
//! of ranges), but the tracked coverage of a whole file can grow large;
//! lookups are `O(log n)` and two-set operations `O(n + m)` at any size.
//!
//! # Convention: closed ranges
//!
//! A [`KeyRange`] `{lo, hi}` is the **closed** interval `lo ≤ k ≤ hi`,
//! everywhere in this crate. It is empty iff `lo > hi` (canonical empty:
//! [`KeyRange::EMPTY`] `= {0, -1}`). With both ends inclusive the whole
//! domain, `i64::MIN` and `i64::MAX` included, is expressible:
//! [`KeyRange::FULL`] `= [i64::MIN, i64::MAX]`.
//!
//! # Invariants
//!
//! For the stored entries `e[0..n]` of a map (and the ranges of a set):
//!
//! ```text
//! e[i].lo ≤ e[i].hi                                         non-empty
//! e[i].hi < e[i+1].lo                                       sorted, disjoint
//! e[i].hi + 1 = e[i+1].lo  ⇒  e[i].value ≠ e[i+1].value     coalesced
//! ```
//!
//! A set is a `RangedMap<()>`, so its ranges never touch. The
//! representation of a given set or map is unique: `==` is semantic.
//! `verify()` checks the invariants in `O(n)`; debug builds also check the
//! window around every mutation (`O(change)`) and the result of every merge.
//!
//! # Complexity
//!
//! `n`, `m`: numbers of stored ranges; `k`: ranges overlapping the argument.
//!
//! | operation                                           | cost                          |
//! |-----------------------------------------------------|-------------------------------|
//! | `get`, `has`, `range_of`, `intersects_range`        | `O(log n)`                    |
//! | `has_range`                                         | `O(log n + k)` (sets: `O(log n)`) |
//! | `set_range`, `del_range`, `add_range`, `add`, `del` | `O(log n + k)` + one `memmove` of the tail |
//! | `union`, `difference`, `intersection` (+ `_in_place`) | `O(n + m)`, one merge       |
//! | `ranges()`, `==`, `verify`, text form               | `O(n)`                        |
//!
//! # Representation
//!
//! A sorted `Vec` of `(KeyRange, V)`, searched by binary search and changed
//! by one splice per mutation: the entries that overlap the argument are
//! replaced by at most three (a cut on the left, the new range, a cut on
//! the right), with a single `memmove` of the tail. [`RangedKeySet`] is a
//! `RangedMap<()>`: with a zero-sized value an entry is exactly a
//! `KeyRange` (16 bytes) and the value comparisons fold to `true`, so a
//! separate set type would run the same code.
//!
//! Chosen from `benches/ops.rs` (criterion; `btree` = the same closed,
//! coalesced ranges in a `BTreeMap` lo → hi; a 2-vCPU x86-64 Xeon VM):
//!
//! | op                      | ranges | `Vec` (this crate) | `BTreeMap` |
//! |-------------------------|-------:|-------------------:|-----------:|
//! | `has` (random key)      |     10 |             5.3 ns |     7.3 ns |
//! |                         |  1 000 |              11 ns |      17 ns |
//! |                         |100 000 |              34 ns |      62 ns |
//! | `add_range` (1–4 keys)  |     10 |              49 ns |      85 ns |
//! |                         |  1 000 |             112 ns |     264 ns |
//! |                         |100 000 |            10.0 µs |     414 ns |
//! | `union` (two n-sets)    |     10 |              52 ns |     180 ns |
//! |                         |  1 000 |             4.2 µs |    14.4 µs |
//! |                         |100 000 |            1.19 ms |    2.49 ms |
//!
//! The `Vec` wins everything up to thousands of ranges — the usual size,
//! since a set mostly holds what one change touched — and wins lookups and
//! merges at every size. It loses `add_range` on very large sets: the
//! `memmove` makes it `O(n)`, ~10 µs at 100 000 ranges (crossover in the
//! low thousands). That is still small next to what adds a range to a large
//! tracked coverage (loading a block from the database), and a file's
//! coverage only fragments that much under scattered access. Should it
//! matter, the representation is private to `map.rs`.
//!
//! In-place union/difference with a few-range operand apply it range by
//! range instead of merging (at 100 000 ranges: 10 µs instead of 183 µs
//! for one range). Debug builds re-check only the window around each
//! mutation (+~40 ns per `add_range`; a full `verify()` there would cost
//! 20× at 1 000 ranges and 90× at 100 000) and the whole result of each
//! merge (`O(n + m)` like the merge); release builds check nothing.
//!
//! # Concurrency
//!
//! Plain data: no interior mutability, no locks, no atomics.
//! [`RangedKeySet`] is `Send + Sync`; [`RangedMap<V>`] is `Send`/`Sync`
//! exactly when `V` is. `&self` methods only read and may run concurrently;
//! mutators take `&mut self`. Share behind a lock or an RCU cell.
//!
//! # Text form
//!
//! As in wendelin.core: each closed range is printed half-open,
//! `[lo,hi+1)`, with `-∞` for `i64::MIN` and `∞` when `hi == i64::MAX`
//! (the range then includes `i64::MAX`). Sets print as `{[1,3) [5,∞)}`,
//! maps as `{[1,3):a [3,4):b}`, empty ones as `{}`. `Display` and
//! `FromStr` are inverses, which keeps table tests short:
//!
//! ```
//! use rangeset::{KeyRange, RangedKeySet};
//!
//! let mut s: RangedKeySet = "{[1,3) [5,∞)}".parse().unwrap();
//! s.add_range(KeyRange::new(3, 4)); // closed: keys 3 and 4
//! assert_eq!(s.to_string(), "{[1,∞)}");
//! assert!(s.has(i64::MAX));
//! ```
//!
//! # Notation
//!
//! `[lo, hi]` closed (code, docs); `[lo,hi+1)` half-open (text form only);
//! `n`, `m` numbers of stored ranges; `k` ranges overlapping an argument.

#![forbid(unsafe_code)]

mod keyrange;
mod map;
mod set;
mod text;

pub use keyrange::KeyRange;
pub use map::{MapRanges, RangedMap};
pub use set::{RangedKeySet, SetRanges};
pub use text::ParseError;
