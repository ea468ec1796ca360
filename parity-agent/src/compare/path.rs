//! JSON path patterns for tolerance rules: parsing, matching a concrete location, specificity.
//!
//! Syntax: `$` is the root; `.key` a member; `['key with . or spaces']` (or double quotes) a member
//! whose name needs quoting; `[3]` an array index; `[*]` any array element; `.*` any member;
//! `..key` the member `key` at any depth below. This is the subset of JSONPath tolerance rules need,
//! not a query language: there are no filters or slices.
//!
//! Specificity (which rule wins when several match one value), most specific first:
//! 1. more literal steps (`.key`, `[3]`);
//! 2. then fewer recursive descents (`..key`);
//! 3. then fewer wildcards (`[*]`, `.*`);
//! 4. then the rule declared first in the file.

use std::fmt;

/// One step of a concrete location inside a JSON document.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Step {
    /// An object member.
    Key(String),
    /// An array element.
    Index(usize),
}

/// Write a concrete location as a path string: `$.items[2]['a b']`.
pub fn format_location(steps: &[Step]) -> String {
    let mut s = String::from("$");
    for step in steps {
        push_step(&mut s, step);
    }
    s
}

/// Append one step in path syntax to `out`.
pub fn push_step(out: &mut String, step: &Step) {
    match step {
        Step::Key(k) => push_key(out, k),
        Step::Index(i) => {
            out.push('[');
            out.push_str(&i.to_string());
            out.push(']');
        }
    }
}

/// Append a member step: `.key` when the name is a plain identifier, `['…']` otherwise.
pub fn push_key(out: &mut String, k: &str) {
    let plain = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '$' || c == '@');
    if plain {
        out.push('.');
        out.push_str(k);
    } else {
        out.push_str("['");
        for c in k.chars() {
            if c == '\'' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push_str("']");
    }
}

/// One step of a pattern.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Segment {
    /// `.key` or `['key']`.
    Key(String),
    /// `[n]`.
    Index(usize),
    /// `[*]`: any array element.
    AnyIndex,
    /// `.*`: any object member.
    AnyKey,
    /// `..key`: `key` at any depth (zero or more steps, then the member).
    Descend(String),
}

/// A parsed path pattern.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct JsonPath {
    segments: Vec<Segment>,
    text: String,
}

/// A path that could not be parsed, with the byte offset of the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad JSON path {text:?} at byte {offset}: {problem}")]
pub struct PathError {
    /// The path as written.
    pub text: String,
    /// Byte offset of the problem.
    pub offset: usize,
    /// What is wrong and what to write instead.
    pub problem: &'static str,
}

