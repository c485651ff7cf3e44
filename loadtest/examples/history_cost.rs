//! Bench tool (scripts/bench-tools/history-cost.sh starts the fleet): what the broadcast
//! history costs, measured on a running fleet.
//!
//! - publish throughput through an instance with `HISTORY_SIZE=1000` against one with
//!   `HISTORY_SIZE=0` (same Redis), `POST /broadcast` from `CONCURRENCY` tasks, rounds
//!   alternating;
//! - Redis memory per retained publication: `used_memory` before and after the first 1000
//!   publications of the instance that keeps them;
//! - replaying 1000 missed broadcasts to one client: from the welcome to the 1000th frame, and
//!   from the start of the connect.
//!
//! history_cost HTTP_WITH HTTP_WITHOUT WS_WITH TOKEN REDIS_ADDR [ROUNDS] — prints JSON.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

const PUBLICATIONS: usize = 1000;
const CONCURRENCY: usize = 32;

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [with, without, ws, token, redis, rest @ ..] = &args[..] else {
        bail!("usage: history_cost HTTP_WITH HTTP_WITHOUT WS_WITH TOKEN REDIS_ADDR [ROUNDS]");
    };
    let rounds: usize = rest.first().map_or(Ok(3), |r| r.parse())?;
    let client = reqwest::Client::new();

    let before = used_memory(redis).await?;
    let (first, _) = publish(&client, with, token, PUBLICATIONS).await?;
    let after = used_memory(redis).await?;
    let per_publication = (after as f64 - before as f64) / PUBLICATIONS as f64;

    let (mut rate_with, mut rate_without) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        rate_with.push(publish(&client, with, token, PUBLICATIONS).await?.1);
        rate_without.push(publish(&client, without, token, PUBLICATIONS).await?.1);
    }
    // The last 1000 publications are those of the instance without history: publish 1000
    // more with history, then replay exactly them.
    let (last, _) = publish(&client, with, token, PUBLICATIONS).await?;
    let since = last.0 - PUBLICATIONS as u64;
    let mut replays = Vec::new();
    for _ in 0..rounds.max(5) {
        replays.push(replay(ws, since, &last.1, PUBLICATIONS).await?);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (with_rate, without_rate) = (median(rate_with.clone()), median(rate_without.clone()));
    let after_welcome = median(replays.iter().map(|r| r.0).collect());
    let from_connect = median(replays.iter().map(|r| r.1).collect());
    let report = json!({
        "first_offset": first.0,
        "publications_per_run": PUBLICATIONS,
        "concurrency": CONCURRENCY,
        "publish_per_s_with_history": rate_with,
        "publish_per_s_without_history": rate_without,
        "median_with": with_rate,
        "median_without": without_rate,
        "ratio": with_rate / without_rate,
        "redis_bytes_per_retained_publication": per_publication,
        "replay_1000_ms_after_welcome": after_welcome,
        "replay_1000_ms_from_connect": from_connect,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// Publishes `n` broadcasts of ~100 bytes; returns the last offset and epoch and the rate.
async fn publish(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    n: usize,
) -> Result<((u64, String), f64)> {
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|task| {
            let (client, url, token) = (
                client.clone(),
                format!("{base}/broadcast"),
                token.to_string(),
            );
            tokio::spawn(async move {
                let mut last = (0, String::new());
                for i in (task..n).step_by(CONCURRENCY) {
                    let body = json!({"message": {"n": i, "text": "x".repeat(80)}});
                    let answer: Value = client
                        .post(&url)
                        .bearer_auth(&token)
                        .json(&body)
                        .send()
                        .await?
                        .error_for_status()?
                        .json()
                        .await?;
                    let offset = answer["offset"].as_u64().context("no offset")?;
                    if offset > last.0 {
                        last = (offset, answer["epoch"].as_str().unwrap_or("").to_string());
                    }
                }
                anyhow::Ok(last)
            })
        })
        .collect();
    let mut last = (0, String::new());
    for task in tasks {
        let got = task.await??;
        if got.0 > last.0 {
            last = got;
        }
    }
    Ok((last, n as f64 / started.elapsed().as_secs_f64()))
}

/// Connects with `since`, reads the welcome and `n` missed broadcasts; returns milliseconds
/// from the welcome to the last, and from the start of the connect to the last.
async fn replay(ws: &str, since: u64, epoch: &str, n: usize) -> Result<(f64, f64)> {
    let started = Instant::now();
    let url = format!("{ws}?since={since}&epoch={epoch}");
    let (mut socket, _) = tokio_tungstenite::connect_async(&url).await?;
    let mut welcome_at = None;
    let mut seen = 0;
    while seen < n {
        let frame = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .context("no frame within 10 s")?
            .context("socket ended")??;
        let Message::Text(text) = frame else { continue };
        let value: Value = serde_json::from_str(&text)?;
        if value.get("session_uuid").is_some() {
            if value["recovered"] != true {
                bail!("not recovered: {value}");
            }
            welcome_at = Some(Instant::now());
        } else if value.get("broadcast").is_some() {
            seen += 1;
            if value["offset"].as_u64() != Some(since + seen as u64) {
                bail!("out of order at {seen}: {value}");
            }
        }
    }
    let welcome_at = welcome_at.context("no welcome")?;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok((ms(welcome_at.elapsed()), ms(started.elapsed())))
}

/// `used_memory` from `INFO memory` (one inline command over plain TCP).
async fn used_memory(addr: &str) -> Result<u64> {
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.write_all(b"INFO memory\r\n").await?;
    let mut text = String::new();
    let mut buf = [0u8; 8192];
    while !text.contains("used_memory:") || !text.ends_with("\r\n") {
        let n = tcp.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    text.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .context("no used_memory in INFO")?
        .trim()
        .parse()
        .context("used_memory is not a number")
}
