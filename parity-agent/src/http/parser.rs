//! Message heads: finding where a head ends, checking start lines, and parsing a complete head
//! with `httparse` into spans plus the facts that decide framing.
//!
//! This module only looks at one complete head (or the first line of one) at a time; it keeps no
//! state between calls. Framing decisions that need the other direction (a response to `HEAD`)
//! are made by the caller from the [`HeadFacts`] returned here. Obsolete line folding, which
//! `httparse` rejects, is detected here, recorded as an anomaly and unfolded before a second
//! parse; bare LF line ends, which `httparse` accepts, are flagged.

use std::mem::MaybeUninit;
use std::sync::OnceLock;

use bytes::Bytes;

use super::decode::Codings;
use super::AnomalySet;
use crate::exchange::{Anomaly, Version};

/// Longest method token accepted in a request line; longer runs of token bytes are not HTTP.
pub(crate) const MAX_METHOD_LEN: usize = 64;

/// Header slots tried first; a head with more fields is parsed again with an exact-size array.
const INLINE_HEADERS: usize = 64;

/// How the start of a buffer compares with the start-line grammar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LineCheck {
    /// A complete, valid start line of this many bytes (line end included).
    Valid(usize),
    /// Every byte so far fits; the line is not complete yet.
    NeedMore,
    /// The bytes cannot start a start line.
    Invalid,
}

/// Which kind of head a direction carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Client to server.
    Request,
    /// Server to client.
    Response,
}

/// `tchar` from RFC 9110 §5.6.2, the bytes of a method or field name.
pub(crate) fn is_tchar(b: u8) -> bool {
    matches!(b,
        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9'
        | b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+'
        | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~')
}

/// Bytes `httparse` accepts in a request target.
fn is_target_byte(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) || b >= 0x80
}

/// Bytes allowed in a reason phrase.
fn is_reason_byte(b: u8) -> bool {
    b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80
}

/// Matches `HTTP/1.0` or `HTTP/1.1` at `b[i..]`: `Ok(Some(next))`, `Ok(None)` when cut short.
fn match_version(b: &[u8], i: usize) -> Result<Option<usize>, ()> {
    const PREFIX: &[u8] = b"HTTP/1.";
    for (k, want) in PREFIX.iter().enumerate() {
        match b.get(i + k) {
            None => return Ok(None),
            Some(c) if c == want => {}
            Some(_) => return Err(()),
        }
    }
    match b.get(i + PREFIX.len()) {
        None => Ok(None),
        Some(b'0' | b'1') => Ok(Some(i + PREFIX.len() + 1)),
        Some(_) => Err(()),
    }
}

/// Matches a line end (CRLF or bare LF) at `b[i..]`.
fn match_eol(b: &[u8], i: usize) -> LineCheck {
    match b.get(i) {
        None => LineCheck::NeedMore,
        Some(b'\n') => LineCheck::Valid(i + 1),
        Some(b'\r') => match b.get(i + 1) {
            None => LineCheck::NeedMore,
            Some(b'\n') => LineCheck::Valid(i + 2),
            Some(_) => LineCheck::Invalid,
        },
        Some(_) => LineCheck::Invalid,
    }
}

/// Checks `b` against `method SP target SP HTTP/1.x CRLF`. The HTTP/2 connection preface
/// (`PRI * HTTP/2.0`, or `PRI *` with any version) is not an HTTP/1 request.
pub(crate) fn check_request_line(b: &[u8]) -> LineCheck {
    let mut i = 0;
    while i < b.len() && is_tchar(b[i]) {
        i += 1;
        if i > MAX_METHOD_LEN {
            return LineCheck::Invalid;
        }
    }
    let method_end = i;
    match b.get(i) {
        None => return LineCheck::NeedMore,
        Some(b' ') if method_end > 0 => {}
        Some(_) => return LineCheck::Invalid,
    }
    i += 1;
    let target_start = i;
    while i < b.len() && is_target_byte(b[i]) {
        i += 1;
    }
    match b.get(i) {
        None => return LineCheck::NeedMore,
        Some(b' ') if i > target_start => {}
        Some(_) => return LineCheck::Invalid,
    }
    if &b[..method_end] == b"PRI" && &b[target_start..i] == b"*" {
        return LineCheck::Invalid;
    }
    i += 1;
    match match_version(b, i) {
        Err(()) => LineCheck::Invalid,
        Ok(None) => LineCheck::NeedMore,
        Ok(Some(next)) => match_eol(b, next),
    }
}

