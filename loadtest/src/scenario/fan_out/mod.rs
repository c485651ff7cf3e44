//! Fan-out: every socket listens while broadcasts are published with `POST /broadcast`; each
//! socket must receive each broadcast exactly once.
//!
//! Publishing ([`Publisher::publish`]) and receiving ([`receive`]) are separate steps: the
//! coordinating process publishes once, right after every socket of every process is
//! connected ([`crate::coordinator`]), and says when it is done publishing (in-process, or
//! to each worker on its stdin); receivers then wait [`DELIVERY_GRACE`] more for what they
//! still miss ([`stop_after_grace`]). Latency therefore comes from wall clocks, not from an
//! `Instant` shared in memory: each broadcast carries its publish time in unix microseconds
//! ([`Stamp`]), and a receiver subtracts it from its own clock at arrival. Processes on one
//! machine share that clock.

use std::{collections::BTreeSet, pin::pin, time::Duration};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::{sync::watch, task::JoinHandle, time::Instant};
use wsfleet::protocol::{Broadcast, ServerFrame};

mod publisher;

pub use publisher::{Published, Publisher};

use super::finish::Seat;
use crate::{
    cli::Scenario,
    client::{self, Event},
    link::{self, Link},
    recovery::Position,
    series,
    stats::Tally,
    verify::offsets::OffsetCheck,
};

/// How long after the last broadcast was published receivers still wait for what they miss.
/// Every socket stays open until then, even one that has every broadcast: closing it at once
/// would make the servers' close handshakes and registry removals compete with delivering the
/// last broadcast to the sockets still waiting for it, and that broadcast's latency would
/// measure the teardown (it did: the last of three broadcasts to 50,000 took 3 s, the first
/// two 1 s). Sockets also go on checking that nothing arrives twice.
pub const DELIVERY_GRACE: Duration = Duration::from_secs(5);

/// What each broadcast of a run carries: which run, which one of them, and when it was sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// The run's id: broadcasts of another run (or an operator's) are not counted.
    pub wsfleet_loadtest: String,
    /// 0-based number of the broadcast within the run.
    pub seq: u64,
    /// Wall-clock time of publishing, unix microseconds.
    pub published_us: u64,
}

impl Stamp {
    /// The stamp of this run in a broadcast's `broadcast` value, if it is one.
    pub fn of_run(value: &Value, run_id: &str) -> Option<Stamp> {
        let stamp: Stamp = serde_json::from_value(value.clone()).ok()?;
        (stamp.wsfleet_loadtest == run_id).then_some(stamp)
    }
}

/// What a fan-out run publishes, and where.
#[derive(Debug, Clone, Copy)]
pub struct Plan<'a> {
    /// The `POST /broadcast` URL of one instance (of each server, for servers that share
    /// no channel).
    pub broadcast_urls: &'a [String],
    pub token: &'a str,
    /// Tags this run's broadcasts (see [`Stamp`]).
    pub run_id: &'a str,
    pub broadcasts: u64,
    /// Time between two broadcasts.
    pub interval: Duration,
    /// `--resume`: receivers recover the broadcast stream with offsets; each broadcast
    /// carries an Idempotency-Key and is retried until accepted.
    pub resume: bool,
}

