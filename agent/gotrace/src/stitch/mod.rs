//! Stitching consecutive windows of one Go process into one trace Go's parser accepts.
//!
//! Each `/debug/pprof/trace` window is a trace of its own: its generations
//! restart where the previous window's ended, and the program ran untraced
//! in the few milliseconds between them. Glued together they do not parse
//! (`inconsistent status for goroutine N: old Waiting vs. new Runnable`).
//! A [`Stitcher`] writes them as one trace instead:
//!
//! - generations are renumbered 1, 2, 3… and GC sequence numbers follow on
//!   across windows, as Go's parser wants of one trace;
//! - at each seam, the first generation of the next window starts with
//!   events that carry every goroutine, P and thread from the state the
//!   previous window ended in to the state the next one starts in,
//!   timestamped inside the gap, and a goroutine of flightrec's own marks
//!   the gap with a user region and a log line (see [`bridge`](self) for
//!   which events, and [`GAP_REGION`]);
//! - each seam is checked by this crate's decoder, which is exact against
//!   Go's parser, fed the generations on both sides of it; a seam that does
//!   not check, or windows that cannot be joined at all (another Go
//!   version, a new process, windows out of order, a window cut short),
//!   end the current piece and start another, with the reason said.
//!
//! Every event of every window is in the output, in its window's order:
//! a stitched piece yields as many events as its windows do together, less
//! one closing Sync per window but the last, plus the seam's events
//! ([`Piece::events_added`]). It streams: one generation of input is held at
//! a time, plus what the checking decoder holds of the generations at a
//! seam, whatever the number and size of the windows.

mod bridge;
mod input;
mod scan;
mod sim;

use std::io::{self, Read, Write};

pub use bridge::{gap_goroutine, SeamChanges, GAP_FUNCTION, GAP_LOG_KEY, GAP_REGION, GAP_THREAD};

use self::bridge::{GcPhase, GcTrack};
use self::input::{Gen, Next, Role, WindowReader};
use self::scan::{GenScan, StartState};
use crate::encode::{self, BatchKind, EventBatches};
use crate::header::GoVersion;
use crate::spec::{EV_FREQUENCY, EV_GC_END, EV_SYNC};
use crate::Decoder;

/// Where the stitched pieces go: one writer per piece.
pub trait Output {
    type Piece: Write;
    /// Opens piece `index` (from 0).
    fn begin(&mut self, index: usize) -> io::Result<Self::Piece>;
    /// Closes a piece once its last generation is written.
    fn end(&mut self, index: usize, piece: Self::Piece) -> io::Result<()>;
}

/// One stitched trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub index: usize,
    pub version: GoVersion,
    /// Windows in it, by the index of [`Stitcher::add_window`] calls.
    pub windows: Vec<usize>,
    pub generations: u64,
    pub bytes: u64,
    /// Events the seams added (statuses, transitions, the gap markers).
    pub events_added: u64,
}

/// What happened between two windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seam {
    /// The windows on either side (indices of [`Stitcher::add_window`]).
    pub after: usize,
    pub before: usize,
    /// The untraced time between the last event of one and the first
    /// generation of the other, in the target's clock.
    pub gap_ns: Option<u64>,
    pub outcome: SeamOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeamOutcome {
    /// Joined by `events` events.
    Stitched { events: u64, changes: SeamChanges },
    /// A new piece starts with the next window.
    Split { reason: String },
}

/// What became of each window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowOutcome {
    /// In piece `piece`, with `generations` of its generations; `dropped`
    /// says why the rest of it (if any) is not.
    Stitched {
        piece: usize,
        generations: u64,
        dropped: Option<String>,
    },
    /// Left out: not a v2 trace, or no whole generation.
    Skipped { reason: String },
}

/// What a stitch made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub pieces: Vec<Piece>,
    pub seams: Vec<Seam>,
    pub windows: Vec<WindowOutcome>,
}

/// Why stitching stopped: the input or output failed.
#[derive(Debug, thiserror::Error)]
pub enum StitchError {
    #[error("cannot read window {window}: {source}")]
    Read {
        window: usize,
        #[source]
        source: io::Error,
    },
    #[error("cannot write piece {piece}: {source}")]
    Write {
        piece: usize,
        #[source]
        source: io::Error,
    },
}

