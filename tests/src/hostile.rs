//! Hostile clients: what a node's network carries besides well-formed HTTP. TLS and random bytes
//! on an HTTP port, a WebSocket after `101`, floods of short connections from sources spread
//! over 127.0.0.0/8, SYNs with random tuples written through a raw socket, and slowloris
//! connections whose request heads never end.
//!
//! Everything here sends to the address it is given; the tests point it at loopback or at a
//! network namespace of their own.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::http1;

/// A small deterministic generator (xorshift64*), so every run sends the same bytes.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (any value).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

/// A TLS 1.2/1.3 ClientHello record for `sni`, as a browser's first bytes look to a server that
/// expected HTTP: record type 22, version 3.1, a handshake of type 1 with a random, an empty
/// session id, three cipher suites, no compression and a server-name extension.
pub fn tls_client_hello(sni: &str) -> Vec<u8> {
    let name = sni.as_bytes();
    let mut sni_ext = Vec::new();
    sni_ext.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
    sni_ext.push(0);
    sni_ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni_ext.extend_from_slice(name);
    let mut exts = Vec::new();
    exts.extend_from_slice(&[0x00, 0x00]);
    exts.extend_from_slice(&(sni_ext.len() as u16).to_be_bytes());
    exts.extend_from_slice(&sni_ext);
    // supported_versions: TLS 1.3 and 1.2.
    exts.extend_from_slice(&[0x00, 0x2b, 0x00, 0x05, 0x04, 0x03, 0x04, 0x03, 0x03]);
    let mut hello = vec![0x03, 0x03];
    let mut rng = Rng::new(0x7115);
    for _ in 0..32 {
        hello.push(rng.next_u64() as u8);
    }
    hello.push(0);
    hello.extend_from_slice(&[0x00, 0x06, 0x13, 0x01, 0x13, 0x02, 0xc0, 0x2f]);
    hello.extend_from_slice(&[0x01, 0x00]);
    hello.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    hello.extend_from_slice(&exts);
    let mut hs = vec![0x01];
    hs.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&hello);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

/// `n` random bytes whose first byte is not ASCII, so they cannot begin a request line.
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut v: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
    if let Some(b) = v.first_mut() {
        *b |= 0x80;
    }
    v
}

/// Connect to `addr`, send `bytes`, read what the server answers within a second, and close.
/// Returns the answer.
pub async fn send_garbage(addr: SocketAddr, bytes: &[u8]) -> Result<Vec<u8>> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(bytes).await?;
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(1), s.read(&mut answer))
        .await
        .unwrap_or(Ok(0))?;
    answer.truncate(n);
    s.shutdown().await?;
    Ok(answer)
}

/// A WebSocket client frame (masked, as clients must) carrying `payload` as text.
pub fn ws_frame(payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0x81];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Upgrade to WebSocket at `target` (with `id` as `x-request-id`), then send `frames` frames that
/// look like HTTP requests (so a parser that did not stop at `101` would report exchanges) and
/// read their echoes. Returns the status of the upgrade response.
pub async fn websocket(addr: SocketAddr, target: &str, id: &str, frames: usize) -> Result<u16> {
    let mut s = http1::send_get(
        addr,
        target,
        &[
            ("x-request-id", id),
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "13"),
        ],
    )
    .await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await? == 0 {
            bail!("closed before the upgrade response");
        }
        head.push(byte[0]);
    }
    let status: u16 = String::from_utf8_lossy(&head)
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status line")?;
    for i in 0..frames {
        let payload = format!("GET /inside-the-tunnel/{i} HTTP/1.1\r\nHost: x\r\n\r\n");
        let frame = ws_frame(payload.as_bytes(), [1, 2, 3, (i % 251) as u8]);
        s.write_all(&frame).await?;
        let mut echo = vec![0u8; frame.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut echo)).await??;
    }
    s.shutdown().await?;
    Ok(status)
}

/// Raise the open-file limit to its hard maximum (floods and slowloris hold thousands of
/// sockets in this process).
pub fn raise_fd_limit() -> Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            bail!("getrlimit: {}", std::io::Error::last_os_error());
        }
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            bail!("setrlimit: {}", std::io::Error::last_os_error());
        }
    }
    Ok(lim.rlim_cur)
}

/// A source address in 127.0.0.0/8 other than 127.0.0.1, from `n`.
pub fn loopback_source(n: u64) -> Ipv4Addr {
    let x = n % (250 * 250 * 250);
    Ipv4Addr::new(
        127,
        1 + (x / 62_500) as u8,
        (x / 250 % 250) as u8,
        1 + (x % 250) as u8,
    )
}

/// What a flood of short connections did.
#[derive(Clone, Debug, Default)]
pub struct FloodStats {
    /// Connections that got a complete response.
    pub ok: u64,
    /// Connections that failed (connect, write or read).
    pub failed: u64,
}

/// `count` short connections to `target`, `concurrency` at a time, each from its own source
/// address in 127.0.0.0/8: connect, `GET /n/ok/flood` with `Connection: close` and no
/// correlation id, read the response, close.
pub async fn short_connections(
    target: SocketAddr,
    count: u64,
    concurrency: usize,
) -> Result<FloodStats> {
    let next = Arc::new(AtomicU64::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (next, ok, failed) = (next.clone(), ok.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    break;
                }
                let source = SocketAddr::V4(SocketAddrV4::new(loopback_source(n), 0));
                match one_short(target, source).await {
                    Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    Ok(FloodStats {
        ok: ok.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
    })
}

async fn one_short(target: SocketAddr, source: SocketAddr) -> Result<()> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(source)?;
    let mut s = tokio::time::timeout(Duration::from_secs(10), sock.connect(target)).await??;
    let req = http1::encode_request(
        "GET",
        "/n/ok/flood",
        &target.to_string(),
        &[("connection", "close")],
        b"",
    );
    s.write_all(&req).await?;
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut all)).await??;
    if !all.starts_with(b"HTTP/1.1 200") {
        bail!("unexpected answer");
    }
    Ok(())
}

