#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]
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
//! exact-target hash map decides the rest ([`packet`]); pure ACKs are skipped (no payload, no
//! SYN/FIN/RST: the reassembler needs none of them); the dedupe table skips packets already
//! emitted when one packet can meet two hooks; [`emit`] writes the records and counts what it
//! could not write.
//!
//! Exactly once: on a loopback interface a packet passes TC egress and then TC ingress, so the
//! agent attaches only egress there. Everywhere else duplicates are possible (the cgroup engine
//! sees a loopback or same-host packet at the sender's egress and again at the receiver's
//! ingress when both sockets are in the subtree; TC on several interfaces sees a forwarded
//! packet on each), and the agent turns on the dedupe table: an LRU hash of `SeenKey` (4-tuple,
//! seq, ack, payload length, flags) filled after a packet was written completely; a packet whose
//! key is present is skipped. A packet not written completely (ring full) is not entered, so its
//! second sighting still captures it.

mod bounds;
mod emit;
mod maps;
mod packet;

use aya_ebpf::{
    bindings::__sk_buff,
    macros::{cgroup_skb, classifier},
    programs::{SkBuffContext, TcContext},
};
use parity_common::{tcp, Hook};

use crate::{
    maps::{CONFIG, SEEN},
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
    let mut p = packet::Packet::empty();
    match packet::parse(skb, l3, &mut p) {
        Parsed::Ignore => return false,
        Parsed::Lost(reason) => {
            emit::count(reason, 1);
            return true;
        }
        Parsed::Target => {}
    }
    if p.key.payload_len == 0 && p.key.tcp_flags & (tcp::SYN | tcp::FIN | tcp::RST) == 0 {
        return false;
    }
    let dedupe = CONFIG.get(0).is_some_and(|s| s.dedupe != 0);
    if dedupe && SEEN.get_ptr(&p.key).is_some() {
        return false;
    }
    if emit::packet(skb, &p, hook) && dedupe {
        // A full table evicts its least recently used entry; a failed insert only risks a
        // duplicate, which the reassembler treats as a retransmission.
        let _ = SEEN.insert(&p.key, &u32::from(hook as u8), 0);
    }
    true
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
