//! This process's side of the rooms: which local sockets are in which room, and the channel
//! subscriptions that follow them (subscribe on a room's first local member, unsubscribe on
//! its last), so a room message reaches only the instances that need it.
//!
//! Subscription changes are made by one task ([`run_interest`]), one room at a time, so a
//! subscribe and an unsubscribe of the same room can never cross. A socket that joins waits
//! until its room's subscription is confirmed by Redis before it reads the room's state: every
//! publication after that read then reaches it live, and the ones up to it are in the reply
//! (the offset tells them apart; see src/ws/rooms.rs).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::extract::ws::Utf8Bytes;
use fred::{clients::SubscriberClient, interfaces::PubsubInterface};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::channel_name;
use crate::inbox::{Delivery, Postbox};

/// One local socket's membership of a room.
pub struct LocalMember {
    pub session: Arc<str>,
    pub token: Arc<str>,
    /// `None`: the socket holds the session's membership (listed in its welcome) but has not
    /// joined on this socket, so it gets no traffic.
    pub postbox: Option<Postbox>,
}

/// A session's membership and the writer token of the socket here that holds it.
pub type Holding = (Arc<str>, Arc<str>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subscription {
    Off,
    Subscribing,
    On,
    Unsubscribing,
}

struct LocalRoom {
    /// By connection id.
    members: HashMap<u64, LocalMember>,
    subscription: Subscription,
    /// Joiners waiting for the subscription: told whether it was made.
    waiters: Vec<oneshot::Sender<bool>>,
}

/// The room table of this process.
pub struct LocalRooms {
    rooms: Mutex<HashMap<Arc<str>, LocalRoom>>,
    interest: mpsc::UnboundedSender<Arc<str>>,
}

impl LocalRooms {
    /// The table, and the receiver [`run_interest`] takes.
    pub fn new() -> (Arc<Self>, mpsc::UnboundedReceiver<Arc<str>>) {
        let (interest, checks) = mpsc::unbounded_channel();
        let table = LocalRooms {
            rooms: Mutex::new(HashMap::new()),
            interest,
        };
        (Arc::new(table), checks)
    }

    /// Adds (or replaces) a socket's membership; returns once the room's channel subscription
    /// is live, or `false` when it could not be made within `wait`.
    pub async fn add(&self, room: &str, conn_id: u64, member: LocalMember, wait: Duration) -> bool {
        let waiter = {
            let mut rooms = self.rooms.lock().expect("rooms lock");
            let entry = rooms.entry(Arc::from(room)).or_insert_with(|| LocalRoom {
                members: HashMap::new(),
                subscription: Subscription::Off,
                waiters: Vec::new(),
            });
            entry.members.insert(conn_id, member);
            if entry.subscription == Subscription::On {
                return true;
            }
            let (tell, told) = oneshot::channel();
            entry.waiters.push(tell);
            told
        };
        let _ = self.interest.send(Arc::from(room));
        matches!(tokio::time::timeout(wait, waiter).await, Ok(Ok(true)))
    }

    /// Removes a socket's membership; the last one here ends the subscription.
    pub fn remove(&self, room: &str, conn_id: u64) {
        let mut rooms = self.rooms.lock().expect("rooms lock");
        if let Some(entry) = rooms.get_mut(room) {
            if entry.members.remove(&conn_id).is_some() && entry.members.is_empty() {
                let _ = self.interest.send(Arc::from(room));
            }
        }
    }

    /// Rooms with at least one local member.
    pub fn active(&self) -> usize {
        let rooms = self.rooms.lock().expect("rooms lock");
        rooms.values().filter(|r| !r.members.is_empty()).count()
    }

    /// Every local membership, by room, for the lease renewal; sorted by room, so that each
    /// room is renewed at the same point of every period (the leases' arithmetic assumes a
    /// room's renewals are one period apart).
    pub fn holdings(&self) -> Vec<(Arc<str>, Vec<Holding>)> {
        let rooms = self.rooms.lock().expect("rooms lock");
        let mut holdings: Vec<_> = rooms
            .iter()
            .filter(|(_, r)| !r.members.is_empty())
            .map(|(name, r)| {
                let held = r
                    .members
                    .values()
                    .map(|m| (m.session.clone(), m.token.clone()))
                    .collect();
                (name.clone(), held)
            })
            .collect();
        drop(rooms);
        holdings.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        holdings
    }

    /// Hands a frame from the room's channel to its local members that receive traffic,
    /// except the socket(s) of `skip` (the session whose own join caused a presence event).
    /// `at`: a publication's offset and epoch (`None` for a presence event). Returns how many
    /// it was posted to.
    pub fn deliver(
        &self,
        room: &str,
        at: Option<(u64, Arc<str>)>,
        skip: Option<&str>,
        text: Utf8Bytes,
    ) -> usize {
        let rooms = self.rooms.lock().expect("rooms lock");
        let Some((name, entry)) = rooms.get_key_value(room) else {
            return 0;
        };
        let mut posted = 0;
        for member in entry.members.values() {
            let Some(postbox) = &member.postbox else {
                continue;
            };
            if skip.is_some_and(|s| *s == *member.session) {
                continue;
            }
            postbox.post(Delivery::Room {
                room: name.clone(),
                at: at.clone(),
                text: text.clone(),
            });
            posted += 1;
        }
        posted
    }

    /// What the interest task should do for `room` now, marking it in progress.
    fn next_step(&self, room: &str) -> Option<Step> {
        let mut rooms = self.rooms.lock().expect("rooms lock");
        let entry = rooms.get_mut(room)?;
        match (entry.subscription, entry.members.is_empty()) {
            (Subscription::Off, false) => {
                entry.subscription = Subscription::Subscribing;
                Some(Step::Subscribe)
            }
            (Subscription::On, true) => {
                entry.subscription = Subscription::Unsubscribing;
                Some(Step::Unsubscribe)
            }
            (Subscription::Off, true) => {
                rooms.remove(room);
                None
            }
            _ => None,
        }
    }

    /// Records how a step ended; returns whether the room needs another look (members came
    /// or went meanwhile).
    fn finish(&self, room: &str, step: Step, done: bool) -> bool {
        let mut rooms = self.rooms.lock().expect("rooms lock");
        let Some(entry) = rooms.get_mut(room) else {
            return false;
        };
        let on = matches!(
            (step, done),
            (Step::Subscribe, true) | (Step::Unsubscribe, false)
        );
        entry.subscription = if on {
            Subscription::On
        } else {
            Subscription::Off
        };
        if matches!(step, Step::Subscribe) {
            // Joiners learn whether they can go on; a failed one removes itself, which
            // brings the room back here to be forgotten.
            for waiter in entry.waiters.drain(..) {
                let _ = waiter.send(on);
            }
        }
        match (step, done) {
            // Everyone left while it was being made.
            (Step::Subscribe, true) => entry.members.is_empty(),
            (Step::Unsubscribe, true) => {
                if entry.members.is_empty() && entry.waiters.is_empty() {
                    rooms.remove(room);
                    false
                } else {
                    // Someone joined while it was being ended.
                    true
                }
            }
            // Not retried in a loop: the next join or leave brings it back.
            (_, false) => false,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Subscribe,
    Unsubscribe,
}

/// Makes the channel subscriptions follow the table until `cancel`.
pub async fn run_interest(
    table: Arc<LocalRooms>,
    mut checks: mpsc::UnboundedReceiver<Arc<str>>,
    subscriber: SubscriberClient,
    cancel: CancellationToken,
) {
    loop {
        let room = tokio::select! {
            _ = cancel.cancelled() => break,
            room = checks.recv() => match room {
                Some(room) => room,
                None => break,
            },
        };
        let mut again = true;
        while again {
            let Some(step) = table.next_step(&room) else {
                break;
            };
            let channel = channel_name(&room);
            let result = match step {
                Step::Subscribe => subscriber.ssubscribe(channel).await,
                Step::Unsubscribe => subscriber.sunsubscribe(channel).await,
            };
            if let Err(error) = &result {
                crate::warn_throttled!(%error, ?step, "room subscription change failed");
            }
            again = table.finish(&room, step, result.is_ok());
        }
    }
}
