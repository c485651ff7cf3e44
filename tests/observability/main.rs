//! Drift test: every metric the Grafana dashboard and the Prometheus alert rules query must be
//! one that wsfleet really exports, so renaming a metric in `src/metrics.rs` without updating
//! `observability/` fails here instead of leaving an empty panel or an alert that never fires.
//!
//! It starts a real node (in-process, on a `redis-server` of its own), makes it use every
//! labelled family (prometheus-client prints a labelled family only once it has a series),
//! reads `GET /metrics`, and compares names with the `# TYPE` lines. A `# TYPE` line names a
//! family; the series Prometheus stores are that name plus the suffixes of its type (`_total`
//! for a counter, `_bucket`/`_count`/`_sum` for a histogram, `_info` for an info metric …),
//! and only those count as exported: querying a histogram or counter by its bare family name
//! is drift too.
//!
//! Also checked: every alert rule has a unit test in `alerts.test.yml`, the metrics those tests
//! feed are real, and every `runbook_url` points at a heading of `docs/OBSERVABILITY.md`.
//!
//! No YAML crate is used: `expr:` values (single-line or `|` blocks) are read as text.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::{
    protocol::{frame::coding::CloseCode, CloseFrame},
    Message,
};
use wsfleet::{config::Config, startup::Application};

const DASHBOARD: &str = "observability/grafana/dashboards/wsfleet.json";
const ALERTS: &str = "observability/alerts.yml";
const ALERT_TESTS: &str = "observability/alerts.test.yml";
const OBSERVABILITY_DOC: &str = "docs/OBSERVABILITY.md";

/// Longest wait for Redis or the node to come up.
const PATIENCE: Duration = Duration::from_secs(10);

// ------------------------------------------------------------------------------ the harness

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on loopback")
}

/// A `redis-server` of this test's own on a free loopback port, killed (by PID) on drop.
struct RedisServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    fn start() -> RedisServer {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "wsfleet-observability-redis-{port}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server not found: install it (apt-get install redis-server)");
        let server = RedisServer {
            port,
            dir,
            child: Some(child),
        };
        let deadline = Instant::now() + PATIENCE;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGKILL, by PID).
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts a node on `redis` (port 0), makes it use every labelled metric family, returns its
/// `/metrics` text, and drains it. Kills `redis` on the way (to record a Redis error).
///
/// prometheus-client prints a labelled family (`# TYPE` line included) only once it has a
/// series, so the node is made to close a socket, refuse an upgrade and see a Redis command
/// fail before the scrape that is compared. Unlabelled metrics are always printed.
async fn scrape_a_real_node(redis: &mut RedisServer) -> String {
    let url = redis.url();
    let args = [
        "wsfleet",
        "--bind-addr",
        "127.0.0.1:0",
        "--redis-url",
        url.as_str(),
        "--lease-period",
        "500ms",
        "--redis-timeout",
        "500ms",
        "--drain-spread",
        "200ms",
        "--shutdown-timeout",
        "5s",
    ];
    let config = <Config as clap::Parser>::try_parse_from(args).unwrap();
    let app = Application::build(config.into_settings().unwrap())
        .await
        .expect("the node builds");
    let addr: SocketAddr = app.address();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let node = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let status = |path: &'static str| async move {
        reqwest::get(format!("http://{addr}{path}"))
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    eventually("the node to become ready", || async {
        (status("/readyz").await == 200).then_some(())
    })
    .await;

    // wsfleet_upgrades_rejected_total{reason="bad_session"}
    assert_eq!(status("/ws/chat/?session_uuid=not%20valid!").await, 400);
    // wsfleet_connections_closed_total{code="1000"}, and a message through the histogram.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "ws://{addr}/ws/chat/?session_uuid=observability-drift"
    ))
    .await
    .expect("the socket opens");
    let welcome = tokio::time::timeout(PATIENCE, ws.next())
        .await
        .expect("a welcome in time");
    assert!(matches!(welcome, Some(Ok(Message::Text(_)))), "{welcome:?}");
    ws.send(Message::text("hello")).await.unwrap();
    let count = tokio::time::timeout(PATIENCE, ws.next())
        .await
        .expect("a count in time");
    assert!(matches!(count, Some(Ok(Message::Text(_)))), "{count:?}");
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "done".into(),
    }))
    .await
    .unwrap();
    // Until the server's close frame and the end of the stream.
    let _ = tokio::time::timeout(PATIENCE, async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    // wsfleet_redis_errors_total{operation="ping"}: /readyz pings a Redis that is gone.
    redis.kill();
    eventually("/readyz to notice Redis is gone", || async {
        (status("/readyz").await == 503).then_some(())
    })
    .await;

    // Wait for the series of those events (by label, so that a renamed family still gets
    // here and is reported by name below), but compare whatever is there after PATIENCE.
    let deadline = Instant::now() + PATIENCE;
    let text = loop {
        let text = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .expect("GET /metrics answers")
            .text()
            .await
            .expect("a text body");
        let has = |needle: &str| {
            text.lines()
                .any(|l| !l.starts_with('#') && l.contains(needle))
        };
        let complete = has("{code=\"1000\"}")
            && has("{reason=\"bad_session\"}")
            && text
                .lines()
                .any(|l| l.contains("_total{operation=\"ping\"}"));
        if complete || Instant::now() >= deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let _ = stop.send(());
    node.await
        .expect("the node task")
        .expect("the node drains cleanly");
    text
}

/// Polls `check` every 50 ms until it returns `Some` or `PATIENCE` runs out.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ------------------------------------------------------------------------------ the parsers

/// Every series name the exposition can produce: the `# TYPE` families with the sample
/// suffixes of their type. Only names (not families) are returned, so a bare counter or
/// histogram family name is not in the set, as it is not in Prometheus either.
fn exported_series(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let (Some(family), Some(kind)) = (words.next(), words.next()) else {
            panic!("malformed TYPE line {line:?}");
        };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total", "_created"],
            "histogram" => &["_bucket", "_count", "_sum", "_created"],
            "gaugehistogram" => &["_bucket", "_gcount", "_gsum"],
            "summary" => &["", "_count", "_sum", "_created"],
            "info" => &["_info"],
            // gauge, stateset, unknown: the family name is the series name.
            _ => &[""],
        };
        for suffix in suffixes {
            names.insert(format!("{family}{suffix}"));
        }
    }
    names
}

