//! What a target's collector is doing, as the API and readiness see it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;

use crate::config::Target;

/// What the API shows about a target's collector.
#[derive(Debug, Clone)]
pub struct TargetStatus {
    pub state: State,
    /// Window length now requested (may be shorter than configured).
    pub window: Duration,
    pub last_error: Option<(SystemTime, String)>,
    pub last_window_at: Option<SystemTime>,
    pub go_version: Option<String>,
    pub windows_kept: u64,
    pub consecutive_failures: u32,
    /// When the target left the config (or discovery): its ring is kept for
    /// `max_age`, see `Fleet`.
    pub departed_at: Option<SystemTime>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Starting,
    Recording,
    /// Failing; waiting before the next attempt.
    BackingOff,
    /// Another client holds the target's trace slot.
    SlotBusy,
    Stopped,
    /// No longer configured or discovered; its ring is kept for `max_age`
    /// and can still be snapshotted.
    Departed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Recording => "recording",
            State::BackingOff => "backing_off",
            State::SlotBusy => "slot_busy",
            State::Stopped => "stopped",
            State::Departed => "departed",
        }
    }
}

pub type SharedStatus = Arc<Mutex<TargetStatus>>;

pub fn new_status(target: &Target) -> SharedStatus {
    Arc::new(Mutex::new(TargetStatus {
        state: State::Starting,
        window: target.window,
        last_error: None,
        last_window_at: None,
        go_version: None,
        windows_kept: 0,
        consecutive_failures: 0,
        departed_at: None,
    }))
}
