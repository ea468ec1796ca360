//! End to end with a real splitter: nginx's `mirror` module in front of the demo's primary and
//! mirror, parity capturing live on `lo`. The metrics and `/api/summary` must equal exactly the
//! divergences the demo injects for the requests this test sent, and nothing else. The same
//! traffic, captured by tcpdump in the test, replayed offline must give the same numbers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use parity_tests::agent::{metric_value, Agent};
use parity_tests::demo::{self, Side};
use parity_tests::env;
use parity_tests::http1::Client;
use parity_tests::tcpdump::Tcpdump;
use serde_json::Value;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

fn nginx_conf(
    dir: &std::path::Path,
    listen: u16,
    primary: SocketAddr,
    mirror: SocketAddr,
) -> String {
    format!(
        r#"worker_processes 1;
daemon off;
error_log {dir}/error.log;
pid {dir}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream primary {{ server {primary}; keepalive 16; }}
    upstream mirror  {{ server {mirror}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{listen};
        location / {{
            mirror /__mirror;
            mirror_request_body on;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Request-ID $request_id;
            proxy_pass http://primary;
        }}
        location = /__mirror {{
            internal;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Request-ID $request_id;
            proxy_pass http://mirror$request_uri;
        }}
    }}
}}
"#,
        dir = dir.display()
    )
}

/// Pairs compared per endpoint.
type PerEndpoint = BTreeMap<String, u64>;
/// Pairs that differed per (endpoint, path, kind).
type PerDifference = BTreeMap<(String, String, String), u64>;

/// What the demo injects, counted over the requests actually sent: per endpoint the number of
/// requests, and per (endpoint, path, kind) the number that must differ.
fn expected(ns: &[u64]) -> (PerEndpoint, PerDifference) {
    let mut per_endpoint = BTreeMap::new();
    let mut diffs = BTreeMap::new();
    for &n in ns {
        let (method, target, _) = demo::request_for(n);
        let ep = if target.starts_with("/api/orders/") {
            "GET /api/orders/{id}".to_string()
        } else if target.starts_with("/api/users/") {
            "GET /api/users/{id}".to_string()
        } else {
            format!("{method} {}", target.split('?').next().unwrap_or(""))
        };
        *per_endpoint.entry(ep.clone()).or_insert(0) += 1;
        let mut add = |path: &str, kind: &str| {
            *diffs
                .entry((ep.clone(), path.to_string(), kind.to_string()))
                .or_insert(0) += 1;
        };
        if target.starts_with("/api/orders/") {
            add("$.tax", "value");
        } else if let Some(id) = target.strip_prefix("/api/users/") {
            if id.parse::<u64>().map(|i| i % 4 == 0).unwrap_or(false) {
                add("$.email", "missing");
            }
        } else if method == "POST" {
            add("status", "value");
        }
    }
    (per_endpoint, diffs)
}

