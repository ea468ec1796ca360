//! Pairing of primary and mirror exchanges by correlation id, within a time window.
//!
//! Exchanges arrive one at a time with their pair and role. Equal correlation-id values of the
//! two roles form a pair; several exchanges with one id pair first-in-first-out. Every id that
//! does not end in a comparison leaves exactly one [`Unmatched`] with the side at fault and one
//! reason. To count an id once even when it is not compared (sampled out, or one side lost bytes),
//! both sides still meet here: an exchange that will not be compared waits as a light entry
//! without its bodies.
//!
//! Time is the caller's `now` (capture time in replay, a monotonic clock live). The table is
//! bounded by `pending_pairs` entries and `pending_memory` bytes; beyond either, the entry that
//! would time out first is evicted and counted.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::classify::Role;
use crate::exchange::{Exchange, IncompleteReason};
use crate::segment::Nanos;

/// Why a correlation id did not end in a comparison. The names are a contract (metrics, reports).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum UnmatchedReason {
    /// The other side never came within `match_timeout`.
    Timeout,
    /// The exchange carried no correlation header (or no request was seen).
    MissingId,
    /// A left-over duplicate of an id that had already been paired (or was waiting twice).
    DuplicateId,
    /// parity's capture lost bytes of an exchange (gap, snap length): not comparable.
    CaptureGap,
    /// A side's request got no complete response (reset, closed, malformed).
    NoResponse,
    /// The pending table was full and this entry was the oldest.
    Evicted,
    /// The comparison queue was full.
    QueueFull,
    /// Not in the sampled fraction.
    SampledOut,
}

impl UnmatchedReason {
    /// Every reason, in documentation order (reports list them all, zero-filled).
    pub const ALL: [UnmatchedReason; 8] = [
        UnmatchedReason::Timeout,
        UnmatchedReason::MissingId,
        UnmatchedReason::DuplicateId,
        UnmatchedReason::CaptureGap,
        UnmatchedReason::NoResponse,
        UnmatchedReason::Evicted,
        UnmatchedReason::QueueFull,
        UnmatchedReason::SampledOut,
    ];

    /// The name in metrics and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            UnmatchedReason::Timeout => "timeout",
            UnmatchedReason::MissingId => "missing_id",
            UnmatchedReason::DuplicateId => "duplicate_id",
            UnmatchedReason::CaptureGap => "capture_gap",
            UnmatchedReason::NoResponse => "no_response",
            UnmatchedReason::Evicted => "evicted",
            UnmatchedReason::QueueFull => "queue_full",
            UnmatchedReason::SampledOut => "sampled_out",
        }
    }

    /// Position in [`UnmatchedReason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The side at fault for an unmatched id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// The primary's side.
    Primary,
    /// The mirror's side.
    Mirror,
    /// Both sides (or neither in particular: sampling, a full queue).
    Both,
}

impl Fault {
    /// `"primary"`, `"mirror"` or `"both"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Primary => "primary",
            Fault::Mirror => "mirror",
            Fault::Both => "both",
        }
    }

    fn of(role: Role) -> Fault {
        match role {
            Role::Primary => Fault::Primary,
            Role::Mirror => Fault::Mirror,
        }
    }
}

/// One id that did not end in a comparison.
#[derive(Clone, Debug, PartialEq)]
pub struct Unmatched {
    /// Pair index.
    pub pair: usize,
    /// Endpoint label of the exchange.
    pub endpoint: Arc<str>,
    /// Side at fault.
    pub fault: Fault,
    /// Why.
    pub reason: UnmatchedReason,
}

/// A primary and a mirror exchange to compare.
#[derive(Clone, Debug)]
pub struct PairJob {
    /// Pair index.
    pub pair: usize,
    /// Endpoint label (from the primary's request).
    pub endpoint: Arc<str>,
    /// The correlation id.
    pub id: Bytes,
    /// The primary's exchange.
    pub primary: Exchange,
    /// The mirror's exchange.
    pub mirror: Exchange,
}

/// What the matcher decided.
#[derive(Clone, Debug)]
pub enum MatchOutcome {
    /// Compare these.
    Compare(Box<PairJob>),
    /// Count this.
    Unmatched(Unmatched),
}

