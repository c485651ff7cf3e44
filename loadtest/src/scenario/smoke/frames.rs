//! The smoke test's I/O: bounded steps, the next frame of a socket, HTTP answers and URLs.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use wsfleet::protocol::ServerFrame;

use super::Socket;

/// The next room frame (one with a `"type"`), as JSON; heartbeats and broadcasts are skipped.
pub async fn next_room_frame(socket: &mut Socket) -> Result<Value> {
    loop {
        let text = next_text(socket).await?;
        let frame: Value = serde_json::from_str(&text)
            .with_context(|| format!("unexpected text frame {text:?}"))?;
        if frame.get("type").is_some() {
            return Ok(frame);
        }
    }
}

/// Runs `what` with a deadline; running out is an error naming the step.
pub async fn bounded<T>(
    limit: Duration,
    step: &str,
    what: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(limit, what).await {
        Ok(result) => result.with_context(|| format!("{step} failed")),
        Err(_) => Err(anyhow!("{step}: nothing within {limit:?}")),
    }
}

/// The next text frame, typed; a close or a broken connection is an error.
pub async fn next_frame(socket: &mut Socket) -> Result<ServerFrame> {
    let text = next_text(socket).await?;
    serde_json::from_str(&text).with_context(|| format!("unexpected text frame {text:?}"))
}

/// The next text frame; a close or a broken connection is an error.
async fn next_text(socket: &mut Socket) -> Result<String> {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => return Ok(text.to_string()),
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) = frame
                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                    .unwrap_or((1005, String::new()));
                bail!("the server closed the socket: {code} {reason}");
            }
            Some(Ok(Message::Binary(_))) => bail!("unexpected binary frame"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => bail!("socket error: {e}"),
            None => bail!("the connection ended"),
        }
    }
}

/// `--http` as a base URL without a trailing slash: `http://host[:port]`, no path.
pub fn base_url(url: &str) -> Result<&str> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("--http must be an http:// URL, got {url:?}"))?;
    let authority = rest.trim_end_matches('/');
    if authority.contains('/') {
        bail!("--http must be a base URL without a path, got {url:?}");
    }
    if authority.is_empty() || authority.starts_with(':') {
        bail!("--http has no host: {url:?}");
    }
    Ok(url.trim_end_matches('/'))
}

/// The status code and body text of a response.
pub async fn answer(response: reqwest::Response) -> Result<(u16, String)> {
    let status = response.status().as_u16();
    Ok((status, response.text().await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_checked() {
        assert_eq!(
            base_url("http://127.0.0.1:8001/").unwrap(),
            "http://127.0.0.1:8001"
        );
        assert_eq!(base_url("http://localhost").unwrap(), "http://localhost");
        for bad in [
            "https://127.0.0.1:1",
            "http://127.0.0.1:1/readyz",
            "http://",
            "http://:80",
        ] {
            assert!(base_url(bad).is_err(), "{bad}");
        }
    }
}
