//! Command line: one subcommand per scenario, each with the shared [`Common`] options.
//!
//! Every option has an environment fallback (`LOADTEST_*`) so `make load-test` and the bench
//! script can pass settings without rebuilding long command lines.

use std::time::Duration;

use clap::{Parser, Subcommand};
use wsfleet::config::{parse_duration, Secret};

mod common;

#[cfg(test)]
use common::parse_named_pid;
pub(crate) use common::parse_secret;
pub use common::Common;

use crate::{client::token::TokenArgs, scenario::smoke::SmokeArgs, summarize::SummarizeArgs};

/// Load tester for wsfleet: opens many WebSockets to one or more URLs and measures counts,
/// latency and throughput. Past one process's open-file limit it spreads itself over worker
/// processes (--workers), and past one address's local ports over source addresses
/// (--source-ips) and destinations (--url, repeatable).
///
/// Exit code: 0 when every connection and reply was as expected, 1 when a count was wrong
/// (a skipped or repeated number, in a reply or in a resumed session's welcome), 2 when
/// connections failed or sockets errored (including the overall --timeout running out, a
/// broadcast missed, a failing --during command, or a worker process dying) but no count was
/// wrong (in `rooms`, a publication lost, duplicated or out of order is a wrong count), 3
/// when the run could not start (a bad option, or a limit of this machine, named).
///
/// Also `wsfleet-loadtest smoke`: the one-instance smoke test `make promote` runs; and
/// `wsfleet-loadtest summarize`: the bench's numbers from these reports; and
/// `wsfleet-loadtest token`: a token for a fleet with authentication on.
#[derive(Debug, Parser)]
#[command(name = "wsfleet-loadtest", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Smoke test of one instance, contacted directly: /readyz, a counted round trip, two
    /// publications to a private room received (nothing reaches real users). What `make
    /// promote` runs before moving traffic.
    Smoke(SmokeArgs),
    /// The numbers scripts/bench.sh writes, from the JSON reports of its runs (--json):
    /// values, CPU, medians, ratios, verdicts; `?` for what a report lacks.
    Summarize(SummarizeArgs),
    /// Prints a token for a fleet with authentication on (HS256, AUTH_SECRET), to try it by
    /// hand: `wsfleet-loadtest token --sub alice --ttl 1h`.
    Token(TokenArgs),
    #[command(flatten)]
    Load(Box<Scenario>),
}

