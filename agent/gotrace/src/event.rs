//! The events the decoder yields and what they tell, as Go's `trace.Event`
//! and its detail types (`Metric`, `Range`, `StateTransition`, ...).
//!
//! An [`Event`] borrows its [`Generation`] for strings and stacks, and is
//! handed to the caller's sink while the generation is being yielded. The
//! accessors return `None` where Go's would panic (asking a metric event for
//! its range).

use crate::generation::{ClockReading, ExperimentalBatch, Generation};
use crate::order::{proc_status, BaseEvent, RawEvent, GO_STATUS_TO_STATE, PROC_STATUS_TO_STATE};
use crate::resources::*;
use crate::spec::*;

/// One event of the trace, in the order and with the content Go's parser
/// (`golang.org/x/exp/trace`, `internal/trace`) yields it. Its `Display` is
/// Go's `Event.String()`, as `go tool trace -d=parsed` prints it.
#[derive(Debug, Clone, Copy)]
pub struct Event<'g> {
    pub(crate) raw: &'g RawEvent,
    pub(crate) gen: Option<&'g Generation>,
}

/// A stack, resolved through its generation's tables.
#[derive(Debug, Clone, Copy)]
pub struct Stack<'g> {
    gen: &'g Generation,
    id: u64,
}

/// One frame of a stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'g> {
    pub pc: u64,
    pub func: &'g [u8],
    pub file: &'g [u8],
    pub line: u64,
}

impl<'g> Stack<'g> {
    /// The stack's id in its generation's table (0: the empty stack).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Its frames, innermost first.
    pub fn frames(&self) -> impl Iterator<Item = Frame<'g>> + 'g {
        let gen = self.gen;
        gen.stack_pcs(self.id).unwrap_or(&[]).iter().map(move |&pc| {
            let (func, file, line) = gen.frame(pc).unwrap_or((&[], &[], 0));
            Frame { pc, func, file, line }
        })
    }
}

/// A metric sample (Go's `Metric`); names follow `runtime/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    pub name: &'static str,
    pub value: u64,
}

/// The names of the metrics Go's parser yields.
pub mod metric {
    pub const GOMAXPROCS: &str = "/sched/gomaxprocs:threads";
    pub const HEAP_OBJECTS: &str = "/memory/classes/heap/objects:bytes";
    pub const HEAP_GOAL: &str = "/gc/heap/goal:bytes";
}

/// A label applied to a goroutine (Go's `Label`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label<'g> {
    pub label: &'g [u8],
    pub resource: ResourceId,
}

/// The kinds of range Go's parser knows; each has a fixed name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeName<'g> {
    /// `"stop-the-world (REASON)"`.
    StopTheWorld(&'g [u8]),
    /// `"GC concurrent mark phase"`.
    GcMarkPhase,
    /// `"GC incremental sweep"`.
    GcSweep,
    /// `"GC mark assist"`.
    GcMarkAssist,
}

impl RangeName<'_> {
    /// The name as Go spells it (`Range.Name`).
    pub fn to_go_string(&self) -> String {
        match self {
            RangeName::StopTheWorld(reason) => {
                format!("stop-the-world ({})", String::from_utf8_lossy(reason))
            }
            RangeName::GcMarkPhase => "GC concurrent mark phase".into(),
            RangeName::GcSweep => "GC incremental sweep".into(),
            RangeName::GcMarkAssist => "GC mark assist".into(),
        }
    }
}

/// A range of time on a resource (Go's `Range`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range<'g> {
    pub name: RangeName<'g>,
    pub scope: ResourceId,
}

/// An attribute of a completed range (Go's `RangeAttribute`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeAttribute {
    pub name: &'static str,
    pub value: u64,
}

/// A task begins or ends (Go's `Task`; `kind` is Go's `Type`, empty for an
/// end whose begin is not in the trace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Task<'g> {
    pub id: TaskId,
    pub parent: TaskId,
    pub kind: &'g [u8],
}

/// A region begins or ends (Go's `Region`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region<'g> {
    pub task: TaskId,
    pub kind: &'g [u8],
}

/// A `runtime/trace.Log` call (Go's `Log`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Log<'g> {
    pub task: TaskId,
    pub category: &'g [u8],
    pub message: &'g [u8],
}

/// The states a resource went between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Goroutine { from: GoState, to: GoState },
    Proc { from: ProcState, to: ProcState },
}

