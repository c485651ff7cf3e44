use super::*;
use crate::workers::plan::{Slice, Workers};

/// The load scenario a command line parses to, as `cli.scenario`.
struct LoadCli {
    scenario: Scenario,
}

fn load_cli<I: IntoIterator<Item = T>, T: Into<std::ffi::OsString> + Clone>(args: I) -> LoadCli {
    match Cli::try_parse_from(args).unwrap().command {
        Command::Load(scenario) => LoadCli {
            scenario: *scenario,
        },
        other => panic!("not a load scenario: {other:?}"),
    }
}

#[test]
fn smoke_is_a_subcommand_of_its_own() {
    let cli = Cli::try_parse_from(["lt", "smoke", "--token", "t"]).unwrap();
    let Command::Smoke(args) = cli.command else {
        panic!("not smoke: {cli:?}");
    };
    assert_eq!(args.token, "t");
    assert_eq!(args.http, "http://127.0.0.1:8000");
}

#[test]
fn named_pids_parse_and_reject_garbage() {
    assert_eq!(parse_named_pid("server=42"), Ok(("server".into(), 42)));
    assert!(parse_named_pid("server").is_err());
    assert!(parse_named_pid("=42").is_err());
    assert!(parse_named_pid("server=x").is_err());
}

#[test]
fn subcommands_parse_with_shared_options() {
    let cli = load_cli([
        "wsfleet-loadtest",
        "closed-loop",
        "-n",
        "10",
        "-m",
        "5",
        "--timeout",
        "20s",
        "--sample-pid",
        "server=1",
    ]);
    let Scenario::ClosedLoop { common, messages } = &cli.scenario else {
        panic!("wrong scenario: {:?}", cli.scenario);
    };
    assert_eq!((common.connections, *messages), (10, 5));
    assert_eq!(common.timeout, Duration::from_secs(20));
    assert_eq!(common.sample_pids, vec![("server".to_string(), 1)]);
    assert_eq!(cli.scenario.name(), "closed-loop");
    assert_eq!(common.during, None);
    assert_eq!(common.workers, Workers::Auto);
    assert!(common.source_ips.is_empty() && common.worker_slice.is_none());
}

#[test]
fn fan_out_resume_and_during_parse() {
    let cli = load_cli([
        "wsfleet-loadtest",
        "fan-out",
        "--token",
        "hunter2",
        "--broadcasts",
        "3",
        "--broadcast-interval",
        "200ms",
        "--during",
        "kill -TERM 1234",
        "--during-after",
        "2s",
    ]);
    let Scenario::FanOut {
        common,
        token,
        broadcasts,
        broadcast_interval,
        broadcast_urls,
        ..
    } = &cli.scenario
    else {
        panic!("wrong scenario: {:?}", cli.scenario);
    };
    assert_eq!(broadcast_urls, &["http://127.0.0.1:8000/broadcast"]);
    assert_eq!((token.expose(), *broadcasts), ("hunter2", 3));
    assert!(!format!("{:?}", cli.scenario).contains("hunter2"));
    assert_eq!(*broadcast_interval, Duration::from_millis(200));
    assert_eq!(common.during.as_deref(), Some("kill -TERM 1234"));
    assert_eq!(common.during_after, Duration::from_secs(2));

    // Several servers that share no channel (bench ceilings): each broadcast goes to each.
    let cli = load_cli([
        "wsfleet-loadtest",
        "fan-out",
        "--token",
        "t",
        "--broadcast-url",
        "http://127.0.0.1:1/broadcast",
        "--broadcast-url",
        "http://127.0.0.1:2/broadcast",
    ]);
    let Scenario::FanOut { broadcast_urls, .. } = &cli.scenario else {
        panic!("wrong scenario: {:?}", cli.scenario);
    };
    assert_eq!(
        broadcast_urls,
        &[
            "http://127.0.0.1:1/broadcast",
            "http://127.0.0.1:2/broadcast"
        ]
    );

    let cli = load_cli(["wsfleet-loadtest", "resume", "-m", "9", "--resumes", "2"]);
    assert!(matches!(
        cli.scenario,
        Scenario::Resume {
            messages: 9,
            resumes: 2,
            ..
        }
    ));
    assert_eq!(cli.scenario.name(), "resume");
}

