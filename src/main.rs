use std::process::ExitCode;

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
    telemetry::init(
        settings.log_format,
        &settings.instance_id,
        settings.color.as_str(),
    );
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
