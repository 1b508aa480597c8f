//! What Kubernetes says of a recorded pod's death: the container's status, its last log, and whether it was stopped on purpose.
//!
//! The collector sees a death first (a stream cut, then a closed port or a
//! new process). The kubelet reports it in the pod's status a little later,
//! when it restarts or finishes the container: `lastState.terminated` (or
//! `state.terminated`) with the reason (`OOMKilled`, `Error`), the exit code
//! and `finishedAt`, and the restart count. The crash trigger waits for that
//! (at most [`STATUS_WAIT`]) and puts it in the bundle's trigger details,
//! with the end of the container's log when the RBAC allows reading it (Go
//! writes its panic and every goroutine's stack there). A pod being deleted
//! was stopped on purpose: its death is not a crash.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::io::AsyncReadExt;
use futures_util::FutureExt;
use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod};
use kube::api::LogParams;
use kube::Api;
use serde_json::json;

use super::discovery::LocalPods;
use super::health::describe;
use super::pods;
use crate::trigger::crash::{CrashContext, PlatformDeath};
use crate::units::Bytes as Size;

/// Longest wait for the kubelet to report a death in the pod's status.
pub const STATUS_WAIT: Duration = Duration::from_secs(10);
/// How much of the end of a container's log a crash bundle keeps.
pub const LOG_BYTES: usize = 256 << 10;
/// Longest the log may take to arrive.
const LOG_WAIT: Duration = Duration::from_secs(10);
/// A termination this long before the death the agent saw is an older one
/// (clocks of the node and the agent differ a little, restarts a lot).
const SAME_DEATH: Duration = Duration::from_secs(60);

pub struct PodDeaths {
    local: Arc<LocalPods>,
    client: kube::Client,
}

impl PodDeaths {
    pub fn new(local: Arc<LocalPods>, client: kube::Client) -> Self {
        PodDeaths { local, client }
    }

    async fn report(&self, target: &str, died_at: SystemTime) -> PlatformDeath {
        let deadline = Instant::now() + STATUS_WAIT;
        loop {
            let Some(pod) = self.local.by_target(target) else {
                return PlatformDeath::default();
            };
            let who = format!("{}/{}", pods::namespace(&pod), pods::name(&pod));
            if let Some(at) = &pod.metadata.deletion_timestamp {
                return PlatformDeath {
                    stopped_on_purpose: Some(format!("pod {who} is being deleted (since {})", at.0)),
                    ..PlatformDeath::default()
                };
            }
            if let Some(ended) = termination(&pod, died_at) {
                return self.with_log(&pod, ended).await;
            }
            if Instant::now() >= deadline {
                return PlatformDeath {
                    details: json!({"kubernetes": {
                        "namespace": pods::namespace(&pod),
                        "pod": pods::name(&pod),
                        "node": pods::node(&pod),
                        "container_status": format!("no termination in the pod's status within {} of the death", crate::units::Secs(STATUS_WAIT)),
                    }}),
                    ..PlatformDeath::default()
                };
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn with_log(&self, pod: &Pod, ended: Ended) -> PlatformDeath {
        let mut k = json!({
            "namespace": pods::namespace(pod),
            "pod": pods::name(pod),
            "node": pods::node(pod),
            "container": ended.container,
            "reason": ended.state.reason,
            "exit_code": ended.state.exit_code,
            "signal": ended.state.signal,
            "restart_count": ended.restart_count,
            "finished_at": ended.state.finished_at.as_ref().map(|t| t.0.to_string()),
            "message": ended.state.message,
        });
        let api: Api<Pod> = Api::namespaced(self.client.clone(), pods::namespace(pod));
        let lp = LogParams {
            container: Some(ended.container.clone()),
            previous: ended.restarted,
            // Enough lines for a panic's every goroutine; the bytes kept are
            // bounded below whatever the server sends.
            tail_lines: Some(20_000),
            ..LogParams::default()
        };
        let log = match tokio::time::timeout(LOG_WAIT, last_bytes(&api, pods::name(pod), &lp)).await {
            Ok(Ok(text)) => {
                k["log"] = json!({"bytes": text.len(), "previous": ended.restarted});
                Some(text)
            }
            Ok(Err(why)) => {
                k["log_error"] = json!(why);
                None
            }
            Err(_) => {
                k["log_error"] = json!(format!(
                    "the container's log did not arrive within {}",
                    crate::units::Secs(LOG_WAIT)
                ));
                None
            }
        };
        PlatformDeath {
            details: json!({"kubernetes": k}),
            stopped_on_purpose: None,
            log,
        }
    }
}

/// The end of a container's log, at most [`LOG_BYTES`], read as it streams.
async fn last_bytes(api: &Api<Pod>, pod: &str, lp: &LogParams) -> Result<Bytes, String> {
    let what = format!("reading the log of {pod} (pods/log)");
    let stream = api.log_stream(pod, lp).await.map_err(|e| describe(&what, &e).1)?;
    let (kept, dropped) = keep_end(stream, LOG_BYTES)
        .await
        .map_err(|e| format!("{what}: {e}"))?;
    if dropped > 0 {
        tracing::debug!(pod, dropped = %Size(dropped as u64), "kept the end of the container's log");
    }
    Ok(Bytes::from(kept))
}

/// Reads `r` to its end keeping only its last `limit` bytes (holding at most
/// twice that); returns them and how many were dropped before them.
async fn keep_end(
    mut r: impl futures_util::io::AsyncRead + Unpin,
    limit: usize,
) -> std::io::Result<(Vec<u8>, usize)> {
    let mut kept: Vec<u8> = Vec::with_capacity(limit.min(64 << 10));
    let mut buf = vec![0u8; 64 << 10];
    let mut dropped = 0usize;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > 2 * limit {
            let cut = kept.len() - limit;
            dropped += cut;
            kept.drain(..cut);
        }
    }
    if kept.len() > limit {
        let cut = kept.len() - limit;
        dropped += cut;
        kept.drain(..cut);
    }
    Ok((kept, dropped))
}

/// A container's end that the kubelet reported.
struct Ended {
    container: String,
    state: ContainerStateTerminated,
    restart_count: i32,
    /// The container was started again: its log of the death is the
    /// previous one.
    restarted: bool,
}

/// The latest container termination reported for `pod` that can be the
/// death seen at `died_at`.
fn termination(pod: &Pod, died_at: SystemTime) -> Option<Ended> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    let recent = |t: &ContainerStateTerminated| {
        t.finished_at.as_ref().is_none_or(|f| {
            let finished = SystemTime::from(f.0);
            finished + SAME_DEATH >= died_at
        })
    };
    statuses
        .iter()
        .filter_map(|c| {
            let current = c.state.as_ref().and_then(|s| s.terminated.clone());
            let (state, restarted) = match current {
                Some(t) if recent(&t) => (t, false),
                _ => (c.last_state.as_ref()?.terminated.clone().filter(recent)?, true),
            };
            Some(Ended {
                container: c.name.clone(),
                state,
                restart_count: c.restart_count,
                restarted,
            })
        })
        .max_by_key(|e| e.state.finished_at.as_ref().map(|t| t.0))
}

impl CrashContext for PodDeaths {
    fn knows(&self, target: &str) -> bool {
        self.local.by_target(target).is_some()
    }

