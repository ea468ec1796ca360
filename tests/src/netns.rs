//! Network namespaces, veth pairs and cgroups that tests create and always remove.
//!
//! Every resource is owned by a guard whose `Drop` removes it, so a failing test still cleans
//! up. Names carry the process id, so parallel or leftover runs do not collide.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Run a command, failing with its stderr.
pub fn sh(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String> {
    sh(Command::new("ip").args(args))
}

/// A network namespace, deleted on drop.
pub struct Netns {
    /// Its name (`ip netns` name).
    pub name: String,
}

impl Netns {
    /// Create `parity-<tag>-<pid>` with its loopback up, after deleting the namespaces that
    /// killed test runs left (`parity-*-<pid>` whose process is gone: Drop never ran).
    pub fn new(tag: &str) -> Result<Netns> {
        remove_stale();
        let name = format!("parity-{tag}-{}", std::process::id());
        let _ = ip(&["netns", "del", &name]);
        ip(&["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut a = vec!["-n", self.name.as_str()];
        a.extend_from_slice(args);
        ip(&a)
    }

    /// A command run inside the namespace (`ip netns exec`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Run `f` on a new thread that has entered this namespace: sockets it creates (and the
    /// tokio runtime it builds) live in the namespace.
    pub fn spawn<F, T>(&self, f: F) -> std::thread::JoinHandle<Result<T>>
    where
        F: FnOnce() -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let path = PathBuf::from("/var/run/netns").join(&self.name);
        std::thread::spawn(move || {
            enter(&path)?;
            f()
        })
    }
}

/// Move the calling thread into the network namespace at `path`.
pub fn enter(path: &Path) -> Result<()> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: setns on a valid namespace fd only changes this thread's network namespace.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if r != 0 {
        bail!(
            "setns {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// Delete `parity-*-<pid>` namespaces whose test process no longer exists.
fn remove_stale() {
    let Ok(dir) = std::fs::read_dir("/var/run/netns") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("parity-")
            .and_then(|rest| rest.rsplit('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", &name]);
        }
    }
}

/// Two namespaces joined by a veth pair, with IPv4 and IPv6 addresses.
pub struct VethPair {
    /// The client side.
    pub a: Netns,
    /// The server side.
    pub b: Netns,
    /// Interface name in `a`.
    pub a_if: String,
    /// Interface name in `b`.
    pub b_if: String,
    /// `a`'s IPv4 address.
    pub a_v4: std::net::Ipv4Addr,
    /// `b`'s IPv4 address.
    pub b_v4: std::net::Ipv4Addr,
    /// `a`'s IPv6 address.
    pub a_v6: std::net::Ipv6Addr,
    /// `b`'s IPv6 address.
    pub b_v6: std::net::Ipv6Addr,
}

impl VethPair {
    /// Create `a` and `b` joined by veth, addressed 10.231.x.1/2 and fd00:231:x::1/2, up.
    pub fn new(tag: &str, subnet: u8) -> Result<VethPair> {
        let a = Netns::new(&format!("{tag}a"))?;
        let b = Netns::new(&format!("{tag}b"))?;
        let pid = std::process::id() % 100_000;
        let a_if = format!("pa{subnet}x{pid}");
        let b_if = format!("pb{subnet}x{pid}");
        ip(&[
            "link", "add", &a_if, "netns", &a.name, "type", "veth", "peer", "name", &b_if, "netns",
            &b.name,
        ])?;
        let a_v4: std::net::Ipv4Addr = format!("10.231.{subnet}.1").parse()?;
        let b_v4: std::net::Ipv4Addr = format!("10.231.{subnet}.2").parse()?;
        let a_v6: std::net::Ipv6Addr = format!("fd00:231:{subnet}::1").parse()?;
        let b_v6: std::net::Ipv6Addr = format!("fd00:231:{subnet}::2").parse()?;
        for (ns, ifname, v4, v6) in [(&a, &a_if, a_v4, a_v6), (&b, &b_if, b_v4, b_v6)] {
            ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", ifname])?;
            ns.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                ifname,
                "nodad",
            ])?;
            ns.ip(&["link", "set", ifname, "up"])?;
        }
        Ok(VethPair {
            a,
            b,
            a_if,
            b_if,
            a_v4,
            b_v4,
            a_v6,
            b_v6,
        })
    }
}

/// A cgroup v2 directory created for a test, removed on drop (after moving its processes out).
pub struct Cgroup {
    /// Its path.
    pub path: PathBuf,
    root: PathBuf,
}

/// The host's cgroup v2 mount: `/sys/fs/cgroup/unified` on hybrid hosts, else `/sys/fs/cgroup`.
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
        .context("no cgroup2 mount in /proc/mounts")
}

