//! Reading one window into whole generations, one at a time, each held raw until the stitcher has written it.

use std::collections::VecDeque;
use std::io::{self, Read};

use crate::frame::{FrameError, Framer, Record};
use crate::header::{check_header, GoVersion, HEADER_LEN};
use crate::spec::{EV_CPU_SAMPLES, EV_FREQUENCY, EV_STACKS, EV_STRINGS, EV_SYNC};

/// How a batch of a generation is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// An M's timed events.
    Events,
    /// The string table.
    Strings,
    /// The stack table.
    Stacks,
    /// CPU profile samples.
    CpuSamples,
    /// The clock: frequency (and from Go 1.25 the clock snapshot).
    Sync,
    /// An experiment's data.
    Experimental(u8),
}

/// One batch of a generation, as read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Batch {
    pub(crate) role: Role,
    pub(crate) m: u64,
    pub(crate) ticks: u64,
    start: usize,
    len: usize,
}

/// One whole generation of a window, raw.
#[derive(Debug, Default)]
pub(crate) struct Gen {
    /// The number the runtime gave it.
    pub(crate) number: u64,
    pub(crate) batches: Vec<Batch>,
    data: Vec<u8>,
}

impl Gen {
    pub(crate) fn body(&self, b: &Batch) -> &[u8] {
        self.data.get(b.start..b.start + b.len).unwrap_or(&[])
    }

    /// Bytes of batch bodies held.
    pub(crate) fn held(&self) -> usize {
        self.data.len()
    }

    /// The smallest batch timestamp: where Go dates the generation.
    pub(crate) fn min_ticks(&self) -> u64 {
        self.batches.iter().map(|b| b.ticks).min().unwrap_or(0)
    }

    fn clear(&mut self) {
        self.number = 0;
        self.batches.clear();
        self.data.clear();
    }

    fn add(&mut self, version: GoVersion, m: u64, ticks: u64, exp: Option<u8>, body: &[u8]) {
        // Go's processBatch tells a batch's use by these, in this order.
        let role = match (exp, body.first().copied()) {
            (Some(e), _) if e != 0 => Role::Experimental(e),
            (_, Some(EV_STRINGS)) => Role::Strings,
            (_, Some(EV_STACKS)) => Role::Stacks,
            (_, Some(EV_CPU_SAMPLES)) => Role::CpuSamples,
            (_, Some(EV_FREQUENCY)) if version < GoVersion(25) => Role::Sync,
            (_, Some(EV_SYNC)) if version >= GoVersion(25) => Role::Sync,
            _ => Role::Events,
        };
        self.batches.push(Batch {
            role,
            m,
            ticks,
            start: self.data.len(),
            len: body.len(),
        });
        self.data.extend_from_slice(body);
    }
}

/// Why a window cannot be read as a v2 trace of whole generations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InputError {
    #[error(transparent)]
    Format(#[from] crate::FormatError),
    #[error("corrupt at byte {offset}: {what}")]
    Corrupt { offset: usize, what: String },
}

impl From<FrameError> for InputError {
    fn from(e: FrameError) -> Self {
        InputError::Corrupt {
            offset: e.offset,
            what: e.what,
        }
    }
}

/// What the reader found next.
pub(crate) enum Next {
    /// A whole generation, now in `current`; `last` when no batch follows
    /// it in the stream.
    Gen { last: bool },
    /// The window ends here.
    End,
}

/// Reads a window's bytes and hands out its generations one at a time.
pub(crate) struct WindowReader<R> {
    r: R,
    version: GoVersion,
    framer: Framer,
    /// The generation being filled from the stream.
    filling: Gen,
    /// Whole generations not yet handed out (several when they are small).
    ready: VecDeque<Gen>,
    spare: Vec<Gen>,
    /// The generation handed out by the last `next`.
    pub(crate) current: Gen,
    buf: Vec<u8>,
    eof: bool,
    /// Bytes of a generation cut by the end of the stream, dropped.
    pub(crate) dropped: usize,
    /// Bytes of the stream read.
    pub(crate) read: usize,
}

const CHUNK: usize = 256 << 10;

