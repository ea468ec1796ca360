//! The HTTP stage's output: one request/response exchange of a connection.
//!
//! An [`Exchange`] carries what the comparison and the exchange records need: the request and
//! response heads, the decoded bodies' length and SHA-256 (computed over the whole body) with the
//! first `max_body_bytes` kept, the 1xx codes seen, timestamps in capture time, and whether the
//! exchange is complete. Header blocks are kept as one buffer with spans, so building an exchange
//! costs a few allocations, not one per header.

use std::borrow::Cow;
use std::net::SocketAddr;

use bytes::Bytes;
use serde::Serialize;

use crate::segment::Nanos;
use crate::stream::ConnId;

/// Header fields in wire order, stored as one buffer plus spans.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers {
    buf: Bytes,
    /// `[name_start, name_end, value_start, value_end]` into `buf`.
    spans: Vec<[u32; 4]>,
}

impl Headers {
    /// Headers whose names and values are slices of `buf` at `spans`
    /// (`[name_start, name_end, value_start, value_end]`). Spans out of range are dropped.
    pub fn from_spans(buf: Bytes, spans: Vec<[u32; 4]>) -> Headers {
        let len = buf.len();
        let ok = |s: &[u32; 4]| {
            (s[0] <= s[1]) && (s[2] <= s[3]) && (s[1] as usize) <= len && (s[3] as usize) <= len
        };
        if spans.iter().all(ok) {
            Headers { buf, spans }
        } else {
            let spans = spans.into_iter().filter(ok).collect();
            Headers { buf, spans }
        }
    }

    /// Headers built from owned name/value pairs (tests, synthetic traffic).
    pub fn from_pairs<N: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(N, V)]) -> Headers {
        let mut buf = Vec::new();
        let mut spans = Vec::with_capacity(pairs.len());
        for (n, v) in pairs {
            let (n, v) = (n.as_ref(), v.as_ref());
            let ns = buf.len() as u32;
            buf.extend_from_slice(n);
            let ne = buf.len() as u32;
            buf.extend_from_slice(v);
            let ve = buf.len() as u32;
            spans.push([ns, ne, ne, ve]);
        }
        Headers {
            buf: Bytes::from(buf),
            spans,
        }
    }

    /// Number of header fields.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// No header fields.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// `(name, value)` pairs in wire order, as raw bytes.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.spans.iter().map(move |s| {
            (
                &self.buf[s[0] as usize..s[1] as usize],
                &self.buf[s[2] as usize..s[3] as usize],
            )
        })
    }

    /// The first value of header `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// The first value of header `name` as text, lossily decoded.
    pub fn get_str(&self, name: &str) -> Option<Cow<'_, str>> {
        self.get(name).map(String::from_utf8_lossy)
    }

    /// Every value of header `name` (case-insensitive), in wire order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// Copy the header block into its own allocation, so it no longer keeps a larger capture
    /// buffer alive (zero-copy parsing slices heads out of whole read chunks).
    pub fn compact(&mut self) {
        self.buf = Bytes::copy_from_slice(&self.buf);
    }

    /// Bytes held by this header block (for memory accounting).
    pub fn heap_bytes(&self) -> usize {
        self.buf.len() + self.spans.len() * 16
    }
}

/// A message body as the HTTP stage saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Body {
    /// Length after transfer-decoding and content-decoding, over the whole body.
    pub len: u64,
    /// Length after transfer-decoding only (the representation as sent).
    pub wire_len: u64,
    /// SHA-256 of the decoded bytes, over the whole body.
    pub sha256: [u8; 32],
    /// The first `max_body_bytes` decoded bytes.
    pub kept: Bytes,
    /// `kept` holds less than `len` bytes.
    pub capped: bool,
}

impl Body {
    /// An empty body (length 0, the SHA-256 of nothing).
    pub fn empty() -> Body {
        Body {
            len: 0,
            wire_len: 0,
            sha256: EMPTY_SHA256,
            kept: Bytes::new(),
            capped: false,
        }
    }

    /// A body whose whole decoded content is `data` (tests, synthetic traffic).
    pub fn from_bytes(data: impl Into<Bytes>) -> Body {
        use sha2::Digest;
        let kept: Bytes = data.into();
        Body {
            len: kept.len() as u64,
            wire_len: kept.len() as u64,
            sha256: sha2::Sha256::digest(&kept).into(),
            kept,
            capped: false,
        }
    }
}

/// SHA-256 of the empty string.
pub const EMPTY_SHA256: [u8; 32] = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// HTTP version of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    /// HTTP/1.0
    Http10,
    /// HTTP/1.1
    Http11,
}

impl Version {
    /// `"1.0"` or `"1.1"`, as in records.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "1.0",
            Version::Http11 => "1.1",
        }
    }
}

/// A request head and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Method token, e.g. `GET`.
    pub method: Bytes,
    /// Request target as sent.
    pub uri: Bytes,
    /// Protocol version.
    pub version: Version,
    /// Header fields in wire order.
    pub headers: Headers,
    /// The body.
    pub body: Body,
}

