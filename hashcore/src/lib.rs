//! `hashcore` — the matching core of hashmatch.
//!
//! The crate is pure Rust and knows nothing of Python; the PyO3 binding
//! (module `hashmatch.server._hashcore`) lives in `python.rs` behind the cargo
//! feature `python`, so `cargo test` runs without an interpreter.
//!
//! * [`exact::ExactSegment`] — immutable sorted MD5 / SHA-1 / SHA-256 digests
//!   with a prefix directory; batched lookups are software-pipelined.
//! * [`pdq::PdqSegment`] — immutable PDQ hashes with exact-recall Hamming
//!   search by multi-index hashing (11 substrings, generalised pigeonhole),
//!   run-time CPU dispatch ([`simd`]) and huge-page backed arrays.
//! * [`tier::Tier`] — one hash type of one list as a few segments plus
//!   copy-on-write retirements; size-tiered merges.
//! * [`cross::CrossIndex`] — one PDQ segment over the small parts of many
//!   lists, so a query searches them once (built in the background).
//! * [`index::Index`] — every list of one serving process as one immutable
//!   snapshot behind an `ArcSwap`: readers never wait, a write batch is
//!   published atomically, merges run on a background thread.
//! * [`changes`] — reads `ApplyChangesRequest` wire bytes for the store.
//! * The match path on bytes: [`request`] reads and validates a
//!   `MatchRequest` / `MatchBatchRequest`, [`index::Index::match_request`]
//!   matches it against one snapshot (lists, [`refs`] reference IDs, list
//!   state, [`policy`] subscriptions and allow-lists) and [`verdicts`] writes
//!   the response bytes ([`proto`]: the wire format).
//!
//! Wire encoding shared with the binding (see [`index`]): one algorithm byte per
//! entry (`1` MD5, `2` SHA-1, `3` SHA-256, `4` PDQ, `5` VPDQ: one video frame), one 32-byte slot per hash
//! with the digest left-aligned and zero padding, entry ids as little-endian
//! `u64`.

pub mod changes;
pub mod cross;
pub mod error;
pub mod exact;
pub mod index;
pub mod labels;
mod mem;
pub mod pdq;
pub mod persist;
pub mod policy;
pub mod proto;
pub mod refs;
pub mod request;
pub mod simd;
pub mod stats;
pub mod tier;
pub mod verdicts;
pub mod video;

#[cfg(feature = "python")]
mod python;

pub use error::CoreError;
pub use index::{Alg, Batch, GroupQueries, Index, ListConfig, Match, Queries, RefColumns};
pub use verdicts::Verdicts;
