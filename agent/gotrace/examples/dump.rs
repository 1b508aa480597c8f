//! Prints every event of trace files as Go's `go tool trace -d=parsed`
//! prints them, one `Event.String()` per line, then the error if any.
//!
//! ```sh
//! cargo run --release -p gotrace --example dump FILE... > rust.txt
//! go tool trace -d=parsed FILE > go.txt   # the same lines
//! ```

use std::io::{BufWriter, Write};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::io::stdout();
    let mut out = BufWriter::new(out.lock());
    for path in std::env::args().skip(1) {
        let data = std::fs::read(&path).map_err(|e| format!("read {path}: {e}"))?;
        let mut dec = gotrace::Decoder::new();
        let mut write_err = None;
        // Go's bytes, not Display's: function names need not be UTF-8.
        let mut sink = |ev: &gotrace::Event<'_>| {
            let mut line = ev.go_string();
            line.push(b'\n');
            if let Err(e) = out.write_all(&line) {
                write_err.get_or_insert(e);
            }
        };
        let result = dec
            .feed(&data, &mut sink)
            .and_then(|()| dec.finish(true, &mut sink));
        if let Some(e) = write_err {
            return Err(e.into());
        }
        if let Err(e) = result {
            writeln!(out, "error: {e}")?;
        }
    }
    Ok(())
}
