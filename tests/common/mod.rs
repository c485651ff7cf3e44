//! The workspace's shared integration-test harness (testkit/, crate `wsfleet-testkit`), under
//! the name the test binaries include it by: `#[path = "../common/mod.rs"] mod common;`.

pub use wsfleet_testkit::*;
