//! The `parity-agent` binary: a thin layer over the library's command line.

fn main() {
    std::process::exit(parity_agent::cli::main());
}
