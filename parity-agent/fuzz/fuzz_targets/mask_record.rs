//! Masking and exchange records: arbitrary exchange fields and free text through the masker and
//! the JSONL record writer.
//!
//! Oracles:
//! * every record (masked or not) is one line of valid JSON naming the exchange's connection;
//! * with the default rules, nothing that leaves a masker is still sensitive: masked text, each
//!   component of a masked request target (path segments, query names and values), masked JSON
//!   string and number values, header values a masker let through, and the header values and
//!   target of a masked record;
//! * a [`CleanCache`] changes nothing: header values masked through it are masked as without
//!   it, and a record written again with the cache warmed by the first write is identical.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use parity_agent::config::Config;
use parity_agent::exchange::{
    Anomaly, Body, Exchange, Headers, IncompleteReason, Request, Response, Version,
};
use parity_agent::mask::{CleanCache, Masker, TOKEN_PREFIX};
use parity_agent::record::{write_record, write_record_masked};
use parity_agent::segment::Nanos;
use parity_agent::stream::ConnId;

/// Scalar fields, from the first NUL-separated part.
#[derive(Arbitrary, Debug, Default)]
struct Opts {
    status: u16,
    has_request: bool,
    has_response: bool,
    v6: bool,
    port: u16,
    conn: u64,
    depth: u32,
    times: [Option<u64>; 4],
    anomalies: Vec<u8>,
    incomplete: Option<u8>,
    interim: Vec<u16>,
}

/// The input: NUL-separated parts: options (bytes for [`Opts`]), free text, request target,
/// JSON document, method, reason phrase, request headers and response headers (`name: value`
/// lines), masking rules (lines `h=`, `j=`, `q=` or `r=` then a header name, JSON path, query
/// parameter or regular expression).
struct Input {
    opts: Opts,
    text: String,
    uri: Vec<u8>,
    json: String,
    method: Vec<u8>,
    reason: Vec<u8>,
    req_headers: Vec<(Vec<u8>, Vec<u8>)>,
    resp_headers: Vec<(Vec<u8>, Vec<u8>)>,
    masks: Vec<(u8, String)>,
}

fn headers(b: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    b.split(|&c| c == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| match l.iter().position(|&c| c == b':') {
            Some(i) => (
                l[..i].to_vec(),
                l[i + 1..]
                    .strip_prefix(b" ")
                    .unwrap_or(&l[i + 1..])
                    .to_vec(),
            ),
            None => (l.to_vec(), Vec::new()),
        })
        .collect()
}

impl Input {
    fn decode(data: &[u8]) -> Input {
        let mut parts = data.split(|&b| b == 0);
        let mut next = || parts.next().unwrap_or(&[]);
        let opts = Opts::arbitrary(&mut arbitrary::Unstructured::new(next())).unwrap_or_default();
        let text = String::from_utf8_lossy(next()).into_owned();
        let uri = next().to_vec();
        let json = String::from_utf8_lossy(next()).into_owned();
        let method = next().to_vec();
        let reason = next().to_vec();
        let req_headers = headers(next());
        let resp_headers = headers(next());
        let masks = String::from_utf8_lossy(next())
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once('=')?;
                let kind = match k {
                    "h" => 0,
                    "j" => 1,
                    "q" => 2,
                    "r" => 3,
                    _ => return None,
                };
                Some((kind, v.to_string()))
            })
            .collect();
        Input {
            opts,
            text,
            uri,
            json,
            method,
            reason,
            req_headers,
            resp_headers,
            masks,
        }
    }
}

/// The pieces of a request target a masker judges one by one.
fn uri_parts(uri: &str) -> Vec<&str> {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let mut parts: Vec<&str> = path.split('/').collect();
    for kv in query.split('&') {
        match kv.split_once('=') {
            Some((k, v)) => parts.extend([k, v]),
            None => parts.push(kv),
        }
    }
    parts
}

fn assert_clean(m: &Masker, what: &str, v: &str) {
    if v.starts_with(TOKEN_PREFIX) {
        return;
    }
    assert!(!m.value_is_sensitive(v), "{what} left sensitive: {v:?}");
}

fn check_json(m: &Masker, v: &serde_json::Value) {
    match v {
        serde_json::Value::String(s) => assert_clean(m, "JSON string", s),
        serde_json::Value::Number(n) => assert_clean(m, "JSON number", &n.to_string()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| check_json(m, x)),
        serde_json::Value::Object(o) => o.values().for_each(|x| check_json(m, x)),
        _ => {}
    }
}

fn check_record(out: &[u8], conn: u64) -> serde_json::Value {
    assert_eq!(out.last(), Some(&b'\n'), "a record ends with a newline");
    assert_eq!(
        out.iter().filter(|&&b| b == b'\n').count(),
        1,
        "a record is one line"
    );
    let v: serde_json::Value = serde_json::from_slice(out)
        .unwrap_or_else(|e| panic!("record is not JSON ({e}): {}", String::from_utf8_lossy(out)));
    assert_eq!(v["conn_id"].as_u64(), Some(conn), "conn_id");
    v
}

fn mask_config(masks: &[(u8, String)]) -> Config {
    let mut toml = String::new();
    for (kind, value) in masks.iter().take(4) {
        let key = ["header", "json_path", "query_param", "regex"][usize::from(kind & 3)];
        let value = serde_json::to_string(value).unwrap_or_default();
        toml.push_str(&format!("[[mask]]\n{key} = {value}\n"));
    }
    Config::parse(&toml, "fuzz.toml").unwrap_or_default()
}

