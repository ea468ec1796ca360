//! JSON bodies: a zero-copy RFC 8259 parser and the structural diff under tolerance rules.
//!
//! The parser builds a flat, pre-order tree of [`Node`]s that borrow the body: strings are
//! their raw text between the quotes (decoded only when an escape makes a comparison need it)
//! and numbers are their literal text, compared as exact decimals by [`super::number`]. It
//! accepts exactly RFC 8259 (UTF-8, any value at the top, `\uXXXX` escapes including surrogate
//! pairs; a lone surrogate is kept as its code unit so `"\ud800"` and `"\ud801"` stay different)
//! and refuses nesting deeper than [`MAX_DEPTH`], which the comparator answers by comparing
//! hashes instead. Duplicate member names are kept and matched in order of appearance.
//!
//! The diff walks both trees at once. Objects are compared by member name whatever their order
//! (in lock-step while the names line up, which is the common case, by sorted names otherwise);
//! arrays by position, unless a rule makes them unordered. Every difference is reported at its
//! exact location (`$.items[2].price`); for an array whose length differs, `length` is reported
//! once at the array and the common prefix element by element; an array that holds the same
//! elements in another order is reported once as `order`. Unordered arrays match each element
//! to its closest counterpart: equal in place first, then equal by a value hash (verified), then
//! greedily by fewest differences, within a work budget per comparison after which the rest are
//! paired in order (counted by the comparator).
//!
//! This module does not decide which bodies are JSON, nor hold any state between comparisons.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::hash::Hasher;
use std::ops::Range;

use rustc_hash::{FxHashMap, FxHasher};

use super::number::{within_tolerance, Number};
use super::path::push_key;
use super::rules::{CompiledRule, StepRef, Tolerance};
use super::{DiffKind, Difference};
use crate::config::Action;

/// Deepest nesting of arrays and objects the parser accepts.
pub const MAX_DEPTH: usize = 128;

/// Longest rendering of a value in a [`Difference`], in bytes (then `…`).
pub(crate) const MAX_VALUE_CHARS: usize = 256;

/// Value comparisons (nodes visited) one comparison may spend on similarity search in unordered
/// arrays before it pairs the remaining elements in order.
pub(crate) const WORK_BUDGET: u64 = 4_000_000;

/// One value of a parsed document. Containers are followed by their children in pre-order;
/// an object's children alternate name (a `Str`) and value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Node<'a> {
    Null,
    Bool(bool),
    /// The literal, validated.
    Num(&'a str),
    /// The text between the quotes; `escaped` when it holds a backslash.
    Str {
        raw: &'a str,
        escaped: bool,
    },
    /// `len` elements; the subtree ends before node `end`.
    Arr {
        len: u32,
        end: u32,
    },
    /// `len` members; the subtree ends before node `end`.
    Obj {
        len: u32,
        end: u32,
    },
}

/// Why a body is not a JSON document the diff can take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ParseError {
    /// Not UTF-8.
    NotUtf8,
    /// Not JSON; the byte offset of the first problem.
    Syntax(usize),
    /// Nested deeper than [`MAX_DEPTH`].
    TooDeep,
}

/// A parsed document borrowing its text.
#[derive(Debug)]
pub(crate) struct Doc<'a> {
    nodes: Vec<Node<'a>>,
}

/// Parse one JSON text (surrounding whitespace allowed, nothing else).
pub(crate) fn parse(input: &[u8]) -> Result<Doc<'_>, ParseError> {
    let src = std::str::from_utf8(input).map_err(|_| ParseError::NotUtf8)?;
    if input.len() >= u32::MAX as usize {
        // Node positions are u32; bodies are capped far below this.
        return Err(ParseError::Syntax(0));
    }
    let mut p = Parser {
        b: input,
        src,
        i: 0,
        nodes: Vec::with_capacity(input.len() / 6 + 4),
        depth: 0,
    };
    p.value()?;
    p.ws();
    if p.i != input.len() {
        return Err(ParseError::Syntax(p.i));
    }
    Ok(Doc { nodes: p.nodes })
}

/// Bytes that stop the fast scan of a string: the quote, the backslash and control characters.
static STRING_STOP: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

