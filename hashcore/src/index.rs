//! The multi-list [`Index`]: every hash list of one serving process.
//!
//! Inputs arrive in the wire encoding described in the crate docs and are fully
//! decoded and validated before anything is applied, so a rejected batch
//! changes nothing.
//!
//! # Concurrency
//!
//! The whole state (every list, every tier) is one immutable snapshot behind
//! an [`ArcSwap`]. A reader loads it once per call and never waits; a writer
//! (serialised by one mutex) builds the next snapshot — sharing every
//! unchanged segment — and publishes it with one atomic store, so a batch is
//! visible entirely or not at all. Segment merges run on a background thread
//! (or synchronously, see [`Index::with_background`]) and are published the
//! same way.
//!
//! PDQ parts of many lists are also covered by cross-list indexes (see
//! [`crate::cross`]), built by the same background thread; each snapshot
//! carries a view of them, so a query searches them once and then only the
//! parts they do not cover.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

use arc_swap::ArcSwap;

use crate::cross::{self, CrossIndex, CrossView};
use crate::error::CoreError;
use crate::exact::ExactSegment;
use crate::labels::{self, KeyMask};
use crate::pdq::{pdq_from_bytes, pdq_to_bytes, Pdq, PdqSegment, Scratch};
use crate::persist::{self, Persist, SegmentInfo};
use crate::policy::Policy;
use crate::refs::RefStore;
use crate::request::Request;
use crate::simd::Level;
use crate::tier::{MergePlan, Part, Segment, Tier};
use crate::verdicts::{Answer, Counts, Verdicts};
use crate::video::{prepare, Frame, VideoHit, VideoRule};

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
    /// One frame of a listed video: a PDQ hash in a tier of its own.
    Vpdq = 5,
}

impl Alg {
    pub fn from_byte(b: u8) -> Option<Alg> {
        match b {
            1 => Some(Alg::Md5),
            2 => Some(Alg::Sha1),
            3 => Some(Alg::Sha256),
            4 => Some(Alg::Pdq),
            5 => Some(Alg::Vpdq),
            _ => None,
        }
    }

    /// Digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            Alg::Md5 => 16,
            Alg::Sha1 => 20,
            Alg::Sha256 | Alg::Pdq | Alg::Vpdq => 32,
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
    Vpdq(Pdq),
}

/// One number per algorithm: `(md5, sha1, sha256, pdq, vpdq)`.
pub type Counts5 = (usize, usize, usize, usize, usize);

/// One match: `(query_index, list_id, entry_id)`.
pub type Match = (u32, u32, u64);

/// Bytes of one packed match: `query_index` and `list_id` as little-endian
/// `u32`, `entry_id` as little-endian `u64`.
pub const PACKED_MATCH: usize = 16;

/// Packs matches into [`PACKED_MATCH`]-byte records.
pub fn pack_matches(matches: &[Match]) -> Vec<u8> {
    let mut out = Vec::with_capacity(matches.len() * PACKED_MATCH);
    for &(q, l, e) in matches {
        out.extend_from_slice(&q.to_le_bytes());
        out.extend_from_slice(&l.to_le_bytes());
        out.extend_from_slice(&e.to_le_bytes());
    }
    out
}

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
    let mut out = Vec::with_capacity(algs.len());
    decode_keys_into(algs_field, hashes_field, algs, hashes, &mut out)?;
    Ok(out)
}

/// [`decode_keys`] appending to `out` (left partly filled on error).
pub fn decode_keys_into(
    algs_field: &'static str,
    hashes_field: &'static str,
    algs: &[u8],
    hashes: &[u8],
    out: &mut Vec<Key>,
) -> Result<(), CoreError> {
    let expected = algs
        .len()
        .checked_mul(SLOT)
        .ok_or(CoreError::LengthMismatch {
            field: hashes_field,
            expected: usize::MAX,
            actual: hashes.len(),
        })?;
    check_len(hashes_field, expected, hashes.len())?;
    out.reserve(algs.len());
    for (i, (&a, slot)) in algs.iter().zip(hashes.chunks_exact(SLOT)).enumerate() {
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
        let slot: &[u8; 32] = slot.try_into().expect("32-byte slot");
        out.push(match alg {
            Alg::Md5 => Key::Md5(slot[..16].try_into().expect("16-byte slice")),
            Alg::Sha1 => Key::Sha1(slot[..20].try_into().expect("20-byte slice")),
            Alg::Sha256 => Key::Sha256(*slot),
            Alg::Pdq => Key::Pdq(pdq_from_bytes(slot)),
            Alg::Vpdq => Key::Vpdq(pdq_from_bytes(slot)),
        });
    }
    Ok(())
}

/// Reference IDs of a batch's additions: the change log's columns, checked.
#[derive(Debug, Clone, Default)]
pub struct RefColumns {
    /// End of each reference in `text`.
    pub ends: Vec<u32>,
    pub text: String,
}

impl RefColumns {
    /// Reads `n` references: `ref_ends` holds one u32 LE end offset per
    /// reference into `refs` (UTF-8, concatenated).
    pub fn decode(n: usize, ref_ends: &[u8], refs: &[u8]) -> Result<RefColumns, CoreError> {
        check_len("ref_ends", n.saturating_mul(4), ref_ends.len())?;
        let text = std::str::from_utf8(refs).map_err(|e| CoreError::InvalidReference {
            index: 0,
            offset: e.valid_up_to(),
        })?;
        let mut ends = Vec::with_capacity(n);
        let mut start = 0usize;
        for (index, chunk) in ref_ends.chunks_exact(4).enumerate() {
            let end = u32::from_le_bytes(chunk.try_into().expect("4-byte chunk"));
            let e = end as usize;
            if e < start || e > text.len() || !text.is_char_boundary(e) {
                return Err(CoreError::InvalidReference { index, offset: e });
            }
            ends.push(end);
            start = e;
        }
        Ok(RefColumns {
            ends,
            text: text.to_owned(),
        })
    }

    /// Reference `i`.
    pub fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.text.get(start..self.ends[i] as usize).unwrap_or("")
    }
}

/// A decoded, validated batch of changes for one list.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub deletions: Vec<Key>,
    pub additions: Vec<(Key, u64)>,
    /// The reference ID of each addition, when given.
    pub refs: Option<RefColumns>,
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
            refs: None,
        })
    }

    /// Adds the additions' reference IDs (see [`RefColumns::decode`]); both
    /// columns empty means none given.
    pub fn with_refs(mut self, ref_ends: &[u8], refs: &[u8]) -> Result<Batch, CoreError> {
        if !(ref_ends.is_empty() && refs.is_empty()) {
            self.refs = Some(RefColumns::decode(self.additions.len(), ref_ends, refs)?);
        }
        Ok(self)
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
        let mut q = Queries::default();
        q.decode_into(algs, hashes, qualities, max_distances)?;
        Ok(q)
    }

    /// [`Queries::decode`] reusing this value's buffers (no allocation once warm).
    pub fn decode_into(
        &mut self,
        algs: &[u8],
        hashes: &[u8],
        qualities: &[u8],
        max_distances: &[u8],
    ) -> Result<(), CoreError> {
        self.keys.clear();
        decode_keys_into("algs", "hashes", algs, hashes, &mut self.keys)?;
        check_len("qualities", algs.len(), qualities.len())?;
        check_len("max_distances", algs.len(), max_distances.len())?;
        if let Some((index, &byte)) = qualities
            .iter()
            .enumerate()
            .find(|(_, &q)| q > 100 && q != QUALITY_UNKNOWN)
        {
            return Err(CoreError::InvalidQuality { index, byte });
        }
        self.qualities.clear();
        self.qualities.extend_from_slice(qualities);
        self.max_distances.clear();
        self.max_distances.extend_from_slice(max_distances);
        Ok(())
    }
}

