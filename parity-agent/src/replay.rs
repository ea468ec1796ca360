//! `parity-agent replay`: run capture files through the pipeline, offline.
//!
//! Files are read in the order given, as one capture (connections may continue from one file to
//! the next, as with a rotated tcpdump). Every timeout runs on the capture's own timestamps, so
//! the same files always give the same records and the same report.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use crate::capture::pcap::{CaptureError, CaptureReader, ReadStats};
use crate::config::Config;
use crate::exchange::IncompleteReason;
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, PipelineStats, QueuePolicy, RecordSink, Shared, VerdictHook};
use crate::summary::Summary;

/// What `replay` was asked to do.
pub struct ReplayArgs {
    /// Capture files, in order.
    pub files: Vec<PathBuf>,
    /// The validated configuration.
    pub config: Config,
    /// Exchange records destination.
    pub records: Option<RecordSink>,
    /// Show progress on the terminal.
    pub progress: bool,
    /// Called with every verdict (the diff store).
    pub hook: Option<VerdictHook>,
}

/// What a replay saw.
pub struct ReplayOutcome {
    /// Reader counters summed over the files.
    pub read: ReadStats,
    /// Pipeline counters.
    pub pipeline: PipelineStats,
    /// Flows opened.
    pub flows: u64,
    /// Gaps declared.
    pub gaps: u64,
    /// Wall time.
    pub elapsed: std::time::Duration,
    /// Bytes of capture files read.
    pub bytes: u64,
    /// The summary (pairs, verdicts).
    pub summary: Arc<Mutex<Summary>>,
    /// Files whose tail was truncated, with the offset.
    pub truncated: Vec<(PathBuf, u64)>,
}

/// Run the replay. Errors name the file and offset of unreadable input.
pub fn replay(args: ReplayArgs) -> Result<ReplayOutcome, CaptureError> {
    let started = Instant::now();
    let shared = Shared {
        summary: Arc::new(Mutex::new(Summary::new(&args.config.pairs))),
        metrics: Arc::new(Metrics::new()),
    };
    let mut pipeline = Pipeline::new(
        &args.config,
        args.records,
        QueuePolicy::Block,
        shared.clone(),
        args.hook,
    );
    // Open every file first, so a bad file late in the list fails before any output.
    let mut readers = Vec::with_capacity(args.files.len());
    for f in &args.files {
        readers.push((f.clone(), CaptureReader::open(f)?));
    }
    let total: u64 = readers.iter().filter_map(|(_, r)| r.file_size()).sum();
    let bar = (args.progress && std::io::stderr().is_terminal() && total > 8 << 20).then(|| {
        let b = ProgressBar::new(total);
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} {bytes}/{total_bytes} {bar:30} {binary_bytes_per_sec} eta {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    });
    let mut read = ReadStats::default();
    let mut truncated = Vec::new();
    let mut done_bytes = 0u64;
    for (path, mut reader) in readers {
        let mut n = 0u64;
        while let Some(seg) = reader.next_segment()? {
            pipeline.push(seg);
            n += 1;
            if n.is_multiple_of(65_536) {
                if let Some(b) = &bar {
                    b.set_position(done_bytes + reader.stats().bytes_read);
                    b.set_message(format!("{} exchanges", pipeline.stats().exchanges));
                }
            }
        }
        let s = reader.stats();
        if let Some(off) = s.truncated_at {
            truncated.push((path.clone(), off));
        }
        done_bytes += s.bytes_read;
        read.add(s);
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let mut dropped = BTreeMap::new();
    for (k, v) in read.skipped() {
        if v > 0 {
            dropped.insert(k.to_string(), v);
        }
    }
    pipeline.set_capture_dropped(dropped);
    if let Err(e) = pipeline.finish() {
        tracing::error!("writing exchange records failed: {e}");
    }
    let r = pipeline.reassembly_stats();
    Ok(ReplayOutcome {
        flows: r.flows_opened,
        gaps: r.gaps.gap + r.gaps.snaplen,
        pipeline: pipeline.stats().clone(),
        read,
        elapsed: started.elapsed(),
        bytes: done_bytes,
        summary: shared.summary,
        truncated,
    })
}

impl ReplayOutcome {
    /// The end-of-run summary printed on stderr.
    pub fn render(&self) -> String {
        let p = &self.pipeline;
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let mut s = format!(
            "replay: {} packets ({} TCP segments), {} flows, {} exchanges ({} complete), {} gaps, {:.2}s, {:.1} MB/s\n",
            self.read.packets,
            self.read.tcp_segments,
            self.flows,
            p.exchanges,
            p.complete,
            self.gaps,
            secs,
            self.bytes as f64 / 1e6 / secs,
        );
        let incomplete: Vec<String> = IncompleteReason::ALL
            .iter()
            .filter(|r| p.incomplete[**r as usize] > 0)
            .map(|r| format!("{} {}", r.as_str(), p.incomplete[*r as usize]))
            .collect();
        if !incomplete.is_empty() {
            s.push_str(&format!(
                "replay: incomplete exchanges: {}\n",
                incomplete.join(", ")
            ));
        }
        let skipped: Vec<String> = self
            .read
            .skipped()
            .into_iter()
            .filter(|(_, v)| *v > 0)
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        if !skipped.is_empty() {
            s.push_str(&format!(
                "replay: packets skipped: {}\n",
                skipped.join(", ")
            ));
        }
        s
    }
}
