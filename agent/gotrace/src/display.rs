//! Events printed as Go's `Event.String()` prints them (what `go tool trace
//! -d=parsed` shows, one event per line): the decoder's output can be
//! diffed against Go's, line for line.

use std::fmt::{self, Write as _};
use std::io::{self, Write};

use crate::event::{Change, Event, Frame, RangeName};
use crate::resources::ResourceId;
use crate::spec::EventKind;

impl Event<'_> {
    /// The bytes Go's `Event.String()` returns for this event. Go writes
    /// function and file names as they are, so they need not be UTF-8;
    /// `Display` shows the same text with such bytes replaced.
    pub fn go_string(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(96);
        // Writing to a Vec cannot fail.
        let _ = self.write_go(&mut out);
        out
    }

    fn write_go(&self, out: &mut Vec<u8>) -> io::Result<()> {
        write!(
            out,
            "M={} P={} G={} {} Time={}",
            self.thread().0,
            self.proc().0,
            self.goroutine().0,
            self.kind().name(),
            self.time()
        )?;
        match self.kind() {
            EventKind::Metric => {
                if let Some(m) = self.metric() {
                    write!(out, " Name={} Value={}", Quoted(m.name.as_bytes()), Uint(m.value))?;
                }
            }
            EventKind::Label => {
                if let Some(l) = self.label() {
                    write!(out, " Label={} Resource={}", Quoted(l.label), l.resource)?;
                }
            }
            EventKind::RangeBegin | EventKind::RangeActive | EventKind::RangeEnd => {
                if let Some(r) = self.range() {
                    write!(out, " Name={} Scope={}", Quoted(&range_name(r.name)), r.scope)?;
                }
                if let Some(attrs) = self.range_attributes() {
                    out.extend_from_slice(b" Attributes=[");
                    for (i, a) in attrs.iter().enumerate() {
                        let sep = if i == 0 { "" } else { " " };
                        write!(out, "{sep}{}={}", Quoted(a.name.as_bytes()), Uint(a.value))?;
                    }
                    out.push(b']');
                }
            }
            EventKind::TaskBegin | EventKind::TaskEnd => {
                if let Some(t) = self.task() {
                    write!(
                        out,
                        " ID={} Parent={} Type={}",
                        t.id.0,
                        t.parent.0,
                        Quoted(t.kind)
                    )?;
                }
            }
            EventKind::RegionBegin | EventKind::RegionEnd => {
                if let Some(r) = self.region() {
                    write!(out, " Task={} Type={}", r.task.0, Quoted(r.kind))?;
                }
            }
            EventKind::Log => {
                if let Some(l) = self.log() {
                    write!(
                        out,
                        " Task={} Category={} Message={}",
                        l.task.0,
                        Quoted(l.category),
                        Quoted(l.message)
                    )?;
                }
            }
            EventKind::StateTransition => {
                if let Some(s) = self.state_transition() {
                    match (s.resource, s.change) {
                        (ResourceId::Goroutine(g), Change::Goroutine { from, to }) => {
                            write!(out, " GoID={} {from}->{to}", g.0)?
                        }
                        (ResourceId::Proc(p), Change::Proc { from, to }) => {
                            write!(out, " ProcID={} {from}->{to}", p.0)?
                        }
                        _ => {}
                    }
                    write!(out, " Reason={}", Quoted(s.reason))?;
                    if let Some(stack) = s.stack {
                        out.extend_from_slice(b"\nTransitionStack=\n");
                        frames(out, stack.frames())?;
                    }
                }
            }
            EventKind::Experimental => {
                if let Some(x) = self.experimental() {
                    write!(out, " Name={} Args=[", x.name)?;
                    for (i, (name, v)) in x.arg_names.iter().zip(x.args()).enumerate() {
                        let sep = if i == 0 { "" } else { ", " };
                        write!(out, "{sep}{name}={}", Uint(*v))?;
                    }
                    out.push(b']');
                }
            }
            EventKind::Sync => {
                if let Some(s) = self.sync() {
                    write!(out, " N={}", s.n)?;
                    if let Some(c) = s.clock {
                        write!(
                            out,
                            " Trace={} Mono={} Wall={}",
                            c.trace_ns,
                            c.mono_ns,
                            rfc3339_nano(c.wall_sec as i64, c.wall_nsec as i64)
                        )?;
                    }
                }
            }
            EventKind::Bad | EventKind::StackSample => {}
        }
        if let Some(stack) = self.stack() {
            out.extend_from_slice(b"\nStack=\n");
            frames(out, stack.frames())?;
        }
        Ok(())
    }
}

impl fmt::Display for Event<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.go_string()))
    }
}

fn range_name(name: RangeName<'_>) -> Vec<u8> {
    match name {
        RangeName::StopTheWorld(reason) => [&b"stop-the-world ("[..], reason, b")"].concat(),
        other => other.to_go_string().into_bytes(),
    }
}

