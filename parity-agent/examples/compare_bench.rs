//! Benchmark of the comparator against parsing alone.
//!
//! For each case (JSON bodies of about 1 KiB and 64 KiB; byte-identical, equal but written
//! differently, different, with and without rules) it measures pairs compared per second by
//! `Comparator::compare` and pairs per second of only parsing both bodies with
//! `serde_json::from_slice::<serde_json::Value>`, and prints one JSON line per case:
//! `{"bench":"compare","case":…,"bytes":…,"pairs_per_s":…,"parse_only_pairs_per_s":…,"ratio":…}`
//! where `ratio` is comparator time over parse time (the target is ≤ 2). Both are measured in
//! the same run, interleaved, best of several repetitions, because absolute numbers drift on
//! shared machines.
//!
//! Run: `cargo run --release -p parity-agent --no-default-features --example compare_bench`
//! (`-- --quick` for a short smoke run).

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parity_agent::compare::Comparator;
use parity_agent::config::{Config, PairConfig};
use parity_agent::exchange::{Body, Exchange, Headers, Response, Version};
use parity_agent::stream::ConnId;

fn pair(rules: &str) -> PairConfig {
    let text = format!(
        "[[pair]]\nname = \"bench\"\nprimary = \"127.0.0.1:1\"\nmirror = \"127.0.0.1:2\"\n\
         ignore_headers = [\"server\"]\n{rules}"
    );
    match Config::parse(&text, "bench.toml") {
        Ok(mut c) => c.pairs.remove(0),
        Err(e) => panic!("bench config: {e}"),
    }
}

const RULES: &str = r#"
[[pair.rule]]
path = "$.meta.generated_at"
action = "ignore"
[[pair.rule]]
path = "$.items[*].price"
action = "numeric"
relative = 0.001
[[pair.rule]]
path = "$..tags"
action = "unordered"
"#;

const UNORDERED: &str = r#"
[[pair.rule]]
path = "$.items"
action = "unordered"
[[pair.rule]]
path = "$.meta.generated_at"
action = "ignore"
"#;

#[derive(Clone, Copy)]
struct Variant {
    /// Members in another order, other whitespace, numbers respelled.
    respell: bool,
    /// Change a few values.
    change: bool,
    /// Items in reverse order.
    reverse: bool,
}

fn item(i: usize, v: Variant) -> String {
    let cents = if v.change && i % 50 == 1 { 99 } else { i % 100 };
    let price = format!("{}.{:02}", 10 + i, cents);
    let fields = [
        format!("\"id\":{i}"),
        format!("\"sku\":\"SKU-{i:06}\""),
        format!("\"name\":\"Item number {i} \\u00e9\""),
        format!("\"price\":{price}"),
        "\"currency\":\"EUR\"".to_string(),
        format!("\"in_stock\":{}", i.is_multiple_of(2)),
        format!("\"tags\":[\"new\",\"sale\",\"c{}\"]", i % 5),
        format!(
            "\"dims\":{{\"w\":1.5,\"h\":{},\"d\":{i}}}",
            if v.respell { "2.250" } else { "2.25" }
        ),
        "\"description\":\"A reasonably long description of the item, as APIs send.\"".into(),
    ];
    if v.respell {
        let mut f = fields.to_vec();
        f.reverse();
        format!("{{\n    {}\n  }}", f.join(",\n    "))
    } else {
        format!("{{{}}}", fields.join(","))
    }
}

/// How many items make the plain document at least `size` bytes long.
fn items_for(size: usize) -> usize {
    let plain = Variant {
        respell: false,
        change: false,
        reverse: false,
    };
    let mut len = 128;
    let mut n = 0;
    while len < size {
        len += item(n, plain).len() + 1;
        n += 1;
    }
    n
}

/// A document of `n` items (the same items in every variant, written and changed per variant).
fn document(n: usize, v: Variant) -> String {
    let second = u8::from(v.change);
    let meta = if v.respell {
        format!("\"meta\": {{ \"page\": 1, \"generated_at\": \"2024-01-01T00:00:0{second}Z\", \"version\": \"2\" }}")
    } else {
        format!("\"meta\":{{\"version\":\"2\",\"generated_at\":\"2024-01-01T00:00:0{second}Z\",\"page\":1}}")
    };
    let mut items: Vec<String> = (0..n).map(|i| item(i, v)).collect();
    if v.reverse {
        items.reverse();
    }
    let total = format!("\"total\":{}", n * 10);
    if v.respell {
        format!(
            "{{\n  {total},\n  \"items\": [\n  {}\n  ],\n  {meta}\n}}\n",
            items.join(",\n  ")
        )
    } else {
        format!("{{{meta},\"items\":[{}],{total}}}", items.join(","))
    }
}

