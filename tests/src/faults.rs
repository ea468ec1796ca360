//! A misbehaving upstream, and the clients that provoke it: servers that reset, close,
//! half-close or stall mid-response, send bodies of a gigabyte, heads of a megabyte or a gzip
//! bomb, or switch to WebSocket; clients that abort or half-close.
//!
//! A request's path says who misbehaves and how: `/{who}/{fault}[/{arg}]`, where `who` is `p`
//! (the primary), `m` (the mirror), `b` (both) or `n` (nobody). A server started as a [`Side`]
//! applies the fault only when `who` names it and otherwise answers normally, so a mirrored
//! request always has a well-behaved twin on the other side. Faults:
//!
//! | fault | the misbehaving side |
//! |---|---|
//! | `ok` | (nobody misbehaves) `200` with a small JSON body naming the path |
//! | `reset` | sends the head and 10 000 of 100 000 announced body bytes, then resets (`SO_LINGER` 0) |
//! | `cut` | the same, then closes normally (FIN) |
//! | `half` | the same, then shuts down its sending side (FIN) and keeps reading until the client closes |
//! | `close` | closes without answering |
//! | `slow/MS` | answers normally after MS milliseconds |
//! | `bighead/N` | answers with an `X-Big` header of N bytes |
//! | `gzipbomb` | answers `Content-Encoding: gzip` with [`gzip_bomb`] (1 GiB of zeros inflated) |
//! | `big/N` | (both sides send N bytes, paced to [`ServerOpts::big_rate`]) the last byte differs |
//! | `ws` | (both) a WebSocket upgrade request is answered `101`, then frames are echoed |
//!
//! A connection whose first bytes are not an HTTP request (TLS, random bytes) is read to its end
//! and answered with a few bytes of the same kind, as a TLS server would answer with an alert.
//! Requests are read with `Content-Length` bodies only; heads up to 4 MiB are accepted.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub use crate::demo::Side;
use crate::http1::{self, Resp};

/// Longest request head the fault server reads.
const MAX_HEAD: usize = 4 << 20;

/// Bytes announced by `reset`, `cut` and `half`, and the part sent before misbehaving.
pub const CUT_ANNOUNCED: usize = 100_000;
/// See [`CUT_ANNOUNCED`].
pub const CUT_SENT: usize = 10_000;

/// How a fault server behaves beyond its paths.
#[derive(Clone, Debug, Default)]
pub struct ServerOpts {
    /// Pace of `big/N` bodies in bytes per second (`None`: as fast as the socket takes them).
    pub big_rate: Option<u64>,
}

/// The primary's and the mirror's fault server, both with `opts`.
pub async fn start_pair(primary: SocketAddr, mirror: SocketAddr, opts: ServerOpts) -> Result<()> {
    start(Side::Primary, primary, opts.clone()).await?;
    start(Side::Mirror, mirror, opts).await?;
    Ok(())
}

/// Start a fault server playing `side` on `addr` in the current runtime; returns the bound
/// address. It runs until the runtime stops.
pub async fn start(side: Side, addr: SocketAddr, opts: ServerOpts) -> Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let opts = Arc::new(opts);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // EMFILE and friends: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let opts = opts.clone();
            tokio::spawn(async move {
                let _ = serve_conn(side, stream, &opts).await;
            });
        }
    });
    Ok(local)
}

