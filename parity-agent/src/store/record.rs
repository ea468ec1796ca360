//! What a stored record holds, and how one is built, masked, from a compared pair.
//!
//! [`build_row`] is the only way data enters the store: every header value, request target,
//! body, correlation id, difference path and difference value passes through the [`Masker`]
//! here, on the store's writer thread (never on the comparison thread). The shapes below are
//! also the JSON contract of `/api/records/{id}`, `/api/records` and `diffs --json`; docs/API.md
//! documents their fields.

use serde::{Deserialize, Serialize};

use crate::compare::{BodyComparison, HashReason, Verdict};
use crate::exchange::{Body, Exchange, Headers};
use crate::mask::Masker;
use crate::matcher::PairJob;
use crate::summary::collapse_indexes;

/// One difference as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DifferenceView {
    /// Exact location (`status`, `header:<name>`, `body`, `response`, or a JSON location),
    /// member names that look sensitive masked.
    pub path: String,
    /// The location with array indexes collapsed (`$.items[*].price`).
    pub pattern: String,
    /// Difference kind (`value`, `type`, `missing`, `extra`, `length`, `order`, `text`, `hash`).
    pub kind: String,
    /// The primary's value (compact JSON for JSON locations), masked; `null` when absent.
    pub primary: Option<String>,
    /// The mirror's value, masked; `null` when absent.
    pub mirror: Option<String>,
}

/// A body as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BodyView {
    /// The `Content-Type` header, masked like any header.
    pub content_type: Option<String>,
    /// Decoded length of the whole body, bytes.
    pub len: u64,
    /// The stored text: JSON pretty-printed with members sorted and masked, other text masked by
    /// content, binary content replaced by a description.
    pub text: String,
    /// Only part of the body is stored (it was longer than `max_body_bytes`).
    pub capped: bool,
    /// The body is not text; `text` describes it instead.
    pub binary: bool,
}

/// A request as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestView {
    /// Method.
    pub method: String,
    /// Request target, sensitive path segments and query values masked.
    pub uri: String,
    /// `1.0` or `1.1`.
    pub version: String,
    /// Header fields in wire order, values masked.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: BodyView,
}

/// A response as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseView {
    /// Status code.
    pub status: u16,
    /// Reason phrase.
    pub reason: String,
    /// `1.0` or `1.1`.
    pub version: String,
    /// Header fields in wire order, values masked.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: BodyView,
}

/// One side's exchange as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExchangeView {
    /// Client address.
    pub client: String,
    /// Server address.
    pub server: String,
    /// The request (`null` when it was not seen).
    pub request: Option<RequestView>,
    /// The final response (`null` when there was none).
    pub response: Option<ResponseView>,
    /// 1xx codes before the final response.
    pub interim: Vec<u16>,
    /// Why the exchange is incomplete, `null` when complete.
    pub incomplete: Option<String>,
    /// HTTP framing anomalies.
    pub anomalies: Vec<String>,
    /// First request byte to last response byte, seconds.
    pub latency_seconds: Option<f64>,
}

/// A whole stored record (`/api/records/{id}`, `diffs show --json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiffRecord {
    /// Record id (increasing in storage order).
    pub id: i64,
    /// The run (`replay` or `run`) that stored it.
    pub run_id: i64,
    /// Capture time of the comparison (the later response end), Unix seconds.
    pub time: f64,
    /// Wall-clock time it was stored, Unix seconds (retention counts from it).
    pub stored_at: f64,
    /// Pair name.
    pub pair: String,
    /// Endpoint label.
    pub endpoint: String,
    /// Correlation id, masked when it looks sensitive.
    pub correlation_id: String,
    /// `false` for a matched pair kept for contrast (`keep_matched`).
    pub diverged: bool,
    /// The comparison found more differences than it lists.
    pub truncated: bool,
    /// How the bodies were compared (`json`, `text`, `identical`, `hash:capped`, ...).
    pub body_comparison: String,
    /// The run stored masked values (`false` after `--unmasked`).
    pub masked: bool,
    /// Every difference, in verdict order.
    pub differences: Vec<DifferenceView>,
    /// The primary's exchange.
    pub primary: ExchangeView,
    /// The mirror's exchange.
    pub mirror: ExchangeView,
}

