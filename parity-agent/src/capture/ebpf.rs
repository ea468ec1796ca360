//! Live capture with eBPF: load parity's kernel programs, fill their target filter, attach them,
//! and turn the records they write into [`Segment`]s. It is not a reassembler or a parser: it
//! delivers every captured TCP segment of the target flows exactly once, in ring-buffer order,
//! and counts what the kernel could not deliver.
//!
//! # Engines
//!
//! - `tc` — classifiers on the ingress and egress of named interfaces, attached through TCX
//!   links (Linux ≥ 6.6) placed first on the hook, so another program's verdict never hides a
//!   packet from parity. Loopback interfaces get egress only (see *exactly once*).
//! - `cgroup` — cgroup_skb ingress and egress on a cgroup v2 directory (default: the host's
//!   cgroup v2 root, found in `/proc/mounts`: `/sys/fs/cgroup` on pure v2 hosts,
//!   `/sys/fs/cgroup/unified` on hybrid ones). On a pod's or service's subtree it sees exactly
//!   that workload's sockets, including a sidecar's plaintext loopback traffic.
//!
//! Kernel requirements: Linux ≥ 6.6 for `tc` (TCX links), ≥ 5.17 for `cgroup` (`bpf_loop`;
//! cgroup links need 5.7, ring buffers 5.8). A missing feature is reported as
//! [`LiveError::KernelFeature`], naming it.
//!
//! Both are passive: every path of the classifiers returns `TCX_NEXT` (-1; `TC_ACT_OK` would
//! end the TCX chain), every cgroup_skb path returns 1. Both use fd-based links: when the agent
//! exits, even by SIGKILL, the kernel detaches everything; nothing is pinned. [`LiveCapture`]'s
//! `Drop` (or [`LiveCapture::detach`]) detaches earlier.
//!
//! # In the kernel
//!
//! Per packet: a port bitmap (two bit tests) rejects everything not on a target port; a hash map
//! of exact `address:port` targets decides the rest (IPv4 and IPv6; IPv4 as IPv4-mapped IPv6 in
//! keys and records); pure ACKs are skipped (no payload, no SYN/FIN/RST: the reassembler needs
//! none). A packet's payload, GSO/GRO super-packets included, is copied in chunks of
//! [`CHUNK_BYTES`] (16 KiB), one ring-buffer record each, up to [`MAX_CHUNKS`] (512 KiB per
//! packet); SYN/FIN/RST without payload are header-only records.
//!
//! # Record layout (`parity_common::RecordHeader`, 88 bytes, 8-aligned, host byte order)
//!
//! | offset | field | |
//! |---|---|---|
//! | 0 | `ts_ns: u64` | `bpf_ktime_get_ns` (CLOCK_MONOTONIC) |
//! | 8 | `cgroup_id: u64` | cgroup v2 id of the packet's socket, 0 without one |
//! | 16 | `socket_cookie: u64` | socket cookie, 0 without a socket |
//! | 24 | `saddr: [u32; 4]` | IPv6, or IPv4-mapped IPv6; the 16 network-order bytes as four words (`parity_common::Addr`) |
//! | 40 | `daddr: [u32; 4]` | |
//! | 56 | `sport: u16`, 58 `dport: u16` | |
//! | 60 | `seq: u32`, 64 `ack: u32` | of the packet |
//! | 68 | `payload_len: u32` | the packet's whole payload |
//! | 72 | `chunk_offset: u32`, 76 `chunk_len: u32` | this chunk; `chunk_len` bytes follow |
//! | 80 | `ifindex: u32` | |
//! | 84 | `tcp_flags: u8`, 85 `hook: u8`, 86 `ip_version: u8`, 87 `record_flags: u8` | hook: 0 tc ingress, 1 tc egress, 2 cgroup ingress, 3 cgroup egress; `record_flags` bit 0: chunk limit hit after this record |
//!
//! Full 16 KiB chunks are reserved in the ring and filled in place; the shorter tail chunk goes
//! through a per-CPU scratch buffer and `bpf_ringbuf_output`, so records are exactly as long as
//! their payload. cgroup id and socket cookie are in the records but `Segment` has no field for
//! them yet.
//!
//! # Exactly once
//!
//! - `tc` on a loopback interface: a packet leaves through egress and comes back through
//!   ingress; only egress is attached.
//! - `cgroup`: a packet between two sockets of the subtree (a sidecar and its application over
//!   loopback, two pods of one host, or anything at the default root) passes the sender's egress
//!   and then the receiver's ingress, and need not look the same at both: on `lo` a GSO packet
//!   larger than 64 KiB leaves as one skb and arrives as two. So the kernel dedupes per flow
//!   direction, not per packet: the egress hook marks the direction in an LRU *sender table*
//!   (its sender is a socket in scope, so egress sees everything it sends); the ingress hook
//!   skips marked directions. A mark left by an earlier connection on the same 4-tuple is
//!   recognised by the SYN sequence number it holds: an ingress SYN the mark does not know comes
//!   from a sender egress did not see, so the mark is dropped and the flow captured at ingress.
//!   Packets a socket-less kernel path sends (RST or ACK from a TIME_WAIT socket) are seen at
//!   egress only when that path's cgroup (the root) is in scope.
//! - `tc` on several interfaces: a forwarded packet is seen on each; the kernel keeps an LRU
//!   table of recently emitted packet keys (4-tuple, seq, ack, payload length, flags), entered
//!   once a packet was written completely, and skips a packet whose key is present. A packet
//!   resegmented between the two interfaces yields overlapping duplicates, which the reassembler
//!   treats as retransmissions.
//!
//! # Loss
//!
//! Every record the kernel could not write is counted per CPU by reason
//! (`parity_common::LossReason`: `ringbuf_full`, `chunk_limit`, `load_bytes`, `parse`,
//! `fragment`); [`LiveCapture::dropped`] sums them, plus `record_malformed` for records this side
//! refused. The missing bytes reach the reassembler as holes, then gaps: loss is never silent.
//!
//! # Time
//!
//! Kernel timestamps are CLOCK_MONOTONIC. `start` fixes `CLOCK_REALTIME − CLOCK_MONOTONIC` once,
//! so segment times read as epoch time but never jump with the wall clock; [`LiveCapture::now`]
//! is the same clock for timeouts.

