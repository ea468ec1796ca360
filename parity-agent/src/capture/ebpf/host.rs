//! What live capture needs to know about the host before attaching: which interfaces exist and
//! how their packets are framed, where the cgroup v2 hierarchy is mounted, whether a directory
//! is a cgroup v2 directory, and the two clocks that map kernel timestamps to epoch time.
//!
//! Reads `/proc/mounts`, `/sys/class/net` and `statfs`; changes nothing.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::LiveError;

/// `/sys/class/net/<if>/flags` bit: the interface is a loopback.
const IFF_LOOPBACK: u32 = 0x8;
/// `statfs` magic of cgroup v2.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// Where a TC program finds the network header in an interface's packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Framing {
    /// Ethernet-style 14-byte link header (Ethernet, veth, bridges, `lo`).
    Ethernet,
    /// No link header: the packet starts with IP (tun, wireguard, IP tunnels).
    Raw,
}

/// One interface named in `[capture] interfaces`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Interface {
    /// Its name.
    pub name: String,
    /// Loopback interfaces get only the egress program (a packet leaves and re-enters `lo`).
    pub loopback: bool,
    /// Link header.
    pub framing: Framing,
}

/// Look up `name` in `/sys/class/net`.
pub(super) fn interface(name: &str) -> Result<Interface, LiveError> {
    let missing = || LiveError::NoSuchInterface {
        name: name.to_string(),
    };
    // A name is one path component; anything else cannot be an interface.
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(missing());
    }
    let dir = Path::new("/sys/class/net").join(name);
    let read_num = |file: &str| -> Option<u32> {
        let text = std::fs::read_to_string(dir.join(file)).ok()?;
        parse_sysfs_number(&text)
    };
    let (Some(link_type), Some(flags)) = (read_num("type"), read_num("flags")) else {
        return Err(missing());
    };
    let framing = framing_of(link_type).ok_or_else(|| LiveError::UnsupportedInterface {
        name: name.to_string(),
        link_type,
    })?;
    Ok(Interface {
        name: name.to_string(),
        loopback: flags & IFF_LOOPBACK != 0,
        framing,
    })
}

/// Decimal (`type`) or `0x` hexadecimal (`flags`) sysfs number.
fn parse_sysfs_number(text: &str) -> Option<u32> {
    let t = text.trim();
    match t.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => t.parse().ok(),
    }
}

/// The framing of an `ARPHRD_*` link type, `None` when parity does not know it.
fn framing_of(link_type: u32) -> Option<Framing> {
    match link_type {
        // ARPHRD_ETHER, ARPHRD_LOOPBACK
        1 | 772 => Some(Framing::Ethernet),
        // ARPHRD_RAWIP, ARPHRD_TUNNEL, ARPHRD_TUNNEL6, ARPHRD_SIT, ARPHRD_NONE
        519 | 768 | 769 | 776 | 65534 => Some(Framing::Raw),
        _ => None,
    }
}

/// The cgroup v2 directory to attach to: `configured`, or the host's cgroup v2 root.
/// Returns the path and an open handle on it (what the attach call takes).
pub(super) fn cgroup_dir(configured: Option<&Path>) -> Result<(PathBuf, File), LiveError> {
    let path = match configured {
        Some(p) => p.to_path_buf(),
        None => {
            let mounts =
                std::fs::read_to_string("/proc/mounts").map_err(|source| LiveError::Io {
                    what: "reading /proc/mounts to find the cgroup v2 hierarchy".to_string(),
                    source,
                })?;
            cgroup2_mount_point(&mounts).ok_or(LiveError::NoCgroupV2)?
        }
    };
    if !path.is_dir() {
        return Err(LiveError::CgroupNotFound { path });
    }
    if !is_cgroup2(&path) {
        return Err(LiveError::NotCgroupV2 { path });
    }
    let file = File::open(&path).map_err(|source| LiveError::Io {
        what: format!("opening cgroup directory {}", path.display()),
        source,
    })?;
    Ok((path, file))
}

