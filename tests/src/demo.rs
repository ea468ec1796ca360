//! The demo: a primary service, a "rewritten" mirror with known behaviours, and a client that
//! mirrors every request to both with the same `x-request-id`, as a mirroring proxy would.
//!
//! The behaviours are injected on purpose and listed in [`expected_findings`], so the demo (and
//! the end-to-end tests that reuse it) can check that parity reports exactly them:
//! - `GET /api/orders/{id}`: `total` off by 0.05% (within the 0.1% tolerance: not reported), `tax`
//!   off by 3% (beyond it: reported), `items` reversed (declared unordered: not reported),
//!   `meta.generated_at` differs (ignored by the config: not reported).
//! - `GET /api/users/{id}`: `email` missing on the mirror for user ids divisible by four (20% of
//!   the users the mix asks for).
//! - `POST /api/orders`: the mirror answers 200 where the primary answers 201.
//! - `GET /api/search`: identical bodies; the mirror takes 15 ms longer (a latency regression).
//! - `GET /api/health`: identical.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use serde_json::json;
use tokio::net::TcpListener;

use crate::http1::{self, Client, Req, Resp};

/// Which service a demo upstream plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The service in production.
    Primary,
    /// The rewrite.
    Mirror,
}

/// Extra latency of the mirror on `GET /api/search`.
pub const SEARCH_DELAY: Duration = Duration::from_millis(15);

fn now_string() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

fn id_of(path: &str, prefix: &str) -> Option<u64> {
    path.strip_prefix(prefix)?.parse().ok()
}

/// The response of the demo service `side` to `req`.
pub fn respond(side: Side, req: &Req) -> Resp {
    let mirror = side == Side::Mirror;
    let server = if mirror {
        "orders-rs/2.0"
    } else {
        "orders-java/1.7"
    };
    let mut resp = match (req.method.as_str(), req.path()) {
        ("GET", p) if p.starts_with("/api/orders/") => match id_of(p, "/api/orders/") {
            Some(id) => {
                let mut items = vec![
                    json!({"sku": format!("A-{id}"), "qty": 1, "price": 9.99}),
                    json!({"sku": format!("B-{id}"), "qty": 2, "price": 4.5}),
                    json!({"sku": format!("C-{id}"), "qty": 1, "price": 20}),
                ];
                let subtotal: f64 = 9.99 + 2.0 * 4.5 + 20.0;
                let mut tax = subtotal * 0.2;
                let mut total = subtotal + tax;
                if mirror {
                    items.reverse();
                    total *= 1.0005;
                    tax *= 1.03;
                }
                Resp::json(
                    200,
                    &json!({
                        "id": id,
                        "items": items,
                        "subtotal": subtotal,
                        "tax": (tax * 100.0).round() / 100.0,
                        "total": (total * 100.0).round() / 100.0,
                        "currency": "EUR",
                        "meta": {"generated_at": now_string(), "source": "orders"},
                    }),
                )
            }
            None => Resp::json(404, &json!({"error": "no such order"})),
        },
        ("GET", p) if p.starts_with("/api/users/") => match id_of(p, "/api/users/") {
            Some(id) => {
                let mut user = json!({
                    "id": id,
                    "name": format!("user {id}"),
                    "email": format!("user{id}@example.com"),
                    "roles": ["customer"],
                    "meta": {"generated_at": now_string()},
                });
                if mirror && id % 4 == 0 {
                    if let Some(o) = user.as_object_mut() {
                        o.remove("email");
                    }
                }
                Resp::json(200, &user)
            }
            None => Resp::json(404, &json!({"error": "no such user"})),
        },
        ("POST", "/api/orders") => {
            let status = if mirror { 200 } else { 201 };
            Resp::json(status, &json!({"status": "created"}))
        }
        ("GET", "/api/search") => {
            let q = req.target.split("q=").nth(1).unwrap_or("");
            let mut r = Resp::json(
                200,
                &json!({"query": q, "results": [{"id": 1, "score": 0.9}, {"id": 2, "score": 0.5}]}),
            );
            if mirror {
                r.delay = SEARCH_DELAY;
            }
            r
        }
        ("GET", "/api/health") => Resp::json(200, &json!({"ok": true})),
        _ => Resp::json(404, &json!({"error": "not found"})),
    };
    resp.headers.push(("Server".into(), server.into()));
    resp.headers.push(("Date".into(), now_string()));
    resp
}

/// Start the demo service `side` on `addr`; runs until the runtime stops.
pub async fn start_upstream(side: Side, addr: SocketAddr) -> Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(http1::serve(listener, move |req| async move {
        respond(side, &req)
    }));
    Ok(local)
}

