//! The wire protocol: the JSON frames a client sees, the messages instances exchange over the
//! Redis pub/sub channel, and validation of session ids.
//!
//! The load tester reuses these types, so client and server cannot disagree on a field name.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

pub mod rooms;

/// The longest session id accepted (see docs/PROTOCOL.md).
pub const MAX_SESSION_ID_LEN: usize = 64;

/// WebSocket close codes the server uses (RFC 6455 section 7.4).
pub mod close_code {
    /// The server drains for shutdown; resume the session after `reconnect_after_ms`.
    pub const GOING_AWAY: u16 = 1001;
    /// The peer broke the framing protocol.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A binary frame: only text is spoken here.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// A text frame that is not UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// Rate limit exceeded, no pong for two ping intervals, or the session was resumed by a
    /// newer socket.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A frame larger than `MAX_MESSAGE_BYTES`.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The socket fell too far behind the fan-out (slow consumer).
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// First frame after the upgrade.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub session_uuid: String,
    pub count: u64,
    pub resumed: bool,
    pub instance: String,
    /// The client's `last_count` raised the counter (Redis had lost it); only sent when true.
    #[serde(default, skip_serializing_if = "is_false")]
    pub repaired: bool,
    /// The rooms a resumed session is still in (send `join` again to get their traffic);
    /// left out when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rooms: Vec<String>,
    /// Where the fleet's broadcast stream stood at the welcome: every broadcast above it
    /// follows. Left out when Redis could not tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// Only with `since` on the URL: whether every broadcast after it follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
}

fn is_false(value: &bool) -> bool {
    !value
}

/// The answer to every counted text frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountReply {
    pub count: u64,
}

/// Fleet-wide heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub ts: String,
}

/// Operator broadcast. `offset` and `epoch`: its place in the fleet's broadcast stream
/// (src/history/); absent for a message to one session, which is not recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Broadcast {
    pub broadcast: Value,
    pub ts: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
}

/// The frame of a fleet broadcast without its closing `}`: Redis appends the offset and
/// epoch it assigns (src/history/).
pub fn broadcast_head(message: &Value, ts: &str) -> String {
    let mut head = serde_json::to_string(&Broadcast {
        broadcast: message.clone(),
        ts: ts.into(),
        offset: None,
        epoch: None,
    })
    .expect("frames of strings and JSON values always serialize");
    head.pop();
    head
}

/// Last frame before a drain closes the socket with 1001.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bye {
    pub bye: bool,
    pub total: u64,
    pub reconnect_after_ms: u64,
}

/// Answer to a text frame that could not be counted (Redis unreachable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorFrame {
    pub error: String,
    pub retry: bool,
}

impl ErrorFrame {
    pub fn unavailable() -> Self {
        Self {
            error: "unavailable".into(),
            retry: true,
        }
    }
}

/// Any frame the server sends, for clients that want one type to match on.
///
/// Untagged: the variants are told apart by their field names, which are disjoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ServerFrame {
    Welcome(Welcome),
    Bye(Bye),
    Broadcast(Broadcast),
    Count(CountReply),
    Heartbeat(Heartbeat),
    Error(ErrorFrame),
}

/// What instances publish on the shared pub/sub channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChannelMessage {
    /// Published by the elected heartbeat publisher once per interval.
    Heartbeat { ts: String },
    /// A broadcast without a place in the broadcast stream: what the bench ceiling sends.
    /// wsfleet publishes broadcasts through src/history/ (`m <offset> <frame>`).
    Broadcast { message: Value, ts: String },
    /// Published by every instance to prove its own subscription delivers.
    Probe { instance: String },
    /// `POST /broadcast` to one session: the instance holding its socket sends it the
    /// broadcast frame (not recorded, no offset).
    Direct {
        session: String,
        message: Value,
        ts: String,
    },
}

impl ChannelMessage {
    /// The text frame this message becomes on every client socket (on the addressed one for
    /// [`ChannelMessage::Direct`]), or `None` for probes.
    pub fn client_frame(&self) -> Option<String> {
        let frame = match self {
            ChannelMessage::Heartbeat { ts } => {
                serde_json::to_string(&Heartbeat { ts: ts.clone() })
            }
            ChannelMessage::Broadcast { message, ts }
            | ChannelMessage::Direct { message, ts, .. } => serde_json::to_string(&Broadcast {
                broadcast: message.clone(),
                ts: ts.clone(),
                offset: None,
                epoch: None,
            }),
            ChannelMessage::Probe { .. } => return None,
        };
        Some(frame.expect("frames of strings and JSON values always serialize"))
    }
}

/// What the welcome after a reconnect says about the frames a client had sent without a
/// reply (docs/PROTOCOL.md, "Resuming without gaps or repeats", rule 4). The one judgement of
/// a resume, shared by the load tester and the fleet tests so they cannot judge differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resumption {
    /// The counter continues what the client knew: the first `counted` pending frames were
    /// counted but their replies were lost with the old socket (0 after a drain, which answers
    /// everything it counted); resend the rest.
    Continues { counted: u64 },
    /// The counter is `skipped` beyond the last acknowledged count plus every pending frame:
    /// numbers this client never sent, so it will never see them (a gap).
    Ahead { skipped: u64 },
    /// The counter is `behind` below the last acknowledged count (Redis lost the session):
    /// that many numbers will be told a second time (repeats).
    Behind { behind: u64 },
}