mod host;
mod record;
mod targets;

use std::collections::HashSet;
use std::io;
use std::path::PathBuf;

use aya::maps::{Array, HashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::tc::TcAttachOptions;
use aya::programs::{
    CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, LinkOrder, ProgramError, SchedClassifier,
    TcAttachType,
};
use aya::{Ebpf, EbpfLoader};
use aya_log::EbpfLogger;
use parity_common::{
    LossReason, PortBits, Settings, TargetKey, CHUNK_BYTES, DEDUPE_NONE, DEDUPE_PACKETS,
    DEDUPE_SENDERS, MAP_CONFIG, MAP_EVENTS, MAP_LOSS, MAP_PORTS, MAP_SEEN, MAP_SENDERS,
    MAP_TARGETS, MAX_CHUNKS, MAX_TARGETS, PROG_CGROUP_EGRESS, PROG_CGROUP_INGRESS, PROG_TC_EGRESS,
    PROG_TC_INGRESS, PROG_TC_L3_EGRESS, PROG_TC_L3_INGRESS, RECORD_HEADER_BYTES,
};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::config::{CaptureConfig, Engine, Limits, ServerAddr};
use crate::segment::{Nanos, Segment};

use self::host::{Framing, Interface};
use self::record::Decoder;
use self::targets::TargetSet;

/// The compiled eBPF object (built by `build.rs` from the `parity-ebpf` crate).
static PROGRAMS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/parity"));

/// Smallest ring buffer: room for several full-chunk records.
pub const MIN_RING_BYTES: u64 = 64 * 1024;
/// Largest ring buffer parity creates.
pub const MAX_RING_BYTES: u64 = 1 << 30;
/// The kernel wakes the agent once this fraction of the ring holds records.
pub const WAKEUP_FRACTION: u64 = 16;
/// A ring with fewer records than wake the agent is drained this often.
pub const POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);
/// Records drained per [`LiveCapture::next_batch`] call at most, so one call never monopolises
/// the caller while the kernel keeps writing.
pub const MAX_BATCH_RECORDS: usize = 4096;

const PRIVILEGE_HINT: &str =
    "run as root or with CAP_BPF+CAP_NET_ADMIN+CAP_PERFMON, e.g. through sudo";

