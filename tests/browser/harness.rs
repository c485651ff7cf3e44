//! What the browser test needs around the page: a `redis-server` of its own, nodes of the real
//! binary as child processes (for SIGTERM and SIGKILL), a TCP proxy standing in for the load
//! balancer, and chromedriver with headless Chromium. Trimmed from tests/api/helpers.rs.
//!
//! Everything started here is stopped by PID (chromedriver and its browser by their process
//! group) when its handle drops.

use std::{
    net::{SocketAddr, TcpListener},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::{net::TcpStream, process::Child, task::JoinHandle};

/// Longest wait for a server to come up.
const START_PATIENCE: Duration = Duration::from_secs(15);

pub const SIGKILL: i32 = 9;
pub const SIGTERM: i32 = 15;

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

fn send_signal(pid: i32, signal: i32) -> bool {
    // SAFETY: kill(2) on a pid (or, negative, a process group) this test spawned.
    unsafe { libc_kill(pid, signal) == 0 }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on loopback")
}

/// Polls `check` every 50 ms until it returns `Some` or `START_PATIENCE` runs out.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + START_PATIENCE;
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
    port: u16,
    dir: PathBuf,
    child: std::process::Child,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "wsfleet-browser-redis-{port}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server not found: install it (apt-get install redis-server)");
        let server = RedisServer { port, dir, child };
        eventually("redis to answer PING", || redis_ping(port)).await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn redis_ping(port: u16) -> Option<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    stream.write_all(b"PING\r\n").await.ok()?;
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    buf[..n].starts_with(b"+PONG").then_some(())
}

async fn wait_ready(addr: SocketAddr) {
    let url = format!("http://{addr}/readyz");
    eventually(&format!("{url} to answer 200"), || {
        let url = url.clone();
        async move {
            let response = reqwest::get(&url).await.ok()?;
            (response.status() == 200).then_some(())
        }
    })
    .await;
}

/// The real binary as a child process, with test-friendly timings.
pub struct ChildNode {
    pub addr: SocketAddr,
    pub child: Child,
    log: PathBuf,
}

impl ChildNode {
    pub async fn start(redis: &RedisServer, instance: &str, extra: &[&str]) -> ChildNode {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let log = std::env::temp_dir().join(format!("wsfleet-browser-{instance}-{port}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_wsfleet"))
            .args(["--bind-addr", &addr.to_string()])
            .args(["--redis-url", &redis.url()])
            .args(["--instance-id", instance])
            .args(["--lease-period", "500ms"])
            .args(["--redis-timeout", "500ms"])
            .args(["--drain-spread", "200ms"])
            .args(["--shutdown-timeout", "5s"])
            .args(extra)
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("the wsfleet binary starts");
        wait_ready(addr).await;
        ChildNode { addr, child, log }
    }

    pub fn signal(&self, signal: i32) {
        let pid = self.child.id().expect("child still running") as i32;
        assert!(send_signal(pid, signal), "kill({pid}, {signal}) failed");
    }
}

impl Drop for ChildNode {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A TCP proxy on a free loopback port that sends each new connection to the current target,
/// as a load balancer does; connections already made stay where they are.
pub struct Proxy {
    pub addr: SocketAddr,
    target: Arc<Mutex<SocketAddr>>,
    task: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let target = Arc::new(Mutex::new(target));
        let current = Arc::clone(&target);
        let task = tokio::spawn(async move {
            // Dropped (and so aborted) with the accept loop.
            let mut tunnels = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let to = *current.lock().unwrap();
                tunnels.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                while tunnels.try_join_next().is_some() {}
            }
        });
        Proxy { addr, target, task }
    }

    /// New connections go to `target` from now on.
    pub fn point_to(&self, target: SocketAddr) {
        *self.target.lock().unwrap() = target;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|file| file.is_file())
}

/// chromedriver on a free loopback port, in a process group of its own so that it and the
/// browser it starts are stopped together; each session gets a new empty profile.
pub struct ChromeDriver {
    port: u16,
    pgid: i32,
    child: std::process::Child,
    chromium: PathBuf,
    profile: PathBuf,
    log: PathBuf,
}

impl ChromeDriver {
    pub async fn start() -> ChromeDriver {
        let (Some(chromium), Some(chromedriver)) = (on_path("chromium"), on_path("chromedriver"))
        else {
            panic!(
                "the browser test needs chromium and chromedriver on PATH: \
                 apt-get install chromium chromium-driver"
            );
        };
        let port = free_port();
        let stem = format!("wsfleet-browser-{}-{port}", std::process::id());
        let profile = std::env::temp_dir().join(format!("{stem}-profile"));
        let log = std::env::temp_dir().join(format!("{stem}-chromedriver.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = std::process::Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("{} does not start: {e}", chromedriver.display()));
        let pgid = child.id() as i32;
        let mut driver = ChromeDriver {
            port,
            pgid,
            child,
            chromium,
            profile,
            log,
        };
        let url = format!("http://127.0.0.1:{port}/status");
        let deadline = Instant::now() + START_PATIENCE;
        loop {
            if let Ok(response) = reqwest::get(&url).await {
                let status: serde_json::Value = response.json().await.unwrap_or_default();
                if status["value"]["ready"] == true {
                    break;
                }
            }
            if let Ok(Some(exit)) = driver.child.try_wait() {
                panic!("chromedriver exited ({exit}):\n{}", driver.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver not ready on port {port} within {START_PATIENCE:?}:\n{}",
                driver.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        driver
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A new headless Chromium session with the flags this machine's closed network needs.
    pub async fn session(&self) -> fantoccini::Client {
        std::fs::create_dir_all(&self.profile).unwrap();
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1000,1100",
            &format!("--user-data-dir={}", self.profile.display()),
        ];
        let capabilities = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": path_str(&self.chromium), "args": args },
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        fantoccini::ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "chromedriver could not start {}: {e}\n{}",
                    self.chromium.display(),
                    self.log_text()
                )
            })
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // The whole group: chromedriver and any browser process it left behind.
        send_signal(-self.pgid, SIGKILL);
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
        let _ = std::fs::remove_file(&self.log);
    }
}
