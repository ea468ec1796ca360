//! Tests for the capture-file reader: a tiny pcap/pcapng writer builds every format, byte order,
//! time resolution and link type in memory; the shared corpus and tshark cross-check real files.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use super::decode::{decode, LinkType, Skip};
use super::pcapng::{
    BLOCK_EPB, BLOCK_IDB, BLOCK_PB, BLOCK_SPB, OPT_IF_TSOFFSET, OPT_IF_TSRESOL, PCAPNG_BOM,
};
use super::*;

// ---------------------------------------------------------------------------------------------
// Packet builders
// ---------------------------------------------------------------------------------------------

const SRC4: [u8; 4] = [10, 0, 0, 1];
const DST4: [u8; 4] = [10, 0, 0, 2];
const SRC6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const DST6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const SPORT: u16 = 40_000;
const DPORT: u16 = 80;
const SEQ: u32 = 1_000;
const ACK: u32 = 2_000;
const PA: u8 = TcpFlags::PSH | TcpFlags::ACK;

/// A TCP header (with `options` bytes, a multiple of 4) followed by `payload`.
fn tcp_with(options: &[u8], flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&SPORT.to_be_bytes());
    t.extend_from_slice(&DPORT.to_be_bytes());
    t.extend_from_slice(&SEQ.to_be_bytes());
    t.extend_from_slice(&ACK.to_be_bytes());
    let doff = u8::try_from((20 + options.len()) / 4).unwrap();
    t.push(doff << 4);
    t.push(flags);
    t.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(options);
    t.extend_from_slice(payload);
    t
}

fn tcp(payload: &[u8]) -> Vec<u8> {
    tcp_with(&[], PA, payload)
}

/// An IPv4 packet: `options` (a multiple of 4), protocol, fragment field, body.
fn ipv4_with(options: &[u8], proto: u8, frag: u16, body: &[u8]) -> Vec<u8> {
    let ihl = u8::try_from((20 + options.len()) / 4).unwrap();
    let total = u16::try_from(20 + options.len() + body.len()).unwrap_or(0);
    let mut p = vec![0x40 | ihl, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 1]);
    p.extend_from_slice(&frag.to_be_bytes());
    p.extend_from_slice(&[64, proto, 0, 0]);
    p.extend_from_slice(&SRC4);
    p.extend_from_slice(&DST4);
    p.extend_from_slice(options);
    p.extend_from_slice(body);
    p
}

fn ipv4(body: &[u8]) -> Vec<u8> {
    ipv4_with(&[], 6, 0x4000, body)
}

/// An IPv6 packet with extension headers `exts` (next-header value, body of 6 + 8k bytes).
fn ipv6_with(exts: &[(u8, Vec<u8>)], last: u8, body: &[u8]) -> Vec<u8> {
    let mut chain = Vec::new();
    for (i, (_, ext_body)) in exts.iter().enumerate() {
        let next = exts.get(i + 1).map_or(last, |(t, _)| *t);
        chain.push(next);
        chain.push(u8::try_from((ext_body.len() + 2) / 8 - 1).unwrap());
        chain.extend_from_slice(ext_body);
    }
    let first = exts.first().map_or(last, |(t, _)| *t);
    let plen = u16::try_from(chain.len() + body.len()).unwrap();
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&plen.to_be_bytes());
    p.push(first);
    p.push(64);
    p.extend_from_slice(&SRC6);
    p.extend_from_slice(&DST6);
    p.extend_from_slice(&chain);
    p.extend_from_slice(body);
    p
}

fn ipv6(body: &[u8]) -> Vec<u8> {
    ipv6_with(&[], 6, body)
}

fn eth_tagged(tags: &[u16], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    for (i, tag) in tags.iter().enumerate() {
        f.extend_from_slice(&tag.to_be_bytes());
        f.extend_from_slice(&[0, u8::try_from(i + 1).unwrap()]);
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    eth_tagged(&[], ethertype, payload)
}

fn eth4(payload: &[u8]) -> Vec<u8> {
    eth(0x0800, &ipv4(&tcp(payload)))
}

fn sll(protocol: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0];
    f.extend_from_slice(&protocol.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn sll2(protocol: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = protocol.to_be_bytes().to_vec();
    f.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
    f.extend_from_slice(payload);
    f
}

fn family(order: Order, fam: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = u32b(order, fam).to_vec();
    f.extend_from_slice(payload);
    f
}

// ---------------------------------------------------------------------------------------------
// File writers
// ---------------------------------------------------------------------------------------------

fn u16b(order: Order, v: u16) -> [u8; 2] {
    match order {
        Order::Le => v.to_le_bytes(),
        Order::Be => v.to_be_bytes(),
    }
}

fn u32b(order: Order, v: u32) -> [u8; 4] {
    match order {
        Order::Le => v.to_le_bytes(),
        Order::Be => v.to_be_bytes(),
    }
}

/// One packet for a writer: timestamp in ns, captured bytes, length on the wire.
#[derive(Clone)]
struct Rec {
    ts: u64,
    data: Vec<u8>,
    wire_len: u32,
}

fn rec(ts: u64, data: Vec<u8>) -> Rec {
    let wire_len = u32::try_from(data.len()).unwrap();
    Rec { ts, data, wire_len }
}

/// A classic pcap file.
fn pcap_file(order: Order, nanos: bool, linktype: u32, snaplen: u32, recs: &[Rec]) -> Vec<u8> {
    let magic: u32 = if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 };
    let mut f = u32b(order, magic).to_vec();
    f.extend_from_slice(&u16b(order, 2));
    f.extend_from_slice(&u16b(order, 4));
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&u32b(order, snaplen));
    f.extend_from_slice(&u32b(order, linktype));
    for r in recs {
        let sec = u32::try_from(r.ts / 1_000_000_000).unwrap();
        let sub = r.ts % 1_000_000_000;
        let frac = u32::try_from(if nanos { sub } else { sub / 1000 }).unwrap();
        f.extend_from_slice(&u32b(order, sec));
        f.extend_from_slice(&u32b(order, frac));
        f.extend_from_slice(&u32b(order, u32::try_from(r.data.len()).unwrap()));
        f.extend_from_slice(&u32b(order, r.wire_len));
        f.extend_from_slice(&r.data);
    }
    f
}

fn pcap_le(linktype: u32, recs: &[Rec]) -> Vec<u8> {
    pcap_file(Order::Le, false, linktype, 65535, recs)
}

/// A pcapng writer: sections, interfaces and packet blocks in either byte order.
struct Ng {
    order: Order,
    out: Vec<u8>,
}

impl Ng {
    fn new(order: Order) -> Ng {
        let mut ng = Ng {
            order,
            out: Vec::new(),
        };
        ng.shb(order);
        ng
    }

    fn shb(&mut self, order: Order) {
        self.order = order;
        let mut body = u32b(order, PCAPNG_BOM).to_vec();
        body.extend_from_slice(&u16b(order, 1));
        body.extend_from_slice(&u16b(order, 0));
        body.extend_from_slice(&[0xff; 8]);
        self.block(0x0a0d_0d0a, &body);
    }

    fn block(&mut self, block_type: u32, body: &[u8]) {
        let mut body = body.to_vec();
        while !body.len().is_multiple_of(4) {
            body.push(0);
        }
        let len = u32::try_from(body.len() + 12).unwrap();
        let o = self.order;
        self.out.extend_from_slice(&u32b(o, block_type));
        self.out.extend_from_slice(&u32b(o, len));
        self.out.extend_from_slice(&body);
        self.out.extend_from_slice(&u32b(o, len));
    }

    fn idb(&mut self, linktype: u16, snaplen: u32, tsresol: Option<u8>) {
        self.idb_opts(linktype, snaplen, tsresol, None);
    }

    fn idb_opts(&mut self, linktype: u16, snaplen: u32, tsresol: Option<u8>, offset: Option<i64>) {
        let o = self.order;
        let mut body = u16b(o, linktype).to_vec();
        body.extend_from_slice(&[0, 0]);
        body.extend_from_slice(&u32b(o, snaplen));
        // An option parity ignores first (if_name), to prove options are walked.
        body.extend_from_slice(&u16b(o, 2));
        body.extend_from_slice(&u16b(o, 4));
        body.extend_from_slice(b"eth0");
        if let Some(r) = tsresol {
            body.extend_from_slice(&u16b(o, OPT_IF_TSRESOL));
            body.extend_from_slice(&u16b(o, 1));
            body.extend_from_slice(&[r, 0, 0, 0]);
        }
        if let Some(secs) = offset {
            body.extend_from_slice(&u16b(o, OPT_IF_TSOFFSET));
            body.extend_from_slice(&u16b(o, 8));
            let b = match o {
                Order::Le => secs.to_le_bytes(),
                Order::Be => secs.to_be_bytes(),
            };
            body.extend_from_slice(&b);
        }
        body.extend_from_slice(&[0, 0, 0, 0]);
        self.block(BLOCK_IDB, &body);
    }