/// This crate's decoder following the output at the seams.
struct Checker {
    dec: Decoder,
    /// Output generation number it expects next.
    next: u64,
}

impl Checker {
    fn new(version: GoVersion) -> Option<Checker> {
        let mut dec = Decoder::new();
        dec.feed(&encode::header(version), |_| {}).ok()?;
        Some(Checker { dec, next: 1 })
    }

    /// Feeds one whole generation and makes the decoder yield it.
    fn feed(&mut self, number: u64, bytes: &[u8]) -> Result<(), String> {
        self.dec.feed(bytes, |_| {}).map_err(|e| e.to_string())?;
        self.dec.end_generation(|_| {}).map_err(|e| e.to_string())?;
        self.next = number + 1;
        Ok(())
    }

    fn open_regions(&self) -> bool {
        self.dec.ordering().g.values().any(|s| !s.regions.is_empty())
    }
}

/// The last window written to the current piece.
struct Last {
    window: usize,
    label: String,
    /// The runtime's number of its last generation written.
    number: u64,
    max_ticks: u64,
    /// The checker holds the state after its last generation.
    checked: bool,
    /// It ended in a generation cut short, or corrupt.
    cut: Option<String>,
}

struct Open<W: Write> {
    index: usize,
    w: W,
    version: GoVersion,
    /// Next output generation number.
    gen: u64,
    bytes: u64,
    gc: GcTrack,
    checker: Option<Checker>,
    last: Option<Last>,
    piece: Piece,
    /// The current window's GC sequence offset, once known.
    gc_offset: Option<i128>,
}

impl<W: Write> Open<W> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), StitchError> {
        let piece = self.index;
        self.w
            .write_all(bytes)
            .map_err(|source| StitchError::Write { piece, source })?;
        self.bytes += bytes.len() as u64;
        self.gen += 1;
        self.piece.generations += 1;
        Ok(())
    }
}

/// Stitches windows, given one at a time in time order, into pieces
/// written to an [`Output`].
pub struct Stitcher<O: Output> {
    out: O,
    open: Option<Open<O::Piece>>,
    summary: Summary,
    pieces: usize,
    buf: Vec<u8>,
}

impl<O: Output> Stitcher<O> {
    pub fn new(out: O) -> Self {
        Stitcher {
            out,
            open: None,
            summary: Summary::default(),
            pieces: 0,
            buf: Vec::new(),
        }
    }

    /// Reads the next window to its end and writes its generations.
    /// `label` names it in the gap's log line (a file name, say).
    pub fn add_window(&mut self, label: &str, r: impl Read) -> Result<&WindowOutcome, StitchError> {
        let window = self.summary.windows.len();
        let outcome = self.window(window, label, r)?;
        self.summary.windows.push(outcome);
        Ok(&self.summary.windows[window])
    }

    /// Closes the last piece and says what was made.
    pub fn finish(mut self) -> Result<Summary, StitchError> {
        self.close()?;
        Ok(self.summary)
    }

