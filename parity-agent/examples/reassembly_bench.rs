//! Throughput and memory of the reassembler on its hot path, in release mode:
//!
//! ```text
//! cargo run --release -p parity-agent --no-default-features --example reassembly_bench \
//!     [segments] [flows] [all|throughput|shared|owned|memory]
//! ```
//!
//! Pushes in-order keep-alive exchanges (request, ACK, response in two segments, ACK: five
//! segments, three with payload) spread over many flows, and reports segments/s and ns/segment
//! for payloads sliced from one shared buffer (what a capture-file reader produces) and for
//! payloads that each own a fresh `Vec` (the worst case for reference counting). Then measures
//! real heap bytes per open flow with a counting allocator and compares them with
//! `memory_used()`: just opened, and after one HTTP exchange through the reassembler and the
//! HTTP stage (an idle keep-alive connection, what a live agent holds most of).

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parity_agent::config::Limits;
use parity_agent::http::{HttpConfig, HttpTracker};
use parity_agent::reassembly::{Reassembler, ReassemblyConfig};
use parity_agent::segment::{Nanos, Segment, TcpFlags};
use parity_agent::stream::StreamEvent;

struct Counting;

static HEAP: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator and only adds bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HEAP.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HEAP.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        HEAP.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Segments generated, then pushed, at a time: small enough that the batch does not flush the
/// flow table from the cache (a capture reader streams its input the same way).
const BATCH: usize = 4096;
const REQUEST: usize = 180;
const RESPONSE_HEAD: usize = 160;
const RESPONSE_BODY: usize = 240;

fn config() -> ReassemblyConfig {
    ReassemblyConfig {
        flow_memory: 1 << 30,
        ooo_bytes_per_flow: 1 << 20,
        idle_timeout: Duration::from_secs(60),
        gap_timeout: Duration::from_secs(2),
    }
}

fn endpoints(flow: usize) -> (SocketAddr, SocketAddr) {
    let client = SocketAddr::from((
        [10, (flow >> 16) as u8, (flow >> 8) as u8, flow as u8],
        40000,
    ));
    let server = SocketAddr::from(([192, 168, 0, 1], 8080));
    (client, server)
}

struct Gen {
    shared: Bytes,
    owned: bool,
    flows: usize,
    /// Next sequence number per flow: (client, server).
    seqs: Vec<(u32, u32)>,
    n: u64,
}

impl Gen {
    fn payload(&self, len: usize) -> Bytes {
        if self.owned {
            Bytes::from(vec![b'x'; len])
        } else {
            self.shared.slice(..len)
        }
    }

    fn seg(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        seq: u32,
        ack: u32,
        payload: Bytes,
    ) -> Segment {
        self.n += 1;
        Segment {
            ts: Nanos(1_700_000_000_000_000_000 + self.n * 1_000),
            src,
            dst,
            seq,
            ack,
            flags: TcpFlags(TcpFlags::ACK | TcpFlags::PSH),
            payload,
            missing_tail: 0,
        }
    }

    /// The five segments of the next exchange on flow `f`.
    fn exchange(&mut self, f: usize, batch: &mut Vec<Segment>) {
        let (client, server) = endpoints(f);
        let (cs, ss) = self.seqs[f];
        let req = self.payload(REQUEST);
        let head = self.payload(RESPONSE_HEAD);
        let body = self.payload(RESPONSE_BODY);
        let a = self.seg(client, server, cs, ss, req);
        let b = self.seg(
            server,
            client,
            ss,
            cs.wrapping_add(REQUEST as u32),
            Bytes::new(),
        );
        let c = self.seg(server, client, ss, cs.wrapping_add(REQUEST as u32), head);
        let d = self.seg(
            server,
            client,
            ss.wrapping_add(RESPONSE_HEAD as u32),
            cs.wrapping_add(REQUEST as u32),
            body,
        );
        let e = self.seg(
            client,
            server,
            cs.wrapping_add(REQUEST as u32),
            ss.wrapping_add((RESPONSE_HEAD + RESPONSE_BODY) as u32),
            Bytes::new(),
        );
        batch.extend([a, b, c, d, e]);
        self.seqs[f] = (
            cs.wrapping_add(REQUEST as u32),
            ss.wrapping_add((RESPONSE_HEAD + RESPONSE_BODY) as u32),
        );
    }
}

