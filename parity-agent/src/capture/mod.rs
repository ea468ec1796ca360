//! Capture sources: where [`Segment`](crate::segment::Segment)s come from.
//!
//! Each source turns what it reads into the same `Segment` type, so everything downstream is
//! shared between live capture and offline replay. This module only groups the sources; it holds
//! no logic of its own.

#[cfg(feature = "ebpf")]
pub mod ebpf;
pub mod pcap;
