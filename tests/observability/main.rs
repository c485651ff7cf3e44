//! Drift test: every metric the Grafana dashboard and the Prometheus alert rules query must be
//! one that wsfleet really exports, so renaming a metric in `src/metrics.rs` without updating
//! `observability/` fails here instead of leaving an empty panel or an alert that never fires.
//!
//! It starts a real node (in-process, on a `redis-server` of its own), makes it use every
//! labelled family (most exist at 0 from start-up; the Redis duration histograms only once
//! observed),
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
    net::SocketAddr,
    path::Path,
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

/// Longest wait for the node to come up or to show a metric.
const PATIENCE: Duration = Duration::from_secs(10);

#[path = "../common/mod.rs"]
mod common;
mod harness;
mod parsers;
use common::RedisServer;
use harness::*;
use parsers::*;

// ------------------------------------------------------------------------------ the tests

#[tokio::test]
async fn the_dashboard_and_the_alert_rules_only_query_metrics_wsfleet_exports() {
    let mut redis = RedisServer::start().await;
    let exposition = scrape_a_real_node(&mut redis).await;
    let exported = exported_series(&exposition);
    // The spec's metrics, to be sure the scrape and the parser saw the real thing.
    for name in [
        "wsfleet_connections_active",
        "wsfleet_fleet_connections",
        "wsfleet_messages_received_total",
        // The process metrics (src/metrics/process.rs), read from /proc at each scrape.
        "wsfleet_process_cpu_seconds_total",
        "wsfleet_process_resident_memory_bytes",
        "wsfleet_process_open_fds",
        "wsfleet_process_max_fds",
        "wsfleet_process_start_time_seconds",
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
