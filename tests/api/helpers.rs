//! Test harness: a real `redis-server` per test on a free port, nodes in-process (port 0) or
//! as child processes of the real binary, and a real WebSocket client.
//!
//! Everything started here is stopped by PID when its handle drops. Logs stay quiet unless
//! `TEST_LOG` is set.

use std::{
    net::{SocketAddr, TcpListener},
    path::PathBuf,
    process::Stdio,
    sync::Once,
    time::{Duration, Instant},
};

use serde_json::Value;
use tokio::{net::TcpStream, process::Child, task::JoinHandle};
use wsfleet::{config::Config, startup::Application};

pub use crate::client::{refused_upgrade, Client};

/// Longest wait for any single expected event in a test.
pub const PATIENCE: Duration = Duration::from_secs(10);

static TRACING: Once = Once::new();

fn init_tracing() {
    TRACING.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            wsfleet::telemetry::init(wsfleet::config::LogFormat::Pretty, "test", "blue");
        }
    });
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on loopback")
}

/// Polls `check` every 50 ms until it returns `Some` or `PATIENCE` runs out.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
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
        eventually("redis to answer PING", || async move {
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
/// replaces the default of the same name (clap refuses a flag given twice).
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

/// A node running inside the test process.
pub struct TestApp {
    pub addr: SocketAddr,
    pub instance: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

pub async fn spawn_app(redis: &RedisServer, extra: &[&str]) -> TestApp {
    init_tracing();
    let config = <Config as clap::Parser>::try_parse_from(node_args(redis, extra)).unwrap();
    let settings = config.into_settings().unwrap();
    let app = Application::build(settings).await.expect("app builds");
    let addr = app.address();
    let instance = app.instance_id().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let test_app = TestApp {
        addr,
        instance,
        stop: Some(stop),
        handle: Some(handle),
    };
    test_app.wait_ready().await;
    test_app
}

impl TestApp {
    pub fn http(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self, session: Option<&str>) -> String {
        ws_url(self.addr, session)
    }

    pub async fn wait_ready(&self) {
        wait_ready(self.addr).await;
    }

    /// Triggers the drain and waits for the node to finish it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.handle.take().unwrap().await.unwrap()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(handle) = &self.handle {
            handle.abort();
        }
    }
}

pub fn ws_url(addr: SocketAddr, session: Option<&str>) -> String {
    match session {
        Some(s) => format!("ws://{addr}/ws/chat/?session_uuid={s}"),
        None => format!("ws://{addr}/ws/chat/"),
    }
}

pub async fn wait_ready(addr: SocketAddr) {
    let url = format!("http://{addr}/readyz");
    eventually("the node to become ready", || {
        let url = url.clone();
        async move {
            let response = reqwest::get(&url).await.ok()?;
            (response.status() == 200).then_some(())
        }
    })
    .await;
}

pub async fn get_json(url: &str) -> (u16, Value) {
    let response = reqwest::get(url).await.expect("GET answers");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// The real binary as a child process, for signals (SIGTERM drain, SIGKILL crash).
pub struct ChildNode {
    pub addr: SocketAddr,
    pub instance: String,
    pub child: Child,
    pub log: PathBuf,
}

impl ChildNode {
    pub async fn start(redis: &RedisServer, instance: &str, extra: &[&str]) -> ChildNode {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut args = node_args(redis, extra);
        args.remove(0);
        assert_eq!(args[0], "--bind-addr");
        args[1] = addr.to_string();
        let log = std::env::temp_dir().join(format!("wsfleet-test-{instance}-{port}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_wsfleet"))
            .args(&args)
            .args(["--instance-id", instance])
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("the wsfleet binary starts");
        wait_ready(addr).await;
        ChildNode {
            addr,
            instance: instance.to_string(),
            child,
            log,
        }
    }

    pub fn signal(&self, signal: i32) {
        let pid = self.child.id().expect("child still running") as i32;
        // SAFETY: kill(2) with a pid we spawned and still own.
        let rc = unsafe { libc_kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
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

pub const SIGKILL: i32 = 9;
pub const SIGTERM: i32 = 15;

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}