/// One request of the demo mix, chosen by its sequence number.
pub fn request_for(n: u64) -> (&'static str, String, Vec<u8>) {
    match n % 10 {
        0..=2 => ("GET", format!("/api/orders/{}", 1000 + n % 97), Vec::new()),
        3..=5 => ("GET", format!("/api/users/{}", n % 50), Vec::new()),
        6 => (
            "POST",
            "/api/orders".to_string(),
            br#"{"sku":"A-1","qty":1}"#.to_vec(),
        ),
        7 | 8 => ("GET", format!("/api/search?q=term{}", n % 13), Vec::new()),
        _ => ("GET", "/api/health".to_string(), Vec::new()),
    }
}

/// What the client did.
#[derive(Debug, Default)]
pub struct ClientStats {
    /// Requests sent to each side (equal when nothing failed).
    pub sent: u64,
    /// Requests that failed on either side.
    pub errors: u64,
}

/// Send the demo mix to `primary` and `mirror` with the same `x-request-id` on each pair of
/// requests, over `conns` keep-alive connections per side, at about `rate` requests per second,
/// for `duration` (or `count` requests when given).
pub async fn run_client(
    primary: SocketAddr,
    mirror: SocketAddr,
    conns: usize,
    rate: u32,
    duration: Duration,
    count: Option<u64>,
) -> Result<ClientStats> {
    let next = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let per_conn_interval = Duration::from_secs_f64(conns.max(1) as f64 / f64::from(rate.max(1)));
    let mut tasks = Vec::new();
    for c in 0..conns.max(1) {
        let (next, sent, errors) = (next.clone(), sent.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut p = Client::connect(primary).await?;
            let mut m = Client::connect(mirror).await?;
            let mut tick = tokio::time::interval(per_conn_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if start.elapsed() >= duration {
                    break;
                }
                let n = next.fetch_add(1, Ordering::Relaxed);
                if count.is_some_and(|c| n >= c) {
                    break;
                }
                let (method, target, body) = request_for(n);
                let id = format!("demo-{c}-{n:08}");
                let headers = [
                    ("x-request-id", id.as_str()),
                    ("content-type", "application/json"),
                ];
                let (a, b) = tokio::join!(
                    p.request(method, &target, &headers, &body),
                    m.request(method, &target, &headers, &body)
                );
                sent.fetch_add(1, Ordering::Relaxed);
                if a.is_err() || b.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                    p = Client::connect(primary).await?;
                    m = Client::connect(mirror).await?;
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(ClientStats {
        sent: sent.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
    })
}

/// The configuration the demo runs parity with (pairs, rules, server).
pub fn config(primary: SocketAddr, mirror: SocketAddr, listen: SocketAddr) -> String {
    format!(
        r#"# parity demo configuration (written by the demo; see README for every key)
[capture]
engine = "tc"
interfaces = ["lo"]

[server]
listen = "{listen}"

[[pair]]
name = "orders"
primary = "{primary}"
mirror = "{mirror}"
match_timeout = "5s"
ignore_headers = ["date", "server"]

[[pair.rule]]
path = "$.meta.generated_at"
action = "ignore"

[[pair.rule]]
path = "$.items"
action = "unordered"

[[pair.rule]]
path = "$.total"
action = "numeric"
relative = 0.001

[[pair.rule]]
path = "$.tax"
action = "numeric"
relative = 0.001
"#
    )
}

/// One finding the demo expects in the report.
#[derive(Clone, Debug, PartialEq)]
pub enum Finding {
    /// `(endpoint, path, kind)` differs, on about `share` of the endpoint's comparisons.
    Difference {
        /// Endpoint label.
        endpoint: &'static str,
        /// Collapsed path.
        path: &'static str,
        /// Kind.
        kind: &'static str,
        /// Expected share of compared pairs (0..1).
        share: f64,
    },
    /// The endpoint is a latency regression.
    SlowerMirror {
        /// Endpoint label.
        endpoint: &'static str,
    },
}

/// What parity must report for the demo mix, and nothing else.
pub fn expected_findings() -> Vec<Finding> {
    vec![
        Finding::Difference {
            endpoint: "GET /api/orders/{id}",
            path: "$.tax",
            kind: "value",
            share: 1.0,
        },
        Finding::Difference {
            endpoint: "GET /api/users/{id}",
            path: "$.email",
            kind: "missing",
            share: 0.2,
        },
        Finding::Difference {
            endpoint: "POST /api/orders",
            path: "status",
            kind: "value",
            share: 1.0,
        },
        Finding::SlowerMirror {
            endpoint: "GET /api/search",
        },
    ]
}

/// Check a summary report (JSON) against [`expected_findings`]: every expected finding present
/// with about its share, no other difference, no other latency regression. Returns the problems.
pub fn check_report(report: &serde_json::Value) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(pair) = report["pairs"].as_array().and_then(|p| p.first()) else {
        return vec!["the report has no pair".into()];
    };
    let expected = expected_findings();
    let endpoints = pair["endpoints"].as_array().cloned().unwrap_or_default();
    for e in &endpoints {
        let name = e["endpoint"].as_str().unwrap_or("");
        let compared = e["compared"].as_u64().unwrap_or(0);
        for d in e["differences"].as_array().cloned().unwrap_or_default() {
            let (path, kind) = (
                d["path"].as_str().unwrap_or(""),
                d["kind"].as_str().unwrap_or(""),
            );
            let count = d["count"].as_u64().unwrap_or(0);
            let want = expected.iter().find_map(|f| match f {
                Finding::Difference {
                    endpoint,
                    path: p,
                    kind: k,
                    share,
                } if *endpoint == name && *p == path && *k == kind => Some(*share),
                _ => None,
            });
            match want {
                None => problems.push(format!(
                    "unexpected difference on {name}: {path} ({kind}) in {count} of {compared} pairs"
                )),
                Some(share) => {
                    let got = count as f64 / compared.max(1) as f64;
                    if (got - share).abs() > 0.05 {
                        problems.push(format!(
                            "{name}: {path} ({kind}) differed in {got:.3} of pairs, expected {share}"
                        ));
                    }
                }
            }
        }
    }
    for f in &expected {
        match f {
            Finding::Difference {
                endpoint,
                path,
                kind,
                ..
            } => {
                let found = endpoints.iter().any(|e| {
                    e["endpoint"] == *endpoint
                        && e["differences"].as_array().is_some_and(|ds| {
                            ds.iter().any(|d| d["path"] == *path && d["kind"] == *kind)
                        })
                });
                if !found {
                    problems.push(format!("missing finding: {endpoint} {path} ({kind})"));
                }
            }
            Finding::SlowerMirror { endpoint } => {
                let found = pair["latency_regressions"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|x| x["endpoint"] == *endpoint));
                if !found {
                    problems.push(format!("missing latency regression on {endpoint}"));
                }
            }
        }
    }
    for r in pair["latency_regressions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let name = r["endpoint"].as_str().unwrap_or("");
        if !expected
            .iter()
            .any(|f| matches!(f, Finding::SlowerMirror { endpoint } if *endpoint == name))
        {
            problems.push(format!("unexpected latency regression on {name}"));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_covers_every_endpoint() {
        let mut seen = std::collections::BTreeSet::new();
        for n in 0..10 {
            let (m, t, _) = request_for(n);
            let path = t.split('?').next().unwrap_or("").to_string();
            let path = path
                .split('/')
                .map(|s| {
                    if s.chars().all(|c| c.is_ascii_digit()) && !s.is_empty() {
                        "{id}"
                    } else {
                        s
                    }
                })
                .collect::<Vec<_>>()
                .join("/");
            seen.insert(format!("{m} {path}"));
        }
        assert_eq!(seen.len(), 5, "{seen:?}");
    }

    #[test]
    fn primary_and_mirror_differ_only_where_documented() {
        let req = |m: &str, t: &str| Req {
            method: m.into(),
            target: t.into(),
            ..Req::default()
        };
        let body = |side, m, t| -> serde_json::Value {
            serde_json::from_slice(&respond(side, &req(m, t)).body).unwrap()
        };
        let (p, m) = (
            body(Side::Primary, "GET", "/api/users/4"),
            body(Side::Mirror, "GET", "/api/users/4"),
        );
        assert!(p.get("email").is_some() && m.get("email").is_none());
        let (p, m) = (
            body(Side::Primary, "GET", "/api/users/5"),
            body(Side::Mirror, "GET", "/api/users/5"),
        );
        assert_eq!(p["email"], m["email"]);
        let (p, m) = (
            body(Side::Primary, "GET", "/api/orders/7"),
            body(Side::Mirror, "GET", "/api/orders/7"),
        );
        let (pt, mt) = (p["total"].as_f64().unwrap(), m["total"].as_f64().unwrap());
        assert!(pt != mt && ((pt - mt) / pt).abs() < 0.001);
        let (px, mx) = (p["tax"].as_f64().unwrap(), m["tax"].as_f64().unwrap());
        assert!(((px - mx) / px).abs() > 0.01);
        assert_eq!(
            respond(Side::Primary, &req("POST", "/api/orders")).status,
            201
        );
        assert_eq!(
            respond(Side::Mirror, &req("POST", "/api/orders")).status,
            200
        );
    }
}
