//! Capture sources: everything that produces [`crate::segment::Segment`]s.

#[cfg(feature = "ebpf")]
pub mod ebpf;
