//! Link-layer, IP and TCP header decoding for one captured frame.
//!
//! [`decode`] takes the bytes a capture holds for one packet, its link type and its length on the
//! wire, and finds the TCP segment inside: addresses, ports, sequence numbers, flags, where the
//! payload sits in the frame and how much of it the snap length cut off. It works on a plain
//! byte slice and returns offsets, so the reader slices the payload out of its shared buffer
//! without copying, and so it can be tested and fuzzed alone.
//!
//! It does not verify checksums (captures taken on the sending host carry offloaded, unfilled
//! checksums), reassemble IP fragments, or look at anything but TCP. Every packet it does not
//! turn into a segment gets a [`Skip`] reason, which the reader counts.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;

/// The link-layer framings the reader decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LinkType {
    /// BSD loopback (`DLT_NULL`, 0): a 4-byte address family in the writer's byte order.
    Null,
    /// Ethernet II (1), with any number of 802.1Q / 802.1ad tags.
    Ethernet,
    /// Raw IP with the version taken from the first nibble (101, and the historical 12 and 14).
    Raw,
    /// Raw IPv4 (228).
    Ipv4,
    /// Raw IPv6 (229).
    Ipv6,
    /// OpenBSD loopback (`DLT_LOOP`, 108): a 4-byte address family in network byte order.
    Loop,
    /// Linux cooked capture v1 (113), what `tcpdump -i any` writes on older libpcap.
    LinuxSll,
    /// Linux cooked capture v2 (276), what `tcpdump -i any` writes on newer libpcap.
    LinuxSll2,
}

impl LinkType {
    /// The link type for a pcap/pcapng `LINKTYPE_*` value, `None` when parity cannot decode it.
    pub(crate) fn from_linktype(value: u32) -> Option<LinkType> {
        match value {
            0 => Some(LinkType::Null),
            1 => Some(LinkType::Ethernet),
            12 | 14 | 101 => Some(LinkType::Raw),
            108 => Some(LinkType::Loop),
            113 => Some(LinkType::LinuxSll),
            228 => Some(LinkType::Ipv4),
            229 => Some(LinkType::Ipv6),
            276 => Some(LinkType::LinuxSll2),
            _ => None,
        }
    }
}

/// Why a frame produced no segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Skip {
    /// Not TCP over IP: UDP, ICMP, ARP, LLC, another address family, ...
    NonTcp,
    /// An IPv4 or IPv6 fragment (reassembling IP fragments is out of scope).
    Fragment,
    /// A header is inconsistent or shorter than its own fields say.
    Malformed,
    /// The snap length cut the packet inside the link, IP or TCP header.
    SnappedHeader,
}

/// The TCP segment found in a frame. `payload` indexes the frame passed to [`decode`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TcpPacket {
    pub(crate) src: SocketAddr,
    pub(crate) dst: SocketAddr,
    pub(crate) seq: u32,
    pub(crate) ack: u32,
    pub(crate) flags: u8,
    pub(crate) payload: Range<usize>,
    pub(crate) missing_tail: u32,
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const ETHERTYPE_QINQ_OLD: u16 = 0x9100;

const IPPROTO_TCP: u8 = 6;
const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_DEST_OPTS: u8 = 60;

const AF_INET: u32 = 2;
/// `AF_INET6` as NetBSD/OpenBSD, FreeBSD and Darwin number it in loopback headers.
const AF_INET6_BSD: [u32; 3] = [24, 28, 30];

/// One frame being decoded: its captured bytes and whether the capture cut it short.
struct Frame<'a> {
    bytes: &'a [u8],
    wire_len: usize,
}

