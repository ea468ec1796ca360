//! Live capture's life cycle: clear errors before anything is loaded, nothing left attached after
//! detach, drop, or SIGKILL of the capturing process, and a clean second start afterwards.
#![cfg(feature = "ebpf")]

#[path = "ebpf_support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use parity_agent::capture::ebpf::{LiveCapture, LiveError};
use parity_agent::config::ServerAddr;
use support::ChildGuard;

fn target() -> Vec<ServerAddr> {
    vec![ServerAddr::Port(1)]
}

#[test]
#[ignore = "helper process of the other tests"]
fn helper_capture_entry() {
    if !support::helper_role("helper_capture_entry") {
        return;
    }
    let port: u16 = std::env::var("PORT").expect("PORT").parse().expect("port");
    let engine = std::env::var("ENGINE").unwrap_or_default();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let targets = vec![ServerAddr::Port(port)];
        let cfg = if engine == "cgroup" {
            support::cgroup_config(None, targets)
        } else {
            support::tc_config(&["lo"], targets)
        };
        match LiveCapture::start(&cfg, &support::limits(1 << 20)) {
            Ok(mut capture) => {
                let ids: Vec<String> = capture
                    .programs()
                    .iter()
                    .map(|(name, id)| format!("{name}:{id}"))
                    .collect();
                println!("READY {}", ids.join(","));
                use std::io::Write as _;
                let _ = std::io::stdout().flush();
                let mut out = Vec::new();
                loop {
                    let _ = capture.next_batch(&mut out).await;
                    out.clear();
                }
            }
            Err(e) => {
                println!("ERROR {e}");
            }
        }
    });
}

#[tokio::test]
async fn configuration_errors_name_the_input_before_anything_is_loaded() {
    let e = LiveCapture::start(
        &support::tc_config(&["lo"], vec![]),
        &support::limits(1 << 20),
    );
    assert!(matches!(e, Err(LiveError::NoTargets)));

    let e = LiveCapture::start(
        &support::tc_config(&["parity-nosuch0"], target()),
        &support::limits(1 << 20),
    );
    let msg = e.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("\"parity-nosuch0\""), "{msg}");

    let e = LiveCapture::start(
        &support::tc_config(&[], target()),
        &support::limits(1 << 20),
    );
    assert!(matches!(e, Err(LiveError::NoInterfaces)));

    let missing = PathBuf::from("/sys/fs/cgroup/parity-no-such-cgroup");
    let e = LiveCapture::start(
        &support::cgroup_config(Some(missing.clone()), target()),
        &support::limits(1 << 20),
    );
    assert!(
        matches!(&e, Err(LiveError::CgroupNotFound { path }) if *path == missing),
        "{:?}",
        e.err()
    );

    let tmp = std::env::temp_dir();
    let e = LiveCapture::start(
        &support::cgroup_config(Some(tmp.clone()), target()),
        &support::limits(1 << 20),
    );
    let msg = e.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        msg.contains("not a cgroup v2 directory") && msg.contains(&*tmp.to_string_lossy()),
        "{msg}"
    );
}

#[test]
fn start_outside_a_runtime_is_an_error_not_a_panic() {
    let e = LiveCapture::start(
        &support::tc_config(&["lo"], target()),
        &support::limits(1 << 20),
    );
    assert!(matches!(e, Err(LiveError::NoRuntime)));
}

