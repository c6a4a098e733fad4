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
//! In a list, a video is its frames: each distinct frame hash one VPDQ entry
//! carrying the video's reference ID (already prepared: the list refuses
//! entries below its minimum quality, and an entry is one distinct hash). A
//! frame hash listed by two videos belongs to the one that listed it last, as
//! any re-listed hash takes its latest reference. The index (see
//! [`crate::index`]) keeps a list's VPDQ entries in a PDQ tier of their own
//! and each reference's live entry count, and matches a query video of any
//! length in one call: one search per prepared query frame, the hits counted
//! per reference on both sides.

use crate::pdq::Pdq;

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

/// How much of a query video and of one listed video matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoHit {
    /// Prepared query frames that found a frame of this video.
    pub query_frames: u32,
    /// Prepared query frames in all.
    pub query_total: u32,
    /// Prepared frames of this video found by the query.
    pub listed_frames: u32,
    /// Prepared frames of this video in all.
    pub listed_total: u32,
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

/// Frames of at least `min_quality`, each distinct hash once (its first frame).
pub fn prepare(frames: &[Frame], min_quality: u8) -> Vec<Frame> {
    let mut seen = std::collections::HashSet::with_capacity(frames.len());
    frames
        .iter()
        .filter(|f| f.quality >= min_quality && seen.insert(f.pdq))
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_are_exact_at_the_boundary() {
        let rule = VideoRule::default();
        let base = |q: u32, qt: u32| VideoHit {
            query_frames: q,
            query_total: qt,
            listed_frames: 1,
            listed_total: 10,
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
        assert!(!base(0, 0).passes(&VideoRule {
            query_percent: 0,
            ..rule
        }));
    }

    #[test]
    fn low_quality_and_repeated_frames_are_left_out() {
        let f = |pdq: [u64; 4], quality, millis| Frame {
            pdq,
            quality,
            millis,
        };
        let frames = [
            f([1; 4], 90, 0),
            f([1; 4], 90, 10),
            f([2; 4], 49, 20),
            f([3; 4], 50, 30),
        ];
        assert_eq!(prepare(&frames, 50), vec![frames[0], frames[3]]);
    }
}
