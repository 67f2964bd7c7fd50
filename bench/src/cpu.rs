//! CPU time of processes, read from `/proc`, so a load run can report what each operation cost
//! the servers and the load generator itself (the figure to steer by on a machine that is
//! CPU-bound, where throughput only says how the cores were shared).
//!
//! Times come from `/proc/PID/stat` (`utime` + `stime`, in clock ticks). The kernel reports them
//! in `USER_HZ`, which is 100 on every architecture this project builds for, whatever the
//! kernel's own tick rate; [`TICKS_PER_SEC`] is that constant.

use std::path::{Path, PathBuf};

/// Units of `/proc/PID/stat` CPU times per second (`USER_HZ`, fixed by the kernel's ABI).
pub const TICKS_PER_SEC: u64 = 100;

/// User plus system CPU time of `pid` so far, in clock ticks; `None` if the process is gone or
/// the file cannot be parsed.
pub fn process_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_ticks(&text)
}

/// CPU time of this process so far, in clock ticks.
pub fn own_ticks() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_stat_ticks(&text)
}

/// `utime + stime` from the text of a `/proc/PID/stat` file. The command name (field 2) is in
/// parentheses and may itself hold spaces or parentheses, so fields are counted from the last
/// `)`: after it come state (field 3) ... utime (14) and stime (15).
pub fn parse_stat_ticks(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // Field 3 is the first after the name; utime is field 14, so skip fields 3..=13.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    utime.checked_add(stime)
}

/// The pids of the `ringkvd` processes whose `--config` file lies under `cluster_dir` (the
/// directory `ringctl local up` manages: `node-N/ringkvd.toml` below it), sorted.
pub fn local_cluster_pids(cluster_dir: &Path) -> Vec<u32> {
    let Ok(root) = cluster_dir.canonicalize() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| config_of_ringkvd(pid).is_some_and(|config| config.starts_with(&root)))
        .collect();
    pids.sort_unstable();
    pids
}

/// The canonical `--config` path of process `pid` if it is a `ringkvd`.
fn config_of_ringkvd(pid: u32) -> Option<PathBuf> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&str> = raw
        .split(|&byte| byte == 0)
        .filter_map(|arg| std::str::from_utf8(arg).ok())
        .collect();
    let program = Path::new(args.first()?);
    if program.file_name()? != "ringkvd" {
        return None;
    }
    let config = config_argument(&args)?;
    let path = Path::new(config);
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::fs::read_link(format!("/proc/{pid}/cwd"))
            .ok()?
            .join(path)
    };
    absolute.canonicalize().ok()
}

/// The value of `--config X` or `--config=X` in an argument list.
fn config_argument<'a>(args: &[&'a str]) -> Option<&'a str> {
    args.iter().enumerate().find_map(|(index, arg)| {
        if *arg == "--config" {
            args.get(index + 1).copied()
        } else {
            arg.strip_prefix("--config=")
        }
    })
}

/// CPU ticks of a set of processes at one moment, to subtract from a later reading.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Ticks per pid; `None` where the process could not be read.
    ticks: Vec<(u32, Option<u64>)>,
}

impl Sample {
    /// Reads the CPU time of every pid now.
    pub fn take(pids: &[u32]) -> Self {
        Self {
            ticks: pids.iter().map(|&pid| (pid, process_ticks(pid))).collect(),
        }
    }

    /// CPU seconds spent by the processes between `self` and `later`, summed; `None` if any
    /// process could not be read at either end (it died or restarted: the sum would be wrong).
    pub fn seconds_until(&self, later: &Sample) -> Option<f64> {
        let mut total = 0u64;
        for ((pid, before), (later_pid, after)) in self.ticks.iter().zip(&later.ticks) {
            if pid != later_pid {
                return None;
            }
            total += after.as_ref()?.checked_sub(*before.as_ref()?)?;
        }
        Some(total as f64 / TICKS_PER_SEC as f64)
    }
}

/// Microseconds of CPU per operation, or `None` without a reading or operations.
pub fn micros_per_op(cpu_seconds: Option<f64>, ops: u64) -> Option<f64> {
    if ops == 0 {
        return None;
    }
    cpu_seconds.map(|seconds| seconds * 1e6 / ops as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_times_are_read_after_the_command_name() {
        // A name with spaces and a parenthesis must not shift the fields.
        let line = "4242 (ring kvd (x)) S 1 4242 4242 0 -1 4194304 1516 0 0 0 \
                    1234 567 0 0 20 0 9 0 12345 1000000 500 18446744073709551615";
        assert_eq!(parse_stat_ticks(line), Some(1234 + 567));
        assert_eq!(parse_stat_ticks("4242 (x) S 1 2"), None);
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn this_process_has_a_cpu_time_that_grows() {
        let before = own_ticks().expect("own stat readable");
        // Spin until the kernel has charged at least one tick (bounded: a tick is 10 ms).
        let started = std::time::Instant::now();
        let mut spin = 0u64;
        while own_ticks().expect("own stat readable") == before
            && started.elapsed() < std::time::Duration::from_secs(10)
        {
            spin = spin.wrapping_add(1);
            std::hint::black_box(spin);
        }
        assert!(own_ticks().expect("own stat readable") > before);
    }

    #[test]
    fn a_sample_of_a_vanished_process_gives_no_figure() {
        let me = std::process::id();
        let before = Sample::take(&[me]);
        let after = Sample::take(&[me]);
        assert!(before.seconds_until(&after).is_some());
        // Pid 0 has no /proc entry.
        let gone_before = Sample::take(&[me, 0]);
        let gone_after = Sample::take(&[me, 0]);
        assert_eq!(gone_before.seconds_until(&gone_after), None);
        assert_eq!(micros_per_op(Some(1.0), 0), None);
        assert_eq!(micros_per_op(Some(0.5), 1000), Some(500.0));
    }

    #[test]
    fn the_config_argument_is_found_in_both_spellings() {
        assert_eq!(
            config_argument(&["ringkvd", "--config", "a/b.toml"]),
            Some("a/b.toml")
        );
        assert_eq!(
            config_argument(&["ringkvd", "--config=c.toml"]),
            Some("c.toml")
        );
        assert_eq!(config_argument(&["ringkvd", "--config"]), None);
    }
}
