//! One socket's life: welcome, then a single task that `select!`s over the client's frames,
//! the fan-out (which also carries the drain signal) and one timer (pings and silence),
//! until one of them ends it (the endings are in [`super::close`]; what a fan-out item becomes,
//! broadcasts' gap filling included, is in [`super::broadcasts`]). Every branch is polled at
//! each wake-up of the task, so there are as few as there can be: each costs CPU on every
//! message and every broadcast.
//!
//! One task per socket, no writer task: a reply is written before the next frame is read, so
//! replies keep their order and a socket costs one task. Every write is bounded by two ping
//! intervals; a peer that cannot take a frame for that long is dead anyway.
//!
//! The loop ([`Session`]) knows nothing of the network or of Redis: it takes any
//! `Sink + Stream` of messages (axum's `WebSocket` in the server, channels in its tests, see
//! src/ws/socket_tests/) and any [`Counting`] (the session counter in the server). Everything else
//! a socket does (the registry, the open and close counts, its log span, its rooms and
//! broadcast position at the start) is in src/ws/connection.rs.

use std::{pin::pin, sync::Arc, time::Duration};

use axum::extract::ws::{Message, Utf8Bytes};
use futures_util::{SinkExt, StreamExt};
use tokio::{sync::broadcast::Receiver, time::Instant};

use super::{
    broadcasts::next_fanout,
    close::{classify, End, FENCED_REASON, TOKEN_EXPIRED_REASON},
    rate_limit::TokenBucket,
    rooms::SocketRooms,
    slow::{self, Forwarded},
};
use crate::{
    counter::Counted,
    fanout::{Fanned, Fanout},
    history::{self, Cursor, History},
    inbox::{Delivery, Inbox},
    metrics::Metrics,
    protocol::{
        close_code,
        rooms::{parse_command, RoomError, RoomErrorCode},
        CountReply, ErrorFrame, Welcome,
    },
};

pub use super::parts::{Counting, Socket, SocketSettings};

/// The socket was lost while writing to it.
pub struct Gone;

/// One socket's loop and what it needs: no Redis, no network of its own.
pub struct Session<C> {
    pub settings: SocketSettings,
    /// Its drain flag is checked between frames.
    pub fanout: Arc<Fanout>,
    pub metrics: Arc<Metrics>,
    /// This socket's side of the session counter; its count is the `bye` total.
    pub counter: C,
    /// This socket's rooms (`None` in tests of the loop without Redis: room commands are then
    /// answered `unavailable`).
    pub rooms: Option<SocketRooms>,
    /// How far the client has been given the broadcast stream (`None`: not known).
    pub broadcasts: Option<Cursor>,
    /// Frames sent right after the welcome: the broadcasts a resuming client missed.
    pub backlog: Vec<String>,
    /// Where to read broadcasts that never came live (`None` in tests without Redis).
    pub broadcast_history: Option<(Arc<History>, history::Stream)>,
    /// When the socket's token expires: it is closed 1008 `token expired` then, by the loop's
    /// one timer. `None`: never (no authentication).
    pub expires: Option<Instant>,
    bucket: Option<TokenBucket>,
    /// How long one write may take (two ping intervals).
    pub(super) write_timeout: Duration,
}

impl<C: Counting> Session<C> {
    pub fn new(
        settings: SocketSettings,
        fanout: Arc<Fanout>,
        metrics: Arc<Metrics>,
        counter: C,
    ) -> Self {
        Session {
            bucket: settings
                .rate_limit
                .map(|rate| TokenBucket::new(rate, Instant::now().into_std())),
            write_timeout: settings.ping_interval * 2,
            settings,
            fanout,
            metrics,
            counter,
            rooms: None,
            broadcasts: None,
            backlog: Vec::new(),
            broadcast_history: None,
            expires: None,
        }
    }

    /// The welcome, the loop, then the ending: returns the close code and reason.
    pub async fn live<S: Socket>(
        &mut self,
        socket: &mut S,
        welcome: &Welcome,
        fanout: Receiver<Fanned>,
        inbox: Option<Inbox>,
    ) -> (u16, &'static str) {
        let end = match self.greet(socket, welcome).await {
            Ok(()) => self.serve(socket, fanout, inbox).await,
            Err(Gone) => End::Peer(1006),
        };
        self.finish(socket, end).await
    }

    /// The welcome, then the recovered broadcasts (before anything live).
    async fn greet<S: Socket>(&mut self, socket: &mut S, welcome: &Welcome) -> Result<(), Gone> {
        self.send_json(socket, welcome).await?;
        for frame in std::mem::take(&mut self.backlog) {
            self.send(socket, Message::Text(frame.into())).await?;
        }
        Ok(())
    }

