//! How each watch on the API server is doing, for `GET /v1/targets`, the logs and the metrics.
//!
//! A watch that fails is logged once when it starts failing and once when it
//! recovers, not on every retry; every failure is counted. The message says
//! what to check, so a missing RBAC verb is a clear line, not a silent nothing.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use serde_json::{json, Value};
use tracing::{info, warn};

use crate::telemetry::{Metrics, WatchReason};
use crate::units::rfc3339;

#[derive(Debug, Clone)]
struct WatchState {
    failing: bool,
    since: SystemTime,
    last_error: Option<(SystemTime, String)>,
    errors: u64,
}

/// The state of every watch this agent holds, by name (`pods`, `flightsnapshots`).
pub struct Health {
    watches: Mutex<BTreeMap<&'static str, WatchState>>,
    /// A failing watch is retried at least this often, so one that saw no
    /// error for longer works again. (A watch that starts again yields no
    /// event until something changes, so success alone cannot say it.)
    recovered_after: Duration,
}

impl Health {
    /// `retry_max`: the longest pause between attempts of a failing watch.
    pub fn new(retry_max: Duration) -> Self {
        Health {
            watches: Mutex::new(BTreeMap::new()),
            recovered_after: retry_max * 2 + Duration::from_secs(5),
        }
    }

    /// The watch delivered a list or an event.
    pub fn ok(&self, watch: &'static str) {
        let mut all = self.watches.lock();
        let st = all.entry(watch).or_insert_with(|| WatchState {
            failing: true,
            since: SystemTime::now(),
            last_error: None,
            errors: 0,
        });
        if st.failing {
            if st.errors > 0 {
                info!(
                    watch,
                    errors = st.errors,
                    "Kubernetes watch of {watch} works again"
                );
            }
            st.failing = false;
            st.since = SystemTime::now();
        }
    }

    /// The watch failed; `reason` labels the metric.
    pub fn failed(&self, m: &Metrics, watch: &'static str, reason: &'static str, message: &str) {
        m.kubernetes_watch_errors
            .get_or_create(&WatchReason {
                watch: watch.into(),
                reason: reason.into(),
            })
            .inc();
        let mut all = self.watches.lock();
        let now = SystemTime::now();
        let st = all.entry(watch).or_insert_with(|| WatchState {
            failing: false,
            since: now,
            last_error: None,
            errors: 0,
        });
        let changed = st.last_error.as_ref().is_none_or(|(_, m)| m != message) || !st.failing;
        if changed {
            warn!(
                watch,
                reason, "Kubernetes watch of {watch} fails, retrying with backoff: {message}"
            );
        }
        if !st.failing {
            st.failing = true;
            st.since = now;
        }
        st.errors += 1;
        st.last_error = Some((now, message.to_string()));
    }

    /// For `GET /v1/targets`.
    pub fn to_json(&self) -> Value {
        let all = self.watches.lock();
        let watches: serde_json::Map<String, Value> = all
            .iter()
            .map(|(name, st)| {
                let failing = st.failing
                    && st
                        .last_error
                        .as_ref()
                        .is_some_and(|(at, _)| at.elapsed().is_ok_and(|age| age < self.recovered_after));
                (
                    name.to_string(),
                    json!({
                        "state": if failing { "failing" } else { "watching" },
                        "since": rfc3339(st.since),
                        "errors": st.errors,
                        "last_error": st.last_error.as_ref().map(|(at, m)| json!({"at": rfc3339(*at), "message": m})),
                    }),
                )
            })
            .collect();
        json!({ "watches": watches })
    }
}

/// A metric label and a message that says what to check, for a failed watch.
pub fn describe_watch(what: &str, e: &kube::runtime::watcher::Error) -> (&'static str, String) {
    use kube::runtime::watcher::Error as W;
    match e {
        W::InitialListFailed(e) | W::WatchStartFailed(e) | W::WatchFailed(e) => describe(what, e),
        W::WatchError(s) => describe_status(what, s),
        W::NoResourceVersion => ("status", format!("{what}: {e}")),
    }
}

/// A metric label and a message that says what to check, for an error of
/// the API server or of the way to it.
pub fn describe(what: &str, e: &kube::Error) -> (&'static str, String) {
    match e {
        kube::Error::Api(s) => describe_status(what, s),
        other => ("unreachable", format!("{what}: {}", error_chain(other))),
    }
}

fn describe_status(what: &str, s: &kube::core::Status) -> (&'static str, String) {
    {
        {
            let hint = match s.code {
                401 => " (the service account token is not accepted: is kubernetes.token_file the pod's projected token?)",
                403 => " (the ClusterRole lacks a verb: apply deploy/kubernetes/daemonset/rbac.yaml)",
                404 if what.contains("FlightSnapshot") => {
                    " (is the FlightSnapshot CRD installed? kubectl apply -k deploy/kubernetes/daemonset)"
                }
                _ => "",
            };
            let reason = match s.code {
                401 => "unauthorized",
                403 => "forbidden",
                404 => "not_found",
                410 => "gone",
                _ => "status",
            };
            (reason, format!("{what}: HTTP {} {}{hint}", s.code, s.message))
        }
    }
}

/// An error and its causes in one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}
