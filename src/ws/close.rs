//! How a socket's loop ends ([`End`]) and the endings themselves: the close frame and its
//! reply, the silent peer's 1008, the expired token's 1008, the drain's `bye` then 1001, the slow consumer's 1013.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures_util::StreamExt;

use super::{
    session::{Counting, Session, Socket},
    slow,
};
use crate::protocol::{close_code, Bye};

pub const DRAIN_REASON: &str = "server shutting down";
pub const PING_TIMEOUT_REASON: &str = "ping timeout";
pub const FENCED_REASON: &str = "session resumed elsewhere";
pub const TOKEN_EXPIRED_REASON: &str = "token expired";

/// How long a close frame we sent waits for the peer's; long enough for a live peer on any
/// network, short enough that a gone one does not hold the drain.
const CLOSE_REPLY_WAIT: Duration = Duration::from_secs(1);

/// How a socket's loop ended.
pub enum End {
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

impl<C: Counting> Session<C> {
    /// Carries out `end` on `socket`; returns the close code and reason to count and log.
    pub async fn finish<S: Socket>(&self, socket: &mut S, end: End) -> (u16, &'static str) {
        match end {
            End::Close(code, reason) => {
                self.close(socket, code, reason).await;
                (code, reason)
            }
            End::Unresponsive => {
                let frame = close_frame(close_code::POLICY_VIOLATION, PING_TIMEOUT_REASON);
                let _ = self.send(socket, frame).await;
                (close_code::POLICY_VIOLATION, PING_TIMEOUT_REASON)
            }
            End::Drain => {
                self.drain(socket).await;
                (close_code::GOING_AWAY, DRAIN_REASON)
            }
            End::Slow => {
                slow::close(socket).await;
                (close_code::TRY_AGAIN_LATER, slow::REASON)
            }
            End::Peer(1006) => (1006, "peer vanished"),
            End::Peer(code) => (code, "closed by the client"),
        }
    }

    async fn close<S: Socket>(&self, socket: &mut S, code: u16, reason: &'static str) {
        if self.send(socket, close_frame(code, reason)).await.is_ok() {
            await_close_reply(socket).await;
        }
    }

    /// Leaves in the drain window: a random moment within `DRAIN_SPREAD` so thousands of
    /// sockets do not all reconnect at once, then `bye` and close 1001. No frame is read
    /// any more: whatever the client sent after its last reply was not counted, and it
    /// resends that after resuming.
    async fn drain<S: Socket>(&self, socket: &mut S) {
        let spread = self.settings.drain_spread;
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

pub fn close_frame(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }))
}

/// Waits briefly for the peer's close frame so the close handshake completes cleanly.
async fn await_close_reply<S: Socket>(socket: &mut S) {
    let _ = tokio::time::timeout(CLOSE_REPLY_WAIT, async {
        while let Some(Ok(message)) = socket.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Maps a read error to how the socket ends.
pub fn classify(error: axum::Error) -> End {
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
