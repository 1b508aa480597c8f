//! Walks trace files with `gotrace::Walker` in 16 and 64 KiB chunks, as the
//! collector feeds network chunks, and prints the walker's throughput.
//!
//! ```sh
//! cargo run --release -p gotrace --example walk_bench [MB] [FILE...]
//! ```
//!
//! Each file is walked whole, over and over, until about `MB` megabytes
//! (default 200) went through each chunk size. Defaults to a busy and an idle
//! Go 1.26 fixture. Timing on a shared machine is noisy; for a deterministic
//! figure count instructions with `valgrind --tool=callgrind` at two sizes
//! (say 2 and 12): the difference over the difference in bytes walked is the
//! cost per byte without the start-up.

use std::error::Error;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

use gotrace::Walker;

const CHUNKS: [usize; 2] = [16 << 10, 64 << 10];

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let mb: f64 = match args.next() {
        Some(a) => a.parse().map_err(|e| format!("MB {a:?}: {e}"))?,
        None => 200.0,
    };
    let mut files: Vec<PathBuf> = args.map(PathBuf::from).collect();
    if files.is_empty() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata");
        files = vec![dir.join("go1.26-busy.trace"), dir.join("go1.26.trace")];
    }
    for path in &files {
        let data = std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
        let rounds = ((mb * 1e6) / data.len() as f64).ceil().max(1.0) as usize;
        for chunk in CHUNKS {
            let start = Instant::now();
            let mut last_ts = None;
            for _ in 0..rounds {
                let mut w = Walker::new();
                for piece in black_box(&data).chunks(chunk) {
                    w.feed(piece)?;
                }
                let (_, info) = w.finish(true)?;
                last_ts = black_box(info.last_ts);
            }
            let secs = start.elapsed().as_secs_f64();
            let bytes = (rounds * data.len()) as f64;
            println!(
                "{:<20} {:>2} KiB chunks: {:>12} bytes in {:.3} s, {:>8.1} MB/s, {:.3} ns/byte (last_ts {:?})",
                path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into()),
                chunk >> 10,
                rounds * data.len(),
                secs,
                bytes / secs / 1e6,
                secs * 1e9 / bytes,
                last_ts,
            );
        }
    }
    Ok(())
}
