//! `end-to-end`: wrk → nginx `mirror` → two identical backends, the agent comparing live.
//!
//! One nginx serves the splitter and both backends (`return 200` with the same JSON body); the
//! splitter sets `X-Request-ID $request_id` on the primary's and the mirror's request. Each
//! round runs wrk through the splitter without the agent, then with `parity-agent run` (tc on
//! `lo`, one `[[pair]]`). Figures: pairs compared per second, compared ÷ requests, drops,
//! unmatched ids, the client's throughput against the splitter alone, and false differences:
//! the backends are identical, so any diverged pair is a bug and fails the benchmark.

use std::time::Duration;

use anyhow::{bail, Result};
use serde_json::Value;

use super::procs::{self, WorkDir};
use super::report::{Row, Target};
use super::tools::{self, Agent, Nginx, NginxConf};
use super::Ctx;

const BENCH: &str = "end-to-end";

/// The non-zero members of a JSON object of counts, for the log.
fn nonzero(v: &Value) -> String {
    v.as_object()
        .map(|o| {
            o.iter()
                .filter(|(_, n)| n.as_f64().is_some_and(|n| n > 0.0))
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// Run the benchmark.
pub fn run(ctx: &Ctx) -> Result<Vec<Row>> {
    procs::need(&["nginx", "wrk"])?;
    let secs = if ctx.quick { 3 } else { 8 };
    let work = WorkDir::new("e2e")?;
    let [front, primary, mirror] = procs::free_ports::<3>()?;
    let body = r#"{"id":42,"status":"ok","items":[{"sku":"A-1","qty":1,"price":9.99},{"sku":"B-2","qty":2,"price":4.5}],"total":18.99}"#;
    let nginx = Nginx::start(
        &NginxConf {
            dir: &work.path,
            workers: 1,
            connections: 4096,
            servers: tools::return_server(primary, body, "application/json")
                + &tools::return_server(mirror, body, "application/json")
                + &tools::mirror_server(front, primary, mirror),
            ports: vec![front, primary, mirror],
        },
        None,
    )?;
    let url = format!("http://127.0.0.1:{front}/api/orders/42");
    let config = format!(
        "[capture]\nengine = \"tc\"\ninterfaces = [\"lo\"]\n\n[[pair]]\nname = \"bench\"\n\
         primary = \"127.0.0.1:{primary}\"\nmirror = \"127.0.0.1:{mirror}\"\n"
    );
    tools::wrk(&url, 1, 16, 1, None)?;

    let mut base = Vec::new();
    let mut with = Vec::new();
    let mut pairs_per_s = Vec::new();
    let mut compared_pct = Vec::new();
    let mut drops = Vec::new();
    let mut unmatched = Vec::new();
    let mut diverged = Vec::new();
    for round in 0..ctx.rounds {
        let b = tools::wrk(&url, 1, 16, secs, None)?;
        base.push(b.rps);
        let agent = Agent::start(&ctx.agent, &work.path, "e2e", &config, secs + 120)?;
        std::thread::sleep(Duration::from_millis(300));
        let run = tools::wrk(&url, 1, 16, secs, None)?;
        let done = |m: &str| {
            procs::metric_sum(m, "parity_comparisons_total", &[])
                + procs::metric_sum(m, "parity_unmatched_total", &[])
        };
        agent.settle(Duration::from_secs(20), done)?;
        let report_path = agent.report.clone();
        let (status, log) = agent.stop()?;
        if !status.success() {
            bail!("parity-agent exited with {status}:\n{log}");
        }
        let report = Agent::read_report(&report_path)?;
        let p = &report["pairs"][0];
        let sum = |v: &Value| -> f64 {
            v.as_object()
                .map(|o| o.values().filter_map(Value::as_f64).sum())
                .unwrap_or(0.0)
        };
        let compared = p["compared"].as_f64().unwrap_or(0.0);
        let d = p["diverged"].as_f64().unwrap_or(0.0);
        let u = sum(&p["unmatched"]);
        let dr =
            sum(&report["capture"]["dropped"]) + report["capture"]["gaps"].as_f64().unwrap_or(0.0);
        ctx.log(&format!(
            "end-to-end: round {round}: mirror alone {:.0} req/s; with agent {:.0} req/s, {} sent, {compared} compared, {d} diverged, {u} unmatched {}, {dr} drops",
            b.rps, run.rps, run.requests, nonzero(&p["unmatched"])
        ));
        if d > 0.0 {
            ctx.fail(format!(
                "end-to-end: {d} false differences between identical backends (round {round}): {p}"
            ));
        }
        if run.errors > 0.0 || b.errors > 0.0 {
            bail!(
                "wrk saw errors through the splitter ({} without, {} with the agent)",
                b.errors,
                run.errors
            );
        }
        with.push(run.rps);
        pairs_per_s.push(compared / run.secs);
        compared_pct.push(compared / run.requests * 100.0);
        drops.push(dr);
        unmatched.push(u);
        diverged.push(d);
    }
    nginx.stop()?;
    Ok(vec![
        Row::new(BENCH, "pairs compared/s", pairs_per_s),
        Row::new(BENCH, "pairs compared / requests sent (%)", compared_pct),
        Row::new(BENCH, "client throughput (req/s)", with).peer(
            "nginx mirror alone (req/s)",
            base,
            "with ÷ without",
            |a, b| a / b,
        ),
        Row::new(BENCH, "drops (kernel records + gaps)", drops).target(Target::at_most(0.0)),
        Row::new(BENCH, "unmatched ids", unmatched),
        Row::new(BENCH, "false differences (identical backends)", diverged)
            .target(Target::at_most(0.0)),
    ])
}
