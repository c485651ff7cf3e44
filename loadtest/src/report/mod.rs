//! The end-of-run report: one struct, printed as an aligned table for people and written as
//! JSON (same fields) for scripts such as scripts/bench.sh.

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use anyhow::{Context, Result};
use serde::Serialize;
use tokio::time::Instant;

use crate::{cpu::CpuUse, redis_info::RedisCost, stats::Totals};

mod plot_data;
mod sections;
pub use plot_data::{Bin, PlotData};
pub use sections::{Disruption, FanOut, Recovery, ResumeSummary, Rooms};

/// How long a phase took.
#[derive(Debug, Clone, Copy)]
pub struct Phase {
    pub seconds: f64,
}

impl Phase {
    pub fn since(start: Instant) -> Self {
        Self {
            seconds: start.elapsed().as_secs_f64(),
        }
    }

    pub fn between(start: Instant, end: Instant) -> Self {
        Self {
            seconds: end.saturating_duration_since(start).as_secs_f64(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub scenario: String,
    pub url: String,
    pub connections: Connections,
    pub messages: Messages,
    /// Every error, connection failures included.
    pub errors: u64,
    /// Errors by kind, e.g. "connect: http 503": 3.
    pub error_kinds: BTreeMap<String, u64>,
    pub count_violations: u64,
    /// Round trip (closed loop) or due-to-reply time (open loop); absent without replies.
    pub latency_ms: Option<Latency>,
    /// Heartbeat frames each socket saw during the run phase.
    pub heartbeats_per_socket: Option<HeartbeatSpread>,
    /// CPU use during the run phase, in percent of one core.
    pub cpu: Vec<CpuUse>,
    /// Processes that held the sockets (1: this process itself).
    pub workers: usize,
    /// fan-out only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fan_out: Option<FanOut>,
    /// rooms only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Rooms>,
    /// resume only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume: Option<ResumeSummary>,
    /// With --during only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disruption: Option<Disruption>,
    /// rooms and fan-out with --resume only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery: Option<Recovery>,
    /// With --redis-info only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisCost>,
    /// What `--plot` draws; not part of the JSON.
    #[serde(skip)]
    pub plot: PlotData,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Connections {
    pub attempted: u64,
    pub ok: u64,
    pub failed: u64,
    /// Sockets that were still open, without error, when the run phase ended with them.
    pub open_at_end: u64,
    pub connect_seconds: f64,
    pub per_second: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Messages {
    pub sent: u64,
    pub received: u64,
    /// Frames answered `unavailable` and sent again (Redis did not answer in time).
    pub unavailable: u64,
    pub run_seconds: f64,
    /// Replies received per second of the run phase.
    pub per_second: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latency {
    pub samples: u64,
    pub avg: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeartbeatSpread {
    pub min: u64,
    pub avg: f64,
    pub max: u64,
}

pub(crate) fn per_second(n: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        n as f64 / seconds
    } else {
        0.0
    }
}

impl Report {
    pub fn new(
        scenario: &str,
        url: &str,
        attempted: usize,
        connect: Phase,
        run: Phase,
        totals: Totals,
        cpu: Vec<CpuUse>,
    ) -> Self {
        let plot = PlotData::new(&totals, run.seconds);
        let h = &totals.latency_us;
        let ms = |us: u64| us as f64 / 1000.0;
        let latency_ms = (!h.is_empty()).then(|| Latency {
            samples: h.len(),
            avg: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p95: ms(h.value_at_quantile(0.95)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
        });
        Report {
            scenario: scenario.into(),
            url: url.into(),
            connections: Connections {
                attempted: attempted as u64,
                ok: totals.connections_ok,
                failed: totals.connections_failed,
                open_at_end: totals.open_at_end,
                connect_seconds: connect.seconds,
                per_second: per_second(totals.connections_ok, connect.seconds),
            },
            messages: Messages {
                sent: totals.sent,
                received: totals.received,
                unavailable: totals.unavailable,
                run_seconds: run.seconds,
                per_second: per_second(totals.received, run.seconds),
            },
            errors: totals.error_count(),
            error_kinds: totals.errors,
            count_violations: totals.count_violations,
            latency_ms,
            heartbeats_per_socket: totals.heartbeats.map(|s| HeartbeatSpread {
                min: s.min,
                avg: s.avg(),
                max: s.max,
            }),
            cpu,
            workers: 1,
            fan_out: None,
            rooms: None,
            resume: None,
            disruption: None,
            recovery: None,
            redis: None,
            plot,
        }
    }

    /// 0 clean, 1 a count was wrong, 2 other failures (see `--help`).
    pub fn exit_code(&self) -> i32 {
        if self.count_violations > 0 {
            1
        } else if self.errors > 0 || self.connections.failed > 0 {
            2
        } else {
            0
        }
    }

    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut rows: Vec<(String, String)> = Vec::new();
        let mut row = |k: &str, v: String| rows.push((k.to_string(), v));
        let c = &self.connections;
        let m = &self.messages;
        row("scenario", format!("{} -> {}", self.scenario, self.url));
        row(
            "connections ok / failed",
            format!("{} / {} (of {})", c.ok, c.failed, c.attempted),
        );
        row(
            "connections/s",
            format!(
                "{:.0} (all open in {:.2} s)",
                c.per_second, c.connect_seconds
            ),
        );
        row("open at end", c.open_at_end.to_string());
        row("worker processes", self.workers.to_string());
        row(
            "messages sent / received",
            format!("{} / {}", m.sent, m.received),
        );
        if m.unavailable > 0 {
            row("answered unavailable, resent", m.unavailable.to_string());
        }
        row(
            "messages/s",
            format!("{:.0} (run phase {:.2} s)", m.per_second, m.run_seconds),
        );
        row("errors", self.errors.to_string());
        for (kind, n) in &self.error_kinds {
            row(&format!("  {kind}"), n.to_string());
        }
        row("count violations", self.count_violations.to_string());
        let latency = match &self.latency_ms {
            Some(l) => format!(
                "{:.2} / {:.2} / {:.2} / {:.2} / {:.2}",
                l.avg, l.p50, l.p95, l.p99, l.max
            ),
            None => "-".into(),
        };
        row("latency ms avg/p50/p95/p99/max", latency);
        if let Some(h) = &self.heartbeats_per_socket {
            row(
                "heartbeats/socket min/avg/max",
                format!("{} / {:.1} / {}", h.min, h.avg, h.max),
            );
        }
        sections::rows(self, &mut row);
        for cpu in &self.cpu {
            row(
                &format!("cpu {} (% of a core)", cpu.name),
                format!("{:.0}", cpu.percent_of_one_core),
            );
        }
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (k, v) in rows {
            let _ = writeln!(out, "{k:<width$}  {v}");
        }
        out
    }

    pub fn write_json(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("the report serializes");
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;
    use crate::stats::Tally;

    pub(crate) fn sample() -> Report {
        let mut totals = Totals {
            connections_ok: 2,
            ..Totals::default()
        };
        totals.connection_failed("connect: http 503");
        for ms in [1, 2] {
            let mut t = Tally::default();
            (t.sent, t.received, t.open_at_end) = (2, 2, true);
            t.record_latency(Duration::from_millis(ms));
            t.record_latency(Duration::from_millis(ms));
            totals.absorb(t);
        }
        Report::new(
            "closed-loop",
            "ws://x/",
            3,
            Phase { seconds: 0.5 },
            Phase { seconds: 2.0 },
            totals,
            vec![CpuUse {
                name: "server".into(),
                percent_of_one_core: 87.4,
                cpu_seconds: 1.748,
            }],
        )
    }

    #[test]
    fn numbers_are_derived_from_the_totals() {
        let r = sample();
        assert_eq!((r.connections.ok, r.connections.failed), (2, 1));
        assert_eq!(r.connections.per_second, 4.0);
        assert_eq!(r.messages.per_second, 2.0);
        let l = r.latency_ms.as_ref().unwrap();
        assert_eq!(l.samples, 4);
        assert!((l.avg - 1.5).abs() < 0.01, "{l:?}");
        assert!((l.max - 2.0).abs() < 0.01, "{l:?}");
        assert_eq!(r.errors, 1);
        assert_eq!(r.exit_code(), 2);
    }

    #[test]
    fn the_table_has_every_headline_number_aligned() {
        let table = sample().table();
        for needle in [
            "connections ok / failed         2 / 1 (of 3)",
            "messages sent / received        4 / 4",
            "  connect: http 503             1",
            "count violations                0",
            "latency ms avg/p50/p95/p99/max  1.50 / 1.00 / 2.00 / 2.00 / 2.00",
            "cpu server (% of a core)        87",
        ] {
            assert!(table.contains(needle), "missing {needle:?} in\n{table}");
        }
    }

    #[test]
    fn json_has_the_same_fields() {
        let value = serde_json::to_value(sample()).unwrap();
        assert_eq!(value["messages"]["received"], 4);
        assert_eq!(value["error_kinds"]["connect: http 503"], 1);
        assert_eq!(value["cpu"][0]["name"], "server");
        assert!(value["latency_ms"]["p99"].as_f64().unwrap() > 1.9);
    }

    #[test]
    fn violations_win_over_errors_in_the_exit_code() {
        let mut r = sample();
        r.count_violations = 1;
        assert_eq!(r.exit_code(), 1);
        r.count_violations = 0;
        r.errors = 0;
        r.connections.failed = 0;
        assert_eq!(r.exit_code(), 0);
    }
}
