//! Per-flow TCP reassembly: [`Segment`]s in, ordered [`StreamEvent`]s out.
//!
//! A [`Reassembler`] keeps one flow per TCP connection (both directions of a 4-tuple), decides
//! which side is the client (from SYN / SYN-ACK, or for a capture that joined mid-stream from the
//! first payload, the configured server addresses and port conventions), and turns each
//! direction's segments into in-order `Data` events. Retransmissions and duplicates are dropped,
//! partial overlaps trimmed (the bytes that arrived first win), out-of-order bytes buffered up to
//! a per-direction cap, and every byte it cannot deliver is reported as a `Gap` with its length
//! and reason. Memory is bounded: the flow table is kept within `flow_memory` by evicting the
//! least recently active flow, and every drop is counted in [`ReassemblyStats`].
//!
//! It does not parse HTTP, does not validate checksums or TCP options, and does not track
//! acknowledgments: it reports what the capture saw, not what the endpoints accepted. Time is
//! the capture's (`Segment::ts` and the `now` arguments); the wall clock is never read.

mod half;
mod roles;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::mem::size_of;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::config::{Limits, ServerAddr};
use crate::segment::{Nanos, Segment, TcpFlags};
use crate::stream::{CloseReason, ConnId, Direction, GapReason, StreamEvent};

use half::{Half, TimerKey, Who};

/// The reassembler's bounds and timeouts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReassemblyConfig {
    /// Budget for the reassembler's own memory (flow state plus buffered bytes); `push` evicts
    /// the least recently active flows to stay within it.
    pub flow_memory: usize,
    /// Bytes buffered per direction ahead of a hole before the hole is declared a gap. Each
    /// buffered piece also counts its bookkeeping (`PIECE_COST`, 144 bytes on 64-bit targets).
    pub ooo_bytes_per_flow: usize,
    /// A flow with no segment for this long is closed by [`Reassembler::expire`].
    pub idle_timeout: Duration,
    /// A hole that later bytes have waited behind for this long is declared a gap by
    /// [`Reassembler::expire`].
    pub gap_timeout: Duration,
}

impl ReassemblyConfig {
    /// The reassembler's part of `[limits]`.
    pub fn from_limits(l: &Limits) -> Self {
        ReassemblyConfig {
            flow_memory: l.flow_memory.as_usize(),
            ooo_bytes_per_flow: l.ooo_bytes_per_flow.as_usize(),
            idle_timeout: l.idle_timeout.get(),
            gap_timeout: l.gap_timeout.get(),
        }
    }
}

/// Flows closed, by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CloseCounts {
    /// Both directions finished with FIN (or one FIN and then a RST, or the 4-tuple was reused
    /// after a FIN).
    pub fin: u64,
    /// A RST with no FIN before it.
    pub reset: u64,
    /// No segment for `idle_timeout`, or the 4-tuple was reused by a new connection before any
    /// FIN was seen.
    pub idle: u64,
    /// Evicted to stay within `flow_memory`.
    pub evicted: u64,
    /// Closed by [`Reassembler::finish`].
    pub end_of_capture: u64,
}

impl CloseCounts {
    /// The count for `reason`.
    pub fn get(&self, reason: CloseReason) -> u64 {
        match reason {
            CloseReason::Fin => self.fin,
            CloseReason::Reset => self.reset,
            CloseReason::Idle => self.idle,
            CloseReason::Evicted => self.evicted,
            CloseReason::EndOfCapture => self.end_of_capture,
        }
    }

    fn add(&mut self, reason: CloseReason) {
        match reason {
            CloseReason::Fin => self.fin += 1,
            CloseReason::Reset => self.reset += 1,
            CloseReason::Idle => self.idle += 1,
            CloseReason::Evicted => self.evicted += 1,
            CloseReason::EndOfCapture => self.end_of_capture += 1,
        }
    }

    /// All flows closed.
    pub fn total(&self) -> u64 {
        self.fin + self.reset + self.idle + self.evicted + self.end_of_capture
    }
}

/// A count per [`GapReason`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GapCounts {
    /// Reason `gap`: bytes the capture never saw.
    pub gap: u64,
    /// Reason `snaplen`: packet tails the capture did not keep.
    pub snaplen: u64,
}

