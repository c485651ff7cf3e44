//! `make up`'s Redis and `make status` as a health check: Redis runs with the append-only file
//! and a memory bound (scripts/lib-redis.sh), so a SIGKILLed redis-server that `make up` starts
//! again still has every count; `make status` exits non-zero whenever no client on :PORT would
//! be served (nothing running, or no ready instance behind nginx), and 0 when one would. A
//! SIGKILLed nginx master is started again by `make up` too.

use super::*;

/// `CONFIG GET NAME` of the fleet's Redis: its value.
fn redis_config(port: u16, name: &str) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "config", "get", name])
        .output()
        .expect("redis-cli runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines().nth(1).unwrap_or_default().to_string()
}

/// Polls `make status` until its exit is (or is not) 0, at most `PATIENCE`.
async fn expect_status(fleet: &mut Fleet, healthy: bool) -> MakeOutput {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let out =
            tokio::task::block_in_place(|| fleet.make("status", &[], Duration::from_secs(30)));
        if (out.code == Some(0)) == healthy {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "make status: wanted healthy={healthy}, got exit {:?}:\n{}",
            out.code,
            out.text
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_ups_redis_keeps_counts_through_a_sigkill_and_make_status_says_when_the_fleet_is_down()
{
    let _one = ONE_FLEET_AT_A_TIME.lock().await;
    let mut fleet = Fleet::new("redis");
    let limit = Duration::from_secs(90);

    let before = expect_status(&mut fleet, false).await;
    assert!(
        before
            .text
            .contains("health  DOWN: no nginx of ours is running"),
        "{}",
        before.text
    );

    let up = tokio::task::block_in_place(|| fleet.make("up", &[("N", "1")], limit));
    up.assert_ok("make up");
    assert!(
        !up.text.contains("No such file or directory"),
        "a first make up complains about a file it has not made yet:\n{}",
        up.text
    );
    let port = fleet.redis_port;
    let settings: Vec<(&str, String)> = ["appendonly", "appendfsync", "maxmemory-policy"]
        .into_iter()
        .map(|name| (name, redis_config(port, name)))
        .collect();
    assert_eq!(
        settings,
        [
            ("appendonly", "yes".to_string()),
            ("appendfsync", "everysec".to_string()),
            ("maxmemory-policy", "volatile-lru".to_string()),
        ]
    );
    assert_eq!(redis_config(port, "maxmemory"), (256u64 << 20).to_string());

    let session = format!("redis-{}", std::process::id());
    let (mut socket, welcome) = connect(&fleet.ws_url(&session)).await.unwrap();
    assert_eq!(welcome, 0);
    for expected in 1..=3 {
        assert_eq!(send_and_count(&mut socket).await, expected);
    }
    drop(socket);

    let healthy = expect_status(&mut fleet, true).await;
    assert!(healthy.text.contains("health  ok"), "{}", healthy.text);
    assert!(
        healthy
            .text
            .contains("fleet   1 instance(s) in the registry (blue 1, green 0, draining 0)"),
        "the registry's view, read with jq: {}",
        healthy.text
    );

    // Redis dies at once, nothing saved on the way out: only the append-only file has the
    // counts. Until it is back no instance is ready, and make status says so.
    let pid_file = fleet.run_dir.join("redis.pid");
    let redis_pid = std::fs::read_to_string(&pid_file).unwrap();
    let killed = Command::new("kill")
        .args(["-KILL", redis_pid.trim()])
        .status()
        .unwrap();
    assert!(killed.success());
    let down = expect_status(&mut fleet, false).await;
    assert!(
        down.text.contains("health  DOWN"),
        "the reason is the last line: {}",
        down.text
    );

    let again = tokio::task::block_in_place(|| fleet.make("up", &[], limit));
    again.assert_ok("make up after Redis was killed");
    assert!(
        again.text.contains("starting it again"),
        "make up starts the dead Redis again: {}",
        again.text
    );
    // The instance reconnects to Redis in the background; upgrades are refused until then.
    let deadline = Instant::now() + PATIENCE;
    let (mut socket, welcome) = loop {
        match connect(&fleet.ws_url(&session)).await {
            Ok(open) => break open,
            Err(e) => assert!(Instant::now() < deadline, "no socket after restart: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        welcome, 3,
        "the counter came back from the append-only file"
    );
    assert_eq!(send_and_count(&mut socket).await, 4);
    drop(socket);
    expect_status(&mut fleet, true).await;

    // nginx's master SIGKILLed too: its workers outlive it and its status socket stays behind,
    // a file nginx will not bind over. make up stops the workers, removes the socket and
    // starts nginx again, stub_status included.
    assert!(send_signal(fleet.nginx_master_pid() as i32, SIGKILL));
    let again = tokio::task::block_in_place(|| fleet.make("up", &[], limit));
    again.assert_ok("make up after nginx was killed");
    let status_page = nginx_status(&fleet.run_dir.join("nginx/status.sock")).await;
    assert!(status_page.starts_with("HTTP/1.1 200"), "{status_page}");
    expect_status(&mut fleet, true).await;

    tokio::task::block_in_place(|| fleet.down_and_check_nothing_is_left());
    let after = tokio::task::block_in_place(|| fleet.make("status", &[], limit));
    assert_ne!(
        after.code,
        Some(0),
        "make status after make down: {}",
        after.text
    );
    assert!(after.text.contains("health  DOWN"), "{}", after.text);
}
