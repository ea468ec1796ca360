//! Exchange records: one JSON object per line per [`Exchange`], the `--exchanges` JSONL output.
//!
//! The JSON is written by hand into a caller-owned buffer (no serde, no per-record allocation
//! beyond the buffer's growth) because records are written for every exchange on the replay
//! hot path. The field set is a contract, documented on [`write_record`]. Text that is not
//! UTF-8 (header values, targets, reasons) is written with U+FFFD replacements and the record's
//! `lossy_utf8` is `true`. This module only formats; where records go is the caller's business.

use std::io::Write;
use std::net::SocketAddr;

use crate::exchange::{Body, Exchange, Headers, Request, Response};
use crate::mask::{CleanCache, Masker};
use crate::segment::Nanos;

/// Appends one JSON object describing `ex`, followed by `\n`, to `out`.
///
/// Fields, in order:
/// * `conn_id` (number), `trans_depth` (number, 1-based in the connection),
/// * `flow`: `{"client": "ip:port", "server": "ip:port"}` (IPv6 as `[addr]:port`),
/// * `request`: `{"method", "uri", "version", "host" (string or null), "headers" ([name, value]
///   pairs in wire order), "body_len", "body_sha256" (lower hex)}` or `null`,
/// * `response`: `{"status", "reason", "version", "headers", "body_len", "body_sha256"}` or `null`,
/// * `interim`: the 1xx codes seen before the final response,
/// * `complete` (bool), `incomplete_reason` (`null` or an `IncompleteReason` name),
/// * `anomalies`: anomaly names, `[]` when none,
/// * `request_start`, `request_end`, `response_start`, `response_end`: Unix epoch seconds with
///   microsecond precision, or `null`,
/// * `lossy_utf8`: some text field held bytes that are not UTF-8 and was written lossily.
///
/// `body_len` is the decoded length (after transfer and content decoding) and `body_sha256`
/// the SHA-256 of those decoded bytes.
pub fn write_record(ex: &Exchange, out: &mut Vec<u8>) {
    write_record_masked(ex, None, &mut CleanCache::default(), out)
}

/// [`write_record`] with header values and the request target passed through `masker`
/// (when given and active): a masked value is replaced whole by its token. Values are checked
/// in place, so an exchange with nothing to mask costs no allocation; `cache` remembers
/// header values already found clean (keep one per writer and masker).
pub fn write_record_masked(
    ex: &Exchange,
    masker: Option<&Masker>,
    cache: &mut CleanCache,
    out: &mut Vec<u8>,
) {
    let mut masker = masker.filter(|m| m.is_active()).map(|m| (m, cache));
    out.reserve(2048);
    let mut lossy = false;
    out.extend_from_slice(b"{\"conn_id\":");
    push_u64(out, ex.conn.0);
    out.extend_from_slice(b",\"trans_depth\":");
    push_u64(out, u64::from(ex.trans_depth));
    out.extend_from_slice(b",\"flow\":{\"client\":\"");
    push_addr(out, ex.client);
    out.extend_from_slice(b"\",\"server\":\"");
    push_addr(out, ex.server);
    out.extend_from_slice(b"\"},\"request\":");
    match &ex.request {
        Some(r) => lossy |= push_request(out, r, &mut masker),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"response\":");
    match &ex.response {
        Some(r) => lossy |= push_response(out, r, &mut masker),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"interim\":[");
    for (i, code) in ex.interim.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_u64(out, u64::from(*code));
    }
    out.extend_from_slice(b"],\"complete\":");
    out.extend_from_slice(if ex.complete() { b"true" } else { b"false" });
    out.extend_from_slice(b",\"incomplete_reason\":");
    match ex.incomplete {
        Some(r) => {
            out.push(b'"');
            out.extend_from_slice(r.as_str().as_bytes());
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"anomalies\":[");
    for (i, a) in ex.anomalies.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(a.as_str().as_bytes());
        out.push(b'"');
    }
    out.extend_from_slice(b"],\"request_start\":");
    push_ts(out, ex.request_start);
    out.extend_from_slice(b",\"request_end\":");
    push_ts(out, ex.request_end);
    out.extend_from_slice(b",\"response_start\":");
    push_ts(out, ex.response_start);
    out.extend_from_slice(b",\"response_end\":");
    push_ts(out, ex.response_end);
    out.extend_from_slice(b",\"lossy_utf8\":");
    out.extend_from_slice(if lossy { b"true" } else { b"false" });
    out.extend_from_slice(b"}\n");
}