/// Matching settings of one list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListConfig {
    pub pdq_threshold: u8,
    pub pdq_min_quality: u8,
    /// Label keys a verdict shows (see [`crate::labels`]); none by default.
    pub exposed_labels: KeyMask,
    /// Shares of frames a video match needs, 0–100 (see [`crate::video`]).
    pub video_query_percent: u8,
    pub video_listed_percent: u8,
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
            exposed_labels: 0,
            video_query_percent: VideoRule::default().query_percent,
            video_listed_percent: VideoRule::default().listed_percent,
        })
    }

    /// This config with the video shares given as arbitrary integers.
    pub fn with_video(
        self,
        query_percent: i64,
        listed_percent: i64,
    ) -> Result<ListConfig, CoreError> {
        let percent = |field, p: i64| {
            u8::try_from(p)
                .ok()
                .filter(|p| *p <= 100)
                .ok_or(CoreError::InvalidVideoPercent(field, p))
        };
        Ok(ListConfig {
            video_query_percent: percent("video_query_percent", query_percent)?,
            video_listed_percent: percent("video_listed_percent", listed_percent)?,
            ..self
        })
    }

    /// The rule a video query meets against this list.
    pub fn video_rule(&self) -> VideoRule {
        VideoRule {
            threshold: u32::from(self.pdq_threshold),
            min_quality: self.pdq_min_quality,
            query_percent: self.video_query_percent,
            listed_percent: self.video_listed_percent,
        }
    }

    /// This config showing the label keys named in `keys` in verdicts.
    pub fn exposing<S: AsRef<str>>(self, keys: &[S]) -> Result<ListConfig, CoreError> {
        let exposed = labels::mask(keys).map_err(CoreError::UnknownLabelKey)?;
        Ok(self.with_exposed_labels(exposed))
    }

    /// This config showing the label keys of `exposed` in verdicts.
    pub fn with_exposed_labels(self, exposed: KeyMask) -> ListConfig {
        ListConfig {
            exposed_labels: exposed,
            ..self
        }
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

/// Groups of PDQ hashes of one item each (e.g. its dihedral variants).
#[derive(Debug, Clone, Default)]
pub struct GroupQueries {
    pub hashes: Vec<Pdq>,
    /// `hashes[bounds[g].0..bounds[g].1]` is group `g`.
    pub bounds: Vec<(u32, u32)>,
    pub qualities: Vec<u8>,
    pub max_distances: Vec<u8>,
}

/// Most hashes in one group (the 8 dihedral transforms).
pub const MAX_GROUP: u8 = 8;

impl GroupQueries {
    /// Decodes `hashes` (32 bytes per PDQ hash), `group_sizes` (one byte per
    /// group, 1..=8) and one quality / max-distance byte per group.
    pub fn decode(
        hashes: &[u8],
        group_sizes: &[u8],
        qualities: &[u8],
        max_distances: &[u8],
    ) -> Result<GroupQueries, CoreError> {
        if let Some(index) = group_sizes.iter().position(|&g| g == 0 || g > MAX_GROUP) {
            return Err(CoreError::InvalidGroup { index });
        }
        let total: usize = group_sizes.iter().map(|&g| usize::from(g)).sum();
        check_len("hashes", total * SLOT, hashes.len())?;
        check_len("qualities", group_sizes.len(), qualities.len())?;
        check_len("max_distances", group_sizes.len(), max_distances.len())?;
        if let Some((index, &byte)) = qualities
            .iter()
            .enumerate()
            .find(|(_, &q)| q > 100 && q != QUALITY_UNKNOWN)
        {
            return Err(CoreError::InvalidQuality { index, byte });
        }
        let hashes = hashes
            .chunks_exact(SLOT)
            .map(|c| pdq_from_bytes(c.try_into().expect("32-byte slot")))
            .collect();
        let mut bounds = Vec::with_capacity(group_sizes.len());
        let mut at = 0u32;
        for &g in group_sizes {
            bounds.push((at, at + u32::from(g)));
            at += u32::from(g);
        }
        Ok(GroupQueries {
            hashes,
            bounds,
            qualities: qualities.to_vec(),
            max_distances: max_distances.to_vec(),
        })
    }
}

/// A cheap hasher for sets of [`Key`]s: digests are already uniform.
#[derive(Default)]
struct DigestHasher(u64);

impl std::hash::Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
}

/// All hashes of one list: one tier per algorithm, the entries' references
/// and the list's served state.
#[derive(Clone)]
struct List {
    config: ListConfig,
    /// Name answered in `Reference.list`.
    name: Arc<str>,
    /// Served version, answered in `Reference.list_version`.
    version: u64,
    /// References answering NO_MATCH (flood quarantine).
    quarantined: Arc<HashSet<Box<str>>>,
    refs: Arc<RefStore>,
    md5: Tier<ExactSegment<16>>,
    sha1: Tier<ExactSegment<20>>,
    sha256: Tier<ExactSegment<32>>,
    pdq: Tier<PdqSegment>,
    /// Frames of listed videos (VPDQ entries), apart from images.
    vpdq: Tier<PdqSegment>,
    /// Live VPDQ entries per reference ID (labels left out): a listed video's frame count.
    video_frames: Arc<HashMap<Box<str>, u32>>,
}

/// Keeps the last id of every key (batch order).
fn last_wins<K: Ord + Copy>(mut v: Vec<(K, u64)>) -> Vec<(K, u64)> {
    v.sort_by_key(|e| e.0); // stable: equal keys keep batch order
    let mut out: Vec<(K, u64)> = Vec::with_capacity(v.len());
    for e in v {
        match out.last_mut() {
            Some(last) if last.0 == e.0 => *last = e,
            _ => out.push(e),
        }
    }
    out
}

impl List {
    fn new(config: ListConfig) -> List {
        List {
            config,
            name: Arc::from(""),
            version: 0,
            quarantined: Arc::default(),
            refs: Arc::default(),
            md5: Tier::default(),
            sha1: Tier::default(),
            sha256: Tier::default(),
            pdq: Tier::default(),
            vpdq: Tier::default(),
            video_frames: Arc::default(),
        }
    }

    fn with_batch(&self, batch: &Batch) -> List {
        let (mut d16, mut d20, mut d32, mut dp, mut dv) = (vec![], vec![], vec![], vec![], vec![]);
        for k in &batch.deletions {
            match *k {
                Key::Md5(d) => d16.push(d),
                Key::Sha1(d) => d20.push(d),
                Key::Sha256(d) => d32.push(d),
                Key::Pdq(h) => dp.push(h),
                Key::Vpdq(h) => dv.push(h),
            }
        }
        let (mut a16, mut a20, mut a32, mut ap, mut av) = (vec![], vec![], vec![], vec![], vec![]);
        for &(k, id) in &batch.additions {
            match k {
                Key::Md5(d) => a16.push((d, id)),
                Key::Sha1(d) => a20.push((d, id)),
                Key::Sha256(d) => a32.push((d, id)),
                Key::Pdq(h) => ap.push((h, id)),
                Key::Vpdq(h) => av.push((h, id)),
            }
        }
        let videos_touched: Vec<Pdq> = dv.iter().chain(av.iter().map(|a| &a.0)).copied().collect();
        fn step<S: Segment>(t: &Tier<S>, d: Vec<S::Key>, a: Vec<(S::Key, u64)>) -> Tier<S> {
            if d.is_empty() && a.is_empty() {
                t.clone()
            } else {
                t.with_changes(&d, last_wins(a))
            }
        }
        let mut next = List {
            config: self.config,
            name: Arc::clone(&self.name),
            version: self.version,
            quarantined: Arc::clone(&self.quarantined),
            refs: self.refs_after(batch),
            md5: step(&self.md5, d16, a16),
            sha1: step(&self.sha1, d20, a20),
            sha256: step(&self.sha256, d32, a32),
            pdq: step(&self.pdq, dp, ap),
            vpdq: step(&self.vpdq, dv, av),
            video_frames: Arc::clone(&self.video_frames),
        };
        if !videos_touched.is_empty() {
            next.video_frames = Arc::new(self.frames_after(&next, videos_touched));
        }
        next
    }

    /// The reference (without labels) of the live VPDQ entry `h`.
    fn video_of(&self, h: &Pdq) -> Option<&str> {
        let id = self.vpdq.get(h)?;
        Some(labels::split(self.refs.get(id)?).0)
    }

    /// Frame counts once the frames `touched` moved from this list's references to
    /// those they have in `next`: each frame counts for the reference that holds it.
    fn frames_after(&self, next: &List, mut touched: Vec<Pdq>) -> HashMap<Box<str>, u32> {
        touched.sort_unstable();
        touched.dedup();
        let mut counts = HashMap::clone(&self.video_frames);
        for h in &touched {
            if let Some(old) = self.video_of(h) {
                if let Some(n) = counts.get_mut(old) {
                    *n -= 1;
                    if *n == 0 {
                        counts.remove(old);
                    }
                }
            }
            if let Some(new) = next.video_of(h) {
                *counts.entry(new.into()).or_insert(0) += 1;
            }
        }
        counts
    }

    /// The live entry id of `key`.
    fn id_of(&self, key: &Key) -> Option<u64> {
        match key {
            Key::Md5(d) => self.md5.get(d),
            Key::Sha1(d) => self.sha1.get(d),
            Key::Sha256(d) => self.sha256.get(d),
            Key::Pdq(h) => self.pdq.get(h),
            Key::Vpdq(h) => self.vpdq.get(h),
        }
    }

    /// References once `batch` is applied: those of deleted and replaced
    /// entries dropped, the additions' (last one per key) added.
    fn refs_after(&self, batch: &Batch) -> Arc<RefStore> {
        if batch.refs.is_none() && self.refs.is_empty() {
            return Arc::clone(&self.refs);
        }
        let mut removed = Vec::new();
        if !self.refs.is_empty() {
            removed.extend(batch.deletions.iter().filter_map(|k| self.id_of(k)));
            // A re-added entry keeping its id keeps its reference unless a new one is given.
            removed.extend(
                batch
                    .additions
                    .iter()
                    .filter_map(|(k, id)| self.id_of(k).filter(|old| old != id)),
            );
        }
        let mut added = Vec::new();
        if let Some(cols) = &batch.refs {
            let mut seen: HashSet<Key, std::hash::BuildHasherDefault<DigestHasher>> =
                HashSet::with_capacity_and_hasher(batch.additions.len(), Default::default());
            for (i, (key, id)) in batch.additions.iter().enumerate().rev() {
                if seen.insert(*key) {
                    added.push((*id, cols.get(i)));
                }
            }
        }
        if removed.is_empty() && added.is_empty() {
            return Arc::clone(&self.refs);
        }
        Arc::new(self.refs.with_changes(&removed, &added))
    }

