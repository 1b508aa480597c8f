//! Measuring processes: CPU and memory of a live one from `/proc`, a finished one from `wait4`, and the shell-loop baselines.

use super::*;

pub(crate) fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// User + system CPU seconds a live process has used.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    match (f.get(11), f.get(12)) {
        (Some(u), Some(s)) => (u + s) / clk_tck(),
        _ => 0.0,
    }
}

/// A `/proc/PID/status` figure in MB (VmRSS, VmHWM).
pub(crate) fn status_mb(pid: u32, key: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix(key).and_then(|v| {
                    v.trim_start_matches(':')
                        .trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<f64>()
                        .ok()
                })
            })
        })
        .map_or(0.0, |kb| kb * 1024.0 / 1e6)
}

/// What a finished process tree used, from `wait4`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Usage {
    pub(crate) cpu: f64,
    /// Largest resident set of the process or any of its children, MB.
    pub(crate) max_rss_mb: f64,
}

/// A shell loop (the baseline a person would write), its own process group,
/// killed with its children if dropped before it is waited for.
pub(crate) struct ShellLoop {
    pub(crate) pid: i32,
    pub(crate) dir: PathBuf,
    pub(crate) reaped: bool,
}

impl ShellLoop {
    /// `curl -o` one window after another into `dir` until `dir/stop`
    /// exists or `max` windows are written: a new process and connection
    /// per window.
    pub(crate) fn curl(url: &str, window: Duration, dir: &Path, max: usize) -> ShellLoop {
        let script = r#"i=0; while [ ! -e "$2/stop" ] && [ "$i" -lt "$3" ]; do i=$((i+1)); curl -sS -o "$2/$(printf 'w%05d.trace' "$i")" "$1" || sleep 0.2; done"#;
        Self::spawn(
            "bash",
            &[
                "-c",
                script,
                "bash",
                &trace_url(url, window),
                &dir.display().to_string(),
                &max.to_string(),
            ],
            dir,
        )
    }

    /// One `curl` fetching `n` windows over one kept-alive connection.
    pub(crate) fn curl_keepalive(url: &str, window: Duration, dir: &Path, n: usize) -> ShellLoop {
        let u = trace_url(url, window);
        let mut args = vec!["-sS".to_string()];
        for i in 1..=n {
            args.push(u.clone());
            args.push("-o".into());
            args.push(dir.join(format!("w{i:05}.trace")).display().to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Self::spawn("curl", &args, dir)
    }

    // Reaped by `wait4` (for its rusage), which clippy cannot see.
    #[allow(clippy::zombie_processes)]
    pub(crate) fn spawn(program: &str, args: &[&str], dir: &Path) -> ShellLoop {
        use std::os::unix::process::CommandExt;
        std::fs::create_dir_all(dir).expect("loop dir");
        let child = Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {program}: {e}"));
        ShellLoop {
            pid: child.id() as i32,
            dir: dir.to_path_buf(),
            reaped: false,
        }
    }

    /// Asks the loop to stop after the window in flight, and reaps it.
    pub(crate) fn stop(mut self) -> Usage {
        std::fs::write(self.dir.join("stop"), b"").expect("stop file");
        self.wait()
    }

    pub(crate) fn wait(&mut self) -> Usage {
        let mut status = 0;
        // SAFETY: rusage is plain data that wait4 fills in.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: waits for our own child; pointers are valid for the call.
        let r = unsafe { libc::wait4(self.pid, &mut status, 0, &mut ru) };
        assert_eq!(r, self.pid, "wait4 on the baseline loop");
        self.reaped = true;
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        Usage {
            cpu: secs(ru.ru_utime) + secs(ru.ru_stime),
            max_rss_mb: ru.ru_maxrss as f64 * 1024.0 / 1e6,
        }
    }

    pub(crate) fn files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        v.retain(|p| p.extension().is_some_and(|e| e == "trace"));
        v.sort();
        v
    }
}

impl Drop for ShellLoop {
    fn drop(&mut self) {
        if !self.reaped {
            // SAFETY: signals our own process group.
            unsafe { libc::kill(-self.pid, libc::SIGKILL) };
            let _ = self.wait();
        }
    }
}

pub(crate) fn trace_url(base: &str, window: Duration) -> String {
    format!("{base}/debug/pprof/trace?seconds={}", window.as_secs_f64())
}

pub(crate) fn file_bytes(files: &[PathBuf]) -> u64 {
    files
        .iter()
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
        .sum()
}

/// Coverage and gaps of consecutive windows, as Go's own parser dates them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Timeline {
    pub(crate) windows: usize,
    pub(crate) invalid: usize,
    pub(crate) coverage: f64,
    pub(crate) gaps_ms: Vec<f64>,
}

impl Timeline {
    pub(crate) fn of(files: &[PathBuf]) -> Timeline {
        let checks = tracecheck(files);
        let invalid = checks.iter().filter(|c| !c.ok).count() + files.len().saturating_sub(checks.len());
        let good: Vec<&Check> = checks.iter().filter(|c| c.ok && c.last_ns > c.first_ns).collect();
        let gaps_ms: Vec<f64> = good
            .windows(2)
            .map(|p| (p[1].first_ns as f64 - p[0].last_ns as f64) / 1e6)
            .collect();
        let coverage = match (good.first(), good.last()) {
            (Some(a), Some(b)) if b.last_ns > a.first_ns => {
                let covered: f64 = good.iter().map(|c| (c.last_ns - c.first_ns) as f64).sum();
                covered / (b.last_ns - a.first_ns) as f64
            }
            _ => f64::NAN,
        };
        Timeline {
            windows: files.len(),
            invalid,
            coverage,
            gaps_ms,
        }
    }

    pub(crate) fn json(&self) -> Value {
        let g = sorted(self.gaps_ms.clone());
        json!({
            "windows": self.windows, "rejected_by_go_parser": self.invalid,
            "coverage": self.coverage,
            "gap_ms": {"median": pct(&g, 0.5), "p99": pct(&g, 0.99), "max": pct(&g, 1.0), "n": g.len()},
        })
    }

    pub(crate) fn row(&self, what: &str, client: &str) -> Vec<String> {
        let g = sorted(self.gaps_ms.clone());
        vec![
            what.into(),
            client.into(),
            format!("{} ({} rejected)", self.windows, self.invalid),
            format!("{:.3}%", self.coverage * 100.0),
            f(pct(&g, 0.5), 2),
            f(pct(&g, 0.99), 2),
            f(pct(&g, 1.0), 2),
        ]
    }
}
