#![no_std]
//! Types shared by parity's eBPF programs (`parity-ebpf`) and its agent (`parity-agent`).
//!
//! Everything here crosses the kernel/user boundary as raw bytes, so every type is `#[repr(C)]`,
//! has explicit padding fields (zeroed by whoever writes it) and a compile-time check of its size
//! and alignment: a change on one side that the other does not know about fails the build, not a
//! capture. Integers in records are in host byte order; addresses are network-order bytes.
//!
//! What is not here: parsing, conversion to the agent's `Segment`, or anything that allocates.
//! With the `user` feature the types implement `aya::Pod`, so the agent can read and write them
//! through aya's map APIs.

/// Payload bytes carried by one ring-buffer record at most. A packet with more payload (GSO/GRO
/// super-packets: up to 64 KiB on `lo`, more with BIG TCP) is split into several records.
pub const CHUNK_BYTES: u32 = 16 * 1024;

/// Records one packet may produce at most (a bounded loop in the kernel): 32 × 16 KiB = 512 KiB,
/// above the largest BIG TCP packet Linux builds. Chunks beyond it are counted as
/// [`LossReason::ChunkLimit`] and the last written record carries [`RECORD_TRUNCATED`].
pub const MAX_CHUNKS: u32 = 32;

/// Exact `address:port` targets the kernel filter holds at most.
pub const MAX_TARGETS: u32 = 4096;

/// Entries of the packet dedupe table (recently emitted packets, LRU), TC on several interfaces.
pub const SEEN_ENTRIES: u32 = 32 * 1024;

/// Entries of the sender table (flow directions whose sender parity's egress hook sees, LRU),
/// cgroup engine.
pub const SENDER_ENTRIES: u32 = 64 * 1024;

/// Ring buffer of records (header + payload chunk).
pub const MAP_EVENTS: &str = "parity_events";
/// Exact `address:port` targets: [`TargetKey`] → `u8` (1).
pub const MAP_TARGETS: &str = "parity_targets";
/// Port bitmaps: one [`PortBits`] at index 0.
pub const MAP_PORTS: &str = "parity_ports";
/// Per-CPU loss counters, one `u64` per [`LossReason`].
pub const MAP_LOSS: &str = "parity_loss";
/// Packet dedupe table: [`SeenKey`] → `u32` (the hook that emitted it).
pub const MAP_SEEN: &str = "parity_seen";
/// Sender table: [`FlowKey`] → [`SenderMark`].
pub const MAP_SENDERS: &str = "parity_senders";
/// Runtime settings: one [`Settings`] at index 0.
pub const MAP_CONFIG: &str = "parity_config";

/// TC classifier, clsact ingress, interfaces with an Ethernet-style link header (Ethernet, `lo`).
pub const PROG_TC_INGRESS: &str = "parity_tc_in";
/// TC classifier, clsact egress, interfaces with an Ethernet-style link header.
pub const PROG_TC_EGRESS: &str = "parity_tc_out";
/// TC classifier, ingress, interfaces without a link header (tun, wireguard, ip tunnels).
pub const PROG_TC_L3_INGRESS: &str = "parity_tc3_in";
/// TC classifier, egress, interfaces without a link header.
pub const PROG_TC_L3_EGRESS: &str = "parity_tc3_out";
/// cgroup_skb ingress.
pub const PROG_CGROUP_INGRESS: &str = "parity_cg_in";
/// cgroup_skb egress.
pub const PROG_CGROUP_EGRESS: &str = "parity_cg_out";

/// TCP flag bits as they appear in the record's `tcp_flags` (the low byte of the TCP flags).
pub mod tcp {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// `RecordHeader::record_flags`: the chunks of this packet after this record were not written
/// because the packet needed more than [`MAX_CHUNKS`] records; the bytes from
/// `chunk_offset + chunk_len` to `payload_len` are missing.
pub const RECORD_TRUNCATED: u8 = 0x01;

/// An IP address as records and keys hold it: IPv6, or IPv4 as IPv4-mapped IPv6
/// (`::ffff:a.b.c.d`), as four `u32` words holding the 16 address bytes in memory order
/// (network byte order; read them with [`addr_bytes`]). Words rather than bytes so the kernel
/// side copies and compares addresses with 4-byte moves instead of byte loops.
pub type Addr = [u32; 4];

/// The 16 network-order bytes of an [`Addr`].
pub const fn addr_bytes(a: Addr) -> [u8; 16] {
    let (w0, w1, w2, w3) = (
        a[0].to_ne_bytes(),
        a[1].to_ne_bytes(),
        a[2].to_ne_bytes(),
        a[3].to_ne_bytes(),
    );
    [
        w0[0], w0[1], w0[2], w0[3], w1[0], w1[1], w1[2], w1[3], w2[0], w2[1], w2[2], w2[3], w3[0],
        w3[1], w3[2], w3[3],
    ]
}

/// The [`Addr`] of 16 network-order address bytes.
pub const fn addr_from_bytes(b: [u8; 16]) -> Addr {
    [
        u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
        u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
        u32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
        u32::from_ne_bytes([b[12], b[13], b[14], b[15]]),
    ]
}

/// Where a record was taken. The low bit is the direction: 0 ingress, 1 egress.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// TC clsact ingress (packets received by the interface).
    TcIngress = 0,
    /// TC clsact egress (packets sent through the interface).
    TcEgress = 1,
    /// cgroup_skb ingress (packets delivered to a socket in the cgroup).
    CgroupIngress = 2,
    /// cgroup_skb egress (packets sent by a socket in the cgroup).
    CgroupEgress = 3,
}

