//! The processing side of a collector: checks each captured window whole, trims a cut one, and puts it in the ring.
//!
//! It runs apart from the read loop, fed through a small queue, so that
//! validation, compression and the ring never slow the reading of a target.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use super::crash::Crash;
use super::events::{self, WindowError};
use super::summarise::Summariser;
use crate::config::Compression;

use super::status::SharedStatus;
use crate::ring::window::{Tail, Truncation, Window, WindowSummary};
use crate::ring::Builder;
use crate::ring::Rings;
use crate::telemetry::Metrics;
use gotrace::{FormatError, TraceInfo, Walker, HEADER_LEN};

/// What the read loop hands the processing task, in order.
pub(super) enum Item {
    Window(Box<Captured>),
    /// A death: forwarded to the crash trigger once every window queued
    /// before it is in the ring.
    Crash(Box<Crash>),
}

/// A window as received: walked and stored in blocks, not yet checked whole.
pub(super) struct Captured {
    pub(super) seq: u64,
    pub(super) requested_at: SystemTime,
    pub(super) received_at: SystemTime,
    pub(super) walker: Walker,
    pub(super) builder: Builder,
    pub(super) reservation: Reservation,
    pub(super) truncation: Option<Truncation>,
    /// The window's summary being computed from its blocks; `None` when
    /// summaries are off for the target.
    pub(super) summariser: Option<Summariser>,
}

/// Room reserved in the ring for the window being recorded; given back if
/// the window is dropped.
pub(super) struct Reservation {
    pub(super) rings: Arc<Rings>,
    pub(super) target: Arc<str>,
    pub(super) bytes: u64,
}

impl Reservation {
    /// Reserves up to `total` bytes, returning what that evicted.
    pub(super) fn grow_to(&mut self, total: u64) -> Vec<(Arc<Window>, crate::ring::Eviction)> {
        if total <= self.bytes {
            return Vec::new();
        }
        let more = total - self.bytes;
        self.bytes = total;
        self.rings.reserve(&self.target, more)
    }

    /// Hands the reserved bytes over to the window taking their place.
    fn into_window(mut self) -> u64 {
        std::mem::take(&mut self.bytes)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.rings.release(&self.target, self.bytes);
        }
    }
}

/// How long a finished window waits before it is processed: longer than a
/// Go service takes to stop one trace and start the next.
const SETTLE: Duration = Duration::from_millis(20);

/// Validates, trims, compresses and files windows, off the read loop.
pub(super) struct Processor {
    pub(super) name: Arc<str>,
    pub(super) compression: Compression,
    pub(super) rings: Arc<Rings>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) status: SharedStatus,
    /// The crash trigger's queue, when crash detection is on.
    pub(super) crashes: Option<mpsc::Sender<Box<Crash>>>,
    /// End of the previous window in the target's trace clock, for gaps.
    pub(super) prev_end_ns: Option<u64>,
    /// Why the previous window had no summary, so a reason is logged once.
    pub(super) unsummarised: Option<&'static str>,
}

