//! One connection: a parser per direction and the FIFO that pairs requests with responses.
//!
//! A [`Reader`] turns one direction's bytes into message heads and bodies; [`Pairing`] holds a
//! slot per request (in wire order) and fills in its response, emitting an exchange when both
//! sides of the front slot are done. The two only meet in [`Conn`], which routes each step's
//! results and applies cross-direction decisions (an upgrade accepted or declined). The gap and
//! resync heuristics are described in the parent module.

use std::collections::VecDeque;
use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};

use super::body::{BodyReader, BodySink, Framing, GapFit};
use super::decode::DecodeError;
use super::parser::{
    self, check_start_line, fast_head_end, scan_head, ContentLength, HeadFacts, Kind, LineCheck,
    ParsedHead, StartLine,
};
use super::{AnomalySet, HttpConfig, HttpStats, SkipReason};
use crate::exchange::{Anomaly, Body, Exchange, Headers, IncompleteReason, Request, Response};
use crate::segment::Nanos;
use crate::stream::{CloseReason, ConnId, Direction, GapReason};

/// Most interim (1xx) codes recorded per exchange.
const MAX_INTERIM: usize = 16;

/// What one event's processing needs from the tracker.
pub(crate) struct Ctx<'a> {
    /// Bounds.
    pub cfg: &'a HttpConfig,
    /// Counters.
    pub stats: &'a mut HttpStats,
    /// Where finished exchanges go.
    pub out: &'a mut Vec<Exchange>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Http,
    NonHttp,
    Tunnel,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum MethodKind {
    #[default]
    Other,
    Head,
    Connect,
}

/// Records `new` as the reason an exchange is incomplete. The first reason stays, except that a
/// capture loss replaces any other: it is usually the cause of what followed.
fn merge_reason(cur: &mut Option<IncompleteReason>, new: IncompleteReason) {
    match cur {
        None => *cur = Some(new),
        Some(old) if !old.is_capture_loss() && new.is_capture_loss() => *cur = Some(new),
        Some(_) => {}
    }
}

fn gap_reason(r: GapReason) -> IncompleteReason {
    match r {
        GapReason::Gap => IncompleteReason::Gap,
        GapReason::Snaplen => IncompleteReason::Snaplen,
    }
}

/// A request slot: the request (or a placeholder for one that was lost) and its response.
#[derive(Debug)]
struct Slot {
    depth: u32,
    request: Option<Request>,
    req_done: bool,
    method: MethodKind,
    /// The client suspended parsing after this request (upgrade or CONNECT).
    upgrade: bool,
    response: Option<Response>,
    resp_started: bool,
    resp_done: bool,
    interim: Vec<u16>,
    anomalies: AnomalySet,
    incomplete: Option<IncompleteReason>,
    request_start: Option<Nanos>,
    request_end: Option<Nanos>,
    response_start: Option<Nanos>,
    response_end: Option<Nanos>,
}

impl Slot {
    fn new(depth: u32) -> Slot {
        Slot {
            depth,
            request: None,
            req_done: false,
            method: MethodKind::Other,
            upgrade: false,
            response: None,
            resp_started: false,
            resp_done: false,
            interim: Vec::new(),
            anomalies: AnomalySet::default(),
            incomplete: None,
            request_start: None,
            request_end: None,
            response_start: None,
            response_end: None,
        }
    }

    fn mem(&self) -> usize {
        let req = self.request.as_ref().map_or(0, |r| {
            r.headers.heap_bytes() + r.body.kept.len() + r.uri.len()
        });
        let resp = self
            .response
            .as_ref()
            .map_or(0, |r| r.headers.heap_bytes() + r.body.kept.len());
        // The box with the allocator's header.
        std::mem::size_of::<Slot>() + 16 + req + resp
    }
}

/// A server decision that changes the client side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// The connection switched protocols.
    Tunnel,
    /// The server answered an upgrade request without switching: resume the client.
    Declined,
}

/// Request-queue capacity an idle connection keeps.
const IDLE_SLOTS: usize = 4;

/// The request FIFO of a connection.
struct Pairing {
    conn: ConnId,
    client: SocketAddr,
    server: SocketAddr,
    /// Boxed: an idle keep-alive connection keeps the deque's capacity (4 entries after the
    /// first request), which must cost pointers, not 4 slots.
    slots: VecDeque<Box<Slot>>,
    /// Index of the first slot whose response is not done.
    resp_idx: usize,
    next_depth: u32,
    any_request: bool,
    verdict: Option<Verdict>,
}

impl Pairing {
    fn slot(&mut self, depth: u32) -> Option<&mut Slot> {
        self.slots
            .iter_mut()
            .rev()
            .find(|s| s.depth == depth)
            .map(|s| &mut **s)
    }

    /// Queues a new request slot, emitting the oldest waiting one as `no_response` when more
    /// than `max_pending_requests` would wait.
    fn push_slot(&mut self, ctx: &mut Ctx<'_>) -> &mut Slot {
        let started = usize::from(
            self.slots
                .get(self.resp_idx)
                .is_some_and(|s| s.resp_started),
        );
        let waiting = self.slots.len().saturating_sub(self.resp_idx + started);
        if waiting >= ctx.cfg.max_pending_requests {
            if let Some(mut old) = self.slots.remove(self.resp_idx + started) {
                old.req_done = true;
                old.resp_done = true;
                merge_reason(&mut old.incomplete, IncompleteReason::NoResponse);
                ctx.stats.pending_overflow += 1;
                self.emit(old, ctx);
            }
        }
        let depth = self.next_depth;
        self.next_depth = self.next_depth.saturating_add(1);
        self.slots.push_back(Box::new(Slot::new(depth)));
        let last = self.slots.len() - 1;
        &mut self.slots[last]
    }

    /// Queues a request whose head was parsed; returns its depth.
    fn push_request(
        &mut self,
        req: Request,
        method: MethodKind,
        upgrade: bool,
        start: Nanos,
        ctx: &mut Ctx<'_>,
    ) -> u32 {
        self.any_request = true;
        let slot = self.push_slot(ctx);
        slot.request = Some(req);
        slot.method = method;
        slot.upgrade = upgrade;
        slot.request_start = Some(start);
        slot.depth
    }

