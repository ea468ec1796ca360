//! Shared by the privileged eBPF tests (`tests/ebpf_*.rs`): the privilege gate, a lock that
//! serialises captures within one test binary, traffic on loopback, segment collection, a
//! simple per-direction reassembly that detects duplicates, guards that undo what a test
//! created (cgroups, child processes), and helper processes run by re-executing the test binary.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use parity_agent::capture::ebpf::LiveCapture;
use parity_agent::config::{CaptureConfig, Engine, Limits, ServerAddr};
use parity_agent::segment::Segment;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// True when the test may run. Not root: a loud skip, or a panic under CI=true.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: needs root (CAP_BPF, CAP_NET_ADMIN, cgroup writes) and CI never skips");
    }
    eprintln!("SKIPPED: {test} (needs root: eBPF capture, cgroups)");
    false
}

static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One capture test at a time per test binary: the "nothing attached" checks look at the
/// whole host. (An async lock: each test holds it across its awaits, on its own runtime.)
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    LOCK.lock().await
}

/// [`serial`] for tests without a runtime.
pub fn serial_blocking() -> tokio::sync::MutexGuard<'static, ()> {
    LOCK.blocking_lock()
}

/// Log to the test output (aya-log and aya's own `log` records bridged into tracing).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_test_writer()
        .try_init();
}

pub fn tc_config(interfaces: &[&str], targets: Vec<ServerAddr>) -> CaptureConfig {
    CaptureConfig {
        engine: Engine::Tc,
        interfaces: interfaces.iter().map(|s| s.to_string()).collect(),
        cgroup: None,
        targets,
    }
}

pub fn cgroup_config(cgroup: Option<PathBuf>, targets: Vec<ServerAddr>) -> CaptureConfig {
    CaptureConfig {
        engine: Engine::Cgroup,
        interfaces: Vec::new(),
        cgroup,
        targets,
    }
}

pub fn limits(ring_bytes: u64) -> Limits {
    Limits {
        ring_buffer_bytes: parity_agent::units::ByteSize(ring_bytes),
        ..Limits::default()
    }
}

/// Deterministic bytes, different at every offset, so a misplaced chunk is visible.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A server that reads each request to EOF and answers `response_len(request_len)` bytes of
/// pattern, then closes.
pub async fn serve(listener: tokio::net::TcpListener, response_len: fn(usize) -> usize) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let mut req = Vec::new();
            if s.read_to_end(&mut req).await.is_err() {
                return;
            }
            let resp = pattern(response_len(req.len()), req.len() as u64);
            let _ = s.write_all(&resp).await;
            let _ = s.shutdown().await;
        });
    }
}

/// Send `request`, half-close, read the response to EOF. Returns (client address, response).
pub async fn exchange(server: SocketAddr, request: &[u8]) -> (SocketAddr, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(server)
        .await
        .expect("connect");
    let local = s.local_addr().expect("local addr");
    s.write_all(request).await.expect("write request");
    s.shutdown().await.expect("shutdown");
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await.expect("read response");
    (local, resp)
}

/// Collect segments until `done(&segments)` holds or `timeout` passes.
pub async fn collect(
    capture: &mut LiveCapture,
    timeout: Duration,
    done: impl Fn(&[Segment]) -> bool,
) -> Vec<Segment> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while !done(&out) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            break;
        }
        match tokio::time::timeout(left, capture.next_batch(&mut out)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("next_batch: {e}"),
            Err(_) => break,
        }
    }
    out
}

/// Extend `segments` until `done(segments)` holds (checked on everything collected so far) or
/// `timeout` passes.
pub async fn collect_more(
    capture: &mut LiveCapture,
    segments: &mut Vec<Segment>,
    timeout: Duration,
    done: impl Fn(&[Segment]) -> bool,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !done(segments) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return;
        }
        match tokio::time::timeout(left, capture.next_batch(segments)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("next_batch: {e}"),
            Err(_) => return,
        }
    }
}

