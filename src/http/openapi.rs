//! The documented HTTP API and its OpenAPI 3.1 document, served at `GET /openapi.json`.
//!
//! [`api`] is the one list of the API's paths: each handler is routed and documented by the
//! same line (utoipa-axum's `routes!`), from its own `#[utoipa::path]` and response types, so
//! the document cannot drift from the router. A new endpoint is one more `.routes(…)` here.
//! The WebSocket upgrade and the `/test/` page are routed in [`super::app`], outside the
//! document.

use std::sync::LazyLock;

use axum::{http::header, response::IntoResponse};
use utoipa::{
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    Modify, OpenApi,
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{broadcast, health, rooms, status};
use crate::state::SharedState;

/// What the derive cannot say: the title and version come from Cargo.toml; the paths from
/// [`api`].
#[derive(OpenApi)]
#[openapi(
    info(description = "The HTTP API of one wsfleet instance: probes, status, metrics, the \
        operators' broadcast and rooms. The WebSocket protocol is described in docs/PROTOCOL.md."),
    components(schemas(crate::error::ErrorBody)),
    modifiers(&BearerToken),
    tags(
        (name = "probes", description = "Liveness and readiness"),
        (name = "fleet", description = "This instance and its fleet"),
        (name = "broadcast", description = "Operator messages to the fleet, a room or a session"),
        (name = "rooms", description = "Rooms as operators see them"),
        (name = "meta", description = "This document"),
    ),
)]
struct ApiDoc;

/// The `bearer` security scheme the operator endpoints require (`BROADCAST_TOKEN`).
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The `BROADCAST_TOKEN` of the instance"))
                    .build(),
            ),
        );
    }
}

/// Every documented route, with its handler. Merged into the application router by
/// [`super::app`], which adds the layers and the state.
pub fn api() -> OpenApiRouter<SharedState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(status::status))
        .routes(routes!(status::metrics))
        .routes(routes!(broadcast::publish))
        .routes(routes!(rooms::show))
        .routes(routes!(openapi_json))
}

/// The document, made once at the first request: it is the same for the life of the process.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    api()
        .into_openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serializes")
});

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API",
        body = Object, content_type = "application/json")),
)]
pub async fn openapi_json() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
}