    /// Queues a placeholder for a request known to exist but not seen.
    fn push_placeholder(&mut self, reason: IncompleteReason, ctx: &mut Ctx<'_>) {
        let slot = self.push_slot(ctx);
        slot.req_done = true;
        slot.incomplete = Some(reason);
        self.drain(ctx);
    }

    fn finish_request(
        &mut self,
        depth: u32,
        body: Body,
        end: Nanos,
        incomplete: Option<IncompleteReason>,
        anomalies: AnomalySet,
        ctx: &mut Ctx<'_>,
    ) {
        if let Some(slot) = self.slot(depth) {
            if let Some(req) = slot.request.as_mut() {
                req.body = body;
            }
            slot.req_done = true;
            slot.request_end = Some(end);
            slot.anomalies = slot.anomalies.union(anomalies);
            if let Some(r) = incomplete {
                merge_reason(&mut slot.incomplete, r);
            }
        }
        self.drain(ctx);
    }

    /// The slot the next response belongs to, creating one for an unsolicited response.
    fn response_target(&mut self) -> (u32, MethodKind, bool) {
        if let Some(s) = self.slots.get(self.resp_idx) {
            return (s.depth, s.method, s.upgrade);
        }
        let depth = self.next_depth;
        self.next_depth = self.next_depth.saturating_add(1);
        let mut slot = Slot::new(depth);
        slot.req_done = true;
        slot.anomalies.insert(Anomaly::UnsolicitedResponse);
        slot.incomplete = Some(IncompleteReason::NoRequest);
        self.slots.push_back(Box::new(slot));
        (depth, MethodKind::Other, false)
    }

    fn add_interim(
        &mut self,
        depth: u32,
        code: u16,
        start: Nanos,
        anomalies: AnomalySet,
        ctx: &mut Ctx<'_>,
    ) {
        if let Some(slot) = self.slot(depth) {
            if slot.interim.len() < MAX_INTERIM {
                slot.interim.push(code);
            } else {
                ctx.stats.interim_dropped += 1;
            }
            slot.resp_started = true;
            slot.response_start.get_or_insert(start);
            slot.anomalies = slot.anomalies.union(anomalies);
        }
    }

    fn set_response(&mut self, depth: u32, resp: Response, start: Nanos, anomalies: AnomalySet) {
        if let Some(slot) = self.slot(depth) {
            slot.response = Some(resp);
            slot.resp_started = true;
            slot.response_start.get_or_insert(start);
            slot.anomalies = slot.anomalies.union(anomalies);
        }
    }

    fn finish_response(
        &mut self,
        depth: u32,
        body: Body,
        end: Nanos,
        incomplete: Option<IncompleteReason>,
        anomalies: AnomalySet,
        ctx: &mut Ctx<'_>,
    ) {
        if let Some(slot) = self.slot(depth) {
            if let Some(resp) = slot.response.as_mut() {
                resp.body = body;
            }
            slot.resp_done = true;
            slot.response_end = Some(end);
            slot.anomalies = slot.anomalies.union(anomalies);
            if let Some(r) = incomplete {
                merge_reason(&mut slot.incomplete, r);
            }
        }
        if self
            .slots
            .get(self.resp_idx)
            .is_some_and(|s| s.depth == depth)
        {
            self.resp_idx += 1;
        }
        self.drain(ctx);
    }

    /// The response for the oldest waiting request was lost or unparseable: that request is
    /// answered by `resp` (what could be salvaged, if anything) with `reason`.
    fn fail_response(
        &mut self,
        reason: IncompleteReason,
        resp: Option<Response>,
        start: Nanos,
        anomalies: AnomalySet,
        ctx: &mut Ctx<'_>,
    ) {
        let have_target = self.resp_idx < self.slots.len();
        if !have_target && resp.is_none() {
            ctx.stats.lost_messages += 1;
            return;
        }
        let (depth, _, _) = self.response_target();
        if let Some(slot) = self.slot(depth) {
            if resp.is_some() {
                slot.response = resp;
                slot.response_start.get_or_insert(start);
            }
        }
        self.finish_response(depth, Body::empty(), start, Some(reason), anomalies, ctx);
    }

    /// Emits every slot at the front whose request and response are both done.
    fn drain(&mut self, ctx: &mut Ctx<'_>) {
        while self
            .slots
            .front()
            .is_some_and(|s| s.req_done && s.resp_done)
        {
            if let Some(slot) = self.slots.pop_front() {
                self.resp_idx = self.resp_idx.saturating_sub(1);
                self.emit(slot, ctx);
            }
        }
        // After a burst of pipelined requests the queue would keep its capacity (up to
        // `max_pending_requests` pointers) while the connection idles.
        if self.slots.is_empty() && self.slots.capacity() > IDLE_SLOTS {
            self.slots.shrink_to(IDLE_SLOTS);
        }
    }

    /// The connection ended: every slot left is emitted.
    fn close_all(&mut self, reset: bool, ctx: &mut Ctx<'_>) {
        let cut = if reset {
            IncompleteReason::Reset
        } else {
            IncompleteReason::Truncated
        };
        let unanswered = if reset {
            IncompleteReason::Reset
        } else {
            IncompleteReason::NoResponse
        };
        while let Some(mut slot) = self.slots.pop_front() {
            if !slot.req_done {
                slot.req_done = true;
                merge_reason(&mut slot.incomplete, cut);
            }
            if !slot.resp_done {
                slot.resp_done = true;
                if slot.response.is_some() {
                    merge_reason(&mut slot.incomplete, cut);
                } else {
                    merge_reason(&mut slot.incomplete, unanswered);
                }
            }
            self.emit(slot, ctx);
        }
        self.resp_idx = 0;
    }

    fn emit(&self, slot: Box<Slot>, ctx: &mut Ctx<'_>) {
        let slot = *slot;
        if slot.request.is_none() && slot.response.is_none() {
            ctx.stats.lost_messages += 1;
            return;
        }
        let stats = &mut *ctx.stats;
        stats.exchanges += 1;
        match slot.incomplete {
            None => stats.complete += 1,
            Some(r) => stats.incomplete[r.index()] += 1,
        }
        let anomalies = slot.anomalies.to_vec();
        for a in &anomalies {
            stats.anomalies[a.index()] += 1;
        }
        ctx.out.push(Exchange {
            conn: self.conn,
            trans_depth: slot.depth,
            client: self.client,
            server: self.server,
            request: slot.request,
            response: slot.response,
            interim: slot.interim,
            incomplete: slot.incomplete,
            anomalies,
            request_start: slot.request_start,
            request_end: slot.request_end,
            response_start: slot.response_start,
            response_end: slot.response_end,
        });
    }

