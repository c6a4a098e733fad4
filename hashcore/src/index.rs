//! The multi-list [`Index`]: every hash list of one serving process.
//!
//! Inputs arrive in the wire encoding described in the crate docs and are fully
//! decoded and validated before anything is applied, so a rejected batch
//! changes nothing.

use std::collections::BTreeMap;
use std::sync::RwLock;

use crate::error::CoreError;
use crate::exact::ExactSet;
use crate::pdq::{pdq_from_bytes, Pdq, PdqIndex};

/// Width of one hash slot in the wire encoding.
pub const SLOT: usize = 32;
/// Largest configurable PDQ threshold.
pub const MAX_THRESHOLD: u8 = 63;
/// Quality byte meaning "unknown": passes every list's minimum.
pub const QUALITY_UNKNOWN: u8 = 255;
/// Max-distance byte meaning "use the list's threshold".
pub const DISTANCE_DEFAULT: u8 = 255;

/// Hash algorithms, with their wire byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Alg {
    Md5 = 1,
    Sha1 = 2,
    Sha256 = 3,
    Pdq = 4,
}

impl Alg {
    pub fn from_byte(b: u8) -> Option<Alg> {
        match b {
            1 => Some(Alg::Md5),
            2 => Some(Alg::Sha1),
            3 => Some(Alg::Sha256),
            4 => Some(Alg::Pdq),
            _ => None,
        }
    }

    /// Digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            Alg::Md5 => 16,
            Alg::Sha1 => 20,
            Alg::Sha256 | Alg::Pdq => 32,
        }
    }
}

/// One decoded hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    Md5([u8; 16]),
    Sha1([u8; 20]),
    Sha256([u8; 32]),
    Pdq(Pdq),
}

/// One match: `(query_index, list_id, entry_id)`.
pub type Match = (u32, u32, u64);

fn check_len(field: &'static str, expected: usize, actual: usize) -> Result<(), CoreError> {
    if expected == actual {
        Ok(())
    } else {
        Err(CoreError::LengthMismatch {
            field,
            expected,
            actual,
        })
    }
}

/// Decodes `algs` (one byte per hash) and `hashes` (one 32-byte slot per hash).
pub fn decode_keys(
    algs_field: &'static str,
    hashes_field: &'static str,
    algs: &[u8],
    hashes: &[u8],
) -> Result<Vec<Key>, CoreError> {
    let expected = algs
        .len()
        .checked_mul(SLOT)
        .ok_or(CoreError::LengthMismatch {
            field: hashes_field,
            expected: usize::MAX,
            actual: hashes.len(),
        })?;
    check_len(hashes_field, expected, hashes.len())?;
    algs.iter()
        .zip(hashes.chunks_exact(SLOT))
        .enumerate()
        .map(|(i, (&a, slot))| {
            let alg = Alg::from_byte(a).ok_or(CoreError::UnknownAlgorithm {
                field: algs_field,
                index: i,
                byte: a,
            })?;
            let n = alg.digest_len();
            if slot[n..].iter().any(|&b| b != 0) {
                return Err(CoreError::NonZeroPadding {
                    field: hashes_field,
                    index: i,
                });
            }
            let mut full = [0u8; 32];
            full.copy_from_slice(slot);
            Ok(match alg {
                Alg::Md5 => Key::Md5(full[..16].try_into().expect("16-byte slice")),
                Alg::Sha1 => Key::Sha1(full[..20].try_into().expect("20-byte slice")),
                Alg::Sha256 => Key::Sha256(full),
                Alg::Pdq => Key::Pdq(pdq_from_bytes(&full)),
            })
        })
        .collect()
}

/// A decoded, validated batch of changes for one list.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub deletions: Vec<Key>,
    pub additions: Vec<(Key, u64)>,
}

