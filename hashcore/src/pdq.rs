//! PDQ index: 256-bit hashes, every entry within a Hamming distance.

use std::collections::HashMap;

/// A PDQ hash as four 64-bit words (bytes 0..8 little-endian form word 0 …).
pub type Pdq = [u64; 4];

/// Reads a 32-byte PDQ digest.
pub fn pdq_from_bytes(bytes: &[u8; 32]) -> Pdq {
    let mut out = [0u64; 4];
    for (w, chunk) in out.iter_mut().zip(bytes.chunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        *w = u64::from_le_bytes(b);
    }
    out
}

/// Hamming distance of two PDQ hashes.
#[inline]
pub fn hamming(a: &Pdq, b: &Pdq) -> u32 {
    (a[0] ^ b[0]).count_ones()
        + (a[1] ^ b[1]).count_ones()
        + (a[2] ^ b[2]).count_ones()
        + (a[3] ^ b[3]).count_ones()
}

/// A set of PDQ hashes, each mapped to one entry id.
#[derive(Default, Clone)]
pub struct PdqIndex {
    hashes: Vec<Pdq>,
    ids: Vec<u64>,
    pos: HashMap<Pdq, usize>,
}

impl PdqIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts `hash`, or replaces its id when already present.
    pub fn insert(&mut self, hash: Pdq, id: u64) {
        if let Some(&p) = self.pos.get(&hash) {
            self.ids[p] = id;
        } else {
            self.pos.insert(hash, self.hashes.len());
            self.hashes.push(hash);
            self.ids.push(id);
        }
    }

    /// Removes `hash`; absent hashes are ignored.
    pub fn remove(&mut self, hash: &Pdq) {
        if let Some(p) = self.pos.remove(hash) {
            self.hashes.swap_remove(p);
            self.ids.swap_remove(p);
            if p < self.hashes.len() {
                self.pos.insert(self.hashes[p], p);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Calls `f(id)` for every entry within `threshold` of `query`.
    pub fn search(&self, query: &Pdq, threshold: u32, mut f: impl FnMut(u64)) {
        for (h, &id) in self.hashes.iter().zip(&self.ids) {
            if hamming(h, query) <= threshold {
                f(id);
            }
        }
    }

    /// Approximate heap bytes held.
    pub fn memory_bytes(&self) -> usize {
        self.hashes.capacity() * 32 + self.ids.capacity() * 8 + self.pos.capacity() * (32 + 8 + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn flip(h: &Pdq, bits: &[usize]) -> Pdq {
        let mut out = *h;
        for &b in bits {
            out[b / 64] ^= 1 << (b % 64);
        }
        out
    }

    #[test]
    fn hamming_basics() {
        assert_eq!(hamming(&[0; 4], &[0; 4]), 0);
        assert_eq!(hamming(&[0; 4], &[u64::MAX; 4]), 256);
        assert_eq!(hamming(&[1, 0, 0, 0], &[0, 0, 0, 1 << 63]), 2);
    }

    #[test]
    fn replace_and_remove() {
        let mut idx = PdqIndex::new();
        idx.insert([1, 2, 3, 4], 10);
        idx.insert([5, 6, 7, 8], 11);
        idx.insert([1, 2, 3, 4], 12);
        assert_eq!(idx.len(), 2);
        let mut got = vec![];
        idx.search(&[1, 2, 3, 4], 0, |id| got.push(id));
        assert_eq!(got, vec![12]);
        idx.remove(&[1, 2, 3, 4]);
        idx.remove(&[9, 9, 9, 9]);
        got.clear();
        idx.search(&[1, 2, 3, 4], 0, |id| got.push(id));
        assert!(got.is_empty());
        assert_eq!(idx.len(), 1);
    }

    proptest! {
        #[test]
        fn matches_brute_force(
            seeds in proptest::collection::vec(any::<[u64; 4]>(), 1..50),
            threshold in 0u32..64,
            flips in proptest::collection::vec(0usize..256, 0..80),
        ) {
            let mut idx = PdqIndex::new();
            for (i, s) in seeds.iter().enumerate() {
                idx.insert(*s, i as u64);
            }
            // Near duplicates of the first seed at t-1, t, t+1 (distinct bits).
            let mut bits: Vec<usize> = flips.clone();
            bits.sort_unstable();
            bits.dedup();
            for d in [threshold.saturating_sub(1), threshold, threshold + 1] {
                let d = (d as usize).min(bits.len());
                let q = flip(&seeds[0], &bits[..d]);
                let mut got = vec![];
                idx.search(&q, threshold, |id| got.push(id));
                got.sort_unstable();
                let mut want: Vec<u64> = seeds
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| hamming(s, &q) <= threshold)
                    .map(|(i, _)| i as u64)
                    .collect();
                want.sort_unstable();
                // Seeds may repeat: the index keeps the last id per hash.
                let mut dedup_want: Vec<u64> = want
                    .iter()
                    .copied()
                    .filter(|&i| {
                        let h = seeds[i as usize];
                        seeds.iter().rposition(|s| *s == h) == Some(i as usize)
                    })
                    .collect();
                dedup_want.sort_unstable();
                prop_assert_eq!(got, dedup_want);
            }
        }
    }
}
