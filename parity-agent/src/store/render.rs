//! Text rendering of stored records for `parity-agent diffs`: the list as a table, one record
//! as the two responses side by side with the differing lines marked.
//!
//! Marks, in the gutter of each side: `!` a line at a reported difference's location (the
//! status line, a header, a JSON member or everything below it), `~` a line that differs from
//! its counterpart (or has none) without being reported (a rule ignores it, or it only moved).
//! With colour, `!` lines are red on the primary's side and green on the mirror's, `~` lines
//! yellow. Lines are aligned by a longest-common-subsequence match of their text, so a missing
//! member leaves a hole on one side instead of shifting everything below it.

use std::fmt::Write as _;

use serde_json::Value;

use super::record::{BodyView, DiffRecord, DifferenceView, ExchangeView, RecordSummary};
use crate::compare::path::{push_key, push_step, Step};

const RESET: &str = "\x1b[0m";
const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";
const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";

/// Lines of one side beyond which alignment pairs lines by position instead of by content
/// (the LCS table is quadratic).
const ALIGN_MAX_CELLS: usize = 4_000_000;

/// `2025-11-28 19:52:01.123` (UTC) for Unix seconds.
pub fn fmt_time(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "-".to_string();
    }
    let total_ms = (secs * 1000.0).round() as i64;
    let (days, ms_of_day) = (
        total_ms.div_euclid(86_400_000),
        total_ms.rem_euclid(86_400_000),
    );
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let s = ms_of_day / 1000;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}",
        s / 3600,
        s / 60 % 60,
        s % 60,
        ms_of_day % 1000
    )
}

fn fmt_latency(s: Option<f64>) -> String {
    match s {
        Some(s) if s < 1.0 => format!("{:.1} ms", s * 1e3),
        Some(s) => format!("{s:.2} s"),
        None => "-".to_string(),
    }
}

fn status(s: Option<u16>) -> String {
    s.map_or_else(|| "-".to_string(), |s| s.to_string())
}

/// Cut `s` to `w` characters (the last one `…` when cut), tabs and line breaks made visible.
fn fit(s: &str, w: usize) -> String {
    let clean: String = s
        .chars()
        .map(|c| match c {
            '\t' => ' ',
            '\n' => '⏎',
            c if c.is_control() => '�',
            c => c,
        })
        .collect();
    if clean.chars().count() <= w {
        return clean;
    }
    let mut out: String = clean.chars().take(w.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn pad(s: &str, w: usize) -> String {
    let n = s.chars().count();
    if n >= w {
        s.to_string()
    } else {
        format!("{s}{}", " ".repeat(w - n))
    }
}

/// The record list as a table.
pub fn render_list(records: &[RecordSummary], colour: bool) -> String {
    let mut s = String::new();
    if records.is_empty() {
        return s;
    }
    let head = [
        "ID",
        "TIME (UTC)",
        "PAIR",
        "ENDPOINT",
        "STATUS",
        "DIFFS",
        "FIRST DIFFERENCE",
    ];
    let rows: Vec<[String; 7]> = records
        .iter()
        .map(|r| {
            let first = r.differences.first().map_or_else(
                || {
                    if r.diverged {
                        String::new()
                    } else {
                        "(matched, kept for contrast)".to_string()
                    }
                },
                |d| format!("{} ({})", d.path, d.kind),
            );
            [
                r.id.to_string(),
                fmt_time(r.time),
                fit(&r.pair, 24),
                fit(&r.endpoint, 48),
                format!("{}/{}", status(r.primary_status), status(r.mirror_status)),
                r.difference_count.to_string(),
                fit(&first, 80),
            ]
        })
        .collect();
    let mut w = head.map(|h| h.chars().count());
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: [&str; 7]| -> String {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            let cell = if i == 0 || i == 5 {
                format!("{}{c}", " ".repeat(w[i].saturating_sub(c.chars().count())))
            } else if i == 6 {
                c.to_string()
            } else {
                pad(c, w[i])
            };
            l.push_str(&cell);
            if i < 6 {
                l.push_str("  ");
            }
        }
        l.trim_end().to_string()
    };
    let header = line(head);
    if colour {
        let _ = writeln!(s, "{BOLD}{header}{RESET}");
    } else {
        let _ = writeln!(s, "{header}");
    }
    for (r, rec) in rows.iter().zip(records) {
        let text = line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5], &r[6]]);
        if colour && !rec.diverged {
            let _ = writeln!(s, "{DIM}{text}{RESET}");
        } else {
            let _ = writeln!(s, "{text}");
        }
    }
    s
}

