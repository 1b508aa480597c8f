//! The decoder and the summary against Go's parser on every real trace in
//! `testdata/`: the event count, every event's text (Go's `Event.String()`,
//! through an FNV-1a digest) and every summary field must equal what the Go
//! oracle `tests/go/cmd/tracesummary` wrote into `<file>.summary.json`.
//! Then what must not change the output (chunking), and what a cut or
//! corrupted stream yields.

use std::path::PathBuf;

use gotrace::summary::{Summarizer, Summary};
use gotrace::{DecodeError, Decoder, Event};
use serde_json::Value;

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

/// Every trace in testdata with the oracle's line for it.
fn fixtures() -> Vec<(String, Vec<u8>, Value)> {
    let mut out = Vec::new();
    let mut names: Vec<String> = std::fs::read_dir(testdata())
        .expect("testdata")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".trace"))
        .collect();
    names.sort();
    for name in names {
        let data = std::fs::read(testdata().join(&name)).expect("read trace");
        let json = std::fs::read_to_string(testdata().join(format!("{name}.summary.json")))
            .unwrap_or_else(|e| panic!("{name}.summary.json (run testdata/summaries.sh): {e}"));
        let oracle: Value = serde_json::from_str(&json).expect("oracle JSON");
        out.push((name, data, oracle));
    }
    assert!(out.len() >= 6, "testdata holds {} traces", out.len());
    out
}