    /// Writes the entries (every tier's parts, the references) to a segment file.
    fn write_entries(&self, w: &mut persist::Writer) -> std::io::Result<()> {
        self.md5.write_to(w)?;
        self.sha1.write_to(w)?;
        self.sha256.write_to(w)?;
        self.pdq.write_to(w)?;
        self.vpdq.write_to(w)?;
        self.refs.write_to(w)
    }

    /// This list with its entries read from a segment file (`write_entries`).
    fn with_entries_from(&self, r: &mut persist::Reader, version: u64) -> Result<List, CoreError> {
        let mut next = List {
            config: self.config,
            name: Arc::clone(&self.name),
            version,
            quarantined: Arc::clone(&self.quarantined),
            md5: Persist::read_from(r)?,
            sha1: Persist::read_from(r)?,
            sha256: Persist::read_from(r)?,
            pdq: Persist::read_from(r)?,
            vpdq: Persist::read_from(r)?,
            refs: Arc::new(Persist::read_from(r)?),
            video_frames: Arc::default(),
        };
        let mut frames: HashMap<Box<str>, u32> = HashMap::new();
        for_each_live(&next.vpdq, |h, _| {
            if let Some(reference) = next.video_of(&h) {
                *frames.entry(reference.into()).or_insert(0) += 1;
            }
        });
        next.video_frames = Arc::new(frames);
        Ok(next)
    }

    /// The list digest of the entries (see `ListDigest` in the client): the sum
    /// modulo 2^128 of each live entry's term, big-endian.
    fn digest(&self) -> [u8; 16] {
        let mut sum = 0u128;
        let mut add = |alg: Alg, digest: &[u8], id: u64| {
            let stored = self.refs.get(id).unwrap_or("");
            sum = sum.wrapping_add(crate::changes::entry_term(
                alg as u8,
                digest,
                stored.as_bytes(),
            ));
        };
        for_each_live(&self.md5, |k, id| add(Alg::Md5, &k, id));
        for_each_live(&self.sha1, |k, id| add(Alg::Sha1, &k, id));
        for_each_live(&self.sha256, |k, id| add(Alg::Sha256, &k, id));
        for_each_live(&self.pdq, |h, id| add(Alg::Pdq, &pdq_to_bytes(&h), id));
        for_each_live(&self.vpdq, |h, id| add(Alg::Vpdq, &pdq_to_bytes(&h), id));
        sum.to_be_bytes()
    }

    fn memory_bytes(&self) -> usize {
        self.refs.memory_bytes()
            + self.md5.memory_bytes()
            + self.sha1.memory_bytes()
            + self.sha256.memory_bytes()
            + self.pdq.memory_bytes()
            + self.vpdq.memory_bytes()
            + self
                .video_frames
                .keys()
                .map(|k| k.len() + 32)
                .sum::<usize>()
    }
}

impl Answer {
    /// The answer naming `reference` of list `lid` for `item`: the reference and the
    /// labels the list's owner exposes (only those ever reach the response) are
    /// appended to `texts`, which the answer points into.
    #[allow(clippy::too_many_arguments)]
    fn new(
        item: u32,
        lid: u32,
        list: &List,
        reference: &str,
        entry_labels: &str,
        texts: &mut String,
        segment: Option<(u32, u32)>,
    ) -> Answer {
        let start = texts.len() as u32;
        texts.push_str(reference);
        let end = texts.len() as u32;
        let exposed = list.config.exposed_labels;
        if exposed != 0 && !entry_labels.is_empty() {
            labels::push_exposed(entry_labels, exposed, texts);
        }
        Answer {
            item,
            list_id: lid,
            list_version: list.version,
            list_name: Arc::clone(&list.name),
            reference: (start, end),
            labels: (end, texts.len() as u32),
            segment,
        }
    }
}

/// Calls `f(key, id)` for every live entry of `tier`.
fn for_each_live<S: Segment>(tier: &Tier<S>, mut f: impl FnMut(S::Key, u64)) {
    for part in &tier.parts {
        for pos in 0..part.seg.len() as u32 {
            if !part.is_dead(pos) {
                f(part.seg.key_at(pos), part.seg.id_at(pos));
            }
        }
    }
}

/// One list as of one snapshot of the index: what a segment file is written
/// from (while the index moves on).
pub struct ListSnapshot(Arc<List>);

impl ListSnapshot {
    /// Writes the list's entries to a segment file at `path` saying `info`
    /// (see [`persist::write_file`]); returns the file's size.
    pub fn save(&self, path: &Path, info: &SegmentInfo) -> Result<u64, CoreError> {
        persist::write_file(path, info, |w| self.0.write_entries(w))
    }

    /// The list digest of the entries, as the store computes it.
    pub fn digest(&self) -> [u8; 16] {
        self.0.digest()
    }

    /// The version the list was served at.
    pub fn version(&self) -> u64 {
        self.0.version
    }
}

/// One immutable snapshot of every list and every platform policy.
#[derive(Clone, Default)]
struct State {
    lists: BTreeMap<u32, Arc<List>>,
    policies: Arc<HashMap<Box<str>, Arc<Policy>>>,
    /// The cross-list PDQ indexes, oldest first, as last built (possibly
    /// older than `lists`).
    cross: Vec<Arc<CrossIndex>>,
    /// `cross` as it serves `lists` (see [`crate::cross`]); rebuilt with
    /// every published snapshot.
    view: Arc<CrossView>,
}

impl State {
    fn refresh_view(&mut self, cover_max: usize) {
        self.view = Arc::new(CrossView::new(
            &self.cross,
            cover_max,
            self.lists.iter().map(|(&id, l)| (id, l.config, &l.pdq)),
        ));
    }
}

#[derive(Default)]
struct Signal {
    pending: bool,
    shutdown: bool,
    /// Process that runs the compactor thread (a forked child starts its own).
    thread_pid: Option<u32>,
}

struct Shared {
    state: ArcSwap<State>,
    /// Whether compaction rebuilds the cross index when it wants one (see
    /// [`Index::set_cross_rebuilds`]).
    cross_rebuilds: std::sync::atomic::AtomicBool,
    /// Parts of at most this many entries go into the cross index.
    cover_max: AtomicUsize,
    /// The process building a cross index, if any: one build at a time (the
    /// background thread's and a caller's `compact` would otherwise build the
    /// same). A forked child does not wait for its parent's build. Writes
    /// never wait for it.
    rebuilding: Mutex<Option<u32>>,
    rebuilt: Condvar,
    counts: Arc<Counts>,
    write: Mutex<()>,
    signal: Mutex<Signal>,
    wake: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A segment file mapped and checked whole, not yet served (see
/// [`Index::install_list`]).
pub struct CheckedList {
    reader: persist::Reader,
    info: SegmentInfo,
}

impl CheckedList {
    /// Maps the file at `path` and checks it all: it must say `expect`.
    pub fn open(path: &Path, expect: &SegmentInfo) -> Result<CheckedList, CoreError> {
        Ok(CheckedList {
            reader: persist::Reader::open(path, expect)?,
            info: *expect,
        })
    }
}

/// A planned merge of one tier of one list.
enum Job {
    Md5(u32, MergePlan<ExactSegment<16>>),
    Sha1(u32, MergePlan<ExactSegment<20>>),
    Sha256(u32, MergePlan<ExactSegment<32>>),
    Pdq(u32, MergePlan<PdqSegment>),
    Vpdq(u32, MergePlan<PdqSegment>),
}

impl Shared {
    fn publish(&self, f: impl FnOnce(&mut State)) {
        let mut next = State::clone(&self.state.load());
        f(&mut next);
        next.refresh_view(self.cover_max.load(Ordering::Relaxed));
        self.state.store(Arc::new(next));
    }

    fn plan(&self) -> Option<Job> {
        let _w = lock(&self.write);
        let state = self.state.load();
        for (&id, list) in &state.lists {
            if let Some(p) = list.pdq.plan() {
                return Some(Job::Pdq(id, p));
            }
            if let Some(p) = list.vpdq.plan() {
                return Some(Job::Vpdq(id, p));
            }
            if let Some(p) = list.md5.plan() {
                return Some(Job::Md5(id, p));
            }
            if let Some(p) = list.sha1.plan() {
                return Some(Job::Sha1(id, p));
            }
            if let Some(p) = list.sha256.plan() {
                return Some(Job::Sha256(id, p));
            }
        }
        None
    }

    fn run<S: Segment>(&self, id: u32, plan: MergePlan<S>, tier: fn(&mut List) -> &mut Tier<S>) {
        let merged = Tier::merge(&plan);
        let _w = lock(&self.write);
        self.publish(|state| {
            if let Some(list) = state.lists.get_mut(&id) {
                let mut next = List::clone(list);
                if tier(&mut next).install(&plan, merged) {
                    *list = Arc::new(next);
                }
            }
        });
    }

    /// Runs the cross index build the current snapshot's view plans (see
    /// [`CrossView::plan`]; `force`: one index over every coverable part):
    /// parts are taken under the write lock, the index is built without it
    /// (writes go on meanwhile) and installed unless the indexes changed
    /// since. False when there was nothing to do.
    fn rebuild_cross(&self, force: bool) -> bool {
        struct Building<'a>(&'a Shared);
        impl Drop for Building<'_> {
            fn drop(&mut self) {
                *lock(&self.0.rebuilding) = None;
                self.0.rebuilt.notify_all();
            }
        }
        {
            let me = std::process::id();
            let mut b = lock(&self.rebuilding);
            while *b == Some(me) {
                b = self.rebuilt.wait(b).unwrap_or_else(|e| e.into_inner());
            }
            *b = Some(me);
        }
        let _building = Building(self);
        let (before, plan) = {
            let _w = lock(&self.write);
            let state = self.state.load();
            let Some(plan) = state.view.plan(force) else {
                return false;
            };
            (state.cross.clone(), plan)
        };
        let built = (!plan.parts.is_empty()).then(|| Arc::new(CrossIndex::build(plan.parts)));
        let _w = lock(&self.write);
        let current = &self.state.load().cross;
        if current.len() != before.len()
            || current.iter().zip(&before).any(|(a, b)| !Arc::ptr_eq(a, b))
        {
            return true;
        }
        self.publish(|state| {
            state.cross.truncate(plan.keep);
            state.cross.extend(built);
        });
        true
    }

