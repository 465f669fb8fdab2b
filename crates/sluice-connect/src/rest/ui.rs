//! The worker's status page, served by the REST listener:
//!
//! - `GET /ui` (and `GET /` from a browser, one whose `Accept` names
//!   `text/html`): the page, with its script and styles under `/ui/`;
//! - `GET /sluice/history[?since=<ms>]`: the points of the worker's
//!   [`History`](crate::runtime::history::History) taken after `since`
//!   (milliseconds since the Unix epoch), or all of them, as
//!   `{"interval_ms", "capacity", "points": [{"t", "connectors": {..}}]}`.
//!
//! The assets are compiled into the binary: the page needs no network
//! access beyond the worker. It reads the REST API and calls its pause,
//! resume and restart endpoints, from the same origin, so the API's basic
//! authentication applies to the page as to every other client.

use axum::extract::{RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::{bad_request, query_values, ApiError, ApiResult, Shared};

const INDEX_HTML: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const STYLE_CSS: &str = include_str!("ui/style.css");

/// Only the page's own files: no inline scripts, nothing from elsewhere, no
/// framing by other sites.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The page's routes, to merge into the REST API's router.
pub(super) fn routes() -> Router<std::sync::Arc<super::AppState>> {
    Router::new()
        .route("/ui", get(page))
        .route("/ui/app.js", get(script))
        .route("/ui/style.css", get(styles))
        .route("/sluice/history", get(history))
}

/// Whether a `GET /` comes from a browser navigating to the worker (which
/// then gets the page) rather than from a Kafka Connect client (which gets
/// the version JSON Kafka Connect answers there).
pub(super) fn wants_page(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| {
            accept
                .split(',')
                .any(|t| t.split(';').next().unwrap_or("").trim() == "text/html")
        })
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            // The assets change with the binary; a worker upgraded in place
            // must not be shown with the old script.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response()
}

/// The page itself.
pub(super) async fn page() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn styles() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

async fn history(State(state): Shared, RawQuery(query): RawQuery) -> ApiResult {
    let since = match query_values(&query, "since").last() {
        None => None,
        Some(v) => Some(v.parse::<i64>().map_err(|_| {
            bad_request(format!(
                "query parameter since={v}: expected milliseconds since the Unix epoch (the \"t\" of the last point you have), e.g. since=1700000000000"
            ))
        })?),
    };
    Ok(Json(state.history.view(since)).into_response())
}

/// Whether a browser sent this request for a page of another origin.
fn from_another_origin(headers: &HeaderMap) -> bool {
    // Browsers say where a request comes from in Sec-Fetch-Site; it holds
    // behind a proxy that rewrites Host. Without it, Origin must name the
    // host the request was sent to.
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return site != "same-origin" && site != "none";
    }
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match (origin, host) {
        (None, _) => false,
        // Opaque origins (sandboxed frames, file: pages) are never ours.
        (Some("null"), _) | (Some(_), None) => true,
        (Some(o), Some(h)) => o
            .split_once("://")
            .is_none_or(|(_, authority)| authority != h),
    }
}

/// Refuses requests that change something when a browser says they come
/// from another site's page: a browser signed in to the worker (basic auth)
/// would otherwise let any page it visits pause or restart connectors with
/// a plain form post. Clients that are not browsers send no `Origin`.
pub(super) async fn same_origin_changes(req: Request, next: Next) -> Response {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if safe {
        return next.run(req).await;
    }
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    let foreign = from_another_origin(req.headers());
    if foreign {
        return ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "{} {}: refused a change requested by a page of another origin ({}); use the worker's own status page or a non-browser client",
                req.method(),
                req.uri().path(),
                origin.unwrap_or("unknown"),
            ),
        )
        .into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).expect("header"));
        h
    }

    #[test]
    fn browsers_get_the_page_and_clients_the_json() {
        assert!(wants_page(&accept(
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        )));
        assert!(!wants_page(&accept("application/json")));
        assert!(!wants_page(&accept("*/*")));
        assert!(!wants_page(&HeaderMap::new()));
    }

    #[test]
    fn changes_from_other_origins_are_told_apart() {
        let h = |pairs: &[(&'static str, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, HeaderValue::from_str(v).expect("header"));
            }
            m
        };
        // curl and Kafka Connect clients send neither header.
        assert!(!from_another_origin(&h(&[("host", "w:8083")])));
        assert!(!from_another_origin(&h(&[
            ("host", "w:8083"),
            ("origin", "http://w:8083")
        ])));
        assert!(from_another_origin(&h(&[
            ("host", "w:8083"),
            ("origin", "http://evil.example")
        ])));
        assert!(from_another_origin(&h(&[
            ("host", "w:8083"),
            ("origin", "null")
        ])));
        // Sec-Fetch-Site decides when present, whatever Host a proxy set.
        assert!(!from_another_origin(&h(&[
            ("host", "backend:8083"),
            ("origin", "https://connect.example"),
            ("sec-fetch-site", "same-origin")
        ])));
        assert!(from_another_origin(&h(&[
            ("host", "w:8083"),
            ("origin", "http://w:8083"),
            ("sec-fetch-site", "cross-site")
        ])));
    }

    #[test]
    fn assets_are_the_pages_own() {
        // The page loads its script and styles relative to itself.
        assert!(INDEX_HTML.contains("src=\"ui/app.js\""));
        assert!(INDEX_HTML.contains("href=\"ui/style.css\""));
        // Nothing is fetched from elsewhere.
        for asset in [INDEX_HTML, APP_JS, STYLE_CSS] {
            assert!(!asset.contains("https://"), "an external resource");
            assert!(!asset.contains("//cdn"), "an external resource");
        }
        assert!(APP_JS.contains("sluice/history"));
    }
}
