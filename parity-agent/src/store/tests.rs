//! Tests of the writer, retention, batching, drops and the reader, on real SQLite files.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rusqlite::Connection;

use super::writer::{keep_matched_hit, Outcome, Pending, Store, StoreStats};
use super::*;
use crate::compare::{BodyComparison, DiffKind, Difference, Verdict};
use crate::exchange::{Body, Exchange, Headers, Request, Response, Version};
use crate::matcher::PairJob;
use crate::segment::Nanos;

const T0: i64 = 1_764_000_000_000_000_000;

fn exchange(uri: &str, status: u16, body: &[u8], auth: &str) -> Exchange {
    Exchange {
        conn: crate::stream::ConnId(1),
        trans_depth: 1,
        client: "10.0.0.9:40000".parse().unwrap(),
        server: "10.0.0.1:8080".parse().unwrap(),
        request: Some(Request {
            method: Bytes::from_static(b"GET"),
            uri: Bytes::copy_from_slice(uri.as_bytes()),
            version: Version::Http11,
            headers: Headers::from_pairs(&[("Authorization", auth), ("x-request-id", "r")]),
            body: Body::empty(),
        }),
        response: Some(Response {
            status,
            reason: Bytes::from_static(b"OK"),
            version: Version::Http11,
            headers: Headers::from_pairs(&[("Content-Type", "application/json")]),
            body: Body::from_bytes(body.to_vec()),
        }),
        interim: vec![],
        incomplete: None,
        anomalies: vec![],
        request_start: Some(Nanos(T0 as u64)),
        request_end: Some(Nanos(T0 as u64 + 1000)),
        response_start: Some(Nanos(T0 as u64 + 2_000_000)),
        response_end: Some(Nanos(T0 as u64 + 3_000_000)),
    }
}

fn job(id: &str, endpoint: &str, body_p: &[u8], body_m: &[u8]) -> PairJob {
    PairJob {
        pair: 0,
        endpoint: Arc::from(endpoint),
        id: Bytes::copy_from_slice(id.as_bytes()),
        primary: exchange("/api/orders/1", 200, body_p, "Bearer primarysecret"),
        mirror: exchange("/api/orders/1", 200, body_m, "Bearer mirrorsecret"),
    }
}

fn verdict(diverged: bool) -> Verdict {
    Verdict {
        differences: if diverged {
            vec![Difference {
                path: "$.tax".into(),
                kind: DiffKind::Value,
                primary: Some("1.2".into()),
                mirror: Some("1.24".into()),
            }]
        } else {
            vec![]
        },
        truncated: false,
        body: BodyComparison::Json,
    }
}

fn pending(i: usize, body_len: usize) -> Pending {
    let body = format!("{{\"tax\":1.2,\"pad\":\"{}\"}}", "x".repeat(body_len));
    Pending {
        pair: "checkout".into(),
        job: job(
            &format!("req-{i}"),
            "GET /api/orders/{id}",
            body.as_bytes(),
            b"{\"tax\":1.24}",
        ),
        verdict: verdict(true),
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    clock: Arc<AtomicI64>,
    metrics: Arc<Metrics>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        Fixture {
            path: dir.path().join("parity.db"),
            _dir: dir,
            clock: Arc::new(AtomicI64::new(T0)),
            metrics: Arc::new(Metrics::new()),
        }
    }

    fn opts(&self) -> StoreOptions {
        let clock = self.clock.clone();
        StoreOptions {
            path: self.path.clone(),
            retention: Duration::from_secs(3600),
            max_size: 1 << 30,
            keep_matched: 0.0,
            batch: 256,
            queue: 10_000,
            max_body_bytes: 1 << 20,
            summary_every: Duration::from_secs(10),
            retention_every: Duration::from_secs(60),
            busy_timeout: Duration::from_millis(50),
            policy: QueuePolicy::Drop,
            command: "test".into(),
            label: "unit test".into(),
            clock: Arc::new(move || clock.load(Ordering::Relaxed)),
        }
    }

    fn masker(&self) -> Arc<Masker> {
        Arc::new(Masker::new(&Config::default(), [9; 32], true))
    }

    fn store(&self, opts: &StoreOptions) -> (Store, Arc<StoreStats>) {
        let stats = Arc::new(StoreStats::default());
        let s = Store::open(opts, self.masker(), stats.clone(), self.metrics.clone()).unwrap();
        (s, stats)
    }

    fn writer(&self, opts: StoreOptions) -> StoreWriter {
        StoreWriter::open(opts, self.masker(), self.metrics.clone()).unwrap()
    }

    fn count(&self) -> i64 {
        let c = Connection::open(&self.path).unwrap();
        c.query_row("SELECT count(*) FROM records", [], |r| r.get(0))
            .unwrap()
    }
}

