//! Writing the v2 wire format: the header, batches, events and the string and stack tables a generation carries.
//!
//! The inverse of the framing and event readers of this crate, for writers
//! that re-encode traces: a batch keeps the layout Go's `readBatch` reads
//! (`type | uvarint gen | uvarint M | uvarint timestamp | uvarint size |
//! body`), an event is its type byte and uvarint arguments, the first of
//! which is the time since the previous event of the batch. Nothing here
//! checks that the events make sense together: [`crate::Decoder`] does.

use std::io::{self, Write};

use crate::header::GoVersion;
use crate::spec::{
    spec, EventType, EV_END_OF_GENERATION, EV_EVENT_BATCH, EV_EXPERIMENTAL_BATCH, EV_STACK, EV_STACKS,
    EV_STRING, EV_STRINGS, MAX_BATCH_SIZE, MAX_FRAMES_PER_STACK, MAX_STRING_LEN,
};

/// Go's `NoThread` as written in a batch header: the M of batches no
/// thread wrote (tables, statuses written at a generation's end).
pub const NO_THREAD: u64 = u64::MAX;

/// Appends `v` as an unsigned LEB128 varint.
#[inline]
pub fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The 16-byte header Go writes first: `go 1.NN trace` padded with NULs.
pub fn header(version: GoVersion) -> [u8; 16] {
    let mut h = [0u8; 16];
    let text = format!("go 1.{} trace", version.0);
    let n = text.len().min(16);
    h[..n].copy_from_slice(&text.as_bytes()[..n]);
    h
}

/// Where a batch comes from: an M's events, or an experiment's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchKind {
    /// Type 1: events, or a structural table (strings, stacks, CPU samples,
    /// the clock), told apart by the body's first byte.
    Events,
    /// Type 49 with its experiment byte: data of an experiment.
    Experimental(u8),
}

/// Appends one batch, header and body, to `out`.
pub fn put_batch(out: &mut Vec<u8>, kind: BatchKind, gen: u64, m: u64, ticks: u64, body: &[u8]) {
    match kind {
        BatchKind::Events => out.push(EV_EVENT_BATCH),
        BatchKind::Experimental(exp) => {
            out.push(EV_EXPERIMENTAL_BATCH);
            out.push(exp);
        }
    }
    put_uvarint(out, gen);
    put_uvarint(out, m);
    put_uvarint(out, ticks);
    put_uvarint(out, body.len() as u64);
    out.extend_from_slice(body);
}

/// Appends Go 1.26's one-byte end of a generation.
pub fn put_end_of_generation(out: &mut Vec<u8>) {
    out.push(EV_END_OF_GENERATION);
}

/// Why an event cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("event type {0} has no timestamp: it cannot go in an event batch")]
    Untimed(EventType),
    #[error("event {name} takes {want} arguments after its time, {got} given")]
    Arity {
        name: &'static str,
        want: usize,
        got: usize,
    },
    #[error("event at tick {at} comes before the previous one of its batch (tick {last})")]
    Backwards { at: u64, last: u64 },
    #[error("string {id} is {len} bytes; Go reads at most {MAX_STRING_LEN}")]
    LongString { id: u64, len: usize },
    #[error("stack {id} has {frames} frames; Go reads at most {MAX_FRAMES_PER_STACK}")]
    DeepStack { id: u64, frames: usize },
}

/// The timed events of one M, in time order, cut into batches no larger
/// than Go accepts. Each batch is stamped with the time of its first event.
#[derive(Debug, Clone)]
pub struct EventBatches {
    m: u64,
    /// Finished batches: (first tick, body).
    done: Vec<(u64, Vec<u8>)>,
    body: Vec<u8>,
    first: u64,
    last: u64,
    events: u64,
}

/// Room kept under Go's batch limit for the event being added.
const EVENT_ROOM: usize = 1 + 6 * 10;

impl EventBatches {
    pub fn new(m: u64) -> Self {
        EventBatches {
            m,
            done: Vec::new(),
            body: Vec::new(),
            first: 0,
            last: 0,
            events: 0,
        }
    }

    pub fn thread(&self) -> u64 {
        self.m
    }

    /// Events added so far.
    pub fn len(&self) -> u64 {
        self.events
    }

