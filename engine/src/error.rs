//! Typed errors of the engine crate.
//!
//! One enum for the whole crate, as in the zodb crate: callers match on what
//! went wrong. Two kinds of failure are kept apart:
//! - the *data* is wrong: [`Error::TreeCorrupt`] (a node reached from two
//!   parents: the database holds a corrupt tree);
//! - the *caller* asked for something outside the contract:
//!   [`Error::BadPath`], [`Error::DeltaMismatch`], [`Error::RevNotAfterHead`],
//!   [`Error::RevOutOfRange`], [`Error::BadSlice`], [`Error::Parse`].
//!
//! [`Error::Inconsistent`] is only returned by the `verify()` methods, which
//! re-check a structure's invariants from scratch; it means a bug here.

use zodb::{Oid, Tid};

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the engine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tree node was seen with two different parents (a root counts as
    /// having the parent [`Oid::INVALID`]): the tree in the database is
    /// corrupt, or two trees share a node.
    #[error(
        "tree corrupt: node {oid} is reachable from two parents: {} and {}",
        parent_str(*parent1),
        parent_str(*parent2)
    )]
    TreeCorrupt {
        /// The node.
        oid: Oid,
        /// The parent already known.
        parent1: Oid,
        /// The other parent.
        parent2: Oid,
    },

    /// A tree path given to `PPTreeSubSet::add_path` is not a path: it is
    /// empty, or has [`Oid::INVALID`] where a real node must be.
    #[error("bad tree path {path:?}: {why}")]
    BadPath {
        /// The path as given.
        path: Vec<Oid>,
        /// What is wrong with it.
        why: &'static str,
    },

    /// A `ΔPPTreeSubSet` does not fit the set it was applied to (it was
    /// computed against another set). The set is left unchanged.
    #[error("ΔPPTreeSubSet does not fit the set at node {oid}: {why}")]
    DeltaMismatch {
        /// The first node found not to fit.
        oid: Oid,
        /// How it does not fit.
        why: &'static str,
    },

    /// A structure's invariant does not hold (found by `verify()`).
    #[error("invariant broken: {what}")]
    Inconsistent {
        /// Which invariant, and where.
        what: String,
    },

    /// `ΔZtail::append` with a revision not after the current head.
    #[error("ΔZtail: append @{rev}: not after head @{head}")]
    RevNotAfterHead {
        /// The revision appended.
        rev: Tid,
        /// The current head.
        head: Tid,
    },

    /// A revision argument lies outside the coverage `[tail, head]`.
    #[error("ΔZtail: {op} @{rev}: outside [tail, head] = [{tail}, {head}]")]
    RevOutOfRange {
        /// The operation asked.
        op: &'static str,
        /// The revision given.
        rev: Tid,
        /// The current tail.
        tail: Tid,
        /// The current head.
        head: Tid,
    },

    /// A slice `(lo, hi]` was asked that does not satisfy
    /// `tail ≤ lo ≤ hi ≤ head`.
    #[error(
        "ΔZtail: slice ({lo}, {hi}]: want tail ≤ lo ≤ hi ≤ head, (tail, head] = ({tail}, {head}]"
    )]
    BadSlice {
        /// Low end (exclusive).
        lo: Tid,
        /// High end (inclusive).
        hi: Tid,
        /// The current tail.
        tail: Tid,
        /// The current head.
        head: Tid,
    },

    /// Reading the database failed (I/O, corruption, an object that is not
    /// what the tree says it is).
    #[error("{0}")]
    Storage(#[from] StorageError),

    /// A query named keys or a tree that were never passed to `track`.
    #[error("not tracked: {what}")]
    NotTracked {
        /// What was asked.
        what: String,
    },

    /// A rebuild of history that this query waited for failed in another
    /// thread; that thread's caller got the error itself.
    #[error("history rebuild for {what} failed in another thread")]
    RebuildFailed {
        /// Which tree and keys.
        what: String,
    },

    /// A text form (as printed by a `Display` impl) does not parse.
    #[error("parse {text:?}: {why}")]
    Parse {
        /// The text given.
        text: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// A parent oid for messages: `ø` for "no parent" (a root).
fn parent_str(p: Oid) -> String {
    if p == Oid::INVALID {
        "ø".to_owned()
    } else {
        p.to_string()
    }
}

/// A [`zodb::Error`], shared so that [`Error`] stays `Clone` (one failed
/// load can be reported to several waiting queries). Two are equal when
/// they print the same.
#[derive(Debug, Clone, thiserror::Error)]
#[error(transparent)]
pub struct StorageError(pub std::sync::Arc<zodb::Error>);

impl PartialEq for StorageError {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0) || self.0.to_string() == other.0.to_string()
    }
}

impl Eq for StorageError {}

impl From<zodb::Error> for Error {
    fn from(e: zodb::Error) -> Error {
        Error::Storage(StorageError(std::sync::Arc::new(e)))
    }
}