impl Processor {
    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<Item>) {
        while let Some(item) = rx.recv().await {
            let c = match item {
                Item::Window(c) => *c,
                Item::Crash(crash) => {
                    // Never waits: a full queue means a storm of deaths,
                    // which the gate would hold back anyway.
                    if let Some(Err(e)) = self.crashes.as_ref().map(|tx| tx.try_send(crash)) {
                        events::crash_unreported(&self.metrics, &e.into_inner());
                    }
                    continue;
                }
            };
            // The window just ended and the next request is on its way: the
            // target is stopping one trace and starting the next, both with
            // a stop-the-world. Finishing this window (compressing its last
            // block) at that moment takes CPU the target needs then, and
            // widens the gap between windows (measured: median 3.3-4.1 ms
            // with zstd against 2.2 ms without compression). So it waits.
            if c.truncation.is_none() {
                tokio::time::sleep(SETTLE).await;
            }
            let received = c.walker.received() as u64;
            match build_window(self.name.clone(), self.compression, c).await {
                Ok((w, reserved)) => self.keep(Arc::new(w), reserved, received),
                Err(err) => {
                    events::window_error(&self.metrics, &self.name, &err);
                    self.status.lock().last_error = Some((SystemTime::now(), err.to_string()));
                }
            }
        }
    }

    fn keep(&mut self, w: Arc<Window>, reserved: u64, received: u64) {
        if let (Some(prev), Some(start)) = (self.prev_end_ns, w.info.start_ns()) {
            if start >= prev {
                events::window_gap(&self.metrics, &self.name, Duration::from_nanos(start - prev));
            }
        }
        self.prev_end_ns = w.info.end_ns();
        events::window_kept(&self.metrics, &w, received);
        events::window_summary(&self.metrics, &w, &mut self.unsummarised);
        {
            let mut st = self.status.lock();
            st.last_window_at = Some(w.received_at);
            st.go_version = Some(w.info.version.to_string());
            st.windows_kept += 1;
        }
        let evicted = self.rings.insert(w, reserved, SystemTime::now());
        events::evicted(&self.metrics, &evicted);
        update_ring_gauges(&self.metrics, &self.rings, &self.name);
    }
}

pub fn update_ring_gauges(m: &Metrics, rings: &Rings, name: &str) {
    let labels = m.target(name);
    if let Some(s) = rings.status(name) {
        m.ring_bytes.get_or_create(&labels).set(s.stored_bytes as i64);
        m.ring_windows.get_or_create(&labels).set(s.windows as i64);
        m.ring_coverage
            .get_or_create(&labels)
            .set(s.coverage.unwrap_or(0.0));
    }
    m.ring_global_bytes.set(rings.total_bytes() as i64);
}

/// Checks a captured window whole, trims a cut one to whole generations,
/// and waits for its blocks. Returns it with the ring room reserved for it.
///
/// When the connection was lost the target may have died, and what came
/// after the last whole generation is its last moments: those bytes are
/// kept as the window's tail, and a window with no whole generation at all
/// is kept for its tail alone (its trace is the bare header).
async fn build_window(
    name: Arc<str>,
    compression: Compression,
    c: Captured,
) -> Result<(Window, u64), WindowError> {
    let stream_complete = c.truncation.is_none();
    let lost = matches!(c.truncation, Some(Truncation::Disconnected(_)));
    let received = c.walker.received();
    let (keep, info) = match c.walker.finish(stream_complete) {
        Ok(k) => k,
        Err(FormatError::NoWholeGeneration(n)) => match nothing_whole(&c.walker) {
            Some(info) if lost => (HEADER_LEN, info),
            _ => {
                let why = c.truncation.as_ref().map_or("stream cut", |t| t.label());
                return Err(WindowError::TruncatedEmpty(format!("{why} after {n} bytes")));
            }
        },
        Err(e @ (FormatError::NotATrace(_) | FormatError::Empty | FormatError::ShortHeader(_))) => {
            return Err(WindowError::NotATrace(e.to_string()))
        }
        Err(e) => return Err(WindowError::Corrupt(e.to_string())),
    };
    // A v1 (Go <= 1.21) trace cannot be trimmed to a parseable prefix.
    if !info.walked && !stream_complete {
        return Err(WindowError::TruncatedEmpty(format!(
            "Go {} trace cut short; traces before Go 1.22 cannot be trimmed",
            info.version
        )));
    }
    let mut truncation = c.truncation;
    if truncation.is_none() && keep < received {
        truncation = Some(Truncation::Disconnected("trace ended inside a batch".into()));
    }
    let tail = (lost && keep < received).then(|| tail(&c.walker, &info, (received - keep) as u64));
    let stored = c
        .builder
        .finish(if tail.is_some() { received } else { keep })
        .await
        .map_err(|e| WindowError::Corrupt(format!("storing the window failed: {e}")))?;
    let summary = match c.summariser {
        Some(s) => s.finish(stream_complete, keep).await,
        None => WindowSummary::Off,
    };
    let window = Window {
        target: name,
        seq: c.seq,
        requested_at: c.requested_at,
        received_at: c.received_at,
        info,
        truncation,
        trimmed_bytes: (received - keep) as u64,
        raw_len: keep as u64,
        tail,
        stored,
        compression,
        summary,
    };
    Ok((window, c.reservation.into_window()))
}

