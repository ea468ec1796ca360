//! Privileged: the `cgroup` engine. On a subtree it captures only that subtree's sockets; with
//! both ends of a connection in scope (a parent cgroup of client and server, or the default
//! cgroup v2 root) it still delivers every segment exactly once.
#![cfg(feature = "ebpf")]

#[path = "ebpf_support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use parity_agent::capture::ebpf::LiveCapture;
use parity_agent::config::ServerAddr;
use parity_agent::segment::Segment;
use support::{CgroupGuard, ChildGuard};

const RESPONSE_LEN: usize = 3_000_000;

#[test]
#[ignore = "helper process of the other tests"]
fn helper_server_entry() {
    if support::helper_role("helper_server_entry") {
        support::helper_server();
    }
}

#[test]
#[ignore = "helper process of the other tests"]
fn helper_client_entry() {
    if support::helper_role("helper_client_entry") {
        support::helper_client();
    }
}

fn fin_both_ways(segments: &[Segment], a: SocketAddr, b: SocketAddr) -> bool {
    let fin = |src, dst| {
        segments
            .iter()
            .any(|s| support::same(s.src, src) && support::same(s.dst, dst) && s.flags.fin())
    };
    fin(a, b) && fin(b, a)
}

/// Both directions complete, SYN once, no duplicates beyond the host's retransmissions.
fn check_once(
    segments: &[Segment],
    client: SocketAddr,
    server: SocketAddr,
    request: &[u8],
    response: &[u8],
    retransmitted: u64,
) {
    let allowed = usize::try_from(retransmitted * 4).unwrap_or(usize::MAX);
    let what = format!("{client} -> {server}");
    for (dir, d, want) in [
        (
            "request",
            support::reassemble(segments, client, server),
            request,
        ),
        (
            "response",
            support::reassemble(segments, server, client),
            response,
        ),
    ] {
        assert_eq!(d.syn, 1, "{what} {dir}: SYN seen {} times", d.syn);
        assert!(
            d.fin >= 1 && d.fin <= 1 + allowed,
            "{what} {dir}: FIN seen {} times",
            d.fin
        );
        assert!(
            d.conflicts.is_empty(),
            "{what} {dir}: conflicting overlaps {:?}",
            d.conflicts
        );
        assert!(
            d.duplicates.len() <= allowed,
            "{what} {dir}: duplicates {:?} with {retransmitted} host retransmissions",
            d.duplicates
        );
        assert_eq!(d.bytes.len(), want.len(), "{what} {dir}: length");
        assert!(d.bytes == want, "{what} {dir}: bytes differ");
    }
}

fn spawn_server(cgroup: Option<&std::path::Path>) -> (ChildGuard, SocketAddr) {
    let mut server = ChildGuard::spawn(
        "helper_server_entry",
        &[("RESPONSE_LEN", RESPONSE_LEN.to_string())],
        cgroup,
    );
    let port: u16 = server.expect_line("PORT").parse().expect("port");
    (server, SocketAddr::from(([127, 0, 0, 1], port)))
}

