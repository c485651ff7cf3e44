//! The real load tester binary spread over worker processes, source addresses and URLs,
//! against a real redis-server and two real wsfleet server processes, all on loopback ports
//! of their own. Everything started here is killed by PID when the test ends; every wait is
//! bounded.
//!
//! Needs the server binary: `cargo build -p wsfleet` (it is another package, so cargo does
//! not build it for this test by itself).

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use serde_json::Value;

/// Longest wait for anything to come up.
const PATIENCE: Duration = Duration::from_secs(20);

/// A child process killed (SIGKILL, by PID) and reaped when dropped.
struct Proc {
    child: Child,
    what: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on loopback")
}

/// Polls `check` every 50 ms until it returns `Some`, or fails the test after `PATIENCE`.
fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(50));
    }
}

/// The wsfleet server binary: next to this package's binary (same target dir and profile),
/// or in $CARGO_TARGET_DIR/debug.
fn server_binary() -> PathBuf {
    let loadtest = Path::new(env!("CARGO_BIN_EXE_wsfleet-loadtest"));
    let mut candidates = vec![loadtest.with_file_name("wsfleet")];
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(dir).join("debug").join("wsfleet"));
    }
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "the wsfleet server binary is missing (looked at {candidates:?}): run \
                 `cargo build -p wsfleet` first"
            )
        })
}

fn start_redis(dir: &Path) -> (Proc, u16) {
    let port = free_port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server not found: install it (apt-get install redis-server)");
    let redis = Proc {
        child,
        what: format!("redis-server :{port}"),
    };
    eventually("redis to answer PING", || {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        stream.write_all(b"PING\r\n").ok()?;
        let mut buf = [0u8; 16];
        let n = stream.read(&mut buf).ok()?;
        buf[..n].starts_with(b"+PONG").then_some(())
    });
    (redis, port)
}

fn start_server(dir: &Path, redis_port: u16, instance: &str) -> (Proc, u16) {
    let port = free_port();
    let log = std::fs::File::create(dir.join(format!("{instance}.log"))).unwrap();
    let child = Command::new(server_binary())
        .args(["--bind-addr", &format!("127.0.0.1:{port}")])
        .args(["--redis-url", &format!("redis://127.0.0.1:{redis_port}")])
        .args(["--instance-id", instance])
        .args(["--lease-period", "500ms", "--shutdown-timeout", "5s"])
        // Closed-loop sockets may send faster than the default per-socket limit.
        .args(["--rate-limit", "0"])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("the wsfleet binary starts");
    let server = Proc {
        child,
        what: format!("wsfleet {instance} :{port}"),
    };
    eventually(&format!("{} to be ready", server.what), || {
        let (status, _) = http_get(port, "/readyz")?;
        (status == 200).then_some(())
    });
    (server, port)
}

/// A plain HTTP/1.1 GET (the server answers with a Content-Length and closes): status and
/// body as JSON (Null when it is not JSON).
fn http_get(port: u16, path: &str) -> Option<(u16, Value)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

/// Runs the load tester to its end (killed if it outlives `limit`) and returns its exit
/// status and JSON report. `during` is called every 100 ms while it runs.
fn run_loadtest(
    args: &[&str],
    json: &Path,
    limit: Duration,
    mut during: impl FnMut(),
) -> (ExitStatus, Value) {
    let child = Command::new(env!("CARGO_BIN_EXE_wsfleet-loadtest"))
        .args(args)
        .arg("--json")
        .arg(json)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the load tester starts");
    let mut loadtest = Proc {
        child,
        what: "wsfleet-loadtest".into(),
    };
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = loadtest.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not finish within {limit:?}",
            loadtest.what
        );
        during();
        sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(json)
        .unwrap_or_else(|e| panic!("no JSON report at {} (exit {status}): {e}", json.display()));
    (status, serde_json::from_str(&text).unwrap())
}

#[test]
fn workers_source_addresses_and_urls_share_one_run_and_one_report() {
    let dir = std::env::temp_dir().join(format!("wsfleet-loadtest-workers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (_redis, redis_port) = start_redis(&dir);
    let (_a, port_a) = start_server(&dir, redis_port, "lt-a");
    let (_b, port_b) = start_server(&dir, redis_port, "lt-b");
    let url_a = format!("ws://127.0.0.1:{port_a}/ws/chat/");
    let url_b = format!("ws://127.0.0.1:{port_b}/ws/chat/");
    let prefix = format!("ltw{}", std::process::id());
    let spread = [
        "-n",
        "24",
        "--workers",
        "3",
        "--source-ips",
        "127.0.0.1,127.0.0.2",
        "--url",
        &url_a,
        "--url",
        &url_b,
        "--session-prefix",
        &prefix,
        "--timeout",
        "60s",
        "--no-progress",
    ];

    // Closed loop: every reply counted and verified across three workers.
    let mut args = vec!["closed-loop", "-m", "10"];
    args.extend_from_slice(&spread);
    let json = dir.join("closed-loop.json");
    let (status, r) = run_loadtest(&args, &json, Duration::from_secs(90), || {});
    assert_eq!(r["workers"], 3, "{r:#}");
    assert_eq!(r["connections"]["attempted"], 24, "{r:#}");
    assert_eq!(r["connections"]["ok"], 24, "{r:#}");
    assert_eq!(r["connections"]["failed"], 0, "{r:#}");
    assert_eq!(r["connections"]["open_at_end"], 24, "{r:#}");
    assert_eq!(r["messages"]["sent"], 240, "{r:#}");
    assert_eq!(r["messages"]["received"], 240, "{r:#}");
    assert_eq!(r["latency_ms"]["samples"], 240, "{r:#}");
    assert_eq!(r["count_violations"], 0, "{r:#}");
    assert_eq!(r["errors"], 0, "{r:#}");
    assert_eq!(status.code(), Some(0), "{r:#}");

    // Hold with the same sessions: the welcome counts continue from 10 on every socket
    // (so the 24 sessions were distinct across workers), and while all are open each
    // instance holds exactly its half of them.
    let mut args = vec!["hold", "--duration", "3s", "--warmup-messages", "2"];
    args.extend_from_slice(&spread);
    let json = dir.join("hold.json");
    let mut seen = (0, 0);
    let local = |port| {
        http_get(port, "/status")
            .map_or(0, |(_, s)| s["connections"]["local"].as_u64().unwrap_or(0))
    };
    let (status, r) = run_loadtest(&args, &json, Duration::from_secs(90), || {
        seen = (seen.0.max(local(port_a)), seen.1.max(local(port_b)));
    });
    assert_eq!(seen, (12, 12), "sockets each instance held at most");
    assert_eq!(r["workers"], 3, "{r:#}");
    assert_eq!(r["connections"]["open_at_end"], 24, "{r:#}");
    assert_eq!(r["messages"]["received"], 48, "{r:#}");
    assert_eq!(r["count_violations"], 0, "{r:#}");
    assert_eq!(status.code(), Some(0), "{r:#}");

    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn too_few_workers_for_the_open_file_limit_is_refused_before_connecting() {
    // One socket more than one process may open. Nothing listens at the URL: the run must
    // stop at the limits check, before connecting.
    let (_, hard) = rlimit::Resource::NOFILE.get().unwrap();
    if hard >= 10_000_000 {
        eprintln!("skipped: the open-file limit ({hard}) is too high to exceed in a test");
        return;
    }
    let sockets = (hard + 1).to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_wsfleet-loadtest"))
        .args(["hold", "-n", &sockets, "--workers", "1", "--no-progress"])
        .args(["--url", "ws://127.0.0.1:9/ws/chat/"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("--workers"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
}