    fn epb(&mut self, iface: u32, units: u64, data: &[u8], wire_len: u32) {
        let o = self.order;
        let mut body = u32b(o, iface).to_vec();
        body.extend_from_slice(&u32b(o, u32::try_from(units >> 32).unwrap()));
        body.extend_from_slice(&u32b(o, units as u32));
        body.extend_from_slice(&u32b(o, u32::try_from(data.len()).unwrap()));
        body.extend_from_slice(&u32b(o, wire_len));
        body.extend_from_slice(data);
        self.block(BLOCK_EPB, &body);
    }

    fn epb_full(&mut self, iface: u32, units: u64, data: &[u8]) {
        self.epb(iface, units, data, u32::try_from(data.len()).unwrap());
    }

    fn pb(&mut self, iface: u16, units: u64, data: &[u8]) {
        let o = self.order;
        let mut body = u16b(o, iface).to_vec();
        body.extend_from_slice(&u16b(o, 0));
        body.extend_from_slice(&u32b(o, u32::try_from(units >> 32).unwrap()));
        body.extend_from_slice(&u32b(o, units as u32));
        body.extend_from_slice(&u32b(o, u32::try_from(data.len()).unwrap()));
        body.extend_from_slice(&u32b(o, u32::try_from(data.len()).unwrap()));
        body.extend_from_slice(data);
        self.block(BLOCK_PB, &body);
    }

    fn spb(&mut self, data: &[u8], wire_len: u32) {
        let mut body = u32b(self.order, wire_len).to_vec();
        body.extend_from_slice(data);
        self.block(BLOCK_SPB, &body);
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Reading helpers
// ---------------------------------------------------------------------------------------------

fn try_read(bytes: Vec<u8>) -> Result<(Vec<Segment>, ReadStats), CaptureError> {
    let mut r = CaptureReader::from_reader("test.pcap".into(), Box::new(io::Cursor::new(bytes)))?;
    let mut segs = Vec::new();
    while let Some(s) = r.next_segment()? {
        segs.push(s);
    }
    Ok((segs, r.stats().clone()))
}

fn read(bytes: Vec<u8>) -> (Vec<Segment>, ReadStats) {
    match try_read(bytes) {
        Ok(x) => x,
        Err(e) => panic!("reading failed: {e}"),
    }
}

fn read_err(bytes: Vec<u8>) -> CaptureError {
    match try_read(bytes) {
        Ok((segs, stats)) => panic!("expected an error, read {} segments: {stats:?}", segs.len()),
        Err(e) => e,
    }
}

fn v4(addr: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(addr)), port)
}

fn v6(addr: [u8; 16], port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V6(Ipv6Addr::from(addr)), port)
}

/// Decodes one frame that must be a TCP segment and returns its payload.
fn payload_of(link: LinkType, frame: &[u8]) -> Vec<u8> {
    match decode(link, frame, frame.len()) {
        Ok(t) => frame[t.payload].to_vec(),
        Err(skip) => panic!("{link:?} frame skipped as {skip:?}"),
    }
}

fn skip_of(link: LinkType, frame: &[u8], wire_len: usize) -> Skip {
    match decode(link, frame, wire_len) {
        Ok(t) => panic!("expected a skip, got {t:?}"),
        Err(s) => s,
    }
}

// ---------------------------------------------------------------------------------------------
// Classic pcap
// ---------------------------------------------------------------------------------------------

#[test]
fn pcap_reads_every_magic_and_byte_order() {
    let ts1 = 1_700_000_000_123_456_789;
    let ts2 = 1_700_000_001_000_000_999;
    for order in [Order::Le, Order::Be] {
        for nanos in [false, true] {
            let file = pcap_file(
                order,
                nanos,
                1,
                65535,
                &[rec(ts1, eth4(b"GET / HTTP/1.1\r\n")), rec(ts2, eth4(b"x"))],
            );
            let (segs, stats) = read(file);
            assert_eq!(segs.len(), 2, "{order:?} nanos={nanos}");
            let want1 = if nanos { ts1 } else { ts1 - 789 };
            let want2 = if nanos { ts2 } else { ts2 - 999 };
            assert_eq!(segs[0].ts, Nanos(want1), "{order:?} nanos={nanos}");
            assert_eq!(segs[1].ts, Nanos(want2), "{order:?} nanos={nanos}");
            assert_eq!(&segs[0].payload[..], b"GET / HTTP/1.1\r\n");
            assert_eq!(segs[0].src, v4(SRC4, SPORT));
            assert_eq!(segs[0].dst, v4(DST4, DPORT));
            assert_eq!((segs[0].seq, segs[0].ack), (SEQ, ACK));
            assert_eq!(segs[0].flags, TcpFlags(PA));
            assert_eq!(segs[0].missing_tail, 0);
            assert_eq!(stats.packets, 2);
            assert_eq!(stats.tcp_segments, 2);
            assert_eq!(stats.truncated_at, None);
        }
    }
}

#[test]
fn pcap_with_no_records_reads_nothing() {
    let (segs, stats) = read(pcap_le(1, &[]));
    assert!(segs.is_empty());
    assert_eq!(
        stats,
        ReadStats {
            bytes_read: 24,
            ..ReadStats::default()
        }
    );
}

#[test]
fn pcap_with_an_unknown_link_type_is_an_error_naming_file_and_link_type() {
    let e = read_err(pcap_le(105, &[rec(1, vec![0; 40])]));
    assert!(
        matches!(&e, CaptureError::UnsupportedLinkType { file, linktype: 105 } if file == "test.pcap"),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("test.pcap") && msg.contains("105") && msg.contains("802.11"),
        "{msg}"
    );
}

#[test]
fn pcap_link_type_field_fcs_bits_are_ignored() {
    // Bit 26 ("FCS present") and an FCS length of 4 in bits 28-31, as some writers set them.
    let lt = 1 | 1 << 26 | 4 << 28;
    let (segs, _) = read(pcap_le(lt, &[rec(1, eth4(b"fcs"))]));
    assert_eq!(&segs[0].payload[..], b"fcs");
}

// ---------------------------------------------------------------------------------------------
// pcapng
// ---------------------------------------------------------------------------------------------

#[test]
fn pcapng_interfaces_have_their_own_link_type_and_time_resolution() {
    for order in [Order::Le, Order::Be] {
        let mut ng = Ng::new(order);
        ng.idb(1, 0, None); // 0: Ethernet, microseconds by default
        ng.idb(228, 0, Some(9)); // 1: raw IPv4, nanoseconds
        ng.idb(147, 0, Some(3)); // 2: user-defined link type: unknown
        ng.idb(0, 0, Some(0x80 | 20)); // 3: BSD loopback, 2^-20 s
        ng.idb(229, 0, Some(3)); // 4: raw IPv6, milliseconds
        ng.idb(101, 0, Some(12)); // 5: raw, picoseconds
        ng.epb_full(0, 1_700_000_000_000_001, &eth4(b"a"));
        ng.epb_full(1, 1_700_000_000_000_000_002, &ipv4(&tcp(b"b")));
        ng.epb_full(2, 5, &eth4(b"unknown"));
        ng.epb_full(3, 3 << 20 | 1 << 19, &family(order, 2, &ipv4(&tcp(b"c"))));
        ng.epb_full(4, 1_700_000_000_004, &ipv6(&tcp(b"d")));
        ng.epb_full(5, 1_700_000_000_000_005_000, &ipv4(&tcp(b"e")));
        let (segs, stats) = read(ng.out);
        let got: Vec<(u64, &[u8])> = segs.iter().map(|s| (s.ts.0, &s.payload[..])).collect();
        assert_eq!(
            got,
            vec![
                (1_700_000_000_000_001_000, &b"a"[..]),
                (1_700_000_000_000_000_002, b"b"),
                (3_500_000_000, b"c"),
                (1_700_000_000_004_000_000, b"d"),
                (1_700_000_000_000_005, b"e"),
            ],
            "{order:?}"
        );
        assert_eq!(segs[3].src, v6(SRC6, SPORT));
        assert_eq!(stats.unknown_linktype, 1);
        assert_eq!(stats.packets, 6);
        assert_eq!(stats.tcp_segments, 5);
    }
}

#[test]
fn pcapng_tsoffset_shifts_timestamps() {
    let mut ng = Ng::new(Order::Le);
    ng.idb_opts(1, 0, Some(9), Some(1_000));
    ng.epb_full(0, 5, &eth4(b"a"));
    let (segs, _) = read(ng.out);
    assert_eq!(segs[0].ts, Nanos(1_000_000_000_005));
}

