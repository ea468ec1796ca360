//! The pcapng container: sections, interfaces and packet blocks.
//!
//! Each section header block starts a section with its own byte order and an empty interface
//! list; interface description blocks add interfaces (link type, snap length, timestamp
//! resolution and offset); enhanced, simple and obsolete packet blocks carry the packets. Every
//! other block type is skipped. This module frames blocks and finds packets in them; decoding
//! the packets is [`super::decode`]'s job.

use std::ops::Range;

use super::decode::LinkType;
use super::{
    linktype_name, rd_u16, rd_u32, Bad, Input, Next, Order, Raw, RawLink, MAX_RECORD, PCAPNG_SHB,
};
use crate::segment::Nanos;

/// The byte-order magic of a section header block.
pub(super) const PCAPNG_BOM: u32 = 0x1a2b_3c4d;
/// Interfaces per pcapng section; real captures have a handful.
const MAX_INTERFACES: usize = 1 << 16;
/// Warnings about pcapng interfaces with an unknown link type, per file.
const MAX_UNKNOWN_LINKTYPE_WARNINGS: u32 = 8;

/// A pcapng file: sections of blocks, each section with its own byte order and interfaces.
pub(super) struct PcapNg {
    order: Order,
    interfaces: Vec<Interface>,
    /// The last packet timestamp, for simple packet blocks, which carry none.
    last_ts: Nanos,
    /// Interfaces with an unknown link type warned about so far (the count is in the stats).
    unknown_warned: u32,
}

struct Interface {
    link: Option<LinkType>,
    snaplen: u32,
    ts: TsScale,
    /// `if_tsoffset`: seconds to add to every timestamp.
    ts_offset_secs: i64,
}

/// How an interface's timestamp units convert to nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TsScale {
    Mul(u64),
    Div(u64),
    /// Units of 2^-n seconds.
    Pow2(u32),
}

impl TsScale {
    /// From the `if_tsresol` option: 10^-n seconds, or 2^-n when the top bit is set.
    fn from_tsresol(resol: u8) -> TsScale {
        let n = u32::from(resol & 0x7f);
        if resol & 0x80 != 0 {
            TsScale::Pow2(n)
        } else if n <= 9 {
            TsScale::Mul(10u64.pow(9 - n))
        } else {
            TsScale::Div(10u64.checked_pow(n - 9).unwrap_or(u64::MAX))
        }
    }

    fn to_nanos(self, units: u64) -> u64 {
        match self {
            TsScale::Mul(m) => units.saturating_mul(m),
            TsScale::Div(d) => units / d,
            TsScale::Pow2(n) => {
                u64::try_from((u128::from(units) * 1_000_000_000) >> n).unwrap_or(u64::MAX)
            }
        }
    }
}

impl Interface {
    fn nanos(&self, units: u64) -> Nanos {
        let ns = self.ts.to_nanos(units);
        if self.ts_offset_secs == 0 {
            return Nanos(ns);
        }
        let shifted = i128::from(ns) + i128::from(self.ts_offset_secs) * 1_000_000_000;
        Nanos(u64::try_from(shifted.max(0)).unwrap_or(u64::MAX))
    }
}

pub(super) const BLOCK_IDB: u32 = 1;
pub(super) const BLOCK_PB: u32 = 2;
pub(super) const BLOCK_SPB: u32 = 3;
pub(super) const BLOCK_EPB: u32 = 6;
pub(super) const OPT_END: u16 = 0;
pub(super) const OPT_IF_TSRESOL: u16 = 9;
pub(super) const OPT_IF_TSOFFSET: u16 = 14;

impl PcapNg {
    /// A reader positioned before the first section header block.
    pub(super) fn new() -> PcapNg {
        PcapNg {
            order: Order::Le,
            interfaces: Vec::new(),
            last_ts: Nanos(0),
            unknown_warned: 0,
        }
    }

