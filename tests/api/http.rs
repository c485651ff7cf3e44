//! Operator endpoints: health, readiness, metrics, status, the test page, unknown routes.

use crate::helpers::{get_json, spawn_app, Client, RedisServer};

#[tokio::test]
async fn health_and_readiness_answer_200_on_a_healthy_node() {
    let redis = RedisServer::start().await;
    let app = spawn_app(&redis, &[]).await;
    assert_eq!(get_json(&app.http("/healthz")).await.0, 200);
    let (status, body) = get_json(&app.http("/readyz")).await;
    assert_eq!(status, 200);
    assert_eq!(body["ready"], true);
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_the_wsfleet_names() {
    let redis = RedisServer::start().await;
    let app = spawn_app(&redis, &[]).await;
    let mut client = Client::connect(&app.ws_url(None)).await;
    client.send("x").await;
    client.next_reply().await;
    let text = reqwest::get(app.http("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for expected in [
        "# TYPE wsfleet_connections_active gauge",
        "wsfleet_connections_active 1",
        "# TYPE wsfleet_fleet_connections gauge",
        "# TYPE wsfleet_connections_max gauge",
        "wsfleet_messages_received_total 1",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[tokio::test]
async fn status_lists_this_node_and_the_fleet() {
    let redis = RedisServer::start().await;
    let first = spawn_app(&redis, &["--color", "green"]).await;
    let second = spawn_app(&redis, &[]).await;
    let _a = Client::connect(&first.ws_url(None)).await;
    let _b = Client::connect(&second.ws_url(None)).await;
    let _c = Client::connect(&second.ws_url(None)).await;

    let body = crate::helpers::eventually("status to show 3 fleet connections", || async {
        let (_, body) = get_json(&first.http("/status")).await;
        (body["connections"]["fleet"] == 3).then_some(body)
    })
    .await;
    assert_eq!(body["instance"], first.instance.as_str());
    assert_eq!(body["color"], "green");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert!(body["uptime_s"].is_u64());
    assert_eq!(body["draining"], false);
    assert_eq!(body["connections"]["local"], 1);
    let instances = body["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 2, "{body}");
    let second_record = instances
        .iter()
        .find(|i| i["id"] == second.instance.as_str())
        .expect("the second node is listed");
    assert_eq!(second_record["color"], "blue");
    assert_eq!(second_record["connections"], 2);
    assert!(second_record["last_seen"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn the_test_page_is_served_and_unknown_routes_are_json_404s() {
    let redis = RedisServer::start().await;
    let app = spawn_app(&redis, &[]).await;
    let page = reqwest::get(app.http("/test/")).await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains(r#"import { connect } from "./wsfleet.js";"#),
        "the page is built on the reference client"
    );
    // Every module the client imports is served beside it, as JavaScript.
    let mut modules = vec!["wsfleet.js".to_string()];
    let mut served = Vec::new();
    while let Some(module) = modules.pop() {
        let response = reqwest::get(app.http(&format!("/test/{module}")))
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "/test/{module}");
        assert_eq!(
            response.headers()["content-type"],
            "text/javascript; charset=utf-8",
            "/test/{module}"
        );
        let source = response.text().await.unwrap();
        for import in source.split("from \"./").skip(1) {
            let name = import.split('"').next().unwrap().to_string();
            if !served.contains(&name) && !modules.contains(&name) {
                modules.push(name);
            }
        }
        served.push(module);
    }
    served.sort();
    assert_eq!(
        served,
        [
            "connection.js",
            "counter.js",
            "cursor.js",
            "emitter.js",
            "rooms.js",
            "roomset.js",
            "wsfleet.js"
        ]
    );

    for path in ["/nope", "/test/../Cargo.toml", "/test/%2e%2e/Cargo.toml"] {
        let (status, body) = get_json(&app.http(path)).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["error"], "not found", "{path}");
    }
    let response = reqwest::Client::new()
        .delete(app.http("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_keeps_the_one_given() {
    let redis = RedisServer::start().await;
    let app = spawn_app(&redis, &[]).await;
    let http = reqwest::Client::new();
    let given = http
        .get(app.http("/healthz"))
        .header("x-request-id", "from-nginx-42")
        .send()
        .await
        .unwrap();
    assert_eq!(given.headers()["x-request-id"], "from-nginx-42");
    let made = http.get(app.http("/status")).send().await.unwrap();
    let id = made.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
}

#[tokio::test]
async fn redis_timings_and_heartbeat_age_are_exported() {
    let redis = RedisServer::start().await;
    let app = spawn_app(&redis, &["--heartbeat-interval", "200ms"]).await;
    let mut client = Client::connect(&app.ws_url(None)).await;
    client.send("x").await;
    client.next_reply().await;
    let text = crate::helpers::eventually("a heartbeat to be seen", || async {
        let text = reqwest::get(app.http("/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        (!text.contains("wsfleet_heartbeat_age_seconds -1")).then_some(text)
    })
    .await;
    for expected in [
        "wsfleet_redis_command_duration_seconds_count{operation=\"increment\"} 1",
        "wsfleet_redis_command_duration_seconds_bucket{le=",
        "wsfleet_heartbeat_age_seconds ",
        "wsfleet_startup_duration_seconds ",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}