/// Per-pair settings the matcher needs.
#[derive(Clone, Debug)]
pub struct PairSettings {
    /// Correlation header name, lower-case.
    pub correlation_header: String,
    /// Pairing window.
    pub match_timeout_ns: u64,
    /// Sampled fraction.
    pub sample: f64,
}

/// Table bounds.
#[derive(Clone, Copy, Debug)]
pub struct MatcherLimits {
    /// Entries waiting, all pairs together.
    pub pending_pairs: usize,
    /// Bytes of the exchanges waiting.
    pub pending_memory: usize,
}

/// Counters of the matcher.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MatcherStats {
    /// Exchanges pushed.
    pub exchanges: u64,
    /// Pairs formed (compared or not).
    pub paired: u64,
    /// Pairs handed over for comparison.
    pub compare_jobs: u64,
    /// Unmatched ids by reason, in [`UnmatchedReason::ALL`] order.
    pub unmatched: [u64; 8],
    /// Exchanges that came after their counterpart had already timed out (the id was counted
    /// then, as `timeout`, and is not counted again).
    pub late: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Recent {
    Paired,
    TimedOut(Role),
}

struct Entry {
    key: (u32, Bytes),
    role: Role,
    endpoint: Arc<str>,
    deadline: Nanos,
    /// `None` when the id will not be compared (sampled out): only its arrival matters.
    exchange: Option<Exchange>,
    bytes: usize,
    duplicate: bool,
}

/// The pending table.
pub struct Matcher {
    pairs: Vec<PairSettings>,
    limits: MatcherLimits,
    next_seq: u64,
    entries: FxHashMap<u64, Entry>,
    /// Waiting entries of one role per (pair, id), oldest first.
    waiting: FxHashMap<(u32, Bytes), VecDeque<u64>>,
    /// Entries by deadline.
    expiry: BTreeMap<(Nanos, u64), ()>,
    /// Ids that recently paired or timed out: a later arrival is a duplicate, or the late other
    /// side of an id already counted as timed out (absorbed, so the id is counted once).
    recent: FxHashMap<(u32, Bytes), (Nanos, Recent)>,
    recent_order: VecDeque<(Nanos, (u32, Bytes))>,
    memory: usize,
    stats: MatcherStats,
}

/// How long, in pairing windows after its deadline, an id that timed out is remembered: its other
/// side arriving within this horizon is absorbed as late (the id was counted already) instead of
/// waiting and being counted a second time, against the wrong side. A mirror up to ten times
/// slower than `match_timeout` is still counted once. The memory stays bounded by
/// `pending_pairs` remembered ids.
const LATE_WINDOWS: u64 = 10;

/// Fixed bookkeeping cost of one entry, on top of the exchange's own heap bytes.
const ENTRY_OVERHEAD: usize = 256;

impl Matcher {
    /// A matcher for `pairs` (indexes follow the configuration).
    pub fn new(pairs: Vec<PairSettings>, limits: MatcherLimits) -> Matcher {
        Matcher {
            pairs,
            limits,
            next_seq: 0,
            entries: FxHashMap::default(),
            waiting: FxHashMap::default(),
            expiry: BTreeMap::new(),
            recent: FxHashMap::default(),
            recent_order: VecDeque::new(),
            memory: 0,
            stats: MatcherStats::default(),
        }
    }

    /// Apply new bounds (a configuration reload); the table shrinks at the next push.
    pub fn set_limits(&mut self, limits: MatcherLimits) {
        self.limits = limits;
    }

    /// Entries waiting for their counterpart.
    pub fn pending(&self) -> usize {
        self.entries.len()
    }

    /// Estimated bytes held by waiting entries.
    pub fn memory_used(&self) -> usize {
        self.memory
    }

    /// Counters.
    pub fn stats(&self) -> &MatcherStats {
        &self.stats
    }

