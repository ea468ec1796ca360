//! TCP reassembly: sequences of segments on a few flows that share ports, sequence ranges and
//! flags, interleaved with expiry and eviction calls.
//!
//! Oracles, checked after every call:
//! * `memory_used() <= flow_memory` after each push (the bound `push` promises);
//! * events of a connection follow its `Open` and none follow its `Close`; connection ids of
//!   `Open`s increase; `Data` is never empty; nothing follows a direction's `HalfClose` on it;
//! * delivered bytes are where they claim to be: every payload byte is the low byte of its own
//!   sequence number, so within a direction each `Data` byte must follow the previous one,
//!   skipping exactly the length of any `Gap` of known length in between;
//! * after `finish` every opened connection is closed and no memory is held.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use parity_agent::reassembly::{Reassembler, ReassemblyConfig};
use parity_agent::segment::Nanos;
use parity_agent::stream::{ConnId, StreamEvent};
use parity_fuzz::{Segments, Step};

#[derive(Default)]
struct Conn {
    closed: bool,
    half_closed: [bool; 2],
    /// The byte the next `Data` must start with, when known.
    next: [Option<u8>; 2],
}

#[derive(Default)]
struct Check {
    conns: HashMap<ConnId, Conn>,
    last_open: u64,
}

impl Check {
    fn events(&mut self, out: &mut Vec<StreamEvent>) {
        for ev in out.drain(..) {
            if let StreamEvent::Open { conn, .. } = ev {
                assert!(
                    conn.0 > self.last_open,
                    "{conn} opened after C{}",
                    self.last_open
                );
                self.last_open = conn.0;
                self.conns.insert(conn, Conn::default());
                continue;
            }
            let conn = ev.conn();
            let c = self
                .conns
                .get_mut(&conn)
                .unwrap_or_else(|| panic!("{ev:?} for a connection never opened"));
            assert!(!c.closed, "{ev:?} after the connection closed");
            match ev {
                StreamEvent::Data { dir, data, .. } => {
                    let d = dir.index();
                    assert!(!data.is_empty(), "empty Data");
                    assert!(!c.half_closed[d], "Data after HalfClose on {dir:?}");
                    if let Some(want) = c.next[d] {
                        assert_eq!(data[0], want, "{conn} {dir:?}: bytes out of place");
                    }
                    for w in data.windows(2) {
                        assert_eq!(
                            w[1],
                            w[0].wrapping_add(1),
                            "{conn} {dir:?}: bytes out of order"
                        );
                    }
                    c.next[d] = data.last().map(|b| b.wrapping_add(1));
                }
                StreamEvent::Gap { dir, len, .. } => {
                    let d = dir.index();
                    assert!(!c.half_closed[d], "Gap after HalfClose on {dir:?}");
                    c.next[d] = match (c.next[d], len) {
                        (_, 0) | (None, _) => None,
                        (Some(b), n) => Some(b.wrapping_add(n as u8)),
                    };
                }
                StreamEvent::HalfClose { dir, .. } => {
                    assert!(!c.half_closed[dir.index()], "second HalfClose on {dir:?}");
                    c.half_closed[dir.index()] = true;
                }
                StreamEvent::Close { .. } => c.closed = true,
                StreamEvent::Open { .. } => {}
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let s = Segments::decode(data);
    let cfg = ReassemblyConfig {
        flow_memory: s.flow_memory,
        ooo_bytes_per_flow: s.ooo_bytes,
        idle_timeout: s.idle,
        gap_timeout: s.gap,
    };
    let mut r = Reassembler::new(cfg, Vec::new());
    let mut out = Vec::new();
    let mut check = Check::default();
    let mut now = Nanos(0);
    for step in s.steps {
        match step {
            Step::Push(seg) => {
                now = seg.ts;
                r.push(seg, &mut out);
                assert!(
                    r.memory_used() <= s.flow_memory,
                    "memory_used {} above flow_memory {}",
                    r.memory_used(),
                    s.flow_memory
                );
            }
            Step::Expire(t) => {
                now = t;
                r.expire(t, &mut out);
            }
            Step::Evict(t) => {
                now = t;
                r.evict_lru(t, &mut out);
            }
        }
        check.events(&mut out);
    }
    r.finish(now, &mut out);
    check.events(&mut out);
    for (conn, c) in &check.conns {
        assert!(c.closed, "{conn} never closed by finish");
    }
    assert_eq!(r.flows_active(), 0);
    assert_eq!(r.memory_used(), 0, "memory held after finish");
});