impl Request {
    /// The method as text.
    pub fn method_str(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.method)
    }
    /// The request target as text.
    pub fn uri_str(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.uri)
    }
    /// The `Host` header, if any.
    pub fn host(&self) -> Option<Cow<'_, str>> {
        self.headers.get_str("host")
    }
}

/// A final response head and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Reason phrase as sent.
    pub reason: Bytes,
    /// Protocol version.
    pub version: Version,
    /// Header fields in wire order.
    pub headers: Headers,
    /// The body.
    pub body: Body,
}

/// Why an exchange is not complete. Documented in README; the names are a contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IncompleteReason {
    /// Bytes of the exchange were not captured (loss, out-of-order overflow, idle hole).
    Gap,
    /// The capture truncated packets of the exchange (snap length).
    Snaplen,
    /// The connection ended (FIN, idle, end of capture) before the message was complete.
    Truncated,
    /// The connection was reset before the exchange was complete.
    Reset,
    /// The request got no response before the connection ended.
    NoResponse,
    /// A response whose request was never seen.
    NoRequest,
    /// A header block longer than `max_header_bytes`.
    HeaderCap,
    /// Content decoding failed or its output exceeded `max_decoded_bytes`.
    DecodeError,
    /// The message could not be parsed as HTTP/1.x.
    Malformed,
}

impl IncompleteReason {
    /// Every reason, in documentation order.
    pub const ALL: [IncompleteReason; 9] = [
        IncompleteReason::Gap,
        IncompleteReason::Snaplen,
        IncompleteReason::Truncated,
        IncompleteReason::Reset,
        IncompleteReason::NoResponse,
        IncompleteReason::NoRequest,
        IncompleteReason::HeaderCap,
        IncompleteReason::DecodeError,
        IncompleteReason::Malformed,
    ];

    /// Position of the reason in [`IncompleteReason::ALL`], for per-reason counters.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The name used in records, metrics and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            IncompleteReason::Gap => "gap",
            IncompleteReason::Snaplen => "snaplen",
            IncompleteReason::Truncated => "truncated",
            IncompleteReason::Reset => "reset",
            IncompleteReason::NoResponse => "no_response",
            IncompleteReason::NoRequest => "no_request",
            IncompleteReason::HeaderCap => "header_cap",
            IncompleteReason::DecodeError => "decode_error",
            IncompleteReason::Malformed => "malformed",
        }
    }

    /// The reason is a loss in parity's own capture rather than something the peers did.
    pub fn is_capture_loss(self) -> bool {
        matches!(self, IncompleteReason::Gap | IncompleteReason::Snaplen)
    }
}

/// A framing oddity seen in a message. Documented in README; the names are a contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Anomaly {
    /// Both `Content-Length` and `Transfer-Encoding: chunked`.
    ContentLengthAndChunked,
    /// A chunk size that is not hex, overflows, or has junk after it (including whitespace or an
    /// invalid extension after a usable size, which is tolerated but flagged), or chunk data not
    /// followed by CRLF.
    BadChunkSize,
    /// An obsolete folded header line.
    ObsFold,
    /// A `Content-Length` that is negative, not a number, or overflows.
    BadContentLength,
    /// Several `Content-Length` values that disagree.
    ConflictingContentLength,
    /// A `Content-Length` with leading zeros.
    ContentLengthLeadingZeros,
    /// `Transfer-Encoding` where `chunked` is not the last coding, or is repeated.
    ChunkedNotFinal,
    /// A `Transfer-Encoding` coding other than `chunked`. It is not decoded: with `chunked`
    /// final the de-chunked bytes are the body; without it a response is read to close and a
    /// request is malformed.
    UnknownTransferEncoding,
    /// `Expect: 100-continue` on a request with `Content-Length: 0`.
    ContentLength0AndExpect100,
    /// A header value that is not valid UTF-8 (written lossily in records).
    NonUtf8Header,
    /// Lines ended by a bare LF instead of CRLF.
    BareLf,
    /// A response arrived with no request waiting for it.
    UnsolicitedResponse,
    /// Bytes skipped while looking for the next message start after a gap or garbage.
    Resync,
    /// A `Content-Encoding` parity cannot decode; the body is compared as sent.
    UnknownContentEncoding,
    /// Data after the end of a message on a connection that announced `Connection: close`.
    DataAfterClose,
}

impl Anomaly {
    /// Every anomaly, in documentation order.
    pub const ALL: [Anomaly; 15] = [
        Anomaly::ContentLengthAndChunked,
        Anomaly::BadChunkSize,
        Anomaly::ObsFold,
        Anomaly::BadContentLength,
        Anomaly::ConflictingContentLength,
        Anomaly::ContentLengthLeadingZeros,
        Anomaly::ChunkedNotFinal,
        Anomaly::UnknownTransferEncoding,
        Anomaly::ContentLength0AndExpect100,
        Anomaly::NonUtf8Header,
        Anomaly::BareLf,
        Anomaly::UnsolicitedResponse,
        Anomaly::Resync,
        Anomaly::UnknownContentEncoding,
        Anomaly::DataAfterClose,
    ];