/// Why live capture could not start or continue.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// The kernel refused for lack of privileges.
    #[error("{what}: permission denied ({source}); {PRIVILEGE_HINT}")]
    NotPrivileged {
        /// What was refused.
        what: String,
        /// The kernel's error.
        source: io::Error,
    },
    /// The kernel lacks a feature live capture needs.
    #[error("{what}: this kernel lacks {feature} ({source}); {hint}")]
    KernelFeature {
        /// What failed.
        what: String,
        /// The missing feature.
        feature: &'static str,
        /// What to do instead.
        hint: &'static str,
        /// The kernel's error.
        source: io::Error,
    },
    /// `[capture] interfaces` names an interface that does not exist here.
    #[error("[capture] interfaces: no network interface named {name:?} in this network namespace (see `ip link`)")]
    NoSuchInterface {
        /// The name as configured.
        name: String,
    },
    /// `engine = "tc"` without interfaces.
    #[error("[capture] interfaces is empty: name the interfaces to capture on (e.g. [\"lo\"]) or use engine = \"cgroup\"")]
    NoInterfaces,
    /// An interface whose link type the TC programs cannot parse.
    #[error("[capture] interfaces: {name:?} has link type {link_type} (ARPHRD), which parity cannot parse; capture on an Ethernet, loopback or IP-only interface, or use engine = \"cgroup\"")]
    UnsupportedInterface {
        /// The interface.
        name: String,
        /// Its `ARPHRD_*` type.
        link_type: u32,
    },
    /// `[capture] cgroup` does not exist.
    #[error("[capture] cgroup: {} does not exist or is not a directory", path.display())]
    CgroupNotFound {
        /// The path.
        path: PathBuf,
    },
    /// `[capture] cgroup` is not on a cgroup v2 filesystem.
    #[error("[capture] cgroup: {} is not a cgroup v2 directory (cgroup_skb needs the unified hierarchy; see `grep cgroup2 /proc/mounts`)", path.display())]
    NotCgroupV2 {
        /// The path.
        path: PathBuf,
    },
    /// No cgroup v2 hierarchy is mounted and no `[capture] cgroup` was given.
    #[error("[capture] engine = \"cgroup\": no cgroup2 filesystem in /proc/mounts; mount one (mount -t cgroup2 none /sys/fs/cgroup/unified) or set [capture] cgroup")]
    NoCgroupV2,
    /// No targets: the capture would see nothing.
    #[error("no capture targets: add [capture] targets or a [[pair]]")]
    NoTargets,
    /// More exact targets than the kernel filter holds.
    #[error("{count} exact capture targets, more than the {max} the kernel filter holds; use :port targets")]
    TooManyTargets {
        /// Exact targets given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// `start` was called outside a Tokio runtime with I/O enabled.
    #[error("live capture must start inside a Tokio runtime with I/O enabled")]
    NoRuntime,
    /// The kernel verifier rejected a program (a bug in parity or an unusual kernel).
    #[error("the kernel refused program {program} ({source}); verifier log:\n{log}")]
    Verifier {
        /// The program.
        program: &'static str,
        /// The kernel's error.
        source: io::Error,
        /// The verifier's output.
        log: String,
    },
    /// Any other eBPF operation failed.
    #[error("{what}: {source}")]
    Ebpf {
        /// What failed.
        what: String,
        /// aya's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An I/O error outside the BPF syscalls.
    #[error("{what}: {source}")]
    Io {
        /// What failed.
        what: String,
        /// The error.
        source: io::Error,
    },
}

/// Counters of what the agent side received (loss is in [`LiveCapture::dropped`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LiveCounters {
    /// Records turned into segments.
    pub records: u64,
    /// Payload bytes in them.
    pub payload_bytes: u64,
    /// Records refused as malformed.
    pub malformed: u64,
}

/// A running live capture. See the module documentation.
pub struct LiveCapture {
    ring: AsyncFd<RingBuf<MapData>>,
    logs: Option<AsyncFd<EbpfLogger<&'static dyn log::Log>>>,
    /// Owns the programs, their links and the other maps; dropping it detaches everything.
    ebpf: Ebpf,
    decoder: Decoder,
    targets: TargetSet,
    counters: LiveCounters,
    attached: Vec<String>,
}

