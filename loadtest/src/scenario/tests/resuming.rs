//! Resuming sessions against the fake: the `resume` scenario's planned reopens, and sockets
//! the server ends under `--during` (drained, fenced by a newer socket, counters lost), each
//! coming back with its `last_count`; what the report says about lost and repeated numbers.

use super::{
    fake::{serve, Fake},
    run,
};

#[tokio::test]
async fn resume_reopens_every_session_and_each_welcome_continues_the_count() {
    let url = serve(Fake::default()).await;
    let r = run(&url, &["resume", "-n", "3", "-m", "10", "--resumes", "4"]).await;
    let resume = r.resume.as_ref().unwrap();
    assert_eq!((resume.resumes_ok, resume.resumes_failed), (12, 0), "{r:?}");
    assert_eq!((r.messages.sent, r.messages.received), (30, 30), "{r:?}");
    assert_eq!((r.count_violations, r.errors), (0, 0), "{r:?}");
    assert_eq!(r.connections.open_at_end, 3);
    assert_eq!(r.exit_code(), 0);
}

#[tokio::test]
async fn a_welcome_that_skips_a_number_fails_the_resume_and_the_run() {
    let url = serve(Fake {
        skew_resumes: 1,
        ..Fake::default()
    })
    .await;
    let r = run(&url, &["resume", "-n", "2", "-m", "6", "--resumes", "2"]).await;
    let resume = r.resume.as_ref().unwrap();
    assert_eq!((resume.resumes_ok, resume.resumes_failed), (0, 4), "{r:?}");
    assert_eq!(r.count_violations, 4, "{r:?}");
    assert_eq!(r.exit_code(), 1);
}

#[tokio::test]
async fn with_during_a_drained_socket_resumes_resends_and_finishes_its_messages() {
    let url = serve(Fake {
        drain_after: Some(3),
        ..Fake::default()
    })
    .await;
    let r = run(
        &url,
        &[
            "closed-loop",
            "-n",
            "4",
            "-m",
            "10",
            "--during",
            "true",
            "--during-after",
            "0s",
        ],
    )
    .await;
    assert_eq!((r.count_violations, r.errors), (0, 0), "{r:?}");
    // Each socket sent its fourth frame before reading the bye; the drain did not count it
    // (the welcome said so), so it was sent again: one resend per socket.
    assert_eq!((r.messages.sent, r.messages.received), (44, 40), "{r:?}");
    assert_eq!(r.connections.open_at_end, 4);
    let d = r.disruption.as_ref().unwrap();
    assert_eq!(
        (d.reconnects, d.counts_lost, d.counts_repeated),
        (4, 0, 0),
        "{d:?}"
    );
    assert!(
        d.longest_gap_ms >= 20.0,
        "the bye's reconnect hint is waited: {d:?}"
    );
    assert_eq!((d.command.as_str(), d.exit_code), ("true", Some(0)));
    assert_eq!(r.exit_code(), 0);
}

#[tokio::test]
async fn resume_passes_its_last_count_so_a_lost_counter_is_repaired_not_restarted() {
    // Every session's counter is gone when it comes back (Redis restarted without its data):
    // only the `last_count` each reopen passes lets the welcome continue the count.
    let url = serve(Fake {
        forget_on_resume: true,
        ..Fake::default()
    })
    .await;
    let r = run(&url, &["resume", "-n", "3", "-m", "10", "--resumes", "4"]).await;
    let resume = r.resume.as_ref().unwrap();
    assert_eq!((resume.resumes_ok, resume.resumes_failed), (12, 0), "{r:?}");
    assert_eq!(resume.repaired, 12, "every welcome said repaired: {r:?}");
    assert_eq!((r.messages.sent, r.messages.received), (30, 30), "{r:?}");
    assert_eq!((r.count_violations, r.errors), (0, 0), "{r:?}");
    assert_eq!(r.exit_code(), 0);
}

#[tokio::test]
async fn with_during_a_drained_socket_whose_counter_was_lost_resumes_from_its_last_count() {
    let url = serve(Fake {
        drain_after: Some(3),
        forget_on_resume: true,
        ..Fake::default()
    })
    .await;
    let r = run(
        &url,
        &[
            "closed-loop",
            "-n",
            "4",
            "-m",
            "10",
            "--during",
            "true",
            "--during-after",
            "0s",
        ],
    )
    .await;
    assert_eq!((r.count_violations, r.errors), (0, 0), "{r:?}");
    assert_eq!((r.messages.sent, r.messages.received), (44, 40), "{r:?}");
    let d = r.disruption.as_ref().unwrap();
    assert_eq!(
        (d.reconnects, d.counts_lost, d.counts_repeated, d.repaired),
        (4, 0, 0, 4),
        "{d:?}"
    );
    assert_eq!(r.exit_code(), 0);
}

