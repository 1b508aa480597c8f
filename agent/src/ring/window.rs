//! A captured trace window: its bytes as held in memory (see `blocks`), what validation learned, and its summary.

use std::io::{self, Write};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::blocks::{decompress, give_back};
use crate::config::Compression;
use gotrace::summary::Summary;
use gotrace::TraceInfo;

/// Why a window's stream ended before the target finished it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Truncation {
    /// The connection broke (target killed, network reset).
    Disconnected(String),
    /// The target went silent for longer than `read_timeout`.
    ReadTimeout,
    /// The window reached `max_window_bytes`; the agent closed the connection.
    ByteCap,
    /// The target kept streaming `read_timeout` past the window's end (it
    /// ignores `seconds`, or drips bytes); the agent closed the connection.
    Overrun,
    /// The agent was shutting down.
    Shutdown,
}

impl Truncation {
    /// Short reason for manifests and metric labels.
    pub fn label(&self) -> &'static str {
        match self {
            Truncation::Disconnected(_) => "disconnected",
            Truncation::ReadTimeout => "read_timeout",
            Truncation::ByteCap => "byte_cap",
            Truncation::Overrun => "overrun",
            Truncation::Shutdown => "shutdown",
        }
    }
}

/// Which clock a window's wall times come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// The target's clock snapshot inside the trace (Go >= 1.25).
    Target,
    /// The agent's clock at request and end of body.
    Agent,
}

impl Clock {
    pub fn as_str(self) -> &'static str {
        match self {
            Clock::Target => "target",
            Clock::Agent => "agent",
        }
    }
}

#[derive(Debug)]
pub struct Window {
    pub target: Arc<str>,
    /// Per-target sequence number, from 1.
    pub seq: u64,
    /// Agent clock when the request was sent.
    pub requested_at: SystemTime,
    /// Agent clock when the body ended.
    pub received_at: SystemTime,
    pub info: TraceInfo,
    pub truncation: Option<Truncation>,
    /// Bytes of a cut stream after its last whole generation: not part of
    /// the trace, which must end on a whole generation for Go's parser.
    /// Held after it as the window's [`Tail`] when the connection was lost,
    /// else dropped.
    pub trimmed_bytes: u64,
    /// Length of the trace as the target sent it (after trimming).
    pub raw_len: u64,
    /// The trimmed bytes, when kept.
    pub tail: Option<Tail>,
    /// The trace, then the tail if kept, in blocks: independent zstd
    /// frames, or raw bytes, as `compression` says. Concatenated, they are
    /// the stream as received.
    pub stored: Vec<Bytes>,
    pub compression: Compression,
    /// What the window's events looked like (GC, pauses, scheduling).
    pub summary: WindowSummary,
}

/// A window's summary ([`gotrace::summary`]), computed while it streamed in,
/// or why there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowSummary {
    /// Summaries are off for the target (`targets[].summaries = false`).
    Off,
    /// The summary of exactly the events Go's parser reads in the window's
    /// trace (its whole generations, for a cut window).
    Summarised(Box<Summary>),
    /// Not summarised, and why: a Go <= 1.21 trace (`reason` `old_go`),
    /// events the decoder rejects (`rejected`), a window the decoder could
    /// not keep up with (`behind`) or hold (`too_large`), or a decoder
    /// failure (`failed`). `reason` is a metric label, `why` words.
    NotSummarised { reason: &'static str, why: String },
}

impl WindowSummary {
    pub fn get(&self) -> Option<&Summary> {
        match self {
            WindowSummary::Summarised(s) => Some(s),
            _ => None,
        }
    }

    /// Why there is no summary; `None` when there is one.
    pub fn missing(&self) -> Option<&str> {
        match self {
            WindowSummary::Off => Some("summaries are off for this target (targets[].summaries = false)"),
            WindowSummary::Summarised(_) => None,
            WindowSummary::NotSummarised { why, .. } => Some(why),
        }
    }
}

/// What a cut stream held after its last whole generation, kept when the
/// connection was lost (the target may have died: these are its last
/// moments). They are events of an unfinished generation, whose string and
/// stack tables Go writes only at the generation's end, so Go's parser
/// cannot read them; the trace and the tail concatenated are the stream
/// exactly as received, for a decoder that can.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tail {
    pub bytes: u64,
    /// The unfinished generation's number, when a batch of it was whole.
    pub generation: Option<u64>,
    /// The last event timestamp found in the tail's whole batches, in the
    /// target's trace clock (ns); `None` when it holds none later than the
    /// trace.
    pub end_ns: Option<u64>,
    /// From the stream's first event to `end_ns`.
    pub since_start: Option<Duration>,
}

impl Drop for Window {
    fn drop(&mut self) {
        // Raw blocks go back to the pool; compressed ones are too small to take.
        for block in self.stored.drain(..) {
            give_back(block);
        }
    }
}

