//! Reads `[[triggers]]`, `[webhooks]` and `[trigger_limits]` into typed settings, each problem with its key path.
//!
//! This file: the limits, what every trigger entry shares and the defaults;
//! each kind's own keys are read in `rules`, `[webhooks]` in `webhooks`.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::config::rules;
pub use crate::config::rules::{LatencyRule, MetricRule, Poll, Rule, TraceRule};
use crate::config::table::Table;
pub use crate::config::webhooks::WebhookConfig;
use crate::config::{valid_name, Problem, Target};

use crate::config::trigger_defaults as defaults;

/// Everything the trigger module reads from the config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    pub triggers: Vec<TriggerConfig>,
    pub webhooks: WebhookConfig,
    pub limits: Limits,
}

/// `[trigger_limits]`: what keeps automatic triggers from flooding the disk.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Default per-target cooldown (webhooks, and triggers without their own).
    pub cooldown: Duration,
    /// At most this many automatic bundles, all targets together...
    pub max_fires: u64,
    /// ...in any sliding period this long.
    pub per: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            cooldown: defaults::COOLDOWN,
            max_fires: defaults::MAX_FIRES,
            per: defaults::PER,
        }
    }
}

/// One `[[triggers]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerConfig {
    /// Names the trigger in logs and metric labels; `<kind>-<target>` unless set.
    pub name: String,
    pub target: String,
    pub cooldown: Duration,
    pub rule: Rule,
}

impl TriggerConfig {
    pub fn kind(&self) -> &'static str {
        match self.rule {
            Rule::Latency(_) => "latency",
            Rule::Metric(_) => "metric",
            Rule::Trace(_) => "trace",
        }
    }
}

/// Reads the trigger sections of the root table.
pub fn read(root: &mut Table<'_>, targets: &[Target], problems: &mut Vec<Problem>) -> Settings {
    let mut lt = root.table("trigger_limits", problems);
    let limits = Limits {
        cooldown: lt.duration("cooldown", defaults::COOLDOWN, problems),
        max_fires: lt.uint("max_fires", defaults::MAX_FIRES, problems),
        per: lt.duration("per", defaults::PER, problems),
    };
    if limits.max_fires == 0 {
        problems.push(lt.problem(
            "max_fires",
            "must be at least 1 (remove the triggers to turn them off)".into(),
        ));
    }
    if limits.per.is_zero() {
        problems.push(lt.problem("per", "must be longer than 0s".into()));
    }
    lt.finish(problems);

    let webhooks = super::webhooks::read(root.table("webhooks", problems), problems);

    let mut triggers: Vec<TriggerConfig> = root
        .tables("triggers", problems)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|t| read_trigger(t, targets, &limits, problems))
        .collect();
    let mut seen = BTreeSet::new();
    for (i, t) in triggers.iter_mut().enumerate() {
        if !seen.insert(t.name.clone()) {
            problems.push(Problem {
                path: format!("triggers[{i}].name"),
                message: format!(
                    "{:?} is used by an earlier trigger; give each trigger of the same kind and target its own `name`",
                    t.name
                ),
            });
        }
    }
    Settings {
        triggers,
        webhooks,
        limits,
    }
}