impl LiveCapture {
    /// Load the programs, fill the target filter and attach as `cfg` says. The ring buffer is
    /// `limits.ring_buffer_bytes` rounded up to a power-of-two number of pages (at least
    /// [`MIN_RING_BYTES`], at most [`MAX_RING_BYTES`]). Must run inside a Tokio runtime with
    /// I/O and time enabled.
    pub fn start(cfg: &CaptureConfig, limits: &Limits) -> Result<LiveCapture, LiveError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(LiveError::NoRuntime);
        }
        let targets = TargetSet::build(&cfg.targets)?;
        let plan = Plan::resolve(cfg)?;
        host::raise_memlock();

        let ring_bytes = ring_size(limits.ring_buffer_bytes.bytes(), page_size());
        let ring_entries = u32::try_from(ring_bytes).unwrap_or(u32::MAX);
        let mut loader = EbpfLoader::new();
        loader.map_max_entries(MAP_EVENTS, ring_entries);
        // The dedupe table this plan does not use shrinks to the minimum (LRU maps preallocate).
        match plan.dedupe() {
            DEDUPE_SENDERS => loader.map_max_entries(MAP_SEEN, 1),
            DEDUPE_PACKETS => loader.map_max_entries(MAP_SENDERS, 1),
            _ => loader
                .map_max_entries(MAP_SEEN, 1)
                .map_max_entries(MAP_SENDERS, 1),
        };
        let mut ebpf = loader
            .load(PROGRAMS)
            .map_err(|e| classify("loading parity's eBPF maps", e))?;
        let logs = match EbpfLogger::init(&mut ebpf) {
            Ok(logger) => Some(watch(logger, "the eBPF log ring")?),
            Err(e) => {
                tracing::debug!("eBPF logging unavailable: {e}");
                None
            }
        };

        let settings = Settings {
            dedupe: plan.dedupe(),
            wakeup_bytes: u32::try_from(ring_bytes / WAKEUP_FRACTION).unwrap_or(u32::MAX),
        };
        let mut config: Array<&mut MapData, Settings> = map_mut(&mut ebpf, MAP_CONFIG)?;
        config
            .set(0, settings, 0)
            .map_err(|e| classify("writing parity_config", e))?;
        let nothing = TargetSet {
            keys: Vec::new(),
            ports: Box::new(PortBits::EMPTY),
        };
        write_targets(&mut ebpf, &nothing, &targets)?;

        let ring_map = ebpf
            .take_map(MAP_EVENTS)
            .ok_or_else(|| missing(MAP_EVENTS))?;
        let ring = RingBuf::try_from(ring_map).map_err(|e| classify("opening parity_events", e))?;
        let ring = watch(ring, "the eBPF ring buffer")?;

        let attached = plan.attach(&mut ebpf)?;
        let epoch_offset = i128::from(host::clock_ns(libc::CLOCK_REALTIME))
            - i128::from(host::clock_ns(libc::CLOCK_MONOTONIC));
        tracing::info!(
            attached = %attached.join(", "),
            ring_bytes,
            exact_targets = targets.keys.len(),
            dedupe = match settings.dedupe {
                DEDUPE_SENDERS => "senders",
                DEDUPE_PACKETS => "packets",
                _ => "none",
            },
            "live capture started"
        );
        Ok(LiveCapture {
            ring,
            logs,
            ebpf,
            decoder: Decoder::new(epoch_offset),
            targets,
            counters: LiveCounters::default(),
            attached,
        })
    }

    /// Wait until records are available, then append up to [`MAX_BATCH_RECORDS`] of them to
    /// `out` as segments (one per record, in ring order). Cancel-safe: records are only taken
    /// from the ring synchronously, after the wait.
    ///
    /// The kernel wakes this side only once `1/WAKEUP_FRACTION` of the ring is filled (waking
    /// per record would cost an epoll round trip per small request); a quieter ring is drained
    /// every [`POLL_INTERVAL`], which bounds the added latency.
    pub async fn next_batch(&mut self, out: &mut Vec<Segment>) -> Result<(), LiveError> {
        loop {
            let logs = self.logs.as_mut();
            tokio::select! {
                biased;
                guard = self.ring.readable_mut() => {
                    let mut guard = guard.map_err(|source| LiveError::Io {
                        what: "waiting on the eBPF ring buffer".to_string(),
                        source,
                    })?;
                    let (taken, empty) = drain(
                        guard.get_inner_mut(),
                        &mut self.decoder,
                        &mut self.counters,
                        out,
                    );
                    if empty {
                        guard.clear_ready();
                    }
                    if taken > 0 {
                        return Ok(());
                    }
                }
                () = tokio::time::sleep(POLL_INTERVAL) => {
                    let (taken, _) = drain(
                        self.ring.get_mut(),
                        &mut self.decoder,
                        &mut self.counters,
                        out,
                    );
                    if taken > 0 {
                        return Ok(());
                    }
                }
                guard = readable_logs(logs) => {
                    if let Ok(mut guard) = guard {
                        guard.get_inner_mut().flush();
                        guard.clear_ready();
                    }
                }
            }
        }
    }

    /// Take what the ring holds right now, without waiting: up to [`MAX_BATCH_RECORDS`] records
    /// appended to `out` as segments. Returns `true` when the ring is empty afterwards.
    pub fn take_ready(&mut self, out: &mut Vec<Segment>) -> bool {
        let (_, empty) = drain(
            self.ring.get_mut(),
            &mut self.decoder,
            &mut self.counters,
            out,
        );
        empty
    }

    /// Replace the targets (SIGHUP reload). A target in both lists is never dropped; during the
    /// switch a packet of a removed or added target may be filtered either way. On error the
    /// previous targets may be partly replaced; calling again with a valid list repairs that.
    pub fn set_targets(&mut self, targets: &[ServerAddr]) -> Result<(), LiveError> {
        let new = TargetSet::build(targets)?;
        if let Err(e) = write_targets(&mut self.ebpf, &self.targets, &new) {
            // The kernel map may now hold keys of both lists: remember them all, so the next
            // reload removes what it does not keep.
            let mut keys = self.targets.keys.clone();
            keys.extend_from_slice(&new.keys);
            keys.sort_unstable_by_key(|k| (k.addr, k.port));
            keys.dedup();
            self.targets.keys = keys;
            return Err(e);
        }
        self.targets = new;
        tracing::info!(
            exact_targets = self.targets.keys.len(),
            "capture targets replaced"
        );
        Ok(())
    }

    /// Records lost so far, per reason, summed over CPUs: the kernel's reasons in
    /// `parity_common::LossReason` order, then `record_malformed` (refused by this side).
    pub fn dropped(&self) -> Vec<(&'static str, u64)> {
        let mut out: Vec<(&'static str, u64)> =
            LossReason::ALL.iter().map(|r| (r.name(), 0)).collect();
        match self
            .ebpf
            .map(MAP_LOSS)
            .map(PerCpuArray::<&MapData, u64>::try_from)
        {
            Some(Ok(loss)) => {
                for (reason, slot) in LossReason::ALL.iter().zip(out.iter_mut()) {
                    match loss.get(&(*reason as u32), 0) {
                        Ok(per_cpu) => {
                            slot.1 = per_cpu.iter().fold(0u64, |a, v| a.saturating_add(*v))
                        }
                        Err(e) => tracing::warn!("reading parity_loss[{}]: {e}", reason.name()),
                    }
                }
            }
            Some(Err(e)) => tracing::warn!("opening parity_loss: {e}"),
            None => tracing::warn!("parity_loss map missing"),
        }
        out.push(("record_malformed", self.counters.malformed));
        out
    }

    /// What this side received so far.
    pub fn counters(&self) -> LiveCounters {
        self.counters
    }

    /// What is attached, e.g. `tc egress lo`, for logs and status pages.
    pub fn attachments(&self) -> &[String] {
        &self.attached
    }

    /// The loaded programs as (name, kernel program id), to find them in `bpftool` output.
    pub fn programs(&self) -> Vec<(String, u32)> {
        self.ebpf
            .programs()
            .filter_map(|(name, p)| p.info().ok().map(|info| (name.to_string(), info.id())))
            .collect()
    }

    /// The monotonic clock, in the epoch-converted timeline of the segments.
    pub fn now(&self) -> Nanos {
        self.decoder.to_epoch(host::clock_ns(libc::CLOCK_MONOTONIC))
    }

    /// Stop capturing for shutdown: detach and unload every program (the kernel stops writing
    /// records), then take whatever the ring buffer still holds, in ring order. The maps stay
    /// readable, so [`LiveCapture::dropped`] still reports the final loss counters.
    pub fn stop(&mut self) -> Vec<Segment> {
        for (name, program) in self.ebpf.programs_mut() {
            let unloaded = match program {
                aya::programs::Program::SchedClassifier(p) => p.unload(),
                aya::programs::Program::CgroupSkb(p) => p.unload(),
                _ => Ok(()),
            };
            match unloaded {
                Ok(()) | Err(aya::programs::ProgramError::NotLoaded) => {}
                Err(e) => tracing::warn!("detaching {name}: {e}"),
            }
        }
        let mut out = Vec::new();
        loop {
            let (taken, _) = drain(
                self.ring.get_mut(),
                &mut self.decoder,
                &mut self.counters,
                &mut out,
            );
            if taken == 0 {
                break;
            }
        }
        tracing::info!(
            detached = %self.attached.join(", "),
            drained = out.len(),
            "live capture stopped; ring buffer drained"
        );
        out
    }

    /// Detach every program and release the maps now.
    pub fn detach(self) {
        let attached = self.attached.join(", ");
        drop(self);
        tracing::info!(detached = %attached, "live capture stopped");
    }
}