impl Batch {
    /// Decodes the wire encoding of `Index.apply`.
    pub fn decode(
        add_algs: &[u8],
        add_hashes: &[u8],
        add_ids: &[u8],
        del_algs: &[u8],
        del_hashes: &[u8],
    ) -> Result<Batch, CoreError> {
        let keys = decode_keys("add_algs", "add_hashes", add_algs, add_hashes)?;
        check_len("add_ids", add_algs.len() * 8, add_ids.len())?;
        let additions = keys
            .into_iter()
            .zip(add_ids.chunks_exact(8))
            .map(|(k, id)| (k, u64::from_le_bytes(id.try_into().expect("8-byte chunk"))))
            .collect();
        let deletions = decode_keys("del_algs", "del_hashes", del_algs, del_hashes)?;
        Ok(Batch {
            deletions,
            additions,
        })
    }
}

/// A decoded, validated batch of queries.
#[derive(Debug, Clone, Default)]
pub struct Queries {
    pub keys: Vec<Key>,
    pub qualities: Vec<u8>,
    pub max_distances: Vec<u8>,
}

impl Queries {
    /// Decodes the wire encoding of `Index.match_batch`.
    pub fn decode(
        algs: &[u8],
        hashes: &[u8],
        qualities: &[u8],
        max_distances: &[u8],
    ) -> Result<Queries, CoreError> {
        let keys = decode_keys("algs", "hashes", algs, hashes)?;
        check_len("qualities", algs.len(), qualities.len())?;
        check_len("max_distances", algs.len(), max_distances.len())?;
        if let Some((index, &byte)) = qualities
            .iter()
            .enumerate()
            .find(|(_, &q)| q > 100 && q != QUALITY_UNKNOWN)
        {
            return Err(CoreError::InvalidQuality { index, byte });
        }
        Ok(Queries {
            keys,
            qualities: qualities.to_vec(),
            max_distances: max_distances.to_vec(),
        })
    }
}

/// Matching settings of one list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListConfig {
    pub pdq_threshold: u8,
    pub pdq_min_quality: u8,
}

impl ListConfig {
    /// Validates thresholds given as arbitrary integers.
    pub fn new(pdq_threshold: i64, pdq_min_quality: i64) -> Result<ListConfig, CoreError> {
        if !(0..=i64::from(MAX_THRESHOLD)).contains(&pdq_threshold) {
            return Err(CoreError::InvalidThreshold(pdq_threshold));
        }
        if !(0..=100).contains(&pdq_min_quality) {
            return Err(CoreError::InvalidMinQuality(pdq_min_quality));
        }
        Ok(ListConfig {
            pdq_threshold: pdq_threshold as u8,
            pdq_min_quality: pdq_min_quality as u8,
        })
    }

    /// The PDQ threshold for one query, or `None` when the query's quality is
    /// below the list minimum.
    pub fn effective_threshold(&self, quality: u8, max_distance: u8) -> Option<u32> {
        if quality != QUALITY_UNKNOWN && quality < self.pdq_min_quality {
            return None;
        }
        Some(u32::from(self.pdq_threshold.min(max_distance)))
    }
}

/// Validates a list id given as an arbitrary integer.
pub fn list_id(id: i64) -> Result<u32, CoreError> {
    u32::try_from(id).map_err(|_| CoreError::InvalidListId(id))
}

/// All hashes of one list.
#[derive(Default, Clone)]
struct List {
    config: Option<ListConfig>,
    md5: ExactSet<16>,
    sha1: ExactSet<20>,
    sha256: ExactSet<32>,
    pdq: PdqIndex,
}

impl List {
    fn config(&self) -> ListConfig {
        self.config.unwrap_or(ListConfig {
            pdq_threshold: 31,
            pdq_min_quality: 50,
        })
    }

    fn apply(&mut self, batch: &Batch) {
        for k in &batch.deletions {
            match k {
                Key::Md5(d) => self.md5.remove(d),
                Key::Sha1(d) => self.sha1.remove(d),
                Key::Sha256(d) => self.sha256.remove(d),
                Key::Pdq(h) => self.pdq.remove(h),
            }
        }
        for &(k, id) in &batch.additions {
            match k {
                Key::Md5(d) => self.md5.insert(d, id),
                Key::Sha1(d) => self.sha1.insert(d, id),
                Key::Sha256(d) => self.sha256.insert(d, id),
                Key::Pdq(h) => self.pdq.insert(h, id),
            }
        }
    }