impl GapCounts {
    /// The count for `reason`.
    pub fn get(&self, reason: GapReason) -> u64 {
        match reason {
            GapReason::Gap => self.gap,
            GapReason::Snaplen => self.snaplen,
        }
    }

    fn add(&mut self, reason: GapReason, n: u64) {
        match reason {
            GapReason::Gap => self.gap += n,
            GapReason::Snaplen => self.snaplen += n,
        }
    }
}

/// Segments ignored, by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct IgnoredCounts {
    /// No payload, no SYN, for a 4-tuple with no flow (a pure ACK, FIN or RST of a connection
    /// whose data was never seen): there is nothing to deliver and no evidence of roles.
    pub no_flow: u64,
    /// For a 4-tuple whose connection closed with FIN or RST, and not a new SYN.
    pub after_close: u64,
    /// A SYN or SYN-ACK repeating the initial sequence number of a connection already closed.
    pub stale_syn: u64,
    /// A SYN-ACK that answers neither the open connection's SYN nor matches its server's ISN.
    pub syn_mismatch: u64,
    /// Starts more than the largest TCP window (1 GiB) ahead of its stream.
    pub out_of_window: u64,
    /// Entirely after its direction's FIN.
    pub beyond_fin: u64,
}

impl IgnoredCounts {
    /// `(reason, count)` pairs, for metrics labels.
    pub fn by_reason(&self) -> [(&'static str, u64); 6] {
        [
            ("no_flow", self.no_flow),
            ("after_close", self.after_close),
            ("stale_syn", self.stale_syn),
            ("syn_mismatch", self.syn_mismatch),
            ("out_of_window", self.out_of_window),
            ("beyond_fin", self.beyond_fin),
        ]
    }
}

/// The reassembler's counters. Every byte or segment it does not deliver is counted here.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReassemblyStats {
    /// Segments pushed.
    pub segments: u64,
    /// Connections opened (each has one `Open` event).
    pub flows_opened: u64,
    /// Of those, joined after the client's SYN.
    pub flows_opened_mid_stream: u64,
    /// Connections closed, by reason.
    pub flows_closed: CloseCounts,
    /// Open connections closed because a new SYN reused their 4-tuple.
    pub port_reuses: u64,
    /// Segments that brought nothing new: duplicates and full retransmissions.
    pub duplicate_segments: u64,
    /// Bytes dropped from partially new segments because they had been seen already.
    pub overlap_bytes_trimmed: u64,
    /// Of the overlapping bytes compared, those whose content differed from the bytes kept.
    pub overlap_conflict_bytes: u64,
    /// Overlapping bytes that could not be compared: already delivered and no longer held (a
    /// direction keeps its last delivered segment only after its first retransmission), or
    /// where the capture kept neither copy (snap length).
    pub overlap_bytes_unchecked: u64,
    /// Segments buffered out of order (ahead of a hole).
    pub ooo_segments_buffered: u64,
    /// `Gap` events, by reason.
    pub gaps: GapCounts,
    /// Bytes declared missing, by reason.
    pub gap_bytes: GapCounts,
    /// Flows evicted to stay within `flow_memory`.
    pub evictions: u64,
    /// Segments ignored, by reason.
    pub ignored: IgnoredCounts,
    /// Bytes after a direction's FIN, dropped.
    pub beyond_fin_bytes: u64,
    /// Closed-connection records dropped early to bound their memory (a later segment of such a
    /// connection may then open a new mid-stream flow).
    pub tombstones_dropped: u64,
}

/// The state `Half` operations share with the reassembler.
struct Shared {
    cfg: ReassemblyConfig,
    stats: ReassemblyStats,
    /// Directions with buffered pieces, by the arrival of their oldest piece (a lower bound:
    /// refreshed lazily when the entry comes due).
    timers: BTreeSet<TimerKey>,
    /// Bytes held beyond the fixed per-flow cost: buffered pieces, their bookkeeping, and the
    /// last delivered bytes of each direction.
    buffered: usize,
}

/// One end of a connection: the address as two words (IPv4 as its IPv4-mapped IPv6 form) and
/// the port, so keys compare and hash as integers on the hot path.
type Endpoint = ([u64; 2], u16);