/// Opens `flows` flows with a handshake each; `sink` gets the events of each.
fn open_flows(
    r: &mut Reassembler,
    flows: usize,
    out: &mut Vec<StreamEvent>,
    sink: &mut dyn FnMut(&mut Vec<StreamEvent>),
) {
    for f in 0..flows {
        let (client, server) = endpoints(f);
        let syn = |src, dst, flags, seq, ack| Segment {
            ts: Nanos(1_700_000_000_000_000_000),
            src,
            dst,
            seq,
            ack,
            flags: TcpFlags(flags),
            payload: Bytes::new(),
            missing_tail: 0,
        };
        // ISNs near the wrap so the run crosses it.
        r.push(
            syn(client, server, TcpFlags::SYN, u32::MAX - 50_000, 0),
            out,
        );
        r.push(
            syn(
                server,
                client,
                TcpFlags::SYN | TcpFlags::ACK,
                u32::MAX - 70_000,
                u32::MAX - 49_999,
            ),
            out,
        );
        sink(out);
        out.clear();
    }
}

/// What is measured: the reassembler, or the floor any per-flow stage pays.
trait Stage {
    fn push(&mut self, seg: Segment, out: &mut Vec<StreamEvent>);
}

impl Stage for Reassembler {
    fn push(&mut self, seg: Segment, out: &mut Vec<StreamEvent>) {
        Reassembler::push(self, seg, out);
    }
}

/// The least a per-flow stage does with each segment: find its flow in an `FxHashMap` by the
/// canonical 4-tuple and hand the payload on as an event. The reassembler's cost above this
/// floor is its own; the ratio is stable on a shared machine where absolute figures are not.
#[derive(Default)]
struct Floor {
    flows: rustc_hash::FxHashMap<(SocketAddr, SocketAddr), u64>,
}

impl Stage for Floor {
    fn push(&mut self, seg: Segment, out: &mut Vec<StreamEvent>) {
        let key = if seg.src <= seg.dst {
            (seg.src, seg.dst)
        } else {
            (seg.dst, seg.src)
        };
        let n = self.flows.entry(key).or_insert(0);
        *n += 1;
        if !seg.payload.is_empty() {
            out.push(StreamEvent::Data {
                conn: parity_agent::stream::ConnId(*n),
                dir: parity_agent::stream::Direction::ToServer,
                ts: seg.ts,
                data: seg.payload,
            });
        }
    }
}

/// CPU seconds spent pushing `segments` in-order segments over `flows` flows.
fn run(stage: &mut dyn Stage, segments: u64, flows: usize, owned: bool) -> (f64, f64, u64, u64) {
    let mut g = Gen {
        shared: Bytes::from(vec![b'x'; 4096]),
        owned,
        flows,
        seqs: vec![(u32::MAX - 49_999, u32::MAX - 69_999); flows],
        n: 0,
    };
    let mut out = Vec::with_capacity(16);
    let mut batch = Vec::with_capacity(BATCH + 5);
    let (mut pushed, mut bytes, mut events) = (0u64, 0u64, 0u64);
    let (mut cpu, mut wall) = (Duration::ZERO, Duration::ZERO);
    let mut f = 0;
    while pushed < segments {
        batch.clear();
        while batch.len() < BATCH {
            g.exchange(f, &mut batch);
            f = (f + 1) % g.flows;
        }
        bytes += batch.iter().map(|s| s.payload.len() as u64).sum::<u64>();
        pushed += batch.len() as u64;
        let (start, start_cpu) = (Instant::now(), thread_cpu());
        for seg in batch.drain(..) {
            stage.push(seg, &mut out);
            events += out.len() as u64;
            out.clear();
        }
        wall += start.elapsed();
        cpu += thread_cpu() - start_cpu;
    }
    let _ = events;
    (cpu.as_secs_f64(), wall.as_secs_f64(), pushed, bytes)
}

fn throughput(segments: u64, flows: usize, owned: bool) {
    let mut r = Reassembler::new(config(), vec![]);
    let mut out = Vec::new();
    open_flows(&mut r, flows, &mut out, &mut |_| {});
    let (secs, wall, pushed, bytes) = run(&mut r, segments, flows, owned);
    let st = r.stats();
    assert_eq!(
        st.gaps.gap + st.duplicate_segments + st.ooo_segments_buffered,
        0
    );
    let (floor, _, _, _) = run(&mut Floor::default(), segments, flows, owned);
    println!(
        "{:>6} payloads: {pushed} segments over {flows} flows in {:.3}s CPU ({:.3}s wall): {:.1} M segments/s, {:.1} ns/segment, {:.0} MB/s of payload; floor (lookup + hand-off) {:.1} ns/segment, reassembler = {:.2}x floor",
        if owned { "owned" } else { "shared" },
        secs,
        wall,
        pushed as f64 / secs / 1e6,
        secs * 1e9 / pushed as f64,
        bytes as f64 / secs / 1e6,
        floor * 1e9 / pushed as f64,
        secs / floor,
    );
}

