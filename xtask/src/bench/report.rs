//! The results of a benchmark run: rows of samples with their peer, and their rendering as a
//! terminal table, JSON and markdown.
//!
//! A row holds every sample (one per interleaved round), so the median, minimum and maximum are
//! computed here, once, the same way for every benchmark. A ratio to the peer is taken per round
//! (the agent's run and the peer's run of the same round share the machine's state of that
//! moment) and its median reported.

use serde_json::{json, Value};

/// How a figure compares with its target.
#[derive(Clone, Copy, Debug)]
pub enum Cmp {
    /// At least the value.
    AtLeast,
    /// At most the value.
    AtMost,
}

/// What a target applies to.
#[derive(Clone, Copy, Debug)]
pub enum On {
    /// The row's median.
    Median,
    /// The median ratio to the peer.
    Ratio,
}

/// A target of the issues, checked on the row's median or ratio.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    /// The comparison.
    pub cmp: Cmp,
    /// The bound.
    pub value: f64,
    /// What it bounds.
    pub on: On,
}

impl Target {
    /// `≥ value` on the median.
    pub fn at_least(value: f64) -> Target {
        Target {
            cmp: Cmp::AtLeast,
            value,
            on: On::Median,
        }
    }
    /// `≤ value` on the median.
    pub fn at_most(value: f64) -> Target {
        Target {
            cmp: Cmp::AtMost,
            value,
            on: On::Median,
        }
    }
    /// `≥ value` on the ratio.
    pub fn ratio_at_least(value: f64) -> Target {
        Target {
            cmp: Cmp::AtLeast,
            value,
            on: On::Ratio,
        }
    }
    /// `≤ value` on the ratio.
    pub fn ratio_at_most(value: f64) -> Target {
        Target {
            cmp: Cmp::AtMost,
            value,
            on: On::Ratio,
        }
    }

    fn met(&self, v: f64) -> bool {
        match self.cmp {
            Cmp::AtLeast => v >= self.value,
            Cmp::AtMost => v <= self.value,
        }
    }

    fn describe(&self) -> String {
        let op = match self.cmp {
            Cmp::AtLeast => "≥",
            Cmp::AtMost => "≤",
        };
        match self.on {
            On::Median => format!("{op} {}", num(self.value)),
            On::Ratio => format!("{op} {}×", num(self.value)),
        }
    }
}

/// The peer measured in the same rounds.
#[derive(Clone, Debug)]
pub struct Peer {
    /// What the peer is, with its unit (`tshark (MB/s)`).
    pub label: String,
    /// Its samples, one per round.
    pub samples: Vec<f64>,
    /// Per-round ratio of the row to the peer, oriented as `ratio_label` says.
    pub ratios: Vec<f64>,
    /// What the ratio is (`parity ÷ tshark`).
    pub ratio_label: String,
}

/// One figure of one benchmark.
#[derive(Clone, Debug)]
pub struct Row {
    /// The benchmark (`replay`, `capture-tc`, ...).
    pub bench: String,
    /// The figure, with its unit (`records: throughput (MB/s)`).
    pub figure: String,
    /// One sample per round (or per reading, where a benchmark says so).
    pub samples: Vec<f64>,
    /// The peer, when the figure has one.
    pub peer: Option<Peer>,
    /// The target, when an issue sets one.
    pub target: Option<Target>,
    /// In the JSON only, not in the tables.
    pub detail: bool,
}

impl Row {
    /// A row without peer or target.
    pub fn new(bench: &str, figure: &str, samples: Vec<f64>) -> Row {
        Row {
            bench: bench.to_string(),
            figure: figure.to_string(),
            samples,
            peer: None,
            target: None,
            detail: false,
        }
    }

    /// Keep the row out of the tables (it stays in the JSON).
    pub fn detail(mut self) -> Row {
        self.detail = true;
        self
    }

    /// With a peer; `ratio` computes the per-round ratio from (row sample, peer sample).
    pub fn peer(
        mut self,
        label: &str,
        samples: Vec<f64>,
        ratio_label: &str,
        ratio: impl Fn(f64, f64) -> f64,
    ) -> Row {
        let ratios = self
            .samples
            .iter()
            .zip(&samples)
            .map(|(a, b)| ratio(*a, *b))
            .collect();
        self.peer = Some(Peer {
            label: label.to_string(),
            samples,
            ratios,
            ratio_label: ratio_label.to_string(),
        });
        self
    }

    /// With a target.
    pub fn target(mut self, t: Target) -> Row {
        self.target = Some(t);
        self
    }

    /// The median of the samples.
    pub fn median(&self) -> f64 {
        median(&self.samples)
    }

    /// The median ratio to the peer.
    pub fn ratio(&self) -> Option<f64> {
        self.peer.as_ref().map(|p| median(&p.ratios))
    }

    /// Whether the target is met (`None` without target or without data).
    pub fn met(&self) -> Option<bool> {
        let t = self.target?;
        let v = match t.on {
            On::Median => self.median(),
            On::Ratio => self.ratio()?,
        };
        if v.is_nan() {
            return None;
        }
        Some(t.met(v))
    }

    fn target_cell(&self) -> String {
        match (self.target, self.met()) {
            (Some(t), Some(true)) => format!("{} ok", t.describe()),
            (Some(t), Some(false)) => format!("{} MISSED", t.describe()),
            (Some(t), None) => format!("{} (no data)", t.describe()),
            (None, _) => String::new(),
        }
    }

