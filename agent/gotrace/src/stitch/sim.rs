//! The parser's state as a seam changes it, and one function per event a seam writes, each checking first what Go's parser will check of it.
//!
//! Mirrors the handlers of Go's `order.go` for the few events a seam uses,
//! so that a seam that would break a rule fails here with a reason, before
//! the decoder checks the seam for real.

use rustc_hash::FxHashMap;

use crate::encode::Tables;
use crate::order::{go_status, proc_status, Ordering, NO_GOROUTINE, NO_PROC, NO_THREAD};
use crate::spec::*;

/// The thread flightrec's seam events run on: no Linux thread id is this
/// large, so it never meets a real one.
pub const GAP_THREAD: i64 = 1 << 40;

/// Why a goroutine or P stops in a seam (Go shows it as the reason).
const REASON: &str = "flightrec: not traced";

#[derive(Debug, Clone, Copy)]
pub(super) struct SimG {
    status: u8,
    /// Sequence number within the seam's generation, once a status or a
    /// creation there set it.
    seq: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct SimP {
    status: u8,
    seq: Option<u64>,
}

/// The parser's state as the seam changes it, and the events written so
/// far, in the order the parser is to take them.
pub(super) struct Sim {
    pub(super) g: FxHashMap<i64, SimG>,
    pub(super) p: FxHashMap<i64, SimP>,
    m: FxHashMap<i64, (i64, i64)>,
    /// (thread, type, arguments after the time, how many).
    pub(super) out: Vec<(i64, EventType, [u64; 4], u8)>,
    pub(super) tables: Tables,
    strings: FxHashMap<Vec<u8>, u64>,
    next_string: u64,
}

pub(super) type Step = Result<(), String>;

impl Sim {
    /// Starts from the parser's state `end`; new strings get ids from
    /// `strings_from`.
    pub(super) fn new(end: &Ordering, strings_from: u64) -> Self {
        let g = end
            .g
            .iter()
            .map(|(&id, s)| {
                (
                    id,
                    SimG {
                        status: s.status,
                        seq: None,
                    },
                )
            })
            .collect();
        let p = end
            .p
            .iter()
            .map(|(&id, s)| {
                (
                    id,
                    SimP {
                        status: s.status,
                        seq: None,
                    },
                )
            })
            .collect();
        let m = end.m.iter().map(|(id, s)| (id, (s.g, s.p))).collect();
        Sim {
            g,
            p,
            m,
            out: Vec::new(),
            tables: Tables::new(),
            strings: FxHashMap::default(),
            next_string: strings_from,
        }
    }

    pub(super) fn emit(&mut self, m: i64, typ: EventType, args: &[u64]) {
        let mut a = [0u64; 4];
        a[..args.len()].copy_from_slice(args);
        self.out.push((m, typ, a, args.len() as u8));
    }

    pub(super) fn string(&mut self, s: &[u8]) -> Result<u64, String> {
        if let Some(&id) = self.strings.get(s) {
            return Ok(id);
        }
        let id = self.next_string;
        self.next_string += 1;
        self.tables.string(id, s).map_err(|e| e.to_string())?;
        self.strings.insert(s.to_vec(), id);
        Ok(id)
    }

    pub(super) fn thread(&self, m: i64) -> (i64, i64) {
        self.m.get(&m).copied().unwrap_or((NO_GOROUTINE, NO_PROC))
    }

    pub(super) fn set_thread(&mut self, m: i64, g: i64, p: i64) {
        self.m.insert(m, (g, p));
    }

    pub(super) fn gstatus(&self, g: i64) -> Option<u8> {
        self.g.get(&g).map(|s| s.status)
    }

    pub(super) fn pstatus(&self, p: i64) -> Option<u8> {
        self.p.get(&p).map(|s| s.status)
    }

    /// Whether the goroutine or P has a sequence number in the seam's
    /// generation yet.
    pub(super) fn has_gseq(&self, g: i64) -> bool {
        self.g.get(&g).is_some_and(|s| s.seq.is_some())
    }

    pub(super) fn has_pseq(&self, p: i64) -> bool {
        self.p.get(&p).is_some_and(|s| s.seq.is_some())
    }

