//! The reading side: the queries behind `diffs`, `/api/*` and the web view.
//!
//! A [`StoreReader`] holds one `query_only` connection (behind a mutex: callers on the async
//! server run it on the blocking pool). Every list is bounded ([`MAX_LIMIT`] rows); a record
//! holds at most 1000 differences (the comparison's own cap) and bodies of at most
//! `max_body_bytes`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};
use serde::Serialize;

use super::record::{
    DiffRecord, DifferenceView, ExchangeView, FieldCount, RecordSummary, LIST_DIFFERENCES,
};
use super::schema::{self, SCHEMA_VERSION};
use super::writer::{wal_path, StoreCounts, StoreStats};
use super::StoreError;

/// Most rows any list returns.
pub const MAX_LIMIT: usize = 1000;

/// Filters of a record list. Every filter is optional; `limit` is capped at [`MAX_LIMIT`].
#[derive(Clone, Debug, Default)]
pub struct RecordQuery {
    /// Only this pair.
    pub pair: Option<String>,
    /// Only this endpoint label.
    pub endpoint: Option<String>,
    /// Capture time at or after, ns since the epoch.
    pub since_ns: Option<i64>,
    /// Capture time before, ns since the epoch.
    pub until_ns: Option<i64>,
    /// Only records with a difference at this collapsed path (`$.items[*].price`).
    pub pattern: Option<String>,
    /// Only records with a difference of this kind (with `pattern`: of this kind there).
    pub kind: Option<String>,
    /// Only diverged (`true`) or matched (`false`) records.
    pub diverged: Option<bool>,
    /// Only records with an id below this (the next page of a list).
    pub before_id: Option<i64>,
    /// At most this many records (newest first).
    pub limit: usize,
}

/// Records stored per pair and endpoint (`/api/endpoints`): the overview when no summary was
/// stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EndpointCount {
    /// Pair name.
    pub pair: String,
    /// Endpoint label.
    pub endpoint: String,
    /// Records stored.
    pub records: u64,
    /// Of which diverged.
    pub diverged: u64,
}

/// One run that wrote to the store.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunInfo {
    /// Run id.
    pub id: i64,
    /// `replay` or `run`.
    pub command: String,
    /// What it processed.
    pub label: String,
    /// Start, Unix seconds (wall clock).
    pub started: f64,
    /// End, Unix seconds; `null` while running (or after a crash).
    pub ended: Option<f64>,
    /// Values were masked.
    pub masked: bool,
    /// Records of this run still stored.
    pub records: u64,
    /// A summary report was stored.
    pub has_summary: bool,
}

/// The store itself (`/api/store`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StoreInfo {
    /// Database file.
    pub path: String,
    /// Schema version.
    pub schema_version: i64,
    /// Size of the database file, bytes.
    pub database_bytes: u64,
    /// Size of its WAL, bytes.
    pub wal_bytes: u64,
    /// Records stored.
    pub records: u64,
    /// Of which diverged.
    pub diverged: u64,
    /// Capture time of the oldest record, Unix seconds.
    pub oldest: Option<f64>,
    /// Capture time of the newest record, Unix seconds.
    pub newest: Option<f64>,
    /// The latest runs, newest first (at most 20).
    pub runs: Vec<RunInfo>,
    /// The writer's counters, when this process is writing (`run`).
    pub writer: Option<StoreCounts>,
}

/// Reads a store.
#[derive(Clone)]
pub struct StoreReader {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
    writer: Option<Arc<StoreStats>>,
}

impl std::fmt::Debug for StoreReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreReader")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn secs(ns: i64) -> f64 {
    ns as f64 / 1e9
}

impl StoreReader {
    /// Open an existing store (migrating it once when it is older than this build).
    pub fn open(path: &Path) -> Result<StoreReader, StoreError> {
        let conn = schema::open_readable(path, schema::DEFAULT_BUSY_TIMEOUT)?;
        Ok(StoreReader {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_path_buf(),
            writer: None,
        })
    }

    pub(crate) fn with_writer_stats(mut self, stats: Arc<StoreStats>) -> StoreReader {
        self.writer = Some(stats);
        self
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        self.conn.lock().map_err(|_| StoreError::Poisoned {
            path: self.path.clone(),
        })
    }

    fn sql(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        move |source| StoreError::Sql {
            path: self.path.clone(),
            source,
        }
    }

