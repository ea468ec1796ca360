//! Capture files: reads pcap and pcapng files (optionally gzip-compressed) into [`Segment`]s.
//!
//! [`CaptureReader`] detects the container by its magic number, reads the file in large chunks
//! and hands out every TCP segment it finds, with its payload as a [`Bytes`] slice of the chunk
//! it was read in: no per-packet copy or allocation. Packets that carry no TCP segment (UDP, ARP,
//! IP fragments, malformed or snapped headers, interfaces with an unsupported link type) are
//! counted by reason in [`ReadStats`] and skipped.
//!
//! A file cut short at its end (a killed `tcpdump`, a gzip stream that stops early) yields
//! everything before the cut, then ends, with [`ReadStats::truncated_at`] set and a warning
//! logged. Damage before the end (an impossible record or block length, a corrupt gzip stream)
//! is a [`CaptureError::Format`] naming the file and byte offset: the reader does not guess
//! where the next good record might start.
//!
//! This module reads files; it does not filter flows, reassemble TCP or reorder packets, and it
//! does not write captures.

mod decode;
mod pcapng;
#[cfg(test)]
mod tests;

use std::fs::File;
use std::io::{self, Read};
use std::ops::Range;
use std::path::Path;

use bytes::Bytes;
use flate2::read::MultiGzDecoder;

use crate::segment::{Nanos, Segment, TcpFlags};
use decode::{LinkType, Skip};
use pcapng::PcapNg;

/// How much the reader asks its source for at a time. Small enough that a chunk the kernel just
/// copied is still in the L2 cache when the records in it are parsed (measured: 256 KiB reads
/// ~10% faster than 2 MiB, and no slower than larger chunks on syscalls), and the granule of
/// memory a long-held payload slice pins.
const CHUNK: usize = 256 << 10;
/// The largest pcap record or pcapng block accepted; anything larger is damage, not data.
const MAX_RECORD: usize = 256 << 20;
/// libpcap never captures more than this per packet unless the snap length says more, so a
/// classic pcap record beyond `max(snaplen, this)` is damage.
const PCAP_MIN_RECORD_LIMIT: u32 = 262_144;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const PCAPNG_SHB: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

const HINT_NOT_A_CAPTURE: &str = "parity reads pcap and pcapng files, optionally gzip-compressed; \
     is this a pcap or pcapng file? `file FILE` or `capinfos FILE` tells";
const HINT_DAMAGED: &str = "the file is damaged from here on; `capinfos FILE` shows how much \
     Wireshark can read, and `editcap` can cut the good part out";

/// What a [`CaptureReader`] read and why it skipped what it skipped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Packet records read (pcap records; pcapng enhanced, simple and obsolete packet blocks).
    pub packets: u64,
    /// Packets returned as segments.
    pub tcp_segments: u64,
    /// Packets skipped because they carry no TCP over IPv4/IPv6 (UDP, ICMP, ARP, ...).
    pub non_tcp: u64,
    /// Packets skipped because they are IP fragments (fragments are not reassembled).
    pub ip_fragment: u64,
    /// Packets skipped because a header is inconsistent or too short (also pcapng packets that
    /// name an interface the section never described).
    pub malformed: u64,
    /// Packets skipped because their pcapng interface has a link type parity cannot decode.
    pub unknown_linktype: u64,
    /// Segments returned with a `missing_tail`: the snap length cut their payload.
    pub snapped: u64,
    /// Packets skipped because the snap length cut them inside the link, IP or TCP header.
    pub snapped_header: u64,
    /// Bytes of the file consumed so far (compressed bytes for a gzip file), for progress.
    pub bytes_read: u64,
    /// Where the file was cut short, if it was: the offset (in the decompressed stream for a
    /// gzip file) of the record that ends early, or of the end of a gzip stream that stops early.
    pub truncated_at: Option<u64>,
}

impl ReadStats {
    /// Add another file's counters (for a replay of several files); `truncated_at` is per file
    /// and not summed.
    pub fn add(&mut self, o: &ReadStats) {
        self.packets += o.packets;
        self.tcp_segments += o.tcp_segments;
        self.non_tcp += o.non_tcp;
        self.ip_fragment += o.ip_fragment;
        self.malformed += o.malformed;
        self.unknown_linktype += o.unknown_linktype;
        self.snapped += o.snapped;
        self.snapped_header += o.snapped_header;
        self.bytes_read += o.bytes_read;
    }

