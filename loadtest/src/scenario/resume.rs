//! Resume: every socket has its own session (`<prefix>-<i>`) and has `messages` frames counted
//! over `resumes + 1` connections: it closes its socket and reopens the same session
//! `resumes` times. Each welcome after a reopen must carry exactly the last count the socket
//! was told (no gap, no repeat), and the replies must go on from it.

use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::closed_loop;
use super::finish::Seat;
use crate::{link::Link, stats::Tally};

pub async fn run(
    mut link: Link,
    seat: Seat,
    messages: u64,
    resumes: u64,
    payload: Utf8Bytes,
    deadline: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let work = async {
        for connection in 0..=resumes {
            let share = share_of(messages, resumes + 1, connection);
            closed_loop::exchange(&mut link, share, &payload, &mut tally, deadline).await?;
            if connection < resumes {
                link.reopen(&mut tally, deadline).await?;
            }
        }
        Ok::<(), String>(())
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

/// Messages connection `k` of `connections` sends: `total` split as evenly as it goes, the
/// first ones taking one more when it does not divide.
fn share_of(total: u64, connections: u64, k: u64) -> u64 {
    total / connections + u64::from(k < total % connections)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_spread_evenly_over_the_connections() {
        let shares = |total, connections| {
            (0..connections)
                .map(|k| share_of(total, connections, k))
                .collect::<Vec<_>>()
        };
        assert_eq!(shares(10, 4), [3, 3, 2, 2]);
        assert_eq!(shares(8, 4), [2, 2, 2, 2]);
        assert_eq!(shares(2, 4), [1, 1, 0, 0]);
        assert_eq!(shares(7, 1), [7]);
    }
}
