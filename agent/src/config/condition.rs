//! The `when` of a trace trigger (`"stw_max > 10ms"`): a window summary field, an operator and a value in the field's unit, and what each field of a summary means as a number.
//!
//! Field names are those of `agent/gotrace/docs/summary.md`; the unit suffix
//! (`_ns`, `_bytes`) may be left off, and a count also reads as a rate over
//! the window's span with `_per_second` (`gc_cycles_per_second`). A duration
//! is written with its unit (`10ms`, `1.5ms`, `250us`), or as nanoseconds
//! after a field named with `_ns`; a byte field takes a size (`512MiB`) or
//! bytes.

use std::fmt;

use gotrace::summary::Summary;

use crate::units::parse_size;

/// What a field's number counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    /// Nanoseconds of the target's trace clock.
    Nanos,
    Bytes,
    /// A count over the window's span, per second.
    PerSecond,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "count",
            Unit::Nanos => "ns",
            Unit::Bytes => "bytes",
            Unit::PerSecond => "per_second",
        }
    }
}

/// The summary fields a condition may name, their docs/summary.md names and
/// units. Left out: `stw_max_reason`, a text, and `first_ns`/`last_ns`,
/// instants of a clock that starts anywhere.
const FIELDS: [(&str, Unit); 16] = [
    ("events", Unit::Count),
    ("gc_cycles", Unit::Count),
    ("stw_count", Unit::Count),
    ("stw_total_ns", Unit::Nanos),
    ("stw_max_ns", Unit::Nanos),
    ("gc_assist_ns", Unit::Nanos),
    ("goroutines_max", Unit::Count),
    ("runnable_max", Unit::Count),
    ("sched_latency_samples", Unit::Count),
    ("sched_latency_p50_ns", Unit::Nanos),
    ("sched_latency_p99_ns", Unit::Nanos),
    ("sched_latency_max_ns", Unit::Nanos),
    ("syscall_ns", Unit::Nanos),
    ("heap_max_bytes", Unit::Bytes),
    ("heap_goal_max_bytes", Unit::Bytes),
    ("gomaxprocs", Unit::Count),
];

/// Counts that also read as a rate.
const RATES: [&str; 3] = ["events", "gc_cycles", "stw_count"];

/// A summary field, as a condition names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// The docs/summary.md name (`stw_max_ns`).
    pub name: &'static str,
    pub unit: Unit,
}

impl Field {
    /// Reads `stw_max`, `stw_max_ns`, `heap_max`, `gc_cycles_per_second`, ...
    pub fn parse(text: &str) -> Option<Field> {
        if let Some(count) = text.strip_suffix("_per_second") {
            let name = RATES.iter().find(|r| **r == count)?;
            return Some(Field {
                name,
                unit: Unit::PerSecond,
            });
        }
        FIELDS
            .iter()
            .find(|(name, unit)| {
                *name == text
                    || match unit {
                        Unit::Nanos => name.strip_suffix("_ns") == Some(text),
                        Unit::Bytes => name.strip_suffix("_bytes") == Some(text),
                        _ => false,
                    }
            })
            .map(|&(name, unit)| Field { name, unit })
    }

    /// The name as a person writes it: without `_ns`/`_bytes`.
    pub fn short_name(&self) -> String {
        match self.unit {
            Unit::PerSecond => format!("{}_per_second", self.name),
            Unit::Nanos => self.name.trim_end_matches("_ns").to_string(),
            Unit::Bytes => self.name.trim_end_matches("_bytes").to_string(),
            Unit::Count => self.name.to_string(),
        }
    }

    /// The field's value in `s`, in its unit.
    pub fn value(&self, s: &Summary) -> f64 {
        let raw = match self.name {
            "events" => s.events,
            "gc_cycles" => s.gc_cycles,
            "stw_count" => s.stw_count,
            "stw_total_ns" => s.stw_total_ns,
            "stw_max_ns" => s.stw_max_ns,
            "gc_assist_ns" => s.gc_assist_ns,
            "goroutines_max" => s.goroutines_max,
            "runnable_max" => s.runnable_max,
            "sched_latency_samples" => s.sched_latency_samples,
            "sched_latency_p50_ns" => s.sched_latency_p50_ns,
            "sched_latency_p99_ns" => s.sched_latency_p99_ns,
            "sched_latency_max_ns" => s.sched_latency_max_ns,
            "syscall_ns" => s.syscall_ns,
            "heap_max_bytes" => s.heap_max_bytes,
            "heap_goal_max_bytes" => s.heap_goal_max_bytes,
            _ => s.gomaxprocs,
        } as f64;
        match self.unit {
            Unit::PerSecond => {
                let span = s.last_ns.saturating_sub(s.first_ns);
                if span <= 0 {
                    0.0
                } else {
                    raw / (span as f64 / 1e9)
                }
            }
            _ => raw,
        }
    }

