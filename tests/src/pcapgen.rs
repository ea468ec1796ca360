//! Synthetic capture files: TCP connections carrying given bytes between given addresses,
//! written as a classic pcap file.
//!
//! [`TcpConn`] plays both ends of one connection: the three-way handshake (with an MSS option),
//! data cut into segments of at most the MSS (`PSH` on the last one, an `ACK` from the peer after
//! each burst), and a FIN exchange or a reset. [`Capture`] collects the frames (Ethernet, IPv4 or
//! IPv6, correct IPv4 and TCP checksums, so tshark and tcpdump read them as real traffic) with
//! their timestamps and writes them in time order, at microsecond or nanosecond resolution.
//! Connections can be interleaved: each keeps its own clock.
//!
//! For tests and benchmarks that need exact, reproducible traffic without live capture. It is
//! not a network simulator: no loss, reordering, windows or retransmission unless the caller
//! writes such segments itself with [`Capture::segment`]. std only, so it can be included from any
//! test crate.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

/// TCP flag bits.
pub mod flags {
    /// No more data from the sender.
    pub const FIN: u8 = 0x01;
    /// Synchronize sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push.
    pub const PSH: u8 = 0x08;
    /// The acknowledgment number is valid.
    pub const ACK: u8 = 0x10;
}

/// Timestamp resolution of the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Microseconds (magic `a1b2c3d4`), what most tools write.
    Micro,
    /// Nanoseconds (magic `a1b23c4d`).
    Nano,
}

/// The largest frame kept per packet (the file's snap length).
pub const SNAPLEN: u32 = 262_144;

/// Frames with their capture times, written as one pcap file.
#[derive(Clone, Debug)]
pub struct Capture {
    packets: Vec<(Duration, Vec<u8>)>,
    resolution: Resolution,
    ip_id: u16,
}

impl Default for Capture {
    fn default() -> Self {
        Capture::new()
    }
}

impl Capture {
    /// An empty capture with microsecond timestamps.
    pub fn new() -> Capture {
        Capture {
            packets: Vec::new(),
            resolution: Resolution::Micro,
            ip_id: 1,
        }
    }

    /// An empty capture with nanosecond timestamps.
    pub fn nanosecond() -> Capture {
        Capture {
            resolution: Resolution::Nano,
            ..Capture::new()
        }
    }

    /// Frames so far.
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    /// No frame yet.
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// Add one raw Ethernet frame captured at `ts` (time since the Unix epoch).
    pub fn frame(&mut self, ts: Duration, frame: Vec<u8>) {
        self.packets.push((ts, frame));
    }

