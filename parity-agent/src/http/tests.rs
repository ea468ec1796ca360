//! Tracker tests: framing, pairing, gaps and resync, decoding, non-HTTP, arbitrary splits.

use std::io::Write;

use bytes::Bytes;
use proptest::prelude::*;
use sha2::Digest;

use super::*;
use crate::exchange::{Body, Request, Response, Version};
use crate::segment::Nanos;
use crate::stream::{CloseReason, Direction, GapReason};

const C: Direction = Direction::ToServer;
const S: Direction = Direction::ToClient;

fn cfg() -> HttpConfig {
    HttpConfig {
        max_header_bytes: 64 * 1024,
        max_body_bytes: 1 << 20,
        max_decoded_bytes: 64 << 20,
        max_pending_requests: 100,
    }
}

/// One connection driven by hand.
struct T {
    tr: HttpTracker,
    out: Vec<Exchange>,
    ts: u64,
}

impl T {
    fn new() -> T {
        T::with(cfg())
    }

    fn with(cfg: HttpConfig) -> T {
        let mut t = T {
            tr: HttpTracker::new(cfg),
            out: Vec::new(),
            ts: 1_000,
        };
        t.open(false);
        t
    }

    fn mid_stream() -> T {
        T::mid_stream_with(cfg())
    }

    fn mid_stream_with(cfg: HttpConfig) -> T {
        let mut t = T {
            tr: HttpTracker::new(cfg),
            out: Vec::new(),
            ts: 1_000,
        };
        t.open(true);
        t
    }

    fn open(&mut self, mid_stream: bool) {
        self.tr.on_event(
            StreamEvent::Open {
                conn: ConnId(1),
                client: "10.0.0.1:40000".parse().expect("addr"),
                server: "10.0.0.2:80".parse().expect("addr"),
                ts: Nanos(self.ts),
                mid_stream,
            },
            &mut self.out,
        );
    }

    fn tick(&mut self) -> Nanos {
        self.ts += 1_000;
        Nanos(self.ts)
    }

    fn data(&mut self, dir: Direction, bytes: &[u8]) -> &mut Self {
        let ts = self.tick();
        self.tr.on_event(
            StreamEvent::Data {
                conn: ConnId(1),
                dir,
                ts,
                data: Bytes::copy_from_slice(bytes),
            },
            &mut self.out,
        );
        self
    }

    /// Feeds `bytes` one byte per event.
    /// `bytes` as events cut at the ascending offsets `cuts`.
    fn data_cut_at(&mut self, dir: Direction, bytes: &[u8], cuts: &[usize]) -> &mut Self {
        let mut from = 0;
        for &c in cuts.iter().chain([bytes.len()].iter()) {
            self.data(dir, &bytes[from..c]);
            from = c;
        }
        self
    }

    fn bytewise(&mut self, dir: Direction, bytes: &[u8]) -> &mut Self {
        for b in bytes {
            self.data(dir, std::slice::from_ref(b));
        }
        self
    }

    fn gap(&mut self, dir: Direction, len: u64) -> &mut Self {
        self.gap_why(dir, len, GapReason::Gap)
    }

    fn gap_why(&mut self, dir: Direction, len: u64, reason: GapReason) -> &mut Self {
        let ts = self.tick();
        self.tr.on_event(
            StreamEvent::Gap {
                conn: ConnId(1),
                dir,
                ts,
                len,
                reason,
            },
            &mut self.out,
        );
        self
    }

    fn fin(&mut self, dir: Direction) -> &mut Self {
        let ts = self.tick();
        self.tr.on_event(
            StreamEvent::HalfClose {
                conn: ConnId(1),
                dir,
                ts,
            },
            &mut self.out,
        );
        self
    }

    fn close(&mut self, reason: CloseReason) -> Vec<Exchange> {
        let ts = self.tick();
        self.tr.on_event(
            StreamEvent::Close {
                conn: ConnId(1),
                ts,
                reason,
                reset_by: (reason == CloseReason::Reset).then_some(S),
            },
            &mut self.out,
        );
        std::mem::take(&mut self.out)
    }

    fn take(&mut self) -> Vec<Exchange> {
        std::mem::take(&mut self.out)
    }
}

fn req(ex: &Exchange) -> &Request {
    ex.request.as_ref().expect("request")
}

fn resp(ex: &Exchange) -> &Response {
    ex.response.as_ref().expect("response")
}

fn uri(ex: &Exchange) -> String {
    String::from_utf8_lossy(&req(ex).uri).into_owned()
}

/// Each exchange's response status (`None` without a response).
fn statuses(xs: &[Exchange]) -> Vec<Option<u16>> {
    xs.iter()
        .map(|x| x.response.as_ref().map(|r| r.status))
        .collect()
}

fn kept(b: &Body) -> &[u8] {
    &b.kept
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("write");
    e.finish().expect("finish")
}

fn raw_deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("write");
    e.finish().expect("finish")
}

fn response_with(headers: &str, body: &[u8]) -> Vec<u8> {
    let mut v = format!(
        "HTTP/1.1 200 OK\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    v.extend_from_slice(body);
    v
}

#[test]
fn simple_exchange_is_complete_with_bodies_hashed_and_timed() {
    let mut t = T::new();
    t.data(
        C,
        b"POST /submit?x=1 HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\n\r\nhello",
    );
    t.data(
        S,
        b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-A: b\r\n\r\nok",
    );
    let ex = t.take();
    assert_eq!(ex.len(), 1);
    let e = &ex[0];
    assert!(e.complete(), "{:?}", e.incomplete);
    assert_eq!(e.trans_depth, 1);
    assert_eq!(&req(e).method[..], b"POST");
    assert_eq!(uri(e), "/submit?x=1");
    assert_eq!(req(e).version, Version::Http11);
    assert_eq!(req(e).host().as_deref(), Some("example.com"));
    assert_eq!(req(e).body, Body::from_bytes(&b"hello"[..]));
    assert_eq!(resp(e).status, 201);
    assert_eq!(&resp(e).reason[..], b"Created");
    assert_eq!(resp(e).headers.get("x-a"), Some(&b"b"[..]));
    assert_eq!(
        resp(e).body.sha256,
        <[u8; 32]>::from(sha2::Sha256::digest(b"ok"))
    );
    assert_eq!(e.request_start, Some(Nanos(2_000)));
    assert_eq!(e.request_end, Some(Nanos(2_000)));
    assert_eq!(e.response_start, Some(Nanos(3_000)));
    assert_eq!(e.response_end, Some(Nanos(3_000)));
    assert!(e.anomalies.is_empty());
    assert_eq!(t.tr.stats().complete, 1);
}

#[test]
fn heads_split_into_single_bytes_parse_identically() {
    let request = b"GET /a HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n";
    let response =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\n";
    let mut whole = T::new();
    whole.data(C, request).data(S, response);
    let mut split = T::new();
    split.bytewise(C, request).bytewise(S, response);
    let (a, b) = (whole.take(), split.take());
    assert_eq!(a.len(), 1);
    assert!(a[0].complete());
    assert_eq!(kept(&resp(&a[0]).body), b"abc");
    assert_eq!(a[0].request, b[0].request);
    assert_eq!(a[0].response, b[0].response);
    assert_eq!(a[0].anomalies, b[0].anomalies);
}

#[test]
fn pipelined_requests_pair_fifo_with_depths() {
    let mut t = T::new();
    t.data(
        C,
        b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nHEAD /3 HTTP/1.1\r\n\r\n",
    );
    t.data(S, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nAHTTP/1.1 404 Nope\r\nContent-Length: 2\r\n\r\nBB");
    t.data(S, b"HTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n");
    let ex = t.close(CloseReason::Fin);
    let got: Vec<_> = ex
        .iter()
        .map(|e| (e.trans_depth, uri(e), resp(e).status, e.complete()))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, "/1".into(), 200, true),
            (2, "/2".into(), 404, true),
            (3, "/3".into(), 200, true)
        ]
    );
    assert_eq!(kept(&resp(&ex[1]).body), b"BB");
    assert_eq!(
        resp(&ex[2]).body,
        Body::empty(),
        "HEAD response has no body"
    );
}

