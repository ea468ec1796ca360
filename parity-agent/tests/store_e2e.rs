//! The store end to end: `replay --config` writes records and the summary, `serve` exposes them
//! through `/api/*` and `/ui` (with the bearer token off loopback), and `diffs` lists and shows
//! them. Traffic is a synthetic capture (tests/src/pcapgen.rs).

mod common;

use common::*;
use serde_json::Value;

fn ids(v: &Value) -> Vec<i64> {
    v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect()
}

fn record_for<'a>(page: &'a Value, endpoint: &str) -> &'a Value {
    page["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["endpoint"] == endpoint)
        .unwrap_or_else(|| panic!("no record for {endpoint}"))
}

#[test]
fn replay_stores_records_and_serve_exposes_them() {
    let f = Fixture::new(0.0);
    let report = f.path("report.json");
    let out = replay(&f, &["--report", report.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("replay: stored {DIVERGED} diff records in ")),
        "{stderr}"
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();

    let s = Server::start(&f.db, "127.0.0.1:0", &[], &[]);
    // The overview of the replay, as stored when it ended.
    let summary = s.get("/api/summary").json();
    assert_eq!(summary, report, "the stored summary is the replay's report");
    let checkout = &summary["pairs"].as_array().unwrap()[0];
    assert_eq!(checkout["name"], "checkout");
    assert_eq!(checkout["compared"], 21);
    assert_eq!(checkout["diverged"], 5);
    assert_eq!(checkout["unmatched"]["timeout"], 1);

    let page = s.get("/api/records").json();
    assert_eq!(ids(&page), [6, 5, 4, 3, 2, 1], "newest first");
    assert!(page["next_before"].is_null());
    let profile = record_for(&page, "GET /api/users/{masked}/profile");
    assert_eq!(profile["difference_count"], 5);
    assert_eq!(profile["kinds"], serde_json::json!(["value"]));
    assert_eq!(profile["method"], "GET");
    assert!(profile["uri"]
        .as_str()
        .unwrap()
        .starts_with("/api/users/[masked:"));
    let login = record_for(&page, "POST /api/login");
    assert_eq!(
        (
            login["primary_status"].as_u64(),
            login["mirror_status"].as_u64()
        ),
        (Some(200), Some(401))
    );

    // Paging.
    let p1 = s.get("/api/records?limit=4").json();
    assert_eq!(ids(&p1), [6, 5, 4, 3]);
    assert_eq!(p1["next_before"], 3);
    let p2 = s.get("/api/records?limit=4&before=3").json();
    assert_eq!(ids(&p2), [2, 1]);
    assert!(p2["next_before"].is_null());
    // Filters.
    let orders = s
        .get("/api/records?pair=checkout&endpoint=GET%20%2Fapi%2Forders%2F%7Bid%7D")
        .json();
    assert_eq!(ids(&orders).len(), 2);
    let tax = s.get("/api/records?path=%24.tax&kind=value").json();
    assert_eq!(ids(&tax).len(), 3, "two orders and the profile");
    assert_eq!(ids(&s.get("/api/records?pair=search").json()).len(), 1);
    assert!(
        ids(&s.get("/api/records?since=1h").json()).is_empty(),
        "the capture is from 2025"
    );
    assert_eq!(ids(&s.get("/api/records?since=1764345600").json()).len(), 6);
    assert_eq!(ids(&s.get("/api/records?diverged=false").json()).len(), 0);

    // One record, whole.
    let id = profile["id"].as_i64().unwrap();
    let rec = s.get(&format!("/api/records/{id}")).json();
    assert_eq!(rec["pair"], "checkout");
    assert_eq!(rec["masked"], true);
    assert_eq!(rec["body_comparison"], "json");
    let paths: Vec<&str> = rec["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "header:set-cookie",
            "$.card",
            "$.password",
            "$.tax",
            "$.note"
        ]
    );
    let tax = &rec["differences"][3];
    assert_eq!(
        (tax["primary"].as_str(), tax["mirror"].as_str()),
        (Some("1.2"), Some("1.24"))
    );
    let body = rec["primary"]["response"]["body"]["text"].as_str().unwrap();
    assert!(
        body.contains("\"tax\": 1.2") && body.contains("\"name\": \"Jane\""),
        "{body}"
    );
    assert_eq!(rec["primary"]["response"]["body"]["capped"], false);
    assert_eq!(
        rec["mirror"]["latency_seconds"]
            .as_f64()
            .map(|l| (l * 1000.0).round()),
        Some(3.0)
    );
    // The IPv6 pair went through reassembly at a small MSS.
    let search = record_for(&page, "GET /search");
    let v6 = s.get(&format!("/api/records/{}", search["id"])).json();
    assert_eq!(v6["primary"]["server"], "[2001:db8::1]:8080");
    assert_eq!(v6["differences"][0]["path"], "$.took");

    // Errors are JSON with a status.
    for (path, status) in [
        ("/api/records/999", 404),
        ("/api/records/abc", 400),
        ("/api/records?limit=0", 400),
        ("/api/records?limit=5000", 400),
        ("/api/records?since=yesterday", 400),
        ("/api/records?colour=red", 400),
    ] {
        let r = s.get(path);
        assert_eq!(r.status, status, "{path}: {}", r.text());
        assert!(r.json()["error"].is_string(), "{path}");
    }

    let fields = s
        .get("/api/fields?pair=checkout&endpoint=GET%20%2Fapi%2Forders%2F%7Bid%7D")
        .json();
    assert_eq!(
        fields,
        serde_json::json!([{"pattern": "$.tax", "kind": "value", "records": 2}])
    );
    let eps = s.get("/api/endpoints").json();
    assert_eq!(eps.as_array().unwrap().len(), 5);
    let store = s.get("/api/store").json();
    assert_eq!(store["records"], 6);
    assert_eq!(store["schema_version"], 1);
    assert_eq!(store["runs"][0]["command"], "replay");
    assert_eq!(store["runs"][0]["masked"], true);
    assert!(store["writer"].is_null(), "serve does not write");

    // The page, its assets, and the open endpoints.
    let ui = s.get("/ui");
    assert_eq!(ui.status, 200);
    assert!(ui.text().contains("<script src=\"/ui/app.js\""));
    assert!(ui
        .header("content-security-policy")
        .unwrap()
        .contains("default-src 'none'"));
    assert_eq!(
        s.get("/ui/app.js").header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(s.get("/ui/style.css").status, 200);
    let root = s.get("/");
    assert_eq!((root.status, root.header("location")), (307, Some("/ui/")));
    assert!(s.get("/metrics").text().contains("# TYPE parity_up gauge"));
    assert_eq!(s.get("/healthz").status, 200);
    assert_eq!(s.get("/readyz").status, 200);
}

#[test]
fn api_needs_the_token_off_loopback_but_page_and_probes_do_not() {
    let f = Fixture::new(0.0);
    replay(&f, &[]);
    // Refused outright without a token.
    let out = run(
        &[
            "serve",
            "--db",
            f.db.to_str().unwrap(),
            "--listen",
            "0.0.0.0:0",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a loopback address"));

    for (extra, env) in [
        (vec![], vec![("PARITY_API_TOKEN", "t0k3n-from-env")]),
        (vec!["--token", "t0k3n-from-flag"], vec![]),
    ] {
        let token = if extra.is_empty() {
            "t0k3n-from-env"
        } else {
            "t0k3n-from-flag"
        };
        let s = Server::start(&f.db, "0.0.0.0:0", &extra, &env);
        for path in [
            "/api/summary",
            "/api/records",
            "/api/records/1",
            "/api/fields",
            "/api/endpoints",
            "/api/store",
        ] {
            let r = s.get(path);
            assert_eq!(r.status, 401, "{path} without a token");
            assert_eq!(r.header("www-authenticate"), Some("Bearer"));
            assert_eq!(
                s.get_with(path, "wrong").status,
                401,
                "{path} with a wrong token"
            );
            assert_eq!(s.get_with(path, token).status, 200, "{path} with the token");
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
            assert_eq!(s.get(path).status, 200, "{path} stays open");
        }
        s.stop();
    }
}

const LIST_FIELDS: [&str; 16] = [
    "id",
    "run_id",
    "time",
    "pair",
    "endpoint",
    "correlation_id",
    "method",
    "uri",
    "primary_status",
    "mirror_status",
    "primary_latency_seconds",
    "mirror_latency_seconds",
    "diverged",
    "difference_count",
    "kinds",
    "differences",
];

#[test]
fn diffs_lists_filters_and_shows_records() {
    let f = Fixture::new(0.0);
    replay(&f, &[]);
    let db = f.db.to_str().unwrap();
    let text = |args: &[&str]| {
        let mut a = vec!["diffs", "--db", db];
        a.extend_from_slice(args);
        let o = run(&a, &[]);
        assert!(
            o.status.success(),
            "{a:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        (
            String::from_utf8(o.stdout).unwrap(),
            String::from_utf8(o.stderr).unwrap(),
        )
    };
    let (list, _) = text(&[]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 1 + DIVERGED, "{list}");
    assert!(
        lines[0].starts_with("ID  TIME (UTC)") && lines[0].contains("FIRST DIFFERENCE"),
        "{list}"
    );
    assert!(
        lines[1].contains("search")
            && lines[1].contains("GET /search")
            && lines[1].contains("$.took (value)"),
        "{list}"
    );
    assert!(
        list.contains("POST /api/login") && list.contains("200/401"),
        "{list}"
    );
    assert!(!list.contains('\x1b'), "no colour off a terminal");
    let (only, _) = text(&["--pair", "search"]);
    assert_eq!(only.lines().count(), 2, "{only}");
    let (login, _) = text(&["--endpoint", "POST /api/login"]);
    assert_eq!(login.lines().count(), 2, "{login}");
    let (two, _) = text(&["--limit", "2"]);
    assert_eq!(two.lines().count(), 3);
    let (none, err) = text(&["--since", "1h"]);
    assert!(none.is_empty() && err.contains("no records"), "{err}");
    let (all, _) = text(&["--since", "100000d"]);
    assert_eq!(all.lines().count(), 1 + DIVERGED);

    // JSON: an array with the documented fields, nothing else.
    let (json, _) = text(&["--json"]);
    let v: Value = serde_json::from_str(&json).unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), DIVERGED);
    for r in arr {
        let mut keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut want = LIST_FIELDS.to_vec();
        want.sort_unstable();
        assert_eq!(keys, want);
        for d in r["differences"].as_array().unwrap() {
            let mut dk: Vec<&str> = d.as_object().unwrap().keys().map(String::as_str).collect();
            dk.sort_unstable();
            assert_eq!(dk, ["kind", "mirror", "path", "pattern", "primary"]);
        }
    }
    let (empty, _) = text(&["--json", "--since", "1h"]);
    assert_eq!(empty.trim(), "[]");

    // One record side by side.
    let profile = arr
        .iter()
        .find(|r| r["endpoint"] == "GET /api/users/{masked}/profile")
        .unwrap()["id"]
        .to_string();
    let (show, _) = text(&["show", &profile]);
    assert!(show.contains("5 differences:"), "{show}");
    assert!(!show.contains('\x1b'));
    let row = |needle: &str| {
        show.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle} in\n{show}"))
            .to_string()
    };
    let tax = row("\"tax\": 1.2");
    assert!(
        tax.starts_with("! ") && tax.contains("│ ! ") && tax.contains("\"tax\": 1.24"),
        "{tax}"
    );
    let gen = row("\"generated_at\": \"t1\"");
    assert!(gen.starts_with("~ "), "ignored by a rule: {gen}");
    assert!(row("primary 10.1.0.1:8080").contains("mirror 10.1.0.2:8080"));
    let (show_json, _) = text(&["show", &profile, "--json"]);
    let rec: Value = serde_json::from_str(&show_json).unwrap();
    assert_eq!(rec["differences"].as_array().unwrap().len(), 5);
    assert_eq!(rec["mirror"]["response"]["status"], 200);
    // Narrow terminals still get two columns.
    let narrow = run(
        &["diffs", "--db", db, "show", &profile],
        &[("COLUMNS", "80")],
    );
    let narrow = String::from_utf8(narrow.stdout).unwrap();
    assert!(
        narrow.lines().filter(|l| l.contains('│')).count() > 10,
        "{narrow}"
    );
    assert!(
        narrow
            .lines()
            .filter(|l| l.contains('│'))
            .all(|l| l.chars().count() <= 80),
        "{narrow}"
    );

    // Found through --config; failures exit 2 and say what to do.
    let via_config = run(&["diffs", "--config", f.config.to_str().unwrap()], &[]);
    assert_eq!(String::from_utf8(via_config.stdout).unwrap(), list);
    let missing = run(&["diffs", "--db", f.path("nope.db").to_str().unwrap()], &[]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("does not exist"));
    let absent = run(&["diffs", "--db", db, "show", "999"], &[]);
    assert_eq!(absent.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&absent.stderr).contains("no record 999"));
}

