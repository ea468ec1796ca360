//! `capture-tc`, `capture-cgroup`: live capture at full loopback load.
//!
//! nginx (`return 200`, keep-alive, one worker) runs in a cgroup the bench creates; wrk loads it
//! from outside that cgroup (`-t1 -c16`). Each round runs, one after the other: wrk alone, wrk
//! with `parity-agent run` on each selected engine, and wrk with tcpdump capturing the same
//! port. The `cgroup` engine attaches at nginx's cgroup (the deployment shape: a pod's cgroup,
//! server side only), not at the root, so another cgroup program on a shared host neither
//! disturbs it nor is disturbed.
//!
//! Per agent run: exchanges the agent parsed complete (`parity_http_exchanges_total`) against
//! the responses wrk counted, drops (kernel loss and gaps, from the report written after the
//! final drain), wrk's throughput against wrk alone in the same round, and the agent's CPU time
//! (`/proc/PID/stat`, from just before the load until its counters settle) per million
//! exchanges. tcpdump's kernel drops, throughput effect and CPU are measured the same way.

use std::time::Duration;

use anyhow::{bail, Result};

use super::procs::{self, BenchCgroup, WorkDir};
use super::report::{Row, Target};
use super::tools::{self, Agent, Nginx, NginxConf, Tcpdump, WrkRun};
use super::Ctx;

/// A capture engine of the agent.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Engine {
    /// TC classifier on `lo` egress.
    Tc,
    /// cgroup_skb on the server's cgroup.
    Cgroup,
}

impl Engine {
    /// The benchmark's name.
    pub fn bench(self) -> &'static str {
        match self {
            Engine::Tc => "capture-tc",
            Engine::Cgroup => "capture-cgroup",
        }
    }
}

#[derive(Default)]
struct EngineSeries {
    captured_pct: Vec<f64>,
    drops: Vec<f64>,
    rps: Vec<f64>,
    base_rps: Vec<f64>,
    cpu_per_m: Vec<f64>,
    tcpdump_cpu_per_m: Vec<f64>,
}

struct AgentRun {
    wrk: WrkRun,
    complete: f64,
    drops: f64,
    cpu: f64,
}

fn agent_run(ctx: &Ctx, work: &WorkDir, config: &str, url: &str, secs: u64) -> Result<AgentRun> {
    let agent = Agent::start(&ctx.agent, &work.path, "capture", config, secs + 120)?;
    std::thread::sleep(Duration::from_millis(300));
    let cpu0 = procs::cpu_seconds(agent.pid()).unwrap_or(f64::NAN);
    let run = tools::wrk(url, 1, 16, secs, None)?;
    let total = |m: &str| procs::metric_sum(m, "parity_http_exchanges_total", &[]);
    let metrics = agent.settle(Duration::from_secs(20), total)?;
    let cpu1 = procs::cpu_seconds(agent.pid()).unwrap_or(f64::NAN);
    let complete = procs::metric_sum(
        &metrics,
        "parity_http_exchanges_total",
        &["complete=\"true\""],
    );
    let report_path = agent.report.clone();
    let (status, log) = agent.stop()?;
    if !status.success() {
        bail!("parity-agent exited with {status}:\n{log}");
    }
    let report = Agent::read_report(&report_path)?;
    let dropped: f64 = report["capture"]["dropped"]
        .as_object()
        .map(|o| o.values().filter_map(serde_json::Value::as_f64).sum())
        .unwrap_or(0.0);
    let gaps = report["capture"]["gaps"].as_f64().unwrap_or(0.0);
    if run.errors > 0.0 {
        bail!("wrk saw {} errors with the agent attached", run.errors);
    }
    Ok(AgentRun {
        wrk: run,
        complete,
        drops: dropped + gaps,
        cpu: cpu1 - cpu0,
    })
}

