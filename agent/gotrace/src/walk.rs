//! Validates one trace window by walking its batch framing as it streams in.
//!
//! No event is interpreted beyond its timestamp: the walk checks that the bytes
//! are a Go trace, finds where the last whole generation ends (so a cut stream
//! can be trimmed to something Go's parser accepts), and reads the window's true
//! span from event timestamps in the target's own clock. Timestamps are
//! delta-encoded, so finding the last one means decoding events; the walk
//! decodes only the one event batch per thread and generation that can hold it
//! (see [`Untimed`]).

use crate::header::{check_header, GoVersion, HEADER_LEN};
use crate::wire::*;
use crate::FormatError;

/// Most event batches held untimed (see [`Untimed`]): with Go's 64 KiB
/// batches, at most 4 MiB of copies per walker. Past it the oldest is timed
/// at once, which costs time, never exactness.
const MAX_UNTIMED: usize = 64;

/// The target's clocks at one instant, from a Go >= 1.25 clock snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockSnapshot {
    /// Trace clock (ticks).
    pub ticks: u64,
    /// Wall clock, nanoseconds since the Unix epoch.
    pub wall_unix_ns: u128,
}

/// What the walk found.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceInfo {
    pub version: GoVersion,
    /// The framing was walked (v2); v1 traces are accepted by header only.
    pub walked: bool,
    /// The bytes end exactly where a trace ends: on a batch boundary and, for
    /// Go >= 1.26, right after an end-of-generation marker.
    pub ends_cleanly: bool,
    /// Length of the prefix made of generations known to be whole even if the
    /// stream was cut right after the bytes seen: what to keep of a cut stream.
    pub whole_len: usize,
    pub batches: u32,
    /// Generations that ended inside the bytes walked.
    pub generations: u32,
    /// Trace clock ticks per second.
    pub freq: Option<u64>,
    /// First and last event timestamps, in ticks.
    pub first_ts: Option<u64>,
    pub last_ts: Option<u64>,
    pub clock: Option<ClockSnapshot>,
}

impl TraceInfo {
    /// Converts ticks to nanoseconds of the target's monotonic trace clock, the
    /// same way Go's parser does (`Event.Time()`).
    pub fn ticks_to_ns(&self, ticks: u64) -> Option<u64> {
        let freq = self.freq.filter(|f| *f > 0)?;
        Some((ticks as f64 * (1e9 / freq as f64)) as u64)
    }

    pub fn start_ns(&self) -> Option<u64> {
        self.first_ts.and_then(|t| self.ticks_to_ns(t))
    }

    pub fn end_ns(&self) -> Option<u64> {
        self.last_ts.and_then(|t| self.ticks_to_ns(t))
    }

    /// Wall-clock time (Unix ns, target's clock) of a trace timestamp, when the
    /// trace carries a clock snapshot.
    pub fn wall_ns(&self, ticks: u64) -> Option<u128> {
        let snap = self.clock?;
        let at = self.ticks_to_ns(ticks)? as i128;
        let base = self.ticks_to_ns(snap.ticks)? as i128;
        u128::try_from(snap.wall_unix_ns as i128 + (at - base)).ok()
    }
}

/// Walks a whole window. `Ok` means the bytes are a Go trace; see
/// [`TraceInfo::ends_cleanly`] and [`TraceInfo::whole_len`] for a cut one.
pub fn inspect(data: &[u8]) -> Result<TraceInfo, FormatError> {
    let mut w = Walker::new();
    w.feed(data)?;
    w.info()
}

/// The prefix of `data` that Go's parser will accept, and its info: all of it
/// when the trace ended normally, else the whole generations before the cut.
/// `stream_complete` is whether the transport delivered the whole response.
pub fn keepable(data: &[u8], stream_complete: bool) -> Result<(usize, TraceInfo), FormatError> {
    let mut w = Walker::new();
    w.feed(data)?;
    w.finish(stream_complete)
}

/// Walks a trace as it streams in, chunk by chunk, without holding it: only
/// an incomplete batch (at most 64 KiB) is carried from one chunk to the next,
/// and copies of the event batches still to be timed are held, at most
/// `MAX_UNTIMED` (64) of them.
pub struct Walker {
    /// The first bytes, kept to describe a body that is not a trace.
    first: Vec<u8>,
    version: Option<GoVersion>,
    /// Bytes of a batch not yet complete.
    carry: Vec<u8>,
    /// Stream offset of `carry[0]`.
    consumed: usize,
    info: TraceInfo,
    /// `info` as of the end of the last generation known to be whole.
    whole: TraceInfo,
    gen: Option<u64>,
    /// Lowest and highest generation number of any batch walked.
    gens: Option<(u64, u64)>,
    /// Event batches of the current generation whose timestamps `info` does
    /// not hold yet.
    untimed: Untimed,
}

impl Default for Walker {
    fn default() -> Self {
        Self::new()
    }
}

impl Walker {
    pub fn new() -> Self {
        let blank = TraceInfo {
            version: GoVersion(0),
            walked: false,
            ends_cleanly: true,
            whole_len: HEADER_LEN,
            batches: 0,
            generations: 0,
            freq: None,
            first_ts: None,
            last_ts: None,
            clock: None,
        };
        Walker {
            first: Vec::with_capacity(48),
            version: None,
            carry: Vec::new(),
            consumed: 0,
            info: blank.clone(),
            whole: blank,
            gen: None,
            gens: None,
            untimed: Untimed::default(),
        }
    }

    /// The Go version, once the header has been seen.
    pub fn version(&self) -> Option<GoVersion> {
        self.version
    }

