//! The writing side: a bounded queue in front of one writer thread that masks, batches and
//! inserts records, stores summary reports, and enforces retention.
//!
//! The comparison thread only decides whether a verdict is stored (diverged, or a matched pair
//! sampled by `keep_matched`) and hands a copy to the queue: under live capture a full queue
//! drops the record and counts it (`queue_full`), so nothing upstream ever waits for the disk;
//! under replay it waits, so offline results are complete. The writer takes up to `batch`
//! queued records per transaction. A database error (locked, full, read-only, I/O) drops that
//! batch, counts every record by reason in `parity_store_records_total{outcome}` and logs at most
//! once per reason every [`LOG_EVERY`]; the next batch tries again.
//!
//! Retention: records stored longer ago than `retention` (wall clock at writing, so a replay of
//! an old capture is not deleted at once) are deleted every minute; when the database and its
//! WAL together exceed `max_size`, the oldest records are deleted until they are under 90% of
//! it, and the space is given back to the file system (`incremental_vacuum`, then a
//! `wal_checkpoint(TRUNCATE)`). Both count in `parity_dropped_total{stage="store"}`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, ErrorCode, TransactionBehavior};
use serde::Serialize;

use super::reader::StoreReader;
use super::record::{build_row, Row};
use super::schema::{self, MIGRATIONS};
use super::StoreError;
use crate::compare::Verdict;
use crate::config::{Limits, StoreConfig};
use crate::mask::Masker;
use crate::matcher::PairJob;
use crate::metrics::Metrics;
use crate::pipeline::{QueuePolicy, VerdictHook};
use crate::summary::{Report, Summary};

/// Shortest interval between two log lines about the same store problem.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Wall clock in ns since the epoch; injected so tests can step time.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system's wall clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    })
}

/// Everything the writer needs to know.
#[derive(Clone)]
pub struct StoreOptions {
    /// Database file.
    pub path: PathBuf,
    /// Records stored longer ago than this are deleted.
    pub retention: Duration,
    /// Database plus WAL above this: the oldest records are deleted.
    pub max_size: u64,
    /// Fraction of matched pairs stored for contrast.
    pub keep_matched: f64,
    /// Records per transaction.
    pub batch: usize,
    /// Records waiting for the writer.
    pub queue: usize,
    /// Body bytes stored per message.
    pub max_body_bytes: usize,
    /// How often a watched summary is stored.
    pub summary_every: Duration,
    /// How often retention by age runs.
    pub retention_every: Duration,
    /// How long a write waits for another connection's lock.
    pub busy_timeout: Duration,
    /// What a full queue does.
    pub policy: QueuePolicy,
    /// `replay` or `run`.
    pub command: String,
    /// What the run processed (capture files, configuration), for people.
    pub label: String,
    /// Wall clock.
    pub clock: Clock,
}

impl StoreOptions {
    /// Options from `[store]` and `[limits]`.
    pub fn from_config(
        s: &StoreConfig,
        limits: &Limits,
        policy: QueuePolicy,
        command: &str,
        label: &str,
    ) -> StoreOptions {
        StoreOptions {
            path: s.path.clone(),
            retention: s.retention.0,
            max_size: s.max_size.0,
            keep_matched: s.keep_matched,
            batch: s.batch.max(1),
            queue: s.queue.max(1),
            max_body_bytes: limits.max_body_bytes.as_usize(),
            summary_every: Duration::from_secs(10),
            retention_every: Duration::from_secs(60),
            busy_timeout: schema::DEFAULT_BUSY_TIMEOUT,
            policy,
            command: command.to_string(),
            label: label.chars().take(500).collect(),
            clock: system_clock(),
        }
    }
}

/// What happened to a record handed to the store: the `outcome` label of
/// `parity_store_records_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A diverged pair was written.
    Stored,
    /// A matched pair kept for contrast was written.
    StoredMatched,
    /// The writer's queue was full (live capture only).
    QueueFull,
    /// Another connection held the database lock longer than the busy timeout.
    Busy,
    /// The disk (or `max_page_count`) is full.
    DiskFull,
    /// The database or its directory is read-only.
    ReadOnly,
    /// The operating system reported an I/O error.
    IoError,
    /// Anything else (a corrupt file, the writer gone).
    Error,
}