    fn lookup(&self, key: &Key, quality: u8, max_distance: u8, mut f: impl FnMut(u64)) {
        match key {
            Key::Md5(d) => self.md5.get(d).into_iter().for_each(f),
            Key::Sha1(d) => self.sha1.get(d).into_iter().for_each(f),
            Key::Sha256(d) => self.sha256.get(d).into_iter().for_each(f),
            Key::Pdq(h) => {
                if let Some(t) = self.config().effective_threshold(quality, max_distance) {
                    self.pdq.search(h, t, &mut f);
                }
            }
        }
    }

    fn memory_bytes(&self) -> usize {
        self.md5.memory_bytes()
            + self.sha1.memory_bytes()
            + self.sha256.memory_bytes()
            + self.pdq.memory_bytes()
    }
}

/// All hash lists of one serving process. Thread-safe.
#[derive(Default)]
pub struct Index {
    lists: RwLock<BTreeMap<u32, List>>,
}

impl Index {
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates `list_id` if absent, or changes its thresholds.
    pub fn configure_list(&self, list_id: u32, config: ListConfig) {
        let mut lists = self.lists.write().unwrap_or_else(|e| e.into_inner());
        lists.entry(list_id).or_default().config = Some(config);
    }

    /// Removes `list_id`; absent lists are ignored.
    pub fn drop_list(&self, list_id: u32) {
        let mut lists = self.lists.write().unwrap_or_else(|e| e.into_inner());
        lists.remove(&list_id);
    }

    /// Applies one batch atomically: deletions, then additions.
    pub fn apply(&self, list_id: u32, batch: &Batch) -> Result<(), CoreError> {
        let mut lists = self.lists.write().unwrap_or_else(|e| e.into_inner());
        let list = lists
            .get_mut(&list_id)
            .ok_or(CoreError::UnknownList(list_id))?;
        list.apply(batch);
        Ok(())
    }

    /// Every match of every query against every list, sorted and deduplicated.
    pub fn match_batch(&self, queries: &Queries) -> Vec<Match> {
        let lists = self.lists.read().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for (qi, key) in queries.keys.iter().enumerate() {
            let (q, d) = (queries.qualities[qi], queries.max_distances[qi]);
            for (&lid, list) in lists.iter() {
                let start = out.len();
                list.lookup(key, q, d, |id| out.push((qi as u32, lid, id)));
                out[start..].sort_unstable();
            }
        }
        out.dedup();
        out
    }

    /// `(md5, sha1, sha256, pdq)` entry counts of `list_id`.
    pub fn counts(&self, list_id: u32) -> Result<(usize, usize, usize, usize), CoreError> {
        let lists = self.lists.read().unwrap_or_else(|e| e.into_inner());
        let l = lists.get(&list_id).ok_or(CoreError::UnknownList(list_id))?;
        Ok((l.md5.len(), l.sha1.len(), l.sha256.len(), l.pdq.len()))
    }