#[test]
fn records_round_trip_masked() {
    let f = Fixture::new();
    let (mut s, stats) = f.store(&f.opts());
    assert_eq!(s.write(&[pending(1, 10), pending(2, 10)]), 2);
    assert_eq!(stats.snapshot().get(Outcome::Stored), 2);
    drop(s);
    let r = StoreReader::open(&f.path).unwrap();
    let list = r
        .list(&RecordQuery {
            limit: 10,
            ..RecordQuery::default()
        })
        .unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].id, 2, "newest first");
    assert_eq!(list[0].correlation_id, "req-2");
    assert_eq!(list[0].difference_count, 1);
    assert_eq!(list[0].kinds, ["value"]);
    assert_eq!(list[0].differences[0].path, "$.tax");
    assert_eq!(list[0].primary_latency_seconds, Some(0.003));
    let rec = r.get(1).unwrap().unwrap();
    assert_eq!(rec.pair, "checkout");
    assert_eq!(rec.endpoint, "GET /api/orders/{id}");
    assert!(rec.masked && rec.diverged);
    assert_eq!(rec.differences[0].mirror.as_deref(), Some("1.24"));
    let auth = &rec.primary.request.as_ref().unwrap().headers[0];
    assert_eq!(auth.0, "Authorization");
    assert!(auth.1.starts_with(crate::mask::TOKEN_PREFIX), "{auth:?}");
    assert!(r.get(99).unwrap().is_none());
    let mut bytes = std::fs::read(&f.path).unwrap();
    bytes.extend(std::fs::read(writer::wal_path(&f.path)).unwrap_or_default());
    for secret in ["primarysecret", "mirrorsecret"] {
        assert!(
            memchr::memmem::find(&bytes, secret.as_bytes()).is_none(),
            "{secret} is in the database file"
        );
    }
}

#[test]
fn reader_filters_by_pair_endpoint_time_field_and_page() {
    let f = Fixture::new();
    let (mut s, _) = f.store(&f.opts());
    let mut batch = Vec::new();
    for i in 0..6 {
        let mut p = pending(i, 4);
        if i % 2 == 1 {
            p.job.endpoint = Arc::from("POST /api/orders");
            p.verdict.differences[0].path = "$.items[3].price".into();
        }
        for e in [&mut p.job.primary, &mut p.job.mirror] {
            let t = T0 as u64 + i as u64 * 1_000_000_000;
            e.response_end = Some(Nanos(t));
        }
        batch.push(p);
    }
    s.write(&batch);
    drop(s);
    let r = StoreReader::open(&f.path).unwrap();
    let q = |f: fn(&mut RecordQuery)| {
        let mut q = RecordQuery {
            limit: 100,
            ..RecordQuery::default()
        };
        f(&mut q);
        r.list(&q).unwrap().iter().map(|x| x.id).collect::<Vec<_>>()
    };
    assert_eq!(
        q(|q| q.endpoint = Some("POST /api/orders".into())),
        [6, 4, 2]
    );
    assert_eq!(
        q(|q| q.pattern = Some("$.items[*].price".into())),
        [6, 4, 2]
    );
    assert_eq!(q(|q| q.kind = Some("value".into())).len(), 6);
    assert!(q(|q| q.kind = Some("type".into())).is_empty());
    assert_eq!(q(|q| q.since_ns = Some(T0 + 3_000_000_000)), [6, 5, 4]);
    assert_eq!(q(|q| q.until_ns = Some(T0 + 1_000_000_000)), [1]);
    assert_eq!(
        q(|q| {
            q.before_id = Some(3);
            q.limit = 1
        }),
        [2]
    );
    assert!(q(|q| q.pair = Some("other".into())).is_empty());
    assert!(q(|q| q.diverged = Some(false)).is_empty());
    let fields = r
        .fields(Some("checkout"), Some("POST /api/orders"))
        .unwrap();
    assert_eq!(
        fields,
        [FieldCount {
            pattern: "$.items[*].price".into(),
            kind: "value".into(),
            records: 3
        }]
    );
    assert_eq!(r.fields(None, None).unwrap().len(), 2);
    let eps = r.endpoints().unwrap();
    assert_eq!(eps.len(), 2);
    assert_eq!((eps[0].records, eps[0].diverged), (3, 3));
    let info = r.info().unwrap();
    assert_eq!(
        (info.records, info.diverged, info.schema_version),
        (6, 6, 1)
    );
    assert_eq!(info.runs.len(), 1);
    assert_eq!(info.runs[0].records, 6);
    assert!(info.database_bytes > 0);
}

