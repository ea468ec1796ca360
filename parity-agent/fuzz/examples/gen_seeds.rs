//! Regenerates the committed seed inputs under `parity-agent/fuzz/seeds/<target>/`.
//!
//! Run from the repository root (needs `../shared/corpus`, read in place):
//!
//! ```text
//! cargo run --manifest-path parity-agent/fuzz/Cargo.toml --example gen_seeds
//! ```
//!
//! Nothing from the corpus is copied verbatim: captures are cut to their first few packets and
//! rewritten, traffic is re-encoded in the targets' own input formats, and llhttp vectors are
//! turned into single messages. Configuration seeds come from the repository's own examples and
//! tests. Every seed directory is emptied and rewritten, so the output is a pure function of the
//! corpus and this file.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use parity_agent::capture::pcap::CaptureReader;
use parity_agent::reassembly::{Reassembler, ReassemblyConfig};
use parity_agent::segment::{Nanos, Segment};
use parity_agent::stream::{ConnId, Direction, StreamEvent};
use parity_fuzz::{encode, encode_data, encode_gap, encode_half_close, op, SEG_RECORD};

/// Largest seed of any target; keeps the committed set small and the fuzzers' inputs short.
const MAX_SEED: usize = 6 * 1024;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let corpus = root.join("../shared/corpus");
    if !corpus.join("pcap").is_dir() || !corpus.join("llhttp").is_dir() {
        eprintln!("gen_seeds: corpus not found at {}", corpus.display());
        std::process::exit(2);
    }
    let seeds = root.join("parity-agent/fuzz/seeds");
    let mut captures = Vec::new();
    walk(&corpus.join("pcap"), &mut captures);
    captures.retain(|p| {
        let n = p.to_string_lossy();
        n.ends_with(".pcap") || n.ends_with(".pcapng") || n.ends_with(".gz") || n.ends_with(".cap")
    });
    captures.sort();

    let mut w = Writer::new(&seeds);
    capture_reader(&mut w, &captures);
    reassembly(&mut w, &captures);
    http_stream(&mut w, &captures, &corpus.join("llhttp"));
    decoders(&mut w);
    config(&mut w, &root);
    json_path(&mut w);
    compare(&mut w);
    mask_record(&mut w);
    w.report();
}

struct Writer {
    dir: PathBuf,
    counts: Vec<(String, usize, usize)>,
}

impl Writer {
    fn new(dir: &Path) -> Writer {
        Writer {
            dir: dir.to_path_buf(),
            counts: Vec::new(),
        }
    }

    /// Starts a target's directory afresh.
    fn target(&mut self, name: &str) {
        let d = self.dir.join(name);
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        self.counts.push((name.to_string(), 0, 0));
    }