/// A state change of a goroutine or P (Go's `StateTransition`).
#[derive(Debug, Clone, Copy)]
pub struct StateTransition<'g> {
    pub resource: ResourceId,
    pub change: Change,
    /// Why, for a goroutine that stops or blocks.
    pub reason: &'g [u8],
    /// The stack of the resource making the transition (for a goroutine's
    /// creation, the new goroutine's starting stack). As in Go, a creation
    /// always has one, possibly empty.
    pub stack: Option<Stack<'g>>,
}

impl StateTransition<'_> {
    /// `(from, to)` of a goroutine's transition.
    pub fn goroutine(&self) -> Option<(GoState, GoState)> {
        match self.change {
            Change::Goroutine { from, to } => Some((from, to)),
            Change::Proc { .. } => None,
        }
    }

    /// `(from, to)` of a P's transition.
    pub fn proc(&self) -> Option<(ProcState, ProcState)> {
        match self.change {
            Change::Proc { from, to } => Some((from, to)),
            Change::Goroutine { .. } => None,
        }
    }
}

/// What a Sync event says of the events up to the next one (Go's `Sync`).
#[derive(Debug, Clone, Copy)]
pub struct Sync<'g> {
    /// This is the Nth Sync event of the trace.
    pub n: u64,
    /// The generation that follows, for the Sync that starts one; `None`
    /// for the Sync that ends the trace or comes before an error.
    pub generation: Option<&'g Generation>,
    pub clock: Option<ClockReading>,
}

impl<'g> Sync<'g> {
    /// The generation's experimental batches (empty when it has none).
    pub fn experimental_batches(&self) -> impl Iterator<Item = ExperimentalBatch<'g>> + 'g {
        self.generation
            .into_iter()
            .flat_map(Generation::experimental_batches)
    }
}

/// An experimental event, raw (Go's `ExperimentalEvent`).
#[derive(Debug, Clone, Copy)]
pub struct Experimental {
    pub name: &'static str,
    pub experiment: &'static str,
    /// Names of the arguments, without the timestamp.
    pub arg_names: &'static [&'static str],
    args: [u64; 4],
}

impl Experimental {
    /// The arguments, in the order of `arg_names`.
    pub fn args(&self) -> &[u64] {
        &self.args[..self.arg_names.len().min(4)]
    }
}

impl<'g> Event<'g> {
    pub fn kind(&self) -> EventKind {
        kind(self.raw.typ)
    }

    /// Nanoseconds on the trace's clock (Go's `Event.Time()`): strictly
    /// increasing along the events of a trace.
    pub fn time(&self) -> i64 {
        self.raw.time
    }

    /// The goroutine running when the event happened (before the event, for
    /// a transition).
    pub fn goroutine(&self) -> GoId {
        GoId(self.raw.ctx.g)
    }

    pub fn proc(&self) -> ProcId {
        ProcId(self.raw.ctx.p)
    }

    pub fn thread(&self) -> ThreadId {
        ThreadId(self.raw.ctx.m)
    }

    /// Stream offset of the bytes the event came from (for an event Go's
    /// parser makes up, those of the event it came with; for a Sync event,
    /// where the decoder stood).
    pub fn offset(&self) -> usize {
        self.raw.offset
    }

    /// The wire event type; `None` for the Sync events the parser makes up.
    pub fn raw_type(&self) -> Option<EventType> {
        (self.raw.typ != EV_SYNTHETIC_SYNC).then_some(self.raw.typ)
    }

    /// The wire arguments after the timestamp, as the ordering left them:
    /// Go's parser stores some state in them (a goroutine status carries its
    /// old state in the upper 32 bits; a stop-the-world end, its reason; a
    /// task end, its parent and name), so a writer re-encoding a trace reads
    /// the raw batches of [`Generation::batches`] instead.
    pub fn raw_args(&self) -> [u64; 4] {
        self.raw.args
    }

