//! The pipeline: segments in, exchange records, pairs, verdicts and counts out.
//!
//! [`Pipeline`] owns the single-threaded stages (reassembly, HTTP, classification, endpoint
//! naming, matching) and hands pairs to the comparison thread through a bounded queue. Replay
//! and live capture drive the same pipeline; they differ only in where `now` comes from (the
//! segment's capture time or a monotonic clock) and in what a full comparison queue does (replay
//! waits, so offline results are complete and deterministic; live capture counts `queue_full` and
//! moves on, so capture never waits for comparison).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::classify::Classifier;
use crate::compare::endpoint::EndpointNamer;
use crate::compare::{Comparator, Verdict};
use crate::config::Config;
use crate::exchange::{Exchange, IncompleteReason};
use crate::http::{HttpConfig, HttpTracker};
use crate::mask::Masker;
use crate::matcher::{
    Fault, MatchOutcome, Matcher, MatcherLimits, PairJob, PairSettings, Unmatched, UnmatchedReason,
};
use crate::metrics::Metrics;
use crate::reassembly::{Reassembler, ReassemblyConfig};
use crate::record;
use crate::segment::{Nanos, Segment};
use crate::stream::StreamEvent;
use crate::summary::{Summary, VerdictFacts};

/// How often timeouts are checked, in the pipeline's own time.
const EXPIRE_EVERY_NS: u64 = 100_000_000;

/// Called on the comparison thread with every verdict (the diff store uses it): the pair's name,
/// the pair, and the verdict.
pub type VerdictHook = Box<dyn FnMut(&str, &PairJob, &Verdict) + Send>;

/// What to do when the comparison queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueuePolicy {
    /// Wait for room (replay: complete, deterministic results).
    Block,
    /// Count the pair as `queue_full` and go on (live: capture never waits).
    Drop,
}

/// Where exchange records go.
pub struct RecordSink {
    out: Box<dyn Write + Send>,
    buf: Vec<u8>,
    masker: Arc<Masker>,
    clean: crate::mask::CleanCache,
}

impl RecordSink {
    /// Records to `out`, masked by `masker`.
    pub fn new(out: Box<dyn Write + Send>, masker: Arc<Masker>) -> RecordSink {
        RecordSink {
            out,
            buf: Vec::with_capacity(1 << 16),
            masker,
            clean: crate::mask::CleanCache::default(),
        }
    }

    fn write(&mut self, ex: &Exchange) -> std::io::Result<()> {
        record::write_record_masked(ex, Some(&self.masker), &mut self.clean, &mut self.buf);
        if self.buf.len() >= 1 << 16 {
            self.flush_buf()?;
        }
        Ok(())
    }

    fn flush_buf(&mut self) -> std::io::Result<()> {
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.flush_buf()?;
        self.out.flush()
    }
}

/// Counters of the pipeline itself.
#[derive(Clone, Debug, Default)]
pub struct PipelineStats {
    /// Segments pushed.
    pub segments: u64,
    /// Exchanges produced by the HTTP stage.
    pub exchanges: u64,
    /// Of which complete.
    pub complete: u64,
    /// Incomplete exchanges by reason, in [`IncompleteReason::ALL`] order.
    pub incomplete: [u64; 9],
    /// Exchanges that belong to a pair.
    pub classified: u64,
    /// Flows evicted to stay within `flow_memory`.
    pub evicted_for_memory: u64,
}

/// Shared outputs that outlive the pipeline (read by the API server and the commands).
#[derive(Clone)]
pub struct Shared {
    /// The running summary.
    pub summary: Arc<Mutex<Summary>>,
    /// Metrics, when exported.
    pub metrics: Arc<Metrics>,
}

/// The single-threaded stages plus the handle of the comparison thread.
pub struct Pipeline {
    reasm: Reassembler,
    http: HttpTracker,
    classifier: Classifier,
    namers: Vec<EndpointNamer>,
    matcher: Matcher,
    pair_names: Vec<String>,
    flow_memory: usize,
    events: Vec<StreamEvent>,
    exchanges: Vec<Exchange>,
    outcomes: Vec<MatchOutcome>,
    records: Option<RecordSink>,
    compare: Option<CompareQueue>,
    shared: Shared,
    now: Nanos,
    next_expire: Nanos,
    stats: PipelineStats,
    record_error: Option<std::io::Error>,
    capture_dropped: BTreeMap<String, u64>,
}

