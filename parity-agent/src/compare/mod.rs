//! Comparison of a primary and a mirror exchange under the pair's tolerance rules.

pub mod path;