    fn window(&mut self, window: usize, label: &str, r: impl Read) -> Result<WindowOutcome, StitchError> {
        let read_err = |source| StitchError::Read { window, source };
        let skip = |reason: String| Ok(WindowOutcome::Skipped { reason });
        let mut reader = match WindowReader::open(r).map_err(read_err)? {
            Ok(r) => r,
            Err(e) => return skip(format!("not a Go trace: {e}")),
        };
        let version = reader.version();
        if !version.is_v2() {
            return skip(format!(
                "Go {version} writes the old trace format (v1), which has no generations to stitch"
            ));
        }
        if !matches!(version.0, 22 | 23 | 25 | 26) {
            return skip(format!("trace version go {version} is not one Go's parser reads"));
        }
        let mut generations = 0u64;
        let mut piece = 0;
        let mut dropped = None;
        loop {
            let last = match reader.next().map_err(read_err)? {
                Ok(Next::Gen { last }) => last,
                Ok(Next::End) => break,
                Err(e) => {
                    dropped = Some(format!("{label} is corrupt: {e}"));
                    break;
                }
            };
            let gen = &reader.current;
            let mut start = StartState::default();
            let first = generations == 0;
            let scan = match scan::scan(gen, first.then_some(&mut start)) {
                Ok(s) => s,
                Err(e) => {
                    dropped = Some(format!("{label}, generation {}: {e}", gen.number));
                    break;
                }
            };
            let written = if first {
                self.first_generation(window, label, version, gen, &scan, &start, last)?
            } else {
                self.next_generation(gen, &scan, last)?
            };
            match written {
                Ok(p) => piece = p,
                Err(why) => {
                    dropped = Some(format!("{label}, generation {}: {why}", gen.number));
                    break;
                }
            }
            generations += 1;
            if let Some(l) = self.open.as_mut().and_then(|o| o.last.as_mut()) {
                l.number = gen.number;
                l.max_ticks = scan.max_ticks;
            }
        }
        if reader.dropped > 0 && dropped.is_none() {
            dropped = Some(format!(
                "{label} ends in a generation cut short ({} bytes left out)",
                reader.dropped
            ));
        }
        if generations == 0 {
            return skip(dropped.unwrap_or_else(|| format!("{label} holds no whole generation")));
        }
        if let Some(l) = self.open.as_mut().and_then(|o| o.last.as_mut()) {
            l.cut = dropped.clone();
        }
        Ok(WindowOutcome::Stitched {
            piece,
            generations,
            dropped,
        })
    }

    /// A window's first generation: joins the current piece through a seam,
    /// or starts a piece. The inner error says why the generation could
    /// not be written at all.
    #[allow(clippy::too_many_arguments)]
    fn first_generation(
        &mut self,
        window: usize,
        label: &str,
        version: GoVersion,
        gen: &Gen,
        scan: &GenScan,
        start: &StartState,
        last: bool,
    ) -> Result<Result<usize, String>, StitchError> {
        let seams = self.summary.seams.len();
        if let Some(open) = self.open.as_mut() {
            if let Some(prev) = open.last.take() {
                let gap = gap_ns(prev.max_ticks, gen, scan);
                let joined = joinable(open, &prev, version, gen)
                    .and_then(|()| seam(open, &prev, label, gen, scan, start, gap, seams, &mut self.buf));
                let (after, before) = (prev.window, window);
                match joined {
                    Ok((events, changes)) => {
                        open.write(&self.buf)?;
                        open.piece.events_added += events;
                        open.piece.windows.push(window);
                        open.last = Some(Last {
                            window,
                            label: label.to_string(),
                            number: gen.number,
                            max_ticks: scan.max_ticks,
                            checked: true,
                            cut: None,
                        });
                        self.summary.seams.push(Seam {
                            after,
                            before,
                            gap_ns: gap,
                            outcome: SeamOutcome::Stitched { events, changes },
                        });
                        return Ok(Ok(open.index));
                    }
                    Err(reason) => {
                        self.summary.seams.push(Seam {
                            after,
                            before,
                            gap_ns: gap,
                            outcome: SeamOutcome::Split { reason },
                        });
                    }
                }
            }
        }
        self.close()?;
        self.begin(version)?;
        let Some(open) = self.open.as_mut() else {
            return Ok(Err("no piece to write to".into()));
        };
        open.piece.windows.push(window);
        open.last = Some(Last {
            window,
            label: label.to_string(),
            number: gen.number,
            max_ticks: scan.max_ticks,
            checked: false,
            cut: None,
        });
        let feed = last || scan.regions;
        Ok(write_gen(open, gen, scan, feed, &mut self.buf)?.map(|()| open.index))
    }

    fn next_generation(
        &mut self,
        gen: &Gen,
        scan: &GenScan,
        last: bool,
    ) -> Result<Result<usize, String>, StitchError> {
        let Some(open) = self.open.as_mut() else {
            return Ok(Err("no piece to write to".into()));
        };
        let regions_open = open
            .checker
            .as_ref()
            .is_some_and(|c| c.next == open.gen && c.open_regions());
        let feed = last || scan.regions || regions_open;
        Ok(write_gen(open, gen, scan, feed, &mut self.buf)?.map(|()| open.index))
    }

