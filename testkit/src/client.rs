//! A real WebSocket client for the tests (tokio-tungstenite), with buffers sized like the
//! server's.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::{
    tungstenite::{protocol::WebSocketConfig, Message},
    MaybeTlsStream, WebSocketStream,
};

/// Longest wait for one frame or for the close.
pub const FRAME_PATIENCE: Duration = Duration::from_secs(10);

/// A client socket over plain TCP.
pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A real WebSocket client (tokio-tungstenite) and the welcome frame it was greeted with, as
/// `W` (the server's `Welcome`: this crate does not depend on the server's library).
pub struct Client<W> {
    pub ws: Socket,
    pub welcome: W,
}

pub fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

impl<W: DeserializeOwned> Client<W> {
    pub async fn connect(url: &str) -> Client<W> {
        let (mut ws, _) =
            tokio_tungstenite::connect_async_with_config(url, Some(client_config()), false)
                .await
                .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
        let first = next_text(&mut ws).await;
        let welcome: W = serde_json::from_str(&first)
            .unwrap_or_else(|e| panic!("first frame {first:?} is not a welcome: {e}"));
        Client { ws, welcome }
    }

    pub async fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    /// The next frame as JSON, heartbeats included.
    pub async fn next_json(&mut self) -> Value {
        let text = next_text(&mut self.ws).await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("frame {text:?} is not JSON: {e}"))
    }

    /// The next frame that is not a heartbeat or a broadcast.
    pub async fn next_reply(&mut self) -> Value {
        loop {
            let frame = self.next_json().await;
            if frame.get("ts").is_none() {
                return frame;
            }
        }
    }

    /// Sends `text` and returns its reply, resending it (as a client must) while the reply is
    /// `unavailable`, for up to `patience`: for tests where Redis may be briefly unable to
    /// count (a `WAIT` that times out on a loaded machine, a failover), and what matters is
    /// which count comes, not when.
    pub async fn count_through_unavailable(&mut self, text: &str, patience: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            self.send(text).await;
            let reply = self.next_reply().await;
            if reply != serde_json::json!({"error": "unavailable", "retry": true}) {
                return reply;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "still unavailable after {patience:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Reads until the server closes; returns the close code and reason.
    pub async fn expect_close(&mut self) -> (u16, String) {
        let deadline = tokio::time::Instant::now() + FRAME_PATIENCE;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => panic!("no close frame within {FRAME_PATIENCE:?}"),
                Ok(Some(Ok(Message::Close(Some(frame))))) => {
                    return (frame.code.into(), frame.reason.to_string())
                }
                Ok(Some(Ok(Message::Close(None)))) => return (1005, String::new()),
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(e))) => panic!("socket error before a close frame: {e}"),
                Ok(None) => panic!("socket ended without a close frame"),
            }
        }
    }
}

async fn next_text(ws: &mut Socket) -> String {
    loop {
        match tokio::time::timeout(FRAME_PATIENCE, ws.next()).await {
            Err(_) => panic!("no frame within {FRAME_PATIENCE:?}"),
            Ok(Some(Ok(Message::Text(text)))) => return text.to_string(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(other) => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// The HTTP status and JSON body of a refused upgrade.
pub async fn refused_upgrade(url: &str) -> (u16, Value) {
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => panic!("upgrade to {url} should have been refused"),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_ref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            (status, body)
        }
        Err(other) => panic!("expected an HTTP refusal from {url}, got {other}"),
    }
}
