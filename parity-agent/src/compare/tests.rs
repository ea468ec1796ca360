//! Tests of the comparator as a whole: every rule, every difference kind, every body mode.

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::config::Config;
use crate::exchange::{Headers, Response, Version};
use crate::stream::ConnId;

fn pair(extra: &str) -> PairConfig {
    let text = format!(
        "[[pair]]\nname = \"p\"\nprimary = \"127.0.0.1:1\"\nmirror = \"127.0.0.1:2\"\n{extra}"
    );
    let mut c = Config::parse(&text, "test.toml").unwrap_or_else(|e| panic!("{e}"));
    c.pairs.remove(0)
}

fn with_rules(rules: &[(&str, &str)]) -> Comparator {
    let mut t = String::new();
    for (path, rest) in rules {
        t.push_str(&format!("[[pair.rule]]\npath = \"{path}\"\n{rest}\n"));
    }
    Comparator::new(&pair(&t))
}

fn plain() -> Comparator {
    Comparator::new(&pair(""))
}

fn response(status: u16, headers: &[(&str, &str)], body: Body) -> Exchange {
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
            headers: Headers::from_pairs(headers),
            body,
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

fn typed(ct: &str, body: &[u8]) -> Exchange {
    response(
        200,
        &[("Content-Type", ct)],
        Body::from_bytes(body.to_vec()),
    )
}

fn json(body: &str) -> Exchange {
    typed("application/json", body.as_bytes())
}

fn run(c: &Comparator, endpoint: &str, p: &Exchange, m: &Exchange) -> Vec<(String, &'static str)> {
    c.compare(endpoint, p, m)
        .differences
        .iter()
        .map(|d| (d.path.clone(), d.kind.as_str()))
        .collect()
}

fn jd(c: &Comparator, a: &str, b: &str) -> Vec<(String, &'static str)> {
    run(c, "GET /x", &json(a), &json(b))
}

fn d(path: &str, kind: &'static str) -> (String, &'static str) {
    (path.to_string(), kind)
}

#[test]
fn diff_kind_names_are_the_contract() {
    let names: Vec<_> = DiffKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(
        names,
        ["value", "type", "missing", "extra", "length", "order", "text", "hash"]
    );
    assert_eq!(
        serde_json::to_string(&DiffKind::Missing).unwrap(),
        "\"missing\""
    );
}

#[test]
fn status_codes_are_compared() {
    let c = plain();
    let p = response(200, &[], Body::empty());
    let m = response(503, &[], Body::empty());
    let v = c.compare("GET /", &p, &m);
    assert_eq!(v.differences.len(), 1);
    assert_eq!(v.differences[0].path, "status");
    assert_eq!(v.differences[0].kind, DiffKind::Value);
    assert_eq!(v.differences[0].primary.as_deref(), Some("200"));
    assert_eq!(v.differences[0].mirror.as_deref(), Some("503"));
    assert!(v.diverged());
    assert!(!c.compare("GET /", &p, &p).diverged());
}

#[test]
fn a_missing_response_is_reported_once() {
    let c = plain();
    let mut none = json("{}");
    none.response = None;
    assert_eq!(
        run(&c, "GET /", &json("{}"), &none),
        vec![d("response", "missing")]
    );
    assert_eq!(
        run(&c, "GET /", &none, &json("{}")),
        vec![d("response", "extra")]
    );
    let v = c.compare("GET /", &none, &none);
    assert!(!v.diverged());
    assert_eq!(v.body, BodyComparison::NoResponse);
}

#[test]
fn configured_and_default_ignored_headers_are_not_reported() {
    let c = Comparator::new(&pair("ignore_headers = [\"X-Trace\"]\n"));
    let p = response(
        200,
        &[("Date", "a"), ("X-Trace", "1"), ("Content-Length", "2")],
        Body::from_bytes("{}"),
    );
    let m = response(
        200,
        &[("date", "b"), ("x-trace", "2"), ("content-length", "3")],
        Body::from_bytes("{}"),
    );
    assert!(run(&c, "GET /", &p, &m).is_empty());
    let strict = Comparator::new(&pair("compare_representation_headers = true\n"));
    assert_eq!(
        run(&strict, "GET /", &p, &m),
        vec![
            d("header:content-length", "value"),
            d("header:x-trace", "value")
        ]
    );
}

#[test]
fn json_key_order_and_whitespace_do_not_matter() {
    let c = plain();
    assert!(jd(
        &c,
        r#"{"a":1,"b":{"c":[1,2],"d":"x"}}"#,
        "{ \"b\" : { \"d\" : \"x\" , \"c\" : [ 1 , 2 ] } ,\n\t\"a\" : 1 }"
    )
    .is_empty());
    let v = c.compare("GET /", &json(r#"{"a":1}"#), &json(r#"{ "a": 1 }"#));
    assert_eq!(v.body, BodyComparison::Json);
}

#[test]
fn every_json_difference_kind_is_reported_at_its_location() {
    let c = plain();
    let got = jd(
        &c,
        r#"{"v":1,"t":"1","gone":true,"arr":[1,2,3],"ord":[1,2,3],"o":{"x y":[{"k":1}]}}"#,
        r#"{"v":2,"t":1,"new":null,"arr":[1,5],"ord":[3,1,2],"o":{"x y":[{"k":2}]}}"#,
    );
    assert_eq!(
        got,
        vec![
            d("$.v", "value"),
            d("$.t", "type"),
            d("$.gone", "missing"),
            d("$.arr", "length"),
            d("$.arr[1]", "value"),
            d("$.ord", "order"),
            d("$.o['x y'][0].k", "value"),
            d("$.new", "extra"),
        ]
    );
}

#[test]
fn difference_values_are_compact_json() {
    let c = plain();
    let v = c.compare(
        "GET /",
        &json(r#"{"a": {"b": [1, "x"]}, "s": "p"}"#),
        &json(r#"{"a": 3, "s": "m"}"#),
    );
    let a = &v.differences[0];
    assert_eq!(
        (a.primary.as_deref(), a.mirror.as_deref()),
        (Some(r#"{"b":[1,"x"]}"#), Some("3"))
    );
    let s = &v.differences[1];
    assert_eq!(
        (s.primary.as_deref(), s.mirror.as_deref()),
        (Some("\"p\""), Some("\"m\""))
    );
    let l = c.compare("GET /", &json("[1,2]"), &json("[1,2,3]"));
    assert_eq!(l.differences[0].kind, DiffKind::Length);
    assert_eq!(l.differences[0].primary.as_deref(), Some("2"));
    assert_eq!(l.differences[0].mirror.as_deref(), Some("3"));
}

#[test]
fn root_differences_use_the_root_path() {
    let c = plain();
    assert_eq!(jd(&c, "1", "2"), vec![d("$", "value")]);
    assert_eq!(jd(&c, "[]", "{}"), vec![d("$", "type")]);
    assert_eq!(jd(&c, "[1,2]", "[2,1]"), vec![d("$", "order")]);
}

#[test]
fn escaped_strings_and_names_compare_by_their_decoded_text() {
    let c = plain();
    assert!(jd(&c, r#"{"A":"é😀"}"#, r#"{"\u0041":"\u00e9\ud83d\ude00"}"#).is_empty());
    assert_eq!(
        jd(&c, r#"["\ud800"]"#, r#"["\ud801"]"#),
        vec![d("$[0]", "value")]
    );
    assert_eq!(
        jd(&c, r#"{"a\"b":1}"#, r#"{"a\"b":2}"#),
        vec![d(r#"$['a"b']"#, "value")]
    );
}

#[test]
fn numbers_compare_as_exact_decimals() {
    let c = plain();
    for (a, b) in [
        ("1", "1.0"),
        ("1", "1e0"),
        ("1", "10e-1"),
        ("1e2", "100"),
        ("-0", "0"),
        ("0.1", "1e-1"),
        ("1e999999999", "10e999999998"),
    ] {
        assert!(
            jd(&c, &format!("[{a}]"), &format!("[{b}]")).is_empty(),
            "{a} == {b}"
        );
    }
    for (a, b) in [
        ("9007199254740993", "9007199254740992"),
        ("1e999999999", "1e999999998"),
        ("0.30000000000000004", "0.3"),
        ("1", "-1"),
    ] {
        assert_eq!(
            jd(&c, &format!("[{a}]"), &format!("[{b}]")),
            vec![d("$[0]", "value")],
            "{a} != {b}"
        );
    }
}

#[test]
fn strict_number_types_make_integer_against_fraction_a_type_difference() {
    let c = Comparator::new(&pair("strict_number_types = true\n"));
    assert_eq!(jd(&c, "[1]", "[1.0]"), vec![d("$[0]", "type")]);
    assert_eq!(jd(&c, "[1]", "[1e0]"), vec![d("$[0]", "type")]);
    assert!(jd(&c, "[1.0]", "[1e0]").is_empty());
    assert!(jd(&c, "[-0]", "[0]").is_empty());
    assert_eq!(jd(&c, "[1]", "[2]"), vec![d("$[0]", "value")]);
}

#[test]
fn ignore_skips_value_and_presence_and_everything_below() {
    let c = with_rules(&[
        ("$.meta", "action = \"ignore\""),
        ("$..ts", "action = \"ignore\""),
    ]);
    assert!(jd(
        &c,
        r#"{"meta":{"a":1,"b":[1]},"x":{"ts":1},"y":[{"ts":5}]}"#,
        r#"{"x":{"ts":2},"y":[{}]}"#
    )
    .is_empty());
    assert_eq!(
        jd(&c, r#"{"x":{"ts":1,"v":1}}"#, r#"{"x":{"v":2}}"#),
        vec![d("$.x.v", "value")]
    );
}

#[test]
fn present_requires_presence_and_type_but_not_value() {
    let c = with_rules(&[("$.id", "action = \"present\"")]);
    assert!(jd(&c, r#"{"id":"a"}"#, r#"{"id":"b"}"#).is_empty());
    assert!(jd(&c, r#"{"id":{"x":1}}"#, r#"{"id":{"y":2}}"#).is_empty());
    assert_eq!(
        jd(&c, r#"{"id":"a"}"#, r#"{"id":1}"#),
        vec![d("$.id", "type")]
    );
    assert_eq!(jd(&c, r#"{"id":"a"}"#, r#"{}"#), vec![d("$.id", "missing")]);
    assert_eq!(jd(&c, r#"{}"#, r#"{"id":"a"}"#), vec![d("$.id", "extra")]);
}

#[test]
fn numeric_tolerance_is_absolute_or_relative() {
    let c = with_rules(&[
        ("$.rel", "action = \"numeric\"\nrelative = 0.01"),
        ("$.abs", "action = \"numeric\"\nabsolute = 0.5"),
    ]);
    assert!(jd(&c, r#"{"rel":100,"abs":10}"#, r#"{"rel":100.9,"abs":10.5}"#).is_empty());
    assert_eq!(
        jd(&c, r#"{"rel":100,"abs":10}"#, r#"{"rel":101.1,"abs":10.6}"#),
        vec![d("$.rel", "value"), d("$.abs", "value")]
    );
    // Decimal strings under a numeric rule compare as numbers; other strings exactly.
    assert!(jd(&c, r#"{"rel":"100.00"}"#, r#"{"rel":"100.5"}"#).is_empty());
    assert_eq!(
        jd(&c, r#"{"rel":"a"}"#, r#"{"rel":"b"}"#),
        vec![d("$.rel", "value")]
    );
}

#[test]
fn numeric_on_a_container_governs_every_number_below() {
    let c = with_rules(&[
        ("$.stats", "action = \"numeric\"\nabsolute = 1"),
        ("$.stats.exact", "action = \"numeric\"\nabsolute = 0"),
    ]);
    assert!(jd(
        &c,
        r#"{"stats":{"a":1,"b":[2,{"c":3}]}}"#,
        r#"{"stats":{"a":1.5,"b":[2.9,{"c":2}]}}"#
    )
    .is_empty());
    assert_eq!(
        jd(&c, r#"{"stats":{"exact":1}}"#, r#"{"stats":{"exact":1.5}}"#),
        vec![d("$.stats.exact", "value")]
    );
}

#[test]
fn unordered_arrays_are_multisets() {
    let c = with_rules(&[("$.tags", "action = \"unordered\"")]);
    assert!(jd(
        &c,
        r#"{"tags":["a","b","c","a"]}"#,
        r#"{"tags":["c","a","a","b"]}"#
    )
    .is_empty());
    assert_eq!(
        jd(&c, r#"{"tags":["a","b","c"]}"#, r#"{"tags":["c","a"]}"#),
        vec![d("$.tags[1]", "missing")]
    );
    assert_eq!(
        jd(&c, r#"{"tags":["a"]}"#, r#"{"tags":["x","a","y"]}"#),
        vec![d("$.tags[0]", "extra"), d("$.tags[2]", "extra")]
    );
    // Without the rule the same arrays differ by order.
    assert_eq!(
        jd(&plain(), r#"{"tags":["a","b"]}"#, r#"{"tags":["b","a"]}"#),
        vec![d("$.tags", "order")]
    );
}

#[test]
fn unordered_matches_each_element_to_its_closest_counterpart() {
    let c = with_rules(&[("$.items", "action = \"unordered\"")]);
    let got = jd(
        &c,
        r#"{"items":[{"id":1,"n":"a","p":10},{"id":2,"n":"b","p":20},{"id":3,"n":"c","p":30}]}"#,
        r#"{"items":[{"id":3,"n":"c","p":30},{"id":1,"n":"a","p":11},{"id":2,"n":"b","p":20}]}"#,
    );
    assert_eq!(got, vec![d("$.items[0].p", "value")]);
}

#[test]
fn unordered_applies_tolerances_and_nested_rules_inside_elements() {
    let c = with_rules(&[
        ("$.items", "action = \"unordered\""),
        ("$.items[*].price", "action = \"numeric\"\nabsolute = 0.01"),
        ("$.items[*].updated", "action = \"ignore\""),
    ]);
    assert!(jd(
        &c,
        r#"{"items":[{"sku":"a","price":1.00,"updated":1},{"sku":"b","price":2.00,"updated":2}]}"#,
        r#"{"items":[{"sku":"b","price":2.005,"updated":9},{"sku":"a","price":0.995,"updated":8}]}"#,
    )
    .is_empty());
    assert_eq!(
        jd(
            &c,
            r#"{"items":[{"sku":"a","price":1},{"sku":"b","price":2}]}"#,
            r#"{"items":[{"sku":"b","price":2.5},{"sku":"a","price":1}]}"#,
        ),
        vec![d("$.items[1].price", "value")]
    );
}

#[test]
fn unordered_arrays_nested_in_unordered_arrays() {
    let c = with_rules(&[
        ("$..tags", "action = \"unordered\""),
        ("$.groups", "action = \"unordered\""),
    ]);
    assert!(jd(
        &c,
        r#"{"groups":[{"name":"x","tags":[1,2]},{"name":"y","tags":[3,4]}]}"#,
        r#"{"groups":[{"name":"y","tags":[4,3]},{"name":"x","tags":[2,1]}]}"#,
    )
    .is_empty());
}

#[test]
fn the_most_specific_rule_wins() {
    let c = with_rules(&[
        ("$..price", "action = \"ignore\""),
        ("$.items[*].price", "action = \"numeric\"\nabsolute = 1"),
        ("$.items[0].price", "action = \"numeric\"\nabsolute = 0"),
    ]);
    assert_eq!(
        jd(
            &c,
            r#"{"price":1,"items":[{"price":1},{"price":1},{"price":1}]}"#,
            r#"{"price":9,"items":[{"price":1.5},{"price":1.5},{"price":5}]}"#,
        ),
        vec![
            d("$.items[0].price", "value"),
            d("$.items[2].price", "value")
        ]
    );
}

#[test]
fn rule_paths_accept_quoted_names_and_wildcards() {
    let c = with_rules(&[
        ("$['a b'].*", "action = \"ignore\""),
        ("$.list[1]", "action = \"ignore\""),
    ]);
    assert!(jd(
        &c,
        r#"{"a b":{"x":1,"y":2},"list":[1,2,3]}"#,
        r#"{"a b":{"x":5,"y":6},"list":[1,9,3]}"#
    )
    .is_empty());
    assert_eq!(
        jd(&c, r#"{"list":[1,2,3]}"#, r#"{"list":[1,2,4]}"#),
        vec![d("$.list[2]", "value")]
    );
}

#[test]
fn endpoint_restricted_rules_apply_to_their_endpoint_only() {
    let c = with_rules(&[
        (
            "$.total",
            "action = \"numeric\"\nrelative = 0.001\nendpoint = \"GET /api/orders\"",
        ),
        (
            "$.ts",
            "action = \"ignore\"\nendpoint = \"GET /api/users/{name}\"",
        ),
    ]);
    let (p, m) = (
        json(r#"{"total":1000,"ts":1}"#),
        json(r#"{"total":1000.5,"ts":2}"#),
    );
    assert_eq!(run(&c, "GET /api/orders", &p, &m), vec![d("$.ts", "value")]);
    assert_eq!(
        run(&c, "GET /api/users/{id}", &p, &m),
        vec![d("$.total", "value")]
    );
    assert_eq!(
        run(&c, "other", &p, &m),
        vec![d("$.total", "value"), d("$.ts", "value")]
    );
}

#[test]
fn ignoring_the_root_skips_any_body() {
    let c = with_rules(&[("$", "action = \"ignore\"")]);
    let v = c.compare(
        "GET /",
        &typed("text/html", b"<a>"),
        &typed("text/html", b"<b>"),
    );
    assert!(!v.diverged());
    assert_eq!(v.body, BodyComparison::Ignored);
}

#[test]
fn textual_bodies_get_a_line_diff_excerpt() {
    let c = plain();
    for ct in [
        "text/html; charset=utf-8",
        "application/xml",
        "application/javascript",
        "application/x-www-form-urlencoded",
        "application/atom+xml",
    ] {
        let v = c.compare("GET /", &typed(ct, b"a\nb\nc\n"), &typed(ct, b"a\nB\nc\n"));
        assert_eq!(v.body, BodyComparison::Text, "{ct}");
        assert_eq!(v.differences.len(), 1);
        let x = &v.differences[0];
        assert_eq!((x.path.as_str(), x.kind), ("body", DiffKind::Text));
        assert_eq!(x.primary.as_deref(), Some("@@ -2,1 @@\n-b"));
        assert_eq!(x.mirror.as_deref(), Some("@@ +2,1 @@\n+B"));
    }
}

#[test]
fn binary_bodies_compare_by_hash() {
    let c = plain();
    let v = c.compare(
        "GET /",
        &typed("image/png", b"\x89PNG1"),
        &typed("image/png", b"\x89PNG2"),
    );
    assert_eq!(v.body, BodyComparison::Hash(HashReason::Binary));
    let x = &v.differences[0];
    assert_eq!((x.path.as_str(), x.kind), ("body", DiffKind::Hash));
    let p = x.primary.as_deref().unwrap_or_default();
    assert_eq!(p.len(), 64);
    assert!(p.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_ne!(x.primary, x.mirror);
}

#[test]
fn capped_bodies_compare_by_hash_of_the_whole_body() {
    let c = plain();
    let capped = |whole: &str| {
        let mut b = Body::from_bytes(whole.to_string());
        b.kept = Bytes::copy_from_slice(&whole.as_bytes()[..4]);
        b.capped = true;
        response(200, &[("Content-Type", "application/json")], b)
    };
    // Same first bytes, different wholes: the hash still tells them apart.
    let v = c.compare("GET /", &capped(r#"{"a":1}"#), &capped(r#"{"a":2}"#));
    assert_eq!(v.body, BodyComparison::Hash(HashReason::Capped));
    assert_eq!(v.differences.len(), 1);
    assert_eq!(v.differences[0].kind, DiffKind::Hash);
    // Equal wholes are identical whatever was kept.
    assert!(!c
        .compare("GET /", &capped(r#"{"a":1}"#), &capped(r#"{"a":1}"#))
        .diverged());
    // Key order no longer helps: a capped body cannot be parsed.
    assert!(c
        .compare(
            "GET /",
            &capped(r#"{"a":1,"b":2}"#),
            &capped(r#"{"b":2,"a":1}"#)
        )
        .diverged());
}

#[test]
fn different_content_types_are_a_header_difference_and_a_hash_comparison() {
    let c = plain();
    let v = c.compare(
        "GET /",
        &typed("application/json", b"{}"),
        &typed("text/html", b"{ }"),
    );
    assert_eq!(
        v.body,
        BodyComparison::Hash(HashReason::ContentTypeMismatch)
    );
    let got: Vec<_> = v
        .differences
        .iter()
        .map(|x| (x.path.as_str(), x.kind))
        .collect();
    assert_eq!(
        got,
        vec![
            ("header:content-type", DiffKind::Value),
            ("body", DiffKind::Hash)
        ]
    );
    // Parameters differ but the media type is the same: structural comparison still applies.
    let v = c.compare(
        "GET /",
        &typed("application/json", br#"{"a":1}"#),
        &typed("application/json; charset=utf-8", br#"{ "a": 1 }"#),
    );
    assert_eq!(v.body, BodyComparison::Json);
    assert_eq!(v.differences.len(), 1, "{:?}", v.differences);
}

#[test]
fn too_deep_json_falls_back_to_hash_and_is_counted() {
    let c = plain();
    let deep = |x: &str| {
        format!(
            "{}{x}{}",
            "[".repeat(JSON_MAX_DEPTH + 5),
            "]".repeat(JSON_MAX_DEPTH + 5)
        )
    };
    let v = c.compare("GET /", &json(&deep("1")), &json(&deep("2")));
    assert_eq!(v.body, BodyComparison::Hash(HashReason::DepthLimit));
    assert_eq!(v.differences[0].kind, DiffKind::Hash);
    assert_eq!(c.stats().hash_depth, 1);
}

#[test]
fn invalid_json_is_compared_as_text_and_counted() {
    let c = plain();
    let v = c.compare("GET /", &json("{\"a\":1}"), &json("{\"a\":1,}"));
    assert_eq!(v.body, BodyComparison::Text);
    assert_eq!(v.differences[0].kind, DiffKind::Text);
    assert_eq!(c.stats().json_invalid, 1);
}

#[test]
fn json_like_types_and_untyped_bodies_are_recognised() {
    let c = plain();
    for ct in [
        "application/problem+json",
        "text/json",
        "application/vnd.api+json",
    ] {
        let v = c.compare(
            "GET /",
            &typed(ct, br#"{"a":1,"b":2}"#),
            &typed(ct, br#"{"b":2,"a":1}"#),
        );
        assert_eq!(v.body, BodyComparison::Json, "{ct}");
        assert!(!v.diverged());
    }
    let untyped = |b: &[u8]| response(200, &[], Body::from_bytes(b.to_vec()));
    let v = c.compare(
        "GET /",
        &untyped(br#"{"a":1,"b":2}"#),
        &untyped(br#"{"b":2,"a":1}"#),
    );
    assert_eq!(v.body, BodyComparison::Json);
    assert!(!v.diverged());
    let v = c.compare("GET /", &untyped(b"hello\n"), &untyped(b"world\n"));
    assert_eq!(v.body, BodyComparison::Text);
    let v = c.compare("GET /", &untyped(b"\x00\x01"), &untyped(b"\x00\x02"));
    assert_eq!(v.body, BodyComparison::Hash(HashReason::Binary));
}

#[test]
fn identical_bytes_skip_parsing() {
    let c = plain();
    let v = c.compare("GET /", &json("{\"a\":1}"), &json("{\"a\":1}"));
    assert_eq!(v.body, BodyComparison::Identical);
    assert_eq!(c.stats().body_identical, 1);
    assert_eq!(c.stats().body_json, 0);
}

#[test]
fn differences_are_capped_per_verdict() {
    let c = plain();
    let a: Vec<String> = (0..3000).map(|i| i.to_string()).collect();
    let b: Vec<String> = (0..3000).map(|i| (i + 1).to_string()).collect();
    let v = c.compare(
        "GET /",
        &json(&format!("[{}]", a.join(","))),
        &json(&format!("[{}]", b.join(","))),
    );
    assert_eq!(v.differences.len(), MAX_DIFFERENCES);
    assert!(v.truncated);
    assert_eq!(c.stats().truncated, 1);
}

#[test]
fn large_unordered_arrays_of_different_elements_finish_within_the_budget() {
    let c = with_rules(&[("$", "action = \"unordered\"")]);
    let n = 4000;
    let a: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"id":{i},"v":[{i},1,2]}}"#))
        .collect();
    let b: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"id":{},"v":[0,1,2]}}"#, i + n))
        .collect();
    let started = std::time::Instant::now();
    let v = c.compare(
        "GET /",
        &json(&format!("[{}]", a.join(","))),
        &json(&format!("[{}]", b.join(","))),
    );
    assert!(v.diverged());
    assert_eq!(c.stats().unordered_budget, 1);
    // Debug builds are slow; this only guards against quadratic blow-up (16M pair scores).
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
}

#[test]
fn many_equal_elements_are_matched_without_quadratic_search() {
    let n = 20_000;
    let nulls = vec!["null"; n].join(",");
    let (a, b) = (format!("[{nulls},1]"), format!("[1,{nulls}]"));
    let started = std::time::Instant::now();
    let unordered = with_rules(&[("$", "action = \"unordered\"")]);
    assert!(jd(&unordered, &a, &b).is_empty());
    assert_eq!(jd(&plain(), &a, &b), vec![d("$", "order")]);
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

/// A tree of `{"a": [...]}` objects, `fanout` wide and `depth` deep; leaves numbered from `base`,
/// children in reverse order when `reverse`.
fn tree(depth: u32, fanout: usize, base: &mut u64, reverse: bool) -> String {
    if depth == 0 {
        *base += 1;
        return format!("{{\"leaf\":{}}}", *base);
    }
    let mut kids: Vec<String> = (0..fanout)
        .map(|_| tree(depth - 1, fanout, base, reverse))
        .collect();
    if reverse {
        kids.reverse();
    }
    format!("{{\"a\":[{}]}}", kids.join(","))
}

#[test]
fn nested_unordered_arrays_of_all_different_elements_stay_within_the_budget() {
    let c = with_rules(&[("$..a", "action = \"unordered\"")]);
    let p = tree(7, 4, &mut 0, false);
    let m = tree(7, 4, &mut 1_000_000, true);
    let started = std::time::Instant::now();
    let v = c.compare("GET /", &json(&p), &json(&m));
    assert!(v.diverged());
    assert!(v.truncated);
    // Debug builds are slow; this guards against work growing with depth × size squared.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    // The same trees with equal leaves are equal whatever the order at every level.
    let c2 = with_rules(&[("$..a", "action = \"unordered\"")]);
    let m = tree(7, 4, &mut 0, true);
    assert!(!c2.compare("GET /", &json(&p), &json(&m)).diverged());
}

#[test]
fn comparators_are_shareable_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Comparator>();
    assert_send_sync::<Verdict>();
}

#[test]
fn verdicts_serialise_with_stable_names() {
    let c = plain();
    let v = c.compare(
        "GET /",
        &typed("image/png", b"1"),
        &typed("image/png", b"2"),
    );
    let j = serde_json::to_value(&v).unwrap();
    assert_eq!(
        j["body"],
        serde_json::json!({"mode": "hash", "reason": "binary"})
    );
    assert_eq!(j["differences"][0]["path"], "body");
    assert_eq!(j["differences"][0]["kind"], "hash");
    assert_eq!(j["truncated"], false);
}

#[test]
fn stats_count_outcomes() {
    let c = plain();
    c.compare("GET /", &json("[1]"), &json("[2]"));
    c.compare("GET /", &json("[1]"), &json("[1.0]"));
    let s = c.stats();
    assert_eq!((s.compared, s.diverged, s.body_json), (2, 1, 2));
}

// ---- property tests ----

/// Random JSON values (numbers as exact literals the generator controls).
fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(|i| serde_json::json!(i)),
        // Never integral, so serde_json's int/float distinction cannot disagree with ours.
        (-1_000_000i64..1_000_000).prop_map(|i| serde_json::json!(i as f64 + 0.25)),
        any::<String>().prop_map(serde_json::Value::String),
        "[a-c]{0,2}".prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::btree_map("[a-d]{0,3}|\\PC{0,4}", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Serialise with object members rotated by `rot` and every string fully `\u`-escaped when
/// `escape` is set: a different text of the same value.
fn respell(v: &serde_json::Value, rot: usize, escape: bool, out: &mut String) {
    match v {
        serde_json::Value::Object(m) => {
            let items: Vec<_> = m.iter().collect();
            out.push_str("{ ");
            let n = items.len();
            for k in 0..n {
                let (key, val) = items[(k + rot) % n];
                if k > 0 {
                    out.push_str(" ,\n");
                }
                push_string(key, escape, out);
                out.push_str(" : ");
                respell(val, rot + 1, escape, out);
            }
            out.push_str(" }");
        }
        serde_json::Value::Array(a) => {
            out.push('[');
            for (k, x) in a.iter().enumerate() {
                if k > 0 {
                    out.push_str(",\t");
                }
                respell(x, rot, escape, out);
            }
            out.push(']');
        }
        serde_json::Value::String(s) => push_string(s, escape, out),
        other => out.push_str(&other.to_string()),
    }
}

fn push_string(s: &str, escape: bool, out: &mut String) {
    if !escape {
        out.push_str(&serde_json::to_string(s).unwrap());
        return;
    }
    out.push('"');
    for unit in s.encode_utf16() {
        out.push_str(&format!("\\u{unit:04x}"));
    }
    out.push('"');
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_value_never_differs_from_itself_however_written(v in arb_json(), rot in 0usize..4, escape in any::<bool>()) {
        let c = plain();
        let compact = serde_json::to_string(&v).unwrap();
        let mut other = String::new();
        respell(&v, rot, escape, &mut other);
        let verdict = c.compare("GET /", &json(&compact), &json(&other));
        prop_assert!(!verdict.diverged(), "{compact} vs {other}: {:?}", verdict.differences);
        prop_assert!(matches!(verdict.body, BodyComparison::Json | BodyComparison::Identical));
        // The structural path itself, without the identical-bytes shortcut.
        let pretty = serde_json::to_string_pretty(&v).unwrap();
        let verdict = c.compare("GET /", &json(&compact), &json(&pretty));
        prop_assert!(!verdict.diverged());
    }

    #[test]
    fn divergence_agrees_with_serde_json_equality(a in arb_json(), b in arb_json()) {
        // Floats: serde_json compares f64 values, we compare the decimal literals it wrote;
        // `ryu` writes the shortest literal, so equal f64 means equal literal and vice versa.
        let c = plain();
        let (ta, tb) = (serde_json::to_string(&a).unwrap(), serde_json::to_string(&b).unwrap());
        let v = c.compare("GET /", &json(&ta), &json(&tb));
        prop_assert_eq!(v.diverged(), a != b, "{} vs {}: {:?}", ta, tb, v.differences);
    }

    #[test]
    fn number_spellings_of_one_value_are_equal(m in 1u64..1_000_000_000_000, e in -30i32..30, shift in 0u32..5) {
        let c = plain();
        let a = format!("{m}e{e}");
        let b = format!("{m}{}e{}", "0".repeat(shift as usize), e - shift as i32);
        let prop_fraction = format!("0.{m}e{}", e + m.to_string().len() as i32);
        prop_assert!(jd(&c, &format!("[{a}]"), &format!("[{b}]")).is_empty(), "{a} {b}");
        prop_assert!(jd(&c, &format!("[{a}]"), &format!("[{prop_fraction}]")).is_empty(), "{a} {prop_fraction}");
        prop_assert_eq!(jd(&c, &format!("[{a}]"), &format!("[{m}1e{}]", e - 1)).len(), 1);
    }

    #[test]
    fn arbitrary_bytes_never_panic(a in prop::collection::vec(any::<u8>(), 0..512), b in prop::collection::vec(any::<u8>(), 0..512), ct in prop_oneof![Just("application/json"), Just("text/plain"), Just("application/octet-stream"), Just("")]) {
        let c = with_rules(&[("$", "action = \"unordered\""), ("$..a", "action = \"numeric\"\nrelative = 0.1")]);
        let ex = |body: &[u8]| if ct.is_empty() {
            response(200, &[], Body::from_bytes(body.to_vec()))
        } else {
            typed(ct, body)
        };
        let v = c.compare("GET /", &ex(&a), &ex(&b));
        if a == b {
            prop_assert!(!v.diverged());
        }
        prop_assert!(c.compare("GET /", &ex(&a), &ex(&a)).differences.is_empty());
    }

    #[test]
    fn json_shaped_noise_never_panics(a in "[\\[\\]{}\",:0-9a\\\\u. eE+-]{0,64}", b in "[\\[\\]{}\",:0-9a\\\\u. eE+-]{0,64}") {
        let c = with_rules(&[("$..a", "action = \"unordered\"")]);
        let v = c.compare("GET /", &json(&a), &json(&b));
        prop_assert!(v.differences.len() <= MAX_DIFFERENCES);
        // Equal texts, and texts differing only in whitespace around valid JSON, never diverge.
        let spaced = format!(" {a}\n");
        let v = c.compare("GET /", &json(&a), &json(&spaced));
        prop_assert_eq!(v.diverged(), v.body != BodyComparison::Json);
    }
}
