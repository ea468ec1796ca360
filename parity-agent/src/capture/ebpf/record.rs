//! Ring-buffer records → [`Segment`]s.
//!
//! A record is a `parity_common::RecordHeader` followed by `chunk_len` payload bytes: one chunk
//! of one packet. Each becomes one segment whose sequence number is that of its first byte, so
//! the reassembler treats a packet's chunks like consecutive segments. The packet's SYN stays on
//! its first chunk, FIN/RST/PSH on its last; a packet cut by the kernel's chunk limit reports its
//! unwritten tail as `missing_tail`. Records arrive from the kernel, but they are still checked:
//! a record that does not hold together is refused (and counted by the caller), never trusted.
//!
//! Payloads are copied out of the ring (its memory is handed back after each record) into
//! shared arena blocks of [`ARENA_BYTES`]; each segment's payload is a `Bytes` slice of a block,
//! so small records cost no allocation each. A segment kept alive keeps its whole block alive: at
//! most `ARENA_BYTES` per retained segment. Chunks of [`OWN_ALLOCATION_BYTES`] or more get their
//! own allocation instead, so big payloads never pin a block.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{Bytes, BytesMut};
use parity_common::{
    addr_bytes, tcp, Hook, RecordHeader, CHUNK_BYTES, RECORD_HEADER_BYTES, RECORD_TRUNCATED,
};

use crate::segment::{Nanos, Segment, TcpFlags};

/// Size of one payload arena block.
pub(super) const ARENA_BYTES: usize = 64 * 1024;
/// Payloads at least this long are copied into their own allocation.
pub(super) const OWN_ALLOCATION_BYTES: usize = 4 * 1024;

/// Why a record was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RecordError {
    /// Shorter than a header.
    Short,
    /// `chunk_len` exceeds the record, the chunk size, or the packet's payload length.
    Length,
    /// Unknown IP version or hook.
    Field,
}

/// Turns records into segments; holds the clock offset and the payload arena.
pub(super) struct Decoder {
    /// CLOCK_REALTIME − CLOCK_MONOTONIC at start, in nanoseconds.
    epoch_offset: i128,
    arena: BytesMut,
}

impl Decoder {
    /// A decoder mapping kernel monotonic timestamps by `epoch_offset` nanoseconds.
    pub fn new(epoch_offset: i128) -> Decoder {
        Decoder {
            epoch_offset,
            arena: BytesMut::new(),
        }
    }

    /// A CLOCK_MONOTONIC reading in the epoch timeline of the segments.
    pub fn to_epoch(&self, monotonic_ns: u64) -> Nanos {
        let t = i128::from(monotonic_ns) + self.epoch_offset;
        Nanos(u64::try_from(t.max(0)).unwrap_or(u64::MAX))
    }

    /// Decode one record.
    pub fn decode(&mut self, rec: &[u8]) -> Result<Segment, RecordError> {
        let hdr = read_header(rec)?;
        let payload = rec
            .get(RECORD_HEADER_BYTES..)
            .and_then(|rest| rest.get(..usize::try_from(hdr.chunk_len).ok()?))
            .ok_or(RecordError::Length)?;
        let end = hdr
            .chunk_offset
            .checked_add(hdr.chunk_len)
            .ok_or(RecordError::Length)?;
        if hdr.chunk_len > CHUNK_BYTES || end > hdr.payload_len {
            return Err(RecordError::Length);
        }
        if Hook::from_u8(hdr.hook).is_none() {
            return Err(RecordError::Field);
        }
        let (saddr, daddr) = (addr_bytes(hdr.saddr), addr_bytes(hdr.daddr));
        let (src_ip, dst_ip) = match hdr.ip_version {
            4 => (ipv4(&saddr), ipv4(&daddr)),
            6 => (
                IpAddr::V6(Ipv6Addr::from(saddr)),
                IpAddr::V6(Ipv6Addr::from(daddr)),
            ),
            _ => return Err(RecordError::Field),
        };

        let truncated = hdr.record_flags & RECORD_TRUNCATED != 0;
        let first = hdr.chunk_offset == 0;
        let last = end == hdr.payload_len || truncated;
        let f = hdr.tcp_flags;
        let mut flags = f & !(tcp::SYN | tcp::FIN | tcp::RST | tcp::PSH);
        if first {
            flags |= f & tcp::SYN;
        }
        if last {
            flags |= f & (tcp::FIN | tcp::RST | tcp::PSH);
        }
        // The SYN occupies one sequence number before the payload: a later chunk of a SYN
        // with data (TCP Fast Open) no longer carries the flag, so its seq says where it lands.
        let seq = if first {
            hdr.seq
        } else {
            let syn = u32::from(f & tcp::SYN != 0);
            hdr.seq.wrapping_add(hdr.chunk_offset).wrapping_add(syn)
        };
        let missing_tail = if truncated { hdr.payload_len - end } else { 0 };

        Ok(Segment {
            ts: self.to_epoch(hdr.ts_ns),
            src: SocketAddr::new(src_ip, hdr.sport),
            dst: SocketAddr::new(dst_ip, hdr.dport),
            seq,
            ack: hdr.ack,
            flags: TcpFlags(flags),
            payload: self.store(payload),
            missing_tail,
        })
    }

