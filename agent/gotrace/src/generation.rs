//! One generation of a trace: every batch it holds, kept raw, and what its
//! structural batches say (string and stack tables, CPU samples, clock
//! frequency and snapshot, experimental data). Built batch by batch as the
//! stream arrives, like Go's `processBatch`, and checked once whole, like
//! the end of Go's `readGeneration`.

use rustc_hash::FxHashMap;

use crate::frame::BatchHeader;
use crate::gosort::sort_func;
use crate::header::GoVersion;
use crate::sched::SchedCtx;
use crate::spec::*;
use crate::tables::{Stacks, Strings};

/// A problem in a generation's batches, at a stream offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GenError {
    pub(crate) offset: usize,
    pub(crate) what: String,
}

pub(crate) fn err(offset: usize, what: impl Into<String>) -> GenError {
    GenError {
        offset,
        what: what.into(),
    }
}

/// Go's `frequency.mul`: ticks to nanoseconds at `ns_per_tick`, through a
/// float64 product truncated as Go on amd64 truncates it.
#[inline]
pub(crate) fn ticks_to_ns(ns_per_tick: f64, ticks: u64) -> i64 {
    go_f64_to_i64(ticks as f64 * ns_per_tick)
}

/// [`ticks_to_ns`] for one clock frequency, with a shortcut for the usual
/// one: when `ns_per_tick` is a power of two (Go on Linux ticks every 64 ns)
/// and the ticks are below 2^53, the float product is exact, so a shift
/// gives the same bits without the float round trip on every event.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TickScale {
    ns_per_tick: f64,
    shift: u32,
    /// Ticks below this take the shift; 0 when the scale has no shortcut.
    limit: u64,
}

impl TickScale {
    pub(crate) fn new(ns_per_tick: f64) -> TickScale {
        let mut scale = TickScale {
            ns_per_tick,
            shift: 0,
            limit: 0,
        };
        // An exact power of two 2^k, 0 <= k <= 52: ticks < 2^53 convert to
        // f64 exactly, the product by 2^k is exact, and below 2^63 it
        // converts back exactly.
        if ns_per_tick >= 1.0 && ns_per_tick <= (1u64 << 52) as f64 {
            let k = (ns_per_tick as u64).trailing_zeros();
            if (1u64 << k) as f64 == ns_per_tick {
                scale.shift = k;
                scale.limit = (1u64 << 53).min(1u64 << (63 - k));
            }
        }
        scale
    }

    #[inline(always)]
    pub(crate) fn to_ns(self, ticks: u64) -> i64 {
        if ticks < self.limit {
            (ticks << self.shift) as i64
        } else {
            ticks_to_ns(self.ns_per_tick, ticks)
        }
    }
}

/// Go's float64 to int64 conversion on amd64 (CVTTSD2SQ): truncation toward
/// zero, and the "integer indefinite" value for NaN and out-of-range values.
#[inline]
pub(crate) fn go_f64_to_i64(x: f64) -> i64 {
    const LIMIT: f64 = 9_223_372_036_854_775_808.0; // 2^63
    if x.is_nan() || !(-LIMIT..LIMIT).contains(&x) {
        i64::MIN
    } else {
        x as i64
    }
}

/// A batch of the generation, as it was on the wire.
#[derive(Debug, Clone, Copy)]
pub struct RawBatch<'g> {
    /// The thread that wrote it, `u64::MAX` (Go's `NoThread`) for none.
    pub m: u64,
    /// Its timestamp, in ticks.
    pub time: u64,
    /// The experiment of an experimental batch (wire type 49).
    pub experiment: Option<u8>,
    /// Its body, starting with the type byte of its first event.
    pub data: &'g [u8],
    /// Stream offset of the batch (its type byte).
    pub offset: usize,
}

#[derive(Debug, Clone, Copy)]
struct BatchSlot {
    header: BatchHeader,
    start: usize,
    len: usize,
}

/// One thread's event batches, in stream order.
#[derive(Debug, Clone)]
pub(crate) struct ThreadBatches {
    pub(crate) m: i64,
    pub(crate) batches: Vec<u32>,
}

/// A CPU profile sample, which Go's parser yields as an event.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuSample {
    pub(crate) ctx: SchedCtx,
    /// Ticks until the generation is whole, then nanoseconds.
    pub(crate) time: i64,
    pub(crate) ticks: u64,
    pub(crate) stack: u64,
    pub(crate) offset: usize,
}

