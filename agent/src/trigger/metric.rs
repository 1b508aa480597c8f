//! Metric threshold trigger: scrapes the service's Prometheus endpoint and fires when a histogram quantile over the last interval is above the threshold.
//!
//! The quantile is computed like PromQL's `histogram_quantile(q, sum by (le)
//! (increase(metric_bucket{matchers}[interval])))`: per series, the bucket
//! counts of this scrape minus those of the last one (a counter that went
//! down was reset, so its new value is the increase), summed over the
//! matching series, then interpolated linearly inside the bucket that holds
//! the rank.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::events::{self, ErrorLog};
use super::gate::Gate;
use super::latency::source_chain;
use super::promtext;
use crate::config::{MetricRule, Poll, TriggerConfig};
use crate::snapshot::{Firing, TriggerKind};
use crate::units::{Bytes, Secs};

/// Larger metrics answers are refused: a scrape must not balloon the agent.
const MAX_SCRAPE_BYTES: usize = 16 << 20;

/// Cumulative counts of one histogram series, `(le, count)` sorted by `le`.
pub type Buckets = Vec<(f64, f64)>;

/// The matching series of one scrape, keyed by their labels without `le`.
pub type Series = BTreeMap<String, Buckets>;

/// Picks the `<metric>_bucket` series whose labels satisfy every matcher (a
/// matcher `k = ""` also matches a series without `k`, as in PromQL).
pub fn select<'a>(text: &'a str, rule: &MetricRule) -> (Series, promtext::Parsed<'a>) {
    let bucket_name = format!("{}_bucket", rule.metric);
    let parsed = promtext::parse(text, |n| n == bucket_name);
    let mut series: Series = BTreeMap::new();
    for s in &parsed.samples {
        let Some(le) = s.label("le").and_then(parse_le) else {
            continue;
        };
        let matches = rule.matchers.iter().all(|(k, v)| s.label(k).unwrap_or("") == v);
        if !matches {
            continue;
        }
        let mut key: Vec<String> = s
            .labels
            .iter()
            .filter(|(k, _)| *k != "le")
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        key.sort();
        series.entry(key.join(",")).or_default().push((le, s.value));
    }
    for b in series.values_mut() {
        b.sort_by(|x, y| x.0.total_cmp(&y.0));
        b.dedup_by(|x, y| x.0 == y.0);
    }
    (series, parsed)
}

fn parse_le(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        _ => text.parse::<f64>().ok().filter(|v| !v.is_nan()),
    }
}

/// The increase of one series between two scrapes. A bucket that went down,
/// or a changed bucket layout, means the process restarted: everything it
/// counted since is the increase.
pub fn delta(prev: &Buckets, cur: &Buckets) -> Buckets {
    let same_layout = prev.len() == cur.len() && prev.iter().zip(cur).all(|(a, b)| a.0 == b.0);
    if !same_layout || prev.iter().zip(cur).any(|(a, b)| b.1 < a.1) {
        return cur.clone();
    }
    prev.iter().zip(cur).map(|(a, b)| (b.0, b.1 - a.1)).collect()
}

/// Sums buckets of the same `le` across series.
pub fn sum(all: impl IntoIterator<Item = Buckets>) -> Buckets {
    let mut out: Buckets = Vec::new();
    for b in all {
        for (le, count) in b {
            match out.iter_mut().find(|(l, _)| *l == le) {
                Some(slot) => slot.1 += count,
                None => out.push((le, count)),
            }
        }
    }
    out.sort_by(|x, y| x.0.total_cmp(&y.0));
    out
}

