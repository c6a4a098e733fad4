//! Video matching (vPDQ): a video is a bag of PDQ frame hashes.
//!
//! A query video Q matches a listed video C when enough of Q's frames have a
//! frame of C within the distance threshold, and enough of C's frames are
//! found by Q's: `q% = |{q ∈ Q : ∃ c ∈ C, d(q, c) ≤ t}| / |Q|`, `c%` likewise,
//! and a match needs `q% ≥ query_percent` and `c% ≥ listed_percent`. Both
//! sides are first *prepared*: frames below the minimum quality are dropped,
//! then frames repeating an earlier frame's exact hash (the first is kept).
//! Frame order and timing do not enter the verdict; the first and last
//! matching timestamps of the query are reported so a moderator can find the
//! segment.
//!
//! [`VideoSet`] holds every frame of every listed video of one list once per
//! distinct hash, in one [`PdqSegment`] (multi-index search), with a table
//! from each distinct hash to the videos that have it. A query of any length
//! is one call: one search per prepared query frame, then one sort of the
//! (video, query frame, listed frame) hits to count both sides.

use crate::error::CoreError;
use crate::pdq::{pdq_from_bytes, Params, Pdq, PdqSegment, Scratch};
use crate::simd::Level;
use std::collections::HashMap;

/// One frame of a video hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub pdq: Pdq,
    /// PDQ quality, 0–100.
    pub quality: u8,
    /// Position in the video, milliseconds from its start.
    pub millis: u32,
}

/// When a query video matches a listed one (a list setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoRule {
    /// Largest Hamming distance at which two frames are the same (0–63).
    pub threshold: u32,
    /// Frames below this quality are left out on both sides.
    pub min_quality: u8,
    /// Share of the query's frames that must be found in the listed video, 0–100.
    pub query_percent: u8,
    /// Share of the listed video's frames the query must find, 0–100.
    pub listed_percent: u8,
}

impl Default for VideoRule {
    /// The values of the vPDQ reference matcher.
    fn default() -> Self {
        VideoRule {
            threshold: 31,
            min_quality: 50,
            query_percent: 80,
            listed_percent: 0,
        }
    }
}

/// A listed video the query matched, with what a verdict may say about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoHit {
    /// The caller's id of the listed video.
    pub id: u64,
    /// Prepared query frames that found a frame of this video.
    pub query_frames: u32,
    /// Prepared query frames in all.
    pub query_total: u32,
    /// Prepared frames of this video found by the query.
    pub listed_frames: u32,
    /// Prepared frames of this video in all.
    pub listed_total: u32,
    /// First and last timestamp (ms) of the matching query frames.
    pub first_millis: u32,
    pub last_millis: u32,
}

impl VideoHit {
    /// Whether the shares reach the rule's percentages (exact integer arithmetic:
    /// `a / b ≥ p / 100` as `100·a ≥ p·b`).
    pub fn passes(&self, rule: &VideoRule) -> bool {
        let reaches = |found: u32, total: u32, percent: u8| {
            u64::from(found) * 100 >= u64::from(percent) * u64::from(total)
        };
        self.query_total > 0
            && self.listed_total > 0
            && reaches(self.query_frames, self.query_total, rule.query_percent)
            && reaches(self.listed_frames, self.listed_total, rule.listed_percent)
    }
}

/// Bytes of one frame in the packed form: the 32 PDQ bytes, the quality, and the
/// timestamp in milliseconds as a little-endian `u32`.
pub const PACKED_FRAME: usize = 37;

/// Reads frames in the packed form.
pub fn unpack_frames(packed: &[u8]) -> Result<Vec<Frame>, CoreError> {
    if !packed.len().is_multiple_of(PACKED_FRAME) {
        return Err(CoreError::LengthMismatch {
            field: "frames",
            expected: packed.len() / PACKED_FRAME * PACKED_FRAME + PACKED_FRAME,
            actual: packed.len(),
        });
    }
    packed
        .chunks_exact(PACKED_FRAME)
        .enumerate()
        .map(|(index, chunk)| {
            let pdq: &[u8; 32] = chunk[..32].try_into().expect("32 bytes");
            let quality = chunk[32];
            if quality > 100 {
                return Err(CoreError::InvalidQuality {
                    index,
                    byte: quality,
                });
            }
            let millis = u32::from_le_bytes(chunk[33..].try_into().expect("4 bytes"));
            Ok(Frame {
                pdq: pdq_from_bytes(pdq),
                quality,
                millis,
            })
        })
        .collect()
}

/// Frames of at least `min_quality`, each distinct hash once (its first frame).
pub fn prepare(frames: &[Frame], min_quality: u8) -> Vec<Frame> {
    let mut seen = std::collections::HashSet::with_capacity(frames.len());
    frames
        .iter()
        .filter(|f| f.quality >= min_quality && seen.insert(f.pdq))
        .copied()
        .collect()
}

