//! `corerelay doctor`: checks the host a configuration will run on against `tuning/`, and
//! prints each finding with its fix. Every check reads the running system (procfs, sysfs,
//! resource limits, the spool's filesystem) — nothing is assumed.

use std::fmt;
use std::path::Path;

use crate::config::Config;

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    /// Works, but not as tuning/ recommends.
    Warn,
    /// corerelay will not run (or not safely) as configured.
    Fail,
}

#[derive(Debug, Clone)]
pub struct Finding {
    pub level: Level,
    pub check: &'static str,
    pub found: String,
    /// What to do about it (empty when all is well).
    pub fix: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.level {
            Level::Ok => "ok  ",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        };
        write!(f, "{tag} {}: {}", self.check, self.found)?;
        if !self.fix.is_empty() {
            write!(f, "\n       fix: {}", self.fix)?;
        }
        Ok(())
    }
}

fn finding(level: Level, check: &'static str, found: String, fix: &str) -> Finding {
    Finding {
        level,
        check,
        found,
        fix: if level == Level::Ok {
            String::new()
        } else {
            fix.to_string()
        },
    }
}

/// Runs every check for `config` on this host.
pub fn run(config: &Config) -> Vec<Finding> {
    let online = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let cores = config.core_count(online);
    vec![
        io_uring(),
        memlock(cores, config.server.io_memory_bytes),
        nofile(cores, config.smtp.connections_per_core_max_count),
        somaxconn(config.smtp.backlog_count),
        port_range(),
        spool_filesystem(&config.spool.dir),
        transparent_hugepages(),
        governor(),
    ]
}

fn read_trim(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

fn io_uring() -> Finding {
    match read_trim("/proc/sys/kernel/io_uring_disabled").as_deref() {
        Some("0") | None => {
            // Not disabled by sysctl (or an older kernel without the knob): try it for real.
            let probe = glommio::LocalExecutorBuilder::default()
                .io_memory(64 << 10)
                .make();
            match probe {
                Ok(_) => finding(Level::Ok, "io_uring", "available".into(), ""),
                Err(e) => finding(
                    Level::Fail,
                    "io_uring",
                    format!("cannot start an executor: {e}"),
                    "Linux >= 5.8 with io_uring allowed (kernel.io_uring_disabled = 0) and locked memory; see tuning/README.md",
                ),
            }
        }
        Some(v) => finding(
            Level::Fail,
            "io_uring",
            format!("kernel.io_uring_disabled = {v}"),
            "sysctl -w kernel.io_uring_disabled=0 (and persist it in /etc/sysctl.d/)",
        ),
    }
}

fn rlimit(resource: libc::__rlimit_resource_t) -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    let rc = unsafe { libc::getrlimit(resource, &mut r) };
    (rc == 0).then_some(r.rlim_cur)
}

/// Each executor registers `io_memory_bytes` on three io_uring rings.
fn memlock(cores: usize, io_memory_bytes: usize) -> Finding {
    let need = (cores * 3 * io_memory_bytes) as u64;
    match rlimit(libc::RLIMIT_MEMLOCK) {
        Some(have) if have == libc::RLIM_INFINITY || have >= need => finding(
            Level::Ok,
            "locked memory",
            format!(
                "limit {} covers {cores} cores x 3 rings x {io_memory_bytes} bytes",
                show_limit(have)
            ),
            "",
        ),
        Some(have) => finding(
            Level::Warn,
            "locked memory",
            format!(
                "limit {} is below {need} bytes ({cores} cores x 3 rings x server.io_memory_bytes {io_memory_bytes}); io_uring buffer registration will be skipped or fail",
                show_limit(have)
            ),
            "LimitMEMLOCK= in the systemd unit (tuning/limits/corerelay.conf) or lower server.io_memory_bytes",
        ),
        None => finding(
            Level::Warn,
            "locked memory",
            "cannot read RLIMIT_MEMLOCK".into(),
            "",
        ),
    }
}