    /// Runs one planned merge, else one wanted rebuild of the cross index;
    /// false when there was none.
    fn compact_step(&self) -> bool {
        match self.plan() {
            None => self.cross_rebuilds.load(Ordering::Relaxed) && self.rebuild_cross(false),
            Some(Job::Md5(id, p)) => {
                self.run(id, p, |l| &mut l.md5);
                true
            }
            Some(Job::Sha1(id, p)) => {
                self.run(id, p, |l| &mut l.sha1);
                true
            }
            Some(Job::Sha256(id, p)) => {
                self.run(id, p, |l| &mut l.sha256);
                true
            }
            Some(Job::Pdq(id, p)) => {
                self.run(id, p, |l| &mut l.pdq);
                true
            }
            Some(Job::Vpdq(id, p)) => {
                self.run(id, p, |l| &mut l.vpdq);
                true
            }
        }
    }

    fn compactor(self: Arc<Self>) {
        loop {
            {
                let mut sig = lock(&self.signal);
                while !sig.pending && !sig.shutdown {
                    sig = self.wake.wait(sig).unwrap_or_else(|e| e.into_inner());
                }
                if sig.shutdown {
                    return;
                }
                sig.pending = false;
            }
            while self.compact_step() {
                if lock(&self.signal).shutdown {
                    return;
                }
            }
        }
    }
}

static MAX_THREADS: AtomicUsize = AtomicUsize::new(0);

/// Caps the worker threads of large batch calls (process-wide); 0 = every core.
pub fn set_max_threads(n: usize) {
    MAX_THREADS.store(n, Ordering::Relaxed);
}

/// Worker threads for large batches.
fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    let all = *CORES.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(16)
    });
    match MAX_THREADS.load(Ordering::Relaxed) {
        0 => all,
        n => n.min(all),
    }
}

/// Splits `0..n` into about `cores()` contiguous ranges when `work` is large,
/// runs `f` on each (in parallel) and concatenates the outputs in order.
fn par_ranges<T: Send>(
    n: usize,
    work: usize,
    f: impl Fn(std::ops::Range<usize>) -> Vec<T> + Sync,
) -> Vec<T> {
    // Units: one exact lookup; a PDQ query counts 200. Spawning a thread costs
    // tens of µs, ~4k exact lookups.
    const PARALLEL_WORK: usize = 4096;
    let threads = cores().min(n.max(1));
    if threads <= 1 || work < PARALLEL_WORK {
        return f(0..n);
    }
    let chunk = n.div_ceil(threads);
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = (1..threads)
            .map(|i| s.spawn(move || f(i * chunk..((i + 1) * chunk).min(n))))
            .collect();
        let mut out = f(0..chunk.min(n));
        for h in handles {
            out.extend(h.join().expect("match worker panicked"));
        }
        out
    })
}

/// Sorted, deduplicated ids of the live entries of `tier` within `t` of `qs`.
fn tier_ids(
    tier: &Tier<PdqSegment>,
    level: Level,
    qs: &[Pdq],
    t: u32,
    scratch: &mut Scratch,
    pos: &mut Vec<u32>,
    ids: &mut Vec<u64>,
) {
    parts_ids(&tier.parts, level, qs, t, scratch, pos, ids);
}

/// Sorted, deduplicated ids of the live entries of `parts` within `t` of `qs`.
fn parts_ids(
    parts: &[Part<PdqSegment>],
    level: Level,
    qs: &[Pdq],
    t: u32,
    scratch: &mut Scratch,
    pos: &mut Vec<u32>,
    ids: &mut Vec<u64>,
) {
    ids.clear();
    for part in parts {
        pos.clear();
        part.seg.search(level, qs, t, scratch, pos);
        ids.extend(
            pos.iter()
                .filter(|&&p| !part.is_dead(p))
                .map(|&p| part.seg.id_at(p)),
        );
    }
    ids.sort_unstable();
    ids.dedup();
}

/// One PDQ query (or group) of a batch: its number in the output, its
/// hashes, quality and max distance.
type PdqQuery<'q> = (u32, &'q [Pdq], u8, u8);

/// Every `(query, list, entry)` hit of `queries` in the PDQ entries of the
/// lists `wants` accepts, each list at its own effective threshold: the cross
/// index once per query, then per list the parts it does not cover. Hits may
/// repeat.
fn pdq_hits(
    state: &State,
    level: Level,
    queries: &[PdqQuery<'_>],
    wants: &(dyn Fn(u32) -> bool + Sync),
    out: &mut Vec<Match>,
) {
    if queries.is_empty() {
        return;
    }
    let view = &state.view;
    let mut scratch = Scratch::default();
    let (mut pos, mut ids) = (vec![], vec![]);
    if view.has_index() {
        for &(query, qs, quality, max_distance) in queries {
            view.search(
                level,
                qs,
                quality,
                max_distance,
                wants,
                &mut scratch,
                &mut pos,
                |lid, id| out.push((query, lid, id)),
            );
        }
    }
    for rest in view.rest() {
        if !wants(rest.list) {
            continue;
        }
        for &(query, qs, quality, max_distance) in queries {
            let Some(t) = rest.config.effective_threshold(quality, max_distance) else {
                continue;
            };
            parts_ids(&rest.parts, level, qs, t, &mut scratch, &mut pos, &mut ids);
            out.extend(ids.iter().map(|&id| (query, rest.list, id)));
        }
    }
}

/// Exact lookups of `n` queries in one tier: query `query(i)` has digest `key(i)`.
fn exact_hits<'k, const N: usize>(
    tier: &Tier<ExactSegment<N>>,
    list_id: u32,
    n: usize,
    key: impl Fn(usize) -> &'k [u8; N] + Copy,
    query: impl Fn(usize) -> u32 + Copy,
    out: &mut Vec<Match>,
) {
    if n == 0 || tier.parts.is_empty() {
        return;
    }
    // Hits first, their ids after: an id is one more cache miss, paid only by
    // hits, and here overlapped with the ids of the next hits rather than
    // prefetched for every lookup (most are misses) or read at once.
    let mut found: Vec<(u32, u32)> = Vec::new();
    for part in &tier.parts {
        found.clear();
        part.seg.find_each(n, key, |i, p| {
            if !part.is_dead(p) {
                found.push((i as u32, p));
            }
        });
        const AHEAD: usize = 8;
        for (k, &(i, p)) in found.iter().enumerate() {
            if let Some(&(_, next)) = found.get(k + AHEAD) {
                part.seg.prefetch_id(next);
            }
            out.push((query(i as usize), list_id, part.seg.id_at(p)));
        }
    }
}

/// Exact lookups of `queries` (`(query, offset)`, see [`Request::exact`]) in
/// one tier, the digests read in place from `raw`.
fn raw_exact_hits<const N: usize>(
    tier: &Tier<ExactSegment<N>>,
    list_id: u32,
    raw: &[u8],
    queries: &[(u32, u32)],
    out: &mut Vec<Match>,
) {
    exact_hits(
        tier,
        list_id,
        queries.len(),
        |i| Request::digest(raw, queries[i].1),
        |i| queries[i].0,
        out,
    );
}

/// A listed video or image one video query matched in one list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct VideoMatch<'a> {
    /// The stored reference of a matching entry (reference ID, then its labels).
    stored: &'a str,
    /// First and last timestamp (ms) of the query frames that matched it.
    first_millis: u32,
    last_millis: u32,
}

/// `(reference, query frame, entry id, stored reference)` of every entry of `tier`
/// within `t` of a frame of `query`; the frames are searched in parallel when many.
fn frame_hits<'a>(
    list: &'a List,
    tier: &'a Tier<PdqSegment>,
    query: &[Frame],
    t: u32,
    level: Level,
) -> Vec<(&'a str, u32, u64, &'a str)> {
    if tier.parts.is_empty() {
        return Vec::new();
    }
    par_ranges(query.len(), query.len() * 200, |range| {
        let mut out = Vec::new();
        let (mut scratch, mut pos, mut ids) = (Scratch::default(), vec![], vec![]);
        for qi in range {
            let pdq = std::slice::from_ref(&query[qi].pdq);
            tier_ids(tier, level, pdq, t, &mut scratch, &mut pos, &mut ids);
            for &id in &ids {
                if let Some(stored) = list.refs.get(id) {
                    out.push((labels::split(stored).0, qi as u32, id, stored));
                }
            }
        }
        out
    })
}

