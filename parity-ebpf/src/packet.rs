//! Header parsing and the target filter: from an skb to "a TCP packet of a target flow, here is
//! its 4-tuple, sequence numbers, flags and where its payload is" — or "not ours" as early as
//! possible.
//!
//! Every read goes through `bpf_skb_load_bytes` (correct for non-linear and GSO skbs) at offsets
//! relative to `skb->data`, where the network header starts at `l3` (14 on Ethernet-framed TC
//! hooks, 0 on link-header-less TC hooks and on cgroup_skb). Lengths come from the IP header;
//! BIG TCP / jumbo packets carry 0 there and use `skb->len` instead. Headers are read as
//! word-sized fields (byte arrays make LLVM emit byte-loop `memset`/`memcpy` calls in BPF).

use core::{ffi::c_void, mem::MaybeUninit};

use aya_ebpf::{bindings::__sk_buff, helpers::generated::bpf_skb_load_bytes};
use parity_common::{Addr, LossReason, PortBits, SeenKey, TargetKey, PORT_WORDS};

use crate::{
    bounds,
    maps::{PORTS, TARGETS},
};

const ETH_P_IP: u32 = 0x0800;
const ETH_P_IPV6: u32 = 0x86DD;
const IPPROTO_TCP: u8 = 6;
/// IPv6 extension headers walked at most before giving up on finding TCP.
const MAX_IPV6_EXT: u32 = 6;
/// `::ffff:0:0/96` prefix word 2 of an IPv4-mapped address, as stored (network byte order).
const MAPPED_WORD: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

/// A TCP packet of a target flow.
pub struct Packet {
    /// 4-tuple, seq, ack, payload length and flags (also the dedupe key).
    pub key: SeenKey,
    /// 4 or 6.
    pub ip_version: u8,
    /// Offset of the first payload byte from `skb->data`.
    pub payload_off: u32,
}

