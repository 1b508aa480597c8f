//! The events that carry every goroutine, P and thread from the state one window ends in to the state the next one starts in, timestamped inside the gap between them.
//!
//! Go's parser checks each status a generation opens with against what it
//! knows (`inconsistent status for goroutine N: old Waiting vs. new
//! Runnable`), and every event against the state its thread, P and
//! goroutine are in. Between two windows the program ran untraced, so the
//! seam gets the events that explain the difference in the parser's own
//! terms: a goroutine that was running is stopped where it ran, one that
//! blocked or died in the gap is started and blocked or destroyed, one
//! born in the gap is created, Ps are stopped and started on the threads
//! the next window finds them on, a GC cycle that ended or began in the
//! gap ends or begins. They run on a thread of flightrec's own
//! ([`GAP_THREAD`]) with a P that is idle at the seam, and a goroutine of
//! flightrec's own ([`gap_goroutine`]) marks the gap with a user region and
//! a log line a person sees in `go tool trace`.
//!
//! Every event is in an order the parser can follow whatever the
//! timestamps: a resource's status is always written on the batch of the
//! thread it is bound to, before anything there changes it, and events on
//! other threads that depend on it wait for it through sequence numbers,
//! exactly as Go's parser lets real threads wait for each other.

use rustc_hash::FxHashMap;

use super::scan::StartState;
use super::sim::{Sim, Step, GAP_THREAD};
use crate::encode::{EventBatches, Tables};
use crate::order::{go_status, proc_status, Ordering, RangeType, NO_GOROUTINE, NO_PROC, NO_THREAD};
use crate::spec::*;

/// The goroutine marking the `n`th seam of a stitched trace (from 0).
/// Real goroutine ids count up from 1 and never come near.
pub fn gap_goroutine(n: u64) -> i64 {
    (1 << 40) + n as i64
}

/// The user region every gap is covered by.
pub const GAP_REGION: &str = "flightrec: gap, not traced";
/// The key of the log line each gap carries.
pub const GAP_LOG_KEY: &str = "flightrec";
/// The name `go tool trace` gives the goroutine marking a gap (its start
/// function).
pub const GAP_FUNCTION: &str = "flightrec: window gap, not traced";
/// A program counter no Go binary has (text lies far above it): the one
/// frame of the gap goroutine's stack.
const GAP_PC: u64 = 1;

/// Whether a GC mark phase runs, as the stitched trace says so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum GcPhase {
    /// No GC event yet.
    #[default]
    Unknown,
    Off,
    On,
}

/// The GC state of the output: Go's parser wants GC sequence numbers to
/// follow on from one event to the next across the whole trace.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct GcTrack {
    pub(crate) phase: GcPhase,
    pub(crate) last_seq: u64,
}

/// What a seam changed, for people.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeamChanges {
    /// Goroutines whose state differs across the gap (created and ended
    /// ones included).
    pub goroutines: u64,
    /// Goroutines born in the gap, and ended in it.
    pub created: u64,
    pub ended: u64,
    /// Ps stopped or started on another thread.
    pub procs: u64,
    /// A GC cycle began (+1) or ended (-1) in the gap.
    pub gc: i8,
}

/// The seam's events, ready to be written at the head of the next
/// window's first generation.
pub(crate) struct Built {
    pub(crate) batches: Vec<EventBatches>,
    pub(crate) tables: Tables,
    pub(crate) events: u64,
    pub(crate) gc: GcTrack,
    pub(crate) changes: SeamChanges,
    /// First tick used, for the tables' batches.
    pub(crate) first_tick: u64,
}

/// What a seam starts from and goes to.
pub(crate) struct Seam<'a> {
    /// The parser's state after the previous window.
    pub(crate) end: &'a Ordering,
    /// What the next window's first generation says of its start.
    pub(crate) start: &'a StartState,
    /// The gap, in ticks: events go strictly between the two.
    pub(crate) after: u64,
    pub(crate) before: u64,
    pub(crate) gc: GcTrack,
    pub(crate) index: u64,
    /// Ids free in the next generation's tables.
    pub(crate) strings_from: u64,
    pub(crate) stacks_from: u64,
    /// The log line marking the gap.
    pub(crate) note: String,
}

