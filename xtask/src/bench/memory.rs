//! `memory`: the agent's memory with 100k concurrent keep-alive connections (10k with
//! `--quick`) to one server, plus a steady trickle of requests on them.
//!
//! `parity-load` (in the `tests` crate) opens the connections from sources spread over
//! 127.0.0.0/8 to nginx (`worker_connections` and `worker_rlimit_nofile` raised), sends one
//! request on each, then one per connection every few seconds while it holds them. Where the
//! open-file hard limit cannot be raised (a container without `CAP_SYS_RESOURCE`), the
//! connections are split over several load processes and nginx workers (`reuseport`).
//! The agent captures the server's port with the tc engine, `flow_memory` raised so nothing is
//! evicted, `idle_timeout` longer than the run. Its RSS before the load is the baseline; while
//! every connection is held the bench reads, several times, `parity_flows_active`, `VmRSS` and
//! `RssAnon` (anonymous memory only: the ring buffer is a shared mapping of a kernel map, so
//! it does not blur the per-flow figure), and `parity_memory_bytes{area="flows"}` (the agent's
//! own accounting). The samples of this benchmark are those readings, not rounds.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::procs::{self, Proc, WorkDir};
use super::report::{Row, Target};
use super::tools::{Agent, Nginx, NginxConf};
use super::Ctx;

const BENCH: &str = "memory";
const MIB: f64 = (1 << 20) as f64;

