//! The HTTP server: `/metrics`, `/healthz`, `/readyz`, `/api/*` and the web view at `/ui`.
//!
//! Served by `run` (live) and by `serve` (over a store written earlier). `/metrics`, `/healthz`
//! and `/readyz` are always open for scrapers and probes. When the listen address is not a
//! loopback address, `/api/*` requires `Authorization: Bearer <token>` (`[server] token` or
//! `PARITY_API_TOKEN`); the server refuses to start off loopback without a token.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::cli::{Failure, ServeCmd, EXIT_ERROR, EXIT_OK};
use crate::metrics::Metrics;
use crate::summary::Summary;

/// What the handlers read.
pub struct ServerState {
    /// Metrics to render.
    pub metrics: Arc<Metrics>,
    /// The live summary (absent when serving a store only).
    pub summary: Option<Arc<Mutex<Summary>>>,
    /// Ready once capture is attached.
    pub ready: AtomicBool,
    /// Bearer token for `/api/*`, when required.
    pub token: Option<String>,
    /// The diff store's read side, when there is a store.
    pub store: Option<crate::store::StoreReader>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Off loopback without a token.
    #[error("[server] listen = {0} is not a loopback address: set [server] token or PARITY_API_TOKEN so /api/* is not open to the network")]
    TokenRequired(SocketAddr),
    /// Binding failed.
    #[error(
        "cannot listen on {addr}: {source} (is another process using it? change [server] listen)"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// Decide whether `/api/*` needs a token at `listen`: `Ok(None)` on loopback without one.
pub fn api_token(listen: SocketAddr, token: Option<String>) -> Result<Option<String>, ServerError> {
    match token {
        Some(t) if !t.is_empty() => Ok(Some(t)),
        _ if listen.ip().is_loopback() => Ok(None),
        _ => Err(ServerError::TokenRequired(listen)),
    }
}

/// Bind `listen` and serve until the returned task is aborted or the runtime stops.
pub async fn start(
    listen: SocketAddr,
    state: Arc<ServerState>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), ServerError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: listen,
            source,
        })?;
    let local = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: listen,
        source,
    })?;
    let app = router(state);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("HTTP server on {local} stopped: {e}");
        }
    });
    tracing::info!("serving /metrics, /api and /ui on http://{local}");
    Ok((local, task))
}

/// The routes.
pub fn router(state: Arc<ServerState>) -> Router {
    let api = crate::api::routes()
        .route("/api/summary", get(summary))
        .layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(crate::ui::routes())
        .merge(api)
        .with_state(state)
}

async fn metrics(State(s): State<Arc<ServerState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

async fn readyz(State(s): State<Arc<ServerState>>) -> Response {
    if s.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: capture is not attached yet\n",
        )
            .into_response()
    }
}

/// The summary: the live one under `run`, the store's latest under `serve`.
async fn summary(State(s): State<Arc<ServerState>>) -> Response {
    use crate::api::error;
    if let Some(sum) = &s.summary {
        let report = match sum.lock() {
            Ok(g) => g.report(),
            Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "summary unavailable"),
        };
        return ([(header::CACHE_CONTROL, "no-store")], axum::Json(report)).into_response();
    }
    let Some(store) = s.store.clone() else {
        return error(
            StatusCode::NOT_FOUND,
            "no summary: neither live capture nor a store",
        );
    };
    match tokio::task::spawn_blocking(move || store.summary()).await {
        Ok(Ok(Some(v))) => ([(header::CACHE_CONTROL, "no-store")], axum::Json(v)).into_response(),
        Ok(Ok(None)) => error(
            StatusCode::NOT_FOUND,
            "no summary stored yet: a replay stores one when it ends, run every 10 s",
        ),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "the query panicked"),
    }
}

async fn require_token(
    State(s): State<Arc<ServerState>>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    let Some(expected) = &s.token else {
        return next.run(req).await;
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if given.is_some_and(|g| constant_time_eq(g.as_bytes(), expected.as_bytes())) {
        next.run(req).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a bearer token is required for /api/* on this address\n",
        )
            .into_response()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `parity-agent serve --db PATH`.
pub fn cmd_serve(c: ServeCmd) -> Result<i32, Failure> {
    let token = c
        .token
        .clone()
        .or_else(|| std::env::var("PARITY_API_TOKEN").ok());
    let token = api_token(c.listen, token)?;
    let store = crate::store::StoreReader::open(&c.db)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let state = Arc::new(ServerState {
            metrics: Arc::new(Metrics::new()),
            summary: None,
            ready: AtomicBool::new(true),
            token,
            store: Some(store),
        });
        let (local, task) = start(c.listen, state).await?;
        eprintln!(
            "serving {} on http://{local}/ui (Ctrl-C to stop)",
            c.db.display()
        );
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = task => {}
        }
        Ok::<i32, Failure>(EXIT_OK)
    })
    .map_err(|f| Failure {
        code: EXIT_ERROR,
        message: f.message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_required_off_loopback_only() {
        assert!(api_token("127.0.0.1:1".parse().unwrap(), None)
            .unwrap()
            .is_none());
        assert!(api_token("[::1]:1".parse().unwrap(), None)
            .unwrap()
            .is_none());
        assert!(api_token("0.0.0.0:1".parse().unwrap(), None).is_err());
        assert_eq!(
            api_token("0.0.0.0:1".parse().unwrap(), Some("t".into())).unwrap(),
            Some("t".into())
        );
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
