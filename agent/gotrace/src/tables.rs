//! A generation's string and stack tables, which events refer to by id.
//!
//! Go writes them at the end of each generation; they are read as their
//! batches arrive and looked up once the generation is whole. Ids follow
//! Go's `dataTable`: id 0 always means "none" (the empty string, no stack)
//! and is present without being written, and an id written twice is an
//! error.

use rustc_hash::FxHashMap;

/// Ids mapped to values: a hash map while the table fills, a dense vector
/// once it is complete when the ids allow (they are 1..n in real traces).
#[derive(Debug, Clone)]
pub(crate) struct IdTable<V> {
    sparse: FxHashMap<u64, V>,
    dense: Vec<Option<V>>,
}

impl<V: Copy> IdTable<V> {
    fn new() -> Self {
        IdTable {
            sparse: FxHashMap::default(),
            dense: Vec::new(),
        }
    }

    fn clear(&mut self) {
        self.sparse.clear();
        self.dense.clear();
    }

    /// `Err(())` when the id is taken, 0 included, as in Go.
    fn insert(&mut self, id: u64, v: V) -> Result<(), ()> {
        if self.contains(id) {
            return Err(());
        }
        self.sparse.insert(id, v);
        Ok(())
    }

    fn contains(&self, id: u64) -> bool {
        id == 0 || self.get(id).is_some()
    }

    /// The value of a written id (never of id 0).
    #[inline]
    fn get(&self, id: u64) -> Option<V> {
        match usize::try_from(id).ok().and_then(|i| self.dense.get(i)) {
            Some(v) => *v,
            None => self.sparse.get(&id).copied(),
        }
    }

    /// Moves the entries into the dense vector when it wastes at most about
    /// half its slots, as Go's `compactify` decides.
    fn compact(&mut self) {
        if self.sparse.is_empty() || !self.dense.is_empty() {
            return;
        }
        let Some(&max) = self.sparse.keys().max() else {
            return;
        };
        let n = self.sparse.len() as u64;
        if max > 2 * n + 1 {
            return;
        }
        // max <= 2n + 1 and n is the count of a map in memory: small.
        let mut dense = vec![None; max as usize + 1];
        for (&id, &v) in &self.sparse {
            dense[id as usize] = Some(v);
        }
        self.dense = dense;
        self.sparse.clear();
    }

    fn iter(&self) -> impl Iterator<Item = (u64, V)> + '_ {
        let dense = self
            .dense
            .iter()
            .enumerate()
            .filter_map(|(i, v)| Some((i as u64, (*v)?)));
        dense.chain(self.sparse.iter().map(|(&id, &v)| (id, v)))
    }
}

/// A range in an arena.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    len: usize,
}

impl Span {
    fn of<T>(self, arena: &[T]) -> &[T] {
        arena.get(self.start..self.start + self.len).unwrap_or(&[])
    }
}

/// Strings by id, stored as bytes: Go strings need not be UTF-8, and Go
/// compares them byte for byte (region names must match their begin's).
#[derive(Debug, Clone)]
pub(crate) struct Strings {
    bytes: Vec<u8>,
    ids: IdTable<Span>,
}

impl Strings {
    pub(crate) fn new() -> Self {
        Strings {
            bytes: Vec::new(),
            ids: IdTable::new(),
        }
    }

    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.ids.clear();
    }

    /// Adds a string; `Err(())` when its id is taken.
    pub(crate) fn insert(&mut self, id: u64, s: &[u8]) -> Result<(), ()> {
        if self.ids.contains(id) {
            return Err(());
        }
        let span = Span {
            start: self.bytes.len(),
            len: s.len(),
        };
        self.bytes.extend_from_slice(s);
        self.ids.insert(id, span)
    }

    /// The string of an id; id 0 is the empty string.
    #[inline]
    pub(crate) fn get(&self, id: u64) -> Option<&[u8]> {
        if id == 0 {
            return Some(&[]);
        }
        Some(self.ids.get(id)?.of(&self.bytes))
    }

    pub(crate) fn compact(&mut self) {
        self.ids.compact();
    }
}

