//! The lines a worker and its parent exchange over the worker's stdin and stdout, one JSON
//! value per line. A worker prints nothing else on stdout.

use std::io::Write;

use serde::{Deserialize, Serialize};

use crate::{live::Snapshot, stats::Totals};

/// What the parent tells a worker, on the worker's stdin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParentLine {
    /// The barrier opens: start the run phase. `run_start_us` is the run's start on the
    /// wall clock (unix µs), second 0 of every worker's latency series.
    Go { run_start_us: u64 },
    /// The coordinator is done publishing (at once for scenarios without broadcasts):
    /// fan-out receivers stop a grace period later.
    Published,
}

impl ParentLine {
    /// The line as written to a worker's stdin, newline included.
    pub fn to_line(self) -> String {
        serde_json::to_string(&self).expect("parent lines serialize") + "\n"
    }
}

/// What a worker reports on its stdout.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerLine {
    /// Its counters so far, every `PROGRESS_INTERVAL`, for the parent's progress bar.
    Progress(Snapshot),
    /// Every socket of its slice was tried; it now waits for [`ParentLine::Go`].
    Connected(Snapshot),
    /// After `go`: its sockets have left the barrier and are in their run phase (none is
    /// parked any more, so each counts what arrives from now on).
    Running,
    /// Its run phase is over: everything it counted. It exits after this line.
    Finished(Box<Totals>),
}

/// How often a worker reports progress: the bar redraws at about this rate anyway.
pub const PROGRESS_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

impl WorkerLine {
    /// Writes the line to stdout at once. The stdout lock keeps lines from two tasks whole.
    /// A parent that went away is noticed on stdin, not here, so errors are ignored.
    pub fn emit(&self) {
        let text = serde_json::to_string(self).expect("worker lines serialize");
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_tagged_json_and_read_back() {
        let line = WorkerLine::Connected(Snapshot {
            connected: 5,
            ..Snapshot::default()
        });
        let text = serde_json::to_string(&line).unwrap();
        assert!(
            text.starts_with(r#"{"connected":{"connected":5,"#),
            "{text}"
        );
        let totals = Totals {
            connections_ok: 7,
            ..Totals::default()
        };
        let text = serde_json::to_string(&WorkerLine::Finished(Box::new(totals))).unwrap();
        let WorkerLine::Finished(back) = serde_json::from_str(&text).unwrap() else {
            panic!("not finished: {text}");
        };
        assert_eq!(back.connections_ok, 7);
        let text = serde_json::to_string(&WorkerLine::Running).unwrap();
        assert!(matches!(
            serde_json::from_str(&text).unwrap(),
            WorkerLine::Running
        ));
    }

    #[test]
    fn parent_lines_are_one_json_line_each_and_read_back() {
        for line in [ParentLine::Go { run_start_us: 42 }, ParentLine::Published] {
            let text = line.to_line();
            assert_eq!(text.matches('\n').count(), 1, "{text}");
            assert!(text.ends_with('\n'));
            assert_eq!(serde_json::from_str::<ParentLine>(&text).unwrap(), line);
        }
    }
}