fn nofile(cores: usize, per_core: usize) -> Finding {
    // Connections in and out, spool segments, log files, and some slack.
    let need = (cores * per_core * 2 + 1024) as u64;
    match rlimit(libc::RLIMIT_NOFILE) {
        Some(have) if have == libc::RLIM_INFINITY || have >= need => finding(
            Level::Ok,
            "open files",
            format!(
                "limit {} covers {cores} cores x {per_core} connections (in and out)",
                show_limit(have)
            ),
            "",
        ),
        Some(have) => finding(
            Level::Warn,
            "open files",
            format!(
                "limit {} is below {need} ({cores} cores x smtp.connections_per_core_max_count {per_core} x 2 + 1024)",
                show_limit(have)
            ),
            "LimitNOFILE= in the systemd unit (tuning/limits/corerelay.conf), or ulimit -n",
        ),
        None => finding(Level::Warn, "open files", "cannot read RLIMIT_NOFILE".into(), ""),
    }
}

fn show_limit(v: u64) -> String {
    if v == libc::RLIM_INFINITY {
        "unlimited".into()
    } else {
        v.to_string()
    }
}

fn somaxconn(backlog: u32) -> Finding {
    match read_trim("/proc/sys/net/core/somaxconn").and_then(|v| v.parse::<u32>().ok()) {
        Some(v) if v >= backlog => finding(
            Level::Ok,
            "listen backlog",
            format!("net.core.somaxconn {v} >= smtp.backlog_count {backlog}"),
            "",
        ),
        Some(v) => finding(
            Level::Warn,
            "listen backlog",
            format!("net.core.somaxconn {v} silently caps smtp.backlog_count {backlog}"),
            "tuning/sysctl.d/90-corerelay.conf (net.core.somaxconn)",
        ),
        None => finding(
            Level::Warn,
            "listen backlog",
            "cannot read net.core.somaxconn".into(),
            "",
        ),
    }
}

fn port_range() -> Finding {
    let range = read_trim("/proc/sys/net/ipv4/ip_local_port_range");
    let parsed = range.as_deref().and_then(|r| {
        let mut it = r.split_whitespace().filter_map(|v| v.parse::<u32>().ok());
        Some((it.next()?, it.next()?))
    });
    match parsed {
        Some((lo, hi)) if hi.saturating_sub(lo) >= 50_000 => finding(
            Level::Ok,
            "outbound ports",
            format!("ip_local_port_range {lo}-{hi}"),
            "",
        ),
        Some((lo, hi)) => finding(
            Level::Warn,
            "outbound ports",
            format!(
                "ip_local_port_range {lo}-{hi} leaves {} ports per destination",
                hi.saturating_sub(lo)
            ),
            "net.ipv4.ip_local_port_range = 10240 65535 (tuning/sysctl.d/90-corerelay.conf)",
        ),
        None => finding(
            Level::Warn,
            "outbound ports",
            "cannot read ip_local_port_range".into(),
            "",
        ),
    }
}

/// The filesystem holding the spool: not tmpfs (no durability, and glommio turns O_DIRECT
/// off there), never mounted with barriers off, and with room to spare.
fn spool_filesystem(dir: &Path) -> Finding {
    let probe = existing_ancestor(dir);
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let Some((fstype, options)) = std::fs::canonicalize(&probe)
        .ok()
        .and_then(|p| mount_of(&mounts, &p))
    else {
        return finding(
            Level::Warn,
            "spool filesystem",
            format!("cannot find the mount of {}", probe.display()),
            "",
        );
    };
    assess_spool(dir, &fstype, &options, free_bytes(&probe))
}

fn assess_spool(dir: &Path, fstype: &str, options: &str, free: Option<u64>) -> Finding {
    if fstype == "tmpfs" || fstype == "ramfs" {
        return finding(
            Level::Fail,
            "spool filesystem",
            format!(
                "{} is on {fstype}: accepted mail would not survive a reboot",
                dir.display()
            ),
            "put spool.dir on a local ext4/XFS filesystem (tuning/README.md, spool filesystem)",
        );
    }
    if options.split(',').any(|o| o == "nobarrier" || o == "barrier=0") {
        return finding(
            Level::Fail,
            "spool filesystem",
            format!(
                "{} is mounted with {options}: fdatasync would not make a 250 durable",
                dir.display()
            ),
            "remount without nobarrier/barrier=0",
        );
    }
    let level = if free.is_some_and(|f| f < 1 << 30) {
        Level::Warn
    } else {
        Level::Ok
    };
    finding(
        level,
        "spool filesystem",
        format!(
            "{} on {fstype} ({options}), {} free",
            dir.display(),
            free.map(|f| format!("{} MiB", f >> 20))
                .unwrap_or_else(|| "unknown".into())
        ),
        "give the spool its own filesystem with room for the backlog you expect",
    )
}

