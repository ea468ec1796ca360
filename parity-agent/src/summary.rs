//! The summary: per pair and endpoint, what was compared, what diverged and how, what could not be
//! paired and why, and the latency of each role.
//!
//! One [`Summary`] accumulates verdicts and unmatched ids; [`Summary::report`] renders the JSON
//! contract that `/api/summary`, `replay --report` and `run --report` share (README documents it).
//! Bounded: at most `max_endpoints` endpoints per pair (the matcher's labels are already capped),
//! at most [`MAX_PATHS`] difference paths per endpoint (the rest under `other`), fixed-size latency
//! histograms.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::classify::Role;
use crate::config::PairConfig;
use crate::matcher::UnmatchedReason;
use crate::segment::Nanos;

/// Difference paths kept per endpoint in the summary; the rest are counted under `other`.
pub const MAX_PATHS: usize = 100;

/// Version of the summary's JSON shape.
pub const SCHEMA_VERSION: u32 = 1;

/// Latencies in log-spaced buckets (each 4% wider than the last) from 1 µs to about 100 s.
///
/// Quantiles are accurate to about 2%; memory is fixed (a few KiB), whatever the count.
#[derive(Clone, Debug)]
pub struct LatencyHistogram {
    counts: Vec<u64>,
    total: u64,
}

const HIST_MIN_NS: f64 = 1_000.0;
const HIST_GROWTH: f64 = 1.04;
const HIST_BUCKETS: usize = 470;

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            counts: vec![0; HIST_BUCKETS],
            total: 0,
        }
    }
}

impl LatencyHistogram {
    /// Record one latency.
    pub fn record(&mut self, nanos: u64) {
        let i = if (nanos as f64) <= HIST_MIN_NS {
            0
        } else {
            ((nanos as f64 / HIST_MIN_NS).ln() / HIST_GROWTH.ln()) as usize + 1
        };
        let i = i.min(HIST_BUCKETS - 1);
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1;
            self.total += 1;
        }
    }

    /// Number of recorded latencies.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The `q` quantile (0..=1) in seconds, `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                // The geometric middle of the bucket.
                let ns = if i == 0 {
                    HIST_MIN_NS
                } else {
                    HIST_MIN_NS * HIST_GROWTH.powf(i as f64 - 0.5)
                };
                return Some(ns / 1e9);
            }
        }
        None
    }
}

/// One difference as the summary counts it: its path with array indexes collapsed, and its kind.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DiffKey {
    /// Path with `[n]` written `[*]`.
    pub path: String,
    /// Kind name.
    pub kind: &'static str,
}

/// Collapse array indexes of a difference path: `$.items[3].price` → `$.items[*].price`.
pub fn collapse_indexes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let b = path.as_bytes();
    let mut i = 0;
    let mut quoted: Option<u8> = None;
    while i < b.len() {
        let c = b[i];
        match quoted {
            Some(q) => {
                if c == b'\\' && i + 1 < b.len() {
                    out.push_str(&path[i..i + 2]);
                    i += 2;
                    continue;
                }
                if c == q {
                    quoted = None;
                }
            }
            None => {
                if c == b'[' {
                    let digits = b[i + 1..].iter().take_while(|d| d.is_ascii_digit()).count();
                    if digits > 0 && b.get(i + 1 + digits) == Some(&b']') {
                        out.push_str("[*]");
                        i += digits + 2;
                        continue;
                    }
                    if matches!(b.get(i + 1), Some(b'\'' | b'"')) {
                        quoted = b.get(i + 1).copied();
                        out.push('[');
                        out.push(char::from(b[i + 1]));
                        i += 2;
                        continue;
                    }
                }
            }
        }
        // Copy one UTF-8 character.
        let len = utf8_len(c);
        out.push_str(path.get(i..i + len).unwrap_or(""));
        i += len.max(1);
    }
    out
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