/// The `wsfleet_…` metric names a PromQL expression (or a Grafana `label_values(…)` query)
/// mentions, in order. String literals are skipped, so a label value that happens to start
/// with `wsfleet_` is not taken for a metric.
fn metric_names(expr: &str) -> Vec<String> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = Vec::new();
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        if matches!(c, '"' | '\'' | '`') {
            // A string literal: skip to its closing quote (backslash escapes, except in raw
            // backtick strings).
            while let Some(inner) = chars.next() {
                if inner == '\\' && c != '`' {
                    chars.next();
                } else if inner == c {
                    break;
                }
            }
        } else if is_ident(c) {
            let mut ident = String::from(c);
            while let Some(&next) = chars.peek() {
                if !is_ident(next) {
                    break;
                }
                ident.push(next);
                chars.next();
            }
            if ident.starts_with("wsfleet_") {
                names.push(ident);
            }
        }
    }
    names
}

/// The value of a one-line YAML scalar, without its quotes.
fn yaml_scalar(raw: &str) -> String {
    let raw = raw.trim();
    if raw.len() >= 2 && raw.starts_with('\'') && raw.ends_with('\'') {
        raw[1..raw.len() - 1].replace("''", "'")
    } else if raw.len() >= 2 && raw.starts_with('"') && raw.ends_with('"') {
        raw[1..raw.len() - 1]
            .replace("\\\"", "\"")
            .replace("\\\\", "\\")
    } else {
        raw.to_string()
    }
}

/// The values of every `key:` in a YAML file, read as text: a one-line scalar, or a block
/// scalar (`|`, `>`, with chomping indicators) made of the following lines indented deeper
/// than the key.
fn yaml_values(text: &str, key: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let prefix = format!("{key}:");
    let mut values = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start().trim_start_matches("- ");
        i += 1;
        let Some(rest) = trimmed.strip_prefix(&prefix) else {
            continue;
        };
        let rest = rest.trim();
        if rest.starts_with('|') || rest.starts_with('>') {
            let indent = line.len() - line.trim_start().len();
            let mut block = Vec::new();
            while i < lines.len() {
                let next = lines[i];
                let next_indent = next.len() - next.trim_start().len();
                if !next.trim().is_empty() && next_indent <= indent {
                    break;
                }
                block.push(next.trim());
                i += 1;
            }
            values.push(block.join("\n").trim().to_string());
        } else {
            values.push(yaml_scalar(rest));
        }
    }
    values
}

