//! ΔZtail: the raw ZODB history of a window of revisions — which objects each
//! transaction changed (NEO `zodb.ΔTail`).
//!
//! [`DeltaZTail`] (ΔZtail) semantically is
//!
//! ```text
//! [](rev↑, [oid])        rev ∈ (tail, head]
//! ```
//!
//! one [`DeltaZ`] (δZ) per committed transaction, plus an index
//! `oid -> [rev↑]` answering "when did this object last change as of `at`"
//! ([`DeltaZTail::last_rev_of`]) in `O(log n)`.
//!
//! # Invariants
//!
//! ```text
//! tail ≤ head
//! ∀ i:      tail < entries[i].rev ≤ head,   entries[i].rev < entries[i+1].rev
//! ∀ oid:    index[oid] = [e.rev  for e ∈ entries  if oid ∈ e.oids]   (ascending, no duplicates)
//!           index has no empty lists
//! ```
//!
//! `head` only grows ([`append`](DeltaZTail::append)); `tail` only grows
//! ([`forget_past`](DeltaZTail::forget_past)). The coverage starts as
//! `(at₀, at₀]`.
//!
//! # Forgetting past `head`
//!
//! Upstream `ForgetPast(revCut)` with `revCut > head` sets `tail = revCut` and
//! leaves `head` alone, which breaks `tail ≤ head` and makes every later
//! query impossible. wcfs never does that (it forgets only what lies below
//! its head), so here it is an error ([`Error::RevOutOfRange`]) and nothing
//! changes. (Moving `head` up to `revCut` would also keep `tail ≤ head`, but
//! would claim coverage of revisions never appended and make the next
//! `append` of a revision `≤ revCut` fail far from the cause.)
//!
//! # Concurrency and cost
//!
//! Writers ([`append`](DeltaZTail::append),
//! [`forget_past`](DeltaZTail::forget_past)) take `&mut self`, readers
//! `&self`: single writer or many readers, as engine-semantics §7 asks,
//! enforced by the borrow checker. Sharing goes by snapshots: the entries
//! and the per-oid index are persistent structures ([`imbl`]: a chunked
//! RRB vector and a hash trie), so `clone` is O(1) and shares everything,
//! and a writer working on its clone copies only the chunks and trie nodes
//! it touches. A commit thus costs O(δZ · log window), never a copy of the
//! window (which is what ΔBtail did per commit before: `VecDeque::clone`
//! was 60 % of the commit thread at 20 commits/s, issue 13).

use crate::error::{Error, Result};
use std::sync::Arc;
use zodb::{Oid, Tid};

/// δZ: what one committed transaction changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaZ {
    /// The transaction (= the database state right after it).
    pub rev: Tid,
    /// Every object the transaction stored, in the order given to
    /// [`DeltaZTail::append`].
    pub oids: Vec<Oid>,
}

/// ΔZtail: the objects changed by each transaction in `(tail, head]`. See
/// the [module docs](self).
#[derive(Debug, Clone)]
pub struct DeltaZTail {
    head: Tid,
    tail: Tid,
    /// δZ for rev ∈ (tail, head], rev↑ (shared, immutable entries).
    entries: imbl::Vector<Arc<DeltaZ>>,
    /// oid -> [rev↑] of every entry that changed oid.
    index: imbl::HashMap<Oid, imbl::Vector<Tid>>,
}

/// The number of leading entries of `v` with `rev ≤ at`.
fn count_le(v: &imbl::Vector<Arc<DeltaZ>>, at: Tid) -> usize {
    v.binary_search_by(|e| {
        if e.rev <= at {
            std::cmp::Ordering::Less
        } else {
            std::cmp::Ordering::Greater
        }
    })
    .unwrap_or_else(|i| i)
}

impl DeltaZTail {
    /// An empty ΔZtail with coverage `(at0, at0]`.
    pub fn new(at0: Tid) -> DeltaZTail {
        DeltaZTail {
            head: at0,
            tail: at0,
            entries: imbl::Vector::new(),
            index: imbl::HashMap::new(),
        }
    }

    /// The newest covered state. It never decreases.
    pub fn head(&self) -> Tid {
        self.head
    }

    /// The oldest covered state: history is known for `(tail, head]`. It
    /// never decreases.
    pub fn tail(&self) -> Tid {
        self.tail
    }

