//! `wsfleet-ceiling`: a bench-only WebSocket server, the ceiling wsfleet is measured against in
//! docs/BENCHMARKS.md. It speaks the client side of docs/PROTOCOL.md (welcome frame, one
//! `{"count": n}` reply per text frame, in order) with the same frame types and the same
//! serialisation as wsfleet, but counts in process memory instead of Redis and does nothing
//! else: no registry, no fan-out, no metrics, no rate limit, no HTTP routes. What wsfleet costs
//! on top of this is the price of Redis and of everything that makes it a fleet.
//!
//! Counters are kept per session (a map looked up once per socket; an atomic per message), so
//! `--session-prefix` reruns and resumed sessions continue their counts as they would on the
//! fleet. Buffers are 4 KiB for reading and writing: tungstenite's 128 KiB defaults cost ~3x in
//! throughput and ~100 KB per socket on this machine. (wsfleet reads into 512 bytes and writes
//! unbuffered, src/ws/mod.rs, to keep idle sockets small; the ceiling keeps 4 KiB, which is no
//! slower, so the ratio does not flatter wsfleet.)
//!
//! With `--fan-out` it also takes `POST /broadcast` and hands each broadcast to every socket of
//! the process ([`broadcast`]): the ceiling of the bench's fan-out section. Without it, a
//! socket's loop is the plain read-reply loop above, so the closed-loop ceiling pays nothing
//! for fan-out.
//!
//! Loopback only by default; never meant to face a network.

mod broadcast;