struct Parser<'a> {
    b: &'a [u8],
    src: &'a str,
    i: usize,
    nodes: Vec<Node<'a>>,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn err(&self) -> ParseError {
        ParseError::Syntax(self.i)
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn value(&mut self) -> Result<(), ParseError> {
        self.ws();
        match self.peek() {
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(b'"') => {
                let (raw, escaped) = self.string()?;
                self.nodes.push(Node::Str { raw, escaped });
                Ok(())
            }
            Some(b't') => self.literal(b"true", Node::Bool(true)),
            Some(b'f') => self.literal(b"false", Node::Bool(false)),
            Some(b'n') => self.literal(b"null", Node::Null),
            Some(b'-' | b'0'..=b'9') => {
                let raw = self.number()?;
                self.nodes.push(Node::Num(raw));
                Ok(())
            }
            _ => Err(self.err()),
        }
    }

    fn literal(&mut self, word: &[u8], node: Node<'a>) -> Result<(), ParseError> {
        if self.b.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            self.nodes.push(node);
            Ok(())
        } else {
            Err(self.err())
        }
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            Err(ParseError::TooDeep)
        } else {
            Ok(())
        }
    }

    fn array(&mut self) -> Result<(), ParseError> {
        self.enter()?;
        self.i += 1;
        let at = self.nodes.len();
        self.nodes.push(Node::Arr { len: 0, end: 0 });
        let mut len = 0u32;
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
        } else {
            loop {
                self.value()?;
                len += 1;
                self.ws();
                match self.peek() {
                    Some(b',') => self.i += 1,
                    Some(b']') => {
                        self.i += 1;
                        break;
                    }
                    _ => return Err(self.err()),
                }
            }
        }
        let end = self.nodes.len() as u32;
        if let Some(n) = self.nodes.get_mut(at) {
            *n = Node::Arr { len, end };
        }
        self.depth -= 1;
        Ok(())
    }

    fn object(&mut self) -> Result<(), ParseError> {
        self.enter()?;
        self.i += 1;
        let at = self.nodes.len();
        self.nodes.push(Node::Obj { len: 0, end: 0 });
        let mut len = 0u32;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
        } else {
            loop {
                self.ws();
                if self.peek() != Some(b'"') {
                    return Err(self.err());
                }
                let (raw, escaped) = self.string()?;
                self.nodes.push(Node::Str { raw, escaped });
                self.ws();
                if self.peek() != Some(b':') {
                    return Err(self.err());
                }
                self.i += 1;
                self.value()?;
                len += 1;
                self.ws();
                match self.peek() {
                    Some(b',') => self.i += 1,
                    Some(b'}') => {
                        self.i += 1;
                        break;
                    }
                    _ => return Err(self.err()),
                }
            }
        }
        let end = self.nodes.len() as u32;
        if let Some(n) = self.nodes.get_mut(at) {
            *n = Node::Obj { len, end };
        }
        self.depth -= 1;
        Ok(())
    }

    /// At a `"`: the raw content and whether it has escapes; leaves `i` after the closing quote.
    fn string(&mut self) -> Result<(&'a str, bool), ParseError> {
        let start = self.i + 1;
        let mut j = start;
        let mut escaped = false;
        loop {
            // Eight bytes at a time while none of them can stop the scan.
            while let Some(chunk) = self.b.get(j..j + 8) {
                if chunk.iter().any(|&c| STRING_STOP[c as usize]) {
                    break;
                }
                j += 8;
            }
            while let Some(&c) = self.b.get(j) {
                if STRING_STOP[c as usize] {
                    break;
                }
                j += 1;
            }
            match self.b.get(j) {
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    j = match self.b.get(j + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => j + 2,
                        Some(b'u') => match self.b.get(j + 2..j + 6) {
                            Some(h) if h.iter().all(u8::is_ascii_hexdigit) => j + 6,
                            _ => return Err(ParseError::Syntax(j)),
                        },
                        _ => return Err(ParseError::Syntax(j)),
                    };
                }
                _ => return Err(ParseError::Syntax(j)),
            }
        }
        // Both ends are at ASCII quotes, so the slice is on character boundaries.
        let raw = self.src.get(start..j).ok_or(ParseError::Syntax(start))?;
        self.i = j + 1;
        Ok((raw, escaped))
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> Result<&'a str, ParseError> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.err()),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(self.err());
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(self.err());
            }
        }
        self.src.get(start..self.i).ok_or(ParseError::Syntax(start))
    }
}

impl<'a> Doc<'a> {
    #[inline]
    fn get(&self, i: usize) -> Node<'a> {
        self.nodes.get(i).copied().unwrap_or(Node::Null)
    }

    /// The node after `i`'s subtree.
    #[inline]
    fn skip(&self, i: usize) -> usize {
        match self.get(i) {
            Node::Arr { end, .. } | Node::Obj { end, .. } => end as usize,
            _ => i + 1,
        }
    }

    /// Children of the array at `i`.
    fn elements(&self, i: usize) -> Children<'_, 'a> {
        let len = match self.get(i) {
            Node::Arr { len, .. } => len as usize,
            _ => 0,
        };
        Children {
            doc: self,
            at: i + 1,
            left: len,
        }
    }

    /// `(name, value)` node pairs of the object at `i`.
    fn members(&self, i: usize) -> Members<'_, 'a> {
        let len = match self.get(i) {
            Node::Obj { len, .. } => len as usize,
            _ => 0,
        };
        Members {
            doc: self,
            at: i + 1,
            left: len,
        }
    }

    /// Number of nodes (tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.nodes.len()
    }
}

struct Children<'d, 'a> {
    doc: &'d Doc<'a>,
    at: usize,
    left: usize,
}

impl Iterator for Children<'_, '_> {
    type Item = usize;
    #[inline]
    fn next(&mut self) -> Option<usize> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let i = self.at;
        self.at = self.doc.skip(i);
        Some(i)
    }
}

#[derive(Clone)]
struct Members<'d, 'a> {
    doc: &'d Doc<'a>,
    at: usize,
    left: usize,
}

impl Iterator for Members<'_, '_> {
    type Item = (usize, usize);
    #[inline]
    fn next(&mut self) -> Option<(usize, usize)> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let k = self.at;
        let v = k + 1;
        self.at = self.doc.skip(v);
        Some((k, v))
    }
}

