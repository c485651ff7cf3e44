//! What a socket's loop ([`super::session::Session`]) is built from, as seams for its tests:
//! any [`Socket`] (axum's `WebSocket` in the server, channels in src/ws/socket_tests/), any
//! [`Counting`] (the session counter in the server) and its [`SocketSettings`].

use std::{future::Future, time::Duration};

use axum::extract::ws::Message;
use futures_util::{Sink, Stream};
use tokio::time::Instant;

use crate::{
    config::Settings,
    counter::{Counted, SessionCounter},
    store::StoreError,
};

/// What a socket's loop reads and writes: axum's `WebSocket`, or a pair of channels in tests.
pub trait Socket:
    Stream<Item = Result<Message, axum::Error>> + Sink<Message, Error = axum::Error> + Unpin + Send
{
}

impl<T> Socket for T where
    T: Stream<Item = Result<Message, axum::Error>>
        + Sink<Message, Error = axum::Error>
        + Unpin
        + Send
{
}

/// What a socket's loop needs of its session's counter ([`SessionCounter`] in the server).
pub trait Counting: Send {
    /// Counts one text frame (see [`SessionCounter::increment`]).
    fn increment(&mut self) -> impl Future<Output = Result<Counted, StoreError>> + Send;
    /// The highest count told to the client: the `bye` total.
    fn count(&self) -> u64;
    /// When the session's TTL next needs renewing.
    fn touch_due(&self) -> Instant;
    /// Renews the session's TTL.
    fn touch(&mut self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

impl Counting for SessionCounter {
    fn increment(&mut self) -> impl Future<Output = Result<Counted, StoreError>> + Send {
        SessionCounter::increment(self)
    }
    fn count(&self) -> u64 {
        SessionCounter::count(self)
    }
    fn touch_due(&self) -> Instant {
        Instant::from_std(SessionCounter::touch_due(self))
    }
    fn touch(&mut self) -> impl Future<Output = Result<(), StoreError>> + Send {
        SessionCounter::touch(self)
    }
}

/// The settings a socket's loop uses (a copy of the few it needs from [`Settings`]).
#[derive(Debug, Clone, Copy)]
pub struct SocketSettings {
    pub ping_interval: Duration,
    pub send_queue: usize,
    pub drain_spread: Duration,
    pub rate_limit: Option<u32>,
}

impl From<&Settings> for SocketSettings {
    fn from(s: &Settings) -> Self {
        SocketSettings {
            ping_interval: s.ping_interval,
            send_queue: s.send_queue,
            drain_spread: s.drain_spread,
            rate_limit: s.rate_limit,
        }
    }
}