#[test]
fn retention_by_age_deletes_what_was_stored_before_the_window() {
    let f = Fixture::new();
    let (mut s, stats) = f.store(&f.opts());
    s.write(&(0..50).map(|i| pending(i, 100)).collect::<Vec<_>>());
    f.clock.fetch_add(1800 * 1_000_000_000, Ordering::Relaxed);
    s.write(&(50..60).map(|i| pending(i, 100)).collect::<Vec<_>>());
    assert_eq!(s.enforce_age(), 0, "nothing is older than an hour yet");
    // 61 minutes after the first write: the first 50 are past the 1 h retention.
    f.clock.fetch_add(1860 * 1_000_000_000, Ordering::Relaxed);
    assert_eq!(s.enforce_age(), 50);
    assert_eq!(f.count(), 10);
    assert_eq!(stats.snapshot().deleted_by_age, 50);
    let r = StoreReader::open(&f.path).unwrap();
    let ids: Vec<i64> = r
        .list(&RecordQuery {
            limit: 100,
            ..RecordQuery::default()
        })
        .unwrap()
        .iter()
        .map(|x| x.id)
        .collect();
    assert_eq!(ids.last(), Some(&51), "the newest survive");
    let orphans: i64 = Connection::open(&f.path)
        .unwrap()
        .query_row(
            "SELECT count(*) FROM differences WHERE record_id NOT IN (SELECT id FROM records)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(orphans, 0, "differences go with their records");
    assert!(f
        .metrics
        .render()
        .contains("parity_dropped_total{reason=\"retention_age\",stage=\"store\"} 50"));
}

#[test]
fn retention_by_size_deletes_the_oldest_and_the_file_shrinks() {
    let f = Fixture::new();
    let mut opts = f.opts();
    opts.max_size = 512 << 10;
    let (mut s, stats) = f.store(&opts);
    // Write about 2 MiB without enforcing, as a burst between two checks would.
    for b in 0..20 {
        s.write(
            &(b * 25..(b + 1) * 25)
                .map(|i| pending(i, 4000))
                .collect::<Vec<_>>(),
        );
    }
    let before = s.file_size();
    assert!(
        before > 3 * opts.max_size,
        "the burst made the files large: {before}"
    );
    let deleted = s.enforce_size();
    let after = s.file_size();
    let wal = std::fs::metadata(writer::wal_path(&f.path))
        .map(|m| m.len())
        .unwrap_or(0);
    eprintln!("size retention: {before} bytes -> {after} bytes (WAL {wal}), {deleted} of 500 records deleted");
    assert!(after <= opts.max_size, "{after} > {}", opts.max_size);
    assert!(
        after < before / 3,
        "space went back to the file system: {before} -> {after}"
    );
    assert_eq!(wal, 0, "the WAL was checkpointed and truncated");
    assert!(deleted > 300 && deleted < 500, "{deleted}");
    assert_eq!(stats.snapshot().deleted_by_size, deleted);
    let remaining = f.count();
    assert_eq!(remaining as u64, 500 - deleted);
    let min_id: i64 = Connection::open(&f.path)
        .unwrap()
        .query_row("SELECT min(id) FROM records", [], |r| r.get(0))
        .unwrap();
    assert_eq!(min_id as u64, deleted + 1, "the oldest went first");
    // Steady state: writing more keeps it bounded.
    for b in 20..40 {
        s.write(
            &(b * 25..(b + 1) * 25)
                .map(|i| pending(i, 4000))
                .collect::<Vec<_>>(),
        );
        s.enforce_size();
        assert!(
            s.file_size() <= opts.max_size + (256 << 10),
            "{}",
            s.file_size()
        );
    }
}

#[test]
fn a_locked_database_is_counted_and_never_blocks_the_hook() {
    let f = Fixture::new();
    let mut opts = f.opts();
    opts.queue = 8;
    opts.batch = 4;
    let w = f.writer(opts);
    let hook_store = w.counts();
    assert_eq!(hook_store.stored(), 0);
    let other = Connection::open(&f.path).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let mut hook = w.hook();
    let t = Instant::now();
    for i in 0..2000 {
        let j = job(&format!("locked-{i}"), "GET /a", b"{\"a\":1}", b"{\"a\":2}");
        hook("checkout", &j, &verdict(true));
    }
    let hook_time = t.elapsed();
    assert!(
        hook_time < Duration::from_millis(500),
        "the hook waited: {hook_time:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let c = w.counts();
    assert!(c.get(Outcome::Busy) > 0, "{c:?}");
    assert!(c.get(Outcome::QueueFull) > 1000, "{c:?}");
    assert_eq!(c.stored(), 0);
    assert!(
        c.last_error.as_deref().unwrap_or("").contains("locked"),
        "{c:?}"
    );
    other.execute_batch("COMMIT").unwrap();
    drop(other);
    w.sync();
    for i in 0..3 {
        let j = job(&format!("after-{i}"), "GET /a", b"{\"a\":1}", b"{\"a\":2}");
        hook("checkout", &j, &verdict(true));
    }
    w.sync();
    let c = w.counts();
    assert!(
        c.stored() >= 3,
        "writes resume once the lock is gone: {c:?}"
    );
    assert_eq!(
        c.stored() + c.lost(),
        2003,
        "every record is accounted for: {c:?}"
    );
    let m = f.metrics.render();
    assert!(
        m.contains("parity_store_records_total{outcome=\"busy\"}"),
        "{m}"
    );
    drop(hook);
    w.finish();
}

#[test]
fn read_only_and_full_databases_are_counted_and_writing_resumes() {
    let f = Fixture::new();
    let (mut s, stats) = f.store(&f.opts());
    s.write(&[pending(0, 10)]);
    s.conn.pragma_update(None, "query_only", true).unwrap();
    assert_eq!(s.write(&[pending(1, 10), pending(2, 10)]), 0);
    assert_eq!(stats.snapshot().get(Outcome::ReadOnly), 2);
    s.conn.pragma_update(None, "query_only", false).unwrap();
    let pages: i64 = s
        .conn
        .pragma_query_value(None, "page_count", |r| r.get(0))
        .unwrap();
    s.conn.pragma_update(None, "max_page_count", pages).unwrap();
    assert_eq!(
        s.write(&(3..40).map(|i| pending(i, 8000)).collect::<Vec<_>>()),
        0
    );
    assert_eq!(stats.snapshot().get(Outcome::DiskFull), 37);
    s.conn
        .pragma_update(None, "max_page_count", 1_000_000)
        .unwrap();
    assert_eq!(s.write(&[pending(50, 10)]), 1);
    let c = stats.snapshot();
    assert_eq!((c.stored(), c.lost()), (2, 39));
    assert_eq!(f.count(), 2);
    assert!(f
        .metrics
        .render()
        .contains("parity_store_records_total{outcome=\"disk_full\"} 37"));
}

#[test]
fn batches_take_what_queued_up_to_the_batch_size() {
    let f = Fixture::new();
    let mut opts = f.opts();
    opts.batch = 10;
    opts.busy_timeout = Duration::from_secs(10);
    opts.policy = QueuePolicy::Block;
    let w = f.writer(opts);
    let mut hook = w.hook();
    let other = Connection::open(&f.path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    for i in 0..101 {
        let j = job(&format!("b-{i}"), "GET /a", b"{\"a\":1}", b"{\"a\":2}");
        hook("checkout", &j, &verdict(true));
    }
    std::thread::sleep(Duration::from_millis(200));
    other.execute_batch("COMMIT").unwrap();
    w.sync();
    let c = w.counts();
    assert_eq!(c.stored(), 101, "{c:?}");
    // The first record waits alone on the lock; the 100 queued behind it go 10 at a time.
    assert!((11..=12).contains(&c.batches), "{c:?}");
    drop(hook);
    w.finish();
}

#[test]
fn keep_matched_samples_by_correlation_id() {
    let hits = (0..20_000)
        .filter(|i| keep_matched_hit(format!("id-{i}").as_bytes(), 0.25))
        .count();
    assert!((4_600..5_400).contains(&hits), "{hits}");
    assert!(keep_matched_hit(b"x", 1.0) && !keep_matched_hit(b"x", 0.0));
    assert!(!keep_matched_hit(b"x", f64::NAN));
    // Not the same ids as the pairing sample at the same rate.
    let same = (0..20_000)
        .filter(|i| {
            let id = format!("id-{i}");
            keep_matched_hit(id.as_bytes(), 0.25) == crate::matcher::sample_hit(id.as_bytes(), 0.25)
        })
        .count();
    assert!(same < 15_000, "{same}");

    let f = Fixture::new();
    let mut opts = f.opts();
    opts.keep_matched = 0.5;
    opts.policy = QueuePolicy::Block;
    let w = f.writer(opts);
    let mut hook = w.hook();
    let expected = (0..200)
        .filter(|i| keep_matched_hit(format!("m-{i}").as_bytes(), 0.5))
        .count() as u64;
    for i in 0..200 {
        let j = job(&format!("m-{i}"), "GET /a", b"{\"a\":1}", b"{\"a\":1}");
        hook("checkout", &j, &verdict(false));
    }
    hook(
        "checkout",
        &job("d-1", "GET /a", b"{}", b"{}"),
        &verdict(true),
    );
    w.sync();
    let c = w.counts();
    assert_eq!(c.get(Outcome::StoredMatched), expected);
    assert_eq!(c.get(Outcome::Stored), 1);
    let r = w.reader();
    let matched = r
        .list(&RecordQuery {
            diverged: Some(false),
            limit: 1000,
            ..RecordQuery::default()
        })
        .unwrap();
    assert_eq!(matched.len() as u64, expected);
    assert!(matched
        .iter()
        .all(|m| m.difference_count == 0 && !m.diverged));
    drop(hook);
    w.finish();

    let f = Fixture::new();
    let w = f.writer(f.opts());
    let mut hook = w.hook();
    for i in 0..50 {
        hook(
            "checkout",
            &job(&format!("m-{i}"), "GET /a", b"{}", b"{}"),
            &verdict(false),
        );
    }
    w.sync();
    assert_eq!(
        w.counts().stored(),
        0,
        "keep_matched = 0 stores no matched pair"
    );
    drop(hook);
    w.finish();
}

#[test]
fn summaries_are_stored_periodically_and_at_the_end() {
    let f = Fixture::new();
    let mut opts = f.opts();
    opts.summary_every = Duration::from_millis(50);
    let cfg = Config::parse(
        "[[pair]]\nname = \"checkout\"\nprimary = \"127.0.0.1:80\"\nmirror = \"127.0.0.1:81\"\n",
        "t",
    )
    .unwrap();
    let summary = Arc::new(Mutex::new(crate::summary::Summary::new(&cfg.pairs)));
    let w = f.writer(opts);
    let r = w.reader();
    assert!(r.summary().unwrap().is_none());
    w.watch_summary(summary.clone());
    let deadline = Instant::now() + Duration::from_secs(5);
    while r.summary().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let s = r.summary().unwrap().expect("a periodic summary");
    assert_eq!(s["pairs"][0]["compared"], 0);
    summary
        .lock()
        .unwrap()
        .add_verdict(&crate::summary::VerdictFacts {
            pair: 0,
            endpoint: Arc::from("GET /a"),
            differences: vec![],
            primary_latency: Some(1000),
            mirror_latency: Some(1000),
            ts: Nanos(T0 as u64),
        });
    w.finish();
    let s = r.summary().unwrap().unwrap();
    assert_eq!(
        s["pairs"][0]["compared"], 1,
        "the last snapshot is taken at the end"
    );

    // A replay stores its report once, at the end; the latest run's report wins.
    let w = f.writer(f.opts());
    w.save_report(&summary.lock().unwrap().report());
    w.finish();
    let r = StoreReader::open(&f.path).unwrap();
    assert_eq!(
        r.summary().unwrap().unwrap()["pairs"][0]["name"],
        "checkout"
    );
    let info = r.info().unwrap();
    assert_eq!(info.runs.len(), 2);
    assert!(info.runs.iter().all(|r| r.has_summary && r.ended.is_some()));
}

#[test]
fn open_for_without_a_store_section_is_none() {
    let cfg = Config::default();
    let m = Arc::new(Masker::disabled());
    let got = open_for(
        &cfg,
        m,
        Arc::new(Metrics::new()),
        QueuePolicy::Block,
        "replay",
        "x",
    )
    .unwrap();
    assert!(got.is_none());
}

#[test]
fn logs_about_one_problem_are_rate_limited_and_count_what_was_suppressed() {
    let mut l = super::writer::LogLimiter::new();
    let t0 = Instant::now();
    assert_eq!(l.allow(Outcome::Busy, t0), Some(0));
    for i in 1..=5 {
        assert_eq!(l.allow(Outcome::Busy, t0 + Duration::from_secs(i)), None);
    }
    assert_eq!(
        l.allow(Outcome::DiskFull, t0),
        Some(0),
        "each reason has its own limit"
    );
    assert_eq!(
        l.allow(Outcome::Busy, t0 + super::writer::LOG_EVERY),
        Some(5),
        "the next line says how many were suppressed"
    );
}

/// Throughput of the whole write path (hook → queue → masking → batched inserts) and the cost
/// of the hook on the comparison thread. A benchmark: run it with
/// `cargo test --release -p parity-agent --no-default-features --lib store_write_throughput -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark; run with --ignored --nocapture (ideally --release)"]
fn store_write_throughput() {
    const N: usize = 20_000;
    let f = Fixture::new();
    let mut opts = f.opts();
    opts.policy = QueuePolicy::Block;
    let w = f.writer(opts);
    let mut hook = w.hook();
    let items: String = (0..12)
        .map(|i| {
            format!(
                r#"{{"sku":"SKU-{i:04}","qty":{i},"price":{}.99,"name":"item number {i}"}}"#,
                i * 3
            )
        })
        .collect::<Vec<_>>()
        .join(",");
    let body_p = format!(
        r#"{{"id":1,"items":[{items}],"tax":1.52,"total":99.5,"currency":"EUR","customer":"c-1"}}"#
    );
    let body_m = body_p.replace("\"tax\":1.52", "\"tax\":1.90");
    let jobs: Vec<PairJob> = (0..N)
        .map(|i| {
            job(
                &format!("bench-{i}"),
                "GET /api/orders/{id}",
                body_p.as_bytes(),
                body_m.as_bytes(),
            )
        })
        .collect();
    let v = verdict(true);
    let t = Instant::now();
    for j in &jobs {
        hook("checkout", j, &v);
    }
    w.sync();
    let elapsed = t.elapsed();
    let c = w.counts();
    assert_eq!(c.stored(), N as u64);
    let size = files_size(&f.path);
    eprintln!(
        "store write path: {N} records ({} B JSON body each side) in {:.2} s: {:.0} records/s, {} transactions, {:.1} MiB on disk ({} B per record)",
        body_p.len(),
        elapsed.as_secs_f64(),
        N as f64 / elapsed.as_secs_f64(),
        c.batches,
        size as f64 / (1 << 20) as f64,
        size / N as u64
    );
    // Masking alone (what the writer thread spends per record before SQLite).
    let masker = f.masker();
    let t = Instant::now();
    let mut bytes = 0;
    for j in jobs.iter().take(5000) {
        bytes += super::record::build_row(&masker, "checkout", j, &v, 1 << 20)
            .primary_json
            .len();
    }
    eprintln!(
        "masking and encoding: {:.1} µs per record ({bytes} bytes)",
        t.elapsed().as_secs_f64() * 1e6 / 5000.0
    );
    // The hook alone, as the comparison thread pays it: the writer is parked on a lock held
    // by another connection, so nothing competes with the hook (the queue never fills).
    let mut opts = f.opts();
    opts.path = f.path.with_file_name("hook.db");
    opts.queue = N + 10;
    opts.busy_timeout = Duration::from_secs(60);
    let w2 = f.writer(opts);
    let mut hook2 = w2.hook();
    let other = Connection::open(f.path.with_file_name("hook.db")).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let t = Instant::now();
    for j in &jobs {
        hook2("checkout", j, &v);
    }
    let per = t.elapsed().as_nanos() as f64 / N as f64;
    other.execute_batch("COMMIT").unwrap();
    eprintln!("hook on the comparison thread: {per:.0} ns per stored record (clone + enqueue)");
    drop(hook);
    drop(hook2);
    w.finish();
    w2.finish();
}
