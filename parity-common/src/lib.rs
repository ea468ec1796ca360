#![no_std]
//! Types shared by parity's eBPF programs and its agent (filled in by the capture issue).