#[test]
fn pcapng_simple_packet_block_takes_previous_timestamp_and_snaplen() {
    let mut ng = Ng::new(Order::Le);
    ng.idb(1, 60, None);
    ng.epb_full(0, 7_000_000, &eth4(b"first"));
    let big = eth4(&[b'z'; 100]);
    // The block holds the whole frame, but the interface's snap length says 60 were captured.
    ng.spb(&big, u32::try_from(big.len()).unwrap());
    let (segs, stats) = read(ng.out);
    assert_eq!(segs.len(), 2);
    assert_eq!(segs[1].ts, Nanos(7_000_000_000));
    assert_eq!(segs[1].payload.len(), 60 - 54);
    assert_eq!(segs[1].missing_tail, 100 - 6);
    assert_eq!(stats.snapped, 1);
}

#[test]
fn pcapng_simple_packet_block_without_snaplen_uses_block_and_wire_length() {
    let mut ng = Ng::new(Order::Be);
    ng.idb(1, 0, None);
    // Captured 2 bytes short of the wire: the block length says so.
    let frame = eth4(b"abcdefgh");
    ng.spb(
        &frame[..frame.len() - 2],
        u32::try_from(frame.len()).unwrap(),
    );
    let (segs, _) = read(ng.out);
    assert_eq!(&segs[0].payload[..], b"abcdef");
    assert_eq!(segs[0].missing_tail, 2);
}

#[test]
fn pcapng_obsolete_packet_block_is_read() {
    let mut ng = Ng::new(Order::Le);
    ng.idb(1, 0, None);
    ng.pb(0, 42, &eth4(b"old"));
    let (segs, _) = read(ng.out);
    assert_eq!(&segs[0].payload[..], b"old");
    assert_eq!(segs[0].ts, Nanos(42_000));
}

#[test]
fn pcapng_sections_reset_interfaces_and_byte_order() {
    let mut ng = Ng::new(Order::Le);
    ng.idb(1, 0, None);
    ng.idb(1, 0, None);
    ng.epb_full(1, 1, &eth4(b"s1"));
    ng.shb(Order::Be);
    ng.idb(228, 0, Some(9));
    ng.epb_full(0, 2, &ipv4(&tcp(b"s2")));
    // Interface 1 belonged to the first section only.
    ng.epb_full(1, 3, &eth4(b"gone"));
    ng.shb(Order::Le);
    ng.idb(1, 0, None);
    ng.epb_full(0, 4, &eth4(b"s3"));
    let (segs, stats) = read(ng.out);
    let payloads: Vec<&[u8]> = segs.iter().map(|s| &s.payload[..]).collect();
    assert_eq!(payloads, vec![&b"s1"[..], b"s2", b"s3"]);
    assert_eq!(segs[1].ts, Nanos(2));
    assert_eq!(stats.malformed, 1);
    assert_eq!(stats.packets, 4);
}

#[test]
fn pcapng_unknown_blocks_are_skipped() {
    let mut ng = Ng::new(Order::Le);
    ng.block(4, &[1, 0, 4, 0, 10, 0, 0, 1, 0, 0, 0, 0]); // name resolution
    ng.idb(1, 0, None);
    ng.block(0x0000_0bad, b"custom block body");
    ng.epb_full(0, 1, &eth4(b"a"));
    ng.block(5, &[0; 12]); // interface statistics
    ng.block(0x8000_0001, &[]); // local use
    ng.epb_full(0, 2, &eth4(b"b"));
    let (segs, stats) = read(ng.out);
    assert_eq!(segs.len(), 2);
    assert_eq!(stats.packets, 2);
}

#[test]
fn pcapng_packet_before_any_interface_is_malformed_not_fatal() {
    let mut ng = Ng::new(Order::Le);
    ng.epb_full(0, 1, &eth4(b"a"));
    ng.spb(&eth4(b"b"), 57);
    ng.idb(1, 0, None);
    ng.epb_full(0, 1, &eth4(b"c"));
    let (segs, stats) = read(ng.out);
    assert_eq!(segs.len(), 1);
    assert_eq!(stats.malformed, 2);
}

// ---------------------------------------------------------------------------------------------
// gzip
// ---------------------------------------------------------------------------------------------

#[test]
fn gzip_pcap_and_pcapng_are_decompressed() {
    let recs = [rec(1_000, eth4(b"one")), rec(2_000, eth4(b"two"))];
    let plain = pcap_file(Order::Be, true, 1, 65535, &recs);
    let gz = gzip(&plain);
    let gz_len = gz.len() as u64;
    let (segs, stats) = read(gz);
    assert_eq!(segs.len(), 2);
    assert_eq!(&segs[1].payload[..], b"two");
    assert_eq!(
        stats.bytes_read, gz_len,
        "bytes_read counts compressed bytes"
    );

    let mut ng = Ng::new(Order::Le);
    ng.idb(1, 0, None);
    ng.epb_full(0, 1, &eth4(b"ng"));
    let (segs, _) = read(gzip(&ng.out));
    assert_eq!(&segs[0].payload[..], b"ng");
}

#[test]
fn gzip_with_several_members_reads_them_all() {
    // `cat a.gz b.gz`: a pcap whose second half sits in a second gzip member.
    let file = pcap_le(1, &[rec(1, eth4(b"a")), rec(2, eth4(b"b"))]);
    let (head, tail) = file.split_at(24 + 16 + 30);
    let mut gz = gzip(head);
    gz.extend_from_slice(&gzip(tail));
    let (segs, stats) = read(gz);
    assert_eq!(segs.len(), 2);
    assert_eq!(stats.truncated_at, None);
}

#[test]
fn gzip_stream_cut_short_returns_what_decompressed_then_truncation() {
    let recs: Vec<Rec> = (0..2000u64)
        .map(|i| {
            rec(
                i,
                eth4(format!("payload number {i} with some text").as_bytes()),
            )
        })
        .collect();
    let gz = gzip(&pcap_le(1, &recs));
    for cut in [gz.len() - 1, gz.len() - 8, gz.len() / 2, gz.len() / 3] {
        let (segs, stats) = read(gz[..cut].to_vec());
        assert!(stats.truncated_at.is_some(), "cut at {cut}: {stats:?}");
        assert!(
            segs.len() < recs.len() || cut > gz.len() - 9,
            "cut at {cut}"
        );
        for (i, s) in segs.iter().enumerate() {
            assert_eq!(
                s.payload,
                format!("payload number {i} with some text").as_bytes()
            );
        }
    }
}

#[test]
fn gzip_corruption_is_a_format_error_not_a_panic() {
    let recs: Vec<Rec> = (0..500u64).map(|i| rec(i, eth4(&[b'q'; 300]))).collect();
    let mut gz = gzip(&pcap_le(1, &recs));
    let n = gz.len();
    // Corrupt the CRC trailer: everything decompresses, the check fails at the end.
    gz[n - 8] ^= 0xff;
    match try_read(gz) {
        Err(CaptureError::Format { what, .. }) => {
            assert!(what.contains("gzip"), "{what}");
            assert!(what.contains("decompressed bytes"), "{what}");
        }
        other => panic!("expected a gzip format error, got {other:?}"),
    }
}

#[test]
fn gzip_of_something_else_says_so_with_decompressed_offsets() {
    let e = read_err(gzip(b"hello, this is not a capture"));
    let msg = e.to_string();
    assert!(msg.contains("unknown magic number 68 65 6c 6c"), "{msg}");
    assert!(msg.contains("gzip-compressed"), "{msg}");
}

// ---------------------------------------------------------------------------------------------
// Link types
// ---------------------------------------------------------------------------------------------

#[test]
fn every_link_type_decodes_tcp() {
    let ip4 = ipv4(&tcp(b"hello"));
    let ip6 = ipv6(&tcp(b"hello"));
    let cases: Vec<(u32, Vec<u8>)> = vec![
        (1, eth(0x0800, &ip4)),
        (1, eth(0x86dd, &ip6)),
        (0, family(Order::Le, 2, &ip4)),
        (0, family(Order::Be, 2, &ip4)),
        (0, family(Order::Le, 24, &ip6)),
        (0, family(Order::Le, 28, &ip6)),
        (0, family(Order::Be, 30, &ip6)),
        (108, family(Order::Be, 2, &ip4)),
        (108, family(Order::Be, 24, &ip6)),
        (101, ip4.clone()),
        (101, ip6.clone()),
        (12, ip4.clone()),
        (14, ip6.clone()),
        (228, ip4.clone()),
        (229, ip6.clone()),
        (113, sll(0x0800, &ip4)),
        (113, sll(0x86dd, &ip6)),
        (113, sll(0x8100, &[&[0, 5, 0x08, 0x00][..], &ip4].concat())),
        (276, sll2(0x0800, &ip4)),
        (276, sll2(0x86dd, &ip6)),
    ];
    for (lt, frame) in cases {
        let link = LinkType::from_linktype(lt).unwrap();
        assert_eq!(payload_of(link, &frame), b"hello", "link type {lt}");
        // And end to end through a file of that link type.
        let (segs, _) = read(pcap_le(lt, &[rec(1, frame)]));
        assert_eq!(&segs[0].payload[..], b"hello", "link type {lt} in a file");
    }
}

