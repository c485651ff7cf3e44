//! `--during CMD`: a disruption run in the middle of the load (a rolling restart, a SIGTERM,
//! a promotion), so the report shows what clients saw while it happened.
//!
//! The command runs as `sh -c CMD`, `--during-after` into the run phase. Its output goes to
//! this tool's stderr, keeping stdout for the report. It is bounded by the run's deadline:
//! past it the shell is killed (SIGKILL on drop) and the run fails.

use std::{process::Stdio, time::Duration};

use tokio::time::Instant;

/// How the command went.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub command: String,
    /// The shell's exit status; `None` when it did not start, was killed by a signal, or ran
    /// past the deadline.
    pub exit_code: Option<i32>,
    pub seconds: f64,
    /// Why the command counts as failed (an error kind for the report), if it does.
    pub failure: Option<String>,
}

/// Waits `after`, runs `sh -c command`, and waits for it until `deadline`.
pub async fn run(command: String, after: Duration, deadline: Instant) -> Outcome {
    let mut outcome = Outcome {
        command: command.clone(),
        exit_code: None,
        seconds: 0.0,
        failure: None,
    };
    let start_at = Instant::now() + after;
    if start_at >= deadline {
        outcome.failure = Some("during: --timeout came before --during-after".into());
        return outcome;
    }
    tokio::time::sleep_until(start_at).await;
    eprintln!("wsfleet-loadtest: running --during command: {command}");
    let started = Instant::now();
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&command)
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::io::stderr()))
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            outcome.failure = Some(format!("during: could not start sh: {}", e.kind()));
            return outcome;
        }
    };
    let status = tokio::time::timeout_at(deadline, child.wait()).await;
    outcome.seconds = started.elapsed().as_secs_f64();
    match status {
        Ok(Ok(status)) => {
            outcome.exit_code = status.code();
            outcome.failure = match status.code() {
                Some(0) => None,
                Some(code) => Some(format!("during: command exited {code}")),
                None => Some("during: command killed by a signal".into()),
            };
        }
        Ok(Err(e)) => outcome.failure = Some(format!("during: waiting failed: {}", e.kind())),
        Err(_) => outcome.failure = Some("during: command still running at --timeout".into()),
    }
    eprintln!(
        "wsfleet-loadtest: --during command ended after {:.2} s ({})",
        outcome.seconds,
        outcome.failure.as_deref().unwrap_or("exit 0")
    );
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_ten_seconds() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    #[tokio::test]
    async fn a_command_that_succeeds_reports_exit_zero_and_its_duration() {
        let o = run(
            "sleep 0.2".into(),
            Duration::from_millis(10),
            in_ten_seconds(),
        )
        .await;
        assert_eq!((o.exit_code, o.failure.as_deref()), (Some(0), None));
        assert!(o.seconds >= 0.15, "{o:?}");
        assert_eq!(o.command, "sleep 0.2");
    }

    #[tokio::test]
    async fn a_failing_command_is_a_failure_with_its_exit_code() {
        let o = run("exit 7".into(), Duration::ZERO, in_ten_seconds()).await;
        assert_eq!(o.exit_code, Some(7));
        assert_eq!(o.failure.as_deref(), Some("during: command exited 7"));
    }

    #[tokio::test]
    async fn a_command_past_the_deadline_is_stopped_and_fails() {
        let deadline = Instant::now() + Duration::from_millis(300);
        let o = run("sleep 30".into(), Duration::ZERO, deadline).await;
        assert_eq!(o.exit_code, None);
        assert!(o.failure.unwrap().contains("--timeout"));
        assert!(o.seconds < 5.0);
    }

    #[tokio::test]
    async fn a_command_due_after_the_deadline_does_not_run() {
        let deadline = Instant::now() + Duration::from_millis(100);
        let o = run("exit 0".into(), Duration::from_secs(1), deadline).await;
        assert!(o.failure.is_some(), "{o:?}");
    }
}
