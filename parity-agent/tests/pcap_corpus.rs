//! Conformance on public captures: our exchange records against the expected outputs shipped
//! with them (Zeek http.log and file hashes, suricata-verify checks, Arkime sessions), and
//! against tshark's decoded HTTP objects as a second, independent implementation.
//!
//! The captures are read in place from `../shared/corpus/pcap` (see its MANIFEST.md). Without
//! the corpus the tests skip loudly; under `CI=true` they fail instead.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use parity_agent::config::Config;
use parity_agent::mask::Masker;
use parity_agent::pipeline::RecordSink;
use parity_agent::replay::{replay, ReplayArgs};
use serde_json::Value;

fn corpus() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/pcap");
    if p.is_dir() {
        return Some(p);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "the corpus is missing at {} and CI=true: refusing to skip",
            p.display()
        );
    }
    eprintln!(
        "SKIPPED: the pcap corpus is missing at {} (../shared beside the checkout)",
        p.display()
    );
    None
}

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Replay `files` and return the exchange records in output order.
fn records(files: &[PathBuf]) -> Vec<Value> {
    let buf = Buf::default();
    let sink = RecordSink::new(Box::new(buf.clone()), Arc::new(Masker::disabled()));
    replay(ReplayArgs {
        files: files.to_vec(),
        config: Config::default(),
        records: Some(sink),
        progress: false,
        hook: None,
    })
    .unwrap_or_else(|e| panic!("replay of {files:?} failed: {e}"));
    let bytes = buf.0.lock().unwrap().clone();
    String::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad record {l}: {e}")))
        .collect()
}

fn file(root: &Path, rel: &str) -> PathBuf {
    root.join(rel)
}

/// Rows of a Zeek log as maps from field name to value.
fn zeek_log(path: &Path) -> Vec<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut fields: Vec<String> = Vec::new();
    let mut rows = Vec::new();
    for line in text.lines() {
        if let Some(f) = line.strip_prefix("#fields\t") {
            fields = f.split('\t').map(String::from).collect();
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if fields.is_empty() {
            // Some baselines are cut to a header line without `#fields`.
            fields = line.split('\t').map(String::from).collect();
            continue;
        }
        rows.push(
            fields
                .iter()
                .cloned()
                .zip(line.split('\t').map(String::from))
                .collect(),
        );
    }
    rows
}

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, k| &v[*k])
}

fn req_str(r: &Value, k: &str) -> String {
    s(r, &["request", k]).as_str().unwrap_or("-").to_string()
}

/// SHA-256 lines of a Zeek file-analysis baseline, in order.
fn zeek_sha256s(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("SHA256: ").map(String::from))
        .collect()
}

/// Compare our records with a Zeek http.log: count, method, host, uri, status, interim code and
/// body lengths, in order.
fn check_against_http_log(records: &[Value], log: &Path) {
    let rows = zeek_log(log);
    assert_eq!(
        records.len(),
        rows.len(),
        "transaction count vs {}",
        log.display()
    );
    for (r, z) in records.iter().zip(&rows) {
        let ctx = format!("{} trans_depth {}", log.display(), r["trans_depth"]);
        if let Some(m) = z.get("method") {
            assert_eq!(&req_str(r, "method"), m, "method: {ctx}");
        }
        if let Some(u) = z.get("uri") {
            assert_eq!(&req_str(r, "uri"), u, "uri: {ctx}");
        }
        if let Some(h) = z.get("host") {
            assert_eq!(&req_str(r, "host"), h, "host: {ctx}");
        }
        if let Some(code) = z.get("status_code").filter(|c| *c != "-") {
            assert_eq!(
                s(r, &["response", "status"]).to_string(),
                *code,
                "status: {ctx}"
            );
        }
        if let Some(len) = z.get("response_body_len").filter(|c| *c != "-") {
            assert_eq!(
                s(r, &["response", "body_len"]).to_string(),
                *len,
                "response_body_len: {ctx}"
            );
        }
        if let Some(len) = z
            .get("request_body_len")
            .filter(|c| *c != "-" && r["request"].is_object())
        {
            assert_eq!(
                s(r, &["request", "body_len"]).to_string(),
                *len,
                "request_body_len: {ctx}"
            );
        }
        if let Some(code) = z.get("info_code").filter(|c| *c != "-") {
            let interim: Vec<String> = r["interim"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.to_string())
                .collect();
            let status = s(r, &["response", "status"]).to_string();
            // Zeek's info_code is the last 1xx; for a 101 it repeats the final status.
            assert!(
                interim.last() == Some(code) || status == *code,
                "info_code {code} vs interim {interim:?}: {ctx}"
            );
        }
    }
}

