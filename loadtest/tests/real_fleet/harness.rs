//! The real parts, from the workspace's shared harness (testkit/): a `redis-server` of the
//! test's own and `wsfleet` server processes on free loopback ports, each stopped by pid when
//! its handle drops; and, of this package's own, the load tester run as a process with a time
//! limit.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    ops::Deref,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

/// Longest wait for a process to be ready or to end.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The token every test server accepts for POST /broadcast.
pub const TOKEN: &str = "lt-test-token";

pub use wsfleet_testkit::free_port;
use wsfleet_testkit::{node_command, send_signal, wait_until, RedisServer, SIGKILL};

/// A `redis-server` of the test's own (the shared [`RedisServer`], started without a runtime).
pub struct Redis(RedisServer);

impl Redis {
    pub fn start() -> Redis {
        Redis(RedisServer::start_blocking())
    }

    /// The counter of one session, as the server keeps it.
    pub fn session_count(&self, session: &str) -> Option<u64> {
        self.cli(&["HGET", &format!("wsfleet:session:{session}"), "n"])?
            .parse()
            .ok()
    }
}

impl Deref for Redis {
    type Target = RedisServer;

    fn deref(&self) -> &RedisServer {
        &self.0
    }
}

/// One `wsfleet` server process with test-friendly timings and the test token.
pub struct Server {
    pub port: u16,
    child: Child,
    log: PathBuf,
}

impl Server {
    /// Starts a server on `port` and waits until /readyz answers 200.
    pub fn start(redis: &Redis, port: u16) -> Server {
        Server::start_with(redis, port, &[])
    }

    /// [`Server::start`] with more command-line options (e.g. `--auth-secret`).
    pub fn start_with(redis: &Redis, port: u16, more: &[&str]) -> Server {
        let base = [
            "--broadcast-token",
            TOKEN,
            // The closed loop sends as fast as replies come: far above the default 100/s.
            "--rate-limit",
            "0",
            "--drain-spread",
            "300ms",
            // The server's default, which these tests were written against (the shared
            // harness's nodes use 500ms).
            "--redis-timeout",
            "2s",
        ];
        let extra = [&base[..], more].concat();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let (mut command, log) = node_command(addr, redis, None, &extra);
        let child = command.spawn().expect("the wsfleet binary starts");
        let server = Server { port, child, log };
        wait_until(PATIENCE, &format!("wsfleet on {port} to be ready"), || {
            http_get(port, "/readyz").map(|(status, _)| status) == Some(200)
        });
        server
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws/chat/", self.port)
    }

    pub fn broadcast_url(&self) -> String {
        format!("http://127.0.0.1:{}/broadcast", self.port)
    }

    /// Waits (bounded) for the process to exit, e.g. after a SIGTERM sent by someone else.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "wsfleet {} did not exit; log:\n{}",
                self.pid(),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A plain HTTP/1.1 GET (the server answers with a Content-Length and closes): status and
/// body as JSON (Null when it is not JSON), or None when nothing answered.
pub fn http_get(port: u16, path: &str) -> Option<(u16, Value)> {
    let mut stream =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    Some((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

/// A load tester run: its exit code, its JSON report and what it printed.
pub struct Run {
    pub code: Option<i32>,
    pub report: Value,
    pub output: String,
}

impl Run {
    pub fn describe(&self) -> String {
        format!("exit {:?}\n{}", self.code, self.output)
    }
}

/// Starts `wsfleet-loadtest ARGS --json FILE` without waiting for it.
pub fn spawn_loadtest(args: &[&str], json: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_wsfleet-loadtest"))
        .args(args)
        .arg("--json")
        .arg(json)
        // Never the token of whoever runs the tests.
        .env_remove("BROADCAST_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the load tester starts")
}

/// Waits (bounded) for a load tester started by [`spawn_loadtest`] and reads its report.
pub fn finish_loadtest(child: Child, json: &Path, limit: Duration) -> Run {
    finish_loadtest_watching(child, json, limit, || {})
}

/// [`finish_loadtest`], calling `watch` every 100 ms while the load tester runs.
pub fn finish_loadtest_watching(
    child: Child,
    json: &Path,
    limit: Duration,
    mut watch: impl FnMut(),
) -> Run {
    let pid = child.id();
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    let give_up = Instant::now() + limit;
    let output: Output = loop {
        match result.recv_timeout(Duration::from_millis(100)) {
            Ok(output) => break output.expect("waiting for the load tester"),
            Err(_) if Instant::now() < give_up => watch(),
            Err(_) => {
                // The pid is this test's own child, still unreaped (the thread waits for it).
                send_signal(pid as i32, SIGKILL);
                panic!("the load tester ran past {limit:?}");
            }
        }
    };
    let report = std::fs::read_to_string(json)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or(Value::Null);
    let _ = std::fs::remove_file(json);
    Run {
        code: output.status.code(),
        report,
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// Runs the load tester to the end (bounded).
pub fn loadtest(args: &[&str]) -> Run {
    let json = json_path();
    let child = spawn_loadtest(args, &json);
    finish_loadtest(child, &json, Duration::from_secs(90))
}

/// A fresh path for one run's JSON report.
pub fn json_path() -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static RUNS: AtomicU32 = AtomicU32::new(0);
    let n = RUNS.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("lt-report-{}-{n}.json", std::process::id()))
}