    pub(super) fn go_status(&mut self, on: i64, g: i64) -> Step {
        let s = self.g.get_mut(&g).ok_or(format!("goroutine {g} unknown"))?;
        let mid = match s.status {
            go_status::RUNNING | go_status::SYSCALL => on,
            _ => NO_THREAD,
        };
        s.seq = Some(0);
        let status = s.status;
        self.emit(on, EV_GO_STATUS, &[g as u64, mid as u64, u64::from(status)]);
        Ok(())
    }

    pub(super) fn proc_status(&mut self, on: i64, p: i64) -> Step {
        let s = self.p.get_mut(&p).ok_or(format!("P {p} unknown"))?;
        s.seq = Some(0);
        let status = s.status;
        self.emit(on, EV_PROC_STATUS, &[p as u64, u64::from(status)]);
        Ok(())
    }

    pub(super) fn next_gseq(&mut self, g: i64) -> Result<u64, String> {
        let s = self.g.get_mut(&g).ok_or(format!("goroutine {g} unknown"))?;
        let seq = s
            .seq
            .ok_or(format!("goroutine {g} has no status in the seam's generation"))?
            + 1;
        s.seq = Some(seq);
        Ok(seq)
    }

    pub(super) fn next_pseq(&mut self, p: i64) -> Result<u64, String> {
        let s = self.p.get_mut(&p).ok_or(format!("P {p} unknown"))?;
        let seq = s
            .seq
            .ok_or(format!("P {p} has no status in the seam's generation"))?
            + 1;
        s.seq = Some(seq);
        Ok(seq)
    }

    pub(super) fn proc_start(&mut self, m: i64, p: i64) -> Step {
        let (g, held) = self.thread(m);
        if held != NO_PROC {
            return Err(format!("thread {m} already holds P {held}"));
        }
        if self.p.get(&p).map(|s| s.status) != Some(proc_status::IDLE) {
            return Err(format!("P {p} is not idle"));
        }
        let seq = self.next_pseq(p)?;
        if let Some(s) = self.p.get_mut(&p) {
            s.status = proc_status::RUNNING;
        }
        self.set_thread(m, g, p);
        self.emit(m, EV_PROC_START, &[p as u64, seq]);
        Ok(())
    }

    pub(super) fn proc_stop(&mut self, m: i64) -> Step {
        let (g, p) = self.thread(m);
        match self.p.get_mut(&p) {
            Some(s) if s.status == proc_status::RUNNING || s.status == proc_status::SYSCALL => {
                s.status = proc_status::IDLE
            }
            _ => return Err(format!("thread {m} holds no running P")),
        }
        self.set_thread(m, g, NO_PROC);
        self.emit(m, EV_PROC_STOP, &[]);
        Ok(())
    }

    /// Takes the P of a thread in a syscall (or an abandoned one) away,
    /// from the gap thread.
    pub(super) fn proc_steal(&mut self, p: i64, from: i64) -> Step {
        let status = self.p.get(&p).map(|s| s.status);
        if status != Some(proc_status::SYSCALL) && status != Some(proc_status::SYSCALL_ABANDONED) {
            return Err(format!("P {p} is not in a syscall"));
        }
        let seq = self.next_pseq(p)?;
        if let Some(s) = self.p.get_mut(&p) {
            s.status = proc_status::IDLE;
        }
        if status == Some(proc_status::SYSCALL) {
            let (g, held) = self.thread(from);
            if held != p {
                return Err(format!("thread {from} does not hold P {p}"));
            }
            self.set_thread(from, g, NO_PROC);
        }
        self.emit(GAP_THREAD, EV_PROC_STEAL, &[p as u64, seq, from as u64]);
        Ok(())
    }

    /// `stack` is the new goroutine's (0: none).
    pub(super) fn go_create(&mut self, m: i64, g: i64, stack: u64) -> Step {
        let (cur, p) = self.thread(m);
        if p == NO_PROC || self.g.contains_key(&g) {
            return Err(format!("cannot create goroutine {g} on thread {m}"));
        }
        if cur != NO_GOROUTINE && self.gstatus(cur) != Some(go_status::RUNNING) {
            return Err(format!("thread {m} runs goroutine {cur}, which is not running"));
        }
        self.g.insert(
            g,
            SimG {
                status: go_status::RUNNABLE,
                seq: Some(0),
            },
        );
        self.emit(m, EV_GO_CREATE, &[g as u64, stack, 0]);
        Ok(())
    }

