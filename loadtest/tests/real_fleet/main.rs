//! The load tester end to end: the real `wsfleet-loadtest` binary against a real
//! `redis-server` and real `wsfleet` server processes on loopback ports, in one process
//! here and over worker processes in [`workers`].
//!
//! Needs the server binary of the same build (`cargo build -p wsfleet`; the test says so in
//! one line when it is missing) and `redis-server`/`redis-cli`. Socket counts are small and
//! every wait is bounded; everything started is stopped by pid when the test ends.

mod harness;
mod rooms;
mod smoke;
mod workers;

use std::time::Duration;

use harness::{finish_loadtest, json_path, loadtest, spawn_loadtest, Redis, Server, TOKEN};

#[test]
fn fan_out_delivers_every_broadcast_to_every_socket_and_a_wrong_token_fails_the_run() {
    let redis = Redis::start();
    let server = Server::start(&redis, harness::free_port());
    let (ws, broadcast) = (server.ws_url(), server.broadcast_url());
    let common = [
        "fan-out",
        "-n",
        "20",
        "--url",
        &ws,
        "--broadcast-url",
        &broadcast,
        "--broadcasts",
        "3",
        "--broadcast-interval",
        "200ms",
        "--timeout",
        "60s",
    ];

    let run = loadtest(&[&common[..], &["--token", TOKEN]].concat());
    assert_eq!(run.code, Some(0), "{}", run.describe());
    let r = &run.report;
    assert_eq!(r["scenario"], "fan-out");
    assert_eq!(r["fan_out"]["broadcasts"], 3, "{r}");
    assert_eq!(r["fan_out"]["expected_deliveries"], 60, "{r}");
    assert_eq!(r["fan_out"]["deliveries"], 60, "{r}");
    assert_eq!(r["messages"]["received"], 60, "{r}");
    assert_eq!(r["latency_ms"]["samples"], 60, "{r}");
    assert_eq!(r["errors"], 0, "{r}");

    let run = loadtest(&[&common[..], &["--token", "not-the-token"]].concat());
    assert_eq!(run.code, Some(2), "{}", run.describe());
    let r = &run.report;
    assert_eq!(r["fan_out"]["deliveries"], 0, "{r}");
    assert_eq!(r["error_kinds"]["publish: http 401"], 3, "{r}");
    assert_eq!(r["error_kinds"]["broadcast missed"], 60, "{r}");
}

#[test]
fn resume_continues_every_sessions_count_across_resumes_and_runs() {
    let redis = Redis::start();
    let server = Server::start(&redis, harness::free_port());
    let ws = server.ws_url();
    let args = [
        "resume",
        "-n",
        "10",
        "-m",
        "12",
        "--resumes",
        "3",
        "--session-prefix",
        "lt-resume",
        "--url",
        &ws,
        "--timeout",
        "60s",
    ];

    let first = loadtest(&args);
    assert_eq!(first.code, Some(0), "{}", first.describe());
    let r = &first.report;
    assert_eq!(r["resume"]["resumes_ok"], 30, "{r}");
    assert_eq!(r["resume"]["resumes_failed"], 0, "{r}");
    assert_eq!(r["messages"]["received"], 120, "{r}");
    assert_eq!(r["count_violations"], 0, "{r}");
    assert_eq!(redis.session_count("lt-resume-0"), Some(12));

    // The same sessions again: the first welcome of each must say 12, and counting goes on.
    let second = loadtest(&args);
    assert_eq!(second.code, Some(0), "{}", second.describe());
    assert_eq!(second.report["resume"]["resumes_ok"], 30);
    assert_eq!(second.report["count_violations"], 0);
    for i in 0..10 {
        assert_eq!(
            redis.session_count(&format!("lt-resume-{i}")),
            Some(24),
            "session {i}"
        );
    }
}

