//! Auth benchmarks.
fn main() {}