/// Where the source addresses of raw SYNs come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SynSources {
    /// 127.0.0.0/8: the server's SYN-ACK reaches a local address without a socket, whose
    /// kernel answers with a reset.
    Loopback,
    /// 198.18.0.0/15 (RFC 2544, benchmarking): unroutable in a namespace with only `lo`, so the
    /// SYN-ACK never leaves and the connection stays half-open, as with a spoofed flood.
    Unroutable,
}

fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        for c in part.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 packet carrying a TCP SYN, with correct IP and TCP checksums.
pub fn syn_packet(src: SocketAddrV4, dst: SocketAddrV4, seq: u32, ip_id: u16) -> [u8; 40] {
    let mut p = [0u8; 40];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&40u16.to_be_bytes());
    p[4..6].copy_from_slice(&ip_id.to_be_bytes());
    p[6] = 0x40;
    p[8] = 64;
    p[9] = libc::IPPROTO_TCP as u8;
    p[12..16].copy_from_slice(&src.ip().octets());
    p[16..20].copy_from_slice(&dst.ip().octets());
    let ip_sum = checksum(&[&p[..20]]);
    p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    p[20..22].copy_from_slice(&src.port().to_be_bytes());
    p[22..24].copy_from_slice(&dst.port().to_be_bytes());
    p[24..28].copy_from_slice(&seq.to_be_bytes());
    p[32] = 5 << 4;
    p[33] = 0x02;
    p[34..36].copy_from_slice(&64240u16.to_be_bytes());
    let mut pseudo = [0u8; 12];
    pseudo[..4].copy_from_slice(&src.ip().octets());
    pseudo[4..8].copy_from_slice(&dst.ip().octets());
    pseudo[9] = libc::IPPROTO_TCP as u8;
    pseudo[10..12].copy_from_slice(&20u16.to_be_bytes());
    let tcp_sum = checksum(&[&pseudo, &p[20..40]]);
    p[36..38].copy_from_slice(&tcp_sum.to_be_bytes());
    p
}

/// Write `count` SYNs with random source addresses (from `sources`), source ports and sequence
/// numbers to `dst` through a raw socket, at most `rate` per second. Blocking; the raw socket
/// lives in the calling thread's network namespace. Returns the number sent.
pub fn raw_syns(
    dst: SocketAddrV4,
    count: u64,
    rate: u64,
    sources: SynSources,
    seed: u64,
) -> Result<u64> {
    // SAFETY: plain socket(2); the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if fd < 0 {
        bail!("raw socket: {}", std::io::Error::last_os_error());
    }
    struct Fd(i32);
    impl Drop for Fd {
        fn drop(&mut self) {
            // SAFETY: closing the descriptor this guard owns.
            unsafe { libc::close(self.0) };
        }
    }
    let fd = Fd(fd);
    let to = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: dst.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(dst.ip().octets()),
        },
        sin_zero: [0; 8],
    };
    let mut rng = Rng::new(seed);
    let start = std::time::Instant::now();
    let mut sent = 0;
    for i in 0..count {
        let r = rng.next_u64();
        let ip = match sources {
            SynSources::Loopback => loopback_source(r),
            SynSources::Unroutable => {
                Ipv4Addr::new(198, 18 + (r >> 16 & 1) as u8, (r >> 8) as u8, r as u8)
            }
        };
        let port = 1024 + (r >> 24) as u16 % 64000;
        let pkt = syn_packet(SocketAddrV4::new(ip, port), dst, (r >> 32) as u32, i as u16);
        // SAFETY: sendto with a valid buffer and a correctly sized sockaddr_in.
        let n = unsafe {
            libc::sendto(
                fd.0,
                pkt.as_ptr().cast(),
                pkt.len(),
                0,
                (&to as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if n == pkt.len() as isize {
            sent += 1;
        }
        if rate > 0 && i % 256 == 255 {
            let due = Duration::from_secs_f64((i + 1) as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    Ok(sent)
}

/// A slowloris connection: a request head that is sent a little at a time and never ends.
pub struct Slow {
    stream: TcpStream,
    /// Bytes of the head sent so far.
    pub sent: usize,
}

impl Slow {
    /// Connect to `addr` and send the first `initial` bytes of a head (a request line, a Host
    /// header and the start of a long header value).
    pub async fn open(addr: SocketAddr, initial: usize) -> Result<Slow> {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut head =
            format!("GET /n/ok/slowloris HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ").into_bytes();
        head.resize(initial.max(head.len()), b's');
        stream.write_all(&head).await?;
        Ok(Slow {
            stream,
            sent: head.len(),
        })
    }

    /// Send one more byte of the never-ending header value.
    pub async fn trickle(&mut self) -> Result<()> {
        self.stream.write_all(b"s").await?;
        self.sent += 1;
        Ok(())
    }

    /// Close (FIN) without ever finishing the head.
    pub async fn close(mut self) -> Result<()> {
        self.stream.shutdown().await?;
        Ok(())
    }
}