impl JsonPath {
    /// Parse a pattern such as `$.items[*].price` or `$..generated_at`.
    pub fn parse(text: &str) -> Result<JsonPath, PathError> {
        let err = |offset, problem| PathError {
            text: text.to_string(),
            offset,
            problem,
        };
        let b = text.as_bytes();
        if b.first() != Some(&b'$') {
            return Err(err(0, "a path starts with `$` (the document root)"));
        }
        let mut i = 1;
        let mut segments = Vec::new();
        while i < b.len() {
            match b[i] {
                b'.' if b.get(i + 1) == Some(&b'.') => {
                    let (name, next) = ident(b, i + 2);
                    if name.is_empty() {
                        return Err(err(i + 2, "`..` must be followed by a member name"));
                    }
                    segments.push(Segment::Descend(name.to_string()));
                    i = next;
                }
                b'.' => {
                    if b.get(i + 1) == Some(&b'*') {
                        segments.push(Segment::AnyKey);
                        i += 2;
                        continue;
                    }
                    let (name, next) = ident(b, i + 1);
                    if name.is_empty() {
                        return Err(err(
                            i + 1,
                            "`.` must be followed by a member name; quote unusual names as ['name']",
                        ));
                    }
                    segments.push(Segment::Key(name.to_string()));
                    i = next;
                }
                b'[' => {
                    let (seg, next) = bracket(text, i).map_err(|(o, p)| err(o, p))?;
                    segments.push(seg);
                    i = next;
                }
                _ => return Err(err(i, "expected `.`, `..` or `[` here")),
            }
        }
        Ok(JsonPath {
            segments,
            text: text.to_string(),
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The parsed steps.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Does the pattern match the concrete location `steps` exactly (the whole location)?
    pub fn matches(&self, steps: &[Step]) -> bool {
        match_from(&self.segments, steps)
    }

    /// Could the pattern match some location below `steps` (or `steps` itself)? Lets the
    /// comparator skip rule lookups in subtrees no rule can reach.
    pub fn may_match_below(&self, steps: &[Step]) -> bool {
        prefix_match(&self.segments, steps)
    }

    /// A sort key: smaller is more specific. See the module documentation for the order.
    pub fn specificity(&self) -> (std::cmp::Reverse<usize>, usize, usize) {
        let mut literal = 0;
        let mut descend = 0;
        let mut wild = 0;
        for s in &self.segments {
            match s {
                Segment::Key(_) | Segment::Index(_) => literal += 1,
                Segment::Descend(_) => descend += 1,
                Segment::AnyIndex | Segment::AnyKey => wild += 1,
            }
        }
        (std::cmp::Reverse(literal), descend, wild)
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn ident(b: &[u8], start: usize) -> (&str, usize) {
    let mut end = start;
    while end < b.len() && b[end] != b'.' && b[end] != b'[' {
        end += 1;
    }
    // The slice boundaries are at ASCII bytes (or the ends), so this is valid UTF-8.
    (std::str::from_utf8(&b[start..end]).unwrap_or(""), end)
}

fn bracket(text: &str, open: usize) -> Result<(Segment, usize), (usize, &'static str)> {
    let b = text.as_bytes();
    let i = open + 1;
    match b.get(i) {
        Some(b'*') => {
            if b.get(i + 1) == Some(&b']') {
                Ok((Segment::AnyIndex, i + 2))
            } else {
                Err((i + 1, "`[*` must be closed with `]`"))
            }
        }
        Some(&q @ (b'\'' | b'"')) => {
            let mut name = String::new();
            let mut j = i + 1;
            let rest = &text[j..];
            let mut chars = rest.char_indices();
            loop {
                match chars.next() {
                    None => return Err((open, "unterminated quoted member name")),
                    Some((_, '\\')) => match chars.next() {
                        Some((_, c)) => name.push(c),
                        None => return Err((open, "unterminated quoted member name")),
                    },
                    Some((k, c)) if c == q as char => {
                        j += k + 1;
                        break;
                    }
                    Some((_, c)) => name.push(c),
                }
            }
            if b.get(j) != Some(&b']') {
                return Err((j, "a quoted member name must be followed by `]`"));
            }
            Ok((Segment::Key(name), j + 1))
        }
        Some(c) if c.is_ascii_digit() => {
            let mut j = i;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            let n: usize = text[i..j]
                .parse()
                .map_err(|_| (i, "array index too large"))?;
            if b.get(j) != Some(&b']') {
                return Err((j, "an array index must be followed by `]`"));
            }
            Ok((Segment::Index(n), j + 1))
        }
        _ => Err((
            i,
            "inside `[...]` write an index (`[0]`), `[*]`, or a quoted name (`['a b']`)",
        )),
    }
}

fn step_matches(seg: &Segment, step: &Step) -> bool {
    match (seg, step) {
        (Segment::Key(k), Step::Key(s)) => k == s,
        (Segment::Index(n), Step::Index(i)) => n == i,
        (Segment::AnyIndex, Step::Index(_)) => true,
        (Segment::AnyKey, Step::Key(_)) => true,
        _ => false,
    }
}

fn match_from(segs: &[Segment], steps: &[Step]) -> bool {
    match segs.split_first() {
        None => steps.is_empty(),
        Some((Segment::Descend(k), rest)) => (0..steps.len()).any(|skip| {
            matches!(&steps[skip], Step::Key(s) if s == k) && match_from(rest, &steps[skip + 1..])
        }),
        Some((seg, rest)) => match steps.split_first() {
            Some((step, more)) => step_matches(seg, step) && match_from(rest, more),
            None => false,
        },
    }
}

/// True when `steps` can be extended to a location `segs` matches.
fn prefix_match(segs: &[Segment], steps: &[Step]) -> bool {
    match segs.split_first() {
        None => steps.is_empty(),
        Some((Segment::Descend(_), _)) => true,
        Some((seg, rest)) => match steps.split_first() {
            None => true,
            Some((step, more)) => step_matches(seg, step) && prefix_match(rest, more),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> Step {
        Step::Key(s.to_string())
    }

    #[test]
    fn parses_every_step_kind() {
        let p = JsonPath::parse("$.a['b c'][3][*].*..d").unwrap();
        assert_eq!(
            p.segments(),
            &[
                Segment::Key("a".into()),
                Segment::Key("b c".into()),
                Segment::Index(3),
                Segment::AnyIndex,
                Segment::AnyKey,
                Segment::Descend("d".into()),
            ]
        );
        assert_eq!(JsonPath::parse("$").unwrap().segments(), &[]);
        assert_eq!(
            JsonPath::parse(r#"$["x.y"]['it\'s']"#).unwrap().segments(),
            &[Segment::Key("x.y".into()), Segment::Key("it's".into())]
        );
    }

    #[test]
    fn rejects_bad_syntax_with_an_offset() {
        for (bad, offset) in [
            ("a.b", 0),
            ("$.", 2),
            ("$..", 3),
            ("$[x]", 2),
            ("$['a'", 5),
            ("$['a", 1),
            ("$[1", 3),
            ("$[*", 3),
            ("$x", 1),
        ] {
            let e = JsonPath::parse(bad).unwrap_err();
            assert_eq!(e.offset, offset, "{bad}: {e}");
        }
    }

    #[test]
    fn matching_follows_each_segment_kind() {
        let loc = [k("items"), Step::Index(2), k("price")];
        assert!(JsonPath::parse("$.items[*].price").unwrap().matches(&loc));
        assert!(JsonPath::parse("$.items[2].price").unwrap().matches(&loc));
        assert!(!JsonPath::parse("$.items[1].price").unwrap().matches(&loc));
        assert!(JsonPath::parse("$..price").unwrap().matches(&loc));
        assert!(JsonPath::parse("$.items..price").unwrap().matches(&loc));
        assert!(!JsonPath::parse("$.items").unwrap().matches(&loc));
        assert!(JsonPath::parse("$.*[*].*").unwrap().matches(&loc));
        assert!(!JsonPath::parse("$.*.price").unwrap().matches(&loc));
        assert!(JsonPath::parse("$").unwrap().matches(&[]));
        assert!(JsonPath::parse("$..a").unwrap().matches(&[k("a")]));
    }

    #[test]
    fn prefix_matching_allows_skipping_unreachable_subtrees() {
        let p = JsonPath::parse("$.meta.generated_at").unwrap();
        assert!(p.may_match_below(&[]));
        assert!(p.may_match_below(&[k("meta")]));
        assert!(!p.may_match_below(&[k("items")]));
        assert!(JsonPath::parse("$..x")
            .unwrap()
            .may_match_below(&[k("anything")]));
    }

    #[test]
    fn specificity_orders_literal_before_descend_before_wildcard() {
        let mut v = [
            JsonPath::parse("$..price").unwrap(),
            JsonPath::parse("$.items[*].price").unwrap(),
            JsonPath::parse("$.items[2].price").unwrap(),
        ];
        v.sort_by_key(|p| p.specificity());
        let order: Vec<_> = v.iter().map(|p| p.as_str()).collect();
        assert_eq!(order, ["$.items[2].price", "$.items[*].price", "$..price"]);
    }

    #[test]
    fn locations_format_back_to_parseable_paths() {
        let loc = [k("a b"), Step::Index(0), k("c"), k("it's")];
        let s = format_location(&loc);
        assert_eq!(s, r"$['a b'][0].c['it\'s']");
        assert!(JsonPath::parse(&s).unwrap().matches(&loc));
    }
}