/// What a cut v2 stream with no whole generation holds as a trace: the
/// header alone, which Go's parser reads as a trace with no event.
fn nothing_whole(walker: &Walker) -> Option<TraceInfo> {
    let mut info = walker.info().ok().filter(|i| i.walked)?;
    info.ends_cleanly = true;
    info.whole_len = HEADER_LEN;
    info.batches = 0;
    info.generations = 0;
    info.first_ts = None;
    info.last_ts = None;
    Some(info)
}

/// The tail of a cut stream: `bytes` past the whole generations `whole`
/// describes, and how far in time its whole batches reach.
fn tail(walker: &Walker, whole: &TraceInfo, bytes: u64) -> Tail {
    let all = walker.info().ok();
    // Only events later than the trace's own count as the tail's.
    let later = all.as_ref().filter(|a| a.last_ts > whole.last_ts);
    let end_ns = later.and_then(TraceInfo::end_ns);
    Tail {
        bytes,
        generation: walker.generations().map(|(_, last)| last),
        end_ns,
        since_start: later.and_then(|a| Some(Duration::from_nanos(end_ns?.saturating_sub(a.start_ns()?)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testdata(name: &str) -> Vec<u8> {
        let path = format!("{}/gotrace/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
    }

    async fn captured(rings: &Arc<Rings>, bytes: &[u8], truncation: Option<Truncation>) -> Captured {
        summarised(rings, bytes, truncation, Compression::Zstd, false).await
    }

    /// A window as the read loop captures it, with its summary computed
    /// from the builder's blocks when `summaries`.
    async fn summarised(
        rings: &Arc<Rings>,
        bytes: &[u8],
        truncation: Option<Truncation>,
        compression: Compression,
        summaries: bool,
    ) -> Captured {
        let mut walker = Walker::new();
        walker.feed(bytes).expect("a trace");
        let mut builder = Builder::new(compression);
        let summariser = summaries.then(|| {
            let (s, mut tap) = Summariser::start();
            builder.on_sealed(move |block| tap.send(block));
            s
        });
        builder.push(bytes);
        Captured {
            seq: 7,
            requested_at: SystemTime::UNIX_EPOCH + Duration::from_secs(100),
            received_at: SystemTime::UNIX_EPOCH + Duration::from_secs(101),
            walker,
            builder,
            reservation: Reservation {
                rings: rings.clone(),
                target: "t".into(),
                bytes: 0,
            },
            truncation,
            summariser,
        }
    }

    #[tokio::test]
    async fn a_window_s_summary_comes_from_the_blocks_its_builder_sealed() {
        let data = testdata("go1.26-gc.trace");
        let rings = Arc::new(Rings::new(&[], 1 << 30));
        let want = gotrace::summary::summarize(&data).expect("a whole trace");
        for compression in [Compression::Zstd, Compression::None] {
            let c = summarised(&rings, &data, None, compression, true).await;
            let (w, _) = build_window("t".into(), compression, c).await.expect("kept");
            assert_eq!(
                w.summary,
                WindowSummary::Summarised(Box::new(want.clone())),
                "{compression:?}"
            );
        }
        // A cut window: the summary of its whole generations, the file's.
        let data = testdata("go1.22.trace");
        let cut = data.len() - 1000;
        let (keep, _) = gotrace::keepable(&data[..cut], false).expect("keepable");
        let lost = Some(Truncation::Disconnected("connection reset".into()));
        let c = summarised(&rings, &data[..cut], lost, Compression::Zstd, true).await;
        let (w, _) = build_window("t".into(), Compression::Zstd, c)
            .await
            .expect("kept");
        let want = gotrace::summary::summarize(&data[..keep]).expect("whole generations");
        assert_eq!(w.summary, WindowSummary::Summarised(Box::new(want)));
        // Off for the target: said so.
        let (w, _) = build_window("t".into(), Compression::Zstd, captured(&rings, &data, None).await)
            .await
            .expect("kept");
        assert_eq!(w.summary, WindowSummary::Off);
    }

    fn split(w: &Window) -> (Vec<u8>, Vec<u8>) {
        let (mut trace, mut tail) = (Vec::new(), Vec::new());
        w.write_split(&mut trace, &mut tail).expect("write");
        (trace, tail)
    }

    #[tokio::test]
    async fn a_lost_connection_keeps_what_follows_the_last_whole_generation_as_the_tail() {
        // Two generations (testdata/README.md); cut inside the second, as a
        // SIGKILL would.
        let data = testdata("go1.22.trace");
        let rings = Arc::new(Rings::new(&[], 1 << 30));
        let cut = data.len() - 1000;
        let (keep, info) = gotrace::keepable(&data[..cut], false).expect("keepable");
        let lost = Some(Truncation::Disconnected("connection reset".into()));
        let (w, _) = build_window(
            "t".into(),
            Compression::Zstd,
            captured(&rings, &data[..cut], lost).await,
        )
        .await
        .expect("kept");
        assert_eq!(w.raw_len, keep as u64);
        assert_eq!(w.info.generations, info.generations);
        let tail = w.tail.expect("a tail");
        assert_eq!(tail.bytes, (cut - keep) as u64);
        assert_eq!(w.trimmed_bytes, tail.bytes);
        let mut gens = Walker::new();
        gens.feed(&data[..cut]).expect("walk");
        assert_eq!(tail.generation, gens.generations().map(|g| g.1));
        assert!(
            tail.end_ns > w.info.end_ns(),
            "the tail reaches later: {tail:?} vs {:?}",
            w.info.end_ns()
        );
        assert!(w.last_event_at(true) > w.last_event_at(false));
        let (trace, rest) = split(&w);
        assert_eq!(
            [trace, rest].concat(),
            data[..cut],
            "trace and tail are the stream"
        );

        // Cut before the first generation ended: kept for its tail alone.
        let busy = testdata("go1.26-busy.trace");
        let early = 40_000;
        let lost = Some(Truncation::Disconnected("connection reset".into()));
        let (w, _) = build_window(
            "t".into(),
            Compression::Zstd,
            captured(&rings, &busy[..early], lost).await,
        )
        .await
        .expect("kept for its tail");
        assert_eq!((w.raw_len, w.info.generations), (HEADER_LEN as u64, 0));
        assert_eq!(w.tail.map(|t| t.bytes), Some((early - HEADER_LEN) as u64));
        let (trace, rest) = split(&w);
        assert_eq!(trace, busy[..HEADER_LEN]);
        assert_eq!(rest, busy[HEADER_LEN..early]);

        // A stream the agent cut itself (silence, size, shutdown) was not a
        // death: its trimmed bytes are dropped, as before.
        let (w, _) = build_window(
            "t".into(),
            Compression::Zstd,
            captured(&rings, &data[..cut], Some(Truncation::ReadTimeout)).await,
        )
        .await
        .expect("kept");
        assert!(w.tail.is_none());
        assert_eq!(split(&w), (data[..keep].to_vec(), Vec::new()));
        let nothing = build_window(
            "t".into(),
            Compression::Zstd,
            captured(&rings, &data[..HEADER_LEN + 100], Some(Truncation::ByteCap)).await,
        )
        .await;
        assert!(matches!(nothing, Err(WindowError::TruncatedEmpty(_))));
    }
}