impl Hook {
    /// The hook a record's `hook` byte names, `None` for an unknown value.
    pub const fn from_u8(v: u8) -> Option<Hook> {
        match v {
            0 => Some(Hook::TcIngress),
            1 => Some(Hook::TcEgress),
            2 => Some(Hook::CgroupIngress),
            3 => Some(Hook::CgroupEgress),
            _ => None,
        }
    }

    /// Is this an egress hook (the packet was being sent)?
    pub const fn is_egress(self) -> bool {
        (self as u8) & 1 == 1
    }

    /// Short name for logs: `tc_ingress`, `tc_egress`, `cgroup_ingress`, `cgroup_egress`.
    pub const fn name(self) -> &'static str {
        match self {
            Hook::TcIngress => "tc_ingress",
            Hook::TcEgress => "tc_egress",
            Hook::CgroupIngress => "cgroup_ingress",
            Hook::CgroupEgress => "cgroup_egress",
        }
    }
}

/// The fixed part of every ring-buffer record; `chunk_len` payload bytes follow it directly.
///
/// One record carries one chunk of one packet's TCP payload, or no payload for a SYN, FIN or RST
/// without data. Pure ACKs (no payload, no SYN/FIN/RST) are not recorded.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC nanoseconds when the hook ran.
    pub ts_ns: u64,
    /// cgroup v2 id of the socket the packet belongs to, 0 when the hook has no socket (TC
    /// ingress before socket lookup).
    pub cgroup_id: u64,
    /// Socket cookie of that socket, 0 when none.
    pub socket_cookie: u64,
    /// Source address ([`Addr`]: IPv6, or IPv4 as IPv4-mapped IPv6 `::ffff:a.b.c.d`).
    pub saddr: Addr,
    /// Destination address, same encoding.
    pub daddr: Addr,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// TCP sequence number of the packet (of its first payload byte, or of the SYN).
    pub seq: u32,
    /// TCP acknowledgment number.
    pub ack: u32,
    /// The packet's whole TCP payload length, over all its chunks.
    pub payload_len: u32,
    /// Offset of this chunk in the packet's payload.
    pub chunk_offset: u32,
    /// Payload bytes following this header.
    pub chunk_len: u32,
    /// Interface index the hook ran on (`__sk_buff.ifindex`).
    pub ifindex: u32,
    /// TCP flags of the packet (see [`tcp`]).
    pub tcp_flags: u8,
    /// [`Hook`] as `u8`.
    pub hook: u8,
    /// 4 or 6.
    pub ip_version: u8,
    /// [`RECORD_TRUNCATED`] or 0.
    pub record_flags: u8,
}

/// Size of [`RecordHeader`] in bytes.
pub const RECORD_HEADER_BYTES: usize = core::mem::size_of::<RecordHeader>();

const _: () = {
    assert!(RECORD_HEADER_BYTES == 88);
    assert!(core::mem::align_of::<RecordHeader>() == 8);
    // The ring buffer hands out 8-byte aligned records; the payload starts right after the header.
    assert!(RECORD_HEADER_BYTES.is_multiple_of(8));
    assert!(core::mem::offset_of!(RecordHeader, saddr) == 24);
    assert!(core::mem::offset_of!(RecordHeader, sport) == 56);
    assert!(core::mem::offset_of!(RecordHeader, seq) == 60);
    assert!(core::mem::offset_of!(RecordHeader, payload_len) == 68);
    assert!(core::mem::offset_of!(RecordHeader, chunk_len) == 76);
    assert!(core::mem::offset_of!(RecordHeader, tcp_flags) == 84);
    assert!(core::mem::offset_of!(RecordHeader, record_flags) == 87);
    assert!(CHUNK_BYTES.is_power_of_two());
};

