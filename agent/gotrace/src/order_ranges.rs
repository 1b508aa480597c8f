//! The ordering of ranges (stop-the-world, GC mark phase, sweeps, mark
//! assists), user tasks and regions: the rest of Go's `order.go`.

use crate::order::*;
use crate::spec::*;

fn p_reqs() -> Reqs {
    Reqs {
        m: Need::Must,
        p: Need::Must,
        g: Need::May,
    }
}

impl Ordering {
    /// A stop-the-world or a mark assist begins on the running goroutine.
    pub(crate) fn go_range_begin(&mut self, cx: &mut Ctx<'_>) -> Advanced {
        validate_ctx(cx.cur, USER_GO)?;
        let desc = if cx.ev.typ == EV_STW_BEGIN {
            cx.ev.args[0]
        } else {
            0
        };
        let g = cx.cur.g;
        let Some(state) = self.g.get_mut(&g) else {
            return Err(format!(
                "encountered event of type {} without known state for current goroutine {g}",
                cx.ev.typ
            ));
        };
        state.ranges.begin(RangeType::new(cx.ev.typ, desc))?;
        self.push(cx.event(cx.cur));
        Ok(Some(cx.cur))
    }

    /// A mark assist was already running on a goroutine (not necessarily
    /// the current one) when the generation began.
    pub(crate) fn go_range_active(&mut self, cx: &mut Ctx<'_>) -> Advanced {
        let gid = cx.ev.args[0] as i64;
        let initial = cx.gen_num == self.initial_gen;
        let Some(state) = self.g.get_mut(&gid) else {
            return Err(format!(
                "uninitialized goroutine {gid} found during {}",
                cx.name()
            ));
        };
        state.ranges.active(RangeType::new(cx.ev.typ, 0), initial)?;
        self.push(cx.event(cx.cur));
        Ok(Some(cx.cur))
    }

    pub(crate) fn go_range_end(&mut self, cx: &mut Ctx<'_>) -> Advanced {
        validate_ctx(cx.cur, USER_GO)?;
        let g = cx.cur.g;
        let Some(state) = self.g.get_mut(&g) else {
            return Err(format!(
                "encountered event of type {} without known state for current goroutine {g}",
                cx.ev.typ
            ));
        };
        let desc = state.ranges.end(cx.ev.typ)?;
        if cx.ev.typ == EV_STW_END {
            // The end names its reason like its begin does.
            cx.ev.args[0] = desc;
        }
        self.push(cx.event(cx.cur));
        Ok(Some(cx.cur))
    }

    /// The mark phase; its sequence numbers order a begin and an end that
    /// happen on different threads.
    pub(crate) fn gc_active(&mut self, cx: &mut Ctx<'_>) -> Advanced {
        let seq = cx.ev.args[0];
        if cx.gen_num == self.initial_gen {
            if self.gc_state != GcState::Undetermined {
                return Err("GCActive in the first generation isn't first GC event".into());
            }
            self.gc_seq = seq;
            self.gc_state = GcState::Running;
            self.push(cx.event(cx.cur));
            return Ok(Some(cx.cur));
        }
        if seq != self.gc_seq.wrapping_add(1) {
            return Ok(None);
        }
        if self.gc_state != GcState::Running {
            return Err("encountered GCActive while GC was not in progress".into());
        }
        self.gc_seq = seq;
        validate_ctx(cx.cur, USER_GO)?;
        self.push(cx.event(cx.cur));
        Ok(Some(cx.cur))
    }

    pub(crate) fn gc_begin(&mut self, cx: &mut Ctx<'_>) -> Advanced {
        let seq = cx.ev.args[0];
        if self.gc_state == GcState::Undetermined {
            self.gc_seq = seq;
            self.gc_state = GcState::Running;
            self.push(cx.event(cx.cur));
            return Ok(Some(cx.cur));
        }
        if seq != self.gc_seq.wrapping_add(1) {
            return Ok(None);
        }
        if self.gc_state == GcState::Running {
            return Err("encountered GCBegin while GC was already in progress".into());
        }
        self.gc_seq = seq;
        self.gc_state = GcState::Running;
        validate_ctx(cx.cur, USER_GO)?;
        self.push(cx.event(cx.cur));
        Ok(Some(cx.cur))
    }

    pub(crate) fn gc_end(&mut self, cx: &mut Ctx<'_>) -> Advanced {
        let seq = cx.ev.args[0];
        if seq != self.gc_seq.wrapping_add(1) {
            return Ok(None);
        }
        match self.gc_state {
            GcState::NotRunning => return Err("encountered GCEnd when GC was not in progress".into()),
            GcState::Undetermined => {
                return Err("encountered GCEnd when GC was in an undetermined state".into())
            }
            GcState::Running => {}
        }
        self.gc_seq = seq;
        self.gc_state = GcState::NotRunning;
        validate_ctx(cx.cur, USER_GO)?;
        self.push(cx.event(cx.cur));
        Ok(Some(cx.cur))
    }

