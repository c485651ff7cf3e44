//! The workspace's integration-test harness (testkit/, the dev-only crate `wsfleet-testkit`:
//! free ports, a `redis-server` of the test's own, nodes of the real binary, bounded waits,
//! signals), under the name the test binaries include it by:
//! `#[path = "../common/mod.rs"] mod common;` (a directory without `main.rs` is not a test
//! binary of its own).

pub use wsfleet_testkit::*;
