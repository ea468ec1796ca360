//! Preconditions of end-to-end tests: root, tools, the shared corpus, and the agent binary.
//!
//! A test may skip only for a missing precondition, and says so loudly on stderr; under
//! `CI=true` a missing precondition fails the test instead, so CI never passes by testing
//! nothing.

use std::path::{Path, PathBuf};

/// Is this a CI run (where skipping is failing)?
pub fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Skip (return `false` after a loud message) or, under CI, panic.
pub fn skip(why: &str) -> bool {
    if in_ci() {
        panic!("precondition missing and CI=true, refusing to skip: {why}");
    }
    eprintln!("\n*** SKIPPED: {why} ***\n");
    false
}

/// True when running as root; otherwise skips.
pub fn require_root() -> bool {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(String::from))
        })
        .unwrap_or_default();
    uid == "0"
        || skip(
            "this test needs root (eBPF, network namespaces, cgroups); run as root or through sudo",
        )
}

/// True when every tool is on PATH; otherwise skips naming the missing one.
pub fn require_tools(tools: &[&str]) -> bool {
    for t in tools {
        if which(t).is_none() {
            return skip(&format!(
                "{t} is not installed (cargo xtask setup installs it)"
            ));
        }
    }
    true
}

/// The full path of a command on PATH (also /usr/sbin, where Debian puts nginx).
pub fn which(cmd: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// `../shared/corpus`, or a skip.
pub fn corpus() -> Option<PathBuf> {
    let p = root().join("../shared/corpus");
    if p.is_dir() {
        Some(p)
    } else {
        skip(&format!("the shared corpus is missing at {}", p.display()));
        None
    }
}

/// The `parity-agent` binary of this build (`PARITY_AGENT_BIN` overrides). `cargo xtask test`
/// builds it before the end-to-end phase.
pub fn agent_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PARITY_AGENT_BIN") {
        return PathBuf::from(p);
    }
    // The test executable lives in target/<profile>/deps/.
    let exe = std::env::current_exe().unwrap_or_default();
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let bin = profile_dir.join("parity-agent");
    assert!(
        bin.exists(),
        "{} does not exist: build it first (cargo build -p parity-agent), as cargo xtask test does",
        bin.display()
    );
    bin
}

/// Where tests leave artifacts (screenshots, captures of failures): `target/test-artifacts`.
pub fn artifacts_dir() -> PathBuf {
    let d = root().join("target/test-artifacts");
    let _ = std::fs::create_dir_all(&d);
    d
}