#[test]
fn no_body_statuses_and_extra_crlf_between_messages() {
    let mut t = T::new();
    t.data(
        C,
        b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\n\r\n",
    );
    t.data(S, b"HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n");
    t.data(
        S,
        b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n\r\n",
    );
    t.data(S, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi");
    let ex = t.take();
    assert_eq!(ex.len(), 3);
    assert!(ex.iter().all(Exchange::complete));
    assert_eq!(kept(&resp(&ex[2]).body), b"hi");
}

#[test]
fn close_delimited_response_completes_on_server_fin_and_not_on_reset() {
    let mut t = T::new();
    t.data(C, b"GET / HTTP/1.0\r\n\r\n");
    t.data(S, b"HTTP/1.0 200 OK\r\n\r\nsome ").data(S, b"bytes");
    t.fin(S);
    let ex = t.take();
    assert_eq!(ex.len(), 1);
    assert!(ex[0].complete());
    assert_eq!(kept(&resp(&ex[0]).body), b"some bytes");

    let mut t = T::new();
    t.data(C, b"GET / HTTP/1.0\r\n\r\n");
    t.data(S, b"HTTP/1.0 200 OK\r\n\r\npartial");
    let ex = t.close(CloseReason::Reset);
    assert_eq!(ex[0].incomplete, Some(IncompleteReason::Reset));
}

#[test]
fn interim_responses_are_recorded_before_the_final_one() {
    let mut t = T::new();
    t.data(
        C,
        b"POST /up HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
    );
    t.data(
        S,
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n",
    );
    t.data(C, b"data");
    t.data(S, b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let ex = t.take();
    assert_eq!(ex.len(), 1);
    assert!(ex[0].complete());
    assert_eq!(ex[0].interim, vec![100, 100, 103]);
    assert_eq!(resp(&ex[0]).status, 200);
    assert_eq!(kept(&req(&ex[0]).body), b"data");
    assert_eq!(
        ex[0].response_start,
        Some(Nanos(3_000)),
        "first interim byte"
    );
}

#[test]
fn switching_protocols_ends_http_parsing() {
    let mut t = T::new();
    t.data(
        C,
        b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x05hello",
    );
    t.data(S, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x02hi");
    t.data(C, b"GET /not-http HTTP/1.1\r\n\r\n");
    let ex = t.close(CloseReason::Fin);
    assert_eq!(ex.len(), 1);
    assert!(ex[0].complete());
    assert_eq!(resp(&ex[0]).status, 101);
    let st = t.tr.stats();
    assert_eq!(st.tunnels, 1);
    assert_eq!(st.skipped(SkipReason::Tunnel), 7 + 4 + 26);
}

#[test]
fn declined_upgrade_resumes_client_parsing() {
    let mut t = T::new();
    t.data(
        C,
        b"GET /a HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
    );
    t.data(S, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb");
    let ex = t.take();
    assert_eq!(ex.iter().map(uri).collect::<Vec<_>>(), vec!["/a", "/b"]);
    assert!(ex.iter().all(Exchange::complete));
}

#[test]
fn connect_tunnels_on_2xx_and_resumes_on_refusal() {
    let mut t = T::new();
    t.data(
        C,
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03\x01",
    );
    t.data(
        S,
        b"HTTP/1.1 200 Connection Established\r\n\r\n\x16\x03\x03",
    );
    let ex = t.close(CloseReason::Fin);
    assert_eq!(ex.len(), 1);
    assert_eq!(t.tr.stats().tunnels, 1);

    let mut t = T::new();
    t.data(
        C,
        b"CONNECT example.com:443 HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n",
    );
    t.data(S, b"HTTP/1.1 407 Proxy Auth\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let ex = t.take();
    assert_eq!(ex.len(), 2);
    assert_eq!(resp(&ex[0]).status, 407);
    assert_eq!(uri(&ex[1]), "/");
}

#[test]
fn transfer_encoding_wins_over_content_length() {
    let mut t = T::new();
    t.data(C, b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 50\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /next HTTP/1.1\r\n\r\n");
    let ex = t.close(CloseReason::Fin);
    assert_eq!(ex.len(), 2);
    assert_eq!(kept(&req(&ex[0]).body), b"abc");
    assert!(ex[0].anomalies.contains(&Anomaly::ContentLengthAndChunked));
    assert_eq!(uri(&ex[1]), "/next");
}

/// The request smuggling cases of Zeek's `http/261` traces: each POST is followed by a smuggled
/// GET, which must be found; the anomaly is the one Zeek's weird.log names.
#[test]
fn zeek_261_framing_edge_cases() {
    let cases: &[(&[u8], Anomaly, Option<IncompleteReason>)] = &[
        (
            b"POST / HTTP/1.1\r\nHost: target\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n\r\n",
            Anomaly::BadChunkSize,
            Some(IncompleteReason::Malformed),
        ),
        (
            b"POST / HTTP/1.1\r\nHost: target\r\nContent-Length: 18446744073709551615\r\n\r\n",
            Anomaly::BadContentLength,
            Some(IncompleteReason::Malformed),
        ),
        (
            b"POST / HTTP/1.1\r\nHost: target\r\nContent-Length: -1\r\n\r\n",
            Anomaly::BadContentLength,
            Some(IncompleteReason::Malformed),
        ),
        (
            b"POST / HTTP/1.1\r\nHost: target\r\nTransfer-Encoding: chunked\r\nContent-Length: 50\r\n\r\n0\r\n\r\n",
            Anomaly::ContentLengthAndChunked,
            Some(IncompleteReason::NoResponse),
        ),
        (
            b"POST / HTTP/1.1\r\nHost: target\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n",
            Anomaly::ContentLength0AndExpect100,
            Some(IncompleteReason::NoResponse),
        ),
        (
            b"POST / HTTP/1.1\r\nHost: target\r\nContent-Length: 00000000000000000000000000000050\r\n\r\nXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
            Anomaly::ContentLengthLeadingZeros,
            Some(IncompleteReason::NoResponse),
        ),
        (
            b"POST / HTTP/1.1\r\nHost: target\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
            Anomaly::ObsFold,
            Some(IncompleteReason::NoResponse),
        ),
        (
            b"POST / HTTP/1.1\r\nHost: target\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
            Anomaly::ChunkedNotFinal,
            Some(IncompleteReason::Malformed),
        ),
    ];
    for (i, (post, anomaly, reason)) in cases.iter().enumerate() {
        let mut t = T::new();
        let mut stream = post.to_vec();
        stream.extend_from_slice(b"GET /smuggled HTTP/1.1\r\nHost: target\r\n\r\n");
        t.data(C, &stream);
        let ex = t.close(CloseReason::Fin);
        let uris: Vec<_> = ex.iter().map(uri).collect();
        assert_eq!(uris, vec!["/", "/smuggled"], "case {i}");
        assert!(
            ex[0].anomalies.contains(anomaly),
            "case {i}: {:?}",
            ex[0].anomalies
        );
        assert_eq!(ex[0].incomplete, *reason, "case {i}");
        assert_eq!(ex[1].trans_depth, 2);
    }
}

#[test]
fn bad_response_content_length_is_malformed_and_resyncs() {
    let mut t = T::new();
    t.data(C, b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n");
    t.data(S, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxxHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\ny");
    let ex = t.take();
    assert_eq!(ex.len(), 2);
    assert_eq!(ex[0].incomplete, Some(IncompleteReason::Malformed));
    assert!(ex[0].anomalies.contains(&Anomaly::ConflictingContentLength));
    assert!(ex[1].complete());
    assert!(ex[1].anomalies.contains(&Anomaly::Resync));
    assert_eq!(kept(&resp(&ex[1]).body), b"y");
}

#[test]
fn response_without_request_is_unsolicited() {
    let mut t = T::new();
    t.data(C, b"GET /1 HTTP/1.1\r\n\r\n");
    t.data(
        S,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    );
    t.data(C, b"GET /2 HTTP/1.1\r\n\r\n");
    let ex = t.close(CloseReason::Fin);
    assert_eq!(ex.len(), 3);
    assert!(ex[1].request.is_none());
    assert_eq!(ex[1].incomplete, Some(IncompleteReason::NoRequest));
    assert!(ex[1].anomalies.contains(&Anomaly::UnsolicitedResponse));
    assert_eq!(
        ex.iter().map(|e| e.trans_depth).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(ex[2].incomplete, Some(IncompleteReason::NoResponse));
}

#[test]
fn pending_requests_are_bounded() {
    let mut t = T::with(HttpConfig {
        max_pending_requests: 2,
        ..cfg()
    });
    for i in 0..5 {
        t.data(C, format!("GET /{i} HTTP/1.1\r\n\r\n").as_bytes());
    }
    let early = t.take();
    assert_eq!(
        early.iter().map(uri).collect::<Vec<_>>(),
        vec!["/0", "/1", "/2"]
    );
    assert!(early
        .iter()
        .all(|e| e.incomplete == Some(IncompleteReason::NoResponse)));
    assert_eq!(t.tr.stats().pending_overflow, 3);
    t.data(S, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let ex = t.take();
    assert_eq!(uri(&ex[0]), "/3");
    assert!(ex[0].complete());
}

#[test]
fn close_emits_pending_requests_with_the_right_reason() {
    let mut t = T::new();
    t.data(
        C,
        b"GET /1 HTTP/1.1\r\n\r\nPOST /2 HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc",
    );
    let ex = t.close(CloseReason::Fin);
    assert_eq!(ex[0].incomplete, Some(IncompleteReason::NoResponse));
    assert_eq!(ex[1].incomplete, Some(IncompleteReason::Truncated));
    assert_eq!(kept(&req(&ex[1]).body), b"abc");

    let mut t = T::new();
    t.data(C, b"GET /1 HTTP/1.1\r\n\r\n");
    let ex = t.close(CloseReason::Reset);
    assert_eq!(ex[0].incomplete, Some(IncompleteReason::Reset));

    let mut t = T::new();
    t.data(C, b"GET /1 HTTP/1.1\r\nHost: a");
    let ex = t.close(CloseReason::EndOfCapture);
    assert_eq!(ex.len(), 1);
    assert_eq!(uri(&ex[0]), "/1");
    assert_eq!(ex[0].incomplete, Some(IncompleteReason::Truncated));
}

#[test]
fn oversized_head_is_header_cap_then_resync() {
    let mut t = T::with(HttpConfig {
        max_header_bytes: 256,
        ..cfg()
    });
    let mut big = b"GET /big HTTP/1.1\r\n".to_vec();
    for i in 0..50 {
        big.extend_from_slice(format!("X-Filler-{i}: 0123456789\r\n").as_bytes());
    }
    big.extend_from_slice(b"\r\nGET /small HTTP/1.1\r\n\r\n");
    t.data(C, &big);
    t.data(S, b"HTTP/1.1 431 Too Large\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let ex = t.take();
    assert_eq!(ex.len(), 2);
    assert_eq!(uri(&ex[0]), "/big");
    assert_eq!(ex[0].incomplete, Some(IncompleteReason::HeaderCap));
    assert_eq!(resp(&ex[0]).status, 431);
    assert_eq!(uri(&ex[1]), "/small");
    assert!(ex[1].complete());
}

#[test]
fn gap_inside_content_length_body_is_consumed() {
    // suricata-verify http-gap-simple: 14 bytes of a 70-byte body lost, the next exchange intact.
    let mut t = T::new();
    t.data(C, b"GET /2 HTTP/1.0\r\n\r\n");
    t.data(
        S,
        b"HTTP/1.0 200 OK\r\nConnection: close\r\nContent-Length: 70\r\n\r\n",
    );
    t.data(S, &[b'A'; 14])
        .data(S, &[b'A'; 14])
        .gap(S, 14)
        .data(S, &[b'A'; 14])
        .data(S, &[b'A'; 14]);
    t.data(C, b"GET /3 HTTP/1.0\r\n\r\n");
    t.data(
        S,
        b"HTTP/1.0 200 OK\r\nContent-Length: 12\r\n\r\nHello People",
    );
    let ex = t.take();
    assert_eq!(ex.len(), 2);
    assert_eq!(ex[0].incomplete, Some(IncompleteReason::Gap));
    let body = &resp(&ex[0]).body;
    assert_eq!((body.len, body.wire_len, body.kept.len()), (70, 70, 28));
    assert!(ex[1].complete());
    assert!(ex[1].anomalies.contains(&Anomaly::DataAfterClose));
    assert_eq!(kept(&resp(&ex[1]).body), b"Hello People");
}

/// Zeek's 1000-requests-one-dropped-response: the first response's head is lost; every later
/// response must still pair with its own request.
#[test]
fn lost_response_head_keeps_later_pairs_aligned() {
    for body_ends_with_newline in [true, false] {
        let mut t = T::new();
        let n = 50;
        for i in 0..n {
            t.data(
                C,
                format!("GET /{i} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes(),
            );
            let body = if body_ends_with_newline {
                format!("<html>body {i}</html>\n")
            } else {
                format!("<html>body {i}</html>")
            };
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            if i == 0 {
                t.gap(S, head.len() as u64);
            } else {
                t.data(S, head.as_bytes());
            }
            t.data(S, body.as_bytes());
        }
        let ex = t.close(CloseReason::Fin);
        assert_eq!(ex.len(), n);
        assert_eq!(uri(&ex[0]), "/0");
        assert_eq!(ex[0].incomplete, Some(IncompleteReason::Gap));
        assert!(ex[0].response.is_none());
        for (i, e) in ex.iter().enumerate().skip(1) {
            assert!(e.complete(), "exchange {i}: {:?}", e.incomplete);
            let want = format!("body {i}<");
            let got = String::from_utf8_lossy(kept(&resp(e).body)).into_owned();
            assert!(got.contains(&want), "request /{i} paired with {got}");
        }
    }
}

#[test]
fn gap_past_the_end_of_a_body_consumes_the_next_response() {
    let mut t = T::new();
    t.data(
        C,
        b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nGET /3 HTTP/1.1\r\n\r\n",
    );
    t.data(S, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345");
    // 5 body bytes, then the whole head of response 2 and 3 of its body bytes are lost.
    let head2 = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n";
    t.gap(S, 5 + head2.len() as u64 + 3);
    t.data(S, b"xyzHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nthree");
    let ex = t.take();
    assert_eq!(ex.len(), 3);
    assert_eq!(ex[0].incomplete, Some(IncompleteReason::Gap));
    assert_eq!(resp(&ex[0]).body.len, 10);
    assert_eq!(ex[1].incomplete, Some(IncompleteReason::Gap));
    assert!(ex[1].response.is_none());
    assert!(ex[2].complete());
    assert_eq!(kept(&resp(&ex[2]).body), b"three");
}

#[test]
fn client_gap_at_a_boundary_queues_a_placeholder() {
    let mut t = T::new();
    t.data(C, b"GET /1 HTTP/1.1\r\n\r\n");
    t.gap(C, 30);
    t.data(C, b"GET /3 HTTP/1.1\r\n\r\n");
    t.data(S, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1");
    t.data(S, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n2");
    t.data(S, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n3");
    let ex = t.take();
    assert_eq!(ex.len(), 3);
    assert!(ex[1].request.is_none());
    assert_eq!(ex[1].incomplete, Some(IncompleteReason::Gap));
    assert_eq!(kept(&resp(&ex[1]).body), b"2");
    assert_eq!(uri(&ex[2]), "/3");
    assert_eq!(kept(&resp(&ex[2]).body), b"3");
    assert!(ex[2].anomalies.contains(&Anomaly::Resync));
}

#[test]
fn gap_in_chunk_framing_ends_the_message_and_resyncs() {
    let mut t = T::new();
    t.data(C, b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n");
    t.data(
        S,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
    );
    t.gap_why(S, 100, GapReason::Snaplen);
    t.data(
        S,
        b"garbage\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    );
    let ex = t.take();
    assert_eq!(ex.len(), 2);
    assert_eq!(ex[0].incomplete, Some(IncompleteReason::Snaplen));
    assert_eq!(kept(&resp(&ex[0]).body), b"ab");
    assert!(ex[1].complete());
    assert_eq!(t.tr.stats().skipped(SkipReason::Resync), 9);
    assert_eq!(t.tr.stats().gap_bytes, 100);
}

#[test]
fn gap_inside_a_head_salvages_the_request_line() {
    let mut t = T::new();
    t.data(C, b"GET /cut HTTP/1.1\r\nHost: a");
    t.gap(C, 20);
    t.data(C, b"\r\n\r\nGET /next HTTP/1.1\r\n\r\n");
    t.data(
        S,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    );
    let ex = t.take();
    assert_eq!(ex.len(), 2);
    assert_eq!(uri(&ex[0]), "/cut");
    assert_eq!(ex[0].incomplete, Some(IncompleteReason::Gap));
    assert_eq!(uri(&ex[1]), "/next");
    assert!(ex[1].complete());
}

#[test]
fn non_http_connections_are_ignored() {
    let tls = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03rest of a client hello\r\n\r\n";
    for first in [
        &tls[..],
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"\x00\x01\x02garbage",
    ] {
        let mut t = T::new();
        t.data(C, first)
            .data(S, b"HTTP/1.1 200 OK\r\n\r\n")
            .data(C, b"GET / HTTP/1.1\r\n\r\n");
        let ex = t.close(CloseReason::Fin);
        assert!(ex.is_empty(), "{:?}", String::from_utf8_lossy(first));
        let st = t.tr.stats();
        assert_eq!(st.non_http_connections, 1);
        assert_eq!(st.exchanges, 0);
        assert!(st.skipped(SkipReason::NonHttp) > 0);
    }
}

#[test]
fn mid_stream_connection_resyncs_to_the_first_message() {
    let mut t = T::mid_stream();
    t.data(C, b"tail of a body\r\nGET /x HTTP/1.1\r\n\r\n");
    t.data(
        S,
        b"end of an earlier responseHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    );
    let ex = t.take();
    assert_eq!(ex.len(), 1);
    assert_eq!(uri(&ex[0]), "/x");
    assert!(ex[0].complete());
}

#[test]
fn content_encodings_are_decoded() {
    let text = b"decoded body text, decoded body text, decoded body text".repeat(50);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("gzip", gzip(&text)),
        ("x-gzip", gzip(&text)),
        ("deflate", raw_deflate(&text)),
        ("zstd", zstd::encode_all(&text[..], 3).expect("zstd")),
        (
            "gzip, zstd",
            zstd::encode_all(&gzip(&text)[..], 3).expect("zstd"),
        ),
        ("identity", text.clone()),
    ];
    for (coding, wire) in cases {
        let mut t = T::new();
        t.data(C, b"GET / HTTP/1.1\r\n\r\n");
        t.data(
            S,
            &response_with(&format!("Content-Encoding: {coding}\r\n"), &wire),
        );
        let ex = t.take();
        let body = &resp(&ex[0]).body;
        assert!(ex[0].complete(), "{coding}: {:?}", ex[0].incomplete);
        assert_eq!(body.len, text.len() as u64, "{coding}");
        assert_eq!(body.wire_len, wire.len() as u64, "{coding}");
        assert_eq!(kept(body), &text[..], "{coding}");
        assert_eq!(
            body.sha256,
            <[u8; 32]>::from(sha2::Sha256::digest(&text)),
            "{coding}"
        );
    }
}

#[test]
fn unknown_coding_is_kept_as_sent() {
    let mut t = T::new();
    t.data(C, b"GET / HTTP/1.1\r\n\r\n");
    t.data(
        S,
        &response_with("Content-Encoding: compress\r\n", b"\x1f\x9d\x90raw"),
    );
    let ex = t.take();
    assert!(ex[0].complete());
    assert!(ex[0].anomalies.contains(&Anomaly::UnknownContentEncoding));
    assert_eq!(kept(&resp(&ex[0]).body), b"\x1f\x9d\x90raw");
}

#[test]
fn decompression_bomb_and_corrupt_data_are_decode_errors() {
    let mut t = T::with(HttpConfig {
        max_decoded_bytes: 1 << 20,
        max_body_bytes: 1024,
        ..cfg()
    });
    let bomb = gzip(&vec![0u8; 20 << 20]);
    t.data(
        C,
        b"GET /bomb HTTP/1.1\r\n\r\nGET /bad HTTP/1.1\r\n\r\nGET /next HTTP/1.1\r\n\r\n",
    );
    t.data(S, &response_with("Content-Encoding: gzip\r\n", &bomb));
    t.data(
        S,
        &response_with("Content-Encoding: gzip\r\n", b"\x1f\x8b\x08\x00corrupt!"),
    );
    t.data(S, &response_with("", b"fine"));
    let ex = t.take();
    assert_eq!(ex.len(), 3);
    assert_eq!(ex[0].incomplete, Some(IncompleteReason::DecodeError));
    assert!(resp(&ex[0]).body.len <= 1 << 20);
    assert_eq!(resp(&ex[0]).body.wire_len, bomb.len() as u64);
    assert_eq!(ex[1].incomplete, Some(IncompleteReason::DecodeError));
    assert!(ex[2].complete(), "framing continues after decode errors");
    let st = t.tr.stats();
    assert_eq!((st.decode_limit_exceeded, st.decode_errors), (1, 1));
}

#[test]
fn body_cap_keeps_a_prefix_but_hashes_everything() {
    let mut t = T::with(HttpConfig {
        max_body_bytes: 10,
        ..cfg()
    });
    let body: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    t.data(C, b"GET / HTTP/1.1\r\n\r\n");
    let mut r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for piece in body.chunks(300) {
        r.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        r.extend_from_slice(piece);
        r.extend_from_slice(b"\r\n");
    }
    r.extend_from_slice(b"0\r\n\r\n");
    t.bytewise(S, &r);
    let ex = t.take();
    let b = &resp(&ex[0]).body;
    assert_eq!(b.len, 1000);
    assert_eq!(b.kept.len(), 10);
    assert!(b.capped);
    assert_eq!(b.sha256, <[u8; 32]>::from(sha2::Sha256::digest(&body)));
}

#[test]
fn header_oddities_are_flagged() {
    let mut t = T::new();
    t.data(C, b"GET /a HTTP/1.1\nX-Latin: caf\xe9\n\n");
    t.data(C, b"GET /b HTTP/1.0\r\n\r\nGET /c HTTP/1.1\r\n\r\n");
    let ex = t.close(CloseReason::Fin);
    assert!(ex[0].anomalies.contains(&Anomaly::BareLf));
    assert!(ex[0].anomalies.contains(&Anomaly::NonUtf8Header));
    assert_eq!(req(&ex[0]).headers.get("x-latin"), Some(&b"caf\xe9"[..]));
    assert!(!ex[1].anomalies.contains(&Anomaly::DataAfterClose));
    assert!(
        ex[2].anomalies.contains(&Anomaly::DataAfterClose),
        "HTTP/1.0 without keep-alive"
    );
}

#[test]
fn garbage_at_a_request_boundary_keeps_pairing() {
    let mut t = T::new();
    t.data(
        C,
        b"GET /1 HTTP/1.1\r\n\r\n\x01\x02 not a request\r\nGET /3 HTTP/1.1\r\n\r\n",
    );
    t.data(S, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1");
    t.data(S, b"HTTP/1.1 400 Bad Request\r\nContent-Length: 1\r\n\r\n2");
    t.data(S, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n3");
    let ex = t.take();
    assert_eq!(ex.len(), 3);
    assert!(ex[1].request.is_none());
    assert_eq!(ex[1].incomplete, Some(IncompleteReason::Malformed));
    assert_eq!(resp(&ex[1]).status, 400);
    assert_eq!(uri(&ex[2]), "/3");
    assert_eq!(kept(&resp(&ex[2]).body), b"3");
}

/// A flood of half-open connections sent no byte, yet each held its parser state (most of a
/// kilobyte) outside every limit: the agent grew past `flow_memory` by twice its size.
#[test]
fn an_idle_connection_is_charged_its_state() {
    let mut t = T::new();
    assert_eq!(t.tr.memory_used(), CONN_COST);
    assert!(CONN_COST > size_of::<conn::Conn>());
    for i in 2..=100u64 {
        t.tr.on_event(
            StreamEvent::Open {
                conn: ConnId(i),
                client: std::net::SocketAddr::from(([10, 0, 0, 1], 40_000 + i as u16)),
                server: "10.0.0.2:80".parse().expect("addr"),
                ts: Nanos(t.ts),
                mid_stream: false,
            },
            &mut t.out,
        );
    }
    assert_eq!(t.tr.memory_used(), 100 * CONN_COST);
    t.close(CloseReason::Fin);
    assert_eq!(t.tr.memory_used(), 99 * CONN_COST);
}

/// An idle keep-alive connection keeps its request queue's capacity; that capacity was not
/// charged, and each entry held a whole request slot (about 450 bytes), so an idle connection
/// cost twice its accounting (measured with a counting allocator in
/// `examples/reassembly_bench.rs memory`). Entries are boxed now, the capacity is charged, and
/// after a burst of pipelined requests it shrinks back once the queue is empty.
#[test]
fn an_idle_connection_is_charged_its_request_queue_capacity() {
    let mut t = T::new();
    let burst = "GET /p HTTP/1.1\r\nHost: a\r\n\r\n".repeat(40);
    t.data(C, burst.as_bytes());
    let waiting = t.tr.memory_used();
    assert!(waiting >= CONN_COST + 40 * size_of::<usize>(), "{waiting}");
    t.data(S, "HTTP/1.1 204 No Content\r\n\r\n".repeat(40).as_bytes());
    assert_eq!(t.take().len(), 40);
    let idle = t.tr.memory_used();
    assert!(idle > CONN_COST, "capacity not charged: {idle}");
    assert!(
        idle <= CONN_COST + 4 * size_of::<usize>(),
        "capacity kept: {idle}"
    );
}

#[test]
fn memory_is_accounted_and_released() {
    let mut t = T::new();
    t.data(C, b"GET / HTTP/1.1\r\nHost: partial-head");
    assert!(t.tr.memory_used() >= CONN_COST + 30);
    assert_eq!(t.tr.connections(), 1);
    t.close(CloseReason::Fin);
    assert_eq!(t.tr.memory_used(), 0);
    assert_eq!(t.tr.connections(), 0);
}

#[test]
fn events_for_unknown_connections_are_counted() {
    let mut tr = HttpTracker::new(cfg());
    let mut out = Vec::new();
    tr.on_event(
        StreamEvent::Data {
            conn: ConnId(9),
            dir: C,
            ts: Nanos(1),
            data: Bytes::from_static(b"GET / HTTP/1.1\r\n\r\n"),
        },
        &mut out,
    );
    assert!(out.is_empty());
    assert_eq!(tr.stats().unknown_connection_events, 1);
}

/// A pipelined conversation with varied framing, used by the split property.
fn conversation() -> (Vec<u8>, Vec<u8>) {
    let body = gzip(b"compressed payload compressed payload");
    let mut client = Vec::new();
    client.extend_from_slice(b"GET /1 HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n");
    client
        .extend_from_slice(b"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world");
    client.extend_from_slice(
        b"PUT /3 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4;e=1\r\nabcd\r\n0\r\nX: y\r\n\r\n",
    );
    client.extend_from_slice(b"\r\nHEAD /4 HTTP/1.1\r\n\r\n");
    let mut server = Vec::new();
    server.extend_from_slice(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\none",
    );
    server.extend_from_slice(&response_with("Content-Encoding: gzip\r\n", &body));
    server.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n");
    server.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n");
    (client, server)
}

/// Runs the conversation with the client stream cut at `cuts_c` and the server's at `cuts_s`.
fn run_split(client: &[u8], server: &[u8], cuts_c: &[usize], cuts_s: &[usize]) -> Vec<Exchange> {
    let mut t = T::new();
    for (stream, cuts, dir) in [(client, cuts_c, C), (server, cuts_s, S)] {
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
        points.push(0);
        points.push(stream.len());
        points.sort_unstable();
        points.dedup();
        for w in points.windows(2) {
            // Same timestamp for every event so that only the cut points differ.
            let ts = Nanos(5_000);
            t.tr.on_event(
                StreamEvent::Data {
                    conn: ConnId(1),
                    dir,
                    ts,
                    data: Bytes::copy_from_slice(&stream[w[0]..w[1]]),
                },
                &mut t.out,
            );
        }
    }
    t.close(CloseReason::Fin)
}

#[test]
fn conversation_parses_as_expected() {
    let (c, s) = conversation();
    let ex = run_split(&c, &s, &[], &[]);
    assert_eq!(ex.len(), 4);
    assert!(
        ex.iter().all(Exchange::complete),
        "{:?}",
        ex.iter().map(|e| e.incomplete).collect::<Vec<_>>()
    );
    assert_eq!(
        kept(&resp(&ex[1]).body),
        b"compressed payload compressed payload"
    );
    assert_eq!(kept(&req(&ex[2]).body), b"abcd");
    assert_eq!(ex[2].interim, vec![100]);
    assert_eq!(resp(&ex[3]).body, Body::empty());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_segmentation_gives_identical_exchanges(
        cuts_c in proptest::collection::vec(0usize..10_000, 0..40),
        cuts_s in proptest::collection::vec(0usize..10_000, 0..40),
    ) {
        let (c, s) = conversation();
        let whole = run_split(&c, &s, &[], &[]);
        let split = run_split(&c, &s, &cuts_c, &cuts_s);
        prop_assert_eq!(whole, split);
    }

    #[test]
    fn arbitrary_events_never_panic_and_stay_bounded(
        events in proptest::collection::vec(
            (0u8..4, proptest::collection::vec(any::<u8>(), 0..200), 0u64..300),
            0..60,
        ),
        prefix in proptest::sample::select(vec![
            &b""[..],
            &b"GET / HTTP/1.1\r\n"[..],
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
        ]),
        mid_stream in any::<bool>(),
    ) {
        let mut t = T {
            tr: HttpTracker::new(HttpConfig { max_header_bytes: 512, max_body_bytes: 64, max_decoded_bytes: 4096, max_pending_requests: 4 }),
            out: Vec::new(),
            ts: 0,
        };
        t.open(mid_stream);
        t.data(C, b"GET / HTTP/1.1\r\n\r\n");
        for (kind, bytes, len) in events {
            let mut bytes = bytes;
            if bytes.is_empty() {
                bytes = prefix.to_vec();
            }
            match kind {
                0 if !bytes.is_empty() => { t.data(C, &bytes); }
                1 if !bytes.is_empty() => { t.data(S, &bytes); }
                2 => { t.gap(if len % 2 == 0 { C } else { S }, len); }
                3 => { t.fin(if len % 2 == 0 { C } else { S }); }
                _ => {}
            }
            prop_assert!(t.tr.memory_used() < CONN_COST + 64 * 1024);
        }
        let ex = t.close(CloseReason::Reset);
        let st = t.tr.stats();
        prop_assert_eq!(st.exchanges as usize, ex.len());
        prop_assert_eq!(t.tr.memory_used(), 0);
    }
}

/// Throughput of the tracker alone and of the record writer on small keep-alive exchanges.
/// Run with `cargo test --release -p parity-agent --no-default-features --lib -- --ignored
/// http::tests::throughput --nocapture`.
#[test]
#[ignore = "benchmark; run in release mode"]
fn throughput() {
    const CONNS: u64 = 1000;
    const PER_CONN: u64 = 100;
    let request = b"GET /api/v1/items/12345?page=2 HTTP/1.1\r\nHost: shop.example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/120.0\r\nAccept: application/json\r\nAccept-Encoding: gzip, deflate, br\r\nAccept-Language: en-US,en;q=0.5\r\nConnection: keep-alive\r\nX-Request-Id: 7f3c2a9e-1b4d-4e8f-9a6b-2c1d0e9f8a7b\r\nCookie: session=abcdef0123456789\r\nCache-Control: no-cache\r\n\r\n";
    let body = br#"{"id":12345,"name":"widget","price":19.99,"tags":["a","b"],"stock":42}"#;
    let response = format!(
        "HTTP/1.1 200 OK\r\nServer: nginx/1.25.3\r\nDate: Sat, 28 Nov 2026 12:00:00 GMT\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: keep-alive\r\nCache-Control: private, max-age=0\r\nX-Request-Id: 7f3c2a9e-1b4d-4e8f-9a6b-2c1d0e9f8a7b\r\nVary: Accept-Encoding\r\nStrict-Transport-Security: max-age=31536000\r\n\r\n",
        body.len()
    );
    let mut resp_bytes = response.into_bytes();
    resp_bytes.extend_from_slice(body);
    let mut events = Vec::new();
    for c in 0..CONNS {
        events.push(StreamEvent::Open {
            conn: ConnId(c),
            client: "10.0.0.1:40000".parse().expect("addr"),
            server: "10.0.0.2:80".parse().expect("addr"),
            ts: Nanos(c),
            mid_stream: false,
        });
    }
    for i in 0..PER_CONN {
        for c in 0..CONNS {
            let ts = Nanos(1_000_000 + i * CONNS + c);
            events.push(StreamEvent::Data {
                conn: ConnId(c),
                dir: C,
                ts,
                data: Bytes::copy_from_slice(request),
            });
            events.push(StreamEvent::Data {
                conn: ConnId(c),
                dir: S,
                ts,
                data: Bytes::copy_from_slice(&resp_bytes),
            });
        }
    }
    for c in 0..CONNS {
        events.push(StreamEvent::Close {
            conn: ConnId(c),
            ts: Nanos(u64::MAX / 2),
            reason: CloseReason::Fin,
            reset_by: None,
        });
    }
    let wire_bytes: usize = (request.len() + resp_bytes.len()) * (CONNS * PER_CONN) as usize;
    // Peer in the same run: httparse alone on the same two heads, to tell the machine's speed
    // (shared, loaded machines drift) from the tracker's cost.
    let cpu = thread_cpu_secs();
    let mut fields = 0usize;
    for _ in 0..CONNS * PER_CONN {
        let mut h = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Request::new(&mut h);
        let _ = r.parse(std::hint::black_box(&request[..]));
        fields += r.headers.len();
        let mut h = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Response::new(&mut h);
        let _ = r.parse(std::hint::black_box(&resp_bytes[..]));
        fields += r.headers.len();
    }
    let base = thread_cpu_secs() - cpu;
    eprintln!(
        "httparse alone: {:.2}M request+response head pairs/s ({fields} fields)",
        (CONNS * PER_CONN) as f64 / base / 1e6
    );
    // Second peer: httparse over the same (cold) event buffers the tracker reads.
    let cpu = thread_cpu_secs();
    let mut heads = 0usize;
    for ev in &events {
        if let StreamEvent::Data { dir, data, .. } = ev {
            let mut h = [httparse::EMPTY_HEADER; 32];
            heads += match dir {
                Direction::ToServer => httparse::Request::new(&mut h).parse(data).is_ok(),
                Direction::ToClient => httparse::Response::new(&mut h).parse(data).is_ok(),
            } as usize;
        }
    }
    let cold = thread_cpu_secs() - cpu;
    eprintln!(
        "httparse over the event buffers: {:.2}M request+response pairs/s ({heads} heads)",
        (CONNS * PER_CONN) as f64 / cold / 1e6
    );
    // Head parsing alone, as the tracker does it (httparse plus framing facts and spans).
    let cpu = thread_cpu_secs();
    let mut parsed = 0usize;
    for ev in &events {
        if let StreamEvent::Data { dir, data, .. } = ev {
            let kind = if *dir == C {
                parser::Kind::Request
            } else {
                parser::Kind::Response
            };
            let end = parser::scan_head(b"", data).end.unwrap_or(data.len());
            parsed += parser::parse_head(kind, &data.slice(..end), Some(false)).is_ok() as usize;
        }
    }
    let heads_only = thread_cpu_secs() - cpu;
    eprintln!(
        "parse_head over the event buffers: {:.2}M request+response pairs/s ({parsed} heads)",
        (CONNS * PER_CONN) as f64 / heads_only / 1e6
    );
    let mut tr = HttpTracker::new(cfg());
    let mut out = Vec::with_capacity(16);
    let mut sample = Vec::with_capacity(1000);
    let mut count = 0usize;
    let mono = |()| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
    };
    let mono_start = mono(());
    let (wall, cpu) = (std::time::Instant::now(), thread_cpu_secs());
    for ev in events {
        tr.on_event(ev, &mut out);
        count += out.len();
        if sample.len() < 1000 {
            sample.append(&mut out);
        } else {
            out.clear();
        }
    }
    let (wall, cpu) = (wall.elapsed().as_secs_f64(), thread_cpu_secs() - cpu);
    eprintln!(
        "tracker phase (CLOCK_MONOTONIC): {mono_start:.6},{:.6}",
        mono(())
    );
    assert_eq!(tr.stats().complete, CONNS * PER_CONN);
    eprintln!(
        "tracker: {count} exchanges, {:.2}M exchanges/s and {:.0} MB/s of wire bytes per CPU second ({cpu:.3}s CPU, {wall:.3}s wall)",
        count as f64 / cpu / 1e6,
        wire_bytes as f64 / cpu / 1e6,
    );
    let mut buf = Vec::with_capacity(1 << 20);
    let mut written = 0usize;
    let n = 100_000;
    let (wall, cpu) = (std::time::Instant::now(), thread_cpu_secs());
    for ex in sample.iter().cycle().take(n) {
        crate::record::write_record(ex, &mut buf);
        if buf.len() > (1 << 20) {
            written += buf.len();
            buf.clear();
        }
    }
    let (wall, cpu) = (wall.elapsed().as_secs_f64(), thread_cpu_secs() - cpu);
    written += buf.len();
    eprintln!(
        "write_record: {:.2}M records/s, {:.0} MB/s of JSON per CPU second ({} bytes/record, {cpu:.3}s CPU, {wall:.3}s wall)",
        n as f64 / cpu / 1e6,
        written as f64 / cpu / 1e6,
        written / n
    );
}

/// CPU time of the calling thread, so that other load on a shared machine does not count.
fn thread_cpu_secs() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Found by the `http_stream` fuzzer (split invariance): after a bad chunk-size line the
/// resync rescanned the whole event from where the body reader started, so the chunk data
/// already taken as body was counted again as skipped, more or less depending on how the
/// stream was cut into events.
#[test]
fn bad_chunk_line_skips_only_the_bad_line_in_any_split() {
    let input: &[u8] = b"PUT /url HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nfoo\r\n\r\n";
    for cut in 0..=input.len() {
        let mut t = T::new();
        t.data(C, &input[..cut]).data(C, &input[cut..]);
        let xs = t.close(CloseReason::Fin);
        assert_eq!(xs.len(), 1, "cut {cut}");
        let body = &xs[0].request.as_ref().expect("request").body;
        assert_eq!(&body.kept[..], b"foo", "cut {cut}");
        assert_eq!(
            xs[0].incomplete,
            Some(IncompleteReason::Malformed),
            "cut {cut}"
        );
        // The empty line where a chunk size belongs, and nothing else.
        assert_eq!(t.tr.stats().skipped(SkipReason::Resync), 2, "cut {cut}");
    }
}

/// The same bug on the server side: a status line inside a bad chunk-size line was found or
/// missed depending on where the line was cut, because the line's part from an earlier event
/// was not rescanned.
#[test]
fn status_line_in_a_bad_chunk_line_is_found_in_any_split() {
    let resp: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\nxHTTP/1.1 204 No Content\r\n\r\n";
    for cut in 0..=resp.len() {
        let mut t = T::new();
        t.data(C, b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n");
        t.bytewise(S, &resp[..cut]).data(S, &resp[cut..]);
        let xs = t.close(CloseReason::Fin);
        let statuses = statuses(&xs);
        assert_eq!(statuses, [Some(200), Some(204)], "cut {cut}");
        assert_eq!(t.tr.stats().skipped(SkipReason::Resync), 1, "cut {cut}");
    }
}

/// Found by the `http_stream` fuzzer (split invariance): a connection whose first bytes are
/// not HTTP was counted as non-HTTP when its first event was short, but as an oversized head
/// (`header_cap`, then resync) when the same bytes came in one event longer than
/// `max_header_bytes`, because the size check ran before the start-line check.
#[test]
fn garbage_longer_than_the_head_cap_is_non_http_in_any_split() {
    let small = HttpConfig {
        max_header_bytes: 200,
        ..cfg()
    };
    let mut garbage = b"\xabT /1 HTTP/1.1\r\nHost: a\r\n".to_vec();
    garbage.resize(1000, b'x');
    for (dir, cut) in [(S, 0), (S, 1), (S, 500), (C, 0), (C, 1), (C, 500)] {
        let mut t = T::with(small.clone());
        t.data(dir, &garbage[..cut]).data(dir, &garbage[cut..]);
        let xs = t.close(CloseReason::Fin);
        assert!(xs.is_empty(), "{dir:?} cut {cut}: {xs:?}");
        let st = t.tr.stats();
        assert_eq!(st.non_http_connections, 1, "{dir:?} cut {cut}");
        assert_eq!(st.skipped(SkipReason::NonHttp), 1000, "{dir:?} cut {cut}");
    }
    // Garbage after a message, longer than the cap: a resync in any split, never header_cap.
    for cut in [0, 1, 500] {
        let mut t = T::with(small.clone());
        t.data(C, b"GET / HTTP/1.1\r\n\r\n");
        t.data(C, &garbage[..cut]).data(C, &garbage[cut..]);
        let xs = t.close(CloseReason::Fin);
        assert!(
            xs.iter()
                .all(|x| x.incomplete != Some(IncompleteReason::HeaderCap)),
            "cut {cut}: {xs:?}"
        );
    }
}

/// Found by the `http_stream` fuzzer (split invariance): when a head passed
/// `max_header_bytes` and its end was not in the same event, the rest of the event was dropped
/// with it, unscanned and uncounted, so a response that followed in the same event was lost;
/// cut into smaller events, the same bytes were scanned and the response found. When the end
/// was in the event, the rest of the head was skipped unscanned instead.
#[test]
fn bytes_after_an_oversized_head_are_scanned_in_any_split() {
    let small = HttpConfig {
        max_header_bytes: 200,
        ..cfg()
    };
    let mut resp = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..20 {
        resp.extend_from_slice(format!("X-Filler-{i}: 0123456789\r\n").as_bytes());
    }
    let head_end = resp.len() + 2;
    // No blank line: the oversized head never ends, then a complete response.
    resp.extend_from_slice(b"HTTP/1.1 204 No Content\r\n\r\n");
    let with_end = {
        let mut r = resp[..head_end - 2].to_vec();
        r.extend_from_slice(b"\r\nHTTP/1.1 204 No Content\r\n\r\n");
        r
    };
    for (name, input) in [("endless", &resp), ("ended", &with_end)] {
        let mut skipped = None;
        for cut in [0, 100, 200, 250, head_end, input.len()] {
            let cut = cut.min(input.len());
            let mut t = T::with(small.clone());
            t.data(C, b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n");
            t.data(S, &input[..cut]).data(S, &input[cut..]);
            let xs = t.close(CloseReason::Fin);
            let statuses = statuses(&xs);
            assert_eq!(statuses, [Some(200), Some(204)], "{name} cut {cut}");
            assert_eq!(
                xs[0].incomplete,
                Some(IncompleteReason::HeaderCap),
                "{name} cut {cut}"
            );
            let s = t.tr.stats().skipped(SkipReason::Resync);
            assert_eq!(
                *skipped.get_or_insert(s),
                s,
                "{name} cut {cut}: skipped bytes differ"
            );
        }
    }
}

/// Found by the `http_stream` fuzzer (split invariance): while resynchronising, a candidate
/// status line cut by the end of an event was buffered, and when it proved invalid the whole
/// buffered line was dropped, with a valid status line later on the same line (`HTTP/1.1
/// 2HTTP/1.1 204 ...`); in one event the same bytes were rescanned from the byte after the bad
/// candidate and the response was found. The fuzzer's input (server bytes after a gap) is the
/// second case.
#[test]
fn status_line_after_a_bad_one_on_the_same_line_is_found_in_any_split() {
    let minimal: &[u8] = b"\r\nHTTP/1.1 2HTTP/1.1 204 No Content\r\n\r\n";
    let fuzzed: &[u8] = b"\r\nHTTP/1.1 2HTTP/1.1 202 Accepted\r\nols\rent-Length: 5\r\n\r\nCCCC";
    for (name, resp, status, reason) in [
        ("minimal", minimal, 204, None),
        ("fuzzed", fuzzed, 202, Some(IncompleteReason::Malformed)),
    ] {
        let mut skipped = None;
        for cut in 0..=resp.len() {
            let mut t = T::new();
            t.data(C, b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n");
            t.gap(S, 100);
            t.bytewise(S, &resp[..cut]).data(S, &resp[cut..]);
            let xs = t.close(CloseReason::Fin);
            let statuses = statuses(&xs);
            assert_eq!(statuses, [None, Some(status)], "{name} cut {cut}");
            assert_eq!(xs[1].incomplete, reason, "{name} cut {cut}");
            let s = t.tr.stats().skipped(SkipReason::Resync);
            assert_eq!(
                *skipped.get_or_insert(s),
                s,
                "{name} cut {cut}: skipped bytes differ"
            );
        }
    }
}

/// Found by the `http_stream` fuzzer (split invariance): a request whose method is longer than
/// the start-line check allows (`MAX_METHOD_LEN`) was parsed as a request when its whole head
/// came in one event (httparse has no such limit), but judged not HTTP when the line arrived
/// in pieces and was checked before its end. The parser now applies the same limit.
#[test]
fn overlong_method_is_refused_in_any_split() {
    let mut req = b"PO".to_vec();
    req.resize(2 + 121, b'0');
    req.extend_from_slice(b"ST / HTTP/1.1\r\nost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
    let mut reference = None;
    for cut in [0, 1, 40, 64, 66, 100, req.len()] {
        // First on a connection: not HTTP, whatever the split.
        let mut t = T::new();
        t.data(C, &req[..cut]).data(C, &req[cut..]);
        let xs = t.close(CloseReason::Fin);
        assert!(xs.is_empty(), "cut {cut}: {xs:?}");
        assert_eq!(t.tr.stats().non_http_connections, 1, "cut {cut}");
        // After a request: the same exchanges and counters as in one event.
        let mut t = T::new();
        t.data(C, b"GET /first HTTP/1.1\r\n\r\n");
        t.data(C, &req[..cut]).data(C, &req[cut..]);
        let xs = t.close(CloseReason::Fin);
        let got: Vec<_> = xs
            .iter()
            .map(|x| (x.request.as_ref().map(|r| r.method.clone()), x.incomplete))
            .collect();
        let stats = t.tr.stats().clone();
        let (want, want_stats) = reference.get_or_insert((got.clone(), stats.clone()));
        assert_eq!(&got, want, "cut {cut}");
        assert_eq!(&stats, want_stats, "cut {cut}");
    }
}

#[test]
fn a_body_that_fails_to_decode_is_described_as_sent_in_any_split() {
    // Found by the `http_stream` fuzzer: a gzip body corrupt part-way recorded the bytes
    // decoded before the error, 0 in one piece and 85 or 21 in small pieces.
    let text: Vec<u8> = (0..4000u32)
        .flat_map(|i| format!("{{\"n\":{i},\"v\":\"x{}\"}}\n", i * 7919 % 1000).into_bytes())
        .collect();
    let mut body = gzip(&text);
    let mid = body.len() / 2;
    for b in &mut body[mid..mid + 16] {
        *b ^= 0x5a;
    }
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let run = |piece: usize| {
        let mut t = T::new();
        t.data(C, b"GET /x HTTP/1.1\r\n\r\n");
        t.data(S, head.as_bytes());
        for chunk in body.chunks(piece) {
            t.data(S, chunk);
        }
        let ex = t.take();
        assert_eq!(ex.len(), 1);
        assert_eq!(ex[0].incomplete, Some(IncompleteReason::DecodeError));
        resp(&ex[0]).body.clone()
    };
    let whole = run(body.len());
    assert_eq!(whole.len, body.len() as u64);
    assert_eq!(whole.sha256, <[u8; 32]>::from(sha2::Sha256::digest(&body)));
    assert!(whole.kept.is_empty() && whole.capped);
    for piece in [1, 7, 512] {
        assert_eq!(run(piece), whole, "pieces of {piece}");
    }
}

#[test]
fn a_head_cut_at_the_cap_ends_at_the_time_of_its_last_bytes_in_any_split() {
    // Found by the `http_stream` fuzzer: the head's end time was the event before the one that
    // crossed the cap when that event came whole, and that event's time when it came in pieces.
    let run = |pieces: &[&[u8]]| {
        let mut tr = HttpTracker::new(HttpConfig {
            max_header_bytes: 64,
            ..cfg()
        });
        let mut out = Vec::new();
        let ev = |data: &[u8], ts: u64| StreamEvent::Data {
            conn: ConnId(1),
            dir: C,
            ts: Nanos(ts),
            data: Bytes::copy_from_slice(data),
        };
        tr.on_event(
            StreamEvent::Open {
                conn: ConnId(1),
                client: "10.0.0.1:40000".parse().expect("addr"),
                server: "10.0.0.2:80".parse().expect("addr"),
                ts: Nanos(1_000),
                mid_stream: false,
            },
            &mut out,
        );
        tr.on_event(ev(b"GET / HTTP/1.1\r\nA: ", 2_000), &mut out);
        for p in pieces {
            tr.on_event(ev(p, 3_000), &mut out);
        }
        tr.on_event(
            StreamEvent::Close {
                conn: ConnId(1),
                ts: Nanos(4_000),
                reason: CloseReason::Fin,
                reset_by: None,
            },
            &mut out,
        );
        assert_eq!(out[0].incomplete, Some(IncompleteReason::HeaderCap));
        out[0].request_end
    };
    let filler = [b'x'; 100];
    let whole = run(&[&filler]);
    assert_eq!(whole, Some(Nanos(3_000)));
    assert_eq!(run(&[&filler[..30], &filler[30..]]), whole);
}

#[test]
fn a_request_after_a_bad_head_ending_in_an_empty_line_is_found_in_any_split() {
    // Found by the `http_stream` fuzzer: an invalid head whose last line is empty made the
    // resynchronisation skip the line after it when both came in one event (the next candidate
    // was searched from the byte after the empty line's line end, so the request line there was
    // passed over), and find it when the empty line ended an event.
    let stream: &[u8] =
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET/  HTTP/1.1\r\nX\r\n\nHosT / HTTP/1.1\r\nHost: a\r\n\r\n";
    let methods = |cut: Option<usize>| {
        let mut t = T::new();
        match cut {
            None => {
                t.data(C, stream);
            }
            Some(k) => {
                t.data(C, &stream[..k]).data(C, &stream[k..]);
            }
        }
        t.data(S, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        t.close(CloseReason::Fin)
            .iter()
            .filter_map(|x| {
                x.request
                    .as_ref()
                    .map(|r| String::from_utf8_lossy(&r.method).into_owned())
            })
            .collect::<Vec<_>>()
    };
    let whole = methods(None);
    assert!(whole.contains(&"HosT".to_string()), "{whole:?}");
    let empty_line_end = stream.len() - "HosT / HTTP/1.1\r\nHost: a\r\n\r\n".len();
    for k in [empty_line_end, empty_line_end - 1, 40, 60] {
        assert_eq!(methods(Some(k)), whole, "cut at {k}");
    }
}

#[test]
fn a_head_just_over_the_cap_is_cut_whether_it_comes_whole_or_in_pieces() {
    // Found by the `http_stream` fuzzer: the fast path took a head of up to `cap + 4` bytes when
    // it came in one event, the buffered path cut it at `cap`.
    let head = b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n";
    for cap in [head.len() - 3, head.len() - 1, head.len(), head.len() + 1] {
        let outcome = |pieces: &[&[u8]]| {
            let mut t = T::with(HttpConfig {
                max_header_bytes: cap,
                ..cfg()
            });
            for p in pieces {
                t.data(C, p);
            }
            let ex = t.close(CloseReason::Fin);
            (ex[0].incomplete, req(&ex[0]).headers.len())
        };
        let whole = outcome(&[head]);
        assert_eq!(
            whole.0 == Some(IncompleteReason::HeaderCap),
            head.len() > cap,
            "cap {cap}: {whole:?}"
        );
        assert_eq!(outcome(&[&head[..20], &head[20..]]), whole, "cap {cap}");
    }
}

#[test]
fn a_resync_candidate_line_longer_than_the_cap_is_judged_alike_in_any_split() {
    // Found by the `http_stream` fuzzer on a mid-stream connection: a request line longer than
    // `max_header_bytes` was a candidate (then a head cut at the cap, its line lost) when it came
    // whole, dropped when it came in small pieces, and started a message whose line was kept
    // whole when the pieces grew past the cap in one step. A candidate is now judged on its
    // first `max_header_bytes` bytes only, as a head is cut at that size.
    let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(300));
    let short = "GET /next HTTP/1.1\r\nHost: a\r\n\r\n";
    let stream = format!("tail of a body\r\n{long}Host: a\r\n\r\n{short}");
    let bytes = stream.as_bytes();
    let outcome = |cuts: &[usize]| {
        let mut t = T::mid_stream_with(HttpConfig {
            max_header_bytes: 200,
            ..cfg()
        });
        t.data_cut_at(C, bytes, cuts);
        let ex = t.close(CloseReason::Fin);
        let uris: Vec<Option<String>> = ex
            .iter()
            .map(|e| e.request.as_ref().map(|_| uri(e)))
            .collect();
        (uris, t.tr.stats().clone())
    };
    let whole = outcome(&[]);
    assert_eq!(whole.0, vec![Some("/next".to_string())], "{whole:?}");
    // Small pieces, and small pieces then one piece that carries the line past the cap.
    assert_eq!(
        outcome(&(1..bytes.len()).step_by(7).collect::<Vec<_>>()),
        whole
    );
    assert_eq!(outcome(&[16, 100, 190]), whole);
}

#[test]
fn a_first_line_invalid_only_past_the_cap_is_judged_alike_in_any_split() {
    // Found by the `http_stream` fuzzer: a connection's first line that looks like a request
    // line for more than `max_header_bytes` bytes and turns invalid after them (`K PT\xff…* \0`)
    // made the connection non-HTTP when it came in one event (the whole line was judged) and a
    // head cut at the cap when it came in pieces (the line was judged on the bytes up to the
    // cap). It is judged on its first `max_header_bytes` bytes in every split.
    let mut line = b"K PT".to_vec();
    line.resize(229, 0xff);
    line.extend_from_slice(b"* \0\n\n\n");
    let outcome = |cuts: &[usize]| {
        let mut t = T::with(HttpConfig {
            max_header_bytes: 200,
            ..cfg()
        });
        t.data_cut_at(C, &line, cuts);
        let ex = t.close(CloseReason::Fin);
        (ex.len(), t.tr.stats().clone())
    };
    let whole = outcome(&[]);
    assert_eq!(whole.1.non_http_connections, 0, "{whole:?}");
    assert_eq!(
        outcome(&(1..line.len()).step_by(5).collect::<Vec<_>>()),
        whole
    );
    assert_eq!(outcome(&[150]), whole);
    assert_eq!(outcome(&[150, 210]), whole);
}