/// Decode the raw text of a string into `out`: escapes resolved, surrogate pairs joined, a lone
/// surrogate written as its code unit in generalised UTF-8 (so it stays distinct).
pub(crate) fn decode_into(raw: &str, out: &mut Vec<u8>) {
    let b = raw.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let Some(rest) = b.get(i..) else { break };
        match memchr::memchr(b'\\', rest) {
            None => {
                out.extend_from_slice(rest);
                break;
            }
            Some(k) => {
                out.extend_from_slice(rest.get(..k).unwrap_or_default());
                i += k;
            }
        }
        let simple = match b.get(i + 1) {
            Some(b'n') => b'\n',
            Some(b't') => b'\t',
            Some(b'r') => b'\r',
            Some(b'b') => 0x08,
            Some(b'f') => 0x0c,
            Some(b'u') => {
                let Some(cu) = hex4(b, i + 2) else {
                    // Not reachable for parsed text; keep the byte rather than fail.
                    out.push(b'\\');
                    i += 1;
                    continue;
                };
                i += 6;
                let mut cp = u32::from(cu);
                if (0xD800..0xDC00).contains(&cu)
                    && b.get(i) == Some(&b'\\')
                    && b.get(i + 1) == Some(&b'u')
                {
                    if let Some(lo) = hex4(b, i + 2).filter(|lo| (0xDC00..0xE000).contains(lo)) {
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (u32::from(lo) - 0xDC00);
                        i += 6;
                    }
                }
                push_code_point(out, cp);
                continue;
            }
            Some(&c) => c,
            None => b'\\',
        };
        out.push(simple);
        i += 2;
    }
}

fn hex4(b: &[u8], at: usize) -> Option<u16> {
    let h = b.get(at..at + 4)?;
    let s = std::str::from_utf8(h).ok()?;
    u16::from_str_radix(s, 16).ok()
}

/// UTF-8 encoding extended to surrogate code points (WTF-8), so every `\uXXXX` maps to bytes.
fn push_code_point(out: &mut Vec<u8>, cp: u32) {
    if cp < 0x80 {
        out.push(cp as u8);
    } else if cp < 0x800 {
        out.push(0xC0 | (cp >> 6) as u8);
        out.push(0x80 | (cp & 0x3F) as u8);
    } else if cp < 0x10000 {
        out.push(0xE0 | (cp >> 12) as u8);
        out.push(0x80 | ((cp >> 6) & 0x3F) as u8);
        out.push(0x80 | (cp & 0x3F) as u8);
    } else {
        out.push(0xF0 | (cp >> 18) as u8);
        out.push(0x80 | ((cp >> 12) & 0x3F) as u8);
        out.push(0x80 | ((cp >> 6) & 0x3F) as u8);
        out.push(0x80 | (cp & 0x3F) as u8);
    }
}

/// The decoded bytes of a string node.
fn string_bytes<'a>(raw: &'a str, escaped: bool) -> Cow<'a, [u8]> {
    if escaped {
        let mut v = Vec::with_capacity(raw.len());
        decode_into(raw, &mut v);
        Cow::Owned(v)
    } else {
        Cow::Borrowed(raw.as_bytes())
    }
}

/// JSON types, with integer and non-integer literals apart when numbers are strict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum JsonType {
    Null,
    Bool,
    Number(bool),
    String,
    Array,
    Object,
}

/// One step of the location being compared.
#[derive(Clone, Copy, Debug)]
enum PStep<'a> {
    Key { raw: &'a str, escaped: bool },
    Index(usize),
}

/// What the diff found besides the differences.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// More differences than the cap; the rest were not listed.
    pub truncated: bool,
    /// An unordered array exhausted the work budget and was paired partly in order.
    pub budget_exhausted: bool,
}

/// Compare two parsed documents; `applicable` are the indices into `rules` that apply to this
/// exchange's endpoint (in `rules` order, most specific first).
pub(crate) fn diff_documents<'a>(
    p: &Doc<'a>,
    m: &Doc<'a>,
    rules: &[CompiledRule],
    applicable: &[u32],
    strict: bool,
    max_differences: usize,
    out: &mut Vec<Difference>,
) -> Outcome {
    let mut d = Differ {
        rules,
        strict,
        p,
        m,
        path: Vec::new(),
        frames: Vec::new(),
        out,
        max_out: max_differences,
        outcome: Outcome::default(),
        count: None,
        work: 0,
        sa: Vec::new(),
        sb: Vec::new(),
    };
    for &r in applicable {
        if let Some(rule) = rules.get(r as usize) {
            let s = rule.start();
            if s != 0 {
                d.frames.push((r, s));
            }
        }
    }
    let root = 0..d.frames.len();
    let action = d.action(root.clone());
    d.value(0, 0, root, action, None);
    d.outcome
}

struct Differ<'d, 'a> {
    rules: &'d [CompiledRule],
    strict: bool,
    p: &'d Doc<'a>,
    m: &'d Doc<'a>,
    /// The location being compared.
    path: Vec<PStep<'a>>,
    /// Live rule automata: `(rule index, state)`; each node's live set is a range of this stack.
    frames: Vec<(u32, u64)>,
    out: &'d mut Vec<Difference>,
    max_out: usize,
    outcome: Outcome,
    /// Counting instead of collecting: `(differences so far, stop after this many)`.
    count: Option<(usize, usize)>,
    work: u64,
    sa: Vec<u8>,
    sb: Vec<u8>,
}

type Governing = Option<(Action, Tolerance)>;