    fn put(&mut self, name: &str, data: &[u8]) {
        let (target, n, bytes) = self.counts.last_mut().expect("target() first");
        let path = self.dir.join(&*target).join(name);
        std::fs::write(&path, data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        *n += 1;
        *bytes += data.len();
    }

    fn report(&self) {
        let mut total = 0;
        for (t, n, b) in &self.counts {
            println!("{t:>15}: {n:4} seeds, {b:7} bytes");
            total += b;
        }
        println!("{:>15}: {total:7} bytes", "total");
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// A short, unique, readable seed name for a corpus file.
fn stem(p: &Path) -> String {
    let s = p.file_name().unwrap_or_default().to_string_lossy();
    let parent = p
        .parent()
        .and_then(|d| d.file_name())
        .unwrap_or_default()
        .to_string_lossy();
    let base = s.split('.').next().unwrap_or("x");
    let mut name = if base == "input" {
        parent.to_string()
    } else {
        base.to_string()
    };
    name.retain(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    name
}

// ---------------------------------------------------------------------------------------------

/// The first packets of each capture, rewritten: the file header (pcap) or the section and
/// interface blocks (pcapng) and as many packet records as fit in a small budget.
fn capture_reader(w: &mut Writer, captures: &[PathBuf]) {
    w.target("capture_reader");
    for p in captures {
        let Ok(raw) = std::fs::read(p) else { continue };
        let raw = if raw.starts_with(&[0x1f, 0x8b]) {
            let mut out = Vec::new();
            let mut d = flate2::read::MultiGzDecoder::new(&raw[..]);
            if std::io::Read::read_to_end(&mut d, &mut out).is_err() {
                continue;
            }
            out
        } else {
            raw
        };
        let Some(cut) = first_packets(&raw, 6, 3 * 1024) else {
            continue;
        };
        w.put(&format!("{}.pcap", stem(p)), &cut);
    }
    // A gzip-compressed one, and the shortest shapes: an empty file with only a header.
    if let Some(p) = captures
        .iter()
        .find(|p| p.to_string_lossy().ends_with("get.pcap"))
    {
        if let Some(cut) = std::fs::read(p)
            .ok()
            .and_then(|r| first_packets(&r, 4, 2048))
        {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            let _ = gz.write_all(&cut);
            if let Ok(z) = gz.finish() {
                w.put("get-gzip.pcap.gz", &z);
            }
            w.put("header-only.pcap", &cut[..24.min(cut.len())]);
        }
    }
}

/// Cuts a pcap or pcapng file after `packets` packet records (or `budget` bytes).
fn first_packets(raw: &[u8], packets: usize, budget: usize) -> Option<Vec<u8>> {
    let magic = raw.get(..4)?;
    let u32_at = |b: &[u8], at: usize, le: bool| -> Option<u32> {
        let w: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        })
    };
    if magic == [0x0a, 0x0d, 0x0d, 0x0a] {
        let le = raw.get(8..12)? == [0x4d, 0x3c, 0x2b, 0x1a];
        let mut at = 0;
        let mut n = 0;
        while at + 12 <= raw.len() {
            let kind = u32_at(raw, at, le)?;
            let len = u32_at(raw, at + 4, le)? as usize;
            if len < 12 || at + len > raw.len() {
                break;
            }
            let is_packet = matches!(kind, 2 | 3 | 6);
            if is_packet && (n >= packets || at + len > budget) {
                break;
            }
            n += usize::from(is_packet);
            at += len;
        }
        return Some(raw[..at].to_vec());
    }
    let le = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => return None,
    };
    let mut at = 24;
    for _ in 0..packets {
        let incl = u32_at(raw, at + 8, le)? as usize;
        if at + 16 + incl > raw.len() || at + 16 + incl > budget.max(24 + 16 + 64) {
            break;
        }
        at += 16 + incl;
    }
    Some(raw.get(..at)?.to_vec())
}

// ---------------------------------------------------------------------------------------------

fn segments(p: &Path, limit: usize) -> Vec<Segment> {
    let mut out = Vec::new();
    let Ok(mut r) = CaptureReader::open(p) else {
        return out;
    };
    while out.len() < limit {
        match r.next_segment() {
            Ok(Some(s)) => out.push(s),
            _ => break,
        }
    }
    out
}

/// Each capture's first flows in the `reassembly` format (payloads longer than 255 bytes split
/// into several records, so the flows stay contiguous), plus hand-made shapes.
fn reassembly(w: &mut Writer, captures: &[PathBuf]) {
    w.target("reassembly");
    for p in captures {
        let segs = segments(p, 400);
        if segs.is_empty() {
            continue;
        }
        // Flows by unordered address pair; the first sender of a flow is its "client" unless
        // the first segment is a SYN-ACK.
        let mut flows: HashMap<(SocketAddr, SocketAddr), (usize, SocketAddr, [Option<u32>; 2])> =
            HashMap::new();
        let mut out = vec![0xff, 0x40, 0x3f];
        let mut last_ts: Option<Nanos> = None;
        for s in &segs {
            let key = if s.src < s.dst {
                (s.src, s.dst)
            } else {
                (s.dst, s.src)
            };
            let next_id = flows.len();
            let flow = flows.entry(key).or_insert_with(|| {
                let client = if s.flags.syn() && s.flags.ack() {
                    s.dst
                } else {
                    s.src
                };
                (next_id, client, [None, None])
            });
            if flow.0 >= 4 {
                continue;
            }
            let from_server = s.src != flow.1;
            let isn = *flow.2[usize::from(from_server)].get_or_insert(s.seq);
            let mut ep = u8::from(from_server) | ((flow.0 as u8) << 1);
            if s.src.is_ipv6() {
                ep |= 16;
            }
            let mut off = s.seq.wrapping_sub(isn);
            let syn = u32::from(s.flags.syn());
            let chunks: Vec<&[u8]> = if s.payload.is_empty() {
                vec![&[][..]]
            } else {
                s.payload.chunks(255).collect()
            };
            let last = chunks.len() - 1;
            for (i, c) in chunks.iter().enumerate() {
                let mut flags = s.flags.0 & 0x1f;
                if i > 0 {
                    flags &= !0x02; // SYN only on the first piece
                }
                if i < last {
                    flags &= !0x01; // FIN only on the last
                }
                let dt = last_ts.map_or(0, |t| s.ts.since(t));
                last_ts = Some(s.ts);
                let tbyte = if dt >= 2_540_000_000 {
                    0x80 | (dt / 1_000_000_000).min(0x7f) as u8
                } else {
                    (dt / 20_000_000) as u8
                };
                out.extend_from_slice(&[flags, ep]);
                out.extend_from_slice(&(off as u16).to_le_bytes());
                out.extend_from_slice(&[c.len() as u8, tbyte, 0]);
                off = off.wrapping_add(c.len() as u32 + if i == 0 { syn } else { 0 });
                if out.len() + SEG_RECORD > 2048 {
                    break;
                }
            }
            if out.len() + SEG_RECORD > 2048 {
                break;
            }
        }
        w.put(&stem(p), &out);
    }
    // Hand-made: handshake, out-of-order data, a retransmission overlap, FIN both ways.
    let rec = |flags: u8, ep: u8, off: u16, len: u8| -> Vec<u8> {
        let mut r = vec![flags, ep];
        r.extend_from_slice(&off.to_le_bytes());
        r.extend_from_slice(&[len, 1, 0]);
        r
    };
    let mut hs = vec![0x20, 0x10, 0x12];
    for r in [
        rec(0x02, 0, 0, 0),
        rec(0x12, 1, 0, 0),
        rec(0x10, 0, 1, 0),
        rec(0x18, 0, 101, 100),
        rec(0x18, 0, 1, 100),
        rec(0x18, 0, 51, 120),
        rec(0x18, 1, 1, 200),
        rec(0x11, 0, 221, 0),
        rec(0x11, 1, 201, 0),
        rec(0, 0xc0, 0, 0),
    ] {
        hs.extend_from_slice(&r);
    }
    w.put("handshake-ooo-overlap", &hs);
}

// ---------------------------------------------------------------------------------------------

/// llhttp vectors as single messages (requests from the client, responses after as many
/// requests), and each capture's first connections as reassembled stream events.
fn http_stream(w: &mut Writer, captures: &[PathBuf], llhttp: &Path) {
    w.target("http_stream");
    for kind in ["request", "response"] {
        let mut files = Vec::new();
        walk(&llhttp.join(kind), &mut files);
        files.sort();
        for f in files {
            let Ok(text) = std::fs::read_to_string(&f) else {
                continue;
            };
            for (i, input) in llhttp_inputs(&text).into_iter().take(24).enumerate() {
                let mut out = vec![0u8];
                if kind == "request" {
                    encode_data(&mut out, Direction::ToServer, &input);
                } else {
                    let reqs = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".repeat(3);
                    encode_data(&mut out, Direction::ToServer, &reqs);
                    encode_data(&mut out, Direction::ToClient, &input);
                }
                let name = format!("llhttp-{kind}-{}-{i:02}", stem(&f));
                w.put(&name, &out);
            }
        }
    }
    for p in captures {
        let segs = segments(p, 3000);
        if segs.is_empty() {
            continue;
        }
        let cfg = ReassemblyConfig {
            flow_memory: 64 << 20,
            ooo_bytes_per_flow: 1 << 20,
            idle_timeout: std::time::Duration::from_secs(60),
            gap_timeout: std::time::Duration::from_secs(2),
        };
        let mut r = Reassembler::new(cfg, Vec::new());
        let mut events = Vec::new();
        let mut last = Nanos(0);
        for s in segs {
            last = s.ts;
            r.push(s, &mut events);
        }
        r.finish(last, &mut events);
        let mut by_conn: Vec<(ConnId, Vec<u8>)> = Vec::new();
        for ev in events {
            let conn = ev.conn();
            if let StreamEvent::Open { mid_stream, .. } = ev {
                if by_conn.len() < 3 {
                    by_conn.push((conn, vec![u8::from(mid_stream)]));
                }
                continue;
            }
            let Some((_, out)) = by_conn.iter_mut().find(|(c, _)| *c == conn) else {
                continue;
            };
            if out.len() >= MAX_SEED {
                continue;
            }
            match ev {
                StreamEvent::Data { dir, data, .. } => {
                    let room = MAX_SEED.saturating_sub(out.len() + 3);
                    encode_data(out, dir, &data[..data.len().min(room)]);
                }
                StreamEvent::Gap {
                    dir, len, reason, ..
                } => encode_gap(out, dir, len, reason),
                StreamEvent::HalfClose { dir, .. } => encode_half_close(out, dir),
                _ => {}
            }
        }
        for (i, (_, out)) in by_conn.iter().enumerate() {
            if out.len() > 1 {
                w.put(&format!("{}-c{i}", stem(p)), out);
            }
        }
    }
    // Two connections in one input, and tight limits.
    let mut two = vec![2u8];
    encode_data(
        &mut two,
        Direction::ToServer,
        b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
    );
    encode_data(
        &mut two,
        Direction::ToClient,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nxyz\r\n0\r\n\r\n",
    );
    two.push(op::CLOSE_REOPEN);
    encode_data(&mut two, Direction::ToServer, b"GET /b HTTP/1.1\r\n\r\n");
    encode_gap(
        &mut two,
        Direction::ToClient,
        10,
        parity_agent::stream::GapReason::Gap,
    );
    encode_data(
        &mut two,
        Direction::ToClient,
        b"HTTP/1.1 204 No Content\r\n\r\n",
    );
    w.put("two-connections-tight", &two);
}

/// The input of every `http` block of an llhttp markdown file, with llhttp's harness transforms
/// (CRLF line ends, `\r \n \t \xHH` escapes; `${...}` expressions are left out).
fn llhttp_inputs(md: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut lines = md.split('\n');
    while let Some(l) = lines.next() {
        if !l.starts_with("```http") {
            continue;
        }
        let mut body = Vec::new();
        for l in lines.by_ref() {
            if l.starts_with("```") {
                break;
            }
            body.push(l);
        }
        let joined = body.join("\n");
        if joined.contains("${") {
            continue;
        }
        let s = joined.replace("\\\n", "").replace('\n', "\r\n");
        let s = s
            .replace("\\r", "\r")
            .replace("\\n", "\n")
            .replace("\\t", "\t");
        let mut bytes = Vec::new();
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') {
                let hex: String = b[i + 2..]
                    .iter()
                    .take(2)
                    .take_while(|c| c.is_ascii_hexdigit())
                    .map(|&c| c as char)
                    .collect();
                if let Ok(v) = u8::from_str_radix(&hex, 16) {
                    bytes.push(v);
                    i += 2 + hex.len();
                    continue;
                }
            }
            bytes.push(b[i]);
            i += 1;
        }
        out.push(bytes);
    }
    out
}

