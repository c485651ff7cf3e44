//! The counter invariant of one socket: after a welcome with count `c`, the replies read
//! `c+1, c+2, …` with no gap and no repeat (docs/PROTOCOL.md). The rooms' invariant (every
//! publication once, in offset order) is [`offsets`].

pub mod offsets;

/// Tracks the counts one socket has seen.
#[derive(Debug, Clone, Copy)]
pub struct CountCheck {
    last: u64,
}

impl CountCheck {
    /// Starts from the count of the welcome frame.
    pub fn new(welcome_count: u64) -> Self {
        Self {
            last: welcome_count,
        }
    }

    /// The count the next reply must carry.
    pub fn expected(&self) -> u64 {
        self.last + 1
    }

    /// Checks one reply and says how far off it was.
    ///
    /// It then carries on from the count received rather than from the expected one, so a
    /// single skipped or repeated number is one violation, not one per later reply: the
    /// tally then says how many times the invariant broke, which is what one looks for.
    pub fn step(&mut self, count: u64) -> Step {
        let expected = self.expected();
        self.last = count;
        match count.cmp(&expected) {
            std::cmp::Ordering::Equal => Step::InOrder,
            std::cmp::Ordering::Greater => Step::Gap(count - expected),
            // count ≤ the previous one: the numbers count..=previous come a second time.
            std::cmp::Ordering::Less => Step::Repeat(expected - count),
        }
    }

    /// The last count this socket was told (the welcome's, then each reply's).
    pub fn acked(&self) -> u64 {
        self.last
    }
}

/// One reply against the count expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    InOrder,
    /// This many numbers were skipped.
    Gap(u64),
    /// This many numbers were told before.
    Repeat(u64),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn violations(welcome: u64, counts: &[u64]) -> usize {
        let mut check = CountCheck::new(welcome);
        counts
            .iter()
            .filter(|&&c| check.step(c) != Step::InOrder)
            .count()
    }

    #[test]
    fn consecutive_counts_from_the_welcome_pass() {
        assert_eq!(violations(0, &[1, 2, 3, 4]), 0);
        assert_eq!(violations(41, &[42, 43]), 0);
        assert_eq!(violations(7, &[]), 0);
    }

    #[test]
    fn a_gap_a_repeat_or_a_wrong_start_each_count_once() {
        assert_eq!(violations(0, &[1, 3, 4, 5]), 1, "gap");
        assert_eq!(violations(0, &[1, 2, 2, 3]), 1, "repeat");
        assert_eq!(
            violations(5, &[1, 2, 3]),
            1,
            "did not continue from the welcome"
        );
        assert_eq!(violations(0, &[2, 4, 6]), 3, "every step skips");
    }

    #[test]
    fn steps_say_how_many_numbers_were_skipped_or_repeated() {
        let mut check = CountCheck::new(3);
        assert_eq!(check.step(4), Step::InOrder);
        assert_eq!(check.step(7), Step::Gap(2));
        assert_eq!(check.step(7), Step::Repeat(1));
        assert_eq!(check.step(5), Step::Repeat(3));
        assert_eq!(check.acked(), 5);
    }

    #[test]
    fn expected_follows_the_last_count_seen() {
        let mut check = CountCheck::new(10);
        assert_eq!(check.expected(), 11);
        check.step(20);
        assert_eq!(check.expected(), 21);
    }
}
