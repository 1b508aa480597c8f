//! What a reload (SIGHUP) or a change in the discovered pods can change while the agent runs.

use std::time::SystemTime;

use tracing::{info, warn};

use crate::collect::Fleet;
use crate::config::{Config, ConfigError, Target};
use crate::telemetry::{Metrics, ResultLabels};
use crate::trigger::alertmanager::Follower;
use crate::trigger::Triggers;

/// What a reload can change while the agent runs: the targets (collectors,
/// rings, what alerts select), the `[[triggers]]` and `[alertmanager]`.
/// Everything else is read once at startup and needs a restart; a reload
/// that changes it says so.
pub(super) struct Reload<'a> {
    pub(super) fleet: &'a Fleet,
    pub(super) triggers: &'a Triggers,
    pub(super) follower: &'a Follower,
    pub(super) webhooks: &'a crate::trigger::webhook::Webhooks,
    pub(super) metrics: &'a Metrics,
}

impl Reload<'_> {
    /// Records the configured targets plus the discovered ones.
    pub(super) fn targets(
        &self,
        configured: &[Target],
        discovered: &[Target],
    ) -> Option<crate::collect::Changes> {
        let mut all = configured.to_vec();
        all.extend(
            discovered
                .iter()
                .filter(|d| !configured.iter().any(|c| c.name == d.name))
                .cloned(),
        );
        match self.fleet.apply(&all) {
            Ok(changes) => {
                // Departed targets too: an alert about them still snapshots.
                self.webhooks.set_targets(&self.fleet.targets());
                if !changes.is_empty() {
                    info!(
                        added = ?changes.added, removed = ?changes.removed, restarted = ?changes.restarted,
                        updated = ?changes.updated, "targets changed"
                    );
                }
                Some(changes)
            }
            Err(e) => {
                warn!(error = %e, "targets not changed");
                None
            }
        }
    }

    pub(super) fn apply(
        &self,
        running: &mut Config,
        loaded: Result<Config, ConfigError>,
        discovered: &[Target],
    ) {
        let result = |r: &str| ResultLabels { result: r.into() };
        let new = match loaded {
            Ok(c) => c,
            Err(e) => {
                self.metrics
                    .config_reloads
                    .get_or_create(&result("rejected"))
                    .inc();
                warn!("config reload rejected; the previous config keeps running:\n{e}");
                return;
            }
        };
        let Some(changes) = self.targets(&new.targets, discovered) else {
            self.metrics
                .config_reloads
                .get_or_create(&result("rejected"))
                .inc();
            warn!("config reload rejected; the previous config keeps running");
            return;
        };
        let (started, stopped) = self.triggers.apply(&new.triggers.triggers);
        let alertmanager_restarted = self.follower.apply(&new.alertmanager);
        let t = &new.triggers;
        let r = &running.triggers;
        let needs_restart: Vec<&str> = [
            ("server", new.server != running.server),
            ("snapshots", new.snapshots != running.snapshots),
            ("ring", new.ring != running.ring),
            ("log", new.log != running.log),
            ("tls", new.tls != running.tls),
            ("sinks", new.sinks != running.sinks),
            ("webhooks", t.webhooks != r.webhooks),
            ("trigger_limits", t.limits != r.limits),
            ("kubernetes", new.kubernetes != running.kubernetes),
            ("crash", new.crash != running.crash),
        ]
        .into_iter()
        .filter_map(|(section, changed)| changed.then_some(section))
        .collect();
        for section in &needs_restart {
            warn!(
                section,
                "[{section}] changed; it is read at startup, so the change takes effect after a restart"
            );
        }
        info!(
            added = ?changes.added, removed = ?changes.removed, restarted = ?changes.restarted,
            updated = ?changes.updated, triggers_started = ?started, triggers_stopped = ?stopped,
            alertmanager_restarted, "config reloaded"
        );
        self.metrics
            .config_reloads
            .get_or_create(&result("applied"))
            .inc();
        self.metrics
            .config_last_reload_success
            .set(crate::units::unix_seconds(SystemTime::now()));
        running.targets = new.targets;
        running.triggers.triggers = new.triggers.triggers;
        running.alertmanager = new.alertmanager;
    }
}
