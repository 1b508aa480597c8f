//! The ordering state machine: Go's `ordering` (`internal/trace/order.go`).
//!
//! It emulates the scheduler state of every goroutine, P and thread so as to
//! decide whether an event can happen next (the events of different threads
//! carry sequence numbers that give a partial order) and to validate it.
//! Events that pass are queued, sometimes with state "smuggled" into unused
//! arguments as Go does (old states, range names), sometimes with extra
//! events Go makes up (a coroutine switch is a block, an unblock and a
//! start). The state and the dispatch live here; the handlers in
//! `order_procs.rs`, `order_goroutines.rs` and `order_ranges.rs`.

use rustc_hash::FxHashMap;

use crate::generation::Generation;
pub(crate) use crate::sched::{SchedCtx, NO_GOROUTINE, NO_PROC, NO_THREAD};
use crate::spec::*;

/// Go's `NoTask`.
pub(crate) const NO_TASK: u64 = u64::MAX;

/// Goroutine statuses on the wire (`tracev2.GoStatus`).
pub(crate) mod go_status {
    pub(crate) const RUNNABLE: u8 = 1;
    pub(crate) const RUNNING: u8 = 2;
    pub(crate) const SYSCALL: u8 = 3;
    pub(crate) const WAITING: u8 = 4;
}

/// P statuses on the wire (`tracev2.ProcStatus`).
pub(crate) mod proc_status {
    pub(crate) const RUNNING: u8 = 1;
    pub(crate) const IDLE: u8 = 2;
    pub(crate) const SYSCALL: u8 = 3;
    pub(crate) const SYSCALL_ABANDONED: u8 = 4;
}

/// Goroutine states of the API (`trace.GoState`), as numbers.
pub(crate) mod go_state {
    pub(crate) const UNDETERMINED: u8 = 0;
    pub(crate) const NOT_EXIST: u8 = 1;
    pub(crate) const RUNNABLE: u8 = 2;
    pub(crate) const RUNNING: u8 = 3;
    pub(crate) const WAITING: u8 = 4;
    pub(crate) const SYSCALL: u8 = 5;
}

/// P states of the API (`trace.ProcState`), as numbers.
pub(crate) mod proc_state {
    pub(crate) const UNDETERMINED: u8 = 0;
    pub(crate) const NOT_EXIST: u8 = 1;
    pub(crate) const RUNNING: u8 = 2;
    pub(crate) const IDLE: u8 = 3;
}

/// Go's `tracev2GoStatus2GoState`; index 0 (GoBad) maps to the zero state.
pub(crate) const GO_STATUS_TO_STATE: [u8; 5] = [
    go_state::UNDETERMINED,
    go_state::RUNNABLE,
    go_state::RUNNING,
    go_state::SYSCALL,
    go_state::WAITING,
];

/// Go's `tracev2ProcStatus2ProcState`.
pub(crate) const PROC_STATUS_TO_STATE: [u8; 5] = [
    proc_state::UNDETERMINED,
    proc_state::RUNNING,
    proc_state::IDLE,
    proc_state::RUNNING,
    proc_state::IDLE,
];

/// An event as the ordering holds it: Go's `baseEvent` plus its context
/// and where its bytes are in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawEvent {
    pub(crate) typ: EventType,
    pub(crate) time: i64,
    pub(crate) ctx: SchedCtx,
    /// The arguments after the timestamp, as ordered (see the module docs).
    pub(crate) args: [u64; 4],
    pub(crate) offset: usize,
}

/// The event a batch cursor read: type, time, arguments, offset.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BaseEvent {
    pub(crate) typ: EventType,
    pub(crate) time: i64,
    pub(crate) args: [u64; 4],
    pub(crate) offset: usize,
}

impl BaseEvent {
    /// The event as queued, in context `ctx`.
    #[inline(always)]
    pub(crate) fn queued(&self, ctx: SchedCtx) -> RawEvent {
        RawEvent {
            typ: self.typ,
            time: self.time,
            ctx,
            args: self.args,
            offset: self.offset,
        }
    }

    /// Go's `baseEvent.extra`: the first argument slot after the event's
    /// own arguments, where the ordering smuggles state.
    pub(crate) fn extra_index(typ: EventType) -> usize {
        spec(typ).args.len().saturating_sub(1)
    }
}

/// A sequence number within a generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seq {
    pub(crate) gen: u64,
    pub(crate) seq: u64,
}

