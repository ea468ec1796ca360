//! The kernel filter's contents computed from the configured targets: the exact
//! `address:port` keys and the port bitmaps (see `parity_common::PortBits`).
//!
//! Addresses use one encoding on both sides: IPv6 bytes, IPv4 as IPv4-mapped IPv6. So
//! `127.0.0.1:80` and `[::ffff:127.0.0.1]:80` are the same target, as in
//! `ServerAddr::covers`, and match IPv4 packets.

use std::net::{IpAddr, SocketAddr};

use parity_common::{addr_from_bytes, Addr, PortBits, TargetKey, MAX_TARGETS};

use super::LiveError;
use crate::config::ServerAddr;

/// Exact keys (sorted, no duplicates) and port bitmaps for a target list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct TargetSet {
    /// Keys of the exact-target map.
    pub keys: Vec<TargetKey>,
    /// The port bitmaps (16 KiB, boxed).
    pub ports: Box<PortBits>,
}

impl TargetSet {
    /// Build the filter for `targets`. Refuses an empty list (the capture would see nothing)
    /// and more exact targets than the kernel map holds.
    pub fn build(targets: &[ServerAddr]) -> Result<TargetSet, LiveError> {
        if targets.is_empty() {
            return Err(LiveError::NoTargets);
        }
        let mut keys = Vec::new();
        let mut ports = Box::new(PortBits::EMPTY);
        for t in targets {
            match t {
                ServerAddr::Exact(addr) => {
                    keys.push(key(addr));
                    ports.set(addr.port(), false);
                }
                ServerAddr::Port(p) => ports.set(*p, true),
            }
        }
        keys.sort_unstable_by_key(|k| (k.addr, k.port));
        keys.dedup();
        let max = usize::try_from(MAX_TARGETS).unwrap_or(usize::MAX);
        if keys.len() > max {
            return Err(LiveError::TooManyTargets {
                count: keys.len(),
                max,
            });
        }
        Ok(TargetSet { keys, ports })
    }
}

/// The exact-map key of a server address.
pub(super) fn key(addr: &SocketAddr) -> TargetKey {
    TargetKey {
        addr: ip_addr(addr.ip()),
        port: addr.port(),
        pad: 0,
    }
}

/// The record and key encoding of an address: IPv6, IPv4 as IPv4-mapped IPv6, as words.
pub(super) fn ip_addr(ip: IpAddr) -> Addr {
    addr_from_bytes(match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> ServerAddr {
        match ServerAddr::parse(s) {
            Ok(a) => a,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn ipv4_and_its_mapped_ipv6_form_are_one_key() {
        let set =
            match TargetSet::build(&[parse("127.0.0.1:8080"), parse("[::ffff:127.0.0.1]:8080")]) {
                Ok(s) => s,
                Err(e) => panic!("{e}"),
            };
        assert_eq!(set.keys.len(), 1);
        let k = set.keys[0];
        let bytes = parity_common::addr_bytes(k.addr);
        assert_eq!(&bytes[..12], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
        assert_eq!(&bytes[12..], &[127, 0, 0, 1]);
        assert_eq!(k.port, 8080);
    }

    #[test]
    fn port_bits_for_exact_and_wildcard_targets() {
        let set = match TargetSet::build(&[
            parse("[::1]:443"),
            parse(":8080"),
            parse("10.0.0.1:65535"),
        ]) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        assert!(PortBits::test(&set.ports.any, 443));
        assert!(!PortBits::test(&set.ports.wildcard, 443));
        assert!(PortBits::test(&set.ports.any, 8080));
        assert!(PortBits::test(&set.ports.wildcard, 8080));
        assert!(PortBits::test(&set.ports.any, 65535));
        assert!(!PortBits::test(&set.ports.any, 80));
        assert!(!PortBits::test(&set.ports.any, 0));
        assert_eq!(set.keys.len(), 2);
        assert_eq!(
            parity_common::addr_bytes(set.keys[0].addr),
            std::net::Ipv6Addr::LOCALHOST.octets()
        );
    }

    #[test]
    fn empty_and_oversized_target_lists_are_refused() {
        assert!(matches!(TargetSet::build(&[]), Err(LiveError::NoTargets)));
        let many: Vec<ServerAddr> = (0..=MAX_TARGETS)
            .map(|i| {
                let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i);
                ServerAddr::Exact(SocketAddr::new(IpAddr::V4(ip), 80))
            })
            .collect();
        assert!(matches!(
            TargetSet::build(&many),
            Err(LiveError::TooManyTargets { .. })
        ));
        // Wildcards take no exact-map entry.
        let ports: Vec<ServerAddr> = (1..=5000).map(ServerAddr::Port).collect();
        assert!(TargetSet::build(&ports).is_ok());
    }
}
