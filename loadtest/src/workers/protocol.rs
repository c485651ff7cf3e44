//! The lines a worker and its parent exchange over the worker's stdin and stdout, one JSON
//! value (or the word `go`) per line. A worker prints nothing else on stdout.

use std::io::Write;

use serde::{Deserialize, Serialize};

use crate::{live::Snapshot, stats::Totals};

/// The one line the parent sends, on the worker's stdin, to start its run phase.
pub const GO: &str = "go";

/// What a worker reports on its stdout.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerLine {
    /// Its counters so far, every `PROGRESS_INTERVAL`, for the parent's progress bar.
    Progress(Snapshot),
    /// Every socket of its slice was tried; it now waits for [`GO`].
    Connected(Snapshot),
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
    }
}
