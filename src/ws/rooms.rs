//! One socket's side of the rooms: its commands and what it receives.
//!
//! Exactly once, in order: each room this socket joined remembers the highest offset it has
//! given the client. A join subscribes first, then reads the room in one script: everything up
//! to the returned offset is in the reply (the recovered frames), everything after reaches the
//! inbox live; a live frame at or below the remembered offset is one the reply covered and is
//! dropped. Presence events carry no offset and are passed on as they come.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use axum::extract::ws::Utf8Bytes;

use crate::{
    history::Cursor,
    identity::Identity,
    inbox::{Delivery, Postbox},
    protocol::{
        rooms::{
            publication_head, BadCommand, Left, RoomCommand, RoomError, RoomErrorCode, RoomUsers,
        },
        timestamp_now,
    },
    rooms::{Member, Rooms},
    store::StoreError,
};

/// This socket's rooms.
pub struct SocketRooms {
    rooms: Arc<Rooms>,
    member: Member,
    /// Which rooms it may join.
    identity: Identity,
    postbox: Postbox,
    /// Joined on this socket: how far the client has been given the room's stream.
    joined: HashMap<Arc<str>, Cursor>,
    /// The session is in these (its welcome listed them) but this socket has not joined them.
    held: HashSet<Arc<str>>,
}

impl SocketRooms {
    pub fn new(
        rooms: Arc<Rooms>,
        member: Member,
        identity: Identity,
        postbox: Postbox,
        held: Vec<String>,
    ) -> Self {
        SocketRooms {
            rooms,
            member,
            identity,
            postbox,
            joined: HashMap::new(),
            held: held.into_iter().map(Arc::from).collect(),
        }
    }

    /// Every room the session holds through this socket, to release when it closes.
    pub fn memberships(&self) -> Vec<Arc<str>> {
        self.joined.keys().chain(&self.held).cloned().collect()
    }

    pub fn member(&self) -> &Member {
        &self.member
    }

    /// Runs one command; returns the frames to send, in order.
    pub async fn command(&mut self, command: Result<RoomCommand, BadCommand>) -> Vec<String> {
        let command = match command {
            Ok(command) => command,
            Err(bad) => {
                let mut error = RoomError::new(RoomErrorCode::BadRequest, bad.room);
                error.reason = Some(bad.reason.into());
                return vec![to_json(&error)];
            }
        };
        match command {
            RoomCommand::Join { room, since } => self.join(room, since).await,
            RoomCommand::Leave { room } => self.leave(room).await,
            RoomCommand::Message { room, content, id } => self.message(room, content, id).await,
        }
    }

    fn is_member(&self, room: &str) -> bool {
        self.joined.contains_key(room) || self.held.contains(room)
    }

    async fn join(&mut self, room: String, since: Option<(u64, String)>) -> Vec<String> {
        if !self.identity.may_join(&room) {
            return vec![error(RoomErrorCode::Forbidden, room)];
        }
        if !self.is_member(&room) && self.joined.len() + self.held.len() >= self.rooms.max_rooms {
            return vec![error(RoomErrorCode::TooManyRooms, room)];
        }
        let since = since.as_ref().map(|(k, e)| (*k, e.as_str()));
        let joined = self
            .rooms
            .join(&self.member, &room, self.postbox.clone(), since)
            .await;
        let joined = match joined {
            Ok(joined) => joined,
            Err(error) => return vec![unavailable(error, room)],
        };
        let name: Arc<str> = Arc::from(room.as_str());
        self.held.remove(&name);
        self.joined
            .insert(name, Cursor::new(joined.offset, &joined.epoch));
        let mut frames = Vec::with_capacity(1 + joined.missed.len());
        frames.push(to_json(&RoomUsers {
            kind: "room_users".into(),
            room,
            users: joined.users,
            offset: joined.offset,
            epoch: joined.epoch,
            recovered: joined.recovered,
        }));
        frames.extend(joined.missed);
        frames
    }

    async fn leave(&mut self, room: String) -> Vec<String> {
        if let Err(error) = self.rooms.leave(&self.member, &room).await {
            return vec![unavailable(error, room)];
        }
        self.joined.remove(room.as_str());
        self.held.remove(room.as_str());
        vec![to_json(&Left::new(&room))]
    }

    async fn message(
        &mut self,
        room: String,
        content: serde_json::Value,
        id: Option<String>,
    ) -> Vec<String> {
        if !self.is_member(&room) {
            return vec![error(RoomErrorCode::NotInRoom, room)];
        }
        let head = publication_head(
            &room,
            &self.member.user,
            &content,
            id.as_deref(),
            &timestamp_now(),
        );
        // Per session: another session's message may reuse the id.
        let id = id.map(|id| format!("c:{}:{id}", self.member.session));
        match self.rooms.publish(&room, head, id.as_deref()).await {
            // The publication itself comes back through the room's channel, like everyone's.
            Ok(_) => Vec::new(),
            Err(error) => vec![unavailable(error, room)],
        }
    }

    /// What to send the client for a frame from the inbox, in order: nothing (a frame the
    /// client has, or of a room it left), the frame, or, when publications before it never
    /// came, those first from the room's history.
    pub async fn deliver(&mut self, delivery: Delivery) -> Vec<Utf8Bytes> {
        let (room, at, text) = match delivery {
            Delivery::Direct(text) => return vec![text],
            Delivery::Room { room, at, text } => (room, at, text),
        };
        let Some(cursor) = self.joined.get_mut(&room) else {
            return Vec::new();
        };
        let Some((offset, epoch)) = at else {
            return vec![text]; // presence events carry no offset
        };
        if !cursor.gap_before(offset, &epoch) {
            return if cursor.admit(offset, &epoch) {
                vec![text]
            } else {
                Vec::new()
            };
        }
        let since = (cursor.offset, cursor.epoch.clone());
        let read = self.rooms.recover(&room, (since.0, &since.1)).await;
        let cursor = self.joined.get_mut(&room).expect("still joined");
        match read {
            Ok(read) if read.recovered == Some(true) && read.offset >= offset => {
                crate::warn_throttled!(
                    missed = offset - since.0 - 1,
                    "live room publications never came; sent from history"
                );
                *cursor = Cursor::new(read.offset, &read.epoch);
                read.missed.into_iter().map(Utf8Bytes::from).collect()
            }
            _ => {
                crate::warn_throttled!("live room publications never came and history has none");
                cursor.admit(offset, &epoch);
                vec![text]
            }
        }
    }
}

fn to_json<T: serde::Serialize>(frame: &T) -> String {
    serde_json::to_string(frame).expect("frames serialize")
}

fn error(code: RoomErrorCode, room: String) -> String {
    to_json(&RoomError::new(code, Some(room)))
}

fn unavailable(error: StoreError, room: String) -> String {
    crate::warn_throttled!(%error, "room command not done: redis unavailable");
    self::error(RoomErrorCode::Unavailable, room)
}