impl Pipeline {
    /// Build the stages from a validated configuration. `records` receives exchange records;
    /// the comparison thread starts when the configuration has pairs.
    pub fn new(
        cfg: &Config,
        records: Option<RecordSink>,
        policy: QueuePolicy,
        shared: Shared,
        hook: Option<VerdictHook>,
    ) -> Pipeline {
        let limits = &cfg.limits;
        // Labels (metrics, summary, store) need the rules only, not the install's key: a
        // sensitive path segment becomes a constant. They are masked even under `--unmasked`
        // so metric series do not change with a debugging flag.
        let label_masker = Arc::new(Masker::new(cfg, [0; 32], true));
        let compare = (!cfg.pairs.is_empty()).then(|| {
            CompareQueue::start(
                cfg,
                limits.compare_queue,
                policy,
                shared.clone(),
                hook,
                label_masker.clone(),
            )
        });
        Pipeline {
            reasm: Reassembler::new(
                ReassemblyConfig::from_limits(limits),
                cfg.capture.targets.clone(),
            ),
            http: HttpTracker::new(HttpConfig::from_limits(limits)),
            classifier: Classifier::new(&cfg.pairs),
            namers: cfg
                .pairs
                .iter()
                .map(|p| {
                    EndpointNamer::new(&p.endpoints, p.max_endpoints)
                        .with_masker(label_masker.clone())
                })
                .collect(),
            matcher: Matcher::new(
                cfg.pairs
                    .iter()
                    .map(|p| PairSettings {
                        correlation_header: p.correlation_header.clone(),
                        match_timeout_ns: p.match_timeout.as_nanos_u64(),
                        sample: p.sample,
                    })
                    .collect(),
                MatcherLimits {
                    pending_pairs: limits.pending_pairs,
                    pending_memory: limits.pending_memory.as_usize(),
                },
            ),
            pair_names: cfg.pairs.iter().map(|p| p.name.clone()).collect(),
            flow_memory: limits.flow_memory.as_usize(),
            events: Vec::with_capacity(64),
            exchanges: Vec::with_capacity(16),
            outcomes: Vec::with_capacity(16),
            records,
            compare,
            shared,
            now: Nanos(0),
            next_expire: Nanos(0),
            stats: PipelineStats::default(),
            record_error: None,
            capture_dropped: BTreeMap::new(),
        }
    }

    /// The pipeline's current time: the latest time it was given.
    pub fn now(&self) -> Nanos {
        self.now
    }

    /// Push one segment; its timestamp advances the pipeline's time (never backwards).
    pub fn push(&mut self, seg: Segment) {
        self.stats.segments += 1;
        if seg.ts > self.now {
            self.now = seg.ts;
        }
        self.reasm.push(seg, &mut self.events);
        self.drain_events();
        self.enforce_flow_memory();
        if self.now >= self.next_expire {
            self.tick(self.now);
        }
    }

    /// Advance time to `now` and run every timeout due (live capture calls this periodically).
    pub fn tick(&mut self, now: Nanos) {
        if now > self.now {
            self.now = now;
        }
        self.next_expire = Nanos(self.now.0.saturating_add(EXPIRE_EVERY_NS));
        self.reasm.expire(self.now, &mut self.events);
        self.drain_events();
        self.matcher.expire(self.now, &mut self.outcomes);
        self.drain_outcomes();
        self.flush_compare();
    }

