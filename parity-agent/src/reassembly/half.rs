//! One direction of a connection: the sequence-space bookkeeping that turns segments into an
//! ordered byte stream with explicit gaps.
//!
//! Positions are 64-bit stream offsets counted from the direction's first byte (`base` is the
//! sequence number of offset 0); a 32-bit sequence number is placed by its wrapping distance from
//! the next expected byte, so sequence wrap-around needs no special case. In-order bytes go
//! straight out as the segment's own `Bytes`; only bytes ahead of a hole are buffered, as
//! non-overlapping pieces (first-arriving bytes win). This module knows nothing about flows,
//! roles or timeouts of whole connections: `Reassembler` decides when a direction is flushed.

use std::collections::{BTreeMap, BTreeSet};
use std::mem::size_of;
use std::ops::Bound;

use bytes::Bytes;

use super::{FlowKey, ReassemblyStats, Shared};
use crate::segment::Nanos;
use crate::stream::{ConnId, Direction, GapReason, StreamEvent};

/// The farthest ahead of the next expected byte a segment may start: the largest TCP window
/// (65535 << 14). Anything farther is not part of this stream's window and is ignored rather
/// than turned into a gigabyte-sized gap.
pub(super) const MAX_AHEAD: i32 = 1 << 30;

/// A gap-timer entry: (time the oldest buffered piece arrived, connection, direction index, key).
pub(super) type TimerKey = (Nanos, ConnId, u8, FlowKey);

/// Memory a buffered piece costs beyond its payload: its entry in `pieces` and in `arrivals`,
/// doubled for B-tree node slack (nodes are between half and fully occupied).
pub(super) const PIECE_COST: usize = 2 * (size_of::<(u64, Piece)>() + size_of::<(Nanos, u64)>());

/// Memory of a direction's out-of-order buffer when it holds anything: the boxed structure, its
/// allocation header and its gap-timer entry (doubled for node slack).
pub(super) const OOO_COST: usize = size_of::<Ooo>() + 16 + 2 * size_of::<TimerKey>();

/// Which stream a half-level operation is about, for events and timer keys.
pub(super) struct Who<'a> {
    pub conn: ConnId,
    pub dir: Direction,
    pub key: &'a FlowKey,
}

impl Who<'_> {
    fn timer(&self, at: Nanos) -> TimerKey {
        (at, self.conn, self.dir.index() as u8, *self.key)
    }
}

/// A run of stream bytes: captured `data` followed by `missing` uncaptured (snap length) bytes.
#[derive(Debug)]
struct Span {
    off: u64,
    data: Bytes,
    missing: u64,
}

impl Span {
    fn len(&self) -> u64 {
        self.data.len() as u64 + self.missing
    }

    fn end(&self) -> u64 {
        self.off + self.len()
    }

    /// Drop the first `n` bytes.
    fn skip_front(&mut self, n: u64) {
        let from_data = usize::try_from(n)
            .unwrap_or(usize::MAX)
            .min(self.data.len());
        self.data = self.data.slice(from_data..);
        self.missing = self.missing.saturating_sub(n - from_data as u64);
        self.off += n;
    }

    /// Keep only bytes before stream offset `end`.
    fn truncate_to(&mut self, end: u64) {
        let keep = end.saturating_sub(self.off);
        let data_len = self.data.len() as u64;
        if keep <= data_len {
            self.data.truncate(keep as usize);
            self.missing = 0;
        } else {
            self.missing = self.missing.min(keep - data_len);
        }
    }

    /// The part of this span in `[a, b)`, which must lie within it.
    fn sub(&self, a: u64, b: u64) -> Span {
        let data_end = self.off + self.data.len() as u64;
        let (da, db) = (a.min(data_end), b.min(data_end));
        let data = self
            .data
            .slice((da - self.off) as usize..(db - self.off) as usize);
        Span {
            off: a,
            data,
            missing: b - a - (db - da),
        }
    }
}

/// Bytes buffered ahead of a hole.
#[derive(Debug)]
pub(super) struct Piece {
    data: Bytes,
    missing: u64,
    /// Reassembler clock when it arrived: the age of the hole before it.
    arrived: Nanos,
}

