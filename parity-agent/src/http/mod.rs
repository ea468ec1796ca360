//! The HTTP/1.1 stage: reassembled byte streams ([`StreamEvent`]) in, request/response
//! [`Exchange`]s out, with bodies de-chunked, content-decoded, measured and hashed.
//!
//! [`HttpTracker`] keeps one state per connection: a parser per direction and a FIFO of
//! requests waiting for their responses. Parsing is incremental and copes with any split of the
//! stream into events; heads are parsed by `httparse` once complete, bodies are framed by
//! RFC 9112 §6 and decoded by [`decode`]. Every exchange that was started is emitted exactly
//! once: complete, or with an [`IncompleteReason`]; oddities are [`Anomaly`]s. It is not a
//! validator: it accepts what real peers accept and flags what they disagree about.
//!
//! # Framing choices
//!
//! * `Transfer-Encoding` wins over `Content-Length` (`content_length_and_chunked`). A request
//!   whose transfer codings do not end in one `chunked`, or whose `Content-Length` is invalid
//!   (empty, not digits, above `i64::MAX`) or conflicting, is `malformed`: its exchange is
//!   emitted and the client side resynchronises. A response in the same state is read to close
//!   when `chunked` is not final (RFC 9112 §6.3) and is `malformed` with a resync for a bad
//!   `Content-Length`.
//! * `HEAD`, 1xx, 204 and 304 responses have no body; 1xx other than 101 are recorded in
//!   `interim`. `101`, and a 2xx to `CONNECT`, end HTTP on the connection: later bytes are
//!   counted and ignored. A request announcing an upgrade (`Connection: upgrade` + `Upgrade`) or
//!   a `CONNECT` suspends the client side until the server answers; the bytes sent meanwhile are
//!   parsed as HTTP only if the server declines.
//! * Data after a message that announced `Connection: close` (or HTTP/1.0 without keep-alive)
//!   is still parsed, flagged `data_after_close`.
//! * The first client bytes of a connection seen from its start must form a request line;
//!   otherwise (TLS, HTTP/2 preface, anything else) the connection is counted as non-HTTP and
//!   ignored. A connection joined mid-stream starts by resynchronising instead.
//!
//! # Gaps and resynchronisation
//!
//! A gap never silently drops an exchange: whatever it touches is emitted with reason `gap` (or
//! `snaplen`). The heuristics keep requests and responses paired after a loss:
//!
//! * A gap of known length inside a body of known remaining length (`Content-Length`, or the
//!   data of a chunk) is consumed and framing continues; body length counts the missing bytes,
//!   the hash and kept prefix cover only what was seen.
//! * A gap that runs past the end of a `Content-Length` body, or that starts exactly at a
//!   message boundary, swallowed the start of the next message. On the client side a placeholder
//!   request is queued, so the response to the lost request pairs with it; on the server side
//!   the oldest waiting request is answered by a lost response (emitted as `gap`). This is what
//!   keeps, for example, 1000 pipelined requests with one lost response head aligned.
//! * Any other gap (unknown length, inside a chunk-size line, or beyond a chunk) ends the
//!   current message as `gap`; whether further message boundaries were lost is unknown.
//! * After a gap, or garbage where a message should start, the parser scans for the next line
//!   that is a complete request line (client side) or `HTTP/1.x` status line (server side) at a
//!   line start, counting the skipped bytes; the message found carries anomaly `resync`.
//!   Garbage at a request boundary (not after a gap) queues a `malformed` placeholder, because
//!   servers answer unparseable requests (with 400), and that answer must not shift pairing.
//!
//! Placeholders that never got a response carry nothing to report and are counted in
//! [`HttpStats::lost_messages`] instead of being emitted.

mod body;
mod conn;
mod decode;
mod parser;

use std::fmt;

use rustc_hash::FxHashMap;

use crate::config::Limits;
use crate::exchange::{Anomaly, Exchange, IncompleteReason};
use crate::stream::{ConnId, StreamEvent};

use conn::{Conn, Ctx};

/// Bounds of the HTTP stage, from `[limits]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpConfig {
    /// Longest request or response head; longer heads make the exchange `header_cap`.
    pub max_header_bytes: usize,
    /// Decoded body bytes kept per message.
    pub max_body_bytes: usize,
    /// Largest decoded output of one content-encoded body.
    pub max_decoded_bytes: usize,
    /// Requests waiting for their response on one connection.
    pub max_pending_requests: usize,
}

