//! parity-load: many concurrent keep-alive HTTP/1.1 connections to one server plus a steady
//! trickle of requests on them, for `cargo xtask bench memory`.
//!
//! Connections come from source addresses spread over 127.0.0.0/8 (`--per-source` each, bound
//! explicitly with `IP_BIND_ADDRESS_NO_PORT`, so the ephemeral port range applies per source and
//! 100k connections fit). Each connection sends one request at once, then one every
//! `--interval` seconds (with a random phase) until the end. It prints one JSON line when every
//! connection is open (or failed) and one at the end, then exits, closing everything. The end
//! comes after `--hold` seconds or, with `--until-stdin-closes`, when stdin closes if that is
//! earlier (so the bench holds the connections exactly while it measures); the connect phase is bounded by `--connect-timeout`.
//! One process holds as many connections as its open-file limit allows: where that limit cannot
//! be raised (no `CAP_SYS_RESOURCE`), run several with distinct `--source-offset`s.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

#[derive(Parser)]
#[command(about = "many concurrent keep-alive connections with a steady trickle of requests")]
struct Args {
    /// The server.
    #[arg(long)]
    target: SocketAddr,
    /// Concurrent connections.
    #[arg(long, default_value_t = 100_000)]
    connections: u64,
    /// Connections per source address (127.10.0.1, 127.10.0.2, ...).
    #[arg(long, default_value_t = 1000)]
    per_source: u64,
    /// Index of this process's first connection in the source numbering (so several processes
    /// use distinct sources).
    #[arg(long, default_value_t = 0)]
    source_offset: u64,
    /// Connection attempts in flight at once.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Longest time for opening every connection, seconds.
    #[arg(long, default_value_t = 180.0)]
    connect_timeout: f64,
    /// Longest time to keep every connection open after the last one opened, seconds.
    #[arg(long, default_value_t = 20.0)]
    hold: f64,
    /// End the hold early when stdin closes.
    #[arg(long)]
    until_stdin_closes: bool,
    /// Seconds between two requests on one connection.
    #[arg(long, default_value_t = 10.0)]
    interval: f64,
}

#[derive(Default)]
struct Counters {
    connected: AtomicU64,
    failed: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
}

/// The i-th source address: 127.x.y.z with z in 1..=250, so none is a .0 or .255.
fn source(i: u64, per_source: u64) -> Ipv4Addr {
    let s = i / per_source.max(1);
    let z = (s % 250) as u8 + 1;
    let y = ((s / 250) % 250) as u8;
    let x = 10 + ((s / 62_500) % 200) as u8;
    Ipv4Addr::new(127, x, y, z)
}

async fn connect(src: Ipv4Addr, target: SocketAddr) -> Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt on a socket we own, with a pointer to a live c_int of the given size.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        bail!(
            "IP_BIND_ADDRESS_NO_PORT: {}",
            std::io::Error::last_os_error()
        );
    }
    sock.bind(SocketAddr::V4(SocketAddrV4::new(src, 0)))?;
    let s = tokio::time::timeout(Duration::from_secs(10), sock.connect(target))
        .await
        .context("connect timed out")??;
    s.set_nodelay(true)?;
    Ok(s)
}

/// One request and its response (a head with Content-Length, as nginx answers).
async fn request(s: &mut TcpStream) -> Result<()> {
    s.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
        .await?;
    let mut buf = [0u8; 512];
    let mut len = 0;
    loop {
        if len == buf.len() {
            bail!("response head longer than {} bytes", buf.len());
        }
        let n = s.read(&mut buf[len..]).await?;
        if n == 0 {
            bail!("connection closed");
        }
        len += n;
        let Some(end) = buf[..len].windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let body: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let mut have = len - (end + 4);
        while have < body {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                bail!("connection closed in a body");
            }
            have += n;
        }
        return Ok(());
    }
}

