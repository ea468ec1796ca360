//! Privileged: parity is passive. A second, independent program attached after parity on the
//! same hook (the `parity-testcount` fixture) still sees the traffic, and traffic still flows.
#![cfg(feature = "ebpf")]

#[path = "ebpf_support/mod.rs"]
mod support;

use std::time::Duration;

use aya::maps::{Array, MapData, PerCpuArray};
use aya::programs::tc::TcAttachOptions;
use aya::programs::{
    CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, LinkOrder, SchedClassifier, TcAttachType,
};
use aya::Ebpf;
use parity_agent::capture::ebpf::LiveCapture;
use parity_agent::config::ServerAddr;
use tokio::net::TcpListener;

static COUNTER: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/parity-testcount"));

fn counter(port: u16) -> Ebpf {
    let mut ebpf = Ebpf::load(COUNTER).expect("load parity-testcount");
    let mut ports: Array<&mut MapData, u32> =
        Array::try_from(ebpf.map_mut("parity_tcport").expect("map")).expect("array");
    ports.set(0, u32::from(port), 0).expect("set port");
    ebpf
}

fn counted(ebpf: &Ebpf, slot: u32) -> u64 {
    let counts: PerCpuArray<&MapData, u64> =
        PerCpuArray::try_from(ebpf.map("parity_tcounts").expect("map")).expect("percpu");
    counts.get(&slot, 0).expect("get").iter().sum()
}

fn respond(n: usize) -> usize {
    n + 1000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tc_program_after_parity_still_sees_the_packets() {
    if !support::privileged("tc_program_after_parity_still_sees_the_packets") {
        return;
    }
    let _serial = support::serial().await;
    support::init_tracing();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let server = listener.local_addr().unwrap();
    tokio::spawn(support::serve(listener, respond));

    let cfg = support::tc_config(&["lo"], vec![ServerAddr::Exact(server)]);
    let mut capture = LiveCapture::start(&cfg, &support::limits(16 << 20)).expect("start");
    let mut count = counter(server.port());
    let prog: &mut SchedClassifier = count
        .program_mut("parity_tcount")
        .expect("program")
        .try_into()
        .expect("classifier");
    prog.load().expect("load counter");
    for kind in [TcAttachType::Egress, TcAttachType::Ingress] {
        prog.attach_with_options("lo", kind, TcAttachOptions::TcxOrder(LinkOrder::last()))
            .expect("attach counter");
    }
    let (_, chain) = SchedClassifier::query_tcx("lo", TcAttachType::Egress).expect("query tcx");
    let chain: Vec<(u32, String)> = chain
        .iter()
        .map(|p| (p.id(), p.name_as_str().unwrap_or("?").to_string()))
        .collect();
    let parity_id = capture
        .programs()
        .iter()
        .find(|(name, _)| name == "parity_tc_out")
        .map(|(_, id)| *id);
    let counter_id = prog.info().expect("counter info").id();
    let parity_at = chain.iter().position(|(id, _)| Some(*id) == parity_id);
    let counter_at = chain.iter().position(|(id, _)| *id == counter_id);
    assert!(
        matches!((parity_at, counter_at), (Some(p), Some(c)) if p < c),
        "TCX egress chain on lo (id, name): {chain:?}"
    );

    let request = support::pattern(1_000_000, 3);
    let traffic = tokio::spawn(async move { support::exchange(server, &request).await });
    let mut segments = Vec::new();
    while !traffic.is_finished() {
        segments
            .extend(support::collect(&mut capture, Duration::from_millis(100), |_| false).await);
    }
    let (client, response) = traffic.await.expect("traffic");
    assert_eq!(response.len(), respond(1_000_000));
    support::collect_more(&mut capture, &mut segments, Duration::from_secs(10), |s| {
        s.iter()
            .any(|x| x.flags.fin() && support::same(x.src, server))
    })
    .await;
    let up = support::reassemble(&segments, client, server);
    assert_eq!(
        up.bytes.len(),
        1_000_000,
        "parity still captured the request"
    );

    // SYN, SYN-ACK, ACK, data, FIN...: each passed parity first and then reached the counter,
    // on egress and on ingress.
    let seen = counted(&count, 0);
    assert!(seen >= 10, "the counter after parity saw {seen} packets");
    let programs = capture.programs();
    drop(count);
    drop(capture);
    support::assert_released("after drop", &programs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cgroup_program_beside_parity_still_sees_the_packets_and_traffic_flows() {
    if !support::privileged("cgroup_program_beside_parity_still_sees_the_packets_and_traffic_flows")
    {
        return;
    }
    let _serial = support::serial().await;
    support::init_tracing();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let server = listener.local_addr().unwrap();
    tokio::spawn(support::serve(listener, respond));

    let root = support::cgroup2_root();
    let cfg = support::cgroup_config(None, vec![ServerAddr::Exact(server)]);
    let mut capture = LiveCapture::start(&cfg, &support::limits(16 << 20)).expect("start");
    let mut count = counter(server.port());
    let prog: &mut CgroupSkb = count
        .program_mut("parity_cgcount")
        .expect("program")
        .try_into()
        .expect("cgroup_skb");
    prog.load().expect("load counter");
    let dir = std::fs::File::open(&root).expect("open cgroup root");
    // Link-based attachment: several programs per hook, all run, verdicts ANDed. A parity
    // verdict of 0 would drop the packets and the exchange below would fail.
    for kind in [CgroupSkbAttachType::Ingress, CgroupSkbAttachType::Egress] {
        prog.attach(&dir, kind, CgroupAttachMode::Single)
            .expect("attach counter");
    }

    for _ in 0..3 {
        let request = support::pattern(200_000, 5);
        let (_, response) =
            tokio::time::timeout(Duration::from_secs(10), support::exchange(server, &request))
                .await
                .expect("traffic flows with parity attached");
        assert_eq!(response.len(), respond(200_000));
    }
    let segments = support::collect(&mut capture, Duration::from_secs(5), |s| {
        s.iter().filter(|x| x.flags.fin()).count() >= 6
    })
    .await;
    assert!(!segments.is_empty(), "parity captured the exchanges");
    let seen = counted(&count, 1);
    assert!(seen >= 20, "the counter beside parity saw {seen} packets");
    let programs = capture.programs();
    drop(count);
    drop(capture);
    support::assert_released("after drop", &programs);
}