/// The masker of a record being written, with its cache of clean values.
type MaskCtx<'a> = Option<(&'a Masker, &'a mut CleanCache)>;

fn push_request(out: &mut Vec<u8>, r: &Request, masker: &mut MaskCtx<'_>) -> bool {
    let mut lossy = false;
    out.extend_from_slice(b"{\"method\":");
    lossy |= push_str(out, &r.method);
    out.extend_from_slice(b",\"uri\":");
    match masker.as_ref().and_then(|(m, _)| m.mask_uri_bytes(&r.uri)) {
        Some(masked) => lossy |= push_str(out, masked.as_bytes()),
        None => lossy |= push_str(out, &r.uri),
    }
    out.extend_from_slice(b",\"version\":\"");
    out.extend_from_slice(r.version.as_str().as_bytes());
    out.extend_from_slice(b"\",\"host\":");
    match r.headers.get("host") {
        Some(h) => lossy |= push_value(out, b"host", h, masker),
        None => out.extend_from_slice(b"null"),
    }
    lossy |= push_headers_and_body(out, &r.headers, &r.body, masker);
    lossy
}

/// A header value, masked when `masker` says so.
fn push_value(out: &mut Vec<u8>, name: &[u8], value: &[u8], masker: &mut MaskCtx<'_>) -> bool {
    let masked = match masker {
        Some((m, cache)) => m.mask_header_cached(name, value, cache),
        None => None,
    };
    match masked {
        Some(token) => push_str(out, token.as_bytes()),
        None => push_str(out, value),
    }
}

fn push_response(out: &mut Vec<u8>, r: &Response, masker: &mut MaskCtx<'_>) -> bool {
    let mut lossy = false;
    out.extend_from_slice(b"{\"status\":");
    push_u64(out, u64::from(r.status));
    out.extend_from_slice(b",\"reason\":");
    lossy |= push_str(out, &r.reason);
    out.extend_from_slice(b",\"version\":\"");
    out.extend_from_slice(r.version.as_str().as_bytes());
    out.push(b'"');
    lossy |= push_headers_and_body(out, &r.headers, &r.body, masker);
    lossy
}

/// `,"headers":[...],"body_len":N,"body_sha256":"..."}` closing the message object.
fn push_headers_and_body(
    out: &mut Vec<u8>,
    headers: &Headers,
    body: &Body,
    masker: &mut MaskCtx<'_>,
) -> bool {
    let mut lossy = false;
    out.extend_from_slice(b",\"headers\":[");
    for (i, (name, value)) in headers.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'[');
        lossy |= push_str(out, name);
        out.push(b',');
        lossy |= push_value(out, name, value, masker);
        out.push(b']');
    }
    out.extend_from_slice(b"],\"body_len\":");
    push_u64(out, body.len);
    out.extend_from_slice(b",\"body_sha256\":\"");
    push_hex(out, &body.sha256);
    out.extend_from_slice(b"\"}");
    lossy
}

/// Bytes that must be escaped inside a JSON string.
static NEEDS_ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// Appends `s` as a JSON string; returns `true` when it was not UTF-8 and was written lossily.
fn push_str(out: &mut Vec<u8>, s: &[u8]) -> bool {
    out.push(b'"');
    // ASCII (the common case) needs no UTF-8 validation: the escape scan proves it in passing.
    let lossy = if escape_ascii_into(out, s) {
        false
    } else {
        match std::str::from_utf8(s) {
            Ok(_) => {
                escape_into(out, s);
                false
            }
            Err(_) => {
                escape_into(out, String::from_utf8_lossy(s).as_bytes());
                true
            }
        }
    };
    out.push(b'"');
    lossy
}