#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// Each socket sends one text frame, waits for its `{"count": n}` reply, then sends the
    /// next: measures round trip and the throughput the server sustains.
    ClosedLoop {
        #[command(flatten)]
        common: Common,
        /// Messages each socket sends.
        #[arg(short, long, env = "LOADTEST_MESSAGES", default_value_t = 100)]
        messages: u64,
    },
    /// Each socket sends at a fixed rate whatever the replies do; latency is measured from
    /// the moment a frame was due, so a stalled server shows up as latency, not as a lower
    /// offered rate.
    OpenLoop {
        #[command(flatten)]
        common: Common,
        /// Messages per second per socket.
        #[arg(short, long, env = "LOADTEST_RATE", default_value_t = 10.0)]
        rate: f64,
        /// How long each socket sends.
        #[arg(short, long, env = "LOADTEST_DURATION", default_value = "30s", value_parser = parse_duration)]
        duration: Duration,
    },
    /// Opens the sockets and keeps them idle, reading heartbeats (and answering pings), for
    /// a while: measures how many connections the server holds and what they cost.
    Hold {
        #[command(flatten)]
        common: Common,
        /// How long to keep the sockets open once all are connected.
        #[arg(short, long, env = "LOADTEST_DURATION", default_value = "30s", value_parser = parse_duration)]
        duration: Duration,
        /// Counted messages each socket exchanges (closed loop) before going idle.
        #[arg(long, env = "LOADTEST_WARMUP_MESSAGES", default_value_t = 0)]
        warmup_messages: u64,
    },
    /// The sockets connect and listen; then --broadcasts broadcasts are published with
    /// POST /broadcast, --broadcast-interval apart. Every socket must receive every one:
    /// latency is from the publish time each carries (wall clock) to its arrival, and a
    /// missed delivery is an error.
    FanOut {
        #[command(flatten)]
        common: Common,
        /// The POST /broadcast endpoint of one instance (http:// only; the fleet's nginx does
        /// not expose it on its public listener). wsfleet needs one: its instances share the
        /// Redis channel. Repeat it to publish each broadcast to several servers at once (the
        /// same stamp to each), for servers that share nothing, like wsfleet-ceiling processes.
        #[arg(
            long = "broadcast-url",
            env = "LOADTEST_BROADCAST_URL",
            default_value = "http://127.0.0.1:8000/broadcast"
        )]
        broadcast_urls: Vec<String>,
        /// The fleet's BROADCAST_TOKEN. Prefer the environment variable: a command line is
        /// visible to every user of the machine.
        #[arg(long, env = "BROADCAST_TOKEN", hide_env_values = true, value_parser = parse_secret)]
        token: Secret,
        /// Broadcasts to publish.
        #[arg(long, env = "LOADTEST_BROADCASTS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        broadcasts: u64,
        /// Time between two broadcasts.
        #[arg(long, env = "LOADTEST_BROADCAST_INTERVAL", default_value = "1s", value_parser = parse_duration)]
        broadcast_interval: Duration,
        /// Tags this run's broadcasts so other broadcasts are not counted (default: random;
        /// set by a parent process for its workers, through the environment).
        #[arg(long, hide = true, env = "LOADTEST_RUN_ID")]
        run_id: Option<String>,
        /// Recover across reconnects with offsets (SPEC "History and recovery"): a socket
        /// the server closes (bye and 1001, 1013, the connection lost) resumes its session
        /// with `since`/`epoch` on the URL; every offset must still arrive exactly once and in order, and an answer
        /// without `recovered: true` is a violation (not_recovered). Broadcasts carry an
        /// Idempotency-Key and are retried until accepted.
        #[arg(long, env = "LOADTEST_RESUME")]
        resume: bool,
    },
    /// --rooms rooms of --members sockets each (--connections is set to their product): every
    /// socket joins its room while connecting (`join`; its `room_users` offset is where its
    /// expectations start), then --publishers members of each room publish `message`s to it,
    /// --rate per room in all, for --duration. Every member must receive every publication of
    /// its room exactly once and in offset order: publications lost, duplicated and out of
    /// order are counted (as violations); latency is from the send time each carries (wall
    /// clock) to its arrival at each member.
    Rooms {
        #[command(flatten)]
        common: Common,
        /// Rooms, named <ROOM_PREFIX>-0, <ROOM_PREFIX>-1, …
        #[arg(long, env = "LOADTEST_ROOMS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        rooms: u64,
        /// Sockets in each room (each its own session and user).
        #[arg(long, env = "LOADTEST_MEMBERS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        members: u64,
        /// Publications per second to each room, from all its publishers together.
        #[arg(short, long, env = "LOADTEST_RATE", default_value_t = 1.0)]
        rate: f64,
        /// How long publishing lasts: each room gets rate × duration publications (at least 1).
        #[arg(short, long, env = "LOADTEST_DURATION", default_value = "10s", value_parser = parse_duration)]
        duration: Duration,
        /// Members of each room that publish, taking turns (the first ones of the room). The
        /// server reads one frame of a socket at a time, each publication waiting for its
        /// Redis script, and rate-limits each socket (RATE_LIMIT), so rates past a few
        /// hundred per room need several.
        #[arg(long, env = "LOADTEST_PUBLISHERS", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
        publishers: u64,
        /// Prefix of the room names (default: lt- and a random word, so that every run starts
        /// with fresh rooms at offset 0).
        #[arg(long, env = "LOADTEST_ROOM_PREFIX")]
        room_prefix: Option<String>,
        /// Recover across reconnects with offsets (SPEC "History and recovery"): a socket
        /// the server closes (bye and 1001, 1013, the connection lost) resumes its session
        /// and joins its room again with `since`/`epoch`; every offset must still arrive exactly once and in order, and an answer
        /// without `recovered: true` is a violation (not_recovered). Publishers send a client `id`
        /// with each message and resend those not seen back after a reconnect (the server
        /// publishes an id once). Needed for --during.
        #[arg(long, env = "LOADTEST_RESUME")]
        resume: bool,
    },
    /// Every socket uses session <PREFIX>-<i> (--session-prefix, default a random one) and
    /// has --messages counted over --resumes + 1 connections: it closes and resumes its
    /// session --resumes times. Each welcome after a resume must continue the count exactly
    /// (no gap, no repeat).
    Resume {
        #[command(flatten)]
        common: Common,
        /// Messages each socket has counted, over all its connections.
        #[arg(short, long, env = "LOADTEST_MESSAGES", default_value_t = 20)]
        messages: u64,
        /// How many times each socket closes and resumes its session.
        #[arg(long, env = "LOADTEST_RESUMES", default_value_t = 3)]
        resumes: u64,
    },
}

