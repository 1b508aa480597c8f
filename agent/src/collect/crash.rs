//! Tells a crash from a cut stream: a trace stream cut mid-window, then a target that refuses connections or answers as a new process.
//!
//! A cut alone proves nothing (a proxy restarts, a network blips), so a cut
//! is held until the next attempt judges it. A process that stops
//! gracefully finishes the window in flight before its port closes, so it
//! cuts nothing; one that dies leaves the cut. Generation numbers keep
//! rising across the traces of one process and start again in a new one, so
//! a window whose first generation is not above the cut window's last came
//! from a restarted process.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

/// A target's death, as its collector saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Crash {
    pub target: Arc<str>,
    /// When the stream was cut (agent clock): the death, give or take the
    /// network between the two.
    pub seen_at: SystemTime,
    /// How far into its window the stream was cut, and the window asked for.
    pub into_window: Duration,
    pub window: Duration,
    /// Trace bytes received before the cut.
    pub bytes: u64,
    /// The error that cut the stream.
    pub cut: String,
    /// The last window recorded before the death: a bundle of the death holds
    /// this window and the ones before it, nothing newer.
    pub last_seq: u64,
    pub then: Then,
}

/// What showed that the cut was a death.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Then {
    /// Nothing listens on the target's port any more (refused, or reset
    /// while connecting): the error.
    Refused(String),
    /// The target answered again, but its trace's generation numbers began
    /// anew: another process.
    NewProcess { last_gen: u64, first_gen: u64 },
}

impl Then {
    pub fn label(&self) -> &'static str {
        match self {
            Then::Refused(_) => "refused",
            Then::NewProcess { .. } => "new_process",
        }
    }
}

impl Crash {
    /// What was seen, in words: "stream cut 1.4 s into a 2 s window, then
    /// connection refused".
    pub fn seen(&self) -> String {
        let cut = if self.bytes == 0 {
            format!(
                "connection lost {} into a {} window, before any trace byte",
                say(self.into_window),
                say(self.window)
            )
        } else {
            format!(
                "stream cut {} into a {} window",
                say(self.into_window),
                say(self.window)
            )
        };
        match &self.then {
            // A dying process's listening socket resets the connections
            // still queued on it; once it is gone, connections are refused.
            Then::Refused(e) if e.contains("reset") => {
                format!("{cut}, then the connection was reset while connecting (its port was closing)")
            }
            Then::Refused(_) => format!("{cut}, then connection refused"),
            Then::NewProcess { last_gen, first_gen } => format!(
                "{cut}, then the target answered as a new process (its trace began at generation {first_gen}, not after {last_gen})"
            ),
        }
    }

    /// The facts, for the manifest's `trigger.details`.
    pub fn details(&self) -> Value {
        let mut d = json!({
            "seen": self.seen(),
            "cut_at": crate::units::rfc3339(self.seen_at),
            "cut_after_seconds": self.into_window.as_secs_f64(),
            "window_seconds": self.window.as_secs_f64(),
            "bytes_before_cut": self.bytes,
            "cut": self.cut,
            "then": self.then.label(),
            "last_seq": self.last_seq,
        });
        match &self.then {
            Then::Refused(e) => d["refused"] = json!(e),
            Then::NewProcess { last_gen, first_gen } => {
                d["last_generation"] = json!(last_gen);
                d["next_first_generation"] = json!(first_gen);
            }
        }
        d
    }
}

/// Seconds for people: "2 s", "1.4 s", "0.032 s".
fn say(d: Duration) -> String {
    let s = d.as_secs_f64();
    if d.subsec_nanos() == 0 {
        format!("{} s", d.as_secs())
    } else if s < 0.1 {
        format!("{s:.3} s")
    } else {
        format!("{s:.1} s")
    }
}

/// A stream cut mid-window, not yet judged.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Cut {
    pub(super) seen_at: SystemTime,
    pub(super) into_window: Duration,
    pub(super) window: Duration,
    pub(super) bytes: u64,
    pub(super) why: String,
    pub(super) last_seq: u64,
}

