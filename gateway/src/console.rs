//! The operator console at `/console`: static files built into the gateway, served from the
//! API's origin, that call the public API with the staff member's own tokens (so every role
//! check still happens where it always does). Nothing is loaded from anywhere else, and the
//! Content-Security-Policy says so.

use axum::Router;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue};
use axum::response::IntoResponse;
use axum::routing::get;

/// Scripts, styles, images and API calls from this origin only; no plugins, no framing, no
/// `<base>` rewriting, forms post here only.
pub const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

const FILES: [(&str, &str, &str); 7] = [
    (
        "/console",
        "text/html; charset=utf-8",
        include_str!("../console/index.html"),
    ),
    (
        "/console/app.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/app.js"),
    ),
    (
        "/console/ui.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/ui.js"),
    ),
    (
        "/console/overview.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/overview.js"),
    ),
    (
        "/console/events.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/events.js"),
    ),
    (
        "/console/players.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/players.js"),
    ),
    (
        "/console/app.css",
        "text/css; charset=utf-8",
        include_str!("../console/app.css"),
    ),
];

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    FILES
        .iter()
        .fold(Router::new(), |router, &(path, content_type, body)| {
            router.route(path, get(move || async move { file(content_type, body) }))
        })
}

fn file(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    let headers: [(HeaderName, HeaderValue); 5] = [
        (CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY)),
        (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            HeaderName::from_static("x-content-type-options"),
            HeaderValue::from_static("nosniff"),
        ),
        (
            HeaderName::from_static("referrer-policy"),
            HeaderValue::from_static("no-referrer"),
        ),
    ];
    (headers, body)
}
