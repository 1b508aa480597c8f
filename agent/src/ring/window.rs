//! A captured trace window: its bytes as held in memory (see `blocks`) and what validation learned.

use std::io::{self, Write};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::blocks::{decompress, give_back};
use crate::config::Compression;
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
    /// Bytes dropped from the end of a cut stream to keep whole generations.
    pub trimmed_bytes: u64,
    /// Length of the trace as the target sent it (after trimming).
    pub raw_len: u64,
    /// The trace in blocks: independent zstd frames, or raw bytes, as
    /// `compression` says. Concatenated, they are the trace.
    pub stored: Vec<Bytes>,
    pub compression: Compression,
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
        for block in &self.stored {
            match self.compression {
                Compression::None => out.write_all(block)?,
                Compression::Zstd => decompress(block, |raw| out.write_all(raw))?,
            }
        }
        Ok(())
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
