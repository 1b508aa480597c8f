//! The ordering of goroutine events: statuses, creation, starts and stops,
//! blocking, syscalls, coroutine switches, and the instantaneous events of a
//! running goroutine (Go's `order.go`, the `advanceGo*` handlers).

use crate::order::*;
use crate::spec::*;

impl Ordering {
    pub(crate) fn go_status(&mut self, cx: &mut Ctx<'_>) -> Advanced {
        let gid = cx.ev.args[0] as i64;
        let mid = cx.ev.args[1] as i64;
        let status = cx.ev.args[2] as u8;
        let Some(&mapped) = GO_STATUS_TO_STATE.get(usize::from(status)) else {
            return Err(format!("invalid status for goroutine {gid}: {status}"));
        };
        let mut old = mapped;
        match self.g.get_mut(&gid) {
            Some(s) => {
                if s.status != status {
                    return Err(format!(
                        "inconsistent status for goroutine {gid}: old {} vs. new {}",
                        s.status, status
                    ));
                }
                s.seq = Seq::new(cx.gen_num, 0);
            }
            None if cx.gen_num == self.initial_gen => {
                self.g.insert(gid, GState::new(status, Seq::new(cx.gen_num, 0)));
                old = go_state::UNDETERMINED;
            }
            None => {
                return Err(format!(
                    "found goroutine status for new goroutine after the first generation: id={gid} status={status}"
                ))
            }
        }
        cx.ev.args[2] = u64::from(old) << 32 | u64::from(status);
        let mut new = cx.cur;
        match status {
            go_status::RUNNING => new.g = gid,
            go_status::SYSCALL => {
                if mid == NO_THREAD {
                    return Err(format!("found goroutine {gid} in syscall without a thread"));
                }
                if mid == cx.cur.m {
                    if cx.gen_num != self.initial_gen && cx.cur.g != gid {
                        return Err(format!(
                            "inconsistent thread for syscalling goroutine {gid}: thread has goroutine {}",
                            cx.cur.g
                        ));
                    }
                    new.g = gid;
                } else {
                    // A goroutine blocked in a syscall on another thread for
                    // the whole generation.
                    match self.m.get(mid) {
                        Some(ms) => {
                            if ms.g != gid {
                                return Err(format!(
                                    "inconsistent thread for syscalling goroutine {gid}: thread has goroutine {}",
                                    ms.g
                                ));
                            }
                            cx.cur.g = ms.g;
                        }
                        None => {
                            let k = self.m.slot(mid);
                            if let Some(ms) = self.m.at(k) {
                                ms.g = gid;
                            }
                        }
                    }
                    cx.cur.m = mid;
                }
            }
            _ => {}
        }
        self.push(cx.event(cx.cur));
        Ok(Some(new))
    }

    pub(crate) fn go_create(&mut self, cx: &mut Ctx<'_>) -> Advanced {
        validate_ctx(
            cx.cur,
            Reqs {
                m: Need::Must,
                p: Need::Must,
                g: Need::May,
            },
        )?;
        if let Some(state) = self.g.get(&cx.cur.g) {
            if state.status != go_status::RUNNING {
                return Err(format!("{} event for goroutine that's not Running", cx.name()));
            }
        }
        let new_g = cx.ev.args[0] as i64;
        if self.g.contains_key(&new_g) {
            return Err(format!("tried to create goroutine ({new_g}) that already exists"));
        }
        let status = if cx.ev.typ == EV_GO_CREATE_BLOCKED {
            go_status::WAITING
        } else {
            go_status::RUNNABLE
        };
        self.g.insert(new_g, GState::new(status, Seq::new(cx.gen_num, 0)));
        self.push(cx.event(cx.cur));
        Ok(Some(cx.cur))
    }

    /// The running goroutine stops: destroyed, preempted or blocked.
    pub(crate) fn go_stop_exec(&mut self, ev: &BaseEvent, cur: SchedCtx) -> Advanced {
        validate_ctx(cur, USER_GO)?;
        let g = cur.g;
        let Some(state) = self.g.get_mut(&g) else {
            return Err(no_goroutine(ev.typ, g));
        };
        if state.status != go_status::RUNNING {
            return Err(format!(
                "{} event for goroutine that's not Running",
                spec(ev.typ).name
            ));
        }
        match ev.typ {
            EV_GO_DESTROY => {
                self.g.remove(&g);
            }
            EV_GO_STOP => state.status = go_status::RUNNABLE,
            _ => state.status = go_status::WAITING,
        }
        let mut new = cur;
        new.g = NO_GOROUTINE;
        self.push(ev.queued(cur));
        Ok(Some(new))
    }

    pub(crate) fn go_start(&mut self, ev: &BaseEvent, gen_num: u64, cur: SchedCtx) -> Advanced {
        let gid = ev.args[0] as i64;
        let seq = Seq::new(gen_num, ev.args[1]);
        let Some(state) = self.g.get_mut(&gid) else {
            return Ok(None);
        };
        if state.status != go_status::RUNNABLE || !seq.succeeds(state.seq) {
            return Ok(None);
        }
        validate_ctx(
            cur,
            Reqs {
                m: Need::Must,
                p: Need::Must,
                g: Need::MustNot,
            },
        )?;
        state.status = go_status::RUNNING;
        state.seq = seq;
        let mut new = cur;
        new.g = gid;
        self.push(ev.queued(cur));
        Ok(Some(new))
    }

