//! The streaming decoder: bytes in, chunk by chunk; events out, in the order
//! Go's parser yields them, one whole generation at a time.
//!
//! What Go's `Reader.ReadEvent` does around the merge lives here: the
//! header, where a generation ends (a marker since Go 1.26, before that the
//! first batch of the next one), the Sync events it makes up, the checks of
//! table ids, the fix-up that makes times strictly increase, and what a
//! broken or cut stream yields before its error.

use crate::error::DecodeError;
use crate::frame::{FrameError, Framer, Record};
use crate::generation::{ticks_to_ns, GenError, Generation};
use crate::header::{check_header, GoVersion, HEADER_LEN};
use crate::merge::{self, Emit, Frontier, MergeError};
use crate::order::{Ordering, RawEvent, SchedCtx};
use crate::resources::{GoId, GoState, ProcId};
use crate::spec::{spec, EV_SYNTHETIC_SYNC, SPECS};
use crate::{Event, FormatError};

/// The versions Go's parser reads as v2 (Go 1.24 wrote `go 1.23`).
fn supported(v: GoVersion) -> bool {
    matches!(v.0, 22 | 23 | 25 | 26)
}

/// Decodes a Go execution trace (v2: Go 1.22 to 1.26) as it streams in.
///
/// [`Decoder::feed`] takes the next bytes and hands every event they
/// complete to a sink, in the order Go's parser yields them. Events come a
/// generation at a time, as soon as the generation is known whole: at its
/// end marker (Go 1.26), or when the next one starts (before). The decoder
/// holds the generation being received and the scheduler state, nothing
/// more, whatever the size of the trace.
///
/// After an error, or [`Decoder::finish`], it takes no more bytes.
#[derive(Debug)]
pub struct Decoder {
    header: Vec<u8>,
    version: Option<GoVersion>,
    framer: Framer,
    state: State,
    /// Most recently dropped error or end, reported again to later calls.
    done: Option<Result<(), DecodeError>>,
}

/// Everything but the framing, so that the framer can hand it records.
#[derive(Debug)]
struct State {
    version: GoVersion,
    gen: Generation,
    order: Ordering,
    frontier: Frontier,
    out: Output,
    /// Stream offset where the last generation yielded ended.
    whole_end: usize,
}

/// Go's `lastTs` and `syncs`.
#[derive(Debug)]
struct Output {
    last_ts: i64,
    syncs: u64,
}

/// An emitter over the caller's sink.
struct Sink<'s, F> {
    out: &'s mut Output,
    f: &'s mut F,
}