    fn begin(&mut self, version: GoVersion) -> Result<(), StitchError> {
        let index = self.pieces;
        let fail = |source| StitchError::Write { piece: index, source };
        let mut w = self.out.begin(index).map_err(fail)?;
        let h = encode::header(version);
        w.write_all(&h).map_err(fail)?;
        self.pieces += 1;
        self.open = Some(Open {
            index,
            w,
            version,
            gen: 1,
            bytes: h.len() as u64,
            gc: GcTrack::default(),
            checker: None,
            last: None,
            piece: Piece {
                index,
                version,
                windows: Vec::new(),
                generations: 0,
                bytes: 0,
                events_added: 0,
            },
            gc_offset: None,
        });
        Ok(())
    }

    fn close(&mut self) -> Result<(), StitchError> {
        let Some(open) = self.open.take() else {
            return Ok(());
        };
        let index = open.index;
        let mut piece = open.piece;
        piece.bytes = open.bytes;
        self.out
            .end(index, open.w)
            .map_err(|source| StitchError::Write { piece: index, source })?;
        self.summary.pieces.push(piece);
        Ok(())
    }
}

/// The gap from the previous window's last event to a generation.
fn gap_ns(after: u64, gen: &Gen, scan: &GenScan) -> Option<u64> {
    let before = gen.min_ticks();
    let freq = scan.freq.filter(|&f| f > 0)?;
    let ticks = before.checked_sub(after)?;
    Some((ticks as f64 * (1e9 / freq as f64)) as u64)
}

/// Whether a window can follow the last one of the piece at all.
fn joinable<W: Write>(open: &Open<W>, prev: &Last, version: GoVersion, gen: &Gen) -> Result<(), String> {
    if version != open.version {
        return Err(format!(
            "the window is a Go {version} trace, the one before it Go {}: another program",
            open.version
        ));
    }
    if gen.number <= prev.number {
        return Err(format!(
            "its generations start at {} after the previous window's ended at {}: another process (a restart?)",
            gen.number, prev.number
        ));
    }
    if gen.min_ticks() <= prev.max_ticks {
        return Err("it does not start after the previous window ends, in the target's clock".into());
    }
    if let Some(why) = &prev.cut {
        return Err(why.clone());
    }
    if !prev.checked || open.checker.as_ref().is_none_or(|c| c.next != open.gen) {
        return Err(format!("the end of {} could not be decoded", prev.label));
    }
    Ok(())
}

/// Builds the seam and the next window's first generation behind it into
/// `buf`, checked by the decoder; returns the events added.
#[allow(clippy::too_many_arguments)]
fn seam<W: Write>(
    open: &mut Open<W>,
    prev: &Last,
    label: &str,
    gen: &Gen,
    scan: &GenScan,
    start: &StartState,
    gap: Option<u64>,
    index: usize,
    buf: &mut Vec<u8>,
) -> Result<(u64, SeamChanges), String> {
    let checker = open.checker.as_mut().ok_or("no decoder state at the seam")?;
    let gap_text = gap.map_or("an unknown time".to_string(), |ns| {
        format!("{:.3}ms", ns as f64 / 1e6)
    });
    let note = format!("gap of {gap_text} between {} and {label}: not traced", prev.label);
    let seam = bridge::Seam {
        end: checker.dec.ordering(),
        start,
        after: prev.max_ticks,
        before: gen.min_ticks(),
        gc: open.gc,
        index: index as u64,
        strings_from: scan.max_string + 1,
        stacks_from: scan.max_stack + 1,
        note,
    };
    let built = bridge::build(&seam)?;
    let offset = gc_offset(&built.gc, scan);
    buf.clear();
    let number = open.gen;
    for b in &built.batches {
        b.put(buf, number);
    }
    encode_batches(gen, scan, number, offset.unwrap_or(0), buf)?;
    built.tables.put(buf, number, built.first_tick);
    if open.version.marks_generation_end() {
        encode::put_end_of_generation(buf);
    }
    checker
        .feed(number, buf)
        .map_err(|e| format!("Go's parser would reject the seam: {e}"))?;
    open.gc = advance_gc(built.gc, scan, offset);
    open.gc_offset = offset;
    Ok((built.events, built.changes))
}

