//! Developer and operator commands for parity: `cargo xtask <command>`.
//!
//! Every command that needs a tool first runs the idempotent [`setup`] for exactly the tools it
//! needs, so a fresh Debian machine goes from clone to result with one command. This crate uses
//! only std, clap and anyhow; it orchestrates, it does not reimplement the agent.

mod bench;
mod setup;
mod test;
mod util;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// parity's developer and operator commands.
#[derive(Parser)]
#[command(name = "cargo xtask", about, version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install everything the build, tests and benchmarks use (idempotent, non-interactive).
    Setup {
        /// Also install the tools of tests and benchmarks, not only the build toolchain.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        all: bool,
    },
    /// Build the eBPF object and the agent.
    Build {
        /// Release mode.
        #[arg(long)]
        release: bool,
    },
    /// Build and run the agent on this host (as root, or through sudo): `cargo xtask run -- run --config parity.toml`.
    Run {
        /// Debug build instead of release.
        #[arg(long)]
        debug: bool,
        /// Arguments passed to `parity-agent`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the demo: a primary and a rewritten mirror on loopback, compared live.
    Demo {
        /// How long to send traffic.
        #[arg(long, default_value = "20s")]
        duration: String,
        /// Requests per second sent to both services.
        #[arg(long, default_value_t = 200)]
        rate: u32,
    },
    /// Run the whole test suite, printing the time of each phase.
    Test {
        /// Only these phases (default: all). See `cargo xtask test --list`.
        phases: Vec<String>,
        /// List the phases.
        #[arg(long)]
        list: bool,
    },
    /// Run benchmarks against their peers; results in target/bench/.
    Bench {
        /// Only these benchmarks (default: all).
        names: Vec<String>,
        /// The reduced version (under 3 minutes), as `cargo xtask test` runs it.
        #[arg(long)]
        quick: bool,
    },
    /// Run the fuzz targets (`--smoke`: 30 s each).
    Fuzz {
        /// 30 seconds per target.
        #[arg(long)]
        smoke: bool,
        /// Seconds per target (default 600, or 30 with --smoke).
        #[arg(long)]
        seconds: Option<u64>,
        /// Only these targets.
        targets: Vec<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    let result: Result<()> = match cli.cmd {
        Cmd::Setup { all } => setup::run(if all {
            setup::Scope::All
        } else {
            setup::Scope::Build
        }),
        Cmd::Build { release } => {
            setup::run(setup::Scope::Build).and_then(|()| util::build_agent(release).map(drop))
        }
        Cmd::Run { debug, args } => util::run_agent(!debug, &args),
        Cmd::Demo { duration, rate } => util::demo(&duration, rate),
        Cmd::Test { phases, list } => test::run(&phases, list),
        Cmd::Bench { names, quick } => bench::run(&names, quick),
        Cmd::Fuzz {
            smoke,
            seconds,
            targets,
        } => util::fuzz(smoke, seconds, &targets),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// The workspace root (the parent of this crate's directory).
pub fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}
