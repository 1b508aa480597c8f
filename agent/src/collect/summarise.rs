//! A window's summary, computed while it streams in: its raw blocks are decoded on the blocking pool, off the read loop, in bounded memory.
//!
//! The read loop hands each block of raw bytes to [`Summariser::tap`] as the
//! ring's builder seals it: a handle, not a copy, and a `try_send` that never
//! waits. A window whose decoding falls more than [`QUEUE`] blocks behind, or
//! whose decoder must hold more than [`MAX_HELD`] bytes of one generation, is
//! still kept: its summary says why there is none. So is a window the decoder
//! rejects (a Go <= 1.21 trace, events that break Go's rules); nothing the
//! target sends can make the agent panic or wait.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use gotrace::summary::SummaryDecoder;
use gotrace::DecodeError;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::ring::give_back;
use crate::ring::window::WindowSummary;

/// Raw blocks (1 MiB each) waiting to be decoded before the window's summary
/// is given up: the memory summaries may hold beyond the decoder's own.
pub(super) const QUEUE: usize = 8;

/// Bytes of one generation the decoder may hold (it keeps a generation's
/// batches until the generation is whole, about a second of trace). A target
/// writing more than this in a second gets no summaries, rather than the
/// agent's memory growing with its load.
pub(super) const MAX_HELD: usize = 64 << 20;

/// No summary, for a reason (a metric label) said in words.
fn not(reason: &'static str, why: impl Into<String>) -> WindowSummary {
    WindowSummary::NotSummarised {
        reason,
        why: why.into(),
    }
}

fn undecodable(e: &DecodeError) -> WindowSummary {
    match e {
        DecodeError::V1 { .. } | DecodeError::UnsupportedVersion(_) => not("old_go", e.to_string()),
        _ => not("rejected", format!("the decoder rejects the trace: {e}")),
    }
}

/// A summary being computed: the decoder and what stopped it, if anything.
enum Decoding {
    Going(Box<SummaryDecoder>),
    /// Why not (a [`WindowSummary::NotSummarised`]).
    Stopped(WindowSummary),
}

/// One window's summary in the making.
pub(super) struct Summariser {
    task: JoinHandle<Decoding>,
}

/// What the read loop holds: where blocks go, and the flag it raises when
/// the queue is full.
pub(super) struct Tap {
    tx: Option<mpsc::Sender<Bytes>>,
    behind: Arc<AtomicBool>,
}

impl Tap {
    /// Queues a sealed block for decoding. Never waits: a full queue means
    /// decoding is behind, and the summary is given up for this window
    /// (closing the queue lets the decoder stop early).
    pub(super) fn send(&mut self, block: &Bytes) {
        let Some(tx) = &self.tx else { return };
        if tx.try_send(block.clone()).is_err() {
            self.behind.store(true, Ordering::Relaxed);
            self.tx = None;
        }
    }
}

impl Summariser {
    /// Starts the decoding task of one window; blocks go through the tap.
    pub(super) fn start() -> (Summariser, Tap) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let behind = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(decode(rx, behind.clone()));
        (Summariser { task }, Tap { tx: Some(tx), behind })
    }

    /// Once the tap is gone (the window's last block sealed): ends the stream
    /// for the decoder and returns the summary of the window's trace, its
    /// first `keep` bytes (the whole generations the framing walk found).
    pub(super) async fn finish(self, stream_complete: bool, keep: usize) -> WindowSummary {
        let decoding = self
            .task
            .await
            .unwrap_or_else(|e| Decoding::Stopped(not("failed", format!("the decoding task failed: {e}"))));
        let dec = match decoding {
            Decoding::Going(dec) => dec,
            Decoding::Stopped(why) => return why,
        };
        // The last generation is decoded here: up to a second of trace,
        // never on the async threads.
        tokio::task::spawn_blocking(move || conclude(dec, stream_complete, keep))
            .await
            .unwrap_or_else(|e| not("failed", format!("the decoder failed: {e}")))
    }
}

/// Feeds blocks to the decoder as they come, a batch at a time on the
/// blocking pool, until the tap closes.
async fn decode(mut rx: mpsc::Receiver<Bytes>, behind: Arc<AtomicBool>) -> Decoding {
    let mut state = Decoding::Going(Box::default());
    let mut batch = Vec::with_capacity(QUEUE);
    while rx.recv_many(&mut batch, QUEUE).await > 0 {
        let blocks = std::mem::take(&mut batch);
        state = match state {
            Decoding::Going(dec) => tokio::task::spawn_blocking(move || feed(dec, blocks))
                .await
                .unwrap_or_else(|e| Decoding::Stopped(not("failed", format!("the decoder failed: {e}")))),
            // Stopped: the rest of the window only goes back to the pool.
            stopped => {
                blocks.into_iter().for_each(give_back);
                stopped
            }
        };
    }
    if behind.load(Ordering::Relaxed) {
        return Decoding::Stopped(not(
            "behind",
            format!(
                "decoding fell more than {QUEUE} MiB behind the stream (the agent is short of CPU); the window is kept, unsummarised"
            ),
        ));
    }
    state
}

