//! `[crash]`: whether a target's death (a trace stream cut mid-window, then a refused connection or a new process) makes a bundle, and how often.

use std::time::Duration;

use super::table::Table;
use super::trigger_defaults as defaults;
use super::Problem;

#[derive(Debug, Clone, PartialEq)]
pub struct CrashConfig {
    /// On: the deaths of every target whose `crash` is not false make
    /// bundles. Off: none does (the collectors still log and count them).
    pub enabled: bool,
    /// Per-target cooldown of the crash trigger, shared with the other
    /// automatic triggers: a service crash-looping makes one bundle per
    /// cooldown.
    pub cooldown: Duration,
}

impl Default for CrashConfig {
    fn default() -> Self {
        CrashConfig {
            enabled: true,
            cooldown: defaults::COOLDOWN,
        }
    }
}

pub(super) fn read(root: &mut Table<'_>, problems: &mut Vec<Problem>) -> CrashConfig {
    let d = CrashConfig::default();
    let mut t = root.table("crash", problems);
    let c = CrashConfig {
        enabled: t.bool("enabled", d.enabled, problems),
        cooldown: t.duration("cooldown", d.cooldown, problems),
    };
    t.finish(problems);
    c
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use crate::config::load_str;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn crash_detection_is_on_by_default_and_switchable_globally_and_per_target() {
        let c = load_str("[[targets]]\nname = \"a\"\n", &env(&[])).expect("valid");
        assert!(c.crash.enabled && c.targets[0].crash);
        assert_eq!(c.crash.cooldown, Duration::from_secs(300));

        let c = load_str(
            "[crash]\nenabled = false\ncooldown = \"1m\"\n[[targets]]\nname = \"a\"\ncrash = false\n",
            &env(&[]),
        )
        .expect("valid");
        assert!(!c.crash.enabled && !c.targets[0].crash);
        assert_eq!(c.crash.cooldown, Duration::from_secs(60));

        let c = load_str(
            "[[targets]]\nname = \"a\"\n",
            &env(&[
                ("FLIGHTREC_CRASH__ENABLED", "false"),
                ("FLIGHTREC_CRASH__COOLDOWN", "10m"),
                ("FLIGHTREC_TARGETS__0__CRASH", "false"),
            ]),
        )
        .expect("valid");
        assert!(!c.crash.enabled && !c.targets[0].crash);
        assert_eq!(c.crash.cooldown, Duration::from_secs(600));
    }

    #[test]
    fn bad_crash_settings_are_reported_with_their_key_path() {
        let err = load_str(
            "[crash]\nenabled = \"sometimes\"\ncooldown = \"soon\"\ncooldwn = \"1m\"\n[[targets]]\nname = \"a\"\ncrash = 3\n",
            &env(&[]),
        )
        .unwrap_err()
        .to_string();
        for want in [
            "crash.enabled: expected true or false, found \"sometimes\"",
            "crash.cooldown: \"soon\" is not a duration",
            "crash.cooldwn: unknown key",
            "targets[0].crash: expected true or false, found 3",
        ] {
            assert!(err.contains(want), "{want:?} missing from:\n{err}");
        }
    }
}