impl Outcome {
    /// Every outcome, in documentation order.
    pub const ALL: [Outcome; 8] = [
        Outcome::Stored,
        Outcome::StoredMatched,
        Outcome::QueueFull,
        Outcome::Busy,
        Outcome::DiskFull,
        Outcome::ReadOnly,
        Outcome::IoError,
        Outcome::Error,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Stored => "stored",
            Outcome::StoredMatched => "stored_matched",
            Outcome::QueueFull => "queue_full",
            Outcome::Busy => "busy",
            Outcome::DiskFull => "disk_full",
            Outcome::ReadOnly => "read_only",
            Outcome::IoError => "io_error",
            Outcome::Error => "error",
        }
    }

    fn of(e: &rusqlite::Error) -> Outcome {
        match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Outcome::Busy,
            Some(ErrorCode::DiskFull) => Outcome::DiskFull,
            Some(ErrorCode::ReadOnly) => Outcome::ReadOnly,
            Some(ErrorCode::SystemIoFailure) => Outcome::IoError,
            _ => Outcome::Error,
        }
    }
}

/// Counters of the store, shared by the hook, the writer and the readers.
#[derive(Debug, Default)]
pub struct StoreStats {
    outcomes: [AtomicU64; 8],
    deleted_by_age: AtomicU64,
    deleted_by_size: AtomicU64,
    batches: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// A snapshot of [`StoreStats`] (`/api/store`, the end-of-replay line).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StoreCounts {
    /// Records by outcome, every outcome present.
    pub records: std::collections::BTreeMap<&'static str, u64>,
    /// Records deleted because they were older than `retention`.
    pub deleted_by_age: u64,
    /// Records deleted to stay within `max_size`.
    pub deleted_by_size: u64,
    /// Transactions written.
    pub batches: u64,
    /// The latest database error, if any.
    pub last_error: Option<String>,
}

impl StoreCounts {
    /// Records written (diverged and matched).
    pub fn stored(&self) -> u64 {
        self.get(Outcome::Stored) + self.get(Outcome::StoredMatched)
    }

    /// Records not written, whatever the reason.
    pub fn lost(&self) -> u64 {
        Outcome::ALL
            .iter()
            .filter(|o| !matches!(o, Outcome::Stored | Outcome::StoredMatched))
            .map(|o| self.get(*o))
            .sum()
    }

    /// Records with outcome `o`.
    pub fn get(&self, o: Outcome) -> u64 {
        self.records.get(o.as_str()).copied().unwrap_or(0)
    }
}

impl StoreStats {
    /// The current counts.
    pub fn snapshot(&self) -> StoreCounts {
        StoreCounts {
            records: Outcome::ALL
                .iter()
                .map(|o| {
                    (
                        o.as_str(),
                        self.outcomes[*o as usize].load(Ordering::Relaxed),
                    )
                })
                .collect(),
            deleted_by_age: self.deleted_by_age.load(Ordering::Relaxed),
            deleted_by_size: self.deleted_by_size.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            last_error: self.last_error.lock().ok().and_then(|g| g.clone()),
        }
    }

    fn count(&self, metrics: &Metrics, o: Outcome, n: u64) {
        if n == 0 {
            return;
        }
        self.outcomes[o as usize].fetch_add(n, Ordering::Relaxed);
        metrics
            .store_records
            .with_label_values(&[o.as_str()])
            .inc_by(n);
    }
}

/// Rate limit of log lines per outcome.
#[derive(Debug)]
pub(crate) struct LogLimiter {
    last: [Option<Instant>; 8],
    suppressed: [u64; 8],
}

impl LogLimiter {
    pub(crate) fn new() -> LogLimiter {
        LogLimiter {
            last: [None; 8],
            suppressed: [0; 8],
        }
    }

    /// `Some(n)` when a line may be logged now (`n` lines were suppressed since the last one).
    pub(crate) fn allow(&mut self, o: Outcome, now: Instant) -> Option<u64> {
        let i = o as usize;
        match self.last[i] {
            Some(t) if now.duration_since(t) < LOG_EVERY => {
                self.suppressed[i] += 1;
                None
            }
            _ => {
                self.last[i] = Some(now);
                Some(std::mem::take(&mut self.suppressed[i]))
            }
        }
    }
}

