//! Throughput of the decoder, and of the decoder plus the window summary,
//! per core, beside the framing walker's, on trace files fed in 64 KiB
//! chunks as the collector feeds network chunks.
//!
//! ```sh
//! cargo run --release -p gotrace --example decode_bench [--json] [MB] [FILE...]
//! ```
//!
//! `--json` prints one JSON line per file instead of the table (the
//! benchmarks of `tests/bench` read it): `file`, `bytes`, `events`, and MB
//! per CPU second of `walker`, `decoder` and `decoder_summary`.
//!
//! Each file is decoded whole, over and over, until about `MB` megabytes
//! (default 100) went through each reader. Defaults to the busy and the
//! workload windows of `testdata/`. A bigger real window to try (not
//! committed; 5 MB/s of trace, Go 1.26):
//!
//! ```sh
//! tests/go/build.sh && target/fixtures/fixture -pairs 4 -rate 37500 -gc-every 200ms &
//! curl -o target/busy.trace "$(...the printed URL...)/debug/pprof/trace?seconds=2"
//! ```
//!
//! Go's parser on the same files, for comparison:
//! `target/fixtures/tracesummary -bench 20 FILE...`. Both report MB per CPU
//! second (this thread's CPU time from `/proc/thread-self/schedstat`, wall
//! time where that is missing; Go's process CPU time, its garbage
//! collector included): on a machine shared with other work the wall clock
//! measures the others. `valgrind --tool=callgrind` counts instructions.

use std::error::Error;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use gotrace::summary::Summarizer;
use gotrace::{Decoder, Walker};

const CHUNK: usize = 64 << 10;

/// CPU time this thread has run, when Linux tells.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Runs `f` and returns the CPU seconds it took (wall seconds if unknown).
fn timed(mut f: impl FnMut() -> Result<(), Box<dyn Error>>) -> Result<f64, Box<dyn Error>> {
    let (wall, cpu) = (Instant::now(), cpu_time());
    f()?;
    Ok(match (cpu, cpu_time()) {
        (Some(a), Some(b)) if b > a => (b - a).as_secs_f64(),
        _ => wall.elapsed().as_secs_f64(),
    })
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1).peekable();
    let json = args.next_if(|a| a == "--json").is_some();
    let mb: f64 = match args.next() {
        Some(a) => a.parse().map_err(|e| format!("MB {a:?}: {e}"))?,
        None => 100.0,
    };
    let mut files: Vec<PathBuf> = args.map(PathBuf::from).collect();
    if files.is_empty() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata");
        for name in ["go1.26-busy", "go1.26-gc", "go1.26-alloc", "go1.22-burst"] {
            files.push(dir.join(format!("{name}.trace")));
        }
    }
    if !json {
        println!(
            "{:<22} {:>9} {:>8} | {:>14} | {:>22} | {:>26} | summary   (per CPU second)",
            "file", "bytes", "events", "walker", "decoder", "decoder+summary"
        );
    }
    for path in &files {
        let data = std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
        let rounds = ((mb * 1e6) / data.len() as f64).ceil().max(1.0) as usize;
        let bytes = (rounds * data.len()) as f64;
        let name = path
            .file_name()
            .map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into());

        let walk = timed(|| {
            for _ in 0..rounds {
                let mut w = Walker::new();
                for piece in black_box(&data).chunks(CHUNK) {
                    w.feed(piece)?;
                }
                black_box(w.finish(true)?);
            }
            Ok(())
        })?;

        let mut events = 0u64;
        let decode = timed(|| {
            for _ in 0..rounds {
                let mut dec = Decoder::new();
                let mut n = 0u64;
                for piece in black_box(&data).chunks(CHUNK) {
                    dec.feed(piece, |ev| n += u64::from(black_box(ev.time()) != 0))?;
                }
                dec.finish(true, |_| n += 1)?;
                events = black_box(n);
            }
            Ok(())
        })?;

        let summarize = timed(|| {
            for _ in 0..rounds {
                let mut dec = Decoder::new();
                let mut s = Summarizer::new();
                for piece in black_box(&data).chunks(CHUNK) {
                    dec.feed(piece, |ev| s.add(ev))?;
                }
                dec.finish(true, |ev| s.add(ev))?;
                black_box(s.summary());
            }
            Ok(())
        })?;

        let per_event = |secs: f64| secs * 1e9 / (rounds as f64 * events as f64);
        if json {
            println!(
                "{{\"file\":{:?},\"bytes\":{},\"events\":{events},\"walker\":{},\"decoder\":{},\"decoder_summary\":{}}}",
                path.display().to_string(),
                data.len(),
                bytes / walk / 1e6,
                bytes / decode / 1e6,
                bytes / summarize / 1e6,
            );
            continue;
        }
        println!(
            "{name:<22} {:>9} {events:>8} | {:>8.1} MB/s | {:>8.1} MB/s {:>5.1} ns/ev | {:>8.1} MB/s {:>5.1} ns/ev | {:.2} ms/MB",
            data.len(),
            bytes / walk / 1e6,
            bytes / decode / 1e6,
            per_event(decode),
            bytes / summarize / 1e6,
            per_event(summarize),
            (summarize - decode).max(0.0) * 1e3 / (bytes / 1e6),
        );
    }
    Ok(())
}
