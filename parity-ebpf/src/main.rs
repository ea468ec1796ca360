#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]
// Map helpers take pointers to keys and values; passing them by value would copy them onto the
// 512-byte BPF stack first.
#![allow(clippy::needless_borrows_for_generic_args)]
//! parity's eBPF programs: copy the TCP payload of target flows into a ring buffer.
//!
//! Two attach kinds produce one record format (`parity_common::RecordHeader` + payload chunk):
//!
//! - `tc`: classifiers on clsact ingress and egress of named interfaces (`parity_tc_in`,
//!   `parity_tc_out` for Ethernet-framed interfaces and `lo`; `parity_tc3_in`, `parity_tc3_out`
//!   for interfaces without a link header).
//! - `cgroup`: cgroup_skb ingress and egress (`parity_cg_in`, `parity_cg_out`) on a cgroup v2
//!   directory: every socket in that subtree, including a sidecar's plaintext loopback traffic.
//!
//! The programs are passive: they never modify, drop or redirect a packet and never stop the
//! next program on the hook. On TCX (Linux ≥ 6.6) only `TCX_NEXT` (-1, `TC_ACT_UNSPEC`) lets
//! the next program run (`TC_ACT_OK` would end the chain), so every TC path returns -1; every
//! cgroup_skb path returns 1 (allow).
//!
//! Per packet: the port bitmap drops everything not on a target port after two bit tests; the
//! exact-target hash map decides the rest ([`packet`]); the dedupe of the attach kind applies;
//! pure ACKs are skipped (no payload, no SYN/FIN/RST: the reassembler needs none of them);
//! [`emit`] writes the records and counts what it could not write.
//!
//! Exactly once:
//! - TC on a loopback interface: a packet passes egress and then ingress, so the agent attaches
//!   only egress there.
//! - cgroup: a packet between two sockets of the subtree (a sidecar and its app over loopback,
//!   two pods on one host) passes the sender's egress and the receiver's ingress, and may be
//!   segmented differently at each (a >64 KiB GSO packet on `lo` reaches ingress as two). So
//!   the unit of dedupe is the flow direction, not the packet: egress marks the direction in
//!   the sender table, ingress skips marked directions (see `sender_dedupe`).
//! - TC on several interfaces: a forwarded packet is seen on each; a table of recently emitted
//!   packet keys (4-tuple, seq, ack, payload length, flags) skips the second sighting.

mod bounds;
mod emit;
mod maps;
mod packet;

use aya_ebpf::{
    bindings::__sk_buff,
    macros::{cgroup_skb, classifier},
    programs::{SkBuffContext, TcContext},
};
use parity_common::{tcp, FlowKey, Hook, SenderMark, DEDUPE_NONE, DEDUPE_PACKETS, DEDUPE_SENDERS};

use crate::{
    maps::{CONFIG, SEEN, SENDERS},
    packet::Parsed,
};

/// TCX_NEXT / TC_ACT_UNSPEC: let the next program on the hook decide.
const TC_NEXT: i32 = -1;
/// cgroup_skb: allow the packet.
const CGROUP_ALLOW: i32 = 1;
/// Link header length of Ethernet and loopback interfaces.
const ETH_HLEN: u32 = 14;

#[classifier]
pub fn parity_tc_in(ctx: TcContext) -> i32 {
    capture(ctx.skb.skb, ETH_HLEN, Hook::TcIngress);
    TC_NEXT
}

#[classifier]
pub fn parity_tc_out(ctx: TcContext) -> i32 {
    capture(ctx.skb.skb, ETH_HLEN, Hook::TcEgress);
    TC_NEXT
}

#[classifier]
pub fn parity_tc3_in(ctx: TcContext) -> i32 {
    capture(ctx.skb.skb, 0, Hook::TcIngress);
    TC_NEXT
}

#[classifier]
pub fn parity_tc3_out(ctx: TcContext) -> i32 {
    capture(ctx.skb.skb, 0, Hook::TcEgress);
    TC_NEXT
}