    /// The deque's capacity and every slot it holds.
    fn mem(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Box<Slot>>()
            + self.slots.iter().map(|s| s.mem()).sum::<usize>()
    }
}

/// Where a direction's parser is.
#[derive(Debug)]
enum State {
    /// Between messages.
    Idle,
    /// Reading a head (partial bytes in `buf`).
    Head,
    /// Reading a body.
    Body(BodyReader),
    /// Scanning for the next start line (a cut candidate line in `buf`).
    Resync,
    /// Client after an upgrade or CONNECT request, waiting for the server (bytes in `buf`).
    Suspended,
}

/// A message in progress on one direction.
#[derive(Debug)]
struct Msg {
    start: Nanos,
    end: Nanos,
    anomalies: AnomalySet,
    incomplete: Option<IncompleteReason>,
    sink: Option<BodySink>,
    depth: u32,
    close: bool,
    suspend_after: bool,
}

impl Msg {
    fn new(ts: Nanos, anomalies: AnomalySet) -> Msg {
        Msg {
            start: ts,
            end: ts,
            anomalies,
            incomplete: None,
            sink: None,
            depth: 0,
            close: false,
            suspend_after: false,
        }
    }
}

impl std::fmt::Debug for BodySink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BodySink")
    }
}

/// One direction's parser.
struct Reader {
    kind: Kind,
    state: State,
    buf: BytesMut,
    /// The start line in `buf` was checked valid.
    line_ok: bool,
    /// Resync: the next byte starts a line.
    at_line_start: bool,
    msg: Option<Msg>,
    /// Anomalies for the next message (resync).
    next_anomalies: AnomalySet,
    /// The last message announced the connection's close.
    close_seen: bool,
    /// A message head was parsed on this direction.
    seen_message: bool,
    /// A gap was seen on this direction.
    had_gap: bool,
    /// A bare LF was seen while scanning the head being read.
    bare_lf: bool,
    /// The head being read was scanned from its first byte (not found by a resync that
    /// buffered its first line).
    scanned_from_start: bool,
}

impl Reader {
    fn new(kind: Kind, resync: bool) -> Reader {
        Reader {
            kind,
            state: if resync { State::Resync } else { State::Idle },
            buf: BytesMut::new(),
            line_ok: false,
            at_line_start: true,
            msg: None,
            next_anomalies: AnomalySet::default(),
            close_seen: false,
            seen_message: false,
            had_gap: false,
            bare_lf: false,
            scanned_from_start: true,
        }
    }

    /// `n` bytes taken at `ts` into the message: it ends no earlier than `ts` (whether the
    /// bytes came in one event or in several at that time).
    fn note_end(&mut self, n: usize, ts: Nanos) {
        if n > 0 {
            if let Some(m) = self.msg.as_mut() {
                m.end = ts;
            }
        }
    }

    fn mem(&self) -> usize {
        let body = match &self.state {
            State::Body(r) => r.buffered(),
            _ => 0,
        };
        self.buf.capacity()
            + body
            + self
                .msg
                .as_ref()
                .and_then(|m| m.sink.as_ref())
                .map_or(0, BodySink::mem)
    }

    /// Starts a message at `ts`.
    fn start_msg(&mut self, ts: Nanos, line_ok: bool) {
        let mut anomalies = std::mem::take(&mut self.next_anomalies);
        if self.close_seen {
            anomalies.insert(Anomaly::DataAfterClose);
        }
        self.msg = Some(Msg::new(ts, anomalies));
        self.state = State::Head;
        self.line_ok = line_ok;
        self.bare_lf = false;
        self.scanned_from_start = self.buf.is_empty();
    }
}

/// Judges a start line (or a resynchronisation candidate) on its first `cap`
/// (`max_header_bytes`) bytes only: a start line that does not end within them could not begin
/// a head that fits, and judging more would make the verdict depend on how much of the line the
/// current event happens to hold.
fn check_candidate(kind: Kind, line: &[u8], cap: usize) -> LineCheck {
    check_start_line(kind, &line[..line.len().min(cap)])
}

/// One connection's HTTP state.
pub(crate) struct Conn {
    mid_stream: bool,
    mode: Mode,
    readers: [Reader; 2],
    pair: Pairing,
    mem: usize,
}

impl Conn {
    /// A connection opened with these roles.
    pub fn new(id: ConnId, client: SocketAddr, server: SocketAddr, mid_stream: bool) -> Conn {
        Conn {
            mid_stream,
            mode: Mode::Http,
            readers: [
                Reader::new(Kind::Request, mid_stream),
                Reader::new(Kind::Response, mid_stream),
            ],
            pair: Pairing {
                conn: id,
                client,
                server,
                slots: VecDeque::new(),
                resp_idx: 0,
                next_depth: 1,
                any_request: false,
                verdict: None,
            },
            mem: 0,
        }
    }

    /// Memory as of the last [`Conn::refresh_mem`].
    pub fn mem_cached(&self) -> usize {
        self.mem
    }

    /// Recomputes the memory held and returns it.
    pub fn refresh_mem(&mut self) -> usize {
        self.mem = self.readers[0].mem() + self.readers[1].mem() + self.pair.mem();
        self.mem
    }

    /// In-order bytes of one direction.
    pub fn on_data(&mut self, dir: Direction, ts: Nanos, data: Bytes, ctx: &mut Ctx<'_>) {
        self.run(dir, ts, &data, 0, ctx);
    }

    fn run(&mut self, dir: Direction, ts: Nanos, data: &Bytes, mut pos: usize, ctx: &mut Ctx<'_>) {
        while pos < data.len() {
            match self.mode {
                Mode::NonHttp => {
                    ctx.stats.skip(SkipReason::NonHttp, data.len() - pos);
                    return;
                }
                Mode::Tunnel => {
                    ctx.stats.skip(SkipReason::Tunnel, data.len() - pos);
                    return;
                }
                Mode::Http => {}
            }
            pos += self.step(dir, ts, data, pos, ctx);
            if let Some(v) = self.pair.verdict.take() {
                self.apply_verdict(v, ts, ctx);
            }
        }
    }

