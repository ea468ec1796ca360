//! Endpoint labels: `METHOD /path/template`, bounded per pair, for metrics, reports and rules.
//!
//! A label is the request method and the path without query string or fragment (an
//! absolute-form target `http://host/p` is reduced to `/p`). The pair's explicit `endpoints`
//! templates win: `GET /api/v1/users/{name}/cart` names every `GET` whose path has those
//! segments, `{x}` matching any one non-empty segment; when several templates match, the one
//! with more literal segments wins, then the one declared first. Otherwise segments that look
//! like identifiers collapse to `{id}`: all digits, a UUID (8-4-4-4-12 hex digits), or at least
//! 16 hex digits. Nothing else is guessed; other variable segments (slugs, e-mail addresses)
//! need a template, and until they get one the label cap keeps them from exploding.
//!
//! The cap: at most `max_endpoints` distinct labels per pair (explicit templates are registered
//! first and always keep their label); once it is reached, new paths are named `other` and
//! counted ([`EndpointNamer::overflowed`]). Naming an exchange whose label exists costs one
//! pass over the path and one hash lookup, with no allocation.
//!
//! With a masker ([`EndpointNamer::with_masker`]), a path segment that looks sensitive (an
//! e-mail address, a JWT, ...) becomes `{masked}` so no label carries a secret. The check runs
//! only when the path's label is not known yet, so naming known endpoints costs nothing more.

use std::borrow::Cow;
use std::sync::Arc;

use rustc_hash::FxHashSet;

use crate::mask::Masker;

use super::rules::{is_variable, path_segments};

/// The label given once the cap is reached.
pub const OTHER: &str = "other";

/// One explicit template.
#[derive(Clone, Debug)]
struct Template {
    method: String,
    /// `None` for a `{variable}` segment.
    segments: Vec<Option<String>>,
    label: Arc<str>,
    literals: usize,
}

impl Template {
    fn parse(text: &str) -> Option<Template> {
        let t = text.trim();
        let (method, path) = t.split_once(' ')?;
        let path = path.trim();
        if method.is_empty() || !path.starts_with('/') {
            return None;
        }
        let path = path.split(['?', '#']).next().unwrap_or(path);
        let segments: Vec<Option<String>> = path_segments(path)
            .map(|s| (!is_variable(s)).then(|| s.to_string()))
            .collect();
        let literals = segments.iter().filter(|s| s.is_some()).count();
        Some(Template {
            method: method.to_string(),
            label: Arc::from(format!("{method} {path}")),
            segments,
            literals,
        })
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        if method != self.method {
            return false;
        }
        let mut want = self.segments.iter();
        for seg in path_segments(path) {
            match want.next() {
                Some(None) if !seg.is_empty() => {}
                Some(Some(lit)) if lit == seg => {}
                _ => return false,
            }
        }
        want.next().is_none()
    }
}

/// Names exchanges by endpoint for one pair; see the module documentation.
#[derive(Debug)]
pub struct EndpointNamer {
    /// Most literal segments first, then declaration order.
    templates: Vec<Template>,
    labels: FxHashSet<Arc<str>>,
    max: usize,
    other: Arc<str>,
    scratch: String,
    overflowed: u64,
    masker: Option<Arc<Masker>>,
}

impl EndpointNamer {
    /// A namer with the pair's explicit templates (`METHOD /path`, invalid ones skipped: the
    /// configuration has validated them) and its label cap.
    pub fn new(templates: &[String], max_endpoints: usize) -> Self {
        let mut parsed: Vec<Template> = templates
            .iter()
            .filter_map(|t| Template::parse(t))
            .collect();
        // Stable: equal specificity keeps declaration order.
        parsed.sort_by_key(|t| std::cmp::Reverse(t.literals));
        let mut labels = FxHashSet::default();
        for t in &parsed {
            labels.insert(t.label.clone());
        }
        EndpointNamer {
            templates: parsed,
            labels,
            max: max_endpoints,
            other: Arc::from(OTHER),
            scratch: String::new(),
            overflowed: 0,
            masker: None,
        }
    }

    /// Replace path segments that look sensitive by `{masked}` in new labels
    /// ([`Masker::mask_label_path`]); explicit templates are kept as written.
    pub fn with_masker(mut self, masker: Arc<Masker>) -> Self {
        self.masker = Some(masker);
        self
    }