/// The target's clocks at one instant (Go >= 1.25), Go's `ClockSnapshot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockReading {
    /// The trace clock, converted as every event time.
    pub trace_ns: i64,
    /// The trace clock, in ticks.
    pub ticks: u64,
    /// The monotonic clock, nanoseconds.
    pub mono_ns: u64,
    /// The wall clock as Go wrote it: seconds and nanoseconds since the
    /// Unix epoch (Go reads them as `time.Unix(int64(sec), int64(nsec))`).
    pub wall_sec: u64,
    pub wall_nsec: u64,
}

impl ClockReading {
    /// The wall clock in nanoseconds since the Unix epoch.
    pub fn wall_unix_ns(&self) -> i128 {
        i128::from(self.wall_sec as i64) * 1_000_000_000 + i128::from(self.wall_nsec as i64)
    }
}

/// An experimental batch: data of an experiment for the whole generation.
#[derive(Debug, Clone, Copy)]
pub struct ExperimentalBatch<'g> {
    /// The experiment id (1 is `AllocFree`).
    pub experiment: u8,
    /// The thread that wrote it, as Go's `ThreadID`.
    pub thread: i64,
    pub data: &'g [u8],
}

/// One generation: its batches and tables. Events refer to it for their
/// strings and stacks; [`crate::Event::generation`] reaches it.
#[derive(Debug, Clone)]
pub struct Generation {
    pub(crate) version: GoVersion,
    pub(crate) number: u64,
    /// The bodies of every batch, back to back.
    data: Vec<u8>,
    slots: Vec<BatchSlot>,
    pub(crate) threads: Vec<ThreadBatches>,
    thread_index: FxHashMap<i64, usize>,
    pub(crate) min_ts: u64,
    /// Nanoseconds per tick (Go's `frequency`); 0 until the generation's
    /// frequency event is read.
    pub(crate) ns_per_tick: f64,
    pub(crate) ticks_per_second: u64,
    pub(crate) clock: Option<ClockReading>,
    pub(crate) strings: Strings,
    pub(crate) stacks: Stacks,
    pub(crate) cpu_samples: Vec<CpuSample>,
    experimental: Vec<usize>,
    /// Go's "extra strings": names of tasks that began in an earlier
    /// generation, for the task end events of this one (id 0 is "").
    extra_strings: Vec<Box<[u8]>>,
    extra_ids: FxHashMap<Box<[u8]>, u64>,
    end_offset: usize,
}

impl Generation {
    pub(crate) fn new(version: GoVersion) -> Self {
        Generation {
            version,
            number: 0,
            data: Vec::new(),
            slots: Vec::new(),
            threads: Vec::new(),
            thread_index: FxHashMap::default(),
            min_ts: 0,
            ns_per_tick: 0.0,
            ticks_per_second: 0,
            clock: None,
            strings: Strings::new(),
            stacks: Stacks::new(),
            cpu_samples: Vec::new(),
            experimental: Vec::new(),
            extra_strings: Vec::new(),
            extra_ids: FxHashMap::default(),
            end_offset: 0,
        }
    }

    /// Empties the generation for the next one, keeping its allocations.
    pub(crate) fn clear(&mut self) {
        self.number = 0;
        self.data.clear();
        self.slots.clear();
        self.threads.clear();
        self.thread_index.clear();
        self.min_ts = 0;
        self.ns_per_tick = 0.0;
        self.ticks_per_second = 0;
        self.clock = None;
        self.strings.clear();
        self.stacks.clear();
        self.cpu_samples.clear();
        self.experimental.clear();
        self.extra_strings.clear();
        self.extra_ids.clear();
        self.end_offset = 0;
    }

    /// The generation number the runtime gave it.
    pub fn number(&self) -> u64 {
        self.number
    }

    /// The trace clock's ticks per second.
    pub fn ticks_per_second(&self) -> u64 {
        self.ticks_per_second
    }

    /// The smallest batch timestamp (ticks): Go dates the generation's
    /// Sync event there.
    pub fn min_ticks(&self) -> u64 {
        self.min_ts
    }

