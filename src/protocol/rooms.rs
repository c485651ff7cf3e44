//! Room frames (docs/PROTOCOL.md, "Rooms"): the commands a client sends, the frames it gets
//! back, and room-name rules.
//!
//! A room command is a text frame holding one JSON object whose `"type"` is `join`, `leave` or
//! `message`; any other text (not JSON, another type) is an ordinary counted frame. Deciding
//! that costs one byte check for frames that do not start with `{`, so the counter's hot path
//! does not parse JSON.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Longest room name, and longest client message `id`.
pub const MAX_ROOM_NAME_LEN: usize = 64;

/// Whether `name` is a room name: 1–64 of `[A-Za-z0-9_.:-]`.
pub fn is_room_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_ROOM_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// A room command from a client.
#[derive(Debug, Clone, PartialEq)]
pub enum RoomCommand {
    Join {
        room: String,
        /// Recover from this offset of this epoch (both given, or neither).
        since: Option<(u64, String)>,
    },
    Leave {
        room: String,
    },
    Message {
        room: String,
        content: Value,
        id: Option<String>,
    },
}

/// A frame that is a room command but not a valid one: answered `bad_request`.
#[derive(Debug, Clone, PartialEq)]
pub struct BadCommand {
    /// The `room` field when it was a string (echoed in the error frame).
    pub room: Option<String>,
    pub reason: &'static str,
}

/// `None`: not a room command (count it). `Some(Err)`: a room command with a bad field.
pub fn parse_command(text: &str) -> Option<Result<RoomCommand, BadCommand>> {
    // The one check every counted frame pays.
    if text.trim_start().as_bytes().first() != Some(&b'{') {
        return None;
    }
    let Ok(mut fields) = serde_json::from_str::<Map<String, Value>>(text) else {
        return None;
    };
    let kind = match fields.get("type") {
        Some(Value::String(kind)) if matches!(kind.as_str(), "join" | "leave" | "message") => {
            kind.clone()
        }
        _ => return None,
    };
    Some(command_of(&kind, &mut fields))
}

fn command_of(kind: &str, fields: &mut Map<String, Value>) -> Result<RoomCommand, BadCommand> {
    let room = match fields.remove("room") {
        Some(Value::String(room)) => room,
        _ => return Err(bad(None, "\"room\" must be a string")),
    };
    if !is_room_name(&room) {
        return Err(bad(
            Some(room),
            "\"room\" must be 1-64 characters of A-Z, a-z, 0-9, '_', '.', ':' and '-'",
        ));
    }
    match kind {
        "join" => {
            let since = match (fields.remove("since"), fields.remove("epoch")) {
                (None | Some(Value::Null), None | Some(Value::Null)) => None,
                (Some(since), Some(Value::String(epoch))) => match since.as_u64() {
                    Some(since) => Some((since, epoch)),
                    None => return Err(bad(Some(room), "\"since\" must be a whole number")),
                },
                _ => {
                    return Err(bad(
                        Some(room),
                        "\"since\" and \"epoch\" go together (a number and a string)",
                    ))
                }
            };
            Ok(RoomCommand::Join { room, since })
        }
        "leave" => Ok(RoomCommand::Leave { room }),
        _ => {
            let content = match fields.remove("content") {
                None | Some(Value::Null) => {
                    return Err(bad(Some(room), "\"content\" is missing"));
                }
                Some(content) => content,
            };
            let id = match fields.remove("id") {
                None | Some(Value::Null) => None,
                Some(Value::String(id)) if !id.is_empty() && id.len() <= MAX_ROOM_NAME_LEN => {
                    Some(id)
                }
                Some(_) => return Err(bad(Some(room), "\"id\" must be a string of 1-64 bytes")),
            };
            Ok(RoomCommand::Message { room, content, id })
        }
    }
}

fn bad(room: Option<String>, reason: &'static str) -> BadCommand {
    BadCommand { room, reason }
}

/// Error codes of room commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomErrorCode {
    BadRequest,
    NotInRoom,
    TooManyRooms,
    Forbidden,
    Unavailable,
}

/// `{"type":"error","error":CODE,"room":R}`; `room` is left out when the command had none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomError {
    #[serde(rename = "type")]
    pub kind: String,
    pub error: RoomErrorCode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// What was wrong, for people (bad_request only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl RoomError {
    pub fn new(error: RoomErrorCode, room: Option<String>) -> Self {
        RoomError {
            kind: "error".into(),
            error,
            room,
            reason: None,
        }
    }
}

