//! Latency over time: the replies of each second of the run phase, for `--plot`.
//!
//! A socket's [`Tally`](crate::stats::Tally) stores next to each latency sample when it was
//! taken, as milliseconds on [`now_ms`]'s process-wide clock (4 bytes more per sample, no lock).
//! When the totals absorb a tally, each sample goes into the histogram of its second
//! ([`LatencySeries`]): one small HDR histogram per second, whatever the number of samples or
//! sockets. Two significant digits (under 1% error) keep a second's histogram at ~10 KB for
//! latencies up to a few seconds, against ~140 KB at the three digits of the headline numbers.
//!
//! With worker processes, each worker cuts its series into the seconds of the parent's run
//! phase: the parent sends the wall-clock start of the run with `go`, and the worker places
//! it on its own clock with [`local_ms_of`]. The seconds of all workers then line up, and
//! the parent adds the series up with [`LatencySeries::merge`].

use std::{
    sync::OnceLock,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use hdrhistogram::Histogram;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Milliseconds since this process first asked, on a monotonic clock. A `u32` lasts 49 days.
pub fn now_ms() -> u32 {
    // Set on first use: only differences of these values mean anything, and only in this
    // process (a worker process sends its series already cut into seconds of its run).
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    epoch.elapsed().as_millis().min(u128::from(u32::MAX)) as u32
}

/// Now as unix microseconds: the clock every process on this machine shares (fan-out's
/// publish stamps, the run start a parent sends its workers).
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The [`now_ms`] value of a past wall-clock moment (`unix_us`, from [`unix_micros`]),
/// e.g. the run start a worker's parent sent. Clamped to this process's first [`now_ms`]
/// call: call that early (a worker does, at its start).
pub fn local_ms_of(unix_us: u64) -> u32 {
    let ago_ms = unix_micros().saturating_sub(unix_us) / 1000;
    now_ms().saturating_sub(u32::try_from(ago_ms).unwrap_or(u32::MAX))
}

/// The replies of each second of the run phase, as histograms of their latency.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LatencySeries {
    /// [`now_ms`] when the run phase started: second 0 begins here.
    origin_ms: u32,
    /// Index = seconds since `origin_ms`; a second without replies has an empty histogram.
    seconds: Vec<SecondHistogram>,
}

/// What one second of the run looked like, ready to plot.
#[derive(Debug, Clone, PartialEq)]
pub struct SecondPoint {
    /// Seconds since the run phase started (the start of this second).
    pub second: u32,
    /// Replies received in this second, scaled up if the run ended within it.
    pub replies_per_second: f64,
    /// Latency percentiles of those replies in milliseconds; `None` without replies.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

impl LatencySeries {
    /// Makes `origin_ms` (a [`now_ms`] value) the start of second 0; call it when the run
    /// phase starts, before any sample is recorded.
    pub fn begin_at(&mut self, origin_ms: u32) {
        self.origin_ms = origin_ms;
    }

    /// Adds one reply that took `latency_us` and arrived at `at_ms` (a [`now_ms`] value).
    /// A sample from before the origin counts in second 0.
    pub fn record(&mut self, at_ms: u32, latency_us: u32) {
        let second = (at_ms.saturating_sub(self.origin_ms) / 1000) as usize;
        if self.seconds.len() <= second {
            self.seconds
                .resize_with(second + 1, SecondHistogram::default);
        }
        self.seconds[second].record_n(u64::from(latency_us).max(1), 1);
    }

    /// Adds another series second by second: a worker process's, whose second 0 is the
    /// same moment as this one's (see the module docs).
    pub fn merge(&mut self, other: &LatencySeries) {
        if self.seconds.len() < other.seconds.len() {
            self.seconds
                .resize_with(other.seconds.len(), SecondHistogram::default);
        }
        for (mine, theirs) in self.seconds.iter_mut().zip(&other.seconds) {
            mine.0
                .add(&theirs.0)
                .expect("auto-resizing histograms of one precision add up");
        }
    }

    /// Every second up to the last one with a reply. `run_seconds` is how long the run phase
    /// lasted: the rate of a last, partial second is scaled to its length.
    pub fn points(&self, run_seconds: f64) -> Vec<SecondPoint> {
        let ms = |us: u64| us as f64 / 1000.0;
        let last = self.seconds.iter().rposition(|h| !h.0.is_empty());
        let Some(last) = last else {
            return Vec::new();
        };
        self.seconds[..=last]
            .iter()
            .enumerate()
            .map(|(second, SecondHistogram(h))| {
                let covered = (run_seconds - second as f64).clamp(0.0, 1.0);
                // A reply in a second the run phase did not cover (it was cut short or
                // measured oddly) is shown at its count rather than blown up.
                let length = if covered > 0.1 { covered } else { 1.0 };
                let some = |v: f64| (!h.is_empty()).then_some(v);
                SecondPoint {
                    second: second as u32,
                    replies_per_second: h.len() as f64 / length,
                    p50_ms: some(ms(h.value_at_quantile(0.50))),
                    p99_ms: some(ms(h.value_at_quantile(0.99))),
                    max_ms: some(ms(h.max())),
                }
            })
            .collect()
    }
}

/// One second's latencies in microseconds. Serialized as its non-empty buckets,
/// `[[value_us, count], …]`, so a worker process can send it as JSON.
#[derive(Debug, Clone)]
struct SecondHistogram(Histogram<u64>);

impl Default for SecondHistogram {
    fn default() -> Self {
        // Auto-resizing: a second only pays for the range its latencies reach.
        Self(Histogram::new(2).expect("2 significant digits is a valid precision"))
    }
}

impl SecondHistogram {
    fn record_n(&mut self, value_us: u64, count: u64) {
        // Not `saturating_record`: it clamps to the current range instead of growing it.
        // Growing fails only past usize (not for a u32 of microseconds); clamp then.
        if self.0.record_n(value_us, count).is_err() {
            self.0.saturating_record_n(value_us, count);
        }
    }
}

impl Serialize for SecondHistogram {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(
            self.0
                .iter_recorded()
                .map(|v| [v.value_iterated_to(), v.count_since_last_iteration()]),
        )
    }
}