/// Checks `b` against `HTTP/1.x SP 3DIGIT [SP reason] CRLF`.
pub(crate) fn check_status_line(b: &[u8]) -> LineCheck {
    let mut i = match match_version(b, 0) {
        Err(()) => return LineCheck::Invalid,
        Ok(None) => return LineCheck::NeedMore,
        Ok(Some(next)) => next,
    };
    match b.get(i) {
        None => return LineCheck::NeedMore,
        Some(b' ') => i += 1,
        Some(_) => return LineCheck::Invalid,
    }
    for _ in 0..3 {
        match b.get(i) {
            None => return LineCheck::NeedMore,
            Some(b'0'..=b'9') => i += 1,
            Some(_) => return LineCheck::Invalid,
        }
    }
    match b.get(i) {
        None => return LineCheck::NeedMore,
        Some(b' ') => i += 1,
        Some(_) => return match_eol(b, i),
    }
    while i < b.len() && is_reason_byte(b[i]) {
        i += 1;
    }
    match_eol(b, i)
}

/// Checks the start line of `kind`.
pub(crate) fn check_start_line(kind: Kind, b: &[u8]) -> LineCheck {
    match kind {
        Kind::Request => check_request_line(b),
        Kind::Response => check_status_line(b),
    }
}

/// Where a head ends in `data`, and whether a bare LF was seen on the way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HeadScan {
    /// Index in `data` just past the empty line that ends the head.
    pub end: Option<usize>,
    /// A line end in the scanned part is a bare LF.
    pub bare_lf: bool,
}

/// Scans `data` for the empty line that ends a head. `prev` holds the bytes of the same head
/// already buffered before `data` (only its last two bytes matter). The head must not start
/// with an empty line (the caller skips those). Each LF is visited once, so the bare-LF check
/// costs nothing extra.
pub(crate) fn scan_head(prev: &[u8], data: &[u8]) -> HeadScan {
    let back = |i: usize, k: usize| -> Option<u8> {
        // The byte `k` positions before `data[i]`, reaching into `prev`.
        if i >= k {
            data.get(i - k).copied()
        } else {
            let from_end = k - i;
            prev.len()
                .checked_sub(from_end)
                .and_then(|j| prev.get(j).copied())
        }
    };
    let mut bare_lf = false;
    for i in memchr::memchr_iter(b'\n', data) {
        match back(i, 1) {
            Some(b'\n') => {
                return HeadScan {
                    end: Some(i + 1),
                    bare_lf: true,
                }
            }
            Some(b'\r') => {
                if back(i, 2) == Some(b'\n') {
                    return HeadScan {
                        end: Some(i + 1),
                        bare_lf,
                    };
                }
            }
            _ => bare_lf = true,
        }
    }
    HeadScan { end: None, bare_lf }
}

/// The common case in one SIMD search: `data` starts with a whole head whose lines all end in
/// CRLF, within `cap` bytes. Returns the index just past its final empty line, or `None` when
/// the head is incomplete, longer than `cap`, or has a bare LF (then [`scan_head`] decides).
pub(crate) fn fast_head_end(data: &[u8], cap: usize) -> Option<usize> {
    static CRLFCRLF: OnceLock<memchr::memmem::Finder<'static>> = OnceLock::new();
    let finder = CRLFCRLF.get_or_init(|| memchr::memmem::Finder::new(b"\r\n\r\n"));
    // The whole head, its final empty line included, must fit in `cap`, as on the slow path.
    let window = &data[..data.len().min(cap)];
    let end = finder.find(window)? + 4;
    let head = &data[..end];
    // Every LF preceded by a CR (lone CRs are rejected by the parser later): no earlier end.
    (!has_bare_lf(head)).then_some(end)
}

/// Index in `data` just past the empty line that ends a head (see [`scan_head`]).
#[cfg(test)]
pub(crate) fn find_head_end(prev: &[u8], data: &[u8]) -> Option<usize> {
    scan_head(prev, data).end
}

/// `[start, end)` byte offsets into a head.
pub(crate) type Span = (u32, u32);

/// What a `Content-Length` field said.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum ContentLength {
    /// No `Content-Length` field.
    #[default]
    Absent,
    /// One agreed, valid value.
    Valid(u64),
    /// A value that is empty, not a number, negative or larger than `i64::MAX`.
    Invalid,
    /// Valid values that disagree.
    Conflicting,
}

