//! Configuration parsing: defaults, bounds and refusals.

use super::*;

fn parse(args: &[&str]) -> Result<Settings, String> {
    let mut argv = vec!["wsfleet"];
    argv.extend_from_slice(args);
    let config = Config::try_parse_from(argv).map_err(|e| e.to_string())?;
    config.into_settings().map_err(|e| e.to_string())
}

#[test]
fn defaults_are_the_documented_ones() {
    let s = parse(&[]).unwrap();
    assert_eq!(s.bind_addr.to_string(), "0.0.0.0:8000");
    assert_eq!(s.redis_url, "redis://127.0.0.1:6379");
    assert_eq!(s.color, Color::Blue);
    assert_eq!(s.heartbeat_interval, Duration::from_secs(30));
    assert_eq!(s.ping_interval, Duration::from_secs(20));
    assert_eq!(s.shutdown_timeout, Duration::from_secs(10));
    assert_eq!(s.drain_spread, Duration::from_secs(2));
    assert_eq!(s.max_message_bytes, 65536);
    assert_eq!(s.rate_limit, Some(100));
    assert_eq!(s.http_header_timeout, Duration::from_secs(10));
    assert_eq!(s.http_idle_timeout, Duration::from_secs(60));
    assert_eq!(s.send_queue, 1024);
    assert!(s.broadcast_token.is_none());
    assert!(!s.instance_id.is_empty());
}

