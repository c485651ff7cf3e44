//! Drawing the plot's page with plotters: layout, the three panels, their axes and legends.

use std::ops::Range;

use plotters::{
    coord::{combinators::WithKeyPoints, ranged1d::AsRangedCoord, Shift},
    prelude::*,
};

use crate::report::Bin;
use crate::{report::Report, series::SecondPoint};

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type Drawn<T = ()> = Result<T, DrawingAreaErrorKind<std::io::Error>>;
type Chart<'a, 'b, X, Y> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<X, Y>>;
/// Which of a second's latencies a line shows.
type PickMs = fn(&SecondPoint) -> Option<f64>;

const SIZE: (u32, u32) = (1200, 900);
const FONT: &str = "sans-serif";
/// Room right of every panel for its legend; the same for all keeps the time axes aligned.
const LEGEND_WIDTH: u32 = 150;
const P50: RGBColor = RGBColor(31, 119, 180);
const P99: RGBColor = RGBColor(255, 127, 14);
const MAX: RGBColor = RGBColor(214, 39, 40);
const BARS: RGBColor = RGBColor(120, 120, 120);

/// The whole page as an SVG document.
pub fn render(report: &Report) -> Drawn<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let title = format!(
            "wsfleet-loadtest {} → {}: {} sockets, {} replies in {:.1} s",
            report.scenario,
            report.url,
            report.connections.ok,
            report.messages.received,
            report.messages.run_seconds,
        );
        let root = root.titled(&title, (FONT, 20))?;
        let data = &report.plot;
        if data.over_time.is_empty() {
            root.draw_text(
                "No replies in this run: no latency to plot.",
                &(FONT, 18).into_text_style(&root),
                (40, 40),
            )?;
        } else {
            let (time, distribution) = root.split_vertically(500);
            let (latency, rate) = time.split_vertically(300);
            let seconds = 0.0..data.over_time.len() as f64;
            draw_latency_over_time(&latency, &data.over_time, seconds.clone())?;
            draw_rate(&rate, &data.over_time, seconds)?;
            draw_distribution(&distribution, &data.distribution, report)?;
        }
        root.present()?;
    }
    Ok(svg)
}

fn draw_latency_over_time(area: &Area, points: &[SecondPoint], seconds: Range<f64>) -> Drawn {
    let whole_seconds = x_label_count(&seconds);
    let values = points.iter().flat_map(|p| [p.p50_ms, p.p99_ms, p.max_ms]);
    let caption = "Latency of the replies, per second";
    let mut chart = panel(area, caption, seconds, log_axis(values.flatten()))?;
    chart
        .configure_mesh()
        .x_desc("seconds since the run phase started")
        .x_labels(whole_seconds)
        .x_label_formatter(&|s| format!("{s:.0}"))
        .y_desc("latency (ms, log scale)")
        .y_label_formatter(&|ms| format_ms(*ms))
        .max_light_lines(1)
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .draw()?;
    let lines: [(&str, RGBColor, PickMs); 3] = [
        ("max", MAX, |p| p.max_ms),
        ("p99", P99, |p| p.p99_ms),
        ("p50", P50, |p| p.p50_ms),
    ];
    for (_, color, value) in lines {
        // A second without replies breaks the line, so a stall shows as a gap.
        for run in points.split(|p| value(p).is_none()) {
            let xy = run
                .iter()
                .filter_map(|p| Some((f64::from(p.second) + 0.5, value(p)?)));
            chart.draw_series(LineSeries::new(xy, color.stroke_width(2)).point_size(2))?;
        }
    }
    draw_legend(
        area,
        lines.map(|(name, color, _)| (name.to_string(), color)),
    )
}

fn draw_rate(area: &Area, points: &[SecondPoint], seconds: Range<f64>) -> Drawn {
    let whole_seconds = x_label_count(&seconds);
    let top = points
        .iter()
        .map(|p| p.replies_per_second)
        .fold(1.0, f64::max);
    let mut chart = panel(area, "Replies per second", seconds, 0.0..top * 1.1)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the run phase started")
        .x_labels(whole_seconds)
        .x_label_formatter(&|s| format!("{s:.0}"))
        .y_desc("replies/s")
        .y_labels(5)
        .y_label_formatter(&|v| format!("{v:.0}"))
        .max_light_lines(1)
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .draw()?;
    chart.draw_series(points.iter().map(|p| {
        let x = f64::from(p.second);
        Rectangle::new(
            [(x + 0.05, 0.0), (x + 0.95, p.replies_per_second)],
            P50.mix(0.6).filled(),
        )
    }))?;
    Ok(())
}

