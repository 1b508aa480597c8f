//! Goroutines, Ps, threads and tasks: their ids and states, as Go's
//! `internal/trace/resources.go` names them.

use std::fmt;

use crate::order::{go_state, proc_state, NO_GOROUTINE, NO_PROC, NO_TASK, NO_THREAD};

/// A goroutine id (Go's `GoID`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GoId(pub i64);

impl GoId {
    /// No goroutine (Go's `NoGoroutine`).
    pub const NONE: GoId = GoId(NO_GOROUTINE);
}

/// A P id (Go's `ProcID`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcId(pub i64);

impl ProcId {
    /// No P (Go's `NoProc`).
    pub const NONE: ProcId = ProcId(NO_PROC);
}

/// A thread (M) id (Go's `ThreadID`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ThreadId(pub i64);

impl ThreadId {
    /// No thread (Go's `NoThread`).
    pub const NONE: ThreadId = ThreadId(NO_THREAD);
}

/// A `runtime/trace` task id (Go's `TaskID`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(pub u64);

impl TaskId {
    /// No task (Go's `NoTask`).
    pub const NONE: TaskId = TaskId(NO_TASK);
    /// The task of events outside any task (Go's `BackgroundTask`).
    pub const BACKGROUND: TaskId = TaskId(0);
}

/// A goroutine's state (Go's `GoState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GoState {
    /// Nothing is known of it (before its first mention in the trace).
    Undetermined,
    NotExist,
    Runnable,
    Running,
    Waiting,
    Syscall,
}

impl GoState {
    pub(crate) fn from_code(code: u64) -> Option<GoState> {
        Some(match u8::try_from(code).ok()? {
            go_state::UNDETERMINED => GoState::Undetermined,
            go_state::NOT_EXIST => GoState::NotExist,
            go_state::RUNNABLE => GoState::Runnable,
            go_state::RUNNING => GoState::Running,
            go_state::WAITING => GoState::Waiting,
            go_state::SYSCALL => GoState::Syscall,
            _ => return None,
        })
    }

    /// Whether the goroutine is bound to a thread (running or in a syscall).
    pub fn executing(self) -> bool {
        matches!(self, GoState::Running | GoState::Syscall)
    }
}

impl fmt::Display for GoState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GoState::Undetermined => "Undetermined",
            GoState::NotExist => "NotExist",
            GoState::Runnable => "Runnable",
            GoState::Running => "Running",
            GoState::Waiting => "Waiting",
            GoState::Syscall => "Syscall",
        })
    }
}

/// A P's state (Go's `ProcState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProcState {
    Undetermined,
    NotExist,
    Running,
    Idle,
}

impl ProcState {
    pub(crate) fn from_code(code: u64) -> Option<ProcState> {
        Some(match u8::try_from(code).ok()? {
            proc_state::UNDETERMINED => ProcState::Undetermined,
            proc_state::NOT_EXIST => ProcState::NotExist,
            proc_state::RUNNING => ProcState::Running,
            proc_state::IDLE => ProcState::Idle,
            _ => return None,
        })
    }
}

impl fmt::Display for ProcState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProcState::Undetermined => "Undetermined",
            ProcState::NotExist => "NotExist",
            ProcState::Running => "Running",
            ProcState::Idle => "Idle",
        })
    }
}

/// What a range, label or state transition is about (Go's `ResourceID`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceId {
    /// Global, as the GC mark phase.
    None,
    Goroutine(GoId),
    Proc(ProcId),
    Thread(ThreadId),
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResourceId::None => f.write_str("None"),
            ResourceId::Goroutine(g) => write!(f, "Goroutine({})", g.0),
            ResourceId::Proc(p) => write!(f, "Proc({})", p.0),
            ResourceId::Thread(t) => write!(f, "Thread({})", t.0),
        }
    }
}
