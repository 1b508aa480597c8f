//! One pass over a generation's raw batches: its time span, GC sequence numbers, user regions, table ids, and (for a window's first generation) the state every goroutine and P starts in.
//!
//! Nothing is ordered here: only what can be read off each batch on its own.
//! The statuses a generation opens with are the runtime's own account of
//! the state at its start (Go writes one for every goroutine and P the first
//! time it touches them in a generation, or at its end for those it never
//! touched), which is what a seam has to reach.

use rustc_hash::{FxHashMap, FxHashSet};

use super::input::{Gen, Role};
use crate::order::{go_status, proc_status, NO_THREAD};
use crate::spec::*;
use crate::wire::EVENT_ARGS;

/// What a window's first generation says of the state at its start.
#[derive(Debug, Default, Clone)]
pub(crate) struct StartState {
    /// Goroutines alive at the start: wire status and, for one running or
    /// in a syscall, the thread it is on (`NO_THREAD` when none).
    pub(crate) goroutines: FxHashMap<i64, (u8, i64)>,
    /// Goroutines in a GC mark assist at the start.
    pub(crate) assisting: FxHashSet<i64>,
    /// Goroutines created in the generation (they did not exist before).
    pub(crate) created: FxHashSet<i64>,
    /// Ps at the start: wire status and, for one running or in a syscall,
    /// the thread holding it.
    pub(crate) procs: FxHashMap<i64, (u8, i64)>,
    /// Ps sweeping at the start.
    pub(crate) sweeping: FxHashSet<i64>,
    /// A GC mark phase is running at the start.
    pub(crate) gc_running: bool,
}

/// What one pass over a generation found.
#[derive(Debug, Default, Clone)]
pub(crate) struct GenScan {
    /// Latest event or sample time (ticks).
    pub(crate) max_ticks: u64,
    /// GC events with the smallest and the largest sequence number: (seq, type).
    pub(crate) gc_first: Option<(u64, EventType)>,
    pub(crate) gc_last: Option<(u64, EventType)>,
    /// Batches (by index) holding GC events, whose sequence numbers may
    /// need rewriting.
    pub(crate) gc_batches: Vec<usize>,
    /// Any user region begins or ends.
    pub(crate) regions: bool,
    /// Largest string and stack ids of its tables.
    pub(crate) max_string: u64,
    pub(crate) max_stack: u64,
    /// Ticks per second, from its clock batch.
    pub(crate) freq: Option<u64>,
}

/// Reads uvarints as Go's `binary.Uvarint`; `None` when cut or too long.
#[inline(always)]
fn uvarint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut x = 0u64;
    let mut shift = 0u32;
    for i in 0..10 {
        let byte = *b.get(*pos + i)?;
        if byte < 0x80 {
            if i == 9 && byte > 1 {
                return None;
            }
            *pos += i + 1;
            return Some(x | u64::from(byte) << shift);
        }
        x |= u64::from(byte & 0x7f) << shift;
        shift += 7;
    }
    None
}

/// Calls `f(type, ticks, args, start offset in the body)` for every event
/// of an event batch; `args` are those after the time.
#[inline]
pub(crate) fn for_each_event(
    body: &[u8],
    batch_ticks: u64,
    mut f: impl FnMut(EventType, u64, &[u64], usize),
) -> Result<(), String> {
    let mut pos = 0;
    let mut ticks = batch_ticks;
    let mut args = [0u64; 5];
    while pos < body.len() {
        let at = pos;
        let typ = body[pos];
        let n = usize::from(EVENT_ARGS[usize::from(typ)]);
        if n == 0 {
            return Err(format!(
                "found event type {typ}, which has no timestamp, in an event batch"
            ));
        }
        pos += 1;
        for slot in args.iter_mut().take(n) {
            *slot = uvarint(body, &mut pos).ok_or_else(|| format!("event {} is cut", spec(typ).name))?;
        }
        ticks = ticks.wrapping_add(args[0]);
        f(typ, ticks, &args[1..n], at);
    }
    Ok(())
}

