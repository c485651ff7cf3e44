//! `wsfleet-loadtest smoke`: the smoke test `make promote` runs against each instance of the
//! new colour before any traffic moves to it.
//!
//! One instance, contacted directly (not through nginx), checked end to end:
//! 1. `GET /readyz` answers 200;
//! 2. a socket on a fresh session gets its welcome (count 0), and two text frames are answered
//!    `{"count":1}` then `{"count":2}` (heartbeats in between are skipped);
//! 3. `POST /broadcast` with the operator token answers 202, and the socket receives that very
//!    broadcast (a nonce tells it apart) within `--broadcast-timeout`.
//!
//! Exit 0 with one `smoke: ok …` line on stdout, or 1 with one `smoke: FAILED …` line on
//! stderr naming the step that failed. Every wait is bounded; only the given URLs are contacted.

use std::{
    process::ExitCode,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use tokio::{net::TcpStream, time::Instant};
use tokio_tungstenite::{
    connect_async,
    tungstenite::{protocol::frame::coding::CloseCode, protocol::CloseFrame, Message},
    MaybeTlsStream, WebSocketStream,
};
use wsfleet::{config::parse_duration, protocol::ServerFrame};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Smoke test of one wsfleet instance: /readyz, a counted round trip, a broadcast received.
#[derive(Debug, Args)]
pub struct SmokeArgs {
    /// The instance's WebSocket endpoint (ws:// only).
    #[arg(
        long,
        env = "LOADTEST_URL",
        default_value = "ws://127.0.0.1:8000/ws/chat/"
    )]
    pub url: String,

    /// The same instance's HTTP base URL (http:// only), for /readyz and /broadcast.
    #[arg(long, env = "LOADTEST_HTTP", default_value = "http://127.0.0.1:8000")]
    pub http: String,

    /// The instance's BROADCAST_TOKEN. Prefer the environment variable: a command line is
    /// visible to every user of the machine.
    #[arg(long, env = "LOADTEST_TOKEN", hide_env_values = true)]
    pub token: String,

    /// Longest wait for the broadcast to come back through the socket.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub broadcast_timeout: Duration,

    /// Longest wait for any other single step (HTTP request, connect, reply).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub step_timeout: Duration,
}

