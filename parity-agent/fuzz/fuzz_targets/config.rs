//! Configuration parsing: arbitrary text through `Config::parse`, and every valid configuration
//! through the constructors that compile it (comparators, endpoint namer, masker, stage bounds).
//!
//! Oracles: no panic; a valid configuration's rule paths re-parse to themselves and its rules
//! are ordered most specific first (ties in file order), as `PairConfig::rules` promises.
#![no_main]

use libfuzzer_sys::fuzz_target;
use parity_agent::compare::path::JsonPath;
use parity_agent::compare::{Comparator, EndpointNamer};
use parity_agent::config::Config;
use parity_agent::http::HttpConfig;
use parity_agent::mask::Masker;
use parity_agent::reassembly::ReassemblyConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = Config::parse(text, "fuzz.toml") else {
        return;
    };
    let _ = ReassemblyConfig::from_limits(&cfg.limits);
    let _ = HttpConfig::from_limits(&cfg.limits);
    if !cfg.masks.is_empty() {
        // The built-in patterns are the same every time; only user rules are worth compiling.
        let _ = Masker::new(&cfg, [7; 32], true);
    }
    for pair in &cfg.pairs {
        let _ = Comparator::new(pair);
        let mut namer = EndpointNamer::new(&pair.endpoints, pair.max_endpoints);
        for (m, u) in [
            ("GET", "/"),
            ("POST", "/api/v1/users/42/cart?x=1"),
            ("GET", "/a/b/c/d"),
        ] {
            let _ = namer.name(m, u);
        }
        for r in &pair.rules {
            assert_eq!(
                JsonPath::parse(r.path.as_str()).as_ref(),
                Ok(&r.path),
                "rule path re-parses"
            );
        }
        for w in pair.rules.windows(2) {
            let (a, b) = (&w[0], &w[1]);
            assert!(
                (a.path.specificity(), a.order) <= (b.path.specificity(), b.order),
                "rules not ordered by specificity: {} before {}",
                a.path,
                b.path
            );
        }
    }
});