/// Scans a generation; fills `start` when it is a window's first.
pub(crate) fn scan(gen: &Gen, mut start: Option<&mut StartState>) -> Result<GenScan, String> {
    let mut s = GenScan::default();
    for (i, b) in gen.batches.iter().enumerate() {
        let body = gen.body(b);
        s.max_ticks = s.max_ticks.max(b.ticks);
        match b.role {
            Role::Events => {
                let mut has_gc = false;
                let m = b.m as i64;
                for_each_event(body, b.ticks, |typ, ticks, a, _| {
                    s.max_ticks = s.max_ticks.max(ticks);
                    match typ {
                        EV_GC_ACTIVE | EV_GC_BEGIN | EV_GC_END => {
                            has_gc = true;
                            let seq = a[0];
                            if s.gc_first.is_none_or(|(f, _)| seq < f) {
                                s.gc_first = Some((seq, typ));
                            }
                            if s.gc_last.is_none_or(|(l, _)| seq > l) {
                                s.gc_last = Some((seq, typ));
                            }
                        }
                        EV_USER_REGION_BEGIN | EV_USER_REGION_END => s.regions = true,
                        _ => {}
                    }
                    if let Some(st) = start.as_deref_mut() {
                        note_start(st, m, typ, a);
                    }
                })?;
                if has_gc {
                    s.gc_batches.push(i);
                }
            }
            Role::Strings => s.max_string = s.max_string.max(max_table_id(body, EV_STRING, false)?),
            Role::Stacks => s.max_stack = s.max_stack.max(max_table_id(body, EV_STACK, true)?),
            Role::CpuSamples => s.max_ticks = s.max_ticks.max(max_sample_ticks(body)?),
            Role::Sync => s.freq = super::frequency(body),
            Role::Experimental(_) => {}
        }
    }
    if let (Some(st), Some((_, typ))) = (start, s.gc_first) {
        // Go writes GCActive first in a generation whose start finds a GC
        // running; a cycle that begins later starts with GCBegin.
        st.gc_running = typ != EV_GC_BEGIN;
    }
    Ok(s)
}

/// The first status of each goroutine and P, and what tells the state at
/// the start (one status per resource and generation: Go writes it once).
fn note_start(st: &mut StartState, m: i64, typ: EventType, a: &[u64]) {
    match typ {
        EV_GO_STATUS | EV_GO_STATUS_STACK => {
            let (g, mid, status) = (a[0] as i64, a[1] as i64, a[2] as u8);
            let on = match status {
                go_status::RUNNING => m,
                go_status::SYSCALL => mid,
                _ => NO_THREAD,
            };
            st.goroutines.entry(g).or_insert((status, on));
        }
        EV_PROC_STATUS => {
            let (p, status) = (a[0] as i64, a[1] as u8);
            let on = match status {
                proc_status::RUNNING | proc_status::SYSCALL => m,
                _ => NO_THREAD,
            };
            st.procs.entry(p).or_insert((status, on));
        }
        EV_GO_CREATE | EV_GO_CREATE_BLOCKED | EV_GO_CREATE_SYSCALL => {
            st.created.insert(a[0] as i64);
        }
        EV_GC_MARK_ASSIST_ACTIVE => {
            st.assisting.insert(a[0] as i64);
        }
        EV_GC_SWEEP_ACTIVE => {
            st.sweeping.insert(a[0] as i64);
        }
        _ => {}
    }
}

/// The largest id of a strings or stacks batch.
fn max_table_id(body: &[u8], entry: u8, stack: bool) -> Result<u64, String> {
    let mut pos = 1;
    let mut max = 0;
    let cut = || "a table batch is cut".to_string();
    while pos < body.len() {
        if body[pos] != entry {
            return Err(format!("unexpected byte {} in a table batch", body[pos]));
        }
        pos += 1;
        let id = uvarint(body, &mut pos).ok_or_else(cut)?;
        max = max.max(id);
        let n = uvarint(body, &mut pos).ok_or_else(cut)?;
        if stack {
            for _ in 0..n.saturating_mul(4) {
                uvarint(body, &mut pos).ok_or_else(cut)?;
            }
        } else {
            pos = pos
                .checked_add(n as usize)
                .filter(|&p| p <= body.len())
                .ok_or_else(cut)?;
        }
    }
    Ok(max)
}