    /// The next packet, skipping blocks that hold none.
    pub(super) fn next(&mut self, input: &mut Input, name: &str) -> Result<Next, Bad> {
        loop {
            let offset = input.offset();
            if !input.fill(8)? {
                return Ok(input.end_at(offset));
            }
            if input.rest().starts_with(&PCAPNG_SHB) {
                match self.section_header(input)? {
                    Some(()) => continue,
                    None => return Ok(Next::Truncated(offset)),
                }
            }
            let h = input.rest();
            let block_type = rd_u32(h, 0, self.order);
            let len = block_len(rd_u32(h, 4, self.order), 12, offset)?;
            if !input.fill(len)? {
                return Ok(Next::Truncated(offset));
            }
            check_trailer(input.rest(), len, self.order, offset)?;
            let body = input.pos + 8..input.pos + len - 4;
            input.advance(len);
            let raw = match block_type {
                BLOCK_IDB => {
                    self.interface(input.buf.get(body).unwrap_or_default(), offset, name)?;
                    continue;
                }
                BLOCK_EPB => self.packet(input, body, offset, false)?,
                BLOCK_PB => self.packet(input, body, offset, true)?,
                BLOCK_SPB => self.simple_packet(input, body, offset)?,
                // Name resolution, statistics, decryption secrets, custom blocks, ...: nothing
                // parity needs.
                _ => continue,
            };
            return Ok(Next::Packet(raw));
        }
    }

    /// Reads the section header block at the read position, which starts a new section with its
    /// own byte order and no interfaces. `None` if the stream ends inside it.
    pub(super) fn section_header(&mut self, input: &mut Input) -> Result<Option<()>, Bad> {
        let offset = input.offset();
        if !input.fill(12)? {
            return Ok(None);
        }
        let h = input.rest();
        let order = match rd_u32(h, 8, Order::Le) {
            PCAPNG_BOM => Order::Le,
            bom if bom.swap_bytes() == PCAPNG_BOM => Order::Be,
            bom => {
                return Err(Bad::Format {
                    offset: offset + 8,
                    what: format!(
                        "pcapng section header has byte-order magic {bom:#010x}, not 0x1a2b3c4d"
                    ),
                })
            }
        };
        let len = block_len(rd_u32(h, 4, order), 28, offset)?;
        if !input.fill(len)? {
            return Ok(None);
        }
        let h = input.rest();
        check_trailer(h, len, order, offset)?;
        let (major, minor) = (rd_u16(h, 12, order), rd_u16(h, 14, order));
        if major != 1 {
            return Err(Bad::Format {
                offset,
                what: format!("pcapng version {major}.{minor} is not supported (only 1.x)"),
            });
        }
        input.advance(len);
        self.order = order;
        self.interfaces.clear();
        Ok(Some(()))
    }

    fn interface(&mut self, body: &[u8], offset: u64, name: &str) -> Result<(), Bad> {
        if body.len() < 8 {
            return Err(Bad::Format {
                offset,
                what: format!("interface description block body of {} bytes", body.len()),
            });
        }
        if self.interfaces.len() >= MAX_INTERFACES {
            return Err(Bad::Format {
                offset,
                what: format!("more than {MAX_INTERFACES} interfaces in one pcapng section"),
            });
        }
        let linktype = u32::from(rd_u16(body, 0, self.order));
        let snaplen = rd_u32(body, 4, self.order);
        let mut iface = Interface {
            link: LinkType::from_linktype(linktype),
            snaplen,
            ts: TsScale::Mul(1000),
            ts_offset_secs: 0,
        };
        let mut at = 8;
        while at + 4 <= body.len() {
            let code = rd_u16(body, at, self.order);
            let len = usize::from(rd_u16(body, at + 2, self.order));
            let value = body.get(at + 4..at + 4 + len).ok_or_else(|| Bad::Format {
                offset: offset + 8 + at as u64,
                what: format!("interface option {code} of {len} bytes runs past its block"),
            })?;
            match code {
                OPT_END => break,
                OPT_IF_TSRESOL => {
                    if let Some(&resol) = value.first() {
                        iface.ts = TsScale::from_tsresol(resol);
                    }
                }
                OPT_IF_TSOFFSET => {
                    if let Ok(v) = <[u8; 8]>::try_from(value) {
                        iface.ts_offset_secs = match self.order {
                            Order::Le => i64::from_le_bytes(v),
                            Order::Be => i64::from_be_bytes(v),
                        };
                    }
                }
                _ => {}
            }
            at += 4 + len.next_multiple_of(4);
        }
        if iface.link.is_none() && self.unknown_warned < MAX_UNKNOWN_LINKTYPE_WARNINGS {
            self.unknown_warned += 1;
            tracing::warn!(
                file = %name,
                interface = self.interfaces.len(),
                linktype,
                "pcapng interface {} has link type {linktype} ({}), which parity does not decode: \
                 its packets are skipped and counted as unknown_linktype",
                self.interfaces.len(),
                linktype_name(linktype)
            );
        }
        self.interfaces.push(iface);
        Ok(())
    }

