//! `cargo xtask bench [NAME...] [--quick]`: benchmarks measured against a peer in the same run.
//!
//! Builds the agent, the comparator benchmark and the load generator in release mode, runs the
//! named benchmarks (all by default) and prints a table; `target/bench/results.json` and
//! `target/bench/results.md` get the same figures with the machine, its load before and after,
//! and the command. Each figure is the median of at least three interleaved rounds (the agent,
//! then its peer, then the agent again, ...), because absolute timings on shared machines
//! drift; ratios are taken per round. Every load is bounded in time and count, targets only
//! loopback, and stops by itself; every process, cgroup and file a benchmark starts or creates
//! is owned by a guard that removes it when the benchmark ends, also by an error.
//!
//! | name | what | peer in the same run |
//! |---|---|---|
//! | `replay` | capture file → records, and → report with a pairs configuration | tshark; a plain read |
//! | `capture-tc`, `capture-cgroup` | live capture at full loopback load | wrk alone; tcpdump |
//! | `compare` | the comparator on 1 KiB and 64 KiB JSON pairs | serde_json parsing both bodies |
//! | `end-to-end` | wrk → nginx mirror → two identical backends, compared live | nginx mirror alone |
//! | `memory` | 100k concurrent keep-alive connections plus steady load | — |
//!
//! `--quick` is the reduced version `cargo xtask test` runs (fewer exchanges, shorter loads,
//! 10k connections), so the benchmarks cannot rot. `PARITY_BENCH_ROUNDS` raises the number of
//! rounds on a noisy machine.

mod capture;
mod compare;
mod e2e;
mod memory;
mod procs;
mod replay;
mod report;
mod tools;

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Instant;

use anyhow::{bail, Result};
use serde_json::json;

use crate::setup;
use crate::util::{self, cargo, run_cmd};
use report::Row;

/// The benchmarks, in the order they run.
const NAMES: &[(&str, &str)] = &[
    ("replay", "capture file → records / report: MB/s, exchanges/s, peak RSS vs tshark and a plain read"),
    ("capture-tc", "live capture (tc) at full loopback load: captured/sent, drops, throughput, CPU vs wrk alone and tcpdump"),
    ("capture-cgroup", "live capture (cgroup) at full loopback load: as capture-tc"),
    ("compare", "comparator on 1 KiB / 64 KiB JSON pairs vs serde_json parse only"),
    ("end-to-end", "wrk → nginx mirror → two identical backends, agent comparing live vs nginx mirror alone"),
    ("memory", "100k concurrent keep-alive connections plus steady load: RSS, flows, bytes per flow"),
];

/// What every benchmark gets: the binaries, the mode, and a place to log and record failures.
pub struct Ctx {
    /// `target/release/parity-agent`.
    pub agent: PathBuf,
    /// `target/release/examples/compare_bench`.
    pub compare_bench: PathBuf,
    /// `target/release/parity-load`.
    pub load: PathBuf,
    /// The reduced version.
    pub quick: bool,
    /// Interleaved rounds per benchmark.
    pub rounds: usize,
    started: Instant,
    failures: RefCell<Vec<String>>,
}

impl Ctx {
    /// A progress line on stderr, with the time since the start.
    pub fn log(&self, msg: &str) {
        eprintln!(
            "[bench {:6.1}s] {msg}",
            self.started.elapsed().as_secs_f64()
        );
    }

    /// A correctness failure found by a benchmark that still has figures to report.
    pub fn fail(&self, msg: String) {
        self.log(&format!("FAILED: {msg}"));
        self.failures.borrow_mut().push(msg);
    }
}

/// Set by SIGINT or SIGTERM: no further benchmark starts.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// The write end of the pipe the signal handler wakes the watcher thread through.
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(_sig: libc::c_int) {
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; one byte from a static buffer.
        unsafe { libc::write(fd, b"x".as_ptr().cast(), 1) };
    }
}

