//! The one error type of the core. The binding maps it to Python exceptions in
//! one place; messages name the offending argument and never echo hash values.

use std::fmt;

/// Every way a call into the core can be rejected. All of them are caused by
/// malformed input; nothing is applied when one is returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoreError {
    /// The list id is not configured.
    UnknownList(u32),
    /// A list id outside `0..=u32::MAX`.
    InvalidListId(i64),
    /// `pdq_threshold` outside `0..=63`.
    InvalidThreshold(i64),
    /// `pdq_min_quality` outside `0..=100`.
    InvalidMinQuality(i64),
    /// `video_query_percent` or `video_listed_percent` outside `0..=100`.
    InvalidVideoPercent(&'static str, i64),
    /// An algorithm byte that is not 1..=5.
    UnknownAlgorithm {
        field: &'static str,
        index: usize,
        byte: u8,
    },
    /// Buffer lengths that do not agree with the number of entries.
    LengthMismatch {
        field: &'static str,
        expected: usize,
        actual: usize,
    },
    /// A digest shorter than its 32-byte slot whose padding is not zero.
    NonZeroPadding { field: &'static str, index: usize },
    /// A PDQ quality byte that is neither 0..=100 nor 255 (unknown).
    InvalidQuality { index: usize, byte: u8 },
    /// More than the allowed number of hashes in one dihedral group.
    InvalidGroup { index: usize },
    /// A reference column entry that is out of order, out of range, or not
    /// UTF-8 (`offset`: the byte where it fails).
    InvalidReference { index: usize, offset: usize },
    /// A label key that is not one of [`crate::labels::KEYS`].
    UnknownLabelKey(crate::labels::UnknownKey),
    /// A segment file that cannot be written, or read back as it was written
    /// (damaged, truncated, another format version, another list or version).
    Segment(String),
}

impl fmt::Display for CoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoreError::UnknownList(id) => write!(f, "list_id: unknown list {id}"),
            CoreError::InvalidListId(id) => {
                write!(f, "list_id: {id} is outside 0..={}", u32::MAX)
            }
            CoreError::InvalidThreshold(t) => {
                write!(f, "pdq_threshold: {t} is outside 0..=63")
            }
            CoreError::InvalidMinQuality(q) => {
                write!(f, "pdq_min_quality: {q} is outside 0..=100")
            }
            CoreError::InvalidVideoPercent(field, p) => {
                write!(f, "{field}: {p} is outside 0..=100")
            }
            CoreError::UnknownAlgorithm { field, index, byte } => {
                write!(f, "{field}[{index}]: unknown algorithm byte {byte}")
            }
            CoreError::LengthMismatch {
                field,
                expected,
                actual,
            } => {
                write!(f, "{field}: expected {expected} bytes, got {actual}")
            }
            CoreError::NonZeroPadding { field, index } => {
                write!(f, "{field}[{index}]: digest padding must be zero")
            }
            CoreError::InvalidQuality { index, byte } => {
                write!(
                    f,
                    "qualities[{index}]: {byte} is neither 0..=100 nor 255 (unknown)"
                )
            }
            CoreError::InvalidGroup { index } => {
                write!(f, "groups[{index}]: invalid dihedral group")
            }
            CoreError::InvalidReference { index, offset } => {
                write!(
                    f,
                    "ref_ends[{index}]: references must be UTF-8 with ordered end offsets \
                     (fails at byte {offset})"
                )
            }
            CoreError::UnknownLabelKey(key) => key.fmt(f),
            CoreError::Segment(why) => write!(f, "segment file: {why}"),
        }
    }
}

impl std::error::Error for CoreError {}
