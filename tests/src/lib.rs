//! Fixtures shared by parity's end-to-end tests and the demo: HTTP upstreams and clients,
//! network namespaces, and the agent process.

pub mod demo;
pub mod http1;
pub mod pcapgen;