#[test]
fn loopback_families_that_are_not_ip_are_non_tcp() {
    assert_eq!(
        skip_of(LinkType::Null, &family(Order::Le, 7, &[0; 40]), 44),
        Skip::NonTcp
    );
    assert_eq!(
        skip_of(LinkType::Loop, &family(Order::Be, 17, &[0; 40]), 44),
        Skip::NonTcp
    );
}

#[test]
fn cooked_captures_of_non_ip_protocols_are_non_tcp() {
    let arp = sll(0x0806, &[0; 28]);
    assert_eq!(skip_of(LinkType::LinuxSll, &arp, arp.len()), Skip::NonTcp);
    let arp2 = sll2(0x0806, &[0; 28]);
    assert_eq!(
        skip_of(LinkType::LinuxSll2, &arp2, arp2.len()),
        Skip::NonTcp
    );
}

#[test]
fn raw_ip_with_a_bad_version_is_malformed() {
    let mut p = ipv4(&tcp(b"x"));
    p[0] = 0x55;
    assert_eq!(skip_of(LinkType::Raw, &p, p.len()), Skip::Malformed);
    // 228 says IPv4; an IPv6 packet there is wrong.
    let p6 = ipv6(&tcp(b"x"));
    assert_eq!(skip_of(LinkType::Ipv4, &p6, p6.len()), Skip::Malformed);
}

#[test]
fn vlan_and_qinq_tags_stack_any_number_of_times() {
    let ip4 = ipv4(&tcp(b"tagged"));
    for tags in [
        &[0x8100][..],
        &[0x88a8, 0x8100],
        &[0x9100, 0x8100],
        &[0x88a8, 0x9100, 0x8100, 0x8100],
    ] {
        let frame = eth_tagged(tags, 0x0800, &ip4);
        assert_eq!(
            payload_of(LinkType::Ethernet, &frame),
            b"tagged",
            "{tags:x?}"
        );
    }
    let frame = eth_tagged(&[0x8100, 0x8100], 0x86dd, &ipv6(&tcp(b"six")));
    assert_eq!(payload_of(LinkType::Ethernet, &frame), b"six");
    // A tag whose inner ethertype was cut off (not snapped) is malformed.
    let short = eth_tagged(&[0x8100], 0x0800, &[]);
    assert_eq!(
        skip_of(LinkType::Ethernet, &short[..16], 16),
        Skip::Malformed
    );
}

// ---------------------------------------------------------------------------------------------
// IP and TCP
// ---------------------------------------------------------------------------------------------

#[test]
fn ipv4_options_are_skipped_by_ihl() {
    for words in 0..=10usize {
        let opts: Vec<u8> = (0..words * 4)
            .map(|i| if i % 4 == 3 { 0 } else { 1 })
            .collect();
        let frame = eth(0x0800, &ipv4_with(&opts, 6, 0, &tcp(b"opts")));
        assert_eq!(
            payload_of(LinkType::Ethernet, &frame),
            b"opts",
            "{words} option words"
        );
    }
}

#[test]
fn ipv4_bad_ihl_is_malformed() {
    let mut p = ipv4(&tcp(b"x"));
    p[0] = 0x44; // IHL 4: less than the fixed header
    assert_eq!(skip_of(LinkType::Ipv4, &p, p.len()), Skip::Malformed);
    let mut p = ipv4(&tcp(b"x"));
    p[0] = 0x4f; // IHL 15 = 60 bytes, more than the 41-byte total length
    assert_eq!(skip_of(LinkType::Ipv4, &p, p.len()), Skip::Malformed);
}

#[test]
fn tcp_options_are_skipped_by_data_offset() {
    let opts = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
    let frame = eth(0x0800, &ipv4(&tcp_with(&opts, PA, b"after options")));
    assert_eq!(payload_of(LinkType::Ethernet, &frame), b"after options");
}

#[test]
fn tcp_bad_data_offset_is_malformed() {
    for doff in [0u8, 4, 15] {
        let mut p = ipv4(&tcp(b"abc"));
        p[20 + 12] = doff << 4;
        assert_eq!(
            skip_of(LinkType::Ipv4, &p, p.len()),
            Skip::Malformed,
            "doff {doff}"
        );
    }
}