/// A request as the fault server read it.
struct Head {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Read one request head (and skip its `Content-Length` body). `Ok(None)` at a clean end of
/// the connection; `Err` when the bytes are not HTTP (the caller treats the connection as such).
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Option<Head>> {
    let end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            bail!("head longer than {MAX_HEAD}");
        }
        let mut chunk = [0u8; 16384];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            bail!("connection closed inside a head");
        }
        buf.extend_from_slice(&chunk[..n]);
        if !buf[0].is_ascii_uppercase() {
            bail!("not HTTP");
        }
    };
    let text = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = text.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_string();
    let target = first.next().unwrap_or("").to_string();
    let path = target.split('?').next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let head = Head {
        method,
        path,
        headers,
    };
    let body_len: usize = head
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    buf.drain(..end);
    while buf.len() < body_len {
        let mut chunk = [0u8; 16384];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed inside a body");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    buf.drain(..body_len);
    Ok(Some(head))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The normal answer to `path`: identical on both sides.
pub fn normal(path: &str) -> Resp {
    Resp::json(200, &serde_json::json!({ "path": path, "ok": true }))
}

async fn serve_conn(side: Side, mut stream: TcpStream, opts: &ServerOpts) -> Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = Vec::new();
    loop {
        let head = match read_request(&mut stream, &mut buf).await {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(()),
            Err(_) if !buf.is_empty() && !buf[0].is_ascii_uppercase() => {
                return answer_non_http(stream, buf).await;
            }
            Err(e) => return Err(e),
        };
        let mut parts = head.path.trim_start_matches('/').splitn(3, '/');
        let who = parts.next().unwrap_or("");
        let fault = parts.next().unwrap_or("");
        let arg = parts.next().unwrap_or("");
        let mine = match side {
            Side::Primary => who == "p" || who == "b",
            Side::Mirror => who == "m" || who == "b",
        };
        if head.method == "HEAD" {
            bail!("HEAD is not served");
        }
        match (fault, mine) {
            ("big", _) => {
                let n: u64 = arg.parse().context("big/N")?;
                send_big(&mut stream, n, mine, opts.big_rate).await?;
            }
            ("ws", _) if head.header("upgrade").is_some() => {
                // No Sec-WebSocket-Accept: the test client does not check it, and parity does
                // not read it (computing it would need SHA-1 here for nothing).
                stream
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                    .await?;
                return echo(stream, buf).await;
            }
            ("reset" | "cut" | "half", true) => {
                let mut out = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {CUT_ANNOUNCED}\r\n\r\n"
                )
                .into_bytes();
                out.extend(std::iter::repeat_n(b'x', CUT_SENT));
                stream.write_all(&out).await?;
                stream.flush().await?;
                // Let the bytes leave before the connection ends, so the capture sees them.
                tokio::time::sleep(Duration::from_millis(50)).await;
                match fault {
                    "reset" => {
                        reset(&stream);
                        return Ok(());
                    }
                    "cut" => return Ok(()),
                    _ => {
                        stream.shutdown().await?;
                        let mut sink = [0u8; 4096];
                        while stream.read(&mut sink).await.unwrap_or(0) > 0 {}
                        return Ok(());
                    }
                }
            }
            ("close", true) => return Ok(()),
            ("slow", true) => {
                let ms: u64 = arg.parse().context("slow/MS")?;
                tokio::time::sleep(Duration::from_millis(ms)).await;
                write_resp(&mut stream, &normal(&head.path)).await?;
            }
            ("bighead", true) => {
                let n: usize = arg.parse().context("bighead/N")?;
                let mut resp = normal(&head.path);
                resp.headers.push(("X-Big".into(), "b".repeat(n)));
                write_resp(&mut stream, &resp).await?;
            }
            ("gzipbomb", true) => {
                let bomb = gzip_bomb();
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
                    bomb.len()
                );
                stream.write_all(head.as_bytes()).await?;
                stream.write_all(bomb).await?;
            }
            _ => write_resp(&mut stream, &normal(&head.path)).await?,
        }
        // A client that asked for `Connection: close` reads to the end of the connection.
        if head
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
        {
            stream.shutdown().await?;
            return Ok(());
        }
    }
}

async fn write_resp(stream: &mut TcpStream, resp: &Resp) -> Result<()> {
    stream.write_all(&http1::encode_response(resp)).await?;
    Ok(())
}

/// Reset `stream` when it is dropped: `SO_LINGER` with a zero timeout makes close send RST.
pub fn reset(stream: &impl AsRawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on an open socket with a correctly sized `linger`.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// The `big/N` body: N bytes of a repeating 64 KiB pattern, the last byte flipped on the side
/// that misbehaves.
pub fn big_chunk() -> &'static [u8] {
    static CHUNK: OnceLock<Vec<u8>> = OnceLock::new();
    CHUNK.get_or_init(|| crate::fixture::pattern(64 << 10, 77))
}