impl Cgroup {
    /// Create `<root>/parity-test-<tag>-<pid>`.
    pub fn new(tag: &str) -> Result<Cgroup> {
        let root = cgroup2_root()?;
        let path = root.join(format!("parity-test-{tag}-{}", std::process::id()));
        if path.exists() {
            let _ = std::fs::remove_dir(&path);
        }
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Cgroup { path, root })
    }

    /// Move process `pid` into this cgroup.
    pub fn add(&self, pid: u32) -> Result<()> {
        std::fs::write(self.path.join("cgroup.procs"), pid.to_string())
            .with_context(|| format!("moving {pid} into {}", self.path.display()))
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if let Ok(procs) = std::fs::read_to_string(self.path.join("cgroup.procs")) {
            for pid in procs.split_whitespace() {
                let _ = std::fs::write(self.root.join("cgroup.procs"), pid);
            }
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// Every parity program still loaded and every BPF link that holds one (`bpftool prog` and
/// `bpftool link`: TCX attachments, which this bpftool's `net show` does not list, are links),
/// plus parity's lines of `bpftool net` and `bpftool cgroup tree`. Empty when nothing of
/// parity is in the kernel. Global: run such checks with nothing else of parity running.
pub fn parity_in_kernel() -> Result<String> {
    let progs: serde_json::Value =
        serde_json::from_str(&sh(Command::new("bpftool").args(["-j", "prog", "show"]))?)?;
    let parity_ids: Vec<u64> = progs
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|p| p["name"].as_str().is_some_and(|n| n.starts_with("parity_")))
                .filter_map(|p| p["id"].as_u64())
                .collect()
        })
        .unwrap_or_default();
    let mut found = String::new();
    for id in &parity_ids {
        found.push_str(&format!("program {id} loaded\n"));
    }
    let links: serde_json::Value =
        serde_json::from_str(&sh(Command::new("bpftool").args(["-j", "link", "show"]))?)?;
    for l in links.as_array().cloned().unwrap_or_default() {
        if l["prog_id"]
            .as_u64()
            .is_some_and(|p| parity_ids.contains(&p))
        {
            found.push_str(&format!(
                "link {} holds program {}\n",
                l["id"], l["prog_id"]
            ));
        }
    }
    found.push_str(&parity_lines(&sh(
        Command::new("bpftool").args(["net", "show"])
    )?));
    found.push_str(&parity_lines(&sh(
        Command::new("bpftool").args(["cgroup", "tree"])
    )?));
    Ok(found)
}

/// parity's programs attached to the cgroup at `path` (`bpftool cgroup show`).
pub fn cgroup_attachments(path: &Path) -> Result<String> {
    let out = sh(Command::new("bpftool").args(["cgroup", "show"]).arg(path))?;
    Ok(parity_lines(&out))
}

fn parity_lines(out: &str) -> String {
    out.lines()
        .filter(|l| l.contains("parity_"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The eBPF programs and links a process holds, by kernel id (from its `/proc/<pid>/fdinfo`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BpfIds {
    /// `prog_id` of every program descriptor.
    pub programs: Vec<u64>,
    /// `link_id` of every link descriptor.
    pub links: Vec<u64>,
}

/// The programs and links process `pid` holds now.
pub fn bpf_ids_of(pid: u32) -> Result<BpfIds> {
    let dir = PathBuf::from(format!("/proc/{pid}/fdinfo"));
    let mut ids = BpfIds::default();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let Ok(text) = std::fs::read_to_string(entry?.path()) else {
            continue;
        };
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let Some(link) = field("link_id:") {
            ids.links.push(link);
        } else if let Some(prog) = field("prog_id:") {
            ids.programs.push(prog);
        }
    }
    ids.programs.sort_unstable();
    ids.programs.dedup();
    ids.links.sort_unstable();
    ids.links.dedup();
    Ok(ids)
}

/// Which of `ids` the kernel still has (`bpftool prog` and `bpftool link`), as text; empty when
/// none. Unlike [`parity_in_kernel`] this looks only at one process's objects, so another parity
/// running on the host cannot fail it.
pub fn bpf_ids_alive(ids: &BpfIds) -> Result<String> {
    let progs: serde_json::Value =
        serde_json::from_str(&sh(Command::new("bpftool").args(["-j", "prog", "show"]))?)?;
    let links: serde_json::Value =
        serde_json::from_str(&sh(Command::new("bpftool").args(["-j", "link", "show"]))?)?;
    let mut alive = String::new();
    for p in progs.as_array().cloned().unwrap_or_default() {
        if p["id"]
            .as_u64()
            .is_some_and(|id| ids.programs.contains(&id))
        {
            alive.push_str(&format!("program {} ({}) loaded\n", p["id"], p["name"]));
        }
    }
    for l in links.as_array().cloned().unwrap_or_default() {
        let held = l["id"].as_u64().is_some_and(|id| ids.links.contains(&id))
            || l["prog_id"]
                .as_u64()
                .is_some_and(|id| ids.programs.contains(&id));
        if held {
            alive.push_str(&format!("link {} of program {}\n", l["id"], l["prog_id"]));
        }
    }
    Ok(alive)
}
