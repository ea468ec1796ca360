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
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
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
    }

    /// End of input: close every flow, time out every pending exchange, wait for the comparison
    /// thread, flush records. Returns the first error writing records, if any.
    pub fn finish(&mut self) -> std::io::Result<()> {
        let now = self.now;
        self.reasm.finish(now, &mut self.events);
        self.drain_events();
        self.matcher.finish(&mut self.outcomes);
        self.drain_outcomes();
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
                    let Some(q) = &self.compare else {
                        continue;
                    };
                    if let Err(job) = q.send(job) {
                        let u = Unmatched {
                            pair: job.pair,
                            endpoint: job.endpoint.clone(),
                            fault: Fault::Both,
                            reason: UnmatchedReason::QueueFull,
                        };
                        self.count_unmatched(&u);
                    }
                }
            }
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

/// The bounded queue in front of the comparison thread.
struct CompareQueue {
    tx: SyncSender<Box<PairJob>>,
    policy: QueuePolicy,
    worker: JoinHandle<()>,
    depth: Arc<std::sync::atomic::AtomicI64>,
    metrics: Arc<Metrics>,
}

impl CompareQueue {
    fn start(
        cfg: &Config,
        capacity: usize,
        policy: QueuePolicy,
        shared: Shared,
        hook: Option<VerdictHook>,
        label_masker: Arc<Masker>,
    ) -> CompareQueue {
        let (tx, rx) = mpsc::sync_channel(capacity);
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
            policy,
            worker,
            depth,
            metrics: shared.metrics,
        }
    }

    /// Hand a job over; returns it back when the queue is full under [`QueuePolicy::Drop`].
    fn send(&self, job: Box<PairJob>) -> Result<(), Box<PairJob>> {
        let d = self
            .depth
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        self.metrics.compare_queue.set(d);
        let r = match self.policy {
            QueuePolicy::Block => self.tx.send(job).map_err(|e| e.0),
            QueuePolicy::Drop => self.tx.try_send(job).map_err(|e| match e {
                TrySendError::Full(j) | TrySendError::Disconnected(j) => j,
            }),
        };
        if r.is_err() {
            self.depth
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        r
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
    fn run(mut self, rx: Receiver<Box<PairJob>>) {
        for job in rx {
            let d = self
                .depth
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed)
                - 1;
            self.shared.metrics.compare_queue.set(d.max(0));
            self.compare_one(*job);
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