fn endpoint(a: &SocketAddr) -> Endpoint {
    let bits = match a.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().to_bits(),
        IpAddr::V6(v6) => v6.to_bits(),
    };
    ([(bits >> 64) as u64, bits as u64], a.port())
}

/// The socket address of an endpoint. An IPv4-mapped IPv6 address comes back as IPv4: on the
/// wire a packet carries one or the other, never the mapped form.
fn socket_addr((ip, port): Endpoint) -> SocketAddr {
    let v6 = Ipv6Addr::from_bits(u128::from(ip[0]) << 64 | u128::from(ip[1]));
    let ip = match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    };
    SocketAddr::new(ip, port)
}

/// A 4-tuple with its ends in a canonical order (`lo` ≤ `hi`), so both directions find the same
/// flow. Flat, 40 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct FlowKey {
    lo_ip: [u64; 2],
    hi_ip: [u64; 2],
    lo_port: u16,
    hi_port: u16,
}

impl Hash for FlowKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        // Two words instead of the derived field-by-field walk: the key is hashed once per
        // segment, and equal hashes still compare the keys in full.
        let ports = u64::from(self.lo_port) << 48 | u64::from(self.hi_port) << 32;
        h.write_u64(self.lo_ip[0] ^ self.lo_ip[1].rotate_left(23) ^ ports);
        h.write_u64(self.hi_ip[0] ^ self.hi_ip[1].rotate_left(23));
    }
}

impl FlowKey {
    /// The key of a segment, and whether its sender is the `lo` end.
    fn of(src: &SocketAddr, dst: &SocketAddr) -> (FlowKey, bool) {
        let (s, d) = (endpoint(src), endpoint(dst));
        let src_is_lo = s <= d;
        let (lo, hi) = if src_is_lo { (s, d) } else { (d, s) };
        (
            FlowKey {
                lo_ip: lo.0,
                hi_ip: hi.0,
                lo_port: lo.1,
                hi_port: hi.1,
            },
            src_is_lo,
        )
    }

    fn lo(&self) -> SocketAddr {
        socket_addr((self.lo_ip, self.lo_port))
    }

    fn hi(&self) -> SocketAddr {
        socket_addr((self.hi_ip, self.hi_port))
    }
}

/// An LRU entry: (last activity when the entry was made, connection, key). Entries are lower
/// bounds of the flow's true last activity, refreshed when they reach the front.
type LruKey = (Nanos, ConnId, FlowKey);

/// One open connection.
#[derive(Debug)]
struct Flow {
    conn: ConnId,
    /// The client is the `lo` end of the key.
    client_is_lo: bool,
    client_isn: Option<u32>,
    server_isn: Option<u32>,
    /// Reassembler clock at the last segment.
    last_seen: Nanos,
    /// The time under which the flow's LRU entry is filed.
    lru_key: Nanos,
    /// Indexed by `Direction::index`.
    halves: [Half; 2],
}

impl Flow {
    fn dir(&self, src_is_lo: bool) -> Direction {
        if src_is_lo == self.client_is_lo {
            Direction::ToServer
        } else {
            Direction::ToClient
        }
    }
}

/// What is remembered of a connection closed with FIN or RST, so its stragglers (the last ACK,
/// retransmissions, data in flight after a RST) do not open a phantom mid-stream flow.
#[derive(Debug)]
struct Tomb {
    client_is_lo: bool,
    client_isn: Option<u32>,
    server_isn: Option<u32>,
    /// Distinguishes this record from an earlier one of the same 4-tuple in `tomb_order`.
    id: u64,
}

impl Tomb {
    /// Is this SYN or SYN-ACK a repeat of the closed connection's handshake?
    fn repeats_handshake(&self, seg: &Segment, src_is_lo: bool) -> bool {
        let from_client = src_is_lo == self.client_is_lo;
        if seg.flags.ack() {
            !from_client
                && (self.server_isn == Some(seg.seq)
                    || self.client_isn.map(|i| i.wrapping_add(1)) == Some(seg.ack))
        } else {
            from_client && self.client_isn == Some(seg.seq)
        }
    }
}

