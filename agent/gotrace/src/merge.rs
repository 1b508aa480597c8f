//! Merges one generation's per-thread event batches into the order Go's
//! parser yields: a cursor per thread over its batches, a min-heap of the
//! cursors by the time of their next event, and the ordering state machine
//! deciding which of them may go next (Go's `batchcursor.go` and the loop of
//! `Reader.ReadEvent`). The heap is Go's, operation for operation: which of
//! two threads with events at the same time is tried first depends on it.

use crate::generation::{ticks_to_ns, Generation};
use crate::gosort::sort_func;
use crate::order::{BaseEvent, Ordering, RawEvent};
use crate::spec::{spec, SPECS};

/// A decoding or ordering failure at a stream offset.
#[derive(Debug)]
pub(crate) struct MergeError {
    pub(crate) offset: usize,
    pub(crate) what: String,
}

/// A thread's position in its event batches (Go's `batchCursor`).
#[derive(Debug, Clone)]
pub(crate) struct Cursor {
    m: i64,
    /// Index of the thread in `Generation::threads`.
    thread: usize,
    last_ts: i64,
    idx: usize,
    data_off: usize,
    /// The next event, read but not yet ordered.
    ev: BaseEvent,
}

impl Cursor {
    fn new(m: i64, thread: usize) -> Self {
        Cursor {
            m,
            thread,
            last_ts: 0,
            idx: 0,
            data_off: 0,
            ev: BaseEvent::default(),
        }
    }

    /// Reads the thread's next event; `Ok(false)` when it has no more.
    fn next_event(&mut self, gen: &Generation) -> Result<bool, MergeError> {
        let Some(t) = gen.threads.get(self.thread) else {
            return Ok(false);
        };
        loop {
            let Some(&b) = t.batches.get(self.idx) else {
                return Ok(false);
            };
            let (data, ts, body_offset) = gen.event_batch(b);
            if self.data_off >= data.len() {
                // Go accepts empty batches.
                self.idx += 1;
                self.data_off = 0;
                self.last_ts = 0;
                continue;
            }
            if self.last_ts == 0 {
                self.last_ts = ticks_to_ns(gen.ns_per_tick, ts);
            }
            let offset = body_offset + self.data_off;
            let (n, dt) = read_timed(&data[self.data_off..], &mut self.ev)
                .map_err(|what| MergeError { offset, what })?;
            self.ev.time = ticks_to_ns(gen.ns_per_tick, dt).wrapping_add(self.last_ts);
            self.ev.offset = offset;
            self.last_ts = self.ev.time;
            self.data_off += n;
            return Ok(true);
        }
    }
}

/// Reads one timed event (Go's `readTimedBaseEvent`): its type, the
/// timestamp delta it returns and the arguments it stores in `e`. Returns
/// how many bytes it took.
#[inline]
fn read_timed(b: &[u8], e: &mut BaseEvent) -> Result<(usize, u64), String> {
    let Some(&typ) = b.first() else {
        return Err("found an empty event".into());
    };
    if usize::from(typ) >= SPECS.len() {
        return Err(format!("found invalid event type: {typ}"));
    }
    let s = spec(typ);
    if s.args.is_empty() || !s.timed {
        return Err(format!("found event without a timestamp: type={typ}"));
    }
    e.typ = typ;
    let mut n = 1;
    let dt = match read_uvarint(b, &mut n) {
        Some(v) => v,
        None => return Err("found invalid uvarint for timestamp".into()),
    };
    // Go leaves the slots past the event's own arguments as the cursor's
    // previous event had them; nothing it yields reads them, and zeros keep
    // `Event::raw_args` meaningful.
    e.args = [0; 4];
    for slot in e.args.iter_mut().take(s.args.len() - 1) {
        match read_uvarint(b, &mut n) {
            Some(v) => *slot = v,
            None => return Err("found invalid uvarint".into()),
        }
    }
    Ok((n, dt))
}

