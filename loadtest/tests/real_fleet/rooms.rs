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