/// One direction of a connection rebuilt from segments.
#[derive(Debug, Default)]
pub struct Direction {
    pub syn: usize,
    pub fin: usize,
    pub rst: usize,
    pub bytes: Vec<u8>,
    /// Segments whose payload overlaps bytes already seen: (offset from ISN+1, length,
    /// nanoseconds since the overlapped sighting).
    pub duplicates: Vec<(u32, u32, u64)>,
    /// Overlaps whose bytes differ from what was seen before (never acceptable).
    pub conflicts: Vec<(u32, u32)>,
    pub segments: usize,
}

/// Reassemble the `src → dst` direction: needs the SYN for the ISN.
pub fn reassemble(segments: &[Segment], src: SocketAddr, dst: SocketAddr) -> Direction {
    let mine: Vec<&Segment> = segments
        .iter()
        .filter(|s| same(s.src, src) && same(s.dst, dst))
        .collect();
    let mut d = Direction::default();
    let Some(isn) = mine.iter().find(|s| s.flags.syn()).map(|s| s.seq) else {
        d.segments = mine.len();
        return d;
    };
    // start -> (len, ts)
    let mut ranges: BTreeMap<u32, (u32, u64)> = BTreeMap::new();
    for s in &mine {
        d.segments += 1;
        d.syn += usize::from(s.flags.syn());
        d.fin += usize::from(s.flags.fin());
        d.rst += usize::from(s.flags.rst());
        if s.payload.is_empty() {
            continue;
        }
        let start = s.seq.wrapping_sub(isn.wrapping_add(1));
        let len = s.payload.len() as u32;
        let end = start + len;
        let overlapped = ranges
            .range(..end)
            .filter(|(&a, &(l, _))| a + l > start)
            .map(|(_, &(_, t))| t)
            .next();
        let (from, to) = (start as usize, end as usize);
        if let Some(t) = overlapped {
            d.duplicates.push((start, len, s.ts.0.abs_diff(t)));
            let have = d.bytes.len().min(to);
            if have > from && d.bytes[from..have] != s.payload[..have - from] {
                d.conflicts.push((start, len));
            }
        }
        ranges.insert(start, (len, s.ts.0));
        if d.bytes.len() < to {
            d.bytes.resize(to, 0);
        }
        d.bytes[from..to].copy_from_slice(&s.payload);
    }
    d
}

/// TCP segments the host retransmitted so far (`RetransSegs` in /proc/net/snmp).
pub fn retransmitted_segments() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (Some(names), Some(values)) = (tcp.next(), tcp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RetransSegs")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// Equal, treating IPv4 and its IPv4-mapped IPv6 form alike.
pub fn same(a: SocketAddr, b: SocketAddr) -> bool {
    let canon = |x: SocketAddr| match x {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => x,
        },
        v4 => v4,
    };
    canon(a) == canon(b)
}

/// Does any segment involve `port`?
pub fn touches_port(segments: &[Segment], port: u16) -> bool {
    segments
        .iter()
        .any(|s| s.src.port() == port || s.dst.port() == port)
}

/// Poll `f` until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn bpftool(args: &[&str]) -> String {
    let out = Command::new("bpftool")
        .args(args)
        .output()
        .expect("bpftool");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Is a BPF program with this id still loaded?
pub fn loaded(id: u32) -> bool {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .any(|p| p.id() == id)
}