#[test]
fn bad_values_are_refused_with_a_reason() {
    let cases: &[(&[&str], &str)] = &[
        (&["--bind-addr", "nope"], "bind-addr"),
        (&["--color", "red"], "red"),
        (&["--heartbeat-interval", "0"], "greater than zero"),
        (&["--ping-interval", "fast"], "not a duration"),
        (&["--max-message-bytes", "0"], "max-message-bytes"),
        (&["--redis-url", "http://x"], "REDIS_URL"),
        (&["--drain-spread", "6s"], "DRAIN_SPREAD"),
        (&["--instance-id", "a b"], "instance-id"),
        (&["--broadcast-token", ""], "BROADCAST_TOKEN"),
        (&["--max-connections", "0"], "max-connections"),
        (&["--http-header-timeout", "0"], "greater than zero"),
        (&["--http-idle-timeout", "2h"], "largest allowed, 1h"),
        (
            &["--http-header-timeout", "10000000000000000000"],
            "longer than",
        ),
        (&["--send-queue", "15"], "send-queue"),
        (&["--send-queue", "16385"], "send-queue"),
        (
            &["--redis-url", "redis-sentinel://h:26379?node=h:26380"],
            "REDIS_URL",
        ),
        (&["--redis-wait-replicas", "17"], "redis-wait-replicas"),
    ];
    for (args, needle) in cases {
        let err = parse(args).expect_err(&format!("{args:?} should fail"));
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn a_bad_redis_url_error_does_not_show_the_password() {
    let cases = [
        (
            "redis://user:hunter2@localhost:notaport",
            "redis://user:***@localhost:notaport",
        ),
        ("redis://:hunter2@[::1:6379/0", "redis://:***@[::1:6379/0"),
        ("rediss://user:hunter2@host:x", "rediss://user:***@host:x"),
        ("redis://u:hun/t@er2@host:x", "redis://u:***@host:x"),
        ("user:hunter2@host", "user:***@host"),
    ];
    for (url, shown) in cases {
        let err = parse(&["--redis-url", url]).expect_err(url);
        assert!(
            !err.contains("hunter2") && !err.contains("hun/t"),
            "{url}: {err}"
        );
        assert!(err.contains(shown), "{url}: {err}");
    }
    assert_eq!(redact_password("redis://host:6379"), "redis://host:6379");
    assert_eq!(redact_password("redis://user@host"), "redis://user@host");
}

#[test]
fn every_duration_setting_refuses_values_past_its_maximum() {
    const HUGE: &str = "10000000000000000000";
    let cases: &[(&[&str], &str)] = &[
        (&["--heartbeat-interval", HUGE], "largest allowed, 1h"),
        (&["--ping-interval", HUGE], "largest allowed, 1h"),
        (&["--ping-interval", "61m"], "largest allowed, 1h"),
        (&["--shutdown-timeout", HUGE], "largest allowed, 1h"),
        (&["--drain-spread", HUGE], "largest allowed, 1h"),
        (
            &["--drain-spread", "40m", "--shutdown-timeout", "1h"],
            "DRAIN_SPREAD",
        ),
        (&["--session-ttl", HUGE], "largest allowed, 365d"),
        (&["--session-ttl", "366days"], "largest allowed, 365d"),
        (&["--lease-period", "11m"], "largest allowed, 10m"),
        (&["--redis-timeout", HUGE], "largest allowed, 1m"),
        (&["--redis-timeout", "1e400"], "not a duration"),
        (
            &["--ping-interval", "100000000000000000000000"],
            "out of range",
        ),
    ];
    for (args, needle) in cases {
        let err = parse(args).expect_err(&format!("{args:?} should fail"));
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let s = parse(&[
        "--ping-interval",
        "1h",
        "--shutdown-timeout",
        "1h",
        "--drain-spread",
        "29m59s",
        "--session-ttl",
        "365days",
        "--lease-period",
        "1m30s",
        "--redis-timeout",
        "1m",
    ])
    .unwrap();
    assert_eq!(s.ping_interval, Duration::from_secs(3600));
    assert_eq!(s.drain_spread, Duration::from_secs(29 * 60 + 59));
    assert_eq!(s.session_ttl, Duration::from_secs(365 * 24 * 3600));
    assert_eq!(s.lease_period, Duration::from_secs(90));
    assert_eq!(s.redis_timeout, Duration::from_secs(60));
}

#[test]
fn secrets_do_not_show_in_debug_output() {
    let s = parse(&["--broadcast-token", "hunter2"]).unwrap();
    assert!(!format!("{s:?}").contains("hunter2"));
    assert_eq!(s.broadcast_token.unwrap().expose(), "hunter2");
}

/// A file under the system's temporary directory, removed when dropped.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("wsfleet-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }
    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn secrets_come_from_a_value_or_a_file_without_its_trailing_newline() {
    let token = TempFile::new("broadcast", "from-a-file\n");
    let s = parse(&["--broadcast-token-file", token.path()]).unwrap();
    assert_eq!(s.broadcast_token.unwrap().expose(), "from-a-file");
    let secret = TempFile::new("auth", &format!("{}\r\n", "s".repeat(32)));
    let s = parse(&["--auth-secret-file", secret.path()]).unwrap();
    assert_eq!(s.auth.unwrap().algorithm(), jsonwebtoken::Algorithm::HS256);
    assert!(parse(&[]).unwrap().auth.is_none(), "off by default");
}

#[test]
fn bad_identity_settings_are_refused_with_one_line_naming_them() {
    let secret = "s".repeat(32);
    let file = TempFile::new("secret", &secret);
    let empty = TempFile::new("empty", "\n");
    let not_a_key = TempFile::new(
        "key",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    );
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "--broadcast-token",
                "t",
                "--broadcast-token-file",
                file.path(),
            ],
            "BROADCAST_TOKEN and BROADCAST_TOKEN_FILE are both set",
        ),
        (
            &["--auth-secret", &secret, "--auth-secret-file", file.path()],
            "AUTH_SECRET and AUTH_SECRET_FILE are both set",
        ),
        (
            &[
                "--auth-secret",
                &secret,
                "--auth-public-key-file",
                file.path(),
            ],
            "AUTH_SECRET and AUTH_PUBLIC_KEY_FILE are both set",
        ),
        (&["--auth-secret", "short"], "AUTH_SECRET has 5 bytes"),
        (&["--auth-secret", ""], "AUTH_SECRET is set but empty"),
        (
            &["--auth-secret-file", empty.path()],
            "AUTH_SECRET is set but empty",
        ),
        (
            &["--broadcast-token-file", empty.path()],
            "BROADCAST_TOKEN is set but empty",
        ),
        (
            &["--auth-secret-file", "/nonexistent/secret"],
            "cannot read AUTH_SECRET_FILE",
        ),
        (
            &["--auth-public-key-file", "/nonexistent/key.pem"],
            "invalid AUTH_PUBLIC_KEY_FILE",
        ),
        (
            &["--auth-public-key-file", not_a_key.path()],
            "invalid AUTH_PUBLIC_KEY_FILE",
        ),
    ];
    for (args, needle) in cases {
        let err = parse(args).expect_err(&format!("{args:?} should fail"));
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!err.contains(&secret), "{err}");
    }
}

#[test]
fn tls_sentinel_and_cluster_urls_are_accepted_in_freds_own_forms() {
    for url in [
        "redis-cluster://h1:7000?node=h2:7001&node=h3:7002",
        "rediss-cluster://user:pw@h1:7000",
        "rediss://user:pw@redis.example:6380/0",
        "redis-sentinel://h1:26379?node=h2:26379&node=h3:26379&sentinelServiceName=mymaster",
        "rediss-sentinel://h1:26379?sentinelServiceName=mymaster",
    ] {
        let s = parse(&["--redis-url", url]).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(s.redis_url, url);
    }
}

#[test]
fn redis_wait_replicas_is_off_at_zero() {
    assert_eq!(parse(&[]).unwrap().redis_wait_replicas, None);
    let s = parse(&["--redis-wait-replicas", "1"]).unwrap();
    assert_eq!(s.redis_wait_replicas, Some(1));
}
