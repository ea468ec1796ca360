//! Writing a target packet into the ring buffer as one or more records, and loss accounting.
//!
//! A packet with payload becomes `ceil(payload / CHUNK_BYTES)` records, at most `MAX_CHUNKS`.
//! Full chunks are reserved in the ring buffer and filled in place by `bpf_skb_load_bytes`
//! (one copy). The shorter tail chunk is assembled in a per-CPU scratch buffer and copied with
//! `bpf_ringbuf_output`, because a reservation's size must be a verifier-time constant and a
//! fixed-size tail would waste ring space on every small request. A SYN, FIN or RST without
//! payload is one header-only record. Each record that cannot be written is counted by reason;
//! the other chunks of the packet are still written, so a loss costs only its own bytes.
//!
//! Packets of more than one chunk go through `bpf_loop`, whose body the verifier checks once;
//! a packet of one record (most requests and small responses) is written directly. Records are
//! committed without waking the agent until `Settings::wakeup_bytes` wait in the ring.

use core::{arch::asm, ffi::c_void, ptr::addr_of_mut};

use aya_ebpf::{
    bindings::{__sk_buff, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::generated::{
        bpf_get_smp_processor_id, bpf_get_socket_cookie, bpf_ktime_get_ns, bpf_loop,
        bpf_skb_cgroup_id, bpf_skb_load_bytes,
    },
};
use parity_common::{
    Hook, LossReason, RecordHeader, CHUNK_BYTES, MAX_CHUNKS, RECORD_HEADER_BYTES, RECORD_TRUNCATED,
};

use crate::{
    bounds,
    maps::{Chunk, Scratch, CONFIG, EVENTS, LOG_PENDING, LOSS, SCRATCH},
    packet::Packet,
};

/// Add `n` to the per-CPU counter of `reason`. The first loss of a reason on a CPU also marks
/// it in `LOG_PENDING`, which [`report_first_loss`] logs once at the end of the program run, so
/// the (large) logging code has one call site per program and never runs per packet.
#[inline(always)]
pub fn count(reason: LossReason, n: u64) {
    let Some(p) = LOSS.get_ptr_mut(reason as u32) else {
        return;
    };
    // SAFETY: `p` points to this CPU's u64 slot of the per-CPU array, valid for the program's
    // run. The add is atomic so a softirq interrupting a process-context run on the same CPU
    // cannot lose counts; the read before it only decides whether to log.
    let before = unsafe { core::ptr::read_volatile(p) };
    unsafe { atomic_add(p, n) };
    if before == 0 {
        if let Some(pending) = LOG_PENDING.get_ptr_mut(0) {
            // SAFETY: this CPU's slot.
            unsafe { *pending = reason as u32 + 1 };
        }
    }
}

/// Log the loss marked by [`count`], if any: at most once per reason and CPU per load.
#[inline(always)]
pub fn report_first_loss() {
    let Some(pending) = LOG_PENDING.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot.
    let marked = unsafe { *pending };
    if marked == 0 {
        return;
    }
    // SAFETY: as above.
    unsafe { *pending = 0 };
    // SAFETY: no arguments, always valid.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    aya_log_ebpf::warn!(
        &(),
        "parity: first capture loss on cpu {}, reason index {} (see parity_common::LossReason); counted in parity_loss from now on",
        cpu,
        marked - 1
    );
}

/// `*p += n` as one BPF atomic instruction (the BPF target has no Rust atomic RMW).
///
/// # Safety
/// `p` must be a valid, 8-byte aligned map value pointer.
#[inline(always)]
unsafe fn atomic_add(p: *mut u64, n: u64) {
    // SAFETY: per the caller.
    unsafe {
        asm!("lock *(u64 *)({p} + 0) += {n}", p = in(reg) p, n = in(reg) n, options(nostack));
    }
}