fn draw_distribution(area: &Area, bins: &[Bin], report: &Report) -> Drawn {
    let total: u64 = bins.iter().map(|b| b.replies).sum::<u64>().max(1);
    let percent = |n: u64| n as f64 * 100.0 / total as f64;
    let top = bins.iter().map(|b| percent(b.replies)).fold(1.0, f64::max) * 1.1;
    let latencies = log_axis(bins.iter().flat_map(|b| [b.lo_ms, b.hi_ms]));
    let caption = "Distribution of all latencies (10 bins per decade)";
    let mut chart = panel(area, caption, latencies, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("latency (ms, log scale)")
        .x_label_formatter(&|ms| format_ms(*ms))
        .y_desc("% of replies")
        .y_labels(5)
        .y_label_formatter(&|v| format!("{v:.0}"))
        .max_light_lines(1)
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .draw()?;
    chart.draw_series(bins.iter().map(|b| {
        let corners = [(b.lo_ms, 0.0), (b.hi_ms, percent(b.replies))];
        Rectangle::new(corners, BARS.mix(0.7).filled())
    }))?;
    let Some(l) = &report.latency_ms else {
        return Ok(());
    };
    let marks = [
        ("p50", P50, l.p50),
        ("p99", P99, l.p99),
        ("max", MAX, l.max),
    ];
    for (_, color, ms) in marks {
        chart.draw_series(LineSeries::new(
            [(ms, 0.0), (ms, top)],
            color.stroke_width(2),
        ))?;
    }
    draw_legend(
        area,
        marks.map(|(name, color, ms)| (format!("{name} {} ms", three_digits(ms)), color)),
    )
}

/// A panel with the page's common layout: caption, label areas, and [`LEGEND_WIDTH`] kept
/// free on the right.
fn panel<'a, 'b, X: AsRangedCoord, Y: AsRangedCoord>(
    area: &'a Area<'b>,
    caption: &str,
    x: X,
    y: Y,
) -> Drawn<Chart<'a, 'b, X::CoordDescType, Y::CoordDescType>> {
    ChartBuilder::on(area)
        .caption(caption, (FONT, 17))
        .margin(10)
        .margin_right(LEGEND_WIDTH)
        .x_label_area_size(40)
        .y_label_area_size(75)
        .build_cartesian_2d(x, y)
}

/// A key line and a name per series, in the room right of the panel's plotting area, where
/// it cannot hide a line or a bar.
fn draw_legend<const N: usize>(area: &Area, entries: [(String, RGBColor); N]) -> Drawn {
    let left = area.dim_in_pixel().0 as i32 - LEGEND_WIDTH as i32 + 12;
    for (i, (name, color)) in entries.into_iter().enumerate() {
        let y = 50 + 20 * i as i32;
        area.draw(&PathElement::new(
            [(left, y), (left + 22, y)],
            color.stroke_width(3),
        ))?;
        area.draw(&Text::new(name, (left + 28, y - 7), (FONT, 13)))?;
    }
    Ok(())
}

/// Asks for at most one label per second (plotters then picks round steps), so the labels
/// printed as whole seconds never repeat.
fn x_label_count(seconds: &Range<f64>) -> usize {
    (seconds.end - seconds.start).clamp(1.0, 20.0) as usize + 1
}

/// A log axis of latencies in ms over whole decades around the (positive) values, labelled
/// at 1, 2 and 5 times each power of ten, with grid lines at the other multiples. Given
/// explicitly: plotters' own choice labels every multiple or only the decades, depending on
/// how many decades there are.
fn log_axis(values: impl Iterator<Item = f64>) -> WithKeyPoints<LogCoord<f64>> {
    let range = decades(values);
    let multiples = |of: &[f64]| -> Vec<f64> {
        let first = range.start.log10().round() as i32;
        let last = range.end.log10().round() as i32;
        (first..=last)
            .flat_map(|k| of.iter().map(move |m| m * 10f64.powi(k)))
            .filter(|v| *v <= range.end * 1.000_001)
            .collect()
    };
    let labelled = multiples(&[1.0, 2.0, 5.0]);
    let grid = multiples(&[3.0, 4.0, 6.0, 7.0, 8.0, 9.0]);
    range
        .log_scale()
        .with_key_points(labelled)
        .with_light_points(grid)
}

/// Whole decades around the values (positive), so a log axis starts and ends on a label.
fn decades(values: impl Iterator<Item = f64>) -> Range<f64> {
    let (lo, hi) = values
        .filter(|v| *v > 0.0)
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return 0.1..1.0;
    }
    let lo = 10f64.powf(lo.log10().floor());
    let hi = 10f64.powf(hi.log10().ceil());
    lo..hi.max(lo * 10.0)
}

/// About three significant digits, so a legend entry fits its column: "0.42", "12.3", "20447".
fn three_digits(ms: f64) -> String {
    match ms {
        ms if ms >= 100.0 => format!("{ms:.0}"),
        ms if ms >= 10.0 => format!("{ms:.1}"),
        ms => format!("{ms:.2}"),
    }
}

/// Milliseconds as a short label: "0.05", "2", "1000".
fn format_ms(ms: f64) -> String {
    let text = format!("{ms:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{report::Phase, stats::Totals};

    #[test]
    fn a_run_without_replies_gets_a_page_that_says_so() {
        let (connect, run) = (Phase { seconds: 0.1 }, Phase { seconds: 1.0 });
        let report = Report::new(
            "hold",
            "ws://x/",
            1,
            connect,
            run,
            Totals::default(),
            vec![],
        );
        let svg = render(&report).unwrap();
        let doc = roxmltree::Document::parse(&svg).expect("well-formed XML");
        let says = |needle: &str| {
            doc.descendants()
                .filter_map(|n| n.text())
                .any(|t| t.contains(needle))
        };
        assert!(says("No replies in this run"), "{svg}");
        assert!(!says("Replies per second"), "{svg}");
    }

    #[test]
    fn log_axes_span_whole_decades_labelled_at_one_two_and_five() {
        assert_eq!(decades([0.35, 12.0].into_iter()), 0.1..100.0);
        assert_eq!(decades([10.0].into_iter()), 10.0..100.0);
        assert_eq!(decades(std::iter::empty()), 0.1..1.0);
        let axis = log_axis([0.35, 12.0].into_iter());
        let labels: Vec<String> = axis.bold_points().iter().map(|v| format_ms(*v)).collect();
        assert_eq!(
            labels,
            ["0.1", "0.2", "0.5", "1", "2", "5", "10", "20", "50", "100"]
        );
        assert_eq!(
            axis.light_points().len(),
            6 * 3,
            "3, 4, 6, 7, 8, 9 in three decades"
        );
        assert!((axis.light_points()[0] - 0.3).abs() < 1e-9);
        assert_eq!(
            [0.4234, 12.345, 20447.2].map(three_digits),
            ["0.42", "12.3", "20447"]
        );
    }
}