impl<'a> Plan<'a> {
    /// The plan of a fan-out run; `None` for the other scenarios.
    pub fn of(scenario: &'a Scenario) -> Option<Plan<'a>> {
        match scenario {
            Scenario::FanOut {
                broadcast_urls,
                token,
                broadcasts,
                broadcast_interval,
                run_id,
                resume,
                ..
            } => Some(Plan {
                broadcast_urls,
                token: token.expose(),
                run_id: run_id.as_deref().unwrap_or_default(),
                broadcasts: *broadcasts,
                interval: *broadcast_interval,
                resume: *resume,
            }),
            _ => None,
        }
    }
}

/// Turns true [`DELIVERY_GRACE`] after `published` turns true (or its sender goes away:
/// nothing more will be published then either), or at `deadline`: when receivers still
/// missing a broadcast stop waiting for it. The task is the caller's to abort.
pub fn stop_after_grace(
    mut published: watch::Receiver<bool>,
    deadline: Instant,
) -> (watch::Receiver<bool>, JoinHandle<()>) {
    let (stop, stopping) = watch::channel(false);
    let task = tokio::spawn(async move {
        tokio::select! {
            _ = published.wait_for(|published| *published) => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
        let grace = Instant::now() + DELIVERY_GRACE;
        tokio::time::sleep_until(grace.min(deadline)).await;
        stop.send_replace(true);
    });
    (stopping, task)
}

/// One socket's side: reads until `stop` turns true (publishing is over and its grace
/// passed, see [`DELIVERY_GRACE`]) or `deadline`, whether or not it already has every one of
/// the run's `broadcasts`. Each delivery is a
/// received message with its latency; each broadcast missed is an error, and so is one
/// delivered twice. A socket the server ends is resumed when the link follows such closes.
/// Without `from` (no --resume; `Some(None)`: --resume, but the welcome did not say where the
/// stream stood, an error) broadcasts published while it was away are missed: delivery
/// is at most once. With `from` (the welcome's place in the broadcast stream) the link
/// recovers them by offset, every offset of the stream is checked (once, in order: see
/// [`OffsetCheck`]), and a socket still missing one of the run's broadcasts when `stop`
/// turns true reads on until it has them or the deadline.
pub async fn receive(
    mut link: Link,
    mut seat: Seat,
    run_id: String,
    broadcasts: u64,
    from: Option<Option<Position>>,
    mut stop: watch::Receiver<bool>,
    deadline: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let mut seen = BTreeSet::new();
    if from.as_ref().is_some_and(Option::is_none) {
        tally.error("resume: a welcome without offset");
    }
    let from = from.flatten();
    let mut offsets = from
        .as_ref()
        .map(|from| OffsetCheck::joined_at(from.offset));
    link.since = from;
    let mut overtime = false;
    // Made once, not per frame: a new `sleep_until` per frame is a timer-wheel insert and
    // removal, and a new `wait_for` registers on and leaves a list that every socket of
    // the process shares, each under its lock (this tool shares the cores with the servers).
    let mut stopped = pin!(stop.wait_for(|stop| *stop));
    let mut expired = pin!(tokio::time::sleep_until(deadline));
    let outcome = loop {
        let event = tokio::select! {
            event = client::next_event(&mut link.socket) => event,
            // Err: the sender is gone, so nothing more will be published either.
            _ = stopped.as_mut(), if !overtime => {
                if offsets.is_none() || seen.len() as u64 >= broadcasts {
                    break Ok(());
                }
                overtime = true;
                continue;
            }
            // Only an error for a socket still missing a broadcast.
            () = expired.as_mut() => {
                break if seen.len() as u64 >= broadcasts { Ok(()) } else { Err("deadline".to_string()) };
            }
        };
        match event {
            Event::Frame(ServerFrame::Broadcast(b)) => {
                if let Some(check) = &mut offsets {
                    stream_offset(check, &mut link, &b, &mut tally);
                }
                let Some(stamp) = Stamp::of_run(&b.broadcast, &run_id) else {
                    continue;
                };
                if stamp.seq >= broadcasts {
                    tally.error("broadcast beyond --broadcasts");
                } else if !seen.insert(stamp.seq) {
                    tally.error("broadcast delivered twice");
                } else {
                    tally.received += 1;
                    let latency_us = series::unix_micros().saturating_sub(stamp.published_us);
                    tally.record_latency(Duration::from_micros(latency_us));
                    // Its work is done (the run phase may end), but it stays open and
                    // reading until the grace is over, see DELIVERY_GRACE.
                    if seen.len() as u64 == broadcasts {
                        seat.done();
                        if overtime {
                            break Ok(());
                        }
                    }
                }
            }
            Event::Frame(ServerFrame::Heartbeat(_)) => tally.heartbeats += 1,
            other if link.resumes_after(&other) => {
                if let Err(kind) = link.recover(other, 0, &mut tally, deadline).await {
                    break Err(kind);
                }
            }
            other => break Err(link::loss_kind(&other)),
        }
    };
    tally.errors_of_kind("broadcast missed", broadcasts - seen.len() as u64);
    if let Some(check) = offsets {
        // Up to the highest offset seen: a gap below it is lost; a tail never reached is
        // the run's broadcasts missed, counted above.
        let highest = link.since.as_ref().map_or(0, |since| since.offset);
        let breaks = check.finish(highest);
        tally.count_violations += breaks.total();
        tally.rooms.add(&breaks);
    }
    match outcome {
        Ok(()) => {
            tally.open_at_end = true;
            seat.close_when_all_done(&mut link.socket, deadline).await;
        }
        Err(kind) => tally.error(kind),
    }
    tally
}

/// Checks one broadcast's place in the stream and moves the link's `since` to it.
fn stream_offset(check: &mut OffsetCheck, link: &mut Link, b: &Broadcast, tally: &mut Tally) {
    let (Some(offset), Some(epoch)) = (b.offset, b.epoch.as_deref()) else {
        tally.error("broadcast without offset");
        return;
    };
    check.receive(offset);
    if let Some(since) = &mut link.since {
        since.advance(offset, epoch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_of_this_run_are_recognised_and_others_ignored() {
        let stamp = Stamp {
            wsfleet_loadtest: "run1".into(),
            seq: 2,
            published_us: 1_700_000_000_000_000,
        };
        let value = serde_json::to_value(&stamp).unwrap();
        assert_eq!(Stamp::of_run(&value, "run1"), Some(stamp));
        assert_eq!(Stamp::of_run(&value, "run2"), None);
        assert_eq!(Stamp::of_run(&Value::from("hello, fleet"), "run1"), None);
        assert_eq!(
            Stamp::of_run(&serde_json::json!({"seq": 1}), "run1"),
            None,
            "an operator's message that merely looks alike"
        );
    }
}
