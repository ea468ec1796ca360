//! Plumbing shared by the fault, abuse and soak tests: free ports, runtimes, waiting on a
//! condition with a deadline, pair configurations, exchange records by correlation id, and the
//! agent's documented memory bound.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::Value;

use crate::agent::{metric_sum, Agent};

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// `127.0.0.1:<a free port>`.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A two-thread tokio runtime, as the agent's machine share allows.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// Poll `cond` every 100 ms until it returns true; fail with `what` after `timeout`.
pub fn wait_until(
    timeout: Duration,
    what: &str,
    mut cond: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let start = Instant::now();
    loop {
        if cond()? {
            return Ok(());
        }
        if start.elapsed() > timeout {
            bail!("waited {timeout:?} for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A configuration with one pair `name` (`x-request-id`), the agent's server on `listen`,
/// capture on `lo`, and `extra` appended (e.g. a `[limits]` table and more targets).
pub fn pair_config(
    name: &str,
    primary: SocketAddr,
    mirror: SocketAddr,
    listen: SocketAddr,
    match_timeout: &str,
    extra: &str,
) -> String {
    format!(
        r#"[capture]
engine = "tc"
interfaces = ["lo"]

[server]
listen = "{listen}"

[[pair]]
name = "{name}"
primary = "{primary}"
mirror = "{mirror}"
match_timeout = "{match_timeout}"
ignore_headers = ["date", "server"]

{extra}
"#
    )
}

/// The value of a record's request header `name` (first one), if any.
pub fn request_header(record: &Value, name: &str) -> Option<String> {
    record["request"]["headers"]
        .as_array()?
        .iter()
        .find_map(|h| {
            let h = h.as_array()?;
            let n = h.first()?.as_str()?;
            n.eq_ignore_ascii_case(name)
                .then(|| h.get(1)?.as_str().map(String::from))
                .flatten()
        })
}

/// Records by (`x-request-id`, server address): every record of each id on each server, in
/// order. Records without the header are left out.
pub fn records_by_id(records: &[Value]) -> BTreeMap<(String, String), Vec<Value>> {
    let mut out: BTreeMap<(String, String), Vec<Value>> = BTreeMap::new();
    for r in records {
        if let Some(id) = request_header(r, "x-request-id") {
            let server = r["flow"]["server"].as_str().unwrap_or("").to_string();
            out.entry((id, server)).or_default().push(r.clone());
        }
    }
    out
}

/// A record's outcome as a short string: `complete` or its incomplete reason.
pub fn outcome(record: &Value) -> String {
    if record["complete"] == true {
        "complete".into()
    } else {
        record["incomplete_reason"]
            .as_str()
            .unwrap_or("?")
            .to_string()
    }
}

/// The `[limits]` that bound the agent's memory, in bytes (and pairs for the queue).
#[derive(Clone, Copy, Debug)]
pub struct MemoryLimits {
    /// `flow_memory`.
    pub flow_memory: u64,
    /// `pending_memory`.
    pub pending_memory: u64,
    /// `ring_buffer_bytes`.
    pub ring_buffer_bytes: u64,
    /// `compare_queue`.
    pub compare_queue: u64,
    /// `max_body_bytes`.
    pub max_body_bytes: u64,
}

/// What README's Deployment section promises beyond the configured limits: the runtime, the
/// metrics, the summary, the record writer and the store's cache. Measured: an idle debug build
/// of the agent is resident at about 20 MiB (release: about 12 MiB).
pub const MEMORY_OVERHEAD: u64 = 64 << 20;

impl MemoryLimits {
    /// `[limits]` text setting these values.
    pub fn toml(&self) -> String {
        format!(
            "flow_memory = \"{}B\"\npending_memory = \"{}B\"\nring_buffer_bytes = \"{}B\"\ncompare_queue = {}\nmax_body_bytes = \"{}B\"\n",
            self.flow_memory,
            self.pending_memory,
            self.ring_buffer_bytes,
            self.compare_queue,
            self.max_body_bytes
        )
    }

    /// README's bound on the agent's resident memory: `flow_memory + pending_memory +
    /// 2 × ring_buffer_bytes + compare_queue × 2 × max_body_bytes` plus [`MEMORY_OVERHEAD`].
    /// The ring counts twice: the kernel maps its data pages twice (so that a record that wraps
    /// reads contiguously), and VmRSS counts a page at each mapping.
    pub fn bound(&self) -> u64 {
        self.flow_memory
            + self.pending_memory
            + 2 * self.ring_buffer_bytes
            + self.compare_queue * 2 * self.max_body_bytes
            + MEMORY_OVERHEAD
    }
}

/// Peak resident memory of the agent so far, checked against `limits.bound()`; returns the peak.
pub fn check_memory(agent: &Agent, limits: &MemoryLimits, what: &str) -> Result<u64> {
    let m = agent.memory()?;
    let bound = limits.bound();
    eprintln!(
        "{what}: agent VmRSS {:.1} MiB, VmHWM {:.1} MiB, bound {:.1} MiB",
        mib(m.rss),
        mib(m.hwm),
        mib(bound)
    );
    if m.hwm > bound {
        bail!(
            "{what}: the agent's peak resident memory {:.1} MiB is above the documented bound {:.1} MiB ({limits:?})",
            mib(m.hwm),
            mib(bound)
        );
    }
    Ok(m.hwm)
}

/// Bytes as MiB.
pub fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

/// The sum of the samples of one metric on the agent (labels as in [`metric_sum`]).
pub fn metric(agent: &Agent, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
    Ok(metric_sum(&agent.metrics()?, name, labels))
}

/// The agent's capture losses of every reason together.
pub fn capture_dropped(agent: &Agent) -> Result<f64> {
    metric(agent, "parity_capture_dropped_total", &[])
}

/// Totals of the first pair in a summary (`/api/summary` or a report): compared, diverged, and
/// unmatched by reason.
pub fn pair_totals(summary: &Value) -> (u64, u64, BTreeMap<String, u64>) {
    let p = &summary["pairs"][0];
    let unmatched = p["unmatched"]
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    (
        p["compared"].as_u64().unwrap_or(0),
        p["diverged"].as_u64().unwrap_or(0),
        unmatched,
    )
}
