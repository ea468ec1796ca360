//! `cargo xtask test`: the whole suite in phases, each timed; the command CI runs.
//!
//! Every phase runs even when an earlier one failed, so one run shows everything that is
//! broken; the exit status is non-zero when any phase failed. Under `CI=true` tests treat a
//! missing precondition as a failure instead of a skip (each test checks that itself).

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::setup;
use crate::util::cargo;

struct Phase {
    name: &'static str,
    what: &'static str,
    run: fn() -> Result<()>,
}

const PHASES: &[Phase] = &[
    Phase {
        name: "lint",
        what: "cargo fmt --check and clippy -D warnings (agent with and without eBPF, eBPF crate)",
        run: lint,
    },
    Phase {
        name: "unit",
        what: "unit tests of every crate",
        run: unit,
    },
    Phase {
        name: "conformance",
        what: "llhttp vectors and public pcaps against upstream expectations (../shared/corpus)",
        run: conformance,
    },
    Phase {
        name: "ebpf",
        what: "privileged live-capture tests (tc, cgroup, passivity, overflow, detach)",
        run: ebpf,
    },
    Phase {
        name: "e2e",
        what: "end-to-end: netns/veth, nginx mirror, demo, replay vs live, faults, store and UI",
        run: e2e,
    },
    Phase {
        name: "bench",
        what: "cargo xtask bench --quick (benchmarks cannot rot)",
        run: bench,
    },
    Phase {
        name: "fuzz",
        what: "cargo xtask fuzz --smoke (30 s per target)",
        run: fuzz,
    },
    Phase {
        name: "soak",
        what: "one minute of mixed load: bounded memory, no unexpected errors",
        run: soak,
    },
];

/// Run the named phases (all when empty).
pub fn run(only: &[String], list: bool) -> Result<()> {
    if list {
        for p in PHASES {
            println!("{:12} {}", p.name, p.what);
        }
        return Ok(());
    }
    for name in only {
        if !PHASES.iter().any(|p| p.name == name) {
            bail!("no test phase {name:?}; `cargo xtask test --list` shows them");
        }
    }
    setup::run(setup::Scope::All)?;
    let started = Instant::now();
    let mut results: Vec<(&str, Duration, Result<()>)> = Vec::new();
    for p in PHASES {
        if !only.is_empty() && !only.iter().any(|n| n == p.name) {
            continue;
        }
        println!("\n==> test phase {}: {}", p.name, p.what);
        let t = Instant::now();
        let r = (p.run)();
        let d = t.elapsed();
        match &r {
            Ok(()) => println!("==> {} passed in {:.1}s", p.name, d.as_secs_f64()),
            Err(e) => println!("==> {} FAILED in {:.1}s: {e:#}", p.name, d.as_secs_f64()),
        }
        results.push((p.name, d, r));
    }
    println!("\ntest phases:");
    let mut failed = 0;
    for (name, d, r) in &results {
        let status = if r.is_ok() { "ok" } else { "FAILED" };
        if r.is_err() {
            failed += 1;
        }
        println!("  {name:12} {status:7} {:7.1}s", d.as_secs_f64());
    }
    println!(
        "  {:12} {:7} {:7.1}s",
        "total",
        "",
        started.elapsed().as_secs_f64()
    );
    if failed > 0 {
        bail!("{failed} test phase(s) failed");
    }
    Ok(())
}

fn sh(c: &mut Command) -> Result<()> {
    crate::util::run_cmd(c)
}

fn lint() -> Result<()> {
    sh(cargo().args(["fmt", "--all", "--", "--check"]))?;
    // parity-ebpf only builds for the BPF target on nightly: linted separately below.
    sh(cargo().args([
        "clippy",
        "--workspace",
        "--exclude",
        "parity-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    sh(cargo().args([
        "clippy",
        "-p",
        "parity-agent",
        "--no-default-features",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // `+nightly` is rustup's syntax: call the rustup proxy, not the toolchain's cargo.
    let mut nightly = Command::new("cargo");
    nightly.current_dir(crate::root());
    sh(nightly.args([
        "+nightly",
        "clippy",
        "-p",
        "parity-ebpf",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--release",
        "--",
        "-D",
        "warnings",
    ]))
}

fn unit() -> Result<()> {
    sh(cargo().args([
        "test",
        "--workspace",
        "--exclude",
        "parity-ebpf",
        "--lib",
        "--bins",
        "--no-fail-fast",
    ]))
}

fn conformance() -> Result<()> {
    sh(cargo().args([
        "test",
        "-p",
        "parity-agent",
        "--no-fail-fast",
        "--test",
        "llhttp_conformance",
        "--test",
        "pcap_corpus",
        "--",
        "--nocapture",
    ]))
}

fn ebpf() -> Result<()> {
    let mut c = cargo();
    c.args(["test", "-p", "parity-agent", "--no-fail-fast"]);
    for t in crate::util::test_targets("parity-agent/tests", "ebpf_")? {
        c.args(["--test", &t]);
    }
    // Live-capture tests share kernel hooks: one at a time.
    c.args(["--", "--test-threads=1", "--nocapture"]);
    sh(&mut c)
}

fn e2e() -> Result<()> {
    // The tests start these binaries as processes.
    sh(cargo().args(["build", "-p", "parity-agent", "--bin", "parity-agent"]))?;
    sh(cargo().args(["build", "-p", "parity-tests", "--bins"]))?;
    sh(cargo().args([
        "test",
        "-p",
        "parity-tests",
        "--no-fail-fast",
        "--tests",
        "--",
        "--test-threads=1",
        "--nocapture",
    ]))
}

fn bench() -> Result<()> {
    crate::bench::run(&[], true)
}

fn fuzz() -> Result<()> {
    crate::util::fuzz(true, None, &[])
}

fn soak() -> Result<()> {
    // Built by the same invocation as the bench's (the agent it starts and the test itself), and
    // run directly: `cargo test` would resolve features on its own and rebuild the agent.
    crate::util::build_release_tools()?;
    let exe = crate::util::release_test_executable("soak")?;
    sh(Command::new(exe)
        .current_dir(crate::root().join("tests"))
        .args(["--ignored", "--nocapture"])
        .env("PARITY_SOAK_SECONDS", "60"))
}