/// Facts of a head that decide framing, connection handling and decoding.
#[derive(Clone, Debug, Default)]
pub(crate) struct HeadFacts {
    /// `Content-Length`, all fields combined.
    pub content_length: ContentLength,
    /// A `Transfer-Encoding` field is present.
    pub te_present: bool,
    /// `chunked` is the last transfer coding and appears once (set by [`HeadFacts::finish`]).
    pub te_chunked_final: bool,
    /// Transfer codings listed, all fields together.
    te_codings: u32,
    /// Times `chunked` is listed.
    te_chunked: u32,
    /// The last listed coding is `chunked`.
    te_last_chunked: bool,
    /// `Connection: close`.
    pub conn_close: bool,
    /// `Connection: keep-alive`.
    pub conn_keep_alive: bool,
    /// `Connection: upgrade`.
    pub conn_upgrade: bool,
    /// An `Upgrade` field is present.
    pub upgrade: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
    /// `Content-Encoding` codings in the order listed.
    pub codings: Codings,
    /// Oddities seen in the head.
    pub anomalies: AnomalySet,
}

impl HeadFacts {
    /// `chunked` is listed among the transfer codings.
    pub fn te_has_chunked(&self) -> bool {
        self.te_chunked > 0
    }

    /// Conclusions that need every field: whether `chunked` is final, and its anomalies.
    fn finish(&mut self) {
        if !self.te_present {
            return;
        }
        self.te_chunked_final = self.te_last_chunked && self.te_chunked == 1;
        if self.te_chunked > 0 && !self.te_chunked_final {
            self.anomalies.insert(Anomaly::ChunkedNotFinal);
        }
        if self.te_codings == 0 {
            self.anomalies.insert(Anomaly::UnknownTransferEncoding);
        }
    }
}

/// The start line of a parsed head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StartLine {
    /// `method SP target SP version`, as spans into the head.
    Request {
        /// Method span.
        method: (u32, u32),
        /// Request-target span.
        uri: (u32, u32),
        /// Version.
        version: Version,
    },
    /// `version SP status SP reason`.
    Response {
        /// Status code.
        status: u16,
        /// Reason-phrase span.
        reason: (u32, u32),
        /// Version.
        version: Version,
    },
}

/// A complete head, parsed.
#[derive(Clone, Debug)]
pub(crate) struct ParsedHead {
    /// The head's bytes (the wire bytes, or an unfolded copy when obs-fold was seen).
    pub head: Bytes,
    /// The start line.
    pub start: StartLine,
    /// Header fields as `[name_start, name_end, value_start, value_end]` into `head`.
    pub spans: Vec<[u32; 4]>,
    /// Framing facts and anomalies.
    pub facts: HeadFacts,
}

impl ParsedHead {
    /// The slice of the head at `span`.
    pub fn slice(&self, span: (u32, u32)) -> Bytes {
        self.head.slice(span.0 as usize..span.1 as usize)
    }
}

/// Why a complete head could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HeadError {
    /// Not valid HTTP/1.x, even after unfolding.
    Malformed,
}

fn version_of(minor: u8) -> Version {
    if minor == 0 {
        Version::Http10
    } else {
        Version::Http11
    }
}

/// Offset of `part` within `base` (both from the same buffer).
fn offset(base: &[u8], part: &[u8]) -> u32 {
    (part.as_ptr() as usize).saturating_sub(base.as_ptr() as usize) as u32
}

/// Parses one complete head of `kind`. Obs-fold is unfolded (anomaly `obs_fold`), bare LF and
/// non-UTF-8 values are flagged, and framing headers are interpreted. `bare_lf` is what the
/// caller's scan of the head found, when it scanned all of it.
pub(crate) fn parse_head(
    kind: Kind,
    head: &Bytes,
    bare_lf: Option<bool>,
) -> Result<ParsedHead, HeadError> {
    match parse_once(kind, head, bare_lf) {
        Ok(p) => Ok(p),
        Err(_) => match unfold(head) {
            Some(unfolded) => {
                let mut p = parse_once(kind, &Bytes::from(unfolded), None)
                    .map_err(|_| HeadError::Malformed)?;
                p.facts.anomalies.insert(Anomaly::ObsFold);
                if has_bare_lf(head) {
                    p.facts.anomalies.insert(Anomaly::BareLf);
                }
                Ok(p)
            }
            None => Err(HeadError::Malformed),
        },
    }
}

