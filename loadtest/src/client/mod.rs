//! The client side of one socket: where it goes ([`target`]: over the URLs and source
//! addresses), connecting ([`connect`]: with bounded concurrency), reading the next server
//! frame as a typed event, and closing.

mod connect;
pub mod rooms;
mod target;
pub mod token;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::{net::TcpStream, time::Instant};
use tokio_tungstenite::{
    tungstenite::{self, protocol::frame::coding::CloseCode, protocol::WebSocketConfig, Message},
    WebSocketStream,
};
use wsfleet::protocol::{
    rooms::{RoomMessage, RoomUsers},
    ServerFrame, Welcome,
};

pub use connect::{connect_all, connect_one, Parked};
pub use rooms::RoomFrame;
pub use target::{host_and_port, Dial, RoomLayout, Target};

pub type Socket = WebSocketStream<TcpStream>;

/// An open socket and the welcome it began with.
pub struct Conn {
    pub socket: Socket,
    pub welcome: Welcome,
    /// The `rooms` scenario: the room it joined while connecting, and the room's
    /// publications that arrived before the run phase took the socket (another process's
    /// publisher may start a moment earlier), in arrival order.
    pub room: Option<Joined>,
}

/// A room joined while connecting.
#[derive(Debug)]
pub struct Joined {
    pub users: RoomUsers,
    pub early: Vec<RoomMessage>,
}

/// Buffers sized on purpose. tungstenite's defaults (128 KiB read, eagerly allocated, and
/// 128 KiB write) cost ~100 KB per socket, which at 10k sockets is a gigabyte of client
/// memory competing with the server on the same machine. Every frame here is tiny; the read
/// buffer still grows for a large frame when one comes.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        // 0: each frame is written at once; the load tester wants every send on the wire now.
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
}

/// What reading a socket produced.
#[derive(Debug)]
pub enum Event {
    Frame(ServerFrame),
    /// A room frame (see [`rooms`]).
    Room(RoomFrame),
    /// A frame that is none of the documented frames: what kind.
    Unknown(&'static str),
    /// The server closed with this code and reason.
    Closed(u16, String),
    /// The connection failed or ended without a close frame.
    Failed(String),
}

impl Event {
    /// A short label for error tallies; close reasons are fixed texts on the server, so the
    /// number of distinct labels stays small.
    pub fn describe(&self) -> String {
        match self {
            Event::Frame(frame) => format!("unexpected frame {frame:?}"),
            Event::Room(RoomFrame::Error(e)) => format!("room error {:?}", e.error),
            Event::Room(_) => "unexpected room frame".into(),
            Event::Unknown(what) => (*what).into(),
            Event::Closed(code, reason) if reason.is_empty() => format!("closed {code}"),
            Event::Closed(code, reason) => format!("closed {code} ({reason})"),
            Event::Failed(kind) => kind.clone(),
        }
    }
}

/// Reads until the next event worth reporting. Pings are answered by tungstenite on the next
/// read or write, so they need nothing here.
pub async fn next_event<S>(socket: &mut S) -> Event
where
    S: futures_util::Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => return parse_frame(&text),
            Some(Ok(Message::Close(frame))) => {
                return match frame {
                    Some(f) => Event::Closed(u16::from(f.code), f.reason.to_string()),
                    None => Event::Closed(1005, String::new()),
                };
            }
            Some(Ok(Message::Binary(_))) => return Event::Unknown("binary frame"),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Err(e)) => return Event::Failed(format!("read: {}", error_kind(&e))),
            None => return Event::Failed("read: connection ended".into()),
        }
    }
}

/// One frame of text as a typed server frame (a room frame first: see [`rooms`]).
pub fn parse_frame(text: &str) -> Event {
    if let Some(room) = rooms::parse(text) {
        return match room {
            Ok(frame) => Event::Room(frame),
            Err(kind) => Event::Unknown(kind),
        };
    }
    match serde_json::from_str::<ServerFrame>(text) {
        Ok(frame) => Event::Frame(frame),
        Err(_) => Event::Unknown("unknown text frame"),
    }
}

/// A short, low-cardinality name for a transport error.
pub fn error_kind(error: &tungstenite::Error) -> String {
    use tungstenite::Error as E;
    match error {
        E::Http(response) => format!("http {}", response.status().as_u16()),
        E::Io(io) => format!("io {:?}", io.kind()),
        E::ConnectionClosed | E::AlreadyClosed => "connection closed".into(),
        E::Protocol(p) => format!("protocol: {p}"),
        E::Url(u) => format!("bad url: {u}"),
        other => other.to_string(),
    }
}

/// Closes politely (close frame, then wait briefly for the server's), but never waits past
/// two seconds or the deadline: the report must not hang on a peer that went quiet.
pub async fn close(socket: &mut Socket, deadline: Instant) {
    let until = deadline.min(Instant::now() + Duration::from_secs(2));
    let _ = tokio::time::timeout_at(until, async {
        let frame = tungstenite::protocol::CloseFrame {
            code: CloseCode::Normal,
            reason: "load test done".into(),
        };
        if socket.send(Message::Close(Some(frame))).await.is_ok() {
            while let Some(Ok(_)) = socket.next().await {}
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use wsfleet::protocol::CountReply;

    #[test]
    fn frames_parse_into_events() {
        assert!(matches!(
            parse_frame(r#"{"count":7}"#),
            Event::Frame(ServerFrame::Count(CountReply { count: 7 }))
        ));
        assert!(matches!(parse_frame("nope"), Event::Unknown(_)));
        assert_eq!(
            Event::Closed(1008, "rate limit exceeded".into()).describe(),
            "closed 1008 (rate limit exceeded)"
        );
        assert_eq!(Event::Closed(1005, String::new()).describe(), "closed 1005");
    }
}
