//! The configuration file: one TOML document, parsed in two steps (raw → validated).
//!
//! [`RawConfig`] mirrors the file exactly (unknown keys are refused by serde); [`Config::parse`]
//! then checks what serde cannot (addresses, JSON paths, a server used as both primary and mirror,
//! duplicate pair names, ranges) and reports the key and line of the first problem. Every key and
//! default is documented in README's configuration reference; the defaults live here, in the
//! `Default` impls, and nowhere else.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::compare::path::JsonPath;
use crate::units::{ByteSize, Dur};

/// A configuration problem: where it is and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key, or a value of the wrong type.
    #[error("{file}: {message}")]
    Syntax {
        /// The file (or `<inline>`).
        file: String,
        /// toml's message, which names the key and shows the line.
        message: String,
    },
    /// A value that parses but is not acceptable.
    #[error("{file}:{line}: {key}: {message}")]
    Invalid {
        /// The file (or `<inline>`).
        file: String,
        /// 1-based line of the offending value (0 when unknown).
        line: usize,
        /// The key, e.g. `pair[1].rule[0].path`.
        key: String,
        /// What is wrong and what to write instead.
        message: String,
    },
}

/// Which kernel hook live capture attaches to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    /// TC classifier on clsact ingress and egress of named interfaces.
    #[default]
    Tc,
    /// cgroup_skb ingress and egress on a cgroup v2 directory.
    Cgroup,
}

/// `[capture]` as written.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCapture {
    /// Attach kind.
    pub engine: Engine,
    /// Interfaces for the `tc` engine.
    pub interfaces: Vec<String>,
    /// cgroup v2 directory for the `cgroup` engine; `None` means the host's cgroup v2 root.
    pub cgroup: Option<PathBuf>,
    /// Server addresses to capture (`ip:port`, `[v6]:port`, or `:port` for any address).
    pub targets: Vec<Spanned<String>>,
}

impl Default for RawCapture {
    fn default() -> Self {
        RawCapture {
            engine: Engine::Tc,
            interfaces: vec!["lo".to_string()],
            cgroup: None,
            targets: Vec::new(),
        }
    }
}

/// `[limits]`: every buffer, table and queue bound. Shared by `replay` and `run`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Memory of all flows together: per-flow state, out-of-order bytes, partial HTTP heads and
    /// kept bodies. Above it the least recently active flow is evicted.
    pub flow_memory: ByteSize,
    /// Out-of-order bytes buffered per flow direction before a gap is declared.
    pub ooo_bytes_per_flow: ByteSize,
    /// A flow with no segment for this long is closed.
    pub idle_timeout: Dur,
    /// A hole in a stream that later bytes have been waiting behind for this long (capture time) is
    /// declared a gap and the stream continues after it. Live capture never sees a lost record
    /// retransmitted, so this bounds how long loss stays invisible; replay rarely needs more than
    /// the reordering window of the capture point.
    pub gap_timeout: Dur,
    /// Longest request or response head (request line + headers).
    pub max_header_bytes: ByteSize,
    /// Decoded body bytes kept per message for comparison; length and hash cover the whole body.
    pub max_body_bytes: ByteSize,
    /// Largest decoded output of one content-encoded body; beyond it decoding stops (`decode_error`).
    pub max_decoded_bytes: ByteSize,
    /// Requests waiting for their response on one connection (pipelining depth).
    pub max_pending_requests: usize,
    /// Size of the eBPF ring buffer (live capture), rounded up to a power of two pages.
    pub ring_buffer_bytes: ByteSize,
    /// Exchanges waiting for their counterpart, all pairs together.
    pub pending_pairs: usize,
    /// Memory of the exchanges waiting for their counterpart.
    pub pending_memory: ByteSize,
    /// Pairs waiting for comparison.
    pub compare_queue: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            flow_memory: ByteSize::mib(256),
            ooo_bytes_per_flow: ByteSize::mib(1),
            idle_timeout: Dur::secs(60),
            gap_timeout: Dur::secs(2),
            max_header_bytes: ByteSize::kib(64),
            max_body_bytes: ByteSize::mib(1),
            max_decoded_bytes: ByteSize::mib(64),
            max_pending_requests: 1000,
            ring_buffer_bytes: ByteSize::mib(64),
            pending_pairs: 100_000,
            pending_memory: ByteSize::mib(256),
            compare_queue: 4096,
        }
    }
}

/// `[server]` as written.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Listen address of `/metrics`, `/healthz`, `/readyz`, `/api/*` and `/ui`.
    pub listen: Spanned<String>,
    /// Bearer token for `/api/*` (also `PARITY_API_TOKEN`); required when `listen` is not loopback.
    pub token: Option<String>,
}