/// Fixed memory of one flow: its hash-map slot (key, value and control byte; a table is between
/// 7/16 and 7/8 full, and this charges the emptiest case) and its LRU entry (doubled for B-tree
/// node slack). Measured with a counting allocator (`examples/reassembly_bench.rs`): real heap
/// per open flow stays below it at 10^3, 10^5 and 10^6 flows.
pub const FLOW_COST: usize =
    (size_of::<FlowKey>() + size_of::<Flow>() + 1) * 16 / 7 + 2 * size_of::<LruKey>();

/// Memory of one closed-connection record: its map slot (charged as for flows) and its
/// expiry-queue entry.
const TOMB_COST: usize =
    (size_of::<FlowKey>() + size_of::<Tomb>() + 1) * 16 / 7 + size_of::<(Nanos, FlowKey, u64)>();

/// Share of `flow_memory` closed-connection records may use.
const TOMB_SHARE: usize = 16;

/// Per-flow TCP reassembly. See the module documentation.
pub struct Reassembler {
    sh: Shared,
    servers: Vec<ServerAddr>,
    flows: FxHashMap<FlowKey, Flow>,
    lru: BTreeSet<LruKey>,
    tombs: FxHashMap<FlowKey, Tomb>,
    /// (expiry, key, id) in closing order, which is expiry order.
    tomb_order: VecDeque<(Nanos, FlowKey, u64)>,
    max_tombs: usize,
    next_tomb: u64,
    next_conn: u64,
    /// The latest time seen (segment timestamps and `now` arguments); never goes back, so
    /// timeouts and LRU order survive a capture whose timestamps do.
    clock: Nanos,
}

enum SynVerdict {
    /// A new connection on this 4-tuple.
    Reuse,
    /// A retransmitted SYN or SYN-ACK.
    Repeat,
    /// The server's SYN-ACK, first seen.
    ServerIsn(u32),
    /// A SYN-ACK that does not fit this connection.
    Mismatch,
}

impl Reassembler {
    /// A reassembler for flows whose servers may be among `servers` (a hint for connections
    /// joined mid-stream; any server is reassembled).
    pub fn new(cfg: ReassemblyConfig, servers: Vec<ServerAddr>) -> Reassembler {
        let max_tombs = (cfg.flow_memory / TOMB_SHARE / TOMB_COST).max(1);
        Reassembler {
            sh: Shared {
                cfg,
                stats: ReassemblyStats::default(),
                timers: BTreeSet::new(),
                buffered: 0,
            },
            servers,
            flows: FxHashMap::default(),
            lru: BTreeSet::new(),
            tombs: FxHashMap::default(),
            tomb_order: VecDeque::new(),
            max_tombs,
            next_tomb: 0,
            next_conn: 1,
            clock: Nanos(0),
        }
    }

    /// Replace the server-address hints (a configuration reload); flows already open keep
    /// their roles.
    pub fn set_servers(&mut self, servers: Vec<ServerAddr>) {
        self.servers = servers;
    }

    /// Apply new bounds (a configuration reload). Tighter bounds take effect as flows are
    /// touched, expire or are evicted; nothing is dropped at once.
    pub fn set_config(&mut self, cfg: ReassemblyConfig) {
        self.max_tombs = (cfg.flow_memory / TOMB_SHARE / TOMB_COST).max(1);
        self.sh.cfg = cfg;
    }

    /// Take in one segment (`seg.ts` is now) and append the events it causes to `out`.
    pub fn push(&mut self, seg: Segment, out: &mut Vec<StreamEvent>) {
        self.sh.stats.segments += 1;
        if seg.ts > self.clock {
            self.clock = seg.ts;
        }
        let ts = seg.ts;
        let (key, src_is_lo) = FlowKey::of(&seg.src, &seg.dst);
        if let Some(flow) = self.flows.get_mut(&key) {
            if seg.flags.0 & (TcpFlags::SYN | TcpFlags::FIN | TcpFlags::RST) == 0 {
                // The hot path: a data or ACK segment of a known flow.
                flow.last_seen = self.clock;
                let dir = flow.dir(src_is_lo);
                let who = Who {
                    conn: flow.conn,
                    dir,
                    key: &key,
                };
                let half = &mut flow.halves[dir.index()];
                if !half.started {
                    half.start(seg.seq);
                }
                half.accept(
                    &who,
                    seg.seq,
                    seg.payload,
                    seg.missing_tail,
                    ts,
                    self.clock,
                    &mut self.sh,
                    out,
                );
            } else {
                self.control(key, src_is_lo, seg, out);
            }
        } else if let Some(tomb) = self.tombs.get(&key) {
            if seg.flags.syn() && !seg.flags.rst() && !tomb.repeats_handshake(&seg, src_is_lo) {
                self.tombs.remove(&key);
                self.open(key, src_is_lo, seg, out);
            } else if seg.flags.syn() {
                self.sh.stats.ignored.stale_syn += 1;
            } else {
                self.sh.stats.ignored.after_close += 1;
            }
        } else {
            self.open(key, src_is_lo, seg, out);
        }
        while self.memory_used() > self.sh.cfg.flow_memory && self.evict_lru(ts, out) {}
    }