    /// Processes bytes at `data[pos..]` in the current state; returns how many were consumed.
    /// Consumes at least one byte unless the state changed.
    fn step(
        &mut self,
        dir: Direction,
        ts: Nanos,
        data: &Bytes,
        pos: usize,
        ctx: &mut Ctx<'_>,
    ) -> usize {
        let d = dir.index();
        match self.readers[d].state {
            State::Idle => {
                let avail = &data[pos..];
                let skip = avail
                    .iter()
                    .take_while(|&&b| b == b'\r' || b == b'\n')
                    .count();
                if skip < avail.len() {
                    self.readers[d].buf.clear();
                    self.readers[d].start_msg(ts, false);
                }
                skip
            }
            State::Head => self.step_head(dir, ts, data, pos, ctx),
            State::Body(_) => self.step_body(dir, ts, data, pos, ctx),
            State::Resync => self.step_resync(dir, ts, data, pos, ctx),
            State::Suspended => {
                let r = &mut self.readers[d];
                let avail = &data[pos..];
                let room = ctx.cfg.max_header_bytes.saturating_sub(r.buf.len());
                let keep = room.min(avail.len());
                r.buf.extend_from_slice(&avail[..keep]);
                ctx.stats
                    .skip(SkipReason::UpgradePending, avail.len() - keep);
                avail.len()
            }
        }
    }

    fn step_head(
        &mut self,
        dir: Direction,
        ts: Nanos,
        data: &Bytes,
        pos: usize,
        ctx: &mut Ctx<'_>,
    ) -> usize {
        let d = dir.index();
        let cap = ctx.cfg.max_header_bytes;
        let r = &mut self.readers[d];
        let kind = r.kind;
        let avail = &data[pos..];
        if r.buf.is_empty() {
            if let Some(e) = fast_head_end(avail, cap) {
                let head = data.slice(pos..pos + e);
                if let Some(m) = r.msg.as_mut() {
                    m.end = ts;
                }
                self.on_head(dir, ts, head, Some(false), ctx);
                return e;
            }
        }
        let tail_from = r.buf.len().saturating_sub(2);
        let scan = scan_head(&r.buf[tail_from..], avail);
        r.bare_lf |= scan.bare_lf;
        if let Some(e) = scan.end {
            if r.buf.len() + e > cap {
                if let Some(consumed) = self.refuse_bad_start_line(dir, ts, avail, ctx) {
                    return consumed;
                }
                let r = &mut self.readers[d];
                let keep = cap.saturating_sub(r.buf.len()).min(e);
                r.buf.extend_from_slice(&avail[..keep]);
                r.note_end(keep, ts);
                self.cut_head(dir, ts, IncompleteReason::HeaderCap, ctx);
                // The rest of the head is scanned like any bytes after a cut head, as it must
                // be when its end is not in this event (the branch below): where the stream was
                // cut into events must not decide what is found after the cap.
                self.enter_resync(dir, false, ctx);
                return keep;
            }
            let head = if r.buf.is_empty() {
                data.slice(pos..pos + e)
            } else {
                r.buf.extend_from_slice(&avail[..e]);
                r.buf.split().freeze()
            };
            if let Some(m) = r.msg.as_mut() {
                m.end = ts;
            }
            // The scans covered the whole head only when it was read from its first byte.
            let bare_lf = r.scanned_from_start.then_some(r.bare_lf);
            self.on_head(dir, ts, head, bare_lf, ctx);
            return e;
        }
        if r.buf.len() + avail.len() > cap {
            if let Some(consumed) = self.refuse_bad_start_line(dir, ts, avail, ctx) {
                return consumed;
            }
            let r = &mut self.readers[d];
            let keep = cap.saturating_sub(r.buf.len());
            r.buf.extend_from_slice(&avail[..keep]);
            r.note_end(keep, ts);
            self.cut_head(dir, ts, IncompleteReason::HeaderCap, ctx);
            // The bytes after the cap are scanned for the next message (and counted as
            // skipped), not dropped with the head: a message after an oversized head in the same
            // event would otherwise be lost, and found had the event been cut at the cap.
            self.enter_resync(dir, false, ctx);
            return keep;
        }
        if r.buf.is_empty() && !r.line_ok {
            match check_start_line(kind, avail) {
                LineCheck::Valid(_) => r.line_ok = true,
                LineCheck::NeedMore => {}
                LineCheck::Invalid => {
                    self.bad_start(dir, ts, None, ctx);
                    return 0;
                }
            }
        }
        r.buf.extend_from_slice(avail);
        if let Some(m) = r.msg.as_mut() {
            m.end = ts;
        }
        if !r.line_ok {
            match check_start_line(kind, &r.buf) {
                LineCheck::Valid(_) => r.line_ok = true,
                LineCheck::NeedMore => {}
                LineCheck::Invalid => {
                    let garbage = r.buf.split().freeze();
                    self.bad_start(dir, ts, Some(garbage), ctx);
                }
            }
        }
        avail.len()
    }

    /// Before a head is cut for its size: if its start line (its part buffered on `dir` plus
    /// the first line of `avail`) is already invalid, the bytes are garbage, as they would have
    /// been had they come in smaller pieces (the start line is checked as soon as it can be
    /// judged, before the head grows past the cap). Returns the bytes of `avail` consumed when
    /// it handled them so. Only runs on the rare oversized-head path.
    fn refuse_bad_start_line(
        &mut self,
        dir: Direction,
        ts: Nanos,
        avail: &[u8],
        ctx: &mut Ctx<'_>,
    ) -> Option<usize> {
        let cap = ctx.cfg.max_header_bytes;
        let r = &mut self.readers[dir.index()];
        if r.line_ok {
            return None;
        }
        // Judged on the head's first `cap` bytes only, the most it could have had buffered had
        // the bytes come in pieces.
        let check = if r.buf.is_empty() {
            check_candidate(r.kind, avail, cap)
        } else {
            let end = memchr::memchr(b'\n', avail).map_or(avail.len(), |i| i + 1);
            let mut line = Vec::with_capacity(r.buf.len() + end);
            line.extend_from_slice(&r.buf);
            line.extend_from_slice(&avail[..end]);
            check_candidate(r.kind, &line, cap)
        };
        if !matches!(check, LineCheck::Invalid) {
            return None;
        }
        let garbage = (!r.buf.is_empty()).then(|| r.buf.split().freeze());
        self.bad_start(dir, ts, garbage, ctx);
        Some(0)
    }

