//! `make bench-automation` (being written).
fn main() {}
