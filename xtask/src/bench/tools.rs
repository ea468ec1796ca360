//! The programs the benchmarks drive, each behind a small typed wrapper: nginx (a server, a
//! mirror splitter), wrk (load, and its request count), tcpdump (capture, and its own drop
//! count) and the agent (`parity-agent run` with `/metrics`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::procs::{self, BenchCgroup, Proc};

/// A running nginx (master and workers), stopped on drop.
pub struct Nginx {
    proc: Proc,
}

/// What an nginx instance is for.
pub struct NginxConf<'a> {
    /// Directory for its configuration, pid file, logs and temp paths.
    pub dir: &'a Path,
    /// `worker_processes`.
    pub workers: u32,
    /// `worker_connections` (and `worker_rlimit_nofile` above it).
    pub connections: u32,
    /// The `server { ... }` blocks (and upstreams).
    pub servers: String,
    /// Ports it listens on, to wait for.
    pub ports: Vec<u16>,
}

/// A server block answering every request with a fixed small body.
pub fn return_server(port: u16, body: &str, content_type: &str) -> String {
    format!(
        "server {{\n listen 127.0.0.1:{port} backlog=4096;\n default_type {content_type};\n \
         location / {{ return 200 '{body}'; }}\n}}\n"
    )
}

/// A splitter on `port`: every request is proxied to `primary` and mirrored to `mirror`, both
/// with the same `X-Request-ID` (nginx's `$request_id`), over keep-alive upstream connections.
pub fn mirror_server(port: u16, primary: u16, mirror: u16) -> String {
    format!(
        "upstream primary {{ server 127.0.0.1:{primary}; keepalive 32; }}\n\
         upstream mirror {{ server 127.0.0.1:{mirror}; keepalive 32; }}\n\
         server {{\n listen 127.0.0.1:{port} backlog=4096;\n\
          location / {{\n  mirror /__mirror;\n  mirror_request_body on;\n  proxy_http_version 1.1;\n\
           proxy_set_header Connection \"\";\n  proxy_set_header X-Request-ID $request_id;\n\
           proxy_pass http://primary;\n }}\n\
          location = /__mirror {{\n  internal;\n  proxy_http_version 1.1;\n\
           proxy_set_header Connection \"\";\n  proxy_set_header X-Request-ID $request_id;\n\
           proxy_pass http://mirror$request_uri;\n }}\n}}\n"
    )
}

impl Nginx {
    /// Start nginx with `conf` (inside `cgroup` when given) and wait until every port listens.
    pub fn start(conf: &NginxConf<'_>, cgroup: Option<&BenchCgroup>) -> Result<Nginx> {
        let nginx = procs::which("nginx").context("nginx is not installed (cargo xtask setup)")?;
        let d = conf.dir.display();
        let text = format!(
            "worker_processes {workers};\n\
             worker_rlimit_nofile {nofile};\n\
             daemon off;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\n\
             events {{ worker_connections {conns}; }}\n\
             http {{\n\
              access_log off;\n\
              keepalive_requests 100000000;\n\
              keepalive_timeout 300s;\n\
              client_body_temp_path {d}/body;\n\
              proxy_temp_path {d}/proxy;\n\
              fastcgi_temp_path {d}/fastcgi;\n\
              uwsgi_temp_path {d}/uwsgi;\n\
              scgi_temp_path {d}/scgi;\n\
              {servers}\
             }}\n",
            workers = conf.workers,
            nofile = (u64::from(conf.connections) * 2 + 1024).min(procs::hard_nofile()),
            conns = conf.connections,
            servers = conf.servers,
        );
        let path = conf.dir.join("nginx.conf");
        procs::write(&path, &text)?;
        let mut cmd = Command::new(nginx);
        cmd.arg("-c")
            .arg(&path)
            .arg("-p")
            .arg(conf.dir)
            .stdout(Stdio::null());
        if let Some(cg) = cgroup {
            cg.enter_on_exec(&mut cmd)?;
        }
        // SIGTERM: the master stops its workers (SIGKILL would orphan them).
        let mut proc = Proc::spawn("nginx", &mut cmd, libc::SIGTERM)?;
        for port in &conf.ports {
            let addr = SocketAddr::from(([127, 0, 0, 1], *port));
            if !procs::wait_listening(addr, Duration::from_secs(10)) {
                let log = std::fs::read_to_string(conf.dir.join("error.log")).unwrap_or_default();
                let exited = proc.try_wait().ok().flatten();
                bail!(
                    "nginx did not listen on {addr} (exit: {exited:?}): {}{log}",
                    proc.stderr()
                );
            }
        }
        Ok(Nginx { proc })
    }

