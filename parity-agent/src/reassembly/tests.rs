//! Unit tests: one per rule of the reassembler, including the cases of the Arkime synthetic
//! reassembly capture (full and partial retransmission, out-of-order, gap, partial cascade,
//! multiple overlapping partials, port reuse, sequence wrap), SPAN-style duplicates and a capture
//! starting at the SYN-ACK; then property tests.

use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::segment::TcpFlags;

const SYN: u8 = TcpFlags::SYN;
const ACK: u8 = TcpFlags::ACK;
const FIN: u8 = TcpFlags::FIN;
const RST: u8 = TcpFlags::RST;
const PSH: u8 = TcpFlags::PSH;

const CLIENT: &str = "10.180.156.1:40001";
const SERVER: &str = "10.180.156.2:80";

fn cfg() -> ReassemblyConfig {
    ReassemblyConfig {
        flow_memory: 64 << 20,
        ooo_bytes_per_flow: 64 << 10,
        idle_timeout: Duration::from_secs(60),
        gap_timeout: Duration::from_secs(2),
    }
}

fn ms(n: u64) -> Nanos {
    Nanos(1_700_000_000_000_000_000 + n * 1_000_000)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Test driver: a reassembler, its events, and a clock in milliseconds.
struct T {
    r: Reassembler,
    out: Vec<StreamEvent>,
    t: u64,
    /// The last SYN `c` sent, which `s` acknowledges in a SYN-ACK.
    client_isn: u32,
}

impl T {
    fn new() -> T {
        T::with(cfg(), vec![])
    }

    fn with(cfg: ReassemblyConfig, servers: Vec<ServerAddr>) -> T {
        T {
            r: Reassembler::new(cfg, servers),
            out: Vec::new(),
            t: 0,
            client_isn: 0,
        }
    }

    /// Push a segment from `src` to `dst`, one millisecond after the previous one.
    fn seg(&mut self, src: &str, dst: &str, flags: u8, seq: u32, ack: u32, payload: &[u8]) {
        self.seg_tail(src, dst, flags, seq, ack, payload, 0);
    }

    #[allow(clippy::too_many_arguments)]
    fn seg_tail(
        &mut self,
        src: &str,
        dst: &str,
        flags: u8,
        seq: u32,
        ack: u32,
        payload: &[u8],
        missing_tail: u32,
    ) {
        self.t += 1;
        self.r.push(
            Segment {
                ts: ms(self.t),
                src: addr(src),
                dst: addr(dst),
                seq,
                ack,
                flags: TcpFlags(flags),
                payload: Bytes::copy_from_slice(payload),
                missing_tail,
            },
            &mut self.out,
        );
    }

    /// Client to server.
    fn c(&mut self, flags: u8, seq: u32, payload: &[u8]) {
        if flags & SYN != 0 {
            self.client_isn = seq;
        }
        self.seg(CLIENT, SERVER, flags, seq, 0, payload);
    }

    /// Server to client; a SYN-ACK acknowledges the client's last SYN.
    fn s(&mut self, flags: u8, seq: u32, payload: &[u8]) {
        let ack = if flags & SYN != 0 {
            self.client_isn.wrapping_add(1)
        } else {
            0
        };
        self.seg(SERVER, CLIENT, flags, seq, ack, payload);
    }

    fn expire_at(&mut self, t: u64) {
        self.t = self.t.max(t);
        self.r.expire(ms(t), &mut self.out);
    }

    /// Events rendered compactly, and cleared.
    fn take(&mut self) -> Vec<String> {
        self.out.drain(..).map(|e| render(&e)).collect()
    }

    /// Bytes delivered for one connection and direction, gaps as `~` per missing byte.
    fn stream(&self, conn: u64, dir: Direction) -> String {
        let mut s = String::new();
        for e in &self.out {
            match e {
                StreamEvent::Data {
                    conn: c,
                    dir: d,
                    data,
                    ..
                } if c.0 == conn && *d == dir => s.push_str(&String::from_utf8_lossy(data)),
                StreamEvent::Gap {
                    conn: c,
                    dir: d,
                    len,
                    ..
                } if c.0 == conn && *d == dir => s.push_str(&"~".repeat(*len as usize)),
                _ => {}
            }
        }
        s
    }
}

fn render(e: &StreamEvent) -> String {
    let d = |d: &Direction| match d {
        Direction::ToServer => ">",
        Direction::ToClient => "<",
    };
    match e {
        StreamEvent::Open {
            conn,
            client,
            server,
            mid_stream,
            ..
        } => format!(
            "open {conn} {client}>{server}{}",
            if *mid_stream { " mid" } else { "" }
        ),
        StreamEvent::Data {
            conn, dir, data, ..
        } => {
            format!("data {conn}{} {}", d(dir), String::from_utf8_lossy(data))
        }
        StreamEvent::Gap {
            conn,
            dir,
            len,
            reason,
            ..
        } => format!("gap {conn}{} {len} {}", d(dir), reason.as_str()),
        StreamEvent::HalfClose { conn, dir, .. } => format!("half {conn}{}", d(dir)),
        StreamEvent::Close {
            conn,
            reason,
            reset_by,
            ..
        } => format!(
            "close {conn} {}{}",
            reason.as_str(),
            reset_by
                .map(|r| format!(" by{}", d(&r)))
                .unwrap_or_default()
        ),
    }
}

fn v(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The `tcp-normal` case: handshake, request, response in two segments, FIN both ways.
fn normal(t: &mut T) {
    t.c(SYN, 100, b"");
    t.s(SYN | ACK, 200, b"");
    t.c(ACK, 101, b"");
    t.c(PSH | ACK, 101, b"GET /x HTTP/1.0\r\n\r\n");
    t.s(ACK, 201, b"");
    t.s(PSH | ACK, 201, b"HTTP/1.0 200 OK\r\n");
    t.s(PSH | ACK, 218, b"\r\nbody");
    t.c(ACK, 120, b"");
    t.c(FIN | ACK, 120, b"");
    t.s(FIN | ACK, 224, b"");
    t.c(ACK, 121, b"");
}

#[test]
fn syn_makes_its_sender_the_client_and_fins_close() {
    let mut t = T::new();
    normal(&mut t);
    assert_eq!(
        t.take(),
        v(&[
            "open C1 10.180.156.1:40001>10.180.156.2:80",
            "data C1> GET /x HTTP/1.0\r\n\r\n",
            "data C1< HTTP/1.0 200 OK\r\n",
            "data C1< \r\nbody",
            "half C1>",
            "half C1<",
            "close C1 fin",
        ])
    );
    let st = t.r.stats();
    assert_eq!(st.flows_closed.fin, 1);
    assert_eq!(st.ignored.after_close, 1, "the last ACK after both FINs");
    assert_eq!(t.r.flows_active(), 0);
}

#[test]
fn syn_from_the_high_port_still_makes_it_the_client() {
    // Roles come from the SYN, not from ports: a "server" on an ephemeral port.
    let mut t = T::new();
    t.seg("10.0.0.1:80", "10.0.0.2:50000", SYN, 1, 0, b"");
    t.seg("10.0.0.2:50000", "10.0.0.1:80", SYN | ACK, 7, 2, b"");
    t.seg("10.0.0.1:80", "10.0.0.2:50000", ACK, 2, 8, b"hello");
    assert_eq!(
        t.take(),
        v(&["open C1 10.0.0.1:80>10.0.0.2:50000", "data C1> hello"])
    );
}

#[test]
fn capture_starting_at_syn_ack_takes_roles_and_both_isns_from_it() {
    let mut t = T::new();
    t.seg(SERVER, CLIENT, SYN | ACK, 5000, 901, b"");
    t.c(ACK, 901, b"");
    t.c(PSH | ACK, 901, b"GET / HTTP/1.1\r\n\r\n");
    t.s(PSH | ACK, 5001, b"HTTP/1.1 200 OK\r\n");
    assert_eq!(
        t.take(),
        v(&[
            "open C1 10.180.156.1:40001>10.180.156.2:80 mid",
            "data C1> GET / HTTP/1.1\r\n\r\n",
            "data C1< HTTP/1.1 200 OK\r\n",
        ])
    );
    // The client's SYN showing up late repeats the ISN the SYN-ACK acknowledged.
    t.c(SYN, 900, b"");
    assert!(t.take().is_empty());
    assert_eq!(t.r.stats().duplicate_segments, 1);
    assert_eq!(t.r.stats().flows_opened_mid_stream, 1);
}

#[test]
fn client_isn_from_syn_ack_detects_a_lost_first_request_segment() {
    let mut t = T::new();
    t.seg(SERVER, CLIENT, SYN | ACK, 5000, 901, b"");
    t.c(PSH | ACK, 911, b"rest");
    t.c(FIN | ACK, 915, b"");
    assert_eq!(
        t.take(),
        v(&[
            "open C1 10.180.156.1:40001>10.180.156.2:80 mid",
            "gap C1> 10 gap",
            "data C1> rest",
            "half C1>",
        ])
    );
}

#[test]
fn mid_stream_request_line_makes_the_sender_client_whatever_the_ports() {
    let mut t = T::new();
    // The sender has port 80, the receiver an ephemeral port: the payload wins.
    t.seg(
        "10.0.0.9:80",
        "10.0.0.8:40000",
        ACK,
        77,
        1,
        b"POST /api HTTP/1.1\r\n",
    );
    assert_eq!(
        t.take(),
        v(&[
            "open C1 10.0.0.9:80>10.0.0.8:40000 mid",
            "data C1> POST /api HTTP/1.1\r\n",
        ])
    );
}

#[test]
fn mid_stream_status_line_makes_the_sender_server() {
    // Zeek's flip-content-line case: client port 1080, server port 80, and the first payload
    // seen is the response.
    let mut t = T::new();
    t.seg(
        "127.0.0.1:80",
        "127.0.0.1:1080",
        ACK | PSH,
        3000,
        10,
        b"HTTP/1.1 200 OK\r\n",
    );
    t.seg(
        "127.0.0.1:1080",
        "127.0.0.1:80",
        ACK | PSH,
        10,
        3017,
        b"GET /next HTTP/1.1\r\n",
    );
    assert_eq!(
        t.take(),
        v(&[
            "open C1 127.0.0.1:1080>127.0.0.1:80 mid",
            "data C1< HTTP/1.1 200 OK\r\n",
            "data C1> GET /next HTTP/1.1\r\n",
        ])
    );
}

#[test]
fn mid_stream_body_bytes_fall_back_to_the_server_hint_then_to_ports() {
    // A body chunk says nothing; the configured server address decides, even against ports.
    let mut t = T::with(cfg(), vec![ServerAddr::Port(45000)]);
    t.seg("10.0.0.1:45000", "10.0.0.2:80", ACK, 1, 1, b"{\"a\":1}");
    assert_eq!(t.take()[0], "open C1 10.0.0.2:80>10.0.0.1:45000 mid");

    // No hint: the known port serves.
    let mut t = T::new();
    t.seg("10.0.0.2:8080", "10.0.0.1:51000", ACK, 1, 1, b"{\"a\":1}");
    assert_eq!(t.take()[0], "open C1 10.0.0.1:51000>10.0.0.2:8080 mid");
    // Neither known nor ephemeral on one side: the non-ephemeral one serves, whoever sends.
    let mut t = T::new();
    t.seg("10.0.0.1:40000", "10.0.0.2:12345", ACK, 1, 1, b"xyz");
    t.seg("10.0.0.3:12345", "10.0.0.4:40000", ACK, 1, 1, b"xyz");
    assert_eq!(
        t.take(),
        v(&[
            "open C1 10.0.0.1:40000>10.0.0.2:12345 mid",
            "data C1> xyz",
            "open C2 10.0.0.4:40000>10.0.0.3:12345 mid",
            "data C2< xyz",
        ])
    );
}

#[test]
fn payload_less_segments_of_unknown_flows_open_nothing() {
    let mut t = T::new();
    t.c(ACK, 5, b"");
    t.c(FIN | ACK, 5, b"");
    t.c(RST, 5, b"");
    assert!(t.take().is_empty());
    assert_eq!(t.r.stats().ignored.no_flow, 3);
    assert_eq!(t.r.flows_active(), 0);
}

#[test]
fn conn_ids_follow_first_sight() {
    let mut t = T::new();
    for port in [40003, 40001, 40002] {
        let c = format!("10.0.0.1:{port}");
        t.seg(&c, SERVER, SYN, 1, 0, b"");
    }
    let opens: Vec<String> = t.take();
    assert_eq!(
        opens,
        v(&[
            "open C1 10.0.0.1:40003>10.180.156.2:80",
            "open C2 10.0.0.1:40001>10.180.156.2:80",
            "open C3 10.0.0.1:40002>10.180.156.2:80",
        ])
    );
}

#[test]
fn sequence_numbers_wrap_around() {
    // The `wrap` case: the server's ISN is 2^32 - 2, so its data crosses zero.
    let mut t = T::new();
    t.c(SYN, 1000, b"");
    t.s(SYN | ACK, u32::MAX - 1, b"");
    t.c(ACK | PSH, 1001, b"GET /wrap HTTP/1.0\r\n\r\n");
    t.s(ACK | PSH, u32::MAX, b"HTTP/1.0 ");
    t.s(ACK | PSH, 8, b"200 OK");
    // Out of order across the wrap: 14..18 before 8..14 is delivered.
    t.s(ACK | PSH, 20, b"yz");
    t.s(ACK | PSH, 14, b"\r\nabcd");
    t.s(ACK | PSH, 14, b"\r\nab"); // a duplicate, across the wrap
    t.s(FIN | ACK, 22, b"");
    assert_eq!(
        t.stream(1, Direction::ToClient),
        "HTTP/1.0 200 OK\r\nabcdyz"
    );
    let last = t.take();
    assert_eq!(last.last().map(String::as_str), Some("half C1<"));
    assert_eq!(t.r.stats().duplicate_segments, 1);
    assert_eq!(t.r.stats().gaps.gap, 0);
}

#[test]
fn client_sequence_wraps_within_one_segment() {
    let mut t = T::new();
    t.c(SYN, u32::MAX - 3, b"");
    t.c(ACK, u32::MAX - 2, b"abcdefgh"); // bytes at 2^32-3 .. 4
    t.c(ACK, 5, b"ij");
    t.c(ACK, 1, b"defgh"); // a retransmission entirely after the wrap
    assert_eq!(t.stream(1, Direction::ToServer), "abcdefghij");
    assert_eq!(t.r.stats().duplicate_segments, 1);
}

#[test]
fn every_packet_three_times_reassembles_once() {
    // SPAN-port style duplicates: each packet captured three times.
    let mut once = T::new();
    normal(&mut once);
    let expected = once.take();

    let mut t = T::new();
    let packets: Vec<(bool, u8, u32, &[u8])> = vec![
        (true, SYN, 100, b""),
        (false, SYN | ACK, 200, b""),
        (true, ACK, 101, b""),
        (true, PSH | ACK, 101, b"GET /x HTTP/1.0\r\n\r\n"),
        (false, ACK, 201, b""),
        (false, PSH | ACK, 201, b"HTTP/1.0 200 OK\r\n"),
        (false, PSH | ACK, 218, b"\r\nbody"),
        (true, ACK, 120, b""),
        (true, FIN | ACK, 120, b""),
        (false, FIN | ACK, 224, b""),
        (true, ACK, 121, b""),
    ];
    for (from_client, flags, seq, payload) in packets {
        for _ in 0..3 {
            if from_client {
                t.c(flags, seq, payload);
            } else {
                t.s(flags, seq, payload);
            }
        }
    }
    assert_eq!(t.take(), expected);
    let st = t.r.stats();
    // Two repeated SYNs, two SYN-ACKs, 2 x 3 data segments; the rest are ACK/FIN repeats.
    assert_eq!(st.duplicate_segments, 2 + 2 + 6);
    assert_eq!(st.flows_opened, 1);
    assert_eq!(st.overlap_conflict_bytes, 0);
}

#[test]
fn full_retransmission_is_dropped() {
    // The `tcp-fullretrans` case.
    let mut t = T::new();
    t.c(SYN, 1000, b"");
    t.s(SYN | ACK, 2000, b"");
    t.s(ACK | PSH, 2001, b"0123456789abcdef");
    t.s(ACK | PSH, 2001, b"0123456789abcdef");
    t.s(ACK | PSH, 2017, b"ghijklmnopqrstuv");
    assert_eq!(
        t.stream(1, Direction::ToClient),
        "0123456789abcdefghijklmnopqrstuv"
    );
    assert_eq!(t.r.stats().duplicate_segments, 1);
    assert_eq!(t.r.stats().overlap_bytes_trimmed, 16);
}

#[test]
fn partial_retransmission_is_trimmed_and_first_bytes_win() {
    // The `tcp-partial-retrans` case: 4001:4021 then 4017:4033.
    let mut t = T::new();
    t.c(SYN, 3000, b"");
    t.s(SYN | ACK, 4000, b"");
    t.s(ACK | PSH, 4001, b"0123456789abcdefghij");
    t.s(ACK | PSH, 4017, b"ghijklmnopqrstuv");
    assert_eq!(
        t.take()[1..],
        v(&["data C1< 0123456789abcdefghij", "data C1< klmnopqrstuv"])
    );
    assert_eq!(t.r.stats().overlap_bytes_trimmed, 4);
    assert_eq!(t.r.stats().overlap_conflict_bytes, 0);

    // A retransmission whose overlap says something else: the bytes seen first are kept and
    // the difference counted.
    t.s(ACK | PSH, 4027, b"XXstUVVW");
    assert_eq!(t.take(), v(&["data C1< VW"]));
    assert_eq!(t.r.stats().overlap_conflict_bytes, 4);
}

#[test]
fn partial_cascade_delivers_each_new_byte_once() {
    // The `tcp-partial-cascade` case: 10001:10021, 10017:10025, 10025:10033.
    let mut t = T::new();
    t.c(SYN, 9000, b"");
    t.s(SYN | ACK, 10000, b"");
    t.s(ACK | PSH, 10001, b"0123456789abcdefghij");
    t.s(ACK | PSH, 10017, b"ghijklmn");
    t.s(ACK | PSH, 10025, b"opqrstuv");
    assert_eq!(
        t.stream(1, Direction::ToClient),
        "0123456789abcdefghijklmnopqrstuv"
    );
    assert_eq!(t.r.stats().overlap_bytes_trimmed, 4);
}

#[test]
fn multiple_overlapping_partials_deliver_each_new_byte_once() {
    // The `tcp-multi-partial` case: 12001:12013, 12009:12021, 12017:12029, 12025:12033.
    let mut t = T::new();
    t.c(SYN, 11000, b"");
    t.s(SYN | ACK, 12000, b"");
    let all = b"0123456789abcdefghijklmnopqrstuv";
    for (from, to) in [(0, 12), (8, 20), (16, 28), (24, 32)] {
        t.s(ACK | PSH, 12001 + from as u32, &all[from..to]);
    }
    assert_eq!(
        t.stream(1, Direction::ToClient),
        "0123456789abcdefghijklmnopqrstuv"
    );
    assert_eq!(t.r.stats().overlap_bytes_trimmed, 12);
    assert_eq!(t.r.stats().gaps.gap, 0);
}

#[test]
fn overlaps_with_buffered_bytes_keep_the_first_arrival() {
    let mut t = T::new();
    t.c(SYN, 0, b"");
    t.c(ACK, 11, b"klmn"); // offset 10..14, buffered
    t.c(ACK, 9, b"JKLMNOP"); // 8..15: 8..10 new, 10..14 overlap (differs), 14..15 new
    assert_eq!(t.r.stats().overlap_bytes_trimmed, 4);
    assert_eq!(t.r.stats().overlap_conflict_bytes, 4);
    t.c(ACK, 1, b"abcdefgh"); // 0..8 fills the hole
    assert_eq!(t.stream(1, Direction::ToServer), "abcdefghJKklmnP");
    assert_eq!(t.r.stats().ooo_segments_buffered, 2);
}

#[test]
fn out_of_order_segments_wait_for_the_hole() {
    // The `tcp-outoforder` case: 6017:6033 arrives before 6001:6017.
    let mut t = T::new();
    t.c(SYN, 5000, b"");
    t.s(SYN | ACK, 6000, b"");
    t.take();
    t.s(ACK | PSH, 6017, b"ghijklmnopqrstuv");
    assert!(t.take().is_empty());
    assert_eq!(
        t.r.memory_used(),
        FLOW_COST + 16 + half::PIECE_COST + half::OOO_COST
    );
    t.s(ACK | PSH, 6001, b"0123456789abcdef");
    assert_eq!(
        t.take(),
        v(&["data C1< 0123456789abcdef", "data C1< ghijklmnopqrstuv"])
    );
    assert_eq!(t.r.stats().ooo_segments_buffered, 1);
    assert_eq!(t.r.stats().gaps.gap, 0);
}

#[test]
fn out_of_order_cap_declares_a_gap_up_to_the_earliest_buffered_segment() {
    let cap = 100 + 2 * half::PIECE_COST;
    let mut t = T::with(
        ReassemblyConfig {
            ooo_bytes_per_flow: cap,
            ..cfg()
        },
        vec![],
    );
    t.c(SYN, 0, b"");
    t.c(ACK, 1, b"head");
    t.take();
    // Hole at offset 4..10; 10..60 and 70..120 buffered: two pieces, 100 bytes, at the cap.
    t.c(ACK, 11, &[b'a'; 50]);
    t.c(ACK, 71, &[b'c'; 50]);
    assert!(t.take().is_empty());
    // One more byte goes over the cap.
    t.c(ACK, 121, b"d");
    let ev = t.take();
    assert_eq!(ev[0], "gap C1> 6 gap");
    assert_eq!(ev[1], format!("data C1> {}", "a".repeat(50)));
    assert_eq!(
        ev.len(),
        2,
        "the second hole stays open: back under the cap"
    );
    // The hole's bytes arriving late are old news now.
    t.c(ACK, 5, b"XXXXXX");
    assert!(t.take().is_empty());
    assert_eq!(t.r.stats().duplicate_segments, 1);
    assert_eq!(t.r.stats().gap_bytes.gap, 6);
}

#[test]
fn out_of_order_cap_counts_bookkeeping_so_tiny_segments_cannot_pile_up() {
    let mut t = T::with(
        ReassemblyConfig {
            ooo_bytes_per_flow: 4096,
            ..cfg()
        },
        vec![],
    );
    t.c(SYN, 0, b"");
    // Snap-length-only segments (no captured byte) every other offset, ahead of a hole.
    for i in 0..1000u32 {
        t.seg_tail(CLIENT, SERVER, ACK, 10 + 2 * i, 0, b"", 1);
        let held =
            t.r.flows
                .values()
                .next()
                .map_or(0, |f| f.halves[0].ooo_pieces());
        assert!(
            held * half::PIECE_COST <= 4096 + half::PIECE_COST,
            "{held} pieces"
        );
    }
    assert!(t.r.stats().gaps.gap > 0);
}

#[test]
fn fin_with_a_hole_declares_the_gap_then_half_closes() {
    // The `tcp-gap` case: 8001:8009, then 8017:8033, then FIN at 8033.
    let mut t = T::new();
    t.c(SYN, 7000, b"");
    t.s(SYN | ACK, 8000, b"");
    t.take();
    t.s(ACK | PSH, 8001, b"01234567");
    t.s(ACK | PSH, 8017, b"ghijklmnopqrstuv");
    t.c(FIN | ACK, 7001, b"");
    t.s(FIN | ACK, 8033, b"");
    assert_eq!(
        t.take(),
        v(&[
            "data C1< 01234567",
            "half C1>",
            "gap C1< 8 gap",
            "data C1< ghijklmnopqrstuv",
            "half C1<",
            "close C1 fin",
        ])
    );
}

#[test]
fn fin_beyond_the_last_byte_seen_is_a_gap_to_the_fin() {
    let mut t = T::new();
    t.c(SYN, 0, b"");
    t.c(ACK, 1, b"abc");
    t.c(FIN | ACK, 10, b"");
    assert_eq!(
        t.take()[1..],
        v(&["data C1> abc", "gap C1> 6 gap", "half C1>"])
    );
    // Bytes after the FIN are not part of the stream.
    t.c(ACK, 10, b"zz");
    assert!(t.take().is_empty());
    assert_eq!(t.r.stats().ignored.beyond_fin, 1);
}

#[test]
fn rst_flushes_buffered_bytes_with_gaps_and_closes() {
    let mut t = T::new();
    t.c(SYN, 0, b"");
    t.s(SYN | ACK, 500, b"");
    t.c(ACK, 1, b"GET / HTTP/1.1\r\n\r\n");
    t.s(ACK, 501, b"HTTP/1.1 200 OK\r\n");
    t.s(ACK, 530, b"tail");
    t.take();
    t.c(RST | ACK, 19, b"");
    assert_eq!(
        t.take(),
        v(&["gap C1< 12 gap", "data C1< tail", "close C1 reset by>",])
    );
    assert_eq!(t.r.stats().flows_closed.reset, 1);
    // Data in flight after the reset belongs to the dead connection.
    t.s(ACK, 534, b"more");
    assert!(t.take().is_empty());
    assert_eq!(t.r.stats().ignored.after_close, 1);
    assert_eq!(t.r.memory_used(), TOMB_COST);
}

#[test]
fn rst_after_a_fin_closes_as_fin() {
    let mut t = T::new();
    t.c(SYN, 0, b"");
    t.s(SYN | ACK, 500, b"");
    t.s(ACK, 501, b"HTTP/1.0 200 OK\r\n\r\nbody");
    t.s(FIN | ACK, 524, b"");
    t.c(RST, 1, b"");
    let ev = t.take();
    assert_eq!(ev[ev.len() - 2..], v(&["half C1<", "close C1 fin by>"]));
}

#[test]
fn gap_timeout_declares_a_hole_that_later_bytes_waited_behind() {
    let mut t = T::new();
    t.c(SYN, 0, b"");
    t.c(ACK, 1, b"a");
    t.take();
    t.c(ACK, 5, b"e"); // hole 1..4; "e" arrives at t=3ms
    t.expire_at(1_000);
    t.c(ACK, 9, b"i"); // hole 5..8; "i" arrives at t=1001ms
    t.expire_at(2_002);
    assert!(t.take().is_empty(), "2s have not passed for the first hole");
    t.expire_at(2_003);
    assert_eq!(t.take(), v(&["gap C1> 3 gap", "data C1> e"]));
    t.expire_at(3_000);
    assert!(t.take().is_empty(), "the second hole's bytes are younger");
    t.expire_at(3_001);
    assert_eq!(t.take(), v(&["gap C1> 3 gap", "data C1> i"]));
    // The flow is still open and in order.
    t.c(ACK, 10, b"j");
    assert_eq!(t.take(), v(&["data C1> j"]));
    assert_eq!(t.r.stats().gaps.gap, 2);
}

#[test]
fn gap_timeout_handles_several_stale_holes_at_once() {
    let mut t = T::new();
    t.c(SYN, 0, b"");
    t.take();
    t.c(ACK, 3, b"c");
    t.c(ACK, 6, b"f");
    t.s(ACK, 100, b"HTTP/1.1 200 OK\r\n"); // the server side is in order, no timer
    t.expire_at(5_000);
    assert_eq!(
        t.take(),
        v(&[
            "data C1< HTTP/1.1 200 OK\r\n",
            "gap C1> 2 gap",
            "data C1> c",
            "gap C1> 2 gap",
            "data C1> f",
        ])
    );
    assert!(t.r.sh.timers.is_empty());
}

#[test]
fn idle_flows_close_after_gaps_for_their_holes() {
    let mut t = T::new();
    t.c(SYN, 0, b"");
    t.c(ACK, 1, b"ab");
    t.c(ACK, 6, b"f"); // hole at offset 2..5, t=3ms
    t.seg("10.0.0.7:40000", SERVER, SYN, 0, 0, b"");
    t.take();
    // Keep the second flow busy; the first goes quiet at t=3ms.
    t.expire_at(30_000);
    t.seg("10.0.0.7:40000", SERVER, ACK, 1, 0, b"x");
    t.take();
    t.expire_at(60_002);
    assert!(
        t.take().is_empty(),
        "60s have not passed for C1 (gap timeout did fire earlier)"
    );
    t.expire_at(60_003);
    assert_eq!(t.take(), v(&["close C1 idle"]));
    t.expire_at(90_001);
    assert_eq!(t.take(), v(&["close C2 idle"]));
    assert_eq!(t.r.stats().flows_closed.idle, 2);
    assert_eq!(t.r.memory_used(), 0);
}

#[test]
fn idle_close_declares_holes_still_buffered() {
    let mut t = T::with(
        ReassemblyConfig {
            gap_timeout: Duration::from_secs(3600),
            ..cfg()
        },
        vec![],
    );
    t.c(SYN, 0, b"");
    t.c(ACK, 4, b"d");
    t.take();
    t.expire_at(60_002);
    assert_eq!(
        t.take(),
        v(&["gap C1> 3 gap", "data C1> d", "close C1 idle"])
    );
    // An idle flow leaves no tombstone: a long-lived connection that goes quiet and resumes is
    // picked up again mid-stream.
    t.c(ACK, 5, b"e");
    assert_eq!(
        t.take()[0],
        "open C2 10.180.156.1:40001>10.180.156.2:80 mid"
    );
}

#[test]
fn snaplen_tail_is_a_gap_and_the_stream_continues_after_it() {
    let mut t = T::new();
    t.c(SYN, 0, b"");
    t.take();
    t.seg_tail(CLIENT, SERVER, ACK, 1, 0, b"abc", 97);
    t.c(ACK, 101, b"next");
    // Out of order with a missing tail too.
    t.seg_tail(CLIENT, SERVER, ACK, 110, 0, b"zz", 8);
    t.seg_tail(CLIENT, SERVER, ACK, 105, 0, b"y", 4);
    t.c(ACK, 120, b"end");
    assert_eq!(
        t.take(),
        v(&[
            "data C1> abc",
            "gap C1> 97 snaplen",
            "data C1> next",
            "data C1> y",
            "gap C1> 4 snaplen",
            "data C1> zz",
            "gap C1> 8 snaplen",
            "data C1> end",
        ])
    );
    assert_eq!(t.r.stats().gap_bytes.snaplen, 109);
}

#[test]
fn port_reuse_with_a_new_syn_is_a_new_connection() {
    // The `tcp-reuse` case: a complete connection, then the same 4-tuple with a new ISN.
    let mut t = T::new();
    t.c(SYN, 20000, b"");
    t.s(SYN | ACK, 21000, b"");
    t.c(ACK | PSH, 20001, b"GET /a HTTP/1.0\r\n\r\n");
    t.s(ACK | PSH, 21001, b"HTTP/1.0 200 OK\r\n\r\n");
    t.c(FIN | ACK, 20020, b"");
    t.s(FIN | ACK, 21020, b"");
    t.c(ACK, 20021, b"");
    t.c(SYN, 22000, b"");
    t.s(SYN | ACK, 23000, b"");
    t.c(ACK | PSH, 22001, b"GET /b HTTP/1.0\r\n\r\n");
    let ev = t.take();
    assert_eq!(
        ev[ev.len() - 3..],
        v(&[
            "close C1 fin",
            "open C2 10.180.156.1:40001>10.180.156.2:80",
            "data C2> GET /b HTTP/1.0\r\n\r\n",
        ])
    );
    assert_eq!(t.r.stats().ignored.after_close, 1);

    // A third SYN with yet another ISN while C2 is open: C2 ended unseen.
    t.c(SYN, 50000, b"");
    t.c(ACK | PSH, 50001, b"GET /c HTTP/1.0\r\n\r\n");
    assert_eq!(
        t.take(),
        v(&[
            "close C2 idle",
            "open C3 10.180.156.1:40001>10.180.156.2:80",
            "data C3> GET /c HTTP/1.0\r\n\r\n",
        ])
    );
    assert_eq!(t.r.stats().port_reuses, 1);
}

#[test]
fn a_late_syn_repeating_a_closed_connections_isn_is_ignored() {
    // Port 40009 of the synthetic capture: starts at the SYN-ACK, closes with FINs, and the
    // client's SYN (ISN = SYN-ACK's ack - 1) arrives last.
    let mut t = T::new();
    t.seg(SERVER, CLIENT, SYN | ACK, 31000, 30001, b"");
    t.c(ACK | PSH, 30001, b"GET /tcp-reuse HTTP/1.0\r\n\r\n");
    t.s(ACK | PSH, 31001, b"HTTP/1.0 200 OK\r\n\r\n");
    t.c(FIN | ACK, 30028, b"");
    t.s(FIN | ACK, 31020, b"");
    t.c(SYN, 30000, b"");
    assert_eq!(t.take().last().map(String::as_str), Some("close C1 fin"));
    assert_eq!(t.r.stats().ignored.stale_syn, 1);
    assert_eq!(t.r.flows_active(), 0);
    // A retransmitted SYN-ACK of it is stale too.
    t.seg(SERVER, CLIENT, SYN | ACK, 31000, 30001, b"");
    assert_eq!(t.r.stats().ignored.stale_syn, 2);
    assert_eq!(t.r.stats().flows_opened, 1);
}

#[test]
fn closed_connection_records_expire_after_idle_timeout() {
    let mut t = T::new();
    normal(&mut t);
    t.take();
    // Closed at t=10ms by the server's FIN.
    t.expire_at(60_009);
    assert_eq!(t.r.tombs.len(), 1);
    t.expire_at(60_010);
    assert_eq!(t.r.tombs.len(), 0);
    assert_eq!(t.r.memory_used(), 0);
}

#[test]
fn syn_ack_not_answering_the_syn_is_ignored() {
    let mut t = T::new();
    t.c(SYN, 100, b"");
    t.seg(SERVER, CLIENT, SYN | ACK, 700, 999, b"");
    t.s(ACK, 701, b"data");
    assert_eq!(t.r.stats().ignored.syn_mismatch, 1);
    // The server side starts at its first data instead.
    assert_eq!(t.stream(1, Direction::ToClient), "data");
}

#[test]
fn segments_far_beyond_the_window_are_ignored() {
    let mut t = T::new();
    t.c(SYN, 0, b"");
    t.c(ACK, 1 + (1 << 30) + 1, b"far");
    t.c(ACK, 1, b"near");
    assert_eq!(t.stream(1, Direction::ToServer), "near");
    assert_eq!(t.r.stats().ignored.out_of_window, 1);
}

fn flow_from(t: &mut T, port: u16) {
    let c = format!("10.0.0.1:{port}");
    t.seg(&c, SERVER, SYN, 0, 0, b"");
}

fn touch(t: &mut T, port: u16) {
    let c = format!("10.0.0.1:{port}");
    t.seg(&c, SERVER, ACK, 1, 0, b"");
}

fn evicted(t: &mut T) -> Vec<String> {
    let mut order = Vec::new();
    while t.r.evict_lru(ms(t.t), &mut t.out) {
        order.extend(t.take());
    }
    order
}

#[test]
fn lru_eviction_is_by_last_activity_then_conn_id() {
    let mut t = T::new();
    for port in [1001, 1002, 1003, 1004] {
        flow_from(&mut t, port);
    }
    touch(&mut t, 1002);
    touch(&mut t, 1001);
    t.take();
    assert_eq!(
        evicted(&mut t),
        v(&[
            "close C3 evicted",
            "close C4 evicted",
            "close C2 evicted",
            "close C1 evicted"
        ])
    );
    assert_eq!(t.r.stats().evictions, 4);
    assert_eq!(t.r.memory_used(), 0);

    // Equal timestamps: the lower ConnId goes first, whatever the order of activity.
    let mut t = T::new();
    for port in [2001, 2002, 2003] {
        let c = format!("10.0.0.1:{port}");
        t.r.push(
            Segment {
                ts: ms(5),
                src: addr(&c),
                dst: addr(SERVER),
                seq: 0,
                ack: 0,
                flags: TcpFlags(SYN),
                payload: Bytes::new(),
                missing_tail: 0,
            },
            &mut t.out,
        );
    }
    for port in [2003, 2001] {
        let c = format!("10.0.0.1:{port}");
        t.r.push(
            Segment {
                ts: ms(5),
                src: addr(&c),
                dst: addr(SERVER),
                seq: 1,
                ack: 0,
                flags: TcpFlags(ACK),
                payload: Bytes::from_static(b"x"),
                missing_tail: 0,
            },
            &mut t.out,
        );
    }
    t.take();
    assert_eq!(
        evicted(&mut t),
        v(&["close C1 evicted", "close C2 evicted", "close C3 evicted"])
    );
}

#[test]
fn eviction_flushes_buffered_bytes_with_gaps() {
    let mut t = T::new();
    t.c(SYN, 0, b"");
    t.c(ACK, 3, b"cd");
    t.take();
    assert!(t.r.evict_lru(ms(10), &mut t.out));
    assert_eq!(
        t.take(),
        v(&["gap C1> 2 gap", "data C1> cd", "close C1 evicted"])
    );
    assert!(!t.r.evict_lru(ms(10), &mut t.out));
}

#[test]
fn memory_accounting_counts_flows_and_buffered_bytes() {
    let mut t = T::new();
    assert_eq!(t.r.memory_used(), 0);
    t.c(SYN, 0, b"");
    assert_eq!(t.r.memory_used(), FLOW_COST);
    // In-order bytes pass through without being held.
    t.c(ACK, 1, b"abcd");
    assert_eq!(t.r.memory_used(), FLOW_COST);
    // 1000 bytes ahead of a hole.
    t.c(ACK, 10, &[b'x'; 1000]);
    assert_eq!(
        t.r.memory_used(),
        FLOW_COST + 1000 + half::PIECE_COST + half::OOO_COST
    );
    assert_eq!(
        t.r.flows.values().next().unwrap().halves[0].ooo_bytes(),
        1000
    );
    // Filling the hole delivers everything and frees the buffer.
    t.c(ACK, 5, b"efghi");
    assert_eq!(t.r.memory_used(), FLOW_COST);
    // After a retransmission the direction keeps its last delivered segment, and says so.
    t.c(ACK, 1008, b"xxz1"); // offsets 1007..1011: "xx" again, then "z1"
    assert_eq!(t.r.memory_used(), FLOW_COST + 2);
    t.c(ACK, 1012, b"123456");
    assert_eq!(t.r.memory_used(), FLOW_COST + 6);
    t.r.finish(ms(100), &mut t.out);
    assert_eq!(t.r.memory_used(), 0);
    // The estimate covers the structures it claims to.
    assert!(FLOW_COST >= size_of::<Flow>() + size_of::<FlowKey>() + size_of::<LruKey>());
    assert_eq!(size_of::<FlowKey>(), 40);
}

#[test]
fn the_first_overlap_of_a_clean_direction_is_trimmed_unchecked() {
    // Clean streams do not keep delivered bytes; the first retransmission turns keeping on.
    let mut t = T::new();
    t.c(SYN, 0, b"");
    t.c(ACK, 1, b"abcd");
    t.c(ACK, 3, b"XXef"); // overlaps "cd", content differs, but nothing held to compare
    t.c(ACK, 5, b"YYgh"); // overlaps "ef", which was kept this time
    assert_eq!(t.stream(1, Direction::ToServer), "abcdefgh");
    let st = t.r.stats();
    assert_eq!(st.overlap_bytes_trimmed, 4);
    assert_eq!(st.overlap_bytes_unchecked, 2);
    assert_eq!(st.overlap_conflict_bytes, 2);
}

#[test]
fn push_keeps_memory_within_flow_memory_by_evicting_lru() {
    let budget = 10 * FLOW_COST + 500;
    let mut t = T::with(
        ReassemblyConfig {
            flow_memory: budget,
            ..cfg()
        },
        vec![],
    );
    for port in 1000..1030u16 {
        flow_from(&mut t, port);
        assert!(t.r.memory_used() <= budget);
    }
    assert!(t.r.flows_active() <= 10);
    assert!(t.r.stats().evictions >= 20);
    // The survivors are the most recent flows.
    let ev = t.take();
    assert!(ev.contains(&"close C1 evicted".to_string()));
    assert!(!ev.iter().any(|e| e == "close C30 evicted"));
    // A big out-of-order buffer pushes out older flows, not the one being filled.
    t.seg("10.0.0.1:1029", SERVER, ACK, 100, 0, &[b'z'; 2000]);
    assert!(t.r.memory_used() <= budget);
    let ev = t.take();
    assert!(ev.iter().all(|e| e != "close C30 evicted"), "{ev:?}");
}

#[test]
fn finish_closes_every_flow_in_conn_id_order_with_gaps() {
    let mut t = T::new();
    flow_from(&mut t, 3000);
    flow_from(&mut t, 3001);
    flow_from(&mut t, 3002);
    touch(&mut t, 3000);
    t.seg("10.0.0.1:3001", SERVER, ACK, 5, 0, b"late");
    t.take();
    t.r.finish(ms(99), &mut t.out);
    assert_eq!(
        t.take(),
        v(&[
            "close C1 end_of_capture",
            "gap C2> 4 gap",
            "data C2> late",
            "close C2 end_of_capture",
            "close C3 end_of_capture",
        ])
    );
    assert_eq!(t.r.flows_active(), 0);
    assert_eq!(t.r.memory_used(), 0);
}

#[test]
fn from_limits_takes_the_documented_defaults() {
    let c = ReassemblyConfig::from_limits(&Limits::default());
    assert_eq!(c.flow_memory, 256 << 20);
    assert_eq!(c.ooo_bytes_per_flow, 1 << 20);
    assert_eq!(c.idle_timeout, Duration::from_secs(60));
    assert_eq!(c.gap_timeout, Duration::from_secs(2));
}

// ---------------------------------------------------------------------------------------------
// Property tests.

/// One direction of a generated connection: its bytes cut into segments.
fn cut(data: &[u8], sizes: &[usize]) -> Vec<(usize, usize)> {
    let mut cuts = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < data.len() {
        let n = sizes[i % sizes.len()].max(1).min(data.len() - at);
        cuts.push((at, at + n));
        at += n;
        i += 1;
    }
    cuts
}

#[derive(Clone, Debug)]
struct Gen {
    client: Vec<u8>,
    server: Vec<u8>,
    isn_c: u32,
    isn_s: u32,
    sizes: Vec<usize>,
    jitter: Vec<u8>,
    copies: Vec<u8>,
}

fn gen() -> impl Strategy<Value = Gen> {
    (
        prop::collection::vec(any::<u8>(), 0..1500),
        prop::collection::vec(any::<u8>(), 0..1500),
        prop_oneof![any::<u32>(), (u32::MAX - 3000)..=u32::MAX],
        prop_oneof![any::<u32>(), (u32::MAX - 3000)..=u32::MAX],
        prop::collection::vec(1usize..300, 1..20),
        prop::collection::vec(0u8..12, 1..64),
        prop::collection::vec(1u8..=3, 1..64),
    )
        .prop_map(
            |(client, server, isn_c, isn_s, sizes, jitter, copies)| Gen {
                client,
                server,
                isn_c,
                isn_s,
                sizes,
                jitter,
                copies,
            },
        )
}

/// (sort key, from client, stream offset, end, missing tail)
type Planned = (usize, bool, usize, usize, u32);

/// Interleave both directions' segments, then move each a bounded random distance later and
/// repeat it 1-3 times.
fn plan(g: &Gen, drop: &[bool], tails: &[u8]) -> Vec<Planned> {
    let mut all = Vec::new();
    let c = cut(&g.client, &g.sizes);
    let s = cut(
        &g.server,
        &g.sizes[1..]
            .iter()
            .chain(&g.sizes[..1])
            .copied()
            .collect::<Vec<_>>(),
    );
    let mut i = 0;
    for (k, (from_client, cuts)) in [(true, c), (false, s)].into_iter().enumerate() {
        for (j, (a, b)) in cuts.into_iter().enumerate() {
            i += 1;
            let idx = j * 2 + k;
            if drop.get(i % drop.len().max(1)).copied().unwrap_or(false) && !drop.is_empty() {
                continue;
            }
            let tail = tails
                .get(i % tails.len().max(1))
                .map_or(0, |t| u32::from(*t).min((b - a - 1) as u32));
            let key = idx * 16 + usize::from(g.jitter[i % g.jitter.len()]) * 16;
            for copy in 0..g.copies[i % g.copies.len()] {
                all.push((key + usize::from(copy), from_client, a, b, tail));
            }
        }
    }
    all.sort();
    all
}

fn run(g: &Gen, planned: &[Planned], ooo_cap: usize) -> T {
    let mut t = T::with(
        ReassemblyConfig {
            ooo_bytes_per_flow: ooo_cap,
            ..cfg()
        },
        vec![],
    );
    t.c(SYN, g.isn_c, b"");
    t.seg(
        SERVER,
        CLIENT,
        SYN | ACK,
        g.isn_s,
        g.isn_c.wrapping_add(1),
        b"",
    );
    for &(_, from_client, a, b, tail) in planned {
        let (data, isn) = if from_client {
            (&g.client, g.isn_c)
        } else {
            (&g.server, g.isn_s)
        };
        let seq = isn.wrapping_add(1).wrapping_add(a as u32);
        let (src, dst) = if from_client {
            (CLIENT, SERVER)
        } else {
            (SERVER, CLIENT)
        };
        t.seg_tail(src, dst, ACK, seq, 0, &data[a..b - tail as usize], tail);
    }
    let fin_c = g.isn_c.wrapping_add(1).wrapping_add(g.client.len() as u32);
    let fin_s = g.isn_s.wrapping_add(1).wrapping_add(g.server.len() as u32);
    t.c(FIN | ACK, fin_c, b"");
    t.s(FIN | ACK, fin_s, b"");
    t
}

/// The stream with `~` for every byte reported missing.
fn expected_with_holes(data: &[u8], planned: &[Planned], from_client: bool) -> Vec<Option<u8>> {
    let mut got = vec![None; data.len()];
    for &(_, fc, a, b, tail) in planned {
        if fc == from_client {
            for i in a..b - tail as usize {
                got[i] = Some(data[i]);
            }
        }
    }
    got
}

fn delivered(t: &T, dir: Direction) -> Vec<Option<u8>> {
    let mut s = Vec::new();
    for e in &t.out {
        match e {
            StreamEvent::Data { dir: d, data, .. } if *d == dir => {
                s.extend(data.iter().map(|b| Some(*b)))
            }
            StreamEvent::Gap { dir: d, len, .. } if *d == dir => {
                s.extend(std::iter::repeat_n(None, *len as usize))
            }
            _ => {}
        }
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn reordered_duplicated_segments_reassemble_exactly(g in gen()) {
        let planned = plan(&g, &[], &[]);
        let t = run(&g, &planned, 1 << 20);
        let to_server: Vec<u8> = delivered(&t, Direction::ToServer).into_iter().flatten().collect();
        let to_client: Vec<u8> = delivered(&t, Direction::ToClient).into_iter().flatten().collect();
        prop_assert_eq!(to_server, g.client.clone());
        prop_assert_eq!(to_client, g.server.clone());
        prop_assert_eq!(t.r.stats().gaps.gap + t.r.stats().gaps.snaplen, 0);
        prop_assert_eq!(t.r.stats().overlap_conflict_bytes, 0);
        let closed = matches!(
            t.out.last(),
            Some(StreamEvent::Close { reason: CloseReason::Fin, .. })
        );
        prop_assert!(closed);
        prop_assert_eq!(t.r.memory_used(), TOMB_COST);
    }

    #[test]
    fn holes_surface_as_gaps_of_exactly_the_missing_bytes(
        g in gen(),
        drop in prop::collection::vec(prop::bool::weighted(0.25), 1..40),
        tails in prop::collection::vec(prop_oneof![4 => Just(0u8), 1 => 1u8..40], 1..40),
    ) {
        let planned = plan(&g, &drop, &tails);
        let t = run(&g, &planned, 1 << 20);
        for (dir, data, fc) in [
            (Direction::ToServer, &g.client, true),
            (Direction::ToClient, &g.server, false),
        ] {
            let want = expected_with_holes(data, &planned, fc);
            let got = delivered(&t, dir);
            prop_assert_eq!(&got, &want);
        }
        let missing: usize = [(&g.client, true), (&g.server, false)]
            .iter()
            .map(|(d, fc)| expected_with_holes(d, &planned, *fc).iter().filter(|b| b.is_none()).count())
            .sum();
        let st = t.r.stats();
        prop_assert_eq!((st.gap_bytes.gap + st.gap_bytes.snaplen) as usize, missing);
        for e in &t.out {
            if let StreamEvent::Data { data, .. } = e {
                prop_assert!(!data.is_empty());
            }
        }
    }

    #[test]
    fn arbitrary_segments_never_panic_and_stay_within_memory(
        segs in prop::collection::vec(
            (
                0usize..4, 0usize..4, any::<u8>(),
                prop_oneof![any::<u32>(), 0u32..400, (u32::MAX - 200)..=u32::MAX],
                any::<u32>(),
                prop::collection::vec(any::<u8>(), 0..120),
                prop_oneof![3 => Just(0u32), 1 => any::<u32>(), 1 => 0u32..300],
                0u64..3_000,
                any::<bool>(),
            ),
            1..200,
        ),
        ooo in 16usize..2048,
        budget_flows in 1usize..12,
    ) {
        let hosts = ["10.0.0.1:80", "10.0.0.2:40000", "10.0.0.1:40001", "[::1]:8080"];
        let flow_memory = budget_flows * FLOW_COST + 3000;
        let mut r = Reassembler::new(
            ReassemblyConfig {
                flow_memory,
                ooo_bytes_per_flow: ooo,
                idle_timeout: Duration::from_secs(5),
                gap_timeout: Duration::from_millis(700),
            },
            vec![ServerAddr::Port(80)],
        );
        let mut out = Vec::new();
        let mut now = ms(0);
        for (s, d, flags, seq, ack, payload, tail, step, expire) in segs {
            now = Nanos(now.0 + step * 1_000_000);
            r.push(
                Segment {
                    ts: now,
                    src: addr(hosts[s]),
                    dst: addr(hosts[d]),
                    seq,
                    ack,
                    flags: TcpFlags(flags),
                    payload: Bytes::from(payload),
                    missing_tail: tail,
                },
                &mut out,
            );
            prop_assert!(r.memory_used() <= flow_memory, "{} > {}", r.memory_used(), flow_memory);
            if expire {
                r.expire(now, &mut out);
            }
        }
        r.finish(now, &mut out);
        prop_assert_eq!(r.memory_used(), 0);
        prop_assert_eq!(r.flows_active(), 0);
        prop_assert!(r.sh.timers.is_empty() && r.lru.is_empty());
        // Every connection: Open first, Close last, nothing empty, nothing after Close.
        let mut state: std::collections::HashMap<ConnId, bool> = Default::default();
        let mut last_opened = 0;
        for e in &out {
            match e {
                StreamEvent::Open { conn, .. } => {
                    prop_assert!(!state.contains_key(conn));
                    prop_assert!(conn.0 > last_opened);
                    last_opened = conn.0;
                    state.insert(*conn, true);
                }
                StreamEvent::Close { conn, .. } => {
                    prop_assert_eq!(state.insert(*conn, false), Some(true));
                }
                StreamEvent::Data { conn, data, .. } => {
                    prop_assert!(!data.is_empty());
                    prop_assert_eq!(state.get(conn), Some(&true));
                }
                other => prop_assert_eq!(state.get(&other.conn()), Some(&true)),
            }
        }
        prop_assert!(state.values().all(|open| !open));
        let st = r.stats();
        prop_assert_eq!(st.flows_opened, st.flows_closed.total());
    }
}
