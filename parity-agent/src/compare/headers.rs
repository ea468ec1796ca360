//! Response headers: normalised, then compared name by name.
//!
//! Names are compared case-insensitively and in any order; the values of a repeated header are
//! compared as their ordered list (and a list equal to the other side's comma-joined value, such
//! as `Vary: a` + `Vary: b` against `Vary: a, b`, is equal, except for `Set-Cookie`, which cannot
//! be joined). Values are compared byte for byte after trimming surrounding whitespace.
//!
//! Not compared, besides the pair's `ignore_headers`:
//! - [`DEFAULT_IGNORED_HEADERS`]: headers whose value is a clock reading or a measured duration,
//!   so they differ between any two responses, even two from the same server a moment apart.
//!   Reporting them would mark every pair as diverged and bury real differences. They are few on
//!   purpose: headers that merely *often* differ (`Server`, `Expires`, `ETag`, `Set-Cookie`)
//!   can carry real regressions, so they are compared unless the pair ignores them.
//! - hop-by-hop headers ([`HOP_BY_HOP_HEADERS`] and any header a `Connection` header names) and
//!   representation headers ([`REPRESENTATION_HEADERS`]): they describe the connection and the
//!   encoding on the wire, while bodies are compared after decoding; a pair with
//!   `compare_representation_headers = true` compares them all.
//!
//! Request headers are never compared (the mirror's request is a copy with a rewritten `Host`).

use std::cmp::Ordering;

use super::{DiffKind, Difference};
use crate::exchange::Headers;

/// Headers ignored on every pair: their values are timestamps or durations.
pub const DEFAULT_IGNORED_HEADERS: &[&str] = &[
    "date",
    "age",
    "server-timing",
    "x-envoy-upstream-service-time",
    "x-response-time",
    "x-runtime",
];

/// Hop-by-hop headers (RFC 9110 §7.6.1, plus the common non-standard ones).
pub const HOP_BY_HOP_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Headers describing the body's encoding on the wire rather than its content.
pub const REPRESENTATION_HEADERS: &[&str] =
    &["content-length", "transfer-encoding", "content-encoding"];

/// Which headers a pair compares.
#[derive(Clone, Debug)]
pub(crate) struct HeaderRules {
    /// Lower-case names never compared.
    excluded: Vec<String>,
    /// Names listed in `Connection` are hop-by-hop too.
    exclude_connection_listed: bool,
}

impl HeaderRules {
    pub fn new(ignore: &[String], compare_representation: bool) -> HeaderRules {
        let mut excluded: Vec<String> = DEFAULT_IGNORED_HEADERS
            .iter()
            .map(|s| s.to_string())
            .collect();
        excluded.extend(ignore.iter().map(|h| h.trim().to_ascii_lowercase()));
        if !compare_representation {
            excluded.extend(HOP_BY_HOP_HEADERS.iter().map(|s| s.to_string()));
            excluded.extend(REPRESENTATION_HEADERS.iter().map(|s| s.to_string()));
        }
        excluded.sort();
        excluded.dedup();
        HeaderRules {
            excluded,
            exclude_connection_listed: !compare_representation,
        }
    }

    /// Is `name` compared (before looking at `Connection`)?
    pub fn compares(&self, name: &[u8]) -> bool {
        !self
            .excluded
            .iter()
            .any(|e| e.as_bytes().eq_ignore_ascii_case(name))
    }