/// What one comparison contributes to the summary.
#[derive(Clone, Debug)]
pub struct VerdictFacts {
    /// Pair index.
    pub pair: usize,
    /// Endpoint label.
    pub endpoint: Arc<str>,
    /// `(path, kind)` of every difference, exact paths.
    pub differences: Vec<(String, &'static str)>,
    /// Latency of the primary's exchange, ns.
    pub primary_latency: Option<u64>,
    /// Latency of the mirror's exchange, ns.
    pub mirror_latency: Option<u64>,
    /// Capture time of the comparison.
    pub ts: Nanos,
}

#[derive(Clone, Debug, Default)]
struct EndpointAcc {
    compared: u64,
    diverged: u64,
    unmatched: [u64; 8],
    differences: FxHashMap<DiffKey, u64>,
    other_differences: u64,
    latency: [LatencyHistogram; 2],
}

#[derive(Clone, Debug)]
struct PairAcc {
    name: String,
    compared: u64,
    diverged: u64,
    unmatched: [u64; 8],
    endpoints: FxHashMap<Arc<str>, EndpointAcc>,
    latency_ratio: f64,
    latency_min_s: f64,
}

/// Accumulates verdicts and unmatched ids.
#[derive(Clone, Debug)]
pub struct Summary {
    pairs: Vec<PairAcc>,
    from: Option<Nanos>,
    to: Option<Nanos>,
    dropped: BTreeMap<String, u64>,
    gaps: u64,
}

/// Minimum comparisons per role before an endpoint can be reported as a latency regression.
pub const MIN_LATENCY_SAMPLES: u64 = 20;

impl Summary {
    /// An empty summary for `pairs`.
    pub fn new(pairs: &[PairConfig]) -> Summary {
        Summary {
            pairs: pairs
                .iter()
                .map(|p| PairAcc {
                    name: p.name.clone(),
                    compared: 0,
                    diverged: 0,
                    unmatched: [0; 8],
                    endpoints: FxHashMap::default(),
                    latency_ratio: p.latency_regression_ratio,
                    latency_min_s: p.latency_regression_min.0.as_secs_f64(),
                })
                .collect(),
            from: None,
            to: None,
            dropped: BTreeMap::new(),
            gaps: 0,
        }
    }

    /// Extend the covered time span to include `ts`.
    pub fn observe_time(&mut self, ts: Nanos) {
        if ts.0 == 0 {
            return;
        }
        self.from = Some(self.from.map_or(ts, |f| f.min(ts)));
        self.to = Some(self.to.map_or(ts, |t| t.max(ts)));
    }

    /// Add one comparison.
    pub fn add_verdict(&mut self, v: &VerdictFacts) {
        self.observe_time(v.ts);
        let Some(p) = self.pairs.get_mut(v.pair) else {
            return;
        };
        p.compared += 1;
        let diverged = !v.differences.is_empty();
        if diverged {
            p.diverged += 1;
        }
        let e = p.endpoints.entry(v.endpoint.clone()).or_default();
        e.compared += 1;
        if diverged {
            e.diverged += 1;
        }
        let mut seen: Vec<DiffKey> = v
            .differences
            .iter()
            .map(|(path, kind)| DiffKey {
                path: collapse_indexes(path),
                kind,
            })
            .collect();
        seen.sort();
        seen.dedup();
        for k in seen {
            if let Some(c) = e.differences.get_mut(&k) {
                *c += 1;
            } else if e.differences.len() < MAX_PATHS {
                e.differences.insert(k, 1);
            } else {
                e.other_differences += 1;
            }
        }
        for (role, lat) in [
            (Role::Primary, v.primary_latency),
            (Role::Mirror, v.mirror_latency),
        ] {
            if let Some(ns) = lat {
                e.latency[role.index()].record(ns);
            }
        }
    }