/// One or several strings.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single string.
    One(String),
    /// A list of strings.
    Many(Vec<String>),
}

impl OneOrMany {
    fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// What a tolerance rule does to the values its path matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The value is not compared (nor is its presence).
    Ignore,
    /// Arrays are compared as multisets: each element matched to its closest counterpart.
    Unordered,
    /// Numbers are equal within `absolute` / `relative` tolerance.
    Numeric,
    /// The value must be present on both sides with the same JSON type; its value is not compared.
    Present,
}

/// `[[pair.rule]]` as written.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// JSON path pattern.
    pub path: Spanned<String>,
    /// What to do with matching values.
    pub action: Action,
    /// Relative tolerance for `numeric`.
    pub relative: Option<f64>,
    /// Absolute tolerance for `numeric`.
    pub absolute: Option<f64>,
    /// Restrict the rule to one endpoint (`METHOD /template`).
    pub endpoint: Option<String>,
}

/// `[[pair]]` as written.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPair {
    /// Name used in metrics, reports and the UI.
    pub name: Spanned<String>,
    /// Server address(es) of the primary.
    pub primary: Spanned<OneOrMany>,
    /// Server address(es) of the mirror.
    pub mirror: Spanned<OneOrMany>,
    /// Header carrying the correlation id.
    #[serde(default = "default_correlation_header")]
    pub correlation_header: String,
    /// How long one side waits for the other.
    #[serde(default = "default_match_timeout")]
    pub match_timeout: Dur,
    /// Fraction of correlation ids compared.
    #[serde(default = "default_sample")]
    pub sample: Spanned<f64>,
    /// Response headers not compared (case-insensitive).
    #[serde(default)]
    pub ignore_headers: Vec<String>,
    /// Also compare `Content-Length`, `Transfer-Encoding` and `Content-Encoding`.
    #[serde(default)]
    pub compare_representation_headers: bool,
    /// Explicit endpoint templates, e.g. `GET /api/v1/users/{name}/cart`.
    #[serde(default)]
    pub endpoints: Vec<Spanned<String>>,
    /// Endpoint labels per pair; the rest are `other`.
    #[serde(default = "default_max_endpoints")]
    pub max_endpoints: usize,
    /// `1` and `1.0` differ (kind `type`).
    #[serde(default)]
    pub strict_number_types: bool,
    /// A mirror p50 latency above this multiple of the primary's is a latency regression.
    #[serde(default = "default_latency_ratio")]
    pub latency_regression_ratio: f64,
    /// ... and at least this much slower in absolute terms.
    #[serde(default = "default_latency_min")]
    pub latency_regression_min: Dur,
    /// Tolerance rules.
    #[serde(default, rename = "rule")]
    pub rules: Vec<RawRule>,
}

fn default_correlation_header() -> String {
    "x-request-id".to_string()
}
fn default_match_timeout() -> Dur {
    Dur::secs(5)
}
fn default_sample() -> Spanned<f64> {
    Spanned::new(0..0, 1.0)
}
fn default_max_endpoints() -> usize {
    200
}
fn default_latency_ratio() -> f64 {
    1.5
}
fn default_latency_min() -> Dur {
    Dur(std::time::Duration::from_millis(1))
}

/// `[store]` as written.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// SQLite database file.
    pub path: PathBuf,
    /// Records older than this are deleted.
    pub retention: Dur,
    /// Database plus WAL larger than this: the oldest records are deleted.
    pub max_size: ByteSize,
    /// Fraction of matched pairs stored for contrast.
    pub keep_matched: f64,
    /// Records written per transaction.
    pub batch: usize,
    /// Records waiting to be written; beyond it they are dropped and counted.
    pub queue: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from("parity.db"),
            retention: Dur::secs(7 * 86400),
            max_size: ByteSize::gib(1),
            keep_matched: 0.0,
            batch: 256,
            queue: 10_000,
        }
    }
}

/// `[masking]`: global switches for masking.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaskingConfig {
    /// Mask everything that leaves the agent (`--unmasked` turns it off for one run).
    pub enabled: bool,
    /// Apply the built-in rules (credentials headers, secret-looking names, tokens, e-mails,
    /// card numbers) in addition to `[[mask]]` entries.
    pub defaults: bool,
    /// File holding the masking key; default: `parity.key` beside the store, or in the working
    /// directory without a store.
    pub key_file: Option<PathBuf>,
}

impl Default for MaskingConfig {
    fn default() -> Self {
        MaskingConfig {
            enabled: true,
            defaults: true,
            key_file: None,
        }
    }
}

/// `[[mask]]`: one additional masking rule; exactly one of the keys.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MaskRule {
    /// Mask the value of this header (case-insensitive).
    Header(String),
    /// Mask JSON body values at this path.
    JsonPath(String),
    /// Mask the value of this query parameter.
    QueryParam(String),
    /// Mask every match of this regular expression, in any value.
    Regex(String),
}

