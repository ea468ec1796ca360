//! A tiny HTTP/1.1 server and keep-alive client over tokio, for test upstreams and clients.
//!
//! Deliberately small and explicit (Content-Length and chunked bodies, keep-alive, no TLS): the
//! tests need to know exactly which bytes went on the wire, which a full HTTP library hides.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// A parsed request as a handler sees it.
#[derive(Clone, Debug, Default)]
pub struct Req {
    /// Method.
    pub method: String,
    /// Request target.
    pub target: String,
    /// Header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Req {
    /// First value of a header (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
}

/// A response a handler returns.
#[derive(Clone, Debug)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Header fields (Content-Length is added).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
    /// Send the body chunked instead of with Content-Length.
    pub chunked: bool,
    /// Wait this long before answering.
    pub delay: Duration,
}

impl Resp {
    /// A JSON response.
    pub fn json(status: u16, body: &serde_json::Value) -> Resp {
        Resp {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
            chunked: false,
            delay: Duration::ZERO,
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Serve `handler` on `listener` until the task is dropped. Each connection is keep-alive.
pub async fn serve<H, F>(listener: TcpListener, handler: H)
where
    H: Fn(Req) -> F + Send + Sync + 'static,
    F: Future<Output = Resp> + Send,
{
    let handler = Arc::new(handler);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let _ = serve_conn(stream, handler).await;
        });
    }
}

async fn serve_conn<H, F>(stream: TcpStream, handler: Arc<H>) -> Result<()>
where
    H: Fn(Req) -> F + Send + Sync + 'static,
    F: Future<Output = Resp> + Send,
{
    stream.set_nodelay(true)?;
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    loop {
        let Some(lines) = read_head(&mut rd).await? else {
            return Ok(());
        };
        let mut parts = lines[0].split(' ');
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let headers = parse_headers(&lines[1..]);
        let mut req = Req {
            method,
            target,
            headers,
            body: Vec::new(),
        };
        // A client that sent `Expect: 100-continue` waits for the interim response before
        // sending its body.
        if req
            .header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
        {
            wr.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        req.body = read_body(&mut rd, &req.headers, false).await?;
        let close = req
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let resp = handler(req).await;
        if !resp.delay.is_zero() {
            tokio::time::sleep(resp.delay).await;
        }
        wr.write_all(&encode_response(&resp)).await?;
        if close {
            return Ok(());
        }
    }
}

/// The bytes of a response.
pub fn encode_response(resp: &Resp) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status)).into_bytes();
    for (n, v) in &resp.headers {
        out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    if resp.chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
        for chunk in resp.body.chunks(1000) {
            out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            out.extend_from_slice(chunk);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
    } else {
        out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", resp.body.len()).as_bytes());
        out.extend_from_slice(&resp.body);
    }
    out
}

async fn read_head<R: AsyncBufReadExt + Unpin>(rd: &mut R) -> Result<Option<Vec<String>>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = rd.read_line(&mut line).await?;
        if n == 0 {
            if lines.is_empty() {
                return Ok(None);
            }
            bail!("connection closed inside a message head");
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            if lines.is_empty() {
                continue;
            }
            return Ok(Some(lines));
        }
        lines.push(line);
        if lines.len() > 200 {
            bail!("head too long");
        }
    }
}

fn parse_headers(lines: &[String]) -> Vec<(String, String)> {
    lines
        .iter()
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect()
}

async fn read_body<R: AsyncBufReadExt + Unpin>(
    rd: &mut R,
    headers: &[(String, String)],
    until_close: bool,
) -> Result<Vec<u8>> {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        let mut body = Vec::new();
        loop {
            let mut size = String::new();
            rd.read_line(&mut size).await?;
            let size = size.trim().split(';').next().unwrap_or("");
            let n =
                usize::from_str_radix(size, 16).with_context(|| format!("chunk size {size:?}"))?;
            if n == 0 {
                // Trailers until an empty line.
                loop {
                    let mut l = String::new();
                    rd.read_line(&mut l).await?;
                    if l.trim().is_empty() {
                        return Ok(body);
                    }
                }
            }
            let start = body.len();
            body.resize(start + n, 0);
            rd.read_exact(&mut body[start..]).await?;
            let mut crlf = [0u8; 2];
            rd.read_exact(&mut crlf).await?;
        }
    }
    if let Some(len) = get("content-length") {
        let n: usize = len
            .parse()
            .with_context(|| format!("content-length {len:?}"))?;
        let mut body = vec![0; n];
        rd.read_exact(&mut body).await?;
        return Ok(body);
    }
    let mut body = Vec::new();
    if until_close {
        rd.read_to_end(&mut body).await?;
    }
    Ok(body)
}

