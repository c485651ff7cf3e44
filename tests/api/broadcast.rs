//! `POST /broadcast`: delivery across instances and every refusal.

use serde_json::{json, Value};

use crate::helpers::{spawn_app, Client, RedisServer};

async fn post(url: &str, token: Option<&str>, body: Vec<u8>) -> (u16, Value) {
    post_with(url, token.map(|t| format!("Bearer {t}")).as_deref(), body).await
}

/// POSTs with `authorization` as the whole Authorization header value.
async fn post_with(url: &str, authorization: Option<&str>, body: Vec<u8>) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_broadcast_reaches_every_socket_on_every_instance() {
    let redis = RedisServer::start().await;
    let first = spawn_app(&redis, &["--broadcast-token", "s3cret"]).await;
    let second = spawn_app(&redis, &[]).await;
    let mut on_first = Client::connect(&first.ws_url(None)).await;
    let mut on_second = Client::connect(&second.ws_url(None)).await;
    crate::helpers::eventually("both sockets in the registry", || async {
        let (_, s) = crate::helpers::get_json(&first.http("/status")).await;
        (s["instances"]
            .as_array()?
            .iter()
            .map(|i| i["connections"].as_u64().unwrap_or(0))
            .sum::<u64>()
            == 2)
            .then_some(())
    })
    .await;

    let message = json!({"kind": "notice", "text": "maintenance at 5"});
    let (status, body) = post(
        &first.http("/broadcast"),
        Some("s3cret"),
        serde_json::to_vec(&json!({ "message": message })).unwrap(),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let epoch = body["epoch"].as_str().expect("an epoch").to_string();
    assert_eq!(
        body,
        json!({"instances": 2, "connections": 2, "offset": 1, "epoch": epoch})
    );

    for client in [&mut on_first, &mut on_second] {
        let frame = loop {
            let frame = client.next_json().await;
            if frame.get("broadcast").is_some() {
                break frame;
            }
        };
        assert_eq!(frame["broadcast"], message);
        assert_eq!(
            (&frame["offset"], &frame["epoch"]),
            (&json!(1), &json!(epoch))
        );
        let ts = frame["ts"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{ts}");
    }

    // A node without a token of its own refuses, whatever the caller presents.
    let (status, _) = post(
        &second.http("/broadcast"),
        Some("s3cret"),
        br#"{"message":"hello"}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 403, "the second node has no token configured");
}

#[tokio::test]
async fn broadcast_refuses_bad_requests_with_the_documented_status() {
    let redis = RedisServer::start().await;
    let app = spawn_app(&redis, &["--broadcast-token", "s3cret"]).await;
    let url = app.http("/broadcast");
    let big = serde_json::to_vec(&json!({"message": "x".repeat(70 * 1024)})).unwrap();
    let cases: Vec<(&str, Option<&str>, Vec<u8>, u16)> = vec![
        ("no token", None, br#"{"message":1}"#.to_vec(), 401),
        (
            "wrong token",
            Some("guess"),
            br#"{"message":1}"#.to_vec(),
            401,
        ),
        (
            "token prefix",
            Some("s3cre"),
            br#"{"message":1}"#.to_vec(),
            401,
        ),
        ("bad JSON", Some("s3cret"), b"{not json".to_vec(), 400),
        (
            "missing message",
            Some("s3cret"),
            br#"{"msg":1}"#.to_vec(),
            422,
        ),
        (
            "not an object",
            Some("s3cret"),
            br#"["message"]"#.to_vec(),
            422,
        ),
        ("body over 64 KiB", Some("s3cret"), big, 413),
        (
            "string message",
            Some("s3cret"),
            br#"{"message":"hi"}"#.to_vec(),
            202,
        ),
        (
            "null message",
            Some("s3cret"),
            br#"{"message":null}"#.to_vec(),
            202,
        ),
    ];
    for (what, token, body, expected) in cases {
        let (status, answer) = post(&url, token, body).await;
        assert_eq!(status, expected, "{what}: {answer}");
        if expected != 202 {
            assert!(answer["error"].is_string(), "{what}: {answer}");
        }
    }
    // The scheme is case-insensitive (RFC 7235); the token is not.
    let schemes = [
        ("bearer s3cret", 202),
        ("BEARER s3cret", 202),
        ("Bearer   s3cret", 202),
        ("Bearer S3CRET", 401),
        ("Basic s3cret", 401),
        ("Bearers3cret", 401),
    ];
    for (authorization, expected) in schemes {
        let (status, answer) =
            post_with(&url, Some(authorization), br#"{"message":1}"#.to_vec()).await;
        assert_eq!(status, expected, "{authorization:?}: {answer}");
    }
    // The token in the query string is not a token.
    let (status, _) = post(
        &format!("{url}?token=s3cret"),
        None,
        br#"{"message":1}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn without_a_configured_token_broadcast_is_refused() {
    let redis = RedisServer::start().await;
    let app = spawn_app(&redis, &[]).await;
    let (status, body) = post(
        &app.http("/broadcast"),
        Some(""),
        br#"{"message":1}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 403);
    assert!(body["error"].as_str().unwrap().contains("BROADCAST_TOKEN"));
}
