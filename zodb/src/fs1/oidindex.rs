//! The oid → record position map of a FileStorage.
//!
//! ZODB allocates oids densely from 0 upwards, and loads of one ZBlk1 touch
//! 512 consecutive ZData oids. A hash map scatters those over the whole
//! table, so with a large database every lookup is a cache miss (measured:
//! the hash probe was 15% of loading a ZBlk1 block from the page cache). So
//! small oids live in a plain vector indexed by oid, where consecutive oids
//! share cache lines; oids far above the others go to a hash map.
//!
//! Memory stays linear in the number of entries whatever the oids are: the
//! vector only grows to cover an oid if it then has at most
//! `DENSE_SLACK * (len + 1) + DENSE_MIN` slots.

use crate::types::Oid;
use hashbrown::HashMap;

/// Growth bound of the dense part (see the module docs).
const DENSE_SLACK: usize = 4;
/// Slots the dense part may always have.
const DENSE_MIN: usize = 1 << 16;

/// oid → position of its newest committed data record (never 0: a data
/// record follows the file magic and a transaction header).
#[derive(Debug, Default)]
pub(super) struct OidIndex {
    /// `dense[oid]` for oids below `dense.len()`; 0 = absent.
    dense: Vec<u64>,
    /// Oids `>= dense.len()`.
    sparse: HashMap<Oid, u64>,
    /// Entries in total.
    len: usize,
}

impl OidIndex {
    /// Position of `oid`'s newest record.
    pub(super) fn get(&self, oid: &Oid) -> Option<&u64> {
        match usize::try_from(oid.0) {
            Ok(i) if i < self.dense.len() => self.dense.get(i).filter(|&&p| p != 0),
            _ => self.sparse.get(oid),
        }
    }

    /// Set `oid`'s position (`pos > 0`).
    pub(super) fn insert(&mut self, oid: Oid, pos: u64) {
        debug_assert!(pos > 0);
        let i = usize::try_from(oid.0).ok();
        if let Some(i) = i.filter(|&i| i >= self.dense.len()) {
            let bound = DENSE_SLACK
                .saturating_mul(self.len + 1)
                .saturating_add(DENSE_MIN);
            if i < bound {
                self.grow(i + 1);
            }
        }
        match i {
            Some(i) if i < self.dense.len() => {
                if self.dense[i] == 0 {
                    self.len += 1;
                }
                self.dense[i] = pos;
            }
            _ => {
                if self.sparse.insert(oid, pos).is_none() {
                    self.len += 1;
                }
            }
        }
    }

    /// Extend the dense part to at least `n` slots (doubling, within the
    /// bound), moving the sparse entries it now covers.
    fn grow(&mut self, n: usize) {
        let bound = DENSE_SLACK
            .saturating_mul(self.len + 1)
            .saturating_add(DENSE_MIN);
        let n = n.max(self.dense.len().saturating_mul(2)).min(bound.max(n));
        self.dense.resize(n, 0);
        if !self.sparse.is_empty() {
            let dense = &mut self.dense;
            self.sparse.retain(|oid, pos| match usize::try_from(oid.0) {
                Ok(i) if i < dense.len() => {
                    dense[i] = *pos;
                    false
                }
                _ => true,
            });
        }
    }

    /// Number of oids.
    pub(super) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap as StdMap;

    proptest! {
        /// Against a plain map, with oids near 0, scattered, and huge.
        #[test]
        fn matches_a_map(ops in proptest::collection::vec(
            (prop_oneof![0u64..300, 0u64..200_000, any::<u64>(), Just(u64::MAX)], 1u64..1000),
            0..400,
        )) {
            let mut ix = OidIndex::default();
            let mut model = StdMap::new();
            for &(oid, pos) in &ops {
                ix.insert(Oid(oid), pos);
                model.insert(oid, pos);
                prop_assert_eq!(ix.len(), model.len());
                prop_assert!(ix.dense.len() <= DENSE_SLACK * (ix.len() + 1) + DENSE_MIN);
            }
            for &(oid, _) in &ops {
                prop_assert_eq!(ix.get(&Oid(oid)), model.get(&oid));
                prop_assert_eq!(ix.get(&Oid(oid.wrapping_add(1))), model.get(&oid.wrapping_add(1)));
            }
        }
    }

    #[test]
    fn dense_grows_over_sparse_entries() {
        let mut ix = OidIndex::default();
        ix.insert(Oid(1 << 20), 7); // beyond the initial bound: sparse
        assert!(ix.dense.is_empty());
        for o in 0..(1 << 18) {
            ix.insert(Oid(o), o + 1);
        }
        ix.insert(Oid((1 << 20) - 1), 9); // dense now covers 1<<20
        assert_eq!(ix.get(&Oid(1 << 20)), Some(&7));
        assert_eq!(ix.get(&Oid((1 << 20) - 1)), Some(&9));
        assert_eq!(ix.get(&Oid(5)), Some(&6));
        assert_eq!(ix.get(&Oid((1 << 20) + 1)), None);
        assert_eq!(ix.len(), (1 << 18) + 2);
    }
}
