//! Exact decimal semantics for JSON number literals.
//!
//! A JSON number is compared by the value its literal denotes, read as an exact decimal: `1`,
//! `1.0`, `1e0`, `10e-1` and `0.1e1` are one value, `9007199254740993` and `9007199254740992` are
//! two, and `-0` equals `0`. Nothing here goes through `f64` for equality; a literal is reduced to
//! its significant digits (a borrowed view of the text, leading and trailing zeros removed) and the
//! power of ten of its first digit, so comparing never allocates and a literal such as
//! `1e999999999` costs what its text costs. `f64` is used only for tolerance tests
//! ([`within_tolerance`]), where approximation is the point.
//!
//! Exponents are exact up to 18 significant digits (|exponent| < 10^18). Beyond that a literal's
//! scale is "huge": two such literals are equal only when their texts are identical, which
//! misses equal values written with different mantissas (`10e1…0` against `1e1…1`, with
//! exponents of 19 or more digits) — an accepted blind spot far outside any real API.
//!
//! This is not a general number library: there is no arithmetic beyond what comparing needs.

use std::hash::Hasher;

/// A number literal, parsed and validated against RFC 8259's grammar, borrowing its text.
#[derive(Clone, Copy, Debug)]
pub struct Number<'a> {
    raw: &'a str,
    neg: bool,
    int: &'a [u8],
    frac: &'a [u8],
    exp: Exponent,
    has_frac: bool,
}

/// The exponent part's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exponent {
    /// Fits in 18 significant digits.
    Small(i64),
    /// 19 or more significant digits; `true` when negative.
    Huge(bool),
}

/// The scale of a non-zero number: the power of ten of the position just before its first
/// significant digit (the value is `0.d1d2… × 10^scale`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scale {
    Exact(i64),
    Huge(bool),
}

/// Largest exponent magnitude kept exactly (18 digits, so adding a digit count never overflows).
const EXP_LIMIT: i64 = 999_999_999_999_999_999;

