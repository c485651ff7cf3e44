//! The fleet end to end: the real `make` targets (`up`, `scale`, `promote`, `status`, `down`)
//! with our own nginx, Redis and instances, while resuming WebSocket clients keep sending
//! through nginx.
//!
//! Each test gets a private run directory (`RUN_DIR`) and free loopback ports (`PORT`,
//! `REDIS_PORT`, `BASE_PORT`), so it never meets a developer's fleet or another test. The make
//! targets run with `SKIP_BUILD=1` and the debug binaries of this test's own build
//! (`<target>/debug/wsfleet`, `…/wsfleet-loadtest`; `WSFLEET_BIN` and `LOADTEST_BIN`
//! override): a `cargo build` inside `cargo test` would wait forever for the build lock that
//! `cargo test` holds. `make test` builds them first, in the dev profile, which shares every
//! compiled dependency with the tests (a release build would double CI's compile time).
//!
//! Every make call has a time limit, every loop a bound in count and time, and everything a
//! test started is stopped by `make down`, then by pid if anything survived, however the test
//! ends. Only 127.0.0.1 is contacted.

use std::{
    collections::BTreeSet,
    fs::File,
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::Mutex;
use tokio_tungstenite::{
    tungstenite::{protocol::WebSocketConfig, Message},
    MaybeTlsStream, WebSocketStream,
};

/// Each test runs a whole fleet; on two cores, one at a time.
static ONE_FLEET_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// Longest wait for one expected event (a reply, a state of /status).
const PATIENCE: Duration = Duration::from_secs(20);

/// The first port of a block of `PORTS_PER_FLEET` free loopback ports, below Linux's ephemeral
/// range (32768 and up): a port in that range can be taken at any moment as the local end of
/// one of the many connections a test makes (clients to nginx, nginx to the instances), and an
/// instance would then fail to bind it.
fn free_port_block() -> u16 {
    const PORTS_PER_FLEET: u16 = 24;
    let start = 20_000 + (std::process::id() % 500) as u16 * PORTS_PER_FLEET;
    (0..50u16)
        .map(|i| 20_000 + (start - 20_000 + i * PORTS_PER_FLEET) % 12_000)
        .find(|&base| {
            (base..base + PORTS_PER_FLEET).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok())
        })
        .expect("no block of free loopback ports in 20000-32000")
}

/// A port is free when nothing accepts connections on it.
fn port_is_free(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500)).is_err()
}

/// A process is gone when /proc has no entry for it, or only a zombie's.
fn process_is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
    }
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// What one `make` call printed (stdout and stderr, interleaved) and how it exited.
#[derive(Debug)]
struct MakeOutput {
    code: Option<i32>,
    text: String,
}

impl MakeOutput {
    fn assert_ok(&self, what: &str) {
        assert_eq!(self.code, Some(0), "{what} failed:\n{}", self.text);
    }
}

/// A fleet started by the make targets in a private run directory.
struct Fleet {
    root: PathBuf,
    run_dir: PathBuf,
    port: u16,
    redis_port: u16,
    base_port: u16,
    wsfleet_bin: PathBuf,
    loadtest_bin: PathBuf,
    /// Every pid and port the run directory ever recorded: all must be gone after `make down`.
    pids: BTreeSet<u32>,
    ports: BTreeSet<u16>,
    calls: usize,
    is_down: bool,
}

