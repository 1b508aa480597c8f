use serde_json::{json, Value};

use super::*;
use crate::bundle::MANIFEST_JSON;

/// A window of one second starting `i` seconds after 10:10:00, with `summary`.
fn window(i: u64, summary: Value) -> Value {
    let at = |s: u64| format!("2026-12-04T10:{:02}:{:02}.000000Z", 10 + s / 60, s % 60);
    json!({"file": format!("{:04}-20261204T1010{:02}.000Z.trace", i + 1, i), "start": at(i), "end": at(i + 1),
           "bytes": 1000, "sha256": "00", "go_version": "1.26", "complete": true, "clock": "target",
           "seq": 100 + i, "gap_before_seconds": if i == 0 { Value::Null } else { json!(0.004) },
           "summary": summary})
}

fn summary(runnable: u64, p99_ns: u64, stw_ns: u64) -> Value {
    json!({"summarised": true, "events": 1000, "first_ns": 1, "last_ns": 2, "gc_cycles": 2,
           "stw_count": 4, "stw_total_ns": stw_ns * 3, "stw_max_ns": stw_ns, "stw_max_reason": "GC mark termination",
           "gc_assist_ns": 5000, "goroutines_max": 40 + runnable, "runnable_max": runnable,
           "sched_latency_samples": 500, "sched_latency_p50_ns": 20_000, "sched_latency_p99_ns": p99_ns,
           "sched_latency_max_ns": p99_ns * 2, "syscall_ns": 0, "heap_max_bytes": 8 << 20,
           "heap_goal_max_bytes": 12 << 20, "gomaxprocs": 2})
}

fn manifest(windows: Vec<Value>, fired_at: &str, extra: Value) -> Manifest {
    let mut m = json!({
        "id": "20261204T101027.500Z-checkout-0001", "agent_version": "0.1.0", "created_at": "2026-12-04T10:10:31Z",
        "target": {"name": "checkout", "url": "http://127.0.0.1:6060/", "labels": {"service": "checkout", "zone": "b"}},
        "trigger": {"kind": "latency", "reason": "p99 over 200ms", "fired_at": fired_at,
                    "details": {"url": "http://127.0.0.1:8080/slow", "threshold_ms": 200}},
        "post_trigger_seconds": 1.0, "post_trigger_complete": true,
        "windows": windows
    });
    if let (Some(m), Some(extra)) = (m.as_object_mut(), extra.as_object()) {
        m.extend(extra.clone());
    }
    serde_json::from_value(m).expect("a manifest")
}

/// 30 quiet windows but for 26 and 27 (the two before the trigger at
/// 27.5 s), where goroutines pile up, wait and the world stops for long.
fn stormy() -> Manifest {
    let windows = (0..30)
        .map(|i| match i {
            25 | 26 => window(i, summary(400 + i, 9_000_000, 3_000_000)),
            _ => window(i, summary(3, 60_000, 150_000)),
        })
        .collect();
    manifest(windows, "2026-12-04T10:10:27.500000Z", json!({}))
}

fn options() -> Options {
    Options {
        bundle: "/spool/20261204T101027.500Z-checkout-0001".into(),
        ..Options::default()
    }
}

/// The data the page's script draws from.
fn data(html: &str) -> Value {
    let start = html
        .find("<script type=\"application/json\" id=\"report-data\">")
        .expect("the data element")
        + "<script type=\"application/json\" id=\"report-data\">".len();
    let end = start + html[start..].find("</script>").expect("its end");
    serde_json::from_str(&html[start..end]).expect("the data is JSON")
}

/// The row of the table `id` whose first cell is `first`.
fn row<'a>(html: &'a str, id: &str, first: &str) -> &'a str {
    let table = &html[html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no table {id}"))..];
    let table = &table[..table.find("</table>").expect("table end")];
    table
        .split("<tr")
        .find(|r| r.contains(&format!("<td>{first}</td>")))
        .unwrap_or_else(|| panic!("no row {first:?} in {id}:\n{table}"))
}