/// The decision to keep a matched pair: a salted hash of the correlation id below
/// `fraction · 2^64`. Deterministic, so every agent keeps the same ids; salted, so the kept ids
/// are not simply those with the lowest pairing-sample hash.
pub fn keep_matched_hit(id: &[u8], fraction: f64) -> bool {
    if fraction >= 1.0 {
        return true;
    }
    if fraction <= 0.0 || fraction.is_nan() {
        return false;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"parity-keep-matched:".iter().chain(id) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h as f64) < fraction * (u64::MAX as f64)
}

/// A verdict waiting to be written.
pub(crate) struct Pending {
    pub pair: String,
    pub job: PairJob,
    pub verdict: Verdict,
}

enum Msg {
    Record(Box<Pending>),
    Report(String),
    Watch(Arc<Mutex<Summary>>),
    Sync(SyncSender<()>),
    Stop,
}

/// The synchronous core of the writer: one connection and the retention logic.
pub(crate) struct Store {
    pub(crate) conn: Connection,
    path: PathBuf,
    wal: PathBuf,
    run_id: i64,
    masker: Arc<Masker>,
    stats: Arc<StoreStats>,
    metrics: Arc<Metrics>,
    log: LogLimiter,
    max_size: u64,
    retention_ns: i64,
    max_body: usize,
    clock: Clock,
}

/// The WAL file beside `path`.
pub fn wal_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push("-wal");
    PathBuf::from(s)
}

/// Bytes of the database file and its WAL.
pub fn files_size(path: &Path) -> u64 {
    let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    len(path) + len(&wal_path(path))
}

impl Store {
    pub(crate) fn open(
        opts: &StoreOptions,
        masker: Arc<Masker>,
        stats: Arc<StoreStats>,
        metrics: Arc<Metrics>,
    ) -> Result<Store, StoreError> {
        let conn = schema::open_writable(&opts.path, MIGRATIONS, opts.busy_timeout)?;
        let sql = |source| StoreError::Sql {
            path: opts.path.clone(),
            source,
        };
        // Keep the WAL small next to the size limit: checkpoint every 1/16 of it (at most every
        // 1000 pages, SQLite's default) and truncate the WAL file to 1/8 of it after checkpoints.
        let page: i64 = conn
            .pragma_query_value(None, "page_size", |r| r.get(0))
            .map_err(sql)?;
        let max = i64::try_from(opts.max_size).unwrap_or(i64::MAX);
        let pages = (max / page.max(512) / 16).clamp(16, 1000);
        conn.pragma_update(None, "wal_autocheckpoint", pages)
            .map_err(sql)?;
        conn.pragma_update(None, "journal_size_limit", (max / 8).min(64 << 20))
            .map_err(sql)?;
        let now = (opts.clock)();
        conn.execute(
            "INSERT INTO runs (started_ns, command, label, masked) VALUES (?1, ?2, ?3, ?4)",
            params![now, opts.command, opts.label, masker.is_active()],
        )
        .map_err(sql)?;
        let run_id = conn.last_insert_rowid();
        Ok(Store {
            conn,
            path: opts.path.clone(),
            wal: wal_path(&opts.path),
            run_id,
            masker,
            stats,
            metrics,
            log: LogLimiter::new(),
            max_size: opts.max_size,
            retention_ns: i64::try_from(opts.retention.as_nanos()).unwrap_or(i64::MAX),
            max_body: opts.max_body_bytes,
            clock: opts.clock.clone(),
        })
    }

    /// This run's id.
    pub(crate) fn run_id(&self) -> i64 {
        self.run_id
    }

    /// Mask and insert `batch` in one transaction; on failure count and log it. Returns the
    /// records written.
    pub(crate) fn write(&mut self, batch: &[Pending]) -> usize {
        if batch.is_empty() {
            return 0;
        }
        let rows: Vec<Row> = batch
            .iter()
            .map(|p| build_row(&self.masker, &p.pair, &p.job, &p.verdict, self.max_body))
            .collect();
        let now = (self.clock)();
        match self.insert(&rows, now) {
            Ok(()) => {
                let matched = rows.iter().filter(|r| !r.diverged).count() as u64;
                let m = &self.metrics;
                self.stats
                    .count(m, Outcome::Stored, rows.len() as u64 - matched);
                self.stats.count(m, Outcome::StoredMatched, matched);
                self.stats.batches.fetch_add(1, Ordering::Relaxed);
                rows.len()
            }
            Err(e) => {
                self.failed(&e, rows.len() as u64, "writing records");
                0
            }
        }
    }