/// What the next attempt made of a cut.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Verdict {
    /// No cut was waiting.
    Nothing,
    Crash(Box<Crash>),
    /// The same process answered next: the connection broke, the target
    /// lived.
    Survived {
        cut: Cut,
        last_gen: u64,
        first_gen: u64,
    },
    /// Cannot tell: the cut is older than the ring keeps (its bundle would
    /// hold nothing of the death), or the trace carries no generation
    /// numbers (Go <= 1.21), or another cut came first.
    Unjudged {
        cut: Cut,
        why: &'static str,
    },
}

/// One collector's memory of its target between attempts.
#[derive(Debug, Default)]
pub(super) struct Watch {
    /// The highest generation the target's trace has reached.
    last_gen: Option<u64>,
    /// A cut waiting for the next attempt, with the generation it reached.
    pending: Option<(Cut, Option<u64>)>,
}

impl Watch {
    /// A window arrived with generations `gens`, cut if `cut` is set. Judges
    /// a cut waiting before it, then holds this one's.
    pub(super) fn window(
        &mut self,
        target: &Arc<str>,
        gens: Option<(u64, u64)>,
        cut: Option<Cut>,
        keep_for: Duration,
    ) -> Verdict {
        let verdict = match (self.take(keep_for), gens) {
            (None, _) => Verdict::Nothing,
            (Some(Err(cut)), _) => too_late(cut),
            (Some(Ok((cut, Some(last_gen)))), Some((first_gen, _))) if first_gen <= last_gen => {
                died(target, cut, Then::NewProcess { last_gen, first_gen })
            }
            (Some(Ok((cut, Some(last_gen)))), Some((first_gen, _))) => Verdict::Survived {
                cut,
                last_gen,
                first_gen,
            },
            (Some(Ok((cut, _))), _) => Verdict::Unjudged {
                cut,
                why: "the next window carried no generation numbers (Go <= 1.21, or not one whole batch)",
            },
        };
        if let Some((_, hi)) = gens {
            self.last_gen = Some(hi);
        }
        if let Some(c) = cut {
            self.pending = Some((c, self.last_gen));
        }
        verdict
    }

    /// The target refused a connection: a cut waiting was a death.
    pub(super) fn refused(&mut self, target: &Arc<str>, error: String, keep_for: Duration) -> Verdict {
        match self.take(keep_for) {
            None => Verdict::Nothing,
            Some(Err(cut)) => too_late(cut),
            Some(Ok((cut, _))) => died(target, cut, Then::Refused(error)),
        }
    }

    /// The connection was lost before any byte of the window: a cut of its
    /// own. One already waiting is left unjudged: something accepted the
    /// connection, but whether the same process is unknown.
    pub(super) fn lost(&mut self, cut: Cut) -> Verdict {
        let earlier = self.pending.take().map(|(cut, _)| Verdict::Unjudged {
            cut,
            why: "a second cut came before the first could be judged",
        });
        self.pending = Some((cut, self.last_gen));
        earlier.unwrap_or(Verdict::Nothing)
    }

    /// The cut waiting, with the generation it reached; `Err` when it is
    /// too old: the ring no longer holds the windows before it.
    fn take(&mut self, keep_for: Duration) -> Option<Result<(Cut, Option<u64>), Cut>> {
        let (cut, gen) = self.pending.take()?;
        let age = SystemTime::now().duration_since(cut.seen_at).unwrap_or_default();
        Some(if age > keep_for { Err(cut) } else { Ok((cut, gen)) })
    }
}

/// The cut was a death.
fn died(target: &Arc<str>, cut: Cut, then: Then) -> Verdict {
    Verdict::Crash(Box::new(Crash {
        target: target.clone(),
        seen_at: cut.seen_at,
        into_window: cut.into_window,
        window: cut.window,
        bytes: cut.bytes,
        cut: cut.why,
        last_seq: cut.last_seq,
        then,
    }))
}