impl Fleet {
    fn new(name: &str) -> Fleet {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        // <target>/debug/wsfleet, next to which `make test` builds the load tester.
        let target = Path::new(env!("CARGO_BIN_EXE_wsfleet"))
            .parent()
            .and_then(Path::parent)
            .expect("the test binary lives in a target directory")
            .to_path_buf();
        let bin = |var: &str, name: &str| {
            std::env::var_os(var)
                .map(PathBuf::from)
                .unwrap_or_else(|| target.join("debug").join(name))
        };
        let wsfleet_bin = bin("WSFLEET_BIN", "wsfleet");
        let loadtest_bin = bin("LOADTEST_BIN", "wsfleet-loadtest");
        for path in [&wsfleet_bin, &loadtest_bin] {
            assert!(
                path.is_file(),
                "{} is missing: build the binaries first with \
                 `cargo build -p wsfleet -p wsfleet-loadtest` (make test does)",
                path.display()
            );
        }
        let run_dir =
            std::env::temp_dir().join(format!("wsfleet-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&run_dir);
        std::fs::create_dir_all(&run_dir).unwrap();
        // nginx, Redis, then the instances: the scripts take the first free ports from
        // BASE_PORT up, skipping taken ones.
        let block = free_port_block();
        let (port, redis_port, base_port) = (block, block + 1, block + 2);
        Fleet {
            root,
            run_dir,
            port,
            redis_port,
            base_port,
            wsfleet_bin,
            loadtest_bin,
            pids: BTreeSet::new(),
            ports: [port, redis_port].into(),
            calls: 0,
            is_down: false,
        }
    }

    /// Runs `make TARGET VAR=…` against this fleet, killed if it outlives `limit`.
    fn make(&mut self, target: &str, vars: &[(&str, &str)], limit: Duration) -> MakeOutput {
        self.calls += 1;
        let out_path = self
            .run_dir
            .join(format!("make-{:02}-{target}.out", self.calls));
        let out = File::create(&out_path).unwrap();
        let mut command = Command::new("make");
        command
            .arg("--no-print-directory")
            .arg(target)
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        // Nothing of the caller's environment may point the scripts elsewhere.
        for var in [
            "MAKEFLAGS",
            "MFLAGS",
            "MAKELEVEL",
            "REDIS_URL",
            "RUNTIME",
            "N",
            "PROMOTE_ENV",
            "BROADCAST_TOKEN",
            "CARGO_TARGET_DIR",
        ] {
            command.env_remove(var);
        }
        command
            .env("RUN_DIR", &self.run_dir)
            .env("PORT", self.port.to_string())
            .env("NGINX_ADDRESS", "127.0.0.1")
            .env("REDIS_PORT", self.redis_port.to_string())
            .env("BASE_PORT", self.base_port.to_string())
            .env("SKIP_BUILD", "1")
            .env("WSFLEET_BIN", &self.wsfleet_bin)
            .env("LOADTEST_BIN", &self.loadtest_bin)
            .env("LOG_FORMAT", "json");
        for (name, value) in vars {
            command.env(name, value);
        }
        let started = Instant::now();
        let mut child = command.spawn().expect("make runs");
        let code = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status.code();
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                let text = std::fs::read_to_string(&out_path).unwrap_or_default();
                panic!("make {target} did not finish within {limit:?}:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let text = std::fs::read_to_string(&out_path).unwrap_or_default();
        eprintln!(
            "--- make {target} {vars:?}: exit {code:?} after {:.1}s",
            started.elapsed().as_secs_f64()
        );
        self.record_state();
        MakeOutput { code, text }
    }

    /// Notes every pid and port the run directory holds now.
    fn record_state(&mut self) {
        for dir in [self.run_dir.clone(), self.run_dir.join("nginx")] {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                match path.extension().and_then(|e| e.to_str()) {
                    Some("pid") => self.pids.extend(text.trim().parse::<u32>().ok()),
                    Some("port") => self.ports.extend(text.trim().parse::<u16>().ok()),
                    _ => {}
                }
            }
        }
    }

    fn ws_url(&self, session: &str) -> String {
        format!(
            "ws://127.0.0.1:{}/ws/chat/?session_uuid={session}",
            self.port
        )
    }

    /// `GET /status` through nginx: the colours of the live instances, sorted.
    async fn colours(&self) -> Vec<String> {
        let url = format!("http://127.0.0.1:{}/status", self.port);
        let Ok(response) = reqwest::get(&url).await else {
            return vec![];
        };
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let mut colours: Vec<String> = body["instances"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter(|i| i["draining"] != true)
                    .filter_map(|i| i["color"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        colours.sort();
        colours
    }

    /// Waits until the registry lists exactly `n` instances, all of `colour`.
    async fn expect_instances(&self, n: usize, colour: &str) {
        let want = vec![colour.to_string(); n];
        let deadline = Instant::now() + PATIENCE;
        loop {
            let got = self.colours().await;
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "/status: wanted {n} x {colour}, got {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `make down`, then: every process the run directory ever recorded has exited, and every
    /// port it used is free.
    fn down_and_check_nothing_is_left(&mut self) {
        let out = self.make("down", &[], Duration::from_secs(60));
        out.assert_ok("make down");
        self.is_down = true;
        let deadline = Instant::now() + Duration::from_secs(10);
        let left = loop {
            let left: Vec<(u32, String)> = self
                .pids
                .iter()
                .filter(|pid| !process_is_gone(**pid))
                .map(|pid| (*pid, cmdline(*pid)))
                .collect();
            if left.is_empty() || Instant::now() > deadline {
                break left;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(
            left.is_empty(),
            "processes left after make down: {left:?}\n{}",
            out.text
        );
        let busy: Vec<u16> = self
            .ports
            .iter()
            .copied()
            .filter(|p| !port_is_free(*p))
            .collect();
        assert!(
            busy.is_empty(),
            "ports still open after make down: {busy:?}"
        );
        assert!(
            self.pids.len() >= 3,
            "expected at least redis, nginx and one instance to have run: {:?}",
            self.pids
        );
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if !self.is_down {
            // A failed test: stop what it started, politely first.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.make("down", &[], Duration::from_secs(60))
            }));
        }
        let run_dir = self.run_dir.to_string_lossy().to_string();
        for pid in &self.pids {
            // Only what is still ours: its command line names our run directory or ports.
            let line = cmdline(*pid);
            let ours =
                line.contains(&run_dir) || line.contains(&format!("127.0.0.1:{}", self.redis_port));
            if !process_is_gone(*pid) && ours {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "the fleet's run directory is kept: {}",
                self.run_dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.run_dir);
        }
    }
}

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

/// Shared by the resuming clients and the test body.
#[derive(Default)]
struct Traffic {
    /// Replies counted by every client together.
    acknowledged: AtomicU64,
    stop: AtomicBool,
}

/// What one resuming client saw.
#[derive(Debug, Default)]
struct ClientReport {
    session: String,
    /// The session's counter at the end: every number up to it was seen exactly once.
    last: u64,
    /// Gaps, repeats or anything else against the protocol, with the numbers involved.
    violations: Vec<String>,
    reconnects: u64,
    byes: u64,
    /// Replies lost with a broken connection and recovered from the welcome (rule 4, w > acked).
    recovered_from_welcome: u64,
}

/// One client, closed loop (one message in flight), through nginx, following the resume rules
/// of docs/PROTOCOL.md: on `bye`, a close or a broken connection it reconnects with its
/// session and resends the message that had no reply, unless the welcome shows it was counted.
/// Every count it is told must be the previous one plus one. Stops when `traffic.stop` is set
/// and nothing is in flight, or at `deadline`.
async fn resuming_client(
    url: String,
    session: String,
    pace: Duration,
    traffic: Arc<Traffic>,
    deadline: tokio::time::Instant,
) -> ClientReport {
    let mut report = ClientReport {
        session: session.clone(),
        ..ClientReport::default()
    };
    let mut acked: Option<u64> = None;
    let mut pending = false;
    'connection: loop {
        // Connect (and read the welcome), with a short back-off, until the deadline.
        let mut backoff = Duration::from_millis(50);
        let mut socket: Socket = loop {
            if tokio::time::Instant::now() > deadline {
                report
                    .violations
                    .push("could not reconnect before the deadline".into());
                report.last = acked.unwrap_or(0);
                return report;
            }
            match tokio::time::timeout(Duration::from_secs(5), connect(&url)).await {
                Ok(Ok((socket, welcome))) => {
                    match acked {
                        None => acked = Some(welcome),
                        Some(a) if pending && welcome == a + 1 => {
                            // The message in flight was counted; its reply was lost.
                            acked = Some(welcome);
                            pending = false;
                            report.recovered_from_welcome += 1;
                        }
                        Some(a) if welcome != a => {
                            report.violations.push(format!(
                                "welcome count {welcome} after {a} acknowledged (pending: {pending})"
                            ));
                            acked = Some(welcome);
                        }
                        Some(_) => {}
                    }
                    break socket;
                }
                _ => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
            }
        };
        if pending && socket.send(Message::text("tick")).await.is_err() {
            report.reconnects += 1;
            continue 'connection;
        }
        loop {
            if !pending {
                if traffic.stop.load(Ordering::Relaxed) || tokio::time::Instant::now() > deadline {
                    let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(None)).await;
                    report.last = acked.unwrap_or(0);
                    return report;
                }
                tokio::time::sleep(pace).await;
                pending = true;
                if socket.send(Message::text("tick")).await.is_err() {
                    report.reconnects += 1;
                    continue 'connection;
                }
            }
            let frame = match tokio::time::timeout(PATIENCE, socket.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => {
                    serde_json::from_str::<Value>(&text).unwrap_or(Value::Null)
                }
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)))) => continue,
                Ok(Some(Ok(Message::Binary(_)))) => {
                    report.violations.push("binary frame".into());
                    continue;
                }
                Ok(Some(Ok(Message::Close(_))) | Some(Err(_)) | None) => {
                    report.reconnects += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue 'connection;
                }
                Err(_) => {
                    report
                        .violations
                        .push(format!("no frame for {PATIENCE:?} (pending: {pending})"));
                    report.reconnects += 1;
                    continue 'connection;
                }
            };
            if let Some(n) = frame["count"].as_u64() {
                let a = acked.unwrap_or(0);
                if !pending {
                    report
                        .violations
                        .push(format!("count {n} with nothing in flight"));
                } else if n != a + 1 {
                    report
                        .violations
                        .push(format!("count {n} after {a}: a gap or a repeat"));
                }
                acked = Some(n);
                pending = false;
                traffic.acknowledged.fetch_add(1, Ordering::Relaxed);
            } else if frame["bye"] == true {
                report.byes += 1;
                let a = acked.unwrap_or(0);
                if frame["total"].as_u64() != Some(a) {
                    report.violations.push(format!(
                        "bye total {} after {a} acknowledged",
                        frame["total"]
                    ));
                }
                // Wait for the close, then the hinted pause (bounded), then resume.
                let _ = tokio::time::timeout(Duration::from_secs(5), async {
                    while let Some(Ok(m)) = socket.next().await {
                        if m.is_close() {
                            break;
                        }
                    }
                })
                .await;
                let hint = frame["reconnect_after_ms"].as_u64().unwrap_or(0).min(3000);
                tokio::time::sleep(Duration::from_millis(hint)).await;
                report.reconnects += 1;
                continue 'connection;
            } else if frame["error"] == "unavailable" {
                // Not counted: resend after a short pause.
                tokio::time::sleep(Duration::from_millis(100)).await;
                if socket.send(Message::text("tick")).await.is_err() {
                    report.reconnects += 1;
                    continue 'connection;
                }
            } else if frame.get("ts").is_none() {
                report.violations.push(format!("unexpected frame {frame}"));
            }
        }
    }
}

