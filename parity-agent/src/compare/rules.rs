//! Tolerance rules compiled for the structural diff: which rule governs a JSON location.
//!
//! A rule's path pattern ([`JsonPath`]) is run as a tiny automaton over the steps from the root:
//! its state is the set of pattern positions still alive, kept as a bit mask, so walking one step
//! costs a few bit operations per live rule and needs no allocation. The diff keeps, for each
//! node, the list of rules whose automaton is still alive; when the list is empty the whole
//! subtree is compared without looking at rules at all.
//!
//! Semantics (what the README documents):
//! - among the rules matching a location, the first in the pair's list wins; `config` sorts that
//!   list most specific first (see [`crate::compare::path`]);
//! - `ignore` and `present` govern the whole subtree below their location: nothing below is
//!   compared (so `ignore` on `$.meta` ignores everything in `meta`);
//! - `numeric` governs every number at or below its location, unless a rule matching a lower
//!   location says otherwise;
//! - `unordered` applies to the array at its location only (write `$.a[*].b` or `$..b` for
//!   nested arrays);
//! - a rule with an `endpoint` only applies to exchanges named that endpoint; the endpoint is
//!   matched as a template, `{x}` matching any one segment (including an `{id}` the namer put
//!   there).
//!
//! Patterns longer than 63 steps cannot be tracked in the mask; they never match and are
//! reported once when the comparator is built.

use crate::compare::path::Segment;
use crate::config::{Action, Rule};

/// One step from a node to its child, as the rule automata see it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum StepRef<'k> {
    /// An object member with this (decoded) name.
    Key(&'k [u8]),
    /// An array element.
    Index(usize),
}

/// Numeric tolerance in force at a location.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Tolerance {
    pub relative: f64,
    pub absolute: f64,
}

/// A rule ready for matching.
#[derive(Clone, Debug)]
pub(crate) struct CompiledRule {
    segs: Vec<Segment>,
    pub action: Action,
    pub tolerance: Tolerance,
    endpoint: Option<EndpointPattern>,
    /// The pattern is short enough for the mask.
    pub usable: bool,
    /// The pattern as written, for messages.
    pub text: String,
}

/// Longest pattern the 64-bit state mask can track (positions 0..=63).
pub(crate) const MAX_PATTERN_STEPS: usize = 63;

impl CompiledRule {
    pub fn new(rule: &Rule) -> CompiledRule {
        let segs = rule.path.segments().to_vec();
        CompiledRule {
            usable: segs.len() <= MAX_PATTERN_STEPS,
            segs,
            action: rule.action,
            tolerance: Tolerance {
                relative: rule.relative,
                absolute: rule.absolute,
            },
            endpoint: rule.endpoint.as_deref().map(EndpointPattern::parse),
            text: rule.path.as_str().to_string(),
        }
    }

    /// The automaton's state at the root.
    pub fn start(&self) -> u64 {
        if self.usable {
            1
        } else {
            0
        }
    }

    /// Does the state accept (the pattern matches the location reached)?
    pub fn accepts(&self, mask: u64) -> bool {
        self.usable && (mask >> self.segs.len()) & 1 == 1
    }

    /// The state after one more step.
    pub fn advance(&self, mask: u64, step: StepRef<'_>) -> u64 {
        let mut next = 0u64;
        let mut live = mask;
        while live != 0 {
            let pos = live.trailing_zeros() as usize;
            live &= live - 1;
            let Some(seg) = self.segs.get(pos) else {
                continue;
            };
            match (seg, step) {
                (Segment::Descend(k), StepRef::Key(name)) => {
                    next |= 1 << pos;
                    if k.as_bytes() == name {
                        next |= 1 << (pos + 1);
                    }
                }
                (Segment::Descend(_), StepRef::Index(_)) => next |= 1 << pos,
                (Segment::Key(k), StepRef::Key(name)) if k.as_bytes() == name => {
                    next |= 1 << (pos + 1)
                }
                (Segment::AnyKey, StepRef::Key(_)) | (Segment::AnyIndex, StepRef::Index(_)) => {
                    next |= 1 << (pos + 1)
                }
                (Segment::Index(n), StepRef::Index(i)) if *n == i => next |= 1 << (pos + 1),
                _ => {}
            }
        }
        next
    }

    /// Does a step with this name matter to the automaton (so an escaped member name must be
    /// decoded before [`CompiledRule::advance`])?
    pub fn reads_keys(&self, mask: u64) -> bool {
        let mut live = mask;
        while live != 0 {
            let pos = live.trailing_zeros() as usize;
            live &= live - 1;
            if matches!(
                self.segs.get(pos),
                Some(Segment::Key(_) | Segment::Descend(_))
            ) {
                return true;
            }
        }
        false
    }