    async fn serve<S: Socket>(
        &mut self,
        socket: &mut S,
        fanout: Receiver<Fanned>,
        mut inbox: Option<Inbox>,
    ) -> End {
        let ping_every = self.settings.ping_interval;
        let dead_after = ping_every * 2;
        let mut last_heard = Instant::now();
        let mut next_ping = last_heard + ping_every;
        // One timer for pings, silence, the session's TTL and the token's expiry: it fires at
        // the next ping, when the peer has been silent for two intervals, when the session's
        // TTL needs renewing or when the token expires, whichever comes first. It is not reset
        // per frame (that would touch the timer wheel on every message): when it fires for a
        // peer heard from since, it is just armed again.
        let mut timer = pin!(tokio::time::sleep_until(
            self.until_expiry(next_ping.min(self.counter.touch_due()))
        ));
        // Lives across loop turns instead of being made anew on each: a pending receive holds
        // a waiter in its ring's list, and making and dropping it each turn took that
        // list's lock twice per message.
        let mut fanout_next = pin!(next_fanout(fanout));
        loop {
            // Between frames, before reading another: a socket whose client keeps sending
            // would otherwise take its next frame before the drain on its ring. Also the
            // first thing a socket that subscribed after the drain began sees.
            if self.fanout.is_draining() {
                return End::Drain;
            }
            tokio::select! {
                biased;
                frame = socket.next() => {
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
                    if let Some(end) = self.on_fanned(socket, fanned, &fanout).await {
                        return end;
                    }
                    fanout_next.set(next_fanout(fanout));
                }
                Some(delivery) = next_delivery(&mut inbox), if inbox.is_some() => {
                    if let Some(end) = self.on_delivery(socket, delivery, inbox.as_ref()).await {
                        return end;
                    }
                }
                () = timer.as_mut() => {
                    let now = Instant::now();
                    if self.expires.is_some_and(|expires| now >= expires) {
                        tracing::info!("token expired");
                        return End::Close(close_code::POLICY_VIOLATION, TOKEN_EXPIRED_REASON);
                    }
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
                    timer.as_mut().reset(self.until_expiry(wake));
                }
            }
        }
    }

    /// Forwards a frame from the inbox (rooms, messages to the session). `Some` ends the socket.
    async fn on_delivery<S: Socket>(
        &mut self,
        socket: &mut S,
        delivery: Delivery,
        inbox: Option<&Inbox>,
    ) -> Option<End> {
        let inbox = inbox?;
        // A frame for this socket was dropped: it cannot be told everything in order any
        // more; it resumes and recovers from history.
        if inbox.overflowed() {
            return Some(self.slow(inbox.len()));
        }
        for text in self.rooms.as_mut()?.deliver(delivery).await {
            let behind = || inbox.overflowed().then(|| inbox.len());
            match slow::forward(socket, text, behind, self.write_timeout).await {
                Forwarded::Sent => {
                    self.metrics.messages_sent.inc();
                }
                Forwarded::Behind(behind) => return Some(self.slow(behind)),
                Forwarded::Gone => return Some(End::Peer(1006)),
            }
        }
        None
    }

    /// `wake`, or the token's expiry if that comes first.
    fn until_expiry(&self, wake: Instant) -> Instant {
        self.expires.map_or(wake, |expires| wake.min(expires))
    }

    pub(super) fn slow(&self, behind: usize) -> End {
        self.metrics.slow_consumer_closes.inc();
        tracing::warn!(behind, "slow consumer: fell behind the fan-out");
        End::Slow
    }

    /// Counts one text frame and answers it. `Some` ends the socket.
    async fn on_text<S: Socket>(
        &mut self,
        socket: &mut S,
        text: Utf8Bytes,
        arrived: Instant,
    ) -> Option<End> {
        self.metrics.messages_received.inc();
        if let Some(bucket) = &mut self.bucket {
            if !bucket.try_take(arrived.into_std()) {
                return Some(End::Close(
                    close_code::POLICY_VIOLATION,
                    "rate limit exceeded",
                ));
            }
        }
        if let Some(command) = parse_command(&text) {
            return self.on_room_command(socket, command).await;
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
        self.metrics
            .message_duration
            .observe(arrived.elapsed().as_secs_f64());
        sent.err().map(|Gone| End::Peer(1006))
    }

    /// Answers a room command (not counted). `Some` ends the socket.
    async fn on_room_command<S: Socket>(
        &mut self,
        socket: &mut S,
        command: Result<crate::protocol::rooms::RoomCommand, crate::protocol::rooms::BadCommand>,
    ) -> Option<End> {
        let frames = match &mut self.rooms {
            Some(rooms) => Box::pin(rooms.command(command)).await,
            None => vec![
                serde_json::to_string(&RoomError::new(RoomErrorCode::Unavailable, None))
                    .expect("frames serialize"),
            ],
        };
        for frame in frames {
            if self
                .send(socket, Message::Text(frame.into()))
                .await
                .is_err()
            {
                return Some(End::Peer(1006));
            }
        }
        None
    }

    pub(super) async fn send_json<S: Socket, T: serde::Serialize>(
        &self,
        socket: &mut S,
        frame: &T,
    ) -> Result<(), Gone> {
        let text = serde_json::to_string(frame).expect("frames serialize");
        self.send(socket, Message::Text(text.into())).await
    }

    pub(super) async fn send<S: Socket>(
        &self,
        socket: &mut S,
        message: Message,
    ) -> Result<(), Gone> {
        let counts = matches!(message, Message::Text(_));
        match tokio::time::timeout(self.write_timeout, socket.send(message)).await {
            Ok(Ok(())) => {
                if counts {
                    self.metrics.messages_sent.inc();
                }
                Ok(())
            }
            _ => Err(Gone),
        }
    }
}

/// The next frame of the inbox; never, without one.
async fn next_delivery(inbox: &mut Option<Inbox>) -> Option<Delivery> {
    match inbox {
        Some(inbox) => inbox.receiver.recv().await,
        None => std::future::pending().await,
    }
}