/// Register a ring-buffer map with the runtime's reactor.
fn watch<T: std::os::fd::AsRawFd>(ring: T, what: &str) -> Result<AsyncFd<T>, LiveError> {
    // SAFETY: `T` is an aya ring buffer (data or log) that owns its map fd for as long as it
    // lives and always reports that same fd; the AsyncFd owns `T`.
    unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }.map_err(|e| {
        LiveError::Io {
            what: format!("watching {what}"),
            source: e.into_parts().1,
        }
    })
}

/// Readiness of the log ring, or never when there is none.
async fn readable_logs<'a>(
    logs: Option<&'a mut AsyncFd<EbpfLogger<&'static dyn log::Log>>>,
) -> io::Result<tokio::io::unix::AsyncFdReadyMutGuard<'a, EbpfLogger<&'static dyn log::Log>>> {
    match logs {
        Some(l) => l.readable_mut().await,
        None => std::future::pending().await,
    }
}

/// Take up to MAX_BATCH_RECORDS records. Returns (records taken, ring found empty).
fn drain(
    ring: &mut RingBuf<MapData>,
    decoder: &mut Decoder,
    counters: &mut LiveCounters,
    out: &mut Vec<Segment>,
) -> (usize, bool) {
    let mut taken = 0;
    while taken < MAX_BATCH_RECORDS {
        let Some(item) = ring.next() else {
            return (taken, true);
        };
        taken += 1;
        match decoder.decode(&item) {
            Ok(seg) => {
                counters.records += 1;
                counters.payload_bytes += seg.payload.len() as u64;
                out.push(seg);
            }
            Err(e) => {
                counters.malformed += 1;
                if counters.malformed == 1 {
                    tracing::warn!(
                        "refused a malformed capture record ({e:?}, {} bytes); counted as record_malformed",
                        item.len()
                    );
                }
            }
        }
    }
    (taken, false)
}