fuzz_target!(|data: &[u8]| {
    let input = Input::decode(data);
    let o = &input.opts;
    // Compiling the built-in patterns costs far more than masking: once per process.
    static DEFAULTS: OnceLock<Masker> = OnceLock::new();
    let defaults = DEFAULTS.get_or_init(|| Masker::new(&Config::default(), [1; 32], true));
    let custom_owned;
    let custom = if input.masks.is_empty() {
        defaults
    } else {
        custom_owned = Masker::new(&mask_config(&input.masks), [2; 32], true);
        &custom_owned
    };

    // Free text, targets, JSON and header values through the default rules.
    let t = defaults.mask_text(&input.text);
    assert_clean(defaults, "masked text", &t);
    let _ = custom.mask_text(&input.text);
    let uri = String::from_utf8_lossy(&input.uri);
    let masked_uri = defaults.mask_uri(&uri);
    for part in uri_parts(&masked_uri) {
        assert_clean(defaults, "request target component", part);
    }
    match defaults.mask_uri_bytes(&input.uri) {
        Some(m) => assert_eq!(m, masked_uri, "mask_uri_bytes and mask_uri agree"),
        None => assert_eq!(
            masked_uri, uri,
            "mask_uri_bytes skipped a target mask_uri masks"
        ),
    }
    let _ = custom.mask_uri(&uri);
    if let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&input.json) {
        let mut w = v.clone();
        defaults.mask_json(&mut v);
        check_json(defaults, &v);
        custom.mask_json(&mut w);
    }
    let _ = defaults.mask_body(Some("application/json"), input.json.as_bytes());
    let _ = custom.mask_body(None, &input.uri);
    let mut header_cache = CleanCache::default();
    for (n, v) in input.req_headers.iter().chain(&input.resp_headers) {
        let masked = defaults.mask_header_bytes(n, v);
        assert_eq!(
            defaults.mask_header_cached(n, v, &mut header_cache),
            masked,
            "the clean-value cache changed how a header value is masked"
        );
        if masked.is_none() {
            assert_clean(
                defaults,
                "header value let through",
                &String::from_utf8_lossy(v),
            );
        }
        let _ = custom.mask_header_bytes(n, v);
    }

    // Records.
    let ip = |last: u8| -> std::net::IpAddr {
        if o.v6 {
            std::net::IpAddr::from([0xfd00, 0, 0, 0, 0, 0, 0, u16::from(last)])
        } else {
            std::net::IpAddr::from([10, 0, 0, last])
        }
    };
    let ex = Exchange {
        conn: ConnId(o.conn),
        trans_depth: o.depth,
        client: std::net::SocketAddr::new(ip(1), o.port),
        server: std::net::SocketAddr::new(ip(2), 80),
        request: o.has_request.then(|| Request {
            method: Bytes::from(input.method.clone()),
            uri: Bytes::from(input.uri.clone()),
            version: Version::Http11,
            headers: Headers::from_pairs(&input.req_headers),
            body: Body::from_bytes(input.text.clone().into_bytes()),
        }),
        response: o.has_response.then(|| Response {
            status: o.status,
            reason: Bytes::from(input.reason.clone()),
            version: Version::Http10,
            headers: Headers::from_pairs(&input.resp_headers),
            body: Body::empty(),
        }),
        interim: o.interim.clone(),
        incomplete: o
            .incomplete
            .map(|i| IncompleteReason::ALL[usize::from(i) % IncompleteReason::ALL.len()]),
        anomalies: o
            .anomalies
            .iter()
            .map(|&a| Anomaly::ALL[usize::from(a) % Anomaly::ALL.len()])
            .collect(),
        request_start: o.times[0].map(Nanos),
        request_end: o.times[1].map(Nanos),
        response_start: o.times[2].map(Nanos),
        response_end: o.times[3].map(Nanos),
    };
    let mut out = Vec::new();
    write_record(&ex, &mut out);
    check_record(&out, o.conn);
    out.clear();
    let mut custom_cache = CleanCache::default();
    write_record_masked(&ex, Some(custom), &mut custom_cache, &mut out);
    check_record(&out, o.conn);
    out.clear();
    let mut defaults_cache = CleanCache::default();
    write_record_masked(&ex, Some(defaults), &mut defaults_cache, &mut out);
    let v = check_record(&out, o.conn);
    // Again with the cache holding every value the first write found clean.
    let mut again = Vec::new();
    write_record_masked(&ex, Some(defaults), &mut defaults_cache, &mut again);
    assert_eq!(
        String::from_utf8_lossy(&again),
        String::from_utf8_lossy(&out),
        "a warm clean-value cache changed the masked record"
    );
    for side in ["request", "response"] {
        if let Some(hs) = v[side]["headers"].as_array() {
            for h in hs {
                if let Some(value) = h.get(1).and_then(|x| x.as_str()) {
                    assert_clean(defaults, "record header value", value);
                }
            }
        }
    }
    if let Some(u) = v["request"]["uri"].as_str() {
        for part in uri_parts(u) {
            assert_clean(defaults, "record target component", part);
        }
    }
});