    pub(crate) fn go_unblock(&mut self, ev: &BaseEvent, gen_num: u64, cur: SchedCtx) -> Advanced {
        let gid = ev.args[0] as i64;
        let seq = Seq::new(gen_num, ev.args[1]);
        let Some(state) = self.g.get_mut(&gid) else {
            return Ok(None);
        };
        if state.status != go_status::WAITING || !seq.succeeds(state.seq) {
            return Ok(None);
        }
        state.status = go_status::RUNNABLE;
        state.seq = seq;
        // Anything may unblock a goroutine (sysmon, say): no context check.
        self.push(ev.queued(cur));
        Ok(Some(cur))
    }

    /// A coroutine switch: unblocks the next goroutine, blocks or destroys
    /// the current one and starts the next, as three events.
    pub(crate) fn go_switch(&mut self, cx: &mut Ctx<'_>) -> Advanced {
        validate_ctx(cx.cur, USER_GO)?;
        let cur_g = cx.cur.g;
        match self.g.get(&cur_g) {
            None => {
                return Err(format!(
                    "event {} for goroutine ({cur_g}) that doesn't exist",
                    cx.name()
                ))
            }
            Some(s) if s.status != go_status::RUNNING => {
                return Err(format!("{} event for goroutine that's not Running", cx.name()))
            }
            Some(_) => {}
        }
        let next_g = cx.ev.args[0] as i64;
        let seq = Seq::new(cx.gen_num, cx.ev.args[1]);
        match self.g.get(&next_g) {
            Some(s) if s.status == go_status::WAITING && seq.succeeds(s.seq) => {}
            _ => return Ok(None),
        }
        self.push(cx.event(cx.cur));
        if cx.ev.typ == EV_GO_SWITCH {
            if let Some(s) = self.g.get_mut(&cur_g) {
                s.status = go_status::WAITING;
            }
            self.push(cx.made_up(cx.cur, EV_GO_BLOCK, &[0, 0]));
        } else {
            self.g.remove(&cur_g);
            self.push(cx.made_up(cx.cur, EV_GO_DESTROY, &[]));
        }
        if let Some(s) = self.g.get_mut(&next_g) {
            s.status = go_status::RUNNING;
            s.seq = seq;
        }
        let mut new = cx.cur;
        new.g = next_g;
        let mut start = cx.cur;
        start.g = NO_GOROUTINE;
        self.push(cx.made_up(start, EV_GO_START, &[next_g as u64, cx.ev.args[1]]));
        Ok(Some(new))
    }

    pub(crate) fn go_syscall_begin(&mut self, cx: &mut Ctx<'_>) -> Advanced {
        validate_ctx(cx.cur, USER_GO)?;
        let g = cx.cur.g;
        let Some(state) = self.g.get_mut(&g) else {
            return Err(format!(
                "event {} for goroutine ({g}) that doesn't exist",
                cx.name()
            ));
        };
        if state.status != go_status::RUNNING {
            return Err(format!("{} event for goroutine that's not Running", cx.name()));
        }
        state.status = go_status::SYSCALL;
        let Some(p) = self.p.get_mut(&cx.cur.p) else {
            return Err(format!(
                "uninitialized proc {} found during {}",
                cx.cur.p,
                cx.name()
            ));
        };
        p.status = proc_status::SYSCALL;
        // The P sequence number only disambiguates steals: a running P must
        // match it now.
        let seq = Seq::new(cx.gen_num, cx.ev.args[0]);
        if !seq.succeeds(p.seq) {
            return Err(format!(
                "failed to advance {}: can't make sequence: {} (gen={}) -> {} (gen={})",
                cx.name(),
                p.seq.seq,
                p.seq.gen,
                seq.seq,
                seq.gen
            ));
        }
        p.seq = seq;
        self.push(cx.event(cx.cur));
        Ok(Some(cx.cur))
    }

    pub(crate) fn go_syscall_end(&mut self, cx: &mut Ctx<'_>) -> Advanced {
        validate_ctx(cx.cur, USER_GO)?;
        let g = cx.cur.g;
        let Some(state) = self.g.get_mut(&g) else {
            return Err(format!(
                "event {} for goroutine ({g}) that doesn't exist",
                cx.name()
            ));
        };
        if state.status != go_status::SYSCALL {
            return Err(format!("{} event for goroutine that's not Running", cx.name()));
        }
        state.status = go_status::RUNNING;
        let Some(p) = self.p.get_mut(&cx.cur.p) else {
            return Err(format!(
                "uninitialized proc {} found during {}",
                cx.cur.p,
                cx.name()
            ));
        };
        if p.status != proc_status::SYSCALL {
            return Err(format!(
                "expected proc {} in state Syscall, but got {} instead",
                cx.cur.p, p.status
            ));
        }
        p.status = proc_status::RUNNING;
        self.push(cx.event(cx.cur));
        Ok(Some(cx.cur))
    }

