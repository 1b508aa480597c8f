//! The ordering of P events: statuses at a generation's start, starts,
//! stops and steals (Go's `order.go`, the `advanceProc*` handlers).

use crate::order::*;

impl Ordering {
    pub(crate) fn proc_status(&mut self, cx: &mut Ctx<'_>) -> Advanced {
        let pid = cx.ev.args[0] as i64;
        let status = cx.ev.args[1] as u8;
        let Some(&mapped) = PROC_STATUS_TO_STATE.get(usize::from(status)) else {
            return Err(format!("invalid status for proc {pid}: {status}"));
        };
        let mut old = mapped;
        let initial = cx.gen_num == self.initial_gen;
        match self.p.get_mut(&pid) {
            Some(s) => {
                if status == proc_status::SYSCALL_ABANDONED && s.status == proc_status::SYSCALL {
                    // Nothing was lost: the P is still known in its syscall.
                    old = proc_state::RUNNING;
                    cx.ev.args[1] = u64::from(proc_status::SYSCALL);
                } else if status == proc_status::SYSCALL_ABANDONED
                    && s.status == proc_status::SYSCALL_ABANDONED
                {
                    old = proc_state::IDLE;
                    cx.ev.args[1] = u64::from(proc_status::SYSCALL_ABANDONED);
                } else if s.status != status {
                    return Err(format!(
                        "inconsistent status for proc {pid}: old {} vs. new {}",
                        s.status, status
                    ));
                }
                s.seq = Seq::new(cx.gen_num, 0);
            }
            None => {
                self.p.insert(
                    pid,
                    PState {
                        status,
                        seq: Seq::new(cx.gen_num, 0),
                        ranges: Ranges::default(),
                    },
                );
                old = if initial {
                    proc_state::UNDETERMINED
                } else {
                    proc_state::NOT_EXIST
                };
            }
        }
        cx.ev.args[BaseEvent::extra_index(cx.ev.typ)] = u64::from(old);
        let mut new = cx.cur;
        if status == proc_status::RUNNING || status == proc_status::SYSCALL {
            new.p = pid;
        }
        // A P about to be stolen is reported in the context it is bound to.
        if status == proc_status::SYSCALL_ABANDONED && old == proc_state::RUNNING {
            let mut found = false;
            for (mid, ms) in self.m.iter() {
                if ms.p == pid {
                    cx.cur = SchedCtx {
                        m: mid,
                        p: pid,
                        g: ms.g,
                    };
                    found = true;
                }
            }
            if !found {
                return Err(format!(
                    "failed to find sched context for proc {pid} that's about to be stolen"
                ));
            }
        }
        self.push(cx.event(cx.cur));
        Ok(Some(new))
    }

    pub(crate) fn proc_start(&mut self, cx: &mut Ctx<'_>) -> Advanced {
        let pid = cx.ev.args[0] as i64;
        let seq = Seq::new(cx.gen_num, cx.ev.args[1]);
        let Some(state) = self.p.get_mut(&pid) else {
            return Ok(None);
        };
        if state.status != proc_status::IDLE || !seq.succeeds(state.seq) || cx.cur.p != NO_PROC {
            return Ok(None);
        }
        validate_ctx(
            cx.cur,
            Reqs {
                m: Need::Must,
                p: Need::MustNot,
                g: Need::May,
            },
        )?;
        state.status = proc_status::RUNNING;
        state.seq = seq;
        let mut new = cx.cur;
        new.p = pid;
        self.push(cx.event(cx.cur));
        Ok(Some(new))
    }

    pub(crate) fn proc_stop(&mut self, cx: &mut Ctx<'_>) -> Advanced {
        let Some(state) = self.p.get_mut(&cx.cur.p) else {
            return Err(format!(
                "event {} for proc ({}) that doesn't exist",
                cx.name(),
                cx.cur.p
            ));
        };
        if state.status != proc_status::RUNNING && state.status != proc_status::SYSCALL {
            return Err(format!(
                "{} event for proc that's not Running or Syscall",
                cx.name()
            ));
        }
        validate_ctx(
            cx.cur,
            Reqs {
                m: Need::Must,
                p: Need::Must,
                g: Need::May,
            },
        )?;
        state.status = proc_status::IDLE;
        let mut new = cx.cur;
        new.p = NO_PROC;
        self.push(cx.event(cx.cur));
        Ok(Some(new))
    }

    pub(crate) fn proc_steal(&mut self, cx: &mut Ctx<'_>) -> Advanced {
        let pid = cx.ev.args[0] as i64;
        let seq = Seq::new(cx.gen_num, cx.ev.args[1]);
        let Some(state) = self.p.get_mut(&pid) else {
            return Ok(None);
        };
        if (state.status != proc_status::SYSCALL && state.status != proc_status::SYSCALL_ABANDONED)
            || !seq.succeeds(state.seq)
        {
            return Ok(None);
        }
        validate_ctx(
            cx.cur,
            Reqs {
                m: Need::Must,
                p: Need::May,
                g: Need::May,
            },
        )?;
        // Seen as Idle -> Idle, not Running -> Idle, when it advanced on an
        // abandoned syscall.
        let old = state.status;
        cx.ev.args[BaseEvent::extra_index(cx.ev.typ)] = u64::from(old);
        state.status = proc_status::IDLE;
        state.seq = seq;
        if old == proc_status::SYSCALL_ABANDONED {
            self.push(cx.event(cx.cur));
            return Ok(Some(cx.cur));
        }
        let mid = cx.ev.args[2] as i64;
        let mut new = cx.cur;
        if mid == cx.cur.m {
            if cx.cur.p != pid {
                return Err(format!(
                    "tried to self-steal proc {pid} (thread {mid}), but got proc {} instead",
                    cx.cur.p
                ));
            }
            new.p = NO_PROC;
            self.push(cx.event(cx.cur));
            return Ok(Some(new));
        }
        let Some(ms) = self.m.get_mut(mid) else {
            return Err(format!("stole proc from non-existent thread {mid}"));
        };
        if ms.p != pid {
            return Err(format!(
                "tried to steal proc {pid} from thread {mid}, but got proc {} instead",
                ms.p
            ));
        }
        // The other thread is leaving its syscall and may now go on.
        ms.p = NO_PROC;
        self.push(cx.event(cx.cur));
        Ok(Some(new))
    }
}