/// PromQL's `histogram_quantile` on cumulative buckets. `None` without a
/// `+Inf` bucket or without observations. A rank in the `+Inf` bucket gives
/// the highest finite bound, as Prometheus does.
pub fn histogram_quantile(q: f64, buckets: &Buckets) -> Option<f64> {
    let (last_le, total) = *buckets.last()?;
    if last_le != f64::INFINITY || total.is_nan() || total <= 0.0 || buckets.len() < 2 {
        return None;
    }
    // Scrapes are not atomic across buckets in every client; a count lower
    // than the bucket below it is read as equal to it.
    let mut counts = Vec::with_capacity(buckets.len());
    let mut running = 0.0f64;
    for (_, c) in buckets {
        running = running.max(*c);
        counts.push(running);
    }
    let rank = q * total;
    let i = counts.iter().position(|c| *c >= rank)?;
    if i == buckets.len() - 1 {
        return Some(buckets[i - 1].0);
    }
    let upper = buckets[i].0;
    let (lower, below) = if i == 0 {
        if upper <= 0.0 {
            return Some(upper);
        }
        (0.0, 0.0)
    } else {
        (buckets[i - 1].0, counts[i - 1])
    };
    let inside = counts[i] - below;
    if inside <= 0.0 {
        return Some(upper);
    }
    Some(lower + (upper - lower) * (rank - below) / inside)
}

/// The increase since the last scrape, over series seen both times. Series
/// new in this scrape have no baseline yet and wait for the next one.
pub fn increase(prev: &Series, cur: &Series) -> (Buckets, usize) {
    let deltas: Vec<Buckets> = cur
        .iter()
        .filter_map(|(k, b)| prev.get(k).map(|p| delta(p, b)))
        .collect();
    let n = deltas.len();
    (sum(deltas), n)
}

fn show_le(le: f64) -> String {
    if le == f64::INFINITY {
        "+Inf".into()
    } else {
        le.to_string()
    }
}

fn selector(rule: &MetricRule) -> String {
    let m: Vec<String> = rule.matchers.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{}{{{}}}", rule.metric, m.join(","))
}

/// The scrape loop of one metric trigger, until `stop`.
pub async fn run(
    cfg: TriggerConfig,
    rule: MetricRule,
    client: reqwest::Client,
    gate: Arc<Gate>,
    stop: CancellationToken,
) {
    let metrics = gate.metrics().clone();
    let url = rule.poll.public_url();
    let sel = selector(&rule);
    info!(trigger = %cfg.name, target = %cfg.target, url = %url, series = %sel, interval = %Secs(rule.poll.interval), "metric trigger scraping");
    let mut errors = ErrorLog::new(&cfg.name, &cfg.target);
    let mut prev: Option<(Series, Instant)> = None;
    let mut streak = 0u32;
    let mut quiet_until: Option<Instant> = None;
    let mut tick = tokio::time::interval(rule.poll.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let text = tokio::select! {
            t = scrape(&client, &rule.poll) => t,
            _ = stop.cancelled() => return,
        };
        let text = match text {
            Ok(t) => t,
            Err((reason, message)) => {
                errors.failed(&metrics, reason, &format!("scrape of {url} failed: {message}"));
                continue;
            }
        };
        let (cur, parsed) = select(&text, &rule);
        if cur.is_empty() {
            let hint = match parsed.first_error {
                Some(e) if parsed.samples.is_empty() => format!(" (the answer is not Prometheus text: {e})"),
                _ => String::new(),
            };
            errors.failed(
                &metrics,
                "no_series",
                &format!("{url} has no series {sel} with an `le` label; check `metric` and `matchers`{hint}"),
            );
            continue;
        }
        errors.succeeded();
        let now = Instant::now();
        let judged = prev
            .as_ref()
            .map(|(before, at)| (increase(before, &cur), now.duration_since(*at)));
        prev = Some((cur, now));
        let Some(((buckets, series), span)) = judged else {
            continue;
        };
        let count = buckets.last().map_or(0.0, |b| b.1);
        if count < rule.min_count as f64 {
            streak = 0;
            continue;
        }
        let Some(value) = histogram_quantile(rule.quantile, &buckets) else {
            continue;
        };
        events::observed(&metrics, &cfg.name, &cfg.target, value);
        if value <= rule.threshold {
            streak = 0;
            continue;
        }
        streak += 1;
        if streak < rule.consecutive || quiet_until.is_some_and(|q| now < q) {
            continue;
        }
        let reason = format!(
            "metric: p{} of {sel} over the last {} is {value:.4}, above {} ({count} observations{})",
            rule.quantile * 100.0,
            Secs(span),
            rule.threshold,
            if rule.consecutive > 1 {
                format!(", {streak} intervals in a row")
            } else {
                String::new()
            }
        );
        let details = json!({
            "trigger": cfg.name,
            "url": url,
            "metric": rule.metric,
            "matchers": rule.matchers,
            "quantile": rule.quantile,
            "threshold": rule.threshold,
            "observed": value,
            "count": count,
            "series": series,
            "span_seconds": span.as_secs_f64(),
            "consecutive": rule.consecutive,
            "buckets": buckets.iter().map(|(le, c)| json!({"le": show_le(*le), "count": c})).collect::<Vec<Value>>(),
        });
        let firing = Firing {
            kind: TriggerKind::Metric,
            reason,
            fired_at: SystemTime::now(),
            details,
            post_trigger: None,
        };
        match gate.fire_polled(&cfg, firing) {
            Some(q) => quiet_until = q,
            None => return,
        }
    }
}