    /// The lowest and highest generation number of the batches walked so
    /// far, whole or not. Go numbers generations on from the last one a
    /// process traced, so a trace whose first generation is not above the
    /// previous trace's last came from another process (a restart).
    pub fn generations(&self) -> Option<(u64, u64)> {
        self.gens
    }

    /// Bytes fed so far.
    pub fn received(&self) -> usize {
        match self.version {
            Some(_) => self.consumed + self.carry.len(),
            None => self.first.len(),
        }
    }

    /// Takes the next bytes of the stream. Fails as soon as they cannot be a
    /// Go trace (the first bytes) or the framing breaks.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), FormatError> {
        if self.version.is_none() {
            let take = (48 - self.first.len()).min(data.len());
            self.first.extend_from_slice(&data[..take]);
            match check_header(&self.first) {
                Ok(v) => {
                    self.version = Some(v);
                    self.info.version = v;
                    self.info.walked = v.is_v2();
                    self.whole = self.info.clone();
                    self.consumed = HEADER_LEN;
                    // What followed the header in `first` is walked below.
                    let extra = self.first.len() - HEADER_LEN;
                    let rest = self.first[HEADER_LEN..].to_vec();
                    data = &data[take..];
                    if extra > 0 {
                        self.feed_body(&rest)?;
                    }
                }
                Err(FormatError::ShortHeader(_)) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        self.feed_body(data)
    }

    fn feed_body(&mut self, mut data: &[u8]) -> Result<(), FormatError> {
        if !self.info.walked {
            self.consumed += data.len();
            return Ok(());
        }
        if !self.carry.is_empty() {
            match self.complete_carry(data)? {
                Some(taken) => data = &data[taken..],
                None => return Ok(()),
            }
        }
        // The chunk is walked where it lies: only a batch it ends inside is
        // copied, to be completed by the next chunks.
        let used = self.walk(data)?;
        self.consumed += used;
        self.carry.extend_from_slice(&data[used..]);
        Ok(())
    }

    /// Completes the batch begun in `carry` from the head of `data` and walks
    /// it. Returns how many bytes of `data` it took, or `None` when all of
    /// `data` went into a batch still not complete.
    fn complete_carry(&mut self, data: &[u8]) -> Result<Option<usize>, FormatError> {
        // Enough bytes to read the header, which says how long the batch is;
        // what turns out to lie past the batch is given back below.
        let head = MAX_HEADER_LEN.saturating_sub(self.carry.len()).min(data.len());
        self.carry.extend_from_slice(&data[..head]);
        let mut cur = Cursor {
            data: &self.carry,
            pos: 0,
        };
        let len = match read_header(&mut cur) {
            Ok(Some(header)) => cur.pos + header.size,
            // Only possible when all of `data` fit under MAX_HEADER_LEN.
            Ok(None) => return Ok(None),
            Err(what) => {
                return Err(FormatError::Corrupt {
                    offset: self.consumed,
                    what,
                })
            }
        };
        let taken = if len <= self.carry.len() {
            let extra = self.carry.len() - len;
            self.carry.truncate(len);
            head - extra
        } else {
            let more = (len - self.carry.len()).min(data.len() - head);
            self.carry.extend_from_slice(&data[head..head + more]);
            if self.carry.len() < len {
                return Ok(None);
            }
            head + more
        };
        let carry = std::mem::take(&mut self.carry);
        let walked = self.walk(&carry);
        // Kept for its allocation: the next cut batch reuses it.
        self.carry = carry;
        self.consumed += walked?;
        self.carry.clear();
        Ok(Some(taken))
    }

    /// Walks whole batches of `data` (which starts at stream offset
    /// `self.consumed`); returns how many bytes they took.
    fn walk(&mut self, data: &[u8]) -> Result<usize, FormatError> {
        let version = self.info.version;
        let base = self.consumed;
        let mut cur = Cursor { data, pos: 0 };
        while cur.pos < data.len() {
            let start = cur.pos;
            if data[start] == EV_END_OF_GENERATION && version.marks_generation_end() {
                cur.pos += 1;
                self.end_generation(base + cur.pos);
                self.gen = None;
                continue;
            }
            match read_batch(&mut cur) {
                Ok(Some(batch)) => {
                    let (lo, hi) = self.gens.unwrap_or((batch.gen, batch.gen));
                    self.gens = Some((lo.min(batch.gen), hi.max(batch.gen)));
                    if self.gen != Some(batch.gen) {
                        // Before Go 1.26 a generation is known whole only once
                        // the next one starts.
                        if self.gen.is_some() && !version.marks_generation_end() {
                            self.end_generation(base + start);
                        }
                        // An M's batches are in time order only within one
                        // generation.
                        self.untimed.time_all(&mut self.info);
                        self.gen = Some(batch.gen);
                    }
                    self.info.batches += 1;
                    time_batch(&mut self.info, &mut self.untimed, &batch);
                }
                Ok(None) => return Ok(start),
                Err(what) => {
                    return Err(FormatError::Corrupt {
                        offset: base + start,
                        what,
                    })
                }
            }
        }
        Ok(cur.pos)
    }

    /// Counts a generation that ended at stream offset `end`, timing what it
    /// held untimed first: `whole` is what a cut stream keeps.
    fn end_generation(&mut self, end: usize) {
        self.untimed.time_all(&mut self.info);
        self.info.generations += 1;
        self.info.whole_len = end;
        self.whole = self.info.clone();
    }

    fn header_error(&self) -> FormatError {
        if self.first.is_empty() {
            FormatError::Empty
        } else {
            FormatError::ShortHeader(self.first.len())
        }
    }

    /// What the bytes so far are, as if the stream ended here.
    pub fn info(&self) -> Result<TraceInfo, FormatError> {
        let Some(version) = self.version else {
            return Err(self.header_error());
        };
        let mut info = self.info.clone();
        if !info.walked {
            info.whole_len = self.received();
            return Ok(info);
        }
        self.untimed.time(&mut info);
        let cut = !self.carry.is_empty();
        info.ends_cleanly = !cut && (!version.marks_generation_end() || info.whole_len == self.received());
        if info.ends_cleanly && !version.marks_generation_end() && self.gen.is_some() {
            // Counted as whole on the assumption that the stream ended
            // normally; `finish` drops it when the transport says otherwise.
            info.generations += 1;
        }
        Ok(info)
    }

    /// How many bytes to keep and what they hold: everything when the trace
    /// ended normally, else the whole generations before the cut.
    pub fn finish(&self, stream_complete: bool) -> Result<(usize, TraceInfo), FormatError> {
        let mut info = self.info()?;
        let total = self.received();
        if !info.walked || (info.ends_cleanly && stream_complete) {
            info.whole_len = total;
            return Ok((total, info));
        }
        let keep = self.whole.whole_len;
        if keep <= HEADER_LEN {
            return Err(FormatError::NoWholeGeneration(total));
        }
        let mut whole = self.whole.clone();
        whole.ends_cleanly = true;
        whole.whole_len = keep;
        Ok((keep, whole))
    }
}

/// Folds a batch's event timestamps into the window's span, or holds a
/// thread's event batch in `untimed` to do so later. Never fails: an event
/// this walk cannot size only stops the timing of that batch.
fn time_batch(info: &mut TraceInfo, untimed: &mut Untimed, batch: &Batch<'_>) {
    // Go's parser dates each generation's sync event at its earliest batch
    // header, so batch headers count toward the start; only events toward
    // the end (string and stack batches are stamped when flushed).
    info.first_ts = Some(info.first_ts.map_or(batch.ts, |f| f.min(batch.ts)));
    let mut seen = |ts: u64| {
        info.first_ts = Some(info.first_ts.map_or(ts, |f| f.min(ts)));
        info.last_ts = Some(info.last_ts.map_or(ts, |l| l.max(ts)));
    };
    if batch.experimental || batch.body.is_empty() {
        return;
    }
    let mut cur = Cursor {
        data: batch.body,
        pos: 1,
    };
    // Up to 5 uvarint arguments; `None` when the batch ends inside them.
    let args = |cur: &mut Cursor<'_>, n: usize| -> Option<[u64; 5]> {
        let mut out = [0u64; 5];
        for slot in out.iter_mut().take(n) {
            *slot = cur.uvarint().ok().flatten()?;
        }
        Some(out)
    };
    match batch.body[0] {
        EV_STACKS | EV_STRINGS => {}
        EV_FREQUENCY => {
            if let Some(a) = args(&mut cur, 1) {
                info.freq = Some(a[0]);
            }
        }
        EV_CPU_SAMPLES => {
            while cur.byte() == Some(EV_CPU_SAMPLE) {
                match args(&mut cur, 5) {
                    Some(a) => seen(a[0]),
                    None => break,
                }
            }
        }
        EV_SYNC => {
            let mut last = batch.ts;
            loop {
                match cur.byte() {
                    Some(EV_FREQUENCY) => match args(&mut cur, 1) {
                        Some(a) => info.freq = Some(a[0]),
                        None => break,
                    },
                    Some(EV_CLOCK_SNAPSHOT) => match args(&mut cur, 4) {
                        Some(a) => {
                            last = last.saturating_add(a[0]);
                            seen(last);
                            if info.clock.is_none() {
                                let wall = u128::from(a[2]) * 1_000_000_000 + u128::from(a[3]);
                                info.clock = Some(ClockSnapshot {
                                    ticks: last,
                                    wall_unix_ns: wall,
                                });
                            }
                        }
                        None => break,
                    },
                    _ => break,
                }
            }
        }
        _ if batch.m == NO_THREAD => note_last_ts(info, last_event_ts(batch.ts, batch.body)),
        _ => untimed.hold(batch.m, batch.ts, batch.body, info),
    }
}

