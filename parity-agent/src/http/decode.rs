//! Content decoding of message bodies: `gzip`/`x-gzip`, `deflate` (zlib-wrapped or raw),
//! `br`, `zstd`, `identity`, and stacks of them, streaming and bounded.
//!
//! A [`ContentDecoder`] takes the body after transfer decoding in pieces of any size and hands
//! decoded bytes to a sink. Every stage counts what it produced: beyond the configured limit
//! decoding stops with [`DecodeError::LimitExceeded`], so a decompression bomb costs at most the
//! limit, never memory. This module does not decide what an error means for the exchange; the
//! caller marks it `decode_error`.

use brotli_decompressor::{BrotliDecompressStream, BrotliResult, BrotliState, StandardAlloc};
use flate2::{Crc, Decompress, FlushDecompress, Status};
use zstd::stream::raw::{DParameter, InBuffer, Operation, OutBuffer};

/// Most codings decoded in one stack; a longer `Content-Encoding` list is left undecoded.
pub(crate) const MAX_CODINGS: usize = 4;

/// Output buffer of each stage.
const SCRATCH: usize = 16 * 1024;

/// Longest gzip member header (with FEXTRA, FNAME, FCOMMENT) accepted.
const MAX_GZIP_HEADER: usize = 64 * 1024;

/// Largest zstd window accepted: 8 MiB (2^23), what RFC 8878 asks of HTTP decoders.
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// A content coding parity decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Coding {
    /// `gzip` or `x-gzip`.
    Gzip,
    /// `deflate`: zlib-wrapped, or raw deflate as some servers send it.
    Deflate,
    /// `br`.
    Br,
    /// `zstd`.
    Zstd,
}

/// The `Content-Encoding` of a message, in the order listed (the order applied).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Codings {
    list: [Option<Coding>; MAX_CODINGS],
    len: u8,
    /// A coding parity does not know was listed.
    pub unknown: bool,
    /// More codings than [`MAX_CODINGS`] were listed.
    pub too_many: bool,
}

impl Codings {
    /// Adds one listed coding token.
    pub fn push(&mut self, token: &[u8]) {
        let coding = if token.eq_ignore_ascii_case(b"identity") {
            return;
        } else if token.eq_ignore_ascii_case(b"gzip") || token.eq_ignore_ascii_case(b"x-gzip") {
            Coding::Gzip
        } else if token.eq_ignore_ascii_case(b"deflate") {
            Coding::Deflate
        } else if token.eq_ignore_ascii_case(b"br") {
            Coding::Br
        } else if token.eq_ignore_ascii_case(b"zstd") {
            Coding::Zstd
        } else {
            self.unknown = true;
            return;
        };
        match self.list.get_mut(self.len as usize) {
            Some(slot) => {
                *slot = Some(coding);
                self.len += 1;
            }
            None => self.too_many = true,
        }
    }

    /// Codings to undo, in decoding order (the reverse of the listed order).
    fn decode_order(&self) -> impl Iterator<Item = Coding> + '_ {
        self.list[..self.len as usize]
            .iter()
            .rev()
            .flatten()
            .copied()
    }

    /// The body must go through a decoder.
    pub fn needs_decoding(&self) -> bool {
        self.len > 0 && !self.unknown && !self.too_many
    }
}

/// Why decoding stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// The data is not valid for its coding.
    Corrupt,
    /// A stage produced more than the decoded-bytes limit.
    LimitExceeded,
    /// The body ended before the compressed stream did.
    Truncated,
}

/// Where a stage sends its output: the next stage, or the body sink.
type Next<'a> = &'a mut dyn FnMut(&[u8]) -> Result<(), DecodeError>;

/// A streaming decoder for a stack of content codings.
pub(crate) struct ContentDecoder {
    stages: Vec<Stage>,
    limit: u64,
}

impl ContentDecoder {
    /// A decoder for `codings`, each stage allowed to produce at most `limit` bytes. `None` when
    /// there is nothing to decode (or a decoder cannot be created).
    pub fn new(codings: &Codings, limit: u64) -> Option<ContentDecoder> {
        if !codings.needs_decoding() {
            return None;
        }
        let stages = codings
            .decode_order()
            .map(Stage::new)
            .collect::<Option<Vec<_>>>()?;
        Some(ContentDecoder { stages, limit })
    }

