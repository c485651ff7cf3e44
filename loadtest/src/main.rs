//! `wsfleet-loadtest`: drives many WebSockets against one or more wsfleet URLs and reports
//! connections, messages, count violations, latency percentiles and CPU use.
//!
//! Scenarios: `closed-loop`, `open-loop`, `hold`, `fan-out` (every socket must receive every
//! broadcast published with `POST /broadcast`), `resume` (every socket closes and resumes its
//! session, and each welcome must continue its count exactly), `rooms` (R rooms × M members;
//! members publish to their room, and every member must receive every publication once, in
//! offset order). Any of them can run a
//! disruption alongside (`--during CMD`), during which sockets the server closes resume their
//! session and go on.
//!
//! # Scale
//! One process may hold at most about 19,900 sockets here (open-file limit 20,000, not
//! raisable), and one (source address, destination) pair about 28,000 (the ephemeral port
//! range). Past the first, the tool spreads itself over worker processes (`--workers`, auto
//! by default) and merges their results into one report; past the second, it binds its
//! sockets to several source addresses (`--source-ips`) and/or spreads them over several
//! destinations (`--url`, repeatable). Before anything connects it checks these limits and
//! the memory available, and names the knob when one is too small (exit code 3).
//!
//! Whatever the number of processes, what concerns the run as a whole happens once, in this
//! (the parent) process: fan-out's broadcasts are published and the `--during` command runs
//! there ([`coordinator`]), while the workers only hold sockets. Every worker gets the run's
//! session prefix and fan-out run id, so sessions and broadcasts are the run's, not the
//! worker's; fan-out latency and the `--plot` seconds come from the wall clock, which every
//! process on the machine shares.
//!
//! # Layout
//! - [`cli`]: subcommands and their options.
//! - [`limits`]: open files (so, how many workers), local ports and memory, checked before
//!   any socket is opened.
//! - [`client`]: connecting with bounded concurrency over the URLs and source addresses,
//!   reading typed frames, closing.
//! - [`link`]: a socket that resumes its session when the server ends it, judging each
//!   welcome by the protocol's resume rule.
//! - [`recovery`]: `--resume` with offsets (rooms, fan-out): a socket's place in its stream
//!   (the `since` of a rejoin or a resumed welcome), the `recovered` verdict, and a
//!   publisher's outbox of messages to resend by client id after a reconnect.
//! - [`scenario`]: the two phases (connect, run) and each scenario's per-socket loop;
//!   `scenario::fan_out` publishes and receives broadcasts, `scenario::during` runs the
//!   `--during` command; `scenario::rooms` publishes to rooms through members and checks
//!   every member's offsets. `scenario::smoke` is the separate one-instance check `make promote`
//!   runs.
//! - [`coordinator`]: work done once per run (not per socket), right after the barrier:
//!   publishing fan-out's broadcasts, the `--during` command.
//! - [`workers`]: the same run spread over worker processes: slicing, the connect barrier,
//!   merging their totals.
//! - [`verify`]: the counter invariant (`c+1, c+2, …` after a welcome with `c`), and the
//!   rooms' (every offset after the join, once, in order).
//! - [`stats`]: per-socket tallies and their totals (HDR histogram for latency), serde-able
//!   so workers can send them.
//! - [`live`] and [`progress`]: counters that move during the run, and the bar on stderr.
//! - [`cpu`]: CPU use of this process, the workers, the server and Redis over the run phase.
//! - [`report`]: the table on stdout and the `--json` file.
//! - [`series`]: latency second by second, for the plot.
//! - [`plot`]: the `--plot` SVG (latency over time, replies/s, latency distribution).
//! - [`redis_info`]: `--redis-info`, Redis memory and commands over the run from its INFO.
//!
//! Only the URLs given are contacted (the WebSocket URLs, and for fan-out the broadcast URL);
//! every loop is bounded by a count and by `--timeout`.

mod cli;
mod client;
mod coordinator;
mod cpu;
mod limits;
mod link;
mod live;
mod plot;
mod progress;
mod recovery;
mod redis_info;
mod report;
mod scenario;
mod series;
mod stats;
mod summarize;
mod verify;
mod workers;

use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Parser;

use crate::{
    cli::{Cli, Command, Scenario},
    workers::parent::Interrupted,
};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            // --help and --version are not errors; a bad option is "could not start".
            return ExitCode::from(if error.use_stderr() { 3 } else { 0 });
        }
    };
    let mut scenario = match cli.command {
        // `smoke` has options of its own, unlike the load scenarios (see scenario::smoke).
        Command::Smoke(args) => return scenario::smoke::main(&args),
        // Reads reports, runs nothing (scripts/bench.sh's numbers).
        Command::Summarize(args) => return summarize::main(&args),
        // Signs one token, runs nothing.
        Command::Token(args) => return client::token::main(&args),
        Command::Load(scenario) => *scenario,
    };
    scenario.settle_random_defaults();
    match run(&scenario) {
        Ok(code) => ExitCode::from(code),
        Err(error) if error.is::<Interrupted>() => {
            eprintln!("wsfleet-loadtest: {error}");
            // 128 + SIGINT, as a shell reports a process that Ctrl-C ended.
            ExitCode::from(130)
        }
        Err(error) => {
            eprintln!("wsfleet-loadtest: {error:#}");
            // 3: the run could not start (bad option, limits); 1 and 2 describe a run.
            ExitCode::from(3)
        }
    }
}

