//! A captured trace window: its bytes as held in memory and what validation learned.

use std::io::{self, Write};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::config::Compression;
use crate::trace_format::TraceInfo;

/// Why a window's stream ended before the target finished it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Truncation {
    /// The connection broke (target killed, network reset).
    Disconnected(String),
    /// The target went silent for longer than `read_timeout`.
    ReadTimeout,
    /// The window reached `max_window_bytes`; the agent closed the connection.
    ByteCap,
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
    /// Bytes dropped from the end of a cut stream to keep whole generations.
    pub trimmed_bytes: u64,
    /// Length of the trace as the target sent it (after trimming).
    pub raw_len: u64,
    /// The trace, compressed or not as `compression` says.
    pub stored: Bytes,
    pub compression: Compression,
}

impl Window {
    pub fn is_complete(&self) -> bool {
        self.truncation.is_none()
    }

    /// Bytes this window occupies in memory.
    pub fn stored_len(&self) -> u64 {
        self.stored.len() as u64
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
        match self.compression {
            Compression::None => out.write_all(&self.stored),
            Compression::Zstd => {
                let mut dec = zstd::stream::read::Decoder::with_buffer(&self.stored[..])?;
                io::copy(&mut dec, out).map(|_| ())
            }
        }
    }
}

/// Compresses a finished window for the ring. Level 1: the ring holds data
/// for a minute, so speed matters more than the last few percent of ratio.
pub fn compress(raw: &[u8]) -> io::Result<Bytes> {
    zstd::bulk::compress(raw, 1).map(Bytes::from)
}

fn unix_ns(ns: u128) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns.min(u128::from(u64::MAX)) as u64)
}