/// Where a resource is at one end of the gap: its wire status and the
/// thread holding it (`NO_THREAD` when none).
type Place = (u8, i64);

/// What a goroutine must do while it runs in the gap.
struct Fixes {
    /// Ranges to end (by their begin event).
    ends: Vec<RangeType>,
    /// User regions to end, innermost first: (task, name).
    regions: Vec<(u64, Vec<u8>)>,
    begin_assist: bool,
}

/// What the seam does, decided from both ends before any event is written.
struct Plan<'a> {
    seam: &'a Seam<'a>,
    /// Every goroutine and P at either end, in id order.
    gs: Vec<i64>,
    ps: Vec<i64>,
    /// Threads holding something at the end: (thread, goroutine, P).
    threads: Vec<(i64, i64, i64)>,
    /// Bindings that hold across the gap unchanged (resource -> thread).
    kept_g: FxHashMap<i64, i64>,
    kept_p: FxHashMap<i64, i64>,
    /// The P the gap thread runs on.
    gap_p: i64,
    marker: i64,
    changes: SeamChanges,
}

impl<'a> Plan<'a> {
    fn new(seam: &'a Seam<'a>) -> Result<Self, String> {
        let (end, start) = (seam.end, seam.start);
        let mut gs: Vec<i64> = end.g.keys().chain(start.goroutines.keys()).copied().collect();
        gs.sort_unstable();
        gs.dedup();
        let mut ps: Vec<i64> = end.p.keys().chain(start.procs.keys()).copied().collect();
        ps.sort_unstable();
        ps.dedup();
        if let Some(g) = gs
            .iter()
            .find(|g| start.created.contains(g) && end.g.contains_key(g))
        {
            return Err(format!("goroutine {g} exists before the window that creates it"));
        }
        let mut threads: Vec<(i64, i64, i64)> = end
            .m
            .iter()
            .filter(|(_, s)| s.g != NO_GOROUTINE || s.p != NO_PROC)
            .map(|(m, s)| (m, s.g, s.p))
            .collect();
        threads.sort_unstable();
        if threads.iter().any(|t| t.0 == GAP_THREAD) {
            return Err("flightrec's gap thread is busy".into());
        }
        let mut plan = Plan {
            seam,
            gs,
            ps,
            threads,
            kept_g: FxHashMap::default(),
            kept_p: FxHashMap::default(),
            gap_p: NO_PROC,
            marker: gap_goroutine(seam.index),
            changes: SeamChanges::default(),
        };
        if end.g.contains_key(&plan.marker) {
            return Err(format!("goroutine {} already exists", plan.marker));
        }
        plan.keep();
        plan.gap_p = plan.pick_gap_p()?;
        Ok(plan)
    }

    fn target_g(&self, g: i64) -> Option<Place> {
        self.seam.start.goroutines.get(&g).copied()
    }

    fn target_p(&self, p: i64) -> Option<Place> {
        self.seam.start.procs.get(&p).copied()
    }

    fn end_place_g(&self, g: i64) -> Option<Place> {
        let s = self.seam.end.g.get(&g)?;
        let on = self.threads.iter().find(|t| t.1 == g).map_or(NO_THREAD, |t| t.0);
        Some((s.status, on))
    }

    fn end_place_p(&self, p: i64) -> Option<Place> {
        let s = self.seam.end.p.get(&p)?;
        let on = self.threads.iter().find(|t| t.2 == p).map_or(NO_THREAD, |t| t.0);
        Some((s.status, on))
    }

