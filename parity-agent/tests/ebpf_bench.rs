//! Benchmark (ignored; run it on purpose, in release, as root):
//!
//! ```text
//! cargo test -p parity-agent --release --test ebpf_bench -- --ignored --nocapture
//! ```
//!
//! wrk against nginx on `lo` (`return 200`, keep-alive), 10 s per run, interleaved: no capture,
//! `tc` capture, `cgroup` capture (default root: client and server both in scope, so the sender
//! dedupe works on every packet). Reports wrk throughput (median of 3), capture records/s,
//! payload bytes/s, drops, and the CPU time of the thread that drains the ring buffer and turns
//! records into segments (segments are dropped right away, as if consumed).
#![cfg(feature = "ebpf")]

#[path = "ebpf_support/mod.rs"]
mod support;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parity_agent::capture::ebpf::{LiveCapture, LiveCounters};
use parity_agent::config::{CaptureConfig, ServerAddr};

const RUN_SECS: u64 = 10;

static COUNTER: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/parity-testcount"));
/// Interleaved rounds (override with `PARITY_BENCH_ROUNDS` on a noisy machine).
fn rounds() -> usize {
    std::env::var("PARITY_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(3)
}

struct Nginx {
    child: Child,
    _dir: tempfile::TempDir,
    port: u16,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers (SIGKILL would orphan them, still running).
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let exited = support::eventually(Duration::from_secs(5), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn nginx() -> Nginx {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let conf = format!(
        "worker_processes 1;\n\
         daemon off;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/error.log;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n\
           access_log off;\n\
           client_body_temp_path {d}/body;\n\
           proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fastcgi;\n\
           uwsgi_temp_path {d}/uwsgi;\n\
           scgi_temp_path {d}/scgi;\n\
           server {{\n\
             listen 127.0.0.1:{port};\n\
             keepalive_requests 10000000;\n\
             location / {{ return 200 \"ok\\n\"; }}\n\
           }}\n\
         }}\n",
        d = dir.path().display()
    );
    let path = dir.path().join("nginx.conf");
    std::fs::write(&path, conf).expect("write nginx.conf");
    let child = Command::new("nginx")
        .arg("-c")
        .arg(&path)
        .arg("-p")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn nginx");
    let up = support::eventually(Duration::from_secs(5), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up, "nginx did not come up");
    Nginx {
        child,
        _dir: dir,
        port,
    }
}

/// wrk's requests per second.
fn wrk(port: u16) -> f64 {
    let out = Command::new("wrk")
        .args(["-t1", "-c16", &format!("-d{RUN_SECS}s")])
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("wrk output: {text}"))
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

struct CaptureRun {
    counters: LiveCounters,
    dropped: Vec<(&'static str, u64)>,
    drain_cpu: Duration,
    wall: Duration,
    /// parity's programs: (name, runs, run time, verified instructions); runs and run time are
    /// only counted while BPF run-time stats are enabled.
    programs: Vec<(String, u64, Duration, Option<u32>)>,
}

/// Run statistics of the programs with these ids.
fn program_stats(ids: &[u32]) -> Vec<(String, u64, Duration, Option<u32>)> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| ids.contains(&p.id()))
        .map(|p| {
            (
                p.name_as_str().unwrap_or("?").to_string(),
                p.run_count(),
                p.run_time(),
                p.verified_instruction_count(),
            )
        })
        .collect()
}

/// Run wrk while a capture drains on its own thread.
fn with_capture(cfg: CaptureConfig, port: u16) -> (f64, CaptureRun) {
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let drainer = std::thread::spawn({
        let stop = stop.clone();
        move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let mut capture =
                    LiveCapture::start(&cfg, &support::limits(64 << 20)).expect("start");
                let _ = ready_tx.send(());
                let cpu0 = thread_cpu();
                let t0 = Instant::now();
                let mut out = Vec::with_capacity(8192);
                while !stop.load(Ordering::Relaxed) {
                    let _ = tokio::time::timeout(
                        Duration::from_millis(100),
                        capture.next_batch(&mut out),
                    )
                    .await;
                    out.clear();
                }
                let ids: Vec<u32> = capture.programs().iter().map(|(_, id)| *id).collect();
                CaptureRun {
                    programs: program_stats(&ids),
                    counters: capture.counters(),
                    dropped: capture.dropped(),
                    drain_cpu: thread_cpu() - cpu0,
                    wall: t0.elapsed(),
                }
            })
        }
    });
    ready_rx.recv().expect("capture ready");
    let rps = wrk(port);
    stop.store(true, Ordering::Relaxed);
    (rps, drainer.join().expect("drainer"))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[test]