    /// A segment with SYN, FIN or RST for an open flow.
    fn control(&mut self, key: FlowKey, src_is_lo: bool, seg: Segment, out: &mut Vec<StreamEvent>) {
        let Some(flow) = self.flows.get_mut(&key) else {
            return;
        };
        flow.last_seen = self.clock;
        let dir = flow.dir(src_is_lo);
        if seg.flags.rst() {
            // After a FIN the reset only cuts the other side short: the exchange ended.
            let reason = if flow.halves.iter().any(Half::fin_seen) {
                CloseReason::Fin
            } else {
                CloseReason::Reset
            };
            self.close(key, reason, Some(dir), seg.ts, out);
            return;
        }
        if seg.flags.syn() {
            match syn_verdict(flow, &seg, dir) {
                SynVerdict::Reuse => {
                    // The old connection ended unseen. Its FIN, if any, says it ended cleanly.
                    let reason = if flow.halves.iter().any(Half::fin_seen) {
                        CloseReason::Fin
                    } else {
                        CloseReason::Idle
                    };
                    self.sh.stats.port_reuses += 1;
                    self.close(key, reason, None, seg.ts, out);
                    self.open(key, src_is_lo, seg, out);
                    return;
                }
                SynVerdict::Mismatch => {
                    self.sh.stats.ignored.syn_mismatch += 1;
                    return;
                }
                SynVerdict::Repeat => {
                    if seg.wire_payload_len() == 0 && !seg.flags.fin() {
                        self.sh.stats.duplicate_segments += 1;
                        return;
                    }
                }
                SynVerdict::ServerIsn(isn) => {
                    flow.server_isn = Some(isn);
                    let server = &mut flow.halves[Direction::ToClient.index()];
                    if !server.started {
                        server.start(isn.wrapping_add(1));
                    }
                }
            }
        }
        self.carry(key, dir, seg, out);
    }

    /// Deliver a segment's payload and FIN to its direction of an open flow.
    fn carry(&mut self, key: FlowKey, dir: Direction, seg: Segment, out: &mut Vec<StreamEvent>) {
        let Some(flow) = self.flows.get_mut(&key) else {
            return;
        };
        let who = Who {
            conn: flow.conn,
            dir,
            key: &key,
        };
        let half = &mut flow.halves[dir.index()];
        // A SYN occupies one sequence number; its payload (TCP Fast Open) follows it.
        let seq = if seg.flags.syn() {
            seg.seq.wrapping_add(1)
        } else {
            seg.seq
        };
        if !half.started {
            half.start(seq);
        }
        let fin_seq = seq
            .wrapping_add(seg.payload.len() as u32)
            .wrapping_add(seg.missing_tail);
        half.accept(
            &who,
            seq,
            seg.payload,
            seg.missing_tail,
            seg.ts,
            self.clock,
            &mut self.sh,
            out,
        );
        if seg.flags.fin() {
            half.fin(&who, fin_seq, seg.ts, &mut self.sh, out);
            if flow.halves.iter().all(|h| h.done) {
                self.close(key, CloseReason::Fin, None, seg.ts, out);
            }
        }
    }