    /// Stop it now (also done on drop).
    pub fn stop(mut self) -> Result<()> {
        self.proc.stop().map(drop)
    }
}

/// What one wrk run did.
#[derive(Clone, Debug)]
pub struct WrkRun {
    /// Responses wrk counted (`N requests in`).
    pub requests: f64,
    /// Its measured duration.
    pub secs: f64,
    /// `Requests/sec`.
    pub rps: f64,
    /// Socket errors plus non-2xx/3xx responses.
    pub errors: f64,
}

/// Load from wrk: `threads`, `connections`, for `secs` (whole seconds), optionally a Lua script.
pub fn wrk(
    url: &str,
    threads: u32,
    connections: u32,
    secs: u64,
    script: Option<&Path>,
) -> Result<WrkRun> {
    let mut cmd = Command::new("wrk");
    cmd.arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{secs}s"))
        .arg("--timeout")
        .arg("5s");
    if let Some(s) = script {
        cmd.arg("-s").arg(s);
    }
    cmd.arg(url);
    let out = procs::output(&mut cmd, Duration::from_secs(secs + 30))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk failed ({}): {text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_wrk(&text).with_context(|| format!("unexpected wrk output:\n{text}"))
}

/// Parse wrk's summary.
pub fn parse_wrk(text: &str) -> Option<WrkRun> {
    let mut requests = None;
    let mut secs = None;
    let mut rps = None;
    let mut errors = 0.0;
    for line in text.lines().map(str::trim) {
        if let Some((n, rest)) = line.split_once(" requests in ") {
            requests = n.trim().parse::<f64>().ok();
            let d = rest.split(',').next().unwrap_or("").trim();
            secs = parse_wrk_duration(d);
        } else if let Some(v) = line.strip_prefix("Requests/sec:") {
            rps = v.trim().parse::<f64>().ok();
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            errors += v.trim().parse::<f64>().unwrap_or(0.0);
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            errors += v
                .split(',')
                .filter_map(|p| p.split_whitespace().nth(1)?.parse::<f64>().ok())
                .sum::<f64>();
        }
    }
    Some(WrkRun {
        requests: requests?,
        secs: secs?,
        rps: rps?,
        errors,
    })
}

fn parse_wrk_duration(d: &str) -> Option<f64> {
    let split = d.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = d.split_at(split);
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "us" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    })
}

/// A wrk Lua script that stops after `n` responses (per thread).
pub fn wrk_stop_after(path: &Path, n: u64) -> Result<()> {
    procs::write(
        path,
        &format!(
            "local n = 0\nfunction response(status, headers, body)\n  n = n + 1\n  \
             if n >= {n} then wrk.thread:stop() end\nend\n"
        ),
    )
}

/// A tcpdump capturing to a file, stopped (SIGINT, so it flushes and prints its counts) on drop.
pub struct Tcpdump {
    proc: Proc,
}

/// tcpdump's own counts at exit.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpdumpStats {
    /// Packets written.
    pub captured: f64,
    /// Packets the filter accepted.
    pub received: f64,
    /// Packets the kernel dropped (buffer full).
    pub dropped: f64,
    /// CPU seconds tcpdump used.
    pub cpu: f64,
}