/// Key of the exact-target map: a server address and port.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct TargetKey {
    /// The address ([`Addr`], the same encoding as records).
    pub addr: Addr,
    /// Port, host byte order.
    pub port: u16,
    /// Zero.
    pub pad: u16,
}

const _: () = {
    assert!(core::mem::size_of::<TargetKey>() == 20);
    assert!(core::mem::align_of::<TargetKey>() == 4);
};

/// Words in one port bitmap (65536 ports / 64).
pub const PORT_WORDS: usize = 1024;

/// The port filter every packet meets first: two bitmaps indexed by port.
///
/// A packet none of whose ports is set in `any` leaves the program after two bit tests; only
/// packets on a target port look further (`wildcard`, then the exact-target hash map).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortBits {
    /// Bit `p` set: some target (exact or wildcard) uses port `p`.
    pub any: [u64; PORT_WORDS],
    /// Bit `p` set: `:p` is a target, any address.
    pub wildcard: [u64; PORT_WORDS],
}

impl PortBits {
    /// No port set.
    pub const EMPTY: PortBits = PortBits {
        any: [0; PORT_WORDS],
        wildcard: [0; PORT_WORDS],
    };

    /// Set `port` in `any`, and in `wildcard` when `wildcard` is true.
    pub fn set(&mut self, port: u16, wildcard: bool) {
        let (word, bit) = Self::position(port);
        if let Some(w) = self.any.get_mut(word) {
            *w |= bit;
        }
        if wildcard {
            if let Some(w) = self.wildcard.get_mut(word) {
                *w |= bit;
            }
        }
    }

    /// Is `port` set in `bits`?
    pub fn test(bits: &[u64; PORT_WORDS], port: u16) -> bool {
        let (word, bit) = Self::position(port);
        bits.get(word).is_some_and(|w| w & bit != 0)
    }

    /// Word index and bit mask of `port`.
    pub const fn position(port: u16) -> (usize, u64) {
        ((port >> 6) as usize, 1u64 << (port & 63))
    }
}

const _: () = {
    assert!(core::mem::size_of::<PortBits>() == 16 * 1024);
    assert!(core::mem::align_of::<PortBits>() == 8);
};

/// Key of the dedupe table: what makes two sightings of a packet the same packet.
///
/// Two sightings of one packet (loopback egress then ingress, a client's and a server's socket
/// under the same cgroup, a packet forwarded between two captured interfaces) agree on all of
/// it; two different packets of a connection differ in at least one field (a retransmission of
/// the same bytes with the same ack is the same packet for parity's purpose).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SeenKey {
    /// Source address ([`Addr`]).
    pub saddr: Addr,
    /// Destination address.
    pub daddr: Addr,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Whole payload length.
    pub payload_len: u32,
    /// TCP flags.
    pub tcp_flags: u8,
    /// Zero.
    pub pad8: u8,
    /// Zero.
    pub pad16: u16,
}

const _: () = {
    assert!(core::mem::size_of::<SeenKey>() == 52);
    assert!(core::mem::align_of::<SeenKey>() == 4);
};

/// One direction of a TCP flow: the key of the sender table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    /// Sender address ([`Addr`]).
    pub saddr: Addr,
    /// Receiver address.
    pub daddr: Addr,
    /// Sender port.
    pub sport: u16,
    /// Receiver port.
    pub dport: u16,
}

const _: () = {
    assert!(core::mem::size_of::<FlowKey>() == 36);
};

/// Value of the sender table: this flow direction's sender is a socket parity's egress hook
/// sees, so its receiver's ingress hook skips the flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SenderMark {
    /// Sequence number of the SYN the egress hook saw on this flow direction.
    pub syn_seq: u32,
    /// 1 when `syn_seq` is known (the mark was made or refreshed by a SYN), else 0.
    pub has_syn: u32,
}

const _: () = {
    assert!(core::mem::size_of::<SenderMark>() == 8);
};

/// `Settings::dedupe`: every packet meets one hook only (TC on one interface; `lo` gets egress
/// only).
pub const DEDUPE_NONE: u32 = 0;
/// `Settings::dedupe` for the cgroup engine: egress marks the flow direction in the sender
/// table; ingress skips marked flow directions (their sender's egress captured them).
pub const DEDUPE_SENDERS: u32 = 1;
/// `Settings::dedupe` for TC on several interfaces: a packet whose [`SeenKey`] was emitted is
/// skipped (a forwarded packet seen on two interfaces).
pub const DEDUPE_PACKETS: u32 = 2;

