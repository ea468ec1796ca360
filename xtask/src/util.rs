//! Helpers shared by the xtask commands: running processes, privileges, building the agent.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::setup;

/// Is a command on PATH (or an existing absolute path)?
pub fn have(cmd: &str) -> bool {
    if cmd.starts_with('/') {
        return std::path::Path::new(cmd).exists();
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
        .unwrap_or(false)
}

/// Are we root (effective uid 0)?
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Run a command with inherited stdio; fail with its status.
pub fn run_cmd(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// `cargo` in the workspace root.
pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(crate::root());
    c
}

/// What [`build_release_tools`] builds, in one cargo invocation.
const RELEASE_TOOLS: [&str; 15] = [
    "build",
    "--release",
    "-p",
    "parity-agent",
    "-p",
    "parity-tests",
    "--bin",
    "parity-agent",
    "--bin",
    "parity-demo",
    "--bin",
    "parity-load",
    "--example",
    "compare_bench",
    "--test=soak",
];

/// Release build of everything the demo, the benchmarks and the soak start: the agent, the demo
/// and load binaries, the comparator benchmark, the soak test. One cargo invocation with one
/// feature resolution, so that they do not each rebuild the agent with different features (a
/// `cargo test` of the soak alone resolved them differently again).
pub fn build_release_tools() -> Result<()> {
    run_cmd(cargo().args(RELEASE_TOOLS))
}

/// The executable of the release test target `name` built by [`build_release_tools`] (asked of
/// cargo again, which finds everything fresh and reports the paths).
pub fn release_test_executable(name: &str) -> Result<PathBuf> {
    let out = cargo()
        .args(RELEASE_TOOLS)
        .arg("--message-format=json")
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("asking cargo for the release test executables")?;
    if !out.status.success() {
        bail!("cargo build --message-format=json failed: {}", out.status);
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_test = v["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "test"));
        if is_test && v["target"]["name"] == name {
            if let Some(exe) = v["executable"].as_str() {
                return Ok(PathBuf::from(exe));
            }
        }
    }
    bail!("cargo reported no executable for the test target {name:?}")
}

/// Build `parity-agent` (with the eBPF object) and return the binary's path.
pub fn build_agent(release: bool) -> Result<PathBuf> {
    let mut c = cargo();
    c.args(["build", "-p", "parity-agent", "--bin", "parity-agent"]);
    if release {
        c.arg("--release");
    }
    run_cmd(&mut c)?;
    let bin = target_dir()
        .join(if release { "release" } else { "debug" })
        .join("parity-agent");
    if !bin.exists() {
        bail!("the build finished but {} does not exist", bin.display());
    }
    Ok(bin)
}

/// The cargo target directory.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::root().join("target"))
}

/// A command that runs `program` as root: directly when we are root, through `sudo` otherwise.
pub fn as_root(program: &std::path::Path) -> Command {
    if is_root() {
        Command::new(program)
    } else {
        let mut c = Command::new("sudo");
        c.arg("--preserve-env=RUST_LOG,PARITY_API_TOKEN,CI")
            .arg(program);
        c
    }
}

/// `cargo xtask run -- ARGS`.
pub fn run_agent(release: bool, args: &[String]) -> Result<()> {
    setup::run(setup::Scope::Build)?;
    let bin = build_agent(release)?;
    let status = as_root(&bin)
        .args(args)
        .stdin(Stdio::inherit())
        .status()
        .with_context(|| format!("starting {}", bin.display()))?;
    std::process::exit(status.code().unwrap_or(1));
}

/// Integration-test target names in `dir` (relative to the root) whose file names start with
/// `prefix`.
pub fn test_targets(dir: &str, prefix: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let path = crate::root().join(dir);
    for e in std::fs::read_dir(&path).with_context(|| format!("listing {}", path.display()))? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".rs") {
            if stem.starts_with(prefix) {
                out.push(stem.to_string());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The fuzz targets, from `parity-agent/fuzz/fuzz_targets`.
pub fn fuzz_targets() -> Result<Vec<String>> {
    test_targets("parity-agent/fuzz/fuzz_targets", "")
}

/// Flags of a fuzz build and its runs: the same for both, so `run` reuses the one build. Debug
/// assertions (and overflow checks) are on in both: an overflow is a finding, not a wrap.
///
/// Real runs: optimised, with AddressSanitizer. The smoke: unoptimised and without a sanitizer,
/// because its purpose is that every target still builds and survives its seeds and a short
/// run, and the optimised ASan build of the agent's whole dependency tree took 16 minutes cold
/// against about 3 for this one.
fn fuzz_flags(smoke: bool) -> &'static [&'static str] {
    if smoke {
        &["--dev", "--sanitizer", "none"]
    } else {
        &["--release", "--debug-assertions"]
    }
}

/// `cargo xtask fuzz`: each target for `seconds` (30 with `--smoke`, else 600), one at a time,
/// starting from its committed seeds (`parity-agent/fuzz/seeds/<target>`) and its local corpus
/// (`parity-agent/fuzz/corpus/<target>`, not committed). All targets are built once first, so
/// the time limit of each run is fuzzing time, not build time.
pub fn fuzz(smoke: bool, seconds: Option<u64>, only: &[String]) -> Result<()> {
    setup::run(setup::Scope::All)?;
    let seconds = seconds.unwrap_or(if smoke { 30 } else { 600 });
    let all = fuzz_targets()?;
    let targets: Vec<String> = if only.is_empty() {
        all.clone()
    } else {
        for t in only {
            if !all.contains(t) {
                bail!("no fuzz target {t:?}; targets: {}", all.join(", "));
            }
        }
        only.to_vec()
    };
    let fuzz_dir = crate::root().join("parity-agent/fuzz");
    let started = std::time::Instant::now();
    let mut build = Command::new("cargo");
    build
        .current_dir(&fuzz_dir)
        .args(["+nightly", "fuzz", "build"])
        .args(fuzz_flags(smoke));
    run_cmd(&mut build)?;
    println!(
        "fuzz: built {} targets in {:.0}s",
        all.len(),
        started.elapsed().as_secs_f64()
    );
    let mut failed = Vec::new();
    for t in &targets {
        let corpus = fuzz_dir.join("corpus").join(t);
        std::fs::create_dir_all(&corpus)?;
        let seeds = fuzz_dir.join("seeds").join(t);
        println!("fuzz: {t} for {seconds}s");
        let mut c = Command::new("cargo");
        c.current_dir(&fuzz_dir)
            .args(["+nightly", "fuzz", "run"])
            .args(fuzz_flags(smoke))
            .arg(t)
            .arg(&corpus);
        if seeds.is_dir() {
            c.arg(&seeds);
        }
        c.args([
            "--",
            &format!("-max_total_time={seconds}"),
            "-rss_limit_mb=2048",
            "-timeout=10",
            "-print_final_stats=1",
        ]);
        if run_cmd(&mut c).is_err() {
            failed.push(t.clone());
        }
    }
    println!(
        "fuzz: {} targets in {:.0}s including the build",
        targets.len(),
        started.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        bail!(
            "fuzz targets found a crash: {} (inputs in parity-agent/fuzz/artifacts/<target>; \
             reproduce with `cargo +nightly fuzz run {} <target> <input>` in parity-agent/fuzz)",
            failed.join(", "),
            fuzz_flags(smoke).join(" ")
        );
    }
    Ok(())
}

/// `cargo xtask demo`: the demo services, a live agent and a mirroring client on loopback.
pub fn demo(duration: &str, rate: u32) -> Result<()> {
    let seconds: f64 = duration
        .trim_end_matches('s')
        .parse()
        .with_context(|| format!("--duration {duration:?}: write seconds, e.g. 20s"))?;
    setup::run(setup::Scope::Build)?;
    build_release_tools()?;
    let agent = target_dir().join("release/parity-agent");
    let demo_bin = target_dir().join("release/parity-demo");
    let dir = target_dir().join("demo");
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("parity-demo.toml");
    let report = dir.join("report.json");
    let out = Command::new(&demo_bin).arg("config").output()?;
    std::fs::write(&config, &out.stdout)?;
    println!("demo: configuration in {}", config.display());

    let mut upstreams = Command::new(&demo_bin)
        .arg("serve")
        .spawn()
        .context("starting the demo services")?;
    let _guard = KillOnDrop(&mut upstreams);
    // The agent captures for the client's duration plus time for the last pairs to complete.
    let capture_secs = seconds + 6.0;
    let mut agent_cmd = as_root(&agent);
    agent_cmd
        .args(["run", "--config"])
        .arg(&config)
        .args(["--duration", &format!("{capture_secs}s"), "--report"])
        .arg(&report);
    let mut agent_proc = agent_cmd.spawn().context("starting parity-agent")?;
    wait_ready("127.0.0.1:9464", Duration::from_secs(30))?;
    println!("demo: agent ready; metrics on http://127.0.0.1:9464/metrics, UI on http://127.0.0.1:9464/ui");
    run_cmd(
        Command::new(&demo_bin)
            .args(["client", "--rate", &rate.to_string(), "--seconds"])
            .arg(seconds.to_string()),
    )?;
    let status = agent_proc.wait()?;
    if !status.success() {
        bail!("parity-agent exited with {status}");
    }
    run_cmd(Command::new(&demo_bin).arg("check").arg(&report))?;
    println!("demo: report in {}", report.display());
    Ok(())
}

use std::time::Duration;

/// Poll `http://addr/readyz` until it answers 200.
pub fn wait_ready(addr: &str, timeout: Duration) -> Result<()> {
    use std::io::{Read, Write};
    let start = std::time::Instant::now();
    while start.elapsed() < timeout {
        if let Ok(mut s) = std::net::TcpStream::connect(addr) {
            let _ = s.write_all(b"GET /readyz HTTP/1.0\r\n\r\n");
            let mut buf = String::new();
            let _ = s.read_to_string(&mut buf);
            if buf.starts_with("HTTP/1.1 200") || buf.starts_with("HTTP/1.0 200") {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("the agent did not become ready on {addr} within {timeout:?}")
}

/// Kills a child process when dropped.
pub struct KillOnDrop<'a>(pub &'a mut std::process::Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