/// Go's `binary.Uvarint` at `b[*n..]`, advancing `n`; `None` when the
/// data ends inside it or it overflows.
#[inline(always)]
fn read_uvarint(b: &[u8], n: &mut usize) -> Option<u64> {
    let mut x = 0u64;
    let mut shift = 0;
    let mut i = *n;
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

fn heap_insert(heap: &mut Vec<Cursor>, c: Cursor) {
    heap.push(c);
    let last = heap.len() - 1;
    sift_up(heap, last);
}

fn heap_update(heap: &mut [Cursor], i: usize) {
    if sift_up(heap, i) != i {
        return;
    }
    sift_down(heap, i);
}

fn heap_remove(heap: &mut Vec<Cursor>, mut i: usize) {
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

fn sift_up(heap: &mut [Cursor], mut i: usize) -> usize {
    while i > 0 && heap[(i - 1) / 2].ev.time > heap[i].ev.time {
        heap.swap((i - 1) / 2, i);
        i = (i - 1) / 2;
    }
    i
}

fn sift_down(heap: &mut [Cursor], mut i: usize) {
    loop {
        let m = min3(heap, i, 2 * i + 1, 2 * i + 2);
        if m == i {
            return;
        }
        heap.swap(i, m);
        i = m;
    }
}

fn min3(heap: &[Cursor], i0: usize, i1: usize, i2: usize) -> usize {
    let mut min = i0;
    let mut min_t = heap.get(i0).map_or(i64::MAX, |c| c.ev.time);
    for i in [i1, i2] {
        if let Some(c) = heap.get(i) {
            if c.ev.time < min_t {
                min_t = c.ev.time;
                min = i;
            }
        }
    }
    min
}

/// Where events go once ordered: the decoder's timestamp fix-up, table
/// checks and the caller's sink.
pub(crate) trait Emit {
    fn emit(&mut self, ev: RawEvent, gen: &Generation) -> Result<(), MergeError>;
}

/// Yields every event of a whole generation, after its Sync event, in Go's
/// order. `frontier` is scratch space kept between generations.
pub(crate) fn run(
    order: &mut Ordering,
    gen: &mut Generation,
    frontier: &mut Vec<Cursor>,
    out: &mut impl Emit,
    sync: RawEvent,
) -> Result<(), MergeError> {
    frontier.clear();
    for (k, t) in gen.threads.iter().enumerate() {
        let mut c = Cursor::new(t.m, k);
        if c.next_event(gen)? {
            heap_insert(frontier, c);
        }
    }
    out.emit(sync, gen)?;
    let mut cpu = 0;
    loop {
        while let Some(ev) = order.queue.pop_front() {
            out.emit(ev, gen)?;
        }
        let samples = gen.cpu_samples.len();
        if frontier.is_empty() && cpu >= samples {
            return Ok(());
        }
        if let Some(s) = gen.cpu_samples.get(cpu) {
            if frontier.first().is_none_or(|c| s.time < c.ev.time) {
                let mut args = [0; 4];
                args[0] = s.stack;
                let ev = RawEvent {
                    typ: crate::spec::EV_CPU_SAMPLE,
                    time: s.time,
                    ctx: s.ctx,
                    args,
                    offset: s.offset,
                };
                cpu += 1;
                out.emit(ev, gen)?;
                continue;
            }
        }
        if try_advance(order, gen, frontier, 0)? {
            continue;
        }
        // The head cannot go yet: try the others in time order (rare).
        sort_func(frontier, |a, b| a.ev.time < b.ev.time);
        let mut advanced = false;
        for i in 1..frontier.len() {
            if try_advance(order, gen, frontier, i)? {
                advanced = true;
                break;
            }
        }
        if !advanced {
            let (offset, name) = frontier
                .first()
                .map_or((gen.end_offset(), ""), |c| (c.ev.offset, spec(c.ev.typ).name));
            return Err(MergeError {
                offset,
                what: format!(
                    "broken trace: failed to advance: no thread's next event can happen next (first: {name}) in generation {}",
                    gen.number
                ),
            });
        }
    }
}

fn try_advance(
    order: &mut Ordering,
    gen: &mut Generation,
    frontier: &mut Vec<Cursor>,
    i: usize,
) -> Result<bool, MergeError> {
    let number = gen.number;
    let c = &mut frontier[i];
    let offset = c.ev.offset;
    match order.advance(&mut c.ev, gen, c.m, number) {
        Ok(true) => {}
        Ok(false) => return Ok(false),
        Err(what) => return Err(MergeError { offset, what }),
    }
    if c.next_event(gen)? {
        heap_update(frontier, i);
    } else {
        heap_remove(frontier, i);
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
        assert!(read_timed(&[16, 1, 7], &mut e)
            .unwrap_err()
            .contains("invalid uvarint"));
        assert!(read_timed(&[17], &mut e).unwrap_err().contains("for timestamp"));
    }

    fn cursor(time: i64, m: i64) -> Cursor {
        let mut c = Cursor::new(m, 0);
        c.ev.time = time;
        c
    }

    #[test]
    fn the_heap_keeps_go_s_layout() {
        let mut h = Vec::new();
        for (t, m) in [(5, 1), (3, 2), (5, 3), (3, 4), (1, 5), (5, 6)] {
            heap_insert(&mut h, cursor(t, m));
        }
        let ms = |h: &[Cursor]| h.iter().map(|c| c.m).collect::<Vec<_>>();
        // Worked by hand through Go's heapInsert: strict comparisons, so
        // equal times never move past each other.
        assert_eq!(ms(&h), [5, 2, 3, 1, 4, 6]);
        h[0].ev.time = 3;
        heap_update(&mut h, 0);
        assert_eq!(ms(&h), [5, 2, 3, 1, 4, 6]);
        h[0].ev.time = 4;
        heap_update(&mut h, 0);
        assert_eq!(ms(&h), [2, 4, 3, 1, 5, 6]);
        heap_remove(&mut h, 3);
        assert_eq!(ms(&h), [2, 4, 3, 6, 5]);
    }
}