// ---------------------------------------------------------------------------------------------

fn decoders(w: &mut Writer) {
    w.target("decoders");
    let text = br#"{"items":[{"id":1,"price":9.99,"name":"widget"},{"id":2,"price":19.5,"name":"gadget"}],"total":29.49,"note":"the quick brown fox jumps over the lazy dog, the quick brown fox"}"#;
    // (codings by index, as listed)
    let stacks: &[&[usize]] = &[
        &[0],
        &[1],
        &[2],
        &[3],
        &[4],
        &[5],
        &[6],
        &[7],
        &[0, 4],
        &[5, 2],
        &[4, 5, 0],
        &[6, 3],
    ];
    for (si, stack) in stacks.iter().enumerate() {
        let mut b1 = 0u8;
        for (i, &c) in stack.iter().enumerate() {
            b1 |= (c as u8) << (3 * i);
        }
        let n = stack.len() as u8;
        // Round trip, Content-Length, one piece.
        let mut rt = vec![n | 4, b1, 0];
        rt.extend_from_slice(text);
        w.put(&format!("rt-{si:02}"), &rt);
        // The body already encoded (raw mode), chunked, fed in 7-byte pieces.
        let mut body = text.to_vec();
        for &c in stack.iter() {
            if let Some(b) = encode(c, &body) {
                body = b;
            }
        }
        let mut raw = vec![n | 8, b1, 7];
        raw.extend_from_slice(&body);
        w.put(&format!("raw-{si:02}"), &raw);
    }
    // A small bomb: a megabyte of zeros, gzip-compressed, with tight limits.
    let zeros = encode(0, &vec![0u8; 1 << 20]).unwrap_or_default();
    let mut bomb = vec![1 | 16, 0, 0];
    bomb.extend_from_slice(&zeros);
    w.put("gzip-bomb-tight", &bomb);
}

