//! The keys of each kind of `[[triggers]]` entry: a latency or metric
//! trigger polls a URL ([`Poll`]); a trace trigger judges the summary of each
//! window of its target ([`TraceRule`]).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use url::Url;

use crate::config::condition::Condition;
use crate::config::table::{describe, Table};
use crate::config::trigger_defaults as defaults;
use crate::config::{redact_url, Problem, Target};
use crate::units::parse_duration;

#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    Latency(LatencyRule),
    Metric(MetricRule),
    Trace(TraceRule),
}

/// What a latency or metric trigger requests, and how often.
#[derive(Debug, Clone, PartialEq)]
pub struct Poll {
    /// The URL requested every `interval` (probed, or scraped).
    pub url: Url,
    pub interval: Duration,
    pub timeout: Duration,
}

impl Poll {
    /// The URL without credentials, for logs and manifests.
    pub fn public_url(&self) -> String {
        redact_url(&self.url)
    }
}

/// A trace trigger: fires on a window whose summary meets `when`.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceRule {
    pub when: Condition,
    /// Windows in a row that must meet it.
    pub consecutive: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LatencyRule {
    pub poll: Poll,
    pub threshold: Duration,
    /// Fire when this many probes in a row are slow.
    pub consecutive: Option<u32>,
    /// Fire when this quantile of the last `samples` probes is above the threshold.
    pub quantile: Option<f64>,
    /// Probes kept (the `M` of the quantile rule; also what the manifest shows).
    pub samples: usize,
    pub errors_count_as_slow: bool,
    pub timeouts_count_as_slow: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricRule {
    pub poll: Poll,
    /// The histogram's name, without `_bucket`.
    pub metric: String,
    /// Label equality matchers selecting the series.
    pub matchers: BTreeMap<String, String>,
    pub quantile: f64,
    /// In the histogram's unit (seconds for a duration histogram).
    pub threshold: f64,
    /// Fewer observations than this in an interval are not judged.
    pub min_count: u64,
    pub consecutive: u32,
}

pub(super) fn read_trace(
    t: &mut Table<'_>,
    target: Option<&Target>,
    problems: &mut Vec<Problem>,
) -> Option<Rule> {
    if let Some(x) = target.filter(|x| !x.summaries) {
        problems.push(t.problem(
            "target",
            format!(
                "{:?} has summaries off (its `summaries = false`); a trace trigger judges the summaries of its windows",
                x.name
            ),
        ));
    }
    let when = match t.string("when", problems) {
        Some(text) => Condition::parse(&text)
            .map_err(|why| problems.push(t.problem("when", why)))
            .ok(),
        None => {
            problems.push(
                t.problem(
                    "when",
                    "is required: a window summary field, an operator and a value, e.g. \"stw_max > 10ms\""
                        .into(),
                ),
            );
            None
        }
    };
    let consecutive = t.uint("consecutive", defaults::TRACE_CONSECUTIVE, problems);
    if consecutive == 0 || consecutive > 10_000 {
        problems.push(t.problem("consecutive", "must be between 1 and 10000".into()));
    }
    Some(Rule::Trace(TraceRule {
        when: when?,
        consecutive: consecutive.clamp(1, 10_000) as u32,
    }))
}

pub(super) fn read_latency(t: &mut Table<'_>, problems: &mut Vec<Problem>) -> Option<Rule> {
    let url = required_url(t, "url", problems);
    let threshold = required_duration(t, "threshold", problems);
    let interval = t.duration("interval", defaults::LATENCY_INTERVAL, problems);
    if interval < Duration::from_millis(10) {
        problems.push(t.problem("interval", "must be at least 10ms".into()));
    }
    let quantile = quantile(t, "quantile", problems);
    let consecutive = match (t.get("consecutive").is_some(), quantile.is_some()) {
        // With a quantile rule and no `consecutive`, only the quantile rule applies.
        (false, true) => None,
        _ => Some(t.uint("consecutive", defaults::LATENCY_CONSECUTIVE, problems)),
    };
    if consecutive.is_some_and(|c| c == 0 || c > 10_000) {
        problems.push(t.problem("consecutive", "must be between 1 and 10000".into()));
    }
    let samples = t.uint("samples", defaults::LATENCY_SAMPLES, problems);
    if samples == 0 || samples > 10_000 {
        problems.push(t.problem("samples", "must be between 1 and 10000".into()));
    }
    let errors_count_as_slow = t.bool("errors_count_as_slow", true, problems);
    let timeouts_count_as_slow = t.bool("timeouts_count_as_slow", true, problems);
    let threshold = threshold?;
    let timeout = t.duration(
        "timeout",
        (threshold * 2).max(defaults::LATENCY_MIN_TIMEOUT),
        problems,
    );
    if timeout <= threshold {
        problems.push(t.problem(
            "timeout",
            format!(
                "({}) must be longer than threshold ({}), or no answer could ever be seen as slow",
                humantime::format_duration(timeout),
                humantime::format_duration(threshold)
            ),
        ));
    }
    let rule = LatencyRule {
        poll: Poll {
            url: url?,
            interval,
            timeout,
        },
        threshold,
        consecutive: consecutive.map(|c| c.min(10_000) as u32),
        quantile,
        samples: samples.clamp(1, 10_000) as usize,
        errors_count_as_slow,
        timeouts_count_as_slow,
    };
    Some(Rule::Latency(rule))
}

pub(super) fn read_metric(
    t: &mut Table<'_>,
    target: Option<&Target>,
    problems: &mut Vec<Problem>,
) -> Option<Rule> {
    let url = match t.get("url") {
        Some(_) => required_url(t, "url", problems),
        // The pprof port often serves /metrics too (it does in the Go
        // fixture and in most services that mount both on one mux).
        None => target.map(|x| {
            let mut u = x.url.clone();
            u.set_path(defaults::METRIC_PATH);
            u.set_query(None);
            u
        }),
    };
    let metric = t.string("metric", problems);
    if metric.is_none() {
        problems.push(t.problem(
            "metric",
            "is required: the histogram's name, e.g. \"http_request_duration_seconds\"".into(),
        ));
    }
    let metric = metric.map(|m| m.strip_suffix("_bucket").map(str::to_string).unwrap_or(m));
    if let Some(m) = &metric {
        let ok = !m.is_empty()
            && m.bytes().enumerate().all(|(i, b)| {
                b.is_ascii_alphabetic() || b == b'_' || b == b':' || (i > 0 && b.is_ascii_digit())
            });
        if !ok {
            problems.push(t.problem("metric", format!("{m:?} is not a Prometheus metric name")));
        }
    }
    let matchers = t.labels("matchers", problems);
    let q = quantile(t, "quantile", problems).unwrap_or(defaults::METRIC_QUANTILE);
    let threshold = metric_threshold(t, "threshold", problems);
    let interval = t.duration("interval", defaults::METRIC_INTERVAL, problems);
    if interval < Duration::from_millis(100) {
        problems.push(t.problem("interval", "must be at least 100ms".into()));
    }
    let timeout = t.duration("timeout", defaults::METRIC_TIMEOUT.min(interval), problems);
    if timeout.is_zero() {
        problems.push(t.problem("timeout", "must be longer than 0s".into()));
    }
    let min_count = t.uint("min_count", defaults::METRIC_MIN_COUNT, problems);
    let consecutive = t.uint("consecutive", defaults::METRIC_CONSECUTIVE, problems);
    if consecutive == 0 || consecutive > 10_000 {
        problems.push(t.problem("consecutive", "must be between 1 and 10000".into()));
    }
    let rule = MetricRule {
        poll: Poll {
            url: url?,
            interval,
            timeout,
        },
        metric: metric?,
        matchers,
        quantile: q,
        threshold: threshold?,
        min_count,
        consecutive: consecutive.clamp(1, 10_000) as u32,
    };
    Some(Rule::Metric(rule))
}

fn required_url(t: &mut Table<'_>, key: &str, problems: &mut Vec<Problem>) -> Option<Url> {
    let Some(text) = t.string(key, problems) else {
        problems.push(t.problem(key, "is required: the URL to request".into()));
        return None;
    };
    match Url::parse(&text) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => Some(u),
        _ => {
            // As the user wrote it, unless it carries credentials.
            let shown = match Url::parse(&text) {
                Ok(u) if !u.username().is_empty() || u.password().is_some() => redact_url(&u),
                _ => text,
            };
            problems.push(t.problem(key, format!("{shown:?} must be an http:// or https:// URL")));
            None
        }
    }
}