/// The ring size for a configured size: a power-of-two number of pages within bounds.
fn ring_size(configured: u64, page: u64) -> u64 {
    let page = page.max(1);
    let wanted = configured.clamp(MIN_RING_BYTES, MAX_RING_BYTES);
    let pages = wanted.div_ceil(page).next_power_of_two();
    pages.saturating_mul(page).min(MAX_RING_BYTES.max(page))
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(p).ok().filter(|p| *p > 0).unwrap_or(4096)
}

/// Fill the kernel filter with `new`, given that it holds `old`.
///
/// Fresh keys go in before the port bitmaps switch and stale ones out after, so a target in
/// both lists never drops out; when old and fresh together would overflow the map, stale keys
/// go first instead (fresh exact targets are then missed for the moment of the switch).
fn write_targets(ebpf: &mut Ebpf, old: &TargetSet, new: &TargetSet) -> Result<(), LiveError> {
    let old_keys: HashSet<&TargetKey> = old.keys.iter().collect();
    let new_keys: HashSet<&TargetKey> = new.keys.iter().collect();
    let fresh: Vec<&TargetKey> = new.keys.iter().filter(|k| !old_keys.contains(k)).collect();
    let stale: Vec<&TargetKey> = old.keys.iter().filter(|k| !new_keys.contains(k)).collect();
    let capacity = usize::try_from(MAX_TARGETS).unwrap_or(usize::MAX);
    let remove_first = old.keys.len() + fresh.len() > capacity;

    let mut exact: HashMap<&mut MapData, TargetKey, u8> = map_mut(ebpf, MAP_TARGETS)?;
    if remove_first {
        remove_keys(&mut exact, &stale)?;
    }
    for key in &fresh {
        exact
            .insert(*key, 1, 0)
            .map_err(|e| classify("writing parity_targets", e))?;
    }
    let mut ports: Array<&mut MapData, PortBits> = map_mut(ebpf, MAP_PORTS)?;
    ports
        .set(0, new.ports.as_ref(), 0)
        .map_err(|e| classify("writing parity_ports", e))?;
    if !remove_first {
        let mut exact: HashMap<&mut MapData, TargetKey, u8> = map_mut(ebpf, MAP_TARGETS)?;
        remove_keys(&mut exact, &stale)?;
    }
    Ok(())
}

fn remove_keys(
    exact: &mut HashMap<&mut MapData, TargetKey, u8>,
    keys: &[&TargetKey],
) -> Result<(), LiveError> {
    for key in keys {
        exact
            .remove(key)
            .map_err(|e| classify("removing from parity_targets", e))?;
    }
    Ok(())
}

fn map_mut<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<T, LiveError>
where
    T: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.map_mut(name).ok_or_else(|| missing(name))?;
    T::try_from(map).map_err(|e| classify(&format!("opening {name}"), e))
}

fn missing(name: &str) -> LiveError {
    LiveError::Ebpf {
        what: format!("the eBPF object has no map {name}"),
        source: "parity-agent and its embedded eBPF object disagree; rebuild parity-agent".into(),
    }
}

/// Where to attach, resolved and checked before anything is loaded.
enum Plan {
    Tc(Vec<Interface>),
    Cgroup { path: PathBuf, dir: std::fs::File },
}

impl Plan {
    fn resolve(cfg: &CaptureConfig) -> Result<Plan, LiveError> {
        match cfg.engine {
            Engine::Tc => {
                let mut seen = HashSet::new();
                let mut interfaces = Vec::new();
                for name in &cfg.interfaces {
                    if seen.insert(name.as_str()) {
                        interfaces.push(host::interface(name)?);
                    }
                }
                if interfaces.is_empty() {
                    return Err(LiveError::NoInterfaces);
                }
                Ok(Plan::Tc(interfaces))
            }
            Engine::Cgroup => {
                let (path, dir) = host::cgroup_dir(cfg.cgroup.as_deref())?;
                Ok(Plan::Cgroup { path, dir })
            }
        }
    }

    /// The kernel dedupe this plan needs (see the module documentation).
    fn dedupe(&self) -> u32 {
        match self {
            Plan::Tc(interfaces) if interfaces.len() > 1 => DEDUPE_PACKETS,
            Plan::Tc(_) => DEDUPE_NONE,
            Plan::Cgroup { .. } => DEDUPE_SENDERS,
        }
    }