#[test]
fn zeek_http_logs_agree() {
    let Some(root) = corpus() else { return };
    let cases = [
        ("zeek/get/get.pcap", "zeek/get/Baseline/core.tcp.reassembly-known-ports/http.log"),
        (
            "zeek/pipelined-requests/pipelined-requests.pcap",
            "zeek/pipelined-requests/Baseline/scripts.base.protocols.http.http-pipelining/http.log",
        ),
        (
            "zeek/100-continue/100-continue.pcap",
            "zeek/100-continue/Baseline/scripts.base.protocols.http.100-continue/http.log",
        ),
        ("zeek/x-gzip/x-gzip.pcap", "zeek/x-gzip/Baseline/scripts.base.protocols.http.x-gzip/http.log"),
        (
            "zeek/missing-zlib-header/missing-zlib-header.pcap",
            "zeek/missing-zlib-header/Baseline/scripts.base.protocols.http.missing-zlib-header/http.log",
        ),
        (
            "zeek/desync-request-response/http-desync-request-response-5.pcap",
            "zeek/desync-request-response/Baseline/scripts.base.protocols.http.http-desynched/http.log",
        ),
        (
            "zeek/websocket-101-upgrade/websocket.pcap",
            "zeek/websocket-101-upgrade/Baseline/scripts.base.protocols.http.101-switching-protocols/http.log",
        ),
    ];
    for (pcap, log) in cases {
        let recs = records(&[file(&root, pcap)]);
        check_against_http_log(&recs, &file(&root, log));
        eprintln!("ok: {pcap}: {} transactions agree with {log}", recs.len());
    }
}