async fn connection(
    i: u64,
    args: Arc<Args>,
    c: Arc<Counters>,
    permits: Arc<tokio::sync::Semaphore>,
    end: tokio::sync::watch::Receiver<Option<Instant>>,
) {
    let opened = async {
        let _permit = permits.acquire().await?;
        let mut s = connect(source(i + args.source_offset, args.per_source), args.target).await?;
        request(&mut s).await?;
        anyhow::Ok(s)
    }
    .await;
    let mut s = match opened {
        Ok(s) => s,
        Err(_) => {
            c.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    c.connected.fetch_add(1, Ordering::Relaxed);
    c.requests.fetch_add(1, Ordering::Relaxed);
    // A phase spread evenly over the interval, so the load is steady rather than in waves.
    let phase = args.interval * ((i.wrapping_mul(0x9e37_79b9) % 1000) as f64 / 1000.0);
    let mut next = Instant::now() + Duration::from_secs_f64(phase);
    loop {
        tokio::time::sleep_until(next.into()).await;
        let stop_at = *end.borrow();
        if stop_at.is_some_and(|e| Instant::now() >= e) {
            return;
        }
        if request(&mut s).await.is_err() {
            c.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        c.requests.fetch_add(1, Ordering::Relaxed);
        next += Duration::from_secs_f64(args.interval);
    }
}

/// Raise the open-file limit to `n`: both limits when allowed, else the soft one up to the hard
/// one; fail when that is still below `n`.
fn raise_nofile(n: u64) -> Result<()> {
    let want = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: setrlimit with a valid rlimit value.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
        return Ok(());
    }
    let denied = std::io::Error::last_os_error();
    // SAFETY: an all-zero rlimit is valid; getrlimit writes into it.
    let mut cur: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: getrlimit with a pointer to a live rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut cur) } != 0 || cur.rlim_max < n {
        bail!(
            "setrlimit(RLIMIT_NOFILE, {n}): {denied}; the hard limit is {}: run fewer --connections per process, or raise it (root with CAP_SYS_RESOURCE)",
            cur.rlim_max
        );
    }
    let soft = libc::rlimit {
        rlim_cur: cur.rlim_max,
        rlim_max: cur.rlim_max,
    };
    // SAFETY: setrlimit with a valid rlimit value no higher than the hard limit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &soft) } != 0 {
        bail!(
            "setrlimit(RLIMIT_NOFILE, {}): {}",
            cur.rlim_max,
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = Arc::new(Args::parse());
    raise_nofile(args.connections + 64)?;
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
    let watch_stdin = args.until_stdin_closes;
    std::thread::spawn(move || {
        if !watch_stdin {
            // Keep the sender alive: the hold then ends only by its duration.
            loop {
                std::thread::park();
            }
        }
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        let _ = closed_tx.send(());
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let c = Arc::new(Counters::default());
        let permits = Arc::new(tokio::sync::Semaphore::new(args.connect_concurrency.max(1)));
        let (end_tx, end_rx) = tokio::sync::watch::channel(None);
        let started = Instant::now();
        for i in 0..args.connections {
            tokio::spawn(connection(
                i,
                args.clone(),
                c.clone(),
                permits.clone(),
                end_rx.clone(),
            ));
        }
        let bound = Duration::from_secs_f64(args.connect_timeout);
        while c.connected.load(Ordering::Relaxed) + c.failed.load(Ordering::Relaxed)
            < args.connections
            && started.elapsed() < bound
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!(
            "{{\"event\":\"connected\",\"connected\":{},\"failed\":{},\"secs\":{:.2}}}",
            c.connected.load(Ordering::Relaxed),
            c.failed.load(Ordering::Relaxed),
            started.elapsed().as_secs_f64()
        );
        let hold_start = Instant::now();
        let requests0 = c.requests.load(Ordering::Relaxed);
        let _ = end_tx.send(Some(hold_start + Duration::from_secs_f64(args.hold)));
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs_f64(args.hold)) => {}
            _ = closed_rx => {}
        }
        println!(
            "{{\"event\":\"done\",\"connected\":{},\"failed\":{},\"requests\":{},\"hold_requests\":{},\"hold_secs\":{:.2},\"errors\":{}}}",
            c.connected.load(Ordering::Relaxed),
            c.failed.load(Ordering::Relaxed),
            c.requests.load(Ordering::Relaxed),
            c.requests.load(Ordering::Relaxed) - requests0,
            hold_start.elapsed().as_secs_f64(),
            c.errors.load(Ordering::Relaxed)
        );
        anyhow::Ok(())
    })?;
    // Exit without waiting for the connection tasks: the kernel closes every socket.
    std::process::exit(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_spread_and_never_network_or_broadcast() {
        assert_eq!(source(0, 1000), Ipv4Addr::new(127, 10, 0, 1));
        assert_eq!(source(999, 1000), Ipv4Addr::new(127, 10, 0, 1));
        assert_eq!(source(1000, 1000), Ipv4Addr::new(127, 10, 0, 2));
        assert_eq!(source(250_000, 1000), Ipv4Addr::new(127, 10, 1, 1));
        for i in (0..10_000_000).step_by(997) {
            let o = source(i, 1).octets();
            assert!(o[3] != 0 && o[3] != 255, "{i}: {o:?}");
        }
    }
}