    /// First segment of a 4-tuple with no open flow: open one if it says who the client is
    /// (SYN, SYN-ACK, or payload), then deliver it.
    fn open(&mut self, key: FlowKey, src_is_lo: bool, seg: Segment, out: &mut Vec<StreamEvent>) {
        let f = seg.flags;
        let (client_is_lo, mid_stream, client_isn, server_isn) = if f.rst() {
            self.sh.stats.ignored.no_flow += 1;
            return;
        } else if f.syn() && !f.ack() {
            (src_is_lo, false, Some(seg.seq), None)
        } else if f.syn() {
            (
                !src_is_lo,
                true,
                Some(seg.ack.wrapping_sub(1)),
                Some(seg.seq),
            )
        } else if seg.wire_payload_len() > 0 {
            let src_client = roles::src_is_client(&seg.src, &seg.dst, &seg.payload, &self.servers);
            (src_is_lo == src_client, true, None, None)
        } else {
            self.sh.stats.ignored.no_flow += 1;
            return;
        };
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        let mut flow = Flow {
            conn,
            client_is_lo,
            client_isn,
            server_isn,
            last_seen: self.clock,
            lru_key: self.clock,
            halves: [Half::default(), Half::default()],
        };
        if let Some(isn) = client_isn {
            flow.halves[Direction::ToServer.index()].start(isn.wrapping_add(1));
        }
        if let Some(isn) = server_isn {
            flow.halves[Direction::ToClient.index()].start(isn.wrapping_add(1));
        }
        let (client, server) = if client_is_lo {
            (key.lo(), key.hi())
        } else {
            (key.hi(), key.lo())
        };
        out.push(StreamEvent::Open {
            conn,
            client,
            server,
            ts: seg.ts,
            mid_stream,
        });
        self.sh.stats.flows_opened += 1;
        if mid_stream {
            self.sh.stats.flows_opened_mid_stream += 1;
        }
        self.lru.insert((self.clock, conn, key));
        let dir = flow.dir(src_is_lo);
        self.flows.insert(key, flow);
        self.carry(key, dir, seg, out);
    }

    /// Flush both directions (gaps for holes), emit `Close` and forget the flow.
    fn close(
        &mut self,
        key: FlowKey,
        reason: CloseReason,
        reset_by: Option<Direction>,
        ts: Nanos,
        out: &mut Vec<StreamEvent>,
    ) {
        let Some(mut flow) = self.flows.remove(&key) else {
            return;
        };
        self.lru.remove(&(flow.lru_key, flow.conn, key));
        for dir in [Direction::ToServer, Direction::ToClient] {
            let who = Who {
                conn: flow.conn,
                dir,
                key: &key,
            };
            flow.halves[dir.index()].close(&who, ts, &mut self.sh, out);
        }
        out.push(StreamEvent::Close {
            conn: flow.conn,
            ts,
            reason,
            reset_by,
        });
        self.sh.stats.flows_closed.add(reason);
        if matches!(reason, CloseReason::Fin | CloseReason::Reset) {
            self.bury(key, &flow);
        }
    }

    /// Remember a closed connection for `idle_timeout`, within the records' memory share.
    fn bury(&mut self, key: FlowKey, flow: &Flow) {
        self.next_tomb += 1;
        let id = self.next_tomb;
        self.tombs.insert(
            key,
            Tomb {
                client_is_lo: flow.client_is_lo,
                client_isn: flow.client_isn,
                server_isn: flow.server_isn,
                id,
            },
        );
        let expiry = self.clock.saturating_add(self.sh.cfg.idle_timeout);
        self.tomb_order.push_back((expiry, key, id));
        while self.tomb_order.len() > self.max_tombs {
            if let Some((_, k, id)) = self.tomb_order.pop_front() {
                if self.tombs.get(&k).is_some_and(|t| t.id == id) {
                    self.tombs.remove(&k);
                    self.sh.stats.tombstones_dropped += 1;
                }
            }
        }
    }

