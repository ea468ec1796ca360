//! Privileged: the `tc` engine on `lo` captures each segment exactly once, whole (GSO
//! super-packets included), IPv4 and IPv6, SYN and FIN, and nothing but its targets.
#![cfg(feature = "ebpf")]

#[path = "ebpf_support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use parity_agent::capture::ebpf::LiveCapture;
use parity_agent::config::ServerAddr;
use parity_agent::segment::Segment;
use tokio::net::TcpListener;

struct Exchange {
    client: SocketAddr,
    server: SocketAddr,
    request: Vec<u8>,
    response: Vec<u8>,
}

fn response_len(request_len: usize) -> usize {
    if request_len > 1_000_000 {
        6_000_000
    } else {
        300
    }
}

fn both_fins(segments: &[Segment], exchanges: &[Exchange]) -> bool {
    exchanges.iter().all(|x| {
        let fin = |src, dst| {
            segments
                .iter()
                .any(|s| support::same(s.src, src) && support::same(s.dst, dst) && s.flags.fin())
        };
        fin(x.client, x.server) && fin(x.server, x.client)
    })
}

/// Check one exchange. `retransmitted`: segments the host retransmitted during the test; a
/// passive capture sees those twice, so that many duplicates (of identical bytes) are allowed.
fn check_exchange(segments: &[Segment], x: &Exchange, retransmitted: u64) {
    let up = support::reassemble(segments, x.client, x.server);
    let down = support::reassemble(segments, x.server, x.client);
    let what = format!("{} -> {}", x.client, x.server);
    // A retransmitted segment of up to 64 KiB is up to 4 chunk records.
    let allowed = usize::try_from(retransmitted * 4).unwrap_or(usize::MAX);
    for (dir, d) in [("request", &up), ("response", &down)] {
        assert_eq!(d.syn, 1, "{what} {dir}: SYN seen once");
        assert!(
            d.fin >= 1 && d.fin <= 1 + allowed,
            "{what} {dir}: FIN seen {} times",
            d.fin
        );
        assert!(
            d.conflicts.is_empty(),
            "{what} {dir}: overlapping bytes differ {:?}",
            d.conflicts
        );
        assert!(
            d.duplicates.len() <= allowed,
            "{what} {dir}: duplicates {:?} with {retransmitted} retransmissions on the host",
            d.duplicates
        );
    }
    assert_eq!(up.bytes.len(), x.request.len(), "{what}: request length");
    assert!(up.bytes == x.request, "{what}: request bytes differ");
    assert_eq!(
        down.bytes.len(),
        x.response.len(),
        "{what}: response length"
    );
    assert!(down.bytes == x.response, "{what}: response bytes differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tc_on_lo_captures_every_segment_once_ipv4_and_ipv6() {
    if !support::privileged("tc_on_lo_captures_every_segment_once_ipv4_and_ipv6") {
        return;
    }
    let _serial = support::serial().await;
    support::init_tracing();

    let l4 = TcpListener::bind("127.0.0.1:0").await.expect("bind v4");
    let l6 = TcpListener::bind("[::1]:0").await.expect("bind v6");
    let other = TcpListener::bind("127.0.0.1:0").await.expect("bind other");
    let (a4, a6, ao) = (
        l4.local_addr().unwrap(),
        l6.local_addr().unwrap(),
        other.local_addr().unwrap(),
    );
    tokio::spawn(support::serve(l4, response_len));
    tokio::spawn(support::serve(l6, response_len));
    tokio::spawn(support::serve(other, response_len));

    let retrans_before = support::retransmitted_segments();
    let cfg = support::tc_config(&["lo"], vec![ServerAddr::Exact(a4), ServerAddr::Exact(a6)]);
    let mut capture = LiveCapture::start(&cfg, &support::limits(64 << 20)).expect("start");
    assert_eq!(capture.attachments(), ["tc egress lo"]);

    let traffic = tokio::spawn(async move {
        let mut done = Vec::new();
        for (server, request) in [
            (a4, support::pattern(200, 1)),
            (a6, support::pattern(200, 2)),
            (a4, support::pattern(5_000_000, 3)),
            (a6, support::pattern(5_000_000, 4)),
            (ao, support::pattern(200, 5)),
        ] {
            let (client, response) = support::exchange(server, &request).await;
            assert_eq!(
                response,
                support::pattern(response_len(request.len()), request.len() as u64)
            );
            done.push(Exchange {
                client,
                server,
                request,
                response,
            });
        }
        done
    });
    let mut segments = Vec::new();
    let exchanges = loop {
        segments
            .extend(support::collect(&mut capture, Duration::from_millis(200), |_| false).await);
        if traffic.is_finished() {
            break traffic.await.expect("traffic");
        }
    };
    let targets: Vec<&Exchange> = exchanges.iter().filter(|x| x.server != ao).collect();
    let expected: Vec<Exchange> = targets
        .iter()
        .map(|x| Exchange {
            client: x.client,
            server: x.server,
            request: x.request.clone(),
            response: x.response.clone(),
        })
        .collect();
    let rest = support::collect(&mut capture, Duration::from_secs(10), |s| {
        let mut all = segments.clone();
        all.extend_from_slice(s);
        both_fins(&all, &expected)
    })
    .await;
    segments.extend(rest);

    let retransmitted = support::retransmitted_segments() - retrans_before;
    for x in &expected {
        check_exchange(&segments, x, retransmitted);
    }
    assert!(
        !support::touches_port(&segments, ao.port()),
        "non-target port captured"
    );
    let dropped = capture.dropped();
    assert!(dropped.iter().all(|(_, n)| *n == 0), "losses: {dropped:?}");
    let counters = capture.counters();
    eprintln!(
        "segments {} counters {counters:?} dropped {dropped:?} retransmitted {retransmitted}",
        segments.len()
    );
    let programs = capture.programs();
    capture.detach();
    support::assert_released("after detach", &programs);
}

fn conn_seen(segments: &[Segment], client: SocketAddr) -> bool {
    segments
        .iter()
        .any(|s| support::same(s.src, client) || support::same(s.dst, client))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_targets_replaces_what_is_captured() {
    if !support::privileged("set_targets_replaces_what_is_captured") {
        return;
    }
    let _serial = support::serial().await;
    support::init_tracing();
    let la = TcpListener::bind("127.0.0.1:0").await.expect("bind a");
    let lb = TcpListener::bind("127.0.0.1:0").await.expect("bind b");
    let (a, b) = (la.local_addr().unwrap(), lb.local_addr().unwrap());
    tokio::spawn(support::serve(la, response_len));
    tokio::spawn(support::serve(lb, response_len));

    let cfg = support::tc_config(&["lo"], vec![ServerAddr::Exact(a)]);
    let mut capture = LiveCapture::start(&cfg, &support::limits(8 << 20)).expect("start");
    let request = support::pattern(500, 1);
    let (ca1, _) = support::exchange(a, &request).await;
    let (cb1, _) = support::exchange(b, &request).await;
    let first = support::collect(&mut capture, Duration::from_secs(1), |_| false).await;
    assert!(conn_seen(&first, ca1), "target a captured");
    assert!(!conn_seen(&first, cb1), "b is not a target yet");

    capture
        .set_targets(&[ServerAddr::Port(b.port())])
        .expect("set_targets");
    let (ca2, _) = support::exchange(a, &request).await;
    let (cb2, _) = support::exchange(b, &request).await;
    let second = support::collect(&mut capture, Duration::from_secs(1), |_| false).await;
    assert!(conn_seen(&second, cb2), "new target b captured");
    assert!(!conn_seen(&second, ca2), "a is no longer a target");

    // An empty list is refused and the previous targets stay.
    assert!(capture.set_targets(&[]).is_err());
    let (cb3, _) = support::exchange(b, &request).await;
    let third = support::collect(&mut capture, Duration::from_secs(1), |_| false).await;
    assert!(
        conn_seen(&third, cb3),
        "b still captured after a refused reload"
    );

    // Full maps both sides of a reload: 4096 exact targets replaced by 4096 others.
    let many = |base: u32| -> Vec<ServerAddr> {
        (0..4096)
            .map(|i| ServerAddr::Exact(SocketAddr::from((std::net::Ipv4Addr::from(base + i), 80))))
            .collect()
    };
    capture
        .set_targets(&many(0x0a00_0000))
        .expect("4096 targets");
    capture
        .set_targets(&many(0x0b00_0000))
        .expect("4096 other targets");
    let mut back = many(0x0b00_0000);
    back.truncate(4095);
    back.push(ServerAddr::Exact(b));
    capture.set_targets(&back).expect("back to b");
    let (cb4, _) = support::exchange(b, &request).await;
    let fourth = support::collect(&mut capture, Duration::from_secs(1), |_| false).await;
    assert!(conn_seen(&fourth, cb4), "b captured after large reloads");
}