    fn insert(&mut self, rows: &[Row], now: i64) -> rusqlite::Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut rec = tx.prepare_cached(
                "INSERT INTO records (run_id, ts_ns, stored_ns, pair, endpoint, correlation_id,
                 diverged, difference_count, kinds, truncated, body_comparison, method, uri,
                 primary_status, mirror_status, primary_latency_ns, mirror_latency_ns,
                 primary_exchange, mirror_exchange)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
            )?;
            let mut diff = tx.prepare_cached(
                "INSERT INTO differences (record_id, seq, path, pattern, kind, primary_value, mirror_value)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for r in rows {
                let id = rec.insert(params![
                    self.run_id,
                    r.ts_ns,
                    now,
                    r.pair,
                    r.endpoint,
                    r.correlation_id,
                    r.diverged,
                    r.differences.len() as i64,
                    r.kinds,
                    r.truncated,
                    r.body_comparison,
                    r.method,
                    r.uri,
                    r.primary_status,
                    r.mirror_status,
                    r.primary_latency_ns,
                    r.mirror_latency_ns,
                    r.primary_json,
                    r.mirror_json,
                ])?;
                for (seq, d) in r.differences.iter().enumerate() {
                    diff.execute(params![
                        id, seq as i64, d.path, d.pattern, d.kind, d.primary, d.mirror
                    ])?;
                }
            }
        }
        tx.commit()
    }

    /// Count `n` records lost to `e` and log it, at most once per reason every [`LOG_EVERY`].
    fn failed(&mut self, e: &rusqlite::Error, n: u64, doing: &str) {
        let o = Outcome::of(e);
        self.stats.count(&self.metrics, o, n);
        let msg = format!("{doing}: {e}");
        if let Ok(mut g) = self.stats.last_error.lock() {
            *g = Some(msg.clone());
        }
        if let Some(suppressed) = self.log.allow(o, Instant::now()) {
            let hint = match o {
                Outcome::Busy => "another process holds the database lock; capture and comparison go on, records are dropped and counted",
                Outcome::DiskFull => "the disk is full; lower [store] max_size or free space; records are dropped and counted",
                Outcome::ReadOnly => "the database or its directory is read-only; records are dropped and counted",
                _ => "records are dropped and counted",
            };
            tracing::warn!(
                outcome = o.as_str(),
                suppressed,
                "diff store {}: {msg} ({hint})",
                self.path.display()
            );
        }
    }

    /// Store `json` as this run's latest summary report.
    pub(crate) fn save_summary(&mut self, json: &str) {
        let now = (self.clock)();
        let r = self.conn.execute(
            "UPDATE runs SET summary = ?1, summary_ns = ?2 WHERE id = ?3",
            params![json, now, self.run_id],
        );
        if let Err(e) = r {
            self.failed(&e, 0, "storing the summary");
        }
    }

    /// Delete records stored before `retention` ago, and old runs without records. Returns the
    /// records deleted.
    pub(crate) fn enforce_age(&mut self) -> u64 {
        let cutoff = (self.clock)().saturating_sub(self.retention_ns);
        let mut deleted = 0u64;
        loop {
            match self.delete_chunk_older_than(cutoff) {
                Ok(0) => break,
                Ok(n) => deleted += n,
                Err(e) => {
                    self.failed(&e, 0, "deleting records past retention");
                    break;
                }
            }
        }
        let runs = self.conn.execute(
            "DELETE FROM runs WHERE id != ?1
               AND (coalesce(ended_ns, started_ns) < ?2
                    OR id NOT IN (SELECT id FROM runs ORDER BY id DESC LIMIT 1000))
               AND NOT EXISTS (SELECT 1 FROM records WHERE records.run_id = runs.id)",
            params![self.run_id, cutoff],
        );
        if let Err(e) = runs {
            self.failed(&e, 0, "deleting old runs");
        }
        if deleted > 0 {
            self.stats
                .deleted_by_age
                .fetch_add(deleted, Ordering::Relaxed);
            Metrics::set_total(
                &self.metrics.dropped,
                &["store", "retention_age"],
                self.stats.deleted_by_age.load(Ordering::Relaxed),
            );
            tracing::debug!(
                "diff store {}: deleted {deleted} records past retention",
                self.path.display()
            );
            self.reclaim();
        }
        deleted
    }

    /// At most 10 000 records per transaction, so a large deletion never holds the lock long.
    fn delete_chunk_older_than(&mut self, cutoff: i64) -> rusqlite::Result<u64> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let hi: Option<i64> = tx.query_row(
            "SELECT max(id) FROM (SELECT id FROM records WHERE stored_ns < ?1 ORDER BY id LIMIT 10000)",
            [cutoff],
            |r| r.get(0),
        )?;
        let Some(hi) = hi else {
            return Ok(0);
        };
        tx.execute(
            "DELETE FROM differences WHERE record_id IN
               (SELECT id FROM records WHERE id <= ?1 AND stored_ns < ?2)",
            params![hi, cutoff],
        )?;
        let n = tx.execute(
            "DELETE FROM records WHERE id <= ?1 AND stored_ns < ?2",
            params![hi, cutoff],
        )?;
        tx.commit()?;
        Ok(n as u64)
    }

    /// Bytes of the database and its WAL.
    pub(crate) fn file_size(&self) -> u64 {
        let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        len(&self.path) + len(&self.wal)
    }

    /// Above `max_size`: fold the WAL in, then delete the oldest records until the files are
    /// under 90% of it. Returns the records deleted.
    pub(crate) fn enforce_size(&mut self) -> u64 {
        let mut size = self.file_size();
        if size <= self.max_size {
            return 0;
        }
        self.checkpoint();
        size = self.file_size();
        let target = self.max_size - self.max_size / 10;
        let mut deleted = 0u64;
        for _ in 0..64 {
            if size <= target {
                break;
            }
            match self.delete_oldest_share((size - target) as f64 / size as f64) {
                Ok(0) => break,
                Ok(n) => deleted += n,
                Err(e) => {
                    self.failed(&e, 0, "deleting the oldest records to stay within max_size");
                    break;
                }
            }
            self.reclaim();
            let now = self.file_size();
            if now >= size {
                tracing::warn!(
                    "diff store {}: deleting records gave no space back ({now} bytes; is a reader holding an old snapshot?); trying again later",
                    self.path.display()
                );
                break;
            }
            size = now;
        }
        if deleted > 0 {
            self.stats
                .deleted_by_size
                .fetch_add(deleted, Ordering::Relaxed);
            Metrics::set_total(
                &self.metrics.dropped,
                &["store", "retention_size"],
                self.stats.deleted_by_size.load(Ordering::Relaxed),
            );
            tracing::debug!(
                "diff store {}: deleted the {deleted} oldest records to stay within max_size; now {size} bytes",
                self.path.display()
            );
        }
        deleted
    }

    /// Delete the oldest `share` of the records (at least one).
    fn delete_oldest_share(&mut self, share: f64) -> rusqlite::Result<u64> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let count: i64 = tx.query_row("SELECT count(*) FROM records", [], |r| r.get(0))?;
        if count == 0 {
            return Ok(0);
        }
        let k = ((count as f64 * (share + 0.02).min(1.0)).ceil() as i64).clamp(1, count);
        let hi: i64 = tx.query_row(
            "SELECT id FROM records ORDER BY id LIMIT 1 OFFSET ?1",
            [k - 1],
            |r| r.get(0),
        )?;
        tx.execute("DELETE FROM differences WHERE record_id <= ?1", [hi])?;
        let n = tx.execute("DELETE FROM records WHERE id <= ?1", [hi])?;
        tx.commit()?;
        Ok(n as u64)
    }

    /// Give freed pages back to the file system: move them out of the database
    /// (`incremental_vacuum`), then write the WAL into the database and truncate it.
    fn reclaim(&mut self) {
        if let Err(e) = self.incremental_vacuum() {
            self.failed(&e, 0, "incremental vacuum");
        }
        self.checkpoint();
    }

    /// `incremental_vacuum` frees one page per step: step it to the end.
    fn incremental_vacuum(&mut self) -> rusqlite::Result<()> {
        let mut stmt = self.conn.prepare("PRAGMA incremental_vacuum")?;
        let mut rows = stmt.query([])?;
        while rows.next()?.is_some() {}
        Ok(())
    }

    fn checkpoint(&mut self) {
        let r = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                r.get::<_, i64>(0)
            });
        match r {
            Ok(0) => {}
            Ok(_) => tracing::debug!(
                "diff store {}: checkpoint could not complete (a reader is active); the WAL shrinks later",
                self.path.display()
            ),
            Err(e) => self.failed(&e, 0, "checkpointing the WAL"),
        }
    }

    /// Mark the run as ended and fold the WAL into the database.
    pub(crate) fn close(mut self) {
        let now = (self.clock)();
        if let Err(e) = self.conn.execute(
            "UPDATE runs SET ended_ns = ?1 WHERE id = ?2",
            params![now, self.run_id],
        ) {
            self.failed(&e, 0, "closing the run");
        }
        self.checkpoint();
    }
}