    /// Offer one exchange of `pair` as `role`; `endpoint` is its label.
    pub fn push(
        &mut self,
        pair: usize,
        role: Role,
        endpoint: Arc<str>,
        ex: Exchange,
        now: Nanos,
        out: &mut Vec<MatchOutcome>,
    ) {
        self.stats.exchanges += 1;
        self.expire(now, out);
        let Some(settings) = self.pairs.get(pair) else {
            return;
        };
        let id = ex
            .request
            .as_ref()
            .and_then(|r| r.headers.get(&settings.correlation_header))
            .map(trim_bytes)
            .filter(|v| !v.is_empty());
        let (window, sample) = (settings.match_timeout_ns, settings.sample);
        let Some(id) = id else {
            self.unmatched(
                pair,
                endpoint,
                Fault::of(role),
                UnmatchedReason::MissingId,
                out,
            );
            return;
        };
        let key = (pair as u32, id);
        if let Some(Recent::TimedOut(r)) = self.recent_at(&key, now) {
            if r == role.other() {
                self.stats.late += 1;
                self.recent.remove(&key);
                return;
            }
        }

        // A waiting entry of the other role completes the pair.
        if let Some(queue) = self.waiting.get_mut(&key) {
            let front_role = queue
                .front()
                .and_then(|s| self.entries.get(s))
                .map(|e| e.role);
            if front_role == Some(role.other()) {
                let seq = queue.pop_front();
                if queue.is_empty() {
                    self.waiting.remove(&key);
                }
                if let Some(other) = seq.and_then(|s| self.take(s)) {
                    self.remember(key.clone(), now, window, Recent::Paired);
                    self.resolve(other, role, endpoint, ex, out);
                    return;
                }
            }
        }

        let sampled = sample_hit(&key.1, sample);
        let duplicate =
            self.waiting.contains_key(&key) || self.recent_at(&key, now) == Some(Recent::Paired);
        let exchange = sampled.then(|| {
            let mut ex = ex;
            ex.compact();
            ex
        });
        let bytes = ENTRY_OVERHEAD + exchange.as_ref().map(exchange_heap_bytes).unwrap_or(0);
        let seq = self.next_seq;
        self.next_seq += 1;
        let deadline = Nanos(now.0.saturating_add(window));
        self.waiting.entry(key.clone()).or_default().push_back(seq);
        self.expiry.insert((deadline, seq), ());
        self.memory += bytes;
        self.entries.insert(
            seq,
            Entry {
                key,
                role,
                endpoint,
                deadline,
                exchange,
                bytes,
                duplicate,
            },
        );
        while self.entries.len() > self.limits.pending_pairs
            || self.memory > self.limits.pending_memory
        {
            let Some((&(_, oldest), ())) = self.expiry.iter().next() else {
                break;
            };
            let Some(e) = self.take_waiting(oldest) else {
                break;
            };
            self.unmatched(
                e.key.0 as usize,
                e.endpoint,
                Fault::of(e.role.other()),
                UnmatchedReason::Evicted,
                out,
            );
        }
    }

    /// Count entries whose window has passed.
    pub fn expire(&mut self, now: Nanos, out: &mut Vec<MatchOutcome>) {
        while let Some((&(deadline, seq), ())) = self.expiry.iter().next() {
            if deadline > now {
                break;
            }
            match self.take_waiting(seq) {
                Some(e) => {
                    let window = self
                        .pairs
                        .get(e.key.0 as usize)
                        .map(|p| p.match_timeout_ns)
                        .unwrap_or(0);
                    if !e.duplicate {
                        self.remember(
                            e.key.clone(),
                            deadline,
                            window.saturating_mul(LATE_WINDOWS),
                            Recent::TimedOut(e.role),
                        );
                    }
                    self.time_out(e, out)
                }
                None => {
                    self.expiry.remove(&(deadline, seq));
                }
            }
        }
        while let Some((t, _)) = self.recent_order.front() {
            if *t > now && self.recent_order.len() <= self.limits.pending_pairs {
                break;
            }
            if let Some((t, key)) = self.recent_order.pop_front() {
                if self.recent.get(&key).map(|(u, _)| *u) == Some(t) {
                    self.recent.remove(&key);
                }
            }
        }
    }

    /// End of input: every waiting entry times out, in deadline order.
    pub fn finish(&mut self, out: &mut Vec<MatchOutcome>) {
        self.expire(Nanos(u64::MAX), out);
    }

