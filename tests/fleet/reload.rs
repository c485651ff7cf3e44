//! nginx reloaded under load: sockets established through nginx keep working across graceful
//! reloads (`nginx -s reload`, and the reload `make scale` does with a new upstream set); new
//! sockets connect after each; the old workers exit once the sockets they hold are closed.
//!
//! What nginx does with old workers: a reload starts new workers with the new configuration
//! and asks the old ones to shut down gracefully. An old worker stops accepting, closes its idle
//! keep-alive connections and keeps every upgraded (WebSocket) connection it proxies until that
//! connection closes. Our configuration sets no `worker_shutdown_timeout`, so nginx never cuts
//! those sockets short: an old worker lives exactly as long as its last socket (which
//! `proxy_read_timeout 1h` bounds for a silent one; our server pings every `PING_INTERVAL`,
//! so a live socket is never silent). The test checks both halves: the old workers are still
//! there, marked "shutting down", while the first sockets are open, and they are gone soon
//! after those sockets close.

use super::*;

/// Sockets that stay open through every reload.
const STEADY_SOCKETS: usize = 20;
/// Plain `nginx -s reload`s (same configuration), before the one that changes the upstream set.
const PLAIN_RELOADS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn established_sockets_keep_counting_through_nginx_reloads_and_old_workers_exit_after() {
    let _one = ONE_FLEET_AT_A_TIME.lock().await;
    let mut fleet = Fleet::new("reload");
    let limit = Duration::from_secs(90);
    let up = tokio::task::block_in_place(|| fleet.make("up", &[("N", "2")], limit));
    up.assert_ok("make up");
    fleet.expect_instances(2, "blue").await;

    let master = fleet.nginx_master_pid();
    let first_workers = nginx_workers(master);
    assert!(
        !first_workers.is_empty(),
        "nginx master {master} has no workers"
    );

    let tag = std::process::id();
    let traffic = Arc::new(Traffic::default());
    let broken = Arc::new(AtomicU64::new(0));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(150);
    let tasks: Vec<_> = (0..STEADY_SOCKETS)
        .map(|i| {
            tokio::spawn(steady_client(
                fleet.ws_url(&format!("reload-{tag}-{i}")),
                traffic.clone(),
                broken.clone(),
                deadline,
            ))
        })
        .collect();
    expect_progress(&traffic, 5 * STEADY_SOCKETS as u64, "the clients connected").await;

    let mut workers_seen = first_workers.clone();
    for reload in 1..=PLAIN_RELOADS {
        let before = nginx_workers(master);
        tokio::task::block_in_place(|| fleet.nginx_signal("reload"));
        let after = wait_for_new_workers(master, &before).await;
        workers_seen.extend(after);
        let what = format!("nginx -s reload #{reload}");
        expect_progress(&traffic, 3 * STEADY_SOCKETS as u64, &what).await;
        expect_none_broken(&broken, &what);
        expect_new_socket_counts(&fleet, &format!("reload-{tag}-new-{reload}"), &what).await;
    }

    // The reload `make scale` and `make promote` do: a new upstream list.
    let before = nginx_workers(master);
    let out = tokio::task::block_in_place(|| fleet.make("scale", &[("N", "3")], limit));
    out.assert_ok("make scale N=3");
    fleet.expect_instances(3, "blue").await;
    workers_seen.extend(wait_for_new_workers(master, &before).await);
    expect_progress(&traffic, 3 * STEADY_SOCKETS as u64, "make scale N=3").await;
    expect_none_broken(&broken, "make scale N=3");
    expect_new_socket_counts(&fleet, &format!("reload-{tag}-new-scale"), "make scale N=3").await;

    // The first workers hold the steady sockets: still there, shutting down.
    let current = accepting_workers(master);
    let holding: Vec<u32> = first_workers
        .iter()
        .copied()
        .filter(|pid| !process_is_gone(*pid))
        .collect();
    assert!(
        !holding.is_empty(),
        "every first-generation worker {first_workers:?} exited while its sockets were open"
    );
    for pid in &holding {
        assert!(!current.contains(pid), "worker {pid} still takes new work");
        let title = cmdline(*pid);
        assert!(
            title.contains("shutting down"),
            "old worker {pid} is {title:?}"
        );
    }

    traffic.stop.store(true, Ordering::Relaxed);
    let mut reports = Vec::new();
    for task in tasks {
        reports.push(
            tokio::time::timeout(PATIENCE, task)
                .await
                .expect("a client stops in time")
                .expect("a client task does not panic"),
        );
    }
    let broken: Vec<(&str, &str)> = reports
        .iter()
        .filter_map(|r| Some((r.session.as_str(), r.failure.as_deref()?)))
        .collect();
    assert!(
        broken.is_empty(),
        "{} of {STEADY_SOCKETS} established sockets broke across the reloads: {:?}",
        broken.len(),
        &broken[..broken.len().min(5)]
    );
    let total: u64 = reports.iter().map(|r| r.last).sum();
    eprintln!(
        "{STEADY_SOCKETS} sockets open across {PLAIN_RELOADS} reloads and a scale: {total} \
         counts, each socket 1, 2, 3, … without a gap; workers seen: {workers_seen:?}"
    );

    // With their sockets closed, the old workers have nothing left to finish.
    let old: Vec<u32> = workers_seen
        .difference(&accepting_workers(master))
        .copied()
        .collect();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left: Vec<(u32, String)> = old
            .iter()
            .filter(|pid| !process_is_gone(**pid))
            .map(|pid| (*pid, cmdline(*pid)))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "old nginx workers still running {PATIENCE:?} after their sockets closed: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    tokio::task::block_in_place(|| fleet.down_and_check_nothing_is_left());
}

