//! tcpdump as a peer capture in end-to-end tests: started and waited for until it really
//! listens (a capture that starts late misses the first requests), stopped so that it writes
//! its last packets and reports how many the kernel dropped (a capture with drops cannot be
//! expected to give exact counts offline).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::env;

/// A running tcpdump writing a capture file. Dropping it stops it.
pub struct Tcpdump {
    child: Child,
    lines: mpsc::Receiver<String>,
}

/// What tcpdump said when it stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpdumpStats {
    /// Packets written to the file.
    pub captured: u64,
    /// Packets the kernel dropped before tcpdump read them.
    pub dropped: u64,
}

impl Tcpdump {
    /// Start `tcpdump -i IFACE -w FILE FILTER`, unbuffered, full packets, and return once it
    /// reports that it is listening (or fail after 10 s, with what it printed).
    ///
    /// `--immediate-mode` matters: otherwise packets wait in a block of the kernel's ring until
    /// it fills or times out, and the block still open at SIGINT is never written, so the last
    /// exchanges of a test are silently missing from the file.
    pub fn start(iface: &str, file: &Path, filter: &str) -> Result<Self> {
        let bin = env::which("tcpdump").context("tcpdump is not installed")?;
        let mut child = Command::new(bin)
            .args([
                "-i",
                iface,
                "-n",
                "-s",
                "0",
                "-B",
                "65536",
                "-U",
                "--immediate-mode",
                "-w",
            ])
            .arg(file)
            .arg(filter)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning tcpdump")?;
        let stderr = child.stderr.take().context("tcpdump stderr")?;
        let lines = forward_lines(stderr);
        let dump = Tcpdump { child, lines };
        let mut said = Vec::new();
        loop {
            match dump.lines.recv_timeout(Duration::from_secs(10)) {
                Ok(line) if line.contains("listening on") => return Ok(dump),
                Ok(line) => said.push(line),
                Err(_) => bail!("tcpdump on {iface} did not start listening: {said:?}"),
            }
        }
    }

    /// Stop tcpdump (SIGINT: it flushes the file and prints its counts) and return the counts.
    pub fn stop(mut self) -> Result<TcpdumpStats> {
        self.signal_and_wait();
        let mut said = Vec::new();
        let mut captured = None;
        let mut dropped = None;
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            let n = line
                .split_whitespace()
                .next()
                .and_then(|w| w.parse::<u64>().ok());
            if line.contains("packets captured") {
                captured = n;
            } else if line.contains("dropped by kernel") {
                dropped = n;
            }
            said.push(line);
        }
        match (captured, dropped) {
            (Some(captured), Some(dropped)) => Ok(TcpdumpStats { captured, dropped }),
            _ => bail!("tcpdump printed no packet counts when stopped: {said:?}"),
        }
    }

    fn signal_and_wait(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: signalling our own child, which has not been reaped yet.
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, libc::SIGINT);
            }
        }
        let _ = self.child.wait();
    }
}

impl Drop for Tcpdump {
    fn drop(&mut self) {
        self.signal_and_wait();
    }
}

fn forward_lines(stderr: ChildStderr) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}