    /// Packets skipped, by reason (the names used in metrics and the replay summary).
    pub fn skipped(&self) -> [(&'static str, u64); 5] {
        [
            ("non_tcp", self.non_tcp),
            ("ip_fragment", self.ip_fragment),
            ("malformed", self.malformed),
            ("unknown_linktype", self.unknown_linktype),
            ("snapped_header", self.snapped_header),
        ]
    }
}

/// Why a capture file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The file could not be opened or read.
    #[error("reading {file}: {source}")]
    Io {
        /// The capture file.
        file: String,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The bytes are not a capture, or the capture is damaged before its end.
    #[error("{file}: bad capture data at byte {offset}: {what}")]
    Format {
        /// The capture file.
        file: String,
        /// Byte offset of the bad data (in the decompressed stream for a gzip file).
        offset: u64,
        /// What is wrong and what to do about it.
        what: String,
    },
    /// A classic pcap file whose link type parity cannot decode.
    #[error(
        "{file}: link type {linktype} ({}) is not supported; parity decodes Ethernet (1), BSD \
         loopback (0, 108), raw IP (101, 228, 229) and Linux cooked captures (113, 276): capture on \
         an Ethernet interface or with `tcpdump -i any`",
        linktype_name(*linktype)
    )]
    UnsupportedLinkType {
        /// The capture file.
        file: String,
        /// The file's `LINKTYPE_*` value.
        linktype: u32,
    },
}

/// Reads one pcap or pcapng file (gzip-compressed or not) as a sequence of TCP [`Segment`]s.
///
/// After an error or the end of the file, [`next_segment`](Self::next_segment) keeps returning
/// `Ok(None)`.
pub struct CaptureReader {
    name: String,
    input: Input,
    format: Format,
    stats: ReadStats,
    file_size: Option<u64>,
    gzip: bool,
    done: bool,
}