    /// The bytes where a message should start are not a start line. The first bytes of a
    /// connection seen from its start make it non-HTTP; later, the stream resynchronises
    /// (scanning `garbage` first, when given).
    fn bad_start(&mut self, dir: Direction, ts: Nanos, garbage: Option<Bytes>, ctx: &mut Ctx<'_>) {
        let d = dir.index();
        let r = &mut self.readers[d];
        let first = !r.seen_message && !r.had_gap && !self.mid_stream;
        let opens_connection = match r.kind {
            Kind::Request => first,
            Kind::Response => first && !self.pair.any_request,
        };
        if opens_connection {
            ctx.stats.non_http_connections += 1;
            let held = garbage.as_ref().map_or(0, Bytes::len)
                + self.readers.iter().map(|r| r.buf.len()).sum::<usize>();
            ctx.stats.skip(SkipReason::NonHttp, held);
            self.mode = Mode::NonHttp;
            for r in &mut self.readers {
                r.buf = BytesMut::new();
                r.msg = None;
                r.state = State::Idle;
            }
            return;
        }
        r.msg = None;
        match r.kind {
            Kind::Request => self.pair.push_placeholder(IncompleteReason::Malformed, ctx),
            Kind::Response => self.pair.fail_response(
                IncompleteReason::Malformed,
                None,
                ts,
                AnomalySet::default(),
                ctx,
            ),
        }
        self.enter_resync(dir, false, ctx);
        if let Some(g) = garbage {
            self.run(dir, ts, &g, 0, ctx);
        }
    }

    fn enter_resync(&mut self, dir: Direction, at_line_start: bool, ctx: &mut Ctx<'_>) {
        let r = &mut self.readers[dir.index()];
        if !r.buf.is_empty() {
            ctx.stats.skip(SkipReason::Resync, r.buf.len());
            r.buf.clear();
        }
        r.state = State::Resync;
        r.at_line_start = at_line_start;
        r.msg = None;
        r.next_anomalies.insert(Anomaly::Resync);
        ctx.stats.resyncs += 1;
    }

    /// A complete head.
    fn on_head(
        &mut self,
        dir: Direction,
        ts: Nanos,
        head: Bytes,
        bare_lf: Option<bool>,
        ctx: &mut Ctx<'_>,
    ) {
        let kind = self.readers[dir.index()].kind;
        if kind == Kind::Request && head.starts_with(b"PRI * ") {
            // The HTTP/2 connection preface, whatever version it claims.
            self.bad_start(dir, ts, Some(head), ctx);
            return;
        }
        match parser::parse_head(kind, &head, bare_lf) {
            Ok(p) => match kind {
                Kind::Request => self.on_request_head(ts, p, ctx),
                Kind::Response => self.on_response_head(ts, p, ctx),
            },
            Err(_) => {
                if check_start_line(kind, &head) == LineCheck::Invalid {
                    self.bad_start(dir, ts, Some(head), ctx);
                } else {
                    self.readers[dir.index()].buf = BytesMut::from(&head[..]);
                    self.cut_head(dir, ts, IncompleteReason::Malformed, ctx);
                    self.enter_resync(dir, true, ctx);
                }
            }
        }
    }

    fn on_request_head(&mut self, ts: Nanos, p: ParsedHead, ctx: &mut Ctx<'_>) {
        let r = &mut self.readers[0];
        r.seen_message = true;
        let mut msg = r
            .msg
            .take()
            .unwrap_or_else(|| Msg::new(ts, AnomalySet::default()));
        let StartLine::Request {
            method,
            uri,
            version,
        } = p.start
        else {
            return;
        };
        let method_b = p.slice(method);
        let kind = match &method_b[..] {
            b"HEAD" => MethodKind::Head,
            b"CONNECT" => MethodKind::Connect,
            _ => MethodKind::Other,
        };
        let f = &p.facts;
        let mut anomalies = msg.anomalies.union(f.anomalies);
        flag_common(f, &mut anomalies);
        if f.expect_continue && f.content_length == ContentLength::Valid(0) {
            anomalies.insert(Anomaly::ContentLength0AndExpect100);
        }
        let framing = if kind == MethodKind::Connect {
            Some(Framing::None)
        } else if f.te_present {
            f.te_chunked_final.then_some(Framing::Chunked)
        } else {
            match f.content_length {
                ContentLength::Absent => Some(Framing::None),
                ContentLength::Valid(n) => Some(Framing::Length(n)),
                ContentLength::Invalid | ContentLength::Conflicting => None,
            }
        };
        let close =
            f.conn_close || (version == crate::exchange::Version::Http10 && !f.conn_keep_alive);
        let upgrade = kind == MethodKind::Connect || (f.upgrade && f.conn_upgrade);
        let codings = f.codings;
        let req = Request {
            method: method_b,
            uri: p.slice(uri),
            version,
            headers: Headers::from_spans(p.head, p.spans),
            body: Body::empty(),
        };
        let depth = self.pair.push_request(req, kind, upgrade, msg.start, ctx);
        let r = &mut self.readers[0];
        r.close_seen = close;
        match framing.map(BodyReader::new) {
            None => {
                self.pair.finish_request(
                    depth,
                    Body::empty(),
                    ts,
                    Some(IncompleteReason::Malformed),
                    anomalies,
                    ctx,
                );
                self.enter_resync(Direction::ToServer, true, ctx);
            }
            Some(None) => {
                r.state = if upgrade {
                    State::Suspended
                } else {
                    State::Idle
                };
                self.pair
                    .finish_request(depth, Body::empty(), ts, None, anomalies, ctx);
            }
            Some(Some(reader)) => {
                msg.anomalies = anomalies;
                msg.depth = depth;
                msg.close = close;
                msg.suspend_after = upgrade;
                msg.sink = Some(BodySink::new(
                    ctx.cfg.max_body_bytes,
                    codings,
                    ctx.cfg.max_decoded_bytes as u64,
                ));
                r.msg = Some(msg);
                r.state = State::Body(reader);
            }
        }
    }

