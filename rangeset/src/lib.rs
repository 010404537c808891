//! Sets and maps of `i64` keys stored as coalesced ranges.
//!
//! [`RangedKeySet`] is a set of keys and [`RangedMap<V>`] a key → value map,
//! both stored as a sorted list of maximal key ranges, so that a run of
//! consecutive keys costs one entry however long it is. WCFS uses them for
//! key coverages: the keys a BTree change touched, the part of a file a
//! client tracks, the blocks to invalidate. They are the counterparts of
//! wendelin.core's `blib.RangedMap` / `blib.RangedKeySet`.
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
//! by one `Vec::splice` per mutation (the entries that overlap the argument
//! are replaced by at most three: a cut on the left, the new range, a cut
//! on the right). See `benches/ops.rs` and the README of this crate for
//! the measurements behind the choice against a `BTreeMap`.
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