/// Every query string of a Grafana dashboard: the panels' `expr` and the template
/// variables' `query`/`definition`, wherever they are nested (rows, library panels).
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    fn walk(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, inner) in map {
                    match (key.as_str(), inner) {
                        ("expr" | "query" | "definition", Value::String(s)) => out.push(s.clone()),
                        _ => walk(inner, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dashboard, &mut out);
    out
}

/// GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Metric name → the queries (from `source`) that use it.
type Uses = BTreeMap<String, Vec<String>>;

fn uses_of(queries: &[String], source: &str, uses: &mut Uses) {
    for query in queries {
        for name in metric_names(query) {
            uses.entry(name)
                .or_default()
                .push(format!("{source}: {}", query.replace('\n', " ")));
        }
    }
}

/// Panics with every unknown name and where it is used, over all the sources at once.
fn assert_all_exported(sources: &[&Uses], exported: &BTreeSet<String>) {
    let unknown: Vec<String> = sources
        .iter()
        .flat_map(|uses| uses.iter())
        .filter(|(name, _)| !exported.contains(*name))
        .map(|(name, places)| format!("  {name}\n      used in {}", places.join("\n      and ")))
        .collect();
    assert!(
        unknown.is_empty(),
        "the dashboard or the alert rules query metrics wsfleet does not export (renamed or \
         removed in src/metrics.rs? a new labelled family must also be exercised in \
         scrape_a_real_node):\n{}\n\nexported series names: {exported:?}",
        unknown.join("\n")
    );
}

// ------------------------------------------------------------------------------ the tests

#[tokio::test]
async fn the_dashboard_and_the_alert_rules_only_query_metrics_wsfleet_exports() {
    let mut redis = RedisServer::start();
    let exposition = scrape_a_real_node(&mut redis).await;
    let exported = exported_series(&exposition);
    // The spec's metrics, to be sure the scrape and the parser saw the real thing.
    for name in [
        "wsfleet_connections_active",
        "wsfleet_fleet_connections",
        "wsfleet_messages_received_total",
    ] {
        assert!(
            exported.contains(name),
            "{name} missing from {exported:?}\n{exposition}"
        );
    }

    let dashboard: Value = serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is JSON");
    let mut dashboard_uses = Uses::new();
    uses_of(
        &dashboard_queries(&dashboard),
        DASHBOARD,
        &mut dashboard_uses,
    );
    assert!(
        dashboard_uses.len() >= 10,
        "found only {:?} in {DASHBOARD}: is the query extraction broken?",
        dashboard_uses.keys()
    );

    let mut alert_uses = Uses::new();
    uses_of(&yaml_values(&read(ALERTS), "expr"), ALERTS, &mut alert_uses);
    assert!(
        alert_uses.len() >= 5,
        "found only {:?} in {ALERTS}: is the expr extraction broken?",
        alert_uses.keys()
    );

    // The unit tests of the rules must feed the series the rules really see.
    let tests = read(ALERT_TESTS);
    let mut test_uses = Uses::new();
    uses_of(&yaml_values(&tests, "series"), ALERT_TESTS, &mut test_uses);
    uses_of(&yaml_values(&tests, "expr"), ALERT_TESTS, &mut test_uses);
    assert_all_exported(&[&dashboard_uses, &alert_uses, &test_uses], &exported);

    // Not a failure: a metric no panel or rule looks at is worth knowing about.
    let used: BTreeSet<&String> = dashboard_uses.keys().chain(alert_uses.keys()).collect();
    let families: BTreeSet<&str> = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for family in families {
        if !used.iter().any(|name| name.starts_with(family)) {
            eprintln!("note: {family} is exported but neither graphed nor alerted on");
        }
    }
}

#[test]
fn every_alert_rule_has_unit_tests_labels_and_a_runbook_section() {
    let alerts = read(ALERTS);
    let tests = read(ALERT_TESTS);
    let doc = read(OBSERVABILITY_DOC);
    let anchors: BTreeSet<String> = doc
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect();

    let names = yaml_values(&alerts, "alert");
    assert!(names.len() >= 8, "found only {names:?} in {ALERTS}");
    let tested: BTreeSet<String> = yaml_values(&tests, "alertname").into_iter().collect();
    for name in &names {
        assert!(
            tested.contains(name),
            "{name} has no alert_rule_test in {ALERT_TESTS}"
        );
    }
    for key in ["expr", "severity", "summary", "description", "runbook_url"] {
        assert_eq!(
            yaml_values(&alerts, key).len(),
            names.len(),
            "every rule in {ALERTS} needs exactly one `{key}`"
        );
    }
    for severity in yaml_values(&alerts, "severity") {
        assert!(
            matches!(severity.as_str(), "critical" | "warning" | "info"),
            "unknown severity {severity:?} in {ALERTS}"
        );
    }
    for url in yaml_values(&alerts, "runbook_url") {
        let target = url
            .strip_prefix(&format!("{OBSERVABILITY_DOC}#"))
            .unwrap_or_else(|| panic!("runbook_url {url:?} must point into {OBSERVABILITY_DOC}"));
        assert!(
            anchors.contains(target),
            "runbook_url {url:?}: no heading with anchor #{target} in {OBSERVABILITY_DOC}"
        );
    }
}

#[test]
fn the_parsers_see_what_prometheus_sees() {
    let exposition = "# HELP wsfleet_a A.\n# TYPE wsfleet_a counter\nwsfleet_a_total 1\n\
        # TYPE wsfleet_h_seconds histogram\n# UNIT wsfleet_h_seconds seconds\n\
        # TYPE wsfleet_g gauge\n# TYPE wsfleet_build info\nwsfleet_build_info{v=\"1\"} 1\n# EOF\n";
    let exported = exported_series(exposition);
    for name in [
        "wsfleet_a_total",
        "wsfleet_h_seconds_bucket",
        "wsfleet_h_seconds_count",
        "wsfleet_h_seconds_sum",
        "wsfleet_g",
        "wsfleet_build_info",
    ] {
        assert!(exported.contains(name), "{name} not in {exported:?}");
    }
    // Bare counter and histogram families are not series; a renamed metric is unknown.
    for name in [
        "wsfleet_a",
        "wsfleet_h_seconds",
        "wsfleet_build",
        "wsfleet_g_total",
    ] {
        assert!(!exported.contains(name), "{name} should not be exported");
    }

    assert_eq!(
        metric_names(
            "sum by (le) (rate(wsfleet_h_seconds_bucket{job=~\"wsfleet_x\", a='wsfleet_y'}[5m])) \
             / on (job) group_left (color) wsfleet_build_info > bool 0 unless up{x=`wsfleet_z`}"
        ),
        ["wsfleet_h_seconds_bucket", "wsfleet_build_info"]
    );
    assert_eq!(
        metric_names("label_values(wsfleet_build_info{job=~\"$job\"}, color)"),
        ["wsfleet_build_info"]
    );
    assert!(metric_names("my_wsfleet_thing + wsfleetx").is_empty());

    let yaml =
        "groups:\n  - rules:\n      - alert: A\n        expr: wsfleet_g == 0\n        for: 1m\n\
        \x20     - alert: B\n        expr: |\n          sum(wsfleet_a_total)\n          /\n\
        \x20         sum(wsfleet_b_total)\n        for: 5m\n      - series: 'wsfleet_g{a=\"b\"}'\n";
    assert_eq!(
        yaml_values(yaml, "expr"),
        [
            "wsfleet_g == 0",
            "sum(wsfleet_a_total)\n/\nsum(wsfleet_b_total)"
        ]
    );
    assert_eq!(yaml_values(yaml, "alert"), ["A", "B"]);
    assert_eq!(yaml_values(yaml, "series"), ["wsfleet_g{a=\"b\"}"]);
    assert_eq!(anchor("WsfleetInstanceDown"), "wsfleetinstancedown");
    assert_eq!(anchor("Target files (`make up`)"), "target-files-make-up");
}
