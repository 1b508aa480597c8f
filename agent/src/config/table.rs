//! Reads one config table into typed values, collecting every problem with its key path.
//!
//! Modules with config of their own (triggers, sinks) read their tables with
//! this, so every key in the file is checked the same way and typos in any
//! section are reported.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::Problem;
use crate::units::{parse_duration, parse_size};
use std::time::Duration;

/// A config table being read: remembers which keys were used so unknown ones
/// (typos) are reported.
pub struct Table<'v> {
    path: String,
    map: &'v Map<String, Value>,
    used: BTreeSet<String>,
}

static EMPTY: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);

impl<'v> Table<'v> {
    pub fn new(path: String, map: &'v Map<String, Value>) -> Self {
        Table {
            path,
            map,
            used: BTreeSet::new(),
        }
    }

    pub fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub fn problem(&self, key: &str, message: String) -> Problem {
        Problem {
            path: self.key_path(key),
            message,
        }
    }

    pub fn get(&mut self, key: &str) -> Option<&'v Value> {
        self.used.insert(key.to_string());
        match self.map.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    pub fn string(&mut self, key: &str, problems: &mut Vec<Problem>) -> Option<String> {
        match self.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            other => {
                problems.push(self.problem(key, format!("expected a string, found {}", kind(other))));
                None
            }
        }
    }

    pub fn duration(&mut self, key: &str, default: Duration, problems: &mut Vec<Problem>) -> Duration {
        match self.get(key) {
            None => default,
            Some(Value::String(s)) => parse_duration(s).unwrap_or_else(|e| {
                problems.push(self.problem(key, e));
                default
            }),
            Some(other) => {
                problems.push(self.problem(
                    key,
                    format!("expected a duration string like \"5s\", found {}", kind(other)),
                ));
                default
            }
        }
    }

    pub fn size(&mut self, key: &str, default: u64, problems: &mut Vec<Problem>) -> u64 {
        match self.get(key) {
            None => default,
            Some(Value::String(s)) => parse_size(s).unwrap_or_else(|e| {
                problems.push(self.problem(key, e));
                default
            }),
            Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64().unwrap_or(default),
            Some(other) => {
                problems.push(self.problem(
                    key,
                    format!("expected a size like \"64MiB\", found {}", kind(other)),
                ));
                default
            }
        }
    }

    pub fn uint(&mut self, key: &str, default: u64, problems: &mut Vec<Problem>) -> u64 {
        match self.get(key) {
            None => default,
            Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64().unwrap_or(default),
            Some(Value::String(s)) if s.trim().parse::<u64>().is_ok() => s.trim().parse().unwrap_or(default),
            Some(other) => {
                problems
                    .push(self.problem(key, format!("expected a whole number, found {}", describe(other))));
                default
            }
        }
    }

    pub fn bool(&mut self, key: &str, default: bool, problems: &mut Vec<Problem>) -> bool {
        match self.get(key) {
            None => default,
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) if s == "true" || s == "false" => s == "true",
            Some(other) => {
                problems
                    .push(self.problem(key, format!("expected true or false, found {}", describe(other))));
                default
            }
        }
    }

    pub fn float(&mut self, key: &str, default: f64, problems: &mut Vec<Problem>) -> f64 {
        match self.get(key) {
            None => default,
            Some(Value::Number(n)) => n.as_f64().unwrap_or(default),
            Some(Value::String(s)) if s.trim().parse::<f64>().is_ok() => s.trim().parse().unwrap_or(default),
            Some(other) => {
                problems.push(self.problem(key, format!("expected a number, found {}", describe(other))));
                default
            }
        }
    }

    /// A list of strings; a single string counts as a list of one.
    pub fn strings(&mut self, key: &str, problems: &mut Vec<Problem>) -> Option<Vec<String>> {
        match self.get(key)? {
            Value::String(s) => Some(vec![s.clone()]),
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) => out.push(s.clone()),
                        other => problems.push(Problem {
                            path: format!("{}[{i}]", self.key_path(key)),
                            message: format!("expected a string, found {}", kind(other)),
                        }),
                    }
                }
                Some(out)
            }
            other => {
                problems
                    .push(self.problem(key, format!("expected a list of strings, found {}", kind(other))));
                None
            }
        }
    }

    /// How windows are held in memory: `"zstd"` or `"none"`.
    pub fn compression(
        &mut self,
        key: &str,
        default: super::Compression,
        problems: &mut Vec<Problem>,
    ) -> super::Compression {
        match self.string(key, problems).as_deref() {
            None => default,
            Some("zstd") => super::Compression::Zstd,
            Some("none") => super::Compression::None,
            Some(other) => {
                problems.push(self.problem(key, format!("{other:?} is not one of \"zstd\", \"none\"")));
                default
            }
        }
    }

    pub fn labels(&mut self, key: &str, problems: &mut Vec<Problem>) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        match self.get(key) {
            None => {}
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    match v {
                        Value::String(s) => {
                            out.insert(k.clone(), s.clone());
                        }
                        Value::Number(_) | Value::Bool(_) => {
                            out.insert(k.clone(), v.to_string());
                        }
                        other => problems.push(Problem {
                            path: format!("{}.{k}", self.key_path(key)),
                            message: format!("expected a string, found {}", kind(other)),
                        }),
                    }
                }
            }
            Some(other) => problems
                .push(self.problem(key, format!("expected a table of strings, found {}", kind(other)))),
        }
        out
    }

    pub fn table(&mut self, key: &str, problems: &mut Vec<Problem>) -> Table<'v> {
        let path = self.key_path(key);
        match self.get(key) {
            None => Table::new(path, &EMPTY),
            Some(Value::Object(m)) => Table::new(path, m),
            Some(other) => {
                problems.push(self.problem(key, format!("expected a table, found {}", kind(other))));
                Table::new(path, &EMPTY)
            }
        }
    }

    /// `None` when the key is absent, so callers can tell "absent" from "empty".
    pub fn tables(&mut self, key: &str, problems: &mut Vec<Problem>) -> Option<Vec<Table<'v>>> {
        let path = self.key_path(key);
        match self.get(key)? {
            Value::Array(items) => Some(
                items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, item)| match item {
                        Value::Object(m) => Some(Table::new(format!("{path}[{i}]"), m)),
                        other => {
                            problems.push(Problem {
                                path: format!("{path}[{i}]"),
                                message: format!("expected a table, found {}", kind(other)),
                            });
                            None
                        }
                    })
                    .collect(),
            ),
            other => {
                problems.push(self.problem(
                    key,
                    format!("expected an array of tables ([[{key}]]), found {}", kind(other)),
                ));
                Some(Vec::new())
            }
        }
    }

    /// Reports keys nobody asked for: almost always a typo.
    pub fn finish(self, problems: &mut Vec<Problem>) {
        for key in self.map.keys() {
            if !self.used.contains(key) {
                problems.push(self.problem(key, "unknown key".into()));
            }
        }
    }
}

pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a table",
    }
}

pub fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        other => kind(other).to_string(),
    }
}
