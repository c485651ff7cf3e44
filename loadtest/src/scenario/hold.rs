//! Hold: keep the sockets idle until `until`, reading whatever the server sends. Reading is
//! what answers the server's pings (tungstenite replies on the next read), so a held socket
//! stays alive exactly as an idle browser tab would.
//!
//! `--warmup-messages` first has each socket exchange a few counted messages: a socket that
//! has never handled a message may not have touched all of its memory yet, so "idle after
//! some chat" is the honest memory figure, and "never used" the optimistic one.

use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use wsfleet::protocol::ServerFrame;

use super::closed_loop;
use crate::{
    client::{self, Conn, Event},
    stats::Tally,
    verify::CountCheck,
};

pub async fn run(
    conn: Conn,
    warmup_messages: u64,
    payload: Utf8Bytes,
    until: Instant,
    deadline: Instant,
) -> Tally {
    let Conn {
        mut socket,
        welcome,
    } = conn;
    let mut tally = Tally::default();
    let mut check = CountCheck::new(welcome.count);
    let warmup = closed_loop::exchange(
        &mut socket,
        warmup_messages,
        &payload,
        &mut tally,
        &mut check,
    );
    match tokio::time::timeout_at(deadline, warmup).await {
        Ok(Ok(())) => {}
        Ok(Err(kind)) => {
            tally.error(kind);
            return tally;
        }
        Err(_) => {
            tally.error("deadline");
            return tally;
        }
    }
    loop {
        // The hold ending is the normal way out: the socket was open all along.
        let Ok(event) = tokio::time::timeout_at(until, client::next_event(&mut socket)).await
        else {
            tally.open_at_end = true;
            client::close(&mut socket, deadline).await;
            return tally;
        };
        match event {
            Event::Frame(ServerFrame::Heartbeat(_)) => tally.heartbeats += 1,
            Event::Frame(ServerFrame::Broadcast(_)) => {}
            Event::Frame(ServerFrame::Bye(_)) => {
                tally.error("server drained (bye)");
                return tally;
            }
            other => {
                tally.error(other.describe());
                return tally;
            }
        }
    }
}
