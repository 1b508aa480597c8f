//! The v2 event table: every wire event type, its arguments and how Go's
//! parser classifies it (`internal/trace/tracev2/events.go`, identical for
//! Go 1.22 through 1.26: a version only adds types at the end).

/// A wire-format event type byte.
pub type EventType = u8;

pub(crate) const EV_NONE: EventType = 0;
pub(crate) const EV_EVENT_BATCH: EventType = 1;
pub(crate) const EV_STACKS: EventType = 2;
pub(crate) const EV_STACK: EventType = 3;
pub(crate) const EV_STRINGS: EventType = 4;
pub(crate) const EV_STRING: EventType = 5;
pub(crate) const EV_CPU_SAMPLES: EventType = 6;
pub(crate) const EV_CPU_SAMPLE: EventType = 7;
pub(crate) const EV_FREQUENCY: EventType = 8;
pub(crate) const EV_PROCS_CHANGE: EventType = 9;
pub(crate) const EV_PROC_START: EventType = 10;
pub(crate) const EV_PROC_STOP: EventType = 11;
pub(crate) const EV_PROC_STEAL: EventType = 12;
pub(crate) const EV_PROC_STATUS: EventType = 13;
pub(crate) const EV_GO_CREATE: EventType = 14;
pub(crate) const EV_GO_CREATE_SYSCALL: EventType = 15;
pub(crate) const EV_GO_START: EventType = 16;
pub(crate) const EV_GO_DESTROY: EventType = 17;
pub(crate) const EV_GO_DESTROY_SYSCALL: EventType = 18;
pub(crate) const EV_GO_STOP: EventType = 19;
pub(crate) const EV_GO_BLOCK: EventType = 20;
pub(crate) const EV_GO_UNBLOCK: EventType = 21;
pub(crate) const EV_GO_SYSCALL_BEGIN: EventType = 22;
pub(crate) const EV_GO_SYSCALL_END: EventType = 23;
pub(crate) const EV_GO_SYSCALL_END_BLOCKED: EventType = 24;
pub(crate) const EV_GO_STATUS: EventType = 25;
pub(crate) const EV_STW_BEGIN: EventType = 26;
pub(crate) const EV_STW_END: EventType = 27;
pub(crate) const EV_GC_ACTIVE: EventType = 28;
pub(crate) const EV_GC_BEGIN: EventType = 29;
pub(crate) const EV_GC_END: EventType = 30;
pub(crate) const EV_GC_SWEEP_ACTIVE: EventType = 31;
pub(crate) const EV_GC_SWEEP_BEGIN: EventType = 32;
pub(crate) const EV_GC_SWEEP_END: EventType = 33;
pub(crate) const EV_GC_MARK_ASSIST_ACTIVE: EventType = 34;
pub(crate) const EV_GC_MARK_ASSIST_BEGIN: EventType = 35;
pub(crate) const EV_GC_MARK_ASSIST_END: EventType = 36;
pub(crate) const EV_HEAP_ALLOC: EventType = 37;
pub(crate) const EV_HEAP_GOAL: EventType = 38;
pub(crate) const EV_GO_LABEL: EventType = 39;
pub(crate) const EV_USER_TASK_BEGIN: EventType = 40;
pub(crate) const EV_USER_TASK_END: EventType = 41;
pub(crate) const EV_USER_REGION_BEGIN: EventType = 42;
pub(crate) const EV_USER_REGION_END: EventType = 43;
pub(crate) const EV_USER_LOG: EventType = 44;
pub(crate) const EV_GO_SWITCH: EventType = 45;
pub(crate) const EV_GO_SWITCH_DESTROY: EventType = 46;
pub(crate) const EV_GO_CREATE_BLOCKED: EventType = 47;
pub(crate) const EV_GO_STATUS_STACK: EventType = 48;
pub(crate) const EV_EXPERIMENTAL_BATCH: EventType = 49;
pub(crate) const EV_SYNC: EventType = 50;
pub(crate) const EV_CLOCK_SNAPSHOT: EventType = 51;
pub(crate) const EV_END_OF_GENERATION: EventType = 52;
pub(crate) const EV_SPAN: EventType = 128;
pub(crate) const EV_GOROUTINE_STACK_FREE: EventType = 136;
/// Go's `evSync`: the type the parser gives the Sync events it makes up; no
/// wire event has it.
pub(crate) const EV_SYNTHETIC_SYNC: EventType = 255;

/// Go's `tracev2.MaxBatchSize`.
pub(crate) const MAX_BATCH_SIZE: u64 = 64 << 10;
/// Go's `tracev2.MaxFramesPerStack`.
pub(crate) const MAX_FRAMES_PER_STACK: u64 = 128;
/// Go's `tracev2.MaxEventTrailerDataSize`: the longest string.
pub(crate) const MAX_STRING_LEN: u64 = 1 << 10;