/// Where the programs with these ids are attached: `tcx lo Ingress|Egress` from the TCX chains
/// of `lo` (bpftool before 7.3 does not list TCX links under `bpftool net`), and `cgroup <line>`
/// from `bpftool cgroup tree`.
pub fn attachments_of(ids: &[u32]) -> Vec<String> {
    let mut found = Vec::new();
    for kind in [
        aya::programs::TcAttachType::Ingress,
        aya::programs::TcAttachType::Egress,
    ] {
        if let Ok((_, progs)) = aya::programs::SchedClassifier::query_tcx("lo", kind) {
            for p in progs.iter().filter(|p| ids.contains(&p.id())) {
                found.push(format!(
                    "tcx lo {kind:?} {} (id {})",
                    p.name_as_str().unwrap_or("?"),
                    p.id()
                ));
            }
        }
    }
    for line in bpftool(&["cgroup", "tree"]).lines() {
        let first = line
            .split_whitespace()
            .next()
            .and_then(|t| t.parse::<u32>().ok());
        if first.is_some_and(|id| ids.contains(&id)) {
            found.push(format!("cgroup {}", line.trim()));
        }
    }
    found
}

/// Wait until none of `programs` is attached or loaded any more (the kernel frees a program
/// shortly after its last reference goes). Only these ids are checked: other parity instances
/// on the host are none of this test's business.
pub fn assert_released(context: &str, programs: &[(String, u32)]) {
    assert!(!programs.is_empty(), "{context}: no program ids to check");
    let ids: Vec<u32> = programs.iter().map(|(_, id)| *id).collect();
    let mut left = Vec::new();
    let clean = eventually(Duration::from_secs(5), || {
        left = attachments_of(&ids);
        left.extend(
            programs
                .iter()
                .filter(|(_, id)| loaded(*id))
                .map(|(name, id)| format!("loaded {name} (id {id})")),
        );
        left.is_empty()
    });
    assert!(clean, "{context}: left behind:\n{}", left.join("\n"));
}

/// The cgroup v2 mount point.
pub fn cgroup2_root() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/mounts").expect("/proc/mounts");
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .expect("a cgroup2 mount")
}

/// A cgroup directory this test created; removed on drop (after its processes are gone).
pub struct CgroupGuard {
    pub path: PathBuf,
}

impl CgroupGuard {
    pub fn create(parent: &Path, name: &str) -> CgroupGuard {
        remove_stale(parent, name);
        let path = parent.join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir(&path);
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        CgroupGuard { path }
    }
}

/// Remove `<name>-<pid>` cgroups left by a test run that was killed (its guards never ran):
/// empty ones only, children first.
fn remove_stale(parent: &Path, name: &str) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let prefix = format!("{name}-");
    for entry in entries.flatten() {
        let path = entry.path();
        let stale = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
        if stale && path.is_dir() {
            if let Ok(children) = std::fs::read_dir(&path) {
                for child in children.flatten().filter(|c| c.path().is_dir()) {
                    let _ = std::fs::remove_dir(child.path());
                }
            }
            let _ = std::fs::remove_dir(&path);
        }
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        // Processes still inside (a failed test) go back to the parent first.
        if let (Ok(procs), Some(parent)) = (
            std::fs::read_to_string(self.path.join("cgroup.procs")),
            self.path.parent(),
        ) {
            for pid in procs.lines() {
                let _ = std::fs::write(parent.join("cgroup.procs"), pid);
            }
        }
        let ok = eventually(Duration::from_secs(5), || {
            std::fs::remove_dir(&self.path).is_ok() || !self.path.exists()
        });
        if !ok {
            eprintln!("could not remove test cgroup {}", self.path.display());
        }
    }
}

/// A helper process (this test binary re-executed); killed and reaped on drop.
pub struct ChildGuard {
    pub child: Child,
    pub stdout: BufReader<ChildStdout>,
}

