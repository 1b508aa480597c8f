//! Which targets an alert is about: the label rule shared by every way an alert arrives.

use parking_lot::RwLock;

use super::payload::Labels;
use crate::config::Target;

/// An alert label naming the target outright, whatever the other labels say.
pub const TARGET_LABEL: &str = "flightrec_target";

/// A target as the label rule sees it.
#[derive(Debug, Clone)]
pub struct TargetLabels {
    pub name: String,
    pub labels: Labels,
}

/// The targets an alert selects:
/// - an alert with the label `flightrec_target` selects the target of that
///   name, and only it (none if there is no such target);
/// - otherwise a target is selected when the alert and the target's labels
///   share at least one label of `match_labels`, and every label of
///   `match_labels` that both carry has equal values.
pub fn select_targets(alert: &Labels, targets: &[TargetLabels], match_labels: &[String]) -> Vec<String> {
    if let Some(name) = alert.get(TARGET_LABEL) {
        return targets
            .iter()
            .filter(|t| &t.name == name)
            .map(|t| t.name.clone())
            .collect();
    }
    targets
        .iter()
        .filter(|t| {
            let mut shared = match_labels
                .iter()
                .filter_map(|k| Some((alert.get(k)?, t.labels.get(k)?)))
                .peekable();
            shared.peek().is_some() && shared.all(|(a, b)| a == b)
        })
        .map(|t| t.name.clone())
        .collect()
}

/// The targets alerts select among, with the rule's `match_labels`: one
/// value shared by every way an alert arrives (the webhooks and the
/// Alertmanager follower), so a reload changes what all of them select.
pub struct AlertTargets {
    targets: RwLock<Vec<TargetLabels>>,
    match_labels: Vec<String>,
}

impl AlertTargets {
    pub fn new(targets: &[Target], match_labels: &[String]) -> Self {
        AlertTargets {
            targets: RwLock::new(target_labels(targets)),
            match_labels: match_labels.to_vec(),
        }
    }

    /// Alerts select among these targets from now on.
    pub fn set(&self, targets: &[Target]) {
        *self.targets.write() = target_labels(targets);
    }

    /// The targets an alert with these labels selects ([`select_targets`]).
    pub fn select(&self, alert: &Labels) -> Vec<String> {
        select_targets(alert, &self.targets.read(), &self.match_labels)
    }
}

fn target_labels(targets: &[Target]) -> Vec<TargetLabels> {
    targets
        .iter()
        .map(|t| TargetLabels {
            name: t.name.clone(),
            labels: t.labels.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn target(name: &str, pairs: &[(&str, &str)]) -> TargetLabels {
        TargetLabels {
            name: name.into(),
            labels: labels(pairs),
        }
    }

    fn match_labels() -> Vec<String> {
        ["service", "pod", "instance", "job"].map(String::from).to_vec()
    }

    #[test]
    fn label_rule_selects_on_shared_equal_labels() {
        let targets = [
            target("a", &[("instance", "10.0.0.1:8080"), ("job", "api")]),
            target("b", &[("instance", "10.0.0.2:8080"), ("job", "api")]),
            target("c", &[("service", "checkout")]),
            target("d", &[]),
        ];
        let ml = match_labels();
        let pick = |l: &[(&str, &str)]| select_targets(&labels(l), &targets, &ml);
        assert_eq!(pick(&[("instance", "10.0.0.1:8080"), ("job", "api")]), ["a"]);
        assert_eq!(pick(&[("job", "api")]), ["a", "b"], "job alone is shared by both");
        assert_eq!(pick(&[("job", "api"), ("service", "checkout")]), ["a", "b", "c"]);
        assert_eq!(
            pick(&[("instance", "10.0.0.9:8080"), ("job", "api")]),
            Vec::<String>::new()
        );
        assert_eq!(
            pick(&[("alertname", "X"), ("severity", "page")]),
            Vec::<String>::new(),
            "nothing shared"
        );
        assert_eq!(
            pick(&[(TARGET_LABEL, "d"), ("job", "api")]),
            ["d"],
            "explicit label wins"
        );
        assert_eq!(pick(&[(TARGET_LABEL, "nope")]), Vec::<String>::new());
        // Labels outside match_labels never count.
        let t = [target("e", &[("team", "x")])];
        assert!(select_targets(&labels(&[("team", "x")]), &t, &ml).is_empty());
    }
}