// ---------------------------------------------------------------------------------------------

/// Configuration texts: the example in `config.rs`, every test's TOML text there, the
/// Kubernetes ConfigMap's file, and one file that sets every key.
fn config(w: &mut Writer, root: &Path) {
    w.target("config");
    let src = std::fs::read_to_string(root.join("parity-agent/src/config.rs")).unwrap_or_default();
    let mut n = 0;
    if let Some(start) = src.find("r#\"") {
        if let Some(len) = src[start + 3..].find("\"#") {
            w.put("example", src[start + 3..start + 3 + len].as_bytes());
        }
    }
    let tests = src.find("mod tests").map_or("", |i| &src[i..]);
    for lit in string_literals(tests) {
        if lit.contains('\n') && (lit.contains('[') || lit.contains('=')) {
            w.put(&format!("test-{n:02}"), lit.as_bytes());
            n += 1;
        }
    }
    if let Ok(yaml) = std::fs::read_to_string(root.join("deploy/kubernetes/parity.yaml")) {
        let mut toml = String::new();
        let mut inside = false;
        for l in yaml.lines() {
            if l.trim_start().starts_with("parity.toml: |") {
                inside = true;
                continue;
            }
            if inside {
                if !l.is_empty() && !l.starts_with("    ") {
                    break;
                }
                toml.push_str(l.strip_prefix("    ").unwrap_or(l));
                toml.push('\n');
            }
        }
        w.put("kubernetes", toml.as_bytes());
    }
    w.put(
        "every-key",
        br#"[capture]
engine = "cgroup"
interfaces = ["lo", "eth0"]
cgroup = "/sys/fs/cgroup"
targets = [":8080", "[::1]:9090"]

[limits]
flow_memory = "64MiB"
ooo_bytes_per_flow = "256KiB"
idle_timeout = "30s"
gap_timeout = "500ms"
max_header_bytes = "16KiB"
max_body_bytes = "512KiB"
max_decoded_bytes = "8MiB"
max_pending_requests = 64
ring_buffer_bytes = "16MiB"
pending_pairs = 1000
pending_memory = "32MiB"
compare_queue = 128

[server]
listen = "127.0.0.1:9464"
token = "t"

[store]
path = "/tmp/parity.db"

[masking]
enabled = true
defaults = false
key_file = "/tmp/parity.key"

[[mask]]
header = "x-session"
[[mask]]
json_path = "$..ssn"
[[mask]]
query_param = "sig"
[[mask]]
regex = "SSN-[0-9]+"

[[pair]]
name = "a"
primary = ["127.0.0.1:8080", ":8081"]
mirror = "127.0.0.1:9090"
sample = 0.5
strict_number_types = true
compare_representation_headers = true
latency_regression_ratio = 2.0
latency_regression_min = "5ms"
endpoints = ["GET /users/{id}", "POST /orders"]
max_endpoints = 10

[[pair.rule]]
path = "$['a b'][*]..c"
action = "present"
[[pair.rule]]
path = "$.*[2]"
action = "numeric"
absolute = 1.0
"#,
    );
}

