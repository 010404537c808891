//! Sets and maps of i64 keys stored as coalesced ranges (being written).
#![forbid(unsafe_code)]