#[test]
fn runs_accumulate_and_the_latest_summary_wins() {
    let f = Fixture::new(0.0);
    replay(&f, &[]);
    replay(&f, &[]);
    let s = Server::start(&f.db, "127.0.0.1:0", &[], &[]);
    let store = s.get("/api/store").json();
    assert_eq!(store["runs"].as_array().unwrap().len(), 2);
    assert_eq!(store["records"].as_u64(), Some(2 * DIVERGED as u64));
    assert_eq!(store["runs"][0]["id"], 2, "newest first");
    assert_eq!(s.get("/api/summary").json()["pairs"][0]["compared"], 21);
}

#[test]
fn a_store_from_a_newer_parity_is_refused() {
    let f = Fixture::new(0.0);
    replay(&f, &[]);
    let c = rusqlite::Connection::open(&f.db).unwrap();
    c.pragma_update(None, "user_version", 99).unwrap();
    drop(c);
    let out = run(&["diffs", "--db", f.db.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("schema version 99") && err.contains("upgrade parity-agent"),
        "{err}"
    );
    let again = run(
        &[
            "replay",
            "--quiet",
            "--config",
            f.config.to_str().unwrap(),
            f.pcap.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(
        again.status.code(),
        Some(2),
        "replay refuses to write into it"
    );
}

#[test]
fn the_generated_capture_reads_back_segment_for_segment() {
    use parity_agent::capture::pcap::CaptureReader;
    let f = Fixture::new(0.0);
    let mut r = CaptureReader::open(&f.pcap).unwrap();
    let mut v6 = 0;
    let mut n = 0;
    let mut payload = 0;
    while let Some(seg) = r.next_segment().unwrap() {
        n += 1;
        payload += seg.payload.len();
        if seg.src.is_ipv6() {
            v6 += 1;
        }
    }
    let st = r.stats();
    assert_eq!(st.packets, n, "every frame is a TCP segment");
    assert!(
        v6 > 20,
        "the IPv6 connections are there, cut at MSS 536: {v6}"
    );
    assert!(payload > 10_000);
}

/// On a terminal `diffs show` colours the marks; `NO_COLOR` turns that off. The terminal is a
/// pseudo-terminal from util-linux `script`.
#[test]
fn diffs_colours_on_a_terminal_unless_no_color() {
    if !std::path::Path::new("/usr/bin/script").exists() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("util-linux `script` is missing and CI=true: refusing to skip");
        }
        eprintln!("SKIPPED: diffs colour test needs util-linux `script` for a terminal");
        return;
    }
    let f = Fixture::new(0.0);
    replay(&f, &[]);
    let cmd = format!("{} diffs --db {} show 1", bin(), f.db.display());
    let tty = |no_color: Option<&str>| {
        let mut c = std::process::Command::new("/usr/bin/script");
        c.args(["-qec", &cmd, "/dev/null"]).env_remove("NO_COLOR");
        if let Some(v) = no_color {
            c.env("NO_COLOR", v);
        }
        let o = c.output().unwrap();
        assert!(o.status.success());
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let coloured = tty(None);
    assert!(
        coloured.contains("\x1b[31m") && coloured.contains("\x1b[32m"),
        "{coloured}"
    );
    assert!(
        !tty(Some("1")).contains('\x1b'),
        "NO_COLOR=1 turns colour off"
    );
    assert!(tty(Some("")).contains('\x1b'), "an empty NO_COLOR does not");
}