fn run(scenario: &Scenario) -> Result<u8> {
    let common = scenario.common();
    check_options(scenario)?;
    if let Some(slice) = common.worker_slice {
        return workers::child::run(scenario, slice);
    }
    let plan = limits::plan(common)?;
    eprintln!(
        "wsfleet-loadtest: {} with {} sockets to {} in {} process(es) (open-file limit {} each)",
        scenario.name(),
        common.connections,
        common.urls_label(),
        plan.workers,
        plan.open_files
    );

    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime.block_on(async {
        if plan.workers == 1 {
            scenario::run(scenario).await
        } else {
            workers::parent::run(scenario, plan.workers).await
        }
    });
    // Do not wait for stray tasks (there should be none); the report is complete.
    runtime.shutdown_background();
    let report = report?;

    print!("{}", report.table());
    if let Some(path) = &common.json {
        report.write_json(path)?;
    }
    if let Some(path) = &common.plot {
        plot::write(&report, path)?;
    }
    Ok(report.exit_code() as u8)
}

/// Rejects what would make a run meaningless or reach beyond this tool's remit.
fn check_options(scenario: &Scenario) -> Result<()> {
    let common = scenario.common();
    if let Some(url) = common.urls.iter().find(|u| !u.starts_with("ws://")) {
        bail!("--url must be a ws:// URL (this tool speaks plain WebSocket only), got {url:?}");
    }
    if common.connections == 0 {
        bail!("--connections must be at least 1");
    }
    if common.timeout.is_zero() {
        bail!("--timeout must be greater than zero");
    }
    if let Scenario::OpenLoop { rate, .. } = scenario {
        if !(*rate > 0.0 && rate.is_finite()) {
            bail!("--rate must be a positive number of messages per second, got {rate}");
        }
    }
    if let Scenario::Rooms { rate, .. } = scenario {
        if !(*rate > 0.0 && rate.is_finite()) {
            bail!("--rate must be a positive number of publications per second, got {rate}");
        }
        if common.during.is_some() && !scenario.resumes_with_offsets() {
            // Without recovery a member away during the disruption misses publications, and
            // the verifier cannot tell that from a fleet that lost them.
            bail!("--during with rooms needs --resume");
        }
    }
    if let Scenario::FanOut { broadcast_urls, .. } = scenario {
        if let Some(url) = broadcast_urls.iter().find(|u| !u.starts_with("http://")) {
            bail!("--broadcast-url must be an http:// URL, got {url:?}");
        }
    }
    if common
        .during
        .as_deref()
        .is_some_and(|c| c.trim().is_empty())
    {
        bail!("--during needs a command");
    }
    if let Some(path) = &common.plot {
        plot::check_path(path)?;
    }
    if let Some(slice) = common.worker_slice {
        if slice.count == 0 || slice.offset + slice.count > common.connections {
            bail!(
                "--worker-slice {slice} is not within the {} sockets",
                common.connections
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(args: &[&str]) -> Result<()> {
        let mut argv = vec!["wsfleet-loadtest"];
        argv.extend_from_slice(args);
        let Command::Load(scenario) = Cli::try_parse_from(argv).unwrap().command else {
            panic!("not a load scenario");
        };
        check_options(&scenario)
    }

    #[test]
    fn options_that_make_no_sense_are_refused_with_the_option_named() {
        let cases: &[(&[&str], &str)] = &[
            (&["hold", "--url", "http://x/"], "--url must be a ws:// URL"),
            (
                &["hold", "--url", "ws://a/", "--url", "wss://b/"],
                "--url must be a ws:// URL",
            ),
            (&["hold", "-n", "0"], "--connections must be at least 1"),
            (&["hold", "--timeout", "0s"], "--timeout must be greater"),
            (&["open-loop", "--rate", "0"], "--rate must be a positive"),
            (
                &["hold", "-n", "10", "--worker-slice", "8:3"],
                "--worker-slice 8:3 is not within the 10 sockets",
            ),
        ];
        for (args, expected) in cases {
            let err = check(args).unwrap_err().to_string();
            assert!(err.contains(expected), "{args:?}: {err}");
        }
        check(&["hold", "-n", "10", "--worker-slice", "7:3"]).unwrap();
        check(&["closed-loop", "--url", "ws://a/", "--url", "ws://b/"]).unwrap();
    }
}
