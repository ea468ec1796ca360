//! The comparator: two response bodies (JSON, text, binary, or sniffed) under tolerance rules.
//!
//! Input: byte 0 options (bit 0 strict number types, bits 1..2 and 3..4 the primary's and the
//! mirror's content type, bit 5 only the self-comparison, bit 6 representation headers,
//! bit 7 different status codes); then rules up to the first newline, `;`-separated, each an
//! action letter (`i`gnore, `u`nordered, `n`umeric relative, `N`umeric absolute, `p`resent), an
//! optional tolerance, `:` and a path; then the primary's body up to the first NUL byte; then the
//! mirror's. Rules go through the real configuration parser, so invalid ones are dropped as a
//! user's would be rejected.
//!
//! Oracles: no panic; an exchange compared with itself has no difference whatever the rules;
//! without rules, "no difference" is symmetric between primary and mirror.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use parity_agent::compare::Comparator;
use parity_agent::config::{Config, PairConfig};
use parity_agent::exchange::{Body, Exchange, Headers, Response, Version};
use parity_agent::stream::ConnId;

const TYPES: [Option<&str>; 4] = [
    Some("application/json; charset=utf-8"),
    Some("text/plain"),
    Some("application/octet-stream"),
    None,
];

fn pair(rules: &str, strict: bool, repr: bool) -> PairConfig {
    let mut toml = format!(
        "[[pair]]\nname = \"p\"\nprimary = \"127.0.0.1:1\"\nmirror = \"127.0.0.1:2\"\n\
         strict_number_types = {strict}\ncompare_representation_headers = {repr}\n"
    );
    for r in rules.split(';').filter(|r| !r.is_empty()) {
        let Some((head, path)) = r.split_once(':') else {
            continue;
        };
        let mut chars = head.chars();
        let (action, tol) = match chars.next() {
            Some('i') => ("ignore", None),
            Some('u') => ("unordered", None),
            Some('p') => ("present", None),
            Some('n') => ("numeric", Some("relative")),
            Some('N') => ("numeric", Some("absolute")),
            _ => continue,
        };
        let path = serde_json::to_string(path).unwrap_or_default();
        toml.push_str(&format!(
            "[[pair.rule]]\npath = {path}\naction = \"{action}\"\n"
        ));
        if let Some(key) = tol {
            let v: f64 = chars.as_str().parse().unwrap_or(0.5);
            toml.push_str(&format!("{key} = {v:?}\n"));
        }
    }
    let parsed = Config::parse(&toml, "fuzz.toml")
        .ok()
        .and_then(|mut c| c.pairs.pop());
    parsed.unwrap_or_else(|| {
        let fallback =
            "[[pair]]\nname = \"p\"\nprimary = \"127.0.0.1:1\"\nmirror = \"127.0.0.1:2\"\n";
        Config::parse(fallback, "fuzz.toml")
            .ok()
            .and_then(|mut c| c.pairs.pop())
            .unwrap_or_else(|| unreachable!("the fallback pair is valid"))
    })
}

fn exchange(status: u16, ct: Option<&str>, body: &[u8]) -> Exchange {
    let mut headers: Vec<(&str, &str)> = vec![("Server", "fuzz")];
    if let Some(ct) = ct {
        headers.push(("Content-Type", ct));
    }
    Exchange {
        conn: ConnId(1),
        trans_depth: 1,
        client: "10.0.0.1:40000".parse().unwrap(),
        server: "10.0.0.2:80".parse().unwrap(),
        request: None,
        response: Some(Response {
            status,
            reason: Bytes::from_static(b"OK"),
            version: Version::Http11,
            headers: Headers::from_pairs(&headers),
            body: Body::from_bytes(body.to_vec()),
        }),
        interim: Vec::new(),
        incomplete: None,
        anomalies: Vec::new(),
        request_start: None,
        request_end: None,
        response_start: None,
        response_end: None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&opts, rest)) = data.split_first() else {
        return;
    };
    let (rules, rest) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&[][..], rest),
    };
    let (pb, mb) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let rules = String::from_utf8_lossy(rules);
    let pair = pair(&rules, opts & 1 != 0, opts & 64 != 0);
    let c = Comparator::new(&pair);
    let p = exchange(200, TYPES[usize::from(opts >> 1) & 3], pb);
    let m_status = if opts & 128 != 0 { 500 } else { 200 };
    let m = exchange(m_status, TYPES[usize::from(opts >> 3) & 3], mb);

    let same = c.compare("GET /x", &p, &p);
    assert!(
        same.differences.is_empty(),
        "an exchange differs from itself: {:?}",
        same.differences
    );
    assert!(!same.diverged(), "an exchange diverges from itself");
    if opts & 32 != 0 {
        return;
    }
    let pm = c.compare("GET /x", &p, &m);
    let mp = c.compare("GET /x", &m, &p);
    if pair.rules.is_empty() {
        assert_eq!(
            pm.differences.is_empty(),
            mp.differences.is_empty(),
            "equality is not symmetric: {:?} vs {:?}",
            pm.differences,
            mp.differences
        );
    }
});
