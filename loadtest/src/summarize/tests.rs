use std::path::PathBuf;

use super::*;

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| (*v).to_owned()).collect()
}

#[test]
fn median_of_an_odd_count_is_the_middle_value_as_given() {
    assert_eq!(median(&strings(&["0.70", "0.60", "0.65"])), "0.65");
    assert_eq!(median(&strings(&["3"])), "3");
    assert_eq!(median(&strings(&["10", "-2", "7", "1000", "8"])), "8");
}

#[test]
fn median_of_an_even_count_is_the_mean_of_the_middle_two() {
    assert_eq!(median(&strings(&["0.60", "0.62"])), "0.61");
    assert_eq!(median(&strings(&["4", "1", "3", "2"])), "2.5");
    assert_eq!(median(&strings(&["12000", "12001"])), "12000.5");
    assert_eq!(median(&strings(&["10", "20"])), "15");
}

#[test]
fn median_leaves_out_missing_values() {
    assert_eq!(median(&strings(&["?", "5", "?", "7", "9"])), "7");
    assert_eq!(median(&strings(&["?", "?"])), "?");
    assert_eq!(median(&[]), "?");
}

#[test]
fn calc_ratios_and_sums() {
    assert_eq!(calc("%.2f", "a / b", &strings(&["6543", "10000"])), "0.65");
    assert_eq!(calc("%.1f", "a + b", &strings(&["12.3", "4.5"])), "16.8");
    assert_eq!(
        calc("%.2f", "(a + b) / (a + c)", &strings(&["2", "3", "8"])),
        "0.50"
    );
    assert_eq!(
        calc("%.0f", "(b - a) / 1000", &strings(&["1000", "251000"])),
        "250"
    );
    assert_eq!(calc("%.2f", "a / 16", &strings(&["8"])), "0.50");
    assert_eq!(calc("%.2f", "-a * 2", &strings(&["1.5e1"])), "-30.00");
}

#[test]
fn calc_of_missing_values_or_a_division_by_zero_is_unknown() {
    assert_eq!(calc("%.2f", "a / b", &strings(&["?", "100"])), "?");
    assert_eq!(calc("%.2f", "a / b", &strings(&["100", ""])), "?");
    assert_eq!(calc("%.2f", "a / b", &strings(&["100", "0"])), "?");
    assert_eq!(calc("%.2f", "a / b", &strings(&["100"])), "?");
    assert_eq!(calc("%.2f", "a / (b", &strings(&["1", "2"])), "?");
    assert_eq!(calc("%d", "a", &strings(&["1"])), "?");
    assert_eq!(calc("%.99999999f", "a", &strings(&["1"])), "?");
}

#[test]
fn verdicts() {
    assert_eq!(verdict("0.61", ">=", "0.6"), "met");
    assert_eq!(verdict("0.59", ">=", "0.6"), "**not met**");
    assert_eq!(verdict("250", "<", "300"), "met");
    assert_eq!(verdict("0", "==", "0"), "met");
    assert_eq!(verdict("13", "<=", "12"), "**not met**");
    assert_eq!(verdict("?", ">=", "0.6"), "?");
    assert_eq!(verdict("", "<", "3000"), "?");
}

#[test]
fn computed_numbers_print_as_awk_prints_them() {
    assert_eq!(numbers::short(2.5), "2.5");
    assert_eq!(numbers::short(15.0), "15");
    assert_eq!(numbers::short(0.123_456_789), "0.123457");
    assert_eq!(numbers::short(123_456.5), "123456");
    assert_eq!(numbers::short(1_234_567.5), "1.23457e+06");
}

/// A report as the load tester writes it (the fields the bench reads), in a file of its own.
fn report(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "wsfleet-summarize-{}-{name}.json",
        std::process::id()
    ));
    let json = serde_json::json!({
        "messages": { "sent": 200000, "received": 200000, "per_second": 31250.75 },
        "latency_ms": { "p50": 1.5, "p99": 4.0 },
        "count_violations": 0,
        "error_kinds": { "closed": 3 },
        "connections": { "ok": 1000 },
        "heartbeats_per_socket": { "avg": 2.0 },
        "fan_out": { "deliveries": 3000 },
        "disruption": null,
        "cpu": [
            { "name": "loadtest", "percent_of_one_core": 85.9, "cpu_seconds": 1.2 },
            { "name": "server (pid 1)", "percent_of_one_core": 99.5, "cpu_seconds": 1.4 },
            { "name": "blue-1", "percent_of_one_core": 40.7, "cpu_seconds": 0.5 },
            { "name": "blue-2", "percent_of_one_core": 40.6, "cpu_seconds": 0.25 },
            { "name": "other", "percent_of_one_core": 3.2, "cpu_seconds": 0.1 }
        ]
    });
    std::fs::write(&path, json.to_string()).unwrap();
    path
}

#[test]
fn values_of_a_report() {
    let r = report("values");
    assert_eq!(value(&r, ".messages.per_second", true), "31250");
    assert_eq!(value(&r, "messages.per_second", false), "31250.75");
    assert_eq!(value(&r, ".latency_ms.p99", false), "4");
    assert_eq!(value(&r, ".count_violations", false), "0");
    assert_eq!(value(&r, ".error_kinds", false), r#"{"closed":3}"#);
    assert_eq!(value(&r, ".disruption.counts_lost", false), "?");
    assert_eq!(value(&r, ".latency_ms.p999", false), "?");
    let _ = std::fs::remove_file(&r);
}

#[test]
fn cpu_of_a_report() {
    let r = report("cpu");
    assert_eq!(cpu(&r, "loadtest"), "85");
    assert_eq!(cpu(&r, "server"), "99");
    assert_eq!(cpu(&r, "redis"), "?");
    assert_eq!(cpu_sum(&r, "blue-"), "81");
    assert_eq!(cpu_sum(&r, "nginx-"), "0");
    // 1.4 s ÷ 200,000 replies = 7 µs; 0.75 s ÷ (3000 + 2 × 1000) frames = 150 µs.
    assert_eq!(us_per(&r, "server", Per::Reply), "7");
    assert_eq!(us_per(&r, "blue-", Per::Frame), "150");
    assert_eq!(us_per(&r, "loadtest", Per::Reply), "6");
    assert_eq!(us_per(&r, "redis", Per::Reply), "?");
    let _ = std::fs::remove_file(&r);
}

#[test]
fn a_missing_report_gives_unknowns() {
    let r = std::env::temp_dir().join("wsfleet-summarize-no-such-report.json");
    assert_eq!(value(&r, ".messages.per_second", true), "?");
    assert_eq!(cpu(&r, "loadtest"), "?");
    assert_eq!(cpu_sum(&r, "blue-"), "?");
    assert_eq!(us_per(&r, "server", Per::Reply), "?");
}