/// The listed videos of one list, prepared and indexed; immutable.
pub struct VideoSet {
    /// Distinct frame hashes of all videos; a hash's id is its row in `owners`.
    frames: PdqSegment,
    /// Row `u` of the hash → videos table: `owners[owner_ends[u-1]..owner_ends[u]]`.
    owner_ends: Vec<u32>,
    owners: Vec<u32>,
    /// Per video (index into `owners`): the caller's id and its prepared frame count.
    videos: Vec<(u64, u32)>,
    min_quality: u8,
}

impl VideoSet {
    /// Builds from `(id, frames)` per listed video; frames are prepared with
    /// `min_quality`. A video with no frame left after preparing can never match
    /// and is not kept.
    pub fn build(videos: Vec<(u64, Vec<Frame>)>, min_quality: u8) -> VideoSet {
        VideoSet::build_with(videos, min_quality, Params::default())
    }

    /// [`VideoSet::build`] with the segment's build parameters (tests vary them).
    pub fn build_with(videos: Vec<(u64, Vec<Frame>)>, min_quality: u8, params: Params) -> VideoSet {
        let mut rows: HashMap<Pdq, u32> = HashMap::new();
        let mut pairs: Vec<(u32, u32)> = Vec::new(); // (hash row, video)
        let mut kept: Vec<(u64, u32)> = Vec::new();
        for (id, frames) in videos {
            let prepared = prepare(&frames, min_quality);
            if prepared.is_empty() {
                continue;
            }
            let video = kept.len() as u32;
            kept.push((id, prepared.len() as u32));
            for f in prepared {
                let next = rows.len() as u32;
                let row = *rows.entry(f.pdq).or_insert(next);
                pairs.push((row, video));
            }
        }
        pairs.sort_unstable();
        let mut owner_ends = vec![0u32; rows.len()];
        let mut owners = Vec::with_capacity(pairs.len());
        for &(row, video) in &pairs {
            owners.push(video);
            owner_ends[row as usize] = owners.len() as u32;
        }
        let entries: Vec<(Pdq, u64)> = rows.into_iter().map(|(h, r)| (h, u64::from(r))).collect();
        VideoSet {
            frames: PdqSegment::build_with(entries, params),
            owner_ends,
            owners,
            videos: kept,
            min_quality,
        }
    }

    /// Listed videos kept (those with at least one prepared frame).
    pub fn len(&self) -> usize {
        self.videos.len()
    }

    pub fn is_empty(&self) -> bool {
        self.videos.is_empty()
    }

    /// The quality below which frames are left out, on both sides.
    pub fn min_quality(&self) -> u8 {
        self.min_quality
    }

    /// Distinct frame hashes held.
    pub fn frames(&self) -> usize {
        self.frames.len()
    }

    pub fn memory_bytes(&self) -> usize {
        self.frames.memory_bytes()
            + self.owner_ends.len() * 4
            + self.owners.len() * 4
            + self.videos.len() * 12
    }

    fn owners_of(&self, row: u32) -> &[u32] {
        let start = if row == 0 {
            0
        } else {
            self.owner_ends[row as usize - 1] as usize
        };
        &self.owners[start..self.owner_ends[row as usize] as usize]
    }

    /// Every listed video that shares a frame with the query within `threshold`,
    /// with both sides' counts, in the order of the videos' ids. The query is
    /// prepared with the set's minimum quality.
    pub fn compare(
        &self,
        level: Level,
        query: &[Frame],
        threshold: u32,
        scratch: &mut Scratch,
    ) -> Vec<VideoHit> {
        let query = prepare(query, self.min_quality);
        if query.is_empty() || self.videos.is_empty() {
            return Vec::new();
        }
        // (video, query frame, hash row): sorted once per side to count distinct ones.
        let mut hits: Vec<(u32, u32, u32)> = Vec::new();
        let mut found = Vec::new();
        for (qi, frame) in query.iter().enumerate() {
            found.clear();
            self.frames.search(
                level,
                std::slice::from_ref(&frame.pdq),
                threshold,
                scratch,
                &mut found,
            );
            for &pos in &found {
                let row = self.frames.id_at(pos) as u32;
                for &video in self.owners_of(row) {
                    hits.push((video, qi as u32, row));
                }
            }
        }
        hits.sort_unstable();
        hits.dedup();
        let mut out = Vec::new();
        let mut rows: Vec<u32> = Vec::new();
        for group in hits.chunk_by(|a, b| a.0 == b.0) {
            let (id, listed_total) = self.videos[group[0].0 as usize];
            // Query frames arrive in order within a video's group.
            let mut query_frames = 0u32;
            let mut last_qi = u32::MAX;
            let (mut first_millis, mut last_millis) = (u32::MAX, 0u32);
            for &(_, qi, _) in group {
                if qi != last_qi {
                    query_frames += 1;
                    last_qi = qi;
                    let millis = query[qi as usize].millis;
                    first_millis = first_millis.min(millis);
                    last_millis = last_millis.max(millis);
                }
            }
            rows.clear();
            rows.extend(group.iter().map(|h| h.2));
            rows.sort_unstable();
            rows.dedup();
            out.push(VideoHit {
                id,
                query_frames,
                query_total: query.len() as u32,
                listed_frames: rows.len() as u32,
                listed_total,
                first_millis,
                last_millis,
            });
        }
        out.sort_unstable_by_key(|h| h.id);
        out
    }

