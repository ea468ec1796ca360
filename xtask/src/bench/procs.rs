//! The processes a benchmark starts, each owned by a guard that stops it on drop (also when the
//! benchmark fails half-way): nginx, tcpdump, the agent, wrk, the load generator; plus a work
//! directory and a cgroup that are removed on drop, and readers of `/proc` and `/metrics`.
//!
//! Only the processes the bench started are signalled, by their pid; nginx's workers are found
//! as the master's children (or as the members of the bench's cgroup), never by name.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Send `sig` to `pid` (ignoring a process that is already gone).
pub fn signal(pid: u32, sig: i32) {
    if let Ok(p) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) with a pid the bench started; no memory is touched.
        unsafe { libc::kill(p, sig) };
    }
}

/// The hard limit of open files of this process (children inherit it; raising it needs
/// `CAP_SYS_RESOURCE`, which containers often drop).
pub fn hard_nofile() -> u64 {
    // SAFETY: an all-zero rlimit is a valid value; getrlimit writes into it.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: getrlimit with a pointer to a live rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    lim.rlim_max
}

/// Is `pid` alive (and not a zombie)?
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            // The state follows the parenthesised command name.
            s.rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next())
                .is_some_and(|c| c != 'Z' && c != 'X')
        })
        .unwrap_or(false)
}

/// Poll `f` every 20 ms until it is true or `timeout` passed.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The direct children of `pid` (from `/proc/PID/task/*/children`).
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
    }
    out
}