    fn describe<'a>(&'a self, target: &'a str, died_at: SystemTime) -> BoxFuture<'a, PlatformDeath> {
        self.report(target, died_at).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn pod(statuses: Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "checkout-1", "namespace": "shop"},
            "status": {"phase": "Running", "containerStatuses": statuses},
        }))
        .expect("a pod")
    }

    #[tokio::test]
    async fn only_the_end_of_a_long_log_is_kept() {
        let log: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let (kept, dropped) = keep_end(futures_util::io::Cursor::new(log.clone()), 1000)
            .await
            .expect("read");
        assert_eq!(kept, log[log.len() - 1000..]);
        assert_eq!(dropped, log.len() - 1000);
        let (short, none) = keep_end(futures_util::io::Cursor::new(b"panic: boom".to_vec()), 1000)
            .await
            .expect("read");
        assert_eq!((short.as_slice(), none), (&b"panic: boom"[..], 0));
    }

    #[test]
    fn the_termination_that_can_be_the_death_is_found() {
        let died = SystemTime::now();
        let at = |ago: u64| humantime::format_rfc3339_seconds(died - Duration::from_secs(ago)).to_string();
        let restarted = pod(json!([{
            "name": "app", "ready": true, "restartCount": 3, "image": "x", "imageID": "x",
            "state": {"running": {"startedAt": at(1)}},
            "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137, "finishedAt": at(2)}},
        }]));
        let e = termination(&restarted, died).expect("the OOM kill");
        assert_eq!(e.state.reason.as_deref(), Some("OOMKilled"));
        assert_eq!(e.state.exit_code, 137);
        assert_eq!(e.restart_count, 3);
        assert!(e.restarted);
        let old = pod(json!([{
            "name": "app", "ready": true, "restartCount": 1, "image": "x", "imageID": "x",
            "lastState": {"terminated": {"reason": "Error", "exitCode": 2, "finishedAt": at(3600)}},
        }]));
        assert!(
            termination(&old, died).is_none(),
            "an hour-old restart is another death"
        );
        let finished = pod(json!([{
            "name": "app", "ready": false, "restartCount": 0, "image": "x", "imageID": "x",
            "state": {"terminated": {"reason": "Error", "exitCode": 3, "finishedAt": at(1)}},
        }]));
        let e = termination(&finished, died).expect("the container ended");
        assert_eq!(e.state.exit_code, 3);
        assert!(!e.restarted, "not started again: the log is the current one");
    }
}