    /// Bindings that hold across the gap: a goroutine running or in a
    /// syscall on the same thread, a P running on the same thread (one in
    /// a syscall only with its goroutine).
    fn keep(&mut self) {
        for &(m, g, p) in &self.threads {
            if g != NO_GOROUTINE && self.target_g(g) == self.end_place_g(g) {
                let in_syscall = self.seam.end.g.get(&g).map(|s| s.status) == Some(go_status::SYSCALL);
                if !(in_syscall && self.needs_fixes(g)) {
                    self.kept_g.insert(g, m);
                }
            }
            let stays = match self.seam.end.p.get(&p).map(|s| s.status) {
                Some(proc_status::RUNNING) => true,
                Some(proc_status::SYSCALL) => self.kept_g.contains_key(&g),
                _ => false,
            };
            if p != NO_PROC && stays && self.target_p(p) == self.end_place_p(p) {
                self.kept_p.insert(p, m);
            }
        }
    }

    /// The P the gap thread runs on: one idle once the threads let go,
    /// preferably one the next window finds idle too; else one borrowed
    /// from the thread keeping it.
    fn pick_gap_p(&mut self) -> Result<i64, String> {
        let mut candidates: Vec<(bool, i64)> = self
            .seam
            .end
            .p
            .iter()
            .filter(|(p, s)| {
                s.status == proc_status::IDLE
                    || (s.status == proc_status::RUNNING && !self.kept_p.contains_key(p))
            })
            .map(|(&p, _)| (self.target_p(p).map(|t| t.0) != Some(proc_status::IDLE), p))
            .collect();
        candidates.sort_unstable();
        if let Some(&(_, p)) = candidates.first() {
            return Ok(p);
        }
        let p = *self.kept_p.keys().min().ok_or("no P to run the seam on")?;
        self.kept_p.remove(&p);
        Ok(p)
    }

    /// What a goroutine must do while it runs in the gap: end the ranges
    /// (a mark assist, a stop-the-world) and user regions the next window
    /// does not know, innermost region first; begin an assist the next
    /// window finds running.
    fn fixes(&self, g: i64) -> Fixes {
        let mut ends = Vec::new();
        let mut regions = Vec::new();
        let mut assisting = false;
        let assists_next = self.seam.start.assisting.contains(&g);
        if let Some(s) = self.seam.end.g.get(&g) {
            for r in &s.ranges.0 {
                if r.typ == EV_GC_MARK_ASSIST_BEGIN {
                    assisting = true;
                    if assists_next {
                        continue;
                    }
                }
                ends.push(*r);
            }
            regions = s
                .regions
                .iter()
                .rev()
                .map(|r| (r.task, r.name.to_vec()))
                .collect();
        }
        Fixes {
            ends,
            regions,
            begin_assist: !assisting && assists_next,
        }
    }

    fn needs_fixes(&self, g: i64) -> bool {
        let f = self.fixes(g);
        !f.ends.is_empty() || !f.regions.is_empty() || f.begin_assist
    }

    /// Runs the fixes on thread `m`, which runs `g`.
    fn run_fixes(&self, s: &mut Sim, m: i64, g: i64) -> Step {
        let Fixes {
            ends,
            regions,
            begin_assist,
        } = self.fixes(g);
        for r in ends {
            match r.typ {
                EV_GC_MARK_ASSIST_BEGIN => s.emit(m, EV_GC_MARK_ASSIST_END, &[]),
                EV_STW_BEGIN => s.emit(m, EV_STW_END, &[]),
                other => return Err(format!("goroutine {g} is in a range of event type {other}")),
            }
        }
        for (task, name) in regions {
            // Go matches an end to the innermost region by task and name.
            let id = s.string(&name)?;
            s.emit(m, EV_USER_REGION_END, &[task, id, 0]);
        }
        if begin_assist {
            s.emit(m, EV_GC_MARK_ASSIST_BEGIN, &[0]);
        }
        Ok(())
    }

