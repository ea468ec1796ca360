//! JSON path patterns: parsing, matching and formatting concrete locations.
//!
//! Input: a pattern, a newline, then a concrete location as steps separated by `\u{1}` (a step
//! `#n` is array index `n`, anything else a member name).
//!
//! Oracles: no panic; a parsed pattern keeps its text; a pattern that matches a location may
//! match below it and below every prefix of it; a location formatted by `format_location`
//! parses back to exactly its own literal steps and matches itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use parity_agent::compare::path::{format_location, JsonPath, Segment, Step};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (pattern, location) = text.split_once('\n').unwrap_or((text, ""));
    let steps: Vec<Step> = if location.is_empty() {
        Vec::new()
    } else {
        location
            .split('\u{1}')
            .map(|s| match s.strip_prefix('#').and_then(|n| n.parse().ok()) {
                Some(i) => Step::Index(i),
                None => Step::Key(s.to_string()),
            })
            .collect()
    };
    if let Ok(p) = JsonPath::parse(pattern) {
        assert_eq!(p.as_str(), pattern);
        assert_eq!(p.to_string(), pattern);
        let _ = p.specificity();
        if p.matches(&steps) {
            for n in 0..=steps.len() {
                assert!(
                    p.may_match_below(&steps[..n]),
                    "{pattern} matches {steps:?} but not below {n} steps"
                );
            }
        }
    }
    let formatted = format_location(&steps);
    let p = JsonPath::parse(&formatted)
        .unwrap_or_else(|e| panic!("format_location gave an unparseable path {formatted:?}: {e}"));
    let want: Vec<Segment> = steps
        .iter()
        .map(|s| match s {
            Step::Key(k) => Segment::Key(k.clone()),
            Step::Index(i) => Segment::Index(*i),
        })
        .collect();
    assert_eq!(
        p.segments(),
        &want[..],
        "{formatted:?} does not parse back to its steps"
    );
    assert!(
        p.matches(&steps),
        "{formatted:?} does not match its own location"
    );
});