    /// Count one unmatched id.
    pub fn add_unmatched(&mut self, pair: usize, endpoint: &Arc<str>, reason: UnmatchedReason) {
        let Some(p) = self.pairs.get_mut(pair) else {
            return;
        };
        p.unmatched[reason.index()] += 1;
        p.endpoints.entry(endpoint.clone()).or_default().unmatched[reason.index()] += 1;
    }

    /// Set the capture-loss figures (replaces earlier values: they are running totals).
    pub fn set_capture(&mut self, dropped: BTreeMap<String, u64>, gaps: u64) {
        self.dropped = dropped;
        self.gaps = gaps;
    }

    /// Totals over every pair: `(compared, diverged, unmatched)` (for the live status line).
    pub fn totals(&self) -> (u64, u64, u64) {
        self.pairs.iter().fold((0, 0, 0), |(c, d, u), p| {
            (
                c + p.compared,
                d + p.diverged,
                u + p.unmatched.iter().sum::<u64>(),
            )
        })
    }

    /// Render the report.
    pub fn report(&self) -> Report {
        let pairs = self
            .pairs
            .iter()
            .map(|p| {
                let mut endpoints: Vec<EndpointReport> = p
                    .endpoints
                    .iter()
                    .map(|(name, e)| {
                        let mut differences: Vec<DifferenceCount> = e
                            .differences
                            .iter()
                            .map(|(k, c)| DifferenceCount {
                                path: k.path.clone(),
                                kind: k.kind.to_string(),
                                count: *c,
                            })
                            .collect();
                        differences.sort_by(|a, b| {
                            b.count
                                .cmp(&a.count)
                                .then_with(|| a.path.cmp(&b.path))
                                .then_with(|| a.kind.cmp(&b.kind))
                        });
                        if e.other_differences > 0 {
                            differences.push(DifferenceCount {
                                path: "other".into(),
                                kind: "other".into(),
                                count: e.other_differences,
                            });
                        }
                        EndpointReport {
                            endpoint: name.to_string(),
                            compared: e.compared,
                            diverged: e.diverged,
                            divergence_rate: rate(e.diverged, e.compared),
                            unmatched: unmatched_map(&e.unmatched),
                            differences,
                            latency_seconds: LatencyPair {
                                primary: latency(&e.latency[0]),
                                mirror: latency(&e.latency[1]),
                            },
                        }
                    })
                    .collect();
                endpoints.sort_by(|a, b| {
                    b.divergence_rate
                        .unwrap_or(-1.0)
                        .total_cmp(&a.divergence_rate.unwrap_or(-1.0))
                        .then_with(|| b.compared.cmp(&a.compared))
                        .then_with(|| a.endpoint.cmp(&b.endpoint))
                });
                let mut latency_regressions = Vec::new();
                for (name, e) in &p.endpoints {
                    let (pl, ml) = (&e.latency[0], &e.latency[1]);
                    if pl.count() < MIN_LATENCY_SAMPLES || ml.count() < MIN_LATENCY_SAMPLES {
                        continue;
                    }
                    if let (Some(p50), Some(m50)) = (pl.quantile(0.5), ml.quantile(0.5)) {
                        if m50 > p50 * p.latency_ratio && m50 - p50 >= p.latency_min_s {
                            latency_regressions.push(LatencyRegression {
                                endpoint: name.to_string(),
                                primary_p50: p50,
                                mirror_p50: m50,
                                primary_p99: pl.quantile(0.99).unwrap_or(p50),
                                mirror_p99: ml.quantile(0.99).unwrap_or(m50),
                                ratio: m50 / p50,
                            });
                        }
                    }
                }
                latency_regressions.sort_by(|a, b| b.ratio.total_cmp(&a.ratio));
                PairReport {
                    name: p.name.clone(),
                    compared: p.compared,
                    diverged: p.diverged,
                    divergence_rate: rate(p.diverged, p.compared),
                    unmatched: unmatched_map(&p.unmatched),
                    endpoints,
                    latency_regressions,
                }
            })
            .collect();
        Report {
            schema_version: SCHEMA_VERSION,
            from: self.from.map(Nanos::as_secs_f64),
            to: self.to.map(Nanos::as_secs_f64),
            capture: CaptureReport {
                dropped: self.dropped.clone(),
                gaps: self.gaps,
            },
            pairs,
        }
    }
}

fn rate(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

fn unmatched_map(counts: &[u64; 8]) -> BTreeMap<&'static str, u64> {
    UnmatchedReason::ALL
        .iter()
        .map(|r| (r.as_str(), counts[r.index()]))
        .collect()
}

fn latency(h: &LatencyHistogram) -> Option<Quantiles> {
    Some(Quantiles {
        p50: h.quantile(0.5)?,
        p99: h.quantile(0.99)?,
        count: h.count(),
    })
}

/// The summary's JSON shape (schema version 1). Field names are a contract.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Shape version.
    pub schema_version: u32,
    /// Earliest capture time covered, epoch seconds.
    pub from: Option<f64>,
    /// Latest capture time covered, epoch seconds.
    pub to: Option<f64>,
    /// Capture losses.
    pub capture: CaptureReport,
    /// Per pair.
    pub pairs: Vec<PairReport>,
}

