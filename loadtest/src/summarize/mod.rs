//! `wsfleet-loadtest summarize`: the numbers scripts/bench.sh writes into its Markdown, read
//! from the JSON reports a section's runs wrote (`--json`) and computed here rather than in
//! awk and jq: a value of a report, CPU shares and CPU per message, medians, ratios, verdicts.
//!
//! Every operation prints one value and exits 0; a missing report, a missing value or
//! arithmetic that fails (a division by zero) prints `?`, which is what the Markdown shows,
//! so a section with one failed run still writes its table.

mod numbers;
mod reports;
#[cfg(test)]
mod tests;

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Subcommand};

pub use numbers::{calc, median, verdict};
pub use reports::{cpu, cpu_sum, us_per, value, Per};

#[derive(Debug, Args)]
pub struct SummarizeArgs {
    #[command(subcommand)]
    pub op: Op,
}

#[derive(Debug, Subcommand)]
pub enum Op {
    /// A value of a report by dotted path (`messages.per_second`, `latency_ms.p99`); objects
    /// and arrays as compact JSON.
    Value {
        report: PathBuf,
        path: String,
        /// Rounded down to a whole number.
        #[arg(long)]
        floor: bool,
    },
    /// Percent of one core used by WHO (loadtest, other, machine, or a sampled name; a
    /// sampled name also matches "WHO (…)"), rounded down.
    Cpu { report: PathBuf, who: String },
    /// Summed percent of one core of every sampled name starting with PREFIX, rounded down.
    CpuSum { report: PathBuf, prefix: String },
    /// µs of CPU that WHO used (every name starting with WHO, e.g. `blue-` for all
    /// instances) per unit of --per: CPU seconds ÷ count, to 0.1 µs.
    UsPer {
        report: PathBuf,
        who: String,
        #[arg(long, value_enum, default_value_t = Per::Reply)]
        per: Per,
    },
    /// The median of the values (mean of the middle two for an even count); values that are
    /// not numbers (`?`) are left out.
    Median {
        #[arg(allow_hyphen_values = true)]
        values: Vec<String>,
    },
    /// Arithmetic on a, b, c (+ - * / and parentheses), printed with FORMAT (`%.2f`).
    Calc {
        format: String,
        expr: String,
        #[arg(allow_hyphen_values = true, num_args = 0..=3)]
        values: Vec<String>,
    },
    /// "met" or "**not met**" for VALUE OP TARGET (OP: >=, <, ==, <=).
    Verdict {
        #[arg(allow_hyphen_values = true)]
        value: String,
        op: String,
        #[arg(allow_hyphen_values = true)]
        target: String,
    },
}

pub fn main(args: &SummarizeArgs) -> ExitCode {
    let out = match &args.op {
        Op::Value {
            report,
            path,
            floor,
        } => value(report, path, *floor),
        Op::Cpu { report, who } => cpu(report, who),
        Op::CpuSum { report, prefix } => cpu_sum(report, prefix),
        Op::UsPer { report, who, per } => us_per(report, who, *per),
        Op::Median { values } => median(values),
        Op::Calc {
            format,
            expr,
            values,
        } => calc(format, expr, values),
        Op::Verdict { value, op, target } => verdict(value, op, target),
    };
    println!("{out}");
    ExitCode::SUCCESS
}
