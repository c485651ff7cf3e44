//! Publishing a fan-out run's broadcasts (`POST /broadcast`), with retries under `--resume`.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;
use tokio::time::Instant;

use super::{Plan, Stamp};
use crate::series;

/// Longest wait for one `POST /broadcast` answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Publishes a run's broadcasts through one instance's `POST /broadcast` (or each of
/// several servers').
pub struct Publisher {
    http: reqwest::Client,
    urls: Vec<String>,
    token: String,
    run_id: String,
    broadcasts: u64,
    interval: Duration,
    resume: bool,
}

/// Longest a broadcast is retried (`--resume`) before it counts as failed: a drain and a
/// replacement instance take seconds; past this the instance is not coming back.
const RETRY_PATIENCE: Duration = Duration::from_secs(30);

/// What publishing did: broadcasts the server accepted (202), and an error kind for each one
/// it did not.
#[derive(Debug, Default)]
pub struct Published {
    pub accepted: u64,
    pub errors: Vec<String>,
}

impl Publisher {
    pub fn new(plan: &Plan<'_>) -> Result<Publisher> {
        let http = reqwest::Client::builder()
            // Only the URL given is contacted: never a proxy from the environment.
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("building the HTTP client")?;
        Ok(Publisher {
            http,
            urls: plan.broadcast_urls.to_vec(),
            token: plan.token.to_string(),
            run_id: plan.run_id.to_string(),
            broadcasts: plan.broadcasts,
            interval: plan.interval,
            resume: plan.resume,
        })
    }

    /// Publishes the broadcasts one `interval` apart (on a fixed schedule, so a slow answer
    /// does not push the later ones back), stopping at `deadline`.
    pub async fn publish(&self, deadline: Instant) -> Published {
        let mut published = Published::default();
        let start = Instant::now();
        for seq in 0..self.broadcasts {
            let due = start + self.interval * u32::try_from(seq).unwrap_or(u32::MAX);
            if due >= deadline {
                published.errors.push("publish: deadline".into());
                continue;
            }
            tokio::time::sleep_until(due).await;
            let stamp = Stamp {
                wsfleet_loadtest: self.run_id.clone(),
                seq,
                published_us: series::unix_micros(),
            };
            let body = serde_json::json!({ "message": stamp });
            let key = format!("{}-{seq}", self.run_id);
            let requests = self
                .urls
                .iter()
                .map(|url| self.post_until_accepted(url, &body, &key, deadline));
            let failures: Vec<String> = futures_util::future::join_all(requests)
                .await
                .into_iter()
                .filter_map(Result::err)
                .collect();
            if failures.is_empty() {
                published.accepted += 1;
            }
            published.errors.extend(failures);
        }
        published
    }

    /// One broadcast to one server: one `POST /broadcast`, or with `--resume` as many as it
    /// takes (the instance may be draining or restarting), each with the same
    /// Idempotency-Key so that it is published once. A refusal (4xx) is not retried.
    async fn post_until_accepted(
        &self,
        url: &str,
        body: &Value,
        key: &str,
        deadline: Instant,
    ) -> Result<(), String> {
        if !self.resume {
            return self.post(url, body, None, deadline).await;
        }
        let give_up = deadline.min(Instant::now() + RETRY_PATIENCE);
        let mut backoff = Duration::from_millis(100);
        loop {
            let error = match self.post(url, body, Some(key), deadline).await {
                Ok(()) => return Ok(()),
                Err(kind) if kind.starts_with("publish: http 4") => return Err(kind),
                Err(kind) => kind,
            };
            if Instant::now() + backoff >= give_up {
                return Err(error);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// One `POST /broadcast`; Err is the kind of failure. With an Idempotency-Key a 200 (a
    /// repeat of a key: published before) is as good as a 202.
    async fn post(
        &self,
        url: &str,
        body: &Value,
        key: Option<&str>,
        deadline: Instant,
    ) -> Result<(), String> {
        let mut request = self.http.post(url).bearer_auth(&self.token).json(body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        match tokio::time::timeout_at(deadline, request.send()).await {
            Ok(Ok(response)) if response.status().as_u16() == 202 => Ok(()),
            Ok(Ok(response)) if key.is_some() && response.status().as_u16() == 200 => Ok(()),
            Ok(Ok(response)) => Err(format!("publish: http {}", response.status().as_u16())),
            Ok(Err(e)) => Err(format!(
                "publish: {}",
                if e.is_timeout() {
                    "timeout"
                } else if e.is_connect() {
                    "connect failed"
                } else {
                    "request failed"
                }
            )),
            Err(_) => Err("publish: deadline".into()),
        }
    }
}
