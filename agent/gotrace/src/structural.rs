//! The structural batches of a generation, parsed as Go's `addStrings`,
//! `addStacks`, `addCPUSamples` and `setSyncBatch` parse them: the string
//! and stack tables, CPU samples, the clock frequency and snapshot.

use crate::generation::{err, ClockReading, CpuSample, GenError, Generation};
use crate::header::GoVersion;
use crate::sched::SchedCtx;
use crate::spec::*;
use crate::tables::FrameIds;

impl Generation {
    pub(crate) fn add_strings(&mut self, body: &[u8], at: usize) -> Result<(), GenError> {
        let mut r = ByteReader::new(body, at);
        r.pos = 1;
        while !r.done() {
            let start = r.offset();
            let ev = r.byte()?;
            if ev != EV_STRING {
                return Err(err(start, format!("expected string event, got {ev}")));
            }
            let id = r.uvarint()?;
            let len = r.uvarint()?;
            if len > MAX_STRING_LEN {
                return Err(err(
                    start,
                    format!("invalid string size {len}, maximum is {MAX_STRING_LEN}"),
                ));
            }
            let s = r.take(len as usize).map_err(|e| err(start, e.what))?;
            if self.strings.insert(id, s).is_err() {
                return Err(err(start, format!("multiple strings with the same ID: id={id}")));
            }
        }
        Ok(())
    }

    pub(crate) fn add_stacks(&mut self, body: &[u8], at: usize) -> Result<(), GenError> {
        let mut r = ByteReader::new(body, at);
        r.pos = 1;
        while !r.done() {
            let start = r.offset();
            let ev = r.byte()?;
            if ev != EV_STACK {
                return Err(err(start, format!("expected stack event, got {ev}")));
            }
            let id = r.uvarint()?;
            let n = r.uvarint()?;
            if n > MAX_FRAMES_PER_STACK {
                return Err(err(
                    start,
                    format!("invalid stack size {n}, maximum is {MAX_FRAMES_PER_STACK}"),
                ));
            }
            let first = self.stacks.start();
            for i in 1..=n {
                let mut field = |name: &str| {
                    r.uvarint().map_err(|e| {
                        err(
                            e.offset,
                            format!("reading frame {i}'s {name} for stack {id}: {}", e.what),
                        )
                    })
                };
                let pc = field("PC")?;
                let func = field("funcID")?;
                let file = field("fileID")?;
                let line = field("line")?;
                self.stacks.push_frame(pc, FrameIds { func, file, line });
            }
            if self.stacks.finish(id, first).is_err() {
                return Err(err(start, format!("multiple stacks with the same ID: id={id}")));
            }
        }
        Ok(())
    }

    pub(crate) fn add_cpu_samples(&mut self, body: &[u8], at: usize) -> Result<(), GenError> {
        let mut r = ByteReader::new(body, at);
        r.pos = 1;
        while !r.done() {
            let offset = r.offset();
            let ev = r.byte()?;
            if ev != EV_CPU_SAMPLE {
                return Err(err(offset, format!("expected CPU sample event, got {ev}")));
            }
            let ticks = r.uvarint()?;
            let m = r.uvarint()?;
            let p = r.uvarint()?;
            let g = r.uvarint()?;
            let stack = r.uvarint()?;
            self.cpu_samples.push(CpuSample {
                ctx: SchedCtx {
                    g: if g == 0 { -1 } else { g as i64 },
                    p: p as i64,
                    m: m as i64,
                },
                time: 0,
                ticks,
                stack,
                offset,
            });
        }
        Ok(())
    }

    /// Go's `setSyncBatch`; from Go 1.25 the batch starts with a Sync byte.
    pub(crate) fn set_sync(
        &mut self,
        batch_ts: u64,
        body: &[u8],
        skip: usize,
        at: usize,
    ) -> Result<(), GenError> {
        let mut r = ByteReader::new(body, at);
        r.pos = skip;
        let mut last_ts = batch_ts;
        while !r.done() {
            let start = r.offset();
            let ev = r.byte()?;
            match ev {
                EV_FREQUENCY => {
                    if self.ns_per_tick != 0.0 {
                        return Err(err(start, "found multiple frequency events"));
                    }
                    let f = r.uvarint()?;
                    self.ticks_per_second = f;
                    self.ns_per_tick = 1.0 / (f as f64 / 1e9);
                }
                EV_CLOCK_SNAPSHOT if self.version >= GoVersion(25) => {
                    if self.clock.is_some() {
                        return Err(err(start, "found multiple clock snapshot events"));
                    }
                    last_ts = last_ts.wrapping_add(r.uvarint()?);
                    let mono_ns = r.uvarint()?;
                    let wall_sec = r.uvarint()?;
                    let wall_nsec = r.uvarint()?;
                    self.clock = Some(ClockReading {
                        trace_ns: 0,
                        ticks: last_ts,
                        mono_ns,
                        wall_sec,
                        wall_nsec,
                    });
                }
                other => {
                    return Err(err(
                        start,
                        format!("expected frequency or clock snapshot event, got {other}"),
                    ))
                }
            }
        }
        Ok(())
    }
}

/// Reads a structural batch the way Go's `bytes.Reader` plus
/// `binary.ReadUvarint` do, with errors at stream offsets.
struct ByteReader<'a> {
    data: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> ByteReader<'a> {
    fn new(data: &'a [u8], base: usize) -> Self {
        ByteReader { data, pos: 0, base }
    }

    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn offset(&self) -> usize {
        self.base + self.pos
    }

    fn byte(&mut self) -> Result<u8, GenError> {
        let b = *self.data.get(self.pos).ok_or_else(|| err(self.offset(), "EOF"))?;
        self.pos += 1;
        Ok(b)
    }

    fn uvarint(&mut self) -> Result<u64, GenError> {
        let start = self.offset();
        let mut x = 0u64;
        for i in 0..10 {
            let Some(&b) = self.data.get(self.pos) else {
                return Err(err(start, if i == 0 { "EOF" } else { "unexpected EOF" }));
            };
            self.pos += 1;
            if b < 0x80 {
                if i == 9 && b > 1 {
                    break;
                }
                return Ok(x | u64::from(b) << (7 * i));
            }
            x |= u64::from(b & 0x7f) << (7 * i);
        }
        Err(err(start, "binary: varint overflows a 64-bit integer"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], GenError> {
        let rest = self.data.get(self.pos..).unwrap_or(&[]);
        if rest.len() < n {
            let got = rest.len();
            return Err(err(
                self.offset(),
                format!("failed to read full string: read {got} but wanted {n}"),
            ));
        }
        self.pos += n;
        Ok(&rest[..n])
    }
}
