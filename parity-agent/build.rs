//! Build script: compiles parity's eBPF programs (the `parity-ebpf` crate, for the BPF target)
//! into `OUT_DIR/parity`, which `capture::ebpf` embeds, and the test fixture
//! `OUT_DIR/parity-testcount`.
//!
//! Only with the `ebpf` feature (the default): `--no-default-features` builds the offline
//! pipeline and the fuzzers without the eBPF toolchain (and without compiling this script's eBPF
//! dependencies). The toolchain (nightly with `rust-src`, `bpf-linker`) is checked first so a
//! missing piece fails with the fix, not with a linker error deep in a nested cargo.

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "ebpf")]
    ebpf::build()?;
    Ok(())
}

#[cfg(feature = "ebpf")]
mod ebpf {
    use std::env;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use anyhow::{anyhow, bail, Context as _};

    const EBPF_PACKAGE: &str = "parity-ebpf";
    const SETUP_HINT: &str =
        "run `cargo xtask setup` (or build without live capture: `--no-default-features`)";

    /// Check the toolchain, then build `parity-ebpf` into OUT_DIR.
    pub fn build() -> anyhow::Result<()> {
        check_toolchain()?;

        let metadata = cargo_metadata::MetadataCommand::new()
            .no_deps()
            .exec()
            .context("cargo metadata (to find the parity-ebpf crate)")?;
        let package = metadata
            .packages
            .iter()
            .find(|p| p.name.as_str() == EBPF_PACKAGE)
            .ok_or_else(|| anyhow!("the workspace has no `{EBPF_PACKAGE}` package"))?;
        let root_dir = package
            .manifest_path
            .parent()
            .ok_or_else(|| anyhow!("{} has no parent directory", package.manifest_path))?;
        // The record types the kernel side writes live in parity-common: rebuild when they
        // change.
        if let Some(common) = metadata
            .packages
            .iter()
            .find(|p| p.name.as_str() == "parity-common")
            .and_then(|p| p.manifest_path.parent())
        {
            println!("cargo:rerun-if-changed={common}");
        }

        // The nested cargo's progress lines would come back as one cargo warning each; errors
        // and compiler diagnostics still do.
        env::set_var("CARGO_TERM_QUIET", "true");
        aya_build::build_ebpf(
            [aya_build::Package {
                name: EBPF_PACKAGE,
                root_dir: root_dir.as_str(),
                ..Default::default()
            }],
            aya_build::Toolchain::default(),
        )
        .with_context(|| {
            format!(
                "building the eBPF programs failed; if the toolchain is incomplete, {SETUP_HINT}"
            )
        })
    }

    /// `bpf-linker` on PATH and the nightly toolchain with its `rust-src` component.
    fn check_toolchain() -> anyhow::Result<()> {
        println!("cargo:rerun-if-env-changed=PATH");
        let Some(linker) = find_on_path("bpf-linker") else {
            bail!("bpf-linker is not on PATH; parity's eBPF programs link with it: {SETUP_HINT}");
        };
        println!("cargo:rerun-if-changed={}", linker.display());

        // aya-build compiles with `rustup run nightly` when rustup exists, else with the current
        // toolchain; ask the same one for its sysroot.
        let mut rustc = if find_on_path("rustup").is_some() {
            let mut c = Command::new("rustup");
            c.args(["run", "nightly", "rustc"]);
            c
        } else {
            Command::new("rustc")
        };
        rustc
            .env_remove("RUSTC")
            .env_remove("RUSTC_WORKSPACE_WRAPPER");
        let output = rustc
            .args(["--print", "sysroot"])
            .output()
            .map_err(|e| anyhow!("cannot run the nightly rustc ({e}): {SETUP_HINT}"))?;
        if !output.status.success() {
            bail!(
                "the nightly toolchain is not installed ({}): {SETUP_HINT}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let sysroot = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        let core_src = sysroot.join("lib/rustlib/src/rust/library/core");
        if !core_src.is_dir() {
            bail!(
                "the nightly toolchain at {} lacks the `rust-src` component (needed for -Z build-std=core): {SETUP_HINT}",
                sysroot.display()
            );
        }
        Ok(())
    }

    fn find_on_path(program: &str) -> Option<PathBuf> {
        let path = env::var_os("PATH")?;
        env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|candidate| is_executable(candidate))
    }

    fn is_executable(path: &Path) -> bool {
        use std::os::unix::fs::PermissionsExt as _;
        path.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
}
