//! Resuming WebSocket clients that count every reply through nginx.

use super::*;
use wsfleet::protocol::{judge_resume, Resumption};

/// Shared by the resuming clients and the test body.
#[derive(Default)]
pub(crate) struct Traffic {
    /// Replies counted by every client together.
    pub(crate) acknowledged: AtomicU64,
    pub(crate) stop: AtomicBool,
}

/// What one resuming client saw.
#[derive(Debug, Default)]
pub(crate) struct ClientReport {
    pub(crate) session: String,
    /// The session's counter at the end: every number up to it was seen exactly once.
    pub(crate) last: u64,
    /// Gaps, repeats or anything else against the protocol, with the numbers involved.
    pub(crate) violations: Vec<String>,
    pub(crate) reconnects: u64,
    pub(crate) byes: u64,
    /// Replies lost with a broken connection and recovered from the welcome (rule 4, w > acked).
    pub(crate) recovered_from_welcome: u64,
    /// Broadcast frames received: nobody broadcasts in these tests, so any is a leak (e.g. a
    /// smoke test that publishes to the whole fleet).
    pub(crate) broadcasts: u64,
}

/// One client, closed loop (one message in flight), through nginx, following the resume rules
/// of docs/PROTOCOL.md: on `bye`, a close or a broken connection it reconnects with its
/// session and resends the message that had no reply, unless the welcome shows it was counted.
/// Every count it is told must be the previous one plus one. Stops when `traffic.stop` is set
/// and nothing is in flight, or at `deadline`.
pub(crate) async fn resuming_client(
    url: String,
    session: String,
    pace: Duration,
    traffic: Arc<Traffic>,
    deadline: tokio::time::Instant,
) -> ClientReport {
    let mut report = ClientReport {
        session: session.clone(),
        ..ClientReport::default()
    };
    let mut acked: Option<u64> = None;
    let mut pending = false;
    'connection: loop {
        // Connect (and read the welcome), with a short back-off, until the deadline.
        let mut backoff = Duration::from_millis(50);
        let mut socket: Socket = loop {
            if tokio::time::Instant::now() > deadline {
                report
                    .violations
                    .push("could not reconnect before the deadline".into());
                report.last = acked.unwrap_or(0);
                return report;
            }
            match tokio::time::timeout(Duration::from_secs(5), connect(&url)).await {
                Ok(Ok((socket, welcome))) => {
                    match acked.map(|a| (a, judge_resume(a, u64::from(pending), welcome))) {
                        None => acked = Some(welcome),
                        Some((_, Resumption::Continues { counted: 0 })) => {}
                        Some((_, Resumption::Continues { counted })) => {
                            // The message in flight was counted; its reply was lost.
                            acked = Some(welcome);
                            pending = false;
                            report.recovered_from_welcome += counted;
                        }
                        Some((a, judgement)) => {
                            report.violations.push(format!(
                                "welcome count {welcome} after {a} acknowledged (pending: {pending}): {judgement:?}"
                            ));
                            acked = Some(welcome);
                        }
                    }
                    break socket;
                }
                _ => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
            }
        };
        if pending && socket.send(Message::text("tick")).await.is_err() {
            report.reconnects += 1;
            continue 'connection;
        }
        loop {
            if !pending {
                if traffic.stop.load(Ordering::Relaxed) || tokio::time::Instant::now() > deadline {
                    let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(None)).await;
                    report.last = acked.unwrap_or(0);
                    return report;
                }
                tokio::time::sleep(pace).await;
                pending = true;
                if socket.send(Message::text("tick")).await.is_err() {
                    report.reconnects += 1;
                    continue 'connection;
                }
            }
            let frame = match tokio::time::timeout(PATIENCE, socket.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => {
                    serde_json::from_str::<Value>(&text).unwrap_or(Value::Null)
                }
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)))) => continue,
                Ok(Some(Ok(Message::Binary(_)))) => {
                    report.violations.push("binary frame".into());
                    continue;
                }
                Ok(Some(Ok(Message::Close(_))) | Some(Err(_)) | None) => {
                    report.reconnects += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue 'connection;
                }
                Err(_) => {
                    report
                        .violations
                        .push(format!("no frame for {PATIENCE:?} (pending: {pending})"));
                    report.reconnects += 1;
                    continue 'connection;
                }
            };
            if let Some(n) = frame["count"].as_u64() {
                let a = acked.unwrap_or(0);
                if !pending {
                    report
                        .violations
                        .push(format!("count {n} with nothing in flight"));
                } else if n != a + 1 {
                    report
                        .violations
                        .push(format!("count {n} after {a}: a gap or a repeat"));
                }
                acked = Some(n);
                pending = false;
                traffic.acknowledged.fetch_add(1, Ordering::Relaxed);
            } else if frame.get("broadcast").is_some() {
                report.broadcasts += 1;
            } else if frame["bye"] == true {
                report.byes += 1;
                let a = acked.unwrap_or(0);
                if frame["total"].as_u64() != Some(a) {
                    report.violations.push(format!(
                        "bye total {} after {a} acknowledged",
                        frame["total"]
                    ));
                }
                // Wait for the close, then the hinted pause (bounded), then resume.
                let _ = tokio::time::timeout(Duration::from_secs(5), async {
                    while let Some(Ok(m)) = socket.next().await {
                        if m.is_close() {
                            break;
                        }
                    }
                })
                .await;
                let hint = frame["reconnect_after_ms"].as_u64().unwrap_or(0).min(3000);
                tokio::time::sleep(Duration::from_millis(hint)).await;
                report.reconnects += 1;
                continue 'connection;
            } else if frame["error"] == "unavailable" {
                // Not counted: resend after a short pause.
                tokio::time::sleep(Duration::from_millis(100)).await;
                if socket.send(Message::text("tick")).await.is_err() {
                    report.reconnects += 1;
                    continue 'connection;
                }
            } else if frame.get("ts").is_none() {
                report.violations.push(format!("unexpected frame {frame}"));
            }
        }
    }
}

