//! Settings that cannot be represented or make no sense fail at start-up, from the real
//! binary: exit 2, one line on stderr, nothing bound.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// Longest a refused start may take; a node that starts instead is killed after it.
const REFUSAL_PATIENCE: Duration = Duration::from_secs(10);

/// Runs the binary with `env` and returns its exit code and stderr, killing it if it is still
/// running after [`REFUSAL_PATIENCE`] (it accepted the value and started serving).
pub(crate) fn run_with_env(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let port = crate::helpers::free_port();
    let stderr = std::env::temp_dir().join(format!(
        "wsfleet-settings-{port}-{}.err",
        std::process::id()
    ));
    let mut child = Command::new(env!("CARGO_BIN_EXE_wsfleet"))
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        // Nothing listens there: a node that wrongly starts does not touch a real Redis.
        .env(
            "REDIS_URL",
            format!("redis://127.0.0.1:{}", crate::helpers::free_port()),
        )
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + REFUSAL_PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(&stderr).unwrap_or_default();
    let _ = std::fs::remove_file(&stderr);
    (status, text)
}

#[test]
fn durations_too_large_to_mean_anything_fail_at_start_up_with_exit_2_and_one_line() {
    const HUGE: &str = "10000000000000000000";
    let cases: &[(&str, &str, &str)] = &[
        ("DRAIN_SPREAD", HUGE, "largest allowed"),
        ("PING_INTERVAL", HUGE, "largest allowed"),
        ("HEARTBEAT_INTERVAL", HUGE, "largest allowed"),
        ("SHUTDOWN_TIMEOUT", HUGE, "largest allowed"),
        ("SESSION_TTL", HUGE, "largest allowed"),
        ("PING_INTERVAL", "100000000000000000000000", "out of range"),
        ("PING_INTERVAL", "9999999999999999999999h", "out of range"),
        // Read from the environment since issue 11.
        ("LEASE_PERIOD", "11m", "lease-period"),
        ("REDIS_TIMEOUT", "2m", "redis-timeout"),
        ("REDIS_TIMEOUT", "soon", "not a duration"),
    ];
    for (name, value, needle) in cases {
        let (code, stderr) = run_with_env(&[(name, value)]);
        assert_eq!(code, Some(2), "{name}={value}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{name}={value}: {stderr}");
        assert!(stderr.contains(needle), "{name}={value}: {stderr}");
        assert!(!stderr.contains("panicked"), "{name}={value}: {stderr}");
    }
}