/// The kind of an event, as Go's `trace.EventKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Bad,
    Sync,
    Metric,
    Label,
    StackSample,
    RangeBegin,
    RangeActive,
    RangeEnd,
    TaskBegin,
    TaskEnd,
    RegionBegin,
    RegionEnd,
    Log,
    StateTransition,
    Experimental,
}

impl EventKind {
    /// Go's name for the kind (`EventKind.String()`).
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Bad => "Bad",
            EventKind::Sync => "Sync",
            EventKind::Metric => "Metric",
            EventKind::Label => "Label",
            EventKind::StackSample => "StackSample",
            EventKind::RangeBegin => "RangeBegin",
            EventKind::RangeActive => "RangeActive",
            EventKind::RangeEnd => "RangeEnd",
            EventKind::TaskBegin => "TaskBegin",
            EventKind::TaskEnd => "TaskEnd",
            EventKind::RegionBegin => "RegionBegin",
            EventKind::RegionEnd => "RegionEnd",
            EventKind::Log => "Log",
            EventKind::StateTransition => "StateTransition",
            EventKind::Experimental => "Experimental",
        }
    }
}

/// What Go's `tracev2.EventSpec` says of one event type.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spec {
    pub(crate) name: &'static str,
    /// Argument names, the timestamp delta first for timed events.
    pub(crate) args: &'static [&'static str],
    /// Indices into `args` of string ids.
    pub(crate) string_ids: &'static [usize],
    /// Indices into `args` of stack ids; the first is the event's own stack.
    pub(crate) stack_ids: &'static [usize],
    /// For the end of a range, the type of its begin event.
    pub(crate) start: EventType,
    pub(crate) timed: bool,
    /// Experimental events (AllocFree) belong to experiment 1.
    pub(crate) experiment: u8,
    pub(crate) kind: EventKind,
}

const NONE: Spec = Spec {
    name: "",
    args: &[],
    string_ids: &[],
    stack_ids: &[],
    start: EV_NONE,
    timed: false,
    experiment: 0,
    kind: EventKind::Bad,
};