impl Frame<'_> {
    fn snapped(&self) -> bool {
        self.bytes.len() < self.wire_len
    }

    /// The captured bytes `range`, or why they are not there: the snap length cut them
    /// (the wire had them) or the packet itself is too short.
    fn get(&self, range: Range<usize>) -> Result<&[u8], Skip> {
        let end = range.end;
        match self.bytes.get(range) {
            Some(b) => Ok(b),
            None if self.snapped() && end <= self.wire_len => Err(Skip::SnappedHeader),
            None => Err(Skip::Malformed),
        }
    }

    fn u16_at(&self, at: usize) -> Result<u16, Skip> {
        let b = self.get(at..at + 2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32_at(&self, at: usize) -> Result<u32, Skip> {
        let b = self.get(at..at + 4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u8_at(&self, at: usize) -> Result<u8, Skip> {
        Ok(self.get(at..at + 1)?[0])
    }
}

/// Finds the TCP segment in `bytes`, a frame of link type `link` that was `wire_len` bytes long
/// on the wire (at least `bytes.len()`).
pub(crate) fn decode(link: LinkType, bytes: &[u8], wire_len: usize) -> Result<TcpPacket, Skip> {
    let f = Frame {
        bytes,
        wire_len: wire_len.max(bytes.len()),
    };
    match link {
        LinkType::Ethernet => {
            let ethertype = f.u16_at(12)?;
            by_ethertype(&f, ethertype, 14)
        }
        LinkType::Null => {
            let b = f.get(0..4)?;
            let le = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            let be = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
            // The family is in the byte order of the host that wrote the file, which the file
            // does not record; families are small, so the order giving a small value is right.
            let family = if le <= 0xff { le } else { be };
            by_family(&f, family, 4)
        }
        LinkType::Loop => {
            let family = f.u32_at(0)?;
            by_family(&f, family, 4)
        }
        LinkType::Raw => match f.u8_at(0)? >> 4 {
            4 => ipv4(&f, 0),
            6 => ipv6(&f, 0),
            _ => Err(Skip::Malformed),
        },
        LinkType::Ipv4 => ipv4(&f, 0),
        LinkType::Ipv6 => ipv6(&f, 0),
        LinkType::LinuxSll => {
            let protocol = f.u16_at(14)?;
            by_ethertype(&f, protocol, 16)
        }
        LinkType::LinuxSll2 => {
            let protocol = f.u16_at(0)?;
            by_ethertype(&f, protocol, 20)
        }
    }
}

/// Decodes what follows an ethertype (or a cooked header's protocol field, which libpcap sets to
/// the VLAN ethertype when it re-inserts a tag the kernel had stripped).
fn by_ethertype(f: &Frame<'_>, mut ethertype: u16, mut at: usize) -> Result<TcpPacket, Skip> {
    // 802.1Q and 802.1ad tags stack; each is a 2-byte TCI and the next ethertype. The loop ends
    // because every tag consumes 4 bytes of a finite frame.
    while matches!(
        ethertype,
        ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_OLD
    ) {
        ethertype = f.u16_at(at + 2)?;
        at += 4;
    }
    match ethertype {
        ETHERTYPE_IPV4 => ipv4(f, at),
        ETHERTYPE_IPV6 => ipv6(f, at),
        _ => Err(Skip::NonTcp),
    }
}

fn by_family(f: &Frame<'_>, family: u32, at: usize) -> Result<TcpPacket, Skip> {
    match family {
        AF_INET => ipv4(f, at),
        fam if AF_INET6_BSD.contains(&fam) => ipv6(f, at),
        _ => Err(Skip::NonTcp),
    }
}

fn ipv4(f: &Frame<'_>, at: usize) -> Result<TcpPacket, Skip> {
    let h = f.get(at..at + 20)?;
    if h[0] >> 4 != 4 {
        return Err(Skip::Malformed);
    }
    let header_len = usize::from(h[0] & 0x0f) * 4;
    if header_len < 20 {
        return Err(Skip::Malformed);
    }
    let wire_ip_len = f.wire_len - at;
    let total_len = match usize::from(u16::from_be_bytes([h[2], h[3]])) {
        // A total length of 0 is what Linux writes for TSO/BIG TCP packets larger than the
        // field can say; the frame length on the wire is the only length there is.
        0 => wire_ip_len,
        n => n,
    };
    if total_len < header_len || total_len > wire_ip_len {
        return Err(Skip::Malformed);
    }
    // MF flag or a non-zero fragment offset.
    if u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0 {
        return Err(Skip::Fragment);
    }
    if h[9] != IPPROTO_TCP {
        return Err(Skip::NonTcp);
    }
    let src = IpAddr::V4(Ipv4Addr::new(h[12], h[13], h[14], h[15]));
    let dst = IpAddr::V4(Ipv4Addr::new(h[16], h[17], h[18], h[19]));
    // The options must be there (or cut by the snap length) before the TCP header is.
    f.get(at..at + header_len)?;
    tcp(f, src, dst, at + header_len, at + total_len)
}

fn ipv6(f: &Frame<'_>, at: usize) -> Result<TcpPacket, Skip> {
    let h = f.get(at..at + 40)?;
    if h[0] >> 4 != 6 {
        return Err(Skip::Malformed);
    }
    let ip_end = match usize::from(u16::from_be_bytes([h[4], h[5]])) {
        // A zero payload length carrying data is a jumbogram or a Linux BIG TCP packet: the
        // frame length on the wire is the only length there is.
        0 => f.wire_len,
        n => at + 40 + n,
    };
    if ip_end > f.wire_len {
        return Err(Skip::Malformed);
    }
    let mut next = h[6];
    let src = ipv6_addr(&h[8..24]);
    let dst = ipv6_addr(&h[24..40]);
    let mut pos = at + 40;
    // Every extension header is at least 8 bytes, so this walks a finite frame in finite steps.
    loop {
        match next {
            IPPROTO_TCP => return tcp(f, src, dst, pos, ip_end),
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS => {
                if pos + 8 > ip_end {
                    return Err(Skip::Malformed);
                }
                let e = f.get(pos..pos + 2)?;
                next = e[0];
                pos += (usize::from(e[1]) + 1) * 8;
                if pos > ip_end {
                    return Err(Skip::Malformed);
                }
            }
            IPV6_FRAGMENT => {
                if pos + 8 > ip_end {
                    return Err(Skip::Malformed);
                }
                let e = f.get(pos..pos + 4)?;
                // An "atomic fragment" (offset 0, no more fragments; RFC 6946) is a whole
                // packet that merely carries a fragment header: decode it. Anything else is a
                // piece of a packet.
                if u16::from_be_bytes([e[2], e[3]]) & 0xfff9 != 0 {
                    return Err(Skip::Fragment);
                }
                next = e[0];
                pos += 8;
            }
            _ => return Err(Skip::NonTcp),
        }
    }
}

fn ipv6_addr(b: &[u8]) -> IpAddr {
    let mut a = [0u8; 16];
    a.copy_from_slice(b);
    IpAddr::V6(Ipv6Addr::from(a))
}

/// Decodes the TCP header at `at`; the IP layer says the segment ends at `ip_end` (which may
/// lie beyond the captured bytes when the snap length cut the packet).
fn tcp(
    f: &Frame<'_>,
    src: IpAddr,
    dst: IpAddr,
    at: usize,
    ip_end: usize,
) -> Result<TcpPacket, Skip> {
    if at + 20 > ip_end {
        return Err(Skip::Malformed);
    }
    let h = f.get(at..at + 20)?;
    let header_len = usize::from(h[12] >> 4) * 4;
    if header_len < 20 || at + header_len > ip_end {
        return Err(Skip::Malformed);
    }
    f.get(at..at + header_len)?;
    let start = at + header_len;
    let captured_end = ip_end.min(f.bytes.len());
    // The IP layer's length governs the end, so Ethernet padding after it is never payload; the
    // part of it the capture does not hold is the missing tail.
    let missing_tail = u32::try_from(ip_end - captured_end).map_err(|_| Skip::Malformed)?;
    Ok(TcpPacket {
        src: SocketAddr::new(src, u16::from_be_bytes([h[0], h[1]])),
        dst: SocketAddr::new(dst, u16::from_be_bytes([h[2], h[3]])),
        seq: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
        ack: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
        flags: h[13],
        payload: start..captured_end,
        missing_tail,
    })
}