    /// The label of a request.
    pub fn name(&mut self, method: &str, uri: &str) -> Arc<str> {
        let path = request_path(uri);
        if let Some(t) = self.templates.iter().find(|t| t.matches(method, path)) {
            return t.label.clone();
        }
        self.scratch.clear();
        self.scratch.push_str(method);
        self.scratch.push(' ');
        if path == "*" {
            self.scratch.push('*');
        } else {
            for seg in path_segments(path) {
                self.scratch.push('/');
                if looks_like_id(seg) {
                    self.scratch.push_str("{id}");
                } else {
                    self.scratch.push_str(seg);
                }
            }
        }
        if let Some(l) = self.labels.get(self.scratch.as_str()) {
            return l.clone();
        }
        // Not a known label: a new one, or a path with a sensitive segment (whose raw label is
        // never kept, so it comes here every time). Only here does masking cost anything.
        if let Some(m) = &self.masker {
            let start = method.len() + 1;
            let masked = match self.scratch.get(start..).map(|p| m.mask_label_path(p)) {
                Some(Cow::Owned(p)) => Some(p),
                _ => None,
            };
            if let Some(p) = masked {
                self.scratch.truncate(start);
                self.scratch.push_str(&p);
                if let Some(l) = self.labels.get(self.scratch.as_str()) {
                    return l.clone();
                }
            }
        }
        if self.labels.len() >= self.max {
            self.overflowed += 1;
            return self.other.clone();
        }
        let label: Arc<str> = Arc::from(self.scratch.as_str());
        self.labels.insert(label.clone());
        label
    }

    /// Distinct labels given so far (explicit templates included, `other` not).
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// No label yet.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Exchanges named `other` because the cap was reached.
    pub fn overflowed(&self) -> u64 {
        self.overflowed
    }
}

/// The path of a request target: no query or fragment; absolute-form reduced to its path.
fn request_path(uri: &str) -> &str {
    let mut p = uri.split(['?', '#']).next().unwrap_or("");
    if let Some(rest) = strip_scheme(p) {
        p = rest.find('/').map_or("/", |i| rest.get(i..).unwrap_or("/"));
    }
    if p.is_empty() {
        "/"
    } else {
        p
    }
}

fn strip_scheme(p: &str) -> Option<&str> {
    for scheme in ["http://", "https://"] {
        if p.len() >= scheme.len()
            && p.get(..scheme.len())
                .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
        {
            return p.get(scheme.len()..);
        }
    }
    None
}

