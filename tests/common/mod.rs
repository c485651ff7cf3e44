//! What every integration-test binary needs around the code under test: free loopback ports,
//! a bounded wait, a `redis-server` of the test's own, nodes of the real binary as child
//! processes, and signals by pid.
//!
//! Each binary includes it with `#[path = "../common/mod.rs"] mod common;` (a directory
//! without `main.rs` is not a test binary of its own). Everything started here is stopped by
//! pid when its handle drops.

// Each binary uses a different part of this module.
#![allow(dead_code)]

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use tokio::{net::TcpStream, process::Child};

/// Longest wait for a process started here (redis-server, a node) to come up.
pub const START_PATIENCE: Duration = Duration::from_secs(15);

pub const SIGKILL: i32 = 9;
pub const SIGTERM: i32 = 15;

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

/// kill(2): `pid` (or, negative, a process group) must be one this test spawned.
pub fn send_signal(pid: i32, signal: i32) -> bool {
    // SAFETY: kill(2) takes plain integers; the caller passes a pid it owns.
    unsafe { libc_kill(pid, signal) == 0 }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on loopback")
}

/// Polls `check` every 50 ms until it returns `Some`; fails the test after `patience`.
pub async fn eventually_within<T, F, Fut>(patience: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
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
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `redis-server` of this test's own, on a free loopback port, in its own directory.
pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    child: Option<std::process::Child>,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("wsfleet-test-redis-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = RedisServer {
            port,
            dir,
            child: None,
        };
        server.launch().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn launch(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--dbfilename",
                "dump.rdb",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server not found: install it (apt-get install redis-server)");
        self.child = Some(child);
        let port = self.port;
        eventually_within(START_PATIENCE, "redis to answer PING", || async move {
            redis_ping(port).await.then_some(())
        })
        .await;
    }

    /// Kills the server (SIGKILL): like a crash, nothing is saved.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Writes the data to disk, then kills the server; `restart` brings the data back.
    pub async fn save_and_kill(&mut self) {
        let client = self.client().await;
        let _: String = fred::interfaces::ClientLike::custom(
            &client,
            fred::types::CustomCommand::new_static("SAVE", None, false),
            Vec::<String>::new(),
        )
        .await
        .unwrap();
        self.kill();
    }

    /// Starts again on the same port and directory (with whatever was saved).
    pub async fn restart(&mut self) {
        self.launch().await;
    }

    /// Removes the saved data so the next restart comes back empty.
    pub fn forget_saved_data(&self) {
        let _ = std::fs::remove_file(self.dir.join("dump.rdb"));
    }

    /// A plain fred client for inspecting keys from the test.
    pub async fn client(&self) -> fred::clients::Client {
        use fred::interfaces::ClientLike;
        let config = fred::types::config::Config::from_url(&self.url()).unwrap();
        let client = fred::types::Builder::from_config(config).build().unwrap();
        client.init().await.expect("test redis client connects");
        client
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn redis_ping(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    if stream.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await,
        Ok(Ok(n)) if buf[..n].starts_with(b"+PONG")
    )
}

/// Command-line flags for a node on `redis` with test-friendly timings; a flag in `extra`
/// replaces the default of the same name (clap refuses a flag given twice). The first
/// element is the program name, as `clap::Parser::try_parse_from` wants it.
pub fn node_args(redis: &RedisServer, extra: &[&str]) -> Vec<String> {
    let url = redis.url();
    let defaults = [
        ("--bind-addr", "127.0.0.1:0"),
        ("--redis-url", url.as_str()),
        ("--lease-period", "500ms"),
        ("--redis-timeout", "500ms"),
        ("--drain-spread", "200ms"),
        ("--shutdown-timeout", "5s"),
    ];
    let mut args = vec!["wsfleet".to_string()];
    for (flag, value) in defaults {
        if !extra.contains(&flag) {
            args.extend([flag.to_string(), value.to_string()]);
        }
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Waits until `GET http://ADDR/readyz` answers 200.
pub async fn wait_ready(addr: SocketAddr) {
    let url = format!("http://{addr}/readyz");
    eventually_within(START_PATIENCE, &format!("{url} to answer 200"), || {
        let url = url.clone();
        async move {
            let response = reqwest::get(&url).await.ok()?;
            (response.status() == 200).then_some(())
        }
    })
    .await;
}

/// The real binary as a child process, for signals (SIGTERM drain, SIGKILL crash) and for
/// listening where an in-process node cannot be reached from (another network namespace).
pub struct ChildNode {
    pub addr: SocketAddr,
    pub instance: String,
    pub child: Child,
    pub log: PathBuf,
}

impl ChildNode {
    /// On a free loopback port.
    pub async fn start(redis: &RedisServer, instance: &str, extra: &[&str]) -> ChildNode {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        ChildNode::start_on(addr, redis, instance, extra).await
    }

    /// On `addr`, which must be free.
    pub async fn start_on(
        addr: SocketAddr,
        redis: &RedisServer,
        instance: &str,
        extra: &[&str],
    ) -> ChildNode {
        ChildNode::launch(addr, redis, instance, extra, None).await
    }

    /// With `RUST_LOG=rust_log` and stdout a pipe that nobody reads (a stalled log shipper):
    /// once the pipe's 64 KiB are full, every write to it blocks. The pipe stays open as long
    /// as the node does (`child.stdout` is kept, never read).
    pub async fn start_with_stalled_stdout(
        redis: &RedisServer,
        instance: &str,
        extra: &[&str],
        rust_log: &str,
    ) -> ChildNode {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        ChildNode::launch(addr, redis, instance, extra, Some(rust_log)).await
    }

    /// `stalled_stdout_log`: `None`, stdout and stderr go to the log file; `Some(filter)`,
    /// stdout is an unread pipe and `RUST_LOG` is `filter`.
    async fn launch(
        addr: SocketAddr,
        redis: &RedisServer,
        instance: &str,
        extra: &[&str],
        stalled_stdout_log: Option<&str>,
    ) -> ChildNode {
        let mut args = node_args(redis, extra);
        args.remove(0);
        let at = args
            .iter()
            .position(|a| a == "--bind-addr")
            .expect("node_args sets --bind-addr");
        args[at + 1] = addr.to_string();
        let log = std::env::temp_dir().join(format!(
            "wsfleet-test-{instance}-{}-{}.log",
            addr.port(),
            std::process::id()
        ));
        let file = std::fs::File::create(&log).unwrap();
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_wsfleet"));
        command.args(&args).args(["--instance-id", instance]);
        match stalled_stdout_log {
            None => command.stdout(file.try_clone().unwrap()),
            Some(filter) => command.env("RUST_LOG", filter).stdout(Stdio::piped()),
        };
        let child = command
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("the wsfleet binary starts");
        let node = ChildNode {
            addr,
            instance: instance.to_string(),
            child,
            log,
        };
        wait_ready(addr).await;
        node
    }

    pub fn signal(&self, signal: i32) {
        let pid = self.child.id().expect("child still running") as i32;
        assert!(send_signal(pid, signal), "kill({pid}, {signal}) failed");
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ChildNode {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A binary of this workspace built next to `wsfleet` (`<target>/debug/NAME`): `make test`
/// builds the load tester before `cargo test`, which cannot build another package's binary
/// itself. `VAR` overrides the path.
pub fn workspace_binary(var: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(var) {
        return PathBuf::from(path);
    }
    let path = Path::new(env!("CARGO_BIN_EXE_wsfleet"))
        .parent()
        .expect("the wsfleet binary lives in a directory")
        .join(name);
    assert!(
        path.is_file(),
        "{} is missing: build it first with `cargo build -p wsfleet -p wsfleet-loadtest` \
         (make test does)",
        path.display()
    );
    path
}
