//! `compare`: the comparator against parsing both bodies with serde_json, from
//! `parity-agent/examples/compare_bench.rs` (release).
//!
//! The example measures both sides interleaved within one process and prints one JSON line per
//! case; this runs it once per round and takes, per case, the median over the runs.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::procs;
use super::report::{Row, Target};
use super::Ctx;

const BENCH: &str = "compare";

/// The cases shown in the table (the JSON has them all): 1 KiB and 64 KiB, equal and different.
const SHOWN: &[&str] = &[
    "json_1k_identical",
    "json_1k_equal_respelled",
    "json_1k_different",
    "json_64k_identical",
    "json_64k_equal_respelled",
    "json_64k_different",
];

#[derive(Default)]
struct Case {
    pairs_per_s: Vec<f64>,
    parse_per_s: Vec<f64>,
    bytes: f64,
}

/// Run the benchmark.
pub fn run(ctx: &Ctx) -> Result<Vec<Row>> {
    let bin = ctx.compare_bench.clone();
    let mut cases: BTreeMap<String, Case> = BTreeMap::new();
    let mut worst = Vec::new();
    for round in 0..ctx.rounds {
        let mut cmd = Command::new(&bin);
        if ctx.quick {
            cmd.arg("--quick");
        }
        let out = procs::output(&mut cmd, Duration::from_secs(600))?;
        if !out.status.success() {
            bail!(
                "{} failed ({}): {}",
                bin.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        for line in text.lines().filter(|l| l.starts_with('{')) {
            let v: Value = serde_json::from_str(line)
                .with_context(|| format!("compare_bench printed a bad line: {line}"))?;
            let case = v["case"].as_str().unwrap_or("").to_string();
            if case == "worst_ratio" {
                worst.push(v["ratio"].as_f64().unwrap_or(f64::NAN));
                continue;
            }
            let c = cases.entry(case).or_default();
            c.pairs_per_s
                .push(v["pairs_per_s"].as_f64().unwrap_or(f64::NAN));
            c.parse_per_s
                .push(v["parse_only_pairs_per_s"].as_f64().unwrap_or(f64::NAN));
            c.bytes = v["bytes"].as_f64().unwrap_or(f64::NAN);
        }
        ctx.log(&format!(
            "compare: round {round}: {} cases, worst ratio {:.2}",
            cases.len(),
            worst.last().copied().unwrap_or(f64::NAN)
        ));
    }
    if cases.is_empty() {
        bail!("compare_bench printed no cases");
    }
    let mut rows = Vec::new();
    let mut extra = Vec::new();
    for (name, c) in cases {
        let row = Row::new(
            BENCH,
            &format!("{name} ({:.0} KiB): pairs/s", c.bytes / 1024.0),
            c.pairs_per_s,
        )
        .peer(
            "serde_json parse only (pairs/s)",
            c.parse_per_s,
            "compare time ÷ parse time",
            |a, b| b / a,
        )
        .target(Target::ratio_at_most(2.0));
        if SHOWN.contains(&name.as_str()) {
            rows.push(row);
        } else {
            extra.push(row.detail());
        }
    }
    rows.push(
        Row::new(
            BENCH,
            &format!(
                "worst compare ÷ parse time over all {} cases",
                rows.len() + extra.len()
            ),
            worst,
        )
        .target(Target::at_most(2.0)),
    );
    rows.extend(extra);
    Ok(rows)
}
