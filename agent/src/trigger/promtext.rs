//! A small parser for the Prometheus text exposition format, safe on any input.
//!
//! It reads what a metric trigger needs, samples with their labels and
//! values, and nothing else: `# HELP`/`# TYPE` lines, timestamps and
//! OpenMetrics exemplars are skipped. A line it cannot read is counted and
//! skipped; it never panics and never allocates more than the input holds, so
//! whatever a scraped endpoint answers (HTML, a truncated body, binary junk)
//! comes back as "no samples" plus a count of bad lines.

use std::borrow::Cow;

/// One sample line: `name{label="value",...} value [timestamp]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    pub name: &'a str,
    pub labels: Vec<(&'a str, Cow<'a, str>)>,
    pub value: f64,
}

impl Sample<'_> {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_ref())
    }
}

/// Why a line was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct LineError {
    pub line: usize,
    pub reason: &'static str,
}

/// What a parse produced: the samples kept and how many lines were bad.
#[derive(Debug, Default)]
pub struct Parsed<'a> {
    pub samples: Vec<Sample<'a>>,
    pub bad_lines: usize,
    /// The first bad line, to tell the user where the text went wrong.
    pub first_error: Option<LineError>,
}

/// Parses `text`, keeping only samples whose metric name `keep` accepts (the
/// others are skipped without reading their labels, so a scrape of thousands
/// of series costs little).
pub fn parse<'a>(text: &'a str, mut keep: impl FnMut(&str) -> bool) -> Parsed<'a> {
    let mut out = Parsed::default();
    for (i, raw) in text.split('\n').enumerate() {
        let line = raw
            .strip_suffix('\r')
            .unwrap_or(raw)
            .trim_start_matches([' ', '\t']);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_line(line, &mut keep) {
            Ok(Some(sample)) => out.samples.push(sample),
            Ok(None) => {}
            Err(reason) => {
                out.bad_lines += 1;
                if out.first_error.is_none() {
                    out.first_error = Some(LineError { line: i + 1, reason });
                }
            }
        }
    }
    out
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b':'
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

fn skip_blanks(s: &str) -> &str {
    s.trim_start_matches([' ', '\t'])
}

/// Splits a leading identifier off `s`; `colon` allows `:` (metric names do,
/// label names do not).
fn take_name(s: &str, colon: bool) -> Option<(&str, &str)> {
    let bytes = s.as_bytes();
    let first = *bytes.first()?;
    if !(is_name_start(first) && (colon || first != b':')) {
        return None;
    }
    let end = bytes
        .iter()
        .position(|&b| !(is_name_char(b) && (colon || b != b':')))
        .unwrap_or(bytes.len());
    // Every byte before `end` is ASCII, so `end` is a char boundary.
    Some(s.split_at(end))
}

fn parse_line<'a>(
    line: &'a str,
    keep: &mut impl FnMut(&str) -> bool,
) -> Result<Option<Sample<'a>>, &'static str> {
    let (name, rest) = take_name(line, true).ok_or("does not start with a metric name")?;
    if !keep(name) {
        return Ok(None);
    }
    let mut rest = skip_blanks(rest);
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = parse_labels(after, &mut labels)?;
    }
    let rest = skip_blanks(rest);
    let token_end = rest.find([' ', '\t']).unwrap_or(rest.len());
    let (token, tail) = rest.split_at(token_end);
    if token.is_empty() {
        return Err("no value");
    }
    let value = parse_value(token).ok_or("value is not a number")?;
    // What may follow: a timestamp, then (OpenMetrics) an exemplar after '#'.
    let tail = skip_blanks(tail);
    if !tail.is_empty() && !tail.starts_with('#') {
        let ts_end = tail.find([' ', '\t']).unwrap_or(tail.len());
        let (ts, after) = tail.split_at(ts_end);
        if parse_value(ts).is_none() {
            return Err("text after the value is neither a timestamp nor an exemplar");
        }
        let after = skip_blanks(after);
        if !after.is_empty() && !after.starts_with('#') {
            return Err("text after the timestamp");
        }
    }
    Ok(Some(Sample { name, labels, value }))
}

/// Reads `label="value",...}` (the `{` already consumed) and returns what
/// follows the closing brace.
fn parse_labels<'a>(
    mut s: &'a str,
    labels: &mut Vec<(&'a str, Cow<'a, str>)>,
) -> Result<&'a str, &'static str> {
    loop {
        s = skip_blanks(s);
        if let Some(rest) = s.strip_prefix('}') {
            return Ok(rest);
        }
        let (name, rest) = take_name(s, false).ok_or("bad label name")?;
        let rest = skip_blanks(rest);
        let rest = rest.strip_prefix('=').ok_or("label name without '='")?;
        let rest = skip_blanks(rest);
        let rest = rest.strip_prefix('"').ok_or("label value is not quoted")?;
        let (value, rest) = take_quoted(rest)?;
        labels.push((name, value));
        let rest = skip_blanks(rest);
        s = if let Some(r) = rest.strip_prefix(',') {
            r
        } else if rest.starts_with('}') {
            rest
        } else {
            return Err("expected ',' or '}' after a label");
        };
    }
}