/// The file as written.
#[derive(Clone, Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[capture]`
    #[serde(default)]
    pub capture: RawCapture,
    /// `[limits]`
    #[serde(default)]
    pub limits: Limits,
    /// `[server]`
    pub server: Option<RawServer>,
    /// `[[pair]]`
    #[serde(default, rename = "pair")]
    pub pairs: Vec<RawPair>,
    /// `[store]`
    pub store: Option<StoreConfig>,
    /// `[masking]`
    #[serde(default)]
    pub masking: MaskingConfig,
    /// `[[mask]]`
    #[serde(default, rename = "mask")]
    pub masks: Vec<Spanned<MaskRule>>,
}

/// A server address a target or pair names: an exact socket address or any address on a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServerAddr {
    /// `ip:port`.
    Exact(SocketAddr),
    /// `:port`: any address.
    Port(u16),
}

impl ServerAddr {
    /// Parse `ip:port`, `[v6]:port` or `:port`.
    pub fn parse(s: &str) -> Result<ServerAddr, String> {
        let t = s.trim();
        if let Some(port) = t.strip_prefix(':') {
            return port
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .map(ServerAddr::Port)
                .ok_or_else(|| format!("{s:?}: `:port` needs a port from 1 to 65535"));
        }
        match t.parse::<SocketAddr>() {
            Ok(a) if a.port() != 0 => Ok(ServerAddr::Exact(a)),
            Ok(_) => Err(format!("{s:?}: port 0 is not a server port")),
            Err(_) => Err(format!(
                "{s:?} is not a server address: write ip:port (127.0.0.1:8080), [v6]:port ([::1]:8080) or :port (:8080); host names are not resolved"
            )),
        }
    }

    /// Does `addr` fall under this target?
    pub fn covers(&self, addr: &SocketAddr) -> bool {
        match self {
            ServerAddr::Exact(a) => a == addr || same_v4_mapped(a, addr),
            ServerAddr::Port(p) => addr.port() == *p,
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        match self {
            ServerAddr::Exact(a) => a.port(),
            ServerAddr::Port(p) => *p,
        }
    }
}

fn same_v4_mapped(a: &SocketAddr, b: &SocketAddr) -> bool {
    fn v4(ip: IpAddr) -> Option<std::net::Ipv4Addr> {
        match ip {
            IpAddr::V4(v) => Some(v),
            IpAddr::V6(v) => v.to_ipv4_mapped(),
        }
    }
    a.port() == b.port() && v4(a.ip()).is_some() && v4(a.ip()) == v4(b.ip())
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerAddr::Exact(a) => write!(f, "{a}"),
            ServerAddr::Port(p) => write!(f, ":{p}"),
        }
    }
}

/// A validated tolerance rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// Where it applies.
    pub path: JsonPath,
    /// What it does.
    pub action: Action,
    /// Relative tolerance (`numeric`), 0 when unset.
    pub relative: f64,
    /// Absolute tolerance (`numeric`), 0 when unset.
    pub absolute: f64,
    /// Only on this endpoint, when set.
    pub endpoint: Option<String>,
    /// Position in the file, the last tie-breaker of specificity.
    pub order: usize,
}

/// A validated pair.
#[derive(Clone, Debug, PartialEq)]
pub struct PairConfig {
    /// Name.
    pub name: String,
    /// Primary server addresses.
    pub primary: Vec<ServerAddr>,
    /// Mirror server addresses.
    pub mirror: Vec<ServerAddr>,
    /// Correlation header, lower-case.
    pub correlation_header: String,
    /// Pairing window.
    pub match_timeout: Dur,
    /// Sampled fraction in [0, 1].
    pub sample: f64,
    /// Ignored response headers, lower-case.
    pub ignore_headers: Vec<String>,
    /// Report `Content-Length`, `Transfer-Encoding`, `Content-Encoding` differences.
    pub compare_representation_headers: bool,
    /// Explicit endpoint templates.
    pub endpoints: Vec<String>,
    /// Endpoint label cap.
    pub max_endpoints: usize,
    /// `1` differs from `1.0`.
    pub strict_number_types: bool,
    /// Latency regression ratio.
    pub latency_regression_ratio: f64,
    /// Latency regression minimum difference.
    pub latency_regression_min: Dur,
    /// Rules, most specific first.
    pub rules: Vec<Rule>,
}

/// A validated `[server]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Bearer token for `/api/*`, from the file or `PARITY_API_TOKEN`.
    pub token: Option<String>,
}