    /// A value of this field for people: `213.2ms`, `1.5 GiB`, `4.2/s`, `512`.
    pub fn show(&self, v: f64) -> String {
        match self.unit {
            Unit::Nanos => show_nanos(v),
            Unit::Bytes => crate::units::Bytes(v.max(0.0) as u64).to_string(),
            Unit::PerSecond => format!("{v:.2}/s"),
            Unit::Count => format!("{v}"),
        }
    }
}

fn show_nanos(ns: f64) -> String {
    if ns.abs() < 1e3 {
        format!("{ns}ns")
    } else if ns.abs() < 1e6 {
        format!("{:.1}µs", ns / 1e3)
    } else if ns.abs() < 1e9 {
        format!("{:.1}ms", ns / 1e6)
    } else {
        format!("{:.3}s", ns / 1e9)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
}

impl Op {
    const ALL: [(&'static str, Op); 5] = [
        (">=", Op::Ge),
        ("<=", Op::Le),
        ("==", Op::Eq),
        (">", Op::Gt),
        ("<", Op::Lt),
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Eq => "==",
        }
    }

    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Op::Gt => a > b,
            Op::Ge => a >= b,
            Op::Lt => a < b,
            Op::Le => a <= b,
            Op::Eq => a == b,
        }
    }
}

/// `field op value`, e.g. `stw_max > 10ms`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub field: Field,
    pub op: Op,
    /// In the field's unit.
    pub threshold: f64,
    /// As written.
    pub text: String,
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Condition {
    /// Parses `when`; the error says what is wrong with it and how to write it.
    pub fn parse(text: &str) -> Result<Condition, String> {
        let t = text.trim();
        let Some(at) = t.find(['<', '>', '=', '!']) else {
            return Err(format!(
                "{text:?} has no operator: write a summary field, an operator and a value, e.g. \"stw_max > 10ms\" or \"runnable_max > 500\""
            ));
        };
        let (name, rest) = t.split_at(at);
        let name = name.trim();
        let op_len = rest
            .find(|c: char| !matches!(c, '<' | '>' | '=' | '!'))
            .unwrap_or(rest.len());
        let (op_text, value) = rest.split_at(op_len);
        let field = Field::parse(name).ok_or_else(|| {
            let known: Vec<String> = FIELDS
                .iter()
                .filter_map(|(n, _)| Field::parse(n))
                .map(|f| f.short_name())
                .chain(RATES.iter().map(|r| format!("{r}_per_second")))
                .collect();
            format!(
                "{text:?}: {name:?} is not a window summary field; one of: {} (see agent/gotrace/docs/summary.md)",
                known.join(", ")
            )
        })?;
        let op = Op::ALL
            .iter()
            .find(|(s, _)| *s == op_text)
            .map(|(_, op)| *op)
            .ok_or_else(|| format!("{text:?}: {op_text:?} is not an operator; use >, >=, <, <= or =="))?;
        let value = value.trim();
        let threshold = parse_value(field, name, value).map_err(|why| format!("{text:?}: {why}"))?;
        Ok(Condition {
            field,
            op,
            threshold,
            text: t.to_string(),
        })
    }

    /// The field's value in `s`, and whether the condition holds for it.
    pub fn judge(&self, s: &Summary) -> (f64, bool) {
        let v = self.field.value(s);
        (v, self.op.holds(v, self.threshold))
    }
}

/// A value in the field's unit. `written` is the field as written: with
/// `_ns`, a bare number is nanoseconds.
fn parse_value(field: Field, written: &str, value: &str) -> Result<f64, String> {
    if value.is_empty() {
        return Err("no value after the operator".into());
    }
    let number = value.parse::<f64>().ok().filter(|v| v.is_finite());
    let v = match field.unit {
        Unit::Count | Unit::PerSecond => number.ok_or_else(|| format!("{value:?} is not a number"))?,
        Unit::Nanos => match number {
            Some(n) if written.ends_with("_ns") => n,
            Some(_) => {
                return Err(format!(
                    "{written} is a duration: give {value:?} a unit (ns, us, ms, s), e.g. \"10ms\", or name the field {}",
                    field.name
                ))
            }
            None => parse_nanos(value)?,
        },
        Unit::Bytes => match number {
            Some(n) => n,
            None => parse_size(value).map_err(|_| format!("{value:?} is not a size (e.g. \"512MiB\" or bytes)"))? as f64,
        },
    };
    if v < 0.0 {
        return Err(format!("{value:?} is negative"));
    }
    Ok(v)
}