#[test]
fn ipv6_extension_headers_are_skipped() {
    let exts = vec![
        (0u8, vec![1, 4, 0, 0, 0, 0]), // hop-by-hop, PadN
        (43, vec![0, 0, 0, 0, 0, 0]),  // routing
        (60, vec![1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), // destination options
    ];
    let p = ipv6_with(&exts, 6, &tcp(b"behind extensions"));
    assert_eq!(payload_of(LinkType::Ipv6, &p), b"behind extensions");
    // An extension header that claims to run past the packet is malformed.
    let mut bad = ipv6_with(&[(60, vec![0; 6])], 6, &tcp(b""));
    bad[41] = 200;
    assert_eq!(skip_of(LinkType::Ipv6, &bad, bad.len()), Skip::Malformed);
}

#[test]
fn ipv6_fragments_are_counted_and_atomic_fragments_decoded() {
    // Offset 0, more fragments: the first piece of a fragmented packet.
    let first = ipv6_with(&[(44, vec![0, 1, 0, 0, 0, 7])], 6, &tcp(b"frag"));
    assert_eq!(skip_of(LinkType::Ipv6, &first, first.len()), Skip::Fragment);
    // Offset 8, last fragment.
    let later = ipv6_with(&[(44, vec![0, 8, 0, 0, 0, 7])], 6, &tcp(b"frag"));
    assert_eq!(skip_of(LinkType::Ipv6, &later, later.len()), Skip::Fragment);
    // Offset 0, no more fragments: RFC 6946 atomic fragment, a whole packet.
    let atomic = ipv6_with(&[(44, vec![0, 0, 0, 0, 0, 7])], 6, &tcp(b"whole"));
    assert_eq!(payload_of(LinkType::Ipv6, &atomic), b"whole");

    let mut ng = Ng::new(Order::Le);
    ng.idb(229, 0, None);
    ng.epb_full(0, 1, &first);
    ng.epb_full(0, 1, &atomic);
    let (segs, stats) = read(ng.out);
    assert_eq!(segs.len(), 1);
    assert_eq!(stats.ip_fragment, 1);
}

#[test]
fn ipv4_fragments_are_counted_and_skipped() {
    let mf = eth(0x0800, &ipv4_with(&[], 6, 0x2000, &tcp(b"first")));
    let off = eth(0x0800, &ipv4_with(&[], 6, 0x0010, &[0; 30]));
    let udp_frag = eth(0x0800, &ipv4_with(&[], 17, 0x2000, &[0; 30]));
    let df = eth(0x0800, &ipv4_with(&[], 6, 0x4000, &tcp(b"whole")));
    let (segs, stats) = read(pcap_le(
        1,
        &[rec(1, mf), rec(2, off), rec(3, udp_frag), rec(4, df)],
    ));
    assert_eq!(segs.len(), 1);
    assert_eq!(&segs[0].payload[..], b"whole");
    assert_eq!(stats.ip_fragment, 3);
}

#[test]
fn non_tcp_packets_are_counted_and_skipped() {
    let udp = eth(0x0800, &ipv4_with(&[], 17, 0, &[0; 16]));
    let icmp = eth(0x0800, &ipv4_with(&[], 1, 0, &[8, 0, 0, 0, 0, 0, 0, 0]));
    let arp = eth(0x0806, &[0; 28]);
    let llc = eth(0x0026, &[0x42; 38]);
    let udp6 = eth(0x86dd, &ipv6_with(&[], 17, &[0; 16]));
    let no_next = eth(0x86dd, &ipv6_with(&[(0, vec![0; 6])], 59, &[]));
    let recs: Vec<Rec> = [udp, icmp, arp, llc, udp6, no_next, eth4(b"tcp")]
        .into_iter()
        .map(|f| rec(1, f))
        .collect();
    let (segs, stats) = read(pcap_le(1, &recs));
    assert_eq!(segs.len(), 1);
    assert_eq!(stats.non_tcp, 6);
    assert_eq!(stats.packets, 7);
}

#[test]
fn ethernet_padding_never_becomes_payload() {
    // Ethernet's minimum frame is 60 bytes before the FCS; shorter packets are padded.
    for payload in [&b""[..], b"ok", b"01234"] {
        let mut frame = eth4(payload);
        frame.resize(60, 0xee);
        let (segs, stats) = read(pcap_le(1, &[rec(1, frame)]));
        assert_eq!(segs.len(), 1, "{stats:?}");
        assert_eq!(&segs[0].payload[..], payload);
        assert_eq!(segs[0].missing_tail, 0);
    }
}

#[test]
fn zero_ipv4_total_length_means_tso_and_uses_the_frame_length() {
    let mut p = ipv4(&tcp(b"segmentation offload"));
    p[2] = 0;
    p[3] = 0;
    assert_eq!(payload_of(LinkType::Ipv4, &p), b"segmentation offload");
}

#[test]
fn ip_total_length_beyond_unsnapped_capture_is_malformed() {
    let mut p = ipv4(&tcp(b"abc"));
    p[3] += 10;
    assert_eq!(skip_of(LinkType::Ipv4, &p, p.len()), Skip::Malformed);
    let mut p6 = ipv6(&tcp(b"abc"));
    p6[5] += 10;
    assert_eq!(skip_of(LinkType::Ipv6, &p6, p6.len()), Skip::Malformed);
    // Snapped, but claiming more than was on the wire: still malformed.
    let mut p = ipv4(&tcp(&[7; 100]));
    p[2] = 0x10;
    assert_eq!(skip_of(LinkType::Ipv4, &p[..60], p.len()), Skip::Malformed);
}

#[test]
fn truncated_headers_without_snapping_are_malformed() {
    let frame = eth4(b"abc");
    for cut in [5, 13, 20, 33, 40, 53] {
        assert_eq!(
            skip_of(LinkType::Ethernet, &frame[..cut], cut),
            Skip::Malformed,
            "cut {cut}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Snap length
// ---------------------------------------------------------------------------------------------

#[test]
fn snapped_payload_becomes_missing_tail() {
    let body: Vec<u8> = (0..1400u32).map(|i| (i % 251) as u8).collect();
    let frame = eth4(&body);
    let wire = u32::try_from(frame.len()).unwrap();
    let snap = 200;
    let recs = [Rec {
        ts: 1,
        data: frame[..snap].to_vec(),
        wire_len: wire,
    }];
    let (segs, stats) = read(pcap_file(Order::Le, false, 1, 200, &recs));
    assert_eq!(&segs[0].payload[..], &body[..snap - 54]);
    assert_eq!(segs[0].missing_tail as usize, body.len() - (snap - 54));
    assert_eq!(segs[0].wire_payload_len(), 1400);
    assert_eq!(stats.snapped, 1);

    // The same through pcapng, IPv6 behind a VLAN tag, with Ethernet padding on the wire.
    let frame = eth_tagged(&[0x8100], 0x86dd, &ipv6(&tcp(&body)));
    let mut ng = Ng::new(Order::Be);
    ng.idb(1, 0, None);
    ng.epb(0, 1, &frame[..100], u32::try_from(frame.len() + 4).unwrap());
    let (segs, _) = read(ng.out);
    assert_eq!(&segs[0].payload[..], &body[..100 - 78]);
    assert_eq!(segs[0].missing_tail as usize, body.len() - 22);
}

#[test]
fn snap_cut_inside_a_header_is_snapped_header() {
    let opts = [1u8; 8];
    let frame = eth(0x0800, &ipv4_with(&opts, 6, 0, &tcp(&[1; 500])));
    let wire = frame.len();
    // Inside Ethernet, inside the fixed IPv4 header, inside its options, inside TCP.
    for cut in [10, 20, 38, 45, 61] {
        assert_eq!(
            skip_of(LinkType::Ethernet, &frame[..cut], wire),
            Skip::SnappedHeader,
            "cut {cut}"
        );
    }
    // Exactly at the end of the TCP header: an empty captured payload, all of it missing.
    let t = decode(LinkType::Ethernet, &frame[..62], wire).unwrap();
    assert_eq!((t.payload.len(), t.missing_tail), (0, 500));

    let ext = ipv6_with(&[(0, vec![1, 4, 0, 0, 0, 0])], 6, &tcp(&[1; 50]));
    assert_eq!(
        skip_of(LinkType::Ipv6, &ext[..44], ext.len()),
        Skip::SnappedHeader
    );

    let (segs, stats) = read(pcap_le(
        1,
        &[Rec {
            ts: 1,
            data: frame[..40].to_vec(),
            wire_len: u32::try_from(wire).unwrap(),
        }],
    ));
    assert!(segs.is_empty());
    assert_eq!(stats.snapped_header, 1);
}

// ---------------------------------------------------------------------------------------------
// Truncation and damage
// ---------------------------------------------------------------------------------------------

fn three_packets() -> Vec<Vec<u8>> {
    vec![eth4(b"first"), eth4(b"second"), eth4(b"third")]
}

#[test]
fn pcap_tail_cut_at_any_point_of_the_last_record_is_truncation() {
    let frames = three_packets();
    let recs: Vec<Rec> = frames.iter().map(|f| rec(1, f.clone())).collect();
    let file = pcap_le(1, &recs);
    let last_start = file.len() - 16 - frames[2].len();
    for cut in [
        last_start + 1,
        last_start + 8,
        last_start + 15,
        last_start + 16,
        file.len() - 1,
    ] {
        let (segs, stats) = read(file[..cut].to_vec());
        assert_eq!(segs.len(), 2, "cut at {cut}");
        assert_eq!(&segs[1].payload[..], b"second");
        assert_eq!(stats.truncated_at, Some(last_start as u64), "cut at {cut}");
    }
    // A cut exactly between records is a clean end.
    let (segs, stats) = read(file[..last_start].to_vec());
    assert_eq!(segs.len(), 2);
    assert_eq!(stats.truncated_at, None);
}

#[test]
fn pcapng_tail_cut_at_any_point_of_the_last_block_is_truncation() {
    let mut ng = Ng::new(Order::Be);
    ng.idb(1, 0, None);
    for f in three_packets() {
        ng.epb_full(0, 1, &f);
    }
    let full = ng.out.clone();
    let last_len = 32 + eth4(b"third").len().next_multiple_of(4);
    let last_start = full.len() - last_len;
    for cut in [
        last_start + 1,
        last_start + 7,
        last_start + 8,
        last_start + 30,
        full.len() - 1,
    ] {
        let (segs, stats) = read(full[..cut].to_vec());
        assert_eq!(segs.len(), 2, "cut at {cut}");
        assert_eq!(stats.truncated_at, Some(last_start as u64), "cut at {cut}");
    }
    // A second section header cut short is truncation too.
    ng.shb(Order::Le);
    for cut in [full.len() + 3, full.len() + 10, full.len() + 20] {
        let (segs, stats) = read(ng.out[..cut].to_vec());
        assert_eq!(segs.len(), 3, "cut at {cut}");
        assert_eq!(stats.truncated_at, Some(full.len() as u64), "cut at {cut}");
    }
}

#[test]
fn empty_file_is_a_format_error_with_a_hint() {
    let e = read_err(Vec::new());
    let msg = e.to_string();
    assert!(matches!(e, CaptureError::Format { offset: 0, .. }), "{e:?}");
    assert!(msg.contains("test.pcap") && msg.contains("empty"), "{msg}");
    assert!(msg.contains("capinfos test.pcap"), "{msg}");
}

#[test]
fn wrong_magic_is_a_format_error() {
    let e = read_err(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n".to_vec());
    let msg = e.to_string();
    assert!(matches!(e, CaptureError::Format { offset: 0, .. }), "{e:?}");
    assert!(msg.contains("unknown magic number 47 45 54 20"), "{msg}");
    let zstd = read_err(vec![0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0]).to_string();
    assert!(zstd.contains("zstd -d"), "{zstd}");
}

#[test]
fn too_short_headers_are_format_errors() {
    let file = pcap_le(1, &[]);
    for cut in [1, 3, 4, 23] {
        assert!(
            matches!(read_err(file[..cut].to_vec()), CaptureError::Format { .. }),
            "cut {cut}"
        );
    }
    let ng = Ng::new(Order::Le).out;
    for cut in [4, 11, 12, 27] {
        assert!(
            matches!(read_err(ng[..cut].to_vec()), CaptureError::Format { .. }),
            "cut {cut}"
        );
    }
}

#[test]
fn pcap_record_length_beyond_limits_is_a_format_error_at_its_offset() {
    let mut file = pcap_le(1, &[rec(1, eth4(b"ok")), rec(2, eth4(b"bad"))]);
    let second = 24 + 16 + eth4(b"ok").len();
    file[second + 8..second + 12].copy_from_slice(&(300u32 << 20).to_le_bytes());
    let e = read_err(file.clone());
    match &e {
        CaptureError::Format { offset, what, .. } => {
            assert_eq!(*offset, second as u64);
            assert!(what.contains("record length"), "{what}");
        }
        other => panic!("{other:?}"),
    }
    // Larger than the snap length allows but well under 256 MiB: still damage.
    file[second + 8..second + 12].copy_from_slice(&1_000_000u32.to_le_bytes());
    assert!(matches!(read_err(file), CaptureError::Format { .. }));
}

#[test]
fn pcap_record_at_the_snaplen_limit_is_fine() {
    // snaplen 262144 (libpcap's default) and a frame exactly that long.
    let mut frame = eth4(&[]);
    frame.resize(262_144, 0);
    let (_, stats) = read(pcap_file(Order::Le, false, 1, 262_144, &[rec(1, frame)]));
    assert_eq!(stats.packets, 1);
}

#[test]
fn pcapng_impossible_block_lengths_are_format_errors() {
    let mut ng = Ng::new(Order::Le);
    ng.idb(1, 0, None);
    let good_end = ng.out.len();
    ng.epb_full(0, 1, &eth4(b"a"));
    for bad_len in [0u32, 8, 13, 0x7fff_fffc] {
        let mut f = ng.out.clone();
        f[good_end + 4..good_end + 8].copy_from_slice(&bad_len.to_le_bytes());
        match read_err(f) {
            CaptureError::Format { offset, what, .. } => {
                assert_eq!(offset, good_end as u64, "len {bad_len}");
                assert!(what.contains("block length"), "{what}");
            }
            other => panic!("{other:?}"),
        }
    }
    // A trailing length that disagrees with the leading one.
    let mut f = ng.out.clone();
    let n = f.len();
    f[n - 4] ^= 0x40;
    assert!(matches!(read_err(f), CaptureError::Format { .. }));
    // A captured length larger than the block.
    let mut f = ng.out.clone();
    f[good_end + 20..good_end + 24].copy_from_slice(&500u32.to_le_bytes());
    assert!(matches!(read_err(f), CaptureError::Format { .. }));
}

#[test]
fn pcapng_bad_byte_order_magic_and_version_are_format_errors() {
    let mut ng = Ng::new(Order::Le).out;
    ng[8] = 0;
    assert!(read_err(ng).to_string().contains("byte-order magic"));
    let mut ng = Ng::new(Order::Le).out;
    ng[12] = 2;
    assert!(read_err(ng).to_string().contains("pcapng version 2.0"));
}

#[test]
fn garbage_in_the_middle_is_an_error_after_the_good_part() {
    let mut ng = Ng::new(Order::Le);
    ng.idb(1, 0, None);
    ng.epb_full(0, 1, &eth4(b"good"));
    let mut f = ng.out.clone();
    f.extend_from_slice(&[0x55; 64]);
    let mut r =
        CaptureReader::from_reader("mid.pcapng".into(), Box::new(io::Cursor::new(f))).unwrap();
    assert_eq!(&r.next_segment().unwrap().unwrap().payload[..], b"good");
    let e = r.next_segment().unwrap_err();
    assert!(e.to_string().contains("mid.pcapng"), "{e}");
    // The reader is fused after an error.
    assert!(r.next_segment().unwrap().is_none());
}

#[test]
fn open_names_the_file_and_reports_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cap.pcap.gz");
    let gz = gzip(&pcap_le(1, &[rec(1, eth4(b"x"))]));
    std::fs::write(&path, &gz).unwrap();
    let mut r = CaptureReader::open(&path).unwrap();
    assert_eq!(r.file_size(), Some(gz.len() as u64));
    while r.next_segment().unwrap().is_some() {}
    assert_eq!(r.stats().bytes_read, gz.len() as u64);

    let missing = dir.path().join("nope.pcap");
    match CaptureReader::open(&missing) {
        Err(e @ CaptureError::Io { .. }) => assert!(e.to_string().contains("nope.pcap")),
        other => panic!("{other:?}"),
    }
}

/// Serves `data`, then fails with an I/O error instead of reporting the end.
struct FailsAfter {
    data: io::Cursor<Vec<u8>>,
}

impl Read for FailsAfter {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.data.read(buf)? {
            0 => Err(io::Error::other("device went away")),
            n => Ok(n),
        }
    }
}

#[test]
fn source_failures_are_io_errors_for_plain_and_gzip_files() {
    let file = pcap_le(1, &[rec(1, eth4(b"x"))]);
    for data in [file.clone(), gzip(&file)] {
        let gz = data.starts_with(&GZIP_MAGIC);
        let src = FailsAfter {
            data: io::Cursor::new(data),
        };
        let result = CaptureReader::from_reader("flaky.pcap".into(), Box::new(src))
            .and_then(|mut r| r.next_segment());
        match result {
            Err(e @ CaptureError::Io { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("flaky.pcap") && msg.contains("device went away"),
                    "{msg}"
                );
            }
            other => panic!("gzip={gz}: expected an I/O error, got {other:?}"),
        }
    }
}

/// Collects what `tracing` logs while `f` runs.
fn logged(f: impl FnOnce()) -> String {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let sink = Sink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let bytes = sink.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

#[test]
fn truncation_and_unknown_link_types_are_logged_once_with_file_and_offset() {
    let file = pcap_le(1, &[rec(1, eth4(b"a")), rec(2, eth4(b"b"))]);
    let cut = file.len() - 3;
    let log = logged(|| {
        let (segs, stats) = read(file[..cut].to_vec());
        assert_eq!(segs.len(), 1);
        assert_eq!(stats.truncated_at, Some(24 + 16 + 55));
    });
    assert_eq!(log.matches("WARN").count(), 1, "{log}");
    assert!(
        log.contains("test.pcap is cut short") && log.contains("byte 95"),
        "{log}"
    );

    let mut ng = Ng::new(Order::Le);
    ng.idb(147, 0, None);
    for i in 0..100 {
        ng.epb_full(0, i, &eth4(b"x"));
    }
    let log = logged(|| {
        let (_, stats) = read(ng.out);
        assert_eq!(stats.unknown_linktype, 100);
    });
    assert_eq!(
        log.matches("WARN").count(),
        1,
        "one warning per interface, not per packet: {log}"
    );
    assert!(log.contains("link type 147"), "{log}");
}

#[test]
fn reader_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<CaptureReader>();
}

// ---------------------------------------------------------------------------------------------
// Chunking and zero copy
// ---------------------------------------------------------------------------------------------

/// A source that returns at most `step` bytes per read, like a pipe.
struct Trickle {
    data: io::Cursor<Vec<u8>>,
    step: usize,
}

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.step);
        self.data.read(&mut buf[..n])
    }
}