impl<'a> Number<'a> {
    /// Parse a complete literal (`-?int(.frac)?([eE][+-]?digits)?`); `None` when `s` is not
    /// exactly one JSON number.
    pub fn parse(s: &'a str) -> Option<Number<'a>> {
        let b = s.as_bytes();
        let mut i = 0;
        let neg = b.first() == Some(&b'-');
        if neg {
            i = 1;
        }
        let int_start = i;
        match b.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                while b.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
            }
            _ => return None,
        }
        let int = b.get(int_start..i)?;
        let mut frac: &[u8] = &[];
        let mut has_frac = false;
        if b.get(i) == Some(&b'.') {
            let start = i + 1;
            i = start;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            if i == start {
                return None;
            }
            frac = b.get(start..i)?;
            has_frac = true;
        }
        let mut exp = Exponent::Small(0);
        let mut has_exp = false;
        if matches!(b.get(i), Some(b'e' | b'E')) {
            has_exp = true;
            i += 1;
            let eneg = match b.get(i) {
                Some(b'-') => {
                    i += 1;
                    true
                }
                Some(b'+') => {
                    i += 1;
                    false
                }
                _ => false,
            };
            let start = i;
            let mut value: i64 = 0;
            let mut huge = false;
            while let Some(d) = b.get(i).filter(|d| d.is_ascii_digit()) {
                if value > EXP_LIMIT / 10 {
                    huge = true;
                } else {
                    value = value * 10 + i64::from(d - b'0');
                }
                i += 1;
            }
            if i == start {
                return None;
            }
            exp = if huge {
                Exponent::Huge(eneg)
            } else {
                Exponent::Small(if eneg { -value } else { value })
            };
        }
        if i != b.len() {
            return None;
        }
        Some(Number {
            raw: s,
            neg,
            int,
            frac,
            exp,
            has_frac: has_frac || has_exp,
        })
    }

    /// The literal as written.
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    /// Written as an integer: no fraction and no exponent part (`1`, not `1.0` or `1e0`).
    pub fn is_integer_literal(&self) -> bool {
        !self.has_frac
    }

    /// The significant digits (first to last non-zero digit) as two slices of the text, or
    /// `None` when the value is zero; with the position of the first one inside `int ++ frac`.
    fn significant(&self) -> Option<(&'a [u8], &'a [u8], usize)> {
        let first_int = self.int.iter().position(|&d| d != b'0');
        let (first, head_int) = match first_int {
            Some(p) => (p, true),
            None => (
                self.int.len() + self.frac.iter().position(|&d| d != b'0')?,
                false,
            ),
        };
        let last_frac = self.frac.iter().rposition(|&d| d != b'0');
        let (int_part, frac_part): (&[u8], &[u8]) = match (head_int, last_frac) {
            (true, Some(l)) => (
                self.int.get(first..).unwrap_or_default(),
                self.frac.get(..=l).unwrap_or_default(),
            ),
            (true, None) => {
                let tail = self.int.iter().rposition(|&d| d != b'0').unwrap_or(first);
                (self.int.get(first..=tail).unwrap_or_default(), &[][..])
            }
            (false, Some(l)) => (
                &[][..],
                self.frac
                    .get(first - self.int.len()..=l)
                    .unwrap_or_default(),
            ),
            (false, None) => return None,
        };
        Some((int_part, frac_part, first))
    }

    fn scale(&self, first: usize) -> Scale {
        match self.exp {
            // |e| < 10^18 and the digit counts are below 2^32, so this cannot overflow.
            Exponent::Small(e) => Scale::Exact(e + self.int.len() as i64 - first as i64),
            Exponent::Huge(neg) => Scale::Huge(neg),
        }
    }

    /// Exact decimal equality.
    pub fn value_eq(&self, other: &Number<'_>) -> bool {
        if self.raw == other.raw {
            return true;
        }
        match (self.significant(), other.significant()) {
            (None, None) => true,
            (Some((ai, af, afirst)), Some((bi, bf, bfirst))) => {
                if self.neg != other.neg {
                    return false;
                }
                match (self.scale(afirst), other.scale(bfirst)) {
                    (Scale::Exact(a), Scale::Exact(b)) if a == b => {}
                    _ => return false,
                }
                ai.len() + af.len() == bi.len() + bf.len()
                    && ai.iter().chain(af).eq(bi.iter().chain(bf))
            }
            _ => false,
        }
    }

    /// Feed the value (not the spelling) into `h`: equal values hash equally.
    pub fn hash_value<H: Hasher>(&self, h: &mut H) {
        match self.significant() {
            None => h.write_u8(0),
            Some((i, f, first)) => {
                h.write_u8(if self.neg { 2 } else { 1 });
                match self.scale(first) {
                    Scale::Exact(s) => h.write_i64(s),
                    // Huge scales compare by text only; the text is hashed below as digits
                    // plus this marker, which keeps equal texts equal.
                    Scale::Huge(n) => h.write_u8(if n { 3 } else { 4 }),
                }
                // Digit by digit: where the decimal point fell must not change the hash.
                for &d in i.iter().chain(f) {
                    h.write_u8(d);
                }
                if let Scale::Huge(_) = self.scale(first) {
                    h.write(self.raw.as_bytes());
                }
            }
        }
    }

    /// The nearest `f64` (infinite when out of range), for tolerance tests only.
    pub fn to_f64(&self) -> f64 {
        self.raw.parse::<f64>().unwrap_or(f64::NAN)
    }
}