const fn structural(name: &'static str, args: &'static [&'static str]) -> Spec {
    Spec { name, args, ..NONE }
}

const fn timed(name: &'static str, args: &'static [&'static str], kind: EventKind) -> Spec {
    Spec {
        name,
        args,
        timed: true,
        kind,
        ..NONE
    }
}

const fn alloc_free(name: &'static str, args: &'static [&'static str]) -> Spec {
    Spec {
        experiment: 1,
        ..timed(name, args, EventKind::Experimental)
    }
}

use EventKind::*;

/// Go's `tracev2.Specs()`, indexed by type byte; its length bounds the
/// types Go's parser reads at all.
pub(crate) static SPECS: [Spec; 137] = {
    let mut s = [NONE; 137];
    s[EV_EVENT_BATCH as usize] = structural("EventBatch", &["gen", "m", "time", "size"]);
    s[EV_STACKS as usize] = structural("Stacks", &[]);
    s[EV_STACK as usize] = structural("Stack", &["id", "nframes"]);
    s[EV_STRINGS as usize] = structural("Strings", &[]);
    s[EV_STRING as usize] = structural("String", &["id"]);
    s[EV_CPU_SAMPLES as usize] = structural("CPUSamples", &[]);
    s[EV_CPU_SAMPLE as usize] = Spec {
        stack_ids: &[4],
        kind: StackSample,
        ..structural("CPUSample", &["time", "m", "p", "g", "stack"])
    };
    s[EV_FREQUENCY as usize] = structural("Frequency", &["freq"]);
    s[EV_EXPERIMENTAL_BATCH as usize] = structural("ExperimentalBatch", &["exp", "gen", "m", "time"]);
    s[EV_SYNC as usize] = structural("Sync", &[]);
    s[EV_END_OF_GENERATION as usize] = structural("EndOfGeneration", &[]);

    s[EV_PROCS_CHANGE as usize] = Spec {
        stack_ids: &[2],
        ..timed("ProcsChange", &["dt", "procs_value", "stack"], Metric)
    };
    s[EV_PROC_START as usize] = timed("ProcStart", &["dt", "p", "p_seq"], StateTransition);
    s[EV_PROC_STOP as usize] = timed("ProcStop", &["dt"], StateTransition);
    s[EV_PROC_STEAL as usize] = timed("ProcSteal", &["dt", "p", "p_seq", "m"], StateTransition);
    s[EV_PROC_STATUS as usize] = timed("ProcStatus", &["dt", "p", "pstatus"], StateTransition);
    s[EV_GO_CREATE as usize] = Spec {
        stack_ids: &[3, 2],
        ..timed(
            "GoCreate",
            &["dt", "new_g", "new_stack", "stack"],
            StateTransition,
        )
    };
    s[EV_GO_CREATE_SYSCALL as usize] = timed("GoCreateSyscall", &["dt", "new_g"], StateTransition);
    s[EV_GO_START as usize] = timed("GoStart", &["dt", "g", "g_seq"], StateTransition);
    s[EV_GO_DESTROY as usize] = timed("GoDestroy", &["dt"], StateTransition);
    s[EV_GO_DESTROY_SYSCALL as usize] = timed("GoDestroySyscall", &["dt"], StateTransition);
    s[EV_GO_STOP as usize] = Spec {
        stack_ids: &[2],
        string_ids: &[1],
        ..timed("GoStop", &["dt", "reason_string", "stack"], StateTransition)
    };
    s[EV_GO_BLOCK as usize] = Spec {
        stack_ids: &[2],
        string_ids: &[1],
        ..timed("GoBlock", &["dt", "reason_string", "stack"], StateTransition)
    };
    s[EV_GO_UNBLOCK as usize] = Spec {
        stack_ids: &[3],
        ..timed("GoUnblock", &["dt", "g", "g_seq", "stack"], StateTransition)
    };
    s[EV_GO_SYSCALL_BEGIN as usize] = Spec {
        stack_ids: &[2],
        ..timed("GoSyscallBegin", &["dt", "p_seq", "stack"], StateTransition)
    };
    s[EV_GO_SYSCALL_END as usize] = Spec {
        start: EV_GO_SYSCALL_BEGIN,
        ..timed("GoSyscallEnd", &["dt"], StateTransition)
    };
    s[EV_GO_SYSCALL_END_BLOCKED as usize] = Spec {
        start: EV_GO_SYSCALL_BEGIN,
        ..timed("GoSyscallEndBlocked", &["dt"], StateTransition)
    };
    s[EV_GO_STATUS as usize] = timed("GoStatus", &["dt", "g", "m", "gstatus"], StateTransition);
    s[EV_STW_BEGIN as usize] = Spec {
        stack_ids: &[2],
        string_ids: &[1],
        ..timed("STWBegin", &["dt", "kind_string", "stack"], RangeBegin)
    };
    s[EV_STW_END as usize] = Spec {
        start: EV_STW_BEGIN,
        ..timed("STWEnd", &["dt"], RangeEnd)
    };
    s[EV_GC_ACTIVE as usize] = Spec {
        start: EV_GC_BEGIN,
        ..timed("GCActive", &["dt", "gc_seq"], RangeActive)
    };
    s[EV_GC_BEGIN as usize] = Spec {
        stack_ids: &[2],
        ..timed("GCBegin", &["dt", "gc_seq", "stack"], RangeBegin)
    };
    s[EV_GC_END as usize] = Spec {
        start: EV_GC_BEGIN,
        ..timed("GCEnd", &["dt", "gc_seq"], RangeEnd)
    };
    s[EV_GC_SWEEP_ACTIVE as usize] = Spec {
        start: EV_GC_SWEEP_BEGIN,
        ..timed("GCSweepActive", &["dt", "p"], RangeActive)
    };
    s[EV_GC_SWEEP_BEGIN as usize] = Spec {
        stack_ids: &[1],
        ..timed("GCSweepBegin", &["dt", "stack"], RangeBegin)
    };
    s[EV_GC_SWEEP_END as usize] = Spec {
        start: EV_GC_SWEEP_BEGIN,
        ..timed("GCSweepEnd", &["dt", "swept_value", "reclaimed_value"], RangeEnd)
    };
    s[EV_GC_MARK_ASSIST_ACTIVE as usize] = Spec {
        start: EV_GC_MARK_ASSIST_BEGIN,
        ..timed("GCMarkAssistActive", &["dt", "g"], RangeActive)
    };
    s[EV_GC_MARK_ASSIST_BEGIN as usize] = Spec {
        stack_ids: &[1],
        ..timed("GCMarkAssistBegin", &["dt", "stack"], RangeBegin)
    };
    s[EV_GC_MARK_ASSIST_END as usize] = Spec {
        start: EV_GC_MARK_ASSIST_BEGIN,
        ..timed("GCMarkAssistEnd", &["dt"], RangeEnd)
    };
    s[EV_HEAP_ALLOC as usize] = timed("HeapAlloc", &["dt", "heapalloc_value"], Metric);
    s[EV_HEAP_GOAL as usize] = timed("HeapGoal", &["dt", "heapgoal_value"], Metric);
    s[EV_GO_LABEL as usize] = Spec {
        string_ids: &[1],
        ..timed("GoLabel", &["dt", "label_string"], Label)
    };
    s[EV_USER_TASK_BEGIN as usize] = Spec {
        stack_ids: &[4],
        string_ids: &[3],
        ..timed(
            "UserTaskBegin",
            &["dt", "task", "parent_task", "name_string", "stack"],
            TaskBegin,
        )
    };
    s[EV_USER_TASK_END as usize] = Spec {
        stack_ids: &[2],
        ..timed("UserTaskEnd", &["dt", "task", "stack"], TaskEnd)
    };
    s[EV_USER_REGION_BEGIN as usize] = Spec {
        stack_ids: &[3],
        string_ids: &[2],
        ..timed(
            "UserRegionBegin",
            &["dt", "task", "name_string", "stack"],
            RegionBegin,
        )
    };
    s[EV_USER_REGION_END as usize] = Spec {
        start: EV_USER_REGION_BEGIN,
        stack_ids: &[3],
        string_ids: &[2],
        ..timed(
            "UserRegionEnd",
            &["dt", "task", "name_string", "stack"],
            RegionEnd,
        )
    };
    s[EV_USER_LOG as usize] = Spec {
        stack_ids: &[4],
        string_ids: &[2, 3],
        ..timed(
            "UserLog",
            &["dt", "task", "key_string", "value_string", "stack"],
            Log,
        )
    };
    s[EV_GO_SWITCH as usize] = timed("GoSwitch", &["dt", "g", "g_seq"], StateTransition);
    s[EV_GO_SWITCH_DESTROY as usize] = timed("GoSwitchDestroy", &["dt", "g", "g_seq"], StateTransition);
    s[EV_GO_CREATE_BLOCKED as usize] = Spec {
        stack_ids: &[3, 2],
        ..timed(
            "GoCreateBlocked",
            &["dt", "new_g", "new_stack", "stack"],
            StateTransition,
        )
    };
    s[EV_GO_STATUS_STACK as usize] = Spec {
        stack_ids: &[4],
        ..timed(
            "GoStatusStack",
            &["dt", "g", "m", "gstatus", "stack"],
            StateTransition,
        )
    };
    // Timed, but never valid in an event batch: nothing orders it.
    s[EV_CLOCK_SNAPSHOT as usize] = timed("ClockSnapshot", &["dt", "mono", "sec", "nsec"], Bad);

    s[128] = alloc_free("Span", &["dt", "id", "npages_value", "kindclass"]);
    s[129] = alloc_free("SpanAlloc", &["dt", "id", "npages_value", "kindclass"]);
    s[130] = alloc_free("SpanFree", &["dt", "id"]);
    s[131] = alloc_free("HeapObject", &["dt", "id", "type"]);
    s[132] = alloc_free("HeapObjectAlloc", &["dt", "id", "type"]);
    s[133] = alloc_free("HeapObjectFree", &["dt", "id"]);
    s[134] = alloc_free("GoroutineStack", &["dt", "id", "order"]);
    s[135] = alloc_free("GoroutineStackAlloc", &["dt", "id", "order"]);
    s[136] = alloc_free("GoroutineStackFree", &["dt", "id"]);
    s
};

/// The spec of a type byte; types past Go's table have none.
#[inline]
pub(crate) fn spec(typ: EventType) -> &'static Spec {
    SPECS.get(usize::from(typ)).unwrap_or(&NONE)
}

/// The kind of an event of type `typ` (Go's `tracev2Type2Kind`).
#[inline]
pub(crate) fn kind(typ: EventType) -> EventKind {
    if typ == EV_SYNTHETIC_SYNC {
        EventKind::Sync
    } else {
        spec(typ).kind
    }
}

/// Go's `tracev2.Experiments()`: experiment names by id.
pub(crate) fn experiment_name(id: u8) -> Option<&'static str> {
    match id {
        0 => Some("None"),
        1 => Some("AllocFree"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::EVENT_ARGS;

    #[test]
    fn argument_counts_agree_with_the_framing_walker() {
        for typ in 0..=255u8 {
            let s = spec(typ);
            let walker = EVENT_ARGS[usize::from(typ)];
            if s.timed {
                assert_eq!(s.args.len(), usize::from(walker), "{}", s.name);
            } else {
                assert_eq!(walker, 0, "type {typ}");
            }
        }
    }

    #[test]
    fn every_event_the_parser_yields_has_a_kind() {
        for typ in 0..=255u8 {
            let s = spec(typ);
            let yielded = (s.timed && typ != EV_CLOCK_SNAPSHOT) || typ == EV_CPU_SAMPLE;
            assert_eq!(yielded, s.kind != EventKind::Bad, "type {typ}");
            for &i in s.stack_ids.iter().chain(s.string_ids) {
                assert!(i >= 1 && i < s.args.len().max(5), "{}", s.name);
            }
        }
        assert_eq!(kind(EV_SYNTHETIC_SYNC), EventKind::Sync);
        assert_eq!(spec(EV_GOROUTINE_STACK_FREE).experiment, 1);
        assert_eq!(spec(EV_SPAN).name, "Span");
    }
}