    fn on_response_head(&mut self, ts: Nanos, p: ParsedHead, ctx: &mut Ctx<'_>) {
        let r = &mut self.readers[1];
        r.seen_message = true;
        let msg = r
            .msg
            .take()
            .unwrap_or_else(|| Msg::new(ts, AnomalySet::default()));
        let StartLine::Response {
            status,
            reason,
            version,
        } = p.start
        else {
            return;
        };
        let f = &p.facts;
        let mut anomalies = msg.anomalies.union(f.anomalies);
        flag_common(f, &mut anomalies);
        let (depth, method, upgrade_req) = self.pair.response_target();
        if (100..200).contains(&status) && status != 101 {
            self.pair
                .add_interim(depth, status, msg.start, anomalies, ctx);
            self.readers[1].state = State::Idle;
            return;
        }
        let tunnel =
            status == 101 || (method == MethodKind::Connect && (200..300).contains(&status));
        let framing = if tunnel
            || method == MethodKind::Head
            || status == 204
            || status == 304
            || (100..200).contains(&status)
        {
            Some(Framing::None)
        } else if f.te_present {
            Some(if f.te_chunked_final {
                Framing::Chunked
            } else {
                Framing::Close
            })
        } else {
            match f.content_length {
                ContentLength::Absent => Some(Framing::Close),
                ContentLength::Valid(n) => Some(Framing::Length(n)),
                ContentLength::Invalid | ContentLength::Conflicting => None,
            }
        };
        let close =
            f.conn_close || (version == crate::exchange::Version::Http10 && !f.conn_keep_alive);
        let codings = f.codings;
        let resp = Response {
            status,
            reason: p.slice(reason),
            version,
            headers: Headers::from_spans(p.head, p.spans),
            body: Body::empty(),
        };
        self.pair.set_response(depth, resp, msg.start, anomalies);
        if tunnel {
            self.pair.verdict = Some(Verdict::Tunnel);
        } else if upgrade_req {
            self.pair.verdict = Some(Verdict::Declined);
        }
        let r = &mut self.readers[1];
        r.close_seen = close;
        match framing.map(BodyReader::new) {
            None => {
                self.pair.finish_response(
                    depth,
                    Body::empty(),
                    ts,
                    Some(IncompleteReason::Malformed),
                    AnomalySet::default(),
                    ctx,
                );
                self.enter_resync(Direction::ToClient, true, ctx);
            }
            Some(None) => {
                r.state = State::Idle;
                self.pair.finish_response(
                    depth,
                    Body::empty(),
                    ts,
                    None,
                    AnomalySet::default(),
                    ctx,
                );
            }
            Some(Some(reader)) => {
                let mut msg = msg;
                msg.anomalies = AnomalySet::default();
                msg.depth = depth;
                msg.close = close;
                msg.sink = Some(BodySink::new(
                    ctx.cfg.max_body_bytes,
                    codings,
                    ctx.cfg.max_decoded_bytes as u64,
                ));
                r.msg = Some(msg);
                r.state = State::Body(reader);
            }
        }
    }

    fn step_body(
        &mut self,
        dir: Direction,
        ts: Nanos,
        data: &Bytes,
        pos: usize,
        ctx: &mut Ctx<'_>,
    ) -> usize {
        let d = dir.index();
        let r = &mut self.readers[d];
        let Reader { state, msg, .. } = r;
        let (State::Body(reader), Some(msg)) = (state, msg.as_mut()) else {
            r.state = State::Idle;
            return 0;
        };
        let avail = &data[pos..];
        let mut anomalies = msg.anomalies;
        let sink = &mut msg.sink;
        let res = reader.feed(
            avail,
            &mut anomalies,
            ctx.cfg.max_header_bytes,
            &mut |range| {
                if let Some(s) = sink.as_mut() {
                    s.push(data.slice(pos + range.start..pos + range.end));
                }
            },
        );
        msg.anomalies = anomalies;
        msg.end = ts;
        match res {
            Ok((n, true)) => {
                self.finish_body(dir, None, ctx);
                n
            }
            Ok((n, false)) if n > 0 => n,
            Ok(_) => {
                self.finish_body(dir, Some(IncompleteReason::Malformed), ctx);
                self.enter_resync(dir, false, ctx);
                0
            }
            Err(e) => {
                // What the reader consumed was framing and body; only the offending bytes
                // (with their part from earlier events) are scanned for the next message.
                self.finish_body(dir, Some(IncompleteReason::Malformed), ctx);
                self.enter_resync(dir, false, ctx);
                if !e.held.is_empty() {
                    self.run(dir, ts, &Bytes::from(e.held), 0, ctx);
                }
                e.at
            }
        }
    }

    /// Ends the body in progress on `dir`, with `reason` when it did not end normally.
    fn finish_body(&mut self, dir: Direction, reason: Option<IncompleteReason>, ctx: &mut Ctx<'_>) {
        let r = &mut self.readers[dir.index()];
        let Some(mut msg) = r.msg.take() else {
            r.state = State::Idle;
            return;
        };
        r.state = if msg.suspend_after && reason.is_none() {
            State::Suspended
        } else {
            State::Idle
        };
        let mut incomplete = msg.incomplete;
        if let Some(x) = reason {
            merge_reason(&mut incomplete, x);
        }
        let (body, err) = match msg.sink.take() {
            Some(s) => s.finish(incomplete.is_some()),
            None => (Body::empty(), None),
        };
        if let Some(e) = err {
            match e {
                DecodeError::LimitExceeded => ctx.stats.decode_limit_exceeded += 1,
                DecodeError::Corrupt | DecodeError::Truncated => ctx.stats.decode_errors += 1,
            }
            merge_reason(&mut incomplete, IncompleteReason::DecodeError);
        }
        match r.kind {
            Kind::Request => {
                self.pair
                    .finish_request(msg.depth, body, msg.end, incomplete, msg.anomalies, ctx)
            }
            Kind::Response => {
                self.pair
                    .finish_response(msg.depth, body, msg.end, incomplete, msg.anomalies, ctx)
            }
        }
    }

