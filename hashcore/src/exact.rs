//! Exact segments: immutable sets of `N`-byte cryptographic digests with ids.
//!
//! Digests are kept sorted in one array (ids in a parallel one) with a
//! directory of offsets over their top bits (~2–4 digests per bucket). A
//! lookup reads one directory word and one short, contiguous bucket; the
//! bucket is binary-searched, so skewed (non-uniform) keys cost `O(log n)`,
//! never a linear scan. Memory: `N + 8` bytes per entry plus ~2 bytes of
//! directory and ~1 byte of cell summaries.
//!
//! Most lookups miss (most uploads are not listed). Each directory cell also
//! has a 16-bit summary of its keys (two bits per key, chosen by key bytes 4
//! and 5, which the cell does not depend on): a key whose two bits are not
//! both set is not in the cell, and ~93 % of misses stop at that one read
//! instead of reading the cell's offsets and then its keys (two to three
//! random cache lines, each on 4 KiB pages also a TLB miss). Summaries are
//! derived from the keys, not stored in segment files: rebuilt on load.

use std::io;

use crate::error::CoreError;
use crate::mem::HugeBuf;
use crate::persist::{check_offsets, Persist, Reader, Writer};

/// An immutable set of `N`-byte digests, each with one id.
#[derive(Clone)]
pub struct ExactSegment<const N: usize> {
    keys: HugeBuf<[u8; N]>,
    ids: HugeBuf<u64>,
    dir_bits: u32,
    offsets: HugeBuf<u32>,
    /// Per cell, the OR of [`summary_bits`] of its keys.
    summaries: HugeBuf<u16>,
}

/// Largest directory: 2^28 cells.
const MAX_DIR_BITS: u32 = 28;

#[inline(always)]
fn prefix<const N: usize>(k: &[u8; N]) -> u32 {
    u32::from_be_bytes([k[0], k[1], k[2], k[3]])
}

/// The two bits of `k` in its cell's summary (all bits for digests too short
/// to have bytes 4 and 5, which then never stop a lookup).
#[inline(always)]
fn summary_bits<const N: usize>(k: &[u8; N]) -> u16 {
    if N < 6 {
        return u16::MAX;
    }
    (1u16 << (k[4] & 15)) | (1u16 << (k[5] & 15))
}

impl<const N: usize> ExactSegment<N> {
    /// Builds a segment; `entries` must not repeat a digest.
    pub fn build(mut entries: Vec<([u8; N], u64)>) -> Self {
        assert!(N >= 4, "digests shorter than 4 bytes are not supported");
        entries.sort_unstable_by_key(|e| e.0);
        let n = entries.len();
        assert!(n < u32::MAX as usize, "segment too large");
        let dir_bits = if n < 4 {
            0
        } else {
            (usize::BITS - 1 - n.leading_zeros() - 1).min(MAX_DIR_BITS)
        };
        let mut keys = HugeBuf::<[u8; N]>::zeroed(n);
        let mut ids = HugeBuf::<u64>::zeroed(n);
        for (i, (k, id)) in entries.into_iter().enumerate() {
            keys[i] = k;
            ids[i] = id;
        }
        let cells = 1usize << dir_bits;
        let mut offsets = HugeBuf::<u32>::zeroed(cells + 1);
        for k in keys.iter() {
            offsets[Self::cell_of(k, dir_bits) + 1] += 1;
        }
        for c in 0..cells {
            offsets[c + 1] += offsets[c];
        }
        let summaries = Self::summaries(&keys, dir_bits);
        ExactSegment {
            keys,
            ids,
            dir_bits,
            offsets,
            summaries,
        }
    }

    /// The summary of every cell (see [`summary_bits`]).
    fn summaries(keys: &[[u8; N]], dir_bits: u32) -> HugeBuf<u16> {
        let mut summaries = HugeBuf::<u16>::zeroed(1usize << dir_bits);
        for k in keys {
            summaries[Self::cell_of(k, dir_bits)] |= summary_bits(k);
        }
        summaries
    }

    #[inline(always)]
    fn cell_of(k: &[u8; N], dir_bits: u32) -> usize {
        if dir_bits == 0 {
            0
        } else {
            (prefix(k) >> (32 - dir_bits)) as usize
        }
    }

    /// Position of `key`, if present.
    #[inline]
    pub fn find(&self, key: &[u8; N]) -> Option<u32> {
        let c = Self::cell_of(key, self.dir_bits);
        let (lo, hi) = (self.offsets[c] as usize, self.offsets[c + 1] as usize);
        let bucket = &self.keys[lo..hi];
        if bucket.len() <= 8 {
            bucket
                .iter()
                .position(|k| k == key)
                .map(|i| (lo + i) as u32)
        } else {
            bucket.binary_search(key).ok().map(|i| (lo + i) as u32)
        }
    }

    /// Looks up many keys; calls `hit(i, pos)` for each `keys[i]` present, in order.
    ///
    /// A software pipeline: the cell summary of key `i` is prefetched; that
    /// of key `i − D` is checked and, unless it rules the key out, the cell's
    /// offsets are prefetched; the bucket of key `i − 2D` is located and
    /// prefetched; key `i − 3D` is searched. About `D` independent cache
    /// misses are in flight.
    pub fn find_many(&self, keys: &[&[u8; N]], hit: impl FnMut(usize, u32)) {
        self.find_each(keys.len(), |i| keys[i], hit);
    }