    fn sweeping_at_end(&self, p: i64) -> bool {
        self.seam
            .end
            .p
            .get(&p)
            .is_some_and(|s| s.ranges.0.iter().any(|r| r.typ == EV_GC_SWEEP_BEGIN))
    }

    /// Whether the seam later starts or wakes goroutine `g` of thread `m`
    /// (which takes its sequence number, so a status written where it runs).
    fn g_needs_seq(&self, m: i64, g: i64) -> bool {
        if self.kept_g.contains_key(&g) {
            return false;
        }
        let Some((status, _)) = self.end_place_g(g) else {
            return false;
        };
        let fix = self.needs_fixes(g);
        match (status, self.target_g(g)) {
            (go_status::RUNNING, None) => false,
            (go_status::RUNNING, Some((go_status::SYSCALL, on))) if on == m => false,
            (go_status::RUNNING, Some((t, _))) => t == go_status::RUNNING || t == go_status::SYSCALL,
            (go_status::SYSCALL, Some((go_status::RUNNABLE, _))) => fix,
            _ => true,
        }
    }

    /// Whether the seam later starts or steals P `p` (its sequence number).
    fn p_needs_seq(&self, p: i64) -> bool {
        if p == self.gap_p {
            return true;
        }
        if self.kept_p.contains_key(&p) {
            return false;
        }
        match (self.seam.end.p.get(&p).map(|s| s.status), self.target_p(p)) {
            (Some(proc_status::SYSCALL | proc_status::SYSCALL_ABANDONED), _) => true,
            (Some(_), Some((t, _))) => t == proc_status::RUNNING || t == proc_status::SYSCALL,
            _ => false,
        }
    }

    /// First, each thread lets go of the goroutine and P it held, unless it
    /// holds them on: written on its own batch, statuses first.
    fn release_threads(&mut self, s: &mut Sim) -> Step {
        let start = self.seam.start;
        let threads = self.threads.clone();
        for (m, g, p) in threads {
            if p != NO_PROC && self.p_needs_seq(p) {
                s.proc_status(m, p)?;
            }
            if g != NO_GOROUTINE && self.g_needs_seq(m, g) {
                s.go_status(m, g)?;
            }
            let g_status = s.gstatus(g);
            if g != NO_GOROUTINE && self.kept_g.contains_key(&g) {
                if g_status == Some(go_status::RUNNING) {
                    self.run_fixes(s, m, g)?;
                }
            } else if g_status == Some(go_status::RUNNING) {
                self.changes.goroutines += 1;
                match self.target_g(g) {
                    None => {
                        self.changes.ended += 1;
                        s.go_leave(m, EV_GO_DESTROY)?;
                    }
                    Some((go_status::SYSCALL, on)) if on == m => {
                        self.run_fixes(s, m, g)?;
                        if !s.has_pseq(p) {
                            s.proc_status(m, p)?;
                        }
                        s.go_syscall_begin(m)?;
                    }
                    Some((t, _)) => {
                        self.run_fixes(s, m, g)?;
                        s.go_leave(m, leave_for(t))?;
                    }
                }
            } else if g_status == Some(go_status::SYSCALL) {
                self.changes.goroutines += 1;
                let (_, held) = s.thread(m);
                if held != NO_PROC && s.pstatus(held) == Some(proc_status::SYSCALL) {
                    s.proc_steal(held, m)?;
                }
                s.go_syscall_end_blocked(m)?;
            }
            let (_, held) = s.thread(m);
            if held == NO_PROC {
                continue;
            }
            let sweeping = self.sweeping_at_end(held);
            if self.kept_p.contains_key(&held) {
                match (sweeping, start.sweeping.contains(&held)) {
                    (true, false) => s.emit(m, EV_GC_SWEEP_END, &[0, 0]),
                    (false, true) => s.emit(m, EV_GC_SWEEP_BEGIN, &[0]),
                    _ => {}
                }
                continue;
            }
            self.changes.procs += 1;
            if sweeping {
                s.emit(m, EV_GC_SWEEP_END, &[0, 0]);
            }
            match s.pstatus(held) {
                Some(proc_status::SYSCALL) => s.proc_steal(held, m)?,
                _ => s.proc_stop(m)?,
            }
        }
        match self
            .seam
            .end
            .p
            .keys()
            .find(|&&p| self.sweeping_at_end(p) && !self.threads.iter().any(|t| t.2 == p))
        {
            Some(p) => Err(format!("P {p} is idle in the middle of a sweep")),
            None => Ok(()),
        }
    }

