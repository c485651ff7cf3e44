//! The fleet heartbeat: once per interval for the whole fleet, and failover.

use std::time::{Duration, Instant};

use fred::interfaces::KeysInterface;

use crate::helpers::{spawn_app, ChildNode, Client, RedisServer, SIGKILL};

/// Collects the heartbeat timestamps a client sees during `window`.
async fn heartbeats(
    client: &mut Client,
    window: Duration,
) -> Vec<chrono::DateTime<chrono::FixedOffset>> {
    let deadline = Instant::now() + window;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(frame) = tokio::time::timeout(left, client.next_json()).await else {
            break;
        };
        if let (Some(ts), 1) = (
            frame.get("ts").and_then(|t| t.as_str()),
            frame.as_object().unwrap().len(),
        ) {
            seen.push(chrono::DateTime::parse_from_rfc3339(ts).expect("heartbeat ts is RFC 3339"));
        }
    }
    seen
}

#[tokio::test]
async fn two_instances_deliver_one_fleet_heartbeat_per_interval_to_every_socket() {
    let redis = RedisServer::start().await;
    let interval = ["--heartbeat-interval", "300ms"];
    let first = spawn_app(&redis, &interval).await;
    let second = spawn_app(&redis, &interval).await;
    let mut on_first = Client::connect(&first.ws_url(None)).await;
    let mut on_second = Client::connect(&second.ws_url(None)).await;

    let window = Duration::from_millis(3000);
    let (a, b) = tokio::join!(
        heartbeats(&mut on_first, window),
        heartbeats(&mut on_second, window)
    );
    // 3 s / 300 ms = 10 beats; a little slack for start-up phase and a busy machine, but two
    // publishers would give ~20.
    for (name, beats) in [("first", &a), ("second", &b)] {
        assert!(
            (7..=11).contains(&beats.len()),
            "{name} saw {} heartbeats: {beats:?}",
            beats.len()
        );
        for pair in beats.windows(2) {
            let gap = (pair[1] - pair[0]).num_milliseconds();
            assert!(
                gap >= 250,
                "{name}: two heartbeats {gap} ms apart: {beats:?}"
            );
        }
    }
    // The same beats reach both instances' sockets: they come from one publisher.
    let common = a.iter().filter(|t| b.contains(t)).count();
    assert!(
        common + 2 >= a.len().min(b.len()),
        "first {a:?} second {b:?}"
    );
}

#[tokio::test]
async fn when_the_heartbeat_publisher_dies_another_takes_over_within_three_intervals() {
    let redis = RedisServer::start().await;
    let flags = ["--heartbeat-interval", "300ms"];
    let alpha = ChildNode::start(&redis, "alpha", &flags).await;
    let beta = ChildNode::start(&redis, "beta", &flags).await;

    let inspect = redis.client().await;
    let leader: String = crate::helpers::eventually("a heartbeat leader", || async {
        inspect
            .get::<Option<String>, _>("wsfleet:heartbeat:leader")
            .await
            .ok()
            .flatten()
    })
    .await;
    let (leader_node, survivor) = if leader == "alpha" {
        (alpha, beta)
    } else {
        (beta, alpha)
    };
    assert_eq!(leader, leader_node.instance);

    let mut client = Client::connect(&crate::helpers::ws_url(survivor.addr, None)).await;
    let before = heartbeats(&mut client, Duration::from_millis(700)).await;
    assert!(!before.is_empty(), "heartbeats flow before the kill");
    leader_node.signal(SIGKILL);
    let after = heartbeats(&mut client, Duration::from_millis(2500)).await;
    assert!(after.len() >= 3, "heartbeats resumed: {after:?}");

    let mut all = before.clone();
    all.extend(after.iter().copied());
    let longest = all
        .windows(2)
        .map(|p| (p[1] - p[0]).num_milliseconds())
        .max()
        .unwrap();
    assert!(
        longest <= 3 * 300 + 150,
        "longest gap {longest} ms: {all:?}"
    );
    let new_leader: Option<String> = inspect.get("wsfleet:heartbeat:leader").await.unwrap();
    assert_eq!(new_leader.as_deref(), Some(survivor.instance.as_str()));
}

