//! `--plot FILE`: the run as a picture, written as SVG after the report.
//!
//! Three panels sharing one page: latency over time (per-second p50, p99 and max, log scale),
//! replies per second on the same time axis, and the distribution of all latencies (log
//! scale, 10 bins per decade) with the run's p50, p99 and max marked.
//!
//! Drawn with plotters' SVG backend alone: text becomes SVG `<text>` that the viewer renders,
//! so no font files or font libraries are needed. PNG would need a rasterizer with fonts
//! (fontconfig/freetype or a bundled font), so it is refused; convert the SVG instead.

mod draw;

use std::path::Path;

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;

use crate::{report::Report, series::SecondPoint, stats::Totals};

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

/// Refuses, before the run, a file the plot cannot be written as.
pub fn check_path(path: &Path) -> Result<()> {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("svg") => Ok(()),
        Some("png") => bail!(
            "--plot {}: PNG is not supported (it would need font libraries to draw text); \
             write .svg and convert it if needed, e.g. `rsvg-convert -o plot.png plot.svg`",
            path.display()
        ),
        _ => bail!("--plot {}: the file name must end in .svg", path.display()),
    }
}

/// Draws the report's plot data into an SVG file.
pub fn write(report: &Report, path: &Path) -> Result<()> {
    let svg = draw::render(report).context("drawing the plot")?;
    std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_svg_file_names_are_accepted() {
        for (name, accepted, says) in [
            ("run.svg", true, ""),
            ("/tmp/RUN.SVG", true, ""),
            ("run.png", false, "PNG is not supported"),
            ("run.txt", false, "must end in .svg"),
            ("run", false, "must end in .svg"),
        ] {
            let result = check_path(Path::new(name));
            assert_eq!(result.is_ok(), accepted, "{name}: {result:?}");
            if let Err(e) = result {
                assert!(e.to_string().contains(says), "{name}: {e}");
            }
        }
    }

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
