//! Slow consumers: writing a fan-out frame to a socket without letting a stuck write hide that
//! the socket fell behind, and closing such a socket without waiting behind its full buffer.
//!
//! A client that does not read fills its TCP receive buffer and then our send buffer; from
//! then on a write to it does not complete. The socket task is one task per socket, so while
//! it sits in that write it does not look at its fan-out ring, and the ring's `Lagged` only
//! shows at the next receive: the socket stayed counted (local gauge, registry, fd) for as long
//! as the write was allowed to take (two ping intervals), and its 1013 close frame then
//! queued behind the same full buffer for as long again.
//!
//! So a fan-out write that does not complete at its first poll (the TCP buffer is full, which
//! a reading client almost never causes) is watched: every [`LAG_CHECK`] the ring is asked how
//! far behind this socket is, and past `SEND_QUEUE` frames the write is abandoned. The close
//! frame is then tried for [`SLOW_CLOSE_WAIT`] at most and the socket is dropped. The common
//! case, a write that completes at once, costs no timer and no lock.

use std::{future::Future, pin::pin, task::Poll, time::Duration};

use axum::extract::ws::{Message, Utf8Bytes};
use futures_util::SinkExt;
use tokio::time::Instant;

use super::{close::close_frame, session::Socket};
use crate::protocol::close_code;

/// The close reason of a slow consumer.
pub const REASON: &str = "slow consumer: more than SEND_QUEUE frames behind";

/// How often a stuck write asks its ring how far behind the socket is: the delay before a
/// slow consumer is noticed, for one lock of its ring per check (only while a write is stuck).
pub const LAG_CHECK: Duration = Duration::from_millis(100);

/// Longest attempt at the 1013 close frame. It queues behind the rest of the abandoned frame,
/// in a buffer the peer has not drained for at least a [`LAG_CHECK`] (in practice for the
/// time `SEND_QUEUE` frames took to arrive): a peer that reads at all takes a few KB in this
/// time, one that does not never will, and waiting longer only keeps its fd and its place in
/// the registry.
pub const SLOW_CLOSE_WAIT: Duration = Duration::from_millis(100);

/// How a fan-out write ended.
pub enum Forwarded {
    Sent,
    /// The socket fell more than `SEND_QUEUE` frames behind while the write was stuck.
    Behind(usize),
    /// The write failed, or did not complete within `write_timeout`.
    Gone,
}

/// Writes `text` to `socket`; while the write is stuck, asks `behind` whether the socket
/// fell too far behind what it is sent (its fan-out ring by more than `SEND_QUEUE` frames, or
/// its inbox overflowed): `Some(frames behind)` abandons the write (see the module docs).
pub async fn forward<S: Socket>(
    socket: &mut S,
    text: Utf8Bytes,
    behind: impl Fn() -> Option<usize>,
    write_timeout: Duration,
) -> Forwarded {
    let mut write = pin!(socket.send(Message::Text(text)));
    // Nearly every write completes at its first poll: no timer for those.
    let first = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
    match first {
        Poll::Ready(Ok(())) => return Forwarded::Sent,
        Poll::Ready(Err(_)) => return Forwarded::Gone,
        Poll::Pending => {}
    }
    let stuck_since = Instant::now();
    loop {
        match tokio::time::timeout(LAG_CHECK, write.as_mut()).await {
            Ok(Ok(())) => return Forwarded::Sent,
            Ok(Err(_)) => return Forwarded::Gone,
            Err(_) => {
                if let Some(behind) = behind() {
                    return Forwarded::Behind(behind);
                }
                if stuck_since.elapsed() >= write_timeout {
                    return Forwarded::Gone;
                }
            }
        }
    }
}

/// Tries the 1013 close frame for [`SLOW_CLOSE_WAIT`] at most; waits for no reply.
pub async fn close<S: Socket>(socket: &mut S) {
    let frame = close_frame(close_code::TRY_AGAIN_LATER, REASON);
    let _ = tokio::time::timeout(SLOW_CLOSE_WAIT, socket.send(frame)).await;
}