impl<F: FnMut(&Event<'_>)> Sink<'_, F> {
    /// What Go's `ReadEvent` does to every event it returns: check its
    /// table ids, make its time strictly increasing.
    #[inline(always)]
    fn send(&mut self, raw: &mut RawEvent, gen: Option<&Generation>) -> Result<(), MergeError> {
        if raw.typ != EV_SYNTHETIC_SYNC {
            if let Some(g) = gen {
                validate_table_ids(raw, g)?;
            }
        }
        if raw.time <= self.out.last_ts {
            raw.time = self.out.last_ts.wrapping_add(1);
        }
        self.out.last_ts = raw.time;
        (self.f)(&Event { raw, gen });
        Ok(())
    }

    /// A Sync event: Go makes one at the start of each generation, at the
    /// end of the trace and before a generation-level error.
    fn sync(&mut self, gen: Option<&Generation>, time: i64, offset: usize) -> Result<(), MergeError> {
        self.out.syncs += 1;
        let mut raw = sync_event(self.out.syncs, time, offset);
        self.send(&mut raw, gen)
    }
}

impl<F: FnMut(&Event<'_>)> Emit for Sink<'_, F> {
    #[inline(always)]
    fn emit(&mut self, ev: &mut RawEvent, gen: &Generation) -> Result<(), MergeError> {
        self.send(ev, Some(gen))
    }
}

fn sync_event(n: u64, time: i64, offset: usize) -> RawEvent {
    RawEvent {
        typ: EV_SYNTHETIC_SYNC,
        time,
        ctx: SchedCtx::NONE,
        args: [n, 0, 0, 0],
        offset,
    }
}

/// Per event type, which argument slots hold stack ids (low nibble) and
/// string ids (high nibble): Go's spec table, flattened for the hot path.
static TABLE_ARGS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut typ = 0;
    while typ < SPECS.len() {
        let s = &SPECS[typ];
        let mut i = 0;
        while i < s.stack_ids.len() {
            t[typ] |= 1 << (s.stack_ids[i] - 1);
            i += 1;
        }
        let mut i = 0;
        while i < s.string_ids.len() {
            t[typ] |= 1 << (4 + s.string_ids[i] - 1);
            i += 1;
        }
        typ += 1;
    }
    t
};

/// Go's `Event.validateTableIDs`: every stack and string id an event names
/// is in its generation's tables.
#[inline(always)]
fn validate_table_ids(raw: &RawEvent, gen: &Generation) -> Result<(), MergeError> {
    let mask = TABLE_ARGS[usize::from(raw.typ)];
    if mask == 0 {
        return Ok(());
    }
    let a = &raw.args;
    let present = |i: usize| {
        (mask & (1 << i) == 0 || gen.stacks.contains(a[i]))
            && (mask & (1 << (4 + i)) == 0 || gen.strings.get(a[i]).is_some())
    };
    if present(0) && present(1) && present(2) && present(3) {
        Ok(())
    } else {
        Err(first_bad_id(raw, gen))
    }
}

/// The error Go reports: the first missing id, stacks first, in the order
/// of the spec.
#[cold]
fn first_bad_id(raw: &RawEvent, gen: &Generation) -> MergeError {
    let s = spec(raw.typ);
    let stacks = s.stack_ids.iter().map(|&i| ("stack", raw.args[i - 1]));
    let strings = s.string_ids.iter().map(|&i| ("string", raw.args[i - 1]));
    let (table, id) = stacks
        .chain(strings)
        .find(|&(table, id)| {
            if table == "stack" {
                !gen.stacks.contains(id)
            } else {
                gen.strings.get(id).is_none()
            }
        })
        .unwrap_or(("stack", 0));
    MergeError::new(
        raw.offset,
        format!("found invalid {table} ID {id} for event {}", s.name),
    )
}

impl From<MergeError> for DecodeError {
    fn from(e: MergeError) -> Self {
        let (offset, what) = e.into_parts();
        DecodeError::Corrupt { offset, what }
    }
}

impl From<GenError> for DecodeError {
    fn from(e: GenError) -> Self {
        DecodeError::Corrupt {
            offset: e.offset,
            what: e.what,
        }
    }
}

impl From<FrameError> for DecodeError {
    fn from(e: FrameError) -> Self {
        DecodeError::Corrupt {
            offset: e.offset,
            what: e.what,
        }
    }
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Decoder {
            header: Vec::with_capacity(HEADER_LEN),
            version: None,
            framer: Framer::new(HEADER_LEN),
            state: State {
                version: GoVersion(0),
                gen: Generation::new(GoVersion(0)),
                order: Ordering::new(),
                frontier: Frontier::default(),
                out: Output { last_ts: 0, syncs: 0 },
                whole_end: HEADER_LEN,
            },
            done: None,
        }
    }

    /// The Go version, once the header has been read.
    pub fn version(&self) -> Option<GoVersion> {
        self.version
    }

    /// Bytes taken so far.
    pub fn received(&self) -> usize {
        match self.version {
            Some(_) => self.framer.consumed() + self.framer.pending(),
            None => self.header.len(),
        }
    }

    /// Bytes of the stream held: the batches of the generation being
    /// received and a batch cut between chunks. At most one generation and
    /// one batch (64 KiB), whatever the length of the trace.
    pub fn buffered(&self) -> usize {
        self.state.gen.held() + self.framer.pending()
    }

    /// Stream offset where the last generation yielded ends: the prefix of
    /// the stream whose events are all out.
    pub fn whole_len(&self) -> usize {
        self.state.whole_end
    }

    /// The goroutines the scheduler state knows, and their states as of the
    /// last event yielded (what a writer joining windows must bridge).
    pub fn goroutines(&self) -> impl Iterator<Item = (GoId, GoState)> + '_ {
        self.state.order.g.iter().map(|(&g, s)| {
            let state = crate::order::GO_STATUS_TO_STATE
                .get(usize::from(s.status))
                .and_then(|&c| GoState::from_code(u64::from(c)))
                .unwrap_or(GoState::Undetermined);
            (GoId(g), state)
        })
    }

    /// The Ps the scheduler state knows and their wire status
    /// (`tracev2.ProcStatus`: 1 running, 2 idle, 3 in a syscall, 4 in a
    /// syscall the P was taken from).
    pub fn procs(&self) -> impl Iterator<Item = (ProcId, u8)> + '_ {
        self.state.order.p.iter().map(|(&p, s)| (ProcId(p), s.status))
    }

    /// The scheduler state as of the last event yielded, for a writer
    /// joining traces (see the `stitch` module).
    pub(crate) fn ordering(&self) -> &crate::order::Ordering {
        &self.state.order
    }

    /// Ends the generation being received as if the next one had begun
    /// (what Go's parser concludes from the first batch of the next
    /// generation before Go 1.26): yields its events. A no-op when none is
    /// pending.
    pub(crate) fn end_generation(&mut self, mut sink: impl FnMut(&Event<'_>)) -> Result<(), DecodeError> {
        if let Some(done) = &self.done {
            return Err(done.clone().err().unwrap_or(DecodeError::Finished));
        }
        if self.version.is_none() || self.state.gen.number == 0 || self.framer.pending() > 0 {
            return Ok(());
        }
        let end = self.received();
        match self.state.complete(end, &mut sink) {
            Ok(()) => Ok(()),
            Err(e) => self.fail(e),
        }
    }

    /// Takes the next bytes of the stream and hands every event they
    /// complete to `sink`. An error is final: the events before it were
    /// yielded, none after.
    pub fn feed(&mut self, mut data: &[u8], mut sink: impl FnMut(&Event<'_>)) -> Result<(), DecodeError> {
        if let Some(done) = &self.done {
            return Err(done.clone().err().unwrap_or(DecodeError::Finished));
        }
        if self.version.is_none() {
            let take = (HEADER_LEN - self.header.len()).min(data.len());
            self.header.extend_from_slice(&data[..take]);
            data = &data[take..];
            // Judged on all 16 bytes, so that the error quotes the same
            // bytes however the stream was cut into chunks.
            if self.header.len() < HEADER_LEN {
                return Ok(());
            }
            match check_header(&self.header) {
                Ok(v) => self.start(v)?,
                Err(e) => return self.fail(e.into()),
            }
        }
        let (framer, state) = (&mut self.framer, &mut self.state);
        let result = match framer.push(data, &mut |rec| state.record(rec, &mut sink)) {
            Ok(None) => Ok(()),
            Ok(Some(frame_error)) => state.frame_error(frame_error, &mut sink),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) => self.fail(e),
        }
    }

    /// Ends the stream: yields what the last bytes complete and the final
    /// Sync event. `stream_complete` says whether the transport delivered
    /// the whole trace (an HTTP body that ended normally).
    ///
    /// A stream that ends inside a generation, or that the transport says
    /// was cut, yields the events of its whole generations, a Sync event (as
    /// Go's parser does before an error), then [`DecodeError::Cut`].
    pub fn finish(
        &mut self,
        stream_complete: bool,
        mut sink: impl FnMut(&Event<'_>),
    ) -> Result<(), DecodeError> {
        if let Some(done) = &self.done {
            return done.clone().and(Err(DecodeError::Finished));
        }
        if self.version.is_none() {
            let e = check_header(&self.header)
                .err()
                .unwrap_or(FormatError::ShortHeader(self.header.len()));
            return self.fail(e.into());
        }
        let result = self.state.end(
            stream_complete,
            self.framer.pending() > 0,
            self.received(),
            &mut sink,
        );
        if let Err(e) = result {
            return self.fail(e);
        }
        self.done = Some(Ok(()));
        Ok(())
    }

    fn start(&mut self, v: GoVersion) -> Result<(), DecodeError> {
        if !v.is_v2() {
            return self.fail(DecodeError::V1 { version: v });
        }
        if !supported(v) {
            return self.fail(DecodeError::UnsupportedVersion(v));
        }
        self.version = Some(v);
        self.state.version = v;
        self.state.gen = Generation::new(v);
        self.state.order = Ordering::new();
        Ok(())
    }

    fn fail(&mut self, e: DecodeError) -> Result<(), DecodeError> {
        self.done = Some(Err(e.clone()));
        Err(e)
    }
}

impl State {
    fn sink<'s, F>(out: &'s mut Output, f: &'s mut F) -> Sink<'s, F> {
        Sink { out, f }
    }

    /// A generation-level error: Go yields a Sync event, then the error.
    fn sync_then<F: FnMut(&Event<'_>)>(&mut self, f: &mut F, e: DecodeError) -> Result<(), DecodeError> {
        let last = self.out.last_ts;
        let at = match &e {
            DecodeError::Corrupt { offset, .. } => *offset,
            _ => self.whole_end,
        };
        Self::sink(&mut self.out, f).sync(None, last, at)?;
        Err(e)
    }

    /// One record of the stream (Go's `readGeneration` or
    /// `readGenerationWithSpill`, one batch at a time).
    fn record<F: FnMut(&Event<'_>)>(&mut self, rec: Record<'_>, f: &mut F) -> Result<(), DecodeError> {
        let gen0 = || "invalid generation number 0".to_string();
        if self.version.marks_generation_end() {
            match rec {
                Record::EndOfGeneration { offset } => self.complete(offset + 1, f),
                Record::Batch(h, body) => {
                    if self.gen.number == 0 {
                        self.gen.number = h.gen;
                    }
                    if h.gen == 0 {
                        return self.sync_then(f, corrupt(h.offset, gen0()));
                    }
                    if h.gen != self.gen.number {
                        let what =
                            "broken trace: missing end-of-generation event, or generations are interleaved";
                        return self.sync_then(f, corrupt(h.offset, what.into()));
                    }
                    match self.gen.add(h, body) {
                        Ok(()) => Ok(()),
                        Err(e) => self.sync_then(f, e.into()),
                    }
                }
            }
        } else {
            // Before Go 1.26 a generation ends where the next one starts.
            let (h, body) = match rec {
                Record::Batch(h, body) => (h, body),
                // Any version's reader knows the marker byte, and reads it as
                // a batch of generation 0.
                Record::EndOfGeneration { offset } => return self.sync_then(f, corrupt(offset, gen0())),
            };
            if h.gen == 0 {
                return self.sync_then(f, corrupt(h.offset, gen0()));
            }
            if self.gen.number == 0 {
                self.gen.number = h.gen;
            } else if h.gen == self.gen.number.wrapping_add(1) {
                self.complete(h.offset, f)?;
                self.gen.number = h.gen;
            } else if h.gen != self.gen.number {
                return self.sync_then(f, corrupt(h.offset, "generations out of order".into()));
            }
            match self.gen.add(h, body) {
                Ok(()) => Ok(()),
                Err(e) => self.sync_then(f, e.into()),
            }
        }
    }

    /// The generation received so far is whole: check it, yield its events
    /// and start the next one.
    fn complete<F: FnMut(&Event<'_>)>(&mut self, end: usize, f: &mut F) -> Result<(), DecodeError> {
        if let Err(e) = self.gen.finish(end) {
            return self.sync_then(f, e.into());
        }
        let time = ticks_to_ns(self.gen.ns_per_tick, self.gen.min_ts);
        let sync_offset = self.whole_end;
        let mut sink = Self::sink(&mut self.out, f);
        sink.out.syncs += 1;
        let sync = sync_event(sink.out.syncs, time, sync_offset);
        merge::run(
            &mut self.order,
            &mut self.gen,
            &mut self.frontier,
            &mut sink,
            sync,
        )?;
        self.whole_end = end;
        self.gen.clear();
        Ok(())
    }

    /// Bytes that are not a batch. Go 1.26 gives up on the generation; before,
    /// Go treats a bad batch after the first of a generation as its end, and
    /// yields what it has before the error.
    fn frame_error<F: FnMut(&Event<'_>)>(&mut self, e: FrameError, f: &mut F) -> Result<(), DecodeError> {
        if !self.version.marks_generation_end() && self.gen.number != 0 {
            self.complete(e.offset, f)?;
        }
        self.sync_then(f, e.into())
    }

    /// The end of the stream; `cut` when it ended inside a batch.
    fn end<F: FnMut(&Event<'_>)>(
        &mut self,
        complete: bool,
        cut: bool,
        received: usize,
        f: &mut F,
    ) -> Result<(), DecodeError> {
        let cut_error = |whole_end| DecodeError::Cut {
            whole_len: whole_end,
            received,
        };
        if cut || !complete {
            return self.sync_then(f, cut_error(self.whole_end));
        }
        let pending = self.gen.number != 0;
        if self.version.marks_generation_end() {
            // Go accepts a last generation with no thread's events, and
            // ignores it; one with events is cut.
            if pending && self.gen.has_event_batches() {
                return self.sync_then(f, cut_error(self.whole_end));
            }
        } else if pending {
            self.complete(received, f)?;
        } else {
            // Not even one batch: Go finds no frequency event.
            return self.sync_then(f, corrupt(received, "no frequency event found".into()));
        }
        let last = self.out.last_ts;
        let at = self.whole_end;
        Self::sink(&mut self.out, f).sync(None, last, at)?;
        Ok(())
    }
}

fn corrupt(offset: usize, what: String) -> DecodeError {
    DecodeError::Corrupt { offset, what }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(data: &[u8], chunk: usize) -> Result<(), DecodeError> {
        let mut d = Decoder::new();
        for piece in data.chunks(chunk) {
            d.feed(piece, |_| {})?;
        }
        d.finish(true, |_| {})
    }

    /// Found by fuzzing: the error quoted the bytes seen when the header
    /// was rejected, which depended on the chunking.
    #[test]
    fn bodies_that_are_not_traces_are_described_alike_in_any_chunking() {
        for data in [
            &b"go 1g22 trace\0\0\0\x01\x02"[..],
            b"<html>",
            b"{\"error\":\"nope\"}",
            b"go 1.",
            b"",
        ] {
            let whole = outcome(data, data.len().max(1));
            assert!(matches!(whole, Err(DecodeError::Format(_))), "{whole:?}");
            for chunk in 1..=data.len() {
                assert_eq!(outcome(data, chunk), whole, "{data:?} in {chunk}-byte chunks");
            }
        }
        assert_eq!(
            outcome(b"go 1.", 2),
            Err(DecodeError::Format(FormatError::ShortHeader(5)))
        );
        assert_eq!(outcome(b"", 1), Err(DecodeError::Format(FormatError::Empty)));
    }
}