    /// The latest stored summary report (the JSON of [`crate::summary::Report`]), `None` when
    /// no run stored one.
    pub fn summary(&self) -> Result<Option<serde_json::Value>, StoreError> {
        let c = self.lock()?;
        let text: Option<String> = c
            .query_row(
                "SELECT summary FROM runs WHERE summary IS NOT NULL ORDER BY summary_ns DESC, id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.sql())?;
        match text {
            None => Ok(None),
            Some(t) => serde_json::from_str(&t)
                .map(Some)
                .map_err(|e| StoreError::Corrupt {
                    path: self.path.clone(),
                    what: format!("the stored summary is not JSON: {e}"),
                }),
        }
    }

    /// Records matching `q`, newest first, with their first differences.
    pub fn list(&self, q: &RecordQuery) -> Result<Vec<RecordSummary>, StoreError> {
        let mut sql = String::from(
            "SELECT id, run_id, ts_ns, pair, endpoint, correlation_id, method, uri, primary_status,
             mirror_status, primary_latency_ns, mirror_latency_ns, diverged, difference_count, kinds
             FROM records r WHERE 1 = 1",
        );
        let mut args: Vec<SqlValue> = Vec::new();
        let mut filter = |cond: &str, v: SqlValue| {
            sql.push_str(" AND ");
            sql.push_str(cond);
            args.push(v);
        };
        if let Some(p) = &q.pair {
            filter("pair = ?", SqlValue::Text(p.clone()));
        }
        if let Some(e) = &q.endpoint {
            filter("endpoint = ?", SqlValue::Text(e.clone()));
        }
        if let Some(t) = q.since_ns {
            filter("ts_ns >= ?", SqlValue::Integer(t));
        }
        if let Some(t) = q.until_ns {
            filter("ts_ns < ?", SqlValue::Integer(t));
        }
        if let Some(d) = q.diverged {
            filter("diverged = ?", SqlValue::Integer(i64::from(d)));
        }
        if let Some(b) = q.before_id {
            filter("id < ?", SqlValue::Integer(b));
        }
        match (&q.pattern, &q.kind) {
            (Some(p), Some(k)) => {
                sql.push_str(
                    " AND EXISTS (SELECT 1 FROM differences d WHERE d.record_id = r.id AND d.pattern = ? AND d.kind = ?)",
                );
                args.push(SqlValue::Text(p.clone()));
                args.push(SqlValue::Text(k.clone()));
            }
            (Some(p), None) => filter(
                "EXISTS (SELECT 1 FROM differences d WHERE d.record_id = r.id AND d.pattern = ?)",
                SqlValue::Text(p.clone()),
            ),
            (None, Some(k)) => filter(
                "EXISTS (SELECT 1 FROM differences d WHERE d.record_id = r.id AND d.kind = ?)",
                SqlValue::Text(k.clone()),
            ),
            (None, None) => {}
        }
        sql.push_str(" ORDER BY id DESC LIMIT ?");
        args.push(SqlValue::Integer(q.limit.clamp(1, MAX_LIMIT) as i64));
        let c = self.lock()?;
        let mut stmt = c.prepare_cached(&sql).map_err(self.sql())?;
        let rows = stmt
            .query_map(params_from_iter(args), |r| {
                Ok(RecordSummary {
                    id: r.get(0)?,
                    run_id: r.get(1)?,
                    time: secs(r.get(2)?),
                    pair: r.get(3)?,
                    endpoint: r.get(4)?,
                    correlation_id: r.get(5)?,
                    method: r.get(6)?,
                    uri: r.get(7)?,
                    primary_status: r.get(8)?,
                    mirror_status: r.get(9)?,
                    primary_latency_seconds: r.get::<_, Option<i64>>(10)?.map(secs),
                    mirror_latency_seconds: r.get::<_, Option<i64>>(11)?.map(secs),
                    diverged: r.get(12)?,
                    difference_count: r.get(13)?,
                    kinds: r
                        .get::<_, String>(14)?
                        .split(',')
                        .filter(|k| !k.is_empty())
                        .map(str::to_string)
                        .collect(),
                    differences: Vec::new(),
                })
            })
            .map_err(self.sql())?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r.map_err(self.sql())?);
        }
        drop(stmt);
        for rec in &mut out {
            rec.differences = differences(&c, rec.id, LIST_DIFFERENCES).map_err(self.sql())?;
        }
        Ok(out)
    }

    /// One whole record.
    pub fn get(&self, id: i64) -> Result<Option<DiffRecord>, StoreError> {
        let c = self.lock()?;
        let row = c
            .query_row(
                "SELECT r.id, r.run_id, r.ts_ns, r.stored_ns, r.pair, r.endpoint, r.correlation_id,
                 r.diverged, r.truncated, r.body_comparison, coalesce(runs.masked, 1),
                 r.primary_exchange, r.mirror_exchange
                 FROM records r LEFT JOIN runs ON runs.id = r.run_id WHERE r.id = ?1",
                [id],
                |r| {
                    Ok((
                        (
                            r.get::<_, i64>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, i64>(3)?,
                        ),
                        (
                            r.get::<_, String>(4)?,
                            r.get::<_, String>(5)?,
                            r.get::<_, String>(6)?,
                        ),
                        (
                            r.get::<_, bool>(7)?,
                            r.get::<_, bool>(8)?,
                            r.get::<_, String>(9)?,
                            r.get::<_, bool>(10)?,
                        ),
                        (r.get::<_, String>(11)?, r.get::<_, String>(12)?),
                    ))
                },
            )
            .optional()
            .map_err(self.sql())?;
        let Some((ids, names, flags, (pj, mj))) = row else {
            return Ok(None);
        };
        let exchange = |text: &str, side: &str| -> Result<ExchangeView, StoreError> {
            serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
                path: self.path.clone(),
                what: format!("record {id}: the {side} exchange is not readable: {e}"),
            })
        };
        Ok(Some(DiffRecord {
            id: ids.0,
            run_id: ids.1,
            time: secs(ids.2),
            stored_at: secs(ids.3),
            pair: names.0,
            endpoint: names.1,
            correlation_id: names.2,
            diverged: flags.0,
            truncated: flags.1,
            body_comparison: flags.2,
            masked: flags.3,
            differences: differences(&c, id, crate::compare::MAX_DIFFERENCES)
                .map_err(self.sql())?,
            primary: exchange(&pj, "primary")?,
            mirror: exchange(&mj, "mirror")?,
        }))
    }

    /// Stored records per difference field and kind, most frequent first (at most 500), for one
    /// pair and endpoint or any.
    pub fn fields(
        &self,
        pair: Option<&str>,
        endpoint: Option<&str>,
    ) -> Result<Vec<FieldCount>, StoreError> {
        let c = self.lock()?;
        let mut stmt = c
            .prepare_cached(
                "SELECT d.pattern, d.kind, count(DISTINCT d.record_id) AS n
                 FROM records r JOIN differences d ON d.record_id = r.id
                 WHERE (?1 IS NULL OR r.pair = ?1) AND (?2 IS NULL OR r.endpoint = ?2)
                 GROUP BY d.pattern, d.kind ORDER BY n DESC, d.pattern, d.kind LIMIT 500",
            )
            .map_err(self.sql())?;
        let rows = stmt
            .query_map(params![pair, endpoint], |r| {
                Ok(FieldCount {
                    pattern: r.get(0)?,
                    kind: r.get(1)?,
                    records: r.get::<_, i64>(2)?.max(0) as u64,
                })
            })
            .map_err(self.sql())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.sql())
    }

    /// Stored records per pair and endpoint, most diverged first (at most [`MAX_LIMIT`]).
    pub fn endpoints(&self) -> Result<Vec<EndpointCount>, StoreError> {
        let c = self.lock()?;
        let mut stmt = c
            .prepare_cached(
                "SELECT pair, endpoint, count(*), sum(diverged) FROM records
                 GROUP BY pair, endpoint ORDER BY 4 DESC, 3 DESC, 1, 2 LIMIT ?1",
            )
            .map_err(self.sql())?;
        let rows = stmt
            .query_map([MAX_LIMIT as i64], |r| {
                Ok(EndpointCount {
                    pair: r.get(0)?,
                    endpoint: r.get(1)?,
                    records: r.get::<_, i64>(2)?.max(0) as u64,
                    diverged: r.get::<_, Option<i64>>(3)?.unwrap_or(0).max(0) as u64,
                })
            })
            .map_err(self.sql())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.sql())
    }

    /// Sizes, counts and the latest runs.
    pub fn info(&self) -> Result<StoreInfo, StoreError> {
        let c = self.lock()?;
        let (records, diverged, oldest, newest): (i64, Option<i64>, Option<i64>, Option<i64>) = c
            .query_row(
                "SELECT count(*), sum(diverged), min(ts_ns), max(ts_ns) FROM records",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .map_err(self.sql())?;
        let mut stmt = c
            .prepare_cached(
                "SELECT id, command, label, started_ns, ended_ns, masked, summary IS NOT NULL,
                 (SELECT count(*) FROM records WHERE records.run_id = runs.id)
                 FROM runs ORDER BY id DESC LIMIT 20",
            )
            .map_err(self.sql())?;
        let runs = stmt
            .query_map([], |r| {
                Ok(RunInfo {
                    id: r.get(0)?,
                    command: r.get(1)?,
                    label: r.get(2)?,
                    started: secs(r.get(3)?),
                    ended: r.get::<_, Option<i64>>(4)?.map(secs),
                    masked: r.get(5)?,
                    has_summary: r.get(6)?,
                    records: r.get::<_, i64>(7)?.max(0) as u64,
                })
            })
            .map_err(self.sql())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.sql())?;
        let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        Ok(StoreInfo {
            path: self.path.display().to_string(),
            schema_version: SCHEMA_VERSION,
            database_bytes: len(&self.path),
            wal_bytes: len(&wal_path(&self.path)),
            records: records.max(0) as u64,
            diverged: diverged.unwrap_or(0).max(0) as u64,
            oldest: oldest.map(secs),
            newest: newest.map(secs),
            runs,
            writer: self.writer.as_ref().map(|s| s.snapshot()),
        })
    }
}

fn differences(c: &Connection, id: i64, limit: usize) -> rusqlite::Result<Vec<DifferenceView>> {
    let mut stmt = c.prepare_cached(
        "SELECT path, pattern, kind, primary_value, mirror_value FROM differences
         WHERE record_id = ?1 ORDER BY seq LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![id, limit as i64], |r| {
        Ok(DifferenceView {
            path: r.get(0)?,
            pattern: r.get(1)?,
            kind: r.get(2)?,
            primary: r.get(3)?,
            mirror: r.get(4)?,
        })
    })?;
    rows.collect()
}