#[cgroup_skb(ingress)]
pub fn parity_cg_in(ctx: SkBuffContext) -> i32 {
    capture(ctx.skb.skb, 0, Hook::CgroupIngress);
    CGROUP_ALLOW
}

#[cgroup_skb(egress)]
pub fn parity_cg_out(ctx: SkBuffContext) -> i32 {
    capture(ctx.skb.skb, 0, Hook::CgroupEgress);
    CGROUP_ALLOW
}

/// Filter, dedupe and emit one packet whose network header is `l3` bytes into `skb->data`; then
/// log a first loss if this run had one.
#[inline(always)]
fn capture(skb: *mut __sk_buff, l3: u32, hook: Hook) {
    if capture_packet(skb, l3, hook) {
        emit::report_first_loss();
    }
}

/// Returns whether the packet touched the loss counters or the ring (so a first loss may be
/// pending); false for the common early exits.
#[inline(always)]
fn capture_packet(skb: *mut __sk_buff, l3: u32, hook: Hook) -> bool {
    let p = match packet::parse(skb, l3) {
        Parsed::Ignore => return false,
        Parsed::Lost(reason) => {
            emit::count(reason, 1);
            return true;
        }
        Parsed::Target(p) => p,
    };
    let dedupe = CONFIG.get(0).map_or(DEDUPE_NONE, |s| s.dedupe);
    // Senders are marked before the pure-ACK filter: an ACK is often a flow's first packet.
    if dedupe == DEDUPE_SENDERS && !sender_dedupe(&p, hook) {
        return false;
    }
    if p.key.payload_len == 0 && p.key.tcp_flags & (tcp::SYN | tcp::FIN | tcp::RST) == 0 {
        return false;
    }
    if dedupe == DEDUPE_PACKETS && SEEN.get_ptr(&p.key).is_some() {
        return false;
    }
    if emit::packet(skb, &p, hook) && dedupe == DEDUPE_PACKETS {
        // Only a completely written packet is entered, so a second sighting of one the ring
        // could not take is still captured. A full table evicts its least recently used entry;
        // a failed insert only risks a duplicate, which the reassembler treats as a
        // retransmission.
        let _ = SEEN.insert(&p.key, &u32::from(hook as u8), 0);
    }
    true
}

/// The cgroup engine's dedupe. A packet between two sockets of the subtree passes the sender's
/// egress and then the receiver's ingress. Egress marks the flow direction (its sender is in
/// scope: egress will see all it sends, whatever the segmentation on the way); ingress skips a
/// marked flow direction. A mark left by an earlier connection on the same 4-tuple is told
/// apart by the SYN: an ingress SYN whose sequence number the mark does not hold comes from a
/// sender egress did not see, so the mark goes and the packet is captured.
///
/// Returns whether to capture the packet.
#[inline(always)]
fn sender_dedupe(p: &packet::Packet, hook: Hook) -> bool {
    let flow = FlowKey {
        saddr: p.key.saddr,
        daddr: p.key.daddr,
        sport: p.key.sport,
        dport: p.key.dport,
    };
    let syn = p.key.tcp_flags & tcp::SYN != 0;
    if hook.is_egress() {
        if syn {
            let mark = SenderMark {
                syn_seq: p.key.seq,
                has_syn: 1,
            };
            let _ = SENDERS.insert(&flow, &mark, 0);
        } else if SENDERS.get_ptr(&flow).is_none() {
            let _ = SENDERS.insert(&flow, &SenderMark::default(), 0);
        }
        return true;
    }
    let Some(mark) = SENDERS.get_ptr(&flow) else {
        return true;
    };
    if syn {
        // SAFETY: a live map value of this program's map.
        let mark = unsafe { *mark };
        if mark.has_syn == 0 || mark.syn_seq != p.key.seq {
            let _ = SENDERS.remove(&flow);
            return true;
        }
    }
    false
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 11] = *b"Apache-2.0\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable by construction; a reachable panic would be an infinite loop, which the
    // verifier rejects at load, so it cannot go unnoticed.
    loop {}
}
