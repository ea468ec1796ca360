//! HTTP/1.1 parsing, both directions: client and server byte chunks interleaved with gaps,
//! half closes and connection changes, fed to `HttpTracker` as stream events.
//!
//! Oracles:
//! * split invariance: the same events with every `Data` cut into further pieces (the same
//!   timestamps) give identical exchanges and counters; with adjacent `Data` of one direction
//!   merged, identical exchanges apart from timestamps;
//! * bodies keep at most `max_body_bytes`, never more than their length, and `capped` says
//!   exactly whether bytes were left out;
//! * after the last `Close` the tracker holds no connection and no memory.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use parity_agent::exchange::{Body, Exchange};
use parity_agent::http::{HttpConfig, HttpStats, HttpTracker};
use parity_agent::stream::StreamEvent;
use parity_fuzz::HttpStream;

fn run(
    cfg: &HttpConfig,
    events: impl IntoIterator<Item = StreamEvent>,
) -> (Vec<Exchange>, HttpStats) {
    let mut t = HttpTracker::new(cfg.clone());
    let mut out = Vec::new();
    for ev in events {
        t.on_event(ev, &mut out);
    }
    assert_eq!(t.connections(), 0, "connections left after the last Close");
    assert_eq!(t.memory_used(), 0, "memory left after the last Close");
    (out, t.stats().clone())
}

fn check_body(cfg: &HttpConfig, b: &Body) {
    assert!(
        b.kept.len() <= cfg.max_body_bytes,
        "kept {} bytes",
        b.kept.len()
    );
    assert!(
        b.kept.len() as u64 <= b.len,
        "kept more than the body's length"
    );
    assert_eq!(b.capped, (b.kept.len() as u64) < b.len, "capped flag wrong");
}

/// xorshift64: deterministic cut points from the input.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn split(events: &[StreamEvent], seed: u64) -> Vec<StreamEvent> {
    let mut rng = seed | 1;
    let mut out = Vec::with_capacity(events.len() * 4);
    for ev in events {
        match ev {
            StreamEvent::Data {
                conn,
                dir,
                ts,
                data,
            } => {
                let mut rest: Bytes = data.clone();
                while !rest.is_empty() {
                    let r = next(&mut rng);
                    // Mostly small pieces (1..=8 bytes), sometimes larger ones.
                    let n = if r & 3 == 0 {
                        1 + (r >> 8) as usize % rest.len()
                    } else {
                        1 + (r >> 8) as usize % 8
                    };
                    let piece = rest.split_to(n.min(rest.len()));
                    out.push(StreamEvent::Data {
                        conn: *conn,
                        dir: *dir,
                        ts: *ts,
                        data: piece,
                    });
                }
            }
            other => out.push(other.clone()),
        }
    }
    out
}

fn merge(events: &[StreamEvent]) -> Vec<StreamEvent> {
    let mut out: Vec<StreamEvent> = Vec::with_capacity(events.len());
    for ev in events {
        if let (
            Some(StreamEvent::Data {
                conn: pc,
                dir: pd,
                data: pdata,
                ..
            }),
            StreamEvent::Data {
                conn, dir, data, ..
            },
        ) = (out.last_mut(), ev)
        {
            if pc == conn && pd == dir {
                let mut joined = Vec::with_capacity(pdata.len() + data.len());
                joined.extend_from_slice(pdata);
                joined.extend_from_slice(data);
                *pdata = Bytes::from(joined);
                continue;
            }
        }
        out.push(ev.clone());
    }
    out
}

fn without_times(mut xs: Vec<Exchange>) -> Vec<Exchange> {
    for x in &mut xs {
        x.request_start = None;
        x.request_end = None;
        x.response_start = None;
        x.response_end = None;
    }
    xs
}

fuzz_target!(|data: &[u8]| {
    let s = HttpStream::decode(data);
    let cfg = if s.tight {
        HttpConfig {
            max_header_bytes: 200,
            max_body_bytes: 48,
            max_decoded_bytes: 4096,
            max_pending_requests: 3,
        }
    } else {
        HttpConfig {
            max_header_bytes: 64 << 10,
            max_body_bytes: 1 << 20,
            max_decoded_bytes: 16 << 20,
            max_pending_requests: 100,
        }
    };
    let (a, stats_a) = run(&cfg, s.events.iter().cloned());
    for x in &a {
        if let Some(r) = &x.request {
            check_body(&cfg, &r.body);
        }
        if let Some(r) = &x.response {
            check_body(&cfg, &r.body);
        }
    }
    let seed = data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let (b, stats_b) = run(&cfg, split(&s.events, seed));
    assert_eq!(
        a, b,
        "exchanges differ when the same bytes come in smaller pieces"
    );
    assert_eq!(
        stats_a, stats_b,
        "counters differ when the same bytes come in smaller pieces"
    );
    let (c, stats_c) = run(&cfg, merge(&s.events));
    assert_eq!(
        without_times(a),
        without_times(c),
        "exchanges differ when adjacent chunks of one direction are merged"
    );
    assert_eq!(
        stats_a, stats_c,
        "counters differ when adjacent chunks are merged"
    );
});
