//! Masking end to end: secrets seeded into synthetic traffic (an Authorization bearer token, a
//! Cookie, a JWT in a query parameter, an e-mail address in the path and in JSON and text bodies,
//! Luhn-valid card numbers, a `password` JSON member, a password in a form body, Set-Cookie, a
//! custom `[[mask]] regex` secret, an e-mail address as a JSON member name) must appear in none of
//! the outputs: the database file and its WAL, the logs, `/metrics`, every `/api/*` route, the
//! web view's assets, `diffs` (text and JSON, list and show), `--exchanges` and `--report`.
//!
//! A control run with `--unmasked` proves the secrets did reach the agent.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use parity_agent::capture::pcap::CaptureReader;
use parity_agent::config::Config;
use parity_agent::metrics::Metrics;
use parity_agent::pipeline::{Pipeline, QueuePolicy, Shared};
use parity_agent::summary::Summary;

#[test]
fn no_secret_leaves_the_agent_through_any_output() {
    let f = Fixture::new(0.5);
    let exchanges = f.path("exchanges.jsonl");
    let report = f.path("report.json");
    let out = replay(
        &f,
        &[
            "--log",
            "debug",
            "--exchanges",
            exchanges.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(stderr.contains("replay: stored"), "{stderr}");
    assert_clean("replay's stdout", &out.stdout);
    assert_clean("replay's stderr (debug logs)", &out.stderr);

    let records = std::fs::read(&exchanges).unwrap();
    assert!(
        records.len() > 1000 && String::from_utf8_lossy(&records).contains("[masked:"),
        "exchange records were written and masked"
    );
    assert_clean("--exchanges records", &records);
    let report_bytes = std::fs::read(&report).unwrap();
    assert!(String::from_utf8_lossy(&report_bytes).contains("GET /api/users/{masked}/profile"));
    assert_clean("--report", &report_bytes);

    let db = store_bytes(&f.db);
    assert!(db.len() > 10_000);
    assert_clean("the database file and its WAL", &db);
    // The key stays beside the store, private.
    use std::os::unix::fs::PermissionsExt;
    let key = f.db.parent().unwrap().join("parity.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(&f.db).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // `diffs`: list and every record, as text and JSON.
    let dbs = f.db.to_str().unwrap();
    let list = run(&["diffs", "--db", dbs, "--limit", "1000", "--json"], &[]);
    assert!(list.status.success());
    assert_clean("diffs --json", &list.stdout);
    let list_json: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let ids: Vec<i64> = list_json
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert!(ids.len() >= DIVERGED, "{ids:?}");
    let text = run(&["diffs", "--db", dbs, "--limit", "1000"], &[]);
    assert!(text.status.success());
    assert_clean("diffs", &text.stdout);
    for id in &ids {
        let id = id.to_string();
        for json in [false, true] {
            let mut args = vec!["diffs", "--db", dbs, "show", &id];
            if json {
                args.push("--json");
            }
            let o = run(&args, &[]);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            assert_clean(&format!("diffs show {id} (json {json})"), &o.stdout);
            assert_clean(&format!("diffs show {id} stderr"), &o.stderr);
        }
    }

    // `serve` over the store: every API route, the page and its assets, metrics and probes.
    let server = Server::start(&f.db, "127.0.0.1:0", &[], &[]);
    let mut fetched = Vec::new();
    let mut get = |path: &str| {
        let r = server.get(path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_clean(path, &r.raw());
        fetched.push(path.to_string());
        r
    };
    let summary = get("/api/summary").json();
    let page = get("/api/records?limit=1000").json();
    for r in page["records"].as_array().unwrap() {
        get(&format!("/api/records/{}", r["id"]));
    }
    get("/api/endpoints");
    get("/api/store");
    get("/api/fields");
    for p in summary["pairs"].as_array().unwrap() {
        for e in p["endpoints"].as_array().unwrap() {
            let q = format!(
                "/api/fields?pair={}&endpoint={}",
                enc(p["name"].as_str().unwrap()),
                enc(e["endpoint"].as_str().unwrap())
            );
            get(&q);
            get(&format!(
                "/api/records?pair={}&endpoint={}",
                enc(p["name"].as_str().unwrap()),
                enc(e["endpoint"].as_str().unwrap())
            ));
        }
    }
    for path in [
        "/ui",
        "/ui/",
        "/ui/app.js",
        "/ui/style.css",
        "/metrics",
        "/healthz",
        "/readyz",
    ] {
        get(path);
    }
    assert!(fetched.len() > 20, "{fetched:?}");
    let serve_log = server.stop();
    assert_clean("serve's stderr (debug logs)", &serve_log);
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `/metrics` under live capture renders the same registry the pipeline fills; drive the
/// pipeline in process from the capture and check its labels.
#[test]
fn metrics_labels_hold_no_secret_from_url_paths() {
    let f = Fixture::new(0.0);
    let cfg = Config::load(&f.config).unwrap();
    let shared = Shared {
        summary: Arc::new(Mutex::new(Summary::new(&cfg.pairs))),
        metrics: Arc::new(Metrics::new()),
    };
    let mut p = Pipeline::new(&cfg, None, QueuePolicy::Block, shared.clone(), None);
    let mut reader = CaptureReader::open(&f.pcap).unwrap();
    while let Some(seg) = reader.next_segment().unwrap() {
        p.push(seg);
    }
    p.finish().unwrap();
    let text = shared.metrics.render();
    assert!(
        text.contains("endpoint=\"GET /api/users/{masked}/profile\""),
        "the label keeps its shape: {text}"
    );
    assert!(text.contains("endpoint=\"GET /api/orders/{id}\""));
    assert_clean("/metrics", text.as_bytes());
    let report = serde_json::to_vec(&shared.summary.lock().unwrap().report()).unwrap();
    assert_clean("the live summary", &report);
    let s = String::from_utf8_lossy(&report);
    assert!(s.contains("$.members['{masked}'].role"), "{s}");
}

/// Control: with `--unmasked` the same secrets do reach the outputs, so the checks above are
/// not passing for want of secrets.
#[test]
fn control_unmasked_outputs_hold_the_secrets() {
    let f = Fixture::new(0.0);
    let exchanges = f.path("exchanges.jsonl");
    let out = replay(
        &f,
        &["--unmasked", "--exchanges", exchanges.to_str().unwrap()],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("masking is OFF"));
    let db = store_bytes(&f.db);
    let found = leaks(&db);
    for must in [
        BEARER,
        COOKIE,
        PW_P,
        PW_M,
        PW_FORM,
        CUSTOM_P,
        SET_COOKIE_P,
        "jane.doe",
        "eyJhbGciOiJIUzI1NiJ9",
        CARD_P,
    ] {
        assert!(
            found.iter().any(|x| x == must),
            "{must} not in the unmasked store: {found:?}"
        );
    }
    let rec = std::fs::read(&exchanges).unwrap();
    assert!(leaks(&rec).iter().any(|x| x == BEARER));
    let show = run(&["diffs", "--db", f.db.to_str().unwrap(), "show", "1"], &[]);
    assert!(String::from_utf8_lossy(&show.stdout).contains("stored UNMASKED"));
}
