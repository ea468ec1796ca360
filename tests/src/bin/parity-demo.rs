//! The demo's services and client: `parity-demo serve` runs the primary and the mirror,
//! `parity-demo client` sends the mirrored request mix, `parity-demo config` prints the demo's
//! parity configuration. `cargo xtask demo` runs them around a live agent.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use parity_tests::demo;

#[derive(Parser)]
#[command(about = "parity demo services and client")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the primary and the mirror until killed.
    Serve {
        #[arg(long, default_value = "127.0.0.1:18080")]
        primary: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:18081")]
        mirror: SocketAddr,
    },
    /// Send the mirrored request mix.
    Client {
        #[arg(long, default_value = "127.0.0.1:18080")]
        primary: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:18081")]
        mirror: SocketAddr,
        /// Requests per second (each goes to both services).
        #[arg(long, default_value_t = 200)]
        rate: u32,
        /// Seconds to send for.
        #[arg(long, default_value_t = 20.0)]
        seconds: f64,
        /// Keep-alive connections per service.
        #[arg(long, default_value_t = 4)]
        conns: usize,
    },
    /// Print the demo's parity configuration.
    Config {
        #[arg(long, default_value = "127.0.0.1:18080")]
        primary: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:18081")]
        mirror: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:9464")]
        listen: SocketAddr,
    },
    /// Serve the test fixture (sized, chunked and echoed bodies) until killed.
    Fixture {
        #[arg(long, default_value = "127.0.0.1:18090")]
        listen: Vec<SocketAddr>,
    },
    /// Check a summary report (JSON file) against the injected behaviours; exit 1 on mismatch.
    Check { report: std::path::PathBuf },
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Serve { primary, mirror } => {
            demo::start_upstream(demo::Side::Primary, primary).await?;
            demo::start_upstream(demo::Side::Mirror, mirror).await?;
            eprintln!("demo: primary on {primary}, mirror on {mirror}");
            tokio::signal::ctrl_c().await?;
        }
        Cmd::Client {
            primary,
            mirror,
            rate,
            seconds,
            conns,
        } => {
            let stats = demo::run_client(
                primary,
                mirror,
                conns,
                rate,
                Duration::from_secs_f64(seconds),
                None,
            )
            .await?;
            eprintln!(
                "demo: sent {} mirrored requests ({} errors)",
                stats.sent, stats.errors
            );
        }
        Cmd::Fixture { listen } => {
            for a in listen {
                let local = parity_tests::fixture::start(a).await?;
                eprintln!("fixture: listening on {local}");
            }
            tokio::signal::ctrl_c().await?;
        }
        Cmd::Config {
            primary,
            mirror,
            listen,
        } => print!("{}", demo::config(primary, mirror, listen)),
        Cmd::Check { report } => {
            let text = std::fs::read_to_string(&report)
                .with_context(|| format!("reading {}", report.display()))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", report.display()))?;
            let problems = demo::check_report(&v);
            if problems.is_empty() {
                println!("demo: the report's findings equal the injected behaviours");
            } else {
                for p in &problems {
                    println!("demo: MISMATCH: {p}");
                }
                std::process::exit(1);
            }
        }
    }
    Ok(())
}
