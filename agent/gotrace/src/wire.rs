//! The v2 wire encoding shared by every reader of the crate: uvarints, batch
//! headers, the structural event types and how many arguments each event has.

pub(crate) use crate::spec::{
    EV_CLOCK_SNAPSHOT, EV_CPU_SAMPLE, EV_CPU_SAMPLES, EV_END_OF_GENERATION, EV_EVENT_BATCH,
    EV_EXPERIMENTAL_BATCH, EV_FREQUENCY, EV_STACKS, EV_STRINGS, EV_SYNC, MAX_BATCH_SIZE,
};

/// The longest batch header: type, experiment, four 10-byte uvarints.
pub(crate) const MAX_HEADER_LEN: usize = 2 + 4 * 10;
/// Go's `NoThread`: the M of the batches no thread wrote (frequency, stacks,
/// strings, CPU samples, sync, and goroutine statuses at a generation start).
pub(crate) const NO_THREAD: u64 = u64::MAX;

/// Number of uvarint arguments (the first is the timestamp delta) of each timed
/// event type, from Go's `internal/trace/tracev2` spec table, which all v2
/// versions share. 0 marks types that never appear inside an event batch.
pub(crate) const TIMED_ARGS: [u8; 52] = [
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
pub(crate) const EXPERIMENTAL_ARGS: [u8; 9] = [4, 4, 2, 3, 3, 2, 3, 3, 2];
/// Most arguments an event has.
pub(crate) const MAX_ARGS: usize = 5;
/// How many bytes `n` uvarints take, by `n` and by the set of bytes of a
/// word that end a uvarint (bit i for byte i); 0 when fewer than `n` end.
pub(crate) const ARGS_LEN: [[u8; 256]; MAX_ARGS + 1] = {
    let mut len = [[0; 256]; MAX_ARGS + 1];
    let mut ends = 0;
    while ends < 256 {
        let (mut byte, mut n) = (0, 0);
        while byte < 8 {
            if ends & (1 << byte) != 0 && n < MAX_ARGS {
                n += 1;
                len[n][ends] = byte as u8 + 1;
            }
            byte += 1;
        }
        ends += 1;
    }
    len
};
/// Both tables by event type byte, 0 for any other byte.
pub(crate) const EVENT_ARGS: [u8; 256] = {
    let mut all = [0; 256];
    let mut i = 0;
    while i < TIMED_ARGS.len() {
        all[i] = TIMED_ARGS[i];
        i += 1;
    }
    let mut i = 0;
    while i < EXPERIMENTAL_ARGS.len() {
        all[128 + i] = EXPERIMENTAL_ARGS[i];
        i += 1;
    }
    let mut i = 0;
    while i < all.len() {
        assert!(all[i] as usize <= MAX_ARGS);
        i += 1;
    }
    all
};

pub(crate) struct Batch<'a> {
    pub(crate) gen: u64,
    pub(crate) m: u64,
    pub(crate) ts: u64,
    pub(crate) experimental: bool,
    pub(crate) body: &'a [u8],
}

pub(crate) struct Cursor<'a> {
    pub(crate) data: &'a [u8],
    pub(crate) pos: usize,
}

impl Cursor<'_> {
    pub(crate) fn byte(&mut self) -> Option<u8> {
        let b = *self.data.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    /// `Ok(None)` when the data ends inside the number.
    pub(crate) fn uvarint(&mut self) -> Result<Option<u64>, String> {
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

pub(crate) enum Uvarint {
    Value(u64, usize),
    Short,
    Overflow,
}

pub(crate) fn uvarint(buf: &[u8]) -> Uvarint {
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

pub(crate) struct Header {
    pub(crate) gen: u64,
    pub(crate) m: u64,
    pub(crate) ts: u64,
    pub(crate) experimental: bool,
    pub(crate) size: usize,
}

/// Reads a batch header. `Ok(None)`: the data ends inside it.
pub(crate) fn read_header(cur: &mut Cursor<'_>) -> Result<Option<Header>, String> {
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
    let [gen, m, ts, size] = header;
    if size > MAX_BATCH_SIZE {
        return Err(format!("batch size {size} exceeds Go's maximum {MAX_BATCH_SIZE}"));
    }
    Ok(Some(Header {
        gen,
        m,
        ts,
        experimental,
        size: size as usize,
    }))
}

/// Reads one batch. `Ok(None)`: the data ends inside it (a cut stream).
pub(crate) fn read_batch<'a>(cur: &mut Cursor<'a>) -> Result<Option<Batch<'a>>, String> {
    let Some(header) = read_header(cur)? else {
        return Ok(None);
    };
    let end = cur.pos + header.size;
    if end > cur.data.len() {
        return Ok(None);
    }
    let body = &cur.data[cur.pos..end];
    cur.pos = end;
    Ok(Some(Batch {
        gen: header.gen,
        m: header.m,
        ts: header.ts,
        experimental: header.experimental,
        body,
    }))
}

/// The first of the `n` uvarint arguments at `at` and where they end, when
/// all of them end within the 8 bytes at `at` (nearly every event): one load
/// finds them, and none can be long enough to overflow.
#[inline(always)]
pub(crate) fn args_in_word(body: &[u8], at: usize, n: u8) -> Option<(u64, usize)> {
    let word = u64::from_le_bytes(body.get(at..at + 8)?.try_into().ok()?);
    // Bit i set when byte i ends a uvarint: the multiply gathers each byte's
    // (inverted) high bit into the top byte, and no two products overlap.
    let ends = ((!word & 0x8080_8080_8080_8080) >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56;
    let len = ARGS_LEN[usize::from(n)][ends as usize];
    if len == 0 {
        return None;
    }
    let first = compact_uvarint(word & (u64::MAX >> (56 - 8 * ends.trailing_zeros())));
    Some((first, at + usize::from(len)))
}

/// The value of a uvarint of at most 8 bytes, given as a little-endian word
/// holding only its bytes: drops the continuation bits and closes the gaps.
pub(crate) fn compact_uvarint(x: u64) -> u64 {
    let x = x & 0x7f7f_7f7f_7f7f_7f7f;
    let x = (x & 0x007f_007f_007f_007f) | ((x & 0x7f00_7f00_7f00_7f00) >> 1);
    let x = (x & 0x0000_3fff_0000_3fff) | ((x & 0x3fff_0000_3fff_0000) >> 2);
    (x & 0x0000_0000_0fff_ffff) | ((x & 0x0fff_ffff_0000_0000) >> 4)
}

/// [`args_in_word`] for the rest: near the end of the body, long arguments,
/// and arguments that are cut or overflow (then `None`).
pub(crate) fn args_slow(body: &[u8], mut at: usize, n: u8) -> Option<(u64, usize)> {
    let mut first = 0;
    for i in 0..n {
        let Uvarint::Value(v, len) = uvarint(body.get(at..)?) else {
            return None;
        };
        if i == 0 {
            first = v;
        }
        at += len;
    }
    Some((first, at))
}
