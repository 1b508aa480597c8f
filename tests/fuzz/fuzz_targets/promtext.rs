//! The Prometheus text-format parser metric triggers use on whatever a
//! scraped endpoint answers.
//!
//! Oracles: never a panic; every line is a sample, skipped, or counted bad;
//! sample names are valid metric names taken from the text; a name filter
//! only removes samples.

#![no_main]

use flightrec::trigger::promtext;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let all = promtext::parse(&text, |_| true);
    let lines = text.split('\n').count();
    assert!(all.samples.len() + all.bad_lines <= lines);
    assert_eq!(all.first_error.is_some(), all.bad_lines > 0);
    for s in &all.samples {
        let first = s.name.as_bytes()[0];
        assert!(
            first.is_ascii_alphabetic() || first == b'_' || first == b':',
            "{:?}",
            s.name
        );
        assert!(s
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':'));
        for (k, _) in &s.labels {
            assert!(!k.is_empty() && !k.contains(':'), "{k:?}");
        }
    }
    let some = promtext::parse(&text, |n| n.ends_with("_bucket"));
    assert!(some.samples.len() <= all.samples.len());
    assert!(some.samples.iter().all(|s| s.name.ends_with("_bucket")));
});