    /// The listed videos the query matches under `rule` (whose `min_quality` must be
    /// the set's: the listed side was prepared with it).
    pub fn matches(
        &self,
        level: Level,
        query: &[Frame],
        rule: &VideoRule,
        scratch: &mut Scratch,
    ) -> Vec<VideoHit> {
        debug_assert_eq!(rule.min_quality, self.min_quality);
        let mut hits = self.compare(level, query, rule.threshold, scratch);
        hits.retain(|h| h.passes(rule));
        hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pdq::hamming;
    use proptest::prelude::*;

    /// The reference rule written out directly: every prepared query frame against
    /// every prepared frame of every video.
    fn oracle(videos: &[(u64, Vec<Frame>)], query: &[Frame], rule: &VideoRule) -> Vec<VideoHit> {
        let keep = |frames: &[Frame]| -> Vec<Frame> {
            let mut out: Vec<Frame> = Vec::new();
            for f in frames {
                if f.quality >= rule.min_quality && !out.iter().any(|o| o.pdq == f.pdq) {
                    out.push(*f);
                }
            }
            out
        };
        let q = keep(query);
        let mut out = Vec::new();
        for (id, frames) in videos {
            let c = keep(frames);
            let near = |a: &Frame, b: &Frame| hamming(&a.pdq, &b.pdq) <= rule.threshold;
            let qm: Vec<&Frame> = q.iter().filter(|a| c.iter().any(|b| near(a, b))).collect();
            let cm = c.iter().filter(|b| q.iter().any(|a| near(a, b))).count() as u32;
            if qm.is_empty() {
                continue;
            }
            let hit = VideoHit {
                id: *id,
                query_frames: qm.len() as u32,
                query_total: q.len() as u32,
                listed_frames: cm,
                listed_total: c.len() as u32,
                first_millis: qm.iter().map(|f| f.millis).min().unwrap(),
                last_millis: qm.iter().map(|f| f.millis).max().unwrap(),
            };
            let q_share = f64::from(hit.query_frames) * 100.0 / f64::from(hit.query_total);
            let c_share = f64::from(hit.listed_frames) * 100.0 / f64::from(hit.listed_total);
            if q_share >= f64::from(rule.query_percent) && c_share >= f64::from(rule.listed_percent)
            {
                out.push(hit);
            }
        }
        out.sort_unstable_by_key(|h| h.id);
        out
    }

    fn flip(h: &Pdq, bits: &[usize]) -> Pdq {
        let mut out = *h;
        for &b in bits {
            out[b / 64] ^= 1 << (b % 64);
        }
        out
    }

    /// A video as a random walk: each frame a few bits from the one before.
    fn walk(seed: Pdq, steps: &[(Vec<usize>, u8)]) -> Vec<Frame> {
        let mut h = seed;
        let mut out = Vec::new();
        for (i, (bits, quality)) in steps.iter().enumerate() {
            h = flip(&h, bits);
            out.push(Frame {
                pdq: h,
                quality: *quality,
                millis: i as u32 * 1000,
            });
        }
        out
    }

    fn frame(pdq: Pdq, quality: u8, millis: u32) -> Frame {
        Frame {
            pdq,
            quality,
            millis,
        }
    }

    #[test]
    fn percentages_are_exact_at_the_boundary() {
        let rule = VideoRule::default();
        let base = |q: u32, qt: u32| VideoHit {
            id: 1,
            query_frames: q,
            query_total: qt,
            listed_frames: 1,
            listed_total: 10,
            first_millis: 0,
            last_millis: 0,
        };
        assert!(base(4, 5).passes(&rule)); // exactly 80 %
        assert!(!base(79, 99).passes(&rule)); // 79.8 %
        assert!(base(80, 100).passes(&rule));
        let strict = VideoRule {
            listed_percent: 10,
            ..rule
        };
        assert!(base(4, 5).passes(&strict)); // 1 of 10 is exactly 10 %
        let stricter = VideoRule {
            listed_percent: 11,
            ..rule
        };
        assert!(!base(4, 5).passes(&stricter));
    }

    #[test]
    fn low_quality_and_repeated_frames_do_not_count() {
        let a = [1u64, 2, 3, 4];
        let b = [!0u64, 0, !0, 0];
        // Listed: a twice, and a low-quality b: one prepared frame.
        let listed = vec![(
            7,
            vec![frame(a, 90, 0), frame(a, 90, 1000), frame(b, 10, 2000)],
        )];
        let set = VideoSet::build(listed.clone(), 50);
        assert_eq!(set.frames(), 1);
        // Query: a (found) and b (not found: quality is not counted on the listed side,
        // and b was dropped there) → 1 of 2 = 50 %.
        let query = [frame(a, 80, 5000), frame(b, 80, 9000)];
        let mut scratch = Scratch::default();
        let hits = set.compare(Level::current(), &query, 31, &mut scratch);
        assert_eq!(hits.len(), 1);
        assert_eq!((hits[0].query_frames, hits[0].query_total), (1, 2));
        assert_eq!((hits[0].listed_frames, hits[0].listed_total), (1, 1));
        assert_eq!((hits[0].first_millis, hits[0].last_millis), (5000, 5000));
        assert!(set
            .matches(
                Level::current(),
                &query,
                &VideoRule::default(),
                &mut scratch
            )
            .is_empty());
        assert_eq!(oracle(&listed, &query, &VideoRule::default()), vec![]);
    }

    #[test]
    fn a_video_with_no_good_frame_is_not_kept() {
        let set = VideoSet::build(vec![(1, vec![frame([9; 4], 10, 0)])], 50);
        assert!(set.is_empty());
        let mut scratch = Scratch::default();
        assert!(set
            .compare(Level::current(), &[frame([9; 4], 90, 0)], 31, &mut scratch)
            .is_empty());
    }

    #[test]
    fn a_clip_matches_the_longer_video_it_was_cut_from() {
        let steps: Vec<(Vec<usize>, u8)> = (0..300)
            .map(|i| (vec![i % 256, (i * 7) % 256], 90))
            .collect();
        let long = walk([0x0123_4567_89ab_cdef, 7, 99, 12345], &steps);
        // The clip: frames 100..160, each a few bits off.
        let clip: Vec<Frame> = long[100..160]
            .iter()
            .enumerate()
            .map(|(i, f)| {
                frame(
                    flip(&f.pdq, &[i % 256, (i + 50) % 256, 3]),
                    80,
                    i as u32 * 1000,
                )
            })
            .collect();
        let set = VideoSet::build(vec![(42, long.clone())], 50);
        let mut scratch = Scratch::default();
        let rule = VideoRule::default();
        let hits = set.matches(Level::current(), &clip, &rule, &mut scratch);
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].id, 42);
        assert_eq!(hits, oracle(&[(42, long)], &clip, &rule));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Random videos built as walks, queries mixing near copies of their frames with
        /// unrelated ones: the set agrees with the oracle at every level and rule.
        #[test]
        fn agrees_with_the_reference_rule(
            seeds in proptest::collection::vec(any::<[u64; 4]>(), 1..12),
            lens in proptest::collection::vec(1usize..40, 12),
            steps in proptest::collection::vec((proptest::collection::vec(0usize..256, 0..6), 0u8..=100), 40),
            picks in proptest::collection::vec((0usize..12, 0usize..40, proptest::collection::vec(0usize..256, 0..40), 0u8..=100), 0..60),
            threshold in 0u32..48,
            min_quality in 0u8..=100,
            query_percent in 0u8..=100,
            listed_percent in 0u8..=100,
        ) {
            let videos: Vec<(u64, Vec<Frame>)> = seeds
                .iter()
                .enumerate()
                .map(|(i, s)| (i as u64 * 3 + 1, walk(*s, &steps[..lens[i]])))
                .collect();
            let query: Vec<Frame> = picks
                .iter()
                .enumerate()
                .map(|(j, (v, f, bits, q))| {
                    let frames = &videos[v % videos.len()].1;
                    frame(flip(&frames[f % frames.len()].pdq, bits), *q, j as u32 * 500)
                })
                .collect();
            let rule = VideoRule { threshold, min_quality, query_percent, listed_percent };
            let want = oracle(&videos, &query, &rule);
            // Small segments are scanned; mih_min 0 makes them use the tables too.
            let tables = Params { mih_min: 0, ..Params::default() };
            for set in [
                VideoSet::build(videos.clone(), min_quality),
                VideoSet::build_with(videos.clone(), min_quality, tables),
            ] {
                for level in Level::available() {
                    let got = set.matches(level, &query, &rule, &mut Scratch::default());
                    prop_assert_eq!(&got, &want);
                }
            }
        }
    }
}
