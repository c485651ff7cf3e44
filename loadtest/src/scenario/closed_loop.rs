//! Closed loop: send one frame, wait for its reply, repeat. Each socket has at most one
//! message in flight, so throughput is sockets / round trip and the latency is the plain
//! round trip (no queueing inside the client).

use std::time::Duration;

use futures_util::SinkExt;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use wsfleet::protocol::ServerFrame;

use super::finish::Seat;
use crate::{
    client::{self, Event},
    link::{self, Link},
    stats::Tally,
};

pub async fn run(
    mut link: Link,
    seat: Seat,
    messages: u64,
    payload: Utf8Bytes,
    deadline: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let outcome = tokio::time::timeout_at(
        deadline,
        exchange(&mut link, messages, &payload, &mut tally, deadline),
    )
    .await;
    match outcome {
        Ok(Ok(())) => {
            tally.open_at_end = true;
            seat.close_when_all_done(&mut link.socket, deadline).await;
        }
        Ok(Err(kind)) => tally.error(kind),
        Err(_) => tally.error("deadline"),
    }
    tally
}

/// Has `messages` frames counted, sending one at a time, each after the previous one's
/// reply, checking every count. A socket the server ends is resumed when the link follows
/// such closes, and the frame in flight is resent unless the welcome shows it was counted.
/// A frame answered `unavailable` is sent again after [`UNAVAILABLE_BACKOFF`], as
/// docs/PROTOCOL.md tells a client to. Err ends the socket.
pub async fn exchange(
    link: &mut Link,
    messages: u64,
    payload: &Utf8Bytes,
    tally: &mut Tally,
    deadline: Instant,
) -> Result<(), String> {
    let mut done = 0;
    while done < messages {
        let sent_at = Instant::now();
        let lost = match link.socket.send(Message::Text(payload.clone())).await {
            // Whether the frame left before the failure is unknown: the welcome will tell.
            Err(e) => Event::Failed(format!("send: {}", client::error_kind(&e))),
            Ok(()) => {
                tally.sent += 1;
                match await_reply(link, tally, sent_at).await {
                    Reply::Counted => {
                        done += 1;
                        continue;
                    }
                    Reply::Unavailable => {
                        if Instant::now() + UNAVAILABLE_BACKOFF >= deadline {
                            return Err("answered unavailable until the deadline".into());
                        }
                        tokio::time::sleep(UNAVAILABLE_BACKOFF).await;
                        continue;
                    }
                    Reply::Lost(lost) => lost,
                }
            }
        };
        done += link.recover(lost, 1, tally, deadline).await?;
    }
    Ok(())
}

/// How long a frame answered `unavailable` waits before it is sent again: long enough not to
/// hammer a Redis that is coming back, short next to `--redis-timeout` (2 s).
const UNAVAILABLE_BACKOFF: Duration = Duration::from_millis(100);

/// What became of a frame sent.
enum Reply {
    /// Counted, and the count checked.
    Counted,
    /// Answered `unavailable`: not counted as far as this client knows; send it again.
    Unavailable,
    /// The socket ended with this event before the answer came.
    Lost(Event),
}

/// Reads until the answer to the frame sent at `sent_at`, counting what comes in between
/// (heartbeats and broadcasts share the socket).
async fn await_reply(link: &mut Link, tally: &mut Tally, sent_at: Instant) -> Reply {
    loop {
        match client::next_event(&mut link.socket).await {
            Event::Frame(ServerFrame::Count(reply)) => {
                tally.record_latency(sent_at.elapsed());
                tally.count_reply(&mut link.check, reply.count);
                return Reply::Counted;
            }
            // Not counted (Redis did not answer in time): the protocol's rule is to send it
            // again; the server makes sure it is counted once (docs/PROTOCOL.md).
            Event::Frame(ServerFrame::Error(e)) if e.error == "unavailable" && e.retry => {
                tally.unavailable += 1;
                return Reply::Unavailable;
            }
            // Any other error frame answers this frame too: the loop goes on, and the counter
            // must not have moved.
            Event::Frame(ServerFrame::Error(e)) => {
                tally.error(format!("error reply: {}", e.error));
                return Reply::Counted;
            }
            Event::Frame(ServerFrame::Heartbeat(_)) => tally.heartbeats += 1,
            Event::Frame(ServerFrame::Broadcast(_)) => {}
            other => return Reply::Lost(other),
        }
    }
}

/// Keeps `link` open and reading until `until`: heartbeats are counted, broadcasts ignored,
/// a socket the server ends is resumed (when the link follows such closes). Err ends it.
pub async fn idle(
    link: &mut Link,
    tally: &mut Tally,
    until: Instant,
    deadline: Instant,
) -> Result<(), String> {
    loop {
        let Ok(event) = tokio::time::timeout_at(until, client::next_event(&mut link.socket)).await
        else {
            return Ok(());
        };
        match event {
            Event::Frame(ServerFrame::Heartbeat(_)) => tally.heartbeats += 1,
            Event::Frame(ServerFrame::Broadcast(_)) => {}
            other if link.resumes_after(&other) => {
                link.recover(other, 0, tally, deadline).await?;
            }
            other => return Err(link::loss_kind(&other)),
        }
    }
}