    pub fn is_empty(&self) -> bool {
        self.events == 0
    }

    /// Adds an event of type `typ` at `ticks` with its arguments after the
    /// time (as many as Go's event table gives it).
    pub fn event(&mut self, typ: EventType, ticks: u64, args: &[u64]) -> Result<(), EncodeError> {
        let s = spec(typ);
        if !s.timed {
            return Err(EncodeError::Untimed(typ));
        }
        let want = s.args.len() - 1;
        if args.len() != want {
            return Err(EncodeError::Arity {
                name: s.name,
                want,
                got: args.len(),
            });
        }
        if self.events > 0 && ticks < self.last {
            return Err(EncodeError::Backwards {
                at: ticks,
                last: self.last,
            });
        }
        if self.body.len() + EVENT_ROOM > MAX_BATCH_SIZE as usize {
            self.done.push((self.first, std::mem::take(&mut self.body)));
        }
        if self.body.is_empty() {
            // A batch is stamped with its first event, whose delta is 0.
            self.first = ticks;
            self.last = ticks;
        }
        self.body.push(typ);
        put_uvarint(&mut self.body, ticks - self.last);
        for &a in args {
            put_uvarint(&mut self.body, a);
        }
        self.last = ticks;
        self.events += 1;
        Ok(())
    }

    /// Appends the batches to `out` as batches of generation `gen`.
    pub fn put(&self, out: &mut Vec<u8>, gen: u64) {
        for (ticks, body) in &self.done {
            put_batch(out, BatchKind::Events, gen, self.m, *ticks, body);
        }
        if !self.body.is_empty() {
            put_batch(out, BatchKind::Events, gen, self.m, self.first, &self.body);
        }
    }
}

/// Strings and stacks to add to a generation's tables, with ids the
/// caller chose unused there. Go writes the tables at a generation's end;
/// their batches may go anywhere in it.
#[derive(Debug, Clone, Default)]
pub struct Tables {
    strings: Vec<(u64, Vec<u8>)>,
    /// (id, frames as (pc, func string id, file string id, line)).
    stacks: Vec<(u64, Vec<[u64; 4]>)>,
}

impl Tables {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.strings.is_empty() && self.stacks.is_empty()
    }

    pub fn string(&mut self, id: u64, s: &[u8]) -> Result<(), EncodeError> {
        if s.len() as u64 > MAX_STRING_LEN {
            return Err(EncodeError::LongString { id, len: s.len() });
        }
        self.strings.push((id, s.to_vec()));
        Ok(())
    }

    /// A stack, innermost frame first: (pc, func string id, file string
    /// id, line) each.
    pub fn stack(&mut self, id: u64, frames: &[[u64; 4]]) -> Result<(), EncodeError> {
        if frames.len() as u64 > MAX_FRAMES_PER_STACK {
            return Err(EncodeError::DeepStack {
                id,
                frames: frames.len(),
            });
        }
        self.stacks.push((id, frames.to_vec()));
        Ok(())
    }

    /// Appends a strings batch and a stacks batch (each only if it has
    /// entries), cut under Go's batch limit, stamped `ticks`.
    pub fn put(&self, out: &mut Vec<u8>, gen: u64, ticks: u64) {
        let mut body = vec![EV_STRINGS];
        for (id, s) in &self.strings {
            let mut entry = vec![EV_STRING];
            put_uvarint(&mut entry, *id);
            put_uvarint(&mut entry, s.len() as u64);
            entry.extend_from_slice(s);
            flush_if_full(out, &mut body, entry.len(), EV_STRINGS, gen, ticks);
            body.extend_from_slice(&entry);
        }
        if body.len() > 1 {
            put_batch(out, BatchKind::Events, gen, NO_THREAD, ticks, &body);
        }
        let mut body = vec![EV_STACKS];
        for (id, frames) in &self.stacks {
            let mut entry = vec![EV_STACK];
            put_uvarint(&mut entry, *id);
            put_uvarint(&mut entry, frames.len() as u64);
            for f in frames {
                for &v in f {
                    put_uvarint(&mut entry, v);
                }
            }
            flush_if_full(out, &mut body, entry.len(), EV_STACKS, gen, ticks);
            body.extend_from_slice(&entry);
        }
        if body.len() > 1 {
            put_batch(out, BatchKind::Events, gen, NO_THREAD, ticks, &body);
        }
    }
}