/// What one video query (its frames, any order) matches in `list`, by reference ID
/// order: each listed video (the reference of VPDQ entries) whose frames meet the
/// list's [`VideoRule`] (both sides prepared, the listed side's count being its live
/// VPDQ entries), then each listed image (PDQ entries) within the threshold of a
/// prepared frame.
fn video_matches<'a>(list: &'a List, frames: &[Frame], level: Level) -> Vec<VideoMatch<'a>> {
    let rule = list.config.video_rule();
    let query = prepare(frames, rule.min_quality);
    let mut out = Vec::new();
    if query.is_empty() {
        return out;
    }
    let segment = |group: &[(&'a str, u32, u64, &'a str)]| {
        let millis = group.iter().map(|h| query[h.1 as usize].millis);
        VideoMatch {
            stored: group[0].3,
            first_millis: millis.clone().min().unwrap_or(0),
            last_millis: millis.max().unwrap_or(0),
        }
    };
    let mut hits = frame_hits(list, &list.vpdq, &query, rule.threshold, level);
    hits.sort_unstable();
    let mut listed: Vec<u64> = Vec::new();
    for group in hits.chunk_by(|a, b| a.0 == b.0) {
        let mut query_frames = 0u32;
        let mut last = u32::MAX;
        for h in group {
            if h.1 != last {
                query_frames += 1;
                last = h.1;
            }
        }
        listed.clear();
        listed.extend(group.iter().map(|h| h.2));
        listed.sort_unstable();
        listed.dedup();
        let hit = VideoHit {
            query_frames,
            query_total: query.len() as u32,
            listed_frames: listed.len() as u32,
            listed_total: list.video_frames.get(group[0].0).copied().unwrap_or(0),
        };
        if hit.passes(&rule) {
            out.push(segment(group));
        }
    }
    let mut images = frame_hits(list, &list.pdq, &query, rule.threshold, level);
    images.sort_unstable();
    for group in images.chunk_by(|a, b| a.0 == b.0) {
        out.push(segment(group));
    }
    out
}

/// All hash lists of one serving process. Thread-safe.
pub struct Index {
    shared: Arc<Shared>,
    background: bool,
}

impl Default for Index {
    fn default() -> Self {
        Index::new()
    }
}

impl Drop for Index {
    fn drop(&mut self) {
        lock(&self.shared.signal).shutdown = true;
        self.shared.wake.notify_all();
    }
}

impl Index {
    /// An empty index that merges segments on a background thread.
    pub fn new() -> Self {
        Index::with_background(true)
    }

    /// An empty index; with `background == false`, merges run synchronously at
    /// the end of each write (deterministic; used by tests).
    pub fn with_background(background: bool) -> Self {
        Index {
            shared: Arc::new(Shared {
                state: ArcSwap::from_pointee(State::default()),
                cross_rebuilds: std::sync::atomic::AtomicBool::new(true),
                cover_max: AtomicUsize::new(cross::COVER_MAX),
                rebuilding: Mutex::new(None),
                rebuilt: Condvar::new(),
                counts: Arc::default(),
                write: Mutex::new(()),
                signal: Mutex::new(Signal::default()),
                wake: Condvar::new(),
            }),
            background,
        }
    }

    fn after_write(&self) {
        if !self.background {
            self.compact();
            return;
        }
        self.wake_compactor();
    }

    /// Has the background thread (started if needed) look for work.
    fn wake_compactor(&self) {
        let mut sig = lock(&self.shared.signal);
        sig.pending = true;
        let pid = std::process::id();
        if sig.thread_pid != Some(pid) {
            let shared = Arc::clone(&self.shared);
            let spawned = std::thread::Builder::new()
                .name("hashcore-compactor".into())
                .spawn(move || shared.compactor());
            if spawned.is_ok() {
                sig.thread_pid = Some(pid);
            }
        }
        drop(sig);
        self.shared.wake.notify_all();
    }

    /// Runs every pending segment merge now, and the cross index rebuild it
    /// then wants (see [`crate::cross`]), in the calling thread.
    pub fn compact(&self) {
        while self.shared.compact_step() {}
    }

    /// Rebuilds the cross-list PDQ indexes now, in the calling thread, as one
    /// index over every coverable part (tests: a rebuild at a chosen moment).
    pub fn rebuild_cross(&self) {
        self.shared.rebuild_cross(true);
    }

    /// Whether compaction builds cross indexes on its own when the view wants
    /// one (on by default; tests turn it off to keep the indexes of their
    /// choosing while lists change).
    pub fn set_cross_rebuilds(&self, on: bool) {
        self.shared.cross_rebuilds.store(on, Ordering::Relaxed);
    }

    /// Parts of at most `n` entries go into the cross index from its next
    /// rebuild on (default [`cross::COVER_MAX`]; tests use small ones).
    pub fn set_cross_cover_max(&self, n: usize) {
        let _w = lock(&self.shared.write);
        self.shared.cover_max.store(n, Ordering::Relaxed);
        self.shared.publish(|_| {});
    }

    /// `(indexes, entries, bytes)` of the cross indexes (diagnostics).
    pub fn cross_size(&self) -> (usize, usize, usize) {
        self.shared.state.load().view.size()
    }

    /// Creates `list_id` if absent, or changes its thresholds.
    pub fn configure_list(&self, list_id: u32, config: ListConfig) {
        self.configure_list_named(list_id, config, None);
    }

    /// [`Index::configure_list`], also setting the list's name when given
    /// (a new list's name is otherwise empty; an existing one keeps its own).
    pub fn configure_list_named(&self, list_id: u32, config: ListConfig, name: Option<&str>) {
        let _w = lock(&self.shared.write);
        self.shared.publish(|state| {
            let mut list = match state.lists.get(&list_id) {
                Some(l) => List {
                    config,
                    ..List::clone(l)
                },
                None => List::new(config),
            };
            if let Some(name) = name {
                list.name = Arc::from(name);
            }
            state.lists.insert(list_id, Arc::new(list));
        });
    }

    /// Sets the served version and the quarantined references of `list_id`.
    pub fn set_list_state(
        &self,
        list_id: u32,
        version: u64,
        quarantined: impl IntoIterator<Item = String>,
    ) -> Result<(), CoreError> {
        let quarantined: HashSet<Box<str>> = quarantined
            .into_iter()
            .map(String::into_boxed_str)
            .collect();
        let _w = lock(&self.shared.write);
        let state = self.shared.state.load_full();
        let list = state
            .lists
            .get(&list_id)
            .ok_or(CoreError::UnknownList(list_id))?;
        let next = Arc::new(List {
            version,
            quarantined: Arc::new(quarantined),
            ..List::clone(list)
        });
        self.shared.publish(|s| {
            s.lists.insert(list_id, next);
        });
        Ok(())
    }

    /// Sets a tenant's subscriptions (`all_lists`, else only `lists`) and
    /// allow-list (hashes that produce no hits for it).
    pub fn set_policy(&self, tenant: &str, all_lists: bool, lists: Vec<u32>, allow: Vec<Key>) {
        let policy = Arc::new(Policy::new(all_lists, lists, allow));
        let _w = lock(&self.shared.write);
        self.shared.publish(|state| {
            let mut policies = HashMap::clone(&state.policies);
            policies.insert(tenant.into(), policy);
            state.policies = Arc::new(policies);
        });
    }

    /// Removes a tenant's policy: it then sees every list, with no allow-list.
    pub fn remove_policy(&self, tenant: &str) {
        let _w = lock(&self.shared.write);
        if self.shared.state.load().policies.contains_key(tenant) {
            self.shared.publish(|state| {
                let mut policies = HashMap::clone(&state.policies);
                policies.remove(tenant);
                state.policies = Arc::new(policies);
            });
        }
    }

    /// Match events counted by [`Verdicts::encode`] since the last call:
    /// `(tenant, list_id, reference, matches, last unix time)`.
    pub fn take_counts(&self) -> Vec<(String, u32, String, u64, f64)> {
        self.shared.counts.take()
    }

    /// [`Index::take_counts`] without a string allocated per count.
    pub fn take_all_counts(&self) -> crate::verdicts::TakenCounts {
        self.shared.counts.take_all()
    }

    /// Removes `list_id`; absent lists are ignored.
    pub fn drop_list(&self, list_id: u32) {
        let _w = lock(&self.shared.write);
        if self.shared.state.load().lists.contains_key(&list_id) {
            self.shared.publish(|state| {
                state.lists.remove(&list_id);
            });
            drop(_w);
            // Cross indexes holding its entries are rebuilt once mostly stale.
            if self.background {
                self.wake_compactor();
            }
        }
    }

    /// The list as served now, to write to a segment file.
    pub fn list_snapshot(&self, list_id: u32) -> Result<ListSnapshot, CoreError> {
        let state = self.shared.state.load();
        let list = state
            .lists
            .get(&list_id)
            .ok_or(CoreError::UnknownList(list_id))?;
        Ok(ListSnapshot(Arc::clone(list)))
    }

    /// Replaces the entries of the configured list `expect.list_id` with those
    /// of the segment file at `path`, mapped (not copied), and serves it at
    /// `expect.version`. The whole file is checked first (see [`persist`]):
    /// it must say `expect`; on any error nothing changes.
    pub fn load_list(&self, path: &Path, expect: &SegmentInfo) -> Result<(), CoreError> {
        if !self.shared.state.load().lists.contains_key(&expect.list_id) {
            return Err(CoreError::UnknownList(expect.list_id));
        }
        self.install_list(CheckedList::open(path, expect)?)
    }

