//! `wsfleet-loadtest smoke`: the smoke test `make promote` runs against each instance of the
//! new colour before any traffic moves to it.
//!
//! One instance, contacted directly (not through nginx), checked end to end:
//! 1. `GET /readyz` answers 200;
//! 2. a socket on a fresh session gets its welcome (count 0), and two text frames are answered
//!    `{"count":1}` then `{"count":2}` (heartbeats in between are skipped);
//! 3. a second socket, and both join a private room `smoke-<nonce>` (new, so its offset is 0);
//!    the first publishes to it and the second receives that message at offset 1; then
//!    `POST /broadcast` with the operator token and `"room"` answers 202 and the second socket
//!    receives it from `operator` at offset 2 (each within `--delivery-timeout`); both leave.
//!
//! Nothing reaches real users: the smoke test never broadcasts to the fleet (a fleet broadcast
//! goes to every live socket, of both colours), and nobody else is in a room named after a
//! nonce. The room's two publications stay in Redis for `HISTORY_TTL`, like any room's.
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
use serde_json::{json, Value};
use tokio::{net::TcpStream, time::Instant};
use tokio_tungstenite::{
    connect_async,
    tungstenite::{protocol::frame::coding::CloseCode, protocol::CloseFrame, Message},
    MaybeTlsStream, WebSocketStream,
};
use wsfleet::{
    config::{parse_duration, Secret},
    protocol::{rooms::RoomMessage, ServerFrame},
};

use crate::{cli::parse_secret, client::token::Minter};

mod frames;

