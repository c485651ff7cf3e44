//! The options every scenario shares ([`Common`]), and their parsers.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use clap::Args;
use wsfleet::config::{parse_duration, Secret};

use crate::workers::plan::{Slice, Workers};

/// Options every scenario shares.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// The WebSocket endpoint (ws:// only). Repeat it to spread the sockets round-robin over
    /// several, e.g. every instance directly. Nothing else is ever contacted, but fan-out's
    /// --broadcast-url.
    #[arg(
        long = "url",
        value_name = "URL",
        env = "LOADTEST_URL",
        default_value = "ws://127.0.0.1:8000/ws/chat/"
    )]
    pub urls: Vec<String>,

    /// Sockets to open.
    #[arg(short = 'n', long, env = "LOADTEST_CONNECTIONS", default_value_t = 100)]
    pub connections: usize,

    /// Connection attempts in flight at once: enough to open thousands quickly, few enough
    /// not to overflow the server's accept backlog.
    #[arg(long, env = "LOADTEST_CONCURRENCY", default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub concurrency: u64,

    /// Overall deadline for the whole run; whatever is still going then is stopped and
    /// reported as an error.
    #[arg(long, env = "LOADTEST_TIMEOUT", default_value = "300s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Deadline for one connection attempt (TCP, upgrade and welcome frame).
    #[arg(long, env = "LOADTEST_CONNECT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// Resume sessions `<PREFIX>-<i>` instead of letting the server make new ones; a rerun
    /// then starts from the counts the previous run left, which are verified too. `resume`
    /// and --during runs choose a random prefix when none is given.
    #[arg(long, env = "LOADTEST_SESSION_PREFIX")]
    pub session_prefix: Option<String>,

    /// The fleet's AUTH_SECRET (HS256), when it has authentication on: each connection
    /// then carries a token of its own, for a user of its own (`lt-user-<i>`), minted at
    /// every dial. Prefer the environment variable: a command line is visible to every user
    /// of the machine.
    #[arg(long, env = "LOADTEST_AUTH_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub auth_secret: Option<Secret>,

    /// Text of every frame sent (the server counts any text).
    #[arg(long, env = "LOADTEST_PAYLOAD", default_value = "hello")]
    pub payload: String,

    /// Also measure the CPU use of another process during the run phase, given as NAME=PID
    /// (e.g. server=1234); repeatable. This tool and its workers are always measured. Read
    /// from /proc, so Linux only.
    #[arg(long = "sample-pid", value_name = "NAME=PID", value_parser = parse_named_pid)]
    pub sample_pids: Vec<(String, u32)>,

    /// Also write the report as JSON to this file.
    #[arg(long, env = "LOADTEST_JSON")]
    pub json: Option<PathBuf>,

    /// Also read this Redis's INFO (host:port, plain RESP, no auth): used_memory before
    /// connecting and once every socket is connected (for `rooms`: joined), and in `rooms`
    /// the commands it ran while publishing (INFO commandstats, from the run phase's start to
    /// a second after the last publication is due), per publication.
    #[arg(long, env = "LOADTEST_REDIS_INFO", value_name = "HOST:PORT")]
    pub redis_info: Option<String>,

    /// Run `sh -c CMD` during the run phase (e.g. a rolling restart), --during-after into it.
    /// Sockets the server then closes (bye, close 1001, connection lost) resume their
    /// session (a random --session-prefix is chosen if none is given), resend what was not
    /// acknowledged and go on; the report gets a disruption section: reconnects, longest gap
    /// from losing a socket to the next welcome, counts lost and repeated, and the command's
    /// exit code and duration. A failing command fails the run.
    #[arg(long, env = "LOADTEST_DURING", value_name = "CMD")]
    pub during: Option<String>,

    /// How long after the run phase starts the --during command runs.
    #[arg(long, env = "LOADTEST_DURING_AFTER", default_value = "5s", value_parser = parse_duration)]
    pub during_after: Duration,

    /// Also draw the run into this SVG file: latency over time (per-second p50, p99, max),
    /// replies per second, and the latency distribution.
    #[arg(long, env = "LOADTEST_PLOT")]
    pub plot: Option<PathBuf>,

    /// Local addresses to bind the sockets to, round-robin (comma-separated, e.g.
    /// 127.0.0.1,127.0.0.2; every 127.x.y.z works on Linux loopback without setup). Each
    /// (address, destination) pair has its own ~28k local ports, so this is how one machine
    /// opens more sockets than that to one server.
    #[arg(
        long,
        env = "LOADTEST_SOURCE_IPS",
        value_delimiter = ',',
        value_name = "IP,..."
    )]
    pub source_ips: Vec<IpAddr>,

    /// Processes that hold the sockets: a number, or auto for as few as keep each under this
    /// machine's per-process open-file limit (~19,900 sockets with a limit of 20,000). With
    /// more than one, this process starts the workers, starts their run phase together once
    /// all are connected, draws the progress and merges their results into one report; it
    /// also publishes fan-out's broadcasts and runs the --during command, once for all.
    #[arg(
        long,
        env = "LOADTEST_WORKERS",
        default_value = "auto",
        value_name = "N|auto"
    )]
    pub workers: Workers,

    /// No progress bar on stderr (there is none anyway when stderr is not a terminal).
    #[arg(long, env = "LOADTEST_NO_PROGRESS")]
    pub no_progress: bool,

    /// Internal: run as a worker of a parent process, owning the sockets with global
    /// indices OFFSET..OFFSET+COUNT (see workers::child).
    #[arg(long, hide = true, value_name = "OFFSET:COUNT")]
    pub worker_slice: Option<Slice>,
}

impl Common {
    /// The URLs for the report: one, or all of them comma-separated.
    pub fn urls_label(&self) -> String {
        self.urls.join(",")
    }
}

/// Keeps a token out of `Debug` output (a panic message printing the options, say).
pub(crate) fn parse_secret(s: &str) -> Result<Secret, std::convert::Infallible> {
    Ok(Secret::from(s.to_string()))
}

pub(crate) fn parse_named_pid(s: &str) -> Result<(String, u32), String> {
    let (name, pid) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=PID"))?;
    let pid = pid
        .parse()
        .map_err(|_| format!("{pid:?} in {s:?} is not a process id"))?;
    if name.is_empty() {
        return Err(format!("{s:?} has an empty name"));
    }
    Ok((name.to_string(), pid))
}