impl<'de> Deserialize<'de> for SecondHistogram {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let buckets = Vec::<[u64; 2]>::deserialize(deserializer)?;
        let mut h = SecondHistogram::default();
        for [value, count] in buckets {
            h.record_n(value, count);
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift), so the test needs no extra crate and a
    /// failure can be replayed.
    fn pseudo_random(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    /// Samples over 5.5 seconds: latencies spread over four decades, slower in second 3,
    /// none at all in second 2 (a stall).
    fn generated() -> Vec<(u32, u32)> {
        let mut state = 0x9e37_79b9_7f4a_7c15;
        let mut samples = Vec::new();
        for _ in 0..20_000 {
            let at_ms = 1_000 + (pseudo_random(&mut state) % 5_500) as u32;
            if (2_000..3_000).contains(&at_ms) {
                continue;
            }
            let decades = (pseudo_random(&mut state) % 4_000) as f64 / 1_000.0;
            let mut us = (50.0 * 10f64.powf(decades)) as u32;
            if (3_000..4_000).contains(&at_ms) {
                us *= 3;
            }
            samples.push((at_ms, us));
        }
        samples
    }

    /// The nearest-rank percentile that HDR's `value_at_quantile` approximates.
    fn brute_quantile(sorted: &[u32], q: f64) -> f64 {
        let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
        f64::from(sorted[rank - 1])
    }

    fn assert_close(got_ms: Option<f64>, want_us: f64, what: &str) {
        let got_us = got_ms.expect(what) * 1000.0;
        assert!(
            (got_us - want_us).abs() <= want_us * 0.01 + 1.0,
            "{what}: got {got_us} µs, brute force says {want_us} µs"
        );
    }

    #[test]
    fn per_second_percentiles_match_a_brute_force_computation() {
        let samples = generated();
        let mut series = LatencySeries::default();
        series.begin_at(1_000);
        for &(at, us) in &samples {
            series.record(at, us);
        }
        let points = series.points(5.5);
        assert_eq!(points.len(), 6, "seconds 0..=5");
        for p in &points {
            let lo = 1_000 + p.second * 1000;
            let mut in_second: Vec<u32> = samples
                .iter()
                .filter(|(at, _)| (lo..lo + 1000).contains(at))
                .map(|&(_, us)| us)
                .collect();
            in_second.sort_unstable();
            let length = if p.second == 5 { 0.5 } else { 1.0 };
            assert_eq!(p.replies_per_second, in_second.len() as f64 / length);
            if in_second.is_empty() {
                assert_eq!((p.p50_ms, p.p99_ms, p.max_ms), (None, None, None));
                continue;
            }
            let what = |name: &str| format!("{name} of second {}", p.second);
            assert_close(p.p50_ms, brute_quantile(&in_second, 0.50), &what("p50"));
            assert_close(p.p99_ms, brute_quantile(&in_second, 0.99), &what("p99"));
            let max = f64::from(*in_second.last().unwrap());
            assert_close(p.max_ms, max, &what("max"));
        }
        assert_eq!(points[1].p50_ms, None, "the stall shows as a gap");
        assert!(points[2].p50_ms > points[3].p50_ms, "second 2 was slower");
    }

    #[test]
    fn merged_and_json_round_tripped_series_equal_one_recorded_whole() {
        let samples = generated();
        let (mut whole, mut a, mut b) = Default::default();
        for (i, &(at, us)) in samples.iter().enumerate() {
            LatencySeries::record(&mut whole, at, us);
            LatencySeries::record(if i % 2 == 0 { &mut a } else { &mut b }, at, us);
        }
        let a: LatencySeries = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        let mut merged = LatencySeries::default();
        merged.merge(&b);
        merged.merge(&a);
        assert_eq!(merged.points(7.0), LatencySeries::points(&whole, 7.0));
    }

    #[test]
    fn a_past_wall_clock_moment_lands_that_long_ago_on_the_local_clock() {
        now_ms();
        std::thread::sleep(std::time::Duration::from_millis(30));
        let before = now_ms();
        let origin = local_ms_of(unix_micros() - 20_000);
        let after = now_ms();
        // Whole milliseconds on both clocks: allow 2 ms of rounding either way.
        assert!(
            (before - 22..=after - 18).contains(&origin),
            "20 ms ago is {origin}, now is {before}..{after}"
        );
        assert_eq!(local_ms_of(0), 0, "before this process: clamped");
        // 2020-01-01 and 2100-01-01 in microseconds: a unit mistake lands far outside.
        assert!((1_577_836_800_000_000..4_102_444_800_000_000).contains(&unix_micros()));
    }

    #[test]
    fn no_replies_no_points_and_early_samples_count_in_second_zero() {
        assert!(LatencySeries::default().points(3.0).is_empty());
        let mut series = LatencySeries::default();
        series.begin_at(5_000);
        series.record(4_000, 10);
        let points = series.points(3.0);
        assert_eq!(points.len(), 1);
        assert_eq!(points[0].replies_per_second, 1.0);
    }
}