/// Reads a label value up to its closing quote, undoing `\\`, `\"` and `\n`.
/// Borrows when there is nothing to unescape.
fn take_quoted(s: &str) -> Result<(Cow<'_, str>, &str), &'static str> {
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut owned: Option<String> = None;
    let mut copied_to = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let value = match owned {
                    Some(mut o) => {
                        o.push_str(&s[copied_to..i]);
                        Cow::Owned(o)
                    }
                    None => Cow::Borrowed(&s[..i]),
                };
                return Ok((value, &s[i + 1..]));
            }
            b'\\' => {
                let escaped = match bytes.get(i + 1) {
                    Some(b'\\') => '\\',
                    Some(b'"') => '"',
                    Some(b'n') => '\n',
                    Some(_) => return Err("unknown escape in a label value"),
                    None => return Err("label value ends inside an escape"),
                };
                let o = owned.get_or_insert_with(String::new);
                o.push_str(&s[copied_to..i]);
                o.push(escaped);
                // Both bytes are ASCII, so i + 2 is a char boundary.
                i += 2;
                copied_to = i;
            }
            _ => i += 1,
        }
    }
    Err("label value is not closed")
}

/// Go's `strconv.ParseFloat` spellings as the exposition format uses them.
fn parse_value(token: &str) -> Option<f64> {
    match token {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => {
            // Rust also accepts "inf", "infinity" and the like; the format
            // does not, and a word there means the line is not a sample.
            if token
                .bytes()
                .any(|b| b.is_ascii_alphabetic() && b != b'e' && b != b'E')
            {
                return None;
            }
            token.parse().ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT_GOLANG: &str = r#"# HELP fixture_request_duration_seconds Duration of /slow and /work requests.
# TYPE fixture_request_duration_seconds histogram
fixture_request_duration_seconds_bucket{handler="slow",le="0.001"} 0
fixture_request_duration_seconds_bucket{handler="slow",le="0.25"} 3
fixture_request_duration_seconds_bucket{handler="slow",le="+Inf"} 7
fixture_request_duration_seconds_sum{handler="slow"} 2.9071
fixture_request_duration_seconds_count{handler="slow"} 7
# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 12
"#;

    fn all(text: &str) -> Parsed<'_> {
        parse(text, |_| true)
    }

    #[test]
    fn reads_client_golang_output() {
        let p = all(CLIENT_GOLANG);
        assert_eq!(p.bad_lines, 0, "{:?}", p.first_error);
        assert_eq!(p.samples.len(), 6);
        let inf = &p.samples[2];
        assert_eq!(inf.name, "fixture_request_duration_seconds_bucket");
        assert_eq!(inf.label("handler"), Some("slow"));
        assert_eq!(inf.label("le"), Some("+Inf"));
        assert_eq!(inf.value, 7.0);
        assert_eq!(p.samples[5].name, "go_goroutines");
        assert!(p.samples[5].labels.is_empty());
    }

    #[test]
    fn filter_skips_other_metrics_without_reading_them() {
        let p = parse("other{broken 1\nwanted 2\n", |n| n == "wanted");
        assert_eq!(p.bad_lines, 0);
        assert_eq!(p.samples.len(), 1);
        assert_eq!(p.samples[0].value, 2.0);
    }

    #[test]
    fn escapes_timestamps_exemplars_and_odd_spacing() {
        let p = all(concat!(
            "m{a=\"x\\\"y\\\\z\\n\",b = \"\" , } 1.5e3 1700000000000\r\n",
            "  m{le=\"1\"} -Inf\n",
            "m NaN\n",
            "m_bucket{le=\"0.5\"} 4 # {trace_id=\"abc\"} 0.3 1.7e9\n",
        ));
        assert_eq!(p.bad_lines, 0, "{:?}", p.first_error);
        assert_eq!(p.samples[0].label("a"), Some("x\"y\\z\n"));
        assert_eq!(p.samples[0].label("b"), Some(""));
        assert_eq!(p.samples[0].value, 1500.0);
        assert_eq!(p.samples[1].value, f64::NEG_INFINITY);
        assert!(p.samples[2].value.is_nan());
        assert_eq!(p.samples[3].value, 4.0);
    }

    #[test]
    fn bad_lines_are_counted_with_the_first_one_named() {
        let p = all("ok 1\nm{a=\"unterminated} 1\n{x=\"1\"} 2\nm{1a=\"x\"} 3\nm 1 2 3\nm inf\nm\nok 2\n");
        assert_eq!(p.samples.len(), 2);
        assert_eq!(p.bad_lines, 6);
        assert_eq!(
            p.first_error,
            Some(LineError {
                line: 2,
                reason: "label value is not closed"
            })
        );
    }

    #[test]
    fn html_and_binary_junk_give_no_samples_and_no_panic() {
        let p = all("<html><body>Sign in</body></html>\n");
        assert!(p.samples.is_empty());
        assert_eq!(p.bad_lines, 1);
        // Every prefix of a real exposition, and every byte value in every
        // position of a short line, must parse without panicking.
        for end in 0..=CLIENT_GOLANG.len() {
            if CLIENT_GOLANG.is_char_boundary(end) {
                let _ = all(&CLIENT_GOLANG[..end]);
            }
        }
        let base = b"m{a=\"b\\\"c\",le=\"+Inf\"} 1 2".to_vec();
        for pos in 0..base.len() {
            for b in 0..=255u8 {
                let mut v = base.clone();
                v[pos] = b;
                let _ = all(&String::from_utf8_lossy(&v));
            }
        }
        let _ = all("m{a=\"\u{1F600}\\");
        let _ = all("\u{1F600}{");
    }
}
