//! Human units used in config and output: durations (`"5s"`), byte sizes (`"64MiB"`) and times.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest duration any setting takes. The agent adds durations to
/// instants and to each other (`window + read_timeout`, `threshold * 2`);
/// bounding them here keeps all of that far from overflowing, which panics.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses a duration such as `"500ms"`, `"5s"`, `"1m30s"` or `"2h"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("is empty; expected a duration like \"5s\" or \"500ms\"".into());
    }
    let d = humantime::parse_duration(t)
        .map_err(|_| format!("{text:?} is not a duration (expected e.g. \"5s\", \"500ms\", \"1m30s\")"))?;
    if d > MAX_DURATION {
        return Err(format!(
            "{text:?} is longer than a year, more than any setting takes"
        ));
    }
    Ok(d)
}

/// Parses a byte size such as `"64MiB"`, `"10MB"`, `"512KiB"`, `"1.5GiB"` or `"1024"`.
///
/// Binary (KiB, MiB, GiB, TiB) and decimal (KB, MB, GB, TB) units are both
/// accepted; a bare number is bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: String = num.chars().filter(|c| *c != '_').collect();
    let bad = || format!("{text:?} is not a size (expected e.g. \"64MiB\", \"10MB\", \"4096\")");
    let value: f64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    let bytes = value * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes.round() as u64)
}

/// Displays a byte count with a binary unit, e.g. `12.3 MiB`.
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut v = self.0 as f64;
        let mut i = 0;
        while v >= 1024.0 && i + 1 < UNITS.len() {
            v /= 1024.0;
            i += 1;
        }
        if i == 0 {
            write!(f, "{} B", self.0)
        } else {
            write!(f, "{v:.1} {}", UNITS[i])
        }
    }
}

/// Displays a duration compactly, e.g. `5s`, `1.250s`, `350ms`.
pub struct Secs(pub Duration);

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.as_secs() > 0 && d.subsec_nanos() == 0 {
            write!(f, "{}s", d.as_secs())
        } else if d < Duration::from_secs(1) {
            write!(f, "{}ms", d.as_millis())
        } else {
            write!(f, "{:.3}s", d.as_secs_f64())
        }
    }
}

/// A duration in ns, short: `850ns`, `71µs`, `4.1ms`, `1.25s`.
pub struct Nanos(pub u64);

impl fmt::Display for Nanos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.0;
        match ns {
            0..1_000 => write!(f, "{ns}ns"),
            1_000..1_000_000 => write!(f, "{}µs", ns / 1_000),
            1_000_000..1_000_000_000 => write!(f, "{:.1}ms", ns as f64 / 1e6),
            _ => write!(f, "{:.2}s", ns as f64 / 1e9),
        }
    }
}

/// RFC 3339 with microseconds, UTC.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

/// `2026-11-29T03:46:02.123456Z` → `20261129T034602.123Z`: sortable and
/// safe in file names and object keys.
pub fn compact_time(t: SystemTime) -> String {
    let s = humantime::format_rfc3339_millis(t).to_string();
    s.chars().filter(|c| *c != '-' && *c != ':').collect()
}

/// Seconds since the Unix epoch, for sorting and metrics.
pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size(" 512 KiB "), Ok(512 << 10));
        assert_eq!(parse_size("1_000"), Ok(1000));
        assert!(parse_size("64 furlongs").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("-1MiB").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        let err = parse_duration("5x").unwrap_err();
        assert!(err.contains("\"5x\" is not a duration"), "{err}");
        assert!(parse_duration("").is_err());
        assert_eq!(parse_duration("365d"), Ok(MAX_DURATION));
        let err = parse_duration("18446744073709551615s").unwrap_err();
        assert!(err.contains("longer than a year"), "{err}");
        assert!(parse_duration("366d").is_err());
    }

    #[test]
    fn display() {
        assert_eq!(Bytes(512).to_string(), "512 B");
        assert_eq!(Bytes(3 << 20).to_string(), "3.0 MiB");
        assert_eq!(Secs(Duration::from_secs(5)).to_string(), "5s");
        assert_eq!(Secs(Duration::from_millis(350)).to_string(), "350ms");
        assert_eq!(Secs(Duration::from_millis(1250)).to_string(), "1.250s");
    }
}
