//! `GET /openapi.json` against the running server: the document is OpenAPI 3.1 and lists the
//! whole HTTP API, and every answer the server gives, in each situation the document names,
//! has a documented status, media type and headers, and a body its schema accepts (closed:
//! no field the document does not name).

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::helpers::{eventually, spawn_app, Client, RedisServer, TestApp};

/// The plain-HTTP routes of the router (`wsfleet::http::app`) that make up the API; the
/// WebSocket upgrade and the `/test/` page are outside the document.
const API_ROUTES: [(&str, &str); 7] = [
    ("get", "/rooms/{room}"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/status"),
    ("get", "/metrics"),
    ("post", "/broadcast"),
    ("get", "/openapi.json"),
];

/// The document, and which of its (method, path, status) answers the test has seen.
struct Contract {
    document: Value,
    seen: BTreeSet<(String, String, String)>,
}

impl Contract {
    async fn fetch(app: &TestApp) -> Contract {
        let response = reqwest::get(app.http("/openapi.json")).await.unwrap();
        assert_eq!(response.status(), 200);
        let document: Value = response.json().await.expect("/openapi.json is JSON");
        let mut contract = Contract {
            document,
            seen: BTreeSet::new(),
        };
        // The document describes itself too.
        let again = reqwest::get(app.http("/openapi.json")).await.unwrap();
        contract.check("get", "/openapi.json", again).await;
        contract
    }

    /// Every (method, path) the document lists.
    fn operations(&self) -> BTreeSet<(String, String)> {
        let paths = self.document["paths"].as_object().expect("paths");
        paths
            .iter()
            .flat_map(|(path, item)| {
                let methods = item.as_object().expect("a path item").keys();
                methods.map(move |method| (method.clone(), path.clone()))
            })
            .collect()
    }

    /// Every (method, path, status) the document lists.
    fn answers(&self) -> BTreeSet<(String, String, String)> {
        self.operations()
            .into_iter()
            .flat_map(|(method, path)| {
                let responses = self.document["paths"][&path][&method]["responses"]
                    .as_object()
                    .expect("responses")
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>();
                responses
                    .into_iter()
                    .map(move |status| (method.clone(), path.clone(), status))
            })
            .collect()
    }

    /// A validator for `schema`, with the document's components at its root so that their
    /// `$ref`s resolve, and every object closed to fields it does not name.
    fn validator(&self, schema: &Value) -> jsonschema::Validator {
        let mut root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "allOf": [schema],
            "components": self.document["components"],
        });
        close_objects(&mut root);
        jsonschema::draft202012::new(&root)
            .unwrap_or_else(|e| panic!("the schema {schema} does not compile: {e}"))
    }

    /// Checks one answer of `method path` against the document; returns its status and its
    /// body (JSON, or `Null` for another media type).
    async fn check(
        &mut self,
        method: &str,
        path: &str,
        response: reqwest::Response,
    ) -> (u16, Value) {
        let what = format!("{} {path}", method.to_uppercase());
        let status = response.status().as_u16();
        let operation = &self.document["paths"][path][method];
        assert!(operation.is_object(), "{what} is not in /openapi.json");
        let documented = &operation["responses"][status.to_string()];
        assert!(
            documented.is_object(),
            "{what} answered {status}, which /openapi.json does not list: {}",
            operation["responses"]
        );
        for header in documented["headers"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|h| h.0)
        {
            assert!(
                response.headers().contains_key(header.as_str()),
                "{what} {status} lacks the documented header {header}"
            );
        }
        let media_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let essence = |t: &str| {
            t.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        };
        let (_, content) = documented["content"]
            .as_object()
            .into_iter()
            .flatten()
            .find(|(t, _)| essence(t) == essence(&media_type))
            .unwrap_or_else(|| {
                panic!(
                    "{what} {status} answered {media_type:?}, not a documented media type: {}",
                    documented["content"]
                )
            });
        let schema = content["schema"].clone();
        let text = response.text().await.unwrap();
        let body = if essence(&media_type) == "application/json" {
            let body: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{what} {status}: the body is not JSON ({e}): {text}"));
            let errors: Vec<String> = self
                .validator(&schema)
                .iter_errors(&body)
                .map(|e| format!("{e} at {}", e.instance_path()))
                .collect();
            assert!(
                errors.is_empty(),
                "{what} {status}: the body does not match its documented schema:\n{}\nbody: {body}",
                errors.join("\n")
            );
            body
        } else {
            Value::Null
        };
        self.seen
            .insert((method.to_string(), path.to_string(), status.to_string()));
        (status, body)
    }
}