/// The (endpoint → compared) and ((endpoint, path, kind) → count) of a summary.
fn observed(summary: &Value) -> (PerEndpoint, PerDifference) {
    let mut per_endpoint = BTreeMap::new();
    let mut diffs = BTreeMap::new();
    for e in summary["pairs"][0]["endpoints"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let ep = e["endpoint"].as_str().unwrap_or("").to_string();
        per_endpoint.insert(ep.clone(), e["compared"].as_u64().unwrap_or(0));
        for d in e["differences"].as_array().cloned().unwrap_or_default() {
            diffs.insert(
                (
                    ep.clone(),
                    d["path"].as_str().unwrap_or("").to_string(),
                    d["kind"].as_str().unwrap_or("").to_string(),
                ),
                d["count"].as_u64().unwrap_or(0),
            );
        }
    }
    (per_endpoint, diffs)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

#[test]
fn nginx_mirror_live_and_offline_report_exactly_the_injected_divergences() -> Result<()> {
    if !env::require_root() || !env::require_tools(&["nginx", "tcpdump", "bpftool"]) {
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (p_port, m_port, n_port, s_port) = (free_port(), free_port(), free_port(), free_port());
    let primary: SocketAddr = format!("127.0.0.1:{p_port}").parse()?;
    let mirror: SocketAddr = format!("127.0.0.1:{m_port}").parse()?;
    let listen: SocketAddr = format!("127.0.0.1:{s_port}").parse()?;
    rt.block_on(async {
        demo::start_upstream(Side::Primary, primary).await?;
        demo::start_upstream(Side::Mirror, mirror).await
    })?;

    let dir = tempfile::tempdir()?;
    let conf = dir.path().join("nginx.conf");
    std::fs::write(&conf, nginx_conf(dir.path(), n_port, primary, mirror))?;
    let nginx = Killed(
        Command::new(env::which("nginx").context("nginx")?)
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(dir.path())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let pcap = dir.path().join("mirror.pcap");
    let tcpdump = Tcpdump::start(
        "lo",
        &pcap,
        &format!("tcp port {p_port} or tcp port {m_port}"),
    )?;

    let config = format!(
        "{}\n[limits]\nidle_timeout = \"30s\"\n",
        demo::config(primary, mirror, listen)
    );
    let mut agent = Agent::start_listening(&config, listen)?;
    std::thread::sleep(Duration::from_millis(500));

    // The known request mix, through nginx, one keep-alive connection per worker.
    let nginx_addr: SocketAddr = format!("127.0.0.1:{n_port}").parse()?;
    let count: u64 = 400;
    let sent: Vec<u64> = rt.block_on(async {
        let mut tasks = Vec::new();
        for w in 0..4u64 {
            tasks.push(tokio::spawn(async move {
                let mut c = Client::connect(nginx_addr).await?;
                let mut sent = Vec::new();
                for n in (w..count).step_by(4) {
                    let (method, target, body) = demo::request_for(n);
                    let got = c
                        .request(
                            method,
                            &target,
                            &[("content-type", "application/json")],
                            &body,
                        )
                        .await?;
                    anyhow::ensure!(got.status < 300, "{method} {target}: {}", got.status);
                    sent.push(n);
                }
                anyhow::Ok(sent)
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await??);
        }
        anyhow::Ok(all)
    })?;
    assert_eq!(sent.len() as u64, count);
    let (want_endpoints, want_diffs) = expected(&sent);

    // Wait until every pair was compared (the mirror of /api/search answers 15 ms late).
    let mut live = Value::Null;
    for _ in 0..100 {
        live = agent.summary()?;
        let compared = live["pairs"][0]["compared"].as_u64().unwrap_or(0);
        if compared >= count {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let (got_endpoints, got_diffs) = observed(&live);
    assert_eq!(
        got_endpoints, want_endpoints,
        "compared per endpoint (live)"
    );
    assert_eq!(got_diffs, want_diffs, "differences (live)");
    let unmatched: u64 = live["pairs"][0]["unmatched"]
        .as_object()
        .map(|o| o.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0);
    assert_eq!(unmatched, 0, "every id paired: {live:#}");
    assert!(
        demo::check_report(&live).is_empty(),
        "{:?}",
        demo::check_report(&live)
    );

    // /metrics agrees with the summary.
    let metrics = agent.metrics()?;
    for ((ep, _path, kind), n) in &want_diffs {
        let sample = format!(
            "parity_differences_total{{endpoint=\"{ep}\",kind=\"{kind}\",pair=\"orders\"}}"
        );
        assert_eq!(metric_value(&metrics, &sample), *n as f64, "{sample}");
    }
    for (ep, n) in &want_endpoints {
        let diverged: u64 = want_diffs
            .iter()
            .filter(|((e, _, _), _)| e == ep)
            .map(|(_, c)| *c)
            .max()
            .unwrap_or(0);
        let m = format!(
            "parity_comparisons_total{{endpoint=\"{ep}\",outcome=\"match\",pair=\"orders\"}}"
        );
        let d = format!(
            "parity_comparisons_total{{endpoint=\"{ep}\",outcome=\"diverged\",pair=\"orders\"}}"
        );
        assert_eq!(
            metric_value(&metrics, &m) + metric_value(&metrics, &d),
            *n as f64,
            "{ep}"
        );
        assert_eq!(metric_value(&metrics, &d), diverged as f64, "{ep} diverged");
    }
    assert_eq!(
        metric_value(
            &metrics,
            "parity_exchanges_total{pair=\"orders\",role=\"primary\"}"
        ),
        count as f64
    );
    assert_eq!(
        metric_value(
            &metrics,
            "parity_exchanges_total{pair=\"orders\",role=\"mirror\"}"
        ),
        count as f64
    );

    let status = agent.stop()?;
    assert!(status.success(), "agent exit: {status}");
    let dumped = tcpdump.stop()?;
    drop(nginx);
    assert_eq!(
        dumped.dropped, 0,
        "tcpdump lost packets ({dumped:?}): the offline comparison cannot be exact"
    );
    assert!(env::which("bpftool").is_some());
    assert_eq!(
        parity_tests::netns::parity_in_kernel()?,
        "",
        "nothing left attached"
    );

    // Offline: the tcpdump capture of the same traffic, replayed with the same configuration.
    let cfg_path = dir.path().join("parity.toml");
    std::fs::write(&cfg_path, &config)?;
    let report_path = dir.path().join("offline.json");
    let out = Command::new(env::agent_bin())
        .arg("replay")
        .arg("--config")
        .arg(&cfg_path)
        .arg("--report")
        .arg(&report_path)
        .arg(&pcap)
        .output()?;
    assert!(
        out.status.success(),
        "replay: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let offline: Value = serde_json::from_str(&std::fs::read_to_string(&report_path)?)?;
    let (off_endpoints, off_diffs) = observed(&offline);
    assert_eq!(
        off_endpoints, want_endpoints,
        "compared per endpoint (offline)"
    );
    assert_eq!(off_diffs, want_diffs, "differences (offline)");
    Ok(())
}
