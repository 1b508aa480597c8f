//! Latency probe trigger: requests a URL of the service every `interval` and fires when recent probes are slow.
//!
//! One probe is in flight at a time, on a client of its own (never the
//! collector's connection). A probe slower than `interval` delays the next;
//! nothing backs off, because the probes are the detector. Recent probes live
//! in a fixed ring and go into the manifest when the trigger fires.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ringbuf::traits::Observer;
use ringbuf::HeapRb;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::events::{self, ErrorLog};
use super::gate::Gate;
use crate::config::{LatencyRule, Poll, TriggerConfig};
use crate::snapshot::{Firing, TriggerKind};
use crate::units::rfc3339;
use crate::units::Secs;

/// A probe reads at most this much of the answer: the latency of a huge
/// page is not what it is there to measure.
const MAX_PROBE_BODY: usize = 1 << 20;

/// How one probe ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Ok {
        status: u16,
    },
    Timeout,
    /// `reason` is the metric label: connect, status, request, body.
    Error {
        reason: &'static str,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// When the request was sent.
    pub at: SystemTime,
    /// Until the answer was read, or the timeout.
    pub latency: Duration,
    pub outcome: Outcome,
}

/// A rule that held, and the value that made it hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    pub rule: &'static str,
    /// Seconds; infinite when every probe involved timed out or failed.
    pub observed: f64,
}

/// The probe history and the rules over it; no I/O, so it is tested alone.
pub struct Detector {
    rule: LatencyRule,
    probes: HeapRb<(Probe, bool)>,
    /// Slow probes in a row, up to now.
    streak: u32,
}

impl Detector {
    pub fn new(rule: LatencyRule) -> Self {
        let capacity = rule.samples.max(rule.consecutive.unwrap_or(0) as usize).max(1);
        Detector {
            rule,
            probes: HeapRb::new(capacity),
            streak: 0,
        }
    }

    /// Slow, fast, or (`None`) left out because errors or timeouts are
    /// configured not to count.
    fn judge(&self, p: &Probe) -> Option<bool> {
        match p.outcome {
            Outcome::Ok { .. } => Some(p.latency > self.rule.threshold),
            Outcome::Timeout => self.rule.timeouts_count_as_slow.then_some(true),
            Outcome::Error { .. } => self.rule.errors_count_as_slow.then_some(true),
        }
    }

    /// Records a probe and says whether a rule holds now.
    pub fn observe(&mut self, p: Probe) -> Option<Held> {
        let slow = self.judge(&p)?;
        self.streak = if slow { self.streak.saturating_add(1) } else { 0 };
        self.probes.push_overwrite((p, slow));
        if let Some(n) = self.rule.consecutive {
            if self.streak >= n {
                let fastest = self
                    .probes
                    .iter()
                    .rev()
                    .take(n as usize)
                    .map(|(p, _)| value(p))
                    .fold(f64::INFINITY, f64::min);
                return Some(Held {
                    rule: "consecutive",
                    observed: fastest,
                });
            }
        }
        if let Some(q) = self.rule.quantile {
            let m = self.rule.samples;
            if self.probes.occupied_len() >= m {
                let skip = self.probes.occupied_len() - m;
                let mut values: Vec<f64> = self.probes.iter().skip(skip).map(|(p, _)| value(p)).collect();
                let observed = nearest_rank(&mut values, q);
                if observed > self.rule.threshold.as_secs_f64() {
                    return Some(Held {
                        rule: "quantile",
                        observed,
                    });
                }
            }
        }
        None
    }

    pub fn reason(&self, held: &Held, url: &str) -> String {
        let threshold = Secs(self.rule.threshold);
        let shown = show(held.observed);
        match held.rule {
            "consecutive" => format!(
                "{} probes in a row of {url} slower than {threshold} (the fastest: {shown})",
                self.streak
            ),
            _ => format!(
                "p{} of the last {} probes of {url} is {shown}, above {threshold}",
                self.rule.quantile.unwrap_or(0.0) * 100.0,
                self.rule.samples
            ),
        }
    }