/// Capture losses in a report.
#[derive(Clone, Debug, Serialize)]
pub struct CaptureReport {
    /// Records the kernel could not deliver, by reason.
    pub dropped: BTreeMap<String, u64>,
    /// Gaps declared by reassembly.
    pub gaps: u64,
}

/// One pair in a report.
#[derive(Clone, Debug, Serialize)]
pub struct PairReport {
    /// Pair name.
    pub name: String,
    /// Pairs compared.
    pub compared: u64,
    /// Pairs that diverged.
    pub diverged: u64,
    /// `diverged / compared`, null when nothing was compared.
    pub divergence_rate: Option<f64>,
    /// Unmatched ids by reason, every reason present.
    pub unmatched: BTreeMap<&'static str, u64>,
    /// Per endpoint, most divergent first.
    pub endpoints: Vec<EndpointReport>,
    /// Endpoints where the mirror is slower.
    pub latency_regressions: Vec<LatencyRegression>,
}

/// One endpoint in a report.
#[derive(Clone, Debug, Serialize)]
pub struct EndpointReport {
    /// Endpoint label.
    pub endpoint: String,
    /// Pairs compared.
    pub compared: u64,
    /// Pairs that diverged.
    pub diverged: u64,
    /// `diverged / compared`, null when nothing was compared.
    pub divergence_rate: Option<f64>,
    /// Unmatched ids by reason, every reason present.
    pub unmatched: BTreeMap<&'static str, u64>,
    /// Difference counts by collapsed path and kind, most frequent first.
    pub differences: Vec<DifferenceCount>,
    /// Latency of each role over the compared pairs.
    pub latency_seconds: LatencyPair,
}

/// How many pairs differed at one path in one way.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct DifferenceCount {
    /// Path with indexes collapsed, or `other`.
    pub path: String,
    /// Difference kind.
    pub kind: String,
    /// Pairs in which it differed.
    pub count: u64,
}

/// Latency quantiles of both roles.
#[derive(Clone, Debug, Serialize)]
pub struct LatencyPair {
    /// The primary's.
    pub primary: Option<Quantiles>,
    /// The mirror's.
    pub mirror: Option<Quantiles>,
}

/// Latency quantiles in seconds.
#[derive(Clone, Debug, Serialize)]
pub struct Quantiles {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Number of samples.
    pub count: u64,
}

/// An endpoint where the mirror's median latency is worse than the primary's by the configured
/// ratio and minimum.
#[derive(Clone, Debug, Serialize)]
pub struct LatencyRegression {
    /// Endpoint label.
    pub endpoint: String,
    /// Primary median, seconds.
    pub primary_p50: f64,
    /// Mirror median, seconds.
    pub mirror_p50: f64,
    /// Primary 99th percentile, seconds.
    pub primary_p99: f64,
    /// Mirror 99th percentile, seconds.
    pub mirror_p99: f64,
    /// `mirror_p50 / primary_p50`.
    pub ratio: f64,
}