/// Self-contained: nothing the page names is to be fetched.
fn assert_self_contained(html: &str) {
    for attr in ["src=", "href=", "srcset=", "action=", "@import", "url(http"] {
        assert!(!html.contains(attr), "the page has {attr}");
    }
    assert!(html.contains("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none';"));
}

#[test]
fn the_minute_before_the_trigger_stands_out_and_each_worst_moment_says_how_to_open_it() {
    let m = stormy();
    let html = render(&m, &options());
    assert_self_contained(&html);
    assert!(html.contains("<div class=\"verdict differs\" id=\"verdict\">Near the trigger (11 windows in the 10 s before it) differs from the rest: scheduling latency p99 150.0×"), "{html}");
    assert!(row(&html, "compared", "runnable goroutines").contains("class=\"diff\""));
    assert!(
        !row(&html, "compared", "heap").contains("class=\"diff\""),
        "the heap did not change"
    );

    let runnable = row(&html, "worst", "Most runnable goroutines");
    assert!(
        runnable.contains("<td>426 at once (GOMAXPROCS 2)</td>"),
        "{runnable}"
    );
    assert!(
        runnable.contains("window 27, 1.5 s before the trigger (10:10:26.000–10:10:27.000 UTC)"),
        "{runnable}"
    );
    assert!(
        runnable.contains("<code>go tool trace /spool/20261204T101027.500Z-checkout-0001/0027-20261204T101026.000Z.trace</code>"),
        "{runnable}"
    );
    // The first of equal worsts: window 26.
    let stw = row(&html, "worst", "Longest stop-the-world pause");
    assert!(
        stw.contains("3.0ms (GC mark termination)") && stw.contains("window 26,"),
        "{stw}"
    );
    assert!(
        row(&html, "worst", "Longest time without trace").contains("<td>4.0ms between windows 1 and 2</td>")
    );

    // Facts a person looks for first.
    for want in [
        "<dt>target</dt><dd>checkout</dd>",
        "<dt>labels</dt><dd>service=checkout, zone=b</dd>",
        "<dt>Go</dt><dd>1.26</dd>",
        "<dt>trigger</dt><dd>latency</dd>",
        "<dt>reason</dt><dd>p99 over 200ms</dd>",
        "<dt>recorded</dt><dd>1s after the trigger</dd>",
        "&quot;threshold_ms&quot;: 200",
    ] {
        assert!(html.contains(want), "{want} missing");
    }

    let d = data(&html);
    let windows = d["windows"].as_array().expect("windows");
    assert_eq!(windows.len(), 30);
    assert_eq!(windows[0]["x0"], -27.5);
    assert_eq!(windows[29]["x1"], 2.5);
    assert_eq!(windows[26]["summary"]["runnable_max"], 426);
    assert_eq!(windows[26]["near"], true);
    assert_eq!(windows[5]["near"], false);
    assert_eq!(d["post_trigger"], json!([0.0, 1.0]));
    assert_eq!(
        d["gaps"].as_array().map(Vec::len),
        Some(29),
        "every seam has its trace-clock gap"
    );
    assert_eq!(d["ending"], Value::Null);
}

#[test]
fn a_bundle_that_looks_the_same_throughout_says_so() {
    let windows = (0..20).map(|i| window(i, summary(3, 60_000, 150_000))).collect();
    let m = manifest(windows, "2026-12-04T10:10:15.000000Z", json!({}));
    let html = render(&m, &options());
    assert!(html.contains("<div class=\"verdict same\" id=\"verdict\">Near the trigger (10 windows in the 10 s before it) looks like the rest of the bundle"), "{html}");
}