    /// Position of the anomaly in [`Anomaly::ALL`], for per-kind counters.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The name used in records and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Anomaly::ContentLengthAndChunked => "content_length_and_chunked",
            Anomaly::BadChunkSize => "bad_chunk_size",
            Anomaly::ObsFold => "obs_fold",
            Anomaly::BadContentLength => "bad_content_length",
            Anomaly::ConflictingContentLength => "conflicting_content_length",
            Anomaly::ContentLengthLeadingZeros => "content_length_leading_zeros",
            Anomaly::ChunkedNotFinal => "chunked_not_final",
            Anomaly::UnknownTransferEncoding => "unknown_transfer_encoding",
            Anomaly::ContentLength0AndExpect100 => "content_length_0_and_expect_100",
            Anomaly::NonUtf8Header => "non_utf8_header",
            Anomaly::BareLf => "bare_lf",
            Anomaly::UnsolicitedResponse => "unsolicited_response",
            Anomaly::Resync => "resync",
            Anomaly::UnknownContentEncoding => "unknown_content_encoding",
            Anomaly::DataAfterClose => "data_after_close",
        }
    }
}

/// One request/response exchange of a connection.
#[derive(Clone, Debug, PartialEq)]
pub struct Exchange {
    /// The connection, stable within a run.
    pub conn: ConnId,
    /// 1-based position of the exchange in its connection.
    pub trans_depth: u32,
    /// Client address.
    pub client: SocketAddr,
    /// Server address.
    pub server: SocketAddr,
    /// The request, or `None` for a response whose request was never seen.
    pub request: Option<Request>,
    /// The final response, or `None`.
    pub response: Option<Response>,
    /// 1xx status codes seen before the final response.
    pub interim: Vec<u16>,
    /// `None` when complete; otherwise why not.
    pub incomplete: Option<IncompleteReason>,
    /// Framing oddities seen in either message.
    pub anomalies: Vec<Anomaly>,
    /// First request byte.
    pub request_start: Option<Nanos>,
    /// Last request byte.
    pub request_end: Option<Nanos>,
    /// First response byte (of the final response's head or the first interim response).
    pub response_start: Option<Nanos>,
    /// Last response byte.
    pub response_end: Option<Nanos>,
}

impl Exchange {
    /// The exchange is complete: both messages fully seen.
    pub fn complete(&self) -> bool {
        self.incomplete.is_none()
    }

    /// Request start to response end, when both are known: the latency a client saw.
    pub fn latency_nanos(&self) -> Option<u64> {
        Some(self.response_end?.since(self.request_start?))
    }

    /// Copy every buffer the exchange holds into allocations of its own size. Parsing is
    /// zero-copy, so heads and kept bodies are slices of capture buffers (up to 256 KiB each in
    /// replay); an exchange kept for a while (waiting for its counterpart) must not pin them.
    pub fn compact(&mut self) {
        if let Some(r) = &mut self.request {
            r.method = Bytes::copy_from_slice(&r.method);
            r.uri = Bytes::copy_from_slice(&r.uri);
            r.headers.compact();
            r.body.kept = Bytes::copy_from_slice(&r.body.kept);
        }
        if let Some(r) = &mut self.response {
            r.reason = Bytes::copy_from_slice(&r.reason);
            r.headers.compact();
            r.body.kept = Bytes::copy_from_slice(&r.body.kept);
        }
    }

    /// Record an anomaly once.
    pub fn add_anomaly(&mut self, a: Anomaly) {
        if !self.anomalies.contains(&a) {
            self.anomalies.push(a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    #[test]
    fn empty_sha256_constant_is_the_digest_of_nothing() {
        let d: [u8; 32] = sha2::Sha256::digest(b"").into();
        assert_eq!(d, EMPTY_SHA256);
    }

    #[test]
    fn headers_lookup_is_case_insensitive_and_keeps_order() {
        let h = Headers::from_pairs(&[("Host", "a"), ("X-Id", "1"), ("x-id", "2")]);
        assert_eq!(h.get("HOST"), Some(&b"a"[..]));
        assert_eq!(h.get_all("X-ID").collect::<Vec<_>>(), vec![&b"1"[..], b"2"]);
        assert_eq!(h.len(), 3);
    }

    #[test]
    fn anomaly_and_reason_all_are_in_declaration_order() {
        for (i, a) in Anomaly::ALL.iter().enumerate() {
            assert_eq!(a.index(), i, "{}", a.as_str());
        }
        for (i, r) in IncompleteReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{}", r.as_str());
        }
    }

    #[test]
    fn headers_from_spans_drops_out_of_range_spans() {
        let h = Headers::from_spans(Bytes::from_static(b"ab"), vec![[0, 1, 1, 2], [0, 1, 1, 9]]);
        assert_eq!(h.len(), 1);
    }
}
