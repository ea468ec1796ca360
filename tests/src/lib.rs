//! Fixtures shared by parity's end-to-end tests and the demo: HTTP upstreams and clients,
//! misbehaving upstreams and hostile clients, network namespaces and cgroups, the agent process,
//! synthetic captures, and test preconditions.

pub mod agent;
pub mod demo;
pub mod env;
pub mod faults;
pub mod fixture;
pub mod harness;
pub mod hostile;
pub mod http1;
pub mod netns;
pub mod pcapgen;
pub mod tcpdump;