#[test]
fn resume_and_during_runs_get_a_session_prefix_and_fan_out_a_run_id() {
    let settled = |args: &[&str]| {
        let mut cli = load_cli(args);
        cli.scenario.settle_random_defaults();
        cli.scenario
    };
    let plain = settled(&["lt", "closed-loop"]);
    assert_eq!(plain.common().session_prefix, None);
    let resume = settled(&["lt", "resume"]);
    let prefix = resume.common().session_prefix.clone().unwrap();
    assert!(prefix.starts_with("lt-") && prefix.len() < 40, "{prefix}");
    wsfleet::protocol::validate_session_id(&format!("{prefix}-99999")).unwrap();
    let during = settled(&["lt", "hold", "--during", "true"]);
    assert!(during.common().session_prefix.is_some());
    let given = settled(&["lt", "resume", "--session-prefix", "mine"]);
    assert_eq!(given.common().session_prefix.as_deref(), Some("mine"));
    let Scenario::FanOut { run_id, .. } = settled(&["lt", "fan-out", "--token", "t"]) else {
        panic!("not fan-out");
    };
    assert!(run_id.is_some());
}

#[test]
fn urls_repeat_and_source_addresses_are_a_list() {
    let cli = load_cli([
        "wsfleet-loadtest",
        "hold",
        "--url",
        "ws://127.0.0.1:1/ws/chat/",
        "--url",
        "ws://127.0.0.1:2/ws/chat/",
        "--source-ips",
        "127.0.0.1,127.0.0.2",
        "--workers",
        "3",
        "--worker-slice",
        "10:5",
        "--no-progress",
    ]);
    let common = cli.scenario.common();
    assert_eq!(common.urls.len(), 2);
    assert_eq!(
        common.urls_label(),
        "ws://127.0.0.1:1/ws/chat/,ws://127.0.0.1:2/ws/chat/"
    );
    assert_eq!(common.source_ips.len(), 2);
    assert_eq!(common.source_ips[1].to_string(), "127.0.0.2");
    assert_eq!(common.workers, Workers::Count(3));
    assert_eq!(
        common.worker_slice,
        Some(Slice {
            offset: 10,
            count: 5
        })
    );
    assert!(common.no_progress);
}

#[test]
fn bad_addresses_and_worker_counts_are_refused() {
    for bad in [
        &["--source-ips", "127.0.0.1,nope"][..],
        &["--workers", "0"],
        &["--workers", "lots"],
    ] {
        let mut argv = vec!["wsfleet-loadtest", "hold"];
        argv.extend_from_slice(bad);
        assert!(Cli::try_parse_from(argv).is_err(), "{bad:?}");
    }
}

#[test]
fn the_auth_secret_is_read_from_the_environment_name_and_kept_out_of_debug_output() {
    let cli = Cli::try_parse_from([
        "wsfleet-loadtest",
        "closed-loop",
        "--auth-secret",
        "0123456789abcdef0123456789abcdef",
    ])
    .unwrap();
    let Command::Load(scenario) = cli.command else {
        panic!("not a load scenario");
    };
    let secret = scenario.common().auth_secret.as_ref().unwrap();
    assert_eq!(secret.expose(), "0123456789abcdef0123456789abcdef");
    assert!(!format!("{scenario:?}").contains("0123456789abcdef"));
}

#[test]
fn rooms_sockets_are_rooms_times_members_and_the_room_prefix_is_settled_once() {
    let mut scenario = load_cli([
        "wsfleet-loadtest",
        "rooms",
        "-n",
        "5",
        "--rooms",
        "3",
        "--members",
        "7",
        "--rate",
        "10",
        "--duration",
        "2s",
        "--publishers",
        "9",
        "--redis-info",
        "127.0.0.1:6379",
    ])
    .scenario;
    scenario.settle_random_defaults();
    assert_eq!(scenario.name(), "rooms");
    assert_eq!(
        scenario.common().connections,
        21,
        "-n gives way to rooms × members"
    );
    assert_eq!(
        scenario.common().redis_info.as_deref(),
        Some("127.0.0.1:6379")
    );
    let Scenario::Rooms { room_prefix, .. } = &scenario else {
        panic!("{scenario:?}")
    };
    let prefix = room_prefix.clone().expect("settled");
    assert!(prefix.starts_with("lt-"), "{prefix}");
    scenario.settle_random_defaults();
    let Scenario::Rooms { room_prefix, .. } = &scenario else {
        panic!()
    };
    assert_eq!(room_prefix.as_deref(), Some(prefix.as_str()), "kept");
    let plan = crate::scenario::rooms::Plan::of(&scenario).unwrap();
    assert_eq!(plan.publications, 20, "10/s for 2 s");
    assert_eq!(plan.publishers, 7, "no more publishers than members");
}