/// A duration in seconds for people: seconds from one second up, milliseconds below (a short
/// run is not "0.0 s").
fn format_span(secs: f64) -> String {
    let ms = (secs * 1000.0).round();
    if ms >= 1000.0 {
        format!("{secs:.1} s")
    } else {
        format!("{ms:.0} ms")
    }
}

/// A report as text for people: per pair the totals, unmatched reasons, endpoints by
/// divergence with their top differences, and latency regressions.
pub fn render_text(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let span = match (r.from, r.to) {
        (Some(f), Some(t)) => format!("{} of traffic", format_span(t - f)),
        _ => "no traffic".to_string(),
    };
    let dropped: u64 = r.capture.dropped.values().sum();
    let _ = writeln!(
        s,
        "parity report: {span}; capture: {dropped} records dropped, {} gaps",
        r.capture.gaps
    );
    for p in &r.pairs {
        let rate = p
            .divergence_rate
            .map(|x| format!("{:.1}%", 100.0 * x))
            .unwrap_or_else(|| "n/a".into());
        let _ = writeln!(
            s,
            "\npair {}: {} compared, {} diverged ({rate})",
            p.name, p.compared, p.diverged
        );
        let unmatched: Vec<String> = p
            .unmatched
            .iter()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        if !unmatched.is_empty() {
            let _ = writeln!(s, "  not compared: {}", unmatched.join(", "));
        }
        if !p.endpoints.is_empty() {
            let w = p
                .endpoints
                .iter()
                .map(|e| e.endpoint.len())
                .max()
                .unwrap_or(8)
                .max(8);
            let _ = writeln!(
                s,
                "  {:w$}  {:>8}  {:>8}  {:>7}  {:>19}",
                "endpoint", "compared", "diverged", "rate", "p50 primary/mirror"
            );
            for e in &p.endpoints {
                let rate = e
                    .divergence_rate
                    .map(|x| format!("{:.1}%", 100.0 * x))
                    .unwrap_or_else(|| "n/a".into());
                let lat = |q: &Option<Quantiles>| {
                    q.as_ref()
                        .map(|q| format!("{:.1}ms", q.p50 * 1e3))
                        .unwrap_or_else(|| "-".into())
                };
                let _ = writeln!(
                    s,
                    "  {:w$}  {:>8}  {:>8}  {:>7}  {:>19}",
                    e.endpoint,
                    e.compared,
                    e.diverged,
                    rate,
                    format!(
                        "{} / {}",
                        lat(&e.latency_seconds.primary),
                        lat(&e.latency_seconds.mirror)
                    )
                );
                for d in e.differences.iter().take(5) {
                    let _ = writeln!(s, "      {} ({}) in {} pairs", d.path, d.kind, d.count);
                }
                if e.differences.len() > 5 {
                    let _ = writeln!(s, "      ... {} more paths", e.differences.len() - 5);
                }
            }
        }
        for l in &p.latency_regressions {
            let _ = writeln!(
                s,
                "  latency regression: {}: mirror p50 {:.1}ms vs primary {:.1}ms (x{:.1})",
                l.endpoint,
                l.mirror_p50 * 1e3,
                l.primary_p50 * 1e3,
                l.ratio
            );
        }
    }
    s
}

