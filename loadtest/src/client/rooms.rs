//! Room frames on the client side (docs/PROTOCOL.md, "Rooms"), read with the server's own
//! types (`wsfleet::protocol::rooms`), and joining a room.
//!
//! Every room frame the server writes begins `{"type":` (its serializers put the tag first,
//! and the Lua scripts write presence events that way), and no other frame has a `type`
//! field; that prefix decides, so the other scenarios' frames pay one prefix comparison.
//! A room message has a `ts` field, like a heartbeat: without this check it would pass for
//! one in the untagged [`wsfleet::protocol::ServerFrame`].

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;
use wsfleet::protocol::rooms::{RoomError, RoomMessage, RoomUsers};

use super::{error_kind, next_event, Event, Socket};
use crate::recovery::Position;

/// A frame about a room.
#[derive(Debug, Clone)]
pub enum RoomFrame {
    /// The answer to a join. (Boxed, like the message: `Event` stays small for the frames
    /// of the other scenarios.)
    Users(Box<RoomUsers>),
    Message(Box<RoomMessage>),
    /// `user_joined` or `user_left`: not checked here (presence has tests of its own).
    Presence,
    /// The answer to a leave.
    Left,
    Error(RoomError),
}

const TAG: &str = r#"{"type":""#;

/// The room frame `text` is, if it is one: `None` for the frames without a `type`; a room
/// frame that does not parse is `Some(Err)` with what kind it claimed to be.
pub fn parse(text: &str) -> Option<Result<RoomFrame, &'static str>> {
    let rest = text.strip_prefix(TAG)?;
    let kind = rest.split('"').next().unwrap_or_default();
    let parsed = match kind {
        "message" => serde_json::from_str(text).map(|m| RoomFrame::Message(Box::new(m))),
        "room_users" => serde_json::from_str(text).map(|u| RoomFrame::Users(Box::new(u))),
        "user_joined" | "user_left" => Ok(RoomFrame::Presence),
        "left" => Ok(RoomFrame::Left),
        "error" => serde_json::from_str(text).map(RoomFrame::Error),
        _ => return Some(Err("unknown room frame")),
    };
    Some(parsed.map_err(|_| "malformed room frame"))
}

/// Sends `{"type":"join","room":R}` and waits for its `room_users`; presence events of
/// others joining meanwhile are skipped. Err is a short kind for the report.
pub async fn join(socket: &mut Socket, room: &str) -> Result<RoomUsers, String> {
    rejoin(socket, room, None)
        .await
        .map_err(|event| format!("join: {}", event.describe()))
}

/// Sends a join, with `"since"`/`"epoch"` when recovering from `since` (the server then
/// answers `recovered` and sends what was missed right after the answer), and waits for its
/// `room_users`. Err is the event that came instead, so a caller that resumes after a server
/// close can tell one from a refusal.
pub async fn rejoin(
    socket: &mut Socket,
    room: &str,
    since: Option<&Position>,
) -> Result<RoomUsers, Event> {
    let mut command = serde_json::json!({"type": "join", "room": room});
    if let Some(since) = since {
        command["since"] = since.offset.into();
        command["epoch"] = since.epoch.as_str().into();
    }
    if let Err(e) = socket.send(Message::text(command.to_string())).await {
        return Err(Event::Failed(format!("send: {}", error_kind(&e))));
    }
    loop {
        match next_event(socket).await {
            Event::Room(RoomFrame::Users(users)) if users.room == room => return Ok(*users),
            Event::Room(RoomFrame::Presence) => {}
            // Fleet-wide frames may come at any time; they are not the room's.
            Event::Frame(
                wsfleet::protocol::ServerFrame::Heartbeat(_)
                | wsfleet::protocol::ServerFrame::Broadcast(_),
            ) => {}
            other => return Err(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wsfleet::protocol::rooms::RoomErrorCode;

    #[test]
    fn room_frames_are_told_by_their_type_and_others_are_not_room_frames() {
        let message = r#"{"type":"message","room":"r","sender":"u","content":{"t":5},"ts":"T","offset":3,"epoch":"e"}"#;
        let Some(Ok(RoomFrame::Message(m))) = parse(message) else {
            panic!("{message}")
        };
        assert_eq!(
            (m.room.as_str(), m.offset, m.content["t"].as_u64()),
            ("r", 3, Some(5))
        );
        let users = r#"{"type":"room_users","room":"r","users":["a"],"offset":0,"epoch":"e"}"#;
        assert!(matches!(parse(users), Some(Ok(RoomFrame::Users(u))) if u.offset == 0));
        let joined = r#"{"type":"user_joined","room":"r","user":"b"}"#;
        assert!(matches!(parse(joined), Some(Ok(RoomFrame::Presence))));
        let error = r#"{"type":"error","error":"not_in_room","room":"r"}"#;
        assert!(matches!(
            parse(error),
            Some(Ok(RoomFrame::Error(e))) if e.error == RoomErrorCode::NotInRoom
        ));
        assert!(matches!(
            parse(r#"{"type":"left","room":"r"}"#),
            Some(Ok(RoomFrame::Left))
        ));
        for not_room in [
            r#"{"count":1}"#,
            r#"{"ts":"T"}"#,
            r#"{"error":"unavailable","retry":true}"#,
        ] {
            assert!(parse(not_room).is_none(), "{not_room}");
        }
        assert_eq!(
            parse(r#"{"type":"message","room":"r"}"#)
                .unwrap()
                .unwrap_err(),
            "malformed room frame"
        );
        assert_eq!(
            parse(r#"{"type":"x"}"#).unwrap().unwrap_err(),
            "unknown room frame"
        );
    }
}