    /// Second, the gap thread takes its P; the gap goroutine begins the region
    /// and writes the log line that mark the gap, then waits for its end.
    fn open_gap(&self, s: &mut Sim) -> Result<u64, String> {
        if !s.has_pseq(self.gap_p) {
            s.proc_status(GAP_THREAD, self.gap_p)?;
        }
        s.proc_start(GAP_THREAD, self.gap_p)?;
        let func = s.string(GAP_FUNCTION.as_bytes())?;
        let file = s.string(b"flightrec")?;
        let stack = self.seam.stacks_from;
        s.tables
            .stack(stack, &[[GAP_PC, func, file, 0]])
            .map_err(|e| e.to_string())?;
        s.go_create(GAP_THREAD, self.marker, stack)?;
        s.go_start(GAP_THREAD, self.marker)?;
        let region = s.string(GAP_REGION.as_bytes())?;
        let key = s.string(GAP_LOG_KEY.as_bytes())?;
        let note = s.string(self.seam.note.as_bytes())?;
        s.emit(GAP_THREAD, EV_USER_REGION_BEGIN, &[0, region, 0]);
        s.emit(GAP_THREAD, EV_USER_LOG, &[0, key, note, 0]);
        s.go_leave(GAP_THREAD, EV_GO_BLOCK)?;
        Ok(region)
    }

