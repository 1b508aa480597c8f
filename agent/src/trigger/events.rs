//! Trigger events: each one logs AND counts, through the trigger metric families of `telemetry`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

use crate::telemetry::{
    KindTarget, KindTargetReason, Metrics, SourceLabel, SourceReason, SourceStatus, TriggerTarget,
    TriggerTargetReason, UrlLabel, UrlReason,
};
use crate::units::{unix_seconds, Secs};

/// Why a trigger that held made no snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suppressed {
    /// The target had an automatic snapshot less than its cooldown ago.
    Cooldown { remaining: Duration },
    /// The global rate limit is used up.
    RateLimit { retry_in: Duration },
    /// The webhook delivered this alert before (HA pair, resend).
    Duplicate,
}

impl Suppressed {
    pub fn label(&self) -> &'static str {
        match self {
            Suppressed::Cooldown { .. } => "cooldown",
            Suppressed::RateLimit { .. } => "rate_limit",
            Suppressed::Duplicate => "duplicate",
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Suppressed::Cooldown { remaining } => {
                format!("target is cooling down for {} more", Secs(*remaining))
            }
            Suppressed::RateLimit { retry_in } => format!(
                "global rate limit (trigger_limits.max_fires) reached; room again in {}",
                Secs(*retry_in)
            ),
            Suppressed::Duplicate => "this alert was delivered before".into(),
        }
    }
}

pub fn fired(m: &Metrics, kind: &str, target: &str, reason: &str, ids: &[String]) {
    m.triggers
        .fired
        .get_or_create(&KindTarget {
            kind: kind.into(),
            target: target.into(),
        })
        .inc();
    info!(%target, kind, ids = ?ids, "trigger fired: {reason}");
}

pub fn suppressed(m: &Metrics, kind: &str, target: &str, why: Suppressed, reason: &str) {
    m.triggers
        .suppressed
        .get_or_create(&KindTargetReason {
            kind: kind.into(),
            target: target.into(),
            reason: why.label().into(),
        })
        .inc();
    match why {
        // Every resend, and the second of every HA pair: expected, and many.
        Suppressed::Duplicate => {
            debug!(%target, kind, suppressed = why.label(), "trigger held, no snapshot: {}; {reason}", why.describe())
        }
        // The answer to "the alert fired, why is there no bundle?".
        Suppressed::Cooldown { .. } => {
            info!(%target, kind, suppressed = why.label(), "trigger held, no snapshot: {}; {reason}", why.describe())
        }
        Suppressed::RateLimit { .. } => {
            warn!(%target, kind, suppressed = why.label(), "trigger held, no snapshot: {}; {reason}", why.describe())
        }
    }
}

pub fn webhook_alerts(m: &Metrics, source: &str, firing: u64, resolved: u64) {
    for (status, n) in [("firing", firing), ("resolved", resolved)] {
        if n > 0 {
            m.triggers
                .webhook_alerts
                .get_or_create(&SourceStatus {
                    source: source.into(),
                    status: status.into(),
                })
                .inc_by(n);
        }
    }
    debug!(source, firing, resolved, "webhook notification received");
}

/// `message` goes to the log and the answer: it must never hold a secret.
pub fn webhook_rejected(m: &Metrics, source: &str, reason: &str, message: &str) {
    m.triggers
        .webhook_rejected
        .get_or_create(&SourceReason {
            source: source.into(),
            reason: reason.into(),
        })
        .inc();
    warn!(source, reason, "webhook request refused: {message}");
}

pub fn alert_unmatched(m: &Metrics, source: &str, alertname: &str, labels: &BTreeMap<String, String>) {
    m.triggers
        .unmatched
        .get_or_create(&SourceLabel {
            source: source.into(),
        })
        .inc();
    info!(
        source, alert = alertname, labels = ?labels,
        "firing alert selects no target: no target shares a label of webhooks.match_labels with equal values, and it has no flightrec_target label"
    );
}

pub fn observed(m: &Metrics, trigger: &str, target: &str, value: f64) {
    m.triggers
        .observed
        .get_or_create(&TriggerTarget {
            trigger: trigger.into(),
            target: target.into(),
        })
        .set(value);
}

pub fn probe(m: &Metrics, trigger: &str, target: &str, latency: Duration) {
    let labels = TriggerTarget {
        trigger: trigger.into(),
        target: target.into(),
    };
    m.triggers
        .probe_duration
        .get_or_create(&labels)
        .observe(latency.as_secs_f64());
    observed(m, trigger, target, latency.as_secs_f64());
}

/// A trace trigger fell behind the ring's feed: `missed` windows went by
/// unjudged (the run of `consecutive` starts again).
pub fn trace_windows_missed(m: &Metrics, trigger: &str, target: &str, missed: u64) {
    m.triggers
        .errors
        .get_or_create(&TriggerTargetReason {
            trigger: trigger.into(),
            target: target.into(),
            reason: "lagged".into(),
        })
        .inc();
    warn!(%trigger, %target, missed, "trace trigger fell behind the ring: {missed} windows went by unjudged");
}

/// How often a trigger whose requests keep failing says so again.
const REPEAT_LOG: Duration = Duration::from_secs(60);

