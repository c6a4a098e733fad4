//! Exact sets: a cryptographic digest of `N` bytes → the caller's entry id.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Hasher for keys that are already uniformly distributed (cryptographic
/// digests): it keeps the first 8 bytes, mixed once so that short or
/// structured test keys still spread.
#[derive(Default)]
pub struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        // splitmix64 finaliser.
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(buf);
        }
    }
}

/// A set of `N`-byte digests, each mapped to one entry id.
#[derive(Default, Clone)]
pub struct ExactSet<const N: usize> {
    map: HashMap<[u8; N], u64, BuildHasherDefault<DigestHasher>>,
}

impl<const N: usize> ExactSet<N> {
    pub fn new() -> Self {
        Self {
            map: HashMap::default(),
        }
    }

    /// Inserts or replaces the id of `digest`.
    pub fn insert(&mut self, digest: [u8; N], id: u64) {
        self.map.insert(digest, id);
    }

    /// Removes `digest`; absent digests are ignored.
    pub fn remove(&mut self, digest: &[u8; N]) {
        self.map.remove(digest);
    }

    pub fn get(&self, digest: &[u8; N]) -> Option<u64> {
        self.map.get(digest).copied()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Approximate heap bytes held.
    pub fn memory_bytes(&self) -> usize {
        self.map.capacity() * (N + 8 + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replace_remove() {
        let mut s = ExactSet::<16>::new();
        assert!(s.is_empty());
        s.insert([1; 16], 7);
        assert_eq!(s.get(&[1; 16]), Some(7));
        s.insert([1; 16], 8);
        assert_eq!(s.get(&[1; 16]), Some(8));
        assert_eq!(s.len(), 1);
        s.remove(&[2; 16]);
        s.remove(&[1; 16]);
        assert_eq!(s.get(&[1; 16]), None);
        assert!(s.is_empty());
    }
}
