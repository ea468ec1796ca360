//! Comparison of a primary and a mirror exchange under the pair's tolerance rules.
//!
//! A [`Comparator`] is built once per pair and compares the final responses of a matched pair of
//! exchanges: the status code (path `status`), the response headers ([`headers`]), and the
//! bodies after content decoding, chosen by content type:
//! - identical bytes (equal length and SHA-256) are equal, whatever the type;
//! - if either body is capped (`Body.capped`: only its first `max_body_bytes` were kept), or the
//!   two sides' media types differ (`application/json` against `text/html`; parameters such as
//!   `charset` do not count here, though the header itself is still compared), the bodies are
//!   compared by SHA-256: path `body`, kind `hash`, values the hex digests;
//! - JSON (`application/json`, `*/*+json`, any media type whose subtype mentions `json`, or a
//!   body without `Content-Type` that starts like JSON and parses) is diffed structurally
//!   (module `json`) under the pair's rules, differences at paths such as `$.items[2].price`; a body
//!   that claims JSON but does not parse falls back to the line comparison, and one nested
//!   deeper than [`JSON_MAX_DEPTH`] to the hash comparison (both counted in [`CompareStats`]);
//! - other text (`text/*`, XML, JavaScript, forms, YAML, or an untyped body that is UTF-8 without
//!   NUL bytes) is compared line by line (module `text`): path `body`, kind `text`, values excerpts
//!   of the first differing lines;
//! - anything else by SHA-256.
//!
//! Tolerance rules (`[[pair.rule]]`, JSON bodies only): the most specific rule matching a
//! location governs it (order in [`path`]); `ignore` and `present` govern their whole subtree
//! (an `ignore` on `$.meta` ignores everything in `meta`); `numeric` governs every number at or
//! below its location unless a rule on a lower location says otherwise, and also numbers written
//! as strings (`"12.50"`); `unordered` applies to the array at its location only. Inside an
//! unordered array, differences of a matched element are reported at the primary's index and
//! `extra` elements at the mirror's. A rule with an `endpoint` applies only to exchanges whose
//! label (from [`EndpointNamer`]) matches it segment by segment, `{x}` matching any segment; an
//! exchange labelled `other` (past the label cap) gets only the unrestricted rules, so list the
//! endpoints a rule names in the pair's `endpoints`, which always keep their label.
//!
//! A rule `ignore` on `$` skips the body whatever its type. A side without a final response is
//! reported once at path `response` (`missing` on the mirror, `extra` when only the mirror has
//! one); the caller decides whether incomplete exchanges are compared at all. Latency and the
//! requests are not compared here.
//!
//! Differences are listed in a stable order (status, headers by name, body in document order)
//! and capped at [`MAX_DIFFERENCES`] per verdict ([`Verdict::truncated`] says when more exist).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::config::{Action, PairConfig};
use crate::exchange::{Body, Exchange};

pub mod endpoint;
pub mod headers;
mod json;
pub mod number;
pub mod path;
mod rules;
mod text;

pub use endpoint::EndpointNamer;
pub use json::MAX_DEPTH as JSON_MAX_DEPTH;

use rules::CompiledRule;

/// Most differences listed in one verdict; the comparison stops collecting beyond it.
pub const MAX_DIFFERENCES: usize = 1000;

/// What kind of difference was found. The names are a contract (records, metrics, UI).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum DiffKind {
    /// Same type, different value (also a status code or a header value).
    Value,
    /// Different JSON types (or integer against non-integer with `strict_number_types`).
    Type,
    /// Present on the primary only.
    Missing,
    /// Present on the mirror only.
    Extra,
    /// Arrays of different lengths (element differences of the common prefix follow).
    Length,
    /// The same array elements in a different order.
    Order,
    /// Textual bodies differ (values: excerpts of the first differing lines).
    Text,
    /// Bodies compared by SHA-256 differ (values: hex digests).
    Hash,
}

impl DiffKind {
    /// Every kind, in documentation order.
    pub const ALL: [DiffKind; 8] = [
        DiffKind::Value,
        DiffKind::Type,
        DiffKind::Missing,
        DiffKind::Extra,
        DiffKind::Length,
        DiffKind::Order,
        DiffKind::Text,
        DiffKind::Hash,
    ];

