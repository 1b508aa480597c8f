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

pub use bridge::{gap_goroutine, SeamChanges, GAP_FUNCTION, GAP_LOG_KEY, GAP_REGION};
pub use sim::GAP_THREAD;

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
    /// The most bytes of trace held at once: the generation being written,
    /// what the reader and the checking decoder held.
    pub peak_held: usize,
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
    /// A bug: the piece being written went missing.
    #[error("internal error: no piece is being written")]
    Lost,
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
    /// It ended in a generation cut short, or corrupt.
    cut: Option<String>,
}

/// The piece being written.
struct Current<W: Write> {
    index: usize,
    /// Opened with the first generation written.
    w: Option<W>,
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

impl<W: Write> Current<W> {
    /// Whether the checker holds the state after the last generation
    /// written.
    fn checked(&self) -> bool {
        self.checker.as_ref().is_some_and(|c| c.next == self.gen)
    }
}

/// Stitches windows, given one at a time in time order, into pieces
/// written to an [`Output`].
pub struct Stitcher<O: Output> {
    out: O,
    cur: Option<Current<O::Piece>>,
    summary: Summary,
    pieces: usize,
    buf: Vec<u8>,
}

/// Whether a generation is checked by the decoder before it is written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Check {
    No,
    Yes,
}

impl<O: Output> Stitcher<O> {
    pub fn new(out: O) -> Self {
        Stitcher {
            out,
            cur: None,
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
            let written = match scan::scan(gen, first.then_some(&mut start)) {
                Err(e) => Err(e),
                Ok(scan) if first => self.first_generation(window, label, version, gen, &scan, &start)?,
                Ok(scan) => self.next_generation(gen, &scan, last)?,
            };
            let held = reader.held() + self.buf.len() + self.checker_held();
            self.summary.peak_held = self.summary.peak_held.max(held);
            if let Err(why) = written {
                dropped = Some(format!("{label}, generation {}: {why}", gen.number));
                break;
            }
            generations += 1;
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
        let Some(cur) = self.cur.as_mut() else {
            return skip("no piece took it".into());
        };
        if let Some(l) = cur.last.as_mut() {
            l.cut = dropped.clone();
        }
        Ok(WindowOutcome::Stitched {
            piece: cur.index,
            generations,
            dropped,
        })
    }

    fn checker_held(&self) -> usize {
        self.cur
            .as_ref()
            .and_then(|c| c.checker.as_ref())
            .map_or(0, |c| c.dec.buffered())
    }

    /// A window's first generation: joins the current piece through a seam,
    /// or starts a piece. An error says why nothing of it was written.
    fn first_generation(
        &mut self,
        window: usize,
        label: &str,
        version: GoVersion,
        gen: &Gen,
        scan: &GenScan,
        start: &StartState,
    ) -> Result<Result<(), String>, StitchError> {
        let seams = self.summary.seams.len();
        if let Some(cur) = self.cur.as_mut() {
            if let Some(prev) = cur.last.take() {
                let gap = gap_ns(prev.max_ticks, gen, scan);
                let joined = joinable(cur, &prev, version, gen)
                    .and_then(|()| seam(cur, &prev, label, gen, scan, start, gap, seams, &mut self.buf));
                let (after, before) = (prev.window, window);
                match joined {
                    Ok((events, changes)) => {
                        self.summary.seams.push(Seam {
                            after,
                            before,
                            gap_ns: gap,
                            outcome: SeamOutcome::Stitched { events, changes },
                        });
                        let cur = self.cur.as_mut().ok_or(StitchError::Lost)?;
                        cur.piece.events_added += events;
                        // The seam fed the checker already.
                        self.write(Check::Yes)?;
                        self.joined(window, label, gen, scan);
                        return Ok(Ok(()));
                    }
                    Err(reason) => {
                        // The decoder is spent either way; a window that
                        // does not decode on its own is left out too.
                        let alone = standalone(version, gen, scan, &mut self.buf);
                        let reason = match &alone {
                            Ok(()) => reason,
                            Err(why) => format!("{label} does not decode: {why}"),
                        };
                        self.summary.seams.push(Seam {
                            after,
                            before,
                            gap_ns: gap,
                            outcome: SeamOutcome::Split { reason },
                        });
                        if let Err(why) = alone {
                            self.close()?;
                            return Ok(Err(format!("Go's parser would reject it: {why}")));
                        }
                    }
                }
            }
        }
        self.close()?;
        self.cur = Some(Current {
            index: self.pieces,
            w: None,
            version,
            gen: 1,
            bytes: 0,
            gc: GcTrack::default(),
            checker: None,
            last: None,
            piece: Piece {
                index: self.pieces,
                version,
                windows: Vec::new(),
                generations: 0,
                bytes: 0,
                events_added: 0,
            },
            gc_offset: None,
        });
        // The first generation of a piece is always checked: it is written
        // only if it decodes.
        if let Err(why) = self.encode(gen, scan, Check::Yes)? {
            self.cur = None;
            return Ok(Err(why));
        }
        self.write(Check::Yes)?;
        self.pieces += 1;
        self.joined(window, label, gen, scan);
        Ok(Ok(()))
    }

    /// Records that window `window` is now the piece's last.
    fn joined(&mut self, window: usize, label: &str, gen: &Gen, scan: &GenScan) {
        if let Some(cur) = self.cur.as_mut() {
            cur.piece.windows.push(window);
            cur.last = Some(Last {
                window,
                label: label.to_string(),
                number: gen.number,
                max_ticks: scan.max_ticks,
                cut: None,
            });
        }
    }

    fn next_generation(
        &mut self,
        gen: &Gen,
        scan: &GenScan,
        last: bool,
    ) -> Result<Result<(), String>, StitchError> {
        let Some(cur) = self.cur.as_ref() else {
            return Ok(Err("no piece to write to".into()));
        };
        let regions_open = cur.checked() && cur.checker.as_ref().is_some_and(Checker::open_regions);
        let check = if last || scan.regions || regions_open {
            Check::Yes
        } else {
            Check::No
        };
        if let Err(why) = self.encode(gen, scan, check)? {
            return Ok(Err(why));
        }
        self.write(check)?;
        if let Some(l) = self.cur.as_mut().and_then(|c| c.last.as_mut()) {
            l.number = gen.number;
            l.max_ticks = scan.max_ticks;
        }
        Ok(Ok(()))
    }

    /// Encodes a generation into the buffer as the piece's next, with the
    /// window's GC offset; checks it when asked (a fresh checker takes it
    /// as a first generation when the checker did not follow the piece).
    fn encode(&mut self, gen: &Gen, scan: &GenScan, check: Check) -> Result<Result<(), String>, StitchError> {
        let Some(cur) = self.cur.as_mut() else {
            return Ok(Err("no piece to write to".into()));
        };
        let offset = cur.gc_offset.or_else(|| gc_offset(&cur.gc, scan));
        let number = cur.gen;
        self.buf.clear();
        if let Err(e) = encode_batches(gen, scan, number, offset.unwrap_or(0), &mut self.buf) {
            return Ok(Err(e));
        }
        if cur.version.marks_generation_end() {
            encode::put_end_of_generation(&mut self.buf);
        }
        if check == Check::Yes {
            if !cur.checked() {
                cur.checker = Checker::new(cur.version);
            }
            let verdict = match &mut cur.checker {
                Some(c) => c.feed(number, &self.buf),
                None => Err("the decoder did not start".into()),
            };
            if let Err(why) = verdict {
                cur.checker = None;
                return Ok(Err(format!("Go's parser would reject it: {why}")));
            }
        }
        cur.gc_offset = offset;
        cur.gc = advance_gc(cur.gc, scan, offset);
        Ok(Ok(()))
    }

    /// Writes the buffer as the piece's next generation, opening the piece
    /// first if need be. A generation not checked breaks the checker's
    /// following of the piece.
    fn write(&mut self, check: Check) -> Result<(), StitchError> {
        let Some(cur) = self.cur.as_mut() else {
            return Err(StitchError::Lost);
        };
        let piece = cur.index;
        let fail = |source| StitchError::Write { piece, source };
        if cur.w.is_none() {
            let mut w = self.out.begin(piece).map_err(fail)?;
            let h = encode::header(cur.version);
            w.write_all(&h).map_err(fail)?;
            cur.bytes += h.len() as u64;
            cur.w = Some(w);
        }
        if let Some(w) = cur.w.as_mut() {
            w.write_all(&self.buf).map_err(fail)?;
        }
        cur.bytes += self.buf.len() as u64;
        cur.gen += 1;
        cur.piece.generations += 1;
        if check == Check::No {
            if let Some(c) = cur.checker.as_mut() {
                // Not fed: the checker's state is now behind the piece.
                c.next = 0;
            }
        }
        Ok(())
    }

    fn close(&mut self) -> Result<(), StitchError> {
        let Some(cur) = self.cur.take() else {
            return Ok(());
        };
        let Some(w) = cur.w else {
            return Ok(());
        };
        let index = cur.index;
        let mut piece = cur.piece;
        piece.bytes = cur.bytes;
        self.out
            .end(index, w)
            .map_err(|source| StitchError::Write { piece: index, source })?;
        self.summary.pieces.push(piece);
        Ok(())
    }
}

/// Checks a window's first generation on its own.
fn standalone(version: GoVersion, gen: &Gen, scan: &GenScan, buf: &mut Vec<u8>) -> Result<(), String> {
    buf.clear();
    encode_batches(gen, scan, 1, 0, buf)?;
    if version.marks_generation_end() {
        encode::put_end_of_generation(buf);
    }
    let mut c = Checker::new(version).ok_or("the decoder did not start")?;
    c.feed(1, buf)
}

/// The gap from the previous window's last event to a generation.
fn gap_ns(after: u64, gen: &Gen, scan: &GenScan) -> Option<u64> {
    let before = gen.min_ticks();
    let freq = scan.freq.filter(|&f| f > 0)?;
    let ticks = before.checked_sub(after)?;
    Some((ticks as f64 * (1e9 / freq as f64)) as u64)
}

/// Whether a window can follow the last one of the piece at all.
fn joinable<W: Write>(cur: &Current<W>, prev: &Last, version: GoVersion, gen: &Gen) -> Result<(), String> {
    if version != cur.version {
        return Err(format!(
            "the window is a Go {version} trace, the one before it Go {}: another program",
            cur.version
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
    if !cur.checked() {
        return Err(format!("the end of {} could not be decoded", prev.label));
    }
    Ok(())
}

/// Builds the seam and the next window's first generation behind it into
/// `buf`, checked by the decoder; returns the events added.
#[allow(clippy::too_many_arguments)]
fn seam<W: Write>(
    cur: &mut Current<W>,
    prev: &Last,
    label: &str,
    gen: &Gen,
    scan: &GenScan,
    start: &StartState,
    gap: Option<u64>,
    index: usize,
    buf: &mut Vec<u8>,
) -> Result<(u64, SeamChanges), String> {
    let checker = cur.checker.as_mut().ok_or("no decoder state at the seam")?;
    let gap_text = gap.map_or("an unknown time".to_string(), |ns| {
        format!("{:.3}ms", ns as f64 / 1e6)
    });
    let note = format!("gap of {gap_text} between {} and {label}: not traced", prev.label);
    let seam = bridge::Seam {
        end: checker.dec.ordering(),
        start,
        after: prev.max_ticks,
        before: gen.min_ticks(),
        gc: cur.gc,
        index: index as u64,
        strings_from: scan.max_string + 1,
        stacks_from: scan.max_stack + 1,
        note,
    };
    let built = bridge::build(&seam)?;
    let offset = gc_offset(&built.gc, scan);
    buf.clear();
    let number = cur.gen;
    for b in &built.batches {
        b.put(buf, number);
    }
    encode_batches(gen, scan, number, offset.unwrap_or(0), buf)?;
    built.tables.put(buf, number, built.first_tick);
    if cur.version.marks_generation_end() {
        encode::put_end_of_generation(buf);
    }
    checker
        .feed(number, buf)
        .map_err(|e| format!("Go's parser would reject the seam: {e}"))?;
    cur.gc = advance_gc(built.gc, scan, offset);
    cur.gc_offset = offset;
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
