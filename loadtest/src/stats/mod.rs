//! What each socket counts ([`Tally`]) and their sum over the run ([`Totals`]).
//!
//! A socket keeps plain counters and a list of latency samples; they are merged into one HDR
//! histogram only at the end. One histogram per socket would cost ~140 KB each at this
//! precision (1.4 GB for 10k sockets), and a shared one would put a lock on the hot path.
//! Each sample also keeps when it was taken, for the per-second series of `--plot`
//! (see [`crate::series`]).
//!
//! [`Totals`] crosses process boundaries: each worker process sends its totals to the parent
//! as JSON and the parent [`Totals::merge`]s them, so every field is serde-able (the histogram
//! as its recorded `(value, count)` pairs, see [`recorded_pairs`]).

use std::{collections::BTreeMap, time::Duration};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::{
    live::LIVE,
    series::{self, LatencySeries},
    verify::{offsets::OffsetBreaks, CountCheck, Step},
};

/// Largest latency the histogram holds, in microseconds; longer ones are clamped to it.
const MAX_LATENCY_US: u64 = 120_000_000;

/// The counts of one socket.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Tally {
    pub sent: u64,
    /// Count replies received (error frames are counted in `errors`, not here).
    pub received: u64,
    /// Frames answered `{"error":"unavailable","retry":true}` (Redis did not answer in time):
    /// not counted, and sent again (docs/PROTOCOL.md, resuming rule 2). Not an error.
    pub unavailable: u64,
    pub heartbeats: u64,
    pub count_violations: u64,
    /// Whether the socket was still open when the scenario ended with it.
    pub open_at_end: bool,
    /// Reconnects, planned resumes and what their welcomes showed.
    pub resumes: Resumes,
    /// Offsets lost, duplicated, out of order (each also a count violation): `rooms`, and
    /// `fan-out --resume` (the broadcast stream's offsets).
    pub rooms: OffsetBreaks,
    /// Round trips in microseconds.
    latencies_us: Vec<u32>,
    /// When each of `latencies_us` was taken ([`series::now_ms`]), in the same order.
    latencies_at_ms: Vec<u32>,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    /// One reply's latency. Every scenario records exactly one per reply it counts, so this
    /// is also where the progress bar's live reply count is kept.
    pub fn record_latency(&mut self, latency: Duration) {
        LIVE.reply();
        let us = latency.as_micros().min(u128::from(u32::MAX)) as u32;
        self.latencies_us.push(us);
        self.latencies_at_ms.push(series::now_ms());
    }

    /// Counts one error of a kind. Kinds are short and few (close codes, error classes), so
    /// the report can say what went wrong without a log of every occurrence.
    pub fn error(&mut self, kind: impl Into<String>) {
        self.errors_of_kind(kind, 1);
    }

    /// Counts `n` errors of one kind at once (e.g. every broadcast a socket missed).
    pub fn errors_of_kind(&mut self, kind: impl Into<String>, n: u64) {
        if n > 0 {
            LIVE.errors(n);
            *self.errors.entry(kind.into()).or_default() += n;
        }
    }

    /// Counts one `{"count": n}` reply and checks it against the counts seen before: a gap
    /// or a repeat is a violation, and how many numbers it skipped or repeated is kept too.
    pub fn count_reply(&mut self, check: &mut CountCheck, count: u64) {
        self.received += 1;
        match check.step(count) {
            Step::InOrder => {}
            Step::Gap(skipped) => {
                self.count_violations += 1;
                self.resumes.counts_lost += skipped;
            }
            Step::Repeat(repeated) => {
                self.count_violations += 1;
                self.resumes.counts_repeated += repeated;
            }
        }
    }
}