impl Tcpdump {
    /// Capture `filter` on `lo` into `file` with a `buffer_kib` kernel buffer; returns once
    /// tcpdump says it is listening.
    pub fn start(file: &Path, filter: &str, buffer_kib: u32) -> Result<Tcpdump> {
        let mut cmd = Command::new(procs::which("tcpdump").context("tcpdump is not installed")?);
        cmd.args(["-i", "lo", "-n", "-s", "0", "-Z", "root", "-B"])
            .arg(buffer_kib.to_string())
            .arg("-w")
            .arg(file)
            .arg(filter)
            .stdout(Stdio::null());
        let mut proc = Proc::spawn("tcpdump", &mut cmd, libc::SIGINT)?;
        let ok = procs::eventually(Duration::from_secs(10), || {
            proc.stderr().contains("listening on") || !procs::alive(proc.pid())
        });
        if !ok || !procs::alive(proc.pid()) {
            let _ = proc.try_wait();
            bail!("tcpdump did not start: {}", proc.stderr());
        }
        Ok(Tcpdump { proc })
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Stop it and read its counts.
    pub fn stop(mut self) -> Result<TcpdumpStats> {
        let cpu = procs::cpu_seconds(self.proc.pid()).unwrap_or(f64::NAN);
        self.proc.stop()?;
        let text = self.proc.stderr();
        let count = |what: &str| -> Option<f64> {
            text.lines()
                .find(|l| l.contains(what))
                .and_then(|l| l.split_whitespace().next()?.parse().ok())
        };
        Ok(TcpdumpStats {
            captured: count("packets captured")
                .with_context(|| format!("tcpdump printed no counts: {text}"))?,
            received: count("packets received by filter").unwrap_or(f64::NAN),
            dropped: count("packets dropped by kernel").unwrap_or(f64::NAN),
            cpu,
        })
    }
}

/// A running `parity-agent run` with a `[server]` for `/metrics`.
pub struct Agent {
    proc: Proc,
    /// `[server] listen`.
    pub listen: SocketAddr,
    /// Where it writes its report at exit.
    pub report: PathBuf,
}

impl Agent {
    /// Start `bin run --config DIR/NAME.toml --report DIR/NAME.report.json --duration ...` with
    /// `config` plus a `[server]` on a free port; wait until `/readyz` answers 200.
    /// `max_secs` bounds its life (`--duration`): it stops by itself even if the bench dies.
    pub fn start(bin: &Path, dir: &Path, name: &str, config: &str, max_secs: u64) -> Result<Agent> {
        let listen = SocketAddr::from(([127, 0, 0, 1], procs::free_port()?));
        let cfg = dir.join(format!("{name}.toml"));
        let report = dir.join(format!("{name}.report.json"));
        let _ = std::fs::remove_file(&report);
        procs::write(
            &cfg,
            &format!("{config}\n[server]\nlisten = \"{listen}\"\n"),
        )?;
        let mut cmd = Command::new(bin);
        cmd.arg("run")
            .arg("--config")
            .arg(&cfg)
            .arg("--report")
            .arg(&report)
            .arg("--duration")
            .arg(format!("{max_secs}s"))
            .arg("--quiet")
            .current_dir(dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null());
        let mut proc =
            Proc::spawn("parity-agent", &mut cmd, libc::SIGTERM)?.grace(Duration::from_secs(60));
        let start = Instant::now();
        loop {
            if let Some(status) = proc.try_wait()? {
                bail!(
                    "parity-agent exited during start-up ({status}):\n{}",
                    proc.stderr()
                );
            }
            if procs::http_get(listen, "/readyz").is_ok_and(|(s, _)| s == 200) {
                break;
            }
            if start.elapsed() > Duration::from_secs(60) {
                bail!("parity-agent was not ready within 60 s:\n{}", proc.stderr());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Agent {
            proc,
            listen,
            report,
        })
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// `/metrics`.
    pub fn metrics(&self) -> Result<String> {
        let (status, body) = procs::http_get(self.listen, "/metrics")?;
        if status != 200 {
            bail!("/metrics answered {status}");
        }
        Ok(body)
    }

    /// Poll `/metrics` until `value` stops changing (two equal readings 300 ms apart, at most
    /// `timeout`); returns the last metrics text.
    pub fn settle(&self, timeout: Duration, value: impl Fn(&str) -> f64) -> Result<String> {
        let start = Instant::now();
        let mut last = self.metrics()?;
        loop {
            std::thread::sleep(Duration::from_millis(300));
            let now = self.metrics()?;
            if value(&now) == value(&last) || start.elapsed() > timeout {
                return Ok(now);
            }
            last = now;
        }
    }

    /// SIGTERM; wait for the exit status (it detaches, drains and writes its report).
    pub fn stop(mut self) -> Result<(ExitStatus, String)> {
        let status = self.proc.stop()?;
        Ok((status, self.proc.stderr()))
    }

    /// The report it wrote at exit.
    pub fn read_report(path: &Path) -> Result<serde_json::Value> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the agent's report {}", path.display()))?;
        Ok(serde_json::from_str(&text)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_output() {
        let text = "Running 10s test @ http://127.0.0.1:8080/\n  1 threads and 16 connections\n\
            \x20 Thread Stats   Avg      Stdev     Max   +/- Stdev\n\
            \x20   Latency   300.00us  100.00us   5.00ms   90.00%\n\
            \x20 123456 requests in 10.00s, 17.30MB read\n\
            \x20 Socket errors: connect 0, read 2, write 0, timeout 1\n\
            \x20 Non-2xx or 3xx responses: 5\n\
            Requests/sec:  12345.60\nTransfer/sec:      1.73MB\n";
        let r = parse_wrk(text).expect("parsed");
        assert_eq!(r.requests, 123456.0);
        assert_eq!(r.secs, 10.0);
        assert_eq!(r.rps, 12345.6);
        assert_eq!(r.errors, 8.0);
        assert_eq!(parse_wrk_duration("1.00m"), Some(60.0));
        assert_eq!(parse_wrk_duration("350.12ms"), Some(0.35012));
        assert!(parse_wrk("garbage").is_none());
    }
}