impl Seq {
    pub(crate) fn new(gen: u64, seq: u64) -> Seq {
        Seq { gen, seq }
    }

    /// Whether `self` comes right after `before`.
    pub(crate) fn succeeds(self, before: Seq) -> bool {
        self.gen == before.gen && self.seq == before.seq.wrapping_add(1)
    }
}

/// A kind of range (GC sweep, mark assist, stop-the-world...) in flight on
/// a resource: the type of its begin event and, for stop-the-world, the
/// string id of its reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RangeType {
    pub(crate) typ: EventType,
    pub(crate) desc: u64,
}

impl RangeType {
    /// Go's `makeRangeType`: ends and actives name their begin.
    pub(crate) fn new(typ: EventType, desc: u64) -> RangeType {
        let start = spec(typ).start;
        RangeType {
            typ: if start != EV_NONE { start } else { typ },
            desc,
        }
    }
}

/// Ranges in flight on one resource (Go's `rangeState`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Ranges(pub(crate) Vec<RangeType>);

impl Ranges {
    pub(crate) fn begin(&mut self, r: RangeType) -> Result<(), String> {
        if self.0.contains(&r) {
            return Err(format!(
                "discovered event already in-flight for when starting event {}",
                spec(r.typ).name
            ));
        }
        self.0.push(r);
        Ok(())
    }

    pub(crate) fn active(&mut self, r: RangeType, initial_gen: bool) -> Result<(), String> {
        if initial_gen {
            if self.0.contains(&r) {
                return Err(format!("found named active range already in first gen: {r:?}"));
            }
            self.0.push(r);
        } else if !self.0.contains(&r) {
            return Err(format!(
                "resource is missing active range: {} {:?}",
                spec(r.typ).name,
                self.0
            ));
        }
        Ok(())
    }

    /// Ends the first range begun by the start type of `typ`; returns its
    /// description.
    pub(crate) fn end(&mut self, typ: EventType) -> Result<u64, String> {
        let start = spec(typ).start;
        match self.0.iter().position(|r| r.typ == start) {
            Some(i) => Ok(self.0.swap_remove(i).desc),
            None => Err(format!(
                "tried to end event {}, but not in-flight",
                spec(start).name
            )),
        }
    }
}

/// A user region open on a goroutine: its task and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserRegion {
    pub(crate) task: u64,
    pub(crate) name: Box<[u8]>,
}

#[derive(Debug, Clone)]
pub(crate) struct GState {
    pub(crate) status: u8,
    pub(crate) seq: Seq,
    pub(crate) regions: Vec<UserRegion>,
    pub(crate) ranges: Ranges,
}

