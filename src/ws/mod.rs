//! `GET /ws/chat/`: everything decided before the upgrade (session id, origin, identity,
//! capacity, draining, the claim on the session in Redis), then hands the socket to
//! [`session`].

mod broadcasts;
mod close;
mod connection;
mod parts;
mod rate_limit;
mod rooms;
pub mod session;
mod slow;
#[cfg(test)]
mod socket_tests;

use std::sync::Arc;

use axum::{
    extract::{
        ws::{rejection::WebSocketUpgradeRejection, WebSocketUpgrade},
        Query, State,
    },
    http::{header, HeaderMap},
    response::{IntoResponse, Response},
};

use crate::{
    counter::{Claim, ClaimError},
    error::ApiError,
    identity::{self, Identity, IdentityError},
    protocol::validate_session_id,
    state::SharedState,
};

/// Buffers sized on purpose: tungstenite's 128 KiB defaults cost ~100 KB per socket and much
/// throughput. Frames here are tiny; the read buffer grows for a large frame when needed.
/// 512 rather than 4096: the buffer is allocated for every socket, idle or not, and
/// tungstenite zero-fills it to this size before every read (docs/PROFILE.md); a frame
/// larger than this just takes more reads.
const READ_BUFFER_BYTES: usize = 512;

pub async fn upgrade(
    State(app): State<SharedState>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match prepare(&app, &params, &headers, ws).await {
        Ok((ready, ws)) => {
            let max = app.settings.max_message_bytes;
            let tracker_token = app.sessions.token();
            ws.read_buffer_size(READ_BUFFER_BYTES)
                .write_buffer_size(0)
                .max_message_size(max)
                .max_frame_size(max)
                .on_upgrade(move |socket| async move {
                    connection::run(socket, app, ready).await;
                    drop(tracker_token);
                })
        }
        Err(error) => error.into_response(),
    }
}

/// What the checks before the upgrade established.
pub struct Accepted {
    pub session: Arc<str>,
    pub conn_id: u64,
    /// This socket's writer token for its session (see [`crate::counter`]).
    pub token: String,
    pub claim: Claim,
    /// Who the socket is (the token's `sub`, or in development `user` or the anonymous id),
    /// which rooms it may join and when its token expires.
    pub identity: Identity,
    /// `since` and `epoch` on the URL: recover the broadcasts after this offset.
    pub since: Option<(u64, String)>,
    pub slot: crate::state::ConnectionSlot,
    /// `x-request-id` of the upgrade request (set by nginx or by our request-id layer).
    pub request_id: String,
}