fn required_duration(t: &mut Table<'_>, key: &str, problems: &mut Vec<Problem>) -> Option<Duration> {
    if t.get(key).is_none() {
        problems.push(t.problem(key, "is required, e.g. \"200ms\"".into()));
        return None;
    }
    let before = problems.len();
    let d = t.duration(key, Duration::ZERO, problems);
    (problems.len() == before).then_some(d)
}

/// `"p99"`, `"p99.9"`, `0.99` or `"0.99"`.
fn quantile(t: &mut Table<'_>, key: &str, problems: &mut Vec<Problem>) -> Option<f64> {
    let v = t.get(key)?;
    let q = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => {
            let s = s.trim();
            match s.strip_prefix(['p', 'P']) {
                Some(pct) => pct.parse::<f64>().ok().map(|p| p / 100.0),
                None => s.parse::<f64>().ok(),
            }
        }
        _ => None,
    };
    match q {
        Some(q) if q > 0.0 && q <= 1.0 => Some(q),
        _ => {
            problems.push(t.problem(
                key,
                format!(
                    "{} is not a quantile; write \"p50\", \"p90\", \"p99\" or a number in (0, 1]",
                    describe(v)
                ),
            ));
            None
        }
    }
}

/// A number in the histogram's unit, or a duration (seconds) for duration histograms.
fn metric_threshold(t: &mut Table<'_>, key: &str, problems: &mut Vec<Problem>) -> Option<f64> {
    let Some(v) = t.get(key) else {
        problems.push(t.problem(
            key,
            "is required: a number in the histogram's unit, or a duration like \"200ms\" for a seconds histogram"
                .into(),
        ));
        return None;
    };
    let parsed = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s
            .trim()
            .parse::<f64>()
            .ok()
            .or_else(|| parse_duration(s).ok().map(|d| d.as_secs_f64())),
        _ => None,
    };
    match parsed {
        Some(x) if x.is_finite() => Some(x),
        _ => {
            problems.push(t.problem(key, format!("{} is neither a number nor a duration", describe(v))));
            None
        }
    }
}
