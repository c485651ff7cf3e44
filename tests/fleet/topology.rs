//! `make up REDIS=sentinel|cluster` (scripts/lib-redis-topology.sh): the fleet on a Redis
//! topology of its own on this machine, given to the instances as fred's URL; `make status`
//! names the topology, says it is healthy and gives each process's role; `make scale` starts
//! instances on the same URL; `make down` stops every Redis process too.

use super::*;

/// The Redis processes the run directory has pid files for.
fn redis_pid_files(fleet: &Fleet) -> usize {
    std::fs::read_dir(&fleet.run_dir)
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().to_string())
        .filter(|name| name.starts_with("redis-") && name.ends_with(".pid"))
        .count()
}

/// The `REDIS_URL` the instances were given.
fn redis_url(fleet: &Fleet) -> String {
    std::fs::read_to_string(fleet.run_dir.join("redis_url"))
        .unwrap()
        .trim()
        .to_string()
}

/// Counts `n` frames on `session` through nginx, from where the session stood.
async fn count_through_nginx(fleet: &Fleet, session: &str, from: u64, n: u64) {
    let (mut socket, welcome) = connect(&fleet.ws_url(session)).await.unwrap();
    assert_eq!(welcome, from, "the session's count in the welcome");
    for expected in from + 1..=from + n {
        assert_eq!(send_and_count(&mut socket).await, expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_up_redis_sentinel_counts_through_a_primary_a_replica_and_three_sentinels_and_make_down_stops_them_all(
) {
    let _one = ONE_FLEET_AT_A_TIME.lock().await;
    let mut fleet = Fleet::new("sentinel");
    let limit = Duration::from_secs(90);
    let first = fleet.redis_port;

    let up = tokio::task::block_in_place(|| {
        fleet.make("up", &[("N", "1"), ("REDIS", "sentinel")], limit)
    });
    up.assert_ok("make up REDIS=sentinel");
    // The primary and the replica on the first two ports, the Sentinels on the next three.
    let url = format!(
        "redis-sentinel://127.0.0.1:{}?node=127.0.0.1:{}&node=127.0.0.1:{}&sentinelServiceName=wsfleet",
        first + 2,
        first + 3,
        first + 4
    );
    assert_eq!(redis_url(&fleet), url);
    assert!(up.text.contains(&url), "the summary names it: {}", up.text);
    assert_eq!(redis_pid_files(&fleet), 5, "{}", up.text);

    let session = format!("sentinel-{}", std::process::id());
    count_through_nginx(&fleet, &session, 0, 3).await;

    let status = tokio::task::block_in_place(|| fleet.make("status", &[], limit));
    status.assert_ok("make status");
    for line in [
        format!("redis   sentinel, healthy: primary 127.0.0.1:{first} with 1 linked replica(s), 3 Sentinels agree, quorum reachable"),
        format!("127.0.0.1:{}  replica of 127.0.0.1:{first}, link up", first + 1),
    ] {
        assert!(status.text.contains(&line), "no {line:?} in:\n{}", status.text);
    }
    assert_eq!(
        status.text.matches("  sentinel\n").count(),
        3,
        "{}",
        status.text
    );

    // make scale starts the new instance on the same URL: it is ready only with Redis.
    let scale = tokio::task::block_in_place(|| fleet.make("scale", &[("N", "2")], limit));
    scale.assert_ok("make scale N=2");
    fleet.expect_instances(2, "blue").await;
    count_through_nginx(&fleet, &session, 3, 1).await;

    tokio::task::block_in_place(|| fleet.down_and_check_nothing_is_left());
    assert_eq!(redis_pid_files(&fleet), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_up_redis_cluster_counts_through_a_three_primary_cluster_and_make_down_stops_every_node(
) {
    let _one = ONE_FLEET_AT_A_TIME.lock().await;
    let mut fleet = Fleet::new("cluster");
    let limit = Duration::from_secs(90);
    let first = fleet.redis_port;

    let up = tokio::task::block_in_place(|| {
        fleet.make("up", &[("N", "2"), ("REDIS", "cluster")], limit)
    });
    up.assert_ok("make up REDIS=cluster");
    let nodes: Vec<String> = (1..6)
        .map(|i| format!("node=127.0.0.1:{}", first + i))
        .collect();
    let url = format!("redis-cluster://127.0.0.1:{first}?{}", nodes.join("&"));
    assert_eq!(redis_url(&fleet), url);
    assert_eq!(redis_pid_files(&fleet), 6, "{}", up.text);

    // Two instances, and sessions of many slots: the counts go through every primary.
    let tag = std::process::id();
    for i in 0..6 {
        count_through_nginx(&fleet, &format!("cluster-{tag}-{i}"), 0, 2).await;
    }

    let status = tokio::task::block_in_place(|| fleet.make("status", &[], limit));
    status.assert_ok("make status");
    assert!(
        status.text.contains(
            "redis   cluster, healthy: cluster_state:ok, 16384 slots on 3 primaries, each with a linked replica"
        ),
        "{}",
        status.text
    );
    assert_eq!(
        status.text.matches("  primary\n").count(),
        3,
        "{}",
        status.text
    );

    tokio::task::block_in_place(|| fleet.down_and_check_nothing_is_left());
    assert_eq!(redis_pid_files(&fleet), 0);
}