/// On SIGINT or SIGTERM, stop the bench's children (nginx, wrk, tcpdump, the agent), so the
/// benchmark running fails at once and its guards remove what it created (a cgroup, its work
/// directory) on the way out, instead of the process dying with them in place. A handler (not
/// a blocked mask, which children would inherit) wakes a watcher thread through a pipe; exec
/// resets handled signals to their default in the children.
fn stop_on_signals() -> Result<()> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into the array we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        bail!("pipe2: {}", std::io::Error::last_os_error());
    }
    WAKE_FD.store(fds[1], Ordering::SeqCst);
    let read_fd = fds[0];
    std::thread::spawn(move || {
        let mut b = [0u8; 1];
        // SAFETY: read(2) into a local buffer from the pipe's read end, which stays open.
        while unsafe { libc::read(read_fd, b.as_mut_ptr().cast(), 1) } == 1 {
            if !STOPPING.swap(true, Ordering::SeqCst) {
                eprintln!("bench: interrupted: stopping the running benchmark and cleaning up");
            }
            for child in procs::children(std::process::id()) {
                procs::signal(child, libc::SIGTERM);
            }
        }
    });
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: installing a handler that only calls write(2); the struct is zeroed first,
        // which is a valid (empty) mask and no flags.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut act.sa_mask);
            act.sa_flags = libc::SA_RESTART;
            if libc::sigaction(sig, &act, std::ptr::null_mut()) != 0 {
                bail!("sigaction: {}", std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

fn is_root_or_skip(name: &str) -> Result<bool> {
    if util::is_root() {
        return Ok(true);
    }
    let why = format!(
        "benchmark {name} needs root (eBPF, tcpdump, cgroups, file-descriptor limits): run cargo xtask bench as root"
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        bail!("{why} (CI=true: refusing to skip)");
    }
    eprintln!("\n*** SKIPPED: {why} ***\n");
    Ok(false)
}

/// Run the named benchmarks (all when empty).
pub fn run(names: &[String], quick: bool) -> Result<()> {
    for n in names {
        if !NAMES.iter().any(|(k, _)| k == n) {
            let list: Vec<String> = NAMES.iter().map(|(k, w)| format!("  {k:15} {w}")).collect();
            bail!("no benchmark {n:?}; benchmarks:\n{}", list.join("\n"));
        }
    }
    let selected: Vec<&str> = NAMES
        .iter()
        .map(|(k, _)| *k)
        .filter(|k| names.is_empty() || names.iter().any(|n| n == k))
        .collect();
    stop_on_signals()?;
    setup::run(setup::Scope::All)?;
    let load_before = loadavg();
    let started = Instant::now();

    let t = Instant::now();
    run_cmd(cargo().args([
        "build",
        "--release",
        "-p",
        "parity-agent",
        "-p",
        "parity-tests",
        "--bin",
        "parity-agent",
        "--bin",
        "parity-load",
        "--example",
        "compare_bench",
    ]))?;
    let build_secs = t.elapsed().as_secs_f64();
    let release = util::target_dir().join("release");
    let ctx = Ctx {
        agent: release.join("parity-agent"),
        compare_bench: release.join("examples/compare_bench"),
        load: release.join("parity-load"),
        quick,
        rounds: std::env::var("PARITY_BENCH_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|n: &usize| *n >= 1)
            .unwrap_or(3),
        started,
        failures: RefCell::new(Vec::new()),
    };
    ctx.log(&format!(
        "release build {build_secs:.1}s; running {} ({} rounds{})",
        selected.join(", "),
        ctx.rounds,
        if quick { ", quick" } else { "" }
    ));

    let mut rows: Vec<Row> = Vec::new();
    let mut timings = Vec::new();
    let mut errors: Vec<(String, String)> = Vec::new();
    let engines: Vec<capture::Engine> = [capture::Engine::Tc, capture::Engine::Cgroup]
        .into_iter()
        .filter(|e| selected.contains(&e.bench()))
        .collect();
    let mut capture_done = false;
    for name in &selected {
        if STOPPING.load(Ordering::SeqCst) {
            errors.push((name.to_string(), "not run: interrupted".into()));
            continue;
        }
        let t = Instant::now();
        let result = match *name {
            "compare" => compare::run(&ctx),
            "replay" => match is_root_or_skip(name) {
                Ok(true) => replay::run(&ctx),
                Ok(false) => continue,
                Err(e) => Err(e),
            },
            // Both engines share their rounds (and their peers), so they run together.
            "capture-tc" | "capture-cgroup" => {
                if capture_done {
                    continue;
                }
                capture_done = true;
                match is_root_or_skip(name) {
                    Ok(true) => capture::run(&ctx, &engines),
                    Ok(false) => continue,
                    Err(e) => Err(e),
                }
            }
            "end-to-end" => match is_root_or_skip(name) {
                Ok(true) => e2e::run(&ctx),
                Ok(false) => continue,
                Err(e) => Err(e),
            },
            "memory" => match is_root_or_skip(name) {
                Ok(true) => memory::run(&ctx),
                Ok(false) => continue,
                Err(e) => Err(e),
            },
            other => bail!("benchmark {other} has no runner"),
        };
        let label = if name.starts_with("capture-") {
            "capture".to_string()
        } else {
            name.to_string()
        };
        let secs = t.elapsed().as_secs_f64();
        match result {
            Ok(r) => {
                ctx.log(&format!("{label}: done in {secs:.1}s"));
                rows.extend(r);
            }
            Err(e) => {
                ctx.log(&format!("{label}: FAILED after {secs:.1}s: {e:#}"));
                errors.push((label.clone(), format!("{e:#}")));
            }
        }
        timings.push((label, secs));
    }
    let total = started.elapsed().as_secs_f64();
    let load_after = loadavg();

    let command = format!(
        "cargo xtask bench{}{}",
        if quick { " --quick" } else { "" },
        if names.is_empty() {
            String::new()
        } else {
            format!(" {}", names.join(" "))
        }
    );
    let machine = machine();
    let table = report::text_table(&rows);
    println!("\n{table}");
    let missed: Vec<&Row> = rows.iter().filter(|r| r.met() == Some(false)).collect();

    let dir = util::target_dir().join("bench");
    std::fs::create_dir_all(&dir)?;
    let results = json!({
        "command": command,
        "quick": quick,
        "rounds": ctx.rounds,
        "machine": machine,
        "load_before": load_before,
        "load_after": load_after,
        "release_build_seconds": build_secs,
        "seconds": total,
        "benchmark_seconds": timings.iter().map(|(n, s)| json!({"bench": n, "seconds": s})).collect::<Vec<_>>(),
        "errors": errors.iter().map(|(n, e)| json!({"bench": n, "error": e})).collect::<Vec<_>>(),
        "failures": *ctx.failures.borrow(),
        "rows": report::json_rows(&rows),
    });
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&results)? + "\n",
    )?;
    let mut md = format!(
        "`{command}` on {} ({} cores, {}, {} GiB RAM), Linux {}; load average {} before, {} after; \
         {:.0} s (release build {:.0} s). Median of {} interleaved rounds (memory: of readings while \
         the connections are held); ratios are per round, then their median.\n\n",
        machine["cpu"].as_str().unwrap_or("?"),
        machine["cores"],
        machine["arch"].as_str().unwrap_or("?"),
        machine["memory_gib"],
        machine["kernel"].as_str().unwrap_or("?"),
        load_before,
        load_after,
        total,
        build_secs,
        ctx.rounds,
    );
    md.push_str(&report::markdown_table(&rows));
    for (n, e) in &errors {
        md.push_str(&format!("\n**{n} failed:** {e}\n"));
    }
    std::fs::write(dir.join("results.md"), &md)?;
    println!(
        "bench: {:.0}s (release build {build_secs:.0}s); load average {load_before} before, {load_after} after",
        total
    );
    for (n, s) in &timings {
        println!("  {n:14} {s:6.1}s");
    }
    println!(
        "bench: results in {} and {}",
        dir.join("results.json").display(),
        dir.join("results.md").display()
    );
    if !missed.is_empty() {
        println!("bench: targets missed:");
        for r in &missed {
            println!("  {} / {}", r.bench, r.figure);
        }
    }
    let failures = ctx.failures.borrow();
    if !errors.is_empty() || !failures.is_empty() {
        bail!(
            "{} benchmark(s) failed{}",
            errors.len() + failures.len(),
            errors
                .iter()
                .map(|(n, _)| format!(" {n}"))
                .chain(failures.iter().map(|f| format!(" ({f})")))
                .collect::<String>()
        );
    }
    Ok(())
}

/// `/proc/loadavg`'s three averages.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// The machine: CPU model, cores, memory, kernel.
fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    let mem_kib: f64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("MemTotal:")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0.0);
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "arch": std::env::consts::ARCH,
        "memory_gib": (mem_kib / 1024.0 / 1024.0).round(),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
    })
}
