//! Prometheus metrics: one registry, typed handles, bounded labels.
//!
//! Labels are bounded by construction: `pair` by the configuration, `endpoint` by each pair's
//! `max_endpoints` (the rest are `other`), `role`, `reason`, `kind` and `outcome` by fixed enums.
//! Counters that stages keep internally (reassembly, HTTP) are published by [`Metrics::set_total`],
//! which advances a counter to a running total, so stages stay free of metric code.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Buckets of response latency histograms: 100 µs to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Buckets of comparison durations: 1 µs to 1 s.
pub const COMPARE_BUCKETS: &[f64] = &[
    0.000001, 0.0000025, 0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001,
    0.0025, 0.005, 0.01, 0.1, 1.0,
];

/// Every metric parity exports.
pub struct Metrics {
    registry: Registry,
    /// `parity_exchanges_total{pair,role}`
    pub exchanges: IntCounterVec,
    /// `parity_comparisons_total{pair,endpoint,outcome}`
    pub comparisons: IntCounterVec,
    /// `parity_differences_total{pair,endpoint,kind}`
    pub differences: IntCounterVec,
    /// `parity_unmatched_total{pair,role,reason}`
    pub unmatched: IntCounterVec,
    /// `parity_compare_duration_seconds{pair}`
    pub compare_duration: HistogramVec,
    /// `parity_response_latency_seconds{pair,endpoint,role}`
    pub latency: HistogramVec,
    /// `parity_capture_dropped_total{reason}`
    pub capture_dropped: IntCounterVec,
    /// `parity_capture_segments_total`
    pub segments: IntCounterVec,
    /// `parity_gaps_total{reason}` and `parity_gap_bytes_total{reason}`
    pub gaps: IntCounterVec,
    /// Bytes missing in gaps.
    pub gap_bytes: IntCounterVec,
    /// `parity_http_exchanges_total{complete}`: every exchange parsed, paired or not.
    pub http_exchanges: IntCounterVec,
    /// `parity_incomplete_exchanges_total{reason}`
    pub incomplete: IntCounterVec,
    /// `parity_anomalies_total{kind}`
    pub anomalies: IntCounterVec,
    /// `parity_dropped_total{stage,reason}`: everything a stage dropped or evicted.
    pub dropped: IntCounterVec,
    /// `parity_flows_active`
    pub flows_active: IntGauge,
    /// `parity_pending_pairs`
    pub pending_pairs: IntGauge,
    /// `parity_memory_bytes{area}`
    pub memory: IntGaugeVec,
    /// `parity_compare_queue_depth`
    pub compare_queue: IntGauge,
    /// `parity_store_records_total{outcome}`
    pub store_records: IntCounterVec,
    /// `parity_up`: 1 once capture is attached (live) or running (replay).
    pub up: IntGauge,
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)
                .unwrap_or_else(|e| unreachable!("metric {name} is well-formed: {e}"));
            registry
                .register(Box::new(c.clone()))
                .unwrap_or_else(|e| unreachable!("metric {name} registered once: {e}"));
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help)
                .unwrap_or_else(|e| unreachable!("metric {name} is well-formed: {e}"));
            registry
                .register(Box::new(g.clone()))
                .unwrap_or_else(|e| unreachable!("metric {name} registered once: {e}"));
            g
        };
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: &[f64]| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                labels,
            )
            .unwrap_or_else(|e| unreachable!("metric {name} is well-formed: {e}"));
            registry
                .register(Box::new(h.clone()))
                .unwrap_or_else(|e| unreachable!("metric {name} registered once: {e}"));
            h
        };
        let memory = IntGaugeVec::new(
            Opts::new("parity_memory_bytes", "Bytes held by each bounded area"),
            &["area"],
        )
        .unwrap_or_else(|e| unreachable!("parity_memory_bytes is well-formed: {e}"));
        registry
            .register(Box::new(memory.clone()))
            .unwrap_or_else(|e| unreachable!("parity_memory_bytes registered once: {e}"));
        let compare_duration = histogram(
            "parity_compare_duration_seconds",
            "Time to compare one pair",
            &["pair"],
            COMPARE_BUCKETS,
        );
        Metrics {
            exchanges: counter(
                "parity_exchanges_total",
                "Exchanges classified to a pair, by role",
                &["pair", "role"],
            ),
            comparisons: counter(
                "parity_comparisons_total",
                "Pairs compared, by outcome (match or diverged)",
                &["pair", "endpoint", "outcome"],
            ),
            differences: counter(
                "parity_differences_total",
                "Differences found, by kind",
                &["pair", "endpoint", "kind"],
            ),
            unmatched: counter(
                "parity_unmatched_total",
                "Correlation ids that did not end in a comparison, by side at fault and reason",
                &["pair", "role", "reason"],
            ),
            compare_duration,
            latency: histogram(
                "parity_response_latency_seconds",
                "First request byte to last response byte, per role",
                &["pair", "endpoint", "role"],
                LATENCY_BUCKETS,
            ),
            capture_dropped: counter(
                "parity_capture_dropped_total",
                "Capture records lost in the kernel or skipped by the reader, by reason",
                &["reason"],
            ),
            segments: counter(
                "parity_capture_segments_total",
                "TCP segments received from the capture source",
                &[],
            ),
            gaps: counter(
                "parity_gaps_total",
                "Gaps in reassembled streams, by reason",
                &["reason"],
            ),
            gap_bytes: counter(
                "parity_gap_bytes_total",
                "Bytes missing from reassembled streams, by reason",
                &["reason"],
            ),
            http_exchanges: counter(
                "parity_http_exchanges_total",
                "Every HTTP exchange parsed, by completeness",
                &["complete"],
            ),
            incomplete: counter(
                "parity_incomplete_exchanges_total",
                "Exchanges that ended incomplete, by reason",
                &["reason"],
            ),
            anomalies: counter(
                "parity_anomalies_total",
                "HTTP framing anomalies seen, by kind",
                &["kind"],
            ),
            dropped: counter(
                "parity_dropped_total",
                "Things a stage dropped or evicted to stay within its limits, by stage and reason",
                &["stage", "reason"],
            ),
            flows_active: gauge("parity_flows_active", "TCP flows being reassembled"),
            pending_pairs: gauge(
                "parity_pending_pairs",
                "Exchanges waiting for their counterpart",
            ),
            memory,
            compare_queue: gauge("parity_compare_queue_depth", "Pairs waiting for comparison"),
            store_records: counter(
                "parity_store_records_total",
                "Diff records handed to the store, by outcome",
                &["outcome"],
            ),
            up: gauge("parity_up", "1 while capture runs"),
            registry,
        }
    }

    /// Advance the counter `c{labels}` to `total` (a running total kept elsewhere). Never
    /// decreases it.
    pub fn set_total(c: &IntCounterVec, labels: &[&str], total: u64) {
        let counter = c.with_label_values(labels);
        let now = counter.get();
        if total > now {
            counter.inc_by(total - now);
        }
    }

    /// The text exposition format of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let families = self.registry.gather();
        if TextEncoder::new().encode(&families, &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_documented_names() {
        let m = Metrics::new();
        m.exchanges
            .with_label_values(&["checkout", "primary"])
            .inc();
        m.comparisons
            .with_label_values(&["checkout", "GET /a", "diverged"])
            .inc();
        m.latency
            .with_label_values(&["checkout", "GET /a", "mirror"])
            .observe(0.002);
        m.unmatched
            .with_label_values(&["checkout", "mirror", "timeout"])
            .inc();
        m.capture_dropped
            .with_label_values(&["ringbuf_full"])
            .inc_by(0);
        m.flows_active.set(3);
        let text = m.render();
        for name in [
            "parity_exchanges_total{pair=\"checkout\",role=\"primary\"} 1",
            "parity_comparisons_total{endpoint=\"GET /a\",outcome=\"diverged\",pair=\"checkout\"} 1",
            "parity_response_latency_seconds_bucket{endpoint=\"GET /a\",pair=\"checkout\",role=\"mirror\",le=\"0.0025\"} 1",
            "parity_response_latency_seconds_bucket{endpoint=\"GET /a\",pair=\"checkout\",role=\"mirror\",le=\"0.0001\"} 0",
            "parity_unmatched_total{pair=\"checkout\",reason=\"timeout\",role=\"mirror\"} 1",
            "parity_capture_dropped_total{reason=\"ringbuf_full\"} 0",
            "parity_flows_active 3",
            "parity_pending_pairs 0",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }

    #[test]
    fn set_total_advances_and_never_goes_back() {
        let m = Metrics::new();
        Metrics::set_total(&m.gaps, &["gap"], 5);
        Metrics::set_total(&m.gaps, &["gap"], 3);
        Metrics::set_total(&m.gaps, &["gap"], 7);
        assert_eq!(m.gaps.with_label_values(&["gap"]).get(), 7);
    }
}