    fn cells(&self) -> [String; 8] {
        let (peer, peer_median, ratio) = match &self.peer {
            Some(p) => (
                p.label.clone(),
                num(median(&p.samples)),
                format!("{}× ({})", num(median(&p.ratios)), p.ratio_label),
            ),
            None => (String::new(), String::new(), String::new()),
        };
        [
            self.bench.clone(),
            self.figure.clone(),
            num(self.median()),
            num(min(&self.samples)),
            num(max(&self.samples)),
            if peer.is_empty() {
                String::new()
            } else {
                format!("{peer}: {peer_median}")
            },
            ratio,
            self.target_cell(),
        ]
    }

    fn json(&self) -> Value {
        json!({
            "bench": self.bench,
            "figure": self.figure,
            "median": finite(self.median()),
            "min": finite(min(&self.samples)),
            "max": finite(max(&self.samples)),
            "samples": self.samples.iter().map(|v| finite(*v)).collect::<Vec<_>>(),
            "peer": self.peer.as_ref().map(|p| json!({
                "label": p.label,
                "median": finite(median(&p.samples)),
                "samples": p.samples.iter().map(|v| finite(*v)).collect::<Vec<_>>(),
                "ratio": p.ratio_label,
                "ratio_median": finite(median(&p.ratios)),
                "ratios": p.ratios.iter().map(|v| finite(*v)).collect::<Vec<_>>(),
            })),
            "target": self.target.map(|t| t.describe()),
            "target_met": self.met(),
            "detail": self.detail,
        })
    }
}

fn finite(v: f64) -> Value {
    if v.is_finite() {
        json!(v)
    } else {
        Value::Null
    }
}

/// The median (mean of the middle two for an even count); NaN when empty.
pub fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn min(v: &[f64]) -> f64 {
    v.iter()
        .copied()
        .filter(|x| !x.is_nan())
        .fold(f64::NAN, f64::min)
}

fn max(v: &[f64]) -> f64 {
    v.iter()
        .copied()
        .filter(|x| !x.is_nan())
        .fold(f64::NAN, f64::max)
}

/// A number for humans: three significant digits, no exponent.
pub fn num(v: f64) -> String {
    if v.is_nan() {
        return "–".into();
    }
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 1e7 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else if a >= 0.01 {
        format!("{v:.3}")
    } else {
        format!("{v:.5}")
    }
}

const HEADER: [&str; 8] = [
    "bench", "figure", "median", "min", "max", "peer", "ratio", "target",
];

/// The rows as an aligned text table.
pub fn text_table(rows: &[Row]) -> String {
    let cells: Vec<[String; 8]> = rows.iter().filter(|r| !r.detail).map(Row::cells).collect();
    let mut width = HEADER.map(|h| h.chars().count());
    for c in &cells {
        for (i, s) in c.iter().enumerate() {
            width[i] = width[i].max(s.chars().count());
        }
    }
    let line = |c: &[String]| -> String {
        let mut s = String::new();
        for (i, cell) in c.iter().enumerate() {
            let pad = width[i] - cell.chars().count();
            // Numbers right-aligned, words left-aligned.
            if (2..=4).contains(&i) {
                s.push_str(&" ".repeat(pad));
                s.push_str(cell);
            } else {
                s.push_str(cell);
                s.push_str(&" ".repeat(pad));
            }
            s.push_str("  ");
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(&HEADER.map(String::from));
    out.push_str(&line(&width.map(|w| "-".repeat(w))));
    for c in &cells {
        out.push_str(&line(c));
    }
    out
}

/// The rows as a markdown table.
pub fn markdown_table(rows: &[Row]) -> String {
    let mut out = format!("| {} |\n", HEADER.join(" | "));
    out.push_str("|---|---|--:|--:|--:|---|---|---|\n");
    for r in rows.iter().filter(|r| !r.detail) {
        out.push_str(&format!("| {} |\n", r.cells().join(" | ")));
    }
    out
}

/// The rows as JSON values.
pub fn json_rows(rows: &[Row]) -> Vec<Value> {
    rows.iter().map(Row::json).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_nan() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[f64::NAN, 5.0]), 5.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn ratio_is_the_median_of_per_round_ratios_not_the_ratio_of_medians() {
        // Round 2 is slow for both: per-round ratios are all 2.
        let r = Row::new("x", "y", vec![2.0, 20.0, 4.0]).peer(
            "p",
            vec![1.0, 10.0, 2.0],
            "x ÷ p",
            |a, b| a / b,
        );
        assert_eq!(r.ratio(), Some(2.0));
    }

    #[test]
    fn targets_on_median_and_ratio() {
        let r = Row::new("x", "y", vec![0.0, 0.0, 1.0]).target(Target::at_most(0.0));
        assert_eq!(r.met(), Some(true));
        let r = Row::new("x", "y", vec![10.0])
            .peer("p", vec![1.0], "", |a, b| a / b)
            .target(Target::ratio_at_least(50.0));
        assert_eq!(r.met(), Some(false));
        assert!(text_table(&[r]).contains("MISSED"));
    }

    #[test]
    fn numbers_for_humans() {
        assert_eq!(num(1234.4), "1234");
        assert_eq!(num(12.345), "12.3");
        assert_eq!(num(0.9712), "0.971");
        assert_eq!(num(25_000_000.0), "25.0M");
        assert_eq!(num(f64::NAN), "–");
    }
}