    /// Load the programs this plan needs and attach them. Returns a description per link.
    fn attach(&self, ebpf: &mut Ebpf) -> Result<Vec<String>, LiveError> {
        let mut done = Vec::new();
        match self {
            Plan::Tc(interfaces) => {
                for iface in interfaces {
                    let (ingress, egress) = match iface.framing {
                        Framing::Ethernet => (PROG_TC_INGRESS, PROG_TC_EGRESS),
                        Framing::Raw => (PROG_TC_L3_INGRESS, PROG_TC_L3_EGRESS),
                    };
                    attach_tc(ebpf, egress, &iface.name, TcAttachType::Egress)?;
                    done.push(format!("tc egress {}", iface.name));
                    if !iface.loopback {
                        attach_tc(ebpf, ingress, &iface.name, TcAttachType::Ingress)?;
                        done.push(format!("tc ingress {}", iface.name));
                    }
                }
            }
            Plan::Cgroup { path, dir } => {
                for (program, kind, label) in [
                    (PROG_CGROUP_INGRESS, CgroupSkbAttachType::Ingress, "ingress"),
                    (PROG_CGROUP_EGRESS, CgroupSkbAttachType::Egress, "egress"),
                ] {
                    let prog: &mut CgroupSkb = program_mut(ebpf, program)?;
                    load(program, || prog.load())?;
                    prog.attach(dir, kind, CgroupAttachMode::Single)
                        .map_err(|e| {
                            attach_error(program, &format!("cgroup {}", path.display()), e)
                        })?;
                    done.push(format!("cgroup_skb {label} {}", path.display()));
                }
            }
        }
        Ok(done)
    }
}

fn attach_tc(
    ebpf: &mut Ebpf,
    program: &'static str,
    interface: &str,
    kind: TcAttachType,
) -> Result<(), LiveError> {
    let prog: &mut SchedClassifier = program_mut(ebpf, program)?;
    if prog.fd().is_err() {
        load(program, || prog.load())?;
    }
    prog.attach_with_options(
        interface,
        kind,
        TcAttachOptions::TcxOrder(LinkOrder::first()),
    )
    .map_err(|e| attach_error(program, &format!("interface {interface}"), e))?;
    Ok(())
}

fn program_mut<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, LiveError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let program = ebpf.program_mut(name).ok_or_else(|| LiveError::Ebpf {
        what: format!("the eBPF object has no program {name}"),
        source: "parity-agent and its embedded eBPF object disagree; rebuild parity-agent".into(),
    })?;
    program
        .try_into()
        .map_err(|e| classify(&format!("program {name}"), e))
}

fn load(
    program: &'static str,
    f: impl FnOnce() -> Result<(), ProgramError>,
) -> Result<(), LiveError> {
    match f() {
        Ok(()) => Ok(()),
        Err(ProgramError::LoadError {
            io_error,
            verifier_log,
        }) => {
            // EACCES from BPF_PROG_LOAD is the verifier refusing an access, not a privilege
            // problem; only EPERM is.
            if io_error.raw_os_error() == Some(libc::EPERM) {
                return Err(LiveError::NotPrivileged {
                    what: format!("loading eBPF program {program}"),
                    source: io_error,
                });
            }
            let log = verifier_log.to_string();
            if log.contains("unknown func") {
                return Err(LiveError::KernelFeature {
                    what: format!("loading eBPF program {program}"),
                    feature: "a BPF helper parity uses (bpf_loop needs Linux ≥ 5.17)",
                    hint: "upgrade the kernel: live capture needs Linux ≥ 5.17, and ≥ 6.6 for engine = \"tc\"",
                    source: io_error,
                });
            }
            Err(LiveError::Verifier {
                program,
                source: io_error,
                log: log_tail(&log, VERIFIER_LOG_LINES),
            })
        }
        Err(e) => Err(classify(&format!("loading eBPF program {program}"), e)),
    }
}

/// Lines of the verifier log kept in [`LiveError::Verifier`]: its end says why.
const VERIFIER_LOG_LINES: usize = 40;

fn log_tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    let skip = all.len().saturating_sub(lines);
    let mut out = String::new();
    if skip > 0 {
        out.push_str(&format!("[{skip} earlier lines omitted]\n"));
    }
    out.push_str(&all[skip..].join("\n"));
    out
}

fn attach_error(program: &'static str, target: &str, e: ProgramError) -> LiveError {
    let what = format!("attaching {program} to {target}");
    if let Some(io_err) = find_io_error(&e) {
        if let Some((feature, hint)) = attach_feature(program, io_err) {
            return LiveError::KernelFeature {
                what,
                feature,
                hint,
                source: io::Error::from_raw_os_error(io_err.raw_os_error().unwrap_or(0)),
            };
        }
    }
    classify(&what, e)
}

/// The kernel feature an attach errno points to.
fn attach_feature(program: &str, e: &io::Error) -> Option<(&'static str, &'static str)> {
    let errno = e.raw_os_error()?;
    // 524 is the kernel's internal ENOTSUPP, which some attach paths leak.
    let unsupported = matches!(errno, libc::EINVAL | libc::EOPNOTSUPP | 524);
    if !unsupported {
        return None;
    }
    if program.starts_with("parity_tc") {
        Some((
            "TCX links (Linux ≥ 6.6), which detach by themselves when the agent exits",
            "upgrade the kernel or use engine = \"cgroup\"",
        ))
    } else {
        Some((
            "cgroup_skb links (Linux ≥ 5.7)",
            "upgrade the kernel or use engine = \"tc\"",
        ))
    }
}

fn is_permission(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES))
}

fn find_io_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a io::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io_err) = err.downcast_ref::<io::Error>() {
            return Some(io_err);
        }
        cur = err.source();
    }
    None
}