    fn step_resync(
        &mut self,
        dir: Direction,
        ts: Nanos,
        data: &Bytes,
        pos: usize,
        ctx: &mut Ctx<'_>,
    ) -> usize {
        let cap = ctx.cfg.max_header_bytes;
        let r = &mut self.readers[dir.index()];
        let kind = r.kind;
        let avail = &data[pos..];
        if !r.buf.is_empty() {
            // A candidate line cut by the end of the previous event.
            let take = memchr::memchr(b'\n', avail).map_or(avail.len(), |i| i + 1);
            r.buf.extend_from_slice(&avail[..take]);
            match check_candidate(kind, &r.buf, cap) {
                LineCheck::Valid(_) => {
                    r.start_msg(ts, true);
                }
                LineCheck::NeedMore if r.buf.len() <= cap => {}
                LineCheck::NeedMore | LineCheck::Invalid => {
                    // Only the candidate's first byte is known not to start a message: the rest
                    // of the line is scanned again, as it is when the line comes in one event
                    // (a status line can follow a bad one on the same line).
                    ctx.stats.skip(SkipReason::Resync, 1);
                    let rest = r.buf.split().freeze().slice(1..);
                    r.at_line_start = false;
                    self.run(dir, ts, &rest, 0, ctx);
                }
            }
            return take;
        }
        let mut from = 0;
        let mut first = r.at_line_start;
        loop {
            let candidate = match kind {
                // Requests are searched at line starts: a method is any token, so a request line
                // glued to the end of a body cannot be told apart from the body.
                Kind::Request => {
                    if first {
                        Some(0)
                    } else {
                        memchr::memchr(b'\n', &avail[from..]).map(|i| from + i + 1)
                    }
                }
                // Responses are searched anywhere: a status line starts with `HTTP/1.`, and the
                // previous body need not end with a line end.
                Kind::Response => {
                    memchr::memmem::find(&avail[from..], b"HTTP/1.").map(|i| from + i)
                }
            };
            first = false;
            let Some(p) = candidate else {
                // Keep a cut prefix of a start line for the next event.
                let keep = match kind {
                    Kind::Request => 0,
                    Kind::Response => (1..7)
                        .rev()
                        .find(|&k| {
                            k <= avail.len() && b"HTTP/1.".starts_with(&avail[avail.len() - k..])
                        })
                        .unwrap_or(0),
                };
                ctx.stats.skip(SkipReason::Resync, avail.len() - keep);
                r.buf.extend_from_slice(&avail[avail.len() - keep..]);
                r.at_line_start = avail.last() == Some(&b'\n');
                return avail.len();
            };
            if p >= avail.len() {
                ctx.stats.skip(SkipReason::Resync, avail.len());
                r.at_line_start = true;
                return avail.len();
            }
            match check_candidate(kind, &avail[p..], cap) {
                LineCheck::Valid(_) => {
                    ctx.stats.skip(SkipReason::Resync, p);
                    r.start_msg(ts, true);
                    return p;
                }
                LineCheck::NeedMore if avail.len() - p <= cap => {
                    ctx.stats.skip(SkipReason::Resync, p);
                    r.buf.extend_from_slice(&avail[p..]);
                    return avail.len();
                }
                // Not a start line: requests go on at the next line start (searched from the
                // candidate itself, so that the line after an empty one is a candidate too),
                // responses at the next byte.
                LineCheck::NeedMore | LineCheck::Invalid => {
                    from = match kind {
                        Kind::Request => p,
                        Kind::Response => p + 1,
                    }
                }
            }
        }
    }

    /// The head being read on `dir` is cut (gap, end of connection, header cap, bad headers):
    /// report what its start line says.
    fn cut_head(&mut self, dir: Direction, ts: Nanos, reason: IncompleteReason, ctx: &mut Ctx<'_>) {
        let r = &mut self.readers[dir.index()];
        let buf = r.buf.split().freeze();
        let msg = r
            .msg
            .take()
            .unwrap_or_else(|| Msg::new(ts, AnomalySet::default()));
        let loss = reason.is_capture_loss() || reason == IncompleteReason::HeaderCap;
        match r.kind {
            Kind::Request => match parser::salvage_request_line(&buf) {
                Some((m, u, version)) => {
                    let method = buf.slice(m.0 as usize..m.1 as usize);
                    let kind = match &method[..] {
                        b"HEAD" => MethodKind::Head,
                        b"CONNECT" => MethodKind::Connect,
                        _ => MethodKind::Other,
                    };
                    let req = Request {
                        method,
                        uri: buf.slice(u.0 as usize..u.1 as usize),
                        version,
                        headers: Headers::default(),
                        body: Body::empty(),
                    };
                    let depth = self.pair.push_request(req, kind, false, msg.start, ctx);
                    self.pair.finish_request(
                        depth,
                        Body::empty(),
                        msg.end,
                        Some(reason),
                        msg.anomalies,
                        ctx,
                    );
                }
                None if loss => self.pair.push_placeholder(reason, ctx),
                None => ctx.stats.skip(SkipReason::Truncated, buf.len()),
            },
            Kind::Response => {
                let resp =
                    parser::salvage_status_line(&buf).map(|(status, rs, version)| Response {
                        status,
                        reason: buf.slice(rs.0 as usize..rs.1 as usize),
                        version,
                        headers: Headers::default(),
                        body: Body::empty(),
                    });
                if resp.is_none() && !loss && self.pair.resp_idx >= self.pair.slots.len() {
                    ctx.stats.skip(SkipReason::Truncated, buf.len());
                } else {
                    self.pair
                        .fail_response(reason, resp, msg.start, msg.anomalies, ctx);
                }
            }
        }
        self.readers[dir.index()].state = State::Idle;
    }

