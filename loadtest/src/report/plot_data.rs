//! What `--plot` draws, taken from the totals when the report is made: the report owns the
//! data, src/plot only draws it.

use hdrhistogram::Histogram;

use crate::{series::SecondPoint, stats::Totals};

/// What the plot shows, taken from the totals when the report is made.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlotData {
    pub over_time: Vec<SecondPoint>,
    pub distribution: Vec<Bin>,
}

/// Replies whose latency fell in `[lo_ms, hi_ms)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Bin {
    pub lo_ms: f64,
    pub hi_ms: f64,
    pub replies: u64,
}

/// Bins per decade of latency in the distribution panel.
const BINS_PER_DECADE: f64 = 10.0;

impl PlotData {
    pub fn new(totals: &Totals, run_seconds: f64) -> Self {
        Self {
            over_time: totals.latency_series.points(run_seconds),
            distribution: distribution(&totals.latency_us),
        }
    }
}

/// The histogram's samples in logarithmic bins, from the lowest to the highest one used.
fn distribution(h: &Histogram<u64>) -> Vec<Bin> {
    let bin_of = |us: u64| (BINS_PER_DECADE * (us.max(1) as f64).log10()).floor() as i64;
    let mut counts: Vec<(i64, u64)> = Vec::new();
    for v in h.iter_recorded() {
        // The middle of the HDR bucket, as HDR's own mean uses.
        let bin = bin_of(h.median_equivalent(v.value_iterated_to()));
        match counts.last_mut() {
            Some((last, n)) if *last == bin => *n += v.count_since_last_iteration(),
            _ => counts.push((bin, v.count_since_last_iteration())),
        }
    }
    let (Some(&(first, _)), Some(&(last, _))) = (counts.first(), counts.last()) else {
        return Vec::new();
    };
    let edge_ms = |bin: i64| 10f64.powf(bin as f64 / BINS_PER_DECADE) / 1000.0;
    (first..=last)
        .map(|bin| Bin {
            lo_ms: edge_ms(bin),
            hi_ms: edge_ms(bin + 1),
            replies: counts
                .iter()
                .find(|(b, _)| *b == bin)
                .map_or(0, |&(_, n)| n),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribution_bins_are_contiguous_and_hold_every_sample() {
        let mut h = Histogram::new_with_bounds(1, 120_000_000, 3).unwrap();
        // 1 ms ten times, 2 ms five times, 120 ms once: bins 30, 33 and 50 (tenths of a
        // decade of microseconds), with the empty ones between them.
        h.record_n(1_000, 10).unwrap();
        h.record_n(2_000, 5).unwrap();
        h.record(120_000).unwrap();
        let bins = distribution(&h);
        assert_eq!(bins.len(), 21, "{bins:?}");
        assert!((bins[0].lo_ms - 1.0).abs() < 1e-9, "{:?}", bins[0]);
        assert!((bins[20].hi_ms - 100f64 * 10f64.powf(0.1)).abs() < 1e-6);
        for pair in bins.windows(2) {
            assert!((pair[0].hi_ms - pair[1].lo_ms).abs() < 1e-9);
        }
        let counts: Vec<u64> = bins.iter().map(|b| b.replies).collect();
        assert_eq!((counts[0], counts[3], counts[20]), (10, 5, 1));
        assert_eq!(counts.iter().sum::<u64>(), 16);
        assert!(distribution(&Histogram::new(3).unwrap()).is_empty());
    }
}
