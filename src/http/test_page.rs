//! `GET /test/`: the page to try the socket by hand, built on the reference JavaScript client.
//! The client's ES modules are served from the binary as they are in `clients/js/src` (one
//! source of truth, no build step): the page imports `/test/wsfleet.js` (the client's
//! `index.js`), whose relative imports (`./counter.js`, …) resolve to the files beside it.

use axum::{
    extract::Path,
    http::header,
    response::{Html, IntoResponse, Redirect, Response},
    routing::get,
    Router,
};

use super::ApiError;
use crate::state::SharedState;

const PAGE: &str = include_str!("test_page.html");

/// Every module of the client, by the name it is served under in `/test/`. A module missing
/// here fails the page's import; `tests/api/http.rs` follows every import from `wsfleet.js`.
pub const LIBRARY: &[(&str, &str)] = &[
    ("wsfleet.js", include_str!("../../clients/js/src/index.js")),
    (
        "counter.js",
        include_str!("../../clients/js/src/counter.js"),
    ),
    (
        "connection.js",
        include_str!("../../clients/js/src/connection.js"),
    ),
    ("cursor.js", include_str!("../../clients/js/src/cursor.js")),
    (
        "emitter.js",
        include_str!("../../clients/js/src/emitter.js"),
    ),
    ("rooms.js", include_str!("../../clients/js/src/rooms.js")),
    (
        "roomset.js",
        include_str!("../../clients/js/src/roomset.js"),
    ),
];

/// The page, its redirect and the client's modules.
pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/test/", get(|| async { Html(PAGE) }))
        .route("/test", get(|| async { Redirect::permanent("/test/") }))
        .route("/test/{module}", get(module))
}

async fn module(Path(name): Path<String>) -> Response {
    match LIBRARY.iter().find(|(served, _)| *served == name) {
        Some((_, source)) => (
            [
                (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
                // Revalidated on every load: after a promotion the page gets the new build's client.
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *source,
        )
            .into_response(),
        None => ApiError::NotFound.into_response(),
    }
}