    fn time_out(&mut self, e: Entry, out: &mut Vec<MatchOutcome>) {
        let pair = e.key.0 as usize;
        if e.exchange.is_none() {
            self.unmatched(
                pair,
                e.endpoint,
                Fault::Both,
                UnmatchedReason::SampledOut,
                out,
            );
        } else if e.duplicate {
            self.unmatched(
                pair,
                e.endpoint,
                Fault::of(e.role),
                UnmatchedReason::DuplicateId,
                out,
            );
        } else {
            self.unmatched(
                pair,
                e.endpoint,
                Fault::of(e.role.other()),
                UnmatchedReason::Timeout,
                out,
            );
        }
    }

    fn resolve(
        &mut self,
        waiting: Entry,
        role: Role,
        endpoint: Arc<str>,
        ex: Exchange,
        out: &mut Vec<MatchOutcome>,
    ) {
        self.stats.paired += 1;
        let pair = waiting.key.0 as usize;
        let Some(waiting_ex) = waiting.exchange else {
            self.unmatched(
                pair,
                waiting.endpoint,
                Fault::Both,
                UnmatchedReason::SampledOut,
                out,
            );
            return;
        };
        // The newcomer waits in the comparison queue next: it must not pin capture buffers.
        let mut ex = ex;
        ex.compact();
        let (primary, mirror, endpoint) = match role {
            Role::Mirror => (waiting_ex, ex, waiting.endpoint),
            Role::Primary => (ex, waiting_ex, endpoint),
        };
        if let Some((fault, reason)) = not_comparable(&primary, &mirror) {
            self.unmatched(pair, endpoint, fault, reason, out);
            return;
        }
        self.stats.compare_jobs += 1;
        out.push(MatchOutcome::Compare(Box::new(PairJob {
            pair,
            endpoint,
            id: waiting.key.1,
            primary,
            mirror,
        })));
    }

    fn unmatched(
        &mut self,
        pair: usize,
        endpoint: Arc<str>,
        fault: Fault,
        reason: UnmatchedReason,
        out: &mut Vec<MatchOutcome>,
    ) {
        self.stats.unmatched[reason.index()] += 1;
        out.push(MatchOutcome::Unmatched(Unmatched {
            pair,
            endpoint,
            fault,
            reason,
        }));
    }

    /// Remove an entry from every index.
    fn take(&mut self, seq: u64) -> Option<Entry> {
        let e = self.entries.remove(&seq)?;
        self.expiry.remove(&(e.deadline, seq));
        self.memory -= e.bytes;
        Some(e)
    }

    /// Remove an entry that is still in its waiting queue.
    fn take_waiting(&mut self, seq: u64) -> Option<Entry> {
        let e = self.take(seq)?;
        if let Some(q) = self.waiting.get_mut(&e.key) {
            q.retain(|s| *s != seq);
            if q.is_empty() {
                self.waiting.remove(&e.key);
            }
        }
        Some(e)
    }

    /// What is remembered of `key` at `now`. Entries outlive their horizon in the map until
    /// they reach the front of `recent_order` (horizons differ by kind, so the queue is not
    /// sorted), hence the check.
    fn recent_at(&self, key: &(u32, Bytes), now: Nanos) -> Option<Recent> {
        self.recent
            .get(key)
            .filter(|(until, _)| *until > now)
            .map(|(_, r)| *r)
    }

    /// Remember `key` as `what` for `keep` nanoseconds from `from`.
    fn remember(&mut self, key: (u32, Bytes), from: Nanos, keep: u64, what: Recent) {
        let until = Nanos(from.0.saturating_add(keep));
        self.recent.insert(key.clone(), (until, what));
        self.recent_order.push_back((until, key));
    }
}