/// CPU time of this thread: the machine is shared, so wall time measures the neighbours too.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn memory(flows: usize) {
    let before = HEAP.load(Ordering::Relaxed);
    let mut r = Reassembler::new(config(), vec![]);
    let mut out = Vec::new();
    open_flows(&mut r, flows, &mut out, &mut |_| {});
    let heap = HEAP.load(Ordering::Relaxed) - before;
    println!(
        "memory: {flows} open flows: heap {} B/flow, memory_used() {} B/flow",
        heap / flows as isize,
        r.memory_used() / r.flows_active().max(1),
    );
}

/// `len` bytes of an HTTP/1.1 message: a head padded to `head` bytes with an `X-Pad` field, then
/// `len - head` bytes of body (announced by `Content-Length`).
fn http_message(first_line: &str, head: usize, len: usize) -> Bytes {
    let start = format!("{first_line}\r\nContent-Length: {}\r\nX-Pad: ", len - head);
    let pad = head - start.len() - 4;
    let mut m = start.into_bytes();
    m.extend(std::iter::repeat_n(b'p', pad));
    m.extend_from_slice(b"\r\n\r\n");
    m.resize(len, b'b');
    Bytes::from(m)
}

/// Heap per open flow after one HTTP exchange on each, through the reassembler and the HTTP
/// stage (what a live capture holds for an idle keep-alive connection), against the sum of
/// both stages' `memory_used()`.
fn memory_http(flows: usize) {
    let before = HEAP.load(Ordering::Relaxed);
    let mut r = Reassembler::new(config(), vec![]);
    let mut http = HttpTracker::new(HttpConfig::from_limits(&Limits::default()));
    let mut out = Vec::new();
    let mut exchanges = Vec::new();
    open_flows(&mut r, flows, &mut out, &mut |evs| {
        for ev in evs.drain(..) {
            http.on_event(ev, &mut exchanges);
        }
    });
    let request = http_message("GET /x HTTP/1.1", REQUEST, REQUEST);
    let response = http_message(
        "HTTP/1.1 200 OK",
        RESPONSE_HEAD,
        RESPONSE_HEAD + RESPONSE_BODY,
    );
    let mut g = Gen {
        shared: Bytes::from(vec![b'x'; 4096]),
        owned: false,
        flows,
        seqs: vec![(u32::MAX - 49_999, u32::MAX - 69_999); flows],
        n: 0,
    };
    let mut batch = Vec::new();
    for f in 0..flows {
        g.exchange(f, &mut batch);
        // Request, ACK, response head, response body, ACK: put HTTP bytes in the payloads.
        batch[0].payload = request.clone();
        batch[2].payload = response.slice(..RESPONSE_HEAD);
        batch[3].payload = response.slice(RESPONSE_HEAD..);
        for seg in batch.drain(..) {
            r.push(seg, &mut out);
            for ev in out.drain(..) {
                http.on_event(ev, &mut exchanges);
            }
        }
        exchanges.clear();
    }
    let heap = HEAP.load(Ordering::Relaxed) - before;
    let accounted = r.memory_used() + http.memory_used();
    println!(
        "memory: {flows} open flows after one HTTP exchange each ({} exchanges complete): heap {} B/flow, memory_used() {} B/flow (reassembly {} + http {})",
        http.stats().complete,
        heap / flows as isize,
        accounted / flows,
        r.memory_used() / flows,
        http.memory_used() / flows,
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let segments: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(5_000_000);
    let flows: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let only = args.next();
    let only = only.as_deref().unwrap_or("all");
    if matches!(only, "all" | "throughput" | "shared") {
        throughput(segments, flows, false);
    }
    if matches!(only, "all" | "throughput" | "owned") {
        throughput(segments, flows, true);
    }
    if matches!(only, "all" | "memory") {
        for n in [1_000, 100_000, 1_000_000] {
            memory(n);
        }
        for n in [1_000, 100_000] {
            memory_http(n);
        }
    }
}
