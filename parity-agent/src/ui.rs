//! The web view at `/ui`: one page, one script and one style sheet, embedded in the binary.
//!
//! The page is static; it reads everything from `/api/*` (hash routing: `#/`,
//! `#/pair/P/endpoint/E`, `#/record/ID`, `#/records`, `#/store`), so it works offline, needs no
//! CDN and no build step. It loads without a token; when `/api/*` answers 401 it asks for the
//! token and keeps it in the tab's `sessionStorage`, sending it as `Authorization: Bearer`. The
//! content security policy allows only these same-origin assets, so stored text can never run
//! as script even if a bug inserted it as HTML.

use std::sync::Arc;

use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use crate::server::ServerState;

/// The page.
pub const INDEX_HTML: &str = include_str!("ui/index.html");
/// The script.
pub const APP_JS: &str = include_str!("ui/app.js");
/// The style sheet.
pub const STYLE_CSS: &str = include_str!("ui/style.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `/`, `/ui`, `/ui/` and the two assets.
pub fn routes() -> Router<Arc<ServerState>> {
    Router::new()
        .route("/", get(|| async { Redirect::temporary("/ui/") }))
        .route("/ui", get(index))
        .route("/ui/", get(index))
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/ui/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_are_self_contained() {
        for (name, text) in [
            ("index.html", INDEX_HTML),
            ("app.js", APP_JS),
            ("style.css", STYLE_CSS),
        ] {
            for external in ["http://", "https://", "//cdn", "@import"] {
                assert!(!text.contains(external), "{name} refers to {external}");
            }
        }
        assert!(INDEX_HTML.contains("/ui/app.js") && INDEX_HTML.contains("/ui/style.css"));
        assert!(
            !APP_JS.contains("innerHTML"),
            "text is inserted as text only"
        );
        assert!(APP_JS.contains("sessionStorage") && APP_JS.contains("'Bearer '"));
    }
}
