//! Identity (SPEC "Identity"): tokens on the upgrade, session owners, token expiry, secrets
//! from files, the development `user` parameter. Real Redis, real nodes, keys made here.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::helpers::{get_json, refused_upgrade, spawn_app, ChildNode, Client, RedisServer};

mod keys;

/// An HS256 secret of the minimum length.
const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn sign_with(alg: Algorithm, key: &EncodingKey, claims: Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), &claims, key).unwrap()
}

fn hs256(claims: Value) -> String {
    sign_with(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        claims,
    )
}

fn token_for(sub: &str) -> String {
    hs256(json!({"sub": sub, "exp": now() + 3600}))
}

fn url(addr: std::net::SocketAddr, session: &str, token: &str) -> String {
    format!("ws://{addr}/ws/chat/?session_uuid={session}&token={token}")
}

/// A file under the system's temporary directory, removed when dropped.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(name: &str, contents: &[u8]) -> TempFile {
        let path = std::env::temp_dir().join(format!(
            "wsfleet-identity-{}-{}-{name}",
            std::process::id(),
            crate::helpers::free_port()
        ));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }
    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `header.payload.` with `alg: none`, no signature.
fn unsigned(claims: Value) -> String {
    use base64::Engine as _;
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"})),
        b64(claims)
    )
}