/// A direction's out-of-order buffer, allocated only while it holds something.
#[derive(Debug, Default)]
struct Ooo {
    /// Non-overlapping pieces by stream offset, all beyond the next expected byte.
    pieces: BTreeMap<u64, Piece>,
    /// (arrival, offset) of every piece, so the oldest is found in O(log n).
    arrivals: BTreeSet<(Nanos, u64)>,
    /// Captured bytes held.
    bytes: usize,
}

impl Ooo {
    /// What the `ooo_bytes_per_flow` cap measures: captured bytes plus each piece's
    /// bookkeeping, so a flood of tiny (or snap-length-only) segments cannot hold far more
    /// memory than the cap says.
    fn charge(&self) -> usize {
        self.bytes + self.pieces.len() * PIECE_COST
    }
}

/// One direction of a connection.
#[derive(Debug)]
pub(super) struct Half {
    /// The sequence number of stream offset 0 is known.
    pub started: bool,
    /// FIN reached and `HalfClose` emitted: nothing more comes from this direction.
    pub done: bool,
    /// Sequence number of stream offset 0.
    base: u32,
    /// Stream offset of the next expected byte (delivered plus declared missing).
    next: u64,
    /// A gap-timer entry exists for this direction, filed under `timer_at` (while `ooo` holds
    /// pieces).
    timer_armed: bool,
    /// Delivered bytes are kept in `last`: set once this direction has shown a retransmission.
    /// A clean stream never pays for keeping them (a reference-count round trip, or an
    /// allocation for payloads that own their buffer, per segment).
    keep_last: bool,
    /// Stream offset of the FIN; `NO_END` until one is seen.
    end: u64,
    /// The most recently delivered bytes (while `keep_last`), ending at `last_end`, to tell a
    /// faithful retransmission from one whose content differs.
    last: Bytes,
    last_end: u64,
    ooo: Option<Box<Ooo>>,
    timer_at: Nanos,
}

/// `Half::end` before a FIN. Stream offsets never get near it: each segment advances them by
/// less than 2^33.
const NO_END: u64 = u64::MAX;

impl Default for Half {
    fn default() -> Half {
        Half {
            started: false,
            done: false,
            timer_armed: false,
            keep_last: false,
            base: 0,
            next: 0,
            end: NO_END,
            last: Bytes::new(),
            last_end: 0,
            ooo: None,
            timer_at: Nanos(0),
        }
    }
}

impl Half {
    /// Place stream offset 0 at sequence number `seq`.
    pub fn start(&mut self, seq: u32) {
        self.started = true;
        self.base = seq;
        self.next = 0;
    }

    /// Has a FIN been seen in this direction?
    pub fn fin_seen(&self) -> bool {
        self.end != NO_END
    }

    fn next_seq(&self) -> u32 {
        self.base.wrapping_add(self.next as u32)
    }

