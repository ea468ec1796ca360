//! `cargo xtask bench`: benchmarks measured against a peer in the same run.

use anyhow::{bail, Result};

/// Run the named benchmarks (all when empty).
pub fn run(_names: &[String], _quick: bool) -> Result<()> {
    bail!("benchmarks are not written yet")
}
