//! Half-open connections for real: WebSocket clients in a network namespace of their own,
//! whose network is torn down under them, so no FIN, RST or close frame ever reaches the
//! server. The server must find them with its pings and close them within two ping intervals
//! of the last frame it heard from them (their last pong), without waiting for a close reply
//! that cannot come.
//!
//! Setup (needs root, or CAP_NET_ADMIN and CAP_SYS_ADMIN, and iproute2's `ip`; CI runs as root
//! and .ci/run installs iproute2): a namespace `wsfNNN` and a veth pair between it and the
//! host, with private addresses from 10.213.0.0/16 picked from the test's pid:
//!   - 10.213.x.y+1 on the host's `lo`: the server binds it, and it stays reachable from the
//!     host (for /status and /metrics) after the veth is gone;
//!   - 10.213.x.y+2 on the namespace's end of the veth: the clients' address;
//!   - a blackhole route for the /30 around them, so that once the veth is gone the server's
//!     pings to the vanished clients are dropped here instead of following the default route.
//!
//! These addresses never leave the machine: they exist only on `lo`, on the veth pair and in
//! the namespace, and the blackhole route keeps anything addressed to them on the host. Apart
//! from them, only loopback is used (Redis). The clients are the project's load tester
//! (`wsfleet-loadtest hold`) run inside the namespace with `ip netns exec`. The test then
//! deletes the veth (both ends go), kills the clients (their FINs have nowhere to go) and
//! deletes the namespace, and watches the server's /status and /metrics.
//!
//! Everything is undone by a guard when the test ends, however it ends. Without root or
//! without `ip netns`, the test fails with one line saying so.

#[path = "common/mod.rs"]
mod common;