/// Events are stamped no earlier than their batch, whose header already
/// counted toward the start: only the end of the span can move.
fn note_last_ts(info: &mut TraceInfo, ts: Option<u64>) {
    if let Some(ts) = ts {
        info.last_ts = Some(info.last_ts.map_or(ts, |l| l.max(ts)));
    }
}

/// The latest event batch of each thread (M) in the current generation,
/// copied and not yet timed. Within a generation Go flushes an M's batches in
/// time order and stamps each no later than its first event, so once M's
/// next batch arrives the earlier one cannot hold the window's last event:
/// it is dropped without being decoded. A busy window thus decodes one batch
/// per M and generation instead of all of them. For bytes that break that
/// order (never Go's) the span may come out shorter, but the same for any
/// chunking, since only the order of batches decides.
#[derive(Default)]
struct Untimed {
    /// Oldest first.
    batches: Vec<UntimedBatch>,
    /// Emptied copies, kept for their allocations.
    spare: Vec<Vec<u8>>,
}

struct UntimedBatch {
    m: u64,
    ts: u64,
    body: Vec<u8>,
}

impl Untimed {
    /// Holds a copy of `body` as M's latest batch, in place of its previous
    /// one; times the oldest batch into `info` when [`MAX_UNTIMED`] are held.
    fn hold(&mut self, m: u64, ts: u64, body: &[u8], info: &mut TraceInfo) {
        let mut held = match self.batches.iter().position(|b| b.m == m) {
            Some(i) => self.batches.remove(i),
            None => {
                if self.batches.len() >= MAX_UNTIMED {
                    let oldest = self.batches.remove(0);
                    note_last_ts(info, last_event_ts(oldest.ts, &oldest.body));
                    self.spare.push(oldest.body);
                }
                UntimedBatch {
                    m,
                    ts,
                    body: self.spare.pop().unwrap_or_default(),
                }
            }
        };
        held.ts = ts;
        held.body.clear();
        // Exact, so that no copy grows past Go's 64 KiB batch size.
        held.body.reserve_exact(body.len());
        held.body.extend_from_slice(body);
        self.batches.push(held);
    }