    /// Sweeping is bound to a P and needs no goroutine.
    pub(crate) fn gc_sweep_begin(&mut self, cx: &mut Ctx<'_>) -> Advanced {
        validate_ctx(cx.cur, p_reqs())?;
        let Some(p) = self.p.get_mut(&cx.cur.p) else {
            return Err(format!(
                "uninitialized proc {} found during {}",
                cx.cur.p,
                cx.name()
            ));
        };
        p.ranges.begin(RangeType::new(cx.ev.typ, 0))?;
        self.push(cx.event(cx.cur));
        Ok(Some(cx.cur))
    }

    pub(crate) fn gc_sweep_active(&mut self, cx: &mut Ctx<'_>) -> Advanced {
        let pid = cx.ev.args[0] as i64;
        let initial = cx.gen_num == self.initial_gen;
        let Some(p) = self.p.get_mut(&pid) else {
            return Err(format!("encountered GCSweepActive for unknown proc {pid}"));
        };
        p.ranges.active(RangeType::new(cx.ev.typ, 0), initial)?;
        self.push(cx.event(cx.cur));
        Ok(Some(cx.cur))
    }

    pub(crate) fn gc_sweep_end(&mut self, cx: &mut Ctx<'_>) -> Advanced {
        validate_ctx(cx.cur, p_reqs())?;
        let Some(p) = self.p.get_mut(&cx.cur.p) else {
            return Err(format!(
                "uninitialized proc {} found during {}",
                cx.cur.p,
                cx.name()
            ));
        };
        p.ranges.end(cx.ev.typ)?;
        self.push(cx.event(cx.cur));
        Ok(Some(cx.cur))
    }

    /// Tasks need no begin to be referred to and may end many times; only a
    /// second begin of an active id is wrong.
    pub(crate) fn user_task_begin(&mut self, cx: &mut Ctx<'_>) -> Advanced {
        let id = cx.ev.args[0];
        if self.tasks.contains_key(&id) {
            return Err(format!("task ID conflict: {id}"));
        }
        // A parent of 0 means none here, not the background task.
        let mut parent = cx.ev.args[1];
        if parent == 0 {
            parent = NO_TASK;
            cx.ev.args[1] = NO_TASK;
        }
        let name_id = cx.ev.args[2];
        let Some(name) = cx.gen.strings.get(name_id) else {
            return Err(format!("invalid string ID {name_id} for {} event", cx.ev.typ));
        };
        self.tasks.insert(
            id,
            TaskState {
                name: name.into(),
                parent,
            },
        );
        validate_ctx(cx.cur, USER_GO)?;
        self.push(cx.event(cx.cur));
        Ok(Some(cx.cur))
    }

    pub(crate) fn user_task_end(&mut self, cx: &mut Ctx<'_>) -> Advanced {
        let id = cx.ev.args[0];
        let x = BaseEvent::extra_index(cx.ev.typ);
        // The name may come from an earlier generation's table: it goes into
        // this generation's extra strings.
        match self.tasks.remove(&id) {
            Some(task) => {
                cx.ev.args[x] = task.parent;
                cx.ev.args[x + 1] = cx.gen.add_extra_string(&task.name);
            }
            None => {
                cx.ev.args[x] = NO_TASK;
                cx.ev.args[x + 1] = 0;
            }
        }
        validate_ctx(cx.cur, USER_GO)?;
        self.push(cx.event(cx.cur));
        Ok(Some(cx.cur))
    }

    pub(crate) fn user_region_begin(&mut self, cx: &mut Ctx<'_>) -> Advanced {
        validate_ctx(cx.cur, USER_GO)?;
        let region = self.region(cx)?;
        let g = cx.cur.g;
        let Some(state) = self.g.get_mut(&g) else {
            return Err(format!(
                "encountered EvUserRegionBegin without known state for current goroutine {g}"
            ));
        };
        state.regions.push(region);
        self.push(cx.event(cx.cur));
        Ok(Some(cx.cur))
    }

    pub(crate) fn user_region_end(&mut self, cx: &mut Ctx<'_>) -> Advanced {
        validate_ctx(cx.cur, USER_GO)?;
        let region = self.region(cx)?;
        let g = cx.cur.g;
        let Some(state) = self.g.get_mut(&g) else {
            return Err(format!(
                "encountered EvUserRegionEnd without known state for current goroutine {g}"
            ));
        };
        // Regions begun before the trace started are not known: their end
        // is fine.
        if let Some(open) = state.regions.last() {
            if *open != region {
                return Err(format!(
                    "misuse of region in goroutine {g}: region end {:?} when the inner-most active region start event is {:?}",
                    String::from_utf8_lossy(&region.name),
                    String::from_utf8_lossy(&open.name)
                ));
            }
            state.regions.pop();
        }
        self.push(cx.event(cx.cur));
        Ok(Some(cx.cur))
    }

    fn region(&self, cx: &Ctx<'_>) -> Result<UserRegion, String> {
        let name_id = cx.ev.args[1];
        match cx.gen.strings.get(name_id) {
            Some(name) => Ok(UserRegion {
                task: cx.ev.args[0],
                name: name.into(),
            }),
            None => Err(format!("invalid string ID {name_id} for {} event", cx.ev.typ)),
        }
    }
}