fn many_records(n: usize) -> (Vec<Rec>, Vec<Vec<u8>>) {
    let payloads: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let len = (i * 7919) % 1460;
            (0..len).map(|j| ((i + j) % 256) as u8).collect()
        })
        .collect();
    let recs = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| rec(i as u64, eth4(p)))
        .collect();
    (recs, payloads)
}

#[test]
fn records_spanning_chunk_boundaries_are_intact() {
    // ~3 chunks of data, so records straddle every chunk boundary.
    let (recs, payloads) = many_records(8_000);
    let file = pcap_le(1, &recs);
    assert!(file.len() > 2 * CHUNK);
    let (segs, stats) = read(file.clone());
    assert_eq!(segs.len(), payloads.len());
    for (s, p) in segs.iter().zip(&payloads) {
        assert_eq!(&s.payload[..], &p[..]);
    }
    assert_eq!(stats.bytes_read, file.len() as u64);

    // The same through a source that trickles odd-sized reads.
    let mut r = CaptureReader::from_reader(
        "trickle".into(),
        Box::new(Trickle {
            data: io::Cursor::new(file),
            step: 997,
        }),
    )
    .unwrap();
    let mut n = 0;
    while let Some(s) = r.next_segment().unwrap() {
        assert_eq!(&s.payload[..], &payloads[n][..]);
        n += 1;
    }
    assert_eq!(n, payloads.len());
}

