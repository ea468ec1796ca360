//! Faults end to end: servers and clients that misbehave, a mirror that is down or slow, and an
//! agent killed under load. parity must end each broken exchange with the right incomplete
//! reason, count its correlation id unmatched once with the right reason and side, never report
//! it as a divergence, keep its pending table bounded, and resume cleanly after a SIGKILL.
//!
//! Each test starts its own upstreams on loopback ports and its own agent (live eBPF capture on
//! `lo`), and asserts on the agent's `/metrics`, `/api/summary` and exchange records.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use parity_tests::agent::{metric_sum, Agent};
use parity_tests::demo;
use parity_tests::env;
use parity_tests::faults::{self, Seen, ServerOpts, Side};
use parity_tests::harness::{
    capture_dropped, free_addr, outcome, pair_config, pair_totals, records_by_id, runtime,
    wait_until,
};
use parity_tests::http1::Client;
use parity_tests::netns;
use serde_json::Value;

/// What one correlation id must end as: each side's record outcome, and either a comparison
/// (`None`) or an unmatched count `(role, reason)`.
#[derive(Clone, Debug)]
struct Expect {
    primary: &'static str,
    mirror: &'static str,
    unmatched: Option<(&'static str, &'static str)>,
}

const COMPARED: Option<(&str, &str)> = None;

