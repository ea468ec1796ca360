//! A test upstream with predictable answers: sized bodies, chunked bodies, echo, and small JSON.
//!
//! Routes: `GET /bytes/N` (N bytes, Content-Length), `GET /chunked/N` (N bytes, chunked),
//! `POST /echo` (the request body back), anything else a small JSON naming method and target.
//! Bodies are a deterministic pattern, so a test knows every byte without keeping copies.

use std::net::SocketAddr;

use anyhow::Result;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use crate::http1::{self, Req, Resp};

/// `n` bytes of a pattern that depends on `seed` (printable, so failures are readable).
pub fn pattern(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b'a' + (x % 26) as u8
        })
        .collect()
}

/// Lower-hex SHA-256.
pub fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// The fixture's answer to `req`.
pub fn respond(req: &Req) -> Resp {
    let path = req.path().to_string();
    let size = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|n| n.parse::<usize>().ok())
    };
    match req.method.as_str() {
        "GET" if size("/bytes/").is_some() => {
            let n = size("/bytes/").unwrap_or(0);
            Resp {
                status: 200,
                headers: vec![("Content-Type".into(), "application/octet-stream".into())],
                body: pattern(n, n as u64),
                chunked: false,
                delay: std::time::Duration::ZERO,
            }
        }
        "GET" if size("/chunked/").is_some() => {
            let n = size("/chunked/").unwrap_or(0);
            Resp {
                status: 200,
                headers: vec![("Content-Type".into(), "text/plain".into())],
                body: pattern(n, n as u64 + 1),
                chunked: true,
                delay: std::time::Duration::ZERO,
            }
        }
        "POST" | "PUT" if path == "/echo" => Resp {
            status: 200,
            headers: vec![("Content-Type".into(), "application/octet-stream".into())],
            body: req.body.clone(),
            chunked: false,
            delay: std::time::Duration::ZERO,
        },
        m => Resp::json(
            200,
            &serde_json::json!({"method": m, "target": req.target, "body_len": req.body.len()}),
        ),
    }
}

/// Serve the fixture on `addr` in the current runtime; returns the bound address.
pub async fn start(addr: SocketAddr) -> Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(http1::serve(listener, |req| async move { respond(&req) }));
    Ok(local)
}
