//! What an event happened on: a goroutine, a P and a thread (Go's
//! `schedCtx`), each possibly none. A leaf: the generation's tables and the
//! ordering state machine both speak of it.

/// Go's `NoGoroutine`.
pub(crate) const NO_GOROUTINE: i64 = -1;
/// Go's `NoProc`.
pub(crate) const NO_PROC: i64 = -1;
/// Go's `NoThread`.
pub(crate) const NO_THREAD: i64 = -1;

/// The goroutine, P and thread an event happened on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SchedCtx {
    pub(crate) g: i64,
    pub(crate) p: i64,
    pub(crate) m: i64,
}

impl SchedCtx {
    pub(crate) const NONE: SchedCtx = SchedCtx {
        g: NO_GOROUTINE,
        p: NO_PROC,
        m: NO_THREAD,
    };
}