/// Runtime settings the agent writes before attaching.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Settings {
    /// [`DEDUPE_NONE`], [`DEDUPE_SENDERS`] or [`DEDUPE_PACKETS`].
    pub dedupe: u32,
    /// Wake the agent only once this many bytes wait in the ring (0: on every record). Waking
    /// per record costs a wakeup in the kernel and an epoll round trip in the agent for every
    /// ~100-byte request; the agent also polls on a short timer, so a quiet ring is still
    /// drained.
    pub wakeup_bytes: u32,
}

const _: () = {
    assert!(core::mem::size_of::<Settings>() == 8);
};

/// Why a record was not written. The value is the index into the per-CPU loss array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossReason {
    /// The ring buffer had no room for a record (the agent drains too slowly or the ring is too
    /// small for the traffic): one count per record lost. Its bytes become a gap downstream.
    RingbufFull = 0,
    /// The packet needed more than [`MAX_CHUNKS`] records: one count per chunk not written.
    ChunkLimit = 1,
    /// `bpf_skb_load_bytes` could not copy a chunk's payload (the packet is shorter than its
    /// headers claim): one count per chunk.
    LoadBytes = 2,
    /// A packet of a target flow whose headers could not be read or make no sense (TCP data
    /// offset below 5, payload length negative, IPv6 extension headers deeper than parity
    /// walks): one count per packet.
    Parse = 3,
    /// The first fragment of a fragmented IPv4/IPv6 packet of a target flow (TCP normally never
    /// fragments; parity does not reassemble IP fragments): one count per packet.
    Fragment = 4,
}

/// Number of [`LossReason`]s (length of the loss array).
pub const LOSS_REASON_COUNT: u32 = 5;

impl LossReason {
    /// Every reason, in index order.
    pub const ALL: [LossReason; LOSS_REASON_COUNT as usize] = [
        LossReason::RingbufFull,
        LossReason::ChunkLimit,
        LossReason::LoadBytes,
        LossReason::Parse,
        LossReason::Fragment,
    ];

    /// The name used in metrics and reports.
    pub const fn name(self) -> &'static str {
        match self {
            LossReason::RingbufFull => "ringbuf_full",
            LossReason::ChunkLimit => "chunk_limit",
            LossReason::LoadBytes => "load_bytes",
            LossReason::Parse => "parse",
            LossReason::Fragment => "fragment",
        }
    }
}

const _: () = {
    let mut i = 0;
    while i < LossReason::ALL.len() {
        assert!(LossReason::ALL[i] as u32 == i as u32);
        i += 1;
    }
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` data of integers and byte arrays, no implicit padding (the
    // const assertions above pin sizes that leave no hole), valid for every bit pattern.
    unsafe impl aya::Pod for super::RecordHeader {}
    unsafe impl aya::Pod for super::TargetKey {}
    unsafe impl aya::Pod for super::PortBits {}
    unsafe impl aya::Pod for super::SeenKey {}
    unsafe impl aya::Pod for super::Settings {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::SenderMark {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_bits_set_and_test_every_word_boundary() {
        let mut bits = PortBits::EMPTY;
        for port in [0u16, 63, 64, 65535, 8080] {
            assert!(!PortBits::test(&bits.any, port));
            bits.set(port, port == 8080);
            assert!(PortBits::test(&bits.any, port));
        }
        assert!(PortBits::test(&bits.wildcard, 8080));
        assert!(!PortBits::test(&bits.wildcard, 64));
        assert!(!PortBits::test(&bits.any, 65534));
        assert_eq!(PortBits::position(65535), (1023, 1 << 63));
    }

    #[test]
    fn addresses_round_trip_through_words() {
        let b: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1];
        assert_eq!(addr_bytes(addr_from_bytes(b)), b);
        // Word 2 of an IPv4-mapped address holds the bytes 00 00 ff ff.
        assert_eq!(addr_from_bytes(b)[2].to_ne_bytes(), [0, 0, 0xff, 0xff]);
    }

    #[test]
    fn hooks_round_trip_and_know_their_direction() {
        for v in 0..=255u8 {
            match Hook::from_u8(v) {
                Some(h) => {
                    assert_eq!(h as u8, v);
                    assert_eq!(h.is_egress(), v % 2 == 1, "{}", h.name());
                }
                None => assert!(v > 3),
            }
        }
    }

    #[test]
    fn loss_reason_names_are_unique_and_indexed_in_order() {
        for (i, r) in LossReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
            assert!(LossReason::ALL[..i].iter().all(|o| o.name() != r.name()));
        }
    }
}
