//! The WCFS client library. So far: [`proto`], the `head/watch` wire
//! format shared with the server. To come (issue 6): `WCFS` (a connection
//! to a mounted server), `Conn` (a view as of a database state), `FileH`,
//! `Mapping`, and the pinner thread that remaps pinned blocks.

#![forbid(unsafe_code)]

pub mod proto;