impl std::fmt::Debug for CaptureReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureReader")
            .field("name", &self.name)
            .field("gzip", &self.gzip)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl CaptureReader {
    /// Opens a capture file, telling pcap, pcapng and gzip apart by their magic numbers.
    pub fn open(path: &Path) -> Result<CaptureReader, CaptureError> {
        let name = path.display().to_string();
        let file = File::open(path).map_err(|source| CaptureError::Io {
            file: name.clone(),
            source,
        })?;
        let file_size = file.metadata().ok().map(|m| m.len());
        let mut reader = CaptureReader::from_reader(name, Box::new(file))?;
        reader.file_size = file_size;
        Ok(reader)
    }

    /// Reads a capture from any byte source; `name` is what errors and logs call it.
    pub fn from_reader(
        name: String,
        r: Box<dyn Read + Send>,
    ) -> Result<CaptureReader, CaptureError> {
        let mut reader = CaptureReader {
            name,
            input: Input::new(Source::Plain(r)),
            format: Format::Pcap(Pcap {
                order: Order::Le,
                nanos: false,
                link: LinkType::Ethernet,
                max_record: 0,
            }),
            stats: ReadStats::default(),
            file_size: None,
            gzip: false,
            done: false,
        };
        if reader.fill(2)? && reader.input.rest().starts_with(&GZIP_MAGIC) {
            reader.input.decompress();
            reader.gzip = true;
        }
        reader.format = reader.read_file_header()?;
        tracing::debug!(file = %reader.name, gzip = reader.gzip, format = reader.format.name(), "opened capture");
        Ok(reader)
    }

    /// The next TCP segment, or `None` at the end of the file.
    pub fn next_segment(&mut self) -> Result<Option<Segment>, CaptureError> {
        let result = self.next_segment_inner();
        self.stats.bytes_read = self.input.consumed();
        if !matches!(result, Ok(Some(_))) {
            self.done = true;
        }
        result
    }

    /// What was read and skipped so far.
    pub fn stats(&self) -> &ReadStats {
        &self.stats
    }

    /// The size of the file on disk (compressed size for a gzip file), when opened by path.
    pub fn file_size(&self) -> Option<u64> {
        self.file_size
    }

    fn next_segment_inner(&mut self) -> Result<Option<Segment>, CaptureError> {
        if self.done {
            return Ok(None);
        }
        loop {
            let raw = match self.next_record() {
                Ok(Next::Packet(raw)) => raw,
                Ok(Next::End) => return Ok(None),
                Ok(Next::Truncated(offset)) => {
                    self.stats.truncated_at = Some(offset);
                    let file = &self.name;
                    if self.input.cut_short {
                        tracing::warn!(
                            %file,
                            offset,
                            "{file} is cut short: its gzip stream ends early, inside or after \
                             the record at decompressed byte {offset}; everything before that \
                             record was read (was the capture or the compression killed?)"
                        );
                    } else {
                        tracing::warn!(
                            %file,
                            offset,
                            "{file} is cut short: the record at byte {offset}{} is incomplete; \
                             everything before it was read (was the capture killed?)",
                            if self.gzip { " of the decompressed stream" } else { "" }
                        );
                    }
                    return Ok(None);
                }
                Err(bad) => return Err(self.error(bad)),
            };
            self.stats.packets += 1;
            let link = match raw.link {
                RawLink::Known(link) => link,
                RawLink::Unknown => {
                    self.stats.unknown_linktype += 1;
                    continue;
                }
                RawLink::NoInterface => {
                    self.stats.malformed += 1;
                    continue;
                }
            };
            let Some(frame) = self.input.buf.get(raw.data.clone()) else {
                self.stats.malformed += 1;
                continue;
            };
            match decode::decode(link, frame, raw.wire_len) {
                Ok(tcp) => {
                    if tcp.payload.start > tcp.payload.end || tcp.payload.end > frame.len() {
                        self.stats.malformed += 1;
                        continue;
                    }
                    let start = raw.data.start;
                    let payload = self
                        .input
                        .buf
                        .slice(start + tcp.payload.start..start + tcp.payload.end);
                    self.stats.tcp_segments += 1;
                    if tcp.missing_tail > 0 {
                        self.stats.snapped += 1;
                    }
                    return Ok(Some(Segment {
                        ts: raw.ts,
                        src: tcp.src,
                        dst: tcp.dst,
                        seq: tcp.seq,
                        ack: tcp.ack,
                        flags: TcpFlags(tcp.flags),
                        payload,
                        missing_tail: tcp.missing_tail,
                    }));
                }
                Err(Skip::NonTcp) => self.stats.non_tcp += 1,
                Err(Skip::Fragment) => self.stats.ip_fragment += 1,
                Err(Skip::Malformed) => self.stats.malformed += 1,
                Err(Skip::SnappedHeader) => self.stats.snapped_header += 1,
            }
        }
    }

    fn next_record(&mut self) -> Result<Next, Bad> {
        match &mut self.format {
            Format::Pcap(p) => p.next(&mut self.input),
            Format::PcapNg(ng) => ng.next(&mut self.input, &self.name),
        }
    }

    /// Makes `n` bytes available at the read position; `false` if the stream ends first.
    fn fill(&mut self, n: usize) -> Result<bool, CaptureError> {
        self.input.fill(n).map_err(|bad| self.error(bad))
    }

    fn read_file_header(&mut self) -> Result<Format, CaptureError> {
        if !self.fill(4)? {
            let what = match (self.input.rest().len(), self.gzip) {
                (0, false) => "the file is empty".to_string(),
                (0, true) => "the gzip stream holds no data".to_string(),
                (n, _) => format!("only {n} bytes, too short for a capture header"),
            };
            return Err(self.format_error(0, format!("{what}; {HINT_NOT_A_CAPTURE}")));
        }
        let magic: [u8; 4] = self
            .input
            .rest()
            .get(..4)
            .and_then(|m| m.try_into().ok())
            .unwrap_or_default();
        let pcap = match magic {
            [0xd4, 0xc3, 0xb2, 0xa1] => Some((Order::Le, false)),
            [0xa1, 0xb2, 0xc3, 0xd4] => Some((Order::Be, false)),
            [0x4d, 0x3c, 0xb2, 0xa1] => Some((Order::Le, true)),
            [0xa1, 0xb2, 0x3c, 0x4d] => Some((Order::Be, true)),
            _ => None,
        };
        if let Some((order, nanos)) = pcap {
            return self.read_pcap_header(order, nanos).map(Format::Pcap);
        }
        if magic == PCAPNG_SHB {
            let mut ng = PcapNg::new();
            return match ng.section_header(&mut self.input) {
                Ok(Some(())) => Ok(Format::PcapNg(ng)),
                Ok(None) => Err(self.format_error(
                    0,
                    format!(
                        "the file ends inside its pcapng section header block; {HINT_NOT_A_CAPTURE}"
                    ),
                )),
                Err(Bad::Format { offset, what }) => {
                    Err(self.format_error(offset, format!("{what}; {HINT_NOT_A_CAPTURE}")))
                }
                Err(bad) => Err(self.error(bad)),
            };
        }
        Err(self.format_error(
            0,
            format!("{}; {HINT_NOT_A_CAPTURE}", describe_magic(magic, self.gzip)),
        ))
    }

    fn read_pcap_header(&mut self, order: Order, nanos: bool) -> Result<Pcap, CaptureError> {
        if !self.fill(24)? {
            return Err(self.format_error(
                0,
                format!("the file ends inside its 24-byte pcap header; {HINT_NOT_A_CAPTURE}"),
            ));
        }
        let h = self.input.rest();
        let (major, minor) = (rd_u16(h, 4, order), rd_u16(h, 6, order));
        let snaplen = rd_u32(h, 16, order);
        // The upper bits of the link-type field carry FCS flags, not the link type.
        let linktype = rd_u32(h, 20, order) & 0xffff;
        if major != 2 {
            return Err(self.format_error(
                4,
                format!(
                    "pcap version {major}.{minor} is not supported (only 2.x); {HINT_NOT_A_CAPTURE}"
                ),
            ));
        }
        let Some(link) = LinkType::from_linktype(linktype) else {
            return Err(CaptureError::UnsupportedLinkType {
                file: self.name.clone(),
                linktype,
            });
        };
        self.input.advance(24);
        let max_record = usize::try_from(snaplen.max(PCAP_MIN_RECORD_LIMIT))
            .unwrap_or(MAX_RECORD)
            .min(MAX_RECORD);
        Ok(Pcap {
            order,
            nanos,
            link,
            max_record,
        })
    }

    fn error(&self, bad: Bad) -> CaptureError {
        match bad {
            Bad::Io(source) => CaptureError::Io {
                file: self.name.clone(),
                source,
            },
            Bad::Gzip { offset, source } => self.format_error(
                offset,
                format!(
                    "the gzip stream is corrupt ({source}); `gzip -t FILE` confirms, and \
                     `gzip -dc FILE > copy.pcap` keeps what decompresses"
                ),
            ),
            Bad::Format { offset, what } => {
                self.format_error(offset, format!("{what}; {HINT_DAMAGED}"))
            }
        }
    }

    fn format_error(&self, offset: u64, what: String) -> CaptureError {
        let what = what.replace("FILE", &self.name);
        let what = if self.gzip {
            format!("{what} (the file is gzip-compressed: the offset counts decompressed bytes)")
        } else {
            what
        };
        CaptureError::Format {
            file: self.name.clone(),
            offset,
            what,
        }
    }
}