/// Escapes `s` into `out` if it is all ASCII and returns `true`; otherwise leaves `out`
/// untouched and returns `false`.
fn escape_ascii_into(out: &mut Vec<u8>, s: &[u8]) -> bool {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    let mut all_clean = true;
    while i + 8 <= s.len() {
        let mut w = [0u8; 8];
        w.copy_from_slice(&s[i..i + 8]);
        let x = u64::from_le_bytes(w);
        if x & HIGH != 0 {
            return false;
        }
        all_clean &= clean_word(&s[i..i + 8]);
        i += 8;
    }
    for &b in &s[i..] {
        if b >= 0x80 {
            return false;
        }
        all_clean &= !NEEDS_ESCAPE[usize::from(b)];
    }
    if all_clean {
        out.extend_from_slice(s);
    } else {
        escape_into(out, s);
    }
    true
}

/// Eight bytes of which none needs escaping (no control byte, `"` or `\\`).
fn clean_word(chunk: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut w = [0u8; 8];
    w.copy_from_slice(chunk);
    let x = u64::from_le_bytes(w);
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    // Bytes below 0x20 (exact for the high bit clear; bytes >= 0x80 never match).
    let below_space = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
    below_space | has_zero(x ^ (ONES * u64::from(b'"'))) | has_zero(x ^ (ONES * u64::from(b'\\')))
        == 0
}

fn escape_into(out: &mut Vec<u8>, s: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut start = 0;
    let mut i = 0;
    while i < s.len() {
        // Skip clean runs a word at a time; examine bytes one by one only near an escape.
        if i + 8 <= s.len() && clean_word(&s[i..i + 8]) {
            i += 8;
            continue;
        }
        let b = s[i];
        if !NEEDS_ESCAPE[b as usize] {
            i += 1;
            continue;
        }
        out.extend_from_slice(&s[start..i]);
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]),
        }
        i += 1;
        start = i;
    }
    out.extend_from_slice(&s[start..]);
}

fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    while n >= 100 {
        let d = usize::try_from(n % 100).unwrap_or(0) * 2;
        n /= 100;
        i -= 2;
        buf[i] = PAIRS[d];
        buf[i + 1] = PAIRS[d + 1];
    }
    if n >= 10 {
        let d = usize::try_from(n).unwrap_or(0) * 2;
        i -= 2;
        buf[i] = PAIRS[d];
        buf[i + 1] = PAIRS[d + 1];
    } else {
        i -= 1;
        buf[i] = b'0' + n as u8;
    }
    out.extend_from_slice(&buf[i..]);
}

/// Seconds since the epoch with six decimals, or `null`.
fn push_ts(out: &mut Vec<u8>, ts: Option<Nanos>) {
    let Some(Nanos(ns)) = ts else {
        out.extend_from_slice(b"null");
        return;
    };
    push_u64(out, ns / 1_000_000_000);
    out.push(b'.');
    let micros = (ns % 1_000_000_000) / 1_000;
    let mut digits = [b'0'; 6];
    let mut m = micros;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (m % 10) as u8;
        m /= 10;
    }
    out.extend_from_slice(&digits);
}

fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 0xf)]);
    }
}

