//! Merges one generation's per-thread event batches into the order Go's
//! parser yields: a cursor per thread over its batches, a min-heap of the
//! cursors by the time of their next event, and the ordering state machine
//! deciding which of them may go next (Go's `batchcursor.go` and the loop of
//! `Reader.ReadEvent`). The heap is Go's, operation for operation: which of
//! two threads with events at the same time is tried first depends on it.

use crate::generation::{Generation, TickScale};
use crate::gosort::sort_func;
use crate::order::{BaseEvent, Ordering, RawEvent};
use crate::spec::{spec, SPECS};

/// A decoding or ordering failure at a stream offset. Boxed: the results
/// of the per-event calls stay two words, returned in registers.
#[derive(Debug)]
pub(crate) struct MergeError(Box<(usize, String)>);

impl MergeError {
    #[cold]
    pub(crate) fn new(offset: usize, what: String) -> Self {
        MergeError(Box::new((offset, what)))
    }

    pub(crate) fn into_parts(self) -> (usize, String) {
        *self.0
    }
}

/// A thread's position in its event batches (Go's `batchCursor`).
#[derive(Debug, Clone)]
pub(crate) struct Cursor {
    m: i64,
    /// The thread's slot in the ordering, once it has one.
    slot: Option<usize>,
    /// Index of the thread in `Generation::threads`.
    thread: usize,
    last_ts: i64,
    /// Index of the current batch in the thread's list, and whether the
    /// fields below describe it yet.
    idx: usize,
    loaded: bool,
    /// What is left of the current batch in the generation's data, its
    /// timestamp, and what turns a data index into a stream offset.
    pos: usize,
    end: usize,
    ts: u64,
    to_stream: usize,
    /// The next event, read but not yet ordered.
    ev: BaseEvent,
}

impl Cursor {
    fn new(m: i64, thread: usize) -> Self {
        Cursor {
            m,
            slot: None,
            thread,
            last_ts: 0,
            idx: 0,
            loaded: false,
            pos: 0,
            end: 0,
            ts: 0,
            to_stream: 0,
            ev: BaseEvent::default(),
        }
    }

    /// Takes the batch at `idx`; `false` when the thread has no more.
    fn load(&mut self, gen: &Generation) -> bool {
        let Some(&b) = gen.threads.get(self.thread).and_then(|t| t.batches.get(self.idx)) else {
            return false;
        };
        let (start, len, ts, body_offset) = gen.event_batch(b);
        (self.pos, self.end, self.ts) = (start, start + len, ts);
        self.to_stream = body_offset.wrapping_sub(start);
        self.loaded = true;
        self.last_ts = 0;
        true
    }

    /// Reads the thread's next event; `Ok(false)` when it has no more.
    #[inline(always)]
    fn next_event(&mut self, gen: &Generation, scale: TickScale) -> Result<bool, MergeError> {
        // Go skips what is read of a batch, and empty batches.
        while self.pos >= self.end {
            if self.loaded {
                self.idx += 1;
            }
            if !self.load(gen) {
                return Ok(false);
            }
        }
        // Also after an event that came out at time 0, as in Go.
        if self.last_ts == 0 {
            self.last_ts = scale.to_ns(self.ts);
        }
        let offset = self.pos.wrapping_add(self.to_stream);
        let data = gen.data().get(self.pos..self.end).unwrap_or(&[]);
        let (n, dt) = read_timed(data, &mut self.ev).map_err(|what| MergeError::new(offset, what))?;
        self.ev.time = scale.to_ns(dt).wrapping_add(self.last_ts);
        self.ev.offset = offset;
        self.last_ts = self.ev.time;
        self.pos += n;
        Ok(true)
    }
}

/// Arguments (the timestamp delta included) of each timed event type, 0
/// for the others: Go's spec table, flattened for the hot loop.
static TIMED_ARGS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < SPECS.len() {
        if SPECS[i].timed {
            t[i] = SPECS[i].args.len() as u8;
        }
        i += 1;
    }
    t
};

/// Reads one timed event (Go's `readTimedBaseEvent`): its type, the
/// timestamp delta it returns and the arguments it stores in `e`. Returns
/// how many bytes it took.
#[inline]
fn read_timed(b: &[u8], e: &mut BaseEvent) -> Result<(usize, u64), String> {
    let Some(&typ) = b.first() else {
        return Err("found an empty event".into());
    };
    let nargs = usize::from(TIMED_ARGS[usize::from(typ)]);
    if nargs == 0 {
        return Err(untimed(typ));
    }
    e.typ = typ;
    let mut n = 1;
    let Some(dt) = read_uvarint(b, &mut n) else {
        return Err("found invalid uvarint for timestamp".into());
    };
    // Go leaves the slots past the event's own arguments as the cursor's
    // previous event had them; nothing it yields reads them, and zeros keep
    // `Event::raw_args` meaningful.
    e.args = [0; 4];
    for slot in e.args.iter_mut().take(nargs - 1) {
        match read_uvarint(b, &mut n) {
            Some(v) => *slot = v,
            None => return Err("found invalid uvarint".into()),
        }
    }
    Ok((n, dt))
}

