//! `GET /rooms/{room}`: a room as operators see it (same bearer token as `/broadcast`).

use axum::{
    extract::{Path, State},
    http::HeaderMap,
    Json,
};
use serde::Serialize;
use utoipa::ToSchema;

use super::{broadcast::authorize, ApiError};
use crate::{error::ErrorBody, protocol::rooms::is_room_name, state::SharedState};

/// A room: its members (sessions) and users, and where its publication stream stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoomView {
    pub room: String,
    /// Sessions in the room, fleet-wide.
    pub members: u64,
    /// Their public user ids, deduplicated and sorted.
    pub users: Vec<String>,
    /// The latest publication's offset; 0 when none.
    pub offset: u64,
    pub epoch: String,
}

/// A room's members and stream position.
#[utoipa::path(
    get,
    path = "/rooms/{room}",
    tag = "rooms",
    params(("room" = String, Path, description = "1-64 of `[A-Za-z0-9_.:-]`")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The room", body = RoomView),
        (status = 400, description = "Not a room name", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody,
            headers(("www-authenticate" = String, description = "`Bearer`"))),
        (status = 403, description = "No `BROADCAST_TOKEN` is configured", body = ErrorBody),
        (status = 503, description = "Redis is unavailable", body = ErrorBody),
    ),
)]
pub async fn show(
    State(app): State<SharedState>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Result<Json<RoomView>, ApiError> {
    authorize(&app, &headers)?;
    if !is_room_name(&room) {
        return Err(ApiError::BadRequest(
            "room names are 1-64 characters of A-Z, a-z, 0-9, '_', '.', ':' and '-'".into(),
        ));
    }
    let info = app.rooms.info(&room).await.map_err(|error| {
        tracing::warn!(%error, "room not read");
        ApiError::Unavailable("redis unavailable".into())
    })?;
    Ok(Json(RoomView {
        room,
        members: info.members,
        users: info.users,
        offset: info.offset,
        epoch: info.epoch,
    }))
}