/// One display line of a response, with the location it shows (`status`, `header:<name>`, a
/// JSON location, `body`), if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// The text.
    pub text: String,
    /// Its location.
    pub path: Option<String>,
}

fn line(text: String, path: Option<String>) -> Line {
    Line { text, path }
}

/// The lines of one side's response: status line, headers, a blank line, the body (JSON
/// re-indented with each line's location).
pub fn response_lines(ex: &ExchangeView) -> Vec<Line> {
    let Some(r) = &ex.response else {
        return vec![line("(no response)".into(), Some("response".into()))];
    };
    let mut out = vec![line(
        format!("HTTP/{} {} {}", r.version, r.status, r.reason),
        Some("status".into()),
    )];
    for (n, v) in &r.headers {
        out.push(line(
            format!("{n}: {v}"),
            Some(format!("header:{}", n.to_ascii_lowercase())),
        ));
    }
    out.push(line(String::new(), None));
    body_lines(&r.body, &mut out);
    out
}

fn body_lines(b: &BodyView, out: &mut Vec<Line>) {
    if b.text.is_empty() {
        if b.len > 0 {
            out.push(line(format!("<{} bytes, none stored>", b.len), None));
        }
        return;
    }
    let json = !b.binary
        && matches!(b.text.trim_start().as_bytes().first(), Some(b'{' | b'['))
        && serde_json::from_str::<Value>(&b.text).is_ok();
    if json {
        if let Ok(v) = serde_json::from_str::<Value>(&b.text) {
            let mut path = String::from("$");
            json_lines(&v, &mut path, 0, None, false, out);
        }
    } else {
        for l in b.text.lines() {
            out.push(line(l.to_string(), Some("body".into())));
        }
    }
    if b.capped {
        out.push(line(
            format!("… (body capped: {} bytes in all)", b.len),
            None,
        ));
    }
}

fn json_lines(
    v: &Value,
    path: &mut String,
    indent: usize,
    key: Option<&str>,
    comma: bool,
    out: &mut Vec<Line>,
) {
    let mut prefix = "  ".repeat(indent);
    if let Some(k) = key {
        prefix.push_str(&Value::String(k.to_string()).to_string());
        prefix.push_str(": ");
    }
    let c = if comma { "," } else { "" };
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push(line(format!("{prefix}{{"), Some(path.clone())));
            for (i, (k, child)) in m.iter().enumerate() {
                let len = path.len();
                push_key(path, k);
                json_lines(child, path, indent + 1, Some(k), i + 1 < m.len(), out);
                path.truncate(len);
            }
            out.push(line(
                format!("{}}}{c}", "  ".repeat(indent)),
                Some(path.clone()),
            ));
        }
        Value::Array(a) if !a.is_empty() => {
            out.push(line(format!("{prefix}["), Some(path.clone())));
            for (i, child) in a.iter().enumerate() {
                let len = path.len();
                push_step(path, &Step::Index(i));
                json_lines(child, path, indent + 1, None, i + 1 < a.len(), out);
                path.truncate(len);
            }
            out.push(line(
                format!("{}]{c}", "  ".repeat(indent)),
                Some(path.clone()),
            ));
        }
        scalar => out.push(line(format!("{prefix}{scalar}{c}"), Some(path.clone()))),
    }
}

