use super::*;

#[test]
fn tallies_add_up_and_heartbeats_spread() {
    let mut totals = Totals::default();
    totals.connection_failed("connect: timeout");
    let mut a = Tally {
        sent: 3,
        received: 3,
        heartbeats: 2,
        open_at_end: true,
        ..Tally::default()
    };
    a.record_latency(Duration::from_micros(500));
    a.record_latency(Duration::from_millis(2));
    a.error("closed 1008");
    let b = Tally {
        sent: 1,
        received: 0,
        heartbeats: 5,
        count_violations: 1,
        ..Tally::default()
    };
    totals.absorb(a);
    totals.absorb(b);
    assert_eq!(
        (totals.sent, totals.received, totals.count_violations),
        (4, 3, 1)
    );
    assert_eq!((totals.connections_failed, totals.open_at_end), (1, 1));
    assert_eq!(totals.error_count(), 2);
    assert_eq!(totals.latency_us.len(), 2);
    assert_eq!(totals.latency_us.max(), 2_000);
    let per_second = totals.latency_series.points(1.0);
    let replies: f64 = per_second.iter().map(|p| p.replies_per_second).sum();
    assert_eq!(
        replies, 2.0,
        "both samples are in the series: {per_second:?}"
    );
    let spread = totals.heartbeats.unwrap();
    assert_eq!((spread.min, spread.max, spread.sockets), (2, 5, 2));
    assert!((spread.avg() - 3.5).abs() < 1e-9);
}

#[test]
fn gaps_and_repeats_are_violations_that_say_how_many_numbers() {
    let mut t = Tally::default();
    let mut check = CountCheck::new(0);
    for count in [1, 2, 5, 6, 4, 5, 6, 7] {
        t.count_reply(&mut check, count);
    }
    assert_eq!(t.received, 8);
    assert_eq!(t.count_violations, 2, "one gap, one repeat");
    assert_eq!((t.resumes.counts_lost, t.resumes.counts_repeated), (2, 3));
}

#[test]
fn resumes_add_up_and_keep_the_longest_gap() {
    let mut a = Resumes::default();
    a.reconnected(Duration::from_millis(30));
    a.reconnected(Duration::from_millis(10));
    let mut b = Resumes {
        counts_lost: 1,
        resumes_ok: 2,
        repaired: 1,
        ..Resumes::default()
    };
    b.reconnected(Duration::from_millis(20));
    let mut totals = Totals::default();
    for r in [a, b] {
        totals.absorb(Tally {
            resumes: r,
            ..Tally::default()
        });
    }
    let r = &totals.resumes;
    assert_eq!((r.reconnects, r.longest_gap_us), (3, 30_000));
    assert_eq!((r.counts_lost, r.resumes_ok, r.repaired), (1, 2, 1));
    let json = serde_json::to_string(r).unwrap();
    assert_eq!(serde_json::from_str::<Resumes>(&json).unwrap(), *r);
}

#[test]
fn sub_microsecond_and_huge_latencies_are_kept_not_dropped() {
    let mut totals = Totals::default();
    let mut t = Tally::default();
    t.record_latency(Duration::from_nanos(10));
    t.record_latency(Duration::from_secs(3600));
    totals.absorb(t);
    assert_eq!(totals.latency_us.len(), 2);
}

/// A worker's totals after the JSON round trip, as the parent receives them.
fn via_json(totals: &Totals) -> Totals {
    serde_json::from_str(&serde_json::to_string(totals).unwrap()).unwrap()
}

#[test]
fn merged_worker_totals_give_the_percentiles_of_one_histogram_of_all_samples() {
    // Three "workers" with different latency mixes; one Totals sees every sample.
    let mut all = Totals::default();
    let mut merged = Totals::default();
    for worker in 0..3u64 {
        let mut part = Totals {
            connections_ok: 10 + worker,
            connections_failed: worker,
            ..Totals::default()
        };
        for socket in 0..10u64 {
            let mut t = Tally {
                sent: 5,
                received: 5,
                heartbeats: worker * 10 + socket,
                open_at_end: socket % 2 == 0,
                ..Tally::default()
            };
            for k in 0..5u64 {
                let us = 37 + worker * 9_000 + socket * 1_301 + k * k * 977;
                t.record_latency(Duration::from_micros(us));
                // Spread over seconds 0..=4 of the run, as every worker shares its clock.
                t.latencies_at_ms[k as usize] = (worker * 300 + k * 900 + socket) as u32;
            }
            t.resumes
                .reconnected(Duration::from_millis(worker * 10 + socket));
            t.resumes.counts_lost = socket % 3;
            t.resumes.resumes_ok = 1;
            if socket == worker {
                t.error(format!("kind {worker}"));
            }
            all.absorb(t.clone());
            part.absorb(t);
        }
        all.connections_ok += 10 + worker;
        all.connections_failed += worker;
        merged.merge(via_json(&part));
    }
    assert_eq!(merged.latency_us.len(), 150);
    for q in [0.0, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0] {
        assert_eq!(
            merged.latency_us.value_at_quantile(q),
            all.latency_us.value_at_quantile(q),
            "quantile {q}"
        );
    }
    assert_eq!(merged.latency_us.max(), all.latency_us.max());
    assert_eq!(merged.latency_us.min(), all.latency_us.min());
    assert!((merged.latency_us.mean() - all.latency_us.mean()).abs() < 1e-9);
    assert_eq!((merged.connections_ok, merged.connections_failed), (33, 3));
    assert_eq!((merged.sent, merged.received), (150, 150));
    assert_eq!(merged.open_at_end, 15);
    assert_eq!(merged.resumes, all.resumes);
    assert_eq!(merged.resumes.reconnects, 30);
    assert_eq!(
        merged.resumes.longest_gap_us, 29_000,
        "the longest, not a sum"
    );
    assert_eq!(merged.resumes.resumes_ok, 30);
    let per_second = merged.latency_series.points(5.0);
    assert_eq!(per_second.len(), 5, "{per_second:?}");
    assert_eq!(per_second, all.latency_series.points(5.0));
    assert_eq!(merged.errors, all.errors);
    assert_eq!(merged.error_count(), 3);
    assert_eq!(merged.heartbeats, all.heartbeats);
    assert_eq!(merged.heartbeats.unwrap().sockets, 30);
}

#[test]
fn merging_an_empty_worker_changes_nothing() {
    let mut totals = Totals::default();
    let mut t = Tally::default();
    t.record_latency(Duration::from_millis(3));
    totals.absorb(t);
    let before = (totals.latency_us.len(), totals.heartbeats);
    totals.merge(via_json(&Totals::default()));
    assert_eq!((totals.latency_us.len(), totals.heartbeats), before);
    assert_eq!(totals.error_count(), 0);
}
