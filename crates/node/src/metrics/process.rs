//! The process's CPU time, resident memory and open files, read from `/proc/self` at scrape
//! time (Linux; nothing elsewhere).

use super::gauge;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;

/// CPU, memory and open files from `/proc/self` (Linux; nothing elsewhere).
#[derive(Debug)]
pub(super) struct ProcessCollector;

/// Clock ticks per second of `/proc/self/stat` times (USER_HZ, 100 on Linux).
const USER_HZ: f64 = 100.0;

fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    Some((user + system) / USER_HZ)
}

fn resident_bytes() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn open_fds() -> Option<i64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as i64)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(seconds) = cpu_seconds() {
            let metric = ConstCounter::new(seconds);
            metric.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time of the process",
                None,
                metric.metric_type(),
            )?)?;
        }
        if let Some(bytes) = resident_bytes() {
            gauge(
                &mut encoder,
                "process_resident_memory_bytes",
                "Resident memory of the process",
                bytes,
            )?;
        }
        if let Some(fds) = open_fds() {
            gauge(
                &mut encoder,
                "process_open_fds",
                "Open file descriptors of the process",
                fds,
            )?;
        }
        Ok(())
    }
}