/// The last byte of a `big/N` body on the side that misbehaves.
pub fn big_last_byte(n: u64, flipped: bool) -> u8 {
    let chunk = big_chunk();
    let b = chunk[((n - 1) % chunk.len() as u64) as usize];
    if flipped {
        b ^ 0x20
    } else {
        b
    }
}

async fn send_big(stream: &mut TcpStream, n: u64, flip: bool, rate: Option<u64>) -> Result<()> {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await?;
    let chunk = big_chunk();
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < n {
        let len = (n - sent).min(chunk.len() as u64) as usize;
        if sent + len as u64 == n {
            let mut last = chunk[..len].to_vec();
            last[len - 1] = big_last_byte(n, flip);
            stream.write_all(&last).await?;
        } else {
            stream.write_all(&chunk[..len]).await?;
        }
        sent += len as u64;
        if let Some(rate) = rate {
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
    Ok(())
}

/// A gzip member whose deflate stream inflates to 1 GiB of zeros (about 1 MB on the wire: deflate's
/// best ratio on a run of zeros is about 1000:1), built once.
///
/// Compressing a gigabyte takes a debug build most of a minute, so one MiB of zeros is
/// compressed and full-flushed (its blocks end byte-aligned, non-final, and refer to nothing
/// before them), that segment is repeated 1024 times, and an empty final block, the CRC-32 of
/// the whole (combined from the segment's) and its length end the member.
pub fn gzip_bomb() -> &'static [u8] {
    static BOMB: OnceLock<Vec<u8>> = OnceLock::new();
    BOMB.get_or_init(|| {
        let zeros = vec![0u8; 1 << 20];
        let mut segment = Vec::with_capacity(4096);
        let mut c = flate2::Compress::new(flate2::Compression::best(), false);
        let _ = c.compress_vec(&zeros, &mut segment, flate2::FlushCompress::Full);
        let mut crc_segment = flate2::Crc::new();
        crc_segment.update(&zeros);
        let repeats = (GZIP_BOMB_INFLATED >> 20) as usize;
        let mut crc = flate2::Crc::new();
        let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 255];
        out.reserve(segment.len() * repeats + 10);
        for _ in 0..repeats {
            out.extend_from_slice(&segment);
            crc.combine(&crc_segment);
        }
        out.extend_from_slice(&[0x03, 0x00]);
        out.extend_from_slice(&crc.sum().to_le_bytes());
        out.extend_from_slice(&(GZIP_BOMB_INFLATED as u32).to_le_bytes());
        out
    })
}

/// What [`gzip_bomb`] inflates to.
pub const GZIP_BOMB_INFLATED: u64 = 1 << 30;

async fn echo(mut stream: TcpStream, pending: Vec<u8>) -> Result<()> {
    if !pending.is_empty() {
        stream.write_all(&pending).await?;
    }
    let mut buf = [0u8; 16384];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n]).await?;
    }
}

async fn answer_non_http(mut stream: TcpStream, first: Vec<u8>) -> Result<()> {
    // A TLS server answers a ClientHello it cannot serve with an alert; anything else gets
    // bytes as unparseable as it sent.
    let answer: Vec<u8> = if first.first() == Some(&0x16) {
        vec![0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28]
    } else {
        first.iter().rev().take(64).copied().collect()
    };
    stream.write_all(&answer).await?;
    let mut sink = [0u8; 4096];
    while stream.read(&mut sink).await.unwrap_or(0) > 0 {}
    Ok(())
}

/// What a client saw of one exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// A complete response with this status.
    Status(u16),
    /// The connection failed or ended before a complete response.
    Failed(String),
}

/// A request on a new connection (closed afterwards); `Seen::Failed` when the server misbehaved.
pub async fn request_once(addr: SocketAddr, target: &str, id: &str) -> Seen {
    let r = async {
        let mut c = http1::Client::connect(addr).await?;
        c.request("GET", target, &[("x-request-id", id)], b"").await
    };
    match tokio::time::timeout(Duration::from_secs(30), r).await {
        Ok(Ok(got)) => Seen::Status(got.status),
        Ok(Err(e)) => Seen::Failed(e.to_string()),
        Err(_) => Seen::Failed("timed out".into()),
    }
}

