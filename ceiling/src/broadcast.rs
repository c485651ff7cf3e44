//! The ceiling's fan-out (`--fan-out`): `POST /broadcast` hands the message to every socket of
//! this process through one `tokio::sync::broadcast` ring, as the frame wsfleet sends
//! (`{"broadcast": …, "ts": …}`, built by the same code). No Redis, no pub/sub, no token, no
//! sharding or pacing: what one broadcast to every local socket costs at the least, for the
//! bench's fan-out section. Several ceiling processes share nothing: the load tester posts
//! each broadcast to every one of them (repeatable `--broadcast-url`).
//!
//! The HTTP side is just enough for the load tester's requests: one request per connection,
//! answered and closed. Bench-only, loopback-only; never meant to face a network.

use std::time::Duration;

use serde::Deserialize;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::broadcast,
};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use wsfleet::protocol::{timestamp_now, ChannelMessage};

/// Frames the ring holds for the slowest socket, as wsfleet's.
pub const RING: usize = 256;

/// Longest request head, and longest body (wsfleet's limit for `POST /broadcast`).
const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 64 * 1024;

/// Longest time a request may take to arrive.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
struct Body {
    message: serde_json::Value,
}

/// Whether the connection's first bytes are a `POST` (not a WebSocket upgrade, which is a
/// `GET`). Waits for the first bytes without taking them.
pub async fn is_post(tcp: &TcpStream) -> bool {
    let mut first = [0u8; 5];
    let peeked = tokio::time::timeout(READ_TIMEOUT, async {
        loop {
            match tcp.peek(&mut first).await {
                Ok(n) if n >= first.len() || n == 0 => return n,
                Ok(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                Err(_) => return 0,
            }
        }
    })
    .await;
    matches!(peeked, Ok(5)) && &first == b"POST "
}

/// Answers one `POST /broadcast` and closes the connection. `ring` is `None` without
/// `--fan-out`: the endpoint then answers 404.
pub async fn serve(mut tcp: TcpStream, ring: Option<&broadcast::Sender<Utf8Bytes>>) {
    let (status, body) = match tokio::time::timeout(READ_TIMEOUT, read_request(&mut tcp)).await {
        Err(_) => (408, r#"{"error":"request timed out"}"#.to_string()),
        Ok(Err((status, error))) => (status, serde_json::json!({ "error": error }).to_string()),
        Ok(Ok(message)) => match ring {
            None => (
                404,
                r#"{"error":"start wsfleet-ceiling with --fan-out"}"#.into(),
            ),
            Some(ring) => {
                let frame = ChannelMessage::Broadcast {
                    message,
                    ts: timestamp_now(),
                }
                .client_frame()
                .expect("a broadcast has a client frame");
                // An error only means no socket is connected.
                let connections = ring.send(Utf8Bytes::from(frame)).unwrap_or(0);
                (
                    202,
                    format!(r#"{{"instances":1,"connections":{connections}}}"#),
                )
            }
        },
    };
    let reason = match status {
        202 => "Accepted",
        400 => "Bad Request",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Content Too Large",
        _ => "Unprocessable Content",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tcp.write_all(response.as_bytes()).await;
    let _ = tcp.shutdown().await;
}

/// Reads the request and returns its `message`, or the status and error to answer.
async fn read_request(tcp: &mut TcpStream) -> Result<serde_json::Value, (u16, &'static str)> {
    let mut buf = Vec::with_capacity(1024);
    let (head_len, path_ok, content_length) = loop {
        read_more(tcp, &mut buf, "incomplete request").await?;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let length = request
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok());
                break (head_len, request.path == Some("/broadcast"), length);
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => continue,
            Ok(httparse::Status::Partial) => return Err((413, "request head too large")),
            Err(_) => return Err((400, "malformed request")),
        }
    };
    if !path_ok {
        return Err((404, "only POST /broadcast"));
    }
    let length: usize = content_length.ok_or((400, "content-length required"))?;
    if length > MAX_BODY {
        return Err((413, "body over 64 KiB"));
    }
    while buf.len() < head_len + length {
        read_more(tcp, &mut buf, "incomplete body").await?;
    }
    let body: Body = serde_json::from_slice(&buf[head_len..head_len + length])
        .map_err(|_| (422, "body must be {\"message\": …}"))?;
    Ok(body.message)
}

/// Appends what the next read brings to `buf`; the end of the stream is `short`.
async fn read_more(
    tcp: &mut TcpStream,
    buf: &mut Vec<u8>,
    short: &'static str,
) -> Result<(), (u16, &'static str)> {
    let mut chunk = [0u8; 4096];
    match tcp.read(&mut chunk).await {
        Ok(0) => Err((400, short)),
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(())
        }
        Err(_) => Err((400, "read failed")),
    }
}