/// Go's `printStack`, with the `"\t"` prefix `String()` gives it.
fn frames<'a>(out: &mut Vec<u8>, frames: impl Iterator<Item = Frame<'a>>) -> io::Result<()> {
    for fr in frames {
        out.push(b'\t');
        out.extend_from_slice(fr.func);
        writeln!(out, " @ {:#x}", fr.pc)?;
        out.extend_from_slice(b"\t\t");
        out.extend_from_slice(fr.file);
        writeln!(out, ":{}", fr.line)?;
    }
    Ok(())
}

/// Go's `Value.String()` of a `Uint64` value.
struct Uint(u64);

impl fmt::Display for Uint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Value{{Uint64({})}}", self.0)
    }
}

/// Bytes as Go's `%q` (`strconv.Quote`) prints them. Exact for ASCII and
/// invalid UTF-8; for other characters Go's `unicode.IsPrint` is
/// approximated by "not a control, space or format character".
struct Quoted<'a>(&'a [u8]);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                quote_char(f, c)?;
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        f.write_char('"')
    }
}

fn quote_char(f: &mut fmt::Formatter<'_>, c: char) -> fmt::Result {
    match c {
        '"' | '\\' => write!(f, "\\{c}"),
        '\x07' => f.write_str("\\a"),
        '\x08' => f.write_str("\\b"),
        '\x0c' => f.write_str("\\f"),
        '\n' => f.write_str("\\n"),
        '\r' => f.write_str("\\r"),
        '\t' => f.write_str("\\t"),
        '\x0b' => f.write_str("\\v"),
        ' '..='~' => f.write_char(c),
        c if (c as u32) < 0x80 => write!(f, "\\x{:02x}", c as u32),
        c if printable(c) => f.write_char(c),
        c if (c as u32) < 0x10000 => write!(f, "\\u{:04x}", c as u32),
        c => write!(f, "\\U{:08x}", c as u32),
    }
}

fn printable(c: char) -> bool {
    let u = c as u32;
    let format = matches!(
        u,
        0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x180e | 0x200b..=0x200f | 0x202a..=0x202e
            | 0x2060..=0x206f | 0xfeff | 0xfff9..=0xfffb | 0xe0001 | 0xe0020..=0xe007f
    );
    let private = matches!(u, 0xe000..=0xf8ff | 0xf0000..=0x10ffff);
    !c.is_control() && !c.is_whitespace() && !format && !private
}

/// `time.Unix(sec, nsec).UTC().Format(time.RFC3339Nano)`.
pub(crate) fn rfc3339_nano(sec: i64, nsec: i64) -> String {
    // time.Unix normalises nsec into [0, 1e9).
    let total = i128::from(sec) * 1_000_000_000 + i128::from(nsec);
    let secs = total.div_euclid(1_000_000_000);
    let nanos = total.rem_euclid(1_000_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400) as u32;
    let (y, m, d) = civil_from_days(days);
    let mut out = String::new();
    if y < 0 {
        let _ = write!(out, "-{:04}", -y);
    } else {
        let _ = write!(out, "{y:04}");
    }
    let _ = write!(
        out,
        "-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        tod / 3600,
        tod / 60 % 60,
        tod % 60
    );
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Year, month, day of a day count since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(z: i128) -> (i128, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i128::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_as_go_does() {
        let q = |b: &[u8]| Quoted(b).to_string();
        assert_eq!(q(b"GC mark assist"), "\"GC mark assist\"");
        assert_eq!(q(b"a\"b\\c\n\t\x00\x7f"), "\"a\\\"b\\\\c\\n\\t\\x00\\x7f\"");
        assert_eq!(q("héllo ☃".as_bytes()), "\"héllo ☃\"");
        assert_eq!(q(b"\xff\xe2\x82A"), "\"\\xff\\xe2\\x82A\"");
        assert_eq!(q("\u{200b}\u{a0}".as_bytes()), "\"\\u200b\\u00a0\"");
    }

    #[test]
    fn wall_clock_as_go_formats_it() {
        // Go: time.Unix(1764388691, 451134418).UTC().Format(time.RFC3339Nano)
        assert_eq!(
            rfc3339_nano(1_764_388_691, 451_134_418),
            "2025-11-29T03:58:11.451134418Z"
        );
        assert_eq!(rfc3339_nano(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_nano(951_782_400, 500_000_000), "2000-02-29T00:00:00.5Z");
        assert_eq!(rfc3339_nano(-1, 0), "1969-12-31T23:59:59Z");
        assert_eq!(rfc3339_nano(0, -1), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(rfc3339_nano(253_402_300_800, 0), "10000-01-01T00:00:00Z");
        let _ = rfc3339_nano(i64::MAX, i64::MAX);
        let _ = rfc3339_nano(i64::MIN, i64::MIN);
    }
}