/// The contents of the `"..."` literals in Rust source, with `\n`, `\"`, `\\` unescaped.
fn string_literals(src: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = src.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut s = String::new();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => match chars.next() {
                    Some('n') => s.push('\n'),
                    Some('t') => s.push('\t'),
                    Some(o) => s.push(o),
                    None => {}
                },
                o => s.push(o),
            }
        }
        out.push(s);
    }
    out
}

// ---------------------------------------------------------------------------------------------

fn json_path(w: &mut Writer) {
    w.target("json_path");
    let cases: &[&str] = &[
        "$\n",
        "$.a\na",
        "$.meta.generated_at\nmeta\u{1}generated_at",
        "$.items[*].price\nitems\u{1}#3\u{1}price",
        "$..id\nx\u{1}#0\u{1}id",
        "$['a b'][\"c.d\"]\na b\u{1}c.d",
        "$.*[2]\nq\u{1}#2",
        "$['it\\'s']\nit's",
        "$[0][1]..x.*\n#0\u{1}#1\u{1}y\u{1}x\u{1}z",
        "$..a..b[*]\na\u{1}c\u{1}b\u{1}#9",
        "$.a[\nweird]key\u{1}'quoted'\u{1}back\\slash",
    ];
    for (i, c) in cases.iter().enumerate() {
        w.put(&format!("case-{i:02}"), c.as_bytes());
    }
}

