//! report.html as a person opens it: the agent records a real Go service
//! that is quiet, then storms (bursts of runnable goroutines, GC,
//! stop-the-world pauses) just before a snapshot is taken through the API.
//! The agent writes the page into the bundle once it is durable, and
//! `flightrec report` writes it again from the directory and from an
//! archive. The page is opened in headless Chromium (Debian's `chromium`,
//! installed by tests/setup.sh) behind a proxy that records every request
//! the browser makes: none may leave the page, the plots must have data, and
//! the verdict must name the storm. A screenshot is kept in
//! target/report/report.png (the README's docs/report.png comes from it).
//! A crash bundle's page must show the death and the blind spot.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use parking_lot::Mutex;

fn chromium() -> PathBuf {
    let bin = std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    assert!(
        bin.is_file(),
        "{} missing: run tests/setup.sh (it installs Debian's chromium), or set CHROMIUM",
        bin.display()
    );
    bin
}

/// An HTTP proxy on loopback that answers 502 to everything and remembers
/// the first line of every request (a CONNECT for https).
struct Proxy {
    addr: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("addr").to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let mut line = String::new();
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = BufReader::new(&conn).read_line(&mut line);
                log.lock().push(line.trim().to_string());
                let _ = (&conn)
                    .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            }
        });
        Proxy { addr, seen }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().clone()
    }
}