    pub(super) fn go_start(&mut self, m: i64, g: i64) -> Step {
        let (cur, p) = self.thread(m);
        if cur != NO_GOROUTINE || p == NO_PROC {
            return Err(format!("thread {m} cannot start goroutine {g}"));
        }
        if self.gstatus(g) != Some(go_status::RUNNABLE) {
            return Err(format!("goroutine {g} is not runnable"));
        }
        let seq = self.next_gseq(g)?;
        if let Some(s) = self.g.get_mut(&g) {
            s.status = go_status::RUNNING;
        }
        self.set_thread(m, g, p);
        self.emit(m, EV_GO_START, &[g as u64, seq]);
        Ok(())
    }

    /// The running goroutine of `m` stops (`EV_GO_STOP`), blocks
    /// (`EV_GO_BLOCK`) or ends (`EV_GO_DESTROY`).
    pub(super) fn go_leave(&mut self, m: i64, typ: EventType) -> Step {
        let (g, p) = self.thread(m);
        if g == NO_GOROUTINE || p == NO_PROC || self.gstatus(g) != Some(go_status::RUNNING) {
            return Err(format!("thread {m} runs no goroutine it could stop"));
        }
        match typ {
            EV_GO_DESTROY => {
                self.g.remove(&g);
                self.emit(m, typ, &[]);
            }
            _ => {
                let reason = self.string(REASON.as_bytes())?;
                if let Some(s) = self.g.get_mut(&g) {
                    s.status = if typ == EV_GO_STOP {
                        go_status::RUNNABLE
                    } else {
                        go_status::WAITING
                    };
                }
                self.emit(m, typ, &[reason, 0]);
            }
        }
        self.set_thread(m, NO_GOROUTINE, p);
        Ok(())
    }

    pub(super) fn go_unblock(&mut self, g: i64) -> Step {
        if self.gstatus(g) != Some(go_status::WAITING) {
            return Err(format!("goroutine {g} is not waiting"));
        }
        let seq = self.next_gseq(g)?;
        if let Some(s) = self.g.get_mut(&g) {
            s.status = go_status::RUNNABLE;
        }
        self.emit(GAP_THREAD, EV_GO_UNBLOCK, &[g as u64, seq, 0]);
        Ok(())
    }

    pub(super) fn go_syscall_begin(&mut self, m: i64) -> Step {
        let (g, p) = self.thread(m);
        if g == NO_GOROUTINE || self.gstatus(g) != Some(go_status::RUNNING) {
            return Err(format!("thread {m} runs no goroutine to enter a syscall"));
        }
        if self.p.get(&p).map(|s| s.status) != Some(proc_status::RUNNING) {
            return Err(format!("thread {m} holds no running P"));
        }
        let seq = self.next_pseq(p)?;
        if let Some(s) = self.p.get_mut(&p) {
            s.status = proc_status::SYSCALL;
        }
        if let Some(s) = self.g.get_mut(&g) {
            s.status = go_status::SYSCALL;
        }
        self.emit(m, EV_GO_SYSCALL_BEGIN, &[seq, 0]);
        Ok(())
    }

    /// A goroutine leaves its syscall without a P: it becomes runnable and
    /// its thread free.
    pub(super) fn go_syscall_end_blocked(&mut self, m: i64) -> Step {
        let (g, p) = self.thread(m);
        if g == NO_GOROUTINE || self.gstatus(g) != Some(go_status::SYSCALL) {
            return Err(format!("thread {m} has no goroutine in a syscall"));
        }
        if p != NO_PROC && self.p.get(&p).map(|s| s.status) == Some(proc_status::SYSCALL) {
            return Err(format!("thread {m} still holds P {p} in its syscall"));
        }
        if let Some(s) = self.g.get_mut(&g) {
            s.status = go_status::RUNNABLE;
        }
        self.set_thread(m, NO_GOROUTINE, p);
        self.emit(m, EV_GO_SYSCALL_END_BLOCKED, &[]);
        Ok(())
    }
}