    /// Add one TCP segment from `src` to `dst` (both IPv4 or both IPv6) at `ts`. An `SYN`
    /// carries an MSS option of `mss` when it is `Some`.
    #[allow(clippy::too_many_arguments)]
    pub fn segment(
        &mut self,
        ts: Duration,
        src: SocketAddr,
        dst: SocketAddr,
        seq: u32,
        ack: u32,
        tcp_flags: u8,
        mss: Option<u16>,
        payload: &[u8],
    ) {
        let mut tcp = Vec::with_capacity(24 + payload.len());
        tcp.extend_from_slice(&src.port().to_be_bytes());
        tcp.extend_from_slice(&dst.port().to_be_bytes());
        tcp.extend_from_slice(&seq.to_be_bytes());
        tcp.extend_from_slice(&ack.to_be_bytes());
        let options: &[u8] = &match mss {
            Some(m) => {
                let b = m.to_be_bytes();
                vec![2, 4, b[0], b[1]]
            }
            None => vec![],
        };
        let offset = (20 + options.len()) / 4;
        tcp.push((offset as u8) << 4);
        tcp.push(tcp_flags);
        tcp.extend_from_slice(&65_535u16.to_be_bytes());
        tcp.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
        tcp.extend_from_slice(options);
        tcp.extend_from_slice(payload);
        let mut frame = Vec::with_capacity(14 + 40 + tcp.len());
        frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01]);
        match (src.ip(), dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                frame.extend_from_slice(&0x0800u16.to_be_bytes());
                let sum = checksum(&[&pseudo_v4(&s.octets(), &d.octets(), tcp.len()), &tcp]);
                tcp[16..18].copy_from_slice(&sum.to_be_bytes());
                let mut ip = Vec::with_capacity(20);
                ip.push(0x45);
                ip.push(0);
                ip.extend_from_slice(&((20 + tcp.len()) as u16).to_be_bytes());
                ip.extend_from_slice(&self.ip_id.to_be_bytes());
                self.ip_id = self.ip_id.wrapping_add(1);
                ip.extend_from_slice(&0x4000u16.to_be_bytes()); // don't fragment
                ip.push(64);
                ip.push(6);
                ip.extend_from_slice(&[0, 0]);
                ip.extend_from_slice(&s.octets());
                ip.extend_from_slice(&d.octets());
                let sum = checksum(&[&ip]);
                ip[10..12].copy_from_slice(&sum.to_be_bytes());
                frame.extend_from_slice(&ip);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                frame.extend_from_slice(&0x86ddu16.to_be_bytes());
                let sum = checksum(&[&pseudo_v6(&s.octets(), &d.octets(), tcp.len()), &tcp]);
                tcp[16..18].copy_from_slice(&sum.to_be_bytes());
                frame.extend_from_slice(&0x6000_0000u32.to_be_bytes());
                frame.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
                frame.push(6);
                frame.push(64);
                frame.extend_from_slice(&s.octets());
                frame.extend_from_slice(&d.octets());
            }
            _ => panic!("pcapgen: {src} and {dst} are not of the same address family"),
        }
        frame.extend_from_slice(&tcp);
        self.frame(ts, frame);
    }

    /// The pcap file: a global header, then every frame in time order (frames with equal times
    /// keep the order they were added in).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut order: Vec<&(Duration, Vec<u8>)> = self.packets.iter().collect();
        order.sort_by_key(|(ts, _)| *ts);
        let total: usize = order.iter().map(|(_, f)| f.len() + 16).sum();
        let mut out = Vec::with_capacity(24 + total);
        let magic: u32 = match self.resolution {
            Resolution::Micro => 0xa1b2_c3d4,
            Resolution::Nano => 0xa1b2_3c4d,
        };
        out.extend_from_slice(&magic.to_le_bytes());
        out.extend_from_slice(&2u16.to_le_bytes());
        out.extend_from_slice(&4u16.to_le_bytes());
        out.extend_from_slice(&0i32.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&SNAPLEN.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes()); // LINKTYPE_ETHERNET
        for (ts, frame) in order {
            let frac = match self.resolution {
                Resolution::Micro => ts.subsec_micros(),
                Resolution::Nano => ts.subsec_nanos(),
            };
            let kept = frame.len().min(SNAPLEN as usize);
            out.extend_from_slice(&(ts.as_secs() as u32).to_le_bytes());
            out.extend_from_slice(&frac.to_le_bytes());
            out.extend_from_slice(&(kept as u32).to_le_bytes());
            out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            out.extend_from_slice(&frame[..kept]);
        }
        out
    }

    /// Write the pcap file to `path`.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.to_bytes())
    }
}

fn pseudo_v4(s: &[u8; 4], d: &[u8; 4], len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(12);
    p.extend_from_slice(s);
    p.extend_from_slice(d);
    p.push(0);
    p.push(6);
    p.extend_from_slice(&(len as u16).to_be_bytes());
    p
}

fn pseudo_v6(s: &[u8; 16], d: &[u8; 16], len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(40);
    p.extend_from_slice(s);
    p.extend_from_slice(d);
    p.extend_from_slice(&(len as u32).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 6]);
    p
}

