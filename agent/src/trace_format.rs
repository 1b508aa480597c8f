//! Validates one Go execution trace window by walking its header and batch framing.
//!
//! No event is interpreted beyond its timestamp: the walk checks that the bytes
//! are a Go trace, finds where the last whole generation ends (so a cut stream
//! can be trimmed to something Go's parser accepts), and reads the window's true
//! span from event timestamps in the target's own clock.
//!
//! Layout (Go >= 1.22, "v2"): a 16-byte header `go 1.NN trace\0\0\0`, then
//! batches `type (1 = events, 49 = experimental + 1 byte) | uvarint gen |
//! uvarint M | uvarint timestamp | uvarint size | size bytes`. Go >= 1.26 ends
//! each generation with the single byte 52. Go <= 1.21 ("v1") traces are
//! accepted by their header only.

use std::fmt;

pub const HEADER_LEN: usize = 16;
/// Go's `tracev2.MaxBatchSize`.
const MAX_BATCH_SIZE: u64 = 64 << 10;

const EV_EVENT_BATCH: u8 = 1;
const EV_STACKS: u8 = 2;
const EV_STRINGS: u8 = 4;
const EV_CPU_SAMPLES: u8 = 6;
const EV_CPU_SAMPLE: u8 = 7;
const EV_FREQUENCY: u8 = 8;
const EV_EXPERIMENTAL_BATCH: u8 = 49;
const EV_SYNC: u8 = 50;
const EV_CLOCK_SNAPSHOT: u8 = 51;
const EV_END_OF_GENERATION: u8 = 52;

/// Number of uvarint arguments (the first is the timestamp delta) of each timed
/// event type, from Go's `internal/trace/tracev2` spec table, which all v2
/// versions share. 0 marks types that never appear inside an event batch.
const TIMED_ARGS: [u8; 52] = [
    0, 0, 0, 0, 0, 0, 0, 0, 0, // 0..=8: structural
    3, 3, 1, 4, 3, // ProcsChange, ProcStart, ProcStop, ProcSteal, ProcStatus
    4, 2, 3, 1, 1, 3, 3, 4, // GoCreate .. GoUnblock
    3, 1, 1, 4, // GoSyscallBegin, GoSyscallEnd, GoSyscallEndBlocked, GoStatus
    3, 1, // STWBegin, STWEnd
    2, 3, 2, 2, 2, 3, 2, 2, 1, 2, 2, // GCActive .. HeapGoal
    2, 5, 3, 4, 4, 5, // GoLabel, UserTask*, UserRegion*, UserLog
    3, 3, 4, 5, // GoSwitch, GoSwitchDestroy, GoCreateBlocked, GoStatusStack
    0, 0, 4, // ExperimentalBatch, Sync, ClockSnapshot
];
/// Experimental timed events (AllocFree experiment), types 128..=136.
const EXPERIMENTAL_ARGS: [u8; 9] = [4, 4, 2, 3, 3, 2, 3, 3, 2];

/// Why bytes are not a usable trace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("body is empty")]
    Empty,
    #[error("body ended after {0} bytes, inside the 16-byte trace header")]
    ShortHeader(usize),
    #[error("not a Go execution trace: body starts with {0}")]
    NotATrace(String),
    #[error("corrupt trace at byte {offset}: {what}")]
    Corrupt { offset: usize, what: String },
    #[error("trace was cut before its first whole generation ({0} bytes received)")]
    NoWholeGeneration(usize),
}

/// Go version from a trace header, e.g. 1.23.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct GoVersion(pub u16);

impl GoVersion {
    /// Traces from Go 1.22 on use the v2 batch framing walked here.
    pub fn is_v2(self) -> bool {
        self.0 >= 22
    }
    /// Go 1.26 ends every generation with an in-band marker byte.
    fn marks_generation_end(self) -> bool {
        self.0 >= 26
    }
}

impl fmt::Display for GoVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "1.{}", self.0)
    }
}

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

