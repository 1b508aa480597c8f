//! Stitches consecutive windows of one Go process into one trace.
//!
//! ```sh
//! cargo run --release -p gotrace --example stitch -- OUT.trace WINDOW.trace...
//! go tool trace -d=parsed OUT.trace >/dev/null && echo accepted
//! ```
//!
//! Windows that cannot be joined start a new piece, written to
//! `OUT-2.trace`, `OUT-3.trace`...; each seam, piece and window is printed.

use std::error::Error;
use std::fs::File;
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};

use gotrace::stitch::{Output, SeamOutcome, Stitcher};

struct Files(PathBuf);

impl Output for Files {
    type Piece = BufWriter<File>;

    fn begin(&mut self, index: usize) -> io::Result<Self::Piece> {
        Ok(BufWriter::new(File::create(piece_path(&self.0, index))?))
    }

    fn end(&mut self, _: usize, mut w: Self::Piece) -> io::Result<()> {
        io::Write::flush(&mut w)
    }
}

fn piece_path(out: &Path, index: usize) -> PathBuf {
    if index == 0 {
        return out.to_path_buf();
    }
    let stem = out.file_stem().and_then(|s| s.to_str()).unwrap_or("out");
    out.with_file_name(format!("{stem}-{}.trace", index + 1))
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let Some((out, windows)) = args.split_first() else {
        return Err("usage: stitch OUT.trace WINDOW.trace...".into());
    };
    let mut s = Stitcher::new(Files(out.clone()));
    for w in windows {
        let label = w.file_name().and_then(|n| n.to_str()).unwrap_or("window");
        let outcome = s.add_window(label, File::open(w)?)?;
        println!("window {label}: {outcome:?}");
    }
    let summary = s.finish()?;
    for seam in &summary.seams {
        match &seam.outcome {
            SeamOutcome::Stitched { events, changes } => println!(
                "seam {} -> {}: gap {:?} ns, {events} events, {changes:?}",
                seam.after, seam.before, seam.gap_ns
            ),
            SeamOutcome::Split { reason } => {
                println!("seam {} -> {}: split: {reason}", seam.after, seam.before)
            }
        }
    }
    for p in &summary.pieces {
        println!(
            "piece {} ({}): windows {:?}, {} generations, {} bytes, {} events added",
            p.index,
            piece_path(out, p.index).display(),
            p.windows,
            p.generations,
            p.bytes,
            p.events_added
        );
    }
    Ok(())
}