/// The divergence gate of `--fail-on-divergence`: the reasons a report fails it (empty: passes).
///
/// A pair fails when its divergence rate is above `max_rate`, when it compared nothing, or when
/// its unmatched share (excluding `sampled_out`, which is intended) exceeds `max_unmatched`: a gate
/// must not pass because it saw nothing.
pub fn gate(report: &Report, max_rate: f64, max_unmatched: f64) -> Vec<String> {
    let mut failures = Vec::new();
    if report.pairs.is_empty() {
        failures.push("no [[pair]] is configured: nothing was compared".to_string());
    }
    for p in &report.pairs {
        match p.divergence_rate {
            None => failures.push(format!("pair {:?} compared nothing", p.name)),
            Some(r) if r > max_rate => failures.push(format!(
                "pair {:?}: divergence rate {:.4} is above {max_rate} ({} of {} compared pairs diverged)",
                p.name, r, p.diverged, p.compared
            )),
            Some(_) => {}
        }
        let unmatched: u64 = p
            .unmatched
            .iter()
            .filter(|(k, _)| **k != UnmatchedReason::SampledOut.as_str())
            .map(|(_, v)| v)
            .sum();
        let total = unmatched + p.compared;
        if total > 0 && unmatched as f64 / total as f64 > max_unmatched {
            failures.push(format!(
                "pair {:?}: {unmatched} of {total} ids were not compared ({:.1}%, above --max-unmatched {max_unmatched})",
                p.name,
                100.0 * unmatched as f64 / total as f64
            ));
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn pairs() -> Vec<PairConfig> {
        Config::parse(
            "[[pair]]\nname = \"checkout\"\nprimary = \"127.0.0.1:80\"\nmirror = \"127.0.0.1:81\"\n",
            "t",
        )
        .unwrap()
        .pairs
    }

    fn verdict(ep: &str, diffs: &[(&str, &'static str)], p: u64, m: u64) -> VerdictFacts {
        VerdictFacts {
            pair: 0,
            endpoint: Arc::from(ep),
            differences: diffs.iter().map(|(a, b)| (a.to_string(), *b)).collect(),
            primary_latency: Some(p),
            mirror_latency: Some(m),
            ts: Nanos(1_764_324_000_000_000_000),
        }
    }

    #[test]
    fn short_spans_are_shown_in_milliseconds() {
        assert_eq!(format_span(0.0), "0 ms");
        assert_eq!(format_span(0.0424), "42 ms");
        assert_eq!(format_span(0.9994), "999 ms");
        assert_eq!(format_span(0.9996), "1.0 s");
        assert_eq!(format_span(1.0), "1.0 s");
        assert_eq!(format_span(26.37), "26.4 s");
    }

    #[test]
    fn collapse_replaces_indexes_but_not_quoted_names() {
        assert_eq!(collapse_indexes("$.items[3].price"), "$.items[*].price");
        assert_eq!(collapse_indexes("$[0][12]"), "$[*][*]");
        assert_eq!(collapse_indexes("$['a[1]'].b[2]"), "$['a[1]'].b[*]");
        assert_eq!(collapse_indexes("header:x-a"), "header:x-a");
        assert_eq!(collapse_indexes("$.é[1]"), "$.é[*]");
    }

    #[test]
    fn counts_pairs_per_collapsed_path_once() {
        let mut s = Summary::new(&pairs());
        s.add_verdict(&verdict(
            "GET /a",
            &[("$.items[0].p", "value"), ("$.items[1].p", "value")],
            1,
            1,
        ));
        s.add_verdict(&verdict("GET /a", &[], 1, 1));
        let r = s.report();
        let e = &r.pairs[0].endpoints[0];
        assert_eq!((e.compared, e.diverged), (2, 1));
        assert_eq!(e.divergence_rate, Some(0.5));
        assert_eq!(
            e.differences,
            [DifferenceCount {
                path: "$.items[*].p".into(),
                kind: "value".into(),
                count: 1
            }]
        );
    }

    #[test]
    fn every_unmatched_reason_is_present_and_zero_filled() {
        let mut s = Summary::new(&pairs());
        s.add_unmatched(0, &Arc::from("GET /b"), UnmatchedReason::NoResponse);
        let r = s.report();
        let v = serde_json::to_value(&r).unwrap();
        let u = &v["pairs"][0]["unmatched"];
        for reason in UnmatchedReason::ALL {
            assert!(u.get(reason.as_str()).is_some(), "{reason:?}");
        }
        assert_eq!(u["no_response"], 1);
        let eu = &v["pairs"][0]["endpoints"][0]["unmatched"];
        assert_eq!(eu.as_object().unwrap().len(), 8);
        assert!(v["pairs"][0]["divergence_rate"].is_null());
        assert!(v["pairs"][0]["endpoints"][0]["divergence_rate"].is_null());
    }

    #[test]
    fn paths_beyond_the_cap_go_to_other() {
        let mut s = Summary::new(&pairs());
        for i in 0..(MAX_PATHS + 5) {
            let p = format!("$.f{i}");
            s.add_verdict(&verdict("GET /a", &[(&p, "value")], 1, 1));
        }
        let r = s.report();
        let d = &r.pairs[0].endpoints[0].differences;
        assert_eq!(d.len(), MAX_PATHS + 1);
        assert_eq!(d.last().unwrap().path, "other");
        assert_eq!(d.last().unwrap().count, 5);
    }

    #[test]
    fn latency_regression_needs_ratio_minimum_and_samples() {
        let mut s = Summary::new(&pairs());
        for _ in 0..30 {
            s.add_verdict(&verdict("GET /slow", &[], 1_000_000, 4_000_000));
            s.add_verdict(&verdict("GET /fast", &[], 1_000_000, 1_100_000));
        }
        for _ in 0..5 {
            s.add_verdict(&verdict("GET /few", &[], 1_000_000, 9_000_000));
        }
        let r = s.report();
        let regs = &r.pairs[0].latency_regressions;
        assert_eq!(regs.len(), 1);
        assert_eq!(regs[0].endpoint, "GET /slow");
        assert!(
            (regs[0].primary_p50 - 0.001).abs() < 0.00005,
            "{}",
            regs[0].primary_p50
        );
        assert!(
            (regs[0].mirror_p50 - 0.004).abs() < 0.0002,
            "{}",
            regs[0].mirror_p50
        );
    }

    #[test]
    fn histogram_quantiles_are_within_a_few_percent() {
        let mut h = LatencyHistogram::default();
        for i in 1..=1000u64 {
            h.record(i * 10_000); // 10 µs .. 10 ms
        }
        let p50 = h.quantile(0.5).unwrap();
        let p99 = h.quantile(0.99).unwrap();
        assert!((p50 / 0.005 - 1.0).abs() < 0.03, "{p50}");
        assert!((p99 / 0.0099 - 1.0).abs() < 0.03, "{p99}");
        assert_eq!(LatencyHistogram::default().quantile(0.5), None);
        let mut h = LatencyHistogram::default();
        h.record(0);
        h.record(u64::MAX);
        assert_eq!(h.count(), 2);
    }

    #[test]
    fn gate_fails_on_rate_on_nothing_compared_and_on_unmatched_share() {
        let mut s = Summary::new(&pairs());
        let r = s.report();
        assert_eq!(gate(&r, 0.1, 0.5).len(), 1, "nothing compared fails");
        for _ in 0..8 {
            s.add_verdict(&verdict("GET /a", &[], 1, 1));
        }
        s.add_verdict(&verdict("GET /a", &[("status", "value")], 1, 1));
        assert!(gate(&s.report(), 0.2, 0.5).is_empty());
        assert_eq!(gate(&s.report(), 0.1, 0.5).len(), 1);
        for _ in 0..20 {
            s.add_unmatched(0, &Arc::from("GET /a"), UnmatchedReason::Timeout);
        }
        assert_eq!(gate(&s.report(), 0.2, 0.5).len(), 1);
        for _ in 0..1000 {
            s.add_unmatched(0, &Arc::from("GET /a"), UnmatchedReason::SampledOut);
        }
        assert_eq!(
            gate(&s.report(), 0.2, 0.9).len(),
            0,
            "sampled_out is not a failure"
        );
    }
}
