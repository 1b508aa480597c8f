//! Figures computed at scrape time: the process itself and each target's freshness.

use std::collections::BTreeMap;
use std::time::SystemTime;

use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

use super::TargetLabels;

/// CPU, memory, threads and file descriptors of this process, from
/// `getrusage` and `/proc/self`.
#[derive(Debug)]
pub struct ProcessCollector {
    started: SystemTime,
}

impl ProcessCollector {
    pub fn new() -> Self {
        ProcessCollector {
            started: SystemTime::now(),
        }
    }
}

/// What `getrusage(RUSAGE_SELF)` says: CPU seconds and peak RSS in bytes.
pub fn rusage() -> Option<(f64, u64)> {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage only writes into the struct we pass.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: rc == 0 means the kernel filled the struct.
    let ru = unsafe { ru.assume_init() };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some((
        secs(ru.ru_utime) + secs(ru.ru_stime),
        ru.ru_maxrss.max(0) as u64 * 1024,
    ))
}

/// A `kB` field of /proc/self/status, in bytes.
fn status_kb(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

fn status_num(status: &str, field: &str) -> Option<i64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].trim().parse().ok()
}

/// The process's soft limit on open file descriptors.
pub fn max_fds() -> Option<i64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: f64,
) -> std::fmt::Result {
    let g = ConstGauge::new(v);
    let m = encoder.encode_descriptor(name, help, unit, g.metric_type())?;
    g.encode(m)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        if let Some((cpu, peak)) = rusage() {
            let c = ConstCounter::new(cpu);
            let m = encoder.encode_descriptor(
                "process_cpu",
                "User and system CPU time spent by the agent",
                Some(&Unit::Seconds),
                c.metric_type(),
            )?;
            c.encode(m)?;
            gauge(
                &mut encoder,
                "process_peak_resident_memory",
                "Largest resident set size the agent has had",
                Some(&Unit::Bytes),
                peak as f64,
            )?;
        }
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            if let Some(rss) = status_kb(&status, "VmRSS:") {
                gauge(
                    &mut encoder,
                    "process_resident_memory",
                    "Resident set size",
                    Some(&Unit::Bytes),
                    rss as f64,
                )?;
            }
            if let Some(vm) = status_kb(&status, "VmSize:") {
                gauge(
                    &mut encoder,
                    "process_virtual_memory",
                    "Virtual memory size",
                    Some(&Unit::Bytes),
                    vm as f64,
                )?;
            }
            if let Some(t) = status_num(&status, "Threads:") {
                gauge(&mut encoder, "process_threads", "OS threads", None, t as f64)?;
            }
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            gauge(
                &mut encoder,
                "process_open_fds",
                "Open file descriptors",
                None,
                fds.count() as f64,
            )?;
        }
        if let Some(max) = max_fds() {
            gauge(
                &mut encoder,
                "process_max_fds",
                "Limit on open file descriptors",
                None,
                max as f64,
            )?;
        }
        gauge(
            &mut encoder,
            "process_start_time",
            "Start time of the agent since the Unix epoch",
            Some(&Unit::Seconds),
            crate::units::unix_seconds(self.started),
        )?;
        Ok(())
    }
}

/// Seconds since each target last gave a good window (or since recording
/// started, for a target that never has): the one number to alert on.
#[derive(Debug, Default)]
pub struct Freshness {
    last: Mutex<BTreeMap<String, SystemTime>>,
}

impl Freshness {
    pub fn started(&self, target: &str) {
        self.last
            .lock()
            .entry(target.to_string())
            .or_insert_with(SystemTime::now);
    }

    pub fn window_kept(&self, target: &str) {
        self.last.lock().insert(target.to_string(), SystemTime::now());
    }

    pub fn forget(&self, target: &str) {
        self.last.lock().remove(target);
    }
}

impl Collector for Freshness {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let now = SystemTime::now();
        let ages: Vec<(TargetLabels, f64)> = self
            .last
            .lock()
            .iter()
            .map(|(t, at)| {
                let age = now.duration_since(*at).unwrap_or_default().as_secs_f64();
                (TargetLabels { target: t.clone() }, age)
            })
            .collect();
        if ages.is_empty() {
            return Ok(());
        }
        let mut m = encoder.encode_descriptor(
            "seconds_since_last_window",
            "Seconds since the target last gave a good window, or since recording started",
            None,
            ConstGauge::new(0.0).metric_type(),
        )?;
        for (labels, age) in &ages {
            ConstGauge::new(*age).encode(m.encode_family(labels)?)?;
        }
        Ok(())
    }
}
