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
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};
use tokio_tungstenite::{
    connect_async,
    tungstenite::{protocol::frame::coding::CloseCode, protocol::CloseFrame, Message},
    MaybeTlsStream, WebSocketStream,
};
use wsfleet::{config::parse_duration, protocol::ServerFrame};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Smoke test of one wsfleet instance: /readyz, a counted round trip, a broadcast received.
#[derive(Debug, Parser)]
#[command(name = "wsfleet-loadtest smoke")]
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

/// Entry point for `wsfleet-loadtest smoke …`: `args` starts with the word `smoke`.
pub fn main_with_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    let args = SmokeArgs::parse_from(args);
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
    match runtime.block_on(run(&args)) {
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
    let base = Base::parse(&args.http)?;
    let step = args.step_timeout;

    let (status, body) = bounded(step, "GET /readyz", base.request("GET", "/readyz", None)).await?;
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
    let body = serde_json::json!({ "message": { "smoke": tag } }).to_string();
    let sent = Instant::now();
    let (status, answer) = bounded(
        step,
        "POST /broadcast",
        base.request("POST", "/broadcast", Some((&args.token, &body))),
    )
    .await?;
    if status != 202 {
        bail!("POST /broadcast answered {status}: {}", answer.trim());
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

/// `http://host:port` of the instance. The smoke test speaks just enough HTTP/1.1 itself (one
/// request per connection, `Connection: close`) to need no HTTP client dependency.
#[derive(Debug)]
struct Base {
    host: String,
    port: u16,
}

impl Base {
    fn parse(url: &str) -> Result<Base> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("--http must be an http:// URL, got {url:?}"))?;
        let authority = rest.trim_end_matches('/');
        if authority.contains('/') {
            bail!("--http must be a base URL without a path, got {url:?}");
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse()
                    .map_err(|_| anyhow!("bad port in --http {url:?}"))?,
            ),
            None => (authority, 80),
        };
        if host.is_empty() {
            bail!("--http has no host: {url:?}");
        }
        Ok(Base {
            host: host.to_string(),
            port,
        })
    }

    /// One request; returns the status code and the body as text. `auth_body` is the bearer
    /// token and a JSON body.
    async fn request(
        &self,
        method: &str,
        path: &str,
        auth_body: Option<(&str, &str)>,
    ) -> Result<(u16, String)> {
        let mut stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .with_context(|| format!("connecting to {}:{}", self.host, self.port))?;
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}:{}\r\nConnection: close\r\n",
            self.host, self.port
        );
        match auth_body {
            Some((token, body)) => request.push_str(&format!(
                "Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            )),
            None => request.push_str("\r\n"),
        }
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        parse_response(&response)
    }
}

/// Status code and body of a `Connection: close` response (the body is whatever follows the
/// headers; our endpoints answer small JSON bodies, so chunked encoding needs no decoding for
/// an error message).
fn parse_response(raw: &[u8]) -> Result<(u16, String)> {
    let text = String::from_utf8_lossy(raw);
    let status = text
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow!("not an HTTP response: {:?}", text.lines().next()))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_parse_and_bad_ones_are_refused() {
        let base = Base::parse("http://127.0.0.1:8001/").unwrap();
        assert_eq!((base.host.as_str(), base.port), ("127.0.0.1", 8001));
        assert_eq!(Base::parse("http://localhost").unwrap().port, 80);
        assert!(Base::parse("https://127.0.0.1:1").is_err());
        assert!(Base::parse("http://127.0.0.1:1/readyz").is_err());
        assert!(Base::parse("http://127.0.0.1:x").is_err());
    }

    #[test]
    fn responses_give_their_status_and_body() {
        let raw = b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_response(raw).unwrap(), (202, "{}".to_string()));
        assert!(parse_response(b"garbage").is_err());
    }

    #[test]
    fn smoke_options_parse_with_defaults() {
        let args = SmokeArgs::try_parse_from([
            "smoke",
            "--url",
            "ws://127.0.0.1:9/ws/chat/",
            "--http",
            "http://127.0.0.1:9",
            "--token",
            "t",
        ])
        .unwrap();
        assert_eq!(args.broadcast_timeout, Duration::from_secs(5));
        assert_eq!(args.token, "t");
    }
}