/// A record in a list (`/api/records`, `diffs --json`): no exchanges, the first differences.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordSummary {
    /// Record id.
    pub id: i64,
    /// The run that stored it.
    pub run_id: i64,
    /// Capture time, Unix seconds.
    pub time: f64,
    /// Pair name.
    pub pair: String,
    /// Endpoint label.
    pub endpoint: String,
    /// Correlation id (masked).
    pub correlation_id: String,
    /// Request method of the primary (`null` without a request).
    pub method: Option<String>,
    /// Request target of the primary, masked.
    pub uri: Option<String>,
    /// The primary's status, `null` without a response.
    pub primary_status: Option<u16>,
    /// The mirror's status.
    pub mirror_status: Option<u16>,
    /// The primary's latency, seconds.
    pub primary_latency_seconds: Option<f64>,
    /// The mirror's latency, seconds.
    pub mirror_latency_seconds: Option<f64>,
    /// `false` for a matched pair kept for contrast.
    pub diverged: bool,
    /// Number of differences.
    pub difference_count: u32,
    /// Distinct difference kinds.
    pub kinds: Vec<String>,
    /// The first differences (at most [`LIST_DIFFERENCES`]).
    pub differences: Vec<DifferenceView>,
}

/// Differences listed per record in [`RecordSummary`].
pub const LIST_DIFFERENCES: usize = 3;

/// How many records differed at one field in one way (`/api/fields`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldCount {
    /// Path with indexes collapsed.
    pub pattern: String,
    /// Difference kind.
    pub kind: String,
    /// Stored records with this difference.
    pub records: u64,
}

/// A record ready to insert: everything masked.
#[derive(Clone, Debug)]
pub(crate) struct Row {
    pub ts_ns: i64,
    pub pair: String,
    pub endpoint: String,
    pub correlation_id: String,
    pub diverged: bool,
    pub truncated: bool,
    pub body_comparison: String,
    pub method: Option<String>,
    pub uri: Option<String>,
    pub primary_status: Option<u16>,
    pub mirror_status: Option<u16>,
    pub primary_latency_ns: Option<i64>,
    pub mirror_latency_ns: Option<i64>,
    pub primary_json: String,
    pub mirror_json: String,
    pub kinds: String,
    pub differences: Vec<DifferenceView>,
}

/// The name of a body comparison mode in records: `json`, `hash:capped`, ...
pub fn body_comparison_name(b: &BodyComparison) -> String {
    match b {
        BodyComparison::NoResponse => "no_response".into(),
        BodyComparison::Ignored => "ignored".into(),
        BodyComparison::Identical => "identical".into(),
        BodyComparison::Json => "json".into(),
        BodyComparison::Text => "text".into(),
        BodyComparison::Hash(r) => format!(
            "hash:{}",
            match r {
                HashReason::Capped => "capped",
                HashReason::ContentTypeMismatch => "content_type_mismatch",
                HashReason::DepthLimit => "depth_limit",
                HashReason::Binary => "binary",
            }
        ),
    }
}

/// Build the masked row of `job` compared as `verdict` in pair `pair`; bodies are stored up to
/// `max_body_bytes` each.
pub(crate) fn build_row(
    masker: &Masker,
    pair: &str,
    job: &PairJob,
    verdict: &Verdict,
    max_body_bytes: usize,
) -> Row {
    let ts = job
        .primary
        .response_end
        .max(job.mirror.response_end)
        .or(job.primary.request_start)
        .unwrap_or_default();
    let primary = exchange_view(masker, &job.primary, max_body_bytes);
    let mirror = exchange_view(masker, &job.mirror, max_body_bytes);
    let differences: Vec<DifferenceView> = verdict
        .differences
        .iter()
        .map(|d| {
            let path = masker.mask_location(&d.path).into_owned();
            let value = |v: &Option<String>| {
                v.as_deref()
                    .map(|v| masker.mask_difference(&d.path, v).into_owned())
            };
            DifferenceView {
                pattern: collapse_indexes(&path),
                path,
                kind: d.kind.as_str().to_string(),
                primary: value(&d.primary),
                mirror: value(&d.mirror),
            }
        })
        .collect();
    let mut kinds: Vec<&str> = verdict
        .differences
        .iter()
        .map(|d| d.kind.as_str())
        .collect();
    kinds.sort_unstable();
    kinds.dedup();
    let to_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    Row {
        ts_ns: to_i64(ts.0),
        pair: pair.to_string(),
        endpoint: job.endpoint.to_string(),
        correlation_id: masker
            .mask_value(&String::from_utf8_lossy(&job.id))
            .into_owned(),
        diverged: verdict.diverged(),
        truncated: verdict.truncated,
        body_comparison: body_comparison_name(&verdict.body),
        method: primary.request.as_ref().map(|r| r.method.clone()),
        uri: primary.request.as_ref().map(|r| r.uri.clone()),
        primary_status: primary.response.as_ref().map(|r| r.status),
        mirror_status: mirror.response.as_ref().map(|r| r.status),
        primary_latency_ns: job.primary.latency_nanos().map(to_i64),
        mirror_latency_ns: job.mirror.latency_nanos().map(to_i64),
        primary_json: serde_json::to_string(&primary).unwrap_or_else(|_| "{}".into()),
        mirror_json: serde_json::to_string(&mirror).unwrap_or_else(|_| "{}".into()),
        kinds: kinds.join(","),
        differences,
    }
}