fn exchange(body: &str) -> Exchange {
    Exchange {
        conn: ConnId(1),
        trans_depth: 1,
        client: "10.0.0.1:40000".parse().unwrap_or_else(|_| unreachable!()),
        server: "10.0.0.2:80".parse().unwrap_or_else(|_| unreachable!()),
        request: None,
        response: Some(Response {
            status: 200,
            reason: Bytes::from_static(b"OK"),
            version: Version::Http11,
            headers: Headers::from_pairs(&[
                ("Content-Type", "application/json; charset=utf-8"),
                ("Date", "Mon, 01 Jan 2024 00:00:00 GMT"),
                ("Server", "bench"),
                ("Cache-Control", "no-store"),
                ("X-Request-Id", "abc"),
            ]),
            body: Body::from_bytes(body.to_string()),
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

/// Seconds per call of `f`, best of `reps` runs of `iters` calls.
fn time_per_call(reps: usize, iters: usize, mut f: impl FnMut()) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        best = best.min(t.elapsed().as_secs_f64() / iters as f64);
    }
    best
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (reps, budget) = if quick {
        (2, Duration::from_millis(30))
    } else {
        (7, Duration::from_millis(250))
    };
    let plain = Comparator::new(&pair(""));
    let ruled = Comparator::new(&pair(RULES));
    let unordered = Comparator::new(&pair(UNORDERED));
    let base = Variant {
        respell: false,
        change: false,
        reverse: false,
    };
    let respelled = Variant {
        respell: true,
        ..base
    };
    let changed = Variant {
        change: true,
        ..base
    };
    let changed_respelled = Variant {
        respell: true,
        change: true,
        ..base
    };
    let reversed = Variant {
        reverse: true,
        respell: true,
        ..base
    };
    let mut worst: f64 = 0.0;
    for (size, tag) in [(1024, "1k"), (64 * 1024, "64k")] {
        let cases: Vec<(String, &Comparator, Variant, Variant)> = vec![
            (format!("json_{tag}_identical"), &plain, base, base),
            (
                format!("json_{tag}_equal_respelled"),
                &plain,
                base,
                respelled,
            ),
            (format!("json_{tag}_different"), &plain, base, changed),
            (
                format!("json_{tag}_different_respelled"),
                &plain,
                base,
                changed_respelled,
            ),
            (format!("json_{tag}_rules_equal"), &ruled, base, respelled),
            (format!("json_{tag}_rules_different"), &ruled, base, changed),
            (
                format!("json_{tag}_unordered_reversed"),
                &unordered,
                base,
                reversed,
            ),
        ];
        for (name, cmp, pv, mv) in cases {
            let n = items_for(size);
            let (pt, mt) = (document(n, pv), document(n, mv));
            let (pe, me) = (exchange(&pt), exchange(&mt));
            let first = cmp.compare("GET /api/items", &pe, &me);
            let diverged = first.diverged();
            if std::env::var_os("COMPARE_BENCH_SHOW").is_some() {
                eprintln!(
                    "{name}: {:?}",
                    first.differences.iter().take(5).collect::<Vec<_>>()
                );
            }
            let (pb, mb) = (pt.as_bytes(), mt.as_bytes());
            let mut compare = || {
                black_box(cmp.compare("GET /api/items", black_box(&pe), black_box(&me)));
            };
            let mut parse = || {
                let a = serde_json::from_slice::<serde_json::Value>(black_box(pb));
                let b = serde_json::from_slice::<serde_json::Value>(black_box(mb));
                black_box((a.is_ok(), b.is_ok()));
            };
            // Each side gets its own iteration count, calibrated to the time budget.
            let iters = |f: &mut dyn FnMut()| {
                let probe = time_per_call(1, 3, &mut *f);
                ((budget.as_secs_f64() / probe.max(1e-9)) as usize).clamp(3, 1_000_000)
            };
            let (ci, pi) = (iters(&mut compare), iters(&mut parse));
            let mut t_cmp = f64::INFINITY;
            let mut t_parse = f64::INFINITY;
            for _ in 0..reps {
                t_cmp = t_cmp.min(time_per_call(1, ci, &mut compare));
                t_parse = t_parse.min(time_per_call(1, pi, &mut parse));
            }
            let ratio = t_cmp / t_parse;
            worst = worst.max(ratio);
            println!(
                "{{\"bench\":\"compare\",\"case\":\"{name}\",\"bytes\":{},\"diverged\":{diverged},\"pairs_per_s\":{:.0},\"parse_only_pairs_per_s\":{:.0},\"ratio\":{ratio:.3}}}",
                pt.len().max(mt.len()),
                1.0 / t_cmp,
                1.0 / t_parse,
            );
        }
    }
    println!(
        "{{\"bench\":\"compare\",\"case\":\"worst_ratio\",\"ratio\":{worst:.3},\"target\":2.0}}"
    );
}
