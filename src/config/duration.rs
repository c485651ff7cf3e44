//! Durations in flags and the environment: `30s`, `500ms`, `1m30s` (humantime's units) or a
//! bare number of seconds (`30`, `0.25`), each setting with a documented largest value.
//!
//! Why a largest value at all: every duration setting ends up in arithmetic (`Instant +
//! 2 × PING_INTERVAL` in each socket task, `DRAIN_SPREAD × 2`, TTLs in Redis milliseconds).
//! `std::time::Duration` holds up to ~5.8 × 10^11 years, but `Instant + Duration` and
//! `Duration × 2` panic far below that, so `--ping-interval 10000000000000000000` used to make
//! every socket task panic. A value past the maximum of its setting means "never" and is a
//! typo, so it fails at start-up with one line instead.

use std::time::Duration;

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

/// `HEARTBEAT_INTERVAL` and `PING_INTERVAL`: a heartbeat or a ping rarer than hourly no
/// longer tells anyone that the socket is alive (proxies close idle sockets within minutes).
pub const MAX_INTERVAL_SECS: u64 = HOUR;
/// `SHUTDOWN_TIMEOUT` and `DRAIN_SPREAD`: orchestrators kill a process that takes longer to
/// stop (Kubernetes' grace period is 30 s by default), and `make down` would hang for it.
pub const MAX_SHUTDOWN_SECS: u64 = HOUR;
/// `SESSION_TTL`: a year of idleness; the TTL goes to Redis in milliseconds, far from
/// overflowing there.
pub const MAX_SESSION_TTL_SECS: u64 = 365 * DAY;
/// `--lease-period`: a crashed instance stays in the fleet count for 3 periods, so longer
/// than 10 minutes makes the count meaningless after a crash.
pub const MAX_LEASE_PERIOD_SECS: u64 = 10 * MINUTE;
/// `--redis-timeout`: a command waited on for more than a minute holds a socket's frame (and
/// the drain) hostage; `unavailable` is the honest answer long before that.
pub const MAX_REDIS_TIMEOUT_SECS: u64 = MINUTE;
/// `PRESENCE_GRACE`: a session gone for longer than an hour is not reconnecting after a
/// drain; its rooms should see it leave.
pub const MAX_PRESENCE_GRACE_SECS: u64 = HOUR;
/// `HISTORY_TTL`: history is for clients that come back after a drain or a network blip;
/// a week is far past that, and the TTL goes to Redis in milliseconds.
pub const MAX_HISTORY_TTL_SECS: u64 = 7 * DAY;
/// `HTTP_HEADER_TIMEOUT` and `HTTP_IDLE_TIMEOUT`: a longer wait protects nothing, and the
/// bound keeps hyper's `now + timeout` far from overflowing.
pub const MAX_HTTP_TIMEOUT_SECS: u64 = HOUR;

/// Parses `30s`, `500ms`, `1m30s`, `2h` (humantime's units) or a bare number of seconds
/// (`30`, `0.5`). Any length that `Duration` can hold; callers bound it per setting.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let bare = !s.is_empty() && s.chars().all(|c| c.is_ascii_digit() || c == '.');
    if bare {
        let seconds: f64 = s
            .parse()
            .map_err(|_| format!("{s:?} is not a duration (use e.g. 30s, 500ms, 1m30s or 30)"))?;
        return Duration::try_from_secs_f64(seconds).map_err(|_| format!("{s:?} is out of range"));
    }
    humantime::parse_duration(s).map_err(|e| match e {
        humantime::DurationError::NumberOverflow => format!("{s:?} is out of range"),
        other => format!("{s:?} is not a duration (use e.g. 30s, 500ms, 1m30s or 30): {other}"),
    })
}

/// A duration of at most `MAX_SECS` seconds (zero allowed).
pub fn parse_bounded<const MAX_SECS: u64>(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    let max = Duration::from_secs(MAX_SECS);
    if d > max {
        return Err(format!(
            "{s:?} is longer than the largest allowed, {}",
            whole_units(MAX_SECS)
        ));
    }
    Ok(d)
}

/// `365d`, `1h`, `10m`: a maximum in the largest unit that divides it (and that parses back).
fn whole_units(secs: u64) -> String {
    for (unit, size) in [("d", DAY), ("h", HOUR), ("m", MINUTE)] {
        if secs >= size && secs % size == 0 {
            return format!("{}{unit}", secs / size);
        }
    }
    format!("{secs}s")
}

/// A duration greater than zero and at most `MAX_SECS` seconds.
pub fn parse_positive<const MAX_SECS: u64>(s: &str) -> Result<Duration, String> {
    let d = parse_bounded::<MAX_SECS>(s)?;
    if d.is_zero() {
        return Err(format!("{s:?} must be greater than zero"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_units_compound_units_and_bare_seconds() {
        let cases = [
            ("30s", Duration::from_secs(30)),
            ("500ms", Duration::from_millis(500)),
            ("30", Duration::from_secs(30)),
            ("0.25", Duration::from_millis(250)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("1m30s", Duration::from_secs(90)),
            ("1h 2m", Duration::from_secs(3720)),
            (" 45s ", Duration::from_secs(45)),
            ("0", Duration::ZERO),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_duration(input), Ok(expected), "input {input:?}");
        }
        for bad in ["", "s", "10x", "-1", "1.2.3s", "ms10", "1.2.3", "."] {
            assert!(parse_duration(bad).is_err(), "input {bad:?} should fail");
        }
    }

    #[test]
    fn values_past_the_maximum_or_past_any_duration_are_refused_with_a_reason() {
        let cases: &[(&str, &str)] = &[
            (
                "10000000000000000000",
                "longer than the largest allowed, 1h",
            ),
            ("100000000000000000000000", "out of range"),
            ("1e19", "not a duration"),
            ("99999999999999999999999h", "out of range"),
            ("3601s", "longer than the largest allowed, 1h"),
            ("1h1ms", "longer than the largest allowed, 1h"),
        ];
        for (input, needle) in cases {
            let err = parse_positive::<MAX_INTERVAL_SECS>(input)
                .expect_err(&format!("{input:?} should fail"));
            assert!(err.contains(needle), "{input:?}: {err}");
        }
        assert_eq!(
            parse_positive::<MAX_INTERVAL_SECS>("1h"),
            Ok(Duration::from_secs(3600))
        );
        assert!(parse_positive::<MAX_INTERVAL_SECS>("0ms")
            .unwrap_err()
            .contains("greater than zero"));
        assert_eq!(parse_bounded::<MAX_SHUTDOWN_SECS>("0"), Ok(Duration::ZERO));
    }
}
