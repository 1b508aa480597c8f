//! The TOML of the agents the tests start: a head on a free port with the spool in the agent's own directory, and targets.

/// `[server]` on a free loopback port and `[snapshots]` under the agent's
/// temporary directory (`{dir}` is filled in by `Agent::start`), keeping
/// recording `post_trigger` after a trigger; `rest` follows as it is.
pub fn agent_toml(post_trigger: &str, rest: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[snapshots]\ndir = \"{{dir}}/data\"\npost_trigger = \"{post_trigger}\"\n{rest}\n"
    )
}

/// One `[[targets]]` entry; `more` adds keys to it (`labels = { ... }`, a
/// `max_window_bytes`, ...).
pub fn target_toml(name: &str, url: &str, window: &str, max_age: &str, more: &str) -> String {
    format!(
        "\n[[targets]]\nname = \"{name}\"\nurl = \"{url}\"\nwindow = \"{window}\"\nmax_age = \"{max_age}\"\n{more}\n"
    )
}