impl ChildGuard {
    /// Run the `#[ignore]`d test `entry` of this binary as a helper with `env`, inside the cgroup
    /// `cgroup` from its first instruction when given.
    pub fn spawn(entry: &str, env: &[(&str, String)], cgroup: Option<&Path>) -> ChildGuard {
        let exe = std::env::current_exe().expect("current_exe");
        let mut cmd = Command::new(exe);
        cmd.args([
            "--exact",
            entry,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PARITY_EBPF_HELPER", entry)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(cg) = cgroup {
            let procs = std::fs::OpenOptions::new()
                .write(true)
                .open(cg.join("cgroup.procs"))
                .expect("open cgroup.procs");
            use std::os::fd::IntoRawFd as _;
            let fd = procs.into_raw_fd();
            use std::os::unix::process::CommandExt as _;
            // SAFETY: only async-signal-safe calls (write, close) between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    // "0" moves the writing process: the child, before it runs anything.
                    if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                    libc::close(fd);
                    Ok(())
                });
            }
            let child = cmd.spawn().expect("spawn helper");
            // SAFETY: closing our copy of the fd we own.
            unsafe { libc::close(fd) };
            return ChildGuard::wrap(child);
        }
        ChildGuard::wrap(cmd.spawn().expect("spawn helper"))
    }

    /// Like [`ChildGuard::spawn`], but the helper runs as user and group `nobody` (65534).
    pub fn spawn_as_nobody(entry: &str, env: &[(&str, String)]) -> ChildGuard {
        let exe = std::env::current_exe().expect("current_exe");
        let mut cmd = Command::new(exe);
        cmd.args([
            "--exact",
            entry,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PARITY_EBPF_HELPER", entry)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        use std::os::unix::process::CommandExt as _;
        // std also drops the supplementary groups when root changes uid.
        cmd.uid(65534).gid(65534);
        ChildGuard::wrap(cmd.spawn().expect("spawn helper as nobody"))
    }

    fn wrap(mut child: Child) -> ChildGuard {
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        ChildGuard { child, stdout }
    }

    /// What follows `prefix` on the next line the helper printed that contains it (the test
    /// harness prints `test <name> ... ` before the helper's first line).
    pub fn expect_line(&mut self, prefix: &str) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self
                .stdout
                .read_line(&mut line)
                .expect("read helper stdout");
            assert!(n > 0, "helper exited before printing {prefix:?}");
            if let Some(at) = line.find(prefix) {
                return line[at + prefix.len()..].trim().to_string();
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Wait for the helper to exit by itself; its remaining stdout.
    pub fn wait_output(mut self) -> String {
        let mut rest = String::new();
        let _ = self.stdout.read_to_string(&mut rest);
        let _ = self.child.wait();
        rest
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Which helper this process is, when re-executed by [`ChildGuard::spawn`].
pub fn helper_role(entry: &str) -> bool {
    std::env::var("PARITY_EBPF_HELPER").as_deref() == Ok(entry)
}

/// Helper body: a blocking server on `addr` (port 0: any) answering each request with
/// `RESPONSE_LEN` bytes of pattern. Prints `PORT <n>`.
pub fn helper_server() {
    let addr = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:0".to_string());
    let response_len: usize = std::env::var("RESPONSE_LEN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let listener = std::net::TcpListener::bind(&addr).expect("bind");
    println!("PORT {}", listener.local_addr().expect("addr").port());
    std::io::stdout().flush().expect("flush");
    for conn in listener.incoming() {
        let Ok(mut s) = conn else { continue };
        std::thread::spawn(move || {
            let mut req = Vec::new();
            if s.read_to_end(&mut req).is_ok() {
                let _ = s.write_all(&pattern(response_len, req.len() as u64));
            }
        });
    }
}

/// Helper body: one exchange with `SERVER`, request of `REQUEST_LEN` bytes. Prints
/// `CLIENT <local addr> <response len>`.
pub fn helper_client() {
    let server: SocketAddr = std::env::var("SERVER")
        .expect("SERVER")
        .parse()
        .expect("addr");
    let len: usize = std::env::var("REQUEST_LEN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let mut s = std::net::TcpStream::connect(server).expect("connect");
    let local = s.local_addr().expect("local");
    s.write_all(&pattern(len, 7)).expect("write");
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).expect("read");
    println!("CLIENT {local} {}", resp.len());
    std::io::stdout().flush().expect("flush");
}
