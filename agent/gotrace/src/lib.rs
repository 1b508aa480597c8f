//! Go execution traces, read in Rust.
//!
//! A Go program writes an execution trace through `runtime/trace` (or the
//! `net/http/pprof` endpoint `/debug/pprof/trace`, which streams one). This
//! crate reads that format as it streams in, without holding it whole, and
//! never panics on any input: bytes that are not a trace, or that are cut or
//! corrupted, give an error with the byte offset where they broke. It
//! decodes every event exactly as Go's own parser (`internal/trace`, also
//! published as `golang.org/x/exp/trace`) does, in the same order, with the
//! same content.
//!
//! # The format in a page
//!
//! Every trace starts with a 16-byte header, `go 1.NN trace` padded with NUL
//! bytes, naming the Go version that wrote it ([`check_header`]). Go 1.22
//! changed the format completely; this crate calls the new one **v2** and
//! decodes it (Go 1.22, 1.23, 1.25 and 1.26 headers; Go 1.24 wrote `1.23`).
//! Traces of Go 1.21 and older (v1) are recognised by their header only.
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
//! Ordering the events of a generation is a simulation: Go's parser keeps
//! the state of every goroutine, P and thread, and an event goes next only
//! if the state allows it (a goroutine starts only once runnable, with the
//! next sequence number); among the threads whose next event may go, the
//! earliest wins. This crate ports that state machine, the per-thread batch
//! cursors and even Go's heap and sort, operation for operation, because
//! which of two events at the same time comes first depends on them.
//!
//! Two traces glued together are not one trace: each restarts its
//! generations, and goroutines change state in the untraced gap between
//! them; [`stitch`] makes them one.
//!
//! # What is here
//!
//! - [`Decoder`]: bytes in, chunk by chunk (as they come off a socket);
//!   [`Event`]s out to a sink, one whole generation at a time, in Go's order.
//!   An event tells its [`EventKind`], time, goroutine/P/thread, and what Go's
//!   accessors tell ([`Event::state_transition`], [`Event::range`],
//!   [`Event::metric`], [`Event::stack`], ...); its `Display` is Go's
//!   `Event.String()`, so the output diffs line for line against
//!   `go tool trace -d=parsed` (see `examples/dump.rs`). It holds the
//!   generation being received plus the scheduler state, whatever the trace's
//!   size.
//! - [`Generation`]: what an event refers to, reachable from it: the string
//!   and stack tables, the clock, and every batch raw, for a writer that
//!   re-encodes windows into one trace ([`Event::raw_type`] and
//!   [`Event::raw_args`] are the wire event; [`Decoder::goroutines`] and
//!   [`Decoder::procs`] the scheduler state to bridge between windows).
//! - [`summary`]: a window's numbers (GC cycles, stop-the-world pauses,
//!   scheduling latency percentiles, ...) computed as the events stream by,
//!   with the definitions of `docs/summary.md`; `serde` feature for
//!   [`summary::Summary`].
//! - [`check_header`] and [`sniff`]: is this a trace, of which Go version,
//!   and if not, what does it look like.
//! - [`stitch`]: joins consecutive windows of one process into one trace
//!   Go's parser accepts, reconciling every goroutine's and P's state at
//!   each seam with events timestamped inside the gap, and marking the
//!   gap; [`encode`] writes the v2 format it is made of. The agent
//!   writes every bundle's `bundle.trace` with it once the bundle is
//!   durable; `cargo run --release -p gotrace --example stitch -- OUT.trace
//!   WINDOW.trace...` does the same by hand.
//! - [`Walker`]: validates the batch framing of a trace as it streams in,
//!   chunk by chunk, finds the end of the last whole generation (the prefix
//!   of a cut stream that Go's parser still accepts, see
//!   [`Walker::finish`]) and the trace's true span in the program's clock
//!   ([`TraceInfo`]), at a few instructions per byte.
//!
//! ```
//! use gotrace::{Decoder, EventKind, GoState};
//!
//! let trace = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/go1.26.trace")).unwrap();
//! let (mut events, mut started, mut last) = (0, 0, i64::MIN);
//! let mut sink = |ev: &gotrace::Event<'_>| {
//!     events += 1;
//!     assert!(ev.time() > last, "times strictly increase, as in Go");
//!     last = ev.time();
//!     if let Some((_, _, GoState::Running)) = ev.goroutine_transition() {
//!         started += 1;
//!     }
//!     if ev.kind() == EventKind::Metric {
//!         let m = ev.metric().unwrap();
//!         if m.name == gotrace::metric::GOMAXPROCS {
//!             assert_eq!(m.value, 2);
//!         }
//!     }
//! };
//! let mut decoder = Decoder::new();
//! for chunk in trace.chunks(4096) {
//!     decoder.feed(chunk, &mut sink).expect("a Go trace");
//! }
//! // The transport delivered the whole body: the trace ends here.
//! decoder.finish(true, &mut sink).expect("a whole trace");
//! assert_eq!(events, 1737); // what golang.org/x/exp/trace yields
//! assert!(started > 0);
//!
//! // The same bytes, cut: the whole generations before the cut, a Sync
//! // event, then the cut (a Go 1.26 generation ends with byte 52).
//! let mut cut = Decoder::new();
//! let mut n = 0;
//! cut.feed(&trace[..trace.len() - 1], |_| n += 1).unwrap();
//! let err = cut.finish(true, |_| n += 1).unwrap_err();
//! assert!(matches!(err, gotrace::DecodeError::Cut { .. }), "{err}");
//! assert_eq!(n, 1);
//! ```
//!
//! # How exact
//!
//! `tests/oracle.rs` holds the decoder and the summary to Go's parser on
//! every trace in `testdata/` (Go 1.22 to 1.26, including windows of
//! services made to collect garbage, stop the world and burst goroutines):
//! same events, same text for every event, same summary. Where this crate
//! differs from Go's parser by design:
//!
//! - A stream that ends inside a generation yields the generations known to
//!   be whole, then [`DecodeError::Cut`]. Before Go 1.26 Go's parser reads
//!   a generation cut inside a batch as if it were whole (and usually fails
//!   on a missing stack or string later); the Cut says what happened.
//! - Errors name the byte offset where the stream broke; the texts follow
//!   Go's.
//! - Event `Display` quotes non-ASCII characters with an approximation of
//!   Go's `unicode.IsPrint`, and prints wall clock times in UTC.

mod decoder;
mod display;
pub mod encode;
mod error;
mod event;
mod frame;
mod generation;
mod gosort;
mod header;
mod merge;
mod order;
mod order_goroutines;
mod order_procs;
mod order_ranges;
mod resources;
mod sched;
mod spec;
pub mod stitch;
mod structural;
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
