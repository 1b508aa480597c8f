//! What the agent says about itself: the Prometheus registry, process metrics and systemd notifications.
//!
//! A leaf: it imports no stage. Each stage's notable events (one function
//! that logs AND counts, so logs and metrics never disagree) live in that
//! stage's `events.rs` and count through the families defined here.

mod lifecycle;
mod metrics;
mod process;
mod summaries;
pub mod systemd;
mod triggers;

pub use lifecycle::*;
pub use metrics::*;
pub use process::{max_fds, rusage, Freshness};
pub use summaries::SummaryMetrics;
pub use triggers::*;
