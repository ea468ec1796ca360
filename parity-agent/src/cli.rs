//! The command line: argument definitions and the dispatch to each command.
//!
//! Exit codes are a contract: 0 success; 1 the divergence gate failed (`--fail-on-divergence`);
//! 2 a usage, configuration or input error, or anything else that stopped the command.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::mask::{self, Masker};
use crate::pipeline::RecordSink;
use crate::units::Dur;

/// Exit code: success.
pub const EXIT_OK: i32 = 0;
/// Exit code: the divergence gate failed.
pub const EXIT_DIVERGED: i32 = 1;
/// Exit code: usage, configuration or input error.
pub const EXIT_ERROR: i32 = 2;

/// parity: a passive HTTP traffic comparator. Captures the traffic of a primary service and of
/// its mirror with eBPF (or reads capture files), pairs their exchanges by correlation id and
/// reports how the mirror diverges.
#[derive(Parser, Debug)]
#[command(name = "parity-agent", version, about, long_about = None)]
pub struct Cli {
    /// Log filter (also RUST_LOG), e.g. `info`, `parity_agent=debug`.
    #[arg(long, global = true, default_value = "info")]
    pub log: String,
    /// The command.
    #[command(subcommand)]
    pub cmd: Command,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run capture files (pcap, pcapng, gzip-compressed) through the pipeline offline.
    Replay(ReplayCmd),
    /// Capture live with eBPF and compare (needs root or CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON).
    Run(RunCmd),
    /// Validate a configuration file and print it with every default filled in.
    CheckConfig {
        /// The configuration file.
        file: PathBuf,
    },
    /// List or show stored diff records.
    Diffs(DiffsCmd),
    /// Serve the web view and API over an existing store (e.g. after a replay).
    Serve(ServeCmd),
}

/// Options shared by `replay` and `run` for their outputs.
#[derive(Args, Debug, Clone)]
pub struct OutputArgs {
    /// Write one JSON record per exchange to PATH (`-` for stdout).
    #[arg(long, value_name = "PATH")]
    pub exchanges: Option<String>,
    /// Write the summary report (JSON) to PATH (`-` for stdout) at the end.
    #[arg(long, value_name = "PATH")]
    pub report: Option<String>,
    /// Exit 1 when a pair's divergence rate is above RATE, when a pair compared nothing, or when
    /// its unmatched share exceeds --max-unmatched.
    #[arg(long, value_name = "RATE")]
    pub fail_on_divergence: Option<f64>,
    /// Largest share of ids not compared (sampling excluded) that the gate accepts.
    #[arg(long, value_name = "SHARE", default_value_t = 0.5)]
    pub max_unmatched: f64,
    /// Turn masking off for a local debugging run (secrets appear in every output).
    #[arg(long)]
    pub unmasked: bool,
}

/// `replay` arguments.
#[derive(Args, Debug)]
pub struct ReplayCmd {
    /// Configuration file (pairs, rules, limits); defaults apply without it.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Outputs.
    #[command(flatten)]
    pub out: OutputArgs,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Capture files, processed in order as one capture.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// `run` arguments.
#[derive(Args, Debug)]
pub struct RunCmd {
    /// Configuration file.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Outputs.
    #[command(flatten)]
    pub out: OutputArgs,
    /// Stop after this long (e.g. `60s`) and write the report; without it, run until SIGINT/SIGTERM.
    #[arg(long, value_name = "DURATION")]
    pub duration: Option<Dur>,
    /// No live status line.
    #[arg(long)]
    pub quiet: bool,
}

/// `diffs` arguments.
///
/// `--json` prints a JSON array of records, newest first, each with: `id`, `run_id`, `time`
/// (capture time, Unix seconds), `pair`, `endpoint`, `correlation_id`, `method`, `uri`,
/// `primary_status`, `mirror_status`, `primary_latency_seconds`, `mirror_latency_seconds`,
/// `diverged` (false for a matched pair kept for contrast), `difference_count`, `kinds` and
/// `differences` (the first three: `path`, `pattern`, `kind`, `primary`, `mirror`). Every value
/// was masked when stored. `diffs show ID --json` prints the whole record (docs/API.md).
#[derive(Args, Debug)]
#[command(
    after_help = "Fields of --json: id, run_id, time, pair, endpoint, correlation_id, method, uri, primary_status, mirror_status, primary_latency_seconds, mirror_latency_seconds, diverged, difference_count, kinds, differences[] (path, pattern, kind, primary, mirror). See docs/API.md."
)]
pub struct DiffsCmd {
    /// The store's database (default: `[store] path` of --config, else `parity.db`).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Configuration file, to find the store.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Only this pair.
    #[arg(long)]
    pub pair: Option<String>,
    /// Only this endpoint (e.g. `GET /api/users/{id}`).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Only records whose capture time is within this much of now (e.g. `1h`, `7d`).
    #[arg(long)]
    pub since: Option<Dur>,
    /// At most this many records (newest first; up to 1000).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Print a JSON array.
    #[arg(long)]
    pub json: bool,
    /// `show ID`: print one record side by side.
    #[command(subcommand)]
    pub show: Option<DiffsShow>,
}