/// The writer thread's loop state.
struct Worker {
    store: Store,
    batch: Vec<Pending>,
    batch_size: usize,
    watch: Option<Arc<Mutex<Summary>>>,
    syncs: Vec<SyncSender<()>>,
    summary_every: Duration,
    retention_every: Duration,
    next_summary: Instant,
    next_retention: Instant,
}

impl Worker {
    fn run(mut self, rx: Receiver<Msg>) {
        let mut open = true;
        while open {
            let wait = self
                .next_summary
                .min(self.next_retention)
                .saturating_duration_since(Instant::now())
                .min(Duration::from_secs(1));
            match rx.recv_timeout(wait) {
                Ok(m) => open = self.accept(m),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => open = false,
            }
            while open && self.batch.len() < self.batch_size {
                match rx.try_recv() {
                    Ok(m) => open = self.accept(m),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => open = false,
                }
            }
            self.flush();
            self.housekeeping(false);
        }
        self.housekeeping(true);
        for s in self.syncs.drain(..) {
            let _ = s.send(());
        }
        self.store.close();
    }

    /// Take one message; `false` on `Stop`.
    fn accept(&mut self, m: Msg) -> bool {
        match m {
            Msg::Record(p) => self.batch.push(*p),
            Msg::Report(json) => {
                self.flush();
                self.store.save_summary(&json);
            }
            Msg::Watch(s) => self.watch = Some(s),
            Msg::Sync(tx) => self.syncs.push(tx),
            Msg::Stop => {
                self.flush();
                return false;
            }
        }
        true
    }