#[test]
fn windows_without_summaries_are_drawn_and_say_why() {
    let old = json!({"summarised": false, "reason": "old_go",
                     "why": "not supported: v1 trace (Go 1.21 or older): the header says go 1.21"});
    let mut windows: Vec<Value> = (0..3).map(|i| window(i, Value::Null)).collect();
    windows.push(window(3, old));
    for w in &mut windows[..3] {
        w.as_object_mut().map(|o| o.remove("summary"));
    }
    let m = manifest(windows, "2026-12-04T10:10:03.500000Z", json!({}));
    let html = render(&m, &options());
    assert_self_contained(&html);
    assert!(
        html.contains("<div class=\"verdict unknown\" id=\"verdict\">No window of this bundle has a summary")
    );
    assert!(html.contains(
        "not summarised: no summary in the manifest (written before summaries, or by an older agent)"
    ));
    assert!(html.contains(
        "not summarised: old_go (not supported: v1 trace (Go 1.21 or older): the header says go 1.21)"
    ));
    let first = row(&html, "worst", "Holds the trigger");
    assert!(
        first.contains(
            "<td>latency trigger, fired 10:10:03.500 UTC</td><td>window 4, 0.5 s before the trigger"
        ),
        "{first}"
    );
    assert!(first.contains(
        "<code>go tool trace /spool/20261204T101027.500Z-checkout-0001/0004-20261204T101003.000Z.trace</code>"
    ), "{first}");
    assert!(!html.contains("Most runnable goroutines"), "nothing to rank");
    let d = data(&html);
    assert_eq!(d["windows"][3]["summary"], Value::Null);
    assert_eq!(
        d["windows"][3]["missing"]
            .as_str()
            .map(|s| s.starts_with("not summarised: old_go")),
        Some(true)
    );
}

#[test]
fn a_crash_bundle_shows_the_death_and_the_blind_spot() {
    let windows = (0..5).map(|i| window(i, summary(3, 60_000, 150_000))).collect();
    let m = manifest(
        windows,
        "2026-12-04T10:10:05.400000Z",
        json!({"post_trigger_seconds": 0.0, "post_trigger_complete": false,
               "ending": {"how": "crash", "seen": "stream cut 1.4 s into a 2 s window, then connection refused",
                          "at": "2026-12-04T10:10:05.400000Z", "blind_spot_seconds": 0.4,
                          "tail_blind_spot_seconds": 0.01}}),
    );
    let html = render(&m, &options());
    assert!(html.contains(
        "<b>The target died (crash) at 2026-12-04T10:10:05.400000Z</b>: stream cut 1.4 s into a 2 s window, then connection refused."
    ));
    assert!(html.contains(
        "Blind spot: 400.0ms from the last event Go's parser reads to the death; 10.0ms counting the tails"
    ));
    assert!(html.contains("<dt>recorded</dt><dd>up to the death, nothing after it</dd>"));
    let d = data(&html);
    assert_eq!(d["ending"]["x"], 0.0);
    let blind = d["ending"]["blind"].as_array().expect("a blind spot");
    assert!((blind[0].as_f64().unwrap_or(0.0) + 0.4).abs() < 1e-9, "{blind:?}");
    assert_eq!(d["post_trigger"], Value::Null, "a crash records nothing after");
}