/// Digits only, a UUID, or 16 or more hex digits.
fn looks_like_id(seg: &str) -> bool {
    let b = seg.as_bytes();
    if b.is_empty() {
        return false;
    }
    if b.iter().all(u8::is_ascii_digit) {
        return true;
    }
    if b.len() >= 16 && b.iter().all(u8::is_ascii_hexdigit) {
        return true;
    }
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn namer(t: &[&str], max: usize) -> EndpointNamer {
        let t: Vec<String> = t.iter().map(|s| s.to_string()).collect();
        EndpointNamer::new(&t, max)
    }

    #[test]
    fn identifiers_collapse_and_query_strings_go() {
        let mut n = namer(&[], 100);
        for (m, uri, want) in [
            ("GET", "/api/users/42", "GET /api/users/{id}"),
            ("GET", "/api/users/42?x=1#f", "GET /api/users/{id}"),
            (
                "GET",
                "/api/orders/123e4567-e89b-12d3-a456-426614174000/items",
                "GET /api/orders/{id}/items",
            ),
            ("GET", "/blobs/0123456789abcdef0123", "GET /blobs/{id}"),
            (
                "GET",
                "/blobs/0123456789abcde",
                "GET /blobs/0123456789abcde",
            ),
            ("GET", "/api/users/bob", "GET /api/users/bob"),
            ("POST", "/api/users", "POST /api/users"),
            ("GET", "/", "GET /"),
            ("GET", "", "GET /"),
            ("GET", "http://example.com/a/7?q", "GET /a/{id}"),
            ("GET", "HTTP://example.com", "GET /"),
            ("OPTIONS", "*", "OPTIONS *"),
            ("GET", "/a//b/", "GET /a//b/"),
        ] {
            assert_eq!(&*n.name(m, uri), want, "{m} {uri}");
        }
    }

    #[test]
    fn sensitive_segments_never_become_labels() {
        let cfg = crate::config::Config::default();
        let m = Arc::new(Masker::new(&cfg, [0; 32], true));
        let mut n = EndpointNamer::new(&[], 3).with_masker(m);
        assert_eq!(
            &*n.name("GET", "/users/jane@example.com/cart?x=1"),
            "GET /users/{masked}/cart"
        );
        assert_eq!(
            &*n.name("GET", "/users/bob%40example.com/cart"),
            "GET /users/{masked}/cart"
        );
        assert_eq!(
            &*n.name("GET", "/reset/eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln"),
            "GET /reset/{masked}"
        );
        assert_eq!(n.len(), 2, "one label per shape, whatever the secret");
        assert_eq!(&*n.name("GET", "/users/42/cart"), "GET /users/{id}/cart");
        assert_eq!(&*n.name("GET", "/x/a@b.io"), "other", "the cap still holds");
        // Without a masker the namer is unchanged.
        let mut plain = EndpointNamer::new(&[], 3);
        assert_eq!(&*plain.name("GET", "/u/a@b.io"), "GET /u/a@b.io");
    }

    #[test]
    fn explicit_templates_win_and_the_most_literal_one_first() {
        let mut n = namer(
            &[
                "GET /api/v1/users/{name}/cart",
                "GET /api/v1/{x}/{y}/cart",
                "GET /api/v1/users/me/cart",
            ],
            100,
        );
        assert_eq!(
            &*n.name("GET", "/api/v1/users/bob/cart"),
            "GET /api/v1/users/{name}/cart"
        );
        assert_eq!(
            &*n.name("GET", "/api/v1/users/me/cart?x"),
            "GET /api/v1/users/me/cart"
        );
        assert_eq!(
            &*n.name("GET", "/api/v1/teams/a/cart"),
            "GET /api/v1/{x}/{y}/cart"
        );
        assert_eq!(
            &*n.name("GET", "/api/v1/users/42/cart"),
            "GET /api/v1/users/{name}/cart",
            "templates win over automatic collapsing"
        );
        assert_eq!(
            &*n.name("POST", "/api/v1/users/bob/cart"),
            "POST /api/v1/users/bob/cart"
        );
        assert_eq!(
            &*n.name("GET", "/api/v1/users//cart"),
            "GET /api/v1/users//cart",
            "a variable matches a non-empty segment only"
        );
    }

    #[test]
    fn the_cap_turns_new_labels_into_other_and_counts_them() {
        let mut n = namer(&["GET /fixed/{x}"], 3);
        assert_eq!(n.len(), 1);
        assert_eq!(&*n.name("GET", "/a"), "GET /a");
        assert_eq!(&*n.name("GET", "/b"), "GET /b");
        assert_eq!(&*n.name("GET", "/c"), OTHER);
        assert_eq!(&*n.name("GET", "/d"), OTHER);
        assert_eq!(n.overflowed(), 2);
        // Existing labels and templates keep working past the cap.
        assert_eq!(&*n.name("GET", "/a?z"), "GET /a");
        assert_eq!(&*n.name("GET", "/fixed/9"), "GET /fixed/{x}");
        assert_eq!(n.len(), 3);
    }

    proptest::proptest! {
        #[test]
        fn any_request_line_gets_a_label_within_the_cap(
            reqs in proptest::collection::vec(("\\PC{0,8}", "\\PC{0,40}"), 1..50),
        ) {
            let mut n = namer(&["GET /a/{x}", "bad template"], 5);
            for (m, uri) in &reqs {
                let l = n.name(m, uri);
                proptest::prop_assert!(!l.is_empty());
            }
            proptest::prop_assert!(n.len() <= 5);
        }
    }

    #[test]
    fn labels_are_shared_not_copied() {
        let mut n = namer(&[], 10);
        let a = n.name("GET", "/x/1");
        let b = n.name("GET", "/x/2");
        assert!(Arc::ptr_eq(&a, &b));
    }
}