    /// The generation whose tables the event refers to.
    pub fn generation(&self) -> Option<&'g Generation> {
        self.gen
    }

    fn string(&self, i: usize) -> &'g [u8] {
        self.gen.and_then(|g| g.string(self.raw.args[i])).unwrap_or(&[])
    }

    fn stack_at(&self, id: u64) -> Option<Stack<'g>> {
        Some(Stack { gen: self.gen?, id })
    }

    /// The stack of the event's own execution context (Go's `Stack()`).
    pub fn stack(&self) -> Option<Stack<'g>> {
        match self.raw.typ {
            EV_SYNTHETIC_SYNC => None,
            // Go does not check a sample's stack id against 0.
            EV_CPU_SAMPLE => self.stack_at(self.raw.args[0]),
            typ => {
                let &i = spec(typ).stack_ids.first()?;
                let id = self.raw.args[i - 1];
                if id == 0 {
                    return None;
                }
                self.stack_at(id)
            }
        }
    }

    pub fn metric(&self) -> Option<Metric> {
        let name = match self.raw.typ {
            EV_PROCS_CHANGE => metric::GOMAXPROCS,
            EV_HEAP_ALLOC => metric::HEAP_OBJECTS,
            EV_HEAP_GOAL => metric::HEAP_GOAL,
            _ => return None,
        };
        Some(Metric {
            name,
            value: self.raw.args[0],
        })
    }

    pub fn label(&self) -> Option<Label<'g>> {
        (self.raw.typ == EV_GO_LABEL).then(|| Label {
            label: self.string(0),
            resource: ResourceId::Goroutine(self.goroutine()),
        })
    }

    pub fn range(&self) -> Option<Range<'g>> {
        let a0 = self.raw.args[0] as i64;
        let (name, scope) = match self.raw.typ {
            EV_STW_BEGIN | EV_STW_END => (
                RangeName::StopTheWorld(self.string(0)),
                ResourceId::Goroutine(self.goroutine()),
            ),
            EV_GC_BEGIN | EV_GC_ACTIVE | EV_GC_END => (RangeName::GcMarkPhase, ResourceId::None),
            EV_GC_SWEEP_ACTIVE => (RangeName::GcSweep, ResourceId::Proc(ProcId(a0))),
            EV_GC_SWEEP_BEGIN | EV_GC_SWEEP_END => (RangeName::GcSweep, ResourceId::Proc(self.proc())),
            EV_GC_MARK_ASSIST_ACTIVE => (RangeName::GcMarkAssist, ResourceId::Goroutine(GoId(a0))),
            EV_GC_MARK_ASSIST_BEGIN | EV_GC_MARK_ASSIST_END => {
                (RangeName::GcMarkAssist, ResourceId::Goroutine(self.goroutine()))
            }
            _ => return None,
        };
        Some(Range { name, scope })
    }

    /// Attributes of a completed range (a sweep's bytes); `None` unless the
    /// event ends a range.
    pub fn range_attributes(&self) -> Option<Vec<RangeAttribute>> {
        if self.kind() != EventKind::RangeEnd {
            return None;
        }
        if self.raw.typ != EV_GC_SWEEP_END {
            return Some(Vec::new());
        }
        Some(vec![
            RangeAttribute {
                name: "bytes swept",
                value: self.raw.args[0],
            },
            RangeAttribute {
                name: "bytes reclaimed",
                value: self.raw.args[1],
            },
        ])
    }

    pub fn task(&self) -> Option<Task<'g>> {
        let (parent, kind) = match self.raw.typ {
            EV_USER_TASK_BEGIN => (self.raw.args[1], self.string(2)),
            EV_USER_TASK_END => {
                let x = BaseEvent::extra_index(EV_USER_TASK_END);
                let name = self.gen.map_or(&[][..], |g| g.extra_string(self.raw.args[x + 1]));
                (self.raw.args[x], name)
            }
            _ => return None,
        };
        Some(Task {
            id: TaskId(self.raw.args[0]),
            parent: TaskId(parent),
            kind,
        })
    }

    pub fn region(&self) -> Option<Region<'g>> {
        matches!(self.raw.typ, EV_USER_REGION_BEGIN | EV_USER_REGION_END).then(|| Region {
            task: TaskId(self.raw.args[0]),
            kind: self.string(1),
        })
    }

    pub fn log(&self) -> Option<Log<'g>> {
        (self.raw.typ == EV_USER_LOG).then(|| Log {
            task: TaskId(self.raw.args[0]),
            category: self.string(1),
            message: self.string(2),
        })
    }

    /// A goroutine's transition without its reason and stack: the goroutine
    /// and its `(from, to)` states. What a summary needs, cheaply.
    #[inline]
    pub fn goroutine_transition(&self) -> Option<(GoId, GoState, GoState)> {
        let a = &self.raw.args;
        match GO_TRANSITIONS[usize::from(self.raw.typ)]? {
            (Who::Named, from, to) => Some((GoId(a[0] as i64), from, to)),
            (Who::Current, from, to) => Some((self.goroutine(), from, to)),
            (Who::Status, ..) => {
                // The ordering packed the old state above the status.
                let from = GoState::from_code(a[2] >> 32)?;
                let code = GO_STATUS_TO_STATE.get((a[2] & 0xffff_ffff) as usize)?;
                Some((GoId(a[0] as i64), from, GoState::from_code(u64::from(*code))?))
            }
        }
    }

    pub fn state_transition(&self) -> Option<StateTransition<'g>> {
        use ProcState::*;
        let a = self.raw.args;
        let proc = |id: i64, from, to| (ResourceId::Proc(ProcId(id)), Change::Proc { from, to });
        let (resource, change) = match self.raw.typ {
            EV_PROC_START => proc(a[0] as i64, Idle, Running),
            EV_PROC_STOP => proc(self.raw.ctx.p, Running, Idle),
            EV_PROC_STEAL => {
                let abandoned =
                    a[BaseEvent::extra_index(EV_PROC_STEAL)] == u64::from(proc_status::SYSCALL_ABANDONED);
                proc(a[0] as i64, if abandoned { Idle } else { Running }, Idle)
            }
            EV_PROC_STATUS => {
                let from = ProcState::from_code(a[BaseEvent::extra_index(EV_PROC_STATUS)])?;
                // The ordering checked the status as a byte.
                let to = PROC_STATUS_TO_STATE.get(usize::from(a[1] as u8))?;
                proc(a[0] as i64, from, ProcState::from_code(u64::from(*to))?)
            }
            _ => {
                let (g, from, to) = self.goroutine_transition()?;
                (ResourceId::Goroutine(g), Change::Goroutine { from, to })
            }
        };
        let (reason, stack) = match self.raw.typ {
            EV_GO_CREATE | EV_GO_CREATE_BLOCKED => (&[][..], self.stack_at(a[1])),
            EV_GO_STOP | EV_GO_BLOCK => (self.string(0), self.stack()),
            EV_GO_SYSCALL_BEGIN | EV_GO_STATUS | EV_GO_STATUS_STACK => (&[][..], self.stack()),
            _ => (&[][..], None),
        };
        Some(StateTransition {
            resource,
            change,
            reason,
            stack,
        })
    }

    pub fn sync(&self) -> Option<Sync<'g>> {
        (self.raw.typ == EV_SYNTHETIC_SYNC).then(|| Sync {
            n: self.raw.args[0],
            generation: self.gen,
            clock: self.gen.and_then(Generation::clock_snapshot),
        })
    }

    pub fn experimental(&self) -> Option<Experimental> {
        let s = spec(self.raw.typ);
        (s.kind == EventKind::Experimental).then(|| Experimental {
            name: s.name,
            experiment: experiment_name(s.experiment).unwrap_or(""),
            arg_names: s.args.get(1..).unwrap_or(&[]),
            args: self.raw.args,
        })
    }
}

