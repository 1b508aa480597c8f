//! `[crash]`: whether a target's death (a trace stream cut mid-window, then a refused connection or a new process) makes a bundle, and how often.

use std::time::Duration;

use super::table::Table;
use super::triggers::defaults;
use super::Problem;

#[derive(Debug, Clone, PartialEq)]
pub struct CrashConfig {
    /// Off: deaths are neither watched for nor snapshotted, on any target.
    /// On: every target whose `crash` is not false.
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