/// The host a proxied request line names: `CONNECT host:443 HTTP/1.1` or
/// `GET http://host/path HTTP/1.1`.
fn host(line: &str) -> &str {
    let target = line.split_whitespace().nth(1).unwrap_or_default();
    let target = target.split_once("://").map_or(target, |(_, rest)| rest);
    let authority = target.split('/').next().unwrap_or_default();
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

/// Requests Chromium makes of its own whatever the page (Debian's build
/// enables the component updater and sign-in checks, which no flag turns
/// off here). The page names no such host (checked), so it cannot have
/// caused them.
fn browser_own(line: &str) -> bool {
    let h = host(line);
    ["google.com", "googleapis.com", "gvt1.com"]
        .iter()
        .any(|d| h == *d || h.ends_with(&format!(".{d}")))
}

/// Headless Chromium on `page` with every request (loopback included)
/// sent to `proxy`, and the browser's own background traffic turned off.
fn browse(proxy: &Proxy, profile: &Path, page: &Path, extra: &[&str]) -> Output {
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-default-apps",
            "--disable-domain-reliability",
            "--metrics-recording-only",
            "--hide-scrollbars",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--proxy-server=http://{}", proxy.addr))
        .arg("--proxy-bypass-list=<-loopback>")
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The DOM without its scripts' text, which names the elements they draw.
fn without_scripts(dom: &str) -> String {
    let mut out = String::with_capacity(dom.len());
    let mut rest = dom;
    while let Some(start) = rest.find("<script") {
        out.push_str(&rest[..start]);
        match rest[start..].find("</script>") {
            Some(end) => rest = &rest[start + end + "</script>".len()..],
            None => rest = "",
        }
    }
    out.push_str(rest);
    out
}

/// The value of `attr` on the first element whose opening tag contains `marker`.
fn attr_of(dom: &str, marker: &str, attr: &str) -> Option<String> {
    let at = dom.find(marker)?;
    let tag_start = dom[..=at].rfind('<')?;
    let tag = &dom[tag_start..tag_start + dom[tag_start..].find('>')?];
    let from = tag.find(&format!(" {attr}=\""))? + attr.len() + 3;
    Some(tag[from..from + tag[from..].find('"')?].to_string())
}

fn points(dom: &str, marker: &str) -> u64 {
    attr_of(dom, marker, "data-points")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no data-points on {marker} in the rendered page"))
}

/// The newest summarised window's sequence number.
fn newest_seq(agent: &Agent) -> u64 {
    agent.target("svc")["summary"]["window"]["seq"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn the_report_of_a_real_bundle_renders_offline_with_data_and_names_the_storm_before_the_trigger() {
    let svc = GoService::start("fixture", &["-pairs", "1", "-rate", "100", "-gc-every", "500ms"]);
    let agent = Agent::start(&agent_toml(
        "1s",
        &target_toml(
            "svc",
            &svc.url,
            "1s",
            "40s",
            "labels = { service = \"shop\", zone = \"b\" }",
        ),
    ));
    // Quiet long enough that most windows are outside the 10 s before
    // the trigger, the "rest" the page compares with.
    wait_for("14 quiet windows", Duration::from_secs(60), || {
        (newest_seq(&agent) >= 14).then_some(())
    });
    let http = reqwest::blocking::Client::new();
    let storm = http
        .get(format!(
            "{}/control?burst=300&burst_every=50ms&stw_every=20ms&gc_every=100ms",
            svc.url
        ))
        .send()
        .expect("storm");
    assert!(storm.status().is_success());
    let from = newest_seq(&agent);
    wait_for("three stormy windows", Duration::from_secs(30), || {
        (newest_seq(&agent) >= from + 3).then_some(())
    });
    let dir = agent.snapshot("svc", "the storm");
    let manifest = assert_bundle_valid(&dir);
    let id = manifest["id"].as_str().expect("id").to_string();

    // The agent wrote the page after the bundle was durable.
    let by_agent = dir.join("report.html");
    wait_for("the agent's report.html", Duration::from_secs(30), || {
        by_agent.is_file().then_some(())
    });
    // Counted once the write has returned, just after the rename.
    wait_for("the report counted", Duration::from_secs(10), || {
        (agent.metric("flightrec_reports_total", &[("result", "written")]) == Some(1.0)).then_some(())
    });

    // `flightrec report DIR` writes it again in place and prints the path.
    let out = Command::new(AGENT)
        .arg("report")
        .arg(&dir)
        .output()
        .expect("flightrec report");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        by_agent.display().to_string()
    );
    let html = std::fs::read_to_string(&by_agent).expect("report.html");
    assert!(html.len() < 512 << 10, "a small page: {} bytes", html.len());

    // From an archive: ./<id>-report.html, commands naming the extracted files.
    let work = tempfile::tempdir().expect("tempdir");
    let archive = work.path().join("bundle.tar.gz");
    let tar = Command::new("tar")
        .arg("czf")
        .arg(&archive)
        .arg("-C")
        .arg(dir.parent().expect("spool"))
        .arg(&id)
        .status()
        .expect("tar");
    assert!(tar.success());
    let out = Command::new(AGENT)
        .arg("report")
        .arg(&archive)
        .current_dir(work.path())
        .output()
        .expect("flightrec report ARCHIVE");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let from_archive = format!("{id}-report.html");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), from_archive);
    let archived = std::fs::read_to_string(work.path().join(&from_archive)).expect("the archive's page");
    assert!(
        archived.contains(&format!("go tool trace {id}/bundle.trace")),
        "commands open the extracted stitched trace the manifest lists"
    );

    // In a browser: rendered, with data, and not one request.
    let proxy = Proxy::start();
    let profile = tempfile::tempdir().expect("profile");
    let dom = without_scripts(
        &String::from_utf8(browse(&proxy, profile.path(), &by_agent, &["--dump-dom"]).stdout)
            .expect("the DOM is UTF-8"),
    );
    assert_eq!(
        attr_of(&dom, "id=\"plots\"", "data-ready").as_deref(),
        Some("yes"),
        "the page's script did not finish drawing"
    );
    let windows = manifest["windows"].as_array().expect("windows").len() as u64;
    assert_eq!(
        points(&dom, "data-lane=\"windows\""),
        windows,
        "every window is drawn"
    );
    let summarised = points(&dom, "data-lane=\"goroutines\"");
    assert!(summarised >= 15, "{summarised} summarised windows drawn");
    for series in [
        "goroutines_max",
        "runnable_max",
        "heap_max_bytes",
        "heap_goal_max_bytes",
        "gc_cycles",
        "stw_max_ns",
        "sched_latency_p99_ns",
        "sched_latency_max_ns",
    ] {
        let n = points(&dom, &format!("data-series=\"{series}\""));
        assert!(n > 0, "{series}: no point drawn");
    }
    assert_eq!(
        attr_of(&dom, "<body", "data-requests").as_deref(),
        Some("0"),
        "the page saw itself load a resource"
    );
    for attr in [" src=\"", " href=\"", " srcset=\"", " action=\""] {
        assert!(!dom.contains(attr), "the rendered page has{attr}");
    }
    let verdict = &dom[dom.find("id=\"verdict\"").expect("a verdict")..];
    let verdict = &verdict[..verdict.find("</div>").expect("its end")];
    assert!(
        dom.contains("class=\"verdict differs\" id=\"verdict\"") && verdict.contains("runnable goroutines"),
        "the storm before the trigger is named: {verdict}"
    );
    for want in [
        "<dd>svc</dd>",
        "<dd>service=shop, zone=b</dd>",
        "<dd>manual</dd>",
        "<dd>the storm</dd>",
        "Most runnable goroutines",
    ] {
        assert!(dom.contains(want), "{want} missing from the page");
    }

    // The screenshot for the README, under target/.
    let shot = repo_root().join("target/report/report.png");
    std::fs::create_dir_all(shot.parent().expect("dir")).expect("mkdir");
    let _ = std::fs::remove_file(&shot);
    browse(
        &proxy,
        profile.path(),
        &by_agent,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1400,1000",
        ],
    );
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );

    assert!(
        !html.contains("google"),
        "the page names a host of the browser's own requests"
    );
    let from_page: Vec<String> = proxy.seen().into_iter().filter(|l| !browser_own(l)).collect();
    assert_eq!(from_page, Vec::<String>::new(), "requests left the page");

    // The proxy does see what a page asks for: a page without the
    // report's policy, loading one image.
    let canary = work.path().join("canary.html");
    std::fs::write(&canary, "<img src=\"http://flightrec-canary.test/pixel.png\">").expect("write");
    browse(&proxy, profile.path(), &canary, &["--dump-dom"]);
    assert!(
        proxy.seen().iter().any(|l| host(l) == "flightrec-canary.test"),
        "the proxy missed the canary: {:?}",
        proxy.seen()
    );
    let took_ms = agent
        .logs()
        .iter()
        .find(|l| l["message"] == "report.html written")
        .and_then(|l| l["took_ms"].as_u64());
    println!(
        "REPORT {} windows ({summarised} summarised), {} bytes of HTML, written by the agent in {took_ms:?} ms after the bundle was durable, no request from the page; screenshot {}",
        windows,
        html.len(),
        shot.display()
    );
}