impl Window {
    /// The blocks of an evicted window that nothing else holds (no snapshot
    /// froze it), for the next window to record into.
    pub fn into_blocks(w: Arc<Window>) -> Vec<Bytes> {
        match Arc::try_unwrap(w) {
            Ok(mut w) => std::mem::take(&mut w.stored),
            Err(_) => Vec::new(),
        }
    }

    pub fn is_complete(&self) -> bool {
        self.truncation.is_none()
    }

    /// Bytes this window occupies in memory.
    pub fn stored_len(&self) -> u64 {
        self.stored.iter().map(|b| b.len() as u64).sum()
    }

    /// Start, end and the clock they come from. Prefers the target's clock:
    /// that is where the events happened.
    pub fn wall_span(&self) -> (SystemTime, SystemTime, Clock) {
        let from_target = self
            .info
            .first_ts
            .zip(self.info.last_ts)
            .and_then(|(a, b)| Some((self.info.wall_ns(a)?, self.info.wall_ns(b)?)));
        match from_target {
            Some((a, b)) => (unix_ns(a), unix_ns(b), Clock::Target),
            None => (self.requested_at, self.received_at, Clock::Agent),
        }
    }

    /// What coverage needs to know of this window, without its bytes.
    pub fn span(&self) -> Span {
        Span {
            trace_ns: self.info.start_ns().zip(self.info.end_ns()),
            requested_at: self.requested_at,
            received_at: self.received_at,
        }
    }

    /// Time covered by the window's events, or the agent-side span.
    pub fn duration(&self) -> Duration {
        match (self.info.start_ns(), self.info.end_ns()) {
            (Some(a), Some(b)) if b >= a => Duration::from_nanos(b - a),
            _ => self
                .received_at
                .duration_since(self.requested_at)
                .unwrap_or_default(),
        }
    }

    /// Writes the plain trace to `out`, decompressing if needed.
    pub fn write_trace(&self, out: &mut impl Write) -> io::Result<()> {
        self.write_split(out, &mut io::sink())
    }

    /// Writes the plain trace to `trace` and the tail (if kept) to `tail`,
    /// in one pass over the blocks.
    pub fn write_split(&self, trace: &mut impl Write, tail: &mut impl Write) -> io::Result<()> {
        let mut left = self.raw_len;
        let mut split = |raw: &[u8]| {
            let head = raw.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            trace.write_all(&raw[..head])?;
            left -= head as u64;
            if self.tail.is_some() {
                tail.write_all(&raw[head..])?;
            }
            Ok(())
        };
        for block in &self.stored {
            match self.compression {
                Compression::None => split(block)?,
                Compression::Zstd => decompress(block, &mut split)?,
            }
        }
        Ok(())
    }

    /// When the last event this window holds happened, in the agent's clock:
    /// the request's time plus the span of events since the trace began (the
    /// target starts tracing as the request arrives). Only spans are read
    /// from the target's clock, so this holds whatever the skew between the
    /// two machines. With `tail`, the tail's events count too.
    pub fn last_event_at(&self, tail: bool) -> Option<SystemTime> {
        let whole = self
            .info
            .start_ns()
            .zip(self.info.end_ns())
            .map(|(a, b)| Duration::from_nanos(b.saturating_sub(a)));
        let in_tail = self.tail.and_then(|t| t.since_start).filter(|_| tail);
        let since = match (whole, in_tail) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }?;
        self.requested_at.checked_add(since)
    }
}

/// A window's place in time: its first and last event in the target's trace
/// clock (when the framing was walked) and the agent's clock around it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub trace_ns: Option<(u64, u64)>,
    pub requested_at: SystemTime,
    pub received_at: SystemTime,
}

fn unix_ns(ns: u128) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns.min(u128::from(u64::MAX)) as u64)
}

#[cfg(test)]
mod tests {
    use super::super::blocks::BLOCK;
    use super::super::Builder;
    use std::time::{Duration, SystemTime};

    use super::*;

    fn sample(len: usize) -> Vec<u8> {
        // Compressible but not trivial, like a trace.
        (0..len)
            .map(|i| ((i * 7) % 251) as u8 ^ ((i / 4096) as u8))
            .collect()
    }

    fn unpack(compression: Compression, blocks: Vec<Bytes>, len: usize) -> Vec<u8> {
        let w = Window {
            target: "t".into(),
            seq: 1,
            requested_at: SystemTime::now(),
            received_at: SystemTime::now(),
            info: gotrace::inspect(b"go 1.26 trace\0\0\0").expect("header"),
            truncation: None,
            trimmed_bytes: 0,
            raw_len: len as u64,
            tail: None,
            stored: blocks,
            compression,
            summary: WindowSummary::Off,
        };
        let mut out = Vec::new();
        w.write_trace(&mut out).expect("write");
        out
    }