/// Checks the 16-byte header. Needs at least [`HEADER_LEN`] bytes to say yes;
/// can say no as soon as the bytes seen cannot start a header.
pub fn check_header(data: &[u8]) -> Result<GoVersion, FormatError> {
    const PREFIX: &[u8] = b"go 1.";
    let seen = data.len().min(HEADER_LEN);
    let head = &data[..seen];
    let not_a_trace = || FormatError::NotATrace(sniff(data));
    if head.is_empty() {
        return Err(FormatError::Empty);
    }
    if !PREFIX.starts_with(&head[..seen.min(PREFIX.len())]) {
        return Err(not_a_trace());
    }
    if seen < HEADER_LEN {
        // Could still become a header; the caller decides whether more comes.
        return Err(FormatError::ShortHeader(seen));
    }
    let rest = &head[PREFIX.len()..];
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let tail = &rest[digits..];
    let minor = std::str::from_utf8(&rest[..digits])
        .ok()
        .and_then(|s| s.parse::<u16>().ok());
    match minor {
        Some(m) if digits <= 2 && tail.starts_with(b" trace") && tail[6..].iter().all(|b| *b == 0) => {
            Ok(GoVersion(m))
        }
        _ => Err(not_a_trace()),
    }
}

/// Walks a whole window. `Ok` means the bytes are a Go trace; see
/// [`TraceInfo::ends_cleanly`] and [`TraceInfo::whole_len`] for a cut one.
pub fn inspect(data: &[u8]) -> Result<TraceInfo, FormatError> {
    let version = check_header(data)?;
    let mut info = TraceInfo {
        version,
        walked: false,
        ends_cleanly: true,
        whole_len: data.len(),
        batches: 0,
        generations: 0,
        freq: None,
        first_ts: None,
        last_ts: None,
        clock: None,
    };
    if !version.is_v2() {
        return Ok(info);
    }
    info.walked = true;
    let mut cur = Cursor {
        data,
        pos: HEADER_LEN,
    };
    let mut gen: Option<u64> = None;
    // End of the last generation known to be whole. Go >= 1.26 marks it in
    // band; before, a generation is known whole only once the next one starts.
    let mut whole_len = HEADER_LEN;
    let mut cut = false;
    while cur.pos < data.len() {
        let batch_start = cur.pos;
        if data[cur.pos] == EV_END_OF_GENERATION && version.marks_generation_end() {
            cur.pos += 1;
            info.generations += 1;
            whole_len = cur.pos;
            gen = None;
            continue;
        }
        match read_batch(&mut cur) {
            Ok(Some(batch)) => {
                if gen != Some(batch.gen) {
                    if gen.is_some() && !version.marks_generation_end() {
                        info.generations += 1;
                        whole_len = batch_start;
                    }
                    gen = Some(batch.gen);
                }
                info.batches += 1;
                time_batch(&mut info, &batch);
            }
            Ok(None) => {
                cut = true;
                break;
            }
            Err(what) => {
                return Err(FormatError::Corrupt {
                    offset: batch_start,
                    what,
                })
            }
        }
    }
    info.whole_len = whole_len;
    info.ends_cleanly = !cut
        && if version.marks_generation_end() {
            whole_len == data.len()
        } else {
            true
        };
    if info.ends_cleanly && !version.marks_generation_end() && gen.is_some() {
        // Counted as whole on the assumption that the stream ended normally;
        // `keepable` drops it when the transport says otherwise.
        info.generations += 1;
    }
    Ok(info)
}

/// The prefix of `data` that Go's parser will accept, and its info: all of it
/// when the trace ended normally, else the whole generations before the cut.
/// `stream_complete` is whether the transport delivered the whole response.
pub fn keepable(data: &[u8], stream_complete: bool) -> Result<(usize, TraceInfo), FormatError> {
    let info = inspect(data)?;
    if !info.walked || (info.ends_cleanly && stream_complete) {
        return Ok((data.len(), info));
    }
    let keep = info.whole_len;
    if keep <= HEADER_LEN {
        return Err(FormatError::NoWholeGeneration(data.len()));
    }
    let trimmed = inspect(&data[..keep])?;
    Ok((keep, trimmed))
}

