//! `REDIS_URL=rediss://…`: a node counts over TLS to a real `redis-server --tls-port`, trusting
//! the test's own CA through `SSL_CERT_FILE` (rustls-native-certs reads it instead of the
//! system roots).

use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use serde_json::json;

use crate::helpers::{eventually, free_port, node_command, ws_url, ChildNode, Client, RedisServer};

/// Writes `ca.pem` and, signed by it for `localhost` and `127.0.0.1`, `server.pem` and
/// `server.key` into `dir`.
fn write_ca_and_server_cert(dir: &Path) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "wsfleet test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), server.pem()).unwrap();
    std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
}

/// A Redis with a plain port (the harness's health checks) and a TLS port for the node.
async fn tls_redis(tls_port: u16) -> RedisServer {
    RedisServer::start_with(|dir| {
        write_ca_and_server_cert(dir);
        let file = |name: &str| dir.join(name).display().to_string();
        vec![
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            file("server.pem"),
            "--tls-key-file".into(),
            file("server.key"),
            "--tls-ca-cert-file".into(),
            file("ca.pem"),
            "--tls-auth-clients".into(),
            "no".into(),
        ]
    })
    .await
}

#[tokio::test]
async fn a_node_counts_over_tls_with_a_ca_from_ssl_cert_file() {
    let tls_port = free_port();
    let redis = tls_redis(tls_port).await;
    let url = format!("rediss://localhost:{tls_port}");
    let ca = redis.dir().join("ca.pem").display().to_string();
    let node = ChildNode::start_with_env(
        &redis,
        "tls",
        &["--redis-url", &url],
        &[("SSL_CERT_FILE", &ca)],
    )
    .await;

    let mut client: Client = Client::connect(&ws_url(node.addr, Some("over-tls"))).await;
    for expected in 1..=5 {
        client.send("x").await;
        assert_eq!(client.next_reply().await, json!({ "count": expected }));
    }
    // Every connection the node holds came in on the TLS port, none on the plain one.
    let clients = redis.cli(&["CLIENT", "LIST"]).expect("CLIENT LIST");
    let node_lines: Vec<&str> = clients
        .lines()
        .filter(|l| !l.contains("cmd=client"))
        .collect();
    assert!(!node_lines.is_empty(), "no node connection in {clients}");
    for line in node_lines {
        assert!(
            line.contains(&format!("laddr=127.0.0.1:{tls_port}")),
            "a connection not on the TLS port: {line}"
        );
    }
}

#[tokio::test]
async fn a_node_that_does_not_trust_the_servers_ca_stays_unready_and_says_why() {
    let tls_port = free_port();
    let redis = tls_redis(tls_port).await;
    // Another CA, not the one that signed the server's certificate.
    let other = RedisServer::start_with(|dir| {
        write_ca_and_server_cert(dir);
        Vec::new()
    })
    .await;
    let url = format!("rediss://localhost:{tls_port}");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (command, log) = node_command(addr, &redis, Some("untrusting"), &["--redis-url", &url]);
    let mut node = tokio::process::Command::from(command)
        .env("SSL_CERT_FILE", other.dir().join("ca.pem"))
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    // The handshake fails on the certificate, and the log says so (no fallback to plain TCP).
    eventually("the node to log a certificate error", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        async move { text.contains("InvalidCertificate").then_some(()) }
    })
    .await;
    // It binds once its Redis clients have been given REDIS_TIMEOUT to connect.
    let readyz = format!("http://{addr}/readyz");
    let status = eventually("the node to answer /readyz", || {
        let readyz = readyz.clone();
        async move { Some(reqwest::get(&readyz).await.ok()?.status()) }
    })
    .await;
    assert_eq!(status, 503);
    let _ = node.start_kill();
    let _ = node.wait().await;
    let _ = std::fs::remove_file(&log);
}