    /// Append the differences between the two header blocks to `out`.
    pub fn diff(&self, p: &Headers, m: &Headers, out: &mut Vec<Difference>) {
        let mut listed: Vec<&[u8]> = Vec::new();
        if self.exclude_connection_listed {
            for h in [p, m] {
                for v in h.get_all("connection") {
                    listed.extend(v.split(|&c| c == b',').map(trim).filter(|t| !t.is_empty()));
                }
            }
        }
        let keep = |name: &[u8]| {
            self.compares(name) && !listed.iter().any(|l| l.eq_ignore_ascii_case(name))
        };
        let mut a: Vec<Field<'_>> = p
            .iter()
            .filter(|(n, _)| keep(n))
            .map(|(n, v)| (n, trim(v)))
            .collect();
        let mut b: Vec<Field<'_>> = m
            .iter()
            .filter(|(n, _)| keep(n))
            .map(|(n, v)| (n, trim(v)))
            .collect();
        // Stable: the values of a repeated header keep their wire order.
        a.sort_by(|x, y| cmp_ci(x.0, y.0));
        b.sort_by(|x, y| cmp_ci(x.0, y.0));
        let (mut i, mut j) = (0, 0);
        loop {
            let order = match (a.get(i), b.get(j)) {
                (None, None) => break,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(x), Some(y)) => cmp_ci(x.0, y.0),
            };
            match order {
                Ordering::Less => {
                    let (g, next) = group(&a, i);
                    i = next;
                    out.push(difference(g, DiffKind::Missing, true, false));
                }
                Ordering::Greater => {
                    let (g, next) = group(&b, j);
                    j = next;
                    out.push(difference(g, DiffKind::Extra, false, true));
                }
                Ordering::Equal => {
                    let (ga, ni) = group(&a, i);
                    let (gb, nj) = group(&b, j);
                    i = ni;
                    j = nj;
                    let same = ga.len() == gb.len() && ga.iter().zip(gb).all(|(x, y)| x.1 == y.1);
                    if !same && !joined_equal(ga, gb) {
                        out.push(difference_of(ga, gb));
                    }
                }
            }
        }
    }
}

/// The first value of `Content-Type`, if any.
pub(crate) fn content_type(h: &Headers) -> Option<&[u8]> {
    h.get("content-type")
}

type Field<'h> = (&'h [u8], &'h [u8]);

/// The run of fields with the name of `v[from]` (`v` is sorted by name), and where it ends.
fn group<'v, 'h>(v: &'v [Field<'h>], from: usize) -> (&'v [Field<'h>], usize) {
    let Some(&(name, _)) = v.get(from) else {
        return (&[], from + 1);
    };
    let len = v
        .get(from..)
        .unwrap_or_default()
        .iter()
        .take_while(|(n, _)| n.eq_ignore_ascii_case(name))
        .count();
    (
        v.get(from..from + len).unwrap_or_default(),
        from + len.max(1),
    )
}

