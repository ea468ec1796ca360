//! Who is the client of a connection the capture joined after its handshake.
//!
//! With a SYN or SYN-ACK the answer is in the flags and this module is not consulted. Without
//! them the evidence is weighed strongest first: the first payload (a request line means its
//! sender is the client, a status line that it is the server), then the configured server
//! addresses, then port conventions. The order in which the two sides happened to send is never
//! evidence: a capture that starts in the middle of a response would otherwise swap the roles.

use std::net::SocketAddr;

use crate::config::ServerAddr;

/// What the first payload of a mid-stream connection says about its sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PayloadHint {
    /// It starts with a request line: the sender is the client.
    SenderIsClient,
    /// It starts with `HTTP/`: the sender is the server.
    SenderIsServer,
    /// Nothing conclusive.
    Unknown,
}

/// Longest method token considered; real methods are far shorter, and a bound keeps the scan of
/// arbitrary payload short.
const MAX_METHOD: usize = 24;

/// Methods that may be followed by a target which is neither origin-form nor absolute-form
/// (`CONNECT host:port`), recognised by name.
const KNOWN_METHODS: &[&[u8]] = &[
    b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE", b"PATCH",
];

/// Ports that are conventionally a server's, beyond the privileged range.
const COMMON_SERVER_PORTS: &[u16] = &[
    3000, 4000, 4443, 5000, 5601, 8000, 8008, 8080, 8081, 8088, 8443, 8888, 9000, 9080, 9090, 9200,
    9443,
];

/// Start of the ephemeral port range (IANA and Linux since 2.6: 32768 and above).
const EPHEMERAL_START: u16 = 32768;

/// Classify the first payload bytes of a connection.
pub(super) fn payload_hint(payload: &[u8]) -> PayloadHint {
    if payload.starts_with(b"HTTP/") {
        return PayloadHint::SenderIsServer;
    }
    let method_len = payload
        .iter()
        .take(MAX_METHOD + 1)
        .position(|b| !is_tchar(*b))
        .unwrap_or(payload.len().min(MAX_METHOD + 1));
    if method_len == 0 || method_len > MAX_METHOD || payload.get(method_len) != Some(&b' ') {
        return PayloadHint::Unknown;
    }
    let method = &payload[..method_len];
    let target = &payload[method_len + 1..];
    let origin_or_absolute = matches!(target.first(), Some(b'/' | b'*'))
        || target
            .get(..4)
            .is_some_and(|t| t.eq_ignore_ascii_case(b"http"));
    if origin_or_absolute || KNOWN_METHODS.contains(&method) {
        PayloadHint::SenderIsClient
    } else {
        PayloadHint::Unknown
    }
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Decide whether `src` (the sender of the first payload seen) is the client.
pub(super) fn src_is_client(
    src: &SocketAddr,
    dst: &SocketAddr,
    payload: &[u8],
    servers: &[ServerAddr],
) -> bool {
    match payload_hint(payload) {
        PayloadHint::SenderIsClient => return true,
        PayloadHint::SenderIsServer => return false,
        PayloadHint::Unknown => {}
    }
    let covered = |a: &SocketAddr| servers.iter().any(|s| s.covers(a));
    match (covered(src), covered(dst)) {
        (false, true) => return true,
        (true, false) => return false,
        _ => {}
    }
    !dst_loses_on_ports(src, dst)
}

/// Port conventions: is `src` rather than `dst` the server?
fn dst_loses_on_ports(src: &SocketAddr, dst: &SocketAddr) -> bool {
    let (sp, dp) = (src.port(), dst.port());
    let known = |p: u16| p < 1024 || COMMON_SERVER_PORTS.contains(&p);
    let ephemeral = |p: u16| p >= EPHEMERAL_START;
    match (known(sp), known(dp)) {
        (true, false) => return true,
        (false, true) => return false,
        _ => {}
    }
    match (ephemeral(sp), ephemeral(dp)) {
        (false, true) => return true,
        (true, false) => return false,
        _ => {}
    }
    if sp != dp {
        return sp < dp;
    }
    // Same port on both sides: no convention applies. Pick the lower address, which does not
    // depend on which side spoke first.
    src.ip() < dst.ip()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn request_lines_mark_the_client() {
        for p in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"POST /api HTTP/1.1",
            b"OPTIONS * HTTP/1.1",
            b"GET http://example.com/ HTTP/1.1",
            b"PROPFIND /dav HTTP/1.1",
            b"CONNECT example.com:443 HTTP/1.1",
        ] {
            assert_eq!(
                payload_hint(p),
                PayloadHint::SenderIsClient,
                "{}",
                String::from_utf8_lossy(p)
            );
        }
    }

    #[test]
    fn status_lines_mark_the_server() {
        assert_eq!(
            payload_hint(b"HTTP/1.1 200 OK\r\n"),
            PayloadHint::SenderIsServer
        );
    }

    #[test]
    fn body_bytes_are_inconclusive() {
        for p in [
            &b""[..],
            b"{\"a\": 1}",
            b"hello world",
            b"GET",
            b"GET/ x",
            b" GET /",
            b"\x00\x01\x02",
            b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA /",
        ] {
            assert_eq!(
                payload_hint(p),
                PayloadHint::Unknown,
                "{}",
                String::from_utf8_lossy(p)
            );
        }
    }

    #[test]
    fn server_hint_beats_ports() {
        let servers = [ServerAddr::Exact(a("10.0.0.2:40000"))];
        assert!(src_is_client(
            &a("10.0.0.1:80"),
            &a("10.0.0.2:40000"),
            b"\x00",
            &servers
        ));
        assert!(!src_is_client(
            &a("10.0.0.2:40000"),
            &a("10.0.0.1:80"),
            b"\x00",
            &servers
        ));
    }

    #[test]
    fn port_conventions() {
        let none: [ServerAddr; 0] = [];
        // Known port against anything else.
        assert!(src_is_client(
            &a("1.1.1.1:50000"),
            &a("2.2.2.2:8080"),
            b"",
            &none
        ));
        assert!(!src_is_client(
            &a("2.2.2.2:443"),
            &a("1.1.1.1:2000"),
            b"",
            &none
        ));
        // Neither known: the non-ephemeral one serves.
        assert!(src_is_client(
            &a("1.1.1.1:40000"),
            &a("2.2.2.2:12345"),
            b"",
            &none
        ));
        // Both ephemeral: the lower port.
        assert!(!src_is_client(
            &a("1.1.1.1:40000"),
            &a("2.2.2.2:50000"),
            b"",
            &none
        ));
        // The same port: the lower address, whichever side sends.
        assert!(!src_is_client(
            &a("1.1.1.1:7000"),
            &a("2.2.2.2:7000"),
            b"",
            &none
        ));
        assert!(src_is_client(
            &a("2.2.2.2:7000"),
            &a("1.1.1.1:7000"),
            b"",
            &none
        ));
    }
}
