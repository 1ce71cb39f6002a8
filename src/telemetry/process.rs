//! The process's own figures, read from `/proc/self` at each scrape (what
//! Prometheus client libraries call process metrics): CPU time, resident
//! memory, open file descriptors and start time.

use std::fmt;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};

/// The process figures, where `/proc` has them (Linux); none elsewhere.
#[derive(Debug)]
pub struct ProcessMetrics;

/// What `/proc/self` says.
struct Figures {
    cpu_seconds: f64,
    resident_bytes: i64,
    open_fds: i64,
    start_time_seconds: i64,
}

fn figures() -> Option<Figures> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces: fields are counted after its ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<i64>().ok();
    // SAFETY: sysconf only reads system constants.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse::<i64>()
        .ok()?;
    Some(Figures {
        cpu_seconds: (field(14)? + field(15)?) as f64 / ticks.max(1) as f64,
        resident_bytes: field(24)? * page,
        open_fds: std::fs::read_dir("/proc/self/fd").ok()?.count() as i64,
        start_time_seconds: boot + field(22)? / ticks.max(1),
    })
}

impl Collector for ProcessMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let Some(f) = figures() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(f.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "CPU time the process used, user and system",
            None,
            MetricType::Counter,
        )?)?;
        for (name, help, value) in [
            (
                "process_resident_memory_bytes",
                "Resident memory of the process",
                f.resident_bytes,
            ),
            (
                "process_open_fds",
                "File descriptors the process holds",
                f.open_fds,
            ),
            (
                "process_start_time_seconds",
                "When the process started (Unix time)",
                f.start_time_seconds,
            ),
        ] {
            ConstGauge::new(value).encode(encoder.encode_descriptor(
                name,
                help,
                None,
                MetricType::Gauge,
            )?)?;
        }
        Ok(())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let f = figures().expect("/proc/self is readable");
        assert!(f.resident_bytes > 1 << 20, "{}", f.resident_bytes);
        assert!(f.open_fds >= 3);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!(
            (now - f.start_time_seconds).abs() < 3600,
            "{}",
            f.start_time_seconds
        );
    }
}
