//! Masking: the one place that decides what of a captured value may leave the agent.
//!
//! Everything that leaves the agent (the diff store, `/api/*`, the web view, `diffs` output and
//! exchange records) passes through a [`Masker`]. A masked value is replaced whole by a token
//! `[masked:<12 hex>]`, a keyed hash (HMAC-SHA-256 with a per-install key kept beside the store),
//! so equal values give equal tokens and "changed" versus "unchanged" stays visible in a masked diff
//! while the value itself does not.
//!
//! Default rules (on unless `[masking] defaults = false`): the values of `Authorization`,
//! `Proxy-Authorization`, `Cookie`, `Set-Cookie` and `X-Api-Key`; query parameters and JSON members
//! whose name contains `token`, `secret`, `password`, `passwd`, `api_key` or `apikey`; and values
//! anywhere that look like a bearer token, a JWT, an e-mail address or a card number (Luhn-checked).
//! `[[mask]]` entries add header names, JSON paths, query parameters and regular expressions.

use std::borrow::Cow;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use regex::Regex;
use sha2::Sha256;

use crate::compare::path::{JsonPath, Step};
use crate::config::{Config, MaskRule};
use crate::exchange::{Exchange, Headers};

/// Header names whose values are always masked by default.
pub const DEFAULT_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
];

/// Substrings of query-parameter and JSON member names whose values are masked by default.
pub const DEFAULT_NAME_PARTS: &[&str] =
    &["token", "secret", "password", "passwd", "api_key", "apikey"];

/// Prefix of every mask token.
pub const TOKEN_PREFIX: &str = "[masked:";

/// What a sensitive path segment of an endpoint label (or a sensitive member name in a summary
/// path) becomes: a constant, like `{id}`, so labels stay few and carry no secret.
pub const LABEL_PLACEHOLDER: &str = "{masked}";

/// A secret-looking name followed by `=` or `:` and a value (quoted or bare): form bodies, text,
/// JSON that did not parse. Only the value is replaced.
const ASSIGNMENT: &str = r#"(?i)[A-Za-z0-9_\-]*(?:token|secret|password|passwd|api_key|apikey)[A-Za-z0-9_\-]*["']?\s*[:=]\s*(?:"(?P<dq>(?:[^"\\]|\\.)*)"|'(?P<sq>[^']*)'|(?P<bare>[^\s"'&,;}\]]+))"#;

/// Why the masking key could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or creating the key file failed.
    #[error("masking key {path}: {source} (the key is created beside the store with mode 0600; check the directory's permissions or set [masking] key_file)")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file exists but is not a key.
    #[error("masking key {path} is {len} bytes, expected 32: delete it to create a new one (masked tokens will change)")]
    BadLength {
        /// The key file.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
}

/// Read the masking key at `path`, creating it (32 random bytes, mode 0600) when absent.
pub fn load_or_create_key(path: &Path) -> Result<[u8; 32], KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::read(path) {
        Ok(bytes) => <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| KeyError::BadLength {
            path: path.to_path_buf(),
            len: bytes.len(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = ephemeral_key()?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io)?;
            f.write_all(&key).map_err(io)?;
            f.sync_all().map_err(io)?;
            Ok(key)
        }
        Err(e) => Err(io(e)),
    }
}

/// A random key for a run that persists nothing masked (tokens differ from run to run).
pub fn ephemeral_key() -> Result<[u8; 32], KeyError> {
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .map_err(|source| KeyError::Io {
            path: PathBuf::from("/dev/urandom"),
            source,
        })?;
    Ok(key)
}

/// Where the key lives for a configuration: `[masking] key_file`, else `parity.key` beside the
/// store's database, else in the working directory.
pub fn key_path(cfg: &Config) -> PathBuf {
    if let Some(p) = &cfg.masking.key_file {
        return p.clone();
    }
    match &cfg.store {
        Some(s) => s
            .path
            .parent()
            .map(|d| d.join("parity.key"))
            .unwrap_or_else(|| PathBuf::from("parity.key")),
        None => PathBuf::from("parity.key"),
    }
}

/// Applies the masking rules.
#[derive(Clone)]
pub struct Masker {
    active: bool,
    defaults: bool,
    key: [u8; 32],
    headers: Vec<String>,
    json_paths: Vec<JsonPath>,
    query_params: Vec<String>,
    regexes: Vec<Regex>,
    email: Regex,
    jwt: Regex,
    bearer: Regex,
    /// `name=value` / `"name": "value"` where the name is secret-looking (forms, text, broken JSON).
    assignment: Regex,
    name_parts: regex::bytes::Regex,
}

impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Masker")
            .field("active", &self.active)
            .field("defaults", &self.defaults)
            .finish_non_exhaustive()
    }
}

fn builtin(re: &str) -> Regex {
    Regex::new(re).unwrap_or_else(|e| unreachable!("built-in pattern {re} compiles: {e}"))
}

