//! One task per worker process: forwards its stdout lines to the parent as events, keeps
//! the tail of its stderr, kills it when told to, reaps it, and says how it died.

use std::{collections::VecDeque, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::Child,
    sync::{mpsc, watch},
    time::timeout,
};

use super::protocol::WorkerLine;

/// Lines of a worker's stderr kept to explain its death.
const STDERR_TAIL_LINES: usize = 20;

/// What a worker's watcher tells the parent.
pub enum Event {
    Line(usize, WorkerLine),
    /// Its stdout ended without a `finished` line: why, and its stderr's last lines.
    Died(usize, String, Vec<String>),
}

/// Forwards one worker's stdout lines as events until it ends (or is told to kill it), then
/// reaps it and, if it never sent its totals, says how it died.
pub async fn watch_worker(
    k: usize,
    mut child: Child,
    mut kill: watch::Receiver<bool>,
    events: mpsc::UnboundedSender<Event>,
) {
    let stdout = child.stdout.take().expect("stdout is piped");
    let tail = tokio::spawn(keep_tail(child.stderr.take().expect("stderr is piped")));
    let mut lines = BufReader::new(stdout).lines();
    let mut finished = false;
    let mut why = None;
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(text)) => match serde_json::from_str::<WorkerLine>(&text) {
                    Ok(line) => {
                        finished |= matches!(line, WorkerLine::Finished(_));
                        let _ = events.send(Event::Line(k, line));
                    }
                    Err(e) => {
                        why = Some(format!("unreadable line {:?}: {e}", shorten(&text, 80)));
                        let _ = child.start_kill();
                        break;
                    }
                },
                Ok(None) | Err(_) => break,
            },
            Ok(()) = kill.changed() => {
                let _ = child.start_kill();
                break;
            }
        }
    }
    let status = match timeout(Duration::from_secs(5), child.wait()).await {
        Ok(Ok(status)) => status.to_string(),
        Ok(Err(e)) => format!("wait failed: {e}"),
        Err(_) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            "did not exit after its output ended; killed".to_string()
        }
    };
    let tail = match timeout(Duration::from_secs(2), tail).await {
        Ok(Ok(tail)) => tail,
        _ => Vec::new(),
    };
    if !finished {
        let why = why.unwrap_or(status);
        let _ = events.send(Event::Died(k, why, tail));
    }
}

/// Reads a worker's stderr to its end, keeping the last lines (reading all of it also keeps
/// a chatty worker from blocking on a full pipe).
async fn keep_tail(stderr: impl AsyncRead + Unpin) -> Vec<String> {
    let mut lines = BufReader::new(stderr).lines();
    let mut tail = VecDeque::with_capacity(STDERR_TAIL_LINES);
    while let Ok(Some(line)) = lines.next_line().await {
        if tail.len() == STDERR_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    tail.into()
}

/// At most `max` characters of `text`, marked when cut.
pub fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_stderr_lines_are_cut_on_a_character_boundary() {
        assert_eq!(shorten("short", 10), "short");
        assert_eq!(shorten("ééééé", 3), "ééé…");
    }

    #[tokio::test]
    async fn the_stderr_tail_keeps_the_last_lines() {
        let text: String = (0..30).map(|i| format!("line {i}\n")).collect();
        let tail = keep_tail(text.as_bytes()).await;
        assert_eq!(tail.len(), STDERR_TAIL_LINES);
        assert_eq!(tail.first().unwrap(), "line 10");
        assert_eq!(tail.last().unwrap(), "line 29");
    }
}
