//! Where the agent's life begins and ends: wires config to collectors, rings, snapshots and the API.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::api::{self, AppState};
use crate::collector::{self, Collector};
use crate::config::{Config, Secret};
use crate::delivery::Delivery;
use crate::events;
use crate::metrics::Metrics;
use crate::ring::Rings;
use crate::sink;
use crate::snapshot::Snapshots;
use crate::spool::{Quota, Spool, SpoolError};
use crate::trigger::{self, webhook::WebhookError, Gate};

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
    #[error("cannot build the HTTP client for target {target}: {source}")]
    Client {
        target: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("cannot use tls.ca_file {path}: {why}")]
    Tls { path: String, why: String },
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
}

fn load_ca(config: &Config) -> Result<Vec<reqwest::Certificate>, RunError> {
    let Some(path) = &config.tls.ca_file else {
        return Ok(Vec::new());
    };
    let fail = |why: String| RunError::Tls {
        path: path.display().to_string(),
        why,
    };
    let pem = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| fail(e.to_string()))?;
    if certs.is_empty() {
        return Err(fail("no PEM certificate in it".into()));
    }
    Ok(certs)
}

/// Runs the agent until `shutdown` is cancelled, then stops in order: no new
/// snapshots, let those recording finish (bounded), stop collectors, write
/// what is left, stop the API.
pub async fn run(config: Config, shutdown: CancellationToken, options: RunOptions) -> Result<(), RunError> {
    let token = load_token(&config)?;
    let extra_roots = load_ca(&config)?;
    let notifier = match &options.systemd {
        Some(sd) => match crate::systemd::Notifier::new(sd) {
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
        .map(|c| sink::build(c).map(|s| (c, s)))
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
    let rings = Arc::new(Rings::new(&config.targets, config.ring.max_bytes));

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
        rings.clone(),
        spool.clone(),
        metrics.clone(),
        recording_stopped.clone(),
        closing.clone(),
    );

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

    let collecting = CancellationToken::new();
    let collectors = TaskTracker::new();
    let mut statuses = BTreeMap::new();
    for target in &config.targets {
        let client = Collector::client_for(target, &extra_roots).map_err(|source| RunError::Client {
            target: target.name.clone(),
            source,
        })?;
        let status = collector::new_status(target);
        statuses.insert(target.name.clone(), status.clone());
        info!(target = %target.name, url = %target.public_url(), window = %crate::units::Secs(target.window), "recording");
        let c = Collector::new(
            target.clone(),
            client,
            rings.clone(),
            metrics.clone(),
            status,
            collecting.clone(),
        );
        collectors.spawn(c.run());
    }
    collectors.close();
    // Triggers stop as soon as shutdown begins: no new snapshot can start then.
    let triggers = trigger::spawn(&config.triggers, &gate, &closing);

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

    let expiry = tokio::spawn(expire_loop(
        rings.clone(),
        metrics.clone(),
        config.targets.iter().map(|t| t.name.clone()).collect(),
        collecting.clone(),
    ));

    let state = Arc::new(AppState {
        config: config.clone(),
        rings: rings.clone(),
        statuses,
        snapshots: snapshots.clone(),
        metrics: metrics.clone(),
        token,
        webhooks,
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

    // The server only ends early on an I/O failure; shut down in order then too.
    let early = tokio::select! {
        _ = shutdown.cancelled() => None,
        r = &mut server => Some(r),
    };

    info!("shutting down: no new snapshots; finishing those in flight");
    if let Some(n) = &notifier {
        n.stopping();
    }
    state.ready.store(false, Ordering::Release);
    closing.cancel();
    if tokio::time::timeout(Duration::from_secs(5), triggers.wait())
        .await
        .is_err()
    {
        warn!("triggers did not stop within 5s");
    }
    let left = snapshots.drain(SHUTDOWN_GRACE).await;
    if left > 0 {
        warn!(
            snapshots = left,
            "post-trigger recording did not finish in time; cutting it short"
        );
    }
    collecting.cancel();
    if tokio::time::timeout(Duration::from_secs(10), collectors.wait())
        .await
        .is_err()
    {
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

/// Ages windows out of idle rings and keeps ring gauges fresh.
async fn expire_loop(rings: Arc<Rings>, metrics: Arc<Metrics>, names: Vec<String>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let evicted = rings.expire(SystemTime::now());
        events::evicted(&metrics, &evicted);
        for name in &names {
            collector::update_ring_gauges(&metrics, &rings, name);
        }
    }
}
