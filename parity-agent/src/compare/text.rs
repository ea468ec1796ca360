//! Textual bodies: a line comparison that shows where two texts first part ways.
//!
//! The texts are split into lines (terminators included, so `\r\n` against `\n` and a missing
//! final newline are differences). The common leading and trailing lines are set aside; what is
//! left is the differing region, and the excerpt shows its first [`EXCERPT_LINES`] lines from
//! each side in a unified-diff-like form (`@@ -12,3 @@` then `-line`…, and `@@ +12,2 @@` then
//! `+line`…). That costs one pass over each text and no quadratic alignment; with several
//! separate changes the region runs from the first to the last, and the excerpt shows its start,
//! which is what a reader needs to find the problem. It is not a minimal edit script.

/// Lines shown from each side.
pub(crate) const EXCERPT_LINES: usize = 5;

/// Bytes shown of one line (then `…`).
pub(crate) const LINE_CHARS: usize = 200;

/// `None` when equal; otherwise the excerpts of the primary and the mirror.
pub(crate) fn diff_lines(a: &[u8], b: &[u8]) -> Option<(String, String)> {
    if a == b {
        return None;
    }
    let la: Vec<&[u8]> = lines(a).collect();
    let lb: Vec<&[u8]> = lines(b).collect();
    let prefix = la.iter().zip(&lb).take_while(|(x, y)| x == y).count();
    let (ra, rb) = (
        la.get(prefix..).unwrap_or_default(),
        lb.get(prefix..).unwrap_or_default(),
    );
    let suffix = ra
        .iter()
        .rev()
        .zip(rb.iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let ma = ra.get(..ra.len() - suffix).unwrap_or_default();
    let mb = rb.get(..rb.len() - suffix).unwrap_or_default();
    Some((excerpt('-', prefix + 1, ma), excerpt('+', prefix + 1, mb)))
}

/// Lines with their terminators; a final line without `\n` is yielded as is.
fn lines(t: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = t;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
        let (line, more) = rest.split_at(end);
        rest = more;
        Some(line)
    })
}

fn excerpt(sign: char, first_line: usize, lines: &[&[u8]]) -> String {
    let mut s = format!("@@ {sign}{first_line},{} @@", lines.len());
    for line in lines.iter().take(EXCERPT_LINES) {
        s.push('\n');
        s.push(sign);
        push_visible(&mut s, line);
    }
    if lines.len() > EXCERPT_LINES {
        s.push_str(&format!("\n… {} more lines", lines.len() - EXCERPT_LINES));
    }
    s
}

/// A line as readable text: lossy UTF-8, control characters and a BOM escaped, `\r` shown, the
/// final `\n` dropped (or `\ No newline at end of file` when there is none), at most
/// [`LINE_CHARS`] bytes.
fn push_visible(out: &mut String, line: &[u8]) {
    let (body, newline) = match line.strip_suffix(b"\n") {
        Some(b) => (b, true),
        None => (line, false),
    };
    let text = String::from_utf8_lossy(body);
    let start = out.len();
    for c in text.chars() {
        if out.len() - start >= LINE_CHARS {
            out.push('…');
            break;
        }
        match c {
            '\r' => out.push_str("\\r"),
            '\t' => out.push('\t'),
            c if c.is_control() || c == '\u{feff}' => {
                out.push_str(&format!("\\u{{{:x}}}", c as u32));
            }
            c => out.push(c),
        }
    }
    if !newline {
        out.push_str("\n\\ No newline at end of file");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_texts_have_no_difference() {
        assert_eq!(diff_lines(b"a\nb\n", b"a\nb\n"), None);
        assert_eq!(diff_lines(b"", b""), None);
    }

    #[test]
    fn the_excerpt_starts_at_the_first_differing_line() {
        let (p, m) = diff_lines(b"a\nb\nc\nd\n", b"a\nB\nc\nd\n").unwrap();
        assert_eq!(p, "@@ -2,1 @@\n-b");
        assert_eq!(m, "@@ +2,1 @@\n+B");
    }

    #[test]
    fn insertions_show_an_empty_side() {
        let (p, m) = diff_lines(b"a\nc\n", b"a\nb\nc\n").unwrap();
        assert_eq!(p, "@@ -2,0 @@");
        assert_eq!(m, "@@ +2,1 @@\n+b");
    }

    #[test]
    fn line_endings_and_final_newline_are_visible() {
        let (p, m) = diff_lines(b"a\r\n", b"a\n").unwrap();
        assert_eq!(p, "@@ -1,1 @@\n-a\\r");
        assert_eq!(m, "@@ +1,1 @@\n+a");
        let (p, m) = diff_lines(b"a\n", b"a").unwrap();
        assert_eq!(p, "@@ -1,1 @@\n-a");
        assert_eq!(m, "@@ +1,1 @@\n+a\n\\ No newline at end of file");
    }

    #[test]
    fn excerpts_are_bounded() {
        let a: Vec<u8> = (0..100)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect();
        let long = "x".repeat(10_000);
        let (p, m) = diff_lines(&a, long.as_bytes()).unwrap();
        assert!(p.starts_with("@@ -1,100 @@\n-0\n-1"));
        assert!(p.ends_with("… 95 more lines"));
        assert!(m.len() < LINE_CHARS + 100, "{}", m.len());
    }

    #[test]
    fn binary_junk_is_escaped_not_panicking() {
        let (p, _) = diff_lines(b"\x00\xff\xfe\n", b"\x01\n").unwrap();
        assert!(p.contains("\\u{0}"));
        assert!(p.contains('\u{fffd}'));
    }
}
