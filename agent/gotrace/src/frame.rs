//! Splits a v2 trace body, fed in chunks, into its records: batches and
//! (Go 1.26) end-of-generation markers, each with its stream offset. Only a
//! record that a chunk ends inside is copied, to be completed by the next.

use crate::spec::{EV_END_OF_GENERATION, EV_EVENT_BATCH, EV_EXPERIMENTAL_BATCH, MAX_BATCH_SIZE};
use crate::wire::{uvarint, Uvarint, MAX_HEADER_LEN};

/// A batch header as Go's `readBatch` reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchHeader {
    pub(crate) gen: u64,
    /// The thread that wrote the batch; `u64::MAX` for none.
    pub(crate) m: u64,
    /// Timestamp (ticks) of the batch, no later than its first event.
    pub(crate) ts: u64,
    /// The experiment byte of an experimental batch (type 49).
    pub(crate) exp: Option<u8>,
    /// Stream offset of the batch's type byte.
    pub(crate) offset: usize,
    /// Stream offset of the batch's body.
    pub(crate) body_offset: usize,
}

#[derive(Debug)]
pub(crate) enum Record<'a> {
    Batch(BatchHeader, &'a [u8]),
    /// Go 1.26's one-byte end-of-generation marker (any version's reader
    /// recognises the byte; only 1.26 may write it).
    EndOfGeneration {
        offset: usize,
    },
}

/// Bytes that cannot be a batch, and where they start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FrameError {
    pub(crate) offset: usize,
    pub(crate) what: String,
}

enum Parsed {
    /// The record's header and its total length.
    Record(Option<HeaderFields>, usize),
    /// The data ends inside the header.
    Short,
    Bad(String),
}

struct HeaderFields {
    gen: u64,
    m: u64,
    ts: u64,
    exp: Option<u8>,
    header_len: usize,
}

fn parse(buf: &[u8]) -> Parsed {
    let Some(&typ) = buf.first() else {
        return Parsed::Short;
    };
    let mut pos = match typ {
        EV_END_OF_GENERATION => return Parsed::Record(None, 1),
        EV_EVENT_BATCH => 1,
        EV_EXPERIMENTAL_BATCH => 2,
        other => return Parsed::Bad(format!("expected batch event, got event {other}")),
    };
    let exp = if typ == EV_EXPERIMENTAL_BATCH {
        match buf.get(1) {
            Some(&e) => Some(e),
            None => return Parsed::Short,
        }
    } else {
        None
    };
    let mut fields = [0u64; 4];
    for (slot, name) in fields.iter_mut().zip(["gen", "M ID", "timestamp", "size"]) {
        match uvarint(buf.get(pos..).unwrap_or(&[])) {
            Uvarint::Value(v, n) => {
                *slot = v;
                pos += n;
            }
            Uvarint::Short => return Parsed::Short,
            Uvarint::Overflow => {
                return Parsed::Bad(format!(
                    "error reading batch {name}: binary: varint overflows a 64-bit integer"
                ))
            }
        }
    }
    let [gen, m, ts, size] = fields;
    if size > MAX_BATCH_SIZE {
        return Parsed::Bad(format!("invalid batch size {size}, maximum is {MAX_BATCH_SIZE}"));
    }
    // size <= 64 KiB.
    let total = pos + size as usize;
    Parsed::Record(
        Some(HeaderFields {
            gen,
            m,
            ts,
            exp,
            header_len: pos,
        }),
        total,
    )
}

fn record(fields: Option<HeaderFields>, bytes: &[u8], offset: usize) -> Record<'_> {
    match fields {
        None => Record::EndOfGeneration { offset },
        Some(h) => Record::Batch(
            BatchHeader {
                gen: h.gen,
                m: h.m,
                ts: h.ts,
                exp: h.exp,
                offset,
                body_offset: offset + h.header_len,
            },
            &bytes[h.header_len..],
        ),
    }
}

/// The framing state between chunks.
#[derive(Debug)]
pub(crate) struct Framer {
    /// Bytes of a record not yet complete.
    carry: Vec<u8>,
    /// Stream offset of the first byte not yet part of a record handed out
    /// (`carry[0]` when there is a carry).
    consumed: usize,
}

impl Framer {
    /// A framer whose first byte sits at stream offset `start`.
    pub(crate) fn new(start: usize) -> Self {
        Framer {
            carry: Vec::new(),
            consumed: start,
        }
    }

    /// Stream offset up to which records were handed out.
    pub(crate) fn consumed(&self) -> usize {
        self.consumed
    }

    /// Bytes held of a record that is not complete yet.
    pub(crate) fn pending(&self) -> usize {
        self.carry.len()
    }