#[test]
fn a_crash_bundle_s_report_shows_the_death_and_the_blind_spot() {
    let mut svc = GoService::start("fixture", &["-pairs", "1", "-rate", "100", "-gc-every", "200ms"]);
    let agent = Agent::start(&agent_toml(
        "3s",
        &format!(
            "[crash]\ncooldown = \"1h\"\n{}",
            target_toml("svc", &svc.url, "2s", "60s", "")
        ),
    ));
    wait_for("two windows", Duration::from_secs(30), || {
        (agent.windows_kept("svc") >= 2).then_some(())
    });
    svc.proc.kill();
    let dir = wait_for("the crash bundle", Duration::from_secs(30), || {
        let (_, v) = agent.get("/v1/snapshots");
        v["snapshots"].as_array()?.iter().find_map(|s| {
            (s["phase"] == "complete" && (s["trigger"]["kind"] == "crash" || s["trigger_kind"] == "crash"))
                .then(|| s["path"].as_str().map(PathBuf::from))
                .flatten()
        })
    });
    let manifest = assert_bundle_valid(&dir);
    let page = dir.join("report.html");
    wait_for("the agent's report.html", Duration::from_secs(30), || {
        page.is_file().then_some(())
    });
    let html = std::fs::read_to_string(&page).expect("report.html");
    assert!(
        html.contains("<b>The target died (crash) at "),
        "the ending is told"
    );
    assert!(html.contains("<dt>recorded</dt><dd>up to the death, nothing after it</dd>"));

    let proxy = Proxy::start();
    let profile = tempfile::tempdir().expect("profile");
    let dom = without_scripts(
        &String::from_utf8(browse(&proxy, profile.path(), &page, &["--dump-dom"]).stdout)
            .expect("the DOM is UTF-8"),
    );
    assert_eq!(
        attr_of(&dom, "id=\"plots\"", "data-ready").as_deref(),
        Some("yes")
    );
    assert!(dom.contains("<line class=\"death\""), "the death is drawn");
    if manifest["ending"]["blind_spot_seconds"]
        .as_f64()
        .is_some_and(|b| b > 0.0)
    {
        assert!(dom.contains("<rect class=\"blind\""), "the blind spot is drawn");
    }
    assert!(
        !dom.contains("<rect class=\"post\""),
        "a crash records nothing after the trigger"
    );
    let from_page: Vec<String> = proxy.seen().into_iter().filter(|l| !browser_own(l)).collect();
    assert_eq!(from_page, Vec::<String>::new(), "requests left the page");

    let shot = repo_root().join("target/report/crash.png");
    std::fs::create_dir_all(shot.parent().expect("dir")).expect("mkdir");
    browse(
        &proxy,
        profile.path(),
        &page,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1400,1000",
        ],
    );
    println!(
        "CRASH report: ending {} (blind spot {}), screenshot {}",
        manifest["ending"]["seen"],
        manifest["ending"]["blind_spot_seconds"],
        shot.display()
    );
}