/// The GC sequence offset of a window, from its first generation with GC
/// events: its first one follows the output's last.
fn gc_offset(gc: &GcTrack, scan: &GenScan) -> Option<i128> {
    let (first, _) = scan.gc_first?;
    Some(match gc.phase {
        // Go's parser takes any number for the first GC event it sees.
        GcPhase::Unknown => 0,
        _ => i128::from(gc.last_seq) + 1 - i128::from(first),
    })
}

fn advance_gc(mut gc: GcTrack, scan: &GenScan, offset: Option<i128>) -> GcTrack {
    if let (Some((seq, typ)), Some(off)) = (scan.gc_last, offset) {
        gc.last_seq = (i128::from(seq) + off).clamp(0, i128::from(u64::MAX)) as u64;
        gc.phase = if typ == EV_GC_END {
            GcPhase::Off
        } else {
            GcPhase::On
        };
    }
    gc
}

/// Writes a generation that needs no seam, renumbered, and feeds it to the
/// checker when the next seam or open regions need it. The inner error
/// says why it could not be written (nothing was).
fn write_gen<W: Write>(
    open: &mut Open<W>,
    gen: &Gen,
    scan: &GenScan,
    feed: bool,
    buf: &mut Vec<u8>,
) -> Result<Result<(), String>, StitchError> {
    let offset = open.gc_offset.or_else(|| gc_offset(&open.gc, scan));
    let number = open.gen;
    buf.clear();
    if let Err(e) = encode_batches(gen, scan, number, offset.unwrap_or(0), buf) {
        return Ok(Err(e));
    }
    if open.version.marks_generation_end() {
        encode::put_end_of_generation(buf);
    }
    open.write(buf)?;
    open.gc_offset = offset;
    open.gc = advance_gc(open.gc, scan, offset);
    if feed {
        if open.checker.as_ref().is_none_or(|c| c.next != number) {
            open.checker = Checker::new(open.version);
        }
        if let Some(c) = &mut open.checker {
            if c.feed(number, buf).is_err() {
                open.checker = None;
            }
        }
    }
    if let Some(l) = &mut open.last {
        l.checked = feed && open.checker.is_some();
    }
    Ok(Ok(()))
}

/// Appends the batches of `gen` as generation `number`, with GC sequence
/// numbers moved by `offset`.
fn encode_batches(
    gen: &Gen,
    scan: &GenScan,
    number: u64,
    offset: i128,
    buf: &mut Vec<u8>,
) -> Result<(), String> {
    let mut scratch = Vec::new();
    for (i, b) in gen.batches.iter().enumerate() {
        let body = gen.body(b);
        let kind = match b.role {
            Role::Experimental(e) => BatchKind::Experimental(e),
            _ => BatchKind::Events,
        };
        if offset != 0 && scan.gc_batches.contains(&i) {
            scratch.clear();
            scan::rewrite_gc(body, b.ticks, offset, &mut scratch)?;
            if scratch.len() as u64 > crate::spec::MAX_BATCH_SIZE {
                // Longer sequence numbers pushed it past Go's limit: split
                // it into batches of whole events.
                let mut eb = EventBatches::new(b.m);
                let mut bad = None;
                scan::for_each_event(&scratch, b.ticks, |typ, ticks, a, _| {
                    if let Err(e) = eb.event(typ, ticks, a) {
                        bad.get_or_insert(e.to_string());
                    }
                })?;
                if let Some(e) = bad {
                    return Err(e);
                }
                eb.put(buf, number);
                continue;
            }
            encode::put_batch(buf, kind, number, b.m, b.ticks, &scratch);
        } else {
            encode::put_batch(buf, kind, number, b.m, b.ticks, body);
        }
    }
    Ok(())
}

/// The frequency a sync batch announces.
pub(crate) fn frequency(body: &[u8]) -> Option<u64> {
    let skip = usize::from(body.first() == Some(&EV_SYNC));
    let rest = body.get(skip..)?;
    if rest.first() != Some(&EV_FREQUENCY) {
        return None;
    }
    match crate::wire::uvarint(&rest[1..]) {
        crate::wire::Uvarint::Value(v, _) => Some(v),
        _ => None,
    }
}