    fn flush(&mut self) {
        if !self.batch.is_empty() {
            self.store.write(&self.batch);
            self.batch.clear();
            self.store.enforce_size();
        }
        for s in self.syncs.drain(..) {
            let _ = s.send(());
        }
    }

    fn housekeeping(&mut self, last: bool) {
        let now = Instant::now();
        if last || now >= self.next_summary {
            self.next_summary = now + self.summary_every;
            let report = self
                .watch
                .as_ref()
                .and_then(|w| w.lock().ok().map(|s| s.report()));
            if let Some(json) = report.and_then(|r| serde_json::to_string(&r).ok()) {
                self.store.save_summary(&json);
            }
        }
        if last || now >= self.next_retention {
            self.next_retention = now + self.retention_every;
            self.store.enforce_age();
            self.store.enforce_size();
        }
    }
}

/// Writes diff records: the hook for the comparison thread, and the writer thread behind it.
pub struct StoreWriter {
    tx: SyncSender<Msg>,
    worker: Option<JoinHandle<()>>,
    stats: Arc<StoreStats>,
    metrics: Arc<Metrics>,
    reader: StoreReader,
    keep_matched: f64,
    policy: QueuePolicy,
    run_id: i64,
}

impl StoreWriter {
    /// Open (or create) the database, start the writer thread and open a reader beside it.
    pub fn open(
        opts: StoreOptions,
        masker: Arc<Masker>,
        metrics: Arc<Metrics>,
    ) -> Result<StoreWriter, StoreError> {
        let stats = Arc::new(StoreStats::default());
        for o in Outcome::ALL {
            // Every outcome is exported from the start, at zero, so alerts can rate() it.
            metrics.store_records.with_label_values(&[o.as_str()]);
        }
        let store = Store::open(&opts, masker, stats.clone(), metrics.clone())?;
        let run_id = store.run_id();
        let reader = StoreReader::open(&opts.path)?.with_writer_stats(stats.clone());
        let (tx, rx) = mpsc::sync_channel(opts.queue.max(1));
        let now = Instant::now();
        let worker = Worker {
            store,
            batch: Vec::with_capacity(opts.batch.max(1)),
            batch_size: opts.batch.max(1),
            watch: None,
            syncs: Vec::new(),
            summary_every: opts.summary_every,
            retention_every: opts.retention_every,
            next_summary: now + opts.summary_every,
            next_retention: now,
        };
        let handle = std::thread::Builder::new()
            .name("parity-store".into())
            .spawn(move || worker.run(rx))
            .map_err(|e| StoreError::Io {
                path: opts.path.clone(),
                source: e,
            })?;
        Ok(StoreWriter {
            tx,
            worker: Some(handle),
            stats,
            metrics,
            reader,
            keep_matched: opts.keep_matched,
            policy: opts.policy,
            run_id,
        })
    }

