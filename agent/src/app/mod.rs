//! Where the agent's life begins and ends: wires config to collectors, rings, snapshots and the API.
//!
//! `run` builds every stage from the config in data-flow order, serves until
//! shutdown, then stops them in the order that loses nothing: no new
//! snapshots, those recording finish (bounded), collectors stop, the last
//! bundles are written, the sinks get a last chance, the API stops.

mod reload;

use reload::Reload;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::api::{self, AppState};
use crate::collect;
use crate::collect::events;
use crate::collect::{Fleet, FleetError};
use crate::config::{Config, ConfigError, Secret};
use crate::deliver::delivery::Delivery;
use crate::deliver::sink;
use crate::deliver::spool::{Quota, Spool, SpoolError};
use crate::ring::Rings;
use crate::snapshot::Snapshots;
use crate::telemetry::Metrics;
use crate::trigger::{self, alertmanager::Follower, webhook::WebhookError, Gate, Triggers};

/// Deaths waiting for the crash trigger. It only asks the gate, so this is
/// never full unless many targets die at once; then the gate's rate limit
/// would hold most back anyway.
const CRASH_QUEUE: usize = 64;
/// How long SIGTERM waits for snapshots still recording their post-trigger
/// part before cutting them short.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// How long writing the last bundles may take after recording stopped.
const WRITE_GRACE: Duration = Duration::from_secs(30);
/// How long SIGTERM waits for the sinks to take what is pending, so a pod
/// whose spool is an emptyDir loses as little as possible. Whatever is left
/// stays in the spool and goes after the next start.
const DELIVERY_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("cannot listen on {addr}: {source}; is another flightrec (or something else) using it? Set server.listen")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the API token from {path}: {source}")]
    Token {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("API token file {0} is empty")]
    EmptyToken(String),
    #[error(transparent)]
    Client(#[from] FleetError),
    #[error(transparent)]
    Kubernetes(#[from] crate::kubernetes::ClientError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Sink(#[from] sink::BuildError),
    #[error("API server failed: {0}")]
    Serve(#[source] std::io::Error),
    #[error("webhooks: {0}")]
    Webhook(#[from] WebhookError),
}

fn load_token(config: &Config) -> Result<Option<Secret>, RunError> {
    if let Some(path) = &config.server.token_file {
        let text = std::fs::read_to_string(path).map_err(|source| RunError::Token {
            path: path.display().to_string(),
            source,
        })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(RunError::EmptyToken(path.display().to_string()));
        }
        return Ok(Some(Secret::new(token.to_string())));
    }
    Ok(config.server.token.clone())
}

/// What the agent learns from outside its config file.
#[derive(Default)]
pub struct RunOptions {
    /// Receives the API address once listening.
    pub bound: Option<oneshot::Sender<SocketAddr>>,
    /// Set when started by systemd with `Type=notify`.
    pub systemd: Option<crate::config::Systemd>,
    /// Reloads the config (SIGHUP) when asked.
    pub reload: Option<Reloader>,
}

/// Asks for, and reads, a new config while the agent runs.
pub struct Reloader {
    /// One message per reload request (SIGHUP).
    pub requests: mpsc::Receiver<()>,
    /// Reads the config again, from the same file and environment.
    pub load: Box<dyn Fn() -> Result<Config, ConfigError> + Send>,
}

/// Runs the agent until `shutdown` is cancelled, then stops in order: no new
/// snapshots, let those recording finish (bounded), stop collectors, write
/// what is left, stop the API.
pub async fn run(config: Config, shutdown: CancellationToken, options: RunOptions) -> Result<(), RunError> {
    let token = load_token(&config)?;
    let extra_roots = crate::tls::ExtraRoots::load(config.tls.ca_file.as_deref())?;
    let notifier = match &options.systemd {
        Some(sd) => match crate::telemetry::systemd::Notifier::new(sd) {
            Ok(n) => Some(Arc::new(n)),
            Err(e) => {
                warn!(error = %e, "NOTIFY_SOCKET is set but unusable; not notifying systemd");
                None
            }
        },
        None => None,
    };
    let metrics = Metrics::new();
    metrics.ring_global_budget.set(config.ring.max_bytes as i64);
    metrics.spool_max_bytes.set(config.snapshots.max_bytes as i64);
    metrics.spool_max_bundles.set(config.snapshots.max_bundles as i64);
    // Sinks first: a bad sink config stops the agent before anything else starts.
    let sinks = config
        .sinks
        .iter()
        .map(|c| sink::build(c, &extra_roots).map(|s| (c, s)))
        .collect::<Result<Vec<_>, _>>()?;
    let sink_names: Vec<String> = config.sinks.iter().map(|s| s.name.clone()).collect();
    let quota = Quota {
        max_bytes: config.snapshots.max_bytes,
        max_bundles: config.snapshots.max_bundles,
    };
    let spool = Arc::new(Spool::open(
        &config.snapshots.dir,
        &sink_names,
        quota,
        metrics.clone(),
    )?);
    let rings = Arc::new(Rings::new(&[], config.ring.max_bytes));
    // Deaths the collectors see, for the crash trigger; none when it is off.
    let (deaths_tx, deaths) = match config.crash.enabled {
        true => {
            let (tx, rx) = mpsc::channel(CRASH_QUEUE);
            (Some(tx), Some(rx))
        }
        false => (None, None),
    };
    let fleet = Fleet::new(rings.clone(), metrics.clone(), extra_roots.clone(), deaths_tx);

    let listener = TcpListener::bind(config.server.listen)
        .await
        .map_err(|source| RunError::Listen {
            addr: config.server.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| RunError::Listen {
        addr: config.server.listen,
        source,
    })?;

    let recording_stopped = CancellationToken::new();
    let closing = CancellationToken::new();
    let snapshots = Snapshots::new(
        &config,
        fleet.clone(),
        rings.clone(),
        spool.clone(),
        metrics.clone(),
        recording_stopped.clone(),
        closing.clone(),
    );
    // Bundles durable before a stop but not finished: their bundle.trace.
    snapshots.finish_leftovers();

    let gate = Gate::new(
        config.triggers.limits.clone(),
        config.triggers.webhooks.dedupe_ttl,
        snapshots.clone(),
        metrics.clone(),
    );
    let webhooks = Arc::new(trigger::webhook::Webhooks::new(
        &config.triggers.webhooks,
        config.triggers.limits.cooldown,
        token.clone(),
        &config.targets,
        gate.clone(),
    )?);

    // Kubernetes discovery publishes the pods it finds; they join the
    // configured targets (a configured name wins a clash).
    let (discovered_tx, mut discovered) = tokio::sync::watch::channel(Vec::new());
    let kubernetes = if config.kubernetes.enabled {
        let wiring = crate::kubernetes::Wiring {
            targets: discovered_tx,
            snapshots: snapshots.clone(),
            gate: gate.clone(),
            cooldown: config.triggers.limits.cooldown,
            metrics: metrics.clone(),
        };
        let running = crate::kubernetes::start(&config.kubernetes, wiring, closing.clone())?;
        if let Some(router) = &running.router {
            webhooks.set_router(router.clone());
        }
        Some(running)
    } else {
        drop(discovered_tx);
        None
    };
    fleet.apply(&config.targets)?;
    metrics
        .config_last_reload_success
        .set(crate::units::unix_seconds(SystemTime::now()));
    // Triggers stop as soon as shutdown begins: no new snapshot can start then.
    let triggers = Triggers::start(&config.triggers.triggers, &gate, &rings, &closing, &extra_roots);
    let crash_trigger = deaths.map(|deaths| {
        tokio::spawn(trigger::crash::run(
            deaths,
            config.crash.cooldown,
            gate.clone(),
            fleet.clone(),
            kubernetes.as_ref().and_then(|k| k.crash_context.clone()),
            closing.clone(),
        ))
    });
    let follower = Follower::start(
        &config.alertmanager,
        webhooks.targets(),
        config.triggers.limits.cooldown,
        &gate,
        &closing,
        &extra_roots,
    );

    let delivering = CancellationToken::new();
    let deliveries = TaskTracker::new();
    for (c, s) in sinks {
        info!(sink = %c.name, kind = c.backend.kind(), to = %s.describe(), "delivering bundles");
        let d = Delivery {
            name: c.name.clone(),
            sink: s,
            policy: c.retry.clone(),
            spool: spool.clone(),
            metrics: metrics.clone(),
        };
        deliveries.spawn(d.run(delivering.clone()));
    }
    deliveries.close();

    let expiry_stop = CancellationToken::new();
    let expiry = tokio::spawn(expire_loop(
        rings.clone(),
        metrics.clone(),
        fleet.clone(),
        expiry_stop.clone(),
    ));

    let state = Arc::new(AppState {
        config: config.clone(),
        rings: rings.clone(),
        fleet: fleet.clone(),
        snapshots: snapshots.clone(),
        metrics: metrics.clone(),
        token,
        webhooks,
        kubernetes: kubernetes.as_ref().map(|k| k.health.clone()),
        ready: Default::default(),
    });
    let app = api::router(state.clone());
    let server_stop = CancellationToken::new();
    let stop = server_stop.clone();
    let mut server = tokio::spawn(async move {
        axum::serve(api::LimitedListener::new(listener, api::max_connections()), app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
    });
    state.ready.store(true, Ordering::Release);
    info!(addr = %addr, dir = %spool.dir().display(), targets = config.targets.len(), "flightrec listening on http://{addr}");
    if let Some(tx) = options.bound {
        let _ = tx.send(addr);
    }
    let watchdog_stop = CancellationToken::new();
    if let Some(n) = &notifier {
        n.ready(&format!(
            "recording {} targets; API on {addr}",
            config.targets.len()
        ));
        tokio::spawn(n.clone().watchdog(watchdog_stop.clone()));
    }

    // Serve until told to stop; a reload request changes what is recorded in
    // between. The server only ends early on an I/O failure; shut down in
    // order then too.
    let mut reload = options.reload;
    let mut running = config.clone();
    let early = loop {
        let request = async {
            match reload.as_mut() {
                Some(r) => r.requests.recv().await,
                None => std::future::pending().await,
            }
        };
        let reloader = Reload {
            fleet: &fleet,
            triggers: &triggers,
            follower: &follower,
            webhooks: &state.webhooks,
            metrics: &metrics,
        };
        tokio::select! {
            _ = shutdown.cancelled() => break None,
            r = &mut server => break Some(r),
            Some(()) = request => {
                if let Some(r) = &reload {
                    let found = discovered.borrow().clone();
                    reloader.apply(&mut running, (r.load)(), &found);
                }
            }
            Ok(()) = discovered.changed() => {
                let found = discovered.borrow_and_update().clone();
                reloader.targets(&running.targets, &found);
            }
        }
    };

    info!("shutting down: no new snapshots; finishing those in flight");
    if let Some(n) = &notifier {
        n.stopping();
    }
    state.ready.store(false, Ordering::Release);
    closing.cancel();
    if !triggers.wait(Duration::from_secs(5)).await {
        warn!("triggers did not stop within 5s");
    }
    if !follower.wait(Duration::from_secs(5)).await {
        warn!("the Alertmanager follower did not stop within 5s");
    }
    if let Some(t) = crash_trigger {
        let _ = t.await;
    }
    if let Some(k) = &kubernetes {
        k.wait().await;
    }
    let left = snapshots.drain(SHUTDOWN_GRACE).await;
    if left > 0 {
        warn!(
            snapshots = left,
            "post-trigger recording did not finish in time; cutting it short"
        );
    }
    if !fleet.stop(Duration::from_secs(10)).await {
        warn!("collectors did not stop within 10s");
    }
    recording_stopped.cancel();
    let left = snapshots.drain(WRITE_GRACE).await;
    if left > 0 {
        warn!(
            snapshots = left,
            "bundles still unwritten at exit; they were never acknowledged"
        );
    }
    expiry_stop.cancel();
    let _ = expiry.await;
    drain_deliveries(&spool, DELIVERY_GRACE).await;
    delivering.cancel();
    deliveries.wait().await;
    server_stop.cancel();
    let result = match early {
        Some(r) => r,
        None => server.await,
    };
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(RunError::Serve(e)),
        Err(e) => warn!(error = %e, "API server task failed"),
    }
    watchdog_stop.cancel();
    info!("stopped");
    Ok(())
}

/// Gives the sinks up to `grace` to take what is pending.
async fn drain_deliveries(spool: &Spool, grace: Duration) {
    let pending = || {
        spool
            .sinks()
            .iter()
            .map(|s| spool.pending_count(s))
            .sum::<usize>()
    };
    if pending() == 0 {
        return;
    }
    let deadline = tokio::time::Instant::now() + grace;
    while pending() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left = pending();
    if left > 0 {
        warn!(
            deliveries = left,
            "bundles not yet delivered at exit; they stay in the spool and are delivered after the next start"
        );
    }
}

/// Ages windows out of idle rings, frees departed targets past their
/// `max_age`, and keeps ring gauges fresh.
async fn expire_loop(rings: Arc<Rings>, metrics: Arc<Metrics>, fleet: Arc<Fleet>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let now = SystemTime::now();
        let evicted = rings.expire(now);
        events::evicted(&metrics, &evicted);
        fleet.expire(now);
        for name in fleet.names() {
            collect::update_ring_gauges(&metrics, &rings, &name);
        }
    }
}