use std::{
    net::{Ipv4Addr, SocketAddr},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{workspace_binary, ChildNode, RedisServer};
use serde_json::Value;

/// Short, so the test is quick; the bounds below are in intervals.
const PING_INTERVAL: Duration = Duration::from_secs(1);
/// Sockets held from inside the namespace.
const CLIENTS: u64 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_whose_network_namespace_vanishes_are_closed_by_ping_timeout() {
    let net = PrivateNetwork::create();
    let redis = RedisServer::start().await;
    // The harness's port policy: a port nothing listens on (not even on 0.0.0.0), below
    // the ephemeral range.
    let addr = SocketAddr::from((net.host, common::free_port()));
    let ping = format!("{}ms", PING_INTERVAL.as_millis());
    let node = ChildNode::start_on(addr, &redis, "half-open", &["--ping-interval", &ping]).await;

    // The clients, inside the namespace: hold their sockets (answering pings) for longer
    // than the test can last.
    let loadtest = workspace_binary("LOADTEST_BIN", "wsfleet-loadtest");
    let log = std::env::temp_dir().join(format!("wsfleet-half-open-{}.log", std::process::id()));
    let log_file = std::fs::File::create(&log).unwrap();
    let mut clients = Command::new("ip")
        .args(["netns", "exec", &net.namespace])
        .arg(&loadtest)
        .args(["hold", "--duration", "300s", "--timeout", "330s"])
        .args(["--connections", &CLIENTS.to_string()])
        .args(["--url", &format!("ws://{addr}/ws/chat/")])
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .expect("ip netns exec runs");
    let _kill_clients = KillOnDrop(clients.id());

    let status_url = format!("http://{addr}/status");
    common::eventually_within(
        Duration::from_secs(20),
        "the clients in the namespace to connect",
        || async {
            let status = get_json(&status_url).await?;
            (status["connections"]["local"] == CLIENTS && status["connections"]["fleet"] == CLIENTS)
                .then_some(())
        },
    )
    .await;
    // Several ping rounds with live clients: nothing is closed while they answer.
    tokio::time::sleep(PING_INTERVAL * 3).await;
    let status = get_json(&status_url).await.expect("/status answers");
    assert_eq!(
        status["connections"]["local"],
        CLIENTS,
        "live clients were closed: {status}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let closed_before = closed_with(&addr, "1008").await;

    // The network goes away under the clients, then the clients themselves.
    let vanished = Instant::now();
    net.delete_veth();
    let _ = clients.kill();
    let _ = clients.wait();
    net.delete_namespace();

    let closed_after = common::eventually_within(
        PING_INTERVAL * 3 + Duration::from_secs(10),
        "the server to close the half-open sockets",
        || async {
            let status = get_json(&status_url).await?;
            let gone = status["connections"]["local"] == 0 && status["connections"]["fleet"] == 0;
            gone.then_some(Instant::now())
        },
    )
    .await;
    let took = closed_after - vanished;
    let closed = closed_with(&addr, "1008").await - closed_before;
    assert_eq!(
        closed,
        CLIENTS as f64,
        "every half-open socket is closed with 1008 (ping timeout)\n{}",
        node.log_text()
    );
    // Two intervals from the last pong (which came at most one interval before the network
    // vanished, so within two of it), and slack for a loaded machine and the /status polls;
    // under a second, so closing at the ping tick after the deadline (2-3 intervals after the
    // last pong, as this server once did) fails.
    let bound = PING_INTERVAL * 2 + Duration::from_millis(900);
    assert!(
        took <= bound,
        "half-open sockets closed after {took:?}, more than {bound:?}"
    );
    eprintln!(
        "{CLIENTS} half-open sockets closed with 1008 {took:?} after their network vanished \
         (PING_INTERVAL {PING_INTERVAL:?}); the registry count is 0"
    );
    let _ = std::fs::remove_file(&log);
}

async fn get_json(url: &str) -> Option<Value> {
    reqwest::get(url).await.ok()?.json().await.ok()
}

/// `wsfleet_connections_closed_total{code="CODE"}` from the node's /metrics (0 if absent).
async fn closed_with(addr: &SocketAddr, code: &str) -> f64 {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("/metrics answers")
        .text()
        .await
        .expect("a text body");
    let series = format!("wsfleet_connections_closed_total{{code=\"{code}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// SIGKILLs a child by pid when dropped (a failed assertion must not leave clients running).
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        common::send_signal(self.0 as i32, common::SIGKILL);
    }
}

/// The namespace, the veth pair, the host-side address and the blackhole route; each is
/// removed again on drop (what is already gone is skipped).
struct PrivateNetwork {
    namespace: String,
    veth_host: String,
    veth_inside: String,
    host: Ipv4Addr,
    inside: Ipv4Addr,
    subnet: String,
}

impl PrivateNetwork {
    fn create() -> PrivateNetwork {
        let pid = std::process::id();
        // A /30 of 10.213.0.0/16 chosen by pid: .1 (unused network half) .. host .. inside.
        let block = (pid % 16_384) * 4;
        let (x, y) = ((block / 256) as u8, (block % 256) as u8);
        let net = PrivateNetwork {
            namespace: format!("wsf{pid}"),
            veth_host: format!("wsf{pid}h"),
            veth_inside: format!("wsf{pid}n"),
            host: Ipv4Addr::new(10, 213, x, y + 1),
            inside: Ipv4Addr::new(10, 213, x, y + 2),
            subnet: format!("10.213.{x}.{y}/30"),
        };
        // The first step tells whether this machine lets us at all.
        if let Err(why) = ip(&["netns", "add", &net.namespace]) {
            panic!(
                "the half-open test needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) and iproute2's \
                 `ip netns` (CI runs as root): {why}"
            );
        }
        let (host, inside) = (format!("{}/32", net.host), format!("{}/32", net.inside));
        let steps: [&[&str]; 9] = [
            &[
                "link",
                "add",
                &net.veth_host,
                "type",
                "veth",
                "peer",
                "name",
                &net.veth_inside,
                "netns",
                &net.namespace,
            ],
            &["addr", "add", &host, "dev", "lo"],
            &["link", "set", &net.veth_host, "up"],
            &["route", "add", &inside, "dev", &net.veth_host],
            &["route", "add", "blackhole", &net.subnet],
            &["-n", &net.namespace, "link", "set", "lo", "up"],
            &[
                "-n",
                &net.namespace,
                "addr",
                "add",
                &inside,
                "dev",
                &net.veth_inside,
            ],
            &["-n", &net.namespace, "link", "set", &net.veth_inside, "up"],
            &[
                "-n",
                &net.namespace,
                "route",
                "add",
                &host,
                "dev",
                &net.veth_inside,
            ],
        ];
        for step in steps {
            if let Err(why) = ip(step) {
                // `net` drops here and removes what was made.
                panic!(
                    "setting up the test network failed at `ip {}`: {why}",
                    step.join(" ")
                );
            }
        }
        net
    }

    /// Deletes the veth pair (deleting one end deletes both): the clients' packets have nowhere
    /// to go from now on, and the server's to them end in the blackhole route.
    fn delete_veth(&self) {
        let _ = ip(&["link", "del", &self.veth_host]);
    }

    fn delete_namespace(&self) {
        let _ = ip(&["netns", "del", &self.namespace]);
    }
}

impl Drop for PrivateNetwork {
    fn drop(&mut self) {
        self.delete_veth();
        self.delete_namespace();
        let _ = ip(&["route", "del", "blackhole", &self.subnet]);
        let _ = ip(&["addr", "del", &format!("{}/32", self.host), "dev", "lo"]);
    }
}

/// Runs `ip ARGS…`; the error is its stderr (or why it did not run).
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("`ip` does not run ({e}): install iproute2"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}
