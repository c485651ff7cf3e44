use std::{process::ExitCode, time::Duration};

use clap::Parser;
use wsfleet::{config::Config, shutdown, startup::Application, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::try_parse() {
        Ok(config) => config,
        Err(error) if !error.use_stderr() => error.exit(), // --help, --version
        Err(error) => return fail_config(&error.to_string()),
    };
    let settings = match config.into_settings() {
        Ok(settings) => settings,
        Err(error) => return fail_config(&error.to_string()),
    };
    let logs = telemetry::init(
        settings.log_format,
        &settings.instance_id,
        settings.color.as_str(),
    );
    let code = run(settings).await;
    logs.flush(LOG_FLUSH_PATIENCE);
    code
}

/// Longest wait at exit for queued log lines to reach stdout. The drain keeps a margin of
/// 700 ms before `SHUTDOWN_TIMEOUT` for its last steps (src/shutdown.rs); this takes at most
/// 200 ms of it, so a stalled stdout cannot make the process overrun its deadline. A working
/// stdout writes a queue of thousands of lines well within it.
const LOG_FLUSH_PATIENCE: Duration = Duration::from_millis(200);

async fn run(settings: wsfleet::config::Settings) -> ExitCode {
    let app = match Application::build(settings).await {
        Ok(app) => app,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "start-up failed");
            eprintln!("wsfleet: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    match app.run_until_stopped(shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "stopped with an error");
            ExitCode::FAILURE
        }
    }
}

/// Bad configuration: one line on stderr, exit 2, nothing bound.
fn fail_config(message: &str) -> ExitCode {
    let line = message.lines().next().unwrap_or("invalid configuration");
    eprintln!("wsfleet: {}", line.trim_start_matches("error: "));
    ExitCode::from(2)
}
