//! The maps parity's programs share with the agent. Names are `parity_*` (see `parity_common`'s
//! `MAP_*` constants, which the agent uses to find them) so `bpftool map` tells them apart.

use aya_ebpf::{
    bindings::BPF_F_NO_COMMON_LRU,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use parity_common::{
    FlowKey, PortBits, RecordHeader, SeenKey, SenderMark, Settings, TargetKey, CHUNK_BYTES,
    LOSS_REASON_COUNT, MAX_TARGETS, SEEN_ENTRIES, SENDER_ENTRIES,
};

/// One record with a full chunk: the unit reserved in the ring buffer for full chunks, and the
/// buffer a shorter tail chunk is assembled in before `bpf_ringbuf_output`.
#[repr(C)]
pub struct Chunk {
    pub hdr: RecordHeader,
    pub data: [u8; CHUNK_BYTES as usize],
}

/// Records for the agent. The size here is a placeholder: the agent sets it from
/// `limits.ring_buffer_bytes` at load.
#[map(name = "parity_events")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Exact `address:port` targets.
#[map(name = "parity_targets")]
pub static TARGETS: HashMap<TargetKey, u8> = HashMap::with_max_entries(MAX_TARGETS, 0);

/// Port bitmaps (index 0), the first and cheapest filter.
#[map(name = "parity_ports")]
pub static PORTS: Array<PortBits> = Array::with_max_entries(1, 0);

/// Records not written, per CPU, per `LossReason`.
#[map(name = "parity_loss")]
pub static LOSS: PerCpuArray<u64> = PerCpuArray::with_max_entries(LOSS_REASON_COUNT, 0);

/// Per CPU: a first loss to log at the end of this program run (`LossReason` + 1), or 0.
#[map(name = "parity_logq")]
pub static LOG_PENDING: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Flow directions whose sender parity's egress hook sees (cgroup dedupe). Per-CPU LRU lists
/// avoid a global lock; lookups still see every CPU's entries.
#[map(name = "parity_senders")]
pub static SENDERS: LruHashMap<FlowKey, SenderMark> =
    LruHashMap::with_max_entries(SENDER_ENTRIES, BPF_F_NO_COMMON_LRU);

/// Packets already emitted (TC dedupe across interfaces). Per-CPU LRU lists as above.
#[map(name = "parity_seen")]
pub static SEEN: LruHashMap<SeenKey, u32> =
    LruHashMap::with_max_entries(SEEN_ENTRIES, BPF_F_NO_COMMON_LRU);

/// Runtime settings (index 0).
#[map(name = "parity_config")]
pub static CONFIG: Array<Settings> = Array::with_max_entries(1, 0);

/// Per-CPU working memory of one packet's emission.
#[repr(C)]
pub struct Scratch {
    /// The packet's record header; each chunk's header is a copy with its offset and length.
    pub base: RecordHeader,
    /// The tail chunk's record, assembled before `bpf_ringbuf_output`.
    pub tail: Chunk,
}

/// Per-CPU scratch (index 0).
#[map(name = "parity_scratch")]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);
