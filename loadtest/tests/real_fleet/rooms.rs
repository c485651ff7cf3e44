//! The rooms scenario against two real instances sharing one real Redis: every member gets
//! every publication of its room once and in order, in one process and over workers, and
//! `--redis-info` measures what it cost Redis.

use serde_json::Value;

use crate::harness::{self, loadtest, Redis, Server};

/// 3 rooms × 5 members over both instances, 5 publications/s per room for 1 s.
fn rooms_run(servers: &[&Server], redis: &Redis, extra: &[&str]) -> harness::Run {
    let urls: Vec<String> = servers.iter().map(|s| s.ws_url()).collect();
    let redis_addr = format!("127.0.0.1:{}", redis.port);
    let mut args = vec![
        "rooms",
        "--rooms",
        "3",
        "--members",
        "5",
        "--rate",
        "5",
        "--duration",
        "1s",
        "--redis-info",
        &redis_addr,
        "--timeout",
        "60s",
    ];
    for url in &urls {
        args.extend(["--url", url]);
    }
    args.extend_from_slice(extra);
    loadtest(&args)
}

fn assert_every_delivery_verified(r: &Value) {
    let rooms = &r["rooms"];
    assert_eq!(r["scenario"], "rooms", "{r}");
    assert_eq!(r["connections"]["ok"], 15, "{r}");
    assert_eq!(rooms["publications_per_room"], 5, "{r}");
    assert_eq!(rooms["published"], 15, "{r}");
    assert_eq!(rooms["expected_deliveries"], 75, "{r}");
    assert_eq!(rooms["deliveries"], 75, "{r}");
    assert_eq!(
        (&rooms["lost"], &rooms["duplicated"], &rooms["out_of_order"]),
        (&Value::from(0), &Value::from(0), &Value::from(0)),
        "{r}"
    );
    assert_eq!(r["latency_ms"]["samples"], 75, "{r}");
    assert_eq!(r["count_violations"], 0, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
}

#[test]
fn rooms_deliver_every_publication_to_every_member_once_in_order() {
    let redis = Redis::start();
    let first = Server::start(&redis, harness::free_port());
    let second = Server::start(&redis, harness::free_port());

    let run = rooms_run(&[&first, &second], &redis, &["--workers", "1"]);
    assert_eq!(run.code, Some(0), "{}", run.describe());
    let r = &run.report;
    assert_every_delivery_verified(r);
    let cost = &r["redis"];
    assert!(
        cost["memory_per_socket_bytes"].as_f64().unwrap() > 0.0,
        "{r}"
    );
    // Each publication is one script call at least (the script's own commands come on top).
    let scripts = cost["commands"]["evalsha"].as_u64().unwrap_or(0)
        + cost["commands"]["eval"].as_u64().unwrap_or(0);
    assert!(scripts >= 15, "{r}");
    assert!(
        cost["commands_per_publication"].as_f64().unwrap() >= 1.0,
        "{r}"
    );

    // The same over two worker processes: each publishes through its own members.
    let run = rooms_run(&[&first, &second], &redis, &["--workers", "2"]);
    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert_eq!(run.report["workers"], 2, "{}", run.report);
    assert_every_delivery_verified(&run.report);
}

/// A rooms run with `--resume` while one of the two instances is stopped by `signal`: its
/// members resume on a replacement at the same port, rejoin with `since`, and the report
/// must still show every offset once and in order at every member.
fn rooms_resume_across(signal: &str) -> Value {
    let redis = Redis::start();
    let first = Server::start(&redis, harness::free_port());
    let port = harness::free_port();
    let mut second = Server::start(&redis, port);
    let command = format!("kill -{signal} {}", second.pid());
    let (a, b) = (first.ws_url(), second.ws_url());
    let json = harness::json_path();
    let child = harness::spawn_loadtest(
        &[
            "rooms",
            "--rooms",
            "3",
            "--members",
            "4",
            "--publishers",
            "2",
            "--rate",
            "10",
            "--duration",
            "4s",
            "--resume",
            "--url",
            &a,
            "--url",
            &b,
            "--workers",
            "1",
            "--timeout",
            "80s",
            "--during",
            &command,
            "--during-after",
            "1s",
        ],
        &json,
    );
    // The stopped instance exits; a replacement takes its port, as a restart would.
    let stopped = second.wait_exit();
    assert_eq!(
        stopped.success(),
        signal == "TERM",
        "a drain exits 0, a kill does not: {stopped:?}"
    );
    let replacement = Server::start(&redis, port);
    let run = harness::finish_loadtest(child, &json, std::time::Duration::from_secs(90));
    drop(replacement);

    assert_eq!(run.code, Some(0), "{}", run.describe());
    let r = run.report;
    let rooms = &r["rooms"];
    assert_eq!(rooms["publications_per_room"], 40, "{r}");
    assert_eq!(rooms["published"], 120, "every publication sent once: {r}");
    assert_eq!(rooms["expected_deliveries"], 480, "{r}");
    assert_eq!(rooms["deliveries"], 480, "{r}");
    let recovery = &r["recovery"];
    assert!(recovery["reconnects"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(
        (
            &recovery["lost"],
            &recovery["duplicated"],
            &recovery["out_of_order"],
            &recovery["not_recovered"]
        ),
        (
            &Value::from(0),
            &Value::from(0),
            &Value::from(0),
            &Value::from(0)
        ),
        "{r}"
    );
    assert_eq!(r["count_violations"], 0, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    r
}

#[test]
fn rooms_resume_recovers_every_publication_across_a_drain_of_one_instance() {
    let r = rooms_resume_across("TERM");
    assert_eq!(r["disruption"]["exit_code"], 0, "{r}");
}

#[test]
fn rooms_resume_recovers_every_publication_across_a_sigkill_of_one_instance() {
    rooms_resume_across("KILL");
}