/// One `httparse` pass, retrying once with an exact-size header array when the inline one is
/// too small.
fn parse_once(
    kind: Kind,
    head: &Bytes,
    bare_lf: Option<bool>,
) -> Result<ParsedHead, httparse::Error> {
    let mut inline = [MaybeUninit::<httparse::Header<'_>>::uninit(); INLINE_HEADERS];
    match parse_with(kind, head, &mut inline, bare_lf) {
        Err(httparse::Error::TooManyHeaders) => {
            let lines = memchr::memchr_iter(b'\n', head).count();
            let mut big = vec![MaybeUninit::<httparse::Header<'_>>::uninit(); lines + 1];
            parse_with(kind, head, &mut big, bare_lf)
        }
        other => other,
    }
}

fn parse_with<'b>(
    kind: Kind,
    head: &'b Bytes,
    slots: &mut [MaybeUninit<httparse::Header<'b>>],
    bare_lf: Option<bool>,
) -> Result<ParsedHead, httparse::Error> {
    let buf: &'b [u8] = head;
    let (start, headers): (StartLine, &[httparse::Header<'b>]) = match kind {
        Kind::Request => {
            let mut req = httparse::Request::new(&mut []);
            match req.parse_with_uninit_headers(buf, slots)? {
                httparse::Status::Complete(_) => {}
                httparse::Status::Partial => return Err(httparse::Error::NewLine),
            }
            let method = req.method.unwrap_or("").as_bytes();
            // The limit `check_request_line` applies to a line still arriving: a head must not
            // pass or fail depending on whether it came in one event or several.
            if method.len() > MAX_METHOD_LEN {
                return Err(httparse::Error::Token);
            }
            let path = req.path.unwrap_or("").as_bytes();
            let m0 = offset(buf, method);
            let u0 = offset(buf, path);
            let start = StartLine::Request {
                method: (m0, m0 + method.len() as u32),
                uri: (u0, u0 + path.len() as u32),
                version: version_of(req.version.unwrap_or(1)),
            };
            (start, &*req.headers)
        }
        Kind::Response => {
            let mut resp = httparse::Response::new(&mut []);
            match httparse::ParserConfig::default()
                .parse_response_with_uninit_headers(&mut resp, buf, slots)?
            {
                httparse::Status::Complete(_) => {}
                httparse::Status::Partial => return Err(httparse::Error::NewLine),
            }
            let start = StartLine::Response {
                status: resp.code.unwrap_or(0),
                reason: reason_span(buf),
                version: version_of(resp.version.unwrap_or(1)),
            };
            (start, &*resp.headers)
        }
    };
    let mut spans = Vec::with_capacity(headers.len());
    let mut facts = HeadFacts::default();
    let ascii = !has_non_ascii(buf);
    for h in headers {
        let name = h.name.as_bytes();
        let n0 = offset(buf, name);
        let v0 = if h.value.is_empty() {
            // An empty value may point anywhere in the line; anchor it after the name.
            n0 + name.len() as u32
        } else {
            offset(buf, h.value)
        };
        spans.push([n0, n0 + name.len() as u32, v0, v0 + h.value.len() as u32]);
        interpret(&mut facts, name, h.value);
        if !ascii && std::str::from_utf8(h.value).is_err() {
            facts.anomalies.insert(Anomaly::NonUtf8Header);
        }
    }
    facts.finish();
    if bare_lf.unwrap_or_else(|| has_bare_lf(buf)) {
        facts.anomalies.insert(Anomaly::BareLf);
    }
    Ok(ParsedHead {
        head: head.clone(),
        start,
        spans,
        facts,
    })
}

/// The reason phrase of a status line: after `HTTP/1.x DDD ` up to the line end. Computed here
/// because `httparse` blanks reasons with obs-text.
fn reason_span(buf: &[u8]) -> (u32, u32) {
    let line_end = memchr::memchr(b'\n', buf).unwrap_or(buf.len());
    let mut end = line_end;
    if end > 0 && buf.get(end - 1) == Some(&b'\r') {
        end -= 1;
    }
    // "HTTP/1.1 200 " is 13 bytes.
    if end > 13 {
        (13, end as u32)
    } else {
        (end as u32, end as u32)
    }
}

/// Some byte is 0x80 or above; eight bytes at a time.
fn has_non_ascii(b: &[u8]) -> bool {
    let mut chunks = b.chunks_exact(8);
    let mut acc = 0u64;
    for c in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(c);
        acc |= u64::from_ne_bytes(word);
    }
    acc & 0x8080_8080_8080_8080 != 0 || chunks.remainder().iter().any(|&x| x >= 0x80)
}

/// A line ended by LF without CR before it.
pub(crate) fn has_bare_lf(buf: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', buf).any(|i| i == 0 || buf.get(i - 1) != Some(&b'\r'))
}

/// Replaces each obs-fold (a line end followed by SP/HT) after a header line with one SP.
/// `None` when there is no fold, or when the first line after the start line is indented
/// (RFC 9112 §2.2: that is not a fold and the message is invalid).
fn unfold(head: &[u8]) -> Option<Vec<u8>> {
    let mut out: Vec<u8> = Vec::with_capacity(head.len());
    let mut folded = false;
    let mut line_no = 0usize;
    let mut start = 0usize;
    while start < head.len() {
        let end = memchr::memchr(b'\n', &head[start..]).map_or(head.len(), |i| start + i + 1);
        let line = &head[start..end];
        let indented = matches!(line.first(), Some(b' ' | b'\t'));
        if indented && line_no >= 1 {
            if line_no == 1 {
                return None;
            }
            // Drop the previous line end and trailing whitespace, join with one SP.
            while matches!(out.last(), Some(b'\n' | b'\r' | b' ' | b'\t')) {
                out.pop();
            }
            out.push(b' ');
            let body = line
                .iter()
                .position(|&b| b != b' ' && b != b'\t')
                .map_or(&line[line.len()..], |p| &line[p..]);
            out.extend_from_slice(body);
            folded = true;
        } else {
            out.extend_from_slice(line);
        }
        line_no += 1;
        start = end;
    }
    folded.then_some(out)
}

/// Splits a field value into comma-separated elements with surrounding whitespace removed.
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim_ows)
}