fn existing_ancestor(dir: &Path) -> std::path::PathBuf {
    let abs = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(dir)
    };
    abs.ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"))
        .to_path_buf()
}

/// The filesystem type and options of the longest mount point in `mounts` (the text of
/// /proc/self/mounts) containing the canonical `path`.
fn mount_of(mounts: &str, path: &Path) -> Option<(String, String)> {
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_dev, point, fstype, options) = (f.next()?, f.next()?, f.next()?, f.next()?);
            path.starts_with(point)
                .then(|| (point.len(), fstype.to_string(), options.to_string()))
        })
        .max_by_key(|(len, _, _)| *len)
        .map(|(_, t, o)| (t, o))
}

fn free_bytes(path: &Path) -> Option<u64> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs reads the NUL-terminated path and writes only into `s`.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above; both pointers are valid for the duration of the call.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut s) };
    (rc == 0).then(|| s.f_bavail * s.f_frsize)
}

fn transparent_hugepages() -> Finding {
    match read_trim("/sys/kernel/mm/transparent_hugepage/enabled") {
        Some(v) if v.contains("[always]") => finding(
            Level::Warn,
            "transparent huge pages",
            v,
            "echo madvise > /sys/kernel/mm/transparent_hugepage/enabled (khugepaged stalls hurt tail latency)",
        ),
        Some(v) => finding(Level::Ok, "transparent huge pages", v, ""),
        None => finding(
            Level::Ok,
            "transparent huge pages",
            "not configurable here".into(),
            "",
        ),
    }
}

fn governor() -> Finding {
    match read_trim("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor") {
        Some(g) if g == "performance" => finding(Level::Ok, "CPU governor", g, ""),
        Some(g) => finding(
            Level::Warn,
            "CPU governor",
            g,
            "cpupower frequency-set -g performance (tuning/README.md, CPU frequency)",
        ),
        None => finding(
            Level::Ok,
            "CPU governor",
            "no cpufreq here (VM or fixed clock)".into(),
            "",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_below_the_need_are_warnings_with_a_fix() {
        let f = memlock(1_000_000, 1 << 30);
        assert_eq!(f.level, Level::Warn, "{f}");
        assert!(f.fix.contains("LimitMEMLOCK"));
        let f = nofile(1, 1);
        assert_eq!(f.level, Level::Ok, "{f}");
        let f = somaxconn(u32::MAX);
        assert_eq!(f.level, Level::Warn, "{f}");
    }

    #[test]
    fn the_spool_filesystem_is_judged_by_its_mount() {
        let mounts = "/dev/vda / ext4 rw,relatime 0 0\ntmpfs /dev/shm tmpfs rw,nosuid 0 0\n/dev/vdb /var/spool xfs rw,nobarrier 0 0\n";
        let m = |p: &str| mount_of(mounts, Path::new(p)).unwrap();
        assert_eq!(m("/srv/spool").0, "ext4");
        assert_eq!(m("/dev/shm/x").0, "tmpfs");
        assert_eq!(m("/var/spool/corerelay"), ("xfs".into(), "rw,nobarrier".into()));
        let dir = Path::new("/x");
        assert_eq!(assess_spool(dir, "tmpfs", "rw", Some(1 << 40)).level, Level::Fail);
        assert_eq!(
            assess_spool(dir, "xfs", "rw,nobarrier", Some(1 << 40)).level,
            Level::Fail
        );
        assert_eq!(
            assess_spool(dir, "ext4", "rw,relatime", Some(1 << 20)).level,
            Level::Warn
        );
        let ok = assess_spool(dir, "ext4", "rw,relatime", Some(1 << 40));
        assert_eq!(ok.level, Level::Ok, "{ok}");
        assert!(ok.fix.is_empty());
    }
}
