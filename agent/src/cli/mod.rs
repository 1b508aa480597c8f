//! The client-side commands: `snapshot` asks a running agent (or, with `--selector`, every node through a FlightSnapshot) for bundles; `inspect` reads one; `report` writes its page.

mod fleet;
mod inspect;
mod report;
mod snapshot;

pub use fleet::{fleet_snapshot, FleetArgs};
pub use inspect::inspect;
pub use report::{write_report, Written};
pub use snapshot::{snapshot, SnapshotArgs};

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot reach the agent at {url}: {why}. Is `flightrec run` running there? (--server)")]
    Unreachable { url: String, why: String },
    #[error("agent answered {status}: {message}")]
    Refused { status: u16, message: String },
    #[error("snapshot {id} failed: {why}")]
    Failed { id: String, why: String },
    #[error("snapshot {id} not complete after {waited}; see GET /v1/snapshots/{id}")]
    TimedOut { id: String, waited: String },
    #[error("{0}")]
    Bundle(String),
    #[error("{0}")]
    Kubernetes(String),
}