impl HttpConfig {
    /// The HTTP bounds of `l`.
    pub fn from_limits(l: &Limits) -> Self {
        HttpConfig {
            max_header_bytes: l.max_header_bytes.as_usize(),
            max_body_bytes: l.max_body_bytes.as_usize(),
            max_decoded_bytes: l.max_decoded_bytes.as_usize(),
            max_pending_requests: l.max_pending_requests,
        }
    }
}

/// Why bytes of a stream were not parsed as HTTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// Scanning for the next message start after a gap or garbage.
    Resync,
    /// The connection is not HTTP/1.
    NonHttp,
    /// After `101 Switching Protocols` or a successful `CONNECT`.
    Tunnel,
    /// Sent by the client after an upgrade request, beyond what is held until the server
    /// answers, or never answered.
    UpgradePending,
    /// A partial message start cut by the end of the connection, too short to report.
    Truncated,
}

impl SkipReason {
    /// Every reason, in documentation order.
    pub const ALL: [SkipReason; 5] = [
        SkipReason::Resync,
        SkipReason::NonHttp,
        SkipReason::Tunnel,
        SkipReason::UpgradePending,
        SkipReason::Truncated,
    ];

    /// The name used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Resync => "resync",
            SkipReason::NonHttp => "non_http",
            SkipReason::Tunnel => "tunnel",
            SkipReason::UpgradePending => "upgrade_pending",
            SkipReason::Truncated => "truncated",
        }
    }

    /// Position in [`SkipReason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Counters of the HTTP stage. Every drop or oddity is counted here with its reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpStats {
    /// Exchanges emitted.
    pub exchanges: u64,
    /// Emitted exchanges that were complete.
    pub complete: u64,
    /// Emitted incomplete exchanges, indexed like [`IncompleteReason::ALL`].
    pub incomplete: [u64; IncompleteReason::ALL.len()],
    /// Anomalies on emitted exchanges, indexed like [`Anomaly::ALL`].
    pub anomalies: [u64; Anomaly::ALL.len()],
    /// Connections whose first bytes were not HTTP/1 (ignored from then on).
    pub non_http_connections: u64,
    /// Connections switched to another protocol (101, CONNECT).
    pub tunnels: u64,
    /// Times a direction started scanning for the next message start.
    pub resyncs: u64,
    /// Bytes not parsed, indexed like [`SkipReason::ALL`].
    pub skipped_bytes: [u64; SkipReason::ALL.len()],
    /// Bytes reported missing by `Gap` events.
    pub gap_bytes: u64,
    /// Bodies whose content decoding failed (corrupt or truncated data).
    pub decode_errors: u64,
    /// Bodies whose decoded output exceeded `max_decoded_bytes` (decompression bombs refused).
    pub decode_limit_exceeded: u64,
    /// Requests emitted as `no_response` because more than `max_pending_requests` waited.
    pub pending_overflow: u64,
    /// Interim (1xx) codes beyond the 16 recorded per exchange.
    pub interim_dropped: u64,
    /// Messages known to be lost in a gap or garbage that left nothing to report.
    pub lost_messages: u64,
    /// Events for connections never opened (ignored).
    pub unknown_connection_events: u64,
}

impl HttpStats {
    /// Incomplete exchanges emitted with `reason`.
    pub fn incomplete(&self, reason: IncompleteReason) -> u64 {
        self.incomplete[reason.index()]
    }

    /// Exchanges emitted with anomaly `a`.
    pub fn anomaly(&self, a: Anomaly) -> u64 {
        self.anomalies[a.index()]
    }

    /// Bytes skipped for `reason`.
    pub fn skipped(&self, reason: SkipReason) -> u64 {
        self.skipped_bytes[reason.index()]
    }

    /// Bytes skipped for any reason.
    pub fn skipped_total(&self) -> u64 {
        self.skipped_bytes.iter().sum()
    }

    fn skip(&mut self, reason: SkipReason, n: usize) {
        self.skipped_bytes[reason.index()] += n as u64;
    }
}

/// A small set of anomalies (a bit per [`Anomaly`]), for the hot path.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct AnomalySet(u32);

impl AnomalySet {
    /// Adds `a`.
    pub fn insert(&mut self, a: Anomaly) {
        self.0 |= 1 << a.index();
    }

    /// `a` is in the set.
    pub fn contains(self, a: Anomaly) -> bool {
        self.0 & (1 << a.index()) != 0
    }

    /// No anomaly.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Both sets together.
    pub fn union(self, other: AnomalySet) -> AnomalySet {
        AnomalySet(self.0 | other.0)
    }

