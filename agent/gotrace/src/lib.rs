//! Go execution traces, read in Rust.
//!
//! A Go program writes an execution trace through `runtime/trace` (or the
//! `net/http/pprof` endpoint `/debug/pprof/trace`, which streams one). This
//! crate reads that format as it streams in, without holding it whole, and
//! never panics on any input: bytes that are not a trace, or that are cut or
//! corrupted, give a [`FormatError`] with the byte offset where it broke.
//!
//! # The format in a page
//!
//! Every trace starts with a 16-byte header, `go 1.NN trace` padded with NUL
//! bytes, naming the Go version that wrote it ([`check_header`]). Go 1.22
//! changed the format completely; this crate calls the new one **v2** and
//! reads it whole. Traces of Go 1.21 and older (v1) are recognised by their
//! header only.
//!
//! After the header a v2 trace is a sequence of **batches**:
//!
//! ```text
//! type byte (1 = events; 49 = experimental, followed by one experiment byte)
//! uvarint generation | uvarint M (thread) | uvarint timestamp | uvarint size
//! size bytes of events
//! ```
//!
//! Integers are unsigned LEB128 varints ("uvarints"), at most 10 bytes. A batch
//! holds at most 64 KiB. Each thread (M) buffers the events it writes and
//! flushes them as a batch, stamped with the time of the flush's first event;
//! within one generation an M's batches arrive in time order, but batches of
//! different Ms interleave freely, so a reader orders events across threads
//! by their timestamps and by the sequence numbers events carry.
//!
//! The trace is cut into **generations**, about one a second: the runtime
//! advances the generation counter, every thread flushes, and the batches of
//! the finished generation follow. Besides event batches (written by an M) a
//! generation holds batches written by no thread (M = `u64::MAX`): the clock
//! frequency (ticks per second), a sync batch (since Go 1.25 with a snapshot
//! of the wall clock), the goroutine and P statuses at the generation's start,
//! CPU samples, and the **string and stack tables** that events refer to by
//! id. Those tables are written at the generation's END, so the events of a
//! generation cut before its end cannot be named; since Go 1.26 a single
//! byte 52 marks each generation's end, before that a generation is known
//! whole only when the next one starts or the stream ends cleanly.
//!
//! Inside an event batch each event is a type byte followed by uvarint
//! arguments, the first of which is the time since the previous event of the
//! batch (so a batch decodes from its start only). A few events carry a
//! length-prefixed byte string. The event table is Go's
//! `src/internal/trace/tracev2`; Go's own parser is `src/internal/trace`.
//!
//! Two traces glued together are not one trace: each restarts its
//! generations, and goroutines change state in the untraced gap between them.
//!
//! # What is here
//!
//! - [`check_header`] and [`sniff`]: is this a trace, of which Go version,
//!   and if not, what does it look like.
//! - [`Walker`]: validates the batch framing of a trace as it streams in,
//!   chunk by chunk, finds the end of the last whole generation (the prefix
//!   of a cut stream that Go's parser still accepts, see
//!   [`Walker::finish`]) and the trace's true span in the program's clock
//!   ([`TraceInfo`]), at a few instructions per byte.
//!
//! ```
//! let trace = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/go1.26.trace")).unwrap();
//! let mut walker = gotrace::Walker::new();
//! for chunk in trace.chunks(4096) {
//!     walker.feed(chunk).expect("a Go trace");
//! }
//! let (keep, info) = walker.finish(true).unwrap();
//! assert_eq!(keep, trace.len());
//! assert_eq!(info.version, gotrace::GoVersion(26));
//! assert!(info.end_ns().unwrap() > info.start_ns().unwrap());
//! ```

mod decoder;
mod display;
mod error;
mod event;
mod frame;
mod generation;
mod gosort;
mod header;
mod merge;
mod order;
mod order_ranges;
mod resources;
mod spec;
pub mod summary;
mod tables;
mod walk;
mod wire;

pub use decoder::Decoder;
pub use error::DecodeError;
pub use event::{
    metric, Change, Event, Experimental, Frame, Label, Log, Metric, Range, RangeAttribute, RangeName, Region,
    Stack, StateTransition, Sync, Task,
};
pub use generation::{ClockReading, ExperimentalBatch, Generation, RawBatch};
pub use header::{check_header, sniff, GoVersion, HEADER_LEN};
pub use resources::{GoId, GoState, ProcId, ProcState, ResourceId, TaskId, ThreadId};
pub use spec::{EventKind, EventType};
pub use walk::{inspect, keepable, ClockSnapshot, TraceInfo, Walker};

/// Why bytes are not a usable trace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("body is empty")]
    Empty,
    #[error("body ended after {0} bytes, inside the 16-byte trace header")]
    ShortHeader(usize),
    #[error("not a Go execution trace: body starts with {0}")]
    NotATrace(String),
    #[error("corrupt trace at byte {offset}: {what}")]
    Corrupt { offset: usize, what: String },
    #[error("trace was cut before its first whole generation ({0} bytes received)")]
    NoWholeGeneration(usize),
}
