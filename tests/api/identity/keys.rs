//! Identity's keys and secrets: RS256/ES256 public key files (and algorithm confusion),
//! secrets read from files, and the start-up refusals of conflicting or unusable settings.

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;

use super::{now, sign_with, token_for, url, TempFile, SECRET};
use crate::helpers::{refused_upgrade, spawn_app, ChildNode, Client, RedisServer};

/// Opens a socket on a node verifying with `pem`, signed by `key` with `alg`; and checks
/// that an HS256 token made with the public key as its secret (algorithm confusion) is refused.
async fn public_key_node_accepts(alg: Algorithm, key: EncodingKey, public_pem: &str) {
    let redis = RedisServer::start().await;
    let file = TempFile::new("key.pem", public_pem.as_bytes());
    let app = spawn_app(&redis, &["--auth-public-key-file", file.path()]).await;
    let token = sign_with(alg, &key, json!({"sub": "alice", "exp": now() + 3600}));
    let mut client = Client::connect(&url(app.addr, "pk", &token)).await;
    client.send("x").await;
    assert_eq!(client.next_reply().await, json!({"count": 1}), "{alg:?}");
    let confused = sign_with(
        Algorithm::HS256,
        &EncodingKey::from_secret(public_pem.as_bytes()),
        json!({"sub": "alice", "exp": now() + 3600}),
    );
    let (status, _) = refused_upgrade(&url(app.addr, "pk2", &confused)).await;
    assert_eq!(status, 401, "{alg:?}: HS256 with the public key as secret");
}

#[tokio::test]
async fn rs256_tokens_are_verified_with_an_rsa_public_key_file() {
    use rsa::{
        pkcs1::EncodeRsaPrivateKey, pkcs8::EncodePublicKey, pkcs8::LineEnding, RsaPrivateKey,
    };
    let private = RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
    let private_pem = private.to_pkcs1_pem(LineEnding::LF).unwrap();
    let public_pem = private
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let key = EncodingKey::from_rsa_pem(private_pem.as_bytes()).unwrap();
    public_key_node_accepts(Algorithm::RS256, key, &public_pem).await;
}

#[tokio::test]
async fn es256_tokens_are_verified_with_a_p256_public_key_file() {
    use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let secret = p256::SecretKey::random(&mut rand_core::OsRng);
    let private_pem = secret.to_pkcs8_pem(LineEnding::LF).unwrap();
    let public_pem = secret
        .public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let key = EncodingKey::from_ec_pem(private_pem.as_bytes()).unwrap();
    public_key_node_accepts(Algorithm::ES256, key, &public_pem).await;
}

#[tokio::test]
async fn secrets_are_read_from_files_without_their_trailing_newline() {
    let redis = RedisServer::start().await;
    let secret = TempFile::new("auth-secret", format!("{SECRET}\n").as_bytes());
    let broadcast = TempFile::new("broadcast-token", b"operator-token\n");
    let node = ChildNode::start(
        &redis,
        "from-files",
        &[
            "--auth-secret-file",
            secret.path(),
            "--broadcast-token-file",
            broadcast.path(),
        ],
    )
    .await;
    let mut client = Client::connect(&url(node.addr, "f", &token_for("alice"))).await;
    client.send("x").await;
    assert_eq!(client.next_reply().await, json!({"count": 1}));
    let answer = reqwest::Client::new()
        .post(format!("http://{}/broadcast", node.addr))
        .bearer_auth("operator-token")
        .json(&json!({"message": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 202);
    // A heartbeat may come first.
    let broadcast = loop {
        let frame = client.next_json().await;
        if frame.get("broadcast").is_some() {
            break frame;
        }
    };
    assert_eq!(broadcast["broadcast"], "hi");
    assert!(node.log_text().contains("\"authentication\":\"HS256\""));
}

#[test]
fn both_a_secret_and_its_file_or_two_keys_fail_at_start_up_with_exit_2() {
    let file = TempFile::new("both", SECRET.as_bytes());
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("AUTH_SECRET", SECRET), ("AUTH_SECRET_FILE", file.path())],
            "AUTH_SECRET and AUTH_SECRET_FILE are both set",
        ),
        (
            &[
                ("AUTH_SECRET", SECRET),
                ("AUTH_PUBLIC_KEY_FILE", file.path()),
            ],
            "AUTH_SECRET and AUTH_PUBLIC_KEY_FILE are both set",
        ),
        (
            &[
                ("BROADCAST_TOKEN", "t"),
                ("BROADCAST_TOKEN_FILE", file.path()),
            ],
            "BROADCAST_TOKEN and BROADCAST_TOKEN_FILE are both set",
        ),
        (
            &[("AUTH_PUBLIC_KEY_FILE", file.path())],
            "invalid AUTH_PUBLIC_KEY_FILE",
        ),
        (&[("AUTH_SECRET", "short")], "at least 32"),
    ];
    for (env, needle) in cases {
        let (code, stderr) = crate::settings::run_with_env(env);
        assert_eq!(code, Some(2), "{env:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(needle), "{env:?}: {stderr}");
        assert!(!stderr.contains(SECRET), "{stderr}");
    }
}