#[cold]
fn untimed(typ: u8) -> String {
    if usize::from(typ) >= SPECS.len() {
        format!("found invalid event type: {typ}")
    } else {
        format!("found event without a timestamp: type={typ}")
    }
}

/// Go's `binary.Uvarint` at `b[*n..]`, advancing `n`; `None` when the
/// data ends inside it or it overflows.
#[inline(always)]
fn read_uvarint(b: &[u8], n: &mut usize) -> Option<u64> {
    let first = *b.get(*n)?;
    if first < 0x80 {
        *n += 1;
        return Some(u64::from(first));
    }
    let mut x = u64::from(first & 0x7f);
    let mut shift = 7;
    let mut i = *n + 1;
    loop {
        let byte = *b.get(i)?;
        let k = i - *n;
        if k == 10 {
            return None;
        }
        if byte < 0x80 {
            if k == 9 && byte > 1 {
                return None;
            }
            *n = i + 1;
            return Some(x | u64::from(byte) << shift);
        }
        x |= u64::from(byte & 0x7f) << shift;
        shift += 7;
        i += 1;
    }
}

/// The frontier: Go's min-heap of batch cursors by the time of their next
/// event, as (time, index into the cursors) so that moving an entry moves
/// 16 bytes; only the times are compared, as in Go.
type Heap = Vec<(i64, u32)>;

fn heap_insert(heap: &mut Heap, e: (i64, u32)) {
    heap.push(e);
    let last = heap.len() - 1;
    sift_up(heap, last);
}

#[inline(always)]
fn heap_update(heap: &mut Heap, i: usize) {
    if sift_up(heap, i) != i {
        return;
    }
    sift_down(heap, i);
}

fn heap_remove(heap: &mut Heap, mut i: usize) {
    // Go sifts the entry to the root regardless of times, then pops it.
    while i > 0 {
        heap.swap((i - 1) / 2, i);
        i = (i - 1) / 2;
    }
    let last = heap.len() - 1;
    heap.swap(0, last);
    heap.pop();
    sift_down(heap, 0);
}

fn sift_up(heap: &mut Heap, mut i: usize) -> usize {
    while i > 0 && heap[(i - 1) / 2].0 > heap[i].0 {
        heap.swap((i - 1) / 2, i);
        i = (i - 1) / 2;
    }
    i
}

fn sift_down(heap: &mut Heap, mut i: usize) {
    loop {
        let m = min3(heap, i, 2 * i + 1, 2 * i + 2);
        if m == i {
            return;
        }
        heap.swap(i, m);
        i = m;
    }
}

#[inline]
fn min3(heap: &Heap, i0: usize, i1: usize, i2: usize) -> usize {
    let mut min = i0;
    let mut min_t = heap.get(i0).map_or(i64::MAX, |c| c.0);
    if let Some(c) = heap.get(i1) {
        if c.0 < min_t {
            min_t = c.0;
            min = i1;
        }
    }
    if let Some(c) = heap.get(i2) {
        if c.0 < min_t {
            min = i2;
        }
    }
    min
}

/// Where events go once ordered: the decoder's timestamp fix-up, table
/// checks and the caller's sink.
pub(crate) trait Emit {
    /// Takes the event where it lies: it may fix its time.
    fn emit(&mut self, ev: &mut RawEvent, gen: &Generation) -> Result<(), MergeError>;
}

/// The cursors of one generation and their heap, kept between generations
/// for their allocations.
#[derive(Debug)]
pub(crate) struct Frontier {
    cursors: Vec<Cursor>,
    heap: Heap,
    /// The generation's clock, for every event's time.
    scale: TickScale,
}

impl Default for Frontier {
    fn default() -> Self {
        Frontier {
            cursors: Vec::new(),
            heap: Vec::new(),
            scale: TickScale::new(0.0),
        }
    }
}