async fn drain_until(
    capture: &mut LiveCapture,
    segments: &mut Vec<Segment>,
    done: impl Fn(&[Segment]) -> bool,
) {
    let more = support::collect(capture, Duration::from_secs(20), |s| {
        let mut all = segments.clone();
        all.extend_from_slice(s);
        done(&all)
    })
    .await;
    segments.extend(more);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cgroup_subtree_captures_only_its_sockets() {
    if !support::privileged("cgroup_subtree_captures_only_its_sockets") {
        return;
    }
    let _serial = support::serial().await;
    support::init_tracing();
    let root = support::cgroup2_root();
    let cg = CgroupGuard::create(&root, "parity-test-subtree");
    let (_inside, srv_in) = spawn_server(Some(&cg.path));
    let (_outside, srv_out) = spawn_server(None);

    let cfg = support::cgroup_config(
        Some(cg.path.clone()),
        vec![ServerAddr::Exact(srv_in), ServerAddr::Exact(srv_out)],
    );
    let mut capture = LiveCapture::start(&cfg, &support::limits(64 << 20)).expect("start");
    let retrans_before = support::retransmitted_segments();

    let request = support::pattern(2_000_000, 7);
    let traffic = tokio::spawn({
        let request = request.clone();
        async move {
            let (c_in, r_in) = support::exchange(srv_in, &request).await;
            let (c_out, _) = support::exchange(srv_out, &request).await;
            (c_in, r_in, c_out)
        }
    });
    let mut segments = Vec::new();
    while !traffic.is_finished() {
        segments
            .extend(support::collect(&mut capture, Duration::from_millis(200), |_| false).await);
    }
    let (c_in, response, c_out) = traffic.await.expect("traffic");

    assert_eq!(
        response,
        support::pattern(RESPONSE_LEN, request.len() as u64)
    );
    drain_until(&mut capture, &mut segments, |s| {
        fin_both_ways(s, c_in, srv_in)
    })
    .await;
    // Anything of the outside server would have arrived by now too.
    segments.extend(support::collect(&mut capture, Duration::from_millis(300), |_| false).await);

    let retransmitted = support::retransmitted_segments() - retrans_before;
    check_once(&segments, c_in, srv_in, &request, &response, retransmitted);
    assert!(
        !support::touches_port(&segments, srv_out.port()),
        "a server outside the cgroup ({srv_out}, client {c_out}) was captured"
    );
    let dropped = capture.dropped();
    assert!(dropped.iter().all(|(_, n)| *n == 0), "losses: {dropped:?}");
    let programs = capture.programs();
    drop(capture);
    support::assert_released("after drop", &programs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cgroup_parent_of_client_and_server_captures_each_segment_once() {
    if !support::privileged("cgroup_parent_of_client_and_server_captures_each_segment_once") {
        return;
    }
    let _serial = support::serial().await;
    support::init_tracing();
    let root = support::cgroup2_root();
    let parent = CgroupGuard::create(&root, "parity-test-pair");
    let srv_cg = CgroupGuard::create(&parent.path, "srv");
    let cli_cg = CgroupGuard::create(&parent.path, "cli");
    let (_server, srv) = spawn_server(Some(&srv_cg.path));

    let cfg = support::cgroup_config(Some(parent.path.clone()), vec![ServerAddr::Exact(srv)]);
    let mut capture = LiveCapture::start(&cfg, &support::limits(64 << 20)).expect("start");
    let retrans_before = support::retransmitted_segments();

    const REQUEST_LEN: usize = 1_500_000;
    let mut client = ChildGuard::spawn(
        "helper_client_entry",
        &[
            ("SERVER", srv.to_string()),
            ("REQUEST_LEN", REQUEST_LEN.to_string()),
        ],
        Some(&cli_cg.path),
    );
    let mut segments = Vec::new();
    let line = {
        let reader = tokio::task::spawn_blocking(move || {
            let line = client.expect_line("CLIENT");
            (client, line)
        });
        let mut reader = reader;
        loop {
            segments.extend(
                support::collect(&mut capture, Duration::from_millis(200), |_| false).await,
            );
            if reader.is_finished() {
                break (&mut reader).await.expect("client").1;
            }
        }
    };
    let mut parts = line.split_whitespace();
    let client_addr: SocketAddr = parts.next().expect("addr").parse().expect("addr");
    let got: usize = parts.next().expect("len").parse().expect("len");
    assert_eq!(got, RESPONSE_LEN);
    drain_until(&mut capture, &mut segments, |s| {
        fin_both_ways(s, client_addr, srv)
    })
    .await;

    let retransmitted = support::retransmitted_segments() - retrans_before;
    let request = support::pattern(REQUEST_LEN, 7);
    let response = support::pattern(RESPONSE_LEN, REQUEST_LEN as u64);
    check_once(
        &segments,
        client_addr,
        srv,
        &request,
        &response,
        retransmitted,
    );
    let dropped = capture.dropped();
    assert!(dropped.iter().all(|(_, n)| *n == 0), "losses: {dropped:?}");
    let programs = capture.programs();
    capture.detach();
    support::assert_released("after detach", &programs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cgroup_default_root_sees_both_ends_and_delivers_once() {
    if !support::privileged("cgroup_default_root_sees_both_ends_and_delivers_once") {
        return;
    }
    let _serial = support::serial().await;
    support::init_tracing();
    let l4 = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let l6 = tokio::net::TcpListener::bind("[::1]:0")
        .await
        .expect("bind6");
    let (a4, a6) = (l4.local_addr().unwrap(), l6.local_addr().unwrap());
    fn respond(n: usize) -> usize {
        n * 2 + 10
    }
    tokio::spawn(support::serve(l4, respond));
    tokio::spawn(support::serve(l6, respond));

    // No directory: the host's cgroup v2 root, which holds this process (client and server).
    let cfg = support::cgroup_config(
        None,
        vec![ServerAddr::Port(a4.port()), ServerAddr::Exact(a6)],
    );
    let mut capture = LiveCapture::start(&cfg, &support::limits(64 << 20)).expect("start");
    let root = support::cgroup2_root();
    assert!(
        capture
            .attachments()
            .iter()
            .all(|a| a.ends_with(&*root.to_string_lossy())),
        "{:?}",
        capture.attachments()
    );
    let retrans_before = support::retransmitted_segments();

    let traffic = tokio::spawn(async move {
        let mut done = Vec::new();
        for (server, len, seed) in [
            (a4, 300, 1),
            (a6, 300, 2),
            (a4, 2_000_000, 3),
            (a6, 2_000_000, 4),
        ] {
            let request = support::pattern(len, seed);
            let (client, response) = support::exchange(server, &request).await;
            done.push((client, server, request, response));
        }
        done
    });
    let mut segments = Vec::new();
    while !traffic.is_finished() {
        segments
            .extend(support::collect(&mut capture, Duration::from_millis(200), |_| false).await);
    }
    let done = traffic.await.expect("traffic");
    let pairs: Vec<(SocketAddr, SocketAddr)> = done.iter().map(|(c, s, _, _)| (*c, *s)).collect();
    drain_until(&mut capture, &mut segments, |s| {
        pairs.iter().all(|(c, srv)| fin_both_ways(s, *c, *srv))
    })
    .await;
    let retransmitted = support::retransmitted_segments() - retrans_before;
    for (client, server, request, response) in &done {
        assert_eq!(response.len(), respond(request.len()));
        check_once(
            &segments,
            *client,
            *server,
            request,
            response,
            retransmitted,
        );
    }
    let dropped = capture.dropped();
    assert!(dropped.iter().all(|(_, n)| *n == 0), "losses: {dropped:?}");
    let programs = capture.programs();
    drop(capture);
    support::assert_released("after drop", &programs);
}
