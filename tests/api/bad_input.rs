//! Hostile and malformed input, as a table: each case gets a clear refusal and loses nothing.

use std::time::Duration;

use futures_util::SinkExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::{
    protocol::frame::{
        coding::{Data, OpCode},
        Frame,
    },
    Message,
};

use crate::helpers::{spawn_app, Client, RedisServer};

/// Sends raw bytes and returns the status line of the answer.
async fn raw_request(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn malformed_upgrade_requests_get_a_4xx_and_no_socket() {
    let redis = RedisServer::start().await;
    let app = spawn_app(&redis, &[]).await;
    let upgrade = |extra: &str| {
        format!(
            "GET /ws/chat/ HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n{extra}\r\n"
        )
    };
    let huge_header = format!("X-Junk: {}\r\n", "a".repeat(200_000));
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "no Sec-WebSocket-Key",
            upgrade("Sec-WebSocket-Version: 13\r\n"),
            " 400 ",
        ),
        (
            "unsupported version",
            upgrade("Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"),
            " 400 ",
        ),
        (
            "POST to the socket route",
            "POST /ws/chat/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".to_string(),
            " 405 ",
        ),
        ("headers over the limit", upgrade(&huge_header), " 431 "),
        (
            "not HTTP at all",
            "\x16\x03\x01 hello\r\n\r\n".to_string(),
            " 400 ",
        ),
    ];
    for (what, request, expected) in cases {
        let status = raw_request(app.addr, request.as_bytes()).await;
        assert!(status.contains(expected), "{what}: got {status:?}");
    }
    // The node is unharmed.
    let mut client = Client::connect(&app.ws_url(None)).await;
    client.send("x").await;
    assert_eq!(client.next_reply().await["count"], 1);
}

#[tokio::test]
async fn protocol_abuse_closes_the_socket_with_the_matching_code() {
    let redis = RedisServer::start().await;
    let app = spawn_app(&redis, &["--max-message-bytes", "4096"]).await;
    let fragment = |fin: bool, first: bool| {
        let code = if first {
            OpCode::Data(Data::Text)
        } else {
            OpCode::Data(Data::Continue)
        };
        Message::Frame(Frame::message(vec![b'a'; 512], code, fin))
    };
    let mut flood = vec![fragment(false, true)];
    flood.extend((0..40).map(|_| fragment(false, false)));
    let cases: Vec<(&str, Vec<Message>, u16)> = vec![
        ("fragments adding up past the limit", flood, 1009),
        (
            "continuation without a start",
            vec![fragment(true, false)],
            1002,
        ),
    ];
    for (what, frames, code) in cases {
        let mut client = Client::connect(&app.ws_url(None)).await;
        for frame in frames {
            if client.ws.send(frame).await.is_err() {
                break;
            }
        }
        let (got, reason) = client.expect_close().await;
        assert_eq!(got, code, "{what}: reason {reason:?}");
        assert!(!reason.is_empty(), "{what}");
    }
    // tungstenite refuses to build a control frame over 125 bytes, so write one by hand:
    // FIN + ping, masked, 16-bit length 200, zero mask.
    let mut client = Client::connect(&app.ws_url(None)).await;
    let mut raw = vec![0x89, 0x80 | 126, 0, 200, 0, 0, 0, 0];
    raw.extend(std::iter::repeat_n(0u8, 200));
    match client.ws.get_mut() {
        tokio_tungstenite::MaybeTlsStream::Plain(tcp) => tcp.write_all(&raw).await.unwrap(),
        _ => unreachable!("plain ws:// in tests"),
    }
    let (code, reason) = client.expect_close().await;
    assert_eq!(code, 1002, "control frame over 125 bytes: {reason:?}");

    // A message in several fragments within the limit is one message, counted once.
    let mut client = Client::connect(&app.ws_url(None)).await;
    client.ws.send(fragment(false, true)).await.unwrap();
    client.ws.send(fragment(true, false)).await.unwrap();
    assert_eq!(client.next_reply().await["count"], 1);
}
