//! Values of one JSON report (`--json`), as the bench's Markdown shows them: numbers the way
//! the report holds them (a whole number without `.0`), `?` for a missing report or value.

use std::path::Path;

use clap::ValueEnum;
use serde_json::Value;

/// What CPU time is divided by in `us-per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Per {
    /// Each reply received (`messages.received`).
    Reply,
    /// Each frame a fan-out run delivered: its broadcasts (`fan_out.deliveries`) and the
    /// heartbeats (`heartbeats_per_socket.avg` × `connections.ok`).
    Frame,
}

const MISSING: &str = "?";

fn load(report: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(report).ok()?).ok()
}

fn at<'a>(report: &'a Value, path: &str) -> Option<&'a Value> {
    path.trim_start_matches('.')
        .split('.')
        .filter(|key| !key.is_empty())
        .try_fold(report, |v, key| v.get(key))
}

/// A number as the report holds it: `12` for 12.0, `0.61`, never an exponent for sizes seen
/// here.
fn number(v: f64) -> String {
    format!("{v}")
}

/// The value at `path` of `report` (`?` when null, false or absent); `floor`: rounded down.
pub fn value(report: &Path, path: &str, floor: bool) -> String {
    let Some(report) = load(report) else {
        return MISSING.to_owned();
    };
    match at(&report, path) {
        None | Some(Value::Null | Value::Bool(false)) => MISSING.to_owned(),
        Some(Value::Number(n)) if floor => {
            n.as_f64().map_or(MISSING.to_owned(), |v| number(v.floor()))
        }
        Some(_) if floor => MISSING.to_owned(),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(|i| i.to_string())
            .or_else(|| n.as_f64().map(number))
            .unwrap_or_else(|| n.to_string()),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// The report's CPU samples (`cpu`: name, percent_of_one_core, cpu_seconds).
fn samples(report: &Path) -> Option<Vec<Value>> {
    match load(report)?.get_mut("cpu")?.take() {
        Value::Array(samples) => Some(samples),
        _ => None,
    }
}

fn name(sample: &Value) -> &str {
    sample.get("name").and_then(Value::as_str).unwrap_or("")
}

fn field(sample: &Value, key: &str) -> Option<f64> {
    sample.get(key).and_then(Value::as_f64)
}

/// Percent of one core of the first sample named `who` (or `who (…)`), rounded down.
pub fn cpu(report: &Path, who: &str) -> String {
    samples(report)
        .and_then(|s| {
            s.iter()
                .find(|s| name(s) == who || name(s).starts_with(&format!("{who} ")))
                .and_then(|s| field(s, "percent_of_one_core"))
        })
        .map_or(MISSING.to_owned(), |p| number(p.floor()))
}

/// Summed percent of one core of every sample whose name starts with `prefix`, rounded down
/// (0 when none does).
pub fn cpu_sum(report: &Path, prefix: &str) -> String {
    samples(report).map_or(MISSING.to_owned(), |s| {
        // A fold from +0, not `sum()`: an empty f64 sum is -0, printed "-0".
        let sum = s
            .iter()
            .filter(|s| name(s).starts_with(prefix))
            .filter_map(|s| field(s, "percent_of_one_core"))
            .fold(0.0, |a, b| a + b);
        number(sum.floor())
    })
}

/// µs of CPU the samples whose name starts with `who` used per `per`, rounded down to 0.1 µs;
/// `?` without such a sample or with nothing to divide by. CPU seconds ÷ count, not percent ÷
/// rate: the CPU sample ends after the sockets' closes, the run phase before them.
pub fn us_per(report: &Path, who: &str, per: Per) -> String {
    let Some(report) = load(report) else {
        return MISSING.to_owned();
    };
    let Some(Value::Array(samples)) = report.get("cpu") else {
        return MISSING.to_owned();
    };
    let seconds: Vec<f64> = samples
        .iter()
        .filter(|s| name(s).starts_with(who))
        .filter_map(|s| field(s, "cpu_seconds"))
        .collect();
    let get = |path: &str| at(&report, path).and_then(Value::as_f64);
    let count = match per {
        Per::Reply => get("messages.received").unwrap_or(0.0),
        Per::Frame => match get("connections.ok") {
            Some(ok) => {
                get("fan_out.deliveries").unwrap_or(0.0)
                    + get("heartbeats_per_socket.avg").unwrap_or(0.0) * ok
            }
            None => return MISSING.to_owned(),
        },
    };
    if seconds.is_empty() || count <= 0.0 {
        return MISSING.to_owned();
    }
    let s = seconds.iter().fold(0.0, |a, b| a + b);
    number((s / count * 1e6 * 10.0).floor() / 10.0)
}
