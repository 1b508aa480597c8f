//! Kubernetes, at the edge of the agent: what the API server says becomes targets and snapshot requests.
//!
//! Takes in: the pods of this node (a watch: [`discovery`]), FlightSnapshots
//! of the whole cluster (a watch: [`controller`]), and the alerts this agent
//! receives that name a pod or a workload ([`alerts`]), and what a pod's
//! status says of a recorded pod's death ([`crashes`]). Hands on: targets,
//! published on a watch channel that [`crate::app`] merges with the
//! configured ones; snapshot requests, exactly those the HTTP API makes
//! (through [`crate::trigger::Gate`] when an alert asked). Owns: the client
//! of the API server, the FlightSnapshot resource ([`resource`]) and the
//! health of each watch. No stage that records, snapshots or delivers
//! imports this module.

pub mod alerts;
pub mod client;
pub mod controller;
pub mod crashes;
pub mod discovery;
pub mod health;
pub mod pods;
pub mod resource;

pub use client::ClientError;
pub use health::Health;
pub use resource::{FlightSnapshot, FlightSnapshotSpec, FlightSnapshotStatus, PodCapture};

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{KubernetesConfig, Target};
use crate::snapshot::Snapshots;
use crate::telemetry::Metrics;
use crate::trigger::crash::CrashContext;
use crate::trigger::webhook::AlertRouter;
use crate::trigger::Gate;

/// The running Kubernetes side of the agent.
pub struct Running {
    /// How each watch is doing, for `GET /v1/targets`.
    pub health: Arc<Health>,
    /// Takes the alerts that name pods (with `kubernetes.route_alerts`).
    pub router: Option<Arc<dyn AlertRouter>>,
    /// Says what the pod's status tells of a recorded pod's death.
    pub crash_context: Option<Arc<dyn CrashContext>>,
    tasks: TaskTracker,
}

impl Running {
    /// Waits for the watches to end (after the stop token is cancelled).
    pub async fn wait(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// What the Kubernetes side needs from the rest of the agent.
pub struct Wiring {
    /// Where the targets found go.
    pub targets: watch::Sender<Vec<Target>>,
    pub snapshots: Arc<Snapshots>,
    pub gate: Arc<Gate>,
    /// The cooldown alerts get (`trigger_limits.cooldown`).
    pub cooldown: Duration,
    pub metrics: Arc<Metrics>,
}

/// Starts discovery, the FlightSnapshot controller and the alert router as
/// `[kubernetes]` asks, until `stop`.
pub fn start(
    cfg: &KubernetesConfig,
    wiring: Wiring,
    stop: CancellationToken,
) -> Result<Running, ClientError> {
    let client = client::in_cluster(cfg)?;
    let health = Arc::new(Health::new(cfg.interval));
    let local = Arc::new(discovery::LocalPods::default());
    let tasks = TaskTracker::new();
    tasks.spawn(discovery::run(
        cfg.clone(),
        client.clone(),
        local.clone(),
        wiring.targets,
        wiring.metrics.clone(),
        health.clone(),
        stop.clone(),
    ));
    let crash_context: Option<Arc<dyn CrashContext>> =
        Some(Arc::new(crashes::PodDeaths::new(local.clone(), client.clone())));
    if cfg.flightsnapshots {
        let controller = controller::Controller::new(
            cfg.clone(),
            client.clone(),
            local,
            wiring.snapshots,
            wiring.gate,
            wiring.cooldown,
            wiring.metrics.clone(),
            health.clone(),
        );
        tasks.spawn(controller.run(stop));
    }
    let router = cfg
        .route_alerts
        .then(|| Arc::new(alerts::AlertRouting::new(cfg, client, wiring.metrics)) as Arc<dyn AlertRouter>);
    Ok(Running {
        health,
        router,
        crash_context,
        tasks,
    })
}