/// Counts every failed probe or scrape, but logs the first failure, then at
/// most one line a minute while failures go on, then the recovery: a probe
/// every 500ms against a dead endpoint must not write 7200 lines an hour.
pub struct ErrorLog {
    trigger: String,
    target: String,
    failures: u64,
    since_log: u64,
    last_log: Option<Instant>,
}

impl ErrorLog {
    pub fn new(trigger: &str, target: &str) -> Self {
        ErrorLog {
            trigger: trigger.into(),
            target: target.into(),
            failures: 0,
            since_log: 0,
            last_log: None,
        }
    }

    pub fn failed(&mut self, m: &Metrics, reason: &str, message: &str) {
        m.triggers
            .errors
            .get_or_create(&TriggerTargetReason {
                trigger: self.trigger.clone(),
                target: self.target.clone(),
                reason: reason.into(),
            })
            .inc();
        self.failures += 1;
        self.since_log += 1;
        let (trigger, target) = (&self.trigger, &self.target);
        match self.last_log {
            None => {
                warn!(%trigger, %target, reason, "{message}; repeats are logged once a minute");
            }
            Some(at) if at.elapsed() >= REPEAT_LOG => {
                warn!(
                    %trigger, %target, reason, failures = self.since_log,
                    "still failing: {} failures in the last {}; latest: {message}",
                    self.since_log, Secs(at.elapsed())
                );
            }
            Some(_) => return,
        }
        self.last_log = Some(Instant::now());
        self.since_log = 0;
    }

    pub fn succeeded(&mut self) {
        if self.failures > 0 {
            info!(trigger = %self.trigger, target = %self.target, failures = self.failures, "requests succeed again after {} failures", self.failures);
        }
        self.failures = 0;
        self.since_log = 0;
        self.last_log = None;
    }
}

/// A death the crash trigger leaves alone: `reason` is `off` (the
/// target's `crash` is false, or it is gone from the config) or
/// `shutting_down`.
pub fn crash_not_snapshotted(m: &Metrics, target: &str, reason: &str, why: &str) {
    m.triggers
        .suppressed
        .get_or_create(&KindTargetReason {
            kind: "crash".into(),
            target: target.into(),
            reason: reason.into(),
        })
        .inc();
    info!(%target, kind = "crash", suppressed = reason, "no crash bundle: {why}");
}

/// One Alertmanager's health as the log and `/metrics` tell it: each change
/// (following, failing, failing for another reason, back) is logged and
/// counted once; the polls in between say nothing more. An Alertmanager down
/// for a night is one line, not one per poll.
pub struct AlertmanagerHealth {
    url: String,
    /// The reason of the failures going on, when they started, how many polls.
    failing: Option<(&'static str, Instant, u64)>,
    polled: bool,
}

impl AlertmanagerHealth {
    /// `url` must carry no credentials: it is a log field and a metric label.
    pub fn new(url: &str) -> Self {
        AlertmanagerHealth {
            url: url.into(),
            failing: None,
            polled: false,
        }
    }

    fn label(&self) -> UrlLabel {
        UrlLabel {
            url: self.url.clone(),
        }
    }

    /// A poll that worked: `alerts` in the answer, `matching` of them
    /// selecting a target here.
    pub fn succeeded(&mut self, m: &Metrics, alerts: usize, matching: usize, took: Duration) {
        let am = &m.triggers.alertmanager;
        let label = self.label();
        am.up.get_or_create(&label).set(1);
        am.last_success
            .get_or_create(&label)
            .set(unix_seconds(std::time::SystemTime::now()));
        am.poll_duration.get_or_create(&label).observe(took.as_secs_f64());
        am.alerts.get_or_create(&label).set(alerts as i64);
        am.matching.get_or_create(&label).set(matching as i64);
        let url = &self.url;
        if let Some((reason, since, polls)) = self.failing.take() {
            info!(alertmanager = %url, reason, failed_polls = polls, "Alertmanager answers again after {polls} failed polls over {}", Secs(since.elapsed()));
        } else if !self.polled {
            info!(alertmanager = %url, alerts, matching, "following Alertmanager: {alerts} alerts, {matching} about targets here");
        } else {
            debug!(alertmanager = %url, alerts, matching, took = %Secs(took), "Alertmanager polled");
        }
        self.polled = true;
    }

    /// A poll that failed; `message` must hold no secret.
    pub fn failed(&mut self, m: &Metrics, reason: &'static str, message: &str) {
        let am = &m.triggers.alertmanager;
        am.up.get_or_create(&self.label()).set(0);
        let url = &self.url;
        match &mut self.failing {
            Some((same, _, polls)) if *same == reason => {
                *polls += 1;
                debug!(alertmanager = %url, reason, "Alertmanager poll failed again: {message}");
                return;
            }
            _ => {}
        }
        am.poll_errors
            .get_or_create(&UrlReason {
                url: url.clone(),
                reason: reason.into(),
            })
            .inc();
        warn!(
            alertmanager = %url, reason,
            "polling Alertmanager failed: {message}; retrying with backoff, and saying so again only when this changes; other Alertmanagers and triggers go on"
        );
        self.failing = Some((reason, Instant::now(), 1));
    }

    /// This URL is no longer followed: its gauges go, so none says it is up.
    pub fn forget(&self, m: &Metrics) {
        let am = &m.triggers.alertmanager;
        let label = self.label();
        am.up.remove(&label);
        am.alerts.remove(&label);
        am.matching.remove(&label);
    }
}
