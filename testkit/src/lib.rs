//! The integration-test harness every test binary of the workspace shares (docs/DESIGN.md,
//! "The test harness"): free ports, a `redis-server` of the test's own (or a Redis Cluster), nodes of the real
//! binary, bounded waits, signals, the workspace's binaries and a real WebSocket client.
//! Everything started here is stopped by pid when its handle drops.
//!
//! One port policy for everything that binds a port by number: [`free_ports`], below Linux's
//! ephemeral range (32768 and up). A port in that range can be taken at any moment, between
//! the check here and the bind, as the local end of one of the many outgoing connections a test
//! makes; a port below it cannot. In-process nodes bind port 0.

mod client;
mod cluster;
mod node;
mod redis;

use std::{
    future::Future,
    net::TcpListener,
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

pub use client::{client_config, refused_upgrade, Client, Socket, FRAME_PATIENCE};
pub use cluster::{tags_on_each_primary, Primary, RedisCluster, NODE_TIMEOUT_MS};
pub use node::{node_args, node_command, wait_ready, ChildNode};
pub use redis::RedisServer;

/// The range handed out: above the well-known and registered ports most daemons use, below the
/// ephemeral range.
const FIRST: u32 = 20_000;
const SPAN: u32 = 12_000;
/// Candidates tried before giving up: bounded, and far more than a machine with a few
/// thousand ports taken in the range needs.
const TRIES: u32 = 2_000;

static CURSOR: AtomicU32 = AtomicU32::new(0);

/// One free loopback port in 20000-31999.
pub fn free_port() -> u16 {
    free_ports(1)
}

/// The first of `n` consecutive free loopback ports in 20000-31999 (a fleet: nginx, Redis and
/// its instances). Tests run in parallel threads: every call moves a shared cursor on, so two
/// tests in one process never get the same port; the start depends on the pid, so two test
/// processes rarely meet (and a port found taken is skipped).
pub fn free_ports(n: u16) -> u16 {
    let n = u32::from(n.max(1));
    let start = (std::process::id() % 400) * 29;
    (0..TRIES)
        .map(|_| FIRST + (start + CURSOR.fetch_add(n, Ordering::Relaxed)) % (SPAN - n))
        .find(|&base| (base..base + n).all(|p| TcpListener::bind(("127.0.0.1", p as u16)).is_ok()))
        .map(|base| base as u16)
        .expect("no free loopback ports in 20000-31999")
}

/// Longest wait for a process started here (redis-server, a node) to come up.
pub const START_PATIENCE: Duration = Duration::from_secs(15);

pub const SIGKILL: i32 = libc::SIGKILL;
pub const SIGTERM: i32 = libc::SIGTERM;
pub const SIGSTOP: i32 = libc::SIGSTOP;
pub const SIGCONT: i32 = libc::SIGCONT;

/// Between two checks of a condition: short next to any patience here.
const POLL: Duration = Duration::from_millis(50);

/// kill(2): `pid` (or, negative, a process group) must be one this test spawned.
pub fn send_signal(pid: i32, signal: i32) -> bool {
    // SAFETY: kill(2) takes plain integers; the caller passes a pid it owns.
    unsafe { libc::kill(pid, signal) == 0 }
}

/// Polls `check` every 50 ms until it returns `Some`; fails the test after `patience`.
pub async fn eventually_within<T, F, Fut>(patience: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + patience;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {patience:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Blocking twin of [`eventually_within`] for tests without a runtime: polls `check` every
/// 50 ms until it holds; fails the test after `patience`.
pub fn wait_until(patience: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + patience;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {patience:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// A binary of this workspace (`<target>/debug/NAME`, next to the `deps/` directory of the
/// running test): cargo builds a package's own binaries before its integration tests, and
/// `make test` builds both packages' binaries first, which `cargo test` cannot do for another
/// package itself. `VAR` overrides the path.
pub fn workspace_binary(var: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(var) {
        return PathBuf::from(path);
    }
    let path = std::env::current_exe()
        .ok()
        .and_then(|test| Some(test.parent()?.parent()?.join(name)))
        .expect("the test binary lives in <target>/debug/deps");
    assert!(
        path.is_file(),
        "{} is missing: build it first with `cargo build -p wsfleet -p wsfleet-loadtest` \
         (make test does)",
        path.display()
    );
    path
}
