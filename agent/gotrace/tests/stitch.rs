//! The stitcher on real runs of consecutive windows (testdata/stitch, see
//! testdata/stitch.sh): every stitched trace decodes (this crate's decoder is
//! exact against Go's parser, tests/oracle.rs), holds every event of every
//! window in order, and marks each gap; windows that cannot be joined start a
//! new piece or are left out, with the reason.

use std::io::{self, Read};
use std::path::PathBuf;

use gotrace::stitch::{
    gap_goroutine, Output, SeamOutcome, Stitcher, Summary, WindowOutcome, GAP_LOG_KEY, GAP_REGION,
};
use gotrace::{Decoder, EventKind, GoId};

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

fn run(name: &str) -> Vec<(String, Vec<u8>)> {
    (1..)
        .map(|i| testdata(&format!("stitch/{name}-{i}.trace")))
        .take_while(|p| p.is_file())
        .map(|p| {
            let label = p.file_name().and_then(|n| n.to_str()).unwrap_or("").to_string();
            (label, std::fs::read(&p).expect("read testdata"))
        })
        .collect()
}

/// Pieces kept in memory.
#[derive(Default)]
struct Mem(Vec<Vec<u8>>);

impl Output for &mut Mem {
    type Piece = Vec<u8>;
    fn begin(&mut self, index: usize) -> io::Result<Vec<u8>> {
        assert_eq!(index, self.0.len(), "pieces open in order");
        Ok(Vec::new())
    }
    fn end(&mut self, _: usize, piece: Vec<u8>) -> io::Result<()> {
        self.0.push(piece);
        Ok(())
    }
}

fn stitch(windows: &[(String, Vec<u8>)]) -> (Summary, Vec<Vec<u8>>) {
    let mut mem = Mem::default();
    let mut s = Stitcher::new(&mut mem);
    for (label, bytes) in windows {
        s.add_window(label, bytes.as_slice()).expect("stitch");
    }
    let summary = s.finish().expect("finish");
    (summary, mem.0)
}

/// One decoded event, enough to compare: time, kind, and Go's text
/// without the times (the Sync events and first statuses differ by design).
#[derive(Debug, Clone, PartialEq)]
struct Ev {
    time: i64,
    kind: EventKind,
    goroutine: GoId,
    text: String,
}

fn decode(trace: &[u8]) -> Vec<Ev> {
    let mut out = Vec::new();
    let mut d = Decoder::new();
    let mut sink = |e: &gotrace::Event<'_>| {
        out.push(Ev {
            time: e.time(),
            kind: e.kind(),
            goroutine: e.goroutine(),
            text: e.to_string(),
        })
    };
    d.feed(trace, &mut sink).expect("decodes");
    d.finish(true, &mut sink).expect("decodes whole");
    out
}

/// What a stitched trace must hold of a window: its events but the Sync
/// ones. A status (a transition from a state to itself, or from
/// Undetermined at a window's start, which the stitched trace knows) is
/// compared without its "from" state and its thread's context: the
/// stitched trace also knows what the thread held before it.
fn comparable(e: &Ev) -> Option<(i64, EventKind, String)> {
    if e.kind == EventKind::Sync {
        return None;
    }
    let mut status = false;
    let words: Vec<String> = e
        .text
        .split(' ')
        .map(|w| match w.split_once("->") {
            Some((a, b)) if a == b || a == "Undetermined" => {
                status = true;
                b.to_string()
            }
            _ => w.to_string(),
        })
        .collect();
    let skip = if status { 3 } else { 0 };
    let words = words[skip..].iter().filter(|w| {
        // A task that began in an earlier window: the stitched trace knows
        // its parent and type, the window alone does not.
        e.kind != EventKind::TaskEnd || !(w.starts_with("Parent=") || w.starts_with("Type="))
    });
    Some((e.time, e.kind, words.cloned().collect::<Vec<_>>().join(" ")))
}