/// What one socket (or, summed, the run) counted about reconnecting: the server closing
/// sockets under `--during`, and the `resume` scenario's own planned resumes. Serializable
/// so that worker processes can hand their totals to the parent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resumes {
    /// Sockets the server closed (bye, close 1001, connection lost) that came back.
    pub reconnects: u64,
    /// Longest time from losing a socket to the welcome on its replacement, in microseconds.
    pub longest_gap_us: u64,
    /// Numbers of the counter this client never saw (gaps), over replies and welcomes.
    pub counts_lost: u64,
    /// Numbers of the counter told twice (repeats), over replies and welcomes.
    pub counts_repeated: u64,
    /// Planned resumes (`resume` scenario) whose welcome continued the count exactly.
    pub resumes_ok: u64,
    /// Planned resumes that could not reconnect or whose welcome did not continue the count.
    pub resumes_failed: u64,
    /// Welcomes that said `"repaired": true`: the server had lost the session's counter and
    /// continued it from the `last_count` this client passed. Not a violation by itself; the
    /// welcome's count is judged like any other.
    #[serde(default)]
    pub repaired: u64,
    /// `--resume`: answers to a `since` (a resumed welcome, a room rejoin) that did not say
    /// `recovered: true`. Each is a count violation too.
    #[serde(default)]
    pub not_recovered: u64,
    /// `--resume`: publications a publisher sent again after a reconnect, not having seen
    /// them come back (the server publishes a client id once).
    #[serde(default)]
    pub resent: u64,
}

impl Resumes {
    /// A socket came back `gap` after it was lost.
    pub fn reconnected(&mut self, gap: Duration) {
        self.reconnects += 1;
        let us = u64::try_from(gap.as_micros()).unwrap_or(u64::MAX);
        self.longest_gap_us = self.longest_gap_us.max(us);
    }

    pub fn add(&mut self, other: &Resumes) {
        self.reconnects += other.reconnects;
        self.longest_gap_us = self.longest_gap_us.max(other.longest_gap_us);
        self.counts_lost += other.counts_lost;
        self.counts_repeated += other.counts_repeated;
        self.resumes_ok += other.resumes_ok;
        self.resumes_failed += other.resumes_failed;
        self.repaired += other.repaired;
        self.not_recovered += other.not_recovered;
        self.resent += other.resent;
    }
}

/// Heartbeats seen per socket: the spread shows whether the fan-out reached every socket.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub min: u64,
    pub max: u64,
    pub sum: u64,
    pub sockets: u64,
}

impl Spread {
    pub fn avg(&self) -> f64 {
        if self.sockets == 0 {
            0.0
        } else {
            self.sum as f64 / self.sockets as f64
        }
    }

    /// The spread of one socket that saw `heartbeats`.
    fn one(heartbeats: u64) -> Self {
        Self {
            min: heartbeats,
            max: heartbeats,
            sum: heartbeats,
            sockets: 1,
        }
    }

    /// The spread over the sockets of both (either may have none).
    fn combine(a: Option<Spread>, b: Option<Spread>) -> Option<Spread> {
        match (a, b) {
            (Some(a), Some(b)) => Some(Spread {
                min: a.min.min(b.min),
                max: a.max.max(b.max),
                sum: a.sum + b.sum,
                sockets: a.sockets + b.sockets,
            }),
            (a, b) => a.or(b),
        }
    }
}

/// The latency histogram every process uses; merging needs identical bounds.
fn latency_histogram() -> Histogram<u64> {
    // Three significant digits: 1 µs resolution at the bottom, 0.1% above.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant histogram bounds are valid")
}

/// The sum of every socket's tally, plus the connection attempts.
#[derive(Debug, Serialize, Deserialize)]
pub struct Totals {
    pub connections_ok: u64,
    pub connections_failed: u64,
    pub sent: u64,
    pub received: u64,
    /// See [`Tally::unavailable`].
    #[serde(default)]
    pub unavailable: u64,
    pub count_violations: u64,
    pub open_at_end: u64,
    pub errors: BTreeMap<String, u64>,
    #[serde(with = "recorded_pairs")]
    pub latency_us: Histogram<u64>,
    /// The same latencies second by second, for `--plot`.
    pub latency_series: LatencySeries,
    pub heartbeats: Option<Spread>,
    pub resumes: Resumes,
    /// See [`Tally::rooms`].
    #[serde(default)]
    pub rooms: OffsetBreaks,
    /// When the last socket finished its work (unix µs), before the closes: the end of the
    /// run phase (see `scenario::finish`). The latest of the processes' when merged.
    pub sockets_done_us: Option<u64>,
}