#[test]
fn zeek_decoded_body_hashes_agree() {
    let Some(root) = corpus() else { return };
    // get.pcap: plain body; get-gzip.pcap: gzip-encoded, hashed after decoding (197 bytes).
    let base = "zeek/get/Baseline/scripts.base.frameworks.file-analysis.http.get";
    for (pcap, out, len) in [
        ("zeek/get/get.pcap", "get.out", 4705),
        ("zeek/get/get-gzip.pcap", "get-gzip.out", 197),
    ] {
        let recs = records(&[file(&root, pcap)]);
        assert_eq!(recs.len(), 1, "{pcap}");
        let want = zeek_sha256s(&file(&root, &format!("{base}/{out}")));
        assert_eq!(
            s(&recs[0], &["response", "body_sha256"]),
            &Value::from(want[0].clone()),
            "{pcap}"
        );
        assert_eq!(
            s(&recs[0], &["response", "body_len"]),
            &Value::from(len),
            "{pcap}"
        );
    }
    // The five pipelined responses, one gzip-encoded: hashes in order.
    let recs = records(&[file(
        &root,
        "zeek/pipelined-requests/pipelined-requests.pcap",
    )]);
    let want = zeek_sha256s(&file(
        &root,
        "zeek/pipelined-requests/Baseline/scripts.base.frameworks.file-analysis.http.pipeline/out",
    ));
    let got: Vec<String> = recs
        .iter()
        .map(|r| {
            s(r, &["response", "body_sha256"])
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(got, want);
}

#[test]
fn zeek_no_syn_flipped_roles_infers_the_client_from_the_payload() {
    let Some(root) = corpus() else { return };
    let recs = records(&[file(
        &root,
        "zeek/no-syn-flipped-roles/zeek-image-1080-80-x.pcapng",
    )]);
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!(r["flow"]["server"], "127.0.0.1:80");
    assert_eq!(r["flow"]["client"], "127.0.0.1:1080");
    assert_eq!(req_str(r, "method"), "GET");
    assert_eq!(req_str(r, "uri"), "/zeek.png");
    assert_eq!(s(r, &["response", "status"]), 200);
    assert_eq!(r["complete"], true);
}

#[test]
fn zeek_1000_requests_stay_aligned_after_one_lost_response() {
    let Some(root) = corpus() else { return };
    let recs = records(&[file(
        &root,
        "zeek/1000-requests-one-dropped-response/1000-requests-one-dropped-response.pcap.gz",
    )]);
    assert_eq!(recs.len(), 1000, "one record per request");
    let incomplete: Vec<&Value> = recs.iter().filter(|r| r["complete"] == false).collect();
    assert_eq!(
        incomplete.len(),
        1,
        "only the exchange whose response was lost"
    );
    assert_eq!(incomplete[0]["incomplete_reason"], "gap");
    assert!(
        recs.iter().all(|r| r["request"].is_object()),
        "no response lost its request"
    );
}

#[test]
fn zeek_range_requests_over_two_keepalive_connections_with_reordering() {
    let Some(root) = corpus() else { return };
    let recs = records(&[file(
        &root,
        "zeek/206-range-keepalive-ooo/206_example_c.pcap",
    )]);
    assert_eq!(recs.len(), 34);
    assert!(recs
        .iter()
        .all(|r| r["complete"] == true && s(r, &["response", "status"]) == 206));
    let conns: std::collections::BTreeSet<String> =
        recs.iter().map(|r| r["conn_id"].to_string()).collect();
    assert_eq!(conns.len(), 2);
    // Zeek reassembles the ranges into one 498668-byte file; the ranges overlap, so the bodies
    // add up to at least that.
    let total: u64 = recs
        .iter()
        .map(|r| s(r, &["response", "body_len"]).as_u64().unwrap())
        .sum();
    assert!(total >= 498_668, "{total}");
}

/// Zeek's weird names for the 261 framing cases, and ours.
const WEIRD_TO_ANOMALY: &[(&str, &str)] = &[
    ("HTTP_bad_chunk_size", "bad_chunk_size"),
    ("HTTP_chunked_multi", "chunked_not_final"),
    (
        "HTTP_content_length_0_and_expect_100_cont",
        "content_length_0_and_expect_100",
    ),
    (
        "HTTP_content_length_leading_zeros",
        "content_length_leading_zeros",
    ),
    ("HTTP_bad_content_length", "bad_content_length"),
    ("HTTP_obsolete_line_folding", "obs_fold"),
    (
        "HTTP_content_length_and_chunked",
        "content_length_and_chunked",
    ),
];

#[test]
fn zeek_framing_edge_cases_find_the_smuggled_request_and_flag_the_anomaly() {
    let Some(root) = corpus() else { return };
    let dir = root.join("zeek/261-framing-edge-cases");
    let map = [
        (
            "chunk-2pow64-overflow",
            "variant-01-chunk_2pow64_overflow.pcap",
        ),
        ("cl-uint64max", "variant-02-cl_uint64max.pcap"),
        ("cl-negative", "variant-03-cl_negative.pcap"),
        ("te-cl-desync", "variant-04-te_cl_desync.pcap"),
        ("cl-0-expect-100", "variant-07-expect_100_cl0.pcap"),
        ("cl-leading-zeros", "variant-08-leading_zeros.pcap"),
        ("obsolete-line-fold", "variant-09-te_obs_fold.pcap"),
        ("chunked-rest", "variant-10-multi_value_te.pcap"),
    ];
    for (name, pcap) in map {
        let base = dir.join(format!("Baseline/scripts.base.protocols.http.261.{name}"));
        let recs = records(&[dir.join(pcap)]);
        let mut want: Vec<(String, String)> = zeek_log(&base.join("http.log"))
            .iter()
            .map(|r| (r["method"].clone(), r["uri"].clone()))
            .collect();
        want.sort();
        let mut got: Vec<(String, String)> = recs
            .iter()
            .filter(|r| r["request"].is_object())
            .map(|r| (req_str(r, "method"), req_str(r, "uri")))
            .collect();
        got.sort();
        assert_eq!(got, want, "{name}: requests");
        for w in zeek_log(&base.join("weird.log")) {
            let weird = &w["name"];
            let ours = WEIRD_TO_ANOMALY
                .iter()
                .find(|(z, _)| z == weird)
                .map(|(_, o)| *o)
                .unwrap_or_else(|| panic!("{name}: no mapping for Zeek weird {weird}"));
            assert!(
                recs.iter()
                    .any(|r| r["anomalies"].as_array().unwrap().iter().any(|a| a == ours)),
                "{name}: Zeek flags {weird}; no record carries anomaly {ours}: {recs:#?}"
            );
        }
        eprintln!("ok: 261/{name}: {} requests, anomalies agree", got.len());
    }
}

#[test]
fn suricata_all_headers_in_wire_order() {
    let Some(root) = corpus() else { return };
    let recs = records(&[file(&root, "suricata-verify/http-all-headers/input.pcap")]);
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    let rq = r["request"]["headers"].as_array().unwrap();
    let rs = r["response"]["headers"].as_array().unwrap();
    assert_eq!(rq.len(), 9);
    assert_eq!(rs.len(), 9);
    assert_eq!(rq[0], serde_json::json!(["Host", "www.ethereal.com"]));
    assert_eq!(rs[5], serde_json::json!(["Content-Length", "18070"]));
    assert_eq!(s(r, &["response", "body_len"]), 18070);
}

#[test]
fn suricata_gap_inside_a_body_marks_only_that_exchange() {
    let Some(root) = corpus() else { return };
    let recs = records(&[file(&root, "suricata-verify/http-gap-simple/input.pcap")]);
    let uris: Vec<String> = recs.iter().map(|r| req_str(r, "uri")).collect();
    assert_eq!(uris, ["/1", "/2", "/3"]);
    assert!(recs.iter().all(|r| s(r, &["response", "status"]) == 200));
    // Suricata: two files complete, the 70-byte one truncated with gaps. (Suricata's sizes of
    // the complete ones include the CRLF the server sent after Content-Length: 12.)
    let gap: Vec<&Value> = recs
        .iter()
        .filter(|r| r["incomplete_reason"] == "gap")
        .collect();
    assert_eq!(gap.len(), 1);
    assert_eq!(s(gap[0], &["response", "body_len"]), 70);
    assert_eq!(recs.iter().filter(|r| r["complete"] == true).count(), 2);
}

#[test]
fn suricata_two_100_continues_then_200() {
    let Some(root) = corpus() else { return };
    let recs = records(&[file(&root, "suricata-verify/http-multiple100/input.pcap")]);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["interim"], serde_json::json!([100, 100]));
    assert_eq!(s(&recs[0], &["response", "status"]), 200);
    assert_eq!(recs[0]["complete"], true);
}

#[test]
fn suricata_pipeline_with_a_gap_truncates_one_733_byte_body() {
    let Some(root) = corpus() else { return };
    let recs = records(&[file(
        &root,
        "suricata-verify/http-pipeline-files-with-gap/input.pcap",
    )]);
    assert_eq!(recs.len(), 3);
    let gap: Vec<&Value> = recs
        .iter()
        .filter(|r| r["incomplete_reason"] == "gap")
        .collect();
    assert_eq!(gap.len(), 1);
    assert_eq!(s(gap[0], &["response", "body_len"]), 733);
}

fn arkime_sessions(path: &Path) -> Vec<Value> {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["sessions3"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["body"].clone())
        .collect()
}

#[test]
fn arkime_reassembly_matrix_recovers_every_request() {
    let Some(root) = corpus() else { return };
    let dir = root.join("arkime/tcp-reassembly-synthetic");
    let recs = records(&[dir.join("tcp-reassembly-synthetic.pcap")]);
    let mut want: Vec<String> = arkime_sessions(&dir.join("tcp-reassembly-synthetic.test"))
        .iter()
        .map(|s| {
            let uri = s["http"]["uri"][0].as_str().unwrap();
            // Arkime writes host + path.
            format!("/{}", uri.split_once('/').map(|(_, p)| p).unwrap_or(uri))
        })
        .collect();
    want.sort();
    let mut got: Vec<String> = recs.iter().map(|r| req_str(r, "uri")).collect();
    got.sort();
    assert_eq!(got, want);
    // Where Arkime saw a 200 with a body hash, so do we.
    for sess in arkime_sessions(&dir.join("tcp-reassembly-synthetic.test")) {
        if let Some(sha) = sess["http"]["sha256"][0].as_str() {
            assert!(
                recs.iter()
                    .any(|r| s(r, &["response", "body_sha256"]) == sha),
                "no response with Arkime's body hash {sha}"
            );
        }
    }
    // The server side of these cases is not HTTP; it must not be taken for a response.
    assert!(recs
        .iter()
        .all(|r| r["response"].is_null() || s(r, &["response", "status"]) == 200));
}

#[test]
fn arkime_duplicated_packets_and_start_at_syn_ack() {
    let Some(root) = corpus() else { return };
    // Every packet 2-4 times: the request bodies' hashes equal Arkime's exactly once each.
    let dir = root.join("arkime/wireshark-retrans");
    let recs = records(&[dir.join("wireshark-retrans.pcap")]);
    let mut got: Vec<String> = recs
        .iter()
        .map(|r| {
            s(r, &["request", "body_sha256"])
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    got.sort();
    let mut want: Vec<String> = arkime_sessions(&dir.join("wireshark-retrans.test"))[0]["http"]
        ["sha256"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    want.sort();
    assert_eq!(got, want);
    assert!(recs.iter().all(|r| r["complete"] == true));

    // Capture starts at the SYN-ACK; the close-delimited response of http-no-length.
    for (name, uri) in [("http-syn-ack", "/1"), ("http-no-length", "/js/xxxxxx.js")] {
        let dir = root.join("arkime").join(name);
        let recs = records(&[dir.join(format!("{name}.pcap"))]);
        assert_eq!(recs.len(), 1, "{name}");
        assert_eq!(req_str(&recs[0], "uri"), uri, "{name}");
        assert_eq!(s(&recs[0], &["response", "status"]), 200, "{name}");
        assert_eq!(recs[0]["complete"], true, "{name}");
    }
    // http-no-length's body is not content-encoded: Arkime's hash is over the same bytes.
    let dir = root.join("arkime/http-no-length");
    let recs = records(&[dir.join("http-no-length.pcap")]);
    let sha = arkime_sessions(&dir.join("http-no-length.test"))[0]["http"]["sha256"][0].clone();
    assert_eq!(s(&recs[0], &["response", "body_sha256"]), &sha);
}

/// tshark's decoded HTTP objects (de-chunked and decompressed), as SHA-256 hex.
fn tshark_objects(pcap: &Path) -> Option<Vec<String>> {
    let dir = tempfile::tempdir().ok()?;
    let out = std::process::Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .arg("--export-objects")
        .arg(format!("http,{}", dir.path().display()))
        .arg("-q")
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    use sha2::Digest;
    let mut hashes: Vec<String> = std::fs::read_dir(dir.path())
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read(e.path()).ok())
        .map(|b| hex(&sha2::Sha256::digest(&b)))
        .collect();
    hashes.sort();
    Some(hashes)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn decoded_bodies_equal_tsharks_exported_objects() {
    let Some(root) = corpus() else { return };
    if std::process::Command::new("tshark")
        .arg("--version")
        .output()
        .is_err()
    {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("tshark is missing and CI=true: run `cargo xtask setup`");
        }
        eprintln!("SKIPPED: tshark is not installed (cargo xtask setup installs it)");
        return;
    }
    let mut checked = 0;
    for pcap in [
        "zeek/get/get.pcap",
        "zeek/get/get-gzip.pcap",
        "zeek/pipelined-requests/pipelined-requests.pcap",
        "zeek/x-gzip/x-gzip.pcap",
        "zeek/missing-zlib-header/missing-zlib-header.pcap",
        "zeek/100-continue/100-continue.pcap",
        "arkime/http-syn-ack/http-syn-ack.pcap",
        "arkime/http-no-length/http-no-length.pcap",
        "suricata-verify/http-all-headers/input.pcap",
    ] {
        let path = file(&root, pcap);
        let Some(want) = tshark_objects(&path) else {
            panic!("tshark --export-objects failed on {pcap}");
        };
        let recs = records(&[path]);
        // tshark exports non-empty response bodies (and POST bodies it recognises as objects);
        // every one of them must be one of our decoded bodies.
        let ours: std::collections::BTreeSet<String> = recs
            .iter()
            .flat_map(|r| {
                [
                    s(r, &["response", "body_sha256"]),
                    s(r, &["request", "body_sha256"]),
                ]
                .into_iter()
                .filter_map(|v| v.as_str().map(String::from))
            })
            .collect();
        for h in &want {
            assert!(
                ours.contains(h),
                "{pcap}: tshark's object {h} is not among our bodies"
            );
        }
        checked += want.len();
    }
    eprintln!("ok: {checked} tshark objects equal our decoded bodies");
    assert!(checked >= 12, "too few objects compared: {checked}");
}

#[test]
fn every_corpus_capture_replays_without_error() {
    let Some(root) = corpus() else { return };
    let mut n = 0;
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if ["pcap", "gz", "pcapng"]
                .contains(&p.extension().and_then(|x| x.to_str()).unwrap_or(""))
            {
                let recs = records(std::slice::from_ref(&p));
                assert!(!recs.is_empty(), "{}: no exchange", p.display());
                n += 1;
            }
        }
    }
    assert_eq!(n, 28, "MANIFEST.md lists 28 captures");
}