/// Starts a new table batch when the next entry would not fit.
fn flush_if_full(out: &mut Vec<u8>, body: &mut Vec<u8>, next: usize, kind: u8, gen: u64, ticks: u64) {
    if body.len() > 1 && body.len() + next > MAX_BATCH_SIZE as usize {
        put_batch(out, BatchKind::Events, gen, NO_THREAD, ticks, body);
        body.clear();
        body.push(kind);
    }
}

/// Writes a v2 trace to `w`: the header, then what the caller appends a
/// generation at a time. Counts the bytes written.
pub struct Encoder<W: Write> {
    w: W,
    version: GoVersion,
    written: u64,
}

impl<W: Write> Encoder<W> {
    /// Writes the header of a trace of `version`.
    pub fn new(mut w: W, version: GoVersion) -> io::Result<Self> {
        let h = header(version);
        w.write_all(&h)?;
        Ok(Encoder {
            w,
            version,
            written: h.len() as u64,
        })
    }

    pub fn version(&self) -> GoVersion {
        self.version
    }

    /// Writes the bytes of a whole generation (its batches, and for Go
    /// 1.26 its end marker), as built with the functions of this module.
    pub fn generation(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.w.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Bytes written, the header included.
    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn into_inner(self) -> W {
        self.w
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::*;

    #[test]
    fn uvarints_are_go_s() {
        let mut b = Vec::new();
        for v in [0u64, 1, 127, 128, 300, u64::MAX] {
            b.clear();
            put_uvarint(&mut b, v);
            match crate::wire::uvarint(&b) {
                crate::wire::Uvarint::Value(got, n) => assert_eq!((got, n), (v, b.len())),
                _ => panic!("{v} did not read back"),
            }
        }
        b.clear();
        put_uvarint(&mut b, 300);
        assert_eq!(b, [0xac, 0x02]);
    }

    #[test]
    fn headers_read_back_with_their_version() {
        for v in [22, 23, 25, 26] {
            let h = header(GoVersion(v));
            assert_eq!(crate::check_header(&h), Ok(GoVersion(v)));
        }
    }

    #[test]
    fn events_take_their_arity_and_times_never_go_back() {
        let mut b = EventBatches::new(7);
        b.event(EV_GO_START, 100, &[5, 1]).expect("GoStart");
        b.event(EV_GO_STOP, 110, &[0, 0]).expect("GoStop");
        assert_eq!(
            b.event(EV_GO_STOP, 120, &[0]),
            Err(EncodeError::Arity {
                name: "GoStop",
                want: 2,
                got: 1
            })
        );
        assert_eq!(
            b.event(EV_GO_START, 109, &[5, 2]),
            Err(EncodeError::Backwards { at: 109, last: 110 })
        );
        assert_eq!(
            b.event(EV_STRINGS, 200, &[]),
            Err(EncodeError::Untimed(EV_STRINGS))
        );
        let mut out = Vec::new();
        b.put(&mut out, 3);
        assert_eq!(
            out,
            [
                EV_EVENT_BATCH,
                3,
                7,
                100,
                8,
                EV_GO_START,
                0,
                5,
                1,
                EV_GO_STOP,
                10,
                0,
                0
            ]
        );
    }

    #[test]
    fn long_runs_of_events_are_cut_under_go_s_batch_limit() {
        let mut b = EventBatches::new(1);
        for i in 0..40_000u64 {
            b.event(EV_GO_UNBLOCK, 1_000 + i, &[1 << 40, i, 0])
                .expect("event");
        }
        let mut out = Vec::new();
        b.put(&mut out, 1);
        let mut f = crate::frame::Framer::new(0);
        let mut sizes = Vec::new();
        let r: Result<_, ()> = f.push(&out, &mut |r| {
            if let crate::frame::Record::Batch(_, body) = r {
                sizes.push(body.len());
            }
            Ok(())
        });
        assert!(matches!(r, Ok(None)));
        assert!(sizes.len() > 1, "{sizes:?}");
        assert!(sizes.iter().all(|&s| s as u64 <= MAX_BATCH_SIZE), "{sizes:?}");
    }
}