fn exchange_view(masker: &Masker, ex: &Exchange, max_body: usize) -> ExchangeView {
    ExchangeView {
        client: ex.client.to_string(),
        server: ex.server.to_string(),
        request: ex.request.as_ref().map(|r| RequestView {
            method: String::from_utf8_lossy(&r.method).into_owned(),
            uri: masker.mask_uri(&r.uri_str()).into_owned(),
            version: r.version.as_str().to_string(),
            headers: headers_view(masker, &r.headers),
            body: body_view(masker, &r.headers, &r.body, max_body),
        }),
        response: ex.response.as_ref().map(|r| ResponseView {
            status: r.status,
            reason: masker
                .mask_text(&String::from_utf8_lossy(&r.reason))
                .into_owned(),
            version: r.version.as_str().to_string(),
            headers: headers_view(masker, &r.headers),
            body: body_view(masker, &r.headers, &r.body, max_body),
        }),
        interim: ex.interim.clone(),
        incomplete: ex.incomplete.map(|r| r.as_str().to_string()),
        anomalies: ex
            .anomalies
            .iter()
            .map(|a| a.as_str().to_string())
            .collect(),
        latency_seconds: ex.latency_nanos().map(|n| n as f64 / 1e9),
    }
}

fn headers_view(masker: &Masker, h: &Headers) -> Vec<(String, String)> {
    h.iter()
        .map(|(n, v)| {
            let name = String::from_utf8_lossy(n).into_owned();
            let value = masker
                .mask_header(&name, &String::from_utf8_lossy(v))
                .into_owned();
            (name, value)
        })
        .collect()
}

/// Bytes that end a token for the detectors: a secret cut by the body cap ends at none of them.
fn is_delimiter(b: u8) -> bool {
    b.is_ascii_whitespace()
        || matches!(
            b,
            b'"' | b'\''
                | b','
                | b'{'
                | b'}'
                | b'['
                | b']'
                | b'&'
                | b';'
                | b'<'
                | b'>'
                | b'('
                | b')'
        )
}

