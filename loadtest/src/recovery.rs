//! `--resume` with offsets: the client's bookkeeping for recovering a publication stream
//! across a reconnect (SPEC "History and recovery", docs/PROTOCOL.md).
//!
//! A member (or fan-out socket) knows where it stands in its stream ([`Position`]: the
//! highest offset it has, and the stream's epoch). After the server ends its socket (a
//! drain's `bye` and 1001, a 1013 slow close, a connection lost to a SIGKILL) it reconnects
//! its session, passing that position (`since`/`epoch` on the URL for broadcasts, on the
//! `join` for a room), and the server answers `recovered: true` and sends what was missed
//! before anything live. `recovered: false` (or no answer at all) means the history could not
//! cover the gap: a violation of the invariant, counted ([`judge_recovered`]).
//!
//! A publisher cannot tell whether a message in flight when its socket went down was
//! published. Its [`Outbox`] keeps every message until it comes back through the room (the
//! sender receives its own publications), and after the rejoin sends the rest again with the
//! same client `id`: the server publishes an id once, so a resend is safe either way.

use std::collections::BTreeMap;

use crate::stats::Tally;

/// Where a socket stands in one publication stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The highest offset received (the join's or welcome's offset before any).
    pub offset: u64,
    pub epoch: String,
}

impl Position {
    /// Moves to a received publication: the offset only goes up (a late one below does not
    /// move it), the epoch is the latest seen.
    pub fn advance(&mut self, offset: u64, epoch: &str) {
        self.offset = self.offset.max(offset);
        if self.epoch != epoch {
            self.epoch = epoch.to_string();
        }
    }
}

/// Judges the `recovered` of an answer to a request with `since`: anything but `true` means
/// publications may have been lost without the verifier being able to tell which, so it is a
/// count violation of its own, reported as `not_recovered`.
pub fn judge_recovered(recovered: Option<bool>, tally: &mut Tally) {
    if recovered != Some(true) {
        tally.resumes.not_recovered += 1;
        tally.count_violations += 1;
    }
}

/// A publisher's messages sent but not yet seen back through the room, by client id.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Client id → the exact frame sent (a resend carries the same content and send time,
    /// so its latency includes the outage).
    unconfirmed: BTreeMap<u64, String>,
}

impl Outbox {
    /// Message `id` was sent as `frame`.
    pub fn sent(&mut self, id: u64, frame: String) {
        self.unconfirmed.insert(id, frame);
    }

    /// Message `id` came back through the room: it was published.
    pub fn confirmed(&mut self, id: u64) {
        self.unconfirmed.remove(&id);
    }

    /// The frames to send again after a rejoin, in the order of their ids.
    pub fn to_resend(&self) -> Vec<String> {
        self.unconfirmed.values().cloned().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.unconfirmed.is_empty()
    }

    pub fn len(&self) -> usize {
        self.unconfirmed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_position_only_moves_up_and_follows_the_epoch() {
        let mut p = Position {
            offset: 4,
            epoch: "e1".into(),
        };
        p.advance(5, "e1");
        p.advance(3, "e1");
        assert_eq!(p.offset, 5, "a late offset does not move it back");
        p.advance(6, "e2");
        assert_eq!(
            p,
            Position {
                offset: 6,
                epoch: "e2".into()
            }
        );
    }

    #[test]
    fn messages_not_seen_back_are_resent_in_order_and_confirmed_ones_are_not() {
        let mut outbox = Outbox::default();
        assert!(outbox.is_empty());
        outbox.sent(4, "four".into());
        outbox.sent(2, "two".into());
        outbox.sent(6, "six".into());
        outbox.confirmed(4);
        outbox.confirmed(9); // another publisher's id, or one confirmed twice: no harm
        assert_eq!(outbox.to_resend(), ["two", "six"]);
        outbox.confirmed(2);
        outbox.confirmed(6);
        assert!(outbox.is_empty());
        assert!(outbox.to_resend().is_empty());
    }

    #[test]
    fn anything_but_recovered_true_is_a_violation() {
        let mut tally = Tally::default();
        judge_recovered(Some(true), &mut tally);
        assert_eq!(
            (tally.resumes.not_recovered, tally.count_violations),
            (0, 0)
        );
        judge_recovered(Some(false), &mut tally);
        judge_recovered(None, &mut tally);
        assert_eq!(
            (tally.resumes.not_recovered, tally.count_violations),
            (2, 2)
        );
    }
}