    /// Decodes `input`, handing decoded bytes to `sink`.
    pub fn push(&mut self, input: &[u8], sink: &mut dyn FnMut(&[u8])) -> Result<(), DecodeError> {
        push_chain(&mut self.stages, self.limit, input, sink)
    }

    /// Flushes every stage at the end of the body; an unfinished stream is `Truncated`.
    pub fn finish(&mut self, sink: &mut dyn FnMut(&[u8])) -> Result<(), DecodeError> {
        finish_chain(&mut self.stages, self.limit, sink)
    }

    /// Estimated heap held by the decoder (window and state sizes are estimates).
    pub fn mem_estimate(&self) -> usize {
        self.stages.iter().map(Stage::mem_estimate).sum()
    }
}

fn push_chain(
    stages: &mut [Stage],
    limit: u64,
    input: &[u8],
    sink: &mut dyn FnMut(&[u8]),
) -> Result<(), DecodeError> {
    match stages.split_first_mut() {
        None => {
            sink(input);
            Ok(())
        }
        Some((first, rest)) => first.push(input, limit, &mut |out: &[u8]| {
            push_chain(rest, limit, out, sink)
        }),
    }
}

fn finish_chain(
    stages: &mut [Stage],
    limit: u64,
    sink: &mut dyn FnMut(&[u8]),
) -> Result<(), DecodeError> {
    match stages.split_first_mut() {
        None => Ok(()),
        Some((first, rest)) => {
            first.finish(limit, &mut |out: &[u8]| push_chain(rest, limit, out, sink))?;
            finish_chain(rest, limit, sink)
        }
    }
}

/// One decoding step with its output buffer and produced-bytes counter.
struct Stage {
    kind: StageKind,
    scratch: Vec<u8>,
    produced: u64,
}

enum StageKind {
    Gzip(Box<Gzip>),
    Inflate(Box<Inflate>),
    Brotli(
        Box<BrotliState<StandardAlloc, StandardAlloc, StandardAlloc>>,
        bool,
    ),
    Zstd(Box<zstd::stream::raw::Decoder<'static>>, bool),
}

impl Stage {
    fn new(coding: Coding) -> Option<Stage> {
        let kind = match coding {
            Coding::Gzip => StageKind::Gzip(Box::new(Gzip::new())),
            Coding::Deflate => StageKind::Inflate(Box::new(Inflate::Detect(Vec::new()))),
            Coding::Br => {
                let mut state = BrotliState::new(
                    StandardAlloc::default(),
                    StandardAlloc::default(),
                    StandardAlloc::default(),
                );
                // Large windows (up to 1 GiB) are not part of the HTTP `br` coding.
                state.large_window = false;
                StageKind::Brotli(Box::new(state), false)
            }
            Coding::Zstd => {
                let mut d = zstd::stream::raw::Decoder::new().ok()?;
                d.set_parameter(DParameter::WindowLogMax(ZSTD_WINDOW_LOG_MAX))
                    .ok()?;
                StageKind::Zstd(Box::new(d), false)
            }
        };
        Some(Stage {
            kind,
            scratch: vec![0; SCRATCH],
            produced: 0,
        })
    }

    fn mem_estimate(&self) -> usize {
        let state = match &self.kind {
            StageKind::Gzip(_) | StageKind::Inflate(_) => 48 * 1024,
            StageKind::Brotli(..) | StageKind::Zstd(..) => 1024 * 1024,
        };
        state + self.scratch.len()
    }

    fn push(&mut self, input: &[u8], limit: u64, next: Next<'_>) -> Result<(), DecodeError> {
        let Stage {
            kind,
            scratch,
            produced,
        } = self;
        let mut emit = |out: &[u8]| -> Result<(), DecodeError> {
            *produced += out.len() as u64;
            if *produced > limit {
                return Err(DecodeError::LimitExceeded);
            }
            next(out)
        };
        match kind {
            StageKind::Gzip(g) => g.push(input, scratch, &mut emit),
            StageKind::Inflate(i) => i.push(input, scratch, &mut emit),
            StageKind::Brotli(state, done) => brotli_push(state, done, input, scratch, &mut emit),
            StageKind::Zstd(d, frame_done) => zstd_push(d, frame_done, input, scratch, &mut emit),
        }
    }

