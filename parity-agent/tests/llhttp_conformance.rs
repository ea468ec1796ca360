//! llhttp conformance: every `request`/`response` test block of llhttp's markdown suite
//! (`../shared/corpus/llhttp`, see its README) is fed to [`HttpTracker`] and its messages are
//! compared with llhttp's expected callback log: message boundaries, method/target/status/
//! version, header names and values, body bytes and completeness. A case llhttp rejects must be
//! rejected by parity too, or carry an anomaly or incomplete reason on the message llhttp
//! rejected. Disagreements fail the test unless listed, with a reason, in
//! `tests/llhttp-allowlist.txt`; a listed case that agrees fails too, so the list stays honest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use parity_agent::exchange::{Anomaly, Exchange, IncompleteReason};
use parity_agent::http::{HttpConfig, HttpTracker};
use parity_agent::segment::Nanos;
use parity_agent::stream::{CloseReason, ConnId, Direction, StreamEvent};

/// llhttp's `HPE_PAUSED_UPGRADE`: the message was parsed, then the protocol switched.
const PAUSED_UPGRADE: u32 = 22;

fn corpus_dir() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
    let dir = root.join("..").join("shared").join("corpus").join("llhttp");
    dir.join("README.md").is_file().then_some(dir)
}

/// One test block.
struct Case {
    id: String,
    kind: String,
    skip_body: bool,
    input: Vec<u8>,
    log: Vec<String>,
}

/// Splits a markdown file into test blocks.
fn parse_md(rel: &str, text: &str) -> Vec<Case> {
    let lines: Vec<&str> = text.split('\n').collect();
    let mut cases = Vec::new();
    let mut heading = String::new();
    let mut meta: Option<serde_json::Value> = None;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line.starts_with('#') {
            heading = line.trim_start_matches('#').trim().to_string();
        } else if let Some(m) = line
            .strip_prefix("<!-- meta=")
            .and_then(|l| l.strip_suffix(" -->"))
        {
            meta = Some(
                serde_json::from_str(m).unwrap_or_else(|e| panic!("{rel}: bad meta {m}: {e}")),
            );
        } else if line.starts_with("```http") {
            let mut body = Vec::new();
            i += 1;
            while i < lines.len() && !lines[i].starts_with("```") {
                body.push(lines[i]);
                i += 1;
            }
            while i < lines.len() && !lines[i].starts_with("```log") {
                i += 1;
            }
            i += 1;
            let mut log = Vec::new();
            while i < lines.len() && !lines[i].starts_with("```") {
                log.push(lines[i].to_string());
                i += 1;
            }
            let m = meta.take().unwrap_or(serde_json::Value::Null);
            let kind = m["type"].as_str().unwrap_or("").to_string();
            let n = seen.entry(heading.clone()).or_insert(0);
            *n += 1;
            let id = if *n == 1 {
                format!("{rel}#{heading}")
            } else {
                format!("{rel}#{heading} ({n})")
            };
            cases.push(Case {
                id,
                kind,
                skip_body: m["skipBody"].as_bool() == Some(true),
                input: transform_input(&body.join("\n")),
                log,
            });
        }
        i += 1;
    }
    cases
}

/// llhttp's harness transforms (test/md-test.ts): drop the final newline (done by the caller's
/// join), remove backslash-newline, newlines to CRLF, then `\r \n \t \f \xHH \NNN` escapes and
/// `${...}` expressions; the resulting string is sent as UTF-8.
fn transform_input(raw: &str) -> Vec<u8> {
    let s = raw.replace("\\\r\n", "").replace("\\\n", "");
    let s = s
        .replace("\r\n", "\n")
        .replace('\r', "\n")
        .replace('\n', "\r\n");
    let s = s
        .replace("\\r", "\r")
        .replace("\\n", "\n")
        .replace("\\t", "\t")
        .replace("\\f", "\u{c}");
    let s = replace_numeric_escapes(&s, 'x', 16, usize::MAX);
    let s = replace_octal(&s);
    expand_expressions(&s).into_bytes()
}

