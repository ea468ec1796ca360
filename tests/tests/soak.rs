//! Soak: the agent under a realistic mix for a long time, at half of the load this machine
//! sustains. Resident memory must stay flat after warm-up (within ±10% of its median), the
//! pending table and the flow table bounded, and the log free of warnings and errors other than
//! the expected ones listed in [`ALLOWED_LOG`].
//!
//! The mix: the demo's mirrored requests (with its injected divergences), requests sent to the
//! primary only (unmatched `timeout`), and garbage connections (TLS and random bytes, counted
//! `non_http`). `PARITY_SOAK_SECONDS` sets the duration (default 600); `cargo xtask test soak`
//! runs it for 60 s. Ignored by default: `cargo test -p parity-tests --release --test soak --
//! --ignored --nocapture`.
//!
//! "Maximum load" is calibrated at the start: the demo mix sent as fast as 8 keep-alive
//! connections per side go for 8 s, counted only if the agent lost no capture record; that is
//! the rate of this client, these upstreams and the agent together on the machine, not of the
//! agent alone. The soak then runs at half of it.
//!
//! Figures of a 600 s run (2026-11-29, release, 2 shared cores): calibration 2207 pairs/s, soak
//! at 1103 pairs/s + 55/s primary-only + 723 garbage connections; RSS after warm-up
//! 152.1..160.4 MiB around a median of 153.2 (-0.7%/+4.7%; the 64 MiB ring counts twice), flat
//! but for one +7 MiB step at about 350 s (the day before: at about 410 s; not explained);
//! pending at most 278, flows at most 10; 400 028 compared (184 015 diverged, as the demo
//! injects), 33 006 unmatched, all `timeout` of primary-only ids; no WARN or ERROR line; no
//! capture loss.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use parity_tests::agent::{metric_sum, Agent};
use parity_tests::demo::{self, Side};
use parity_tests::env;
use parity_tests::harness::{free_addr, mib, runtime, wait_until, MemoryLimits};
use parity_tests::hostile;
use parity_tests::http1::Client;

/// Log lines at WARN or ERROR that the soak expects: none. The agent warns about conditions an
/// operator must act on (a config reload that failed, records it could not write, a store that
/// fell behind), and the soak provokes none of them; garbage and unmatched traffic is counted,
/// not logged.
const ALLOWED_LOG: &[&str] = &[];

/// One sample of the agent's state.
#[derive(Clone, Copy, Debug)]
struct Sample {
    t: f64,
    rss: u64,
    pending: f64,
    flows: f64,
    compared: f64,
    unmatched: f64,
}

fn sample(agent: &Agent, t0: Instant) -> Result<Sample> {
    let m = agent.metrics()?;
    Ok(Sample {
        t: t0.elapsed().as_secs_f64(),
        rss: agent.memory()?.rss,
        pending: metric_sum(&m, "parity_pending_pairs", &[]),
        flows: metric_sum(&m, "parity_flows_active", &[]),
        compared: metric_sum(&m, "parity_comparisons_total", &[]),
        unmatched: metric_sum(&m, "parity_unmatched_total", &[]),
    })
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// Send requests to the primary only, with ids the mirror never sees, at `rate` per second.
async fn mirrorless(
    primary: SocketAddr,
    rate: u32,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) -> Result<()> {
    let mut c = Client::connect(primary).await?;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let id = format!("lonely-{n}");
        c.request("GET", "/api/health", &[("x-request-id", id.as_str())], b"")
            .await?;
        sent.fetch_add(1, Ordering::Relaxed);
        n += 1;
    }
    Ok(())
}

/// Open a garbage connection (alternately a TLS ClientHello and random bytes) every `every`.
async fn garbage(
    target: SocketAddr,
    every: Duration,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) -> Result<()> {
    let hello = hostile::tls_client_hello("soak.example.com");
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(every).await;
        let bytes = if n.is_multiple_of(2) {
            hello.clone()
        } else {
            hostile::random_bytes(200 + (n % 1000) as usize, n)
        };
        // The demo upstream answers garbage by closing; what it says does not matter.
        let _ = hostile::send_garbage(target, &bytes).await;
        sent.fetch_add(1, Ordering::Relaxed);
        n += 1;
    }
    Ok(())
}