impl Default for Totals {
    fn default() -> Self {
        Self {
            connections_ok: 0,
            connections_failed: 0,
            sent: 0,
            received: 0,
            unavailable: 0,
            count_violations: 0,
            open_at_end: 0,
            errors: BTreeMap::new(),
            latency_us: latency_histogram(),
            latency_series: LatencySeries::default(),
            heartbeats: None,
            resumes: Resumes::default(),
            rooms: OffsetBreaks::default(),
            sockets_done_us: None,
        }
    }
}

impl Totals {
    /// A connection attempt that failed before the socket was usable.
    pub fn connection_failed(&mut self, kind: impl Into<String>) {
        self.connections_failed += 1;
        self.error(kind);
    }

    /// An error outside any socket's tally.
    pub fn error(&mut self, kind: impl Into<String>) {
        *self.errors.entry(kind.into()).or_default() += 1;
    }

    /// Adds what one socket counted during the scenario.
    pub fn absorb(&mut self, tally: Tally) {
        self.sent += tally.sent;
        self.received += tally.received;
        self.unavailable += tally.unavailable;
        self.count_violations += tally.count_violations;
        self.open_at_end += u64::from(tally.open_at_end);
        self.resumes.add(&tally.resumes);
        self.rooms.add(&tally.rooms);
        for (kind, n) in tally.errors {
            *self.errors.entry(kind).or_default() += n;
        }
        for (us, at_ms) in tally.latencies_us.into_iter().zip(tally.latencies_at_ms) {
            self.latency_us.saturating_record(u64::from(us).max(1));
            self.latency_series.record(at_ms, us);
        }
        self.heartbeats = Spread::combine(self.heartbeats, Some(Spread::one(tally.heartbeats)));
    }

    /// Adds the totals of another process (a worker) into these.
    ///
    /// The destructuring names every field on purpose: a field added to `Totals` does not
    /// compile here until it says how it merges, so no count is silently dropped on the way
    /// from the workers to the report.
    pub fn merge(&mut self, other: Totals) {
        let Totals {
            connections_ok,
            connections_failed,
            sent,
            received,
            unavailable,
            count_violations,
            open_at_end,
            errors,
            latency_us,
            latency_series,
            heartbeats,
            resumes,
            rooms,
            sockets_done_us,
        } = other;
        self.rooms.add(&rooms);
        self.sockets_done_us = self.sockets_done_us.max(sockets_done_us);
        self.connections_ok += connections_ok;
        self.connections_failed += connections_failed;
        self.sent += sent;
        self.received += received;
        self.unavailable += unavailable;
        self.count_violations += count_violations;
        self.open_at_end += open_at_end;
        for (kind, n) in errors {
            *self.errors.entry(kind).or_default() += n;
        }
        // Both sides have the bounds of `latency_histogram`, so adding cannot fail; if it
        // ever did, the report says so instead of showing percentiles without those samples.
        if let Err(e) = self.latency_us.add(&latency_us) {
            self.error(format!("merging latency histograms: {e:?}"));
        }
        // Every process cuts its series into seconds of the same run clock (see
        // `series::origin_of`), so adding them second by second lines them up.
        self.latency_series.merge(&latency_series);
        self.heartbeats = Spread::combine(self.heartbeats, heartbeats);
        self.resumes.add(&resumes);
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Serde for the latency histogram as its recorded `(value, count)` pairs: one pair per
/// non-empty bucket (a few thousand at most, however many samples), no extra crate features.
/// Each value is its bucket's highest equivalent value, so it lands in the same bucket again
/// and the percentiles after a round trip are exactly those before it.
mod recorded_pairs {
    use hdrhistogram::Histogram;
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(h: &Histogram<u64>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            h.iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value())),
        )
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Histogram<u64>, D::Error> {
        let pairs = Vec::<(u64, u64)>::deserialize(d)?;
        let mut h = super::latency_histogram();
        for (value, count) in pairs {
            h.record_n(value, count)
                .map_err(|e| D::Error::custom(format!("latency {value} µs out of range: {e:?}")))?;
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests;
