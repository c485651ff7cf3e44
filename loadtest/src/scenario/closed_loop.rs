//! Closed loop: send one frame, wait for its reply, repeat. Each socket has at most one
//! message in flight, so throughput is sockets / round trip and the latency is the plain
//! round trip (no queueing inside the client).

use futures_util::SinkExt;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use wsfleet::protocol::ServerFrame;

use crate::{
    client::{self, Conn, Event},
    stats::Tally,
    verify::CountCheck,
};

pub async fn run(conn: Conn, messages: u64, payload: Utf8Bytes, deadline: Instant) -> Tally {
    let Conn {
        mut socket,
        welcome,
    } = conn;
    let mut tally = Tally::default();
    let mut check = CountCheck::new(welcome.count);
    let outcome = tokio::time::timeout_at(
        deadline,
        exchange(&mut socket, messages, &payload, &mut tally, &mut check),
    )
    .await;
    match outcome {
        Ok(Ok(())) => {
            tally.open_at_end = true;
            client::close(&mut socket, deadline).await;
        }
        Ok(Err(kind)) => tally.error(kind),
        Err(_) => tally.error("deadline"),
    }
    tally
}

/// Sends `messages` frames one at a time, each after the previous one's reply, checking
/// every count. Err ends the socket.
pub async fn exchange(
    socket: &mut client::Socket,
    messages: u64,
    payload: &Utf8Bytes,
    tally: &mut Tally,
    check: &mut CountCheck,
) -> Result<(), String> {
    for _ in 0..messages {
        let sent_at = Instant::now();
        if let Err(e) = socket.send(Message::Text(payload.clone())).await {
            return Err(format!("send: {}", client::error_kind(&e)));
        }
        tally.sent += 1;
        await_reply(socket, tally, check, sent_at).await?;
    }
    Ok(())
}

/// Reads until the answer to the frame sent at `sent_at`, counting what comes in between
/// (heartbeats and broadcasts share the socket). Err ends the socket.
async fn await_reply(
    socket: &mut client::Socket,
    tally: &mut Tally,
    check: &mut CountCheck,
    sent_at: Instant,
) -> Result<(), String> {
    loop {
        match client::next_event(socket).await {
            Event::Frame(ServerFrame::Count(reply)) => {
                tally.record_latency(sent_at.elapsed());
                tally.received += 1;
                if !check.observe(reply.count) {
                    tally.count_violations += 1;
                }
                return Ok(());
            }
            // Answered but not counted (Redis unavailable): the reply to this frame, so the
            // loop goes on, and the counter must not have moved.
            Event::Frame(ServerFrame::Error(e)) => {
                tally.error(format!("error reply: {}", e.error));
                return Ok(());
            }
            Event::Frame(ServerFrame::Heartbeat(_)) => tally.heartbeats += 1,
            Event::Frame(ServerFrame::Broadcast(_)) => {}
            Event::Frame(ServerFrame::Bye(_)) => return Err("server drained (bye)".into()),
            other => return Err(other.describe()),
        }
    }
}