#[test]
fn what_the_manifest_says_cannot_break_out_of_the_page() {
    let mut m = stormy();
    m.trigger.reason = "</script><script>alert(1)</script>".into();
    m.target
        .labels
        .insert("x".into(), "<img src=x onerror=alert(2)>".into());
    m.windows[3].file = "0004-</script>.trace".into();
    let html = render(&m, &Options::default());
    assert!(!html.contains("<script>alert"), "reason escaped");
    assert!(!html.contains("<img"), "label escaped");
    assert_eq!(
        html.matches("</script>").count(),
        2,
        "only the page's own two scripts end"
    );
    assert!(html.contains("&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert_eq!(data(&html)["windows"][3]["file"], "0004-</script>.trace");
}

#[test]
fn with_a_stitched_trace_listed_every_command_opens_it_at_the_window() {
    let mut m = stormy();
    assert_eq!(stitched_listed(&m), None);
    m.derived = Some(derived(&["report.html", "bundle.trace"]));
    assert_eq!(stitched_listed(&m).as_deref(), Some("bundle.trace"));
    m.derived = Some(derived(&["bundle-2.trace"]));
    assert_eq!(
        stitched_listed(&m),
        None,
        "only bundle.trace is the stitched trace"
    );
    let o = Options {
        bundle: "my bundles/b1".into(),
        stitched: Some("bundle.trace".into()),
        ..Options::default()
    };
    let html = render(&stormy(), &o);
    let runnable = row(&html, "worst", "Most runnable goroutines");
    assert!(
        runnable.contains("<code>go tool trace &#39;my bundles/b1/bundle.trace&#39;</code><br>then window 27, 10:10:26.000–10:10:27.000 UTC"),
        "{runnable}"
    );
}

#[test]
fn write_puts_the_page_in_the_bundle_atomically_and_reads_the_derived_files() {
    let spool = tempfile::tempdir().expect("tempdir");
    let dir = spool.path().join("b1");
    std::fs::create_dir(&dir).expect("mkdir");
    let mut m = stormy();
    m.derived = Some(derived(&["bundle.trace"]));
    std::fs::write(dir.join(MANIFEST_JSON), serde_json::to_vec(&m).expect("json")).expect("write");
    let path = write(&dir, &m).expect("write the report");
    assert_eq!(path, dir.join(REPORT_HTML));
    let html = std::fs::read_to_string(&path).expect("read");
    assert!(
        html.contains("/bundle.trace</code><br>then window"),
        "the listed stitched trace is used"
    );
    let names = |d: &std::path::Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&dir), [MANIFEST_JSON, REPORT_HTML]);
    assert_eq!(
        names(spool.path()),
        ["b1"],
        "no temporary file left beside the bundle"
    );

    // -o FILE: anywhere, the same way.
    let out = spool.path().join("elsewhere.html");
    write_file(&out, "<p>x</p>").expect("write_file");
    assert_eq!(std::fs::read_to_string(&out).expect("read"), "<p>x</p>");
    assert_eq!(names(spool.path()), ["b1", "elsewhere.html"]);
}

#[test]
fn a_trace_trigger_s_window_is_the_one_to_open_first_and_counts_as_near() {
    let windows = (0..30)
        .map(|i| match i {
            12 => window(i, summary(3, 60_000, 180_000_000)),
            _ => window(i, summary(3, 60_000, 150_000)),
        })
        .collect();
    // The window that met the condition (seq 112) ended well before the
    // trigger fired, outside the 10 s before it.
    let mut m = manifest(windows, "2026-12-04T10:10:27.500000Z", json!({}));
    m.trigger.kind = "trace".into();
    m.trigger.details = json!({"window": {"seq": 112}});
    let html = render(&m, &options());
    let first = row(&html, "worst", "Met the trace trigger&#39;s condition");
    assert!(first.contains("window 13, 15.5 s before the trigger"), "{first}");
    assert!(
        first.contains("/0013-20261204T101012.000Z.trace</code>"),
        "{first}"
    );
    let d = data(&html);
    assert_eq!(d["windows"][12]["met"], true);
    assert_eq!(d["windows"][12]["near"], true);
    assert!(
        row(&html, "compared", "longest stop-the-world pause").contains("class=\"diff\""),
        "the pause that tripped the trigger stands out"
    );
}

/// A derived section listing `files`.
fn derived(files: &[&str]) -> crate::bundle::Derived {
    crate::bundle::Derived {
        ready_at: "2026-12-04T10:10:30Z".into(),
        files: files
            .iter()
            .map(|f| crate::bundle::FileEntry {
                file: f.to_string(),
                bytes: 1,
                sha256: "00".into(),
            })
            .collect(),
        stitch: Default::default(),
    }
}
