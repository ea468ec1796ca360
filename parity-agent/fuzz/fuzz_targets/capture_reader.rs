//! Capture-file reader: arbitrary bytes as a pcap / pcapng / gzip file, every segment drained.
//!
//! Oracles: no panic; after the first `Ok(None)` or error the reader keeps answering `Ok(None)`;
//! the stats count exactly the segments returned, and snapped segments as such.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use parity_agent::capture::pcap::CaptureReader;

fuzz_target!(|data: &[u8]| {
    let Ok(mut reader) =
        CaptureReader::from_reader("fuzz.pcap".into(), Box::new(Cursor::new(data.to_vec())))
    else {
        return;
    };
    let (mut segments, mut snapped) = (0u64, 0u64);
    // A gzip member of a few KiB can expand a thousandfold; beyond this many segments the
    // input has made its point.
    while segments < 200_000 {
        match reader.next_segment() {
            Ok(Some(seg)) => {
                segments += 1;
                snapped += u64::from(seg.missing_tail > 0);
            }
            Ok(None) | Err(_) => {
                assert!(
                    matches!(reader.next_segment(), Ok(None)),
                    "a finished reader must keep returning Ok(None)"
                );
                break;
            }
        }
    }
    let stats = reader.stats();
    assert_eq!(
        stats.tcp_segments, segments,
        "tcp_segments counts what was returned"
    );
    assert_eq!(
        stats.snapped, snapped,
        "snapped counts segments with a missing tail"
    );
    assert!(stats.packets >= stats.tcp_segments);
});