/// What one steady socket saw.
#[derive(Debug, Default)]
struct SteadyReport {
    session: String,
    /// The last count: every number from 1 up to it came, in order, on one socket.
    last: u64,
    /// Why it stopped before being told to (a close, an error, a gap), if it did.
    failure: Option<String>,
}

/// One socket through nginx, closed loop, never reconnecting: any close, error or gap ends it
/// with a failure, counted in `broken` at once. Stops, closing its socket, when `traffic.stop`
/// is set.
async fn steady_client(
    url: String,
    traffic: Arc<Traffic>,
    broken: Arc<AtomicU64>,
    deadline: tokio::time::Instant,
) -> SteadyReport {
    let report = steady_socket(url, traffic, deadline).await;
    if report.failure.is_some() {
        broken.fetch_add(1, Ordering::Relaxed);
    }
    report
}

/// Fails the test when a steady socket has ended.
fn expect_none_broken(broken: &AtomicU64, after: &str) {
    let n = broken.load(Ordering::Relaxed);
    assert_eq!(
        n, 0,
        "{n} of {STEADY_SOCKETS} established sockets broke after {after}"
    );
}

/// The socket's loop; [`steady_client`] counts how it ended.
async fn steady_socket(
    url: String,
    traffic: Arc<Traffic>,
    deadline: tokio::time::Instant,
) -> SteadyReport {
    let mut report = SteadyReport {
        session: url.rsplit('=').next().unwrap_or_default().to_string(),
        ..SteadyReport::default()
    };
    let (mut socket, welcome) = match connect(&url).await {
        Ok(pair) => pair,
        Err(e) => {
            report.failure = Some(format!("could not connect: {e}"));
            return report;
        }
    };
    if welcome != 0 {
        report.failure = Some(format!("a new session welcomed with count {welcome}"));
        return report;
    }
    while !traffic.stop.load(Ordering::Relaxed) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Err(e) = socket.send(Message::text("tick")).await {
            report.failure = Some(format!("send after count {}: {e}", report.last));
            return report;
        }
        let count = loop {
            match tokio::time::timeout(PATIENCE, socket.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => {
                    let frame: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    if let Some(n) = frame["count"].as_u64() {
                        break n;
                    }
                    if frame.get("ts").is_none() {
                        report.failure = Some(format!("unexpected frame {frame}"));
                        return report;
                    }
                }
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)))) => {}
                other => {
                    report.failure = Some(format!("after count {}: {other:?}", report.last));
                    return report;
                }
            }
        };
        if count != report.last + 1 {
            report.failure = Some(format!("count {count} after {}", report.last));
            return report;
        }
        report.last = count;
        traffic.acknowledged.fetch_add(1, Ordering::Relaxed);
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(None)).await;
    // Until the server's close frame, so the socket is really gone from nginx.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(_)) = socket.next().await {}
    })
    .await;
    report
}

/// A socket opened now, through nginx, is welcomed and counts.
async fn expect_new_socket_counts(fleet: &Fleet, session: &str, after: &str) {
    let (mut socket, welcome) = connect(&fleet.ws_url(session))
        .await
        .unwrap_or_else(|e| panic!("a new socket after {after} did not connect: {e}"));
    assert_eq!(welcome, 0, "a new session after {after}");
    assert_eq!(
        send_and_count(&mut socket).await,
        1,
        "a new socket after {after}"
    );
    let _ = socket.close(None).await;
}

/// The pids of the processes whose parent is `master` (nginx's workers, old and new).
fn nginx_workers(master: u32) -> BTreeSet<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return BTreeSet::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let (_, rest) = stat.rsplit_once(')')?;
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(master)
        })
        .filter(|pid| !process_is_gone(*pid))
        .filter(|pid| cmdline(*pid).contains("worker process"))
        .collect()
}

/// The workers of `master` that take new connections (not the old ones shutting down).
fn accepting_workers(master: u32) -> BTreeSet<u32> {
    nginx_workers(master)
        .into_iter()
        .filter(|pid| !cmdline(*pid).contains("shutting down"))
        .collect()
}

/// Waits until `master` has workers that were not in `before` (the reload took effect) and
/// returns them.
async fn wait_for_new_workers(master: u32, before: &BTreeSet<u32>) -> BTreeSet<u32> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let new: BTreeSet<u32> = nginx_workers(master).difference(before).copied().collect();
        if !new.is_empty() {
            return new;
        }
        assert!(
            Instant::now() < deadline,
            "no new nginx worker {PATIENCE:?} after a reload (workers before: {before:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