/// The joiner's answer: the room's members and where its stream stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomUsers {
    #[serde(rename = "type")]
    pub kind: String,
    pub room: String,
    pub users: Vec<String>,
    pub offset: u64,
    pub epoch: String,
    /// Only for a join with `since`: whether every publication after it follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
}

/// `{"type":"left","room":R}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Left {
    #[serde(rename = "type")]
    pub kind: String,
    pub room: String,
}

impl Left {
    pub fn new(room: &str) -> Self {
        Left {
            kind: "left".into(),
            room: room.into(),
        }
    }
}

/// A publication to a room, as members receive it (`sender` is `operator` for `POST
/// /broadcast`). The server writes it from [`publication_head`] plus the offset and epoch
/// Redis assigns; this type is for clients and tests that read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomMessage {
    #[serde(rename = "type")]
    pub kind: String,
    pub room: String,
    pub sender: String,
    pub content: Value,
    pub ts: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub offset: u64,
    pub epoch: String,
}

/// The frame of a publication without its closing `}`, offset and epoch: Redis appends
/// `,"offset":k,"epoch":"e"}` in the same script that assigns them (src/rooms/scripts.rs).
pub fn publication_head(
    room: &str,
    sender: &str,
    content: &Value,
    id: Option<&str>,
    ts: &str,
) -> String {
    #[derive(Serialize)]
    struct Head<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        room: &'a str,
        sender: &'a str,
        content: &'a Value,
        ts: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
    }
    let mut head = serde_json::to_string(&Head {
        kind: "message",
        room,
        sender,
        content,
        ts,
        id,
    })
    .expect("frames of strings and JSON values always serialize");
    head.pop(); // the closing brace
    head
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_are_1_to_64_of_the_documented_alphabet() {
        for good in ["a", "lobby", "team.a:b_c-9", &"r".repeat(64)] {
            assert!(is_room_name(good), "{good}");
        }
        for bad in ["", "a b", "a/b", "{x}", "é", &"r".repeat(65), "a\"b"] {
            assert!(!is_room_name(bad), "{bad}");
        }
    }

    #[test]
    fn only_json_objects_of_the_three_types_are_commands() {
        for counted in [
            "hello",
            "42",
            "[1]",
            "{not json",
            r#"{"type":"chat","room":"a"}"#,
            r#"{"type":5}"#,
            r#"{"room":"a"}"#,
        ] {
            assert_eq!(parse_command(counted), None, "{counted}");
        }
        assert_eq!(
            parse_command(r#" {"type":"join","room":"a"}"#),
            Some(Ok(RoomCommand::Join {
                room: "a".into(),
                since: None
            }))
        );
        assert_eq!(
            parse_command(r#"{"type":"join","room":"a","since":3,"epoch":"e"}"#),
            Some(Ok(RoomCommand::Join {
                room: "a".into(),
                since: Some((3, "e".into()))
            }))
        );
        assert_eq!(
            parse_command(r#"{"type":"message","room":"a","content":{"x":1},"id":"m1"}"#),
            Some(Ok(RoomCommand::Message {
                room: "a".into(),
                content: serde_json::json!({"x": 1}),
                id: Some("m1".into())
            }))
        );
    }

    #[test]
    fn bad_commands_say_which_room_they_named() {
        let cases = [
            (r#"{"type":"join"}"#, None),
            (r#"{"type":"join","room":7}"#, None),
            (r#"{"type":"join","room":"a b"}"#, Some("a b")),
            (
                r#"{"type":"join","room":"a","since":-1,"epoch":"e"}"#,
                Some("a"),
            ),
            (r#"{"type":"join","room":"a","since":1}"#, Some("a")),
            (r#"{"type":"message","room":"a"}"#, Some("a")),
            (
                r#"{"type":"message","room":"a","content":"x","id":""}"#,
                Some("a"),
            ),
            (
                r#"{"type":"message","room":"a","content":"x","id":3}"#,
                Some("a"),
            ),
        ];
        for (text, room) in cases {
            let bad = parse_command(text).unwrap().unwrap_err();
            assert_eq!(bad.room.as_deref(), room, "{text}");
        }
    }

    #[test]
    fn a_publication_head_closes_into_the_documented_frame() {
        let head = publication_head("r", "u", &serde_json::json!("hi"), Some("m"), "T");
        let frame = format!("{head},\"offset\":7,\"epoch\":\"e\"}}");
        let parsed: RoomMessage = serde_json::from_str(&frame).unwrap();
        assert_eq!(parsed.offset, 7);
        assert_eq!(parsed.epoch, "e");
        assert_eq!(parsed.id.as_deref(), Some("m"));
        assert_eq!(parsed.sender, "u");
    }
}