#[test]
fn unprivileged_start_says_how_to_fix_it() {
    if !support::privileged("unprivileged_start_says_how_to_fix_it") {
        return;
    }
    let _serial = support::serial_blocking();
    // The helper drops to nobody before exec; its capabilities go with root.
    let mut child =
        ChildGuard::spawn_as_nobody("helper_capture_entry", &[("PORT", "8080".to_string())]);
    let err = child.expect_line("ERROR");
    eprintln!("unprivileged start: {err}");
    assert!(err.contains("CAP_BPF") && err.contains("sudo"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detach_and_drop_leave_nothing_attached() {
    if !support::privileged("detach_and_drop_leave_nothing_attached") {
        return;
    }
    let _serial = support::serial().await;
    let tc = LiveCapture::start(
        &support::tc_config(&["lo"], target()),
        &support::limits(1 << 20),
    )
    .expect("start tc");
    let programs = tc.programs();
    let ids: Vec<u32> = programs.iter().map(|(_, id)| *id).collect();
    let shown = support::attachments_of(&ids);
    assert!(
        shown
            .iter()
            .any(|l| l.starts_with("tcx lo Egress parity_tc_out")),
        "the TCX egress chain of lo holds parity: {shown:?}"
    );
    assert!(
        !shown.iter().any(|l| l.starts_with("tcx lo Ingress")),
        "lo is captured at egress only: {shown:?}"
    );
    tc.detach();
    support::assert_released("tc: after detach", &programs);

    let cg = LiveCapture::start(
        &support::cgroup_config(None, target()),
        &support::limits(1 << 20),
    )
    .expect("start cgroup");
    let programs = cg.programs();
    let ids: Vec<u32> = programs.iter().map(|(_, id)| *id).collect();
    let shown = support::attachments_of(&ids);
    assert!(
        shown.iter().any(|l| l.contains("parity_cg_in"))
            && shown.iter().any(|l| l.contains("parity_cg_out")),
        "bpftool cgroup tree shows both links: {shown:?}"
    );
    drop(cg);
    support::assert_released("cgroup: after drop", &programs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_leaves_nothing_attached_and_a_second_start_captures_once() {
    if !support::privileged("sigkill_leaves_nothing_attached_and_a_second_start_captures_once") {
        return;
    }
    let _serial = support::serial().await;
    support::init_tracing();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let server: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(support::serve(listener, |n| n + 1));

    for engine in ["tc", "cgroup"] {
        let mut child = ChildGuard::spawn(
            "helper_capture_entry",
            &[
                ("PORT", server.port().to_string()),
                ("ENGINE", engine.to_string()),
            ],
            None,
        );
        let ready = child.expect_line("READY");
        let child_programs: Vec<(String, u32)> = ready
            .split(',')
            .filter_map(|p| {
                let (name, id) = p.split_once(':')?;
                Some((name.to_string(), id.parse().ok()?))
            })
            .collect();
        let ids: Vec<u32> = child_programs.iter().map(|(_, id)| *id).collect();
        assert!(
            !support::attachments_of(&ids).is_empty(),
            "{engine}: the child's capture is attached ({child_programs:?})"
        );
        // Traffic while the child captures, so its programs are busy when it dies.
        let _ = support::exchange(server, &support::pattern(100_000, 1)).await;
        child.kill9();
        support::assert_released(&format!("{engine}: after SIGKILL"), &child_programs);

        // A second start works and sees each segment once: nothing of the first is left.
        let cfg = if engine == "cgroup" {
            support::cgroup_config(None, vec![ServerAddr::Exact(server)])
        } else {
            support::tc_config(&["lo"], vec![ServerAddr::Exact(server)])
        };
        let mut capture =
            LiveCapture::start(&cfg, &support::limits(16 << 20)).expect("second start");
        let retrans_before = support::retransmitted_segments();
        let request = support::pattern(500_000, 2);
        let traffic = tokio::spawn(async move { support::exchange(server, &request).await });
        let mut segments = Vec::new();
        while !traffic.is_finished() {
            segments.extend(
                support::collect(&mut capture, Duration::from_millis(100), |_| false).await,
            );
        }
        let (client, response) = traffic.await.expect("traffic");
        support::collect_more(&mut capture, &mut segments, Duration::from_secs(10), |s| {
            s.iter()
                .any(|x| x.flags.fin() && support::same(x.src, server))
        })
        .await;
        let allowed = usize::try_from((support::retransmitted_segments() - retrans_before) * 4)
            .unwrap_or(usize::MAX);
        let up = support::reassemble(&segments, client, server);
        let down = support::reassemble(&segments, server, client);
        assert_eq!((up.syn, down.syn), (1, 1), "{engine}");
        assert!(
            up.duplicates.len() <= allowed && down.duplicates.len() <= allowed,
            "{engine}: duplicates"
        );
        assert!(
            up.bytes == support::pattern(500_000, 2),
            "{engine}: request"
        );
        assert!(down.bytes == response, "{engine}: response");
        let programs = capture.programs();
        drop(capture);
        support::assert_released(&format!("{engine}: after the second capture"), &programs);
    }
}