impl<'a> Differ<'_, 'a> {
    #[inline]
    fn stop(&self) -> bool {
        match self.count {
            Some((n, limit)) => n > limit,
            None => self.outcome.truncated,
        }
    }

    /// The live rules at a child of a node whose live rules are `parent`.
    fn enter(&mut self, parent: Range<usize>, step: PStep<'a>) -> Range<usize> {
        let start = self.frames.len();
        if parent.is_empty() {
            return start..start;
        }
        let mut decoded = std::mem::take(&mut self.sa);
        decoded.clear();
        for k in parent {
            let Some(&(r, mask)) = self.frames.get(k) else {
                continue;
            };
            let Some(rule) = self.rules.get(r as usize) else {
                continue;
            };
            let s = match step {
                PStep::Index(i) => StepRef::Index(i),
                PStep::Key {
                    raw,
                    escaped: false,
                } => StepRef::Key(raw.as_bytes()),
                PStep::Key { raw, escaped: true } => {
                    if !rule.reads_keys(mask) {
                        StepRef::Key(&[])
                    } else {
                        if decoded.is_empty() {
                            decode_into(raw, &mut decoded);
                        }
                        StepRef::Key(&decoded)
                    }
                }
            };
            let next = rule.advance(mask, s);
            if next != 0 {
                self.frames.push((r, next));
            }
        }
        self.sa = decoded;
        start..self.frames.len()
    }

    /// The rule governing the node whose live rules are `frame`: the first that accepts.
    fn action(&self, frame: Range<usize>) -> Governing {
        for k in frame {
            let &(r, mask) = self.frames.get(k)?;
            let rule = self.rules.get(r as usize)?;
            if rule.accepts(mask) {
                return Some((rule.action, rule.tolerance));
            }
        }
        None
    }

    /// Compare a child reached by `step` (present on one side or both).
    fn child(
        &mut self,
        parent: Range<usize>,
        step: PStep<'a>,
        p: Option<usize>,
        m: Option<usize>,
        tol: Option<Tolerance>,
    ) {
        self.path.push(step);
        let frame = self.enter(parent, step);
        let action = self.action(frame.clone());
        let ignored = matches!(action, Some((Action::Ignore, _)));
        match (p, m) {
            (Some(p), Some(m)) => self.value(p, m, frame.clone(), action, tol),
            (Some(p), None) if !ignored => self.emit(DiffKind::Missing, Some(p), None),
            (None, Some(m)) if !ignored => self.emit(DiffKind::Extra, None, Some(m)),
            _ => {}
        }
        self.frames.truncate(frame.start);
        self.path.pop();
    }

    fn type_of(&self, n: Node<'_>) -> JsonType {
        match n {
            Node::Null => JsonType::Null,
            Node::Bool(_) => JsonType::Bool,
            Node::Num(raw) => JsonType::Number(
                self.strict && Number::parse(raw).is_some_and(|x| !x.is_integer_literal()),
            ),
            Node::Str { .. } => JsonType::String,
            Node::Arr { .. } => JsonType::Array,
            Node::Obj { .. } => JsonType::Object,
        }
    }

    fn value(
        &mut self,
        p: usize,
        m: usize,
        frame: Range<usize>,
        action: Governing,
        inherited: Option<Tolerance>,
    ) {
        self.work += 1;
        let mut tol = inherited;
        let mut unordered = false;
        let (pn, mn) = (self.p.get(p), self.m.get(m));
        match action {
            Some((Action::Ignore, _)) => return,
            Some((Action::Present, _)) => {
                if self.type_of(pn) != self.type_of(mn) {
                    self.emit(DiffKind::Type, Some(p), Some(m));
                }
                return;
            }
            Some((Action::Numeric, t)) => tol = Some(t),
            Some((Action::Unordered, _)) => unordered = true,
            None => {}
        }
        match (pn, mn) {
            (Node::Obj { .. }, Node::Obj { .. }) => self.objects(p, m, frame, tol),
            (Node::Arr { .. }, Node::Arr { .. }) => {
                if unordered {
                    self.unordered(p, m, frame, tol)
                } else {
                    self.ordered(p, m, frame, tol)
                }
            }
            (Node::Num(a), Node::Num(b)) => self.numbers(a, b, p, m, tol),
            (
                Node::Str {
                    raw: a,
                    escaped: ea,
                },
                Node::Str {
                    raw: b,
                    escaped: eb,
                },
            ) => {
                if !self.str_eq(a, ea, b, eb) && !numeric_strings_within(a, b, tol) {
                    self.emit(DiffKind::Value, Some(p), Some(m));
                }
            }
            (Node::Null, Node::Null) => {}
            (Node::Bool(a), Node::Bool(b)) => {
                if a != b {
                    self.emit(DiffKind::Value, Some(p), Some(m));
                }
            }
            _ => self.emit(DiffKind::Type, Some(p), Some(m)),
        }
    }

    fn numbers(&mut self, a: &str, b: &str, p: usize, m: usize, tol: Option<Tolerance>) {
        if a == b {
            return;
        }
        let (Some(x), Some(y)) = (Number::parse(a), Number::parse(b)) else {
            self.emit(DiffKind::Value, Some(p), Some(m));
            return;
        };
        if self.strict && x.is_integer_literal() != y.is_integer_literal() {
            self.emit(DiffKind::Type, Some(p), Some(m));
            return;
        }
        if x.value_eq(&y) {
            return;
        }
        if let Some(t) = tol {
            if within_tolerance(&x, &y, t.relative, t.absolute) {
                return;
            }
        }
        self.emit(DiffKind::Value, Some(p), Some(m));
    }

    fn str_eq(&mut self, a: &str, ea: bool, b: &str, eb: bool) -> bool {
        if a == b {
            return true;
        }
        if !ea && !eb {
            return false;
        }
        self.sa.clear();
        self.sb.clear();
        if ea {
            decode_into(a, &mut self.sa);
        } else {
            self.sa.extend_from_slice(a.as_bytes());
        }
        if eb {
            decode_into(b, &mut self.sb);
        } else {
            self.sb.extend_from_slice(b.as_bytes());
        }
        self.sa == self.sb
    }

    fn key_step(doc: &Doc<'a>, k: usize) -> PStep<'a> {
        match doc.get(k) {
            Node::Str { raw, escaped } => PStep::Key { raw, escaped },
            _ => PStep::Key {
                raw: "",
                escaped: false,
            },
        }
    }

    fn objects(&mut self, p: usize, m: usize, frame: Range<usize>, tol: Option<Tolerance>) {
        let (pd, md) = (self.p, self.m);
        let mut pi = pd.members(p);
        let mut mi = md.members(m);
        // Lock-step while the names line up (same order on both sides, the usual case).
        loop {
            if self.stop() {
                return;
            }
            let (a, b) = (pi.clone().next(), mi.clone().next());
            match (a, b) {
                (None, None) => return,
                (Some((ka, va)), Some((kb, vb))) if same_raw_key(pd.get(ka), md.get(kb)) => {
                    pi.next();
                    mi.next();
                    let step = Self::key_step(pd, ka);
                    self.child(frame.clone(), step, Some(va), Some(vb), tol);
                }
                _ => break,
            }
        }
        let prest: Vec<(usize, usize)> = pi.collect();
        let mrest: Vec<(usize, usize)> = mi.collect();
        self.objects_by_name(&prest, &mrest, frame, tol);
    }

    /// Members matched by decoded name, whatever their order; differences are reported in the
    /// primary's member order, then the mirror's extra members in its order.
    fn objects_by_name(
        &mut self,
        prest: &[(usize, usize)],
        mrest: &[(usize, usize)],
        frame: Range<usize>,
        tol: Option<Tolerance>,
    ) {
        let (pd, md) = (self.p, self.m);
        let name = |doc: &Doc<'a>, k: usize| -> Cow<'a, [u8]> {
            match doc.get(k) {
                Node::Str { raw, escaped } => string_bytes(raw, escaped),
                _ => Cow::Borrowed(&[]),
            }
        };
        let mut ps: Vec<(Cow<'a, [u8]>, usize)> = prest
            .iter()
            .enumerate()
            .map(|(o, &(k, _))| (name(pd, k), o))
            .collect();
        let mut ms: Vec<(Cow<'a, [u8]>, usize)> = mrest
            .iter()
            .enumerate()
            .map(|(o, &(k, _))| (name(md, k), o))
            .collect();
        // Stable sorts keep duplicate names in order of appearance.
        ps.sort_by(|a, b| a.0.cmp(&b.0));
        ms.sort_by(|a, b| a.0.cmp(&b.0));
        let mut pair_of: Vec<Option<usize>> = vec![None; prest.len()];
        let mut used = vec![false; mrest.len()];
        let (mut i, mut j) = (0, 0);
        while let (Some(a), Some(b)) = (ps.get(i), ms.get(j)) {
            match a.0.cmp(&b.0) {
                std::cmp::Ordering::Equal => {
                    if let Some(slot) = pair_of.get_mut(a.1) {
                        *slot = Some(b.1);
                    }
                    if let Some(u) = used.get_mut(b.1) {
                        *u = true;
                    }
                    i += 1;
                    j += 1;
                }
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
            }
        }
        for (o, &(k, v)) in prest.iter().enumerate() {
            if self.stop() {
                return;
            }
            let mv = pair_of
                .get(o)
                .copied()
                .flatten()
                .and_then(|j| mrest.get(j))
                .map(|&(_, mv)| mv);
            let step = Self::key_step(pd, k);
            self.child(frame.clone(), step, Some(v), mv, tol);
        }
        for (o, &(k, v)) in mrest.iter().enumerate() {
            if self.stop() {
                return;
            }
            if !used.get(o).copied().unwrap_or(true) {
                let step = Self::key_step(md, k);
                self.child(frame.clone(), step, None, Some(v), tol);
            }
        }
    }

    fn ordered(&mut self, p: usize, m: usize, frame: Range<usize>, tol: Option<Tolerance>) {
        let (pd, md) = (self.p, self.m);
        let (plen, mlen) = (pd.elements(p).left, md.elements(m).left);
        if plen != mlen {
            self.emit_text(
                DiffKind::Length,
                Some(plen.to_string()),
                Some(mlen.to_string()),
            );
        }
        let before = self.out.len();
        // Positions whose elements differ, for the reorder check below.
        let mut differing: Vec<usize> = Vec::new();
        for (i, (a, b)) in pd.elements(p).zip(md.elements(m)).enumerate() {
            if self.stop() {
                return;
            }
            let n = self.out.len();
            self.child(frame.clone(), PStep::Index(i), Some(a), Some(b), tol);
            if self.out.len() != n {
                differing.push(i);
            }
        }
        // Same elements in another order: one `order` difference instead of a cascade. Only
        // the differing positions need a counterpart; the others are known equal in place.
        if self.count.is_none()
            && plen == mlen
            && differing.len() >= 2
            && !self.outcome.truncated
            && !self.over_budget()
        {
            let mut in_place = vec![true; plen];
            for &i in &differing {
                if let Some(x) = in_place.get_mut(i) {
                    *x = false;
                }
            }
            let pe: Vec<usize> = pd.elements(p).collect();
            let me: Vec<usize> = md.elements(m).collect();
            let matching = self.match_elements(&pe, &me, frame, tol, true, Some(&in_place));
            if matching.pair.iter().all(Option::is_some) {
                self.out.truncate(before);
                self.emit(DiffKind::Order, Some(p), Some(m));
            }
        }
    }

    fn unordered(&mut self, p: usize, m: usize, frame: Range<usize>, tol: Option<Tolerance>) {
        let pe: Vec<usize> = self.p.elements(p).collect();
        let me: Vec<usize> = self.m.elements(m).collect();
        // While counting (similarity scoring one level up) only exact matches are sought: the
        // score is a heuristic and must stay cheap.
        let exact_only = self.count.is_some();
        let matching = self.match_elements(&pe, &me, frame.clone(), tol, exact_only, None);
        for (i, &a) in pe.iter().enumerate() {
            if self.stop() {
                return;
            }
            match matching.pair.get(i).copied().flatten() {
                Some((_, true)) => {}
                Some((j, false)) => {
                    let b = me.get(j).copied();
                    self.child(frame.clone(), PStep::Index(i), Some(a), b, tol);
                }
                None => self.child(frame.clone(), PStep::Index(i), Some(a), None, tol),
            }
        }
        for (j, &b) in me.iter().enumerate() {
            if self.stop() {
                return;
            }
            if !matching.used.get(j).copied().unwrap_or(true) {
                self.child(frame.clone(), PStep::Index(j), None, Some(b), tol);
            }
        }
    }

    /// Differences between `p` and `m` as children at `step`, counting up to `limit + 1`.
    fn count_diff(
        &mut self,
        frame: Range<usize>,
        step: PStep<'a>,
        p: usize,
        m: usize,
        tol: Option<Tolerance>,
        limit: usize,
    ) -> usize {
        let saved = self.count.replace((0, limit));
        self.child(frame, step, Some(p), Some(m), tol);
        let n = self.count.map(|c| c.0).unwrap_or(0);
        self.count = saved;
        n
    }

    /// Pair primary elements with mirror elements: equal in place (`in_place[i]` when the
    /// caller already knows), then equal by hash, then (unless `exact_only`) greedily by fewest
    /// differences.
    fn match_elements(
        &mut self,
        pe: &[usize],
        me: &[usize],
        frame: Range<usize>,
        tol: Option<Tolerance>,
        exact_only: bool,
        in_place: Option<&[bool]>,
    ) -> Matching {
        let mut mt = Matching {
            pair: vec![None; pe.len()],
            used: vec![false; me.len()],
        };
        let mut left = 0usize;
        for (i, (&a, &b)) in pe.iter().zip(me).enumerate() {
            if self.over_budget() {
                return self.pair_rest_in_order(mt, exact_only);
            }
            let equal = match in_place {
                Some(known) => known.get(i).copied().unwrap_or(false),
                None => self.count_diff(frame.clone(), PStep::Index(i), a, b, tol, 0) == 0,
            };
            if equal {
                mt.set(i, i, true);
            } else {
                left += 1;
            }
        }
        left += pe.len().saturating_sub(me.len());
        if left == 0 || mt.used.iter().all(|&u| u) {
            return mt;
        }
        // Equal by value hash, verified. Each hash keeps its unused mirror elements lowest index
        // last, so taking one is a pop, even when thousands of elements are equal.
        let (pd, md) = (self.p, self.m);
        let mut buckets: FxHashMap<u64, Vec<usize>> = FxHashMap::default();
        for (j, &b) in me.iter().enumerate().rev() {
            if !mt.is_used(j) {
                let h = self.hash_node(md, b);
                buckets.entry(h).or_default().push(j);
            }
        }
        for (i, &a) in pe.iter().enumerate() {
            if mt.is_paired(i) {
                continue;
            }
            if self.over_budget() {
                return self.pair_rest_in_order(mt, exact_only);
            }
            let h = self.hash_node(pd, a);
            let Some(mut list) = buckets.remove(&h) else {
                continue;
            };
            // Verification fails only on a hash collision, so this loop almost never repeats.
            for k in (0..list.len()).rev() {
                let Some(&j) = list.get(k) else { continue };
                let Some(&b) = me.get(j) else { continue };
                if self.count_diff(frame.clone(), PStep::Index(i), a, b, tol, 0) == 0 {
                    list.remove(k);
                    mt.set(i, j, true);
                    break;
                }
            }
            if !list.is_empty() {
                buckets.insert(h, list);
            }
        }
        if exact_only {
            return mt;
        }
        // Closest counterpart, greedily, within the work budget.
        for (i, &a) in pe.iter().enumerate() {
            if mt.is_paired(i) {
                continue;
            }
            if self.over_budget() {
                break;
            }
            let mut best: Option<(usize, usize)> = None;
            for (j, &b) in me.iter().enumerate() {
                if mt.is_used(j) {
                    continue;
                }
                let limit = best.map_or(usize::MAX - 1, |(s, _)| s.saturating_sub(1));
                let s = self.count_diff(frame.clone(), PStep::Index(i), a, b, tol, limit);
                if best.is_none_or(|(bs, _)| s < bs) {
                    best = Some((s, j));
                    if s == 0 {
                        break;
                    }
                }
                if self.work > WORK_BUDGET {
                    break;
                }
            }
            if let Some((s, j)) = best {
                mt.set(i, j, s == 0);
            }
        }
        self.pair_rest_in_order(mt, false)
    }

    /// Has this comparison spent its similarity-search budget? From then on arrays are paired
    /// in order, so the rest of the comparison is linear in the size of the bodies.
    fn over_budget(&mut self) -> bool {
        if self.work > WORK_BUDGET {
            self.outcome.budget_exhausted = true;
            true
        } else {
            false
        }
    }

    /// Pair the elements still unpaired in order (not when only exact matches count).
    fn pair_rest_in_order(&mut self, mut mt: Matching, exact_only: bool) -> Matching {
        if exact_only {
            return mt;
        }
        let free: Vec<usize> = (0..mt.used.len()).filter(|&j| !mt.is_used(j)).collect();
        let mut free = free.into_iter();
        let unpaired: Vec<usize> = (0..mt.pair.len()).filter(|&i| !mt.is_paired(i)).collect();
        for i in unpaired {
            match free.next() {
                Some(j) => mt.set(i, j, false),
                None => break,
            }
        }
        mt
    }

    /// A hash that equal values share, under no rules or under `unordered` ones: member and
    /// element order, number spelling and string escaping do not change it.
    fn hash_node(&mut self, doc: &Doc<'a>, i: usize) -> u64 {
        self.work += 1;
        let mut h = FxHasher::default();
        match doc.get(i) {
            Node::Null => h.write_u8(1),
            Node::Bool(b) => h.write_u8(2 + u8::from(b)),
            Node::Num(raw) => {
                h.write_u8(4);
                match Number::parse(raw) {
                    Some(n) => {
                        n.hash_value(&mut h);
                        if self.strict {
                            h.write_u8(u8::from(n.is_integer_literal()));
                        }
                    }
                    None => h.write(raw.as_bytes()),
                }
            }
            Node::Str { raw, escaped } => {
                h.write_u8(5);
                if escaped {
                    self.sb.clear();
                    decode_into(raw, &mut self.sb);
                    h.write(&self.sb);
                } else {
                    h.write(raw.as_bytes());
                }
            }
            // Containers combine their children's hashes by addition, so order does not count:
            // arrays must hash alike in any order for unordered matching (nested unordered
            // arrays included); for ordered arrays a permutation collides, and the verification
            // every hash match goes through tells them apart.
            Node::Arr { len, .. } => {
                let mut sum = 0u64;
                for c in doc.elements(i) {
                    sum = sum.wrapping_add(mix64(self.hash_node(doc, c)));
                }
                h.write_u8(6);
                h.write_u32(len);
                h.write_u64(sum);
            }
            Node::Obj { len, .. } => {
                let mut sum = 0u64;
                for (k, v) in doc.members(i) {
                    let key = self.hash_node(doc, k);
                    let value = self.hash_node(doc, v);
                    sum = sum.wrapping_add(mix64(key ^ mix64(value)));
                }
                h.write_u8(7);
                h.write_u32(len);
                h.write_u64(sum);
            }
        }
        h.finish()
    }

    fn path_string(&self) -> String {
        let mut s = String::from("$");
        for step in &self.path {
            match *step {
                PStep::Key { raw, escaped } => {
                    let bytes = string_bytes(raw, escaped);
                    push_key(&mut s, &String::from_utf8_lossy(&bytes));
                }
                PStep::Index(i) => {
                    let _ = write!(s, "[{i}]");
                }
            }
        }
        s
    }

    fn emit(&mut self, kind: DiffKind, p: Option<usize>, m: Option<usize>) {
        if self.count.is_some() {
            self.emit_text(kind, None, None);
            return;
        }
        let primary = p.map(|i| render(self.p, i));
        let mirror = m.map(|i| render(self.m, i));
        self.emit_text(kind, primary, mirror);
    }

    fn emit_text(&mut self, kind: DiffKind, primary: Option<String>, mirror: Option<String>) {
        if let Some((n, _)) = &mut self.count {
            *n += 1;
            return;
        }
        if self.out.len() >= self.max_out {
            self.outcome.truncated = true;
            return;
        }
        let path = self.path_string();
        self.out.push(Difference {
            path,
            kind,
            primary,
            mirror,
        });
    }
}

/// Pairing of array elements: `pair[i] = Some((j, equal))`.
struct Matching {
    pair: Vec<Option<(usize, bool)>>,
    used: Vec<bool>,
}

impl Matching {
    fn set(&mut self, i: usize, j: usize, equal: bool) {
        if let Some(s) = self.pair.get_mut(i) {
            *s = Some((j, equal));
        }
        if let Some(u) = self.used.get_mut(j) {
            *u = true;
        }
    }
    fn is_used(&self, j: usize) -> bool {
        self.used.get(j).copied().unwrap_or(true)
    }
    fn is_paired(&self, i: usize) -> bool {
        self.pair.get(i).is_some_and(Option::is_some)
    }
}

/// The splitmix64 finaliser: spreads every input bit over the output before hashes are summed.
fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn same_raw_key(a: Node<'_>, b: Node<'_>) -> bool {
    matches!((a, b), (Node::Str { raw: x, .. }, Node::Str { raw: y, .. }) if x == y)
}

/// Strings under a `numeric` rule that both hold number literals compare as numbers (APIs often
/// send decimals as strings to keep their precision).
fn numeric_strings_within(a: &str, b: &str, tol: Option<Tolerance>) -> bool {
    let Some(t) = tol else { return false };
    match (Number::parse(a), Number::parse(b)) {
        (Some(x), Some(y)) => within_tolerance(&x, &y, t.relative, t.absolute),
        _ => false,
    }
}

/// A compact JSON rendering of the value at `i`, at most [`MAX_VALUE_CHARS`] bytes plus `…`.
pub(crate) fn render(doc: &Doc<'_>, i: usize) -> String {
    let mut s = String::new();
    render_into(doc, i, &mut s);
    if s.len() > MAX_VALUE_CHARS {
        let mut cut = MAX_VALUE_CHARS;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

fn render_into(doc: &Doc<'_>, i: usize, out: &mut String) {
    if out.len() > MAX_VALUE_CHARS {
        return;
    }
    match doc.get(i) {
        Node::Null => out.push_str("null"),
        Node::Bool(b) => out.push_str(if b { "true" } else { "false" }),
        Node::Num(raw) => push_bounded(out, raw),
        Node::Str { raw, .. } => {
            out.push('"');
            push_bounded(out, raw);
            out.push('"');
        }
        Node::Arr { .. } => {
            out.push('[');
            for (n, c) in doc.elements(i).enumerate() {
                if out.len() > MAX_VALUE_CHARS {
                    return;
                }
                if n > 0 {
                    out.push(',');
                }
                render_into(doc, c, out);
            }
            out.push(']');
        }
        Node::Obj { .. } => {
            out.push('{');
            for (n, (k, v)) in doc.members(i).enumerate() {
                if out.len() > MAX_VALUE_CHARS {
                    return;
                }
                if n > 0 {
                    out.push(',');
                }
                render_into(doc, k, out);
                out.push(':');
                render_into(doc, v, out);
            }
            out.push('}');
        }
    }
}

fn push_bounded(out: &mut String, s: &str) {
    let room = (MAX_VALUE_CHARS + 1).saturating_sub(out.len());
    if s.len() <= room {
        out.push_str(s);
    } else {
        let mut cut = room;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        out.push_str(s.get(..cut).unwrap_or_default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_rfc_8259_value_kind() {
        let d =
            parse(br#" {"a": [1, -2.5e+3, true, false, null, "x\"\u00e9\ud83d\ude00"], "b": {}} "#)
                .unwrap();
        assert_eq!(d.len(), 11);
        assert!(matches!(d.get(0), Node::Obj { len: 2, end: 11 }));
        assert!(matches!(d.get(2), Node::Arr { len: 6, end: 9 }));
        assert_eq!(d.get(4), Node::Num("-2.5e+3"));
        for top in ["1", "\"s\"", "null", "[]", "{}", " true "] {
            assert!(parse(top.as_bytes()).is_ok(), "{top}");
        }
    }

    #[test]
    fn refuses_what_rfc_8259_refuses() {
        for bad in [
            "",
            " ",
            "{",
            "[1,]",
            "{\"a\":1,}",
            "{a:1}",
            "[01]",
            "[1.]",
            "[.5]",
            "['a']",
            "\"\\x\"",
            "\"\\u12\"",
            "\"a\nb\"",
            "tru",
            "nul",
            "[1 2]",
            "{\"a\" 1}",
            "1 2",
            "[NaN]",
            "[+1]",
            "\u{feff}{}",
            "\"unterminated",
        ] {
            assert!(
                matches!(parse(bad.as_bytes()), Err(ParseError::Syntax(_))),
                "{bad:?} must be refused"
            );
        }
        assert!(matches!(parse(b"\"\xff\""), Err(ParseError::NotUtf8)));
    }

    #[test]
    fn depth_is_bounded() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(ok.as_bytes()).is_ok());
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(matches!(parse(deep.as_bytes()), Err(ParseError::TooDeep)));
        let very = "[".repeat(1_000_000);
        assert!(matches!(parse(very.as_bytes()), Err(ParseError::TooDeep)));
    }

    #[test]
    fn decoding_resolves_escapes_and_surrogates() {
        let mut v = Vec::new();
        decode_into(r#"a\"\\\/\b\f\n\r\t\u0041\u00e9\ud83d\ude00"#, &mut v);
        assert_eq!(v, "a\"\\/\x08\x0c\n\r\tAé😀".as_bytes());
        let (mut a, mut b) = (Vec::new(), Vec::new());
        decode_into(r"\ud800", &mut a);
        decode_into(r"\ud801", &mut b);
        assert_ne!(a, b, "lone surrogates stay distinct");
        let mut c = Vec::new();
        decode_into(r"\ud800x", &mut c);
        assert_eq!(c.last(), Some(&b'x'));
    }

    #[test]
    fn render_is_compact_and_bounded() {
        let d = parse(br#"{ "a" : [ 1 , "x" ] , "b" : null }"#).unwrap();
        assert_eq!(render(&d, 0), r#"{"a":[1,"x"],"b":null}"#);
        let long = format!("[\"{}\"]", "é".repeat(1000));
        let d = parse(long.as_bytes()).unwrap();
        let r = render(&d, 0);
        assert!(r.len() <= MAX_VALUE_CHARS + '…'.len_utf8());
        assert!(r.ends_with('…'));
    }
}
