//! What a socket's loop does with an item of the fan-out ring: a fleet frame or a broadcast
//! goes to the client (a client too far behind the ring is a slow consumer, see
//! [`super::slow`]), the drain ends the loop. A broadcast carries its offset in the broadcast
//! stream: one the client has seen is skipped, and when broadcasts before it never reached
//! this instance (pub/sub is at most once), the gap is filled from the broadcast history
//! first, so the client sees the stream in order (docs/PROTOCOL.md, "History and recovery").

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use tokio::sync::broadcast::{error::RecvError, Receiver};

use super::{
    close::End,
    session::{Counting, Session, Socket},
    slow::{self, Forwarded},
};
use crate::{fanout::Fanned, history::Cursor};

impl<C: Counting> Session<C> {
    /// Forwards one item of the fan-out ring (`fanout`: the ring, to see how far behind the
    /// socket is while a write waits). `Some` ends the socket.
    pub(super) async fn on_fanned<S: Socket>(
        &mut self,
        socket: &mut S,
        fanned: Result<Fanned, RecvError>,
        fanout: &Receiver<Fanned>,
    ) -> Option<End> {
        let frames = match fanned {
            Ok(Fanned::Frame(text)) => vec![text],
            Ok(Fanned::Broadcast {
                offset,
                epoch,
                text,
            }) => self.broadcast_frames(offset, epoch, text).await,
            Ok(Fanned::Drain) => return Some(End::Drain),
            Err(RecvError::Lagged(skipped)) => return Some(self.slow(skipped as usize)),
            // Only when the process is going away.
            Err(RecvError::Closed) => return Some(End::Drain),
        };
        let limit = self.settings.send_queue;
        // A write stuck behind a full buffer still watches the ring.
        let behind = || Some(fanout.len()).filter(|n| *n > limit);
        for text in frames {
            match slow::forward(socket, text, behind, self.write_timeout).await {
                Forwarded::Sent => self.metrics.messages_sent.inc(),
                Forwarded::Behind(behind) => return Some(self.slow(behind)),
                Forwarded::Gone => return Some(End::Peer(1006)),
            };
        }
        None
    }

    /// What to send for a broadcast from the ring, in order: nothing (the client has it), the
    /// frame, or, when broadcasts before it never came (lost on their way to this instance),
    /// those first from the broadcast history.
    async fn broadcast_frames(
        &mut self,
        offset: u64,
        epoch: Arc<str>,
        text: Utf8Bytes,
    ) -> Vec<Utf8Bytes> {
        let Some(cursor) = &mut self.broadcasts else {
            self.broadcasts = Some(Cursor { offset, epoch });
            return vec![text];
        };
        let history = self.broadcast_history.as_ref();
        let Some((history, stream)) = history.filter(|_| cursor.gap_before(offset, &epoch)) else {
            return if cursor.admit(offset, &epoch) {
                vec![text]
            } else {
                Vec::new()
            };
        };
        let since = cursor.offset;
        match history.read(stream, Some((since, &cursor.epoch))).await {
            Ok(read) if read.recovered == Some(true) && read.offset >= offset => {
                crate::warn_throttled!(
                    missed = offset - since - 1,
                    "live broadcasts never came; sent from history"
                );
                *cursor = Cursor::new(read.offset, &read.epoch);
                read.missed.into_iter().map(Utf8Bytes::from).collect()
            }
            _ => {
                crate::warn_throttled!("live broadcasts never came and history has none");
                cursor.admit(offset, &epoch);
                vec![text]
            }
        }
    }
}

/// The next fan-out item, with the receiver handed back so the next wait can reuse it.
pub(super) async fn next_fanout(
    mut fanout: Receiver<Fanned>,
) -> (Result<Fanned, RecvError>, Receiver<Fanned>) {
    let frame = fanout.recv().await;
    (frame, fanout)
}
