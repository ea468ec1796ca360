//! The agent as a child process: start it with a configuration, wait until it is ready, read
//! its metrics and summary, stop it with a signal, and collect what it wrote.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::env;

/// A running `parity-agent run`.
pub struct Agent {
    child: Option<Child>,
    /// Working directory with the configuration and outputs.
    pub dir: tempfile::TempDir,
    /// `[server] listen`, when configured.
    pub listen: Option<SocketAddr>,
    log: Arc<Mutex<String>>,
    log_thread: Option<std::thread::JoinHandle<()>>,
}

/// How to start the agent.
pub struct AgentOpts<'a> {
    /// The configuration text.
    pub config: &'a str,
    /// Extra arguments after `run --config FILE`.
    pub args: Vec<String>,
    /// Run inside this network namespace (`ip netns exec`).
    pub netns: Option<&'a str>,
    /// `[server] listen` of the configuration, to poll `/readyz`.
    pub listen: Option<SocketAddr>,
}

impl Agent {
    /// [`Agent::start`] with `config` alone, in this namespace, serving on `listen` (the
    /// configuration's `[server] listen`): what most tests run.
    pub fn start_listening(config: &str, listen: SocketAddr) -> Result<Agent> {
        Agent::start(AgentOpts {
            config,
            args: vec![],
            netns: None,
            listen: Some(listen),
        })
    }

    /// Start `parity-agent run --config <dir>/parity.toml --exchanges <dir>/exchanges.jsonl
    /// --report <dir>/report.json ARGS` and wait until `/readyz` answers (or, without a
    /// server, until the log says capture is attached).
    pub fn start(opts: AgentOpts<'_>) -> Result<Agent> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("parity.toml");
        std::fs::write(&config, opts.config)?;
        let bin = env::agent_bin();
        let mut cmd = match opts.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.arg("run")
            .arg("--config")
            .arg(&config)
            .arg("--exchanges")
            .arg(dir.path().join("exchanges.jsonl"))
            .arg("--report")
            .arg(dir.path().join("report.json"))
            .args(&opts.args)
            .current_dir(dir.path())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stderr = child.stderr.take().context("no stderr")?;
        let log = Arc::new(Mutex::new(String::new()));
        let log2 = log.clone();
        let log_thread = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[agent] {line}");
                if let Ok(mut l) = log2.lock() {
                    l.push_str(&line);
                    l.push('\n');
                }
            }
        });
        let mut agent = Agent {
            child: Some(child),
            dir,
            listen: opts.listen,
            log,
            log_thread: Some(log_thread),
        };
        agent.wait_ready(Duration::from_secs(60))?;
        Ok(agent)
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(child) = &mut self.child {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "the agent exited during start-up ({status}):\n{}",
                        self.log()
                    );
                }
            }
            let ready = match self.listen {
                Some(addr) => http_get(addr, "/readyz")
                    .map(|(s, _)| s == 200)
                    .unwrap_or(false),
                None => self.log().contains("capturing with"),
            };
            if ready {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "the agent did not become ready within {timeout:?}:\n{}",
            self.log()
        )
    }

    /// Everything the agent logged so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `GET path` on the agent's server: status and body.
    pub fn get(&self, path: &str) -> Result<(u16, String)> {
        http_get(self.listen.context("the agent has no [server]")?, path)
    }

    /// `/metrics` text.
    pub fn metrics(&self) -> Result<String> {
        Ok(self.get("/metrics")?.1)
    }

    /// The value of one metric sample (exact name with labels as rendered), 0 when absent.
    pub fn metric(&self, sample: &str) -> Result<f64> {
        Ok(metric_value(&self.metrics()?, sample))
    }

    /// `/api/summary` as JSON.
    pub fn summary(&self) -> Result<serde_json::Value> {
        let (status, body) = self.get("/api/summary")?;
        if status != 200 {
            bail!("/api/summary answered {status}: {body}");
        }
        Ok(serde_json::from_str(&body)?)
    }

    /// Send `signal` to the agent (its `ip netns exec` wrapper execs, so the pid is the agent).
    pub fn signal(&self, signal: i32) -> Result<()> {
        let pid = self.pid().context("the agent is not running")?;
        // SAFETY: kill(2) on our own child's pid.
        let r = unsafe { libc::kill(pid as libc::pid_t, signal) };
        if r != 0 {
            bail!("kill {pid}: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// SIGTERM and wait (up to 60 s) for the exit status.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        self.signal(libc::SIGTERM)?;
        self.wait(Duration::from_secs(60))
    }

    /// Wait for the agent to exit by itself.
    pub fn wait(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let start = Instant::now();
        let mut child = self.child.take().context("the agent is not running")?;
        loop {
            if let Some(status) = child.try_wait()? {
                if let Some(t) = self.log_thread.take() {
                    let _ = t.join();
                }
                return Ok(status);
            }
            if start.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the agent did not exit within {timeout:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL without any chance to clean up.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// The agent's resident memory now and at its peak (`VmRSS`, `VmHWM`).
    pub fn memory(&self) -> Result<Memory> {
        proc_memory(self.pid().context("the agent is not running")?)
    }

    /// Path of a file in the agent's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The exchange records written so far (complete lines only).
    pub fn exchanges(&self) -> Result<Vec<serde_json::Value>> {
        read_jsonl(&self.path("exchanges.jsonl"))
    }

    /// The report written at exit.
    pub fn report(&self) -> Result<serde_json::Value> {
        let p = self.path("report.json");
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        Ok(serde_json::from_str(&text)?)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
            }
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Records of a JSONL file (a last partial line is ignored).
pub fn read_jsonl(path: &Path) -> Result<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .with_context(|| format!("bad record in {}: {l}", path.display()))
        })
        .collect()
}

/// The value of one sample line in Prometheus text (`name{labels} value`), 0 when absent.
pub fn metric_value(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(sample)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// Resident memory of a process, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    /// `VmRSS`: resident now.
    pub rss: u64,
    /// `VmHWM`: the peak resident size so far.
    pub hwm: u64,
}

/// `VmRSS` and `VmHWM` of process `pid` from `/proc/<pid>/status`.
pub fn proc_memory(pid: u32) -> Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib = |key: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|k| k * 1024)
            .with_context(|| format!("no {key} in /proc/{pid}/status"))
    };
    Ok(Memory {
        rss: kib("VmRSS:")?,
        hwm: kib("VmHWM:")?,
    })
}

/// The samples of metric `name` in Prometheus text: each sample's labels and value.
pub fn metric_samples(text: &str, name: &str) -> Vec<(Vec<(String, String)>, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (labels, value) = if let Some(body) = rest.strip_prefix('{') {
            let Some(end) = body.rfind('}') else {
                continue;
            };
            (parse_labels(&body[..end]), &body[end + 1..])
        } else if rest.starts_with(' ') {
            (Vec::new(), rest)
        } else {
            // Another metric whose name starts with this one.
            continue;
        };
        if let Ok(v) = value.trim().parse::<f64>() {
            out.push((labels, v));
        }
    }
    out
}

fn parse_labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some((name, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(if n == 'n' { '\n' } else { n });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.push((name.trim_start_matches(',').trim().to_string(), value));
        rest = &after[end..];
    }
    out
}

/// The sum of the samples of metric `name` whose labels include every `(label, value)` given.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_samples(text, name)
        .into_iter()
        .filter(|(l, _)| {
            labels
                .iter()
                .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, v)| v)
        .sum()
}

/// A bare HTTP/1.0 GET (no client library, so nothing hides what was sent).
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
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
