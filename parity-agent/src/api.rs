//! `/api/*`: the JSON the web view reads, over the diff store (and the live summary under
//! `run`). Documented route by route in docs/API.md.
//!
//! Every handler is a bounded query: lists return at most [`MAX_LIMIT`] rows and page with
//! `before`; a record carries at most 1000 differences and bodies of at most `max_body_bytes`.
//! Queries run on the blocking pool, never on the async workers. Everything served was masked
//! when it was stored. Errors are JSON: `{"error": "..."}` with a 4xx or 5xx status. The bearer
//! token check (off loopback) is the server's middleware, not this module's.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::server::ServerState;
use crate::store::{RecordQuery, StoreError, StoreReader, MAX_LIMIT};

/// Records per page when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 50;

/// The `/api/*` routes backed by the store (`/api/summary` is the server's: it is live under
/// `run`).
pub fn routes() -> Router<Arc<ServerState>> {
    Router::new()
        .route("/api/records", get(records))
        .route("/api/records/{id}", get(record))
        .route("/api/fields", get(fields))
        .route("/api/endpoints", get(endpoints))
        .route("/api/store", get(store))
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

/// A JSON error response.
pub fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        Json(ErrorBody { error: message }),
    )
        .into_response()
}

fn ok<T: Serialize>(v: T) -> Response {
    ([(header::CACHE_CONTROL, "no-store")], Json(v)).into_response()
}

fn no_store() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no diff store: configure [store] (run) or start `parity-agent serve --db PATH`",
    )
}

/// Run a store query on the blocking pool.
async fn query<T, F>(s: &ServerState, f: F) -> Response
where
    T: Serialize + Send + 'static,
    F: FnOnce(&StoreReader) -> Result<T, StoreError> + Send + 'static,
{
    let Some(reader) = s.store.clone() else {
        return no_store();
    };
    match tokio::task::spawn_blocking(move || f(&reader)).await {
        Ok(Ok(v)) => ok(v),
        Ok(Err(e)) => {
            tracing::warn!("API query failed: {e}");
            error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())
        }
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "the query panicked"),
    }
}

/// Parameters of `/api/records`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordsParams {
    /// Pair name.
    pub pair: Option<String>,
    /// Endpoint label.
    pub endpoint: Option<String>,
    /// Capture time lower bound: Unix seconds, or a duration back from now (`1h`, `30m`).
    pub since: Option<String>,
    /// Capture time upper bound (exclusive), same forms.
    pub until: Option<String>,
    /// Collapsed difference path (`$.items[*].price`).
    pub path: Option<String>,
    /// Difference kind.
    pub kind: Option<String>,
    /// `true`: diverged only; `false`: matched pairs kept for contrast only.
    pub diverged: Option<bool>,
    /// Records with an id below this (the previous page's `next_before`).
    pub before: Option<i64>,
    /// Page size, 1 to 1000 (default 50).
    pub limit: Option<usize>,
}

/// A time bound: Unix seconds, or a duration before `now_ns`.
fn time_bound(v: &str, now_ns: i64) -> Result<i64, String> {
    if let Ok(secs) = v.trim().parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok((secs * 1e9) as i64);
        }
    }
    let d: crate::units::Dur = v
        .trim()
        .parse()
        .map_err(|_| format!("{v:?} is neither Unix seconds nor a duration such as 1h or 30m"))?;
    Ok(now_ns.saturating_sub(i64::try_from(d.as_nanos_u64()).unwrap_or(i64::MAX)))
}

fn now_ns() -> i64 {
    (crate::store::writer::system_clock())()
}

#[derive(Serialize)]
struct RecordsPage {
    records: Vec<crate::store::RecordSummary>,
    next_before: Option<i64>,
}

async fn records(
    State(s): State<Arc<ServerState>>,
    params: Result<Query<RecordsParams>, QueryRejection>,
) -> Response {
    let Query(p) = match params {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.body_text()),
    };
    let now = now_ns();
    let bound = |v: &Option<String>| v.as_deref().map(|v| time_bound(v, now)).transpose();
    let (since_ns, until_ns) = match (bound(&p.since), bound(&p.until)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let limit = p.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("limit must be from 1 to {MAX_LIMIT}"),
        );
    }
    let q = RecordQuery {
        pair: p.pair,
        endpoint: p.endpoint,
        since_ns,
        until_ns,
        pattern: p.path,
        kind: p.kind,
        diverged: p.diverged,
        before_id: p.before,
        limit,
    };
    query(&s, move |r| {
        let records = r.list(&q)?;
        let next_before = (records.len() == limit)
            .then(|| records.last().map(|x| x.id))
            .flatten();
        Ok(RecordsPage {
            records,
            next_before,
        })
    })
    .await
}

async fn record(State(s): State<Arc<ServerState>>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return error(StatusCode::BAD_REQUEST, "a record id is a number");
    };
    let Some(reader) = s.store.clone() else {
        return no_store();
    };
    match tokio::task::spawn_blocking(move || reader.get(id)).await {
        Ok(Ok(Some(r))) => ok(r),
        Ok(Ok(None)) => error(
            StatusCode::NOT_FOUND,
            &format!("no record {id} (deleted by retention, or never stored)"),
        ),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "the query panicked"),
    }
}

/// Parameters of `/api/fields`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldsParams {
    /// Pair name.
    pub pair: Option<String>,
    /// Endpoint label.
    pub endpoint: Option<String>,
}

async fn fields(
    State(s): State<Arc<ServerState>>,
    params: Result<Query<FieldsParams>, QueryRejection>,
) -> Response {
    let Query(p) = match params {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.body_text()),
    };
    query(&s, move |r| {
        r.fields(p.pair.as_deref(), p.endpoint.as_deref())
    })
    .await
}

async fn endpoints(State(s): State<Arc<ServerState>>) -> Response {
    query(&s, |r| r.endpoints()).await
}

async fn store(State(s): State<Arc<ServerState>>) -> Response {
    query(&s, |r| r.info()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_bounds_take_seconds_or_a_duration_back() {
        let now = 10_000_000_000_000;
        assert_eq!(
            time_bound("1764000000.5", now),
            Ok(1_764_000_000_500_000_000)
        );
        assert_eq!(time_bound("1h", now), Ok(now - 3_600_000_000_000));
        assert_eq!(time_bound("30m", now), Ok(now - 1_800_000_000_000));
        assert!(time_bound("yesterday", now).is_err());
        assert!(time_bound("-5", now).is_err());
    }
}
