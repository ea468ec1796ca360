//! Hostile traffic end to end: non-HTTP bytes on a target port, a flood of connections and of
//! random-tuple SYNs, slowloris heads, heads of a megabyte, a gzip bomb and big bodies (128 MiB
//! per side here; a gigabyte by hand, see [`big_bytes`]). parity must count what it cannot use, keep its memory under the documented bound
//! (README, Deployment: the sum of the limits plus an overhead), never crash, and keep comparing
//! the well-formed traffic that flows at the same time.
//!
//! Each test runs its own upstreams and agent (live eBPF capture), on loopback or inside a
//! network namespace of its own, and removes them even when it fails.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use parity_tests::agent::{metric_sum, Agent};
use parity_tests::demo;
use parity_tests::env;
use parity_tests::faults::{self, Seen, ServerOpts, Side};
use parity_tests::harness::{
    capture_dropped, check_memory, free_addr, mib, outcome, pair_config, pair_totals,
    records_by_id, runtime, wait_until, MemoryLimits,
};
use parity_tests::hostile::{self, Slow, SynSources};
use parity_tests::http1::Client;
use parity_tests::netns::Netns;

/// The abuse tests' limits: small, so that hostile traffic reaches them.
fn small_limits() -> MemoryLimits {
    MemoryLimits {
        flow_memory: 16 << 20,
        pending_memory: 16 << 20,
        ring_buffer_bytes: 16 << 20,
        compare_queue: 16,
        max_body_bytes: 1 << 20,
    }
}

/// `n` well-formed mirrored requests with ids `{tag}-{i}`, on one keep-alive connection per side.
async fn well_formed(primary: SocketAddr, mirror: SocketAddr, tag: &str, n: usize) -> Result<()> {
    let mut p = Client::connect(primary).await?;
    let mut m = Client::connect(mirror).await?;
    for i in 0..n {
        let id = format!("{tag}-{i}");
        let target = format!("/n/ok/{tag}/{i}");
        let h = [("x-request-id", id.as_str())];
        let (a, b) = tokio::join!(
            p.request("GET", &target, &h, b""),
            m.request("GET", &target, &h, b"")
        );
        anyhow::ensure!(a?.status == 200 && b?.status == 200);
    }
    Ok(())
}