/// A validated `[capture]`.
#[derive(Clone, Debug, PartialEq)]
pub struct CaptureConfig {
    /// Attach kind.
    pub engine: Engine,
    /// Interfaces (tc).
    pub interfaces: Vec<String>,
    /// cgroup directory (cgroup); `None`: the host's cgroup v2 root.
    pub cgroup: Option<PathBuf>,
    /// Explicit targets plus every pair's addresses, deduplicated.
    pub targets: Vec<ServerAddr>,
}

/// The validated configuration every command uses.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where it came from (for messages), `<default>` when no file was given.
    pub source: String,
    /// `[capture]`.
    pub capture: CaptureConfig,
    /// `[limits]`.
    pub limits: Limits,
    /// `[server]`.
    pub server: Option<ServerConfig>,
    /// `[[pair]]`.
    pub pairs: Vec<PairConfig>,
    /// `[store]`.
    pub store: Option<StoreConfig>,
    /// `[masking]`.
    pub masking: MaskingConfig,
    /// `[[mask]]`.
    pub masks: Vec<MaskRule>,
}

impl Default for Config {
    fn default() -> Self {
        Config::from_raw(RawConfig::default(), "<default>", "")
            .unwrap_or_else(|_| unreachable!("the default configuration is valid"))
    }
}

