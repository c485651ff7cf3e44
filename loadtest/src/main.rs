//! `wsfleet-loadtest`: drives many WebSockets against one wsfleet URL and reports
//! connections, messages, count violations, latency percentiles and CPU use.
//!
//! Scenarios: `closed-loop`, `open-loop`, `hold`, `fan-out` (every socket must receive every
//! broadcast published with `POST /broadcast`), `resume` (every socket closes and resumes its
//! session, and each welcome must continue its count exactly). Any of them can run a
//! disruption alongside (`--during CMD`), during which sockets the server closes resume their
//! session and go on.
//!
//! # Layout
//! - [`cli`]: subcommands and their options.
//! - [`limits`]: open-file and local-port checks before any socket is opened.
//! - [`client`]: connecting with bounded concurrency, reading typed frames, closing.
//! - [`link`]: a socket that resumes its session when the server ends it, judging each
//!   welcome by the protocol's resume rule.
//! - [`scenario`]: the two phases (connect, run) and each scenario's per-socket loop;
//!   `scenario::fan_out` publishes and receives broadcasts, `scenario::during` runs the
//!   `--during` command. `scenario::smoke` is the separate one-instance check `make promote`
//!   runs.
//! - [`verify`]: the counter invariant (`c+1, c+2, …` after a welcome with `c`).
//! - [`stats`]: per-socket tallies and their totals (HDR histogram for latency).
//! - [`cpu`]: CPU use of this process, the server and Redis over the run phase.
//! - [`report`]: the table on stdout and the `--json` file.
//! - [`series`]: latency second by second, for the plot.
//! - [`plot`]: the `--plot` SVG (latency over time, replies/s, latency distribution).
//!
//! Only the URLs given are contacted (the WebSocket URL, and for fan-out the broadcast URL);
//! every loop is bounded by a count and by `--timeout`.

mod cli;
mod client;
mod cpu;
mod limits;
mod link;
mod plot;
mod report;
mod scenario;
mod series;
mod stats;
mod verify;

use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Parser;

use crate::cli::{Cli, Common, Scenario};

fn main() -> ExitCode {
    // `smoke` has options of its own, unlike the load scenarios (see scenario::smoke).
    if std::env::args_os().nth(1).is_some_and(|a| a == "smoke") {
        return scenario::smoke::main_with_args(std::env::args_os().skip(1));
    }
    let mut cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            // --help and --version are not errors; a bad option is "could not start".
            return ExitCode::from(if error.use_stderr() { 3 } else { 0 });
        }
    };
    cli.scenario.settle_random_defaults();
    match run(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("wsfleet-loadtest: {error:#}");
            // 3: the run could not start (bad option, limits); 1 and 2 describe a run.
            ExitCode::from(3)
        }
    }
}

fn run(cli: &Cli) -> Result<u8> {
    let common = cli.scenario.common();
    check_options(common)?;
    if let Scenario::OpenLoop { rate, .. } = cli.scenario {
        if !(rate > 0.0 && rate.is_finite()) {
            bail!("--rate must be a positive number of messages per second, got {rate}");
        }
    }
    if let Scenario::FanOut { broadcast_url, .. } = &cli.scenario {
        if !broadcast_url.starts_with("http://") {
            bail!("--broadcast-url must be an http:// URL, got {broadcast_url:?}");
        }
    }
    let open_files = limits::ensure_open_files(common.connections)?;
    limits::ensure_local_ports(common.connections)?;
    eprintln!(
        "wsfleet-loadtest: {} with {} sockets to {} (open-file limit {open_files})",
        cli.scenario.name(),
        common.connections,
        common.url
    );

    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime.block_on(scenario::run(&cli.scenario));
    // Do not wait for stray tasks (there should be none); the report is complete.
    runtime.shutdown_background();

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
fn check_options(common: &Common) -> Result<()> {
    if !common.url.starts_with("ws://") {
        bail!(
            "--url must be a ws:// URL (this tool speaks plain WebSocket only), got {:?}",
            common.url
        );
    }
    if common.connections == 0 {
        bail!("--connections must be at least 1");
    }
    if common.timeout.is_zero() {
        bail!("--timeout must be greater than zero");
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
    Ok(())
}
