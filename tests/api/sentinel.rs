//! `REDIS_URL=redis-sentinel://…`: a node behind a real Sentinel set (a primary, a replica and
//! one `redis-server --sentinel`) survives a failover: the primary is SIGKILLed, the socket
//! stays open and is answered `unavailable` while there is no primary, the count then goes on
//! with no repeat and, with `REDIS_WAIT_REPLICAS=1`, no gap (every acknowledged count was on the
//! replica that took over).

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::json;

use crate::helpers::{free_port, ws_url, ChildNode, Client, RedisServer};

const SERVICE: &str = "wsfleet-test";
/// Sentinel's timings, small so the test is short: the primary is declared down after 1 s.
const DOWN_AFTER_MS: u32 = 1000;
/// The whole failover (detection, election, promotion, the node's reconnect) with room to spare.
const FAILOVER_PATIENCE: Duration = Duration::from_secs(30);

/// One `redis-server --sentinel` watching `primary_port`, killed (by pid) on drop.
pub struct Sentinel {
    pub port: u16,
    dir: PathBuf,
    child: Child,
}

impl Sentinel {
    pub fn start(primary_port: u16) -> Sentinel {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("wsfleet-test-sentinel-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("sentinel.conf");
        std::fs::write(
            &config,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                 sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 1\n\
                 sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n\
                 sentinel failover-timeout {SERVICE} 10000\n",
                dir = dir.display()
            ),
        )
        .unwrap();
        let child = Command::new("redis-server")
            .arg(&config)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server --sentinel starts");
        Sentinel { port, dir, child }
    }

    fn cli(&self, args: &[&str]) -> Option<String> {
        let output = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    /// The port of the primary it names now.
    pub fn primary_port(&self) -> Option<u16> {
        let answer = self.cli(&["SENTINEL", "get-master-addr-by-name", SERVICE])?;
        answer.lines().nth(1)?.parse().ok()
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    crate::common::eventually_within(FAILOVER_PATIENCE, what, || {
        let done = check();
        async move { done.then_some(()) }
    })
    .await;
}

/// A primary, its replica (in sync) and a sentinel watching them (the contract run of
/// tests/api/cluster.rs uses it too).
pub struct SentinelSet {
    pub primary: RedisServer,
    pub replica: RedisServer,
    pub sentinel: Sentinel,
}

impl SentinelSet {
    pub async fn start() -> SentinelSet {
        let primary = RedisServer::start().await;
        let primary_port = primary.port.to_string();
        let replica = RedisServer::start_with(|_| {
            vec!["--replicaof".into(), "127.0.0.1".into(), primary_port]
        })
        .await;
        until("the replica to sync", || {
            replica
                .cli(&["INFO", "replication"])
                .is_some_and(|info| info.contains("master_link_status:up"))
        })
        .await;
        let sentinel = Sentinel::start(primary.port);
        until("the sentinel to know the replica", || {
            sentinel
                .cli(&["SENTINEL", "replicas", SERVICE])
                .is_some_and(|answer| answer.contains(&replica.port.to_string()))
        })
        .await;
        SentinelSet {
            primary,
            replica,
            sentinel,
        }
    }

    /// fred's Sentinel URL form.
    pub fn url(&self) -> String {
        format!(
            "redis-sentinel://127.0.0.1:{}?sentinelServiceName={SERVICE}",
            self.sentinel.port
        )
    }
}

#[tokio::test]
async fn a_sentinel_failover_keeps_the_socket_and_repeats_no_count() {
    let set = SentinelSet::start().await;
    let url = set.url();
    let SentinelSet {
        mut primary,
        replica,
        sentinel,
    } = set;
    let node = ChildNode::start(
        &replica,
        "sentinel",
        &["--redis-url", &url, "--redis-wait-replicas", "1"],
    )
    .await;
    let mut client: Client = Client::connect(&ws_url(node.addr, Some("failover"))).await;
    for expected in 1..=20 {
        client.send("x").await;
        assert_eq!(client.next_reply().await, json!({ "count": expected }));
    }

    primary.kill();
    // Resend the pending message until it is counted: `unavailable` while there is no
    // primary (and while the new one has no replica to WAIT for), the socket open throughout.
    let mut unavailable = 0;
    let mut restarted = false;
    let deadline = tokio::time::Instant::now() + FAILOVER_PATIENCE;
    let count = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no count within {FAILOVER_PATIENCE:?}"
        );
        // Once the replica is the primary, the old one comes back; Sentinel makes it a replica.
        if !restarted && sentinel.primary_port() == Some(replica.port) {
            primary.restart().await;
            restarted = true;
        }
        client.send("x").await;
        match client.next_reply().await {
            reply if reply == json!({"error": "unavailable", "retry": true}) => {
                unavailable += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            reply => break reply,
        }
    };
    assert!(unavailable > 0, "the failover was not noticed");
    // The replica was promoted: seen before the restart, or now. (Once restarted, the old
    // primary may be promoted back by a second failover on a loaded machine: Sentinel's
    // down-after is short here. The counts below must hold either way.)
    assert!(
        restarted || sentinel.primary_port() == Some(replica.port),
        "Sentinel never named the replica primary"
    );
    // Acknowledged counts were on the replica (WAIT 1): the next is exactly 21, not a repeat
    // of one below it and not a jump.
    assert_eq!(count, json!({ "count": 21 }));
    // The new replica may still lag a WAIT now and then on a loaded machine: resend as a
    // client does; each frame gets the next count.
    for expected in 22..=30 {
        let reply = client
            .count_through_unavailable("x", FAILOVER_PATIENCE)
            .await;
        assert_eq!(reply, json!({ "count": expected }));
    }
}