/// One frame of a stack, as the stack table describes its PC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameIds {
    pub(crate) func: u64,
    pub(crate) file: u64,
    pub(crate) line: u64,
}

/// Stacks by id: each a list of PCs, and each PC's frame (the first
/// description of a PC in the generation wins, as in Go).
#[derive(Debug, Clone)]
pub(crate) struct Stacks {
    pcs: Vec<u64>,
    ids: IdTable<Span>,
    frames: FxHashMap<u64, FrameIds>,
}

impl Stacks {
    pub(crate) fn new() -> Self {
        Stacks {
            pcs: Vec::new(),
            ids: IdTable::new(),
            frames: FxHashMap::default(),
        }
    }

    pub(crate) fn clear(&mut self) {
        self.pcs.clear();
        self.ids.clear();
        self.frames.clear();
    }

    pub(crate) fn contains(&self, id: u64) -> bool {
        self.ids.contains(id)
    }

    /// Starts a stack; its frames follow through [`Stacks::push_frame`] and
    /// it is named by [`Stacks::finish`].
    pub(crate) fn start(&self) -> usize {
        self.pcs.len()
    }

    pub(crate) fn push_frame(&mut self, pc: u64, frame: FrameIds) {
        self.pcs.push(pc);
        self.frames.entry(pc).or_insert(frame);
    }

    /// Names the frames pushed since `start`; `Err(())` when the id is taken.
    pub(crate) fn finish(&mut self, id: u64, start: usize) -> Result<(), ()> {
        let span = Span {
            start,
            len: self.pcs.len() - start,
        };
        self.ids.insert(id, span)
    }

    /// The PCs of a stack, innermost first; id 0 is the empty stack.
    #[inline]
    pub(crate) fn pcs(&self, id: u64) -> Option<&[u64]> {
        if id == 0 {
            return Some(&[]);
        }
        Some(self.ids.get(id)?.of(&self.pcs))
    }

    pub(crate) fn frame(&self, pc: u64) -> Option<FrameIds> {
        self.frames.get(&pc).copied()
    }

    pub(crate) fn compact(&mut self) {
        self.ids.compact();
    }

    /// Every stack and its PCs, for validation.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &[u64])> + '_ {
        self.ids.iter().map(|(id, span)| (id, span.of(&self.pcs)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_zero_is_always_present_and_never_written() {
        let mut s = Strings::new();
        assert_eq!(s.get(0), Some(&b""[..]));
        assert_eq!(s.insert(0, b"x"), Err(()));
        assert_eq!(s.insert(3, b"three"), Ok(()));
        assert_eq!(s.insert(3, b"again"), Err(()));
        assert_eq!(s.get(3), Some(&b"three"[..]));
        assert_eq!(s.get(4), None);
    }

    #[test]
    fn compacting_keeps_every_entry() {
        for ids in [
            vec![1u64, 2, 3, 4],
            vec![5, 1, 2],
            vec![1, 1000, 7],
            vec![u64::MAX, 2],
        ] {
            let mut s = Strings::new();
            for &id in &ids {
                s.insert(id, &id.to_le_bytes()).expect("fresh id");
            }
            s.compact();
            for &id in &ids {
                assert_eq!(s.get(id), Some(&id.to_le_bytes()[..]), "{ids:?}");
            }
            assert_eq!(s.get(6), None);
            assert_eq!(s.insert(ids[0], b"dup"), Err(()));
        }
    }

    #[test]
    fn a_pc_keeps_its_first_frame() {
        let mut st = Stacks::new();
        let f = |line| FrameIds {
            func: 1,
            file: 2,
            line,
        };
        let start = st.start();
        st.push_frame(0x10, f(1));
        st.push_frame(0x20, f(2));
        st.finish(1, start).expect("fresh");
        let start = st.start();
        st.push_frame(0x10, f(9));
        st.finish(2, start).expect("fresh");
        assert_eq!(st.pcs(1), Some(&[0x10, 0x20][..]));
        assert_eq!(st.pcs(2), Some(&[0x10][..]));
        assert_eq!(st.frame(0x10), Some(f(1)));
        assert_eq!(st.pcs(0), Some(&[][..]));
        assert!(st.finish(2, st.start()).is_err());
    }
}