fn read_trigger(
    mut t: Table<'_>,
    targets: &[Target],
    limits: &Limits,
    problems: &mut Vec<Problem>,
) -> Option<TriggerConfig> {
    let kind = t.string("kind", problems);
    let target_name = t.string("target", problems);
    let target = match &target_name {
        None => {
            problems.push(t.problem(
                "target",
                "is required: the name of the [[targets]] entry to snapshot".into(),
            ));
            None
        }
        Some(name) => {
            let found = targets.iter().find(|x| &x.name == name);
            if found.is_none() {
                let known: Vec<&str> = targets.iter().map(|x| x.name.as_str()).collect();
                problems.push(t.problem(
                    "target",
                    format!(
                        "{name:?} is not a configured target (known: {})",
                        known.join(", ")
                    ),
                ));
            }
            found
        }
    };
    let cooldown = t.duration("cooldown", limits.cooldown, problems);
    let name = t.string("name", problems);
    let rule = match kind.as_deref() {
        Some("latency") => rules::read_latency(&mut t, problems),
        Some("metric") => rules::read_metric(&mut t, target, problems),
        Some("trace") => rules::read_trace(&mut t, target, problems),
        Some(other) => {
            problems.push(t.problem(
                "kind",
                format!(
                    "{other:?} is not one of \"latency\", \"metric\", \"trace\" (webhooks need no [[triggers]] entry)"
                ),
            ));
            return None;
        }
        None => {
            problems.push(t.problem("kind", "is required: \"latency\", \"metric\" or \"trace\"".into()));
            return None;
        }
    };
    let name = match (name, target) {
        (Some(n), _) => Some(n),
        (None, Some(x)) => Some(format!("{}-{}", kind.as_deref().unwrap_or_default(), x.name)),
        (None, None) => None,
    };
    if let Some(n) = name.as_ref().filter(|n| !valid_name(n)) {
        problems.push(t.problem(
            "name",
            format!("{n:?} must be 1-64 letters, digits, '.', '_' or '-'"),
        ));
    }
    t.finish(problems);
    let rule = rule?;
    let (target, name) = (target?, name?);
    Some(TriggerConfig {
        name,
        target: target.name.clone(),
        cooldown,
        rule,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{load_str, Secret};
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;

    fn load(toml: &str) -> Result<crate::config::Config, String> {
        load_str(toml, &BTreeMap::new()).map_err(|e| e.to_string())
    }

    const TARGET: &str = "[[targets]]\nname = \"checkout\"\nurl = \"http://127.0.0.1:6060\"\n";

    #[test]
    fn design_example_reads_with_defaults_for_the_rest() {
        let c = load(&format!(
            "{TARGET}
            [[triggers]]
            kind = \"latency\"
            target = \"checkout\"
            url = \"http://127.0.0.1:8080/slow\"
            interval = \"500ms\"
            threshold = \"200ms\"
            consecutive = 3
            cooldown = \"60s\"
            "
        ))
        .expect("valid");
        let s = &c.triggers;
        assert_eq!(s.triggers.len(), 1);
        let t = &s.triggers[0];
        assert_eq!(t.name, "latency-checkout");
        assert_eq!(t.cooldown, Duration::from_secs(60));
        let Rule::Latency(r) = &t.rule else {
            panic!("latency rule")
        };
        assert_eq!(r.poll.interval, Duration::from_millis(500));
        assert_eq!(r.poll.timeout, Duration::from_secs(1), "max(2 x threshold, 1s)");
        assert_eq!(r.consecutive, Some(3));
        assert_eq!(r.quantile, None);
        assert_eq!(r.samples, 20);
        assert!(r.errors_count_as_slow && r.timeouts_count_as_slow);
        assert_eq!(s.limits.max_fires, defaults::MAX_FIRES);
        assert_eq!(s.webhooks.match_labels, ["service", "pod", "instance", "job"]);
    }

    #[test]
    fn metric_trigger_defaults_its_url_to_the_targets_metrics() {
        let c = load(&format!(
            "{TARGET}
            [trigger_limits]
            cooldown = \"2m\"
            [[triggers]]
            kind = \"metric\"
            target = \"checkout\"
            metric = \"http_request_duration_seconds_bucket\"
            matchers = {{ handler = \"slow\" }}
            quantile = \"p90\"
            threshold = \"250ms\"
            "
        ))
        .expect("valid");
        let t = &c.triggers.triggers[0];
        assert_eq!(t.cooldown, Duration::from_secs(120), "from [trigger_limits]");
        let Rule::Metric(r) = &t.rule else {
            panic!("metric rule")
        };
        assert_eq!(r.poll.url.as_str(), "http://127.0.0.1:6060/metrics");
        assert_eq!(r.metric, "http_request_duration_seconds");
        assert_eq!(r.matchers.get("handler").map(String::as_str), Some("slow"));
        assert!((r.quantile - 0.9).abs() < 1e-12);
        assert!((r.threshold - 0.25).abs() < 1e-12);
        assert_eq!(r.min_count, defaults::METRIC_MIN_COUNT);
    }

    #[test]
    fn quantile_alone_turns_the_consecutive_rule_off() {
        let c = load(&format!(
            "{TARGET}
            [[triggers]]
            kind = \"latency\"
            target = \"checkout\"
            url = \"http://127.0.0.1:8080/\"
            threshold = \"1s\"
            quantile = 0.5
            samples = 5
            "
        ))
        .expect("valid");
        let Rule::Latency(r) = &c.triggers.triggers[0].rule else {
            panic!("latency")
        };
        assert_eq!((r.consecutive, r.quantile, r.samples), (None, Some(0.5), 5));
        assert_eq!(r.poll.timeout, Duration::from_secs(2));
    }

    #[test]
    fn every_trigger_problem_names_its_key() {
        let err = load(&format!(
            "{TARGET}
            [webhooks]
            basic_auth_user = \"am\"
            grafana_hmac_header = \"bad header\"
            [trigger_limits]
            max_fires = 0
            [[triggers]]
            kind = \"latency\"
            target = \"nope\"
            url = \"ftp://x\"
            threshold = \"2s\"
            timeout = \"1s\"
            quantile = \"p101\"
            [[triggers]]
            kind = \"metric\"
            target = \"checkout\"
            threshold = \"soon\"
            treshold = 1
            [[triggers]]
            kind = \"webhook\"
            target = \"checkout\"
            "
        ))
        .unwrap_err();
        for want in [
            "webhooks.basic_auth_user: basic auth needs both",
            "webhooks.grafana_hmac_header: \"bad header\" is not a valid HTTP header name",
            "trigger_limits.max_fires: must be at least 1",
            "triggers[0].target: \"nope\" is not a configured target (known: checkout)",
            "triggers[0].url: \"ftp://x\" must be an http:// or https:// URL",
            "triggers[0].timeout: (1s) must be longer than threshold (2s)",
            "triggers[0].quantile: \"p101\" is not a quantile",
            "triggers[1].metric: is required",
            "triggers[1].threshold: \"soon\" is neither a number nor a duration",
            "triggers[1].treshold: unknown key",
            "triggers[2].kind: \"webhook\" is not one of",
        ] {
            assert!(err.contains(want), "missing {want:?} in:\n{err}");
        }
    }

    #[test]
    fn a_trace_trigger_reads_its_condition_in_the_field_s_unit() {
        let c = load(&format!(
            "{TARGET}
            [[triggers]]
            kind = \"trace\"
            target = \"checkout\"
            when = \"stw_max > 10ms\"
            cooldown = \"60s\"
            "
        ))
        .expect("valid");
        let t = &c.triggers.triggers[0];
        assert_eq!((t.name.as_str(), t.kind()), ("trace-checkout", "trace"));
        let Rule::Trace(r) = &t.rule else {
            panic!("trace rule")
        };
        assert_eq!(
            (r.when.field.name, r.when.threshold, r.consecutive),
            ("stw_max_ns", 10e6, 1)
        );
    }

    #[test]
    fn every_trace_trigger_problem_names_its_key() {
        let err = load(&format!(
            "{TARGET}
            summaries = false
            [[targets]]
            name = \"other\"
            [[triggers]]
            kind = \"trace\"
            target = \"checkout\"
            when = \"stw_mux > 10ms\"
            [[triggers]]
            kind = \"trace\"
            target = \"other\"
            when = \"stw_max => 10ms\"
            url = \"http://127.0.0.1:1/\"
            [[triggers]]
            kind = \"trace\"
            target = \"other\"
            name = \"t3\"
            when = \"runnable_max > many\"
            consecutive = 0
            [[triggers]]
            kind = \"trace\"
            target = \"other\"
            name = \"t4\"
            "
        ))
        .unwrap_err();
        for want in [
            "triggers[0].target: \"checkout\" has summaries off",
            "triggers[0].when: \"stw_mux > 10ms\": \"stw_mux\" is not a window summary field; one of: events, gc_cycles,",
            "triggers[1].when: \"stw_max => 10ms\": \"=>\" is not an operator",
            "triggers[1].url: unknown key",
            "triggers[2].when: \"runnable_max > many\": \"many\" is not a number",
            "triggers[2].consecutive: must be between 1 and 10000",
            "triggers[3].when: is required",
        ] {
            assert!(err.contains(want), "missing {want:?} in:\n{err}");
        }
    }

    #[test]
    fn two_default_named_triggers_on_one_target_must_be_named() {
        let two = format!(
            "{TARGET}
            [[triggers]]
            kind = \"latency\"
            target = \"checkout\"
            url = \"http://127.0.0.1:1/a\"
            threshold = \"1s\"
            [[triggers]]
            kind = \"latency\"
            target = \"checkout\"
            url = \"http://127.0.0.1:1/b\"
            threshold = \"1s\"
            "
        );
        let err = load(&two).unwrap_err();
        assert!(
            err.contains("triggers[1].name: \"latency-checkout\" is used"),
            "{err}"
        );
        let named = two.replacen(
            "url = \"http://127.0.0.1:1/b\"",
            "url = \"http://127.0.0.1:1/b\"\nname = \"b\"",
            1,
        );
        assert!(load(&named).is_ok());
    }

    #[test]
    fn webhook_secrets_never_print() {
        let c = load_str(
            "[webhooks]\nbasic_auth_user = \"am\"\n",
            &BTreeMap::from([
                (
                    "FLIGHTREC_WEBHOOKS__BASIC_AUTH_PASSWORD".to_string(),
                    "hunter2".to_string(),
                ),
                (
                    "FLIGHTREC_WEBHOOKS__GRAFANA_HMAC_SECRET".to_string(),
                    "s3cr3t".to_string(),
                ),
            ]),
        )
        .expect("valid");
        let text = format!("{c:?}");
        assert!(!text.contains("hunter2") && !text.contains("s3cr3t"), "{text}");
        assert_eq!(
            c.triggers
                .webhooks
                .basic_auth_password
                .as_ref()
                .map(Secret::expose),
            Some("hunter2")
        );
    }
}