    /// End of input: close every flow, time out every pending exchange, wait for the comparison
    /// thread, flush records. Returns the first error writing records, if any.
    pub fn finish(&mut self) -> std::io::Result<()> {
        let now = self.now;
        self.reasm.finish(now, &mut self.events);
        self.drain_events();
        self.matcher.finish(&mut self.outcomes);
        self.drain_outcomes();
        self.flush_compare();
        if let Some(c) = self.compare.take() {
            c.finish();
        }
        self.publish();
        if let Some(r) = &mut self.records {
            if let Err(e) = r.flush() {
                self.record_error.get_or_insert(e);
            }
        }
        match self.record_error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Flush exchange records written so far (live capture, periodically).
    pub fn flush_records(&mut self) {
        if let Some(r) = &mut self.records {
            if let Err(e) = r.flush() {
                self.record_error.get_or_insert(e);
            }
        }
    }

    /// Set the capture source's loss totals by reason (kernel drops live, reader skips in
    /// replay); they appear in metrics and the summary at the next [`Pipeline::publish`].
    pub fn set_capture_dropped(&mut self, dropped: BTreeMap<String, u64>) {
        self.capture_dropped = dropped;
    }

    /// Counters of the pipeline.
    pub fn stats(&self) -> &PipelineStats {
        &self.stats
    }

    /// Reassembly counters.
    pub fn reassembly_stats(&self) -> &crate::reassembly::ReassemblyStats {
        self.reasm.stats()
    }

    /// HTTP counters.
    pub fn http_stats(&self) -> &crate::http::HttpStats {
        self.http.stats()
    }

    /// Flows being reassembled.
    pub fn flows_active(&self) -> usize {
        self.reasm.flows_active()
    }

    /// Exchanges waiting for their counterpart.
    pub fn pending_pairs(&self) -> usize {
        self.matcher.pending()
    }

    /// Replace the known server addresses (live reload of targets).
    pub fn set_targets(&mut self, targets: Vec<crate::config::ServerAddr>) {
        self.reasm.set_servers(targets);
    }

    /// Apply new limits (live reload). Bounds that shrink take effect as state is touched.
    pub fn set_limits(&mut self, limits: &crate::config::Limits) {
        self.reasm.set_config(ReassemblyConfig::from_limits(limits));
        self.http.set_config(HttpConfig::from_limits(limits));
        self.matcher.set_limits(MatcherLimits {
            pending_pairs: limits.pending_pairs,
            pending_memory: limits.pending_memory.as_usize(),
        });
        self.flow_memory = limits.flow_memory.as_usize();
        if let Some(q) = &mut self.compare {
            q.resize(limits.compare_queue);
        }
    }

    /// Copy stage counters into metrics and the summary's capture section.
    pub fn publish(&self) {
        let m = &self.shared.metrics;
        let r = self.reasm.stats();
        Metrics::set_total(&m.segments, &[], self.stats.segments);
        Metrics::set_total(&m.gaps, &["gap"], r.gaps.gap);
        Metrics::set_total(&m.gaps, &["snaplen"], r.gaps.snaplen);
        Metrics::set_total(&m.gap_bytes, &["gap"], r.gap_bytes.gap);
        Metrics::set_total(&m.gap_bytes, &["snaplen"], r.gap_bytes.snaplen);
        Metrics::set_total(&m.dropped, &["reassembly", "evicted"], r.evictions);
        Metrics::set_total(
            &m.dropped,
            &["reassembly", "duplicate_segment"],
            r.duplicate_segments,
        );
        for (reason, n) in r.ignored.by_reason() {
            Metrics::set_total(&m.dropped, &["reassembly", reason], n);
        }
        Metrics::set_total(&m.http_exchanges, &["true"], self.stats.complete);
        Metrics::set_total(
            &m.http_exchanges,
            &["false"],
            self.stats.exchanges - self.stats.complete,
        );
        for reason in IncompleteReason::ALL {
            Metrics::set_total(
                &m.incomplete,
                &[reason.as_str()],
                self.stats.incomplete[reason as usize],
            );
        }
        let h = self.http.stats();
        for a in crate::exchange::Anomaly::ALL {
            Metrics::set_total(&m.anomalies, &[a.as_str()], h.anomaly(a));
        }
        Metrics::set_total(&m.dropped, &["http", "non_http"], h.non_http_connections);
        Metrics::set_total(
            &m.dropped,
            &["http", "pending_overflow"],
            h.pending_overflow,
        );
        m.flows_active.set(self.reasm.flows_active() as i64);
        m.pending_pairs.set(self.matcher.pending() as i64);
        m.memory
            .with_label_values(&["flows"])
            .set((self.reasm.memory_used() + self.http.memory_used()) as i64);
        m.memory
            .with_label_values(&["pending"])
            .set(self.matcher.memory_used() as i64);
        for (reason, n) in &self.capture_dropped {
            Metrics::set_total(&m.capture_dropped, &[reason], *n);
        }
        if let Ok(mut s) = self.shared.summary.lock() {
            s.set_capture(self.capture_dropped.clone(), r.gaps.gap + r.gaps.snaplen);
        }
    }

    fn drain_events(&mut self) {
        if self.events.is_empty() {
            return;
        }
        let mut events = std::mem::take(&mut self.events);
        for ev in events.drain(..) {
            self.http.on_event(ev, &mut self.exchanges);
            if !self.exchanges.is_empty() {
                self.drain_exchanges();
            }
        }
        self.events = events;
    }

    fn enforce_flow_memory(&mut self) {
        while self.reasm.memory_used() + self.http.memory_used() > self.flow_memory {
            if !self.reasm.evict_lru(self.now, &mut self.events) {
                break;
            }
            self.stats.evicted_for_memory += 1;
            self.drain_events();
        }
    }

    fn drain_exchanges(&mut self) {
        let mut exchanges = std::mem::take(&mut self.exchanges);
        for ex in exchanges.drain(..) {
            self.on_exchange(ex);
        }
        self.exchanges = exchanges;
    }

    fn on_exchange(&mut self, ex: Exchange) {
        self.stats.exchanges += 1;
        match ex.incomplete {
            None => self.stats.complete += 1,
            Some(r) => self.stats.incomplete[r as usize] += 1,
        }
        if let Some(r) = &mut self.records {
            if let Err(e) = r.write(&ex) {
                self.record_error.get_or_insert(e);
            }
        }
        let Some((pair, role)) = self.classifier.classify(&ex.server) else {
            return;
        };
        self.stats.classified += 1;
        let pair_name = self.pair_names.get(pair).map(String::as_str).unwrap_or("");
        let m = &self.shared.metrics;
        m.exchanges
            .with_label_values(&[pair_name, role.as_str()])
            .inc();
        let endpoint = match (&ex.request, self.namers.get_mut(pair)) {
            (Some(req), Some(namer)) => namer.name(&req.method_str(), &req.uri_str()),
            _ => Arc::from("other"),
        };
        if let (None, Some(lat)) = (ex.incomplete, ex.latency_nanos()) {
            m.latency
                .with_label_values(&[pair_name, &endpoint, role.as_str()])
                .observe(lat as f64 / 1e9);
        }
        self.matcher
            .push(pair, role, endpoint, ex, self.now, &mut self.outcomes);
        self.drain_outcomes();
    }

    fn drain_outcomes(&mut self) {
        for o in std::mem::take(&mut self.outcomes) {
            match o {
                MatchOutcome::Unmatched(u) => self.count_unmatched(&u),
                MatchOutcome::Compare(job) => {
                    let Some(q) = &mut self.compare else {
                        continue;
                    };
                    let rejected = q.push(job);
                    self.count_queue_full(rejected);
                }
            }
        }
    }

    /// Hand the pairs gathered so far to the comparison thread. The pipeline sends them in
    /// batches (one wake-up of the thread per batch, not per pair); the live loop calls this
    /// after every batch of captured segments so a pair never waits for a full batch.
    pub fn flush_compare(&mut self) {
        if let Some(q) = &mut self.compare {
            let rejected = q.flush();
            self.count_queue_full(rejected);
        }
    }

    fn count_queue_full(&self, rejected: Batch) {
        for job in rejected {
            let u = Unmatched {
                pair: job.pair,
                endpoint: job.endpoint.clone(),
                fault: Fault::Both,
                reason: UnmatchedReason::QueueFull,
            };
            self.count_unmatched(&u);
        }
    }

    fn count_unmatched(&self, u: &Unmatched) {
        let name = self
            .pair_names
            .get(u.pair)
            .map(String::as_str)
            .unwrap_or("");
        self.shared
            .metrics
            .unmatched
            .with_label_values(&[name, u.fault.as_str(), u.reason.as_str()])
            .inc();
        if let Ok(mut s) = self.shared.summary.lock() {
            s.add_unmatched(u.pair, &u.endpoint, u.reason);
        }
    }
}

/// Most pairs sent to the comparison thread at once.
const MAX_COMPARE_BATCH: usize = 32;

/// Pairs sent to the comparison thread at once. Boxed: a batch sent with one pair in it must not
/// carry room for `batch` whole pairs while it waits.
type Batch = Vec<Box<PairJob>>;

/// The bounded queue in front of the comparison thread. Pairs travel in batches: waking the
/// thread for every pair cost more than comparing a small pair. Within `compare_queue` pairs in
/// all: `capacity × batch` queued (counting the not yet started rest of the batch being
/// compared), the batch being filled and the pair being compared.
struct CompareQueue {
    tx: QueueTx,
    worker: JoinHandle<()>,
    /// Pairs sent and not yet started by the comparison thread.
    depth: Arc<std::sync::atomic::AtomicI64>,
    metrics: Arc<Metrics>,
    pending: Batch,
    batch: usize,
}

/// The sending side of the queue, by [`QueuePolicy`].
enum QueueTx {
    /// Replay: a channel of `capacity` batches; a full one makes the sender wait.
    Block(SyncSender<Batch>),
    /// Live capture: the bound is the count of queued pairs against `limit`, checked before
    /// sending, so that a reload can change it; a batch over it is refused, never waited for.
    Drop {
        tx: mpsc::Sender<Batch>,
        limit: usize,
    },
}

/// Batch size and channel capacity (in batches) for a queue of `compare_queue` pairs:
/// `capacity × batch + 2 × batch ≤ compare_queue` whenever `compare_queue ≥ 3`.
fn compare_batching(compare_queue: usize) -> (usize, usize) {
    let batch = (compare_queue / 16).clamp(1, MAX_COMPARE_BATCH);
    let capacity = (compare_queue / batch).saturating_sub(2).max(1);
    (batch, capacity)
}

impl CompareQueue {
    fn start(
        cfg: &Config,
        compare_queue: usize,
        policy: QueuePolicy,
        shared: Shared,
        hook: Option<VerdictHook>,
        label_masker: Arc<Masker>,
    ) -> CompareQueue {
        let (batch, capacity) = compare_batching(compare_queue);
        let (tx, rx) = match policy {
            QueuePolicy::Block => {
                let (tx, rx) = mpsc::sync_channel(capacity);
                (QueueTx::Block(tx), rx)
            }
            QueuePolicy::Drop => {
                let (tx, rx) = mpsc::channel();
                let limit = capacity * batch;
                (QueueTx::Drop { tx, limit }, rx)
            }
        };
        let depth = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let worker = CompareWorker {
            comparators: cfg.pairs.iter().map(Comparator::new).collect(),
            names: cfg.pairs.iter().map(|p| p.name.clone()).collect(),
            shared: shared.clone(),
            hook,
            depth: depth.clone(),
            label_masker,
        };
        let worker = std::thread::Builder::new()
            .name("parity-compare".into())
            .spawn(move || worker.run(rx))
            .unwrap_or_else(|e| {
                // Without a thread there is no comparison at all; that is not recoverable.
                panic!("cannot start the comparison thread: {e}")
            });
        CompareQueue {
            tx,
            worker,
            depth,
            metrics: shared.metrics,
            pending: Vec::with_capacity(batch),
            batch,
        }
    }