impl Scenario {
    pub fn common(&self) -> &Common {
        match self {
            Scenario::ClosedLoop { common, .. }
            | Scenario::OpenLoop { common, .. }
            | Scenario::Hold { common, .. }
            | Scenario::FanOut { common, .. }
            | Scenario::Rooms { common, .. }
            | Scenario::Resume { common, .. } => common,
        }
    }

    pub fn common_mut(&mut self) -> &mut Common {
        match self {
            Scenario::ClosedLoop { common, .. }
            | Scenario::OpenLoop { common, .. }
            | Scenario::Hold { common, .. }
            | Scenario::FanOut { common, .. }
            | Scenario::Rooms { common, .. }
            | Scenario::Resume { common, .. } => common,
        }
    }

    /// Fills in the random defaults a run needs before any socket opens (and before the work
    /// is handed to other processes, which must share them): the session prefix of `resume`
    /// and of `--during` runs (resuming needs known sessions), and the fan-out run id.
    pub fn settle_random_defaults(&mut self) {
        let needs_sessions = matches!(self, Scenario::Resume { .. })
            || self.common().during.is_some()
            || self.resumes_with_offsets();
        if needs_sessions {
            self.common_mut()
                .session_prefix
                .get_or_insert_with(|| format!("lt-{}", crate::scenario::smoke::nonce()));
        }
        if let Scenario::FanOut { run_id, .. } = self {
            run_id.get_or_insert_with(crate::scenario::smoke::nonce);
        }
        if let Scenario::Rooms {
            common,
            rooms,
            members,
            room_prefix,
            ..
        } = self
        {
            room_prefix.get_or_insert_with(|| format!("lt-{}", crate::scenario::smoke::nonce()));
            common.connections = usize::try_from(*rooms * *members).unwrap_or(usize::MAX);
        }
    }

    /// Whether sockets recover their streams with offsets across reconnects (`--resume` of
    /// rooms and fan-out).
    pub fn resumes_with_offsets(&self) -> bool {
        matches!(
            self,
            Scenario::Rooms { resume: true, .. } | Scenario::FanOut { resume: true, .. }
        )
    }

    pub fn name(&self) -> &'static str {
        match self {
            Scenario::ClosedLoop { .. } => "closed-loop",
            Scenario::OpenLoop { .. } => "open-loop",
            Scenario::Hold { .. } => "hold",
            Scenario::FanOut { .. } => "fan-out",
            Scenario::Rooms { .. } => "rooms",
            Scenario::Resume { .. } => "resume",
        }
    }
}

#[cfg(test)]
mod tests;