/// `10ms`, `1.5ms`, `250us`, `250µs`, `2s`, `800ns`, `1m` in nanoseconds.
fn parse_nanos(value: &str) -> Result<f64, String> {
    let split = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    let (num, unit) = value.split_at(split);
    let bad = || format!("{value:?} is not a duration (e.g. \"10ms\", \"1.5ms\", \"250us\")");
    let n: f64 = num.parse().map_err(|_| bad())?;
    let scale = match unit.trim() {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        _ => return Err(bad()),
    };
    Ok(n * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_s_examples_read_in_the_field_s_unit() {
        let c = Condition::parse("stw_max > 10ms").expect("valid");
        assert_eq!((c.field.name, c.op, c.threshold), ("stw_max_ns", Op::Gt, 10e6));
        let c = Condition::parse("runnable_max > 500").expect("valid");
        assert_eq!((c.field.name, c.threshold), ("runnable_max", 500.0));
        let c = Condition::parse(" sched_latency_p99>=1.5ms ").expect("valid");
        assert_eq!(
            (c.field.name, c.op, c.threshold),
            ("sched_latency_p99_ns", Op::Ge, 1.5e6)
        );
        let c = Condition::parse("gc_cycles_per_second > 4").expect("valid");
        assert_eq!((c.field.name, c.field.unit), ("gc_cycles", Unit::PerSecond));
        let c = Condition::parse("stw_max_ns > 10000000").expect("ns by name");
        assert_eq!(c.threshold, 10e6);
        let c = Condition::parse("heap_max >= 1GiB").expect("valid");
        assert_eq!(c.threshold, (1u64 << 30) as f64);
        assert_eq!(Condition::parse("gomaxprocs < 2").expect("valid").op, Op::Lt);
    }

    #[test]
    fn a_wrong_field_operator_or_value_says_what_is_wrong() {
        let err = |t: &str| Condition::parse(t).expect_err(t);
        assert!(err("stw_mux > 10ms").contains("\"stw_mux\" is not a window summary field; one of: events, gc_cycles, stw_count, stw_total, stw_max,"), "{}", err("stw_mux > 10ms"));
        assert!(err("stw_max >> 10ms").contains("\">>\" is not an operator"));
        assert!(err("stw_max != 10ms").contains("\"!=\" is not an operator"));
        assert!(err("stw_max 10ms").contains("has no operator"));
        assert!(err("stw_max > 10").contains("stw_max is a duration: give \"10\" a unit"));
        assert!(err("stw_max > 10 parsecs").contains("\"10 parsecs\" is not a duration"));
        assert!(err("runnable_max > lots").contains("\"lots\" is not a number"));
        assert!(err("stw_max >").contains("no value after the operator"));
        assert!(err("heap_max > big").contains("\"big\" is not a size"));
        assert!(err("stw_max_reason > 1").contains("is not a window summary field"));
        assert!(err("first_ns > 1").contains("is not a window summary field"));
        assert!(err("runnable_max > -1").contains("negative"));
    }

    #[test]
    fn fields_read_the_summary_and_rates_use_the_window_s_span() {
        let s = Summary {
            first_ns: 1_000_000_000,
            last_ns: 3_000_000_000,
            gc_cycles: 10,
            stw_max_ns: 12_000_000,
            runnable_max: 600,
            heap_max_bytes: 5 << 20,
            ..Summary::default()
        };
        let judge = |t: &str| Condition::parse(t).expect(t).judge(&s);
        assert_eq!(judge("stw_max > 10ms"), (12e6, true));
        assert_eq!(judge("runnable_max > 600"), (600.0, false));
        assert_eq!(judge("runnable_max >= 600"), (600.0, true));
        assert_eq!(judge("gc_cycles_per_second > 4"), (5.0, true));
        assert_eq!(judge("heap_max < 4MiB"), ((5u64 << 20) as f64, false));
        let f = Field::parse("stw_max").expect("field");
        assert_eq!(
            (f.short_name(), f.show(12e6)),
            ("stw_max".to_string(), "12.0ms".to_string())
        );
        let empty = Summary::default();
        assert_eq!(
            Condition::parse("gc_cycles_per_second > 0")
                .expect("valid")
                .judge(&empty),
            (0.0, false)
        );
    }
}