    /// Converts ticks of this generation to nanoseconds as Go's parser does.
    pub fn ticks_to_ns(&self, ticks: u64) -> i64 {
        ticks_to_ns(self.ns_per_tick, ticks)
    }

    /// The clock snapshot of its sync batch (Go >= 1.25).
    pub fn clock_snapshot(&self) -> Option<ClockReading> {
        self.clock
    }

    /// Every batch of the generation in stream order, raw: what a writer
    /// needs to re-encode it (under another generation number, say).
    pub fn batches(&self) -> impl Iterator<Item = RawBatch<'_>> + '_ {
        self.slots.iter().map(move |s| self.raw(s))
    }

    fn raw(&self, s: &BatchSlot) -> RawBatch<'_> {
        RawBatch {
            m: s.header.m,
            time: s.header.ts,
            experiment: s.header.exp,
            data: self.data.get(s.start..s.start + s.len).unwrap_or(&[]),
            offset: s.header.offset,
        }
    }

    /// Where an event batch (by index, see [`ThreadBatches`]) lies in
    /// [`Generation::data`]: start, length, timestamp, stream offset.
    #[inline]
    pub(crate) fn event_batch(&self, i: u32) -> (usize, usize, u64, usize) {
        match self.slots.get(i as usize) {
            Some(s) => (s.start, s.len, s.header.ts, s.header.body_offset),
            None => (0, 0, 0, 0),
        }
    }

    /// The bodies of every batch, back to back.
    #[inline]
    pub(crate) fn data(&self) -> &[u8] {
        &self.data
    }

    /// The experimental batches, in stream order.
    pub fn experimental_batches(&self) -> impl Iterator<Item = ExperimentalBatch<'_>> + '_ {
        self.experimental.iter().filter_map(move |&i| {
            let s = self.slots.get(i)?;
            Some(ExperimentalBatch {
                experiment: s.header.exp.unwrap_or(0),
                thread: s.header.m as i64,
                data: self.data.get(s.start..s.start + s.len)?,
            })
        })
    }

    /// The string with this id (id 0 is the empty string).
    pub fn string(&self, id: u64) -> Option<&[u8]> {
        self.strings.get(id)
    }

    /// The PCs of the stack with this id, innermost first (id 0: none).
    pub fn stack_pcs(&self, id: u64) -> Option<&[u64]> {
        self.stacks.pcs(id)
    }

    /// Function name, file and line of a PC that one of the generation's
    /// stacks holds.
    pub fn frame(&self, pc: u64) -> Option<(&[u8], &[u8], u64)> {
        let f = self.stacks.frame(pc)?;
        Some((self.strings.get(f.func)?, self.strings.get(f.file)?, f.line))
    }

    /// Stream offset just past the generation (its end marker, or the last
    /// batch before the next generation).
    pub fn end_offset(&self) -> usize {
        self.end_offset
    }

    /// Bytes of batches held.
    pub(crate) fn held(&self) -> usize {
        self.data.len()
    }

    /// Whether the generation holds any thread's event batch (Go's
    /// `len(g.batches) != 0`).
    pub(crate) fn has_event_batches(&self) -> bool {
        !self.threads.is_empty()
    }

    /// Go's `addExtraString`.
    pub(crate) fn add_extra_string(&mut self, s: &[u8]) -> u64 {
        if s.is_empty() {
            return 0;
        }
        if let Some(&id) = self.extra_ids.get(s) {
            return id;
        }
        self.extra_strings.push(s.into());
        let id = self.extra_strings.len() as u64;
        self.extra_ids.insert(s.into(), id);
        id
    }

    pub(crate) fn extra_string(&self, id: u64) -> &[u8] {
        match id
            .checked_sub(1)
            .and_then(|i| self.extra_strings.get(usize::try_from(i).ok()?))
        {
            Some(s) => s,
            None => &[],
        }
    }

    /// Adds one batch: Go's `processBatch`, after the minimum timestamp
    /// update `readGeneration` does for every batch.
    pub(crate) fn add(&mut self, header: BatchHeader, body: &[u8]) -> Result<(), GenError> {
        if self.min_ts == 0 || header.ts < self.min_ts {
            self.min_ts = header.ts;
        }
        let index = self.slots.len();
        self.slots.push(BatchSlot {
            header,
            start: self.data.len(),
            len: body.len(),
        });
        self.data.extend_from_slice(body);
        let exp = header.exp.unwrap_or(0);
        let first = if exp == 0 { body.first().copied() } else { None };
        let at = header.body_offset;
        match first {
            Some(EV_STRINGS) => self.add_strings(body, at),
            Some(EV_STACKS) => self.add_stacks(body, at),
            Some(EV_CPU_SAMPLES) => self.add_cpu_samples(body, at),
            Some(EV_FREQUENCY) if self.version < GoVersion(25) => self.set_sync(header.ts, body, 0, at),
            Some(EV_SYNC) if self.version >= GoVersion(25) => self.set_sync(header.ts, body, 1, at),
            _ if exp != 0 => {
                self.experimental.push(index);
                Ok(())
            }
            Some(EV_END_OF_GENERATION) => Err(err(
                header.offset,
                "internal error: unexpectedly processing EndOfGeneration; broken trace?",
            )),
            _ => {
                let m = header.m as i64;
                let k = *self.thread_index.entry(m).or_insert_with(|| {
                    self.threads.push(ThreadBatches {
                        m,
                        batches: Vec::new(),
                    });
                    self.threads.len() - 1
                });
                // Batches hold at most 64 KiB, so their count fits a u32
                // long before memory runs out.
                self.threads[k].batches.push(index as u32);
                Ok(())
            }
        }
    }

    /// Checks the whole generation as Go does before using it, and dates
    /// its CPU samples. `end` is the stream offset where it ended.
    pub(crate) fn finish(&mut self, end: usize) -> Result<(), GenError> {
        self.end_offset = end;
        if self.ns_per_tick == 0.0 {
            return Err(err(end, "no frequency event found"));
        }
        match &mut self.clock {
            Some(c) => c.trace_ns = ticks_to_ns(self.ns_per_tick, c.ticks),
            None if self.version >= GoVersion(25) => return Err(err(end, "no clock snapshot event found")),
            None => {}
        }
        self.strings.compact();
        self.stacks.compact();
        for (id, pcs) in self.stacks.iter() {
            for &pc in pcs {
                let Some(frame) = self.stacks.frame(pc) else {
                    return Err(err(end, format!("found unknown pc {pc:x} for stack {id}")));
                };
                if self.strings.get(frame.func).is_none() {
                    return Err(err(
                        end,
                        format!("found invalid func string ID {} for stack {id}", frame.func),
                    ));
                }
                if self.strings.get(frame.file).is_none() {
                    return Err(err(
                        end,
                        format!("found invalid file string ID {} for stack {id}", frame.file),
                    ));
                }
            }
        }
        for s in &mut self.cpu_samples {
            s.time = ticks_to_ns(self.ns_per_tick, s.ticks);
        }
        sort_func(&mut self.cpu_samples, |a, b| a.time < b.time);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_scales_convert_as_the_float_product_does() {
        let ticks = [
            0,
            1,
            63,
            1 << 40,
            (1 << 53) - 1,
            1 << 53,
            (1 << 53) + 1,
            (1 << 57) - 1,
            1 << 57,
            u64::MAX >> 1,
            u64::MAX,
        ];
        for ns_per_tick in [
            0.0,
            1.0,
            2.0,
            64.0,
            1e9 / 15_625_000.0,
            1.0 / 0.015625,
            0.5,
            3.0,
            1e3,
            2f64.powi(52),
            f64::NAN,
        ] {
            let scale = TickScale::new(ns_per_tick);
            for t in ticks.into_iter().chain(ticks.map(|t| t.wrapping_add(12_345))) {
                assert_eq!(
                    scale.to_ns(t),
                    ticks_to_ns(ns_per_tick, t),
                    "{t} ticks at {ns_per_tick} ns"
                );
            }
        }
        assert_eq!(TickScale::new(64.0).shift, 6);
    }

    fn header(ts: u64) -> BatchHeader {
        BatchHeader {
            gen: 1,
            m: u64::MAX,
            ts,
            exp: None,
            offset: 100,
            body_offset: 110,
        }
    }

    #[test]
    fn go_converts_out_of_range_floats_to_the_integer_indefinite() {
        assert_eq!(go_f64_to_i64(f64::NAN), i64::MIN);
        assert_eq!(go_f64_to_i64(f64::INFINITY), i64::MIN);
        assert_eq!(go_f64_to_i64(9.3e18), i64::MIN);
        assert_eq!(go_f64_to_i64(-9.3e18), i64::MIN);
        assert_eq!(go_f64_to_i64(-1.9), -1);
        assert_eq!(ticks_to_ns(64.0, 3), 192);
    }

    #[test]
    fn structural_batches_fill_the_tables() {
        let mut g = Generation::new(GoVersion(26));
        g.add(
            header(50),
            &[EV_STRINGS, EV_STRING, 1, 2, b'h', b'i', EV_STRING, 2, 0],
        )
        .expect("strings");
        g.add(header(40), &[EV_STACKS, EV_STACK, 7, 1, 0x90, 0x01, 1, 2, 42])
            .expect("stacks");
        g.add(
            header(45),
            &[
                EV_SYNC,
                EV_FREQUENCY,
                0x80,
                0xad,
                0xe2,
                0x04,
                EV_CLOCK_SNAPSHOT,
                5,
                1,
                2,
                3,
            ],
        )
        .expect("sync");
        g.finish(200).expect("valid");
        assert_eq!(g.min_ticks(), 40);
        assert_eq!(g.string(1), Some(&b"hi"[..]));
        assert_eq!(g.string(2), Some(&b""[..]));
        assert_eq!(g.stack_pcs(7), Some(&[0x90][..]));
        assert_eq!(g.frame(0x90), Some((&b"hi"[..], &b""[..], 42)));
        assert_eq!(g.ticks_per_second(), 10_000_000);
        let clock = g.clock_snapshot().expect("clock");
        assert_eq!((clock.ticks, clock.trace_ns, clock.mono_ns), (50, 5000, 1));
        assert_eq!(g.batches().count(), 3);
    }

    #[test]
    fn broken_tables_are_errors_at_their_offset() {
        let cases: [(&[u8], usize, &str); 5] = [
            (&[EV_STRINGS, EV_STACK, 1], 111, "expected string event, got 3"),
            (
                &[EV_STRINGS, EV_STRING, 1, 5, b'a'],
                111,
                "failed to read full string: read 1 but wanted 5",
            ),
            (
                &[EV_STRINGS, EV_STRING, 0, 0],
                111,
                "multiple strings with the same ID: id=0",
            ),
            (
                &[EV_STACKS, EV_STACK, 1, 0x81, 0x01],
                111,
                "invalid stack size 129",
            ),
            (
                &[EV_STACKS, EV_STACK, 1, 1, 5, 0x80],
                115,
                "reading frame 1's funcID for stack 1: unexpected EOF",
            ),
        ];
        for (body, offset, what) in cases {
            let mut g = Generation::new(GoVersion(26));
            let e = g.add(header(1), body).expect_err("broken");
            assert_eq!(e.offset, offset, "{body:?}");
            assert!(e.what.contains(what), "{}", e.what);
        }
        let mut g = Generation::new(GoVersion(26));
        g.add(header(1), &[EV_STACKS, EV_STACK, 1, 1, 5, 9, 1, 1])
            .expect("stack");
        g.add(
            header(1),
            &[EV_SYNC, EV_FREQUENCY, 1, EV_CLOCK_SNAPSHOT, 0, 0, 0, 0],
        )
        .expect("sync");
        let e = g.finish(300).expect_err("func string 9 is missing");
        assert_eq!(
            (e.offset, e.what.as_str()),
            (300, "found invalid func string ID 9 for stack 1")
        );
        let mut g = Generation::new(GoVersion(25));
        g.add(header(1), &[EV_SYNC, EV_FREQUENCY, 1]).expect("sync");
        assert_eq!(
            g.finish(9).expect_err("no clock").what,
            "no clock snapshot event found"
        );
        // Before Go 1.25 a sync batch is a bare frequency event, and a clock
        // snapshot is not allowed in it.
        let mut g = Generation::new(GoVersion(22));
        g.add(header(1), &[EV_FREQUENCY, 1]).expect("frequency");
        g.finish(9).expect("valid");
        let mut g = Generation::new(GoVersion(23));
        let e = g
            .add(header(1), &[EV_FREQUENCY, 1, EV_CLOCK_SNAPSHOT])
            .expect_err("no snapshots");
        assert_eq!(e.what, "expected frequency or clock snapshot event, got 51");
    }
}
