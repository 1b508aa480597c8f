//! The processing side of a collector: checks each captured window whole, trims a cut one, and puts it in the ring.
//!
//! It runs apart from the read loop, fed through a small queue, so that
//! validation, compression and the ring never slow the reading of a target.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use super::events::{self, WindowError};
use crate::config::Compression;

use super::status::SharedStatus;
use crate::ring::window::{Truncation, Window};
use crate::ring::Builder;
use crate::ring::Rings;
use crate::telemetry::Metrics;
use gotrace::{FormatError, Walker};

/// A window as received: walked and stored in blocks, not yet checked whole.
pub(super) struct Captured {
    pub(super) seq: u64,
    pub(super) requested_at: SystemTime,
    pub(super) received_at: SystemTime,
    pub(super) walker: Walker,
    pub(super) builder: Builder,
    pub(super) reservation: Reservation,
    pub(super) truncation: Option<Truncation>,
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
    /// End of the previous window in the target's trace clock, for gaps.
    pub(super) prev_end_ns: Option<u64>,
}

impl Processor {
    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<Captured>) {
        while let Some(c) = rx.recv().await {
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
async fn build_window(
    name: Arc<str>,
    compression: Compression,
    c: Captured,
) -> Result<(Window, u64), WindowError> {
    let stream_complete = c.truncation.is_none();
    let received = c.walker.received();
    let (keep, info) = match c.walker.finish(stream_complete) {
        Ok(k) => k,
        Err(FormatError::NoWholeGeneration(n)) => {
            let why = c.truncation.as_ref().map_or("stream cut", |t| t.label());
            return Err(WindowError::TruncatedEmpty(format!("{why} after {n} bytes")));
        }
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
    let stored = c
        .builder
        .finish(keep)
        .await
        .map_err(|e| WindowError::Corrupt(format!("storing the window failed: {e}")))?;
    let window = Window {
        target: name,
        seq: c.seq,
        requested_at: c.requested_at,
        received_at: c.received_at,
        info,
        truncation,
        trimmed_bytes: (received - keep) as u64,
        raw_len: keep as u64,
        stored,
        compression,
    };
    Ok((window, c.reservation.into_window()))
}