#[tokio::test]
async fn bad_tokens_get_401_before_the_upgrade_and_touch_nothing_in_redis() {
    let redis = RedisServer::start().await;
    let app = spawn_app(&redis, &["--auth-secret", SECRET]).await;
    let other_secret = EncodingKey::from_secret(b"another secret, long enough to be valid");
    let cases: Vec<(&str, String, &str)> = vec![
        ("missing", String::new(), "missing token"),
        ("malformed", "not.a.jwt".into(), "invalid token"),
        ("garbage", "abc".into(), "invalid token"),
        (
            "wrongly signed",
            sign_with(
                Algorithm::HS256,
                &other_secret,
                json!({"sub": "a", "exp": now() + 3600}),
            ),
            "invalid token",
        ),
        (
            "expired",
            hs256(json!({"sub": "a", "exp": now() - 10})),
            "token expired",
        ),
        (
            "not yet valid",
            hs256(json!({"sub": "a", "exp": now() + 7200, "nbf": now() + 3600})),
            "token not yet valid",
        ),
        (
            "alg none",
            unsigned(json!({"sub": "a", "exp": now() + 3600})),
            "invalid token",
        ),
        (
            "HS384",
            sign_with(
                Algorithm::HS384,
                &EncodingKey::from_secret(SECRET.as_bytes()),
                json!({"sub": "a", "exp": now() + 3600}),
            ),
            "invalid token",
        ),
        (
            "no sub",
            hs256(json!({"exp": now() + 3600})),
            "invalid token",
        ),
        ("no exp", hs256(json!({"sub": "a"})), "invalid token"),
        (
            "empty sub",
            hs256(json!({"sub": "", "exp": now() + 3600})),
            "invalid token",
        ),
    ];
    for (n, (what, token, error)) in cases.iter().enumerate() {
        let session = format!("refused-{n}");
        let (status, body) = refused_upgrade(&url(app.addr, &session, token)).await;
        assert_eq!((status, &body), (401, &json!({ "error": error })), "{what}");
        let exists = redis.cli(&["EXISTS", &format!("wsfleet:session:{session}")]);
        assert_eq!(exists.as_deref(), Some("0"), "{what}: no claim was made");
    }
    let metrics = reqwest::get(app.http("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = format!(
        "wsfleet_upgrades_rejected_total{{reason=\"unauthorized\"}} {}",
        cases.len()
    );
    assert!(metrics.contains(&line), "{line}");
    // With authentication on, `user` proves nothing and is ignored, valid or not.
    let mut client = Client::connect(&format!(
        "{}&user=mallory&user=bad%20name",
        url(app.addr, "ok", &token_for("alice"))
    ))
    .await;
    client.send("x").await;
    assert_eq!(client.next_reply().await, json!({"count": 1}));
}

#[tokio::test]
async fn a_bearer_header_carries_the_token_too() {
    let redis = RedisServer::start().await;
    let app = spawn_app(&redis, &["--auth-secret", SECRET]).await;
    let mut request = format!("ws://{}/ws/chat/?session_uuid=b", app.addr)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", token_for("alice")).parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    use futures_util::StreamExt;
    let welcome = ws.next().await.unwrap().unwrap();
    assert!(welcome
        .to_text()
        .unwrap()
        .contains("\"session_uuid\":\"b\""));
    assert_eq!(
        redis.cli(&["HGET", "wsfleet:session:b", "u"]).as_deref(),
        Some("alice")
    );
}

#[tokio::test]
async fn another_sub_gets_403_and_the_owners_socket_is_not_fenced() {
    let redis = RedisServer::start().await;
    let app = spawn_app(&redis, &["--auth-secret", SECRET]).await;
    let mut alice = Client::connect(&url(app.addr, "owned", &token_for("alice"))).await;
    alice.send("x").await;
    assert_eq!(alice.next_reply().await, json!({"count": 1}));
    let key = "wsfleet:session:owned";
    let before = redis.cli(&["HGETALL", key]);
    let (status, body) = refused_upgrade(&url(app.addr, "owned", &token_for("bob"))).await;
    assert_eq!(
        (status, body),
        (403, json!({"error": "the session belongs to another user"}))
    );
    assert_eq!(
        redis.cli(&["HGETALL", key]),
        before,
        "a refused claim changes nothing"
    );
    alice.send("x").await;
    assert_eq!(alice.next_reply().await, json!({"count": 2}), "not fenced");
    // The owner resumes from elsewhere as usual (which fences its older socket).
    let mut again = Client::connect(&url(app.addr, "owned", &token_for("alice"))).await;
    assert_eq!((again.welcome.count, again.welcome.resumed), (2, true));
    again.send("x").await;
    assert_eq!(again.next_reply().await, json!({"count": 3}));
    let metrics = reqwest::get(app.http("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("wsfleet_upgrades_rejected_total{reason=\"forbidden\"} 1"));
}

#[tokio::test]
async fn an_expired_token_closes_1008_and_a_fresh_token_resumes_without_losing_a_count() {
    let redis = RedisServer::start().await;
    let app = spawn_app(&redis, &["--auth-secret", SECRET]).await;
    let exp = now() + 2;
    let short = hs256(json!({"sub": "alice", "exp": exp}));
    let mut client = Client::connect(&url(app.addr, "expiring", &short)).await;
    client.send("x").await;
    assert_eq!(client.next_reply().await, json!({"count": 1}));
    let (code, reason) = client.expect_close().await;
    assert_eq!((code, reason.as_str()), (1008, "token expired"));
    // The contract's bound (the socket-loop test holds the exact instant, in paused time).
    assert!(now() <= exp + 5, "closed by {}, exp {exp}", now());
    let mut fresh = Client::connect(&url(app.addr, "expiring", &token_for("alice"))).await;
    assert_eq!((fresh.welcome.count, fresh.welcome.resumed), (1, true));
    fresh.send("x").await;
    assert_eq!(fresh.next_reply().await, json!({"count": 2}));
}

#[tokio::test]
async fn without_authentication_user_is_checked_ownership_is_not_and_the_log_says_so() {
    let redis = RedisServer::start().await;
    let node = ChildNode::start(&redis, "open", &[]).await;
    let ws = |query: &str| format!("ws://{}/ws/chat/?{query}", node.addr);
    let (status, body) = refused_upgrade(&ws("session_uuid=u&user=bad%20name")).await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().starts_with("invalid user"),
        "{body}"
    );
    let mut alice = Client::connect(&ws("session_uuid=u&user=alice")).await;
    alice.send("x").await;
    assert_eq!(alice.next_reply().await, json!({"count": 1}));
    // Any "user" may take the session over: without tokens nobody is proven to be anyone.
    let bob = Client::connect(&ws("session_uuid=u&user=bob")).await;
    assert_eq!(bob.welcome.count, 1);
    assert_eq!(
        redis.cli(&["HEXISTS", "wsfleet:session:u", "u"]).as_deref(),
        Some("0")
    );
    let log = node.log_text();
    assert!(log.contains("\"authentication\":\"off\""), "{log}");
    assert!(log.contains("authentication is off"), "{log}");
    let (status, _) = get_json(&format!("http://{}/healthz", node.addr)).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_tokens_rooms_claim_limits_the_rooms_it_may_join_and_its_sub_is_the_user() {
    let redis = RedisServer::start().await;
    let app = spawn_app(&redis, &["--auth-secret", SECRET]).await;
    let token = hs256(json!({
        "sub": "carol",
        "exp": now() + 3600,
        "rooms": ["lobby", "team:*"],
    }));
    let mut carol = Client::connect(&url(app.addr, "carol-s", &token)).await;
    for (room, allowed) in [
        ("lobby", true),
        ("team:red", true),
        ("team:", true),
        ("lobby2", false),
        ("team", false),
        ("other", false),
    ] {
        carol
            .send(&json!({"type": "join", "room": room}).to_string())
            .await;
        let answer = crate::rooms::next_frame(&mut carol).await;
        if allowed {
            assert_eq!(answer["type"], "room_users", "{room}: {answer}");
            assert!(answer["users"]
                .as_array()
                .unwrap()
                .contains(&json!("carol")));
        } else {
            assert_eq!(
                answer,
                json!({"type": "error", "error": "forbidden", "room": room}),
                "{room}"
            );
        }
    }
    // Without a rooms claim every room is allowed.
    let mut dave = Client::connect(&url(app.addr, "dave-s", &token_for("dave"))).await;
    dave.send(&json!({"type": "join", "room": "other"}).to_string())
        .await;
    assert_eq!(
        crate::rooms::next_frame(&mut dave).await["type"],
        "room_users"
    );
}