/// The checks, in the order docs/PROTOCOL.md lists them. Redis comes last, and only for a real
/// upgrade: the claim fences the session's older sockets, which a stray GET must not do.
async fn prepare(
    app: &SharedState,
    params: &[(String, String)],
    headers: &HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<(Accepted, WebSocketUpgrade), ApiError> {
    if app.is_draining() {
        app.metrics.rejected("draining");
        return Err(ApiError::Unavailable("draining".into()));
    }
    check_origin(app, headers)?;
    let session = session_param(params).inspect_err(|_| app.metrics.rejected("bad_session"))?;
    let last_count =
        last_count_param(params).inspect_err(|_| app.metrics.rejected("bad_session"))?;
    let since = since_param(params).inspect_err(|_| app.metrics.rejected("bad_session"))?;
    // Before anything is reserved or asked of Redis: a caller without a valid token costs a
    // signature check and nothing else.
    let identity = identity::identify(app.settings.auth.as_ref(), params, headers, &session)
        .map_err(|error| match error {
            IdentityError::Token(error) => {
                app.metrics.rejected("unauthorized");
                ApiError::BadToken(error)
            }
            IdentityError::BadUser => {
                app.metrics.rejected("bad_session");
                ApiError::BadRequest(error.to_string())
            }
        })?;
    let slot = app.try_reserve_slot().ok_or_else(|| {
        app.metrics.rejected("capacity");
        crate::warn_throttled!(
            max_connections = app.max_connections,
            "connection limit reached; refusing upgrades (raise MAX_CONNECTIONS and the open-file limit, or add instances)"
        );
        ApiError::Unavailable("at capacity".into())
    })?;
    let ws = ws.map_err(|rejection| {
        app.metrics.rejected("not_websocket");
        ApiError::BadRequest(format!(
            "not a WebSocket upgrade: {}",
            rejection.body_text()
        ))
    })?;
    let conn_id = app.next_conn_id();
    let token = app.writer_token(conn_id);
    let claim = app
        .counter
        .claim(&session, &token, last_count, identity.owner())
        .await
        .map_err(|error| match error {
            ClaimError::NotOwner => {
                app.metrics.rejected("forbidden");
                ApiError::Forbidden("the session belongs to another user".into())
            }
            ClaimError::Store(error) => {
                app.metrics.rejected("redis_unavailable");
                crate::warn_throttled!(%error, "refusing upgrade: redis unavailable");
                ApiError::Unavailable("redis unavailable".into())
            }
        })?;
    let accepted = Accepted {
        session: session.into(),
        conn_id,
        token,
        claim,
        identity,
        since,
        slot,
        request_id: headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
    };
    Ok((accepted, ws))
}

/// `last_count`: the last count a resuming client was told; the session continues at least
/// from it. Absent or empty: 0.
fn last_count_param(params: &[(String, String)]) -> Result<u64, ApiError> {
    match params
        .iter()
        .find(|(k, v)| k == "last_count" && !v.is_empty())
    {
        None => Ok(0),
        Some((_, v)) => v.parse().map_err(|_| {
            ApiError::BadRequest(format!(
                "invalid last_count: {v:?} is not a whole number from 0 to {}",
                u64::MAX
            ))
        }),
    }
}

/// `since` and `epoch`: the last broadcast offset a resuming client saw, and its epoch; both or
/// neither.
fn since_param(params: &[(String, String)]) -> Result<Option<(u64, String)>, ApiError> {
    let find = |name: &str| {
        params
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    };
    match (find("since"), find("epoch")) {
        (None, None) => Ok(None),
        (Some(since), Some(epoch)) if epoch.len() <= 64 => match since.parse() {
            Ok(since) => Ok(Some((since, epoch.to_string()))),
            Err(_) => Err(ApiError::BadRequest(format!(
                "invalid since: {since:?} is not a whole number"
            ))),
        },
        _ => Err(ApiError::BadRequest(
            "since and epoch go together (an offset and the epoch of 1-64 characters it was seen in)"
                .into(),
        )),
    }
}

/// `session_uuid` (or its alias `session_id`): absent or empty makes a new UUIDv4.
fn session_param(params: &[(String, String)]) -> Result<String, ApiError> {
    let given = ["session_uuid", "session_id"].iter().find_map(|name| {
        params
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    });
    match given {
        None => Ok(uuid::Uuid::new_v4().to_string()),
        Some(id) => {
            validate_session_id(id)
                .map_err(|e| ApiError::BadRequest(format!("invalid session_uuid: {e}")))?;
            Ok(id.to_string())
        }
    }
}

fn check_origin(app: &SharedState, headers: &HeaderMap) -> Result<(), ApiError> {
    let allowed = &app.settings.allowed_origins;
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    if allowed.is_empty() {
        return Ok(());
    }
    let origin = origin.to_str().unwrap_or("").trim_end_matches('/');
    if allowed.iter().any(|a| a == origin || a == "*") {
        Ok(())
    } else {
        app.metrics.rejected("origin");
        Err(ApiError::Forbidden("origin not allowed".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_session_comes_from_session_uuid_then_session_id_else_a_new_uuid() {
        assert_eq!(
            session_param(&params(&[("session_uuid", "a")])).unwrap(),
            "a"
        );
        assert_eq!(session_param(&params(&[("session_id", "b")])).unwrap(), "b");
        assert_eq!(
            session_param(&params(&[("session_id", "b"), ("session_uuid", "a")])).unwrap(),
            "a"
        );
        for empty in [params(&[]), params(&[("session_uuid", "")])] {
            let made = session_param(&empty).unwrap();
            assert!(uuid::Uuid::parse_str(&made).is_ok(), "{made}");
        }
        assert!(session_param(&params(&[("session_uuid", "bad id")])).is_err());
    }

    #[test]
    fn last_count_is_a_whole_number_and_defaults_to_zero() {
        assert_eq!(last_count_param(&params(&[])).unwrap(), 0);
        assert_eq!(last_count_param(&params(&[("last_count", "")])).unwrap(), 0);
        assert_eq!(
            last_count_param(&params(&[("last_count", "42")])).unwrap(),
            42
        );
        for bad in ["-1", "1.5", "x", "18446744073709551616"] {
            assert!(
                last_count_param(&params(&[("last_count", bad)])).is_err(),
                "{bad}"
            );
        }
    }
}