    /// The verdict hook for the pipeline: stores diverged pairs and the `keep_matched` sample
    /// of matched ones. Never blocks under [`QueuePolicy::Drop`].
    pub fn hook(&self) -> VerdictHook {
        let tx = self.tx.clone();
        let keep = self.keep_matched;
        let policy = self.policy;
        let stats = self.stats.clone();
        let metrics = self.metrics.clone();
        let mut log = LogLimiter::new();
        Box::new(move |pair: &str, job: &PairJob, verdict: &Verdict| {
            if !verdict.diverged() && !keep_matched_hit(&job.id, keep) {
                return;
            }
            let msg = Msg::Record(Box::new(Pending {
                pair: pair.to_string(),
                job: job.clone(),
                verdict: verdict.clone(),
            }));
            let lost = match policy {
                QueuePolicy::Block => tx.send(msg).err().map(|_| Outcome::Error),
                QueuePolicy::Drop => match tx.try_send(msg) {
                    Ok(()) => None,
                    Err(TrySendError::Full(_)) => Some(Outcome::QueueFull),
                    Err(TrySendError::Disconnected(_)) => Some(Outcome::Error),
                },
            };
            if let Some(o) = lost {
                stats.count(&metrics, o, 1);
                if let Some(suppressed) = log.allow(o, Instant::now()) {
                    tracing::warn!(
                        outcome = o.as_str(),
                        suppressed,
                        "diff store: a record was dropped ({}); capture and comparison go on",
                        if o == Outcome::QueueFull {
                            "the writer's queue is full: the disk is slower than the divergence rate; raise [store] queue or batch"
                        } else {
                            "the writer has stopped"
                        }
                    );
                }
            }
        })
    }

    /// A reader of the same database (for the API under `run`), with this writer's counters.
    pub fn reader(&self) -> StoreReader {
        self.reader.clone()
    }

    /// This run's id in the store.
    pub fn run_id(&self) -> i64 {
        self.run_id
    }

    /// Store `summary`'s report every `summary_every` (10 s) and when the writer stops.
    pub fn watch_summary(&self, summary: Arc<Mutex<Summary>>) {
        let _ = self.tx.send(Msg::Watch(summary));
    }

    /// Store `report` as this run's summary (after what is queued).
    pub fn save_report(&self, report: &Report) {
        if let Ok(json) = serde_json::to_string(report) {
            let _ = self.tx.send(Msg::Report(json));
        }
    }

    /// Wait until everything queued before this call is written.
    pub fn sync(&self) {
        let (tx, rx) = mpsc::sync_channel(1);
        if self.tx.send(Msg::Sync(tx)).is_ok() {
            let _ = rx.recv();
        }
    }

    /// The counters so far.
    pub fn counts(&self) -> StoreCounts {
        self.stats.snapshot()
    }

    /// Write what is queued, store the watched summary a last time, apply retention, fold the
    /// WAL in and stop the thread. Returns the final counts.
    pub fn finish(mut self) -> StoreCounts {
        self.stop();
        self.stats.snapshot()
    }

    fn stop(&mut self) {
        if let Some(w) = self.worker.take() {
            let _ = self.tx.send(Msg::Stop);
            if w.join().is_err() {
                tracing::error!(
                    "the diff store's writer thread panicked; its last records are lost"
                );
            }
        }
    }
}

impl Drop for StoreWriter {
    fn drop(&mut self) {
        self.stop();
    }
}
