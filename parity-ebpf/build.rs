//! Fails early, with the fix, when the BPF linker is missing (the eBPF target links with it).

fn main() {
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(err) => {
            eprintln!(
                "error: bpf-linker not found ({err}); parity's eBPF programs need it: run `cargo xtask setup`"
            );
            std::process::exit(1);
        }
    }
}