#[test]
#[ignore = "long: run by `cargo xtask test soak` (60 s) or by hand (PARITY_SOAK_SECONDS)"]
fn soak_at_half_load_keeps_memory_flat_and_tables_bounded() -> Result<()> {
    if !env::require_root() {
        return Ok(());
    }
    let seconds: u64 = std::env::var("PARITY_SOAK_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    let rt = runtime()?;
    let (primary, mirror, listen) = (free_addr(), free_addr(), free_addr());
    rt.block_on(async {
        demo::start_upstream(Side::Primary, primary).await?;
        demo::start_upstream(Side::Mirror, mirror).await
    })?;
    let limits = MemoryLimits {
        flow_memory: 64 << 20,
        pending_memory: 64 << 20,
        ring_buffer_bytes: 64 << 20,
        compare_queue: 1024,
        max_body_bytes: 1 << 20,
    };
    let config = format!(
        "{}\n[limits]\n{}idle_timeout = \"30s\"\n",
        demo::config(primary, mirror, listen),
        limits.toml()
    );
    let mut agent = Agent::start_listening(&config, listen)?;

    // Calibration: the demo mix as fast as 8 connections per side go, for 8 s. The machine's
    // maximum is what the agent compared per second, provided it lost nothing.
    let cal_secs = 8.0;
    let before = sample(&agent, Instant::now())?;
    let cal = rt.block_on(demo::run_client(
        primary,
        mirror,
        8,
        1_000_000,
        Duration::from_secs_f64(cal_secs),
        None,
    ))?;
    wait_until(Duration::from_secs(30), "calibration compared", || {
        let s = sample(&agent, Instant::now())?;
        Ok(s.compared + s.unmatched - before.compared - before.unmatched >= cal.sent as f64)
    })?;
    let max_rate = cal.sent as f64 / cal_secs;
    let dropped = metric_sum(&agent.metrics()?, "parity_capture_dropped_total", &[]);
    anyhow::ensure!(
        dropped == 0.0,
        "calibration lost records ({dropped}): the maximum is lower than the client's rate"
    );
    let rate = (max_rate / 2.0).max(50.0) as u32;
    let lonely_rate = (rate / 20).max(1);
    eprintln!(
        "soak: calibration {} pairs in {cal_secs}s = {max_rate:.0} pairs/s; soak at {rate} pairs/s \
         + {lonely_rate}/s primary-only + garbage connections (one at a time, 250 ms apart) for {seconds}s",
        cal.sent
    );

    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let lonely_sent = Arc::new(AtomicU64::new(0));
    let garbage_sent = Arc::new(AtomicU64::new(0));
    let client = rt.spawn(demo::run_client(
        primary,
        mirror,
        4,
        rate,
        Duration::from_secs(seconds),
        None,
    ));
    let lonely = rt.spawn(mirrorless(
        primary,
        lonely_rate,
        stop.clone(),
        lonely_sent.clone(),
    ));
    let junk = rt.spawn(garbage(
        primary,
        Duration::from_millis(250),
        stop.clone(),
        garbage_sent.clone(),
    ));
    let every = Duration::from_secs(if seconds >= 300 { 10 } else { 3 });
    let mut series = Vec::new();
    eprintln!("soak:      t    RSS MiB  pending   flows   compared  unmatched");
    while t0.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(every);
        let s = sample(&agent, t0)?;
        eprintln!(
            "soak: {:6.0}s {:9.1} {:8.0} {:7.0} {:10.0} {:10.0}",
            s.t,
            mib(s.rss),
            s.pending,
            s.flows,
            s.compared,
            s.unmatched
        );
        series.push(s);
    }
    let stats = rt.block_on(client)??;
    stop.store(true, Ordering::Relaxed);
    rt.block_on(lonely)??;
    rt.block_on(junk)??;
    let lonely_sent = lonely_sent.load(Ordering::Relaxed);
    let sent = stats.sent + lonely_sent;
    // The primary-only ids leave the pending table one match window after they were sent.
    wait_until(
        Duration::from_secs(30),
        "every id compared or counted",
        || {
            let s = sample(&agent, t0)?;
            Ok(s.pending == 0.0
                && s.compared + s.unmatched - before.compared - before.unmatched >= sent as f64)
        },
    )?;

    // Memory: flat after warm-up (the first 20% or 60 s, whichever is less).
    let warm = (seconds as f64 * 0.2).min(60.0);
    let steady: Vec<&Sample> = series.iter().filter(|s| s.t >= warm).collect();
    anyhow::ensure!(
        steady.len() >= 5,
        "too few samples after warm-up: {}",
        steady.len()
    );
    let med = median(steady.iter().map(|s| s.rss).collect());
    let (lo, hi) = (
        steady.iter().map(|s| s.rss).min().unwrap_or(0),
        steady.iter().map(|s| s.rss).max().unwrap_or(0),
    );
    let spread = |x: u64| (x as f64 - med as f64) / med as f64 * 100.0;
    let hwm = agent.memory()?.hwm;
    eprintln!(
        "soak: RSS after {warm:.0}s warm-up: median {:.1} MiB, min {:.1} ({:+.1}%), max {:.1} ({:+.1}%); VmHWM {:.1} MiB; bound {:.1} MiB",
        mib(med),
        mib(lo),
        spread(lo),
        mib(hi),
        spread(hi),
        mib(hwm),
        mib(limits.bound())
    );
    let peak_pending = series.iter().map(|s| s.pending).fold(0.0, f64::max);
    let peak_flows = series.iter().map(|s| s.flows).fold(0.0, f64::max);
    let metrics = agent.metrics()?;
    let summary = agent.summary()?;
    eprintln!(
        "soak: {} mirrored pairs, {lonely_sent} primary-only, {} garbage connections; peak pending {peak_pending}, peak flows {peak_flows}; non_http {}",
        stats.sent,
        garbage_sent.load(Ordering::Relaxed),
        metric_sum(&metrics, "parity_dropped_total", &[("stage", "http"), ("reason", "non_http")])
    );
    assert!(
        spread(lo) >= -10.0 && spread(hi) <= 10.0,
        "RSS not flat after warm-up: {:.1}..{:.1} MiB around {:.1}",
        mib(lo),
        mib(hi),
        mib(med)
    );
    assert!(
        hwm <= limits.bound(),
        "VmHWM {:.1} MiB above the bound",
        mib(hwm)
    );
    // Pending: the primary-only ids wait one window (5 s) each, plus pairs in flight.
    let pending_bound = f64::from(lonely_rate) * 5.0 * 1.5 + 200.0;
    assert!(
        peak_pending <= pending_bound,
        "pending peaked at {peak_pending} > {pending_bound}"
    );
    // Flows: 8 keep-alive connections, one primary-only, garbage ones closing within a second.
    assert!(peak_flows <= 64.0, "flows peaked at {peak_flows}");
    assert_eq!(
        metric_sum(&metrics, "parity_capture_dropped_total", &[]),
        0.0
    );
    let problems = demo::check_report(&summary);
    assert!(problems.is_empty(), "{problems:?}");
    let lonely_timeouts = metric_sum(
        &metrics,
        "parity_unmatched_total",
        &[("role", "mirror"), ("reason", "timeout")],
    );
    assert_eq!(
        lonely_timeouts, lonely_sent as f64,
        "each primary-only id times out once"
    );
    let log = agent.log();
    let warn_error: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    let p = &summary["pairs"][0];
    eprintln!(
        "soak: agent totals: {} compared, {} diverged, unmatched {}; {} WARN/ERROR log lines",
        p["compared"],
        p["diverged"],
        p["unmatched"],
        warn_error.len()
    );
    let unexpected: Vec<&str> = warn_error
        .into_iter()
        .filter(|l| !ALLOWED_LOG.iter().any(|a| l.contains(a)))
        .collect();
    assert!(
        unexpected.is_empty(),
        "unexpected log lines: {unexpected:#?}"
    );
    assert_eq!(stats.errors, 0, "the demo client saw no error");
    let status = agent.stop()?;
    assert!(status.success(), "agent exit: {status}");
    Ok(())
}