fn feed(mut dec: Box<SummaryDecoder>, blocks: Vec<Bytes>) -> Decoding {
    let mut stopped = None;
    for block in blocks {
        if stopped.is_none() {
            if let Err(e) = dec.feed(&block) {
                stopped = Some(undecodable(&e));
            } else if dec.decoder().buffered() > MAX_HELD {
                stopped = Some(not(
                    "too_large",
                    format!(
                        "a generation of more than {} (about a second of trace): not decoded, to bound the agent's memory",
                        crate::units::Bytes(MAX_HELD as u64)
                    ),
                ));
            }
        }
        give_back(block);
    }
    match stopped {
        Some(why) => Decoding::Stopped(why),
        None => Decoding::Going(dec),
    }
}

/// Ends the stream and checks that the summary describes the window's trace
/// exactly: a cut stream's summary covers the whole generations the decoder
/// yielded, which must be the ones the framing walk kept.
fn conclude(mut dec: Box<SummaryDecoder>, stream_complete: bool, keep: usize) -> WindowSummary {
    let summary = match dec.finish(stream_complete) {
        Ok(s) => s,
        Err(DecodeError::Cut { .. }) => dec.summary(),
        Err(e) => return undecodable(&e),
    };
    let whole = dec.decoder().whole_len();
    if whole != keep {
        return not(
            "rejected",
            format!(
                "the decoder's whole generations end at byte {whole}, the window's trace at byte {keep}: the summary would not describe the file"
            ),
        );
    }
    WindowSummary::Summarised(Box::new(summary))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testdata(name: &str) -> Vec<u8> {
        let path = format!("{}/gotrace/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
    }

    /// Feeds `data` in at most QUEUE blocks (more at once, faster than the
    /// decoder takes them, would be "behind").
    async fn summarise(data: &[u8], complete: bool, keep: usize) -> WindowSummary {
        let (s, mut tap) = Summariser::start();
        for c in data.chunks(data.len().div_ceil(QUEUE).max(1)) {
            tap.send(&Bytes::copy_from_slice(c));
        }
        drop(tap);
        s.finish(complete, keep).await
    }

    fn reason(s: &WindowSummary) -> Option<&'static str> {
        match s {
            WindowSummary::NotSummarised { reason, .. } => Some(reason),
            _ => None,
        }
    }

    #[tokio::test]
    async fn a_window_fed_in_blocks_is_summarised_as_gotrace_summarises_it_whole() {
        for name in ["go1.22.trace", "go1.26-gc.trace", "go1.26-burst.trace"] {
            let data = testdata(name);
            let want = gotrace::summary::summarize(&data).expect("a whole trace");
            let got = summarise(&data, true, data.len()).await;
            assert_eq!(got, WindowSummary::Summarised(Box::new(want)), "{name}");
        }
    }

    #[tokio::test]
    async fn a_cut_window_is_summarised_up_to_its_last_whole_generation() {
        let data = testdata("go1.22.trace");
        let cut = data.len() - 1000;
        let (keep, _) = gotrace::keepable(&data[..cut], false).expect("keepable");
        let want = gotrace::summary::summarize(&data[..keep]).expect("the whole generations");
        let got = summarise(&data[..cut], false, keep).await;
        assert_eq!(got, WindowSummary::Summarised(Box::new(want)));
        // A keep the decoder does not agree with gives no summary, never a
        // wrong one.
        let got = summarise(&data[..cut], false, keep - 1).await;
        assert_eq!(reason(&got), Some("rejected"), "{got:?}");
    }

    #[tokio::test]
    async fn old_and_broken_traces_say_why_they_are_not_summarised() {
        let v1 = testdata("go1.21.trace");
        let got = summarise(&v1, true, v1.len()).await;
        assert_eq!(reason(&got), Some("old_go"));
        let why = got.missing().unwrap_or_default();
        assert!(why.contains("v1 trace (Go 1.21 or older)"), "{why}");

        let mut bad = testdata("go1.26.trace");
        for b in &mut bad[200..260] {
            *b ^= 0x5a;
        }
        let got = summarise(&bad, true, bad.len()).await;
        assert_eq!(reason(&got), Some("rejected"), "{got:?}");
    }

    #[tokio::test]
    async fn a_full_queue_gives_the_summary_up_and_never_blocks_the_sender() {
        let data = testdata("go1.26-gc.trace");
        let (s, mut tap) = Summariser::start();
        // Twice the queue at once, with no await between: the queue fills.
        for c in data.chunks(data.len().div_ceil(QUEUE * 2)) {
            tap.send(&Bytes::copy_from_slice(c));
        }
        drop(tap);
        let got = s.finish(true, data.len()).await;
        assert_eq!(reason(&got), Some("behind"), "{got:?}");
    }
}