/// A response as the client received it.
#[derive(Clone, Debug)]
pub struct Got {
    /// Status code.
    pub status: u16,
    /// Interim (1xx) codes received first.
    pub interim: Vec<u16>,
    /// Header fields.
    pub headers: Vec<(String, String)>,
    /// Body bytes (after de-chunking; no content decoding).
    pub body: Vec<u8>,
}

/// A keep-alive HTTP/1.1 client connection.
pub struct Client {
    rd: BufReader<tokio::net::tcp::OwnedReadHalf>,
    wr: tokio::net::tcp::OwnedWriteHalf,
    /// The server address.
    pub addr: SocketAddr,
}

impl Client {
    /// Connect to `addr`.
    pub async fn connect(addr: SocketAddr) -> Result<Client> {
        let s = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        s.set_nodelay(true)?;
        let (rd, wr) = s.into_split();
        Ok(Client {
            rd: BufReader::new(rd),
            wr,
            addr,
        })
    }

    /// Connect from a given local address (to spread sources over 127.0.0.0/8).
    pub async fn connect_from(addr: SocketAddr, local: SocketAddr) -> Result<Client> {
        let sock = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        sock.bind(local)?;
        let s = sock
            .connect(addr)
            .await
            .with_context(|| format!("connecting to {addr} from {local}"))?;
        s.set_nodelay(true)?;
        let (rd, wr) = s.into_split();
        Ok(Client {
            rd: BufReader::new(rd),
            wr,
            addr,
        })
    }

    /// Send raw request bytes without waiting for the answer (pipelining).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.wr.write_all(bytes).await?;
        Ok(())
    }

    /// Send a request with `Expect: 100-continue`: the head first, the body only after the
    /// server's `100 Continue`; returns the final response with the interim code recorded.
    pub async fn request_expect_continue(&mut self, target: &str, body: &[u8]) -> Result<Got> {
        let len = body.len().to_string();
        let head = encode_request(
            "POST",
            target,
            &self.addr.to_string(),
            &[("Expect", "100-continue"), ("Content-Length", len.as_str())],
            b"",
        );
        self.send_raw(&head).await?;
        let lines = read_head(&mut self.rd)
            .await?
            .ok_or_else(|| anyhow!("connection closed before 100 Continue"))?;
        if !lines[0].contains(" 100 ") {
            bail!("expected 100 Continue, got {:?}", lines[0]);
        }
        self.send_raw(body).await?;
        let mut got = self.read_response(false).await?;
        got.interim.insert(0, 100);
        Ok(got)
    }

    /// Read one response (after any interim responses). `head` says the request was HEAD.
    pub async fn read_response(&mut self, head: bool) -> Result<Got> {
        let mut interim = Vec::new();
        loop {
            let lines = read_head(&mut self.rd)
                .await?
                .ok_or_else(|| anyhow!("connection closed before a response"))?;
            let status: u16 = lines[0]
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| anyhow!("bad status line {:?}", lines[0]))?;
            let headers = parse_headers(&lines[1..]);
            if (100..200).contains(&status) && status != 101 {
                interim.push(status);
                continue;
            }
            let body = if head || status == 204 || status == 304 {
                Vec::new()
            } else {
                read_body(&mut self.rd, &headers, true).await?
            };
            return Ok(Got {
                status,
                interim,
                headers,
                body,
            });
        }
    }

    /// Send one request and read its response.
    pub async fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Got> {
        let bytes = encode_request(method, target, &self.addr.to_string(), headers, body);
        self.send_raw(&bytes).await?;
        self.read_response(method == "HEAD").await
    }
}

/// The bytes of a request with Content-Length (when there is a body) and a Host header.
pub fn encode_request(
    method: &str,
    target: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\n").into_bytes();
    for (n, v) in headers {
        out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    let has_framing = headers.iter().any(|(n, _)| {
        n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("transfer-encoding")
    });
    if !has_framing && (!body.is_empty() || method == "POST" || method == "PUT") {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// A new connection (no Nagle) that has sent `GET target` with `headers`, for tests that then
/// handle the raw stream themselves (resets, half closes, upgrades, partial reads).
pub async fn send_get(
    addr: SocketAddr,
    target: &str,
    headers: &[(&str, &str)],
) -> Result<TcpStream> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let req = encode_request("GET", target, &addr.to_string(), headers, b"");
    s.write_all(&req).await?;
    Ok(s)
}