impl Masker {
    /// A masker for `cfg` with `key`; `enabled = false` (`--unmasked`) passes everything through.
    pub fn new(cfg: &Config, key: [u8; 32], enabled: bool) -> Masker {
        let mut m = Masker {
            active: enabled && cfg.masking.enabled,
            defaults: cfg.masking.defaults,
            key,
            headers: Vec::new(),
            json_paths: Vec::new(),
            query_params: Vec::new(),
            regexes: Vec::new(),
            email: builtin(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"),
            jwt: builtin(r"eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*"),
            bearer: builtin(r"(?i)\bbearer\s+[A-Za-z0-9\-._~+/]+=*"),
            assignment: builtin(ASSIGNMENT),
            name_parts: regex::bytes::Regex::new(&format!("(?i){}", DEFAULT_NAME_PARTS.join("|")))
                .unwrap_or_else(|e| unreachable!("the name-part pattern compiles: {e}")),
        };
        if m.defaults {
            m.headers = DEFAULT_HEADERS.iter().map(|s| s.to_string()).collect();
        }
        for rule in &cfg.masks {
            match rule {
                MaskRule::Header(h) => m.headers.push(h.trim().to_ascii_lowercase()),
                MaskRule::QueryParam(q) => m.query_params.push(q.trim().to_string()),
                MaskRule::JsonPath(p) => {
                    if let Ok(p) = JsonPath::parse(p) {
                        m.json_paths.push(p);
                    }
                }
                MaskRule::Regex(r) => {
                    if let Ok(r) = Regex::new(r) {
                        m.regexes.push(r);
                    }
                }
            }
        }
        m
    }

    /// A masker that masks nothing (tests, `--unmasked`).
    pub fn disabled() -> Masker {
        Masker::new(&Config::default(), [0; 32], false)
    }

    /// Masking is on.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// The token that replaces `value`.
    pub fn token(&self, value: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(value);
        let tag = mac.finalize().into_bytes();
        let mut s = String::with_capacity(TOKEN_PREFIX.len() + 13);
        s.push_str(TOKEN_PREFIX);
        for b in &tag[..6] {
            s.push_str(&format!("{b:02x}"));
        }
        s.push(']');
        s
    }

    fn secret_name(&self, name: &str) -> bool {
        self.defaults && self.has_name_part(name.as_bytes())
    }

    /// Does a free value contain something that must not leave (detectors and user regexes)?
    pub fn value_is_sensitive(&self, v: &str) -> bool {
        if !self.active {
            return false;
        }
        if self.regexes.iter().any(|r| r.is_match(v)) {
            return true;
        }
        if !self.defaults {
            return false;
        }
        let b = v.as_bytes();
        let s = Suspects::scan(b, &self.name_parts);
        (s.at && self.email.is_match(v))
            || (s.jwt && self.jwt.is_match(v))
            || (s.bearer && self.bearer.is_match(v))
            || (s.digits >= 13 && has_card_number(b))
            || (s.name_part && self.assignment.is_match(v) && self.has_unmasked_assignment(v))
    }

    /// Does `v` hold a secret-named assignment whose value [`Masker::mask_text`] would replace
    /// (not empty, not already a mask token)? The same rule as `mask_assignments`, so text the
    /// masker wrote (`password=[masked:…]`) is not judged sensitive again.
    fn has_unmasked_assignment(&self, v: &str) -> bool {
        self.assignment.captures_iter(v).any(|c| {
            c.name("dq")
                .or_else(|| c.name("sq"))
                .or_else(|| c.name("bare"))
                .is_some_and(|m| !m.as_str().is_empty() && !m.as_str().starts_with(TOKEN_PREFIX))
        })
    }

    /// Does `b` contain one of [`DEFAULT_NAME_PARTS`], in any case? (One vectorised search.)
    fn has_name_part(&self, b: &[u8]) -> bool {
        self.name_parts.is_match(b)
    }

    /// The token for a header value that must be masked (by name or content), `None` when the
    /// value may leave as it is. Checks in place: no allocation for the common clean value.
    pub fn mask_header_bytes(&self, name: &[u8], value: &[u8]) -> Option<String> {
        if !self.active {
            return None;
        }
        if self
            .headers
            .iter()
            .any(|h| h.as_bytes().eq_ignore_ascii_case(name))
        {
            return Some(self.token(value));
        }
        if self.regexes.is_empty() && !Suspects::scan(value, &self.name_parts).any() {
            return None;
        }
        let text = String::from_utf8_lossy(value);
        self.value_is_sensitive(&text).then(|| self.token(value))
    }

    /// [`Masker::mask_header_bytes`] remembering values found clean in `cache`: header values
    /// repeat from exchange to exchange (hosts, agents, content types), so most are checked
    /// once. A cache hit compares the whole value, never only a hash.
    pub fn mask_header_cached(
        &self,
        name: &[u8],
        value: &[u8],
        cache: &mut CleanCache,
    ) -> Option<String> {
        if !self.active {
            return None;
        }
        if self
            .headers
            .iter()
            .any(|h| h.as_bytes().eq_ignore_ascii_case(name))
        {
            return Some(self.token(value));
        }
        if cache.contains(value) {
            return None;
        }
        let masked = self.mask_header_bytes(name, value);
        if masked.is_none() {
            cache.insert(value);
        }
        masked
    }

    /// The request target masked, `None` when nothing in it needs masking.
    pub fn mask_uri_bytes(&self, uri: &[u8]) -> Option<String> {
        if !self.active {
            return None;
        }
        let has_query = memchr::memchr(b'?', uri).is_some();
        // A percent-encoded segment can hide an address from the scan (`bob%40example.com`).
        let encoded = memchr::memchr(b'%', uri).is_some();
        if !has_query
            && !encoded
            && self.regexes.is_empty()
            && !Suspects::scan(uri, &self.name_parts).any()
        {
            return None;
        }
        match self.mask_uri(&String::from_utf8_lossy(uri)) {
            Cow::Owned(m) => Some(m),
            Cow::Borrowed(_) => None,
        }
    }

    /// A value, whole, masked if sensitive.
    pub fn mask_value<'a>(&self, v: &'a str) -> Cow<'a, str> {
        if self.value_is_sensitive(v) {
            Cow::Owned(self.token(v.as_bytes()))
        } else {
            Cow::Borrowed(v)
        }
    }

    /// Free text (text bodies, diff excerpts): every sensitive match replaced by its token.
    pub fn mask_text<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if !self.active {
            return Cow::Borrowed(text);
        }
        let mut out: Cow<'a, str> = Cow::Borrowed(text);
        let apply = |re: &Regex, out: &mut Cow<'a, str>| {
            if re.is_match(out) {
                let replaced = re
                    .replace_all(out, |c: &regex::Captures<'_>| self.token(c[0].as_bytes()))
                    .into_owned();
                *out = Cow::Owned(replaced);
            }
        };
        for r in &self.regexes {
            apply(r, &mut out);
        }
        if self.defaults {
            apply(&self.bearer, &mut out);
            apply(&self.jwt, &mut out);
            apply(&self.email, &mut out);
            if has_card_number(out.as_bytes()) {
                out = Cow::Owned(self.mask_cards(&out));
            }
            if self.has_name_part(out.as_bytes()) && self.assignment.is_match(&out) {
                out = Cow::Owned(self.mask_assignments(&out));
            }
        }
        out
    }

    /// Replace the value of every secret-named assignment, keeping the name and the quotes.
    fn mask_assignments(&self, text: &str) -> String {
        self.assignment
            .replace_all(text, |c: &regex::Captures<'_>| {
                let whole = c.get(0).map_or("", |m| m.as_str());
                let start = c.get(0).map_or(0, |m| m.start());
                let value = c
                    .name("dq")
                    .or_else(|| c.name("sq"))
                    .or_else(|| c.name("bare"));
                match value {
                    Some(v) if !v.as_str().is_empty() && !v.as_str().starts_with(TOKEN_PREFIX) => {
                        let (a, b) = (v.start() - start, v.end() - start);
                        format!(
                            "{}{}{}",
                            whole.get(..a).unwrap_or(""),
                            self.token(v.as_str().as_bytes()),
                            whole.get(b..).unwrap_or("")
                        )
                    }
                    _ => whole.to_string(),
                }
            })
            .into_owned()
    }

    fn mask_cards(&self, text: &str) -> String {
        let b = text.as_bytes();
        let mut out = String::with_capacity(text.len());
        let mut i = 0;
        while i < b.len() {
            if let Some(end) = card_at(b, i) {
                out.push_str(&self.token(&b[i..end]));
                i = end;
            } else {
                let len = text[i..].chars().next().map(char::len_utf8).unwrap_or(1);
                out.push_str(&text[i..i + len]);
                i += len;
            }
        }
        out
    }

    /// Should header `name`'s value be masked whatever it contains?
    pub fn header_is_secret(&self, name: &str) -> bool {
        self.active && self.headers.iter().any(|h| h.eq_ignore_ascii_case(name))
    }

    /// A header value, masked by name or content.
    pub fn mask_header<'a>(&self, name: &str, value: &'a str) -> Cow<'a, str> {
        if self.header_is_secret(name) {
            return Cow::Owned(self.token(value.as_bytes()));
        }
        self.mask_value(value)
    }

    /// A request target with sensitive query values masked (by parameter name or content) and
    /// sensitive path segments masked.
    pub fn mask_uri<'a>(&self, uri: &'a str) -> Cow<'a, str> {
        if !self.active {
            return Cow::Borrowed(uri);
        }
        let (path, query) = match uri.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (uri, None),
        };
        let mut changed = false;
        let mut out = String::with_capacity(uri.len());
        for (i, seg) in path.split('/').enumerate() {
            if i > 0 {
                out.push('/');
            }
            if self.part_is_sensitive(seg) {
                out.push_str(&self.token(seg.as_bytes()));
                changed = true;
            } else {
                out.push_str(seg);
            }
        }
        if let Some(q) = query {
            out.push('?');
            for (i, kv) in q.split('&').enumerate() {
                if i > 0 {
                    out.push('&');
                }
                let (k, v) = match kv.split_once('=') {
                    Some((k, v)) => (k, Some(v)),
                    None => (kv, None),
                };
                // A name is data too (`?alice@example.com`, `?Bearer%20abc`): masked by content.
                if self.part_is_sensitive(k) {
                    out.push_str(&self.token(k.as_bytes()));
                    changed = true;
                } else {
                    out.push_str(k);
                }
                if let Some(v) = v {
                    out.push('=');
                    let by_name = self.secret_name(k)
                        || self.query_params.iter().any(|p| p.eq_ignore_ascii_case(k));
                    if by_name || self.part_is_sensitive(v) {
                        out.push_str(&self.token(v.as_bytes()));
                        changed = true;
                    } else {
                        out.push_str(v);
                    }
                }
            }
        }
        if changed {
            Cow::Owned(out)
        } else {
            Cow::Borrowed(uri)
        }
    }

    /// Is a path segment, query name or query value sensitive as sent or percent-decoded?
    /// Both, because decoding can reveal a match (`bob%40example.com`) as well as hide one
    /// (`%ff@example.com` decodes to no address).
    fn part_is_sensitive(&self, raw: &str) -> bool {
        self.value_is_sensitive(raw)
            || (raw.contains(['%', '+']) && self.value_is_sensitive(&percent_decode(raw)))
    }

    /// Mask a JSON document in place: members with secret names, configured paths, and
    /// sensitive string (and card-like number) values.
    pub fn mask_json(&self, v: &mut serde_json::Value) {
        if !self.active {
            return;
        }
        let mut steps = Vec::new();
        self.mask_json_at(v, &mut steps, false);
    }

    fn mask_json_at(&self, v: &mut serde_json::Value, steps: &mut Vec<Step>, forced: bool) {
        let forced = forced || self.json_paths.iter().any(|p| p.matches(steps));
        match v {
            serde_json::Value::Object(map) => {
                let mut renamed = Vec::new();
                for (k, child) in map.iter_mut() {
                    steps.push(Step::Key(k.clone()));
                    let secret = self.secret_name(k);
                    self.mask_json_at(child, steps, forced || secret);
                    steps.pop();
                    // A member name can be the secret itself (objects keyed by e-mail address).
                    if self.value_is_sensitive(k) {
                        renamed.push(k.clone());
                    }
                }
                for k in renamed {
                    if let Some(child) = map.remove(&k) {
                        map.insert(self.token(k.as_bytes()), child);
                    }
                }
            }
            serde_json::Value::Array(items) => {
                for (i, child) in items.iter_mut().enumerate() {
                    steps.push(Step::Index(i));
                    self.mask_json_at(child, steps, forced);
                    steps.pop();
                }
            }
            serde_json::Value::String(s) => {
                if forced || self.value_is_sensitive(s) {
                    *s = self.token(s.as_bytes());
                }
            }
            serde_json::Value::Number(n) => {
                let text = n.to_string();
                if forced || has_card_number(text.as_bytes()) {
                    *v = serde_json::Value::String(self.token(text.as_bytes()));
                }
            }
            serde_json::Value::Bool(b) => {
                if forced {
                    let t = if *b { "true" } else { "false" };
                    *v = serde_json::Value::String(self.token(t.as_bytes()));
                }
            }
            serde_json::Value::Null => {}
        }
    }

    /// Masking is on and `[[mask]] json_path` rules exist (they need a parsed document).
    pub fn has_json_path_rules(&self) -> bool {
        self.active && !self.json_paths.is_empty()
    }

    /// Is the JSON location `steps` masked by name or path (for difference values)?
    pub fn json_location_is_secret(&self, steps: &[Step]) -> bool {
        self.active
            && (steps
                .iter()
                .any(|s| matches!(s, Step::Key(k) if self.secret_name(k)))
                || (0..=steps.len())
                    .any(|n| self.json_paths.iter().any(|p| p.matches(&steps[..n]))))
    }

    /// The path of a request target for an endpoint label: query and fragment dropped, and every
    /// segment that looks sensitive replaced by [`LABEL_PLACEHOLDER`]. Labels become metric
    /// label values, so they depend on the rules only (not on the key, nor on `--unmasked`).
    /// Cheap when the path holds nothing a detector could match (the common case).
    pub fn mask_label_path<'a>(&self, uri: &'a str) -> Cow<'a, str> {
        let end = uri.find(['?', '#']).unwrap_or(uri.len());
        let path = uri.get(..end).unwrap_or(uri);
        if !self.active || !self.path_may_be_sensitive(path) {
            return Cow::Borrowed(path);
        }
        let mut out = String::with_capacity(path.len());
        let mut changed = false;
        for (i, seg) in path.split('/').enumerate() {
            if i > 0 {
                out.push('/');
            }
            if self.part_is_sensitive(seg) {
                out.push_str(LABEL_PLACEHOLDER);
                changed = true;
            } else {
                out.push_str(seg);
            }
        }
        if changed {
            Cow::Owned(out)
        } else {
            Cow::Borrowed(path)
        }
    }

    /// A quick test that no detector can match anything in `b` (no `@`, `%`, `eyJ`, `bearer`,
    /// secret-looking name or long digit run), so labelling skips the per-segment checks.
    fn path_may_be_sensitive(&self, t: &str) -> bool {
        if !self.regexes.is_empty() {
            return true;
        }
        if !self.defaults {
            return false;
        }
        // One pass, no allocation: this runs for every exchange that gets a label.
        let b = t.as_bytes();
        let mut digits = 0;
        for (i, &c) in b.iter().enumerate() {
            match c {
                b'@' | b'%' => return true,
                b'0'..=b'9' => {
                    digits += 1;
                    if digits >= 13 {
                        return true;
                    }
                }
                _ => {
                    let rest = b.get(i..).unwrap_or_default();
                    let at = |w: &[u8]| {
                        rest.get(..w.len())
                            .is_some_and(|x| x.eq_ignore_ascii_case(w))
                    };
                    let hit = match c.to_ascii_lowercase() {
                        b'e' => rest.starts_with(b"eyJ"),
                        b'b' => at(b"bearer"),
                        b't' => at(b"token"),
                        b's' => at(b"secret"),
                        b'p' => at(b"passw"),
                        b'a' => at(b"api_key") || at(b"apikey"),
                        _ => false,
                    };
                    if hit {
                        return true;
                    }
                }
            }
        }
        false
    }

    /// A difference path with every member name that looks sensitive replaced by its token
    /// (`$['jane@example.com'].age` → `$['[masked:…]'].age`); other paths unchanged. A `$` path
    /// that does not parse as a location is replaced whole (fail closed).
    pub fn mask_location<'a>(&self, path: &'a str) -> Cow<'a, str> {
        self.location_with(path, |k| self.token(k.as_bytes()))
    }

    /// Like [`Masker::mask_location`] with [`LABEL_PLACEHOLDER`] instead of keyed tokens, for
    /// the summary, whose paths are aggregated (and carry no key).
    pub fn label_location<'a>(&self, path: &'a str) -> Cow<'a, str> {
        self.location_with(path, |_| LABEL_PLACEHOLDER.to_string())
    }

    fn location_with<'a>(&self, path: &'a str, replace: impl Fn(&str) -> String) -> Cow<'a, str> {
        if !self.active || !path.starts_with('$') || !self.path_may_be_sensitive(path) {
            return Cow::Borrowed(path);
        }
        let Some(mut steps) = location_steps(path) else {
            return Cow::Owned(replace(path));
        };
        let mut changed = false;
        for s in &mut steps {
            if let Step::Key(k) = s {
                if self.value_is_sensitive(k) {
                    *k = replace(k);
                    changed = true;
                }
            }
        }
        if changed {
            Cow::Owned(crate::compare::path::format_location(&steps))
        } else {
            Cow::Borrowed(path)
        }
    }

    /// One value of a difference (`Difference::primary` or `mirror`) at `path`, masked:
    /// header values by name and content; JSON values whole when their location is secret by
    /// name or `[[mask]] json_path`, structurally when they are objects or arrays, by content
    /// otherwise; a shortened object or array rendering (which no longer parses) whole when it
    /// could hide a secret-named member or a configured path; everything else (`body` excerpts,
    /// `status`) by content.
    pub fn mask_difference<'a>(&self, path: &str, value: &'a str) -> Cow<'a, str> {
        if !self.active {
            return Cow::Borrowed(value);
        }
        if let Some(name) = path.strip_prefix("header:") {
            return self.mask_header(name, value);
        }
        if !path.starts_with('$') {
            return self.mask_text(value);
        }
        let Some(steps) = location_steps(path) else {
            return Cow::Owned(self.token(value.as_bytes()));
        };
        let secret = self.json_location_is_secret(&steps);
        match serde_json::from_str::<serde_json::Value>(value) {
            Ok(mut v) => {
                // Masked like the same value inside the stored body, so the tokens match.
                let original = v.clone();
                let mut at = steps;
                self.mask_json_at(&mut v, &mut at, secret);
                if v == original && !secret {
                    Cow::Borrowed(value)
                } else if v == original {
                    // `null` under a secret name: nothing to hide, but say nothing either.
                    Cow::Owned(self.token(value.as_bytes()))
                } else {
                    Cow::Owned(v.to_string())
                }
            }
            Err(_) => {
                let nested = value.starts_with('{') || value.starts_with('[');
                let may_hide = secret
                    || nested
                        && ((self.defaults && self.has_name_part(value.as_bytes()))
                            || self.json_paths.iter().any(|p| p.may_match_below(&steps)));
                if may_hide {
                    Cow::Owned(self.token(value.as_bytes()))
                } else {
                    self.mask_text(value)
                }
            }
        }
    }

    /// A body for storage or display: JSON masked structurally, text masked by content, other
    /// bytes never leave (replaced by a description).
    pub fn mask_body(&self, content_type: Option<&str>, body: &[u8]) -> String {
        let ct = content_type.unwrap_or("").to_ascii_lowercase();
        if ct.contains("json") {
            if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(body) {
                self.mask_json(&mut v);
                return serde_json::to_string_pretty(&v).unwrap_or_default();
            }
        }
        match std::str::from_utf8(body) {
            Ok(text) => self.mask_text(text).into_owned(),
            Err(_) if !self.active => String::from_utf8_lossy(body).into_owned(),
            Err(_) => format!("<{} bytes of binary content, not stored>", body.len()),
        }
    }

    /// An exchange with its header values and request target masked (bodies are not part of
    /// exchange records).
    pub fn mask_exchange(&self, ex: &Exchange) -> Exchange {
        let mut out = ex.clone();
        if !self.active {
            return out;
        }
        if let Some(r) = &mut out.request {
            r.headers = self.mask_headers(&r.headers);
            let uri = String::from_utf8_lossy(&r.uri);
            if let Cow::Owned(m) = self.mask_uri(&uri) {
                r.uri = Bytes::from(m);
            }
        }
        if let Some(r) = &mut out.response {
            r.headers = self.mask_headers(&r.headers);
        }
        out
    }

    /// A header block with every value masked as needed.
    pub fn mask_headers(&self, h: &Headers) -> Headers {
        let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(h.len());
        let mut changed = false;
        for (n, v) in h.iter() {
            let name = String::from_utf8_lossy(n);
            let value = String::from_utf8_lossy(v);
            let m = self.mask_header(&name, &value);
            if let Cow::Owned(m) = m {
                changed = true;
                pairs.push((n.to_vec(), m.into_bytes()));
            } else {
                pairs.push((n.to_vec(), v.to_vec()));
            }
        }
        if changed {
            Headers::from_pairs(&pairs)
        } else {
            h.clone()
        }
    }
}