    /// The anomalies in [`Anomaly::ALL`] order.
    pub fn to_vec(self) -> Vec<Anomaly> {
        if self.is_empty() {
            return Vec::new();
        }
        Anomaly::ALL
            .iter()
            .copied()
            .filter(|a| self.contains(*a))
            .collect()
    }
}

impl fmt::Debug for AnomalySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.to_vec().iter().map(|a| a.as_str()))
            .finish()
    }
}

/// Memory of one tracked connection whatever it holds: its map slot (a hashbrown table is
/// between 7/16 and 7/8 full after growing, and this charges the emptiest case) and its boxed
/// state with the allocator's header. The state is boxed so that the table, which briefly exists
/// twice while it grows, holds pointers rather than the state itself.
pub const CONN_COST: usize =
    (size_of::<ConnId>() + size_of::<Box<Conn>>() + 1) * 16 / 7 + size_of::<Conn>() + 16;

/// The HTTP/1.1 stage for all connections.
pub struct HttpTracker {
    cfg: HttpConfig,
    conns: FxHashMap<ConnId, Box<Conn>>,
    stats: HttpStats,
    mem: usize,
}

impl HttpTracker {
    /// A tracker with the bounds of `cfg`.
    pub fn new(cfg: HttpConfig) -> HttpTracker {
        let cfg = HttpConfig {
            max_pending_requests: cfg.max_pending_requests.max(1),
            ..cfg
        };
        HttpTracker {
            cfg,
            conns: FxHashMap::default(),
            stats: HttpStats::default(),
            mem: 0,
        }
    }

    /// Apply new bounds (a configuration reload); they apply to messages that start afterwards.
    pub fn set_config(&mut self, cfg: HttpConfig) {
        self.cfg = HttpConfig {
            max_pending_requests: cfg.max_pending_requests.max(1),
            ..cfg
        };
    }

    /// Takes one stream event; exchanges completed by it are appended to `out`.
    pub fn on_event(&mut self, ev: StreamEvent, out: &mut Vec<Exchange>) {
        let mut ctx = Ctx {
            cfg: &self.cfg,
            stats: &mut self.stats,
            out,
        };
        match ev {
            StreamEvent::Open {
                conn,
                client,
                server,
                ts,
                mid_stream,
            } => {
                let fresh = Box::new(Conn::new(conn, client, server, mid_stream));
                if let Some(mut old) = self.conns.insert(conn, fresh) {
                    // A reused id: flush what the old state held.
                    self.mem = self.mem.saturating_sub(old.mem_cached());
                    old.on_close(ts, crate::stream::CloseReason::EndOfCapture, None, &mut ctx);
                }
            }
            StreamEvent::Close {
                conn,
                ts,
                reason,
                reset_by,
            } => match self.conns.remove(&conn) {
                Some(mut c) => {
                    self.mem = self.mem.saturating_sub(c.mem_cached());
                    c.on_close(ts, reason, reset_by, &mut ctx);
                }
                None => ctx.stats.unknown_connection_events += 1,
            },
            StreamEvent::Data {
                conn,
                dir,
                ts,
                data,
            } => match self.conns.get_mut(&conn) {
                Some(c) => {
                    let before = c.mem_cached();
                    c.on_data(dir, ts, data, &mut ctx);
                    self.mem = self.mem.saturating_sub(before) + c.refresh_mem();
                }
                None => ctx.stats.unknown_connection_events += 1,
            },
            StreamEvent::Gap {
                conn,
                dir,
                ts,
                len,
                reason,
            } => match self.conns.get_mut(&conn) {
                Some(c) => {
                    let before = c.mem_cached();
                    c.on_gap(dir, ts, len, reason, &mut ctx);
                    self.mem = self.mem.saturating_sub(before) + c.refresh_mem();
                }
                None => ctx.stats.unknown_connection_events += 1,
            },
            StreamEvent::HalfClose { conn, dir, ts } => match self.conns.get_mut(&conn) {
                Some(c) => {
                    let before = c.mem_cached();
                    c.on_half_close(dir, ts, &mut ctx);
                    self.mem = self.mem.saturating_sub(before) + c.refresh_mem();
                }
                None => ctx.stats.unknown_connection_events += 1,
            },
        }
    }

    /// Bytes held for all connections: [`CONN_COST`] for each, buffered heads, kept body bytes
    /// of messages in progress, each connection's request queue (its capacity and the requests
    /// in it, waiting for responses) and estimated decoder state.
    pub fn memory_used(&self) -> usize {
        self.mem + self.conns.len() * CONN_COST
    }

    /// Connections tracked.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// The stage's counters.
    pub fn stats(&self) -> &HttpStats {
        &self.stats
    }
}

#[cfg(test)]
mod tests;
