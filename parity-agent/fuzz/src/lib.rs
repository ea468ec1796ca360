//! Input formats shared by the fuzz targets and the seed generator (`examples/gen_seeds.rs`).
//!
//! Targets whose input is structured (a sequence of TCP segments, of stream events, a coding
//! stack) decode it from plain bytes with the small, total decoders here: every byte string is a
//! valid input, and the seed generator writes seeds with the matching encoders, so a seed derived
//! from a real capture or an llhttp vector decodes back to exactly that traffic. Formats are
//! documented on each decoder; they are not a stable contract, only what the committed seeds and
//! the fuzzers' corpora use.

use std::net::SocketAddr;

use bytes::Bytes;
use parity_agent::segment::{Nanos, Segment, TcpFlags};
use parity_agent::stream::{CloseReason, ConnId, Direction, GapReason, StreamEvent};

/// Reads fixed-width fields from the front of a byte string; past the end every read is short
/// or `None`, never a panic.
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Reader<'a> {
        Reader { data }
    }

    /// Nothing left.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// One byte.
    pub fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }

    /// A little-endian `u16`; a lone last byte reads as its value.
    pub fn u16(&mut self) -> Option<u16> {
        let lo = self.u8()?;
        let hi = self.u8().unwrap_or(0);
        Some(u16::from_le_bytes([lo, hi]))
    }

    /// Up to `n` bytes (fewer at the end).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        self.bytes(self.data.len())
    }
}

// ---------------------------------------------------------------------------------------------
// http_stream: one HTTP connection as stream events.

/// Op tags of the `http_stream` format (low three bits of the tag byte).
pub mod op {
    /// Client bytes: `u16` length, then the bytes.
    pub const CLIENT: u8 = 0;
    /// Server bytes: `u16` length, then the bytes.
    pub const SERVER: u8 = 1;
    /// A gap: tag bit 3 = server side, bit 4 = unknown length (0), bit 5 = snaplen; `u16` length.
    pub const GAP: u8 = 2;
    /// A half close: tag bit 3 = server side.
    pub const HALF_CLOSE: u8 = 3;
    /// Close the connection (tag bits 3..5 pick the reason) and open the next one (tag bit 6:
    /// mid-stream).
    pub const CLOSE_REOPEN: u8 = 4;
}

/// The `http_stream` format: byte 0 holds the options (bit 0: the first connection is joined
/// mid-stream; bit 1: tight limits); then ops until the end, each a tag byte (see [`op`]) and
/// its fields. Tags 5..=7 are client/server data like 0/1 (by bit 0) so mutations mostly make
/// data. Timestamps advance by one microsecond per op.
pub struct HttpStream {
    /// Tight limits (small heads, bodies and pipelining depth) instead of the defaults.
    pub tight: bool,
    /// The events, starting with `Open` and ending with `Close`.
    pub events: Vec<StreamEvent>,
}

const CLIENT_ADDR: &str = "10.0.0.1:40000";
const SERVER_ADDR: &str = "10.0.0.2:80";

fn addr(s: &str) -> SocketAddr {
    s.parse()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}

fn open(conn: u64, ts: u64, mid_stream: bool) -> StreamEvent {
    StreamEvent::Open {
        conn: ConnId(conn),
        client: addr(CLIENT_ADDR),
        server: addr(SERVER_ADDR),
        ts: Nanos(ts),
        mid_stream,
    }
}

const CLOSE_REASONS: [CloseReason; 5] = [
    CloseReason::Fin,
    CloseReason::Reset,
    CloseReason::Idle,
    CloseReason::Evicted,
    CloseReason::EndOfCapture,
];