#[test]
fn every_recorded_run_stitches_into_one_trace_holding_every_event_in_order() {
    for name in ["go1.26-regions", "go1.26-gc", "go1.26-burst", "go1.22"] {
        let windows = run(name);
        assert_eq!(windows.len(), 3, "{name}: testdata/stitch.sh records 3 windows");
        let (summary, pieces) = stitch(&windows);
        assert_eq!(pieces.len(), 1, "{name}: {:?}", summary.seams);
        assert_eq!(summary.pieces[0].windows, [0, 1, 2]);
        assert_eq!(summary.pieces[0].bytes as usize, pieces[0].len());
        let stitched = decode(&pieces[0]);
        let each: Vec<Vec<Ev>> = windows.iter().map(|(_, b)| decode(b)).collect();
        let added = summary.pieces[0].events_added;
        let seams: u64 = summary
            .seams
            .iter()
            .map(|s| match &s.outcome {
                SeamOutcome::Stitched { events, .. } => *events,
                SeamOutcome::Split { reason } => panic!("{name}: split: {reason}"),
            })
            .sum();
        assert_eq!(added, seams);
        // Go's count: every window's events, one closing Sync per window
        // but the last, plus what the seams added.
        let total: usize = each.iter().map(Vec::len).sum();
        assert_eq!(
            stitched.len() as u64,
            total as u64 - (windows.len() as u64 - 1) + added,
            "{name}"
        );
        // Each window's events, in its order, with their times.
        for (i, w) in each.iter().enumerate() {
            let (first, last) = (w[1].time, w[w.len() - 2].time);
            let want: Vec<_> = w.iter().filter_map(comparable).collect();
            let got: Vec<_> = stitched
                .iter()
                .filter(|e| e.time >= first && e.time <= last)
                .filter_map(comparable)
                .collect();
            assert_eq!(got.len(), want.len(), "{name}: window {i}");
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g, w, "{name}: window {i}");
            }
        }
    }
}

#[test]
fn each_gap_is_marked_by_a_goroutine_of_its_own_with_a_region_and_a_log_line() {
    let windows = run("go1.26-regions");
    let (summary, pieces) = stitch(&windows);
    let events = decode(&pieces[0]);
    for (n, seam) in summary.seams.iter().enumerate() {
        let marker = GoId(gap_goroutine(n as u64));
        let on: Vec<&Ev> = events.iter().filter(|e| e.goroutine == marker).collect();
        let begin = on
            .iter()
            .find(|e| e.kind == EventKind::RegionBegin)
            .unwrap_or_else(|| panic!("seam {n}: no region begins on {marker:?}"));
        let end = on
            .iter()
            .find(|e| e.kind == EventKind::RegionEnd)
            .expect("the region ends");
        assert!(begin.text.contains(GAP_REGION) && end.text.contains(GAP_REGION));
        let log = on.iter().find(|e| e.kind == EventKind::Log).expect("a log line");
        assert!(
            log.text.contains(&format!("Category=\"{GAP_LOG_KEY}\""))
                && log.text.contains("between go1.26-regions-")
                && log.text.contains("not traced"),
            "{}",
            log.text
        );
        // Inside the gap, between the windows' events.
        let gap = seam.gap_ns.expect("gap known") as i64;
        assert!(gap > 0 && end.time - begin.time < gap, "{gap} {begin:?} {end:?}");
    }
    // The runs's task holds regions open across the seams: the seam ends
    // them on their goroutine, so the next window's region ends match.
    let ended: Vec<&Ev> = events
        .iter()
        .filter(|e| {
            e.kind == EventKind::RegionEnd
                && e.text.contains("fixture-")
                && e.text.contains("M=1099511627776")
        })
        .collect();
    assert!(!ended.is_empty(), "no region was open across a seam in this run");
}

#[test]
fn gc_cycles_that_begin_or_end_in_a_gap_keep_the_sequence_numbers_following_on() {
    let (summary, pieces) = stitch(&run("go1.26-gc"));
    let gc: Vec<i8> = summary
        .seams
        .iter()
        .map(|s| match &s.outcome {
            SeamOutcome::Stitched { changes, .. } => changes.gc,
            SeamOutcome::Split { reason } => panic!("split: {reason}"),
        })
        .collect();
    assert!(
        gc.contains(&1) && gc.contains(&-1),
        "the recorded run has a cycle across each seam: {gc:?}"
    );
    let events = decode(&pieces[0]);
    let marks = events
        .iter()
        .filter(|e| e.text.contains("GC concurrent mark phase") && e.text.contains("M=1099511627776"))
        .count();
    assert_eq!(marks, 2, "one GC event per seam");
}