/// FNV-1a 64, as Go's `hash/fnv` New64a.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, b: &[u8]) {
        for &x in b {
            self.0 = (self.0 ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// What a decode yields: events, their text digest, the summary, the end.
#[derive(Debug, PartialEq)]
struct Outcome {
    events: u64,
    digest: Fnv,
    summary: Summary,
    result: Result<(), DecodeError>,
}

fn decode(data: &[u8], chunk: usize, complete: bool) -> Outcome {
    decode_with(data, chunk, complete, true)
}

/// `text`: digest every event's Display (slow in debug builds); without,
/// the digest covers each event's kind, time and offset.
fn decode_with(data: &[u8], chunk: usize, complete: bool, text: bool) -> Outcome {
    let mut dec = Decoder::new();
    let mut s = Summarizer::new();
    let mut digest = Fnv::new();
    let mut events = 0;
    let mut sink = |ev: &Event<'_>| {
        events += 1;
        if text {
            digest.write(&ev.go_string());
            digest.write(b"\n");
        } else {
            digest.write(&ev.time().to_le_bytes());
            digest.write(&ev.offset().to_le_bytes());
            digest.write(ev.kind().name().as_bytes());
        }
        s.add(ev);
    };
    let mut result = Ok(());
    for piece in data.chunks(chunk.max(1)) {
        result = dec.feed(piece, &mut sink);
        if result.is_err() {
            break;
        }
    }
    if result.is_ok() {
        result = dec.finish(complete, &mut sink);
    }
    Outcome {
        events,
        digest,
        summary: s.summary(),
        result,
    }
}

/// The summary's fields under the names of docs/summary.md.
fn fields(s: &Summary) -> Vec<(&'static str, Value)> {
    vec![
        ("events", s.events.into()),
        ("first_ns", s.first_ns.into()),
        ("last_ns", s.last_ns.into()),
        ("gc_cycles", s.gc_cycles.into()),
        ("stw_count", s.stw_count.into()),
        ("stw_total_ns", s.stw_total_ns.into()),
        ("stw_max_ns", s.stw_max_ns.into()),
        ("stw_max_reason", s.stw_max_reason.clone().into()),
        ("gc_assist_ns", s.gc_assist_ns.into()),
        ("goroutines_max", s.goroutines_max.into()),
        ("runnable_max", s.runnable_max.into()),
        ("sched_latency_samples", s.sched_latency_samples.into()),
        ("sched_latency_p50_ns", s.sched_latency_p50_ns.into()),
        ("sched_latency_p99_ns", s.sched_latency_p99_ns.into()),
        ("sched_latency_max_ns", s.sched_latency_max_ns.into()),
        ("syscall_ns", s.syscall_ns.into()),
        ("heap_max_bytes", s.heap_max_bytes.into()),
        ("heap_goal_max_bytes", s.heap_goal_max_bytes.into()),
        ("gomaxprocs", s.gomaxprocs.into()),
    ]
}

#[test]
fn every_fixture_decodes_and_summarises_exactly_as_go_does() {
    for (name, data, oracle) in fixtures() {
        let got = decode(&data, data.len(), true);
        if oracle["ok"] != Value::Bool(true) {
            let err = oracle["error"].as_str().unwrap_or_default();
            assert!(
                err.starts_with("not summarised: v1 trace"),
                "{name}: oracle says {err}"
            );
            assert!(
                matches!(got.result, Err(DecodeError::V1 { .. })),
                "{name}: {:?}",
                got.result
            );
            let msg = got.result.expect_err("v1").to_string();
            assert!(
                msg.starts_with("not supported: v1 trace (Go 1.21 or older)"),
                "{msg}"
            );
            continue;
        }
        assert_eq!(got.result, Ok(()), "{name}");
        assert_eq!(Value::from(got.events), oracle["events"], "{name}: events");
        assert_eq!(
            format!("{:016x}", got.digest.0),
            oracle["events_fnv"].as_str().unwrap_or_default(),
            "{name}: the events' text differs from Go's (diff `cargo run --example dump` with `go tool trace -d=parsed`)"
        );
        for (field, value) in fields(&got.summary) {
            assert_eq!(value, oracle[field], "{name}: {field}");
        }
        // The streaming summary says the same.
        assert_eq!(
            gotrace::summary::summarize(&data).as_ref(),
            Ok(&got.summary),
            "{name}"
        );
    }
}

#[test]
fn chunking_does_not_change_the_output() {
    for (name, data, _) in fixtures() {
        // Every event's text once; the kind, time and offset of every event
        // (cheaper in a debug build) in every chunking.
        assert_eq!(
            decode(&data, 7, true),
            decode(&data, data.len(), true),
            "{name} in 7-byte chunks"
        );
        let whole = decode_with(&data, data.len(), true, false);
        for chunk in [1, 2, 3, 64, 1000, 4096, 65536] {
            let chunked = decode_with(&data, chunk, true, false);
            assert_eq!(chunked, whole, "{name} in {chunk}-byte chunks");
        }
    }
}

/// Stream offsets where each record (batch or end marker) of a v2 trace
/// starts, and where the trace ends.
fn record_starts(data: &[u8]) -> Vec<usize> {
    let mut at = 16;
    let mut starts = Vec::new();
    while at < data.len() {
        starts.push(at);
        if data[at] == 52 {
            at += 1;
            continue;
        }
        let mut pos = at + if data[at] == 49 { 2 } else { 1 };
        let mut fields = [0u64; 4];
        for f in &mut fields {
            let (mut v, mut shift) = (0u64, 0);
            loop {
                let b = data[pos];
                pos += 1;
                v |= u64::from(b & 0x7f) << shift;
                shift += 7;
                if b < 0x80 {
                    break;
                }
            }
            *f = v;
        }
        at = pos + fields[3] as usize;
    }
    starts.push(data.len());
    starts
}

#[test]
fn every_cut_yields_its_whole_generations_then_an_error() {
    for (name, data, oracle) in fixtures() {
        if oracle["ok"] != Value::Bool(true) {
            continue;
        }
        let starts = record_starts(&data);
        let mut cuts: Vec<usize> = (16..data.len()).step_by((data.len() / 100).max(1)).collect();
        for &s in starts.iter().step_by((starts.len() / 40).max(1)) {
            cuts.extend(
                [s - 1, s, s + 1]
                    .into_iter()
                    .filter(|&c| c >= 16 && c <= data.len()),
            );
        }
        cuts.sort_unstable();
        cuts.dedup();
        // What the whole generations before a cut yield as a trace on their
        // own (whose end is a Sync event, like the one before the error).
        let mut prefixes = std::collections::HashMap::new();
        for cut in cuts {
            // The transport says the stream was cut; or it says it ended,
            // but it ended inside a batch.
            let inside = !starts.contains(&cut);
            for complete in [false, true].into_iter().filter(|&c| !c || inside) {
                let got = decode_with(&data[..cut], 4096, complete, false);
                let Err(DecodeError::Cut { whole_len, received }) = got.result else {
                    panic!("{name} cut at {cut} (complete: {complete}): {:?}", got.result);
                };
                assert_eq!(received, cut, "{name} cut at {cut}");
                assert!(
                    whole_len <= cut && starts.contains(&whole_len),
                    "{name} {cut}: {whole_len}"
                );
                let prefix = prefixes
                    .entry(whole_len)
                    .or_insert_with(|| decode_with(&data[..whole_len], whole_len, true, false));
                assert_eq!(
                    (got.events, got.digest, &got.summary),
                    (prefix.events, prefix.digest, &prefix.summary),
                    "{name} cut at {cut}, whole up to {whole_len}"
                );
            }
        }
    }
}

/// xorshift64: reproducible noise without a dependency.
fn noise(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn corrupted_bytes_give_an_error_at_an_offset_and_never_a_panic() {
    let mut rng = 0x00c0_ffee;
    let mut errors = 0;
    let mut tried = 0;
    for (name, data, oracle) in fixtures() {
        if oracle["ok"] != Value::Bool(true) {
            continue;
        }
        let rounds = 400 * 13_000 / data.len().max(13_000);
        for _ in 0..rounds {
            let mut bad = data.clone();
            for _ in 0..1 + noise(&mut rng) % 3 {
                let at = 16 + (noise(&mut rng) as usize) % (bad.len() - 16);
                bad[at] = match noise(&mut rng) % 4 {
                    0 => bad[at] ^ 0x80,
                    1 => bad[at].wrapping_add(1),
                    _ => noise(&mut rng) as u8,
                };
            }
            tried += 1;
            let whole = decode_with(&bad, bad.len(), true, false);
            match &whole.result {
                Ok(()) => {}
                Err(DecodeError::Corrupt { offset, what }) => {
                    errors += 1;
                    assert!(
                        *offset <= bad.len(),
                        "{name}: offset {offset} past the end ({what})"
                    );
                }
                // A size made larger can run the last batch past the end.
                Err(DecodeError::Cut { .. }) => errors += 1,
                Err(e) => panic!("{name}: {e}"),
            }
            let chunk = 1 + (noise(&mut rng) as usize) % 5000;
            let chunked = decode_with(&bad, chunk, true, false);
            assert_eq!(chunked, whole, "{name} corrupted, {chunk}-byte chunks");
        }
    }
    assert!(
        errors * 2 > tried,
        "only {errors} of {tried} corruptions were noticed"
    );
}

#[cfg(feature = "serde")]
#[test]
fn serde_writes_the_doc_s_field_names() {
    let (_, data, oracle) = fixtures()
        .into_iter()
        .find(|(n, ..)| n == "go1.26.trace")
        .expect("go1.26.trace");
    let summary = gotrace::summary::summarize(&data).expect("valid");
    let json = serde_json::to_value(&summary).expect("serialize");
    let object = json.as_object().expect("an object");
    assert_eq!(object.len(), fields(&summary).len());
    for (field, value) in fields(&summary) {
        assert_eq!(object.get(field), Some(&value), "{field}");
        assert_eq!(object.get(field), oracle.get(field), "{field}");
    }
    let back: Summary = serde_json::from_value(json).expect("deserialize");
    assert_eq!(back, summary);
}

/// Found by the differential test against Go: Go's `String()` writes a
/// function name as it is, bytes that are not UTF-8 included.
#[test]
fn names_that_are_not_utf8_print_as_go_s_bytes() {
    let mut data = std::fs::read(testdata().join("go1.26.trace")).expect("read");
    let at = data
        .windows(14)
        .position(|w| w == b"runtime.gopark")
        .expect("a stack names runtime.gopark");
    data[at + 9] = 0xff;
    let mut seen = 0;
    let mut dec = Decoder::new();
    let mut sink = |ev: &Event<'_>| {
        let go = ev.go_string();
        if go.windows(14).any(|w| w == b"runtime.g\xffpark") {
            seen += 1;
            assert!(ev.to_string().contains("runtime.g\u{fffd}park"));
        }
    };
    dec.feed(&data, &mut sink).expect("valid");
    dec.finish(true, &mut sink).expect("valid");
    assert!(seen > 0);
}

/// Bytes of each generation of a v2 trace, from its batch headers.
fn generation_sizes(data: &[u8]) -> Vec<usize> {
    let starts = record_starts(data);
    let mut sizes: Vec<(u64, usize)> = Vec::new();
    for w in starts.windows(2) {
        let (at, next) = (w[0], w[1]);
        if data[at] == 52 {
            continue;
        }
        let mut pos = at + if data[at] == 49 { 2 } else { 1 };
        let (mut gen, mut shift) = (0u64, 0);
        loop {
            let b = data[pos];
            pos += 1;
            gen |= u64::from(b & 0x7f) << shift;
            shift += 7;
            if b < 0x80 {
                break;
            }
        }
        match sizes.last_mut() {
            Some((g, size)) if *g == gen => *size += next - at,
            _ => sizes.push((gen, next - at)),
        }
    }
    sizes.into_iter().map(|(_, size)| size).collect()
}

/// The decoder holds the generation being received, not the trace: what it
/// buffers falls back after every generation.
#[test]
fn memory_is_one_generation_not_the_trace() {
    for (name, data, oracle) in fixtures() {
        if oracle["ok"] != Value::Bool(true) {
            continue;
        }
        let sizes = generation_sizes(&data);
        let largest = sizes.iter().copied().max().unwrap_or(0);
        let mut dec = Decoder::new();
        let mut peak = 0;
        for chunk in data.chunks(1000) {
            dec.feed(chunk, |_| {}).expect("valid");
            peak = peak.max(dec.buffered());
        }
        dec.finish(true, |_| {}).expect("valid");
        assert!(
            peak > 0 && peak <= largest + 1000,
            "{name}: held {peak}, generations {sizes:?}"
        );
        if name == "go1.26-burst.trace" {
            // Two generations of about the same size: half the trace.
            assert_eq!(sizes.len(), 2);
            assert!(
                peak * 10 < data.len() * 6,
                "{name}: held {peak} of {}",
                data.len()
            );
        }
    }
}

/// Go hands a generation's experimental batches to the Sync event that
/// starts it; here the AllocFree experiment of a `GODEBUG=traceallocfree=1`
/// window, whose experimental events the oracle test already checks.
#[test]
fn experimental_batches_come_with_the_generation_s_sync() {
    let data = std::fs::read(testdata().join("go1.26-allocfree.trace")).expect("read");
    let (mut batches, mut bytes, mut experimental) = (0, 0, 0);
    let mut dec = Decoder::new();
    let mut sink = |ev: &Event<'_>| {
        if let Some(sync) = ev.sync() {
            for b in sync.experimental_batches() {
                assert_eq!(b.experiment, 1, "AllocFree");
                batches += 1;
                bytes += b.data.len();
            }
        }
        if let Some(x) = ev.experimental() {
            assert_eq!(x.experiment, "AllocFree");
            assert_eq!(x.args().len(), x.arg_names.len());
            experimental += 1;
        }
    };
    dec.feed(&data, &mut sink).expect("valid");
    dec.finish(true, &mut sink).expect("valid");
    assert!(
        batches > 0 && bytes > 0 && experimental > 1000,
        "{batches} batches, {experimental} events"
    );
}
