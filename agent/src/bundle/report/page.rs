//! The HTML of `report.html`: the facts, the verdict and the tables as plain HTML, the plots' data and script inline.

use std::fmt::Write as _;
use std::time::Duration;

use super::data::{relative, secs, Model, Win};
use super::Options;
use crate::bundle::Manifest;
use crate::units::{Bytes, Nanos, Secs};

const CSS: &str = include_str!("page.css");
const SCRIPT: &str = include_str!("page.js");

/// Forbids every request the page could make (scripts and styles may only
/// be inline; no image, font, frame, fetch or form target anywhere).
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'";

pub fn render(m: &Manifest, model: &Model<'_>, o: &Options) -> String {
    let mut s = String::with_capacity(64 << 10);
    let title = format!("flightrec: {} — {} trigger", m.target.name, m.trigger.kind);
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>\n{CSS}</style>\n</head>\n<body>\n<main>\n",
        esc(&title)
    );
    let _ = writeln!(s, "<h1>{}</h1>", esc(&title));
    let _ = writeln!(
        s,
        "<div class=\"sub\">bundle <code>{}</code> · {}</div>",
        esc(&m.id),
        esc(&o.bundle)
    );
    facts(&mut s, m, model);
    problems(&mut s, o);
    ending(&mut s, m);
    let v = model.verdict();
    let class = if v.rows.is_empty() {
        "verdict unknown"
    } else if v.rows.iter().any(|r| r.different) {
        "verdict differs"
    } else {
        "verdict same"
    };
    let _ = writeln!(
        s,
        "<div class=\"{class}\" id=\"verdict\">{}</div>",
        esc(&v.headline)
    );
    let _ = writeln!(
        s,
        "<div class=\"legend-key\"><span><i class=\"sw\" style=\"background:#c5221f\"></i>trigger</span>{}\
         <span><i class=\"sw\" style=\"background:#f9c6c3\"></i>gap (no trace)</span>\
         <span><i class=\"sw\" style=\"background:#e8eaed\"></i>window not summarised</span>\
         <span><i class=\"sw\" style=\"background:#fde2b8\"></i>truncated window</span>{}\
         <span>each step is one window's value · hover for its numbers</span></div>\n\
         <div id=\"plots\" data-ready=\"no\"><noscript>The plots need JavaScript; the tables below hold the same numbers.</noscript></div>\n\
         <div id=\"tip\" hidden></div>",
        if m.ending.is_some() {
            ""
        } else {
            "<span><i class=\"sw\" style=\"background:#fef3e2\"></i>post_trigger</span>"
        },
        if m.ending.is_some() {
            "<span><i class=\"sw\" style=\"background:#202124\"></i>death, and the blind spot before it</span>"
        } else {
            ""
        }
    );
    compared(&mut s, &v);
    worst(&mut s, model, o);
    details(&mut s, m);
    windows(&mut s, model);
    let _ = writeln!(
        s,
        "<footer>Written by flightrec {} from the bundle's manifest. This page is self-contained and makes no request.</footer>\n</main>",
        esc(&m.agent_version)
    );
    let _ = writeln!(
        s,
        "<script type=\"application/json\" id=\"report-data\">{}</script>",
        json_for_script(model)
    );
    let _ = write!(s, "<script>\n{SCRIPT}</script>\n</body>\n</html>\n");
    s
}