    /// Approximate heap bytes held by all lists.
    pub fn memory_bytes(&self) -> usize {
        let lists = self.lists.read().unwrap_or_else(|e| e.into_inner());
        lists.values().map(List::memory_bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(alg: Alg, fill: u8) -> Vec<u8> {
        let mut s = vec![0u8; SLOT];
        s[..alg.digest_len()].iter_mut().for_each(|b| *b = fill);
        s
    }

    fn batch(adds: &[(Alg, u8, u64)], dels: &[(Alg, u8)]) -> Batch {
        let add_algs: Vec<u8> = adds.iter().map(|a| a.0 as u8).collect();
        let add_hashes: Vec<u8> = adds.iter().flat_map(|a| slot(a.0, a.1)).collect();
        let add_ids: Vec<u8> = adds.iter().flat_map(|a| a.2.to_le_bytes()).collect();
        let del_algs: Vec<u8> = dels.iter().map(|a| a.0 as u8).collect();
        let del_hashes: Vec<u8> = dels.iter().flat_map(|a| slot(a.0, a.1)).collect();
        Batch::decode(&add_algs, &add_hashes, &add_ids, &del_algs, &del_hashes).unwrap()
    }

    fn queries(qs: &[(Alg, u8)]) -> Queries {
        let algs: Vec<u8> = qs.iter().map(|a| a.0 as u8).collect();
        let hashes: Vec<u8> = qs.iter().flat_map(|a| slot(a.0, a.1)).collect();
        Queries::decode(&algs, &hashes, &vec![255; qs.len()], &vec![255; qs.len()]).unwrap()
    }

    #[test]
    fn exact_and_pdq_across_lists() {
        let idx = Index::new();
        let cfg = ListConfig::new(31, 50).unwrap();
        idx.configure_list(1, cfg);
        idx.configure_list(2, cfg);
        idx.apply(1, &batch(&[(Alg::Md5, 1, 10), (Alg::Pdq, 3, 11)], &[]))
            .unwrap();
        idx.apply(2, &batch(&[(Alg::Md5, 1, 20), (Alg::Sha1, 2, 21)], &[]))
            .unwrap();
        let got = idx.match_batch(&queries(&[(Alg::Sha1, 2), (Alg::Md5, 1), (Alg::Pdq, 3)]));
        assert_eq!(got, vec![(0, 2, 21), (1, 1, 10), (1, 2, 20), (2, 1, 11)]);
        assert_eq!(idx.counts(1).unwrap(), (1, 0, 0, 1));
        idx.apply(
            1,
            &batch(&[(Alg::Md5, 1, 12)], &[(Alg::Md5, 1), (Alg::Pdq, 3)]),
        )
        .unwrap();
        let got = idx.match_batch(&queries(&[(Alg::Md5, 1), (Alg::Pdq, 3)]));
        assert_eq!(got, vec![(0, 1, 12), (0, 2, 20)]);
        idx.drop_list(2);
        assert_eq!(idx.counts(2), Err(CoreError::UnknownList(2)));
        assert!(idx.memory_bytes() > 0);
    }

    #[test]
    fn rejects_malformed_input() {
        let s = slot(Alg::Md5, 1);
        assert!(matches!(
            Batch::decode(&[9], &s, &[0; 8], &[], &[]),
            Err(CoreError::UnknownAlgorithm { .. })
        ));
        assert!(matches!(
            Batch::decode(&[1], &s, &[0; 7], &[], &[]),
            Err(CoreError::LengthMismatch {
                field: "add_ids",
                ..
            })
        ));
        let mut padded = s.clone();
        padded[20] = 1;
        assert!(matches!(
            Batch::decode(&[1], &padded, &[0; 8], &[], &[]),
            Err(CoreError::NonZeroPadding { .. })
        ));
        assert!(matches!(
            Queries::decode(&[1], &s, &[101], &[255]),
            Err(CoreError::InvalidQuality { .. })
        ));
        assert!(ListConfig::new(64, 50).is_err());
        assert!(ListConfig::new(31, 101).is_err());
        assert!(list_id(-1).is_err());
        let idx = Index::new();
        assert_eq!(
            idx.apply(5, &Batch::default()),
            Err(CoreError::UnknownList(5))
        );
    }

    #[test]
    fn quality_and_tightening() {
        let idx = Index::new();
        idx.configure_list(1, ListConfig::new(31, 50).unwrap());
        let h = slot(Alg::Pdq, 0);
        idx.apply(
            1,
            &Batch::decode(&[4], &h, &[5, 0, 0, 0, 0, 0, 0, 0], &[], &[]).unwrap(),
        )
        .unwrap();
        let mut q = h.clone();
        q[0] = 0xff; // distance 8
        let run = |qual: u8, dist: u8| {
            idx.match_batch(&Queries::decode(&[4], &q, &[qual], &[dist]).unwrap())
        };
        assert_eq!(run(255, 255), vec![(0, 1, 5)]);
        assert_eq!(run(50, 8), vec![(0, 1, 5)]);
        assert!(run(49, 255).is_empty());
        assert!(run(100, 7).is_empty());
    }
}