impl HttpStream {
    /// Decodes the `http_stream` format; never fails.
    pub fn decode(data: &[u8]) -> HttpStream {
        let mut r = Reader::new(data);
        let opts = r.u8().unwrap_or(0);
        let mut conn = 1;
        let mut ts = 1_000_000u64;
        let mut events = vec![open(conn, ts, opts & 1 != 0)];
        while let Some(tag) = r.u8() {
            ts += 1_000;
            let side = if tag & 8 != 0 {
                Direction::ToClient
            } else {
                Direction::ToServer
            };
            match tag & 7 {
                op::GAP => {
                    let len = r.u16().unwrap_or(0);
                    events.push(StreamEvent::Gap {
                        conn: ConnId(conn),
                        dir: side,
                        ts: Nanos(ts),
                        len: if tag & 16 != 0 { 0 } else { u64::from(len) },
                        reason: if tag & 32 != 0 {
                            GapReason::Snaplen
                        } else {
                            GapReason::Gap
                        },
                    });
                }
                op::HALF_CLOSE => events.push(StreamEvent::HalfClose {
                    conn: ConnId(conn),
                    dir: side,
                    ts: Nanos(ts),
                }),
                op::CLOSE_REOPEN => {
                    let reason = CLOSE_REASONS[usize::from((tag >> 3) & 7) % CLOSE_REASONS.len()];
                    events.push(StreamEvent::Close {
                        conn: ConnId(conn),
                        ts: Nanos(ts),
                        reason,
                        reset_by: (reason == CloseReason::Reset).then_some(side),
                    });
                    conn += 1;
                    events.push(open(conn, ts, tag & 64 != 0));
                }
                t => {
                    let dir = if t & 1 == 0 {
                        Direction::ToServer
                    } else {
                        Direction::ToClient
                    };
                    let len = usize::from(r.u16().unwrap_or(0));
                    let bytes = r.bytes(len);
                    if !bytes.is_empty() {
                        events.push(StreamEvent::Data {
                            conn: ConnId(conn),
                            dir,
                            ts: Nanos(ts),
                            data: Bytes::copy_from_slice(bytes),
                        });
                    }
                }
            }
        }
        events.push(StreamEvent::Close {
            conn: ConnId(conn),
            ts: Nanos(ts + 1_000),
            reason: CloseReason::Fin,
            reset_by: None,
        });
        HttpStream {
            tight: opts & 2 != 0,
            events,
        }
    }
}

/// Encodes one `http_stream` op carrying data (split into `u16`-sized pieces).
pub fn encode_data(out: &mut Vec<u8>, dir: Direction, data: &[u8]) {
    for piece in data.chunks(usize::from(u16::MAX)) {
        out.push(match dir {
            Direction::ToServer => op::CLIENT,
            Direction::ToClient => op::SERVER,
        });
        out.extend_from_slice(&(piece.len() as u16).to_le_bytes());
        out.extend_from_slice(piece);
    }
}

/// Encodes a gap op (`len` 0: unknown length).
pub fn encode_gap(out: &mut Vec<u8>, dir: Direction, len: u64, reason: GapReason) {
    let mut tag = op::GAP;
    if dir == Direction::ToClient {
        tag |= 8;
    }
    if len == 0 {
        tag |= 16;
    }
    if reason == GapReason::Snaplen {
        tag |= 32;
    }
    out.push(tag);
    out.extend_from_slice(&(len.min(u64::from(u16::MAX)) as u16).to_le_bytes());
}

/// Encodes a half-close op.
pub fn encode_half_close(out: &mut Vec<u8>, dir: Direction) {
    out.push(op::HALF_CLOSE | if dir == Direction::ToClient { 8 } else { 0 });
}

// ---------------------------------------------------------------------------------------------
// reassembly: a sequence of segments and timer calls on a few interacting flows.

/// Initial sequence number of the lower-port side of every flow (close to the wrap on purpose).
pub const ISN_A: u32 = 0xffff_f000;
/// Initial sequence number of the higher-port side.
pub const ISN_B: u32 = 0x0000_1000;

/// One step of the `reassembly` format.
pub enum Step {
    /// Push this segment.
    Push(Segment),
    /// `Reassembler::expire` at this time.
    Expire(Nanos),
    /// `Reassembler::evict_lru` at this time.
    Evict(Nanos),
}