/// Why a formed pair cannot be compared, if it cannot: our own capture losses first, then a
/// side without a complete response. A body that failed to decode is still compared (as bytes).
fn not_comparable(primary: &Exchange, mirror: &Exchange) -> Option<(Fault, UnmatchedReason)> {
    let fault = |p: bool, m: bool| match (p, m) {
        (true, true) => Some(Fault::Both),
        (true, false) => Some(Fault::Primary),
        (false, true) => Some(Fault::Mirror),
        (false, false) => None,
    };
    let lost = |e: &Exchange| e.incomplete.is_some_and(IncompleteReason::is_capture_loss);
    if let Some(f) = fault(lost(primary), lost(mirror)) {
        return Some((f, UnmatchedReason::CaptureGap));
    }
    let broken = |e: &Exchange| {
        e.response.is_none()
            || e.incomplete
                .is_some_and(|r| r != IncompleteReason::DecodeError)
    };
    fault(broken(primary), broken(mirror)).map(|f| (f, UnmatchedReason::NoResponse))
}

fn trim_bytes(v: &[u8]) -> Bytes {
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map(|i| i + 1)
        .unwrap_or(start);
    Bytes::copy_from_slice(&v[start..end.max(start)])
}

/// The sampling decision for a correlation id: `splitmix64(fnv1a64(id)) < sample * 2^64`.
///
/// A pure function of the id's bytes, documented in README, so every agent (and both roles)
/// decide alike without coordination.
pub fn sample_hit(id: &[u8], sample: f64) -> bool {
    if sample >= 1.0 {
        return true;
    }
    if sample <= 0.0 {
        return false;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h as f64) < sample * (u64::MAX as f64)
}

