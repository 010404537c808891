//! Unit tests of the fs1 internals.
