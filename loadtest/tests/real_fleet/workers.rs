//! The load tester spread over worker processes (`--workers`), source addresses and URLs:
//! one run, one report, and what concerns the whole run (fan-out's broadcasts, the
//! `--during` command) done once, by the parent.

use std::{process::Command, time::Duration};

use crate::harness::{
    self, finish_loadtest, finish_loadtest_watching, http_get, json_path, loadtest, spawn_loadtest,
    Redis, Server, TOKEN,
};

#[test]
fn workers_source_addresses_and_urls_share_one_run_and_one_report() {
    let redis = Redis::start();
    let a = Server::start(&redis, harness::free_port());
    let b = Server::start(&redis, harness::free_port());
    let (url_a, url_b) = (a.ws_url(), b.ws_url());
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
    let run = loadtest(&[&["closed-loop", "-m", "10"][..], &spread].concat());
    let r = &run.report;
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
    assert_eq!(run.code, Some(0), "{}", run.describe());

    // Hold with the same sessions: the welcome counts continue from 10 on every socket
    // (so the 24 sessions were distinct across workers), and while all are open each
    // instance holds exactly its half of them.
    let hold = [
        &["hold", "--duration", "3s", "--warmup-messages", "2"][..],
        &spread,
    ]
    .concat();
    let json = json_path();
    let child = spawn_loadtest(&hold, &json);
    let mut seen = (0, 0);
    let local = |server: &Server| {
        http_get(server.port, "/status")
            .map_or(0, |(_, s)| s["connections"]["local"].as_u64().unwrap_or(0))
    };
    let run = finish_loadtest_watching(child, &json, Duration::from_secs(90), || {
        seen = (seen.0.max(local(&a)), seen.1.max(local(&b)));
    });
    assert_eq!(seen, (12, 12), "sockets each instance held at most");
    let r = &run.report;
    assert_eq!(r["workers"], 3, "{r:#}");
    assert_eq!(r["connections"]["open_at_end"], 24, "{r:#}");
    assert_eq!(r["messages"]["received"], 48, "{r:#}");
    assert_eq!(r["count_violations"], 0, "{r:#}");
    assert_eq!(run.code, Some(0), "{}", run.describe());
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

#[test]
fn fan_out_over_two_workers_publishes_once_and_every_socket_gets_every_broadcast_once() {
    let redis = Redis::start();
    let server = Server::start(&redis, harness::free_port());
    let (ws, broadcast) = (server.ws_url(), server.broadcast_url());
    let run = loadtest(&[
        "fan-out",
        "-n",
        "20",
        "--workers",
        "2",
        "--url",
        &ws,
        "--broadcast-url",
        &broadcast,
        "--token",
        TOKEN,
        "--broadcasts",
        "3",
        "--broadcast-interval",
        "200ms",
        "--timeout",
        "60s",
    ]);
    let r = &run.report;
    assert_eq!(r["workers"], 2, "{r:#}");
    assert_eq!(r["fan_out"]["broadcasts"], 3, "{r:#}");
    assert_eq!(r["fan_out"]["expected_deliveries"], 60, "{r:#}");
    assert_eq!(r["fan_out"]["deliveries"], 60, "{r:#}");
    assert_eq!(r["messages"]["received"], 60, "{r:#}");
    assert_eq!(r["latency_ms"]["samples"], 60, "{r:#}");
    // Published once per run: had each worker published too, every socket would have had
    // each broadcast twice ("broadcast delivered twice"), or 4 broadcasts from one of them.
    assert_eq!(r["errors"], 0, "{r:#}");
    assert_eq!(run.code, Some(0), "{}", run.describe());
    // Receivers in other processes than the publisher: latency from the shared wall clock
    // is positive and less than the run took (a clock mix-up is off by far more).
    let max_ms = r["latency_ms"]["max"].as_f64().unwrap();
    let run_ms = r["messages"]["run_seconds"].as_f64().unwrap() * 1000.0;
    assert!(max_ms > 0.0 && max_ms < run_ms, "{r:#}");
}

#[test]
fn during_over_two_workers_runs_the_command_once_and_every_worker_resumes() {
    let redis = Redis::start();
    let port = harness::free_port();
    let mut server = Server::start(&redis, port);
    let ws = server.ws_url();
    let ran = std::env::temp_dir().join(format!("lt-during-ran-{}", std::process::id()));
    let _ = std::fs::remove_file(&ran);
    let command = format!("echo ran >> {}; kill -TERM {}", ran.display(), server.pid());
    let json = json_path();
    let child = spawn_loadtest(
        &[
            "closed-loop",
            "-n",
            "20",
            // Enough that the run outlasts --during-after in a release build too (1500
            // were all answered within 500 ms there, before the SIGTERM).
            "-m",
            "5000",
            "--workers",
            "2",
            "--session-prefix",
            "lt-during-workers",
            "--url",
            &ws,
            "--timeout",
            "80s",
            "--during",
            &command,
            "--during-after",
            "500ms",
        ],
        &json,
    );
    // The drained instance exits; a replacement takes its port, as a restart would.
    let drained = server.wait_exit();
    assert!(drained.success(), "the drain exits 0, not {drained:?}");
    let replacement = Server::start(&redis, port);
    let run = finish_loadtest(child, &json, Duration::from_secs(90));
    drop(replacement);

    let lines = std::fs::read_to_string(&ran).unwrap_or_default();
    let _ = std::fs::remove_file(&ran);
    assert_eq!(lines, "ran\n", "the command ran once, by the parent");
    let r = &run.report;
    assert_eq!(r["workers"], 2, "{r:#}");
    let d = &r["disruption"];
    assert_eq!(d["command"], command.as_str(), "{r:#}");
    assert_eq!(d["exit_code"], 0, "{r:#}");
    assert!(d["command_seconds"].as_f64().unwrap() >= 0.0, "{r:#}");
    // Sockets of both workers were on the killed instance, and all of them came back.
    assert!(d["reconnects"].as_u64().unwrap() >= 20, "{r:#}");
    assert!(d["longest_gap_ms"].as_f64().unwrap() > 0.0, "{r:#}");
    assert_eq!(d["counts_lost"], 0, "{r:#}");
    assert_eq!(d["counts_repeated"], 0, "{r:#}");
    assert_eq!(r["count_violations"], 0, "{r:#}");
    assert_eq!(r["messages"]["received"], 20 * 5000, "{r:#}");
    assert_eq!(run.code, Some(0), "{}", run.describe());
    for i in 0..20 {
        assert_eq!(
            redis.session_count(&format!("lt-during-workers-{i}")),
            Some(5000),
            "session {i}"
        );
    }
}

#[test]
fn plot_over_two_workers_has_every_second_of_the_run() {
    let redis = Redis::start();
    let server = Server::start(&redis, harness::free_port());
    let ws = server.ws_url();
    let svg_path = std::env::temp_dir().join(format!("lt-workers-{}.svg", std::process::id()));
    let svg_arg = svg_path.display().to_string();
    let run = loadtest(&[
        "open-loop",
        "-n",
        "4",
        "--workers",
        "2",
        "--rate",
        "20",
        "--duration",
        "2200ms",
        "--url",
        &ws,
        "--timeout",
        "60s",
        "--plot",
        &svg_arg,
    ]);
    let svg = std::fs::read_to_string(&svg_path).unwrap_or_default();
    let _ = std::fs::remove_file(&svg_path);
    let r = &run.report;
    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert_eq!(r["workers"], 2, "{r:#}");
    assert_eq!(r["messages"]["received"], 4 * 44, "{r:#}");

    // Seconds 0, 1 and 2 of the run: p50, p99 and max are each one line of three points when
    // both workers' series share the parent's clock and were merged (a worker counting from
    // its own start, or a series lost on the way, changes the count).
    let doc = roxmltree::Document::parse(&svg).expect("the plot is well-formed SVG");
    let points_per_line: Vec<usize> = doc
        .descendants()
        .filter(|n| n.has_tag_name("polyline"))
        .map(|n| {
            n.attribute("points")
                .unwrap_or("")
                .split_whitespace()
                .count()
        })
        .collect();
    let three = points_per_line.iter().filter(|&&n| n == 3).count();
    assert!(three >= 3, "lines of 3 points: {points_per_line:?}");
    assert!(
        points_per_line.iter().all(|&n| n <= 3),
        "no line past second 2: {points_per_line:?}"
    );
}

#[test]
fn resume_over_two_workers_adds_up_every_workers_resumes_on_one_set_of_sessions() {
    let redis = Redis::start();
    let server = Server::start(&redis, harness::free_port());
    let ws = server.ws_url();
    // No --session-prefix: the parent's random one must reach both workers.
    let run = loadtest(&[
        "resume",
        "-n",
        "10",
        "--workers",
        "2",
        "-m",
        "6",
        "--resumes",
        "2",
        "--url",
        &ws,
        "--timeout",
        "60s",
    ]);
    let r = &run.report;
    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert_eq!(r["workers"], 2, "{r:#}");
    assert_eq!(r["resume"]["resumes_ok"], 20, "{r:#}");
    assert_eq!(r["resume"]["resumes_failed"], 0, "{r:#}");
    assert_eq!(r["messages"]["received"], 60, "{r:#}");
    // One prefix, global indices 0..10: ten sessions named alike, six counted each.
    let keys = redis
        .cli(&["KEYS", "wsfleet:session:*"])
        .unwrap_or_default();
    let sessions: Vec<&str> = keys.lines().collect();
    assert_eq!(sessions.len(), 10, "{sessions:?}");
    let prefix = sessions[0]
        .trim_start_matches("wsfleet:session:")
        .rsplit_once('-')
        .map(|(prefix, _)| prefix.to_string())
        .unwrap();
    for i in 0..10 {
        let session = format!("{prefix}-{i}");
        assert_eq!(redis.session_count(&session), Some(6), "{session}");
    }
}
