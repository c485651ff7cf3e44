//! The real parts: a `redis-server` of the test's own and `wsfleet` server processes on free
//! loopback ports, each stopped by pid when its handle drops, and the load tester run as a
//! process with a time limit.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

/// Longest wait for a process to be ready or to end.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The token every test server accepts for POST /broadcast.
pub const TOKEN: &str = "lt-test-token";

/// A free loopback port below Linux's ephemeral range (32768 and up): a server restarted on
/// the same port must not find it taken as the local end of one of the test's own sockets.
/// Tests run in parallel threads: each call moves a shared cursor on, so two tests never get
/// the same port, and the start depends on the pid, so two test processes rarely meet.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static CURSOR: AtomicU16 = AtomicU16::new(0);
    let start = (std::process::id() % 400) as u16 * 29;
    (0..2_000)
        .map(|_| 20_000 + (start + CURSOR.fetch_add(1, Ordering::Relaxed)) % 12_000)
        .find(|&port| TcpListener::bind(("127.0.0.1", port)).is_ok())
        .expect("no free loopback port in 20000-32000")
}

/// Polls `check` every 50 ms until it holds or `PATIENCE` runs out.
pub fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `wsfleet` server binary of this build: next to the load tester's, or in
/// $CARGO_TARGET_DIR/debug.
pub fn wsfleet_bin() -> PathBuf {
    let beside = Path::new(env!("CARGO_BIN_EXE_wsfleet-loadtest")).with_file_name("wsfleet");
    let in_target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(|dir| PathBuf::from(dir).join("debug").join("wsfleet"));
    [Some(beside), in_target_dir]
        .into_iter()
        .flatten()
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!("the wsfleet server binary is missing: run `cargo build -p wsfleet` first")
        })
}

/// A `redis-server` on a free port, in a directory of its own, saving nothing.
pub struct Redis {
    pub port: u16,
    dir: PathBuf,
    child: Child,
}

impl Redis {
    pub fn start() -> Redis {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("lt-redis-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server not found: install it (apt-get install redis-server)");
        let redis = Redis { port, dir, child };
        wait_until("redis to answer PING", || {
            redis.cli(&["PING"]).as_deref() == Some("PONG")
        });
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// One redis-cli command; its output, trimmed, when it succeeded.
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        let output = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .stderr(Stdio::null())
            .output()
            .ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    /// The counter of one session, as the server keeps it.
    pub fn session_count(&self, session: &str) -> Option<u64> {
        self.cli(&["HGET", &format!("wsfleet:session:{session}"), "n"])?
            .parse()
            .ok()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
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
        let log =
            std::env::temp_dir().join(format!("lt-wsfleet-{port}-{}.log", std::process::id()));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(wsfleet_bin())
            .args(["--bind-addr", &format!("127.0.0.1:{port}")])
            .args(["--redis-url", &redis.url()])
            .args(["--broadcast-token", TOKEN])
            // The closed loop sends as fast as replies come: far above the default 100/s.
            .args(["--rate-limit", "0"])
            .args(["--lease-period", "500ms", "--drain-spread", "300ms"])
            .args(["--shutdown-timeout", "5s"])
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("the wsfleet binary starts");
        let server = Server { port, child, log };
        wait_until(&format!("wsfleet on {port} to be ready"), || {
            http_status(port, "/readyz") == Some(200)
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

/// Status code of a plain GET, or None when nothing answered.
fn http_status(port: u16, path: &str) -> Option<u16> {
    http_get(port, path).map(|(status, _)| status)
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
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
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