    /// Folds what is held into `info`, as if its generation ended now.
    fn time(&self, info: &mut TraceInfo) {
        for b in &self.batches {
            note_last_ts(info, last_event_ts(b.ts, &b.body));
        }
    }

    /// Times what is held and lets it go: its generation ended.
    fn time_all(&mut self, info: &mut TraceInfo) {
        self.time(info);
        self.spare.extend(self.batches.drain(..).map(|b| b.body));
    }
}

/// The timestamp of the last event of an event batch stamped `ts`, `None`
/// when not even its first event can be sized. Timestamps are deltas, so
/// every event is stepped over, but only its first argument is decoded. The
/// walk stops at the first event it cannot size.
fn last_event_ts(mut ts: u64, body: &[u8]) -> Option<u64> {
    let mut last = None;
    let mut pos = 0;
    while let Some(&typ) = body.get(pos) {
        let n = EVENT_ARGS[usize::from(typ)];
        if n == 0 {
            break;
        }
        let Some((delta, next)) = args_in_word(body, pos + 1, n).or_else(|| args_slow(body, pos + 1, n))
        else {
            break;
        };
        ts = ts.saturating_add(delta);
        last = Some(ts);
        pos = next;
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The walker's timing before it was made cheap, kept as the oracle: every
    /// argument of every event decoded through `Cursor`.
    fn eager_time_batch(info: &mut TraceInfo, batch: &Batch<'_>) {
        // Go's parser dates each generation's sync event at its earliest batch
        // header, so batch headers count toward the start; only events toward
        // the end (string and stack batches are stamped when flushed).
        info.first_ts = Some(info.first_ts.map_or(batch.ts, |f| f.min(batch.ts)));
        let mut seen = |ts: u64| {
            info.first_ts = Some(info.first_ts.map_or(ts, |f| f.min(ts)));
            info.last_ts = Some(info.last_ts.map_or(ts, |l| l.max(ts)));
        };
        if batch.experimental || batch.body.is_empty() {
            return;
        }
        let mut cur = Cursor {
            data: batch.body,
            pos: 1,
        };
        // Up to 5 uvarint arguments; `None` when the batch ends inside them.
        let args = |cur: &mut Cursor<'_>, n: usize| -> Option<[u64; 5]> {
            let mut out = [0u64; 5];
            for slot in out.iter_mut().take(n) {
                *slot = cur.uvarint().ok().flatten()?;
            }
            Some(out)
        };
        match batch.body[0] {
            EV_STACKS | EV_STRINGS => {}
            EV_FREQUENCY => {
                if let Some(a) = args(&mut cur, 1) {
                    info.freq = Some(a[0]);
                }
            }
            EV_CPU_SAMPLES => {
                while cur.byte() == Some(EV_CPU_SAMPLE) {
                    match args(&mut cur, 5) {
                        Some(a) => seen(a[0]),
                        None => break,
                    }
                }
            }
            EV_SYNC => {
                let mut last = batch.ts;
                loop {
                    match cur.byte() {
                        Some(EV_FREQUENCY) => match args(&mut cur, 1) {
                            Some(a) => info.freq = Some(a[0]),
                            None => break,
                        },
                        Some(EV_CLOCK_SNAPSHOT) => match args(&mut cur, 4) {
                            Some(a) => {
                                last = last.saturating_add(a[0]);
                                seen(last);
                                if info.clock.is_none() {
                                    let wall = u128::from(a[2]) * 1_000_000_000 + u128::from(a[3]);
                                    info.clock = Some(ClockSnapshot {
                                        ticks: last,
                                        wall_unix_ns: wall,
                                    });
                                }
                            }
                            None => break,
                        },
                        _ => break,
                    }
                }
            }
            _ => {
                cur.pos = 0;
                let mut ts = batch.ts;
                while let Some(typ) = cur.byte() {
                    let n = match typ {
                        0..=51 => TIMED_ARGS[typ as usize],
                        128..=136 => EXPERIMENTAL_ARGS[(typ - 128) as usize],
                        _ => 0,
                    };
                    if n == 0 {
                        break;
                    }
                    match args(&mut cur, n as usize) {
                        Some(a) => {
                            ts = ts.saturating_add(a[0]);
                            seen(ts);
                        }
                        None => break,
                    }
                }
            }
        }
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
    }

    /// Real traces (testdata/README.md): file, Go minor version,
    /// window length in ms.
    const V2: [(&str, u16, u64); 5] = [
        ("go1.22.trace", 22, 1000),
        ("go1.23.trace", 23, 1000),
        ("go1.25.trace", 25, 1000),
        ("go1.26.trace", 26, 1000),
        ("go1.26-busy.trace", 26, 250),
    ];

    #[test]
    fn real_v2_traces_walk_cleanly_with_their_span() {
        for (name, minor, window_ms) in V2 {
            let data = fixture(name);
            let info = inspect(&data).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(info.version, GoVersion(minor), "{name}");
            assert!(info.walked && info.ends_cleanly, "{name}: {info:?}");
            assert_eq!(
                info.whole_len,
                if minor >= 26 { data.len() } else { info.whole_len },
                "{name}"
            );
            assert!(info.batches > 2 && info.generations >= 1, "{name}: {info:?}");
            // nanotime / 64 on linux/amd64.
            assert_eq!(info.freq, Some(15_625_000), "{name}");
            let span = info.end_ns().expect("end") - info.start_ns().expect("start");
            let window = window_ms * 1_000_000;
            assert!(
                (window * 9 / 10..window * 13 / 10).contains(&span),
                "{name}: {window_ms} ms window spans {span} ns"
            );
            assert_eq!(
                info.clock.is_some(),
                minor >= 25,
                "{name}: clock snapshots arrived in Go 1.25"
            );
            let (keep, _) = keepable(&data, true).expect("keepable");
            assert_eq!(keep, data.len(), "{name}: a complete trace is kept whole");
        }
    }

    /// What the walk found in a fixture when every event of every batch was
    /// still decoded; a cheaper walk must find exactly this.
    struct Pinned {
        file: &'static str,
        whole_len: usize,
        batches: u32,
        generations: u32,
        first_ts: u64,
        last_ts: u64,
        /// Clock snapshot ticks and wall ns.
        clock: Option<(u64, u128)>,
        /// `keepable(data, false)`: length, batches, generations, last_ts.
        kept: Option<(usize, u32, u32, u64)>,
    }

    const PINNED: [Pinned; 5] = [
        Pinned {
            file: "go1.22.trace",
            whole_len: 10576,
            batches: 13,
            generations: 2,
            first_ts: 12_304_533_064,
            last_ts: 12_320_191_411,
            clock: None,
            kept: Some((10576, 7, 1, 12_320_169_696)),
        },
        Pinned {
            file: "go1.23.trace",
            whole_len: 16,
            batches: 7,
            generations: 1,
            first_ts: 12_330_177_879,
            last_ts: 12_345_818_602,
            clock: None,
            kept: None,
        },
        Pinned {
            file: "go1.25.trace",
            whole_len: 16,
            batches: 7,
            generations: 1,
            first_ts: 12_356_014_999,
            last_ts: 12_371_654_111,
            clock: Some((12_356_015_867, 1_795_924_689_918_350_892)),
            kept: None,
        },
        Pinned {
            file: "go1.26.trace",
            whole_len: 12522,
            batches: 7,
            generations: 1,
            first_ts: 12_379_964_949,
            last_ts: 12_395_604_418,
            clock: Some((12_379_965_609, 1_795_924_691_451_134_418)),
            kept: Some((12522, 7, 1, 12_395_604_418)),
        },
        Pinned {
            file: "go1.26-busy.trace",
            whole_len: 82946,
            batches: 7,
            generations: 1,
            first_ts: 12_403_984_903,
            last_ts: 12_407_898_712,
            clock: Some((12_403_985_179, 1_795_924_692_988_386_911)),
            kept: Some((82946, 7, 1, 12_407_898_712)),
        },
    ];

    #[test]
    fn fixtures_walk_to_the_pinned_values() {
        for p in PINNED {
            let name = p.file;
            let data = fixture(name);
            let info = inspect(&data).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                (info.whole_len, info.batches, info.generations),
                (p.whole_len, p.batches, p.generations),
                "{name}"
            );
            let clock = p
                .clock
                .map(|(ticks, wall_unix_ns)| ClockSnapshot { ticks, wall_unix_ns });
            assert_eq!(
                (info.freq, info.first_ts, info.last_ts, info.clock),
                (Some(15_625_000), Some(p.first_ts), Some(p.last_ts), clock),
                "{name}"
            );
            let kept = keepable(&data, false).ok();
            assert_eq!(
                kept.map(|(len, t)| (len, t.batches, t.generations, t.last_ts.unwrap_or(0))),
                p.kept,
                "{name}: what is kept of a stream not known to be complete"
            );
        }
    }

    #[test]
    fn streaming_in_any_chunk_sizes_finds_what_one_walk_finds() {
        for (name, _, _) in V2 {
            let data = fixture(name);
            let whole = inspect(&data).expect("valid");
            for chunk in [1, 7, 100, 4096, 16 << 10, 70_000] {
                let mut w = Walker::new();
                for piece in data.chunks(chunk) {
                    w.feed(piece)
                        .unwrap_or_else(|e| panic!("{name} in {chunk}-byte chunks: {e}"));
                }
                assert_eq!(w.received(), data.len());
                assert_eq!(w.info().expect("info"), whole, "{name} in {chunk}-byte chunks");
                let cut = data.len() * 2 / 3;
                let mut w = Walker::new();
                for piece in data[..cut].chunks(chunk) {
                    w.feed(piece).expect("prefix walks");
                }
                assert_eq!(
                    w.finish(false).ok(),
                    keepable(&data[..cut], false).ok(),
                    "{name} cut, {chunk}"
                );
            }
        }
    }

    #[test]
    fn a_body_that_is_not_a_trace_fails_on_its_first_bytes() {
        let mut w = Walker::new();
        match w.feed(b"<") {
            Err(FormatError::NotATrace(s)) => assert!(s.contains('<'), "{s}"),
            other => panic!("{other:?}"),
        }
        let mut w = Walker::new();
        w.feed(b"go 1.2").expect("could still be a header");
        assert_eq!(w.version(), None);
        w.feed(b"6 trace\0\0\0").expect("a header");
        assert_eq!(w.version(), Some(GoVersion(26)));
    }

    #[test]
    fn target_wall_clock_comes_from_the_clock_snapshot() {
        let data = fixture("go1.26.trace");
        let info = inspect(&data).expect("valid");
        let start = info.wall_ns(info.first_ts.expect("ts")).expect("wall");
        let end = info.wall_ns(info.last_ts.expect("ts")).expect("wall");
        // The fixture was captured in 2026.
        assert!(start > 1_767_225_600 * 1_000_000_000u128, "{start}");
        assert_eq!(
            end - start,
            u128::from(info.end_ns().expect("end") - info.start_ns().expect("start"))
        );
    }

    #[test]
    fn v1_traces_are_accepted_by_header_only() {
        let info = inspect(&fixture("go1.21.trace")).expect("v1 accepted");
        assert_eq!(info.version, GoVersion(21));
        assert!(!info.walked);
        assert_eq!(info.start_ns(), None);
    }

    #[test]
    fn every_cut_of_a_real_trace_is_detected_and_trimmed_to_whole_generations() {
        for (name, minor, _) in V2 {
            let data = fixture(name);
            let full = inspect(&data).expect("valid");
            let mut kept_some = 0;
            // About 300 cuts per file, at odd offsets so they land everywhere.
            let step = (data.len() / 300).max(1) | 1;
            for cut in (HEADER_LEN + 1..data.len()).step_by(step) {
                let part = &data[..cut];
                let info = inspect(part).unwrap_or_else(|e| panic!("{name} cut at {cut}: {e}"));
                assert!(
                    !info.ends_cleanly || minor < 26,
                    "{name} cut at {cut} cannot end cleanly"
                );
                match keepable(part, false) {
                    Ok((keep, trimmed)) => {
                        kept_some += 1;
                        assert!(keep < data.len() && keep > HEADER_LEN);
                        assert!(
                            trimmed.ends_cleanly,
                            "{name} cut at {cut}: trimmed prefix must end cleanly"
                        );
                        assert!(trimmed.generations >= 1 && trimmed.generations <= full.generations);
                        assert!(trimmed.last_ts <= full.last_ts);
                    }
                    Err(FormatError::NoWholeGeneration(n)) => assert_eq!(n, cut),
                    Err(e) => panic!("{name} cut at {cut}: {e}"),
                }
            }
            if full.generations > 1 {
                assert!(kept_some > 0, "{name}: later cuts keep the first generation");
            }
        }
    }

    #[test]
    fn corruption_is_reported_with_its_offset() {
        let mut data = fixture("go1.26.trace");
        data[HEADER_LEN] = 7;
        match inspect(&data) {
            Err(FormatError::Corrupt { offset, what }) => {
                assert_eq!(offset, HEADER_LEN);
                assert!(what.contains("expected a batch"), "{what}");
            }
            other => panic!("{other:?}"),
        }
        // A batch claiming more than Go's 64 KiB maximum.
        let mut big = b"go 1.26 trace\0\0\0".to_vec();
        big.extend_from_slice(&[1, 1, 1, 1, 0xff, 0xff, 0x3f]);
        assert!(matches!(inspect(&big), Err(FormatError::Corrupt { .. })));
        // A uvarint that never ends within 10 bytes.
        let mut over = b"go 1.26 trace\0\0\0".to_vec();
        over.push(1);
        over.extend_from_slice(&[0xff; 11]);
        assert!(matches!(inspect(&over), Err(FormatError::Corrupt { .. })));
    }

    /// Stream offsets where each batch of a v2 trace starts.
    fn batch_starts(data: &[u8]) -> Vec<usize> {
        let mut cur = Cursor {
            data,
            pos: HEADER_LEN,
        };
        let mut starts = Vec::new();
        while cur.pos < data.len() {
            starts.push(cur.pos);
            if data[cur.pos] == EV_END_OF_GENERATION {
                cur.pos += 1;
            } else if !matches!(read_batch(&mut cur), Ok(Some(_))) {
                break;
            }
        }
        starts
    }

    #[test]
    fn corruption_offsets_do_not_depend_on_chunking() {
        let data = fixture("go1.22.trace");
        let starts = batch_starts(&data);
        // The tiny frequency batch that starts generation 2, then a big one.
        let small = starts[7];
        assert_eq!(data[small + 1..small + 3], [2, 0xff]);
        for at in [small, starts[8]] {
            let mut wrong_type = data.clone();
            wrong_type[at] = 7;
            // The size uvarint (after type, gen, M and timestamp) made 64 KiB + 1.
            let mut len = 1;
            for _ in 0..3 {
                len += data[at + len..].iter().take_while(|b| **b >= 0x80).count() + 1;
            }
            let size = at + len;
            let mut too_big = data[..size].to_vec();
            too_big.extend_from_slice(&[0x81, 0x80, 0x04]);
            too_big.extend_from_slice(
                &data[size + data[size..].iter().take_while(|b| **b >= 0x80).count() + 1..],
            );
            for bad in [wrong_type, too_big] {
                let whole = inspect(&bad);
                assert!(
                    matches!(whole, Err(FormatError::Corrupt { offset, .. }) if offset == at),
                    "{whole:?}"
                );
                for chunk in [1, 2, 3, 5, 41, 42, 43, 100, 4096] {
                    let mut w = Walker::new();
                    let fed = bad.chunks(chunk).try_for_each(|piece| w.feed(piece));
                    assert_eq!(fed.err(), whole.clone().err(), "{chunk}-byte chunks");
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

    /// An event batch body of mostly well-formed events with arguments of
    /// every length, some too long, some unknown types, cut anywhere.
    fn random_body(rng: &mut u64) -> Vec<u8> {
        let mut body = Vec::new();
        for _ in 0..noise(rng) % 40 {
            let typ = match noise(rng) % 10 {
                0 => noise(rng) as u8,
                1 => 128 + (noise(rng) % 9) as u8,
                _ => 9 + (noise(rng) % 43) as u8,
            };
            body.push(typ);
            for _ in 0..EVENT_ARGS[usize::from(typ)].max(1) {
                let len = match noise(rng) % 20 {
                    0 => 10 + noise(rng) % 2,
                    1..=3 => 4 + noise(rng) % 6,
                    _ => 1 + noise(rng) % 3,
                };
                for i in 1..=len {
                    let b = noise(rng) as u8;
                    body.push(match (i == len, len) {
                        (true, 10) => b % 4,
                        (true, _) => b & 0x7f,
                        (false, _) => b | 0x80,
                    });
                }
            }
        }
        let cut = noise(rng) as usize % (body.len() + 1);
        body.truncate(if noise(rng) % 2 == 0 { cut } else { body.len() });
        body
    }

    #[test]
    fn batches_are_timed_exactly_as_the_eager_decoder_times_them() {
        let mut bodies = Vec::new();
        for (name, _, _) in V2 {
            let data = fixture(name);
            for start in batch_starts(&data) {
                let mut cur = Cursor {
                    data: &data,
                    pos: start,
                };
                if let Ok(Some(b)) = read_batch(&mut cur) {
                    bodies.push((b.ts, b.body.to_vec()));
                }
            }
        }
        let mut rng = 0x5eed;
        for _ in 0..20_000 {
            bodies.push((noise(&mut rng) % 1000, random_body(&mut rng)));
        }
        // Near the top, where deltas saturate.
        bodies.push((u64::MAX - 3, vec![17, 2, 1, 1, 17, 0x85, 1, 1, 1]));
        let mut start = Walker::new().info;
        start.first_ts = Some(500);
        start.last_ts = Some(600);
        for (ts, body) in &bodies {
            // Timed at once, and held then timed.
            for m in [NO_THREAD, 7] {
                let batch = Batch {
                    gen: 1,
                    m,
                    ts: *ts,
                    experimental: false,
                    body,
                };
                let (mut fast, mut eager) = (start.clone(), start.clone());
                let mut untimed = Untimed::default();
                time_batch(&mut fast, &mut untimed, &batch);
                untimed.time_all(&mut fast);
                eager_time_batch(&mut eager, &batch);
                assert_eq!(fast, eager, "M {m}, ts {ts}, body {}", hex::encode(body));
            }
        }
    }

    /// What the eager decoder finds in the whole batches of `data`:
    /// batches, freq, first_ts, last_ts, clock.
    fn eager_span(data: &[u8]) -> (u32, Option<u64>, Option<u64>, Option<u64>, Option<ClockSnapshot>) {
        let mut info = Walker::new().info;
        for start in batch_starts(data) {
            let mut cur = Cursor { data, pos: start };
            if let Ok(Some(batch)) = read_batch(&mut cur) {
                info.batches += 1;
                eager_time_batch(&mut info, &batch);
            }
        }
        (info.batches, info.freq, info.first_ts, info.last_ts, info.clock)
    }

    fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// `data` with each event batch of a thread cut into batches of at most
    /// `events` events, each stamped with the time of the event before it, as
    /// Go stamps a new batch: no later than its first event. With `own_m`
    /// every piece gets an M of its own, so that none replaces another. The
    /// global event batches (goroutine statuses, flushed last) are left out:
    /// the threads' batches then hold each generation's last event.
    fn split_batches(data: &[u8], events: usize, own_m: bool) -> Vec<u8> {
        let mut out = data[..HEADER_LEN].to_vec();
        for start in batch_starts(data) {
            let mut cur = Cursor { data, pos: start };
            let batch = match read_batch(&mut cur) {
                Ok(Some(b)) if !b.experimental && EVENT_ARGS[usize::from(b.body[0])] > 0 => b,
                // Other batches and the end-of-generation byte.
                _ => {
                    out.extend_from_slice(&data[start..cur.pos.max(start + 1)]);
                    continue;
                }
            };
            if batch.m == NO_THREAD {
                continue;
            }
            let body = batch.body;
            let (mut pieces, mut from, mut from_ts) = (Vec::new(), 0, batch.ts);
            let (mut pos, mut ts, mut count) = (0, batch.ts, 0);
            while pos < body.len() {
                if count == events {
                    pieces.push((from_ts, &body[from..pos]));
                    (from, from_ts, count) = (pos, ts, 0);
                }
                let n = EVENT_ARGS[usize::from(body[pos])];
                let (delta, next) = args_slow(body, pos + 1, n).expect("a real event");
                (pos, ts, count) = (next, ts + delta, count + 1);
            }
            pieces.push((from_ts, &body[from..]));
            for (i, (ts, piece)) in pieces.into_iter().enumerate() {
                out.push(EV_EVENT_BATCH);
                let m = if own_m { batch.m * 1000 + i as u64 } else { batch.m };
                for v in [batch.gen, m, ts, piece.len() as u64] {
                    put_uvarint(&mut out, v);
                }
                out.extend_from_slice(piece);
            }
        }
        out
    }

    #[test]
    fn every_cut_times_as_the_eager_decoder_times_it() {
        for (name, _, _) in V2 {
            let data = fixture(name);
            let (batches, .., last_global, _) = eager_span(&data);
            // The fixtures hold one batch per M and generation; cut into many,
            // later batches replace earlier ones, or (each on its own M) the
            // number held passes MAX_UNTIMED.
            for (events, own_m) in [(0, false), (100, false), (7, false), (40, true)] {
                let data = if events == 0 {
                    data.clone()
                } else {
                    split_batches(&data, events, own_m)
                };
                let (n, freq, first, last, clock) = eager_span(&data);
                if events > 0 {
                    assert!(n > batches + 2, "{name}: split into {n} batches");
                    assert!(last < last_global, "{name}: the last event is a thread's");
                }
                let whole = inspect(&data).expect("valid");
                assert_eq!(
                    (
                        whole.batches,
                        whole.freq,
                        whole.first_ts,
                        whole.last_ts,
                        whole.clock
                    ),
                    (n, freq, first, last, clock),
                    "{name} split {events}"
                );
                // Cuts spread over a few MB of walking per variant (it is all
                // quadratic), and each side of up to 30 batch boundaries.
                let step = (data.len() / (1_500_000 / data.len()).clamp(20, 300)) | 1;
                let mut cuts: Vec<usize> = (HEADER_LEN..data.len()).step_by(step).collect();
                let starts = batch_starts(&data);
                for &b in starts.iter().step_by((starts.len() / 30).max(1)) {
                    cuts.extend([(b - 1).max(HEADER_LEN), b, b + 1]);
                }
                for cut in cuts {
                    let part = &data[..cut];
                    let info = inspect(part).expect("a cut trace walks");
                    assert_eq!(
                        (info.batches, info.freq, info.first_ts, info.last_ts, info.clock),
                        eager_span(part),
                        "{name} split {events}, cut at {cut}"
                    );
                    if let Ok((keep, kept)) = keepable(part, false) {
                        assert_eq!(
                            (kept.batches, kept.freq, kept.first_ts, kept.last_ts, kept.clock),
                            eager_span(&data[..keep]),
                            "{name} split {events}, cut at {cut}, kept {keep}"
                        );
                    }
                }
                for chunk in [1, 7, 4096] {
                    let mut w = Walker::new();
                    for piece in data.chunks(chunk) {
                        w.feed(piece).expect("valid");
                    }
                    assert_eq!(
                        w.info().as_ref(),
                        Ok(&whole),
                        "{name} split {events}, {chunk}-byte chunks"
                    );
                }
            }
        }
    }

    #[test]
    fn an_m_batch_followed_by_the_next_of_its_m_is_never_decoded() {
        // Two batches of M 5 in generation 1, each one GoDestroy (17, whose
        // only argument is the time delta): 100 ticks after the first
        // batch's stamp, then 1 tick after the second's, which ends earlier.
        // Go never writes that order, so the first batch cannot matter: it
        // is dropped unread.
        let mut data = b"go 1.26 trace\0\0\0".to_vec();
        data.extend_from_slice(&[EV_EVENT_BATCH, 1, 5, 50, 2, 17, 100]);
        data.extend_from_slice(&[EV_EVENT_BATCH, 1, 5, 60, 2, 17, 1]);
        let info = inspect(&data).expect("valid");
        assert_eq!((info.first_ts, info.last_ts), (Some(50), Some(61)));
        // On different Ms, or in different generations, both count.
        data[HEADER_LEN + 2] = 4;
        assert_eq!(inspect(&data).expect("valid").last_ts, Some(150));
        data[HEADER_LEN + 2] = 5;
        data[HEADER_LEN + 8] = 2;
        assert_eq!(inspect(&data).expect("valid").last_ts, Some(150));
    }

    #[test]
    fn bodies_that_are_not_traces_are_named() {
        let html = b"<!DOCTYPE html><html><body>Sign in</body></html>";
        match check_header(html) {
            Err(FormatError::NotATrace(s)) => assert!(s.contains("<!DOCTYPE html>"), "{s}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            check_header(b"{\"error\":1}"),
            Err(FormatError::NotATrace(_))
        ));
        assert!(
            matches!(check_header(&[0xde, 0xad, 0xbe, 0xef]), Err(FormatError::NotATrace(s)) if s.contains("deadbeef"))
        );
        assert_eq!(check_header(b""), Err(FormatError::Empty));
        assert_eq!(check_header(b"go 1."), Err(FormatError::ShortHeader(5)));
        assert_eq!(check_header(b"g"), Err(FormatError::ShortHeader(1)));
        assert!(matches!(
            check_header(b"go 1.x trace\0\0\0\0"),
            Err(FormatError::NotATrace(_))
        ));
        assert!(matches!(
            check_header(b"go 1.26 trace\0\0X"),
            Err(FormatError::NotATrace(_))
        ));
        assert_eq!(check_header(b"go 1.5 trace\0\0\0\0"), Ok(GoVersion(5)));
    }

    #[test]
    fn a_trace_of_only_a_header_has_no_generation_to_keep() {
        let data = b"go 1.26 trace\0\0\0";
        let info = inspect(data).expect("header only is a trace");
        assert_eq!(info.batches, 0);
        assert!(matches!(
            keepable(data, false),
            Err(FormatError::NoWholeGeneration(16))
        ));
    }

    #[test]
    fn generation_numbers_span_every_batch_walked_whole_or_not() {
        for (name, _, _) in V2 {
            let data = fixture(name);
            let mut w = Walker::new();
            w.feed(&data).expect("walks");
            let (lo, hi) = w.generations().unwrap_or_else(|| panic!("{name}: no batch"));
            assert!(lo >= 1 && hi >= lo, "{name}: {lo}..{hi}");
            // Cut inside the last generation: its number is still seen.
            let (keep, _) = keepable(&data, true).expect("whole");
            let mut cut = Walker::new();
            cut.feed(&data[..keep - 1]).expect("walks");
            assert_eq!(cut.generations().map(|g| g.0), Some(lo), "{name}");
        }
        assert_eq!(Walker::new().generations(), None);
    }
}