    /// The name used in records, metrics and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            DiffKind::Value => "value",
            DiffKind::Type => "type",
            DiffKind::Missing => "missing",
            DiffKind::Extra => "extra",
            DiffKind::Length => "length",
            DiffKind::Order => "order",
            DiffKind::Text => "text",
            DiffKind::Hash => "hash",
        }
    }
}

/// One difference between the primary's and the mirror's response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// Where: `status`, `header:<lower-case name>`, `body`, `response`, or a JSON location such
    /// as `$.items[2].price` (written by [`path::format_location`]'s rules).
    pub path: String,
    /// What kind of difference.
    pub kind: DiffKind,
    /// The primary's value, shortened (`None` when absent on the primary).
    pub primary: Option<String>,
    /// The mirror's value, shortened (`None` when absent on the mirror).
    pub mirror: Option<String>,
}

/// Why bodies were compared by hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HashReason {
    /// A side kept only part of its body.
    Capped,
    /// The sides' media types differ.
    ContentTypeMismatch,
    /// JSON nested deeper than [`JSON_MAX_DEPTH`].
    DepthLimit,
    /// Neither JSON nor text.
    Binary,
}

/// How the bodies were compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case", tag = "mode", content = "reason")]
pub enum BodyComparison {
    /// Not compared: a side has no final response.
    NoResponse,
    /// Not compared: a rule ignores `$`.
    Ignored,
    /// Identical bytes (length and SHA-256).
    Identical,
    /// Structural JSON diff.
    Json,
    /// Line comparison.
    Text,
    /// SHA-256 comparison, and why.
    Hash(HashReason),
}

/// The result of comparing one pair of exchanges.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Every difference found (at most [`MAX_DIFFERENCES`]).
    pub differences: Vec<Difference>,
    /// More differences existed than were listed.
    pub truncated: bool,
    /// How the bodies were compared.
    pub body: BodyComparison,
}

impl Verdict {
    /// The responses are not equivalent.
    pub fn diverged(&self) -> bool {
        !self.differences.is_empty()
    }
}

/// Counters of one comparator, by outcome and fallback reason.
#[derive(Debug, Default)]
pub struct CompareStats {
    compared: AtomicU64,
    diverged: AtomicU64,
    body_identical: AtomicU64,
    body_json: AtomicU64,
    body_text: AtomicU64,
    hash_capped: AtomicU64,
    hash_content_type: AtomicU64,
    hash_depth: AtomicU64,
    hash_binary: AtomicU64,
    json_invalid: AtomicU64,
    truncated: AtomicU64,
    unordered_budget: AtomicU64,
}

/// A snapshot of [`CompareStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CompareCounts {
    /// Pairs compared.
    pub compared: u64,
    /// Pairs with at least one difference.
    pub diverged: u64,
    /// Bodies byte-identical (no parsing needed).
    pub body_identical: u64,
    /// Bodies diffed as JSON.
    pub body_json: u64,
    /// Bodies compared line by line.
    pub body_text: u64,
    /// Bodies compared by hash because one was capped.
    pub hash_capped: u64,
    /// Bodies compared by hash because the media types differ.
    pub hash_content_type: u64,
    /// Bodies compared by hash because the JSON was nested too deeply.
    pub hash_depth: u64,
    /// Bodies compared by hash because they are neither JSON nor text.
    pub hash_binary: u64,
    /// Bodies typed as JSON that did not parse (compared as text or by hash instead).
    pub json_invalid: u64,
    /// Verdicts with more than [`MAX_DIFFERENCES`] differences.
    pub truncated: u64,
    /// Comparisons that spent their similarity-search budget (matching elements of unordered
    /// arrays, detecting reordered arrays) and compared the rest of their arrays in order.
    pub unordered_budget: u64,
}

impl CompareStats {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// The current counts.
    pub fn snapshot(&self) -> CompareCounts {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CompareCounts {
            compared: g(&self.compared),
            diverged: g(&self.diverged),
            body_identical: g(&self.body_identical),
            body_json: g(&self.body_json),
            body_text: g(&self.body_text),
            hash_capped: g(&self.hash_capped),
            hash_content_type: g(&self.hash_content_type),
            hash_depth: g(&self.hash_depth),
            hash_binary: g(&self.hash_binary),
            json_invalid: g(&self.json_invalid),
            truncated: g(&self.truncated),
            unordered_budget: g(&self.unordered_budget),
        }
    }
}

