//! The reassembler's output: ordered byte-stream events of TCP connections with known roles.
//!
//! Between reassembly and HTTP parsing a connection is a client→server and a server→client byte
//! stream. Lost or uncaptured bytes are never skipped silently: they are [`StreamEvent::Gap`]s with
//! a length and a reason, so the HTTP stage can mark what they touch as incomplete.

use std::fmt;
use std::net::SocketAddr;

use bytes::Bytes;
use serde::Serialize;

use crate::segment::Nanos;

/// Identifies one TCP connection within a run. Stable and increasing in order of first sight,
/// so replaying the same file numbers connections the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "C{}", self.0)
    }
}

/// Which way bytes flow on a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From the client (the side that sends requests) to the server.
    ToServer,
    /// From the server to the client.
    ToClient,
}

impl Direction {
    /// The other direction.
    pub fn reverse(self) -> Direction {
        match self {
            Direction::ToServer => Direction::ToClient,
            Direction::ToClient => Direction::ToServer,
        }
    }

    /// Index 0 for `ToServer`, 1 for `ToClient`, for per-direction arrays.
    pub fn index(self) -> usize {
        match self {
            Direction::ToServer => 0,
            Direction::ToClient => 1,
        }
    }
}

/// Why bytes are missing from a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GapReason {
    /// Bytes the capture never saw: lost in the kernel (ring buffer full), dropped by the capture
    /// tool, or skipped when the out-of-order buffer filled, the flow went idle or closed with a
    /// hole.
    Gap,
    /// The capture kept only the head of a packet (snap length); the tail is missing.
    Snaplen,
}

impl GapReason {
    /// The name used in records and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            GapReason::Gap => "gap",
            GapReason::Snaplen => "snaplen",
        }
    }
}

/// Why a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// Both sides sent FIN (or one did and the flow then went quiet).
    Fin,
    /// A side sent RST.
    Reset,
    /// No segment for `idle_timeout`.
    Idle,
    /// Evicted to keep the flow table within `flow_memory`.
    Evicted,
    /// The capture file ended (replay) or the agent is shutting down (live).
    EndOfCapture,
}

impl CloseReason {
    /// The name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Fin => "fin",
            CloseReason::Reset => "reset",
            CloseReason::Idle => "idle",
            CloseReason::Evicted => "evicted",
            CloseReason::EndOfCapture => "end_of_capture",
        }
    }
}

/// One event of a reassembled connection, in stream order per direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEvent {
    /// A connection was seen for the first time; its roles are decided.
    Open {
        /// The connection.
        conn: ConnId,
        /// The client's address.
        client: SocketAddr,
        /// The server's address.
        server: SocketAddr,
        /// Time of the first segment.
        ts: Nanos,
        /// The capture joined the connection after its start (no SYN seen from the client).
        mid_stream: bool,
    },
    /// In-order bytes.
    Data {
        /// The connection.
        conn: ConnId,
        /// Which way the bytes flowed.
        dir: Direction,
        /// Time of the segment that completed these bytes.
        ts: Nanos,
        /// The bytes, never empty.
        data: Bytes,
    },
    /// `len` bytes are missing at this point of the stream.
    Gap {
        /// The connection.
        conn: ConnId,
        /// Which way the missing bytes flowed.
        dir: Direction,
        /// Time the gap was declared.
        ts: Nanos,
        /// How many bytes are missing (0 when unknown, e.g. the tail of a flow that went idle).
        len: u64,
        /// Why they are missing.
        reason: GapReason,
    },
    /// A direction ended cleanly with FIN (the other may still send).
    HalfClose {
        /// The connection.
        conn: ConnId,
        /// The direction that sent FIN.
        dir: Direction,
        /// Time of the FIN.
        ts: Nanos,
    },
    /// The connection is over; no more events follow for `conn`.
    Close {
        /// The connection.
        conn: ConnId,
        /// Time of the close.
        ts: Nanos,
        /// Why it ended.
        reason: CloseReason,
        /// For a reset, the side that sent the RST.
        reset_by: Option<Direction>,
    },
}

impl StreamEvent {
    /// The connection the event belongs to.
    pub fn conn(&self) -> ConnId {
        match self {
            StreamEvent::Open { conn, .. }
            | StreamEvent::Data { conn, .. }
            | StreamEvent::Gap { conn, .. }
            | StreamEvent::HalfClose { conn, .. }
            | StreamEvent::Close { conn, .. } => *conn,
        }
    }
}