/// Which goroutine a transition is about.
#[derive(Clone, Copy)]
enum Who {
    /// The one its first argument names.
    Named,
    /// The one running on the event's thread.
    Current,
    /// A status: named, its states packed in the third argument.
    Status,
}

/// The goroutine transition of each event type (Go's `StateTransition` for
/// goroutines), as a table: most events are goroutine transitions.
static GO_TRANSITIONS: [Option<(Who, GoState, GoState)>; 256] = {
    use GoState::*;
    let mut t: [Option<(Who, GoState, GoState)>; 256] = [None; 256];
    t[EV_GO_CREATE as usize] = Some((Who::Named, NotExist, Runnable));
    t[EV_GO_CREATE_BLOCKED as usize] = Some((Who::Named, NotExist, Waiting));
    t[EV_GO_CREATE_SYSCALL as usize] = Some((Who::Named, NotExist, Syscall));
    t[EV_GO_START as usize] = Some((Who::Named, Runnable, Running));
    t[EV_GO_DESTROY as usize] = Some((Who::Current, Running, NotExist));
    t[EV_GO_DESTROY_SYSCALL as usize] = Some((Who::Current, Syscall, NotExist));
    t[EV_GO_STOP as usize] = Some((Who::Current, Running, Runnable));
    t[EV_GO_BLOCK as usize] = Some((Who::Current, Running, Waiting));
    // A coroutine switch unblocks the goroutine it names, first.
    t[EV_GO_UNBLOCK as usize] = Some((Who::Named, Waiting, Runnable));
    t[EV_GO_SWITCH as usize] = Some((Who::Named, Waiting, Runnable));
    t[EV_GO_SWITCH_DESTROY as usize] = Some((Who::Named, Waiting, Runnable));
    t[EV_GO_SYSCALL_BEGIN as usize] = Some((Who::Current, Running, Syscall));
    t[EV_GO_SYSCALL_END as usize] = Some((Who::Current, Syscall, Running));
    t[EV_GO_SYSCALL_END_BLOCKED as usize] = Some((Who::Current, Syscall, Runnable));
    t[EV_GO_STATUS as usize] = Some((Who::Status, Undetermined, Undetermined));
    t[EV_GO_STATUS_STACK as usize] = Some((Who::Status, Undetermined, Undetermined));
    t
};