/// Yields every event of a whole generation, after its Sync event, in Go's
/// order.
pub(crate) fn run(
    order: &mut Ordering,
    gen: &mut Generation,
    f: &mut Frontier,
    out: &mut impl Emit,
    mut sync: RawEvent,
) -> Result<(), MergeError> {
    f.cursors.clear();
    f.heap.clear();
    f.scale = TickScale::new(gen.ns_per_tick);
    for (k, t) in gen.threads.iter().enumerate() {
        let mut c = Cursor::new(t.m, k);
        if c.next_event(gen, f.scale)? {
            heap_insert(&mut f.heap, (c.ev.time, f.cursors.len() as u32));
            f.cursors.push(c);
        }
    }
    out.emit(&mut sync, gen)?;
    let mut cpu = 0;
    loop {
        // Everything the last advance queued goes out before the next one.
        for ev in order.queue.iter_mut() {
            out.emit(ev, gen)?;
        }
        order.queue.clear();
        let head = f.heap.first().map(|h| h.0);
        if let Some(s) = gen.cpu_samples.get(cpu) {
            if head.is_none_or(|t| s.time < t) {
                let mut args = [0; 4];
                args[0] = s.stack;
                let mut ev = RawEvent {
                    typ: crate::spec::EV_CPU_SAMPLE,
                    time: s.time,
                    ctx: s.ctx,
                    args,
                    offset: s.offset,
                };
                cpu += 1;
                out.emit(&mut ev, gen)?;
                continue;
            }
        }
        if head.is_none() {
            return Ok(());
        }
        if try_advance(order, gen, f, 0)? {
            continue;
        }
        // The head cannot go yet: try the others in time order (rare).
        sort_func(&mut f.heap, |a, b| a.0 < b.0);
        let mut advanced = false;
        for i in 1..f.heap.len() {
            if try_advance(order, gen, f, i)? {
                advanced = true;
                break;
            }
        }
        if !advanced {
            let first = f.heap.first().and_then(|h| f.cursors.get(h.1 as usize));
            let (offset, name) = first.map_or((gen.end_offset(), ""), |c| (c.ev.offset, spec(c.ev.typ).name));
            return Err(MergeError::new(offset, format!(
                    "broken trace: failed to advance: no thread's next event can happen next (first: {name}) in generation {}",
                    gen.number
                )));
        }
    }
}

#[inline(always)]
fn try_advance(
    order: &mut Ordering,
    gen: &mut Generation,
    f: &mut Frontier,
    i: usize,
) -> Result<bool, MergeError> {
    let number = gen.number;
    let Some(c) = f.heap.get(i).and_then(|h| f.cursors.get_mut(h.1 as usize)) else {
        return Ok(false);
    };
    let offset = c.ev.offset;
    match order.advance(&mut c.ev, gen, c.m, &mut c.slot, number) {
        Ok(true) => {}
        Ok(false) => return Ok(false),
        Err(what) => return Err(MergeError::new(offset, what)),
    }
    if c.next_event(gen, f.scale)? {
        f.heap[i].0 = c.ev.time;
        heap_update(&mut f.heap, i);
    } else {
        heap_remove(&mut f.heap, i);
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uvarints_read_as_go_reads_them() {
        let mut n = 0;
        assert_eq!(read_uvarint(&[0x96, 0x01], &mut n), Some(150));
        assert_eq!(n, 2);
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        let mut n = 0;
        assert_eq!(read_uvarint(&max, &mut n), Some(u64::MAX));
        let mut over = max;
        over[9] = 2;
        assert_eq!(read_uvarint(&over, &mut 0), None);
        assert_eq!(read_uvarint(&[0x80; 11], &mut 0), None);
        assert_eq!(read_uvarint(&[0x80], &mut 0), None);
    }

    #[test]
    fn timed_events_need_a_known_timed_type() {
        let mut e = BaseEvent::default();
        assert_eq!(read_timed(&[17, 5], &mut e), Ok((2, 5)));
        assert_eq!(e.typ, 17);
        assert_eq!(read_timed(&[16, 1, 7, 9], &mut e), Ok((4, 1)));
        assert_eq!(e.args, [7, 9, 0, 0]);
        assert!(read_timed(&[137, 1], &mut e)
            .unwrap_err()
            .contains("invalid event type: 137"));
        assert!(read_timed(&[60, 1], &mut e)
            .unwrap_err()
            .contains("without a timestamp"));
        assert!(read_timed(&[4, 1], &mut e)
            .unwrap_err()
            .contains("without a timestamp"));
        assert_eq!(
            read_timed(&[16, 1, 7], &mut e).unwrap_err(),
            "found invalid uvarint"
        );
        assert_eq!(
            read_timed(&[17], &mut e).unwrap_err(),
            "found invalid uvarint for timestamp"
        );
        assert_eq!(read_timed(&[], &mut e).unwrap_err(), "found an empty event");
    }

    #[test]
    fn the_heap_keeps_go_s_layout() {
        let mut h = Vec::new();
        for (t, m) in [(5, 1), (3, 2), (5, 3), (3, 4), (1, 5), (5, 6)] {
            heap_insert(&mut h, (t, m));
        }
        let ms = |h: &Heap| h.iter().map(|c| c.1).collect::<Vec<_>>();
        // Worked by hand through Go's heapInsert: strict comparisons, so
        // equal times never move past each other.
        assert_eq!(ms(&h), [5, 2, 3, 1, 4, 6]);
        h[0].0 = 3;
        heap_update(&mut h, 0);
        assert_eq!(ms(&h), [5, 2, 3, 1, 4, 6]);
        h[0].0 = 4;
        heap_update(&mut h, 0);
        assert_eq!(ms(&h), [2, 4, 3, 1, 5, 6]);
        heap_remove(&mut h, 3);
        assert_eq!(ms(&h), [2, 4, 3, 6, 5]);
    }
}
