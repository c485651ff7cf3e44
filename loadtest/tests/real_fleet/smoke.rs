//! `wsfleet-loadtest smoke`, the check `make promote` runs on each new instance: it passes
//! against a healthy instance through a private room, publishes nothing to the fleet (a
//! socket that stays connected through it gets no broadcast), and fails on a wrong token.

use std::{process::Command, process::Stdio, time::Duration};

use serde_json::{json, Value};
use wsfleet_testkit::Client;

use crate::harness::{finish_loadtest, free_port, json_path, Redis, Run, Server, TOKEN};

fn smoke(server: &Server, token: &str) -> Run {
    smoke_signed(server, token, None)
}

/// The smoke test, signing its sockets' tokens with `auth_secret` when given.
fn smoke_signed(server: &Server, token: &str, auth_secret: Option<&str>) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wsfleet-loadtest"));
    command.env_remove("LOADTEST_AUTH_SECRET");
    if let Some(secret) = auth_secret {
        command.env("LOADTEST_AUTH_SECRET", secret);
    }
    let child = command
        .args(["smoke", "--url", &server.ws_url(), "--http"])
        .arg(format!("http://127.0.0.1:{}", server.port))
        .env("LOADTEST_TOKEN", token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the load tester starts");
    // smoke writes no report: the path stays unused.
    finish_loadtest(child, &json_path(), Duration::from_secs(60))
}

#[test]
fn smoke_passes_through_a_private_room_and_reaches_no_other_socket() {
    let redis = Redis::start();
    let server = Server::start(&redis, free_port());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut bystander = runtime.block_on(Client::<Value>::connect(&server.ws_url()));

    let run = smoke(&server, TOKEN);
    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert!(run.output.starts_with("smoke: ok"), "{}", run.describe());
    assert!(
        run.output.contains("offsets 1 and 2 received"),
        "{}",
        run.describe()
    );

    // A wrong operator token fails it, naming the refusal.
    let run = smoke(&server, "not-the-token");
    assert_eq!(run.code, Some(1), "{}", run.describe());
    assert!(run.output.contains("smoke: FAILED"), "{}", run.describe());
    assert!(run.output.contains("401"), "{}", run.describe());

    // The first broadcast the bystander gets is this marker, and it is the fleet's first.
    runtime.block_on(async {
        let response = reqwest::Client::new()
            .post(server.broadcast_url())
            .bearer_auth(TOKEN)
            .json(&json!({"message": "marker"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        loop {
            let frame = bystander.next_json().await;
            if frame.get("broadcast").is_some() {
                assert_eq!(
                    (&frame["broadcast"], &frame["offset"]),
                    (&json!("marker"), &json!(1)),
                    "the bystander got a broadcast the smoke test sent: {frame}"
                );
                break;
            }
            assert!(
                frame.get("type").is_none(),
                "the bystander got a room frame: {frame}"
            );
        }
    });
}

/// `make up AUTH_SECRET=…` then `make promote`: the smoke test signs its sockets' tokens with
/// the fleet's secret (promote.sh passes it); without it, the upgrade's 401 fails the test.
#[test]
fn smoke_passes_on_a_fleet_with_authentication_when_given_its_secret() {
    const SECRET: &str = "smoke-test-secret-of-at-least-32-bytes";
    let redis = Redis::start();
    let server = Server::start_with(&redis, free_port(), &["--auth-secret", SECRET]);

    let run = smoke_signed(&server, TOKEN, None);
    assert_eq!(run.code, Some(1), "{}", run.describe());
    assert!(run.output.contains("401"), "{}", run.describe());

    let run = smoke_signed(&server, TOKEN, Some(SECRET));
    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert!(
        run.output.contains("offsets 1 and 2 received"),
        "{}",
        run.describe()
    );
}
