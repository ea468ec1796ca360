//! The web view in a real browser: headless Chromium loads `/ui` from `parity-agent serve` over
//! a store written by `replay`, and the rendered DOM must show the pairs, endpoints, rates,
//! field counts and a record side by side with its differing lines highlighted, with no
//! secret anywhere. Screenshots are left in `target/test-artifacts/` for people to look at.
//!
//! Without Chromium the test skips with a loud message; under `CI=true` it fails instead.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn chromium() -> Option<PathBuf> {
    let found = [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists());
    if found.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("chromium is missing and CI=true: refusing to skip the browser test");
        }
        eprintln!("SKIPPED: the web view browser test needs chromium (/usr/bin/chromium); install it (apt-get install chromium)");
    }
    found
}

/// Run headless Chromium on `url` with `mode` (`--dump-dom` or `--screenshot=PATH`); returns
/// stdout. Each run gets a fresh profile directory.
fn browse(chrome: &Path, url: &str, mode: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(chrome)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1400,1000",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(mode)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish on {url}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    reader.join().unwrap()
}

fn dom(chrome: &Path, url: &str) -> String {
    let d = browse(chrome, url, "--dump-dom");
    assert!(d.contains("<main id=\"app\""), "no page from {url}: {d}");
    d
}

fn screenshot(chrome: &Path, url: &str, name: &str) -> PathBuf {
    let path = artifacts_dir().join(name);
    let _ = std::fs::remove_file(&path);
    browse(chrome, url, &format!("--screenshot={}", path.display()));
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "screenshot {} is missing or blank ({size} bytes)",
        path.display()
    );
    eprintln!("screenshot: {}", path.display());
    path
}

/// `<td …data-path="P"…>TEXT</td>` cells of the DOM with their classes.
fn cells(dom: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for part in dom.split("<td").skip(1) {
        let Some(end) = part.find('>') else { continue };
        let attrs = &part[..end];
        let attr = |name: &str| {
            attrs
                .split(&format!("{name}=\""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("")
                .to_string()
        };
        let text = part[end + 1..]
            .split("</td>")
            .next()
            .unwrap_or("")
            .to_string();
        out.push((attr("class"), attr("data-path"), text));
    }
    out
}

#[test]
fn the_web_view_shows_overview_endpoint_and_a_highlighted_record() {
    let Some(chrome) = chromium() else { return };
    let f = Fixture::new(0.5);
    replay(&f, &[]);
    let s = Server::start(&f.db, "127.0.0.1:0", &[], &[]);
    let page = s.get("/api/records?limit=1000").json();
    let profile = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["endpoint"] == "GET /api/users/{masked}/profile")
        .unwrap()["id"]
        .clone();

    // Overview: pairs, endpoints sorted by divergence, rates, not-compared reasons, latency.
    let overview = dom(&chrome, &s.url("/ui#/"));
    assert_clean("the overview", overview.as_bytes());
    for needle in [
        "pair ",
        "checkout",
        "search",
        "GET /api/orders/{id}",
        "GET /api/users/{masked}/profile",
        "POST /api/login",
        "GET /api/health",
        "25.0%",
        "100.0%",
        "0.0%",
        "23.8%",
        "timeout 1",
        "p50 mirror",
        "3.04 ms",
    ] {
        assert!(overview.contains(needle), "{needle} is not on the overview");
    }
    let pos = |n: &str| {
        overview
            .find(&format!("data-endpoint=\"{n}\""))
            .unwrap_or(usize::MAX)
    };
    assert!(
        pos("GET /api/users/{masked}/profile") < pos("GET /api/orders/{id}")
            && pos("GET /api/orders/{id}") < pos("GET /api/health"),
        "endpoints are sorted by divergence"
    );
    screenshot(&chrome, &s.url("/ui#/"), "ui-overview.png");

    // One endpoint: its fields with counts by kind, and its stored records.
    let ep_url = s.url("/ui#/pair/checkout/endpoint/GET%20%2Fapi%2Forders%2F%7Bid%7D");
    let ep = dom(&chrome, &ep_url);
    assert_clean("the endpoint view", ep.as_bytes());
    assert!(
        ep.contains("data-field=\"$.tax\""),
        "the field list has $.tax"
    );
    assert!(ep.contains("value (pairs)"));
    assert!(
        ep.contains("matched (kept for contrast)"),
        "keep_matched samples are listed"
    );
    assert!(ep.matches("data-record=").count() >= 2);
    screenshot(&chrome, &ep_url, "ui-endpoint.png");

    // One record: differences listed, both responses side by side, the differing lines
    // highlighted on each side, the rule-ignored one marked apart.
    let rec_url = s.url(&format!("/ui#/record/{profile}"));
    let rec = dom(&chrome, &rec_url);
    assert_clean("the record view", rec.as_bytes());
    assert!(rec.contains("5 differences"));
    let c = cells(&rec);
    let find = |path: &str, class: &str| {
        c.iter()
            .find(|(cl, p, _)| p == path && cl.split(' ').any(|x| x == class))
            .unwrap_or_else(|| panic!("no {class} cell at {path}"))
            .2
            .clone()
    };
    assert_eq!(find("$.tax", "hot-p"), "  \"tax\": 1.2");
    assert_eq!(find("$.tax", "hot-m"), "  \"tax\": 1.24");
    assert!(find("header:set-cookie", "hot-p").starts_with("Set-Cookie: [masked:"));
    assert!(find("$.password", "hot-m").contains("[masked:"));
    assert_eq!(
        find("$.meta.generated_at", "soft"),
        "    \"generated_at\": \"t1\""
    );
    let plain = c.iter().find(|(_, p, _)| p == "$.name").unwrap();
    assert!(
        plain.0.is_empty(),
        "an equal line is not highlighted: {plain:?}"
    );
    screenshot(&chrome, &rec_url, "ui-record.png");

    let records = dom(&chrome, &s.url("/ui#/records"));
    assert!(records.matches("data-record=").count() >= DIVERGED);
    let store = dom(&chrome, &s.url("/ui#/store"));
    assert!(store.contains("schema version") && store.contains("masked"));
    s.stop();
}

#[test]
fn the_page_asks_for_the_token_when_the_api_needs_one() {
    let Some(chrome) = chromium() else { return };
    let f = Fixture::new(0.0);
    replay(&f, &[]);
    let s = Server::start(&f.db, "0.0.0.0:0", &["--token", "sekrit-token"], &[]);
    let d = dom(&chrome, &s.url("/ui#/"));
    assert!(
        d.contains("id=\"token-form\"") && d.contains("API token required"),
        "{d}"
    );
    assert!(
        !d.contains("GET /api/orders/{id}"),
        "nothing is shown without the token"
    );
    screenshot(&chrome, &s.url("/ui#/"), "ui-token.png");
    s.stop();
}