/// Is a line at `path` on (or below) a reported difference? `body` differences (text and hash)
/// mark no line by location; alignment shows them.
pub fn on_difference(path: Option<&str>, diffs: &[DifferenceView]) -> bool {
    let Some(p) = path else {
        return false;
    };
    diffs.iter().any(|d| {
        let dp = d.path.as_str();
        dp != "body"
            && (p == dp
                || (dp.starts_with('$')
                    && p.len() > dp.len()
                    && p.starts_with(dp)
                    && matches!(p.as_bytes().get(dp.len()), Some(b'.' | b'['))))
    })
}

/// Pair the lines of two sides: equal lines (by a longest common subsequence) side by side,
/// a run of removed lines beside the run of added lines that replaced it, the rest alone.
pub fn align(a: &[Line], b: &[Line]) -> Vec<(Option<usize>, Option<usize>)> {
    let prefix = a
        .iter()
        .zip(b)
        .take_while(|(x, y)| x.text == y.text)
        .count();
    let suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x.text == y.text)
        .count();
    let (ma, mb) = (&a[prefix..a.len() - suffix], &b[prefix..b.len() - suffix]);
    let mut ops: Vec<(Option<usize>, Option<usize>)> =
        (0..prefix).map(|i| (Some(i), Some(i))).collect();
    let (n, m) = (ma.len(), mb.len());
    let mut middle: Vec<(Option<usize>, Option<usize>)> = Vec::new();
    if n.saturating_mul(m) <= ALIGN_MAX_CELLS {
        // lcs[i][j]: LCS length of ma[i..] and mb[j..].
        let w = m + 1;
        let mut lcs = vec![0u32; (n + 1) * w];
        for i in (0..n).rev() {
            for j in (0..m).rev() {
                lcs[i * w + j] = if ma[i].text == mb[j].text {
                    lcs[(i + 1) * w + j + 1] + 1
                } else {
                    lcs[(i + 1) * w + j].max(lcs[i * w + j + 1])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < n || j < m {
            if i < n && j < m && ma[i].text == mb[j].text {
                middle.push((Some(i), Some(j)));
                i += 1;
                j += 1;
            } else if j == m || (i < n && lcs[(i + 1) * w + j] >= lcs[i * w + j + 1]) {
                middle.push((Some(i), None));
                i += 1;
            } else {
                middle.push((None, Some(j)));
                j += 1;
            }
        }
    } else {
        for k in 0..n.max(m) {
            middle.push(((k < n).then_some(k), (k < m).then_some(k)));
        }
    }
    // Zip each run of one-sided lines: removals beside the additions that follow them.
    let mut k = 0;
    while k < middle.len() {
        if middle[k].1.is_some() {
            ops.push(shift(middle[k], prefix));
            k += 1;
            continue;
        }
        let start = k;
        while k < middle.len() && middle[k].1.is_none() {
            k += 1;
        }
        let dels: Vec<usize> = middle[start..k].iter().filter_map(|o| o.0).collect();
        let mut adds = Vec::new();
        while k < middle.len() && middle[k].0.is_none() {
            if let Some(j) = middle[k].1 {
                adds.push(j);
            }
            k += 1;
        }
        for t in 0..dels.len().max(adds.len()) {
            ops.push(shift((dels.get(t).copied(), adds.get(t).copied()), prefix));
        }
    }
    let (sa, sb) = (a.len() - suffix, b.len() - suffix);
    ops.extend((0..suffix).map(|t| (Some(sa + t), Some(sb + t))));
    ops
}

fn shift(o: (Option<usize>, Option<usize>), by: usize) -> (Option<usize>, Option<usize>) {
    (o.0.map(|i| i + by), o.1.map(|j| j + by))
}

/// One record: what was compared, the differences, and the two responses side by side in
/// `width` columns.
pub fn render_show(r: &DiffRecord, width: usize, colour: bool) -> String {
    let width = width.max(60);
    let paint = |code: &str, text: &str| -> String {
        if colour {
            format!("{code}{text}{RESET}")
        } else {
            text.to_string()
        }
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}",
        paint(
            BOLD,
            &format!(
                "record {} · pair {} · {} · {} UTC",
                r.id,
                r.pair,
                r.endpoint,
                fmt_time(r.time)
            )
        )
    );
    let req = |ex: &ExchangeView| {
        ex.request.as_ref().map_or_else(
            || "(no request)".to_string(),
            |q| format!("{} {}", q.method, q.uri),
        )
    };
    let _ = writeln!(
        s,
        "correlation id {} · request {} · bodies compared: {}",
        r.correlation_id,
        req(&r.primary),
        r.body_comparison
    );
    if req(&r.mirror) != req(&r.primary) {
        let _ = writeln!(s, "mirror request {}", req(&r.mirror));
    }
    if !r.masked {
        let _ = writeln!(
            s,
            "{}",
            paint(
                YELLOW,
                "warning: this record was stored UNMASKED (--unmasked); it may hold secrets"
            )
        );
    }
    if r.diverged {
        let _ = writeln!(
            s,
            "\n{} difference{}{}:",
            r.differences.len(),
            if r.differences.len() == 1 { "" } else { "s" },
            if r.truncated {
                " (more exist; the comparison stopped listing)"
            } else {
                ""
            }
        );
        let pw = r
            .differences
            .iter()
            .map(|d| d.path.chars().count())
            .max()
            .unwrap_or(4)
            .clamp(4, width / 3);
        let vw = width.saturating_sub(pw + 16) / 2;
        for d in &r.differences {
            let v = |x: &Option<String>| {
                x.as_deref()
                    .map_or_else(|| "(absent)".to_string(), |x| fit(x, vw.max(8)))
            };
            let _ = writeln!(
                s,
                "  {} {} {:7} {}  →  {}",
                paint(BOLD, "!"),
                pad(&fit(&d.path, pw), pw),
                d.kind,
                paint(RED, &v(&d.primary)),
                paint(GREEN, &v(&d.mirror))
            );
        }
    } else {
        let _ = writeln!(s, "\nno differences: a matched pair kept for contrast");
    }
    let _ = writeln!(s);
    let col = (width - 7) / 2;
    let side_head = |name: &str, ex: &ExchangeView| {
        format!("{name} {} · {}", ex.server, fmt_latency(ex.latency_seconds))
    };
    let _ = writeln!(
        s,
        "  {} │   {}",
        paint(
            BOLD,
            &pad(&fit(&side_head("primary", &r.primary), col), col)
        ),
        paint(BOLD, &fit(&side_head("mirror", &r.mirror), col))
    );
    let _ = writeln!(s, "{}┼{}", "─".repeat(col + 3), "─".repeat(col + 3));
    let (a, b) = (response_lines(&r.primary), response_lines(&r.mirror));
    // A `body` difference (text or hash) marks the body lines that differ.
    let body_differs = r.differences.iter().any(|d| d.path == "body");
    for (li, ri) in align(&a, &b) {
        let (l, rr) = (li.and_then(|i| a.get(i)), ri.and_then(|j| b.get(j)));
        let differs = match (l, rr) {
            (Some(x), Some(y)) => x.text != y.text,
            _ => true,
        };
        let cell = |ln: Option<&Line>, hot: &str| -> String {
            let Some(ln) = ln else {
                return format!("  {}", " ".repeat(col));
            };
            let text = pad(&fit(&ln.text, col), col);
            let body_line = body_differs && differs && ln.path.as_deref() == Some("body");
            if body_line || on_difference(ln.path.as_deref(), &r.differences) {
                format!("{} {}", paint(BOLD, "!"), paint(hot, &text))
            } else if differs {
                format!("{} {}", paint(YELLOW, "~"), paint(YELLOW, &text))
            } else {
                format!("  {text}")
            }
        };
        let row = format!("{} │ {}", cell(l, RED), cell(rr, GREEN));
        let _ = writeln!(s, "{}", row.trim_end());
    }
    let _ = writeln!(
        s,
        "\n{}",
        paint(
            DIM,
            "! reported difference   ~ differs but not reported (ignored by a rule, or moved)"
        )
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::{RequestView, ResponseView};

    fn body(text: &str) -> BodyView {
        BodyView {
            content_type: Some("application/json".into()),
            len: text.len() as u64,
            text: text.into(),
            capped: false,
            binary: false,
        }
    }

    fn side(status: u16, server: &str, text: &str) -> ExchangeView {
        ExchangeView {
            client: "10.0.0.9:5000".into(),
            server: "10.0.0.1:8080".into(),
            request: Some(RequestView {
                method: "GET".into(),
                uri: "/api/orders/17".into(),
                version: "1.1".into(),
                headers: vec![],
                body: BodyView {
                    content_type: None,
                    len: 0,
                    text: String::new(),
                    capped: false,
                    binary: false,
                },
            }),
            response: Some(ResponseView {
                status,
                reason: "OK".into(),
                version: "1.1".into(),
                headers: vec![
                    ("Content-Type".into(), "application/json".into()),
                    ("Server".into(), server.into()),
                ],
                body: body(text),
            }),
            interim: vec![],
            incomplete: None,
            anomalies: vec![],
            latency_seconds: Some(0.0121),
        }
    }

    fn diff(path: &str, kind: &str, p: Option<&str>, m: Option<&str>) -> DifferenceView {
        DifferenceView {
            path: path.into(),
            pattern: crate::summary::collapse_indexes(path),
            kind: kind.into(),
            primary: p.map(Into::into),
            mirror: m.map(Into::into),
        }
    }

    fn record() -> DiffRecord {
        DiffRecord {
            id: 42,
            run_id: 1,
            time: 1_764_359_521.123,
            stored_at: 1_764_359_522.0,
            pair: "checkout".into(),
            endpoint: "GET /api/orders/{id}".into(),
            correlation_id: "req-17".into(),
            diverged: true,
            truncated: false,
            body_comparison: "json".into(),
            masked: true,
            differences: vec![
                diff("header:server", "value", Some("java"), Some("rust")),
                diff("$.items[1]", "missing", Some("{\"sku\":\"B\"}"), None),
                diff("$.tax", "value", Some("1.2"), Some("1.24")),
            ],
            primary: side(
                200,
                "java",
                r#"{"items":[{"sku":"A"},{"sku":"B"}],"tax":1.2,"total":10,"when":"a"}"#,
            ),
            mirror: side(
                200,
                "rust",
                r#"{"items":[{"sku":"A"}],"tax":1.24,"total":10,"when":"b"}"#,
            ),
        }
    }

    #[test]
    fn time_is_utc_calendar_time() {
        assert_eq!(fmt_time(0.0), "1970-01-01 00:00:00.000");
        assert_eq!(fmt_time(1_764_359_521.123), "2025-11-28 19:52:01.123");
        assert_eq!(fmt_time(951_782_400.5), "2000-02-29 00:00:00.500");
        assert_eq!(fmt_time(f64::NAN), "-");
    }

    #[test]
    fn json_lines_carry_their_locations() {
        let mut out = Vec::new();
        body_lines(&body(r#"{"a":[1,{"b c":2}],"e":{}}"#), &mut out);
        let got: Vec<(&str, &str)> = out
            .iter()
            .map(|l| (l.text.as_str(), l.path.as_deref().unwrap_or("")))
            .collect();
        assert_eq!(
            got,
            [
                ("{", "$"),
                ("  \"a\": [", "$.a"),
                ("    1,", "$.a[0]"),
                ("    {", "$.a[1]"),
                ("      \"b c\": 2", "$.a[1]['b c']"),
                ("    }", "$.a[1]"),
                ("  ],", "$.a"),
                ("  \"e\": {}", "$.e"),
                ("}", "$"),
            ]
        );
    }

    #[test]
    fn lines_below_a_difference_are_on_it_but_siblings_are_not() {
        let d = [
            diff("$.items[1]", "missing", None, None),
            diff("body", "text", None, None),
        ];
        assert!(on_difference(Some("$.items[1]"), &d));
        assert!(on_difference(Some("$.items[1].sku"), &d));
        assert!(!on_difference(Some("$.items[10]"), &d));
        assert!(!on_difference(Some("$.items"), &d));
        assert!(
            !on_difference(Some("body"), &d),
            "body differences mark by alignment"
        );
        assert!(!on_difference(None, &d));
    }

    #[test]
    fn alignment_leaves_a_hole_for_a_missing_line_and_pairs_replacements() {
        let l = |t: &str| line(t.to_string(), None);
        let a = [l("a"), l("b"), l("c"), l("x"), l("d")];
        let b = [l("a"), l("c"), l("y"), l("d")];
        assert_eq!(
            align(&a, &b),
            [
                (Some(0), Some(0)),
                (Some(1), None),
                (Some(2), Some(1)),
                (Some(3), Some(2)),
                (Some(4), Some(3)),
            ]
        );
        assert_eq!(align(&[], &b).len(), 4);
        assert_eq!(align(&a, &a).len(), 5);
    }

    #[test]
    fn show_marks_reported_and_unreported_differences_plainly() {
        let out = render_show(&record(), 140, false);
        assert!(!out.contains('\x1b'), "no colour when asked for none");
        assert!(
            out.contains(
                "record 42 · pair checkout · GET /api/orders/{id} · 2025-11-28 19:52:01.123 UTC"
            ),
            "{out}"
        );
        let row = |needle: &str| {
            out.lines()
                .find(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("no line with {needle} in\n{out}"))
                .to_string()
        };
        let tax = row("\"tax\": 1.2,");
        assert!(
            tax.starts_with("! ") && tax.contains("│ ! ") && tax.contains("\"tax\": 1.24,"),
            "{tax}"
        );
        let server = row("Server: java");
        assert!(
            server.starts_with("! ") && server.contains("Server: rust"),
            "{server}"
        );
        let when = row("\"when\": \"a\"");
        assert!(
            when.starts_with("~ ") && when.contains("│ ~ "),
            "unreported difference: {when}"
        );
        let sku_b = row("\"sku\": \"B\"");
        assert!(
            sku_b.starts_with("! ") && sku_b.trim_end().ends_with('│'),
            "missing on the mirror: {sku_b}"
        );
        let total = row("\"total\": 10,");
        assert!(total.starts_with("  "), "{total}");
        assert!(
            out.contains("$.tax") && out.contains("1.2  →  1.24"),
            "{out}"
        );
    }

    #[test]
    fn show_colours_only_when_asked() {
        let out = render_show(&record(), 120, true);
        assert!(out.contains(RED) && out.contains(GREEN));
    }

    #[test]
    fn list_is_a_table_with_the_first_difference() {
        let r = RecordSummary {
            id: 7,
            run_id: 1,
            time: 1_764_359_521.0,
            pair: "checkout".into(),
            endpoint: "GET /api/orders/{id}".into(),
            correlation_id: "req-1".into(),
            method: Some("GET".into()),
            uri: Some("/api/orders/1".into()),
            primary_status: Some(201),
            mirror_status: Some(200),
            primary_latency_seconds: None,
            mirror_latency_seconds: None,
            diverged: true,
            difference_count: 2,
            kinds: vec!["value".into()],
            differences: vec![diff("status", "value", Some("201"), Some("200"))],
        };
        let out = render_list(&[r], false);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("ID  TIME (UTC)"), "{out}");
        assert!(lines[1].starts_with(" 7  2025-11-28 19:52:01.000  checkout  GET /api/orders/{id}  201/200      2  status (value)"), "{out}");
        assert_eq!(render_list(&[], false), "");
    }
}
