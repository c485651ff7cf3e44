//! The bench ceiling (`wsfleet-ceiling`) speaks the protocol well enough that the real load
//! tester, unchanged, runs against it and verifies every count: both binaries as built, on a
//! loopback port the ceiling picks itself, stopped by pid when the test ends.
//!
//! The load tester is another package of the workspace: its binary is taken from the same
//! target directory, so build it first (`make test` does: scripts/test.sh).

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The ceiling process; killed (by its own pid) when dropped.
struct Ceiling {
    child: Child,
    url: String,
}

impl Drop for Ceiling {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the ceiling on 127.0.0.1:0 and reads the URL it really bound from its first line.
fn start_ceiling() -> Ceiling {
    start_ceiling_with(&[])
}

fn start_ceiling_with(args: &[&str]) -> Ceiling {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wsfleet-ceiling"))
        .args(["--bind", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wsfleet-ceiling starts");
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .expect("wsfleet-ceiling writes its address");
    let url = line
        .trim()
        .strip_prefix("wsfleet-ceiling: listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_string();
    Ceiling { child, url }
}

impl Ceiling {
    /// Its `POST /broadcast` (with `--fan-out`).
    fn broadcast_url(&self) -> String {
        self.url
            .replace("ws://", "http://")
            .replace("/ws/chat/", "/broadcast")
    }
}

/// The load tester beside this test's own binary (target/<profile>/deps/ceiling-…).
fn loadtest_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let path = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps")
        .join("wsfleet-loadtest");
    assert!(
        path.exists(),
        "{} is missing: build it first (cargo build -p wsfleet-loadtest)",
        path.display()
    );
    path
}

/// Runs wsfleet-loadtest with `args` against `url`; returns its exit code and JSON report.
fn loadtest(url: &str, args: &[&str], json: &Path) -> (i32, serde_json::Value) {
    let started = Instant::now();
    let status = Command::new(loadtest_binary())
        .args(args)
        .args(["--url", url, "--timeout", "30s", "--json"])
        .arg(json)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("wsfleet-loadtest runs");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "bounded by --timeout"
    );
    let report = std::fs::read_to_string(json).expect("wsfleet-loadtest writes its report");
    (
        status.code().unwrap_or(-1),
        serde_json::from_str(&report).unwrap(),
    )
}

fn temp_json(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "wsfleet-ceiling-{}-{name}.json",
        std::process::id()
    ))
}

#[test]
fn the_load_testers_closed_loop_verifies_every_count_against_the_ceiling() {
    let ceiling = start_ceiling();
    let json = temp_json("closed-loop");
    let (code, r) = loadtest(
        &ceiling.url,
        &["closed-loop", "--connections", "20", "--messages", "50"],
        &json,
    );
    let _ = std::fs::remove_file(&json);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["connections"]["ok"], 20, "{r:#}");
    assert_eq!(r["messages"]["sent"], 1000, "{r:#}");
    assert_eq!(r["messages"]["received"], 1000, "{r:#}");
    assert_eq!(r["count_violations"], 0, "{r:#}");
    assert_eq!(r["errors"], 0, "{r:#}");
}

/// Opens a socket on `session`, sends `messages` text frames and returns the welcome and the
/// replies as JSON values.
fn talk(url: &str, session: &str, messages: usize) -> (serde_json::Value, Vec<serde_json::Value>) {
    use tokio_tungstenite::tungstenite::{connect, Message};
    let (mut ws, _) = connect(format!("{url}?session_uuid={session}")).expect("connects");
    let read_json = |ws: &mut tokio_tungstenite::tungstenite::WebSocket<_>| loop {
        match ws.read().expect("reads a frame") {
            Message::Text(text) => {
                return serde_json::from_str::<serde_json::Value>(&text).unwrap()
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    };
    let welcome = read_json(&mut ws);
    let mut replies = Vec::new();
    for _ in 0..messages {
        ws.send(Message::text("hello")).unwrap();
        replies.push(read_json(&mut ws));
    }
    let _ = ws.close(None);
    (welcome, replies)
}

#[test]
fn a_resumed_session_continues_its_count_with_the_documented_frames() {
    let ceiling = start_ceiling();
    let (welcome, replies) = talk(&ceiling.url, "ceiling-test", 3);
    assert_eq!(
        welcome,
        serde_json::json!({"session_uuid": "ceiling-test", "count": 0, "resumed": false, "instance": "ceiling"})
    );
    assert_eq!(
        replies,
        [1, 2, 3].map(|n| serde_json::json!({ "count": n }))
    );
    let (welcome, replies) = talk(&ceiling.url, "ceiling-test", 1);
    assert_eq!(
        (&welcome["count"], &welcome["resumed"]),
        (&serde_json::json!(3), &serde_json::json!(true))
    );
    assert_eq!(replies, [serde_json::json!({ "count": 4 })]);
}

#[test]
fn two_fan_out_ceilings_deliver_each_broadcast_posted_to_both_to_every_socket() {
    let (a, b) = (
        start_ceiling_with(&["--fan-out"]),
        start_ceiling_with(&["--fan-out"]),
    );
    let json = temp_json("fan-out");
    let (ba, bb) = (a.broadcast_url(), b.broadcast_url());
    let (code, r) = loadtest(
        &a.url,
        &[
            "fan-out",
            "--connections",
            "40",
            "--url",
            &b.url,
            "--broadcast-url",
            &ba,
            "--broadcast-url",
            &bb,
            "--token",
            "unused",
            "--broadcasts",
            "3",
            "--broadcast-interval",
            "100ms",
        ],
        &json,
    );
    let _ = std::fs::remove_file(&json);
    assert_eq!(code, 0, "{r:#}");
    // 20 sockets on each ceiling; each broadcast went to both, so every socket got all 3.
    assert_eq!(r["fan_out"]["deliveries"], 120, "{r:#}");
    assert_eq!(r["errors"], 0, "{r:#}");
    // The run phase ends when the last socket has every broadcast (~0.2 s here), not after
    // the 5 s grace the sockets then stay open for.
    let run = r["messages"]["run_seconds"].as_f64().unwrap();
    assert!(run < 3.0, "run phase {run} s");
    // CPU is reported in seconds too, for costs per delivery.
    assert!(r["cpu"][0]["cpu_seconds"].is_number(), "{r:#}");
}

#[test]
fn without_fan_out_the_ceiling_refuses_broadcasts_and_the_load_tester_says_so() {
    let ceiling = start_ceiling();
    let json = temp_json("no-fan-out");
    let url = ceiling.broadcast_url();
    let (code, r) = loadtest(
        &ceiling.url,
        &[
            "fan-out",
            "--connections",
            "5",
            "--broadcast-url",
            &url,
            "--token",
            "unused",
            "--broadcasts",
            "1",
        ],
        &json,
    );
    let _ = std::fs::remove_file(&json);
    assert_ne!(code, 0, "{r:#}");
    assert_eq!(r["error_kinds"]["publish: http 404"], 1, "{r:#}");
    assert_eq!(r["fan_out"]["deliveries"], 0, "{r:#}");
}
