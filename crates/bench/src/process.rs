//! What `/proc` says about a process the bench started (the daemon, `redis-server`) and about
//! the machine: resident memory (`/proc/<pid>/status`), CPU time (`/proc/<pid>/stat`) and the
//! cores' idle share (`/proc/stat`). Starting and stopping the processes is
//! `attendance-testkit`'s.

use std::time::Duration;

/// `VmRSS` of process `pid` in bytes, from `/proc/<pid>/status`.
pub(crate) fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

/// CPU time a process has used, in user space and in the kernel (all its threads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CpuTime {
    pub(crate) user: Duration,
    pub(crate) system: Duration,
}

impl CpuTime {
    /// The CPU time used between `self` (earlier) and `later`.
    pub(crate) fn until(self, later: Self) -> Self {
        Self {
            user: later.user.saturating_sub(self.user),
            system: later.system.saturating_sub(self.system),
        }
    }
}

/// Linux reports `utime` and `stime` in `USER_HZ` ticks, 100 per second on every architecture
/// this runs on (the kernel's own tick rate is hidden from user space).
const USER_HZ: u64 = 100;

/// The CPU time used so far by process `pid`, from `/proc/<pid>/stat` (10 ms resolution).
pub(crate) fn cpu_time(pid: u32) -> Option<CpuTime> {
    parse_cpu_time(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn parse_cpu_time(stat: &str) -> Option<CpuTime> {
    // `pid (comm) state ppid …`: the name may hold spaces and parentheses, so the fields are
    // counted from the last `)`. utime and stime are fields 14 and 15, the 12th and 13th after
    // the name.
    let mut fields = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .skip(11);
    let ticks = |t: &str| t.parse::<u64>().ok();
    let user = ticks(fields.next()?)?;
    let system = ticks(fields.next()?)?;
    let time = |t: u64| Duration::from_millis(t.saturating_mul(1000 / USER_HZ));
    Some(CpuTime {
        user: time(user),
        system: time(system),
    })
}

/// The whole machine's CPU time so far, all cores, from the first line of `/proc/stat`, in
/// `USER_HZ` ticks: how much was spent idle (or waiting for the disk) and how much in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MachineCpu {
    idle: u64,
    total: u64,
}

impl MachineCpu {
    /// The share of all cores' time between `self` (earlier) and `later` that no process used
    /// (idle or waiting for I/O): 0 for a saturated machine, 1 for an idle one.
    pub(crate) fn idle_share_until(self, later: Self) -> Option<f64> {
        let total = later.total.checked_sub(self.total).filter(|&t| t > 0)?;
        let idle = later.idle.checked_sub(self.idle)?;
        Some(idle as f64 / total as f64)
    }
}

/// The machine's CPU time so far, from `/proc/stat`.
pub(crate) fn machine_cpu() -> Option<MachineCpu> {
    parse_machine_cpu(&std::fs::read_to_string("/proc/stat").ok()?)
}

fn parse_machine_cpu(stat: &str) -> Option<MachineCpu> {
    // `cpu  user nice system idle iowait irq softirq steal guest guest_nice`; guest time is
    // already counted in user and nice, so the sum stops at steal.
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    if ticks.len() < 5 {
        return None;
    }
    Some(MachineCpu {
        idle: ticks[3] + ticks[4],
        total: ticks.iter().sum(),
    })
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    parse_status_bytes(status, "VmRSS:")
}

/// A `/proc/<pid>/status` field given in kB (`VmRSS:\t  4321 kB`), in bytes.
fn parse_status_bytes(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    let mut words = line.split_whitespace().skip(1);
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => Some(value * 1024),
        _ => None,
    }
}

/// A process's resident memory now (`VmRSS`) and at its peak so far (`VmHWM`), in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Memory {
    /// `VmRSS`.
    pub(crate) rss: u64,
    /// `VmHWM`, the high-water mark of `VmRSS`.
    pub(crate) peak: u64,
}

/// [`Memory`] of process `pid`, from `/proc/<pid>/status`.
pub(crate) fn memory(pid: u32) -> Option<Memory> {
    parse_memory(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

fn parse_memory(status: &str) -> Option<Memory> {
    Some(Memory {
        rss: parse_status_bytes(status, "VmRSS:")?,
        peak: parse_status_bytes(status, "VmHWM:")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_in_bytes() {
        let status = "Name:\tattendanced\nVmPeak:\t  9000 kB\nVmRSS:\t    4321 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(4321 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
    }

    #[test]
    fn memory_now_and_at_peak_are_read_in_bytes() {
        let status = "Name:\tattendanced\nVmHWM:\t  9000 kB\nVmRSS:\t    4321 kB\n";
        assert_eq!(
            parse_memory(status),
            Some(Memory {
                rss: 4321 * 1024,
                peak: 9000 * 1024
            })
        );
        assert_eq!(parse_memory("VmRSS:\t1 kB\n"), None);
        assert!(memory(std::process::id()).is_some_and(|m| m.peak >= m.rss && m.rss > 0));
    }

    #[test]
    fn cpu_time_is_read_after_the_name_whatever_it_holds() {
        let stat = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 800 0 0 0 250 75 0 0 20 0 5 0 9 0";
        assert_eq!(
            parse_cpu_time(stat),
            Some(CpuTime {
                user: Duration::from_millis(2500),
                system: Duration::from_millis(750),
            })
        );
        assert_eq!(parse_cpu_time("4242 (x) S 1 2"), None);
    }

    #[test]
    fn machine_cpu_counts_idle_and_iowait_as_idle() {
        let stat = "cpu  100 5 50 800 40 3 2 0 7 0\ncpu0 50 2 25 400 20 1 1 0 0 0\nintr 1\n";
        let before = parse_machine_cpu(stat).expect("parsed");
        assert_eq!(
            before,
            MachineCpu {
                idle: 840,
                total: 1000
            }
        );
        let later = MachineCpu {
            idle: 940,
            total: 1400,
        };
        assert_eq!(before.idle_share_until(later), Some(0.25));
        assert_eq!(later.idle_share_until(later), None);
        assert_eq!(parse_machine_cpu("cpu  1 2 3\n"), None);
        assert_eq!(parse_machine_cpu("intr 1\n"), None);
    }

    #[test]
    fn own_machine_cpu_is_readable() {
        assert!(machine_cpu().is_some_and(|m| m.total > 0));
    }

    #[test]
    fn own_cpu_time_is_readable() {
        assert!(cpu_time(std::process::id()).is_some());
    }

    #[test]
    fn own_rss_is_readable() {
        assert!(rss_bytes(std::process::id()).is_some_and(|b| b > 0));
    }
}