/// What parsing decided.
pub enum Parsed {
    /// Not TCP, not a target, or not parseable and not attributable to a target.
    Ignore,
    /// A target packet (or possibly one) that cannot be captured: count it.
    Lost(LossReason),
    /// Capture it.
    Target(Packet),
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Ipv4Hdr {
    ver_ihl: u8,
    tos: u8,
    tot_len: u16,
    id: u16,
    frag_off: u16,
    ttl: u8,
    protocol: u8,
    check: u16,
    saddr: u32,
    daddr: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Ipv6Fixed {
    ver_tc_flow: u32,
    payload_len: u16,
    next_header: u8,
    hop_limit: u8,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct TcpHdr {
    source: u16,
    dest: u16,
    seq: u32,
    ack_seq: u32,
    doff_res: u8,
    flags: u8,
    window: u16,
    check: u16,
    urg_ptr: u16,
}

/// Copy `T` from the packet at `off`.
#[inline(always)]
fn load<T: Copy>(skb: *mut __sk_buff, off: u32) -> Option<T> {
    let mut v = MaybeUninit::<T>::uninit();
    // SAFETY: the helper writes exactly size_of::<T>() bytes into `v` or fails.
    let r = unsafe {
        bpf_skb_load_bytes(
            skb as *const c_void,
            off,
            v.as_mut_ptr() as *mut c_void,
            core::mem::size_of::<T>() as u32,
        )
    };
    if r == 0 {
        // SAFETY: fully written by the helper (T is plain integers).
        Some(unsafe { v.assume_init() })
    } else {
        None
    }
}

/// Is `port` set in a bitmap?
#[inline(always)]
fn bit(words: &[u64; PORT_WORDS], port: u32) -> bool {
    let idx = bounds::mask::<1023>(port >> 6);
    // SAFETY: idx <= 1023 < PORT_WORDS, by the mask the verifier also sees.
    let w = unsafe { *words.as_ptr().add(idx as usize) };
    (w >> (port & 63)) & 1 == 1
}

/// Is either end of the flow a target?
#[inline(always)]
fn is_target(saddr: &Addr, sport: u32, daddr: &Addr, dport: u32) -> bool {
    let Some(bits) = PORTS.get(0) else {
        return false;
    };
    let bits: &PortBits = bits;
    let d_any = bit(&bits.any, dport);
    let s_any = bit(&bits.any, sport);
    if !d_any && !s_any {
        return false;
    }
    if (d_any && bit(&bits.wildcard, dport)) || (s_any && bit(&bits.wildcard, sport)) {
        return true;
    }
    (d_any && exact(daddr, dport)) || (s_any && exact(saddr, sport))
}

#[inline(always)]
fn exact(addr: &Addr, port: u32) -> bool {
    let key = TargetKey {
        addr: *addr,
        port: port as u16,
        pad: 0,
    };
    TARGETS.get_ptr(&key).is_some()
}

/// Network-layer facts both IP versions produce.
struct L3 {
    saddr: Addr,
    daddr: Addr,
    /// Offset of the network header from `skb->data`.
    net_off: u32,
    /// Offset of the TCP header from `skb->data`.
    tcp_off: u32,
    /// Bytes from the network header to the end of the IP payload.
    total: u32,
    /// First fragment of a fragmented packet.
    fragment: bool,
    version: u8,
}

/// Parse the packet at `skb`, whose network header is `l3` bytes into `skb->data`.
#[inline(always)]
pub fn parse(skb: *mut __sk_buff, l3: u32) -> Parsed {
    // SAFETY: reading context fields the program type may read.
    let (proto, skb_len) = unsafe { (u32::from_be((*skb).protocol) >> 16, (*skb).len) };
    let net = match proto {
        ETH_P_IP => ipv4(skb, l3, skb_len),
        ETH_P_IPV6 => ipv6(skb, l3, skb_len),
        _ => return Parsed::Ignore,
    };
    match net {
        Ok(Some(net)) => tcp(skb, &net),
        Ok(None) => Parsed::Ignore,
        Err(reason) => Parsed::Lost(reason),
    }
}

#[inline(always)]
fn ipv4(skb: *mut __sk_buff, l3: u32, skb_len: u32) -> Result<Option<L3>, LossReason> {
    let Some(ip) = load::<Ipv4Hdr>(skb, l3) else {
        return Ok(None);
    };
    if ip.ver_ihl >> 4 != 4 || ip.protocol != IPPROTO_TCP {
        return Ok(None);
    }
    let ihl = u32::from(ip.ver_ihl & 0x0f) * 4;
    if ihl < 20 {
        return Ok(None);
    }
    let frag = u16::from_be(ip.frag_off);
    if frag & 0x1fff != 0 {
        // A later fragment has no TCP header: nothing to attribute it to.
        return Ok(None);
    }
    let tot_len = u32::from(u16::from_be(ip.tot_len));
    let total = if tot_len == 0 {
        // BIG TCP: the super-packet's length does not fit the 16-bit field.
        skb_len.saturating_sub(l3)
    } else {
        tot_len
    };
    Ok(Some(L3 {
        saddr: [0, 0, MAPPED_WORD, ip.saddr],
        daddr: [0, 0, MAPPED_WORD, ip.daddr],
        net_off: l3,
        tcp_off: l3 + ihl,
        total,
        fragment: frag & 0x2000 != 0,
        version: 4,
    }))
}

#[inline(always)]
fn ipv6(skb: *mut __sk_buff, l3: u32, skb_len: u32) -> Result<Option<L3>, LossReason> {
    let Some(ip) = load::<Ipv6Fixed>(skb, l3) else {
        return Ok(None);
    };
    if (u32::from_be(ip.ver_tc_flow) >> 28) != 6 {
        return Ok(None);
    }
    let plen = u32::from(u16::from_be(ip.payload_len));
    let total = if plen == 0 {
        // Jumbogram / BIG TCP: the length is in a hop-by-hop option or only in the skb.
        skb_len.saturating_sub(l3)
    } else {
        40 + plen
    };
    let mut next = ip.next_header;
    let mut off = l3 + 40;
    let mut fragment = false;
    let mut found = false;
    for _ in 0..MAX_IPV6_EXT {
        match next {
            IPPROTO_TCP => {
                found = true;
                break;
            }
            // Hop-by-hop, routing, destination options: length in 8-byte units, excluding the
            // first 8.
            0 | 43 | 60 => {
                let Some(h) = load::<[u8; 2]>(skb, off) else {
                    return Ok(None);
                };
                next = h[0];
                off += (u32::from(h[1]) + 1) * 8;
            }
            // Fragment header: 8 bytes; only the first fragment carries the TCP header.
            44 => {
                let Some(h) = load::<[u8; 4]>(skb, off) else {
                    return Ok(None);
                };
                let frag = u16::from_be_bytes([h[2], h[3]]);
                if frag & 0xfff8 != 0 {
                    return Ok(None);
                }
                fragment = frag & 1 != 0;
                next = h[0];
                off += 8;
            }
            // Authentication header: length in 4-byte units, excluding the first 8 bytes.
            51 => {
                let Some(h) = load::<[u8; 2]>(skb, off) else {
                    return Ok(None);
                };
                next = h[0];
                off += (u32::from(h[1]) + 2) * 4;
            }
            // Anything else (UDP, ICMPv6, ESP, no next header) is not TCP.
            _ => return Ok(None),
        }
    }
    if !found && next != IPPROTO_TCP {
        return if matches!(next, 0 | 43 | 44 | 51 | 60) {
            // Deeper than parity walks: it may be TCP of a target flow; count it.
            Err(LossReason::Parse)
        } else {
            Ok(None)
        };
    }
    // Source and destination addresses follow the fixed header's first 8 bytes.
    let Some([saddr, daddr]) = load::<[Addr; 2]>(skb, l3 + 8) else {
        return Ok(None);
    };
    Ok(Some(L3 {
        saddr,
        daddr,
        net_off: l3,
        tcp_off: off,
        total,
        fragment,
        version: 6,
    }))
}

#[inline(always)]
fn tcp(skb: *mut __sk_buff, l3: &L3) -> Parsed {
    let Some(th) = load::<TcpHdr>(skb, l3.tcp_off) else {
        // Too short for a TCP header: count it only if the ports say it is a target.
        return match load::<[u16; 2]>(skb, l3.tcp_off) {
            Some(p)
                if is_target(
                    &l3.saddr,
                    u32::from(u16::from_be(p[0])),
                    &l3.daddr,
                    u32::from(u16::from_be(p[1])),
                ) =>
            {
                Parsed::Lost(LossReason::Parse)
            }
            _ => Parsed::Ignore,
        };
    };
    let sport = u16::from_be(th.source);
    let dport = u16::from_be(th.dest);
    if !is_target(&l3.saddr, u32::from(sport), &l3.daddr, u32::from(dport)) {
        return Parsed::Ignore;
    }
    if l3.fragment {
        return Parsed::Lost(LossReason::Fragment);
    }
    let doff = u32::from(th.doff_res >> 4) * 4;
    // Headers from the network header to the payload.
    let headers = (l3.tcp_off - l3.net_off) + doff;
    if doff < 20 || headers > l3.total {
        return Parsed::Lost(LossReason::Parse);
    }
    Parsed::Target(Packet {
        key: SeenKey {
            saddr: l3.saddr,
            daddr: l3.daddr,
            sport,
            dport,
            seq: u32::from_be(th.seq),
            ack: u32::from_be(th.ack_seq),
            payload_len: l3.total - headers,
            tcp_flags: th.flags,
            pad8: 0,
            pad16: 0,
        },
        ip_version: l3.version,
        payload_off: l3.tcp_off + doff,
    })
}