fn compare(w: &mut Writer) {
    w.target("compare");
    let cases: &[(u8, &str, &str, &str)] = &[
        (0, "", r#"{"a":1,"b":[1,2,3]}"#, r#"{"a":1,"b":[1,2,3]}"#),
        (0, "", r#"{"a":1,"b":[1,2,3]}"#, r#"{"b":[3,2,1],"a":1.0}"#),
        (1, "", r#"{"n":1}"#, r#"{"n":1.0}"#),
        (
            0,
            "i:$.meta.generated_at;u:$.items",
            r#"{"meta":{"generated_at":"2024-01-01"},"items":[{"id":1},{"id":2}]}"#,
            r#"{"meta":{"generated_at":"2025-01-01"},"items":[{"id":2},{"id":1}]}"#,
        ),
        (
            0,
            "n0.01:$.total;N0.5:$..price",
            r#"{"total":100.0,"x":{"price":3}}"#,
            r#"{"total":100.5,"x":{"price":3.4}}"#,
        ),
        (
            0,
            "p:$.id;i:$..trace",
            r#"{"id":"a","trace":[1]}"#,
            r#"{"id":"b","trace":[2]}"#,
        ),
        (2 | 2 << 2, "", "hello\nworld\n", "hello\nthere\n"),
        (4 | 4 << 2, "", "\u{0}\u{1}binary", "\u{0}\u{2}binary"),
        (
            6 | 6 << 2,
            "",
            r#"[1,"two",{"three":3}]"#,
            r#"[1,"two",{"three":4}]"#,
        ),
        (
            128,
            "",
            r#"{"deep":[[[[[[[[1]]]]]]]]}"#,
            r#"{"deep":[[[[[[[[2]]]]]]]]}"#,
        ),
        (
            0,
            "u:$",
            r#"[1e400,-0,0.1,1E-7,12345678901234567890]"#,
            r#"[0.0,1e400,1e-7,12345678901234567890,0.1]"#,
        ),
        (32, "u:$[*];n0.1:$[*]", r#"[1,1.05,1.1]"#, ""),
    ];
    for (i, (opts, rules, p, m)) in cases.iter().enumerate() {
        let mut out = vec![*opts];
        out.extend_from_slice(rules.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(p.as_bytes());
        out.push(0);
        out.extend_from_slice(m.as_bytes());
        w.put(&format!("case-{i:02}"), &out);
    }
}

fn mask_record(w: &mut Writer) {
    w.target("mask_record");
    let cases: &[&[&str]] = &[
        &[
            "\u{7}\u{1}\u{1}",
            "mail alice@example.com, card 4111 1111 1111 1111, Bearer abc.def",
            "/users/bob@example.org/cart?token=s3cret&q=4111111111111111&x=%61lice%40example.com",
            r#"{"user":{"email":"carol@example.net","password":"hunter2","card":4111111111111111},"ok":true}"#,
            "GET",
            "OK",
            "Host: shop\nAuthorization: Basic dXNlcjpwYXNz\nX-Trace: eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig",
            "Set-Cookie: a=b\nContent-Type: application/json",
            "h=x-session\nj=$..ssn\nq=sig\nr=SSN-[0-9]+",
        ],
        &[
            "\u{ff}\u{ff}\u{1}\u{1}\u{1}",
            "plain text without secrets",
            "/plain/path",
            "[1,2,3]",
            "POST",
            "Not Found",
            "X-A: b",
            "",
            "",
        ],
    ];
    for (i, parts) in cases.iter().enumerate() {
        w.put(&format!("case-{i:02}"), parts.join("\u{0}").as_bytes());
    }
}