/// Removes SP/HT around `v`.
pub(crate) fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |p| p + 1);
    v.get(start..end).unwrap_or(&[])
}

/// Parses one `Content-Length` element: digits only, at most `i64::MAX` (what common servers
/// accept). Leading zeros are flagged.
fn parse_content_length(v: &[u8], anomalies: &mut AnomalySet) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if v.len() > 1 && v[0] == b'0' {
        anomalies.insert(Anomaly::ContentLengthLeadingZeros);
    }
    let mut n: u64 = 0;
    for &d in v {
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    (n <= i64::MAX as u64).then_some(n)
}

/// Folds one header field into the facts.
fn interpret(f: &mut HeadFacts, name: &[u8], value: &[u8]) {
    match name.len() {
        14 if name.eq_ignore_ascii_case(b"content-length") => {
            for el in list_elements(value) {
                let v = match parse_content_length(el, &mut f.anomalies) {
                    Some(v) => v,
                    None => {
                        f.anomalies.insert(Anomaly::BadContentLength);
                        f.content_length = ContentLength::Invalid;
                        continue;
                    }
                };
                f.content_length = match f.content_length {
                    ContentLength::Absent => ContentLength::Valid(v),
                    ContentLength::Valid(old) if old == v => ContentLength::Valid(v),
                    ContentLength::Valid(_) | ContentLength::Conflicting => {
                        f.anomalies.insert(Anomaly::ConflictingContentLength);
                        ContentLength::Conflicting
                    }
                    ContentLength::Invalid => ContentLength::Invalid,
                };
            }
        }
        17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
            f.te_present = true;
            for el in list_elements(value) {
                if el.is_empty() {
                    continue;
                }
                f.te_codings += 1;
                f.te_last_chunked = el.eq_ignore_ascii_case(b"chunked");
                if f.te_last_chunked {
                    f.te_chunked += 1;
                } else {
                    f.anomalies.insert(Anomaly::UnknownTransferEncoding);
                }
            }
        }
        10 if name.eq_ignore_ascii_case(b"connection") => {
            for el in list_elements(value) {
                if el.eq_ignore_ascii_case(b"close") {
                    f.conn_close = true;
                } else if el.eq_ignore_ascii_case(b"keep-alive") {
                    f.conn_keep_alive = true;
                } else if el.eq_ignore_ascii_case(b"upgrade") {
                    f.conn_upgrade = true;
                }
            }
        }
        7 if name.eq_ignore_ascii_case(b"upgrade") => f.upgrade = true,
        6 if name.eq_ignore_ascii_case(b"expect")
            && trim_ows(value).eq_ignore_ascii_case(b"100-continue") =>
        {
            f.expect_continue = true;
        }
        16 if name.eq_ignore_ascii_case(b"content-encoding") => {
            for el in list_elements(value) {
                if !el.is_empty() {
                    f.codings.push(el);
                }
            }
        }
        _ => {}
    }
}