/// Estimated heap bytes of an exchange (heads and kept bodies).
pub fn exchange_heap_bytes(e: &Exchange) -> usize {
    let mut n = std::mem::size_of::<Exchange>();
    if let Some(r) = &e.request {
        n += r.headers.heap_bytes() + r.body.kept.len() + r.uri.len() + r.method.len();
    }
    if let Some(r) = &e.response {
        n += r.headers.heap_bytes() + r.body.kept.len() + r.reason.len();
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::{Body, Headers, Request, Response, Version};
    use crate::stream::ConnId;

    fn ex(id: Option<&str>, status: u16, incomplete: Option<IncompleteReason>) -> Exchange {
        let mut headers = vec![("host", "svc")];
        if let Some(id) = id {
            headers.push(("x-request-id", id));
        }
        Exchange {
            conn: ConnId(1),
            trans_depth: 1,
            client: "127.0.0.1:40000".parse().unwrap(),
            server: "127.0.0.1:80".parse().unwrap(),
            request: Some(Request {
                method: Bytes::from_static(b"GET"),
                uri: Bytes::from_static(b"/x"),
                version: Version::Http11,
                headers: Headers::from_pairs(&headers),
                body: Body::empty(),
            }),
            response: Some(Response {
                status,
                reason: Bytes::from_static(b"OK"),
                version: Version::Http11,
                headers: Headers::default(),
                body: Body::from_bytes(vec![b'x'; 100]),
            }),
            interim: vec![],
            incomplete,
            anomalies: vec![],
            request_start: None,
            request_end: None,
            response_start: None,
            response_end: None,
        }
    }

    fn settings(sample: f64) -> Vec<PairSettings> {
        vec![PairSettings {
            correlation_header: "x-request-id".into(),
            match_timeout_ns: 5_000_000_000,
            sample,
        }]
    }

    fn matcher(sample: f64) -> Matcher {
        Matcher::new(
            settings(sample),
            MatcherLimits {
                pending_pairs: 1000,
                pending_memory: 1 << 30,
            },
        )
    }

    fn ep() -> Arc<str> {
        Arc::from("GET /x")
    }

    fn unmatched(out: &[MatchOutcome]) -> Vec<(UnmatchedReason, Fault)> {
        out.iter()
            .filter_map(|o| match o {
                MatchOutcome::Unmatched(u) => Some((u.reason, u.fault)),
                _ => None,
            })
            .collect()
    }

    fn jobs(out: &[MatchOutcome]) -> usize {
        out.iter()
            .filter(|o| matches!(o, MatchOutcome::Compare(_)))
            .count()
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn equal_ids_pair_in_either_arrival_order() {
        let mut m = matcher(1.0);
        let mut out = vec![];
        m.push(
            0,
            Role::Mirror,
            ep(),
            ex(Some("a"), 200, None),
            Nanos(S),
            &mut out,
        );
        m.push(
            0,
            Role::Primary,
            ep(),
            ex(Some("a"), 201, None),
            Nanos(2 * S),
            &mut out,
        );
        assert_eq!(jobs(&out), 1);
        match &out[0] {
            MatchOutcome::Compare(j) => {
                assert_eq!(j.primary.response.as_ref().unwrap().status, 201);
                assert_eq!(j.mirror.response.as_ref().unwrap().status, 200);
            }
            _ => unreachable!(),
        }
        assert_eq!(m.pending(), 0);
        assert_eq!(m.memory_used(), 0);
    }

    #[test]
    fn lone_side_times_out_blaming_the_missing_side() {
        let mut m = matcher(1.0);
        let mut out = vec![];
        m.push(
            0,
            Role::Primary,
            ep(),
            ex(Some("a"), 200, None),
            Nanos(S),
            &mut out,
        );
        m.expire(Nanos(5 * S), &mut out);
        assert!(out.is_empty(), "still within the window");
        m.expire(Nanos(6 * S), &mut out);
        assert_eq!(unmatched(&out), [(UnmatchedReason::Timeout, Fault::Mirror)]);
        assert_eq!(m.pending(), 0);
    }

    #[test]
    fn missing_id_is_counted_once_for_the_side_without_it() {
        let mut m = matcher(1.0);
        let mut out = vec![];
        m.push(
            0,
            Role::Mirror,
            ep(),
            ex(None, 200, None),
            Nanos(S),
            &mut out,
        );
        assert_eq!(
            unmatched(&out),
            [(UnmatchedReason::MissingId, Fault::Mirror)]
        );
        assert_eq!(m.pending(), 0);
    }

    #[test]
    fn duplicates_pair_fifo_and_the_leftover_is_a_duplicate() {
        let mut m = matcher(1.0);
        let mut out = vec![];
        m.push(
            0,
            Role::Primary,
            ep(),
            ex(Some("a"), 200, None),
            Nanos(S),
            &mut out,
        );
        m.push(
            0,
            Role::Primary,
            ep(),
            ex(Some("a"), 201, None),
            Nanos(S + 1),
            &mut out,
        );
        m.push(
            0,
            Role::Mirror,
            ep(),
            ex(Some("a"), 200, None),
            Nanos(S + 2),
            &mut out,
        );
        assert_eq!(jobs(&out), 1);
        match &out[0] {
            MatchOutcome::Compare(j) => {
                assert_eq!(j.primary.response.as_ref().unwrap().status, 200)
            }
            _ => unreachable!(),
        }
        m.finish(&mut out);
        assert_eq!(
            unmatched(&out),
            [(UnmatchedReason::DuplicateId, Fault::Primary)]
        );
    }

    #[test]
    fn regression_a_mirror_three_windows_late_is_counted_once_against_the_mirror() {
        // The mirror answered after 3 windows: the id timed out against the mirror, and the late
        // mirror exchange used to wait again and time out a second time, against the primary.
        let mut m = matcher(1.0);
        let mut out = vec![];
        m.push(
            0,
            Role::Primary,
            ep(),
            ex(Some("slow"), 200, None),
            Nanos(S),
            &mut out,
        );
        m.expire(Nanos(S + 6 * S), &mut out);
        m.push(
            0,
            Role::Mirror,
            ep(),
            ex(Some("slow"), 200, None),
            Nanos(S + 15 * S),
            &mut out,
        );
        m.finish(&mut out);
        assert_eq!(unmatched(&out), [(UnmatchedReason::Timeout, Fault::Mirror)]);
        assert_eq!(m.stats().late, 1);
        assert_eq!(m.pending(), 0);
    }

    #[test]
    fn a_late_duplicate_after_pairing_is_a_duplicate_not_a_timeout() {
        let mut m = matcher(1.0);
        let mut out = vec![];
        m.push(
            0,
            Role::Primary,
            ep(),
            ex(Some("a"), 200, None),
            Nanos(S),
            &mut out,
        );
        m.push(
            0,
            Role::Mirror,
            ep(),
            ex(Some("a"), 200, None),
            Nanos(S),
            &mut out,
        );
        m.push(
            0,
            Role::Mirror,
            ep(),
            ex(Some("a"), 200, None),
            Nanos(2 * S),
            &mut out,
        );
        m.finish(&mut out);
        assert_eq!(jobs(&out), 1);
        assert_eq!(
            unmatched(&out),
            [(UnmatchedReason::DuplicateId, Fault::Mirror)]
        );
    }

    #[test]
    fn capture_loss_wins_over_no_response_and_names_the_side() {
        let mut m = matcher(1.0);
        let mut out = vec![];
        m.push(
            0,
            Role::Primary,
            ep(),
            ex(Some("a"), 200, Some(IncompleteReason::Reset)),
            Nanos(S),
            &mut out,
        );
        m.push(
            0,
            Role::Mirror,
            ep(),
            ex(Some("a"), 200, Some(IncompleteReason::Gap)),
            Nanos(S),
            &mut out,
        );
        m.push(
            0,
            Role::Primary,
            ep(),
            ex(Some("b"), 200, Some(IncompleteReason::Truncated)),
            Nanos(S),
            &mut out,
        );
        m.push(
            0,
            Role::Mirror,
            ep(),
            ex(Some("b"), 200, None),
            Nanos(S),
            &mut out,
        );
        m.push(
            0,
            Role::Primary,
            ep(),
            ex(Some("c"), 200, Some(IncompleteReason::Snaplen)),
            Nanos(S),
            &mut out,
        );
        m.push(
            0,
            Role::Mirror,
            ep(),
            ex(Some("c"), 200, Some(IncompleteReason::Gap)),
            Nanos(S),
            &mut out,
        );
        assert_eq!(
            unmatched(&out),
            [
                (UnmatchedReason::CaptureGap, Fault::Mirror),
                (UnmatchedReason::NoResponse, Fault::Primary),
                (UnmatchedReason::CaptureGap, Fault::Both),
            ]
        );
        assert_eq!(jobs(&out), 0);
    }

    #[test]
    fn a_decode_error_is_still_compared() {
        let mut m = matcher(1.0);
        let mut out = vec![];
        m.push(
            0,
            Role::Primary,
            ep(),
            ex(Some("a"), 200, None),
            Nanos(S),
            &mut out,
        );
        m.push(
            0,
            Role::Mirror,
            ep(),
            ex(Some("a"), 200, Some(IncompleteReason::DecodeError)),
            Nanos(S),
            &mut out,
        );
        assert_eq!(jobs(&out), 1);
    }

    #[test]
    fn sampling_is_decided_by_the_id_alone_and_counted_once() {
        // Find ids on both sides of a 50% sample.
        let hit = (0..100)
            .map(|i| format!("id-{i}"))
            .find(|i| sample_hit(i.as_bytes(), 0.5))
            .unwrap();
        let miss = (0..100)
            .map(|i| format!("id-{i}"))
            .find(|i| !sample_hit(i.as_bytes(), 0.5))
            .unwrap();
        let mut m = matcher(0.5);
        let mut out = vec![];
        for id in [&hit, &miss] {
            m.push(
                0,
                Role::Primary,
                ep(),
                ex(Some(id), 200, None),
                Nanos(S),
                &mut out,
            );
            m.push(
                0,
                Role::Mirror,
                ep(),
                ex(Some(id), 200, None),
                Nanos(S),
                &mut out,
            );
        }
        assert_eq!(jobs(&out), 1);
        assert_eq!(
            unmatched(&out),
            [(UnmatchedReason::SampledOut, Fault::Both)]
        );
        // A sampled-out id whose other side never comes is still counted once, as sampled out.
        let mut out = vec![];
        m.push(
            0,
            Role::Primary,
            ep(),
            ex(Some(&miss), 200, None),
            Nanos(2 * S),
            &mut out,
        );
        m.finish(&mut out);
        assert_eq!(
            unmatched(&out),
            [(UnmatchedReason::SampledOut, Fault::Both)]
        );
    }

    #[test]
    fn sampling_fraction_is_close_to_the_configured_one() {
        let n = 20_000;
        let hits = (0..n)
            .filter(|i| sample_hit(format!("req-{i}").as_bytes(), 0.25))
            .count();
        let frac = hits as f64 / n as f64;
        assert!((0.23..0.27).contains(&frac), "{frac}");
        assert!(sample_hit(b"anything", 1.0));
        assert!(!sample_hit(b"anything", 0.0));
    }

    #[test]
    fn the_table_is_bounded_by_count_and_memory_evicting_the_oldest() {
        let mut m = Matcher::new(
            settings(1.0),
            MatcherLimits {
                pending_pairs: 3,
                pending_memory: 1 << 30,
            },
        );
        let mut out = vec![];
        for i in 0..5 {
            m.push(
                0,
                Role::Primary,
                ep(),
                ex(Some(&format!("{i}")), 200, None),
                Nanos(S + i),
                &mut out,
            );
        }
        assert_eq!(m.pending(), 3);
        assert_eq!(
            unmatched(&out),
            [(UnmatchedReason::Evicted, Fault::Mirror); 2]
        );
        // The oldest went: id 0 and 1 no longer pair.
        let mut out = vec![];
        m.push(
            0,
            Role::Mirror,
            ep(),
            ex(Some("0"), 200, None),
            Nanos(S + 10),
            &mut out,
        );
        assert_eq!(jobs(&out), 0);
        m.push(
            0,
            Role::Mirror,
            ep(),
            ex(Some("4"), 200, None),
            Nanos(S + 11),
            &mut out,
        );
        assert_eq!(jobs(&out), 1);

        let one = ENTRY_OVERHEAD + exchange_heap_bytes(&ex(Some("x"), 200, None));
        let mut m = Matcher::new(
            settings(1.0),
            MatcherLimits {
                pending_pairs: 1000,
                pending_memory: one * 2 + 10,
            },
        );
        let mut out = vec![];
        for i in 0..4 {
            m.push(
                0,
                Role::Primary,
                ep(),
                ex(Some(&format!("{i}")), 200, None),
                Nanos(S + i),
                &mut out,
            );
        }
        assert_eq!(m.pending(), 2);
        assert!(m.memory_used() <= one * 2 + 10);
        assert_eq!(unmatched(&out).len(), 2);
    }

    #[test]
    fn every_id_ends_exactly_once() {
        // A mixed stream: each id must produce exactly one outcome.
        let mut m = matcher(0.7);
        let mut out = vec![];
        let mut t = S;
        for i in 0..500u64 {
            let id = format!("r{i}");
            t += 1000;
            match i % 5 {
                0 => {
                    m.push(
                        0,
                        Role::Primary,
                        ep(),
                        ex(Some(&id), 200, None),
                        Nanos(t),
                        &mut out,
                    );
                    m.push(
                        0,
                        Role::Mirror,
                        ep(),
                        ex(Some(&id), 200, None),
                        Nanos(t),
                        &mut out,
                    );
                }
                1 => m.push(
                    0,
                    Role::Primary,
                    ep(),
                    ex(Some(&id), 200, None),
                    Nanos(t),
                    &mut out,
                ),
                2 => m.push(
                    0,
                    Role::Mirror,
                    ep(),
                    ex(Some(&id), 200, None),
                    Nanos(t),
                    &mut out,
                ),
                3 => {
                    m.push(
                        0,
                        Role::Mirror,
                        ep(),
                        ex(Some(&id), 200, Some(IncompleteReason::Gap)),
                        Nanos(t),
                        &mut out,
                    );
                    m.push(
                        0,
                        Role::Primary,
                        ep(),
                        ex(Some(&id), 200, None),
                        Nanos(t),
                        &mut out,
                    );
                }
                _ => {
                    m.push(
                        0,
                        Role::Mirror,
                        ep(),
                        ex(Some(&id), 200, None),
                        Nanos(t),
                        &mut out,
                    );
                    m.push(
                        0,
                        Role::Primary,
                        ep(),
                        ex(Some(&id), 200, None),
                        Nanos(t + 6 * S),
                        &mut out,
                    );
                }
            }
        }
        m.finish(&mut out);
        // Case 4: the mirror timed out before the primary came; the late primary is absorbed.
        assert_eq!(out.len(), 500);
        assert_eq!(m.stats().late, 100);
        assert_eq!(m.pending(), 0);
        assert_eq!(m.memory_used(), 0);
    }
}
