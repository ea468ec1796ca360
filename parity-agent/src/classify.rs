//! Which pair and role an exchange belongs to, decided by its server address.
//!
//! A primary and its mirror are told apart only by where the request went: the configuration
//! lists each pair's server addresses and validation guarantees no address belongs to two roles.
//! Exact `ip:port` entries win over `:port` wildcards. Exchanges of no pair are not classified (they
//! still produce exchange records).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::config::{PairConfig, ServerAddr};

/// The side of a pair an exchange was sent to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The service in production.
    Primary,
    /// The shadow copy being validated.
    Mirror,
}

impl Role {
    /// `"primary"` or `"mirror"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Mirror => "mirror",
        }
    }

    /// Index 0 for the primary, 1 for the mirror.
    pub fn index(self) -> usize {
        match self {
            Role::Primary => 0,
            Role::Mirror => 1,
        }
    }

    /// The other side.
    pub fn other(self) -> Role {
        match self {
            Role::Primary => Role::Mirror,
            Role::Mirror => Role::Primary,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Maps server addresses to `(pair index, role)`.
#[derive(Clone, Debug, Default)]
pub struct Classifier {
    exact: FxHashMap<SocketAddr, (usize, Role)>,
    ports: FxHashMap<u16, (usize, Role)>,
}

impl Classifier {
    /// Build the map from validated pairs (indexes follow `pairs`).
    pub fn new(pairs: &[PairConfig]) -> Classifier {
        let mut c = Classifier::default();
        for (i, p) in pairs.iter().enumerate() {
            for (role, addrs) in [(Role::Primary, &p.primary), (Role::Mirror, &p.mirror)] {
                for a in addrs {
                    match a {
                        ServerAddr::Exact(s) => {
                            c.exact.insert(canonical(*s), (i, role));
                        }
                        ServerAddr::Port(port) => {
                            c.ports.insert(*port, (i, role));
                        }
                    }
                }
            }
        }
        c
    }

    /// The pair and role of an exchange whose server is `server`.
    pub fn classify(&self, server: &SocketAddr) -> Option<(usize, Role)> {
        if self.exact.is_empty() && self.ports.is_empty() {
            return None;
        }
        self.exact
            .get(&canonical(*server))
            .or_else(|| self.ports.get(&server.port()))
            .copied()
    }

    /// No pair is configured.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.ports.is_empty()
    }
}

/// IPv4-mapped IPv6 addresses as plain IPv4, so `[::ffff:127.0.0.1]:80` finds `127.0.0.1:80`.
fn canonical(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => a,
        },
        IpAddr::V4(_) => a,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn exact_addresses_win_over_port_wildcards() {
        let c = Config::parse(
            "[[pair]]\nname = \"a\"\nprimary = \"127.0.0.1:80\"\nmirror = \":81\"\n\n[[pair]]\nname = \"b\"\nprimary = [\"10.0.0.1:90\", \"[::1]:90\"]\nmirror = \"10.0.0.2:90\"\n",
            "t",
        )
        .unwrap();
        let cl = Classifier::new(&c.pairs);
        assert_eq!(
            cl.classify(&"127.0.0.1:80".parse().unwrap()),
            Some((0, Role::Primary))
        );
        assert_eq!(
            cl.classify(&"[::ffff:127.0.0.1]:80".parse().unwrap()),
            Some((0, Role::Primary))
        );
        assert_eq!(
            cl.classify(&"192.168.1.1:81".parse().unwrap()),
            Some((0, Role::Mirror))
        );
        assert_eq!(
            cl.classify(&"[::1]:90".parse().unwrap()),
            Some((1, Role::Primary))
        );
        assert_eq!(
            cl.classify(&"10.0.0.2:90".parse().unwrap()),
            Some((1, Role::Mirror))
        );
        assert_eq!(cl.classify(&"10.0.0.3:90".parse().unwrap()), None);
        assert_eq!(cl.classify(&"127.0.0.2:80".parse().unwrap()), None);
    }
}