/// What a magic number that is not pcap or pcapng probably is.
fn describe_magic(magic: [u8; 4], gzip: bool) -> String {
    let hex = format!(
        "{:02x} {:02x} {:02x} {:02x}",
        magic[0], magic[1], magic[2], magic[3]
    );
    let kind = match magic {
        [0x28, 0xb5, 0x2f, 0xfd] => "zstd-compressed data: decompress it first (`zstd -d FILE`)",
        [0xfd, 0x37, 0x7a, 0x58] => "xz-compressed data: decompress it first (`xz -d FILE`)",
        [0x42, 0x5a, 0x68, _] => "bzip2-compressed data: decompress it first (`bzip2 -d FILE`)",
        [0x04, 0x22, 0x4d, 0x18] => "lz4-compressed data: decompress it first (`lz4 -d FILE`)",
        [0x1f, 0x8b, _, _] if gzip => {
            "gzip-compressed twice: decompress it once first (`gzip -dc FILE > once.gz`)"
        }
        [0xa1, 0xb2, 0xcd, 0x34] | [0x34, 0xcd, 0xb2, 0xa1] => {
            "a Kuznetzov-patched pcap, which parity does not read: convert it with \
             `editcap -F pcap FILE out.pcap`"
        }
        _ => "neither pcap nor pcapng",
    };
    format!("unknown magic number {hex} ({kind})")
}