    /// Number of δZ entries (transactions) kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no δZ entry is kept (the coverage may still be non-empty:
    /// forgetting does not move `head`).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// All kept entries, `rev↑`.
    pub fn entries(&self) -> impl DoubleEndedIterator<Item = &DeltaZ> + ExactSizeIterator + '_ {
        self.entries.iter().map(|e| &**e)
    }

    /// Record that transaction `rev` changed `oids`; `head` becomes `rev`.
    ///
    /// `rev` must be after `head` ([`Error::RevNotAfterHead`] otherwise,
    /// and nothing changes). `oids` may be empty: that only extends the
    /// coverage. Repeated oids are kept in the entry but indexed once.
    pub fn append(&mut self, rev: Tid, oids: Vec<Oid>) -> Result<()> {
        if rev <= self.head {
            return Err(Error::RevNotAfterHead {
                rev,
                head: self.head,
            });
        }
        for &oid in &oids {
            let revs = self.index.entry(oid).or_default();
            if revs.back() != Some(&rev) {
                revs.push_back(rev);
            }
        }
        self.entries.push_back(Arc::new(DeltaZ { rev, oids }));
        self.head = rev;
        Ok(())
    }

    /// Forget the entries with `rev ≤ rev_cut`; `tail` becomes `rev_cut`.
    ///
    /// A no-op if `rev_cut ≤ tail` (the tail never moves back). `tail` may
    /// move past the last kept entry, up to `head`; `rev_cut > head` is
    /// refused with [`Error::RevOutOfRange`] (see the module docs).
    pub fn forget_past(&mut self, rev_cut: Tid) -> Result<()> {
        if rev_cut <= self.tail {
            return Ok(());
        }
        if rev_cut > self.head {
            return Err(Error::RevOutOfRange {
                op: "forget_past",
                rev: rev_cut,
                tail: self.tail,
                head: self.head,
            });
        }
        // The entries go rev↑, and so does each oid's list: the forgotten
        // revs are at its front. A repeated oid finds its rev gone already.
        while self.entries.front().is_some_and(|e| e.rev <= rev_cut) {
            let e = self.entries.pop_front().expect("front exists");
            for oid in &e.oids {
                let gone = match self.index.get_mut(oid) {
                    Some(revs) if revs.front() == Some(&e.rev) => {
                        revs.pop_front();
                        revs.is_empty()
                    }
                    _ => false,
                };
                if gone {
                    self.index.remove(oid);
                }
            }
        }
        self.tail = rev_cut;
        Ok(())
    }

    /// The entries with `rev ∈ (lo, hi]`, `rev↑`.
    ///
    /// Requires `tail ≤ lo ≤ hi ≤ head` ([`Error::BadSlice`] otherwise).
    pub fn slice_by_rev(&self, lo: Tid, hi: Tid) -> Result<Vec<&DeltaZ>> {
        if !(self.tail <= lo && lo <= hi && hi <= self.head) {
            return Err(Error::BadSlice {
                lo,
                hi,
                tail: self.tail,
                head: self.head,
            });
        }
        let (i, j) = (count_le(&self.entries, lo), count_le(&self.entries, hi));
        Ok((i..j).map(|k| &*self.entries[k]).collect())
    }

    /// The last revision `≤ at` that changed `oid`, as far as known:
    ///
    /// - `oid` changed in `(tail, at]`: `(that last rev, true)`;
    /// - otherwise `(tail, false)`: the last change is at or before `tail`,
    ///   so `tail` is an upper bound of it.
    ///
    /// Requires `at ∈ [tail, head]` ([`Error::RevOutOfRange`] otherwise).
    /// `O(log k)` for an oid changed by `k` kept entries.
    pub fn last_rev_of(&self, oid: Oid, at: Tid) -> Result<(Tid, bool)> {
        if !(self.tail <= at && at <= self.head) {
            return Err(Error::RevOutOfRange {
                op: "last_rev_of",
                rev: at,
                tail: self.tail,
                head: self.head,
            });
        }
        if let Some(revs) = self.index.get(&oid) {
            let n = revs
                .binary_search_by(|&r| {
                    if r <= at {
                        std::cmp::Ordering::Less
                    } else {
                        std::cmp::Ordering::Greater
                    }
                })
                .unwrap_or_else(|i| i);
            if n > 0 {
                return Ok((revs[n - 1], true));
            }
        }
        Ok((self.tail, false))
    }

    /// Check the invariants from scratch (see the module docs). For tests.
    pub fn verify(&self) -> Result<()> {
        let bad = |what: String| Err(Error::Inconsistent { what });
        if self.tail > self.head {
            return bad(format!("tail {} > head {}", self.tail, self.head));
        }
        let mut prev = self.tail;
        let mut want: imbl::HashMap<Oid, imbl::Vector<Tid>> = imbl::HashMap::new();
        for e in &self.entries {
            if e.rev <= prev || e.rev > self.head {
                return bad(format!(
                    "entry @{} out of order or outside ({}, {}]",
                    e.rev, self.tail, self.head
                ));
            }
            prev = e.rev;
            for &oid in &e.oids {
                let revs = want.entry(oid).or_default();
                if revs.back() != Some(&e.rev) {
                    revs.push_back(e.rev);
                }
            }
        }
        if want != self.index {
            return bad(format!("index {:?} != recomputed {:?}", self.index, want));
        }
        Ok(())
    }
}