    pub(crate) fn go_syscall_end_blocked(&mut self, cx: &mut Ctx<'_>) -> Advanced {
        // Not before the P it had in the syscall was taken from it.
        if cx.cur.p != NO_PROC {
            match self.p.get(&cx.cur.p) {
                None => {
                    return Err(format!(
                        "uninitialized proc {} found during {}",
                        cx.cur.p,
                        cx.name()
                    ))
                }
                Some(p) if p.status == proc_status::SYSCALL => return Ok(None),
                Some(_) => {}
            }
        }
        validate_ctx(
            cx.cur,
            Reqs {
                m: Need::Must,
                p: Need::May,
                g: Need::Must,
            },
        )?;
        let g = cx.cur.g;
        let Some(state) = self.g.get_mut(&g) else {
            return Err(format!(
                "event {} for goroutine ({g}) that doesn't exist",
                cx.name()
            ));
        };
        if state.status != go_status::SYSCALL {
            return Err(format!("{} event for goroutine that's not Running", cx.name()));
        }
        state.status = go_status::RUNNABLE;
        let mut new = cx.cur;
        new.g = NO_GOROUTINE;
        self.push(cx.event(cx.cur));
        Ok(Some(new))
    }

    /// A goroutine appears in a syscall: a cgo callback on a C thread.
    pub(crate) fn go_create_syscall(&mut self, cx: &mut Ctx<'_>) -> Advanced {
        validate_ctx(
            cx.cur,
            Reqs {
                m: Need::Must,
                p: Need::May,
                g: Need::MustNot,
            },
        )?;
        let new_g = cx.ev.args[0] as i64;
        if self.g.contains_key(&new_g) {
            return Err(format!(
                "tried to create goroutine ({new_g}) in syscall that already exists"
            ));
        }
        self.g
            .insert(new_g, GState::new(go_status::SYSCALL, Seq::new(cx.gen_num, 0)));
        let mut new = cx.cur;
        new.g = new_g;
        self.push(cx.event(cx.cur));
        Ok(Some(new))
    }

    /// A cgo callback's goroutine goes away; its thread also loses its P,
    /// since the thread id may be reused.
    pub(crate) fn go_destroy_syscall(&mut self, cx: &mut Ctx<'_>) -> Advanced {
        validate_ctx(
            cx.cur,
            Reqs {
                m: Need::Must,
                p: Need::May,
                g: Need::Must,
            },
        )?;
        let g = cx.cur.g;
        match self.g.get(&g) {
            None => {
                return Err(format!(
                    "event {} for goroutine ({g}) that doesn't exist",
                    cx.name()
                ))
            }
            Some(s) if s.status != go_status::SYSCALL => {
                return Err(format!("{} event for goroutine that's not Syscall", cx.name()))
            }
            Some(_) => {}
        }
        self.g.remove(&g);
        let mut new = cx.cur;
        new.g = NO_GOROUTINE;
        if cx.cur.p != NO_PROC {
            let Some(p) = self.p.get_mut(&cx.cur.p) else {
                return Err(format!("found invalid proc {} during {}", cx.cur.p, cx.name()));
            };
            if p.status != proc_status::SYSCALL {
                return Err(format!(
                    "proc {} in unexpected state {} during {}",
                    cx.cur.p,
                    p.status,
                    cx.name()
                ));
            }
            p.status = proc_status::SYSCALL_ABANDONED;
            new.p = NO_PROC;
            let mut steal = cx.made_up(cx.cur, EV_PROC_STEAL, &[cx.cur.p as u64]);
            steal.args[BaseEvent::extra_index(EV_PROC_STEAL)] = u64::from(proc_status::SYSCALL);
            self.push(steal);
        }
        self.push(cx.event(cx.cur));
        Ok(Some(new))
    }

    /// Instantaneous events of a running goroutine.
    pub(crate) fn annotation(&mut self, cx: &mut Ctx<'_>) -> Advanced {
        validate_ctx(cx.cur, USER_GO)?;
        self.push(cx.event(cx.cur));
        Ok(Some(cx.cur))
    }

    pub(crate) fn heap_metric(&mut self, cx: &mut Ctx<'_>) -> Advanced {
        validate_ctx(
            cx.cur,
            Reqs {
                m: Need::Must,
                p: Need::Must,
                g: Need::May,
            },
        )?;
        self.push(cx.event(cx.cur));
        Ok(Some(cx.cur))
    }

    pub(crate) fn alloc_free(&mut self, cx: &mut Ctx<'_>) -> Advanced {
        validate_ctx(
            cx.cur,
            Reqs {
                m: Need::Must,
                p: Need::May,
                g: Need::May,
            },
        )?;
        self.push(cx.event(cx.cur));
        Ok(Some(cx.cur))
    }
}

/// Out of line, taking the id by value: formatting it in place would keep
/// the context of the hot path in memory.
#[cold]
#[inline(never)]
fn no_goroutine(typ: EventType, g: i64) -> String {
    format!("event {} for goroutine ({g}) that doesn't exist", spec(typ).name)
}
