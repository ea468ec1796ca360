//! `cargo xtask setup`: idempotent, non-interactive installation of the toolchain and tools.
//!
//! Each step checks first and says `ok` or what it installs; nothing is installed twice. Debian
//! packages are installed with apt (through sudo when not root). The eBPF linker is built from
//! crates.io against Debian's LLVM 22, the only LLVM the pinned toolchain links with.

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util::{have, is_root, run_cmd};

/// What to install.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Only what building the eBPF object and the agent needs.
    Build,
    /// Also the tools of tests and benchmarks.
    All,
}

/// Debian packages the build needs.
const BUILD_PACKAGES: &[&str] = &["llvm-22-dev", "libpolly-22-dev", "libzstd-dev"];

/// Debian packages the tests and benchmarks use, with the command that proves each present.
const TOOL_PACKAGES: &[(&str, &str)] = &[
    ("nginx", "/usr/sbin/nginx"),
    ("wrk", "wrk"),
    ("curl", "curl"),
    ("tcpdump", "tcpdump"),
    ("tshark", "tshark"),
    ("bpftool", "bpftool"),
    ("chromium", "chromium"),
    ("iproute2", "ip"),
    ("linux-perf", "perf"),
    ("python3", "python3"),
];

const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

/// Run the set-up for `scope`.
pub fn run(scope: Scope) -> Result<()> {
    println!(
        "setup: checking the {} toolchain",
        match scope {
            Scope::Build => "build",
            Scope::All => "build, test and benchmark",
        }
    );
    rust_src()?;
    let mut packages: Vec<&str> = BUILD_PACKAGES
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if scope == Scope::All {
        for (pkg, probe) in TOOL_PACKAGES {
            if !have(probe) && !dpkg_installed(pkg) {
                packages.push(pkg);
            }
        }
    }
    apt_install(&packages)?;
    bpf_linker()?;
    if scope == Scope::All {
        cargo_fuzz()?;
    }
    println!("setup: done");
    Ok(())
}

fn rust_src() -> Result<()> {
    let out = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output()
        .context("running rustup (is rustup installed? see https://rustup.rs)")?;
    if !out.status.success() {
        bail!(
            "the nightly toolchain is missing: install it with `rustup toolchain install nightly` ({})",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == "rust-src")
    {
        println!("setup: ok      nightly rust-src");
        return Ok(());
    }
    println!("setup: install nightly rust-src (rustup component add rust-src --toolchain nightly)");
    run_cmd(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

fn dpkg_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn apt_install(packages: &[&str]) -> Result<()> {
    if packages.is_empty() {
        println!("setup: ok      Debian packages");
        return Ok(());
    }
    println!("setup: install Debian packages: {}", packages.join(" "));
    let sudo = |c: &mut Command| -> Command {
        if is_root() {
            let mut n = Command::new(c.get_program());
            n.args(c.get_args());
            n
        } else {
            let mut n = Command::new("sudo");
            n.arg("-E").arg(c.get_program()).args(c.get_args());
            n
        }
    };
    run_cmd(&mut sudo(Command::new("apt-get").args(["update", "-qq"])))?;
    let mut install = sudo(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(packages),
    );
    install.env("DEBIAN_FRONTEND", "noninteractive");
    run_cmd(&mut install)
}

fn bpf_linker() -> Result<()> {
    if let Ok(out) = Command::new("bpf-linker").arg("--version").output() {
        let v = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && v.contains("0.13") {
            println!("setup: ok      {}", v.trim());
            return Ok(());
        }
    }
    println!(
        "setup: install bpf-linker 0.13 against LLVM 22 (cargo install, a few minutes on 2 cores)"
    );
    run_cmd(
        Command::new("cargo")
            .args([
                "install",
                "--locked",
                "bpf-linker",
                "--version",
                "^0.13",
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            // llvm-sys reads the first, bpf-linker's build script the second: without it, it
            // picks up whatever `llvm-config` comes first on PATH (LLVM 14 on Debian 12).
            .env("LLVM_SYS_221_PREFIX", LLVM_PREFIX)
            .env("LLVM_PREFIX", LLVM_PREFIX),
    )
}

fn cargo_fuzz() -> Result<()> {
    if Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
    {
        println!("setup: ok      cargo-fuzz");
        return Ok(());
    }
    println!("setup: install cargo-fuzz (cargo install --locked cargo-fuzz)");
    run_cmd(Command::new("cargo").args(["install", "--locked", "cargo-fuzz"]))
}
