//! Human-written sizes (`"64MiB"`) and durations (`"30s"`) for the configuration file.
//!
//! Both parse from TOML strings (and sizes also from plain integers, meaning bytes). They are
//! not general-purpose unit libraries: only the suffixes the README documents are accepted, and an
//! unknown suffix is an error that says which ones exist.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A number of bytes, written `"512"`, `"4KiB"`, `"64MiB"`, `"1GiB"` (also `KB`/`MB`/`GB`, powers
/// of 1000, and `B`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }

    /// The size in bytes as `usize`, saturating on 32-bit hosts.
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }

    /// `n` KiB.
    pub const fn kib(n: u64) -> Self {
        ByteSize(n * 1024)
    }

    /// `n` MiB.
    pub const fn mib(n: u64) -> Self {
        ByteSize(n * 1024 * 1024)
    }

    /// `n` GiB.
    pub const fn gib(n: u64) -> Self {
        ByteSize(n * 1024 * 1024 * 1024)
    }
}

const SIZE_SUFFIXES: &[(&str, u64)] = &[
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
    ("K", 1 << 10),
    ("M", 1 << 20),
    ("G", 1 << 30),
    ("B", 1),
];

/// Why a size or duration string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnitError {
    /// The text is not a number followed by a known suffix.
    #[error("{0:?} is not a size: write a whole number with an optional suffix B, KiB, MiB, GiB, TiB, KB, MB, GB or TB (e.g. \"64MiB\")")]
    BadSize(String),
    /// The text is not a number followed by a known duration suffix.
    #[error("{0:?} is not a duration: write a number with a suffix ns, us, ms, s, m, h or d (e.g. \"30s\", \"1.5m\", \"7d\")")]
    BadDuration(String),
    /// The value does not fit.
    #[error("{0:?} is too large")]
    Overflow(String),
}

impl FromStr for ByteSize {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t
            .find(|c: char| !c.is_ascii_digit() && c != '_')
            .unwrap_or(t.len());
        let (num, suffix) = t.split_at(split);
        let num: String = num.chars().filter(|c| *c != '_').collect();
        if num.is_empty() {
            return Err(UnitError::BadSize(s.to_string()));
        }
        let n: u64 = num
            .parse()
            .map_err(|_| UnitError::Overflow(s.to_string()))?;
        let suffix = suffix.trim();
        let mult = if suffix.is_empty() {
            1
        } else {
            SIZE_SUFFIXES
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(suffix))
                .map(|(_, m)| *m)
                .ok_or_else(|| UnitError::BadSize(s.to_string()))?
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| UnitError::Overflow(s.to_string()))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (name, m) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if n >= m && n.is_multiple_of(m) {
                return write!(f, "{}{}", n / m, name);
            }
        }
        write!(f, "{n}B")
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"64MiB\" or a number of bytes")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("a size cannot be negative ({v})")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration written `"250ms"`, `"30s"`, `"1.5m"`, `"2h"`, `"7d"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Dur(pub Duration);

impl Dur {
    /// The wrapped duration.
    pub const fn get(self) -> Duration {
        self.0
    }

    /// Whole nanoseconds, saturating.
    pub fn as_nanos_u64(self) -> u64 {
        u64::try_from(self.0.as_nanos()).unwrap_or(u64::MAX)
    }

    /// `n` seconds.
    pub const fn secs(n: u64) -> Self {
        Dur(Duration::from_secs(n))
    }
}

impl FromStr for Dur {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(|| UnitError::BadDuration(s.to_string()))?;
        let (num, suffix) = t.split_at(split);
        let n: f64 = num
            .parse()
            .map_err(|_| UnitError::BadDuration(s.to_string()))?;
        let secs_per_unit = match suffix.trim() {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return Err(UnitError::BadDuration(s.to_string())),
        };
        let secs = n * secs_per_unit;
        if !secs.is_finite() || !(0.0..=1e12).contains(&secs) {
            return Err(UnitError::Overflow(s.to_string()));
        }
        Ok(Dur(Duration::from_secs_f64(secs)))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        let ns = d.as_nanos();
        if ns == 0 {
            return f.write_str("0s");
        }
        for (name, unit) in [
            ("d", 86_400_000_000_000u128),
            ("h", 3_600_000_000_000),
            ("m", 60_000_000_000),
            ("s", 1_000_000_000),
            ("ms", 1_000_000),
            ("us", 1_000),
        ] {
            if ns.is_multiple_of(unit) {
                return write!(f, "{}{}", ns / unit, name);
            }
        }
        write!(f, "{ns}ns")
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_and_decimal_suffixes() {
        assert_eq!("64MiB".parse::<ByteSize>(), Ok(ByteSize::mib(64)));
        assert_eq!("1GiB".parse::<ByteSize>(), Ok(ByteSize::gib(1)));
        assert_eq!("4KiB".parse::<ByteSize>(), Ok(ByteSize::kib(4)));
        assert_eq!("1000".parse::<ByteSize>(), Ok(ByteSize(1000)));
        assert_eq!("2MB".parse::<ByteSize>(), Ok(ByteSize(2_000_000)));
        assert_eq!("10B".parse::<ByteSize>(), Ok(ByteSize(10)));
        assert_eq!("1_024".parse::<ByteSize>(), Ok(ByteSize(1024)));
    }

    #[test]
    fn sizes_reject_unknown_suffixes_and_overflow() {
        assert!(matches!(
            "64 parsecs".parse::<ByteSize>(),
            Err(UnitError::BadSize(_))
        ));
        assert!(matches!(
            "MiB".parse::<ByteSize>(),
            Err(UnitError::BadSize(_))
        ));
        assert!(matches!(
            "-1".parse::<ByteSize>(),
            Err(UnitError::BadSize(_))
        ));
        assert!(matches!(
            "99999999999TiB".parse::<ByteSize>(),
            Err(UnitError::Overflow(_))
        ));
    }

    #[test]
    fn sizes_display_round_trips() {
        for s in ["64MiB", "1GiB", "3KiB", "1000B"] {
            assert_eq!(
                s.parse::<ByteSize>().map(|b| b.to_string()),
                Ok(s.to_string())
            );
        }
    }

    #[test]
    fn durations_parse_every_suffix() {
        assert_eq!("30s".parse::<Dur>(), Ok(Dur::secs(30)));
        assert_eq!("250ms".parse::<Dur>(), Ok(Dur(Duration::from_millis(250))));
        assert_eq!("1.5m".parse::<Dur>(), Ok(Dur::secs(90)));
        assert_eq!("7d".parse::<Dur>(), Ok(Dur::secs(7 * 86400)));
        assert_eq!("2h".parse::<Dur>(), Ok(Dur::secs(7200)));
        assert_eq!("100us".parse::<Dur>(), Ok(Dur(Duration::from_micros(100))));
        assert!(matches!(
            "30".parse::<Dur>(),
            Err(UnitError::BadDuration(_))
        ));
        assert!(matches!(
            "5 fortnights".parse::<Dur>(),
            Err(UnitError::BadDuration(_))
        ));
    }

    #[test]
    fn durations_display_round_trips() {
        for s in ["30s", "7d", "250ms", "2h", "5m"] {
            assert_eq!(s.parse::<Dur>().map(|d| d.to_string()), Ok(s.to_string()));
        }
    }
}