/// Run the benchmark.
pub fn run(ctx: &Ctx) -> Result<Vec<Row>> {
    procs::need(&["nginx"])?;
    let (connections, interval, readings) = if ctx.quick {
        (10_000u64, 4.0, 3)
    } else {
        (100_000u64, 10.0, 4)
    };
    // One process holds at most its open-file limit; without CAP_SYS_RESOURCE (containers) that
    // limit cannot be raised, so the load and nginx's workers are split to fit under it.
    let per_process = procs::hard_nofile()
        .saturating_sub(1024)
        .clamp(1000, 200_000);
    let loaders = connections.div_ceil(per_process);
    // reuseport spreads connections over the workers by hash: leave a quarter of headroom.
    let workers = (connections * 5 / 4).div_ceil(per_process).max(1);
    let work = WorkDir::new("memory")?;
    let port = procs::free_port()?;
    let reuseport = if workers > 1 { " reuseport" } else { "" };
    let nginx = Nginx::start(
        &NginxConf {
            dir: &work.path,
            workers: workers as u32,
            connections: per_process.min(connections + 1024) as u32,
            servers: format!(
                "server {{\n listen 127.0.0.1:{port}{reuseport} backlog=4096;\n \
                 location / {{ return 200 'ok'; }}\n}}\n"
            ),
            ports: vec![port],
        },
        None,
    )?;
    let config = format!(
        "[capture]\nengine = \"tc\"\ninterfaces = [\"lo\"]\ntargets = [\"127.0.0.1:{port}\"]\n\n\
         [limits]\nflow_memory = \"8GiB\"\nidle_timeout = \"600s\"\n"
    );
    let agent = Agent::start(&ctx.agent, &work.path, "memory", &config, 900)?;
    std::thread::sleep(Duration::from_secs(1));
    let pid = agent.pid();
    let base_anon = procs::status_bytes(pid, "RssAnon").context("no RssAnon")?;
    let base_rss = procs::status_bytes(pid, "VmRSS").context("no VmRSS")?;

    let (tx, rx) = mpsc::channel::<Value>();
    let mut loads = Vec::new();
    let share = connections.div_ceil(loaders);
    for i in 0..loaders {
        let n = share.min(connections - i * share);
        let mut cmd = Command::new(&ctx.load);
        cmd.arg("--target")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--connections")
            .arg(n.to_string())
            .arg("--source-offset")
            .arg((i * share).to_string())
            .arg("--connect-timeout")
            .arg("180")
            .arg("--hold")
            .arg("300")
            .arg("--until-stdin-closes")
            .arg("--interval")
            .arg(interval.to_string())
            .stdout(Stdio::piped());
        let mut load =
            Proc::spawn_with_stdin("parity-load", &mut cmd, libc::SIGTERM, Stdio::piped())?;
        let stdout = load.take_stdout().context("no stdout of parity-load")?;
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        loads.push(load);
    }
    drop(tx);
    let (open, failed) = events(&rx, "connected", loaders, Duration::from_secs(240))
        .with_context(|| {
            format!(
                "parity-load did not open its connections: {}",
                stderr_of(&loads)
            )
        })?
        .iter()
        .fold((0.0, 0.0), |(o, f), v| {
            (
                o + v["connected"].as_f64().unwrap_or(0.0),
                f + v["failed"].as_f64().unwrap_or(0.0),
            )
        });
    ctx.log(&format!(
        "memory: {open} connections open ({loaders} load processes, {workers} nginx workers), {failed} failed"
    ));
    if failed > connections as f64 * 0.01 {
        bail!(
            "parity-load could not open {failed} of {connections} connections: {}",
            stderr_of(&loads)
        );
    }

    let mut flows = Vec::new();
    let mut rss = Vec::new();
    let mut per_flow = Vec::new();
    let mut accounted = Vec::new();
    for i in 0..readings {
        // Let a full request interval pass first, so every connection has been loaded again.
        std::thread::sleep(Duration::from_secs_f64(if i == 0 { interval } else { 2.0 }));
        let m = agent.metrics()?;
        let f = procs::metric_sum(&m, "parity_flows_active", &[]);
        let mem = procs::metric_sum(&m, "parity_memory_bytes", &["area=\"flows\""]);
        let anon = procs::status_bytes(pid, "RssAnon").unwrap_or(f64::NAN);
        let vm = procs::status_bytes(pid, "VmRSS").unwrap_or(f64::NAN);
        ctx.log(&format!(
            "memory: reading {i}: {f} flows, RSS {:.1} MiB (anon {:.1} MiB, base {:.1}), flows area {:.1} MiB",
            vm / MIB,
            anon / MIB,
            base_anon / MIB,
            mem / MIB
        ));
        flows.push(f);
        rss.push(vm / MIB);
        per_flow.push((anon - base_anon) / f.max(1.0));
        accounted.push(mem / f.max(1.0));
    }
    // Closing their stdin ends the hold.
    for l in &mut loads {
        drop(l.take_stdin());
    }
    let done = events(&rx, "done", loaders, Duration::from_secs(60))
        .with_context(|| format!("parity-load did not finish: {}", stderr_of(&loads)))?;
    for l in &mut loads {
        let status = l.wait(Duration::from_secs(60))?;
        if !status.success() {
            bail!("parity-load exited with {status}: {}", l.stderr());
        }
    }
    let hold_rps: f64 = done
        .iter()
        .map(|d| {
            d["hold_requests"].as_f64().unwrap_or(f64::NAN)
                / d["hold_secs"].as_f64().unwrap_or(f64::NAN)
        })
        .sum();
    let errors: f64 = done.iter().filter_map(|d| d["errors"].as_f64()).sum();
    let hwm = procs::status_bytes(pid, "VmHWM").unwrap_or(f64::NAN);
    let m = agent.metrics()?;
    let dropped = procs::metric_sum(&m, "parity_capture_dropped_total", &[])
        + procs::metric_sum(&m, "parity_gaps_total", &[]);
    let evicted = procs::metric_sum(
        &m,
        "parity_dropped_total",
        &["stage=\"reassembly\"", "reason=\"evicted\""],
    );
    let (status, log) = agent.stop()?;
    if !status.success() {
        bail!("parity-agent exited with {status}:\n{log}");
    }
    nginx.stop()?;
    ctx.log(&format!(
        "memory: steady load {hold_rps:.0} req/s, {errors} errors; capture drops and gaps {dropped}, flows evicted {evicted}"
    ));
    Ok(vec![
        Row::new(BENCH, "connections held", vec![open]),
        Row::new(BENCH, "steady load while held (req/s)", vec![hold_rps]),
        Row::new(BENCH, "flows tracked (parity_flows_active)", flows),
        Row::new(
            BENCH,
            "agent RSS before the load (MiB)",
            vec![base_rss / MIB],
        ),
        Row::new(BENCH, "agent RSS while held (MiB)", rss),
        Row::new(BENCH, "agent peak RSS, VmHWM (MiB)", vec![hwm / MIB]),
        Row::new(BENCH, "anonymous RSS growth per flow (bytes)", per_flow),
        Row::new(
            BENCH,
            "agent's own flow accounting per flow (bytes)",
            accounted,
        ),
        Row::new(BENCH, "capture drops + gaps", vec![dropped]).target(Target::at_most(0.0)),
        Row::new(BENCH, "flows evicted", vec![evicted]).target(Target::at_most(0.0)),
    ])
}

/// Wait for `count` JSON events named `event` from the load processes.
fn events(
    rx: &mpsc::Receiver<Value>,
    event: &str,
    count: u64,
    timeout: Duration,
) -> Result<Vec<Value>> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    while (got.len() as u64) < count {
        let left = deadline.saturating_duration_since(Instant::now());
        let v = rx
            .recv_timeout(left)
            .with_context(|| format!("{} of {count} `{event}` events", got.len()))?;
        if v["event"] == event {
            got.push(v);
        }
    }
    Ok(got)
}

fn stderr_of(loads: &[Proc]) -> String {
    loads
        .iter()
        .map(Proc::stderr)
        .collect::<Vec<_>>()
        .join("\n")
}