    /// Add a job; sends the batch when it is full. Returns the jobs refused (the whole batch,
    /// when the queue is full under [`QueuePolicy::Drop`]).
    fn push(&mut self, job: Box<PairJob>) -> Batch {
        self.pending.push(job);
        if self.pending.len() >= self.batch {
            self.flush()
        } else {
            Vec::new()
        }
    }

    /// Send the batch being filled; returns it back when the queue is full under
    /// [`QueuePolicy::Drop`].
    fn flush(&mut self) -> Batch {
        if self.pending.is_empty() {
            return Vec::new();
        }
        let jobs = std::mem::replace(&mut self.pending, Vec::with_capacity(self.batch));
        let n = jobs.len() as i64;
        if let QueueTx::Drop { limit, .. } = &self.tx {
            // Only this thread adds to the depth, so it cannot grow between check and send (a
            // stale read can only be too high). A batch filled before a reload shrank the queue
            // can be larger than the new bound: it is refused like any other.
            let queued = self.depth.load(std::sync::atomic::Ordering::Relaxed);
            if queued + n > *limit as i64 {
                return jobs;
            }
        }
        let d = self
            .depth
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed)
            + n;
        self.metrics.compare_queue.set(d);
        let r = match &self.tx {
            QueueTx::Block(tx) => tx.send(jobs).map_err(|e| e.0),
            QueueTx::Drop { tx, .. } => tx.send(jobs).map_err(|e| e.0),
        };
        match r {
            Ok(()) => Vec::new(),
            Err(jobs) => {
                self.depth
                    .fetch_sub(n, std::sync::atomic::Ordering::Relaxed);
                jobs
            }
        }
    }