/// `diffs show`.
#[derive(Subcommand, Debug)]
pub enum DiffsShow {
    /// Print the two responses of one record side by side, differences marked.
    Show {
        /// Record id.
        id: i64,
        /// Print the record as JSON instead.
        #[arg(long)]
        json: bool,
    },
}

/// `serve` arguments.
#[derive(Args, Debug)]
pub struct ServeCmd {
    /// The store's database.
    #[arg(long)]
    pub db: PathBuf,
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub listen: std::net::SocketAddr,
    /// Bearer token for /api/* (also PARITY_API_TOKEN); required off loopback.
    #[arg(long)]
    pub token: Option<String>,
}

/// A command's failure, with the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    /// Exit code.
    pub code: i32,
    /// Message for stderr.
    pub message: String,
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Failure {
        Failure {
            code: EXIT_ERROR,
            message: e.to_string(),
        }
    }
}

/// Load the configuration (or the defaults without a file).
pub fn load_config(path: Option<&PathBuf>) -> Result<Config, Failure> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None => Ok(Config::default()),
    }
}

/// The masker for a command: keyed from the install's key file when masking is on and the
/// command persists masked values (`persistent`: exchange records or a store), so equal values
/// keep equal tokens across runs; otherwise with a key that lives only for this run.
pub fn masker(cfg: &Config, unmasked: bool, persistent: bool) -> Result<Arc<Masker>, Failure> {
    if unmasked || !cfg.masking.enabled {
        if unmasked {
            tracing::warn!("masking is OFF (--unmasked): secrets in the traffic will appear in every output of this run");
        }
        return Ok(Arc::new(Masker::new(cfg, [0; 32], false)));
    }
    let key = if persistent {
        mask::load_or_create_key(&mask::key_path(cfg))?
    } else {
        mask::ephemeral_key()?
    };
    Ok(Arc::new(Masker::new(cfg, key, true)))
}

/// Open the exchange-record destination.
pub fn record_sink(
    path: Option<&str>,
    masker: &Arc<Masker>,
) -> Result<Option<RecordSink>, Failure> {
    let Some(p) = path else {
        return Ok(None);
    };
    let out: Box<dyn Write + Send> = if p == "-" {
        Box::new(std::io::stdout())
    } else {
        Box::new(std::fs::File::create(p).map_err(|e| Failure {
            code: EXIT_ERROR,
            message: format!("cannot create exchange records file {p}: {e}"),
        })?)
    };
    Ok(Some(RecordSink::new(out, masker.clone())))
}

/// Write a report to `path` (`-`: stdout).
pub fn write_report(path: &str, report: &crate::summary::Report) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(report)?;
    if path == "-" {
        println!("{text}");
        return Ok(());
    }
    std::fs::write(path, text + "\n").map_err(|e| Failure {
        code: EXIT_ERROR,
        message: format!("cannot write report {path}: {e}"),
    })
}