#[test]
fn non_http_bytes_on_a_target_port_are_counted_and_ignored() -> Result<()> {
    if !env::require_root() {
        return Ok(());
    }
    let t0 = Instant::now();
    let rt = runtime()?;
    let (primary, mirror, listen) = (free_addr(), free_addr(), free_addr());
    rt.block_on(faults::start_pair(primary, mirror, ServerOpts::default()))?;
    let config = pair_config("abuse", primary, mirror, listen, "3s", "");
    let mut agent = Agent::start_listening(&config, listen)?;
    let hello = hostile::tls_client_hello("shop.example.com");
    let garbage_conns = 3;
    let ws_frames = 5;
    rt.block_on(async {
        let mut tasks = Vec::new();
        for server in [primary, mirror] {
            for i in 0..garbage_conns {
                let hello = hello.clone();
                tasks.push(tokio::spawn(async move {
                    let answer = hostile::send_garbage(server, &hello).await?;
                    anyhow::ensure!(answer.first() == Some(&0x15), "a TLS alert back");
                    let noise = hostile::random_bytes(3000, 1000 + i);
                    hostile::send_garbage(server, &noise).await?;
                    anyhow::Ok(())
                }));
            }
        }
        for t in tasks {
            t.await??;
        }
        // A WebSocket on both sides with one id, frames that look like requests inside.
        let (a, b) = tokio::join!(
            hostile::websocket(primary, "/n/ws", "ws-1", ws_frames),
            hostile::websocket(mirror, "/n/ws", "ws-1", ws_frames)
        );
        anyhow::ensure!(a? == 101 && b? == 101);
        // Well-formed traffic on other connections, interleaved with more garbage.
        let noise = hostile::random_bytes(500, 7);
        let (ok, garbage) = tokio::join!(
            well_formed(primary, mirror, "ok", 20),
            hostile::send_garbage(primary, &noise)
        );
        ok?;
        garbage?;
        anyhow::Ok(())
    })?;
    let non_http = 2 * 2 * garbage_conns + 1;
    wait_until(
        Duration::from_secs(20),
        "every connection accounted",
        || {
            let (c, _, _) = pair_totals(&agent.summary()?);
            let n = metric_sum(
                &agent.metrics()?,
                "parity_dropped_total",
                &[("stage", "http"), ("reason", "non_http")],
            );
            Ok(c >= 21 && n >= non_http as f64)
        },
    )?;
    std::thread::sleep(Duration::from_millis(500));
    let metrics = agent.metrics()?;
    let summary = agent.summary()?;
    let (compared, diverged, unmatched) = pair_totals(&summary);
    assert_eq!(
        metric_sum(
            &metrics,
            "parity_dropped_total",
            &[("stage", "http"), ("reason", "non_http")]
        ),
        non_http as f64,
        "one count per non-HTTP connection"
    );
    assert_eq!(
        compared, 21,
        "20 well-formed pairs and the upgrade: {summary:#}"
    );
    assert_eq!(diverged, 0);
    assert_eq!(unmatched.values().sum::<u64>(), 0, "{summary:#}");
    assert_eq!(capture_dropped(&agent)?, 0.0);
    let status = agent.stop()?;
    assert!(status.success());
    let records = agent.exchanges()?;
    // No garbage exchange: only the 20 pairs and the upgrade on each side.
    assert_eq!(records.len(), 2 * 21, "records: {records:#?}");
    let by_id = records_by_id(&records);
    for server in [primary, mirror] {
        let ws = &by_id[&("ws-1".to_string(), server.to_string())];
        assert_eq!(ws.len(), 1);
        assert_eq!(ws[0]["response"]["status"], 101);
        assert_eq!(outcome(&ws[0]), "complete");
    }
    assert!(records.iter().all(|r| r["complete"] == true));
    assert!(
        !records.iter().any(|r| r["request"]["uri"]
            .as_str()
            .unwrap_or("")
            .contains("inside-the-tunnel")),
        "nothing after 101 is parsed as HTTP"
    );
    eprintln!(
        "non-HTTP: {non_http} connections counted, {compared} pairs compared, {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

#[test]
fn slowloris_huge_heads_and_a_gzip_bomb_stay_bounded_and_counted() -> Result<()> {
    if !env::require_root() {
        return Ok(());
    }
    let t0 = Instant::now();
    hostile::raise_fd_limit()?;
    let bomb = faults::gzip_bomb();
    eprintln!(
        "gzip bomb: {} bytes inflating to {} MiB, built in {:.1}s",
        bomb.len(),
        faults::GZIP_BOMB_INFLATED >> 20,
        t0.elapsed().as_secs_f64()
    );
    let rt = runtime()?;
    let (primary, mirror, listen) = (free_addr(), free_addr(), free_addr());
    rt.block_on(faults::start_pair(primary, mirror, ServerOpts::default()))?;
    let limits = small_limits();
    let cap: usize = 4096;
    let config = pair_config(
        "abuse",
        primary,
        mirror,
        listen,
        "3s",
        &format!(
            "[limits]\n{}max_header_bytes = \"{cap}B\"\nidle_timeout = \"3s\"\n",
            limits.toml()
        ),
    );
    let mut agent = Agent::start_listening(&config, listen)?;

    // Slowloris on the primary: 400 heads 5 bytes short of the cap trickling a byte a second
    // (they hit the cap), 300 that stall after their first bytes (closed idle after 3 s), and
    // 300 far from the cap trickling a byte every 2 s until the client gives up.
    let (near, stall, far) = (400usize, 300usize, 300usize);
    let peak = Arc::new(Mutex::new(0u64));
    rt.block_on(async {
        let mut near_c = Vec::new();
        let mut stall_c = Vec::new();
        let mut far_c = Vec::new();
        for _ in 0..near {
            near_c.push(Slow::open(primary, cap - 5).await?);
        }
        for _ in 0..stall {
            stall_c.push(Slow::open(primary, 200).await?);
        }
        for _ in 0..far {
            far_c.push(Slow::open(primary, 300).await?);
        }
        for second in 0..10 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            for c in &mut near_c {
                c.trickle().await?;
            }
            if second % 2 == 1 {
                for c in &mut far_c {
                    c.trickle().await?;
                }
            }
        }
        let m = check_memory(&agent, &limits, "slowloris held")?;
        *peak.lock().map_err(|_| anyhow::anyhow!("lock"))? = m;
        for c in near_c.into_iter().chain(stall_c).chain(far_c) {
            c.close().await?;
        }
        anyhow::Ok(())
    })?;

    // Heads of a megabyte: a request head on both sides, and a response head from the mirror.
    // A gzip bomb from both sides. Well-formed pairs before and after.
    rt.block_on(async {
        well_formed(primary, mirror, "before", 10).await?;
        let (a, b) = tokio::join!(
            faults::big_head_request(primary, "/n/ok/big-request-head", "bighead-req", 1 << 20),
            faults::big_head_request(mirror, "/n/ok/big-request-head", "bighead-req", 1 << 20)
        );
        anyhow::ensure!(
            a == Seen::Status(200) && b == Seen::Status(200),
            "{a:?} {b:?}"
        );
        let (a, b) = tokio::join!(
            faults::request_once(primary, "/m/bighead/1048576", "bighead-resp"),
            faults::request_once(mirror, "/m/bighead/1048576", "bighead-resp")
        );
        anyhow::ensure!(
            a == Seen::Status(200) && b == Seen::Status(200),
            "{a:?} {b:?}"
        );
        let (a, b) = tokio::join!(
            faults::request_once(primary, "/b/gzipbomb", "bomb"),
            faults::request_once(mirror, "/b/gzipbomb", "bomb")
        );
        anyhow::ensure!(
            a == Seen::Status(200) && b == Seen::Status(200),
            "{a:?} {b:?}"
        );
        well_formed(primary, mirror, "after", 10).await
    })?;

    let want_incomplete = [
        ("header_cap", near + 3),
        ("truncated", stall + far),
        ("decode_error", 2),
    ];
    wait_until(
        Duration::from_secs(30),
        "every slow connection and fault counted",
        || {
            let m = agent.metrics()?;
            let (c, _, _) = pair_totals(&agent.summary()?);
            Ok(c >= 21
                && want_incomplete.iter().all(|(r, n)| {
                    metric_sum(&m, "parity_incomplete_exchanges_total", &[("reason", r)])
                        >= *n as f64
                }))
        },
    )?;
    std::thread::sleep(Duration::from_millis(500));
    let metrics = agent.metrics()?;
    let summary = agent.summary()?;
    for (reason, n) in want_incomplete {
        assert_eq!(
            metric_sum(
                &metrics,
                "parity_incomplete_exchanges_total",
                &[("reason", reason)]
            ),
            n as f64,
            "incomplete {reason}"
        );
    }
    let (compared, diverged, unmatched) = pair_totals(&summary);
    assert_eq!(
        compared, 21,
        "20 well-formed pairs and the bomb: {summary:#}"
    );
    assert_eq!(diverged, 0, "{summary:#}");
    let unmatched_of = |role: &str, reason: &str| {
        metric_sum(
            &metrics,
            "parity_unmatched_total",
            &[("pair", "abuse"), ("role", role), ("reason", reason)],
        )
    };
    // Slowloris heads and the cut request heads carry no usable id; the mirror's cut response
    // head leaves its pair without a response.
    assert_eq!(
        unmatched_of("primary", "missing_id"),
        (near + stall + far + 1) as f64
    );
    assert_eq!(unmatched_of("mirror", "missing_id"), 1.0);
    assert_eq!(unmatched_of("mirror", "no_response"), 1.0);
    assert_eq!(
        unmatched.values().sum::<u64>(),
        (near + stall + far + 3) as u64
    );
    assert_eq!(capture_dropped(&agent)?, 0.0);
    let flows_bytes = metric_sum(&metrics, "parity_memory_bytes", &[("area", "flows")]);
    assert!(flows_bytes <= limits.flow_memory as f64);
    let hwm = check_memory(&agent, &limits, "after the bomb")?;
    let status = agent.stop()?;
    assert!(status.success(), "no crash: {status}");
    let by_id = records_by_id(&agent.exchanges()?);
    for server in [primary, mirror] {
        let bomb = &by_id[&("bomb".to_string(), server.to_string())];
        assert_eq!(outcome(&bomb[0]), "decode_error");
    }
    assert_eq!(
        outcome(&by_id[&("bighead-resp".to_string(), mirror.to_string())][0]),
        "header_cap"
    );
    eprintln!(
        "slowloris/heads/bomb: peak RSS {:.1} MiB with {} slow connections held, {:.1} MiB at the end, bound {:.1} MiB, {:.1}s",
        mib(*peak.lock().map_err(|_| anyhow::anyhow!("lock"))?),
        near + stall + far,
        mib(hwm),
        mib(limits.bound()),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Samples of the agent's gauges while a flood runs.
#[derive(Clone, Debug, Default)]
struct Peaks {
    flows: f64,
    flow_bytes: f64,
    rss: u64,
    samples: u64,
}

#[test]
fn a_flood_of_connections_and_random_syns_stays_within_the_flow_cap() -> Result<()> {
    if !env::require_root() || !env::require_tools(&["ip"]) {
        return Ok(());
    }
    let ns = Netns::new("flood")?;
    // Everything runs on a thread inside the namespace: upstreams, clients, the raw socket and
    // the agent (started from that thread, so it captures the namespace's loopback).
    ns.spawn(flood_inside)
        .join()
        .map_err(|_| anyhow::anyhow!("the flood thread panicked"))?
}

fn flood_inside() -> Result<()> {
    let t0 = Instant::now();
    hostile::raise_fd_limit()?;
    let rt = runtime()?;
    let (primary, mirror, target, listen) = (free_addr(), free_addr(), free_addr(), free_addr());
    rt.block_on(async {
        demo::start_upstream(Side::Primary, primary).await?;
        demo::start_upstream(Side::Mirror, mirror).await?;
        faults::start(Side::Primary, target, ServerOpts::default()).await
    })?;
    let limits = MemoryLimits {
        flow_memory: 64 << 20,
        ring_buffer_bytes: 64 << 20,
        ..small_limits()
    };
    // A flow costs its reassembly state and its HTTP state, both charged to `flow_memory`.
    let per_flow = parity_agent::reassembly::FLOW_COST + parity_agent::http::CONN_COST;
    let cap = limits.flow_memory as usize / per_flow;
    let config = demo::config(primary, mirror, listen).replace(
        "interfaces = [\"lo\"]",
        &format!("interfaces = [\"lo\"]\ntargets = [\":{}\"]", target.port()),
    ) + &format!("\n[limits]\n{}idle_timeout = \"120s\"\n", limits.toml());
    let mut agent = Agent::start_listening(&config, listen)?;
    let base = agent.memory()?;

    let running = Arc::new(AtomicBool::new(true));
    let peaks = Arc::new(Mutex::new(Peaks::default()));
    let sampler = {
        let (running, peaks) = (running.clone(), peaks.clone());
        let pid = agent.pid().context("pid")?;
        std::thread::spawn(move || {
            while running.load(Ordering::Relaxed) {
                if let (Ok((_, m)), Ok(mem)) = (
                    parity_tests::agent::http_get(listen, "/metrics"),
                    parity_tests::agent::proc_memory(pid),
                ) {
                    if let Ok(mut p) = peaks.lock() {
                        p.flows = p.flows.max(metric_sum(&m, "parity_flows_active", &[]));
                        p.flow_bytes = p.flow_bytes.max(metric_sum(
                            &m,
                            "parity_memory_bytes",
                            &[("area", "flows")],
                        ));
                        p.rss = p.rss.max(mem.rss);
                        p.samples += 1;
                        if p.samples % 25 == 0 {
                            eprintln!(
                                "flood: {:.0}s flows {} RSS {:.1} MiB",
                                t0.elapsed().as_secs_f64(),
                                metric_sum(&m, "parity_flows_active", &[]),
                                mib(mem.rss)
                            );
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };

    // Well-formed mirrored traffic through the whole flood.
    let flood_secs = 20;
    let during = rt.spawn(demo::run_client(
        primary,
        mirror,
        2,
        100,
        Duration::from_secs(flood_secs),
        None,
    ));
    // Random-tuple SYNs: half-open from unroutable sources (they fill the flow table), and
    // reset ones from 127.0.0.0/8 (closed at once).
    let syn_target = match target {
        SocketAddr::V4(v4) => v4,
        SocketAddr::V6(_) => bail!("IPv4 target expected"),
    };
    let syns = std::thread::spawn(move || -> Result<(u64, u64)> {
        let unroutable = hostile::raw_syns(
            syn_target,
            2 * cap as u64,
            20_000,
            SynSources::Unroutable,
            1,
        )?;
        eprintln!(
            "flood: {unroutable} unroutable SYNs sent at {:.1}s",
            t0.elapsed().as_secs_f64()
        );
        let reset = hostile::raw_syns(syn_target, 30_000, 20_000, SynSources::Loopback, 2)?;
        eprintln!(
            "flood: {reset} reset SYNs sent at {:.1}s",
            t0.elapsed().as_secs_f64()
        );
        Ok((unroutable, reset))
    });
    // 100k short connections from sources spread over 127.0.0.0/8.
    let short_count = 100_000;
    let flood = rt.block_on(hostile::short_connections(target, short_count, 128))?;
    eprintln!(
        "flood: {short_count} short connections done at {:.1}s: {flood:?}",
        t0.elapsed().as_secs_f64()
    );
    let (unroutable, reset) = syns.join().map_err(|_| anyhow::anyhow!("syn thread"))??;
    let during = rt.block_on(during)??;
    let flood_done = t0.elapsed();
    // Well-formed traffic after the flood.
    let after = rt.block_on(demo::run_client(
        primary,
        mirror,
        2,
        150,
        Duration::from_secs(30),
        Some(300),
    ))?;
    let sent = during.sent + after.sent;
    wait_until(
        Duration::from_secs(30),
        "every well-formed pair compared",
        || {
            let (c, _, u) = pair_totals(&agent.summary()?);
            Ok(c + u.values().sum::<u64>() >= sent)
        },
    )?;
    running.store(false, Ordering::Relaxed);
    let _ = sampler.join();
    let peaks = peaks.lock().map_err(|_| anyhow::anyhow!("lock"))?.clone();
    let metrics = agent.metrics()?;
    let summary = agent.summary()?;
    let evicted = metric_sum(
        &metrics,
        "parity_dropped_total",
        &[("stage", "reassembly"), ("reason", "evicted")],
    );
    let dropped = capture_dropped(&agent)?;
    let hwm = check_memory(&agent, &limits, "flood")?;
    eprintln!(
        "flood: {} short connections ({} ok, {} failed), {unroutable} unroutable + {reset} reset SYNs in {:.1}s; \
         flows peak {} (cap {cap} = {} MiB / {per_flow} B), flow memory peak {:.1} MiB, {evicted} evicted; \
         RSS {:.1} MiB idle, {:.1} MiB peak (VmHWM {:.1} MiB, bound {:.1} MiB); capture drops {dropped}; \
         well-formed pairs {sent} ({} during, {} after); {} samples",
        short_count,
        flood.ok,
        flood.failed,
        flood_done.as_secs_f64(),
        peaks.flows,
        limits.flow_memory >> 20,
        mib(peaks.flow_bytes as u64),
        mib(base.rss),
        mib(peaks.rss),
        mib(hwm),
        mib(limits.bound()),
        during.sent,
        after.sent,
        peaks.samples
    );
    assert_eq!(
        dropped, 0.0,
        "the ring kept up; otherwise pairs would be capture gaps"
    );
    assert!(
        peaks.flows <= cap as f64,
        "flows peaked at {} above the cap {cap}",
        peaks.flows
    );
    assert!(
        peaks.flows >= 0.8 * cap as f64,
        "the flood filled the table (peak {} of {cap})",
        peaks.flows
    );
    assert!(peaks.flow_bytes <= limits.flow_memory as f64);
    assert!(
        evicted as u64 >= unroutable - cap as u64,
        "evictions counted: {evicted}"
    );
    assert_eq!(flood.failed, 0, "the upstream served the whole flood");
    assert!(
        metric_sum(
            &metrics,
            "parity_http_exchanges_total",
            &[("complete", "true")]
        ) >= flood.ok as f64,
        "every flood exchange parsed"
    );
    let (compared, _, unmatched) = pair_totals(&summary);
    assert_eq!(
        compared, sent,
        "every well-formed pair compared: {unmatched:?}"
    );
    let problems = demo::check_report(&summary);
    assert!(problems.is_empty(), "{problems:?}");
    let status = agent.stop()?;
    assert!(status.success(), "no crash: {status}");
    eprintln!("flood: {:.1}s", t0.elapsed().as_secs_f64());
    Ok(())
}

/// Body size of the big-body test: 128 MiB per side, so that a debug agent on a shared 2-core
/// machine hashes both in seconds. `PARITY_BIG_BYTES=1073741824` runs the full gigabyte (by hand,
/// preferably `--release`, whose agent kept up at 100 MB/s per side on two shared cores, 1 GiB
/// each in 11 s, VmHWM 535 MiB with a 256 MiB ring; at 200 MB/s it lost records):
/// `PARITY_BIG_BYTES=1073741824 cargo test -p parity-tests --release --test abuse big_bodies --
/// --nocapture` (build the release agent first: `cargo build --release -p parity-agent`).
fn big_bytes() -> u64 {
    std::env::var("PARITY_BIG_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(128 << 20)
}

#[test]
fn big_bodies_are_hashed_whole_and_a_last_byte_difference_diverges() -> Result<()> {
    if !env::require_root() {
        return Ok(());
    }
    let t0 = Instant::now();
    let rt = runtime()?;
    let (primary, mirror, listen) = (free_addr(), free_addr(), free_addr());
    // Paced so that the agent (a debug build on two shared cores) keeps up with both sides
    // at once; the ring absorbs bursts.
    let rate = big_rate();
    let opts = ServerOpts {
        big_rate: Some(rate),
    };
    rt.block_on(faults::start_pair(primary, mirror, opts))?;
    let limits = MemoryLimits {
        ring_buffer_bytes: 256 << 20,
        ..small_limits()
    };
    let config = pair_config(
        "big",
        primary,
        mirror,
        listen,
        "60s",
        &format!("[limits]\n{}", limits.toml()),
    );
    let mut agent = Agent::start_listening(&config, listen)?;
    let n = big_bytes();
    let ((ps, pn, plast), (ms, mn, mlast)) = rt.block_on(async {
        let (a, b) = tokio::join!(
            faults::fetch_big(primary, n, "m", "giga"),
            faults::fetch_big(mirror, n, "m", "giga")
        );
        anyhow::Ok((a?, b?))
    })?;
    assert_eq!((ps, pn, ms, mn), (200, n, 200, n));
    assert_ne!(plast, mlast, "the mirror's last byte differs");
    let transfer = t0.elapsed();
    wait_until(Duration::from_secs(120), "the pair compared", || {
        let (c, _, u) = pair_totals(&agent.summary()?);
        Ok(c + u.values().sum::<u64>() >= 1)
    })?;
    let summary = agent.summary()?;
    let (compared, diverged, unmatched) = pair_totals(&summary);
    let dropped = capture_dropped(&agent)?;
    let hwm = check_memory(&agent, &limits, "big bodies")?;
    assert_eq!(
        dropped,
        0.0,
        "the ring kept up at {} MB/s per side (PARITY_BIG_RATE lowers it)",
        rate / 1_000_000
    );
    assert_eq!((compared, diverged), (1, 1), "{unmatched:?}\n{summary:#}");
    let diffs = summary["pairs"][0]["endpoints"][0]["differences"].clone();
    assert_eq!(
        diffs,
        serde_json::json!([{"path": "body", "kind": "hash", "count": 1}])
    );
    let status = agent.stop()?;
    assert!(status.success());
    let by_id = records_by_id(&agent.exchanges()?);
    let p = &by_id[&("giga".to_string(), primary.to_string())][0];
    let m = &by_id[&("giga".to_string(), mirror.to_string())][0];
    assert_eq!(p["response"]["body_len"], n);
    assert_eq!(m["response"]["body_len"], n);
    let (want_p, want_m) = big_body_sha256(n)?;
    assert_eq!(
        p["response"]["body_sha256"],
        want_p.as_str(),
        "the primary's whole body hashed"
    );
    assert_eq!(
        m["response"]["body_sha256"],
        want_m.as_str(),
        "the mirror's whole body hashed"
    );
    eprintln!(
        "{} MiB x 2 at {} MB/s per side: transfer {:.1}s, VmHWM {:.1} MiB (bound {:.1} MiB), {:.1}s total",
        n >> 20,
        rate / 1_000_000,
        transfer.as_secs_f64(),
        mib(hwm),
        mib(limits.bound()),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Bytes per second per side for the big-body test (`PARITY_BIG_RATE` overrides).
fn big_rate() -> u64 {
    std::env::var("PARITY_BIG_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) {
            40_000_000
        } else {
            100_000_000
        })
}

/// SHA-256 of the `big/N` body as the primary and the mirror send it, through `sha256sum`
/// (hundreds of MiB through a debug build of SHA-256 would take long).
fn big_body_sha256(n: u64) -> Result<(String, String)> {
    let hash = |flip: bool| -> Result<String> {
        use std::io::Write;
        let mut child = std::process::Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("sha256sum")?;
        let mut stdin = child.stdin.take().context("stdin")?;
        let chunk = faults::big_chunk();
        let mut sent = 0u64;
        while sent < n {
            let len = (n - sent).min(chunk.len() as u64) as usize;
            if sent + len as u64 == n {
                let mut last = chunk[..len].to_vec();
                last[len - 1] = faults::big_last_byte(n, flip);
                stdin.write_all(&last)?;
            } else {
                stdin.write_all(&chunk[..len])?;
            }
            sent += len as u64;
        }
        drop(stdin);
        let out = child.wait_with_output()?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string())
    };
    Ok((hash(false)?, hash(true)?))
}