    /// Take in `data` (followed by `missing` uncaptured bytes) that starts at sequence number
    /// `seq`. `ts` stamps the events, `now` is the reassembler's clock.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub fn accept(
        &mut self,
        who: &Who<'_>,
        seq: u32,
        data: Bytes,
        missing: u32,
        ts: Nanos,
        now: Nanos,
        sh: &mut Shared,
        out: &mut Vec<StreamEvent>,
    ) {
        if data.is_empty() && missing == 0 {
            return;
        }
        let span = Span {
            off: self.next,
            data,
            missing: u64::from(missing),
        };
        if seq == self.next_seq() && self.ooo.is_none() && self.end == NO_END {
            self.deliver(who, span, ts, sh, out);
        } else {
            self.accept_slow(who, seq, span, ts, now, sh, out);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn accept_slow(
        &mut self,
        who: &Who<'_>,
        seq: u32,
        mut span: Span,
        ts: Nanos,
        now: Nanos,
        sh: &mut Shared,
        out: &mut Vec<StreamEvent>,
    ) {
        let delta = seq.wrapping_sub(self.next_seq()) as i32;
        if delta > MAX_AHEAD {
            sh.stats.ignored.out_of_window += 1;
            return;
        }
        if delta >= 0 {
            span.off = self.next + delta as u64;
        } else {
            // Starts before the next expected byte: the front was seen already.
            let behind = u64::from(delta.unsigned_abs());
            let overlap = behind.min(span.len());
            let start = i128::from(self.next) - i128::from(behind);
            let last_start = i128::from(self.last_end) - self.last.len() as i128;
            let (compared, differing) = count_differing(&span.data, start, &self.last, last_start);
            sh.stats.overlap_bytes_trimmed += overlap;
            sh.stats.overlap_conflict_bytes += differing;
            sh.stats.overlap_bytes_unchecked += overlap - compared;
            self.keep_last = true;
            if span.len() <= behind {
                sh.stats.duplicate_segments += 1;
                return;
            }
            span.skip_front(behind);
            span.off = self.next;
        }
        if self.end != NO_END {
            let end = self.end;
            if span.off >= end {
                sh.stats.ignored.beyond_fin += 1;
                return;
            }
            if span.end() > end {
                sh.stats.beyond_fin_bytes += span.end() - end;
                span.truncate_to(end);
            }
        }
        if span.off == self.next && self.ooo.is_none() {
            self.deliver(who, span, ts, sh, out);
            return;
        }
        let ahead = span.off > self.next;
        let ooo = self.ooo.get_or_insert_with(|| {
            sh.buffered += OOO_COST;
            Box::default()
        });
        if ooo.insert(span, now, sh) {
            if ahead {
                sh.stats.ooo_segments_buffered += 1;
            }
            if !self.timer_armed {
                self.timer_armed = true;
                self.timer_at = now;
                sh.timers.insert(who.timer(now));
            }
        } else {
            sh.stats.duplicate_segments += 1;
        }
        self.drain(who, ts, sh, out);
        let cap = sh.cfg.ooo_bytes_per_flow;
        while self.ooo.as_ref().is_some_and(|o| o.charge() > cap) {
            self.skip_to_first(who, ts, sh, out);
            self.drain(who, ts, sh, out);
        }
        self.release_if_empty(who, sh);
    }

    /// Emit in-order bytes (and the snap-length gap after them).
    #[inline]
    fn deliver(
        &mut self,
        who: &Who<'_>,
        span: Span,
        ts: Nanos,
        sh: &mut Shared,
        out: &mut Vec<StreamEvent>,
    ) {
        if !span.data.is_empty() {
            let len = span.data.len();
            self.next += len as u64;
            if self.keep_last {
                sh.buffered = sh.buffered - self.last.len() + len;
                self.last = span.data.clone();
                self.last_end = self.next;
            }
            out.push(StreamEvent::Data {
                conn: who.conn,
                dir: who.dir,
                ts,
                data: span.data,
            });
        }
        if span.missing > 0 {
            self.gap(
                who,
                span.missing,
                GapReason::Snaplen,
                ts,
                &mut sh.stats,
                out,
            );
        }
    }

    fn gap(
        &mut self,
        who: &Who<'_>,
        len: u64,
        reason: GapReason,
        ts: Nanos,
        stats: &mut ReassemblyStats,
        out: &mut Vec<StreamEvent>,
    ) {
        stats.gaps.add(reason, 1);
        stats.gap_bytes.add(reason, len);
        self.next += len;
        out.push(StreamEvent::Gap {
            conn: who.conn,
            dir: who.dir,
            ts,
            len,
            reason,
        });
    }

    /// Deliver buffered pieces that have become contiguous with the stream.
    fn drain(&mut self, who: &Who<'_>, ts: Nanos, sh: &mut Shared, out: &mut Vec<StreamEvent>) {
        loop {
            let span = {
                let Some(ooo) = self.ooo.as_mut() else { return };
                let Some(entry) = ooo.pieces.first_entry() else {
                    return;
                };
                let off = *entry.key();
                if off > self.next {
                    return;
                }
                let piece = entry.remove();
                ooo.arrivals.remove(&(piece.arrived, off));
                ooo.bytes -= piece.data.len();
                sh.buffered -= piece.data.len() + PIECE_COST;
                Span {
                    off,
                    data: piece.data,
                    missing: piece.missing,
                }
            };
            let mut span = span;
            if span.off < self.next {
                // Pieces never start behind the stream; kept robust all the same.
                span.skip_front(self.next - span.off);
                if span.len() == 0 {
                    continue;
                }
            }
            self.deliver(who, span, ts, sh, out);
        }
    }

    /// Declare the hole before the first buffered piece a gap.
    fn skip_to_first(
        &mut self,
        who: &Who<'_>,
        ts: Nanos,
        sh: &mut Shared,
        out: &mut Vec<StreamEvent>,
    ) {
        let first = self
            .ooo
            .as_ref()
            .and_then(|o| o.pieces.first_key_value())
            .map(|(k, _)| *k);
        if let Some(first) = first {
            if first > self.next {
                self.gap(
                    who,
                    first - self.next,
                    GapReason::Gap,
                    ts,
                    &mut sh.stats,
                    out,
                );
            }
        }
    }

    /// Free the buffer (and its timer) once it holds nothing.
    fn release_if_empty(&mut self, who: &Who<'_>, sh: &mut Shared) {
        if self.ooo.as_ref().is_some_and(|o| o.pieces.is_empty()) {
            self.ooo = None;
            sh.buffered -= OOO_COST;
            if self.timer_armed {
                self.timer_armed = false;
                sh.timers.remove(&who.timer(self.timer_at));
            }
        }
    }

    /// Deliver everything buffered, declaring every hole (and one before a known FIN) a gap.
    fn flush(&mut self, who: &Who<'_>, ts: Nanos, sh: &mut Shared, out: &mut Vec<StreamEvent>) {
        loop {
            self.drain(who, ts, sh, out);
            if self.ooo.as_ref().is_none_or(|o| o.pieces.is_empty()) {
                break;
            }
            self.skip_to_first(who, ts, sh, out);
        }
        if self.end != NO_END && self.end > self.next {
            let len = self.end - self.next;
            self.gap(who, len, GapReason::Gap, ts, &mut sh.stats, out);
        }
        self.release_if_empty(who, sh);
    }

    /// A FIN at sequence number `fin_seq` (the sequence number after the segment's payload).
    /// Holes before it become gaps now: a sender that has finished will not fill them later
    /// unless it retransmits, and a capture that lost them will never see them.
    pub fn fin(
        &mut self,
        who: &Who<'_>,
        fin_seq: u32,
        ts: Nanos,
        sh: &mut Shared,
        out: &mut Vec<StreamEvent>,
    ) {
        if self.done {
            return;
        }
        let delta = fin_seq.wrapping_sub(self.next_seq()) as i32;
        if delta > MAX_AHEAD {
            sh.stats.ignored.out_of_window += 1;
            return;
        }
        // A FIN behind bytes already delivered contradicts them; the stream ends where it is.
        let end = self.next + u64::try_from(delta).unwrap_or(0);
        self.end = end;
        self.truncate_buffer(end, sh);
        self.flush(who, ts, sh, out);
        self.done = true;
        out.push(StreamEvent::HalfClose {
            conn: who.conn,
            dir: who.dir,
            ts,
        });
    }

    /// Drop buffered bytes at or beyond stream offset `end`.
    fn truncate_buffer(&mut self, end: u64, sh: &mut Shared) {
        let Some(ooo) = self.ooo.as_mut() else { return };
        let beyond = ooo.pieces.split_off(&end);
        for (off, piece) in beyond {
            ooo.arrivals.remove(&(piece.arrived, off));
            ooo.bytes -= piece.data.len();
            sh.buffered -= piece.data.len() + PIECE_COST;
            sh.stats.beyond_fin_bytes += piece.data.len() as u64 + piece.missing;
        }
        if let Some((&off, piece)) = ooo.pieces.last_key_value() {
            let mut span = Span {
                off,
                data: piece.data.clone(),
                missing: piece.missing,
            };
            if span.end() > end {
                let before = span.data.len();
                sh.stats.beyond_fin_bytes += span.end() - end;
                span.truncate_to(end);
                let removed = before - span.data.len();
                ooo.bytes -= removed;
                sh.buffered -= removed;
                if let Some(p) = ooo.pieces.get_mut(&off) {
                    p.data = span.data;
                    p.missing = span.missing;
                }
            }
        }
    }

    /// The hole at the head of this direction's buffer may have waited `gap_timeout`: declare
    /// the holes whose later bytes are that old, deliver what follows them, and re-arm the timer
    /// for the rest. The caller has removed this direction's timer entry.
    pub fn expire_gap(
        &mut self,
        who: &Who<'_>,
        now: Nanos,
        sh: &mut Shared,
        out: &mut Vec<StreamEvent>,
    ) {
        self.timer_armed = false;
        let timeout = sh.cfg.gap_timeout;
        loop {
            let oldest = self
                .ooo
                .as_ref()
                .and_then(|o| o.arrivals.first())
                .map(|(at, _)| *at);
            let Some(oldest) = oldest else { break };
            if oldest.saturating_add(timeout) > now {
                self.timer_armed = true;
                self.timer_at = oldest;
                sh.timers.insert(who.timer(oldest));
                return;
            }
            self.skip_to_first(who, now, sh, out);
            self.drain(who, now, sh, out);
        }
        self.release_if_empty(who, sh);
    }

    /// The connection is closing: flush, then give back everything this direction holds.
    pub fn close(&mut self, who: &Who<'_>, ts: Nanos, sh: &mut Shared, out: &mut Vec<StreamEvent>) {
        self.flush(who, ts, sh, out);
        sh.buffered -= self.last.len();
        self.last = Bytes::new();
    }

    /// Captured bytes held in the out-of-order buffer.
    #[cfg(test)]
    pub fn ooo_bytes(&self) -> usize {
        self.ooo.as_ref().map_or(0, |o| o.bytes)
    }

    /// Pieces held in the out-of-order buffer.
    #[cfg(test)]
    pub fn ooo_pieces(&self) -> usize {
        self.ooo.as_ref().map_or(0, |o| o.pieces.len())
    }
}

impl Ooo {
    /// Add the parts of `span` not already buffered (first-arriving bytes win). Returns whether
    /// anything new was added.
    fn insert(&mut self, span: Span, now: Nanos, sh: &mut Shared) -> bool {
        let end = span.end();
        let mut cur = span.off;
        let mut added = false;
        while cur < end {
            if let Some((&start, piece)) = self.pieces.range(..=cur).next_back() {
                let piece_end = start + piece.data.len() as u64 + piece.missing;
                if piece_end > cur {
                    let overlap_end = end.min(piece_end);
                    let (compared, differing) = count_differing(
                        &span.sub(cur, overlap_end).data,
                        i128::from(cur),
                        &piece.data,
                        i128::from(start),
                    );
                    sh.stats.overlap_bytes_trimmed += overlap_end - cur;
                    sh.stats.overlap_conflict_bytes += differing;
                    sh.stats.overlap_bytes_unchecked += overlap_end - cur - compared;
                    cur = overlap_end;
                    continue;
                }
            }
            let next_start = self
                .pieces
                .range((Bound::Excluded(cur), Bound::Unbounded))
                .next()
                .map_or(u64::MAX, |(k, _)| *k);
            let piece_end = end.min(next_start);
            let part = span.sub(cur, piece_end);
            self.bytes += part.data.len();
            sh.buffered += part.data.len() + PIECE_COST;
            self.arrivals.insert((now, cur));
            self.pieces.insert(
                cur,
                Piece {
                    data: part.data,
                    missing: part.missing,
                    arrived: now,
                },
            );
            added = true;
            cur = piece_end;
        }
        added
    }
}

/// Where `new` (first byte at stream offset `new_off`) and `old` (at `old_off`) overlap: how
/// many bytes were compared, and how many of them differ.
fn count_differing(new: &[u8], new_off: i128, old: &[u8], old_off: i128) -> (u64, u64) {
    let lo = new_off.max(old_off);
    let hi = (new_off + new.len() as i128).min(old_off + old.len() as i128);
    if lo >= hi {
        return (0, 0);
    }
    let (n0, o0, len) = (
        (lo - new_off) as usize,
        (lo - old_off) as usize,
        (hi - lo) as usize,
    );
    match (new.get(n0..n0 + len), old.get(o0..o0 + len)) {
        (Some(a), Some(b)) => (
            len as u64,
            a.iter().zip(b).filter(|(x, y)| x != y).count() as u64,
        ),
        _ => (0, 0),
    }
}