/// Are `a` and `b` equal within `max(absolute, relative × max(|a|, |b|))`? Exact equality is
/// tested first, so equal literals too large for `f64` still pass; otherwise a value that is not
/// finite as `f64` never passes.
pub fn within_tolerance(a: &Number<'_>, b: &Number<'_>, relative: f64, absolute: f64) -> bool {
    if a.value_eq(b) {
        return true;
    }
    let (x, y) = (a.to_f64(), b.to_f64());
    if !x.is_finite() || !y.is_finite() {
        return false;
    }
    let allowed = absolute.max(relative * x.abs().max(y.abs()));
    (x - y).abs() <= allowed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Number<'_> {
        Number::parse(s).unwrap_or_else(|| panic!("{s} should parse"))
    }

    fn eq(a: &str, b: &str) -> bool {
        let (x, y) = (n(a), n(b));
        let r = x.value_eq(&y);
        assert_eq!(r, y.value_eq(&x), "symmetry {a} {b}");
        if r {
            let mut h1 = rustc_hash::FxHasher::default();
            let mut h2 = rustc_hash::FxHasher::default();
            x.hash_value(&mut h1);
            y.hash_value(&mut h2);
            assert_eq!(
                h1.finish(),
                h2.finish(),
                "equal values hash equally: {a} {b}"
            );
        }
        r
    }

    #[test]
    fn equal_values_written_differently_are_equal() {
        for (a, b) in [
            ("1", "1.0"),
            ("1", "1e0"),
            ("1", "10e-1"),
            ("1", "0.1e1"),
            ("1", "1.000E+0"),
            ("100", "1e2"),
            ("100", "1E+2"),
            ("0.5", "5e-1"),
            ("123.456", "123456e-3"),
            ("-0", "0"),
            ("-0.0", "0e5"),
            ("0", "0.000"),
            ("120", "12e1"),
            ("0.0012", "1.2e-3"),
            ("1e999999999", "10e999999998"),
        ] {
            assert!(eq(a, b), "{a} == {b}");
        }
    }

    #[test]
    fn different_values_are_different() {
        for (a, b) in [
            ("9007199254740993", "9007199254740992"),
            ("1", "-1"),
            ("1", "2"),
            ("1", "10"),
            ("0.1", "0.01"),
            ("1e2", "1e3"),
            ("12", "21"),
            ("1.5", "1.50001"),
            ("1e999999999", "1e999999998"),
            ("0", "1e-999999999"),
            (
                "100000000000000000000000000001",
                "100000000000000000000000000000",
            ),
        ] {
            assert!(!eq(a, b), "{a} != {b}");
        }
    }

    #[test]
    fn huge_exponents_do_not_allocate_or_overflow() {
        let huge = format!("1e{}", "9".repeat(40));
        let huge2 = format!("1e-{}", "9".repeat(40));
        assert!(eq(&huge, &huge));
        assert!(!eq(&huge, &huge2));
        assert!(!eq(&huge, "1"));
        assert!(eq("1e999999999999999999", "1e999999999999999999"));
        assert!(n(&huge).to_f64().is_infinite());
        assert!(!within_tolerance(&n(&huge), &n("1e308"), 1.0, 0.0));
    }

    #[test]
    fn integer_literal_means_no_fraction_and_no_exponent() {
        assert!(n("10").is_integer_literal());
        assert!(n("-0").is_integer_literal());
        assert!(!n("1.0").is_integer_literal());
        assert!(!n("1e0").is_integer_literal());
    }

    #[test]
    fn the_grammar_is_rfc_8259() {
        for bad in [
            "", "-", "01", "1.", ".1", "1e", "1e+", "+1", "0x10", "1.0.0", "NaN", "Infinity", "1 ",
            " 1", "--1", "1E-+2",
        ] {
            assert!(Number::parse(bad).is_none(), "{bad:?} must be refused");
        }
        for good in ["0", "-0", "0.0", "1E+2", "1e-2", "123.456e789", "-9.9E-9"] {
            assert!(Number::parse(good).is_some(), "{good:?} must parse");
        }
    }

    #[test]
    fn tolerance_uses_the_larger_of_absolute_and_relative() {
        assert!(within_tolerance(&n("100"), &n("100.05"), 0.001, 0.0));
        assert!(!within_tolerance(&n("100"), &n("100.2"), 0.001, 0.0));
        assert!(within_tolerance(&n("0"), &n("0.004"), 0.001, 0.005));
        assert!(!within_tolerance(&n("0"), &n("0.006"), 0.001, 0.005));
        assert!(within_tolerance(&n("1e400"), &n("10e399"), 0.0, 0.0));
        assert!(!within_tolerance(&n("1e400"), &n("2e400"), 1.0, 0.0));
    }
}