/// Header values a [`Masker`] found clean, in a small direct-mapped table (values up to
/// [`CleanCache::MAX_VALUE`] bytes; a colliding value replaces the older one). Valid for one
/// masker: its rules never change.
pub struct CleanCache {
    slots: Vec<Option<Box<[u8]>>>,
}

impl Default for CleanCache {
    fn default() -> Self {
        CleanCache {
            slots: vec![None; CleanCache::SLOTS],
        }
    }
}

impl CleanCache {
    const SLOTS: usize = 1024;
    /// Longest value cached.
    pub const MAX_VALUE: usize = 256;

    fn slot(value: &[u8]) -> usize {
        use std::hash::Hasher;
        let mut h = rustc_hash::FxHasher::default();
        h.write(value);
        (h.finish() as usize) % Self::SLOTS
    }

    fn contains(&self, value: &[u8]) -> bool {
        value.len() <= Self::MAX_VALUE
            && self
                .slots
                .get(Self::slot(value))
                .and_then(Option::as_deref)
                .is_some_and(|v| v == value)
    }

    fn insert(&mut self, value: &[u8]) {
        if value.len() <= Self::MAX_VALUE {
            if let Some(slot) = self.slots.get_mut(Self::slot(value)) {
                *slot = Some(value.into());
            }
        }
    }
}