/// Run the benchmark for `engines`.
pub fn run(ctx: &Ctx, engines: &[Engine]) -> Result<Vec<Row>> {
    procs::need(&["nginx", "wrk", "tcpdump"])?;
    let secs = if ctx.quick { 3 } else { 8 };
    let work = WorkDir::new("capture")?;
    let cgroup = BenchCgroup::new("capture")?;
    let port = procs::free_port()?;
    let nginx = Nginx::start(
        &NginxConf {
            dir: &work.path,
            workers: 1,
            connections: 1024,
            servers: tools::return_server(port, "ok", "text/plain"),
            ports: vec![port],
        },
        Some(&cgroup),
    )?;
    let url = format!("http://127.0.0.1:{port}/");
    let target = format!("targets = [\"127.0.0.1:{port}\"]\n");
    // Warm-up: the first run after nginx starts is the cold one.
    tools::wrk(&url, 1, 16, 1, None)?;

    let mut series: Vec<(Engine, EngineSeries)> = engines
        .iter()
        .map(|e| (*e, EngineSeries::default()))
        .collect();
    let mut base = Vec::new();
    let mut dump_rps = Vec::new();
    let mut dump_drops = Vec::new();
    let mut dump_cpu = Vec::new();
    for round in 0..ctx.rounds {
        let b = tools::wrk(&url, 1, 16, secs, None)?;
        base.push(b.rps);
        for (engine, s) in series.iter_mut() {
            let config = match engine {
                Engine::Tc => {
                    format!("[capture]\nengine = \"tc\"\ninterfaces = [\"lo\"]\n{target}")
                }
                Engine::Cgroup => format!(
                    "[capture]\nengine = \"cgroup\"\ncgroup = \"{}\"\n{target}",
                    cgroup.path.display()
                ),
            };
            let r = agent_run(ctx, &work, &config, &url, secs)?;
            ctx.log(&format!(
                "{}: round {round}: wrk alone {:.0} req/s; with agent {:.0} req/s, {} sent, {} complete, {} drops, {:.2} CPU s",
                engine.bench(),
                b.rps,
                r.wrk.rps,
                r.wrk.requests,
                r.complete,
                r.drops,
                r.cpu
            ));
            s.captured_pct.push(r.complete / r.wrk.requests * 100.0);
            s.drops.push(r.drops);
            s.rps.push(r.wrk.rps);
            s.base_rps.push(b.rps);
            s.cpu_per_m.push(r.cpu / r.complete.max(1.0) * 1e6);
        }
        let file = work.join("tcpdump.pcap");
        let dump = Tcpdump::start(&file, &format!("tcp port {port}"), 256 * 1024)?;
        std::thread::sleep(Duration::from_millis(300));
        let cpu0 = procs::cpu_seconds(dump.pid()).unwrap_or(f64::NAN);
        let t = tools::wrk(&url, 1, 16, secs, None)?;
        std::thread::sleep(Duration::from_millis(300));
        let stats = dump.stop()?;
        let _ = std::fs::remove_file(&file);
        ctx.log(&format!(
            "capture: round {round}: tcpdump {:.0} req/s, {} packets captured of {} received, {} dropped by the kernel, {:.2} CPU s",
            t.rps,
            stats.captured,
            stats.received,
            stats.dropped,
            stats.cpu - cpu0
        ));
        dump_rps.push(t.rps);
        dump_drops.push(stats.dropped);
        let per_m = (stats.cpu - cpu0) / t.requests.max(1.0) * 1e6;
        dump_cpu.push(per_m);
        for (_, s) in series.iter_mut() {
            s.tcpdump_cpu_per_m.push(per_m);
        }
    }
    nginx.stop()?;
    drop(cgroup);

    let mut rows = Vec::new();
    for (engine, s) in series {
        let b = engine.bench();
        rows.push(
            Row::new(b, "exchanges captured / sent (%)", s.captured_pct)
                .target(Target::at_least(100.0)),
        );
        rows.push(
            Row::new(b, "drops (kernel records + gaps)", s.drops).target(Target::at_most(0.0)),
        );
        rows.push(
            Row::new(b, "server throughput (req/s)", s.rps)
                .peer(
                    "wrk alone (req/s)",
                    s.base_rps,
                    "with ÷ without",
                    |a, b| a / b,
                )
                .target(Target::ratio_at_least(0.97)),
        );
        rows.push(
            Row::new(b, "agent CPU (s per million exchanges)", s.cpu_per_m).peer(
                "tcpdump (s per million)",
                s.tcpdump_cpu_per_m,
                "parity ÷ tcpdump",
                |a, b| a / b,
            ),
        );
    }
    rows.push(Row::new(
        "capture (tcpdump)",
        "kernel drops (packets)",
        dump_drops,
    ));
    rows.push(
        Row::new("capture (tcpdump)", "server throughput (req/s)", dump_rps).peer(
            "wrk alone (req/s)",
            base.clone(),
            "with ÷ without",
            |a, b| a / b,
        ),
    );
    rows.push(Row::new(
        "capture (tcpdump)",
        "tcpdump CPU (s per million exchanges)",
        dump_cpu,
    ));
    Ok(rows)
}