/// The `reassembly` format. Bytes 0..2 are the bounds: byte 0 sets `flow_memory` (512 + b*128
/// bytes), byte 1 `ooo_bytes_per_flow` (64 + b*32), byte 2 the timeouts (idle 1..=16 s from the
/// low nibble, gap 0..=1.5 s in 100 ms steps from the high nibble). Then 7-byte records:
/// flags, endpoint byte, `u16` sequence offset, `u8` payload length, time byte, missing-tail byte.
///
/// The endpoint byte: bit 0 the sender is the server side; bits 1..2 the client port
/// (40000..=40003); bit 3 server port 8080 instead of 80; bit 4 IPv6; bits 5..7 = 6 is an expire
/// call and 7 an eviction instead of a segment. The sequence number is the sender's ISN plus the
/// offset (so flows can wrap), the ACK the peer's ISN plus one. Payload bytes are the low byte
/// of their own sequence number, so every byte a flow delivers says where in the stream it is.
/// The time byte advances the clock by its low 7 bits in units of 20 ms (bit 7 set: by that many
/// seconds). The missing-tail byte is bytes the snap length cut (0 mostly).
pub struct Segments {
    /// Reassembler bounds: flow memory, out-of-order bytes, idle and gap timeouts.
    pub flow_memory: usize,
    /// Out-of-order bytes per direction.
    pub ooo_bytes: usize,
    /// Idle timeout.
    pub idle: std::time::Duration,
    /// Gap timeout.
    pub gap: std::time::Duration,
    /// The steps.
    pub steps: Vec<Step>,
}

/// Record size of the `reassembly` format.
pub const SEG_RECORD: usize = 7;

/// The payload byte at sequence number `seq`.
pub fn seq_byte(seq: u32) -> u8 {
    seq as u8
}