/// The first `cgroup2` mount point in `/proc/mounts` text: `/sys/fs/cgroup` on pure v2 hosts,
/// `/sys/fs/cgroup/unified` on hybrid ones.
pub(super) fn cgroup2_mount_point(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let _source = fields.next()?;
        let mount_point = fields.next()?;
        let fs_type = fields.next()?;
        (fs_type == "cgroup2").then(|| PathBuf::from(unescape_mount_field(mount_point)))
    })
}

/// `/proc/mounts` escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape_mount_field(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .map(|d| d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0')));
        match (bytes.get(i), octal) {
            (Some(b'\\'), Some(v)) if v <= 0xff => {
                out.push(v as u8);
                i += 4;
            }
            (Some(&b), _) => {
                out.push(b);
                i += 1;
            }
            (None, _) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_cgroup2(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct we own; the path is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::statfs(c_path.as_ptr(), &mut st) };
    // `f_type` is i64 on 64-bit Linux targets and narrower on some 32-bit ones.
    #[allow(clippy::useless_conversion)]
    let f_type = i64::from(st.f_type);
    r == 0 && f_type == CGROUP2_SUPER_MAGIC
}

/// Nanoseconds of `clock` (CLOCK_MONOTONIC, the clock of `bpf_ktime_get_ns`, or CLOCK_REALTIME).
pub(super) fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own; both clocks always exist on Linux.
    let r = unsafe { libc::clock_gettime(clock, &mut ts) };
    if r != 0 {
        return 0;
    }
    u64::try_from(ts.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(ts.tv_nsec).unwrap_or(0))
}

/// Lift RLIMIT_MEMLOCK for kernels that still charge BPF memory to it (before 5.11); newer
/// kernels charge the memory cgroup and ignore it. Best effort: failure only matters there, and
/// the map creation error then says so.
pub(super) fn raise_memlock() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads the struct we own.
    let r = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
    if r != 0 {
        tracing::debug!(
            "could not lift RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup2_mount_point_on_hybrid_and_pure_hosts() {
        let hybrid = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n\
                      cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n";
        assert_eq!(
            cgroup2_mount_point(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let pure = "proc /proc proc rw 0 0\ncgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n";
        assert_eq!(
            cgroup2_mount_point(pure),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(
            cgroup2_mount_point("cgroup /sys/fs/cgroup/cpu cgroup rw 0 0\n"),
            None
        );
        assert_eq!(cgroup2_mount_point(""), None);
    }

    #[test]
    fn mount_points_with_escaped_spaces() {
        let m = "none /mnt/my\\040cgroup cgroup2 rw 0 0\n";
        assert_eq!(
            cgroup2_mount_point(m),
            Some(PathBuf::from("/mnt/my cgroup"))
        );
        // A malformed escape is kept verbatim rather than misread.
        assert_eq!(unescape_mount_field("a\\09x\\"), "a\\09x\\");
    }

    #[test]
    fn sysfs_numbers() {
        assert_eq!(parse_sysfs_number("772\n"), Some(772));
        assert_eq!(parse_sysfs_number("0x1009\n"), Some(0x1009));
        assert_eq!(parse_sysfs_number("zz"), None);
    }

    #[test]
    fn framing_of_known_and_unknown_link_types() {
        assert_eq!(framing_of(1), Some(Framing::Ethernet));
        assert_eq!(framing_of(772), Some(Framing::Ethernet));
        assert_eq!(framing_of(65534), Some(Framing::Raw));
        assert_eq!(framing_of(801), None);
    }

    #[test]
    fn interface_names_that_are_not_one_path_component() {
        for bad in ["", ".", "..", "../lo", "a/b"] {
            assert!(
                matches!(interface(bad), Err(LiveError::NoSuchInterface { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn loopback_is_found_and_flagged() {
        // `lo` exists in every network namespace.
        match interface("lo") {
            Ok(lo) => {
                assert!(lo.loopback);
                assert_eq!(lo.framing, Framing::Ethernet);
            }
            Err(e) => panic!("lo: {e}"),
        }
        assert!(matches!(
            interface("parity-no-such-if0"),
            Err(LiveError::NoSuchInterface { .. })
        ));
    }
}
