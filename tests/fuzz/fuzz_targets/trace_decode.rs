//! The trace decoder and window summary on arbitrary bytes fed in arbitrary
//! chunks.
//!
//! Oracles: it never panics, nor does any accessor of the events it yields
//! (their Display calls them all); feeding the bytes in any chunking yields
//! exactly the events, summary and end that one whole feed yields (the agent
//! feeds network chunks); and a stream cut where the transport says it was
//! cut yields the events the whole generations before the cut yield as a
//! trace of their own.

#![no_main]

use gotrace::summary::{Summarizer, Summary};
use gotrace::{DecodeError, Decoder, Event};
use libfuzzer_sys::fuzz_target;

/// FNV-1a: a split pattern that follows the input, so mutating the input
/// also explores how it is cut into chunks.
fn seed(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    }) | 1
}

fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

#[derive(Debug, PartialEq)]
struct Outcome {
    events: u64,
    digest: u64,
    summary: Summary,
    result: Result<(), DecodeError>,
}

fn fnv(h: &mut u64, bytes: &[u8]) {
    for &b in bytes {
        *h = (*h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
}

/// Decodes `data` in the pieces `split` cuts, then ends the stream. The
/// digest covers what distinguishes events (type, arguments, context,
/// time, offset); with `text` every event is also printed, which runs every
/// accessor (once per input is enough: it is the slow part).
fn decode(data: &[u8], complete: bool, text: bool, mut split: impl FnMut(usize) -> usize) -> Outcome {
    let mut dec = Decoder::new();
    let mut s = Summarizer::new();
    let (mut events, mut digest) = (0u64, 0xcbf2_9ce4_8422_2325u64);
    let mut sink = |ev: &Event<'_>| {
        events += 1;
        fnv(&mut digest, &[ev.raw_type().unwrap_or(255)]);
        for v in ev.raw_args() {
            fnv(&mut digest, &v.to_le_bytes());
        }
        for v in [
            ev.time(),
            ev.goroutine().0,
            ev.proc().0,
            ev.thread().0,
            ev.offset() as i64,
        ] {
            fnv(&mut digest, &v.to_le_bytes());
        }
        if text {
            assert!(!ev.go_string().is_empty());
        }
        s.add(ev);
    };
    let mut rest = data;
    let mut result = Ok(());
    while !rest.is_empty() && result.is_ok() {
        let (chunk, tail) = rest.split_at(split(rest.len()).clamp(1, rest.len()));
        result = dec.feed(chunk, &mut sink);
        rest = tail;
    }
    if result.is_ok() {
        result = dec.finish(complete, &mut sink);
    }
    assert!(
        dec.feed(b"x", |_| {}).is_err(),
        "a finished decoder took more bytes"
    );
    Outcome {
        events,
        digest,
        summary: s.summary(),
        result,
    }
}

fuzz_target!(|data: &[u8]| {
    let whole = decode(data, true, true, |n| n);
    let mut rng = seed(data);
    let chunked = decode(data, true, false, |_| {
        // Mostly small chunks (where carry-over bugs live), now and then big ones.
        let r = next(&mut rng);
        (if r % 8 == 0 {
            (r >> 8) % 70_000
        } else {
            (r >> 8) % 64
        }) as usize
            + 1
    });
    assert_eq!(whole, chunked, "chunked feeding disagrees with one whole feed");

    if let Err(DecodeError::Corrupt { offset, .. }) = &whole.result {
        assert!(
            *offset <= data.len(),
            "error offset {offset} past the {} bytes",
            data.len()
        );
    }
    // Cut by the transport: the whole generations, a Sync, then the cut.
    let cut = decode(data, false, false, |n| n);
    if let Err(DecodeError::Cut { whole_len, received }) = cut.result {
        assert_eq!(received, data.len());
        assert!(whole_len <= data.len());
        let prefix = decode(&data[..whole_len], true, false, |n| n);
        assert_eq!(
            (cut.events, cut.digest, &cut.summary),
            (prefix.events, prefix.digest, &prefix.summary),
            "a cut stream yields other events than its whole generations"
        );
    }
});