/// Ring-buffer notification flags for a record: wake the agent only when at least
/// `wakeup_bytes` wait to be read (see `Settings::wakeup_bytes`).
#[inline(always)]
fn wake_flags(wakeup_bytes: u32) -> u64 {
    if EVENTS.query(u64::from(BPF_RB_AVAIL_DATA)) >= u64::from(wakeup_bytes) {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}

/// The configured wakeup threshold.
#[inline(always)]
fn wakeup_bytes() -> u32 {
    CONFIG.get(0).map_or(0, |s| s.wakeup_bytes)
}

/// State shared with the chunk loop's callback (lives on the program's stack).
#[repr(C)]
struct LoopCtx {
    skb: *mut __sk_buff,
    scratch: *mut Scratch,
    payload_off: u32,
    total: u32,
    /// Set when a chunk could not be written.
    failed: u32,
    /// `Settings::wakeup_bytes`.
    wakeup_bytes: u32,
}

/// Write `p` as records. Returns true when every byte of the packet was written (only then may
/// the packet enter the dedupe table: a packet not fully written may be captured again from
/// another hook or a retransmission).
///
/// The chunks are written by `bpf_loop` (Linux ≥ 5.17), whose callback the verifier checks once
/// instead of once per unrolled iteration; the record header template lives in the per-CPU
/// scratch, not on the 512-byte stack.
#[inline(always)]
pub fn packet(skb: *mut __sk_buff, p: &Packet, hook: Hook) -> bool {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        count(LossReason::RingbufFull, 1);
        return false;
    };
    // SAFETY: `scratch` is this CPU's Scratch; helpers valid for TC and cgroup_skb programs;
    // context field reads. Fields are stored one by one: a struct literal would be built on the
    // stack and copied with a byte loop.
    unsafe {
        let base = addr_of_mut!((*scratch).base);
        (*base).ts_ns = bpf_ktime_get_ns();
        (*base).cgroup_id = bpf_skb_cgroup_id(skb);
        (*base).socket_cookie = bpf_get_socket_cookie(skb as *mut c_void);
        (*base).saddr = p.key.saddr;
        (*base).daddr = p.key.daddr;
        (*base).sport = p.key.sport;
        (*base).dport = p.key.dport;
        (*base).seq = p.key.seq;
        (*base).ack = p.key.ack;
        (*base).payload_len = p.key.payload_len;
        (*base).chunk_offset = 0;
        (*base).chunk_len = 0;
        (*base).ifindex = (*skb).ifindex;
        (*base).tcp_flags = p.key.tcp_flags;
        (*base).hook = hook as u8;
        (*base).ip_version = p.ip_version;
        (*base).record_flags = 0;
    }
    let total = p.key.payload_len;
    let wakeup = wakeup_bytes();
    if total == 0 {
        return header_only(scratch, wakeup);
    }
    if total < CHUNK_BYTES {
        // The common case (requests, small responses): one record, no loop.
        return tail_chunk(skb, scratch, p.payload_off, 0, total, wakeup);
    }
    let chunks = total.div_ceil(CHUNK_BYTES);
    let mut ctx = LoopCtx {
        skb,
        scratch,
        payload_off: p.payload_off,
        total,
        failed: 0,
        wakeup_bytes: wakeup,
    };
    // SAFETY: the callback has the signature bpf_loop expects and only uses `ctx` as LoopCtx.
    let ran = unsafe {
        bpf_loop(
            chunks.min(MAX_CHUNKS),
            chunk_callback as *const () as *mut c_void,
            addr_of_mut!(ctx) as *mut c_void,
            0,
        )
    };
    if ran < 0 {
        // Not reachable with a valid count and no flags; account the packet rather than lose
        // it silently.
        count(LossReason::RingbufFull, u64::from(chunks.min(MAX_CHUNKS)));
        return false;
    }
    let mut complete = ctx.failed == 0;
    if chunks > MAX_CHUNKS {
        count(LossReason::ChunkLimit, u64::from(chunks - MAX_CHUNKS));
        complete = false;
    }
    complete
}

/// One iteration of the chunk loop: write chunk `index` of the packet. Returns 0 to go on, 1
/// to stop.
#[inline(never)]
unsafe extern "C" fn chunk_callback(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the LoopCtx `packet` passed to bpf_loop.
    let ctx = unsafe { &mut *(ctx as *mut LoopCtx) };
    let i = index as u32;
    let off = i.wrapping_mul(CHUNK_BYTES);
    if i >= MAX_CHUNKS || off >= ctx.total {
        return 1;
    }
    let remaining = ctx.total - off;
    let flags = if i == MAX_CHUNKS - 1 && remaining > CHUNK_BYTES {
        RECORD_TRUNCATED
    } else {
        0
    };
    let skb_off = ctx.payload_off.wrapping_add(off);
    let ok = if remaining >= CHUNK_BYTES {
        full_chunk(ctx.skb, ctx.scratch, skb_off, off, flags, ctx.wakeup_bytes)
    } else {
        tail_chunk(
            ctx.skb,
            ctx.scratch,
            skb_off,
            off,
            remaining,
            ctx.wakeup_bytes,
        )
    };
    if !ok {
        ctx.failed = 1;
    }
    0
}

