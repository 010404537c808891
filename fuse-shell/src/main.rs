//! The `wcfs` command.
fn main() {}