/// A human name for the link types people most often meet, for the unsupported-link-type error.
fn linktype_name(linktype: u32) -> &'static str {
    match linktype {
        6 => "Token Ring",
        9 => "PPP",
        10 => "FDDI",
        50 => "PPP in HDLC framing",
        104 => "Cisco HDLC",
        105 => "IEEE 802.11 without radio header",
        119 => "802.11 with Prism header",
        127 => "802.11 with radiotap header",
        147..=162 => "user-defined",
        189 | 220 | 249 => "USB",
        192 => "PPI",
        195 | 215 | 230 | 283 => "IEEE 802.15.4",
        187 | 201 | 251 => "Bluetooth",
        227 => "SocketCAN",
        253 => "netlink",
        _ => "not decoded by parity",
    }
}

/// Byte order of a file or pcapng section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Order {
    Le,
    Be,
}

/// A `u16` at `at` in `b`; the callers have made sure the bytes are there (0 if not, never a
/// panic).
fn rd_u16(b: &[u8], at: usize, order: Order) -> u16 {
    match b.get(at..at + 2) {
        Some(&[x, y]) => match order {
            Order::Le => u16::from_le_bytes([x, y]),
            Order::Be => u16::from_be_bytes([x, y]),
        },
        _ => 0,
    }
}

/// A `u32` at `at` in `b`; see [`rd_u16`].
fn rd_u32(b: &[u8], at: usize, order: Order) -> u32 {
    match b.get(at..at + 4) {
        Some(&[w, x, y, z]) => match order {
            Order::Le => u32::from_le_bytes([w, x, y, z]),
            Order::Be => u32::from_be_bytes([w, x, y, z]),
        },
        _ => 0,
    }
}

/// What went wrong below the reader, before it knows the file's name.
#[derive(Debug)]
enum Bad {
    /// The source failed.
    Io(io::Error),
    /// The gzip stream is corrupt; `offset` is where decompressed data stops.
    Gzip { offset: u64, source: io::Error },
    /// The capture is damaged at `offset` (the caller adds the fix hint).
    Format { offset: u64, what: String },
}

/// What the container layer found next.
enum Next {
    Packet(Raw),
    End,
    /// The stream ends inside the record starting at this offset.
    Truncated(u64),
}

/// A packet record, its frame located in `Input::buf`.
struct Raw {
    ts: Nanos,
    link: RawLink,
    data: Range<usize>,
    wire_len: usize,
}

enum RawLink {
    Known(LinkType),
    /// A pcapng interface with a link type parity does not decode.
    Unknown,
    /// A pcapng packet naming an interface its section does not describe.
    NoInterface,
}

/// The byte source below the chunk buffer.
enum Source {
    Plain(Box<dyn Read + Send>),
    Gzip(Box<MultiGzDecoder<Counted>>),
}

/// The raw bytes under a gzip decoder, counted for progress reporting.
struct Counted {
    inner: io::Chain<io::Cursor<Bytes>, Box<dyn Read + Send>>,
    count: u64,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// The decompressed byte stream, held as one frozen chunk at a time so records can be handed
/// out as zero-copy slices of it.
struct Input {
    source: Source,
    /// The current chunk; `buf[pos..]` is not parsed yet.
    buf: Bytes,
    pos: usize,
    /// Stream offset of `buf[0]`.
    base: u64,
    eof: bool,
    /// The gzip stream ended before its end: what was decompressed is all there is.
    cut_short: bool,
}

impl Input {
    fn new(source: Source) -> Input {
        Input {
            source,
            buf: Bytes::new(),
            pos: 0,
            base: 0,
            eof: false,
            cut_short: false,
        }
    }

    /// Stream offset of the read position.
    fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// Bytes of the underlying file consumed (compressed bytes for gzip).
    fn consumed(&self) -> u64 {
        match &self.source {
            Source::Plain(_) => self.offset(),
            Source::Gzip(d) => d.get_ref().count,
        }
    }

    /// The unparsed bytes of the current chunk.
    fn rest(&self) -> &[u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    fn advance(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.len());
    }

    /// Re-reads the stream through a gzip decoder, starting with the bytes already buffered.
    fn decompress(&mut self) {
        let prefix = self.buf.slice(self.pos.min(self.buf.len())..);
        let raw = match std::mem::replace(&mut self.source, Source::Plain(Box::new(io::empty()))) {
            Source::Plain(r) => r,
            Source::Gzip(_) => return,
        };
        let counted = Counted {
            inner: io::Cursor::new(prefix).chain(raw),
            count: 0,
        };
        *self = Input::new(Source::Gzip(Box::new(MultiGzDecoder::new(counted))));
    }