/// The comparison of one pair, compiled from its configuration. Shareable between threads.
#[derive(Debug)]
pub struct Comparator {
    headers: headers::HeaderRules,
    rules: Vec<CompiledRule>,
    strict: bool,
    stats: CompareStats,
}

/// How a body is read, from its media type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyKind {
    Json,
    Text,
    Binary,
    /// No `Content-Type`: sniffed.
    Untyped,
}

impl Comparator {
    /// Compile the pair's header rules and tolerance rules.
    pub fn new(pair: &PairConfig) -> Comparator {
        let rules: Vec<CompiledRule> = pair.rules.iter().map(CompiledRule::new).collect();
        for r in rules.iter().filter(|r| !r.usable) {
            tracing::warn!(
                pair = %pair.name,
                path = %r.text,
                "rule path has more than {} steps and never matches; shorten it with `..` or wildcards",
                rules::MAX_PATTERN_STEPS
            );
        }
        Comparator {
            headers: headers::HeaderRules::new(
                &pair.ignore_headers,
                pair.compare_representation_headers,
            ),
            rules,
            strict: pair.strict_number_types,
            stats: CompareStats::default(),
        }
    }

    /// Counters since the comparator was built.
    pub fn stats(&self) -> CompareCounts {
        self.stats.snapshot()
    }

    /// Compare the final responses of `primary` and `mirror`, exchanges named `endpoint` (the
    /// label [`EndpointNamer`] gave them, which selects endpoint-restricted rules).
    pub fn compare(&self, endpoint: &str, primary: &Exchange, mirror: &Exchange) -> Verdict {
        let mut v = Verdict {
            differences: Vec::new(),
            truncated: false,
            body: BodyComparison::NoResponse,
        };
        CompareStats::bump(&self.stats.compared);
        match (&primary.response, &mirror.response) {
            (None, None) => {}
            (Some(p), None) => v.differences.push(Difference {
                path: "response".into(),
                kind: DiffKind::Missing,
                primary: Some(p.status.to_string()),
                mirror: None,
            }),
            (None, Some(m)) => v.differences.push(Difference {
                path: "response".into(),
                kind: DiffKind::Extra,
                primary: None,
                mirror: Some(m.status.to_string()),
            }),
            (Some(p), Some(m)) => {
                if p.status != m.status {
                    v.differences.push(Difference {
                        path: "status".into(),
                        kind: DiffKind::Value,
                        primary: Some(p.status.to_string()),
                        mirror: Some(m.status.to_string()),
                    });
                }
                self.headers
                    .diff(&p.headers, &m.headers, &mut v.differences);
                let pct = headers::content_type(&p.headers);
                let mct = headers::content_type(&m.headers);
                self.bodies(endpoint, (&p.body, pct), (&m.body, mct), &mut v);
            }
        }
        if v.truncated {
            CompareStats::bump(&self.stats.truncated);
        }
        if v.diverged() {
            CompareStats::bump(&self.stats.diverged);
        }
        v
    }

    /// Indices of the rules that apply to `endpoint`, most specific first.
    fn applicable(&self, endpoint: &str) -> Vec<u32> {
        (0..self.rules.len() as u32)
            .filter(|&i| {
                self.rules
                    .get(i as usize)
                    .is_some_and(|r| r.applies_to(endpoint))
            })
            .collect()
    }