    /// A new `compare_queue` (live reload). Under [`QueuePolicy::Drop`] the new bound applies
    /// to the next batch; pairs already queued beyond a smaller one are compared, not dropped.
    /// A waiting queue ([`QueuePolicy::Block`], replay) keeps the channel it started with.
    fn resize(&mut self, compare_queue: usize) {
        let (batch, capacity) = compare_batching(compare_queue);
        if let QueueTx::Drop { limit, .. } = &mut self.tx {
            *limit = capacity * batch;
            self.batch = batch;
        }
    }

    fn finish(self) {
        drop(self.tx);
        if self.worker.join().is_err() {
            tracing::error!("the comparison thread panicked; its last results are lost");
        }
    }
}

struct CompareWorker {
    comparators: Vec<Comparator>,
    names: Vec<String>,
    shared: Shared,
    hook: Option<VerdictHook>,
    depth: Arc<std::sync::atomic::AtomicI64>,
    label_masker: Arc<Masker>,
}

impl CompareWorker {
    fn run(mut self, rx: Receiver<Batch>) {
        for jobs in rx {
            for job in jobs {
                let d = self
                    .depth
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed)
                    - 1;
                self.shared.metrics.compare_queue.set(d.max(0));
                self.compare_one(*job);
            }
        }
    }

    fn compare_one(&mut self, job: PairJob) {
        let Some(cmp) = self.comparators.get(job.pair) else {
            return;
        };
        let name = self.names.get(job.pair).map(String::as_str).unwrap_or("");
        let t0 = Instant::now();
        let verdict: Verdict = cmp.compare(&job.endpoint, &job.primary, &job.mirror);
        let m = &self.shared.metrics;
        m.compare_duration
            .with_label_values(&[name])
            .observe(t0.elapsed().as_secs_f64());
        let diverged = !verdict.differences.is_empty();
        m.comparisons
            .with_label_values(&[
                name,
                &job.endpoint,
                if diverged { "diverged" } else { "match" },
            ])
            .inc();
        for d in &verdict.differences {
            m.differences
                .with_label_values(&[name, &job.endpoint, d.kind.as_str()])
                .inc();
        }
        let ts = job
            .primary
            .response_end
            .max(job.mirror.response_end)
            .unwrap_or_default();
        let facts = VerdictFacts {
            pair: job.pair,
            endpoint: job.endpoint.clone(),
            differences: verdict
                .differences
                .iter()
                .map(|d| {
                    let path = self.label_masker.label_location(&d.path).into_owned();
                    (path, d.kind.as_str())
                })
                .collect(),
            primary_latency: job.primary.latency_nanos(),
            mirror_latency: job.mirror.latency_nanos(),
            ts,
        };
        if let Ok(mut s) = self.shared.summary.lock() {
            s.add_verdict(&facts);
        }
        if let Some(hook) = &mut self.hook {
            hook(name, &job, &verdict);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::{Body, Headers, Request, Response, Version};
    use crate::stream::ConnId;
    use bytes::Bytes;
    use std::net::SocketAddr;

    fn job() -> Box<PairJob> {
        let ex = Exchange {
            conn: ConnId(1),
            trans_depth: 1,
            client: SocketAddr::from(([127, 0, 0, 1], 40000)),
            server: SocketAddr::from(([127, 0, 0, 1], 80)),
            request: Some(Request {
                method: Bytes::from_static(b"GET"),
                uri: Bytes::from_static(b"/x"),
                version: Version::Http11,
                headers: Headers::from_pairs(&[("x-request-id", "1")]),
                body: Body::empty(),
            }),
            response: Some(Response {
                status: 200,
                reason: Bytes::from_static(b"OK"),
                version: Version::Http11,
                headers: Headers::default(),
                body: Body::empty(),
            }),
            interim: vec![],
            incomplete: None,
            anomalies: vec![],
            request_start: None,
            request_end: None,
            response_start: None,
            response_end: None,
        };
        Box::new(PairJob {
            pair: 0,
            endpoint: Arc::from("GET /x"),
            id: Bytes::from_static(b"1"),
            primary: ex.clone(),
            mirror: ex,
        })
    }

    /// A live queue whose comparison thread is held in its first comparison until `release`
    /// is dropped; the second channel reports each comparison started.
    fn held_queue(compare_queue: usize) -> (CompareQueue, mpsc::Sender<()>, Receiver<()>) {
        let cfg = Config::parse(
            "[[pair]]\nname = \"p\"\nprimary = \"127.0.0.1:80\"\nmirror = \"127.0.0.1:81\"\n",
            "t",
        )
        .unwrap();
        let shared = Shared {
            summary: Arc::new(Mutex::new(Summary::new(&cfg.pairs))),
            metrics: Arc::new(Metrics::new()),
        };
        let (release, held) = mpsc::channel::<()>();
        let (started, seen) = mpsc::channel::<()>();
        let hook: VerdictHook = Box::new(move |_, _, _| {
            let _ = started.send(());
            let _ = held.recv();
        });
        let masker = Arc::new(Masker::new(&cfg, [0; 32], true));
        let q = CompareQueue::start(
            &cfg,
            compare_queue,
            QueuePolicy::Drop,
            shared,
            Some(hook),
            masker,
        );
        (q, release, seen)
    }

    /// Pushes `n` jobs and flushes; returns how many were refused.
    fn offer(q: &mut CompareQueue, n: usize) -> usize {
        let mut refused = 0;
        for _ in 0..n {
            refused += q.push(job()).len();
        }
        refused + q.flush().len()
    }

    #[test]
    fn a_live_queue_refuses_beyond_its_bound_and_a_reload_resizes_it() {
        // 64 pairs: batches of 4, 14 batches = 56 pairs may wait.
        let (mut q, release, seen) = held_queue(64);
        assert_eq!(offer(&mut q, 1), 0);
        seen.recv().unwrap();
        // The worker holds the first pair; 56 more wait, the rest is refused.
        assert_eq!(offer(&mut q, 100), 100 - 56);
        assert_eq!(offer(&mut q, 4), 4, "still full");
        // Reloaded to 4096: 126 batches of 32, so 4032 pairs may wait.
        q.resize(4096);
        assert_eq!(offer(&mut q, 4032 - 56 + 64), 64);
        // Shrunk: what waits is kept (and compared), nothing more is taken.
        q.resize(64);
        assert_eq!(offer(&mut q, 8), 8);
        drop(release);
        q.finish();
    }

    #[test]
    fn compare_batches_stay_within_the_configured_queue() {
        for q in 3..5000 {
            let (batch, capacity) = compare_batching(q);
            assert!(batch >= 1 && capacity >= 1, "{q}");
            assert!(
                capacity * batch + 2 * batch <= q,
                "{q}: {batch} × {capacity}"
            );
        }
        assert_eq!(compare_batching(4096), (32, 126));
        assert_eq!(compare_batching(1), (1, 1));
    }
}