/// A child process stopped on drop: `stop_signal`, up to `grace` to exit, then SIGKILL; its
/// children (nginx workers) are SIGKILLed after it if still alive. stderr is collected.
pub struct Proc {
    child: Option<Child>,
    name: String,
    stop_signal: i32,
    grace: Duration,
    stderr: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Proc {
    /// Spawn `cmd` (stdin from /dev/null, stderr collected, stdout as the caller set it).
    pub fn spawn(name: &str, cmd: &mut Command, stop_signal: i32) -> Result<Proc> {
        Proc::spawn_with_stdin(name, cmd, stop_signal, Stdio::null())
    }

    /// As [`Proc::spawn`], with `stdin`.
    pub fn spawn_with_stdin(
        name: &str,
        cmd: &mut Command,
        stop_signal: i32,
        stdin: Stdio,
    ) -> Result<Proc> {
        cmd.stdin(stdin).stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({cmd:?})"))?;
        let stderr = Arc::new(Mutex::new(String::new()));
        let reader = child.stderr.take().map(|err| {
            let sink = stderr.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    if let Ok(mut s) = sink.lock() {
                        // Bounded: a chatty process must not grow the bench's memory.
                        if s.len() < 1 << 20 {
                            s.push_str(&line);
                            s.push('\n');
                        }
                    }
                }
            })
        });
        Ok(Proc {
            child: Some(child),
            name: name.to_string(),
            stop_signal,
            grace: Duration::from_secs(10),
            stderr,
            reader,
        })
    }

    /// How long the stop signal has before SIGKILL (default 10 s).
    pub fn grace(mut self, grace: Duration) -> Proc {
        self.grace = grace;
        self
    }

    /// The pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// What it wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The child's stdin, when piped.
    pub fn take_stdin(&mut self) -> Option<std::process::ChildStdin> {
        self.child.as_mut().and_then(|c| c.stdin.take())
    }

    /// The child's stdout, when the caller piped it.
    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.as_mut().and_then(|c| c.stdout.take())
    }

    /// Has it exited? (Its status, once.)
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        match &mut self.child {
            Some(c) => Ok(c.try_wait()?),
            None => bail!("{} was already stopped", self.name),
        }
    }

    /// Wait up to `timeout` for it to exit by itself; kill it after that and fail.
    pub fn wait(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(s) = self.try_wait()? {
                self.finish_reader();
                self.child = None;
                return Ok(s);
            }
            if start.elapsed() > timeout {
                self.stop_now();
                bail!("{} did not exit within {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stop it with its stop signal and wait for its status.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        let pid = self.pid();
        let grandchildren = children(pid);
        signal(pid, self.stop_signal);
        let r = self.wait(self.grace);
        for c in grandchildren {
            if alive(c) {
                signal(c, libc::SIGKILL);
            }
        }
        r
    }

    fn finish_reader(&mut self) {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }

    fn stop_now(&mut self) {
        if let Some(mut c) = self.child.take() {
            let grandchildren = children(c.id());
            signal(c.id(), self.stop_signal);
            let exited = eventually(self.grace, || matches!(c.try_wait(), Ok(Some(_))));
            if !exited {
                let _ = c.kill();
                let _ = c.wait();
            }
            for g in grandchildren {
                if alive(g) {
                    signal(g, libc::SIGKILL);
                }
            }
        }
        self.finish_reader();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// A directory under `target/bench/` removed on drop.
pub struct WorkDir {
    /// Its path.
    pub path: PathBuf,
}

impl WorkDir {
    /// Create `target/bench/work-<pid>-<tag>` (emptied first).
    pub fn new(tag: &str) -> Result<WorkDir> {
        let path = crate::util::target_dir()
            .join("bench")
            .join(format!("work-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(WorkDir { path })
    }

    /// A path inside.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A cgroup v2 directory the bench creates for its server, removed on drop after its processes
/// are moved back to the root.
pub struct BenchCgroup {
    /// Its path.
    pub path: PathBuf,
    root: PathBuf,
}

/// The host's cgroup v2 mount (`/sys/fs/cgroup/unified` on hybrid hosts).
pub fn cgroup2_root() -> Result<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts")?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, dir, fs) = (f.next()?, f.next()?, f.next()?);
            (fs == "cgroup2").then(|| PathBuf::from(dir))
        })
        .min_by_key(|p| p.as_os_str().len())
        .context("no cgroup2 mount in /proc/mounts (the cgroup engine needs cgroup v2)")
}

impl BenchCgroup {
    /// Create `<root>/parity-bench-<tag>-<pid>`.
    pub fn new(tag: &str) -> Result<BenchCgroup> {
        let root = cgroup2_root()?;
        let path = root.join(format!("parity-bench-{tag}-{}", std::process::id()));
        if path.exists() {
            let _ = std::fs::remove_dir(&path);
        }
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(BenchCgroup { path, root })
    }

    /// Make `cmd` start inside this cgroup (the child writes itself into `cgroup.procs` before
    /// exec, so everything it forks is inside too).
    pub fn enter_on_exec(&self, cmd: &mut Command) -> Result<()> {
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(self.path.join("cgroup.procs"))
            .with_context(|| format!("opening {}/cgroup.procs", self.path.display()))?;
        let fd = std::os::fd::IntoRawFd::into_raw_fd(procs);
        // SAFETY: the closure runs in the forked child before exec and only calls write(2)
        // (async-signal-safe) on a descriptor opened above; "0" means the writing process.
        unsafe {
            cmd.pre_exec(move || {
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
                Ok(())
            });
        }
        Ok(())
    }

    /// The pids inside.
    pub fn pids(&self) -> Vec<u32> {
        std::fs::read_to_string(self.path.join("cgroup.procs"))
            .map(|s| {
                s.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for BenchCgroup {
    fn drop(&mut self) {
        for pid in self.pids() {
            let _ = std::fs::write(self.root.join("cgroup.procs"), pid.to_string());
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// `n` distinct free TCP ports on loopback (bound together, then released; the bench listens
/// on them at once).
pub fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut ports = [0u16; N];
    for (p, l) in ports.iter_mut().zip(&listeners) {
        *p = l.local_addr()?.port();
    }
    Ok(ports)
}

/// A free TCP port on loopback.
pub fn free_port() -> Result<u16> {
    Ok(free_ports::<1>()?[0])
}

/// Wait until something accepts connections on `addr`.
pub fn wait_listening(addr: SocketAddr, timeout: Duration) -> bool {
    eventually(timeout, || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    })
}

/// `GET path` over HTTP/1.0: status and body.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let status = buf
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status line")?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The sum of every sample of metric `name` in Prometheus text whose labels contain every one
/// of `labels` (`key="value"`); 0 when absent.
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labelset, value) = if let Some(r) = rest.strip_prefix('{') {
                let (ls, v) = r.split_once('}')?;
                (ls, v)
            } else if rest.starts_with(' ') {
                ("", rest)
            } else {
                // Another metric whose name starts with `name`.
                return None;
            };
            labels
                .iter()
                .all(|want| labelset.split(',').any(|l| l == *want))
                .then(|| value.trim().parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// CPU seconds (user + system) `pid` used so far, from `/proc/PID/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = s.rsplit_once(") ")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3 of stat(5), utime 14 and stime 15.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    Some((utime + stime) / hz)
}

/// A `/proc/PID/status` field in bytes (`VmRSS`, `VmHWM`, `RssAnon`).
pub fn status_bytes(pid: u32, field: &str) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| {
        let v = l.strip_prefix(field)?.strip_prefix(':')?;
        let kib: f64 = v.split_whitespace().next()?.parse().ok()?;
        Some(kib * 1024.0)
    })
}

/// What running a command to completion cost.
pub struct Measured {
    /// Wall time from spawn to reaping.
    pub wall: Duration,
    /// Peak resident set size (`ru_maxrss`), bytes.
    pub max_rss: f64,
    /// User + system CPU seconds.
    pub cpu: f64,
    /// Exit status code (`-signal` when killed).
    pub code: i32,
    /// stderr.
    pub stderr: String,
}

/// Run `cmd` to completion (stdout to /dev/null, stderr collected) and measure it with
/// `wait4(2)`: wall time and the kernel's own peak RSS and CPU accounting of the child. Killed
/// after `timeout`.
pub fn measure(cmd: &mut Command, timeout: Duration) -> Result<Measured> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let pid = child.id();
    let mut err = child.stderr.take().context("no stderr pipe")?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    // A watchdog: the only thing that can outlive the timeout is a hung child.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watchdog = {
        let done = done.clone();
        std::thread::spawn(move || {
            let t = Instant::now();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if t.elapsed() > timeout {
                    signal(pid, libc::SIGKILL);
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = loop {
        // SAFETY: wait4 on our own child, writing into the locals above.
        let r = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut ru) };
        if r == -1 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        break r;
    };
    let wall = start.elapsed();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = watchdog.join();
    // The child is reaped: `Child` must not wait on it again (dropping it does not).
    drop(child);
    if r == -1 {
        bail!("wait4 {pid}: {}", std::io::Error::last_os_error());
    }
    let stderr = reader.join().unwrap_or_default();
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -libc::WTERMSIG(status)
    };
    if wall > timeout {
        bail!("{cmd:?} did not finish within {timeout:?}: killed");
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(Measured {
        wall,
        max_rss: ru.ru_maxrss as f64 * 1024.0,
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
        code,
        stderr,
    })
}

/// Run `cmd` to completion with stdout and stderr collected; killed (and failed) after
/// `timeout`.
pub fn output(cmd: &mut Command, timeout: Duration) -> Result<std::process::Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let read = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut v);
            }
            v
        })
    };
    let out = read(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = read(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{cmd:?} did not finish within {timeout:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(std::process::Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// Path of a program: on PATH, or in /usr/sbin and /sbin (where Debian puts nginx).
pub fn which(cmd: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
}

/// Fail naming the missing tool and how to get it.
pub fn need(tools: &[&str]) -> Result<()> {
    for t in tools {
        if which(t).is_none() {
            bail!("{t} is not installed (cargo xtask setup installs it)");
        }
    }
    Ok(())
}

/// Write `text` to `path`.
pub fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sum_filters_by_name_and_labels() {
        let text = "# HELP x\n\
            parity_http_exchanges_total{complete=\"true\"} 10\n\
            parity_http_exchanges_total{complete=\"false\"} 2\n\
            parity_http_exchanges_totalx 100\n\
            parity_flows_active 7\n";
        assert_eq!(metric_sum(text, "parity_http_exchanges_total", &[]), 12.0);
        assert_eq!(
            metric_sum(text, "parity_http_exchanges_total", &["complete=\"true\""]),
            10.0
        );
        assert_eq!(metric_sum(text, "parity_flows_active", &[]), 7.0);
        assert_eq!(metric_sum(text, "parity_missing", &[]), 0.0);
    }

    #[test]
    fn measure_reports_exit_code_and_rss() -> Result<()> {
        let m = measure(
            Command::new("sh").args(["-c", "echo hi >&2; exit 3"]),
            Duration::from_secs(10),
        )?;
        assert_eq!(m.code, 3);
        assert_eq!(m.stderr, "hi\n");
        assert!(m.max_rss > 0.0);
        Ok(())
    }

    #[test]
    fn own_process_has_cpu_and_rss() {
        let me = std::process::id();
        assert!(cpu_seconds(me).is_some());
        assert!(status_bytes(me, "VmRSS").unwrap_or(0.0) > 0.0);
        assert!(alive(me));
    }
}