/// Upgrade and welcome; returns the welcome's count.
pub(crate) async fn connect(url: &str) -> Result<(Socket, u64), String> {
    let (socket, welcome) = connect_welcome(url).await?;
    welcome["count"]
        .as_u64()
        .map(|c| (socket, c))
        .ok_or_else(|| format!("not a welcome: {welcome}"))
}

/// Upgrade; returns the welcome frame.
pub(crate) async fn connect_welcome(url: &str) -> Result<(Socket, Value), String> {
    let (mut socket, _) =
        tokio_tungstenite::connect_async_with_config(url, Some(client_config()), true)
            .await
            .map_err(|e| e.to_string())?;
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => {
                let welcome: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
                return Ok((socket, welcome));
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => return Err(format!("before the welcome: {other:?}")),
        }
    }
}

/// Waits until the clients together got `more` replies beyond `from` (traffic flows).
pub(crate) async fn expect_progress(traffic: &Traffic, more: u64, after: &str) {
    let from = traffic.acknowledged.load(Ordering::Relaxed);
    let deadline = Instant::now() + PATIENCE;
    while traffic.acknowledged.load(Ordering::Relaxed) < from + more {
        assert!(
            Instant::now() < deadline,
            "traffic stalled after {after}: {} replies in {PATIENCE:?}, wanted {more}",
            traffic.acknowledged.load(Ordering::Relaxed) - from
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A simple client for one-off checks: send one frame, get the count.
pub(crate) async fn send_and_count(socket: &mut Socket) -> u64 {
    socket.send(Message::text("x")).await.unwrap();
    loop {
        let frame = tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("a reply in time")
            .expect("the socket is open")
            .expect("no socket error");
        if let Message::Text(text) = frame {
            let value: Value = serde_json::from_str(&text).unwrap();
            if let Some(n) = value["count"].as_u64() {
                return n;
            }
            assert!(value.get("ts").is_some(), "unexpected frame {value}");
        }
    }
}
