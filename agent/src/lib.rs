//! flightrec: a flight recorder for Go services.
//!
//! The modules follow the data flow (see ARCHITECTURE.md at the repository
//! root): [`collect`] streams trace windows from each target into the
//! [`ring`]; a [`trigger`] (or the [`api`], or [`kubernetes`]) asks
//! [`snapshot`] to freeze a ring, which writes a [`bundle`] into the spool of
//! [`deliver`], whose sinks take it away. [`config`], [`telemetry`],
//! [`units`], [`secret`] and [`tls`] are leaves every stage may use; [`app`] wires the
//! stages together and [`cli`] holds the client-side commands.

pub mod api;
pub mod app;
pub mod bundle;
pub mod cli;
pub mod collect;
pub mod config;
pub mod deliver;
pub mod kubernetes;
pub mod ring;
pub mod secret;
pub mod snapshot;
pub mod telemetry;
pub mod tls;
pub mod trigger;
pub mod units;
