//! How a window's bytes are held: 1 MiB blocks, each compressed on the blocking pool as it fills, recycled when freed.
//!
//! While a window streams in, a [`Builder`] copies it into blocks and
//! compresses each full block on the blocking pool, so the raw trace is never
//! held whole: memory in flight is a block or two, plus compressed blocks the
//! ring has already reserved room for.

use std::cell::RefCell;
use std::io::{self};

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use tokio::task::JoinHandle;

use crate::config::Compression;

/// Raw bytes per block. Large enough for zstd to find the repetition in a
/// trace, small enough that a few blocks in flight cost little memory.
pub const BLOCK: usize = 1 << 20;

thread_local! {
    /// One zstd context per thread. A new context for every block allocated
    /// and faulted in its tables each time: about a third of the cost of
    /// compressing.
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    /// A decompression context and a block's worth of output buffer per thread.
    static DECOMPRESSOR: RefCell<Option<(zstd::bulk::Decompressor<'static>, Vec<u8>)>> = const { RefCell::new(None) };
}

/// Compresses one block. Level 1: the ring holds data for a minute, so speed
/// matters more than the last few percent of ratio.
pub fn compress(raw: &[u8]) -> io::Result<Bytes> {
    COMPRESSOR.with_borrow_mut(|c| {
        let c = match c {
            Some(c) => c,
            None => c.insert(zstd::bulk::Compressor::new(1)?),
        };
        let mut out = c.compress(raw)?;
        // The output buffer was sized for the worst case, a whole block.
        out.shrink_to_fit();
        Ok(Bytes::from(out))
    })
}

/// Decompresses one block (at most [`BLOCK`] bytes) and hands it to `f`.
pub(super) fn decompress<T>(block: &[u8], f: impl FnOnce(&[u8]) -> io::Result<T>) -> io::Result<T> {
    DECOMPRESSOR.with_borrow_mut(|d| {
        let (d, buf) = match d {
            Some(d) => d,
            None => d.insert((zstd::bulk::Decompressor::new()?, Vec::with_capacity(BLOCK))),
        };
        buf.clear();
        d.decompress_to_buffer(block, buf)?;
        f(buf)
    })
}

/// Raw blocks handed back by windows that left memory and by blocks once
/// compressed, so the next blocks reuse memory that is already mapped: a
/// fresh 1 MiB block costs 256 page faults, each a zeroed page, which was
/// the largest cost of recording without compression. Process-wide, like the
/// allocator it stands in front of; at most [`POOL_BLOCKS`] blocks.
static POOL: parking_lot::Mutex<Vec<BytesMut>> = parking_lot::const_mutex(Vec::new());

const POOL_BLOCKS: usize = 8;

fn take_block() -> BytesMut {
    POOL.lock()
        .pop()
        .unwrap_or_else(|| BytesMut::with_capacity(BLOCK))
}

fn recycle(mut block: BytesMut) {
    if block.capacity() >= BLOCK {
        block.clear();
        let mut free = POOL.lock();
        if free.len() < POOL_BLOCKS {
            free.push(block);
        }
    }
}

/// Gives a block's memory back to the pool if nothing else holds it. A
/// raw block is shared by its compression and any reader of
/// [`Builder::on_sealed`]: whichever lets go last gives it back.
pub fn give_back(block: Bytes) {
    if let Ok(m) = block.try_into_mut() {
        recycle(m);
    }
}

enum Block {
    Ready(Bytes),
    Compressing(JoinHandle<io::Result<Bytes>>),
}

/// Accumulates a streaming window into stored blocks.
pub struct Builder {
    compression: Compression,
    open: BytesMut,
    /// Sealed blocks in stream order, each with its raw length.
    sealed: Vec<(Block, usize)>,
    raw_len: usize,
    /// Raw blocks of windows evicted to make room for this one, used before
    /// any new memory.
    pub(super) spare: Vec<BytesMut>,
    /// Told of every raw block as it is sealed.
    on_sealed: Option<OnSealed>,
}

/// A reader of raw blocks as they are sealed (see [`Builder::on_sealed`]).
type OnSealed = Box<dyn FnMut(&Bytes) + Send>;

impl Builder {
    pub fn new(compression: Compression) -> Self {
        Builder {
            compression,
            open: BytesMut::new(),
            sealed: Vec::new(),
            raw_len: 0,
            spare: Vec::new(),
            on_sealed: None,
        }
    }

    /// Hands `f` every block of raw bytes as it is sealed, in stream order (a
    /// `Bytes` handle on the block, not a copy), so a reader beside the ring
    /// sees the stream without the read loop copying it twice. The last one
    /// comes from [`Builder::finish`], which then drops `f`.
    pub fn on_sealed(&mut self, f: impl FnMut(&Bytes) + Send + 'static) {
        self.on_sealed = Some(Box::new(f));
    }

    /// Takes the raw blocks of windows evicted to make room for this one.
    /// Without compression a full ring evicts a whole window at a time, far
    /// more than the pool keeps; reusing them here means a full ring records
    /// into memory it already has instead of faulting in new pages (which
    /// was a third of the agent's CPU at 20 MB/s). They stay within the
    /// budget: they are the room just freed, which this window fills again.
    pub fn reuse(&mut self, freed: impl IntoIterator<Item = Bytes>) {
        for block in freed {
            match block.try_into_mut() {
                Ok(m) if m.capacity() >= BLOCK => self.spare.push(m),
                _ => {}
            }
        }
    }

    /// Appends bytes; full blocks are sealed and handed to the blocking pool.
    pub fn push(&mut self, mut data: &[u8]) {
        self.raw_len += data.len();
        while !data.is_empty() {
            if self.open.capacity() == 0 {
                self.open = match self.spare.pop() {
                    Some(mut b) => {
                        b.clear();
                        b
                    }
                    None => take_block(),
                };
            }
            let take = (BLOCK - self.open.len()).min(data.len());
            self.open.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.open.len() >= BLOCK {
                self.seal();
            }
        }
        self.collect_finished();
    }

    fn seal(&mut self) {
        if self.open.is_empty() {
            return;
        }
        let open = std::mem::take(&mut self.open);
        let len = open.len();
        let mut tell = |raw: &Bytes| {
            if let Some(f) = self.on_sealed.as_mut() {
                f(raw);
            }
        };
        let block = match self.compression {
            // A short last block would hold a whole block's memory in the
            // ring (all of it resident, if it came from the pool): keep a
            // copy of just its bytes.
            Compression::None if len < BLOCK / 2 => {
                let exact = Bytes::copy_from_slice(&open);
                recycle(open);
                tell(&exact);
                Block::Ready(exact)
            }
            Compression::None => {
                let raw = open.freeze();
                tell(&raw);
                Block::Ready(raw)
            }
            Compression::Zstd => {
                let raw = open.freeze();
                tell(&raw);
                Block::Compressing(tokio::task::spawn_blocking(move || {
                    let out = compress(&raw);
                    give_back(raw);
                    out
                }))
            }
        };
        self.sealed.push((block, len));
    }

    /// Takes the results of compressions that are done, so their raw input
    /// is freed and their size known.
    fn collect_finished(&mut self) {
        for (block, _) in &mut self.sealed {
            if let Block::Compressing(handle) = block {
                if handle.is_finished() {
                    if let Some(Ok(Ok(bytes))) = handle.now_or_never() {
                        *block = Block::Ready(bytes);
                    }
                }
            }
        }
    }

    /// Raw bytes received so far.
    pub fn raw_len(&self) -> usize {
        self.raw_len
    }

    /// Raw bytes waiting to be stored: the open block and blocks still
    /// compressing. When this grows, compression is not keeping up.
    pub fn backlog(&self) -> usize {
        let compressing: usize = self
            .sealed
            .iter()
            .filter(|(b, _)| matches!(b, Block::Compressing(_)))
            .map(|(_, len)| *len)
            .sum();
        self.open.len() + compressing
    }

    /// Bytes of finished stored blocks: what the ring must make room for.
    pub fn stored_len(&self) -> usize {
        self.sealed
            .iter()
            .filter_map(|(b, _)| match b {
                Block::Ready(bytes) => Some(bytes.len()),
                Block::Compressing(_) => None,
            })
            .sum()
    }

    /// Waits for every block and cuts the stream to its first `keep` bytes.
    pub async fn finish(mut self, keep: usize) -> io::Result<Vec<Bytes>> {
        self.seal();
        // The reader has had every block: let it know at once.
        self.on_sealed = None;
        for b in self.spare.drain(..) {
            recycle(b);
        }
        let compression = self.compression;
        let mut out = Vec::with_capacity(self.sealed.len());
        let mut start = 0usize;
        for (block, len) in self.sealed {
            if start >= keep {
                break;
            }
            let bytes = match block {
                Block::Ready(b) => b,
                Block::Compressing(h) => h.await.map_err(io::Error::other)??,
            };
            if start + len <= keep {
                out.push(bytes);
            } else {
                let part = keep - start;
                let cut = match compression {
                    Compression::None => bytes.slice(..part),
                    // Rare (a cut stream): decompress the one block the cut
                    // falls in and store its kept part compressed again.
                    Compression::Zstd => tokio::task::spawn_blocking(move || {
                        decompress(&bytes, |raw| compress(&raw[..part.min(raw.len())]))
                    })
                    .await
                    .map_err(io::Error::other)??,
                };
                out.push(cut);
            }
            start += len;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_block_pool_is_bounded_and_never_takes_memory_still_in_use() {
        let live = Bytes::from(vec![7u8; BLOCK]);
        let kept = live.clone();
        give_back(live);
        for _ in 0..3 * POOL_BLOCKS {
            recycle(BytesMut::with_capacity(BLOCK));
        }
        assert!(POOL.lock().len() <= POOL_BLOCKS);
        let mut taken: Vec<BytesMut> = (0..POOL_BLOCKS + 1).map(|_| take_block()).collect();
        for b in &mut taken {
            b.extend_from_slice(&[0u8; 4096]);
        }
        assert!(
            kept.iter().all(|b| *b == 7),
            "a block still referenced was reused"
        );
    }
}