fn body_view(masker: &Masker, headers: &Headers, body: &Body, max_body: usize) -> BodyView {
    let content_type = headers
        .get_str("content-type")
        .map(|ct| masker.mask_header("content-type", &ct).into_owned());
    let mut kept: &[u8] = &body.kept;
    let mut capped = body.capped || body.len > kept.len() as u64;
    if kept.len() > max_body {
        kept = kept.get(..max_body).unwrap_or_default();
        capped = true;
    }
    if capped && masker.is_active() {
        // A secret cut in half by the cap no longer matches its detector: drop the unfinished
        // token at the end (all of it when the kept bytes hold no delimiter at all).
        let end = kept
            .iter()
            .rposition(|b| is_delimiter(*b))
            .map_or(0, |i| i + 1);
        kept = kept.get(..end).unwrap_or_default();
    }
    // A cap can also cut a UTF-8 sequence; the text is what precedes it.
    let text_len = match std::str::from_utf8(kept) {
        Ok(_) => kept.len(),
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        Err(_) => usize::MAX,
    };
    let binary = text_len == usize::MAX;
    if !binary {
        kept = kept.get(..text_len).unwrap_or(kept);
    }
    let ct_lower = content_type.as_deref().unwrap_or("").to_ascii_lowercase();
    let starts_json = matches!(
        kept.iter().find(|c| !c.is_ascii_whitespace()),
        Some(b'{' | b'[')
    );
    let declared_json = ct_lower.contains("json");
    let parsed = (declared_json || (content_type.is_none() && starts_json))
        .then(|| serde_json::from_slice::<serde_json::Value>(kept).ok())
        .flatten();
    let text = if let Some(mut v) = parsed {
        // What `Masker::mask_body` does for JSON, without parsing the body a second time.
        masker.mask_json(&mut v);
        serde_json::to_string_pretty(&v).unwrap_or_default()
    } else if masker.is_active()
        && masker.has_json_path_rules()
        && (declared_json || starts_json)
        && !kept.is_empty()
    {
        // `[[mask]] json_path` rules need a parsed document; a capped or broken one cannot be
        // masked by path, so it is not stored.
        format!(
            "<{} bytes of JSON that does not parse (capped or malformed): not stored, [[mask]] json_path rules could not be applied>",
            body.len
        )
    } else if binary {
        format!("<{} bytes of binary content, not stored>", body.len)
    } else {
        masker.mask_body(content_type.as_deref(), kept)
    };
    BodyView {
        content_type,
        len: body.len,
        text,
        capped,
        binary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::{DiffKind, Difference};
    use crate::config::Config;
    use crate::exchange::{Request, Response, Version};
    use crate::segment::Nanos;
    use bytes::Bytes;
    use std::sync::Arc;

    fn exchange(
        req_headers: &[(&str, &str)],
        uri: &str,
        status: u16,
        resp: (&str, &[u8]),
    ) -> Exchange {
        Exchange {
            conn: crate::stream::ConnId(1),
            trans_depth: 1,
            client: "10.0.0.9:40000".parse().unwrap(),
            server: "10.0.0.1:8080".parse().unwrap(),
            request: Some(Request {
                method: Bytes::from_static(b"GET"),
                uri: Bytes::copy_from_slice(uri.as_bytes()),
                version: Version::Http11,
                headers: Headers::from_pairs(req_headers),
                body: Body::empty(),
            }),
            response: Some(Response {
                status,
                reason: Bytes::from_static(b"OK"),
                version: Version::Http11,
                headers: Headers::from_pairs(&[("Content-Type", resp.0)]),
                body: Body::from_bytes(resp.1.to_vec()),
            }),
            interim: vec![],
            incomplete: None,
            anomalies: vec![],
            request_start: Some(Nanos(1_000_000_000)),
            request_end: Some(Nanos(1_000_100_000)),
            response_start: Some(Nanos(1_002_000_000)),
            response_end: Some(Nanos(1_003_000_000)),
        }
    }

    fn masker(extra: &str) -> Masker {
        Masker::new(&Config::parse(extra, "t").unwrap(), [3; 32], true)
    }

    fn job(p: Exchange, m: Exchange) -> PairJob {
        PairJob {
            pair: 0,
            endpoint: Arc::from("GET /users/{masked}"),
            id: Bytes::from_static(b"req-1"),
            primary: p,
            mirror: m,
        }
    }

    #[test]
    fn every_stored_part_is_masked() {
        let m = masker("[[mask]]\nregex = \"SECRET-[0-9]+\"\n");
        let secrets = [
            "s3cr3tBearer",
            "sid=cookie42",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",
            "jane@example.com",
            "4111111111111111",
            "hunter2",
            "SECRET-991",
        ];
        let body = br#"{"email":"jane@example.com","card":"4111111111111111","password":"hunter2","note":"SECRET-991","name":"Jane"}"#;
        let p = exchange(
            &[
                ("Authorization", "Bearer s3cr3tBearer"),
                ("Cookie", "sid=cookie42"),
            ],
            "/users/jane@example.com?access=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",
            200,
            ("application/json", body),
        );
        let mirror = exchange(
            &[],
            "/users/jane@example.com",
            200,
            ("application/json", b"{}"),
        );
        let verdict = Verdict {
            differences: vec![
                Difference {
                    path: "$.password".into(),
                    kind: DiffKind::Missing,
                    primary: Some("\"hunter2\"".into()),
                    mirror: None,
                },
                Difference {
                    path: "$['jane@example.com']".into(),
                    kind: DiffKind::Value,
                    primary: Some("\"SECRET-991\"".into()),
                    mirror: Some("4111111111111111".into()),
                },
                Difference {
                    path: "header:set-cookie".into(),
                    kind: DiffKind::Value,
                    primary: Some("sid=cookie42".into()),
                    mirror: Some("x".into()),
                },
            ],
            truncated: false,
            body: BodyComparison::Json,
        };
        let row = build_row(&m, "checkout", &job(p, mirror), &verdict, 1 << 20);
        let all = format!("{row:?}");
        for s in secrets {
            assert!(!all.contains(s), "{s} leaked into {all}");
        }
        let stored: ExchangeView = serde_json::from_str(&row.primary_json).unwrap();
        let text = &stored.response.as_ref().unwrap().body.text;
        assert!(text.contains("\"name\": \"Jane\""), "{text}");
        assert_eq!(row.differences.len(), 3);
        assert_eq!(row.kinds, "missing,value");
        assert!(row.differences[1].path.starts_with("$['[masked:"));
        assert_eq!(row.body_comparison, "json");
        assert_eq!(row.primary_latency_ns, Some(3_000_000));
        assert_eq!(row.ts_ns, 1_003_000_000);
    }

    #[test]
    fn a_secret_cut_by_the_body_cap_is_dropped() {
        let m = masker("");
        let mut body = Body::from_bytes(b"hello mail me at jane.doe@exa".to_vec());
        body.capped = true;
        body.len = 100;
        let v = body_view(
            &m,
            &Headers::from_pairs(&[("content-type", "text/plain")]),
            &body,
            1 << 20,
        );
        assert_eq!(v.text, "hello mail me at ");
        assert!(v.capped && !v.binary);
        let whole = Body::from_bytes(b"eyJhbGciOiJIUzI1NiJ9".to_vec());
        let mut cut = whole.clone();
        cut.capped = true;
        cut.len = 999;
        let v = body_view(&m, &Headers::default(), &cut, 1 << 20);
        assert_eq!(
            v.text, "",
            "a body that is one unfinished token keeps nothing"
        );
        // The store's own cap also counts as capped.
        let v = body_view(
            &m,
            &Headers::default(),
            &Body::from_bytes(b"ab cd ef".to_vec()),
            4,
        );
        assert_eq!((v.text.as_str(), v.capped), ("ab ", true));
    }

    #[test]
    fn broken_json_is_withheld_when_json_path_rules_exist() {
        let m = masker("[[mask]]\njson_path = \"$.ssn\"\n");
        let h = Headers::from_pairs(&[("content-type", "application/json")]);
        let v = body_view(
            &m,
            &h,
            &Body::from_bytes(br#"{"ssn": "123-45"#.to_vec()),
            1 << 20,
        );
        assert!(
            !v.text.contains("123-45") && v.text.contains("not stored"),
            "{}",
            v.text
        );
        // Untyped JSON is parsed and masked by path too.
        let v = body_view(
            &m,
            &Headers::default(),
            &Body::from_bytes(br#"{"ssn": "123-45"}"#.to_vec()),
            1 << 20,
        );
        assert!(
            !v.text.contains("123-45") && v.text.contains("\"ssn\""),
            "{}",
            v.text
        );
        // Without path rules the text detectors apply.
        let m = masker("");
        let v = body_view(
            &m,
            &h,
            &Body::from_bytes(br#"{"password": "hunter2", "x"#.to_vec()),
            1 << 20,
        );
        assert!(!v.text.contains("hunter2"), "{}", v.text);
    }

    #[test]
    fn binary_bodies_are_described_not_stored() {
        let m = masker("");
        let v = body_view(
            &m,
            &Headers::from_pairs(&[("content-type", "image/png")]),
            &Body::from_bytes(vec![0x89, b'P', b'N', b'G', 0xff, 0xfe, 0]),
            1 << 20,
        );
        assert!(
            v.binary && v.text.contains("7 bytes of binary content"),
            "{v:?}"
        );
    }

    #[test]
    fn body_comparison_names_are_stable() {
        assert_eq!(body_comparison_name(&BodyComparison::Json), "json");
        assert_eq!(
            body_comparison_name(&BodyComparison::Hash(HashReason::ContentTypeMismatch)),
            "hash:content_type_mismatch"
        );
    }
}