/// Judges the welcome count `welcome` of a resumed session whose client last saw `acked` and
/// has `pending` frames without a reply.
pub fn judge_resume(acked: u64, pending: u64, welcome: u64) -> Resumption {
    if welcome < acked {
        Resumption::Behind {
            behind: acked - welcome,
        }
    } else if welcome - acked <= pending {
        Resumption::Continues {
            counted: welcome - acked,
        }
    } else {
        Resumption::Ahead {
            skipped: welcome - acked - pending,
        }
    }
}

/// Current time as RFC 3339 UTC with milliseconds, the `ts` format of every frame.
pub fn timestamp_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("session id is longer than {MAX_SESSION_ID_LEN} characters")]
    SessionIdTooLong,
    #[error("session id may only contain A-Z, a-z, 0-9, '_' and '-'")]
    SessionIdBadCharacter,
}

/// Checks a client-supplied session id: 1 to 64 characters of `[A-Za-z0-9_-]`.
///
/// The caller treats an empty or absent id as "make a new one", so empty is not an error here.
pub fn validate_session_id(id: &str) -> Result<(), ProtocolError> {
    if id.len() > MAX_SESSION_ID_LEN {
        return Err(ProtocolError::SessionIdTooLong);
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(ProtocolError::SessionIdBadCharacter);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_checked_for_length_and_alphabet() {
        let cases: &[(&str, Result<(), ProtocolError>)] = &[
            ("abc", Ok(())),
            ("A-b_9", Ok(())),
            ("3f1e2d4c-0000-4000-8000-123456789abc", Ok(())),
            (&"x".repeat(64), Ok(())),
            (&"x".repeat(65), Err(ProtocolError::SessionIdTooLong)),
            ("a b", Err(ProtocolError::SessionIdBadCharacter)),
            ("a/b", Err(ProtocolError::SessionIdBadCharacter)),
            ("ünï", Err(ProtocolError::SessionIdBadCharacter)),
            ("a;DROP", Err(ProtocolError::SessionIdBadCharacter)),
        ];
        for (input, expected) in cases {
            assert_eq!(&validate_session_id(input), expected, "input {input:?}");
        }
    }

    #[test]
    fn server_frames_parse_into_the_right_variant() {
        let parse = |s: &str| serde_json::from_str::<ServerFrame>(s).unwrap();
        assert_eq!(
            parse(r#"{"count":3}"#),
            ServerFrame::Count(CountReply { count: 3 })
        );
        assert!(matches!(parse(r#"{"ts":"x"}"#), ServerFrame::Heartbeat(_)));
        assert!(matches!(
            parse(r#"{"broadcast":{"a":1},"ts":"x"}"#),
            ServerFrame::Broadcast(_)
        ));
        assert!(matches!(
            parse(r#"{"bye":true,"total":4,"reconnect_after_ms":10}"#),
            ServerFrame::Bye(_)
        ));
        assert!(matches!(
            parse(r#"{"session_uuid":"a","count":0,"resumed":false,"instance":"i"}"#),
            ServerFrame::Welcome(_)
        ));
        assert!(matches!(
            parse(r#"{"error":"unavailable","retry":true}"#),
            ServerFrame::Error(_)
        ));
    }

    #[test]
    fn channel_messages_become_the_documented_client_frames() {
        let hb = ChannelMessage::Heartbeat { ts: "T".into() };
        assert_eq!(hb.client_frame().unwrap(), r#"{"ts":"T"}"#);
        let bc = ChannelMessage::Broadcast {
            message: serde_json::json!({"k": [1, 2]}),
            ts: "T".into(),
        };
        assert_eq!(
            bc.client_frame().unwrap(),
            r#"{"broadcast":{"k":[1,2]},"ts":"T"}"#
        );
        let probe = ChannelMessage::Probe {
            instance: "i".into(),
        };
        assert_eq!(probe.client_frame(), None);
        let wire = serde_json::to_string(&hb).unwrap();
        assert_eq!(wire, r#"{"type":"heartbeat","ts":"T"}"#);
    }

    #[test]
    fn resumes_are_judged_by_the_welcome_count_and_the_frames_in_flight() {
        use Resumption::*;
        let cases = [
            // (acked, pending, welcome, judgement)
            (5, 0, 5, Continues { counted: 0 }),
            (5, 1, 5, Continues { counted: 0 }),
            (5, 1, 6, Continues { counted: 1 }),
            (5, 3, 7, Continues { counted: 2 }),
            (5, 0, 6, Ahead { skipped: 1 }),
            (5, 2, 9, Ahead { skipped: 2 }),
            (5, 0, 0, Behind { behind: 5 }),
            (5, 4, 3, Behind { behind: 2 }),
        ];
        for (acked, pending, welcome, expected) in cases {
            assert_eq!(
                judge_resume(acked, pending, welcome),
                expected,
                "acked {acked}, pending {pending}, welcome {welcome}"
            );
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        let ts = timestamp_now();
        assert_eq!(ts.len(), "2026-11-22T02:44:27.123Z".len(), "{ts}");
        assert!(ts.ends_with('Z'), "{ts}");
        assert!(chrono::DateTime::parse_from_rfc3339(&ts).is_ok(), "{ts}");
    }
}