fn max_sample_ticks(body: &[u8]) -> Result<u64, String> {
    let mut max = 0;
    let mut pos = 1;
    while pos < body.len() {
        if body[pos] != EV_CPU_SAMPLE {
            return Err(format!("unexpected byte {} in a CPU samples batch", body[pos]));
        }
        pos += 1;
        let mut vals = [0u64; 5];
        for v in &mut vals {
            *v = uvarint(body, &mut pos).ok_or("a CPU samples batch is cut")?;
        }
        max = max.max(vals[0]);
    }
    Ok(max)
}

/// Rewrites the sequence numbers of a batch's GC events by `offset`.
pub(crate) fn rewrite_gc(
    body: &[u8],
    batch_ticks: u64,
    offset: i128,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let mut copied = 0;
    let mut edits: Vec<(usize, u64)> = Vec::new();
    for_each_event(body, batch_ticks, |typ, _, a, at| {
        if matches!(typ, EV_GC_ACTIVE | EV_GC_BEGIN | EV_GC_END) {
            edits.push((
                at,
                (i128::from(a[0]) + offset).clamp(0, i128::from(u64::MAX)) as u64,
            ));
        }
    })?;
    for (at, seq) in edits {
        // type byte, time delta, then the sequence number.
        let mut pos = at + 1;
        uvarint(body, &mut pos).ok_or("cut GC event")?;
        let seq_at = pos;
        uvarint(body, &mut pos).ok_or("cut GC event")?;
        out.extend_from_slice(&body[copied..seq_at]);
        crate::encode::put_uvarint(out, seq);
        copied = pos;
    }
    out.extend_from_slice(&body[copied..]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::{put_uvarint, EventBatches};

    #[test]
    fn events_are_walked_with_their_times() {
        let mut b = EventBatches::new(3);
        b.event(EV_GO_START, 10, &[5, 1]).expect("event");
        b.event(EV_GC_BEGIN, 15, &[7, 0]).expect("event");
        b.event(EV_GC_END, 300, &[8]).expect("event");
        let mut out = Vec::new();
        b.put(&mut out, 1);
        // Header: type, gen, m, ticks, size.
        let body = &out[5..];
        let mut seen = Vec::new();
        for_each_event(body, 10, |t, ticks, a, _| seen.push((t, ticks, a.to_vec()))).expect("walk");
        assert_eq!(
            seen,
            [
                (EV_GO_START, 10, vec![5, 1]),
                (EV_GC_BEGIN, 15, vec![7, 0]),
                (EV_GC_END, 300, vec![8])
            ]
        );
        let mut rewritten = Vec::new();
        rewrite_gc(body, 10, 200, &mut rewritten).expect("rewrite");
        let mut seqs = Vec::new();
        for_each_event(&rewritten, 10, |t, ticks, a, _| {
            if t != EV_GO_START {
                seqs.push((a[0], ticks));
            }
        })
        .expect("walk");
        assert_eq!(
            seqs,
            [(207, 15), (208, 300)],
            "times kept, sequence numbers moved"
        );
    }

    #[test]
    fn table_ids_are_found() {
        let mut body = vec![EV_STRINGS];
        for (id, s) in [(3u64, &b"ab"[..]), (9, b""), (4, b"xyz")] {
            body.push(EV_STRING);
            put_uvarint(&mut body, id);
            put_uvarint(&mut body, s.len() as u64);
            body.extend_from_slice(s);
        }
        assert_eq!(max_table_id(&body, EV_STRING, false), Ok(9));
        assert!(max_table_id(&body[..body.len() - 1], EV_STRING, false).is_err());
    }
}