#[test]
fn during_a_sigterm_of_the_instance_sockets_resume_and_no_count_is_lost_or_repeated() {
    let redis = Redis::start();
    let port = harness::free_port();
    let mut server = Server::start(&redis, port);
    let ws = server.ws_url();
    let command = format!("kill -TERM {}", server.pid());
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
            "--session-prefix",
            "lt-during",
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
    // The drained instance exits; a replacement takes its port, as a restart would, and the
    // sockets find their sessions there.
    let drained = server.wait_exit();
    assert!(drained.success(), "the drain exits 0, not {drained:?}");
    let replacement = Server::start(&redis, port);
    let run = finish_loadtest(child, &json, Duration::from_secs(90));
    drop(replacement);

    assert_eq!(run.code, Some(0), "{}", run.describe());
    let r = &run.report;
    let d = &r["disruption"];
    assert_eq!(d["command"], command.as_str(), "{r}");
    assert_eq!(d["exit_code"], 0, "{r}");
    assert!(d["reconnects"].as_u64().unwrap() > 0, "{r}");
    assert!(d["longest_gap_ms"].as_f64().unwrap() > 0.0, "{r}");
    assert_eq!(
        (d["counts_lost"].as_u64(), d["counts_repeated"].as_u64()),
        (Some(0), Some(0)),
        "{r}"
    );
    assert_eq!(r["count_violations"], 0, "{r}");
    assert_eq!(r["messages"]["received"], 20 * 5000, "{r}");
    for i in 0..20 {
        assert_eq!(
            redis.session_count(&format!("lt-during-{i}")),
            Some(5000),
            "session {i}"
        );
    }
}

#[test]
fn fan_out_resume_recovers_the_broadcasts_a_drained_instances_sockets_missed() {
    let redis = Redis::start();
    let publisher = Server::start(&redis, harness::free_port());
    let port = harness::free_port();
    let mut drained = Server::start(&redis, port);
    let command = format!("kill -TERM {}", drained.pid());
    let (a, b, broadcast) = (
        publisher.ws_url(),
        drained.ws_url(),
        publisher.broadcast_url(),
    );
    let json = json_path();
    let child = spawn_loadtest(
        &[
            "fan-out",
            "-n",
            "10",
            "--url",
            &a,
            "--url",
            &b,
            "--broadcast-url",
            &broadcast,
            "--token",
            TOKEN,
            "--broadcasts",
            "20",
            "--broadcast-interval",
            "150ms",
            "--resume",
            "--workers",
            "1",
            "--timeout",
            "80s",
            "--during",
            &command,
            "--during-after",
            "500ms",
        ],
        &json,
    );
    assert!(drained.wait_exit().success(), "the drain exits 0");
    let replacement = Server::start(&redis, port);
    let run = finish_loadtest(child, &json, Duration::from_secs(90));
    drop(replacement);

    assert_eq!(run.code, Some(0), "{}", run.describe());
    let r = &run.report;
    assert_eq!(r["fan_out"]["deliveries"], 200, "{r}");
    let recovery = &r["recovery"];
    assert!(recovery["reconnects"].as_u64().unwrap() > 0, "{r}");
    for field in ["lost", "duplicated", "out_of_order", "not_recovered"] {
        assert_eq!(recovery[field], 0, "{field}: {r}");
    }
    assert_eq!(r["errors"], 0, "{r}");
}

#[test]
fn a_failing_during_command_fails_the_run_and_is_reported() {
    let redis = Redis::start();
    let server = Server::start(&redis, harness::free_port());
    let ws = server.ws_url();
    let run = loadtest(&[
        "hold",
        "-n",
        "5",
        "--duration",
        "1s",
        "--url",
        &ws,
        "--timeout",
        "30s",
        "--during",
        "echo disrupting >&2; exit 3",
        "--during-after",
        "100ms",
    ]);
    assert_eq!(run.code, Some(2), "{}", run.describe());
    let d = &run.report["disruption"];
    assert_eq!(d["exit_code"], 3, "{}", run.report);
    assert_eq!(d["reconnects"], 0);
    assert_eq!(run.report["error_kinds"]["during: command exited 3"], 1);
    assert!(
        run.output.contains("disrupting"),
        "the command's output is shown"
    );
}