impl Config {
    /// Read and validate a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parse and validate configuration text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            file: file.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        Config::from_raw(raw, file, text)
    }

    fn from_raw(raw: RawConfig, file: &str, text: &str) -> Result<Config, ConfigError> {
        let invalid = |span: Option<std::ops::Range<usize>>, key: String, message: String| {
            ConfigError::Invalid {
                file: file.to_string(),
                line: span.map(|s| line_of(text, s.start)).unwrap_or(0),
                key,
                message,
            }
        };
        let l = &raw.limits;
        for (key, v) in [
            ("limits.flow_memory", l.flow_memory.0),
            ("limits.ooo_bytes_per_flow", l.ooo_bytes_per_flow.0),
            ("limits.max_header_bytes", l.max_header_bytes.0),
            ("limits.max_decoded_bytes", l.max_decoded_bytes.0),
            ("limits.ring_buffer_bytes", l.ring_buffer_bytes.0),
            ("limits.pending_memory", l.pending_memory.0),
            ("limits.pending_pairs", l.pending_pairs as u64),
            ("limits.compare_queue", l.compare_queue as u64),
            ("limits.max_pending_requests", l.max_pending_requests as u64),
        ] {
            if v == 0 {
                return Err(invalid(
                    find_key(text, key),
                    key.to_string(),
                    "must be greater than zero".to_string(),
                ));
            }
        }
        for (key, d) in [
            ("limits.idle_timeout", l.idle_timeout),
            ("limits.gap_timeout", l.gap_timeout),
        ] {
            if d.0.is_zero() {
                return Err(invalid(
                    find_key(text, key),
                    key.into(),
                    "must be greater than zero".into(),
                ));
            }
        }
        if l.ring_buffer_bytes.0 > (1 << 31) {
            return Err(invalid(
                find_key(text, "limits.ring_buffer_bytes"),
                "limits.ring_buffer_bytes".into(),
                "at most 2GiB (a kernel limit of ring buffers)".into(),
            ));
        }

        let mut targets = Vec::new();
        for (i, t) in raw.capture.targets.iter().enumerate() {
            let a = ServerAddr::parse(t.get_ref())
                .map_err(|m| invalid(Some(t.span()), format!("capture.targets[{i}]"), m))?;
            if !targets.contains(&a) {
                targets.push(a);
            }
        }
        if raw.capture.engine == Engine::Tc && raw.capture.interfaces.is_empty() {
            return Err(invalid(
                find_key(text, "capture.interfaces"),
                "capture.interfaces".into(),
                "the tc engine needs at least one interface (e.g. [\"lo\"])".into(),
            ));
        }

        let server = match &raw.server {
            None => None,
            Some(s) => {
                let listen: SocketAddr = s.listen.get_ref().parse().map_err(|_| {
                    invalid(
                        Some(s.listen.span()),
                        "server.listen".into(),
                        format!(
                            "{:?} is not a listen address: write ip:port, e.g. \"127.0.0.1:9464\"",
                            s.listen.get_ref()
                        ),
                    )
                })?;
                let token = s.token.clone().filter(|t| !t.is_empty()).or_else(|| {
                    std::env::var("PARITY_API_TOKEN")
                        .ok()
                        .filter(|t| !t.is_empty())
                });
                Some(ServerConfig { listen, token })
            }
        };

        let mut pairs: Vec<PairConfig> = Vec::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        // Every address with the pair and role that claimed it first.
        let mut claimed: Vec<(ServerAddr, String, &'static str)> = Vec::new();
        for (pi, p) in raw.pairs.iter().enumerate() {
            let key = |k: &str| format!("pair[{pi}].{k}");
            let name = p.name.get_ref().trim().to_string();
            if name.is_empty() {
                return Err(invalid(
                    Some(p.name.span()),
                    key("name"),
                    "must not be empty".into(),
                ));
            }
            if let Some(first) = names.insert(name.clone(), pi) {
                return Err(invalid(
                    Some(p.name.span()),
                    key("name"),
                    format!(
                        "pair name {name:?} is already used by pair[{first}]; names must be unique"
                    ),
                ));
            }
            let mut roles = Vec::new();
            for (role, field) in [("primary", &p.primary), ("mirror", &p.mirror)] {
                let list = field.get_ref().to_vec();
                if list.is_empty() {
                    return Err(invalid(
                        Some(field.span()),
                        key(role),
                        "needs at least one server address".into(),
                    ));
                }
                let mut addrs = Vec::new();
                for a in &list {
                    let a = ServerAddr::parse(a)
                        .map_err(|m| invalid(Some(field.span()), key(role), m))?;
                    for (other, other_pair, other_role) in &claimed {
                        if overlaps(other, &a) {
                            let what = if *other_role == role && *other_pair == name {
                                "is listed twice".to_string()
                            } else if *other_role == role {
                                format!("is already the {other_role} of pair {other_pair:?}; an address belongs to one pair")
                            } else {
                                format!(
                                    "is already the {other_role} of pair {other_pair:?}; an address cannot be both a primary and a mirror"
                                )
                            };
                            return Err(invalid(
                                Some(field.span()),
                                key(role),
                                format!("{a} {what}"),
                            ));
                        }
                    }
                    claimed.push((a, name.clone(), role));
                    addrs.push(a);
                    if !targets.contains(&a) {
                        targets.push(a);
                    }
                }
                roles.push(addrs);
            }
            let mirror = roles.pop().unwrap_or_default();
            let primary = roles.pop().unwrap_or_default();

            let correlation_header = p.correlation_header.trim().to_ascii_lowercase();
            if correlation_header.is_empty() || !correlation_header.bytes().all(is_token_byte) {
                return Err(invalid(
                    find_in_table(text, "pair", pi, "correlation_header").or(Some(p.name.span())),
                    key("correlation_header"),
                    format!("{:?} is not a header name", p.correlation_header),
                ));
            }
            let sample = *p.sample.get_ref();
            if !(0.0..=1.0).contains(&sample) {
                return Err(invalid(
                    Some(p.sample.span()),
                    key("sample"),
                    format!("{sample} is not a fraction: write a number from 0.0 to 1.0"),
                ));
            }
            if p.match_timeout.0.is_zero() {
                return Err(invalid(
                    find_in_table(text, "pair", pi, "match_timeout").or(Some(p.name.span())),
                    key("match_timeout"),
                    "must be greater than zero".into(),
                ));
            }
            if p.max_endpoints == 0 {
                return Err(invalid(
                    find_in_table(text, "pair", pi, "max_endpoints").or(Some(p.name.span())),
                    key("max_endpoints"),
                    "must be at least 1".into(),
                ));
            }
            if p.latency_regression_ratio.is_nan() || p.latency_regression_ratio < 1.0 {
                return Err(invalid(
                    find_in_table(text, "pair", pi, "latency_regression_ratio")
                        .or(Some(p.name.span())),
                    key("latency_regression_ratio"),
                    "must be a number of at least 1.0".into(),
                ));
            }
            let mut endpoints = Vec::new();
            for (ei, e) in p.endpoints.iter().enumerate() {
                let t = e.get_ref().trim();
                let ok = t.split_once(' ').is_some_and(|(m, path)| {
                    !m.is_empty() && m.bytes().all(is_token_byte) && path.starts_with('/')
                });
                if !ok {
                    return Err(invalid(
                        Some(e.span()),
                        format!("pair[{pi}].endpoints[{ei}]"),
                        format!("{t:?} is not an endpoint template: write METHOD /path, with {{name}} for a variable segment"),
                    ));
                }
                endpoints.push(t.to_string());
            }
            let mut rules = Vec::new();
            for (ri, r) in p.rules.iter().enumerate() {
                let rkey = |k: &str| format!("pair[{pi}].rule[{ri}].{k}");
                let path = JsonPath::parse(r.path.get_ref())
                    .map_err(|e| invalid(Some(r.path.span()), rkey("path"), e.to_string()))?;
                let (relative, absolute) = (r.relative.unwrap_or(0.0), r.absolute.unwrap_or(0.0));
                if r.action == Action::Numeric {
                    if r.relative.is_none() && r.absolute.is_none() {
                        return Err(invalid(
                            Some(r.path.span()),
                            rkey("action"),
                            "a numeric rule needs `relative`, `absolute` or both".into(),
                        ));
                    }
                    if !(relative >= 0.0
                        && relative.is_finite()
                        && absolute >= 0.0
                        && absolute.is_finite())
                    {
                        return Err(invalid(
                            Some(r.path.span()),
                            rkey("relative"),
                            "tolerances must be finite and not negative".into(),
                        ));
                    }
                } else if r.relative.is_some() || r.absolute.is_some() {
                    return Err(invalid(
                        Some(r.path.span()),
                        rkey("action"),
                        "`relative` and `absolute` only apply to action = \"numeric\"".into(),
                    ));
                }
                rules.push(Rule {
                    path,
                    action: r.action,
                    relative,
                    absolute,
                    endpoint: r.endpoint.as_ref().map(|e| e.trim().to_string()),
                    order: ri,
                });
            }
            rules.sort_by(|a, b| {
                a.path
                    .specificity()
                    .cmp(&b.path.specificity())
                    .then(a.order.cmp(&b.order))
            });
            pairs.push(PairConfig {
                name,
                primary,
                mirror,
                correlation_header,
                match_timeout: p.match_timeout,
                sample,
                ignore_headers: p
                    .ignore_headers
                    .iter()
                    .map(|h| h.trim().to_ascii_lowercase())
                    .collect(),
                compare_representation_headers: p.compare_representation_headers,
                endpoints,
                max_endpoints: p.max_endpoints,
                strict_number_types: p.strict_number_types,
                latency_regression_ratio: p.latency_regression_ratio,
                latency_regression_min: p.latency_regression_min,
                rules,
            });
        }

        if let Some(s) = &raw.store {
            if !(0.0..=1.0).contains(&s.keep_matched) {
                return Err(invalid(
                    find_key(text, "store.keep_matched"),
                    "store.keep_matched".into(),
                    "must be a fraction from 0.0 to 1.0".into(),
                ));
            }
            for (key, v) in [("store.batch", s.batch), ("store.queue", s.queue)] {
                if v == 0 {
                    return Err(invalid(
                        find_key(text, key),
                        key.into(),
                        "must be greater than zero".into(),
                    ));
                }
            }
        }

        let mut masks = Vec::new();
        for (mi, m) in raw.masks.iter().enumerate() {
            let err = |msg: String| invalid(Some(m.span()), format!("mask[{mi}]"), msg);
            match m.get_ref() {
                MaskRule::Regex(r) => {
                    regex::Regex::new(r).map_err(|e| err(format!("bad regex: {e}")))?;
                }
                MaskRule::JsonPath(p) => {
                    JsonPath::parse(p).map_err(|e| err(e.to_string()))?;
                }
                MaskRule::Header(h) | MaskRule::QueryParam(h) if h.trim().is_empty() => {
                    return Err(err("the name must not be empty".into()));
                }
                _ => {}
            }
            masks.push(m.get_ref().clone());
        }

        Ok(Config {
            source: file.to_string(),
            capture: CaptureConfig {
                engine: raw.capture.engine,
                interfaces: raw.capture.interfaces,
                cgroup: raw.capture.cgroup,
                targets,
            },
            limits: raw.limits,
            server,
            pairs,
            store: raw.store,
            masking: raw.masking,
            masks,
        })
    }
}