impl<R: Read> WindowReader<R> {
    /// Reads the header. `Ok(Err(_))` when the bytes are not a trace.
    pub(crate) fn open(mut r: R) -> io::Result<Result<Self, InputError>> {
        let mut head = [0u8; HEADER_LEN];
        let mut n = 0;
        while n < HEADER_LEN {
            let k = r.read(&mut head[n..])?;
            if k == 0 {
                break;
            }
            n += k;
        }
        let version = match check_header(&head[..n]) {
            Ok(v) => v,
            Err(e) => return Ok(Err(e.into())),
        };
        Ok(Ok(WindowReader {
            r,
            version,
            framer: Framer::new(HEADER_LEN),
            filling: Gen::default(),
            ready: VecDeque::new(),
            spare: Vec::new(),
            current: Gen::default(),
            buf: vec![0; CHUNK],
            eof: false,
            dropped: 0,
            read: HEADER_LEN,
        }))
    }

    pub(crate) fn version(&self) -> GoVersion {
        self.version
    }

    /// Bytes of trace held: generations read ahead and the current one.
    pub(crate) fn held(&self) -> usize {
        self.current.held()
            + self.filling.held()
            + self.ready.iter().map(Gen::held).sum::<usize>()
            + self.framer.pending()
    }

    /// Moves to the next whole generation, into `current`.
    pub(crate) fn next(&mut self) -> io::Result<Result<Next, InputError>> {
        loop {
            // A generation goes out once something is known to follow it,
            // or the stream ended.
            if !self.ready.is_empty() {
                let followed = self.ready.len() > 1 || self.filling.number != 0;
                if followed || self.eof {
                    if let Some(g) = self.ready.pop_front() {
                        let old = std::mem::replace(&mut self.current, g);
                        self.recycle(old);
                        return Ok(Ok(Next::Gen { last: !followed }));
                    }
                }
            }
            if self.eof {
                return Ok(Ok(Next::End));
            }
            let n = self.r.read(&mut self.buf)?;
            if n == 0 {
                self.eof = true;
                self.dropped += self.framer.pending();
                if self.filling.number != 0 {
                    if self.version.marks_generation_end() {
                        // No end marker: a generation cut short.
                        self.dropped += self.filling.held();
                        self.filling.clear();
                    } else {
                        self.complete();
                    }
                }
                continue;
            }
            self.read += n;
            if let Err(e) = self.take(n) {
                return Ok(Err(e));
            }
        }
    }

    fn recycle(&mut self, mut g: Gen) {
        g.clear();
        if self.spare.len() < 2 {
            self.spare.push(g);
        }
    }

    /// The generation being filled is whole.
    fn complete(&mut self) {
        let fresh = self.spare.pop().unwrap_or_default();
        let whole = std::mem::replace(&mut self.filling, fresh);
        self.ready.push_back(whole);
    }

    /// Frames the first `n` bytes of the buffer into generations.
    fn take(&mut self, n: usize) -> Result<(), InputError> {
        let mut bad = None;
        let mut buf = std::mem::take(&mut self.buf);
        let mut framer = std::mem::replace(&mut self.framer, Framer::new(0));
        let result = framer.push(&buf[..n], &mut |rec: Record<'_>| {
            let e = self.record(rec);
            if e.is_err() {
                bad = e.err();
                return Err(());
            }
            Ok(())
        });
        self.framer = framer;
        std::mem::swap(&mut self.buf, &mut buf);
        if let Some(e) = bad {
            return Err(e);
        }
        match result {
            Ok(Some(e)) => Err(e.into()),
            Ok(None) | Err(()) => Ok(()),
        }
    }

    /// One record: Go's readGeneration (Go 1.26) or readGenerationWithSpill
    /// (before), as far as telling generations apart goes.
    fn record(&mut self, rec: Record<'_>) -> Result<(), InputError> {
        let v = self.version;
        match rec {
            Record::EndOfGeneration { offset } => {
                if !v.marks_generation_end() || self.filling.number == 0 {
                    return Err(InputError::Corrupt {
                        offset,
                        what: "end of generation where none began".into(),
                    });
                }
                self.complete();
            }
            Record::Batch(h, body) => {
                if h.gen == 0 {
                    return Err(InputError::Corrupt {
                        offset: h.offset,
                        what: "invalid generation number 0".into(),
                    });
                }
                let filling = self.filling.number;
                if filling != 0 && h.gen != filling {
                    if v.marks_generation_end() {
                        return Err(InputError::Corrupt {
                            offset: h.offset,
                            what: "missing end-of-generation event, or generations are interleaved".into(),
                        });
                    }
                    if h.gen != filling.wrapping_add(1) {
                        return Err(InputError::Corrupt {
                            offset: h.offset,
                            what: "generations out of order".into(),
                        });
                    }
                    self.complete();
                }
                self.filling.number = h.gen;
                self.filling.add(v, h.m, h.ts, h.exp, body);
            }
        }
        Ok(())
    }
}