    fn bodies(
        &self,
        endpoint: &str,
        (pb, pct): (&Body, Option<&[u8]>),
        (mb, mct): (&Body, Option<&[u8]>),
        v: &mut Verdict,
    ) {
        let applicable = self.applicable(endpoint);
        let root_ignored = applicable
            .iter()
            .filter_map(|&i| self.rules.get(i as usize))
            .find(|r| r.accepts(r.start()))
            .is_some_and(|r| r.action == Action::Ignore);
        let stats = &self.stats;
        if root_ignored {
            v.body = BodyComparison::Ignored;
            return;
        }
        if pb.len == mb.len && pb.sha256 == mb.sha256 {
            CompareStats::bump(&stats.body_identical);
            v.body = BodyComparison::Identical;
            return;
        }
        if pb.capped || mb.capped {
            CompareStats::bump(&stats.hash_capped);
            return self.by_hash(HashReason::Capped, pb, mb, v);
        }
        let (pe, me) = (pct.map(essence), mct.map(essence));
        if pe != me {
            CompareStats::bump(&stats.hash_content_type);
            return self.by_hash(HashReason::ContentTypeMismatch, pb, mb, v);
        }
        let kind = pe.as_deref().map_or(BodyKind::Untyped, kind_of);
        let (pk, mk) = (&pb.kept[..], &mb.kept[..]);
        let try_json = match kind {
            BodyKind::Json => true,
            BodyKind::Untyped => looks_like_json(pk) && looks_like_json(mk),
            _ => false,
        };
        if try_json {
            match (json::parse(pk), json::parse(mk)) {
                (Ok(p), Ok(m)) => {
                    CompareStats::bump(&stats.body_json);
                    v.body = BodyComparison::Json;
                    let room = MAX_DIFFERENCES.saturating_sub(v.differences.len());
                    let outcome = json::diff_documents(
                        &p,
                        &m,
                        &self.rules,
                        &applicable,
                        self.strict,
                        room,
                        &mut v.differences,
                    );
                    v.truncated |= outcome.truncated;
                    if outcome.budget_exhausted {
                        CompareStats::bump(&stats.unordered_budget);
                    }
                    return;
                }
                (Err(json::ParseError::TooDeep), _) | (_, Err(json::ParseError::TooDeep)) => {
                    CompareStats::bump(&stats.hash_depth);
                    return self.by_hash(HashReason::DepthLimit, pb, mb, v);
                }
                _ => {
                    if kind == BodyKind::Json {
                        CompareStats::bump(&stats.json_invalid);
                    }
                }
            }
        }
        let textual = match kind {
            BodyKind::Json | BodyKind::Text => true,
            BodyKind::Untyped => is_plain_text(pk) && is_plain_text(mk),
            BodyKind::Binary => false,
        };
        if !textual {
            CompareStats::bump(&stats.hash_binary);
            return self.by_hash(HashReason::Binary, pb, mb, v);
        }
        CompareStats::bump(&stats.body_text);
        v.body = BodyComparison::Text;
        if let Some((p, m)) = text::diff_lines(pk, mk) {
            push_capped(
                v,
                Difference {
                    path: "body".into(),
                    kind: DiffKind::Text,
                    primary: Some(p),
                    mirror: Some(m),
                },
            );
        }
    }

    fn by_hash(&self, reason: HashReason, pb: &Body, mb: &Body, v: &mut Verdict) {
        v.body = BodyComparison::Hash(reason);
        if pb.len != mb.len || pb.sha256 != mb.sha256 {
            push_capped(
                v,
                Difference {
                    path: "body".into(),
                    kind: DiffKind::Hash,
                    primary: Some(hex(&pb.sha256)),
                    mirror: Some(hex(&mb.sha256)),
                },
            );
        }
    }
}

fn push_capped(v: &mut Verdict, d: Difference) {
    if v.differences.len() < MAX_DIFFERENCES {
        v.differences.push(d);
    } else {
        v.truncated = true;
    }
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// The media type without parameters, lower-case and trimmed: `application/json`.
fn essence(ct: &[u8]) -> String {
    let end = ct.iter().position(|&c| c == b';').unwrap_or(ct.len());
    String::from_utf8_lossy(ct.get(..end).unwrap_or_default())
        .trim()
        .to_ascii_lowercase()
}

fn kind_of(essence: &str) -> BodyKind {
    let (top, sub) = essence.split_once('/').unwrap_or((essence, ""));
    if sub.contains("json") {
        return BodyKind::Json;
    }
    let textual_sub = sub == "xml"
        || sub.ends_with("+xml")
        || sub == "javascript"
        || sub == "x-javascript"
        || sub == "ecmascript"
        || sub == "x-www-form-urlencoded"
        || sub == "yaml"
        || sub == "x-yaml"
        || sub.ends_with("+yaml")
        || sub == "csv"
        || sub == "graphql";
    if top == "text" || textual_sub {
        BodyKind::Text
    } else {
        BodyKind::Binary
    }
}

/// First non-whitespace byte opens an object or an array.
fn looks_like_json(b: &[u8]) -> bool {
    matches!(
        b.iter().find(|c| !c.is_ascii_whitespace()),
        Some(b'{' | b'[')
    )
}

/// UTF-8 without NUL bytes (an untyped body that a human could read).
fn is_plain_text(b: &[u8]) -> bool {
    !b.contains(&0) && std::str::from_utf8(b).is_ok()
}

#[cfg(test)]
mod tests;
