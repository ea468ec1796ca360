#![no_std]
#![no_main]
//! Test fixture, never loaded by the agent: a passive counter of TCP packets to or from one
//! port. The agent's privileged tests attach it after parity's programs on the same hook and
//! check it still sees the traffic, which proves parity lets the next program run.

use core::{ffi::c_void, mem::MaybeUninit};

use aya_ebpf::{
    bindings::__sk_buff,
    helpers::generated::bpf_skb_load_bytes,
    macros::{cgroup_skb, classifier, map},
    maps::{Array, PerCpuArray},
    programs::{SkBuffContext, TcContext},
};

/// Index 0: the port to count (host order).
#[map(name = "parity_tcport")]
static PORT: Array<u32> = Array::with_max_entries(1, 0);

/// Index 0: packets seen by the TC counter; index 1: by the cgroup_skb counter.
#[map(name = "parity_tcounts")]
static COUNTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

#[classifier]
pub fn parity_tcount(ctx: TcContext) -> i32 {
    count(ctx.skb.skb, 14, 0);
    -1
}

#[cgroup_skb]
pub fn parity_cgcount(ctx: SkBuffContext) -> i32 {
    count(ctx.skb.skb, 0, 1);
    1
}

#[inline(always)]
fn load<T: Copy>(skb: *mut __sk_buff, off: u32) -> Option<T> {
    let mut v = MaybeUninit::<T>::uninit();
    // SAFETY: the helper writes size_of::<T>() bytes or fails.
    let r = unsafe {
        bpf_skb_load_bytes(
            skb as *const c_void,
            off,
            v.as_mut_ptr() as *mut c_void,
            core::mem::size_of::<T>() as u32,
        )
    };
    // SAFETY: fully written on success.
    (r == 0).then(|| unsafe { v.assume_init() })
}

#[inline(always)]
fn count(skb: *mut __sk_buff, l3: u32, slot: u32) {
    // SAFETY: context field read.
    let proto = unsafe { u32::from_be((*skb).protocol) >> 16 };
    let ports_off = match proto {
        0x0800 => match load::<[u8; 20]>(skb, l3) {
            Some(ip) if ip[9] == 6 => l3 + u32::from(ip[0] & 0x0f) * 4,
            _ => return,
        },
        0x86DD => match load::<[u8; 40]>(skb, l3) {
            Some(ip) if ip[6] == 6 => l3 + 40,
            _ => return,
        },
        _ => return,
    };
    let Some(p) = load::<[u8; 4]>(skb, ports_off) else {
        return;
    };
    let Some(want) = PORT.get(0) else {
        return;
    };
    let sport = (u32::from(p[0]) << 8) | u32::from(p[1]);
    let dport = (u32::from(p[2]) << 8) | u32::from(p[3]);
    if sport != *want && dport != *want {
        return;
    }
    if let Some(c) = COUNTS.get_ptr_mut(slot) {
        // SAFETY: this CPU's slot.
        unsafe { *c += 1 };
    }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 11] = *b"Apache-2.0\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