    /// [`Index::load_list`] in two steps: `file` was read and checked before
    /// (which takes seconds for a large list), so a caller can make sure the
    /// list is still at the file's version between the two, without holding
    /// back writes while the file is read.
    pub fn install_list(&self, file: CheckedList) -> Result<(), CoreError> {
        let CheckedList { mut reader, info } = file;
        let list_id = info.list_id;
        let _w = lock(&self.shared.write);
        let state = self.shared.state.load_full();
        let list = state
            .lists
            .get(&list_id)
            .ok_or(CoreError::UnknownList(list_id))?;
        let next = list.with_entries_from(&mut reader, info.version)?;
        reader.finish()?;
        let next = Arc::new(next);
        self.shared.publish(|s| {
            s.lists.insert(list_id, next);
        });
        drop(_w);
        // The loaded parts are outside the cross indexes until the
        // background thread covers them (the lists serve them meanwhile).
        if self.background {
            self.wake_compactor();
        }
        Ok(())
    }

    /// Applies one batch atomically: deletions, then additions.
    pub fn apply(&self, list_id: u32, batch: &Batch) -> Result<(), CoreError> {
        self.apply_with(list_id, batch, None)
    }

    /// [`Index::apply`], also making `version` (when given) the list's served
    /// version, in the same snapshot.
    pub fn apply_with(
        &self,
        list_id: u32,
        batch: &Batch,
        version: Option<u64>,
    ) -> Result<(), CoreError> {
        {
            let _w = lock(&self.shared.write);
            let state = self.shared.state.load_full();
            let list = state
                .lists
                .get(&list_id)
                .ok_or(CoreError::UnknownList(list_id))?;
            let mut next = list.with_batch(batch);
            if let Some(v) = version {
                next.version = v;
            }
            let next = Arc::new(next);
            self.shared.publish(|s| {
                s.lists.insert(list_id, next);
            });
        }
        self.after_write();
        Ok(())
    }

    /// Every match of every query against every list, sorted and deduplicated.
    pub fn match_batch(&self, queries: &Queries) -> Vec<Match> {
        let state = self.shared.state.load_full();
        let n = queries.keys.len();
        let pdq = queries
            .keys
            .iter()
            .filter(|k| matches!(k, Key::Pdq(_) | Key::Vpdq(_)))
            .count();
        let work = n * state.lists.len() + pdq * 200 * (1 + state.view.rest().len());
        let level = Level::current();
        par_ranges(n, work, |range| {
            Self::match_range(&state, queries, range, level, &|_| true)
        })
    }

    /// Every hit of the queries of `request` (read from `raw`) in the lists
    /// `wants` accepts, on one snapshot: `(query, list_id, entry_id)`, sorted
    /// and deduplicated.
    fn request_hits(
        state: &State,
        raw: &[u8],
        request: &Request,
        wants: &(dyn Fn(u32) -> bool + Sync),
    ) -> Vec<Match> {
        let n = request.query_count();
        let work = n * state.lists.len()
            + request.queries.keys.len() * 200 * (1 + state.view.rest().len());
        let level = Level::current();
        par_ranges(n, work, |range| {
            Self::request_range(state, raw, request, range, level, wants)
        })
    }

    /// [`Index::request_hits`] of the queries numbered `range`.
    fn request_range(
        state: &State,
        raw: &[u8],
        request: &Request,
        range: std::ops::Range<usize>,
        level: Level,
        wants: &(dyn Fn(u32) -> bool + Sync),
    ) -> Vec<Match> {
        let (lo, hi) = (range.start as u32, range.end as u32);
        let within = |v: &[(u32, u32)]| -> std::ops::Range<usize> {
            v.partition_point(|e| e.0 < lo)..v.partition_point(|e| e.0 < hi)
        };
        let [md5, sha1, sha256] = &request.exact;
        let (md5, sha1, sha256) = (
            &md5[within(md5)],
            &sha1[within(sha1)],
            &sha256[within(sha256)],
        );
        let q = &request.queries;
        let pdq = request.pdq_query.partition_point(|&k| k < lo)
            ..request.pdq_query.partition_point(|&k| k < hi);
        let mut out = Vec::new();
        if !(md5.is_empty() && sha1.is_empty() && sha256.is_empty()) {
            for (&lid, list) in &state.lists {
                if !wants(lid) {
                    continue;
                }
                raw_exact_hits(&list.md5, lid, raw, md5, &mut out);
                raw_exact_hits(&list.sha1, lid, raw, sha1, &mut out);
                raw_exact_hits(&list.sha256, lid, raw, sha256, &mut out);
            }
        }
        let queries: Vec<PdqQuery<'_>> = pdq
            .filter_map(|k| match &q.keys[k] {
                Key::Pdq(h) => Some((
                    request.pdq_query[k],
                    std::slice::from_ref(h),
                    q.qualities[k],
                    q.max_distances[k],
                )),
                _ => None,
            })
            .collect();
        pdq_hits(state, level, &queries, wants, &mut out);
        if !out.is_sorted() {
            out.sort_unstable();
        }
        out.dedup();
        out
    }

    fn match_range(
        state: &State,
        q: &Queries,
        range: std::ops::Range<usize>,
        level: Level,
        wants: &(dyn Fn(u32) -> bool + Sync),
    ) -> Vec<Match> {
        // Query indexes per algorithm (small: 4 bytes per query).
        let (mut md5, mut sha1, mut sha256, mut pdq, mut frames) =
            (vec![], vec![], vec![], vec![], vec![]);
        for (qi, key) in q.keys[range.clone()].iter().enumerate() {
            let i = range.start + qi;
            let qi = i as u32;
            match key {
                Key::Md5(_) => md5.push(qi),
                Key::Sha1(_) => sha1.push(qi),
                Key::Sha256(_) => sha256.push(qi),
                Key::Pdq(h) => pdq.push((
                    qi,
                    std::slice::from_ref(h),
                    q.qualities[i],
                    q.max_distances[i],
                )),
                Key::Vpdq(h) => frames.push((qi, *h)),
            }
        }
        let mut out = Vec::new();
        pdq_hits(state, level, &pdq, wants, &mut out);
        if md5.is_empty() && sha1.is_empty() && sha256.is_empty() && frames.is_empty() {
            if !out.is_sorted() {
                out.sort_unstable();
            }
            out.dedup();
            return out;
        }
        let mut scratch = Scratch::default();
        let (mut pos, mut ids) = (vec![], vec![]);
        for (&lid, list) in &state.lists {
            if !wants(lid) {
                continue;
            }
            exact_hits(
                &list.md5,
                lid,
                md5.len(),
                |i| match &q.keys[md5[i] as usize] {
                    Key::Md5(d) => d,
                    _ => unreachable!("md5 queries"),
                },
                |i| md5[i],
                &mut out,
            );
            exact_hits(
                &list.sha1,
                lid,
                sha1.len(),
                |i| match &q.keys[sha1[i] as usize] {
                    Key::Sha1(d) => d,
                    _ => unreachable!("sha1 queries"),
                },
                |i| sha1[i],
                &mut out,
            );
            exact_hits(
                &list.sha256,
                lid,
                sha256.len(),
                |i| match &q.keys[sha256[i] as usize] {
                    Key::Sha256(d) => d,
                    _ => unreachable!("sha256 queries"),
                },
                |i| sha256[i],
                &mut out,
            );
            if !list.vpdq.parts.is_empty() {
                for &(qi, h) in &frames {
                    let i = qi as usize;
                    let Some(t) = list
                        .config
                        .effective_threshold(q.qualities[i], q.max_distances[i])
                    else {
                        continue;
                    };
                    tier_ids(
                        &list.vpdq,
                        level,
                        std::slice::from_ref(&h),
                        t,
                        &mut scratch,
                        &mut pos,
                        &mut ids,
                    );
                    out.extend(ids.iter().map(|&id| (qi, lid, id)));
                }
            }
        }
        if !out.is_sorted() {
            out.sort_unstable();
        }
        out.dedup();
        out
    }

    /// Reads, checks and matches one `MatchRequest` (or `MatchBatchRequest`
    /// when `batch`) for `tenant` (see [`crate::request`]); never panics.
    /// Lists, references, list state and policy come from one snapshot.
    pub fn match_request(
        &self,
        raw: &[u8],
        batch: bool,
        tenant: &str,
        pdq_paused: bool,
    ) -> Verdicts {
        let request = Request::parse(raw, batch, pdq_paused);
        let mut v = Verdicts::new(request, tenant, pdq_paused, Arc::clone(&self.shared.counts));
        let request = &v.request;
        if request.violations.is_empty()
            && (request.query_count() > 0 || !request.videos.is_empty())
        {
            let state = self.shared.state.load_full();
            Self::resolve(&state, raw, &mut v);
            if !v.request.videos.is_empty() {
                Self::resolve_videos(&state, &mut v);
            }
        }
        v
    }