fn facts(s: &mut String, m: &Manifest, model: &Model<'_>) {
    let labels = if m.target.labels.is_empty() {
        "none".to_string()
    } else {
        m.target
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut go: Vec<&str> = m.windows.iter().map(|w| w.go_version.as_str()).collect();
    go.sort_unstable();
    go.dedup();
    let recorded = match &m.ending {
        Some(_) => "up to the death, nothing after it".to_string(),
        None => format!(
            "{} after the trigger{}",
            Secs(Duration::from_secs_f64(m.post_trigger_seconds.max(0.0))),
            if m.post_trigger_complete {
                ""
            } else {
                " (cut short: the target stopped answering or the agent stopped)"
            }
        ),
    };
    let coverage = m.coverage.as_ref().map_or("unknown".to_string(), |c| {
        format!(
            "{:.2}% of {:.1} s, largest gap {}",
            c.ratio * 100.0,
            c.span_seconds,
            secs(c.max_gap_seconds)
        )
    });
    let summarised = model.windows.iter().filter(|w| w.summary.is_some()).count();
    let rows: [(&str, String); 12] = [
        ("target", m.target.name.clone()),
        ("trigger", m.trigger.kind.clone()),
        ("url", m.target.url.clone()),
        ("reason", m.trigger.reason.clone()),
        ("labels", labels),
        ("fired at", m.trigger.fired_at.clone()),
        ("Go", go.join(", ")),
        ("recorded", recorded),
        (
            "windows",
            format!(
                "{} ({} summarised), {}",
                m.windows.len(),
                summarised,
                Bytes(m.total_bytes())
            ),
        ),
        ("coverage", coverage),
        (
            "agent",
            format!(
                "flightrec {}{}",
                m.agent_version,
                if m.agent_host.is_empty() {
                    String::new()
                } else {
                    format!(" on {}", m.agent_host)
                }
            ),
        ),
        ("written", m.created_at.clone()),
    ];
    let _ = writeln!(s, "<dl class=\"facts\">");
    for (k, v) in rows {
        let _ = writeln!(s, "<dt>{k}</dt><dd>{}</dd>", esc(&v));
    }
    let _ = writeln!(s, "</dl>");
}

fn ending(s: &mut String, m: &Manifest) {
    let Some(e) = &m.ending else {
        return;
    };
    let blind = |b: Option<f64>| b.map_or("unknown".to_string(), secs);
    let _ = writeln!(
        s,
        "<div class=\"ending\"><b>The target died ({}) at {}</b>: {}.<br>Blind spot: {} from the last event Go's parser reads to the death; {} counting the tails (events of an unfinished generation).{}</div>",
        esc(&e.how),
        esc(&e.at),
        esc(&e.seen),
        blind(e.blind_spot_seconds),
        blind(e.tail_blind_spot_seconds),
        match &e.log {
            Some(l) => format!(" Its last log: <code>{}</code> ({}).", esc(&l.file), Bytes(l.bytes)),
            None => String::new(),
        }
    );
}

fn problems(s: &mut String, o: &Options) {
    const SHOWN: usize = 5;
    if o.problems.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "<div class=\"problems\"><b>This bundle did not verify ({} problem{}; <code>flightrec inspect</code> says more):</b><ul>",
        o.problems.len(),
        if o.problems.len() == 1 { "" } else { "s" }
    );
    for p in o.problems.iter().take(SHOWN) {
        let _ = writeln!(s, "<li>{}</li>", esc(p));
    }
    if o.problems.len() > SHOWN {
        let _ = writeln!(s, "<li>and {} more</li>", o.problems.len() - SHOWN);
    }
    let _ = writeln!(s, "</ul></div>");
}

/// The verdict's numbers, measure by measure.
fn compared(s: &mut String, v: &super::Verdict) {
    if v.rows.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "<h2>Near the trigger against the rest</h2>\n<table class=\"grid\" id=\"compared\"><tr><th>measure</th><th>near the trigger (worst window)</th><th>elsewhere (median window)</th><th>ratio</th></tr>"
    );
    for r in &v.rows {
        let _ = writeln!(
            s,
            "<tr{}><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            if r.different { " class=\"diff\"" } else { "" },
            esc(r.what),
            esc(&r.near),
            esc(&r.typical),
            r.ratio.map_or("-".to_string(), |x| format!("{x:.1}×"))
        );
    }
    let _ = writeln!(s, "</table>");
}

fn worst(s: &mut String, model: &Model<'_>, o: &Options) {
    let rows = model.worst();
    let _ = writeln!(s, "<h2>Worst moments, and how to open each</h2>");
    if let Some(note) = &o.note {
        let _ = writeln!(s, "<p>{}</p>", esc(note));
    }
    if rows.is_empty() {
        let _ = writeln!(s, "<p>The bundle lists no window.</p>");
        return;
    }
    let _ = writeln!(
        s,
        "<table class=\"grid\" id=\"worst\"><tr><th>what</th><th>value</th><th>where</th><th>open it</th></tr>"
    );
    for r in &rows {
        let Some(w) = model.windows.get(r.window - 1) else {
            continue;
        };
        let clock = |t: &str| t.get(11..23).unwrap_or(t).to_string();
        let open = match &o.stitched {
            Some(st) => format!(
                "<code>{}</code><br>then window {}, {}–{} UTC",
                esc(&command(o, st)),
                w.n,
                esc(&clock(w.start)),
                esc(&clock(w.end))
            ),
            None => format!("<code>{}</code>", esc(&command(o, w.file))),
        };
        let _ = writeln!(
            s,
            "<tr{}><td>{}</td><td>{}</td><td>window {}, {} ({}–{} UTC)</td><td>{open}</td></tr>",
            if w.near { " class=\"near\"" } else { "" },
            esc(r.what),
            esc(&r.value),
            w.n,
            esc(&relative(w.x0)),
            esc(&clock(w.start)),
            esc(&clock(w.end)),
        );
    }
    let _ = writeln!(s, "</table>");
}

