//! One socket's life: welcome, then a single task that `select!`s over the client's frames,
//! the fan-out (which also carries the drain signal) and one timer (pings and silence),
//! until one of them ends it. Every branch is polled at each wake-up of the task, so there
//! are as few as there can be: each costs CPU on every message and every broadcast.
//!
//! One task per socket, no writer task: a reply is written before the next frame is read, so
//! replies keep their order and a socket costs one task. Every write is bounded by two ping
//! intervals; a peer that cannot take a frame for that long is dead anyway.

use std::{
    pin::pin,
    time::{Duration, Instant},
};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt;
use tokio::sync::broadcast::{error::RecvError, Receiver};
use tracing::Instrument;

use super::{
    rate_limit::TokenBucket,
    slow::{self, Forwarded},
    Accepted,
};
use crate::{
    counter::{Counted, SessionCounter},
    fanout::Fanned,
    protocol::{close_code, Bye, CountReply, ErrorFrame, Welcome},
    state::SharedState,
};

const DRAIN_REASON: &str = "server shutting down";
const PING_TIMEOUT_REASON: &str = "ping timeout";
const FENCED_REASON: &str = "session resumed elsewhere";

/// How a socket's loop ended.
enum End {
    /// Close the socket with this code and reason.
    Close(u16, &'static str),
    /// Nothing heard for two ping intervals: send the close frame (1008) but do not wait for
    /// a reply from a peer that is most likely gone.
    Unresponsive,
    /// The drain asked this socket to go: `bye`, then 1001.
    Drain,
    /// More than `SEND_QUEUE` fan-out frames behind: 1013, tried briefly, then released
    /// (see [`super::slow`]).
    Slow,
    /// The peer closed (with this code, 1005 when it gave none) or vanished (1006).
    Peer(u16),
}

/// The socket was lost while writing to it.
struct Gone;

struct Session {
    app: SharedState,
    conn_id: u64,
    /// This socket's side of the session counter; its count is the `bye` total.
    counter: SessionCounter,
    bucket: Option<TokenBucket>,
    write_timeout: Duration,
}

pub async fn run(socket: WebSocket, app: SharedState, accepted: Accepted) {
    let conn_id = accepted.conn_id;
    // The upgrade's request id links nginx's access log to this socket's events.
    let span = tracing::info_span!(
        "conn",
        conn_id,
        session = %accepted.session,
        request_id = %accepted.request_id
    );
    run_inner(socket, app, accepted, conn_id)
        .instrument(span)
        .await
}

async fn run_inner(mut socket: WebSocket, app: SharedState, accepted: Accepted, conn_id: u64) {
    let Accepted {
        session,
        token,
        claim,
        slot: _slot,
        ..
    } = accepted;
    let (count, resumed) = (claim.count, claim.existed);
    // Subscribe before announcing presence so that nothing published after the welcome is lost.
    let fanout = app.fanout.subscribe(conn_id);
    // A socket that subscribed after the drain was told on the rings sees its flag here.
    let drain_at_once = app.fanout.is_draining();
    app.metrics.connections_opened.inc();
    app.metrics.connections_active.inc();
    // A small future: the registry's writer task makes the Redis call (src/registry_writes.rs),
    // so no ~11 KB fred future is allocated per connect or held in this task.
    if let Err(error) = app.registry.add_connection(conn_id, session.clone()).await {
        tracing::warn!(%error, "registering the connection failed; the next lease renewal repairs it");
    }
    tracing::info!(
        count,
        resumed,
        repaired = claim.repaired,
        "connection opened"
    );

    let mut s = Session {
        conn_id,
        counter: app.counter.for_socket(&session, &token, claim),
        bucket: app
            .settings
            .rate_limit
            .map(|rate| TokenBucket::new(rate, Instant::now())),
        write_timeout: app.settings.ping_interval * 2,
        app: app.clone(),
    };
    let welcome = Welcome {
        session_uuid: session.to_string(),
        count,
        resumed,
        instance: app.registry.instance_id().to_string(),
        repaired: claim.repaired,
    };
    let end = match s.send_json(&mut socket, &welcome).await {
        Ok(()) if drain_at_once => End::Drain,
        Ok(()) => s.serve(&mut socket, fanout).await,
        Err(Gone) => End::Peer(1006),
    };
    let (code, reason) = match end {
        End::Close(code, reason) => {
            s.close(&mut socket, code, reason).await;
            (code, reason)
        }
        End::Unresponsive => {
            let frame = CloseFrame {
                code: close_code::POLICY_VIOLATION,
                reason: Utf8Bytes::from_static(PING_TIMEOUT_REASON),
            };
            let _ = s.send(&mut socket, Message::Close(Some(frame))).await;
            (close_code::POLICY_VIOLATION, PING_TIMEOUT_REASON)
        }
        End::Drain => {
            s.drain(&mut socket).await;
            (close_code::GOING_AWAY, DRAIN_REASON)
        }
        End::Slow => {
            slow::close(&mut socket).await;
            (close_code::TRY_AGAIN_LATER, slow::REASON)
        }
        End::Peer(1006) => (1006, "peer vanished"),
        End::Peer(code) => (code, "closed by the client"),
    };
    app.metrics.closed(code);
    app.metrics.connections_active.dec();
    if let Err(error) = app.registry.remove_connection(s.conn_id).await {
        tracing::warn!(%error, "unregistering the connection failed; its lease expires it");
    }
    tracing::info!(code, reason, total = s.counter.count(), "connection closed");
}

impl Session {
    async fn serve(&mut self, socket: &mut WebSocket, fanout: Receiver<Fanned>) -> End {
        let ping_every = self.app.settings.ping_interval;
        let dead_after = ping_every * 2;
        let mut last_heard = Instant::now();
        let mut next_ping = last_heard + ping_every;
        // One timer for pings, silence and the session's TTL: it fires at the next ping, when
        // the peer has been silent for two intervals, or when the session's TTL needs renewing,
        // whichever comes first. It is not reset per
        // frame (that would touch the timer wheel on every message): when it fires for a
        // peer heard from since, it is just armed again.
        let mut timer = pin!(tokio::time::sleep_until(tokio::time::Instant::from_std(
            next_ping.min(self.counter.touch_due())
        )));
        // Lives across loop turns instead of being made anew on each: a pending receive holds
        // a waiter in its ring's list, and making and dropping it each turn took that
        // list's lock twice per message.
        let mut fanout_next = pin!(next_fanout(fanout));
        loop {
            // Between frames, before reading another: a socket whose client keeps sending
            // would otherwise take its next frame before the drain on its ring.
            if self.app.fanout.is_draining() {
                return End::Drain;
            }
            tokio::select! {
                biased;
                frame = socket.recv() => {
                    let arrived = Instant::now();
                    last_heard = arrived;
                    match frame {
                        Some(Ok(Message::Text(text))) => {
                            if let Some(end) = self.on_text(socket, text, arrived).await {
                                return end;
                            }
                        }
                        Some(Ok(Message::Binary(_))) => {
                            return End::Close(close_code::UNSUPPORTED_DATA, "binary frames are not supported");
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                        Some(Ok(Message::Close(frame))) => {
                            // tungstenite queued the echo of the peer's close frame; write it
                            // out, or the client sees 1006 instead of a clean close.
                            let _ = tokio::time::timeout(self.write_timeout, socket.flush()).await;
                            return End::Peer(frame.map_or(1005, |f| f.code));
                        }
                        Some(Err(error)) => return classify(error),
                        None => return End::Peer(1006),
                    }
                }
                (fanned, fanout) = fanout_next.as_mut() => {
                    match fanned {
                        // A write stuck behind a full buffer still watches the ring.
                        Ok(Fanned::Frame(text)) => {
                            let settings = &self.app.settings;
                            match slow::forward(socket, text, &fanout, settings.send_queue, self.write_timeout).await {
                                Forwarded::Sent => self.app.metrics.messages_sent.inc(),
                                Forwarded::Behind(behind) => return self.slow(behind),
                                Forwarded::Gone => return End::Peer(1006),
                            };
                        }
                        Ok(Fanned::Drain) => return End::Drain,
                        Err(RecvError::Lagged(skipped)) => return self.slow(skipped as usize),
                        // Only when the process is going away.
                        Err(RecvError::Closed) => return End::Drain,
                    }
                    fanout_next.set(next_fanout(fanout));
                }
                () = timer.as_mut() => {
                    let now = Instant::now();
                    if now.duration_since(last_heard) >= dead_after {
                        tracing::info!("no pong for two ping intervals");
                        return End::Unresponsive;
                    }
                    if now >= next_ping {
                        next_ping = now + ping_every;
                        if self.send(socket, Message::Ping(Default::default())).await.is_err() {
                            return End::Peer(1006);
                        }
                    }
                    // An open socket keeps its session alive, however long it is idle.
                    if now >= self.counter.touch_due() {
                        if let Err(error) = self.counter.touch().await {
                            tracing::debug!(%error, "renewing the session's TTL failed; retried in half a TTL");
                        }
                    }
                    let wake = next_ping.min(last_heard + dead_after).min(self.counter.touch_due());
                    timer.as_mut().reset(tokio::time::Instant::from_std(wake));
                }
            }
        }
    }

    fn slow(&self, behind: usize) -> End {
        self.app.metrics.slow_consumer_closes.inc();
        tracing::warn!(behind, "slow consumer: fell behind the fan-out");
        End::Slow
    }

    /// Counts one text frame and answers it. `Some` ends the socket.
    async fn on_text(
        &mut self,
        socket: &mut WebSocket,
        _text: Utf8Bytes,
        arrived: Instant,
    ) -> Option<End> {
        self.app.metrics.messages_received.inc();
        if let Some(bucket) = &mut self.bucket {
            if !bucket.try_take(arrived) {
                return Some(End::Close(
                    close_code::POLICY_VIOLATION,
                    "rate limit exceeded",
                ));
            }
        }
        // A small future (a channel send and a oneshot): the Redis call itself runs in the
        // counter's batching task, not in this socket's state machine.
        let sent = match self.counter.increment().await {
            Ok(Counted::Count(count)) => self.send_json(socket, &CountReply { count }).await,
            Ok(Counted::Fenced) => {
                tracing::info!("a newer socket resumed the session; closing this one");
                return Some(End::Close(close_code::POLICY_VIOLATION, FENCED_REASON));
            }
            Err(error) => {
                crate::warn_throttled!(%error, "message not counted: redis unavailable");
                self.send_json(socket, &ErrorFrame::unavailable()).await
            }
        };
        self.app
            .metrics
            .message_duration
            .observe(arrived.elapsed().as_secs_f64());
        sent.err().map(|Gone| End::Peer(1006))
    }

    async fn send_json<T: serde::Serialize>(
        &self,
        socket: &mut WebSocket,
        frame: &T,
    ) -> Result<(), Gone> {
        let text = serde_json::to_string(frame).expect("frames serialize");
        self.send(socket, Message::Text(text.into())).await
    }

    async fn send(&self, socket: &mut WebSocket, message: Message) -> Result<(), Gone> {
        let counts = matches!(message, Message::Text(_));
        match tokio::time::timeout(self.write_timeout, socket.send(message)).await {
            Ok(Ok(())) => {
                if counts {
                    self.app.metrics.messages_sent.inc();
                }
                Ok(())
            }
            _ => Err(Gone),
        }
    }

    async fn close(&self, socket: &mut WebSocket, code: u16, reason: &'static str) {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        };
        if self.send(socket, Message::Close(Some(frame))).await.is_ok() {
            await_close_reply(socket).await;
        }
    }

    /// Leaves in the drain window: a random moment within `DRAIN_SPREAD` so thousands of
    /// sockets do not all reconnect at once, then `bye` and close 1001. No frame is read
    /// any more: whatever the client sent after its last reply was not counted, and it
    /// resends that after resuming.
    async fn drain(&self, socket: &mut WebSocket) {
        let spread = self.app.settings.drain_spread;
        if !spread.is_zero() {
            let delay = spread.mul_f64(fastrand::f64());
            tokio::time::sleep(delay).await;
        }
        let bye = Bye {
            bye: true,
            total: self.counter.count(),
            // A jittered hint; the reconnects of one drain land over about a second.
            reconnect_after_ms: fastrand::u64(100..1100),
        };
        if self.send_json(socket, &bye).await.is_ok() {
            self.close(socket, close_code::GOING_AWAY, DRAIN_REASON)
                .await;
        }
    }
}

/// The next fan-out item, with the receiver handed back so the next wait can reuse it.
async fn next_fanout(
    mut fanout: Receiver<Fanned>,
) -> (Result<Fanned, RecvError>, Receiver<Fanned>) {
    let frame = fanout.recv().await;
    (frame, fanout)
}

/// Waits briefly for the peer's close frame so the close handshake completes cleanly.
async fn await_close_reply(socket: &mut WebSocket) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Maps a read error to how the socket ends.
fn classify(error: axum::Error) -> End {
    use tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
    match error.into_inner().downcast::<WsError>() {
        Ok(e) => match *e {
            WsError::Capacity(CapacityError::MessageTooLong { .. }) => {
                End::Close(close_code::MESSAGE_TOO_BIG, "message too big")
            }
            WsError::Capacity(_) => End::Close(close_code::MESSAGE_TOO_BIG, "frame too big"),
            WsError::Utf8(_) => {
                End::Close(close_code::INVALID_PAYLOAD, "text frame is not valid UTF-8")
            }
            // A peer that vanished without a close frame is gone, not misbehaving.
            WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => End::Peer(1006),
            WsError::Protocol(_) => End::Close(close_code::PROTOCOL_ERROR, "protocol error"),
            _ => End::Peer(1006),
        },
        Err(_) => End::Peer(1006),
    }
}