/// Salvages the request line of a head that could not be parsed whole (cut by a gap, the end of
/// the connection, the header cap, or bad headers): `(method, target, version)` spans.
pub(crate) fn salvage_request_line(buf: &[u8]) -> Option<(Span, Span, Version)> {
    let LineCheck::Valid(len) = check_request_line(buf) else {
        return None;
    };
    let line = buf.get(..len)?;
    let sp1 = memchr::memchr(b' ', line)?;
    let sp2 = sp1 + 1 + memchr::memchr(b' ', line.get(sp1 + 1..)?)?;
    let minor = *line.get(sp2 + 8)?;
    Some((
        (0, sp1 as u32),
        (sp1 as u32 + 1, sp2 as u32),
        version_of(minor - b'0'),
    ))
}

/// Salvages the status line of a head that could not be parsed whole: `(status, reason, version)`.
pub(crate) fn salvage_status_line(buf: &[u8]) -> Option<(u16, Span, Version)> {
    let LineCheck::Valid(len) = check_status_line(buf) else {
        return None;
    };
    let line = buf.get(..len)?;
    let minor = *line.get(7)?;
    let digits = line.get(9..12)?;
    let status = digits
        .iter()
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    Some((status, reason_span(line), version_of(minor - b'0')))
}

/// The outcome of `httparse` on an incomplete head: `true` when the bytes so far are already
/// invalid (rather than merely cut short).
pub(crate) fn partial_head_is_invalid(kind: Kind, buf: &[u8]) -> bool {
    let mut headers = [MaybeUninit::<httparse::Header<'_>>::uninit(); INLINE_HEADERS];
    let res = match kind {
        Kind::Request => {
            httparse::Request::new(&mut []).parse_with_uninit_headers(buf, &mut headers)
        }
        Kind::Response => httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut httparse::Response::new(&mut []),
            buf,
            &mut headers,
        ),
    };
    matches!(res, Err(e) if e != httparse::Error::TooManyHeaders)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(s: &str) -> Result<ParsedHead, HeadError> {
        parse_head(Kind::Request, &Bytes::copy_from_slice(s.as_bytes()), None)
    }

    fn headers(p: &ParsedHead) -> Vec<(String, String)> {
        p.spans
            .iter()
            .map(|s| {
                (
                    String::from_utf8_lossy(&p.head[s[0] as usize..s[1] as usize]).into_owned(),
                    String::from_utf8_lossy(&p.head[s[2] as usize..s[3] as usize]).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn request_line_check_accepts_valid_and_partial_lines() {
        assert_eq!(
            check_request_line(b"GET / HTTP/1.1\r\n"),
            LineCheck::Valid(16)
        );
        assert_eq!(
            check_request_line(b"GET / HTTP/1.0\n"),
            LineCheck::Valid(15)
        );
        assert_eq!(check_request_line(b"GE"), LineCheck::NeedMore);
        assert_eq!(check_request_line(b"GET /x HTTP/1."), LineCheck::NeedMore);
        assert_eq!(
            check_request_line(b"GET /x HTTP/1.1\r"),
            LineCheck::NeedMore
        );
        assert_eq!(check_request_line(b""), LineCheck::NeedMore);
    }

    #[test]
    fn request_line_check_rejects_non_http() {
        assert_eq!(check_request_line(b"\x16\x03\x01\x02"), LineCheck::Invalid);
        assert_eq!(
            check_request_line(b"GET / HTTP/2.0\r\n"),
            LineCheck::Invalid
        );
        assert_eq!(
            check_request_line(b"GET /foo bar/ HTTP/1.1\r\n"),
            LineCheck::Invalid
        );
        assert_eq!(check_request_line(b"GET / ICE/1.0"), LineCheck::Invalid);
        assert_eq!(
            check_request_line(b"PRI * HTTP/1.1\r\n"),
            LineCheck::Invalid
        );
        assert_eq!(check_request_line(b"GET / HTTP/1.1\rX"), LineCheck::Invalid);
        assert_eq!(
            check_request_line(b" GET / HTTP/1.1\r\n"),
            LineCheck::Invalid
        );
        assert_eq!(check_request_line(&[b'A'; 100]), LineCheck::Invalid);
    }

    #[test]
    fn status_line_check() {
        assert_eq!(
            check_status_line(b"HTTP/1.1 200 OK\r\n"),
            LineCheck::Valid(17)
        );
        assert_eq!(check_status_line(b"HTTP/1.1 301\r\n"), LineCheck::Valid(14));
        assert_eq!(
            check_status_line(b"HTTP/1.1 200 \r\n"),
            LineCheck::Valid(15)
        );
        assert_eq!(check_status_line(b"HTTP/1.1 20"), LineCheck::NeedMore);
        assert_eq!(
            check_status_line(b"HTTP/1.1  200 OK\r\n"),
            LineCheck::Invalid
        );
        assert_eq!(
            check_status_line(b"HTTP/1.1\t200 OK\r\n"),
            LineCheck::Invalid
        );
        assert_eq!(check_status_line(b"HTTP/1.1 2 OK\r\n"), LineCheck::Invalid);
        assert_eq!(check_status_line(b"HTTP/1.1 200 OK\rX"), LineCheck::Invalid);
        assert_eq!(
            check_status_line(b"RTSP/1.1 200 OK\r\n"),
            LineCheck::Invalid
        );
    }

    #[test]
    fn non_ascii_detection() {
        assert!(!has_non_ascii(b"plain ascii text, longer than a word"));
        assert!(has_non_ascii(b"plain ascii text\xff longer than a word"));
        assert!(has_non_ascii(b"abc\x80"));
        assert!(!has_non_ascii(b""));
    }

    #[test]
    fn fast_head_end_takes_only_clean_heads() {
        assert_eq!(
            fast_head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nbody", 100),
            Some(24)
        );
        assert_eq!(
            fast_head_end(b"GET / HTTP/1.1\nA: b\n\nGET / HTTP/1.1\r\n\r\n", 100),
            None
        );
        assert_eq!(fast_head_end(b"GET / HTTP/1.1\r\nA: b\r\n", 100), None);
        assert_eq!(fast_head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\n", 10), None);
    }

    #[test]
    fn head_scan_reports_bare_lf() {
        assert!(!scan_head(b"", b"GET / HTTP/1.1\r\nA: b\r\n\r\n").bare_lf);
        assert!(scan_head(b"", b"GET / HTTP/1.1\nA: b\r\n\r\n").bare_lf);
        assert!(scan_head(b"", b"GET / HTTP/1.1\r\nA: b\n\n").bare_lf);
        assert!(!scan_head(b"GET / HTTP/1.1\r", b"\nA").bare_lf);
    }

    #[test]
    fn head_end_found_across_buffer_boundary() {
        assert_eq!(find_head_end(b"", b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r", b"\nrest"), Some(1));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n", b"\r\n"), Some(2));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\n", b"\n"), Some(1));
        assert_eq!(find_head_end(b"", b"GET / HTTP/1.1\r\nA: b\r\n"), None);
        assert_eq!(find_head_end(b"\r", b"\n"), None);
    }

    #[test]
    fn parses_request_spans_and_facts() {
        let p =
            req("POST /a?b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\n")
                .expect("valid");
        let StartLine::Request {
            method,
            uri,
            version,
        } = p.start
        else {
            panic!("not a request");
        };
        assert_eq!(&p.slice(method)[..], b"POST");
        assert_eq!(&p.slice(uri)[..], b"/a?b");
        assert_eq!(version, Version::Http11);
        assert_eq!(p.facts.content_length, ContentLength::Valid(5));
        assert!(p.facts.conn_close);
        assert_eq!(headers(&p)[0], ("Host".into(), "x".into()));
        assert!(p.facts.anomalies.is_empty());
    }

    #[test]
    fn response_reason_with_obs_text_is_kept() {
        let p = parse_head(
            Kind::Response,
            &Bytes::from_static("HTTP/1.1 500 Oriëntatie\r\n\r\n".as_bytes()),
            None,
        )
        .expect("valid");
        let StartLine::Response { status, reason, .. } = p.start else {
            panic!("not a response");
        };
        assert_eq!(status, 500);
        assert_eq!(&p.slice(reason)[..], "Oriëntatie".as_bytes());
    }

    #[test]
    fn obs_fold_is_unfolded_and_flagged() {
        let p = req("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding:\r\n chunked\r\n\r\n")
            .expect("unfolded");
        assert!(p.facts.anomalies.contains(Anomaly::ObsFold));
        assert!(p.facts.te_chunked_final);
        assert_eq!(
            headers(&p)[1],
            ("Transfer-Encoding".into(), "chunked".into())
        );
    }

    #[test]
    fn indented_first_header_line_is_malformed() {
        assert_eq!(
            req("GET / HTTP/1.1\r\n Host: foo\r\n\r\n").err(),
            Some(HeadError::Malformed)
        );
    }

    #[test]
    fn bare_lf_and_non_utf8_are_flagged() {
        let p = parse_head(
            Kind::Request,
            &Bytes::from_static(b"GET / HTTP/1.1\nX: \xff\xfe\n\n"),
            None,
        )
        .expect("valid");
        assert!(p.facts.anomalies.contains(Anomaly::BareLf));
        assert!(p.facts.anomalies.contains(Anomaly::NonUtf8Header));
    }

    #[test]
    fn content_length_rules() {
        let cl = |v: &str| {
            let p =
                req(&format!("POST / HTTP/1.1\r\nContent-Length: {v}\r\n\r\n")).expect("parses");
            (p.facts.content_length, p.facts.anomalies)
        };
        assert_eq!(cl("42").0, ContentLength::Valid(42));
        assert_eq!(cl("42, 42").0, ContentLength::Valid(42));
        assert_eq!(cl("1, 2").0, ContentLength::Conflicting);
        assert_eq!(cl("-1").0, ContentLength::Invalid);
        assert_eq!(cl("4 2").0, ContentLength::Invalid);
        assert_eq!(cl("18446744073709551615").0, ContentLength::Invalid);
        assert_eq!(cl("1000000000000000000000").0, ContentLength::Invalid);
        let (v, a) = cl("003");
        assert_eq!(v, ContentLength::Valid(3));
        assert!(a.contains(Anomaly::ContentLengthLeadingZeros));
        assert!(cl("x").1.contains(Anomaly::BadContentLength));
    }

    #[test]
    fn transfer_encoding_rules() {
        let te = |lines: &str| {
            let p = req(&format!("POST / HTTP/1.1\r\n{lines}\r\n")).expect("parses");
            (p.facts.te_chunked_final, p.facts.anomalies)
        };
        assert!(te("Transfer-Encoding: chunked\r\n").0);
        assert!(te("Transfer-Encoding: gzip, chunked\r\n").0);
        assert!(te("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n").0);
        let (chunked, a) = te("Transfer-Encoding: chunked, identity\r\n");
        assert!(!chunked);
        assert!(a.contains(Anomaly::ChunkedNotFinal));
        let (chunked, a) = te("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n");
        assert!(!chunked);
        assert!(a.contains(Anomaly::ChunkedNotFinal));
        let (chunked, a) = te("Transfer-Encoding: chunkedchunked\r\n");
        assert!(!chunked);
        assert!(a.contains(Anomaly::UnknownTransferEncoding));
        assert!(te("Transfer-Encoding:\r\n")
            .1
            .contains(Anomaly::UnknownTransferEncoding));
    }

    #[test]
    fn many_headers_are_parsed_with_a_larger_array() {
        let mut s = String::from("GET / HTTP/1.1\r\n");
        for i in 0..300 {
            s.push_str(&format!("X-{i}: {i}\r\n"));
        }
        s.push_str("\r\n");
        assert_eq!(req(&s).expect("parses").spans.len(), 300);
    }

    #[test]
    fn salvage_lines() {
        let (m, u, v) = salvage_request_line(b"GET /x HTTP/1.0\r\nHost: a").expect("line");
        assert_eq!((m, u, v), ((0, 3), (4, 6), Version::Http10));
        assert!(salvage_request_line(b"GET /x HTTP/1.0").is_none());
        let (s, r, v) = salvage_status_line(b"HTTP/1.1 404 Not Found\r\nX").expect("line");
        assert_eq!((s, r, v), (404, (13, 22), Version::Http11));
    }

    #[test]
    fn partial_head_validity() {
        assert!(!partial_head_is_invalid(
            Kind::Request,
            b"GET / HTTP/1.1\r\nHost: a"
        ));
        assert!(partial_head_is_invalid(
            Kind::Request,
            b"PUT /url HTTP/1.1\r\nContent-Length: 3\r\n\rabc"
        ));
    }
}