/// Apply `--fail-on-divergence`: the exit code for `report`.
pub fn gate_exit(out: &OutputArgs, report: &crate::summary::Report) -> i32 {
    let Some(rate) = out.fail_on_divergence else {
        return EXIT_OK;
    };
    let failures = crate::summary::gate(report, rate, out.max_unmatched);
    if failures.is_empty() {
        return EXIT_OK;
    }
    for f in &failures {
        eprintln!("gate: {f}");
    }
    EXIT_DIVERGED
}

/// Run `replay`.
pub fn cmd_replay(c: ReplayCmd) -> Result<i32, Failure> {
    let config = load_config(c.config.as_ref())?;
    let persistent = c.out.exchanges.is_some() || config.store.is_some();
    let masker = masker(&config, c.out.unmasked, persistent)?;
    let records = record_sink(c.out.exchanges.as_deref(), &masker)?;
    let label = format!(
        "replay {}",
        c.files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let store = crate::store::open_for(
        &config,
        masker.clone(),
        Arc::new(crate::metrics::Metrics::new()),
        crate::pipeline::QueuePolicy::Block,
        "replay",
        &label,
    )?;
    let store_path = config.store.as_ref().map(|s| s.path.clone());
    let outcome = crate::replay::replay(crate::replay::ReplayArgs {
        files: c.files,
        config,
        records,
        progress: !c.quiet,
        hook: store.as_ref().map(|s| s.hook()),
    })?;
    for (file, off) in &outcome.truncated {
        eprintln!(
            "warning: {} is truncated at byte {off} (a capture cut short?): everything before it was processed",
            file.display()
        );
    }
    eprint!("{}", outcome.render());
    let report = outcome
        .summary
        .lock()
        .map(|s| s.report())
        .map_err(|_| Failure::from("the summary is unavailable (a thread panicked)"))?;
    if let (Some(s), Some(path)) = (store, store_path) {
        s.save_report(&report);
        let counts = s.finish();
        let lost = counts.lost();
        eprintln!(
            "replay: stored {} diff records in {}{}",
            counts.stored(),
            path.display(),
            if lost > 0 {
                format!(
                    "; {lost} NOT stored ({})",
                    counts
                        .records
                        .iter()
                        .filter(|(k, v)| **v > 0 && !k.starts_with("stored"))
                        .map(|(k, v)| format!("{k} {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            } else {
                String::new()
            }
        );
    }
    if let Some(p) = &c.out.report {
        write_report(p, &report)?;
    }
    Ok(gate_exit(&c.out, &report))
}

/// Run `check-config`.
pub fn cmd_check_config(file: PathBuf) -> Result<i32, Failure> {
    let cfg = Config::load(&file)?;
    println!("{}: ok", file.display());
    println!(
        "  capture: engine {:?}, targets {}",
        cfg.capture.engine,
        cfg.capture
            .targets
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    for p in &cfg.pairs {
        println!(
            "  pair {:?}: primary {}, mirror {}, {} rule(s), header {:?}, window {}, sample {}",
            p.name,
            p.primary
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" "),
            p.mirror
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" "),
            p.rules.len(),
            p.correlation_header,
            p.match_timeout,
            p.sample
        );
    }
    println!(
        "  limits: {}",
        toml::to_string(&cfg.limits)
            .unwrap_or_default()
            .replace('\n', "; ")
    );
    Ok(EXIT_OK)
}

/// Parse the arguments, set up logging, run the command; returns the exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_ERROR } else { EXIT_OK };
            let _ = e.print();
            return code;
        }
    };
    crate::logging::init(&cli.log);
    let result = match cli.cmd {
        Command::Replay(c) => cmd_replay(c),
        Command::Run(c) => crate::run::cmd_run(c),
        Command::CheckConfig { file } => cmd_check_config(file),
        Command::Diffs(c) => crate::store::cmd_diffs(c),
        Command::Serve(c) => crate::server::cmd_serve(c),
    };
    match result {
        Ok(code) => code,
        Err(f) => {
            eprintln!("error: {}", f.message);
            f.code
        }
    }
}
