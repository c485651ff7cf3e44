//! A Redis Cluster of the test's own: 3 primaries and 3 replicas, each a [`RedisServer`].

use std::time::Duration;

use crate::{eventually_within, free_port, RedisServer, START_PATIENCE};

/// `cluster-node-timeout`: a primary is declared failed after this, and its replica promoted
/// a moment later (a few seconds in all), so that a failover test stays short.
pub const NODE_TIMEOUT_MS: u32 = 1000;

/// Six `redis-server --cluster-enabled yes` on free ports (bus ports too, set with
/// `--cluster-port` so that none falls in the ephemeral range), joined by
/// `redis-cli --cluster create … --cluster-replicas 1`. Each server is killed by its pid on
/// drop (its [`RedisServer`] handle).
pub struct RedisCluster {
    /// Every server, primaries and replicas, in creation order.
    pub servers: Vec<RedisServer>,
}

/// One primary as `CLUSTER NODES` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Primary {
    pub port: u16,
    /// Its slot ranges, inclusive.
    pub slots: Vec<(u16, u16)>,
}

impl RedisCluster {
    /// Starts the six servers, creates the cluster and waits until every server says
    /// `cluster_state:ok`, knows all six and every replica is in sync with its primary.
    pub async fn start() -> RedisCluster {
        let mut servers = Vec::new();
        for _ in 0..6 {
            let bus = free_port().to_string();
            let node_timeout = NODE_TIMEOUT_MS.to_string();
            let server = RedisServer::start_with(|dir| {
                vec![
                    "--cluster-enabled".into(),
                    "yes".into(),
                    "--cluster-config-file".into(),
                    dir.join("nodes.conf").display().to_string(),
                    "--cluster-port".into(),
                    bus,
                    "--cluster-node-timeout".into(),
                    node_timeout,
                ]
            })
            .await;
            servers.push(server);
        }
        let addresses: Vec<String> = servers
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        let status = std::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("redis-cli not found: install redis-tools");
        assert!(status.success(), "redis-cli --cluster create failed");
        let cluster = RedisCluster { servers };
        cluster.wait_healthy(START_PATIENCE).await;
        cluster
    }

    /// Waits until every live server says `cluster_state:ok`, knows every server, and each
    /// live replica's link to its primary is up.
    pub async fn wait_healthy(&self, patience: Duration) {
        let total = self.servers.len();
        eventually_within(patience, "the cluster to be ok on every server", || async {
            self.live()
                .all(|server| {
                    let info = server.cli(&["CLUSTER", "INFO"]).unwrap_or_default();
                    let replication = server.cli(&["INFO", "replication"]).unwrap_or_default();
                    info.contains("cluster_state:ok")
                        && info.contains(&format!("cluster_known_nodes:{total}"))
                        && (replication.contains("role:master")
                            || replication.contains("master_link_status:up"))
                })
                .then_some(())
        })
        .await;
    }

    /// The servers not killed.
    fn live(&self) -> impl Iterator<Item = &RedisServer> {
        self.servers.iter().filter(|s| s.is_running())
    }

    /// fred's cluster URL form, naming the first three servers.
    pub fn url(&self) -> String {
        let ports: Vec<u16> = self.servers.iter().take(3).map(|s| s.port).collect();
        format!(
            "redis-cluster://127.0.0.1:{}?node=127.0.0.1:{}&node=127.0.0.1:{}",
            ports[0], ports[1], ports[2]
        )
    }

    /// The primaries holding slots, as a live server sees them now (failed ones left out).
    pub fn primaries(&self) -> Vec<Primary> {
        let nodes = self
            .live()
            .find_map(|s| s.cli(&["CLUSTER", "NODES"]))
            .expect("a live cluster server answers CLUSTER NODES");
        let mut primaries: Vec<Primary> = nodes
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let flags = fields.get(2)?;
                if !flags.contains("master") || flags.contains("fail") {
                    return None;
                }
                // `127.0.0.1:port@bus`
                let port = fields[1].split(['@', ',']).next()?.rsplit(':').next()?;
                let slots: Vec<(u16, u16)> = fields[8..]
                    .iter()
                    .filter(|range| !range.starts_with('['))
                    .filter_map(|range| match range.split_once('-') {
                        Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                        None => range.parse().ok().map(|s| (s, s)),
                    })
                    .collect();
                let port = port.parse().ok()?;
                (!slots.is_empty()).then_some(Primary { port, slots })
            })
            .collect();
        primaries.sort_by_key(|p| p.slots[0]);
        primaries
    }

    /// The port of the primary serving `slot` now, if any.
    pub fn primary_of(&self, slot: u16) -> Option<u16> {
        self.primaries()
            .into_iter()
            .find(|p| p.slots.iter().any(|&(a, b)| (a..=b).contains(&slot)))
            .map(|p| p.port)
    }

    /// The server on `port`.
    pub fn server(&mut self, port: u16) -> &mut RedisServer {
        self.servers
            .iter_mut()
            .find(|s| s.port == port)
            .expect("a server of this cluster")
    }

    /// SIGKILLs the primary serving `slot`; returns its port.
    pub fn kill_primary_of(&mut self, slot: u16) -> u16 {
        let port = self.primary_of(slot).expect("the slot has a primary");
        self.server(port).kill();
        port
    }
}

/// A hash tag (`{…}` part of a key or shard channel) of the form `{prefix<n>}` for each
/// primary's slots, in the order of `primaries`: names that land on every shard.
pub fn tags_on_each_primary(primaries: &[Primary], prefix: &str) -> Vec<String> {
    primaries
        .iter()
        .map(|primary| {
            (0..100_000)
                .map(|n| format!("{prefix}{n}"))
                .find(|tag| {
                    let slot = fred::util::redis_keyslot(tag.as_bytes());
                    primary.slots.iter().any(|&(a, b)| (a..=b).contains(&slot))
                })
                .expect("a tag on every primary")
        })
        .collect()
}