fn overlaps(a: &ServerAddr, b: &ServerAddr) -> bool {
    match (a, b) {
        (ServerAddr::Exact(x), ServerAddr::Exact(y)) => x == y || same_v4_mapped(x, y),
        _ => a.port() == b.port(),
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Best-effort location of `table.key` (a key written directly under the `[table]` header) in
/// the text, for errors about values that carry no span.
fn find_key(text: &str, dotted: &str) -> Option<std::ops::Range<usize>> {
    let (table, key) = dotted.rsplit_once('.')?;
    find_in_table(text, table, 0, key)
}

/// Best-effort location of `key` written directly under the `index`-th header named `table`
/// (`[table]`, or the `index`-th `[[table]]` of an array of tables): not under another table,
/// nor under a sub-table such as `[[pair.rule]]`.
fn find_in_table(
    text: &str,
    table: &str,
    index: usize,
    key: &str,
) -> Option<std::ops::Range<usize>> {
    let mut offset = 0;
    let mut seen = 0;
    let mut inside = false;
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        if let Some(name) = table_header(t) {
            inside = name == table && {
                seen += 1;
                seen == index + 1
            };
        } else if inside && t.starts_with(key) && t[key.len()..].trim_start().starts_with('=') {
            return Some(offset..offset + line.len());
        }
        offset += line.len();
    }
    None
}

/// The name of a table header line (`[name]` or `[[name]]`, then an optional comment).
fn table_header(line: &str) -> Option<&str> {
    let t = line.split('#').next()?.trim_end();
    let inner = t
        .strip_prefix("[[")
        .and_then(|s| s.strip_suffix("]]"))
        .or_else(|| t.strip_prefix('[').and_then(|s| s.strip_suffix(']')))?
        .trim();
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"_-.".contains(&b);
    (!inner.is_empty() && inner.bytes().all(plain)).then_some(inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUE_EXAMPLE: &str = r#"
[capture]
engine = "tc"
interfaces = ["lo"]
cgroup = "/sys/fs/cgroup/unified"
targets = ["127.0.0.1:8080", ":9090"]

[limits]
ring_buffer_bytes = "64MiB"

[server]
listen = "127.0.0.1:9464"

[[pair]]
name = "checkout"
primary = "127.0.0.1:8080"
mirror  = "127.0.0.1:9090"
correlation_header = "x-request-id"
match_timeout = "5s"
sample = 1.0
ignore_headers = ["date", "server"]
endpoints = ["GET /api/v1/users/{name}/cart"]
max_endpoints = 200

[[pair.rule]]
path = "$.meta.generated_at"
action = "ignore"

[[pair.rule]]
path = "$.items"
action = "unordered"

[[pair.rule]]
path = "$.total"
action = "numeric"
relative = 0.001
absolute = 0.0
endpoint = "GET /api/orders"
"#;

    #[test]
    fn the_documented_example_parses() {
        let c = Config::parse(ISSUE_EXAMPLE, "example.toml").unwrap();
        assert_eq!(c.pairs.len(), 1);
        let p = &c.pairs[0];
        assert_eq!(p.name, "checkout");
        assert_eq!(p.rules.len(), 3);
        assert_eq!(p.ignore_headers, ["date", "server"]);
        assert_eq!(c.limits.ring_buffer_bytes, ByteSize::mib(64));
        assert_eq!(c.server.as_ref().map(|s| s.listen.port()), Some(9464));
        // Explicit targets plus the pair's primary; :9090 already covers the mirror's port
        // but the exact address is still listed once.
        assert!(c.capture.targets.contains(&ServerAddr::Port(9090)));
        assert!(c
            .capture
            .targets
            .contains(&ServerAddr::Exact("127.0.0.1:8080".parse().unwrap())));
    }

    #[test]
    fn empty_file_gives_documented_defaults() {
        let c = Config::parse("", "empty.toml").unwrap();
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.capture.engine, Engine::Tc);
        assert_eq!(c.capture.interfaces, ["lo"]);
        assert!(c.masking.enabled);
        assert!(c.pairs.is_empty());
    }

    fn invalid(text: &str) -> (usize, String, String) {
        match Config::parse(text, "t.toml") {
            Err(ConfigError::Invalid {
                line, key, message, ..
            }) => (line, key, message),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let e = Config::parse("[limits]\nflow_memroy = \"1MiB\"\n", "t.toml").unwrap_err();
        let s = e.to_string();
        assert!(s.contains("flow_memroy"), "{s}");
        assert!(s.contains("line 2"), "{s}");
    }

    #[test]
    fn address_as_primary_and_mirror_is_refused_with_its_line() {
        let text = "[[pair]]\nname = \"a\"\nprimary = \"127.0.0.1:80\"\nmirror = \"127.0.0.1:81\"\n\n[[pair]]\nname = \"b\"\nprimary = \"127.0.0.1:81\"\nmirror = \"127.0.0.1:82\"\n";
        let (line, key, msg) = invalid(text);
        assert_eq!((line, key.as_str()), (8, "pair[1].primary"));
        assert!(msg.contains("both a primary and a mirror"), "{msg}");
    }

    #[test]
    fn duplicate_pair_names_are_refused() {
        let text = "[[pair]]\nname = \"a\"\nprimary = \"127.0.0.1:80\"\nmirror = \"127.0.0.1:81\"\n[[pair]]\nname = \"a\"\nprimary = \"127.0.0.1:82\"\nmirror = \"127.0.0.1:83\"\n";
        let (line, key, msg) = invalid(text);
        assert_eq!((line, key.as_str()), (6, "pair[1].name"));
        assert!(msg.contains("already used"), "{msg}");
    }

    #[test]
    fn bad_rule_path_is_refused_with_its_line() {
        let text = "[[pair]]\nname = \"a\"\nprimary = \"127.0.0.1:80\"\nmirror = \"127.0.0.1:81\"\n[[pair.rule]]\npath = \"items[\"\naction = \"ignore\"\n";
        let (line, key, msg) = invalid(text);
        assert_eq!((line, key.as_str()), (6, "pair[0].rule[0].path"));
        assert!(msg.contains("starts with `$`"), "{msg}");
    }

    #[test]
    fn regression_a_bad_value_of_the_second_pair_names_its_own_line() {
        // The line used to be that of the first pair's key of the same name.
        let text = "[[pair]]\nname = \"a\"\nprimary = \"127.0.0.1:80\"\nmirror = \"127.0.0.1:81\"\nmatch_timeout = \"5s\"\nmax_endpoints = 5\n[[pair.rule]]\npath = \"$.x\"\naction = \"ignore\"\n\n[[pair]]\nname = \"b\"\nprimary = \"127.0.0.1:82\"\nmirror = \"127.0.0.1:83\"\nmatch_timeout = \"0s\"\n";
        let (line, key, _) = invalid(text);
        assert_eq!((line, key.as_str()), (15, "pair[1].match_timeout"));
        let text = text.replace("match_timeout = \"0s\"", "max_endpoints = 0");
        let (line, key, _) = invalid(&text);
        assert_eq!((line, key.as_str()), (15, "pair[1].max_endpoints"));
        let (line, key, _) = invalid("[store]\nbatch = 10\nqueue = 0\n");
        assert_eq!((line, key.as_str()), (3, "store.queue"));
        // A key under [[pair.rule]] is not the pair's, and a commented header still counts.
        assert_eq!(
            find_in_table(
                "[[pair]] # first\nx = 1\n[[pair.rule]]\ny = 2\n",
                "pair",
                0,
                "y"
            ),
            None
        );
        assert_eq!(
            find_in_table("[[pair]] # first\nx = 1\n", "pair", 0, "x"),
            Some(17..23)
        );
    }

    #[test]
    fn numeric_rule_needs_a_tolerance() {
        let text = "[[pair]]\nname = \"a\"\nprimary = \"127.0.0.1:80\"\nmirror = \"127.0.0.1:81\"\n[[pair.rule]]\npath = \"$.x\"\naction = \"numeric\"\n";
        let (_, key, _) = invalid(text);
        assert_eq!(key, "pair[0].rule[0].action");
    }

    #[test]
    fn sample_outside_unit_interval_is_refused() {
        let text = "[[pair]]\nname = \"a\"\nprimary = \"127.0.0.1:80\"\nmirror = \"127.0.0.1:81\"\nsample = 1.5\n";
        let (line, key, _) = invalid(text);
        assert_eq!((line, key.as_str()), (5, "pair[0].sample"));
    }

    #[test]
    fn bad_target_and_zero_limits_are_refused() {
        let (_, key, _) = invalid("[capture]\ntargets = [\"localhost:80\"]\n");
        assert_eq!(key, "capture.targets[0]");
        let (line, key, _) = invalid("[limits]\npending_pairs = 0\n");
        assert_eq!((line, key.as_str()), (2, "limits.pending_pairs"));
        let (line, key, _) = invalid("[limits]\nidle_timeout = \"1s\"\ngap_timeout = \"0s\"\n");
        assert_eq!((line, key.as_str()), (3, "limits.gap_timeout"));
    }

    #[test]
    fn rules_are_sorted_most_specific_first() {
        let text = "[[pair]]\nname = \"a\"\nprimary = \"127.0.0.1:80\"\nmirror = \"127.0.0.1:81\"\n[[pair.rule]]\npath = \"$..price\"\naction = \"ignore\"\n[[pair.rule]]\npath = \"$.items[*].price\"\naction = \"ignore\"\n";
        let c = Config::parse(text, "t.toml").unwrap();
        assert_eq!(c.pairs[0].rules[0].path.as_str(), "$.items[*].price");
    }

    #[test]
    fn mask_entries_take_exactly_one_kind() {
        let c = Config::parse(
            "[[mask]]\nheader = \"x-session\"\n[[mask]]\nregex = \"SSN-[0-9]+\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.masks.len(), 2);
        assert!(Config::parse("[[mask]]\nheader = \"a\"\nregex = \"b\"\n", "t").is_err());
        let (_, key, _) = invalid("[[mask]]\nregex = \"(\"\n");
        assert_eq!(key, "mask[0]");
    }

    #[test]
    fn server_addresses_parse_all_forms() {
        assert_eq!(ServerAddr::parse(":80"), Ok(ServerAddr::Port(80)));
        assert!(matches!(
            ServerAddr::parse("[::1]:8080"),
            Ok(ServerAddr::Exact(_))
        ));
        assert!(ServerAddr::parse(":0").is_err());
        assert!(ServerAddr::parse("example.com:80").is_err());
        let any = ServerAddr::Port(80);
        assert!(any.covers(&"10.0.0.1:80".parse().unwrap()));
        let exact = ServerAddr::parse("127.0.0.1:80").unwrap();
        assert!(exact.covers(&"[::ffff:127.0.0.1]:80".parse().unwrap()));
    }
}