/// Upgrade and welcome; returns the welcome's count.
async fn connect(url: &str) -> Result<(Socket, u64), String> {
    let (mut socket, _) =
        tokio_tungstenite::connect_async_with_config(url, Some(client_config()), true)
            .await
            .map_err(|e| e.to_string())?;
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => {
                let welcome: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
                return welcome["count"]
                    .as_u64()
                    .map(|c| (socket, c))
                    .ok_or_else(|| format!("not a welcome: {text}"));
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => return Err(format!("before the welcome: {other:?}")),
        }
    }
}

/// Waits until the clients together got `more` replies beyond `from` (traffic flows).
async fn expect_progress(traffic: &Traffic, more: u64, after: &str) {
    let from = traffic.acknowledged.load(Ordering::Relaxed);
    let deadline = Instant::now() + PATIENCE;
    while traffic.acknowledged.load(Ordering::Relaxed) < from + more {
        assert!(
            Instant::now() < deadline,
            "traffic stalled after {after}: {} replies in {PATIENCE:?}, wanted {more}",
            traffic.acknowledged.load(Ordering::Relaxed) - from
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A simple client for one-off checks: send one frame, get the count.
async fn send_and_count(socket: &mut Socket) -> u64 {
    socket.send(Message::text("x")).await.unwrap();
    loop {
        let frame = tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("a reply in time")
            .expect("the socket is open")
            .expect("no socket error");
        if let Message::Text(text) = frame {
            let value: Value = serde_json::from_str(&text).unwrap();
            if let Some(n) = value["count"].as_u64() {
                return n;
            }
            assert!(value.get("ts").is_some(), "unexpected frame {value}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_resuming_through_nginx_lose_no_count_across_scale_promote_and_scale_down() {
    let _one = ONE_FLEET_AT_A_TIME.lock().await;
    let began = Instant::now();
    let mut fleet = Fleet::new("lifecycle");
    let limit = Duration::from_secs(90);

    let up = tokio::task::block_in_place(|| fleet.make("up", &[("N", "2")], limit));
    up.assert_ok("make up");
    assert!(up.text.contains("the fleet is up"), "{}", up.text);
    assert!(
        up.text
            .contains(&format!("http://127.0.0.1:{}/test/", fleet.port)),
        "{}",
        up.text
    );
    fleet.expect_instances(2, "blue").await;

    // /broadcast and /metrics are not on the public listener.
    for (method, path) in [("POST", "/broadcast"), ("GET", "/metrics")] {
        let url = format!("http://127.0.0.1:{}{path}", fleet.port);
        let request = reqwest::Client::new().request(method.parse().unwrap(), &url);
        let status = request.send().await.unwrap().status().as_u16();
        assert_eq!(status, 404, "{method} {path} through nginx");
    }

    let clients = 200;
    let traffic = Arc::new(Traffic::default());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(150);
    let tag = std::process::id();
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            tokio::spawn(resuming_client(
                fleet.ws_url(&format!("e2e-{tag}-{i}")),
                format!("e2e-{tag}-{i}"),
                Duration::from_millis(20),
                traffic.clone(),
                deadline,
            ))
        })
        .collect();
    expect_progress(&traffic, 5 * clients, "the clients connected").await;

    let out = tokio::task::block_in_place(|| fleet.make("scale", &[("N", "4")], limit));
    out.assert_ok("make scale N=4");
    fleet.expect_instances(4, "blue").await;
    expect_progress(&traffic, 3 * clients, "make scale N=4").await;

    let out = tokio::task::block_in_place(|| fleet.make("promote", &[], limit));
    out.assert_ok("make promote");
    assert!(
        out.text.contains("promoted   blue -> green"),
        "{}",
        out.text
    );
    fleet.expect_instances(4, "green").await;
    expect_progress(&traffic, 3 * clients, "make promote").await;

    let status = tokio::task::block_in_place(|| fleet.make("status", &[], limit));
    status.assert_ok("make status");
    assert_eq!(
        status.text.matches("green  live").count(),
        4,
        "{}",
        status.text
    );

    let out = tokio::task::block_in_place(|| fleet.make("scale", &[("N", "2")], limit));
    out.assert_ok("make scale N=2");
    fleet.expect_instances(2, "green").await;
    expect_progress(&traffic, 3 * clients, "make scale N=2").await;

    traffic.stop.store(true, Ordering::Relaxed);
    let mut reports = Vec::new();
    for task in tasks {
        reports.push(
            tokio::time::timeout(PATIENCE, task)
                .await
                .expect("a client stops in time")
                .expect("a client task does not panic"),
        );
    }
    let broken: Vec<&ClientReport> = reports
        .iter()
        .filter(|r| !r.violations.is_empty())
        .collect();
    assert!(
        broken.is_empty(),
        "{} of {clients} clients saw a gap, a repeat or an error, e.g. {:?}",
        broken.len(),
        &broken[..broken.len().min(5)]
    );
    // The promotion drained every blue socket: every client resumed at least once, and still
    // ended where its replies said.
    let not_moved: Vec<&str> = reports
        .iter()
        .filter(|r| r.reconnects == 0)
        .map(|r| r.session.as_str())
        .collect();
    assert!(not_moved.is_empty(), "never resumed: {not_moved:?}");
    let total: u64 = reports.iter().map(|r| r.last).sum();
    let byes: u64 = reports.iter().map(|r| r.byes).sum();
    let recovered: u64 = reports.iter().map(|r| r.recovered_from_welcome).sum();
    assert!(total >= 14 * clients, "only {total} messages counted");
    eprintln!(
        "{clients} clients: {total} messages counted, no gap, no repeat; {byes} byes, \
         {} reconnects, {recovered} replies recovered from a welcome; {:.1}s so far",
        reports.iter().map(|r| r.reconnects).sum::<u64>(),
        began.elapsed().as_secs_f64()
    );

    tokio::task::block_in_place(|| fleet.down_and_check_nothing_is_left());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promote_whose_new_colour_fails_rolls_back_and_the_old_colour_keeps_serving() {
    let _one = ONE_FLEET_AT_A_TIME.lock().await;
    let mut fleet = Fleet::new("rollback");
    let limit = Duration::from_secs(90);

    let up = tokio::task::block_in_place(|| fleet.make("up", &[("N", "1")], limit));
    up.assert_ok("make up");
    let again = tokio::task::block_in_place(|| fleet.make("up", &[], limit));
    again.assert_ok("make up, twice");
    assert!(again.text.contains("already up"), "{}", again.text);

    let session = format!("rollback-{}", std::process::id());
    let (mut socket, welcome) = connect(&fleet.ws_url(&session)).await.unwrap();
    assert_eq!(welcome, 0);
    assert_eq!(send_and_count(&mut socket).await, 1);

    // A configuration the new colour refuses at start-up.
    let out = tokio::task::block_in_place(|| {
        fleet.make("promote", &[("PROMOTE_ENV", "MAX_MESSAGE_BYTES=0")], limit)
    });
    assert_ne!(out.code, Some(0), "{}", out.text);
    assert!(out.text.contains("promote FAILED"), "{}", out.text);
    assert!(out.text.contains("traffic stays on blue"), "{}", out.text);
    assert!(
        out.text.contains("MAX_MESSAGE_BYTES"),
        "the cause is shown: {}",
        out.text
    );
    assert_eq!(
        send_and_count(&mut socket).await,
        2,
        "the old socket still counts"
    );
    fleet.expect_instances(1, "blue").await;

    // A new colour that starts and is ready, but fails the smoke test (its broadcast token is
    // not the fleet's, so the smoke test's broadcast is refused).
    let out = tokio::task::block_in_place(|| {
        fleet.make(
            "promote",
            &[("PROMOTE_ENV", "BROADCAST_TOKEN=not-the-fleets")],
            limit,
        )
    });
    assert_ne!(out.code, Some(0), "{}", out.text);
    assert!(out.text.contains("smoke: FAILED"), "{}", out.text);
    assert!(out.text.contains("401"), "{}", out.text);
    assert!(out.text.contains("traffic stays on blue"), "{}", out.text);
    assert_eq!(
        send_and_count(&mut socket).await,
        3,
        "the old socket still counts"
    );
    fleet.expect_instances(1, "blue").await;
    let (mut fresh, _) = connect(&fleet.ws_url(&format!("{session}-new")))
        .await
        .unwrap();
    assert_eq!(
        send_and_count(&mut fresh).await,
        1,
        "a new socket through nginx counts"
    );
    let status = tokio::task::block_in_place(|| fleet.make("status", &[], limit));
    status.assert_ok("make status");
    assert!(status.text.contains("blue   live"), "{}", status.text);
    assert!(
        !status.text.lines().any(|l| l.starts_with("green")),
        "no green instance is left: {}",
        status.text
    );
    drop((socket, fresh));

    tokio::task::block_in_place(|| fleet.down_and_check_nothing_is_left());
}
