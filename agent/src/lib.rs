//! flightrec: a flight recorder for Go services.
//!
//! Data flow: `collector` → `ring` → `snapshot` → `spool` → `delivery` →
//! `sink`, with `trigger` and `api` beside. `app::run` wires them together;
//! `main.rs` is only the CLI.

pub mod api;
pub mod app;
pub mod bundle;
pub mod cli;
pub mod collector;
pub mod config;
pub mod delivery;
pub mod discovery;
pub mod events;
pub mod fleet;
pub mod metrics;
pub mod ring;
pub mod sink;
pub mod snapshot;
pub mod spool;
pub mod systemd;
pub mod tls;
pub mod trigger;
pub mod units;
pub mod window;