    /// What goes into the manifest: the rule, the value, and the probes held.
    pub fn details(&mut self, cfg: &TriggerConfig, held: &Held) -> Value {
        let r = &self.rule;
        let probes: Vec<Value> = self
            .probes
            .iter()
            .map(|(p, slow)| {
                let mut v = json!({
                    "at": rfc3339(p.at),
                    "latency_ms": p.latency.as_secs_f64() * 1e3,
                    "slow": slow,
                });
                match &p.outcome {
                    Outcome::Ok { status } => {
                        v["outcome"] = json!("ok");
                        v["status"] = json!(status);
                    }
                    Outcome::Timeout => v["outcome"] = json!("timeout"),
                    Outcome::Error { reason, message } => {
                        v["outcome"] = json!("error");
                        v["error"] = json!(format!("{reason}: {message}"));
                    }
                }
                v
            })
            .collect();
        json!({
            "trigger": cfg.name,
            "url": r.poll.public_url(),
            "rule": held.rule,
            "threshold_ms": r.threshold.as_secs_f64() * 1e3,
            "consecutive": r.consecutive,
            "quantile": r.quantile,
            "samples": r.samples,
            "observed_ms": held.observed.is_finite().then_some(held.observed * 1e3),
            "interval_ms": r.poll.interval.as_secs_f64() * 1e3,
            "timeout_ms": r.poll.timeout.as_secs_f64() * 1e3,
            "errors_count_as_slow": r.errors_count_as_slow,
            "timeouts_count_as_slow": r.timeouts_count_as_slow,
            "probes": probes,
        })
    }
}

/// A probe's latency for the rules: a timeout or error counted as slow is
/// "slower than anything".
fn value(p: &Probe) -> f64 {
    match p.outcome {
        Outcome::Ok { .. } => p.latency.as_secs_f64(),
        _ => f64::INFINITY,
    }
}

fn show(secs: f64) -> String {
    if secs.is_finite() {
        Secs(Duration::from_secs_f64(secs)).to_string()
    } else {
        "timeouts or errors".into()
    }
}

/// The nearest-rank quantile: the smallest value with at least `q` of the
/// values at or below it. No interpolation: with 20 probes, p99 is the slowest.
pub fn nearest_rank(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let rank = (q * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

/// The probe loop of one latency trigger, until `stop`.
pub async fn run(
    cfg: TriggerConfig,
    rule: LatencyRule,
    client: reqwest::Client,
    gate: Arc<Gate>,
    stop: CancellationToken,
) {
    let metrics = gate.metrics().clone();
    let poll = rule.poll.clone();
    let url = poll.public_url();
    info!(trigger = %cfg.name, target = %cfg.target, url = %url, interval = %Secs(poll.interval), threshold = %Secs(rule.threshold), "latency trigger probing");
    let mut detector = Detector::new(rule);
    let mut errors = ErrorLog::new(&cfg.name, &cfg.target);
    // After a snapshot (or a suppression) the rule is not judged again until
    // the cooldown is over: a long incident makes one bundle per cooldown,
    // not a stream of suppressed attempts.
    let mut quiet_until: Option<Instant> = None;
    let mut tick = tokio::time::interval(poll.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let probe = tokio::select! {
            p = probe_once(&client, &poll) => p,
            _ = stop.cancelled() => return,
        };
        match &probe.outcome {
            Outcome::Ok { .. } => {
                errors.succeeded();
                events::probe(&metrics, &cfg.name, &cfg.target, probe.latency);
            }
            Outcome::Timeout => {
                events::probe(&metrics, &cfg.name, &cfg.target, probe.latency);
                errors.failed(
                    &metrics,
                    "timeout",
                    &format!("probe of {url} got no answer within {}", Secs(poll.timeout)),
                );
            }
            Outcome::Error { reason, message } => {
                errors.failed(&metrics, reason, &format!("probe of {url} failed: {message}"))
            }
        }
        let Some(held) = detector.observe(probe) else {
            continue;
        };
        if quiet_until.is_some_and(|q| Instant::now() < q) {
            continue;
        }
        let firing = Firing {
            kind: TriggerKind::Latency,
            reason: format!("latency: {}", detector.reason(&held, &url)),
            fired_at: SystemTime::now(),
            details: detector.details(&cfg, &held),
            post_trigger: None,
        };
        match gate.fire_polled(&cfg, firing) {
            Some(q) => quiet_until = q,
            None => return,
        }
    }
}

async fn probe_once(client: &reqwest::Client, poll: &Poll) -> Probe {
    let at = SystemTime::now();
    let started = Instant::now();
    let outcome = match client.get(poll.url.clone()).send().await {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            let mut read = 0usize;
            let body = loop {
                match resp.chunk().await {
                    Ok(Some(c)) => {
                        read += c.len();
                        if read >= MAX_PROBE_BODY {
                            break Ok(());
                        }
                    }
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e),
                }
            };
            match body {
                Err(e) if e.is_timeout() => Outcome::Timeout,
                Err(e) => Outcome::Error {
                    reason: "body",
                    message: format!("answer cut short: {e}"),
                },
                Ok(()) if status >= 400 => Outcome::Error {
                    reason: "status",
                    message: format!("HTTP {status}"),
                },
                Ok(()) => Outcome::Ok { status },
            }
        }
        Err(e) if e.is_timeout() => Outcome::Timeout,
        Err(e) if e.is_connect() => Outcome::Error {
            reason: "connect",
            message: format!("cannot connect: {}", source_chain(&e)),
        },
        Err(e) => Outcome::Error {
            reason: "request",
            message: source_chain(&e),
        },
    };
    Probe {
        at,
        latency: started.elapsed(),
        outcome,
    }
}