/// What a single pass over a value found that a detector could match: the expensive checks
/// run only when their cheap precondition holds.
#[derive(Default)]
struct Suspects {
    at: bool,
    jwt: bool,
    bearer: bool,
    name_part: bool,
    digits: usize,
}

impl Suspects {
    /// Each check is a vectorised search or count over the whole value; the name-part search
    /// (for `password=...`-style assignments) runs only when the value has `=` or `:`.
    fn scan(b: &[u8], name_parts: &regex::bytes::Regex) -> Suspects {
        let bearer = memchr::memchr2_iter(b'b', b'B', b)
            .any(|i| starts_with_ignore_case(&b[i..], b"bearer"));
        let name_part = memchr::memchr2(b'=', b':', b).is_some() && name_parts.is_match(b);
        Suspects {
            at: memchr::memchr(b'@', b).is_some(),
            jwt: memchr::memmem::find(b, b"eyJ").is_some(),
            bearer,
            name_part,
            digits: b.iter().filter(|c| c.is_ascii_digit()).count(),
        }
    }

    fn any(&self) -> bool {
        self.at || self.jwt || self.bearer || self.name_part || self.digits >= 13
    }
}

/// The concrete steps of a difference location such as `$.items[2]['a b']`; `None` when it is
/// not a location (wildcards, descents, bad syntax).
pub fn location_steps(path: &str) -> Option<Vec<Step>> {
    use crate::compare::path::Segment;
    let p = JsonPath::parse(path).ok()?;
    p.segments()
        .iter()
        .map(|s| match s {
            Segment::Key(k) => Some(Step::Key(k.clone())),
            Segment::Index(i) => Some(Step::Index(*i)),
            _ => None,
        })
        .collect()
}