fn push_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(a) => {
            for (i, octet) in a.ip().octets().iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_u64(out, u64::from(*octet));
            }
            out.push(b':');
            push_u64(out, u64::from(a.port()));
        }
        SocketAddr::V6(a) => {
            // Display of an IPv6 socket address is already `[addr]:port`; writing to a Vec
            // cannot fail.
            let _ = write!(out, "{a}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::{Anomaly, Body, IncompleteReason, Version};
    use crate::stream::ConnId;
    use bytes::Bytes;
    use serde_json::Value;

    fn exchange() -> Exchange {
        Exchange {
            conn: ConnId(7),
            trans_depth: 2,
            client: "10.0.0.1:43210".parse().expect("addr"),
            server: "[2001:db8::1]:8080".parse().expect("addr"),
            request: Some(Request {
                method: Bytes::from_static(b"POST"),
                uri: Bytes::from_static(b"/a?q=\"x\"&b=\\"),
                version: Version::Http11,
                headers: Headers::from_pairs(&[
                    ("Host", &b"example.com"[..]),
                    ("X-Ctl", b"a\x01b\tc\nd\re\x7f"),
                    ("X-Bin", b"ok\xff\xfe"),
                ]),
                body: Body::from_bytes(&b"hello"[..]),
            }),
            response: Some(Response {
                status: 200,
                reason: Bytes::from_static(b"OK"),
                version: Version::Http10,
                headers: Headers::from_pairs(&[("Content-Length", "0")]),
                body: Body::empty(),
            }),
            interim: vec![100, 103],
            incomplete: Some(IncompleteReason::Gap),
            anomalies: vec![Anomaly::BareLf, Anomaly::Resync],
            request_start: Some(Nanos(1_700_000_000_123_456_789)),
            request_end: Some(Nanos(5_000)),
            response_start: None,
            response_end: Some(Nanos(0)),
        }
    }

    fn parse(ex: &Exchange) -> Value {
        let mut out = Vec::new();
        write_record(ex, &mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
        serde_json::from_slice(&out).expect("valid JSON")
    }

    #[test]
    fn record_round_trips_through_serde_json() {
        let v = parse(&exchange());
        assert_eq!(v["conn_id"], 7);
        assert_eq!(v["trans_depth"], 2);
        assert_eq!(v["flow"]["client"], "10.0.0.1:43210");
        assert_eq!(v["flow"]["server"], "[2001:db8::1]:8080");
        let req = &v["request"];
        assert_eq!(req["method"], "POST");
        assert_eq!(req["uri"], "/a?q=\"x\"&b=\\");
        assert_eq!(req["version"], "1.1");
        assert_eq!(req["host"], "example.com");
        assert_eq!(req["headers"][1][1], "a\u{1}b\tc\nd\re\u{7f}");
        assert_eq!(req["headers"][2][1], "ok\u{fffd}\u{fffd}");
        assert_eq!(req["body_len"], 5);
        assert_eq!(
            req["body_sha256"],
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        let resp = &v["response"];
        assert_eq!(resp["status"], 200);
        assert_eq!(resp["reason"], "OK");
        assert_eq!(resp["version"], "1.0");
        assert_eq!(resp["headers"][0][0], "Content-Length");
        assert_eq!(resp["body_len"], 0);
        assert_eq!(
            resp["body_sha256"],
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(v["interim"], serde_json::json!([100, 103]));
        assert_eq!(v["complete"], false);
        assert_eq!(v["incomplete_reason"], "gap");
        assert_eq!(v["anomalies"], serde_json::json!(["bare_lf", "resync"]));
        assert_eq!(v["request_start"].as_f64(), Some(1_700_000_000.123456));
        assert_eq!(v["request_end"].as_f64(), Some(0.000005));
        assert!(v["response_start"].is_null());
        assert_eq!(v["response_end"].as_f64(), Some(0.0));
        assert_eq!(v["lossy_utf8"], true);
    }

    #[test]
    fn record_field_set_is_exact() {
        let v = parse(&exchange());
        let keys: Vec<&str> = v
            .as_object()
            .expect("object")
            .keys()
            .map(|k| k.as_str())
            .collect();
        let mut want = vec![
            "conn_id",
            "trans_depth",
            "flow",
            "request",
            "response",
            "interim",
            "complete",
            "incomplete_reason",
            "anomalies",
            "request_start",
            "request_end",
            "response_start",
            "response_end",
            "lossy_utf8",
        ];
        let mut keys = keys;
        keys.sort_unstable();
        want.sort_unstable();
        assert_eq!(keys, want);
    }

    #[test]
    fn complete_exchange_without_sides_writes_nulls() {
        let mut ex = exchange();
        ex.request = None;
        ex.response = None;
        ex.incomplete = None;
        ex.anomalies.clear();
        ex.interim.clear();
        let v = parse(&ex);
        assert!(v["request"].is_null());
        assert!(v["response"].is_null());
        assert_eq!(v["complete"], true);
        assert!(v["incomplete_reason"].is_null());
        assert_eq!(v["anomalies"], serde_json::json!([]));
        assert_eq!(v["lossy_utf8"], false);
    }

    #[test]
    fn word_check_agrees_with_the_byte_table() {
        for b in 0..=255u8 {
            for pos in 0..8 {
                let mut w = *b"abcdefgh";
                w[pos] = b;
                assert_eq!(
                    clean_word(&w),
                    !NEEDS_ESCAPE[b as usize],
                    "byte {b:#x} at {pos}"
                );
            }
        }
    }

    #[test]
    fn every_byte_value_in_text_is_valid_json() {
        let all: Vec<u8> = (0..=255u8).collect();
        let mut ex = exchange();
        if let Some(r) = ex.request.as_mut() {
            r.uri = Bytes::from(all.clone());
            r.headers = Headers::from_pairs(&[(&all[..], &all[..])]);
        }
        let v = parse(&ex);
        let uri = v["request"]["uri"].as_str().expect("string");
        assert!(uri.starts_with("\u{0}\u{1}"));
        assert_eq!(v["lossy_utf8"], true);
        let ascii: Vec<u8> = (0..0x80u8).collect();
        if let Some(r) = ex.request.as_mut() {
            r.uri = Bytes::from(ascii.clone());
            r.headers = Headers::default();
        }
        let v = parse(&ex);
        assert_eq!(
            v["request"]["uri"].as_str().expect("string").as_bytes(),
            &ascii[..]
        );
        assert_eq!(v["lossy_utf8"], false);
    }

    #[test]
    fn masked_records_hide_secrets_in_headers_and_targets() {
        let mut ex = exchange();
        if let Some(r) = &mut ex.request {
            r.uri = Bytes::from_static(b"/login?user=bob&access_token=abc123&next=/home");
            r.headers = Headers::from_pairs(&[
                ("Host", "example.com"),
                ("Authorization", "Basic Ym9iOnNlY3JldA=="),
                ("X-Forwarded-For", "jane.doe@example.com"),
                ("Accept", "*/*"),
            ]);
        }
        let cfg = crate::config::Config::default();
        let m = Masker::new(&cfg, [1; 32], true);
        let mut out = Vec::new();
        write_record_masked(&ex, Some(&m), &mut CleanCache::default(), &mut out);
        let text = String::from_utf8(out).unwrap();
        for secret in ["Ym9iOnNlY3JldA==", "jane.doe@example.com", "abc123"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v["request"]["headers"][3],
            serde_json::json!(["Accept", "*/*"])
        );
        assert_eq!(v["request"]["host"], "example.com");
        assert!(v["request"]["uri"].as_str().unwrap().contains("user=bob"));
        // The same exchange without a masker is written as captured.
        let mut plain = Vec::new();
        write_record_masked(
            &ex,
            Some(&Masker::disabled()),
            &mut CleanCache::default(),
            &mut plain,
        );
        assert!(String::from_utf8(plain).unwrap().contains("abc123"));
    }

    #[test]
    fn numbers_of_every_width_are_written_exactly() {
        for n in [0u64, 7, 10, 99, 100, 12345, 1_000_000, u64::MAX] {
            let mut out = Vec::new();
            push_u64(&mut out, n);
            assert_eq!(String::from_utf8(out).unwrap(), n.to_string());
        }
    }
}