use frames::{answer, base_url, bounded, next_frame, next_room_frame};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Smoke test of one wsfleet instance: /readyz, a counted round trip, publications to a
/// private room received.
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

    /// The fleet's AUTH_SECRET (HS256), when it has authentication on: each smoke socket then
    /// carries a token of its own, for a user of its own (`smoke-<nonce>-a`/`-b`). Prefer the
    /// environment variable: a command line is visible to every user of the machine.
    #[arg(long, env = "LOADTEST_AUTH_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub auth_secret: Option<Secret>,

    /// Longest wait for a publication to the smoke room to reach the other socket.
    #[arg(long, alias = "broadcast-timeout", default_value = "5s", value_parser = parse_duration)]
    pub delivery_timeout: Duration,

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

    let run = nonce();
    let minter = args.auth_secret.as_ref().map(Minter::new);
    let dial = |session: String| open_socket(&args.url, session, minter.as_ref(), step);
    let mut first = dial(format!("smoke-{run}-a")).await?;
    for expected in 1..=2u64 {
        first
            .send(Message::text("smoke"))
            .await
            .context("sending a text frame")?;
        let reply = bounded(step, "a count reply", async {
            loop {
                match next_frame(&mut first).await? {
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

    // A room of its own: both sockets in it, nobody else.
    let room = format!("smoke-{run}");
    let mut second = dial(format!("smoke-{run}-b")).await?;
    let epoch = join(&mut first, &room, step).await?;
    join(&mut second, &room, step).await?;

    let sent = Instant::now();
    let content = json!({ "smoke": format!("{run}-socket") });
    let command = json!({"type": "message", "room": room, "content": content});
    first
        .send(Message::text(command.to_string()))
        .await
        .context("sending the room message")?;
    let what = "the room message to reach the other socket";
    let message = bounded(
        args.delivery_timeout,
        what,
        next_message(&mut second, &room),
    )
    .await?;
    expect_publication(&message, &content, 1, &epoch)?;
    let waited = sent.elapsed();

    let content = json!({ "smoke": format!("{run}-operator") });
    let body = json!({ "room": room, "message": content });
    let (status, answered) = bounded(step, "POST /broadcast to the room", async {
        let request = http
            .post(format!("{base}/broadcast"))
            .bearer_auth(&args.token)
            .json(&body);
        answer(request.send().await?).await
    })
    .await?;
    if status != 202 {
        bail!(
            "POST /broadcast to the room answered {status}: {}",
            answered.trim()
        );
    }
    let what = "the operator's room message to arrive";
    let message = bounded(
        args.delivery_timeout,
        what,
        next_message(&mut second, &room),
    )
    .await?;
    expect_publication(&message, &content, 2, &epoch)?;
    if message.sender != "operator" {
        bail!("the operator's room message came from {:?}", message.sender);
    }

    // Leave at once rather than after PRESENCE_GRACE, then close.
    for socket in [&mut first, &mut second] {
        leave_and_close(socket, &room, step).await;
    }
    Ok(format!(
        "{} readyz 200, counts 1 and 2, room {room}: offsets 1 and 2 received \
         (socket to socket in {} ms)",
        args.http,
        waited.as_millis()
    ))
}

/// A socket on a fresh session, past its welcome (count 0). With `minter`, it carries a token
/// for a user named after the session (so it owns it), valid for the smoke test's few seconds.
async fn open_socket(
    url: &str,
    session: String,
    minter: Option<&Minter>,
    step: Duration,
) -> Result<Socket> {
    let sep = if url.contains('?') { '&' } else { '?' };
    let mut url = format!("{url}{sep}session_uuid={session}");
    if let Some(minter) = minter {
        url.push_str("&token=");
        url.push_str(&minter.mint(&session, TOKEN_LIFETIME));
    }
    let (mut socket, _) = bounded(step, "the WebSocket upgrade", async {
        connect_async(url.as_str())
            .await
            .map_err(anyhow::Error::from)
    })
    .await?;
    match bounded(step, "the welcome frame", next_frame(&mut socket)).await? {
        ServerFrame::Welcome(w) if w.count == 0 => Ok(socket),
        other => bail!("expected a welcome with count 0 for a new session, got {other:?}"),
    }
}

/// Joins `room`, which must be new (offset 0); returns its epoch.
async fn join(socket: &mut Socket, room: &str, step: Duration) -> Result<String> {
    let command = json!({"type": "join", "room": room});
    socket
        .send(Message::text(command.to_string()))
        .await
        .context("sending the join")?;
    let users = bounded(step, "the join's room_users", async {
        loop {
            let frame = next_room_frame(socket).await?;
            if frame["type"] != "user_joined" {
                return Ok(frame);
            }
        }
    })
    .await?;
    if users["type"] != "room_users" || users["room"] != room {
        bail!("join {room} was answered {users}");
    }
    if users["offset"] != 0 {
        bail!("the smoke room {room} is not new (someone else publishes to it?): {users}");
    }
    users["epoch"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("room_users without an epoch: {users}"))
}

/// The next publication to `room` (presence events skipped; an error frame fails).
async fn next_message(socket: &mut Socket, room: &str) -> Result<RoomMessage> {
    loop {
        let frame = next_room_frame(socket).await?;
        match frame["type"].as_str() {
            Some("message") if frame["room"] == room => {
                return serde_json::from_value(frame.clone())
                    .with_context(|| format!("a malformed room message {frame}"));
            }
            Some("error") => bail!("the room answered an error: {frame}"),
            _ => continue,
        }
    }
}

fn expect_publication(got: &RoomMessage, content: &Value, offset: u64, epoch: &str) -> Result<()> {
    if &got.content != content || got.offset != offset || got.epoch != epoch {
        bail!(
            "expected {content} at offset {offset} of epoch {epoch}, got {} at offset {} of epoch {}",
            got.content,
            got.offset,
            got.epoch
        );
    }
    Ok(())
}

/// Best effort: the smoke test passed or failed by now.
async fn leave_and_close(socket: &mut Socket, room: &str, step: Duration) {
    let _ = tokio::time::timeout(step, async {
        let command = json!({"type": "leave", "room": room});
        socket.send(Message::text(command.to_string())).await?;
        while next_room_frame(socket).await?["type"] != "left" {}
        let close = CloseFrame {
            code: CloseCode::Normal,
            reason: "smoke test done".into(),
        };
        socket.send(Message::Close(Some(close))).await?;
        while let Some(Ok(_)) = socket.next().await {}
        Ok::<_, anyhow::Error>(())
    })
    .await;
}

/// A value unique enough to tell this run's session and broadcast from any other.
pub(crate) fn nonce() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}-{:x}", std::process::id(), nanos & 0xffff_ffff_ffff)
}

/// How long a smoke socket's token is valid: longer than any smoke test.
const TOKEN_LIFETIME: Duration = Duration::from_secs(300);

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(args.delivery_timeout, Duration::from_secs(5));
        assert_eq!(args.token, "t");
    }
}