/// The values joined with `, ` are equal (never for `Set-Cookie`, which cannot be joined).
fn joined_equal(a: &[Field<'_>], b: &[Field<'_>]) -> bool {
    let name = a.first().map_or(&[][..], |f| f.0);
    if name.eq_ignore_ascii_case(b"set-cookie") {
        return false;
    }
    fn joined<'x>(g: &'x [Field<'_>]) -> impl Iterator<Item = u8> + 'x {
        g.iter().enumerate().flat_map(|(k, (_, v))| {
            let sep: &[u8] = if k == 0 { b"" } else { b", " };
            sep.iter().chain(v.iter()).copied()
        })
    }
    joined(a).eq(joined(b))
}

fn show(g: &[Field<'_>]) -> String {
    let parts: Vec<String> = g
        .iter()
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .collect();
    parts.join(", ")
}

fn header_path(g: &[Field<'_>]) -> String {
    let name = g.first().map_or(&[][..], |f| f.0);
    format!(
        "header:{}",
        String::from_utf8_lossy(name).to_ascii_lowercase()
    )
}

fn difference(g: &[Field<'_>], kind: DiffKind, on_primary: bool, on_mirror: bool) -> Difference {
    Difference {
        path: header_path(g),
        kind,
        primary: on_primary.then(|| show(g)),
        mirror: on_mirror.then(|| show(g)),
    }
}

fn difference_of(a: &[Field<'_>], b: &[Field<'_>]) -> Difference {
    Difference {
        path: header_path(a),
        kind: DiffKind::Value,
        primary: Some(show(a)),
        mirror: Some(show(b)),
    }
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    v.get(start..end).unwrap_or_default()
}

fn cmp_ci(a: &[u8], b: &[u8]) -> Ordering {
    a.iter()
        .map(u8::to_ascii_lowercase)
        .cmp(b.iter().map(u8::to_ascii_lowercase))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diff(rules: &HeaderRules, p: &[(&str, &str)], m: &[(&str, &str)]) -> Vec<Difference> {
        let mut out = Vec::new();
        rules.diff(&Headers::from_pairs(p), &Headers::from_pairs(m), &mut out);
        out
    }

    fn kinds(d: &[Difference]) -> Vec<(String, &'static str)> {
        d.iter()
            .map(|x| (x.path.clone(), x.kind.as_str()))
            .collect()
    }

    #[test]
    fn name_case_and_order_do_not_matter() {
        let r = HeaderRules::new(&[], false);
        let d = diff(
            &r,
            &[("Content-Type", "application/json"), ("X-A", "1")],
            &[("x-a", "1"), ("content-type", " application/json ")],
        );
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn missing_extra_and_value_are_reported_with_lower_case_paths() {
        let r = HeaderRules::new(&[], false);
        let d = diff(
            &r,
            &[("X-Only-Primary", "p"), ("Cache-Control", "no-store")],
            &[("cache-control", "max-age=60"), ("X-Only-Mirror", "m")],
        );
        assert_eq!(
            kinds(&d),
            vec![
                ("header:cache-control".to_string(), "value"),
                ("header:x-only-mirror".to_string(), "extra"),
                ("header:x-only-primary".to_string(), "missing"),
            ]
        );
        assert_eq!(d[0].primary.as_deref(), Some("no-store"));
        assert_eq!(d[0].mirror.as_deref(), Some("max-age=60"));
        assert_eq!(d[1].primary, None);
        assert_eq!(d[2].mirror, None);
    }

    #[test]
    fn repeated_headers_compare_as_ordered_lists() {
        let r = HeaderRules::new(&[], false);
        let p = [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")];
        assert!(diff(&r, &p, &p).is_empty());
        let d = diff(&r, &p, &[("set-cookie", "b=2"), ("set-cookie", "a=1")]);
        assert_eq!(kinds(&d), vec![("header:set-cookie".to_string(), "value")]);
        assert_eq!(d[0].primary.as_deref(), Some("a=1, b=2"));
        // A list equals its comma-joined form, except for Set-Cookie.
        assert!(diff(&r, &[("Vary", "a"), ("Vary", "b")], &[("Vary", "a, b")]).is_empty());
        assert_eq!(
            diff(&r, &p, &[("Set-Cookie", "a=1, b=2")]).len(),
            1,
            "Set-Cookie is never joined"
        );
    }

    #[test]
    fn defaults_hop_by_hop_and_representation_headers_are_skipped() {
        let r = HeaderRules::new(&["Server".to_string()], false);
        let p = [
            ("Date", "Mon, 01 Jan 2024 00:00:00 GMT"),
            ("Server", "nginx"),
            ("Connection", "keep-alive, X-Hop"),
            ("X-Hop", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Transfer-Encoding", "chunked"),
            ("Content-Encoding", "gzip"),
            ("Content-Length", "10"),
            ("X-Envoy-Upstream-Service-Time", "3"),
        ];
        let m = [
            ("date", "Mon, 01 Jan 2024 00:00:01 GMT"),
            ("server", "envoy"),
            ("connection", "close"),
            ("content-length", "99"),
        ];
        assert!(diff(&r, &p, &m).is_empty());
        let all = HeaderRules::new(&["Server".to_string()], true);
        let d = kinds(&diff(&all, &p, &m));
        assert!(d.contains(&("header:content-length".to_string(), "value")));
        assert!(d.contains(&("header:content-encoding".to_string(), "missing")));
        assert!(d.contains(&("header:connection".to_string(), "value")));
        assert!(d.contains(&("header:x-hop".to_string(), "missing")));
        assert!(!d
            .iter()
            .any(|(p, _)| p == "header:date" || p == "header:server"));
    }
}
