//! The diff store (interim: being written on its own branch).

use std::path::Path;
use std::sync::Arc;

use crate::cli::{DiffsCmd, Failure};
use crate::config::Config;
use crate::mask::Masker;
use crate::pipeline::VerdictHook;

/// Writes diff records.
pub struct StoreWriter;

impl StoreWriter {
    /// The verdict hook.
    pub fn hook(&self) -> VerdictHook {
        Box::new(|_, _, _| {})
    }
    /// The read side.
    pub fn reader(&self) -> StoreReader {
        StoreReader
    }
    /// Flush and stop.
    pub fn finish(self) {}
}

/// Reads diff records.
#[derive(Clone)]
pub struct StoreReader;

impl StoreReader {
    /// Open a database.
    pub fn open(_p: &Path) -> Result<StoreReader, Failure> {
        Err(Failure::from(
            "the diff store is not available in this build",
        ))
    }
    /// The stored summary.
    pub fn summary(&self) -> Result<serde_json::Value, String> {
        Err("the diff store is not available in this build".into())
    }
}

/// Open the store of `cfg`, if it has one.
pub fn open_for(cfg: &Config, _m: Arc<Masker>) -> Result<Option<StoreWriter>, Failure> {
    if cfg.store.is_some() {
        return Err(Failure::from(
            "the diff store is not available in this build",
        ));
    }
    Ok(None)
}

/// `parity-agent diffs`.
pub fn cmd_diffs(_c: DiffsCmd) -> Result<i32, Failure> {
    Err(Failure::from(
        "the diff store is not available in this build",
    ))
}
