//! Collect: one task per target streams trace windows off the wire into the ring.
//!
//! Takes in: the targets (configured, or discovered by [`crate::kubernetes`]),
//! through [`Fleet::apply`]. Hands on: whole windows, validated and
//! compressed, inserted into [`crate::ring::Rings`]; and each target death it
//! sees ([`Crash`], a stream cut mid-window, then a refused connection or a
//! new process) on a channel to the crash trigger, after the windows before
//! it. Owns: each target's HTTP client and collector task, its status, the
//! targets that departed (their rings kept for `max_age`), and the rule that
//! the socket is always drained at full speed: parsing, compression and the
//! ring happen in a separate task, and a window that cannot keep up is
//! dropped, never read slowly.

mod collector;
mod crash;
pub mod events;
mod fleet;
mod process;
mod status;
mod summarise;

pub use collector::{Collector, Outputs};
pub use crash::{Crash, Then};
pub use fleet::{Changes, Fleet, FleetError};
pub use process::update_ring_gauges;
pub use status::{new_status, SharedStatus, State, TargetStatus};