#[ignore = "benchmark: run explicitly in release as root"]
fn wrk_nginx_on_lo_with_and_without_capture() {
    if !support::privileged("wrk_nginx_on_lo_with_and_without_capture") {
        return;
    }
    let _serial = support::serial_blocking();
    let ng = nginx();
    let target = vec![ServerAddr::Port(ng.port)];
    let mut base = Vec::new();
    let mut tc = Vec::new();
    let mut cg = Vec::new();
    let mut runs = Vec::new();
    // Warm-up so the first measured run is not the cold one.
    let _ = wrk(ng.port);
    for round in 0..rounds() {
        let b = wrk(ng.port);
        base.push(b);
        let (t, run_tc) = with_capture(support::tc_config(&["lo"], target.clone()), ng.port);
        tc.push(t);
        let (c, run_cg) = with_capture(support::cgroup_config(None, target.clone()), ng.port);
        cg.push(c);
        eprintln!("round {round}: baseline {b:.0} req/s, tc {t:.0} req/s, cgroup {c:.0} req/s");
        runs.push(("tc", run_tc));
        runs.push(("cgroup", run_cg));
    }
    let (mb, mt, mc) = (median(&mut base), median(&mut tc), median(&mut cg));
    eprintln!(
        "wrk -t1 -c16 -d{RUN_SECS}s, median of {}: baseline {mb:.0} req/s; tc {mt:.0} req/s ({:+.1}%); cgroup {mc:.0} req/s ({:+.1}%)",
        base.len(),
        (mt / mb - 1.0) * 100.0,
        (mc / mb - 1.0) * 100.0
    );
    // Per-program cost, in a separate pass: run-time stats add two clock reads per run.
    let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("BPF_ENABLE_STATS");
    // For scale: the trivial `parity-testcount` classifier (two header loads, a port compare, a
    // per-CPU counter) on the same hook.
    let mut floor = aya::Ebpf::load(COUNTER).expect("load parity-testcount");
    {
        let mut ports: aya::maps::Array<&mut aya::maps::MapData, u32> =
            aya::maps::Array::try_from(floor.map_mut("parity_tcport").expect("map"))
                .expect("array");
        ports.set(0, u32::from(ng.port), 0).expect("port");
        let prog: &mut aya::programs::SchedClassifier = floor
            .program_mut("parity_tcount")
            .expect("program")
            .try_into()
            .expect("classifier");
        prog.load().expect("load");
        prog.attach("lo", aya::programs::TcAttachType::Egress)
            .expect("attach");
    }
    let floor_id = floor
        .program("parity_tcount")
        .and_then(|p| p.info().ok())
        .map(|i| i.id())
        .expect("counter id");
    for (engine, cfg) in [
        ("tc", support::tc_config(&["lo"], target.clone())),
        ("cgroup", support::cgroup_config(None, target.clone())),
    ] {
        let (rps, run) = with_capture(cfg, ng.port);
        for (name, count, time, verified) in &run.programs {
            if *count > 0 {
                eprintln!(
                    "{engine} (stats on, {rps:.0} req/s): {name}: {count} runs, {:.0} ns/run, {} verified insns",
                    time.as_nanos() as f64 / *count as f64,
                    verified.map_or("?".to_string(), |v| v.to_string())
                );
            }
        }
    }
    for (name, count, time, verified) in program_stats(&[floor_id]) {
        eprintln!(
            "floor (stats on, both passes): {name}: {count} runs, {:.0} ns/run, {} verified insns",
            time.as_nanos() as f64 / count.max(1) as f64,
            verified.map_or("?".to_string(), |v| v.to_string())
        );
    }
    drop(floor);
    drop(stats);
    for (engine, r) in &runs {
        let secs = r.wall.as_secs_f64();
        let lost: u64 = r.dropped.iter().map(|(_, n)| n).sum();
        eprintln!(
            "{engine}: {:.0} records/s, {:.1} MB/s payload, {} records, lost {lost} {:?}, drain thread CPU {:.2} s of {:.1} s ({:.0} ns/record)",
            r.counters.records as f64 / secs,
            r.counters.payload_bytes as f64 / secs / 1e6,
            r.counters.records,
            r.dropped.iter().filter(|(_, n)| *n > 0).collect::<Vec<_>>(),
            r.drain_cpu.as_secs_f64(),
            secs,
            r.drain_cpu.as_nanos() as f64 / r.counters.records.max(1) as f64,
        );
    }
}