/// The client gives up: sends the request, waits `after`, then resets the connection.
pub async fn abort(addr: SocketAddr, target: &str, id: &str, after: Duration) -> Result<()> {
    let s = http1::send_get(addr, target, &[("x-request-id", id)]).await?;
    tokio::time::sleep(after).await;
    reset(&s);
    Ok(())
}

/// The client half-closes: sends the request, shuts down its sending side at once, and reads
/// the response to the end of the connection. Returns the status.
pub async fn half_close_request(addr: SocketAddr, target: &str, id: &str) -> Result<u16> {
    let mut s = http1::send_get(
        addr,
        target,
        &[("x-request-id", id), ("connection", "close")],
    )
    .await?;
    s.shutdown().await?;
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut all)).await??;
    let text = String::from_utf8_lossy(&all);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no status in {text:?}"))
}

/// Send `GET target` with a header of `n` bytes (beyond any sane head limit) and read the
/// answer.
pub async fn big_head_request(addr: SocketAddr, target: &str, id: &str, n: usize) -> Seen {
    let filler = "h".repeat(n);
    let r = async {
        let mut c = http1::Client::connect(addr).await?;
        c.request(
            "GET",
            target,
            &[("x-request-id", id), ("x-filler", filler.as_str())],
            b"",
        )
        .await
    };
    match tokio::time::timeout(Duration::from_secs(30), r).await {
        Ok(Ok(got)) => Seen::Status(got.status),
        Ok(Err(e)) => Seen::Failed(e.to_string()),
        Err(_) => Seen::Failed("timed out".into()),
    }
}

/// Read a `big/N` response on a fresh connection without keeping it: returns (status, body
/// length, last byte).
pub async fn fetch_big(addr: SocketAddr, n: u64, who: &str, id: &str) -> Result<(u16, u64, u8)> {
    let target = format!("/{who}/big/{n}");
    let mut s = http1::send_get(addr, &target, &[("x-request-id", id)]).await?;
    let mut buf = vec![0u8; 1 << 20];
    let mut head = Vec::new();
    let body_start = loop {
        let k = s.read(&mut buf).await?;
        if k == 0 {
            bail!("closed before the head");
        }
        head.extend_from_slice(&buf[..k]);
        if let Some(i) = find(&head, b"\r\n\r\n") {
            break i + 4;
        }
    };
    let status: u16 = String::from_utf8_lossy(&head)
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("status")?;
    let mut got = (head.len() - body_start) as u64;
    let mut last = head.last().copied().unwrap_or(0);
    while got < n {
        let k = s.read(&mut buf).await?;
        if k == 0 {
            bail!("closed after {got} of {n} body bytes");
        }
        got += k as u64;
        last = buf[k - 1];
    }
    Ok((status, got, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bomb is assembled by hand (header, a repeated full-flushed segment, a final block,
    /// CRC and length), so the agent's `decode_error` on it could be a format mistake here
    /// instead of its inflation limit: `gzip -t`-style decoding by an independent
    /// implementation must accept it and yield exactly 1 GiB.
    #[test]
    fn the_gzip_bomb_is_a_valid_member_of_one_gibibyte() {
        use std::io::{Read, Write};
        if !crate::env::require_tools(&["gzip"]) {
            return;
        }
        let bomb = gzip_bomb();
        assert!(
            bomb.len() < 2 << 20,
            "about 1 MB on the wire: {}",
            bomb.len()
        );
        let mut child = std::process::Command::new("gzip")
            .arg("-dc")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("gzip starts");
        let mut stdin = child.stdin.take().expect("stdin");
        let writer = std::thread::spawn(move || stdin.write_all(bomb));
        let mut out = child.stdout.take().expect("stdout");
        let mut buf = vec![0u8; 1 << 20];
        // gzip checks the CRC-32 of what it inflated, so counting is enough here.
        let mut total = 0u64;
        loop {
            let n = out.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        writer.join().expect("writer").expect("write");
        let status = child.wait().expect("gzip exits");
        assert!(
            status.success(),
            "gzip rejected the bomb (bad CRC or length): {status}"
        );
        assert_eq!(total, GZIP_BOMB_INFLATED);
    }
}