    /// Adds the answers of `v`'s video queries (see [`crate::video`]): per list the
    /// tenant reads, each listed video whose frames the query's meet the list's rule,
    /// and each listed image found in a frame, with the matching segment of the query;
    /// allow-listed frames left out, quarantined references skipped. A reference
    /// answered for the item already (by another of its hashes) is answered once, with
    /// the segment.
    fn resolve_videos(state: &State, v: &mut Verdicts) {
        let policy = state.policies.get(&*v.tenant);
        let allow = policy.filter(|p| p.has_allow_list());
        let level = Level::current();
        let (mut scratch, mut pos) = (Scratch::default(), Vec::new());
        let mut found: Vec<Answer> = Vec::new();
        let mut texts = std::mem::take(&mut v.texts);
        for video in &v.request.videos {
            let kept: Vec<Frame>;
            let frames = match allow {
                Some(p) => {
                    kept = video
                        .frames
                        .iter()
                        .filter(|f| !p.allows(&Key::Pdq(f.pdq), level, &mut scratch, &mut pos))
                        .copied()
                        .collect();
                    &kept
                }
                None => &video.frames,
            };
            for (&lid, list) in &state.lists {
                if policy.is_some_and(|p| !p.wants(lid)) {
                    continue;
                }
                let first = found.len();
                for hit in video_matches(list, frames, level) {
                    let (reference, entry_labels) = labels::split(hit.stored);
                    if !list.quarantined.is_empty() && list.quarantined.contains(reference) {
                        continue;
                    }
                    // A reference listing both images and video frames is answered once.
                    if found[first..].iter().any(|a| {
                        &texts[a.reference.0 as usize..a.reference.1 as usize] == reference
                    }) {
                        continue;
                    }
                    found.push(Answer::new(
                        video.owner,
                        lid,
                        list,
                        reference,
                        entry_labels,
                        &mut texts,
                        Some((hit.first_millis, hit.last_millis)),
                    ));
                }
            }
        }
        v.texts = texts;
        if found.is_empty() {
            return;
        }
        // Merge by item: an item's video answers first, then its other answers not
        // naming the same (list, reference).
        let others = std::mem::take(&mut v.answers);
        let text = |a: &Answer| &v.texts[a.reference.0 as usize..a.reference.1 as usize];
        let mut merged = Vec::with_capacity(found.len() + others.len());
        let (mut i, mut j) = (0, 0);
        while i < found.len() || j < others.len() {
            let item = match (found.get(i), others.get(j)) {
                (Some(a), Some(b)) => a.item.min(b.item),
                (Some(a), None) => a.item,
                (None, Some(b)) => b.item,
                (None, None) => break,
            };
            let first = i;
            while i < found.len() && found[i].item == item {
                i += 1;
            }
            let mine = &found[first..i];
            merged.extend_from_slice(mine);
            while j < others.len() && others[j].item == item {
                let b = &others[j];
                if !mine
                    .iter()
                    .any(|a| a.list_id == b.list_id && text(a) == text(b))
                {
                    merged.push(b.clone());
                }
                j += 1;
            }
        }
        v.answers = merged;
    }

    /// Fills `v`'s answers (its request read from `raw`): hits of the
    /// tenant's lists, less allow-listed queries, entries without a reference
    /// and quarantined references; one answer per (item, list, reference),
    /// first hit first.
    fn resolve(state: &State, raw: &[u8], v: &mut Verdicts) {
        let policy = state.policies.get(&*v.tenant);
        let wants = |lid: u32| policy.is_none_or(|p| p.wants(lid));
        let n = v.request.query_count();
        if n == 0 {
            return;
        }
        let hits = Self::request_hits(state, raw, &v.request, &wants);
        if hits.is_empty() {
            return;
        }
        let allow = policy.filter(|p| p.has_allow_list());
        // Per query: 0 = not checked yet, 1 = allow-listed, 2 = not.
        let mut allowed = vec![0u8; if allow.is_some() { n } else { 0 }];
        let (mut scratch, mut pos) = (Scratch::default(), Vec::new());
        let level = Level::current();
        let mut served = vec![false; n];
        let mut answers = Vec::with_capacity(hits.len());
        // (list, reference) answered for the current item: few, so scanned,
        // until there are many and a set takes over.
        const SCAN: usize = 32;
        let mut mine: Vec<(u32, &str)> = Vec::new();
        let mut seen: HashSet<(u32, &str)> = HashSet::new();
        let mut seen_item = u32::MAX;
        // The stored references of all hits first, all together: a lookup is a
        // chain of dependent cache misses, which `RefStore::get_many` overlaps
        // across hits.
        let mut current: Option<(u32, Option<&Arc<List>>)> = None;
        let lists: Vec<Option<&Arc<List>>> = hits
            .iter()
            .map(|&(_, lid, _)| match current {
                Some((id, l)) if id == lid => l,
                _ => {
                    let l = state.lists.get(&lid);
                    current = Some((lid, l));
                    l
                }
            })
            .collect();
        let no_refs = RefStore::default();
        let lookups: Vec<(&RefStore, u64)> = hits
            .iter()
            .zip(&lists)
            .map(|(&(_, _, eid), list)| (list.map_or(&no_refs, |l| &*l.refs), eid))
            .collect();
        let mut refs = Vec::with_capacity(hits.len());
        RefStore::get_many(&lookups, &mut refs);
        // The answers' texts are at most the stored references.
        let mut texts = String::with_capacity(refs.iter().flatten().map(|r| r.len()).sum());
        // None: an unknown list, or an entry loaded without its reference.
        let stored: Vec<Option<(&Arc<List>, &str)>> = lists
            .iter()
            .zip(&refs)
            .map(|(list, r)| Some(((*list)?, (*r)?)))
            .collect();
        for (&(qi, lid, _), &stored) in hits.iter().zip(&stored) {
            let qi_ = qi as usize;
            if let Some(p) = allow {
                if allowed[qi_] == 0 {
                    let key = v.request.key(raw, qi);
                    allowed[qi_] = match key {
                        Some(k) if p.allows(&k, level, &mut scratch, &mut pos) => 1,
                        _ => 2,
                    };
                }
                if allowed[qi_] == 1 {
                    continue;
                }
            }
            let Some((list, stored)) = stored else {
                continue;
            };
            let (reference, entry_labels) = labels::split(stored);
            if !list.quarantined.is_empty() && list.quarantined.contains(reference) {
                continue;
            }
            served[qi_] = true;
            let item = v.request.owners[qi_];
            if item != seen_item {
                mine.clear();
                seen.clear();
                seen_item = item;
            }
            let duplicate = if mine.len() < SCAN {
                mine.contains(&(lid, reference))
            } else {
                if seen.is_empty() {
                    seen.extend(mine.iter().copied());
                }
                seen.contains(&(lid, reference))
            };
            if duplicate {
                continue;
            }
            mine.push((lid, reference));
            if !seen.is_empty() {
                seen.insert((lid, reference));
            }
            answers.push(Answer::new(
                item,
                lid,
                list,
                reference,
                entry_labels,
                &mut texts,
                None,
            ));
        }
        v.served = served;
        v.answers = answers;
        v.texts = texts;
    }

    /// What one video (its frames) matches in every list, as
    /// `(list_id, reference, first_millis, last_millis)`: per list the listed
    /// videos, then the listed images, each in reference order (see
    /// [`crate::video`]).
    pub fn match_video(&self, frames: &[Frame]) -> Vec<(u32, String, u32, u32)> {
        let state = self.shared.state.load_full();
        let level = Level::current();
        let mut out = Vec::new();
        for (&lid, list) in &state.lists {
            for hit in video_matches(list, frames, level) {
                let reference = labels::split(hit.stored).0.to_owned();
                out.push((lid, reference, hit.first_millis, hit.last_millis));
            }
        }
        out
    }

    /// Matches groups of PDQ hashes (one item each): returns every
    /// `(group_index, list_id, entry_id)` where some hash of the group is
    /// within the effective threshold, sorted and deduplicated.
    pub fn match_groups(&self, groups: &GroupQueries) -> Vec<Match> {
        let state = self.shared.state.load_full();
        let n = groups.bounds.len();
        let work = groups.hashes.len() * 200 * (1 + state.view.rest().len());
        let level = Level::current();
        par_ranges(n, work, |range| {
            let queries: Vec<PdqQuery<'_>> = range
                .map(|g| {
                    let (a, b) = groups.bounds[g];
                    (
                        g as u32,
                        &groups.hashes[a as usize..b as usize],
                        groups.qualities[g],
                        groups.max_distances[g],
                    )
                })
                .collect();
            let mut out = Vec::new();
            pdq_hits(&state, level, &queries, &|_| true, &mut out);
            out.sort_unstable();
            out.dedup();
            out
        })
    }

    /// `(md5, sha1, sha256, pdq, vpdq)` live entry counts of `list_id`.
    pub fn counts(&self, list_id: u32) -> Result<Counts5, CoreError> {
        let state = self.shared.state.load();
        let l = state
            .lists
            .get(&list_id)
            .ok_or(CoreError::UnknownList(list_id))?;
        Ok((
            l.md5.len(),
            l.sha1.len(),
            l.sha256.len(),
            l.pdq.len(),
            l.vpdq.len(),
        ))
    }

    /// Segments per tier of `list_id`: `(md5, sha1, sha256, pdq, vpdq)` (diagnostics).
    pub fn segments(&self, list_id: u32) -> Result<Counts5, CoreError> {
        let state = self.shared.state.load();
        let l = state
            .lists
            .get(&list_id)
            .ok_or(CoreError::UnknownList(list_id))?;
        Ok((
            l.md5.parts.len(),
            l.sha1.parts.len(),
            l.sha256.parts.len(),
            l.pdq.parts.len(),
            l.vpdq.parts.len(),
        ))
    }

