//! The trace framing walker on arbitrary bytes fed in arbitrary chunks.
//!
//! Oracles: it never panics; feeding the bytes in any chunking gives exactly
//! what one whole feed gives, generation numbers included (the collector
//! feeds network chunks); and the
//! prefix `keepable` says to keep of a cut stream is itself a trace that ends
//! cleanly with the same generations, batches and span.

#![no_main]

use gotrace::{FormatError, TraceInfo, Walker, HEADER_LEN};
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

/// The same verdict. "Not a trace" quotes the first bytes seen when it was
/// decided, which depends on how much the first chunk held: not compared.
fn same(a: &Result<TraceInfo, FormatError>, b: &Result<TraceInfo, FormatError>) -> bool {
    match (a, b) {
        (Err(FormatError::NotATrace(_)), Err(FormatError::NotATrace(_))) => true,
        _ => a == b,
    }
}

fuzz_target!(|data: &[u8]| {
    let whole = gotrace::inspect(data);

    let mut walker = Walker::new();
    let mut rng = seed(data);
    let mut rest = data;
    let mut fed = Ok(());
    while !rest.is_empty() && fed.is_ok() {
        // Mostly small chunks (where carry-over bugs live), now and then big ones.
        let r = next(&mut rng);
        let n = if r % 8 == 0 {
            (r >> 8) % 70_000
        } else {
            (r >> 8) % 64
        } as usize
            + 1;
        let (chunk, tail) = rest.split_at(n.min(rest.len()));
        fed = walker.feed(chunk);
        rest = tail;
    }
    let chunked = fed.clone().and_then(|()| walker.info());
    assert!(
        same(&whole, &chunked),
        "chunked feeding disagrees with one whole feed: {whole:?} vs {chunked:?}"
    );
    // The generation numbers a crash is judged by do not depend on chunking.
    if fed.is_ok() {
        let mut once = Walker::new();
        if once.feed(data).is_ok() {
            assert_eq!(
                once.generations(),
                walker.generations(),
                "generations after chunked feeding"
            );
        }
    }

    for stream_complete in [true, false] {
        let keep = gotrace::keepable(data, stream_complete);
        if fed.is_ok() {
            assert_eq!(
                keep,
                walker.finish(stream_complete),
                "finish after chunked feeding"
            );
        }
        let Ok((len, info)) = keep else { continue };
        assert!(
            len <= data.len() && len >= HEADER_LEN,
            "kept {len} of {}",
            data.len()
        );
        assert_eq!(info.whole_len, len);
        assert!(info.ends_cleanly);
        if !info.walked || len == data.len() {
            continue;
        }
        // A trimmed window must be a clean trace on its own: that is what
        // the agent writes into bundles.
        let again = gotrace::inspect(&data[..len]).expect("the kept prefix is a trace");
        assert!(again.ends_cleanly, "the kept prefix ends inside a batch");
        assert_eq!(
            (
                again.version,
                again.batches,
                again.generations,
                again.first_ts,
                again.last_ts
            ),
            (
                info.version,
                info.batches,
                info.generations,
                info.first_ts,
                info.last_ts
            ),
            "the kept prefix walks differently from what finish reported"
        );
    }
});
