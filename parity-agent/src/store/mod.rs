//! The diff store: diverged pairs (and a sample of matched ones), masked, in an embedded SQLite
//! database, with the summary report of each run; read by `diffs`, `/api/*` and the web view.
//!
//! Writing ([`StoreWriter`]) happens on a thread of its own behind a bounded queue, so a slow or
//! broken disk costs records (counted by reason), never capture or comparison. Everything stored
//! is masked first ([`record`]); the masking key is never stored. Reading ([`StoreReader`]) uses
//! its own `query_only` connection and works while a writer runs (WAL). Schema and migrations are
//! in [`schema`]; retention by age and size in [`writer`]. This is not an archive of all traffic:
//! matched pairs are counted in the summary, not stored, unless `keep_matched` samples them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cli::{DiffsCmd, DiffsShow, Failure, EXIT_ERROR, EXIT_OK};
use crate::config::Config;
use crate::mask::Masker;
use crate::metrics::Metrics;
use crate::pipeline::QueuePolicy;

pub mod reader;
pub mod record;
pub mod render;
pub mod schema;
pub mod writer;

pub use reader::{EndpointCount, RecordQuery, RunInfo, StoreInfo, StoreReader, MAX_LIMIT};
pub use record::{DiffRecord, DifferenceView, ExchangeView, FieldCount, RecordSummary};
pub use writer::{StoreCounts, StoreOptions, StoreWriter};

/// What went wrong with a store, naming the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened.
    #[error("diff store {path}: cannot open it: {source} (check that its directory is writable, or change [store] path / --db)")]
    Open {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// A file-system operation failed.
    #[error("diff store {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file does not exist (reading only).
    #[error("diff store {path} does not exist: write one with `parity-agent replay --config FILE` (or `run`) and a [store] section, or pass --db")]
    Missing {
        /// The database file.
        path: PathBuf,
    },
    /// Written by a newer parity.
    #[error("diff store {path} has schema version {found}, newer than this parity-agent knows ({known}): upgrade parity-agent, or point [store] path / --db at another file")]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Its version.
        found: i64,
        /// The newest version this build knows.
        known: i64,
    },
    /// Not a parity database.
    #[error("{path} is not a parity diff store (it has tables but no parity schema version): point [store] path / --db at another file")]
    NotParity {
        /// The file.
        path: PathBuf,
    },
    /// A migration step failed (the file stays at its previous version).
    #[error("diff store {path}: migrating to schema version {to} failed: {source} (the file is unchanged; is it read-only, or the disk full?)")]
    Migrate {
        /// The database file.
        path: PathBuf,
        /// The version the step makes.
        to: i64,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// A query failed.
    #[error("diff store {path}: {source}")]
    Sql {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// Stored data that cannot be read back.
    #[error("diff store {path}: {what}")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What is unreadable.
        what: String,
    },
    /// A thread panicked while holding the connection.
    #[error("diff store {path}: the connection is unusable after a panic; restart parity-agent")]
    Poisoned {
        /// The database file.
        path: PathBuf,
    },
}

/// Open the store of `cfg` for a `replay` or `run`, if `[store]` is configured. `label` says
/// what the run processes (shown in `/api/store`).
pub fn open_for(
    cfg: &Config,
    masker: Arc<Masker>,
    metrics: Arc<Metrics>,
    policy: QueuePolicy,
    command: &str,
    label: &str,
) -> Result<Option<StoreWriter>, StoreError> {
    let Some(s) = &cfg.store else {
        return Ok(None);
    };
    let opts = StoreOptions::from_config(s, &cfg.limits, policy, command, label);
    StoreWriter::open(opts, masker, metrics).map(Some)
}

/// The database `diffs` reads: `--db`, else `[store] path` of `--config`, else `parity.db`.
fn diffs_db(c: &DiffsCmd) -> Result<PathBuf, Failure> {
    if let Some(p) = &c.db {
        return Ok(p.clone());
    }
    if let Some(cfg) = &c.config {
        let config = Config::load(cfg)?;
        return config.store.map(|s| s.path).ok_or_else(|| Failure {
            code: EXIT_ERROR,
            message: format!("{} has no [store] section: pass --db PATH", cfg.display()),
        });
    }
    Ok(PathBuf::from("parity.db"))
}

/// Colour on a terminal, unless `NO_COLOR` is set to something.
fn use_colour() -> bool {
    use std::io::IsTerminal;
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Columns to render in: `COLUMNS`, else the terminal's width, else 160.
fn output_width() -> usize {
    if let Some(w) = std::env::var("COLUMNS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        return w.clamp(60, 1000);
    }
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the pointer, which is valid for the call.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col >= 60 {
        usize::from(ws.ws_col)
    } else {
        160
    }
}

/// Write `text` to stdout; a closed pipe (`| head`) is not an error.
fn emit(text: &str) -> Result<(), Failure> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Failure::from(format!("writing to standard output: {e}")))
        }
        _ => Ok(()),
    }
}

fn now_ns() -> i64 {
    (writer::system_clock())()
}

/// `parity-agent diffs`: list records, or show one.
pub fn cmd_diffs(c: DiffsCmd) -> Result<i32, Failure> {
    let db = diffs_db(&c)?;
    let reader = StoreReader::open(&db)?;
    if let Some(DiffsShow::Show { id, json }) = c.show {
        let Some(rec) = reader.get(id)? else {
            return Err(Failure {
                code: EXIT_ERROR,
                message: format!(
                    "no record {id} in {} (list them with `parity-agent diffs --db {}`)",
                    db.display(),
                    db.display()
                ),
            });
        };
        if json || c.json {
            emit(&(serde_json::to_string_pretty(&rec)? + "\n"))?;
        } else {
            emit(&render::render_show(&rec, output_width(), use_colour()))?;
        }
        return Ok(EXIT_OK);
    }
    if c.limit > MAX_LIMIT {
        eprintln!("note: --limit is capped at {MAX_LIMIT}; narrow the list with --pair, --endpoint or --since");
    }
    let q = RecordQuery {
        pair: c.pair.clone(),
        endpoint: c.endpoint.clone(),
        since_ns: c
            .since
            .map(|d| now_ns().saturating_sub(i64::try_from(d.as_nanos_u64()).unwrap_or(i64::MAX))),
        limit: c.limit.clamp(1, MAX_LIMIT),
        ..RecordQuery::default()
    };
    let list = reader.list(&q)?;
    if c.json {
        emit(&(serde_json::to_string_pretty(&list)? + "\n"))?;
    } else if list.is_empty() {
        eprintln!("no records in {} match", db.display());
    } else {
        emit(&render::render_list(&list, use_colour()))?;
    }
    Ok(EXIT_OK)
}

/// `path` with its WAL, for callers that measure the store on disk.
pub fn files_size(path: &Path) -> u64 {
    writer::files_size(path)
}

#[cfg(test)]
mod tests;
