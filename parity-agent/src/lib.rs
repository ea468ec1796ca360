#![warn(missing_docs)]
//! parity's agent library: every stage of the pipeline from captured segments to verdicts.
//!
//! The binary (`main.rs`) is a thin command-line layer over these modules. Stages, in data-flow
//! order: capture → reassembly → http → classify → matcher → compare → sinks. Each is a type
//! with a narrow input and output; none reaches into another.

pub mod api;
pub mod capture;
pub mod classify;
pub mod cli;
pub mod compare;
pub mod config;
pub mod exchange;
pub mod http;
pub mod logging;
pub mod mask;
pub mod matcher;
pub mod metrics;
pub mod pipeline;
pub mod reassembly;
pub mod record;
pub mod replay;
pub mod run;
pub mod segment;
pub mod server;
pub mod store;
pub mod stream;
pub mod summary;
pub mod ui;
pub mod units;