    /// Copy `payload` out of the ring into a `Bytes`.
    fn store(&mut self, payload: &[u8]) -> Bytes {
        if payload.is_empty() {
            return Bytes::new();
        }
        if payload.len() >= OWN_ALLOCATION_BYTES {
            return Bytes::copy_from_slice(payload);
        }
        if self.arena.capacity() - self.arena.len() < payload.len() {
            self.arena = BytesMut::with_capacity(ARENA_BYTES);
        }
        self.arena.extend_from_slice(payload);
        self.arena.split().freeze()
    }
}

/// The header at the start of `rec`.
pub(super) fn read_header(rec: &[u8]) -> Result<RecordHeader, RecordError> {
    if rec.len() < RECORD_HEADER_BYTES {
        return Err(RecordError::Short);
    }
    // SAFETY: `rec` holds at least size_of::<RecordHeader>() bytes; RecordHeader is plain
    // `#[repr(C)]` integers and byte arrays without implicit padding, valid for any bytes; the
    // read is unaligned-safe.
    Ok(unsafe { std::ptr::read_unaligned(rec.as_ptr().cast::<RecordHeader>()) })
}

fn ipv4(mapped: &[u8; 16]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        mapped[12], mapped[13], mapped[14], mapped[15],
    ))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use parity_common::addr_from_bytes;
    use proptest::prelude::*;

    /// A record's bytes, as the kernel writes them.
    pub(crate) fn record(hdr: &RecordHeader, payload: &[u8]) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain-data struct we own.
        let head = unsafe {
            std::slice::from_raw_parts(
                (hdr as *const RecordHeader).cast::<u8>(),
                RECORD_HEADER_BYTES,
            )
        };
        let mut v = head.to_vec();
        v.extend_from_slice(payload);
        v
    }

    pub(crate) fn header(
        payload_len: u32,
        chunk_offset: u32,
        chunk_len: u32,
        flags: u8,
    ) -> RecordHeader {
        let mut saddr = [0u8; 16];
        saddr[10] = 0xff;
        saddr[11] = 0xff;
        saddr[12..].copy_from_slice(&[127, 0, 0, 1]);
        let mut daddr = saddr;
        daddr[15] = 2;
        RecordHeader {
            ts_ns: 1_000,
            cgroup_id: 7,
            socket_cookie: 9,
            saddr: addr_from_bytes(saddr),
            daddr: addr_from_bytes(daddr),
            sport: 40000,
            dport: 8080,
            seq: 1000,
            ack: 555,
            payload_len,
            chunk_offset,
            chunk_len,
            ifindex: 1,
            tcp_flags: flags,
            hook: Hook::TcEgress as u8,
            ip_version: 4,
            record_flags: 0,
        }
    }

    fn decode(d: &mut Decoder, rec: &[u8]) -> Segment {
        match d.decode(rec) {
            Ok(s) => s,
            Err(e) => panic!("{e:?}"),
        }
    }

    #[test]
    fn single_chunk_keeps_all_flags_and_maps_time() {
        let mut d = Decoder::new(1_700_000_000_000_000_000);
        let flags = tcp::ACK | tcp::PSH | tcp::FIN;
        let seg = decode(&mut d, &record(&header(5, 0, 5, flags), b"hello"));
        assert_eq!(seg.ts, Nanos(1_700_000_000_000_001_000));
        assert_eq!(seg.src, "127.0.0.1:40000".parse::<SocketAddr>().unwrap());
        assert_eq!(seg.dst, "127.0.0.2:8080".parse::<SocketAddr>().unwrap());
        assert_eq!(seg.seq, 1000);
        assert_eq!(seg.ack, 555);
        assert_eq!(seg.flags, TcpFlags(flags));
        assert_eq!(&seg.payload[..], b"hello");
        assert_eq!(seg.missing_tail, 0);
    }

    #[test]
    fn chunks_of_one_packet_get_consecutive_seq_and_split_flags() {
        let mut d = Decoder::new(0);
        let flags = tcp::ACK | tcp::PSH | tcp::FIN;
        let a = decode(&mut d, &record(&header(10, 0, 6, flags), b"abcdef"));
        let b = decode(&mut d, &record(&header(10, 6, 4, flags), b"ghij"));
        assert_eq!(a.seq, 1000);
        assert_eq!(a.flags, TcpFlags(tcp::ACK));
        assert_eq!(b.seq, 1006);
        assert_eq!(b.flags, TcpFlags(flags));
    }

    #[test]
    fn syn_with_data_split_in_chunks_places_later_chunks_after_the_syn() {
        let mut d = Decoder::new(0);
        let a = decode(&mut d, &record(&header(8, 0, 4, tcp::SYN), b"abcd"));
        let b = decode(&mut d, &record(&header(8, 4, 4, tcp::SYN), b"efgh"));
        assert_eq!((a.seq, a.flags), (1000, TcpFlags(tcp::SYN)));
        assert_eq!((b.seq, b.flags), (1005, TcpFlags(0)));
    }

    #[test]
    fn truncated_packet_reports_missing_tail_and_keeps_fin() {
        let mut d = Decoder::new(0);
        let mut h = header(100, 0, 10, tcp::ACK | tcp::FIN);
        h.record_flags = RECORD_TRUNCATED;
        let seg = decode(&mut d, &record(&h, &[7u8; 10]));
        assert_eq!(seg.missing_tail, 90);
        assert!(seg.flags.fin());
        assert_eq!(seg.wire_payload_len(), 100);
    }

    #[test]
    fn header_only_syn_and_ipv6() {
        let mut d = Decoder::new(0);
        let mut h = header(0, 0, 0, tcp::SYN);
        h.ip_version = 6;
        h.saddr = addr_from_bytes(Ipv6Addr::LOCALHOST.octets());
        h.daddr = addr_from_bytes(Ipv6Addr::LOCALHOST.octets());
        let seg = decode(&mut d, &record(&h, &[]));
        assert_eq!(seg.src, "[::1]:40000".parse::<SocketAddr>().unwrap());
        assert!(seg.flags.syn());
        assert!(seg.payload.is_empty());
    }

    #[test]
    fn malformed_records_are_refused() {
        let mut d = Decoder::new(0);
        assert_eq!(d.decode(&[0u8; 10]).err(), Some(RecordError::Short));
        // chunk_len beyond the record.
        assert_eq!(
            d.decode(&record(&header(10, 0, 10, 0), b"abc")).err(),
            Some(RecordError::Length)
        );
        // chunk beyond the packet's payload.
        assert_eq!(
            d.decode(&record(&header(3, 2, 3, 0), b"abc")).err(),
            Some(RecordError::Length)
        );
        // offset + len overflows.
        assert_eq!(
            d.decode(&record(&header(3, u32::MAX, 3, 0), b"abc")).err(),
            Some(RecordError::Length)
        );
        let mut h = header(3, 0, 3, 0);
        h.ip_version = 5;
        assert_eq!(
            d.decode(&record(&h, b"abc")).err(),
            Some(RecordError::Field)
        );
        let mut h = header(3, 0, 3, 0);
        h.hook = 9;
        assert_eq!(
            d.decode(&record(&h, b"abc")).err(),
            Some(RecordError::Field)
        );
    }

    #[test]
    fn payloads_share_arena_blocks_but_big_ones_do_not() {
        let mut d = Decoder::new(0);
        let a = decode(&mut d, &record(&header(3, 0, 3, 0), b"abc"));
        let b = decode(&mut d, &record(&header(3, 0, 3, 0), b"def"));
        assert_eq!((&a.payload[..], &b.payload[..]), (&b"abc"[..], &b"def"[..]));
        // Same block: b starts right after a.
        assert_eq!(a.payload.as_ptr().wrapping_add(3), b.payload.as_ptr());
        let big = vec![1u8; OWN_ALLOCATION_BYTES];
        let c = decode(
            &mut d,
            &record(&header(big.len() as u32, 0, big.len() as u32, 0), &big),
        );
        assert_eq!(c.payload.len(), OWN_ALLOCATION_BYTES);
        // Filling past a block starts a new one; earlier slices stay intact.
        for _ in 0..(ARENA_BYTES / 3000 + 2) {
            decode(&mut d, &record(&header(3000, 0, 3000, 0), &[2u8; 3000]));
        }
        assert_eq!(&a.payload[..], b"abc");
    }

    #[test]
    fn epoch_mapping_saturates() {
        assert_eq!(Decoder::new(-10).to_epoch(5), Nanos(0));
        assert_eq!(
            Decoder::new(i128::from(u64::MAX)).to_epoch(5),
            Nanos(u64::MAX)
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut d = Decoder::new(0);
            if let Ok(seg) = d.decode(&bytes) {
                prop_assert!(seg.payload.len() <= bytes.len() - RECORD_HEADER_BYTES);
            }
        }

        #[test]
        fn arbitrary_headers_with_payload_never_panic(
            payload_len in any::<u32>(), off in any::<u32>(), len in 0u32..64,
            flags in any::<u8>(), rflags in any::<u8>(), seq in any::<u32>(),
        ) {
            let mut h = header(payload_len, off, len, flags);
            h.record_flags = rflags;
            h.seq = seq;
            let mut d = Decoder::new(0);
            let _ = d.decode(&record(&h, &vec![0u8; len as usize]));
        }
    }
}