    /// Applies the server's answer to an upgrade request.
    fn apply_verdict(&mut self, v: Verdict, ts: Nanos, ctx: &mut Ctx<'_>) {
        match v {
            Verdict::Tunnel => {
                ctx.stats.tunnels += 1;
                if matches!(self.readers[0].state, State::Head | State::Body(_)) {
                    self.finalize_reader(Direction::ToServer, ts, false, false, ctx);
                }
                for r in &mut self.readers {
                    let held = r.buf.len();
                    ctx.stats.skip(SkipReason::Tunnel, held);
                    r.buf = BytesMut::new();
                }
                self.mode = Mode::Tunnel;
            }
            Verdict::Declined => {
                let client = &mut self.readers[0];
                if let Some(m) = client.msg.as_mut() {
                    m.suspend_after = false;
                }
                if matches!(client.state, State::Suspended) {
                    client.state = State::Idle;
                    let held = client.buf.split().freeze();
                    if !held.is_empty() {
                        self.run(Direction::ToServer, ts, &held, 0, ctx);
                    }
                }
            }
        }
    }

    /// `len` bytes (0 = unknown) are missing at this point of `dir`.
    pub fn on_gap(
        &mut self,
        dir: Direction,
        ts: Nanos,
        len: u64,
        reason: GapReason,
        ctx: &mut Ctx<'_>,
    ) {
        ctx.stats.gap_bytes += len;
        if self.mode != Mode::Http {
            return;
        }
        let ir = gap_reason(reason);
        let d = dir.index();
        self.readers[d].had_gap = true;
        match &mut self.readers[d].state {
            State::Idle => {
                self.boundary_loss(dir, ir, ts, ctx);
                self.enter_resync(dir, true, ctx);
            }
            State::Head => {
                if self.readers[d].buf.is_empty() {
                    // The message had not really started (only its timestamp was taken).
                    self.readers[d].msg = None;
                    self.boundary_loss(dir, ir, ts, ctx);
                } else {
                    self.cut_head(dir, ts, ir, ctx);
                }
                self.enter_resync(dir, true, ctx);
            }
            State::Body(reader) => {
                let inside = match reader {
                    BodyReader::Length(remaining) => len.min(*remaining),
                    _ => len,
                };
                let fit = reader.on_gap(len);
                let done = reader.is_done();
                if let Some(msg) = self.readers[d].msg.as_mut() {
                    merge_reason(&mut msg.incomplete, ir);
                    msg.end = ts;
                    if let Some(s) = msg.sink.as_mut() {
                        s.gap(inside);
                    }
                }
                match fit {
                    GapFit::Inside => {
                        if done {
                            self.finish_body(dir, None, ctx);
                        }
                    }
                    GapFit::Beyond { rest } => {
                        self.finish_body(dir, None, ctx);
                        if rest > 0 {
                            self.boundary_loss(dir, ir, ts, ctx);
                            self.enter_resync(dir, true, ctx);
                        }
                    }
                    GapFit::Lost => {
                        self.finish_body(dir, Some(ir), ctx);
                        self.enter_resync(dir, true, ctx);
                    }
                }
            }
            State::Resync => {
                let r = &mut self.readers[d];
                ctx.stats.skip(SkipReason::Resync, r.buf.len());
                r.buf.clear();
                r.at_line_start = true;
            }
            State::Suspended => {}
        }
    }

    /// A gap at a message boundary swallowed the start of a message.
    fn boundary_loss(
        &mut self,
        dir: Direction,
        ir: IncompleteReason,
        ts: Nanos,
        ctx: &mut Ctx<'_>,
    ) {
        match dir {
            Direction::ToServer => self.pair.push_placeholder(ir, ctx),
            Direction::ToClient => {
                self.pair
                    .fail_response(ir, None, ts, AnomalySet::default(), ctx)
            }
        }
    }

    /// A direction ended with FIN.
    pub fn on_half_close(&mut self, dir: Direction, ts: Nanos, ctx: &mut Ctx<'_>) {
        if self.mode == Mode::Http {
            self.finalize_reader(dir, ts, true, false, ctx);
        }
    }

    /// The connection ended; everything still held is emitted.
    pub fn on_close(
        &mut self,
        ts: Nanos,
        reason: CloseReason,
        _reset_by: Option<Direction>,
        ctx: &mut Ctx<'_>,
    ) {
        let reset = reason == CloseReason::Reset;
        if self.mode == Mode::Http {
            let fin = reason == CloseReason::Fin;
            self.finalize_reader(Direction::ToServer, ts, fin, reset, ctx);
            self.finalize_reader(Direction::ToClient, ts, fin, reset, ctx);
        }
        self.pair.close_all(reset, ctx);
    }

    /// Ends what `dir` was reading: a read-to-close body completes on a clean end (`fin`),
    /// anything else is cut.
    fn finalize_reader(
        &mut self,
        dir: Direction,
        ts: Nanos,
        fin: bool,
        reset: bool,
        ctx: &mut Ctx<'_>,
    ) {
        let d = dir.index();
        let cut = if reset {
            IncompleteReason::Reset
        } else {
            IncompleteReason::Truncated
        };
        match &self.readers[d].state {
            State::Idle => {}
            State::Head => {
                let r = &self.readers[d];
                if r.buf.is_empty() {
                    self.readers[d].msg = None;
                } else {
                    let reason = if parser::partial_head_is_invalid(r.kind, &r.buf) {
                        IncompleteReason::Malformed
                    } else {
                        cut
                    };
                    self.cut_head(dir, ts, reason, ctx);
                }
            }
            State::Body(reader) => {
                if reader.is_close_delimited() && fin && !reset {
                    self.finish_body(dir, None, ctx);
                } else {
                    self.finish_body(dir, Some(cut), ctx);
                }
            }
            State::Resync => {
                let n = self.readers[d].buf.len();
                ctx.stats.skip(SkipReason::Resync, n);
            }
            State::Suspended => {
                let n = self.readers[d].buf.len();
                ctx.stats.skip(SkipReason::UpgradePending, n);
            }
        }
        let r = &mut self.readers[d];
        r.buf = BytesMut::new();
        r.msg = None;
        r.state = State::Idle;
    }
}

/// Anomalies that depend on several facts of a head.
fn flag_common(f: &HeadFacts, anomalies: &mut AnomalySet) {
    if f.te_present && f.content_length != ContentLength::Absent && f.te_has_chunked() {
        anomalies.insert(Anomaly::ContentLengthAndChunked);
    }
    if f.codings.unknown || f.codings.too_many {
        anomalies.insert(Anomaly::UnknownContentEncoding);
    }
}