#[test]
fn a_record_larger_than_a_chunk_is_read() {
    // A 3 MiB TSO-style frame (IPv4 total length 0) in a file whose snap length allows it.
    let body = vec![0xabu8; 3 << 20];
    let mut frame = eth4(&body);
    frame[14 + 2] = 0;
    frame[14 + 3] = 0;
    let file = pcap_file(
        Order::Le,
        false,
        1,
        8 << 20,
        &[
            rec(1, eth4(b"before")),
            rec(2, frame),
            rec(3, eth4(b"after")),
        ],
    );
    let (segs, _) = read(file);
    assert_eq!(segs.len(), 3);
    assert_eq!(segs[1].payload.len(), body.len());
    assert_eq!(&segs[2].payload[..], b"after");
}

#[test]
fn payloads_are_slices_of_one_buffer_not_copies() {
    let file = pcap_le(1, &[rec(1, eth4(b"aaaa")), rec(2, eth4(b"bbbb"))]);
    let (segs, _) = read(file);
    let a = segs[0].payload.as_ptr() as usize;
    let b = segs[1].payload.as_ptr() as usize;
    // The second payload sits exactly one record further into the same buffer.
    assert_eq!(b - a, 16 + eth4(b"aaaa").len());
}

// ---------------------------------------------------------------------------------------------
// Properties: arbitrary input never panics, hangs or over-allocates
// ---------------------------------------------------------------------------------------------

/// Reads everything, bounded: the number of calls cannot exceed one per input byte (per
/// decompressed byte for gzip, which proptest inputs cannot inflate much).
fn drain(bytes: Vec<u8>) -> (usize, Option<ReadStats>) {
    let len = if bytes.starts_with(&GZIP_MAGIC) {
        bytes.len() * 1032
    } else {
        bytes.len()
    };
    let Ok(mut r) = CaptureReader::from_reader("prop".into(), Box::new(io::Cursor::new(bytes)))
    else {
        return (0, None);
    };
    let mut n = 0;
    for _ in 0..=len {
        match r.next_segment() {
            Ok(Some(s)) => {
                assert!(s.payload.len() <= len);
                n += 1;
            }
            Ok(None) | Err(_) => return (n, Some(r.stats().clone())),
        }
    }
    panic!("reader did not end within {len} calls on {len} bytes");
}

fn valid_files() -> Vec<Vec<u8>> {
    let (recs, _) = many_records(12);
    let mut files = vec![
        pcap_file(Order::Le, false, 1, 65535, &recs),
        pcap_file(Order::Be, true, 1, 65535, &recs),
    ];
    let mut ng = Ng::new(Order::Be);
    ng.idb(1, 0, Some(9));
    ng.idb(229, 0, None);
    for (i, r) in recs.iter().enumerate() {
        ng.epb_full(0, i as u64, &r.data);
        ng.spb(&ipv6(&tcp(b"six")), 63);
    }
    files.push(ng.out);
    let gz: Vec<Vec<u8>> = files.iter().map(|f| gzip(f)).collect();
    files.extend(gz);
    files
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

    #[test]
    fn arbitrary_bytes_never_panic(
        prefix in 0usize..5,
        tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048),
    ) {
        // Give the fuzzer a head start past the magic numbers half of the time.
        let mut bytes = match prefix {
            0 => pcap_le(1, &[]),
            1 => pcap_file(Order::Be, true, 0, 0, &[]),
            2 => Ng::new(Order::Le).out,
            _ => Vec::new(),
        };
        bytes.extend_from_slice(&tail);
        let (segs, _) = drain(bytes.clone());
        proptest::prop_assert!(segs <= bytes.len() / 20);
        let gz = if prefix == 4 { gzip(&bytes) } else { bytes };
        drain(gz);
    }

    #[test]
    fn truncated_valid_files_yield_a_prefix(which in 0usize..6, cut in 0.0f64..1.0) {
        let files = valid_files();
        let file = &files[which];
        let (full, full_stats) = read(file.clone());
        proptest::prop_assert_eq!(full_stats.truncated_at, None);
        let cut = (file.len() as f64 * cut) as usize;
        match try_read(file[..cut].to_vec()) {
            Ok((segs, stats)) => {
                proptest::prop_assert!(segs.len() <= full.len());
                proptest::prop_assert_eq!(&segs[..], &full[..segs.len()]);
                if which < 3 {
                    proptest::prop_assert!(stats.truncated_at.is_none_or(|t| t <= cut as u64));
                }
                if which >= 3 {
                    proptest::prop_assert!(stats.truncated_at.is_some());
                }
            }
            // Cut inside the file header.
            Err(CaptureError::Format { offset, .. }) => proptest::prop_assert!(offset < 40),
            Err(e) => proptest::prop_assert!(false, "unexpected error {}", e),
        }
    }

    #[test]
    fn mutated_valid_files_never_panic(
        which in 0usize..6,
        flips in proptest::collection::vec((0.0f64..1.0, proptest::prelude::any::<u8>()), 1..8),
    ) {
        let mut file = valid_files().swap_remove(which);
        for (at, x) in flips {
            let i = ((file.len() - 1) as f64 * at) as usize;
            file[i] ^= x | 1;
        }
        drain(file);
    }
}

// ---------------------------------------------------------------------------------------------
// The shared corpus and tshark
// ---------------------------------------------------------------------------------------------

fn corpus_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/pcap");
    if dir.is_dir() {
        return Some(dir);
    }
    let reason = format!("corpus directory {} is absent", dir.display());
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{reason} (CI=true never skips)");
    }
    eprintln!("SKIPPED: capture corpus tests ({reason})");
    None
}

fn corpus_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if p.is_dir() {
                stack.push(p);
            } else if name.ends_with(".pcap")
                || name.ends_with(".pcap.gz")
                || name.ends_with(".pcapng")
            {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn read_path(path: &Path) -> (Vec<Segment>, ReadStats) {
    let mut r = CaptureReader::open(path).unwrap_or_else(|e| panic!("{e}"));
    let mut segs = Vec::new();
    while let Some(s) = r.next_segment().unwrap_or_else(|e| panic!("{e}")) {
        segs.push(s);
    }
    (segs, r.stats().clone())
}

#[test]
fn corpus_every_capture_reads_cleanly() {
    let Some(dir) = corpus_dir() else { return };
    let files = corpus_files(&dir);
    assert!(
        files.len() >= 28,
        "expected the corpus's 28 captures, found {}",
        files.len()
    );
    let mut kinds = (0, 0, 0);
    for path in &files {
        let (segs, stats) = read_path(path);
        let name = path.display();
        assert_eq!(stats.malformed, 0, "{name}: {stats:?}");
        assert_eq!(stats.truncated_at, None, "{name}: {stats:?}");
        assert!(
            segs.len() >= 5,
            "{name}: only {} segments: {stats:?}",
            segs.len()
        );
        assert_eq!(stats.tcp_segments as usize, segs.len());
        assert!(
            stats.tcp_segments * 2 >= stats.packets,
            "{name}: mostly not TCP? {stats:?}"
        );
        assert!(
            segs.iter()
                .any(|s| s.payload.starts_with(b"GET ") || s.payload.starts_with(b"POST ")),
            "{name}: no HTTP request seen"
        );
        let s = path.to_string_lossy();
        if s.ends_with(".gz") {
            kinds.0 += 1;
        } else if s.ends_with(".pcapng") {
            kinds.1 += 1;
        } else {
            kinds.2 += 1;
        }
    }
    assert!(
        kinds.0 >= 1 && kinds.1 >= 1,
        "corpus lacks gzip or pcapng files: {kinds:?}"
    );
}

fn tshark_available() -> bool {
    let ok = std::process::Command::new("tshark")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("tshark is not installed (CI=true never skips)");
        }
        eprintln!("SKIPPED: tshark cross-check (tshark is not installed)");
    }
    ok
}

/// One TCP segment as tshark sees it: (timestamp ns, source port, destination port, raw
/// sequence number, TCP payload length on the wire).
type TsharkSegment = (u64, u16, u16, u32, u64);