/// reqwest's Display hides the cause ("error sending request"); the chain
/// says "connection refused".
pub fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(consecutive: Option<u32>, quantile: Option<f64>, samples: usize) -> LatencyRule {
        LatencyRule {
            poll: Poll {
                url: url::Url::parse("http://user:pw@127.0.0.1:1/slow").expect("url"),
                interval: Duration::from_millis(100),
                timeout: Duration::from_secs(1),
            },
            threshold: Duration::from_millis(200),
            consecutive,
            quantile,
            samples,
            errors_count_as_slow: true,
            timeouts_count_as_slow: true,
        }
    }

    fn ok(ms: u64) -> Probe {
        Probe {
            at: SystemTime::now(),
            latency: Duration::from_millis(ms),
            outcome: Outcome::Ok { status: 200 },
        }
    }

    fn err() -> Probe {
        Probe {
            at: SystemTime::now(),
            latency: Duration::from_millis(1),
            outcome: Outcome::Error {
                reason: "connect",
                message: "connection refused".into(),
            },
        }
    }

    fn timeout() -> Probe {
        Probe {
            at: SystemTime::now(),
            latency: Duration::from_secs(1),
            outcome: Outcome::Timeout,
        }
    }

    #[test]
    fn consecutive_rule_needs_an_unbroken_run() {
        let mut d = Detector::new(rule(Some(3), None, 5));
        assert_eq!(d.observe(ok(300)), None);
        assert_eq!(d.observe(ok(300)), None);
        assert_eq!(d.observe(ok(100)), None, "a fast probe breaks the run");
        assert_eq!(d.observe(ok(250)), None);
        assert_eq!(d.observe(ok(400)), None);
        let held = d.observe(ok(300)).expect("three in a row");
        assert_eq!(held.rule, "consecutive");
        assert!((held.observed - 0.25).abs() < 1e-9, "the fastest of the run");
        assert_eq!(d.observe(ok(200)), None, "exactly the threshold is not slow");
    }

    #[test]
    fn timeouts_and_errors_count_as_slow_unless_configured_otherwise() {
        let mut d = Detector::new(rule(Some(2), None, 5));
        assert_eq!(d.observe(timeout()), None);
        let held = d.observe(err()).expect("timeout + error are two slow probes");
        assert!(held.observed.is_infinite());
        assert!(d.reason(&held, "u").contains("timeouts or errors"));

        let mut r = rule(Some(2), None, 5);
        r.errors_count_as_slow = false;
        let mut d = Detector::new(r);
        assert_eq!(d.observe(ok(300)), None);
        assert_eq!(d.observe(err()), None, "ignored: neither slow nor fast");
        assert!(d.observe(ok(300)).is_some(), "the error did not break the run");
        let details = d.details(
            &test_cfg(),
            &Held {
                rule: "consecutive",
                observed: 0.3,
            },
        );
        assert_eq!(details["probes"].as_array().map(Vec::len), Some(2), "{details}");

        let mut r = rule(Some(1), None, 5);
        r.timeouts_count_as_slow = false;
        let mut d = Detector::new(r);
        assert_eq!(d.observe(timeout()), None);
    }

    #[test]
    fn quantile_rule_waits_for_m_probes_then_judges_the_last_m() {
        let mut d = Detector::new(rule(None, Some(0.5), 4));
        assert_eq!(d.observe(ok(500)), None);
        assert_eq!(d.observe(ok(500)), None);
        assert_eq!(d.observe(ok(500)), None, "only 3 of 4 probes");
        let held = d
            .observe(ok(10))
            .expect("p50 of [10,500,500,500] is 500ms (nearest rank)");
        assert_eq!(held.rule, "quantile");
        assert!((held.observed - 0.5).abs() < 1e-9);
        assert!(d
            .reason(&held, "u")
            .starts_with("p50 of the last 4 probes of u is 500ms"));
        // The oldest probe leaves: p50 of [10,10,500,500] is 10ms.
        assert_eq!(d.observe(ok(10)), None);
    }

    #[test]
    fn both_rules_can_apply_together() {
        let mut d = Detector::new(rule(Some(2), Some(0.99), 3));
        assert_eq!(d.observe(ok(10)), None);
        assert_eq!(d.observe(ok(10)), None);
        let held = d.observe(ok(900)).expect("p99 of 3 probes is the slowest");
        assert_eq!(held.rule, "quantile");
        let held = d.observe(ok(900)).expect("two in a row");
        assert_eq!(held.rule, "consecutive");
    }

    #[test]
    fn nearest_rank_quantiles() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(nearest_rank(&mut v, 0.5), 50.0);
        assert_eq!(nearest_rank(&mut v, 0.9), 90.0);
        assert_eq!(nearest_rank(&mut v, 0.99), 99.0);
        assert_eq!(nearest_rank(&mut v, 1.0), 100.0);
        assert_eq!(nearest_rank(&mut [3.0, f64::INFINITY, 1.0], 0.5), 3.0);
        assert!(nearest_rank(&mut [], 0.5).is_nan());
    }

    #[test]
    fn details_hold_the_rule_and_every_probe() {
        let mut d = Detector::new(rule(Some(2), None, 3));
        for p in [ok(10), ok(300), timeout()] {
            d.observe(p);
        }
        let held = Held {
            rule: "consecutive",
            observed: 0.3,
        };
        let v = d.details(&test_cfg(), &held);
        assert_eq!(v["rule"], "consecutive");
        assert_eq!(v["threshold_ms"], 200.0);
        assert_eq!(v["observed_ms"], 300.0);
        let probes = v["probes"].as_array().expect("probes");
        assert_eq!(probes.len(), 3);
        assert_eq!(probes[0]["outcome"], "ok");
        assert_eq!(probes[0]["slow"], false);
        assert_eq!(probes[2]["outcome"], "timeout");
        assert_eq!(probes[2]["slow"], true);
        assert_eq!(v["url"], "http://127.0.0.1:1/slow");
    }

    fn test_cfg() -> TriggerConfig {
        TriggerConfig {
            name: "latency-x".into(),
            target: "x".into(),
            cooldown: Duration::from_secs(60),
            rule: crate::config::Rule::Latency(rule(Some(2), None, 3)),
        }
    }
}