/// Turn an aya error into a [`LiveError`], recognising missing privileges and a kernel
/// without ring buffers.
fn classify<E>(what: &str, e: E) -> LiveError
where
    E: std::error::Error + Send + Sync + 'static,
{
    if let Some(io_err) = find_io_error(&e) {
        let errno = io_err.raw_os_error();
        if is_permission(io_err) {
            return LiveError::NotPrivileged {
                what: what.to_string(),
                source: io::Error::from_raw_os_error(errno.unwrap_or(libc::EPERM)),
            };
        }
        let err: &(dyn std::error::Error + 'static) = &e;
        let ring_creation = matches!(
            err.downcast_ref::<aya::EbpfError>(),
            Some(aya::EbpfError::MapError(aya::maps::MapError::CreateError { name, .. }))
                if name == MAP_EVENTS
        );
        if errno == Some(libc::EINVAL) && ring_creation {
            return LiveError::KernelFeature {
                what: what.to_string(),
                feature: "BPF ring buffers (Linux ≥ 5.8)",
                hint: "upgrade the kernel",
                source: io::Error::from_raw_os_error(libc::EINVAL),
            };
        }
    }
    LiveError::Ebpf {
        what: what.to_string(),
        source: Box::new(e),
    }
}

const _: () = {
    // A full chunk record must fit the smallest ring several times.
    assert!((RECORD_HEADER_BYTES as u64 + CHUNK_BYTES as u64) * 3 < MIN_RING_BYTES);
    assert!(MAX_CHUNKS > 0);
};

#[cfg(test)]
mod tests {
    use super::*;

    /// Compiles only if `next_batch`'s future can be awaited in a spawned task.
    fn next_batch_future_is_send<'a>(
        capture: &'a mut LiveCapture,
        out: &'a mut Vec<Segment>,
    ) -> impl std::future::Future<Output = Result<(), LiveError>> + Send + 'a {
        capture.next_batch(out)
    }

    #[test]
    fn live_capture_can_move_into_a_task() {
        fn assert_send<T: Send>() {}
        assert_send::<LiveCapture>();
        assert_send::<LiveError>();
        let _ = next_batch_future_is_send;
    }

    #[test]
    fn ring_size_rounds_to_power_of_two_pages_within_bounds() {
        assert_eq!(ring_size(0, 4096), MIN_RING_BYTES);
        assert_eq!(ring_size(16 * 1024, 4096), MIN_RING_BYTES);
        assert_eq!(ring_size(64 * 1024 * 1024, 4096), 64 * 1024 * 1024);
        assert_eq!(ring_size(64 * 1024 * 1024 + 1, 4096), 128 * 1024 * 1024);
        assert_eq!(ring_size(100_000, 4096), 128 * 1024);
        assert_eq!(ring_size(u64::MAX, 4096), MAX_RING_BYTES);
        // 64 KiB pages (arm64, ppc64).
        assert_eq!(ring_size(100_000, 65536), 128 * 1024);
        assert!(ring_size(100_000, 0) >= MIN_RING_BYTES);
    }

    #[test]
    fn classify_recognises_permission_errors_in_the_source_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] io::Error);
        let e = classify("x", Outer(io::Error::from_raw_os_error(libc::EPERM)));
        assert!(matches!(e, LiveError::NotPrivileged { .. }), "{e}");
        assert!(e.to_string().contains("CAP_BPF"), "{e}");
        let e = classify("x", Outer(io::Error::from_raw_os_error(libc::ENOENT)));
        assert!(matches!(e, LiveError::Ebpf { .. }), "{e}");
    }

    #[test]
    fn attach_errors_name_the_missing_kernel_feature() {
        let einval = io::Error::from_raw_os_error(libc::EINVAL);
        assert!(attach_feature("parity_tc_out", &einval).is_some_and(|(f, _)| f.contains("TCX")));
        assert!(
            attach_feature("parity_cg_in", &einval).is_some_and(|(f, _)| f.contains("cgroup_skb"))
        );
        assert!(
            attach_feature("parity_cg_in", &io::Error::from_raw_os_error(libc::EBUSY)).is_none()
        );
    }

    #[test]
    fn verifier_logs_keep_their_end() {
        let log: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let tail = log_tail(&log, 3);
        assert_eq!(
            tail,
            "[97 earlier lines omitted]\nline 97\nline 98\nline 99"
        );
        assert_eq!(log_tail("a\nb", 3), "a\nb");
    }

    #[test]
    fn error_messages_name_the_input_and_the_fix() {
        let e = LiveError::NoSuchInterface {
            name: "eth9".to_string(),
        };
        assert!(e.to_string().contains("\"eth9\""));
        let e = LiveError::NotCgroupV2 {
            path: PathBuf::from("/sys/fs/cgroup/cpu"),
        };
        assert!(e.to_string().contains("/sys/fs/cgroup/cpu"));
    }
}