    /// Hands every record that `data` completes to `on`, in order. Stops at
    /// the first error of `on` (`Err`) or of the framing (`Ok(Some)`).
    pub(crate) fn push<E>(
        &mut self,
        mut data: &[u8],
        on: &mut impl FnMut(Record<'_>) -> Result<(), E>,
    ) -> Result<Option<FrameError>, E> {
        if !self.carry.is_empty() {
            match self.complete_carry(data, on)? {
                Carry::Done(taken) => data = &data[taken..],
                Carry::NeedMore => return Ok(None),
                Carry::Bad(e) => return Ok(Some(e)),
            }
        }
        let mut pos = 0;
        while pos < data.len() {
            match parse(&data[pos..]) {
                Parsed::Record(fields, total) if total <= data.len() - pos => {
                    let offset = self.consumed + pos;
                    on(record(fields, &data[pos..pos + total], offset))?;
                    pos += total;
                }
                Parsed::Record(..) | Parsed::Short => break,
                Parsed::Bad(what) => {
                    return Ok(Some(FrameError {
                        offset: self.consumed + pos,
                        what,
                    }))
                }
            }
        }
        self.consumed += pos;
        self.carry.extend_from_slice(&data[pos..]);
        Ok(None)
    }

    /// Completes the record begun in `carry` from the head of `data`.
    fn complete_carry<E>(
        &mut self,
        data: &[u8],
        on: &mut impl FnMut(Record<'_>) -> Result<(), E>,
    ) -> Result<Carry, E> {
        // Enough to read the header, which says how long the record is;
        // what lies past the record is given back below.
        let head = MAX_HEADER_LEN.saturating_sub(self.carry.len()).min(data.len());
        self.carry.extend_from_slice(&data[..head]);
        let (fields, total) = match parse(&self.carry) {
            Parsed::Record(fields, total) => (fields, total),
            // Only when all of `data` fit under MAX_HEADER_LEN.
            Parsed::Short => return Ok(Carry::NeedMore),
            Parsed::Bad(what) => {
                return Ok(Carry::Bad(FrameError {
                    offset: self.consumed,
                    what,
                }))
            }
        };
        let taken = if total <= self.carry.len() {
            let extra = self.carry.len() - total;
            self.carry.truncate(total);
            head - extra
        } else {
            let more = (total - self.carry.len()).min(data.len() - head);
            self.carry.extend_from_slice(&data[head..head + more]);
            if self.carry.len() < total {
                return Ok(Carry::NeedMore);
            }
            head + more
        };
        let carry = std::mem::take(&mut self.carry);
        let offset = self.consumed;
        self.consumed += total;
        let handled = on(record(fields, &carry, offset));
        // Kept for its allocation: the next cut record reuses it.
        self.carry = carry;
        self.carry.clear();
        handled.map(|()| Carry::Done(taken))
    }
}

enum Carry {
    Done(usize),
    NeedMore,
    Bad(FrameError),
}

#[cfg(test)]
mod tests {
    use super::*;

    type Owned = (Option<BatchHeader>, Vec<u8>, usize);

    fn owned(r: Record<'_>) -> Owned {
        match r {
            Record::Batch(h, body) => (Some(h), body.to_vec(), h.offset),
            Record::EndOfGeneration { offset } => (None, Vec::new(), offset),
        }
    }

    /// The records of `data` fed in `chunk`-byte pieces, the framing error
    /// and how many bytes were left pending.
    fn split(data: &[u8], chunk: usize) -> (Vec<Owned>, Option<FrameError>, usize) {
        let mut f = Framer::new(16);
        let mut out = Vec::new();
        for piece in data.chunks(chunk.max(1)) {
            let r: Result<_, ()> = f.push(piece, &mut |r| {
                out.push(owned(r));
                Ok(())
            });
            if let Ok(Some(e)) = r {
                return (out, Some(e), f.pending());
            }
        }
        let pending = f.pending();
        (out, None, pending)
    }

    #[test]
    fn chunking_does_not_change_the_records() {
        let mut data = vec![1, 3, 7, 100, 3, 9, 9, 9];
        data.extend([
            49, 1, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 5, 2, 8, 8,
        ]);
        data.push(52);
        data.extend([1, 4, 1, 1, 0]);
        let whole = split(&data, data.len());
        assert_eq!(whole.0.len(), 4);
        assert_eq!(
            whole.0[1].0.map(|h| (h.exp, h.m, h.body_offset)),
            Some((Some(1), u64::MAX, 16 + 8 + 15))
        );
        assert_eq!(whole.0[2].2, 16 + 8 + 17);
        for chunk in 1..data.len() {
            assert_eq!(split(&data, chunk), whole, "{chunk}-byte chunks");
        }
        // Cut anywhere: the whole records before the cut, the rest pending.
        for cut in 0..data.len() {
            let (recs, err, pending) = split(&data[..cut], 3);
            assert!(err.is_none());
            let done: usize = recs.len();
            assert!(done <= 4);
            assert!(pending < 18);
        }
    }

    #[test]
    fn bad_records_are_named_at_their_offset_in_any_chunking() {
        let cases: [(&[u8], usize, &str); 4] = [
            (&[1, 1, 1, 1, 0, 7], 16 + 5, "expected batch event, got event 7"),
            (&[1, 1, 1, 1, 0x81, 0x80, 0x04], 16, "invalid batch size 65537"),
            (
                &[1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
                16,
                "batch gen: binary: varint overflows",
            ),
            (
                &[
                    1, 1, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                ],
                16,
                "batch timestamp",
            ),
        ];
        for (data, offset, what) in cases {
            for chunk in 1..=data.len() {
                let (_, err, _) = split(data, chunk);
                let err = err.expect("an error");
                assert_eq!(err.offset, offset, "{data:?} in {chunk}-byte chunks");
                assert!(err.what.contains(what), "{}", err.what);
            }
        }
    }
}