fn tshark_segments(path: &Path) -> Vec<TsharkSegment> {
    let out = std::process::Command::new("tshark")
        .args(["-n", "-r"])
        .arg(path)
        .args(["-Y", "tcp", "-T", "fields", "-E", "separator=/s"])
        .args([
            "-e",
            "frame.time_epoch",
            "-e",
            "tcp.srcport",
            "-e",
            "tcp.dstport",
        ])
        .args(["-e", "tcp.seq_raw", "-e", "tcp.len"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tshark failed on {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let field = |f: Option<&str>, line: &str| -> u64 {
        f.and_then(|f| f.parse().ok())
            .unwrap_or_else(|| panic!("tshark line {line:?}"))
    };
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let mut f = line.split(' ');
            let (secs, frac) = f.next().and_then(|t| t.split_once('.')).unwrap();
            let frac = format!("{frac:0<9}");
            let ts = field(Some(secs), line) * 1_000_000_000 + field(frac.get(..9), line);
            (
                ts,
                u16::try_from(field(f.next(), line)).unwrap(),
                u16::try_from(field(f.next(), line)).unwrap(),
                u32::try_from(field(f.next(), line)).unwrap(),
                field(f.next(), line),
            )
        })
        .collect()
}

/// Reads `path` and asserts that every TCP segment matches tshark's view of it.
fn assert_matches_tshark(path: &Path) -> ReadStats {
    let (segs, stats) = read_path(path);
    let ours: Vec<TsharkSegment> = segs
        .iter()
        .map(|s| {
            (
                s.ts.0,
                s.src.port(),
                s.dst.port(),
                s.seq,
                s.wire_payload_len(),
            )
        })
        .collect();
    let theirs = tshark_segments(path);
    assert_eq!(
        ours.len(),
        theirs.len(),
        "{}: segment count vs tshark",
        path.display()
    );
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert_eq!(
            a,
            b,
            "{}: segment {i} (ts, ports, seq, len) vs tshark",
            path.display()
        );
    }
    stats
}

#[test]
fn corpus_segments_match_tshark_one_by_one() {
    let Some(dir) = corpus_dir() else { return };
    if !tshark_available() {
        return;
    }
    for path in corpus_files(&dir) {
        assert_matches_tshark(&path);
    }
}

fn run_tool(tool: &str, args: &[&std::ffi::OsStr]) {
    let out = std::process::Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Wireshark's own tools rewrite corpus captures into the other formats (pcapng, nanosecond
/// pcap), snap them short, and merge captures of different link types into one multi-interface
/// pcapng; every result must still match tshark segment by segment.
#[test]
fn corpus_rewritten_by_editcap_and_mergecap_matches_tshark() {
    let Some(dir) = corpus_dir() else { return };
    if !tshark_available() {
        return;
    }
    let tools_present = ["editcap", "mergecap"].iter().all(|t| {
        std::process::Command::new(t)
            .arg("-h")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !tools_present {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("editcap/mergecap are not installed (CI=true never skips)");
        }
        eprintln!("SKIPPED: editcap/mergecap rewrites (the tools are not installed)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ether = dir.join("zeek/pipelined-requests/pipelined-requests.pcap");
    let null = dir.join("suricata-verify/http-gap-simple/input.pcap");
    let raw4 = dir.join("zeek/261-framing-edge-cases/variant-04-te_cl_desync.pcap");
    let ipv6 = dir
        .join("zeek/1000-requests-one-dropped-response/1000-requests-one-dropped-response.pcap.gz");
    let out = |name: &str| tmp.path().join(name);
    let os = |p: &Path| p.as_os_str().to_owned();
    let s = |x: &str| std::ffi::OsString::from(x);

    let mut plain = Vec::new();
    for (name, args) in [
        ("ether.pcapng", vec![s("-F"), s("pcapng"), os(&ether)]),
        ("ether-ns.pcap", vec![s("-F"), s("nsecpcap"), os(&ether)]),
        ("ether-snap90.pcap", vec![s("-s"), s("90"), os(&ether)]),
        (
            "ipv6-snap100.pcapng",
            vec![s("-F"), s("pcapng"), s("-s"), s("100"), os(&ipv6)],
        ),
        ("null-ns.pcapng", vec![s("-F"), s("pcapng"), os(&null)]),
    ] {
        let mut a = args;
        a.push(os(&out(name)));
        let refs: Vec<&std::ffi::OsStr> = a.iter().map(|x| x.as_os_str()).collect();
        run_tool("editcap", &refs);
        plain.push(out(name));
    }
    let merged = out("merged.pcapng");
    let m = [
        s("-F"),
        s("pcapng"),
        s("-w"),
        os(&merged),
        os(&ether),
        os(&null),
        os(&raw4),
    ];
    let refs: Vec<&std::ffi::OsStr> = m.iter().map(|x| x.as_os_str()).collect();
    run_tool("mergecap", &refs);

    for path in &plain {
        let stats = assert_matches_tshark(path);
        assert_eq!(stats.malformed, 0, "{}: {stats:?}", path.display());
        let snapped = path.to_string_lossy().contains("snap");
        assert_eq!(stats.snapped > 0, snapped, "{}: {stats:?}", path.display());
    }
    let stats = assert_matches_tshark(&merged);
    assert_eq!(stats.malformed, 0, "{stats:?}");
    let parts: u64 = [&ether, &null, &raw4]
        .iter()
        .map(|p| read_path(p).1.tcp_segments)
        .sum();
    assert_eq!(
        stats.tcp_segments, parts,
        "merged file holds every part's segments"
    );
}

// ---------------------------------------------------------------------------------------------
// Throughput. Run in release:
//   cargo test --release -p parity-agent --no-default-features --lib \
//     capture::pcap::tests::throughput -- --ignored --nocapture
// PARITY_BENCH_PCAP=/path/file.pcap keeps the generated file there (and reuses it next time).
// ---------------------------------------------------------------------------------------------

/// CPU time this thread has used (user + system), which shared, loaded machines disturb far
/// less than wall time.
fn thread_cpu_secs() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid, writable timespec and the clock id is a constant the kernel knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// Runs `f` three times and returns the best (wall, CPU) seconds.
fn best_of_three(mut f: impl FnMut()) -> (f64, f64) {
    let (mut wall, mut cpu) = (f64::MAX, f64::MAX);
    for _ in 0..3 {
        let (t, c) = (std::time::Instant::now(), thread_cpu_secs());
        f();
        wall = wall.min(t.elapsed().as_secs_f64());
        cpu = cpu.min(thread_cpu_secs() - c);
    }
    (wall, cpu)
}

fn write_bench_file(path: &Path, size: u64) {
    // Small keep-alive exchanges: a ~200-byte request, a ~600-byte response, pure ACKs, and a
    // full-MSS segment now and then.
    let frames = [
        eth4(&[b'r'; 200]),
        eth4(b""),
        eth4(&[b's'; 600]),
        eth4(b""),
        eth4(&[b'f'; 1448]),
    ];
    let mut f = io::BufWriter::new(File::create(path).unwrap());
    f.write_all(&pcap_le(1, &[])).unwrap();
    let mut written = 24u64;
    let mut i = 0u64;
    while written < size {
        for frame in &frames {
            let caplen = u32::try_from(frame.len()).unwrap();
            for word in [
                u32::try_from(i / 1_000_000).unwrap(),
                u32::try_from(i % 1_000_000).unwrap(),
                caplen,
                caplen,
            ] {
                f.write_all(&word.to_le_bytes()).unwrap();
            }
            f.write_all(frame).unwrap();
            written += 16 + u64::from(caplen);
            i += 1;
        }
    }
    f.flush().unwrap();
}

#[test]
#[ignore = "benchmark: run explicitly in release mode"]
fn throughput_versus_plain_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = std::env::var_os("PARITY_BENCH_PCAP")
        .map_or_else(|| dir.path().join("bench.pcap"), PathBuf::from);
    if !path.exists() {
        write_bench_file(&path, 512 << 20);
    }
    let mb = std::fs::metadata(&path).unwrap().len() as f64 / 1e6;
    // Warm the page cache.
    std::hint::black_box(std::fs::read(&path).unwrap());

    let fs_read = best_of_three(|| {
        std::hint::black_box(std::fs::read(&path).unwrap());
    });
    let chunked = best_of_three(|| {
        let mut f = File::open(&path).unwrap();
        let mut buf = vec![0u8; CHUNK];
        while f.read(&mut buf).unwrap() > 0 {
            std::hint::black_box(&buf);
        }
    });
    let mut segments = 0u64;
    let reader = best_of_three(|| {
        let mut r = CaptureReader::open(&path).unwrap();
        let mut bytes = 0usize;
        segments = 0;
        while let Some(s) = r.next_segment().unwrap() {
            bytes += s.payload.len();
            segments += 1;
        }
        std::hint::black_box(bytes);
    });
    let line = |name: &str, (wall, cpu): (f64, f64)| {
        eprintln!(
            "  {name:<40} {:>6.0} MB/s wall  {:>6.0} MB/s CPU",
            mb / wall,
            mb / cpu
        );
    };
    eprintln!("file {mb:.0} MB, {segments} TCP segments (best of 3, page cache warm):");
    line("std::fs::read (whole file)", fs_read);
    line(
        &format!("File::read into a reused {} KiB buffer", CHUNK >> 10),
        chunked,
    );
    line("CaptureReader::next_segment", reader);
    eprintln!(
        "  CaptureReader: {:.1} M segments/s CPU, {:.0} ns/segment",
        segments as f64 / reader.1 / 1e6,
        reader.1 / segments as f64 * 1e9
    );
}
