//! Each socket's inbox: frames addressed to this socket rather than to every socket (room
//! publications and presence events of the rooms it joined, operator messages to its session).
//!
//! Heartbeats and fleet broadcasts go to every socket and travel on the shared fan-out rings
//! (src/fanout.rs); room traffic reaches only some sockets, so it is pushed into a bounded
//! queue per socket by whoever delivers it (the room table, src/rooms/local.rs, or the session
//! directory below). A push never waits: a full inbox marks the socket as overflowed and the
//! frame is dropped, and the socket closes 1013 at its next look (SPEC: a socket more than
//! `SEND_QUEUE` frames behind is closed and recovers from history).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;

/// What an inbox carries.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// A room frame: a publication (`at`: its offset and epoch; delivered once per offset) or
    /// a presence event (`at` is `None`).
    Room {
        room: Arc<str>,
        at: Option<(u64, Arc<str>)>,
        text: Utf8Bytes,
    },
    /// An operator message to this socket's session.
    Direct(Utf8Bytes),
}

/// The sending side, cloned into every place that delivers to the socket.
#[derive(Debug, Clone)]
pub struct Postbox {
    sender: mpsc::Sender<Delivery>,
    overflowed: Arc<AtomicBool>,
}

impl Postbox {
    /// Queues `delivery` without waiting; a full inbox marks the socket overflowed instead.
    pub fn post(&self, delivery: Delivery) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.sender.try_send(delivery) {
            self.overflowed.store(true, Ordering::Relaxed);
        }
    }
}

/// The socket's side.
#[derive(Debug)]
pub struct Inbox {
    pub receiver: mpsc::Receiver<Delivery>,
    overflowed: Arc<AtomicBool>,
}

impl Inbox {
    /// Whether a frame for this socket was dropped because its inbox was full.
    pub fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Relaxed)
    }

    /// Frames waiting.
    pub fn len(&self) -> usize {
        self.receiver.len()
    }

    pub fn is_empty(&self) -> bool {
        self.receiver.is_empty()
    }
}

/// A new inbox holding up to `capacity` frames, and its postbox.
pub fn inbox(capacity: usize) -> (Postbox, Inbox) {
    let (sender, receiver) = mpsc::channel(capacity.max(1));
    let overflowed = Arc::new(AtomicBool::new(false));
    (
        Postbox {
            sender,
            overflowed: overflowed.clone(),
        },
        Inbox {
            receiver,
            overflowed,
        },
    )
}

/// The sockets of this process by session, for messages addressed to a session. A session
/// has at most one live socket in the fleet (the newest fences the others), but an older
/// one may still be closing here: the newest registration wins, and only its own
/// unregistration removes it.
#[derive(Default)]
pub struct Directory {
    sockets: Mutex<HashMap<Arc<str>, (u64, Postbox)>>,
}

impl Directory {
    pub fn register(&self, session: Arc<str>, conn_id: u64, postbox: Postbox) {
        self.sockets
            .lock()
            .expect("directory lock")
            .insert(session, (conn_id, postbox));
    }

    pub fn unregister(&self, session: &str, conn_id: u64) {
        let mut sockets = self.sockets.lock().expect("directory lock");
        if sockets.get(session).is_some_and(|(id, _)| *id == conn_id) {
            sockets.remove(session);
        }
    }

    /// Posts `text` to `session`'s socket here; returns whether it has one.
    pub fn post(&self, session: &str, text: Utf8Bytes) -> bool {
        let sockets = self.sockets.lock().expect("directory lock");
        match sockets.get(session) {
            Some((_, postbox)) => {
                postbox.post(Delivery::Direct(text));
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_inbox_drops_and_marks_the_socket_overflowed() {
        let (postbox, mut inbox) = inbox(2);
        for _ in 0..2 {
            postbox.post(Delivery::Direct("x".into()));
        }
        assert!(!inbox.overflowed());
        postbox.post(Delivery::Direct("y".into()));
        assert!(inbox.overflowed());
        assert_eq!(inbox.len(), 2);
        assert!(inbox.receiver.try_recv().is_ok());
    }

    #[test]
    fn only_the_newest_socket_of_a_session_is_in_the_directory() {
        let directory = Directory::default();
        let (old, _old_inbox) = inbox(4);
        let (new, mut new_inbox) = inbox(4);
        directory.register("s".into(), 1, old);
        directory.register("s".into(), 2, new);
        directory.unregister("s", 1);
        assert!(directory.post("s", "hi".into()));
        assert!(matches!(
            new_inbox.receiver.try_recv(),
            Ok(Delivery::Direct(_))
        ));
        directory.unregister("s", 2);
        assert!(!directory.post("s", "hi".into()));
    }
}