/// Adds `additionalProperties: false` to every schema object that names its properties and
/// says nothing of others: the server sends no field the document does not name.
fn close_objects(schema: &mut Value) {
    match schema {
        Value::Object(fields) => {
            if fields.contains_key("properties") && !fields.contains_key("additionalProperties") {
                fields.insert("additionalProperties".into(), Value::Bool(false));
            }
            fields.values_mut().for_each(close_objects);
        }
        Value::Array(items) => items.iter_mut().for_each(close_objects),
        _ => {}
    }
}

fn post(
    app: &TestApp,
    token: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> reqwest::RequestBuilder {
    let request = reqwest::Client::new()
        .post(app.http("/broadcast"))
        .header("content-type", "application/json")
        .body(body);
    match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
}

#[tokio::test]
async fn openapi_json_is_openapi_3_1_and_lists_every_route_of_the_http_api() {
    let redis = RedisServer::start().await;
    let app = spawn_app(&redis, &[]).await;
    let contract = Contract::fetch(&app).await;
    let version = contract.document["openapi"].as_str().unwrap_or("");
    assert!(version.starts_with("3.1."), "openapi: {version:?}");
    let routes: BTreeSet<_> = API_ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(contract.operations(), routes);
    let broadcast = &contract.document["paths"]["/broadcast"]["post"];
    assert_eq!(broadcast["security"], json!([{ "bearer": [] }]));
    assert_eq!(
        contract.document["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    // The documented request body takes what operators send and refuses a body without
    // `message`.
    let request =
        contract.validator(&broadcast["requestBody"]["content"]["application/json"]["schema"]);
    assert!(request.is_valid(&json!({ "message": "hello" })));
    assert!(request.is_valid(&json!({ "message": { "any": ["json"] } })));
    assert!(!request.is_valid(&json!({ "text": "hello" })));
}

#[tokio::test]
async fn every_answer_of_the_running_server_is_documented_and_matches_its_schema() {
    let mut redis = RedisServer::start().await;
    let app = spawn_app(&redis, &["--broadcast-token", "t"]).await;
    let closed = spawn_app(&redis, &[]).await;
    let mut contract = Contract::fetch(&app).await;
    let _socket = Client::connect(&app.ws_url(None)).await;
    let get = |path: &str| reqwest::get(app.http(path));

    assert_eq!(
        contract
            .check("get", "/healthz", get("/healthz").await.unwrap())
            .await
            .0,
        200
    );
    assert_eq!(
        contract
            .check("get", "/readyz", get("/readyz").await.unwrap())
            .await
            .0,
        200
    );
    assert_eq!(
        contract
            .check("get", "/metrics", get("/metrics").await.unwrap())
            .await
            .0,
        200
    );
    let (_, status) = contract
        .check("get", "/status", get("/status").await.unwrap())
        .await;
    assert_eq!(status["connections"]["local"], 1, "{status}");

    let too_large = format!(r#"{{"message":"{}"}}"#, "x".repeat(64 * 1024));
    let cases: [(&str, Option<&str>, String, u16); 10] = [
        ("published", Some("t"), r#"{"message":"hi"}"#.into(), 202),
        (
            "to a room",
            Some("t"),
            r#"{"message":"hi","room":"r"}"#.into(),
            202,
        ),
        (
            "to a session",
            Some("t"),
            r#"{"message":"hi","session":"s"}"#.into(),
            202,
        ),
        (
            "two targets",
            Some("t"),
            r#"{"message":"hi","room":"r","session":"s"}"#.into(),
            422,
        ),
        ("no token", None, r#"{"message":"hi"}"#.into(), 401),
        (
            "wrong token",
            Some("nope"),
            r#"{"message":"hi"}"#.into(),
            401,
        ),
        ("bad JSON", Some("t"), "{".into(), 400),
        ("missing message", Some("t"), r#"{"text":"hi"}"#.into(), 422),
        ("not an object", Some("t"), r#"["hi"]"#.into(), 422),
        ("too large", Some("t"), too_large, 413),
    ];
    for (what, token, body, expected) in cases {
        let response = post(&app, token, body).send().await.unwrap();
        let (status, body) = contract.check("post", "/broadcast", response).await;
        assert_eq!(status, expected, "{what}: {body}");
    }
    for (key, expected) in [("k1", 202), ("k1", 200), ("", 400)] {
        let response = post(&app, Some("t"), r#"{"message":"once"}"#)
            .header("idempotency-key", key)
            .send()
            .await
            .unwrap();
        let (status, body) = contract.check("post", "/broadcast", response).await;
        assert_eq!(status, expected, "Idempotency-Key {key:?}: {body}");
    }
    let response = post(&closed, Some("t"), r#"{"message":"hi"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(contract.check("post", "/broadcast", response).await.0, 403);

    let room = |node: &TestApp, name: &str, token: Option<&str>| {
        let request = reqwest::Client::new().get(node.http(&format!("/rooms/{name}")));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
        .send()
    };
    for (name, token, expected) in [
        ("r", Some("t"), 200),
        ("a%20b", Some("t"), 400),
        ("r", None, 401),
    ] {
        let response = room(&app, name, token).await.unwrap();
        let (status, body) = contract.check("get", "/rooms/{room}", response).await;
        assert_eq!(status, expected, "/rooms/{name}: {body}");
    }
    let response = room(&closed, "r", Some("t")).await.unwrap();
    assert_eq!(
        contract.check("get", "/rooms/{room}", response).await.0,
        403
    );

    // Draining: readiness fails first, while the drain waits on a socket that does not read.
    let _held = Client::connect(&closed.ws_url(None)).await;
    let readyz = closed.http("/readyz");
    let stopping = tokio::spawn(closed.stop());
    let response = eventually("/readyz to say draining", || async {
        let response = reqwest::get(&readyz).await.ok()?;
        (response.status() == 503).then_some(response)
    })
    .await;
    let (_, body) = contract.check("get", "/readyz", response).await;
    assert_eq!(body, json!({ "ready": false, "reason": "draining" }));
    stopping
        .await
        .unwrap()
        .expect("the drained node stops cleanly");

    // Redis gone: not ready, nothing published, the status still answers.
    redis.kill();
    let response = eventually("/readyz to say Redis is unavailable", || async {
        let response = get("/readyz").await.ok()?;
        (response.status() == 503).then_some(response)
    })
    .await;
    let (_, body) = contract.check("get", "/readyz", response).await;
    assert_eq!(
        body,
        json!({ "ready": false, "reason": "redis unavailable" })
    );
    let response = post(&app, Some("t"), r#"{"message":"hi"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(contract.check("post", "/broadcast", response).await.0, 503);
    let response = room(&app, "r", Some("t")).await.unwrap();
    assert_eq!(
        contract.check("get", "/rooms/{room}", response).await.0,
        503
    );
    assert_eq!(
        contract
            .check("get", "/status", get("/status").await.unwrap())
            .await
            .0,
        200
    );

    // Every answer the document lists was seen.
    let unseen: Vec<_> = contract
        .answers()
        .difference(&contract.seen)
        .cloned()
        .collect();
    assert!(unseen.is_empty(), "documented but never seen: {unseen:?}");
}
