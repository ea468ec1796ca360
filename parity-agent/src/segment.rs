//! The unit every capture source produces: one TCP segment's header facts and payload.
//!
//! A capture file reader and the eBPF ring-buffer consumer both turn what they read into
//! [`Segment`]s, so everything downstream (reassembly, HTTP, matching, comparison) is the same
//! code for live capture and offline replay. A segment knows nothing about client and server:
//! the reassembler decides roles.

use std::fmt;
use std::net::SocketAddr;

use bytes::Bytes;

/// A point in time as nanoseconds since the Unix epoch.
///
/// Replay uses the capture's own timestamps; live capture converts the kernel's monotonic clock
/// with an offset fixed at start, so wall-clock jumps never move timeouts. Every timeout in the
/// pipeline compares two `Nanos`, never the wall clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Nanos(pub u64);

impl Nanos {
    /// Seconds since the epoch as a float, the form exchange records and reports use.
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e9
    }

    /// `self + d`, saturating.
    pub fn saturating_add(self, d: std::time::Duration) -> Nanos {
        Nanos(
            self.0
                .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        )
    }

    /// Nanoseconds from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Nanos) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// TCP header flags, as the low byte of the TCP flags field.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// No more data from the sender.
    pub const FIN: u8 = 0x01;
    /// Synchronise sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push.
    pub const PSH: u8 = 0x08;
    /// The acknowledgment field is significant.
    pub const ACK: u8 = 0x10;

    /// FIN is set.
    pub fn fin(self) -> bool {
        self.0 & Self::FIN != 0
    }
    /// SYN is set.
    pub fn syn(self) -> bool {
        self.0 & Self::SYN != 0
    }
    /// RST is set.
    pub fn rst(self) -> bool {
        self.0 & Self::RST != 0
    }
    /// ACK is set.
    pub fn ack(self) -> bool {
        self.0 & Self::ACK != 0
    }
}

impl fmt::Debug for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (Self::SYN, "S"),
            (Self::ACK, "."),
            (Self::FIN, "F"),
            (Self::RST, "R"),
            (Self::PSH, "P"),
        ];
        for (bit, name) in names {
            if self.0 & bit != 0 {
                f.write_str(name)?;
            }
        }
        Ok(())
    }
}

/// One TCP segment as seen by a capture source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// When the segment was seen.
    pub ts: Nanos,
    /// Sender address and port.
    pub src: SocketAddr,
    /// Receiver address and port.
    pub dst: SocketAddr,
    /// Sequence number of the first payload byte (of the SYN, for a SYN).
    pub seq: u32,
    /// Acknowledgment number (meaningful when the ACK flag is set).
    pub ack: u32,
    /// TCP flags.
    pub flags: TcpFlags,
    /// The payload bytes the capture holds, starting at `seq`.
    pub payload: Bytes,
    /// Payload bytes that were on the wire after `payload` but not captured (a snap length
    /// shorter than the packet). The reassembler turns them into a gap with reason `snaplen`.
    pub missing_tail: u32,
}

impl Segment {
    /// The number of payload bytes on the wire: captured plus missing.
    pub fn wire_payload_len(&self) -> u64 {
        self.payload.len() as u64 + u64::from(self.missing_tail)
    }
}