    /// An enhanced packet block (or the obsolete packet block, whose interface id is 16 bits
    /// followed by a drop counter).
    fn packet(
        &mut self,
        input: &Input,
        body: Range<usize>,
        offset: u64,
        obsolete: bool,
    ) -> Result<Raw, Bad> {
        let b = input.buf.get(body.clone()).unwrap_or_default();
        if b.len() < 20 {
            return Err(Bad::Format {
                offset,
                what: format!("packet block body of {} bytes, less than 20", b.len()),
            });
        }
        let iface = if obsolete {
            u32::from(rd_u16(b, 0, self.order))
        } else {
            rd_u32(b, 0, self.order)
        };
        let units = u64::from(rd_u32(b, 4, self.order)) << 32 | u64::from(rd_u32(b, 8, self.order));
        let caplen = rd_u32(b, 12, self.order) as usize;
        let wire_len = rd_u32(b, 16, self.order) as usize;
        if caplen > b.len() - 20 {
            return Err(Bad::Format {
                offset,
                what: format!(
                    "packet block says it holds {caplen} captured bytes but has room for {}",
                    b.len() - 20
                ),
            });
        }
        let data = body.start + 20..body.start + 20 + caplen;
        let wire_len = wire_len.max(caplen);
        let Some(interface) = self.interfaces.get(iface as usize) else {
            return Ok(Raw {
                ts: self.last_ts,
                link: RawLink::NoInterface,
                data,
                wire_len,
            });
        };
        let ts = interface.nanos(units);
        self.last_ts = ts;
        Ok(Raw {
            ts,
            link: interface.link.map_or(RawLink::Unknown, RawLink::Known),
            data,
            wire_len,
        })
    }

    /// A simple packet block: interface 0, no timestamp (the previous packet's is used), and a
    /// captured length implied by the block length and the interface's snap length.
    fn simple_packet(
        &mut self,
        input: &Input,
        body: Range<usize>,
        offset: u64,
    ) -> Result<Raw, Bad> {
        let b = input.buf.get(body.clone()).unwrap_or_default();
        if b.len() < 4 {
            return Err(Bad::Format {
                offset,
                what: format!("simple packet block body of {} bytes, less than 4", b.len()),
            });
        }
        let wire_len = rd_u32(b, 0, self.order) as usize;
        let mut caplen = wire_len.min(b.len() - 4);
        let link = match self.interfaces.first() {
            Some(interface) => {
                if interface.snaplen != 0 {
                    caplen = caplen.min(interface.snaplen as usize);
                }
                interface.link.map_or(RawLink::Unknown, RawLink::Known)
            }
            None => RawLink::NoInterface,
        };
        Ok(Raw {
            ts: self.last_ts,
            link,
            data: body.start + 4..body.start + 4 + caplen,
            wire_len: wire_len.max(caplen),
        })
    }
}

/// Checks a block's length field: at least `min`, a multiple of 4, at most [`MAX_RECORD`].
fn block_len(len: u32, min: usize, offset: u64) -> Result<usize, Bad> {
    let n = len as usize;
    if n < min || !n.is_multiple_of(4) || n > MAX_RECORD {
        return Err(Bad::Format {
            offset,
            what: format!(
                "impossible pcapng block length {len} (a block is a multiple of 4 bytes, at least \
                 {min} and at most {MAX_RECORD})"
            ),
        });
    }
    Ok(n)
}

/// Checks that the length repeated at the end of a block (`b` starts at the block) matches.
fn check_trailer(b: &[u8], len: usize, order: Order, offset: u64) -> Result<(), Bad> {
    let trailer = rd_u32(b, len - 4, order);
    if trailer as usize != len {
        return Err(Bad::Format {
            offset,
            what: format!(
                "pcapng block length {len} at its start does not match {trailer} at its end"
            ),
        });
    }
    Ok(())
}
