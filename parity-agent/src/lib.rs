#![warn(missing_docs)]
//! parity's agent library: every stage of the pipeline from captured segments to verdicts.
//!
//! The binary (`main.rs`) is a thin command-line layer over these modules. Stages, in data-flow
//! order: capture → reassembly → http → classify → matcher → compare → sinks. Each is a type
//! with a narrow input and output; none reaches into another.

pub mod capture;
pub mod compare;
pub mod config;
pub mod exchange;
pub mod segment;
pub mod stream;
pub mod units;