impl Segments {
    /// Decodes the `reassembly` format; never fails.
    pub fn decode(data: &[u8]) -> Segments {
        let mut r = Reader::new(data);
        let fm = r.u8().unwrap_or(255);
        let ooo = r.u8().unwrap_or(255);
        let timers = r.u8().unwrap_or(0);
        let mut ts = 1_700_000_000_000_000_000u64;
        let mut steps = Vec::new();
        while !r.is_empty() {
            let rec = r.bytes(SEG_RECORD);
            let g = |i: usize| rec.get(i).copied().unwrap_or(0);
            let (flags, ep) = (g(0), g(1));
            let off = u32::from(u16::from_le_bytes([g(2), g(3)]));
            let len = u32::from(g(4));
            let tbyte = g(5);
            let missing = u32::from(g(6));
            ts += if tbyte & 0x80 != 0 {
                u64::from(tbyte & 0x7f) * 1_000_000_000
            } else {
                u64::from(tbyte) * 20_000_000
            };
            match ep >> 5 {
                6 => {
                    steps.push(Step::Expire(Nanos(ts)));
                    continue;
                }
                7 => {
                    steps.push(Step::Evict(Nanos(ts)));
                    continue;
                }
                _ => {}
            }
            let v6 = ep & 16 != 0;
            let ip = |last: u8| -> std::net::IpAddr {
                if v6 {
                    std::net::IpAddr::from([0xfd00, 0, 0, 0, 0, 0, 0, u16::from(last)])
                } else {
                    std::net::IpAddr::from([10, 0, 0, last])
                }
            };
            let client = SocketAddr::new(ip(1), 40000 + u16::from((ep >> 1) & 3));
            let server = SocketAddr::new(ip(2), if ep & 8 != 0 { 8080 } else { 80 });
            let from_server = ep & 1 != 0;
            // The client's port is the lower one only for port 80 vs 40000+: `ISN_A` belongs
            // to whichever side sends, so both sides' streams stay self-describing.
            let (src, dst, isn, peer) = if from_server {
                (server, client, ISN_B, ISN_A)
            } else {
                (client, server, ISN_A, ISN_B)
            };
            let seq = isn.wrapping_add(off);
            // A SYN takes one sequence number; its payload (TCP Fast Open) follows it.
            let first = seq.wrapping_add(u32::from(flags & TcpFlags::SYN != 0));
            let payload: Vec<u8> = (0..len).map(|i| seq_byte(first.wrapping_add(i))).collect();
            steps.push(Step::Push(Segment {
                ts: Nanos(ts),
                src,
                dst,
                seq,
                ack: peer.wrapping_add(1),
                flags: TcpFlags(flags & 0x1f),
                payload: Bytes::from(payload),
                missing_tail: if missing >= 0xf0 { missing & 0x0f } else { 0 },
            }));
        }
        Segments {
            flow_memory: 512 + usize::from(fm) * 128,
            ooo_bytes: 64 + usize::from(ooo) * 32,
            idle: std::time::Duration::from_secs(1 + u64::from(timers & 15)),
            gap: std::time::Duration::from_millis(100 * u64::from(timers >> 4)),
            steps,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// decoders: a content-coding stack and a body.

/// Codings of the `decoders` format, by 3-bit index.
pub const CODINGS: [&str; 8] = [
    "gzip", "x-gzip", "deflate", "deflate", "br", "zstd", "identity", "compress",
];

/// The `decoders` format: byte 0 bits 0..1 the number of codings (0..=3), bit 2 round trip
/// (the body is the data encoded by the listed codings; otherwise the data is the body as
/// sent), bit 3 chunked framing, bit 4 tight limits; byte 1 the codings (3 bits each, see
/// [`CODINGS`]; index 2 is zlib-wrapped deflate, 3 raw deflate); byte 2 the size of the pieces
/// the body is fed in (0: one piece); the rest is the data.
pub struct Decoders<'a> {
    /// Coding indexes in listed order.
    pub codings: Vec<usize>,
    /// Encode `data` first.
    pub round_trip: bool,
    /// `Transfer-Encoding: chunked` rather than `Content-Length`.
    pub chunked: bool,
    /// Tight limits.
    pub tight: bool,
    /// Feed size (0: all at once).
    pub piece: usize,
    /// The data.
    pub data: &'a [u8],
}

impl<'a> Decoders<'a> {
    /// Decodes the `decoders` format; never fails.
    pub fn decode(data: &'a [u8]) -> Decoders<'a> {
        let mut r = Reader::new(data);
        let b0 = r.u8().unwrap_or(0);
        let b1 = r.u8().unwrap_or(0);
        let piece = usize::from(r.u8().unwrap_or(0));
        let n = usize::from(b0 & 3);
        Decoders {
            codings: (0..n).map(|i| usize::from((b1 >> (3 * i)) & 7)).collect(),
            round_trip: b0 & 4 != 0,
            chunked: b0 & 8 != 0,
            tight: b0 & 16 != 0,
            piece,
            data: r.rest(),
        }
    }
}

/// A minimal brotli encoder: uncompressed meta-blocks (RFC 7932 §9.2), enough to make valid
/// `br` bodies for round trips and seeds.
pub fn brotli_stored(data: &[u8]) -> Vec<u8> {
    struct Bits {
        out: Vec<u8>,
        acc: u32,
        n: u32,
    }
    impl Bits {
        fn put(&mut self, v: u32, bits: u32) {
            self.acc |= v << self.n;
            self.n += bits;
            while self.n >= 8 {
                self.out.push(self.acc as u8);
                self.acc >>= 8;
                self.n -= 8;
            }
        }
        fn align(&mut self) {
            if self.n > 0 {
                self.out.push(self.acc as u8);
                self.acc = 0;
                self.n = 0;
            }
        }
    }
    let mut b = Bits {
        out: Vec::with_capacity(data.len() + 16),
        acc: 0,
        n: 0,
    };
    b.put(0, 1); // WBITS: window 16
    for chunk in data.chunks(1 << 16) {
        b.put(0, 1); // ISLAST = 0
        b.put(0, 2); // MNIBBLES = 4
        b.put(chunk.len() as u32 - 1, 16); // MLEN - 1
        b.put(1, 1); // ISUNCOMPRESSED
        b.align();
        b.out.extend_from_slice(chunk);
    }
    b.put(1, 1); // ISLAST
    b.put(1, 1); // ISLASTEMPTY
    b.align();
    b.out
}

/// Encodes `data` with coding index `c` of [`CODINGS`]; `None` for codings parity leaves as
/// they are (identity, unknown).
pub fn encode(c: usize, data: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write;
    let level = flate2::Compression::fast();
    let out = match c {
        0 | 1 => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), level);
            e.write_all(data).ok()?;
            e.finish().ok()?
        }
        2 => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), level);
            e.write_all(data).ok()?;
            e.finish().ok()?
        }
        3 => {
            let mut e = flate2::write::DeflateEncoder::new(Vec::new(), level);
            e.write_all(data).ok()?;
            e.finish().ok()?
        }
        4 => brotli_stored(data),
        5 => zstd::bulk::compress(data, 1).ok()?,
        _ => return None,
    };
    Some(out)
}