/// `\x` followed by hex digits (greedy, as the harness's regex).
fn replace_numeric_escapes(s: &str, marker: char, radix: u32, max: usize) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '\\' && chars.get(i + 1) == Some(&marker) {
            let digits: String = chars[i + 2..]
                .iter()
                .take_while(|c| c.is_digit(radix))
                .take(max)
                .collect();
            if !digits.is_empty() {
                let v = u32::from_str_radix(&digits, radix).expect("digits") & 0xffff;
                out.push(char::from_u32(v).expect("code unit"));
                i += 2 + digits.len();
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// `\NNN` octal, one to three digits.
fn replace_octal(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '\\' {
            let digits: String = chars[i + 1..]
                .iter()
                .take_while(|c| ('0'..='7').contains(c))
                .take(3)
                .collect();
            if !digits.is_empty() {
                let v = u32::from_str_radix(&digits, 8).expect("octal");
                out.push(char::from_u32(v).expect("code unit"));
                i += 1 + digits.len();
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// `${"x".repeat(N)}` is the only expression form the harness documents; anything else is a
/// corpus change this test must learn about.
fn expand_expressions(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .map(|e| start + e)
            .expect("unterminated ${");
        let expr = &rest[start + 2..end];
        let (lit, count) = expr
            .strip_prefix('"')
            .and_then(|e| e.split_once("\".repeat("))
            .and_then(|(lit, n)| Some((lit, n.strip_suffix(')')?.trim().parse::<usize>().ok()?)))
            .unwrap_or_else(|| panic!("unsupported expression ${{{expr}}}"));
        out.push_str(&lit.repeat(count));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// A message as llhttp's log describes it.
#[derive(Debug, Default, Clone)]
struct Expected {
    method: Vec<u8>,
    url: Vec<u8>,
    version: Vec<u8>,
    status_code: Option<u16>,
    reason: Vec<u8>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
    headers_complete: bool,
    complete: bool,
}

struct ExpectedLog {
    messages: Vec<Expected>,
    /// `(code, reason, index of the message it belongs to)`.
    error: Option<(u32, String, usize)>,
}

fn span_value(line: &str) -> Option<(String, Vec<u8>)> {
    let open = line.find("span[")?;
    let close = line[open..].find(']')? + open;
    let kind = line[open + 5..close].to_string();
    let rest = &line[close + 2..];
    let value = if rest == "cr" {
        b"\r".to_vec()
    } else if rest == "lf" {
        b"\n".to_vec()
    } else {
        rest.strip_prefix('"')?
            .strip_suffix('"')?
            .as_bytes()
            .to_vec()
    };
    Some((kind, value))
}

fn parse_log(lines: &[String]) -> ExpectedLog {
    let mut messages: Vec<Expected> = Vec::new();
    let mut error = None;
    let mut field = Vec::new();
    let mut value = Vec::new();
    for raw in lines {
        let line = raw.replace("\\t", "\t").replace("\\f", "\u{c}");
        if line.starts_with('/') {
            continue;
        }
        let Some(event) = line.split_once(' ').map(|(_, e)| e) else {
            continue;
        };
        if event == "message begin" {
            messages.push(Expected::default());
            continue;
        }
        if let Some(rest) = event.strip_prefix("error code=") {
            let code = rest
                .split(' ')
                .next()
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let reason = rest
                .split_once("reason=")
                .map_or("", |(_, r)| r)
                .to_string();
            let idx = match messages.last() {
                Some(m) if !m.complete => messages.len() - 1,
                _ => messages.len(),
            };
            error = Some((code, reason, idx));
            break;
        }
        let Some(m) = messages.last_mut() else {
            continue;
        };
        if let Some((kind, v)) = span_value(&line) {
            match kind.as_str() {
                "method" => m.method.extend(v),
                "url" => m.url.extend(v),
                "version" => m.version.extend(v),
                "status" => m.reason.extend(v),
                "header_field" if !m.headers_complete => field.extend(v),
                "header_value" if !m.headers_complete => value.extend(v),
                "body" => m.body.extend(v),
                _ => {}
            }
        } else if event == "header_value complete" && !m.headers_complete {
            m.headers
                .push((std::mem::take(&mut field), std::mem::take(&mut value)));
        } else if let Some(rest) = event.strip_prefix("headers complete ") {
            m.headers_complete = true;
            if let Some(s) = rest.strip_prefix("status=") {
                m.status_code = s.split(' ').next().and_then(|c| c.parse().ok());
            }
        } else if event == "message complete" {
            m.complete = true;
        }
    }
    ExpectedLog { messages, error }
}

fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |p| p + 1);
    &v[start..end]
}

/// What parity made of one case.
struct Outcome {
    exchanges: Vec<Exchange>,
    rejected_somewhere: bool,
}

fn run_parity(case: &Case, finals: usize) -> Outcome {
    let mut tr = HttpTracker::new(HttpConfig {
        max_header_bytes: 64 * 1024,
        max_body_bytes: 1 << 20,
        max_decoded_bytes: 64 << 20,
        max_pending_requests: 100,
    });
    let mut out = Vec::new();
    let conn = ConnId(1);
    tr.on_event(
        StreamEvent::Open {
            conn,
            client: "10.0.0.1:40000".parse().expect("addr"),
            server: "10.0.0.2:80".parse().expect("addr"),
            ts: Nanos(1),
            mid_stream: false,
        },
        &mut out,
    );
    let data = |dir, bytes: Vec<u8>, ts| StreamEvent::Data {
        conn,
        dir,
        ts: Nanos(ts),
        data: Bytes::from(bytes),
    };
    if case.kind == "response" {
        let one: &[u8] = if case.skip_body {
            b"HEAD / HTTP/1.1\r\n\r\n"
        } else {
            b"GET / HTTP/1.1\r\n\r\n"
        };
        tr.on_event(
            data(Direction::ToServer, one.repeat(finals + 2), 2),
            &mut out,
        );
        tr.on_event(data(Direction::ToClient, case.input.clone(), 3), &mut out);
    } else {
        tr.on_event(data(Direction::ToServer, case.input.clone(), 2), &mut out);
    }
    tr.on_event(
        StreamEvent::Close {
            conn,
            ts: Nanos(4),
            reason: CloseReason::Fin,
            reset_by: None,
        },
        &mut out,
    );
    let st = tr.stats();
    let rejected_somewhere = st.non_http_connections > 0
        || st.skipped_total() > 0
        || st.incomplete(IncompleteReason::Malformed) > 0
        || st.incomplete(IncompleteReason::HeaderCap) > 0;
    out.sort_by_key(|e| e.trans_depth);
    let (exchanges, others): (Vec<Exchange>, Vec<Exchange>) = out.into_iter().partition(|e| {
        if case.kind == "response" {
            e.response.is_some()
        } else {
            e.request.is_some()
        }
    });
    // An exchange without the message side under test (a cut response head, a malformed
    // request placeholder) still shows what parity flagged.
    let rejected_somewhere = rejected_somewhere || others.iter().any(flagged);
    Outcome {
        exchanges,
        rejected_somewhere,
    }
}

/// The message of `ex` was fully parsed (in request mode the missing response does not count).
fn message_complete(kind: &str, ex: &Exchange) -> bool {
    match ex.incomplete {
        None => true,
        Some(IncompleteReason::NoResponse) => kind == "request",
        Some(_) => false,
    }
}

/// The exchange shows that parity found something wrong with the message.
fn flagged(ex: &Exchange) -> bool {
    let noisy = |a: &Anomaly| *a == Anomaly::UnsolicitedResponse;
    ex.anomalies.iter().any(|a| !noisy(a)) || !message_complete("request", ex)
}

/// Compares one message; `None` when it agrees.
fn compare_message(kind: &str, exp: &Expected, interim: &[u16], ex: &Exchange) -> Option<String> {
    let (version, headers, body) = if kind == "request" {
        let r = ex.request.as_ref()?;
        if r.method[..] != exp.method[..] {
            return Some(format!(
                "method {:?} vs {:?}",
                String::from_utf8_lossy(&r.method),
                String::from_utf8_lossy(&exp.method)
            ));
        }
        if r.uri[..] != exp.url[..] {
            return Some(format!(
                "uri {:?} vs {:?}",
                String::from_utf8_lossy(&r.uri),
                String::from_utf8_lossy(&exp.url)
            ));
        }
        (r.version.as_str(), &r.headers, &r.body)
    } else {
        let r = ex.response.as_ref()?;
        if Some(r.status) != exp.status_code {
            return Some(format!("status {} vs {:?}", r.status, exp.status_code));
        }
        if r.reason[..] != exp.reason[..] {
            return Some(format!(
                "reason {:?} vs {:?}",
                String::from_utf8_lossy(&r.reason),
                String::from_utf8_lossy(&exp.reason)
            ));
        }
        if ex.interim != interim {
            return Some(format!("interim {:?} vs {:?}", ex.interim, interim));
        }
        (r.version.as_str(), &r.headers, &r.body)
    };
    if version.as_bytes() != &exp.version[..] {
        return Some(format!(
            "version {version} vs {:?}",
            String::from_utf8_lossy(&exp.version)
        ));
    }
    let ours: Vec<(&[u8], &[u8])> = headers.iter().collect();
    let theirs: Vec<(&[u8], &[u8])> = exp
        .headers
        .iter()
        .map(|(n, v)| (&n[..], trim_ows(v)))
        .collect();
    if ours != theirs {
        return Some(format!(
            "headers differ: ours {} vs {}",
            ours.len(),
            theirs.len()
        ));
    }
    if body.kept[..] != exp.body[..] {
        return Some(format!(
            "body {:?} vs {:?}",
            String::from_utf8_lossy(&body.kept),
            String::from_utf8_lossy(&exp.body)
        ));
    }
    let ours_complete = message_complete(kind, ex);
    if exp.complete && !ours_complete {
        return Some(format!(
            "llhttp completed the message, parity: {:?} {:?}",
            ex.incomplete, ex.anomalies
        ));
    }
    // llhttp never sees the end of the input here; parity gets a FIN, which legitimately ends a
    // read-to-close response.
    if !exp.complete && ours_complete && kind == "request" {
        return Some("llhttp left the message open, parity completed it".into());
    }
    None
}

/// Compares the whole case; `None` when parity agrees with llhttp.
fn compare(case: &Case) -> Option<String> {
    let log = parse_log(&case.log);
    // Responses: fold 1xx into the final message that follows them.
    let mut finals: Vec<(Expected, Vec<u16>)> = Vec::new();
    let mut interim = Vec::new();
    let mut raw_to_final = Vec::new();
    for m in &log.messages {
        raw_to_final.push(finals.len());
        let code = m.status_code.unwrap_or(0);
        if case.kind == "response" && (100..200).contains(&code) && code != 101 && m.complete {
            interim.push(code);
        } else {
            finals.push((m.clone(), std::mem::take(&mut interim)));
        }
    }
    let error = log.error.map(|(code, reason, idx)| {
        let idx = raw_to_final.get(idx).copied().unwrap_or(finals.len());
        (code, reason, idx)
    });
    let outcome = run_parity(case, finals.len());
    let ours = &outcome.exchanges;
    let must_match = match &error {
        Some((_, _, idx)) => (*idx).min(finals.len()),
        None => finals.len(),
    };
    for (i, (exp, interim)) in finals.iter().enumerate().take(must_match) {
        if !exp.headers_complete {
            // Begun but cut before its head ended: parity may report it cut, or not at all.
            if let Some(ex) = ours.get(i) {
                if message_complete(&case.kind, ex) {
                    return Some(format!(
                        "message {i}: llhttp saw a partial head, parity a complete message"
                    ));
                }
            }
            continue;
        }
        let Some(ex) = ours.get(i) else {
            return Some(format!(
                "message {i}: llhttp parsed it, parity has {} messages",
                ours.len()
            ));
        };
        if let Some(diff) = compare_message(&case.kind, exp, interim, ex) {
            return Some(format!("message {i}: {diff}"));
        }
    }
    match error {
        None => {
            let extra = &ours[must_match.min(ours.len())..];
            if extra.iter().any(|e| message_complete(&case.kind, e)) {
                return Some(format!(
                    "parity found {} messages, llhttp {}",
                    ours.len(),
                    finals.len()
                ));
            }
            None
        }
        Some((PAUSED_UPGRADE, _, idx)) => {
            if ours.len() > idx {
                return Some(format!(
                    "parity parsed {} messages past the protocol switch",
                    ours.len() - idx
                ));
            }
            None
        }
        Some((code, reason, idx)) => {
            let ok = match ours.get(idx) {
                Some(ex) => flagged(ex),
                None => outcome.rejected_somewhere,
            };
            if ok {
                None
            } else {
                Some(format!(
                    "llhttp rejects message {idx} (code {code} {reason}); parity accepts it"
                ))
            }
        }
    }
}

fn load_allowlist(path: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (id, reason) = l
                .split_once(" :: ")
                .unwrap_or_else(|| panic!("allow-list line without ` :: reason`: {l}"));
            (id.trim().to_string(), reason.trim().to_string())
        })
        .collect()
}

#[test]
fn llhttp_conformance() {
    let Some(dir) = corpus_dir() else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("llhttp corpus missing: expected <workspace>/../shared/corpus/llhttp");
        }
        eprintln!(
            "SKIPPED: llhttp_conformance (corpus not found at <workspace>/../shared/corpus/llhttp)"
        );
        return;
    };
    let allow =
        load_allowlist(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/llhttp-allowlist.txt"));
    let mut files = Vec::new();
    for sub in ["request", "response"] {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir.join(sub))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.join(sub).display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "md"))
            .collect();
        entries.sort();
        files.extend(entries.into_iter().map(|p| (sub, p)));
    }
    let (mut total, mut agree, mut allowed) = (0, 0, 0);
    let mut failures = Vec::new();
    let mut stale = Vec::new();
    let mut ids = Vec::new();
    for (sub, path) in files {
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("?");
        for case in parse_md(&format!("{sub}/{name}"), &text) {
            if case.kind != "request" && case.kind != "response" {
                continue;
            }
            total += 1;
            ids.push(case.id.clone());
            let verdict = compare(&case);
            match (&verdict, allow.get(&case.id)) {
                (None, None) => agree += 1,
                (None, Some(_)) => {
                    agree += 1;
                    stale.push(case.id.clone());
                }
                (Some(_), Some(_)) => allowed += 1,
                (Some(why), None) => failures.push(format!("{}: {why}", case.id)),
            }
        }
    }
    let unknown: Vec<_> = allow.keys().filter(|k| !ids.contains(k)).collect();
    eprintln!(
        "llhttp: {agree}/{total} agree, {allowed} allow-listed, {} disagree",
        failures.len()
    );
    for f in &failures {
        eprintln!("  DISAGREE {f}");
    }
    assert!(
        total > 150,
        "only {total} llhttp cases found in {}",
        dir.display()
    );
    assert!(
        failures.is_empty(),
        "{} llhttp disagreements (see stderr)",
        failures.len()
    );
    assert!(
        stale.is_empty(),
        "allow-listed cases now agree, remove them: {stale:?}"
    );
    assert!(
        unknown.is_empty(),
        "allow-list names unknown cases: {unknown:?}"
    );
}