fn details(s: &mut String, m: &Manifest) {
    let _ = writeln!(s, "<h2>Trigger details</h2>");
    let details = serde_json::to_string_pretty(&m.trigger.details).unwrap_or_default();
    let _ = writeln!(
        s,
        "<p><b>{}</b>: {}</p>\n<pre id=\"details\">{}</pre>",
        esc(&m.trigger.kind),
        esc(&m.trigger.reason),
        esc(&details)
    );
}

fn windows(s: &mut String, model: &Model<'_>) {
    let _ = writeln!(
        s,
        "<h2>Windows</h2>\n<table class=\"grid\" id=\"windows\"><tr><th>#</th><th>file</th><th>start</th><th>span</th><th>gap before</th><th>size</th><th>Go</th><th>state</th><th>GC</th><th>STW max</th><th>sched p99</th><th>runnable</th><th>goroutines</th><th>heap</th></tr>"
    );
    for w in &model.windows {
        let gap = model
            .gaps
            .iter()
            .find(|g| g.before == w.n)
            .map_or("-".to_string(), |g| secs(g.seconds));
        let span = match (w.x0, w.x1) {
            (Some(a), Some(b)) => secs(b - a),
            _ => "?".into(),
        };
        let state = if w.complete {
            "complete".to_string()
        } else {
            format!("truncated ({})", w.truncation.unwrap_or("cut"))
        };
        let _ = write!(
            s,
            "<tr{}><td>{}{}</td><td><code>{}</code></td><td>{}</td><td>{span}</td><td>{gap}</td><td>{}</td><td>{}</td><td>{}</td>",
            if w.near { " class=\"near\"" } else { "" },
            w.n,
            if w.met { " (met the condition)" } else { "" },
            esc(w.file),
            esc(&relative(w.x0)),
            Bytes(w.bytes),
            esc(w.go),
            esc(&state)
        );
        s.push_str(&summary_cells(w));
        let _ = writeln!(s, "</tr>");
    }
    let _ = writeln!(s, "</table>");
}

fn summary_cells(w: &Win<'_>) -> String {
    match w.summary {
        None => format!(
            "<td colspan=\"6\" class=\"missing\">{}</td>",
            esc(w.missing.as_deref().unwrap_or("not summarised"))
        ),
        Some(f) => format!(
            "<td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>",
            f.gc_cycles,
            if f.stw_count == 0 {
                "-".to_string()
            } else {
                esc(&format!("{} ({})", Nanos(f.stw_max_ns), f.stw_max_reason))
            },
            if f.sched_latency_samples == 0 {
                "-".to_string()
            } else {
                Nanos(f.sched_latency_p99_ns).to_string()
            },
            f.runnable_max,
            f.goroutines_max,
            Bytes(f.heap_max_bytes)
        ),
    }
}

/// `go tool trace <bundle>/<file>`, quoted for a POSIX shell when needed.
pub fn command(o: &Options, file: &str) -> String {
    let path = if o.bundle.is_empty() {
        file.to_string()
    } else {
        format!("{}/{file}", o.bundle.trim_end_matches('/'))
    };
    format!("go tool trace {}", shell_quote(&path))
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:=@,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// HTML text and attribute escaping.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The model as JSON that cannot end its `<script>` element early: every
/// `<` is written as `\u003c`, which JSON reads back the same.
fn json_for_script(model: &Model<'_>) -> String {
    serde_json::to_string(model)
        .unwrap_or_else(|_| "{}".into())
        .replace('<', "\\u003c")
}