fn too_late(cut: Cut) -> Verdict {
    Verdict::Unjudged {
        cut,
        why: "judged too late: the ring no longer holds the windows before the cut",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEEP: Duration = Duration::from_secs(60);

    fn cut(seq: u64, bytes: u64) -> Cut {
        Cut {
            seen_at: SystemTime::now(),
            into_window: Duration::from_millis(1400),
            window: Duration::from_secs(2),
            bytes,
            why: "error decoding response body".into(),
            last_seq: seq,
        }
    }

    #[test]
    fn a_cut_then_a_refused_connection_is_a_crash() {
        let t: Arc<str> = "a".into();
        let mut w = Watch::default();
        assert_eq!(w.window(&t, Some((2, 3)), None, KEEP), Verdict::Nothing);
        assert_eq!(
            w.window(&t, Some((4, 5)), Some(cut(2, 9000)), KEEP),
            Verdict::Nothing
        );
        let Verdict::Crash(c) = w.refused(&t, "Connection refused (os error 111)".into(), KEEP) else {
            panic!("not a crash");
        };
        assert_eq!(c.last_seq, 2);
        assert_eq!(c.then.label(), "refused");
        assert_eq!(
            c.seen(),
            "stream cut 1.4 s into a 2 s window, then connection refused"
        );
        assert_eq!(c.details()["refused"], "Connection refused (os error 111)");
        // Judged once: the next refusal is only a target still down.
        assert_eq!(w.refused(&t, "again".into(), KEEP), Verdict::Nothing);
    }

    #[test]
    fn refusals_and_windows_without_a_cut_are_no_crash() {
        let t: Arc<str> = "a".into();
        let mut w = Watch::default();
        // A graceful stop: the window in flight ends whole, then the port closes.
        assert_eq!(w.window(&t, Some((2, 3)), None, KEEP), Verdict::Nothing);
        assert_eq!(w.refused(&t, "refused".into(), KEEP), Verdict::Nothing);
        // A restarted process after a graceful stop starts its generations anew.
        assert_eq!(w.window(&t, Some((1, 2)), None, KEEP), Verdict::Nothing);
    }

    #[test]
    fn the_generation_numbers_tell_a_new_process_from_the_same_one() {
        let t: Arc<str> = "a".into();
        let mut w = Watch::default();
        w.window(&t, Some((2, 6)), Some(cut(1, 500)), KEEP);
        // The same process: its next trace goes on from generation 7.
        assert!(matches!(
            w.window(&t, Some((7, 8)), None, KEEP),
            Verdict::Survived {
                last_gen: 6,
                first_gen: 7,
                ..
            }
        ));
        w.window(&t, Some((9, 10)), Some(cut(3, 500)), KEEP);
        // Another process: it starts again low, even at the same number.
        let Verdict::Crash(c) = w.window(&t, Some((2, 2)), None, KEEP) else {
            panic!("not a crash");
        };
        assert_eq!(
            c.then,
            Then::NewProcess {
                last_gen: 10,
                first_gen: 2
            }
        );
        assert_eq!(c.last_seq, 3);
        assert!(c.seen().contains("new process"), "{}", c.seen());
        // Without generation numbers (Go <= 1.21) nothing can be told.
        w.window(&t, None, Some(cut(5, 500)), KEEP);
        assert!(matches!(w.window(&t, None, None, KEEP), Verdict::Unjudged { .. }));
    }

    #[test]
    fn a_connection_lost_before_any_byte_is_a_cut_and_an_old_cut_is_not_judged() {
        let t: Arc<str> = "a".into();
        let mut w = Watch::default();
        w.window(&t, Some((2, 3)), None, KEEP);
        assert_eq!(w.lost(cut(1, 0)), Verdict::Nothing);
        let Verdict::Crash(c) = w.refused(&t, "refused".into(), KEEP) else {
            panic!("not a crash");
        };
        assert!(c
            .seen()
            .starts_with("connection lost 1.4 s into a 2 s window, before any trace byte"));
        // Compared with the generation reached before the lost request.
        w.lost(cut(2, 0));
        assert!(matches!(
            w.window(&t, Some((4, 4)), None, KEEP),
            Verdict::Survived { last_gen: 3, .. }
        ));
        w.window(&t, Some((5, 5)), Some(cut(3, 10)), KEEP);
        assert!(matches!(
            w.refused(&t, "refused".into(), Duration::ZERO),
            Verdict::Unjudged { .. }
        ));
    }
}