async fn scrape(client: &reqwest::Client, poll: &Poll) -> Result<String, (&'static str, String)> {
    let mut resp = client
        .get(poll.url.clone())
        // The classic text format: every client library serves it.
        .header(reqwest::header::ACCEPT, "text/plain;version=0.0.4")
        .send()
        .await
        .map_err(|e| {
            let reason = if e.is_timeout() {
                "timeout"
            } else if e.is_connect() {
                "connect"
            } else {
                "request"
            };
            (reason, source_chain(&e))
        })?;
    let status = resp.status();
    if !status.is_success() {
        return Err(("status", format!("HTTP {}", status.as_u16())));
    }
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                if body.len() + c.len() > MAX_SCRAPE_BYTES {
                    return Err((
                        "body",
                        format!("answer is larger than {}", Bytes(MAX_SCRAPE_BYTES as u64)),
                    ));
                }
                body.extend_from_slice(&c);
            }
            Ok(None) => break,
            Err(e) if e.is_timeout() => return Err(("timeout", source_chain(&e))),
            Err(e) => return Err(("body", format!("answer cut short: {}", source_chain(&e)))),
        }
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(matchers: &[(&str, &str)]) -> MetricRule {
        MetricRule {
            poll: Poll {
                url: url::Url::parse("http://127.0.0.1:1/metrics").expect("url"),
                interval: std::time::Duration::from_secs(15),
                timeout: std::time::Duration::from_secs(5),
            },
            metric: "req_seconds".into(),
            matchers: matchers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            quantile: 0.9,
            threshold: 0.2,
            min_count: 1,
            consecutive: 1,
        }
    }

    fn b(pairs: &[(f64, f64)]) -> Buckets {
        pairs.to_vec()
    }

    const INF: f64 = f64::INFINITY;

    #[test]
    fn quantile_interpolates_like_prometheus() {
        // 10 observations: 5 <= 0.1, 3 in (0.1, 0.25], 2 in (0.25, 0.5].
        let h = b(&[(0.1, 5.0), (0.25, 8.0), (0.5, 10.0), (INF, 10.0)]);
        let p50 = histogram_quantile(0.5, &h).expect("p50");
        assert!(
            (p50 - 0.1).abs() < 1e-9,
            "rank 5 is the top of the first bucket: {p50}"
        );
        let p90 = histogram_quantile(0.9, &h).expect("p90");
        assert!(
            (p90 - 0.375).abs() < 1e-9,
            "rank 9 is half way into (0.25, 0.5]: {p90}"
        );
        let p20 = histogram_quantile(0.2, &h).expect("p20");
        assert!((p20 - 0.04).abs() < 1e-9, "the first bucket starts at 0: {p20}");
    }

    #[test]
    fn quantile_edge_cases() {
        assert_eq!(
            histogram_quantile(0.99, &b(&[(0.1, 1.0), (INF, 10.0)])),
            Some(0.1),
            "a rank in +Inf gives the highest finite bound"
        );
        assert_eq!(
            histogram_quantile(0.5, &b(&[(0.1, 0.0), (INF, 0.0)])),
            None,
            "no observations"
        );
        assert_eq!(
            histogram_quantile(0.5, &b(&[(0.1, 1.0), (1.0, 2.0)])),
            None,
            "no +Inf bucket"
        );
        assert_eq!(histogram_quantile(0.5, &b(&[(INF, 3.0)])), None, "only +Inf");
        assert_eq!(histogram_quantile(0.5, &b(&[])), None);
        assert_eq!(
            histogram_quantile(0.5, &b(&[(-1.0, 2.0), (INF, 2.0)])),
            Some(-1.0)
        );
        // Non-monotonic counts do not produce a value outside the buckets.
        let v = histogram_quantile(0.5, &b(&[(0.1, 6.0), (0.2, 4.0), (INF, 10.0)])).expect("v");
        assert!((0.0..=0.2).contains(&v), "{v}");
    }

    #[test]
    fn increase_handles_counter_resets_and_new_series() {
        let prev: Series = BTreeMap::from([
            ("a".to_string(), b(&[(0.1, 100.0), (INF, 120.0)])),
            ("b".to_string(), b(&[(0.1, 50.0), (INF, 60.0)])),
        ]);
        let cur: Series = BTreeMap::from([
            // +10 fast, +5 slow
            ("a".to_string(), b(&[(0.1, 110.0), (INF, 135.0)])),
            // restarted: 2 fast, 3 slow since
            ("b".to_string(), b(&[(0.1, 2.0), (INF, 5.0)])),
            // new: no baseline, left out
            ("c".to_string(), b(&[(0.1, 1000.0), (INF, 1000.0)])),
        ]);
        let (sum, n) = increase(&prev, &cur);
        assert_eq!(n, 2);
        assert_eq!(sum, b(&[(0.1, 12.0), (INF, 20.0)]));
    }

    #[test]
    fn a_changed_bucket_layout_counts_as_a_restart() {
        let d = delta(&b(&[(0.1, 5.0), (INF, 9.0)]), &b(&[(0.2, 1.0), (INF, 2.0)]));
        assert_eq!(d, b(&[(0.2, 1.0), (INF, 2.0)]));
    }

    #[test]
    fn select_applies_matchers_and_groups_series() {
        let text = r#"
req_seconds_bucket{handler="slow",code="200",le="0.1"} 1
req_seconds_bucket{handler="slow",code="200",le="+Inf"} 3
req_seconds_bucket{handler="slow",code="500",le="0.1"} 0
req_seconds_bucket{handler="slow",code="500",le="+Inf"} 1
req_seconds_bucket{handler="work",code="200",le="+Inf"} 9
req_seconds_bucket{handler="slow",code="200"} 4
req_seconds_count{handler="slow",code="200"} 3
other_bucket{handler="slow",le="+Inf"} 7
"#;
        let (series, _) = select(text, &rule(&[("handler", "slow")]));
        assert_eq!(series.len(), 2, "{series:?}");
        let all: Buckets = sum(series.into_values());
        assert_eq!(all, b(&[(0.1, 1.0), (INF, 4.0)]));
        let (series, _) = select(text, &rule(&[("handler", "slow"), ("code", "500")]));
        assert_eq!(series.len(), 1);
        let (series, _) = select(text, &rule(&[("missing", "")]));
        assert_eq!(series.len(), 3, "an empty matcher matches an absent label");
        let (series, parsed) = select("<html>nope</html>", &rule(&[]));
        assert!(series.is_empty());
        assert_eq!(parsed.bad_lines, 1);
    }
}