use std::{
    collections::HashMap,
    net::SocketAddr,
    process::ExitCode,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use anyhow::{Context, Result};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::{
    accept_hdr_async_with_config,
    tungstenite::{
        handshake::server::{Request, Response},
        protocol::{frame::coding::CloseCode, CloseFrame, WebSocketConfig},
        Message, Utf8Bytes,
    },
};
use wsfleet::protocol::{validate_session_id, CountReply, Welcome};

/// A minimal WebSocket counter server without Redis: the throughput ceiling for wsfleet.
#[derive(Debug, Parser)]
#[command(name = "wsfleet-ceiling", version)]
struct Cli {
    /// Address to listen on (keep it on loopback). Same variable as wsfleet's, so the fleet
    /// scripts start it like an instance.
    #[arg(long, env = "BIND_ADDR", default_value = "127.0.0.1:8099")]
    bind: SocketAddr,
    /// Also take `POST /broadcast` (no token) and send each broadcast to every socket.
    /// (`CEILING_FAN_OUT=1`, `true`, `yes` or `on` in the environment does the same.)
    #[arg(long, env = "CEILING_FAN_OUT", value_parser = clap::builder::BoolishValueParser::new())]
    fan_out: bool,
}

/// The instance id the welcome frame names.
const INSTANCE: &str = "ceiling";

/// Session id → its counter. A socket takes its counter's `Arc` once, at connect; per message
/// only the atomic is touched, so sockets never contend on the map while they talk.
#[derive(Default)]
struct Sessions {
    counters: Mutex<HashMap<String, Arc<AtomicU64>>>,
    /// Names sessions the client did not name: `ceiling-<n>`.
    next_anonymous: AtomicU64,
}

impl Sessions {
    /// The session's counter and whether it existed before (the welcome's `resumed`).
    fn open(&self, requested: Option<String>) -> (String, Arc<AtomicU64>, bool) {
        let id = requested.unwrap_or_else(|| {
            let n = self.next_anonymous.fetch_add(1, Ordering::Relaxed);
            format!("ceiling-{n}")
        });
        let mut counters = self.counters.lock().expect("sessions lock poisoned");
        let resumed = counters.contains_key(&id);
        let counter = counters.entry(id.clone()).or_default().clone();
        (id, counter, resumed)
    }
}

/// Same buffer sizes as wsfleet's sockets (src/ws/mod.rs), see the module comment.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024)
        .max_write_buffer_size(64 * 1024)
        .max_message_size(Some(64 * 1024))
        .max_frame_size(Some(64 * 1024))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match serve(cli.bind, cli.fan_out).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("wsfleet-ceiling: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(bind: SocketAddr, fan_out: bool) -> Result<()> {
    // Beyond the soft open-file limit a capacity run would fail at accept; take the hard one.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let listener = TcpListener::bind(bind)
        .await
        .with_context(|| format!("failed to bind {bind}"))?;
    // The address really bound (port 0 picks one): tests and scripts read it from this line.
    let bound = listener
        .local_addr()
        .context("failed to read the bound address")?;
    eprintln!("wsfleet-ceiling: listening on ws://{bound}/ws/chat/");
    let sessions = Arc::new(Sessions::default());
    let ring = fan_out.then(|| Arc::new(tokio::sync::broadcast::channel(broadcast::RING).0));
    let mut shutdown = std::pin::pin!(shutdown_signal());
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    tokio::spawn(connection(tcp, sessions.clone(), ring.clone()));
                }
                // Out of file descriptors and the like: keep serving the sockets we have.
                Err(error) => {
                    eprintln!("wsfleet-ceiling: accept: {error}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            _ = &mut shutdown => return Ok(()),
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The `session_uuid` (or `session_id`) query parameter, when given and valid.
fn requested_session(request: &Request) -> Option<String> {
    let query = request.uri().query()?;
    let mut alias = None;
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if value.is_empty() || validate_session_id(value).is_err() {
            continue;
        }
        match key {
            "session_uuid" => return Some(value.to_string()),
            "session_id" => alias = Some(value.to_string()),
            _ => {}
        }
    }
    alias
}

type Ring = Arc<tokio::sync::broadcast::Sender<Utf8Bytes>>;

/// One accepted connection: a `POST /broadcast`, or a WebSocket.
async fn connection(tcp: TcpStream, sessions: Arc<Sessions>, ring: Option<Ring>) {
    if broadcast::is_post(&tcp).await {
        broadcast::serve(tcp, ring.as_deref()).await;
    } else {
        let fanned = ring.map(|ring| ring.subscribe());
        socket(tcp, sessions, fanned).await;
    }
}

/// One socket: welcome, then a count reply per text frame until the peer goes, and with
/// `--fan-out` every broadcast as it comes.
async fn socket(
    tcp: TcpStream,
    sessions: Arc<Sessions>,
    mut fanned: Option<tokio::sync::broadcast::Receiver<Utf8Bytes>>,
) {
    let _ = tcp.set_nodelay(true);
    let mut requested = None;
    // The Result type is tungstenite's Callback signature, not ours to shrink.
    #[allow(clippy::result_large_err)]
    let capture = |request: &Request, response: Response| {
        requested = requested_session(request);
        Ok(response)
    };
    let Ok(mut ws) = accept_hdr_async_with_config(tcp, capture, Some(ws_config())).await else {
        return;
    };
    let (session_uuid, counter, resumed) = sessions.open(requested);
    let welcome = Welcome {
        session_uuid,
        count: counter.load(Ordering::SeqCst),
        resumed,
        instance: INSTANCE.to_string(),
        // The ceiling never loses a counter, so it never repairs one.
        repaired: false,
        // Nor has rooms or a broadcast stream: it is the counter's ceiling only.
        ..Default::default()
    };
    if send_json(&mut ws, &welcome).await.is_err() {
        return;
    }
    loop {
        let frame = match &mut fanned {
            None => ws.next().await,
            Some(ring) => tokio::select! {
                frame = ws.next() => frame,
                fanned = ring.recv() => {
                    let Ok(text) = fanned else { return };
                    if ws.send(Message::Text(text)).await.is_err() {
                        return;
                    }
                    continue;
                }
            },
        };
        let Some(frame) = frame else { return };
        match frame {
            Ok(Message::Text(_)) => {
                let count = counter.fetch_add(1, Ordering::SeqCst) + 1;
                if send_json(&mut ws, &CountReply { count }).await.is_err() {
                    return;
                }
            }
            Ok(Message::Binary(_)) => {
                let frame = CloseFrame {
                    code: CloseCode::Unsupported,
                    reason: "binary frames are not supported".into(),
                };
                let _ = ws.close(Some(frame)).await;
            }
            // Pings are answered and closes echoed by tungstenite itself on the next read.
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

async fn send_json<S, T>(ws: &mut S, frame: &T) -> Result<(), ()>
where
    S: futures_util::Sink<Message> + Unpin,
    T: serde::Serialize,
{
    let text = serde_json::to_string(frame).map_err(drop)?;
    ws.send(Message::text(text)).await.map_err(drop)
}