    /// Makes `n` bytes available at the read position; `false` if the stream ends first (then
    /// whatever is left is still in `rest()`).
    #[inline]
    fn fill(&mut self, n: usize) -> Result<bool, Bad> {
        if self.buf.len() - self.pos >= n {
            return Ok(true);
        }
        self.refill(n)
    }

    /// Starts a new chunk with the unparsed tail of the current one (one partial record) and
    /// reads until it holds `n` bytes and at least a chunk's worth, or the stream ends. Growth is
    /// one chunk at a time, so a record length read from damaged data never allocates more than
    /// the stream actually holds.
    fn refill(&mut self, n: usize) -> Result<bool, Bad> {
        if self.eof {
            return Ok(false);
        }
        let rest = self.rest();
        let target = n.max(CHUNK);
        let mut v = Vec::with_capacity(target.min(rest.len() + CHUNK));
        v.extend_from_slice(rest);
        self.base += self.pos as u64;
        let mut result = Ok(());
        while v.len() < target {
            let step = (target - v.len()).min(CHUNK);
            v.reserve(step);
            match self.read_some(&mut v, step) {
                Ok(got) if got < step => {
                    self.eof = true;
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        let read_end = self.base + v.len() as u64;
        self.buf = Bytes::from(v);
        self.pos = 0;
        match result {
            Ok(()) => Ok(self.buf.len() >= n),
            Err(e) => match (&self.source, e.kind()) {
                // A gzip stream that simply stops is a capture cut short, like a raw file that
                // stops.
                (Source::Gzip(_), io::ErrorKind::UnexpectedEof) => {
                    self.eof = true;
                    self.cut_short = true;
                    Ok(self.buf.len() >= n)
                }
                // What the decoder itself rejects (bad header, bad deflate data, CRC mismatch).
                (Source::Gzip(_), io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData) => {
                    Err(Bad::Gzip {
                        offset: read_end,
                        source: e,
                    })
                }
                _ => Err(Bad::Io(e)),
            },
        }
    }

    /// Appends up to `n` bytes to `v`; fewer only at the end of the stream.
    fn read_some(&mut self, v: &mut Vec<u8>, n: usize) -> io::Result<usize> {
        let limit = n as u64;
        match &mut self.source {
            Source::Plain(r) => r.by_ref().take(limit).read_to_end(v),
            Source::Gzip(d) => d.by_ref().take(limit).read_to_end(v),
        }
    }

    /// The stream ended at a record boundary or inside a record starting at `offset`.
    fn end_at(&self, offset: u64) -> Next {
        if self.rest().is_empty() && !self.cut_short {
            Next::End
        } else {
            Next::Truncated(offset)
        }
    }
}

enum Format {
    Pcap(Pcap),
    PcapNg(PcapNg),
}

impl Format {
    fn name(&self) -> &'static str {
        match self {
            Format::Pcap(p) if p.nanos => "pcap (ns)",
            Format::Pcap(_) => "pcap",
            Format::PcapNg(_) => "pcapng",
        }
    }
}

/// A classic pcap file: one link type, fixed 16-byte record headers.
struct Pcap {
    order: Order,
    nanos: bool,
    link: LinkType,
    max_record: usize,
}

impl Pcap {
    fn next(&mut self, input: &mut Input) -> Result<Next, Bad> {
        let offset = input.offset();
        if !input.fill(16)? {
            return Ok(input.end_at(offset));
        }
        let h = input.rest();
        let sec = rd_u32(h, 0, self.order);
        let frac = rd_u32(h, 4, self.order);
        let caplen = rd_u32(h, 8, self.order) as usize;
        let wire_len = rd_u32(h, 12, self.order) as usize;
        if caplen > self.max_record {
            return Err(Bad::Format {
                offset,
                what: format!(
                    "record length {caplen} is larger than this file's snap length allows \
                     ({} bytes)",
                    self.max_record
                ),
            });
        }
        if !input.fill(16 + caplen)? {
            return Ok(Next::Truncated(offset));
        }
        let start = input.pos + 16;
        input.advance(16 + caplen);
        let frac_ns = if self.nanos {
            u64::from(frac)
        } else {
            u64::from(frac) * 1000
        };
        Ok(Next::Packet(Raw {
            ts: Nanos(u64::from(sec) * 1_000_000_000 + frac_ns),
            link: RawLink::Known(self.link),
            data: start..start + caplen,
            wire_len: wire_len.max(caplen),
        }))
    }
}