#[tokio::test]
async fn a_heartbeat_reaches_the_sockets_spread_over_a_quarter_interval_each_once() {
    let redis = RedisServer::start().await;
    // 1 s interval: spread over 250 ms (a quarter), shard by shard.
    let app = spawn_app(&redis, &["--heartbeat-interval", "1s"]).await;
    // Twice the shard count, so that every shard has sockets.
    let mut clients = Vec::new();
    for _ in 0..2 * wsfleet::fanout::FANOUT_SHARDS {
        clients.push(Client::connect(&app.ws_url(None)).await);
    }
    let window = Duration::from_millis(3500);
    let seen: Vec<Vec<(String, Instant)>> =
        futures_util::future::join_all(clients.iter_mut().map(|client| async move {
            let deadline = Instant::now() + window;
            let mut beats = Vec::new();
            while let Ok(frame) = tokio::time::timeout(
                deadline.saturating_duration_since(Instant::now()),
                client.next_json(),
            )
            .await
            {
                if let (Some(ts), 1) = (frame["ts"].as_str(), frame.as_object().unwrap().len()) {
                    beats.push((ts.to_string(), Instant::now()));
                }
            }
            beats
        }))
        .await;
    for beats in &seen {
        let mut stamps: Vec<&str> = beats.iter().map(|(ts, _)| ts.as_str()).collect();
        stamps.dedup();
        assert_eq!(
            stamps.len(),
            beats.len(),
            "a heartbeat came twice: {beats:?}"
        );
    }
    // A beat every socket saw: its arrivals, from the first socket to the last.
    let common = seen[0]
        .iter()
        .map(|(ts, _)| ts)
        .find(|ts| seen.iter().all(|beats| beats.iter().any(|(t, _)| &t == ts)))
        .expect("one heartbeat reached every socket within the window");
    let arrivals: Vec<Instant> = seen
        .iter()
        .map(|beats| beats.iter().find(|(t, _)| t == common).unwrap().1)
        .collect();
    let spread = *arrivals.iter().max().unwrap() - *arrivals.iter().min().unwrap();
    // ~242 ms when paced (31 steps of 250/32 ms); a few ms when all sockets get it at once.
    assert!(
        spread >= Duration::from_millis(120),
        "heartbeat {common} reached all sockets within {spread:?}: not spread"
    );
    assert!(
        spread < Duration::from_secs(1),
        "heartbeat {common} took {spread:?} to reach every socket: longer than the interval"
    );
}

/// Milliseconds since the Unix epoch an hour from now: the last-beat time Redis's clock would
/// have left behind had it been stepped back by an hour since (test and Redis share a clock).
fn an_hour_ahead_ms() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    now.as_millis() as u64 + 3_600_000
}

/// The longest gap between consecutive beats, in ms.
fn longest_gap(beats: &[chrono::DateTime<chrono::FixedOffset>]) -> i64 {
    beats
        .windows(2)
        .map(|p| (p[1] - p[0]).num_milliseconds())
        .max()
        .unwrap_or(i64::MAX)
}

#[tokio::test]
async fn a_backward_step_of_redis_clock_does_not_stop_the_heartbeats() {
    let redis = RedisServer::start().await;
    let interval = ["--heartbeat-interval", "300ms"];
    let first = spawn_app(&redis, &interval).await;
    let _second = spawn_app(&redis, &interval).await;
    let mut client = Client::connect(&first.ws_url(None)).await;
    let before = heartbeats(&mut client, Duration::from_millis(700)).await;
    assert!(!before.is_empty(), "heartbeats flow before the step");

    // Redis's clock stepped back by an hour: the last beat it recorded is an hour ahead.
    let inspect = redis.client().await;
    let _: () = inspect
        .set(
            "wsfleet:heartbeat:last",
            an_hour_ahead_ms(),
            Some(fred::types::Expiration::PX(3_600_000)),
            None,
            false,
        )
        .await
        .unwrap();
    let after = heartbeats(&mut client, Duration::from_millis(3000)).await;
    // 10 beats in 3 s; at most one of them lost to a hand-over at the step.
    assert!(after.len() >= 7, "heartbeats after the step: {after:?}");
    let longest = longest_gap(&after);
    assert!(
        longest <= 2 * 300 + 150,
        "longest gap {longest} ms: {after:?}"
    );
    for pair in after.windows(2) {
        let gap = (pair[1] - pair[0]).num_milliseconds();
        assert!(gap >= 250, "two heartbeats {gap} ms apart: {after:?}");
    }
}

#[tokio::test]
async fn a_dead_leader_whose_lease_a_backward_clock_step_prolonged_is_replaced() {
    let redis = RedisServer::start().await;
    // A leader that died just after Redis's clock stepped back by an hour: its lease and its
    // last beat both lie an hour ahead of Redis's clock now.
    let inspect = redis.client().await;
    let hour = Some(fred::types::Expiration::PX(3_600_000));
    let _: () = inspect
        .set(
            "wsfleet:heartbeat:leader",
            "ghost",
            hour.clone(),
            None,
            false,
        )
        .await
        .unwrap();
    let _: () = inspect
        .set(
            "wsfleet:heartbeat:last",
            an_hour_ahead_ms(),
            hour,
            None,
            false,
        )
        .await
        .unwrap();

    let app = spawn_app(&redis, &["--heartbeat-interval", "300ms"]).await;
    let mut client = Client::connect(&app.ws_url(None)).await;
    let beats = heartbeats(&mut client, Duration::from_millis(2500)).await;
    assert!(beats.len() >= 5, "heartbeats: {beats:?}");
    let leader: Option<String> = inspect.get("wsfleet:heartbeat:leader").await.unwrap();
    assert_eq!(leader.as_deref(), Some(app.instance.as_str()));
}