    fn finish(&mut self, limit: u64, next: Next<'_>) -> Result<(), DecodeError> {
        let Stage {
            kind,
            scratch,
            produced,
        } = self;
        let mut emit = |out: &[u8]| -> Result<(), DecodeError> {
            *produced += out.len() as u64;
            if *produced > limit {
                return Err(DecodeError::LimitExceeded);
            }
            next(out)
        };
        match kind {
            StageKind::Gzip(g) => {
                if g.state == GzState::End || g.state == GzState::NextMember {
                    Ok(())
                } else {
                    Err(DecodeError::Truncated)
                }
            }
            StageKind::Inflate(i) => match i.as_ref() {
                Inflate::Done => Ok(()),
                Inflate::Detect(pending) if pending.is_empty() => Ok(()),
                _ => Err(DecodeError::Truncated),
            },
            StageKind::Brotli(_, done) => {
                if *done {
                    Ok(())
                } else {
                    Err(DecodeError::Truncated)
                }
            }
            StageKind::Zstd(d, frame_done) => {
                // Drain what the decoder still holds, then require a finished frame.
                loop {
                    let mut out = OutBuffer::around(&mut scratch[..]);
                    d.run(&mut InBuffer::around(&[]), &mut out)
                        .map_err(|_| DecodeError::Corrupt)?;
                    let n = out.pos();
                    if n == 0 {
                        break;
                    }
                    emit(&scratch[..n])?;
                }
                if *frame_done {
                    Ok(())
                } else {
                    Err(DecodeError::Truncated)
                }
            }
        }
    }
}

/// Runs a deflate stream over `input`; returns the input bytes consumed and whether the stream
/// ended.
fn inflate_run(
    d: &mut Decompress,
    mut input: &[u8],
    scratch: &mut [u8],
    emit: Next<'_>,
) -> Result<(usize, bool), DecodeError> {
    let mut consumed_total = 0;
    loop {
        let (in0, out0) = (d.total_in(), d.total_out());
        let status = d
            .decompress(input, scratch, FlushDecompress::None)
            .map_err(|_| DecodeError::Corrupt)?;
        let consumed = (d.total_in() - in0) as usize;
        let n = (d.total_out() - out0) as usize;
        consumed_total += consumed;
        input = input.get(consumed..).unwrap_or(&[]);
        if n > 0 {
            emit(scratch.get(..n).unwrap_or(&[]))?;
        }
        if status == Status::StreamEnd {
            return Ok((consumed_total, true));
        }
        let output_full = n == scratch.len();
        if (consumed == 0 && n == 0) || (input.is_empty() && !output_full) {
            return Ok((consumed_total, false));
        }
    }
}

/// `deflate`: decides zlib or raw from the first two bytes, then inflates.
enum Inflate {
    /// Fewer than two bytes seen.
    Detect(Vec<u8>),
    /// Inflating.
    Run(Decompress),
    /// The stream ended; later bytes are ignored.
    Done,
}

/// A zlib header: CM = 8, CINFO ≤ 7, and the 16-bit header a multiple of 31 (RFC 1950).
fn is_zlib_header(b0: u8, b1: u8) -> bool {
    b0 & 0x0f == 8 && b0 >> 4 <= 7 && (u16::from(b0) << 8 | u16::from(b1)) % 31 == 0
}

impl Inflate {
    fn push(
        &mut self,
        input: &[u8],
        scratch: &mut [u8],
        emit: Next<'_>,
    ) -> Result<(), DecodeError> {
        if let Inflate::Detect(pending) = self {
            if pending.len() + input.len() < 2 {
                pending.extend_from_slice(input);
                return Ok(());
            }
            let mut head = std::mem::take(pending);
            let take = 2usize.saturating_sub(head.len());
            head.extend_from_slice(input.get(..take).unwrap_or(&[]));
            let zlib = is_zlib_header(head[0], head[1]);
            let mut d = Decompress::new(zlib);
            let (_, ended) = inflate_run(&mut d, &head, scratch, emit)?;
            *self = if ended {
                Inflate::Done
            } else {
                Inflate::Run(d)
            };
            return self.push(input.get(take..).unwrap_or(&[]), scratch, emit);
        }
        if let Inflate::Run(d) = self {
            if input.is_empty() {
                return Ok(());
            }
            let (_, ended) = inflate_run(d, input, scratch, emit)?;
            if ended {
                *self = Inflate::Done;
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GzState {
    Header,
    Body,
    Trailer,
    /// A member ended; another may follow.
    NextMember,
    /// Bytes after the last member that are not a gzip header: ignored, as browsers do.
    End,
}

/// `gzip`: member header, raw deflate body, CRC-32 and size trailer; members may repeat.
struct Gzip {
    state: GzState,
    header: Vec<u8>,
    inflate: Decompress,
    crc: Crc,
    trailer: [u8; 8],
    trailer_len: usize,
}

/// Length of a complete gzip member header at the start of `b`, `None` when more bytes are needed.
fn gzip_header_len(b: &[u8]) -> Result<Option<usize>, DecodeError> {
    for (i, want) in [0x1f, 0x8b, 8].iter().enumerate() {
        match b.get(i) {
            None => return Ok(None),
            Some(c) if c == want => {}
            Some(_) => return Err(DecodeError::Corrupt),
        }
    }
    let Some(&flags) = b.get(3) else {
        return Ok(None);
    };
    if flags & 0xe0 != 0 {
        return Err(DecodeError::Corrupt);
    }
    let mut pos = 10;
    if flags & 0x04 != 0 {
        let (Some(&lo), Some(&hi)) = (b.get(pos), b.get(pos + 1)) else {
            return Ok(None);
        };
        pos += 2 + usize::from(u16::from_le_bytes([lo, hi]));
    }
    for flag in [0x08u8, 0x10] {
        if flags & flag != 0 {
            match b.get(pos..).and_then(|rest| memchr::memchr(0, rest)) {
                Some(z) => pos += z + 1,
                None => return Ok(None),
            }
        }
    }
    if flags & 0x02 != 0 {
        pos += 2;
    }
    Ok((b.len() >= pos).then_some(pos))
}

impl Gzip {
    fn new() -> Gzip {
        Gzip {
            state: GzState::Header,
            header: Vec::new(),
            inflate: Decompress::new(false),
            crc: Crc::new(),
            trailer: [0; 8],
            trailer_len: 0,
        }
    }

    fn push(
        &mut self,
        mut input: &[u8],
        scratch: &mut [u8],
        emit: Next<'_>,
    ) -> Result<(), DecodeError> {
        while !input.is_empty() {
            match self.state {
                GzState::NextMember => {
                    if input.first() == Some(&0x1f) {
                        self.inflate.reset(false);
                        self.crc.reset();
                        self.trailer_len = 0;
                        self.state = GzState::Header;
                    } else {
                        self.state = GzState::End;
                    }
                }
                GzState::End => return Ok(()),
                GzState::Header => {
                    let before = self.header.len();
                    let take = input.len().min(MAX_GZIP_HEADER + 1 - before);
                    self.header.extend_from_slice(&input[..take]);
                    match gzip_header_len(&self.header)? {
                        None => {
                            if self.header.len() > MAX_GZIP_HEADER {
                                return Err(DecodeError::Corrupt);
                            }
                            input = &input[take..];
                        }
                        Some(n) => {
                            // The header ended `n - before` bytes into `input`.
                            input = input.get(n.saturating_sub(before)..).unwrap_or(&[]);
                            self.header.clear();
                            self.state = GzState::Body;
                        }
                    }
                }
                GzState::Body => {
                    let Gzip { inflate, crc, .. } = self;
                    let (used, ended) =
                        inflate_run(inflate, input, scratch, &mut |out: &[u8]| {
                            crc.update(out);
                            emit(out)
                        })?;
                    input = input.get(used..).unwrap_or(&[]);
                    if ended {
                        self.state = GzState::Trailer;
                    } else if used == 0 {
                        return Ok(());
                    }
                }
                GzState::Trailer => {
                    let take = (8 - self.trailer_len).min(input.len());
                    self.trailer[self.trailer_len..self.trailer_len + take]
                        .copy_from_slice(&input[..take]);
                    self.trailer_len += take;
                    input = &input[take..];
                    if self.trailer_len == 8 {
                        let crc = u32::from_le_bytes([
                            self.trailer[0],
                            self.trailer[1],
                            self.trailer[2],
                            self.trailer[3],
                        ]);
                        let size = u32::from_le_bytes([
                            self.trailer[4],
                            self.trailer[5],
                            self.trailer[6],
                            self.trailer[7],
                        ]);
                        if crc != self.crc.sum() || size != self.crc.amount() {
                            return Err(DecodeError::Corrupt);
                        }
                        self.state = GzState::NextMember;
                    }
                }
            }
        }
        Ok(())
    }
}

fn brotli_push(
    state: &mut BrotliState<StandardAlloc, StandardAlloc, StandardAlloc>,
    done: &mut bool,
    mut input: &[u8],
    scratch: &mut [u8],
    emit: Next<'_>,
) -> Result<(), DecodeError> {
    while !*done {
        let mut avail_in = input.len();
        let mut in_off = 0;
        let mut avail_out = scratch.len();
        let mut out_off = 0;
        let mut total = 0;
        let res = BrotliDecompressStream(
            &mut avail_in,
            &mut in_off,
            input,
            &mut avail_out,
            &mut out_off,
            scratch,
            &mut total,
            state,
        );
        if out_off > 0 {
            emit(scratch.get(..out_off).unwrap_or(&[]))?;
        }
        input = input.get(in_off..).unwrap_or(&[]);
        match res {
            BrotliResult::ResultSuccess => *done = true,
            BrotliResult::NeedsMoreInput => return Ok(()),
            BrotliResult::NeedsMoreOutput => {}
            BrotliResult::ResultFailure => return Err(DecodeError::Corrupt),
        }
    }
    Ok(())
}

fn zstd_push(
    d: &mut zstd::stream::raw::Decoder<'static>,
    frame_done: &mut bool,
    mut input: &[u8],
    scratch: &mut [u8],
    emit: Next<'_>,
) -> Result<(), DecodeError> {
    while !input.is_empty() {
        let mut inb = InBuffer::around(input);
        let mut out = OutBuffer::around(&mut scratch[..]);
        let hint = d
            .run(&mut inb, &mut out)
            .map_err(|_| DecodeError::Corrupt)?;
        let n = out.pos();
        let used = inb.pos();
        *frame_done = hint == 0;
        if n > 0 {
            emit(scratch.get(..n).unwrap_or(&[]))?;
        }
        input = input.get(used..).unwrap_or(&[]);
        if used == 0 && n == 0 {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn codings(list: &[&str]) -> Codings {
        let mut c = Codings::default();
        for t in list {
            c.push(t.as_bytes());
        }
        c
    }

    /// Decodes `data` fed in pieces of `step` bytes.
    fn decode(list: &[&str], data: &[u8], step: usize, limit: u64) -> Result<Vec<u8>, DecodeError> {
        let mut d = ContentDecoder::new(&codings(list), limit).expect("decodable");
        let mut out = Vec::new();
        for piece in data.chunks(step.max(1)) {
            d.push(piece, &mut |b| out.extend_from_slice(b))?;
        }
        d.finish(&mut |b| out.extend_from_slice(b))?;
        Ok(out)
    }

    fn sample() -> Vec<u8> {
        (0..50_000u32)
            .flat_map(|i| format!("line {i} of the sample\n").into_bytes())
            .collect()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).expect("write");
        e.finish().expect("finish")
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).expect("write");
        e.finish().expect("finish")
    }

    fn raw_deflate(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).expect("write");
        e.finish().expect("finish")
    }

    /// A valid brotli stream (RFC 7932) holding `data` in uncompressed meta-blocks, then an
    /// empty last meta-block. No brotli encoder is a dependency; this exercises the decoder's
    /// framing, windowing and streaming, not its Huffman tables.
    fn brotli_stored(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut first = true;
        for block in data.chunks(65536) {
            // Bits, LSB first: [WBITS=16: 0 (first block only)] ISLAST=0, MNIBBLES=0 (4 nibbles),
            // MLEN-1 (16 bits), ISUNCOMPRESSED=1, then zero padding to a byte boundary.
            let shift = u32::from(first);
            let bits: u32 = (((block.len() as u32 - 1) << 3) | (1 << 19)) << shift;
            out.extend_from_slice(&bits.to_le_bytes()[..3]);
            out.extend_from_slice(block);
            first = false;
        }
        // ISLAST=1, ISLASTEMPTY=1 (after WBITS when the stream is empty).
        out.push(if first { 0x06 } else { 0x03 });
        out
    }

    #[test]
    fn gzip_and_x_gzip_decode_in_any_piece_size() {
        let data = sample();
        let z = gzip(&data);
        for step in [1, 7, 4096, z.len()] {
            assert_eq!(decode(&["gzip"], &z, step, u64::MAX).expect("gzip"), data);
        }
        assert_eq!(
            decode(&["x-gzip"], &z, 100, u64::MAX).expect("x-gzip"),
            data
        );
    }

    #[test]
    fn gzip_with_name_field_and_two_members() {
        let mut e = flate2::GzBuilder::new()
            .filename("f.txt")
            .comment("c")
            .write(Vec::new(), flate2::Compression::fast());
        e.write_all(b"first ").expect("write");
        let mut z = e.finish().expect("finish");
        z.extend(gzip(b"second"));
        assert_eq!(
            decode(&["gzip"], &z, 3, u64::MAX).expect("gzip"),
            b"first second"
        );
    }

    #[test]
    fn deflate_accepts_zlib_and_raw() {
        let data = sample();
        for step in [1, 333, 1 << 20] {
            assert_eq!(
                decode(&["deflate"], &zlib(&data), step, u64::MAX).expect("zlib"),
                data
            );
            assert_eq!(
                decode(&["deflate"], &raw_deflate(&data), step, u64::MAX).expect("raw"),
                data
            );
        }
    }

    #[test]
    fn zstd_decodes() {
        let data = sample();
        let z = zstd::encode_all(&data[..], 3).expect("zstd");
        for step in [1, 1000, z.len()] {
            assert_eq!(decode(&["zstd"], &z, step, u64::MAX).expect("zstd"), data);
        }
    }

    #[test]
    fn brotli_decodes_stored_stream() {
        let data = sample();
        let z = brotli_stored(&data);
        for step in [1, 5, 70_000] {
            assert_eq!(decode(&["br"], &z, step, u64::MAX).expect("br"), data);
        }
        assert_eq!(
            decode(&["br"], &brotli_stored(b""), 1, u64::MAX).expect("empty br"),
            b""
        );
        assert_eq!(
            decode(&["br"], &z[..z.len() - 1], 100, u64::MAX),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            decode(&["br"], &z, 100, 1000),
            Err(DecodeError::LimitExceeded)
        );
    }

    #[test]
    fn stacked_codings_decode_in_reverse_order() {
        let data = sample();
        // `Content-Encoding: gzip, zstd`: gzip applied first, zstd last.
        let z = zstd::encode_all(&gzip(&data)[..], 1).expect("zstd");
        assert_eq!(
            decode(&["gzip", "zstd"], &z, 999, u64::MAX).expect("stack"),
            data
        );
        let z = gzip(&zlib(&data));
        assert_eq!(
            decode(&["deflate", "identity", "gzip"], &z, 5, u64::MAX).expect("stack"),
            data
        );
    }

    #[test]
    fn bomb_is_refused_at_the_limit() {
        let zeros = vec![0u8; 10 << 20];
        let z = gzip(&zeros);
        assert!(z.len() < 64 * 1024);
        assert_eq!(
            decode(&["gzip"], &z, 4096, 1 << 20),
            Err(DecodeError::LimitExceeded)
        );
        // A bomb inside a second stage is refused too.
        let z2 = gzip(&z);
        assert_eq!(
            decode(&["gzip", "gzip"], &z2, 4096, 1 << 20),
            Err(DecodeError::LimitExceeded)
        );
    }

    #[test]
    fn corrupt_and_truncated_data_are_errors() {
        let z = gzip(&sample());
        let mut bad = z.clone();
        bad[z.len() / 2] ^= 0xff;
        assert!(decode(&["gzip"], &bad, 100, u64::MAX).is_err());
        assert_eq!(
            decode(&["gzip"], &z[..z.len() - 4], 100, u64::MAX),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            decode(&["gzip"], b"not gzip at all", 100, u64::MAX),
            Err(DecodeError::Corrupt)
        );
        assert!(decode(&["br"], b"\xff\xff\xff\xff", 100, u64::MAX).is_err());
        assert!(decode(&["zstd"], b"definitely not zstd", 100, u64::MAX).is_err());
        let zs = zstd::encode_all(&b"abcdef"[..], 3).expect("zstd");
        assert_eq!(
            decode(&["zstd"], &zs[..zs.len() - 2], 100, u64::MAX),
            Err(DecodeError::Truncated)
        );
    }

    #[test]
    fn unknown_identity_and_too_many_codings() {
        assert!(codings(&["compress"]).unknown);
        assert!(!codings(&["identity"]).needs_decoding());
        assert!(codings(&["gzip", "gzip", "gzip", "gzip", "gzip"]).too_many);
        assert!(ContentDecoder::new(&codings(&["gzip", "foo"]), 10).is_none());
    }
}