    /// Apply timeouts at capture time `now`: close flows idle for `idle_timeout` (after gaps for
    /// their holes), declare holes that have waited `gap_timeout` gaps, and forget closed
    /// connections older than `idle_timeout`. Call it periodically (e.g. every capture second).
    pub fn expire(&mut self, now: Nanos, out: &mut Vec<StreamEvent>) {
        if now > self.clock {
            self.clock = now;
        }
        let idle = self.sh.cfg.idle_timeout;
        while let Some(&(at, conn, key)) = self.lru.first() {
            if at.saturating_add(idle) > now {
                break;
            }
            self.lru.pop_first();
            let Some(flow) = self.flows.get_mut(&key) else {
                continue;
            };
            if flow.last_seen != at {
                flow.lru_key = flow.last_seen;
                self.lru.insert((flow.last_seen, conn, key));
                continue;
            }
            self.close(key, CloseReason::Idle, None, now, out);
        }

        let gap = self.sh.cfg.gap_timeout;
        while let Some(&(at, conn, dir, key)) = self.sh.timers.first() {
            if at.saturating_add(gap) > now {
                break;
            }
            self.sh.timers.pop_first();
            let Some(flow) = self.flows.get_mut(&key).filter(|f| f.conn == conn) else {
                continue;
            };
            let dir = if dir == 0 {
                Direction::ToServer
            } else {
                Direction::ToClient
            };
            let who = Who {
                conn,
                dir,
                key: &key,
            };
            flow.halves[dir.index()].expire_gap(&who, now, &mut self.sh, out);
        }

        while let Some(&(expiry, key, id)) = self.tomb_order.front() {
            if expiry > now {
                break;
            }
            self.tomb_order.pop_front();
            if self.tombs.get(&key).is_some_and(|t| t.id == id) {
                self.tombs.remove(&key);
            }
        }
    }

    /// Evict the least recently active flow (ties: the lower `ConnId`), flushing it with gaps
    /// for its holes and closing it with `Close{Evicted}`. Returns false when no flow is open.
    pub fn evict_lru(&mut self, now: Nanos, out: &mut Vec<StreamEvent>) -> bool {
        if now > self.clock {
            self.clock = now;
        }
        while let Some((at, conn, key)) = self.lru.pop_first() {
            let Some(flow) = self.flows.get_mut(&key) else {
                continue;
            };
            if flow.last_seen != at {
                flow.lru_key = flow.last_seen;
                self.lru.insert((flow.last_seen, conn, key));
                continue;
            }
            self.sh.stats.evictions += 1;
            self.close(key, CloseReason::Evicted, None, now, out);
            return true;
        }
        false
    }

    /// End of capture: flush and close every flow (`Close{EndOfCapture}`), in `ConnId` order.
    pub fn finish(&mut self, now: Nanos, out: &mut Vec<StreamEvent>) {
        if now > self.clock {
            self.clock = now;
        }
        let mut open: Vec<(ConnId, FlowKey)> =
            self.flows.iter().map(|(k, f)| (f.conn, *k)).collect();
        open.sort_unstable();
        for (_, key) in open {
            self.close(key, CloseReason::EndOfCapture, None, now, out);
        }
        self.tombs.clear();
        self.tomb_order.clear();
    }

    /// Memory held: a fixed estimate per flow and per closed-connection record, plus buffered
    /// bytes with their bookkeeping.
    pub fn memory_used(&self) -> usize {
        self.flows.len() * FLOW_COST + self.tomb_order.len() * TOMB_COST + self.sh.buffered
    }

    /// Open flows.
    pub fn flows_active(&self) -> usize {
        self.flows.len()
    }

    /// The counters.
    pub fn stats(&self) -> &ReassemblyStats {
        &self.sh.stats
    }
}

/// What a SYN or SYN-ACK means for the open flow it arrived on.
fn syn_verdict(flow: &Flow, seg: &Segment, dir: Direction) -> SynVerdict {
    if !seg.flags.ack() {
        // A SYN opens a connection. The client repeating its SYN is a retransmission; any other
        // SYN on this 4-tuple is a new connection (port reuse).
        if dir == Direction::ToServer && flow.client_isn == Some(seg.seq) {
            SynVerdict::Repeat
        } else {
            SynVerdict::Reuse
        }
    } else if dir == Direction::ToServer {
        SynVerdict::Mismatch
    } else {
        let answers_syn = flow
            .client_isn
            .is_none_or(|isn| isn.wrapping_add(1) == seg.ack);
        match flow.server_isn {
            Some(isn) if isn == seg.seq => SynVerdict::Repeat,
            None if answers_syn => SynVerdict::ServerIsn(seg.seq),
            _ => SynVerdict::Mismatch,
        }
    }
}
