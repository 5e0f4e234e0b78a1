//! A child process's CPU time (utime + stime of `/proc/<pid>/stat`) and peak
//! resident memory (`VmHWM` of `/proc/<pid>/status`). Linux only; elsewhere
//! the readings are `None` and the report says "n/a".

use std::time::Duration;

/// Clock ticks per second of the `/proc` time fields (`USER_HZ`). The kernel
/// reports them in USER_HZ, which is 100 on every mainstream architecture;
/// reading it through `sysconf` would need `libc` and `unsafe` for one constant.
const USER_HZ: u64 = 100;

/// CPU time (user + system, all threads, exited ones included) of `pid`.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&text).map(|ticks| Duration::from_millis(ticks * 1000 / USER_HZ))
}

/// Peak resident set size of `pid`, in bytes.
pub fn peak_rss(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_hwm(&text)
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line. The
/// command name (field 2) is in parentheses and may hold spaces, so fields
/// are counted after the last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    // After the name: field 3 (state) is the first; utime is field 14.
    let utime: u64 = fields.nth(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The `VmHWM:` line of `/proc/<pid>/status` ("VmHWM:   12345 kB"), in bytes.
fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_counted_after_a_name_with_spaces() {
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 2000 0 0 0 \
                    150 35 0 0 20 0 9 0 12345 1000000 2000 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(185));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn vm_hwm_in_bytes() {
        let status = "Name:\tmishards\nVmPeak:\t  900 kB\nVmHWM:\t   2048 kB\nVmRSS:\t 1000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(2048 * 1024));
        assert_eq!(parse_vm_hwm("Name: x\n"), None);
    }

    #[test]
    fn own_process_is_readable_on_linux() {
        if cfg!(target_os = "linux") {
            let pid = std::process::id();
            assert!(cpu_time(pid).is_some());
            assert!(peak_rss(pid).is_some_and(|b| b > 0));
        }
    }
}
