//! Hold: keep the sockets idle until `until`, reading whatever the server sends. Reading is
//! what answers the server's pings (tungstenite replies on the next read), so a held socket
//! stays alive exactly as an idle browser tab would.
//!
//! `--warmup-messages` first has each socket exchange a few counted messages: a socket that
//! has never handled a message may not have touched all of its memory yet, so "idle after
//! some chat" is the honest memory figure, and "never used" the optimistic one.

use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::closed_loop;
use super::finish::Seat;
use crate::{link::Link, stats::Tally};

pub async fn run(
    mut link: Link,
    seat: Seat,
    warmup_messages: u64,
    payload: Utf8Bytes,
    until: Instant,
    deadline: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let work = async {
        closed_loop::exchange(&mut link, warmup_messages, &payload, &mut tally, deadline).await?;
        // The hold ending is the normal way out: the socket was open all along.
        closed_loop::idle(&mut link, &mut tally, until, deadline).await
    };
    match tokio::time::timeout_at(deadline, work).await {
        Ok(Ok(())) => {
            tally.open_at_end = true;
            seat.close_when_all_done(&mut link.socket, deadline).await;
        }
        Ok(Err(kind)) => tally.error(kind),
        Err(_) => tally.error("deadline"),
    }
    tally
}