    /// Approximate heap bytes held by all lists and policies.
    pub fn memory_bytes(&self) -> usize {
        let state = self.shared.state.load();
        state
            .lists
            .values()
            .map(|l| l.memory_bytes())
            .sum::<usize>()
            + state
                .policies
                .values()
                .map(|p| p.memory_bytes())
                .sum::<usize>()
            + state.view.size().2
    }

    /// Heap bytes of `list_id`'s references (diagnostics).
    pub fn reference_bytes(&self, list_id: u32) -> Result<usize, CoreError> {
        let state = self.shared.state.load();
        let l = state
            .lists
            .get(&list_id)
            .ok_or(CoreError::UnknownList(list_id))?;
        Ok(l.refs.memory_bytes())
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
        let idx = Index::with_background(false);
        let cfg = ListConfig::new(31, 50).unwrap();
        idx.configure_list(1, cfg);
        idx.configure_list(2, cfg);
        idx.apply(1, &batch(&[(Alg::Md5, 1, 10), (Alg::Pdq, 3, 11)], &[]))
            .unwrap();
        idx.apply(2, &batch(&[(Alg::Md5, 1, 20), (Alg::Sha1, 2, 21)], &[]))
            .unwrap();
        let got = idx.match_batch(&queries(&[(Alg::Sha1, 2), (Alg::Md5, 1), (Alg::Pdq, 3)]));
        assert_eq!(got, vec![(0, 2, 21), (1, 1, 10), (1, 2, 20), (2, 1, 11)]);
        assert_eq!(idx.counts(1).unwrap(), (1, 0, 0, 1, 0));
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
        let idx = Index::with_background(false);
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

#[cfg(test)]
mod video_tests {
    //! The video match path against the reference rule written out directly.
    use super::*;
    use crate::pdq::hamming;
    use crate::video::prepare;
    use proptest::prelude::*;

    fn flip(h: &Pdq, bits: &[usize]) -> Pdq {
        let mut out = *h;
        for &b in bits {
            out[b / 64] ^= 1 << (b % 64);
        }
        out
    }

    /// A video as a random walk: each frame a few bits from the one before.
    fn walk(seed: Pdq, steps: &[Vec<usize>]) -> Vec<Pdq> {
        let mut h = seed;
        steps
            .iter()
            .map(|bits| {
                h = flip(&h, bits);
                h
            })
            .collect()
    }

    /// One batch: `adds` as (algorithm, hash, reference), `dels` retired.
    fn batch(adds: &[(Alg, Pdq, String)], dels: &[(Alg, Pdq)], first_id: u64) -> Batch {
        let slot = |h: &Pdq| crate::pdq::pdq_to_bytes(h).to_vec();
        let mut refs = String::new();
        let mut ends = Vec::new();
        for (_, _, r) in adds {
            refs.push_str(r);
            ends.extend((refs.len() as u32).to_le_bytes());
        }
        Batch::decode(
            &adds.iter().map(|a| a.0 as u8).collect::<Vec<_>>(),
            &adds.iter().flat_map(|a| slot(&a.1)).collect::<Vec<_>>(),
            &(0..adds.len() as u64)
                .flat_map(|i| (first_id + i).to_le_bytes())
                .collect::<Vec<_>>(),
            &dels.iter().map(|d| d.0 as u8).collect::<Vec<_>>(),
            &dels.iter().flat_map(|d| slot(&d.1)).collect::<Vec<_>>(),
        )
        .unwrap()
        .with_refs(&ends, refs.as_bytes())
        .unwrap()
    }

    /// Every prepared query frame against every listed frame of every reference.
    fn oracle(
        videos: &BTreeMap<String, Vec<Pdq>>,
        images: &BTreeMap<String, Vec<Pdq>>,
        query: &[Frame],
        rule: &VideoRule,
    ) -> Vec<(u32, String, u32, u32)> {
        let q = prepare(query, rule.min_quality);
        let near = |a: &Pdq, b: &Pdq| hamming(a, b) <= rule.threshold;
        let segment = |found: &[&Frame]| {
            (
                found.iter().map(|f| f.millis).min().unwrap(),
                found.iter().map(|f| f.millis).max().unwrap(),
            )
        };
        let mut out = Vec::new();
        for (reference, c) in videos {
            let qm: Vec<&Frame> = q
                .iter()
                .filter(|f| c.iter().any(|h| near(&f.pdq, h)))
                .collect();
            let cm = c
                .iter()
                .filter(|h| q.iter().any(|f| near(&f.pdq, h)))
                .count();
            let q_share = qm.len() as f64 * 100.0 / q.len().max(1) as f64;
            let c_share = cm as f64 * 100.0 / c.len().max(1) as f64;
            if !qm.is_empty()
                && q_share >= f64::from(rule.query_percent)
                && c_share >= f64::from(rule.listed_percent)
            {
                let (a, b) = segment(&qm);
                out.push((1, reference.clone(), a, b));
            }
        }
        for (reference, hashes) in images {
            let qm: Vec<&Frame> = q
                .iter()
                .filter(|f| hashes.iter().any(|h| near(&f.pdq, h)))
                .collect();
            if !qm.is_empty() {
                let (a, b) = segment(&qm);
                out.push((1, reference.clone(), a, b));
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Videos listed frame by frame in batches (a frame hash shared by two videos
        /// belongs to the one listed last), some frames retired, a few images; queries
        /// mixing near copies of listed frames with unrelated ones: the index answers
        /// as the oracle does, for any rule.
        #[test]
        fn video_matches_agree_with_the_reference_rule(
            seeds in proptest::collection::vec((any::<[u64; 4]>(), 0usize..3), 1..8),
            steps in proptest::collection::vec(proptest::collection::vec(0usize..256, 0..6), 30),
            lens in proptest::collection::vec(1usize..30, 8),
            retire in proptest::collection::vec((0usize..8, 0usize..30), 0..10),
            image_picks in proptest::collection::vec((0usize..8, 0usize..30, proptest::collection::vec(0usize..256, 0..8)), 0..3),
            picks in proptest::collection::vec((0usize..8, 0usize..30, proptest::collection::vec(0usize..256, 0..40), 0u8..=100), 0..50),
            threshold in 0u8..48,
            min_quality in 0u8..=100,
            query_percent in 0u8..=100,
            listed_percent in 0u8..=100,
        ) {
            let idx = Index::with_background(false);
            let config = ListConfig::new(i64::from(threshold), i64::from(min_quality))
                .unwrap()
                .with_video(i64::from(query_percent), i64::from(listed_percent))
                .unwrap();
            idx.configure_list(1, config);
            // Videos sharing a seed share frames: the later one takes them over.
            let listed: Vec<Vec<Pdq>> = seeds
                .iter()
                .enumerate()
                .map(|(i, (s, share))| {
                    let seed = if *share == 0 && i > 0 { seeds[i - 1].0 } else { *s };
                    let mut frames = walk(seed, &steps[..lens[i]]);
                    let mut seen = HashSet::new();
                    frames.retain(|h| seen.insert(*h));
                    frames
                })
                .collect();
            let mut owner: HashMap<Pdq, String> = HashMap::new();
            let mut next_id = 1u64;
            for (i, frames) in listed.iter().enumerate() {
                let reference = format!("video-{i}");
                let adds: Vec<(Alg, Pdq, String)> =
                    frames.iter().map(|h| (Alg::Vpdq, *h, reference.clone())).collect();
                idx.apply(1, &batch(&adds, &[], next_id)).unwrap();
                next_id += adds.len() as u64;
                for h in frames {
                    owner.insert(*h, reference.clone());
                }
            }
            let mut gone: Vec<(Alg, Pdq)> = retire
                .iter()
                .map(|(v, f)| {
                    let frames = &listed[v % listed.len()];
                    (Alg::Vpdq, frames[f % frames.len()])
                })
                .collect();
            gone.sort_unstable();
            gone.dedup();
            idx.apply(1, &batch(&[], &gone, next_id)).unwrap();
            for (_, h) in &gone {
                owner.remove(h);
            }
            let mut images: BTreeMap<String, Vec<Pdq>> = BTreeMap::new();
            let mut image_adds = Vec::new();
            for (k, (v, f, bits)) in image_picks.iter().enumerate() {
                let frames = &listed[v % listed.len()];
                let h = flip(&frames[f % frames.len()], bits);
                if image_adds.iter().any(|a: &(Alg, Pdq, String)| a.1 == h) {
                    continue;
                }
                let reference = format!("image-{k}");
                images.entry(reference.clone()).or_default().push(h);
                image_adds.push((Alg::Pdq, h, reference));
            }
            idx.apply(1, &batch(&image_adds, &[], next_id + 1000)).unwrap();
            let mut videos: BTreeMap<String, Vec<Pdq>> = BTreeMap::new();
            for (h, r) in &owner {
                videos.entry(r.clone()).or_default().push(*h);
            }
            let query: Vec<Frame> = picks
                .iter()
                .enumerate()
                .map(|(j, (v, f, bits, quality))| {
                    let frames = &listed[v % listed.len()];
                    Frame {
                        pdq: flip(&frames[f % frames.len()], bits),
                        quality: *quality,
                        millis: j as u32 * 1000,
                    }
                })
                .collect();
            let want = oracle(&videos, &images, &query, &config.video_rule());
            prop_assert_eq!(idx.match_video(&query), want);
        }
    }
}
