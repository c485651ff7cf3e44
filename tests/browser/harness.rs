//! What the browser test needs around the page, beyond the shared harness of tests/common
//! (a `redis-server` of its own, nodes of the real binary as child processes for SIGTERM and
//! SIGKILL): a TCP proxy standing in for the load balancer, and chromedriver with headless
//! Chromium.
//!
//! Everything started here is stopped by PID (chromedriver and its browser by their process
//! group) when its handle drops.

use std::{
    net::SocketAddr,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::{net::TcpStream, task::JoinHandle};

use crate::common::{free_port, send_signal, START_PATIENCE};
pub use crate::common::{ChildNode, RedisServer, SIGKILL, SIGTERM};

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