/// The Internet checksum (RFC 1071) of the concatenation of `parts`.
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for part in parts {
        for &b in *part {
            match odd.take() {
                Some(hi) => sum += u32::from(u16::from_be_bytes([hi, b])),
                None => odd = Some(b),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(u16::from_be_bytes([hi, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Both ends of one TCP connection, writing its segments into a [`Capture`].
#[derive(Clone, Debug)]
pub struct TcpConn {
    client: SocketAddr,
    server: SocketAddr,
    /// Next sequence number the client sends.
    cseq: u32,
    /// Next sequence number the server sends.
    sseq: u32,
    mss: usize,
    now: Duration,
    gap: Duration,
}

impl TcpConn {
    /// A connection from `client` to `server` whose first packet is at `start` (time since the
    /// Unix epoch). Initial sequence numbers are derived from the addresses, so files are
    /// reproducible. MSS 1460, 10 µs between packets of a burst.
    pub fn new(client: SocketAddr, server: SocketAddr, start: Duration) -> TcpConn {
        let h = fnv(format!("{client}>{server}").as_bytes());
        TcpConn {
            client,
            server,
            cseq: h as u32,
            sseq: (h >> 32) as u32,
            mss: 1460,
            now: start,
            gap: Duration::from_micros(10),
        }
    }

    /// Segments carry at most `mss` bytes (at least 1).
    pub fn with_mss(mut self, mss: usize) -> TcpConn {
        self.mss = mss.max(1);
        self
    }

    /// Time between two consecutive packets of a burst.
    pub fn with_gap(mut self, gap: Duration) -> TcpConn {
        self.gap = gap;
        self
    }

    /// The connection's clock: the time of its next packet.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// Let `d` pass before the next packet.
    pub fn wait(&mut self, d: Duration) {
        self.now += d;
    }

    /// The client's address.
    pub fn client(&self) -> SocketAddr {
        self.client
    }

    /// The server's address.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    fn tick(&mut self) -> Duration {
        let t = self.now;
        self.now += self.gap;
        t
    }

    /// `SYN`, `SYN-ACK`, `ACK`.
    pub fn handshake(&mut self, cap: &mut Capture) {
        let mss = Some(self.mss.min(u16::MAX as usize) as u16);
        let (c, s) = (self.client, self.server);
        let t = self.tick();
        cap.segment(t, c, s, self.cseq, 0, flags::SYN, mss, &[]);
        self.cseq = self.cseq.wrapping_add(1);
        let t = self.tick();
        cap.segment(
            t,
            s,
            c,
            self.sseq,
            self.cseq,
            flags::SYN | flags::ACK,
            mss,
            &[],
        );
        self.sseq = self.sseq.wrapping_add(1);
        let t = self.tick();
        cap.segment(t, c, s, self.cseq, self.sseq, flags::ACK, None, &[]);
    }

    fn send(&mut self, cap: &mut Capture, from_client: bool, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let chunks: Vec<&[u8]> = data.chunks(self.mss).collect();
        let last = chunks.len() - 1;
        for (i, chunk) in chunks.into_iter().enumerate() {
            let f = flags::ACK | if i == last { flags::PSH } else { 0 };
            let t = self.tick();
            if from_client {
                cap.segment(
                    t,
                    self.client,
                    self.server,
                    self.cseq,
                    self.sseq,
                    f,
                    None,
                    chunk,
                );
                self.cseq = self.cseq.wrapping_add(chunk.len() as u32);
            } else {
                cap.segment(
                    t,
                    self.server,
                    self.client,
                    self.sseq,
                    self.cseq,
                    f,
                    None,
                    chunk,
                );
                self.sseq = self.sseq.wrapping_add(chunk.len() as u32);
            }
        }
        let t = self.tick();
        if from_client {
            cap.segment(
                t,
                self.server,
                self.client,
                self.sseq,
                self.cseq,
                flags::ACK,
                None,
                &[],
            );
        } else {
            cap.segment(
                t,
                self.client,
                self.server,
                self.cseq,
                self.sseq,
                flags::ACK,
                None,
                &[],
            );
        }
    }

    /// The client sends `data` (segments of at most the MSS), the server acknowledges it.
    pub fn client_sends(&mut self, cap: &mut Capture, data: &[u8]) {
        self.send(cap, true, data);
    }

    /// The server sends `data`, the client acknowledges it.
    pub fn server_sends(&mut self, cap: &mut Capture, data: &[u8]) {
        self.send(cap, false, data);
    }

    /// One request and its response, `latency` apart.
    pub fn exchange(
        &mut self,
        cap: &mut Capture,
        request: &[u8],
        response: &[u8],
        latency: Duration,
    ) {
        self.client_sends(cap, request);
        self.wait(latency);
        self.server_sends(cap, response);
    }

    /// The client closes: `FIN`, the server's `FIN-ACK`, the client's last `ACK`.
    pub fn close(&mut self, cap: &mut Capture) {
        let (c, s) = (self.client, self.server);
        let t = self.tick();
        cap.segment(
            t,
            c,
            s,
            self.cseq,
            self.sseq,
            flags::FIN | flags::ACK,
            None,
            &[],
        );
        self.cseq = self.cseq.wrapping_add(1);
        let t = self.tick();
        cap.segment(
            t,
            s,
            c,
            self.sseq,
            self.cseq,
            flags::FIN | flags::ACK,
            None,
            &[],
        );
        self.sseq = self.sseq.wrapping_add(1);
        let t = self.tick();
        cap.segment(t, c, s, self.cseq, self.sseq, flags::ACK, None, &[]);
    }

    /// The client resets the connection.
    pub fn reset(&mut self, cap: &mut Capture) {
        let t = self.tick();
        cap.segment(
            t,
            self.client,
            self.server,
            self.cseq,
            self.sseq,
            flags::RST | flags::ACK,
            None,
            &[],
        );
    }
}

fn fnv(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for x in b {
        h ^= u64::from(*x);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// An HTTP/1.1 request: the request line, `headers` in order, `Content-Length` when there is a
/// body (or the method usually has one), then the body.
pub fn request(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\n").into_bytes();
    for (n, v) in headers {
        out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// An HTTP/1.1 response with `Content-Length`.
pub fn response(status: u16, reason: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} {reason}\r\n").into_bytes();
    for (n, v) in headers {
        out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(us: u64) -> Duration {
        Duration::from_secs(1_764_000_000) + Duration::from_micros(us)
    }

    #[test]
    fn the_file_header_and_records_are_pcap() {
        let mut cap = Capture::new();
        let mut c = TcpConn::new(
            "10.0.0.1:40000".parse().unwrap(),
            "10.0.0.2:80".parse().unwrap(),
            t(5),
        );
        c.handshake(&mut cap);
        let b = cap.to_bytes();
        assert_eq!(&b[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        assert_eq!(
            u32::from_le_bytes(b[20..24].try_into().unwrap()),
            1,
            "Ethernet"
        );
        assert_eq!(
            u32::from_le_bytes(b[24..28].try_into().unwrap()),
            1_764_000_000
        );
        assert_eq!(
            u32::from_le_bytes(b[28..32].try_into().unwrap()),
            5,
            "microseconds"
        );
        let nano = Capture::nanosecond();
        assert_eq!(&nano.to_bytes()[..4], &[0x4d, 0x3c, 0xb2, 0xa1]);
    }

    #[test]
    fn checksums_verify_for_both_families() {
        for (c, s) in [
            ("10.0.0.1:40000", "10.0.0.2:80"),
            ("[2001:db8::1]:40000", "[2001:db8::2]:80"),
        ] {
            let (c, s): (SocketAddr, SocketAddr) = (c.parse().unwrap(), s.parse().unwrap());
            let mut cap = Capture::new();
            cap.segment(
                t(0),
                c,
                s,
                7,
                9,
                flags::ACK | flags::PSH,
                None,
                b"hello, odd length",
            );
            let f = &cap.packets[0].1;
            let tcp_at = if c.is_ipv4() {
                assert_eq!(checksum(&[&f[14..34]]), 0, "IPv4 header checksum");
                34
            } else {
                54
            };
            let tcp = &f[tcp_at..];
            let pseudo = match (c.ip(), s.ip()) {
                (IpAddr::V4(a), IpAddr::V4(b)) => pseudo_v4(&a.octets(), &b.octets(), tcp.len()),
                (IpAddr::V6(a), IpAddr::V6(b)) => pseudo_v6(&a.octets(), &b.octets(), tcp.len()),
                _ => unreachable!(),
            };
            assert_eq!(
                checksum(&[&pseudo, tcp]),
                0,
                "TCP checksum over the pseudo-header"
            );
        }
    }

    #[test]
    fn data_is_cut_at_the_mss_and_sequence_numbers_advance() {
        let mut cap = Capture::new();
        let mut c = TcpConn::new(
            "10.0.0.1:40000".parse().unwrap(),
            "10.0.0.2:80".parse().unwrap(),
            t(0),
        )
        .with_mss(100);
        c.handshake(&mut cap);
        c.client_sends(&mut cap, &[b'x'; 250]);
        c.close(&mut cap);
        // 3 handshake + 3 data + 1 ack + 3 close.
        assert_eq!(cap.len(), 10);
        let seq = |i: usize| u32::from_be_bytes(cap.packets[i].1[38..42].try_into().unwrap());
        assert_eq!(seq(4).wrapping_sub(seq(3)), 100);
        assert_eq!(seq(5).wrapping_sub(seq(4)), 100);
        let payload = |i: usize| cap.packets[i].1.len() - 54;
        assert_eq!((payload(3), payload(4), payload(5)), (100, 100, 50));
        assert_eq!(
            cap.packets[5].1[47] & flags::PSH,
            flags::PSH,
            "PSH on the last segment"
        );
    }

    #[test]
    fn interleaved_connections_are_written_in_time_order() {
        let mut cap = Capture::new();
        let mut a = TcpConn::new(
            "10.0.0.1:1".parse().unwrap(),
            "10.0.0.2:80".parse().unwrap(),
            t(100),
        );
        let mut b = TcpConn::new(
            "10.0.0.1:2".parse().unwrap(),
            "10.0.0.2:80".parse().unwrap(),
            t(50),
        );
        a.handshake(&mut cap);
        b.handshake(&mut cap);
        let bytes = cap.to_bytes();
        let first_usec = u32::from_le_bytes(bytes[28..32].try_into().unwrap());
        assert_eq!(first_usec, 50);
    }

    #[test]
    fn http_messages_carry_content_length() {
        let r = request("POST", "/a", &[("Host", "x")], b"{}");
        assert_eq!(
            r,
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
        );
        let g = request("GET", "/", &[], b"");
        assert_eq!(g, b"GET / HTTP/1.1\r\n\r\n");
        let s = response(200, "OK", &[], b"hi");
        assert_eq!(s, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi");
    }
}