impl GState {
    pub(crate) fn new(status: u8, seq: Seq) -> GState {
        GState {
            status,
            seq,
            regions: Vec::new(),
            ranges: Ranges::default(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct PState {
    pub(crate) status: u8,
    pub(crate) seq: Seq,
    pub(crate) ranges: Ranges,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct MState {
    pub(crate) g: i64,
    pub(crate) p: i64,
}

#[derive(Debug, Clone)]
pub(crate) struct TaskState {
    pub(crate) name: Box<[u8]>,
    pub(crate) parent: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GcState {
    Undetermined,
    NotRunning,
    Running,
}

/// Presence a context requires of a goroutine, P or thread.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    MustNot,
    May,
    Must,
}

pub(crate) struct Reqs {
    pub(crate) m: Need,
    pub(crate) p: Need,
    pub(crate) g: Need,
}

/// Go's `userGoReqs`: a thread, a P and a goroutine.
pub(crate) const USER_GO: Reqs = Reqs {
    m: Need::Must,
    p: Need::Must,
    g: Need::Must,
};

/// Go's `validateCtx`. Inlined with constant requirements, it is a few
/// compares; the message is only made on failure.
#[inline(always)]
pub(crate) fn validate_ctx(ctx: SchedCtx, reqs: Reqs) -> Result<(), String> {
    let ok = |have: bool, need: Need| match need {
        Need::Must => have,
        Need::MustNot => !have,
        Need::May => true,
    };
    if ok(ctx.m != NO_THREAD, reqs.m) && ok(ctx.p != NO_PROC, reqs.p) && ok(ctx.g != NO_GOROUTINE, reqs.g) {
        Ok(())
    } else {
        Err(ctx_error(ctx, reqs))
    }
}

#[cold]
fn ctx_error(ctx: SchedCtx, reqs: Reqs) -> String {
    for (have, need, what) in [
        (ctx.m != NO_THREAD, reqs.m, "thread"),
        (ctx.p != NO_PROC, reqs.p, "proc"),
        (ctx.g != NO_GOROUTINE, reqs.g, "goroutine"),
    ] {
        match (need, have) {
            (Need::Must, false) => return format!("expected a {what} but didn't have one"),
            (Need::MustNot, true) => return format!("expected no {what} but had one"),
            _ => {}
        }
    }
    "invalid context".into()
}

/// The threads' states, in slots that stay put: a batch cursor keeps the
/// slot of its thread, so the thread of every event is not looked up.
#[derive(Debug, Default)]
pub(crate) struct Threads {
    index: FxHashMap<i64, u32>,
    states: Vec<(i64, MState)>,
}

impl Threads {
    /// The slot of a thread, made (with no goroutine nor P) if new.
    pub(crate) fn slot(&mut self, m: i64) -> usize {
        let next = self.states.len();
        let slot = *self.index.entry(m).or_insert(next as u32) as usize;
        if slot == next {
            self.states.push((
                m,
                MState {
                    g: NO_GOROUTINE,
                    p: NO_PROC,
                },
            ));
        }
        slot
    }

    pub(crate) fn get(&self, m: i64) -> Option<&MState> {
        let &slot = self.index.get(&m)?;
        self.states.get(slot as usize).map(|(_, s)| s)
    }

    pub(crate) fn get_mut(&mut self, m: i64) -> Option<&mut MState> {
        let &slot = self.index.get(&m)?;
        self.states.get_mut(slot as usize).map(|(_, s)| s)
    }

    pub(crate) fn at(&mut self, slot: usize) -> Option<&mut MState> {
        self.states.get_mut(slot).map(|(_, s)| s)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (i64, &MState)> + '_ {
        self.states.iter().map(|(m, s)| (*m, s))
    }
}

/// What a handler decided: `None` when the event cannot happen yet (the
/// caller tries other threads), else the thread's context after it.
pub(crate) type Advanced = Result<Option<SchedCtx>, String>;

/// Go's `ordering`.
#[derive(Debug)]
pub(crate) struct Ordering {
    pub(crate) g: FxHashMap<i64, GState>,
    pub(crate) p: FxHashMap<i64, PState>,
    pub(crate) m: Threads,
    pub(crate) tasks: FxHashMap<u64, TaskState>,
    pub(crate) gc_seq: u64,
    pub(crate) gc_state: GcState,
    pub(crate) initial_gen: u64,
    /// Events that advanced, for the caller to take all of before the
    /// next advance.
    pub(crate) queue: Vec<RawEvent>,
}

/// What a handler sees of the event being advanced.
pub(crate) struct Ctx<'a> {
    pub(crate) ev: &'a mut BaseEvent,
    pub(crate) gen: &'a mut Generation,
    pub(crate) gen_num: u64,
    pub(crate) cur: SchedCtx,
}

impl Ctx<'_> {
    /// The event as queued, in context `ctx`.
    pub(crate) fn event(&self, ctx: SchedCtx) -> RawEvent {
        self.ev.queued(ctx)
    }

    /// Go's `makeEvent`: a made-up event at this event's time and offset.
    pub(crate) fn made_up(&self, ctx: SchedCtx, typ: EventType, args: &[u64]) -> RawEvent {
        let mut all = [0; 4];
        for (slot, a) in all.iter_mut().zip(args) {
            *slot = *a;
        }
        RawEvent {
            typ,
            time: self.ev.time,
            ctx,
            args: all,
            offset: self.ev.offset,
        }
    }

    pub(crate) fn name(&self) -> &'static str {
        spec(self.ev.typ).name
    }
}

impl Ordering {
    pub(crate) fn new() -> Self {
        Ordering {
            g: FxHashMap::default(),
            p: FxHashMap::default(),
            m: Threads::default(),
            tasks: FxHashMap::default(),
            gc_seq: 0,
            gc_state: GcState::Undetermined,
            initial_gen: 0,
            queue: Vec::new(),
        }
    }

    /// Go's `ordering.Advance`: whether `ev`, from thread `m`, can happen
    /// now; if so its events are queued. `slot` caches the thread's slot.
    #[inline(always)]
    pub(crate) fn advance(
        &mut self,
        ev: &mut BaseEvent,
        gen: &mut Generation,
        m: i64,
        slot: &mut Option<usize>,
        gen_num: u64,
    ) -> Result<bool, String> {
        if self.initial_gen == 0 {
            self.initial_gen = gen_num;
        }
        let (mut g, mut p) = (NO_GOROUTINE, NO_PROC);
        if m != NO_THREAD {
            // Created even when the event cannot advance, as Go does: other
            // events look the thread up.
            let k = *slot.get_or_insert_with(|| self.m.slot(m));
            if let Some(ms) = self.m.at(k) {
                (g, p) = (ms.g, ms.p);
            }
        }
        // Made whole at once: written field by field and read back whole, it
        // would stall.
        let cur = SchedCtx { g, p, m };
        // The goroutine events that are most of a trace take the context by
        // value, so that it stays in registers: the handlers taking `Ctx`
        // keep it in memory, and reading it back whole stalls.
        let next = match ev.typ {
            EV_GO_START => self.go_start(ev, gen_num, cur),
            EV_GO_DESTROY | EV_GO_STOP | EV_GO_BLOCK => self.go_stop_exec(ev, cur),
            EV_GO_UNBLOCK => self.go_unblock(ev, gen_num, cur),
            _ => self.dispatch(&mut Ctx {
                ev,
                gen,
                gen_num,
                cur,
            }),
        }?;
        match next {
            Some(new) => {
                if let Some(ms) = slot.and_then(|k| self.m.at(k)) {
                    ms.p = new.p;
                    ms.g = new.g;
                }
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The handler of every other event type (out of line: its `Ctx` lives
    /// in memory).
    #[inline(never)]
    fn dispatch(&mut self, cx: &mut Ctx<'_>) -> Advanced {
        match cx.ev.typ {
            EV_PROCS_CHANGE | EV_GO_LABEL | EV_USER_LOG => self.annotation(cx),
            EV_PROC_START => self.proc_start(cx),
            EV_PROC_STOP => self.proc_stop(cx),
            EV_PROC_STEAL => self.proc_steal(cx),
            EV_PROC_STATUS => self.proc_status(cx),
            EV_GO_CREATE | EV_GO_CREATE_BLOCKED => self.go_create(cx),
            EV_GO_CREATE_SYSCALL => self.go_create_syscall(cx),
            EV_GO_DESTROY_SYSCALL => self.go_destroy_syscall(cx),
            EV_GO_SYSCALL_BEGIN => self.go_syscall_begin(cx),
            EV_GO_SYSCALL_END => self.go_syscall_end(cx),
            EV_GO_SYSCALL_END_BLOCKED => self.go_syscall_end_blocked(cx),
            EV_GO_STATUS | EV_GO_STATUS_STACK => self.go_status(cx),
            EV_STW_BEGIN | EV_GC_MARK_ASSIST_BEGIN => self.go_range_begin(cx),
            EV_STW_END | EV_GC_MARK_ASSIST_END => self.go_range_end(cx),
            EV_GC_MARK_ASSIST_ACTIVE => self.go_range_active(cx),
            EV_GC_ACTIVE => self.gc_active(cx),
            EV_GC_BEGIN => self.gc_begin(cx),
            EV_GC_END => self.gc_end(cx),
            EV_GC_SWEEP_ACTIVE => self.gc_sweep_active(cx),
            EV_GC_SWEEP_BEGIN => self.gc_sweep_begin(cx),
            EV_GC_SWEEP_END => self.gc_sweep_end(cx),
            EV_HEAP_ALLOC | EV_HEAP_GOAL => self.heap_metric(cx),
            EV_USER_TASK_BEGIN => self.user_task_begin(cx),
            EV_USER_TASK_END => self.user_task_end(cx),
            EV_USER_REGION_BEGIN => self.user_region_begin(cx),
            EV_USER_REGION_END => self.user_region_end(cx),
            EV_GO_SWITCH | EV_GO_SWITCH_DESTROY => self.go_switch(cx),
            EV_SPAN..=EV_GOROUTINE_STACK_FREE => self.alloc_free(cx),
            other => Err(format!("bad event type found while ordering: {other}")),
        }
    }

    pub(crate) fn push(&mut self, ev: RawEvent) {
        self.queue.push(ev);
    }
}