    #[tokio::test]
    async fn blocks_round_trip_whole_and_cut_anywhere() {
        let data = sample(3 * BLOCK + 12_345);
        for compression in [Compression::Zstd, Compression::None] {
            for keep in [data.len(), 2 * BLOCK + 77, BLOCK, 5] {
                let mut b = Builder::new(compression);
                for piece in data.chunks(16_384 + 3) {
                    b.push(piece);
                }
                assert_eq!(b.raw_len(), data.len());
                let blocks = b.finish(keep).await.expect("finish");
                let stored: usize = blocks.iter().map(Bytes::len).sum();
                if compression == Compression::Zstd && keep > BLOCK {
                    assert!(stored < keep / 2, "compressed {stored} of {keep}");
                }
                assert_eq!(
                    unpack(compression, blocks, keep),
                    data[..keep],
                    "{compression:?} keep {keep}"
                );
            }
        }
    }

    #[tokio::test]
    async fn an_evicted_window_s_blocks_are_recorded_into_unless_a_snapshot_holds_it() {
        let data = sample(3 * BLOCK);
        let evicted = || async {
            let mut b = Builder::new(Compression::None);
            b.push(&data);
            let w = Window {
                target: "t".into(),
                seq: 1,
                requested_at: SystemTime::now(),
                received_at: SystemTime::now(),
                info: gotrace::inspect(b"go 1.26 trace\0\0\0").expect("header"),
                truncation: None,
                trimmed_bytes: 0,
                raw_len: data.len() as u64,
                tail: None,
                stored: b.finish(data.len()).await.expect("finish"),
                compression: Compression::None,
                summary: WindowSummary::Off,
            };
            Arc::new(w)
        };
        let mut next = Builder::new(Compression::None);
        next.reuse(Window::into_blocks(evicted().await));
        assert_eq!(next.spare.len(), 3);
        next.push(&data[..BLOCK + 10]);
        assert_eq!(next.spare.len(), 1, "two blocks taken from the evicted window");
        let blocks = next.finish(BLOCK + 10).await.expect("finish");
        assert_eq!(unpack(Compression::None, blocks, BLOCK + 10), data[..BLOCK + 10]);

        // A snapshot still holding the window keeps its bytes intact.
        let held = evicted().await;
        let snapshot = held.clone();
        let mut next = Builder::new(Compression::None);
        next.reuse(Window::into_blocks(held));
        assert!(next.spare.is_empty());
        let mut copy = Vec::new();
        snapshot.write_trace(&mut copy).expect("write");
        assert_eq!(copy, data);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn compressed_blocks_are_counted_and_their_raw_bytes_freed_while_streaming() {
        let data = sample(3 * BLOCK);
        let mut b = Builder::new(Compression::Zstd);
        b.push(&data);
        // Three sealed blocks, some perhaps already compressed.
        assert!(b.backlog() <= 3 * BLOCK);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while b.backlog() > 0 {
            assert!(std::time::Instant::now() < deadline, "compression never finished");
            tokio::time::sleep(Duration::from_millis(5)).await;
            b.push(&[]);
        }
        // Before the window ends the ring can already be told its real size.
        let stored = b.stored_len();
        assert!(stored > 0 && stored < BLOCK, "{stored}");
        let blocks = b.finish(data.len()).await.expect("finish");
        assert_eq!(blocks.iter().map(Bytes::len).sum::<usize>(), stored);
    }

    #[tokio::test]
    async fn a_kept_tail_is_written_apart_from_the_trace_and_together_they_are_the_stream() {
        let data = sample(2 * BLOCK + 999);
        for compression in [Compression::Zstd, Compression::None] {
            for cut in [16, BLOCK - 1, BLOCK, 2 * BLOCK + 500] {
                let mut b = Builder::new(compression);
                b.push(&data);
                let now = SystemTime::now();
                let w = Window {
                    target: "t".into(),
                    seq: 1,
                    requested_at: now,
                    received_at: now,
                    info: gotrace::inspect(b"go 1.26 trace\0\0\0").expect("header"),
                    truncation: Some(Truncation::Disconnected("reset".into())),
                    trimmed_bytes: (data.len() - cut) as u64,
                    raw_len: cut as u64,
                    tail: Some(Tail {
                        bytes: (data.len() - cut) as u64,
                        generation: Some(3),
                        end_ns: Some(2_000_000_000),
                        since_start: Some(Duration::from_millis(1400)),
                    }),
                    stored: b.finish(data.len()).await.expect("finish"),
                    compression,
                    summary: WindowSummary::Off,
                };
                let (mut trace, mut tail) = (Vec::new(), Vec::new());
                w.write_split(&mut trace, &mut tail).expect("write");
                assert_eq!(trace, data[..cut], "{compression:?} cut {cut}");
                assert_eq!(tail, data[cut..], "{compression:?} cut {cut}");
                let mut only = Vec::new();
                w.write_trace(&mut only).expect("write");
                assert_eq!(only, trace);
                // No event in the trace part: the tail alone dates the last one.
                assert_eq!(w.last_event_at(false), None);
                assert_eq!(w.last_event_at(true), Some(now + Duration::from_millis(1400)));
            }
        }
    }
}