    /// Does the rule apply to exchanges named `endpoint`?
    pub fn applies_to(&self, endpoint: &str) -> bool {
        match &self.endpoint {
            None => true,
            Some(p) => p.matches(endpoint),
        }
    }
}

/// `METHOD /a/{x}/c` as written in a rule, matched against an endpoint label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EndpointPattern {
    method: String,
    segments: Vec<Option<String>>,
}

impl EndpointPattern {
    pub fn parse(text: &str) -> EndpointPattern {
        let t = text.trim();
        let (method, path) = t.split_once(' ').unwrap_or((t, ""));
        let path = path.trim();
        let path = path.split(['?', '#']).next().unwrap_or("");
        EndpointPattern {
            method: method.to_string(),
            segments: path_segments(path)
                .map(|s| {
                    if is_variable(s) {
                        None
                    } else {
                        Some(s.to_string())
                    }
                })
                .collect(),
        }
    }

    pub fn matches(&self, label: &str) -> bool {
        let Some((method, path)) = label.split_once(' ') else {
            return false;
        };
        if method != self.method {
            return false;
        }
        let mut want = self.segments.iter();
        for seg in path_segments(path) {
            match want.next() {
                Some(None) => {}
                Some(Some(lit)) if lit == seg => {}
                _ => return false,
            }
        }
        want.next().is_none()
    }
}

/// The segments of an absolute path (`/a/b` → `a`, `b`; `/` → one empty segment).
pub(crate) fn path_segments(path: &str) -> impl Iterator<Item = &str> {
    path.strip_prefix('/').unwrap_or(path).split('/')
}

/// `{name}`: a template variable.
pub(crate) fn is_variable(seg: &str) -> bool {
    seg.len() >= 2 && seg.starts_with('{') && seg.ends_with('}')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::path::JsonPath;

    fn rule(path: &str) -> CompiledRule {
        CompiledRule::new(&Rule {
            path: JsonPath::parse(path).unwrap(),
            action: Action::Ignore,
            relative: 0.0,
            absolute: 0.0,
            endpoint: None,
            order: 0,
        })
    }

    fn run(r: &CompiledRule, steps: &[StepRef<'_>]) -> bool {
        let mut m = r.start();
        for s in steps {
            m = r.advance(m, *s);
        }
        r.accepts(m)
    }

    #[test]
    fn automaton_agrees_with_the_reference_matcher() {
        use crate::compare::path::Step;
        let locs: Vec<Vec<Step>> = vec![
            vec![],
            vec![Step::Key("a".into())],
            vec![Step::Key("a".into()), Step::Index(2), Step::Key("b".into())],
            vec![
                Step::Key("x".into()),
                Step::Key("a".into()),
                Step::Key("a".into()),
            ],
            vec![Step::Index(0), Step::Key("b".into())],
        ];
        for pat in [
            "$", "$.a", "$..a", "$..b", "$.a[*].b", "$.a[2].b", "$.*", "$[*].b", "$..a.a",
            "$.x..a", "$.*..b", "$[0]",
        ] {
            let p = JsonPath::parse(pat).unwrap();
            let r = rule(pat);
            for loc in &locs {
                let owned: Vec<StepRef<'_>> = loc
                    .iter()
                    .map(|s| match s {
                        Step::Key(k) => StepRef::Key(k.as_bytes()),
                        Step::Index(i) => StepRef::Index(*i),
                    })
                    .collect();
                assert_eq!(run(&r, &owned), p.matches(loc), "{pat} at {loc:?}");
            }
        }
    }

    #[test]
    fn too_long_patterns_never_match() {
        let long = format!("${}", ".a".repeat(64));
        let r = rule(&long);
        assert!(!r.usable);
        let steps = vec![StepRef::Key(b"a"); 64];
        assert!(!run(&r, &steps));
    }

    #[test]
    fn endpoint_patterns_match_labels_by_segment() {
        let p = EndpointPattern::parse("GET /api/v1/users/{name}/cart");
        assert!(p.matches("GET /api/v1/users/{name}/cart"));
        assert!(p.matches("GET /api/v1/users/{id}/cart"));
        assert!(p.matches("GET /api/v1/users/bob/cart"));
        assert!(!p.matches("POST /api/v1/users/bob/cart"));
        assert!(!p.matches("GET /api/v1/users/bob"));
        assert!(!p.matches("GET /api/v1/users/bob/cart/x"));
        assert!(!p.matches("other"));
        let exact = EndpointPattern::parse("GET /api/orders");
        assert!(exact.matches("GET /api/orders"));
        assert!(!exact.matches("GET /api/orders/{id}"));
    }
}