struct Batch<'a> {
    gen: u64,
    ts: u64,
    experimental: bool,
    body: &'a [u8],
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.data.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    /// `Ok(None)` when the data ends inside the number.
    fn uvarint(&mut self) -> Result<Option<u64>, String> {
        match uvarint(&self.data[self.pos..]) {
            Uvarint::Value(v, n) => {
                self.pos += n;
                Ok(Some(v))
            }
            Uvarint::Short => Ok(None),
            Uvarint::Overflow => Err("uvarint overflows 64 bits".into()),
        }
    }
}

enum Uvarint {
    Value(u64, usize),
    Short,
    Overflow,
}

fn uvarint(buf: &[u8]) -> Uvarint {
    let mut x: u64 = 0;
    let mut shift = 0u32;
    for (i, &b) in buf.iter().enumerate() {
        if i == 10 || (i == 9 && b > 1) {
            return Uvarint::Overflow;
        }
        if b < 0x80 {
            return Uvarint::Value(x | (u64::from(b) << shift), i + 1);
        }
        x |= u64::from(b & 0x7f) << shift;
        shift += 7;
    }
    Uvarint::Short
}

/// Reads one batch. `Ok(None)`: the data ends inside it (a cut stream).
fn read_batch<'a>(cur: &mut Cursor<'a>) -> Result<Option<Batch<'a>>, String> {
    let Some(typ) = cur.byte() else { return Ok(None) };
    let experimental = match typ {
        EV_EVENT_BATCH => false,
        EV_EXPERIMENTAL_BATCH => {
            if cur.byte().is_none() {
                return Ok(None);
            }
            true
        }
        other => return Err(format!("expected a batch, found byte {other}")),
    };
    let mut header = [0u64; 4];
    for slot in &mut header {
        match cur.uvarint()? {
            Some(v) => *slot = v,
            None => return Ok(None),
        }
    }
    let [gen, _m, ts, size] = header;
    if size > MAX_BATCH_SIZE {
        return Err(format!("batch size {size} exceeds Go's maximum {MAX_BATCH_SIZE}"));
    }
    let end = cur.pos + size as usize;
    if end > cur.data.len() {
        return Ok(None);
    }
    let body = &cur.data[cur.pos..end];
    cur.pos = end;
    Ok(Some(Batch {
        gen,
        ts,
        experimental,
        body,
    }))
}

/// Folds a batch's event timestamps into the window's span. Never fails: an
/// event this walk cannot size only stops the timing of that batch.
fn time_batch(info: &mut TraceInfo, batch: &Batch<'_>) {
    let mut seen = |ts: u64| {
        info.first_ts = Some(info.first_ts.map_or(ts, |f| f.min(ts)));
        info.last_ts = Some(info.last_ts.map_or(ts, |l| l.max(ts)));
    };
    // Go's parser dates each generation's sync event at its earliest batch
    // header, so batch headers count toward the start too.
    seen(batch.ts);
    if batch.experimental || batch.body.is_empty() {
        return;
    }
    let mut cur = Cursor {
        data: batch.body,
        pos: 1,
    };
    let args = |cur: &mut Cursor<'_>, n: usize| -> Option<Vec<u64>> {
        (0..n).map(|_| cur.uvarint().ok().flatten()).collect()
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

/// A short, printable description of what a body starts with, for errors.
pub fn sniff(data: &[u8]) -> String {
    let head = &data[..data.len().min(48)];
    let printable = head
        .iter()
        .all(|b| b.is_ascii_graphic() || *b == b' ' || *b == b'\n' || *b == b'\r' || *b == b'\t');
    let more = if data.len() > head.len() { "…" } else { "" };
    if printable {
        let text: String = String::from_utf8_lossy(head)
            .chars()
            .map(|c| if c.is_whitespace() { ' ' } else { c })
            .collect();
        format!("{:?}{more}", text)
    } else {
        format!("bytes {}{more}", hex::encode(head))
    }
}