fn starts_with_ignore_case(hay: &[u8], prefix: &[u8]) -> bool {
    hay.get(..prefix.len())
        .is_some_and(|h| h.eq_ignore_ascii_case(prefix))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A Luhn-valid card number of 13 to 19 digits (spaces or dashes allowed between digits)
/// starting at `start`, not preceded or followed by another digit: returns its end.
fn card_at(b: &[u8], start: usize) -> Option<usize> {
    if !b.get(start)?.is_ascii_digit() || (start > 0 && b[start - 1].is_ascii_digit()) {
        return None;
    }
    let mut digits = Vec::with_capacity(19);
    let mut i = start;
    let mut end = start;
    while i < b.len() && digits.len() < 19 {
        match b[i] {
            d @ b'0'..=b'9' => {
                digits.push(d - b'0');
                i += 1;
                end = i;
            }
            b' ' | b'-' if i + 1 < b.len() && b[i + 1].is_ascii_digit() && !digits.is_empty() => {
                i += 1;
            }
            _ => break,
        }
    }
    if b.get(end).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    // Try the longest Luhn-valid prefix of 13..=19 digits that ends the run.
    if (13..=19).contains(&digits.len()) && luhn(&digits) {
        Some(end)
    } else {
        None
    }
}

fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(*d);
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

fn has_card_number(b: &[u8]) -> bool {
    // Cheap pre-check: at least 13 digits in the value.
    if b.iter().filter(|c| c.is_ascii_digit()).count() < 13 {
        return false;
    }
    (0..b.len()).any(|i| card_at(b, i).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masker(extra: &str) -> Masker {
        let cfg = Config::parse(extra, "t").unwrap();
        Masker::new(&cfg, [7; 32], true)
    }

    #[test]
    fn tokens_are_deterministic_and_keyed() {
        let m = masker("");
        assert_eq!(m.token(b"secret"), m.token(b"secret"));
        assert_ne!(m.token(b"secret"), m.token(b"secret2"));
        let other = Masker::new(&Config::default(), [8; 32], true);
        assert_ne!(m.token(b"secret"), other.token(b"secret"));
        assert!(m.token(b"x").starts_with(TOKEN_PREFIX));
        assert_eq!(m.token(b"x").len(), TOKEN_PREFIX.len() + 13);
    }

    #[test]
    fn default_headers_are_masked_whole() {
        let m = masker("");
        for h in [
            "Authorization",
            "proxy-authorization",
            "Cookie",
            "Set-Cookie",
            "X-Api-Key",
        ] {
            let v = m.mask_header(h, "abc123");
            assert!(v.starts_with(TOKEN_PREFIX), "{h}: {v}");
        }
        assert_eq!(m.mask_header("Accept", "text/html"), "text/html");
    }

    #[test]
    fn detectors_find_tokens_jwts_emails_and_cards() {
        let m = masker("");
        for v in [
            "Bearer abc.DEF-123_x",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.sig-nat_ure",
            "contact: jane.doe+tag@example.co.uk",
            "4111 1111 1111 1111",
            "card=4111-1111-1111-1111;",
            "5500005555555559",
        ] {
            assert!(m.value_is_sensitive(v), "{v}");
            assert!(m.mask_value(v).starts_with(TOKEN_PREFIX), "{v}");
        }
        for v in [
            "4111 1111 1111 1112",
            "1234567890123",
            "hello@",
            "order 12345",
            "eyJ",
        ] {
            assert!(!m.value_is_sensitive(v), "{v}");
        }
    }

    #[test]
    fn uri_masks_secret_params_and_sensitive_values_only() {
        let m = masker("[[mask]]\nquery_param = \"sig\"\n");
        let u = m.mask_uri("/a/b?page=2&access_token=xyz&sig=s1&mail=a%40b.com&q=ok");
        assert!(u.contains("page=2"));
        assert!(u.contains("q=ok"));
        assert!(
            !u.contains("xyz") && !u.contains("s1") && !u.contains("a%40b.com"),
            "{u}"
        );
        assert_eq!(m.mask_uri("/plain?x=1"), "/plain?x=1");
        let u = m.mask_uri("/users/jane@example.com/cart");
        assert!(
            !u.contains("jane@example.com") && u.starts_with("/users/"),
            "{u}"
        );
    }

    /// Found by the `mask_record` fuzzer: a query part without `=` (or the name before it) was
    /// written as it was, so `?tok1 1111, Bearer abc.def` or `?alice@example.com` left the agent
    /// unmasked; and content was only checked percent-decoded in values and never decoded in
    /// path segments, so `/users/bob%40example.com` leaked too.
    #[test]
    fn query_names_and_encoded_segments_are_masked_by_content() {
        let m = masker("");
        for (uri, secret) in [
            (
                "/users/bob@example.org/cart?tok1 1111, Bearer abc.def",
                "Bearer abc.def",
            ),
            ("/search?alice@example.com", "alice@example.com"),
            ("/search?alice@example.com=1", "alice@example.com"),
            ("/users/bob%40example.com/cart", "bob%40example.com"),
            ("/q?x=%ff@example.com", "@example.com"),
        ] {
            let masked = m.mask_uri(uri);
            assert!(!masked.contains(secret), "{uri} -> {masked}");
            assert_eq!(
                m.mask_uri_bytes(uri.as_bytes()).as_deref(),
                Some(&*masked),
                "{uri}"
            );
        }
        assert_eq!(m.mask_uri("/a%20b?page=2&q=ok+go"), "/a%20b?page=2&q=ok+go");
        assert_eq!(m.mask_uri_bytes(b"/a%20b?page=2"), None);
    }

    #[test]
    fn json_masks_by_name_path_and_content() {
        let m = masker("[[mask]]\njson_path = \"$.user.ssn\"\n");
        let mut v = serde_json::json!({
            "user": {"ssn": "123-45-6789", "email": "x@y.org", "name": "Jane"},
            "api_key": {"nested": "k"},
            "password": 12345,
            "card": 4111111111111111u64,
            "items": [{"refresh_token": "t1"}],
            "count": 3
        });
        m.mask_json(&mut v);
        let s = v.to_string();
        for secret in [
            "123-45-6789",
            "x@y.org",
            "\"k\"",
            "12345",
            "4111111111111111",
            "t1",
        ] {
            assert!(!s.contains(secret), "{secret} leaked: {s}");
        }
        assert_eq!(v["user"]["name"], "Jane");
        assert_eq!(v["count"], 3);
    }

    #[test]
    fn text_masks_matches_in_place() {
        let m = masker("[[mask]]\nregex = \"SSN-[0-9]+\"\n");
        let t = m.mask_text("user jane@example.com paid with 4111111111111111, ref SSN-99 ok");
        assert!(
            !t.contains("jane@example.com")
                && !t.contains("4111111111111111")
                && !t.contains("SSN-99"),
            "{t}"
        );
        assert!(t.starts_with("user ") && t.ends_with(" ok"), "{t}");
    }

    #[test]
    fn disabled_masks_nothing() {
        let m = Masker::disabled();
        assert_eq!(m.mask_header("Authorization", "Bearer x"), "Bearer x");
        assert_eq!(m.mask_text("a@b.com"), "a@b.com");
        assert!(!m.is_active());
    }

    #[test]
    fn defaults_can_be_turned_off_but_user_rules_stay() {
        let m = masker("[masking]\ndefaults = false\n[[mask]]\nheader = \"x-session\"\n");
        assert_eq!(m.mask_header("Authorization", "Bearer x"), "Bearer x");
        assert!(m.mask_header("X-Session", "abc").starts_with(TOKEN_PREFIX));
    }

    #[test]
    fn percent_encoded_path_segments_are_masked() {
        let m = masker("");
        let u = m.mask_uri("/users/jane%40example.com/cart");
        assert!(!u.contains("jane"), "{u}");
        assert!(
            u.starts_with("/users/[masked:") && u.ends_with("/cart"),
            "{u}"
        );
    }

    #[test]
    fn label_paths_replace_sensitive_segments_with_a_constant() {
        let m = masker("[[mask]]\nregex = \"SSN-[0-9]+\"\n");
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2ln";
        assert_eq!(
            m.mask_label_path(&format!("/reset/{jwt}?x=1")),
            "/reset/{masked}"
        );
        assert_eq!(
            m.mask_label_path("/users/jane@example.com/cart#frag"),
            "/users/{masked}/cart"
        );
        assert_eq!(m.mask_label_path("/users/a%40b.io"), "/users/{masked}");
        assert_eq!(m.mask_label_path("/x/SSN-12/y"), "/x/{masked}/y");
        assert_eq!(
            m.mask_label_path("/api/orders/17?q=a@b.io"),
            "/api/orders/17"
        );
        assert!(matches!(
            m.mask_label_path("/api/tokens/list"),
            Cow::Borrowed("/api/tokens/list")
        ));
        let off = Masker::disabled();
        assert_eq!(off.mask_label_path("/u/a@b.io?x"), "/u/a@b.io");
    }

    /// What masking labels costs per exchange on the replay path: an endpoint namer with a
    /// masker against one without, on ordinary paths (known labels). Run with
    /// `cargo test --release -p parity-agent --no-default-features --lib label_path_cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "benchmark; run with --ignored --nocapture in release mode"]
    fn label_path_cost() {
        use crate::compare::EndpointNamer;
        let m = std::sync::Arc::new(masker(""));
        let paths = [
            "/api/v1/users/12345/cart",
            "/api/orders/17?include=items&page=2",
            "/static/app.3f2a9c.js",
            "/health",
        ];
        let n = 2_000_000;
        let run = |namer: &mut EndpointNamer| {
            let t = std::time::Instant::now();
            let mut total = 0usize;
            for i in 0..n {
                total += namer.name("GET", paths[i % paths.len()]).len();
            }
            (t.elapsed().as_nanos() as f64 / n as f64, total)
        };
        for round in 0..3 {
            let (plain, a) = run(&mut EndpointNamer::new(&[], 200));
            let (masked, b) = run(&mut EndpointNamer::new(&[], 200).with_masker(m.clone()));
            assert_eq!(a, b);
            let t = std::time::Instant::now();
            let mut k = 0;
            for i in 0..n / 10 {
                k += m.mask_label_path(paths[i % paths.len()]).len();
            }
            let raw = t.elapsed().as_nanos() as f64 / (n / 10) as f64;
            eprintln!(
                "round {round}: EndpointNamer::name {plain:.0} ns, with a masker {masked:.0} ns; mask_label_path alone {raw:.0} ns ({k})"
            );
        }
    }

    #[test]
    fn assignments_of_secret_names_are_masked_in_text() {
        let m = masker("");
        let t = m.mask_text("user=jane&password=hunter2&next=/home");
        assert!(
            !t.contains("hunter2") && t.contains("user=jane&password=[masked:"),
            "{t}"
        );
        assert!(t.ends_with("&next=/home"), "{t}");
        let t = m.mask_text(r#"{"api_key": "k 1 2", 'client_secret': 'abc', x_token: zz}"#);
        assert!(
            !t.contains("k 1 2") && !t.contains("abc") && !t.contains("zz"),
            "{t}"
        );
        assert!(t.starts_with(r#"{"api_key": "[masked:"#), "{t}");
        assert_eq!(m.mask_text(&t), t, "masking twice changes nothing");
        assert!(m.value_is_sensitive("session_token=abc"));
        assert!(!m.value_is_sensitive("tokens"));
    }

    #[test]
    fn sensitive_member_names_are_masked_in_json() {
        let m = masker("");
        let mut v = serde_json::json!({"users": {"jane@example.com": {"age": 3}}});
        m.mask_json(&mut v);
        let s = v.to_string();
        assert!(!s.contains("jane"), "{s}");
        assert!(s.contains("\"age\":3"), "{s}");
    }

    #[test]
    fn locations_mask_sensitive_member_names() {
        let m = masker("");
        let p = m.mask_location("$.users['jane@example.com'].age");
        assert!(
            !p.contains("jane") && p.starts_with("$.users['[masked:"),
            "{p}"
        );
        assert!(p.ends_with("'].age"), "{p}");
        assert!(location_steps(&p).is_some(), "still a location: {p}");
        assert_eq!(
            m.label_location("$.users['jane@example.com'].age"),
            "$.users['{masked}'].age"
        );
        assert!(matches!(
            m.mask_location("$.items[2].price"),
            Cow::Borrowed(_)
        ));
        assert_eq!(m.mask_location("header:x-a"), "header:x-a");
        // A broken location that may hold a secret is replaced whole.
        assert!(m
            .mask_location("$.a['jane@example.com'")
            .starts_with(TOKEN_PREFIX));
        assert_eq!(m.mask_location("$.a["), "$.a[");
    }

    #[test]
    fn difference_values_are_masked_by_location_and_content() {
        let m = masker("[[mask]]\njson_path = \"$.user.ssn\"\n");
        let tok = |v: &str| m.token(v.as_bytes());
        // A harmless-looking value under a secret-looking member name, masked as the same
        // value is in the stored body (a string stays a string).
        let quoted = |v: &str| format!("\"{}\"", tok(v));
        assert_eq!(m.mask_difference("$.password", "\"abc\""), quoted("abc"));
        assert_eq!(
            m.mask_difference("$.auth.refresh_token", "42"),
            quoted("42")
        );
        assert_eq!(m.mask_difference("$.user.ssn", "\"1\""), quoted("1"));
        assert_eq!(m.mask_difference("$.password", "null"), tok("null"));
        assert_eq!(m.mask_difference("$.password", "\"cut…"), tok("\"cut…"));
        // Content detectors.
        for (path, v, secret) in [
            ("$.email", "\"jane@example.com\"", "jane"),
            ("$.card", "4111111111111111", "4111"),
            ("$.note", "\"Bearer abc.def\"", "abc.def"),
        ] {
            let out = m.mask_difference(path, v);
            assert!(out.contains(TOKEN_PREFIX) && !out.contains(secret), "{out}");
        }
        // Objects are masked structurally; the rest stays readable and exact.
        let o = m.mask_difference("$.user", r#"{"name":"Jane","ssn":"123","password":"x"}"#);
        assert!(
            !o.contains("123") && !o.contains("\"x\"") && o.contains("Jane"),
            "{o}"
        );
        assert!(matches!(
            m.mask_difference("$.tax", "1.50"),
            Cow::Borrowed("1.50")
        ));
        // A shortened object that could hide a secret member is masked whole.
        let cut = r#"{"a":1,"password":"hunt…"#;
        assert_eq!(m.mask_difference("$.x", cut), tok(cut));
        assert_eq!(
            m.mask_difference("$.x", r#"{"a":1,"b":2…"#),
            r#"{"a":1,"b":2…"#
        );
        // Headers by name, text by content.
        assert!(m
            .mask_difference("header:set-cookie", "sid=1")
            .starts_with(TOKEN_PREFIX));
        let t = m.mask_difference("body", "@@ -1,1 @@\n-mail a@b.io");
        assert!(!t.contains("a@b.io"), "{t}");
        assert_eq!(m.mask_difference("status", "200"), "200");
        assert_eq!(Masker::disabled().mask_difference("$.password", "x"), "x");
    }

    #[test]
    fn key_file_is_created_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/parity.key");
        let k1 = load_or_create_key(&p).unwrap();
        let k2 = load_or_create_key(&p).unwrap();
        assert_eq!(k1, k2);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::write(&p, b"short").unwrap();
        assert!(matches!(
            load_or_create_key(&p),
            Err(KeyError::BadLength { len: 5, .. })
        ));
    }

    /// Found by the `mask_record` fuzzer: text masked by `mask_text` was still judged sensitive
    /// by `value_is_sensitive`, because an assignment whose value is already a mask token
    /// (`token=[masked:…]`, which `mask_text` leaves as it is) counted as a secret. Masked
    /// output was not clean by the masker's own judgement, and a value holding it (a JSON
    /// string, a header) was masked a second time, whole.
    #[test]
    fn masked_assignments_are_not_sensitive_again() {
        let m = Masker::new(&Config::default(), [1; 32], true);
        let fuzzed = "mail alice@example?token=s4c110&x=%61lice%-0example.com";
        let t = m.mask_text(fuzzed);
        assert!(t.contains("token=[masked:") && !t.contains("s4c110"), "{t}");
        assert!(!m.value_is_sensitive(&t), "{t}");
        assert_eq!(m.mask_value(&t), t, "masking is idempotent");
        let t = m.mask_text("password=hunter2; api_key='k' secret=\"s\"");
        assert!(!m.value_is_sensitive(&t), "{t}");
        // A real value beside a masked one is still found.
        assert!(m.value_is_sensitive("token=[masked:0123456789ab] password=hunter2"));
        assert!(m.value_is_sensitive("password=hunter2"));
    }
}