/// Entry point for `wsfleet-loadtest smoke …`.
pub fn main(args: &SmokeArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("smoke: FAILED: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(summary) => {
            println!("smoke: ok: {summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("smoke: FAILED against {}: {e:#}", args.http);
            ExitCode::from(1)
        }
    }
}

/// Runs the three checks in order; the first failure ends the run.
pub async fn run(args: &SmokeArgs) -> Result<String> {
    if !args.url.starts_with("ws://") {
        bail!("--url must be a ws:// URL, got {:?}", args.url);
    }
    let base = base_url(&args.http)?;
    let step = args.step_timeout;
    let http = reqwest::Client::builder()
        .timeout(step)
        .build()
        .context("building the HTTP client")?;

    let (status, body) = bounded(step, "GET /readyz", async {
        answer(http.get(format!("{base}/readyz")).send().await?).await
    })
    .await?;
    if status != 200 {
        bail!("GET /readyz answered {status}: {}", body.trim());
    }

    let session = format!("smoke-{}", nonce());
    let sep = if args.url.contains('?') { '&' } else { '?' };
    let url = format!("{}{sep}session_uuid={session}", args.url);
    let (mut socket, _) = bounded(step, "the WebSocket upgrade", async {
        connect_async(url.as_str())
            .await
            .map_err(anyhow::Error::from)
    })
    .await?;
    match bounded(step, "the welcome frame", next_frame(&mut socket)).await? {
        ServerFrame::Welcome(w) if w.count == 0 => {}
        other => bail!("expected a welcome with count 0 for a new session, got {other:?}"),
    }
    for expected in 1..=2u64 {
        socket
            .send(Message::text("smoke"))
            .await
            .context("sending a text frame")?;
        let reply = bounded(step, "a count reply", async {
            loop {
                match next_frame(&mut socket).await? {
                    ServerFrame::Heartbeat(_) | ServerFrame::Broadcast(_) => continue,
                    other => return Ok(other),
                }
            }
        })
        .await?;
        match reply {
            ServerFrame::Count(c) if c.count == expected => {}
            other => bail!("frame {expected} was answered {other:?}, expected count {expected}"),
        }
    }

    let tag = nonce();
    let body = serde_json::json!({ "message": { "smoke": tag } });
    let sent = Instant::now();
    let (status, answered) = bounded(step, "POST /broadcast", async {
        let request = http
            .post(format!("{base}/broadcast"))
            .bearer_auth(&args.token)
            .json(&body);
        answer(request.send().await?).await
    })
    .await?;
    if status != 202 {
        bail!("POST /broadcast answered {status}: {}", answered.trim());
    }
    bounded(args.broadcast_timeout, "the broadcast to arrive", async {
        loop {
            if let ServerFrame::Broadcast(b) = next_frame(&mut socket).await? {
                if b.broadcast["smoke"] == tag.as_str() {
                    return Ok(());
                }
            }
        }
    })
    .await?;
    let waited = sent.elapsed();

    let _ = tokio::time::timeout(step, async {
        let close = CloseFrame {
            code: CloseCode::Normal,
            reason: "smoke test done".into(),
        };
        if socket.send(Message::Close(Some(close))).await.is_ok() {
            while let Some(Ok(_)) = socket.next().await {}
        }
    })
    .await;
    Ok(format!(
        "{} readyz 200, counts 1 and 2, broadcast received in {} ms",
        args.http,
        waited.as_millis()
    ))
}

/// Runs `what` with a deadline; running out is an error naming the step.
async fn bounded<T>(
    limit: Duration,
    step: &str,
    what: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(limit, what).await {
        Ok(result) => result.with_context(|| format!("{step} failed")),
        Err(_) => Err(anyhow!("{step}: nothing within {limit:?}")),
    }
}

/// The next text frame, typed; a close or a broken connection is an error.
async fn next_frame(socket: &mut Socket) -> Result<ServerFrame> {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(&text)
                    .with_context(|| format!("unexpected text frame {text:?}"));
            }
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) = frame
                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                    .unwrap_or((1005, String::new()));
                bail!("the server closed the socket: {code} {reason}");
            }
            Some(Ok(Message::Binary(_))) => bail!("unexpected binary frame"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => bail!("socket error: {e}"),
            None => bail!("the connection ended"),
        }
    }
}

/// A value unique enough to tell this run's session and broadcast from any other.
pub(crate) fn nonce() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}-{:x}", std::process::id(), nanos & 0xffff_ffff_ffff)
}

/// `--http` as a base URL without a trailing slash: `http://host[:port]`, no path.
fn base_url(url: &str) -> Result<&str> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("--http must be an http:// URL, got {url:?}"))?;
    let authority = rest.trim_end_matches('/');
    if authority.contains('/') {
        bail!("--http must be a base URL without a path, got {url:?}");
    }
    if authority.is_empty() || authority.starts_with(':') {
        bail!("--http has no host: {url:?}");
    }
    Ok(url.trim_end_matches('/'))
}

/// The status code and body text of a response.
async fn answer(response: reqwest::Response) -> Result<(u16, String)> {
    let status = response.status().as_u16();
    Ok((status, response.text().await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_checked() {
        assert_eq!(
            base_url("http://127.0.0.1:8001/").unwrap(),
            "http://127.0.0.1:8001"
        );
        assert_eq!(base_url("http://localhost").unwrap(), "http://localhost");
        for bad in [
            "https://127.0.0.1:1",
            "http://127.0.0.1:1/readyz",
            "http://",
            "http://:80",
        ] {
            assert!(base_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn smoke_options_parse_with_defaults() {
        #[derive(clap::Parser)]
        struct Smoke {
            #[command(flatten)]
            args: SmokeArgs,
        }
        let args = <Smoke as clap::Parser>::try_parse_from([
            "smoke",
            "--url",
            "ws://127.0.0.1:9/ws/chat/",
            "--http",
            "http://127.0.0.1:9",
            "--token",
            "t",
        ])
        .unwrap()
        .args;
        assert_eq!(args.broadcast_timeout, Duration::from_secs(5));
        assert_eq!(args.token, "t");
    }
}
