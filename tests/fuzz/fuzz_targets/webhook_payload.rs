//! The Alertmanager and Grafana webhook payload parser, the reader of
//! Alertmanager's API answers (`GET /api/v2/alerts`), the dedupe key and the
//! label rule that turns an alert into targets.
//!
//! Oracles: never a panic; an alert naming `flightrec_target` selects that
//! target or none; any other selected target shares at least one
//! `match_labels` label with the alert, and every shared one is equal.

#![no_main]

use std::collections::BTreeMap;

use flightrec::trigger::alertmanager;
use flightrec::trigger::webhook::{self, Alert, Source, TargetLabels, TARGET_LABEL};
use libfuzzer_sys::fuzz_target;

fn targets() -> Vec<TargetLabels> {
    let t = |name: &str, labels: &[(&str, &str)]| TargetLabels {
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    vec![
        t("checkout", &[("service", "checkout"), ("job", "api")]),
        t("payments", &[("instance", "127.0.0.1:46611"), ("job", "api")]),
        t("fixture", &[("instance", "127.0.0.1:46611"), ("job", "fixture")]),
        t("bare", &[]),
    ]
}

fn check(alert: &Alert, targets: &[TargetLabels], match_labels: &[String]) {
    let _ = (
        alert.name(),
        alert.fingerprint(),
        alert.dedupe_key(Source::Alertmanager),
    );
    let picked = webhook::select_targets(&alert.labels, targets, match_labels);
    if let Some(name) = alert.labels.get(TARGET_LABEL) {
        assert!(
            picked.len() <= 1 && picked.iter().all(|p| p == name),
            "{picked:?}"
        );
        return;
    }
    for p in &picked {
        let t = targets
            .iter()
            .find(|t| &t.name == p)
            .expect("a configured target");
        let shared: BTreeMap<&String, (&String, &String)> = match_labels
            .iter()
            .filter_map(|k| Some((k, (alert.labels.get(k)?, t.labels.get(k)?))))
            .collect();
        assert!(!shared.is_empty(), "{p} selected without a shared label");
        assert!(
            shared.values().all(|(a, b)| a == b),
            "{p} selected on unequal labels"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let targets = targets();
    let match_labels: Vec<String> = ["service", "pod", "instance", "job"].map(String::from).to_vec();
    for source in [Source::Alertmanager, Source::Grafana] {
        let Ok(n) = webhook::parse(source, data) else {
            continue;
        };
        for alert in &n.alerts {
            check(alert, &targets, &match_labels);
        }
    }
    if let Ok(alerts) = alertmanager::decode(data, "application/json") {
        for alert in &alerts {
            check(alert, &targets, &match_labels);
        }
    }
});
