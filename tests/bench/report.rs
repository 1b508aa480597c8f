//! The report: every figure kept with its unit, in `results.json` and `report.md`, and the statistics behind them.

use super::*;

/// One kept figure: what it is, its value, and its unit, by section.
pub(crate) struct Report {
    pub(crate) quick: bool,
    pub(crate) json: serde_json::Map<String, Value>,
    pub(crate) md: String,
    /// Broken invariants (not slow figures): the run fails on them at the
    /// end, after every figure is written.
    pub(crate) broken: Vec<String>,
}

impl Report {
    pub(crate) fn check(&mut self, ok: bool, what: String) {
        if !ok {
            println!("BROKEN: {what}");
            self.broken.push(what);
        }
    }

    pub(crate) fn section(&mut self, name: &str, title: &str, intro: &str) {
        println!("\n== {title}");
        let _ = write!(self.md, "\n## {title}\n\n{intro}\n\n");
        self.json.insert(name.into(), json!({}));
    }

    pub(crate) fn put(&mut self, section: &str, key: &str, v: Value) {
        if let Some(Value::Object(m)) = self.json.get_mut(section) {
            m.insert(key.into(), v);
        }
    }

    pub(crate) fn table(&mut self, head: &[&str], rows: &[Vec<String>]) {
        let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
        let head: Vec<String> = head.iter().map(|s| s.to_string()).collect();
        let mut text = line(&head);
        text += &line(&head.iter().map(|_| "---".to_string()).collect::<Vec<_>>());
        for r in rows {
            text += &line(r);
        }
        print!("{text}");
        self.md += &text;
        self.md += "\n";
    }

    pub(crate) fn note(&mut self, text: &str) {
        println!("{text}");
        let _ = writeln!(self.md, "{text}\n");
    }

    /// Quick runs (CI) shorten every phase; figures are then only a smoke check.
    pub(crate) fn scale(&self, full: u64, quick: u64) -> u64 {
        if self.quick {
            quick
        } else {
            full
        }
    }
}

pub(crate) fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// Nearest-rank percentile of sorted values.
pub(crate) fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

pub(crate) fn median(v: &[f64]) -> f64 {
    pct(&sorted(v.to_vec()), 0.5)
}

pub(crate) fn f(v: f64, digits: usize) -> String {
    if v.is_nan() {
        "-".into()
    } else {
        format!("{v:.digits$}")
    }
}
