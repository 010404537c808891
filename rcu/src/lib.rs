//! Read-copy-update snapshots and in-progress job registry (being written).