    /// [`Self::find_many`] over `key(0..n)`.
    pub fn find_each<'k>(
        &self,
        n: usize,
        key: impl Fn(usize) -> &'k [u8; N],
        mut hit: impl FnMut(usize, u32),
    ) {
        const D: usize = 16;
        // Per key in flight: whether its cell may hold it, then its bucket.
        let mut maybe = [false; 2 * D];
        let mut ranges = [(0u32, 0u32); 2 * D];
        for i in 0..n + 3 * D {
            if i < n {
                let c = Self::cell_of(key(i), self.dir_bits);
                crate::mem::prefetch(&self.summaries[c]);
            }
            if i >= D && i - D < n {
                let j = i - D;
                let k = key(j);
                let c = Self::cell_of(k, self.dir_bits);
                let bits = summary_bits(k);
                let may = self.summaries[c] & bits == bits;
                maybe[j % (2 * D)] = may;
                if may {
                    crate::mem::prefetch(&self.offsets[c]);
                }
            }
            if i >= 2 * D && i - 2 * D < n {
                let j = i - 2 * D;
                let (lo, hi) = if maybe[j % (2 * D)] {
                    let c = Self::cell_of(key(j), self.dir_bits);
                    (self.offsets[c], self.offsets[c + 1])
                } else {
                    (0, 0)
                };
                ranges[j % (2 * D)] = (lo, hi);
                if lo < hi {
                    crate::mem::prefetch(&self.keys[lo as usize]);
                    crate::mem::prefetch(&self.keys[hi as usize - 1]);
                }
            }
            if i >= 3 * D && i - 3 * D < n {
                let j = i - 3 * D;
                let (lo, hi) = ranges[j % (2 * D)];
                let (lo, hi) = (lo as usize, hi as usize);
                let bucket = &self.keys[lo..hi];
                let k = key(j);
                let found = if bucket.len() <= 8 {
                    bucket.iter().position(|b| b == k)
                } else {
                    bucket.binary_search(k).ok()
                };
                if let Some(p) = found {
                    hit(j, (lo + p) as u32);
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn key_at(&self, pos: u32) -> [u8; N] {
        self.keys[pos as usize]
    }

    pub fn id_at(&self, pos: u32) -> u64 {
        self.ids[pos as usize]
    }

    /// Hints the CPU to fetch the id at `pos` (read soon by [`Self::id_at`]).
    #[inline(always)]
    pub fn prefetch_id(&self, pos: u32) {
        if let Some(id) = self.ids.get(pos as usize) {
            crate::mem::prefetch(id);
        }
    }

    /// Approximate heap bytes held.
    pub fn memory_bytes(&self) -> usize {
        self.keys.len() * (N + 8) + self.offsets.len() * 4 + self.summaries.len() * 2
    }
}

impl<const N: usize> Persist for ExactSegment<N> {
    fn write_to(&self, w: &mut Writer) -> io::Result<()> {
        w.word(u64::from(self.dir_bits));
        w.array(&self.keys)?;
        w.array(&self.ids)?;
        w.array(&self.offsets)
    }

    fn read_from(r: &mut Reader) -> Result<Self, CoreError> {
        let dir_bits = r.word_at_most(u64::from(MAX_DIR_BITS), "exact directory bits")? as u32;
        let keys = r.array::<[u8; N]>()?;
        let ids = r.array_of::<u64>(keys.len())?;
        let offsets = r.array_of::<u32>((1usize << dir_bits) + 1)?;
        check_offsets(&offsets, keys.len(), "exact directory")?;
        let summaries = Self::summaries(&keys, dir_bits);
        Ok(ExactSegment {
            keys,
            ids,
            dir_bits,
            offsets,
            summaries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn empty_and_skewed() {
        let s = ExactSegment::<16>::build(vec![]);
        assert_eq!(s.find(&[0; 16]), None);
        // All keys share their top bytes: one big bucket, binary-searched.
        let entries: Vec<([u8; 16], u64)> = (0..1000u64)
            .map(|i| {
                let mut k = [0u8; 16];
                k[8..].copy_from_slice(&i.to_be_bytes());
                (k, i)
            })
            .collect();
        let s = ExactSegment::build(entries.clone());
        for (k, id) in &entries {
            assert_eq!(s.find(k).map(|p| s.id_at(p)), Some(*id));
        }
        assert_eq!(s.find(&[1; 16]), None);
    }

    proptest! {
        #[test]
        fn find_matches_set(
            keys in proptest::collection::btree_set(any::<[u8; 20]>(), 0..500),
            probes in proptest::collection::vec(any::<[u8; 20]>(), 0..50),
        ) {
            let entries: Vec<([u8; 20], u64)> =
                keys.iter().enumerate().map(|(i, k)| (*k, i as u64)).collect();
            let s = ExactSegment::build(entries.clone());
            for (k, id) in &entries {
                prop_assert_eq!(s.find(k).map(|p| s.id_at(p)), Some(*id));
                prop_assert_eq!(s.key_at(s.find(k).unwrap()), *k);
            }
            let all: Vec<&[u8; 20]> = probes.iter().chain(keys.iter()).collect();
            let mut got = vec![];
            s.find_many(&all, |i, p| got.push((i, p)));
            let want: Vec<(usize, u32)> = all
                .iter()
                .enumerate()
                .filter_map(|(i, k)| s.find(k).map(|p| (i, p)))
                .collect();
            prop_assert_eq!(got, want);
        }
    }
}
