//! The rooms' delivery invariant for one member of one room: after joining at offset `k`
//! (`room_users`), it receives the room's publications `k+1, k+2, …` each exactly once and in
//! offset order (docs/PROTOCOL.md, "Rooms"; SPEC "History and recovery").
//!
//! Three ways to break it, counted apart because they point at different bugs: an offset
//! never received (*lost*: a dropped frame, a missed subscription), received twice
//! (*duplicated*: a live frame and a recovered one both passed on), or received after a
//! higher one (*out of order*: two paths to the socket raced). An offset that comes late is
//! out of order, not lost; lost is decided only at the end, against the offset the room
//! reached.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// What one member has seen of one room.
#[derive(Debug, Clone)]
pub struct OffsetCheck {
    /// The offset `room_users` gave at the join: nothing at or below it may arrive.
    joined_at: u64,
    /// The highest offset received so far (`joined_at` before the first).
    highest: u64,
    /// Offsets below `highest` not received (yet). Empty while delivery is in order, so it
    /// costs nothing on the normal path.
    missing: BTreeSet<u64>,
    breaks: OffsetBreaks,
}

/// How often the invariant broke; added up over members and processes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetBreaks {
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
}

impl OffsetBreaks {
    pub fn add(&mut self, other: &OffsetBreaks) {
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.out_of_order += other.out_of_order;
    }

    pub fn total(&self) -> u64 {
        self.lost + self.duplicated + self.out_of_order
    }
}

/// What one received offset was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The next one: the normal case.
    InOrder,
    /// Higher than the next one: the offsets between are missing for now.
    Ahead,
    /// A missing one, arriving after a higher one.
    Late,
    /// Received before (or at or below the join offset, which the join answer covered).
    Duplicate,
}

impl OffsetCheck {
    /// A member that joined when the room stood at `offset`.
    pub fn joined_at(offset: u64) -> Self {
        Self {
            joined_at: offset,
            highest: offset,
            missing: BTreeSet::new(),
            breaks: OffsetBreaks::default(),
        }
    }

    /// Judges one received publication. Whether it was new is `Arrival::InOrder | Ahead |
    /// Late`: those are the deliveries to time.
    pub fn receive(&mut self, offset: u64) -> Arrival {
        if offset > self.highest {
            self.missing.extend(self.highest + 1..offset);
            let in_order = offset == self.highest + 1;
            self.highest = offset;
            return if in_order {
                Arrival::InOrder
            } else {
                Arrival::Ahead
            };
        }
        if self.missing.remove(&offset) {
            self.breaks.out_of_order += 1;
            return Arrival::Late;
        }
        self.breaks.duplicated += 1;
        Arrival::Duplicate
    }

    /// Whether every offset up to `last` has arrived.
    pub fn has_all_up_to(&self, last: u64) -> bool {
        self.highest >= last && self.missing.is_empty()
    }

    /// The verdict once nothing more is awaited, the room having reached offset `last`:
    /// every offset after the join and up to `last` not received is lost.
    pub fn finish(mut self, last: u64) -> OffsetBreaks {
        let missing_below = self.missing.len() as u64;
        let never_reached = last.saturating_sub(self.highest.max(self.joined_at));
        self.breaks.lost += missing_below + never_reached;
        self.breaks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(joined_at: u64, offsets: &[u64], last: u64) -> OffsetBreaks {
        let mut check = OffsetCheck::joined_at(joined_at);
        for &offset in offsets {
            check.receive(offset);
        }
        check.finish(last)
    }

    #[test]
    fn every_offset_once_in_order_breaks_nothing() {
        assert_eq!(run(0, &[1, 2, 3, 4], 4), OffsetBreaks::default());
        assert_eq!(
            run(7, &[8, 9], 9),
            OffsetBreaks::default(),
            "expectations start after the join offset"
        );
        let mut check = OffsetCheck::joined_at(0);
        assert_eq!(check.receive(1), Arrival::InOrder);
        assert!(check.has_all_up_to(1));
        assert!(!check.has_all_up_to(2));
    }

    #[test]
    fn a_gap_is_lost() {
        let breaks = run(0, &[1, 2, 4, 5], 5);
        assert_eq!(
            breaks,
            OffsetBreaks {
                lost: 1,
                ..OffsetBreaks::default()
            }
        );
        let mut check = OffsetCheck::joined_at(0);
        check.receive(1);
        assert_eq!(check.receive(3), Arrival::Ahead);
        assert!(!check.has_all_up_to(3), "2 is still missing");
    }

    #[test]
    fn publications_that_never_came_at_the_end_are_lost() {
        assert_eq!(run(0, &[1, 2], 5).lost, 3);
        assert_eq!(
            run(4, &[], 6).lost,
            2,
            "a member that joined at 4 and got nothing"
        );
        assert_eq!(
            run(0, &[], 0),
            OffsetBreaks::default(),
            "a room nobody published to"
        );
    }

    #[test]
    fn a_repeat_is_duplicated_and_so_is_anything_the_join_covered() {
        let breaks = run(0, &[1, 2, 2, 3, 1], 3);
        assert_eq!(
            breaks,
            OffsetBreaks {
                duplicated: 2,
                ..OffsetBreaks::default()
            }
        );
        assert_eq!(run(5, &[5, 6], 6).duplicated, 1, "5 was in the join answer");
    }

    #[test]
    fn a_late_offset_is_out_of_order_not_lost() {
        let mut check = OffsetCheck::joined_at(0);
        assert_eq!(check.receive(1), Arrival::InOrder);
        assert_eq!(check.receive(3), Arrival::Ahead);
        assert_eq!(check.receive(2), Arrival::Late);
        assert_eq!(check.receive(2), Arrival::Duplicate);
        assert!(check.has_all_up_to(3));
        assert_eq!(
            check.finish(3),
            OffsetBreaks {
                lost: 0,
                duplicated: 1,
                out_of_order: 1
            }
        );
    }
}