#[tokio::test]
async fn with_during_a_socket_fenced_by_a_newer_one_resumes_and_resends() {
    let url = serve(Fake {
        fence_after: Some(3),
        ..Fake::default()
    })
    .await;
    let r = run(
        &url,
        &[
            "closed-loop",
            "-n",
            "4",
            "-m",
            "10",
            "--during",
            "true",
            "--during-after",
            "0s",
        ],
    )
    .await;
    assert_eq!((r.count_violations, r.errors), (0, 0), "{r:?}");
    // The fourth frame was refused with the close (the welcome says so): sent again.
    assert_eq!((r.messages.sent, r.messages.received), (44, 40), "{r:?}");
    assert_eq!(r.connections.open_at_end, 4);
    let d = r.disruption.as_ref().unwrap();
    assert_eq!(
        (d.reconnects, d.counts_lost, d.counts_repeated, d.repaired),
        (4, 0, 0, 0),
        "{d:?}"
    );
    assert_eq!(r.exit_code(), 0);
}

#[tokio::test]
async fn a_lost_counter_the_server_does_not_repair_is_still_counted_as_repeated() {
    // A server that ignores `last_count` (one older than the repair) and lost the counters:
    // each welcome says 0 after 3 counts, 3 numbers told twice, as the report always said.
    let url = serve(Fake {
        drain_after: Some(3),
        forget_on_resume: true,
        ignore_last_count: true,
        ..Fake::default()
    })
    .await;
    let r = run(
        &url,
        &[
            "closed-loop",
            "-n",
            "4",
            "-m",
            "10",
            "--during",
            "true",
            "--during-after",
            "0s",
        ],
    )
    .await;
    let d = r.disruption.as_ref().unwrap();
    assert_eq!(
        (d.reconnects, d.counts_lost, d.counts_repeated, d.repaired),
        (4, 0, 12, 0),
        "{d:?}"
    );
    assert_eq!(r.count_violations, 4, "one per welcome: {r:?}");
    assert_eq!(r.exit_code(), 1);
}

#[tokio::test]
async fn without_during_a_drained_socket_is_an_error() {
    let url = serve(Fake {
        drain_after: Some(2),
        ..Fake::default()
    })
    .await;
    let r = run(&url, &["closed-loop", "-n", "2", "-m", "5"]).await;
    assert_eq!(r.error_kinds.get("server drained (bye)"), Some(&2), "{r:?}");
    assert!(r.disruption.is_none());
    assert_eq!(r.exit_code(), 2);
}

#[tokio::test]
async fn a_resumed_counter_that_moved_on_is_counted_as_lost() {
    // The frame in flight at the drain may explain one number more (rule 4); three cannot be.
    let url = serve(Fake {
        drain_after: Some(2),
        skew_resumes: 3,
        ..Fake::default()
    })
    .await;
    let r = run(
        &url,
        &[
            "hold",
            "-n",
            "2",
            "--duration",
            "200ms",
            "--warmup-messages",
            "4",
            "--during",
            "true",
            "--during-after",
            "0s",
        ],
    )
    .await;
    let d = r.disruption.as_ref().unwrap();
    assert_eq!((d.reconnects, d.counts_lost), (2, 4), "{d:?}");
    assert_eq!(r.count_violations, 2, "{r:?}");
    assert_eq!(r.exit_code(), 1);
}

#[tokio::test]
async fn open_loop_with_during_resumes_and_resends_what_the_drain_left_unanswered() {
    let url = serve(Fake {
        drain_after: Some(5),
        ..Fake::default()
    })
    .await;
    let r = run(
        &url,
        &[
            "open-loop",
            "-n",
            "3",
            "--rate",
            "100",
            "--duration",
            "300ms",
            "--during",
            "true",
            "--during-after",
            "0s",
        ],
    )
    .await;
    assert_eq!((r.count_violations, r.errors), (0, 0), "{r:?}");
    assert_eq!(r.messages.received, 90, "{r:?}");
    assert!(r.messages.sent >= 90, "{r:?}");
    assert_eq!(r.connections.open_at_end, 3);
    let d = r.disruption.as_ref().unwrap();
    assert_eq!(
        (d.reconnects, d.counts_lost, d.counts_repeated),
        (3, 0, 0),
        "{d:?}"
    );
    assert_eq!(r.latency_ms.as_ref().unwrap().samples, 90, "{r:?}");
}

#[tokio::test]
async fn a_frame_answered_unavailable_is_sent_again_and_is_no_error() {
    let url = serve(Fake {
        unavailable_every: Some(4),
        ..Fake::default()
    })
    .await;
    let r = run(&url, &["closed-loop", "-n", "3", "-m", "9"]).await;
    assert_eq!((r.count_violations, r.errors), (0, 0), "{r:?}");
    // Every socket had 9 counted in 11 frames: its 4th and 8th were refused and sent again.
    assert_eq!(r.messages.received, 27, "{r:?}");
    assert_eq!(r.messages.unavailable, 6, "{r:?}");
    assert_eq!(r.messages.sent, 33, "{r:?}");
    assert_eq!(r.exit_code(), 0);
}