#[test]
fn windows_of_another_process_or_go_version_start_a_new_piece_and_say_why() {
    let regions = run("go1.26-regions");
    let gc = run("go1.26-gc");
    let old = run("go1.22");
    let windows = vec![
        regions[0].clone(),
        regions[1].clone(),
        gc[0].clone(),
        gc[1].clone(),
        old[0].clone(),
    ];
    let (summary, pieces) = stitch(&windows);
    assert_eq!(pieces.len(), 3);
    let windows_of: Vec<&[usize]> = summary.pieces.iter().map(|p| p.windows.as_slice()).collect();
    assert_eq!(windows_of, [&[0, 1][..], &[2, 3][..], &[4][..]]);
    let reasons: Vec<String> = summary
        .seams
        .iter()
        .filter_map(|s| match &s.outcome {
            SeamOutcome::Split { reason } => Some(reason.clone()),
            SeamOutcome::Stitched { .. } => None,
        })
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].contains("another process"), "{}", reasons[0]);
    assert!(
        reasons[1].contains("Go 1.22 trace, the one before it Go 1.26"),
        "{}",
        reasons[1]
    );
    for p in &pieces {
        decode(p);
    }
    assert_eq!(
        summary.pieces[2].events_added, 0,
        "a piece of one window is that window"
    );
    assert!(
        decode(&pieces[2]) == decode(&old[0].1),
        "a piece of one window yields that window's events"
    );
}

#[test]
fn old_cut_corrupt_and_foreign_windows_are_left_out_with_the_reason() {
    let regions = run("go1.26-regions");
    let header = regions[1].1[..16].to_vec();
    let cut = regions[1].1[..regions[1].1.len() - 10].to_vec();
    let old = std::fs::read(testdata("go1.21.trace")).expect("testdata");
    let windows = vec![
        regions[0].clone(),
        ("old".to_string(), old),
        ("html".to_string(), b"<html><body>nope</body></html>".to_vec()),
        ("empty".to_string(), header),
        ("cut".to_string(), cut),
        regions[2].clone(),
    ];
    let (summary, pieces) = stitch(&windows);
    let reasons: Vec<String> = summary.windows[1..5]
        .iter()
        .map(|w| match w {
            WindowOutcome::Skipped { reason } => reason.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(reasons[0].contains("old trace format (v1)"), "{}", reasons[0]);
    assert!(reasons[1].contains("not a Go trace"), "{}", reasons[1]);
    assert!(reasons[2].contains("holds no whole generation"), "{}", reasons[2]);
    assert!(reasons[3].contains("cut short"), "{}", reasons[3]);
    // The first and last windows still join, across the left-out ones.
    assert_eq!(pieces.len(), 1, "{:?}", summary.seams);
    assert_eq!(summary.pieces[0].windows, [0, 5]);
    decode(&pieces[0]);
}

/// A reader that hands out a few bytes at a time, as a slow disk or pipe.
struct Trickle<'a>(&'a [u8], usize);

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.1 = self.1 % 7 + 1;
        let n = self.1.min(buf.len()).min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

#[test]
fn reading_in_small_pieces_writes_the_same_bytes() {
    for name in ["go1.26-burst", "go1.22"] {
        let windows = run(name);
        let (_, whole) = stitch(&windows);
        let mut mem = Mem::default();
        let mut s = Stitcher::new(&mut mem);
        for (label, bytes) in &windows {
            s.add_window(label, Trickle(bytes, 0)).expect("stitch");
        }
        let summary = s.finish().expect("finish");
        assert_eq!(mem.0, whole, "{name}");
        // About one generation held, whatever the number of windows.
        let largest = windows.iter().map(|w| w.1.len()).max().unwrap_or(0);
        assert!(
            summary.peak_held <= 3 * largest,
            "{} > 3 x {largest}",
            summary.peak_held
        );
    }
}