#[test]
fn broken_exchanges_end_unmatched_with_their_reason_and_never_diverge() -> Result<()> {
    if !env::require_root() {
        return Ok(());
    }
    let t0 = Instant::now();
    let rt = runtime()?;
    let (primary, mirror, listen) = (free_addr(), free_addr(), free_addr());
    rt.block_on(faults::start_pair(primary, mirror, ServerOpts::default()))?;
    let config = pair_config(
        "faults",
        primary,
        mirror,
        listen,
        "3s",
        "[limits]\nidle_timeout = \"30s\"\n",
    );
    let mut agent = Agent::start_listening(&config, listen)?;

    // Every scenario several times, each on fresh connections.
    let rounds = 4;
    let mut expect: BTreeMap<String, Expect> = BTreeMap::new();
    rt.block_on(async {
        for round in 0..rounds {
            let mut tasks = Vec::new();
            let mut both = |id: String, target: String, e: Expect| {
                expect.insert(id.clone(), e);
                tasks.push(tokio::spawn(async move {
                    let (a, b) = tokio::join!(
                        faults::request_once(primary, &target, &id),
                        faults::request_once(mirror, &target, &id)
                    );
                    (id, a, b)
                }));
            };
            for i in 0..5 {
                both(
                    format!("ok-{round}-{i}"),
                    format!("/n/ok/{i}"),
                    Expect {
                        primary: "complete",
                        mirror: "complete",
                        unmatched: COMPARED,
                    },
                );
            }
            both(
                format!("m-reset-{round}"),
                "/m/reset".into(),
                Expect {
                    primary: "complete",
                    mirror: "reset",
                    unmatched: Some(("mirror", "no_response")),
                },
            );
            both(
                format!("p-reset-{round}"),
                "/p/reset".into(),
                Expect {
                    primary: "reset",
                    mirror: "complete",
                    unmatched: Some(("primary", "no_response")),
                },
            );
            both(
                format!("m-cut-{round}"),
                "/m/cut".into(),
                Expect {
                    primary: "complete",
                    mirror: "truncated",
                    unmatched: Some(("mirror", "no_response")),
                },
            );
            both(
                format!("m-half-{round}"),
                "/m/half".into(),
                Expect {
                    primary: "complete",
                    mirror: "truncated",
                    unmatched: Some(("mirror", "no_response")),
                },
            );
            both(
                format!("m-close-{round}"),
                "/m/close".into(),
                Expect {
                    primary: "complete",
                    mirror: "no_response",
                    unmatched: Some(("mirror", "no_response")),
                },
            );
            both(
                format!("b-close-{round}"),
                "/b/close".into(),
                Expect {
                    primary: "no_response",
                    mirror: "no_response",
                    unmatched: Some(("both", "no_response")),
                },
            );
            both(
                format!("m-slow-{round}"),
                "/m/slow/300".into(),
                Expect {
                    primary: "complete",
                    mirror: "complete",
                    unmatched: COMPARED,
                },
            );
            let mut results = Vec::new();
            for t in tasks {
                results.push(t.await?);
            }
            // The clients saw what the servers did.
            for (id, a, b) in &results {
                let e = &expect[id];
                for (seen, want) in [(a, e.primary), (b, e.mirror)] {
                    let ok = matches!(seen, Seen::Status(200)) == (want == "complete");
                    anyhow::ensure!(
                        ok,
                        "{id}: the client saw {seen:?} where the side should be {want}"
                    );
                }
            }

            // The client gives up on the mirror: the mirror answers after a second, the client
            // resets the connection after 200 ms. The primary answers at once.
            let id = format!("client-abort-{round}");
            expect.insert(
                id.clone(),
                Expect {
                    primary: "complete",
                    mirror: "reset",
                    unmatched: Some(("mirror", "no_response")),
                },
            );
            let (a, b) = tokio::join!(
                faults::request_once(primary, "/m/slow/1000", &id),
                faults::abort(mirror, "/m/slow/1000", &id, Duration::from_millis(200))
            );
            anyhow::ensure!(a == Seen::Status(200), "{id}: primary {a:?}");
            b?;

            // Clients that half-close after their request: legitimate, compared.
            let id = format!("client-half-close-{round}");
            expect.insert(
                id.clone(),
                Expect {
                    primary: "complete",
                    mirror: "complete",
                    unmatched: COMPARED,
                },
            );
            let (a, b) = tokio::join!(
                faults::half_close_request(primary, "/n/ok/half-close", &id),
                faults::half_close_request(mirror, "/n/ok/half-close", &id)
            );
            anyhow::ensure!(
                a? == 200 && b? == 200,
                "{id}: half-closed requests answered"
            );
        }
        anyhow::Ok(())
    })?;

    let want_compared = expect.values().filter(|e| e.unmatched.is_none()).count() as u64;
    let mut want_unmatched: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for e in expect.values() {
        if let Some(u) = e.unmatched {
            *want_unmatched.entry(u).or_insert(0) += 1;
        }
    }
    let want_total = want_compared + want_unmatched.values().sum::<u64>();
    wait_until(
        Duration::from_secs(30),
        "every id compared or counted",
        || {
            let (c, _, u) = pair_totals(&agent.summary()?);
            Ok(c + u.values().sum::<u64>() >= want_total)
        },
    )?;
    // Nothing more arrives later (a late count would be a double count).
    std::thread::sleep(Duration::from_millis(500));

    let summary = agent.summary()?;
    let metrics = agent.metrics()?;
    let (compared, diverged, unmatched) = pair_totals(&summary);
    assert_eq!(capture_dropped(&agent)?, 0.0, "no capture loss:\n{metrics}");
    assert_eq!(
        diverged, 0,
        "a broken exchange is never a divergence: {summary:#}"
    );
    assert_eq!(compared, want_compared, "compared: {summary:#}");
    for (reason, n) in &unmatched {
        let want: u64 = want_unmatched
            .iter()
            .filter(|((_, r), _)| r == reason)
            .map(|(_, n)| n)
            .sum();
        assert_eq!(*n, want, "unmatched {reason}: {summary:#}");
    }
    for ((role, reason), n) in &want_unmatched {
        let got = metric_sum(
            &metrics,
            "parity_unmatched_total",
            &[("pair", "faults"), ("role", role), ("reason", reason)],
        );
        assert_eq!(
            got, *n as f64,
            "parity_unmatched_total role={role} reason={reason}"
        );
    }
    assert_eq!(
        metric_sum(&metrics, "parity_unmatched_total", &[]),
        want_unmatched.values().sum::<u64>() as f64,
        "no other unmatched count"
    );
    assert_eq!(
        metric_sum(
            &metrics,
            "parity_comparisons_total",
            &[("outcome", "diverged")]
        ),
        0.0
    );
    assert_eq!(
        metric_sum(
            &metrics,
            "parity_comparisons_total",
            &[("outcome", "match")]
        ),
        want_compared as f64
    );

    let status = agent.stop()?;
    assert!(status.success(), "agent exit: {status}");
    // Every id's records on each side: exactly one, ending as expected.
    let by_id = records_by_id(&agent.exchanges()?);
    let mut problems = Vec::new();
    for (id, e) in &expect {
        for (server, want) in [(primary, e.primary), (mirror, e.mirror)] {
            match by_id
                .get(&(id.clone(), server.to_string()))
                .map(Vec::as_slice)
            {
                Some([r]) if outcome(r) == want => {}
                Some(rs) => problems.push(format!(
                    "{id} on {server}: want one record {want}, got {:?}",
                    rs.iter().map(outcome).collect::<Vec<_>>()
                )),
                None => problems.push(format!("{id} on {server}: no record")),
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    eprintln!(
        "faults: {} ids, {compared} compared, unmatched {unmatched:?}, {:.1}s",
        expect.len(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

#[test]
fn mirror_down_then_slow_counts_timeouts_with_a_bounded_pending_table() -> Result<()> {
    if !env::require_root() {
        return Ok(());
    }
    let t0 = Instant::now();
    let rt = runtime()?;
    let (primary, mirror, listen) = (free_addr(), free_addr(), free_addr());
    rt.block_on(faults::start(Side::Primary, primary, ServerOpts::default()))?;
    let pending_cap = 50u64;
    let config = pair_config(
        "down",
        primary,
        mirror,
        listen,
        "1s",
        &format!("[limits]\npending_pairs = {pending_cap}\n"),
    );
    let mut agent = Agent::start_listening(&config, listen)?;

    // Sample the pending table while traffic runs.
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = {
        let (sampling, peak) = (sampling.clone(), peak.clone());
        std::thread::spawn(move || {
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok((_, body)) = parity_tests::agent::http_get(listen, "/metrics") {
                    let v = metric_sum(&body, "parity_pending_pairs", &[]) as u64;
                    peak.fetch_max(v, std::sync::atomic::Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    // Phase 1, mirror down: nothing listens on its port; the splitter's connection attempts
    // are refused. 400 ids within well under the 1 s window overflow the 50-entry table.
    let down: u64 = 400;
    rt.block_on(async {
        let mut tasks = Vec::new();
        for w in 0..8u64 {
            tasks.push(tokio::spawn(async move {
                let mut c = Client::connect(primary).await?;
                for n in (w..down).step_by(8) {
                    let id = format!("down-{n}");
                    let got = c
                        .request("GET", &format!("/n/ok/{n}"), &[("x-request-id", &id)], b"")
                        .await?;
                    anyhow::ensure!(got.status == 200);
                    anyhow::ensure!(
                        tokio::net::TcpStream::connect(mirror).await.is_err(),
                        "the mirror is down"
                    );
                }
                anyhow::Ok(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        anyhow::Ok(())
    })?;
    let unmatched_mirror = |agent: &Agent, reason: &str| -> Result<f64> {
        Ok(metric_sum(
            &agent.metrics()?,
            "parity_unmatched_total",
            &[("pair", "down"), ("role", "mirror"), ("reason", reason)],
        ))
    };
    wait_until(
        Duration::from_secs(20),
        "every primary id timed out or evicted",
        || {
            Ok(
                unmatched_mirror(&agent, "timeout")? + unmatched_mirror(&agent, "evicted")?
                    >= down as f64,
            )
        },
    )?;
    let (timeout1, evicted1) = (
        unmatched_mirror(&agent, "timeout")?,
        unmatched_mirror(&agent, "evicted")?,
    );
    assert_eq!(timeout1 + evicted1, down as f64, "each id counted once");
    assert!(
        evicted1 > 0.0,
        "400 ids in under a second overflow a 50-entry table: evicted {evicted1}"
    );
    assert!(
        timeout1 > 0.0,
        "the last 50 waited their window: timeout {timeout1}"
    );

    // Phase 2, mirror up but slower than the window (2.5 s > 1 s): each id times out once,
    // and the mirror's late exchange is absorbed, not counted again.
    rt.block_on(faults::start(Side::Mirror, mirror, ServerOpts::default()))?;
    let slow: u64 = 30;
    rt.block_on(async {
        let mut tasks = Vec::new();
        for n in 0..slow {
            tasks.push(tokio::spawn(async move {
                let id = format!("slow-{n}");
                let (a, b) = tokio::join!(
                    faults::request_once(primary, "/m/slow/2500", &id),
                    faults::request_once(mirror, "/m/slow/2500", &id)
                );
                anyhow::ensure!(
                    a == Seen::Status(200) && b == Seen::Status(200),
                    "{id}: {a:?} {b:?}"
                );
                anyhow::Ok(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        anyhow::Ok(())
    })?;
    // Phase 3, the mirror recovers: pairs compare again.
    let healthy: u64 = 20;
    rt.block_on(async {
        for n in 0..healthy {
            let id = format!("healthy-{n}");
            let target = format!("/n/ok/{n}");
            let (a, b) = tokio::join!(
                faults::request_once(primary, &target, &id),
                faults::request_once(mirror, &target, &id)
            );
            anyhow::ensure!(a == Seen::Status(200) && b == Seen::Status(200));
        }
        anyhow::Ok(())
    })?;
    wait_until(
        Duration::from_secs(20),
        "slow ids timed out and healthy ones compared",
        || {
            let (c, _, _) = pair_totals(&agent.summary()?);
            Ok(c >= healthy && unmatched_mirror(&agent, "timeout")? >= timeout1 + slow as f64)
        },
    )?;
    std::thread::sleep(Duration::from_millis(1500));
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let _ = sampler.join();

    let metrics = agent.metrics()?;
    let summary = agent.summary()?;
    let (compared, diverged, unmatched) = pair_totals(&summary);
    assert_eq!(capture_dropped(&agent)?, 0.0);
    assert_eq!(compared, healthy, "{summary:#}");
    assert_eq!(diverged, 0);
    assert_eq!(
        unmatched_mirror(&agent, "timeout")?,
        timeout1 + slow as f64,
        "late mirror exchanges are absorbed"
    );
    let others: u64 = unmatched
        .iter()
        .filter(|(k, _)| *k != "timeout" && *k != "evicted")
        .map(|(_, v)| v)
        .sum();
    assert_eq!(others, 0, "{summary:#}");
    assert_eq!(
        metric_sum(&metrics, "parity_unmatched_total", &[("role", "primary")]),
        0.0,
        "never the primary's fault"
    );
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        peak <= pending_cap,
        "pending pairs peaked at {peak} > {pending_cap}"
    );
    assert!(
        peak >= pending_cap / 2,
        "the sampler saw the table fill (peak {peak})"
    );
    // The primary's capture is unaffected: every primary exchange recorded, complete.
    let primary_exchanges = metric_sum(
        &metrics,
        "parity_exchanges_total",
        &[("pair", "down"), ("role", "primary")],
    );
    assert_eq!(primary_exchanges, (down + slow + healthy) as f64);
    let status = agent.stop()?;
    assert!(status.success());
    let records = agent.exchanges()?;
    let primary_records: Vec<&Value> = records
        .iter()
        .filter(|r| r["flow"]["server"] == primary.to_string())
        .collect();
    assert_eq!(primary_records.len() as u64, down + slow + healthy);
    assert!(primary_records.iter().all(|r| r["complete"] == true));
    eprintln!(
        "mirror down/slow: timeout {} evicted {evicted1} peak pending {peak}/{pending_cap}, {:.1}s",
        timeout1 + slow as f64,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

#[test]
fn sigkilled_under_load_then_restarted_compares_correctly_and_captures_once() -> Result<()> {
    if !env::require_root() || !env::require_tools(&["bpftool"]) {
        return Ok(());
    }
    let t0 = Instant::now();
    let rt = runtime()?;
    let (primary, mirror) = (free_addr(), free_addr());
    rt.block_on(async {
        demo::start_upstream(Side::Primary, primary).await?;
        demo::start_upstream(Side::Mirror, mirror).await
    })?;
    let config = |listen: SocketAddr| {
        format!(
            "{}\n[limits]\nidle_timeout = \"30s\"\n",
            demo::config(primary, mirror, listen)
        )
    };
    // Load for the whole test: the demo mix, 4 keep-alive connections per side, 150 pairs/s.
    let load_for = Duration::from_secs(18);
    let load = std::thread::spawn(move || -> Result<demo::ClientStats> {
        runtime()?.block_on(demo::run_client(primary, mirror, 4, 150, load_for, None))
    });
    let listen_a = free_addr();
    let mut a = Agent::start_listening(&config(listen_a), listen_a)?;
    wait_until(Duration::from_secs(20), "the first agent compares", || {
        Ok(pair_totals(&a.summary()?).0 >= 100)
    })?;
    let held = netns::bpf_ids_of(a.pid().context("pid")?)?;
    assert!(
        !held.programs.is_empty() && !held.links.is_empty(),
        "{held:?}"
    );
    a.kill()?;
    wait_until(
        Duration::from_secs(10),
        "the killed agent's programs and links are gone",
        || Ok(netns::bpf_ids_alive(&held)?.is_empty()),
    )
    .with_context(|| {
        format!(
            "still in the kernel: {}",
            netns::bpf_ids_alive(&held).unwrap_or_default()
        )
    })?;

    // Restart while the load goes on: the new agent joins the keep-alive connections mid-stream.
    let listen_b = free_addr();
    let mut b = Agent::start_listening(&config(listen_b), listen_b)?;
    let stats = load
        .join()
        .map_err(|_| anyhow::anyhow!("load panicked"))??;
    assert_eq!(stats.errors, 0, "the load ran clean: {stats:?}");
    let mut last = 0;
    wait_until(
        Duration::from_secs(20),
        "the restarted agent settles",
        || {
            let (c, _, u) = pair_totals(&b.summary()?);
            let n = c + u.values().sum::<u64>();
            let settled = n > 0 && n == last;
            last = n;
            std::thread::sleep(Duration::from_millis(400));
            Ok(settled)
        },
    )?;
    let summary = b.summary()?;
    let metrics = b.metrics()?;
    let (compared, _, unmatched) = pair_totals(&summary);
    assert_eq!(capture_dropped(&b)?, 0.0);
    assert_eq!(
        metric_sum(
            &metrics,
            "parity_dropped_total",
            &[("stage", "reassembly"), ("reason", "duplicate_segment")]
        ),
        0.0,
        "a segment seen twice would mean the old programs still capture"
    );
    assert!(
        compared >= 500,
        "the restarted agent compared {compared} pairs: {summary:#}"
    );
    let problems = demo::check_report(&summary);
    assert!(
        problems.is_empty(),
        "the restarted agent's findings: {problems:?}\n{summary:#}"
    );
    // Joining mid-stream costs at most the first exchange of each of the 8 connections.
    let lost: u64 = unmatched.values().sum();
    assert!(lost <= 8, "unmatched after the restart: {unmatched:?}");
    let status = b.stop()?;
    assert!(status.success());
    // Nothing captured twice: one record per id and side.
    let by_id = records_by_id(&b.exchanges()?);
    let twice: Vec<_> = by_id
        .iter()
        .filter(|(_, rs)| rs.len() > 1)
        .map(|(k, _)| k)
        .collect();
    assert!(twice.is_empty(), "captured twice: {twice:?}");
    let complete_pairs = {
        let mut ids: BTreeMap<&str, u32> = BTreeMap::new();
        for ((id, _), rs) in &by_id {
            if rs[0]["complete"] == true {
                *ids.entry(id.as_str()).or_insert(0) += 1;
            }
        }
        ids.values().filter(|n| **n == 2).count() as u64
    };
    assert_eq!(
        compared, complete_pairs,
        "every id complete on both sides was compared"
    );
    eprintln!(
        "sigkill/restart: {} pairs sent, restarted agent compared {compared}, unmatched {lost}, {:.1}s",
        stats.sent,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