/// Copy a record header as 11 volatile 8-byte moves. A plain struct copy between two map
/// pointers becomes a call to a byte-by-byte `memmove` on BPF (LLVM cannot prove they do not
/// overlap, and volatile keeps it from turning the loop back into one).
///
/// # Safety
/// Both pointers valid for a RecordHeader and 8-byte aligned.
#[inline(always)]
unsafe fn copy_header(dst: *mut RecordHeader, src: *const RecordHeader) {
    const WORDS: usize = RECORD_HEADER_BYTES / 8;
    let (d, s) = (dst.cast::<u64>(), src.cast::<u64>());
    for i in 0..WORDS {
        // SAFETY: i < WORDS, within both headers, per the caller.
        unsafe { d.add(i).write_volatile(s.add(i).read_volatile()) };
    }
}

/// A record without payload (SYN, FIN or RST alone): the template itself.
#[inline(always)]
fn header_only(scratch: *mut Scratch, wakeup_bytes: u32) -> bool {
    let Some(mut entry) = EVENTS.reserve::<RecordHeader>(0) else {
        count(LossReason::RingbufFull, 1);
        return false;
    };
    // SAFETY: `scratch` is this CPU's Scratch, its header written by `packet`; the entry is a
    // live reservation of a RecordHeader.
    unsafe { copy_header(entry.as_mut_ptr(), addr_of_mut!((*scratch).base)) };
    entry.submit(wake_flags(wakeup_bytes));
    true
}

/// A chunk of exactly `CHUNK_BYTES`, loaded straight into its ring-buffer reservation.
#[inline(always)]
fn full_chunk(
    skb: *mut __sk_buff,
    scratch: *mut Scratch,
    skb_off: u32,
    chunk_off: u32,
    record_flags: u8,
    wakeup_bytes: u32,
) -> bool {
    let Some(mut entry) = EVENTS.reserve::<Chunk>(0) else {
        count(LossReason::RingbufFull, 1);
        return false;
    };
    let rec: *mut Chunk = entry.as_mut_ptr();
    // SAFETY: `rec` is a live reservation of size_of::<Chunk>() bytes and `scratch` this CPU's
    // Scratch; the helper writes CHUNK_BYTES into `data`, which is exactly that long.
    let loaded = unsafe {
        let hdr = addr_of_mut!((*rec).hdr);
        copy_header(hdr, addr_of_mut!((*scratch).base));
        (*hdr).chunk_offset = chunk_off;
        (*hdr).chunk_len = CHUNK_BYTES;
        (*hdr).record_flags = record_flags;
        bpf_skb_load_bytes(
            skb as *const c_void,
            skb_off,
            addr_of_mut!((*rec).data) as *mut c_void,
            CHUNK_BYTES,
        )
    };
    if loaded != 0 {
        entry.discard(0);
        count(LossReason::LoadBytes, 1);
        return false;
    }
    entry.submit(wake_flags(wakeup_bytes));
    true
}

/// The last chunk, shorter than `CHUNK_BYTES`: assembled in the per-CPU scratch buffer, then
/// copied into the ring with its exact length.
#[inline(always)]
fn tail_chunk(
    skb: *mut __sk_buff,
    scratch: *mut Scratch,
    skb_off: u32,
    chunk_off: u32,
    len: u32,
    wakeup_bytes: u32,
) -> bool {
    // The caller guarantees 1 <= len < CHUNK_BYTES; the clamp restates it for the verifier.
    let len = bounds::len_1_to::<CHUNK_BYTES>(len);
    // SAFETY: `scratch` is this CPU's Scratch; the helper writes `len` <= CHUNK_BYTES bytes into
    // `tail.data`; the output reads the tail header and those bytes.
    unsafe {
        let tail = addr_of_mut!((*scratch).tail);
        let hdr = addr_of_mut!((*tail).hdr);
        copy_header(hdr, addr_of_mut!((*scratch).base));
        (*hdr).chunk_offset = chunk_off;
        (*hdr).chunk_len = len;
        let loaded = bpf_skb_load_bytes(
            skb as *const c_void,
            skb_off,
            addr_of_mut!((*tail).data) as *mut c_void,
            len,
        );
        if loaded != 0 {
            count(LossReason::LoadBytes, 1);
            return false;
        }
        let bytes =
            core::slice::from_raw_parts(tail as *const u8, RECORD_HEADER_BYTES + len as usize);
        if EVENTS
            .output::<[u8]>(bytes, wake_flags(wakeup_bytes))
            .is_err()
        {
            count(LossReason::RingbufFull, 1);
            return false;
        }
    }
    true
}
