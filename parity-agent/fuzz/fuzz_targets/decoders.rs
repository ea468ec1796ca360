//! Content decoders (gzip, deflate raw and zlib, br, zstd, identity, unknown codings, stacks
//! of them) through the HTTP stage: a response whose body is arbitrary bytes, or arbitrary data
//! encoded by the listed codings (round trip), framed by `Content-Length` or chunked, and fed in
//! pieces of any size.
//!
//! Oracles: decoded output never exceeds `max_decoded_bytes` and the kept prefix never exceeds
//! `max_body_bytes`; a round trip within the limits is complete and gives back the data exactly
//! (length, SHA-256, kept prefix).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use parity_agent::exchange::IncompleteReason;
use parity_agent::http::{HttpConfig, HttpTracker};
use parity_agent::segment::Nanos;
use parity_agent::stream::{CloseReason, ConnId, Direction, StreamEvent};
use parity_fuzz::{encode, Decoders, CODINGS};
use sha2::{Digest, Sha256};

fuzz_target!(|data: &[u8]| {
    let d = Decoders::decode(data);
    let cfg = if d.tight {
        HttpConfig {
            max_header_bytes: 64 << 10,
            max_body_bytes: 100,
            max_decoded_bytes: 3000,
            max_pending_requests: 4,
        }
    } else {
        HttpConfig {
            max_header_bytes: 64 << 10,
            max_body_bytes: 1 << 20,
            max_decoded_bytes: 1 << 20,
            max_pending_requests: 4,
        }
    };
    // An unknown coding leaves the body as sent, so a round trip only means something without.
    let round_trip = d.round_trip && d.codings.iter().all(|&c| CODINGS[c] != "compress");
    let mut body = d.data.to_vec();
    if round_trip {
        for &c in &d.codings {
            if let Some(b) = encode(c, &body) {
                body = b;
            }
        }
    }
    let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
    if !d.codings.is_empty() {
        let names: Vec<&str> = d.codings.iter().map(|&c| CODINGS[c]).collect();
        head.extend_from_slice(format!("Content-Encoding: {}\r\n", names.join(", ")).as_bytes());
    }
    let mut wire = head;
    if d.chunked {
        wire.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
        let size = if d.piece == 0 { 4096 } else { d.piece * 7 };
        for c in body.chunks(size) {
            wire.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            wire.extend_from_slice(c);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"0\r\n\r\n");
    } else {
        wire.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        wire.extend_from_slice(&body);
    }

    let conn = ConnId(1);
    let mut t = HttpTracker::new(cfg.clone());
    let mut out = Vec::new();
    let mut ts = 1_000_000;
    t.on_event(
        StreamEvent::Open {
            conn,
            client: "10.0.0.1:40000".parse().unwrap(),
            server: "10.0.0.2:80".parse().unwrap(),
            ts: Nanos(ts),
            mid_stream: false,
        },
        &mut out,
    );
    t.on_event(
        StreamEvent::Data {
            conn,
            dir: Direction::ToServer,
            ts: Nanos(ts),
            data: Bytes::from_static(b"GET /f HTTP/1.1\r\nHost: fuzz\r\n\r\n"),
        },
        &mut out,
    );
    let wire = Bytes::from(wire);
    let piece = if d.piece == 0 {
        wire.len().max(1)
    } else {
        d.piece
    };
    let mut at = 0;
    while at < wire.len() {
        let end = (at + piece).min(wire.len());
        ts += 1_000;
        t.on_event(
            StreamEvent::Data {
                conn,
                dir: Direction::ToClient,
                ts: Nanos(ts),
                data: wire.slice(at..end),
            },
            &mut out,
        );
        at = end;
    }
    t.on_event(
        StreamEvent::Close {
            conn,
            ts: Nanos(ts + 1),
            reason: CloseReason::Fin,
            reset_by: None,
        },
        &mut out,
    );
    assert_eq!(out.len(), 1, "one request, one exchange: {out:?}");
    let x = &out[0];
    let resp = x
        .response
        .as_ref()
        .unwrap_or_else(|| panic!("no response parsed: {x:?}"));
    let b = &resp.body;
    assert!(
        b.kept.len() <= cfg.max_body_bytes,
        "kept {} bytes",
        b.kept.len()
    );
    let decodable = d.codings.iter().any(|&c| CODINGS[c] != "identity")
        && d.codings.iter().all(|&c| CODINGS[c] != "compress");
    if decodable && x.incomplete == Some(IncompleteReason::DecodeError) {
        // Not decodable: described by the bytes as sent, nothing kept.
        assert_eq!(b.len, b.wire_len, "a decode error reports the body as sent");
        assert!(b.kept.is_empty(), "a decode error keeps nothing");
    } else if decodable {
        assert!(
            b.len <= cfg.max_decoded_bytes as u64,
            "decoded {} bytes, limit {}",
            b.len,
            cfg.max_decoded_bytes
        );
    }
    if round_trip && d.data.len() <= cfg.max_decoded_bytes {
        assert_eq!(x.incomplete, None, "round trip not complete: {x:?}");
        assert_eq!(b.len, d.data.len() as u64, "decoded length");
        let want: [u8; 32] = Sha256::digest(d.data).into();
        assert_eq!(b.sha256, want, "decoded SHA-256");
        let keep = d.data.len().min(cfg.max_body_bytes);
        assert_eq!(&b.kept[..], &d.data[..keep], "kept prefix");
    }
});