    /// Third, every goroutine no thread holds goes to the state the next window
    /// starts it in: created, woken, or run on the gap thread when that
    /// takes running (to block it, end it, or fix its ranges).
    fn settle_goroutines(&mut self, s: &mut Sim) -> Step {
        let gs = self.gs.clone();
        for g in gs {
            if g == self.marker || self.kept_g.contains_key(&g) {
                continue;
            }
            let target = self.target_g(g);
            let Some(cur) = s.gstatus(g) else {
                if target.is_some() {
                    self.changes.goroutines += 1;
                    self.changes.created += 1;
                    s.go_create(GAP_THREAD, g, 0)?;
                    if needs_run(target, go_status::RUNNABLE) || self.seam.start.assisting.contains(&g) {
                        s.go_start(GAP_THREAD, g)?;
                        self.run_fixes(s, GAP_THREAD, g)?;
                        s.go_leave(GAP_THREAD, leave_for(target.map_or(go_status::RUNNABLE, |t| t.0)))?;
                    }
                }
                continue;
            };
            if cur == go_status::RUNNING || cur == go_status::SYSCALL {
                return Err(format!("goroutine {g} is still bound to a thread"));
            }
            let fix = self.needs_fixes(g);
            let must_run = target.is_none() || fix || needs_run(target, cur);
            let held = self.threads.iter().any(|t| t.1 == g);
            if (target.map(|t| t.0) != Some(cur) || fix) && !held {
                self.changes.goroutines += 1;
            }
            let wake =
                cur == go_status::WAITING && (must_run || target.map(|t| t.0) != Some(go_status::WAITING));
            let started_later = matches!(target, Some((go_status::RUNNING | go_status::SYSCALL, _)));
            if !s.has_gseq(g) && (must_run || wake || started_later) {
                s.go_status(GAP_THREAD, g)?;
            }
            if wake {
                s.go_unblock(g)?;
            }
            if must_run {
                s.go_start(GAP_THREAD, g)?;
                match target {
                    None => {
                        self.changes.ended += 1;
                        s.go_leave(GAP_THREAD, EV_GO_DESTROY)?;
                    }
                    Some((t, _)) => {
                        self.run_fixes(s, GAP_THREAD, g)?;
                        s.go_leave(GAP_THREAD, leave_for(t))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Fourth, goroutines the next window finds in a syscall enter it on their
    /// thread, with the P the next window finds in that syscall, or with
    /// the gap thread's P, stolen back right after.
    fn enter_syscalls(&self, s: &mut Sim) -> Step {
        let start = self.seam.start;
        let mut syscalls: Vec<(i64, i64)> = start
            .goroutines
            .iter()
            .filter(|(g, (st, _))| *st == go_status::SYSCALL && !self.kept_g.contains_key(g))
            .map(|(&g, &(_, on))| (g, on))
            .collect();
        syscalls.sort_unstable();
        for (g, on) in syscalls {
            if on == NO_THREAD || on == GAP_THREAD {
                return Err(format!("goroutine {g} is in a syscall on no thread"));
            }
            let own = start
                .procs
                .iter()
                .find(|(_, (st, m))| *st == proc_status::SYSCALL && *m == on)
                .map(|(&p, _)| p);
            let p = own.unwrap_or(self.gap_p);
            if p == self.gap_p {
                s.proc_stop(GAP_THREAD)?;
            } else if !s.has_pseq(p) {
                s.proc_status(GAP_THREAD, p)?;
            }
            s.proc_start(on, p)?;
            s.go_start(on, g)?;
            s.go_syscall_begin(on)?;
            if p == self.gap_p {
                s.proc_steal(self.gap_p, on)?;
                s.proc_start(GAP_THREAD, self.gap_p)?;
            }
        }
        Ok(())
    }

    /// Fifth, the gap goroutine ends the gap: a GC cycle that ended or began in
    /// it, the region, itself; the gap thread lets go of its P.
    fn close_gap(&mut self, s: &mut Sim, region: u64) -> Result<GcTrack, String> {
        s.go_unblock(self.marker)?;
        s.go_start(GAP_THREAD, self.marker)?;
        let mut gc = self.seam.gc;
        match (gc.phase, self.seam.start.gc_running) {
            (GcPhase::On, false) => {
                gc.last_seq += 1;
                gc.phase = GcPhase::Off;
                self.changes.gc = -1;
                s.emit(GAP_THREAD, EV_GC_END, &[gc.last_seq]);
            }
            (GcPhase::Off | GcPhase::Unknown, true) => {
                gc.last_seq += 1;
                gc.phase = GcPhase::On;
                self.changes.gc = 1;
                s.emit(GAP_THREAD, EV_GC_BEGIN, &[gc.last_seq, 0]);
            }
            _ => {}
        }
        s.emit(GAP_THREAD, EV_USER_REGION_END, &[0, region, 0]);
        s.go_leave(GAP_THREAD, EV_GO_DESTROY)?;
        s.proc_stop(GAP_THREAD)?;
        Ok(gc)
    }

    /// Last, Ps the next window finds running start on their thread (sweeping
    /// if it finds them sweeping), then the goroutines it finds running on
    /// them; an abandoned P it finds idle is stolen.
    fn start_procs(&mut self, s: &mut Sim) -> Step {
        let start = self.seam.start;
        for p in self.ps.clone() {
            let Some((t, on)) = self.target_p(p) else { continue };
            if self.kept_p.contains_key(&p) {
                continue;
            }
            match (s.pstatus(p), t) {
                (None, _) => {}
                (Some(c), t) if c == t && t != proc_status::RUNNING => {}
                (Some(proc_status::IDLE), proc_status::RUNNING) => {
                    if on == NO_THREAD {
                        return Err(format!("P {p} runs on no thread at the next start"));
                    }
                    if !s.has_pseq(p) {
                        s.proc_status(GAP_THREAD, p)?;
                    }
                    if p != self.gap_p {
                        self.changes.procs += 1;
                    }
                    s.proc_start(on, p)?;
                    if start.sweeping.contains(&p) {
                        s.emit(on, EV_GC_SWEEP_BEGIN, &[0]);
                    }
                }
                (Some(proc_status::SYSCALL_ABANDONED), proc_status::IDLE) => {
                    if !s.has_pseq(p) {
                        s.proc_status(GAP_THREAD, p)?;
                    }
                    s.proc_steal(p, NO_THREAD)?;
                }
                (Some(c), t) => return Err(format!("P {p} cannot go from status {c} to {t} across the gap")),
            }
        }
        let mut running: Vec<(i64, i64)> = start
            .goroutines
            .iter()
            .filter(|(g, (st, _))| *st == go_status::RUNNING && !self.kept_g.contains_key(g))
            .map(|(&g, &(_, on))| (g, on))
            .collect();
        running.sort_unstable();
        for (g, on) in running {
            if on == NO_THREAD {
                return Err(format!("goroutine {g} runs on no thread at the next start"));
            }
            s.go_start(on, g)?;
        }
        Ok(())
    }
}

/// How a running goroutine leaves for `target` (a wire status).
fn leave_for(target: u8) -> EventType {
    if target == go_status::WAITING {
        EV_GO_BLOCK
    } else {
        EV_GO_STOP
    }
}

/// Whether reaching `target` from `cur` (a free goroutine) takes running it.
fn needs_run(target: Option<Place>, cur: u8) -> bool {
    match target {
        None => true,
        Some((t, _)) => t == go_status::WAITING && cur == go_status::RUNNABLE,
    }
}

/// Builds the seam: the events, in an order Go's parser follows, spread
/// over the gap.
pub(crate) fn build(seam: &Seam<'_>) -> Result<Built, String> {
    if seam.before <= seam.after.saturating_add(1) {
        return Err("the windows touch in the target's clock: no room for the seam's events".into());
    }
    let mut plan = Plan::new(seam)?;
    let mut s = Sim::new(seam.end, seam.strings_from);
    plan.release_threads(&mut s)?;
    let region = plan.open_gap(&mut s)?;
    plan.settle_goroutines(&mut s)?;
    plan.enter_syscalls(&mut s)?;
    let gc = plan.close_gap(&mut s, region)?;
    plan.start_procs(&mut s)?;
    if s.g.contains_key(&plan.marker) {
        return Err("the gap goroutine did not end".into());
    }
    spread(s, seam, gc, plan.changes)
}

/// Spreads the events over the gap and cuts them into batches per thread.
fn spread(s: Sim, seam: &Seam<'_>, gc: GcTrack, changes: SeamChanges) -> Result<Built, String> {
    let n = s.out.len() as u64;
    let room = seam.before - seam.after - 1;
    let first = seam.after + 1;
    let mut batches: Vec<EventBatches> = Vec::new();
    let mut index: FxHashMap<i64, usize> = FxHashMap::default();
    for (i, (m, typ, args, nargs)) in s.out.iter().enumerate() {
        let i = i as u64;
        // Evenly over the gap; when there are more events than ticks,
        // several share one (the order holds regardless, see the module
        // docs).
        let tick = if n <= 1 {
            first
        } else if room >= n {
            first + (u128::from(i) * u128::from(room - 1) / u128::from(n - 1)) as u64
        } else {
            first + (u128::from(i) * u128::from(room) / u128::from(n)) as u64
        };
        let k = *index.entry(*m).or_insert_with(|| {
            batches.push(EventBatches::new(*m as u64));
            batches.len() - 1
        });
        batches[k]
            .event(*typ, tick, &args[..usize::from(*nargs)])
            .map_err(|e| e.to_string())?;
    }
    Ok(Built {
        batches,
        tables: s.tables,
        events: n,
        gc,
        changes,
        first_tick: first,
    })
}
